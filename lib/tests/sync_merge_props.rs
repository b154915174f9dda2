//! Property tests of the shared record's merge: for random pairs of records
//! descended from a common base, the merge is commutative in content (same
//! machines, same history), never loses or doubles a history entry, and its
//! serial is above both sides; with history retention, an entry leaves only
//! below its own machine's floor, and never comes back.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use stead_lib::state::HistoryEntry;
use stead_lib::sync::shared::{
    MachineRecord, SharedRecord, Strategy as MergeStrategy, below_floor, merge, retain_own_history,
};

const MACHINES: [&str; 5] = ["m0", "m1", "m2", "m3", "m4"];

fn machine_record(profile: u8, secs: i64, files: &[(u8, u8)]) -> MachineRecord {
    MachineRecord {
        hostname: "host".into(),
        os: "linux".into(),
        arch: "x86_64".into(),
        user: "me".into(),
        active_profile: Some(format!("p{profile}")),
        config_path: Some("/home/me/dots".into()),
        last_apply: DateTime::from_timestamp(1_700_000_000 + secs, 0),
        last_sync: None,
        checksums: files
            .iter()
            .map(|(f, c)| (format!("~/f{f}"), format!("blake3:{c}")))
            .collect(),
        drift: Some(files.len() as u64),
        history_from_serial: None,
    }
}

/// One write by a machine: (machine index, profile, seconds, checksums).
type Write = (usize, u8, i64, Vec<(u8, u8)>);

/// What one side did after the base: which machines wrote, how many
/// operations each, and how far the serial moved.
#[derive(Debug, Clone)]
struct Descent {
    writes: Vec<Write>,
    serial_steps: u64,
    tag: &'static str,
}

fn descent(tag: &'static str) -> impl Strategy<Value = Descent> {
    (
        prop::collection::vec(
            (
                0..MACHINES.len(),
                0u8..3,
                0i64..1000,
                prop::collection::vec((0u8..4, 0u8..3), 0..3),
            ),
            0..6,
        ),
        0u64..5,
    )
        .prop_map(move |(writes, extra)| Descent {
            serial_steps: writes.len() as u64 + extra,
            writes,
            tag,
        })
}

fn base_record() -> impl Strategy<Value = SharedRecord> {
    (
        1usize..MACHINES.len(),
        0u64..100,
        prop::collection::vec(0i64..1000, 0..6),
    )
        .prop_map(|(n, serial, times)| {
            let mut r = SharedRecord::new("lineage-p");
            r.lineage.serial = serial;
            for (i, m) in MACHINES.iter().take(n).enumerate() {
                r.machines
                    .insert(m.to_string(), machine_record(0, i as i64, &[]));
                r.lineage.machines.push(m.to_string());
            }
            for (i, t) in times.into_iter().enumerate() {
                r.history.push(HistoryEntry {
                    id: format!("base-{i}"),
                    operation: "apply".into(),
                    timestamp: DateTime::<Utc>::from_timestamp(1_700_000_000 + t, 0)
                        .unwrap_or_default(),
                    machine_id: MACHINES[i % n].to_string(),
                    user: "me".into(),
                    serial: i as u64,
                });
            }
            r
        })
}

fn descend(base: &SharedRecord, d: &Descent) -> SharedRecord {
    let mut r = base.clone();
    for (i, (m, profile, secs, files)) in d.writes.iter().enumerate() {
        let id = MACHINES[*m].to_string();
        r.machines
            .insert(id.clone(), machine_record(*profile, *secs, files));
        if !r.lineage.machines.contains(&id) {
            r.lineage.machines.push(id.clone());
            r.lineage.machines.sort();
        }
        r.history.push(HistoryEntry {
            id: format!("{}-{i}", d.tag),
            operation: "apply".into(),
            timestamp: DateTime::<Utc>::from_timestamp(1_700_000_000 + secs, 0).unwrap_or_default(),
            machine_id: id,
            user: "me".into(),
            serial: base.lineage.serial + i as u64 + 1,
        });
    }
    r.lineage.serial = base.lineage.serial + d.serial_steps;
    r
}

fn history_ids(r: &SharedRecord) -> Vec<String> {
    r.history.iter().map(|e| e.id.clone()).collect()
}

fn strategy() -> impl Strategy<Value = MergeStrategy> {
    prop_oneof![
        Just(MergeStrategy::Merge),
        Just(MergeStrategy::UseLocal),
        Just(MergeStrategy::UseRemote),
    ]
}

proptest! {
    #[test]
    fn merge_is_commutative_lossless_and_moves_the_serial_forward(
        base in base_record(),
        dl in descent("l"),
        dr in descent("r"),
        strategy in strategy(),
        me in prop::option::of(0..MACHINES.len()),
    ) {
        let l = descend(&base, &dl);
        let r = descend(&base, &dr);
        let me = me.map(|i| MACHINES[i]);
        let lr = merge(Some(&base), &l, &r, me, strategy);
        let rl = merge(Some(&base), &r, &l, me, MergeStrategy::Merge);
        let lr_merge = merge(Some(&base), &l, &r, me, MergeStrategy::Merge);

        // Same machines and same history set whichever side is which.
        let set = |r: &SharedRecord| r.lineage.machines.iter().cloned().collect::<BTreeSet<_>>();
        prop_assert_eq!(set(&lr), set(&rl));
        prop_assert_eq!(
            lr.machines.keys().collect::<Vec<_>>(),
            rl.machines.keys().collect::<Vec<_>>()
        );
        let hist = |r: &SharedRecord| history_ids(r).into_iter().collect::<BTreeSet<_>>();
        prop_assert_eq!(hist(&lr), hist(&rl));
        prop_assert_eq!(&history_ids(&lr_merge), &history_ids(&rl), "same order too");

        // Nothing lost, nothing doubled.
        let ids = history_ids(&lr);
        let unique: BTreeSet<_> = ids.iter().collect();
        prop_assert_eq!(unique.len(), ids.len(), "no duplicate entries");
        for side in [&base, &l, &r] {
            for id in history_ids(side) {
                prop_assert!(unique.contains(&id), "entry {} lost", id);
            }
        }
        // Ordered by time.
        prop_assert!(lr.history.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));
        // Every member of either side is a member of the merge.
        for side in [&l, &r] {
            for m in &side.lineage.machines {
                prop_assert!(lr.lineage.machines.contains(m));
                prop_assert!(lr.machines.contains_key(m));
            }
        }

        // The merge is a write of its own: above both sides.
        prop_assert!(lr.lineage.serial > l.lineage.serial);
        prop_assert!(lr.lineage.serial > r.lineage.serial);
        prop_assert_eq!(lr.lineage.serial, rl.lineage.serial);

        // A machine entry changed on one side only is taken from that side.
        for (id, lm) in &l.machines {
            let changed_here = base.machines.get(id) != Some(lm);
            let untouched_there = r.machines.get(id) == base.machines.get(id);
            if changed_here && untouched_there && Some(id.as_str()) != me {
                prop_assert_eq!(&lr.machines[id], lm);
            }
        }
    }

    #[test]
    fn merging_a_record_with_itself_keeps_its_content(
        base in base_record(),
        d in descent("l"),
    ) {
        let l = descend(&base, &d);
        let m = merge(Some(&base), &l, &l, None, MergeStrategy::Merge);
        let mut sorted = l.history.clone();
        sorted.sort_by(|x, y| (x.timestamp, x.serial, &x.id).cmp(&(y.timestamp, y.serial, &y.id)));
        prop_assert_eq!(&m.history, &sorted);
        prop_assert_eq!(&m.machines, &l.machines);
    }

    #[test]
    fn a_pruned_entry_never_comes_back_and_no_kept_one_is_lost(
        base in base_record(),
        dl in descent("l"),
        dr in descent("r"),
        strategy in strategy(),
        pruner in 0..MACHINES.len(),
        keep in 1usize..4,
    ) {
        let l = descend(&base, &dl);
        let mut r = descend(&base, &dr);
        // One machine prunes its own entries on the right-hand side.
        retain_own_history(&mut r, MACHINES[pruner], keep);
        for m in [
            merge(Some(&base), &l, &r, None, strategy),
            merge(Some(&base), &r, &l, None, strategy),
        ] {
            prop_assert_eq!(
                m.machines.get(MACHINES[pruner]).and_then(|x| x.history_from_serial),
                r.machines.get(MACHINES[pruner]).and_then(|x| x.history_from_serial)
            );
            let ids: BTreeSet<_> = history_ids(&m).into_iter().collect();
            for side in [&base, &l, &r] {
                for e in &side.history {
                    let kept = ids.contains(&e.id);
                    prop_assert_eq!(kept, !below_floor(e, &m.machines), "entry {}", e.id);
                }
            }
            // Merging the result with either side again changes no history.
            for side in [&l, &r] {
                let again = merge(Some(&base), &m, side, None, MergeStrategy::Merge);
                prop_assert_eq!(history_ids(&again), history_ids(&m));
            }
            prop_assert_eq!(m.version, if m.machines.values().any(|x| x.history_from_serial.is_some()) { 3 } else { 2 });
        }
    }
}
