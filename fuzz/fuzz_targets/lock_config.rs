//! `lock_config.json`: any bytes, loaded, and every retry delay computed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stead_lib::lock::LockConfig;

fuzz_target!(|data: &[u8]| {
    let layout = stead_fuzz::scratch();
    stead_fuzz::put(&layout.lock_config_file(), data);
    if let Ok(config) = LockConfig::load(layout) {
        for retry in [0, 1, 5, 30, u32::MAX] {
            let _ = config.retry_delay(retry);
        }
    }
});
