//! Messages that used to mislead or panic: each says what happened, where,
//! and what to run next (issue 12, "Messages" and item 12).

mod common;

use common::{Repo, Sandbox};
use stead_lib::lock::{self, LockConfig, LockGuard, LockRequest};

/// What a panic looks like from outside: Rust's panic exit code, or its message.
fn assert_no_panic(code: i32, err: &str) {
    assert_ne!(code, 101, "stead panicked:\n{err}");
    assert!(!err.contains("panicked"), "stead panicked:\n{err}");
}

/// This test process holds the state lock (its flock lives with the guard).
fn hold(sb: &Sandbox, operation: &str) -> LockGuard {
    let layout = sb.layout();
    std::fs::create_dir_all(layout.state_dir()).unwrap();
    let id = stead_lib::machine::load_or_create_id(&layout).unwrap();
    lock::acquire(
        &layout,
        &LockConfig::default(),
        &LockRequest::new(operation, &id),
        &mut |_| {},
    )
    .unwrap()
}

#[test]
fn a_broken_stderr_while_waiting_for_the_lock_is_no_panic() {
    let sb = Sandbox::new();
    sb.write_lock_config(r#"{"retry": {"attempts": 1, "delay_seconds": 0.01}}"#);
    let _guard = hold(&sb, "apply");
    // A pipe whose reader is gone: every write to stderr fails with EPIPE.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let status = std::process::Command::new(assert_cmd::cargo::cargo_bin("stead"))
        .env("HOME", sb.home())
        .env_remove("STEAD_HOME")
        .env_remove("STEAD_STATE_DIR")
        .arg("--home")
        .arg(sb.home())
        .arg("init")
        .stdout(std::process::Stdio::null())
        .stderr(writer)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(3), "{status:?} (101 is a panic)");
}

#[test]
fn an_invalid_utf8_byte_in_the_manifest_is_placed_not_called_missing() {
    let r = Repo::new("");
    let mut text = b"[file.a]\npath = \"~/a\"\ncontent = \"ab".to_vec();
    text.push(0xff);
    text.extend_from_slice(b"\"\n");
    std::fs::write(r.config.path().join("stead.toml"), text).unwrap();
    let (code, _out, err) = r.run(&["plan"]);
    assert_no_panic(code, &err);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("stead.toml:3:14: invalid UTF-8 (byte 0xff)"),
        "no file:line:column in\n{err}"
    );
    assert!(
        !err.contains("Is "),
        "reported as a missing stead.toml:\n{err}"
    );
}
