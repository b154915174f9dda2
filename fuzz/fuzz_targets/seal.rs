//! The converged seal: any bytes as `converged.seal`, read as `stead apply`
//! reads it, then checked (every path it names `lstat`ed, read-only) and
//! asked for the serial the lock notes. Each input is tried as given and
//! as a seal's body with its magic line and a checksum that holds, so that
//! what lies past the checksum is read too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stead_lib::seal::{MAGIC, SEAL_FILE, Seal};

fuzz_target!(|data: &[u8]| {
    let layout = stead_fuzz::scratch();
    let mut sealed = MAGIC.to_vec();
    sealed.extend_from_slice(data);
    sealed.extend_from_slice(blake3::hash(data).as_bytes());
    for bytes in [data, &sealed[..]] {
        stead_fuzz::put(&layout.state_dir().join(SEAL_FILE), bytes);
        if let Some(seal) = Seal::read(layout) {
            let _ = seal.serial_if_state_unchanged(layout);
            let _ = seal.holds(&[0; 32], 2);
            let _ = seal.holds(&seal.key(), 2);
            let _ = seal.check(&seal.key(), 2);
        }
    }
});
