//! `state-writer --state-dir DIR --count N [--crash-at temp-synced|renamed]`
//!
//! One run holds the state lock from start to end, like a CLI command that
//! writes the record several times:
//!
//! - takes the lock (as the CLI does; a stale lock is removed and told on
//!   stderr);
//! - if there is no `state.json`, commits a fresh record (`init`, serial 1);
//! - then N times: loads the record with `load_current` and commits it
//!   (`apply`) with `commit_observed`;
//! - prints `serial <n>` after every successful commit, then releases the
//!   lock and exits 0.
//!
//! With `--crash-at STAGE`, the observer of the LAST write prints
//! `crash <stage>` and calls `std::process::abort()` at that write stage:
//! `temp-synced` is after the temp file is written and fsync'd and before the
//! rename, `renamed` is after the rename and before the directory fsync. The
//! process dies holding the lock.

use std::path::Path;
use std::process::ExitCode;

use stead_lib::fsutil::WriteStage;
use stead_lib::lock::{self, LockConfig, LockRequest};
use stead_lib::machine::MachineInfo;
use stead_lib::state::{State, StateStore};
use stead_testkit::{Args, Failure, finish, layout_for, machine_id, report_event, say};

fn main() -> ExitCode {
    finish(run())
}

fn run() -> Result<(), Failure> {
    let args = Args::parse(&["state-dir", "count", "crash-at"])?;
    let layout = layout_for(Path::new(args.required("state-dir")?));
    let count: u64 = args.number("count")?;
    let crash_at = match args.optional("crash-at") {
        None => None,
        Some("temp-synced") => Some(WriteStage::TempSynced),
        Some("renamed") => Some(WriteStage::Renamed),
        Some(other) => {
            return Err(Failure::usage(format!(
                "--crash-at {other:?}: expected temp-synced or renamed"
            )));
        }
    };

    let config = LockConfig::load(&layout).map_err(Failure::usage)?;
    let id = machine_id(&layout)?;
    let store = StateStore::new(layout.clone());
    let guard = lock::acquire(
        &layout,
        &config,
        &LockRequest::new("apply", &id),
        &mut report_event,
    )
    .map_err(Failure::locked)?;

    if store.load().map_err(Failure::usage)?.is_none() {
        let mut state = State::new(MachineInfo::current(&id));
        store
            .commit(&guard, &mut state, "init")
            .map_err(Failure::usage)?;
        say(format_args!("serial {}", state.lineage.serial))?;
    }

    for n in 1..=count {
        let mut state = store.load_current().map_err(Failure::usage)?;
        // Something that changes with every write, so each record differs.
        state.active_profile = Some(format!("profile-{n}"));
        state.checksums.insert(
            format!("/home/file-{}", n % 16),
            format!("blake3:{n:064x}").into(),
        );
        let crash_here = if n == count { crash_at } else { None };
        store
            .commit_observed(&guard, &mut state, "apply", &mut |stage| {
                if Some(stage) == crash_here {
                    let name = match stage {
                        WriteStage::TempSynced => "temp-synced",
                        WriteStage::Renamed => "renamed",
                    };
                    // Best effort: the test checks the exit signal anyway.
                    let _ = say(format_args!("crash {name}"));
                    std::process::abort();
                }
            })
            .map_err(Failure::usage)?;
        say(format_args!("serial {}", state.lineage.serial))?;
    }

    guard.release().map_err(Failure::usage)?;
    Ok(())
}
