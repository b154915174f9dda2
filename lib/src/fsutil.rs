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
    /// The error of `action` on `path`.
    pub fn new(action: &'static str, path: &Path, source: io::Error) -> Self {
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
    atomic_write_with(path, mode, observer, &mut |out| out.write_all(data))
}

/// Like [`atomic_write_observed`], with the content written by `write`
/// into the temp file (through a buffer) instead of given whole: a record
/// of 100 000 files is serialized straight to disk, not first into a
/// vector of 20 MB or more that doubles as it grows.
pub fn atomic_write_with(
    path: &Path,
    mode: u32,
    observer: &mut dyn FnMut(WriteStage),
    write: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
) -> Result<(), FsError> {
    let dir = parent_dir(path);
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".to_string());
    let (tmp_path, tmp) = create_temp(&dir, &file_name, mode)?;
    let result = (|| {
        let mut out = io::BufWriter::with_capacity(64 * 1024, tmp);
        write(&mut out)
            .and_then(|()| out.flush())
            .map_err(|e| FsError::new("cannot write", &tmp_path, e))?;
        let tmp = out
            .into_inner()
            .map_err(|e| FsError::new("cannot write", &tmp_path, e.into_error()))?;
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

/// The directory `path` is in (`.` for a bare name).
pub(crate) fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn create_temp(dir: &Path, file_name: &str, mode: u32) -> Result<(PathBuf, File), FsError> {
    let mut last_err = None;
    for _ in 0..16 {
        let tmp_path = temp_path(dir, file_name);
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

/// The marker between a temp name's PID and its random part: what makes a
/// name unmistakably stead's, so recovery never removes a user's file.
const TEMP_MARK: &str = "stead";

/// A fresh temp name for `file_name`: `.NAME.tmp-PID-stead-HEX32`. Every
/// temp file or link stead creates next to a target is named here (directly,
/// or through [`temp_path`]), so [`stale_temp_target`] recognises them all.
pub fn temp_name(file_name: &str) -> String {
    format!(
        ".{file_name}.tmp-{}-{TEMP_MARK}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Creates `path` (in the directory `dir`) holding `data`, mode 0600, only
/// if nothing is there: written whole to a stead temp name, then
/// hard-linked into place, so that two processes racing to make it agree on
/// one (the loser's link fails). `Ok(false)`: it existed; read it instead.
/// A temp this process leaves when killed is removed by the next run.
pub fn create_once(dir: &Path, path: &Path, data: &[u8]) -> Result<bool, FsError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".to_string());
    let tmp = temp_path(dir, &name);
    atomic_write(&tmp, data, 0o600)?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            fsync_dir(dir)?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(FsError::new("cannot create", path, e)),
    }
}

/// [`temp_name`] for `file_name`, in `dir`.
pub fn temp_path(dir: &Path, file_name: &str) -> PathBuf {
    dir.join(temp_name(file_name))
}

/// If `name` is a temp name stead made (this scheme, or the older
/// `.NAME.tmp-PID-HEX32` one) whose writer is no longer running, the name
/// of the file it was written for. A temp of a live PID is some running
/// writer's (or, after PID reuse, kept until that PID is gone): never stale.
pub fn stale_temp_target(name: &str) -> Option<&str> {
    let rest = name.strip_prefix('.')?;
    let at = rest.rfind(".tmp-")?;
    let (target, tail) = (&rest[..at], &rest[at + ".tmp-".len()..]);
    let (pid, random) = tail.split_once('-')?;
    let pid: i32 = pid.parse().ok().filter(|p| *p > 0)?;
    let hex = |s: &str| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit());
    let ours = match random
        .strip_prefix(TEMP_MARK)
        .and_then(|r| r.strip_prefix('-'))
    {
        Some(r) => hex(r),
        // The older scheme: written by an earlier version, never by this run.
        None => return (hex(random) && !target.is_empty()).then_some(target),
    };
    (ours && !target.is_empty() && !pid_alive(pid)).then_some(target)
}

/// True if a process with this PID exists (signal 0 probes without sending).
/// EPERM means it exists but belongs to another user.
fn pid_alive(pid: i32) -> bool {
    use nix::errno::Errno;
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(Errno::ESRCH) => false,
        Err(_) => true,
    }
}

/// Removes the stale temps (see [`stale_temp_target`]) directly in `dir`
/// that were written for a file named in `only_for`, or for any file when
/// `only_for` is `None`. Returns what it removed. Never follows a link:
/// a temp is removed as the entry it is (a file, a link, or a temp
/// directory of a backup). Call only under the state lock.
pub fn remove_stale_temps(dir: &Path, only_for: Option<&[&str]>) -> Vec<PathBuf> {
    sweep_dir(dir, only_for, None)
}

/// One pass over `dir`'s entries: removes the stale temps (as
/// [`remove_stale_temps`]) and, when `subdirs` is given, collects the other
/// directories in it (not links, not `.git`).
fn sweep_dir(
    dir: &Path,
    only_for: Option<&[&str]>,
    mut subdirs: Option<&mut Vec<PathBuf>>,
) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let is_dir = || entry.file_type().is_ok_and(|t| t.is_dir());
        let Some(target) = name.to_str().and_then(stale_temp_target) else {
            if let Some(subdirs) = subdirs.as_deref_mut()
                && name != ".git"
                && is_dir()
            {
                subdirs.push(entry.path());
            }
            continue;
        };
        if only_for.is_some_and(|names| !names.contains(&target)) {
            continue;
        }
        let path = entry.path();
        let gone = if is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        if gone.is_ok() {
            removed.push(path);
        }
    }
    if !removed.is_empty() {
        let _ = fsync_dir(dir);
    }
    removed
}

/// [`remove_stale_temps`] in `root` and every directory below it (not
/// following links, skipping `.git`): for trees only stead writes in, the
/// backups, or where a killed `stead commit` may have left one (the config
/// repo).
pub fn remove_stale_temps_below(root: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        removed.extend(sweep_dir(&dir, None, Some(&mut stack)));
    }
    removed
}

/// Removes temp files that an interrupted [`atomic_write`] of `target` left
/// behind. Call only while no other writer of `target` can be running (the
/// state store calls it under the state lock). Returns how many it removed.
pub fn remove_orphan_temps(target: &Path) -> usize {
    let Some(name) = target.file_name().and_then(|n| n.to_str()) else {
        return 0;
    };
    remove_stale_temps(&parent_dir(target), Some(&[name])).len()
}

/// fsyncs a directory so that renames and unlinks in it are durable.
pub fn fsync_dir(dir: &Path) -> Result<(), FsError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| FsError::new("cannot fsync directory", dir, e))
}

/// Removes the file at `path`; nothing there is fine.
pub fn remove_if_present(path: &Path) -> Result<(), FsError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(FsError::new("cannot remove", path, e)),
    }
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

    /// A PID no process has: past the kernel's limit.
    const DEAD_PID: u32 = 99_999_999;
    const HEX: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn orphan_temps_of_one_target_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        let stale = format!(".state.json.tmp-{DEAD_PID}-stead-{HEX}");
        fs::write(dir.path().join(&stale), b"x").unwrap();
        let other = format!(".other.tmp-{DEAD_PID}-stead-{HEX}");
        fs::write(dir.path().join(&other), b"x").unwrap();
        assert_eq!(remove_orphan_temps(&p), 1);
        assert!(!dir.path().join(stale).exists());
        assert!(dir.path().join(other).exists());
    }

    #[test]
    fn temp_names_are_recognised_only_when_stead_made_them_and_the_writer_is_gone() {
        let me = std::process::id();
        let fresh = temp_path(Path::new("/d"), "f.txt");
        let fresh = fresh.file_name().unwrap().to_str().unwrap();
        assert!(
            fresh.starts_with(&format!(".f.txt.tmp-{me}-stead-")),
            "{fresh}"
        );
        // The writer (this process) is alive: not stale.
        assert_eq!(stale_temp_target(fresh), None);
        let dead = format!(".f.txt.tmp-{DEAD_PID}-stead-{HEX}");
        assert_eq!(stale_temp_target(&dead), Some("f.txt"));
        // The older scheme (no marker) is an earlier version's: stale.
        assert_eq!(stale_temp_target(&format!(".a.tmp-{me}-{HEX}")), Some("a"));
        for not_ours in [
            "f.txt".to_string(),
            ".f.txt.tmp-12-notes".to_string(),
            format!(".f.tmp-{DEAD_PID}-stead-xyz"),
            format!(".state.lock.tmp-{HEX}"),
            format!(".tmp-{DEAD_PID}-stead-{HEX}"),
        ] {
            assert_eq!(stale_temp_target(&not_ours), None, "{not_ours}");
        }
    }

    #[test]
    fn stale_temps_below_a_tree_are_removed_but_not_in_git() {
        let dir = tempfile::tempdir().unwrap();
        let name = format!(".f.tmp-{DEAD_PID}-stead-{HEX}");
        fs::create_dir_all(dir.path().join("a/b")).unwrap();
        fs::create_dir_all(dir.path().join(".git")).unwrap();
        fs::write(dir.path().join("a/b").join(&name), b"x").unwrap();
        fs::create_dir(dir.path().join("a").join(&name)).unwrap();
        fs::write(dir.path().join(".git").join(&name), b"x").unwrap();
        let live = temp_path(dir.path(), "f");
        fs::write(&live, b"x").unwrap();
        let removed = remove_stale_temps_below(dir.path());
        assert_eq!(removed.len(), 2, "{removed:?}");
        assert!(dir.path().join(".git").join(&name).exists());
        assert!(live.exists());
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
