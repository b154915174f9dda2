//! Opening stead's own files (`state.lock`, `state.json`, `journal.jsonl`,
//! `lock_config.json`, `machine_id`, `stead.toml`) without ever blocking:
//! each is opened with `O_NONBLOCK` and refused unless it is a regular file.
//!
//! A plain `open` of a FIFO blocks until a writer appears, which is never:
//! one `mkfifo` in the state dir hung every command, `unlock --force`
//! included. `O_NONBLOCK` makes that open return at once (the type is then
//! checked on the open descriptor, so it cannot change between check and
//! use), and is cleared again before a regular file is read or written.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// What a non-regular file is, in words (`None` for a regular file).
pub fn special_kind(file_type: std::fs::FileType) -> Option<&'static str> {
    if file_type.is_file() {
        None
    } else if file_type.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if file_type.is_dir() {
        Some("a directory")
    } else if file_type.is_socket() {
        Some("a socket")
    } else if file_type.is_char_device() {
        Some("a character device")
    } else if file_type.is_block_device() {
        Some("a block device")
    } else {
        Some("not a regular file")
    }
}

/// The error for a file that is not a regular file: says what it is and
/// what to do (the caller's message names the file).
pub fn not_regular(path: &Path, kind: &str) -> io::Error {
    let fix = if path.file_name() == Some(std::ffi::OsStr::new("state.lock")) {
        "remove it with 'stead state unlock --force'".to_string()
    } else {
        format!("move it away: mv {} {}.bad", path.display(), path.display())
    };
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("it is {kind}, not a regular file; stead does not open it ({fix})"),
    )
}

/// Opens `path` with `options` plus `O_NONBLOCK`, refuses anything but a
/// regular file, and clears `O_NONBLOCK` again.
pub fn open_with(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    let file = options.custom_flags(nix::libc::O_NONBLOCK).open(path)?;
    if let Some(kind) = special_kind(file.metadata()?.file_type()) {
        return Err(not_regular(path, kind));
    }
    clear_nonblock(&file)?;
    Ok(file)
}

/// Clears `O_NONBLOCK` on `file`, opened with it so that a FIFO could not
/// block the open, before it is read or written.
pub fn clear_nonblock(file: &File) -> io::Result<()> {
    let flags = nix::fcntl::fcntl(file, nix::fcntl::FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) - nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(file, nix::fcntl::FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(())
}

/// Opens a regular file for reading (see [`open_with`]).
pub fn open(path: &Path) -> io::Result<File> {
    open_with(path, OpenOptions::new().read(true))
}

/// `fs::read` that refuses (instead of hanging on) a FIFO or other special file.
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    read_with_metadata(path).map(|(bytes, _)| bytes)
}

/// [`read`], with the file's metadata as it was before it was read (a
/// change made while it was read shows in a later `stat`, never in this).
pub fn read_with_metadata(path: &Path) -> io::Result<(Vec<u8>, std::fs::Metadata)> {
    let mut file = open(path)?;
    let metadata = file.metadata()?;
    let mut out = Vec::new();
    file.read_to_end(&mut out)?;
    Ok((out, metadata))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_refused_at_once_and_a_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("state.json");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let err = read(&fifo).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("FIFO"), "{err}");
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(read(&file).unwrap(), b"x");
        assert!(read(dir.path()).is_err());
        assert_eq!(
            read(&dir.path().join("none")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }
}
