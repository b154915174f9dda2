//! Property tests of the state store: round-trips, serials, history cap.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use stead_lib::layout::Layout;
use stead_lib::lock::{self, LockConfig, LockGuard, LockRequest};
use stead_lib::machine::MachineInfo;
use stead_lib::state::{
    HistoryEntry, Lineage, Loaded, ResourceRecord, State, StateStore, SyncInfo,
};

fn text() -> impl Strategy<Value = String> {
    // Unicode, quotes, backslashes and control characters must all survive.
    prop_oneof![
        "[a-zA-Z0-9._/~-]{0,24}",
        any::<String>().prop_map(|s| s.chars().take(24).collect()),
    ]
}

fn timestamp() -> impl Strategy<Value = DateTime<Utc>> {
    (0i64..4_102_444_800, 0u32..1_000_000_000)
        .prop_map(|(s, n)| Utc.timestamp_opt(s, n).single().unwrap_or_default())
}

fn history_entry() -> impl Strategy<Value = HistoryEntry> {
    (text(), text(), timestamp(), text(), text(), any::<u64>()).prop_map(
        |(id, operation, timestamp, machine_id, user, serial)| HistoryEntry {
            id,
            operation,
            timestamp,
            machine_id,
            user,
            serial,
        },
    )
}

fn state_with_serial(serial: impl Strategy<Value = u64>) -> impl Strategy<Value = State> {
    let machine =
        (text(), text(), text(), text(), text()).prop_map(|(id, hostname, os, arch, user)| {
            MachineInfo {
                id,
                hostname,
                os,
                arch,
                user,
            }
        });
    let lineage = (
        text(),
        serial,
        proptest::option::of(any::<u64>()),
        proptest::option::of(text()),
        proptest::collection::vec(text(), 0..4),
    )
        .prop_map(
            |(id, serial, parent_serial, git_commit, machines)| Lineage {
                id,
                serial,
                parent_serial,
                git_commit,
                machines,
            },
        );
    let resources = proptest::collection::btree_map(
        text(),
        (
            text(),
            proptest::collection::vec(text(), 0..3),
            any::<u64>(),
            proptest::collection::vec(text(), 0..2),
        )
            .prop_map(|(kind, keys, serial, names)| ResourceRecord {
                kind,
                keys,
                serial,
                names: names.into(),
            }),
        0..4,
    );
    let sync = (
        proptest::option::of(any::<u64>()),
        proptest::option::of(text()),
    )
        .prop_map(|(base_serial, base_commit)| SyncInfo {
            base_serial,
            base_commit,
        });
    (
        (
            proptest::option::of(text()),
            proptest::option::of(text()),
            proptest::option::of(text()),
            proptest::option::of(timestamp()),
            proptest::option::of(timestamp()),
        ),
        machine,
        text(),
        lineage,
        proptest::collection::vec(history_entry(), 0..8),
        // Checksums in stead's own form (kept packed) and any other text.
        proptest::collection::btree_map(
            text(),
            prop_oneof![
                text(),
                any::<[u8; 32]>().prop_map(|digest| {
                    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                    format!("blake3:{hex}")
                }),
            ],
            0..5,
        ),
        resources,
        sync,
    )
        .prop_map(
            |(
                (active_profile, config_path, repo_url, last_sync, last_apply),
                machine,
                stead_version,
                lineage,
                history,
                checksums,
                resources,
                sync,
            )| State {
                version: 2,
                active_profile,
                config_path,
                repo_url,
                last_sync,
                last_apply,
                machine,
                stead_version,
                lineage,
                history,
                checksums: checksums
                    .into_iter()
                    .map(|(key, sum): (String, String)| (key, sum.into()))
                    .collect::<BTreeMap<_, _>>(),
                resources,
                sync,
                checks: BTreeMap::new(),
                migration: None,
                unread: Default::default(),
            },
        )
}

fn store(dir: &tempfile::TempDir, limit: usize) -> (StateStore, LockGuard) {
    let layout = Layout::new(dir.path(), None);
    let guard = lock::acquire(
        &layout,
        &LockConfig::default(),
        &LockRequest::new("test", "m"),
        &mut |_| {},
    )
    .unwrap();
    (StateStore::new(layout).with_history_limit(limit), guard)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any valid V2 record on disk loads back exactly.
    #[test]
    fn any_v2_state_loads_back_unchanged(state in state_with_serial(any::<u64>())) {
        let dir = tempfile::tempdir().unwrap();
        let (store, _guard) = store(&dir, 50);
        std::fs::create_dir_all(store.layout().state_dir()).unwrap();
        std::fs::write(store.path(), serde_json::to_vec_pretty(&state).unwrap()).unwrap();
        prop_assert_eq!(store.load().unwrap(), Some(Loaded::Current(Box::new(state))));
    }

    /// What a commit writes is exactly what the next load returns, write after write.
    #[test]
    fn committed_state_round_trips(state in state_with_serial(Just(0u64)), writes in 1usize..4) {
        let dir = tempfile::tempdir().unwrap();
        let (store, guard) = store(&dir, 50);
        let mut state = state;
        for _ in 0..writes {
            store.commit(&guard, &mut state, "apply").unwrap();
            prop_assert_eq!(store.load_current().unwrap(), state.clone());
        }
    }

    /// Every write bumps the serial by one and records the previous one as parent.
    #[test]
    fn serial_strictly_increases(state in state_with_serial(Just(0u64)), writes in 1usize..12) {
        let dir = tempfile::tempdir().unwrap();
        let (store, guard) = store(&dir, 50);
        let mut state = state;
        let mut last = 0;
        for _ in 0..writes {
            store.commit(&guard, &mut state, "apply").unwrap();
            let on_disk = store.load_current().unwrap();
            prop_assert!(on_disk.lineage.serial > last);
            prop_assert_eq!(on_disk.lineage.serial, last + 1);
            prop_assert_eq!(on_disk.lineage.parent_serial, (last > 0).then_some(last));
            prop_assert_eq!(on_disk.history.last().map(|h| h.serial), Some(last + 1));
            last = on_disk.lineage.serial;
        }
    }

    /// History never exceeds its cap and keeps the newest entries, in order.
    #[test]
    fn history_is_capped_keeping_newest(
        state in state_with_serial(Just(0u64)),
        limit in 1usize..10,
        writes in 1usize..25,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (store, guard) = store(&dir, limit);
        let mut state = state;
        state.history.clear();
        let mut ids = Vec::new();
        for i in 0..writes {
            store.commit(&guard, &mut state, &format!("op{i}")).unwrap();
            ids.push(state.history.last().unwrap().id.clone());
            let on_disk = store.load_current().unwrap();
            prop_assert!(on_disk.history.len() <= limit);
            let expected: Vec<_> = ids[ids.len().saturating_sub(limit)..].to_vec();
            let got: Vec<_> = on_disk.history.iter().map(|h| h.id.clone()).collect();
            prop_assert_eq!(got, expected);
        }
    }
}

#[test]
fn commit_refuses_when_the_serial_moved() {
    let dir = tempfile::tempdir().unwrap();
    let (store, guard) = store(&dir, 50);
    let mut a = State::new(MachineInfo::current("m"));
    store.commit(&guard, &mut a, "init").unwrap();
    let mut stale = a.clone();
    store.commit(&guard, &mut a, "apply").unwrap();
    let before = std::fs::read(store.path()).unwrap();
    let err = store.commit(&guard, &mut stale, "apply").unwrap_err();
    assert!(err.to_string().contains("changed underneath"), "{err}");
    assert_eq!(std::fs::read(store.path()).unwrap(), before);
    assert_eq!(
        stale.lineage.serial, 1,
        "a failed commit leaves the caller's state as it was"
    );
}

#[test]
fn a_commit_whose_write_fails_leaves_the_callers_state_and_the_file_as_they_were() {
    let dir = tempfile::tempdir().unwrap();
    let (store, guard) = store(&dir, 2);
    let mut s = State::new(MachineInfo::current("m"));
    for op in ["init", "apply", "apply"] {
        store.commit(&guard, &mut s, op).unwrap();
    }
    let before = s.clone();
    let on_disk = std::fs::read(store.path()).unwrap();
    let path = store.path();
    // The rename onto the record fails: a directory took its place after
    // the temp file was written (the history was already pruned, the
    // serial raised and an entry added to the caller's record by then).
    let err = store
        .commit_observed(&guard, &mut s, "apply", &mut |stage| {
            if stage == stead_lib::fsutil::WriteStage::TempSynced {
                std::fs::rename(&path, path.with_extension("aside")).unwrap();
                std::fs::create_dir(&path).unwrap();
                std::fs::write(path.join("in-the-way"), b"x").unwrap();
            }
        })
        .unwrap_err();
    assert!(err.to_string().contains("cannot rename"), "{err}");
    assert_eq!(s, before, "the caller's record is as it was");
    assert_eq!(
        std::fs::read(path.with_extension("aside")).unwrap(),
        on_disk,
        "the file is as it was"
    );
}

#[test]
fn commit_never_overwrites_a_corrupt_file() {
    let dir = tempfile::tempdir().unwrap();
    let (store, guard) = store(&dir, 50);
    let mut s = State::new(MachineInfo::current("m"));
    store.commit(&guard, &mut s, "init").unwrap();
    std::fs::write(store.path(), b"{\"version\": 2, \"lin").unwrap();
    assert!(store.commit(&guard, &mut s, "apply").is_err());
    assert_eq!(
        std::fs::read(store.path()).unwrap(),
        b"{\"version\": 2, \"lin"
    );
}

#[test]
fn state_file_is_0600_and_dir_0700() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (store, guard) = store(&dir, 50);
    let mut s = State::new(MachineInfo::current("m"));
    store.commit(&guard, &mut s, "init").unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&store.path()), 0o600);
    assert_eq!(mode(store.layout().state_dir()), 0o700);
}
