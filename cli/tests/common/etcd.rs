//! A lineage on etcd for end-to-end tests: a real etcd started by the test
//! on loopback (`stead_testkit::etcd`, one member or three), a bare git
//! remote for the config files, and machines whose clones name the cluster
//! with `stead init --etcd`.

use std::time::Duration;

use serde_json::Value;
use stead_lib::sync::backend::{ConfigSource, RecordStore};
use stead_testkit::etcd::Etcd;

use super::remote::{Machine, Remote};

/// The cluster and the config repo's bare remote.
pub struct EtcdWorld {
    pub etcd: Etcd,
    pub remote: Remote,
}

impl EtcdWorld {
    /// A cluster of `members` and a config repo holding `manifest` and a
    /// `bashrc`; `None` when etcd is not installed (outside CI).
    pub fn new(members: usize, manifest: &str) -> Option<EtcdWorld> {
        EtcdWorld::seeded(
            members,
            &[("stead.toml", manifest), ("bashrc", "# shared bashrc\n")],
        )
    }

    /// A cluster of `members` and a config repo holding `files`
    /// (`(path, content)`, `stead.toml` among them).
    pub fn seeded(members: usize, files: &[(&str, &str)]) -> Option<EtcdWorld> {
        let etcd = Etcd::require(members)?;
        let remote = Remote::seeded("main", files);
        Some(EtcdWorld { etcd, remote })
    }

    /// A machine with a clone of the config repo at `<home>/dots`, joined
    /// to the lineage on etcd with `endpoints`.
    pub fn join_with(&self, endpoints: &str) -> Machine {
        let m = self.remote.cloned_machine();
        let clone = m.clone_dir();
        let out = m.ok(&[
            "init",
            "--etcd",
            endpoints,
            "--path",
            clone.to_str().unwrap(),
        ]);
        assert!(
            out.contains("the shared record and the lock are on etcd"),
            "{out}"
        );
        m
    }

    pub fn join(&self) -> Machine {
        self.join_with(&self.etcd.endpoints())
    }

    /// Two machines joined and synced, a last so that both saw everything.
    pub fn two_synced(&self) -> (Machine, Machine) {
        super::remote::two_synced(|| self.join(), || self.join())
    }

    /// A fresh copy of the record's store, as a hand edit would use.
    pub fn copy(&self) -> (tempfile::TempDir, stead_lib::sync::etcd::EtcdBackend) {
        let dir = tempfile::tempdir().unwrap();
        let config = stead_lib::sync::etcd::EtcdConfig::new(&self.etcd.endpoints(), None).unwrap();
        config.write(dir.path()).unwrap();
        let backend = stead_lib::sync::etcd::EtcdBackend::new(
            dir.path(),
            None,
            config,
            Duration::from_secs(5),
        )
        .unwrap();
        backend.refresh().unwrap();
        (dir, backend)
    }

    /// Edits the record on etcd, as someone with etcdctl would.
    pub fn edit_record(&self, edit: impl FnOnce(&mut stead_lib::sync::shared::SharedRecord)) {
        let (_dir, backend) = self.copy();
        let mut record = backend.records().unwrap().remote.unwrap();
        edit(&mut record);
        backend.write_working(&record).unwrap();
        backend.commit(&[], "by hand").unwrap();
        let expected = backend.remote_revision().unwrap();
        backend.publish(expected.as_ref()).unwrap();
    }

    /// [`EtcdWorld::edit_record`] on the record as JSON.
    pub fn edit_record_json(&self, edit: impl FnOnce(&mut Value)) {
        self.edit_record(|record| {
            let mut json = serde_json::to_value(&*record).unwrap();
            edit(&mut json);
            *record = serde_json::from_value(json).unwrap();
        });
    }

    /// The shared record as etcd holds it now, read through a fresh copy.
    pub fn record(&self) -> Value {
        let (_dir, backend) = self.copy();
        serde_json::to_value(backend.records().unwrap().remote).unwrap()
    }
}
