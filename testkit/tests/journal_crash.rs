//! A journal writer killed (SIGKILL) at any instant, over and over on the same
//! journal, as crashed apply runs followed by new ones would leave it: the
//! journal always loads (a torn last line is fine), every record that was
//! acknowledged durable is there, in every later run too, and no record is
//! duplicated or garbled.

mod common;

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{PATIENCE, Proc, Rng, Sandbox, env_number};
use stead_lib::journal::{self, OpState, Record};

const WRITER: &str = env!("CARGO_BIN_EXE_journal-writer");

/// The detail `journal-writer` gives op `k` (see its `detail_for`).
fn detail_for(k: u64, bytes: usize) -> String {
    let digit = char::from(b'0' + (k % 10) as u8);
    std::iter::repeat_n(digit, bytes).collect()
}

/// Checks one op record of a run whose records carry `detail_bytes`
/// characters of detail; returns its op number.
fn check_op(r: &Record, detail_bytes: usize) -> u64 {
    let k: u64 = r
        .op_id
        .strip_prefix(&format!("{}:", r.run_id))
        .and_then(|k| k.parse().ok())
        .unwrap_or_else(|| panic!("garbled op_id: {r:?}"));
    assert!(k >= 1, "op ids start at 1: {r:?}");
    assert!(
        ["file.t0", "file.t1", "file.t2", "file.t3"].contains(&r.resource.as_str()),
        "garbled resource: {r:?}"
    );
    assert_eq!(r.action, journal::JournalAction::Create, "{r:?}");
    assert_eq!(r.state, OpState::Started, "{r:?}");
    assert_eq!(r.idemp_key, None, "{r:?}");
    let expected = (detail_bytes > 0).then(|| detail_for(k, detail_bytes));
    assert!(r.detail == expected, "garbled detail in {}", r.op_id);
    k
}

#[test]
fn sigkill_mid_write_loses_no_acknowledged_record() {
    let iterations = env_number("STEAD_JOURNAL_CRASH_ITERATIONS").unwrap_or(20);
    let seed = env_number("STEAD_JOURNAL_CRASH_SEED").unwrap_or_else(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_nanos() as u64;
        nanos ^ u64::from(std::process::id())
    });
    // Shown when the test fails: rerun with STEAD_JOURNAL_CRASH_SEED to repeat it.
    eprintln!("STEAD_JOURNAL_CRASH_SEED={seed} STEAD_JOURNAL_CRASH_ITERATIONS={iterations}");
    let mut rng = Rng(seed | 1);

    let sandbox = Sandbox::new();
    let path = sandbox.state_dir().join(journal::JOURNAL_FILE);
    let backups = sandbox.state_dir().join("backups");
    // Detail sizes: short records (one batch in one page) and long ones (a
    // batch of 4 spans several pages, so a kill can cut the write short).
    const DETAIL_SIZES: [usize; 4] = [0, 3_000, 20_000, 60_000];
    // Run id -> its detail size, in the order the runs started.
    let mut runs: Vec<(String, usize)> = Vec::new();
    // Every op id ever acknowledged, by any run.
    let mut acknowledged: HashSet<String> = HashSet::new();
    let mut torn_tails = 0;

    for iteration in 0..iterations {
        let detail_bytes = DETAIL_SIZES[rng.below(DETAIL_SIZES.len() as u64) as usize];
        let mut cmd = Command::new(WRITER);
        cmd.arg(&path)
            .arg("100000000")
            .arg(detail_bytes.to_string())
            .current_dir(sandbox.path());
        // Every other run without fsyncs: its writer is mostly in `write`,
        // so kills tear lines often, and the next run must append after them.
        if iteration % 2 == 1 {
            cmd.arg("nosync");
        }
        let mut writer = Proc::spawn(cmd);
        // Once the first id is acknowledged the threads are writing; the
        // kill lands anywhere in what follows.
        let first = match writer.next_line(PATIENCE) {
            Some(line) => line,
            None => {
                let exit = writer.wait();
                panic!("iteration {iteration}: journal-writer ended at once: {exit:?}");
            }
        };
        std::thread::sleep(Duration::from_micros(rng.below(30_001)));
        let exit = writer.kill();
        assert_eq!(exit.signal(), Some(nix::libc::SIGKILL), "{exit:?}");
        let printed: Vec<String> = std::iter::once(first).chain(exit.stdout).collect();

        let loaded = journal::load(&path, &backups).unwrap_or_else(|e| {
            panic!("iteration {iteration}: the journal must load after a kill: {e}")
        });
        if loaded.torn_tail.is_some() {
            torn_tails += 1;
        }
        assert!(
            !backups.exists(),
            "iteration {iteration}: nothing may be moved aside"
        );

        // Runs: one run-start each, in order; a run-end never (all killed).
        let starts: Vec<&Record> = loaded
            .records
            .iter()
            .filter(|r| r.resource == "run")
            .inspect(|r| {
                assert_eq!(
                    r.action,
                    journal::JournalAction::RunStart,
                    "a killed run never ends: {r:?}"
                );
                assert_eq!(r.op_id, format!("{}:0", r.run_id), "{r:?}");
                assert_eq!(r.state, OpState::Started, "{r:?}");
            })
            .collect();
        assert_eq!(
            starts.len(),
            iteration as usize + 1,
            "iteration {iteration}: one run-start per run"
        );
        for (i, (run_id, _)) in runs.iter().enumerate() {
            assert_eq!(&starts[i].run_id, run_id, "earlier runs stay in order");
        }
        let run_id = starts[iteration as usize].run_id.clone();
        runs.push((run_id.clone(), detail_bytes));
        let detail_of: HashMap<&str, usize> =
            runs.iter().map(|(id, d)| (id.as_str(), *d)).collect();

        // Every op record whole, once.
        let mut seen: HashSet<&str> = HashSet::new();
        for r in loaded.records.iter().filter(|r| r.resource != "run") {
            let bytes = *detail_of
                .get(r.run_id.as_str())
                .unwrap_or_else(|| panic!("a record of an unknown run: {r:?}"));
            check_op(r, bytes);
            assert!(seen.insert(&r.op_id), "duplicated record {}", r.op_id);
        }

        // Every acknowledged id, of this run and of every earlier one.
        for id in &printed {
            assert!(
                id.starts_with(&format!("{run_id}:")),
                "iteration {iteration}: printed {id:?} is not of run {run_id}"
            );
            acknowledged.insert(id.clone());
        }
        let missing: Vec<&String> = acknowledged
            .iter()
            .filter(|id| !seen.contains(id.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "iteration {iteration}: acknowledged but not in the journal: {missing:?}"
        );

        // As recovery sees it: this run was interrupted with every op in flight.
        let (interrupted, _) =
            journal::interrupted_run(&loaded.records).expect("the killed run is interrupted");
        assert_eq!(interrupted, run_id);
        let in_flight = journal::in_flight(&loaded.records, &run_id).len();
        let of_run = loaded
            .records
            .iter()
            .filter(|r| r.run_id == run_id && r.resource != "run")
            .count();
        assert_eq!(in_flight, of_run);
        assert!(of_run >= printed.len());
    }
    eprintln!(
        "{iterations} kills, {} acknowledged records, {torn_tails} torn last lines seen",
        acknowledged.len()
    );
}
