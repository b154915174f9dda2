//! The etcd backend against a real etcd on loopback, beyond the shared
//! conformance suite: what only a per-key store can get wrong.

use std::path::Path;
use std::time::Duration;

use stead_lib::sync::SyncError;
use stead_lib::sync::backend::{ConfigSource, Published, RecordStore};
use stead_lib::sync::etcd::{EtcdBackend, EtcdConfig};
use stead_lib::sync::shared::{MachineRecord, SharedRecord};
use stead_testkit::etcd::Etcd;

fn copy(etcd: &Etcd, dir: &Path) -> EtcdBackend {
    let config = EtcdConfig::new(&etcd.endpoints(), Some("/backend-test/")).unwrap();
    config.write(dir).unwrap();
    let b = EtcdBackend::new(dir, None, config, Duration::from_secs(5)).unwrap();
    b.refresh().unwrap();
    b
}

fn machine(host: &str) -> MachineRecord {
    MachineRecord {
        hostname: host.to_string(),
        os: "linux".to_string(),
        arch: "x86_64".to_string(),
        user: "u".to_string(),
        active_profile: None,
        config_path: None,
        last_apply: None,
        last_sync: None,
        checksums: Default::default(),
        drift: None,
    }
}

/// Adds machine `id` to the backend's working copy, commits and publishes.
fn publish_machine(b: &EtcdBackend, id: &str) -> Result<Published, SyncError> {
    let mut r = b
        .read_working()
        .unwrap()
        .unwrap_or_else(|| SharedRecord::new("lineage-test"));
    r.machines.insert(id.to_string(), machine(id));
    r.lineage.machines.push(id.to_string());
    r.lineage.machines.sort();
    r.lineage.machines.dedup();
    b.write_working(&r).unwrap();
    b.commit(&[], "test").unwrap();
    let expected = b.remote_revision().unwrap();
    b.publish(expected.as_ref())
}

#[test]
fn news_written_by_another_machine_during_a_publish_is_merged_by_the_next_sync() {
    let Some(etcd) = Etcd::require(1) else {
        return;
    };
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let a = copy(&etcd, dirs[0].path());
    publish_machine(&a, "a").unwrap();
    let b = copy(&etcd, dirs[1].path());
    // a refreshes; b publishes; a publishes its own change on what it read.
    a.refresh().unwrap();
    publish_machine(&b, "b").unwrap();
    let mut r = a.read_working().unwrap().unwrap();
    r.machines.get_mut("a").unwrap().hostname = "a2".to_string();
    a.write_working(&r).unwrap();
    a.commit(&[], "test").unwrap();
    let expected = a.remote_revision().unwrap();
    assert!(matches!(
        a.publish(expected.as_ref()).unwrap(),
        Published::Pushed(_)
    ));
    // Both changes are on etcd, and a knows it has b's to take in.
    let records = a.records().unwrap();
    let remote = records.remote.clone().unwrap();
    assert_eq!(remote.machines["a"].hostname, "a2");
    assert!(remote.machines.contains_key("b"));
    assert!(a.remote_has_news(&records).unwrap());
    a.update("test").unwrap();
    let local = a.records().unwrap().local.unwrap();
    assert!(local.machines.contains_key("b"), "b's entry merged in");
    assert!(!a.remote_has_news(&a.records().unwrap()).unwrap());
}

#[test]
fn a_record_of_another_lineage_is_refused_under_a_prefix_that_has_one() {
    let Some(etcd) = Etcd::require(1) else {
        return;
    };
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let a = copy(&etcd, dirs[0].path());
    publish_machine(&a, "a").unwrap();
    let b = copy(&etcd, dirs[1].path());
    let mut other = SharedRecord::new("lineage-other");
    other.machines.insert("b".to_string(), machine("b"));
    b.write_working(&other).unwrap();
    b.commit(&[], "test").unwrap();
    let expected = b.remote_revision().unwrap();
    let err = b.publish(expected.as_ref()).unwrap_err();
    assert!(
        err.to_string()
            .contains("belongs to lineage lineage-other, but etcd"),
        "{err}"
    );
    let fresh = tempfile::tempdir().unwrap();
    let c = copy(&etcd, fresh.path());
    let remote = c.records().unwrap().remote.unwrap();
    assert_eq!(remote.lineage.id, "lineage-test");
    assert!(!remote.machines.contains_key("b"), "nothing was written");
}

#[test]
fn a_machine_record_over_the_size_limit_is_refused_naming_it_and_writes_nothing() {
    let Some(etcd) = Etcd::require(1) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let a = copy(&etcd, dir.path());
    publish_machine(&a, "a").unwrap();
    let mut r = a.read_working().unwrap().unwrap();
    let m = r.machines.get_mut("a").unwrap();
    for i in 0..10_000 {
        m.checksums.insert(
            format!("~/files/{i:08}"),
            format!("keyed-blake3:{}", "0".repeat(64)),
        );
    }
    a.write_working(&r).unwrap();
    a.commit(&[], "test").unwrap();
    let expected = a.remote_revision().unwrap();
    let err = a.publish(expected.as_ref()).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("over stead's limit of 524288 bytes"),
        "{text}"
    );
    assert!(text.contains("--max-request-bytes"), "{text}");
    let fresh = tempfile::tempdir().unwrap();
    let c = copy(&etcd, fresh.path());
    let remote = c.records().unwrap().remote.unwrap();
    assert!(remote.machines["a"].checksums.is_empty(), "nothing written");
}
