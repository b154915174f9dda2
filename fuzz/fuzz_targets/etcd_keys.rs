//! The shared record as etcd keys: any key/value pairs read under a
//! lineage's prefix (one `key\tvalue` per line), put together into a
//! record; a record that comes out must come back the same from its own
//! keys, and the writes that would publish it must be computable.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use stead_lib::sync::etcd::keys;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let pairs: BTreeMap<String, Vec<u8>> = text
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
    let Ok(Some(record)) = keys::from_keys("/fuzz/", &pairs) else {
        return;
    };
    let again = keys::from_keys("/fuzz/", &keys::to_keys(&record))
        .expect("a record's own keys read")
        .expect("and hold a record");
    assert_eq!(record, again);
    let remote: BTreeMap<String, (Vec<u8>, i64)> =
        pairs.into_iter().map(|(k, v)| (k, (v, 1))).collect();
    let _ = keys::writes(Some(&record), &record, &remote);
    let _ = keys::writes(None, &record, &remote);
    let _ = keys::serial_raise(&record, &remote);
});
