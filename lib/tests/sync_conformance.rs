//! The sync backend conformance suite: one set of tests, generic over a
//! [`Harness`] that makes a remote and clones of it, run against every
//! backend. A new backend adds a harness and one line to `backends!` at the
//! bottom (see `docs/sync-backends.md`).
//!
//! The git harness drives the real `git` program against a bare remote in
//! a temp dir, with git's own configuration and HOME isolated.

use std::path::{Path, PathBuf};

use chrono::{Duration, Utc};
use stead_lib::lock::{LockHolder, LockInfo, LockType};
use stead_lib::state::HistoryEntry;
use stead_lib::sync::SyncError;
use stead_lib::sync::backend::{
    Acquired, Backend, ConfigSource, LockScope, Published, RecordStore, Released, RemoteLocker,
    SourceStatus, Update,
};
use stead_lib::sync::git::Git;
use stead_lib::sync::git_backend::GitBackend;
use stead_lib::sync::memory::{MemoryBackend, MemoryRemote};
use stead_lib::sync::shared::{self, MachineRecord, SharedRecord};

/// A remote and a way to make clones of it.
trait Harness {
    type B: Backend + Send + Sync;
    fn new() -> Self;
    /// A fresh clone of the remote as it is now.
    fn clone_remote(&mut self) -> Self::B;
    /// Writes a config file (not the record) in a clone's tree.
    fn write_file(&self, backend: &Self::B, path: &str, content: &str);
    /// A config file of a clone's tree.
    fn read_file(&self, backend: &Self::B, path: &str) -> Option<String>;
    /// Whether the remote lock is bound to a lease that its holder keeps
    /// alive (etcd): it is never broken for its age, and ends within
    /// [`LEASE_TTL`] + 1 s of its holder going away.
    const LEASED: bool = false;
    /// Whether each machine has a lock of its own (etcd), so that two
    /// machines' own writes do not wait for each other; otherwise one lock
    /// serves the whole lineage (git).
    const PER_MACHINE_LOCKS: bool = false;
}

// ----- the git harness -----

struct GitHarness {
    dir: tempfile::TempDir,
    clones: usize,
}

impl GitHarness {
    fn env(&self) -> Vec<(String, String)> {
        let home = self.dir.path().join("home");
        [
            ("HOME", home.display().to_string()),
            ("GIT_CONFIG_GLOBAL", "/dev/null".to_string()),
            ("GIT_CONFIG_NOSYSTEM", "1".to_string()),
            ("GIT_AUTHOR_NAME", "conformance".to_string()),
            (
                "GIT_AUTHOR_EMAIL",
                "conformance@example.invalid".to_string(),
            ),
            ("GIT_COMMITTER_NAME", "conformance".to_string()),
            (
                "GIT_COMMITTER_EMAIL",
                "conformance@example.invalid".to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    fn remote(&self) -> PathBuf {
        self.dir.path().join("remote.git")
    }
}

impl Harness for GitHarness {
    type B = GitBackend;

    fn new() -> Self {
        let h = GitHarness {
            dir: tempfile::tempdir().unwrap(),
            clones: 0,
        };
        std::fs::create_dir_all(h.dir.path().join("home")).unwrap();
        let status = std::process::Command::new("git")
            .args(["init", "--quiet", "--bare"])
            .arg(h.remote())
            .envs(h.env())
            .status()
            .unwrap();
        assert!(status.success());
        h
    }

    fn clone_remote(&mut self) -> GitBackend {
        self.clones += 1;
        let dest = self.dir.path().join(format!("clone{}", self.clones));
        let url = self.remote().display().to_string();
        let git = Git::clone_repo_with_env(&url, &dest, self.env()).unwrap();
        GitBackend::new(git)
    }

    fn write_file(&self, backend: &GitBackend, path: &str, content: &str) {
        std::fs::write(backend.git().root().join(path), content).unwrap();
    }

    fn read_file(&self, backend: &GitBackend, path: &str) -> Option<String> {
        std::fs::read_to_string(backend.git().root().join(path)).ok()
    }
}

// ----- the memory harness -----

struct MemoryHarness {
    remote: MemoryRemote,
    clones: usize,
}

impl Harness for MemoryHarness {
    type B = MemoryBackend;

    fn new() -> Self {
        MemoryHarness {
            remote: MemoryRemote::new(),
            clones: 0,
        }
    }

    fn clone_remote(&mut self) -> MemoryBackend {
        self.clones += 1;
        self.remote
            .clone_at(Path::new(&format!("/memory/clone{}", self.clones)))
    }

    fn write_file(&self, backend: &MemoryBackend, path: &str, content: &str) {
        backend.write_file(path, content);
    }

    fn read_file(&self, backend: &MemoryBackend, path: &str) -> Option<String> {
        backend.read_file(path)
    }
}

// ----- the etcd harness -----

/// A real one-member etcd on loopback, and a git remote for the tree's
/// files: each clone is a git clone with `.stead/etcd.toml` naming the
/// cluster. Without etcd installed (and outside CI) the harness uses the
/// memory backend's semantics by panicking with a clear message instead:
/// `.ci/run` installs etcd-server.
struct EtcdHarness {
    etcd: stead_testkit::etcd::Etcd,
    git: GitHarness,
}

impl Harness for EtcdHarness {
    type B = stead_lib::sync::etcd::EtcdBackend;
    const LEASED: bool = true;
    const PER_MACHINE_LOCKS: bool = true;

    fn new() -> Self {
        assert!(
            stead_testkit::etcd::available(),
            "the etcd backend's conformance tests need etcd: apt-get install etcd-server"
        );
        let git = GitHarness::new();
        let mut seed = git.dir.path().join("seed");
        std::fs::create_dir_all(&seed).unwrap();
        // The bare remote needs a first commit for clones to have a branch.
        let g = Git::init_repo_with_env(&seed, git.env()).unwrap();
        std::fs::write(seed.join("README"), "config\n").unwrap();
        g.add(&["README"]).unwrap();
        g.commit("seed").unwrap();
        g.run(&["push", "-q", &git.remote().display().to_string(), "HEAD"])
            .unwrap();
        seed.pop();
        EtcdHarness {
            etcd: stead_testkit::etcd::Etcd::start(1),
            git,
        }
    }

    fn clone_remote(&mut self) -> Self::B {
        let clone = self.git.clone_remote();
        let root = clone.git().root().to_path_buf();
        let config =
            stead_lib::sync::etcd::EtcdConfig::new(&self.etcd.endpoints(), Some("/conformance/"))
                .unwrap();
        config.write(&root).unwrap();
        let backend = stead_lib::sync::etcd::EtcdBackend::new(
            &root,
            Some(clone.git().clone()),
            config,
            std::time::Duration::from_secs(5),
        )
        .unwrap();
        // A git clone starts with the remote fetched; so does this one.
        backend.refresh().unwrap();
        backend
    }

    fn write_file(&self, backend: &Self::B, path: &str, content: &str) {
        std::fs::write(backend.root().join(path), content).unwrap();
    }

    fn read_file(&self, backend: &Self::B, path: &str) -> Option<String> {
        std::fs::read_to_string(backend.root().join(path)).ok()
    }
}

// ----- helpers -----

fn record(serial: u64, tag: &str) -> SharedRecord {
    let mut r = SharedRecord::new("lineage-conformance");
    r.lineage.serial = serial;
    r.lineage.machines = vec![tag.to_string()];
    r
}

fn lock_info(tag: &str, age_secs: i64) -> LockInfo {
    LockInfo {
        id: format!("lock-{tag}"),
        lock_type: LockType::Hybrid,
        operation: "sync".to_string(),
        machine: LockHolder {
            id: format!("machine-{tag}"),
            hostname: format!("host-{tag}"),
            pid: 4242,
            user: "tester".to_string(),
        },
        created_at: Utc::now() - Duration::seconds(age_secs),
        expected_duration_seconds: 60,
        reason: None,
        state_serial: None,
        boot_id: None,
        pid_start_time: None,
    }
}

/// Writes `rec` as the working copy, commits and publishes it on what the
/// clone last saw of the remote.
fn publish<B: Backend>(b: &B, rec: &SharedRecord) -> Result<Published, SyncError> {
    b.write_working(rec).unwrap();
    b.commit(&[], "conformance: publish").unwrap();
    let expected = b.remote_revision().unwrap();
    b.publish(expected.as_ref())
}

fn remote_record<H: Harness>(h: &mut H) -> Option<SharedRecord> {
    let b = h.clone_remote();
    b.refresh().unwrap();
    b.records().unwrap().remote
}

const TTL: u64 = 600;
/// The TTL of the leased-lock tests (etcd's least).
const LEASE_TTL: u64 = 2;

/// Tries `acquire` until it takes the lock, for at most the lease's TTL
/// and one second: a leased lock whose holder went away must be free by then.
fn taken_within_lease(locker: &dyn RemoteLocker, info: &LockInfo) -> Acquired {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(LEASE_TTL + 1);
    loop {
        match locker.acquire(info, LEASE_TTL).unwrap() {
            Acquired::Held(holder) => assert!(
                std::time::Instant::now() < deadline,
                "the lock of a holder that went away is still held after the TTL + 1 s: {holder:?}"
            ),
            taken => return taken,
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

// ----- the suite -----

fn reads_absent_then_present<H: Harness>() {
    let mut h = H::new();
    let a = h.clone_remote();
    a.refresh().unwrap();
    let records = a.records().unwrap();
    assert!(records.local.is_none() && records.remote.is_none() && records.base.is_none());
    assert!(records.remote_rev.is_none());
    assert_eq!(a.read_working().unwrap(), None);

    let rec = record(1, "a");
    assert!(matches!(publish(&a, &rec).unwrap(), Published::Pushed(_)));
    let b = h.clone_remote();
    b.refresh().unwrap();
    let records = b.records().unwrap();
    assert_eq!(records.local.as_ref(), Some(&rec));
    assert_eq!(records.remote.as_ref(), Some(&rec));
    assert_eq!(records.base.as_ref(), Some(&rec));
    assert_eq!(b.read_working().unwrap(), Some(rec));
}

fn publish_then_read_back<H: Harness>() {
    let mut h = H::new();
    let a = h.clone_remote();
    let rec = record(3, "a");
    let Published::Pushed(rev) = publish(&a, &rec).unwrap() else {
        panic!("a first publish must push");
    };
    assert_eq!(a.remote_revision().unwrap(), Some(rev.clone()));
    // Publishing again with nothing new writes nothing.
    assert_eq!(
        a.publish(Some(&rev)).unwrap(),
        Published::NothingNew,
        "nothing new to publish"
    );
    let b = h.clone_remote();
    b.refresh().unwrap();
    let records = b.records().unwrap();
    assert_eq!(records.remote, Some(rec));
    assert_eq!(records.remote_rev, Some(rev));
}

fn stale_expected_revision_is_refused_and_writes_nothing<H: Harness>() {
    let mut h = H::new();
    let a = h.clone_remote();
    let Published::Pushed(first) = publish(&a, &record(1, "a")).unwrap() else {
        panic!("first publish");
    };
    let second = record(2, "a");
    assert!(matches!(
        publish(&a, &second).unwrap(),
        Published::Pushed(_)
    ));
    a.write_working(&record(3, "a")).unwrap();
    a.commit(&[], "conformance: third").unwrap();
    let refused = a.publish(Some(&first));
    assert!(
        matches!(refused, Err(SyncError::PublishRejected { .. })),
        "{refused:?}"
    );
    assert_eq!(remote_record(&mut h), Some(second));
}

/// A record of machine `a` with `n` history entries, serials 1..=n.
fn record_with_history(n: u64) -> SharedRecord {
    let mut r = record(n, "a");
    r.machines.insert(
        "a".to_string(),
        MachineRecord {
            hostname: "host-a".to_string(),
            ..Default::default()
        },
    );
    r.history = (1..=n)
        .map(|i| HistoryEntry {
            id: format!("entry-{i}"),
            operation: "apply".to_string(),
            timestamp: Utc::now() - Duration::seconds(100 - i as i64),
            machine_id: "a".to_string(),
            user: "tester".to_string(),
            serial: i,
        })
        .collect();
    r
}

/// A machine that prunes its history publishes the pruned record, and a
/// new clone reads exactly that record, at version 3, with none of the
/// pruned entries.
fn pruned_history_reads_back_pruned<H: Harness>() {
    let mut h = H::new();
    let a = h.clone_remote();
    let full = record_with_history(5);
    publish(&a, &full).unwrap();
    let mut pruned = full.clone();
    assert!(shared::retain_own_history(&mut pruned, "a", 2));
    pruned.lineage.serial += 1;
    assert!(matches!(
        publish(&a, &pruned).unwrap(),
        Published::Pushed(_)
    ));
    let back = remote_record(&mut h).unwrap();
    assert_eq!(back, pruned);
    assert_eq!(back.version, 3);
    let ids: Vec<&str> = back.history.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["entry-4", "entry-5"]);
}

fn two_writers_race_exactly_one_wins<H: Harness>() {
    let mut h = H::new();
    let seed = h.clone_remote();
    publish(&seed, &record(1, "seed")).unwrap();
    let a = h.clone_remote();
    let b = h.clone_remote();
    let (rec_a, rec_b) = (record(2, "a"), record(2, "b"));
    for (backend, rec) in [(&a, &rec_a), (&b, &rec_b)] {
        backend.write_working(rec).unwrap();
        backend.commit(&[], "conformance: race").unwrap();
    }
    let expected = a.remote_revision().unwrap();
    assert_eq!(expected, b.remote_revision().unwrap());
    let (ra, rb) = std::thread::scope(|s| {
        let ta = s.spawn(|| a.publish(expected.as_ref()));
        let tb = s.spawn(|| b.publish(expected.as_ref()));
        (ta.join().unwrap(), tb.join().unwrap())
    });
    let won: Vec<bool> = [&ra, &rb]
        .iter()
        .map(|r| match r {
            Ok(Published::Pushed(_)) => true,
            Err(SyncError::PublishRejected { .. }) => false,
            other => panic!("neither won nor refused: {other:?}"),
        })
        .collect();
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{ra:?} {rb:?}");
    let winner = if won[0] { rec_a } else { rec_b };
    assert_eq!(remote_record(&mut h), Some(winner));
}

fn lock_acquire_inspect_release<H: Harness>() {
    let mut h = H::new();
    let a = h.clone_remote();
    let locker = a
        .locker(&LockScope::Lineage)
        .expect("a clone of a remote has a remote lock");
    assert!(locker.inspect().unwrap().is_none());
    let info = lock_info("a", 0);
    let Acquired::Taken(held) = locker.acquire(&info, TTL).unwrap() else {
        panic!("a free lock is taken");
    };
    let holder = locker.inspect().unwrap().expect("held");
    assert_eq!(holder.info.as_ref(), Some(&info));
    assert_eq!(holder.revision, held.revision);
    assert!(holder.age(Utc::now()).is_some());
    assert_eq!(locker.release(&held).unwrap(), Released::Done);
    assert!(locker.inspect().unwrap().is_none());
}

fn second_acquirer_sees_the_holder<H: Harness>() {
    let mut h = H::new();
    let (a, b) = (h.clone_remote(), h.clone_remote());
    let (la, lb) = (
        a.locker(&LockScope::Lineage).unwrap(),
        b.locker(&LockScope::Lineage).unwrap(),
    );
    let info_a = lock_info("a", 0);
    assert!(matches!(
        la.acquire(&info_a, TTL).unwrap(),
        Acquired::Taken(_)
    ));
    match lb.acquire(&lock_info("b", 0), TTL).unwrap() {
        Acquired::Held(holder) => assert_eq!(holder.info, Some(info_a.clone())),
        other => panic!("a live lock must not be taken or broken: {other:?}"),
    }
    assert_eq!(lb.inspect().unwrap().and_then(|h| h.info), Some(info_a));
}

fn expired_lock_can_be_broken<H: Harness>() {
    if H::LEASED {
        return leased_lock_ends_with_its_holder_not_its_age::<H>();
    }
    let mut h = H::new();
    let (a, b) = (h.clone_remote(), h.clone_remote());
    let (la, lb) = (
        a.locker(&LockScope::Lineage).unwrap(),
        b.locker(&LockScope::Lineage).unwrap(),
    );
    let old = lock_info("a", 3600);
    assert!(matches!(la.acquire(&old, 60).unwrap(), Acquired::Taken(_)));
    let info_b = lock_info("b", 0);
    match lb.acquire(&info_b, 60).unwrap() {
        Acquired::Broke { previous, .. } => assert_eq!(previous.info, Some(old)),
        other => panic!("a lock older than the TTL is broken: {other:?}"),
    }
    assert_eq!(la.inspect().unwrap().and_then(|h| h.info), Some(info_b));
}

fn force_unlock_removes_any_lock<H: Harness>() {
    let mut h = H::new();
    let (a, b) = (h.clone_remote(), h.clone_remote());
    let (la, lb) = (
        a.locker(&LockScope::Lineage).unwrap(),
        b.locker(&LockScope::Lineage).unwrap(),
    );
    let info_a = lock_info("a", 0);
    assert!(matches!(
        la.acquire(&info_a, TTL).unwrap(),
        Acquired::Taken(_)
    ));
    let removed = lb.force_unlock().unwrap();
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert_eq!(removed[0].info, Some(info_a));
    assert!(la.inspect().unwrap().is_none());
    assert!(lb.force_unlock().unwrap().is_empty());
}

/// A leased lock: an old one whose holder is alive is not broken; once the
/// holder stops keeping it alive (its locker gone, as when its process
/// dies), it is free within the TTL + 1 s.
fn leased_lock_ends_with_its_holder_not_its_age<H: Harness>() {
    let mut h = H::new();
    let (a, b) = (h.clone_remote(), h.clone_remote());
    let (la, lb) = (
        a.locker(&LockScope::Lineage).unwrap(),
        b.locker(&LockScope::Lineage).unwrap(),
    );
    let old = lock_info("a", 3600);
    assert!(matches!(
        la.acquire(&old, LEASE_TTL).unwrap(),
        Acquired::Taken(_)
    ));
    // Past the TTL by its age, but alive: held.
    std::thread::sleep(std::time::Duration::from_secs(LEASE_TTL + 1));
    match lb.acquire(&lock_info("b", 0), LEASE_TTL).unwrap() {
        Acquired::Held(holder) => assert_eq!(holder.info, Some(old)),
        other => panic!("a live leased lock must not be broken for its age: {other:?}"),
    }
    drop(la);
    let info_b = lock_info("b", 0);
    assert!(matches!(
        taken_within_lease(lb.as_ref(), &info_b),
        Acquired::Taken(_)
    ));
    assert_eq!(lb.inspect().unwrap().and_then(|h| h.info), Some(info_b));
}

fn machine(tag: &str) -> LockScope {
    LockScope::Machine(format!("machine-{tag}"))
}

/// A lineage-wide write waits for a machine's own lock, and a machine's
/// own write waits for the lineage's lock, on every backend.
fn lineage_and_machine_locks_keep_each_other_out<H: Harness>() {
    let mut h = H::new();
    let (a, b) = (h.clone_remote(), h.clone_remote());
    let la = a.locker(&machine("a")).unwrap();
    let lb = b.locker(&LockScope::Lineage).unwrap();
    let info_a = lock_info("a", 0);
    let Acquired::Taken(held_a) = la.acquire(&info_a, TTL).unwrap() else {
        panic!("a free lock is taken");
    };
    match lb.acquire(&lock_info("b", 0), TTL).unwrap() {
        Acquired::Held(holder) => assert_eq!(holder.info, Some(info_a.clone())),
        other => panic!("the lineage's lock was taken beside a machine's: {other:?}"),
    }
    assert_eq!(lb.inspect().unwrap().and_then(|h| h.info), Some(info_a));
    assert_eq!(la.release(&held_a).unwrap(), Released::Done);

    let info_b = lock_info("b", 0);
    let Acquired::Taken(held_b) = lb.acquire(&info_b, TTL).unwrap() else {
        panic!("the lineage's lock is free once the machine's is released");
    };
    match la.acquire(&lock_info("a", 0), TTL).unwrap() {
        Acquired::Held(holder) => assert_eq!(holder.info, Some(info_b.clone())),
        other => panic!("a machine's lock was taken beside the lineage's: {other:?}"),
    }
    assert_eq!(la.inspect().unwrap().and_then(|h| h.info), Some(info_b));
    assert_eq!(lb.release(&held_b).unwrap(), Released::Done);
    assert!(la.inspect().unwrap().is_none());
}

/// Two machines' own locks are apart where each machine has one (etcd),
/// and are one lock where the lineage has one (git). Either way `holders`
/// lists what is held, and a lineage-wide `force_unlock` removes all of it.
fn machine_locks_and_their_holders<H: Harness>() {
    let mut h = H::new();
    let (a, b, c) = (h.clone_remote(), h.clone_remote(), h.clone_remote());
    let (la, lb) = (
        a.locker(&machine("a")).unwrap(),
        b.locker(&machine("b")).unwrap(),
    );
    let (info_a, info_b) = (lock_info("a", 0), lock_info("b", 0));
    assert!(matches!(
        la.acquire(&info_a, TTL).unwrap(),
        Acquired::Taken(_)
    ));
    let second = lb.acquire(&info_b, TTL).unwrap();
    let lineage = c.locker(&LockScope::Lineage).unwrap();
    let held: Vec<(LockScope, Option<LockInfo>)> = lineage
        .holders()
        .unwrap()
        .into_iter()
        .map(|h| (h.scope, h.info))
        .collect();
    if H::PER_MACHINE_LOCKS {
        assert!(matches!(second, Acquired::Taken(_)), "{second:?}");
        assert_eq!(
            held,
            [
                (machine("a"), Some(info_a.clone())),
                (machine("b"), Some(info_b))
            ]
        );
    } else {
        match second {
            Acquired::Held(holder) => assert_eq!(holder.info, Some(info_a.clone())),
            other => panic!("one lock for the lineage: {other:?}"),
        }
        assert_eq!(held, [(LockScope::Lineage, Some(info_a.clone()))]);
    }
    // Each machine's locker sees its own holder first.
    assert_eq!(la.inspect().unwrap().and_then(|h| h.info), Some(info_a));
    let removed = lineage.force_unlock().unwrap();
    assert_eq!(removed.len(), held.len(), "{removed:?}");
    assert!(lineage.holders().unwrap().is_empty());
}

/// `force_remove` removes the lock as it was read, and nothing once that
/// lock is gone or was taken again since.
fn force_remove_removes_only_the_lock_it_read<H: Harness>() {
    let mut h = H::new();
    let (a, b) = (h.clone_remote(), h.clone_remote());
    let (la, lb) = (
        a.locker(&machine("a")).unwrap(),
        b.locker(&LockScope::Lineage).unwrap(),
    );
    let Acquired::Taken(first) = la.acquire(&lock_info("a", 0), TTL).unwrap() else {
        panic!("a free lock is taken");
    };
    let seen = lb.holders().unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    // Released and taken again: what was read is no longer there.
    assert_eq!(la.release(&first).unwrap(), Released::Done);
    let again = lock_info("a2", 0);
    assert!(matches!(
        la.acquire(&again, TTL).unwrap(),
        Acquired::Taken(_)
    ));
    assert!(
        !lb.force_remove(&seen[0]).unwrap(),
        "a stale read removes nothing"
    );
    assert_eq!(la.inspect().unwrap().and_then(|h| h.info), Some(again));
    let now = lb.holders().unwrap();
    assert!(lb.force_remove(&now[0]).unwrap());
    assert!(lb.holders().unwrap().is_empty());
    assert!(
        !lb.force_remove(&now[0]).unwrap(),
        "gone: nothing to remove"
    );
}

fn releasing_a_broken_lock_leaves_the_new_holder<H: Harness>() {
    if H::LEASED {
        return releasing_an_ended_lease_leaves_the_new_holder::<H>();
    }
    let mut h = H::new();
    let (a, b) = (h.clone_remote(), h.clone_remote());
    let (la, lb) = (
        a.locker(&LockScope::Lineage).unwrap(),
        b.locker(&LockScope::Lineage).unwrap(),
    );
    let Acquired::Taken(held_a) = la.acquire(&lock_info("a", 3600), 60).unwrap() else {
        panic!("free lock");
    };
    let info_b = lock_info("b", 0);
    assert!(matches!(
        lb.acquire(&info_b, 60).unwrap(),
        Acquired::Broke { .. }
    ));
    assert_eq!(la.release(&held_a).unwrap(), Released::Lost);
    assert_eq!(lb.inspect().unwrap().and_then(|h| h.info), Some(info_b));
}

fn releasing_an_ended_lease_leaves_the_new_holder<H: Harness>() {
    let mut h = H::new();
    let (a, b) = (h.clone_remote(), h.clone_remote());
    let (la, lb) = (
        a.locker(&LockScope::Lineage).unwrap(),
        b.locker(&LockScope::Lineage).unwrap(),
    );
    let Acquired::Taken(held_a) = la.acquire(&lock_info("a", 0), LEASE_TTL).unwrap() else {
        panic!("free lock");
    };
    drop(la);
    let info_b = lock_info("b", 0);
    assert!(matches!(
        taken_within_lease(lb.as_ref(), &info_b),
        Acquired::Taken(_)
    ));
    let again = a.locker(&LockScope::Lineage).unwrap();
    assert_eq!(again.release(&held_a).unwrap(), Released::Lost);
    assert_eq!(lb.inspect().unwrap().and_then(|h| h.info), Some(info_b));
}

fn update_brings_the_remote_in_cleanly<H: Harness>() {
    let mut h = H::new();
    let a = h.clone_remote();
    publish(&a, &record(1, "a")).unwrap();
    let b = h.clone_remote();
    h.write_file(&a, "bashrc", "export A=1\n");
    a.commit(&["bashrc"], "conformance: a file").unwrap();
    a.publish(a.remote_revision().unwrap().as_ref()).unwrap();

    b.refresh().unwrap();
    let records = b.records().unwrap();
    assert!(b.remote_has_news(&records).unwrap());
    assert_eq!(b.update("conformance: update").unwrap(), Update::Clean);
    assert_eq!(h.read_file(&b, "bashrc").as_deref(), Some("export A=1\n"));
    assert!(!b.update_in_progress().unwrap());
    assert!(!b.remote_has_news(&b.records().unwrap()).unwrap());
}

fn update_stops_on_conflicting_files<H: Harness>() {
    let mut h = H::new();
    let a = h.clone_remote();
    h.write_file(&a, "bashrc", "base\n");
    a.write_working(&record(1, "a")).unwrap();
    a.commit(&["bashrc"], "conformance: base").unwrap();
    a.publish(None).unwrap();
    let b = h.clone_remote();

    h.write_file(&a, "bashrc", "from a\n");
    a.commit(&["bashrc"], "conformance: a").unwrap();
    a.publish(a.remote_revision().unwrap().as_ref()).unwrap();
    h.write_file(&b, "bashrc", "from b\n");
    b.commit(&["bashrc"], "conformance: b").unwrap();

    b.refresh().unwrap();
    assert_eq!(
        b.update("conformance: update").unwrap(),
        Update::Conflicts(vec!["bashrc".to_string()])
    );
    assert!(b.update_in_progress().unwrap());
}

fn source_status_tells_committed_from_uncommitted<H: Harness>() {
    let mut h = H::new();
    let a = h.clone_remote();
    // Nothing there and nothing committed: nothing to lose.
    assert_eq!(a.source_status("bashrc").unwrap(), SourceStatus::Committed);
    h.write_file(&a, "bashrc", "first\n");
    assert_eq!(a.source_status("bashrc").unwrap(), SourceStatus::Untracked);
    a.write_working(&record(1, "a")).unwrap();
    a.commit(&["bashrc"], "conformance: bashrc").unwrap();
    assert_eq!(a.source_status("bashrc").unwrap(), SourceStatus::Committed);
    h.write_file(&a, "bashrc", "an edit not committed\n");
    assert_eq!(a.source_status("bashrc").unwrap(), SourceStatus::Modified);
    // Other files are not this one.
    h.write_file(&a, "other", "x\n");
    assert_eq!(a.source_status("bashrc").unwrap(), SourceStatus::Modified);
    a.commit(&["bashrc"], "conformance: the edit").unwrap();
    assert_eq!(a.source_status("bashrc").unwrap(), SourceStatus::Committed);
}

macro_rules! backends {
    ($($backend:ident: $harness:ty;)*) => {
        $(#[allow(unused_imports)] mod $backend {
            use super::*;
            #[test] fn reads_absent_then_present() { super::reads_absent_then_present::<$harness>() }
            #[test] fn publish_then_read_back() { super::publish_then_read_back::<$harness>() }
            #[test] fn stale_expected_revision_is_refused_and_writes_nothing() { super::stale_expected_revision_is_refused_and_writes_nothing::<$harness>() }
            #[test] fn two_writers_race_exactly_one_wins() { super::two_writers_race_exactly_one_wins::<$harness>() }
            #[test] fn pruned_history_reads_back_pruned() { super::pruned_history_reads_back_pruned::<$harness>() }
            #[test] fn lock_acquire_inspect_release() { super::lock_acquire_inspect_release::<$harness>() }
            #[test] fn second_acquirer_sees_the_holder() { super::second_acquirer_sees_the_holder::<$harness>() }
            #[test] fn expired_lock_can_be_broken() { super::expired_lock_can_be_broken::<$harness>() }
            #[test] fn force_unlock_removes_any_lock() { super::force_unlock_removes_any_lock::<$harness>() }
            #[test] fn lineage_and_machine_locks_keep_each_other_out() { super::lineage_and_machine_locks_keep_each_other_out::<$harness>() }
            #[test] fn machine_locks_and_their_holders() { super::machine_locks_and_their_holders::<$harness>() }
            #[test] fn force_remove_removes_only_the_lock_it_read() { super::force_remove_removes_only_the_lock_it_read::<$harness>() }
            #[test] fn releasing_a_broken_lock_leaves_the_new_holder() { super::releasing_a_broken_lock_leaves_the_new_holder::<$harness>() }
            #[test] fn update_brings_the_remote_in_cleanly() { super::update_brings_the_remote_in_cleanly::<$harness>() }
            #[test] fn update_stops_on_conflicting_files() { super::update_stops_on_conflicting_files::<$harness>() }
            #[test] fn source_status_tells_committed_from_uncommitted() { super::source_status_tells_committed_from_uncommitted::<$harness>() }
        })*
    };
}

// One line per backend.
backends! {
    git: GitHarness;
    memory: MemoryHarness;
    etcd: EtcdHarness;
}
