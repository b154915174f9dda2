//! Atomic writes of a large file that is rewritten whole by every commit
//! (`state.json`) through a spare file beside it, swapped in with
//! `renameat2(RENAME_EXCHANGE)`: the spare then holds the file it replaced,
//! and the next write overwrites that in place. The converged seal is
//! written the same way, into the seal a run moved aside
//! ([`crate::seal::remove`]); its readers take no lock, since a seal read
//! while it was overwritten fails its digest and is no seal.
//!
//! A temp file renamed over the target ([`crate::fsutil::atomic_write_with`])
//! makes the filesystem allocate a new file's blocks and free the old
//! one's, each time: on this project's test machine (ext4 with `discard`)
//! a 1.6 MB record's write, flush, rename and directory flush took
//! 2.8–3.05 ms that way against 1.7–1.9 ms into a spare
//! (docs/performance.md, "twelfth pass").
//!
//! The order, and why a crash at any point leaves the old file or the new
//! one whole:
//!
//! 1. The spare is opened without following a link and must be a regular
//!    file with one name (a second name would see the overwrite), and no
//!    reader may be reading it: a reader of the target holds a shared
//!    `flock` on it while it reads ([`read_shared`]), and the spare is the
//!    target's previous file, so the writer takes an exclusive one without
//!    waiting. Anything else, and the write goes the temp-file way instead.
//! 2. The content is written from offset 0, the file cut to its length,
//!    its mode set, and flushed (`fsync`). Only the spare changed: the
//!    target is whole. A failure removes the spare (no half-written file
//!    is left).
//! 3. The two names are exchanged in one step (the target missing or not
//!    a regular file: the spare is renamed, as a temp file would be; a
//!    filesystem without the exchange: renamed too, and the next write
//!    makes a new spare). The target is the new file, whole and flushed,
//!    or still the old one. A failed rename removes the spare.
//! 4. The directory is flushed, so the exchange survives a power cut.
//!
//! The exclusive `flock` is held from 1 until after 3, so a reader that
//! opened the spare's inode while it was still the target either finished
//! before the overwrite began (the writer's lock would otherwise fail) or
//! waits for its lock until the new content is whole and is then the
//! target. Where the filesystem has no `flock` (some network ones), a
//! writer cannot take its lock and always goes the temp-file way, and
//! readers read without one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::fsutil::{FsError, WriteStage};

/// Writes `path` atomically with permission bits `mode` through `spare`
/// (see the module doc), calling `observer` at each stage as
/// [`crate::fsutil::atomic_write_with`] does; when the spare cannot be
/// used, that is what writes it.
pub fn write(
    path: &Path,
    spare: &Path,
    mode: u32,
    observer: &mut dyn FnMut(WriteStage),
    write: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
) -> Result<(), FsError> {
    let Some(file) = open_spare(spare, mode) else {
        return crate::fsutil::atomic_write_with(path, mode, observer, write);
    };
    if let Err(e) = fill(&file, spare, mode, write) {
        drop(file);
        let _ = fs::remove_file(spare);
        return Err(e);
    }
    observer(WriteStage::TempSynced);
    // Only a regular file is swapped out (anything else at the target is
    // replaced, or refuses the rename, exactly as with a temp file).
    let target_is_file = fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file());
    let swapped = if target_is_file {
        exchange(spare, path).or_else(|_| fs::rename(spare, path))
    } else {
        fs::rename(spare, path)
    };
    drop(file);
    if let Err(e) = swapped {
        let _ = fs::remove_file(spare);
        return Err(FsError::new("cannot rename into", path, e));
    }
    observer(WriteStage::Renamed);
    crate::fsutil::fsync_dir(&crate::fsutil::parent_dir(path))
}

/// Reads `path` whole under a shared `flock` (so that a [`write()`] does
/// not overwrite it in place meanwhile), refusing a special file as
/// [`crate::ownfile::read_with_metadata`] does, with its metadata as it
/// was before the read.
pub fn read_shared(path: &Path) -> io::Result<(Vec<u8>, fs::Metadata)> {
    let mut file = crate::ownfile::open(path)?;
    loop {
        match file.lock_shared() {
            Ok(()) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // No `flock` on this filesystem (some network ones): no writer
            // can take its exclusive lock either, so none overwrites a file
            // in place here (the temp-file way is taken).
            Err(_) => break,
        }
    }
    let metadata = file.metadata()?;
    // Sized for the file up front, but never trusting a size no record has
    // (a sparse or hostile file): past 64 MiB it grows as it is read.
    let mut out = Vec::with_capacity(metadata.len().min(64 << 20) as usize);
    file.read_to_end(&mut out)?;
    Ok((out, metadata))
}

/// The spare, open for writing and locked, when it may be overwritten in
/// place (step 1); `None` when the write must take the temp-file way. A
/// spare that is not a regular file with one name loses its name here
/// (it is stead's name in stead's own directory; a second name keeps its
/// content).
fn open_spare(spare: &Path, mode: u32) -> Option<File> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .mode(mode)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(spare)
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.file_type().is_file() || meta.nlink() != 1 {
        drop(file);
        let _ = fs::remove_file(spare);
        return None;
    }
    // A reader still holds the target's previous file: leave it be.
    file.try_lock().ok()?;
    crate::ownfile::clear_nonblock(&file).ok()?;
    Some(file)
}

/// Step 2: the content from offset 0, the file cut to it, its mode, a flush.
fn fill(
    file: &File,
    spare: &Path,
    mode: u32,
    write: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
) -> Result<(), FsError> {
    let failed = |e| FsError::new("cannot write", spare, e);
    let mut out = io::BufWriter::with_capacity(64 * 1024, file);
    out.rewind().map_err(failed)?;
    write(&mut out).and_then(|()| out.flush()).map_err(failed)?;
    let mut file = out.into_inner().map_err(|e| failed(e.into_error()))?;
    let len = file.stream_position().map_err(failed)?;
    file.set_len(len).map_err(failed)?;
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| FsError::new("cannot set permissions on", spare, e))?;
    file.sync_all()
        .map_err(|e| FsError::new("cannot fsync", spare, e))
}

/// Step 3: `spare` and `path` swap names in one step.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn exchange(spare: &Path, path: &Path) -> io::Result<()> {
    use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
    renameat2(
        AT_FDCWD,
        spare,
        AT_FDCWD,
        path,
        RenameFlags::RENAME_EXCHANGE,
    )
    .map_err(io::Error::from)
}

/// Step 3 where the exchange is not available: the caller renames.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn exchange(_spare: &Path, _path: &Path) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn write_text(path: &Path, spare: &Path, text: &str) -> Vec<WriteStage> {
        let mut stages = Vec::new();
        write(path, spare, 0o600, &mut |s| stages.push(s), &mut |out| {
            out.write_all(text.as_bytes())
        })
        .unwrap();
        stages
    }

    fn setup() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("state.json");
        let spare = d.path().join("state.json.prev");
        (d, path, spare)
    }

    #[test]
    fn each_write_swaps_the_spare_in_and_keeps_the_file_it_replaced() {
        let (_d, path, spare) = setup();
        let stages = write_text(&path, &spare, "first, and longer than the second\n");
        assert_eq!(stages, [WriteStage::TempSynced, WriteStage::Renamed]);
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "first, and longer than the second\n"
        );
        write_text(&path, &spare, "second\n");
        let second = fs::metadata(&path).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "second\n");
        assert_eq!(
            fs::read_to_string(&spare).unwrap(),
            "first, and longer than the second\n"
        );
        // The third write goes into the first's file, cut to its length.
        let first_ino = fs::metadata(&spare).unwrap().ino();
        write_text(&path, &spare, "third\n");
        assert_eq!(fs::read_to_string(&path).unwrap(), "third\n");
        assert_eq!(fs::read_to_string(&spare).unwrap(), "second\n");
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        {
            assert_eq!(fs::metadata(&path).unwrap().ino(), first_ino);
            assert_eq!(fs::metadata(&spare).unwrap().ino(), second.ino());
        }
        let _ = (first_ino, second);
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_spare_that_is_a_link_is_never_followed() {
        let (d, path, spare) = setup();
        let elsewhere = d.path().join("elsewhere");
        fs::write(&elsewhere, "not stead's\n").unwrap();
        std::os::unix::fs::symlink(&elsewhere, &spare).unwrap();
        write_text(&path, &spare, "record\n");
        assert_eq!(fs::read_to_string(&path).unwrap(), "record\n");
        assert_eq!(fs::read_to_string(&elsewhere).unwrap(), "not stead's\n");
        assert!(
            fs::symlink_metadata(&spare)
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }

    #[test]
    fn a_spare_with_a_second_name_is_not_overwritten_through_it() {
        let (d, path, spare) = setup();
        write_text(&path, &spare, "one\n");
        write_text(&path, &spare, "two\n");
        let other = d.path().join("a-backup-by-link");
        fs::hard_link(&spare, &other).unwrap();
        write_text(&path, &spare, "three\n");
        assert_eq!(fs::read_to_string(&path).unwrap(), "three\n");
        assert_eq!(fs::read_to_string(&other).unwrap(), "one\n");
        // The spare lost its name and the next write makes a new one.
        write_text(&path, &spare, "four\n");
        assert_eq!(fs::read_to_string(&path).unwrap(), "four\n");
        assert_eq!(fs::read_to_string(&other).unwrap(), "one\n");
    }

    #[test]
    fn a_spare_a_reader_still_reads_is_left_as_it_is() {
        let (_d, path, spare) = setup();
        write_text(&path, &spare, "one\n");
        write_text(&path, &spare, "two\n");
        // A reader that opened the record before the last write holds
        // what is now the spare.
        let reader = File::open(&spare).unwrap();
        reader.lock_shared().unwrap();
        write_text(&path, &spare, "three\n");
        assert_eq!(fs::read_to_string(&path).unwrap(), "three\n");
        let mut seen = String::new();
        (&reader).read_to_string(&mut seen).unwrap();
        assert_eq!(seen, "one\n");
    }

    #[test]
    fn a_failed_write_leaves_the_target_and_no_spare() {
        let (_d, path, spare) = setup();
        write_text(&path, &spare, "one\n");
        write_text(&path, &spare, "two\n");
        let err = write(&path, &spare, 0o600, &mut |_| {}, &mut |out| {
            out.write_all(b"half")?;
            Err(io::Error::other("disk full"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "two\n");
        assert!(!spare.exists());
    }

    #[test]
    fn a_target_that_is_no_regular_file_is_never_swapped_out() {
        let (_d, path, spare) = setup();
        write_text(&path, &spare, "one\n");
        write_text(&path, &spare, "two\n");
        fs::remove_file(&path).unwrap();
        fs::create_dir(&path).unwrap();
        fs::write(path.join("inside"), "kept\n").unwrap();
        let err = write(&path, &spare, 0o600, &mut |_| {}, &mut |out| {
            out.write_all(b"three\n")
        })
        .unwrap_err();
        assert!(err.to_string().contains("cannot rename into"), "{err}");
        assert_eq!(fs::read_to_string(path.join("inside")).unwrap(), "kept\n");
        assert!(!spare.exists(), "the unused spare is removed");
    }

    #[test]
    fn a_shared_read_waits_for_a_write_into_its_file() {
        let (_d, path, spare) = setup();
        write_text(&path, &spare, "one\n");
        let ino = fs::metadata(&path).unwrap().ino();
        // A writer holds the record's file exclusively: the read waits for it.
        let writer = File::open(&path).unwrap();
        writer.lock().unwrap();
        let reading = path.clone();
        let reader = std::thread::spawn(move || read_shared(&reading).map(|r| r.0));
        // The kernel lists a waiting flock as a blocked shared request on
        // the file's inode ("-> FLOCK ... READ ... maj:min:ino ...").
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let waiting = |locks: &str| {
            locks.lines().any(|l| {
                l.contains("->")
                    && l.contains("FLOCK")
                    && l.contains("READ")
                    && l.split_whitespace()
                        .any(|f| f.ends_with(&format!(":{ino}")))
            })
        };
        while !waiting(&fs::read_to_string("/proc/locks").unwrap()) {
            assert!(
                std::time::Instant::now() < deadline,
                "the read never waited for the writer's lock"
            );
            std::thread::yield_now();
        }
        assert!(!reader.is_finished());
        drop(writer);
        assert_eq!(reader.join().unwrap().unwrap(), b"one\n");
    }
}
