//! `stead.toml`: parse, select the profile, resolve references, and return
//! the resources to converge, or every problem found with its place.
//!
//! The manifest is walked by hand over `toml`'s spanned tables (not derived
//! with serde) so that all problems are collected in one pass and each keeps
//! its line and column.

pub mod compiled;
mod diag;
mod input;
mod parse;
mod pieces;
mod refs;
pub mod schema;
mod walker;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thin_vec::ThinVec;

pub use diag::{LineIndex, ManifestError, Problem, ProblemReport, SHOWN_PROBLEMS};
pub use input::SpecInput;
pub use refs::ContentPart;

/// The `${secret.NAME}` references of `text`, by name (`secret.NAME`) and
/// byte range. Only these are looked for: any other `${`, closed or not,
/// is text (a template's own shell `${VAR}`), and `$${secret.NAME}` is not
/// a reference.
pub fn secret_references(text: &str) -> Vec<(String, Range<usize>)> {
    let mut out = Vec::new();
    for (start, _) in text.match_indices("${secret.") {
        if start > 0 && text.as_bytes()[start - 1] == b'$' {
            continue;
        }
        let Some(len) = text[start..].find('}') else {
            continue;
        };
        let name = text[start + 2..start + len].trim();
        if crate::secret::is_plain_name(&name["secret.".len()..]) {
            out.push((name.to_string(), start..start + len + 1));
        }
    }
    out
}

/// The manifest's file name at the root of a config repo.
pub const MANIFEST_FILE: &str = "stead.toml";

/// A kind of resource, by the name used in manifests, ids, state and saved
/// plans. Open (a name, not a closed enum) so that a new kind is one file in
/// `resource/` and one line in [`crate::resource::registry`]; the registry is
/// the one place that maps a name to its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Kind(&'static str);

// The built-in kinds keep their enum-like names so `Kind::File` reads (and
// matches) as before.
#[allow(non_upper_case_globals)]
impl Kind {
    /// A file from `source`, `content` or `template`.
    pub const File: Kind = Kind("file");
    /// A directory.
    pub const Dir: Kind = Kind("dir");
    /// A symbolic link.
    pub const Symlink: Kind = Kind("symlink");
    /// A command.
    pub const Exec: Kind = Kind("exec");
    /// Does nothing (grouping, tests, benchmarks).
    pub const Noop: Kind = Kind("noop");
}

impl Kind {
    /// A kind named `name` (for a kind's own file; the registry lists it).
    pub const fn named(name: &'static str) -> Kind {
        Kind(name)
    }

    /// The name used in manifests and ids.
    pub fn as_str(self) -> &'static str {
        self.0
    }
}

impl serde::Serialize for Kind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0)
    }
}

/// Where a file's content comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FileContent {
    /// A file in the config repo (absolute path after resolution).
    Source(PathBuf),
    /// Inline text (references already resolved).
    Inline(String),
    /// A minijinja template in the config repo.
    Template(PathBuf),
    /// Inline text holding at least one `${secret.NAME}` or
    /// `${exec.NAME.stdout}`: the text and the values' names, never the
    /// values (put in when the file is planned and written).
    Secret(Vec<ContentPart>),
}

/// A file resource.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileSpec {
    /// The target path (absolute).
    pub path: PathBuf,
    /// The content, unless `ensure = "absent"`.
    pub content: Option<FileContent>,
    /// Permission bits.
    pub mode: Option<u32>,
    /// `sensitive = true`: its content is never shown (plan diffs, plan
    /// JSON, saved plans, drift).
    pub sensitive: bool,
}

/// A directory resource.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DirSpec {
    /// The directory (absolute).
    pub path: PathBuf,
    /// Permission bits.
    pub mode: Option<u32>,
    /// Remove entries that no resource manages.
    pub purge: bool,
}

/// A symlink resource.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SymlinkSpec {
    /// The link (absolute).
    pub path: PathBuf,
    /// What it points to (absolute).
    pub target: PathBuf,
}

pub use crate::command::Command;

/// An exec resource.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExecSpec {
    /// What to run.
    pub command: Command,
    /// Working directory.
    pub cwd: Option<PathBuf>,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// Killed after this long.
    pub timeout: Option<Duration>,
    /// Skip when this path exists.
    pub creates: Option<PathBuf>,
    /// Skip when this command succeeds.
    pub unless: Option<Command>,
    /// Run only when this command succeeds.
    pub onlyif: Option<Command>,
    /// A one-shot step: once a run with this key succeeded (recorded in the
    /// journal), it never runs again. `once = true` sets it to `once:<id>`;
    /// `idempotency_key = "..."` sets it explicitly.
    pub idempotency_key: Option<String>,
    /// Runs only when refreshed: a resource that `notify`s it changed (in
    /// this run, or in an interrupted one whose refresh is still pending).
    pub refresh_only: bool,
    /// `output = true`: its stdout is a value (`${exec.NAME.stdout}`), kept
    /// encrypted under this id when it runs.
    pub output: Option<String>,
}

/// What a resource declares, per kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    /// `[file.NAME]`
    File(FileSpec),
    /// `[dir.NAME]`
    Dir(DirSpec),
    /// `[symlink.NAME]`
    Symlink(SymlinkSpec),
    /// `[exec.NAME]` (boxed: the largest spec, and most resources are files)
    Exec(Box<ExecSpec>),
    /// `[noop.NAME]`
    Noop,
    /// A kind that keeps its own spec type in its own file (see
    /// [`crate::resource::kind`]), so adding it changes no enum here.
    Other(OtherSpec),
}

/// The spec of a kind that is not one of the enum's variants: its kind, the
/// path it manages (if any) and its own typed data.
#[derive(Debug, Clone)]
pub struct OtherSpec {
    /// The kind.
    pub kind: Kind,
    /// The path the resource manages, if any.
    pub path: Option<PathBuf>,
    /// The kind's own spec (downcast with [`OtherSpec::data`]).
    pub data: std::sync::Arc<dyn SpecData>,
}

impl OtherSpec {
    /// The kind's own spec, if it is a `T`.
    pub fn data<T: 'static>(&self) -> Option<&T> {
        self.data.as_any().downcast_ref::<T>()
    }
}

impl PartialEq for OtherSpec {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.path == other.path && self.data.eq_data(&*other.data)
    }
}

impl Eq for OtherSpec {}

/// Data a kind keeps in an [`OtherSpec`]: any plain value that can be
/// compared and printed (implemented for every such type).
pub trait SpecData: std::fmt::Debug + Send + Sync + 'static {
    /// For the downcast in [`OtherSpec::data`].
    fn as_any(&self) -> &dyn std::any::Any;
    /// Equality with another kind's data (false when the types differ).
    fn eq_data(&self, other: &dyn SpecData) -> bool;
}

impl<T: std::fmt::Debug + PartialEq + Send + Sync + 'static> SpecData for T {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn eq_data(&self, other: &dyn SpecData) -> bool {
        other.as_any().downcast_ref::<T>() == Some(self)
    }
}

impl Spec {
    /// The kind of this spec.
    pub fn kind(&self) -> Kind {
        match self {
            Spec::File(_) => Kind::File,
            Spec::Dir(_) => Kind::Dir,
            Spec::Symlink(_) => Kind::Symlink,
            Spec::Exec(_) => Kind::Exec,
            Spec::Noop => Kind::Noop,
            Spec::Other(o) => o.kind,
        }
    }

    /// Whether its content must never be shown (`sensitive = true`, or
    /// content that holds a secret).
    pub fn is_sensitive(&self) -> bool {
        matches!(self, Spec::File(f) if f.sensitive || matches!(f.content, Some(FileContent::Secret(_))))
    }

    /// The path the resource manages, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Spec::File(f) => Some(&f.path),
            Spec::Dir(d) => Some(&d.path),
            Spec::Symlink(s) => Some(&s.path),
            Spec::Exec(_) | Spec::Noop => None,
            Spec::Other(o) => o.path.as_deref(),
        }
    }
}

/// One declared resource in the active profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// `kind.name`.
    pub id: String,
    /// What it declares.
    pub spec: Spec,
    /// Ids it runs after (explicit `after`, and `before` of others).
    ///
    /// These four lists are [`ThinVec`]s: most resources leave them all
    /// empty, and four `Vec`s were 96 bytes of each resource for nothing
    /// (10 MB at 100 000 resources, held through the whole plan).
    pub after: ThinVec<String>,
    /// Ids it must run before.
    pub before: ThinVec<String>,
    /// Ids refreshed when it changes.
    pub notify: ThinVec<String>,
    /// Ids it references with `${kind.name}`.
    pub references: ThinVec<String>,
    /// How often to try again after a failure.
    pub retry: Retry,
    /// Where it is declared.
    pub span: Range<usize>,
}

/// `retry`, `delay` and `backoff` of a resource: tries after the first
/// failure, the pause before each, and whether the pause doubles each time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Retry {
    /// Extra attempts after the first (0: none).
    pub retries: u32,
    /// Pause before the first retry, in milliseconds.
    pub delay_ms: u64,
    /// Double the pause after each retry.
    pub exponential: bool,
    /// `retry = -1`: `stead watch` tries again after each pause, for ever
    /// (an apply, which must end, makes no retry of it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forever: bool,
}

impl Retry {
    /// The pause before retry number `n` (1-based).
    pub fn delay_before(&self, n: u32) -> std::time::Duration {
        let factor = if self.exponential {
            1u64.checked_shl(n.saturating_sub(1)).unwrap_or(u64::MAX)
        } else {
            1
        };
        std::time::Duration::from_millis(self.delay_ms.saturating_mul(factor))
    }
}

impl Resource {
    /// The resource kind.
    pub fn kind(&self) -> Kind {
        self.spec.kind()
    }
}

/// What a manifest needs from outside itself.
#[derive(Clone)]
pub struct LoadOptions {
    /// Where `~` points.
    pub home: PathBuf,
    /// The profile to use (else `settings.default_profile`).
    pub profile: Option<String>,
    /// The kinds a manifest may declare (`&resource::registry::REGISTRY`).
    pub kinds: &'static dyn schema::KindTable,
}

impl std::fmt::Debug for LoadOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadOptions")
            .field("home", &self.home)
            .field("profile", &self.profile)
            .field("kinds", &self.kinds.names())
            .finish()
    }
}

/// A loaded manifest: the resources of the active profile, in declaration order.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The `stead.toml` file.
    pub path: PathBuf,
    /// The config repo (the manifest's directory).
    pub config_dir: PathBuf,
    /// Where `~` points.
    pub home: PathBuf,
    /// `home` with every symlink in it resolved: resource paths are real
    /// paths (links among their ancestors are followed at load), so a path
    /// under it is shown and stored as `~/x` too.
    pub real_home: PathBuf,
    /// The active profile, if any.
    pub profile: Option<String>,
    /// Every profile the manifest declares (`[profile.NAME]` tables and the
    /// names resources list in `profiles`).
    pub profiles: BTreeSet<String>,
    /// Variables: `[vars]` overlaid with the active profile's vars.
    pub vars: BTreeMap<String, String>,
    /// Resources of the active profile, in declaration order.
    pub resources: Vec<Resource>,
    /// Paths that `purge` never removes, nor any directory holding them:
    /// the config repo (set at load) and whatever the caller adds (the CLI
    /// adds the state dir, which holds the record and the backups).
    pub protected: Vec<PathBuf>,
    /// The symlinks among the declared paths' (and the home's) ancestors
    /// that the load followed: the resources hold the real paths, so what
    /// they mean depends on these links too ([`crate::seal`]).
    pub followed_links: Vec<PathBuf>,
    /// `Some` when only part of the manifest was read (a repair's scope,
    /// [`compiled::read_scope`]): `resources` then holds that part alone,
    /// in the graph's order, and a plan of it plans that part and nothing
    /// else (no removals: what it does not hold is still declared).
    pub partial: Option<Partial>,
}

/// What a manifest read in part keeps of the whole one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partial {
    /// Every declared resource's marker paths (where its kind keeps that
    /// it ran: an exec's `creates`), as declared: a purge of any part must
    /// still leave every resource's markers alone.
    pub markers: Vec<PathBuf>,
}

/// A manifest as parsed, with every problem found so far: what is left to
/// check is its graph (cycles), which [`crate::graph::parse`] adds to the
/// same report.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The resources that loaded (edges to the others are dropped).
    pub manifest: Manifest,
    /// Problems found, in no particular order.
    pub problems: Vec<Problem>,
    /// The manifest text, for the problems' spans. Only a manifest with
    /// problems needs it: the manifest itself does not keep it (at 100 000
    /// resources it is 15 MB that a plan would hold for nothing).
    pub text: std::sync::Arc<String>,
}

impl Parsed {
    /// The manifest, or every problem in file order.
    pub fn finish(self) -> Result<Manifest, ManifestError> {
        let Parsed {
            manifest,
            mut problems,
            text,
        } = self;
        if problems.is_empty() {
            return Ok(manifest);
        }
        problems.sort_by_key(|p| p.span.as_ref().map_or(0, |s| s.start));
        Err(ManifestError {
            path: manifest.path,
            text,
            problems,
        })
    }
}

/// Why a manifest could not be read at all, or what is wrong in it.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// No `stead.toml` or unreadable.
    #[error("cannot read the manifest {path}: {source}{}", read_hint(source, dir))]
    Read {
        /// The manifest path.
        path: PathBuf,
        /// The config dir.
        dir: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Problems in the manifest.
    #[error(transparent)]
    Invalid(#[from] ManifestError),
}

/// What to check after a manifest could not be read: only a missing one
/// means the directory may not be a config repo.
fn read_hint(source: &std::io::Error, dir: &Path) -> String {
    if source.kind() == std::io::ErrorKind::NotFound {
        format!(
            "\nIs {} a stead config repo? It needs a stead.toml at its root.",
            dir.display()
        )
    } else {
        String::new()
    }
}

impl Manifest {
    /// Reads `<config_dir>/stead.toml` and parses it (see [`Manifest::parse_parts`]).
    pub fn read(config_dir: &Path, options: &LoadOptions) -> Result<Parsed, LoadError> {
        let path = config_dir.join(MANIFEST_FILE);
        let bytes = crate::ownfile::read(&path).map_err(|source| LoadError::Read {
            path: path.clone(),
            dir: config_dir.to_path_buf(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|e| not_utf8(&path, e))?;
        // Shared with the manifest as read, not copied (16 MB at 100 000 files).
        Ok(parse::parse(
            &std::sync::Arc::new(text),
            &path,
            config_dir,
            options,
        )?)
    }

    /// Parses manifest text as if read from `path` in `config_dir`: the
    /// manifest and its problems, except the graph's (an invalid TOML text
    /// is an error at once). [`crate::graph::parse`] checks the graph too.
    pub fn parse_parts(
        text: &str,
        path: &Path,
        config_dir: &Path,
        options: &LoadOptions,
    ) -> Result<Parsed, ManifestError> {
        parse::parse(
            &std::sync::Arc::new(text.to_string()),
            path,
            config_dir,
            options,
        )
    }

    /// Parses manifest text, without checking its graph for cycles (see
    /// [`crate::graph::parse`], which does).
    pub fn parse(
        text: &str,
        path: &Path,
        config_dir: &Path,
        options: &LoadOptions,
    ) -> Result<Manifest, ManifestError> {
        Manifest::parse_parts(text, path, config_dir, options)?.finish()
    }

    /// The resource with this id (a scan: build a map for lookups in a loop).
    pub fn get(&self, id: &str) -> Option<&Resource> {
        self.resources.iter().find(|r| r.id == id)
    }

    /// A path in the form stored in state: `~/x` under home, else absolute.
    pub fn display_path(&self, path: &Path) -> String {
        if !path.starts_with(&self.home) && path.starts_with(&self.real_home) {
            return display_path(&self.real_home, path);
        }
        display_path(&self.home, path)
    }
}

/// A manifest that is not UTF-8: a load error at the first bad byte (the
/// text is shown with it replaced by U+FFFD, which keeps every offset before
/// it).
fn not_utf8(path: &Path, e: std::string::FromUtf8Error) -> ManifestError {
    let at = e.utf8_error().valid_up_to();
    let bad = e.as_bytes().get(at).copied().unwrap_or(0);
    let text = String::from_utf8_lossy(e.as_bytes()).into_owned();
    let end = at + text[at..].chars().next().map_or(0, char::len_utf8);
    ManifestError {
        path: path.to_path_buf(),
        text: std::sync::Arc::new(text),
        problems: vec![
            Problem::at(at..end, format!("invalid UTF-8 (byte 0x{bad:02x})"))
                .label("not UTF-8")
                .help("a manifest is UTF-8 text; re-save it as UTF-8 or remove the byte"),
        ],
    }
}

/// `~/x` for a path under `home`, else the absolute path.
pub fn display_path(home: &Path, path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    // Called for every path of a plan: compare bytes where both are plain
    // (no `.`, `..`, doubled or trailing `/`), where the byte prefix and the
    // component prefix agree; else go by components.
    let plain = |p: &[u8]| {
        p.first() == Some(&b'/')
            && !p.windows(2).any(|w| w == b"//")
            && !p.ends_with(b"/")
            && !p.split(|b| *b == b'/').any(|c| c == b"." || c == b"..")
    };
    let (h, p) = (home.as_os_str().as_bytes(), path.as_os_str().as_bytes());
    if plain(h) && plain(p) {
        return match p.strip_prefix(h) {
            Some([]) => "~".to_string(),
            Some([b'/', rest @ ..]) => format!("~/{}", String::from_utf8_lossy(rest)),
            _ => path.display().to_string(),
        };
    }
    match path.strip_prefix(home) {
        Ok(rest) if rest.as_os_str().is_empty() => "~".to_string(),
        Ok(rest) => format!("~/{}", rest.display()),
        Err(_) => path.display().to_string(),
    }
}

/// The absolute path for a stored key (`~/x` or absolute).
pub fn expand_key(home: &Path, key: &str) -> PathBuf {
    if key == "~" {
        home.to_path_buf()
    } else if let Some(rest) = key.strip_prefix("~/") {
        home.join(rest)
    } else {
        PathBuf::from(key)
    }
}

#[cfg(test)]
mod tests;
