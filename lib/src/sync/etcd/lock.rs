//! The lineage's lock on etcd, bound to a lease: taken by a transaction that
//! creates the lock key only if it is absent, kept alive from the runtime's
//! worker while held, and gone with its lease when the holder dies. Nobody
//! breaks it by its age: a live holder keeps it, a dead one loses it after
//! the lease's TTL. The one exception is a holder proven dead on the taking
//! machine itself ([`crate::lock::proven_dead_here`]).
//!
//! While a process holds it, the publishes of that process are fenced on
//! it: the lock's create revision is noted in the config tree's etcd dir
//! (with the pid), and a publish compares it in the same transaction, so a
//! holder that lost its lease (stopped past its TTL) writes nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use serde::{Deserialize, Serialize};

use super::client::{Cluster, kv_tuple};
use crate::fsutil;
use crate::lock::LockInfo;
use crate::sync::SyncError;
use crate::sync::backend::{
    Acquired, BreakReason, HeldRemote, Released, RemoteHolder, RemoteLocker, Revision,
};

/// The least TTL etcd grants (a TTL of 1 is raised to 2).
pub const MIN_TTL_SECS: u64 = 2;

/// A lock this process holds, as the fence file records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fence {
    /// The process that holds it.
    pub pid: u32,
    /// The lock key's create revision.
    pub create_revision: i64,
    /// Its lease.
    pub lease: i64,
}

impl Fence {
    /// The fence of this process at `path` (`None`: none, or another
    /// process's left behind).
    pub fn read(path: &std::path::Path) -> Option<Fence> {
        let bytes = std::fs::read(path).ok()?;
        let fence: Fence = serde_json::from_slice(&bytes).ok()?;
        (fence.pid == std::process::id()).then_some(fence)
    }
}

/// The remote half of a `hybrid` lock on etcd.
pub struct EtcdLocker {
    cluster: Cluster,
    key: String,
    fence_file: PathBuf,
    keepers: Arc<Mutex<BTreeMap<i64, tokio::task::JoinHandle<()>>>>,
}

impl EtcdLocker {
    /// The lock at `key`, noting a held lock's fence in `fence_file`.
    pub fn new(cluster: Cluster, key: String, fence_file: PathBuf) -> Self {
        EtcdLocker {
            cluster,
            key,
            fence_file,
            keepers: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    /// Stops keeping our leases alive without releasing them, as a holder
    /// that died would (tests use it to show the lease ending the lock).
    pub fn abandon(&self) {
        for (_, keeper) in std::mem::take(&mut *lock(&self.keepers)) {
            keeper.abort();
        }
    }

    fn grant(&self, ttl: u64) -> Result<i64, SyncError> {
        let ttl = ttl.max(MIN_TTL_SECS) as i64;
        self.cluster.retrying(|cluster, mut client| {
            Ok(cluster.block_on(client.lease_grant(ttl, None))?.id())
        })
    }

    fn revoke(&self, lease: i64) {
        if let Some(keeper) = lock(&self.keepers).remove(&lease) {
            keeper.abort();
        }
        // A lease that cannot be revoked now ends with its TTL.
        let _ = self.cluster.retrying(|cluster, mut client| {
            match cluster.block_on(client.lease_revoke(lease)) {
                Ok(_) => Ok(()),
                Err(e) if e.to_string().contains("requested lease not found") => Ok(()),
                Err(e) => Err(e),
            }
        });
    }

    fn keep_alive(&self, lease: i64, ttl: u64) -> Result<(), SyncError> {
        let client = self.cluster.client()?;
        let period = Duration::from_millis(ttl.max(MIN_TTL_SECS) * 1000 / 3);
        let handle = self.cluster.spawn(keep_lease_alive(client, lease, period));
        lock(&self.keepers).insert(lease, handle);
        Ok(())
    }

    fn holder(kv: (String, Vec<u8>, i64, i64, i64)) -> RemoteHolder {
        let (_, value, _, create, lease) = kv;
        RemoteHolder::from_bytes(Revision::new(format!("{create}/{lease}")), &value)
    }

    fn read(&self) -> Result<Option<RemoteHolder>, SyncError> {
        Ok(self.cluster.get(&self.key)?.map(|(value, create, lease)| {
            Self::holder((self.key.clone(), value, 0, create, lease))
        }))
    }

    /// Puts our lock in place of the absent one (`expect_create` 0) or of
    /// the holder with that create revision; `Ok(None)`: someone else's is
    /// there (returned in the error branch).
    fn put_lock(
        &self,
        info: &LockInfo,
        lease: i64,
        expect_create: i64,
    ) -> Result<Result<HeldRemote, Option<RemoteHolder>>, SyncError> {
        let value = serde_json::to_vec(info).unwrap_or_default();
        let mut ops = Vec::new();
        if expect_create != 0 {
            ops.push(TxnOp::delete(self.key.as_bytes(), None));
        }
        ops.push(TxnOp::put(
            self.key.as_bytes(),
            value,
            Some(PutOptions::new().with_lease(lease)),
        ));
        let txn = Txn::new()
            .when([Compare::create_revision(
                self.key.as_bytes(),
                CompareOp::Equal,
                expect_create,
            )])
            .and_then(ops)
            .or_else([TxnOp::get(self.key.as_bytes(), None)]);
        let resp = match self.cluster.txn_once(txn) {
            Ok(resp) => resp,
            Err(failure) => {
                // Ambiguous: read what is there before deciding.
                let err = failure.into_error();
                return match self.read()? {
                    Some(h) if h.revision.as_str().ends_with(&format!("/{lease}")) => {
                        Ok(Ok(self.took(&h.revision, lease)))
                    }
                    _ => Err(err),
                };
            }
        };
        if resp.succeeded() {
            let create = resp.header().map(|h| h.revision()).unwrap_or(0);
            let revision = Revision::new(format!("{create}/{lease}"));
            return Ok(Ok(self.took(&revision, lease)));
        }
        let holder = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(get) => get.kvs().first().map(|kv| Self::holder(kv_tuple(kv))),
            _ => None,
        });
        Ok(Err(holder))
    }

    /// Puts our lock on `lease`: in place of none, or of a holder proven
    /// dead on this machine. A lock released between our compare and our
    /// read is simply tried for again, a few times at most.
    fn take(&self, info: &LockInfo, lease: i64) -> Result<Acquired, SyncError> {
        let mut expect = 0;
        let mut breaking: Option<(RemoteHolder, BreakReason)> = None;
        for _ in 0..8 {
            match self.put_lock(info, lease, expect)? {
                Ok(lock) => {
                    return Ok(match breaking {
                        Some((previous, why)) => Acquired::Broke {
                            lock,
                            previous,
                            why,
                        },
                        None => Acquired::Taken(lock),
                    });
                }
                Err(None) => {
                    expect = 0;
                    breaking = None;
                }
                // Someone else took it while we broke the dead one's.
                Err(Some(holder)) if breaking.is_some() => return Ok(Acquired::Held(holder)),
                Err(Some(holder)) => {
                    let proof = holder
                        .info
                        .as_ref()
                        .and_then(|i| crate::lock::proven_dead_here(i, info));
                    let Some(proof) = proof else {
                        return Ok(Acquired::Held(holder));
                    };
                    expect = parse_revision(&holder.revision).map_or(0, |(c, _)| c);
                    breaking = Some((holder, BreakReason::DeadHere(proof)));
                }
            }
        }
        Err(SyncError::Etcd {
            remote: self.cluster.name(),
            reason: format!(
                "the lock {} changed hands on every try; nothing was taken. Run the command again.",
                self.key
            ),
        })
    }

    fn took(&self, revision: &Revision, lease: i64) -> HeldRemote {
        let create = parse_revision(revision).map(|(c, _)| c).unwrap_or(0);
        let fence = Fence {
            pid: std::process::id(),
            create_revision: create,
            lease,
        };
        // Without the note the publishes of this process are not fenced,
        // but still compare every key they write.
        let _ = fsutil::atomic_write(
            &self.fence_file,
            &serde_json::to_vec(&fence).unwrap_or_default(),
            0o644,
        );
        HeldRemote {
            remote: self.cluster.name(),
            revision: revision.clone(),
        }
    }

    fn forget_fence(&self, revision: &Revision) {
        if let (Some(fence), Some((create, _))) =
            (Fence::read(&self.fence_file), parse_revision(revision))
            && fence.create_revision == create
        {
            let _ = std::fs::remove_file(&self.fence_file);
        }
    }

    fn delete_if(&self, create: i64) -> Result<bool, SyncError> {
        let txn = Txn::new()
            .when([Compare::create_revision(
                self.key.as_bytes(),
                CompareOp::Equal,
                create,
            )])
            .and_then([TxnOp::delete(self.key.as_bytes(), None)]);
        Ok(self
            .cluster
            .txn_once(txn)
            .map_err(|f| f.into_error())?
            .succeeded())
    }
}

/// `<create revision>/<lease>` read back.
pub fn parse_revision(revision: &Revision) -> Option<(i64, i64)> {
    let (create, lease) = revision.as_str().split_once('/')?;
    Some((create.parse().ok()?, lease.parse().ok()?))
}

async fn keep_lease_alive(mut client: Client, lease: i64, period: Duration) {
    let Ok((mut keeper, mut stream)) = client.lease_keep_alive(lease).await else {
        return;
    };
    loop {
        if keeper.keep_alive().await.is_err() {
            return;
        }
        match stream.message().await {
            Ok(Some(resp)) if resp.ttl() > 0 => {}
            _ => return,
        }
        tokio::time::sleep(period).await;
    }
}

impl RemoteLocker for EtcdLocker {
    fn remote(&self) -> &str {
        "etcd"
    }

    fn place(&self) -> &str {
        &self.key
    }

    fn acquire(&self, info: &LockInfo, ttl_secs: u64) -> Result<Acquired, SyncError> {
        let lease = self.grant(ttl_secs)?;
        let outcome = self.take(info, lease);
        match &outcome {
            Ok(Acquired::Taken(_) | Acquired::Broke { .. }) => self.keep_alive(lease, ttl_secs)?,
            _ => self.revoke(lease),
        }
        outcome
    }

    fn inspect(&self) -> Result<Option<RemoteHolder>, SyncError> {
        self.read()
    }

    fn release(&self, held: &HeldRemote) -> Result<Released, SyncError> {
        let Some((create, lease)) = parse_revision(&held.revision) else {
            return Ok(Released::Lost);
        };
        let ours = self.delete_if(create)?;
        self.forget_fence(&held.revision);
        self.revoke(lease);
        Ok(if ours { Released::Done } else { Released::Lost })
    }

    fn lease_left(&self, holder: &RemoteHolder) -> Option<u64> {
        ttl_left(&self.cluster, holder).map(|t| t.max(0) as u64)
    }

    fn force_unlock(&self) -> Result<Option<RemoteHolder>, SyncError> {
        let Some(holder) = self.read()? else {
            return Ok(None);
        };
        if let Some((create, lease)) = parse_revision(&holder.revision) {
            self.delete_if(create)?;
            if lease != 0 {
                self.revoke(lease);
            }
        }
        Ok(Some(holder))
    }
}

impl Drop for EtcdLocker {
    fn drop(&mut self) {
        // A lock still held when its locker goes (the process ends) is
        // released by the caller; the keep-alive ends either way.
        self.abandon();
    }
}

/// The remaining TTL of the lease a holder's lock is bound to, seconds
/// (`None`: no lease, or it is gone).
pub fn ttl_left(cluster: &Cluster, holder: &RemoteHolder) -> Option<i64> {
    let (_, lease) = parse_revision(&holder.revision)?;
    cluster
        .retrying(|cluster, mut client| {
            Ok(cluster
                .block_on(client.lease_time_to_live(lease, None))?
                .ttl())
        })
        .ok()
        .filter(|t| *t >= 0)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
