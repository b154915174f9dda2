//! The etcd backend proper: the record store and config source over a
//! cluster and a config dir (see the module above for the layout).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, GetOptions, GetResponse, Txn, TxnOp, TxnOpResponse, TxnResponse,
};
use serde::{Deserialize, Serialize};

use super::client::{self, Cluster};
use super::{keys, lock};
use crate::fsutil;
use crate::sync::SyncError;
use crate::sync::backend::{
    Backend, ConfigSource, LockScope, Published, RecordStore, Records, RemoteLocker, Revision,
    SourceStatus, StoppedUpdate, Update,
};
use crate::sync::git::{Git, PushOutcome};
use crate::sync::repo;
use crate::sync::shared::{self, SharedRecord, Strategy};

use super::CONFIG_FILE;
/// Where this machine keeps its copies of the record (git-ignored).
pub const CACHE_DIR: &str = ".stead/etcd";
/// The prefix when `.stead/etcd.toml` names none.
pub const DEFAULT_PREFIX: &str = "/stead/v1/";

const COPIES: &str = "copies.json";
const WORKING: &str = "working.json";
const FENCE: &str = "held-lock.json";

/// `.stead/etcd.toml`: the cluster and where under it the lineage lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdConfig {
    /// Client URLs (`http://host:2379`), tried in turn.
    pub endpoints: Vec<String>,
    /// The key prefix the lineage lives under (ends in `/`).
    #[serde(default = "default_prefix")]
    pub prefix: String,
}

fn default_prefix() -> String {
    DEFAULT_PREFIX.to_string()
}

impl EtcdConfig {
    /// A config for `endpoints` (comma-separated) and `prefix`.
    pub fn new(endpoints: &str, prefix: Option<&str>) -> Result<EtcdConfig, SyncError> {
        let endpoints: Vec<String> = endpoints
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_string)
            .collect();
        let mut prefix = prefix.unwrap_or(DEFAULT_PREFIX).to_string();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        let config = EtcdConfig { endpoints, prefix };
        config.check(Path::new(CONFIG_FILE))?;
        Ok(config)
    }

    fn check(&self, path: &Path) -> Result<(), SyncError> {
        let bad = |problem: String| SyncError::EtcdConfig {
            path: path.to_path_buf(),
            problem,
        };
        if self.endpoints.is_empty() {
            return Err(bad(
                "no endpoints: give at least one URL, e.g. http://127.0.0.1:2379".into(),
            ));
        }
        if let Some(e) = self
            .endpoints
            .iter()
            .find(|e| !(e.starts_with("http://") || e.starts_with("https://")))
        {
            return Err(bad(format!(
                "endpoint '{e}' is not an http:// or https:// URL"
            )));
        }
        if !self.prefix.starts_with('/') || self.prefix.contains("//") {
            return Err(bad(format!(
                "prefix '{}' must start with '/' and hold no empty part",
                self.prefix
            )));
        }
        Ok(())
    }

    /// Reads `<root>/.stead/etcd.toml` (`None`: there is none).
    pub fn read(root: &Path) -> Result<Option<EtcdConfig>, SyncError> {
        let path = root.join(CONFIG_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(SyncError::EtcdConfig {
                    path,
                    problem: e.to_string(),
                });
            }
        };
        let mut config: EtcdConfig = toml::from_str(&text).map_err(|e| SyncError::EtcdConfig {
            path: path.clone(),
            problem: e.to_string(),
        })?;
        if !config.prefix.ends_with('/') {
            config.prefix.push('/');
        }
        config.check(&path)?;
        Ok(Some(config))
    }

    /// Writes it to `<root>/.stead/etcd.toml` (and the git-ignored cache dir).
    pub fn write(&self, root: &Path) -> Result<(), SyncError> {
        let text = toml::to_string(self).map_err(|e| SyncError::EtcdConfig {
            path: root.join(CONFIG_FILE),
            problem: e.to_string(),
        })?;
        let path = root.join(CONFIG_FILE);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| fsutil::FsError::new("cannot create directory", dir, e))?;
        }
        fsutil::atomic_write(&path, text.as_bytes(), 0o644)?;
        Ok(())
    }
}

/// A copy of the record and the token it was taken at.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Copy {
    token: String,
    record: SharedRecord,
}

/// The remote as last read: its record, token and every key's value and
/// mod revision, and where and when they were read.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct RemoteCopy {
    token: Option<String>,
    record: Option<SharedRecord>,
    keys: BTreeMap<String, (String, i64)>,
    /// `None`: not known (copies kept by a stead before delta reads, or a
    /// publish refused on them): the next read is a whole one.
    #[serde(default)]
    read_at: Option<ReadAt>,
}

/// Where and when a remote copy was read: reading only the keys modified
/// since is right against the same cluster and prefix only (another
/// cluster, even one holding the same keys, numbers its revisions its own
/// way).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ReadAt {
    /// The store's revision at the read.
    revision: i64,
    /// The id of the cluster that answered.
    cluster: u64,
    /// The prefix read.
    prefix: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Copies {
    local: Option<Copy>,
    base: Option<Copy>,
    remote: RemoteCopy,
}

/// The etcd backend over a config tree.
#[derive(Debug)]
pub struct EtcdBackend {
    root: PathBuf,
    git: Option<Git>,
    config: EtcdConfig,
    cluster: Cluster,
    /// The copies as this backend last read or wrote them, with the file's
    /// stamp then: parsed once per command, read again only when another
    /// process replaced the file since.
    copies: Mutex<Option<(Option<Stamp>, Copies)>>,
}

/// What tells one copies.json from another without reading it: every
/// write replaces the file (a new inode), and its size and time come along.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl Stamp {
    /// The file's stamp (`None`: there is no file).
    fn of(path: &Path) -> Result<Option<Stamp>, SyncError> {
        use std::os::unix::fs::MetadataExt;
        match std::fs::metadata(path) {
            Ok(m) => Ok(Some(Stamp {
                ino: m.ino(),
                len: m.len(),
                mtime: m.mtime(),
                mtime_nsec: m.mtime_nsec(),
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(fsutil::FsError::new("cannot read", path, e).into()),
        }
    }
}

impl EtcdBackend {
    /// The backend of the tree at `root`, with the cluster `config` names;
    /// `git` is the tree's clone when it is one.
    pub fn new(
        root: &Path,
        git: Option<Git>,
        config: EtcdConfig,
        timeout: Duration,
    ) -> Result<EtcdBackend, SyncError> {
        EtcdBackend::new_with(root, git, config, timeout, super::Access::default())
    }

    /// [`EtcdBackend::new`], authenticating with `access`.
    pub fn new_with(
        root: &Path,
        git: Option<Git>,
        config: EtcdConfig,
        timeout: Duration,
        access: super::Access,
    ) -> Result<EtcdBackend, SyncError> {
        let cluster = Cluster::new_with(&config.endpoints, timeout, access)?;
        let backend = EtcdBackend {
            root: root.to_path_buf(),
            git,
            config,
            cluster,
            copies: Mutex::new(None),
        };
        backend.ensure_cache()?;
        Ok(backend)
    }

    /// The cluster's endpoints and the prefix, for messages.
    pub fn describe(&self) -> String {
        format!("etcd {}{}", self.cluster.name(), self.config.prefix)
    }

    /// The connection (for the fleet view and tests).
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.config.prefix
    }

    fn cache(&self) -> PathBuf {
        self.root.join(CACHE_DIR)
    }

    fn ensure_cache(&self) -> Result<(), SyncError> {
        let dir = self.cache();
        let ignore = dir.join(".gitignore");
        if !ignore.exists() {
            std::fs::create_dir_all(&dir)
                .map_err(|e| fsutil::FsError::new("cannot create directory", &dir, e))?;
            fsutil::atomic_write(
                &ignore,
                b"# this machine's copies of the record\n*\n",
                0o644,
            )?;
        }
        Ok(())
    }

    /// The copies, parsed from disk only when the file is not the one this
    /// backend last read or wrote (another process may sync this tree
    /// between or during commands, e.g. while this one waits for a lock).
    fn load(&self) -> Result<Copies, SyncError> {
        let path = self.cache().join(COPIES);
        let stamp = Stamp::of(&path)?;
        let mut cached = lock_cache(&self.copies);
        if let Some((at, copies)) = cached.as_ref()
            && *at == stamp
        {
            return Ok(copies.clone());
        }
        // Stamped before the read: a file replaced meanwhile is read again
        // next time.
        let copies = self.read_copies(&path)?;
        *cached = Some((stamp, copies.clone()));
        Ok(copies)
    }

    fn read_copies(&self, path: &Path) -> Result<Copies, SyncError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Copies::default()),
            Err(e) => return Err(fsutil::FsError::new("cannot read", path, e).into()),
        };
        let corrupt = |problem: String| SyncError::EtcdRecord {
            reason: format!(
                "this machine's copies of the shared record in {} are corrupt: {problem}\n\
                 Nothing was changed. They are only a cache (the record is on etcd): move the directory {} \
                 aside and run the command again; this machine's entry is rebuilt from its state.",
                path.display(),
                self.cache().display()
            ),
        };
        let mut copies: Copies =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        // Copies kept by an older stead hold an older schema: held at the
        // version their content needs, as `shared::parse` holds a record.
        let records = [
            copies.local.as_mut().map(|c| &mut c.record),
            copies.base.as_mut().map(|c| &mut c.record),
            copies.remote.record.as_mut(),
        ];
        for record in records.into_iter().flatten() {
            if record.version > shared::SHARED_VERSION {
                return Err(corrupt(format!(
                    "written by a newer stead (record version {}); upgrade stead",
                    record.version
                )));
            }
            record.settle_version();
        }
        Ok(copies)
    }

    fn save(&self, copies: &Copies) -> Result<(), SyncError> {
        let path = self.cache().join(COPIES);
        let bytes = serde_json::to_vec(copies).unwrap_or_default();
        let mut cached = lock_cache(&self.copies);
        // Forgotten first: if the write fails, the next load reads the disk.
        *cached = None;
        fsutil::atomic_write(&path, &bytes, 0o644)?;
        *cached = Some((Stamp::of(&path)?, copies.clone()));
        Ok(())
    }

    /// The record on etcd now, read and kept nowhere (`stead doctor`).
    pub fn peek(&self) -> Result<Option<SharedRecord>, SyncError> {
        Ok(self.read_remote()?.record)
    }

    /// Reads the lineage's keys whole into a remote copy.
    fn read_remote(&self) -> Result<RemoteCopy, SyncError> {
        let range = self.cluster.range(&self.config.prefix)?;
        let at = self.read_at(range.revision, range.cluster);
        self.remote_from(range.kvs, at)
    }

    /// Where and when a read answered (`None`: the cluster did not say).
    fn read_at(&self, revision: i64, cluster: u64) -> Option<ReadAt> {
        (revision > 0).then(|| ReadAt {
            revision,
            cluster,
            prefix: self.config.prefix.clone(),
        })
    }

    /// The revision a delta read of `cached` starts after (`None`: it was
    /// read under another prefix or at no known revision: read it whole).
    fn since(&self, cached: &RemoteCopy) -> Option<i64> {
        cached
            .read_at
            .as_ref()
            .filter(|at| at.prefix == self.config.prefix)
            .map(|at| at.revision)
    }

    /// The remote as it is now, reading only the keys modified since
    /// `cached` was read (with a count of the record's keys, for the
    /// deletions such a read cannot show); whole when that cannot be trusted.
    fn read_remote_since(&self, cached: &RemoteCopy) -> Result<RemoteCopy, SyncError> {
        let Some(rev) = self.since(cached) else {
            return self.read_remote();
        };
        let resp = match self
            .cluster
            .read_txn(Txn::new().and_then(self.delta_ops(rev)))
        {
            Ok(resp) => resp,
            // Unreachable is an answer for the caller; anything else the
            // cluster says, a full read (always right) may not meet.
            Err(e @ SyncError::Unreachable { .. }) => return Err(e),
            Err(_) => return self.read_remote(),
        };
        match self.merge_read(cached, &resp, &[])? {
            Some(now) => Ok(now),
            None => self.read_remote(),
        }
    }

    /// The reads that bring a copy taken at `rev` up to date: the keys
    /// modified since, then the count of the record's keys in each of
    /// [`keys::record_ranges`]. In one transaction they see one revision.
    fn delta_ops(&self, rev: i64) -> Vec<TxnOp> {
        let prefix = &self.config.prefix;
        let since = GetOptions::new()
            .with_prefix()
            .with_min_mod_revision(rev + 1);
        let mut ops = vec![TxnOp::get(prefix.as_bytes(), Some(since))];
        for (begin, end) in keys::record_ranges(prefix) {
            let count = GetOptions::new().with_range(end).with_count_only();
            ops.push(TxnOp::get(begin, Some(count)));
        }
        ops
    }

    /// `cached` with the answer to [`Self::delta_ops`] (the last gets of
    /// `resp`) merged in, less the keys the same transaction `deleted`.
    /// `None` when the result is not etcd's keys: someone deleted keys
    /// (their count differs), another cluster answered, or the store's
    /// revision went back (a restored cluster); a full read must follow.
    fn merge_read(
        &self,
        cached: &RemoteCopy,
        resp: &TxnResponse,
        deleted: &[String],
    ) -> Result<Option<RemoteCopy>, SyncError> {
        let now = resp
            .header()
            .and_then(|h| self.read_at(h.revision(), h.cluster_id()));
        let gets: Vec<GetResponse> = resp
            .op_responses()
            .into_iter()
            .filter_map(|r| match r {
                TxnOpResponse::Get(get) => Some(get),
                _ => None,
            })
            .collect();
        let (Some(before), Some(now), Some((delta, counts))) = (
            cached.read_at.as_ref(),
            now,
            gets.len()
                .checked_sub(4)
                .and_then(|skip| gets[skip..].split_first()),
        ) else {
            return Ok(None);
        };
        if now.cluster != before.cluster
            || now.prefix != before.prefix
            || now.revision < before.revision
        {
            return Ok(None);
        }
        let prefix = self.config.prefix.as_str();
        let changed = delta.kvs().iter().filter_map(|kv| {
            let rel = String::from_utf8_lossy(kv.key())
                .strip_prefix(prefix)?
                .to_string();
            let value = String::from_utf8_lossy(kv.value()).into_owned();
            Some((rel, value, kv.mod_revision()))
        });
        let mut keys = cached.keys.clone();
        keys::merge_delta(&mut keys, changed, deleted);
        let count: i64 = counts.iter().map(GetResponse::count).sum();
        if i64::try_from(keys.len()) != Ok(count) {
            return Ok(None);
        }
        self.remote_of(keys, Some(now)).map(Some)
    }

    fn remote_from(
        &self,
        kvs: Vec<(String, Vec<u8>, i64, i64, i64)>,
        at: Option<ReadAt>,
    ) -> Result<RemoteCopy, SyncError> {
        let prefix = &self.config.prefix;
        let mut keys = BTreeMap::new();
        for (key, value, rev, _, _) in kvs {
            let Some(rel) = key.strip_prefix(prefix.as_str()) else {
                continue;
            };
            if keys::in_record(rel) {
                keys.insert(
                    rel.to_string(),
                    (String::from_utf8_lossy(&value).into_owned(), rev),
                );
            }
        }
        self.remote_of(keys, at)
    }

    /// The remote copy of `keys` as read `at`.
    fn remote_of(
        &self,
        keys: BTreeMap<String, (String, i64)>,
        at: Option<ReadAt>,
    ) -> Result<RemoteCopy, SyncError> {
        let bytes: BTreeMap<String, Vec<u8>> = keys
            .iter()
            .map(|(k, (v, _))| (k.clone(), v.clone().into_bytes()))
            .collect();
        let record =
            keys::from_keys(&self.config.prefix, &bytes).map_err(|e| SyncError::EtcdRecord {
                reason: e.to_string(),
            })?;
        let token = record.as_ref().map(|_| keys::token(&keys));
        Ok(RemoteCopy {
            token,
            record,
            keys,
            read_at: at,
        })
    }

    fn local_copy(record: SharedRecord) -> Copy {
        let hash = blake3::hash(&shared::to_bytes(&record));
        Copy {
            token: format!("l{}", &hash.to_hex()[..20]),
            record,
        }
    }

    fn upstream(&self) -> Result<Option<crate::sync::git::Upstream>, SyncError> {
        match &self.git {
            Some(git) => Ok(git.upstream()?),
            None => Ok(None),
        }
    }

    /// Whether the tree's upstream has commits HEAD lacks.
    fn tree_has_news(&self) -> Result<bool, SyncError> {
        let (Some(git), Some(up)) = (&self.git, self.upstream()?) else {
            return Ok(false);
        };
        let Some(theirs) = repo::tracking_commit(git, &up)? else {
            return Ok(false);
        };
        Ok(match git.head()? {
            Some(head) => !git.is_ancestor(&theirs, &head)?,
            None => true,
        })
    }

    /// Pushes the tree when HEAD has commits its upstream lacks.
    fn push_tree(&self) -> Result<bool, SyncError> {
        let (Some(git), Some(up)) = (&self.git, self.upstream()?) else {
            return Ok(false);
        };
        let Some(head) = git.head()? else {
            return Ok(false);
        };
        if let Some(theirs) = repo::tracking_commit(git, &up)?
            && git.is_ancestor(&head, &theirs)?
        {
            return Ok(false);
        }
        match git.push(&up)? {
            PushOutcome::Pushed => {
                // Only a wake-up for `fleet watch`: the sync it starts
                // fetches and merges the tree itself.
                super::watch::publish_config_rev(&self.cluster, &self.config.prefix, &head)?;
                Ok(true)
            }
            PushOutcome::Rejected(reason) => Err(SyncError::PublishRejected {
                reason,
                root: self.root.clone(),
            }),
        }
    }

    /// The transaction that writes `writes` and raises the serial, fenced
    /// on our lock when this process holds one; it reads the lineage back:
    /// only the keys modified since `since` (and the counts) when the copy
    /// it writes on knows its revision, whole otherwise.
    fn publish_txn(
        &self,
        writes: &[keys::Write],
        serial: Option<Vec<u8>>,
        since: Option<i64>,
    ) -> Txn {
        let prefix = &self.config.prefix;
        let mut compares: Vec<Compare> = writes
            .iter()
            .map(|w| {
                let key = format!("{prefix}{}", w.key);
                if w.expect == 0 {
                    Compare::create_revision(key, CompareOp::Equal, 0)
                } else {
                    Compare::mod_revision(key, CompareOp::Equal, w.expect)
                }
            })
            .collect();
        if let Some(fence) = lock::Fence::read(&self.cache().join(FENCE)) {
            compares.push(Compare::create_revision(
                fence.lock_key(&self.config.prefix),
                CompareOp::Equal,
                fence.create_revision,
            ));
        }
        let mut ops: Vec<TxnOp> = writes
            .iter()
            .map(|w| {
                let key = format!("{prefix}{}", w.key);
                match &w.value {
                    Some(v) => TxnOp::put(key, v.clone(), None),
                    None => TxnOp::delete(key, None),
                }
            })
            .collect();
        if let Some(value) = serial {
            let key = format!("{prefix}{}", keys::SERIAL);
            // Only ever upwards: serials are zero-padded, so bytes compare
            // as numbers. A lower or equal serial there is left as it is.
            let raise = Txn::new()
                .when([Compare::value(key.clone(), CompareOp::Less, value.clone())])
                .and_then([TxnOp::put(key.clone(), value.clone(), None)]);
            let create = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key, value, None)])
                .or_else([TxnOp::txn(raise)]);
            ops.push(TxnOp::txn(create));
        }
        // Ops run in order: the read-back sees the writes above.
        match since {
            Some(rev) => ops.extend(self.delta_ops(rev)),
            None => ops.push(TxnOp::get(
                prefix.as_bytes(),
                Some(GetOptions::new().with_prefix()),
            )),
        }
        Txn::new().when(compares).and_then(ops)
    }

    fn publish_record(
        &self,
        copies: &mut Copies,
        expected: Option<&Revision>,
    ) -> Result<Option<Revision>, SyncError> {
        let Some(local) = copies.local.clone() else {
            return Ok(None);
        };
        if copies.remote.token.as_deref() != expected.map(Revision::as_str) {
            return Err(self.rejected("stale info: the record was read again since"));
        }
        if let Some(remote) = &copies.remote.record
            && remote.lineage.id != local.record.lineage.id
        {
            return Err(SyncError::EtcdRecord {
                reason: format!(
                    "this machine's record belongs to lineage {}, but {} holds lineage {}\n\
                     Nothing was written. Join that lineage ('stead init --etcd URL --path DIR' again), \
                     or give this lineage its own prefix (--prefix).",
                    local.record.lineage.id,
                    self.describe(),
                    remote.lineage.id
                ),
            });
        }
        let remote_keys: BTreeMap<String, (Vec<u8>, i64)> = copies
            .remote
            .keys
            .iter()
            .map(|(k, (v, r))| (k.clone(), (v.clone().into_bytes(), *r)))
            .collect();
        let base = copies.base.as_ref().map(|b| &b.record);
        let writes =
            keys::writes(base, &local.record, &remote_keys).map_err(|e| SyncError::EtcdRecord {
                reason: e.to_string(),
            })?;
        let serial = keys::serial_raise(&local.record, &remote_keys);
        if writes.is_empty() && serial.is_none() {
            return Ok(None);
        }
        let since = self.since(&copies.remote);
        let txn = self.publish_txn(&writes, serial, since);
        let resp = match self.cluster.txn_once(txn) {
            Ok(resp) => resp,
            Err(client::TxnFailure::NotSent(e)) => return Err(e),
            Err(client::TxnFailure::Unknown(e)) => {
                // The write may have landed: read again and see.
                let now = self.read_remote_since(&copies.remote).map_err(|_| e)?;
                let landed = writes
                    .iter()
                    .all(|w| now.keys.get(&w.key).map(|(v, _)| v.as_bytes()) == w.value.as_deref());
                if !landed {
                    copies.remote = now;
                    self.save(copies)?;
                    return Err(self
                        .rejected("the connection failed during the write, and it did not land"));
                }
                return Ok(Some(self.published(copies, local, now)?));
            }
        };
        if !resp.succeeded() {
            // A key moved since the copy was read, or the copy is wrong (read
            // from a cluster that was since replaced by one holding the same
            // keys): the next read is whole, so that the sync run again
            // cannot be refused for a wrong copy. The refusal is what to
            // say; a copy that fails to save is only read by delta again.
            copies.remote.read_at = None;
            let _ = self.save(copies);
            return Err(self.refused());
        }
        let now = self.read_back(&copies.remote, &resp, &writes)?;
        Ok(Some(self.published(copies, local, now)?))
    }

    /// The remote after a publish that succeeded, from its read-back.
    fn read_back(
        &self,
        cached: &RemoteCopy,
        resp: &TxnResponse,
        writes: &[keys::Write],
    ) -> Result<RemoteCopy, SyncError> {
        if self.since(cached).is_some() {
            let deleted: Vec<String> = writes
                .iter()
                .filter(|w| w.value.is_none())
                .map(|w| w.key.clone())
                .collect();
            return match self.merge_read(cached, resp, &deleted)? {
                Some(now) => Ok(now),
                None => self.read_remote(),
            };
        }
        let at = resp
            .header()
            .and_then(|h| self.read_at(h.revision(), h.cluster_id()));
        let kvs = resp
            .op_responses()
            .into_iter()
            .rev()
            .find_map(|r| match r {
                TxnOpResponse::Get(get) => {
                    Some(get.kvs().iter().map(client::kv_tuple).collect::<Vec<_>>())
                }
                _ => None,
            })
            .unwrap_or_default();
        self.remote_from(kvs, at)
    }

    fn published(
        &self,
        copies: &mut Copies,
        local: Copy,
        now: RemoteCopy,
    ) -> Result<Revision, SyncError> {
        let token = now.token.clone().unwrap_or_default();
        // The remote as read back may hold others' news besides ours: then
        // the base (what we published) must not carry the remote's token, or
        // the next sync would find no news to merge and a hybrid lock would
        // find the remote moved past a base that sync never catches up.
        let same = now.record.as_ref() == Some(&local.record);
        copies.base = Some(Copy {
            token: if same {
                token.clone()
            } else {
                local.token.clone()
            },
            record: local.record,
        });
        copies.remote = now;
        self.save(copies)?;
        Ok(Revision::new(token))
    }

    /// Why a publish's compares failed: the lock this process held is
    /// gone, or a key it writes moved.
    fn refused(&self) -> SyncError {
        if let Some(fence) = lock::Fence::read(&self.cache().join(FENCE)) {
            let place = fence.lock_key(&self.config.prefix);
            let now = self.cluster.get(&place).ok().flatten();
            if now.map(|(_, create, _)| create) != Some(fence.create_revision) {
                return SyncError::LockLost {
                    place,
                    root: self.root.clone(),
                };
            }
        }
        self.rejected("a key this machine writes changed on etcd since the last read")
    }

    fn rejected(&self, reason: &str) -> SyncError {
        SyncError::PublishRejected {
            reason: reason.to_string(),
            root: self.root.clone(),
        }
    }
}

impl RecordStore for EtcdBackend {
    fn records(&self) -> Result<Records, SyncError> {
        let copies = self.load()?;
        Ok(Records {
            local_rev: copies.local.as_ref().map(|c| Revision::new(&c.token)),
            base_rev: copies.base.as_ref().map(|c| Revision::new(&c.token)),
            remote_rev: copies.remote.token.as_ref().map(Revision::new),
            local: copies.local.map(|c| c.record),
            base: copies.base.map(|c| c.record),
            remote: copies.remote.record,
        })
    }

    fn read_working(&self) -> Result<Option<SharedRecord>, SyncError> {
        let path = self.cache().join(WORKING);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(shared::parse(&bytes, &path.display().to_string())?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(fsutil::FsError::new("cannot read", &path, e).into()),
        }
    }

    fn write_working(&self, record: &SharedRecord) -> Result<(), SyncError> {
        fsutil::atomic_write(
            &self.cache().join(WORKING),
            &shared::to_bytes(record),
            0o644,
        )?;
        Ok(())
    }

    fn remote_revision(&self) -> Result<Option<Revision>, SyncError> {
        Ok(self.load()?.remote.token.map(Revision::new))
    }

    fn remote_has_news(&self, records: &Records) -> Result<bool, SyncError> {
        let record_news = records.remote_rev.is_some() && records.remote_rev != records.base_rev;
        Ok(record_news || self.tree_has_news()?)
    }

    fn publish(&self, expected: Option<&Revision>) -> Result<Published, SyncError> {
        let mut copies = self.load()?;
        // The record first: its transaction is the fenced one, so a process
        // that lost its lock pushes no config either.
        let published = self.publish_record(&mut copies, expected)?;
        let pushed_tree = self.push_tree()?;
        match published {
            Some(rev) => Ok(Published::Pushed(rev)),
            None if pushed_tree => Ok(Published::Pushed(Revision::new(
                copies.remote.token.unwrap_or_default(),
            ))),
            None => Ok(Published::NothingNew),
        }
    }
}

impl ConfigSource for EtcdBackend {
    fn root(&self) -> &Path {
        &self.root
    }

    fn remote_branch(&self) -> String {
        self.describe()
    }

    fn refresh(&self) -> Result<(), SyncError> {
        if let (Some(git), Some(up)) = (&self.git, self.upstream()?) {
            git.fetch(&up.remote)?;
        }
        let mut copies = self.load()?;
        copies.remote = self.read_remote_since(&copies.remote)?;
        // A machine with no copy yet starts from the remote, as a clone does.
        if copies.local.is_none()
            && let Some(record) = copies.remote.record.clone()
        {
            let token = copies.remote.token.clone().unwrap_or_default();
            self.write_working(&record)?;
            copies.base = Some(Copy {
                token,
                record: record.clone(),
            });
            copies.local = Some(Self::local_copy(record));
        }
        self.save(&copies)
    }

    fn update(&self, message: &str) -> Result<Update, SyncError> {
        if let (Some(git), Some(up)) = (&self.git, self.upstream()?)
            && self.tree_has_news()?
            && let Update::Conflicts(files) = repo::merge_upstream(git, &up, message)?
        {
            return Ok(Update::Conflicts(files));
        }
        let mut copies = self.load()?;
        let (Some(remote), Some(token)) = (&copies.remote.record, &copies.remote.token) else {
            return Ok(Update::Clean);
        };
        if copies.base.as_ref().map(|b| &b.token) == Some(token) {
            return Ok(Update::Clean);
        }
        let merged = match &copies.local {
            None => remote.clone(),
            Some(local) => {
                let base = copies.base.as_ref().map(|b| &b.record);
                if base.is_some() && local.record.lineage.id != remote.lineage.id {
                    local.record.clone()
                } else {
                    shared::merge(base, &local.record, remote, None, Strategy::Merge)
                }
            }
        };
        copies.base = Some(Copy {
            token: token.clone(),
            record: remote.clone(),
        });
        self.write_working(&merged)?;
        copies.local = Some(Self::local_copy(merged));
        self.save(&copies)?;
        Ok(Update::Clean)
    }

    fn update_in_progress(&self) -> Result<bool, SyncError> {
        match &self.git {
            Some(git) => Ok(git.rev_exists("MERGE_HEAD")?),
            None => Ok(false),
        }
    }

    fn conflicted_files(&self) -> Result<Option<Vec<String>>, SyncError> {
        match &self.git {
            Some(git) => Ok(Some(git.unmerged_paths()?)),
            None => Ok(None),
        }
    }

    fn record_is_clean(&self) -> Result<bool, SyncError> {
        let working = self.read_working()?;
        let local = self.load()?.local.map(|c| c.record);
        Ok(working.is_none() || working == local)
    }

    fn source_status(&self, path: &str) -> Result<SourceStatus, SyncError> {
        match &self.git {
            Some(git) => repo::source_status(git, path),
            // No history to compare with: a file that is there may hold
            // work nobody committed anywhere.
            None if repo::link_on_the_way(&self.root, path) => Ok(SourceStatus::Symlink),
            None if self.root.join(path).exists() => Ok(SourceStatus::Untracked),
            None => Ok(SourceStatus::Committed),
        }
    }

    fn commit(&self, extra: &[&str], message: &str) -> Result<Option<Revision>, SyncError> {
        let mut copies = self.load()?;
        let mut committed = None;
        if let Some(working) = self.read_working()?
            && copies.local.as_ref().map(|c| &c.record) != Some(&working)
        {
            let copy = Self::local_copy(working);
            committed = Some(Revision::new(&copy.token));
            copies.local = Some(copy);
            self.save(&copies)?;
        }
        if let Some(git) = &self.git
            && !extra.is_empty()
        {
            git.add(extra)?;
            if let Some(commit) = git.commit(message)? {
                committed = Some(Revision::new(commit));
            }
        }
        Ok(committed)
    }

    fn install_merge_driver(&self, _stead_exe: &Path) -> Result<bool, SyncError> {
        // The record is not in the tree: git never merges it.
        Ok(false)
    }

    fn stopped_update(&self) -> StoppedUpdate {
        repo::stopped_merge()
    }

    fn updated_message(&self) -> String {
        format!("The record on {} was read.", self.describe())
    }
}

impl Backend for EtcdBackend {
    fn locker(&self, scope: &LockScope) -> Option<Box<dyn RemoteLocker>> {
        Some(Box::new(lock::EtcdLocker::new(
            self.cluster.clone(),
            &self.config.prefix,
            scope.clone(),
            self.cache().join(FENCE),
        )))
    }

    fn require_remote(&self) -> Result<(), SyncError> {
        Ok(())
    }
}

/// Opens the tree at `dir` on etcd when `.stead/etcd.toml` is there
/// (`None`: it is not, another backend serves it). The tree's root is the
/// clone's when `dir` is in one.
pub fn open(dir: &Path, options: &crate::sync::Options) -> Result<Option<EtcdBackend>, SyncError> {
    let git = Git::open(dir).ok().map(|g| options.apply(g));
    let root = git
        .as_ref()
        .map(|g| g.root().to_path_buf())
        .unwrap_or_else(|| dir.to_path_buf());
    let Some(config) = EtcdConfig::read(&root)? else {
        return Ok(None);
    };
    Ok(Some(EtcdBackend::new_with(
        &root,
        git,
        config,
        options.network_timeout,
        options.etcd_access.clone(),
    )?))
}

fn lock_cache<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The cache is whole after every assignment: a panic elsewhere leaves
    // nothing half-written in it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}
