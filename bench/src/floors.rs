//! The floors: the least filesystem work each stead operation could do,
//! as plain Rust functions run in the same process and the same run, so a
//! stead row can be read as "so many times the floor" (issue 15).
//!
//! * cold apply: the **no-fsync writer** (mkdir, temp file, write, rename;
//!   nothing is made durable) and the **fsync writer** (stead's way today,
//!   [`crate::baseline_write`]);
//! * warm no-op: **lstat** every file, **open + read + compare** every file,
//!   **read + hash** ([`crate::baseline_read_hash`]);
//! * drift repair: **read + hash + rewrite** ([`crate::baseline_repair`],
//!   fsync'd) and its no-fsync variant; the rewrite alone is timed too, for
//!   the repair target.
//!
//! Paths and declared contents are computed before the clock starts, so a
//! floor times only its system calls and comparisons.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::{FILE_MODE, FileSet, Result, parallel};

/// The paths under one home and the declared content of every file of a
/// [`FileSet`], computed once outside the timed region.
#[derive(Debug)]
pub struct Prepared {
    /// The home the paths are in.
    pub home: PathBuf,
    /// The directories, absolute.
    pub dirs: Vec<PathBuf>,
    /// File `i`'s absolute path.
    pub paths: Vec<PathBuf>,
    /// File `i`'s declared content.
    pub contents: Vec<Vec<u8>>,
}

impl Prepared {
    /// The paths of `set` under `home` and its declared contents.
    pub fn new(set: &FileSet, home: &Path) -> Self {
        Prepared {
            home: home.to_path_buf(),
            dirs: (0..set.dirs())
                .map(|d| home.join(format!("d{d}")))
                .collect(),
            paths: (0..set.n).map(|i| home.join(set.rel(i))).collect(),
            contents: (0..set.n).map(|i| set.content(i).into_bytes()).collect(),
        }
    }
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temp name beside `path` (dot-prefixed, unique in this process).
fn temp_beside(path: &Path) -> PathBuf {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    dir.join(format!(
        ".{name}.floor-{}-{}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Writes `data` to a temp file beside `path` and renames it over `path`,
/// with no fsync: what any copy tool does, and what a crash can tear.
pub fn write_rename_nosync(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let (tmp, f) = write_temp_beside(path, data, mode)?;
    drop(f);
    fs::rename(&tmp, path)
}

/// A temp file beside `path` created `O_EXCL|O_NOFOLLOW` with `mode`,
/// holding `data`, its mode set exactly (as stead creates its temps); not
/// flushed. Returns its path and the open file.
pub fn write_temp_beside(path: &Path, data: &[u8], mode: u32) -> io::Result<(PathBuf, File)> {
    let tmp = temp_beside(path);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&tmp)?;
    f.write_all(data)?;
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    Ok((tmp, f))
}

/// Floor of a cold apply without durability: create every directory, then
/// write every file with [`write_rename_nosync`], on `threads` threads.
/// The dirty pages it leaves are flushed by a `syncfs` after the clock
/// stops, so they do not slow whatever is measured next.
pub fn nofsync_writer(p: &Prepared, threads: usize) -> Result<Duration> {
    let start = Instant::now();
    parallel(threads, p.dirs.len(), |d| fs::create_dir_all(&p.dirs[d]))?;
    parallel(threads, p.paths.len(), |i| {
        write_rename_nosync(&p.paths[i], &p.contents[i], FILE_MODE)
    })?;
    let elapsed = start.elapsed();
    nix::unistd::syncfs(File::open(&p.home)?)?;
    Ok(elapsed)
}

/// Floor of a no-op that trusts metadata: `lstat` every file and check it
/// is a regular file of the declared size. Returns the time and the files
/// that did not pass.
pub fn lstat_all(p: &Prepared, threads: usize) -> Result<(Duration, Vec<usize>)> {
    let differing = Mutex::new(Vec::new());
    let start = Instant::now();
    parallel(threads, p.paths.len(), |i| {
        let m = fs::symlink_metadata(&p.paths[i])?;
        if !m.file_type().is_file() || m.len() != p.contents[i].len() as u64 {
            push(&differing, i)?;
        }
        Ok(())
    })?;
    let elapsed = start.elapsed();
    Ok((elapsed, sorted(differing)?))
}

/// Floor of a no-op that reads: one `open` and reads to EOF into a buffer
/// reused by the thread, then a byte compare with the declared content.
/// Returns the time and the files that differ.
pub fn read_compare(p: &Prepared, threads: usize) -> Result<(Duration, Vec<usize>)> {
    let differing = Mutex::new(Vec::new());
    let start = Instant::now();
    parallel_with_buf(threads, p.paths.len(), |i, buf| {
        buf.clear();
        File::open(&p.paths[i])?.read_to_end(buf)?;
        if buf[..] != p.contents[i][..] {
            push(&differing, i)?;
        }
        Ok(())
    })?;
    let elapsed = start.elapsed();
    Ok((elapsed, sorted(differing)?))
}

/// A drift repair's floor: which files differ (read + hash), then their
/// rewrite, with or without fsync.
#[derive(Debug, Clone, Copy)]
pub struct Repair {
    /// Read + hash + rewrite.
    pub total: Duration,
    /// The rewrite alone.
    pub writes: Duration,
}

/// Read and blake3 every file, then rewrite those that differ, either as
/// stead does today (`durable`: [`crate::baseline_atomic_write`]) or with
/// [`write_rename_nosync`] (then flushed by a `syncfs` after the clock).
pub fn repair(p: &Prepared, threads: usize, durable: bool) -> Result<Repair> {
    let differing = Mutex::new(Vec::new());
    let start = Instant::now();
    parallel_with_buf(threads, p.paths.len(), |i, buf| {
        buf.clear();
        File::open(&p.paths[i])?.read_to_end(buf)?;
        if blake3::hash(buf) != blake3::hash(&p.contents[i]) {
            push(&differing, i)?;
        }
        Ok(())
    })?;
    let differing = sorted(differing)?;
    let write_start = Instant::now();
    parallel(threads, differing.len(), |k| {
        let i = differing[k];
        if durable {
            crate::baseline_atomic_write(&p.paths[i], &p.contents[i], FILE_MODE)
        } else {
            write_rename_nosync(&p.paths[i], &p.contents[i], FILE_MODE)
        }
    })?;
    let out = Repair {
        total: start.elapsed(),
        writes: write_start.elapsed(),
    };
    if !durable {
        nix::unistd::syncfs(File::open(&p.home)?)?;
    }
    Ok(out)
}

fn push(v: &Mutex<Vec<usize>>, i: usize) -> io::Result<()> {
    v.lock()
        .map_err(|_| io::Error::other("a floor thread panicked"))?
        .push(i);
    Ok(())
}

fn sorted(v: Mutex<Vec<usize>>) -> Result<Vec<usize>> {
    let mut v = v.into_inner().map_err(|_| "a floor thread panicked")?;
    v.sort_unstable();
    Ok(v)
}

/// [`parallel`] with one read buffer per thread, reused across files.
fn parallel_with_buf<F>(threads: usize, n: usize, work: F) -> Result<()>
where
    F: Fn(usize, &mut Vec<u8>) -> io::Result<()> + Sync,
{
    let threads = threads.clamp(1, n.max(1));
    // Each thread takes a contiguous stripe: no shared counter, one buffer.
    let chunk = n.div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let work = &work;
                s.spawn(move || -> io::Result<()> {
                    let mut buf = Vec::with_capacity(4096);
                    for i in (t * chunk)..((t + 1) * chunk).min(n) {
                        work(i, &mut buf)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| "a floor thread panicked")??;
        }
        Ok(())
    })
}
