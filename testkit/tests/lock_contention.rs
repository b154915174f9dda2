//! Many processes taking the lock at once: never two inside at the same time.

mod common;

use std::fs;

use common::{Proc, Sandbox};
use serde_json::json;
use stead_lib::lock::{self, LockConfig, LockStatus};

const CONTENDER: &str = env!("CARGO_BIN_EXE_lock-contender");

const PROCESSES: usize = 8;

/// Rounds per process; `STEAD_CONTENTION_ROUNDS` overrides.
fn rounds() -> u64 {
    match std::env::var("STEAD_CONTENTION_ROUNDS") {
        Ok(v) => v.parse().expect("STEAD_CONTENTION_ROUNDS is a number"),
        Err(_) => 200,
    }
}

#[test]
fn contending_processes_never_overlap_and_lose_no_update() {
    let sandbox = Sandbox::new();
    let rounds = rounds();
    sandbox.lock_config(json!({
        "retry": {"attempts": 100_000, "delay_seconds": 0.001, "exponential_backoff": false}
    }));
    let marker = sandbox.path().join("inside.marker");
    let counter = sandbox.path().join("counter");
    fs::write(&counter, "0\n").expect("write counter");

    let rounds_arg = rounds.to_string();
    let args = [
        "--rounds",
        &rounds_arg,
        "--marker",
        marker.to_str().expect("utf-8 path"),
        "--counter",
        counter.to_str().expect("utf-8 path"),
    ];
    let mut contenders: Vec<Proc> = (0..PROCESSES)
        .map(|_| sandbox.spawn(CONTENDER, &args))
        .collect();
    // All set up (machine id made, config read): start them together.
    for c in &mut contenders {
        c.expect_line("ready");
    }
    for c in &mut contenders {
        c.send_line("go");
    }

    for c in &mut contenders {
        let pid = c.pid();
        let exit = c.wait();
        assert_eq!(exit.code(), Some(0), "contender {pid}: {exit:?}");
        assert_eq!(
            exit.stdout,
            vec!["overlaps 0".to_string()],
            "contender {pid}: {exit:?}"
        );
    }

    let total: u64 = fs::read_to_string(&counter)
        .expect("read counter")
        .trim()
        .parse()
        .expect("counter is a number");
    assert_eq!(total, PROCESSES as u64 * rounds, "lost updates");
    assert!(!marker.exists());

    let layout = sandbox.layout();
    assert!(!layout.lock_file().exists(), "lock file left behind");
    assert_eq!(
        lock::inspect(&layout, &LockConfig::load(&layout).expect("config")).expect("inspect"),
        LockStatus::Unlocked
    );
    assert_eq!(
        sandbox.state_dir_entries(".state.lock.tmp-"),
        Vec::<String>::new(),
        "temp lock files left behind"
    );
}
