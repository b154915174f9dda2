//! The locks of a lineage on etcd, each bound to a lease: one per machine
//! (`P/locks/machines/<mid>`), taken for that machine's own writes, and
//! one for the lineage (`P/locks/lineage`), taken for writes that touch
//! other machines' parts. A machine's lock is put only while the lineage's
//! is absent, and the lineage's only while no machine's is held, each in
//! one transaction; so machines never wait for each other, and a
//! lineage-wide write waits for all of them.
//!
//! A lock is taken by a transaction that creates its key only if it is
//! absent, kept alive from the runtime's worker while held, and gone with
//! its lease when the holder dies. Nobody breaks it by its age: a live
//! holder keeps it, a dead one loses it after the lease's TTL. The one
//! exception is a holder proven dead on the taking machine itself
//! ([`crate::lock::proven_dead_here`]).
//!
//! While a process holds one, the publishes of that process are fenced on
//! it: the lock's key and create revision are noted in the config tree's
//! etcd dir (with the pid), and a publish compares them in the same
//! transaction, so a holder that lost its lease (stopped past its TTL)
//! writes nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse};
use serde::{Deserialize, Serialize};

use super::client::{Cluster, kv_tuple};
use super::keys;
use crate::fsutil;
use crate::lock::LockInfo;
use crate::sync::SyncError;
use crate::sync::backend::{
    Acquired, BreakReason, HeldRemote, LockScope, Released, RemoteHolder, RemoteLocker, Revision,
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
    /// The lock's key (empty in a note written before machines had locks
    /// of their own: the lineage's).
    #[serde(default)]
    pub key: String,
}

impl Fence {
    /// The key of the lock it fences on, under `prefix`: the one it names,
    /// or the lineage's in a note that names none (written before machines
    /// had locks of their own).
    pub fn lock_key(&self, prefix: &str) -> String {
        if self.key.is_empty() {
            lineage_key(prefix)
        } else {
            self.key.clone()
        }
    }

    /// The fence of this process at `path` (`None`: none, or another
    /// process's left behind).
    pub fn read(path: &std::path::Path) -> Option<Fence> {
        let bytes = std::fs::read(path).ok()?;
        let fence: Fence = serde_json::from_slice(&bytes).ok()?;
        (fence.pid == std::process::id()).then_some(fence)
    }
}

/// The lineage lock's key under `prefix`.
pub fn lineage_key(prefix: &str) -> String {
    format!("{prefix}{}", keys::LINEAGE_LOCK)
}

/// Where the machines' lock keys live under `prefix` (each `<this><id>`).
fn machine_keys(prefix: &str) -> String {
    format!("{prefix}{}", keys::MACHINE_LOCKS)
}

/// Machine `id`'s lock key under `prefix`.
pub fn machine_key(prefix: &str, id: &str) -> String {
    format!("{}{id}", machine_keys(prefix))
}

/// The remote half of a `hybrid` lock on etcd.
pub struct EtcdLocker {
    cluster: Cluster,
    prefix: String,
    scope: LockScope,
    key: String,
    fence_file: PathBuf,
    keepers: Arc<Mutex<BTreeMap<i64, tokio::task::JoinHandle<()>>>>,
}

impl EtcdLocker {
    /// The lock of `scope` in the lineage under `prefix`, noting a held
    /// lock's fence in `fence_file`.
    pub fn new(cluster: Cluster, prefix: &str, scope: LockScope, fence_file: PathBuf) -> Self {
        let key = match &scope {
            LockScope::Machine(id) => machine_key(prefix, id),
            LockScope::Lineage => lineage_key(prefix),
        };
        EtcdLocker {
            cluster,
            prefix: prefix.to_string(),
            scope,
            key,
            fence_file,
            keepers: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    /// The compare that the locks which keep ours out are all absent, and
    /// the read that finds one of them when they are not.
    fn others_absent(&self) -> (Compare, TxnOp) {
        match &self.scope {
            LockScope::Machine(_) => {
                let lineage = lineage_key(&self.prefix);
                (
                    Compare::create_revision(lineage.as_bytes(), CompareOp::Equal, 0),
                    TxnOp::get(lineage.as_bytes(), None),
                )
            }
            LockScope::Lineage => {
                // A compare over a range holds for every key in it, and for
                // an empty range compares a key never created: so this one
                // holds exactly when no machine's lock exists.
                let machines = machine_keys(&self.prefix);
                (
                    Compare::create_revision(machines.as_bytes(), CompareOp::Equal, 0)
                        .with_prefix(),
                    TxnOp::get(
                        machines.as_bytes(),
                        Some(GetOptions::new().with_prefix().with_limit(1)),
                    ),
                )
            }
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

    fn holder(&self, kv: (String, Vec<u8>, i64, i64, i64)) -> RemoteHolder {
        let (key, value, _, create, lease) = kv;
        let mut holder =
            RemoteHolder::from_bytes(Revision::new(format!("{create}/{lease}")), &value);
        let machines = machine_keys(&self.prefix);
        if let Some(id) = key.strip_prefix(&machines) {
            holder.scope = LockScope::Machine(id.to_string());
        }
        holder.place = Some(key);
        holder
    }

    /// Every lock of the lineage, in one read: the lineage's first, then
    /// the machines' in key order.
    fn read_all(&self) -> Result<Vec<RemoteHolder>, SyncError> {
        let range = self
            .cluster
            .range(&format!("{}{}", self.prefix, keys::LOCKS))?;
        let mut holders: Vec<RemoteHolder> =
            range.kvs.into_iter().map(|kv| self.holder(kv)).collect();
        holders.sort_by_key(|h| h.scope != LockScope::Lineage);
        Ok(holders)
    }

    /// Whether `holder` is our own lock's.
    fn is_own(&self, holder: &RemoteHolder) -> bool {
        holder.place.as_deref() == Some(self.key.as_str())
    }

    /// Whether `holder` keeps ours from being taken: ours, the lineage's,
    /// and for the lineage's lock every machine's too.
    fn keeps_out(&self, holder: &RemoteHolder) -> bool {
        self.scope == LockScope::Lineage
            || holder.scope == LockScope::Lineage
            || self.is_own(holder)
    }

    /// Our own lock's holder, else one that keeps ours out.
    fn read(&self) -> Result<Option<RemoteHolder>, SyncError> {
        let all = self.read_all()?;
        let own = all.iter().position(|h| self.is_own(h));
        Ok(match own {
            Some(i) => Some(all[i].clone()),
            None => all.into_iter().find(|h| self.keeps_out(h)),
        })
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
        let (others_absent, read_others) = self.others_absent();
        let txn = Txn::new()
            .when([
                Compare::create_revision(self.key.as_bytes(), CompareOp::Equal, expect_create),
                others_absent,
            ])
            .and_then(ops)
            .or_else([TxnOp::get(self.key.as_bytes(), None), read_others]);
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
        // Ours first: a holder of our own key, else one that keeps us out.
        let holder = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(get) => get.kvs().first().map(|kv| self.holder(kv_tuple(kv))),
            _ => None,
        });
        Ok(Err(holder))
    }

    /// Puts our lock on `lease`: in place of none, or of a holder proven
    /// dead on this machine (of our key, or of one that keeps ours out). A
    /// lock released between our compare and our read is simply tried for
    /// again, a few times at most.
    fn take(&self, info: &LockInfo, lease: i64) -> Result<Acquired, SyncError> {
        let mut expect = 0;
        let mut breaking: Option<(RemoteHolder, BreakReason)> = None;
        for _ in 0..8 {
            let holder = match self.put_lock(info, lease, expect)? {
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
                    continue;
                }
                Err(Some(holder)) => holder,
            };
            let proof = holder
                .info
                .as_ref()
                .and_then(|i| crate::lock::proven_dead_here(i, info));
            let (Some(proof), Some((create, _))) = (proof, parse_revision(&holder.revision)) else {
                return Ok(Acquired::Held(holder));
            };
            if self.is_own(&holder) {
                expect = create;
            } else {
                self.delete_if(holder.place.as_deref().unwrap_or_default(), create)?;
                expect = 0;
            }
            breaking = Some((holder, BreakReason::DeadHere(proof)));
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
            key: self.key.clone(),
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

    /// Deletes the lock at `key` if it is still the one created at `create`.
    fn delete_if(&self, key: &str, create: i64) -> Result<bool, SyncError> {
        let txn = Txn::new()
            .when([Compare::create_revision(
                key.as_bytes(),
                CompareOp::Equal,
                create,
            )])
            .and_then([TxnOp::delete(key.as_bytes(), None)]);
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
        let ours = self.delete_if(&self.key, create)?;
        self.forget_fence(&held.revision);
        self.revoke(lease);
        Ok(if ours { Released::Done } else { Released::Lost })
    }

    fn lease_left(&self, holder: &RemoteHolder) -> Option<u64> {
        ttl_left(&self.cluster, holder).map(|t| t.max(0) as u64)
    }

    fn holders(&self) -> Result<Vec<RemoteHolder>, SyncError> {
        self.read_all()
    }

    fn leased(&self) -> bool {
        true
    }

    fn per_machine(&self) -> bool {
        matches!(self.scope, LockScope::Machine(_))
    }

    fn force_remove(&self, holder: &RemoteHolder) -> Result<bool, SyncError> {
        let (Some(place), Some((create, lease))) =
            (holder.place.as_deref(), parse_revision(&holder.revision))
        else {
            return Ok(false);
        };
        let removed = self.delete_if(place, create)?;
        if removed && lease != 0 {
            self.revoke(lease);
        }
        Ok(removed)
    }

    fn force_unlock(&self) -> Result<Vec<RemoteHolder>, SyncError> {
        let mut removed = Vec::new();
        for holder in self.read_all()? {
            if self.keeps_out(&holder) && self.force_remove(&holder)? {
                removed.push(holder);
            }
        }
        Ok(removed)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fence_noted_before_machines_had_locks_reads_as_the_lineages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("held-lock.json");
        let old = format!(
            r#"{{"pid":{},"create_revision":7,"lease":9}}"#,
            std::process::id()
        );
        std::fs::write(&path, old).unwrap();
        let fence = Fence::read(&path).unwrap();
        assert_eq!((fence.create_revision, fence.lease), (7, 9));
        assert_eq!(fence.lock_key("/p/"), "/p/locks/lineage");
        let mut machines = fence;
        machines.key = machine_key("/p/", "m1");
        assert_eq!(machines.lock_key("/p/"), "/p/locks/machines/m1");
    }

    #[test]
    fn lock_keys_sit_beside_the_record() {
        assert_eq!(lineage_key("/p/"), "/p/locks/lineage");
        assert_eq!(machine_key("/p/", "m1"), "/p/locks/machines/m1");
        assert!(!keys::in_record("locks/machines/m1"));
    }
}
