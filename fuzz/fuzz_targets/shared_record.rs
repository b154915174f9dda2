//! The shared record: any bytes as `.stead/state.json` from a remote,
//! parsed, written back, and merged, diffed and compared with itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stead_lib::sync::shared::{self, Strategy};

fuzz_target!(|data: &[u8]| {
    let Ok(record) = shared::parse(data, "fuzz") else {
        return;
    };
    let again =
        shared::parse(&shared::to_bytes(&record), "written").expect("a written record parses");
    assert_eq!(record, again);
    let me = record.machines.keys().next().cloned();
    for strategy in [Strategy::Merge, Strategy::UseLocal, Strategy::UseRemote] {
        let merged = shared::merge(Some(&record), &record, &record, me.as_deref(), strategy);
        let _ = shared::diff(&record, &merged);
    }
    let _ = shared::moved_since(Some(&record), None);
    let _ = record.keeps_all_of(&record);
});
