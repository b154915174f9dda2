//! What the bench's end-to-end tests share.

use std::path::PathBuf;
use std::process::Command;

/// `target/<profile>/stead`, built first if it is missing.
pub fn stead_binary() -> PathBuf {
    // The test runs as target/<profile>/deps/<test>-<hash>.
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>")
        .to_path_buf();
    let stead = profile_dir.join("stead");
    if !stead.is_file() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "stead"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build -p stead");
        assert!(status.success(), "cargo build -p stead failed");
    }
    assert!(stead.is_file(), "no stead binary at {}", stead.display());
    stead
}
