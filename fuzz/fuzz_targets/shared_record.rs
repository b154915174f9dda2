//! The shared record: any bytes as `.stead/state.json` from a remote,
//! parsed, written back, and merged, diffed and compared with itself; one
//! of its machines prunes its history to one entry, and the pruned record
//! still keeps all of the original (what left was below the floor) and
//! reads back the same.
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
    if let Some(me) = &me {
        let mut pruned = record.clone();
        shared::retain_own_history(&mut pruned, me, 1);
        assert!(pruned.keeps_all_of(&record));
        let back =
            shared::parse(&shared::to_bytes(&pruned), "pruned").expect("a pruned record parses");
        assert_eq!(pruned, back);
    }
});
