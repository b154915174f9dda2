//! The stat cache: what a plan saw of each managed file whose content it
//! read and found as declared, so that the next plan can trust the file by
//! its `lstat` alone, as git's index does.
//!
//! A file is trusted without being read only when all of these hold:
//! - its size, mtime, ctime, inode, device, mode and owner are exactly those
//!   recorded (any write changes mtime or ctime; `touch -d` setting mtime
//!   back still moves ctime, which nobody can set);
//! - the recorded content checksum is the declared one and the one stead
//!   recorded as written;
//! - the racy-git rule: both its mtime and ctime were at least
//!   [`RACY_NS`] older than the moment it was verified. A change made in
//!   the same timestamp tick as an earlier one can leave every stat field
//!   equal; a file that had not changed for [`RACY_NS`] before it was read
//!   can only change afterwards in a later tick, which its ctime shows.
//!
//! The cache is only a cache: a missing, unreadable or corrupt file is an
//! empty cache, and `stead apply --verify` ignores it. Only an apply writes
//! it (a plan writes nothing); it never holds content, only checksums that
//! `state.json` already holds.

use std::collections::BTreeMap;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::fsutil::{self, FsError};

/// The cache's file in the state dir.
pub const STAT_CACHE_FILE: &str = "stat_cache.json";

/// The cache format this build reads and writes (another is ignored).
const FORMAT: u32 = 1;

/// How long before its verification a file must have last changed to be
/// trusted later (the racy-git window): generous for filesystems with
/// coarse timestamps (FAT: 2 s).
pub const RACY_NS: i128 = 2_000_000_000;

/// The `lstat` fields that change when a file's content is changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i128,
    /// Status change time, ns since the epoch.
    pub ctime_ns: i128,
    /// Inode number.
    pub ino: u64,
    /// Device.
    pub dev: u64,
    /// Type and permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
}

impl Stamp {
    /// The stamp of `meta` (from `symlink_metadata`).
    pub fn of(meta: &Metadata) -> Stamp {
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Stamp {
            size: meta.size(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
            ino: meta.ino(),
            dev: meta.dev(),
            mode: meta.mode(),
            uid: meta.uid(),
        }
    }
}

/// What was verified of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Its stamp when it was read.
    pub stamp: Stamp,
    /// `blake3:<hex>` of the content read (the declared one).
    pub checksum: String,
    /// When it was verified (taken before the read), ns since the epoch.
    pub verified_ns: i128,
}

impl Entry {
    /// Whether a file stamped `now` still holds `checksum`, by this entry.
    pub fn vouches(&self, now: &Stamp, checksum: &str) -> bool {
        self.stamp == *now
            && self.checksum == checksum
            && self.stamp.mtime_ns + RACY_NS <= self.verified_ns
            && self.stamp.ctime_ns + RACY_NS <= self.verified_ns
    }
}

/// Entries by path as stored in state (`~/x`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatCache {
    format: u32,
    entries: BTreeMap<String, Entry>,
}

impl StatCache {
    /// An empty cache (trusts nothing).
    pub fn empty() -> StatCache {
        StatCache {
            format: FORMAT,
            entries: BTreeMap::new(),
        }
    }

    /// The cache in `state_dir`; empty when there is none or it cannot be
    /// used (it is only a cache: every file is then read).
    pub fn load(state_dir: &Path) -> StatCache {
        crate::ownfile::read(&state_dir.join(STAT_CACHE_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice::<StatCache>(&b).ok())
            .filter(|c| c.format == FORMAT)
            .unwrap_or_else(StatCache::empty)
    }

    /// A cache of `entries`.
    pub fn of(entries: impl IntoIterator<Item = (String, Entry)>) -> StatCache {
        StatCache {
            format: FORMAT,
            entries: entries.into_iter().collect(),
        }
    }

    /// Writes it into `state_dir` (atomically, 0600).
    pub fn save(&self, state_dir: &Path) -> Result<(), FsError> {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        fsutil::atomic_write(&state_dir.join(STAT_CACHE_FILE), &bytes, 0o600)
    }

    /// The entry for `key`, if any.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
    }

    /// The entry for `key` with the cache's own copy of the key.
    pub fn get_key_value(&self, key: &str) -> Option<(&str, &Entry)> {
        self.entries
            .get_key_value(key)
            .map(|(k, e)| (k.as_str(), e))
    }

    /// How many files it vouches for.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when it has no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Now, ns since the epoch (the system clock).
pub fn now_ns() -> i128 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i128::try_from(d.as_nanos()).unwrap_or(i128::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp() -> Stamp {
        Stamp {
            size: 3,
            mtime_ns: 10 * 1_000_000_000,
            ctime_ns: 10 * 1_000_000_000,
            ino: 7,
            dev: 1,
            mode: 0o100644,
            uid: 0,
        }
    }

    fn entry(verified_s: i128) -> Entry {
        Entry {
            stamp: stamp(),
            checksum: "blake3:a".into(),
            verified_ns: verified_s * 1_000_000_000,
        }
    }

    #[test]
    fn only_an_exact_stamp_and_checksum_verified_after_the_racy_window_vouch() {
        let e = entry(12);
        assert!(e.vouches(&stamp(), "blake3:a"));
        assert!(!e.vouches(&stamp(), "blake3:b"), "another declared content");
        for changed in [
            Stamp { size: 4, ..stamp() },
            Stamp {
                mtime_ns: stamp().mtime_ns + 1,
                ..stamp()
            },
            Stamp {
                ctime_ns: stamp().ctime_ns + 1,
                ..stamp()
            },
            Stamp { ino: 8, ..stamp() },
            Stamp {
                mode: 0o100600,
                ..stamp()
            },
            Stamp { uid: 1, ..stamp() },
        ] {
            assert!(!e.vouches(&changed, "blake3:a"), "{changed:?}");
        }
        // Verified less than the window after its last change: racy.
        assert!(!entry(11).vouches(&stamp(), "blake3:a"));
        let mut late_ctime = entry(12);
        late_ctime.stamp.ctime_ns += 1;
        assert!(!late_ctime.vouches(&late_ctime.stamp.clone(), "blake3:a"));
    }

    #[test]
    fn a_missing_corrupt_or_foreign_cache_is_empty_and_a_saved_one_loads() {
        let dir = tempfile::tempdir().unwrap();
        assert!(StatCache::load(dir.path()).is_empty());
        std::fs::write(dir.path().join(STAT_CACHE_FILE), "{ not json").unwrap();
        assert!(StatCache::load(dir.path()).is_empty());
        std::fs::write(
            dir.path().join(STAT_CACHE_FILE),
            r#"{"format": 99, "entries": {}}"#,
        )
        .unwrap();
        assert!(StatCache::load(dir.path()).is_empty());
        let cache = StatCache::of([("~/a".to_string(), entry(12))]);
        cache.save(dir.path()).unwrap();
        assert_eq!(StatCache::load(dir.path()), cache);
    }
}
