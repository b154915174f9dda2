//! Atomic, durable file writes and private directories.
//!
//! A write goes to a temp file in the target's directory (created `O_EXCL`
//! with its final mode, so a secret is never readable by others even for a
//! moment), is fsync'd, renamed over the target, and the directory is fsync'd
//! so the rename itself survives a power loss. A crash at any point leaves
//! either the old file or the new one, never a torn or empty file.
//!
//! Written by hand rather than with `atomic-write-file` because stead needs a
//! hook between the stages ([`WriteStage`]) to prove the guarantee in crash
//! tests, and the creation mode set before any byte is written.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where an atomic write is; observers may act (tests kill the process here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteStage {
    /// The temp file holds the full new content and is fsync'd; the target is untouched.
    TempSynced,
    /// The rename is done; the directory is not yet fsync'd.
    Renamed,
}

/// An error from a filesystem operation, naming the path it concerned.
#[derive(Debug, thiserror::Error)]
#[error("{action} {path}: {source}")]
pub struct FsError {
    /// What stead was doing, e.g. "cannot write".
    pub action: &'static str,
    /// The path concerned.
    pub path: PathBuf,
    /// The OS error.
    #[source]
    pub source: io::Error,
}

impl FsError {
    pub(crate) fn new(action: &'static str, path: &Path, source: io::Error) -> Self {
        FsError {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Writes `data` to `path` atomically with permission bits `mode`.
pub fn atomic_write(path: &Path, data: &[u8], mode: u32) -> Result<(), FsError> {
    atomic_write_observed(path, data, mode, &mut |_| {})
}

/// Like [`atomic_write`], calling `observer` at each [`WriteStage`].
pub fn atomic_write_observed(
    path: &Path,
    data: &[u8],
    mode: u32,
    observer: &mut dyn FnMut(WriteStage),
) -> Result<(), FsError> {
    let dir = parent_dir(path);
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".to_string());
    let (tmp_path, mut tmp) = create_temp(&dir, &file_name, mode)?;
    let result = (|| {
        tmp.write_all(data)
            .map_err(|e| FsError::new("cannot write", &tmp_path, e))?;
        // The umask may have narrowed the creation mode; set it exactly.
        tmp.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| FsError::new("cannot set permissions on", &tmp_path, e))?;
        tmp.sync_all()
            .map_err(|e| FsError::new("cannot fsync", &tmp_path, e))?;
        observer(WriteStage::TempSynced);
        fs::rename(&tmp_path, path).map_err(|e| FsError::new("cannot rename into", path, e))
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp_path);
        return Err(e);
    }
    observer(WriteStage::Renamed);
    fsync_dir(&dir)
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The name of a temp file for an atomic write of `file_name`:
/// `.NAME.tmp-PID-UUID`, which recovery recognises as stead's own.
pub fn temp_name(file_name: &str) -> String {
    format!(
        ".{file_name}.tmp-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    )
}

fn create_temp(dir: &Path, file_name: &str, mode: u32) -> Result<(PathBuf, File), FsError> {
    let mut last_err = None;
    for _ in 0..16 {
        let tmp_path = dir.join(temp_name(file_name));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&tmp_path)
        {
            Ok(f) => return Ok((tmp_path, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some(e),
            Err(e) => return Err(FsError::new("cannot create a temp file in", dir, e)),
        }
    }
    Err(FsError::new(
        "cannot create a temp file in",
        dir,
        last_err.unwrap_or_else(|| io::Error::other("no unique name")),
    ))
}

/// Removes temp files that an interrupted [`atomic_write`] of `target` left
/// behind. Call only while no other writer of `target` can be running (the
/// state store calls it under the state lock). Returns how many it removed.
pub fn remove_orphan_temps(target: &Path) -> usize {
    let dir = parent_dir(target);
    let Some(name) = target.file_name() else {
        return 0;
    };
    let prefix = format!(".{}.tmp-", name.to_string_lossy());
    let Ok(entries) = fs::read_dir(&dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .filter(|e| fs::remove_file(e.path()).is_ok())
        .count()
}

/// fsyncs a directory so that renames and unlinks in it are durable.
pub fn fsync_dir(dir: &Path) -> Result<(), FsError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| FsError::new("cannot fsync directory", dir, e))
}

/// Creates `dir` (and parents) if missing and makes it mode 0700.
pub fn ensure_private_dir(dir: &Path) -> Result<(), FsError> {
    fs::create_dir_all(dir).map_err(|e| FsError::new("cannot create directory", dir, e))?;
    let meta = fs::metadata(dir).map_err(|e| FsError::new("cannot read", dir, e))?;
    if meta.permissions().mode() & 0o777 != 0o700 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| FsError::new("cannot set permissions on", dir, e))?;
    }
    Ok(())
}

/// `p` with `.` dropped and `..` applied to the part before it, without
/// asking the filesystem (the path may not exist yet).
pub fn normalize_lexically(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// True if the link at `link` whose text is `current` points to `target`
/// (absolute, normalized): a relative link counts from the link's directory.
pub fn link_points_to(link: &Path, current: &Path, target: &Path) -> bool {
    if current == target {
        return true;
    }
    let resolved = match link.parent() {
        Some(dir) if current.is_relative() => dir.join(current),
        _ => current.to_path_buf(),
    };
    normalize_lexically(&resolved) == target
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_content_and_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.json");
        atomic_write(&p, b"old", 0o600).unwrap();
        atomic_write(&p, b"new", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp file may remain");
    }

    #[test]
    fn observer_sees_old_content_before_rename() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        atomic_write(&p, b"old", 0o600).unwrap();
        let mut seen = Vec::new();
        atomic_write_observed(&p, b"new", 0o600, &mut |stage| {
            seen.push((stage, fs::read(&p).unwrap()));
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![
                (WriteStage::TempSynced, b"old".to_vec()),
                (WriteStage::Renamed, b"new".to_vec())
            ]
        );
    }

    #[test]
    fn failed_write_leaves_target_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        // The target is a non-empty directory: rename over it fails.
        let p = dir.path().join("target");
        fs::create_dir(&p).unwrap();
        fs::write(p.join("inside"), b"x").unwrap();
        assert!(atomic_write(&p, b"new", 0o600).is_err());
        assert!(p.join("inside").exists());
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("target")]);
    }

    #[test]
    fn orphan_temps_of_one_target_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        fs::write(dir.path().join(".state.json.tmp-1-abc"), b"x").unwrap();
        fs::write(dir.path().join(".other.tmp-1-abc"), b"x").unwrap();
        assert_eq!(remove_orphan_temps(&p), 1);
        assert!(dir.path().join(".other.tmp-1-abc").exists());
    }

    #[test]
    fn private_dir_is_0700() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("a/b");
        ensure_private_dir(&d).unwrap();
        assert_eq!(
            fs::metadata(&d).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }
}
