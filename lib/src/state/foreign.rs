//! Version 2 records in the spelling of the state-management spec stead
//! follows (the spec's own example file), read into stead's [`State`].
//!
//! The spec writes `dotfiles_path` where stead writes `config_path`,
//! `heimdal_version` where stead writes `stead_version`, history entries
//! without an `id`, checksums as bare md5 hex keyed by a home-relative name
//! (`.bashrc`), and no `resources` or `sync`. Such a file is read, and every
//! normalisation is listed so that the caller can say what was done:
//!
//! - `dotfiles_path` is the old name of `config_path` (both at once: refused);
//! - `heimdal_version` is not kept (stead records its own version on the
//!   next write);
//! - a history entry without an id gets one derived from its content and its
//!   place (the same file always gives the same ids, on every machine);
//! - a checksum not in stead's form (`blake3:<hex>` keyed `~/...` or an
//!   absolute path) is set aside as unknown: nothing is trusted or removed
//!   on its account, the next apply re-checks the file;
//! - a missing `resources`, `sync` or `stead_version` starts empty.
//!
//! Anything else the strict reader refuses (an unknown field, a bad type) is
//! refused here too.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::schema::{HistoryEntry, Lineage, ResourceRecord, State, SyncInfo};
use crate::machine::MachineInfo;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ForeignState {
    version: u32,
    #[serde(default)]
    active_profile: Option<String>,
    #[serde(default)]
    config_path: Option<String>,
    #[serde(default)]
    dotfiles_path: Option<String>,
    #[serde(default)]
    repo_url: Option<String>,
    #[serde(default)]
    last_sync: Option<DateTime<Utc>>,
    #[serde(default)]
    last_apply: Option<DateTime<Utc>>,
    machine: MachineInfo,
    #[serde(default)]
    stead_version: Option<String>,
    #[serde(default)]
    heimdal_version: Option<String>,
    lineage: Lineage,
    #[serde(default)]
    history: Vec<ForeignEntry>,
    #[serde(default)]
    checksums: BTreeMap<String, String>,
    #[serde(default)]
    resources: Option<BTreeMap<String, ResourceRecord>>,
    #[serde(default)]
    sync: Option<SyncInfo>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ForeignEntry {
    #[serde(default)]
    id: Option<String>,
    #[serde(deserialize_with = "super::schema::bounded_operation")]
    operation: String,
    timestamp: DateTime<Utc>,
    machine_id: String,
    user: String,
    serial: u64,
}

/// Reads `raw` (a version 2 record the strict reader refused) in the spec's
/// spelling: the record and what was normalised, or `None` when it is not
/// that either (the caller reports the strict reader's error).
pub(super) fn read(raw: &[u8]) -> Option<(State, Vec<String>)> {
    let f: ForeignState = serde_json::from_slice(raw).ok()?;
    let mut notes = Vec::new();
    let config_path = match (f.config_path, f.dotfiles_path) {
        (Some(_), Some(_)) => return None,
        (Some(p), None) => Some(p),
        (None, Some(p)) => {
            notes.push("\"dotfiles_path\" read as \"config_path\" (its old name)".to_string());
            Some(p)
        }
        (None, None) => None,
    };
    if let Some(v) = &f.heimdal_version {
        notes.push(format!(
            "\"heimdal_version\" {v:?} not kept (stead records its own \"stead_version\" on the next write)"
        ));
    }
    let stead_version = match f.stead_version {
        Some(v) => v,
        None => {
            if f.heimdal_version.is_none() {
                notes.push("no \"stead_version\": taken as unknown".to_string());
            }
            "unknown".to_string()
        }
    };
    let mut derived = 0usize;
    let history = f
        .history
        .into_iter()
        .enumerate()
        .map(|(index, e)| {
            let id = match e.id {
                Some(id) => id,
                None => {
                    derived += 1;
                    derived_id(index, &e)
                }
            };
            HistoryEntry {
                id,
                operation: e.operation,
                timestamp: e.timestamp,
                machine_id: e.machine_id,
                user: e.user,
                serial: e.serial,
            }
        })
        .collect();
    if derived > 0 {
        notes.push(format!(
            "{derived} history {} without an id: {} derived from each entry's content and place",
            plural(derived, "entry", "entries"),
            plural(derived, "id", "ids"),
        ));
    }
    let (checksums, foreign): (BTreeMap<_, _>, BTreeMap<_, _>) = f
        .checksums
        .into_iter()
        .partition(|(key, sum)| is_stead_checksum(key, sum));
    if !foreign.is_empty() {
        let names: Vec<&str> = foreign.keys().map(String::as_str).collect();
        notes.push(format!(
            "{} {} not in stead's form ({}) treated as unknown: stead does not take {} as its \
             own, and backs {} up before replacing or removing {}",
            foreign.len(),
            plural(foreign.len(), "checksum", "checksums"),
            names.join(", "),
            plural(foreign.len(), "that file", "those files"),
            plural(foreign.len(), "it", "each"),
            plural(foreign.len(), "it", "one"),
        ));
    }
    let mut missing = Vec::new();
    let resources = f.resources.unwrap_or_else(|| {
        missing.push("\"resources\"");
        BTreeMap::new()
    });
    let sync = f.sync.unwrap_or_else(|| {
        missing.push("\"sync\"");
        SyncInfo::default()
    });
    if !missing.is_empty() {
        notes.push(format!("no {}: started empty", missing.join(" or ")));
    }
    let state = State {
        version: f.version,
        active_profile: f.active_profile,
        config_path,
        repo_url: f.repo_url,
        last_sync: f.last_sync,
        last_apply: f.last_apply,
        machine: f.machine,
        stead_version,
        lineage: f.lineage,
        history,
        checksums: checksums
            .into_iter()
            .map(|(key, sum)| (key, crate::checksum::Checksum::from(sum)))
            .collect(),
        resources,
        sync,
        checks: Default::default(),
        migration: None,
        unread: Default::default(),
    };
    Some((state, notes))
}

/// A checksum as stead writes it: `blake3:<64 hex>` under a `~/` or
/// absolute key.
fn is_stead_checksum(key: &str, sum: &str) -> bool {
    let keyed = key.starts_with("~/") || key.starts_with('/');
    let hex = sum.strip_prefix("blake3:").unwrap_or("");
    keyed && hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `derived-<32 hex>`: a hash of the entry's place and content.
fn derived_id(index: usize, e: &ForeignEntry) -> String {
    let text = format!(
        "{index}\n{}\n{}\n{}\n{}\n{}",
        e.operation,
        e.timestamp.to_rfc3339(),
        e.machine_id,
        e.user,
        e.serial
    );
    let hex = blake3::hash(text.as_bytes()).to_hex();
    format!("derived-{}", &hex.as_str()[..32])
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &[u8] = include_bytes!("../../tests/fixtures/spec-v2-state.json");

    #[test]
    fn the_spec_example_reads_with_every_normalisation_named() {
        let (state, notes) = read(SPEC).unwrap();
        assert_eq!(state.config_path.as_deref(), Some("/Users/john/.dotfiles"));
        assert_eq!(state.lineage.serial, 42);
        assert!(state.checksums.is_empty());
        assert_eq!(state.history.len(), 1);
        assert!(state.history[0].id.starts_with("derived-"));
        let all = notes.join("\n");
        for want in [
            "dotfiles_path",
            "heimdal_version",
            "1 history entry without an id",
            "2 checksums not in stead's form (.bashrc, .vimrc)",
        ] {
            assert!(all.contains(want), "{want}: {all}");
        }
        // Deterministic: the same file, the same ids.
        assert_eq!(read(SPEC).unwrap().0, state);
    }

    #[test]
    fn derived_ids_differ_by_place_and_content() {
        let e = |serial| ForeignEntry {
            id: None,
            operation: "apply".into(),
            timestamp: DateTime::<Utc>::UNIX_EPOCH,
            machine_id: "m".into(),
            user: "u".into(),
            serial,
        };
        assert_ne!(derived_id(0, &e(1)), derived_id(1, &e(1)));
        assert_ne!(derived_id(0, &e(1)), derived_id(0, &e(2)));
        assert_eq!(derived_id(3, &e(1)), derived_id(3, &e(1)));
    }

    #[test]
    fn stead_checksums_are_kept_and_both_path_names_refused() {
        let sum = format!("blake3:{}", "a".repeat(64));
        assert!(is_stead_checksum("~/.bashrc", &sum));
        assert!(is_stead_checksum("/etc/x", &sum));
        assert!(!is_stead_checksum(".bashrc", &sum));
        assert!(!is_stead_checksum(
            "~/.bashrc",
            "5d41402abc4b2a76b9719d911017c592"
        ));
        let mut v: serde_json::Value = serde_json::from_slice(SPEC).unwrap();
        v["config_path"] = "/x".into();
        assert!(read(&serde_json::to_vec(&v).unwrap()).is_none());
        let mut v: serde_json::Value = serde_json::from_slice(SPEC).unwrap();
        v["surprise"] = 1.into();
        assert!(read(&serde_json::to_vec(&v).unwrap()).is_none());
    }
}
