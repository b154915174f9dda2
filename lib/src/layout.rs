//! Where stead keeps its files: the target home, the state dir and the names in it.

use std::path::{Path, PathBuf};

/// The file names inside a state dir, in one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    home: PathBuf,
    state_dir: PathBuf,
}

impl Layout {
    /// A layout for `home` (where `~` points) and an explicit state dir, or
    /// `<home>/.stead` when `state_dir` is `None`.
    pub fn new(home: impl Into<PathBuf>, state_dir: Option<PathBuf>) -> Self {
        let home = home.into();
        let state_dir = state_dir.unwrap_or_else(|| home.join(".stead"));
        Layout { home, state_dir }
    }

    /// Where `~` points for managed paths.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The state dir (mode 0700).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// `<state-dir>/state.json`: the state record.
    pub fn state_file(&self) -> PathBuf {
        self.state_dir.join("state.json")
    }

    /// `<state-dir>/state.json.prev`: the record before the last commit,
    /// which the next commit overwrites in place and swaps in
    /// ([`crate::spare`]).
    pub fn state_spare(&self) -> PathBuf {
        self.state_dir.join("state.json.prev")
    }

    /// `<state-dir>/state.lock`: the lock file, flock'd by its holder.
    pub fn lock_file(&self) -> PathBuf {
        self.state_dir.join("state.lock")
    }

    /// `<state-dir>/lock_config.json`: lock type, timeout, retries.
    pub fn lock_config_file(&self) -> PathBuf {
        self.state_dir.join("lock_config.json")
    }

    /// `<state-dir>/machine_id`: this machine's UUID, made once and kept.
    pub fn machine_id_file(&self) -> PathBuf {
        self.state_dir.join("machine_id")
    }

    /// `<state-dir>/record_key`: this machine's secret key for the checksums
    /// it publishes in the shared record (0600, made once and kept).
    pub fn record_key_file(&self) -> PathBuf {
        self.state_dir.join("record_key")
    }

    /// `<state-dir>/identity.age`: this machine's age x25519 identity
    /// (0600, the format `age-keygen` writes, so `age -d -i` reads it).
    pub fn identity_file(&self) -> PathBuf {
        self.state_dir.join("identity.age")
    }

    /// `<state-dir>/secrets/`: machine-scoped secrets, `NAME.age` each.
    pub fn secrets_dir(&self) -> PathBuf {
        self.state_dir.join("secrets")
    }

    /// `<state-dir>/backups/`: copies taken before migrations and overwrites.
    pub fn backups_dir(&self) -> PathBuf {
        self.state_dir.join("backups")
    }
}
