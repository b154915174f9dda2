//! The converged seal: any bytes as `converged.seal`, read as `stead apply`
//! reads it, then checked (every path it names `lstat`ed, read-only) and
//! asked for the serial the lock notes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stead_lib::seal::{SEAL_FILE, Seal};

fuzz_target!(|data: &[u8]| {
    let layout = stead_fuzz::scratch();
    stead_fuzz::put(&layout.state_dir().join(SEAL_FILE), data);
    if let Some(seal) = Seal::read(layout) {
        let _ = seal.serial_if_state_unchanged(layout);
        let _ = seal.holds(&[0; 32], 2);
        let _ = seal.holds(&seal.key(), 2);
    }
});
