//! Errors of the state store, each saying what happened, where, and what to do.

use std::path::PathBuf;

use crate::fsutil::FsError;
use crate::machine::MachineError;

/// Why the state record could not be loaded, migrated or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A filesystem operation failed.
    #[error(transparent)]
    Fs(#[from] FsError),

    /// The machine id could not be read or made.
    #[error(transparent)]
    Machine(#[from] MachineError),

    /// No state record exists yet.
    #[error("no state found at {path}\nRun 'stead init' to create one.")]
    NotInitialized {
        /// The missing state file.
        path: PathBuf,
    },

    /// The file is not a valid state record. It was not touched.
    #[error(
        "the state file {path} is corrupt: {problem}\n\
         The file was left untouched. To recover, either:\n  \
         - restore a good copy from {backups}, or\n  \
         - if it is a version 1 file, fix it and run 'stead state migrate', or\n  \
         - move it aside (mv {path} {path}.broken) and run 'stead init' to start a new record"
    )]
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// What is wrong, with serde's line and column where known.
        problem: String,
        /// The backups dir, for the hint.
        backups: PathBuf,
    },

    /// The file was written by a newer stead. It was not touched.
    #[error(
        "the state file {path} has schema version {found}, but this stead ({stead}) \
         understands up to version {supported}\n\
         Upgrade stead to a version that knows schema {found}; the file was left untouched."
    )]
    NewerVersion {
        /// The state file.
        path: PathBuf,
        /// The version in the file.
        found: u64,
        /// The newest version this build knows.
        supported: u32,
        /// This build's version.
        stead: &'static str,
    },

    /// The record on disk moved since the caller loaded it.
    #[error(
        "the state file {path} changed underneath this run (loaded serial {expected}, \
         now serial {found}); nothing was written. Run the command again."
    )]
    SerialMoved {
        /// The state file.
        path: PathBuf,
        /// The serial the caller loaded.
        expected: u64,
        /// The serial on disk now.
        found: u64,
    },

    /// A write was asked to take a serial that does not go forward.
    #[error(
        "refusing to write {path} at serial {requested}: it is already at serial {current}, and a serial never goes back"
    )]
    SerialBackwards {
        /// The state file.
        path: PathBuf,
        /// The serial now.
        current: u64,
        /// The serial asked for.
        requested: u64,
    },

    /// The record is at the largest serial, so no write can follow it.
    /// Counting one write at a time cannot get there: it is a hand-edited,
    /// broken or hostile record.
    #[error(
        "the state file {path} is at serial {serial}, the largest there is: the serial is exhausted and nothing can be written after it\n\
         No run counts that far; the record was edited by hand or came from a broken or hostile copy. Nothing was written.\n\
         Restore a good copy (from {backups}, or the config repo's: git log -- .stead/state.json), \
         or move it aside (mv {path} {path}.broken) and run 'stead init' to start a new record."
    )]
    SerialExhausted {
        /// The state file.
        path: PathBuf,
        /// The serial it is at.
        serial: u64,
        /// The backups dir, for the hint.
        backups: PathBuf,
    },

    /// A version 1 record could not be migrated. It was not touched.
    #[error(
        "cannot migrate the version 1 state file {path}: {problem}\n\
         The version 1 file was left untouched; fix the field and run 'stead state migrate'."
    )]
    Migration {
        /// The state file.
        path: PathBuf,
        /// What stopped the migration.
        problem: String,
    },

    /// The state could not be serialized (a bug, never expected).
    #[error("cannot serialize the state record: {0}")]
    Serialize(#[from] serde_json::Error),
}
