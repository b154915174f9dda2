//! Migration of a version 1 record to version 2, with a backup first.
//!
//! Everything is validated before anything is written; the backup is written
//! before the new record; the new record replaces the old atomically. So a
//! failed migration leaves the version 1 file exactly as it was.

use std::path::PathBuf;

use chrono::{DateTime, NaiveDateTime, Utc};

use super::error::StateError;
use super::schema::State;
use super::store::{Loaded, StateStore};
use super::v1::StateV1;
use crate::fsutil;
use crate::lock::LockGuard;
use crate::machine::MachineInfo;

/// What a migration did, for the summary shown to the user.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MigrationReport {
    /// The schema version migrated from.
    pub from_version: u32,
    /// The schema version migrated to.
    pub to_version: u32,
    /// Where the version 1 file was copied, unless `--no-backup`.
    pub backup: Option<PathBuf>,
    /// The machine metadata added.
    pub machine: MachineInfo,
    /// The lineage started.
    pub lineage_id: String,
    /// The serial the new record starts at.
    pub serial: u64,
    /// V1 fields that have no place in V2 (kept only in the backup).
    pub dropped_fields: Vec<String>,
}

impl StateStore {
    /// Migrates the record to version 2 if it is version 1.
    ///
    /// Returns `None` when the record is already version 2. The caller holds
    /// the lock, so the file read here is the one replaced.
    pub fn migrate_if_legacy(
        &self,
        _guard: &LockGuard,
        machine: MachineInfo,
        backup: bool,
    ) -> Result<Option<(State, MigrationReport)>, StateError> {
        let (v1, raw) = match self.load()? {
            None => return Err(StateError::NotInitialized { path: self.path() }),
            Some(Loaded::Current(_)) | Some(Loaded::Normalised { .. }) => return Ok(None),
            Some(Loaded::Legacy { v1, raw }) => (v1, raw),
        };
        let now = Utc::now();
        let state = self.v2_from_v1(&v1, machine)?;
        let backup_path = if backup {
            Some(self.write_backup(&raw, now)?)
        } else {
            None
        };
        self.write(&state, &mut |_| {})?;
        let report = MigrationReport {
            from_version: 1,
            to_version: super::schema::CURRENT_VERSION,
            backup: backup_path,
            machine: state.machine.clone(),
            lineage_id: state.lineage.id.clone(),
            serial: state.lineage.serial,
            dropped_fields: v1.other.keys().cloned().collect(),
        };
        Ok(Some((state, report)))
    }

    /// What migrating `v1` would give, without writing anything (for a
    /// command that changes nothing, such as `plan`).
    pub fn migrated_in_memory(
        &self,
        v1: &StateV1,
        machine: MachineInfo,
    ) -> Result<State, StateError> {
        self.v2_from_v1(v1, machine)
    }

    fn v2_from_v1(&self, v1: &StateV1, machine: MachineInfo) -> Result<State, StateError> {
        let timestamp = |field: &str, value: &Option<String>| {
            parse_v1_timestamp(value.as_deref()).map_err(|problem| StateError::Migration {
                path: self.path(),
                problem: format!("field \"{field}\": {problem}"),
            })
        };
        let mut state = State::new(machine);
        state.active_profile = v1.active_profile.clone().filter(|s| !s.is_empty());
        state.config_path = v1.dotfiles_path.clone().filter(|s| !s.is_empty());
        state.repo_url = v1.repo_url.clone().filter(|s| !s.is_empty());
        state.last_sync = timestamp("last_sync", &v1.last_sync)?;
        state.last_apply = timestamp("last_apply", &v1.last_apply)?;
        state.lineage.serial = 1;
        Ok(state)
    }

    /// Copies a record read in the spec's spelling ([`Loaded::Normalised`])
    /// to `<state-dir>/backups/state_v2_original_<time>.json`, before the
    /// first write replaces it in stead's form: what was set aside (foreign
    /// checksums, `heimdal_version`) stays there.
    pub fn backup_original(&self, raw: &[u8]) -> Result<PathBuf, StateError> {
        self.backup_as("state_v2_original", raw, Utc::now())
    }

    fn write_backup(&self, raw: &[u8], now: DateTime<Utc>) -> Result<PathBuf, StateError> {
        self.backup_as("state_v1", raw, now)
    }

    fn backup_as(
        &self,
        prefix: &str,
        raw: &[u8],
        now: DateTime<Utc>,
    ) -> Result<PathBuf, StateError> {
        let dir = self.layout().backups_dir();
        fsutil::ensure_private_dir(&dir)?;
        let stem = format!("{prefix}_{}", now.format("%Y%m%d_%H%M%S"));
        let mut path = dir.join(format!("{stem}.json"));
        let mut n = 2;
        while path.exists() {
            path = dir.join(format!("{stem}_{n}.json"));
            n += 1;
        }
        fsutil::atomic_write(&path, raw, 0o600)?;
        Ok(path)
    }
}

/// V1 timestamps: RFC 3339, or `YYYY-MM-DD HH:MM:SS[.f]` / `YYYY-MM-DDTHH:MM:SS[.f]` in UTC.
fn parse_v1_timestamp(value: Option<&str>) -> Result<Option<DateTime<Utc>>, String> {
    let Some(text) = value.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(Some(t.with_timezone(&Utc)));
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(Some(t.and_utc()));
        }
    }
    Err(format!(
        "{text:?} is not a timestamp (expected RFC 3339, e.g. 2026-01-15T10:30:00Z)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_timestamps() {
        assert_eq!(parse_v1_timestamp(None), Ok(None));
        assert_eq!(parse_v1_timestamp(Some("")), Ok(None));
        let t = parse_v1_timestamp(Some("2026-01-15T10:30:00Z"))
            .unwrap()
            .unwrap();
        assert_eq!(t.to_rfc3339(), "2026-01-15T10:30:00+00:00");
        let n = parse_v1_timestamp(Some("2026-01-15 10:30:00"))
            .unwrap()
            .unwrap();
        assert_eq!(n, t);
        assert!(parse_v1_timestamp(Some("yesterday")).is_err());
    }
}
