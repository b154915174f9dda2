//! The state lock as the CLI shows it: the locked error, retries, stale
//! takeover, lock-info, unlock, lock types and a bad lock config.
//!
//! A live holder is this test process itself (it takes the lock through
//! stead-lib and keeps its flock while the binary runs); a dead holder is a
//! lock file naming a process that has exited and holds no flock.

mod common;

use chrono::{Duration, Utc};
use common::Sandbox;
use stead_lib::lock::{self, LockConfig, LockGuard, LockInfo, LockRequest};

fn hold(sb: &Sandbox, operation: &str) -> LockGuard {
    let layout = sb.layout();
    std::fs::create_dir_all(layout.state_dir()).unwrap();
    let id = stead_lib::machine::load_or_create_id(&layout).unwrap();
    lock::acquire(
        &layout,
        &LockConfig::default(),
        &LockRequest::new(operation, &id),
        &mut |_| {},
    )
    .unwrap()
}

/// Rewrites the held lock's `created_at` in place (same inode: the flock stays).
fn age_lock(sb: &Sandbox, by: Duration) {
    let mut info: LockInfo =
        serde_json::from_slice(&std::fs::read(sb.lock_file()).unwrap()).unwrap();
    info.created_at = Utc::now() - by;
    std::fs::write(sb.lock_file(), serde_json::to_vec_pretty(&info).unwrap()).unwrap();
}

/// A lock file left by a holder that died: its pid has exited, no flock.
fn plant_dead_lock(sb: &Sandbox) -> u32 {
    let _guard = hold(sb, "apply");
    let mut info: LockInfo =
        serde_json::from_slice(&std::fs::read(sb.lock_file()).unwrap()).unwrap();
    drop(_guard);
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    info.machine.pid = pid;
    info.pid_start_time = None;
    std::fs::write(sb.lock_file(), serde_json::to_vec_pretty(&info).unwrap()).unwrap();
    pid
}

fn no_retries(sb: &Sandbox) {
    sb.write_lock_config(r#"{"retry": {"attempts": 0}}"#);
}

#[test]
fn locked_error_is_exact_and_exits_3() {
    let sb = Sandbox::new();
    sb.write_lock_config(r#"{"timeout": 3600, "retry": {"attempts": 0}}"#);
    let guard = hold(&sb, "apply");
    age_lock(&sb, Duration::minutes(10) + Duration::seconds(5));
    let info = guard.info().unwrap().clone();
    let (code, out, err) = sb.run(&["init"]);
    assert_eq!(code, 3, "stdout: {out}\nstderr: {err}");
    let expected = format!(
        "Error: State is currently locked\n\
         \n\
         Operation: apply\n\
         Machine: {host} ({id8}...)\n\
         User: {user}\n\
         PID: {pid}\n\
         Acquired: 10 minutes ago\n\
         \n\
         Wait for that operation to finish and try again, or run 'stead state unlock --force' \
         if that process is gone.\n",
        host = stead_lib::machine::hostname(),
        id8 = &info.machine.id[..8],
        user = stead_lib::machine::current_user(),
        pid = std::process::id(),
    );
    assert_eq!(err, expected);
    assert!(!sb.state_file().exists(), "nothing was written");
    drop(guard);
    sb.ok(&["init"]);
}

#[test]
fn locked_error_json() {
    let sb = Sandbox::new();
    no_retries(&sb);
    let _guard = hold(&sb, "apply");
    let out = sb.stead(&["--json", "init"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["exit_code"], 3);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("State is currently locked")
    );
}

#[test]
fn waits_and_retries_per_config_before_failing() {
    let sb = Sandbox::new();
    sb.write_lock_config(
        r#"{"retry": {"attempts": 2, "delay_seconds": 0.01, "exponential_backoff": true}}"#,
    );
    let _guard = hold(&sb, "apply");
    let (code, _out, err) = sb.run(&["init"]);
    assert_eq!(code, 3);
    assert!(err.contains("retry 1/2 in 0.0s"), "{err}");
    assert!(err.contains("retry 2/2"), "{err}");
    assert!(err.contains("State is currently locked"), "{err}");
}

#[test]
fn overdue_live_lock_is_reported_never_broken() {
    let sb = Sandbox::new();
    sb.write_lock_config(r#"{"timeout": 60, "retry": {"attempts": 0}}"#);
    let _guard = hold(&sb, "apply");
    age_lock(&sb, Duration::hours(2));
    let info = sb.ok(&["state", "lock-info"]);
    assert!(info.contains("Overdue:"), "{info}");
    assert!(info.contains("not broken"), "{info}");
    let (code, _out, err) = sb.run(&["init"]);
    assert_eq!(code, 3);
    assert!(err.contains("older than its timeout (60 s)"), "{err}");
    assert!(sb.lock_file().exists());
}

#[test]
fn stale_lock_is_shown_then_taken_over_with_a_notice() {
    let sb = Sandbox::new();
    no_retries(&sb);
    let pid = plant_dead_lock(&sb);
    let info = sb.ok(&["state", "lock-info"]);
    assert!(info.contains("State is locked (STALE)"), "{info}");
    assert!(
        info.contains(&format!("Stale: process {pid} is no longer running.")),
        "{info}"
    );
    let v = sb.json(&["state", "lock-info"]);
    assert_eq!(v["status"], "stale");
    assert_eq!(v["holder"]["machine"]["pid"], pid);

    let (code, _out, err) = sb.run(&["init"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!(
            "Removed a stale lock (apply by PID {pid} on {}): process {pid} is no longer running.",
            stead_lib::machine::hostname()
        )),
        "{err}"
    );
    assert!(!sb.lock_file().exists());
    assert!(sb.state_file().exists());
}

#[test]
fn stale_lock_stays_when_detection_is_off() {
    let sb = Sandbox::new();
    sb.write_lock_config(r#"{"detect_stale": false, "retry": {"attempts": 0}}"#);
    plant_dead_lock(&sb);
    let (code, _out, err) = sb.run(&["init"]);
    assert_eq!(code, 1);
    assert!(err.contains("Stale detection is off"), "{err}");
    assert!(err.contains("stead state unlock --force"), "{err}");
    assert!(sb.lock_file().exists());
}

#[test]
fn lock_info_unlocked_and_held() {
    let sb = Sandbox::new();
    assert_eq!(
        sb.ok(&["state", "lock-info"]),
        "Lock type: local\nState is not locked\n"
    );
    let v = sb.json(&["state", "lock-info"]);
    assert_eq!(v["locked"], false);
    assert_eq!(v["status"], "unlocked");

    let guard = hold(&sb, "apply");
    let out = sb.ok(&["state", "lock-info"]);
    assert!(
        out.starts_with("Lock type: local\nState is locked\n\nOperation: apply\n"),
        "{out}"
    );
    assert!(
        out.contains(&format!("PID: {}\n", std::process::id())),
        "{out}"
    );
    assert!(out.contains("Acquired: just now"), "{out}");
    let v = sb.json(&["state", "lock-info"]);
    assert_eq!(v["locked"], true);
    assert_eq!(v["status"], "held");
    assert_eq!(v["overdue"], false);
    let holder: LockInfo = serde_json::from_value(v["holder"].clone()).unwrap();
    assert_eq!(&holder, guard.info().unwrap());
}

#[test]
fn unlock_refuses_without_force() {
    let sb = Sandbox::new();
    let _guard = hold(&sb, "apply");
    let (code, _out, err) = sb.run(&["state", "unlock"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("refusing to remove the state lock without --force"),
        "{err}"
    );
    assert!(sb.lock_file().exists());
}

#[test]
fn unlock_force_removes_and_reports_a_live_holder() {
    let sb = Sandbox::new();
    let _guard = hold(&sb, "apply");
    let (code, out, err) = sb.run(&["state", "unlock", "--force"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!(
            "Removed the state lock held by PID {} (apply on {}",
            std::process::id(),
            stead_lib::machine::hostname()
        )),
        "{out}"
    );
    assert!(err.contains("a live process still held this lock"), "{err}");
    assert!(!sb.lock_file().exists());
    assert_eq!(
        sb.ok(&["state", "unlock", "--force"]),
        "State is not locked\n"
    );
}

#[test]
fn unlock_force_works_on_a_corrupt_lock_file() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.state_dir()).unwrap();
    std::fs::write(sb.lock_file(), "{\"id\": \"half-writ").unwrap();
    let info = sb.ok(&["state", "lock-info"]);
    assert!(info.contains("STALE"), "{info}");
    assert!(info.contains("unreadable"), "{info}");
    let v = sb.json(&["state", "unlock", "--force"]);
    assert_eq!(v["removed"], true);
    assert_eq!(v["holder"], serde_json::Value::Null);
    assert_eq!(v["raw_content"], "{\"id\": \"half-writ");
    assert!(!sb.lock_file().exists());
}

#[test]
fn disabled_lock_warns_on_every_run() {
    let sb = Sandbox::new();
    sb.write_lock_config(r#"{"lock_type": "disabled"}"#);
    for args in [
        vec!["init"],
        vec!["state", "version"],
        vec!["state", "lock-info"],
    ] {
        let (code, _out, err) = sb.run(&args);
        assert_eq!(code, 0);
        assert!(
            err.contains("Warning: locking is disabled"),
            "{args:?}: {err}"
        );
    }
    assert!(!sb.lock_file().exists());
}

#[test]
fn hybrid_without_a_repo_says_it_works_as_local() {
    let sb = Sandbox::new();
    sb.write_lock_config(r#"{"lock_type": "hybrid"}"#);
    let out = sb.ok(&["state", "lock-info"]);
    assert!(
        out.starts_with("Lock type: hybrid\nState is not locked\n"),
        "{out}"
    );
    assert!(
        out.contains(
            "Remote lock: none (the config repo has no git remote; hybrid works as local)"
        ),
        "{out}"
    );
    sb.ok(&["init"]);
}

#[test]
fn bad_lock_config_is_a_clear_error() {
    let sb = Sandbox::new();
    sb.write_lock_config("{\"lock_type\": \"local\",\n \"timeout\": \"soon\"}");
    let (code, _out, err) = sb.run(&["init"]);
    assert_eq!(code, 1);
    assert!(err.contains("lock_config.json is invalid"), "{err}");
    assert!(err.contains("line 2 column"), "{err}");
    assert!(!sb.state_file().exists());
}
