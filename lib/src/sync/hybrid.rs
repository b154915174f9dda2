//! The lock a command holds: the local lock ([`crate::lock`]) and, with
//! `lock_type = hybrid`, the remote lock of the config repo's backend on
//! top. The remote half is registered as a cleanup action with the local
//! lock's process-wide registry, so a signal handler that calls
//! [`crate::lock::release_all_held`] gives back both.

use super::SyncError;
use super::backend::{
    Acquired, Backend, BreakReason, HeldRemote, LockScope, RemoteHolder, RemoteLocker,
};
use super::shared;
use crate::lock::{self, CleanupId, LockConfig, LockGuard, LockType};

/// The held lock. Derefs to the local guard, which is what the store asks for.
#[derive(Debug)]
pub struct Held {
    local: LockGuard,
    remote: Option<RemoteHeld>,
}

impl std::ops::Deref for Held {
    type Target = LockGuard;
    fn deref(&self) -> &LockGuard {
        &self.local
    }
}

impl Held {
    /// Only the local lock.
    pub fn local_only(local: LockGuard) -> Self {
        Held {
            local,
            remote: None,
        }
    }

    /// Whether the remote half is held too.
    pub fn holds_remote(&self) -> bool {
        self.remote.is_some()
    }

    /// Releases the remote lock (a failure goes to the warning callback
    /// given at acquire: it expires after the timeout), then the local one.
    pub fn release(self) -> Result<(), lock::LockError> {
        if let Some(remote) = self.remote {
            remote.release();
        }
        self.local.release()
    }
}

/// The remote half: its release is a registered cleanup action, run on
/// release, on drop or by a signal handler, whichever comes first.
#[derive(Debug)]
struct RemoteHeld {
    cleanup: Option<CleanupId>,
}

impl RemoteHeld {
    fn new(locker: Box<dyn RemoteLocker>, held: HeldRemote, warn: fn(&str)) -> Self {
        let id = lock::register_cleanup(Box::new(move || {
            // Leased on our own revision: a lock someone broke and took is
            // left alone (`Released::Lost`).
            if let Err(e) = locker.release(&held) {
                warn(&format!(
                    "could not release the remote lock on '{}': {e}\n\
                     It expires after the lock timeout; 'stead state unlock --force' removes it now.",
                    held.remote
                ));
            }
        }));
        RemoteHeld { cleanup: Some(id) }
    }

    fn release(mut self) {
        if let Some(id) = self.cleanup.take() {
            lock::run_cleanup(id);
        }
    }
}

impl Drop for RemoteHeld {
    fn drop(&mut self) {
        if let Some(id) = self.cleanup.take() {
            lock::run_cleanup(id);
        }
    }
}

/// What taking the remote half reported, for the caller to tell the user.
#[derive(Debug)]
pub enum HybridEvent {
    /// `hybrid` is configured but there is no remote: local lock only.
    NoRemote,
    /// The remote cannot be reached: local lock only.
    Unreachable {
        /// Why.
        reason: String,
    },
    /// A remote lock older than the timeout, or one a dead process of this
    /// machine left, was broken.
    Broke {
        /// The remote's name.
        remote: String,
        /// The holder that was broken.
        previous: Box<RemoteHolder>,
        /// The timeout, seconds.
        timeout: u64,
        /// Why it could be broken.
        why: BreakReason,
    },
}

/// How [`acquire_remote`] should go.
#[derive(Debug, Clone, Copy)]
pub struct RemoteRequest {
    /// Fail when the remote's record moved since this machine last synced
    /// (every command but the ones that bring the remote's news in). Under
    /// a machine's own lock (etcd) only news for this machine counts:
    /// other machines' syncs do not stop its commands.
    pub check_advance: bool,
    /// Take the lineage-wide lock (a write that touches other machines'
    /// parts), not this machine's own.
    pub lineage_wide: bool,
    /// Called with a warning when the remote lock cannot be released later.
    pub warn: fn(&str),
}

/// Adds the remote half to a held local lock when `config` says `hybrid`.
/// `backend` is the config repo (`None`: there is none with a remote). On
/// failure the local lock is released and nothing is held.
pub fn acquire_remote(
    local: LockGuard,
    config: &LockConfig,
    backend: Option<&dyn Backend>,
    request: RemoteRequest,
    on_event: &mut dyn FnMut(HybridEvent),
) -> Result<Held, SyncError> {
    if config.lock_type != LockType::Hybrid {
        return Ok(Held::local_only(local));
    }
    let Some(info) = local.info().cloned() else {
        return Ok(Held::local_only(local));
    };
    let scope = if request.lineage_wide {
        LockScope::Lineage
    } else {
        LockScope::Machine(info.machine.id.clone())
    };
    let Some((backend, locker)) = backend.and_then(|b| Some((b, b.locker(&scope)?))) else {
        on_event(HybridEvent::NoRemote);
        return Ok(Held::local_only(local));
    };
    let taken = match locker.acquire(&info, config.timeout) {
        Err(SyncError::Unreachable { reason, .. }) => {
            on_event(HybridEvent::Unreachable { reason });
            return Ok(Held::local_only(local));
        }
        Err(e) => {
            local.release()?;
            return Err(e);
        }
        Ok(Acquired::Held(holder)) => {
            local.release()?;
            return Err(SyncError::RemoteLocked {
                remote: locker.remote().to_string(),
                place: locker.place_of(&holder),
                holder: Box::new(holder),
                timeout: config.timeout,
                leased: locker.leased(),
            });
        }
        Ok(Acquired::Broke {
            lock,
            previous,
            why,
        }) => {
            on_event(HybridEvent::Broke {
                remote: locker.remote().to_string(),
                previous: Box::new(previous),
                timeout: config.timeout,
                why,
            });
            lock
        }
        Ok(Acquired::Taken(lock)) => lock,
    };
    let remote_name = locker.remote().to_string();
    let only_mine = locker.per_machine().then_some(info.machine.id.as_str());
    let held = Held {
        local,
        remote: Some(RemoteHeld::new(locker, taken, request.warn)),
    };
    if request.check_advance
        && let Err(e) = remote_stood_still(backend, &remote_name, only_mine)
    {
        held.release()?;
        return Err(e);
    }
    Ok(held)
}

/// Fails when the remote's record moved since the common base (another
/// machine published since this one last synced); with `only_mine`, only
/// when it moved for that machine ([`shared::moved_for`]).
fn remote_stood_still(
    backend: &dyn Backend,
    remote: &str,
    only_mine: Option<&str>,
) -> Result<(), SyncError> {
    backend.refresh()?;
    let records = backend.records()?;
    let Some(copy) = &records.remote else {
        return Ok(());
    };
    let moved = match only_mine {
        Some(me) => shared::moved_for(Some(copy), records.base.as_ref(), me),
        None => shared::moved_since(Some(copy), records.base.as_ref()),
    };
    if moved {
        return Err(SyncError::RemoteAdvanced {
            remote: remote.to_string(),
            remote_serial: copy.lineage.serial,
            base_serial: records.base.map(|b| b.lineage.serial).unwrap_or(0),
        });
    }
    Ok(())
}
