//! Acting on exactly the path that was planned: open a target's directory
//! component by component with no-follow opens, then create, chmod, rename
//! and remove relative to that directory's fd, re-checking each target's type
//! (`fstatat` with `AT_SYMLINK_NOFOLLOW`) right before acting on it.
//!
//! Apply follows no symlink at all. The links a user made on purpose
//! (`~/.config -> ~/dotfiles/config`) are followed once, when the manifest
//! loads ([`resolve`]), so a plan holds real paths; a link that appears in a
//! path after that (a planned directory swapped for a link to somewhere else)
//! makes apply refuse instead of writing, chmodding or purging through it.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat, renameat};
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstat, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use crate::fsutil::{self, FsError};

/// What is at a path, as far as stead cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryType {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (never followed).
    Symlink,
    /// A FIFO, socket or device.
    Special,
}

impl EntryType {
    /// `a regular file`, `a directory`, ...
    pub fn describe(self) -> &'static str {
        match self {
            EntryType::File => "a regular file",
            EntryType::Dir => "a directory",
            EntryType::Symlink => "a symlink",
            EntryType::Special => "a special file",
        }
    }

    fn of(st: &FileStat) -> EntryType {
        match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
            SFlag::S_IFREG => EntryType::File,
            SFlag::S_IFDIR => EntryType::Dir,
            SFlag::S_IFLNK => EntryType::Symlink,
            _ => EntryType::Special,
        }
    }
}

/// Why stead refused to act on a path, or could not.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// An operation failed.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// Something that is not a directory (a link, most often) is where the
    /// path needs a directory.
    #[error(
        "{} is {} now, where the plan has a directory in the path; stead follows no link it did not plan to follow, so nothing was changed there.\n\
         Run 'stead plan' again and review the new plan.",
        path.display(), found.describe()
    )]
    NotADirectory {
        /// The component.
        path: PathBuf,
        /// What is there.
        found: EntryType,
    },
    /// The target itself is not what the plan saw.
    #[error(
        "{} is {} now, where the plan expected {}; nothing was changed there.\n\
         Run 'stead plan' again and review the new plan.",
        path.display(), found.describe(), expected
    )]
    Changed {
        /// The target.
        path: PathBuf,
        /// What the plan expected.
        expected: &'static str,
        /// What is there.
        found: EntryType,
    },
    /// Resolving a link the user made was refused (see [`resolve`]).
    #[error("{}: {why}", path.display())]
    Unsafe {
        /// The link.
        path: PathBuf,
        /// Why it is not followed.
        why: String,
    },
}

fn errno_io(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// A directory opened without following any link on the way to it.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// Opens the absolute directory `path`, component by component from `/`,
/// following no symlink. With `create`, missing directories are made (mode
/// 0755 less the umask); else a missing one is `Ok(None)`.
pub fn open_dir(path: &Path, create: bool) -> Result<Option<Dir>, PathError> {
    let root = openat(nix::fcntl::AT_FDCWD, "/", DIR_FLAGS, Mode::empty())
        .map_err(|e| FsError::new("cannot open", Path::new("/"), errno_io(e)))?;
    let mut dir = Dir {
        fd: root,
        path: PathBuf::from("/"),
    };
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(name) => match dir.open_below(name, create)? {
                Some(d) => dir = d,
                None => return Ok(None),
            },
            Component::ParentDir | Component::Prefix(_) => {
                return Err(FsError::new(
                    "cannot open",
                    path,
                    io::Error::other("the path is not absolute and normalized"),
                )
                .into());
            }
        }
    }
    Ok(Some(dir))
}

/// The directory holding `path` (see [`open_dir`]) and the last component.
pub fn open_parent(path: &Path, create: bool) -> Result<Option<(Dir, OsString)>, PathError> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(FsError::new(
            "cannot act on",
            path,
            io::Error::other("it has no parent directory"),
        )
        .into());
    };
    Ok(open_dir(parent, create)?.map(|d| (d, name.to_os_string())))
}

/// [`open_parent`], where a missing directory is an error.
pub fn open_parent_required(path: &Path, create: bool) -> Result<(Dir, OsString), PathError> {
    open_parent(path, create)?.ok_or_else(|| {
        FsError::new(
            "cannot open the directory of",
            path,
            io::Error::new(io::ErrorKind::NotFound, "it does not exist"),
        )
        .into()
    })
}

impl Dir {
    /// The path this directory was opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn child(&self, name: &OsStr) -> PathBuf {
        self.path.join(name)
    }

    /// What is at `name` (no link followed), with its stat; `None` when nothing.
    pub fn stat(&self, name: &OsStr) -> Result<Option<(EntryType, FileStat)>, PathError> {
        match fstatat(
            self.fd.as_fd(),
            name,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(st) => Ok(Some((EntryType::of(&st), st))),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(FsError::new("cannot read", &self.child(name), errno_io(e)).into()),
        }
    }

    /// The directory `name` inside this one, opened without following a link;
    /// `None` when nothing is there.
    pub fn subdir(&self, name: &OsStr) -> Result<Option<Dir>, PathError> {
        match openat(self.fd.as_fd(), name, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => Ok(Some(Dir {
                fd,
                path: self.child(name),
            })),
            Err(Errno::ENOENT) => Ok(None),
            Err(Errno::ELOOP | Errno::ENOTDIR) => Err(PathError::NotADirectory {
                path: self.child(name),
                found: self.stat(name)?.map_or(EntryType::Special, |(t, _)| t),
            }),
            Err(e) => Err(FsError::new("cannot open", &self.child(name), errno_io(e)).into()),
        }
    }

    /// The directory `name` inside this one, as [`open_dir`] opens each
    /// level: never through a link, made (mode 0755 less the umask) when
    /// missing and `create`, else `None`.
    pub fn open_below(&self, name: &OsStr, create: bool) -> Result<Option<Dir>, PathError> {
        // Opened first: most directories exist, and a `mkdirat` that finds
        // one is a wasted call.
        match self.subdir(name)? {
            None if create => Ok(Some(self.mkdir(name, None)?.0)),
            next => Ok(next),
        }
    }

    /// Creates the directory `name` unless it exists, opens it (never through
    /// a link) and sets `mode` when given; a new entry is durable (this
    /// directory is synced). True when it was created.
    pub fn mkdir(&self, name: &OsStr, mode: Option<u32>) -> Result<(Dir, bool), PathError> {
        let (dir, created) = self.mkdir_unsynced(name, mode)?;
        if created {
            self.sync()?;
        }
        Ok((dir, created))
    }

    /// [`Dir::mkdir`] without the sync: when it was created, the new entry
    /// is durable only once the caller has synced this directory (one sync
    /// for many entries).
    pub fn mkdir_unsynced(
        &self,
        name: &OsStr,
        mode: Option<u32>,
    ) -> Result<(Dir, bool), PathError> {
        let created = match mkdirat(self.fd.as_fd(), name, Mode::from_bits_truncate(0o755)) {
            Ok(()) => true,
            Err(Errno::EEXIST) => false,
            Err(e) => {
                return Err(FsError::new(
                    "cannot create directory",
                    &self.child(name),
                    errno_io(e),
                )
                .into());
            }
        };
        let Some(dir) = self.subdir(name)? else {
            return Err(FsError::new(
                "cannot create directory",
                &self.child(name),
                io::Error::other("it disappeared right after it was made"),
            )
            .into());
        };
        if let Some(m) = mode {
            dir.chmod_self(m)?;
        }
        Ok((dir, created))
    }

    /// Sets this directory's own mode (on its fd: no path is looked up).
    pub fn chmod_self(&self, mode: u32) -> Result<(), PathError> {
        fchmod(self.fd.as_fd(), Mode::from_bits_truncate(mode))
            .map_err(|e| FsError::new("cannot set permissions on", &self.path, errno_io(e)).into())
    }

    /// Sets the mode of the regular file `name`, refusing anything else.
    pub fn chmod_file(&self, name: &OsStr, mode: u32) -> Result<(), PathError> {
        let file = self.open_regular(name, "a regular file")?;
        fchmod(file.as_fd(), Mode::from_bits_truncate(mode)).map_err(|e| {
            FsError::new("cannot set permissions on", &self.child(name), errno_io(e)).into()
        })
    }

    /// Opens `name` for reading only if it is a regular file: never through
    /// a link, never blocking on a FIFO.
    fn open_regular(&self, name: &OsStr, expected: &'static str) -> Result<File, PathError> {
        self.open_regular_stat(name, expected).map(|(file, _)| file)
    }

    /// [`Dir::open_regular`], with the `fstat` it checked the type by.
    fn open_regular_stat(
        &self,
        name: &OsStr,
        expected: &'static str,
    ) -> Result<(File, FileStat), PathError> {
        let flags = OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_NOCTTY
            | OFlag::O_CLOEXEC;
        let path = self.child(name);
        let fd = match openat(self.fd.as_fd(), name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ELOOP) => {
                return Err(PathError::Changed {
                    path,
                    expected,
                    found: EntryType::Symlink,
                });
            }
            Err(e) => return Err(FsError::new("cannot open", &path, errno_io(e)).into()),
        };
        let st = fstat(fd.as_fd()).map_err(|e| FsError::new("cannot read", &path, errno_io(e)))?;
        match EntryType::of(&st) {
            EntryType::File => Ok((File::from(fd), st)),
            found => Err(PathError::Changed {
                path,
                expected,
                found,
            }),
        }
    }

    /// The content and mode of the regular file `name`; `None` when nothing
    /// is there; refused when something else is.
    ///
    /// One `openat`, the `fstat` that checks the type (and gives the mode and
    /// the size to read), then reads to end of file: no `fstatat` before
    /// (a missing file is the open's `ENOENT`) and no second `fstat`.
    pub fn read_regular(&self, name: &OsStr) -> Result<Option<(Vec<u8>, u32)>, PathError> {
        let (mut file, st) = match self.open_regular_stat(name, "a regular file") {
            Ok(opened) => opened,
            Err(PathError::Fs(e)) if e.source.kind() == io::ErrorKind::NotFound => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let mode = st.st_mode & 0o7777;
        let size = usize::try_from(st.st_size).unwrap_or(0);
        let bytes = read_all(&mut file, size)
            .map_err(|e| FsError::new("cannot read", &self.child(name), e))?;
        Ok(Some((bytes, mode)))
    }

    /// Writes `name` atomically and durably: a temp file named as
    /// [`fsutil::temp_name`] names it (so recovery knows it), created
    /// `O_EXCL` with `mode`, fsync'd, renamed over `name`, directory fsync'd.
    /// A link at `name` is replaced, never followed.
    pub fn write_atomic(&self, name: &OsStr, data: &[u8], mode: u32) -> Result<(), PathError> {
        let temp = self.write_temp(name, data, mode)?;
        if let Err(e) = temp.sync() {
            self.discard_temp(temp);
            return Err(e);
        }
        self.commit_temp(temp)?;
        self.sync()
    }

    /// The first half of an atomic write, for a caller that makes many
    /// writes durable with one barrier ([`crate::batch`]): a temp file next
    /// to `name`, created `O_EXCL` with its final mode and holding all of
    /// `data`, not yet fsync'd. On error nothing is left behind.
    pub fn write_temp(&self, name: &OsStr, data: &[u8], mode: u32) -> Result<Temp, PathError> {
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let (tmp, fd) = self.with_temp_name(name, |tmp| {
            openat(self.fd.as_fd(), tmp, flags, Mode::from_bits_truncate(mode))
        })?;
        let tmp_path = self.child(&tmp);
        let mut file = File::from(fd);
        let result = (|| {
            file.write_all(data)
                .map_err(|e| FsError::new("cannot write", &tmp_path, e))?;
            // The umask may have narrowed the creation mode; set it exactly.
            fchmod(file.as_fd(), Mode::from_bits_truncate(mode))
                .map_err(|e| FsError::new("cannot set permissions on", &tmp_path, errno_io(e)))
        })();
        let temp = Temp {
            tmp,
            name: name.to_os_string(),
            path: tmp_path,
            file: Some(file),
        };
        match result {
            Ok(()) => Ok(temp),
            Err(e) => {
                self.discard_temp(temp);
                Err(e.into())
            }
        }
    }

    /// Renames a [`Temp`] made in this directory over its target (a link
    /// there is replaced, never followed). The rename is durable only once
    /// this directory is fsync'd (or the filesystem synced). On error the
    /// temp is removed.
    pub fn commit_temp(&self, temp: Temp) -> Result<(), PathError> {
        let result = self.rename_over(&temp.tmp, &temp.name);
        if result.is_err() {
            self.discard_temp(temp);
        }
        result
    }

    /// Removes a [`Temp`] that will not be committed.
    pub fn discard_temp(&self, temp: Temp) {
        let _ = unlinkat(
            self.fd.as_fd(),
            temp.tmp.as_os_str(),
            UnlinkatFlags::NoRemoveDir,
        );
    }

    /// Flushes the whole filesystem holding this directory (`syncfs`): every
    /// write, rename and directory entry made on it so far is durable after.
    pub fn sync_filesystem(&self) -> Result<(), PathError> {
        nix::unistd::syncfs(self.fd.as_fd()).map_err(|e| {
            FsError::new("cannot sync the filesystem of", &self.path, errno_io(e)).into()
        })
    }

    /// The device this directory is on (which filesystem a sync covers).
    pub fn device(&self) -> Result<u64, PathError> {
        fstat(self.fd.as_fd())
            .map(|st| st.st_dev)
            .map_err(|e| FsError::new("cannot read", &self.path, errno_io(e)).into())
    }

    /// Makes `name` a symlink to `target` atomically (a temp link renamed
    /// over whatever is there, unless it is a directory).
    pub fn symlink_atomic(&self, name: &OsStr, target: &Path) -> Result<(), PathError> {
        let (tmp, ()) = self.with_temp_name(name, |tmp| {
            nix::unistd::symlinkat(target, self.fd.as_fd(), tmp)
        })?;
        if let Err(e) = self.rename_over(&tmp, name) {
            let _ = unlinkat(self.fd.as_fd(), tmp.as_os_str(), UnlinkatFlags::NoRemoveDir);
            return Err(e);
        }
        self.sync()
    }

    fn with_temp_name<T>(
        &self,
        name: &OsStr,
        mut make: impl FnMut(&OsStr) -> nix::Result<T>,
    ) -> Result<(OsString, T), PathError> {
        let mut last = Errno::EEXIST;
        for _ in 0..16 {
            let tmp = OsString::from(fsutil::temp_name(&name.to_string_lossy()));
            match make(&tmp) {
                Ok(t) => return Ok((tmp, t)),
                Err(Errno::EEXIST) => last = Errno::EEXIST,
                Err(e) => {
                    last = e;
                    break;
                }
            }
        }
        Err(FsError::new("cannot create a temp file in", &self.path, errno_io(last)).into())
    }

    fn rename_over(&self, tmp: &OsStr, name: &OsStr) -> Result<(), PathError> {
        renameat(self.fd.as_fd(), tmp, self.fd.as_fd(), name)
            .map_err(|e| FsError::new("cannot rename into", &self.child(name), errno_io(e)).into())
    }

    /// Removes `name` if it is a file, link or special file (never a
    /// directory). True when something was removed.
    pub fn remove_file(&self, name: &OsStr) -> Result<bool, PathError> {
        match self.stat(name)? {
            None => Ok(false),
            Some((EntryType::Dir, _)) => Err(PathError::Changed {
                path: self.child(name),
                expected: "a file",
                found: EntryType::Dir,
            }),
            Some(_) => self.unlink(name, UnlinkatFlags::NoRemoveDir),
        }
    }

    fn unlink(&self, name: &OsStr, flags: UnlinkatFlags) -> Result<bool, PathError> {
        match unlinkat(self.fd.as_fd(), name, flags) {
            Ok(()) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(FsError::new("cannot remove", &self.child(name), errno_io(e)).into()),
        }
    }

    /// Removes the empty directory `name`. `Ok(false)` when it is gone or not
    /// empty (`not_empty` tells which); a link or file there is never removed.
    pub fn remove_empty_dir(&self, name: &OsStr) -> Result<RemovedDir, PathError> {
        match unlinkat(self.fd.as_fd(), name, UnlinkatFlags::RemoveDir) {
            Ok(()) => Ok(RemovedDir::Removed),
            Err(Errno::ENOENT) => Ok(RemovedDir::Gone),
            Err(Errno::ENOTEMPTY | Errno::EEXIST) => Ok(RemovedDir::NotEmpty),
            Err(Errno::ENOTDIR) => Ok(RemovedDir::NotADirectory),
            Err(e) => Err(FsError::new("cannot remove", &self.child(name), errno_io(e)).into()),
        }
    }

    /// Removes `name` and, for a directory, everything in it, each directory
    /// opened without following a link: a link inside is removed, never
    /// followed.
    pub fn remove_all(&self, name: &OsStr) -> Result<(), PathError> {
        match self.stat(name)? {
            None => Ok(()),
            Some((EntryType::Dir, _)) => {
                let Some(sub) = self.subdir(name)? else {
                    return Ok(());
                };
                for entry in sub.names()? {
                    sub.remove_all(&entry)?;
                }
                self.unlink(name, UnlinkatFlags::RemoveDir).map(drop)
            }
            Some(_) => self.unlink(name, UnlinkatFlags::NoRemoveDir).map(drop),
        }
    }

    /// The names in this directory (without `.` and `..`).
    pub fn names(&self) -> Result<Vec<OsString>, PathError> {
        let err = |e: Errno| FsError::new("cannot read", &self.path, errno_io(e));
        let fd = self
            .fd
            .try_clone()
            .map_err(|e| FsError::new("cannot read", &self.path, e))?;
        let mut dir = nix::dir::Dir::from_fd(fd).map_err(err)?;
        let mut out = Vec::new();
        for entry in dir.iter() {
            let entry = entry.map_err(err)?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                out.push(OsStr::from_bytes(name).to_os_string());
            }
        }
        Ok(out)
    }

    /// fsyncs this directory (renames and unlinks in it become durable).
    pub fn sync(&self) -> Result<(), PathError> {
        nix::unistd::fsync(self.fd.as_fd())
            .map_err(|e| FsError::new("cannot fsync directory", &self.path, errno_io(e)).into())
    }
}

/// A temp file written next to its target by [`Dir::write_temp`], waiting
/// for [`Dir::commit_temp`] or [`Dir::discard_temp`]. Its name is a
/// [`fsutil::temp_name`], so a crash leaves only what recovery removes.
#[derive(Debug)]
pub struct Temp {
    tmp: OsString,
    name: OsString,
    path: PathBuf,
    /// Open until [`Temp::close`]: a batch too large to keep every temp
    /// open syncs the filesystem instead of each file.
    file: Option<File>,
}

impl Temp {
    /// Where it is (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// fsyncs its content (the barrier of a single write).
    pub fn sync(&self) -> Result<(), PathError> {
        let file = self.file.as_ref().ok_or_else(|| {
            FsError::new(
                "cannot fsync",
                &self.path,
                io::Error::other("it was closed before its barrier"),
            )
        })?;
        file.sync_all()
            .map_err(|e| FsError::new("cannot fsync", &self.path, e).into())
    }

    /// Closes the file; its content stays, to be flushed by a `syncfs`.
    pub fn close(&mut self) {
        self.file = None;
    }
}

/// What [`Dir::remove_empty_dir`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemovedDir {
    /// It was removed.
    Removed,
    /// Nothing was there.
    Gone,
    /// Something is still in it; left in place.
    NotEmpty,
    /// Something that is not a directory is there; left alone.
    NotADirectory,
}

/// Everything left in `file`, `size` (from a stat just taken) the expected
/// length: only `read` calls, the buffer one byte larger than `size` so the
/// read that finds the end needs no growth. `File::read_to_end` would make
/// an `fstat` and an `lseek` first to guess the size, two syscalls per
/// file for what the caller knows.
pub fn read_all(file: &mut File, size: usize) -> io::Result<Vec<u8>> {
    let mut bytes = vec![0u8; size.saturating_add(1)];
    let mut len = 0;
    loop {
        if len == bytes.len() {
            // Grew since the stat: keep reading.
            bytes.resize(len.saturating_mul(2).max(4096), 0);
        }
        match file.read(&mut bytes[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    bytes.truncate(len);
    Ok(bytes)
}

/// Links followed while resolving one path, at most (as the kernel's `ELOOP`).
const MAX_LINKS: usize = 40;

/// `path` with every symlink among its existing ancestors resolved (the file
/// name itself is kept: a link there is the target, not a way to it). The
/// part that does not exist yet is kept as written.
///
/// When running as root, a link owned by someone other than root and the
/// owner of the directory holding it is refused, as the kernel's
/// `protected_symlinks` rule refuses it in a shared directory: another user
/// must not be able to send root's writes elsewhere.
pub fn resolve(path: &Path) -> Result<PathBuf, PathError> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(path.to_path_buf());
    };
    Ok(resolve_dir(parent)?.join(name))
}

/// [`resolve`] and [`resolve_dir`] over many paths, remembering each
/// directory resolved, and each of its ancestors: the paths of one manifest
/// share few directories, and those directories share their ancestors.
/// Walked whole, a directory costs an `lstat` per component (at 10 000
/// files in 100 directories, 70 000 `lstat`s); remembered, one per
/// directory and ancestor (about 100). Meant for one pass (a load, a plan):
/// a link changed meanwhile is not seen, as it would not be either had the
/// pass run a moment earlier. Failures are not remembered.
#[derive(Debug, Default)]
pub struct Resolver {
    dirs: std::collections::HashMap<PathBuf, PathBuf>,
    followed: Vec<PathBuf>,
}

impl Resolver {
    /// A resolver that remembers nothing yet.
    pub fn new() -> Resolver {
        Resolver::default()
    }

    /// [`resolve`], its parent directory resolved at most once.
    pub fn resolve(&mut self, path: &Path) -> Result<PathBuf, PathError> {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Ok(path.to_path_buf());
        };
        Ok(self.resolve_dir(parent)?.join(name))
    }

    /// [`resolve_dir`], at most once per directory: an absolute `dir` is
    /// its parent resolved (remembered), then its own name looked at.
    pub fn resolve_dir(&mut self, dir: &Path) -> Result<PathBuf, PathError> {
        if let Some(real) = self.dirs.get(dir) {
            return Ok(real.clone());
        }
        let real = match (dir.parent(), plain_name(dir)) {
            (Some(parent), Some(name)) if dir.is_absolute() => {
                let real_parent = self.resolve_dir(parent)?;
                self.resolve_name(real_parent, name)?
            }
            // `/`, a relative path, or one that ends in `..`: walked whole.
            _ => resolve_dir_noting(dir, &mut self.followed)?,
        };
        self.dirs.insert(dir.to_path_buf(), real.clone());
        Ok(real)
    }

    /// `name` in the resolved directory `real_parent`, resolved: itself
    /// unless it is a link, which [`resolve_dir_noting`] follows with its
    /// checks (the walk from `/` to it finds no other link).
    fn resolve_name(&mut self, real_parent: PathBuf, name: &OsStr) -> Result<PathBuf, PathError> {
        let next = real_parent.join(name);
        match std::fs::symlink_metadata(&next) {
            Ok(meta) if !meta.file_type().is_symlink() => Ok(next),
            // Missing: kept as written, as the walk keeps it.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(next),
            Ok(_) => resolve_dir_noting(&next, &mut self.followed),
            Err(e) => Err(FsError::new("cannot read", &next, e).into()),
        }
    }

    /// The symlinks the resolutions so far followed, as the paths of the
    /// links themselves: each once, when reached through remembered
    /// directories; a path with `..` in it, walked whole, notes the links
    /// on its way again.
    pub fn into_followed(self) -> Vec<PathBuf> {
        self.followed
    }
}

/// `dir` with every symlink in it resolved, as far as it exists.
pub fn resolve_dir(dir: &Path) -> Result<PathBuf, PathError> {
    resolve_dir_noting(dir, &mut Vec::new())
}

/// [`resolve_dir`], adding the path of every symlink it follows to
/// `followed`.
pub fn resolve_dir_noting(dir: &Path, followed: &mut Vec<PathBuf>) -> Result<PathBuf, PathError> {
    let root = nix::unistd::geteuid().is_root();
    let mut pending: Vec<OsString> = components_reversed(dir);
    let mut out = PathBuf::from("/");
    let mut links = 0;
    while let Some(c) = pending.pop() {
        if c == ".." {
            out.pop();
            continue;
        }
        let next = out.join(&c);
        let meta = match std::fs::symlink_metadata(&next) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                out = next;
                // The rest does not exist either: keep it as written.
                while let Some(c) = pending.pop() {
                    if c == ".." {
                        out.pop();
                    } else {
                        out.push(c);
                    }
                }
                break;
            }
            Err(e) => return Err(FsError::new("cannot read", &next, e).into()),
        };
        if !meta.file_type().is_symlink() {
            out = next;
            continue;
        }
        links += 1;
        if links > MAX_LINKS {
            return Err(PathError::Unsafe {
                path: next,
                why: format!("more than {MAX_LINKS} symlinks on the way (a loop?)"),
            });
        }
        if root {
            check_link_owner(&next, &meta, &out)?;
        }
        let target =
            std::fs::read_link(&next).map_err(|e| FsError::new("cannot read", &next, e))?;
        if target.is_absolute() {
            out = PathBuf::from("/");
        }
        pending.extend(components_reversed(&target));
        followed.push(next);
    }
    Ok(out)
}

/// The last component of `p` when it is a name (not `..`, not the root).
fn plain_name(p: &Path) -> Option<&OsStr> {
    match p.components().next_back() {
        Some(Component::Normal(name)) => Some(name),
        _ => None,
    }
}

fn components_reversed(p: &Path) -> Vec<OsString> {
    let mut v: Vec<OsString> = p
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect();
    v.reverse();
    v
}

/// The `protected_symlinks` rule, for root: a link is followed only when
/// root or the owner of its directory owns it.
fn check_link_owner(link: &Path, meta: &std::fs::Metadata, dir: &Path) -> Result<(), PathError> {
    let dir_owner = std::fs::metadata(dir)
        .map_err(|e| FsError::new("cannot read", dir, e))?
        .uid();
    if meta.uid() == 0 || meta.uid() == dir_owner {
        return Ok(());
    }
    Err(PathError::Unsafe {
        path: link.to_path_buf(),
        why: format!(
            "this symlink is owned by user {}, and its directory by user {dir_owner}; stead, running as root, does not follow a link another user could have planted (as the kernel's protected_symlinks rule). Replace the link with the real path.",
            meta.uid()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn walking_refuses_a_link_in_the_path() {
        let t = tempfile::tempdir().unwrap();
        let real = t.path().join("real");
        std::fs::create_dir(&real).unwrap();
        symlink(&real, t.path().join("link")).unwrap();
        let err = open_dir(&t.path().join("link/sub"), true).unwrap_err();
        assert!(
            matches!(
                err,
                PathError::NotADirectory {
                    found: EntryType::Symlink,
                    ..
                }
            ),
            "{err}"
        );
        assert!(!real.join("sub").exists());
        let d = open_dir(&real.join("a/b"), true).unwrap().unwrap();
        assert!(real.join("a/b").is_dir());
        assert!(open_dir(&real.join("missing/x"), false).unwrap().is_none());
        d.write_atomic(OsStr::new("f"), b"x", 0o600).unwrap();
        assert_eq!(std::fs::read(real.join("a/b/f")).unwrap(), b"x");
    }

    #[test]
    fn chmod_and_read_refuse_a_link_and_remove_all_never_follows() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"k").unwrap();
        let d = open_dir(&t.path().join("d"), true).unwrap().unwrap();
        symlink(outside.join("keep"), t.path().join("d/l")).unwrap();
        assert!(matches!(
            d.chmod_file(OsStr::new("l"), 0o777),
            Err(PathError::Changed {
                found: EntryType::Symlink,
                ..
            })
        ));
        assert!(d.read_regular(OsStr::new("l")).is_err());
        std::fs::create_dir(t.path().join("d/sub")).unwrap();
        symlink(&outside, t.path().join("d/sub/out")).unwrap();
        d.remove_all(OsStr::new("sub")).unwrap();
        assert!(!t.path().join("d/sub").exists());
        assert_eq!(std::fs::read(outside.join("keep")).unwrap(), b"k");
    }

    #[test]
    fn resolve_follows_existing_ancestors_only() {
        let t = tempfile::tempdir().unwrap();
        let base = resolve_dir(t.path()).unwrap();
        std::fs::create_dir(base.join("real")).unwrap();
        symlink("real", base.join("link")).unwrap();
        assert_eq!(resolve(&base.join("link/f")).unwrap(), base.join("real/f"));
        assert_eq!(
            resolve(&base.join("link/new/f")).unwrap(),
            base.join("real/new/f")
        );
        // The name itself is never resolved.
        assert_eq!(resolve(&base.join("link")).unwrap(), base.join("link"));
        symlink("loop", base.join("loop")).unwrap();
        assert!(resolve(&base.join("loop/f")).is_err());
    }

    #[test]
    fn read_all_reads_what_is_there_whatever_the_size_said() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        let content: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &content).unwrap();
        for size in [0, 1, 9_999, 10_000, 20_000] {
            let mut f = File::open(&p).unwrap();
            assert_eq!(read_all(&mut f, size).unwrap(), content, "size {size}");
        }
        std::fs::write(&p, b"").unwrap();
        assert!(
            read_all(&mut File::open(&p).unwrap(), 5)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_resolver_resolves_through_remembered_ancestors_as_the_walk_does() {
        let t = tempfile::tempdir().unwrap();
        let base = resolve_dir(t.path()).unwrap();
        for d in ["real/a/b", "other/c", "plain/d"] {
            std::fs::create_dir_all(base.join(d)).unwrap();
        }
        symlink("real", base.join("link")).unwrap();
        symlink(base.join("other"), base.join("real/a/abs")).unwrap();
        symlink("../other", base.join("real/rel")).unwrap();
        std::fs::write(base.join("plain/file"), b"").unwrap();
        let plain = [
            "link/a/b",
            "link/a",
            "link/a/abs/c",
            "link/a/abs/c/new/x",
            "link/rel/c",
            "plain/d/.",
            "plain/./d/new",
            "plain/file",
            "missing/deeper/still",
            "link",
        ];
        let mut r = Resolver::new();
        for p in plain {
            let p = base.join(p);
            assert_eq!(
                r.resolve_dir(&p).unwrap(),
                resolve_dir(&p).unwrap(),
                "{p:?}"
            );
        }
        // Each link is noted once, where a walk per directory notes it again
        // for every directory below it.
        let mut followed = r.followed.clone();
        followed.sort();
        let links = ["link", "real/a/abs", "real/rel"].map(|l| base.join(l));
        assert_eq!(followed, links, "{followed:?}");
        // A path with `..` in it is walked whole, as before.
        for p in ["real/a/../rel/c", "link/a/../../plain/d", "link/a/b/.."] {
            let p = base.join(p);
            assert_eq!(
                r.resolve_dir(&p).unwrap(),
                resolve_dir(&p).unwrap(),
                "{p:?}"
            );
        }
    }

    #[test]
    fn resolver_gives_what_resolve_gives_and_remembers_directories() {
        let t = tempfile::tempdir().unwrap();
        let base = resolve_dir(t.path()).unwrap();
        std::fs::create_dir(base.join("real")).unwrap();
        symlink("real", base.join("link")).unwrap();
        symlink("loop", base.join("loop")).unwrap();
        let mut r = Resolver::new();
        for p in ["link/f", "link/g", "link/new/f", "link", "real/f", "/"] {
            let p = base.join(p);
            assert_eq!(r.resolve(&p).unwrap(), resolve(&p).unwrap(), "{p:?}");
        }
        assert_eq!(
            r.resolve_dir(&base.join("link")).unwrap(),
            base.join("real")
        );
        assert!(r.resolve(&base.join("loop/f")).is_err());
        // Remembered: the link's later change is not seen by this resolver.
        std::fs::remove_file(base.join("link")).unwrap();
        std::fs::create_dir(base.join("link")).unwrap();
        assert_eq!(
            r.resolve(&base.join("link/h")).unwrap(),
            base.join("real/h")
        );
        assert_eq!(
            Resolver::new().resolve(&base.join("link/h")).unwrap(),
            base.join("link/h")
        );
    }
}
