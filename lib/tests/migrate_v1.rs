//! Version 1 → 2 migration: backup first, validation before any write, and a
//! failed migration leaves the V1 file exactly as it was.

use std::fs;

use stead_lib::layout::Layout;
use stead_lib::lock::{self, LockConfig, LockGuard, LockRequest};
use stead_lib::machine::MachineInfo;
use stead_lib::state::{Loaded, StateError, StateStore};

const V1: &str = r#"{
  "active_profile": "work",
  "dotfiles_path": "/home/me/.dotfiles",
  "repo_url": "git@host:me/dotfiles.git",
  "last_sync": "2026-01-15T10:30:00Z",
  "last_apply": "2026-01-15 10:35:00",
  "theme": "dark"
}"#;

fn setup(v1: &str) -> (tempfile::TempDir, StateStore, LockGuard) {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path(), None);
    fs::create_dir_all(layout.state_dir()).unwrap();
    fs::write(layout.state_file(), v1).unwrap();
    let guard = lock::acquire(
        &layout,
        &LockConfig::default(),
        &LockRequest::new("migrate", "m"),
        &mut |_| {},
    )
    .unwrap();
    (dir, StateStore::new(layout), guard)
}

#[test]
fn migrates_with_backup_and_maps_every_field() {
    let (_dir, store, guard) = setup(V1);
    assert!(matches!(store.load().unwrap(), Some(Loaded::Legacy { .. })));
    let machine = MachineInfo::current("11111111-2222-4333-8444-555555555555");
    let (state, report) = store
        .migrate_if_legacy(&guard, machine.clone(), true)
        .unwrap()
        .expect("a V1 file is migrated");

    let backup = report.backup.clone().expect("backup made");
    assert_eq!(fs::read_to_string(&backup).unwrap(), V1);
    let name = backup.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("state_v1_") && name.ends_with(".json"),
        "{name}"
    );
    assert_eq!(name.len(), "state_v1_YYYYMMDD_HHMMSS.json".len(), "{name}");
    assert_eq!(backup.parent().unwrap(), store.layout().backups_dir());

    assert_eq!(state.version, 3);
    assert_eq!(state.active_profile.as_deref(), Some("work"));
    assert_eq!(state.config_path.as_deref(), Some("/home/me/.dotfiles"));
    assert_eq!(state.repo_url.as_deref(), Some("git@host:me/dotfiles.git"));
    assert_eq!(
        state.last_sync.unwrap().to_rfc3339(),
        "2026-01-15T10:30:00+00:00"
    );
    assert_eq!(
        state.last_apply.unwrap().to_rfc3339(),
        "2026-01-15T10:35:00+00:00"
    );
    assert_eq!(state.machine, machine);
    assert_eq!(state.lineage.serial, 1);
    assert!(state.lineage.id.starts_with("lineage-"));
    assert_eq!(state.lineage.machines, vec![machine.id.clone()]);
    assert!(state.history.is_empty());
    assert!(state.checksums.is_empty());
    assert_eq!(report.dropped_fields, vec!["theme".to_string()]);
    assert_eq!(store.load_current().unwrap(), state);

    // Migrating again finds the current version and does nothing.
    assert!(
        store
            .migrate_if_legacy(&guard, machine, true)
            .unwrap()
            .is_none()
    );
}

#[test]
fn no_backup_writes_no_backup() {
    let (_dir, store, guard) = setup(r#"{"version": 1, "active_profile": "p"}"#);
    let (_, report) = store
        .migrate_if_legacy(&guard, MachineInfo::current("m"), false)
        .unwrap()
        .unwrap();
    assert_eq!(report.backup, None);
    assert!(!store.layout().backups_dir().exists());
    assert_eq!(
        store.load_current().unwrap().active_profile.as_deref(),
        Some("p")
    );
}

#[test]
fn invalid_v1_field_fails_and_leaves_v1_untouched() {
    let bad = r#"{"active_profile": "p", "last_sync": "last tuesday"}"#;
    let (_dir, store, guard) = setup(bad);
    let err = store
        .migrate_if_legacy(&guard, MachineInfo::current("m"), true)
        .unwrap_err();
    assert!(matches!(err, StateError::Migration { .. }), "{err}");
    assert!(err.to_string().contains("last_sync"), "{err}");
    assert_eq!(fs::read_to_string(store.path()).unwrap(), bad);
    assert!(!store.layout().backups_dir().exists(), "nothing written");
}

#[test]
fn backup_failure_fails_and_leaves_v1_untouched() {
    let (_dir, store, guard) = setup(V1);
    // A file where the backups dir should be: the backup cannot be written.
    fs::write(store.layout().backups_dir(), b"in the way").unwrap();
    let err = store
        .migrate_if_legacy(&guard, MachineInfo::current("m"), true)
        .unwrap_err();
    assert!(err.to_string().contains("backups"), "{err}");
    assert_eq!(fs::read_to_string(store.path()).unwrap(), V1);
}
