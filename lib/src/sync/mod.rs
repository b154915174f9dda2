//! Many machines: the shared record in the config repo, how two copies of it
//! are compared and merged, and the git backend that moves it.
//!
//! - [`shared`]: the record's schema, fold (local state into it), 3-way
//!   merge, conflict detection and field diff. Pure: no I/O.
//! - [`git`]: the `git` program driven for clone, fetch, merge, push and the
//!   remote lock ref.
//! - [`repo`]: the record's copies in a clone (HEAD, remote, merge base,
//!   working tree) and the merge driver's installation.
//! - [`remote_lock`]: the remote half of a `hybrid` lock.

pub mod git;
pub mod remote_lock;
pub mod repo;
pub mod shared;

use crate::fsutil::FsError;
use crate::lock::{LockInfo, ago};

/// Why a sync step failed. Nothing half-done is left: the working copy of
/// the record is replaced atomically, and git's own state is reported as is.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// A git command failed or the remote is unreachable.
    #[error(transparent)]
    Git(#[from] git::GitError),
    /// A copy of the shared record cannot be used.
    #[error(transparent)]
    Shared(#[from] shared::SharedError),
    /// A file could not be read or written.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// Another machine holds the remote lock.
    #[error("{}", remote_locked_message(.remote, .holder, *.timeout))]
    RemoteLocked {
        /// The remote's name.
        remote: String,
        /// Who holds it.
        holder: Box<remote_lock::RemoteHolder>,
        /// The configured timeout, seconds.
        timeout: u64,
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

fn remote_locked_message(remote: &str, holder: &remote_lock::RemoteHolder, timeout: u64) -> String {
    let Some(info) = &holder.info else {
        return format!(
            "State is currently locked on remote '{remote}' ({}), and its content cannot be read: {:?}\n\n\
             If no machine is running stead, remove it with 'stead state unlock --force'.",
            remote_lock::LOCK_REF,
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
        "State is currently locked on remote '{remote}' ({})\n\n\
         Operation: {operation}\n\
         Machine: {} ({short_id}...)\n\
         User: {}\n\
         PID: {}\n\
         Acquired: {}\n\n\
         A remote lock cannot be proven live across machines: once it is older than the \
         timeout ({timeout} s) another machine may break it. Wait for that operation to \
         finish and try again, or run 'stead state unlock --force' if that machine is \
         not running stead.",
        remote_lock::LOCK_REF,
        machine.hostname,
        machine.user,
        machine.pid,
        ago(*created_at, chrono::Utc::now()),
    )
}
