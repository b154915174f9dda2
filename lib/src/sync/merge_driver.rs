//! What `stead __merge-driver BASE OURS THEIRS [PATH]` does: git's merge
//! driver for `.stead/state.json`, so git never text-merges the shared record.
//!
//! The result replaces OURS. It merges by the `--merge` rules (union of
//! machines and history, serial above both, field-by-field entries). A copy
//! it cannot read, or two different lineages over a common record, leaves
//! OURS untouched, which git reports as a conflict on that file: never
//! conflict markers in JSON.

use std::path::{Path, PathBuf};

use super::shared::{self, SharedError, Strategy};
use crate::fsutil::{self, FsError};

/// What the driver did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriverOutcome {
    /// OURS holds the merge.
    Merged,
    /// The two sides belong to different lineages over a common record:
    /// OURS is left as is.
    DifferentLineages {
        /// Our lineage.
        ours: String,
        /// Theirs.
        theirs: String,
    },
}

/// Why the driver could not merge.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// A copy could not be read.
    #[error("cannot read {side}'s copy of {name} ({})", .path.display())]
    Read {
        /// Which copy ("the merge base", "our", "their").
        side: &'static str,
        /// The record's path in the repo.
        name: String,
        /// The file git gave.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A copy is not a valid record.
    #[error(transparent)]
    Shared(#[from] SharedError),
    /// The merge could not be written.
    #[error(transparent)]
    Fs(#[from] FsError),
}

/// Merges THEIRS into OURS over BASE; `name` is the record's path in the repo.
pub fn run(
    base: &Path,
    ours: &Path,
    theirs: &Path,
    name: &str,
) -> Result<DriverOutcome, DriverError> {
    let read = |p: &Path, side: &'static str| -> Result<Vec<u8>, DriverError> {
        std::fs::read(p).map_err(|source| DriverError::Read {
            side,
            name: name.to_string(),
            path: p.to_path_buf(),
            source,
        })
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
        return Ok(DriverOutcome::DifferentLineages {
            ours: ours_rec.lineage.id,
            theirs: theirs_rec.lineage.id,
        });
    }
    let merged = shared::merge(base.as_ref(), &ours_rec, &theirs_rec, None, Strategy::Merge);
    fsutil::atomic_write(ours, &shared::to_bytes(&merged), 0o644)?;
    Ok(DriverOutcome::Merged)
}
