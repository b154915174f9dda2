//! The remote half of a `hybrid` lock: a ref on the config repo's remote
//! (`refs/stead/lock`) whose commit holds the holder's lock JSON.
//!
//! Taking it is a compare-and-set on the server: a push with
//! `--force-with-lease=<ref>:` (empty: the ref must not exist). Releasing is
//! a delete leased on our own commit, so it never removes someone else's
//! lock. Liveness cannot be proven across machines, so a remote lock older
//! than the configured timeout may be broken: replaced with a lease on the
//! old holder's commit, which also makes two breakers unable to both win.
//! A lock whose machine id, boot id and pid prove a dead process of the
//! taking machine itself is broken the same way at once.

use chrono::Utc;

use super::backend::{Acquired, HeldRemote, RemoteHolder, Revision};
use super::git::{Git, GitError, LeaseOutcome};
use crate::lock::LockInfo;

/// The ref on the remote that holds the lock.
pub const LOCK_REF: &str = "refs/stead/lock";

/// Reads the remote lock (`None`: nobody holds it).
pub fn read(git: &Git, remote: &str) -> Result<Option<RemoteHolder>, GitError> {
    Ok(git
        .remote_ref_read(remote, LOCK_REF)?
        .map(|(commit, bytes)| RemoteHolder::from_bytes(Revision::new(commit), &bytes)))
}

/// Takes the remote lock for `info`, breaking one older than `timeout_secs`
/// or one a dead process of this machine left.
pub fn acquire(
    git: &Git,
    remote: &str,
    info: &LockInfo,
    timeout_secs: u64,
) -> Result<Acquired, GitError> {
    let content = serde_json::to_vec_pretty(info).unwrap_or_default();
    // A lock released between our failed create and our read is simply
    // taken on the next round; a few rounds cover any honest race.
    for _ in 0..5 {
        let (outcome, commit) = git.remote_ref_create(remote, LOCK_REF, &content, None)?;
        if outcome == LeaseOutcome::Done {
            return Ok(Acquired::Taken(HeldRemote {
                remote: remote.to_string(),
                revision: Revision::new(commit),
            }));
        }
        let Some(holder) = read(git, remote)? else {
            continue;
        };
        let Some(why) = holder.breakable(Utc::now(), timeout_secs, info) else {
            return Ok(Acquired::Held(holder));
        };
        let (outcome, commit) =
            git.remote_ref_create(remote, LOCK_REF, &content, Some(holder.revision.as_str()))?;
        if outcome == LeaseOutcome::Done {
            return Ok(Acquired::Broke {
                lock: HeldRemote {
                    remote: remote.to_string(),
                    revision: Revision::new(commit),
                },
                previous: holder,
                why,
            });
        }
    }
    match read(git, remote)? {
        Some(holder) => Ok(Acquired::Held(holder)),
        None => Err(GitError::Failed {
            args: format!("push {remote} {LOCK_REF}"),
            dir: git.root().to_path_buf(),
            code: 0,
            stderr: "the remote lock kept changing while it was taken".to_string(),
        }),
    }
}

/// Releases our remote lock (`Lost`: it was broken by someone else meanwhile).
pub fn release(git: &Git, lock: &HeldRemote) -> Result<LeaseOutcome, GitError> {
    git.remote_ref_delete(&lock.remote, LOCK_REF, lock.revision.as_str())
}

/// Removes whatever remote lock there is (for `stead state unlock --force`).
pub fn force_remove(git: &Git, remote: &str) -> Result<Option<RemoteHolder>, GitError> {
    for _ in 0..5 {
        match read(git, remote)? {
            None => return Ok(None),
            Some(holder) => {
                if git.remote_ref_delete(remote, LOCK_REF, holder.revision.as_str())?
                    == LeaseOutcome::Done
                {
                    return Ok(Some(holder));
                }
            }
        }
    }
    read(git, remote)
}
