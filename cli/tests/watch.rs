//! `stead watch` with real inotify (issue 19): every wait is for a line the
//! watch prints (`--json`: one document per line; a run's line comes after
//! its directories are watched, so it is the readiness signal) or for its
//! exit, with a deadline; never a sleep that hopes.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use common::Repo;

const DEADLINE: Duration = Duration::from_secs(60);

/// A running `stead watch --json`.
struct Watch {
    child: Child,
    lines: Receiver<serde_json::Value>,
    seen: Vec<serde_json::Value>,
}

impl Watch {
    fn start(r: &Repo, args: &[&str]) -> Watch {
        let state_dir = r.sb.state_dir();
        let mut all = vec![
            "--state-dir",
            state_dir.to_str().unwrap(),
            "--json",
            "watch",
        ];
        all.extend_from_slice(args);
        let mut child = r.spawn(&all, Stdio::piped(), Stdio::null());
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let doc = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                if tx.send(doc).is_err() {
                    break;
                }
            }
        });
        Watch {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The next line with `"event": event`, waiting at most the deadline.
    fn expect(&mut self, event: &str) -> serde_json::Value {
        let until = Instant::now() + DEADLINE;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let doc = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no `{event}` line; seen: {:#?}", self.seen));
            self.seen.push(doc.clone());
            if doc["event"] == event {
                return doc;
            }
        }
    }

    /// Its exit code, waiting at most the deadline; every line it printed.
    fn finish(mut self) -> (i32, Vec<serde_json::Value>) {
        let until = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                while let Ok(doc) = self.lines.recv_timeout(Duration::from_secs(5)) {
                    self.seen.push(doc);
                }
                return (status.code().unwrap_or(-1), std::mem::take(&mut self.seen));
            }
            assert!(
                Instant::now() < until,
                "the watch did not end: {:#?}",
                self.seen
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An editor's save: a temp file renamed over the target.
fn save_like_an_editor(path: &Path, content: &str) {
    let tmp = path.with_extension("swp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn runs(lines: &[serde_json::Value]) -> usize {
    lines.iter().filter(|l| l["event"] == "run").count()
}

fn backups(r: &Repo) -> usize {
    let dir = r.sb.state_dir().join("backups");
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

const RC: &str = "[file.rc]\npath = \"~/.rc\"\ncontent = \"hello\\n\"\n";

#[test]
fn a_hand_edit_saved_editor_style_is_restored_and_backed_up_twice_and_own_writes_make_no_run() {
    let r = Repo::new(RC);
    r.ok(&["init"]);
    let mut w = Watch::start(&r, &["--converged-timeout", "2"]);
    let first = w.expect("run");
    assert_eq!(first["trigger"], "start");
    assert_eq!(first["changed"], 1);
    for (n, edit) in ["edited once\n", "edited twice\n"].iter().enumerate() {
        save_like_an_editor(&r.path(".rc"), edit);
        let run = w.expect("run");
        assert_eq!(run["trigger"], "changed: ~/.rc", "{run}");
        assert_eq!(run["changed"], 1, "{run}");
        assert_eq!(std::fs::read_to_string(r.path(".rc")).unwrap(), "hello\n");
        assert_eq!(backups(&r), n + 1, "the hand edit was backed up");
    }
    let (code, lines) = w.finish();
    assert_eq!(code, 0, "{lines:#?}");
    assert_eq!(lines.last().unwrap()["reason"], "converged");
    // Three runs: the start and the two edits. stead's own writes (the
    // first one and both repairs) made none.
    assert_eq!(runs(&lines), 3, "{lines:#?}");
}

#[test]
fn editing_the_manifest_adds_a_resource() {
    let r = Repo::new(RC);
    r.ok(&["init"]);
    let mut w = Watch::start(&r, &["--max-runs", "2"]);
    w.expect("run");
    r.write_manifest(&format!(
        "{RC}\n[file.new]\npath = \"~/new\"\ncontent = \"new\\n\"\n"
    ));
    let run = w.expect("run");
    assert_eq!(run["trigger"], "config repo changed", "{run}");
    assert_eq!(std::fs::read_to_string(r.path("new")).unwrap(), "new\n");
    let (code, lines) = w.finish();
    assert_eq!(code, 0, "{lines:#?}");
    assert_eq!(lines.last().unwrap()["reason"], "max-runs");
}

#[test]
fn converged_timeout_ends_the_watch_about_that_long_after_the_last_change() {
    let r = Repo::new(RC);
    r.ok(&["init"]);
    let mut w = Watch::start(&r, &["--converged-timeout", "2"]);
    w.expect("run");
    save_like_an_editor(&r.path(".rc"), "x\n");
    w.expect("run");
    let last_run = Instant::now();
    let (code, lines) = w.finish();
    let after = last_run.elapsed();
    assert_eq!(code, 0, "{lines:#?}");
    assert_eq!(lines.last().unwrap()["reason"], "converged");
    assert!(
        after >= Duration::from_millis(1900) && after < Duration::from_secs(10),
        "ended {after:?} after the last run"
    );
}

#[test]
fn a_file_flipped_by_a_background_writer_becomes_held_instead_of_a_loop() {
    let r = Repo::new(RC);
    r.ok(&["init"]);
    let mut w = Watch::start(&r, &["--debounce", "50", "--converged-timeout", "2"]);
    w.expect("run");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let path = r.path(".rc");
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                n += 1;
                save_like_an_editor(&path, &format!("flip {n}\n"));
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let held = w.expect("held");
    assert_eq!(held["resource"], "file.rc", "{held}");
    // Held, it is left alone: the watch converges while the writer goes on.
    let (code, lines) = w.finish();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.join().unwrap();
    assert_eq!(code, 0, "{lines:#?}");
    assert_eq!(lines.last().unwrap()["reason"], "converged");
    assert!(runs(&lines) <= 4, "it looped: {lines:#?}");
}

#[test]
fn sigterm_between_runs_ends_the_watch_with_the_lock_released() {
    let r = Repo::new(RC);
    r.ok(&["init"]);
    let mut w = Watch::start(&r, &[]);
    w.expect("run");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(w.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let (code, _) = w.finish();
    assert_eq!(code, 130);
    assert!(
        !r.sb.lock_file().exists(),
        "the lock is held only during a run"
    );
    // Another command runs at once.
    r.ok(&["plan"]);
}

#[test]
fn a_changed_path_replans_its_resource_and_what_waits_for_it_only() {
    let r = Repo::new(
        "[file.a]\npath = \"~/a\"\ncontent = \"a\\n\"\n\n\
         [file.b]\npath = \"~/b\"\ncontent = \"b\\n\"\nafter = [\"file.a\"]\n\n\
         [file.c]\npath = \"~/c\"\ncontent = \"c\\n\"\n",
    );
    r.ok(&["init"]);
    let mut w = Watch::start(&r, &["--max-runs", "3"]);
    assert_eq!(w.expect("run")["planned"], 3);
    save_like_an_editor(&r.path("a"), "edited\n");
    let run = w.expect("run");
    assert_eq!(run["trigger"], "changed: ~/a", "{run}");
    assert_eq!(
        run["planned"], 2,
        "file.a and file.b, which waits for it: {run}"
    );
    assert_eq!(std::fs::read_to_string(r.path("a")).unwrap(), "a\n");
    save_like_an_editor(&r.path("c"), "edited\n");
    let run = w.expect("run");
    assert_eq!(run["planned"], 1, "{run}");
    assert_eq!(std::fs::read_to_string(r.path("c")).unwrap(), "c\n");
    let (code, _) = w.finish();
    assert_eq!(code, 0);
    // Nothing was forgotten: the record still owns all three.
    let state = r.sb.state_json();
    for id in ["file.a", "file.b", "file.c"] {
        assert!(state["resources"].get(id).is_some(), "{id}: {state}");
    }
}

#[test]
fn retry_forever_is_tried_again_by_the_watch_after_its_delay_and_once_by_apply() {
    let r = Repo::new(
        "[exec.up]\ncommand = \"echo try >> ~/tries; test -e ~/ready && touch ~/done\"\n\
         creates = \"~/done\"\nretry = -1\ndelay = \"1s\"\n",
    );
    r.ok(&["init"]);
    // An apply must end: it makes no retry of it.
    let (code, _, _) = r.run(&["apply", "--yes"]);
    assert_eq!(code, 1);
    assert_eq!(std::fs::read_to_string(r.path("tries")).unwrap(), "try\n");

    let mut w = Watch::start(&r, &["--max-runs", "3"]);
    let first = w.expect("run");
    assert_eq!(first["settled"], false, "{first}");
    let second = w.expect("run");
    assert_eq!(second["trigger"], "retry: exec.up", "{second}");
    assert_eq!(second["planned"], 1, "{second}");
    std::fs::write(r.path("ready"), "").unwrap();
    let third = w.expect("run");
    assert_eq!(third["trigger"], "retry: exec.up", "{third}");
    assert_eq!(third["settled"], true, "{third}");
    assert!(r.path("done").exists());
    let (code, _) = w.finish();
    assert_eq!(code, 0);
}

#[test]
fn past_the_watch_limit_the_rest_is_polled_and_still_repaired() {
    let r = Repo::new(
        "[file.a]\npath = \"~/d1/a\"\ncontent = \"a\\n\"\n\n\
         [file.b]\npath = \"~/d2/b\"\ncontent = \"b\\n\"\n",
    );
    r.ok(&["init"]);
    let state_dir = r.sb.state_dir();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("stead"))
        .env("HOME", r.home())
        .env("NO_COLOR", "1")
        // One inotify watch only (the config repo): the home's directories
        // are polled.
        .env("STEAD_TEST_MAX_WATCHES", "1")
        .env_remove("STEAD_HOME")
        .env_remove("STEAD_STATE_DIR")
        .arg("--home")
        .arg(r.home())
        .arg("--config")
        .arg(r.config.path())
        .args([
            "--state-dir",
            state_dir.to_str().unwrap(),
            "--json",
            "watch",
            "--max-runs",
            "2",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(serde_json::from_str::<serde_json::Value>(&line).unwrap());
        }
    });
    let mut w = Watch {
        child,
        lines,
        seen: Vec::new(),
    };
    w.expect("run");
    let warning = w.expect("warning");
    assert!(
        warning["message"]
            .as_str()
            .unwrap()
            .contains("watch limit is reached"),
        "{warning}"
    );
    save_like_an_editor(&r.path("d2/b"), "edited\n");
    let run = w.expect("run");
    assert_eq!(run["trigger"], "changed: ~/d2/b", "{run}");
    assert_eq!(std::fs::read_to_string(r.path("d2/b")).unwrap(), "b\n");
    let (code, _) = w.finish();
    assert_eq!(code, 0);
}

#[test]
fn a_declared_path_in_conflict_is_watched_and_written_once_it_is_cleared() {
    let r = Repo::new("[file.x]\npath = \"~/x\"\ncontent = \"declared\\n\"\n");
    r.ok(&["init"]);
    std::fs::write(r.path("x"), "the user's own\n").unwrap();
    let mut w = Watch::start(&r, &["--max-runs", "2"]);
    let first = w.expect("run");
    assert_eq!(first["settled"], false, "a conflict: {first}");
    assert_eq!(
        std::fs::read_to_string(r.path("x")).unwrap(),
        "the user's own\n"
    );
    std::fs::remove_file(r.path("x")).unwrap();
    let run = w.expect("run");
    assert_eq!(run["trigger"], "changed: ~/x", "{run}");
    assert_eq!(std::fs::read_to_string(r.path("x")).unwrap(), "declared\n");
    let (code, _) = w.finish();
    assert_eq!(code, 0);
}
