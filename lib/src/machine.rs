//! This machine's identity and facts.
//!
//! The machine id is a UUID v4 made once per state dir and kept in
//! `<state-dir>/machine_id`; hostname, user, os and arch are read from the
//! system directly (no `hostname` or `ps` processes).

use std::fs;
use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::fsutil::{self, FsError};
use crate::layout::Layout;

/// The facts stored in the state record's `machine` field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineInfo {
    /// The kept UUID v4 of this machine (per state dir).
    pub id: String,
    /// The hostname at the time of the last write.
    pub hostname: String,
    /// `linux`, `macos`, ...
    pub os: String,
    /// `x86_64`, `aarch64`, ...
    pub arch: String,
    /// The user stead runs as.
    pub user: String,
}

/// Why the machine id could not be read or made.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    /// The id file could not be read or written.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// The id file holds something other than a UUID.
    #[error(
        "the machine id file {path} is corrupt (it holds {content:?}, not a UUID); \
         if this machine is new to stead, move the file aside and run the command again"
    )]
    Corrupt {
        /// The id file.
        path: PathBuf,
        /// What it holds (trimmed, at most 64 bytes).
        content: String,
    },
}

impl MachineInfo {
    /// Facts of the running system with the given machine id.
    pub fn current(id: &str) -> Self {
        MachineInfo {
            id: id.to_string(),
            hostname: hostname(),
            os: std::env::consts::OS.to_string(),
            arch: std::env::consts::ARCH.to_string(),
            user: current_user(),
        }
    }
}

/// Reads the machine id kept in the state dir, making it on first use.
///
/// The state dir must exist. Two processes racing to make it agree on one id:
/// the id file is written to a temp name and hard-linked into place, which
/// fails for the loser, who then reads the winner's id.
pub fn load_or_create_id(layout: &Layout) -> Result<String, MachineError> {
    let path = layout.machine_id_file();
    if let Some(id) = read_id(&path)? {
        return Ok(id);
    }
    let id = Uuid::new_v4().to_string();
    // A stead temp name: if this process is killed before removing it, the
    // next run under the lock recognises it and removes it.
    let tmp = fsutil::temp_path(layout.state_dir(), "machine_id");
    fsutil::atomic_write(&tmp, format!("{id}\n").as_bytes(), 0o600)?;
    let linked = fs::hard_link(&tmp, &path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            fsutil::fsync_dir(layout.state_dir())?;
            Ok(id)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match read_id(&path)? {
            Some(id) => Ok(id),
            None => Err(MachineError::Corrupt {
                path,
                content: String::new(),
            }),
        },
        Err(e) => Err(FsError::new("cannot create", &path, e).into()),
    }
}

/// Gives this state dir a new machine id (atomically replacing the id
/// file) and returns it: for a machine whose old id was removed from its
/// lineage and which joins again.
pub fn replace_id(layout: &Layout) -> Result<String, MachineError> {
    let id = Uuid::new_v4().to_string();
    fsutil::atomic_write(
        &layout.machine_id_file(),
        format!("{id}\n").as_bytes(),
        0o600,
    )?;
    Ok(id)
}

/// Reads the machine id if the id file exists.
pub fn read_id(path: &std::path::Path) -> Result<Option<String>, MachineError> {
    match crate::ownfile::read(path) {
        Ok(raw) => {
            let s = String::from_utf8_lossy(&raw);
            let t = s.trim();
            match Uuid::parse_str(t) {
                Ok(u) => Ok(Some(u.to_string())),
                Err(_) => Err(MachineError::Corrupt {
                    path: path.to_path_buf(),
                    content: t.chars().take(64).collect(),
                }),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(FsError::new("cannot read", path, e).into()),
    }
}

/// The system's hostname, or `unknown` when it cannot be read.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

/// The name of the user this process runs as.
pub fn current_user() -> String {
    let uid = nix::unistd::getuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(u)) => u.name,
        _ => std::env::var("USER").unwrap_or_else(|_| uid.to_string()),
    }
}

/// The kernel's id of the current boot, when the system exposes one.
///
/// A pid recorded under another boot id belongs to a process that is gone.
pub fn boot_id() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path(), None);
        fs::create_dir_all(layout.state_dir()).unwrap();
        let a = load_or_create_id(&layout).unwrap();
        let b = load_or_create_id(&layout).unwrap();
        assert_eq!(a, b);
        assert_eq!(Uuid::parse_str(&a).unwrap().get_version_num(), 4);
    }

    #[test]
    fn corrupt_id_is_an_error_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path(), None);
        fs::create_dir_all(layout.state_dir()).unwrap();
        fs::write(layout.machine_id_file(), "garbage").unwrap();
        let err = load_or_create_id(&layout).unwrap_err();
        assert!(matches!(err, MachineError::Corrupt { .. }), "{err}");
        assert_eq!(
            fs::read_to_string(layout.machine_id_file()).unwrap(),
            "garbage"
        );
    }

    #[test]
    fn facts_are_filled() {
        let m = MachineInfo::current("x");
        assert!(!m.hostname.is_empty());
        assert!(!m.user.is_empty());
        assert_eq!(m.os, std::env::consts::OS);
    }
}
