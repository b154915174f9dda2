//! Secrets at rest: generated values kept only age-encrypted, the machine's
//! identity that decrypts them, and the keyed checksums that stand for
//! secret-bearing content wherever stead records a checksum.
//!
//! A machine-scoped secret `NAME` is `<state-dir>/secrets/NAME.age`, binary
//! age encrypted to this machine's recipient and the declared admin
//! recipients (`age -d -i <state-dir>/identity.age` reads it), with the
//! recipients it was encrypted to in `NAME.recipients` (public keys only),
//! so a change of recipients is seen without decrypting. A lineage-scoped
//! secret is the same pair in `<config repo>/.stead/secrets/`, encrypted to
//! every member's recipient published in `.stead/recipients/`. An exec's
//! output value (`output = true`) is `<state-dir>/outputs/ID.age`. The
//! ciphertext is rewritten only when it is generated, rotated, or its
//! recipients change: a value is never generated twice for one name.
//!
//! Crash order: the ciphertext is written at a temp name, fsync'd, renamed
//! and its directory fsync'd before anything reads it; the files that use
//! it are written after (their resources wait for the secret's), so a kill
//! before the rename leaves no value anywhere (the next run generates one),
//! and a kill after it leaves the one value the next run keeps. A rotation
//! request (`NAME.rotate`) names the ciphertext it replaces, so once the new
//! one is in place the request is spent even if its file is still there.
//!
//! Values live in memory as [`SecretValue`] (zeroized on drop, redacted in
//! `Debug`); nothing here prints, logs or returns a value in an error.

pub mod identity;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::fsutil::{self, FsError};
use crate::layout::Layout;

pub use identity::Identity;

/// The prefix of a checksum of secret-bearing content: blake3 keyed by the
/// machine identity's content key ([`Identity`]), never published.
pub const CONTENT_PREFIX: &str = "secret-blake3:";

/// Whether `name` may name a secret: letters, digits, `_` and `-`, not
/// empty (it is a file name in the state dir or the config repo).
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// True for a checksum made with [`Secrets::content_checksum`].
pub fn is_secret_checksum(sum: &str) -> bool {
    sum.starts_with(CONTENT_PREFIX)
}

/// Why a secret could not be read, made or used. No variant carries a value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// A file could not be read or written.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// The identity file holds no age identity.
    #[error(
        "the identity file {path} holds no age identity (no AGE-SECRET-KEY- line); \
         restore it from a backup: without it this machine's secrets cannot be decrypted"
    )]
    CorruptIdentity {
        /// The identity file.
        path: PathBuf,
    },
    /// A stored secret (or exec output) does not decrypt with this
    /// machine's identity.
    #[error(
        "{name}: {path} cannot be decrypted with this machine's identity ({reason}); \
         restore the identity that encrypted it, or move {path} aside to generate a new value"
    )]
    Undecryptable {
        /// What it is (`secret.db`, `the output of exec.gen`).
        name: String,
        /// Its ciphertext.
        path: PathBuf,
        /// What age said.
        reason: String,
    },
    /// Encrypting failed.
    #[error("secret.{name}: cannot encrypt: {reason}")]
    Encrypt {
        /// The secret's name (or `backup`).
        name: String,
        /// What age said.
        reason: String,
    },
    /// A recipient is not an age x25519 recipient.
    #[error("{recipient:?} is not an age recipient (age1...): {reason}")]
    BadRecipient {
        /// The text given.
        recipient: String,
        /// Why it does not parse.
        reason: String,
    },
    /// This process keeps no secrets (a plan made without a state dir).
    #[error(
        "secret.{name} is not available here: this command has no state dir to keep secrets in"
    )]
    NoStore {
        /// The secret's name.
        name: String,
    },
    /// A file holding values was to be written before one of them exists.
    #[error(
        "not written: it holds {names}, and one has no value yet (its own change did not run, or failed); \
         see the lines above for why, then run 'stead apply' again"
    )]
    NoValue {
        /// The values it holds (`secret.db`, `exec.gen's output`).
        names: String,
    },
    /// The OS random generator failed.
    #[error("cannot generate secret.{name}: the OS random generator failed ({reason})")]
    Random {
        /// The secret's name.
        name: String,
        /// Why.
        reason: String,
    },
}

/// The characters a generated value is made of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Charset {
    /// `A-Z a-z 0-9`.
    Alnum,
    /// `0-9 a-f`.
    Hex,
    /// The base64 alphabet, `A-Z a-z 0-9 + /`.
    Base64,
    /// The given characters (each once).
    Custom(String),
}

impl Charset {
    /// `alnum`, `hex`, `base64`, or any other string: its own characters
    /// (at least two different, printable, none of them whitespace).
    pub fn parse(text: &str) -> Result<Charset, String> {
        match text {
            "alnum" => Ok(Charset::Alnum),
            "hex" => Ok(Charset::Hex),
            "base64" => Ok(Charset::Base64),
            custom => {
                let mut chars: Vec<char> = custom.chars().collect();
                chars.sort_unstable();
                chars.dedup();
                if let Some(c) = chars.iter().find(|c| c.is_whitespace() || c.is_control()) {
                    return Err(format!(
                        "a custom charset takes printable characters only, not {c:?}"
                    ));
                }
                if chars.len() < 2 {
                    return Err(
                        "a custom charset needs at least two different characters (or use \"alnum\", \"hex\", \"base64\")"
                            .into(),
                    );
                }
                Ok(Charset::Custom(chars.into_iter().collect()))
            }
        }
    }

    fn chars(&self) -> Vec<char> {
        const UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
        const LOWER: &str = "abcdefghijklmnopqrstuvwxyz";
        const DIGITS: &str = "0123456789";
        match self {
            Charset::Alnum => format!("{UPPER}{LOWER}{DIGITS}").chars().collect(),
            Charset::Hex => "0123456789abcdef".chars().collect(),
            Charset::Base64 => format!("{UPPER}{LOWER}{DIGITS}+/").chars().collect(),
            Charset::Custom(s) => s.chars().collect(),
        }
    }

    /// How the plan names it.
    pub fn describe(&self) -> String {
        match self {
            Charset::Alnum => "alnum".into(),
            Charset::Hex => "hex".into(),
            Charset::Base64 => "base64".into(),
            Charset::Custom(s) => format!("{} custom characters", s.chars().count()),
        }
    }
}

/// Where a secret is kept, and who shares it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// This machine's own: `<state-dir>/secrets/`, encrypted to it.
    #[default]
    Machine,
    /// The lineage's: `<config repo>/.stead/secrets/`, encrypted to every
    /// member machine that published its recipient.
    Lineage,
}

/// A declared secret: how its value is made and who else may decrypt it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretSpec {
    /// `NAME` of `[secret.NAME]`.
    pub name: String,
    /// Characters in a generated value.
    pub length: usize,
    /// What they are drawn from.
    pub charset: Charset,
    /// Admin or recovery recipients (`age1...`), besides the machines.
    pub recipients: Vec<String>,
    /// Where it is kept.
    #[serde(default)]
    pub scope: Scope,
}

/// A secret's value in memory: zeroized when dropped, never shown by `Debug`.
pub struct SecretValue(Zeroizing<Vec<u8>>);

impl SecretValue {
    /// The value's bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretValue(..)")
    }
}

/// Where the lineage's secrets are in a config repo.
pub const LINEAGE_SECRETS_DIR: &str = ".stead/secrets";

/// Where each member machine publishes its recipient in a config repo
/// (`<machine-id>`, one line).
pub const RECIPIENTS_DIR: &str = ".stead/recipients";

/// Where this machine keeps its secrets and the identity that opens them.
/// Cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct Secrets(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    /// `<state-dir>/secrets`, `None` when this process keeps none.
    dir: Option<PathBuf>,
    /// The config repo, for lineage secrets (`None`: not known here).
    config: Option<PathBuf>,
    identity: Arc<Identity>,
    /// The identity is this machine's kept one (not a throw-away).
    kept: bool,
}

impl Secrets {
    /// The secrets of the state dir of `layout`. `create`: make the
    /// identity if there is none (the state dir must exist); else a machine
    /// with none gets a throw-away identity in memory (it has no stored
    /// secret to open, and checksums made with it are never recorded).
    pub fn open(layout: &Layout, create: bool) -> Result<Secrets, SecretError> {
        let (identity, kept) = if create {
            (identity::load_or_create(layout)?, true)
        } else {
            match identity::read(layout)? {
                Some(i) => (i, true),
                None => (Identity::ephemeral(), false),
            }
        };
        Ok(Secrets(Arc::new(Inner {
            dir: Some(layout.secrets_dir()),
            config: None,
            identity: Arc::new(identity),
            kept,
        })))
    }

    /// No store: every secret is unavailable (plans made outside a state
    /// dir, tests of other kinds).
    pub fn unavailable() -> Secrets {
        Secrets(Arc::new(Inner {
            dir: None,
            config: None,
            identity: Arc::new(Identity::ephemeral()),
            kept: false,
        }))
    }

    /// The same secrets, with the lineage's kept in `config_dir`.
    pub fn with_config(&self, config_dir: &Path) -> Secrets {
        Secrets(Arc::new(Inner {
            dir: self.0.dir.clone(),
            config: Some(config_dir.to_path_buf()),
            identity: Arc::clone(&self.0.identity),
            kept: self.0.kept,
        }))
    }

    /// This machine's recipient, when it has a kept identity.
    pub fn recipient(&self) -> Option<String> {
        self.0.kept.then(|| self.0.identity.recipient())
    }

    fn dir(&self, scope: Scope, name: &str) -> Result<PathBuf, SecretError> {
        let none = || SecretError::NoStore {
            name: name.to_string(),
        };
        match scope {
            Scope::Machine => self.0.dir.clone().ok_or_else(none),
            Scope::Lineage => self
                .0
                .config
                .as_ref()
                .map(|c| c.join(LINEAGE_SECRETS_DIR))
                .ok_or_else(none),
        }
    }

    /// Where the ciphertext of `name` is (or would be).
    pub fn path_of(&self, scope: Scope, name: &str) -> Result<PathBuf, SecretError> {
        Ok(self.dir(scope, name)?.join(format!("{name}.age")))
    }

    fn side_file(&self, scope: Scope, name: &str, suffix: &str) -> Result<PathBuf, SecretError> {
        Ok(self.dir(scope, name)?.join(format!("{name}.{suffix}")))
    }

    fn read_opt(path: &Path) -> Result<Option<Vec<u8>>, SecretError> {
        match crate::ownfile::read(path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(FsError::new("cannot read", path, e).into()),
        }
    }

    /// The value of `name`, decrypted; `None` when it was never generated.
    pub fn value(&self, scope: Scope, name: &str) -> Result<Option<SecretValue>, SecretError> {
        let path = self.path_of(scope, name)?;
        let Some(cipher) = Self::read_opt(&path)? else {
            return Ok(None);
        };
        age::decrypt(self.0.identity.age(), &cipher)
            .map(|plain| Some(SecretValue(Zeroizing::new(plain))))
            .map_err(|e| SecretError::Undecryptable {
                name: format!("secret.{name}"),
                path,
                reason: e.to_string(),
            })
    }

    /// The recipients `name` was last encrypted to (sorted), `None` when it
    /// has no ciphertext or no list.
    pub fn stored_recipients(
        &self,
        scope: Scope,
        name: &str,
    ) -> Result<Option<Vec<String>>, SecretError> {
        if fs::symlink_metadata(self.path_of(scope, name)?).is_err() {
            return Ok(None);
        }
        let list = Self::read_opt(&self.side_file(scope, name, "recipients")?)?;
        Ok(list.map(|b| lines(&b)))
    }

    /// Whether this machine is among the recipients `name` was encrypted to.
    pub fn is_recipient_of(&self, scope: Scope, name: &str) -> Result<bool, SecretError> {
        let me = self.0.identity.recipient();
        Ok(self
            .stored_recipients(scope, name)?
            .is_some_and(|list| list.contains(&me)))
    }

    /// The recipients the member machines published in the config repo
    /// (`.stead/recipients/*`), each checked.
    pub fn members(&self) -> Result<Vec<String>, SecretError> {
        let Some(config) = &self.0.config else {
            return Ok(Vec::new());
        };
        let dir = config.join(RECIPIENTS_DIR);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(FsError::new("cannot read", &dir, e).into()),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| FsError::new("cannot read", &dir, e))?;
            let path = entry.path();
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().contains(".tmp-"))
            {
                continue;
            }
            let Some(bytes) = Self::read_opt(&path)? else {
                continue;
            };
            for r in lines(&bytes) {
                parse_recipient(&r).map_err(|e| SecretError::BadRecipient {
                    recipient: r.clone(),
                    reason: format!("{} (published in {})", e, path.display()),
                })?;
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Who `spec` is encrypted to: this machine, its admin recipients and,
    /// for a lineage secret, every member; sorted, each once.
    pub fn wanted_recipients(&self, spec: &SecretSpec) -> Result<Vec<String>, SecretError> {
        let mut all: Vec<String> = spec.recipients.clone();
        all.push(self.0.identity.recipient());
        if spec.scope == Scope::Lineage {
            all.extend(self.members()?);
        }
        all.sort();
        all.dedup();
        Ok(all)
    }

    /// Whether a rotation of `name` was asked for and not done yet.
    pub fn rotation_requested(&self, scope: Scope, name: &str) -> Result<bool, SecretError> {
        let Some(request) = Self::read_opt(&self.side_file(scope, name, "rotate")?)? else {
            return Ok(false);
        };
        let current = Self::read_opt(&self.path_of(scope, name)?)?;
        Ok(current.is_some_and(|c| {
            String::from_utf8_lossy(&request).trim() == blake3::hash(&c).to_hex().as_str()
        }))
    }

    /// Asks for `name` to be generated anew by the next apply. `false`:
    /// it has no value yet (the next apply generates one anyway).
    pub fn request_rotation(&self, scope: Scope, name: &str) -> Result<bool, SecretError> {
        let Some(current) = Self::read_opt(&self.path_of(scope, name)?)? else {
            return Ok(false);
        };
        let marker = self.side_file(scope, name, "rotate")?;
        let text = format!("{}\n", blake3::hash(&current).to_hex());
        fsutil::atomic_write(&marker, text.as_bytes(), 0o600)?;
        Ok(true)
    }

    /// Generates a new value for `spec` and stores it (replacing any).
    pub fn generate(&self, spec: &SecretSpec) -> Result<(), SecretError> {
        let value = generate_value(spec)?;
        self.store(spec, &value)
    }

    /// Encrypts the kept value of `spec` again, to its recipients now.
    pub fn reencrypt(&self, spec: &SecretSpec) -> Result<(), SecretError> {
        match self.value(spec.scope, &spec.name)? {
            Some(value) => self.store(spec, value.expose()),
            None => self.generate(spec),
        }
    }

    /// Encrypts `value` to [`Secrets::wanted_recipients`], then writes the
    /// ciphertext durably, then the list of recipients, then drops a spent
    /// rotation request (see the module's crash order).
    fn store(&self, spec: &SecretSpec, value: &[u8]) -> Result<(), SecretError> {
        let (scope, name) = (spec.scope, spec.name.as_str());
        let dir = self.dir(scope, name)?;
        let recipients = self.wanted_recipients(spec)?;
        let cipher = encrypt(name, value, &recipients)?;
        match scope {
            Scope::Machine => fsutil::ensure_private_dir(&dir)?,
            // In the config repo: an ordinary directory that git tracks.
            Scope::Lineage => fs::create_dir_all(&dir)
                .map_err(|e| FsError::new("cannot create directory", &dir, e))?,
        }
        let mode = if scope == Scope::Machine {
            0o600
        } else {
            0o644
        };
        fsutil::atomic_write(&self.path_of(scope, name)?, &cipher, mode)?;
        let list: String = recipients.iter().map(|r| format!("{r}\n")).collect();
        fsutil::atomic_write(
            &self.side_file(scope, name, "recipients")?,
            list.as_bytes(),
            mode,
        )?;
        let marker = self.side_file(scope, name, "rotate")?;
        match fs::remove_file(&marker) {
            Ok(()) => fsutil::fsync_dir(&dir)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(FsError::new("cannot remove", &marker, e).into()),
        }
        Ok(())
    }

    /// Where the last stdout of the exec `id` (`output = true`) is kept:
    /// `<state-dir>/outputs/ID.age`, or a hash of the id when it is not a
    /// plain file name.
    fn output_path(&self, id: &str) -> Result<PathBuf, SecretError> {
        let dir = self.0.dir.as_deref().ok_or_else(|| SecretError::NoStore {
            name: id.to_string(),
        })?;
        let outputs = dir.with_file_name("outputs");
        let plain = !id.starts_with('.')
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        let name = if plain {
            id.to_string()
        } else {
            blake3::hash(id.as_bytes()).to_hex()[..32].to_string()
        };
        Ok(outputs.join(format!("{name}.age")))
    }

    /// Keeps `stdout` as the value of the exec `id`, encrypted to this
    /// machine (written durably before the files that use it are).
    pub fn keep_output(&self, id: &str, stdout: &[u8]) -> Result<(), SecretError> {
        let path = self.output_path(id)?;
        let cipher = self.encrypt_to_self(stdout)?;
        if let Some(dir) = path.parent() {
            fsutil::ensure_private_dir(dir)?;
        }
        fsutil::atomic_write(&path, &cipher, 0o600)?;
        Ok(())
    }

    /// The stdout the exec `id` printed when it last ran, `None` if it never
    /// ran with `output = true`.
    pub fn output(&self, id: &str) -> Result<Option<SecretValue>, SecretError> {
        let path = self.output_path(id)?;
        let Some(cipher) = Self::read_opt(&path)? else {
            return Ok(None);
        };
        age::decrypt(self.0.identity.age(), &cipher)
            .map(|plain| Some(SecretValue(Zeroizing::new(plain))))
            .map_err(|e| SecretError::Undecryptable {
                name: format!("the output of {id}"),
                path,
                reason: e.to_string(),
            })
    }

    /// `secret-blake3:<hex>` of secret-bearing content, keyed by this
    /// machine's identity.
    pub fn content_checksum(&self, bytes: &[u8]) -> String {
        let key = Zeroizing::new(self.0.identity.content_key());
        format!(
            "{CONTENT_PREFIX}{}",
            blake3::keyed_hash(&key, bytes).to_hex()
        )
    }

    /// `bytes` encrypted to this machine alone (backups of secret-bearing
    /// files).
    pub fn encrypt_to_self(&self, bytes: &[u8]) -> Result<Vec<u8>, SecretError> {
        age::encrypt(&self.0.identity.age().to_public(), bytes).map_err(|e| SecretError::Encrypt {
            name: "backup".into(),
            reason: e.to_string(),
        })
    }
}

/// The non-empty lines of a small text file, trimmed.
fn lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Writes this machine's recipient to `<config_dir>/.stead/recipients/<id>`
/// when it is not there already, and returns whether it wrote.
pub fn publish_recipient(
    config_dir: &Path,
    machine_id: &str,
    recipient: &str,
) -> Result<bool, SecretError> {
    let dir = config_dir.join(RECIPIENTS_DIR);
    let path = dir.join(machine_id);
    let text = format!("{recipient}\n");
    if Secrets::read_opt(&path)?.is_some_and(|b| b == text.as_bytes()) {
        return Ok(false);
    }
    fs::create_dir_all(&dir).map_err(|e| FsError::new("cannot create directory", &dir, e))?;
    fsutil::atomic_write(&path, text.as_bytes(), 0o644)?;
    Ok(true)
}

/// A machine leaves the lineage: its published recipient is removed, and
/// every lineage secret it could read is marked for rotation (the next
/// apply of a remaining member generates each anew, for the members left).
/// Returns the secrets marked.
pub fn retire_member(
    config_dir: &Path,
    machine_id: &str,
    recipient_of: &Secrets,
) -> Result<Vec<String>, SecretError> {
    let path = config_dir.join(RECIPIENTS_DIR).join(machine_id);
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(FsError::new("cannot remove", &path, e).into()),
    }
    let dir = config_dir.join(LINEAGE_SECRETS_DIR);
    let mut marked = Vec::new();
    let Ok(entries) = fs::read_dir(&dir) else {
        return Ok(marked);
    };
    let secrets = recipient_of.with_config(config_dir);
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(name) = file.strip_suffix(".age") else {
            continue;
        };
        if secrets.request_rotation(Scope::Lineage, name)? {
            marked.push(name.to_string());
        }
    }
    marked.sort();
    Ok(marked)
}

/// Checks that `text` is an age x25519 recipient.
pub fn check_recipient(text: &str) -> Result<(), SecretError> {
    parse_recipient(text).map(|_| ())
}

fn parse_recipient(text: &str) -> Result<age::x25519::Recipient, SecretError> {
    text.parse::<age::x25519::Recipient>()
        .map_err(|reason| SecretError::BadRecipient {
            recipient: text.to_string(),
            reason: reason.to_string(),
        })
}

fn encrypt(name: &str, value: &[u8], recipients: &[String]) -> Result<Vec<u8>, SecretError> {
    let parsed = recipients
        .iter()
        .map(|r| parse_recipient(r))
        .collect::<Result<Vec<_>, _>>()?;
    let encryptor = age::Encryptor::with_recipients(
        parsed.iter().map(|r| r as &dyn age::Recipient),
    )
    .map_err(|e| SecretError::Encrypt {
        name: name.to_string(),
        reason: e.to_string(),
    })?;
    let fail = |e: io::Error| SecretError::Encrypt {
        name: name.to_string(),
        reason: e.to_string(),
    };
    let mut out = Vec::with_capacity(value.len() + 512);
    let mut writer = encryptor.wrap_output(&mut out).map_err(fail)?;
    io::Write::write_all(&mut writer, value).map_err(fail)?;
    writer.finish().map_err(fail)?;
    Ok(out)
}

/// `spec.length` characters of its charset, each drawn uniformly from the
/// OS generator (bytes that would bias the draw are thrown away).
fn generate_value(spec: &SecretSpec) -> Result<Zeroizing<Vec<u8>>, SecretError> {
    let chars = spec.charset.chars();
    let n = chars.len().clamp(1, 256);
    // The largest multiple of n that fits in a byte's 256 values.
    let limit = 256 - (256 % n);
    let mut out = Zeroizing::new(String::with_capacity(spec.length * 4));
    let mut pool = Zeroizing::new([0u8; 64]);
    let mut drawn = 0;
    while drawn < spec.length {
        getrandom::fill(&mut pool[..]).map_err(|e| SecretError::Random {
            name: spec.name.clone(),
            reason: e.to_string(),
        })?;
        for &b in pool.iter() {
            if drawn == spec.length {
                break;
            }
            if usize::from(b) < limit {
                out.push(chars[usize::from(b) % n]);
                drawn += 1;
            }
        }
    }
    Ok(Zeroizing::new(out.as_bytes().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Layout, Secrets) {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path(), Some(dir.path().join("state")));
        fs::create_dir_all(layout.state_dir()).unwrap();
        let secrets = Secrets::open(&layout, true).unwrap();
        (dir, layout, secrets)
    }

    fn spec(name: &str, length: usize, charset: Charset) -> SecretSpec {
        SecretSpec {
            name: name.into(),
            length,
            charset,
            recipients: Vec::new(),
            scope: Scope::Machine,
        }
    }

    #[test]
    fn a_generated_value_has_its_length_and_charset_and_decrypts() {
        let (_d, _l, s) = store();
        for (charset, allowed) in [
            (Charset::Hex, "0123456789abcdef"),
            (Charset::Custom("xy".into()), "xy"),
            (
                Charset::Alnum,
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
            ),
        ] {
            let sp = spec("v", 48, charset);
            s.generate(&sp).unwrap();
            let v = s.value(Scope::Machine, "v").unwrap().unwrap();
            assert_eq!(v.expose().len(), 48);
            assert!(v.expose().iter().all(|b| allowed.as_bytes().contains(b)));
            // Every character of a two-character set occurs in 48 draws
            // (the chance of not is 2^-47).
            if allowed == "xy" {
                assert!(v.expose().contains(&b'x') && v.expose().contains(&b'y'));
            }
            assert_eq!(format!("{v:?}"), "SecretValue(..)");
        }
    }

    #[test]
    fn reencrypting_keeps_the_value_and_records_the_recipients() {
        let (_d, _l, s) = store();
        let mut sp = spec("db", 24, Charset::Alnum);
        s.generate(&sp).unwrap();
        let before = s
            .value(Scope::Machine, "db")
            .unwrap()
            .unwrap()
            .expose()
            .to_vec();
        let admin = age::x25519::Identity::generate();
        sp.recipients = vec![admin.to_public().to_string()];
        s.reencrypt(&sp).unwrap();
        assert_eq!(
            s.value(Scope::Machine, "db").unwrap().unwrap().expose(),
            &before[..]
        );
        let stored = s.stored_recipients(Scope::Machine, "db").unwrap().unwrap();
        assert_eq!(stored, s.wanted_recipients(&sp).unwrap());
        // The admin can decrypt it too.
        let cipher = fs::read(s.path_of(Scope::Machine, "db").unwrap()).unwrap();
        assert_eq!(age::decrypt(&admin, &cipher).unwrap(), before);
    }

    #[test]
    fn a_rotation_request_is_spent_once_the_value_changed() {
        let (_d, _l, s) = store();
        let sp = spec("k", 16, Charset::Hex);
        assert!(
            !s.request_rotation(Scope::Machine, "k").unwrap(),
            "nothing to rotate yet"
        );
        s.generate(&sp).unwrap();
        assert!(!s.rotation_requested(Scope::Machine, "k").unwrap());
        assert!(s.request_rotation(Scope::Machine, "k").unwrap());
        assert!(s.rotation_requested(Scope::Machine, "k").unwrap());
        // A kill after the new ciphertext but before the request is removed
        // must not rotate again: the request names the old ciphertext.
        let marker = s.side_file(Scope::Machine, "k", "rotate").unwrap();
        let kept = fs::read(&marker).unwrap();
        s.generate(&sp).unwrap();
        fs::write(&marker, kept).unwrap();
        assert!(!s.rotation_requested(Scope::Machine, "k").unwrap());
    }

    #[test]
    fn a_lineage_secret_is_encrypted_to_every_published_member() {
        let (_d, _l, mine) = store();
        let config = tempfile::tempdir().unwrap();
        let other = age::x25519::Identity::generate();
        let other_pub = other.to_public().to_string();
        publish_recipient(config.path(), "m-other", &other_pub).unwrap();
        assert!(!publish_recipient(config.path(), "m-other", &other_pub).unwrap());
        let s = mine.with_config(config.path());
        let sp = SecretSpec {
            scope: Scope::Lineage,
            ..spec("shared", 20, Charset::Hex)
        };
        s.generate(&sp).unwrap();
        let cipher = fs::read(config.path().join(".stead/secrets/shared.age")).unwrap();
        let mine_value = s.value(Scope::Lineage, "shared").unwrap().unwrap();
        assert_eq!(age::decrypt(&other, &cipher).unwrap(), mine_value.expose());
        // The member leaves: its recipient goes, the secret is due for rotation.
        let marked = retire_member(config.path(), "m-other", &mine).unwrap();
        assert_eq!(marked, ["shared"]);
        assert!(s.rotation_requested(Scope::Lineage, "shared").unwrap());
        assert!(!s.wanted_recipients(&sp).unwrap().contains(&other_pub));
        s.generate(&sp).unwrap();
        let cipher = fs::read(config.path().join(".stead/secrets/shared.age")).unwrap();
        assert!(age::decrypt(&other, &cipher).is_err());
    }

    #[test]
    fn a_published_recipient_that_is_not_one_is_an_error_naming_its_file() {
        let (_d, _l, mine) = store();
        let config = tempfile::tempdir().unwrap();
        let dir = config.path().join(RECIPIENTS_DIR);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("m-bad"), "not-a-key\n").unwrap();
        let e = mine
            .with_config(config.path())
            .members()
            .unwrap_err()
            .to_string();
        assert!(e.contains("not-a-key") && e.contains("m-bad"), "{e}");
    }

    #[test]
    fn content_checksums_are_keyed_by_the_machine() {
        let (_d, _l, a) = store();
        let (_e, _m, b) = store();
        let sum = a.content_checksum(b"pw");
        assert!(is_secret_checksum(&sum));
        assert_eq!(sum, a.content_checksum(b"pw"));
        assert_ne!(sum, b.content_checksum(b"pw"));
        assert!(!sum.contains(blake3::hash(b"pw").to_hex().as_str()));
    }

    #[test]
    fn custom_charsets_are_checked() {
        assert!(Charset::parse("a").is_err());
        assert!(Charset::parse("ab c").is_err());
        assert_eq!(Charset::parse("hex").unwrap(), Charset::Hex);
        assert_eq!(
            Charset::parse("baab").unwrap(),
            Charset::Custom("ab".into())
        );
    }
}
