//! `stead __merge-driver BASE OURS THEIRS [PATH]`: the merge driver for
//! `.stead/state.json`, so the shared record is never text-merged. The
//! merge is the library's ([`stead_lib::sync::merge_driver`]); this says
//! why OURS was left as is, and exits 1 then (a conflict on that file).

use crate::output::errln;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use stead_lib::sync::merge_driver::{self, DriverOutcome};
use stead_lib::sync::shared;

#[derive(Debug, clap::Args)]
pub struct MergeDriverArgs {
    /// The common ancestor's copy (%O)
    pub base: PathBuf,
    /// Our copy, replaced by the result (%A)
    pub ours: PathBuf,
    /// Their copy (%B)
    pub theirs: PathBuf,
    /// The path in the repo (%P)
    pub path: Option<String>,
}

pub fn run(args: &MergeDriverArgs) -> Result<ExitCode> {
    let name = args.path.as_deref().unwrap_or(shared::SHARED_RECORD_PATH);
    match merge_driver::run(&args.base, &args.ours, &args.theirs, name)? {
        DriverOutcome::Merged => Ok(ExitCode::SUCCESS),
        DriverOutcome::DifferentLineages { ours, theirs } => {
            errln!(
                "stead: {name}: the two sides belong to different lineages ({ours} and {theirs}); \
                 left as ours. Run 'stead state check-conflicts' and 'stead state resolve'."
            );
            Ok(ExitCode::FAILURE)
        }
    }
}
