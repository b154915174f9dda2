//! What the package kind reads from its managers: any bytes, split at NULs,
//! as the output of `dpkg-query -W`, `apt-cache policy`, `rpm -q --qf`,
//! `dnf repoquery`, `pacman -Q`, `pacman -Sl` and the shipped-file lists
//! (`dpkg-query` of `${db-fsys:Files}`, `dnf repoquery` of `%{files}`,
//! `pacman -Ql`), and brew's `list --versions` and `info --json=v2`, parsed
//! as the plan parses them.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use stead_lib::resource::package::{apt, brew, dnf, pacman};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|&b| b == 0).map(String::from_utf8_lossy);
    let mut next = || parts.next().unwrap_or_default();
    for installed in apt::parse_query(&next()).values() {
        let _ = (installed.is_installed(), installed.is_half_done());
    }
    let _ = apt::parse_policy(&next());
    for found in dnf::parse_query(&next()).values() {
        assert!(!found.version.is_empty());
    }
    let _ = dnf::parse_candidates(&["a", "b"], &next());
    for found in pacman::parse_query(&next()).values() {
        assert!(!found.version.is_empty());
    }
    let mut wanted: HashMap<String, Option<String>> =
        HashMap::from([("a".to_string(), None), ("b".to_string(), None)]);
    pacman::parse_sync_list(&mut wanted, &next());
    assert_eq!(wanted.len(), 2);
    let root = Some(std::path::Path::new("/r"));
    let shipped = [
        apt::parse_shipped(&next(), root),
        dnf::parse_shipped(&next(), root),
        pacman::parse_shipped(&next()),
    ];
    for found in brew::parse_query(&next()).values() {
        assert!(!found.version.is_empty());
    }
    let _ = brew::parse_info(&next());
    for lists in shipped {
        for path in lists.values().flatten() {
            assert!(path.is_absolute(), "{path:?}");
        }
    }
});
