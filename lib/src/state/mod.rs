//! The state record: schema version 3 (version 2 reads as one without
//! checks), the legacy version 1, migration from it, and the atomic store that loads and writes `<state-dir>/state.json`.

pub mod checks;
mod drift;
mod entry_lines;
mod error;
mod foreign;
mod in_part;
mod migrate;
mod schema;
mod store;
mod unread;
mod v1;

pub use drift::DriftStatus;
pub use error::StateError;
pub use in_part::{EntryError, read as read_in_part};
pub use migrate::MigrationReport;
pub use schema::{
    CURRENT_VERSION, HistoryEntry, Lineage, MAX_OPERATION_CHARS, ResourceRecord, State, SyncInfo,
    new_lineage_id,
};
pub use store::{DEFAULT_HISTORY_LIMIT, Loaded, StateStore};
pub use unread::Unread;
pub use v1::StateV1;
