//! The stat cache: any bytes as `stat_cache.json`, loaded as a plan loads it
//! (a cache it cannot use is empty, never an error), then saved and loaded
//! again: the same entries, each still vouching for its own stamp and
//! checksum exactly when it did.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stead_lib::stat_cache::{STAT_CACHE_FILE, StatCache};

fuzz_target!(|data: &[u8]| {
    let layout = stead_fuzz::scratch();
    let dir = layout.state_dir();
    stead_fuzz::put(&dir.join(STAT_CACHE_FILE), data);
    let cache = StatCache::load(dir);
    if cache.is_empty() {
        return;
    }
    cache.save(dir).expect("a loaded cache saves");
    let again = StatCache::load(dir);
    assert_eq!(cache, again, "a saved cache reads back as the same");
    if let Some((key, entry)) = first_entry(&cache) {
        let stamp = entry.stamp();
        let sum = entry.checksum();
        assert_eq!(again.get(&key), Some(&entry));
        // Packing a checksum keeps its text: the entry vouches for its
        // own checksum exactly as it vouches for anything equal to it.
        let mine = entry.vouches(&stamp, &sum);
        let other = entry.vouches(&stamp, &format!("{sum}x"));
        assert!(!other, "another checksum text is not vouched for");
        let racy = stamp.mtime_ns + stead_lib::stat_cache::RACY_NS <= entry.verified_ns()
            && stamp.ctime_ns + stead_lib::stat_cache::RACY_NS <= entry.verified_ns();
        assert_eq!(
            mine, racy,
            "its own stamp and checksum: only the racy rule decides"
        );
    }
});

/// The cache's first entry, found through the file's own text.
fn first_entry(cache: &StatCache) -> Option<(String, stead_lib::stat_cache::Entry)> {
    let text = std::fs::read(stead_fuzz::scratch().state_dir().join(STAT_CACHE_FILE)).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&text).ok()?;
    let key = value["entries"].as_object()?.keys().next()?.clone();
    let entry = cache.get(&key)?.clone();
    Some((key, entry))
}
