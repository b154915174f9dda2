//! Resources: read the actual state (no side effects), diff it against the
//! declaration after normalizing, and apply one planned change idempotently.
//! One file per kind behind the [`kind::ResourceKind`] contract, found in
//! [`registry`]; this module holds what they share and dispatches to them.

pub mod check;
pub mod dir;
pub mod exec;
pub mod file;
pub mod kind;
pub mod line;
pub mod noop;
pub mod package;
pub mod registry;
pub mod secret;
pub mod symlink;
pub mod template;
pub mod tree;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil::FsError;
use crate::manifest::{Kind, Manifest, Resource, Spec};

pub use kind::{ApplyEnv, Drift, Planned};

/// What a plan will do to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// `+`: it does not exist yet.
    Create,
    /// `~`: it exists and differs (or an exec will run).
    Update,
    /// `-`: stead created it, and it is no longer declared (or `ensure = "absent"`).
    Remove,
    /// `!`: something stead does not own is in the way.
    Conflict,
    /// Already right.
    Unchanged,
}

impl Action {
    /// The plan symbol.
    pub fn symbol(self) -> &'static str {
        match self {
            Action::Create => "+",
            Action::Update => "~",
            Action::Remove => "-",
            Action::Conflict => "!",
            Action::Unchanged => " ",
        }
    }
}

/// Machine facts available to templates.
#[derive(Debug, Clone, Serialize)]
pub struct Facts {
    /// Hostname.
    pub hostname: String,
    /// `linux`, ...
    pub os: String,
    /// `x86_64`, ...
    pub arch: String,
    /// The user.
    pub user: String,
    /// The target home.
    pub home: String,
    /// The distribution's `ID` in os-release (`debian`); empty if unknown.
    pub distro: String,
    /// Its `VERSION_ID` (`13`); empty if unknown.
    pub distro_version: String,
    /// The kernel release (`uname -r`).
    pub kernel: String,
}

impl Facts {
    /// Facts of this machine with `home` as the target home.
    pub fn current(home: &Path) -> Facts {
        let os_release = crate::machine::OsRelease::read();
        Facts {
            hostname: crate::machine::hostname(),
            os: std::env::consts::OS.to_string(),
            arch: std::env::consts::ARCH.to_string(),
            user: crate::machine::current_user(),
            home: home.display().to_string(),
            distro: os_release.id,
            distro_version: os_release.version_id,
            kernel: crate::machine::kernel_release(),
        }
    }
}

/// What planning a resource needs.
pub struct PlanContext<'a, 's, 'o> {
    /// The manifest.
    pub manifest: &'a Manifest,
    /// Template facts.
    pub facts: &'a Facts,
    /// Paths stead owns, as stored in state (`~/x`), and the names it owns
    /// outside the filesystem (`apt:git`, [`crate::state::ResourceRecord::names`]).
    pub owned: &'a Owned<'o>,
    /// Checksums of what stead wrote, by path as stored in state: an owned
    /// file that no longer matches was changed by hand, and is backed up
    /// before it is overwritten.
    pub recorded: &'a Recorded<'a>,
    /// Replace what stead does not own (after a backup).
    pub force: bool,
    /// Paths resources keep their state in ([`kind::ResourceKind::marker_paths`],
    /// an exec's `creates`), real paths: a purge keeps them.
    pub markers: &'a [PathBuf],
    /// Files a `file` may trust by their `lstat`, and where it tells what
    /// it read and found right (see [`crate::stat_cache`]); `None`: every
    /// file is read and nothing is told.
    pub stat_cache: Option<&'a StatUse<'s>>,
    /// Directories this plan already found to be directories.
    pub known_dirs: KnownDirs,
    /// What one plan reads once for many resources.
    pub shared: SharedReads,
    /// Resources an interrupted run finished (its journal says they
    /// succeeded) before it could write the state: a kind that owns names
    /// plans them as its own ([`kind::ResourceKind::owned_names`]).
    pub recovered: &'a HashSet<String>,
    /// This machine's secrets: their values for secret-bearing files, and
    /// the keyed checksum of such files' content.
    pub secrets: &'a crate::secret::Secrets,
}

/// Every key (`~/x`) and name (`apt:git`) of the state record's resources,
/// and the real keys they reach (see `plan::make_scoped`), as a plan asks
/// for them: a resource's own record answers for its own keys, and the set
/// of every record's keys is built only when that cannot say (a path no
/// record of its own resource holds, a tree's strays, a package's name).
/// Built up front, that set was 3 ms of a 10 000-file plan whose every
/// question its own record answered (a repair, a planned no-op). Borrowed
/// from the state record where it can be: a copy of every key was one more
/// string per managed path.
pub struct Owned<'a> {
    records: Option<&'a BTreeMap<String, crate::state::ResourceRecord>>,
    /// The record's entries still in its text, for a record read in part.
    unread: Option<&'a crate::state::Unread>,
    all: std::sync::OnceLock<HashSet<std::borrow::Cow<'a, str>>>,
    build: Box<AllOwned<'a>>,
}

/// Builds [`Owned`]'s set of every key.
type AllOwned<'a> = dyn Fn() -> HashSet<std::borrow::Cow<'a, str>> + Sync + 'a;

impl<'a> Owned<'a> {
    /// What `records` own; `build` makes the set of every key, which must
    /// hold each record's keys and names.
    pub fn new(
        records: &'a BTreeMap<String, crate::state::ResourceRecord>,
        build: impl Fn() -> HashSet<std::borrow::Cow<'a, str>> + Sync + 'a,
    ) -> Owned<'a> {
        Owned {
            records: Some(records),
            unread: None,
            all: std::sync::OnceLock::new(),
            build: Box::new(build),
        }
    }

    /// Nothing owned.
    pub fn nothing() -> Owned<'a> {
        Owned {
            records: None,
            unread: None,
            all: std::sync::OnceLock::new(),
            build: Box::new(HashSet::new),
        }
    }

    /// Also what the entries of a record read in part still in its text
    /// own (`build` must then hold their keys too).
    pub fn with_unread(mut self, unread: &'a crate::state::Unread) -> Owned<'a> {
        self.unread = unread.is_partial().then_some(unread);
        self
    }

    /// Whether `key` is owned. `asking`: the resource that asks, whose own
    /// record is read first.
    pub fn contains(&self, asking: Option<&str>, key: &str) -> bool {
        let owns =
            |r: &crate::state::ResourceRecord| r.keys.iter().chain(&r.names).any(|k| k == key);
        let own = asking.is_some_and(|id| match self.records.and_then(|r| r.get(id)) {
            Some(record) => owns(record),
            None => self
                .unread
                .and_then(|u| u.resource(id)?.ok())
                .is_some_and(|r| owns(&r)),
        });
        own || self.all().contains(key)
    }

    /// Every key and name owned.
    pub fn all(&self) -> &HashSet<std::borrow::Cow<'a, str>> {
        self.all.get_or_init(&self.build)
    }
}

/// Checksums of what stead wrote, by path as stored in state (`~/x`): a
/// map, and for a record read in part the entries still in its text.
pub struct Recorded<'a> {
    map: &'a BTreeMap<String, crate::checksum::Checksum>,
    unread: Option<&'a crate::state::Unread>,
}

impl<'a> Recorded<'a> {
    /// The checksums of `map`, then those of `unread` (of a record read in
    /// part; empty otherwise).
    pub fn new(
        map: &'a BTreeMap<String, crate::checksum::Checksum>,
        unread: &'a crate::state::Unread,
    ) -> Recorded<'a> {
        Recorded {
            map,
            unread: unread.is_partial().then_some(unread),
        }
    }

    /// No checksum recorded.
    pub fn nothing() -> Recorded<'static> {
        static NONE: BTreeMap<String, crate::checksum::Checksum> = BTreeMap::new();
        Recorded {
            map: &NONE,
            unread: None,
        }
    }

    /// The checksum recorded for `key`.
    pub fn get(&self, key: &str) -> Option<std::borrow::Cow<'a, crate::checksum::Checksum>> {
        match self.map.get(key) {
            Some(sum) => Some(std::borrow::Cow::Borrowed(sum)),
            None => self.unread?.checksum(key).map(std::borrow::Cow::Owned),
        }
    }
}

/// What one plan reads once for many resources, by a kind's own key: a
/// package manager's database is queried once for every declared package,
/// not once per package. The first resource to ask reads; the planning
/// threads that ask meanwhile wait for that read.
#[derive(Default)]
pub struct SharedReads(std::sync::Mutex<HashMap<&'static str, SharedSlot>>);

type SharedSlot =
    std::sync::Arc<std::sync::OnceLock<std::sync::Arc<dyn std::any::Any + Send + Sync>>>;

impl SharedReads {
    /// The value under `key`, read by `read` the first time it is asked for.
    /// `None` when the key holds another type (two kinds sharing a key: a bug).
    pub fn get_or_read<T: std::any::Any + Send + Sync>(
        &self,
        key: &'static str,
        read: impl FnOnce() -> T,
    ) -> Option<std::sync::Arc<T>> {
        let slot = match self.0.lock() {
            Ok(mut map) => std::sync::Arc::clone(map.entry(key).or_default()),
            // A poisoned map only loses the sharing: this caller reads alone.
            Err(_) => std::sync::Arc::default(),
        };
        let value = slot.get_or_init(|| std::sync::Arc::new(read()));
        std::sync::Arc::clone(value).downcast::<T>().ok()
    }
}

impl std::fmt::Debug for SharedReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<&str> = self
            .0
            .lock()
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default();
        f.debug_tuple("SharedReads").field(&keys).finish()
    }
}

/// The ancestors one plan looked at, so the check that no file stands where
/// a resource's parent directory should be (`ancestor_in_the_way`) costs
/// one `stat` per directory, not one per resource (files share few
/// parents): each is a directory, or nothing (or under something that is
/// not one), which the check passes over to the next ancestor. A cold
/// apply's files are all in directories not yet made: each asked for its
/// own before. Shared by the planning threads.
#[derive(Debug, Default)]
pub struct KnownDirs(std::sync::Mutex<std::collections::HashMap<PathBuf, Ancestor>>);

/// What a plan found at an ancestor of a resource's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ancestor {
    /// A directory: nothing stands in the way.
    Dir,
    /// Nothing: the next ancestor is looked at.
    Absent,
}

impl KnownDirs {
    fn get(&self, dir: &Path) -> Option<Ancestor> {
        // A poisoned set only forgets: the check then asks the filesystem.
        self.0.lock().ok().and_then(|set| set.get(dir).copied())
    }

    fn insert(&self, dir: &Path, found: Ancestor) {
        if let Ok(mut set) = self.0.lock() {
            set.insert(dir.to_path_buf(), found);
        }
    }
}

/// What a plan does with the stat cache: trusts its entries, and collects
/// the entries of the next one (what it trusted or read and found right).
#[derive(Debug)]
pub struct StatUse<'a> {
    /// The cache of the last apply.
    pub cache: &'a crate::stat_cache::StatCache,
    /// The verification time to record (`None`: the clock, per file).
    pub now_ns: Option<i128>,
    /// The next cache's entries.
    pub next: std::sync::Mutex<Kept<'a>>,
}

/// The entries of the next stat cache, as the plan finds them: most are
/// the last cache's own, kept by reference (a no-op run of 100 000 files
/// would otherwise copy the whole cache to find it unchanged).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Kept<'a> {
    /// Keys whose entry in the last cache is kept unchanged.
    pub same: Vec<&'a str>,
    /// New or changed entries, already in the cache's own form: they become
    /// the next cache's vector as they are. (Boxed one by one, then copied
    /// into that vector, they were 12 MB more at 100 000 files read anew.)
    pub new: Vec<(Box<str>, crate::stat_cache::Entry)>,
}

impl<'a> StatUse<'a> {
    /// Uses `cache`, recording `now_ns` as the verification time; the next
    /// cache's entries are sized for `files` files (room reserved but never
    /// written costs no memory).
    pub fn new(
        cache: &'a crate::stat_cache::StatCache,
        now_ns: Option<i128>,
        files: usize,
    ) -> StatUse<'a> {
        StatUse {
            cache,
            now_ns,
            next: std::sync::Mutex::new(Kept {
                same: Vec::with_capacity(files),
                new: Vec::with_capacity(files),
            }),
        }
    }

    /// Keeps `entry` for `key` in the next cache.
    pub fn keep(&self, key: &str, entry: crate::stat_cache::Entry) {
        let same = match self.cache.get_key_value(key) {
            Some((own, old)) if *old == entry => Some(own),
            _ => None,
        };
        if let Ok(mut next) = self.next.lock() {
            match same {
                Some(own) => next.same.push(own),
                None => next.new.push((Box::from(key), entry)),
            }
        }
    }

    /// Keeps the last cache's entry for `key` (a key of that cache).
    pub fn keep_same(&self, key: &'a str) {
        if let Ok(mut next) = self.next.lock() {
            next.same.push(key);
        }
    }

    /// Now, for a verification.
    pub fn now(&self) -> i128 {
        self.now_ns.unwrap_or_else(crate::stat_cache::now_ns)
    }
}

/// One planned change, with everything apply needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// `kind.name`.
    pub id: String,
    /// The kind.
    #[serde(deserialize_with = "registry::deserialize_kind")]
    pub kind: Kind,
    /// What will happen.
    pub action: Action,
    /// The paths it touches, as stored in state (`~/x`).
    pub keys: Vec<String>,
    /// Why, in a few words (shown in the plan).
    pub reason: String,
    /// A unified diff of file content, when it changes.
    pub diff: Option<String>,
    /// `blake3:<hex>` of the declared file content (files only), packed
    /// ([`crate::checksum`]); the same text in JSON.
    pub checksum: Option<crate::checksum::Checksum>,
    /// What apply does.
    pub op: Op,
    /// Retries after a failure (`retry`, `delay`, `backoff`).
    #[serde(default)]
    pub retry: crate::manifest::Retry,
    /// Ids refreshed when this change does something (a [`thin_vec::ThinVec`]:
    /// empty in almost every change, and a `Vec` was 16 bytes more of each).
    #[serde(default)]
    pub notify: thin_vec::ThinVec<String>,
    /// Its content is never shown or saved (`sensitive = true`): its diff
    /// says so instead, and [`Plan::redacted`](crate::plan::Plan::redacted)
    /// drops the content it would write.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sensitive: bool,
}

/// What a sensitive file's diff and content say instead of its content.
pub const SENSITIVE_HIDDEN: &str = "(sensitive content hidden)";

/// The concrete operation apply performs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Nothing to do.
    None,
    /// Write a file atomically.
    WriteFile {
        /// Target.
        path: PathBuf,
        /// Content (text in JSON when it is UTF-8, else `{"hex": ...}`).
        #[serde(with = "bytes_text")]
        content: Vec<u8>,
        /// Mode to set.
        mode: u32,
        /// Back up what is there first (a forced overwrite).
        backup: bool,
        /// The backup is age-encrypted to the machine (a sensitive file).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        encrypt_backup: bool,
    },
    /// Write a file whose content holds secrets: the text and the secrets'
    /// names, rendered with their values only inside the write.
    WriteSecret {
        /// Target.
        path: PathBuf,
        /// The content, with each secret by name.
        parts: Vec<crate::manifest::ContentPart>,
        /// Mode to set (on the temp file before its first byte).
        mode: u32,
        /// Back up what is there first (encrypted to the machine).
        backup: bool,
    },
    /// Set a file's or dir's mode only.
    Chmod {
        /// Target.
        path: PathBuf,
        /// Mode.
        mode: u32,
    },
    /// Remove a file (backing it up when it was changed by hand).
    RemoveFile {
        /// Target.
        path: PathBuf,
        /// Back it up first.
        backup: bool,
        /// The backup is age-encrypted to the machine (a sensitive file).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        encrypt_backup: bool,
    },
    /// Create a directory.
    CreateDir {
        /// Target.
        path: PathBuf,
        /// Mode.
        mode: Option<u32>,
    },
    /// Remove entries inside a managed dir (purge), set its mode.
    PurgeDir {
        /// The dir.
        path: PathBuf,
        /// Mode to set, if it differs.
        mode: Option<u32>,
        /// Entries to remove (names on disk need not be UTF-8).
        #[serde(with = "paths_text")]
        purge: Vec<PathBuf>,
    },
    /// Remove an empty directory stead created.
    RemoveDir {
        /// Target.
        path: PathBuf,
    },
    /// Create or replace a symlink.
    Symlink {
        /// The link.
        path: PathBuf,
        /// Its target.
        target: PathBuf,
        /// Back up what is there first.
        backup: bool,
    },
    /// Remove a symlink stead created.
    RemoveSymlink {
        /// The link.
        path: PathBuf,
        /// Back it up first (it is not the link stead recorded making).
        #[serde(default)]
        backup: bool,
    },
    /// Run a command.
    Run(Box<exec::Run>),
    /// An op whose data belongs to its kind's own file (written with
    /// [`kind::custom_op`], read back with [`kind::custom_data`]), so a new
    /// kind needs no variant here. `line` uses it: its edit is made again on
    /// the file as it is when it runs.
    Custom {
        /// What the kind needs to apply it, as it wrote it.
        data: serde_json::Value,
    },
}

/// Why reading or applying a resource failed.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// A filesystem operation failed.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// Stead refused to act on a path that is not what the plan saw (a
    /// link in place of a directory, a target of another type).
    #[error(transparent)]
    Path(#[from] crate::safe_path::PathError),
    /// A template did not render.
    #[error("template {path}: {message}")]
    Template {
        /// The template file.
        path: PathBuf,
        /// What minijinja said (with the line).
        message: String,
    },
    /// A command failed.
    #[error("{0}")]
    Exec(String),
    /// A command ran and failed: the message (with its output, lossy), and
    /// its output as the exact bytes it wrote (capped), for the journal.
    #[error("{message}")]
    CommandFailed {
        /// What failed, and the output as text.
        message: String,
        /// The output as written.
        output: Vec<u8>,
    },
    /// A secret could not be read or made.
    #[error(transparent)]
    Secret(#[from] crate::secret::SecretError),
    /// A bug in stead, reported instead of silently dropped.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Every marker path `resources` declare
/// ([`kind::ResourceKind::marker_paths`]), in their order.
pub fn markers_of(resources: &[Resource]) -> Vec<&Path> {
    resources
        .iter()
        .flat_map(|r| registry::get(r.kind()).marker_paths(&r.spec))
        .collect()
}

/// Plans one declared resource.
pub fn plan(resource: &Resource, ctx: &PlanContext) -> Result<Change, ResourceError> {
    let keys: Vec<String> = resource
        .spec
        .path()
        .map(|p| ctx.manifest.display_path(p))
        .into_iter()
        .collect();
    let kind = registry::get(resource.kind());
    // A kind that owns names (no path) is stead's own when an interrupted
    // run finished it; its own plan says what it owns.
    let owned = keys
        .iter()
        .any(|k| ctx.owned.contains(Some(&resource.id), k))
        || (keys.is_empty() && kind.ownership().owns_path && ctx.recovered.contains(&resource.id));
    let planned = match resource
        .spec
        .path()
        .and_then(|p| ancestor_in_the_way(p, ctx))
    {
        Some(conflict) => conflict,
        None => kind.plan(&resource.spec, ctx, owned)?,
    };
    let sensitive = resource.spec.is_sensitive();
    // Decided here, for every kind, so no diff of a sensitive file escapes.
    let diff = match planned.diff {
        Some(_) if sensitive => Some(format!("{SENSITIVE_HIDDEN}\n")),
        diff => diff,
    };
    Ok(Change {
        id: resource.id.clone(),
        kind: resource.kind(),
        action: planned.action,
        keys,
        reason: planned.reason,
        diff,
        checksum: planned.checksum,
        op: planned.op,
        retry: resource.retry,
        notify: resource.notify.clone(),
        sensitive,
    })
}

/// A conflict when the nearest existing ancestor of `path` is not a
/// directory (a file where a declared dir should be): reading the path would
/// fail with "Not a directory" and abort the whole plan, while the dir's own
/// change already shows `!` for it.
fn ancestor_in_the_way(path: &Path, ctx: &PlanContext) -> Option<Planned> {
    for ancestor in path.ancestors().skip(1) {
        match ctx.known_dirs.get(ancestor) {
            Some(Ancestor::Dir) => return None,
            Some(Ancestor::Absent) => continue,
            None => {}
        }
        match std::fs::metadata(ancestor) {
            Ok(m) if m.is_dir() => {
                ctx.known_dirs.insert(ancestor, Ancestor::Dir);
                return None;
            }
            Ok(_) => {
                return Some(Planned::conflict(format!(
                    "{} is not a directory, so nothing can be placed under it; move it and apply again",
                    ctx.manifest.display_path(ancestor)
                )));
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(nix::libc::ENOTDIR) =>
            {
                ctx.known_dirs.insert(ancestor, Ancestor::Absent);
            }
            Err(_) => return None,
        }
    }
    None
}

/// Plans the removal of what stead created for a resource no longer declared.
///
/// Outside the home a removal needs proof that stead wrote what is there
/// (its recorded checksum matches) or `force`: a record that lost or never
/// had its checksum (a hand edit, bit rot, a bug) must not make stead delete
/// a system file. Removing an empty directory loses nothing and is allowed.
pub fn plan_removal(
    id: &str,
    record: &crate::state::ResourceRecord,
    home: &Path,
    checksums: &BTreeMap<String, crate::checksum::Checksum>,
    force: bool,
) -> Result<Change, ResourceError> {
    let imp = registry::find(&record.kind).unwrap_or(&noop::Noop);
    let keys = &record.keys;
    let planned = match keys.first() {
        Some(key) => {
            let path = crate::manifest::expand_key(home, key);
            // As text for the kinds (a removal is rare: the copy is cheap).
            let recorded = checksums.get(key).map(crate::checksum::Checksum::text);
            let planned = imp.plan_removal(&path, recorded.as_ref())?;
            guard_outside_home(planned, &path, home, recorded.as_ref(), force)
        }
        None if !record.names.is_empty() => imp.plan_removal_of_names(&record.names)?,
        None => Planned::new(Action::Remove, "no longer declared", Op::None),
    };
    Ok(Change {
        id: id.to_string(),
        kind: imp.kind(),
        action: planned.action,
        keys: keys.to_vec(),
        reason: planned.reason,
        diff: None,
        checksum: None,
        op: planned.op,
        retry: Default::default(),
        notify: Default::default(),
        sensitive: false,
    })
}

/// The removal as planned, or a conflict when it would remove something
/// outside the home that stead cannot prove it wrote (without `force`).
fn guard_outside_home(
    planned: Planned,
    path: &Path,
    home: &Path,
    recorded: Option<&String>,
    force: bool,
) -> Planned {
    let harmless = matches!(planned.op, Op::None | Op::RemoveDir { .. });
    let inside = crate::fsutil::normalize_lexically(path).starts_with(home);
    if harmless || inside || force || written_by_stead(path, recorded) {
        return planned;
    }
    let why = if recorded.is_some() {
        "it changed since stead wrote it"
    } else {
        "the state records no checksum for it"
    };
    Planned::conflict(format!(
        "no longer declared, but it is outside the home and {why}, so stead cannot prove it is \
         its own; 'stead apply --force' backs it up and removes it"
    ))
}

/// True if what is at `path` is what stead recorded writing there: a file
/// with the recorded checksum, or a link with the recorded target's
/// ([`link_checksum`]). Never opens anything but a regular file.
pub(crate) fn written_by_stead(path: &Path, recorded: Option<&String>) -> bool {
    let Some(recorded) = recorded else {
        return false;
    };
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return false;
    };
    let actual = if meta.file_type().is_symlink() {
        std::fs::read_link(path).ok().map(|t| link_checksum(&t))
    } else if meta.is_file() {
        std::fs::read(path).ok().map(|b| checksum(&b))
    } else {
        None
    };
    actual.as_ref() == Some(recorded)
}

/// What stead records for a link it made: `blake3:<hex>` of `symlink:` and
/// the link's text, so a removal can tell its own link from another.
pub fn link_checksum(target: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut bytes = b"symlink:".to_vec();
    bytes.extend_from_slice(target.as_os_str().as_bytes());
    checksum(&bytes)
}

/// Drift of one path a resource of kind `kind` recorded: `missing` when
/// nothing is there, else what the kind finds (see [`kind::ResourceKind::drift`]).
/// `vouch` tells, from the path's stat, whether its content is known to be
/// still `recorded` without reading it (the stat cache; never for `--full`).
pub fn drift(
    kind: &str,
    path: &Path,
    recorded: Option<&String>,
    vouch: &dyn Fn(&std::fs::Metadata) -> bool,
    declared: Option<&Spec>,
    secrets: &crate::secret::Secrets,
) -> Drift {
    match std::fs::symlink_metadata(path) {
        Err(_) => Drift {
            status: crate::state::DriftStatus::Missing,
            expected: recorded.cloned(),
            actual: None,
        },
        Ok(meta) => match registry::find(kind) {
            Some(k) => k.drift(path, &meta, recorded, vouch(&meta), declared, secrets),
            None => Drift::UNCHANGED,
        },
    }
}

/// What applying a change produced, for the state record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// `blake3:<hex>` of a written file.
    pub checksum: Option<String>,
    /// Where a backup was made.
    pub backup: Option<PathBuf>,
    /// Output of a command (for the summary), as text (lossy).
    pub output: Option<String>,
    /// A command's output as the exact bytes it wrote (capped), for the
    /// journal.
    pub captured: Option<Vec<u8>>,
    /// An exec whose guard, checked again right before running, said not
    /// to run it: why (it did nothing).
    pub not_run: Option<String>,
    /// What a check reported when it ran again after its migration steps.
    pub report: Option<Box<crate::check::Report>>,
}

/// Applies one change. Idempotent: applying an already-applied change is
/// harmless. Commands run as children of `control` (its reaper, its cancel).
pub fn apply(change: &Change, env: &ApplyEnv) -> Result<Applied, ResourceError> {
    match &change.op {
        Op::None => Ok(Applied::default()),
        op => registry::get(change.kind).apply(op, env),
    }
}

/// `blake3:<hex>` of bytes.
pub fn checksum(bytes: &[u8]) -> String {
    format!("blake3:{}", blake3::hash(bytes).to_hex())
}

pub(crate) use crate::backup::{backup, backup_encrypted, backup_existing};

/// Creates the parent directories of a path (test fixtures only: apply
/// creates parents with [`crate::safe_path`], never through a link).
#[cfg(test)]
pub(crate) fn ensure_parent(path: &Path) -> Result<(), FsError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| FsError::new("cannot create directory", parent, e))?;
    }
    Ok(())
}

/// The mode bits of a path (no symlink following).
pub(crate) fn mode_of(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o7777
}

/// Bytes in JSON as a string when they are UTF-8, else as `{"hex": "..."}`,
/// so saved plans stay readable.
pub(crate) mod bytes_text {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Text(String),
        Hex { hex: String },
    }

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(bytes) {
            Ok(t) => Repr::Text(t.to_string()).serialize(s),
            Err(_) => Repr::Hex {
                hex: bytes.iter().map(|b| format!("{b:02x}")).collect(),
            }
            .serialize(s),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Text(t) => Ok(t.into_bytes()),
            Repr::Hex { hex } => (0..hex.len())
                .step_by(2)
                .map(|i| {
                    hex.get(i..i + 2)
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                        .ok_or_else(|| serde::de::Error::custom("invalid hex content"))
                })
                .collect(),
        }
    }
}

/// Paths in JSON as strings when they are UTF-8, else as `{"lossy": "...",
/// "hex": "..."}` (readable, and exact when read back): a file name found
/// on disk (a purged entry) may be any bytes, and failing to encode it
/// panicked `--json plan`.
mod paths_text {
    use std::ffi::OsString;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    use std::path::PathBuf;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Text(String),
        Bytes {
            #[serde(default)]
            lossy: String,
            hex: String,
        },
    }

    pub fn serialize<S: Serializer>(paths: &[PathBuf], s: S) -> Result<S::Ok, S::Error> {
        let reprs: Vec<Repr> = paths
            .iter()
            .map(|p| match p.to_str() {
                Some(t) => Repr::Text(t.to_string()),
                None => Repr::Bytes {
                    lossy: p.to_string_lossy().into_owned(),
                    hex: p
                        .as_os_str()
                        .as_bytes()
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect(),
                },
            })
            .collect();
        reprs.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
        Vec::<Repr>::deserialize(d)?
            .into_iter()
            .map(|r| match r {
                Repr::Text(t) => Ok(PathBuf::from(t)),
                Repr::Bytes { hex, .. } => (0..hex.len())
                    .step_by(2)
                    .map(|i| {
                        hex.get(i..i + 2)
                            .and_then(|h| u8::from_str_radix(h, 16).ok())
                            .ok_or_else(|| serde::de::Error::custom("invalid hex path"))
                    })
                    .collect::<Result<Vec<u8>, D::Error>>()
                    .map(|b| PathBuf::from(OsString::from_vec(b))),
            })
            .collect()
    }
}

/// Shared fixture for the resource tests: a temp home, config repo, an
/// "outside" dir (never managed) and a backups dir, driven through the real
/// manifest parser, planner, engine and state recording.
#[cfg(test)]
pub(crate) mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::engine::{self, EngineOptions, Outcome, Status};
    use crate::graph::Graph;
    use crate::manifest::LoadOptions;
    use crate::plan::{self, Plan};
    use crate::state::State;

    pub(crate) struct Fixture {
        _root: tempfile::TempDir,
        pub home: PathBuf,
        pub repo: PathBuf,
        pub out: PathBuf,
        pub backups: PathBuf,
        pub state: State,
    }

    impl Fixture {
        pub fn new() -> Fixture {
            let root = tempfile::tempdir().unwrap();
            let dir = |n: &str| {
                let p = root.path().join(n);
                std::fs::create_dir_all(&p).unwrap();
                p
            };
            let (home, repo, out) = (dir("home"), dir("repo"), dir("out"));
            let backups = root.path().join("backups");
            Fixture {
                home,
                repo,
                out,
                backups,
                state: State::new(crate::machine::MachineInfo::current("test-machine")),
                _root: root,
            }
        }

        /// `@REPO@`, `@OUT@` and `@HOME@` in manifest text become the temp paths.
        pub fn text(&self, text: &str) -> String {
            text.replace("@REPO@", self.repo.to_str().unwrap())
                .replace("@OUT@", self.out.to_str().unwrap())
                .replace("@HOME@", self.home.to_str().unwrap())
        }

        /// `text` parsed as the repo's manifest, with every registered kind.
        fn parse(&self, text: &str) -> Result<Manifest, crate::manifest::ManifestError> {
            Manifest::parse(
                &self.text(text),
                &self.repo.join(crate::manifest::MANIFEST_FILE),
                &self.repo,
                &LoadOptions {
                    home: self.home.clone(),
                    profile: None,
                    kinds: &crate::resource::registry::REGISTRY,
                },
            )
        }

        pub fn manifest(&self, text: &str) -> Manifest {
            self.parse(text)
                .unwrap_or_else(|e| panic!("manifest does not load: {e}"))
        }

        /// The problems of a manifest that must not load.
        pub fn manifest_error(&self, text: &str) -> crate::manifest::ManifestError {
            match self.parse(text) {
                Err(e) => e,
                Ok(_) => panic!("the manifest loads, but must not:\n{text}"),
            }
        }

        pub fn plan(&self, text: &str) -> Plan {
            self.plan_with(text, false)
        }

        pub fn plan_with(&self, text: &str, force: bool) -> Plan {
            let m = self.manifest(text);
            let g = Graph::build(&m).unwrap();
            plan::make(&m, &g, &self.state, force, 2).unwrap_or_else(|e| panic!("{e}"))
        }

        /// Executes `plan` and records it into the fixture's state.
        pub fn execute(&mut self, plan: &Plan) -> Outcome {
            let outcome =
                engine::execute(plan, &EngineOptions::new(2, self.backups.clone()), &|_| {});
            let serial = self.state.lineage.serial + 1;
            plan::record(&mut self.state, plan, &outcome, serial);
            self.state.lineage.serial = serial;
            outcome
        }

        /// Plans and executes; returns both.
        pub fn apply_with(&mut self, text: &str, force: bool) -> (Plan, Outcome) {
            let plan = self.plan_with(text, force);
            let outcome = self.execute(&plan);
            (plan, outcome)
        }

        /// Plans and executes, asserting nothing failed.
        pub fn apply(&mut self, text: &str) -> (Plan, Outcome) {
            let (plan, outcome) = self.apply_with(text, false);
            assert!(
                !outcome.has_failures(),
                "apply failed: {:?}",
                outcome.statuses
            );
            (plan, outcome)
        }

        /// Applies, then asserts a second plan changes nothing.
        pub fn converge(&mut self, text: &str) -> (Plan, Outcome) {
            let applied = self.apply(text);
            let again = self.plan(text);
            assert!(
                again.is_empty(),
                "second plan is not empty: {:?}",
                again
                    .changes
                    .iter()
                    .filter(|c| c.action != Action::Unchanged)
                    .map(|c| (&c.id, c.action, &c.reason))
                    .collect::<Vec<_>>()
            );
            applied
        }

        pub fn write_repo(&self, rel: &str, content: &str) {
            let p = self.repo.join(rel);
            ensure_parent(&p).unwrap();
            std::fs::write(p, content).unwrap();
        }

        pub fn owns(&self, id: &str) -> bool {
            self.state.resources.contains_key(id)
        }
    }

    /// The change for `id` (panics if the plan has none).
    pub(crate) fn change<'a>(plan: &'a Plan, id: &str) -> &'a Change {
        plan.change(id)
            .unwrap_or_else(|| panic!("no change for {id} in {:?}", plan.changes))
    }

    /// The status of `id` in an outcome.
    pub(crate) fn status<'a>(plan: &Plan, outcome: &'a Outcome, id: &str) -> &'a Status {
        let i = plan
            .changes
            .iter()
            .position(|c| c.id == id)
            .unwrap_or_else(|| panic!("no change for {id}"));
        &outcome.statuses[i]
    }

    /// The backup path an applied change reported.
    pub(crate) fn backup_of(plan: &Plan, outcome: &Outcome, id: &str) -> PathBuf {
        match status(plan, outcome, id) {
            Status::Done(Applied {
                backup: Some(b), ..
            }) => b.clone(),
            other => panic!("{id} made no backup: {other:?}"),
        }
    }

    pub(crate) fn mode(path: &Path) -> u32 {
        mode_of(&std::fs::symlink_metadata(path).unwrap())
    }

    #[test]
    fn noop_plans_unchanged_and_owns_nothing() {
        let mut fx = Fixture::new();
        let (plan, outcome) = fx.converge("[noop.group]\n");
        let c = change(&plan, "noop.group");
        assert_eq!(c.action, Action::Unchanged);
        assert!(c.keys.is_empty());
        assert_eq!(c.op, Op::None);
        assert_eq!(status(&plan, &outcome, "noop.group"), &Status::Unchanged);
        assert!(!fx.owns("noop.group"));
    }

    #[test]
    fn keys_are_stored_home_relative_or_absolute() {
        let fx = Fixture::new();
        let plan = fx.plan(
            "[file.in]\npath = \"~/a/b\"\ncontent = \"x\"\n[file.out]\npath = \"@OUT@/c\"\ncontent = \"y\"\n",
        );
        assert_eq!(change(&plan, "file.in").keys, ["~/a/b"]);
        assert_eq!(
            change(&plan, "file.out").keys,
            [fx.out.join("c").display().to_string()]
        );
    }

    #[test]
    fn binary_content_round_trips_through_a_saved_plan() {
        let op = Op::WriteFile {
            path: PathBuf::from("/x"),
            content: vec![0xff, 0x00, 0x41],
            mode: 0o600,
            backup: false,
            encrypt_backup: false,
        };
        let json = serde_json::to_string(&op).unwrap();
        assert!(json.contains("\"hex\":\"ff0041\""), "{json}");
        assert_eq!(serde_json::from_str::<Op>(&json).unwrap(), op);
        let text = Op::WriteFile {
            path: PathBuf::from("/x"),
            content: b"hello\n".to_vec(),
            mode: 0o644,
            backup: true,
            encrypt_backup: false,
        };
        let json = serde_json::to_string(&text).unwrap();
        assert!(json.contains("\"content\":\"hello\\n\""), "{json}");
        assert_eq!(serde_json::from_str::<Op>(&json).unwrap(), text);
    }

    #[test]
    fn checksum_is_blake3_hex() {
        let sum = checksum(b"abc");
        assert_eq!(
            sum,
            format!("blake3:{}", blake3::hash(b"abc").to_hex()),
            "{sum}"
        );
        assert_ne!(checksum(b"abc"), checksum(b"abd"));
    }

    #[test]
    fn a_resource_asking_about_its_own_key_is_answered_by_its_record_alone() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let record = |keys: &[&str], names: &[&str]| crate::state::ResourceRecord {
            kind: "file".into(),
            keys: keys.iter().map(|k| k.to_string()).collect(),
            serial: 1,
            names: names.iter().map(|n| n.to_string()).collect(),
        };
        let records = BTreeMap::from([
            ("file.a".to_string(), record(&["~/a"], &[])),
            ("package.git".to_string(), record(&[], &["apt:git"])),
            ("file.b".to_string(), record(&["~/b"], &[])),
        ]);
        let builds = AtomicUsize::new(0);
        let owned = Owned::new(&records, || {
            builds.fetch_add(1, Ordering::SeqCst);
            records
                .values()
                .flat_map(|r| r.keys.iter().chain(&r.names))
                .map(|k| std::borrow::Cow::Borrowed(k.as_str()))
                .collect()
        });
        assert!(owned.contains(Some("file.a"), "~/a"));
        assert!(owned.contains(Some("package.git"), "apt:git"));
        assert_eq!(
            builds.load(Ordering::SeqCst),
            0,
            "no set for a record's own keys"
        );
        // Another resource's key, an unrecorded resource, or no resource
        // named: the set of every key says, built once.
        assert!(owned.contains(Some("file.a"), "~/b"));
        assert!(owned.contains(Some("file.new"), "~/a"));
        assert!(owned.contains(None, "~/b"));
        assert!(!owned.contains(Some("file.a"), "~/c"));
        assert!(!owned.contains(None, "~/c"));
        assert_eq!(builds.load(Ordering::SeqCst), 1);
        assert_eq!(owned.all().len(), 3);
        assert!(!Owned::nothing().contains(None, "~/a"));
    }
}
