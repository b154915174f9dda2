//! The lock file: any bytes as `state.lock` (held by nobody), inspected as
//! `stead lock status` does, then taken over as a stale lock would be.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stead_lib::lock::{self, LockConfig, LockRequest};

fuzz_target!(|data: &[u8]| {
    let layout = stead_fuzz::scratch();
    stead_fuzz::put(&layout.lock_file(), data);
    let config = LockConfig::default();
    let _ = lock::inspect(layout, &config);
    // No process holds it: acquire proves it stale and takes it over.
    let no_retry = LockConfig {
        retry: lock::RetryConfig {
            attempts: 0,
            ..lock::RetryConfig::default()
        },
        ..config
    };
    if let Ok(guard) = lock::acquire(
        layout,
        &no_retry,
        &LockRequest::new("fuzz", "m"),
        &mut |_| {},
    ) {
        guard.release().expect("release the lock just taken");
    }
});
