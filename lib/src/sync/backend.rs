//! The seam between the sync logic and where the shared record lives: three
//! small traits a backend implements (git today, memory in tests), and the
//! plain data they pass around. Nothing here knows how a backend works.
//!
//! - [`RecordStore`]: the copies of the shared record (local, remote, base,
//!   working) and publishing the local copy with compare-and-set.
//! - [`RemoteLocker`]: the remote half of a `hybrid` lock.
//! - [`ConfigSource`]: the config tree itself: refresh it from the remote,
//!   update it to the remote's, commit files.
//!
//! [`Backend`] is all of them; every backend runs the conformance suite in
//! `lib/tests/sync_conformance.rs`.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::SyncError;
use super::shared::SharedRecord;
use crate::lock::LockInfo;

/// An opaque version of what a backend stores (a git commit id, a counter).
/// Only equality means anything.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Revision(String);

impl Revision {
    /// Wraps a backend's token.
    pub fn new(token: impl Into<String>) -> Self {
        Revision(token.into())
    }

    /// The token as the backend wrote it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Revision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The three copies a sync compares, and their revisions.
#[derive(Debug, Clone, Default)]
pub struct Records {
    /// This machine's committed copy (`None`: nothing committed, or no record).
    pub local: Option<SharedRecord>,
    /// The remote's copy as of the last refresh (`None`: none yet).
    pub remote: Option<SharedRecord>,
    /// The copy at the common base of the two.
    pub base: Option<SharedRecord>,
    /// The local copy's revision.
    pub local_rev: Option<Revision>,
    /// The remote's revision (after the last refresh).
    pub remote_rev: Option<Revision>,
    /// The common base's revision.
    pub base_rev: Option<Revision>,
}

/// What [`RecordStore::publish`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// The remote now holds our local copy, at this revision.
    Pushed(Revision),
    /// The remote already had everything the local copy has.
    NothingNew,
}

/// The shared record's copies, and publishing this machine's.
pub trait RecordStore {
    /// The local, remote and base copies (the remote as of the last
    /// [`ConfigSource::refresh`]).
    fn records(&self) -> Result<Records, SyncError>;

    /// The working copy, what the next commit takes (`None`: there is none).
    fn read_working(&self) -> Result<Option<SharedRecord>, SyncError>;

    /// Replaces the working copy atomically.
    fn write_working(&self, record: &SharedRecord) -> Result<(), SyncError>;

    /// The remote's revision as of the last refresh (`None`: it has none).
    fn remote_revision(&self) -> Result<Option<Revision>, SyncError>;

    /// Whether the remote has revisions the local copy lacks.
    fn remote_has_news(&self, records: &Records) -> Result<bool, SyncError>;

    /// Publishes the local copy if the remote lacks it, only if the remote is
    /// still at `expected` (`None`: it must have nothing). A stale `expected`
    /// is [`SyncError::PublishRejected`] and the remote is left as it was.
    fn publish(&self, expected: Option<&Revision>) -> Result<Published, SyncError>;

    /// Who last changed machine `me`'s profile or config path in the
    /// remote's copy since the common base (a person, a host, a revision),
    /// when the backend can tell; `None` otherwise.
    fn own_entry_changed_by(
        &self,
        records: &Records,
        me: &str,
    ) -> Result<Option<String>, SyncError> {
        let _ = (records, me);
        Ok(None)
    }
}

/// Which remote lock a command takes. A machine's own writes (apply, sync,
/// commit) take its machine's lock, so machines do not wait for each other;
/// a write that touches other machines' parts (remove-machine) takes the
/// lineage's, which waits for every machine lock and keeps all of them out.
/// A backend with one lock for the whole lineage (git) takes that one for
/// either.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockScope {
    /// The lock of the machine with this id.
    Machine(String),
    /// The lineage-wide lock.
    Lineage,
}

/// Someone's remote lock, as read.
#[derive(Debug, Clone)]
pub struct RemoteHolder {
    /// The lock's revision on the remote.
    pub revision: Revision,
    /// The holder, when the content is readable.
    pub info: Option<LockInfo>,
    /// The raw content, for the unreadable case.
    pub raw: String,
    /// Which lock it is: [`LockScope::Lineage`] for a backend's only lock.
    pub scope: LockScope,
    /// Where on the remote it lives, when that is not the locker's own
    /// place (a machine's lock seen by a lineage-wide locker).
    pub place: Option<String>,
}

impl RemoteHolder {
    /// Reads a holder from the lock's content.
    pub fn from_bytes(revision: Revision, bytes: &[u8]) -> Self {
        RemoteHolder {
            revision,
            info: serde_json::from_slice(bytes).ok(),
            raw: String::from_utf8_lossy(bytes).into_owned(),
            scope: LockScope::Lineage,
            place: None,
        }
    }

    /// How old the lock is (`None`: unreadable).
    pub fn age(&self, now: DateTime<Utc>) -> Option<chrono::Duration> {
        self.info.as_ref().map(|i| now - i.created_at)
    }

    /// Whether it is at least `ttl_secs` old (an unreadable one never is:
    /// it is never broken on a guess).
    pub fn expired(&self, now: DateTime<Utc>, ttl_secs: u64) -> bool {
        self.age(now)
            .is_some_and(|age| age.num_seconds() >= 0 && age.num_seconds() as u64 >= ttl_secs)
    }
}

/// Why a remote lock someone else took may be broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BreakReason {
    /// It is at least as old as the TTL.
    Expired,
    /// Its holder is a process of the taking machine, proven dead (the
    /// proof, in words: see [`crate::lock::proven_dead_here`]).
    DeadHere(String),
    /// It is at least [`super::shared::OFFLINE_AFTER_HOURS`] old: its
    /// machine has not been seen since (a machine cannot publish while its
    /// own lock is held), so it counts as offline, whatever the TTL.
    Offline,
}

impl RemoteHolder {
    /// Whether `taker` may break this lock, and why: its holder is a dead
    /// process of the taker's own machine, or it is at least `ttl_secs` old,
    /// or its machine is offline (unseen for 24 hours).
    /// An unreadable lock never may (it is never broken on a guess).
    pub fn breakable(
        &self,
        now: DateTime<Utc>,
        ttl_secs: u64,
        taker: &LockInfo,
    ) -> Option<BreakReason> {
        let info = self.info.as_ref()?;
        if let Some(proof) = crate::lock::proven_dead_here(info, taker) {
            return Some(BreakReason::DeadHere(proof));
        }
        if self.expired(now, ttl_secs) {
            return Some(BreakReason::Expired);
        }
        let offline_secs = super::shared::OFFLINE_AFTER_HOURS as u64 * 3600;
        self.expired(now, offline_secs)
            .then_some(BreakReason::Offline)
    }
}

/// A remote lock this process holds: the token its release is leased on.
#[derive(Debug, Clone)]
pub struct HeldRemote {
    /// Where it is held (the remote's name).
    pub remote: String,
    /// Our lock's revision.
    pub revision: Revision,
}

/// What taking the remote lock did.
#[derive(Debug)]
pub enum Acquired {
    /// Taken; nobody held it.
    Taken(HeldRemote),
    /// Taken by breaking a lock older than the TTL, or one a dead process
    /// of this machine left.
    Broke {
        /// Ours now.
        lock: HeldRemote,
        /// The one that was broken.
        previous: RemoteHolder,
        /// Why it could be broken.
        why: BreakReason,
    },
    /// Someone else holds it and it is younger than the TTL (or unreadable).
    Held(RemoteHolder),
}

/// What releasing our remote lock did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    /// It was ours and is gone.
    Done,
    /// It was no longer ours (someone broke it): left alone.
    Lost,
}

/// The remote half of a `hybrid` lock. Liveness cannot be proven across
/// machines, so a lock older than the TTL may be broken.
pub trait RemoteLocker: Send {
    /// The remote's name, for messages.
    fn remote(&self) -> &str;

    /// Where on the remote the lock lives (e.g. a ref), for messages.
    fn place(&self) -> &str;

    /// Where `holder`'s lock lives: its own place when it has one (a
    /// machine's lock seen by a lineage-wide locker), else this locker's.
    fn place_of(&self, holder: &RemoteHolder) -> String {
        holder
            .place
            .clone()
            .unwrap_or_else(|| self.place().to_string())
    }

    /// Takes the lock for `info`, breaking one at least `ttl_secs` old or
    /// one a dead process of this machine left ([`RemoteHolder::breakable`]).
    fn acquire(&self, info: &LockInfo, ttl_secs: u64) -> Result<Acquired, SyncError>;

    /// Who holds the lock, or one that keeps it from being taken (`None`:
    /// nobody). A lineage-wide locker names the lineage's holder first,
    /// then a machine's.
    fn inspect(&self) -> Result<Option<RemoteHolder>, SyncError>;

    /// Every lock held in the lineage, the lineage-wide one first (a
    /// backend with one lock: that one).
    fn holders(&self) -> Result<Vec<RemoteHolder>, SyncError> {
        Ok(self.inspect()?.into_iter().collect())
    }

    /// Releases our lock, never someone else's.
    fn release(&self, lock: &HeldRemote) -> Result<Released, SyncError>;

    /// Removes every lock that keeps this one from being taken, and this
    /// one (`stead state unlock --force`); lineage-wide, that is every lock
    /// of the lineage. Returns the holders removed.
    fn force_unlock(&self) -> Result<Vec<RemoteHolder>, SyncError>;

    /// Removes the lock `holder` as [`RemoteLocker::holders`] read it, if
    /// it is still that one (`stead state unlock --force --machine`);
    /// `false`: it was already gone or replaced, and nothing was removed.
    fn force_remove(&self, holder: &RemoteHolder) -> Result<bool, SyncError>;

    /// Whether a lock here is bound to a lease its holder keeps alive
    /// (etcd): it ends with its holder and is never broken for its age.
    fn leased(&self) -> bool {
        false
    }

    /// Whether this is one machine's own lock that other machines do not
    /// wait for (etcd); `false` for a lock the whole lineage shares.
    fn per_machine(&self) -> bool {
        false
    }

    /// For a lock bound to a lease its holder keeps alive (etcd): the
    /// seconds the lease has left. `None`: the lock has no lease (it may be
    /// broken for its age, [`RemoteHolder::breakable`]).
    fn lease_left(&self, holder: &RemoteHolder) -> Option<u64> {
        let _ = holder;
        None
    }
}

/// What [`ConfigSource::update`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// The tree holds the remote's news (or had them already).
    Clean,
    /// The update stopped on conflicts in these files and waits for the user.
    Conflicts(Vec<String>),
}

/// How a stopped update is explained: what the backend calls it, and what
/// the user runs to finish or undo it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoppedUpdate {
    /// The line above the conflicted files.
    pub heading: String,
    /// How to finish (before the rerun command).
    pub finish: String,
    /// How to go back instead.
    pub undo: String,
}

/// How a file of the config tree stands against the tree's last commit
/// ([`ConfigSource::source_status`]): whether writing over it could lose
/// something the user has not committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceStatus {
    /// As last committed (or absent and never committed): nothing to lose.
    Committed,
    /// Changed since the last commit (in the tree, or staged).
    Modified,
    /// In the tree but never committed.
    Untracked,
    /// A symbolic link, or under one: writing a file there would replace
    /// the link (or write outside what the tree tracks).
    Symlink,
}

/// The config tree: where the manifest and the record's working copy live.
pub trait ConfigSource {
    /// The tree's directory, for messages.
    fn root(&self) -> &Path;

    /// Whether the tree is files on this machine's disk under [`ConfigSource::root`]
    /// (the lineage's secrets and recipients are written there); a backend
    /// that only models a tree (tests) says no.
    fn tree_on_disk(&self) -> bool {
        true
    }

    /// Where it syncs with (e.g. `origin/main`), for messages.
    fn remote_branch(&self) -> String;

    /// Fetches the remote's news without touching the tree.
    fn refresh(&self) -> Result<(), SyncError>;

    /// Brings the remote's news into the tree (`message` names a merge).
    fn update(&self, message: &str) -> Result<Update, SyncError>;

    /// Whether an update stopped on conflicts is still unfinished.
    fn update_in_progress(&self) -> Result<bool, SyncError>;

    /// The files an unfinished update left conflicted (`None`: the backend
    /// cannot tell). An empty list is an update that was interrupted (its
    /// process killed) rather than stopped on conflicts: nothing to edit.
    fn conflicted_files(&self) -> Result<Option<Vec<String>>, SyncError> {
        Ok(None)
    }

    /// Whether the record's working copy has no uncommitted change.
    fn record_is_clean(&self) -> Result<bool, SyncError>;

    /// How `path` (relative to the root) stands against the last commit,
    /// asked before a file of the tree is overwritten.
    fn source_status(&self, path: &str) -> Result<SourceStatus, SyncError>;

    /// Commits the working copy of the record and `extra` files (`None`:
    /// nothing changed).
    fn commit(&self, extra: &[&str], message: &str) -> Result<Option<Revision>, SyncError>;

    /// Sets up what keeps the record from being text-merged (returns
    /// whether a file of the tree changed).
    fn install_merge_driver(&self, stead_exe: &Path) -> Result<bool, SyncError>;

    /// What to tell the user about an update stopped on conflicts.
    fn stopped_update(&self) -> StoppedUpdate;

    /// The words for an update that went through.
    fn updated_message(&self) -> String;
}

/// A whole backend: its record store, its config source and, when it has a
/// remote, its remote lock.
pub trait Backend: RecordStore + ConfigSource {
    /// The remote lock for `scope` (`None`: no remote to lock).
    fn locker(&self, scope: &LockScope) -> Option<Box<dyn RemoteLocker>>;

    /// Fails unless there is a remote to sync with.
    fn require_remote(&self) -> Result<(), SyncError>;
}
