//! A writer that dies at any instant, holding the lock, leaves `state.json`
//! whole (the old record or the new one, never torn or empty) and a lock that
//! the next run proves stale and takes over.

mod common;

use std::fs;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{Rng, Sandbox, env_number};
use stead_lib::lock::{self, LockConfig, LockEvent, LockRequest, LockStatus};
use stead_lib::state::{State, StateStore};

const WRITER: &str = env!("CARGO_BIN_EXE_state-writer");

fn store(sandbox: &Sandbox) -> StateStore {
    StateStore::new(sandbox.layout())
}

/// Loads the record and checks that it is one consistent step of its lineage.
fn load(sandbox: &Sandbox) -> State {
    let state = store(sandbox)
        .load_current()
        .unwrap_or_else(|e| panic!("state.json must load after a crash: {e}"));
    let serial = state.lineage.serial;
    assert!(serial >= 1);
    assert_eq!(
        state.lineage.parent_serial,
        serial.checked_sub(1).filter(|&p| p > 0)
    );
    let last = state
        .history
        .last()
        .expect("history entry of the last write");
    assert_eq!(last.serial, serial);
    state
}

/// Asserts that the lock left by the dead `pid` is stale, takes it over as a
/// real caller would (seeing the stale lock removed), and commits once more.
/// Returns the new serial.
fn take_over_and_commit(sandbox: &Sandbox, pid: u32) -> u64 {
    let layout = sandbox.layout();
    let config = LockConfig::load(&layout).expect("lock config");
    match lock::inspect(&layout, &config).expect("inspect") {
        LockStatus::Stale { info, reason } => {
            assert_eq!(info.expect("readable lock").machine.pid, pid);
            // Free flock, pid gone: the plain proof.
            assert_eq!(reason, format!("process {pid} is no longer running"));
        }
        other => panic!("the dead writer's lock must be stale, got {other:?}"),
    }

    let mut events = Vec::new();
    let guard = lock::acquire(
        &layout,
        &config,
        &LockRequest::new("recover", "test-machine"),
        &mut |e| events.push(e),
    )
    .expect("take over the stale lock");
    match events.as_slice() {
        [LockEvent::StaleRemoved { info, .. }] => {
            assert_eq!(info.as_ref().expect("readable lock").machine.pid, pid);
        }
        other => panic!("expected exactly one StaleRemoved, got {other:?}"),
    }

    let store = store(sandbox);
    let mut state = load(sandbox);
    let before = state.lineage.serial;
    store
        .commit(&guard, &mut state, "recover")
        .expect("commit after the takeover");
    assert_eq!(state.lineage.serial, before + 1);
    assert_eq!(load(sandbox).lineage.serial, before + 1);
    guard.release().expect("release");
    assert!(!layout.lock_file().exists());
    before + 1
}

/// `serial N` lines -> N.
fn serials(lines: &[String]) -> Vec<u64> {
    lines
        .iter()
        .map(|l| {
            l.strip_prefix("serial ")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unexpected line {l:?}"))
        })
        .collect()
}

/// Runs `state-writer --count N` to the end; returns the serials it printed.
fn write_ok(sandbox: &Sandbox, count: u64) -> Vec<u64> {
    let mut writer = sandbox.spawn(WRITER, &["--count", &count.to_string()]);
    let exit = writer.wait();
    assert_eq!(exit.code(), Some(0), "{exit:?}");
    serials(&exit.stdout)
}

fn crash_at(sandbox: &Sandbox, stage: &str) -> (u32, Vec<String>) {
    let mut writer = sandbox.spawn(WRITER, &["--count", "1", "--crash-at", stage]);
    let pid = writer.pid();
    let exit = writer.wait();
    assert_eq!(exit.signal(), Some(nix::libc::SIGABRT), "{exit:?}");
    assert_eq!(exit.stdout, vec![format!("crash {stage}")], "{exit:?}");
    (
        pid,
        sandbox.state_dir_entries(&format!(".state.json.tmp-{pid}-")),
    )
}

#[test]
fn crash_between_temp_write_and_rename_keeps_the_old_record() {
    let sandbox = Sandbox::new();
    assert_eq!(write_ok(&sandbox, 3), vec![1, 2, 3, 4]);
    let state_file = sandbox.layout().state_file();
    let before = fs::read(&state_file).expect("read state.json");

    let (pid, temps) = crash_at(&sandbox, "temp-synced");

    // The old record, byte for byte.
    assert_eq!(fs::read(&state_file).expect("read state.json"), before);
    assert_eq!(load(&sandbox).lineage.serial, 4);
    // The writer really died with the whole new record written beside it:
    // in the spare (the record before the last commit, overwritten in
    // place and swapped in by the next), not in a temp file.
    assert!(temps.is_empty(), "{temps:?}");
    let raw = fs::read(sandbox.layout().state_spare()).expect("read the spare");
    let unborn: State = serde_json::from_slice(&raw).expect("the spare holds a full record");
    assert_eq!(unborn.lineage.serial, 5);

    // It died holding the lock: stale, taken over, and the next write is 5.
    assert!(sandbox.layout().lock_file().exists());
    assert_eq!(take_over_and_commit(&sandbox, pid), 5);
    assert_eq!(write_ok(&sandbox, 1), vec![6]);
}

#[test]
fn crash_after_rename_keeps_the_new_record() {
    let sandbox = Sandbox::new();
    assert_eq!(write_ok(&sandbox, 2), vec![1, 2, 3]);

    let (pid, temps) = crash_at(&sandbox, "renamed");

    assert!(temps.is_empty(), "{temps:?}");
    let state = load(&sandbox);
    assert_eq!(state.lineage.serial, 4);
    assert_eq!(state.active_profile.as_deref(), Some("profile-1"));
    assert_eq!(take_over_and_commit(&sandbox, pid), 5);
}

#[test]
fn sigkill_at_random_points_never_tears_the_record() {
    let iterations = env_number("STEAD_CRASH_ITERATIONS").unwrap_or(20);
    let seed = env_number("STEAD_CRASH_SEED").unwrap_or_else(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_nanos() as u64;
        nanos ^ u64::from(std::process::id())
    });
    // Shown when the test fails: rerun with STEAD_CRASH_SEED to repeat it.
    eprintln!("STEAD_CRASH_SEED={seed} STEAD_CRASH_ITERATIONS={iterations}");
    let mut rng = Rng(seed | 1);
    const MAX_LINES: u64 = 10;

    let sandbox = Sandbox::new();
    let mut on_disk = 0;
    for iteration in 0..iterations {
        let mut writer = sandbox.spawn(WRITER, &["--count", "1000000"]);
        let pid = writer.pid();
        let wanted = 1 + rng.below(MAX_LINES);
        let mut printed = Vec::new();
        for _ in 0..wanted {
            printed.push(
                writer
                    .expect_line("serial ")
                    .parse::<u64>()
                    .expect("serial"),
            );
        }
        // It keeps writing while we kill it: the kill lands anywhere in a commit.
        let exit = writer.kill();
        assert_eq!(exit.signal(), Some(nix::libc::SIGKILL), "{exit:?}");
        printed.extend(serials(&exit.stdout));
        let last_printed = *printed.last().expect("at least one serial");
        assert!(
            printed.windows(2).all(|w| w[1] == w[0] + 1),
            "serials go up by one: {printed:?}"
        );
        assert!(printed[0] > on_disk, "continues after the last record");

        // Whole, and at the last serial printed or the one written (renamed)
        // but not yet printed when the kill landed.
        let serial = load(&sandbox).lineage.serial;
        assert!(
            serial == last_printed || serial == last_printed + 1,
            "iteration {iteration}: on disk serial {serial}, last printed {last_printed}"
        );
        assert!(serial > on_disk, "the serial went backwards");

        on_disk = take_over_and_commit(&sandbox, pid);
    }
    let temps = sandbox.state_dir_entries(".state.json.tmp-");
    eprintln!(
        "{} temp files of killed writes left in the state dir: {temps:?}",
        temps.len()
    );
}
