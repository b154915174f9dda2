//! The shared record: `.stead/state.json` in the config repo, the lineage
//! every machine of it shares, and the rules that merge two copies of it.
//!
//! Each machine owns one entry of `machines` (its profile, config path,
//! times and checksums), so machines never write the same field. What they
//! do share is append-only (history, the list of machines) or monotonic (the
//! serial), which is what makes a semantic 3-way merge decidable almost
//! always. The few real clashes (the same machine's fields changed on both
//! sides) are reported by [`compare`] so that nobody merges them blindly.
//!
//! No plain content hash is published: a machine's checksums go out as
//! keyed hashes under its own secret [`RecordKey`] ([`publish_checksum`]),
//! so a reader of the remote cannot test guesses of a file (a PIN, a short
//! password) against them. A machine's entry is only ever compared with
//! earlier copies of the same entry, under the same key, so merges and
//! conflict checks work on the published values as they are.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::checksum::Checksum;
use crate::machine::RecordKey;
use crate::state::{DriftStatus, HistoryEntry, State};

/// Where the shared record lives, relative to the config repo's root.
pub const SHARED_RECORD_PATH: &str = ".stead/state.json";

/// The newest schema version of the shared record this build reads and
/// writes. Version 2 added a machine's `drift` count, version 3 its history
/// floor (`history_from_serial`, [`retain_own_history`]). A record is written at
/// the lowest version that holds what it carries ([`SharedRecord::settle_version`]):
/// version 2 until some machine prunes its history, so a fleet whose older
/// members know only version 2 keeps syncing until then. A version 1 record
/// reads as it is (no machine carries a drift count) and is held as version
/// 2, so reading one is no news. A stead that knows only an older version
/// refuses a newer record with "upgrade stead" ([`SharedError::Newer`])
/// rather than calling it corrupt.
pub const SHARED_VERSION: u32 = 3;

/// The version a record without history floors is written at.
const VERSION_WITHOUT_FLOORS: u32 = 2;

/// The shared record of a config repo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedRecord {
    /// The lowest version that holds what the record carries (2, or 3 when
    /// a machine has a history floor), set by [`SharedRecord::settle_version`].
    pub version: u32,
    /// The stead version that wrote it.
    pub stead_version: String,
    /// Which history this is and where in it.
    pub lineage: SharedLineage,
    /// Every machine's operations, oldest first. An entry leaves only by
    /// its own machine's retention (below that machine's `history_from_serial`);
    /// a merge never drops one otherwise.
    pub history: Vec<HistoryEntry>,
    /// One record per machine id, each written only by that machine.
    pub machines: BTreeMap<String, MachineRecord>,
    /// Machine ids removed from the lineage (kept so a merge with an older
    /// copy cannot bring them back).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired: Vec<String>,
}

/// The lineage as the repo records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedLineage {
    /// `lineage-<uuid>`.
    pub id: String,
    /// The serial of the last write.
    pub serial: u64,
    /// The serial that write was based on.
    pub parent_serial: Option<u64>,
    /// Member machine ids, sorted.
    pub machines: Vec<String>,
}

/// What one machine shares about itself (`Default`: every field empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineRecord {
    /// Its hostname.
    pub hostname: String,
    /// `linux`, `macos`, ...
    pub os: String,
    /// `x86_64`, ...
    pub arch: String,
    /// The user stead runs as there.
    pub user: String,
    /// The profile it applies.
    pub active_profile: Option<String>,
    /// Where its clone of the config repo is.
    pub config_path: Option<String>,
    /// When it last applied.
    pub last_apply: Option<DateTime<Utc>>,
    /// When it last pushed its record; a sync with nothing else to publish
    /// still refreshes it once it is an hour old ([`mark_seen`]), so it is
    /// the machine's last-seen time for the 24-hour rule.
    pub last_sync: Option<DateTime<Utc>>,
    /// `path -> keyed-blake3:<hex>` of what stead wrote there (see
    /// [`publish_checksum`]); records of stead 0.1 hold `blake3:<hex>`.
    pub checksums: BTreeMap<String, String>,
    /// How many of its managed paths did not match what stead recorded
    /// when it last published ([`carry_drift`]); a count only, never a path.
    /// `None`: not known (a version 1 record, or not published since).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<u64>,
    /// This machine's history floor (version 3): its own history entries
    /// with a lower serial were pruned by its retention, and every copy
    /// drops them too, so that a merge with an older copy cannot bring them
    /// back. A serial, not a time: a machine's own entries take rising
    /// serials from its own state whatever its clock says, so a clock set
    /// back cannot put a new entry below the floor. Only ever raised.
    /// `None`: nothing pruned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_from_serial: Option<u64>,
}

/// Why a shared record cannot be used. Nothing is written when one is returned.
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    /// Not a valid shared record.
    #[error(
        "the shared record {what} is corrupt: {problem}\n\
         Fix it by hand, or take a good copy from git history (git log -- .stead/state.json)."
    )]
    Corrupt {
        /// Which copy (e.g. `origin/main:.stead/state.json`).
        what: String,
        /// serde's message, with line and column.
        problem: String,
    },
    /// Written by a newer stead.
    #[error(
        "the shared record {what} has version {found}, but this stead understands up to version {supported}; upgrade stead"
    )]
    Newer {
        /// Which copy.
        what: String,
        /// Its version.
        found: u32,
        /// Ours.
        supported: u32,
    },
}

/// Reads a shared record; `what` names the copy in errors.
pub fn parse(bytes: &[u8], what: &str) -> Result<SharedRecord, SharedError> {
    #[derive(Deserialize)]
    struct Probe {
        version: Option<u32>,
    }
    let corrupt = |e: serde_json::Error| SharedError::Corrupt {
        what: what.to_string(),
        problem: e.to_string(),
    };
    let probe: Probe = serde_json::from_slice(bytes).map_err(corrupt)?;
    if let Some(found) = probe.version
        && found > SHARED_VERSION
    {
        return Err(SharedError::Newer {
            what: what.to_string(),
            found,
            supported: SHARED_VERSION,
        });
    }
    let mut record: SharedRecord = serde_json::from_slice(bytes).map_err(corrupt)?;
    // A version 1 record is a version 2 record without drift counts: held at
    // the version its content needs, so that an older copy is not news by
    // its number. Entries below a floor (left by a stead that did not know
    // floors) are dropped as every merge would.
    record.drop_pruned_history();
    record.settle_version();
    Ok(record)
}

/// The bytes stored in the repo: pretty JSON and a final newline, so that
/// `git diff` of the record stays readable.
pub fn to_bytes(record: &SharedRecord) -> Vec<u8> {
    // Serializing plain maps, strings and numbers cannot fail.
    let mut bytes = serde_json::to_vec_pretty(record).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

impl SharedRecord {
    /// An empty record of lineage `id` (serial 0).
    pub fn new(lineage_id: &str) -> Self {
        SharedRecord {
            version: VERSION_WITHOUT_FLOORS,
            stead_version: crate::STEAD_VERSION.to_string(),
            lineage: SharedLineage {
                id: lineage_id.to_string(),
                serial: 0,
                parent_serial: None,
                machines: Vec::new(),
            },
            history: Vec::new(),
            machines: BTreeMap::new(),
            retired: Vec::new(),
        }
    }

    /// How many machines the lineage has.
    pub fn machine_count(&self) -> usize {
        self.lineage.machines.len()
    }

    /// Whether `id` was removed from the lineage.
    pub fn is_retired(&self, id: &str) -> bool {
        self.retired.iter().any(|r| r == id)
    }

    /// The ids of history entries in `others` that this copy lacks (an
    /// entry below its machine's floor here was pruned, not lost).
    pub fn missing_history<'a>(&self, others: &[&'a SharedRecord]) -> BTreeSet<&'a str> {
        let kept: HashSet<&str> = self.history.iter().map(|e| e.id.as_str()).collect();
        others
            .iter()
            .flat_map(|o| o.history.iter())
            .filter(|e| !kept.contains(e.id.as_str()) && !below_floor(e, &self.machines))
            .map(|e| e.id.as_str())
            .collect()
    }

    /// Whether some machine pruned its history (has a floor).
    fn has_floors(&self) -> bool {
        self.machines
            .values()
            .any(|m| m.history_from_serial.is_some())
    }

    /// Sets `version` to the lowest that holds what the record carries.
    pub fn settle_version(&mut self) {
        self.version = if self.has_floors() {
            SHARED_VERSION
        } else {
            VERSION_WITHOUT_FLOORS
        };
    }

    /// Drops the history entries below their machine's floor.
    pub fn drop_pruned_history(&mut self) {
        if self.has_floors() {
            let machines = &self.machines;
            self.history.retain(|e| !below_floor(e, machines));
        }
    }

    /// Whether this copy is `older` carried forward: the same lineage, a
    /// serial not behind, every history entry and every machine entry
    /// (unless retired) still there.
    pub fn keeps_all_of(&self, older: &SharedRecord) -> bool {
        self.lineage.id == older.lineage.id
            && self.lineage.serial >= older.lineage.serial
            && self.missing_history(&[older]).is_empty()
            && older
                .machines
                .keys()
                .all(|m| self.machines.contains_key(m) || self.is_retired(m))
    }

    /// Removes `id` from the lineage for good (its history stays).
    pub fn retire(&mut self, id: &str) {
        if !self.retired.iter().any(|r| r == id) {
            self.retired.push(id.to_string());
            self.retired.sort();
        }
        self.machines.remove(id);
        self.lineage.machines.retain(|m| m != id);
        self.settle_version();
    }
}

/// Whether `entry` was pruned by its machine's retention: below the floor
/// that machine's record in `machines` carries.
pub fn below_floor(entry: &HistoryEntry, machines: &BTreeMap<String, MachineRecord>) -> bool {
    machines
        .get(&entry.machine_id)
        .and_then(|m| m.history_from_serial)
        .is_some_and(|floor| entry.serial < floor)
}

/// Keeps at most `keep` (at least 1) of machine `me`'s own history
/// entries in `record`, the newest by serial: raises `me`'s floor to the
/// oldest kept entry's serial and drops what falls below it. Only `me`
/// prunes `me`'s entries, and the floor travels in `me`'s own record, so
/// every copy drops the same entries and no merge brings them back.
/// Returns whether the floor moved.
pub fn retain_own_history(record: &mut SharedRecord, me: &str, keep: usize) -> bool {
    let mut own: Vec<u64> = record
        .history
        .iter()
        .filter(|e| e.machine_id == me)
        .map(|e| e.serial)
        .collect();
    own.sort_unstable();
    let keep = keep.max(1);
    let Some(oldest_kept) = own.len().checked_sub(keep).map(|i| own[i]) else {
        return false;
    };
    let Some(entry) = record.machines.get_mut(me) else {
        return false;
    };
    if entry.history_from_serial.is_some_and(|f| f >= oldest_kept) {
        return false;
    }
    entry.history_from_serial = Some(oldest_kept);
    record.drop_pruned_history();
    record.settle_version();
    true
}

/// The prefix of a published (keyed) checksum.
pub const KEYED_PREFIX: &str = "keyed-blake3:";

/// What the shared record shows of the local checksum `sum` of `path`:
/// `keyed-blake3:<hex>`, blake3 in keyed mode under this machine's key over
/// the path and the checksum. Only the key's holder can tell which content
/// it stands for; the same path and content give the same value every time,
/// so a machine's entry changes only when its files do. A value already
/// keyed is kept as it is.
pub fn publish_checksum(key: &RecordKey, path: &str, sum: &str) -> String {
    if sum.starts_with(KEYED_PREFIX) {
        return sum.to_string();
    }
    let mut h = blake3::Hasher::new_keyed(key.as_bytes());
    // The path's length first, so that no (path, checksum) pair hashes the
    // same bytes as another.
    h.update(&(path.len() as u64).to_le_bytes());
    h.update(path.as_bytes());
    h.update(sum.as_bytes());
    format!("{KEYED_PREFIX}{}", h.finalize().to_hex())
}

/// This machine's entry of the shared record, from its local state, its
/// checksums published under `key`.
pub fn machine_record(state: &State, key: &RecordKey) -> MachineRecord {
    MachineRecord {
        hostname: state.machine.hostname.clone(),
        os: state.machine.os.clone(),
        arch: state.machine.arch.clone(),
        user: state.machine.user.clone(),
        active_profile: state.active_profile.clone(),
        config_path: state.config_path.clone(),
        last_apply: state.last_apply,
        last_sync: state.last_sync,
        // The local state holds no drift count: see [`carry_drift`]; nor
        // a floor: [`fold`] keeps the published one.
        drift: None,
        history_from_serial: None,
        // A sensitive file's checksum stays on its machine, even keyed.
        checksums: state
            .checksums
            .iter()
            .filter(|(_, sum)| !sum.is_secret())
            .map(|(path, sum)| (path.clone(), publish_checksum(key, path, &sum.text())))
            .collect(),
    }
}

/// The shared record with this machine's local state written into it: its
/// own entry replaced, its history entries and lineage members added, the
/// serial raised to the local one. The lineage id stays the shared one
/// (`shared` `None`: a new record in the local lineage).
///
/// Retired ids stay retired for good (callers refuse to fold a retired
/// machine; it rejoins under a new id). Checksums are published under `key`.
/// The machine keeps at most `keep` of its own history entries
/// ([`retain_own_history`]); other machines' entries below their floors
/// are dropped.
pub fn fold(
    shared: Option<&SharedRecord>,
    local: &State,
    key: &RecordKey,
    keep: usize,
) -> SharedRecord {
    let mut out = shared
        .cloned()
        .unwrap_or_else(|| SharedRecord::new(&local.lineage.id));
    let me = &local.machine.id;
    let mut entry = machine_record(local, key);
    // When a machine last pushed is news only together with something else:
    // otherwise two machines that sync in turn would push each other's times
    // forever.
    // A published time never goes back: a heartbeat ([`mark_seen`]) may be
    // newer than the local state's.
    // The drift count is the published one: only [`carry_drift`] changes it.
    if let Some(prev) = out.machines.get(me) {
        entry.drift = prev.drift;
        entry.history_from_serial = prev.history_from_serial;
        let mut same = entry.clone();
        same.last_sync = prev.last_sync;
        entry.last_sync = if same == *prev {
            prev.last_sync
        } else {
            entry.last_sync.max(prev.last_sync)
        };
    }
    out.machines.insert(me.clone(), entry);
    let members: BTreeSet<String> = out
        .lineage
        .machines
        .iter()
        .chain(&local.lineage.machines)
        .chain(std::iter::once(me))
        .filter(|m| !out.retired.contains(m))
        .cloned()
        .collect();
    out.lineage.machines = members.into_iter().collect();
    out.history = union_history(&out.history, &local.history);
    if local.lineage.serial > out.lineage.serial {
        out.lineage.parent_serial = Some(out.lineage.serial).filter(|s| *s > 0);
        out.lineage.serial = local.lineage.serial;
    }
    out.drop_pruned_history();
    retain_own_history(&mut out, me, keep);
    out.settle_version();
    out.stead_version = crate::STEAD_VERSION.to_string();
    out
}

/// Whether `copy` has news since `base` (a copy that does not exist has
/// none; one where the base had none has).
pub fn moved_since(copy: Option<&SharedRecord>, base: Option<&SharedRecord>) -> bool {
    match (copy, base) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(c), Some(b)) => !same_content(c, b),
    }
}

/// Whether `copy` has news for machine `me`'s own writes since `base`: the
/// lineage, `me`'s entry (beyond its times of push and its drift count, as
/// [`same_content`]), its membership or its retirement changed. Other
/// machines' entries and history are not news for it.
pub fn moved_for(copy: Option<&SharedRecord>, base: Option<&SharedRecord>, me: &str) -> bool {
    let mine = |r: &SharedRecord| {
        let entry = r.machines.get(me).map(|m| MachineRecord {
            last_sync: None,
            drift: None,
            ..m.clone()
        });
        let member = r.lineage.machines.iter().any(|id| id == me);
        (r.lineage.id.clone(), entry, member, r.is_retired(me))
    };
    match (copy, base) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(c), Some(b)) => mine(c) != mine(b),
    }
}

/// Equal in everything but when machines last pushed, up to a heartbeat
/// (a machine's time moved by [`SEEN_REFRESH_MINUTES`] or more is news: it
/// is how the others learn it is still there), and their drift counts (a
/// count travels only with other news, [`carry_drift`]).
pub fn same_content(a: &SharedRecord, b: &SharedRecord) -> bool {
    let strip = |r: &SharedRecord| {
        let mut r = r.clone();
        for m in r.machines.values_mut() {
            m.last_sync = None;
            m.drift = None;
        }
        r.stead_version = String::new();
        r
    };
    let refresh = chrono::TimeDelta::minutes(SEEN_REFRESH_MINUTES);
    let heartbeat = a.machines.iter().any(|(id, ma)| {
        let mb = b.machines.get(id).and_then(|m| m.last_sync);
        match (ma.last_sync, mb) {
            (Some(x), Some(y)) => (x - y).abs() >= refresh,
            (x, y) => x.is_some() != y.is_some() && b.machines.contains_key(id),
        }
    });
    !heartbeat && strip(a) == strip(b)
}

/// How stale this machine's published time may grow before a sync that has
/// nothing else to say publishes it anyway: the heartbeat the 24-hour rule
/// reads ([`offline_machines`]). An hour keeps a machine that syncs often
/// to at most one such commit an hour.
pub const SEEN_REFRESH_MINUTES: i64 = 60;

/// Marks `me` as seen at `now` in `record` when its published time is
/// missing or at least [`SEEN_REFRESH_MINUTES`] old. Returns whether it did.
pub fn mark_seen(record: &mut SharedRecord, me: &str, now: DateTime<Utc>) -> bool {
    let Some(entry) = record.machines.get_mut(me) else {
        return false;
    };
    let stale = entry
        .last_sync
        .is_none_or(|t| now - t >= chrono::TimeDelta::minutes(SEEN_REFRESH_MINUTES));
    if stale {
        entry.last_sync = Some(now);
    }
    stale
}

/// Sets `me`'s drift count in `record` (what this machine is about to
/// commit) to `drift`, but only when `record` is news over `committed` (the
/// copy last committed, which the commit replaces): a drift count that
/// changed alone is not news, or machines whose files drift would commit
/// and push for it on every sync. When the machine publishes for another
/// reason (its own news, a merge, the hourly heartbeat), the count goes
/// with it. Returns whether it set the count.
///
/// `drift` is asked only when the count is to be set (it reads every
/// managed path).
pub fn carry_drift(
    record: &mut SharedRecord,
    committed: Option<&SharedRecord>,
    me: &str,
    drift: impl FnOnce() -> Option<u64>,
) -> bool {
    if committed == Some(&*record) {
        return false;
    }
    match record.machines.get_mut(me) {
        Some(entry) => {
            entry.drift = drift();
            true
        }
        None => false,
    }
}

/// The union of two histories by entry id, ordered by time (then serial,
/// then id, so that every merge orders the same entries the same way).
pub fn union_history(a: &[HistoryEntry], b: &[HistoryEntry]) -> Vec<HistoryEntry> {
    let mut seen = HashSet::new();
    let mut out: Vec<HistoryEntry> = a
        .iter()
        .chain(b)
        .filter(|e| seen.insert(e.id.clone()))
        .cloned()
        .collect();
    out.sort_by(|x, y| (x.timestamp, x.serial, &x.id).cmp(&(y.timestamp, y.serial, &y.id)));
    out
}

/// How a clash between the local and the remote copy is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// This machine's copy wins every clash, and its own entry is the local one.
    UseLocal,
    /// The remote copy wins every clash, and this machine's entry is the remote one.
    UseRemote,
    /// Field by field: one-sided changes are kept, times take the newest,
    /// anything else (checksums included) the remote's; this machine keeps
    /// its own profile and config path.
    Merge,
}

/// Merges two copies of the shared record descended from `base`.
///
/// Always: the union of machines and of history (by entry id, nothing lost,
/// nothing doubled), retired ids stay retired, and a serial one above both
/// sides (the merge is a write of its own). Entries of other machines are
/// merged field by field against `base` (a change made on one side only is
/// kept); a field changed on both sides goes by `strategy`. `me` (this
/// machine, if any) is special: under `UseLocal` and `UseRemote` its whole
/// entry is taken from that side; under `Merge` it keeps its own profile and
/// config path (the local ones) whatever the remote says.
pub fn merge(
    base: Option<&SharedRecord>,
    local: &SharedRecord,
    remote: &SharedRecord,
    me: Option<&str>,
    strategy: Strategy,
) -> SharedRecord {
    let retired: BTreeSet<String> = local
        .retired
        .iter()
        .chain(&remote.retired)
        .cloned()
        .collect();
    let mut machines = BTreeMap::new();
    let ids: BTreeSet<&String> = local
        .machines
        .keys()
        .chain(remote.machines.keys())
        .collect();
    for id in ids {
        if retired.contains(id) {
            continue;
        }
        let record = match (local.machines.get(id), remote.machines.get(id)) {
            (Some(l), Some(r)) => {
                let b = base.and_then(|b| b.machines.get(id));
                match (strategy, Some(id.as_str()) == me) {
                    (Strategy::UseLocal, true) => l.clone(),
                    (Strategy::UseRemote, true) => r.clone(),
                    (Strategy::Merge, true) => {
                        // This machine owns its profile and config path: a
                        // change made to them elsewhere is never merged in.
                        let mut m = merge_machine(b, l, r, strategy);
                        m.active_profile = l.active_profile.clone();
                        m.config_path = l.config_path.clone();
                        m
                    }
                    _ => merge_machine(b, l, r, strategy),
                }
            }
            (Some(only), None) | (None, Some(only)) => only.clone(),
            (None, None) => continue,
        };
        machines.insert(id.clone(), record);
    }
    let members: BTreeSet<String> = local
        .lineage
        .machines
        .iter()
        .chain(&remote.lineage.machines)
        .filter(|m| !retired.contains(*m))
        .cloned()
        .collect();
    let top = local.lineage.serial.max(remote.lineage.serial);
    let mut merged = SharedRecord {
        version: SHARED_VERSION,
        stead_version: crate::STEAD_VERSION.to_string(),
        lineage: SharedLineage {
            id: match strategy {
                Strategy::UseLocal => local.lineage.id.clone(),
                _ => remote.lineage.id.clone(),
            },
            // A record at the largest serial (hand-edited, hostile) stays
            // there: wrapping to 0 would read as the oldest record of all.
            serial: top.saturating_add(1),
            parent_serial: Some(top),
            machines: members.into_iter().collect(),
        },
        history: union_history(&local.history, &remote.history),
        machines,
        retired: retired.into_iter().collect(),
    };
    merged.drop_pruned_history();
    merged.settle_version();
    merged
}

/// A value of this machine's own entry that a resolution would have taken
/// from the remote but that cannot be used here, so the local one is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeptOwn {
    /// `active_profile` or `config_path`.
    pub field: &'static str,
    /// What the remote had (`None`: no value).
    pub refused: Option<String>,
    /// What this machine keeps.
    pub kept: Option<String>,
}

/// Keeps this machine's own profile and config path in `record` (a
/// resolution's result) unless the values there can be used here: a profile
/// must be one the manifest declares (`profile_ok`; an empty or missing one
/// never is), a config path one that exists here (`path_ok`). Where one
/// cannot, `local`'s value for this machine is put back. Returns what was
/// kept, for the caller to say.
pub fn keep_usable_own(
    record: &mut SharedRecord,
    local: &SharedRecord,
    me: &str,
    profile_ok: &dyn Fn(&str) -> bool,
    path_ok: &dyn Fn(&str) -> bool,
) -> Vec<KeptOwn> {
    let mut kept = Vec::new();
    let (Some(mine), Some(ours)) = (record.machines.get_mut(me), local.machines.get(me)) else {
        return kept;
    };
    let usable = |v: &Option<String>, ok: &dyn Fn(&str) -> bool| {
        v.as_deref().is_some_and(|v| !v.trim().is_empty() && ok(v))
    };
    if mine.active_profile != ours.active_profile && !usable(&mine.active_profile, profile_ok) {
        kept.push(KeptOwn {
            field: "active_profile",
            refused: mine.active_profile.clone(),
            kept: ours.active_profile.clone(),
        });
        mine.active_profile = ours.active_profile.clone();
    }
    if mine.config_path != ours.config_path && !usable(&mine.config_path, path_ok) {
        kept.push(KeptOwn {
            field: "config_path",
            refused: mine.config_path.clone(),
            kept: ours.config_path.clone(),
        });
        mine.config_path = ours.config_path.clone();
    }
    kept
}

/// One field, 3-way: a change on one side wins; a clash goes to `clash`.
fn pick<T: Clone + PartialEq>(base: Option<&T>, l: &T, r: &T, clash: impl FnOnce() -> T) -> T {
    if l == r {
        l.clone()
    } else if base == Some(l) {
        r.clone()
    } else if base == Some(r) {
        l.clone()
    } else {
        clash()
    }
}

fn merge_machine(
    base: Option<&MachineRecord>,
    l: &MachineRecord,
    r: &MachineRecord,
    strategy: Strategy,
) -> MachineRecord {
    // One field, 3-way; a clash goes to the strategy's side (times: the
    // newest under `Merge`).
    fn field<T: Clone + PartialEq + Ord>(
        base: Option<&MachineRecord>,
        l: &MachineRecord,
        r: &MachineRecord,
        strategy: Strategy,
        newest: bool,
        get: impl Fn(&MachineRecord) -> &T,
    ) -> T {
        pick(base.map(&get), get(l), get(r), || match strategy {
            Strategy::UseLocal => get(l).clone(),
            Strategy::Merge if newest => get(l).max(get(r)).clone(),
            _ => get(r).clone(),
        })
    }
    let mut checksums = BTreeMap::new();
    let keys: BTreeSet<&String> = l.checksums.keys().chain(r.checksums.keys()).collect();
    for key in keys {
        let b = base.map(|b| b.checksums.get(key));
        let (lv, rv) = (l.checksums.get(key), r.checksums.get(key));
        let v = pick(b.as_ref(), &lv, &rv, || match strategy {
            Strategy::UseLocal => lv.or(rv),
            _ => rv.or(lv),
        });
        if let Some(v) = v {
            checksums.insert(key.clone(), v.clone());
        }
    }
    MachineRecord {
        hostname: field(base, l, r, strategy, false, |m| &m.hostname),
        os: field(base, l, r, strategy, false, |m| &m.os),
        arch: field(base, l, r, strategy, false, |m| &m.arch),
        user: field(base, l, r, strategy, false, |m| &m.user),
        active_profile: field(base, l, r, strategy, false, |m| &m.active_profile),
        config_path: field(base, l, r, strategy, false, |m| &m.config_path),
        last_apply: field(base, l, r, strategy, true, |m| &m.last_apply),
        last_sync: field(base, l, r, strategy, true, |m| &m.last_sync),
        checksums,
        drift: field(base, l, r, strategy, false, |m| &m.drift),
        // Only ever raised, by the machine itself: the higher one is its
        // latest, whatever the strategy.
        history_from_serial: l.history_from_serial.max(r.history_from_serial),
    }
}

/// The local state after taking `shared` (a merged or remote record): its
/// lineage id and members, the union of both histories, and this machine's
/// own fields as `shared` has them. The serial is left for the store.
///
/// A published checksum stands for the local one when it is that one
/// published under `key` (or, from an older record, that one plain): the
/// local value is kept. Any other is taken as it is: it names content this
/// machine cannot know, so the file reads as changed (drifted), which is
/// what the remote's different checksum meant before too.
pub fn adopt(local: &State, shared: &SharedRecord, key: &RecordKey) -> State {
    let mut out = local.clone();
    out.lineage.id = shared.lineage.id.clone();
    out.lineage.machines = shared.lineage.machines.clone();
    if !out.lineage.machines.contains(&local.machine.id) {
        out.lineage.machines.push(local.machine.id.clone());
        out.lineage.machines.sort();
    }
    out.history = union_history(&local.history, &shared.history);
    out.history.retain(|e| !below_floor(e, &shared.machines));
    if let Some(mine) = shared.machines.get(&local.machine.id) {
        out.active_profile = mine.active_profile.clone();
        out.config_path = mine.config_path.clone();
        out.checksums = mine
            .checksums
            .iter()
            .map(|(path, published)| {
                let sum = match local.checksums.get(path) {
                    Some(l)
                        if l == published
                            || publish_checksum(key, path, &l.text()) == *published =>
                    {
                        l.clone()
                    }
                    _ => Checksum::of(published),
                };
                (path.clone(), sum)
            })
            .collect();
        // Never published (machine_record), so the record cannot speak
        // for them: the local ones stay.
        out.checksums.extend(
            local
                .checksums
                .iter()
                .filter(|(_, sum)| sum.is_secret())
                .map(|(p, s)| (p.clone(), s.clone())),
        );
        out.last_apply = mine.last_apply.max(local.last_apply);
    }
    out
}

/// How bad a conflict is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Serial divergence, path or lineage mismatch.
    High,
    /// Profile mismatch.
    Medium,
    /// File drift.
    Low,
}

/// What differs between this machine and the remote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ConflictKind {
    /// The two copies belong to different lineages.
    LineageMismatch {
        /// Ours.
        local: String,
        /// Theirs.
        remote: String,
    },
    /// Both sides wrote since their common base.
    SerialDivergence {
        /// The local serial.
        local: u64,
        /// The remote serial.
        remote: u64,
        /// The serial at the common base, if there is one.
        base: Option<u64>,
    },
    /// The remote gives this machine another config path: its entry was
    /// changed outside this machine.
    PathMismatch {
        /// This machine's.
        local: Option<String>,
        /// The remote's entry for this machine.
        remote: Option<String>,
        /// Who made the change, when the backend can tell (a commit's author).
        #[serde(skip_serializing_if = "Option::is_none")]
        changed_by: Option<String>,
    },
    /// The remote gives this machine another profile: its entry was changed
    /// outside this machine.
    ProfileMismatch {
        /// This machine's.
        local: Option<String>,
        /// The remote's entry for this machine.
        remote: Option<String>,
        /// Who made the change, when the backend can tell (a commit's author).
        #[serde(skip_serializing_if = "Option::is_none")]
        changed_by: Option<String>,
    },
    /// A managed file changed since stead wrote it.
    FileDrift {
        /// The managed path, as recorded (`~/.bashrc`).
        path: String,
        /// How it differs.
        status: DriftStatus,
    },
}

/// One conflict and whether the automatic merge settles it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conflict {
    /// What it is.
    #[serde(flatten)]
    pub kind: ConflictKind,
    /// How bad.
    pub severity: Severity,
    /// The automatic merge can decide it (else a `stead state resolve`
    /// strategy must).
    pub automatic: bool,
}

impl Conflict {
    fn new(kind: ConflictKind, automatic: bool) -> Self {
        let severity = match &kind {
            ConflictKind::LineageMismatch { .. }
            | ConflictKind::SerialDivergence { .. }
            | ConflictKind::PathMismatch { .. } => Severity::High,
            ConflictKind::ProfileMismatch { .. } => Severity::Medium,
            ConflictKind::FileDrift { .. } => Severity::Low,
        };
        Conflict {
            kind,
            severity,
            automatic,
        }
    }

    /// One line for people.
    pub fn message(&self) -> String {
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".to_string());
        match &self.kind {
            ConflictKind::LineageMismatch { local, remote } => {
                format!("Lineage mismatch: local {local} vs remote {remote}")
            }
            ConflictKind::SerialDivergence {
                local,
                remote,
                base,
            } => format!(
                "State diverged: local serial {local} vs remote serial {remote} (common parent: {})",
                base.map(|b| b.to_string())
                    .unwrap_or_else(|| "none".to_string())
            ),
            ConflictKind::PathMismatch {
                local,
                remote,
                changed_by,
            } => format!(
                "Config path mismatch: local '{}' vs remote '{}' ({})",
                opt(local),
                opt(remote),
                changed_outside(changed_by)
            ),
            ConflictKind::ProfileMismatch {
                local,
                remote,
                changed_by,
            } => format!(
                "Profile mismatch: local '{}' vs remote '{}' ({})",
                opt(local),
                opt(remote),
                changed_outside(changed_by)
            ),
            ConflictKind::FileDrift { path, status } => {
                let shown = path.strip_prefix("~/").unwrap_or(path);
                match status {
                    DriftStatus::Modified => format!("File '{shown}' has been modified"),
                    other => format!("File '{shown}' drifted ({other})"),
                }
            }
        }
    }
}

/// Who changed this machine's entry, for a mismatch's message.
fn changed_outside(by: &Option<String>) -> String {
    match by {
        Some(who) => format!("changed outside this machine by {who}"),
        None => "changed outside this machine".to_string(),
    }
}

impl Conflict {
    /// Whether it is a change to this machine's own entry made elsewhere.
    pub fn is_own_entry(&self) -> bool {
        matches!(
            self.kind,
            ConflictKind::PathMismatch { .. } | ConflictKind::ProfileMismatch { .. }
        )
    }

    /// Records who changed this machine's entry (for a mismatch).
    pub fn set_changed_by(&mut self, who: &str) {
        if let ConflictKind::PathMismatch { changed_by, .. }
        | ConflictKind::ProfileMismatch { changed_by, .. } = &mut self.kind
        {
            *changed_by = Some(who.to_string());
        }
    }
}

/// Which side moved since the common base.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Nothing to exchange.
    UpToDate,
    /// Only this machine has news: push.
    LocalAhead,
    /// Only the remote has news: take it.
    RemoteAhead,
    /// Both have news: merge.
    Diverged,
}

/// The local, remote and base copies side by side, and what differs.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// This machine's view: the shared record at HEAD with the local state folded in.
    pub local: SharedRecord,
    /// The remote's copy (`None`: the remote has none yet).
    pub remote: Option<SharedRecord>,
    /// The common base's copy (`None`: no common base, or it had none).
    pub base: Option<SharedRecord>,
    /// Which side moved.
    pub direction: Direction,
    /// Everything that differs, most severe first.
    pub conflicts: Vec<Conflict>,
}

impl Comparison {
    /// Conflicts the automatic merge cannot decide.
    pub fn undecided(&self) -> impl Iterator<Item = &Conflict> {
        self.conflicts.iter().filter(|c| !c.automatic)
    }
}

/// Compares this machine (its local state over the record at HEAD) with
/// the remote's record against their common base. `drift` lists managed
/// paths that changed on disk (`(path, status)`); `key` publishes this
/// machine's checksums and `keep` is its history retention, as for [`fold`].
pub fn compare(
    state: &State,
    head: Option<&SharedRecord>,
    remote: Option<&SharedRecord>,
    base: Option<&SharedRecord>,
    drift: &[(String, DriftStatus)],
    key: &RecordKey,
    keep: usize,
) -> Comparison {
    let local = fold(head, state, key, keep);
    let local_moved = moved_since(Some(&local), base);
    let remote_moved = moved_since(remote, base);
    // Equal copies need nothing; a remote without a record takes ours.
    let direction = match remote {
        Some(r) if same_content(&local, r) => Direction::UpToDate,
        None => Direction::LocalAhead,
        Some(_) => match (local_moved, remote_moved) {
            (false, false) => Direction::UpToDate,
            (true, false) => Direction::LocalAhead,
            (false, true) => Direction::RemoteAhead,
            (true, true) => Direction::Diverged,
        },
    };
    let mut conflicts = Vec::new();
    if let Some(r) = remote {
        if r.lineage.id != local.lineage.id {
            conflicts.push(Conflict::new(
                ConflictKind::LineageMismatch {
                    local: local.lineage.id.clone(),
                    remote: r.lineage.id.clone(),
                },
                // Two machines that each started a lineage in a repo that had
                // none (both ran `init --repo` before either pushed): joining
                // the one that reached the remote first loses nothing. A
                // lineage replaced after a common one existed is not guessed.
                base.is_none(),
            ));
        }
        if direction == Direction::Diverged {
            conflicts.push(Conflict::new(
                ConflictKind::SerialDivergence {
                    local: local.lineage.serial,
                    remote: r.lineage.serial,
                    base: base.map(|b| b.lineage.serial),
                },
                true,
            ));
        }
        let me = &state.machine.id;
        if let Some(theirs) = r.machines.get(me) {
            let was = base.and_then(|b| b.machines.get(me));
            // Each machine owns its entry: a field of it that the remote
            // changed (someone edited this machine's entry elsewhere, or
            // used its id from another clone) and that differs from the
            // local value is never taken automatically, whether or not this
            // machine changed it too. Only this machine knows where its
            // clone is and which profile it applies; a profile from outside
            // may not even be one the manifest declares.
            let was_path = was.and_then(|w| w.config_path.clone());
            if theirs.config_path != state.config_path && theirs.config_path != was_path {
                conflicts.push(Conflict::new(
                    ConflictKind::PathMismatch {
                        local: state.config_path.clone(),
                        remote: theirs.config_path.clone(),
                        changed_by: None,
                    },
                    false,
                ));
            }
            let was_profile = was.and_then(|w| w.active_profile.clone());
            if theirs.active_profile != state.active_profile && theirs.active_profile != was_profile
            {
                conflicts.push(Conflict::new(
                    ConflictKind::ProfileMismatch {
                        local: state.active_profile.clone(),
                        remote: theirs.active_profile.clone(),
                        changed_by: None,
                    },
                    false,
                ));
            }
        }
    }
    for (path, status) in drift {
        conflicts.push(Conflict::new(
            ConflictKind::FileDrift {
                path: path.clone(),
                status: *status,
            },
            true,
        ));
    }
    conflicts.sort_by_key(|c| c.severity);
    Comparison {
        local,
        remote: remote.cloned(),
        base: base.cloned(),
        direction,
        conflicts,
    }
}

/// One field that differs between two copies.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldDiff {
    /// A JSON path (`lineage.serial`, `machines.<id>.active_profile`, `history[<id>]`).
    pub field: String,
    /// The local value (`null`: absent).
    pub local: serde_json::Value,
    /// The remote value (`null`: absent).
    pub remote: serde_json::Value,
}

/// Field by field, what differs between two copies. History is compared
/// by entry id (an entry on one side only is one difference).
pub fn diff(local: &SharedRecord, remote: &SharedRecord) -> Vec<FieldDiff> {
    let mut out = Vec::new();
    let to_value = |r: &SharedRecord| {
        let mut v = serde_json::to_value(r).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.remove("history");
        }
        v
    };
    diff_values("", &to_value(local), &to_value(remote), &mut out);
    let by_id = |h: &[HistoryEntry]| -> BTreeMap<String, serde_json::Value> {
        h.iter()
            .map(|e| (e.id.clone(), serde_json::to_value(e).unwrap_or_default()))
            .collect()
    };
    let (l, r) = (by_id(&local.history), by_id(&remote.history));
    for id in l.keys().chain(r.keys()).collect::<BTreeSet<_>>() {
        let (lv, rv) = (l.get(id), r.get(id));
        if lv != rv {
            out.push(FieldDiff {
                field: format!("history[{id}]"),
                local: lv.cloned().unwrap_or_default(),
                remote: rv.cloned().unwrap_or_default(),
            });
        }
    }
    out
}

fn diff_values(path: &str, l: &serde_json::Value, r: &serde_json::Value, out: &mut Vec<FieldDiff>) {
    use serde_json::Value;
    if l == r {
        return;
    }
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match (l, r) {
        (Value::Object(lo), Value::Object(ro)) => {
            let keys: BTreeSet<&String> = lo.keys().chain(ro.keys()).collect();
            for k in keys {
                diff_values(
                    &join(k),
                    lo.get(k).unwrap_or(&Value::Null),
                    ro.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        _ => out.push(FieldDiff {
            field: path.to_string(),
            local: l.clone(),
            remote: r.clone(),
        }),
    }
}

/// How long a machine may go unseen before it counts as offline (the
/// 24-hour rule): in `state lock-info` and `state check-conflicts`, and for
/// the remote lock ([`super::backend::RemoteHolder::breakable`]).
pub const OFFLINE_AFTER_HOURS: i64 = 24;

/// A lineage member not seen for [`OFFLINE_AFTER_HOURS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OfflineMachine {
    /// Its machine id.
    pub id: String,
    /// Its hostname, as it published it.
    pub hostname: String,
    /// When it was last seen.
    pub last_seen: DateTime<Utc>,
}

impl MachineRecord {
    /// When the machine was last seen: the later of its last published
    /// sync and its last apply (`None`: it published neither yet).
    pub fn last_seen(&self) -> Option<DateTime<Utc>> {
        self.last_sync.max(self.last_apply)
    }
}

/// The lineage's machines other than `me` not seen for
/// [`OFFLINE_AFTER_HOURS`] as of `now`, longest unseen first. A machine
/// that published no time yet is not judged.
pub fn offline_machines(
    record: &SharedRecord,
    now: DateTime<Utc>,
    me: &str,
) -> Vec<OfflineMachine> {
    let limit = chrono::TimeDelta::hours(OFFLINE_AFTER_HOURS);
    let mut out: Vec<OfflineMachine> = record
        .machines
        .iter()
        .filter(|(id, _)| id.as_str() != me && !record.is_retired(id))
        .filter_map(|(id, m)| {
            let seen = m.last_seen()?;
            (now - seen >= limit).then(|| OfflineMachine {
                id: id.clone(),
                hostname: m.hostname.clone(),
                last_seen: seen,
            })
        })
        .collect();
    out.sort_by_key(|m| m.last_seen);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::MachineInfo;

    const KEY: RecordKey = RecordKey::from_bytes([7; 32]);
    /// Retention that keeps every entry.
    const ALL: usize = usize::MAX;

    fn entry(id: &str, machine: &str, serial: u64, secs: i64) -> HistoryEntry {
        HistoryEntry {
            id: id.to_string(),
            operation: "apply".to_string(),
            timestamp: DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap(),
            machine_id: machine.to_string(),
            user: "me".to_string(),
            serial,
        }
    }

    fn state(id: &str, lineage: &str, serial: u64) -> State {
        let mut s = State::new(MachineInfo::current(id));
        s.lineage.id = lineage.to_string();
        s.lineage.serial = serial;
        s.active_profile = Some("personal".to_string());
        s.config_path = Some(format!("/home/{id}/dots"));
        s
    }

    #[test]
    fn fold_writes_own_entry_members_history_and_serial() {
        let mut a = state("a", "lineage-x", 3);
        a.history = vec![entry("h1", "a", 1, 1), entry("h3", "a", 3, 3)];
        let mut shared = SharedRecord::new("lineage-x");
        shared.lineage.serial = 2;
        shared.lineage.machines = vec!["b".into()];
        shared.history = vec![entry("h1", "a", 1, 1), entry("h2", "b", 2, 2)];
        let out = fold(Some(&shared), &a, &KEY, ALL);
        assert_eq!(out.lineage.serial, 3);
        assert_eq!(out.lineage.parent_serial, Some(2));
        assert_eq!(out.lineage.machines, vec!["a", "b"]);
        let ids: Vec<_> = out.history.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["h1", "h2", "h3"]);
        assert_eq!(
            out.machines["a"].active_profile.as_deref(),
            Some("personal")
        );
        // Folding again changes nothing.
        assert_eq!(fold(Some(&out), &a, &KEY, ALL), out);
    }

    #[test]
    fn a_sensitive_files_checksum_is_never_published_and_stays_local() {
        let secret = format!("{}{}", crate::secret::CONTENT_PREFIX, "ab".repeat(32));
        let mut a = state("a", "lineage-x", 3);
        a.checksums
            .insert("~/.token".into(), secret.as_str().into());
        a.checksums
            .insert("~/.rc".into(), format!("blake3:{}", "cd".repeat(32)).into());
        let out = fold(None, &a, &KEY, ALL);
        let published = &out.machines["a"].checksums;
        assert!(published.contains_key("~/.rc"), "{published:?}");
        assert!(!published.contains_key("~/.token"), "{published:?}");
        let text = String::from_utf8(to_bytes(&out)).unwrap();
        assert!(!text.contains(&"ab".repeat(32)), "{text}");
        // Adopting the record keeps it, though the record cannot show it.
        assert_eq!(adopt(&a, &out, &KEY).checksums["~/.token"], secret);
    }

    #[test]
    fn checksums_are_published_keyed_and_read_back_as_the_local_ones() {
        let pin = format!("blake3:{}", blake3::hash(b"4821\n").to_hex());
        let mut a = state("a", "lineage-x", 3);
        a.checksums.insert("~/.pin".into(), pin.clone().into());
        let out = fold(None, &a, &KEY, ALL);
        let published = &out.machines["a"].checksums["~/.pin"];
        assert!(published.starts_with(KEYED_PREFIX), "{published}");
        let text = String::from_utf8(to_bytes(&out)).unwrap();
        assert!(!text.contains(pin.trim_start_matches("blake3:")), "{text}");
        // Another key, another path: another value; publishing is idempotent.
        let other = RecordKey::from_bytes([8; 32]);
        assert_ne!(publish_checksum(&other, "~/.pin", &pin), *published);
        assert_ne!(publish_checksum(&KEY, "~/.pim", &pin), *published);
        assert_eq!(publish_checksum(&KEY, "~/.pin", published), *published);
        // Adopting the record keeps the local checksum.
        assert_eq!(adopt(&a, &out, &KEY).checksums, a.checksums);
        // A value this machine cannot account for is taken as it is (the
        // file then reads as changed), and a path the record dropped goes.
        let mut remote = out.clone();
        let theirs = remote.machines.get_mut("a").unwrap();
        theirs
            .checksums
            .insert("~/.pin".into(), "keyed-blake3:00".into());
        assert_eq!(
            adopt(&a, &remote, &KEY).checksums["~/.pin"],
            "keyed-blake3:00"
        );
        remote.machines.get_mut("a").unwrap().checksums.clear();
        assert!(adopt(&a, &remote, &KEY).checksums.is_empty());
    }

    #[test]
    fn a_record_with_plain_checksums_still_loads_and_settles() {
        // As stead 0.1 wrote it: this machine's plain checksum.
        let bytes = include_bytes!("../../tests/fixtures/shared-record-plain-checksums.json");
        let old = parse(bytes, "the fixture").unwrap();
        let me = "a3c12576-bb2c-4584-97d7-5a361d23a473";
        let plain = old.machines[me].checksums["~/.pin"].clone();
        assert!(plain.starts_with("blake3:"), "{plain}");
        let mut a = state(me, &old.lineage.id, old.lineage.serial);
        a.history = old.history.clone();
        a.checksums.insert("~/.pin".into(), plain.clone().into());
        // The old plain value stands for the local one.
        assert_eq!(adopt(&a, &old, &KEY).checksums["~/.pin"], plain);
        // Folding publishes it keyed: this machine's own news, no clash.
        let c = compare(&a, Some(&old), Some(&old), Some(&old), &[], &KEY, ALL);
        assert_eq!(c.direction, Direction::LocalAhead);
        assert!(c.conflicts.is_empty(), "{:?}", c.conflicts);
        assert!(c.local.machines[me].checksums["~/.pin"].starts_with(KEYED_PREFIX));
        let m = merge(Some(&old), &c.local, &old, Some(me), Strategy::Merge);
        assert_eq!(m.machines[me].checksums, c.local.machines[me].checksums);
    }

    #[test]
    fn a_sync_time_alone_is_not_news() {
        let mut a = state("a", "lineage-x", 3);
        let first = fold(None, &a, &KEY, ALL);
        a.last_sync = Some(Utc::now());
        let again = fold(Some(&first), &a, &KEY, ALL);
        assert_eq!(again, first);
        a.active_profile = Some("work".into());
        let changed = fold(Some(&first), &a, &KEY, ALL);
        assert_eq!(changed.machines["a"].last_sync, a.last_sync);
    }

    #[test]
    fn compare_finds_each_direction() {
        let a = state("a", "lineage-x", 5);
        let base = fold(None, &a, &KEY, ALL);
        let up = compare(&a, Some(&base), Some(&base), Some(&base), &[], &KEY, ALL);
        assert_eq!(up.direction, Direction::UpToDate);
        assert!(up.conflicts.is_empty());

        let mut a2 = a.clone();
        a2.lineage.serial = 6;
        a2.history.push(entry("h6", "a", 6, 6));
        let ahead = compare(&a2, Some(&base), Some(&base), Some(&base), &[], &KEY, ALL);
        assert_eq!(ahead.direction, Direction::LocalAhead);

        let b = state("b", "lineage-x", 6);
        let remote = fold(Some(&base), &b, &KEY, ALL);
        let behind = compare(&a, Some(&base), Some(&remote), Some(&base), &[], &KEY, ALL);
        assert_eq!(behind.direction, Direction::RemoteAhead);

        let both = compare(&a2, Some(&base), Some(&remote), Some(&base), &[], &KEY, ALL);
        assert_eq!(both.direction, Direction::Diverged);
        assert_eq!(
            both.conflicts[0].message(),
            "State diverged: local serial 6 vs remote serial 6 (common parent: 5)"
        );
        assert!(both.conflicts[0].automatic);
    }

    #[test]
    fn a_remote_edit_of_this_machine_is_a_mismatch() {
        let a = state("a", "lineage-x", 5);
        let base = fold(None, &a, &KEY, ALL);
        let mut remote = base.clone();
        remote.lineage.serial = 6;
        let theirs = remote.machines.get_mut("a").unwrap();
        theirs.active_profile = Some("work".into());
        theirs.config_path = Some("/elsewhere".into());
        let c = compare(&a, Some(&base), Some(&remote), Some(&base), &[], &KEY, ALL);
        let kinds: Vec<_> = c
            .conflicts
            .iter()
            .map(|c| (c.severity, c.automatic, c.message()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (
                    Severity::High,
                    false,
                    "Config path mismatch: local '/home/a/dots' vs remote '/elsewhere' \
                     (changed outside this machine)"
                        .to_string()
                ),
                (
                    Severity::Medium,
                    false,
                    "Profile mismatch: local 'personal' vs remote 'work' \
                     (changed outside this machine)"
                        .to_string()
                ),
            ]
        );
        // Each machine owns its entry: not even --merge takes the remote's
        // profile or path for it, while other fields still merge.
        let mut remote2 = remote.clone();
        remote2.machines.get_mut("a").unwrap().hostname = "renamed".into();
        let m = merge(Some(&base), &c.local, &remote2, Some("a"), Strategy::Merge);
        let mine = &m.machines["a"];
        assert_eq!(mine.active_profile.as_deref(), Some("personal"));
        assert_eq!(mine.config_path.as_deref(), Some("/home/a/dots"));
        assert_eq!(mine.hostname, "renamed");
        // --use-remote takes them only where they can be used here.
        let mut r = merge(
            Some(&base),
            &c.local,
            &remote,
            Some("a"),
            Strategy::UseRemote,
        );
        let kept = keep_usable_own(&mut r, &c.local, "a", &|p| p == "work", &|_| false);
        assert_eq!(r.machines["a"].active_profile.as_deref(), Some("work"));
        assert_eq!(r.machines["a"].config_path.as_deref(), Some("/home/a/dots"));
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].field, "config_path");
        let mut r = merge(
            Some(&base),
            &c.local,
            &remote,
            Some("a"),
            Strategy::UseRemote,
        );
        r.machines.get_mut("a").unwrap().active_profile = Some(String::new());
        let kept = keep_usable_own(&mut r, &c.local, "a", &|_| true, &|_| true);
        assert_eq!(r.machines["a"].active_profile.as_deref(), Some("personal"));
        assert_eq!(kept[0].field, "active_profile");
        // Changed here too: no longer decidable.
        let mut a2 = a.clone();
        a2.active_profile = Some("laptop".into());
        let c = compare(&a2, Some(&base), Some(&remote), Some(&base), &[], &KEY, ALL);
        let mismatches: Vec<_> = c
            .conflicts
            .iter()
            .filter(|c| !matches!(c.kind, ConflictKind::SerialDivergence { .. }))
            .collect();
        assert_eq!(mismatches.len(), 2);
        assert!(mismatches.iter().all(|c| !c.automatic));
    }

    #[test]
    fn two_new_lineages_merge_into_the_remote_one_but_a_replaced_one_does_not() {
        let a = state("a", "lineage-a", 1);
        let b = state("b", "lineage-b", 1);
        let remote = fold(None, &b, &KEY, ALL);
        let c = compare(
            &a,
            Some(&fold(None, &a, &KEY, ALL)),
            Some(&remote),
            None,
            &[],
            &KEY,
            ALL,
        );
        assert_eq!(c.direction, Direction::Diverged);
        let lineage = &c.conflicts[0];
        assert!(matches!(lineage.kind, ConflictKind::LineageMismatch { .. }));
        assert!(lineage.automatic);
        let m = merge(None, &c.local, &remote, Some("a"), Strategy::Merge);
        assert_eq!(m.lineage.id, "lineage-b");
        assert_eq!(m.lineage.machines, vec!["a", "b"]);

        let base = fold(None, &a, &KEY, ALL);
        let c = compare(&a, Some(&base), Some(&remote), Some(&base), &[], &KEY, ALL);
        assert!(!c.conflicts[0].automatic);
    }

    #[test]
    fn keeps_all_of_needs_lineage_serial_history_and_machines() {
        let mut a = state("a", "lineage-x", 3);
        a.history = vec![entry("h1", "a", 1, 1), entry("h2", "a", 2, 2)];
        let old = fold(
            Some(&fold(None, &state("b", "lineage-x", 3), &KEY, ALL)),
            &a,
            &KEY,
            ALL,
        );
        let mut new = old.clone();
        new.lineage.serial += 1;
        assert!(new.keeps_all_of(&old));
        let mut lost = new.clone();
        lost.history.remove(0);
        assert!(!lost.keeps_all_of(&old));
        assert_eq!(lost.missing_history(&[&old, &new]), BTreeSet::from(["h1"]));
        let mut dropped = new.clone();
        dropped.machines.remove("b");
        assert!(!dropped.keeps_all_of(&old));
        dropped.retire("b");
        assert!(dropped.keeps_all_of(&old));
        let mut behind = new.clone();
        behind.lineage.serial = 1;
        assert!(!behind.keeps_all_of(&old));
    }

    #[test]
    fn drift_is_low() {
        let a = state("a", "lineage-x", 5);
        let c = compare(
            &a,
            None,
            None,
            None,
            &[("~/.bashrc".into(), DriftStatus::Modified)],
            &KEY,
            ALL,
        );
        assert_eq!(c.conflicts[0].severity, Severity::Low);
        assert_eq!(c.conflicts[0].message(), "File '.bashrc' has been modified");
    }

    #[test]
    fn merge_unions_and_goes_past_both_serials() {
        let a = state("a", "lineage-x", 5);
        let b = state("b", "lineage-x", 5);
        let base = fold(Some(&fold(None, &a, &KEY, ALL)), &b, &KEY, ALL);
        let mut a2 = a.clone();
        a2.lineage.serial = 7;
        a2.history.push(entry("ha", "a", 7, 10));
        let mut b2 = b.clone();
        b2.lineage.serial = 6;
        b2.history.push(entry("hb", "b", 6, 9));
        let (l, r) = (
            fold(Some(&base), &a2, &KEY, ALL),
            fold(Some(&base), &b2, &KEY, ALL),
        );
        let m = merge(Some(&base), &l, &r, Some("a"), Strategy::Merge);
        assert_eq!(m.lineage.serial, 8);
        assert_eq!(m.lineage.parent_serial, Some(7));
        let ids: Vec<_> = m.history.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["hb", "ha"]);
        assert_eq!(m.lineage.machines, vec!["a", "b"]);
    }

    #[test]
    fn clashes_go_by_strategy() {
        let a = state("a", "lineage-x", 5);
        let base = fold(None, &a, &KEY, ALL);
        let mut l = base.clone();
        let mut r = base.clone();
        let t1 = DateTime::from_timestamp(1_800_000_000, 0);
        let t2 = DateTime::from_timestamp(1_800_000_100, 0);
        {
            let lm = l.machines.get_mut("a").unwrap();
            lm.active_profile = Some("mine".into());
            lm.last_apply = t2;
            lm.checksums.insert("~/x".into(), "blake3:l".into());
        }
        {
            let rm = r.machines.get_mut("a").unwrap();
            rm.active_profile = Some("theirs".into());
            rm.last_apply = t1;
            rm.checksums.insert("~/x".into(), "blake3:r".into());
            rm.checksums.insert("~/y".into(), "blake3:y".into());
        }
        let m = merge(Some(&base), &l, &r, None, Strategy::Merge);
        let ma = &m.machines["a"];
        assert_eq!(ma.active_profile.as_deref(), Some("theirs"));
        assert_eq!(ma.last_apply, t2, "newest time");
        assert_eq!(
            ma.checksums["~/x"], "blake3:r",
            "remote checksum on a clash"
        );
        assert_eq!(ma.checksums["~/y"], "blake3:y");
        let m = merge(Some(&base), &l, &r, Some("a"), Strategy::UseLocal);
        assert_eq!(m.machines["a"], l.machines["a"]);
        let m = merge(Some(&base), &l, &r, Some("a"), Strategy::UseRemote);
        assert_eq!(m.machines["a"], r.machines["a"]);
    }

    #[test]
    fn retired_machines_stay_retired() {
        let a = state("a", "lineage-x", 5);
        let b = state("b", "lineage-x", 5);
        let base = fold(Some(&fold(None, &a, &KEY, ALL)), &b, &KEY, ALL);
        let mut l = base.clone();
        l.retire("b");
        let m = merge(Some(&base), &l, &base, Some("a"), Strategy::Merge);
        assert!(!m.machines.contains_key("b"));
        assert_eq!(m.lineage.machines, vec!["a"]);
        assert_eq!(m.retired, vec!["b"]);
    }

    fn ids(history: &[HistoryEntry]) -> Vec<&str> {
        history.iter().map(|e| e.id.as_str()).collect()
    }

    /// Machine `a` with entries a1..a5 and `b` with b1..b2, interleaved.
    fn two_machines_history() -> (State, SharedRecord) {
        let mut a = state("a", "lineage-x", 7);
        a.history = (1..=5)
            .map(|i| entry(&format!("a{i}"), "a", i, 10 * i as i64))
            .collect();
        let mut shared = fold(None, &state("b", "lineage-x", 2), &KEY, ALL);
        shared.history = vec![entry("b1", "b", 1, 5), entry("b2", "b", 2, 25)];
        (a, shared)
    }

    #[test]
    fn a_fold_keeps_the_machines_newest_entries_and_raises_its_floor() {
        let (a, shared) = two_machines_history();
        let out = fold(Some(&shared), &a, &KEY, 2);
        // a keeps a4 and a5; b's entries are b's to prune, so both stay.
        assert_eq!(ids(&out.history), ["b1", "b2", "a4", "a5"]);
        assert_eq!(out.machines["a"].history_from_serial, Some(4));
        assert_eq!(
            out.machines.get("b").and_then(|m| m.history_from_serial),
            None
        );
        assert_eq!(out.version, 3, "a floor needs version 3");
        // The local state still holds a1..a5: folding it again brings none
        // back, and is no news.
        let again = fold(Some(&out), &a, &KEY, 2);
        assert_eq!(again, out);
        // A larger retention later does not lower the floor.
        let later = fold(Some(&out), &a, &KEY, ALL);
        assert_eq!(
            later.machines["a"].history_from_serial,
            out.machines["a"].history_from_serial
        );
        assert_eq!(ids(&later.history), ["b1", "b2", "a4", "a5"]);
        // An entry made after the clock was set back is older by time than
        // every kept one, but newer by serial: it stays, and the oldest by
        // serial goes.
        let mut late = a.clone();
        let mut back = entry("a6", "a", 6, 1);
        back.timestamp = a.history[0].timestamp - chrono::TimeDelta::days(365);
        late.history.insert(0, back);
        let out = fold(Some(&out), &late, &KEY, 2);
        assert_eq!(ids(&out.history), ["a6", "b1", "b2", "a5"]);
        assert_eq!(out.machines["a"].history_from_serial, Some(5));
    }

    #[test]
    fn a_merge_with_an_older_copy_brings_no_pruned_entry_back() {
        let (a, shared) = two_machines_history();
        let old = fold(Some(&shared), &a, &KEY, ALL);
        assert_eq!(old.version, 2, "no floor, version 2");
        let pruned = fold(Some(&old), &a, &KEY, 2);
        // b's copy is the old one, plus an entry of its own.
        let mut b_copy = old.clone();
        b_copy.history.push(entry("b3", "b", 8, 60));
        for (l, r) in [(&b_copy, &pruned), (&pruned, &b_copy)] {
            for strategy in [Strategy::Merge, Strategy::UseLocal, Strategy::UseRemote] {
                let m = merge(Some(&old), l, r, Some("b"), strategy);
                assert_eq!(
                    ids(&m.history),
                    ["b1", "b2", "a4", "a5", "b3"],
                    "{strategy:?}"
                );
                assert_eq!(
                    m.machines["a"].history_from_serial,
                    pruned.machines["a"].history_from_serial
                );
                assert_eq!(m.version, 3);
            }
        }
        // b adopting the pruned record drops a's old entries from its state
        // too, and keeps its own.
        let mut b = state("b", "lineage-x", 8);
        b.history = b_copy.history.clone();
        let adopted = adopt(&b, &pruned, &KEY);
        assert_eq!(ids(&adopted.history), ["b1", "b2", "a4", "a5", "b3"]);
        // Pruned entries are not lost ones: the pruned copy keeps all of the old.
        assert!(pruned.missing_history(&[&old]).is_empty());
        assert!(pruned.keeps_all_of(&old));
        // But an entry missing above the floor still is.
        let mut lost = pruned.clone();
        lost.history.retain(|e| e.id != "a5");
        assert_eq!(lost.missing_history(&[&old]), BTreeSet::from(["a5"]));
    }

    #[test]
    fn a_record_with_a_floor_is_written_as_version_3_and_reads_back() {
        let (a, shared) = two_machines_history();
        let pruned = fold(Some(&shared), &a, &KEY, 2);
        let text = String::from_utf8(to_bytes(&pruned)).unwrap();
        assert!(text.starts_with("{\n  \"version\": 3,"), "{text}");
        assert!(text.contains("\"history_from_serial\""), "{text}");
        assert_eq!(parse(text.as_bytes(), "x").unwrap(), pruned);
        // A stead that did not know floors put a pruned entry back (its
        // union): reading drops it again.
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["history"]
            .as_array_mut()
            .unwrap()
            .insert(0, serde_json::to_value(&a.history[0]).unwrap());
        let read = parse(&serde_json::to_vec(&v).unwrap(), "x").unwrap();
        assert_eq!(read, pruned);
        // A machine retired with its floor: nothing else needs version 3.
        let mut r = pruned.clone();
        r.retire("a");
        assert_eq!(r.version, 2);
    }

    #[test]
    fn a_version_2_record_of_the_previous_build_loads_writes_back_and_prunes() {
        // Written by 42a0b7a's stead: two machines, two entries each.
        let bytes = include_bytes!("../../tests/fixtures/shared-record-v2.json");
        let old = parse(bytes, "the fixture").unwrap();
        assert_eq!(old.version, 2);
        assert_eq!(to_bytes(&old), bytes, "written back byte for byte");
        let me = "05692f4d-2296-4f7f-8f43-85fafce18ebb";
        let other = "8c84aaab-c225-4f90-815d-2b069d3ff1f4";
        let mut d = state(me, &old.lineage.id, old.lineage.serial);
        d.history = old.history.clone();
        let pruned = fold(Some(&old), &d, &KEY, 1);
        assert_eq!(pruned.version, 3);
        let own =
            |r: &SharedRecord, m: &str| r.history.iter().filter(|e| e.machine_id == m).count();
        assert_eq!((own(&pruned, me), own(&pruned, other)), (1, 2));
        // The other machine, still on the version 2 copy, merges: nothing
        // pruned comes back, nothing of its own is lost.
        let m = merge(Some(&old), &old, &pruned, Some(other), Strategy::Merge);
        assert_eq!((own(&m, me), own(&m, other)), (1, 2));
    }

    #[test]
    fn parse_refuses_newer_and_corrupt() {
        let mut r = SharedRecord::new("lineage-x");
        r.version = 9;
        let bytes = serde_json::to_vec(&r).unwrap();
        assert!(matches!(
            parse(&bytes, "x"),
            Err(SharedError::Newer { found: 9, .. })
        ));
        let err = parse(b"{\"version\": 1,", "HEAD:.stead/state.json").unwrap_err();
        assert!(err.to_string().contains("line 1 column"), "{err}");
        let ok = SharedRecord::new("lineage-x");
        assert_eq!(parse(&to_bytes(&ok), "x").unwrap(), ok);
    }

    #[test]
    fn diff_names_fields() {
        let a = state("a", "lineage-x", 5);
        let l = fold(None, &a, &KEY, ALL);
        let mut r = l.clone();
        r.lineage.serial = 9;
        r.history.push(entry("hr", "b", 9, 1));
        let d = diff(&l, &r);
        let fields: Vec<_> = d.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["lineage.serial", "history[hr]"]);
        assert_eq!(d[0].local, serde_json::json!(5));
    }

    #[test]
    fn a_version_1_record_reads_without_drift_merges_and_is_written_as_version_2() {
        let bytes = include_bytes!("../../tests/fixtures/shared-record-v1.json");
        let old = parse(bytes, "the fixture").unwrap();
        assert_eq!(old.version, 2, "held as version 2: it carries no floor");
        assert_eq!(old.machine_count(), 2);
        assert!(old.machines.values().all(|m| m.drift.is_none()));
        // Reading it again, or writing it back and reading that, is no news.
        assert!(same_content(&old, &parse(&to_bytes(&old), "x").unwrap()));
        // A machine of it folds its state in: no clash, its count not invented.
        let me = "e7a3f1d9-6b4c-4d2e-8f0a-5c9b1e3d7a62";
        let mut d = state(me, &old.lineage.id, old.lineage.serial);
        d.history = old.history.clone();
        d.active_profile = Some("work".into());
        d.config_path = Some("/home/sam/dotfiles".into());
        let c = compare(&d, Some(&old), Some(&old), Some(&old), &[], &KEY, ALL);
        assert!(c.undecided().next().is_none(), "{:?}", c.conflicts);
        assert_eq!(c.local.machines[me].drift, None);
        // Merged with a version 2 copy that carries a count: kept.
        let mut newer = old.clone();
        newer.lineage.serial += 1;
        newer
            .machines
            .get_mut("1c9e4b7a-3d2f-4a8b-9e6c-0f5d7a2b8c41")
            .unwrap()
            .drift = Some(2);
        let m = merge(Some(&old), &old, &newer, Some(me), Strategy::Merge);
        assert_eq!(
            m.machines["1c9e4b7a-3d2f-4a8b-9e6c-0f5d7a2b8c41"].drift,
            Some(2)
        );
        let text = String::from_utf8(to_bytes(&m)).unwrap();
        assert!(text.starts_with("{\n  \"version\": 2,"), "{text}");
        assert!(text.contains("\"drift\": 2"), "{text}");
        // No count, no key: a record without counts reads the same in both versions.
        assert!(!String::from_utf8(to_bytes(&old)).unwrap().contains("drift"));
    }

    #[test]
    fn a_record_newer_than_version_3_asks_for_an_upgrade() {
        let mut r = SharedRecord::new("lineage-x");
        r.version = SHARED_VERSION + 1;
        let err = parse(&to_bytes(&r), "origin/main:.stead/state.json").unwrap_err();
        assert_eq!(
            err.to_string(),
            "the shared record origin/main:.stead/state.json has version 4, \
             but this stead understands up to version 3; upgrade stead"
        );
    }

    #[test]
    fn a_drift_count_travels_only_with_other_news() {
        let a = state("a", "lineage-x", 3);
        let committed = fold(None, &a, &KEY, ALL);
        // Folding never changes the count: only carry_drift does.
        let mut with = committed.clone();
        with.machines.get_mut("a").unwrap().drift = Some(4);
        assert_eq!(
            fold(Some(&with), &a, &KEY, ALL).machines["a"].drift,
            Some(4)
        );
        // Nothing else new: the count is not set, and not even asked.
        let mut record = fold(Some(&committed), &a, &KEY, ALL);
        let asked = std::cell::Cell::new(false);
        let set = carry_drift(&mut record, Some(&committed), "a", || {
            asked.set(true);
            Some(1)
        });
        assert!(!set && !asked.get());
        assert_eq!(record, committed);
        // A count that differs alone is no news between copies either.
        assert!(same_content(&with, &committed));
        assert!(
            diff(&with, &committed)
                .iter()
                .any(|d| d.field == "machines.a.drift")
        );
        // With other news it goes along.
        let mut a2 = a.clone();
        a2.active_profile = Some("work".into());
        let mut record = fold(Some(&committed), &a2, &KEY, ALL);
        assert!(carry_drift(&mut record, Some(&committed), "a", || Some(1)));
        assert_eq!(record.machines["a"].drift, Some(1));
        // So does the hourly heartbeat.
        let mut record = fold(Some(&committed), &a, &KEY, ALL);
        assert!(mark_seen(&mut record, "a", Utc::now()));
        assert!(carry_drift(&mut record, Some(&committed), "a", || Some(0)));
        assert_eq!(record.machines["a"].drift, Some(0));
        // Nothing committed yet: a first record is news.
        let mut first = fold(None, &a, &KEY, ALL);
        assert!(carry_drift(&mut first, None, "a", || Some(2)));
        assert_eq!(first.machines["a"].drift, Some(2));
        // Only this machine's entry: another's is never set.
        assert!(!carry_drift(&mut first, None, "zz", || Some(9)));
        assert!(!first.machines.contains_key("zz"));
    }

    #[test]
    fn a_drift_count_merges_like_its_machines_other_fields() {
        let a = state("a", "lineage-x", 5);
        let b = state("b", "lineage-x", 5);
        let base = fold(Some(&fold(None, &a, &KEY, ALL)), &b, &KEY, ALL);
        let mut l = base.clone();
        l.machines.get_mut("a").unwrap().drift = Some(1);
        let mut r = base.clone();
        r.machines.get_mut("b").unwrap().drift = Some(3);
        let m = merge(Some(&base), &l, &r, Some("a"), Strategy::Merge);
        assert_eq!(m.machines["a"].drift, Some(1), "a one-sided change is kept");
        assert_eq!(m.machines["b"].drift, Some(3));
        // This machine's own entry under --use-local / --use-remote is that side's.
        r.machines.get_mut("a").unwrap().drift = Some(7);
        let m = merge(Some(&base), &l, &r, Some("a"), Strategy::UseLocal);
        assert_eq!(m.machines["a"].drift, Some(1));
        let m = merge(Some(&base), &l, &r, Some("a"), Strategy::UseRemote);
        assert_eq!(m.machines["a"].drift, Some(7));
    }

    fn sample_machine(id: &str) -> MachineRecord {
        MachineRecord {
            hostname: format!("host-{id}"),
            os: "linux".into(),
            arch: "x86_64".into(),
            user: "u".into(),
            active_profile: None,
            config_path: None,
            last_apply: None,
            last_sync: None,
            checksums: BTreeMap::new(),
            drift: None,
            history_from_serial: None,
        }
    }

    #[test]
    fn only_a_machines_own_parts_are_news_for_its_own_writes() {
        let mut base = SharedRecord::new("lineage-x");
        for id in ["a", "b"] {
            base.machines.insert(id.into(), sample_machine(id));
            base.lineage.machines.push(id.into());
        }
        assert!(!moved_for(Some(&base), Some(&base), "a"));
        assert!(moved_for(Some(&base), None, "a"), "no base: news");
        assert!(!moved_for(None, Some(&base), "a"), "no copy: none");

        // Another machine's sync: its entry, its history, the serial.
        let mut other = base.clone();
        other.lineage.serial += 1;
        other.history.push(entry("hb", "b", 9, 9));
        other.machines.get_mut("b").unwrap().active_profile = Some("work".into());
        assert!(moved_since(Some(&other), Some(&base)));
        assert!(!moved_for(Some(&other), Some(&base), "a"));

        // A's own times of push and drift count are not news either.
        let mut seen = base.clone();
        let a = seen.machines.get_mut("a").unwrap();
        a.last_sync = Some(Utc::now());
        a.drift = Some(3);
        assert!(!moved_for(Some(&seen), Some(&base), "a"));

        // A's profile changed elsewhere, A retired, A's membership gone, or
        // another lineage: news for A.
        let mut profile = base.clone();
        profile.machines.get_mut("a").unwrap().active_profile = Some("work".into());
        assert!(moved_for(Some(&profile), Some(&base), "a"));
        let mut retired = base.clone();
        retired.retire("a");
        assert!(moved_for(Some(&retired), Some(&base), "a"));
        let mut left = base.clone();
        left.lineage.machines.retain(|id| id != "a");
        assert!(moved_for(Some(&left), Some(&base), "a"));
        let mut elsewhere = base.clone();
        elsewhere.lineage.id = "lineage-y".into();
        assert!(moved_for(Some(&elsewhere), Some(&base), "a"));
    }

    #[test]
    fn a_sync_with_nothing_to_say_publishes_a_heartbeat_once_an_hour() {
        let now = Utc::now();
        let mut r = SharedRecord::new("lineage-x");
        r.machines.insert("a".into(), sample_machine("a"));
        // Never published a time: marked at once.
        assert!(mark_seen(&mut r, "a", now));
        assert_eq!(r.machines["a"].last_sync, Some(now));
        // Within the hour: left alone, and the copies count as the same.
        let before = r.clone();
        let soon = now + chrono::TimeDelta::minutes(59);
        assert!(!mark_seen(&mut r, "a", soon));
        assert_eq!(r, before);
        let mut nearly = r.clone();
        nearly.machines.get_mut("a").unwrap().last_sync = Some(soon);
        assert!(same_content(&r, &nearly) && same_content(&nearly, &r));
        // An hour on: refreshed, and the refreshed copy is news both ways.
        let later = now + chrono::TimeDelta::minutes(60);
        assert!(mark_seen(&mut r, "a", later));
        assert_eq!(r.machines["a"].last_sync, Some(later));
        assert!(!same_content(&r, &before) && !same_content(&before, &r));
        // A machine not in the record is not invented.
        assert!(!mark_seen(&mut r, "zz", later));
        assert!(!r.machines.contains_key("zz"));
    }

    #[test]
    fn folding_never_moves_a_published_time_back() {
        let mut a = state("a", "lineage-x", 5);
        let mut r = fold(None, &a, &KEY, ALL);
        let beat = Utc::now() + chrono::TimeDelta::hours(2);
        mark_seen(&mut r, "a", beat);
        // Something else of a's changed, with an older local time.
        a.active_profile = Some("work".into());
        let out = fold(Some(&r), &a, &KEY, ALL);
        assert_eq!(out.machines["a"].last_sync, Some(beat));
    }

    #[test]
    fn machines_unseen_for_24_hours_are_offline_others_and_me_are_not() {
        let now = Utc::now();
        let mut r = SharedRecord::new("lineage-x");
        let mut entry = |id: &str, sync: Option<i64>, apply: Option<i64>| {
            let mut m = sample_machine(id);
            m.last_sync = sync.map(|h| now - chrono::TimeDelta::hours(h));
            m.last_apply = apply.map(|h| now - chrono::TimeDelta::hours(h));
            r.machines.insert(id.to_string(), m);
        };
        entry("me", Some(100), None);
        entry("old", Some(30), Some(25));
        entry("fresh", Some(30), Some(1));
        entry("never", None, None);
        entry("older", Some(48), None);
        let off = offline_machines(&r, now, "me");
        let ids: Vec<&str> = off.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, vec!["older", "old"]);
        assert_eq!(off[1].last_seen, now - chrono::TimeDelta::hours(25));
    }
}
