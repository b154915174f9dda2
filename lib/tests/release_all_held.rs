//! `release_all_held` removes every lock file this process holds. It is
//! process-global, so it has this test binary (one process) to itself.

use stead_lib::layout::Layout;
use stead_lib::lock::{self, LockConfig, LockRequest};

#[test]
fn release_all_held_removes_every_held_lock_file_and_only_those() {
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let layouts: Vec<Layout> = dirs.iter().map(|d| Layout::new(d.path(), None)).collect();
    let guards: Vec<_> = layouts
        .iter()
        .map(|l| {
            lock::acquire(
                l,
                &LockConfig::default(),
                &LockRequest::new("apply", "m-1"),
                &mut |_| {},
            )
            .unwrap()
        })
        .collect();
    // A lock file this process does not hold stays.
    let other = tempfile::tempdir().unwrap();
    let other_layout = Layout::new(other.path(), None);
    std::fs::create_dir_all(other_layout.state_dir()).unwrap();
    std::fs::write(other_layout.lock_file(), b"{}").unwrap();

    lock::release_all_held();
    for l in &layouts {
        assert!(!l.lock_file().exists());
    }
    assert!(other_layout.lock_file().exists());
    // Dropping the guards afterwards is harmless.
    drop(guards);
    assert!(other_layout.lock_file().exists());
}
