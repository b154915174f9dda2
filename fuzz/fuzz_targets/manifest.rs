//! The manifest loader: any text as `stead.toml`, parsed with every kind
//! and its graph built. Errors are fine; a panic is a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stead_lib::manifest::LoadOptions;
use stead_lib::resource::registry::REGISTRY;

fuzz_target!(|data: &[u8]| {
    // The loader reads the file as UTF-8 first; invalid bytes never reach
    // the parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let layout = stead_fuzz::scratch();
    let config_dir = layout.home().join("dots");
    for profile in [None, Some("work".to_string())] {
        let options = LoadOptions {
            home: layout.home().to_path_buf(),
            profile,
            kinds: &REGISTRY,
        };
        let _ =
            stead_lib::graph::parse(text, &config_dir.join("stead.toml"), &config_dir, &options);
    }
});
