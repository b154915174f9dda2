//! Schema version 3 of the state record: version 2, field for field as
//! DESIGN.md lays it out, plus the checks' items and the committed migration
//! (absent when empty, so a record without them reads the same).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::checksum::Checksum;
use crate::machine::MachineInfo;

/// The schema version this build reads and writes.
pub const CURRENT_VERSION: u32 = 3;

/// The state record (`state.json`, version 3; version 2 reads as a
/// version 3 record without checks).
///
/// Unknown fields are refused rather than dropped: a rewrite must never lose
/// what another writer stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// Always [`CURRENT_VERSION`] in memory.
    pub version: u32,
    /// The profile this machine applies.
    pub active_profile: Option<String>,
    /// The config repo (absolute path).
    pub config_path: Option<String>,
    /// The config repo's remote, if any.
    pub repo_url: Option<String>,
    /// When this machine last synced with the shared record.
    pub last_sync: Option<DateTime<Utc>>,
    /// When this machine last applied.
    pub last_apply: Option<DateTime<Utc>>,
    /// Who wrote this record.
    pub machine: MachineInfo,
    /// The stead version that wrote this record.
    pub stead_version: String,
    /// Lineage and serial: which history this record belongs to, and where in it.
    pub lineage: Lineage,
    /// Operations, oldest first, capped (the newest are kept).
    pub history: Vec<HistoryEntry>,
    /// `path -> "blake3:<hex>"` of what stead wrote, each packed
    /// ([`Checksum`]: the same text in the file; 64 bytes less per file
    /// than the text, in a record held through every run).
    #[serde(deserialize_with = "packed_map")]
    pub checksums: BTreeMap<String, Checksum>,
    /// What stead owns, by resource id (`kind.name`).
    #[serde(deserialize_with = "packed_map")]
    pub resources: BTreeMap<String, ResourceRecord>,
    /// The base of the last sync (for 3-way merges).
    pub sync: SyncInfo,
    /// What checks reported, by item address (`db/schema-behind`), with
    /// the choices made (version 3).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub checks: BTreeMap<String, super::checks::CheckRecord>,
    /// The migration committed from chosen steps, until it finishes
    /// (version 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<super::checks::Migration>,
    /// For a record read in part ([`crate::state::StateStore::load_in_part`]):
    /// the entries of `checksums` and `resources` still in the text they
    /// were read from (look them up with [`State::checksum_of`] and
    /// [`State::record_of`]). Empty for a record read whole; never written
    /// as a field.
    #[serde(skip)]
    pub unread: super::unread::Unread,
}

/// Which history a record belongs to and its position in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lineage {
    /// `lineage-<uuid>`, made once when a history starts.
    pub id: String,
    /// Bumped by every write.
    pub serial: u64,
    /// The serial this record was written over (`None` for the first write).
    pub parent_serial: Option<u64>,
    /// The config repo commit this record was last synced with.
    pub git_commit: Option<String>,
    /// Machine ids that share this lineage.
    pub machines: Vec<String>,
}

/// The most characters a history entry's `operation` may hold when read.
/// stead writes a command's name (a few words); a longer one is a
/// hand-edited or hostile record.
pub const MAX_OPERATION_CHARS: usize = 1024;

/// Reads an `operation`, refusing one over [`MAX_OPERATION_CHARS`] (serde
/// adds the line and column).
pub(super) fn bounded_operation<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    let chars = s.chars().count();
    if chars > MAX_OPERATION_CHARS {
        return Err(serde::de::Error::custom(format!(
            "a history entry's operation is {chars} characters long; at most {MAX_OPERATION_CHARS} are allowed"
        )));
    }
    Ok(s)
}

/// Reads a map with its B-tree's nodes filled, not half-filled.
///
/// Inserting keys one by one in ascending order (as a record stores them)
/// splits every full node in two and leaves each left half at 6 of 11
/// entries for good; building from the whole list at once fills them. At
/// 100 000 resources the loaded record is 12–16 MiB smaller
/// (`docs/performance.md`). A key given twice keeps its last value, as
/// one-by-one insertion did.
pub(super) fn packed_map<'de, D, V>(d: D) -> Result<BTreeMap<String, V>, D::Error>
where
    D: serde::Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct Entries<V>(std::marker::PhantomData<V>);
    impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for Entries<V> {
        type Value = Vec<(String, V)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
            while let Some(entry) = map.next_entry()? {
                entries.push(entry);
            }
            Ok(entries)
        }
    }
    let entries = d.deserialize_map(Entries(std::marker::PhantomData))?;
    Ok(BTreeMap::from_iter(entries))
}

/// One operation in the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryEntry {
    /// A UUID, unique per entry (merges take the union by id).
    pub id: String,
    /// `init`, `apply`, `migrate`, ... Read with a cap
    /// ([`MAX_OPERATION_CHARS`]): records travel between machines, and an
    /// absurd entry from one must be refused where it is read, not carried
    /// into every other machine's state.
    #[serde(deserialize_with = "bounded_operation")]
    pub operation: String,
    /// When it was recorded.
    pub timestamp: DateTime<Utc>,
    /// The machine that recorded it.
    pub machine_id: String,
    /// The user that ran it.
    pub user: String,
    /// The serial of the write that recorded it.
    pub serial: u64,
}

/// What stead created for one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceRecord {
    /// The resource kind (`file`, `symlink`, ...).
    pub kind: String,
    /// The paths or names it owns.
    pub keys: Vec<String>,
    /// The serial of the write that last changed it.
    pub serial: u64,
    /// What it owns outside the filesystem, by name (a package stead
    /// installed: `apt:git`), so a removal knows what to remove once the
    /// declaration is gone. Absent in records of kinds that own paths,
    /// so a [`ThinVec`](thin_vec::ThinVec): one pointer, not three, in
    /// each of them.
    #[serde(default, skip_serializing_if = "thin_vec::ThinVec::is_empty")]
    pub names: thin_vec::ThinVec<String>,
}

/// The common base of the last sync.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncInfo {
    /// The shared record's serial at the last sync.
    pub base_serial: Option<u64>,
    /// The config repo commit at the last sync.
    pub base_commit: Option<String>,
}

/// A fresh lineage id: `lineage-<uuid v4>`.
pub fn new_lineage_id() -> String {
    format!("lineage-{}", uuid::Uuid::new_v4())
}

impl State {
    /// A record that has never been written (serial 0), for `machine`.
    ///
    /// The first [`crate::state::StateStore::commit`] makes it serial 1.
    pub fn new(machine: MachineInfo) -> Self {
        let machines = vec![machine.id.clone()];
        State {
            version: CURRENT_VERSION,
            active_profile: None,
            config_path: None,
            repo_url: None,
            last_sync: None,
            last_apply: None,
            machine,
            stead_version: crate::STEAD_VERSION.to_string(),
            lineage: Lineage {
                id: new_lineage_id(),
                serial: 0,
                parent_serial: None,
                git_commit: None,
                machines,
            },
            history: Vec::new(),
            checksums: BTreeMap::new(),
            resources: BTreeMap::new(),
            sync: SyncInfo::default(),
            checks: BTreeMap::new(),
            migration: None,
            unread: Default::default(),
        }
    }

    /// History entries, newest first.
    pub fn history_newest_first(&self) -> impl Iterator<Item = &HistoryEntry> {
        self.history.iter().rev()
    }

    /// A digest of what stead owns (`resources` and `checksums`, every
    /// field): equal exactly when they are, short of a BLAKE3 collision.
    /// A run that may have changed nothing compares digests taken before and
    /// after, instead of holding a copy of both maps (36 MB at 100 000
    /// files) to compare.
    pub fn ownership_digest(&self) -> [u8; 32] {
        // Each piece length-prefixed, so no two records encode alike; an
        // entry's pieces gathered first and hashed at once (a million small
        // updates of the hasher took twice as long at 100 000 files).
        fn part(buf: &mut Vec<u8>, bytes: &[u8]) {
            buf.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            buf.extend_from_slice(bytes);
        }
        let mut h = blake3::Hasher::new();
        let mut buf = Vec::new();
        part(&mut buf, &(self.resources.len() as u64).to_le_bytes());
        for (id, record) in &self.resources {
            // Destructured: a field added to the record must be added here.
            let ResourceRecord {
                kind,
                keys,
                serial,
                names,
            } = record;
            part(&mut buf, id.as_bytes());
            part(&mut buf, kind.as_bytes());
            part(&mut buf, &serial.to_le_bytes());
            for list in [&keys[..], &names[..]] {
                part(&mut buf, &(list.len() as u64).to_le_bytes());
                for item in list {
                    part(&mut buf, item.as_bytes());
                }
            }
            h.update(&buf);
            buf.clear();
        }
        part(&mut buf, &(self.checksums.len() as u64).to_le_bytes());
        for (key, sum) in &self.checksums {
            part(&mut buf, key.as_bytes());
            // Packed or not, told apart: equal exactly when the texts are.
            match sum {
                Checksum::Blake3(digest) => {
                    part(&mut buf, &[0]);
                    part(&mut buf, digest);
                }
                Checksum::Other(text) => {
                    part(&mut buf, &[1]);
                    part(&mut buf, text.as_bytes());
                }
            }
            h.update(&buf);
            buf.clear();
        }
        // The checksums' count, when there were none to hash it with.
        h.update(&buf);
        *h.finalize().as_bytes()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A resource record of `kind` owning `keys` and `names` (shared with
    /// the read in part's tests).
    pub(in crate::state) fn record(
        kind: &str,
        keys: &[&str],
        serial: u64,
        names: &[&str],
    ) -> ResourceRecord {
        ResourceRecord {
            kind: kind.into(),
            keys: keys.iter().map(|k| k.to_string()).collect(),
            serial,
            names: names.iter().map(|n| n.to_string()).collect(),
        }
    }

    #[test]
    fn the_ownership_digest_changes_with_every_field_of_what_is_owned() {
        let mut base = State::new(MachineInfo::current("m"));
        base.resources
            .insert("file.a".into(), record("file", &["~/a"], 1, &[]));
        base.checksums.insert("~/a".into(), "blake3:00".into());
        let digest = base.ownership_digest();
        assert_eq!(base.clone().ownership_digest(), digest, "a copy is equal");
        let mut other = base.clone();
        other.lineage.serial = 9;
        other.history.clear();
        assert_eq!(other.ownership_digest(), digest, "only ownership counts");
        let changes: [&dyn Fn(&mut State); 9] = [
            &|s| s.resources.get_mut("file.a").unwrap().kind = "line".into(),
            &|s| s.resources.get_mut("file.a").unwrap().keys[0] = "~/b".into(),
            &|s| s.resources.get_mut("file.a").unwrap().serial = 2,
            &|s| {
                s.resources
                    .get_mut("file.a")
                    .unwrap()
                    .names
                    .push("apt:a".into())
            },
            &|s| {
                let r = s.resources.remove("file.a").unwrap();
                s.resources.insert("file.b".into(), r);
            },
            &|s| *s.checksums.get_mut("~/a").unwrap() = "blake3:01".into(),
            &|s| s.checksums.clear(),
            &|s| {
                s.checksums.insert("~/b".into(), "blake3:00".into());
            },
            // The same bytes cut elsewhere: a key moved into the names.
            &|s| {
                let r = s.resources.get_mut("file.a").unwrap();
                r.keys.clear();
                r.names.push("~/a".into());
            },
        ];
        for (i, change) in changes.iter().enumerate() {
            let mut changed = base.clone();
            change(&mut changed);
            assert_ne!(changed.ownership_digest(), digest, "change {i}");
        }
    }

    #[derive(Deserialize)]
    struct Holder {
        #[serde(deserialize_with = "packed_map")]
        map: BTreeMap<String, u32>,
    }

    fn load(text: &str) -> BTreeMap<String, u32> {
        serde_json::from_str::<Holder>(text).unwrap().map
    }

    #[test]
    fn a_packed_map_holds_what_one_by_one_insertion_held_in_any_order() {
        let sorted = load(r#"{"map": {"a": 1, "b": 2, "c": 3}}"#);
        let shuffled = load(r#"{"map": {"c": 3, "a": 1, "b": 2}}"#);
        let plain: BTreeMap<String, u32> =
            serde_json::from_str(r#"{"c": 3, "a": 1, "b": 2}"#).unwrap();
        assert_eq!(sorted, plain);
        assert_eq!(shuffled, plain);
        assert!(load(r#"{"map": {}}"#).is_empty());
    }

    #[test]
    fn a_key_given_twice_keeps_its_last_value_as_before() {
        let plain: BTreeMap<String, u32> =
            serde_json::from_str(r#"{"a": 1, "b": 2, "a": 3}"#).unwrap();
        let packed = load(r#"{"map": {"a": 1, "b": 2, "a": 3}}"#);
        assert_eq!(packed, plain);
        assert_eq!(packed["a"], 3);
    }

    #[test]
    fn a_packed_map_that_is_not_a_map_is_refused_with_its_place() {
        let e = serde_json::from_str::<Holder>("{\"map\": [1, 2]}")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("expected a map"), "{e}");
        assert!(e.contains("line 1 column"), "{e}");
    }
}
