//! End-to-end tests of the apply journal: what a clean run leaves, recovery
//! of a run killed with SIGKILL, one-shot steps, and damaged journals.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Child, Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use common::Repo;

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

fn journal_file(r: &Repo) -> std::path::PathBuf {
    r.sb.state_dir().join("journal.jsonl")
}

fn journal_lines(r: &Repo) -> Vec<serde_json::Value> {
    read(&journal_file(r))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Waits (bounded) for a file the child creates; panics with its output if
/// it never comes.
fn wait_for_file(p: &Path, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !p.exists() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("stead exited ({status}) before {} appeared", p.display());
        }
        assert!(Instant::now() < deadline, "{} never appeared", p.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (bounded) until no process of group `pgid` exists: killed
/// processes take a moment to be reaped; a live one would stay and fail this.
fn assert_group_gone(pgid: &str) {
    let pgid = pgid.trim();
    let group_exists = || {
        StdCommand::new("kill")
            .args(["-0", "--", &format!("-{pgid}")])
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while group_exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!group_exists(), "process group {pgid} still exists");
}

#[test]
fn a_clean_apply_leaves_its_run_in_the_journal() {
    let r =
        Repo::new("[file.a]\npath = \"~/a\"\ncontent = \"a\\n\"\n\n[exec.e]\ncommand = \"true\"\n");
    r.ok(&["apply", "--yes"]);
    let lines = journal_lines(&r);
    let run_id = lines[0]["run_id"].as_str().unwrap().to_string();
    assert!(
        lines.iter().all(|l| l["run_id"] == run_id.as_str()),
        "compacted to one run"
    );
    let states_of = |res: &str| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l["resource"] == res)
            .map(|l| {
                format!(
                    "{}:{}",
                    l["action"].as_str().unwrap(),
                    l["state"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert_eq!(states_of("run"), ["run-start:started", "run-end:succeeded"]);
    // A file write is journaled in a batch: one record names its files.
    assert_eq!(states_of("batch"), ["write:started", "write:succeeded"]);
    assert!(
        lines
            .iter()
            .filter(|l| l["resource"] == "batch")
            .all(|l| l["members"] == serde_json::json!(["file.a"])),
        "{lines:?}"
    );
    assert_eq!(states_of("exec.e"), ["update:started", "update:succeeded"]);

    // `stead state journal` shows it.
    let out = r.ok(&["state", "journal"]);
    assert!(out.contains(&format!("Run {run_id} (ended)")), "{out}");
    assert!(
        out.contains("succeeded  write      batch of 1: file.a"),
        "{out}"
    );
    // A second clean run (the file edited, so it writes) follows it in a
    // journal this small, and `state journal` shows the second.
    std::fs::write(r.path("a"), "edited\n").unwrap();
    r.ok(&["apply", "--yes"]);
    let both = journal_lines(&r);
    let second_id = both.last().unwrap()["run_id"].as_str().unwrap().to_string();
    assert_ne!(second_id, run_id);
    assert_eq!(both.len(), lines.len() + 6, "{both:?}");
    assert!(
        both[..lines.len()]
            .iter()
            .all(|l| l["run_id"] == run_id.as_str())
    );
    let out = r.ok(&["state", "journal"]);
    assert!(out.contains(&format!("Run {second_id} (ended)")), "{out}");
    assert!(!out.contains(&run_id), "{out}");
    // The next run still recovers nothing: the earlier run ended.
    let out = r.ok(&["apply", "--yes"]);
    assert!(!out.contains("interrupted"), "{out}");
}

#[test]
fn a_clean_run_compacts_a_journal_of_64_kib_or_more_to_its_own_records() {
    let r = Repo::new("[file.a]\npath = \"~/a\"\ncontent = \"a\\n\"\n");
    r.ok(&["apply", "--yes"]);
    // An earlier run that ended, with a long note: the journal passes 64 KiB.
    let old = |action: &str, state: &str| {
        serde_json::json!({
            "op_id": "old:0", "run_id": "old", "resource": "run", "action": action,
            "state": state, "at": "2026-01-01T00:00:00Z", "detail": "x".repeat(40 * 1024),
        })
        .to_string()
    };
    let padded = format!(
        "{}\n{}\n{}",
        old("run-start", "started"),
        old("run-end", "succeeded"),
        read(&journal_file(&r))
    );
    std::fs::write(journal_file(&r), &padded).unwrap();
    assert!(padded.len() >= 64 * 1024);
    std::fs::write(r.path("a"), "edited\n").unwrap();
    r.ok(&["apply", "--yes"]);
    let lines = journal_lines(&r);
    let last = lines.last().unwrap()["run_id"].clone();
    assert!(lines.iter().all(|l| l["run_id"] == last), "{lines:?}");
    assert_eq!(
        lines.len(),
        4,
        "run-start, batch started and succeeded, run-end"
    );
}

#[test]
fn a_run_killed_mid_apply_is_recovered_and_its_one_shot_step_needs_rerun() {
    let r = Repo::new(
        r#"
[file.before]
path = "~/before.txt"
content = "written before the kill\n"

[dir.made]
path = "~/made"

[exec.migrate]
command = "echo $$ > pgid; touch started; test -e go || sleep 30; echo ran >> count"
once = true
after = ["file.before", "dir.made"]
"#,
    );
    let mut child = r.spawn(&["apply", "--yes"], Stdio::null(), Stdio::null());
    wait_for_file(&r.path("started"), &mut child);
    child.kill().unwrap(); // SIGKILL: no handler runs
    child.wait().unwrap();
    // The exec runs in its own process group (its shell's pid); stead's
    // reaper kills it once stead is gone, so nothing is left behind.
    assert_group_gone(&read(&r.path("pgid")));

    // The killed run wrote the file and the dir but never the state.
    assert_eq!(read(&r.path("before.txt")), "written before the kill\n");
    assert!(r.sb.state_json()["resources"].get("file.before").is_none());

    // Next apply: reported, the files recorded, the one-shot step refused.
    let (code, out, _) = r.run(&["apply", "--yes"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("Recovering from interrupted run "), "{out}");
    assert!(out.contains("1 operations in flight"), "{out}");
    assert!(out.contains("stead apply --rerun exec.migrate"), "{out}");
    assert!(!r.path("count").exists());
    let state = r.sb.state_json();
    assert!(state["resources"].get("file.before").is_some(), "{state}");
    // Refused again on the next apply: the unknown outcome is not forgotten.
    let (code, out, _) = r.run(&["apply", "--yes"]);
    assert_eq!(code, 1, "{out}");
    assert!(!out.contains("Recovering"), "{out}");
    assert!(out.contains("stead apply --rerun exec.migrate"), "{out}");
    assert!(!r.path("count").exists());
    // The plan's footer names the fix for it, --rerun, and not --force
    // (which does nothing for a one-shot step).
    let plan = r.ok(&["plan"]);
    assert!(
        plan.contains(
            "1 conflict (!): a one-shot step an interrupted run started: check whether it ran, \
             then 'stead apply --rerun exec.migrate' runs it again."
        ),
        "{plan}"
    );
    assert!(!plan.contains("force"), "{plan}");

    // --rerun runs it; after that it never runs again.
    fs::write(r.path("go"), "").unwrap();
    r.ok(&["apply", "--yes", "--rerun", "exec.migrate"]);
    assert_eq!(read(&r.path("count")), "ran\n");
    let out = r.ok(&["apply", "--yes"]);
    assert!(!out.contains("Recovering"), "{out}");
    assert_eq!(read(&r.path("count")), "ran\n");
    let plan = r.ok(&["plan"]);
    assert!(plan.contains("No changes"), "{plan}");
}

#[test]
fn a_one_shot_step_runs_once_across_applies_until_rerun() {
    let r = Repo::new(
        "[exec.init]\ncommand = \"echo ran >> count\"\nonce = true\n\n[exec.keyed]\ncommand = \"echo ran >> keyed\"\nidempotency_key = \"v1\"\n",
    );
    r.ok(&["apply", "--yes"]);
    r.ok(&["apply", "--yes"]);
    assert_eq!(read(&r.path("count")), "ran\n");
    assert_eq!(read(&r.path("keyed")), "ran\n");
    // A new key runs once more.
    r.write_manifest(
        "[exec.init]\ncommand = \"echo ran >> count\"\nonce = true\n\n[exec.keyed]\ncommand = \"echo ran >> keyed\"\nidempotency_key = \"v2\"\n",
    );
    r.ok(&["apply", "--yes"]);
    assert_eq!(read(&r.path("keyed")), "ran\nran\n");
    assert_eq!(read(&r.path("count")), "ran\n");
    r.ok(&["apply", "--yes", "--rerun", "exec.init"]);
    assert_eq!(read(&r.path("count")), "ran\nran\n");
    // --rerun of something that is not a one-shot exec is refused.
    let (code, _, err) = r.run(&["apply", "--yes", "--rerun", "exec.nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("--rerun exec.nope"), "{err}");
}

#[test]
fn a_torn_last_line_is_ignored_and_a_corrupt_middle_is_moved_aside() {
    let r = Repo::new("[file.a]\npath = \"~/a\"\ncontent = \"a\\n\"\n");
    r.ok(&["apply", "--yes"]);
    let path = journal_file(&r);
    let mut text = read(&path);
    text.push_str("{\"op_id\":\"x:1\",\"run_id\":\"x\",\"reso");
    fs::write(&path, &text).unwrap();
    let (code, out, err) = r.run(&["-v", "apply", "--yes"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("torn last line"), "{err}");

    let good = read(&path);
    let corrupt = format!("not json at all\n{good}");
    fs::write(&path, &corrupt).unwrap();
    let (code, _, err) = r.run(&["apply", "--yes"]);
    assert_eq!(code, 1);
    assert!(err.contains("line 1"), "{err}");
    assert!(err.contains("backups"), "{err}");
    assert!(
        !path.exists() || read(&path) != corrupt,
        "moved aside, not kept"
    );
    let backups = r.sb.state_dir().join("backups");
    let moved: Vec<_> = fs::read_dir(&backups)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("journal_corrupt_")
        })
        .collect();
    assert_eq!(moved.len(), 1);
    assert_eq!(read(&moved[0].path()), corrupt);
    // The next run starts a fresh journal.
    r.ok(&["apply", "--yes"]);
}

/// A running `stead apply` whose stderr lines arrive on a channel.
struct Running {
    child: Child,
    stderr: std::sync::mpsc::Receiver<String>,
}

impl Running {
    fn start(r: &Repo, args: &[&str]) -> Running {
        use std::io::BufRead;
        let mut child = r.spawn(args, Stdio::piped(), Stdio::piped());
        let err = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Running { child, stderr: rx }
    }

    fn signal(&self, sig: &str) {
        let ok = StdCommand::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits (bounded) for a stderr line containing `text`.
    fn expect_stderr(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.contains(text) => return,
                Ok(_) => {}
                Err(_) => panic!("stderr never said {text:?}"),
            }
        }
    }

    fn finish(self) -> (i32, String) {
        let out = self.child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }
}

const SLOW: &str = r#"
[exec.slow]
command = "echo $$ > pgid; touch started; i=0; while [ ! -e release ]; do i=$((i+1)); [ $i -gt 600 ] && exit 1; sleep 0.05; done; touch finished"

[file.after]
path = "~/after.txt"
content = "after\n"
after = ["exec.slow"]

[file.early]
path = "~/early.txt"
content = "early\n"
before = ["exec.slow"]
"#;

#[test]
fn ctrl_c_lets_the_running_step_finish_starts_nothing_new_and_exits_130() {
    let r = Repo::new(SLOW);
    let mut run = Running::start(&r, &["apply", "--yes"]);
    wait_for_file(&r.path("started"), &mut run.child);
    run.signal("-INT");
    run.expect_stderr("Stopping: running steps finish");
    fs::write(r.path("release"), "").unwrap();
    let (code, out) = run.finish();
    assert_eq!(code, 130, "{out}");
    assert!(r.path("finished").exists(), "the running step finished");
    assert!(!r.path("after.txt").exists(), "nothing new started");
    // One summary line, no line per change that never started.
    assert!(out.contains("Interrupted: 2 finished"), "{out}");
    assert!(out.contains("1 not started"), "{out}");
    assert!(!out.contains("file.after skipped"), "{out}");
    // The journal and the state were written, and the lock released.
    let state = r.sb.state_json();
    assert!(state["resources"].get("file.early").is_some(), "{state}");
    assert!(!r.sb.lock_file().exists());
    let lines = journal_lines(&r);
    assert!(lines.iter().any(|l| l["action"] == "run-end"), "{lines:?}");
    // The next apply finishes the job.
    r.ok(&["apply", "--yes"]);
    assert_eq!(read(&r.path("after.txt")), "after\n");
}

#[test]
fn a_second_ctrl_c_kills_the_running_command() {
    let r = Repo::new(SLOW);
    let mut run = Running::start(&r, &["apply", "--yes"]);
    wait_for_file(&r.path("started"), &mut run.child);
    run.signal("-INT");
    run.expect_stderr("Stopping: running steps finish");
    run.signal("-INT");
    run.expect_stderr("Killing the running commands");
    let (code, out) = run.finish();
    assert_eq!(code, 130, "{out}");
    assert!(!r.path("finished").exists());
    assert!(out.contains("exec.slow"), "{out}");
    // No process of the killed command's group is left.
    assert_group_gone(&read(&r.path("pgid")));
    assert!(!r.sb.lock_file().exists());
}

#[test]
fn retry_runs_a_failing_step_again_and_journals_every_attempt() {
    // Fails twice, then succeeds: a counter file says which attempt this is.
    let r = Repo::new(
        r#"
[exec.flaky]
command = "echo x >> tries; test $(wc -l < tries) -ge 3"
retry = 3
delay = "10ms"
backoff = "exponential"

[exec.hopeless]
command = "echo x >> hopeless; exit 1"
retry = 1
delay = "1ms"
"#,
    );
    let (code, out, _) = r.run(&["apply", "--yes"]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(read(&r.path("tries")).lines().count(), 3);
    assert_eq!(read(&r.path("hopeless")).lines().count(), 2);
    assert!(
        out.contains("exec.flaky succeeded on attempt 3 of 4"),
        "{out}"
    );
    assert!(out.contains("gave up after 2 attempts"), "{out}");
    let lines = journal_lines(&r);
    let details: Vec<&str> = lines
        .iter()
        .filter(|l| l["resource"] == "exec.flaky" && l["state"] != "started")
        .map(|l| l["state"].as_str().unwrap())
        .collect();
    assert_eq!(details, ["failed", "failed", "succeeded"]);
    // retry = -1 (for ever) is for stead watch (cli/tests/watch.rs); other
    // negative counts are refused with their place.
    r.write_manifest("[exec.x]\ncommand = \"true\"\nretry = -2\n");
    let (code, _, err) = r.run(&["plan"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("`retry` must be a whole number from 0 to 1000, or -1"),
        "{err}"
    );
}

const REFRESH: &str = r#"
[file.conf]
path = "~/app.conf"
content = "VERSION\n"
notify = ["exec.reload"]

[exec.reload]
command = "echo $$ > pgid; touch started; i=0; while [ ! -e release ]; do i=$((i+1)); [ $i -gt 600 ] && exit 1; sleep 0.05; done; echo reload >> reload.count; rm -f started"
refresh_only = true
"#;

#[test]
fn a_refresh_only_exec_runs_once_per_change_of_what_notifies_it() {
    let r = Repo::new(&REFRESH.replace("VERSION", "v1"));
    fs::write(r.path("release"), "").unwrap();
    r.ok(&["apply", "--yes"]);
    assert_eq!(read(&r.path("reload.count")), "reload\n");
    // Nothing changed: not refreshed, not run, and the plan is empty.
    let plan = r.ok(&["plan"]);
    assert!(plan.contains("No changes"), "{plan}");
    r.ok(&["apply", "--yes"]);
    assert_eq!(read(&r.path("reload.count")), "reload\n");
    // The file changes: the plan says why it will run, and it runs once.
    r.write_manifest(&REFRESH.replace("VERSION", "v2"));
    let plan = r.ok(&["plan"]);
    assert!(
        plan.contains("~ exec.reload  (runs if file.conf changes"),
        "{plan}"
    );
    r.ok(&["apply", "--yes"]);
    assert_eq!(read(&r.path("reload.count")), "reload\nreload\n");
}

#[test]
fn a_refresh_set_before_a_crash_runs_exactly_once_in_the_next_run() {
    let r = Repo::new(&REFRESH.replace("VERSION", "v1"));
    let mut run = Running::start(&r, &["apply", "--yes"]);
    // The file was written and the refresh set; the reload is running.
    wait_for_file(&r.path("started"), &mut run.child);
    run.child.kill().unwrap(); // SIGKILL
    run.child.wait().unwrap();
    assert_group_gone(&read(&r.path("pgid")));
    assert_eq!(read(&r.path("app.conf")), "v1\n");
    assert!(!r.path("reload.count").exists());

    // The file is already right, but the refresh is still pending.
    let plan = r.ok(&["plan"]);
    assert!(
        plan.contains("refresh pending from an interrupted run"),
        "{plan}"
    );
    fs::write(r.path("release"), "").unwrap();
    let out = r.ok(&["apply", "--yes"]);
    assert!(out.contains("Recovering from interrupted run"), "{out}");
    assert_eq!(read(&r.path("reload.count")), "reload\n");
    // Consumed: never again without a new change.
    r.ok(&["apply", "--yes"]);
    assert_eq!(read(&r.path("reload.count")), "reload\n");
    assert!(r.ok(&["plan"]).contains("No changes"));
}
