//! The etcd backend against a real etcd on loopback, beyond the shared
//! conformance suite: what only a per-key store can get wrong.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use stead_lib::sync::SyncError;
use stead_lib::sync::backend::{ConfigSource, Published, RecordStore, Records};
use stead_lib::sync::etcd::client::Received;
use stead_lib::sync::etcd::keys::token;
use stead_lib::sync::etcd::{EtcdBackend, EtcdConfig};
use stead_lib::sync::shared::{MachineRecord, SharedRecord};
use stead_testkit::etcd::Etcd;

/// A backend on the test prefix over `dir`, not read yet.
fn backend(etcd: &Etcd, dir: &Path) -> EtcdBackend {
    let config = EtcdConfig::new(&etcd.endpoints(), Some("/backend-test/")).unwrap();
    config.write(dir).unwrap();
    EtcdBackend::new(dir, None, config, Duration::from_secs(5)).unwrap()
}

/// [`backend`], refreshed: a machine's copy of the record.
fn copy(etcd: &Etcd, dir: &Path) -> EtcdBackend {
    let b = backend(etcd, dir);
    b.refresh().unwrap();
    b
}

fn machine(host: &str) -> MachineRecord {
    MachineRecord {
        hostname: host.to_string(),
        os: "linux".to_string(),
        arch: "x86_64".to_string(),
        user: "u".to_string(),
        ..Default::default()
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

/// What `b`'s reads brought back while `f` ran.
fn reads_during(b: &EtcdBackend, f: impl FnOnce()) -> Received {
    let before = b.cluster().received();
    f();
    let after = b.cluster().received();
    Received {
        kvs: after.kvs - before.kvs,
        bytes: after.bytes - before.bytes,
    }
}

/// A fresh copy of the record on etcd (one full read) and what it read.
fn fresh_copy(etcd: &Etcd) -> (Records, Received) {
    let dir = tempfile::tempdir().unwrap();
    let c = copy(etcd, dir.path());
    (c.records().unwrap(), c.cluster().received())
}

#[test]
fn a_refresh_reads_only_the_keys_changed_since_the_last_read() {
    let Some(etcd) = Etcd::require(1) else {
        return;
    };
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let a = copy(&etcd, dirs[0].path());
    for i in 0..10 {
        publish_machine(&a, &format!("m{i}")).unwrap();
    }
    let b = copy(&etcd, dirs[1].path());
    publish_machine(&b, "b").unwrap();
    let read = reads_during(&a, || a.refresh().unwrap());
    let (whole, full) = fresh_copy(&etcd);
    // b's member and machine keys (and the serial, if it moved): not the
    // twenty-odd keys of the lineage.
    assert!(
        (1..=3).contains(&read.kvs),
        "{read:?}, a full read is {full:?}"
    );
    assert!(
        read.bytes * 4 < full.bytes,
        "{read:?}, a full read is {full:?}"
    );
    // The copy is the one a full read makes, token and all.
    let records = a.records().unwrap();
    assert_eq!(records.remote, whole.remote);
    assert!(records.remote.unwrap().machines.contains_key("b"));
    assert_eq!(records.remote_rev, whole.remote_rev);
    // A publish's read-back is a delta read too: a's own keys come back.
    let read = reads_during(&a, || {
        publish_machine(&a, "m10").unwrap();
    });
    assert!((1..=3).contains(&read.kvs), "{read:?}");
    let (whole, _) = fresh_copy(&etcd);
    assert_eq!(a.records().unwrap().remote_rev, whole.remote_rev);
}

#[test]
fn a_machine_removed_elsewhere_is_seen_through_a_full_read() {
    let Some(etcd) = Etcd::require(1) else {
        return;
    };
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let a = copy(&etcd, dirs[0].path());
    publish_machine(&a, "a").unwrap();
    publish_machine(&a, "b").unwrap();
    // Another machine removes b: its keys are deleted, which no read of
    // modified keys shows.
    let c = copy(&etcd, dirs[1].path());
    let mut r = c.read_working().unwrap().unwrap();
    r.retire("b");
    c.write_working(&r).unwrap();
    c.commit(&[], "test").unwrap();
    let expected = c.remote_revision().unwrap();
    assert!(matches!(
        c.publish(expected.as_ref()).unwrap(),
        Published::Pushed(_)
    ));
    let read = reads_during(&a, || a.refresh().unwrap());
    let (whole, full) = fresh_copy(&etcd);
    let records = a.records().unwrap();
    let remote = records.remote.clone().unwrap();
    assert!(!remote.machines.contains_key("b"), "{remote:?}");
    assert!(!remote.lineage.machines.contains(&"b".to_string()));
    assert!(remote.retired.contains(&"b".to_string()));
    assert_eq!(records.remote, whole.remote);
    assert_eq!(records.remote_rev, whole.remote_rev);
    assert!(read.kvs > full.kvs, "the delta, then the whole: {read:?}");
}

#[test]
fn copies_another_process_wrote_meanwhile_are_read_again() {
    let Some(etcd) = Etcd::require(1) else {
        return;
    };
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let a = copy(&etcd, dirs[0].path());
    publish_machine(&a, "a").unwrap();
    let before = a.remote_revision().unwrap();
    // A second backend on the same tree (another command of this machine)
    // reads b's news and writes the copies.
    let b = copy(&etcd, dirs[1].path());
    publish_machine(&b, "b").unwrap();
    let other = copy(&etcd, dirs[0].path());
    let now = a.records().unwrap();
    assert_ne!(now.remote_rev, before);
    assert_eq!(now.remote_rev, other.remote_revision().unwrap());
    assert!(now.remote.unwrap().machines.contains_key("b"));
}

#[test]
fn a_copy_gone_wrong_is_read_whole_after_the_refusal_it_causes() {
    let Some(etcd) = Etcd::require(1) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let a = copy(&etcd, dir.path());
    publish_machine(&a, "a").unwrap();
    // The copy holds a wrong revision for a's key, as a copy read from a
    // cluster since replaced by one holding the same keys would: the
    // key's count is right, so no delta read mends it.
    let path = dir.path().join(".stead/etcd/copies.json");
    let mut copies: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    copies["remote"]["keys"]["machines/a"][1] = serde_json::json!(1);
    std::fs::write(&path, serde_json::to_vec(&copies).unwrap()).unwrap();
    a.refresh().unwrap();
    let rename = |host: &str| {
        let mut r = a.read_working().unwrap().unwrap();
        r.machines.get_mut("a").unwrap().hostname = host.to_string();
        a.write_working(&r).unwrap();
        a.commit(&[], "test").unwrap();
        let expected = a.remote_revision().unwrap();
        a.publish(expected.as_ref())
    };
    let err = rename("a2").unwrap_err();
    assert!(matches!(err, SyncError::PublishRejected { .. }), "{err}");
    // Sync again: the read is whole, and the publish lands.
    a.refresh().unwrap();
    a.update("test").unwrap();
    assert!(matches!(rename("a2").unwrap(), Published::Pushed(_)));
    let (whole, _) = fresh_copy(&etcd);
    assert_eq!(whole.remote.unwrap().machines["a"].hostname, "a2");
}

/// copies.json as the stead before delta reads wrote it (no revision):
/// two machines, a and b, published by a.
const OLD_COPIES: &str = include_str!("fixtures/etcd-copies-without-revision.json");

#[test]
fn copies_kept_without_a_revision_load_and_the_next_read_is_whole() {
    let Some(etcd) = Etcd::require(1) else {
        return;
    };
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let a = copy(&etcd, dirs[0].path());
    publish_machine(&a, "a").unwrap();
    publish_machine(&a, "c").unwrap();
    let dir = dirs[1].path();
    let b = backend(&etcd, dir);
    std::fs::write(dir.join(".stead/etcd/copies.json"), OLD_COPIES).unwrap();
    // It loads, holding the token the old stead computed.
    let old: serde_json::Value = serde_json::from_str(OLD_COPIES).unwrap();
    let old_token = old["remote"]["token"].as_str().unwrap();
    let records = b.records().unwrap();
    assert_eq!(records.remote_rev.unwrap().as_str(), old_token);
    assert!(records.remote.unwrap().machines.contains_key("b"));
    // The token is the same function of the keys as before.
    let keys: BTreeMap<String, (String, i64)> =
        serde_json::from_value(old["remote"]["keys"].clone()).unwrap();
    assert_eq!(token(&keys), old_token);
    // No revision: the next read is whole, and the copy is etcd's.
    let read = reads_during(&b, || b.refresh().unwrap());
    let (whole, full) = fresh_copy(&etcd);
    assert_eq!(read.kvs, full.kvs, "{read:?}");
    let records = b.records().unwrap();
    assert_eq!(records.remote, whole.remote);
    assert!(!records.remote.unwrap().machines.contains_key("b"));
    assert_eq!(records.remote_rev, whole.remote_rev);
}
