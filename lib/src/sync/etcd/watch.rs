//! Waiting for the lineage's config to change (`stead fleet watch`): the
//! `config/rev` key names the config commit a machine last pushed, and an
//! etcd watch from the revision last read wakes the waiter when it moves.
//!
//! etcd keeps old revisions only until they are compacted; a watch that
//! starts at a compacted revision is cancelled. The waiter then reads the
//! key again (a re-list) and compares it with what it last saw, so an update
//! made while it was not watching is never missed, only seen by its result.

use std::time::Duration;

use etcd_client::WatchOptions;

use super::client::Cluster;
use super::keys;
use crate::sync::SyncError;

/// What the config key holds, as last read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigRev {
    /// The commit (empty: nobody published one yet).
    pub commit: String,
    /// The store's revision when it was read (the watch goes on after it).
    pub revision: i64,
}

/// What [`ConfigWatch::wait`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waited {
    /// The config commit moved (to this one).
    Changed {
        /// The new commit.
        commit: String,
        /// Seen by reading the key again after the watch's revision had been
        /// compacted (the watch could not replay what happened).
        relisted: bool,
    },
    /// Nothing changed before the time was up.
    Quiet,
}

/// A waiter on one lineage's config key.
pub struct ConfigWatch {
    cluster: Cluster,
    key: String,
    last: ConfigRev,
}

impl ConfigWatch {
    /// Starts from what the key holds now.
    pub fn new(cluster: Cluster, prefix: &str) -> Result<ConfigWatch, SyncError> {
        let key = format!("{prefix}{}", keys::CONFIG_REV);
        let last = read(&cluster, &key)?;
        Ok(ConfigWatch { cluster, key, last })
    }

    /// Starts from a config rev read earlier (its revision may since have
    /// been compacted).
    pub fn resume(cluster: Cluster, prefix: &str, last: ConfigRev) -> ConfigWatch {
        let key = format!("{prefix}{}", keys::CONFIG_REV);
        ConfigWatch { cluster, key, last }
    }

    /// What was last seen.
    pub fn last(&self) -> &ConfigRev {
        &self.last
    }

    /// Waits up to `timeout` for the config commit to change.
    pub fn wait(&mut self, timeout: Duration) -> Result<Waited, SyncError> {
        let start = self.last.revision + 1;
        let outcome = self.watch_from(start, timeout)?;
        match outcome {
            Watched::Event(commit, revision) => Ok(self.moved(commit, revision, false)),
            Watched::Compacted => {
                let now = read(&self.cluster, &self.key)?;
                if now.commit != self.last.commit {
                    Ok(self.moved(now.commit, now.revision, true))
                } else {
                    self.last.revision = now.revision;
                    Ok(Waited::Quiet)
                }
            }
            Watched::Quiet => Ok(Waited::Quiet),
        }
    }

    fn moved(&mut self, commit: String, revision: i64, relisted: bool) -> Waited {
        let changed = commit != self.last.commit;
        self.last = ConfigRev {
            commit: commit.clone(),
            revision,
        };
        if changed {
            Waited::Changed { commit, relisted }
        } else {
            Waited::Quiet
        }
    }

    fn watch_from(&self, start: i64, timeout: Duration) -> Result<Watched, SyncError> {
        let key = self.key.clone();
        self.cluster.retrying(|cluster, mut client| {
            let key = key.clone();
            cluster.block_on(async move {
                let options = WatchOptions::new().with_start_revision(start);
                let mut stream = client.watch(key.as_bytes(), Some(options)).await?;
                let deadline = tokio::time::Instant::now() + timeout;
                loop {
                    let next = tokio::time::timeout_at(deadline, stream.message()).await;
                    let Ok(message) = next else {
                        return Ok(Watched::Quiet);
                    };
                    let Some(resp) = message? else {
                        return Ok(Watched::Quiet);
                    };
                    if resp.compact_revision() > 0 {
                        return Ok(Watched::Compacted);
                    }
                    if let Some(kv) = resp.events().iter().rev().find_map(|e| e.kv()) {
                        return Ok(Watched::Event(
                            String::from_utf8_lossy(kv.value()).into_owned(),
                            kv.mod_revision(),
                        ));
                    }
                    if resp.canceled() {
                        return Ok(Watched::Compacted);
                    }
                }
            })
        })
    }
}

enum Watched {
    Event(String, i64),
    Compacted,
    Quiet,
}

fn read(cluster: &Cluster, key: &str) -> Result<ConfigRev, SyncError> {
    let range = cluster.range(key)?;
    let commit = range
        .kvs
        .iter()
        .find(|(k, ..)| k == key)
        .map(|(_, v, ..)| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default();
    Ok(ConfigRev {
        commit,
        revision: range.revision,
    })
}

/// Records `commit` as the lineage's config commit (after a push of the
/// config tree).
pub fn publish_config_rev(cluster: &Cluster, prefix: &str, commit: &str) -> Result<(), SyncError> {
    let key = format!("{prefix}{}", keys::CONFIG_REV);
    cluster.retrying(|cluster, mut client| {
        cluster
            .block_on(client.put(key.as_bytes(), commit.as_bytes(), None))
            .map(|_| ())
    })
}
