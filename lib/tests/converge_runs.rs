//! The converge transaction as a library: two runs in one process, each with
//! its own run control. Cancelling one stops it (and only it); a hard cancel
//! kills its running command. Steps wait on marker files the test creates,
//! never on sleeps.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use stead_lib::converge::{self, PlanSource, PrepareOptions, Reporter, Target};
use stead_lib::engine::{Event, Skip, Status};
use stead_lib::layout::Layout;
use stead_lib::lock::{self, LockConfig, LockRequest};
use stead_lib::machine::MachineInfo;
use stead_lib::run::RunControl;
use stead_lib::state::{State, StateStore};

/// A home with its state dir and a config repo holding `manifest`.
struct Machine {
    _root: tempfile::TempDir,
    layout: Layout,
    config: PathBuf,
}

impl Machine {
    fn new(manifest: &str) -> Machine {
        let root = tempfile::tempdir().unwrap();
        let home = root.path().join("home");
        let config = root.path().join("config");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(&config).unwrap();
        std::fs::write(config.join("stead.toml"), manifest).unwrap();
        Machine {
            layout: Layout::new(home, None),
            config,
            _root: root,
        }
    }

    fn home(&self) -> &Path {
        self.layout.home()
    }

    /// Takes the lock, prepares and executes one run with `control`.
    fn converge(&self, control: &RunControl, reporter: &dyn Reporter) -> converge::Executed {
        let store = StateStore::new(self.layout.clone());
        let guard = lock::acquire(
            &self.layout,
            &LockConfig::default(),
            &LockRequest::new("apply", "test-machine"),
            &mut |_| {},
        )
        .unwrap();
        let state = State::new(MachineInfo::current("test-machine"));
        let prepared = converge::prepare(
            &self.layout,
            &state,
            &PrepareOptions {
                source: PlanSource::Manifest {
                    config: Some(&self.config),
                    profile: None,
                    force: false,
                },
                jobs: 2,
                rerun: &[],
                check: Default::default(),
                seal: None,
                checks: Default::default(),
                only: None,
                drift: None,
                compiled: None,
            },
            reporter,
        )
        .unwrap();
        let target = Target {
            layout: &self.layout,
            store: &store,
            guard: &guard,
        };
        let executed = converge::execute(target, state, &prepared, 2, control, reporter).unwrap();
        guard.release().unwrap();
        executed
    }
}

/// Ids that started, in order.
#[derive(Default)]
struct Started(Mutex<Vec<String>>);

impl Reporter for Started {
    fn event(&self, event: Event) {
        if let Event::Started { id } = event {
            self.0.lock().unwrap().push(id.to_string());
        }
    }
}

/// Waits (bounded) until `path` exists.
fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `first` marks that it started, then holds until `release` exists (at
/// most 20 s); `second` runs after it.
const HELD: &str = r#"
[exec.first]
command = "touch started; i=0; while [ ! -e release ]; do i=$((i+1)); [ $i -gt 400 ] && exit 1; sleep 0.05; done"

[exec.second]
command = "touch second.ran"
after = ["exec.first"]
"#;

const QUICK: &str = r#"
[file.a]
path = "~/a"
content = "a\n"

[exec.b]
command = "touch b.ran"
after = ["file.a"]
"#;

#[test]
fn cancelling_one_run_stops_it_and_leaves_another_run_in_the_same_process_alone() {
    let held = Machine::new(HELD);
    let quick = Machine::new(QUICK);
    let held_control = RunControl::new();
    let cancel = held_control.cancel_handle();
    let reporter = Started::default();
    std::thread::scope(|scope| {
        let first = scope.spawn(|| held.converge(&held_control, &reporter));
        wait_for(&held.home().join("started"));
        // Soft cancel while exec.first runs: it finishes, nothing new starts.
        cancel.stop();
        // Another run in this very process converges fully meanwhile.
        let other = quick.converge(&RunControl::new(), &converge::Silent);
        assert!(!other.outcome.has_failures(), "{:?}", other.outcome);
        assert!(quick.home().join("b.ran").exists());
        assert_eq!(
            std::fs::read_to_string(quick.home().join("a")).unwrap(),
            "a\n"
        );
        assert!(other.state.resources.contains_key("file.a"));

        std::fs::write(held.home().join("release"), "").unwrap();
        let executed = first.join().unwrap();
        // exec.first was running and finished; exec.second never started.
        let statuses = &executed.outcome.statuses;
        assert!(matches!(statuses[0], Status::Done(_)), "{statuses:?}");
        assert_eq!(statuses[1], Status::Skipped(Skip::Interrupted));
        assert_eq!(executed.outcome.interrupted(), 1);
    });
    assert!(!held.home().join("second.ran").exists());
    assert_eq!(*reporter.0.lock().unwrap(), ["exec.first"]);
}

#[test]
fn a_hard_cancel_kills_the_running_command_of_its_run() {
    let m = Machine::new(
        "[exec.forever]\ncommand = \"touch started; exec sleep 60\"\n\n[exec.next]\ncommand = \"touch next.ran\"\nafter = [\"exec.forever\"]\n",
    );
    let control = RunControl::new();
    let cancel = control.cancel_handle();
    let started = Instant::now();
    let executed = std::thread::scope(|scope| {
        let run = scope.spawn(|| m.converge(&control, &converge::Silent));
        wait_for(&m.home().join("started"));
        // The command may be between its start record and being tracked;
        // kill until the run is over.
        while !run.is_finished() {
            cancel.kill();
            std::thread::sleep(Duration::from_millis(20));
        }
        run.join().unwrap()
    });
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the command was not killed"
    );
    match &executed.outcome.statuses[0] {
        Status::Failed(e) => assert!(e.contains("killed by a signal"), "{e}"),
        other => panic!("exec.forever was not killed: {other:?}"),
    }
    assert_eq!(
        executed.outcome.statuses[1],
        Status::Skipped(Skip::DependencyFailed("exec.forever".into()))
    );
    assert!(!m.home().join("next.ran").exists());
}
