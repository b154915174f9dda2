//! The connection to an etcd cluster: a private tokio runtime (stead is
//! synchronous), one endpoint at a time, and failover owned by stead.
//!
//! etcd-client's balanced channel keeps sending to a dead endpoint
//! (etcd-client #39), so stead connects to one endpoint and, when a call
//! fails for the connection's sake, moves to the next and tries again. Only
//! reads are tried again as they are: a write that failed may have been
//! applied, so its caller re-reads before it decides (see the backend's
//! publish).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions, KeyValue, Txn, TxnOpResponse, TxnResponse};

use crate::sync::SyncError;

/// A handle on the cluster; clones share the runtime and the connection.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    runtime: tokio::runtime::Runtime,
    endpoints: Vec<String>,
    timeout: Duration,
    access: super::Access,
    /// The endpoint in use and its client (`None`: not connected yet).
    current: Mutex<(usize, Option<Client>)>,
    /// Keys and bytes (key and value) the record's reads brought back.
    received: Tally,
}

#[derive(Default)]
struct Tally {
    kvs: AtomicU64,
    bytes: AtomicU64,
}

/// What this handle's reads of keys brought back so far (ranges and the
/// gets in transactions): how much a sync reads, for tests and the bench.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Received {
    /// Keys.
    pub kvs: u64,
    /// Their keys' and values' bytes.
    pub bytes: u64,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("endpoints", &self.inner.endpoints)
            .finish()
    }
}

/// What a range read gives: each key (with the prefix) and its value and
/// `mod_revision`, and the store's revision at the read.
#[derive(Debug, Clone, Default)]
pub struct Range {
    /// Key, value, mod revision, create revision and lease.
    pub kvs: Vec<(String, Vec<u8>, i64, i64, i64)>,
    /// The store's revision when it was read.
    pub revision: i64,
    /// The id of the cluster that answered (`0`: not said).
    pub cluster: u64,
}

impl Cluster {
    /// A handle on the cluster at `endpoints` (nothing is dialled until the
    /// first call); calls time out after `timeout`.
    pub fn new(endpoints: &[String], timeout: Duration) -> Result<Cluster, SyncError> {
        Cluster::new_with(endpoints, timeout, super::Access::default())
    }

    /// [`Cluster::new`], authenticating with `access`.
    pub fn new_with(
        endpoints: &[String],
        timeout: Duration,
        access: super::Access,
    ) -> Result<Cluster, SyncError> {
        if endpoints.is_empty() {
            return Err(unreachable("(none)", "no etcd endpoint is configured"));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("stead-etcd")
            .enable_all()
            .build()
            .map_err(|e| unreachable(&endpoints.join(","), &e.to_string()))?;
        Ok(Cluster {
            inner: Arc::new(Inner {
                runtime,
                endpoints: endpoints.to_vec(),
                timeout,
                access,
                current: Mutex::new((0, None)),
                received: Tally::default(),
            }),
        })
    }

    /// The endpoints, comma-separated, for messages.
    pub fn name(&self) -> String {
        self.inner.endpoints.join(",")
    }

    /// What the reads through this handle (and its clones) brought back.
    pub fn received(&self) -> Received {
        Received {
            kvs: self.inner.received.kvs.load(Ordering::Relaxed),
            bytes: self.inner.received.bytes.load(Ordering::Relaxed),
        }
    }

    fn tally<'a>(&self, kvs: impl IntoIterator<Item = &'a KeyValue>) {
        for kv in kvs {
            let bytes = (kv.key().len() + kv.value().len()) as u64;
            self.inner.received.kvs.fetch_add(1, Ordering::Relaxed);
            self.inner
                .received
                .bytes
                .fetch_add(bytes, Ordering::Relaxed);
        }
    }

    fn tally_txn(&self, resp: &TxnResponse) {
        for op in resp.op_responses() {
            if let TxnOpResponse::Get(get) = op {
                self.tally(get.kvs());
            }
        }
    }

    /// Runs `f` on the runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.inner.runtime.block_on(f)
    }

    /// Spawns `f` on the runtime's worker (lease keep-alives).
    pub fn spawn<F>(&self, f: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.inner.runtime.spawn(f)
    }

    /// A connected client (dialling the current endpoint if needed).
    pub fn client(&self) -> Result<Client, SyncError> {
        let mut current = lock(&self.inner.current);
        if let Some(client) = &current.1 {
            return Ok(client.clone());
        }
        let endpoint = self.inner.endpoints[current.0].clone();
        let mut options = ConnectOptions::new()
            .with_connect_timeout(self.inner.timeout)
            .with_timeout(self.inner.timeout);
        if let Some(c) = &self.inner.access.credentials {
            options = options.with_user(c.user.clone(), c.password.to_string());
        }
        if let Some(files) = &self.inner.access.tls {
            options = options.with_tls(tls_options(files)?);
        }
        let client = self
            .block_on(Client::connect([endpoint.as_str()], Some(options)))
            .map_err(|e| {
                // A refused password is an answer, not an unreachable cluster:
                // it must not send a command down its offline path.
                if is_connection(&e) {
                    unreachable(&endpoint, &short_reason(&e))
                } else {
                    call_failed(&endpoint, &e)
                }
            })?;
        current.1 = Some(client.clone());
        Ok(client)
    }

    /// Moves to the next endpoint (after a connection failure).
    pub fn rotate(&self) {
        let mut current = lock(&self.inner.current);
        current.0 = (current.0 + 1) % self.inner.endpoints.len();
        current.1 = None;
    }

    /// Runs a call, moving through every endpoint while it fails for the
    /// connection's sake. Use only for calls that are safe to repeat.
    pub fn retrying<T>(
        &self,
        mut call: impl FnMut(&Cluster, Client) -> Result<T, etcd_client::Error>,
    ) -> Result<T, SyncError> {
        let mut last = String::new();
        for _ in 0..self.inner.endpoints.len() {
            let client = match self.client() {
                Ok(c) => c,
                Err(e @ SyncError::Unreachable { .. }) => {
                    last = e.to_string();
                    self.rotate();
                    continue;
                }
                Err(e) => return Err(e),
            };
            match call(self, client) {
                Ok(v) => return Ok(v),
                Err(e) if is_connection(&e) => {
                    last = short_reason(&e);
                    self.rotate();
                }
                Err(e) => return Err(call_failed(&self.name(), &e)),
            }
        }
        Err(unreachable(&self.name(), &last))
    }

    /// Every key under `prefix` with its value and revisions.
    pub fn range(&self, prefix: &str) -> Result<Range, SyncError> {
        self.retrying(|cluster, mut client| {
            let mut resp = cluster
                .block_on(client.get(prefix.as_bytes(), Some(GetOptions::new().with_prefix())))?;
            let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
            let id = resp.header().map(|h| h.cluster_id()).unwrap_or(0);
            cluster.tally(resp.kvs());
            let kvs = resp.take_kvs().iter().map(kv_tuple).collect();
            Ok(Range {
                kvs,
                revision,
                cluster: id,
            })
        })
    }

    /// One key (`None`: absent).
    pub fn get(&self, key: &str) -> Result<Option<(Vec<u8>, i64, i64)>, SyncError> {
        self.retrying(|cluster, mut client| {
            let mut resp = cluster.block_on(client.get(key.as_bytes(), None))?;
            Ok(resp
                .take_kvs()
                .first()
                .map(|kv| (kv.value().to_vec(), kv.create_revision(), kv.lease())))
        })
    }

    /// A transaction of reads only (safe to repeat, so tried on every
    /// endpoint in turn): its gets all see one revision.
    pub fn read_txn(&self, txn: Txn) -> Result<TxnResponse, SyncError> {
        let resp =
            self.retrying(|cluster, mut client| cluster.block_on(client.txn(txn.clone())))?;
        self.tally_txn(&resp);
        Ok(resp)
    }

    /// A transaction, sent once: on a connection failure the endpoint moves
    /// on and the error says the outcome is unknown.
    pub fn txn_once(&self, txn: Txn) -> Result<TxnResponse, TxnFailure> {
        let mut client = self.client().map_err(TxnFailure::NotSent)?;
        match self.block_on(client.txn(txn)) {
            Ok(resp) => {
                self.tally_txn(&resp);
                Ok(resp)
            }
            Err(e) if is_connection(&e) => {
                self.rotate();
                Err(TxnFailure::Unknown(unreachable(
                    &self.name(),
                    &short_reason(&e),
                )))
            }
            Err(e) => Err(TxnFailure::NotSent(call_failed(&self.name(), &e))),
        }
    }
}

/// The TLS settings from the files named (read now, so that a missing or
/// unreadable file is said before any connection is tried).
fn tls_options(files: &super::TlsFiles) -> Result<etcd_client::TlsOptions, SyncError> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| crate::fsutil::FsError::new("cannot read", path, e))
    };
    let mut tls = etcd_client::TlsOptions::new();
    if let Some(ca) = &files.ca {
        tls = tls.ca_certificate(etcd_client::Certificate::from_pem(read(ca)?));
    }
    match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => {
            tls = tls.identity(etcd_client::Identity::from_pem(read(cert)?, read(key)?));
        }
        (None, None) => {}
        _ => {
            return Err(SyncError::EtcdConfig {
                path: files
                    .cert
                    .clone()
                    .or_else(|| files.key.clone())
                    .unwrap_or_default(),
                problem: "a client certificate needs its key and a key its certificate: set both STEAD_ETCD_CERT and STEAD_ETCD_KEY".to_string(),
            });
        }
    }
    Ok(tls)
}

/// How a transaction failed.
#[derive(Debug)]
pub enum TxnFailure {
    /// It did not reach the cluster, or the cluster refused it whole.
    NotSent(SyncError),
    /// The connection failed during it: it may or may not have been applied.
    Unknown(SyncError),
}

impl TxnFailure {
    /// The error, whichever it was.
    pub fn into_error(self) -> SyncError {
        match self {
            TxnFailure::NotSent(e) | TxnFailure::Unknown(e) => e,
        }
    }
}

/// A key-value pair as a plain tuple: key, value, mod and create revision, lease.
pub fn kv_tuple(kv: &KeyValue) -> (String, Vec<u8>, i64, i64, i64) {
    (
        String::from_utf8_lossy(kv.key()).into_owned(),
        kv.value().to_vec(),
        kv.mod_revision(),
        kv.create_revision(),
        kv.lease(),
    )
}

fn is_connection(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        etcd_client::Error::GRpcStatus(s) => matches!(
            s.code(),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        _ => false,
    }
}

/// A connection failure in a few words (tonic's own text nests the whole
/// transport error).
fn short_reason(e: &etcd_client::Error) -> String {
    let text = e.to_string();
    let lower = text.to_lowercase();
    if lower.contains("connection refused") {
        "connection refused (is etcd running there?)".to_string()
    } else if lower.contains("deadline") || lower.contains("timed out") || lower.contains("timeout")
    {
        "no answer in time".to_string()
    } else if lower.contains("dns") || lower.contains("failed to lookup") {
        "the host name does not resolve".to_string()
    } else {
        text.chars().take(200).collect()
    }
}

fn unreachable(remote: &str, reason: &str) -> SyncError {
    SyncError::Unreachable {
        remote: format!("etcd {remote}"),
        reason: reason.to_string(),
    }
}

fn call_failed(remote: &str, e: &etcd_client::Error) -> SyncError {
    let text = e.to_string();
    let reason = if text.contains("request is too large") {
        format!(
            "{text} (etcd refuses requests over its --max-request-bytes, 1.5 MiB by default; nothing was written)"
        )
    } else if remote.contains("https://")
        && [
            "transport error",
            "certificate",
            "handshake",
            "tls",
            "broken pipe",
        ]
        .iter()
        .any(|t| text.to_lowercase().contains(t))
    {
        format!(
            "the TLS connection failed or was closed by the cluster ({}); over https:// this machine gives the cluster's CA \
             and, when the cluster asks for one, its client certificate and key: STEAD_ETCD_CA, STEAD_ETCD_CERT, STEAD_ETCD_KEY \
             (docs/etcd.md, \"Access control\")",
            text.chars().take(160).collect::<String>()
        )
    } else if text.contains("permission denied") {
        return SyncError::EtcdDenied {
            remote: remote.to_string(),
            reason: text,
        };
    } else if [
        "authentication failed",
        "user name is empty",
        "invalid auth token",
    ]
    .iter()
    .any(|t| text.contains(t))
    {
        format!(
            "{text} (this machine's etcd user is given by STEAD_ETCD_USER, with STEAD_ETCD_PASSWORD or STEAD_ETCD_PASSWORD_FILE; docs/etcd.md, \"Access control\")"
        )
    } else {
        text
    };
    SyncError::Etcd {
        remote: remote.to_string(),
        reason,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
