//! Durability by barrier: a batch of file writes made durable together.
//!
//! Writing one file crash-safely takes two flushes (the temp's data before
//! the rename, the directory after it). Done per file, those flushes are most
//! of a cold apply. A batch instead goes through the same stages for all its
//! files at once, with one barrier where a single write has a flush:
//!
//! 1. every temp file is written next to its target (`O_EXCL`, final mode,
//!    [`safe_path::Dir::write_temp`]), none flushed;
//! 2. the batch's `started` journal record is durable (the caller's
//!    `started`); then each target that must be kept first, if it is a
//!    regular file, is linked at its name in the run's backup folder (or,
//!    when it cannot be, copied to a temp name there), not flushed
//!    (`backup::stage`);
//! 3. **data barrier**: every temp's and backup's data is durable
//!    ([`Barrier`]), and the linked backups' names (and the directories
//!    made for them);
//! 4. the copied backups are named: each renamed to its name in the run
//!    folder, then a barrier makes those names durable (none when every
//!    backup is a link); anything but a regular file is backed up alone
//!    (`backup::backup`); a member whose backup fails is not
//!    renamed;
//! 5. every temp is renamed over its target;
//! 6. **name barrier**: every rename (the directory entries) is durable;
//! 7. only then does the caller queue the outcome record and report.
//!
//! So a crash (a kill or a power cut) at any point leaves each target either
//! old or whole and new, never torn or empty: a rename is only made after the
//! barrier that covers its data, and after the durable backup of what it
//! replaces, so a replaced original is never lost either. Backups are named
//! only after the `started` record: a crash before it leaves no backup of a
//! change the journal never saw begin (only temps, which recovery removes:
//! the run's start is in the journal). A crash after it may leave a linked
//! backup of a target that was never replaced: a second name of the
//! untouched file, as any crash before step 5 may leave one, and the
//! journal shows the batch begun but not ended, so the next run reads its
//! files again. Nothing reported done is lost: the outcome
//! is queued only after the barrier that covers the renames. A temp left by
//! a crash is named like every stead temp and removed by the next run.
//!
//! The barrier is `syncfs` once per filesystem when the batch is large (its
//! cost does not grow with the batch), else an fsync of each temp and of each
//! directory (cheaper for a few files; `syncfs` also waits for other
//! programs' dirty data). docs/performance.md has the measurements.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::backup::{self, Pending};
use crate::parallel;
use crate::resource::{Applied, checksum};
use crate::safe_path::{self, Dir, Temp};

/// At least this many files (each backup of a target counts as one more):
/// one `syncfs` per filesystem is the barrier; fewer: one fsync per temp
/// file, per backup and per directory.
pub const SYNCFS_MIN_FILES: usize = 128;

/// At most this many files in one batch (bounds what one barrier waits for).
pub const MAX_FILES: usize = 4096;

/// At most this many directories in one batch: each is held open from the
/// first stage to the last, and the open-file limit may be as low as 1024.
pub const MAX_DIRS: usize = 256;

/// How a barrier was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Barrier {
    /// `syncfs` once per filesystem the batch writes on.
    Syncfs,
    /// fsync of each temp file (data) or of each directory (names).
    Fsync,
}

/// Where a batch is: what the engine reports so a test can check the order
/// of the stages (a rename never before the barrier that covers its data,
/// an outcome never before the barrier that covers its rename).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// The temp file for `path` holds its full content (not flushed).
    TempWritten {
        /// The batch (its journal op id).
        batch: String,
        /// The target.
        path: PathBuf,
    },
    /// Every temp of the batch and its `started` record are durable.
    DataBarrier {
        /// The batch.
        batch: String,
        /// How.
        barrier: Barrier,
    },
    /// What was at `path` is backed up, durably (before its rename).
    BackedUp {
        /// The batch.
        batch: String,
        /// The target.
        path: PathBuf,
    },
    /// `path` now holds the new content (the rename is not yet durable).
    Renamed {
        /// The batch.
        batch: String,
        /// The target.
        path: PathBuf,
    },
    /// Every rename of the batch is durable.
    NameBarrier {
        /// The batch.
        batch: String,
        /// How.
        barrier: Barrier,
    },
    /// The batch's outcome records are queued in the journal.
    OutcomeQueued {
        /// The batch.
        batch: String,
    },
    /// The run's outcome is committed to the state record.
    StateCommitted,
}

/// One file of a batch.
#[derive(Debug, Clone, Copy)]
pub struct Member<'a> {
    /// The target (absolute, normalized).
    pub path: &'a Path,
    /// What it will hold.
    pub content: &'a [u8],
    /// Its permission bits.
    pub mode: u32,
    /// Back up what is at `path` (if anything) into this run folder
    /// ([`crate::backup::run_folder`]) before replacing it.
    pub backup: Option<&'a Path>,
}

/// The directory a member's parent path names, opened once for the batch.
type Parent = Result<Dir, String>;

/// Writes `members` through the stages of this module's doc, on up to
/// `threads` threads. `started` is called once the temps are written,
/// before any backup is made and before the data barrier; when it fails
/// nothing is backed up or renamed. Returns each
/// member's result, in order. `stage` sees each stage as it is passed.
pub fn write(
    batch: &str,
    members: &[Member],
    threads: usize,
    stage: &(dyn Fn(Stage) + Sync),
    started: &mut dyn FnMut() -> Result<(), String>,
) -> Vec<Result<Applied, String>> {
    // Chosen once for the whole batch: the temps of a `syncfs` batch are
    // closed as soon as written, so it cannot switch to fsyncs after some
    // members failed.
    let backups = members.iter().filter(|m| m.backup.is_some()).count();
    let barrier = if members.len() + backups >= SYNCFS_MIN_FILES {
        Barrier::Syncfs
    } else {
        Barrier::Fsync
    };
    let (parents, parent_of) = open_parents(members, threads);
    let mut results: Vec<Result<Applied, String>> =
        vec![Err("internal error: not written".to_string()); members.len()];
    let staged = stage_temps(
        batch, members, barrier, &parents, &parent_of, threads, stage,
    );
    let mut temps: Vec<(usize, Temp)> = Vec::with_capacity(staged.len());
    for (i, outcome) in staged {
        match outcome {
            Ok(temp) => temps.push((i, temp)),
            Err(e) => results[i] = Err(e),
        }
    }
    if temps.is_empty() {
        return results;
    }
    // Step 2: a backup linked at its name is one as soon as it is made, so
    // the journal says the batch began first.
    if let Err(e) = started() {
        for (i, temp) in temps {
            discard(&parents[parent_of[i]], temp);
            results[i] = Err(format!("not started: {e}"));
        }
        return results;
    }
    // Staged now, so that one barrier covers them and the temps.
    let staged = stage_backups(members, &temps, (barrier, threads));
    let mut backups: Vec<Backup> = Vec::with_capacity(temps.len());
    let mut ready: Vec<(usize, Temp)> = Vec::with_capacity(temps.len());
    for ((i, temp), backup) in temps.into_iter().zip(staged) {
        match backup {
            Ok(backup) => {
                backups.push(backup);
                ready.push((i, temp));
            }
            Err(e) => {
                discard(&parents[parent_of[i]], temp);
                results[i] = Err(backup_failed(&members[i], &e));
            }
        }
    }
    let temps = ready;
    if temps.is_empty() {
        return results;
    }
    // Each run folder once (every member of a run names the same one).
    let mut runs: Vec<&Path> = temps
        .iter()
        .filter_map(|(i, _)| members[*i].backup)
        .collect();
    runs.sort_unstable();
    runs.dedup();
    let data = data_barrier(
        barrier,
        (&temps, &backups, &runs),
        &parents,
        &parent_of,
        threads,
    )
    .map_err(|e| format!("not written: {e}"));
    if let Err(e) = data {
        for ((i, temp), backup) in temps.into_iter().zip(backups) {
            discard(&parents[parent_of[i]], temp);
            if let Backup::Pending(p) = backup {
                p.discard();
                remove_backup_dirs(&members[i]);
            }
            results[i] = Err(e.clone());
        }
        return results;
    }
    stage(Stage::DataBarrier {
        batch: batch.to_string(),
        barrier,
    });
    let backed_up = place_backups(
        batch,
        members,
        (&temps, backups, &runs),
        (barrier, threads),
        stage,
    );
    let mut backups: Vec<Option<PathBuf>> = vec![None; members.len()];
    let mut kept: Vec<(usize, Temp)> = Vec::with_capacity(temps.len());
    for ((i, temp), backed_up) in temps.into_iter().zip(backed_up) {
        match backed_up {
            Ok(to) => {
                backups[i] = to;
                kept.push((i, temp));
            }
            Err(e) => {
                discard(&parents[parent_of[i]], temp);
                results[i] = Err(e);
            }
        }
    }
    let renamed = commit_temps(batch, members, kept, &parents, &parent_of, threads, stage);
    let mut done: Vec<usize> = Vec::with_capacity(renamed.len());
    for (i, outcome) in renamed {
        match outcome {
            Ok(()) => done.push(i),
            Err(e) => results[i] = Err(e),
        }
    }
    if done.is_empty() {
        return results;
    }
    let names = name_barrier(barrier, &done, &parents, &parent_of);
    for i in done {
        results[i] = match &names {
            Ok(()) => Ok(Applied {
                checksum: Some(checksum(members[i].content)),
                backup: backups[i].take(),
                ..Applied::default()
            }),
            Err(e) => Err(format!("written, but it could not be made durable: {e}")),
        };
    }
    if names.is_ok() {
        stage(Stage::NameBarrier {
            batch: batch.to_string(),
            barrier,
        });
    }
    results
}

/// Opens each distinct parent directory once (creating missing ones, never
/// through a link). Returns the directories and each member's index into them.
fn open_parents(members: &[Member], threads: usize) -> (Vec<Parent>, Vec<usize>) {
    let mut index: HashMap<&Path, usize> = HashMap::new();
    let mut paths: Vec<&Path> = Vec::new();
    let parent_of = members
        .iter()
        .map(|m| {
            let parent = m.path.parent().unwrap_or(Path::new("/"));
            *index.entry(parent).or_insert_with(|| {
                paths.push(parent);
                paths.len() - 1
            })
        })
        .collect();
    // Directories that share their own parent (the folders of a home) are
    // each opened from it, itself walked from `/` once: not every level
    // again for each of them.
    let mut above_index: HashMap<&Path, usize> = HashMap::new();
    let mut aboves: Vec<&Path> = Vec::new();
    let above_of: Vec<Option<(usize, &std::ffi::OsStr)>> = paths
        .iter()
        .map(|p| {
            let (above, name) = (p.parent()?, p.file_name()?);
            let k = *above_index.entry(above).or_insert_with(|| {
                aboves.push(above);
                aboves.len() - 1
            });
            Some((k, name))
        })
        .collect();
    let opened = parallel::map(&aboves, threads, |a| {
        open_required(a, |a| safe_path::open_dir(a, true))
    });
    let indices: Vec<usize> = (0..paths.len()).collect();
    let parents = parallel::map(&indices, threads, |&k| {
        let p = paths[k];
        match above_of[k] {
            Some((a, name)) => {
                let above = opened[a].as_ref().map_err(Clone::clone)?;
                open_required(p, |_| above.open_below(name, true))
            }
            None => open_required(p, |p| safe_path::open_dir(p, true)),
        }
    });
    (parents, parent_of)
}

/// `open` of the directory `path`, where none there is an error.
fn open_required(
    path: &Path,
    open: impl FnOnce(&Path) -> Result<Option<safe_path::Dir>, safe_path::PathError>,
) -> Result<safe_path::Dir, String> {
    open(path)
        .map_err(|e| e.to_string())
        .and_then(|d| d.ok_or_else(|| format!("cannot open the directory {}", path.display())))
}

fn stage_temps(
    batch: &str,
    members: &[Member],
    barrier: Barrier,
    parents: &[Parent],
    parent_of: &[usize],
    threads: usize,
    stage: &(dyn Fn(Stage) + Sync),
) -> Vec<(usize, Result<Temp, String>)> {
    let indices: Vec<usize> = (0..members.len()).collect();
    // A `syncfs` batch closes each temp once written: its barrier needs no
    // file open, and the open-file limit holds however large it is.
    let keep_open = barrier == Barrier::Fsync;
    let out = parallel::map(&indices, threads, |&i| {
        let m = &members[i];
        let dir = parents[parent_of[i]].as_ref().map_err(Clone::clone)?;
        let name = m
            .path
            .file_name()
            .ok_or_else(|| format!("cannot write {}: it has no file name", m.path.display()))?;
        let mut temp = dir
            .write_temp(name, m.content, m.mode)
            .map_err(|e| e.to_string())?;
        if !keep_open {
            temp.close();
        }
        stage(Stage::TempWritten {
            batch: batch.to_string(),
            path: m.path.to_path_buf(),
        });
        Ok(temp)
    });
    indices.into_iter().zip(out).collect()
}

fn data_barrier(
    barrier: Barrier,
    (temps, backups, runs): (&[(usize, Temp)], &[Backup], &[&Path]),
    parents: &[Parent],
    parent_of: &[usize],
    threads: usize,
) -> Result<(), String> {
    match barrier {
        Barrier::Syncfs => {
            let mut synced = Vec::new();
            sync_filesystems(
                temps.iter().map(|(i, _)| *i),
                parents,
                parent_of,
                &mut synced,
            )?;
            if backups.iter().any(|b| matches!(b, Backup::Pending(_))) {
                sync_folders(runs, &mut synced)?;
            }
            Ok(())
        }
        Barrier::Fsync => {
            parallel::map(temps, threads, |(_, t)| t.sync().map_err(|e| e.to_string()))
                .into_iter()
                .collect::<Result<(), String>>()?;
            parallel::map(backups, threads, |backup| match backup {
                Backup::Pending(p) => p.sync().map_err(|e| e.to_string()),
                Backup::None | Backup::Alone => Ok(()),
            })
            .into_iter()
            .collect::<Result<(), String>>()?;
            let named = backups.iter().filter_map(|b| match b {
                Backup::Pending(p) if p.is_named() => Some(p),
                _ => None,
            });
            sync_names(named, threads)
        }
    }
}

/// Flushes the directories that hold the names of `backups` (and the
/// parents of those made for them): each once, on up to `threads` threads.
fn sync_names<'p>(
    backups: impl Iterator<Item = &'p Pending>,
    threads: usize,
) -> Result<(), String> {
    fsync_each(&name_dirs(backups), threads)
}

/// The directories whose entries hold the names of `backups`
/// ([`Pending::names`]), each once.
fn name_dirs<'p>(backups: impl Iterator<Item = &'p Pending>) -> Vec<&'p Path> {
    let mut dirs: Vec<&Path> = backups.flat_map(Pending::names).collect();
    dirs.sort_unstable();
    dirs.dedup();
    dirs
}

/// Flushes each of `dirs` (its entries), on up to `threads` threads.
fn fsync_each<D: AsRef<Path> + Sync>(dirs: &[D], threads: usize) -> Result<(), String> {
    parallel::map(dirs, threads, |d| {
        crate::fsutil::fsync_dir(d.as_ref()).map_err(|e| e.to_string())
    })
    .into_iter()
    .collect()
}

/// What a member's backup is once the temps are written.
enum Backup {
    /// None asked for, or nothing there to keep.
    None,
    /// A regular file linked or copied to a temp name in its run folder, to be named
    /// after the batch's `started` record ([`place_backups`]).
    Pending(Pending),
    /// Anything else, backed up alone after the `started` record.
    Alone,
}

/// The second part of step 2 of this module's doc, made before the data
/// barrier so that it covers them too: for each temp whose member asks for
/// a backup, its target linked at its name or copied to a temp name in the
/// run folder ([`backup::stage`]), on up to `threads` threads, into folders
/// made one after the other first ([`backup::folder`] says why). Only after
/// the batch's `started` record: a link is a backup as soon as it is made.
fn stage_backups(
    members: &[Member],
    temps: &[(usize, Temp)],
    (barrier, threads): (Barrier, usize),
) -> Vec<Result<Backup, String>> {
    // Most batches keep nothing: no threads for them.
    if temps.iter().all(|(i, _)| members[*i].backup.is_none()) {
        return temps.iter().map(|_| Ok(Backup::None)).collect();
    }
    let chains = backup::Chains::default();
    let kept: Vec<KeptAs> = temps
        .iter()
        .map(|(i, _)| {
            let m = &members[*i];
            let Some(run) = m.backup else {
                return KeptAs::Nothing;
            };
            // Nothing there (removed since the plan): nothing to keep.
            let Ok(meta) = std::fs::symlink_metadata(m.path) else {
                return KeptAs::Nothing;
            };
            match backup::folder(m.path, &meta, run, &chains) {
                Ok(Some(folder)) => KeptAs::Staged(m.path, Box::new((meta, folder))),
                Ok(None) => KeptAs::Alone,
                Err(e) => KeptAs::Failed(e.to_string()),
            }
        })
        .collect();
    parallel::map(&kept, threads, |kept| match kept {
        KeptAs::Nothing => Ok(Backup::None),
        KeptAs::Alone => Ok(Backup::Alone),
        KeptAs::Failed(e) => Err(e.clone()),
        KeptAs::Staged(path, found) => {
            let (meta, folder) = &**found;
            backup::stage(path, meta, folder, barrier == Barrier::Fsync)
                .map(Backup::Pending)
                .map_err(|e| e.to_string())
        }
    })
}

/// How a member's target will be kept, decided before any is staged.
enum KeptAs<'m> {
    /// No backup asked for, or nothing there.
    Nothing,
    /// Anything but a regular file: backed up alone.
    Alone,
    /// Its folder could not be made.
    Failed(String),
    /// A regular file (its `lstat`), staged into its folder.
    Staged(&'m Path, Box<(std::fs::Metadata, backup::Folder)>),
}

/// A member's result when its backup could not be made (the directories
/// made for it are removed as [`remove_backup_dirs`] does).
fn backup_failed(member: &Member, why: &str) -> String {
    remove_backup_dirs(member);
    format!("not written: the original could not be backed up ({why})")
}

/// Removes the directories made for `member`'s backup that stayed empty
/// (best effort).
fn remove_backup_dirs(member: &Member) {
    if let Some(run) = member.backup {
        backup::remove_empty_chain(run, &backup::folder_for(member.path, run));
    }
}

/// Step 4, after the data barrier: each copied backup renamed to its name,
/// one barrier for those names ([`commit_backups`]; a linked one is in
/// place already), and anything but a regular file backed up alone,
/// durably. Returns, for each temp in
/// order, where its target's backup went (`None`: none asked for, or
/// nothing there), or why it could not be made.
fn place_backups(
    batch: &str,
    members: &[Member],
    (temps, backups, runs): (&[(usize, Temp)], Vec<Backup>, &[&Path]),
    (barrier, threads): (Barrier, usize),
    stage: &(dyn Fn(Stage) + Sync),
) -> Vec<Result<Option<PathBuf>, String>> {
    let mut out: Vec<Result<Option<PathBuf>, String>> = Vec::with_capacity(backups.len());
    let mut pending: Vec<(usize, Pending)> = Vec::new();
    let mut alone: Vec<(usize, usize)> = Vec::new();
    for (k, ((i, _), backup)) in temps.iter().zip(backups).enumerate() {
        match backup {
            Backup::Pending(p) => pending.push((k, p)),
            Backup::Alone => alone.push((k, *i)),
            Backup::None => {}
        }
        out.push(Ok(None));
    }
    let made = parallel::map(&alone, threads, |&(_, i)| {
        let m = &members[i];
        let run = m
            .backup
            .ok_or_else(|| "internal error: no run folder".to_string())?;
        backup::backup(m.path, run).map_err(|e| e.to_string())
    });
    for (&(k, _), made) in alone.iter().zip(made) {
        out[k] = made.map(Some);
    }
    for (k, made) in commit_backups(pending, runs, (barrier, threads)) {
        out[k] = made.map(Some);
    }
    for ((i, _), made) in temps.iter().zip(&mut out) {
        let m = &members[*i];
        match made {
            Ok(Some(_)) => stage(Stage::BackedUp {
                batch: batch.to_string(),
                path: m.path.to_path_buf(),
            }),
            Ok(None) => {}
            Err(e) => *e = backup_failed(m, e),
        }
    }
    out
}

/// Names the `pending` staged backups that are copies (their data made
/// durable by the batch's data barrier), then one barrier for those names;
/// `runs` are the run folders they are in (a `syncfs` of each covers them).
/// A linked backup is at its name already, made durable by the data
/// barrier. Returns each backup's final path, or why it is not durable.
fn commit_backups(
    pending: Vec<(usize, Pending)>,
    runs: &[&Path],
    (barrier, threads): (Barrier, usize),
) -> Vec<(usize, Result<PathBuf, String>)> {
    let (named, copies): (Vec<_>, Vec<_>) = pending.into_iter().partition(|(_, p)| p.is_named());
    let mut out: Vec<(usize, Result<PathBuf, String>)> = named
        .into_iter()
        .map(|(k, p)| (k, p.commit().map_err(|e| e.to_string())))
        .collect();
    if copies.is_empty() {
        return out;
    }
    // What an fsync barrier flushes, gathered before the backups are
    // consumed: each one's directory and the parents of those made.
    let dirs: Vec<PathBuf> = match barrier {
        Barrier::Fsync => name_dirs(copies.iter().map(|(_, p)| p))
            .into_iter()
            .map(Path::to_path_buf)
            .collect(),
        Barrier::Syncfs => Vec::new(),
    };
    let renamed = parallel_consume(copies, threads, |_, p| {
        p.commit().map_err(|e| e.to_string())
    });
    let names = match barrier {
        Barrier::Syncfs => sync_folders(runs, &mut Vec::new()),
        Barrier::Fsync => fsync_each(&dirs, threads),
    };
    out.extend(renamed.into_iter().map(|(k, made)| {
        let made = made.and_then(|to| match &names {
            Ok(()) => Ok(to),
            Err(e) => Err(format!("kept, but it could not be made durable: {e}")),
        });
        (k, made)
    }));
    out
}

/// `syncfs` once on the filesystem of each of `folders` not in `synced`
/// (a backup run folder is new each run: nothing is mounted below it),
/// adding each one synced.
fn sync_folders(folders: &[&Path], synced: &mut Vec<u64>) -> Result<(), String> {
    for folder in folders {
        let dir = std::fs::File::open(folder)
            .map_err(|e| format!("cannot open {}: {e}", folder.display()))?;
        let device = std::os::unix::fs::MetadataExt::dev(
            &dir.metadata()
                .map_err(|e| format!("cannot read {}: {e}", folder.display()))?,
        );
        if !synced.contains(&device) {
            nix::unistd::syncfs(&dir)
                .map_err(|e| format!("cannot sync the filesystem of {}: {e}", folder.display()))?;
            synced.push(device);
        }
    }
    Ok(())
}

fn commit_temps(
    batch: &str,
    members: &[Member],
    temps: Vec<(usize, Temp)>,
    parents: &[Parent],
    parent_of: &[usize],
    threads: usize,
    stage: &(dyn Fn(Stage) + Sync),
) -> Vec<(usize, Result<(), String>)> {
    parallel_consume(temps, threads, |i, temp| {
        let dir = parents[parent_of[i]].as_ref().map_err(Clone::clone)?;
        dir.commit_temp(temp).map_err(|e| e.to_string())?;
        stage(Stage::Renamed {
            batch: batch.to_string(),
            path: members[i].path.to_path_buf(),
        });
        Ok(())
    })
}

fn name_barrier(
    barrier: Barrier,
    done: &[usize],
    parents: &[Parent],
    parent_of: &[usize],
) -> Result<(), String> {
    match barrier {
        Barrier::Syncfs => {
            sync_filesystems(done.iter().copied(), parents, parent_of, &mut Vec::new())
        }
        Barrier::Fsync => {
            let mut dirs: Vec<usize> = done.iter().map(|&i| parent_of[i]).collect();
            dirs.sort_unstable();
            dirs.dedup();
            for d in dirs {
                let dir = parents[d].as_ref().map_err(Clone::clone)?;
                dir.sync().map_err(|e| e.to_string())?;
            }
            Ok(())
        }
    }
}

/// `syncfs` once on each filesystem holding one of `members`' directories
/// and not in `synced`, adding each one synced.
fn sync_filesystems(
    members: impl Iterator<Item = usize>,
    parents: &[Parent],
    parent_of: &[usize],
    synced: &mut Vec<u64>,
) -> Result<(), String> {
    let mut dirs: Vec<usize> = members.map(|i| parent_of[i]).collect();
    dirs.sort_unstable();
    dirs.dedup();
    for d in dirs {
        let dir = parents[d].as_ref().map_err(Clone::clone)?;
        let device = dir.device().map_err(|e| e.to_string())?;
        if !synced.contains(&device) {
            dir.sync_filesystem().map_err(|e| e.to_string())?;
            synced.push(device);
        }
    }
    Ok(())
}

fn discard(parent: &Parent, temp: Temp) {
    if let Ok(dir) = parent {
        dir.discard_temp(temp);
    }
}

/// [`parallel::map`] of `f` over owned items, each given to `f` once with
/// its number; results in order, each with the item's number.
fn parallel_consume<T: Send, O: Send>(
    items: Vec<(usize, T)>,
    threads: usize,
    f: impl Fn(usize, T) -> Result<O, String> + Sync,
) -> Vec<(usize, Result<O, String>)> {
    let cells: Vec<(usize, Mutex<Option<T>>)> = items
        .into_iter()
        .map(|(n, item)| (n, Mutex::new(Some(item))))
        .collect();
    let out = parallel::map(&cells, threads, |(n, cell)| {
        let item = cell
            .lock()
            .ok()
            .and_then(|mut item| item.take())
            .ok_or_else(|| "internal error: an item was taken twice".to_string())?;
        f(*n, item)
    });
    cells.into_iter().map(|(n, _)| n).zip(out).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect()
    }

    /// A member writing "new\n" with `mode` at each of `paths`, no backup.
    fn new_content_at(paths: &[PathBuf], mode: u32) -> Vec<Member<'_>> {
        paths
            .iter()
            .map(|p| Member {
                path: p,
                content: b"new\n",
                mode,
                backup: None,
            })
            .collect()
    }

    /// `n` files in `ok/`, one below a planted link, one where a directory
    /// stands; `started` as given.
    fn run(
        n: usize,
        started: &mut dyn FnMut() -> Result<(), String>,
    ) -> (tempfile::TempDir, Vec<Result<Applied, String>>) {
        let root = tempfile::tempdir().unwrap();
        let base = root.path().canonicalize().unwrap();
        std::fs::create_dir_all(base.join("ok/blocked")).unwrap();
        std::fs::create_dir(base.join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(base.join("elsewhere"), base.join("link")).unwrap();
        let mut paths: Vec<PathBuf> = (0..n).map(|i| base.join(format!("ok/f{i}"))).collect();
        paths.push(base.join("link/x"));
        paths.push(base.join("ok/blocked"));
        let members = new_content_at(&paths, 0o640);
        let results = write("t:1", &members, 4, &|_| {}, started);
        (root, results)
    }

    /// Two files replaced with a backup first, one whose backup cannot be
    /// made, one without: each backup is durable before its rename, and a
    /// target whose backup failed keeps its content and leaves no temp.
    #[test]
    fn a_target_is_renamed_only_after_its_backup_and_kept_when_that_fails() {
        let root = tempfile::tempdir().unwrap();
        let base = root.path().canonicalize().unwrap();
        std::fs::create_dir(base.join("d")).unwrap();
        let path = |name: &str| base.join("d").join(name);
        for name in ["kept", "lost", "plain"] {
            std::fs::write(path(name), format!("old {name}\n")).unwrap();
        }
        let run = base.join("backups/run");
        // A file where the run folder's parent should be: no backup there.
        std::fs::write(base.join("not-a-dir"), "x").unwrap();
        let bad_run = base.join("not-a-dir/run");
        let (kept, lost, plain) = (path("kept"), path("lost"), path("plain"));
        let members = [
            Member {
                path: &kept,
                content: b"new\n",
                mode: 0o644,
                backup: Some(&run),
            },
            Member {
                path: &lost,
                content: b"new\n",
                mode: 0o644,
                backup: Some(&bad_run),
            },
            Member {
                path: &plain,
                content: b"new\n",
                mode: 0o644,
                backup: None,
            },
        ];
        let seen = Mutex::new(Vec::new());
        let results = write(
            "t:1",
            &members,
            2,
            &|s| seen.lock().unwrap().push(s),
            &mut || Ok(()),
        );
        let backup = results[0].as_ref().unwrap().backup.clone().unwrap();
        assert!(backup.starts_with(&run), "{backup:?}");
        assert_eq!(std::fs::read_to_string(&backup).unwrap(), "old kept\n");
        assert!(
            results[1].as_ref().unwrap_err().contains("backed up"),
            "{results:?}"
        );
        assert_eq!(std::fs::read_to_string(&lost).unwrap(), "old lost\n");
        assert_eq!(results[2].as_ref().unwrap().backup, None);
        for p in [&kept, &plain] {
            assert_eq!(std::fs::read_to_string(p).unwrap(), "new\n");
        }
        assert!(leftovers(&base.join("d")).is_empty());
        let seen = seen.into_inner().unwrap();
        let at = |want: &dyn Fn(&Stage) -> bool| seen.iter().position(want).unwrap();
        let data = at(&|s| matches!(s, Stage::DataBarrier { .. }));
        let backed = at(&|s| matches!(s, Stage::BackedUp { path, .. } if *path == kept));
        let renamed = at(&|s| matches!(s, Stage::Renamed { path, .. } if *path == kept));
        assert!(data < backed && backed < renamed, "{seen:?}");
        assert!(
            !seen
                .iter()
                .any(|s| matches!(s, Stage::Renamed { path, .. } if *path == lost))
        );
    }

    /// Members writing "new" over `paths`, each backed up into `run`.
    fn backed_up<'a>(paths: impl Iterator<Item = &'a PathBuf>, run: &'a Path) -> Vec<Member<'a>> {
        paths
            .map(|p| Member {
                path: p,
                content: b"new\n",
                mode: 0o600,
                backup: Some(run),
            })
            .collect()
    }

    /// Every stead temp below `dir`, at any depth.
    fn leftovers_below(dir: &Path) -> Vec<PathBuf> {
        let mut all = files_below(dir);
        all.retain(|f| f.to_string_lossy().contains(".tmp-"));
        all
    }

    /// Backups count toward the barrier's choice and share its barriers:
    /// 70 replaced files with a backup each (140 files to flush) take the
    /// `syncfs` barrier; each file, in its own directory, keeps its old
    /// content in the run folder, durable before its rename; a link that
    /// stood where a file goes is kept as a link; no temp is left.
    #[test]
    fn backups_share_the_batch_barriers_and_leave_no_temp() {
        let root = tempfile::tempdir().unwrap();
        let base = root.path().canonicalize().unwrap();
        let n = 70;
        let paths: Vec<PathBuf> = (0..n).map(|i| base.join(format!("d{i}/f"))).collect();
        for (i, p) in paths.iter().enumerate() {
            std::fs::create_dir(p.parent().unwrap()).unwrap();
            std::fs::write(p, format!("old {i}\n")).unwrap();
        }
        let linked = base.join("d0/linked");
        std::os::unix::fs::symlink("f", &linked).unwrap();
        let run = base.join("backups/run");
        let members = backed_up(paths.iter().chain([&linked]), &run);
        assert!(members.len() < SYNCFS_MIN_FILES);
        let seen = Mutex::new(Vec::new());
        let results = write(
            "t:1",
            &members,
            4,
            &|s| seen.lock().unwrap().push(s),
            &mut || Ok(()),
        );
        for (i, p) in paths.iter().enumerate() {
            let backup = results[i].as_ref().unwrap().backup.clone().unwrap();
            assert_eq!(backup, run.join(p.strip_prefix("/").unwrap()));
            assert_eq!(
                std::fs::read_to_string(&backup).unwrap(),
                format!("old {i}\n")
            );
            assert_eq!(std::fs::read_to_string(p).unwrap(), "new\n");
        }
        let link_backup = results[n].as_ref().unwrap().backup.clone().unwrap();
        assert_eq!(std::fs::read_link(&link_backup).unwrap(), Path::new("f"));
        assert!(std::fs::symlink_metadata(&linked).unwrap().is_file());
        assert!(
            leftovers_below(&base).is_empty(),
            "{:?}",
            leftovers_below(&base)
        );
        let seen = seen.into_inner().unwrap();
        let at = |want: &dyn Fn(&Stage) -> bool| seen.iter().position(want).unwrap();
        let data = at(&|s| {
            matches!(
                s,
                Stage::DataBarrier {
                    barrier: Barrier::Syncfs,
                    ..
                }
            )
        });
        for p in paths.iter().chain([&linked]) {
            let backed = at(&|s| matches!(s, Stage::BackedUp { path, .. } if path == p));
            let renamed = at(&|s| matches!(s, Stage::Renamed { path, .. } if path == p));
            assert!(data < backed && backed < renamed, "{p:?}: {seen:?}");
        }
    }

    /// Regular files found below `dir`, at any depth.
    fn files_below(dir: &Path) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else {
                    found.push(e.path());
                }
            }
        }
        found
    }

    /// No backup is made before the `started` record: when `started` is
    /// called the run folder holds nothing, and when it fails no backup is
    /// left at all, nor a temp, nor a directory made for one, and every
    /// target keeps its content. Once it is recorded, each backup is linked
    /// at its name before the data barrier (which makes that name durable):
    /// at the barrier the run folder holds every backup by its name, and no
    /// temp. With both barriers.
    #[test]
    fn backups_are_made_only_after_the_started_record() {
        for (n, recorded) in [(3, false), (70, false), (3, true), (70, true)] {
            let root = tempfile::tempdir().unwrap();
            let base = root.path().canonicalize().unwrap();
            let paths: Vec<PathBuf> = (0..n).map(|i| base.join(format!("d{i}/f"))).collect();
            for p in &paths {
                std::fs::create_dir(p.parent().unwrap()).unwrap();
                std::fs::write(p, "old\n").unwrap();
            }
            let run = base.join("backups/run");
            let members = backed_up(paths.iter(), &run);
            let (at_started, at_barrier) = (Mutex::new(None), Mutex::new(None));
            let mut calls = 0;
            let stage = |s: Stage| {
                if matches!(s, Stage::DataBarrier { .. }) {
                    *at_barrier.lock().unwrap() = Some(files_below(&run));
                }
            };
            let results = write("t:1", &members, 4, &stage, &mut || {
                calls += 1;
                *at_started.lock().unwrap() = Some(files_below(&run));
                if recorded {
                    Ok(())
                } else {
                    Err("disk full".into())
                }
            });
            assert_eq!(calls, 1);
            assert_eq!(at_started.into_inner().unwrap(), Some(Vec::new()));
            assert!(leftovers_below(&base).is_empty());
            if recorded {
                let mut named: Vec<PathBuf> = paths
                    .iter()
                    .map(|p| run.join(p.strip_prefix("/").unwrap()))
                    .collect();
                for (r, backup) in results.iter().zip(&named) {
                    assert_eq!(r.as_ref().unwrap().backup.as_ref(), Some(backup));
                }
                let mut seen = at_barrier.into_inner().unwrap().unwrap();
                seen.sort();
                named.sort();
                assert_eq!(seen, named);
                continue;
            }
            assert_eq!(at_barrier.into_inner().unwrap(), None);
            for (p, r) in paths.iter().zip(&results) {
                assert!(r.as_ref().unwrap_err().contains("not started"), "{r:?}");
                assert_eq!(std::fs::read_to_string(p).unwrap(), "old\n");
                assert_eq!(
                    std::fs::symlink_metadata(p).unwrap().nlink(),
                    1,
                    "no second name of {p:?} is left"
                );
            }
            assert!(files_below(&base.join("backups")).is_empty());
            assert!(!run.exists(), "no run folder is made");
        }
    }

    /// A member whose temp fails (its directory is reached through a
    /// link) leaves no backup folder in the run folder, and the others'
    /// backups are made as usual. With one thread and with four.
    #[test]
    fn a_member_whose_temp_fails_leaves_no_backup_folder() {
        for threads in [1, 4] {
            let root = tempfile::tempdir().unwrap();
            let base = root.path().canonicalize().unwrap();
            for dir in ["home/d0", "elsewhere/d1"] {
                std::fs::create_dir_all(base.join(dir)).unwrap();
                std::fs::write(base.join(dir).join("f"), "old\n").unwrap();
            }
            std::os::unix::fs::symlink(base.join("elsewhere"), base.join("linked")).unwrap();
            let paths = [base.join("home/d0/f"), base.join("linked/d1/f")];
            let run = base.join("backups/run");
            let members = backed_up(paths.iter(), &run);
            let results = write("t:1", &members, threads, &|_| {}, &mut || Ok(()));
            let kept = run.join(paths[0].strip_prefix("/").unwrap());
            assert_eq!(results[0].as_ref().unwrap().backup.as_ref(), Some(&kept));
            assert_eq!(std::fs::read_to_string(&kept).unwrap(), "old\n");
            assert!(results[1].as_ref().unwrap_err().contains("linked"));
            let unused = run.join(base.join("linked").strip_prefix("/").unwrap());
            assert!(!unused.exists(), "{} is left", unused.display());
            assert!(unused.parent().unwrap().is_dir(), "d0's chain stays");
            assert_eq!(
                std::fs::read_to_string(base.join("elsewhere/d1/f")).unwrap(),
                "old\n"
            );
        }
    }

    /// A replaced file that has no other name is kept as itself: its
    /// backup is a second name made before the rename, so after it the
    /// backup is the replaced file (same inode, content and mode) and its
    /// only name. A file with another name is copied instead: writing
    /// through that name afterwards does not change the backup. With both
    /// barriers.
    #[test]
    fn a_backup_is_the_replaced_file_unless_it_has_another_name() {
        use std::os::unix::fs::PermissionsExt;
        for n in [3, 70] {
            let root = tempfile::tempdir().unwrap();
            let base = root.path().canonicalize().unwrap();
            let paths: Vec<PathBuf> = (0..n).map(|i| base.join(format!("d{i}/f"))).collect();
            for (i, p) in paths.iter().enumerate() {
                std::fs::create_dir(p.parent().unwrap()).unwrap();
                std::fs::write(p, format!("old {i}\n")).unwrap();
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o640)).unwrap();
            }
            let other_name = base.join("elsewhere");
            std::fs::hard_link(&paths[0], &other_name).unwrap();
            let inodes: Vec<u64> = paths
                .iter()
                .map(|p| std::fs::symlink_metadata(p).unwrap().ino())
                .collect();
            let run = base.join("backups/run");
            let members = backed_up(paths.iter(), &run);
            let results = write("t:1", &members, 4, &|_| {}, &mut || Ok(()));
            for (i, p) in paths.iter().enumerate() {
                let backup = results[i].as_ref().unwrap().backup.clone().unwrap();
                let meta = std::fs::symlink_metadata(&backup).unwrap();
                assert_eq!(
                    std::fs::read_to_string(&backup).unwrap(),
                    format!("old {i}\n")
                );
                assert_eq!(meta.mode() & 0o7777, 0o640, "{backup:?}");
                assert_eq!(std::fs::read_to_string(p).unwrap(), "new\n");
                if i == 0 {
                    assert_ne!(meta.ino(), inodes[0], "a file with another name is copied");
                    assert_eq!(meta.nlink(), 1);
                } else {
                    assert_eq!(meta.ino(), inodes[i], "{backup:?} is the replaced file");
                    assert_eq!(meta.nlink(), 1, "{backup:?} is its only name");
                }
            }
            std::fs::write(&other_name, "changed through the other name\n").unwrap();
            let first = results[0].as_ref().unwrap().backup.clone().unwrap();
            assert_eq!(std::fs::read_to_string(first).unwrap(), "old 0\n");
            assert!(leftovers_below(&base).is_empty());
        }
    }

    /// A temp is created with its mode narrowed by the umask, or, in a
    /// directory with a default ACL, by that ACL whatever the umask (here
    /// `u::r-x,g::r-x,o::---`: 0644 is created 0440). Each file still ends
    /// with exactly its declared mode, with either barrier: a mode the
    /// umask would leave whole must be set all the same.
    #[test]
    fn each_file_ends_with_exactly_its_declared_mode_under_a_default_acl() {
        // system.posix_acl_default: version 2, then (tag, perm, id) entries.
        let entry = |tag: u16, perm: u16| {
            [
                &tag.to_le_bytes()[..],
                &perm.to_le_bytes(),
                &u32::MAX.to_le_bytes(),
            ]
            .concat()
        };
        let acl = [
            2u32.to_le_bytes().to_vec(),
            entry(0x01, 5),
            entry(0x04, 5),
            entry(0x20, 0),
        ]
        .concat();
        let modes = [0o644, 0o600, 0o755, 0o666, 0o4755];
        for n in [modes.len(), SYNCFS_MIN_FILES + 10] {
            let root = tempfile::tempdir().unwrap();
            let base = root.path().canonicalize().unwrap();
            let dir = base.join("d");
            std::fs::create_dir(&dir).unwrap();
            match xattr::set(&dir, "system.posix_acl_default", &acl) {
                Ok(()) => {}
                // A temp dir mounted without ACLs cannot show this case.
                Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {
                    eprintln!("skipped: {} has no POSIX ACLs ({e})", base.display());
                    return;
                }
                Err(e) => panic!("setting a default ACL on {}: {e}", dir.display()),
            }
            let probe = dir.join("probe");
            std::fs::write(&probe, "").unwrap();
            let probed = std::fs::metadata(&probe).unwrap().permissions();
            assert_eq!(
                std::os::unix::fs::PermissionsExt::mode(&probed) & 0o777,
                0o440,
                "the default ACL narrows what is created in the directory"
            );
            let paths: Vec<PathBuf> = (0..n).map(|i| dir.join(format!("f{i}"))).collect();
            let members: Vec<Member> = paths
                .iter()
                .enumerate()
                .map(|(i, p)| Member {
                    path: p,
                    content: b"new\n",
                    mode: modes[i % modes.len()],
                    backup: None,
                })
                .collect();
            let results = write("t:1", &members, 2, &|_| {}, &mut || Ok(()));
            for (i, (r, p)) in results.iter().zip(&paths).enumerate() {
                r.as_ref().unwrap();
                let mode = std::os::unix::fs::PermissionsExt::mode(
                    &std::fs::metadata(p).unwrap().permissions(),
                );
                assert_eq!(mode & 0o7777, modes[i % modes.len()], "{}", p.display());
            }
        }
    }

    #[test]
    fn a_file_that_cannot_be_written_fails_alone_and_leaves_no_temp() {
        for n in [3, SYNCFS_MIN_FILES + 10] {
            let (root, results) = run(n, &mut || Ok(()));
            let base = root.path().canonicalize().unwrap();
            for (i, r) in results[..n].iter().enumerate() {
                let applied = r.as_ref().unwrap();
                assert_eq!(applied.checksum, Some(checksum(b"new\n")));
                let path = base.join(format!("ok/f{i}"));
                assert_eq!(std::fs::read(&path).unwrap(), b"new\n");
                let mode = std::os::unix::fs::PermissionsExt::mode(
                    &std::fs::metadata(&path).unwrap().permissions(),
                );
                assert_eq!(mode & 0o7777, 0o640);
            }
            let link = results[n].as_ref().unwrap_err();
            assert!(link.contains("link"), "{link}");
            assert!(results[n + 1].is_err(), "a directory is never replaced");
            assert!(base.join("ok/blocked").is_dir());
            assert_eq!(
                std::fs::read_dir(base.join("elsewhere")).unwrap().count(),
                0
            );
            assert!(leftovers(&base.join("ok")).is_empty());
        }
    }

    /// Members in sibling directories are opened from their shared
    /// parent: a missing directory (and a missing parent) is made, and a
    /// link above a member's directory is refused as one in its place is,
    /// with nothing written through it.
    #[test]
    fn sibling_directories_are_opened_from_their_parent_and_never_through_a_link() {
        let root = tempfile::tempdir().unwrap();
        let base = root.path().canonicalize().unwrap();
        std::fs::create_dir_all(base.join("home/d0")).unwrap();
        std::fs::create_dir_all(base.join("elsewhere/d2")).unwrap();
        std::os::unix::fs::symlink(base.join("elsewhere"), base.join("linked")).unwrap();
        let paths: Vec<PathBuf> = [
            "home/d0/f",
            "home/d1/f",
            "home/d1/g",
            "linked/d2/f",
            "new/d3/f",
        ]
        .iter()
        .map(|p| base.join(p))
        .collect();
        let members = new_content_at(&paths, 0o600);
        let results = write("t:1", &members, 4, &|_| {}, &mut || Ok(()));
        for i in [0, 1, 2, 4] {
            assert!(
                results[i].is_ok(),
                "{}: {:?}",
                paths[i].display(),
                results[i]
            );
            assert_eq!(std::fs::read(&paths[i]).unwrap(), b"new\n");
        }
        let refused = results[3].as_ref().unwrap_err();
        assert!(refused.contains("linked"), "{refused}");
        assert_eq!(
            std::fs::read_dir(base.join("elsewhere/d2"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn when_the_started_record_fails_nothing_is_renamed_and_no_temp_stays() {
        for n in [3, SYNCFS_MIN_FILES + 10] {
            let mut calls = 0;
            let (root, results) = run(n, &mut || {
                calls += 1;
                Err("disk full".into())
            });
            assert_eq!(calls, 1);
            let base = root.path().canonicalize().unwrap();
            for r in &results[..n] {
                assert!(r.as_ref().unwrap_err().contains("not started: disk full"));
            }
            assert!((0..n).all(|i| !base.join(format!("ok/f{i}")).exists()));
            assert!(leftovers(&base.join("ok")).is_empty());
        }
    }
}
