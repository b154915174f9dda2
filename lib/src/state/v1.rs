//! Schema version 1: the legacy flat record, read only to migrate it.

use std::collections::BTreeMap;

use serde::Deserialize;

/// A version 1 record: a flat file with no lineage, no machine, no history.
///
/// Fields other than the five known ones are kept in `other` so that a
/// migration can say which it did not carry over (the backup keeps them).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StateV1 {
    /// Absent in most V1 files, or `1`.
    #[serde(default)]
    pub version: Option<u64>,
    /// The active profile.
    #[serde(default)]
    pub active_profile: Option<String>,
    /// The config repo (called `dotfiles_path` in V1).
    #[serde(default)]
    pub dotfiles_path: Option<String>,
    /// The config repo's remote.
    #[serde(default)]
    pub repo_url: Option<String>,
    /// Last sync, an RFC 3339 or `YYYY-MM-DD HH:MM:SS` (UTC) timestamp.
    #[serde(default)]
    pub last_sync: Option<String>,
    /// Last apply, same formats as `last_sync`.
    #[serde(default)]
    pub last_apply: Option<String>,
    /// Anything else the file held.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}
