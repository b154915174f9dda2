//! The git backend: the sync traits over a clone of the config repo. The
//! record store is `.stead/state.json` at HEAD, at the upstream's tracking
//! ref and at their merge base; publishing is a push; the remote lock is
//! the `refs/stead/lock` ref ([`super::remote_lock`]).

use std::path::Path;
use std::sync::OnceLock;

use super::SyncError;
use super::backend::{
    Acquired, Backend, ConfigSource, HeldRemote, LockScope, Published, RecordStore, Records,
    Released, RemoteHolder, RemoteLocker, Revision, SourceStatus, StoppedUpdate, Update,
};
use super::git::{Git, GitError, LeaseOutcome, PushOutcome, Upstream};
use super::shared::{SHARED_RECORD_PATH, SharedRecord};
use super::{remote_lock, repo};
use crate::lock::LockInfo;

/// A clone of the config repo and the upstream it syncs with.
#[derive(Debug)]
pub struct GitBackend {
    git: Git,
    /// Read on first use: commands that never sync never ask.
    up: OnceLock<Option<Upstream>>,
}

impl GitBackend {
    /// The backend over an opened work tree.
    pub fn new(git: Git) -> Self {
        GitBackend {
            git,
            up: OnceLock::new(),
        }
    }

    /// Opens the work tree containing `dir`.
    pub fn open(dir: &Path) -> Result<Self, SyncError> {
        Self::open_with(dir, &super::Options::default())
    }

    /// Opens the work tree containing `dir` with `options` (network
    /// timeout, trace).
    pub fn open_with(dir: &Path, options: &super::Options) -> Result<Self, SyncError> {
        match Git::open(dir) {
            Ok(git) => Ok(GitBackend::new(options.apply(git))),
            Err(GitError::NotARepo { .. }) => Err(SyncError::NotARepo {
                dir: dir.to_path_buf(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// The clone at `dest` if it is one of `url` (an error if it is a clone
    /// of something else), else a fresh clone there. Returns whether it cloned.
    ///
    /// A `dest` that does not exist yet inside a clone of `url` names that
    /// clone: cloning again there would nest a second copy of the same repo.
    /// (Inside a repo of anything else, the clone is made as asked.)
    pub fn open_or_clone(dest: &Path, url: &str) -> Result<(Self, bool), SyncError> {
        Self::open_or_clone_with(dest, url, &super::Options::default())
    }

    /// [`GitBackend::open_or_clone`] with `options` (see
    /// [`GitBackend::open_with`]).
    pub fn open_or_clone_with(
        dest: &Path,
        url: &str,
        options: &super::Options,
    ) -> Result<(Self, bool), SyncError> {
        if !dest.exists()
            && let Some(above) = dest.ancestors().skip(1).find(|a| a.is_dir())
            && let Some(found) = Self::find_clone_with(above, url, options)
        {
            return Ok((found, false));
        }
        if dest.exists() {
            if let Ok(git) = Git::open(dest) {
                let git = options.apply(git);
                return Self::existing_clone(git, dest, url).map(|b| (b, false));
            }
            let empty = std::fs::read_dir(dest)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
            if !empty {
                return Err(SyncError::NotAClone {
                    dest: dest.to_path_buf(),
                });
            }
        }
        match Git::clone_repo_traced(
            url,
            dest,
            Vec::new(),
            options.network_timeout,
            options.trace.clone(),
        ) {
            Ok(git) => Ok((GitBackend::new(git), true)),
            Err(GitError::Unreachable { reason, .. }) => {
                Err(SyncError::CloneUnreachable { reason })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The clone of `url` whose work tree contains `dir`, if it is one, its
    /// git calls run with `options`.
    pub fn find_clone_with(dir: &Path, url: &str, options: &super::Options) -> Option<Self> {
        let git = options.apply(Git::open(dir).ok()?);
        Self::existing_clone(git, dir, url).ok()
    }

    /// `git` if its remote is `url`.
    fn existing_clone(git: Git, dest: &Path, url: &str) -> Result<Self, SyncError> {
        let remote = git
            .upstream()?
            .map(|u| u.remote)
            .unwrap_or_else(|| "origin".to_string());
        match git.remote_url(&remote)? {
            Some(u) if same_url(&u, url) => Ok(GitBackend::new(git)),
            Some(found) => Err(SyncError::OtherClone {
                dest: dest.to_path_buf(),
                found,
                url: url.to_string(),
                remote,
            }),
            None => Err(SyncError::NoSuchRemote {
                dest: dest.to_path_buf(),
                remote,
                url: url.to_string(),
            }),
        }
    }

    /// The git work tree.
    pub fn git(&self) -> &Git {
        &self.git
    }

    /// The upstream, read once (`None`: detached, or no remote).
    fn upstream(&self) -> Result<Option<&Upstream>, SyncError> {
        if let Some(up) = self.up.get() {
            return Ok(up.as_ref());
        }
        let up = self.git.upstream()?;
        Ok(self.up.get_or_init(|| up).as_ref())
    }

    /// The upstream, which a sync needs.
    fn up(&self) -> Result<&Upstream, SyncError> {
        self.upstream()?.ok_or_else(|| SyncError::NoRemote {
            root: self.git.root().to_path_buf(),
        })
    }

    /// The commit the tracking ref names (`None`: not fetched yet).
    fn tracking_commit(&self, up: &Upstream) -> Result<Option<String>, SyncError> {
        repo::tracking_commit(&self.git, up)
    }
}

/// URLs equal, or local paths (plain or `file://`) naming the same directory.
fn same_url(a: &str, b: &str) -> bool {
    if a == b || a.trim_end_matches('/') == b.trim_end_matches('/') {
        return true;
    }
    let local = |u: &str| Path::new(u.strip_prefix("file://").unwrap_or(u)).canonicalize();
    match (local(a), local(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

impl RecordStore for GitBackend {
    fn records(&self) -> Result<Records, SyncError> {
        repo::read_records(&self.git, self.up()?)
    }

    fn read_working(&self) -> Result<Option<SharedRecord>, SyncError> {
        repo::read_working(&self.git)
    }

    fn write_working(&self, record: &SharedRecord) -> Result<(), SyncError> {
        repo::write_working(&self.git, record)
    }

    fn remote_revision(&self) -> Result<Option<Revision>, SyncError> {
        Ok(self.tracking_commit(self.up()?)?.map(Revision::new))
    }

    fn remote_has_news(&self, records: &Records) -> Result<bool, SyncError> {
        repo::remote_has_news(&self.git, records)
    }

    /// Pushes HEAD when the remote branch lacks it. The lease is checked
    /// against what was last fetched, and git itself refuses a push that
    /// would drop commits the remote gained since: either way nothing is
    /// written.
    fn publish(&self, expected: Option<&Revision>) -> Result<Published, SyncError> {
        let up = self.up()?;
        let Some(head) = self.git.head()? else {
            return Ok(Published::NothingNew);
        };
        let current = self.tracking_commit(up)?;
        if let Some(remote) = &current
            && self.git.is_ancestor(&head, remote)?
        {
            return Ok(Published::NothingNew);
        }
        let root = self.git.root().to_path_buf();
        if current.as_deref() != expected.map(Revision::as_str) {
            return Err(SyncError::PublishRejected {
                reason: "stale info".to_string(),
                root,
            });
        }
        match self.git.push(up)? {
            PushOutcome::Pushed => Ok(Published::Pushed(Revision::new(head))),
            PushOutcome::Rejected(reason) => Err(SyncError::PublishRejected { reason, root }),
        }
    }
    fn own_entry_changed_by(
        &self,
        records: &Records,
        me: &str,
    ) -> Result<Option<String>, SyncError> {
        repo::own_entry_changed_by(&self.git, records, me)
    }
}

impl ConfigSource for GitBackend {
    fn root(&self) -> &Path {
        self.git.root()
    }

    fn remote_branch(&self) -> String {
        match self.upstream() {
            Ok(Some(up)) => format!("{}/{}", up.remote, up.branch),
            _ => "(no remote)".to_string(),
        }
    }

    fn refresh(&self) -> Result<(), SyncError> {
        Ok(self.git.fetch(&self.up()?.remote)?)
    }

    fn update(&self, message: &str) -> Result<Update, SyncError> {
        repo::merge_upstream(&self.git, self.up()?, message)
    }

    fn update_in_progress(&self) -> Result<bool, SyncError> {
        Ok(self.git.rev_exists("MERGE_HEAD")?)
    }

    fn conflicted_files(&self) -> Result<Option<Vec<String>>, SyncError> {
        Ok(Some(self.git.unmerged_paths()?))
    }

    fn record_is_clean(&self) -> Result<bool, SyncError> {
        Ok(self.git.is_clean(&[SHARED_RECORD_PATH])?)
    }

    fn source_status(&self, path: &str) -> Result<SourceStatus, SyncError> {
        repo::source_status(&self.git, path)
    }

    /// Stages the record (and `.gitattributes`, which routes it to the
    /// merge driver) with `extra`, and commits.
    fn commit(&self, extra: &[&str], message: &str) -> Result<Option<Revision>, SyncError> {
        let mut paths = vec![SHARED_RECORD_PATH];
        if self.git.root().join(".gitattributes").exists() {
            paths.push(".gitattributes");
        }
        paths.extend_from_slice(extra);
        self.git.add(&paths)?;
        Ok(self.git.commit(message)?.map(Revision::new))
    }

    fn install_merge_driver(&self, stead_exe: &Path) -> Result<bool, SyncError> {
        repo::install_merge_driver(&self.git, stead_exe)
    }

    fn stopped_update(&self) -> StoppedUpdate {
        repo::stopped_merge()
    }

    fn updated_message(&self) -> String {
        "Git pull completed successfully!".to_string()
    }
}

impl Backend for GitBackend {
    /// One lock for the whole lineage (a ref), whatever the scope: pushes
    /// to one branch are taken in turn anyway.
    fn locker(&self, _scope: &LockScope) -> Option<Box<dyn RemoteLocker>> {
        let up = self.upstream().ok()??;
        Some(Box::new(GitLocker {
            git: self.git.clone(),
            remote: up.remote.clone(),
        }))
    }

    fn require_remote(&self) -> Result<(), SyncError> {
        self.up().map(|_| ())
    }
}

/// The remote lock ref on one remote.
#[derive(Debug, Clone)]
pub struct GitLocker {
    git: Git,
    remote: String,
}

impl GitLocker {
    /// The lock on `remote` of `git`'s repo.
    pub fn new(git: Git, remote: &str) -> Self {
        GitLocker {
            git,
            remote: remote.to_string(),
        }
    }
}

impl RemoteLocker for GitLocker {
    fn remote(&self) -> &str {
        &self.remote
    }

    fn place(&self) -> &str {
        remote_lock::LOCK_REF
    }

    fn acquire(&self, info: &LockInfo, ttl_secs: u64) -> Result<Acquired, SyncError> {
        Ok(remote_lock::acquire(
            &self.git,
            &self.remote,
            info,
            ttl_secs,
        )?)
    }

    fn inspect(&self) -> Result<Option<RemoteHolder>, SyncError> {
        Ok(remote_lock::read(&self.git, &self.remote)?)
    }

    fn release(&self, lock: &HeldRemote) -> Result<Released, SyncError> {
        Ok(match remote_lock::release(&self.git, lock)? {
            LeaseOutcome::Done => Released::Done,
            LeaseOutcome::Lost => Released::Lost,
        })
    }

    fn force_remove(&self, holder: &RemoteHolder) -> Result<bool, SyncError> {
        Ok(self.git.remote_ref_delete(
            &self.remote,
            remote_lock::LOCK_REF,
            holder.revision.as_str(),
        )? == LeaseOutcome::Done)
    }

    fn force_unlock(&self) -> Result<Vec<RemoteHolder>, SyncError> {
        Ok(remote_lock::force_remove(&self.git, &self.remote)?
            .into_iter()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::same_url;

    #[test]
    fn same_url_matches_file_urls_and_trailing_slashes_of_one_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_str().unwrap().to_string();
        assert!(same_url(&path, &format!("file://{path}")));
        assert!(same_url(&format!("{path}/"), &path));
        assert!(same_url("https://h/x.git", "https://h/x.git/"));
        assert!(!same_url(&path, "https://h/x.git"));
        assert!(!same_url(&path, &format!("{path}/missing")));
    }
}
