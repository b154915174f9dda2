//! This machine's age identity: an x25519 key kept in
//! `<state-dir>/identity.age` (0600), in the format `age-keygen` writes, so
//! that `age -d -i <state-dir>/identity.age` decrypts what stead encrypted
//! to it. Made once, like the machine id: written to a temp name and
//! hard-linked into place, so two racing processes agree on one key.

use std::io;
use std::path::Path;
use std::str::FromStr;

use age::secrecy::ExposeSecret;

use crate::fsutil::{self, FsError};
use crate::layout::Layout;

use super::SecretError;

/// This machine's identity (the private key). Its `Debug` never shows it.
pub struct Identity {
    key: age::x25519::Identity,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({})", self.recipient())
    }
}

impl Identity {
    /// A new random identity, kept nowhere (for a command that writes
    /// nothing on a machine that has none yet).
    pub(crate) fn ephemeral() -> Identity {
        Identity {
            key: age::x25519::Identity::generate(),
        }
    }

    /// The public recipient (`age1...`) others encrypt to.
    pub fn recipient(&self) -> String {
        self.key.to_public().to_string()
    }

    pub(crate) fn age(&self) -> &age::x25519::Identity {
        &self.key
    }

    /// A key for hashing secret-bearing content, derived from the private
    /// key: only this machine can recompute (or test guesses against) the
    /// checksums it records for such files.
    pub(crate) fn content_key(&self) -> [u8; 32] {
        let secret = self.key.to_string();
        blake3::derive_key(
            "stead 2026-12 secret-bearing content checksum",
            secret.expose_secret().as_bytes(),
        )
    }

    /// The identity file's text: what `age-keygen` writes.
    fn file_text(&self) -> String {
        format!(
            "# created by stead: {}\n# public key: {}\n{}\n",
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            self.recipient(),
            self.key.to_string().expose_secret()
        )
    }
}

/// Reads this machine's identity, `None` when it has none yet.
pub fn read(layout: &Layout) -> Result<Option<Identity>, SecretError> {
    let path = layout.identity_file();
    match crate::ownfile::read(&path) {
        Ok(bytes) => parse(&path, &bytes).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(FsError::new("cannot read", &path, e).into()),
    }
}

/// Reads this machine's identity, making it on first use (the state dir
/// must exist).
pub fn load_or_create(layout: &Layout) -> Result<Identity, SecretError> {
    if let Some(identity) = read(layout)? {
        return Ok(identity);
    }
    let path = layout.identity_file();
    let made = Identity {
        key: age::x25519::Identity::generate(),
    };
    let text = zeroize::Zeroizing::new(made.file_text());
    if fsutil::create_once(layout.state_dir(), &path, text.as_bytes())? {
        return Ok(made);
    }
    read(layout)?.ok_or(SecretError::CorruptIdentity { path })
}

/// The identity in an identity file's text: the first `AGE-SECRET-KEY-`
/// line (comments and blank lines skipped).
fn parse(path: &Path, bytes: &[u8]) -> Result<Identity, SecretError> {
    let text = zeroize::Zeroizing::new(String::from_utf8_lossy(bytes).into_owned());
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .and_then(|l| age::x25519::Identity::from_str(l).ok())
        .map(|key| Identity { key })
        .ok_or_else(|| SecretError::CorruptIdentity {
            path: path.to_path_buf(),
        })
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn made_once_private_and_read_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path(), Some(dir.path().join("state")));
        fs::create_dir_all(layout.state_dir()).unwrap();
        assert!(read(&layout).unwrap().is_none());
        let made = load_or_create(&layout).unwrap();
        let again = load_or_create(&layout).unwrap();
        assert_eq!(made.recipient(), again.recipient());
        assert!(made.recipient().starts_with("age1"));
        let meta = fs::metadata(layout.identity_file()).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let text = fs::read_to_string(layout.identity_file()).unwrap();
        assert!(text.contains(&format!("# public key: {}", made.recipient())));
        assert!(!format!("{made:?}").contains("AGE-SECRET-KEY"));
        // No temp left behind.
        let names: Vec<_> = fs::read_dir(layout.state_dir()).unwrap().collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn a_damaged_identity_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path(), Some(dir.path().to_path_buf()));
        fs::write(layout.identity_file(), "# nothing here\n").unwrap();
        let e = read(&layout).unwrap_err().to_string();
        assert!(e.contains("identity.age"), "{e}");
    }
}
