//! The converged seal: what an apply that found the machine exactly as
//! declared rested on, kept in the state dir so that the next apply can
//! find the same by `lstat` alone, without loading the manifest, the state
//! record or the journal (a steady no-op run of 10 000 files then costs
//! about as much as 10 000 `lstat`s).
//!
//! A seal is written only by an apply whose plan changed nothing and whose
//! record needed no commit, when every declared resource can be vouched for
//! by the stat of its paths ([`crate::resource::kind::ResourceKind::seal_paths`]:
//! files, directories, symlinks, noops; not commands, trees, lines or
//! templates). It names every path that run's result depended on:
//!
//! - the state record and the journal (any run or state command changes
//!   them), the running `stead` binary, and `stead.toml`;
//! - each resource's managed path and the files it reads (a `source`);
//! - every directory above a managed path (a directory swapped for a link
//!   would change where the path leads).
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
//! in between is not sealed.
//!
//! Besides the paths, a seal holds a key: what the run was asked (home,
//! state dir, `--config`, `--profile`) and the machine facts templates and
//! profiles see (hostname, user, distribution, kernel). A seal whose key or
//! any path differs holds nothing, and the run plans in full as always. It
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
use crate::manifest::Manifest;
use crate::stat_cache::RACY_NS;

/// The seal's file in the state dir.
pub const SEAL_FILE: &str = "converged.seal";

/// What a seal file starts with.
const MAGIC: &[u8] = b"stead converged seal\n";

/// The format this build reads and writes (another is no seal).
const FORMAT: u32 = 1;

/// Above this many paths, a check spreads its `lstat`s over threads.
const PARALLEL_FROM: usize = 512;

/// How a sealed path must be found again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
}

impl SealPath {
    /// A path found again only with the same content and stat.
    pub fn content(path: &Path) -> SealPath {
        SealPath {
            path: path.to_path_buf(),
            rule: Rule::Content,
        }
    }

    /// A path found again as the same node (a directory).
    pub fn node(path: &Path) -> SealPath {
        SealPath {
            path: path.to_path_buf(),
            rule: Rule::Node,
        }
    }
}

/// What `lstat` found at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

    /// Whether `self` (now) is what `sealed` was, by `rule`.
    fn same(&self, sealed: &Found, rule: Rule) -> bool {
        match (self, sealed, rule) {
            (_, _, Rule::Content) => self == sealed,
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

/// The key of a seal: the request, where stead keeps things, the machine
/// facts and who runs it.
fn key(layout: &Layout, request: &Request) -> [u8; 32] {
    let facts = crate::resource::Facts::current(layout.home());
    let mut h = blake3::Hasher::new();
    let mut part = |bytes: &[u8]| {
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    part(&FORMAT.to_le_bytes());
    part(env!("CARGO_PKG_VERSION").as_bytes());
    part(layout.home().as_os_str().as_bytes());
    part(layout.state_dir().as_os_str().as_bytes());
    part(request.config.map_or(&[][..], |c| c.as_os_str().as_bytes()));
    part(&[u8::from(request.config.is_some())]);
    part(request.profile.unwrap_or("").as_bytes());
    part(&[u8::from(request.profile.is_some())]);
    part(&nix::unistd::geteuid().as_raw().to_le_bytes());
    part(&serde_json::to_vec(&facts).unwrap_or_default());
    *h.finalize().as_bytes()
}

/// One sealed path as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    path: Vec<u8>,
    rule: Rule,
    found: Found,
}

impl Entry {
    fn path(&self) -> &Path {
        Path::new(OsStr::from_bytes(&self.path))
    }

    fn holds(&self) -> bool {
        Found::at(self.path()).is_some_and(|now| now.same(&self.found, self.rule))
    }
}

/// A seal as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stored {
    format: u32,
    key: [u8; 32],
    serial: u64,
    unchanged: u64,
    entries: Vec<Entry>,
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
        let stored: Stored = postcard::from_bytes(payload).ok()?;
        (stored.format == FORMAT).then_some(Seal(stored))
    }

    /// The state serial the seal was made at, if the state record is still
    /// the one sealed (cheap: one `lstat`; the lock notes the serial).
    pub fn serial_if_state_unchanged(&self, layout: &Layout) -> Option<u64> {
        let state = layout.state_file();
        self.0
            .entries
            .iter()
            .find(|e| e.path() == state)
            .filter(|e| e.holds())
            .map(|_| self.0.serial)
    }

    /// Whether the seal still holds for `request`: same key, and every
    /// path found again by its rule (`jobs` threads `lstat` them). Call it
    /// under the lock: a run that holds it then may skip planning.
    pub fn holds(&self, layout: &Layout, request: &Request, jobs: usize) -> Option<Hit> {
        if self.0.key != key(layout, request) {
            return None;
        }
        let entries = &self.0.entries;
        let all_hold = if entries.len() < PARALLEL_FROM || jobs <= 1 {
            entries.iter().all(Entry::holds)
        } else {
            let chunk = entries.len().div_ceil(jobs);
            std::thread::scope(|s| {
                let checks: Vec<_> = entries
                    .chunks(chunk)
                    .map(|part| s.spawn(move || part.iter().all(Entry::holds)))
                    .collect();
                checks.into_iter().all(|c| c.join().unwrap_or(false))
            })
        };
        all_hold.then_some(Hit {
            serial: self.0.serial,
            unchanged: usize::try_from(self.0.unchanged).unwrap_or(usize::MAX),
            paths: entries.len(),
        })
    }
}

/// A seal in the making: what a plan rests on, read before it was made.
#[derive(Debug, Clone)]
pub struct Draft {
    key: [u8; 32],
    serial: u64,
    start_ns: i128,
    paths: Vec<SealPath>,
    /// What each [`Rule::Node`] path was before the plan (by index).
    before: Vec<Option<Found>>,
}

impl Draft {
    /// Starts a seal for a plan of `manifest` about to be made at
    /// `start_ns` on the state at `serial`; `None` when a resource cannot
    /// be vouched for by the stat of its paths (it is planned in full every
    /// run). Reads the directories now, before the plan.
    pub fn begin(
        layout: &Layout,
        request: &Request,
        manifest: &Manifest,
        serial: u64,
        start_ns: i128,
    ) -> Option<Draft> {
        let mut paths = vec![
            SealPath::content(&layout.state_file()),
            SealPath::content(&layout.state_dir().join(crate::journal::JOURNAL_FILE)),
            SealPath::content(&std::env::current_exe().ok()?),
            SealPath::content(&manifest.path),
        ];
        let mut seen: HashSet<PathBuf> = HashSet::new();
        let mut with_ancestors = |path: &Path, skip: usize, paths: &mut Vec<SealPath>| {
            for dir in path.ancestors().skip(skip) {
                if !seen.insert(dir.to_path_buf()) {
                    break;
                }
                paths.push(SealPath::node(dir));
            }
        };
        for resource in &manifest.resources {
            let kind = crate::resource::registry::get(resource.spec.kind());
            paths.extend(kind.seal_paths(&resource.spec)?);
            if let Some(managed) = resource.spec.path() {
                with_ancestors(managed, 1, &mut paths);
            }
        }
        // The links the load followed decided where the paths lead: each
        // must still be the same link (a link's target cannot change in
        // place; a new one is a new inode).
        for link in &manifest.followed_links {
            with_ancestors(link, 0, &mut paths);
        }
        let mut unique = HashSet::new();
        paths.retain(|p| unique.insert(p.clone()));
        let before = paths
            .iter()
            .map(|p| match p.rule {
                Rule::Node => Found::at(&p.path),
                Rule::Content => None,
            })
            .collect();
        Some(Draft {
            key: key(layout, request),
            serial,
            start_ns,
            paths,
            before,
        })
    }

    /// Seals the unchanged plan of `unchanged` resources the draft was begun
    /// for, if every path is settled: a file changed within the racy window
    /// or a directory that moved since the draft began leaves no seal
    /// (`Ok(false)`, and an older seal is removed). Call it under the lock,
    /// after the run recorded nothing.
    pub fn seal(&self, layout: &Layout, unchanged: usize) -> Result<bool, FsError> {
        let mut entries = Vec::with_capacity(self.paths.len());
        for (p, before) in self.paths.iter().zip(&self.before) {
            let Some(found) = Found::at(&p.path) else {
                return remove(layout).map(|()| false);
            };
            let settled = match (p.rule, before) {
                (Rule::Content, _) => found.settled_before(self.start_ns),
                (Rule::Node, Some(before)) => found.same(before, Rule::Node),
                (Rule::Node, None) => false,
            };
            if !settled {
                return remove(layout).map(|()| false);
            }
            entries.push(Entry {
                path: p.path.as_os_str().as_bytes().to_vec(),
                rule: p.rule,
                found,
            });
        }
        let stored = Stored {
            format: FORMAT,
            key: self.key,
            serial: self.serial,
            unchanged: unchanged as u64,
            entries,
        };
        let payload = postcard::to_stdvec(&stored).unwrap_or_default();
        let mut bytes = Vec::with_capacity(MAGIC.len() + payload.len() + 32);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&payload);
        bytes.extend_from_slice(blake3::hash(&payload).as_bytes());
        fsutil::atomic_write(&layout.state_dir().join(SEAL_FILE), &bytes, 0o600)?;
        Ok(true)
    }

    /// The paths the draft rests on.
    pub fn paths(&self) -> &[SealPath] {
        &self.paths
    }
}

/// Removes the seal (nothing to remove is fine): the run is about to
/// change something, or could not seal what it found.
pub fn remove(layout: &Layout) -> Result<(), FsError> {
    let path = layout.state_dir().join(SEAL_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(FsError::new("cannot remove", &path, e)),
    }
}
