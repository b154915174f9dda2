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

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::checksum::Checksum;
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

/// What was verified of one file, packed: times in `i64` ns (years 1678 to
/// 2262; a file stamped outside them is not cached, only read every run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    ino: u64,
    dev: u64,
    mode: u32,
    uid: u32,
    verified_ns: i64,
    checksum: Checksum,
}

/// [`Entry`] as `stat_cache.json` holds it.
#[derive(Serialize, Deserialize)]
struct EntryText {
    stamp: Stamp,
    checksum: String,
    verified_ns: i128,
}

impl Entry {
    /// What was verified of a file stamped `stamp` holding `checksum`
    /// (`blake3:<hex>`), verified at `verified_ns`; `None` when a time is
    /// outside what the cache holds (the file is then not cached).
    pub fn new(stamp: Stamp, checksum: &str, verified_ns: i128) -> Option<Entry> {
        Some(Entry {
            size: stamp.size,
            mtime_ns: i64::try_from(stamp.mtime_ns).ok()?,
            ctime_ns: i64::try_from(stamp.ctime_ns).ok()?,
            ino: stamp.ino,
            dev: stamp.dev,
            mode: stamp.mode,
            uid: stamp.uid,
            verified_ns: i64::try_from(verified_ns).ok()?,
            checksum: Checksum::of(checksum),
        })
    }

    /// Its stamp when it was read.
    pub fn stamp(&self) -> Stamp {
        Stamp {
            size: self.size,
            mtime_ns: i128::from(self.mtime_ns),
            ctime_ns: i128::from(self.ctime_ns),
            ino: self.ino,
            dev: self.dev,
            mode: self.mode,
            uid: self.uid,
        }
    }

    /// `blake3:<hex>` of the content read (the declared one).
    pub fn checksum(&self) -> String {
        self.checksum.text()
    }

    /// When it was verified (taken before the read), ns since the epoch.
    pub fn verified_ns(&self) -> i128 {
        i128::from(self.verified_ns)
    }

    /// Whether a file stamped `now` still holds `checksum`, by this entry.
    pub fn vouches(&self, now: &Stamp, checksum: &str) -> bool {
        let stamp = self.stamp();
        stamp == *now
            && self.checksum.is(checksum)
            && stamp.mtime_ns + RACY_NS <= self.verified_ns()
            && stamp.ctime_ns + RACY_NS <= self.verified_ns()
    }

    fn text(&self) -> EntryText {
        EntryText {
            stamp: self.stamp(),
            checksum: self.checksum(),
            verified_ns: self.verified_ns(),
        }
    }
}

/// Entries by path as stored in state (`~/x`), sorted by path: a sorted
/// vector, not a `BTreeMap`, whose half-filled nodes of 11 entries cost
/// twice the entries themselves at 100 000 files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatCache {
    format: u32,
    entries: Vec<(Box<str>, Entry)>,
}

/// Sorts `entries` by key, equal keys in the order given, without the
/// scratch buffer of a stable sort (up to 8 MB at 100 000 entries, at the
/// peak of a run that reads every file): a permutation of their indices is
/// sorted, then applied in place, cycle by cycle.
pub(crate) fn sort_by_key_in_place(entries: &mut [(Box<str>, Entry)]) {
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_unstable_by(|&a, &b| entries[a].0.cmp(&entries[b].0).then(a.cmp(&b)));
    // Position k takes the entry at order[k]; a placed position is marked.
    const PLACED: usize = usize::MAX;
    for start in 0..order.len() {
        if order[start] == PLACED {
            continue;
        }
        let mut at = start;
        loop {
            let from = order[at];
            order[at] = PLACED;
            if from == start {
                break;
            }
            entries.swap(at, from);
            at = from;
        }
    }
}

impl StatCache {
    /// An empty cache (trusts nothing).
    pub fn empty() -> StatCache {
        StatCache {
            format: FORMAT,
            entries: Vec::new(),
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

    /// A cache of `entries` (the last one wins for a path given twice).
    pub fn of(entries: impl IntoIterator<Item = (String, Entry)>) -> StatCache {
        let entries = entries.into_iter();
        // Sized by the iterator's upper bound (the plan's filter over what
        // it kept has one): grown by doubling, the vector held up to twice
        // its entries, and copied them at each step.
        let mut packed = Vec::with_capacity(entries.size_hint().1.unwrap_or(0));
        packed.extend(entries.map(|(k, e)| (k.into_boxed_str(), e)));
        StatCache::sorted(FORMAT, packed)
    }

    /// A cache of `entries` already in its own form (the last one wins
    /// for a path given twice), in the same vector.
    pub fn of_packed(entries: Vec<(Box<str>, Entry)>) -> StatCache {
        StatCache::sorted(FORMAT, entries)
    }

    fn sorted(format: u32, mut entries: Vec<(Box<str>, Entry)>) -> StatCache {
        // Stable, so among equal paths the last given stays last; keep it.
        sort_by_key_in_place(&mut entries);
        // In place: a second vector was a second copy of every entry at the
        // run's peak (10 MB at 100 000 files). `dedup_by` drops the later of
        // two equal keys, so the later's entry is swapped into the one kept.
        entries.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                std::mem::swap(&mut later.1, &mut kept.1);
            }
            same
        });
        entries.shrink_to_fit();
        StatCache { format, entries }
    }

    /// Writes it into `state_dir` (atomically, 0600).
    pub fn save(&self, state_dir: &Path) -> Result<(), FsError> {
        // Straight to the file: at 100 000 files the text is 26 MB.
        let path = state_dir.join(STAT_CACHE_FILE);
        fsutil::atomic_write_with(&path, 0o600, &mut |_| {}, &mut |out| {
            serde_json::to_writer(out, self).map_err(std::io::Error::from)
        })
    }

    /// The entry for `key`, if any.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.get_key_value(key).map(|(_, e)| e)
    }

    /// The entry for `key` with the cache's own copy of the key.
    pub fn get_key_value(&self, key: &str) -> Option<(&str, &Entry)> {
        self.entries
            .binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .map(|i| (&*self.entries[i].0, &self.entries[i].1))
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

impl Serialize for StatCache {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        struct Entries<'a>(&'a [(Box<str>, Entry)]);
        impl Serialize for Entries<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_map(self.0.iter().map(|(k, e)| (k, e.text())))
            }
        }
        let mut out = serializer.serialize_struct("StatCache", 2)?;
        out.serialize_field("format", &self.format)?;
        out.serialize_field("entries", &Entries(&self.entries))?;
        out.end()
    }
}

impl<'de> Deserialize<'de> for StatCache {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<StatCache, D::Error> {
        /// The entries straight into a vector: no map built on the way.
        struct Entries(Vec<(Box<str>, Entry)>);
        impl<'de> Deserialize<'de> for Entries {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Entries, D::Error> {
                struct Visit;
                impl<'de> serde::de::Visitor<'de> for Visit {
                    type Value = Entries;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("a map of paths to entries")
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        mut map: A,
                    ) -> Result<Entries, A::Error> {
                        let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0));
                        while let Some((key, text)) = map.next_entry::<String, EntryText>()? {
                            // An entry this build cannot hold is left out:
                            // that file is read, as an uncached one is.
                            if let Some(entry) =
                                Entry::new(text.stamp, &text.checksum, text.verified_ns)
                            {
                                out.push((key.into_boxed_str(), entry));
                            }
                        }
                        Ok(Entries(out))
                    }
                }
                d.deserialize_map(Visit)
            }
        }
        #[derive(Deserialize)]
        struct Text {
            format: u32,
            entries: Entries,
        }
        let text = Text::deserialize(deserializer)?;
        Ok(StatCache::sorted(text.format, text.entries.0))
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
pub(crate) mod tests {
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

    /// An entry of a fixed stamp and checksum, verified at `verified_s`.
    pub(crate) fn entry(verified_s: i128) -> Entry {
        Entry::new(stamp(), "blake3:a", verified_s * 1_000_000_000).unwrap()
    }

    proptest::proptest! {
        #[test]
        fn the_in_place_sort_orders_as_a_stable_sort_does(
            keys in proptest::collection::vec(0u8..12, 0..200)
        ) {
            // Equal keys told apart by when they were verified: their order.
            let given: Vec<(Box<str>, Entry)> = keys
                .iter()
                .enumerate()
                .map(|(i, k)| (Box::from(format!("~/{k}")), entry(i as i128)))
                .collect();
            let mut stable = given.clone();
            stable.sort_by(|a, b| a.0.cmp(&b.0));
            let mut in_place = given;
            sort_by_key_in_place(&mut in_place);
            proptest::prop_assert_eq!(in_place, stable);
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
        let late = Stamp {
            ctime_ns: stamp().ctime_ns + 1,
            ..stamp()
        };
        let late_ctime = Entry::new(late, "blake3:a", 12 * 1_000_000_000).unwrap();
        assert!(!late_ctime.vouches(&late, "blake3:a"));
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

    /// Two entries as `stat_cache.json` held them before entries were
    /// packed (written by the release binary of c3d567c).
    const OLD_FILE: &str = r#"{"format":1,"entries":{"~/d0/f0":{"stamp":{"size":89,"mtime_ns":1796411887313562158,"ctime_ns":1796411888369562118,"ino":10012141,"dev":65024,"mode":33188,"uid":0},"checksum":"blake3:20e9d9f319ce491f148ed0cba46b40bee99a480aab632f7ff244809415b83e8d","verified_ns":1796411898360436762},"~/d0/f1":{"stamp":{"size":89,"mtime_ns":1796411887313562158,"ctime_ns":1796411888369562118,"ino":10012144,"dev":65024,"mode":33188,"uid":0},"checksum":"blake3:42c79915453b6c7c9fe9d7110ac3d817f43b9e745ae39c2600a0fcbb1d5b9a31","verified_ns":1796411898360486395}}}"#;

    #[test]
    fn a_file_written_before_packing_loads_and_saves_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STAT_CACHE_FILE), OLD_FILE).unwrap();
        let cache = StatCache::load(dir.path());
        assert_eq!(cache.len(), 2);
        let (key, e) = cache.get_key_value("~/d0/f0").unwrap();
        assert_eq!(key, "~/d0/f0");
        assert_eq!(e.stamp().size, 89);
        assert!(e.checksum().starts_with("blake3:20e9d9f3"));
        cache.save(dir.path()).unwrap();
        let saved = std::fs::read_to_string(dir.path().join(STAT_CACHE_FILE)).unwrap();
        assert_eq!(saved, OLD_FILE);
    }

    #[test]
    fn a_packed_checksum_equals_exactly_the_same_text() {
        let hex = "20e9d9f319ce491f148ed0cba46b40bee99a480aab632f7ff244809415b83e8d";
        let sum = format!("blake3:{hex}");
        let e = Entry::new(stamp(), &sum, 12 * 1_000_000_000).unwrap();
        assert!(matches!(e.checksum, Checksum::Blake3(_)), "packed");
        assert_eq!(e.checksum(), sum);
        assert!(e.vouches(&stamp(), &sum));
        // The same digest spelled otherwise is another text: not vouched for.
        assert!(!e.vouches(&stamp(), &format!("blake3:{}", hex.to_uppercase())));
        assert!(!e.vouches(&stamp(), &format!("blake3:{}", &hex[..63])));
        assert!(!e.vouches(&stamp(), &format!("sha256:{hex}")));
        let upper = format!("blake3:{}", hex.to_uppercase());
        let other = Entry::new(stamp(), &upper, 12 * 1_000_000_000).unwrap();
        assert!(matches!(other.checksum, Checksum::Other(_)), "kept as text");
        assert!(other.vouches(&stamp(), &upper));
        assert!(!other.vouches(&stamp(), &sum));
    }

    #[test]
    fn a_time_beyond_i64_ns_is_not_cached_and_a_file_holding_one_loads_without_it() {
        let far = Stamp {
            mtime_ns: i128::from(i64::MAX) + 1,
            ..stamp()
        };
        assert!(Entry::new(far, "blake3:a", 12 * 1_000_000_000).is_none());
        // Beyond i64 (about year 2262), within i128: the old format held it.
        let text = OLD_FILE.replacen(
            "\"mtime_ns\":1796411887313562158",
            "\"mtime_ns\":99999999999999999999999",
            1,
        );
        assert_ne!(text, OLD_FILE);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STAT_CACHE_FILE), text).unwrap();
        let cache = StatCache::load(dir.path());
        assert_eq!(cache.len(), 1, "the other entry still loads");
        assert!(cache.get("~/d0/f0").is_none());
        assert!(cache.get("~/d0/f1").is_some());
    }

    #[test]
    fn entries_are_found_by_path_and_the_last_of_a_path_given_twice_wins() {
        let cache = StatCache::of([
            ("~/b".to_string(), entry(12)),
            ("~/a".to_string(), entry(12)),
            ("~/b".to_string(), entry(13)),
        ]);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get("~/b"), Some(&entry(13)));
        assert_eq!(cache.get("~/a"), Some(&entry(12)));
        assert!(cache.get("~/c").is_none());
        assert!(cache.get("~/").is_none());
        // Three of one path, apart and together: the last still wins.
        let cache = StatCache::of([
            ("~/b".to_string(), entry(12)),
            ("~/c".to_string(), entry(20)),
            ("~/b".to_string(), entry(13)),
            ("~/a".to_string(), entry(12)),
            ("~/b".to_string(), entry(14)),
            ("~/c".to_string(), entry(21)),
        ]);
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get("~/b"), Some(&entry(14)));
        assert_eq!(cache.get("~/c"), Some(&entry(21)));
        assert_eq!(cache.get("~/a"), Some(&entry(12)));
        // A loaded file that holds a path twice keeps the later, as before.
        let text = serde_json::to_string(&cache).unwrap().replacen(
            "{\"~/a\"",
            &format!(
                "{{\"~/c\":{},\"~/a\"",
                serde_json::to_string(&entry(99).text()).unwrap()
            ),
            1,
        );
        assert_eq!(text.matches("\"~/c\"").count(), 2, "{text}");
        let loaded: StatCache = serde_json::from_str(&text).unwrap();
        assert_eq!(loaded.len(), 3);
        assert_eq!(loaded.get("~/c"), Some(&entry(21)), "{text}");
    }
}
