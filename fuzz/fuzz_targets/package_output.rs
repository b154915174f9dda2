//! What the package kind reads from apt and dpkg: any bytes as the output
//! of `dpkg-query -W` (before a NUL) and of `apt-cache policy` (after it),
//! parsed as the plan parses them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stead_lib::resource::package::apt::{parse_policy, parse_query};

fuzz_target!(|data: &[u8]| {
    let (query, policy) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &data[..0]),
    };
    for installed in parse_query(&String::from_utf8_lossy(query)).values() {
        let _ = (installed.is_installed(), installed.is_half_done());
    }
    let _ = parse_policy(&String::from_utf8_lossy(policy));
});
