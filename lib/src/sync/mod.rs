//! Many machines: the shared record in the config repo, how two copies of it
//! are compared and merged, the backends that move it, and the session that
//! runs a sync from start to end.
//!
//! - [`shared`]: the record's schema, fold (local state into it), 3-way
//!   merge, conflict detection and field diff. Pure: no I/O.
//! - [`backend`]: the traits a backend implements (record store, remote
//!   lock, config source); see `docs/sync-backends.md`.
//! - [`session`]: compare, merge, settle and publish over any backend.
//! - [`hybrid`]: the local lock plus a backend's remote lock.
//! - [`merge_driver`]: what git's merge driver for the record runs.
//! - [`git_backend`]: the git implementation, over [`git`] (the `git`
//!   program), [`repo`] (the record's copies in a clone) and
//!   [`remote_lock`] (the lock ref).
//! - [`memory`]: an in-memory implementation, for tests.
//! - `etcd` (cargo feature `etcd`, on by default): the record and the lock
//!   in an etcd cluster, named by the tree's `.stead/etcd.toml`.

pub mod backend;
pub mod etcd;
pub mod git;
pub mod git_backend;
pub mod hybrid;
pub mod memory;
pub mod merge_driver;
pub mod remote_lock;
pub mod repo;
pub mod session;
pub mod shared;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::fsutil::FsError;
use crate::lock::{LockInfo, ago};

pub use backend::{
    Backend, ConfigSource, LockScope, RecordStore, RemoteLocker, Revision, SourceStatus,
};
pub use git::DEFAULT_NETWORK_TIMEOUT;

/// Opens the config repo at `dir` with the backend that serves it (git).
/// A repo without a remote opens too; [`Backend::require_remote`] says
/// whether it can sync.
pub fn open(dir: &Path) -> Result<Box<dyn Backend>, SyncError> {
    open_with(dir, &Options::default())
}

/// The `repo_url` an etcd lineage records in the state: `etcd:` and the
/// endpoints, then `?prefix=` and the prefix.
pub fn etcd_repo_url(endpoints: &[String], prefix: &str) -> String {
    format!("etcd:{}?prefix={prefix}", endpoints.join(","))
}

/// The `init` that joins the lineage a state's `repo_url` names again.
fn rejoin_command(repo_url: Option<&str>, root: &Path) -> String {
    let root = root.display();
    match repo_url.and_then(|u| u.strip_prefix("etcd:")) {
        Some(etcd) => match etcd.split_once("?prefix=") {
            Some((endpoints, prefix)) => {
                format!("stead init --etcd {endpoints} --prefix {prefix} --path {root}")
            }
            None => format!("stead init --etcd {etcd} --path {root}"),
        },
        None => format!(
            "stead init --repo {} --path {root}",
            repo_url.unwrap_or("URL")
        ),
    }
}

/// How a backend talks to its remote.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a call that talks to the remote (fetch, push, the remote
    /// lock) may take; past it the call fails as [`SyncError::Unreachable`],
    /// naming the timeout.
    pub network_timeout: Duration,
    /// Told every git command before it runs (`--verbose`).
    pub trace: Option<git::Trace>,
    /// How this machine authenticates to etcd (the etcd backend).
    pub etcd_access: etcd::Access,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            network_timeout: DEFAULT_NETWORK_TIMEOUT,
            trace: None,
            etcd_access: etcd::Access::default(),
        }
    }
}

impl Options {
    /// `git` with this network timeout and trace.
    pub fn apply(&self, git: git::Git) -> git::Git {
        let git = git.with_network_timeout(self.network_timeout);
        match &self.trace {
            Some(t) => git.with_trace(t.clone()),
            None => git,
        }
    }
}

/// [`open`] with `options` (network timeout, trace).
pub fn open_with(dir: &Path, options: &Options) -> Result<Box<dyn Backend>, SyncError> {
    #[cfg(feature = "etcd")]
    if let Some(backend) = etcd::open(dir, options)? {
        return Ok(Box::new(backend));
    }
    #[cfg(not(feature = "etcd"))]
    if dir.join(etcd::CONFIG_FILE).exists() {
        return Err(SyncError::EtcdConfig {
            path: dir.join(etcd::CONFIG_FILE),
            problem: "this stead was built without the etcd feature".to_string(),
        });
    }
    Ok(Box::new(git_backend::GitBackend::open_with(dir, options)?))
}

/// [`git_backend::GitBackend::open_or_clone`] with `options` (see [`open_with`]).
pub fn open_or_clone_with(
    dest: &Path,
    url: &str,
    options: &Options,
) -> Result<(Box<dyn Backend>, bool), SyncError> {
    let (backend, cloned) = git_backend::GitBackend::open_or_clone_with(dest, url, options)?;
    Ok((Box::new(backend), cloned))
}

/// The clone of `url` whose work tree contains `dir` (`None`: there is
/// none), its git calls run with `options` (see [`open_with`]).
pub fn find_clone_with(dir: &Path, url: &str, options: &Options) -> Option<Box<dyn Backend>> {
    let backend = git_backend::GitBackend::find_clone_with(dir, url, options)?;
    Some(Box::new(backend))
}

/// Why a sync step failed. Nothing half-done is left: the working copy of
/// the record is replaced atomically, and git's own state is reported as is.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// A git command failed.
    #[error(transparent)]
    Git(git::GitError),
    /// This machine's identity or a lineage secret could not be read or written.
    #[error(transparent)]
    Secret(#[from] crate::secret::SecretError),
    /// The remote cannot be reached (network, missing path, auth).
    #[error("cannot reach remote '{remote}': {reason}")]
    Unreachable {
        /// The remote's name or URL.
        remote: String,
        /// The backend's own reason.
        reason: String,
    },
    /// A command that must see the remote could not reach it.
    #[error(
        "Cannot reach remote repository: {reason}\n\
         Nothing was changed; this machine's record is safe here. Run the command again when the connection is restored."
    )]
    MustReach {
        /// Why.
        reason: String,
    },
    /// `init --repo` could not clone.
    #[error(
        "Cannot reach remote repository: {reason}\nNothing was created. Check the URL and your connection, then run init again."
    )]
    CloneUnreachable {
        /// Why.
        reason: String,
    },
    /// The config repo is not one a backend can sync.
    #[error(
        "the config repo {} is not a git repository, so there is nothing to sync with\n\
         Run 'stead init --repo URL' to clone your config repo and join its lineage.",
        .dir.display()
    )]
    NotARepo {
        /// The directory.
        dir: PathBuf,
    },
    /// The config repo has nowhere to sync with.
    #[error(
        "the config repo {} has no remote to sync with (or HEAD is detached)\n\
         Add one with 'git -C {} remote add origin URL', or check out a branch.",
        .root.display(),
        .root.display()
    )]
    NoRemote {
        /// The repo's root.
        root: PathBuf,
    },
    /// An update is unfinished: stopped on conflicts, or interrupted.
    #[error("{}", update_in_progress_message(.root, .conflicted.as_deref()))]
    UpdateInProgress {
        /// The repo's root.
        root: PathBuf,
        /// The files left conflicted (`None`: unknown; empty: none, the
        /// update was interrupted).
        conflicted: Option<Vec<String>>,
    },
    /// Uncommitted changes to files the remote's update would write.
    #[error(
        "the config repo {} has uncommitted changes to files the remote's update would overwrite:\n{}\n\
         Nothing was changed. Commit them ('stead commit -m MSG' for files stead manages, \
         or 'git -C {} commit -am MSG'), or set them aside with 'git -C {} stash -u' \
         (and 'git -C {} stash pop' after), then run the command again.",
        .root.display(),
        .files.iter().map(|f| format!("  {f}")).collect::<Vec<_>>().join("\n"),
        .root.display(),
        .root.display(),
        .root.display()
    )]
    UncommittedInTheWay {
        /// The repo's root.
        root: PathBuf,
        /// The files, relative to the root.
        files: Vec<String>,
    },
    /// The record's working copy has changes stead cannot commit for the user.
    #[error(
        "{} has changes that are not committed\n\
         Nothing was changed. Commit them ('stead commit -m MSG') or discard them \
         ('git -C {} checkout -- {}'), then run the command again.",
        .root.join(shared::SHARED_RECORD_PATH).display(),
        .root.display(),
        shared::SHARED_RECORD_PATH
    )]
    UncommittedRecord {
        /// The repo's root.
        root: PathBuf,
    },
    /// A file of the tree that stead was asked to overwrite holds changes
    /// that are not committed: the copy would destroy them.
    #[error("{}", source_uncommitted_message(.root, .path, .key, *.untracked))]
    SourceUncommitted {
        /// The repo's root.
        root: PathBuf,
        /// The file, relative to the root.
        path: String,
        /// What was to be copied over it (`~/.bashrc`).
        key: String,
        /// Never committed at all (rather than changed since the last commit).
        untracked: bool,
    },
    /// A file of the tree that stead was asked to overwrite is a symlink
    /// (or under one): a copy would replace the link with a file.
    #[error(
        "{} (the source of {key}) is a symlink in the config repo, or is under one; stead does not replace a link with a file\n\
         Nothing was committed. Copy {key} into the file the link points to yourself and commit it there.",
        .root.join(.path).display()
    )]
    SourceIsLink {
        /// The repo's root.
        root: PathBuf,
        /// The file, relative to the root.
        path: String,
        /// What was to be copied over it.
        key: String,
    },
    /// This machine was removed from the lineage.
    #[error(
        "this machine ({hostname}, {id}) was removed from the lineage by another machine ('stead state remove-machine')\n\
         Nothing was changed. To use it again, run '{}': it rejoins under a new machine id.",
        rejoin_command(.repo_url.as_deref(), .root)
    )]
    Retired {
        /// This machine's hostname.
        hostname: String,
        /// This machine's id.
        id: String,
        /// The repo URL recorded in state.
        repo_url: Option<String>,
        /// The repo's root.
        root: PathBuf,
    },
    /// The remote refused a publish: it is not at the expected revision.
    #[error(
        "the remote refused the push ({reason}): another machine pushed meanwhile\n\
         Nothing is lost: the record is committed in {}. Run 'stead sync' again.",
        .root.display()
    )]
    PublishRejected {
        /// The backend's reason.
        reason: String,
        /// The repo's root.
        root: PathBuf,
    },
    /// A publish made under the remote lock found the lock gone: its lease
    /// ended while this process could not renew it. Nothing was written.
    #[error(
        "this process no longer holds the lock {place}: its lease ended while the process could not renew it \
         (was it stopped, suspended or cut off for longer than the lock's timeout?), so another process may have taken it\n\
         Nothing was written to the shared record; this machine's record stays committed in {}. Run 'stead sync' again.",
        .root.display()
    )]
    LockLost {
        /// The lock's key.
        place: String,
        /// The config tree.
        root: PathBuf,
    },
    /// `--path` is a clone of another URL.
    #[error(
        "{} is a clone of {found}, not of {url}\nNothing was changed. Pass another --path, or fix the remote with 'git -C {} remote set-url {remote} {url}'.",
        .dest.display(),
        .dest.display()
    )]
    OtherClone {
        /// The directory.
        dest: PathBuf,
        /// Its remote's URL.
        found: String,
        /// The URL asked for.
        url: String,
        /// The remote's name.
        remote: String,
    },
    /// `--path` is a repo without the remote.
    #[error(
        "{} is a git repository without the remote '{remote}'\nNothing was changed. Add it with 'git -C {} remote add {remote} {url}'.",
        .dest.display(),
        .dest.display()
    )]
    NoSuchRemote {
        /// The directory.
        dest: PathBuf,
        /// The remote's name.
        remote: String,
        /// The URL asked for.
        url: String,
    },
    /// `--path` is a non-empty directory that is no clone.
    #[error(
        "{} exists and is not a git clone\nNothing was changed. Pass another --path for the clone.",
        .dest.display()
    )]
    NotAClone {
        /// The directory.
        dest: PathBuf,
    },
    /// A copy of the shared record cannot be used.
    #[error(transparent)]
    Shared(#[from] shared::SharedError),
    /// A file could not be read or written.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// The local state could not be read or written.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// The local lock could not be released.
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
    /// This machine's id could not be replaced.
    #[error(transparent)]
    Machine(#[from] crate::machine::MachineError),
    /// Another machine holds the remote lock.
    #[error("{}", remote_locked_message(.remote, .place, .holder, *.timeout, *.leased))]
    RemoteLocked {
        /// The remote's name.
        remote: String,
        /// Where on the remote the lock lives.
        place: String,
        /// Who holds it.
        holder: Box<backend::RemoteHolder>,
        /// The configured timeout, seconds.
        timeout: u64,
        /// Whether the lock is bound to a lease its holder keeps alive
        /// (etcd): never broken for its age.
        leased: bool,
    },
    /// An etcd call failed for another reason than the connection.
    #[error(
        "etcd {remote} refused the request: {reason}\nNothing was changed by stead; check the cluster's health ('etcdctl endpoint health') and run the command again."
    )]
    Etcd {
        /// The endpoints.
        remote: String,
        /// etcd's reason.
        reason: String,
    },
    /// The cluster refused this machine's etcd user a key the command
    /// reads or writes (its role does not cover it).
    #[error(
        "etcd {remote} refused the request: {reason}\nNothing was written. A machine's own role covers its own keys; the lineage's first publish (it creates meta) and publishing a 'state remove-machine' need a role over the whole prefix: run the command again as such a user (STEAD_ETCD_USER with STEAD_ETCD_PASSWORD or STEAD_ETCD_PASSWORD_FILE; docs/etcd.md, \"Access control\")."
    )]
    EtcdDenied {
        /// The endpoints.
        remote: String,
        /// etcd's reason.
        reason: String,
    },
    /// `init --lineage ID` found another lineage, or this machine's state
    /// belongs to another one.
    #[error(
        "{place} holds lineage {found}, not {asked}\nNothing was joined or started: this machine's state and the shared record are as they were. Join {found} (run the command again without --lineage), or start {asked} under another prefix (--prefix) or in another repo."
    )]
    WrongLineage {
        /// What holds the other lineage (the remote, or this machine's state).
        place: String,
        /// The lineage there.
        found: String,
        /// The lineage asked for.
        asked: String,
    },
    /// `.stead/etcd.toml` cannot be used.
    #[error("{}: {problem}\nFix the file (see docs/etcd.md), or run 'stead init --etcd URL --path DIR' again.", .path.display())]
    EtcdConfig {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The record's keys on etcd cannot be used (or would be too large).
    #[error("{reason}")]
    EtcdRecord {
        /// What is wrong, naming the key.
        reason: String,
    },
    /// The remote record moved since this machine last synced.
    #[error(
        "the shared record on '{remote}' has changed since this machine last synced \
         (remote serial {remote_serial}, last synced at serial {base_serial})\n\
         Nothing was changed. Run 'stead sync' first, then run the command again."
    )]
    RemoteAdvanced {
        /// The remote's name.
        remote: String,
        /// The remote's serial.
        remote_serial: u64,
        /// The serial of the common base.
        base_serial: u64,
    },
}

impl From<git::GitError> for SyncError {
    /// An unreachable remote is the backend-neutral [`SyncError::Unreachable`].
    fn from(e: git::GitError) -> Self {
        match e {
            git::GitError::Unreachable { remote, reason } => {
                SyncError::Unreachable { remote, reason }
            }
            e => SyncError::Git(e),
        }
    }
}

fn update_in_progress_message(root: &Path, conflicted: Option<&[String]>) -> String {
    let r = root.display();
    match conflicted {
        Some([]) => format!(
            "a git merge is in progress in {r}, but it was interrupted before it finished (the run that started it was stopped); \
             no file is left conflicted, so there is nothing to edit\n\
             Nothing was changed. Abort it with 'git -C {r} merge --abort', then run the command again: \
             it starts the merge afresh."
        ),
        Some(files) => format!(
            "a git merge is in progress in {r}, stopped on conflicts in:\n{}\n\
             Nothing was changed. Finish it (edit those files, then git -C {r} add <files> && git -C {r} commit) \
             or abort it (git -C {r} merge --abort), then run the command again.",
            files
                .iter()
                .map(|f| format!("  {f}"))
                .collect::<Vec<_>>()
                .join("\n")
        ),
        None => format!(
            "a git merge is in progress in {r}\n\
             Nothing was changed. Finish it (edit the conflicted files, git add, git commit) \
             or abort it (git merge --abort), then run the command again."
        ),
    }
}

fn source_uncommitted_message(root: &Path, path: &str, key: &str, untracked: bool) -> String {
    let root_s = root.display();
    let (what, see) = if untracked {
        (
            "it was never committed to the config repo",
            format!("git -C {root_s} status -- {path}"),
        )
    } else {
        (
            "it differs from the config repo's last commit",
            format!("git -C {root_s} diff HEAD -- {path}"),
        )
    };
    format!(
        "{} has uncommitted changes ({what}); copying {key} over it would lose them\n\
         Nothing was committed. Commit them (git -C {root_s} add -- {path} && git -C {root_s} commit) \
         or stash them (git -C {root_s} stash -u) first, then run the command again. See them with: {see}",
        root.join(path).display()
    )
}

/// Fails unless `path` of the tree can be overwritten with `key`'s content
/// without losing anything: it must be as last committed, and not a link.
pub fn check_overwrite(source: &dyn ConfigSource, path: &str, key: &str) -> Result<(), SyncError> {
    let root = source.root().to_path_buf();
    let (path, key) = (path.to_string(), key.to_string());
    match source.source_status(&path)? {
        SourceStatus::Committed => Ok(()),
        SourceStatus::Modified => Err(SyncError::SourceUncommitted {
            root,
            path,
            key,
            untracked: false,
        }),
        SourceStatus::Untracked => Err(SyncError::SourceUncommitted {
            root,
            path,
            key,
            untracked: true,
        }),
        SourceStatus::Symlink => Err(SyncError::SourceIsLink { root, path, key }),
    }
}

fn remote_locked_message(
    remote: &str,
    place: &str,
    holder: &backend::RemoteHolder,
    timeout: u64,
    leased: bool,
) -> String {
    let Some(info) = &holder.info else {
        return format!(
            "State is currently locked on remote '{remote}' ({place}), and its content cannot be read: {:?}\n\n\
             If no machine is running stead, remove it with 'stead state unlock --force'.",
            holder.raw.chars().take(200).collect::<String>()
        );
    };
    let LockInfo {
        operation,
        machine,
        created_at,
        ..
    } = info;
    let short_id: String = machine.id.chars().take(8).collect();
    format!(
        "State is currently locked on remote '{remote}' ({place})\n\n\
         Operation: {operation}\n\
         Machine: {} ({short_id}...)\n\
         User: {}\n\
         PID: {}\n\
         Acquired: {}\n\n\
         {}",
        machine.hostname,
        machine.user,
        machine.pid,
        ago(*created_at, chrono::Utc::now()),
        if leased {
            format!(
                "The lock ends with its holder: it is bound to a lease the holder keeps alive, \
                 which ends within the timeout ({timeout} s) of the holder stopping; it is never \
                 broken for its age. Wait for that operation to finish and try again, or run \
                 'stead state unlock --force --machine {short_id}' if that machine's stead is \
                 stuck (it removes that machine's lock only)."
            )
        } else {
            format!(
                "A remote lock cannot be proven live across machines: once it is older than the \
                 timeout ({timeout} s) another machine may break it. Wait for that operation to \
                 finish and try again, or run 'stead state unlock --force' if that machine is \
                 not running stead."
            )
        }
    )
}
