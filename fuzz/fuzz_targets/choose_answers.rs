//! A preseeded answers file (`stead choose --file`): any bytes, read as
//! TOML answers; every outcome answers or an error naming a line and
//! column inside the text, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stead_lib::migration;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match migration::parse_answers("answers.toml", text) {
        Ok(answers) => {
            for (address, _) in answers {
                assert!(address.contains('/'));
            }
        }
        Err(e) => {
            assert!(e.line >= 1 && e.line <= text.lines().count().max(1) + 1);
            assert!(e.column >= 1);
        }
    }
});
