//! Version 1 state files, newer and corrupt files: migrated with a backup, or
//! refused byte-for-byte untouched with a message that says what to do.

mod common;

use common::Sandbox;

const V1: &str = r#"{
  "active_profile": "work",
  "dotfiles_path": "/home/me/.dotfiles",
  "repo_url": "git@host:me/dotfiles.git",
  "last_sync": "2026-01-15T10:30:00Z",
  "last_apply": "2026-01-15T10:35:00Z"
}
"#;

fn with_state(content: &str) -> Sandbox {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.state_dir()).unwrap();
    std::fs::write(sb.state_file(), content).unwrap();
    sb
}

fn backups(sb: &Sandbox) -> Vec<std::path::PathBuf> {
    match std::fs::read_dir(sb.state_dir().join("backups")) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

/// Replaces what differs per run (paths, ids, host, timestamps) so the
/// summary's wording can be reviewed as a snapshot.
fn redact(sb: &Sandbox, text: &str) -> String {
    let state = sb.state_json();
    let m = &state["machine"];
    text.replace(sb.home().to_str().unwrap(), "[HOME]")
        .replace(m["id"].as_str().unwrap(), "[MACHINE-ID]")
        .replace(state["lineage"]["id"].as_str().unwrap(), "[LINEAGE]")
        .replace(
            &format!("{} (", m["hostname"].as_str().unwrap()),
            "[HOST] (",
        )
        .replace(
            &format!(
                "{}/{}, user {}",
                m["os"].as_str().unwrap(),
                m["arch"].as_str().unwrap(),
                m["user"].as_str().unwrap()
            ),
            "[OS]/[ARCH], user [USER]",
        )
        .split('\n')
        .map(|line| match line.find("state_v1_") {
            Some(i) => format!("{}state_v1_[STAMP].json", &line[..i]),
            None => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn migrate_converts_v1_with_a_backup_and_a_summary() {
    let sb = with_state(V1);
    let out = sb.ok(&["state", "migrate"]);
    insta::assert_snapshot!("migrate_summary", redact(&sb, &out));

    let files = backups(&sb);
    assert_eq!(files.len(), 1);
    assert_eq!(std::fs::read_to_string(&files[0]).unwrap(), V1);
    let state = sb.state_json();
    assert_eq!(state["version"], 3);
    assert_eq!(state["active_profile"], "work");
    assert_eq!(state["config_path"], "/home/me/.dotfiles");
    assert_eq!(state["repo_url"], "git@host:me/dotfiles.git");
    assert_eq!(state["last_apply"], "2026-01-15T10:35:00Z");
    assert_eq!(state["lineage"]["serial"], 1);
    assert_eq!(state["history"], serde_json::json!([]));
    assert_eq!(state["checksums"], serde_json::json!({}));

    let again = sb.ok(&["state", "migrate"]);
    assert_eq!(
        again,
        "State is already at version 3; nothing to migrate.\n"
    );
}

#[test]
fn migrate_no_backup() {
    let sb = with_state(V1);
    let v = sb.json(&["state", "migrate", "--no-backup"]);
    assert_eq!(v["migrated"], true);
    assert_eq!(v["report"]["backup"], serde_json::Value::Null);
    assert_eq!(v["report"]["serial"], 1);
    assert!(backups(&sb).is_empty());
    assert_eq!(sb.state_json()["version"], 3);
}

#[test]
fn loading_a_v1_file_migrates_it_automatically() {
    let sb = with_state(r#"{"version": 1, "active_profile": "p", "dotfiles_path": "/d"}"#);
    let (code, out, err) = sb.run(&["state", "version"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("State Version: 3\n"), "{out}");
    assert!(out.ends_with("Serial: 1\n"), "{out}");
    assert!(
        err.contains("Migrated the state record from version 1 to version 3 (backup: "),
        "{err}"
    );
    assert_eq!(backups(&sb).len(), 1);
    assert_eq!(sb.state_json()["config_path"], "/d");
}

#[test]
fn failing_migration_leaves_v1_intact() {
    let bad = r#"{"active_profile": "p", "last_apply": "the other day"}"#;
    let sb = with_state(bad);
    let (code, _out, err) = sb.run(&["state", "migrate"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot migrate the version 1 state file"),
        "{err}"
    );
    assert!(err.contains("\"last_apply\""), "{err}");
    assert_eq!(std::fs::read_to_string(sb.state_file()).unwrap(), bad);

    // And when the backup cannot be written.
    let sb = with_state(V1);
    std::fs::write(sb.state_dir().join("backups"), "not a dir").unwrap();
    let (code, _out, err) = sb.run(&["state", "migrate"]);
    assert_eq!(code, 1);
    assert!(err.contains("backups"), "{err}");
    assert_eq!(std::fs::read_to_string(sb.state_file()).unwrap(), V1);
}

#[test]
fn newer_version_is_refused_and_left_byte_for_byte() {
    let newer = "{\"version\": 4, \"future_field\": [1, 2]}\n";
    let sb = with_state(newer);
    for args in [
        vec!["state", "version"],
        vec!["init"],
        vec!["state", "migrate"],
        vec!["state", "history"],
    ] {
        let (code, _out, err) = sb.run(&args);
        assert_eq!(code, 1, "{args:?}");
        assert!(err.contains("schema version 4"), "{args:?}: {err}");
        assert!(
            err.contains("understands up to version 3"),
            "{args:?}: {err}"
        );
        assert!(err.contains("Upgrade stead"), "{args:?}: {err}");
        assert_eq!(std::fs::read_to_string(sb.state_file()).unwrap(), newer);
    }
}

#[test]
fn corrupt_state_is_refused_and_left_byte_for_byte() {
    let sb = Sandbox::new();
    sb.ok(&["init"]);
    let full = std::fs::read(sb.state_file()).unwrap();
    // Truncated mid-write: the first 100 bytes.
    let torn = &full[..100];
    std::fs::write(sb.state_file(), torn).unwrap();
    for args in [
        vec!["state", "version"],
        vec!["init"],
        vec!["state", "history"],
    ] {
        let (code, _out, err) = sb.run(&args);
        assert_ne!(code, 0, "{args:?}");
        assert!(err.contains(sb.state_file().to_str().unwrap()), "{err}");
        assert!(err.contains("is corrupt"), "{err}");
        assert!(err.contains("line "), "serde's position: {err}");
        assert!(err.contains("backups"), "how to restore: {err}");
        assert_eq!(std::fs::read(sb.state_file()).unwrap(), torn);
    }
    // Empty.
    std::fs::write(sb.state_file(), "").unwrap();
    let (code, _out, err) = sb.run(&["state", "version"]);
    assert_eq!(code, 1);
    assert!(err.contains("the file is empty"), "{err}");
    assert_eq!(std::fs::read(sb.state_file()).unwrap(), b"");
}

#[test]
fn unknown_field_in_v2_is_refused_not_dropped() {
    let sb = Sandbox::new();
    sb.ok(&["init"]);
    let mut v = sb.state_json();
    v["extra"] = serde_json::json!("kept?");
    let text = serde_json::to_string_pretty(&v).unwrap();
    std::fs::write(sb.state_file(), &text).unwrap();
    let (code, _out, err) = sb.run(&["init", "--profile", "x"]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown field `extra`"), "{err}");
    assert_eq!(std::fs::read_to_string(sb.state_file()).unwrap(), text);
}
