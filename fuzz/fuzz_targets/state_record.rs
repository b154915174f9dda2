//! The state record: any bytes as `state.json`, loaded, a version 1 record
//! migrated, a loaded one written back and read again; the serial probe
//! agrees with the whole load.
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
    match store.load() {
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
