//! The converged seal: what an apply that found the machine exactly as
//! declared rested on, kept in the state dir so that the next apply can
//! find the same by `lstat` alone, without loading the manifest, the state
//! record or the journal (a steady no-op run of 10 000 files then costs
//! about as much as 10 000 `lstat`s).
//!
//! A seal is written only by an apply whose plan changed nothing and whose
//! record needed no commit, when every declared resource can be vouched for
//! by the stat of its paths ([`crate::resource::kind::ResourceKind::seal_paths`]:
//! files, directories, symlinks, line edits, noops, execs by their `creates`
//! marker; not guarded execs, trees or templates). It names every path that
//! run's result depended on:
//!
//! - the state record and the journal (any run or state command changes
//!   them), the running `stead` binary, and `stead.toml`;
//! - each resource's managed path and the files it reads (a `source`);
//! - every directory above a managed path (a directory swapped for a link
//!   would change where the path leads), and every link the load followed
//!   to reach a managed path, with the directories above it.
//!
//! Each path is found again by one of two [`Rule`]s. [`Rule::Content`]
//! compares every stat field, times included; such a path is sealed only
//! when its mtime and ctime are older than the run's start by the racy
//! window ([`crate::stat_cache::RACY_NS`]), so that a change made during or
//! just before the run, in the same timestamp tick, cannot hide behind equal
//! times (ctime cannot be set back, not even by `touch -d`). [`Rule::Node`]
//! (directories, whose times move with their entries) compares type,
//! permissions, owner, inode and device, which are values, not times: they
//! are read before the plan and again when sealing, and a path that moved
//! in between is not sealed. (A directory made anew may get the inode
//! number of the one it replaced; what is in it is checked by its own
//! paths' times. A link is never compared as a node: a new link with a
//! reused inode number would look the same, so a link is compared by every
//! field and sealed only once settled, whatever its rule.)
//!
//! Besides the paths, a seal holds a key: what the run was asked (home,
//! state dir, `--config`, `--profile`) and the machine facts templates and
//! profiles see (hostname, user, distribution, kernel). A seal whose key
//! differs, or whose paths that every plan rests on (the record, the
//! journal, the binary, `stead.toml`, a directory above a managed path, a
//! followed link) differ, holds nothing, and the run plans in full as
//! always. Each of a resource's own paths names that resource (a path two
//! resources rest on names neither): when only such paths differ, the
//! manifest, the record and every other path are as they were when the
//! whole plan was empty, so the run plans only those resources and what
//! waits for them, and counts the rest unchanged ([`Check::Drifted`]). It
//! is only a cache: a missing, unreadable, corrupt or foreign file is no
//! seal, and a run that writes anything removes it first.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil::{self, FsError};
use crate::layout::Layout;
use crate::stat_cache::RACY_NS;

/// The seal's file in the state dir.
pub const SEAL_FILE: &str = "converged.seal";

/// Where a removed seal goes, to be overwritten in place by the next seal
/// ([`crate::spare`]): moving it aside is a rename, where removing it made
/// the filesystem drop and free a file of 64 bytes per path (0.4–0.8 ms at
/// 10 000 files, on the repair that removes it). Never read as a seal.
pub const SEAL_SPARE: &str = "converged.seal.prev";

/// What a seal file starts with (then its payload and the payload's
/// BLAKE3 digest).
pub const MAGIC: &[u8] = b"stead converged seal\n";

/// The format this build reads and writes (another is no seal). 3: each
/// path names the resource whose plan rests on it, if only one does. 4:
/// the digest of the compiled manifest the sealing run loaded, if any. 5:
/// fixed-width records after the head, read where they lie (see `Head`).
pub const FORMAT: u32 = 5;

/// The file type bits of a mode.
const TYPE_MASK: u32 = 0o170000;

/// The file type bits of a symbolic link.
const LINK_TYPE: u32 = 0o120000;

/// Above this many paths, a check spreads its `lstat`s over threads.
const PARALLEL_FROM: usize = 512;

/// How a sealed path must be found again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// Every stat field as sealed: the same content, link target, mode and
    /// owner (files, links, and the files stead reads).
    Content,
    /// The same node with the same type, permissions and owner
    /// (directories).
    Node,
}

/// A path a resource's unchanged plan rests on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SealPath {
    /// The path (absolute).
    pub path: PathBuf,
    /// How it must be found again.
    pub rule: Rule,
    /// The resource whose plan alone rests on it, by its number in the ids
    /// given to [`Draft::begin`]; `None` for a path every plan rests on
    /// (the record, the manifest, a directory above managed paths).
    pub owner: Option<u32>,
}

impl SealPath {
    /// A path found again only with the same content and stat.
    pub fn content(path: &Path) -> SealPath {
        SealPath {
            path: path.to_path_buf(),
            rule: Rule::Content,
            owner: None,
        }
    }

    /// A path found again as the same node (a directory).
    pub fn node(path: &Path) -> SealPath {
        SealPath {
            path: path.to_path_buf(),
            rule: Rule::Node,
            owner: None,
        }
    }

    /// The same path, as resource `owner`'s own.
    pub fn owned_by(self, owner: u32) -> SealPath {
        SealPath {
            owner: Some(owner),
            ..self
        }
    }
}

/// What `lstat` found at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    /// Nothing is there.
    Missing,
    /// Something is.
    Present {
        mode: u32,
        uid: u32,
        gid: u32,
        ino: u64,
        dev: u64,
        size: u64,
        mtime_ns: i128,
        ctime_ns: i128,
    },
}

impl Found {
    /// What is at `path` now; `None` when `lstat` fails otherwise than by
    /// the path missing (then nothing about it can be vouched for).
    fn at(path: &Path) -> Option<Found> {
        match std::fs::symlink_metadata(path) {
            Ok(meta) => {
                let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
                Some(Found::Present {
                    mode: meta.mode(),
                    uid: meta.uid(),
                    gid: meta.gid(),
                    ino: meta.ino(),
                    dev: meta.dev(),
                    size: meta.size(),
                    mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
                    ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(Found::Missing),
            Err(_) => None,
        }
    }

    /// What a `stat` found (the same fields as [`Found::at`]).
    fn of_stat(st: &nix::sys::stat::FileStat) -> Found {
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Found::Present {
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            ino: st.st_ino,
            dev: st.st_dev,
            size: u64::try_from(st.st_size).unwrap_or(u64::MAX),
            mtime_ns: ns(st.st_mtime, st.st_mtime_nsec),
            ctime_ns: ns(st.st_ctime, st.st_ctime_nsec),
        }
    }

    /// Whether it is a symbolic link.
    fn is_link(&self) -> bool {
        matches!(self, Found::Present { mode, .. } if mode & TYPE_MASK == LINK_TYPE)
    }

    /// Whether `self` (now) is what `sealed` was, by `rule`. A link is
    /// always compared by content: one made anew may get the inode number
    /// of the link it replaced, but not its ctime.
    fn same(&self, sealed: &Found, rule: Rule) -> bool {
        match (self, sealed, rule) {
            (_, _, Rule::Content) => self == sealed,
            _ if sealed.is_link() => self == sealed,
            (
                Found::Present {
                    mode,
                    uid,
                    gid,
                    ino,
                    dev,
                    ..
                },
                Found::Present {
                    mode: m,
                    uid: u,
                    gid: g,
                    ino: i,
                    dev: d,
                    ..
                },
                Rule::Node,
            ) => (mode, uid, gid, ino, dev) == (m, u, g, i, d),
            (Found::Missing, Found::Missing, Rule::Node) => true,
            _ => false,
        }
    }

    /// Whether nothing about it changed within the racy window before
    /// `start_ns` (a missing path has no times to doubt).
    fn settled_before(&self, start_ns: i128) -> bool {
        match self {
            Found::Missing => true,
            Found::Present {
                mtime_ns, ctime_ns, ..
            } => *mtime_ns + RACY_NS <= start_ns && *ctime_ns + RACY_NS <= start_ns,
        }
    }
}

/// What the run was asked, as far as a plan depends on it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Request<'a> {
    /// `--config`, if given.
    pub config: Option<&'a Path>,
    /// `--profile`, if given.
    pub profile: Option<&'a str>,
}

/// The key of a seal: a digest of what the run was asked, where stead
/// keeps things, who runs it and the machine facts (see
/// [`crate::converge::seal_key`]); a seal holds only for its own key.
pub type Key = [u8; 32];

/// The head of a seal as stored: what the run was, its directories and
/// owners, and how long each of the three regions that follow it is.
///
/// After the head come, raw, the records (one [`RECORD`]-byte record per
/// sealed name, each directory's names one after the other), the names
/// (one after the other; each record says where its own ends) and the
/// owners' ids (one after the other; [`Head::owner_ends`] says where each
/// ends). Fixed-width records are read where they lie: decoding a
/// postcard record per name took about 1 ms of a 10 000-file no-op run
/// (docs/performance.md).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct Head {
    format: u32,
    key: Key,
    serial: u64,
    unchanged: u64,
    /// The sealed directories in record order: a path with no parent, `/`,
    /// is the directory `/` named `.`. A check opens each directory once
    /// and `fstatat`s its names, so the kernel walks the directory's path
    /// once, not once per file.
    groups: Vec<Group>,
    /// Where each owner's id ends in the owners region. (One string each
    /// would be an allocation per resource on every check.)
    owner_ends: Vec<u32>,
    /// The digest of the compiled form of the manifest the sealing run
    /// loaded ([`crate::manifest::compiled`]), if it made one.
    compiled: Option<[u8; 32]>,
    records_len: u64,
    names_len: u64,
    owners_len: u64,
}

/// One sealed directory: its path, and where its records end (they start
/// where the previous group's end).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct Group {
    dir: Vec<u8>,
    end: u32,
}

impl Group {
    fn dir(&self) -> &Path {
        Path::new(OsStr::from_bytes(&self.dir))
    }
}

/// A [`Head`] as written, borrowing what the draft holds (the same
/// encoding: serde writes a slice as it writes a vector).
#[derive(Serialize)]
struct HeadRef<'a> {
    format: u32,
    key: Key,
    serial: u64,
    unchanged: u64,
    groups: Vec<GroupRef<'a>>,
    owner_ends: &'a [u32],
    compiled: Option<[u8; 32]>,
    records_len: u64,
    names_len: u64,
    owners_len: u64,
}

/// A [`Group`] as written.
#[derive(Serialize)]
struct GroupRef<'a> {
    dir: &'a [u8],
    end: u32,
}

/// The bytes of one sealed name's record, little-endian: where its name
/// ends (u32), its owner (u32, [`NO_OWNER`] for none), its rule (u8, 0
/// content, 1 node), whether something was found (u8), two zero bytes,
/// then what was found: mode, uid, gid (u32 each), inode, device, size
/// (u64 each), mtime and ctime (i64 nanoseconds since the epoch each: a
/// time outside 1677–2262 is not sealed).
const RECORD: usize = 64;

/// One sealed name, read from its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Named<'a> {
    name: &'a [u8],
    rule: Rule,
    found: Found,
    /// The resource whose plan alone rests on it ([`SealPath::owner`]), by
    /// its number among the owners.
    owner: Option<u32>,
}

/// `rec[at..at + N]`, if it is there.
fn field<const N: usize>(rec: &[u8], at: usize) -> Option<[u8; N]> {
    rec.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// One name's record; `None` for a time an i64 of nanoseconds cannot hold.
fn record_of(name_end: u32, owner: Option<u32>, rule: Rule, found: &Found) -> Option<[u8; RECORD]> {
    let mut rec = [0u8; RECORD];
    rec[0..4].copy_from_slice(&name_end.to_le_bytes());
    rec[4..8].copy_from_slice(&owner.unwrap_or(NO_OWNER).to_le_bytes());
    rec[8] = match rule {
        Rule::Content => 0,
        Rule::Node => 1,
    };
    if let Found::Present {
        mode,
        uid,
        gid,
        ino,
        dev,
        size,
        mtime_ns,
        ctime_ns,
    } = *found
    {
        rec[9] = 1;
        rec[12..16].copy_from_slice(&mode.to_le_bytes());
        rec[16..20].copy_from_slice(&uid.to_le_bytes());
        rec[20..24].copy_from_slice(&gid.to_le_bytes());
        rec[24..32].copy_from_slice(&ino.to_le_bytes());
        rec[32..40].copy_from_slice(&dev.to_le_bytes());
        rec[40..48].copy_from_slice(&size.to_le_bytes());
        rec[48..56].copy_from_slice(&i64::try_from(mtime_ns).ok()?.to_le_bytes());
        rec[56..64].copy_from_slice(&i64::try_from(ctime_ns).ok()?.to_le_bytes());
    }
    Some(rec)
}

/// A record's name end, owner, rule and what was found; `None` when a
/// byte that names a choice names none.
fn read_record(rec: &[u8]) -> Option<(u32, Option<u32>, Rule, Found)> {
    let name_end = u32::from_le_bytes(field(rec, 0)?);
    let owner = u32::from_le_bytes(field(rec, 4)?);
    let rule = match rec.get(8)? {
        0 => Rule::Content,
        1 => Rule::Node,
        _ => return None,
    };
    let found = match rec.get(9)? {
        0 => Found::Missing,
        1 => Found::Present {
            mode: u32::from_le_bytes(field(rec, 12)?),
            uid: u32::from_le_bytes(field(rec, 16)?),
            gid: u32::from_le_bytes(field(rec, 20)?),
            ino: u64::from_le_bytes(field(rec, 24)?),
            dev: u64::from_le_bytes(field(rec, 32)?),
            size: u64::from_le_bytes(field(rec, 40)?),
            mtime_ns: i64::from_le_bytes(field(rec, 48)?).into(),
            ctime_ns: i64::from_le_bytes(field(rec, 56)?).into(),
        },
        _ => return None,
    };
    Some((name_end, (owner != NO_OWNER).then_some(owner), rule, found))
}

/// Whether `ends` never go down and the last is `last` (none: `last` is 0).
fn ends_in_order(ends: impl IntoIterator<Item = usize>, last: usize) -> bool {
    let mut prev = 0;
    ends.into_iter()
        .all(|end| std::mem::replace(&mut prev, end) <= end)
        && prev == last
}

/// A seal as read: its head, and the file's bytes the regions lie in.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stored {
    head: Head,
    bytes: Vec<u8>,
    records: std::ops::Range<usize>,
    names: std::ops::Range<usize>,
    owners: std::ops::Range<usize>,
}

/// What [`Stored::scan`] found: the names not found again, by their
/// record's number, and whether the scan stopped at one.
#[derive(Debug, Default)]
struct Scan {
    changed: Vec<usize>,
    stopped: bool,
}

impl Stored {
    /// The seal in `payload` (the file past its magic line, checksum off),
    /// whole and consistent: every record readable, the names' ends in
    /// order within the names, the groups' ends in order ending at the
    /// last record, every owner named.
    fn parse(bytes: Vec<u8>, payload: std::ops::Range<usize>) -> Option<Stored> {
        let body = bytes.get(payload.clone())?;
        let (format, _) = postcard::take_from_bytes::<u32>(body).ok()?;
        if format != FORMAT {
            return None;
        }
        let (head, rest) = postcard::take_from_bytes::<Head>(body).ok()?;
        let len = |n: u64| usize::try_from(n).ok();
        let records_start = payload.end - rest.len();
        let names_start = records_start.checked_add(len(head.records_len)?)?;
        let owners_start = names_start.checked_add(len(head.names_len)?)?;
        if owners_start.checked_add(len(head.owners_len)?)? != payload.end {
            return None;
        }
        let stored = Stored {
            records: records_start..names_start,
            names: names_start..owners_start,
            owners: owners_start..payload.end,
            head,
            bytes,
        };
        stored.consistent().then_some(stored)
    }

    fn consistent(&self) -> bool {
        if !self.records.len().is_multiple_of(RECORD) {
            return false;
        }
        let n = self.paths();
        let owners = self.head.owner_ends.len();
        let mut names_end = 0;
        for i in 0..n {
            match read_record(self.record(i)) {
                Some((end, owner, _, _))
                    if end as usize >= names_end && owner.is_none_or(|o| (o as usize) < owners) =>
                {
                    names_end = end as usize
                }
                _ => return false,
            }
        }
        let owners_end = self.head.owner_ends.last().map_or(0, |&e| e as usize);
        // Every record in a group, so every one is checked.
        ends_in_order(self.head.groups.iter().map(|g| g.end as usize), n)
            && names_end == self.names.len()
            && ends_in_order(self.head.owner_ends.iter().map(|&e| e as usize), owners_end)
            && owners_end <= self.owners.len()
    }

    fn paths(&self) -> usize {
        self.records.len() / RECORD
    }

    /// Record `i`'s bytes (empty past the last).
    fn record(&self, i: usize) -> &[u8] {
        let Some(at) = i.checked_mul(RECORD) else {
            return &[];
        };
        let records = self.bytes.get(self.records.clone()).unwrap_or_default();
        records
            .get(at..at.saturating_add(RECORD))
            .unwrap_or_default()
    }

    /// Name `i`, read from its record (`None` only for a record
    /// [`Stored::parse`] would have refused).
    fn named(&self, i: usize) -> Option<Named<'_>> {
        let (end, owner, rule, found) = read_record(self.record(i))?;
        let start = match i.checked_sub(1) {
            Some(prev) => u32::from_le_bytes(field(self.record(prev), 0)?),
            None => 0,
        };
        let names = self.bytes.get(self.names.clone())?;
        Some(Named {
            name: names.get(start as usize..end as usize)?,
            rule,
            found,
            owner,
        })
    }

    /// The records of group `gi`.
    fn group_records(&self, gi: usize) -> std::ops::Range<usize> {
        let start = gi
            .checked_sub(1)
            .and_then(|p| self.head.groups.get(p))
            .map_or(0, |g| g.end as usize);
        let end = self.head.groups.get(gi).map_or(start, |g| g.end as usize);
        start..end
    }

    /// Owner `i`'s id.
    fn owner(&self, i: u32) -> Option<&str> {
        let ends = &self.head.owner_ends;
        let i = i as usize;
        let end = *ends.get(i)? as usize;
        let start = i.checked_sub(1).map_or(0, |p| ends[p] as usize);
        let owners = self.bytes.get(self.owners.clone())?;
        std::str::from_utf8(owners.get(start..end)?).ok()
    }

    /// Adds to `changed` the names in `range` (by record number, all in
    /// group `gi`) not found again by their rule, until one that `stop`
    /// says ends the check; returns whether one did.
    fn changed(
        &self,
        gi: usize,
        range: std::ops::Range<usize>,
        stop: &dyn Fn(&Named) -> bool,
        changed: &mut Vec<usize>,
    ) -> bool {
        use nix::fcntl::{AtFlags, OFlag};
        let Some(group) = self.head.groups.get(gi) else {
            return true;
        };
        // Links on the way are followed, as an `lstat` of the whole path
        // follows them: the sealed stat of each name decides, and the
        // directories and links above a managed path are sealed names too.
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let dir = match nix::fcntl::open(group.dir(), flags, nix::sys::stat::Mode::empty()) {
            Ok(fd) => Some(fd),
            // No directory: only names sealed as missing can still be.
            Err(nix::errno::Errno::ENOENT) => None,
            Err(_) => return true,
        };
        for i in range {
            let Some(n) = self.named(i) else {
                return true;
            };
            let now = match &dir {
                None => Found::Missing,
                Some(dir) => match nix::sys::stat::fstatat(
                    dir,
                    OsStr::from_bytes(n.name),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                ) {
                    Ok(st) => Found::of_stat(&st),
                    Err(nix::errno::Errno::ENOENT) => Found::Missing,
                    Err(_) => return true,
                },
            };
            if !now.same(&n.found, n.rule) {
                changed.push(i);
                if stop(&n) {
                    return true;
                }
            }
        }
        false
    }

    /// Whether every path is found again.
    fn all_hold(&self, jobs: usize) -> bool {
        let scan = self.scan(jobs, &|_| true);
        scan.changed.is_empty() && !scan.stopped
    }

    /// Checks every path on `jobs` threads (for many), until a changed one
    /// that `stop` says ends the check.
    fn scan(&self, jobs: usize, stop: &(dyn Fn(&Named) -> bool + Sync)) -> Scan {
        const PIECE: usize = 256;
        let tasks: Vec<(usize, std::ops::Range<usize>)> = (0..self.head.groups.len())
            .flat_map(|gi| {
                let all = self.group_records(gi);
                all.clone()
                    .step_by(PIECE)
                    .map(move |at| (gi, at..(at + PIECE).min(all.end)))
            })
            .collect();
        let check = |(gi, range): &(usize, std::ops::Range<usize>), scan: &mut Scan| {
            scan.stopped |= self.changed(*gi, range.clone(), stop, &mut scan.changed);
        };
        if self.paths() < PARALLEL_FROM || jobs <= 1 {
            let mut scan = Scan::default();
            for task in &tasks {
                check(task, &mut scan);
                if scan.stopped {
                    break;
                }
            }
            return scan;
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        let stopped = std::sync::atomic::AtomicBool::new(false);
        let work = || {
            use std::sync::atomic::Ordering::Relaxed;
            let mut scan = Scan::default();
            while !stopped.load(Relaxed) {
                let Some(task) = tasks.get(next.fetch_add(1, Relaxed)) else {
                    break;
                };
                check(task, &mut scan);
                if scan.stopped {
                    stopped.store(true, Relaxed);
                }
            }
            scan
        };
        std::thread::scope(|s| {
            let threads: Vec<_> = (0..jobs.min(tasks.len())).map(|_| s.spawn(work)).collect();
            let mut all = Scan::default();
            for t in threads {
                // A thread that panicked found nothing it can vouch for.
                let part = t.join().unwrap_or(Scan {
                    changed: Vec::new(),
                    stopped: true,
                });
                all.stopped |= part.stopped;
                all.changed.extend(part.changed);
            }
            all
        })
    }

    /// The resources that own the changed names, or `None` when one is not
    /// a single resource's own (a change there can touch any plan).
    fn owners_of(&self, changed: &[usize]) -> Option<HashSet<String>> {
        changed
            .iter()
            .map(|&i| {
                let owner = self.named(i)?.owner?;
                self.owner(owner).map(str::to_string)
            })
            .collect()
    }
}

/// What a holding seal tells the run that needs no plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// The state record's serial (unchanged).
    pub serial: u64,
    /// Resources the sealed plan found unchanged.
    pub unchanged: usize,
    /// Paths found as sealed.
    pub paths: usize,
    /// The digest of the compiled manifest the seal was made with
    /// ([`Drift::compiled`]).
    pub compiled: Option<[u8; 32]>,
}

/// What a seal whose paths did not all hold still vouches for: every path
/// but those of a few resources was found as sealed, so those resources
/// (and what waits for them) are all a run must plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// The resources that own a changed path.
    pub resources: HashSet<String>,
    /// Resources the sealed plan found unchanged (every declared one).
    pub sealed: usize,
    /// Paths not found as sealed.
    pub changed_paths: usize,
    /// The digest of the compiled manifest the seal was made with: the run
    /// may read it instead of parsing `stead.toml`
    /// ([`crate::manifest::compiled`]).
    pub compiled: Option<[u8; 32]>,
}

/// What a check of a seal found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Every path as sealed: nothing to plan.
    Holds(Hit),
    /// Only paths a single resource each rests on changed.
    Drifted(Drift),
    /// Another key, or a path every plan rests on changed: plan in full.
    Broken,
}

/// A seal read from the state dir (not yet checked).
#[derive(Debug, Clone)]
pub struct Seal(Stored);

impl Seal {
    /// The seal in `layout`'s state dir, if there is a usable one.
    pub fn read(layout: &Layout) -> Option<Seal> {
        let bytes = crate::ownfile::read(&layout.state_dir().join(SEAL_FILE)).ok()?;
        let body = bytes.strip_prefix(MAGIC)?;
        let (payload, sum) = body.split_at_checked(body.len().checked_sub(32)?)?;
        if blake3::hash(payload).as_bytes() != sum {
            return None;
        }
        let payload = MAGIC.len()..MAGIC.len() + payload.len();
        Stored::parse(bytes, payload).map(Seal)
    }

    /// The state serial the seal was made at, if the state record is still
    /// the one sealed (cheap: one `lstat`; the lock notes the serial).
    pub fn serial_if_state_unchanged(&self, layout: &Layout) -> Option<u64> {
        let state = layout.state_file();
        let (dir, name) = split(&state);
        let stored = &self.0;
        let held = stored
            .head
            .groups
            .iter()
            .position(|g| g.dir() == dir)
            .is_some_and(|gi| {
                stored
                    .group_records(gi)
                    .find(|&i| stored.named(i).is_some_and(|n| n.name == name.as_bytes()))
                    .is_some_and(|at| !stored.changed(gi, at..at + 1, &|_| true, &mut Vec::new()))
            });
        held.then_some(stored.head.serial)
    }

    /// The key it was made for.
    pub fn key(&self) -> Key {
        self.0.head.key
    }

    /// Whether the seal still holds for a run of `key`: the same key, and
    /// every path found again by its rule (`jobs` threads `lstat` them).
    /// Call it under the lock: a run that holds it then may skip planning.
    pub fn holds(&self, key: &Key, jobs: usize) -> Option<Hit> {
        if self.0.head.key != *key {
            return None;
        }
        self.0.all_hold(jobs).then(|| self.hit())
    }

    /// [`Seal::holds`], and when it does not: whether only paths that one
    /// resource each rests on changed ([`Check::Drifted`]). Call it under
    /// the lock, as `holds`.
    pub fn check(&self, key: &Key, jobs: usize) -> Check {
        if self.0.head.key != *key {
            return Check::Broken;
        }
        let scan = self.0.scan(jobs, &|n| n.owner.is_none());
        if scan.stopped {
            return Check::Broken;
        }
        if scan.changed.is_empty() {
            return Check::Holds(self.hit());
        }
        match self.0.owners_of(&scan.changed) {
            Some(resources) => Check::Drifted(Drift {
                resources,
                sealed: self.hit().unchanged,
                changed_paths: scan.changed.len(),
                compiled: self.0.head.compiled,
            }),
            None => Check::Broken,
        }
    }

    fn hit(&self) -> Hit {
        Hit {
            serial: self.0.head.serial,
            unchanged: usize::try_from(self.0.head.unchanged).unwrap_or(usize::MAX),
            paths: self.0.paths(),
            compiled: self.0.head.compiled,
        }
    }
}

/// A seal in the making: what a plan rests on, read before it was made.
#[derive(Debug, Clone)]
pub struct Draft {
    key: Key,
    serial: u64,
    start_ns: i128,
    paths: PackedPaths,
    /// What each [`Rule::Node`] path found was before the plan, by its
    /// index in `paths`, ascending. Only the nodes: an entry for every path
    /// was 8 MB of nothing at 100 000 files, held through the whole run.
    before: Vec<(usize, Found)>,
    /// The owners' ids, packed as a seal stores them ([`Head::owner_ends`]).
    owner_bytes: Vec<u8>,
    owner_ends: Vec<u32>,
    /// Its names passed 4 GB: it seals nothing.
    too_large: bool,
    /// [`Head::compiled`].
    compiled: Option<[u8; 32]>,
}

/// A draft's paths, each once, in the order given, packed by directory as
/// a seal stores them: each directory's bytes once, and each path as its
/// directory's number, its name and its rule. A `PathBuf` per path (about
/// 80 bytes with its `SealPath`) was 8 MB at 100 000 files, held from
/// before the plan to the end of the run.
#[derive(Debug, Clone, Default)]
struct PackedPaths {
    /// The directories, numbered in the order they first appear.
    dirs: Vec<Box<[u8]>>,
    /// Every path's name, one after the other.
    names: Vec<u8>,
    /// One per path, in order.
    entries: Vec<PackedPath>,
}

/// 16 bytes: a path of a 100 000-file manifest is held from before the
/// plan to the end of the run.
#[derive(Debug, Clone, Copy)]
struct PackedPath {
    dir: u32,
    /// Where its name ends in [`PackedPaths::names`] (it starts where the
    /// previous one ends). A draft past 4 GB of names seals nothing.
    name_end: u32,
    /// [`SealPath::owner`], [`NO_OWNER`] for none.
    owner: u32,
    rule: Rule,
}

/// [`PackedPath::owner`] of a path no single resource owns.
const NO_OWNER: u32 = u32::MAX;

impl PackedPath {
    fn owner(&self) -> Option<u32> {
        (self.owner != NO_OWNER).then_some(self.owner)
    }
}

impl PackedPaths {
    fn len(&self) -> usize {
        self.entries.len()
    }

    /// Path `i`'s directory, name and rule (its owner is `entries[i].owner`).
    fn get(&self, i: usize) -> (&Path, &OsStr, Rule) {
        let entry = self.entries[i];
        let start = i
            .checked_sub(1)
            .map_or(0, |p| self.entries[p].name_end as usize);
        let dir = &self.dirs[entry.dir as usize];
        (
            Path::new(OsStr::from_bytes(dir)),
            // (Empty past 4 GB, where the draft seals nothing.)
            OsStr::from_bytes(
                self.names
                    .get(start..entry.name_end as usize)
                    .unwrap_or_default(),
            ),
            entry.rule,
        )
    }

    /// A group per directory, in the order they first appear: where each
    /// group's paths end, and the paths' numbers in group order (each
    /// directory's in the order given).
    fn group_order(&self) -> (Vec<u32>, Vec<u32>) {
        let mut ends = vec![0u32; self.dirs.len()];
        for entry in &self.entries {
            ends[entry.dir as usize] += 1;
        }
        let mut next = Vec::with_capacity(self.dirs.len());
        let mut total = 0u32;
        for end in &mut ends {
            next.push(total);
            total += *end;
            *end = total;
        }
        let mut order = vec![0u32; self.len()];
        for (i, entry) in self.entries.iter().enumerate() {
            let slot = &mut next[entry.dir as usize];
            order[*slot as usize] = i as u32;
            *slot += 1;
        }
        (ends, order)
    }

    /// Path `i` whole, made in `buf` (the inverse of [`split`]).
    fn path_into<'b>(&self, i: usize, buf: &'b mut PathBuf) -> &'b Path {
        let (dir, name, _) = self.get(i);
        buf.clear();
        buf.push(dir);
        if name != "." {
            buf.push(name);
        }
        buf
    }
}

impl Draft {
    /// Starts a seal of `paths` for a plan about to be made at `start_ns`
    /// on the state at `serial`, by a run of `key`; `owners` are the ids
    /// the paths' [`SealPath::owner`] numbers name. Reads the
    /// [`Rule::Node`] paths now, before the plan. A path given twice keeps
    /// an owner only if both name the same one.
    pub fn begin<'i>(
        key: Key,
        serial: u64,
        start_ns: i128,
        paths: Vec<SealPath>,
        owners: impl IntoIterator<Item = &'i str>,
    ) -> Draft {
        let mut unique: std::collections::HashMap<(&Path, Rule), usize> =
            std::collections::HashMap::with_capacity(paths.len());
        let mut dir_of: std::collections::HashMap<&Path, u32> = Default::default();
        let mut packed = PackedPaths::default();
        let mut before = Vec::new();
        let mut too_large = false;
        for p in &paths {
            if let Some(&at) = unique.get(&(p.path.as_path(), p.rule)) {
                let entry = &mut packed.entries[at];
                if entry.owner() != p.owner {
                    entry.owner = NO_OWNER;
                }
                continue;
            }
            unique.insert((&p.path, p.rule), packed.entries.len());
            let (dir, name) = split(&p.path);
            let number = *dir_of.entry(dir).or_insert_with(|| {
                packed.dirs.push(Box::from(dir.as_os_str().as_bytes()));
                // As many directories as paths at most: 2³² paths would
                // not fit in memory.
                (packed.dirs.len() - 1) as u32
            });
            packed.names.extend_from_slice(name.as_bytes());
            if p.rule == Rule::Node
                && let Some(found) = Found::at(&p.path)
            {
                before.push((packed.entries.len(), found));
            }
            packed.entries.push(PackedPath {
                dir: number,
                name_end: u32::try_from(packed.names.len()).unwrap_or_else(|_| {
                    too_large = true;
                    0
                }),
                rule: p.rule,
                owner: p.owner.unwrap_or(NO_OWNER),
            });
        }
        packed.names.shrink_to_fit();
        packed.entries.shrink_to_fit();
        let (mut owner_bytes, mut owner_ends) = (Vec::new(), Vec::new());
        for id in owners {
            owner_bytes.extend_from_slice(id.as_bytes());
            // Past 4 GB an id reads as none (`Stored::owner`).
            owner_ends.push(u32::try_from(owner_bytes.len()).unwrap_or(u32::MAX));
        }
        // Held through the plan: without the slack of their growth.
        owner_bytes.shrink_to_fit();
        owner_ends.shrink_to_fit();
        Draft {
            key,
            serial,
            start_ns,
            paths: packed,
            before,
            owner_bytes,
            owner_ends,
            too_large,
            compiled: None,
        }
    }

    /// The draft, naming the compiled form of the manifest its plan was
    /// made from ([`crate::manifest::compiled::refresh`]).
    pub fn with_compiled(self, compiled: Option<[u8; 32]>) -> Draft {
        Draft { compiled, ..self }
    }

    /// Seals the unchanged plan of `unchanged` resources the draft was begun
    /// for, if every path is settled: a file changed within the racy window
    /// or a directory that moved since the draft began leaves no seal
    /// (`Ok(false)`, and an older seal is removed). Call it under the lock,
    /// after the run recorded nothing.
    pub fn seal(&self, layout: &Layout, unchanged: usize) -> Result<bool, FsError> {
        if self.too_large {
            return remove(layout).map(|()| false);
        }
        let dirs = &self.paths.dirs;
        let (ends, order) = self.paths.group_order();
        let head = HeadRef {
            format: FORMAT,
            key: self.key,
            serial: self.serial,
            unchanged: unchanged as u64,
            groups: dirs
                .iter()
                .zip(&ends)
                .map(|(dir, &end)| GroupRef { dir, end })
                .collect(),
            owner_ends: &self.owner_ends,
            compiled: self.compiled,
            records_len: (order.len() * RECORD) as u64,
            names_len: self.paths.names.len() as u64,
            owners_len: self.owner_bytes.len() as u64,
        };
        // The payload is made in place after the magic line: at 100 000
        // files a copy of it was 6 MB more at the run's peak.
        let mut bytes = match postcard::to_extend(&head, MAGIC.to_vec()) {
            Ok(b) => b,
            Err(_) => return remove(layout).map(|()| false),
        };
        let records_at = bytes.len();
        let names_at = records_at + order.len() * RECORD;
        bytes.resize(names_at + self.paths.names.len(), 0);
        bytes.extend_from_slice(&self.owner_bytes);
        let (records, names) = bytes[records_at..].split_at_mut(names_at - records_at);
        let names = &mut names[..self.paths.names.len()];
        let mut name_end = 0usize;
        let mut buf = PathBuf::new();
        for (k, &i) in order.iter().enumerate() {
            let i = i as usize;
            let Some(found) = Found::at(self.paths.path_into(i, &mut buf)) else {
                return remove(layout).map(|()| false);
            };
            let (_, name, rule) = self.paths.get(i);
            let before = self
                .before
                .binary_search_by_key(&i, |(at, _)| *at)
                .ok()
                .map(|at| &self.before[at].1);
            let settled = match (rule, before) {
                (Rule::Content, _) => found.settled_before(self.start_ns),
                (Rule::Node, Some(before)) if found.is_link() => {
                    found == *before && found.settled_before(self.start_ns)
                }
                (Rule::Node, Some(before)) => found.same(before, Rule::Node),
                (Rule::Node, None) => false,
            };
            if !settled {
                return remove(layout).map(|()| false);
            }
            let name = name.as_bytes();
            let start = name_end;
            name_end += name.len();
            names[start..name_end].copy_from_slice(name);
            let owner = self.paths.entries[i].owner();
            // Within 4 GB of names: a draft past it is `too_large`.
            let Some(rec) = record_of(name_end as u32, owner, rule, &found) else {
                return remove(layout).map(|()| false);
            };
            records[k * RECORD..(k + 1) * RECORD].copy_from_slice(&rec);
        }
        let sum = blake3::hash(&bytes[MAGIC.len()..]);
        bytes.extend_from_slice(sum.as_bytes());
        let dir = layout.state_dir();
        crate::spare::write(
            &dir.join(SEAL_FILE),
            &dir.join(SEAL_SPARE),
            0o600,
            &mut |_| {},
            &mut |out| out.write_all(&bytes),
        )?;
        Ok(true)
    }

    /// The paths the draft rests on (made anew: the draft keeps them
    /// packed).
    pub fn paths(&self) -> Vec<SealPath> {
        let mut buf = PathBuf::new();
        (0..self.paths.len())
            .map(|i| SealPath {
                path: self.paths.path_into(i, &mut buf).to_path_buf(),
                rule: self.paths.get(i).2,
                owner: self.paths.entries[i].owner(),
            })
            .collect()
    }
}

/// The directory a path is checked in and its name there (`/` is `.` in
/// itself).
fn split(path: &Path) -> (&Path, &OsStr) {
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => (dir, name),
        _ => (path, OsStr::new(".")),
    }
}

/// Removes the seal (nothing to remove is fine): the run is about to
/// change something, or could not seal what it found. It is moved aside
/// to [`SEAL_SPARE`] for the next seal to be written into; when that
/// cannot be done, it is removed.
pub fn remove(layout: &Layout) -> Result<(), FsError> {
    let dir = layout.state_dir();
    let seal = dir.join(SEAL_FILE);
    match std::fs::rename(&seal, dir.join(SEAL_SPARE)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(_) => fsutil::remove_if_present(&seal),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_keeps_its_owner_only_when_every_mention_names_the_same_one() {
        let given = [
            SealPath::content(Path::new("/h/a")).owned_by(0),
            SealPath::content(Path::new("/h/a")).owned_by(0),
            SealPath::content(Path::new("/h/b")).owned_by(0),
            SealPath::content(Path::new("/h/b")).owned_by(1),
            SealPath::node(Path::new("/h/d")).owned_by(1),
            SealPath::node(Path::new("/h/d")),
            SealPath::node(Path::new("/h/e")),
            SealPath::node(Path::new("/h/e")).owned_by(1),
            // The same path by another rule is another entry.
            SealPath::node(Path::new("/h/a")).owned_by(1),
        ];
        let draft = Draft::begin([0; 32], 1, 0, given.to_vec(), ["file.x", "dir.y"]);
        let owners: Vec<Option<u32>> = draft.paths().iter().map(|p| p.owner).collect();
        assert_eq!(owners, [Some(0), None, None, None, Some(1)]);
        let (_dir, layout) = sealed_dir();
        let draft = Draft::begin(
            [0; 32],
            1,
            i128::MAX / 2,
            vec![SealPath::content(&layout.home().join("f")).owned_by(1)],
            ["file.x", "dir.y"],
        );
        assert!(draft.seal(&layout, 2).unwrap());
        let stored = Seal::read(&layout).unwrap().0;
        assert_eq!(stored.owner(0), Some("file.x"));
        assert_eq!(stored.owner(1), Some("dir.y"));
        assert_eq!(stored.owner(2), None);
    }

    #[test]
    fn a_draft_keeps_each_path_once_in_order_packed_by_directory() {
        let given = [
            SealPath::content(Path::new("/h/d/a")),
            SealPath::node(Path::new("/h/d")),
            SealPath::content(Path::new("/h/d/b")),
            SealPath::content(Path::new("/h/d/a")),
            SealPath::node(Path::new("/h/d/a")),
            SealPath::node(Path::new("/")),
            SealPath::content(Path::new("/h/e/a")),
        ];
        let draft = Draft::begin([0; 32], 1, 0, given.to_vec(), []);
        let expected: Vec<SealPath> = [0, 1, 2, 4, 5, 6]
            .iter()
            .map(|&i| given[i].clone())
            .collect();
        assert_eq!(draft.paths(), expected);
        // /h/d, /h, / and /h/e: each directory's bytes once.
        assert_eq!(draft.paths.dirs.len(), 4);
        assert_eq!(draft.paths.names, b"adba.a");
        // /h/d's three paths first, then /h's, /'s and /h/e's.
        assert_eq!(
            draft.paths.group_order(),
            (vec![3, 4, 5, 6], vec![0, 2, 3, 1, 4, 5])
        );
    }

    /// A home with files `f`, `g` and `d/h`, and a layout whose state dir
    /// is inside it.
    fn sealed_dir() -> (tempfile::TempDir, Layout) {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().canonicalize().unwrap();
        for (path, text) in [("f", "f\n"), ("g", "g\n"), ("d/h", "h\n")] {
            std::fs::create_dir_all(home.join(path).parent().unwrap()).unwrap();
            std::fs::write(home.join(path), text).unwrap();
        }
        let layout = Layout::new(&home, Some(home.join("state")));
        std::fs::create_dir_all(layout.state_dir()).unwrap();
        (dir, layout)
    }

    #[test]
    fn a_removed_seal_is_moved_aside_and_the_next_one_is_written_into_it() {
        use std::os::unix::fs::MetadataExt;
        let (_dir, layout) = sealed_dir();
        let seal = layout.state_dir().join(SEAL_FILE);
        let spare = layout.state_dir().join(SEAL_SPARE);
        seal_mixed(&layout);
        let first = std::fs::read(&seal).unwrap();
        let ino = std::fs::metadata(&seal).unwrap().ino();
        remove(&layout).unwrap();
        assert!(!seal.exists());
        assert!(
            Seal::read(&layout).is_none(),
            "a seal moved aside is no seal"
        );
        assert_eq!(std::fs::read(&spare).unwrap(), first);
        remove(&layout).unwrap();
        // The next seal goes into the file moved aside, and is whole.
        seal_mixed(&layout);
        assert!(Seal::read(&layout).is_some());
        assert_eq!(std::fs::read(&seal).unwrap(), first);
        assert_eq!(std::fs::metadata(&seal).unwrap().ino(), ino);
        assert!(!spare.exists(), "the spare became the seal");
        // A spare that is a directory is left; the seal is removed instead.
        std::fs::create_dir(&spare).unwrap();
        std::fs::write(spare.join("x"), "x").unwrap();
        remove(&layout).unwrap();
        assert!(!seal.exists());
        assert!(spare.join("x").exists());
    }

    /// Seals `f`, `d/h` (owned by `file.h`), `d` (a node) and `g` (owned by
    /// `file.g`), mixing directories, as sealed long after they were
    /// written.
    fn seal_mixed(layout: &Layout) {
        let home = layout.home();
        let paths = vec![
            SealPath::content(&home.join("f")),
            SealPath::content(&home.join("d/h")).owned_by(0),
            SealPath::node(&home.join("d")),
            SealPath::content(&home.join("g")).owned_by(1),
        ];
        let draft = Draft::begin([7; 32], 3, i128::MAX / 2, paths, ["file.h", "file.g"]);
        assert!(draft.seal(layout, 4).unwrap());
    }

    #[test]
    fn a_seal_read_back_holds_and_names_the_owner_of_a_changed_path() {
        let (_dir, layout) = sealed_dir();
        seal_mixed(&layout);
        let seal = Seal::read(&layout).unwrap();
        assert_eq!(seal.key(), [7; 32]);
        let hit = seal.holds(&[7; 32], 1).unwrap();
        assert_eq!((hit.serial, hit.unchanged, hit.paths), (3, 4, 4));
        assert!(seal.holds(&[8; 32], 1).is_none());

        std::fs::write(layout.home().join("d/h"), "edited\n").unwrap();
        match seal.check(&[7; 32], 1) {
            Check::Drifted(drift) => {
                assert_eq!(drift.resources, HashSet::from(["file.h".to_string()]));
                assert_eq!(drift.changed_paths, 1);
            }
            other => panic!("{other:?}"),
        }
        // A path no single resource owns changed: plan everything.
        std::fs::write(layout.home().join("f"), "edited\n").unwrap();
        assert_eq!(seal.check(&[7; 32], 1), Check::Broken);
    }

    #[test]
    fn a_seal_of_another_format_or_cut_or_with_a_byte_changed_is_no_seal_or_one_that_does_not_hold()
    {
        let (_dir, layout) = sealed_dir();
        seal_mixed(&layout);
        let path = layout.state_dir().join(SEAL_FILE);
        let good = std::fs::read(&path).unwrap();
        let payload = MAGIC.len()..good.len() - 32;
        let records = Seal::read(&layout).unwrap().0.records;
        let resealed = |payload: &[u8]| {
            let mut bytes = MAGIC.to_vec();
            bytes.extend_from_slice(payload);
            bytes.extend_from_slice(blake3::hash(payload).as_bytes());
            bytes
        };
        // Format 4's seal, as an earlier stead wrote it: its head only.
        let mut old = postcard::to_stdvec(&4u32).unwrap();
        old.extend_from_slice(&good[payload.start + 1..payload.end]);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("format 4", resealed(&old)),
            ("cut short", resealed(&good[payload.start..payload.end - 1])),
            ("one byte more", {
                let mut p = good[payload.clone()].to_vec();
                p.push(0);
                resealed(&p)
            }),
            ("checksum off", {
                let mut b = good.clone();
                b[payload.start + 3] ^= 1;
                b
            }),
        ];
        for (what, bytes) in cases {
            std::fs::write(&path, &bytes).unwrap();
            assert!(Seal::read(&layout).is_none(), "{what}");
        }
        // Every byte of the payload changed in turn, checksum made good:
        // never a panic; and a changed stat field of a path sealed by
        // content (every field compared) leaves no seal that holds.
        for at in payload.clone() {
            let mut p = good[payload.clone()].to_vec();
            p[at - payload.start] ^= 0xff;
            std::fs::write(&path, resealed(&p)).unwrap();
            let Some(seal) = Seal::read(&layout) else {
                continue;
            };
            let _ = seal.check(&seal.key(), 1);
            let _ = seal.serial_if_state_unchanged(&layout);
            if records.contains(&at) {
                let rec = at - (at - records.start) % RECORD;
                let (content, present) = (good[rec + 8] == 0, good[rec + 9] == 1);
                if content && present && at - rec >= 12 {
                    assert!(seal.holds(&seal.key(), 1).is_none(), "byte {at}");
                }
            }
        }
        std::fs::write(&path, &good).unwrap();
        assert!(Seal::read(&layout).is_some());
    }

    #[test]
    fn a_record_keeps_every_field_it_is_given() {
        let found = Found::Present {
            mode: 0o100644,
            uid: u32::MAX,
            gid: 7,
            ino: u64::MAX,
            dev: 1 << 40,
            size: 12,
            mtime_ns: -1_000_000_000_123,
            ctime_ns: i128::from(i64::MAX),
        };
        for (owner, rule, found) in [
            (Some(3), Rule::Node, found),
            (None, Rule::Content, Found::Missing),
        ] {
            let rec = record_of(42, owner, rule, &found).unwrap();
            assert_eq!(read_record(&rec), Some((42, owner, rule, found)));
        }
        // A time past 2262 in nanoseconds: no record, so no seal.
        let far = Found::Present {
            mode: 0o100644,
            uid: 0,
            gid: 0,
            ino: 1,
            dev: 1,
            size: 0,
            mtime_ns: i128::from(i64::MAX) + 1,
            ctime_ns: 0,
        };
        assert_eq!(record_of(1, None, Rule::Content, &far), None);
        let mut bad = record_of(1, None, Rule::Content, &Found::Missing).unwrap();
        bad[8] = 2;
        assert_eq!(read_record(&bad), None);
        assert_eq!(read_record(&bad[..RECORD - 1]), None);
    }
}
