//! The contract every resource kind implements: its manifest keys, how its
//! spec is built from them, planning (read + diff), planning its removal,
//! applying its own ops, drift of what it recorded, ownership and autoedges.
//!
//! The engine, the planner, the graph and the loader only ever talk to a kind
//! through [`ResourceKind`], found in [`super::registry`]; see
//! `docs/kinds.md` for the checklist to add one.

use std::fs::Metadata;
use std::path::{Path, PathBuf};

pub use crate::manifest::schema::{Key, KeyType, KindSchema, Ownership};
use crate::manifest::{Kind, Resource, Spec};
use crate::state::DriftStatus;

use super::{Action, Applied, Op, PlanContext, ResourceError};

/// What a plan will do to one resource: the action, why (shown in the plan),
/// a diff of file content, the checksum of declared content to record, and
/// the op apply performs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// What will happen.
    pub action: Action,
    /// Why, in a few words.
    pub reason: String,
    /// A unified diff, when file content changes.
    pub diff: Option<String>,
    /// `blake3:<hex>` of the declared content (kinds that own a file).
    pub checksum: Option<crate::checksum::Checksum>,
    /// What apply does.
    pub op: Op,
}

impl Planned {
    /// A plan with no diff and no checksum.
    pub fn new(action: Action, reason: impl Into<String>, op: Op) -> Planned {
        Planned {
            action,
            reason: reason.into(),
            diff: None,
            checksum: None,
            op,
        }
    }

    /// Already right: nothing to do.
    pub fn unchanged(reason: impl Into<String>) -> Planned {
        Planned::new(Action::Unchanged, reason, Op::None)
    }

    /// Something is in the way: nothing is done.
    pub fn conflict(reason: impl Into<String>) -> Planned {
        Planned::new(Action::Conflict, reason, Op::None)
    }

    /// The same plan with a diff.
    pub fn with_diff(mut self, diff: Option<String>) -> Planned {
        self.diff = diff;
        self
    }
}

/// What drift found at one recorded path, for `stead state check-drift`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// How it differs.
    pub status: DriftStatus,
    /// What the record or manifest says.
    pub expected: Option<String>,
    /// What is there.
    pub actual: Option<String>,
}

impl Drift {
    /// No drift, nothing to show.
    pub const UNCHANGED: Drift = Drift {
        status: DriftStatus::Unchanged,
        expected: None,
        actual: None,
    };
}

/// What applying an op may use besides the op: where backups go, and the
/// run it belongs to (a command a kind starts is that run's child: announced
/// to its reaper, killed by its hard cancel).
#[derive(Clone, Copy)]
pub struct ApplyEnv<'a> {
    /// Where overwrites, purges and removals back up what they replace.
    pub backups: &'a Path,
    /// The run's control.
    pub control: &'a crate::run::RunControl,
    /// The machine's secrets (secret-bearing files, encrypted backups).
    pub secrets: &'a crate::secret::Secrets,
}

/// What a kind does: planning, applying, drift, autoedges. What it declares
/// (its name, keys, spec and whether it owns its path) is its
/// [`KindSchema`], which the manifest loader uses. Implementations are unit
/// structs listed once in [`super::registry`].
pub trait ResourceKind: KindSchema {
    /// Reads the actual state and diffs it against `spec` (no side
    /// effects). `owned`: stead recorded the resource's path as its own.
    fn plan(&self, spec: &Spec, ctx: &PlanContext, owned: bool) -> Result<Planned, ResourceError>;

    /// Plans the removal of what stead made at `path` for a resource no
    /// longer declared (`recorded`: the checksum stead wrote there).
    fn plan_removal(
        &self,
        _path: &Path,
        _recorded: Option<&String>,
    ) -> Result<Planned, ResourceError> {
        Ok(Planned::new(Action::Remove, "no longer declared", Op::None))
    }

    /// Applies one of its own ops (never [`Op::None`], handled before).
    fn apply(&self, op: &Op, _env: &ApplyEnv) -> Result<Applied, ResourceError> {
        Err(unexpected_op(self.kind(), op))
    }

    /// Drift of a recorded path that exists (`meta`, not following links),
    /// against the checksum stead recorded and the declared spec, if any.
    /// `vouched`: the stat cache or a converged seal vouches that the
    /// path's content is still `recorded`, so a kind that would read it to
    /// compare may take it as read.
    fn drift(
        &self,
        _path: &Path,
        _meta: &Metadata,
        _recorded: Option<&String>,
        _vouched: bool,
        _declared: Option<&Spec>,
        _secrets: &crate::secret::Secrets,
    ) -> Drift {
        Drift::UNCHANGED
    }

    /// Whether recorded ownership ends although the change did nothing
    /// (a file with `ensure = "absent"` that is already gone).
    fn releases(&self, _planned_checksum: Option<&crate::checksum::Checksum>) -> bool {
        false
    }

    /// Whether paths under this resource's path depend on it (autoedge).
    fn holds_paths(&self) -> bool {
        false
    }

    /// Paths it needs to exist first (autoedge to whatever creates them, or
    /// to the managed dir that holds them).
    fn needs_paths<'s>(&self, _spec: &'s Spec) -> Vec<&'s Path> {
        Vec::new()
    }

    /// Paths outside its own path that it keeps its state in (an exec's
    /// `creates` marker): a `purge` dir holding one keeps it, or the exec
    /// would run again after every purge (default: none).
    fn marker_paths<'s>(&self, _spec: &'s Spec) -> Vec<&'s Path> {
        Vec::new()
    }

    /// Why the no-longer-declared resource `gone` is only forgotten, left
    /// in place, instead of removed, when `resource` (declared, of this
    /// kind) says so: a tree without `purge` keeps what left its source
    /// (default: never).
    fn keeps_in_place(&self, _resource: &Resource, _gone: &str) -> Option<String> {
        None
    }

    /// For each of `ops` (this kind's planned changes), the paths it
    /// installs or removes as its own database knows them, read once for
    /// all (`package`: the files each package ships). A managed path among
    /// them waits for that change (autoedge, added at plan time by
    /// [`crate::plan::make`]). `Err`: the kind could not say (no autoedge);
    /// default: none.
    fn shipped_paths(
        &self,
        _ops: &[&Op],
        _ctx: &PlanContext,
    ) -> Result<Vec<Vec<PathBuf>>, ResourceError> {
        Ok(Vec::new())
    }

    /// Paths a later watch mode should watch to notice drift (default: none).
    fn watch_paths(&self, _spec: &Spec) -> Vec<PathBuf> {
        Vec::new()
    }

    /// What must be found unchanged, by `lstat` alone, for this resource to
    /// plan unchanged again without being planned ([`crate::seal`]): its
    /// managed path and any file it reads. The directories above the
    /// managed path are added by the seal. `None` (the default): its plan
    /// depends on more than the stat of some paths (a command, a directory's
    /// entries, a template's includes), and a manifest declaring it is
    /// planned in full every run.
    fn seal_paths(&self, _spec: &Spec) -> Option<Vec<crate::seal::SealPath>> {
        None
    }

    /// The transaction an op can share with others (a package manager's
    /// install or remove: `apt:install`): changes with the same key that
    /// wait for the same changes run as one [`ResourceKind::apply_together`]
    /// (see [`crate::plan::transactions`]). `None` (the default): alone.
    fn transaction(&self, _op: &Op) -> Option<String> {
        None
    }

    /// Applies ops that share a [`ResourceKind::transaction`] key as one,
    /// returning one result per op, in order. The default applies each.
    fn apply_together(&self, ops: &[&Op], env: &ApplyEnv) -> Vec<Result<Applied, ResourceError>> {
        ops.iter().map(|op| self.apply(op, env)).collect()
    }

    /// What a done change makes stead own outside the filesystem, by name
    /// ([`crate::state::ResourceRecord::names`]): `Some(names)` for a kind
    /// that owns names (empty: this change made nothing stead's own, like
    /// upgrading a package the user had installed), `None` (the default)
    /// for a kind that owns paths.
    fn owned_names(&self, _op: &Op) -> Option<Vec<String>> {
        None
    }

    /// Plans the removal of what stead owned by name for a resource no
    /// longer declared ([`ResourceKind::owned_names`]). Default: forget it.
    fn plan_removal_of_names(&self, _names: &[String]) -> Result<Planned, ResourceError> {
        Ok(Planned::new(Action::Remove, "no longer declared", Op::None))
    }
}

/// A kind's own op ([`Op::Custom`]) carrying `data`.
pub fn custom_op<T: serde::Serialize>(kind: Kind, data: &T) -> Result<Op, ResourceError> {
    serde_json::to_value(data)
        .map(|data| Op::Custom { data })
        .map_err(|e| ResourceError::Internal(format!("cannot record a {} op: {e}", kind.as_str())))
}

/// The data of a kind's own op, as [`custom_op`] wrote it. Data that does
/// not read back (a hand-edited saved plan) is an error naming what to do.
pub fn custom_data<T: serde::de::DeserializeOwned>(
    kind: Kind,
    data: &serde_json::Value,
) -> Result<T, ResourceError> {
    T::deserialize(data).map_err(|e| {
        ResourceError::Internal(format!(
            "a {} op of the plan does not read back ({e}); the plan was edited or made by another stead. \
             Nothing was changed for it: run 'stead plan' (or 'stead plan --out FILE') again",
            kind.as_str()
        ))
    })
}

/// An op handed to a kind that never plans it: a bug (or a hand-edited
/// saved plan), reported instead of guessed at.
pub(crate) fn unexpected_op(kind: Kind, op: &Op) -> ResourceError {
    ResourceError::Internal(format!("{} cannot apply {op:?}", kind.as_str()))
}

/// A spec of another kind handed to a kind: a bug in the registry.
pub(crate) fn unexpected_spec(kind: Kind, spec: &Spec) -> ResourceError {
    ResourceError::Internal(format!(
        "{} was given a {} spec",
        kind.as_str(),
        spec.kind().as_str()
    ))
}
