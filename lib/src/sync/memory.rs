//! An in-memory backend: a "remote" and any number of "clones" of it in one
//! process, with revisions as counters. It exists for tests and to prove
//! that the sync traits carry no git in them; it keeps nothing on disk.
//!
//! The model follows a version control system just enough: every commit
//! keeps the record and a map of files, with its parents; a clone has a
//! head, a tracking pointer (what the last refresh saw) and a working copy.
//! An update merges the record by the `--merge` rules (as git's merge
//! driver does) and the other files by a 3-way rule that stops on files
//! both sides changed differently.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::Utc;

use super::SyncError;
use super::backend::{
    Acquired, Backend, ConfigSource, HeldRemote, LockScope, Published, RecordStore, Records,
    Released, RemoteHolder, RemoteLocker, Revision, SourceStatus, StoppedUpdate, Update,
};
use super::shared::{self, SharedRecord, Strategy};
use crate::lock::LockInfo;

/// One commit: the record, the other files, and where it came from.
#[derive(Debug, Clone, Default)]
struct Commit {
    record: Option<SharedRecord>,
    files: BTreeMap<String, String>,
    parents: Vec<usize>,
}

/// Everything the remote and its clones share: the commits (ids are their
/// indexes), the remote's branch and its lock.
#[derive(Debug, Default)]
struct Server {
    commits: Vec<Commit>,
    head: Option<usize>,
    lock: Option<(Revision, Vec<u8>)>,
    lock_counter: u64,
    unreachable: bool,
}

impl Server {
    fn ancestors(&self, of: usize) -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![of];
        while let Some(c) = todo.pop() {
            if seen.insert(c)
                && let Some(commit) = self.commits.get(c)
            {
                todo.extend(&commit.parents);
            }
        }
        seen
    }

    fn is_ancestor(&self, a: usize, b: usize) -> bool {
        self.ancestors(b).contains(&a)
    }

    /// The newest common ancestor (commits only ever get higher ids).
    fn merge_base(&self, a: usize, b: usize) -> Option<usize> {
        let of_a = self.ancestors(a);
        self.ancestors(b).intersection(&of_a).max().copied()
    }

    fn commit(&self, id: Option<usize>) -> Option<&Commit> {
        id.and_then(|i| self.commits.get(i))
    }

    fn reach(&self, remote: &str) -> Result<(), SyncError> {
        if self.unreachable {
            return Err(SyncError::Unreachable {
                remote: remote.to_string(),
                reason: "the in-memory remote is switched off".to_string(),
            });
        }
        Ok(())
    }
}

fn rev(id: usize) -> Revision {
    Revision::new(format!("m{id}"))
}

fn id_of(revision: &Revision) -> Option<usize> {
    revision.as_str().strip_prefix('m')?.parse().ok()
}

/// The shared remote; [`MemoryRemote::clone_at`] makes clones of it.
#[derive(Debug, Clone, Default)]
pub struct MemoryRemote {
    server: Arc<Mutex<Server>>,
}

impl MemoryRemote {
    /// An empty remote.
    pub fn new() -> Self {
        MemoryRemote::default()
    }

    /// A clone of the remote's current branch, "checked out" at `root`
    /// (only a name for messages).
    pub fn clone_at(&self, root: &Path) -> MemoryBackend {
        let server = lock(&self.server);
        let head = server.head;
        let tip = server.commit(head).cloned().unwrap_or_default();
        drop(server);
        MemoryBackend {
            server: self.server.clone(),
            root: root.to_path_buf(),
            clone: Arc::new(Mutex::new(Checkout {
                head,
                tracking: head,
                working_record: tip.record,
                working_files: tip.files,
                merging: None,
            })),
        }
    }

    /// Makes every remote operation fail as unreachable (or work again).
    pub fn set_unreachable(&self, unreachable: bool) {
        lock(&self.server).unreachable = unreachable;
    }

    /// The remote branch's revision (`None`: nothing published yet).
    pub fn head(&self) -> Option<Revision> {
        lock(&self.server).head.map(rev)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in another test thread must not hide this one's result.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug)]
struct Checkout {
    head: Option<usize>,
    tracking: Option<usize>,
    working_record: Option<SharedRecord>,
    working_files: BTreeMap<String, String>,
    /// The commit being merged in while an update waits on conflicts.
    merging: Option<usize>,
}

/// One clone of a [`MemoryRemote`].
#[derive(Debug)]
pub struct MemoryBackend {
    server: Arc<Mutex<Server>>,
    root: PathBuf,
    clone: Arc<Mutex<Checkout>>,
}

impl MemoryBackend {
    /// Writes a file of the config tree (not the record).
    pub fn write_file(&self, path: &str, content: &str) {
        lock(&self.clone)
            .working_files
            .insert(path.to_string(), content.to_string());
    }

    /// A file of the config tree.
    pub fn read_file(&self, path: &str) -> Option<String> {
        lock(&self.clone).working_files.get(path).cloned()
    }

    /// Gives up an update stopped on conflicts, back to the head.
    pub fn abort_update(&self) {
        let server = lock(&self.server);
        let mut clone = lock(&self.clone);
        let tip = server.commit(clone.head).cloned().unwrap_or_default();
        clone.merging = None;
        clone.working_record = tip.record;
        clone.working_files = tip.files;
    }

    /// Merges `theirs` into the working copy of `clone` over `base`;
    /// returns the files both sides changed differently.
    fn merge_into(server: &Server, clone: &mut Checkout, theirs: usize) -> Vec<String> {
        let empty = Commit::default();
        let base = server
            .commit(clone.head.and_then(|h| server.merge_base(h, theirs)))
            .unwrap_or(&empty);
        let ours = server.commit(clone.head).unwrap_or(&empty);
        let their = server.commit(Some(theirs)).unwrap_or(&empty);
        let mut conflicts = Vec::new();
        let mut files = ours.files.clone();
        let names: BTreeSet<&String> = ours.files.keys().chain(their.files.keys()).collect();
        for name in names {
            let (b, o, t) = (
                base.files.get(name),
                ours.files.get(name),
                their.files.get(name),
            );
            match (o == b, t == b, o == t) {
                (_, _, true) | (true, true, _) | (false, true, _) => {}
                (true, false, _) => match t {
                    Some(t) => {
                        files.insert(name.clone(), t.clone());
                    }
                    None => {
                        files.remove(name);
                    }
                },
                (false, false, false) => conflicts.push(name.clone()),
            }
        }
        clone.working_files = files;
        clone.working_record = match (&ours.record, &their.record) {
            (Some(o), Some(t)) => Some(shared::merge(
                base.record.as_ref(),
                o,
                t,
                None,
                Strategy::Merge,
            )),
            (o, t) => o.clone().or_else(|| t.clone()),
        };
        conflicts
    }
}

impl RecordStore for MemoryBackend {
    fn records(&self) -> Result<Records, SyncError> {
        let server = lock(&self.server);
        let clone = lock(&self.clone);
        let base = match (clone.head, clone.tracking) {
            (Some(h), Some(t)) => server.merge_base(h, t),
            _ => None,
        };
        let record = |id: Option<usize>| server.commit(id).and_then(|c| c.record.clone());
        Ok(Records {
            local: record(clone.head),
            remote: record(clone.tracking),
            base: record(base),
            local_rev: clone.head.map(rev),
            remote_rev: clone.tracking.map(rev),
            base_rev: base.map(rev),
        })
    }

    fn read_working(&self) -> Result<Option<SharedRecord>, SyncError> {
        Ok(lock(&self.clone).working_record.clone())
    }

    fn write_working(&self, record: &SharedRecord) -> Result<(), SyncError> {
        lock(&self.clone).working_record = Some(record.clone());
        Ok(())
    }

    fn remote_revision(&self) -> Result<Option<Revision>, SyncError> {
        Ok(lock(&self.clone).tracking.map(rev))
    }

    fn remote_has_news(&self, records: &Records) -> Result<bool, SyncError> {
        let server = lock(&self.server);
        let id = |r: &Option<Revision>| r.as_ref().and_then(id_of);
        Ok(match (id(&records.remote_rev), id(&records.local_rev)) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(r), Some(h)) => !server.is_ancestor(r, h),
        })
    }

    fn publish(&self, expected: Option<&Revision>) -> Result<Published, SyncError> {
        let mut server = lock(&self.server);
        server.reach("memory")?;
        let mut clone = lock(&self.clone);
        let Some(head) = clone.head else {
            return Ok(Published::NothingNew);
        };
        if let Some(remote) = server.head
            && server.is_ancestor(head, remote)
        {
            return Ok(Published::NothingNew);
        }
        let rejected = |reason: &str| SyncError::PublishRejected {
            reason: reason.to_string(),
            root: self.root.clone(),
        };
        if server.head.map(rev).as_ref() != expected {
            return Err(rejected("stale info"));
        }
        if let Some(remote) = server.head
            && !server.is_ancestor(remote, head)
        {
            return Err(rejected("non-fast-forward"));
        }
        server.head = Some(head);
        clone.tracking = Some(head);
        Ok(Published::Pushed(rev(head)))
    }
}

impl ConfigSource for MemoryBackend {
    fn root(&self) -> &Path {
        &self.root
    }

    /// Its root is a name, not a directory: nothing is written there.
    fn tree_on_disk(&self) -> bool {
        false
    }

    fn remote_branch(&self) -> String {
        "memory/main".to_string()
    }

    fn refresh(&self) -> Result<(), SyncError> {
        let server = lock(&self.server);
        server.reach("memory")?;
        lock(&self.clone).tracking = server.head;
        Ok(())
    }

    fn update(&self, _message: &str) -> Result<Update, SyncError> {
        let server = lock(&self.server);
        let mut clone = lock(&self.clone);
        let Some(theirs) = clone.tracking else {
            return Ok(Update::Clean);
        };
        match clone.head {
            Some(h) if server.is_ancestor(theirs, h) => return Ok(Update::Clean),
            Some(h) if !server.is_ancestor(h, theirs) => {}
            // Nothing of ours on top: take theirs as is (a fast-forward).
            _ => {
                let tip = server.commit(Some(theirs)).cloned().unwrap_or_default();
                clone.head = Some(theirs);
                clone.working_record = tip.record;
                clone.working_files = tip.files;
                return Ok(Update::Clean);
            }
        }
        let conflicts = Self::merge_into(&server, &mut clone, theirs);
        clone.merging = Some(theirs);
        if !conflicts.is_empty() {
            return Ok(Update::Conflicts(conflicts));
        }
        drop(clone);
        drop(server);
        self.commit(&[], "merge")?;
        Ok(Update::Clean)
    }

    fn update_in_progress(&self) -> Result<bool, SyncError> {
        Ok(lock(&self.clone).merging.is_some())
    }

    fn record_is_clean(&self) -> Result<bool, SyncError> {
        let server = lock(&self.server);
        let clone = lock(&self.clone);
        let head = server.commit(clone.head).and_then(|c| c.record.as_ref());
        Ok(head == clone.working_record.as_ref())
    }

    /// A file of the tree against the same file at HEAD (there are no links
    /// in memory).
    fn source_status(&self, path: &str) -> Result<SourceStatus, SyncError> {
        let server = lock(&self.server);
        let clone = lock(&self.clone);
        let head = server.commit(clone.head).and_then(|c| c.files.get(path));
        Ok(match (head, clone.working_files.get(path)) {
            (h, w) if h == w => SourceStatus::Committed,
            (None, Some(_)) => SourceStatus::Untracked,
            _ => SourceStatus::Modified,
        })
    }

    fn commit(&self, _extra: &[&str], _message: &str) -> Result<Option<Revision>, SyncError> {
        let mut server = lock(&self.server);
        let mut clone = lock(&self.clone);
        let next = Commit {
            record: clone.working_record.clone(),
            files: clone.working_files.clone(),
            parents: clone.head.into_iter().chain(clone.merging).collect(),
        };
        let unchanged = server
            .commit(clone.head)
            .is_some_and(|c| c.record == next.record && c.files == next.files);
        if unchanged && clone.merging.is_none() {
            return Ok(None);
        }
        server.commits.push(next);
        let id = server.commits.len() - 1;
        clone.head = Some(id);
        clone.merging = None;
        Ok(Some(rev(id)))
    }

    fn install_merge_driver(&self, _stead_exe: &Path) -> Result<bool, SyncError> {
        // The record is always merged by the rules here: nothing to install.
        Ok(false)
    }

    fn stopped_update(&self) -> StoppedUpdate {
        StoppedUpdate {
            heading: "The update stopped on conflicts in other files of the config tree:"
                .to_string(),
            finish: "edit the files, then commit them".to_string(),
            undo: "abort the update".to_string(),
        }
    }

    fn updated_message(&self) -> String {
        "Update completed successfully!".to_string()
    }
}

impl Backend for MemoryBackend {
    /// One lock for the whole lineage, as with git, whatever the scope.
    fn locker(&self, _scope: &LockScope) -> Option<Box<dyn RemoteLocker>> {
        Some(Box::new(MemoryLocker {
            server: self.server.clone(),
        }))
    }

    fn require_remote(&self) -> Result<(), SyncError> {
        Ok(())
    }
}

/// The lock slot of a [`MemoryRemote`].
#[derive(Debug, Clone)]
pub struct MemoryLocker {
    server: Arc<Mutex<Server>>,
}

impl MemoryLocker {
    fn holder(server: &Server) -> Option<RemoteHolder> {
        server
            .lock
            .as_ref()
            .map(|(r, bytes)| RemoteHolder::from_bytes(r.clone(), bytes))
    }
}

impl RemoteLocker for MemoryLocker {
    fn remote(&self) -> &str {
        "memory"
    }

    fn place(&self) -> &str {
        "lock"
    }

    fn acquire(&self, info: &LockInfo, ttl_secs: u64) -> Result<Acquired, SyncError> {
        let mut server = lock(&self.server);
        server.reach("memory")?;
        let previous = Self::holder(&server);
        let mut why = None;
        if let Some(holder) = &previous {
            why = holder.breakable(Utc::now(), ttl_secs, info);
            if why.is_none() {
                return Ok(Acquired::Held(holder.clone()));
            }
        }
        server.lock_counter += 1;
        let revision = Revision::new(format!("lock{}", server.lock_counter));
        let content = serde_json::to_vec_pretty(info).unwrap_or_default();
        server.lock = Some((revision.clone(), content));
        let lock = HeldRemote {
            remote: "memory".to_string(),
            revision,
        };
        Ok(match (previous, why) {
            (Some(previous), Some(why)) => Acquired::Broke {
                lock,
                previous,
                why,
            },
            _ => Acquired::Taken(lock),
        })
    }

    fn inspect(&self) -> Result<Option<RemoteHolder>, SyncError> {
        let server = lock(&self.server);
        server.reach("memory")?;
        Ok(Self::holder(&server))
    }

    fn release(&self, held: &HeldRemote) -> Result<Released, SyncError> {
        let mut server = lock(&self.server);
        server.reach("memory")?;
        if server.lock.as_ref().map(|(r, _)| r) != Some(&held.revision) {
            return Ok(Released::Lost);
        }
        server.lock = None;
        Ok(Released::Done)
    }

    fn force_remove(&self, holder: &RemoteHolder) -> Result<bool, SyncError> {
        let mut server = lock(&self.server);
        server.reach("memory")?;
        if server.lock.as_ref().map(|(r, _)| r) != Some(&holder.revision) {
            return Ok(false);
        }
        server.lock = None;
        Ok(true)
    }

    fn force_unlock(&self) -> Result<Vec<RemoteHolder>, SyncError> {
        let mut server = lock(&self.server);
        server.reach("memory")?;
        let holder = Self::holder(&server);
        server.lock = None;
        Ok(holder.into_iter().collect())
    }
}
