//! State records written by earlier versions and by this one keep loading:
//! version 2 (v0.1.0, no checks) reads as version 3 without checks, and a
//! version 3 record holding check items and a committed migration (written
//! by this build mid-migration, waiting for a reboot) reads back whole.

use std::fs;

use stead_lib::layout::Layout;
use stead_lib::state::checks::{ItemStatus, StepStatus};
use stead_lib::state::{Loaded, StateStore};

fn load(raw: &str) -> stead_lib::state::State {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path(), None);
    fs::create_dir_all(layout.state_dir()).unwrap();
    fs::write(layout.state_file(), raw).unwrap();
    match StateStore::new(layout).load().unwrap() {
        Some(Loaded::Current(state)) => *state,
        other => panic!("not a current record: {other:?}"),
    }
}

#[test]
fn a_version_2_record_of_v0_1_0_reads_with_no_checks() {
    let raw = fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../cli/tests/fixtures/v0.1.0/killed-apply/home/.stead/state.json"
    ))
    .unwrap();
    let state = load(&raw);
    assert_eq!(state.version, 2);
    assert!(state.checks.is_empty() && state.migration.is_none());
    assert!(!state.resources.is_empty());
}

#[test]
fn a_version_3_record_mid_migration_reads_back_whole() {
    let raw = include_str!("fixtures/state-v3-migration.json");
    let state = load(raw);
    assert_eq!(state.version, 3);
    assert_eq!(state.checks["kernel/old"].status, ItemStatus::Running);
    assert_eq!(state.checks["kernel/tidy"].status, ItemStatus::Dismissed);
    let migration = state.migration.as_ref().expect("the committed migration");
    let steps: Vec<(&str, StepStatus, Option<&str>)> = migration
        .steps
        .iter()
        .map(|s| (s.step.as_str(), s.status, s.user.as_deref()))
        .collect();
    assert_eq!(
        steps,
        [
            ("install", StepStatus::Done, None),
            ("finish", StepStatus::Pending, Some("nobody"))
        ]
    );
    assert_eq!(migration.steps[0].boot_id.as_deref(), Some("boot-1"));
    // Written again, it reads the same.
    let again = load(&serde_json::to_string_pretty(&state).unwrap());
    assert_eq!(again, state);
}
