//! The sync session over the in-memory backend: the whole of `stead sync`
//! (compare, merge, settle, commit, publish) with no git anywhere, which is
//! the proof that the session depends on the traits only.

use std::path::Path;

use chrono::Utc;
use stead_lib::layout::Layout;
use stead_lib::lock::{self, LockConfig, LockGuard, LockRequest};
use stead_lib::machine::MachineInfo;
use stead_lib::state::{HistoryEntry, State, StateStore};
use stead_lib::sync::SyncError;
use stead_lib::sync::backend::{ConfigSource, RecordStore};
use stead_lib::sync::memory::MemoryRemote;
use stead_lib::sync::session::{Merged, Note, Session, Step};
use stead_lib::sync::shared::Direction;

struct Machine {
    _dir: tempfile::TempDir,
    store: StateStore,
    guard: LockGuard,
}

fn machine(id: &str) -> (Machine, State) {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path(), None);
    let guard = lock::acquire(
        &layout,
        &LockConfig::default(),
        &LockRequest::new("sync", id),
        &mut |_| {},
    )
    .unwrap();
    let store = StateStore::new(layout);
    let mut state = State::new(MachineInfo::current(id));
    store.commit(&guard, &mut state, "init").unwrap();
    let m = Machine {
        _dir: dir,
        store,
        guard,
    };
    (m, state)
}

#[test]
fn a_first_sync_publishes_and_a_later_one_takes_the_remote_record() {
    let remote = MemoryRemote::new();
    let clone = remote.clone_at(Path::new("/memory/a"));
    let (m, state) = machine("machine-a");
    let session = Session::new(&clone, &m.store);

    session.begin(Path::new("/opt/stead"), &mut |_| {}).unwrap();
    let (records, comparison) = session.compare_for_merge(&state, &[]).unwrap();
    assert_eq!(comparison.direction, Direction::LocalAhead);
    let mut steps = Vec::new();
    let merged = session
        .merge(&m.guard, state, &records, &comparison, &mut |s| {
            steps.push(s)
        })
        .unwrap();
    assert!(matches!(merged, Merged::Settled { .. }), "{merged:?}");
    assert_eq!(steps, vec![Step::TreeUpdated]);
    let finished = session.finish(chrono::Utc::now(), &|_| Some(0)).unwrap();
    assert!(matches!(finished.pushed, Ok(true)), "{:?}", finished.pushed);
    assert_eq!(remote.head(), finished.committed);

    // Another clone moves the record on; the next sync takes it as is.
    let other = remote.clone_at(Path::new("/memory/b"));
    let mut moved = other.read_working().unwrap().expect("published");
    moved.lineage.serial += 5;
    moved.history.push(HistoryEntry {
        id: "entry-from-b".to_string(),
        operation: "apply".to_string(),
        timestamp: Utc::now(),
        machine_id: "machine-a".to_string(),
        user: "tester".to_string(),
        serial: moved.lineage.serial,
    });
    other.write_working(&moved).unwrap();
    other.commit(&[], "b moves on").unwrap();
    other
        .publish(other.remote_revision().unwrap().as_ref())
        .unwrap();

    let state = m.store.load_current().unwrap();
    session.begin(Path::new("/opt/stead"), &mut |_| {}).unwrap();
    let (records, comparison) = session.compare_for_merge(&state, &[]).unwrap();
    assert_eq!(comparison.direction, Direction::RemoteAhead);
    let Merged::Settled { state, .. } = session
        .merge(&m.guard, state, &records, &comparison, &mut |_| {})
        .unwrap()
    else {
        panic!("a remote that is ahead is taken");
    };
    assert_eq!(state.lineage.serial, moved.lineage.serial);
    assert!(state.history.iter().any(|e| e.id == "entry-from-b"));
    assert_eq!(
        m.store.load_current().unwrap().lineage.serial,
        moved.lineage.serial
    );
}

#[test]
fn an_unreachable_remote_is_a_note_or_an_error_as_asked() {
    let remote = MemoryRemote::new();
    let clone = remote.clone_at(Path::new("/memory/a"));
    let (m, _) = machine("machine-a");
    let session = Session::new(&clone, &m.store);
    remote.set_unreachable(true);
    let mut notes = Vec::new();
    assert!(!session.refresh(false, &mut |n| notes.push(n)).unwrap());
    assert!(matches!(notes.as_slice(), [Note::UsingLastFetched { .. }]));
    let strict = session.refresh(true, &mut |_| {});
    assert!(
        matches!(strict, Err(SyncError::MustReach { .. })),
        "{strict:?}"
    );
}

#[test]
fn an_update_in_progress_stops_a_sync_before_anything_changes() {
    let remote = MemoryRemote::new();
    let a = remote.clone_at(Path::new("/memory/a"));
    a.write_file("bashrc", "base\n");
    a.commit(&[], "base").unwrap();
    a.publish(None).unwrap();
    let b = remote.clone_at(Path::new("/memory/b"));
    a.write_file("bashrc", "a\n");
    a.commit(&[], "a").unwrap();
    a.publish(a.remote_revision().unwrap().as_ref()).unwrap();
    b.write_file("bashrc", "b\n");
    b.commit(&[], "b").unwrap();
    b.refresh().unwrap();
    assert!(matches!(
        b.update("merge").unwrap(),
        stead_lib::sync::backend::Update::Conflicts(_)
    ));

    let (m, _) = machine("machine-b");
    let session = Session::new(&b, &m.store);
    let err = session.begin(Path::new("/opt/stead"), &mut |_| {});
    assert!(
        matches!(err, Err(SyncError::UpdateInProgress { .. })),
        "{err:?}"
    );
    b.abort_update();
    session.begin(Path::new("/opt/stead"), &mut |_| {}).unwrap();
}

#[test]
fn a_sync_publishes_its_drift_count_only_with_other_news() {
    let remote = MemoryRemote::new();
    let clone = remote.clone_at(Path::new("/memory/a"));
    let (m, state) = machine("machine-a");
    let session = Session::new(&clone, &m.store);
    let sync = |at: chrono::DateTime<Utc>, drift: u64| {
        let state = m.store.load_current().unwrap();
        session.begin(Path::new("/opt/stead"), &mut |_| {}).unwrap();
        let (records, comparison) = session.compare_for_merge(&state, &[]).unwrap();
        session
            .merge(&m.guard, state, &records, &comparison, &mut |_| {})
            .unwrap();
        session.finish(at, &move |_| Some(drift)).unwrap()
    };
    let drift_on_remote = || {
        let other = remote.clone_at(Path::new("/memory/reader"));
        other.read_working().unwrap().unwrap().machines[&state.machine.id].drift
    };
    let now = Utc::now();
    // The first sync is news: its count goes with it.
    let first = sync(now, 2);
    assert!(matches!(first.pushed, Ok(true)), "{:?}", first.pushed);
    assert_eq!(drift_on_remote(), Some(2));
    // A count that changed alone is not published...
    let second = sync(now + chrono::TimeDelta::minutes(5), 5);
    assert_eq!(second.committed, None);
    assert!(matches!(second.pushed, Ok(false)), "{:?}", second.pushed);
    assert_eq!(drift_on_remote(), Some(2));
    // ...until the machine publishes anyway (here the hourly heartbeat).
    let beat = sync(now + chrono::TimeDelta::minutes(90), 5);
    assert!(matches!(beat.pushed, Ok(true)), "{:?}", beat.pushed);
    assert_eq!(drift_on_remote(), Some(5));
}
