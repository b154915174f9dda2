//! This machine's identity and facts.
//!
//! The machine id is a UUID v4 made once per state dir and kept in
//! `<state-dir>/machine_id`; so is the machine's secret record key
//! (`<state-dir>/record_key`, see [`RecordKey`]); hostname, user, os and arch are read from the
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
    /// The record key file holds something other than 64 hex digits.
    #[error(
        "the record key file {path} is corrupt (it does not hold 64 hex digits); \
         move it aside and sync again: a new key is made, and this machine's \
         published checksums change once"
    )]
    CorruptKey {
        /// The key file.
        path: PathBuf,
    },
}

/// This machine's secret key for what it publishes in the shared record:
/// the checksums there are keyed hashes under it, so that a reader of the
/// remote cannot test guesses of a file's content against them.
#[derive(Clone, PartialEq, Eq)]
pub struct RecordKey([u8; 32]);

impl RecordKey {
    /// A key of these bytes (tests, and a key read from its file).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        RecordKey(bytes)
    }

    /// A fresh key: 244 random bits from the OS generator (two UUID v4s),
    /// through blake3 for a uniform 32 bytes; no extra dependency for
    /// randomness.
    fn random() -> Self {
        let mut hasher = blake3::Hasher::new();
        hasher.update(Uuid::new_v4().as_bytes());
        hasher.update(Uuid::new_v4().as_bytes());
        RecordKey(*hasher.finalize().as_bytes())
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for RecordKey {
    // A secret is never printed, not even in a debug dump.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordKey(..)")
    }
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
    if fsutil::create_once(layout.state_dir(), &path, format!("{id}\n").as_bytes())? {
        return Ok(id);
    }
    read_id(&path)?.ok_or(MachineError::Corrupt {
        path,
        content: String::new(),
    })
}

/// Reads this machine's record key, making it on first use (the state dir
/// must exist). Made like the machine id: written 0600 to a temp name and
/// hard-linked into place, so two racing processes agree on one key.
pub fn load_or_create_record_key(layout: &Layout) -> Result<RecordKey, MachineError> {
    let path = layout.record_key_file();
    if let Some(key) = read_record_key(&path)? {
        return Ok(key);
    }
    let key = RecordKey::random();
    let text = format!("{}\n", blake3::Hash::from_bytes(key.0).to_hex());
    if fsutil::create_once(layout.state_dir(), &path, text.as_bytes())? {
        return Ok(key);
    }
    read_record_key(&path)?.ok_or(MachineError::CorruptKey { path })
}

/// This machine's record key for a command that writes nothing: the kept
/// key if there is one, else a fresh key held in memory only. A machine with
/// no key file has published no checksum it could recognise as its own, so a
/// throw-away key compares exactly as the kept one would.
pub fn record_key_read_only(layout: &Layout) -> Result<RecordKey, MachineError> {
    Ok(read_record_key(&layout.record_key_file())?.unwrap_or_else(RecordKey::random))
}

/// Reads the record key if its file exists.
fn read_record_key(path: &std::path::Path) -> Result<Option<RecordKey>, MachineError> {
    match crate::ownfile::read(path) {
        Ok(bytes) => blake3::Hash::from_hex(String::from_utf8_lossy(&bytes).trim())
            .map(|h| Some(RecordKey(*h.as_bytes())))
            .map_err(|_| MachineError::CorruptKey {
                path: path.to_path_buf(),
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(FsError::new("cannot read", path, e).into()),
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

/// The kernel release (`uname -r`), or empty when it cannot be read.
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .ok()
        .and_then(|u| u.release().to_str().map(str::to_string))
        .unwrap_or_default()
}

/// The distribution, from os-release (`/etc/os-release`, else
/// `/usr/lib/os-release`); fields it does not have are empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsRelease {
    /// `ID` (`debian`, `fedora`, `arch`).
    pub id: String,
    /// `VERSION_ID` (`13`, `41`); rolling releases have none.
    pub version_id: String,
}

impl OsRelease {
    /// This machine's; all empty when there is no os-release (macOS).
    pub fn read() -> OsRelease {
        ["/etc/os-release", "/usr/lib/os-release"]
            .iter()
            .find_map(|p| std::fs::read_to_string(p).ok())
            .map(|text| OsRelease::parse(&text))
            .unwrap_or_default()
    }

    /// Reads `KEY=value` lines (values may be quoted, as the format allows).
    pub fn parse(text: &str) -> OsRelease {
        let mut release = OsRelease::default();
        for line in text.lines() {
            let Some((key, value)) = line.trim().split_once('=') else {
                continue;
            };
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(value)
                .to_string();
            match key {
                "ID" => release.id = value,
                "VERSION_ID" => release.version_id = value,
                _ => {}
            }
        }
        release
    }
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
    fn os_release_id_and_version_quoted_or_not() {
        let text = "NAME=\"Debian GNU/Linux\"\nID=debian\nVERSION_ID=\"13\"\n# c\nbad line\n";
        let r = OsRelease::parse(text);
        assert_eq!((r.id.as_str(), r.version_id.as_str()), ("debian", "13"));
        assert_eq!(OsRelease::parse("ID='arch'\n").id, "arch");
        assert_eq!(OsRelease::parse(""), OsRelease::default());
    }

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
    fn record_key_is_made_once_private_and_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path(), None);
        fs::create_dir_all(layout.state_dir()).unwrap();
        let a = load_or_create_record_key(&layout).unwrap();
        let b = load_or_create_record_key(&layout).unwrap();
        assert_eq!(a, b);
        let mode = fs::metadata(layout.record_key_file())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(format!("{a:?}"), "RecordKey(..)");
        // Another state dir, another key.
        let other = tempfile::tempdir().unwrap();
        let other = Layout::new(other.path(), None);
        fs::create_dir_all(other.state_dir()).unwrap();
        assert_ne!(load_or_create_record_key(&other).unwrap(), a);
        fs::write(layout.record_key_file(), "short").unwrap();
        let err = load_or_create_record_key(&layout).unwrap_err();
        assert!(matches!(err, MachineError::CorruptKey { .. }), "{err}");
    }

    #[test]
    fn facts_are_filled() {
        let m = MachineInfo::current("x");
        assert!(!m.hostname.is_empty());
        assert!(!m.user.is_empty());
        assert_eq!(m.os, std::env::consts::OS);
    }
}
