//! The fleet view (`stead fleet status`): every machine of a lineage as one
//! read of the shared record shows it, one row each (profile, last apply,
//! last sync, drift count, whether it holds a remote lock (the lineage's,
//! or on etcd its own), offline after
//! [`crate::sync::shared::OFFLINE_AFTER_HOURS`] unseen), plus who holds the
//! lineage-wide lock.
//!
//! Pure over what the caller read: the record (and which copy it is), the
//! remote lock as inspected, the time and this machine's id. Reading them
//! from a backend is [`read_record`]'s job; printing is the front end's.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::sync::SyncError;
use crate::sync::backend::{LockScope, RecordStore, RemoteHolder};
use crate::sync::shared::{SharedRecord, offline_machines};

/// Which copy of the shared record the view was built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The remote's copy, as of a refresh that reached it.
    Remote,
    /// This clone's committed copy: the remote could not be reached (or has
    /// no record yet), so it is what this machine last committed.
    Local,
}

/// The copy a fleet view reads: the remote's when `reached` (the refresh
/// just before reached the remote) and it has one, else this clone's
/// committed copy. `None`: neither has a shared record.
pub fn read_record(
    store: &dyn RecordStore,
    reached: bool,
) -> Result<Option<(SharedRecord, Source)>, SyncError> {
    let records = store.records()?;
    if reached && let Some(remote) = records.remote {
        return Ok(Some((remote, Source::Remote)));
    }
    Ok(records.local.map(|local| (local, Source::Local)))
}

/// What is known of the remote locks: the lineage's, and on a backend
/// with a lock per machine (etcd) the machines'.
#[derive(Debug, Clone, Copy)]
pub enum LockSeen<'a> {
    /// They could not be read (no remote, or the remote was unreachable).
    Unknown,
    /// Nobody holds one.
    Free,
    /// These are held (never empty).
    Held(&'a [RemoteHolder]),
}

impl<'a> From<&'a [RemoteHolder]> for LockSeen<'a> {
    fn from(holders: &'a [RemoteHolder]) -> Self {
        if holders.is_empty() {
            LockSeen::Free
        } else {
            LockSeen::Held(holders)
        }
    }
}

/// The lineage lock as held: by whom, for what, since when. Every field is
/// `None` when the lock's content cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineageLock {
    /// The holder's machine id.
    pub machine_id: Option<String>,
    /// The holder's hostname, as its lock says.
    pub hostname: Option<String>,
    /// What the holder is doing (`apply`, `sync`, ...).
    pub operation: Option<String>,
    /// When it was taken.
    pub acquired_at: Option<DateTime<Utc>>,
    /// How old it is, in seconds, as of the view's time.
    pub age_seconds: Option<i64>,
}

impl LineageLock {
    fn from_holder(holder: &RemoteHolder, now: DateTime<Utc>) -> Self {
        let info = holder.info.as_ref();
        LineageLock {
            machine_id: info.map(|i| i.machine.id.clone()),
            hostname: info.map(|i| i.machine.hostname.clone()),
            operation: info.map(|i| i.operation.clone()),
            acquired_at: info.map(|i| i.created_at),
            age_seconds: holder.age(now).map(|a| a.num_seconds()),
        }
    }
}

/// A remote lock as a machine's row shows it: that machine holds it (its
/// own lock, or the lineage's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeldLock {
    /// What it holds it for.
    pub operation: String,
    /// When it took it.
    pub acquired_at: DateTime<Utc>,
    /// How old the lock is, in seconds.
    pub age_seconds: i64,
}

/// One machine of the lineage, as the record shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FleetMachine {
    /// Its machine id.
    pub id: String,
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
    /// When it last published its record.
    pub last_sync: Option<DateTime<Utc>>,
    /// The later of the two: what the 24-hour rule reads.
    pub last_seen: Option<DateTime<Utc>>,
    /// How many of its managed paths had drifted when it last published
    /// (`None`: its record carries no count).
    pub drift: Option<u64>,
    /// A remote lock this machine holds: its own, or the lineage's.
    pub lock: Option<HeldLock>,
    /// Unseen for [`crate::sync::shared::OFFLINE_AFTER_HOURS`] or more, or never seen (this
    /// machine never is: it is running the view).
    pub offline: bool,
    /// Whether it is the machine the view runs on.
    pub this_machine: bool,
}

/// Every machine of the lineage, sorted by id, and the lineage lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FleetStatus {
    /// The lineage's id.
    pub lineage_id: String,
    /// The record's serial.
    pub serial: u64,
    /// Which copy of the record this is.
    pub source: Source,
    /// The machines (retired ones left out), sorted by id.
    pub machines: Vec<FleetMachine>,
    /// Whether the lineage lock could be read.
    pub lock_known: bool,
    /// Who holds the lineage lock (`None`: nobody, or not known).
    pub lock: Option<LineageLock>,
}

/// The fleet view of `record` (read from `source`) as of `now`, seen from
/// machine `me`, with the lineage lock as `lock` says.
pub fn status(
    record: &SharedRecord,
    source: Source,
    lock: LockSeen<'_>,
    now: DateTime<Utc>,
    me: &str,
) -> FleetStatus {
    let unseen: Vec<String> = offline_machines(record, now, me)
        .into_iter()
        .map(|m| m.id)
        .collect();
    let holders = match lock {
        LockSeen::Held(h) => h,
        _ => &[],
    };
    let machines = record
        .machines
        .iter()
        .filter(|(id, _)| !record.is_retired(id))
        .map(|(id, m)| {
            let this_machine = id == me;
            let held = holders
                .iter()
                .filter_map(|h| h.info.as_ref())
                .find(|info| &info.machine.id == id)
                .map(|info| HeldLock {
                    operation: info.operation.clone(),
                    acquired_at: info.created_at,
                    age_seconds: (now - info.created_at).num_seconds(),
                });
            FleetMachine {
                id: id.clone(),
                hostname: m.hostname.clone(),
                os: m.os.clone(),
                arch: m.arch.clone(),
                user: m.user.clone(),
                active_profile: m.active_profile.clone(),
                config_path: m.config_path.clone(),
                last_apply: m.last_apply,
                last_sync: m.last_sync,
                last_seen: m.last_seen(),
                drift: m.drift,
                lock: held,
                offline: !this_machine && (m.last_seen().is_none() || unseen.contains(id)),
                this_machine,
            }
        })
        .collect();
    FleetStatus {
        lineage_id: record.lineage.id.clone(),
        serial: record.lineage.serial,
        source,
        machines,
        lock_known: !matches!(lock, LockSeen::Unknown),
        lock: holders
            .iter()
            .find(|h| h.scope == LockScope::Lineage)
            .map(|h| LineageLock::from_holder(h, now)),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::lock::{LockHolder, LockInfo, LockType};
    use crate::sync::backend::ConfigSource;
    use crate::sync::backend::Revision;
    use crate::sync::memory::MemoryRemote;
    use crate::sync::shared::MachineRecord;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn hours_ago(h: i64) -> Option<DateTime<Utc>> {
        Some(now() - chrono::TimeDelta::hours(h))
    }

    fn machine(host: &str, apply: Option<i64>, sync: Option<i64>) -> MachineRecord {
        MachineRecord {
            hostname: host.into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            user: "sam".into(),
            active_profile: Some(format!("{host}-profile")),
            config_path: Some(format!("/home/{host}/dots")),
            last_apply: apply.and_then(hours_ago),
            last_sync: sync.and_then(hours_ago),
            checksums: BTreeMap::from([("~/.pin".into(), "keyed-blake3:00".into())]),
            drift: None,
            history_from_serial: None,
        }
    }

    /// Machines `c` (seen 2 h ago, drift 3), `a` (this one, seen 100 h
    /// ago), `b` (synced 30 h ago, applied 25 h ago), `d` (never seen), `r`
    /// (retired).
    fn record() -> SharedRecord {
        let mut r = SharedRecord::new("lineage-x");
        r.lineage.serial = 7;
        let mut c = machine("c", Some(2), Some(3));
        c.drift = Some(3);
        r.machines.insert("c".into(), c);
        r.machines.insert("a".into(), machine("a", None, Some(100)));
        r.machines
            .insert("b".into(), machine("b", Some(25), Some(30)));
        r.machines.insert("d".into(), machine("d", None, None));
        r.machines
            .insert("r".into(), machine("r", Some(1), Some(1)));
        r.retire("r");
        r.machines
            .insert("r".into(), machine("r", Some(1), Some(1)));
        r.lineage.machines = vec!["a".into(), "b".into(), "c".into(), "d".into()];
        r
    }

    fn lock_by(id: &str, op: &str, minutes: i64) -> RemoteHolder {
        let info = LockInfo {
            id: "lock-1".into(),
            lock_type: LockType::Hybrid,
            operation: op.into(),
            machine: LockHolder {
                id: id.into(),
                hostname: format!("host-{id}"),
                pid: 42,
                user: "sam".into(),
            },
            created_at: now() - chrono::TimeDelta::minutes(minutes),
            expected_duration_seconds: 300,
            reason: None,
            state_serial: None,
            boot_id: None,
            pid_start_time: None,
        };
        let bytes = serde_json::to_vec(&info).unwrap();
        RemoteHolder::from_bytes(Revision::new("c0ffee"), &bytes)
    }

    #[test]
    fn rows_are_every_unretired_machine_sorted_by_id_with_their_fields() {
        let v = status(&record(), Source::Remote, LockSeen::Free, now(), "a");
        let ids: Vec<&str> = v.machines.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c", "d"]);
        let c = &v.machines[2];
        assert_eq!(c.hostname, "c");
        assert_eq!(c.active_profile.as_deref(), Some("c-profile"));
        assert_eq!(c.config_path.as_deref(), Some("/home/c/dots"));
        assert_eq!((c.os.as_str(), c.arch.as_str()), ("linux", "x86_64"));
        assert_eq!(c.user, "sam");
        assert_eq!(c.last_apply, hours_ago(2));
        assert_eq!(c.last_sync, hours_ago(3));
        assert_eq!(c.last_seen, hours_ago(2));
        assert_eq!(c.drift, Some(3));
        assert_eq!(v.machines[1].drift, None, "a record without a count");
        assert_eq!((v.lineage_id.as_str(), v.serial), ("lineage-x", 7));
        assert_eq!(v.source, Source::Remote);
        assert!(v.lock_known && v.lock.is_none());
        let mine: Vec<bool> = v.machines.iter().map(|m| m.this_machine).collect();
        assert_eq!(mine, [true, false, false, false]);
    }

    #[test]
    fn offline_is_the_24_hour_rule_never_seen_counts_this_machine_never_does() {
        let v = status(&record(), Source::Local, LockSeen::Unknown, now(), "a");
        let offline: Vec<(&str, bool)> = v
            .machines
            .iter()
            .map(|m| (m.id.as_str(), m.offline))
            .collect();
        // a: this machine (unseen for 100 h in the record, but running now);
        // b: last seen 25 h ago (its apply); c: 2 h; d: never.
        assert_eq!(
            offline,
            [("a", false), ("b", true), ("c", false), ("d", true)]
        );
        // The same rule as `offline_machines`, where both judge.
        let rule: Vec<String> = offline_machines(&record(), now(), "a")
            .into_iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(rule, ["b"]);
        // Just under 24 hours is online.
        let early = now() - chrono::TimeDelta::hours(2);
        let v = status(&record(), Source::Local, LockSeen::Unknown, early, "a");
        assert!(!v.machines[1].offline);
        assert!(!v.lock_known);
    }

    #[test]
    fn the_lock_holder_is_marked_on_its_row_and_named_for_the_lineage() {
        let holder = lock_by("c", "apply", 5);
        let v = status(
            &record(),
            Source::Remote,
            LockSeen::Held(std::slice::from_ref(&holder)),
            now(),
            "a",
        );
        let held: Vec<(&str, Option<&HeldLock>)> = v
            .machines
            .iter()
            .map(|m| (m.id.as_str(), m.lock.as_ref()))
            .filter(|(_, l)| l.is_some())
            .collect();
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].0, "c");
        let lock = held[0].1.unwrap();
        assert_eq!(lock.operation, "apply");
        assert_eq!(lock.age_seconds, 300);
        let lineage = v.lock.unwrap();
        assert_eq!(lineage.machine_id.as_deref(), Some("c"));
        assert_eq!(lineage.hostname.as_deref(), Some("host-c"));
        assert_eq!(lineage.operation.as_deref(), Some("apply"));
        assert_eq!(lineage.age_seconds, Some(300));

        // A lock of a machine the record does not know: no row holds it,
        // the lineage's lock still names it.
        let stranger = lock_by("zz", "sync", 1);
        let v = status(
            &record(),
            Source::Remote,
            std::slice::from_ref(&stranger).into(),
            now(),
            "a",
        );
        assert!(v.machines.iter().all(|m| m.lock.is_none()));
        assert_eq!(v.lock.unwrap().machine_id.as_deref(), Some("zz"));

        // Unreadable content: held, by nobody known.
        let garbled = RemoteHolder::from_bytes(Revision::new("bad"), b"not json");
        let v = status(
            &record(),
            Source::Remote,
            LockSeen::Held(std::slice::from_ref(&garbled)),
            now(),
            "a",
        );
        let lineage = v.lock.unwrap();
        assert_eq!(lineage.machine_id, None);
        assert_eq!(lineage.age_seconds, None);
        assert!(v.machines.iter().all(|m| m.lock.is_none()));
    }

    #[test]
    fn machine_locks_mark_their_rows_and_only_the_lineage_lock_is_the_lineages() {
        let mut b = lock_by("b", "sync", 2);
        b.scope = LockScope::Machine("b".into());
        let mut c = lock_by("c", "apply", 5);
        c.scope = LockScope::Machine("c".into());
        let both = [b, c];
        let v = status(&record(), Source::Remote, both[..].into(), now(), "a");
        let held: Vec<(&str, &str)> = v
            .machines
            .iter()
            .filter_map(|m| Some((m.id.as_str(), m.lock.as_ref()?.operation.as_str())))
            .collect();
        assert_eq!(held, [("b", "sync"), ("c", "apply")]);
        assert!(v.lock_known);
        assert!(v.lock.is_none(), "no lineage-wide lock is held");
        let none: [RemoteHolder; 0] = [];
        assert!(matches!(LockSeen::from(&none[..]), LockSeen::Free));
    }

    #[test]
    fn the_view_reads_the_remote_when_reached_else_the_committed_copy() {
        let remote = MemoryRemote::new();
        let a = remote.clone_at(std::path::Path::new("/a"));
        assert!(read_record(&a, true).unwrap().is_none());
        let serial_of = |reached| {
            let (r, source) = read_record(&a, reached).unwrap().unwrap();
            (r.lineage.serial, source)
        };
        let mut record = SharedRecord::new("lineage-x");
        record.lineage.serial = 3;
        a.write_working(&record).unwrap();
        a.commit(&[], "three").unwrap();
        // The remote has no record yet: this clone's committed copy.
        assert_eq!(serial_of(true), (3, Source::Local));
        a.publish(None).unwrap();
        assert_eq!(serial_of(true), (3, Source::Remote));
        // Committed here, not published: the remote's copy when it was
        // reached, this clone's when it was not.
        record.lineage.serial = 5;
        a.write_working(&record).unwrap();
        a.commit(&[], "five").unwrap();
        assert_eq!(serial_of(true), (3, Source::Remote));
        assert_eq!(serial_of(false), (5, Source::Local));
    }
}
