//! `dir`: a directory with an optional `mode`; `purge = true` removes entries
//! that no resource manages (each backed up first).

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::fsutil::{self, FsError};
use crate::manifest::DirSpec;

use super::{Action, Applied, Op, PlanContext, ResourceError, backup, mode_of};

type Planned = (Action, String, Option<String>, Op);

pub(super) fn plan(d: &DirSpec, ctx: &PlanContext, owned: bool) -> Result<Planned, ResourceError> {
    let path = &d.path;
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok((
                Action::Create,
                String::new(),
                None,
                Op::CreateDir {
                    path: path.clone(),
                    mode: d.mode,
                },
            ));
        }
        Err(e) => return Err(FsError::new("cannot read", path, e).into()),
    };
    if !meta.is_dir() {
        return Ok((
            Action::Conflict,
            "something that is not a directory is in the way; move it and apply again".into(),
            None,
            Op::None,
        ));
    }
    let actual_mode = mode_of(&meta);
    let mode_change = d.mode.filter(|m| *m != actual_mode);
    if mode_change.is_some() && !owned && !ctx.force {
        return Ok((
            Action::Conflict,
            format!(
                "exists with mode {actual_mode:04o} and stead does not own it; 'stead apply --force' changes the mode"
            ),
            None,
            Op::None,
        ));
    }
    let purge = if d.purge {
        unmanaged_entries(path, ctx)?
    } else {
        Vec::new()
    };
    if mode_change.is_none() && purge.is_empty() {
        return Ok((Action::Unchanged, String::new(), None, Op::None));
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
    Ok((
        Action::Update,
        reasons.join("; "),
        None,
        Op::PurgeDir {
            path: path.clone(),
            mode: mode_change,
            purge,
        },
    ))
}

/// Entries directly inside `dir` that no declared resource is or lies under.
fn unmanaged_entries(dir: &Path, ctx: &PlanContext) -> Result<Vec<PathBuf>, ResourceError> {
    let keep: HashSet<PathBuf> = ctx
        .manifest
        .resources
        .iter()
        .filter_map(|r| r.spec.path())
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
        if !keep.contains(&p) {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

pub(super) fn plan_removal(path: &Path) -> Result<(Action, String, Op), ResourceError> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok((
            Action::Remove,
            "no longer declared (already gone)".into(),
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
            Ok((
                Action::Remove,
                reason.into(),
                Op::RemoveDir {
                    path: path.to_path_buf(),
                },
            ))
        }
        Ok(_) => Ok((
            Action::Remove,
            "no longer declared; something else is there now, left alone".into(),
            Op::None,
        )),
    }
}

pub(super) fn create(path: &Path, mode: Option<u32>) -> Result<Applied, ResourceError> {
    fs::create_dir_all(path).map_err(|e| FsError::new("cannot create directory", path, e))?;
    if let Some(m) = mode {
        super::file::chmod(path, m)?;
    }
    if let Some(parent) = path.parent() {
        fsutil::fsync_dir(parent)?;
    }
    Ok(Applied::default())
}

/// Sets the mode and removes unmanaged entries, each backed up first: a purge
/// never destroys what stead did not create without a copy.
pub(super) fn purge(
    path: &Path,
    mode: Option<u32>,
    entries: &[PathBuf],
    backups: &Path,
) -> Result<Applied, ResourceError> {
    if let Some(m) = mode {
        super::file::chmod(path, m)?;
    }
    let mut applied = Applied::default();
    for entry in entries {
        if fs::symlink_metadata(entry).is_err() {
            continue;
        }
        let copy = backup(entry, backups)?;
        applied.backup.get_or_insert(copy);
        remove_entry(entry)?;
    }
    if !entries.is_empty() {
        fsutil::fsync_dir(path)?;
        applied.output = Some(format!("purged {} entries", entries.len()));
    }
    Ok(applied)
}

fn remove_entry(entry: &Path) -> Result<(), ResourceError> {
    let meta = match fs::symlink_metadata(entry) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(FsError::new("cannot read", entry, e).into()),
    };
    let result = if meta.is_dir() {
        fs::remove_dir_all(entry)
    } else {
        fs::remove_file(entry)
    };
    result.map_err(|e| FsError::new("cannot remove", entry, e).into())
}

pub(super) fn remove(path: &Path) -> Result<Applied, ResourceError> {
    match fs::remove_dir(path) {
        Ok(()) => {
            if let Some(parent) = path.parent() {
                fsutil::fsync_dir(parent)?;
            }
            Ok(Applied::default())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Applied::default()),
        Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => Ok(Applied {
            output: Some("not empty; left in place".into()),
            ..Applied::default()
        }),
        Err(e) => Err(FsError::new("cannot remove", path, e).into()),
    }
}
