//! The etcd backend: the shared record and the locks in an etcd
//! cluster, the config tree a directory beside them (usually a git clone,
//! whose files still move by git).
//!
//! The record is kept as one key per part with one writer each
//! ([`keys`]); a publish is one transaction that writes this machine's
//! changes since its last sync, each compared on the key's revision as last
//! read (and on the lock it holds, `lock`), so machines publishing their
//! own entries never fail each other. The copies a sync compares (local,
//! base, remote as of the last refresh, and the working copy) are kept in
//! the tree's `.stead/etcd/`, which git ignores: they are this machine's.
//!
//! `.stead/etcd.toml` in the tree names the cluster; [`crate::sync::open`]
//! picks this backend when it is there. [`keys`] is pure and builds without
//! the `etcd` cargo feature (the fuzz target reads it); the rest needs it.

pub mod keys;

/// Where the config tree names its cluster (the backend is picked when it
/// is there).
pub const CONFIG_FILE: &str = ".stead/etcd.toml";

#[cfg(feature = "etcd")]
mod backend;
#[cfg(feature = "etcd")]
pub mod client;
#[cfg(feature = "etcd")]
pub mod lock;
#[cfg(feature = "etcd")]
pub mod watch;

#[cfg(feature = "etcd")]
pub use backend::*;

/// A user name and password for etcd's authentication (`etcdctl user add`),
/// given per machine (`STEAD_ETCD_USER`, `STEAD_ETCD_PASSWORD` or
/// `STEAD_ETCD_PASSWORD_FILE`), never written to the config repo. The
/// password is wiped from memory when dropped and never shown by `Debug`.
#[derive(Clone)]
pub struct Credentials {
    /// The etcd user.
    pub user: String,
    /// Its password.
    pub password: zeroize::Zeroizing<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// TLS for https:// endpoints: the CA that signed the cluster's
/// certificate, and this machine's client certificate and key when the
/// cluster asks for one (`--client-cert-auth`). Paths on this machine
/// (`STEAD_ETCD_CA`, `STEAD_ETCD_CERT`, `STEAD_ETCD_KEY`), never in the repo.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// The CA certificate (PEM).
    pub ca: Option<std::path::PathBuf>,
    /// This machine's client certificate (PEM).
    pub cert: Option<std::path::PathBuf>,
    /// Its private key (PEM).
    pub key: Option<std::path::PathBuf>,
}

/// How this machine authenticates to etcd.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// User and password (`None`: none).
    pub credentials: Option<Credentials>,
    /// TLS files (`None`: plain http:// endpoints).
    pub tls: Option<TlsFiles>,
}
