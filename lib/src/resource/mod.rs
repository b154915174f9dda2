//! Resources: read the actual state (no side effects), diff it against the
//! declaration after normalizing, and apply one planned change idempotently.
//! One file per kind behind the [`kind::ResourceKind`] contract, found in
//! [`registry`]; this module holds what they share and dispatches to them.

pub mod dir;
pub mod exec;
pub mod file;
pub mod kind;
pub mod line;
pub mod noop;
pub mod registry;
pub mod symlink;

use std::collections::{BTreeMap, HashSet};
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
}

impl Facts {
    /// Facts of this machine with `home` as the target home.
    pub fn current(home: &Path) -> Facts {
        Facts {
            hostname: crate::machine::hostname(),
            os: std::env::consts::OS.to_string(),
            arch: std::env::consts::ARCH.to_string(),
            user: crate::machine::current_user(),
            home: home.display().to_string(),
        }
    }
}

/// What planning a resource needs.
pub struct PlanContext<'a> {
    /// The manifest.
    pub manifest: &'a Manifest,
    /// Template facts.
    pub facts: &'a Facts,
    /// Paths stead owns, as stored in state (`~/x`).
    pub owned: &'a HashSet<String>,
    /// Checksums of what stead wrote, by path as stored in state: an owned
    /// file that no longer matches was changed by hand, and is backed up
    /// before it is overwritten.
    pub recorded: &'a std::collections::BTreeMap<String, String>,
    /// Replace what stead does not own (after a backup).
    pub force: bool,
    /// Paths resources keep their state in ([`kind::ResourceKind::marker_paths`],
    /// an exec's `creates`), real paths: a purge keeps them.
    pub markers: &'a [PathBuf],
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
    /// `blake3:<hex>` of the declared file content (files only).
    pub checksum: Option<String>,
    /// What apply does.
    pub op: Op,
    /// Retries after a failure (`retry`, `delay`, `backoff`).
    #[serde(default)]
    pub retry: crate::manifest::Retry,
    /// Ids refreshed when this change does something.
    #[serde(default)]
    pub notify: Vec<String>,
}

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
        /// Entries to remove.
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
    },
    /// Run a command.
    Run(exec::Run),
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
    /// A bug in stead, reported instead of silently dropped.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Plans one declared resource.
pub fn plan(resource: &Resource, ctx: &PlanContext) -> Result<Change, ResourceError> {
    let keys: Vec<String> = resource
        .spec
        .path()
        .map(|p| ctx.manifest.display_path(p))
        .into_iter()
        .collect();
    let owned = keys.iter().any(|k| ctx.owned.contains(k));
    let planned = registry::get(resource.kind()).plan(&resource.spec, ctx, owned)?;
    Ok(Change {
        id: resource.id.clone(),
        kind: resource.kind(),
        action: planned.action,
        keys,
        reason: planned.reason,
        diff: planned.diff,
        checksum: planned.checksum,
        op: planned.op,
        retry: resource.retry,
        notify: resource.notify.clone(),
    })
}

/// Plans the removal of what stead created for a resource no longer declared.
pub fn plan_removal(
    id: &str,
    kind: &str,
    keys: &[String],
    home: &Path,
    checksums: &BTreeMap<String, String>,
) -> Result<Change, ResourceError> {
    let imp = registry::find(kind).unwrap_or(&noop::Noop);
    let planned = match keys.first() {
        Some(key) => {
            imp.plan_removal(&crate::manifest::expand_key(home, key), checksums.get(key))?
        }
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
        notify: Vec::new(),
    })
}

/// Drift of one path a resource of kind `kind` recorded: `missing` when
/// nothing is there, else what the kind finds (see [`kind::ResourceKind::drift`]).
pub fn drift(kind: &str, path: &Path, recorded: Option<&String>, declared: Option<&Spec>) -> Drift {
    match std::fs::symlink_metadata(path) {
        Err(_) => Drift {
            status: crate::state::DriftStatus::Missing,
            expected: recorded.cloned(),
            actual: None,
        },
        Ok(meta) => match registry::find(kind) {
            Some(k) => k.drift(path, &meta, recorded, declared),
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
    /// Output of a command (for the summary).
    pub output: Option<String>,
    /// An exec whose guard, checked again right before running, said not
    /// to run it: why (it did nothing).
    pub not_run: Option<String>,
}

/// Applies one change. Idempotent: applying an already-applied change is
/// harmless. Commands run as children of `control` (its reaper, its cancel).
pub fn apply(
    change: &Change,
    backups: &Path,
    control: &crate::run::RunControl,
) -> Result<Applied, ResourceError> {
    match &change.op {
        Op::None => Ok(Applied::default()),
        op => registry::get(change.kind).apply(op, &ApplyEnv { backups, control }),
    }
}

/// `blake3:<hex>` of bytes.
pub fn checksum(bytes: &[u8]) -> String {
    format!("blake3:{}", blake3::hash(bytes).to_hex())
}

/// Copies what is at `path` into the backups dir (keeping its path below a
/// timestamped folder) and returns where the copy is.
///
/// The copy is fsync'd (files and every directory created for it) before this
/// returns, because the caller removes or overwrites the original next: a
/// crash must never leave neither.
pub(crate) fn backup(path: &Path, backups: &Path) -> Result<PathBuf, FsError> {
    if backups.starts_with(path) {
        return Err(FsError::new(
            "cannot back up",
            path,
            std::io::Error::other(format!(
                "it holds the backups dir {}; a copy of it would land inside itself",
                backups.display()
            )),
        ));
    }
    let stamp = chrono::Utc::now().format("%Y%m%d_%H%M%S%.3f").to_string();
    let rel = path.strip_prefix("/").unwrap_or(path);
    let dest = backups.join(stamp).join(rel);
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(|e| FsError::new("cannot create", parent, e))?;
    }
    copy_entry(path, &dest)?;
    // Make the new directory chain durable, from the copy up to the backups dir.
    let mut dir = dest.parent();
    while let Some(d) = dir {
        crate::fsutil::fsync_dir(d)?;
        if d == backups {
            break;
        }
        dir = d.parent();
    }
    if let Some(parent) = backups.parent() {
        crate::fsutil::fsync_dir(parent)?;
    }
    Ok(dest)
}

/// [`backup`] of what is at `path`, when asked and when something is there.
pub(crate) fn backup_existing(
    path: &Path,
    wanted: bool,
    backups: &Path,
) -> Result<Option<PathBuf>, FsError> {
    if wanted && std::fs::symlink_metadata(path).is_ok() {
        backup(path, backups).map(Some)
    } else {
        Ok(None)
    }
}

fn sync_file(path: &Path) -> Result<(), FsError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| FsError::new("cannot fsync", path, e))
}

fn copy_entry(path: &Path, dest: &Path) -> Result<(), FsError> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| FsError::new("cannot read", path, e))?;
    if meta.is_dir() {
        copy_dir(path, dest)?;
    } else if meta.file_type().is_symlink() {
        let target = std::fs::read_link(path).map_err(|e| FsError::new("cannot read", path, e))?;
        std::os::unix::fs::symlink(&target, dest)
            .map_err(|e| FsError::new("cannot create", dest, e))?;
    } else {
        std::fs::copy(path, dest).map_err(|e| FsError::new("cannot back up", path, e))?;
        sync_file(dest)?;
    }
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), FsError> {
    std::fs::create_dir_all(to).map_err(|e| FsError::new("cannot create", to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| FsError::new("cannot read", from, e))? {
        let entry = entry.map_err(|e| FsError::new("cannot read", from, e))?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let ft = entry
            .file_type()
            .map_err(|e| FsError::new("cannot read", &src, e))?;
        if ft.is_dir() {
            copy_dir(&src, &dst)?;
        } else if ft.is_symlink() {
            let t = std::fs::read_link(&src).map_err(|e| FsError::new("cannot read", &src, e))?;
            std::os::unix::fs::symlink(&t, &dst)
                .map_err(|e| FsError::new("cannot create", &dst, e))?;
        } else {
            std::fs::copy(&src, &dst).map_err(|e| FsError::new("cannot back up", &src, e))?;
            sync_file(&dst)?;
        }
    }
    crate::fsutil::fsync_dir(to)
}

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
mod bytes_text {
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
        };
        let json = serde_json::to_string(&op).unwrap();
        assert!(json.contains("\"hex\":\"ff0041\""), "{json}");
        assert_eq!(serde_json::from_str::<Op>(&json).unwrap(), op);
        let text = Op::WriteFile {
            path: PathBuf::from("/x"),
            content: b"hello\n".to_vec(),
            mode: 0o644,
            backup: true,
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
}
