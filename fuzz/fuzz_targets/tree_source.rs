//! A file tree's ignore rules: any bytes as the repo's `.steadignore`, and
//! any strings as the tree's `ignore` list, loaded over a small source
//! tree with its graph built. Errors are fine; a panic is a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stead_lib::manifest::LoadOptions;
use stead_lib::resource::registry::REGISTRY;

fuzz_target!(|data: &[u8]| {
    let layout = stead_fuzz::scratch();
    let config_dir = layout.home().join("tree-repo");
    let source = config_dir.join("t");
    if !source.exists() {
        std::fs::create_dir_all(source.join("sub/deep")).expect("scratch tree");
        for f in [
            "a.txt",
            "a.bak",
            "sub/b.log",
            "sub/deep/c",
            ".hidden",
            "x.j2",
        ] {
            std::fs::write(source.join(f), "x\n").expect("scratch file");
        }
    }
    // Before the first NUL: .steadignore; after it: the tree's patterns,
    // one per line.
    let (repo_rules, patterns) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    stead_fuzz::put(&config_dir.join(".steadignore"), repo_rules);
    let patterns: Vec<String> = String::from_utf8_lossy(patterns)
        .lines()
        .map(|l| serde_json::to_string(l).unwrap_or_default())
        .collect();
    let text = format!(
        "[file.t]\npath = \"~/out\"\nsource = \"t\"\npurge = true\nignore = [{}]\n",
        patterns.join(", ")
    );
    let options = LoadOptions {
        home: layout.home().to_path_buf(),
        profile: None,
        kinds: &REGISTRY,
    };
    let _ = stead_lib::graph::parse(&text, &config_dir.join("stead.toml"), &config_dir, &options);
});
