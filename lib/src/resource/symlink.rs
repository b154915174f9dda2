//! `symlink`: a link at `path` pointing to `target` (relative targets resolve
//! in the config repo). Created at a temp name and renamed into place.

use std::fs;
use std::io;
use std::path::Path;

use crate::fsutil::{self, FsError};
use crate::manifest::{Kind, Spec, SpecInput, SymlinkSpec};
use crate::safe_path::{self, EntryType};
use crate::state::DriftStatus;

use super::kind::{
    ApplyEnv, Drift, Key, KeyType, KindSchema, Ownership, Planned, ResourceKind, unexpected_op,
    unexpected_spec,
};
use super::{Action, Applied, Op, PlanContext, ResourceError, backup_existing};

/// The `symlink` kind.
pub struct Symlink;

impl KindSchema for Symlink {
    fn kind(&self) -> Kind {
        Kind::Symlink
    }

    fn keys(&self) -> &'static [Key] {
        const KEYS: &[Key] = &[
            Key::required("path", KeyType::Str),
            Key::required("target", KeyType::Str),
        ];
        KEYS
    }

    fn path_key(&self) -> Option<&'static str> {
        Some("path")
    }

    fn build(&self, input: &mut SpecInput) -> Option<Spec> {
        let target = input.repo_path("target", false);
        match (input.path(), target) {
            (Some(path), Some(target)) => Some(Spec::Symlink(SymlinkSpec { path, target })),
            _ => None,
        }
    }

    fn ownership(&self) -> Ownership {
        Ownership {
            owns_path: true,
            adopt_when_right: true,
        }
    }
}

impl ResourceKind for Symlink {
    fn plan(&self, spec: &Spec, ctx: &PlanContext, owned: bool) -> Result<Planned, ResourceError> {
        match spec {
            Spec::Symlink(s) => plan(s, ctx, owned).map(|p| with_link_checksum(p, s)),
            other => Err(unexpected_spec(self.kind(), other)),
        }
    }

    fn plan_removal(
        &self,
        path: &Path,
        recorded: Option<&String>,
    ) -> Result<Planned, ResourceError> {
        plan_removal(path, recorded)
    }

    fn apply(&self, op: &Op, env: &ApplyEnv) -> Result<Applied, ResourceError> {
        let backups = env.backups;
        match op {
            Op::Symlink {
                path,
                target,
                backup,
            } => create(path, target, *backup, backups),
            Op::RemoveSymlink { path, backup } => remove(path, *backup, backups),
            other => Err(unexpected_op(self.kind(), other)),
        }
    }

    fn drift(
        &self,
        path: &Path,
        meta: &fs::Metadata,
        _recorded: Option<&String>,
        _vouched: bool,
        declared: Option<&Spec>,
        _secrets: &crate::secret::Secrets,
    ) -> Drift {
        drift(path, meta, declared)
    }

    /// A link runs after whatever creates its target.
    fn needs_paths<'s>(&self, spec: &'s Spec) -> Vec<&'s Path> {
        match spec {
            Spec::Symlink(s) => vec![s.target.as_path()],
            _ => Vec::new(),
        }
    }

    fn watch_paths(&self, spec: &Spec) -> Vec<std::path::PathBuf> {
        spec.path().map(Path::to_path_buf).into_iter().collect()
    }

    /// The link itself (its plan never looks at the target).
    fn seal_paths(&self, spec: &Spec) -> Option<Vec<crate::seal::SealPath>> {
        spec.path().map(|p| vec![crate::seal::SealPath::content(p)])
    }
}

/// The plan with the checksum stead records for the link
/// ([`super::link_checksum`]): of the link it writes, or of the link already
/// there when that one is right. A removal later proves with it that the
/// link is stead's.
fn with_link_checksum(mut planned: Planned, s: &SymlinkSpec) -> Planned {
    planned.checksum = match planned.action {
        Action::Create | Action::Update => Some(super::link_checksum(&s.target).into()),
        Action::Unchanged => fs::read_link(&s.path)
            .ok()
            .map(|t| super::link_checksum(&t).into()),
        _ => None,
    };
    planned
}

/// A recorded link: replaced by something else, or pointing elsewhere than
/// declared.
fn drift(path: &Path, meta: &fs::Metadata, declared: Option<&Spec>) -> Drift {
    let current = fs::read_link(path).ok();
    let actual = current.as_ref().map(|t| t.display().to_string());
    let declared_target = match declared {
        Some(Spec::Symlink(s)) => Some(&s.target),
        _ => None,
    };
    let expected = declared_target.map(|t| t.display().to_string());
    let same = match (&current, declared_target) {
        (Some(c), Some(t)) => fsutil::link_points_to(path, c, t),
        _ => true,
    };
    if !meta.file_type().is_symlink() {
        return Drift {
            status: DriftStatus::Replaced,
            expected,
            actual: Some("not a symlink".into()),
        };
    }
    Drift {
        status: if same {
            DriftStatus::Unchanged
        } else {
            DriftStatus::Retargeted
        },
        expected,
        actual,
    }
}

fn plan(s: &SymlinkSpec, ctx: &PlanContext, owned: bool) -> Result<Planned, ResourceError> {
    let path = &s.path;
    let create = |backup: bool| Op::Symlink {
        path: path.clone(),
        target: s.target.clone(),
        backup,
    };
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Planned::new(
                Action::Create,
                format!("→ {}", s.target.display()),
                create(false),
            ));
        }
        Err(e) => return Err(FsError::new("cannot read", path, e).into()),
    };
    if meta.file_type().is_symlink() {
        let current = fs::read_link(path).map_err(|e| FsError::new("cannot read", path, e))?;
        // A relative link to the same place is the same link (DESIGN: symlink
        // targets are normalized before diffing).
        if fsutil::link_points_to(path, &current, &s.target) {
            return Ok(Planned::unchanged(""));
        }
        let reason = format!(
            "points to {}, should point to {}",
            current.display(),
            s.target.display()
        );
        if owned {
            return Ok(Planned::new(Action::Update, reason, create(false)));
        }
        if ctx.force {
            return Ok(Planned::new(
                Action::Update,
                format!("{reason} (stead does not own it; backed up first)"),
                create(true),
            ));
        }
        return Ok(Planned::conflict(format!(
            "{reason}, and stead does not own it; 'stead apply --force' backs it up and replaces it"
        )));
    }
    if meta.is_dir() {
        return Ok(Planned::conflict(
            "a directory is in the way; stead never replaces a directory it does not own",
        ));
    }
    if ctx.force || owned {
        let reason = if owned {
            "replaces the file stead wrote here (backed up first)"
        } else {
            "replaces a file stead does not own (backed up first)"
        };
        return Ok(Planned::new(Action::Update, reason, create(true)));
    }
    Ok(Planned::conflict(
        "a file is in the way and stead does not own it; 'stead apply --force' backs it up and replaces it",
    ))
}

fn plan_removal(path: &Path, recorded: Option<&String>) -> Result<Planned, ResourceError> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Planned::new(
            Action::Remove,
            "no longer declared (already gone)",
            Op::None,
        )),
        Err(e) => Err(FsError::new("cannot read", path, e).into()),
        Ok(m) if m.file_type().is_symlink() => {
            // A link that is not the one stead recorded making (retargeted,
            // or a record without its checksum) is copied before it goes.
            let backup = !super::written_by_stead(path, recorded);
            Ok(Planned::new(
                Action::Remove,
                if backup {
                    "no longer declared; not the link stead recorded, so it is backed up first"
                } else {
                    "no longer declared"
                },
                Op::RemoveSymlink {
                    path: path.to_path_buf(),
                    backup,
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

/// Makes the link atomically in its directory, opened component by
/// component without following a link (missing ones are created).
pub(super) fn create(
    path: &Path,
    target: &Path,
    backup_first: bool,
    backups: &Path,
) -> Result<Applied, ResourceError> {
    let (dir, name) = safe_path::open_parent_required(path, true)?;
    let backup = backup_existing(path, backup_first, backups)?;
    dir.symlink_atomic(&name, target)?;
    Ok(Applied {
        checksum: None,
        backup,
        ..Applied::default()
    })
}

/// Removes the link if a link is still there (backed up first when its
/// target is not what stead recorded); anything else is left alone.
pub(super) fn remove(
    path: &Path,
    backup_first: bool,
    backups: &Path,
) -> Result<Applied, ResourceError> {
    let mut backup = None;
    let Some((dir, name)) = safe_path::open_parent(path, false)? else {
        return Ok(Applied::default());
    };
    if let Some((EntryType::Symlink, _)) = dir.stat(&name)? {
        backup = backup_existing(path, backup_first, backups)?;
        if dir.remove_file(&name)? {
            dir.sync()?;
        }
    }
    Ok(Applied {
        backup,
        ..Applied::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::tests::{Fixture, backup_of, change};

    #[test]
    fn relative_target_resolves_in_the_config_repo() {
        let mut fx = Fixture::new();
        fs::create_dir(fx.repo.join("nvim")).unwrap();
        let m = "[symlink.nvim]\npath = \"~/.config/nvim\"\ntarget = \"nvim\"\n";
        let (plan, _) = fx.converge(m);
        let c = change(&plan, "symlink.nvim");
        assert_eq!(c.action, Action::Create);
        assert_eq!(c.keys, ["~/.config/nvim"]);
        let link = fx.home.join(".config/nvim");
        assert_eq!(fs::read_link(&link).unwrap(), fx.repo.join("nvim"));
        assert!(fx.owns("symlink.nvim"));
        // `..` stays inside the lexical resolution.
        let m = "[symlink.up]\npath = \"~/up\"\ntarget = \"sub/../nvim\"\n";
        fx.converge(m);
        assert_eq!(
            fs::read_link(fx.home.join("up")).unwrap(),
            fx.repo.join("nvim")
        );
    }

    #[test]
    fn absolute_and_home_targets_are_kept_absolute() {
        let mut fx = Fixture::new();
        let m = "[symlink.abs]\npath = \"~/abs\"\ntarget = \"@OUT@/thing\"\n\
                 [symlink.home]\npath = \"~/h\"\ntarget = \"~/real\"\n";
        fx.converge(m);
        assert_eq!(
            fs::read_link(fx.home.join("abs")).unwrap(),
            fx.out.join("thing")
        );
        assert_eq!(
            fs::read_link(fx.home.join("h")).unwrap(),
            fx.home.join("real")
        );
        // A dangling target is fine: the link is what is managed.
        assert!(!fx.out.join("thing").exists());
    }

    #[test]
    fn owned_link_pointing_elsewhere_is_updated() {
        let mut fx = Fixture::new();
        fx.converge("[symlink.l]\npath = \"~/l\"\ntarget = \"@OUT@/one\"\n");
        let m = "[symlink.l]\npath = \"~/l\"\ntarget = \"@OUT@/two\"\n";
        let plan = fx.plan(m);
        let c = change(&plan, "symlink.l");
        assert_eq!(c.action, Action::Update);
        assert_eq!(
            c.reason,
            format!(
                "points to {}, should point to {}",
                fx.out.join("one").display(),
                fx.out.join("two").display()
            )
        );
        fx.converge(m);
        assert_eq!(
            fs::read_link(fx.home.join("l")).unwrap(),
            fx.out.join("two")
        );
    }

    #[test]
    fn unowned_link_conflicts_unless_forced_and_is_backed_up() {
        let mut fx = Fixture::new();
        let link = fx.home.join("l");
        std::os::unix::fs::symlink("/somewhere/else", &link).unwrap();
        let m = "[symlink.l]\npath = \"~/l\"\ntarget = \"@OUT@/mine\"\n";
        let (plan, outcome) = fx.apply_with(m, false);
        assert_eq!(change(&plan, "symlink.l").action, Action::Conflict);
        assert!(outcome.has_failures());
        assert_eq!(fs::read_link(&link).unwrap(), Path::new("/somewhere/else"));
        let (plan, outcome) = fx.apply_with(m, true);
        assert_eq!(change(&plan, "symlink.l").action, Action::Update);
        let backup = backup_of(&plan, &outcome, "symlink.l");
        assert_eq!(fs::read_link(backup).unwrap(), Path::new("/somewhere/else"));
        assert_eq!(fs::read_link(&link).unwrap(), fx.out.join("mine"));
        assert!(fx.owns("symlink.l"));
        assert!(fx.plan(m).is_empty());
    }

    #[test]
    fn unowned_file_in_the_way_conflicts_unless_forced() {
        let mut fx = Fixture::new();
        let link = fx.home.join("l");
        fs::write(&link, "user data").unwrap();
        let m = "[symlink.l]\npath = \"~/l\"\ntarget = \"@OUT@/t\"\n";
        let (plan, _) = fx.apply_with(m, false);
        assert_eq!(change(&plan, "symlink.l").action, Action::Conflict);
        assert_eq!(fs::read_to_string(&link).unwrap(), "user data");
        let (plan, outcome) = fx.apply_with(m, true);
        let backup = backup_of(&plan, &outcome, "symlink.l");
        assert_eq!(fs::read_to_string(backup).unwrap(), "user data");
        assert_eq!(fs::read_link(&link).unwrap(), fx.out.join("t"));
    }

    #[test]
    fn a_directory_in_the_way_is_never_replaced_even_forced() {
        let mut fx = Fixture::new();
        fs::create_dir_all(fx.home.join("l/inner")).unwrap();
        let m = "[symlink.l]\npath = \"~/l\"\ntarget = \"@OUT@/t\"\n";
        let (plan, _) = fx.apply_with(m, true);
        assert_eq!(change(&plan, "symlink.l").action, Action::Conflict);
        assert!(fx.home.join("l/inner").is_dir());
    }

    #[test]
    fn correct_unowned_link_is_adopted() {
        let mut fx = Fixture::new();
        std::os::unix::fs::symlink(fx.out.join("t"), fx.home.join("l")).unwrap();
        let (plan, _) = fx.converge("[symlink.l]\npath = \"~/l\"\ntarget = \"@OUT@/t\"\n");
        assert_eq!(change(&plan, "symlink.l").action, Action::Unchanged);
        assert!(fx.owns("symlink.l"));
    }

    #[test]
    fn a_relative_link_to_the_declared_target_is_the_same_link() {
        let mut fx = Fixture::new();
        fs::create_dir_all(fx.home.join("sub")).unwrap();
        fs::write(fx.home.join("t"), "t").unwrap();
        std::os::unix::fs::symlink("../t", fx.home.join("sub/l")).unwrap();
        let (plan, _) = fx.converge("[symlink.l]\npath = \"~/sub/l\"\ntarget = \"~/t\"\n");
        assert_eq!(change(&plan, "symlink.l").action, Action::Unchanged);
        assert_eq!(
            fs::read_link(fx.home.join("sub/l")).unwrap(),
            Path::new("../t")
        );
        // A relative link elsewhere is still a difference.
        fs::remove_file(fx.home.join("sub/l")).unwrap();
        std::os::unix::fs::symlink("t", fx.home.join("sub/l")).unwrap();
        let plan = fx.plan("[symlink.l]\npath = \"~/sub/l\"\ntarget = \"~/t\"\n");
        assert_eq!(change(&plan, "symlink.l").action, Action::Update);
    }

    #[test]
    fn an_owned_file_becomes_a_link_when_the_kind_changes() {
        // Ownership is by path: the file stead wrote at ~/x is no obstacle
        // when the manifest now declares a link there.
        let mut fx = Fixture::new();
        fx.write_repo("x", "from repo");
        fx.converge("[file.x]\npath = \"~/x\"\ncontent = \"written\"\n");
        let m = "[symlink.x]\npath = \"~/x\"\ntarget = \"x\"\n";
        let (plan, _) = fx.converge(m);
        assert_eq!(change(&plan, "symlink.x").action, Action::Update);
        assert_eq!(fs::read_link(fx.home.join("x")).unwrap(), fx.repo.join("x"));
        assert!(fx.owns("symlink.x") && !fx.owns("file.x"));
        // And back again.
        let (plan, _) = fx.converge("[file.x]\npath = \"~/x\"\ncontent = \"written\"\n");
        assert_eq!(change(&plan, "file.x").action, Action::Update);
        assert_eq!(fs::read_to_string(fx.home.join("x")).unwrap(), "written");
        assert!(fs::symlink_metadata(fx.home.join("x")).unwrap().is_file());
        assert_eq!(fs::read_to_string(fx.repo.join("x")).unwrap(), "from repo");
    }

    #[test]
    fn undeclared_owned_link_is_removed_but_not_its_target() {
        let mut fx = Fixture::new();
        fx.write_repo("real", "real content");
        fx.converge(
            "[symlink.a]\npath = \"~/a\"\ntarget = \"real\"\n[symlink.b]\npath = \"~/b\"\ntarget = \"real\"\n",
        );
        // b is replaced by a file by the user: left alone.
        fs::remove_file(fx.home.join("b")).unwrap();
        fs::write(fx.home.join("b"), "user").unwrap();
        let (plan, _) = fx.converge("[noop.x]\n");
        let a = change(&plan, "symlink.a");
        assert_eq!(
            (a.action, &a.op),
            (
                Action::Remove,
                &Op::RemoveSymlink {
                    path: fx.home.join("a"),
                    backup: false,
                }
            )
        );
        assert_eq!(change(&plan, "symlink.b").op, Op::None);
        assert!(fs::symlink_metadata(fx.home.join("a")).is_err());
        assert_eq!(fs::read_to_string(fx.home.join("b")).unwrap(), "user");
        assert_eq!(
            fs::read_to_string(fx.repo.join("real")).unwrap(),
            "real content"
        );
        assert!(!fx.owns("symlink.a") && !fx.owns("symlink.b"));
    }
}
