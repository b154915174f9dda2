//! `stead __merge-driver BASE OURS THEIRS [PATH]`: the merge driver for
//! `.stead/state.json`, so the shared record is never text-merged. The
//! merge is the library's ([`stead_lib::sync::merge_driver`]); this says
//! why OURS was left as is, and exits 1 then (a conflict on that file).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use stead_lib::sync::merge_driver::{self, DriverOutcome};
use stead_lib::sync::shared;

pub fn run(base: &Path, ours: &Path, theirs: &Path, path: Option<&str>) -> Result<ExitCode> {
    let name = path.unwrap_or(shared::SHARED_RECORD_PATH);
    match merge_driver::run(base, ours, theirs, name)? {
        DriverOutcome::Merged => Ok(ExitCode::SUCCESS),
        DriverOutcome::DifferentLineages { ours, theirs } => {
            eprintln!(
                "stead: {name}: the two sides belong to different lineages ({ours} and {theirs}); \
                 left as ours. Run 'stead state check-conflicts' and 'stead state resolve'."
            );
            Ok(ExitCode::FAILURE)
        }
    }
}
