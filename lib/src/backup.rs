//! The per-run backup folder: copies of what a run replaces or removes.
//!
//! One run backs up into one timestamped folder, `<backups>/<stamp>/`, keeping
//! each original's full path below it. `<backups>` and every directory below
//! it are made mode 0700: a backup of a secret stays as private as the
//! secret.
//!
//! A copy is made at a temp name ([`fsutil::temp_path`]), fsync'd, and only
//! then renamed to its final name, so a backup that fails half-way (a full
//! disk) is removed, never left as a truncated file that looks complete; a
//! SIGKILL leaves a temp that recovery recognises and removes. A batch of
//! file writes ([`crate::batch`]) backs up what it replaces the same way but
//! all together: every backup made first (`stage`), then the batch's own
//! data barrier for them. There a regular file with no other name is kept
//! by a second name (a hard link) instead of a copy, which the batch's
//! rename then leaves its only one (`link_regular`); a link is made at
//! its final name at once (nothing is copied, so nothing can be torn), and
//! the data barrier makes that name durable too. A copy is made at a temp
//! name and renamed after the data barrier, and one more barrier makes
//! those names durable. Special files
//! (FIFO, socket, device) are never opened or copied: opening a FIFO blocks,
//! and reading a device is not a backup. A small note file
//! (`NAME.stead-note`) says what was there instead.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::fsutil::{self, FsError};

/// The suffix of the note recorded instead of a special file.
pub const NOTE_SUFFIX: &str = ".stead-note";

/// The folder one run backs up into: `<root>/<UTC stamp>`. Nothing is
/// created until the first backup.
pub fn run_folder(root: &Path) -> PathBuf {
    root.join(chrono::Utc::now().format("%Y%m%d_%H%M%S%.3f").to_string())
}

/// Copies what is at `path` into the run folder `run` (keeping its path
/// below it) and returns where the copy is.
///
/// The copy is complete and durable (files, the directories created for it,
/// and the rename into place fsync'd) before this returns, because the
/// caller removes or overwrites the original next: a crash must never leave
/// neither. On failure nothing that looks like a backup is left.
pub(crate) fn backup(path: &Path, run: &Path) -> Result<PathBuf, FsError> {
    let root = run.parent().unwrap_or(run);
    if root.starts_with(path) {
        return Err(FsError::new(
            "cannot back up",
            path,
            io::Error::other(format!(
                "it holds the backups dir {}; a copy of it would land inside itself",
                root.display()
            )),
        ));
    }
    let meta = fs::symlink_metadata(path).map_err(|e| FsError::new("cannot read", path, e))?;
    let rel = path.strip_prefix("/").unwrap_or(path);
    let wanted = run.join(rel);
    let dir = fsutil::normalize_lexically(wanted.parent().unwrap_or(run));
    let made = make_private_chain(root, &dir)?;
    let name = wanted
        .file_name()
        .map(OsString::from)
        .unwrap_or_else(|| OsString::from("root"));
    let special = is_special(&meta);
    let dest = free_name(&dir, &name, special);
    let result = if special {
        fsutil::atomic_write(&dest, note(path, &meta).as_bytes(), 0o600)
    } else {
        copy_into_place(path, &meta, &dest)
    };
    settle(result, (run, &dir, &made), dest)
}

/// After a copy into `dir`: on success its name made durable (with the
/// directories `made` for it), on failure the directories made for it
/// removed again (up to `run`).
fn settle(
    result: Result<(), FsError>,
    (run, dir, made): (&Path, &Path, &[PathBuf]),
    dest: PathBuf,
) -> Result<PathBuf, FsError> {
    match result {
        Ok(()) => {
            sync_new(dir, made)?;
            Ok(dest)
        }
        Err(e) => {
            remove_empty_chain(run, dir);
            Err(e)
        }
    }
}

/// A regular file's backup in its run folder, not yet durable: linked at
/// its final name, or copied to a temp name. A batch ([`crate::batch`])
/// makes many durable with its data barrier (a link's name with them), then
/// calls [`Pending::commit`], which names a copy, and one more barrier
/// makes the copies' names durable.
#[derive(Debug)]
pub(crate) struct Pending {
    /// The backup: at its final name when `named`, else at a temp name.
    at: PathBuf,
    /// `at` is its final name (a link).
    named: bool,
    /// Its name in `dir` (a copy's final name is the first free one of
    /// [`free_name`], chosen at the rename).
    name: OsString,
    /// The directory both are in.
    dir: PathBuf,
    /// The directories made for it, parents first.
    made: Vec<PathBuf>,
    /// The backup, held open for a per-file flush (`None`: the barrier is a
    /// `syncfs`, which needs no file open).
    file: Option<File>,
}

/// The folder of the run folder a batch's backup of one regular file
/// goes in ([`folder`]), made and private.
#[derive(Debug)]
pub(crate) struct Folder {
    dir: PathBuf,
    /// The directories made for it, parents first.
    made: Vec<PathBuf>,
}

/// The directories below the backups dir that a batch has made private
/// already: each is created and narrowed once per batch, not per copy.
pub(crate) type Chains = std::sync::Mutex<std::collections::HashSet<PathBuf>>;

/// The folder a batch's backup of the regular file at `path` (whose
/// `lstat` is `meta`) goes in, in the run folder `run`: made, private,
/// once per batch (`chains`). `None` for anything but a regular file (rare:
/// a link, a directory, a special file replaced by a file) and for what
/// holds the backups dir: the caller backs those up whole with [`backup`].
/// A batch makes its folders one after the other, not on threads: folders
/// made side by side in one directory wait for each other's lock on it
/// (the kernel's), and threads spun on that lock for a fifth of a 1% drift
/// repair's CPU (docs/performance.md, "A 1% drift repair, fifth pass").
/// On failure the directories made stay until [`remove_empty_chain`].
pub(crate) fn folder(
    path: &Path,
    meta: &fs::Metadata,
    run: &Path,
    chains: &Chains,
) -> Result<Option<Folder>, FsError> {
    let root = run.parent().unwrap_or(run);
    if !meta.is_file() || root.starts_with(path) {
        return Ok(None);
    }
    let dir = folder_for(path, run);
    let made = private_chain_once(root, &dir, chains)?;
    Ok(Some(Folder { dir, made }))
}

/// The rest of [`backup`] for a batch: the regular file at `path` (whose
/// `lstat` is `meta`) linked at its final name in `folder`
/// ([`link_regular`]) or else copied to a temp name there, not flushed.
/// `keep_open`: hold the backup open for [`Pending::sync`]. Call it only
/// once the batch's `started` record is durable: a link is a backup as
/// soon as it is made. On failure nothing that looks like a backup is
/// left.
pub(crate) fn stage(
    path: &Path,
    meta: &fs::Metadata,
    folder: &Folder,
    keep_open: bool,
) -> Result<Pending, FsError> {
    let Folder { dir, made } = folder;
    let name = path
        .file_name()
        .map(OsString::from)
        .unwrap_or_else(|| OsString::from("root"));
    if let Some((dest, file)) = link_regular(path, meta, dir, &name, keep_open) {
        return Ok(Pending {
            at: dest,
            named: true,
            name,
            dir: dir.clone(),
            made: made.clone(),
            file,
        });
    }
    let temp = fsutil::temp_path(dir, &name.to_string_lossy());
    match copy_regular(path, meta, &temp) {
        Ok(file) => Ok(Pending {
            at: temp,
            named: false,
            name,
            dir: dir.clone(),
            made: made.clone(),
            file: keep_open.then_some(file),
        }),
        Err(e) => {
            let _ = fs::remove_file(&temp);
            Err(e)
        }
    }
}

/// A batch's backup of the regular file at `from` (whose `lstat` is
/// `meta`) as a second name of the same file, at the first name in `dir`
/// [`free_name`] would give for `name` (found by the link itself, which
/// refuses a name taken, not by a `stat` of each first): the rename that
/// replaces `from` next leaves `to` the only name of what was there, so
/// nothing is copied, and the replaced file is not freed (on ext4 with
/// `discard`, freeing is most of a rename's cost). Only for a file with no
/// other name, so that no other name can change the backup once it is
/// the only one left; and only for the file `meta` describes (a swap since
/// is copied instead). Returns where the link is, and the file held open
/// for a per-file flush when `keep_open`; `None` when it was not linked
/// (another name, another filesystem, a link refused), leaving no link:
/// the caller copies instead.
fn link_regular(
    from: &Path,
    meta: &fs::Metadata,
    dir: &Path,
    name: &OsString,
    keep_open: bool,
) -> Option<(PathBuf, Option<File>)> {
    if meta.nlink() != 1 {
        return None;
    }
    let to = (0..)
        .map(|n| numbered_name(dir, name, n, false))
        .map(|to| (fs::hard_link(from, &to), to))
        .find(|(made, _)| !matches!(made, Err(e) if e.kind() == io::ErrorKind::AlreadyExists))
        .and_then(|(made, to)| made.ok().map(|()| to))?;
    let same_file = |now: &fs::Metadata| {
        now.is_file() && now.dev() == meta.dev() && now.ino() == meta.ino() && now.nlink() == 2
    };
    let linked = fs::symlink_metadata(&to)
        .ok()
        .filter(same_file)
        .and_then(|_| match keep_open {
            false => Some(None),
            true => OpenOptions::new()
                .read(true)
                .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
                .open(&to)
                .ok()
                .map(Some),
        });
    match linked {
        Some(file) => Some((to, file)),
        None => {
            let _ = fs::remove_file(&to);
            None
        }
    }
}

/// The directory of the run folder `run` that a backup of `path` goes in
/// (its path kept below the folder).
pub(crate) fn folder_for(path: &Path, run: &Path) -> PathBuf {
    let wanted = run.join(path.strip_prefix("/").unwrap_or(path));
    fsutil::normalize_lexically(wanted.parent().unwrap_or(run))
}

/// [`make_private_chain`] for a batch: below the deepest directory of
/// `dir`'s chain that this batch made private already, so that copies into
/// sibling folders each create and narrow only their own new levels.
fn private_chain_once(root: &Path, dir: &Path, chains: &Chains) -> Result<Vec<PathBuf>, FsError> {
    let known = chains.lock().ok().and_then(|known| {
        dir.ancestors()
            .take_while(|a| a.starts_with(root))
            .find(|a| known.contains(*a))
            .map(Path::to_path_buf)
    });
    let made = match &known {
        Some(from) if from == dir => return Ok(Vec::new()),
        Some(from) => narrow_chain(from, dir)?,
        None => make_private_chain(root, dir)?,
    };
    if let Ok(mut known_now) = chains.lock() {
        let from = known.as_deref().unwrap_or(root);
        for a in dir.ancestors().take_while(|a| a.starts_with(from)) {
            known_now.insert(a.to_path_buf());
        }
    }
    Ok(made)
}

impl Pending {
    /// Makes the backup's data durable (the per-file barrier).
    pub(crate) fn sync(&self) -> Result<(), FsError> {
        match &self.file {
            Some(file) => file.sync_all(),
            None => File::open(&self.at).and_then(|f| f.sync_all()),
        }
        .map_err(|e| FsError::new("cannot fsync", &self.at, e))
    }

    /// Whether the backup is at its final name already (a link), made
    /// durable by the barrier that covers its data.
    pub(crate) fn is_named(&self) -> bool {
        self.named
    }

    /// The backup at its final name: a copy renamed to it (durable only
    /// after a barrier over [`Pending::names`]; on failure the temp is
    /// removed), a link where it is.
    pub(crate) fn commit(self) -> Result<PathBuf, FsError> {
        drop(self.file);
        if self.named {
            return Ok(self.at);
        }
        let dest = free_name(&self.dir, &self.name, false);
        match fs::rename(&self.at, &dest) {
            Ok(()) => Ok(dest),
            Err(e) => {
                let _ = fs::remove_file(&self.at);
                Err(FsError::new("cannot rename into", &dest, e))
            }
        }
    }

    /// Removes the backup, a link or a temp (a barrier failed: the target
    /// is not replaced); its directories stay until [`remove_empty_chain`].
    pub(crate) fn discard(self) {
        drop(self.file);
        let _ = fs::remove_file(&self.at);
    }

    /// The directories whose entries must be flushed for the backup's name
    /// to survive a power loss: its own, and the parent of each directory
    /// made for it ([`sync_new`]).
    pub(crate) fn names(&self) -> impl Iterator<Item = &Path> {
        std::iter::once(self.dir.as_path()).chain(self.made.iter().filter_map(|d| d.parent()))
    }
}

/// Makes a backup's ciphertext from its plain bytes (or says why not).
pub(crate) type Encrypt<'a> = dyn Fn(&[u8]) -> Result<Vec<u8>, String> + 'a;

/// Backs up the regular file at `path` age-encrypted (`encrypt` makes the
/// ciphertext), as `NAME.age` in the run folder, for a file whose content
/// must never be stored in clear. Anything but a regular file is backed up
/// as [`backup`] does (a link's target or a note is not the content).
/// Durable before it returns, like [`backup`].
pub(crate) fn backup_encrypted(
    path: &Path,
    run: &Path,
    encrypt: &Encrypt<'_>,
) -> Result<PathBuf, FsError> {
    let meta = fs::symlink_metadata(path).map_err(|e| FsError::new("cannot read", path, e))?;
    if !meta.is_file() {
        return backup(path, run);
    }
    let root = run.parent().unwrap_or(run);
    let rel = path.strip_prefix("/").unwrap_or(path);
    let wanted = run.join(rel);
    let dir = fsutil::normalize_lexically(wanted.parent().unwrap_or(run));
    let made = make_private_chain(root, &dir)?;
    let mut name = wanted
        .file_name()
        .map(OsString::from)
        .unwrap_or_else(|| OsString::from("root"));
    name.push(".age");
    let dest = free_name(&dir, &name, false);
    let result = read_regular(path).and_then(|plain| {
        let plain = zeroize::Zeroizing::new(plain);
        let cipher = encrypt(&plain)
            .map_err(|why| FsError::new("cannot back up", path, io::Error::other(why)))?;
        fsutil::atomic_write(&dest, &cipher, 0o600)
    });
    settle(result, (run, &dir, &made), dest)
}

/// A regular file's bytes, opened without following a link or blocking.
fn read_regular(path: &Path) -> Result<Vec<u8>, FsError> {
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| FsError::new("cannot read", path, e))?;
    let mut out = Vec::new();
    io::Read::read_to_end(&mut file, &mut out).map_err(|e| FsError::new("cannot read", path, e))?;
    Ok(out)
}

/// [`backup`] of what is at `path`, when asked and when something is there.
pub(crate) fn backup_existing(
    path: &Path,
    wanted: bool,
    run: &Path,
) -> Result<Option<PathBuf>, FsError> {
    if wanted && fs::symlink_metadata(path).is_ok() {
        backup(path, run).map(Some)
    } else {
        Ok(None)
    }
}

fn is_special(meta: &fs::Metadata) -> bool {
    let t = meta.file_type();
    t.is_fifo() || t.is_socket() || t.is_block_device() || t.is_char_device()
}

fn special_kind(meta: &fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() {
        "a block device"
    } else {
        "a character device"
    }
}

/// What the note of a special file says: enough to recreate it by hand.
fn note(path: &Path, meta: &fs::Metadata) -> String {
    format!(
        "stead did not copy {}: it was {} (mode {:o}, owner uid {}, gid {}, device {:#x}).\n\
         Special files are never opened or copied; recreate it by hand if it is needed.\n",
        path.display(),
        special_kind(meta),
        meta.permissions().mode() & 0o7777,
        meta.uid(),
        meta.gid(),
        meta.rdev(),
    )
}

/// The first name in `dir` not yet taken: `NAME`, `NAME.1`, ... (a path
/// backed up twice in one run keeps both copies), with the note suffix for
/// a special file. Only this run writes in its folder, under the lock.
fn free_name(dir: &Path, name: &OsString, special: bool) -> PathBuf {
    (0..)
        .map(|n| numbered_name(dir, name, n, special))
        .find(|p| fs::symlink_metadata(p).is_err())
        .unwrap_or_else(|| numbered_name(dir, name, 0, special))
}

/// The `n`th of [`free_name`]'s candidates: `NAME`, `NAME.1`, ...
fn numbered_name(dir: &Path, name: &OsString, n: usize, special: bool) -> PathBuf {
    let mut s = name.clone();
    if n > 0 {
        s.push(format!(".{n}"));
    }
    if special {
        s.push(NOTE_SUFFIX);
    }
    dir.join(s)
}

/// Creates every directory from `root` down to `dir` with mode 0700, and
/// narrows any that exists to 0700. Returns the directories it created,
/// parents first.
fn make_private_chain(root: &Path, dir: &Path) -> Result<Vec<PathBuf>, FsError> {
    let mut made = Vec::new();
    if fs::symlink_metadata(root).is_err() {
        made.push(root.to_path_buf());
    }
    fsutil::ensure_private_dir(root)?;
    made.extend(narrow_chain(root, dir)?);
    Ok(made)
}

/// Below the private directory `from`, creates every directory down to
/// `dir` with mode 0700 and narrows any that exists to 0700. Returns the
/// directories it created, parents first.
fn narrow_chain(from: &Path, dir: &Path) -> Result<Vec<PathBuf>, FsError> {
    let mut made = Vec::new();
    let rel = dir.strip_prefix(from).unwrap_or(Path::new(""));
    let mut at = from.to_path_buf();
    for part in rel.components() {
        at.push(part);
        match fs::DirBuilder::new().mode(0o700).create(&at) {
            Ok(()) => made.push(at.clone()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let m =
                    fs::symlink_metadata(&at).map_err(|e| FsError::new("cannot read", &at, e))?;
                if !m.is_dir() {
                    return Err(FsError::new(
                        "cannot create directory",
                        &at,
                        io::Error::other("something else is in the way in the backups dir"),
                    ));
                }
            }
            Err(e) => return Err(FsError::new("cannot create directory", &at, e)),
        }
        // The umask may have narrowed the mode further; never wider.
        fs::set_permissions(&at, fs::Permissions::from_mode(0o700))
            .map_err(|e| FsError::new("cannot set permissions on", &at, e))?;
    }
    Ok(made)
}

/// Makes the copy's name in `dir` survive a power loss: fsyncs `dir` (the
/// new entry) and the parent of each directory `made` for it (their
/// entries). A directory that already existed needs nothing: everything
/// below the run folder was made by this run (the folder's name is new
/// each run), and each was made durable by the backup that made it; the
/// backups dir itself is fsync'd into its parent when it is made. Only
/// what changed is flushed: a backup into an existing folder costs one
/// directory fsync, not one per level up to the state dir.
fn sync_new(dir: &Path, made: &[PathBuf]) -> Result<(), FsError> {
    let mut synced: Vec<&Path> = vec![dir];
    fsutil::fsync_dir(dir)?;
    for parent in made.iter().filter_map(|d| d.parent()) {
        if !synced.contains(&parent) {
            fsutil::fsync_dir(parent)?;
            synced.push(parent);
        }
    }
    Ok(())
}

/// After a failed backup: removes the directories made for it that stayed
/// empty, from `dir` up to the run folder (best effort; `remove_dir` never
/// removes a directory that holds something).
pub(crate) fn remove_empty_chain(run: &Path, dir: &Path) {
    let mut at = Some(dir);
    while let Some(d) = at {
        if !d.starts_with(run) || fs::remove_dir(d).is_err() {
            break;
        }
        at = d.parent();
    }
}

/// Copies `path` to a temp name next to `dest`, fsyncs it and renames it to
/// `dest`; on failure removes the temp.
fn copy_into_place(path: &Path, meta: &fs::Metadata, dest: &Path) -> Result<(), FsError> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = fsutil::temp_path(dir, &name);
    let copied = copy_entry(path, meta, &tmp).and_then(|()| {
        fs::rename(&tmp, dest).map_err(|e| FsError::new("cannot rename into", dest, e))
    });
    if copied.is_err() {
        let _ = if meta.is_dir() {
            fs::remove_dir_all(&tmp)
        } else {
            fs::remove_file(&tmp)
        };
    }
    copied
}

/// Copies one entry (never following a link) to `to`, which must not exist.
fn copy_entry(from: &Path, meta: &fs::Metadata, to: &Path) -> Result<(), FsError> {
    if meta.is_dir() {
        copy_dir(from, to)
    } else if meta.file_type().is_symlink() {
        let target = fs::read_link(from).map_err(|e| FsError::new("cannot read", from, e))?;
        std::os::unix::fs::symlink(&target, to).map_err(|e| FsError::new("cannot create", to, e))
    } else if is_special(meta) {
        fsutil::atomic_write(&note_path(to), note(from, meta).as_bytes(), 0o600)
    } else {
        copy_file(from, meta, to)
    }
}

fn note_path(to: &Path) -> PathBuf {
    let mut s = to.as_os_str().to_os_string();
    s.push(NOTE_SUFFIX);
    PathBuf::from(s)
}

/// Copies a regular file's bytes and mode, and fsyncs the copy.
fn copy_file(from: &Path, meta: &fs::Metadata, to: &Path) -> Result<(), FsError> {
    copy_regular(from, meta, to)?
        .sync_all()
        .map_err(|e| FsError::new("cannot fsync", to, e))
}

/// Copies a regular file's bytes and mode into a new file at `to`, not
/// flushed, and returns it. The source is opened without following a link
/// and without blocking, and checked to still be a regular file: what was
/// planned may have been swapped.
fn copy_regular(from: &Path, meta: &fs::Metadata, to: &Path) -> Result<File, FsError> {
    let mut src = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(from)
        .map_err(|e| FsError::new("cannot read", from, e))?;
    let now = src
        .metadata()
        .map_err(|e| FsError::new("cannot read", from, e))?;
    if !now.is_file() {
        return Err(FsError::new(
            "cannot back up",
            from,
            io::Error::other("it is no longer a regular file"),
        ));
    }
    let mut dst = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(to)
        .map_err(|e| FsError::new("cannot create", to, e))?;
    io::copy(&mut src, &mut dst).map_err(|e| FsError::new("cannot back up", from, e))?;
    dst.set_permissions(fs::Permissions::from_mode(
        meta.permissions().mode() & 0o7777,
    ))
    .map_err(|e| FsError::new("cannot set permissions on", to, e))?;
    Ok(dst)
}

/// Copies a directory tree (links as links, special files as notes), every
/// directory made 0700 and fsync'd.
fn copy_dir(from: &Path, to: &Path) -> Result<(), FsError> {
    fs::DirBuilder::new()
        .mode(0o700)
        .create(to)
        .map_err(|e| FsError::new("cannot create", to, e))?;
    for entry in fs::read_dir(from).map_err(|e| FsError::new("cannot read", from, e))? {
        let entry = entry.map_err(|e| FsError::new("cannot read", from, e))?;
        let src = entry.path();
        let meta = fs::symlink_metadata(&src).map_err(|e| FsError::new("cannot read", &src, e))?;
        copy_entry(&src, &meta, &to.join(entry.file_name()))?;
    }
    File::open(to)
        .and_then(|d| d.sync_all())
        .map_err(|e| FsError::new("cannot fsync directory", to, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_chain_names_only_the_directories_it_made() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("backups");
        let run = root.join("20261203_000000.000");
        let leaf = run.join("home/a");
        let made = make_private_chain(&root, &leaf).unwrap();
        assert_eq!(
            made,
            [root.clone(), run.clone(), run.join("home"), leaf.clone()]
        );
        // A second copy into the same folder makes nothing new: only the
        // folder itself (its new entry) is flushed.
        assert!(make_private_chain(&root, &leaf).unwrap().is_empty());
        let other = run.join("home/b");
        assert_eq!(
            make_private_chain(&root, &other).unwrap(),
            std::slice::from_ref(&other)
        );
        for dir in [&root, &run, &leaf, &other] {
            assert_eq!(mode(dir), 0o700);
        }
        sync_new(&other, std::slice::from_ref(&other)).unwrap();
    }

    #[test]
    fn a_batch_makes_each_level_of_its_chains_once() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("backups");
        let run = root.join("20261206_000000.000");
        let chains = Chains::default();
        let a = run.join("home/a");
        assert_eq!(
            private_chain_once(&root, &a, &chains).unwrap(),
            [root.clone(), run.clone(), run.join("home"), a.clone()]
        );
        assert!(private_chain_once(&root, &a, &chains).unwrap().is_empty());
        // A sibling: only its own level is new, made private like the rest.
        let b = run.join("home/b/c");
        assert_eq!(
            private_chain_once(&root, &b, &chains).unwrap(),
            [run.join("home/b"), b.clone()]
        );
        for dir in [&root, &run, &a, &b] {
            assert_eq!(mode(dir), 0o700);
        }
    }

    #[test]
    fn a_path_backed_up_twice_in_one_run_keeps_both_copies_in_private_dirs() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("home/f");
        fs::create_dir_all(src.parent().unwrap()).unwrap();
        let run = run_folder(&d.path().join("backups"));
        fs::write(&src, "one").unwrap();
        let first = backup(&src, &run).unwrap();
        fs::write(&src, "two").unwrap();
        let second = backup(&src, &run).unwrap();
        assert_ne!(first, second);
        assert_eq!(fs::read_to_string(&first).unwrap(), "one");
        assert_eq!(fs::read_to_string(&second).unwrap(), "two");
        let mut dir = first.parent();
        while let Some(p) = dir.filter(|p| p.starts_with(d.path().join("backups"))) {
            assert_eq!(mode(p), 0o700, "{}", p.display());
            dir = p.parent();
        }
    }

    /// What `stage` keeps of the regular file at `path`, committed.
    fn staged(path: &Path, meta: &fs::Metadata, run: &Path, keep_open: bool) -> PathBuf {
        let folder = folder(path, meta, run, &Chains::default())
            .unwrap()
            .unwrap_or_else(|| panic!("{path:?} has no folder"));
        let p = stage(path, meta, &folder, keep_open).unwrap();
        p.sync().unwrap();
        p.commit().unwrap()
    }

    #[test]
    fn a_staged_file_is_linked_only_when_it_is_the_file_that_was_planned() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("home/f");
        fs::create_dir_all(src.parent().unwrap()).unwrap();
        let run = run_folder(&d.path().join("backups"));
        for keep_open in [false, true] {
            fs::write(&src, "planned").unwrap();
            let planned = fs::symlink_metadata(&src).unwrap();
            let linked = staged(&src, &planned, &run, keep_open);
            assert_eq!(fs::symlink_metadata(&linked).unwrap().ino(), planned.ino());
            // Swapped since the plan looked: the file there now is copied.
            fs::remove_file(&src).unwrap();
            fs::write(&src, "swapped in").unwrap();
            let copied = staged(&src, &planned, &run, keep_open);
            let meta = fs::symlink_metadata(&copied).unwrap();
            assert_ne!(meta.ino(), fs::symlink_metadata(&src).unwrap().ino());
            assert_eq!(fs::read_to_string(&copied).unwrap(), "swapped in");
            assert_eq!(fs::symlink_metadata(&src).unwrap().nlink(), 1);
            fs::remove_file(&src).unwrap();
        }
    }

    /// A link takes the first name not taken (by anything, a dangling link
    /// too), as a copy does, and leaves what took the others alone.
    #[test]
    fn a_staged_link_takes_the_first_free_name() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("home/f");
        fs::create_dir_all(src.parent().unwrap()).unwrap();
        fs::write(&src, "planned").unwrap();
        let run = run_folder(&d.path().join("backups"));
        let meta = fs::symlink_metadata(&src).unwrap();
        let folder = folder(&src, &meta, &run, &Chains::default())
            .unwrap()
            .unwrap();
        fs::write(folder.dir.join("f"), "earlier").unwrap();
        std::os::unix::fs::symlink("nowhere", folder.dir.join("f.1")).unwrap();
        let linked = staged(&src, &meta, &run, false);
        assert_eq!(linked, folder.dir.join("f.2"));
        assert_eq!(fs::symlink_metadata(&linked).unwrap().ino(), meta.ino());
        assert_eq!(fs::read_to_string(folder.dir.join("f")).unwrap(), "earlier");
        assert_eq!(
            fs::read_link(folder.dir.join("f.1")).unwrap(),
            Path::new("nowhere")
        );
    }

    /// A file on another filesystem than the backups cannot be linked
    /// there: it is copied. Needs a tmpfs at /dev/shm (a Linux default);
    /// fails, not skips, without one, so that the fallback stays tested.
    #[test]
    fn a_file_on_another_filesystem_is_copied() {
        let other = tempfile::tempdir_in("/dev/shm").unwrap();
        let d = tempfile::tempdir().unwrap();
        let src = other.path().join("f");
        fs::write(&src, "elsewhere").unwrap();
        let meta = fs::symlink_metadata(&src).unwrap();
        assert_ne!(
            meta.dev(),
            fs::symlink_metadata(d.path()).unwrap().dev(),
            "/dev/shm is not another filesystem here"
        );
        let run = run_folder(&d.path().join("backups"));
        let copy = staged(&src, &meta, &run, false);
        assert_eq!(fs::read_to_string(&copy).unwrap(), "elsewhere");
        assert_eq!(fs::symlink_metadata(&src).unwrap().nlink(), 1);
    }

    #[test]
    fn a_fifo_is_noted_never_opened_also_inside_a_dir() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("dir");
        fs::create_dir(&src).unwrap();
        fs::write(src.join("plain"), "x").unwrap();
        let fifo = src.join("pipe");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let run = run_folder(&d.path().join("backups"));
        let note = backup(&fifo, &run).unwrap();
        assert!(note.to_string_lossy().ends_with("pipe.stead-note"));
        assert!(fs::read_to_string(&note).unwrap().contains("FIFO"));
        let copy = backup(&src, &run).unwrap();
        assert_eq!(fs::read_to_string(copy.join("plain")).unwrap(), "x");
        assert!(copy.join("pipe.stead-note").is_file());
        assert!(fs::symlink_metadata(copy.join("pipe")).is_err());
        // No temp is left anywhere.
        let mut stack = vec![d.path().join("backups")];
        while let Some(dir) = stack.pop() {
            for e in fs::read_dir(&dir).unwrap().flatten() {
                assert!(!e.file_name().to_string_lossy().contains(".tmp-"));
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                }
            }
        }
    }
}
