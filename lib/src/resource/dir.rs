//! `dir`: a directory with an optional `mode`; `purge = true` removes entries
//! that no resource manages (each backed up first).

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::fsutil::FsError;
use crate::manifest::{DirSpec, Kind, Problem, Spec, SpecInput};
use crate::safe_path::{self, RemovedDir};
use crate::state::DriftStatus;

use super::kind::{
    ApplyEnv, Drift, Key, KeyType, KindSchema, Ownership, Planned, ResourceKind, unexpected_op,
    unexpected_spec,
};
use super::{Action, Applied, Op, PlanContext, ResourceError, backup, mode_of};

/// The `dir` kind.
pub struct Dir;

impl KindSchema for Dir {
    fn kind(&self) -> Kind {
        Kind::Dir
    }

    fn keys(&self) -> &'static [Key] {
        const KEYS: &[Key] = &[
            Key::required("path", KeyType::Str),
            Key::optional("mode", KeyType::Str),
            Key::optional("purge", KeyType::Bool),
        ];
        KEYS
    }

    fn path_key(&self) -> Option<&'static str> {
        Some("path")
    }

    fn build(&self, input: &mut SpecInput) -> Option<Spec> {
        let mode = input.mode("mode");
        let purge = input.flag("purge");
        let path = input.path()?;
        if purge && holds_the_home(&path, input.home()) {
            let span = input
                .literal("purge")
                .map_or_else(|| input.span(), |(_, s)| s);
            input.problem(
                Problem::at(
                    span,
                    format!(
                        "`purge` of {} would remove everything in it that no resource declares, the home included",
                        crate::manifest::display_path(input.home(), &path)
                    ),
                )
                .label("purges the home")
                .help("purge a directory inside the home, such as ~/.config/app"),
            );
            return None;
        }
        if purge
            && let Some(written) = input.target_path("path")
            && written != path
        {
            let span = input
                .literal("path")
                .map_or_else(|| input.span(), |(_, s)| s);
            input.problem(
                Problem::at(
                    span,
                    format!(
                        "`purge` of {} would cross a symlink among its directories (it is really {})",
                        written.display(),
                        path.display()
                    ),
                )
                .label("purge through a link")
                .help("a purge never crosses a symlink: write the real path if you mean to purge it"),
            );
            return None;
        }
        Some(Spec::Dir(DirSpec { path, mode, purge }))
    }

    /// A directory stead did not create stays the user's: never adopted.
    fn ownership(&self) -> Ownership {
        Ownership {
            owns_path: true,
            adopt_when_right: false,
        }
    }
}

impl ResourceKind for Dir {
    /// The directory as a node (type, mode, owner); a `purge` dir's plan
    /// reads its entries, so it is planned every run.
    fn seal_paths(&self, spec: &Spec) -> Option<Vec<crate::seal::SealPath>> {
        match spec {
            Spec::Dir(d) if !d.purge => Some(vec![crate::seal::SealPath::node(&d.path)]),
            _ => None,
        }
    }

    fn plan(&self, spec: &Spec, ctx: &PlanContext, owned: bool) -> Result<Planned, ResourceError> {
        match spec {
            Spec::Dir(d) => plan(d, ctx, owned),
            other => Err(unexpected_spec(self.kind(), other)),
        }
    }

    fn plan_removal(
        &self,
        path: &Path,
        _recorded: Option<&String>,
    ) -> Result<Planned, ResourceError> {
        plan_removal(path)
    }

    /// New directories that wait for the same changes are made together,
    /// their parents synced once (`create_together`).
    fn transaction(&self, op: &Op) -> Option<String> {
        matches!(op, Op::CreateDir { .. }).then(|| "dir:create".to_string())
    }

    fn apply_together(&self, ops: &[&Op], env: &ApplyEnv) -> Vec<Result<Applied, ResourceError>> {
        create_together(ops, env)
    }

    fn apply(&self, op: &Op, env: &ApplyEnv) -> Result<Applied, ResourceError> {
        let backups = env.backups;
        match op {
            Op::CreateDir { path, mode } => create(path, *mode),
            Op::PurgeDir { path, mode, purge } => self::purge(path, *mode, purge, backups),
            Op::RemoveDir { path } => remove(path),
            other => Err(unexpected_op(self.kind(), other)),
        }
    }

    fn drift(
        &self,
        _path: &Path,
        meta: &fs::Metadata,
        _recorded: Option<&String>,
        _vouched: bool,
        _declared: Option<&Spec>,
        _secrets: &crate::secret::Secrets,
    ) -> Drift {
        if meta.is_dir() {
            Drift::UNCHANGED
        } else {
            Drift {
                status: DriftStatus::Replaced,
                expected: None,
                actual: Some("not a directory".into()),
            }
        }
    }

    fn holds_paths(&self) -> bool {
        true
    }
}

/// True when `dir` is the home, holds it, or is `/` (also through links).
pub(super) fn holds_the_home(dir: &Path, home: &Path) -> bool {
    let real = |p: &Path| crate::safe_path::resolve_dir(p).unwrap_or_else(|_| p.to_path_buf());
    let (real_dir, real_home) = (real(dir), real(home));
    dir.parent().is_none()
        || real_dir.parent().is_none()
        || home.starts_with(dir)
        || real_home.starts_with(&real_dir)
}

fn plan(d: &DirSpec, ctx: &PlanContext, owned: bool) -> Result<Planned, ResourceError> {
    let path = &d.path;
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Planned::new(
                Action::Create,
                "",
                Op::CreateDir {
                    path: path.clone(),
                    mode: d.mode,
                },
            ));
        }
        Err(e) => return Err(FsError::new("cannot read", path, e).into()),
    };
    if !meta.is_dir() {
        return Ok(Planned::conflict(
            "something that is not a directory is in the way; move it and apply again",
        ));
    }
    let actual_mode = mode_of(&meta);
    let mode_change = d.mode.filter(|m| *m != actual_mode);
    if mode_change.is_some() && !owned && !ctx.force {
        return Ok(Planned::conflict(format!(
            "exists with mode {actual_mode:04o} and stead does not own it; 'stead apply --force' changes the mode"
        )));
    }
    let purge = if d.purge {
        unmanaged_entries(path, ctx)?
    } else {
        Vec::new()
    };
    if mode_change.is_none() && purge.is_empty() {
        return Ok(Planned::unchanged(""));
    }
    let mut reasons = Vec::new();
    if let Some(m) = mode_change {
        reasons.push(format!("mode {actual_mode:04o} → {m:04o}"));
    }
    if !purge.is_empty() {
        let names: Vec<String> = purge.iter().map(|p| ctx.manifest.display_path(p)).collect();
        reasons.push(format!(
            "purge {} unmanaged: {}",
            purge.len(),
            names.join(", ")
        ));
    }
    Ok(Planned::new(
        Action::Update,
        reasons.join("; "),
        Op::PurgeDir {
            path: path.clone(),
            mode: mode_change,
            purge,
        },
    ))
}

/// Entries directly inside `dir` that no declared resource is or lies under,
/// and that hold no resource's marker (an exec's `creates`: purging it would
/// make the exec run again on every other apply).
fn unmanaged_entries(dir: &Path, ctx: &PlanContext) -> Result<Vec<PathBuf>, ResourceError> {
    let keep: HashSet<PathBuf> = ctx
        .manifest
        .resources
        .iter()
        .filter_map(|r| r.spec.path().map(Path::to_path_buf))
        .chain(ctx.markers.iter().cloned())
        .filter_map(|p| {
            let rest = p.strip_prefix(dir).ok()?;
            let first = rest.components().next()?;
            Some(dir.join(first.as_os_str()))
        })
        .collect();
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| FsError::new("cannot read", dir, e))? {
        let entry = entry.map_err(|e| FsError::new("cannot read", dir, e))?;
        let p = entry.path();
        // `~/.stead` inside a purged `~` holds the record and the backups the
        // purge itself writes; the config repo holds the manifest.
        let protected = ctx.manifest.protected.iter().any(|k| k.starts_with(&p));
        if !keep.contains(&p) && !protected {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

fn plan_removal(path: &Path) -> Result<Planned, ResourceError> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Planned::new(
            Action::Remove,
            "no longer declared (already gone)",
            Op::None,
        )),
        Err(e) => Err(FsError::new("cannot read", path, e).into()),
        Ok(m) if m.is_dir() => {
            let empty = fs::read_dir(path)
                .map_err(|e| FsError::new("cannot read", path, e))?
                .next()
                .is_none();
            // A non-empty dir may still become empty: removals run deepest
            // first, so the managed files inside it go before it. Whether it
            // is removed is decided at apply time by `remove_dir`, which never
            // removes anything it did not create.
            let reason = if empty {
                "no longer declared"
            } else {
                "no longer declared; removed only if nothing unmanaged is left in it"
            };
            Ok(Planned::new(
                Action::Remove,
                reason,
                Op::RemoveDir {
                    path: path.to_path_buf(),
                },
            ))
        }
        Ok(_) => Ok(Planned::new(
            Action::Remove,
            "no longer declared; something else is there now, left alone",
            Op::None,
        )),
    }
}

/// Creates the directory and any missing parent, component by component,
/// never through a link that appeared since the plan; sets `mode` on its fd.
pub(super) fn create(path: &Path, mode: Option<u32>) -> Result<Applied, ResourceError> {
    let (parent, name) = safe_path::open_parent_required(path, true)?;
    parent.mkdir(&name, mode)?;
    Ok(Applied::default())
}

/// At most this many parents of a transaction's new directories are held
/// open until their one sync; past it, a parent is synced at once (the
/// open-file limit may be as low as 1024).
const HELD_PARENTS: usize = 256;

/// The directory creations `ops` (each an [`Op::CreateDir`]; anything else
/// is applied alone), made durable together: each directory is made, then
/// each parent that gained one is synced once, and only then is any of
/// them reported done. A hundred directories in one parent took a hundred
/// syncs of it, one at a time, before any file in them could be written.
fn create_together(ops: &[&Op], env: &ApplyEnv) -> Vec<Result<Applied, ResourceError>> {
    let mut results: Vec<Result<Applied, ResourceError>> = Vec::with_capacity(ops.len());
    // Each parent to sync, with the results that wait for it.
    let mut unsynced: std::collections::HashMap<PathBuf, (safe_path::Dir, Vec<usize>)> =
        Default::default();
    for (n, op) in ops.iter().enumerate() {
        let Op::CreateDir { path, mode } = op else {
            results.push(Dir.apply(op, env));
            continue;
        };
        let made = safe_path::open_parent_required(path, true)
            .and_then(|(parent, name)| Ok((parent.mkdir_unsynced(&name, *mode)?.1, parent)));
        match made {
            Ok((false, _)) => results.push(Ok(Applied::default())),
            Ok((true, parent)) => {
                results.push(Ok(Applied::default()));
                if let Some((_, waiting)) = unsynced.get_mut(parent.path()) {
                    waiting.push(n);
                } else if unsynced.len() < HELD_PARENTS {
                    unsynced.insert(parent.path().to_path_buf(), (parent, vec![n]));
                } else if let Err(e) = parent.sync() {
                    results[n] = Err(e.into());
                }
            }
            Err(e) => results.push(Err(e.into())),
        }
    }
    for (parent, waiting) in unsynced.into_values() {
        if let Err(e) = parent.sync() {
            // Made, but not durable: not done (the journal keeps it in doubt
            // and the next run looks again).
            for n in waiting {
                results[n] = Err(FsError::new(
                    "made a directory, but cannot make it durable in",
                    parent.path(),
                    io::Error::other(e.to_string()),
                )
                .into());
            }
        }
    }
    results
}

/// Sets the mode and removes unmanaged entries, each backed up first: a purge
/// never destroys what stead did not create without a copy. The dir is
/// opened without following any link (a dir swapped for a link to elsewhere
/// is refused, nothing in it touched), and each entry is removed relative to
/// it, never through a link.
pub(super) fn purge(
    path: &Path,
    mode: Option<u32>,
    entries: &[PathBuf],
    backups: &Path,
) -> Result<Applied, ResourceError> {
    let Some(dir) = safe_path::open_dir(path, false)? else {
        return Err(FsError::new(
            "cannot purge",
            path,
            io::Error::new(io::ErrorKind::NotFound, "it no longer exists"),
        )
        .into());
    };
    if let Some(m) = mode {
        dir.chmod_self(m)?;
    }
    let mut applied = Applied::default();
    for entry in entries {
        let name = match (entry.parent(), entry.file_name()) {
            (Some(parent), Some(name)) if parent == path => name,
            _ => {
                return Err(ResourceError::Internal(format!(
                    "purge entry {} is not directly in {}",
                    entry.display(),
                    path.display()
                )));
            }
        };
        if dir.stat(name)?.is_none() {
            continue;
        }
        let copy = backup(entry, backups)?;
        applied.backup.get_or_insert(copy);
        dir.remove_all(name)?;
    }
    if !entries.is_empty() {
        dir.sync()?;
        applied.output = Some(format!("purged {} entries", entries.len()));
    }
    Ok(applied)
}

/// Removes the directory if it is empty; never through a link in its path.
pub(super) fn remove(path: &Path) -> Result<Applied, ResourceError> {
    let Some((parent, name)) = safe_path::open_parent(path, false)? else {
        return Ok(Applied::default());
    };
    match parent.remove_empty_dir(&name)? {
        RemovedDir::Removed => {
            parent.sync()?;
            Ok(Applied::default())
        }
        RemovedDir::Gone => Ok(Applied::default()),
        RemovedDir::NotEmpty => Ok(Applied {
            output: Some("not empty; left in place".into()),
            ..Applied::default()
        }),
        RemovedDir::NotADirectory => Ok(Applied {
            output: Some("no longer a directory; left alone".into()),
            ..Applied::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{PermissionsExt, symlink};

    use super::*;
    use crate::engine::Status;
    use crate::resource::tests::{Fixture, backup_of, change, mode, status};

    const D: &str = "[dir.d]\npath = \"~/d\"\nmode = \"0700\"\n";

    #[test]
    fn creates_with_mode_then_is_unchanged() {
        let mut fx = Fixture::new();
        let (plan, _) = fx.converge(D);
        let c = change(&plan, "dir.d");
        assert_eq!(c.action, Action::Create);
        assert_eq!(
            c.op,
            Op::CreateDir {
                path: fx.home.join("d"),
                mode: Some(0o700)
            }
        );
        assert!(fx.home.join("d").is_dir());
        assert_eq!(mode(&fx.home.join("d")), 0o700);
        assert!(fx.owns("dir.d"));
        assert_eq!(fx.state.resources["dir.d"].keys, ["~/d"]);
    }

    #[test]
    fn sibling_dirs_are_made_as_one_transaction_and_nested_ones_after_it() {
        let mut fx = Fixture::new();
        let text = "[dir.a]\npath = \"~/a\"\n[dir.b]\npath = \"~/b\"\nmode = \"0700\"\n\
                    [dir.c]\npath = \"~/c/deep\"\n[dir.inner]\npath = \"~/a/inner\"\n";
        let plan = fx.plan(text);
        let at = |id: &str| plan.changes.iter().position(|c| c.id == id).unwrap();
        // a, b and c wait for nothing; inner waits for a.
        assert_eq!(
            crate::plan::transactions(&plan),
            vec![{
                let mut g = vec![at("dir.a"), at("dir.b"), at("dir.c")];
                g.sort_unstable();
                g
            }]
        );
        let (_, outcome) = fx.converge(text);
        assert!(!outcome.has_failures(), "{:?}", outcome.statuses);
        for d in ["a", "b", "c/deep", "a/inner"] {
            assert!(fx.home.join(d).is_dir(), "{d}");
        }
        assert_eq!(mode(&fx.home.join("b")), 0o700);
        assert!(
            ["dir.a", "dir.b", "dir.c", "dir.inner"]
                .iter()
                .all(|id| fx.owns(id))
        );
    }

    #[test]
    fn dirs_made_together_report_each_one_in_order() {
        let root = tempfile::tempdir().unwrap();
        let at = |rel: &str| root.path().join(rel);
        std::fs::create_dir(at("there")).unwrap();
        std::fs::write(at("file"), "in the way\n").unwrap();
        let ops = [
            Op::CreateDir {
                path: at("new"),
                mode: Some(0o750),
            },
            Op::CreateDir {
                path: at("there"),
                mode: None,
            },
            Op::CreateDir {
                path: at("file"),
                mode: None,
            },
            Op::CreateDir {
                path: at("missing/parent/child"),
                mode: None,
            },
        ];
        let refs: Vec<&Op> = ops.iter().collect();
        let backups = root.path().join("backups");
        let control = crate::run::RunControl::default();
        let secrets = crate::secret::Secrets::unavailable();
        let env = ApplyEnv {
            backups: &backups,
            control: &control,
            secrets: &secrets,
        };
        let results = Dir.apply_together(&refs, &env);
        assert_eq!(results.len(), 4);
        assert!(
            results[0].is_ok() && results[1].is_ok() && results[3].is_ok(),
            "{results:?}"
        );
        let refused = results[2].as_ref().unwrap_err().to_string();
        assert!(refused.contains("file"), "{refused}");
        assert_eq!(mode(&at("new")), 0o750);
        assert!(at("there").is_dir() && at("missing/parent/child").is_dir());
        assert_eq!(std::fs::read_to_string(at("file")).unwrap(), "in the way\n");
    }

    #[test]
    fn mode_change_is_an_update_naming_both_modes() {
        let mut fx = Fixture::new();
        fx.converge(D);
        let m = D.replace("0700", "0750");
        let plan = fx.plan(&m);
        let c = change(&plan, "dir.d");
        assert_eq!(c.action, Action::Update);
        assert_eq!(c.reason, "mode 0700 → 0750");
        fx.converge(&m);
        assert_eq!(mode(&fx.home.join("d")), 0o750);
        // Drift by hand is repaired.
        fs::set_permissions(fx.home.join("d"), fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(change(&fx.plan(&m), "dir.d").reason, "mode 0777 → 0750");
        fx.converge(&m);
        assert_eq!(mode(&fx.home.join("d")), 0o750);
    }

    #[test]
    fn unowned_dir_is_kept_as_is_and_not_adopted() {
        let mut fx = Fixture::new();
        let d = fx.home.join("d");
        fs::create_dir(&d).unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        // No mode declared: nothing to do, and stead does not claim it.
        let (plan, _) = fx.converge("[dir.d]\npath = \"~/d\"\n");
        assert_eq!(change(&plan, "dir.d").action, Action::Unchanged);
        assert!(!fx.owns("dir.d"));
        // A different mode on a dir stead does not own: conflict unless forced.
        let (plan, _) = fx.apply_with(D, false);
        let c = change(&plan, "dir.d");
        assert_eq!(c.action, Action::Conflict);
        assert!(c.reason.contains("mode 0755"), "{}", c.reason);
        assert_eq!(mode(&d), 0o755);
        let (plan, outcome) = fx.apply_with(D, true);
        assert!(!outcome.has_failures());
        assert_eq!(change(&plan, "dir.d").action, Action::Update);
        assert_eq!(mode(&d), 0o700);
    }

    #[test]
    fn a_file_in_the_way_is_a_conflict() {
        let mut fx = Fixture::new();
        fs::write(fx.home.join("d"), "file").unwrap();
        let (plan, outcome) = fx.apply_with(D, true);
        assert_eq!(change(&plan, "dir.d").action, Action::Conflict);
        assert!(outcome.has_failures());
        assert_eq!(fs::read_to_string(fx.home.join("d")).unwrap(), "file");
    }

    #[test]
    fn purge_removes_unmanaged_entries_with_backups_and_keeps_managed_ones() {
        let mut fx = Fixture::new();
        let m = "[dir.d]\npath = \"~/d\"\npurge = true\n\
                 [file.keep]\npath = \"~/d/keep\"\ncontent = \"k\"\n\
                 [file.deep]\npath = \"~/d/sub/deep\"\ncontent = \"deep\"\n";
        fx.converge(m);
        let d = fx.home.join("d");
        fs::write(d.join("stray"), "stray content").unwrap();
        fs::create_dir_all(d.join("junk/inner")).unwrap();
        fs::write(d.join("junk/inner/f"), "nested").unwrap();
        fs::write(d.join("sub/extra"), "in a kept subdir").unwrap();
        let victim = fx.out.join("victim");
        fs::write(&victim, "outside").unwrap();
        symlink(&victim, d.join("link")).unwrap();

        let plan = fx.plan(m);
        let c = change(&plan, "dir.d");
        assert_eq!(c.action, Action::Update);
        assert_eq!(c.reason, "purge 3 unmanaged: ~/d/junk, ~/d/link, ~/d/stray");
        assert_eq!(
            c.op,
            Op::PurgeDir {
                path: d.clone(),
                mode: None,
                purge: vec![d.join("junk"), d.join("link"), d.join("stray")],
            }
        );
        let outcome = fx.execute(&plan);
        assert!(!outcome.has_failures(), "{:?}", outcome.statuses);
        assert!(!d.join("stray").exists());
        assert!(!d.join("junk").exists());
        assert!(fs::symlink_metadata(d.join("link")).is_err());
        // The link's target outside is untouched; managed entries stay.
        assert_eq!(fs::read_to_string(&victim).unwrap(), "outside");
        assert_eq!(fs::read_to_string(d.join("keep")).unwrap(), "k");
        assert_eq!(fs::read_to_string(d.join("sub/deep")).unwrap(), "deep");
        assert_eq!(
            fs::read_to_string(d.join("sub/extra")).unwrap(),
            "in a kept subdir"
        );
        // Every purged entry has a copy under the backups dir (one
        // timestamped folder per run, keeping the full path).
        assert!(backup_of(&plan, &outcome, "dir.d").starts_with(&fx.backups));
        let rel = |p: &Path| {
            let rest = p.strip_prefix("/").unwrap();
            fs::read_dir(&fx.backups)
                .unwrap()
                .map(|e| e.unwrap().path().join(rest))
                .find(|c| fs::symlink_metadata(c).is_ok())
                .unwrap_or_else(|| panic!("no backup of {}", p.display()))
        };
        assert_eq!(
            fs::read_to_string(rel(&d.join("stray"))).unwrap(),
            "stray content"
        );
        assert_eq!(
            fs::read_to_string(rel(&d.join("junk/inner/f"))).unwrap(),
            "nested"
        );
        assert_eq!(fs::read_link(rel(&d.join("link"))).unwrap(), victim);
        assert!(fx.plan(m).is_empty());
    }

    #[test]
    fn without_purge_unmanaged_entries_stay() {
        let mut fx = Fixture::new();
        let m = "[dir.d]\npath = \"~/d\"\n";
        fx.converge(m);
        fs::write(fx.home.join("d/stray"), "s").unwrap();
        assert!(fx.plan(m).is_empty());
    }

    #[test]
    fn undeclared_owned_dir_is_removed_only_when_empty() {
        let mut fx = Fixture::new();
        fx.converge("[dir.empty]\npath = \"~/e\"\n[dir.full]\npath = \"~/f\"\n");
        fs::create_dir(fx.home.join("f/user")).unwrap();
        fs::write(fx.home.join("f/user/data"), "precious").unwrap();
        let (plan, outcome) = fx.converge("[noop.x]\n");
        let e = change(&plan, "dir.empty");
        assert_eq!(e.action, Action::Remove);
        assert_eq!(
            e.op,
            Op::RemoveDir {
                path: fx.home.join("e")
            }
        );
        let f = change(&plan, "dir.full");
        assert_eq!(f.action, Action::Remove);
        assert!(f.reason.contains("nothing unmanaged"), "{}", f.reason);
        assert!(matches!(
            status(&plan, &outcome, "dir.full"),
            Status::Done(Applied { output: Some(o), .. }) if o == "not empty; left in place"
        ));
        assert!(!fx.home.join("e").exists());
        assert_eq!(
            fs::read_to_string(fx.home.join("f/user/data")).unwrap(),
            "precious"
        );
        assert!(!fx.owns("dir.empty") && !fx.owns("dir.full"));
    }

    #[test]
    fn removal_of_a_dir_that_filled_up_after_planning_leaves_it() {
        // The plan saw it empty; by apply time a file appeared: never recursive.
        let mut fx = Fixture::new();
        fx.converge("[dir.e]\npath = \"~/e\"\n");
        let plan = fx.plan("[noop.x]\n");
        assert!(matches!(change(&plan, "dir.e").op, Op::RemoveDir { .. }));
        fs::write(fx.home.join("e/late"), "late").unwrap();
        let outcome = fx.execute(&plan);
        assert!(!outcome.has_failures(), "{:?}", outcome.statuses);
        assert_eq!(fs::read_to_string(fx.home.join("e/late")).unwrap(), "late");
    }

    #[test]
    fn files_and_dirs_removed_together_go_deepest_first() {
        let mut fx = Fixture::new();
        fx.converge(
            "[dir.a]\npath = \"~/a\"\n[dir.b]\npath = \"~/a/b\"\n\
             [file.f]\npath = \"~/a/b/f\"\ncontent = \"x\"\n",
        );
        let (plan, _) = fx.converge("[noop.x]\n");
        let removed: Vec<&str> = plan.changes[plan.removals_from..]
            .iter()
            .map(|c| c.id.as_str())
            .collect();
        assert_eq!(removed, ["file.f", "dir.b", "dir.a"]);
        assert!(!fx.home.join("a").exists());
    }
}
