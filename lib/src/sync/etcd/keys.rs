//! The shared record as etcd keys, one writer per key: the record split
//! into keys, put back together from them, and the writes that carry one
//! copy's changes since a base onto the remote. Pure: no I/O.
//!
//! Under the lineage's prefix `P`:
//!
//! | key | value | written by |
//! |---|---|---|
//! | `P/meta` | `{"version", "id"}` | the machine that starts the lineage; its version by compare-and-set |
//! | `P/serial` | `<serial:020>:<parent>` | anyone, only upwards (a nested compare) |
//! | `P/members/<mid>` | empty | that machine (joining) or a lineage-wide removal |
//! | `P/machines/<mid>` | its [`MachineRecord`] | that machine |
//! | `P/history/<mid>/<entry-id>` | one [`HistoryEntry`] | that machine, create-only; deleted by it below its floor |
//! | `P/retired/<mid>` | empty | a lineage-wide removal |
//!
//! Beside the record: the locks, each bound to a lease (`P/locks/lineage`
//! for lineage-wide writes, `P/locks/machines/<mid>` for each machine's
//! own), and `P/config/rev` (the config commit last pushed, for
//! `stead fleet watch`).
//!
//! Machines write their own keys, so syncs of different machines never
//! compare on the same key: no compare-and-set retries between them. The
//! serial is the one key everyone writes; its write is a nested
//! transaction that only ever raises it, so it never makes a sync fail.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::state::HistoryEntry;
use crate::sync::shared::{self, MachineRecord, SHARED_VERSION, SharedLineage, SharedRecord};

/// The largest value stead writes to one key: etcd refuses requests over
/// 1.5 MiB (`--max-request-bytes`), and a transaction carries several keys.
pub const MAX_VALUE_BYTES: usize = 512 * 1024;

/// The serial key's name below the prefix.
pub const SERIAL: &str = "serial";
/// The lineage meta key's name below the prefix.
pub const META: &str = "meta";
/// Where the locks live below the prefix (not part of the record).
pub const LOCKS: &str = "locks/";
/// The lineage-wide lock below the prefix.
pub const LINEAGE_LOCK: &str = "locks/lineage";
/// Where each machine's own lock lives below the prefix (`<this><mid>`).
pub const MACHINE_LOCKS: &str = "locks/machines/";
/// The config commit a machine last pushed (not part of the record): what
/// `stead fleet watch` waits on.
pub const CONFIG_REV: &str = "config/rev";

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    version: u32,
    id: String,
}

/// Why keys read from etcd are not a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeysError {
    /// A key's value could not be read.
    #[error("the etcd key {key} is corrupt: {problem}")]
    Corrupt {
        /// The key, with its prefix.
        key: String,
        /// What is wrong.
        problem: String,
    },
    /// Written by a newer stead.
    #[error(
        "the shared record under {prefix} has version {found}, but this stead understands up to version {SHARED_VERSION}; upgrade stead"
    )]
    Newer {
        /// The lineage's prefix.
        prefix: String,
        /// Its version.
        found: u32,
    },
    /// A value is over [`MAX_VALUE_BYTES`].
    #[error(
        "the etcd key {key} would hold {size} bytes, over stead's limit of {MAX_VALUE_BYTES} bytes per key \
         (etcd refuses requests over 1.5 MiB by default, --max-request-bytes)\n\
         Nothing was written. Manage fewer files on this machine, or split its profile."
    )]
    TooLarge {
        /// The key.
        key: String,
        /// Its value's size.
        size: usize,
    },
}

/// The record as keys (relative to the prefix) and their values.
pub fn to_keys(record: &SharedRecord) -> BTreeMap<String, Vec<u8>> {
    let mut keys = BTreeMap::new();
    let meta = Meta {
        version: record.version,
        id: record.lineage.id.clone(),
    };
    keys.insert(META.to_string(), json(&meta));
    let parent = record
        .lineage
        .parent_serial
        .map(|p| p.to_string())
        .unwrap_or_default();
    keys.insert(
        SERIAL.to_string(),
        format!("{:020}:{parent}", record.lineage.serial).into_bytes(),
    );
    for id in &record.lineage.machines {
        keys.insert(format!("members/{id}"), Vec::new());
    }
    for (id, machine) in &record.machines {
        keys.insert(format!("machines/{id}"), json(machine));
    }
    for entry in &record.history {
        keys.insert(
            format!("history/{}/{}", entry.machine_id, entry.id),
            json(entry),
        );
    }
    for id in &record.retired {
        keys.insert(format!("retired/{id}"), Vec::new());
    }
    keys
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    // Plain data (strings, numbers, maps with string keys) always serializes.
    serde_json::to_vec(value).unwrap_or_default()
}

/// The record from its keys (relative to the prefix; lock keys and keys
/// stead does not know are skipped). `None`: no lineage under the prefix.
pub fn from_keys(
    prefix: &str,
    keys: &BTreeMap<String, Vec<u8>>,
) -> Result<Option<SharedRecord>, KeysError> {
    let Some(meta_bytes) = keys.get(META) else {
        return Ok(None);
    };
    let corrupt = |key: &str, problem: String| KeysError::Corrupt {
        key: format!("{prefix}{key}"),
        problem,
    };
    let meta: Meta = parse(meta_bytes).map_err(|p| corrupt(META, p))?;
    if meta.version > SHARED_VERSION {
        return Err(KeysError::Newer {
            prefix: prefix.to_string(),
            found: meta.version,
        });
    }
    let (serial, parent_serial) = match keys.get(SERIAL) {
        Some(bytes) => read_serial(bytes).ok_or_else(|| {
            corrupt(
                SERIAL,
                "expected <serial>:<parent serial> in decimal".to_string(),
            )
        })?,
        None => (0, None),
    };
    let mut record = SharedRecord::new(&meta.id);
    record.lineage = SharedLineage {
        id: meta.id,
        serial,
        parent_serial,
        machines: Vec::new(),
    };
    for (key, value) in keys {
        if let Some(id) = key.strip_prefix("members/") {
            record.lineage.machines.push(id.to_string());
        } else if let Some(id) = key.strip_prefix("machines/") {
            let machine: MachineRecord = parse(value).map_err(|p| corrupt(key, p))?;
            record.machines.insert(id.to_string(), machine);
        } else if key.starts_with("history/") {
            let entry: HistoryEntry = parse(value).map_err(|p| corrupt(key, p))?;
            record.history.push(entry);
        } else if let Some(id) = key.strip_prefix("retired/") {
            record.retired.push(id.to_string());
        }
    }
    record.history = shared::union_history(&record.history, &[]);
    // A key below its machine's floor is one a publish has not deleted yet
    // (or one an older stead put back): pruned all the same.
    record.drop_pruned_history();
    record.settle_version();
    Ok(Some(record))
}

fn parse<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

/// `<serial:020>:<parent>` read back.
pub fn read_serial(bytes: &[u8]) -> Option<(u64, Option<u64>)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let (serial, parent) = text.split_once(':')?;
    let serial = serial.parse().ok()?;
    let parent = if parent.is_empty() {
        None
    } else {
        Some(parent.parse().ok()?)
    };
    Some((serial, parent))
}

/// One write a publish makes: a key (relative to the prefix), its new value
/// (`None`: delete it), and the remote's version of the key it must still
/// find (`0`: the key must not exist).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// The key below the prefix.
    pub key: String,
    /// The value to put, or `None` to delete.
    pub value: Option<Vec<u8>>,
    /// The key's `mod_revision` as last read (`0`: absent).
    pub expect: i64,
}

/// The writes that carry `local`'s changes since `base` onto a remote last
/// read as `remote` (keys with their values and mod revisions): a key
/// `local` changed or added since `base` is put, one it dropped is deleted,
/// unless the remote already holds `local`'s value. Keys the remote gained
/// from others are left alone, and a history entry is deleted only when
/// `local` pruned it (it lies below its machine's floor in `local`: in the
/// same transaction as the floor, when the machine raises its own). The
/// serial is not among them: see [`serial_raise`].
pub fn writes(
    base: Option<&SharedRecord>,
    local: &SharedRecord,
    remote: &BTreeMap<String, (Vec<u8>, i64)>,
) -> Result<Vec<Write>, KeysError> {
    let before = base.map(to_keys).unwrap_or_default();
    let after = to_keys(local);
    let mut out = Vec::new();
    let expect = |key: &str| remote.get(key).map(|(_, rev)| *rev).unwrap_or(0);
    for (key, value) in &after {
        if key == SERIAL || before.get(key) == Some(value) {
            continue;
        }
        if remote.get(key).map(|(v, _)| v) == Some(value) {
            continue;
        }
        if value.len() > MAX_VALUE_BYTES {
            return Err(KeysError::TooLarge {
                key: key.clone(),
                size: value.len(),
            });
        }
        out.push(Write {
            key: key.clone(),
            value: Some(value.clone()),
            expect: expect(key),
        });
    }
    let pruned = pruned_here(base, local, remote);
    for key in before.keys() {
        if after.contains_key(key)
            || (key.starts_with("history/") && !pruned.contains(key))
            || !remote.contains_key(key)
        {
            continue;
        }
        out.push(Write {
            key: key.clone(),
            value: None,
            expect: expect(key),
        });
    }
    Ok(out)
}

/// The history keys this publish deletes: entries of `base` below their
/// machine's floor in `local`, where that floor is higher than the one the
/// remote holds, so that the publish raising a floor (the machine's own:
/// only it raises it) deletes what it pruned in the same transaction: one
/// writer per key. A machine that merely read someone's floor leaves their
/// keys alone: a view read with that floor no longer holds them anyway,
/// and a view that somehow still showed one would make its publish compare
/// a deleted key and fail.
fn pruned_here(
    base: Option<&SharedRecord>,
    local: &SharedRecord,
    remote: &BTreeMap<String, (Vec<u8>, i64)>,
) -> std::collections::BTreeSet<String> {
    /// Only the floor of a machine record: its checksums (megabytes for
    /// a machine of many files) are skipped, not built.
    #[derive(Deserialize)]
    struct Floor {
        history_from_serial: Option<u64>,
    }
    let remote_floor = |machine: &str| {
        remote
            .get(&format!("machines/{machine}"))
            .and_then(|(value, _)| serde_json::from_slice::<Floor>(value).ok())
            .and_then(|f| f.history_from_serial)
    };
    // Each machine's remote record read once, not once per pruned entry.
    let raised: std::collections::BTreeSet<&str> = local
        .machines
        .iter()
        .filter(|(id, m)| {
            m.history_from_serial.is_some() && m.history_from_serial > remote_floor(id)
        })
        .map(|(id, _)| id.as_str())
        .collect();
    let (Some(base), false) = (base, raised.is_empty()) else {
        return Default::default();
    };
    base.history
        .iter()
        .filter(|e| {
            raised.contains(e.machine_id.as_str()) && shared::below_floor(e, &local.machines)
        })
        .map(|e| format!("history/{}/{}", e.machine_id, e.id))
        .collect()
}

/// The serial value `local` wants, when it is above what the remote holds
/// (`None`: nothing to raise).
pub fn serial_raise(
    local: &SharedRecord,
    remote: &BTreeMap<String, (Vec<u8>, i64)>,
) -> Option<Vec<u8>> {
    let have = remote
        .get(SERIAL)
        .and_then(|(v, _)| read_serial(v))
        .map(|(s, _)| s);
    let wanted = to_keys(local).remove(SERIAL)?;
    match have {
        Some(h) if h >= local.lineage.serial => None,
        _ => Some(wanted),
    }
}

/// Whether a key below the prefix is one of the record's (the lock and
/// the config commit live beside the record, and their writes must not
/// read as news).
pub fn in_record(rel: &str) -> bool {
    !(rel.starts_with(LOCKS) || rel == CONFIG_REV)
}

/// The key ranges `[begin, end)` below `prefix` that hold exactly the keys
/// [`in_record`] keeps: everything under the prefix but `config/rev` and
/// `locks/`. A delta read (keys modified since a revision) shows no deleted
/// key, so a reader counts these ranges in the same transaction and
/// compares with the keys it holds; the lock and the config commit, written
/// often, must not make the counts differ. `config/rev` sorts before
/// `locks/` (a test holds this), so the gaps are two.
pub fn record_ranges(prefix: &str) -> [(Vec<u8>, Vec<u8>); 3] {
    let key = |rel: &str| format!("{prefix}{rel}").into_bytes();
    let mut after_config_rev = key(CONFIG_REV);
    after_config_rev.push(0);
    [
        (key(""), key(CONFIG_REV)),
        (after_config_rev, key(LOCKS)),
        (range_end(&key(LOCKS)), range_end(prefix.as_bytes())),
    ]
}

/// The first key after every key starting with `prefix` (etcd's prefix
/// range end; `\0` when there is none: every key).
pub fn range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Merges into `keys` (as read at some revision) the keys modified since
/// (`changed`: key below the prefix, value, mod revision) and the keys a
/// transaction of ours `deleted`. Keys not in the record are left out, as a
/// full read leaves them out.
pub fn merge_delta<V>(
    keys: &mut BTreeMap<String, (V, i64)>,
    changed: impl IntoIterator<Item = (String, V, i64)>,
    deleted: &[String],
) {
    for key in deleted {
        keys.remove(key);
    }
    for (key, value, rev) in changed {
        if in_record(&key) {
            keys.insert(key, (value, rev));
        }
    }
}

/// The remote's token: a hash of the record's keys and their mod
/// revisions, so any write to the record changes it and nothing else does.
pub fn token<V>(keys: &BTreeMap<String, (V, i64)>) -> String {
    let mut hasher = blake3::Hasher::new();
    for (key, (_, rev)) in keys {
        hasher.update(key.as_bytes());
        hasher.update(&rev.to_le_bytes());
    }
    format!("e{}", &hasher.finalize().to_hex()[..20])
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn machine(host: &str) -> MachineRecord {
        MachineRecord {
            hostname: host.to_string(),
            os: "linux".to_string(),
            arch: "x86_64".to_string(),
            user: "u".to_string(),
            active_profile: Some("p".to_string()),
            config_path: None,
            last_apply: None,
            last_sync: None,
            checksums: BTreeMap::new(),
            drift: None,
            history_from_serial: None,
        }
    }

    fn entry(id: &str, machine: &str, serial: u64) -> HistoryEntry {
        HistoryEntry {
            id: id.to_string(),
            operation: "apply".to_string(),
            timestamp: Utc
                .with_ymd_and_hms(2026, 1, 1, 0, 0, serial as u32)
                .unwrap(),
            machine_id: machine.to_string(),
            user: "u".to_string(),
            serial,
        }
    }

    fn record() -> SharedRecord {
        let mut r = SharedRecord::new("lineage-x");
        r.lineage.serial = 7;
        r.lineage.parent_serial = Some(6);
        r.lineage.machines = vec!["a".to_string(), "b".to_string()];
        r.machines.insert("a".to_string(), machine("ha"));
        r.machines.insert("b".to_string(), machine("hb"));
        r.history = vec![entry("e1", "a", 1), entry("e2", "b", 2)];
        r.retired = vec!["c".to_string()];
        r
    }

    fn remote_of(r: &SharedRecord, rev: i64) -> BTreeMap<String, (Vec<u8>, i64)> {
        to_keys(r).into_iter().map(|(k, v)| (k, (v, rev))).collect()
    }

    #[test]
    fn a_record_comes_back_from_its_keys() {
        let r = record();
        assert_eq!(from_keys("/p/", &to_keys(&r)).unwrap(), Some(r));
    }

    #[test]
    fn no_meta_is_no_record_and_a_newer_version_is_refused() {
        assert_eq!(from_keys("/p/", &BTreeMap::new()).unwrap(), None);
        let mut keys = to_keys(&record());
        keys.insert(META.to_string(), br#"{"version":99,"id":"x"}"#.to_vec());
        assert!(matches!(
            from_keys("/p/", &keys),
            Err(KeysError::Newer { found: 99, .. })
        ));
        let mut keys = to_keys(&record());
        keys.insert("machines/a".to_string(), b"{".to_vec());
        let err = from_keys("/p/", &keys).unwrap_err();
        assert!(err.to_string().contains("/p/machines/a"), "{err}");
    }

    #[test]
    fn a_machine_writes_only_its_own_changes() {
        let base = record();
        let mut local = base.clone();
        local.machines.get_mut("a").unwrap().hostname = "new".to_string();
        local.history.push(entry("e3", "a", 3));
        local.lineage.serial = 8;
        // Someone else's news since the base stays theirs.
        let mut remote_rec = base.clone();
        remote_rec.machines.get_mut("b").unwrap().hostname = "b2".to_string();
        remote_rec.machines.insert("d".to_string(), machine("hd"));
        let remote = remote_of(&remote_rec, 5);
        let w = writes(Some(&base), &local, &remote).unwrap();
        let keys: Vec<&str> = w.iter().map(|w| w.key.as_str()).collect();
        assert_eq!(keys, ["history/a/e3", "machines/a"]);
        assert_eq!(w[0].expect, 0, "a new history entry is create-only");
        assert_eq!(w[1].expect, 5);
        assert_eq!(
            serial_raise(&local, &remote),
            Some(b"00000000000000000008:6".to_vec())
        );
        local.lineage.serial = 7;
        assert_eq!(serial_raise(&local, &remote), None);
    }

    #[test]
    fn a_machine_that_prunes_deletes_its_pruned_keys_with_its_floor() {
        let mut base = record();
        base.history = (1..=4).map(|i| entry(&format!("e{i}"), "a", i)).collect();
        base.history = shared::union_history(&base.history, &[entry("f1", "b", 1)]);
        let mut local = base.clone();
        assert!(shared::retain_own_history(&mut local, "a", 2));
        let remote = remote_of(&base, 4);
        let w = writes(Some(&base), &local, &remote).unwrap();
        let put: Vec<&str> = w
            .iter()
            .filter(|w| w.value.is_some())
            .map(|w| w.key.as_str())
            .collect();
        let deleted: Vec<&str> = w
            .iter()
            .filter(|w| w.value.is_none())
            .map(|w| w.key.as_str())
            .collect();
        // The floor, the meta at version 3, and the two pruned entries go in
        // one publish; b's entry is b's.
        assert_eq!(put, ["machines/a", "meta"]);
        assert_eq!(deleted, ["history/a/e1", "history/a/e2"]);
        assert!(w.iter().all(|w| w.expect == 4), "{w:?}");
        let meta: serde_json::Value = serde_json::from_slice(&to_keys(&local)[META]).unwrap();
        assert_eq!(meta["version"], 3);
        // Read back, with the deleted keys still there (a publish not made
        // yet, or an older stead that put them back): pruned all the same.
        let mut keys = to_keys(&local);
        keys.extend(
            to_keys(&base)
                .into_iter()
                .filter(|(k, _)| k.starts_with("history/")),
        );
        assert_eq!(from_keys("/p/", &keys).unwrap(), Some(local.clone()));
        // Another machine whose base still had them deletes nothing of a's:
        // neither after a's publish, nor with a view that still shows one
        // of the deleted keys beside a's new floor.
        let mut other = local.clone();
        other.machines.get_mut("b").unwrap().hostname = "b2".to_string();
        let after = remote_of(&local, 9);
        let mut stale = after.clone();
        stale.insert("history/a/e1".to_string(), remote["history/a/e1"].clone());
        for view in [&after, &stale] {
            let w = writes(Some(&base), &other, view).unwrap();
            let keys: Vec<&str> = w.iter().map(|w| w.key.as_str()).collect();
            assert_eq!(keys, ["machines/b"], "{w:?}");
        }
    }

    #[test]
    fn a_removed_member_is_deleted_but_history_never_is() {
        let base = record();
        let mut local = base.clone();
        local.retire("b");
        local.history.clear();
        let remote = remote_of(&base, 3);
        let w = writes(Some(&base), &local, &remote).unwrap();
        assert!(w.iter().all(|w| !w.key.starts_with("history/")), "{w:?}");
        let deleted: Vec<&str> = w
            .iter()
            .filter(|w| w.value.is_none())
            .map(|w| w.key.as_str())
            .collect();
        assert!(deleted.contains(&"members/b"), "{w:?}");
        assert!(deleted.contains(&"machines/b"), "{w:?}");
        assert!(w.iter().any(|w| w.key == "retired/b" && w.value.is_some()));
    }

    #[test]
    fn an_oversized_machine_record_is_refused_naming_the_limit() {
        let mut local = record();
        let m = local.machines.get_mut("a").unwrap();
        for i in 0..20_000 {
            m.checksums
                .insert(format!("/home/u/file-{i:08}"), "x".repeat(40));
        }
        let err = writes(None, &local, &BTreeMap::new()).unwrap_err();
        assert!(matches!(err, KeysError::TooLarge { .. }));
        assert!(err.to_string().contains("524288 bytes"), "{err}");
    }

    fn in_ranges(ranges: &[(Vec<u8>, Vec<u8>)], key: &[u8]) -> bool {
        ranges
            .iter()
            .any(|(b, e)| key >= b.as_slice() && key < e.as_slice())
    }

    #[test]
    fn the_count_ranges_hold_the_record_keys_and_nothing_else() {
        let prefix = "/stead/v1/";
        let ranges = record_ranges(prefix);
        let mut rels: Vec<String> = to_keys(&record()).into_keys().collect();
        rels.extend(
            [
                "config/rev",
                "config/other",
                "locks/lineage",
                "locks/",
                "lock",
                "locks0",
                "zzz",
                "",
            ]
            .map(str::to_string),
        );
        for rel in &rels {
            let key = format!("{prefix}{rel}");
            assert_eq!(in_ranges(&ranges, key.as_bytes()), in_record(rel), "{key}");
        }
        assert!(!in_record(CONFIG_REV) && !in_record("locks/lineage"));
        assert!(
            CONFIG_REV < LOCKS,
            "the ranges assume config/rev sorts first"
        );
        // Nothing outside the prefix.
        for outside in [
            "/stead/v10",
            "/stead/v1",
            "/stead/v10/meta",
            "/stead/v2/meta",
        ] {
            assert!(!in_ranges(&ranges, outside.as_bytes()), "{outside}");
        }
        assert_eq!(range_end(b"/p/"), b"/p0".to_vec());
        assert_eq!(range_end(&[b'a', 0xff]), b"b".to_vec());
        assert_eq!(range_end(&[0xff]), vec![0]);
    }

    #[test]
    fn a_delta_merged_into_keys_read_earlier_is_the_full_read_with_its_token() {
        let before = record();
        let earlier = remote_of(&before, 5);
        let mut after = before.clone();
        after.machines.get_mut("a").unwrap().hostname = "a2".to_string();
        after.machines.insert("d".to_string(), machine("hd"));
        after.retire("b");
        // The full read at the later revision: b's keys gone, a's and d's new.
        let changed = ["machines/a", "machines/d", "members/d", "retired/b"];
        let full: BTreeMap<String, (Vec<u8>, i64)> = to_keys(&after)
            .into_iter()
            .map(|(k, v)| {
                let rev = if changed.contains(&k.as_str()) { 9 } else { 5 };
                (k, (v, rev))
            })
            .collect();
        let mut merged = earlier.clone();
        let delta = full
            .iter()
            .filter(|(_, (_, rev))| *rev > 5)
            .map(|(k, (v, rev))| (k.clone(), v.clone(), *rev))
            .chain([("locks/lineage".to_string(), b"x".to_vec(), 9)]);
        let deleted: Vec<String> = earlier
            .keys()
            .filter(|k| !full.contains_key(*k))
            .cloned()
            .collect();
        assert!(!deleted.is_empty(), "the retirement deletes keys");
        merge_delta(&mut merged, delta.clone(), &deleted);
        assert_eq!(merged, full, "the lock's key is no record key");
        assert_eq!(token(&merged), token(&full));
        assert_ne!(token(&earlier), token(&full));
        // Deletions unseen (another machine's): the keys differ, and so
        // does their count, which is what sends a reader to a full read.
        let mut unseen = earlier.clone();
        merge_delta(&mut unseen, delta, &[]);
        assert_ne!(unseen.len(), full.len());
    }
}
