//! A check program's report: any bytes as its stdout, read as the JSON
//! contract (items, steps, `after`, `default`), every outcome a report or
//! an error naming a JSON path, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stead_lib::check;

fuzz_target!(|data: &[u8]| {
    if let Ok(report) = check::parse("check.fuzz", data) {
        for item in &report.items {
            let _ = check::address("fuzz", &item.id);
            assert!(item.fingerprint.starts_with(check::FINGERPRINT));
        }
    }
});
