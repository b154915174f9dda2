//! The etcd locks as a state machine, against a real etcd on loopback. For
//! random sequences of takes and releases by a few machines, each of its
//! own lock or of the lineage's, every outcome is the model's: a machine's
//! own lock is taken exactly when the lineage's is free (other machines'
//! own locks do not matter), the lineage's exactly when no lock at all is
//! held; and after every step the locks etcd holds are the model's.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::Utc;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use stead_lib::lock::{LockHolder, LockInfo, LockType};
use stead_lib::sync::backend::{Acquired, Backend, HeldRemote, LockScope, Released, RemoteLocker};
use stead_lib::sync::etcd::{EtcdBackend, EtcdConfig};
use stead_testkit::etcd::Etcd;

const MACHINES: usize = 3;
const TTL: u64 = 60;

#[derive(Debug, Clone)]
enum Step {
    /// Machine i takes its own lock.
    Own(usize),
    /// Machine i takes the lineage's lock.
    Lineage(usize),
    /// Machine i releases what it holds.
    Release(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..MACHINES).prop_map(Step::Own),
        (0..MACHINES).prop_map(Step::Lineage),
        (0..MACHINES).prop_map(Step::Release),
    ]
}

fn machine_id(i: usize) -> String {
    format!("machine-{i}")
}

fn info(i: usize) -> LockInfo {
    LockInfo {
        id: format!("lock-{i}"),
        lock_type: LockType::Hybrid,
        operation: "sync".to_string(),
        machine: LockHolder {
            id: machine_id(i),
            hostname: format!("host-{i}"),
            pid: std::process::id(),
            user: "tester".to_string(),
        },
        created_at: Utc::now(),
        expected_duration_seconds: 60,
        reason: None,
        state_serial: None,
        boot_id: None,
        pid_start_time: None,
    }
}

/// One simulated machine: its lockers, and what it holds (`true`: the
/// lineage's lock).
struct Machine {
    own: Box<dyn RemoteLocker>,
    lineage: Box<dyn RemoteLocker>,
    held: Option<(bool, HeldRemote)>,
}

fn backend(etcd: &Etcd, prefix: &str, dir: &Path) -> EtcdBackend {
    let config = EtcdConfig::new(&etcd.endpoints(), Some(prefix)).unwrap();
    config.write(dir).unwrap();
    EtcdBackend::new(dir, None, config, Duration::from_secs(5)).unwrap()
}

/// Runs `steps` on a lineage of its own under `prefix`.
fn run_steps(etcd: &Etcd, prefix: &str, steps: &[Step]) -> Result<(), TestCaseError> {
    let dirs: Vec<tempfile::TempDir> = (0..=MACHINES)
        .map(|_| tempfile::tempdir().unwrap())
        .collect();
    let mut machines: Vec<Machine> = (0..MACHINES)
        .map(|i| {
            let b = backend(etcd, prefix, dirs[i].path());
            Machine {
                own: b.locker(&LockScope::Machine(machine_id(i))).unwrap(),
                lineage: b.locker(&LockScope::Lineage).unwrap(),
                held: None,
            }
        })
        .collect();
    let viewer = backend(etcd, prefix, dirs[MACHINES].path())
        .locker(&LockScope::Lineage)
        .unwrap();
    for (n, step) in steps.iter().enumerate() {
        let (i, lineage_wide) = match step {
            Step::Own(i) => (*i, false),
            Step::Lineage(i) => (*i, true),
            Step::Release(i) => {
                let m = &mut machines[*i];
                if let Some((lineage_wide, held)) = m.held.take() {
                    let locker = if lineage_wide { &m.lineage } else { &m.own };
                    prop_assert_eq!(locker.release(&held).unwrap(), Released::Done, "step {}", n);
                }
                check_holders(viewer.as_ref(), &machines, n)?;
                continue;
            }
        };
        // A process holds one lock at a time (its local lock sees to it).
        if machines[i].held.is_some() {
            continue;
        }
        let lineage_held = machines.iter().any(|m| matches!(m.held, Some((true, _))));
        let any_held = machines.iter().any(|m| m.held.is_some());
        let expected = if lineage_wide {
            !any_held
        } else {
            !lineage_held
        };
        let locker = if lineage_wide {
            &machines[i].lineage
        } else {
            &machines[i].own
        };
        match locker.acquire(&info(i), TTL).unwrap() {
            Acquired::Taken(held) => {
                prop_assert!(expected, "step {}: {:?} took a lock held out", n, step);
                machines[i].held = Some((lineage_wide, held));
            }
            Acquired::Held(holder) => {
                prop_assert!(
                    !expected,
                    "step {}: {:?} was held out by {:?}",
                    n,
                    step,
                    holder.info
                );
            }
            Acquired::Broke { .. } => {
                prop_assert!(false, "step {}: {:?} broke a live lock", n, step)
            }
        }
        check_holders(viewer.as_ref(), &machines, n)?;
    }
    for m in &mut machines {
        if let Some((lineage_wide, held)) = m.held.take() {
            let locker = if lineage_wide { &m.lineage } else { &m.own };
            locker.release(&held).unwrap();
        }
    }
    Ok(())
}

/// What etcd holds is what the model holds.
fn check_holders(
    viewer: &dyn RemoteLocker,
    machines: &[Machine],
    n: usize,
) -> Result<(), TestCaseError> {
    let seen: BTreeMap<String, bool> = viewer
        .holders()
        .unwrap()
        .into_iter()
        .map(|h| {
            let id = h.info.map(|i| i.machine.id).unwrap_or_default();
            (id, h.scope == LockScope::Lineage)
        })
        .collect();
    let model: BTreeMap<String, bool> = machines
        .iter()
        .enumerate()
        .filter_map(|(i, m)| Some((machine_id(i), m.held.as_ref()?.0)))
        .collect();
    prop_assert_eq!(seen, model, "after step {}", n);
    Ok(())
}

#[test]
fn lineage_and_machine_locks_follow_the_model() {
    let Some(etcd) = Etcd::require(1) else {
        return;
    };
    let cases = AtomicUsize::new(0);
    let mut runner = TestRunner::new(Config {
        cases: 16,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&prop::collection::vec(step(), 1..24), |steps| {
        let n = cases.fetch_add(1, Ordering::SeqCst);
        run_steps(&etcd, &format!("/lock-props/{n}/"), &steps)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
