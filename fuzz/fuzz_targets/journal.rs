//! The journal: any bytes as `journal.jsonl`, loaded (a corrupt middle is
//! moved aside), and every question recovery asks of its records; read
//! without batch members, the same records but for them, or the same refusal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stead_lib::journal;

fuzz_target!(|data: &[u8]| {
    let layout = stead_fuzz::scratch();
    let path = layout.state_dir().join(journal::JOURNAL_FILE);
    stead_fuzz::put(&path, data);
    let backups = layout.backups_dir();
    // Read without batch members (a run's view): the same records but for
    // their members, the same torn tail, the same lines refused.
    match (
        journal::load_read_only(&path),
        journal::load_read_only_without_members(&path),
    ) {
        (Ok(whole), Ok(lean)) => {
            assert_eq!(lean.torn_tail, whole.torn_tail);
            let without: Vec<journal::Record> = whole
                .records
                .into_iter()
                .map(|r| journal::Record {
                    members: Vec::new(),
                    ..r
                })
                .collect();
            assert_eq!(lean.records, without);
        }
        (Err(_), Err(_)) => {}
        (whole, lean) => panic!("read whole: {whole:?}\nread without members: {lean:?}"),
    }
    if let Ok(loaded) = journal::load(&path, &backups) {
        let records = &loaded.records;
        if let Some((run, _)) = journal::interrupted_run(records) {
            let _ = journal::in_flight(records, &run);
        }
        let _ = journal::succeeded_keys(records);
        let _ = journal::unfinished_keys(records);
        let _ = journal::pending_refreshes(records);
    }
    // Keep the scratch dir small: moved-aside journals pile up otherwise.
    let _ = std::fs::remove_dir_all(&backups);
});
