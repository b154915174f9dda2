//! `stead fleet watch`'s waiter against a real etcd on loopback: a config
//! commit published after the last read wakes it, a quiet wait ends at its
//! timeout, and a waiter whose revision was compacted meanwhile reads the
//! key again and misses no update.

use std::time::{Duration, Instant};

use stead_lib::sync::etcd::client::Cluster;
use stead_lib::sync::etcd::watch::{ConfigWatch, Waited, publish_config_rev};
use stead_testkit::etcd::Etcd;

const PREFIX: &str = "/watch-test/";

fn cluster(etcd: &Etcd) -> Cluster {
    let endpoints: Vec<String> = etcd.endpoints().split(',').map(str::to_string).collect();
    Cluster::new(&endpoints, Duration::from_secs(5)).unwrap()
}

#[test]
fn a_published_config_commit_wakes_the_waiter_and_a_quiet_wait_times_out() {
    let Some(etcd) = Etcd::require(1) else {
        return;
    };
    let c = cluster(&etcd);
    let mut watch = ConfigWatch::new(c.clone(), PREFIX).unwrap();
    assert_eq!(watch.last().commit, "");

    let started = Instant::now();
    assert_eq!(
        watch.wait(Duration::from_millis(300)).unwrap(),
        Waited::Quiet
    );
    assert!(started.elapsed() >= Duration::from_millis(300));

    publish_config_rev(&c, PREFIX, "c1").unwrap();
    assert_eq!(
        watch.wait(Duration::from_secs(10)).unwrap(),
        Waited::Changed {
            commit: "c1".to_string(),
            relisted: false
        }
    );
    // The same commit published again is no change.
    publish_config_rev(&c, PREFIX, "c1").unwrap();
    assert_eq!(
        watch.wait(Duration::from_millis(300)).unwrap(),
        Waited::Quiet
    );
}

#[test]
fn a_waiter_resumed_at_a_compacted_revision_reads_again_and_misses_no_update() {
    let Some(etcd) = Etcd::require(1) else {
        return;
    };
    let c = cluster(&etcd);
    let watch = ConfigWatch::new(c.clone(), PREFIX).unwrap();
    let seen = watch.last().clone();
    drop(watch);

    // While nobody watches: three pushes, then the history is compacted.
    for commit in ["c1", "c2", "c3"] {
        publish_config_rev(&c, PREFIX, commit).unwrap();
    }
    let now = c.range(PREFIX).unwrap().revision;
    let mut client = c.client().unwrap();
    c.block_on(client.compact(now, None)).unwrap();

    let mut resumed = ConfigWatch::resume(c.clone(), PREFIX, seen);
    assert_eq!(
        resumed.wait(Duration::from_secs(10)).unwrap(),
        Waited::Changed {
            commit: "c3".to_string(),
            relisted: true
        }
    );
    // From there on it watches as usual.
    publish_config_rev(&c, PREFIX, "c4").unwrap();
    assert_eq!(
        resumed.wait(Duration::from_secs(10)).unwrap(),
        Waited::Changed {
            commit: "c4".to_string(),
            relisted: false
        }
    );
}
