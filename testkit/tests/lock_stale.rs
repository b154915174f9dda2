//! A live holder's lock is reported and refused to others, however old; a
//! killed holder's lock is proven stale by its free flock and taken over.

mod common;

use std::time::{Duration, Instant};

use common::Sandbox;
use serde_json::json;
use stead_lib::lock::{self, LockConfig, LockInfo, LockStatus};

const HOLDER: &str = env!("CARGO_BIN_EXE_lock-holder");

fn status(sandbox: &Sandbox) -> LockStatus {
    let layout = sandbox.layout();
    let config = LockConfig::load(&layout).expect("lock config");
    lock::inspect(&layout, &config).expect("inspect")
}

fn holder_info(sandbox: &Sandbox) -> LockInfo {
    let raw = std::fs::read(sandbox.layout().lock_file()).expect("read state.lock");
    serde_json::from_slice(&raw).expect("state.lock is a LockInfo")
}

#[test]
fn held_lock_refuses_others_and_a_killed_holders_lock_is_taken_over() {
    let sandbox = Sandbox::new();
    // No retries: a refused taker fails at once.
    sandbox.lock_config(json!({"retry": {"attempts": 0}}));

    let mut first = sandbox.spawn(HOLDER, &["--operation", "holder-one"]);
    let pid: u32 = first.expect_line("acquired ").parse().expect("pid");
    assert_eq!(pid, first.pid());

    // (a) Held, by that process, and refused to a second holder.
    match status(&sandbox) {
        LockStatus::Held { info, overdue } => {
            assert_eq!(info.machine.pid, pid);
            assert_eq!(info.operation, "holder-one");
            assert!(!overdue);
        }
        other => panic!("expected Held, got {other:?}"),
    }
    let mut refused = sandbox.spawn(HOLDER, &["--operation", "holder-two"]);
    let exit = refused.wait();
    assert_eq!(exit.code(), Some(3), "{exit:?}");
    assert!(exit.stdout.is_empty(), "{exit:?}");
    assert!(
        exit.stderr.contains("State is currently locked"),
        "{}",
        exit.stderr
    );
    assert!(
        exit.stderr.contains(&format!("PID: {pid}\n")),
        "{}",
        exit.stderr
    );
    assert!(
        exit.stderr.contains("Operation: holder-one"),
        "{}",
        exit.stderr
    );
    assert!(first.is_running());
    assert_eq!(holder_info(&sandbox).machine.pid, pid);

    // (b) SIGKILL the holder: its lock file stays, its flock is gone.
    let killed = first.kill();
    assert_eq!(killed.signal(), Some(nix::libc::SIGKILL), "{killed:?}");
    assert!(sandbox.layout().lock_file().exists());
    match status(&sandbox) {
        LockStatus::Stale { info, reason } => {
            assert_eq!(info.expect("readable lock").machine.pid, pid);
            assert_eq!(reason, format!("process {pid} is no longer running"));
        }
        other => panic!("expected Stale, got {other:?}"),
    }

    // The takeover: a new holder removes the stale lock and takes it.
    let mut second = sandbox.spawn(HOLDER, &["--operation", "holder-two"]);
    let second_pid: u32 = second.expect_line("acquired ").parse().expect("pid");
    assert_eq!(second_pid, second.pid());
    match status(&sandbox) {
        LockStatus::Held { info, .. } => {
            assert_eq!(info.machine.pid, second_pid);
            assert_eq!(info.operation, "holder-two");
        }
        other => panic!("expected Held by the new holder, got {other:?}"),
    }
    second.close_stdin();
    let exit = second.wait();
    assert_eq!(exit.code(), Some(0), "{exit:?}");
    assert!(
        exit.stderr.contains(&format!(
            "event: removed a stale lock (PID {pid}): process {pid} is no longer running"
        )),
        "{}",
        exit.stderr
    );
    assert!(!sandbox.layout().lock_file().exists());
    assert_eq!(status(&sandbox), LockStatus::Unlocked);
    assert!(sandbox.state_dir_entries(".state.lock.tmp-").is_empty());
}

#[test]
fn overdue_lock_of_a_live_holder_is_never_broken() {
    let sandbox = Sandbox::new();
    // Every lock is overdue as soon as it is one whole second old.
    sandbox.lock_config(json!({"timeout": 0, "retry": {"attempts": 0}}));

    let mut holder = sandbox.spawn(HOLDER, &["--operation", "long-apply"]);
    let pid: u32 = holder.expect_line("acquired ").parse().expect("pid");
    let taken = holder_info(&sandbox);
    assert_eq!(taken.machine.pid, pid);

    // Wait, by checking, until inspect reports the lock overdue.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match status(&sandbox) {
            LockStatus::Held { info, overdue } => {
                assert_eq!(info, taken);
                if overdue {
                    break;
                }
            }
            other => panic!("expected Held, got {other:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "the lock taken at {} never became overdue",
            taken.created_at
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let mut other = sandbox.spawn(HOLDER, &["--operation", "impatient"]);
    let exit = other.wait();
    assert_eq!(exit.code(), Some(3), "{exit:?}");
    assert!(exit.stdout.is_empty(), "{exit:?}");
    assert!(
        exit.stderr.contains("State is currently locked"),
        "{}",
        exit.stderr
    );
    assert!(
        exit.stderr.contains(&format!("PID: {pid}\n")),
        "{}",
        exit.stderr
    );
    assert!(
        exit.stderr.contains(
            "older than its timeout (0 s), but its holder is alive, so it was not broken"
        ),
        "{}",
        exit.stderr
    );
    assert!(!exit.stderr.contains("event: removed"), "{}", exit.stderr);

    // Untouched: the same lock, the same live holder.
    assert!(holder.is_running());
    assert_eq!(holder_info(&sandbox), taken);
    assert!(matches!(
        status(&sandbox),
        LockStatus::Held { overdue: true, .. }
    ));

    holder.close_stdin();
    let exit = holder.wait();
    assert_eq!(exit.code(), Some(0), "{exit:?}");
    assert!(!sandbox.layout().lock_file().exists());
}

/// Starts a holder, kills it and reaps it: its lock is left behind, stale.
/// Returns the dead holder's pid.
fn leave_stale_lock(sandbox: &Sandbox) -> u32 {
    let mut holder = sandbox.spawn(HOLDER, &["--operation", "doomed"]);
    let pid: u32 = holder.expect_line("acquired ").parse().expect("pid");
    holder.kill();
    assert!(matches!(status(sandbox), LockStatus::Stale { .. }));
    pid
}

/// docs/state.md: "A stale lock is removed only by the process holding its
/// flock". A taker that finds a stale lock takes its flock, checks it is still
/// `state.lock`, and removes it. Meanwhile another taker must not remove it
/// too: once the first has linked its own fresh lock, the second's removal
/// would delete that live lock.
///
/// Here the test process plays the first taker at the instant it holds the
/// stale file's flock (`inspect` also holds a shared one for a moment).
#[test]
fn stale_lock_is_not_removed_while_another_process_holds_its_flock() {
    let sandbox = Sandbox::new();
    sandbox.lock_config(json!({"retry": {"attempts": 0}}));
    leave_stale_lock(&sandbox);

    let lock_path = sandbox.layout().lock_file();
    let stale = std::fs::File::open(&lock_path).expect("open the stale lock");
    // The dead holder's flock is free; a child that another test thread is
    // forking may share our inspect's descriptor until its exec, so wait.
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(e) = stale.try_lock() {
        assert!(
            Instant::now() < deadline,
            "cannot flock the stale lock: {e}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }

    let mut other = sandbox.spawn(HOLDER, &["--operation", "second-taker"]);
    // Whether it was refused or (wrongly) took the lock, let it end.
    other.close_stdin();
    let exit = other.wait();

    use std::os::unix::fs::MetadataExt;
    let ours = stale.metadata().expect("stat our fd");
    let on_disk = std::fs::symlink_metadata(&lock_path);
    assert!(
        matches!(&on_disk, Ok(m) if (m.dev(), m.ino()) == (ours.dev(), ours.ino())),
        "the stale lock whose flock we hold was removed by another taker \
         (exit {:?}, stdout {:?}, stderr:\n{})",
        exit.status,
        exit.stdout,
        exit.stderr
    );
    assert_ne!(exit.code(), Some(0), "{exit:?}");
}

/// Rounds of the stale takeover storm; `STEAD_STALE_ROUNDS` overrides.
fn storm_rounds() -> u32 {
    match std::env::var("STEAD_STALE_ROUNDS") {
        Ok(v) => v.parse().expect("STEAD_STALE_ROUNDS is a number"),
        Err(_) => 100,
    }
}

/// Many processes waiting on a lock whose holder is killed all race to take
/// the stale lock over: exactly one may win at a time.
#[test]
fn racing_takeovers_of_a_stale_lock_never_overlap() {
    const CONTENDER: &str = env!("CARGO_BIN_EXE_lock-contender");
    const TAKERS: usize = 8;
    const ROUNDS_EACH: u64 = 2;
    let sandbox = Sandbox::new();
    sandbox.lock_config(json!({
        "retry": {"attempts": 100_000, "delay_seconds": 0.001, "exponential_backoff": false}
    }));
    let marker = sandbox.path().join("inside.marker");
    let counter = sandbox.path().join("counter");
    let args = [
        "--rounds",
        &ROUNDS_EACH.to_string(),
        "--marker",
        marker.to_str().expect("utf-8 path"),
        "--counter",
        counter.to_str().expect("utf-8 path"),
    ]
    .map(str::to_string);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    let mut failures = Vec::new();
    for round in 0..storm_rounds() {
        std::fs::write(&counter, "0\n").expect("reset counter");
        let mut holder = sandbox.spawn(HOLDER, &["--operation", "doomed"]);
        holder.expect_line("acquired ");
        let mut takers: Vec<_> = (0..TAKERS)
            .map(|_| sandbox.spawn(CONTENDER, &args))
            .collect();
        for t in &mut takers {
            t.expect_line("ready");
        }
        // They all wait on the live holder (1 ms retries)...
        for t in &mut takers {
            t.send_line("go");
        }
        // ...which dies: they all find its lock stale at about the same time.
        holder.kill();
        let mut removals = Vec::new();
        let mut overlapped = Vec::new();
        for t in &mut takers {
            let pid = t.pid();
            let exit = t.wait();
            assert_eq!(exit.code(), Some(0), "{exit:?}");
            if exit.stdout != ["overlaps 0"] {
                overlapped.push(format!("taker {pid}: {:?}", exit.stdout));
            }
            removals.extend(
                exit.stderr
                    .lines()
                    .filter(|l| l.contains("removed a stale lock"))
                    .map(|l| format!("taker {pid}: {l}")),
            );
        }
        let total: u64 = std::fs::read_to_string(&counter)
            .expect("read counter")
            .trim()
            .parse()
            .expect("counter");
        if total != TAKERS as u64 * ROUNDS_EACH || !overlapped.is_empty() {
            failures.push(format!(
                "round {round}: counter {total} of {}; {}\n  {}",
                TAKERS as u64 * ROUNDS_EACH,
                overlapped.join(", "),
                removals.join("\n  ")
            ));
        }
        assert!(!sandbox.layout().lock_file().exists());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
