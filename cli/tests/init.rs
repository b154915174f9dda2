//! `stead init`: creates the state record once; running it again is harmless.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::Sandbox;

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_creates_state_machine_id_and_lineage() {
    let sb = Sandbox::new();
    let out = sb.ok(&["init", "--profile", "personal"]);
    assert!(out.contains("Initialized stead state"), "{out}");

    let state = sb.state_json();
    assert_eq!(state["version"], 3);
    assert_eq!(state["active_profile"], "personal");
    assert_eq!(state["lineage"]["serial"], 1);
    assert_eq!(state["lineage"]["parent_serial"], serde_json::Value::Null);
    let lineage = state["lineage"]["id"].as_str().unwrap();
    assert!(lineage.starts_with("lineage-"), "{lineage}");
    let machine_id = state["machine"]["id"].as_str().unwrap();
    assert_eq!(
        std::fs::read_to_string(sb.state_dir().join("machine_id"))
            .unwrap()
            .trim(),
        machine_id
    );
    assert_eq!(
        state["lineage"]["machines"],
        serde_json::json!([machine_id])
    );
    assert_eq!(state["history"].as_array().unwrap().len(), 1);
    assert_eq!(state["history"][0]["operation"], "init");
    assert_eq!(state["history"][0]["serial"], 1);
    assert_eq!(state["stead_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(mode(&sb.state_dir()), 0o700);
    assert_eq!(mode(&sb.state_file()), 0o600);
    assert!(!sb.lock_file().exists(), "the lock is released");
}

#[test]
fn init_twice_is_harmless_and_says_so() {
    let sb = Sandbox::new();
    sb.ok(&["init"]);
    let before = std::fs::read(sb.state_file()).unwrap();
    let out = sb.ok(&["init"]);
    assert!(
        out.contains("Already initialized; nothing changed"),
        "{out}"
    );
    assert_eq!(std::fs::read(sb.state_file()).unwrap(), before);
}

#[test]
fn init_again_with_a_new_profile_updates_it() {
    let sb = Sandbox::new();
    let cfg = tempfile::tempdir().unwrap();
    sb.ok(&["init", "--profile", "personal"]);
    let v = sb.json(&[
        "init",
        "--profile",
        "work",
        "--path",
        cfg.path().to_str().unwrap(),
    ]);
    assert_eq!(v["status"], "updated");
    assert_eq!(v["serial"], 2);
    let state = sb.state_json();
    assert_eq!(state["active_profile"], "work");
    assert_eq!(
        state["config_path"],
        cfg.path().canonicalize().unwrap().to_str().unwrap()
    );
    assert_eq!(state["lineage"]["parent_serial"], 1);
}

#[test]
fn init_json_shape() {
    let sb = Sandbox::new();
    let v = sb.json(&["init", "--profile", "p"]);
    let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "active_profile",
            "changes",
            "config_path",
            "lineage_id",
            "machine_id",
            "schema",
            "serial",
            "state_path",
            "status"
        ]
    );
    assert_eq!(v["status"], "created");
    assert_eq!(v["serial"], 1);
    assert_eq!(v["state_path"], sb.state_file().to_str().unwrap());
    let again = sb.json(&["init"]);
    assert_eq!(again["status"], "unchanged");
    assert_eq!(again["machine_id"], v["machine_id"]);
}

#[test]
fn state_dir_flag_and_env_are_honoured() {
    let sb = Sandbox::new();
    let custom = sb.home().join("elsewhere");
    sb.ok(&["--state-dir", custom.to_str().unwrap(), "init"]);
    assert!(custom.join("state.json").exists());
    assert!(!sb.state_file().exists());
    let out = sb
        .stead(&["state", "version"])
        .env("STEAD_STATE_DIR", &custom)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Serial: 1"));
}
