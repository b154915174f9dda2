//! `stead __merge-driver BASE OURS THEIRS [PATH]`: the git merge driver for
//! `.stead/state.json`, so git never text-merges the shared record.
//!
//! Git calls it with the three copies of the file; the result replaces
//! OURS. It merges by the `--merge` rules (union of machines and history,
//! serial above both, field-by-field entries). A copy it cannot read, or
//! two different lineages over a common record, leaves OURS untouched and exits 1, which git
//! reports as a conflict on that file: never conflict markers in JSON.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use stead_lib::sync::shared::{self, Strategy};

pub fn run(base: &Path, ours: &Path, theirs: &Path, path: Option<&str>) -> Result<ExitCode> {
    let name = path.unwrap_or(shared::SHARED_RECORD_PATH);
    let read = |p: &Path, side: &str| -> Result<Vec<u8>> {
        std::fs::read(p)
            .with_context(|| format!("cannot read {side}'s copy of {name} ({})", p.display()))
    };
    let base_bytes = read(base, "the merge base")?;
    // No common ancestor (or it had no record): git passes an empty file.
    let base = if base_bytes.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(shared::parse(&base_bytes, &format!("{name} (merge base)"))?)
    };
    let ours_rec = shared::parse(&read(ours, "our")?, &format!("{name} (ours)"))?;
    let theirs_rec = shared::parse(&read(theirs, "their")?, &format!("{name} (theirs)"))?;
    // Two lineages both started where the base had none: the merge joins
    // theirs (what reached the remote first), as `stead sync` does.
    if base.is_some() && ours_rec.lineage.id != theirs_rec.lineage.id {
        eprintln!(
            "stead: {name}: the two sides belong to different lineages ({} and {}); \
             left as ours. Run 'stead state check-conflicts' and 'stead state resolve'.",
            ours_rec.lineage.id, theirs_rec.lineage.id
        );
        return Ok(ExitCode::FAILURE);
    }
    let merged = shared::merge(base.as_ref(), &ours_rec, &theirs_rec, None, Strategy::Merge);
    stead_lib::fsutil::atomic_write(ours, &shared::to_bytes(&merged), 0o644)?;
    Ok(ExitCode::SUCCESS)
}
