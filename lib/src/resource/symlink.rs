//! `symlink`: a link at `path` pointing to `target` (relative targets resolve
//! in the config repo). Created at a temp name and renamed into place.

use std::fs;
use std::io;
use std::path::Path;

use crate::fsutil::{self, FsError};
use crate::manifest::SymlinkSpec;

use super::{Action, Applied, Op, PlanContext, ResourceError, backup, ensure_parent};

type Planned = (Action, String, Option<String>, Op);

pub(super) fn plan(
    s: &SymlinkSpec,
    ctx: &PlanContext,
    owned: bool,
) -> Result<Planned, ResourceError> {
    let path = &s.path;
    let create = |backup: bool| Op::Symlink {
        path: path.clone(),
        target: s.target.clone(),
        backup,
    };
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok((
                Action::Create,
                format!("→ {}", s.target.display()),
                None,
                create(false),
            ));
        }
        Err(e) => return Err(FsError::new("cannot read", path, e).into()),
    };
    if meta.file_type().is_symlink() {
        let current = fs::read_link(path).map_err(|e| FsError::new("cannot read", path, e))?;
        if current == s.target {
            return Ok((Action::Unchanged, String::new(), None, Op::None));
        }
        let reason = format!(
            "points to {}, should point to {}",
            current.display(),
            s.target.display()
        );
        if owned {
            return Ok((Action::Update, reason, None, create(false)));
        }
        if ctx.force {
            return Ok((
                Action::Update,
                format!("{reason} (stead does not own it; backed up first)"),
                None,
                create(true),
            ));
        }
        return Ok((
            Action::Conflict,
            format!(
                "{reason}, and stead does not own it; 'stead apply --force' backs it up and replaces it"
            ),
            None,
            Op::None,
        ));
    }
    if meta.is_dir() {
        return Ok((
            Action::Conflict,
            "a directory is in the way; stead never replaces a directory it does not own".into(),
            None,
            Op::None,
        ));
    }
    if ctx.force {
        return Ok((
            Action::Update,
            "replaces a file stead does not own (backed up first)".into(),
            None,
            create(true),
        ));
    }
    Ok((
        Action::Conflict,
        "a file is in the way and stead does not own it; 'stead apply --force' backs it up and replaces it".into(),
        None,
        Op::None,
    ))
}

pub(super) fn plan_removal(path: &Path) -> Result<(Action, String, Op), ResourceError> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok((
            Action::Remove,
            "no longer declared (already gone)".into(),
            Op::None,
        )),
        Err(e) => Err(FsError::new("cannot read", path, e).into()),
        Ok(m) if m.file_type().is_symlink() => Ok((
            Action::Remove,
            "no longer declared".into(),
            Op::RemoveSymlink {
                path: path.to_path_buf(),
            },
        )),
        Ok(_) => Ok((
            Action::Remove,
            "no longer declared; something else is there now, left alone".into(),
            Op::None,
        )),
    }
}

pub(super) fn create(
    path: &Path,
    target: &Path,
    backup_first: bool,
    backups: &Path,
) -> Result<Applied, ResourceError> {
    let backup = if backup_first && fs::symlink_metadata(path).is_ok() {
        Some(backup(path, backups)?)
    } else {
        None
    };
    ensure_parent(path)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    std::os::unix::fs::symlink(target, &tmp)
        .map_err(|e| FsError::new("cannot create symlink", &tmp, e))?;
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(FsError::new("cannot rename into", path, e).into());
    }
    fsutil::fsync_dir(dir)?;
    Ok(Applied {
        checksum: None,
        backup,
        output: None,
    })
}

pub(super) fn remove(path: &Path) -> Result<Applied, ResourceError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            fs::remove_file(path).map_err(|e| FsError::new("cannot remove", path, e))?;
            if let Some(dir) = path.parent() {
                fsutil::fsync_dir(dir)?;
            }
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(FsError::new("cannot read", path, e).into()),
    }
    Ok(Applied::default())
}
