//! The state record: any bytes as `state.json`, loaded, a version 1 record
//! migrated, a loaded one written back and read again; the serial probe
//! agrees with the whole load, and so does a read in part (a drift
//! repair's): the same record when it reads one, every entry looked up as
//! the whole record holds it, else the whole load's answer, or (for an
//! entry that does not parse, which only a hand edit after the sealing run
//! can make) a record whose entry fails when taken.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stead_lib::lock::{self, LockConfig, LockRequest, LockType};
use stead_lib::machine::MachineInfo;
use stead_lib::state::{Loaded, State, StateStore};

fuzz_target!(|data: &[u8]| {
    let layout = stead_fuzz::scratch();
    stead_fuzz::put(&layout.state_file(), data);
    let store = StateStore::new(layout.clone());
    let peeked = store.peek_serial();
    let whole = store.load();
    let in_part = store.load_in_part();
    match (&whole, &in_part) {
        (Ok(Some(Loaded::Current(whole))), Ok(Some(Loaded::Current(part)))) => {
            for (key, sum) in &whole.checksums {
                assert_eq!(part.checksum_of(key).as_deref(), Some(sum));
            }
            for (id, record) in &whole.resources {
                assert_eq!(part.record_of(id).as_deref(), Some(record));
            }
            assert_eq!(
                part.entry_counts(),
                (whole.checksums.len(), whole.resources.len())
            );
            let read_whole = (**part)
                .clone()
                .into_whole()
                .expect("an entry read in part parses");
            assert_eq!(read_whole, **whole);
        }
        // What the whole read refuses only for an entry that does not
        // parse, the read in part (which checks entries' syntax, and takes
        // the rest from the seal that vouches for a repair's record) reads,
        // and taking that entry fails.
        (_, Ok(Some(Loaded::Current(part)))) if part.unread.is_partial() => {
            assert!(whole.is_err() || matches!(whole, Ok(Some(Loaded::Normalised { .. }))));
            assert!((**part).clone().into_whole().is_err());
        }
        // Anything else it leaves to the whole read, which says the same.
        (Ok(w), Ok(p)) => assert_eq!(w, p),
        (Err(w), Err(p)) => assert_eq!(w.to_string(), p.to_string()),
        (w, p) => panic!("read whole: {w:?}\nread in part: {p:?}"),
    }
    match whole {
        Ok(Some(Loaded::Current(state))) => {
            // The probe a commit and the lock read (nothing of the record
            // built) finds the serial the whole load finds.
            if matches!(state.version, 2 | 3) {
                assert_eq!(peeked, Some(state.lineage.serial));
            }
            // What was read can be written and read back as the same.
            let bytes = serde_json::to_vec(&state).expect("a loaded state serializes");
            let again: State = serde_json::from_slice(&bytes).expect("a written state reads back");
            assert_eq!(*state, again);
        }
        Ok(Some(Loaded::Normalised { state, .. })) => {
            // Read in the spec's spelling: what stead writes of it reads
            // back strictly, as the same.
            let bytes = serde_json::to_vec(&state).expect("a normalised state serializes");
            let again: State = serde_json::from_slice(&bytes).expect("a written state reads back");
            assert_eq!(*state, again);
        }
        Ok(Some(Loaded::Legacy { .. })) => {
            let config = LockConfig {
                lock_type: LockType::Disabled,
                ..LockConfig::default()
            };
            let guard = lock::acquire(layout, &config, &LockRequest::new("fuzz", "m"), &mut |_| {})
                .expect("a disabled lock");
            let machine = MachineInfo::current("11111111-2222-4333-8444-555555555555");
            if store.migrate_if_legacy(&guard, machine, false).is_ok() {
                store.load_current().expect("a migrated state loads");
            }
        }
        _ => {}
    }
});
