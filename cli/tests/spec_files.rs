//! The state-management spec's own example files load as the spec writes
//! them (`lib/tests/fixtures/SPEC-FIXTURES.md` says where they come from):
//! its `lock_config.json` (`"lock_type": "Hybrid"`) and its version 2 state
//! file (`dotfiles_path`, `heimdal_version`, history without ids, md5
//! checksums keyed `.bashrc`). What was normalised is said; read-only
//! commands write nothing; a foreign checksum is trusted for nothing.

mod common;

use std::fs;
use std::path::Path;

use common::{Repo, Sandbox};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../lib/tests/fixtures");

fn fixture(name: &str) -> Vec<u8> {
    fs::read(Path::new(FIXTURES).join(name)).unwrap()
}

fn put_spec_state(sb: &Sandbox) {
    fs::create_dir_all(sb.state_dir()).unwrap();
    fs::write(sb.state_file(), fixture("spec-v2-state.json")).unwrap();
}

/// Every file under the state dir with its bytes.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in walk(dir) {
        let bytes = fs::read(&entry).unwrap_or_default();
        out.push((entry.display().to_string(), bytes));
    }
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

const MANIFEST: &str = r#"
[profile.personal]

[file.bashrc]
path = "~/.bashrc"
source = "bashrc"

[file.vimrc]
path = "~/.vimrc"
source = "vimrc"
"#;

#[test]
fn the_spec_lock_config_with_a_capitalised_type_loads() {
    let sb = Sandbox::new();
    fs::create_dir_all(sb.state_dir()).unwrap();
    fs::write(
        sb.state_dir().join("lock_config.json"),
        fixture("spec-lock_config.json"),
    )
    .unwrap();
    let out = sb.ok(&["state", "lock-info"]);
    assert!(out.contains("Lock type: hybrid"), "{out}");
    assert!(out.contains("State is not locked"), "{out}");
    // Every other command reads it too.
    let (code, _, err) = sb.run(&["state", "unlock", "--force"]);
    assert!(!err.contains("lock config"), "{code} {err}");
}

#[test]
fn the_spec_v2_state_loads_says_what_was_normalised_and_read_only_commands_write_nothing() {
    let repo = Repo::new(MANIFEST);
    repo.write_source("bashrc", "from the repo\n");
    repo.write_source("vimrc", "set nu\n");
    fs::write(repo.path(".bashrc"), "mine\n").unwrap();
    put_spec_state(&repo.sb);
    let before = snapshot(&repo.sb.state_dir());

    let (code, out, err) = repo.sb.run(&["state", "version"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Serial: 42"), "{out}");
    assert!(
        out.contains("550e8400-e29b-41d4-a716-446655440000"),
        "{out}"
    );
    for want in [
        "spec's spelling of version 2",
        "\"dotfiles_path\" read as \"config_path\"",
        "\"heimdal_version\" \"1.0.0\" not kept",
        "1 history entry without an id",
        "2 checksums not in stead's form (.bashrc, .vimrc) treated as unknown",
        "left as it is on disk",
    ] {
        assert!(err.contains(want), "{want}:\n{err}");
    }

    let history = repo.sb.ok(&["state", "history"]);
    assert!(history.contains("42. apply"), "{history}");
    let json = repo.sb.json(&["state", "history"]);
    let text = json.to_string();
    assert!(text.contains("derived-"), "{text}");
    // Derived ids are the same on every read.
    assert_eq!(repo.sb.json(&["state", "history"]), json);

    // The md5 of .bashrc is not taken as stead's own: the plan does not
    // trust it (a conflict, not an update) and removes nothing.
    let plan = repo.ok(&["plan"]);
    assert!(
        plan.contains("file.bashrc  ~/.bashrc  (exists and stead does not own it"),
        "{plan}"
    );
    assert!(plan.contains("0 to remove"), "{plan}");
    repo.sb.ok(&["state", "lock-info"]);
    repo.ok(&["graph"]);

    assert_eq!(
        snapshot(&repo.sb.state_dir()),
        before,
        "a read-only command wrote"
    );
    assert_eq!(fs::read_to_string(repo.path(".bashrc")).unwrap(), "mine\n");
}

#[test]
fn the_first_write_keeps_the_original_and_saves_stead_form_removing_nothing() {
    let repo = Repo::new(MANIFEST);
    repo.write_source("bashrc", "from the repo\n");
    repo.write_source("vimrc", "set nu\n");
    fs::write(repo.path(".bashrc"), "mine\n").unwrap();
    put_spec_state(&repo.sb);

    let (code, out, err) = repo.run(&["apply", "--yes"]);
    // .bashrc is not stead's (its md5 is unknown): refused, not replaced.
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("file.vimrc created"), "{out}");
    assert_eq!(
        err.matches("spec's spelling of version 2").count(),
        1,
        "said once: {err}"
    );
    assert!(err.contains("the original is kept in"), "{err}");
    assert_eq!(fs::read_to_string(repo.path(".bashrc")).unwrap(), "mine\n");

    let backups: Vec<_> = fs::read_dir(repo.sb.state_dir().join("backups"))
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("state_v2_original_")
        })
        .collect();
    assert_eq!(backups.len(), 1);
    assert_eq!(
        fs::read(backups[0].path()).unwrap(),
        fixture("spec-v2-state.json")
    );

    let state = repo.sb.state_json();
    assert_eq!(state["lineage"]["serial"], 43);
    assert_eq!(state["config_path"], "/Users/john/.dotfiles");
    assert!(state.get("dotfiles_path").is_none());
    assert!(state.get("heimdal_version").is_none());
    assert!(state["checksums"].get(".bashrc").is_none());
    assert!(
        state["history"][0]["id"]
            .as_str()
            .unwrap()
            .starts_with("derived-")
    );

    // Now strictly stead's: no notice any more.
    let (_, _, err) = repo.sb.run(&["state", "version"]);
    assert!(!err.contains("spec's spelling"), "{err}");
}

#[test]
fn state_migrate_saves_the_spec_state_in_stead_form() {
    let sb = Sandbox::new();
    put_spec_state(&sb);
    let out = sb.ok(&["state", "migrate"]);
    assert!(
        out.contains("Saved the state record in stead's form (version 3, serial 43)"),
        "{out}"
    );
    assert_eq!(sb.state_json()["stead_version"], env!("CARGO_PKG_VERSION"));
    let out = sb.ok(&["state", "migrate"]);
    assert!(out.contains("nothing to migrate"), "{out}");
}

#[test]
fn an_unknown_checksum_proves_nothing_a_removal_backs_the_file_up_first() {
    // The spec's file with a resource stead once recorded, whose checksum
    // is an md5: no longer declared, it is removed only after a backup.
    let repo = Repo::new(MANIFEST);
    repo.write_source("bashrc", "from the repo\n");
    repo.write_source("vimrc", "set nu\n");
    let mut state: serde_json::Value =
        serde_json::from_slice(&fixture("spec-v2-state.json")).unwrap();
    state["resources"] =
        serde_json::json!({"file.old": {"kind": "file", "keys": ["~/.old"], "serial": 40}});
    state["checksums"]["~/.old"] = "5d41402abc4b2a76b9719d911017c592".into();
    fs::create_dir_all(repo.sb.state_dir()).unwrap();
    fs::write(repo.sb.state_file(), serde_json::to_vec(&state).unwrap()).unwrap();
    fs::write(repo.path(".old"), "precious\n").unwrap();

    let plan = repo.ok(&["plan"]);
    assert!(
        plan.contains("- file.old  ~/.old  (no longer declared; no checksum recorded for it, so it is backed up first)"),
        "{plan}"
    );
    let out = repo.ok(&["apply", "--yes"]);
    assert!(out.contains("backed up the original to"), "{out}");
    let kept: Vec<_> = walk(&repo.sb.state_dir().join("backups"))
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == ".old"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(fs::read_to_string(&kept[0]).unwrap(), "precious\n");
}
