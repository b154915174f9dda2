//! What the state record keeps of checks (schema version 3): each item a
//! check reported, by its address (`db/schema-behind`), with the choice made
//! for it and where it stands; and the migration committed from the chosen
//! steps, with each step's progress. The rules that change them live in
//! [`crate::migration`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::check::Item;
use crate::command::Command;

/// Where an item stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemStatus {
    /// Reported, no choice yet.
    Pending,
    /// A step was chosen; it runs at the next apply.
    Chosen,
    /// Set aside by a person (warnings and recommendations only).
    Dismissed,
    /// Its chosen steps are in the committed migration.
    Running,
    /// Its migration finished.
    Done,
    /// A step of its migration failed.
    Failed,
    /// Its choice no longer matches what the check reports (the step
    /// changed or is gone): asked again, never reused.
    Stale,
}

impl ItemStatus {
    /// The word shown for it.
    pub fn as_str(self) -> &'static str {
        match self {
            ItemStatus::Pending => "pending",
            ItemStatus::Chosen => "chosen",
            ItemStatus::Dismissed => "dismissed",
            ItemStatus::Running => "running",
            ItemStatus::Done => "done",
            ItemStatus::Failed => "failed",
            ItemStatus::Stale => "stale",
        }
    }
}

/// How a choice was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChoiceVia {
    /// Asked on the terminal by `apply`.
    Prompt,
    /// `stead choose ITEM STEP` (or `--dismiss`).
    Command,
    /// `stead apply --choose ITEM=STEP`.
    Flag,
    /// `stead choose --file` (preseeding).
    File,
}

/// A choice for an item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Choice {
    /// The step chosen (`None`: dismissed).
    pub step: Option<String>,
    /// The fingerprint of the step when it was chosen (`None`: answered
    /// before the item was reported; bound when it is).
    pub fingerprint: Option<String>,
    /// How it was made.
    pub via: ChoiceVia,
    /// Who made it.
    pub by: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// One item of a check, as the record keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRecord {
    /// The check that reports it (`check.db`).
    pub check: String,
    /// What the check last reported (`None`: answered before it was
    /// ever reported).
    pub item: Option<Item>,
    /// Where it stands.
    pub status: ItemStatus,
    /// The choice made, if any.
    pub choice: Option<Choice>,
    /// Why it is stale or failed, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// When a check first reported it.
    pub first_seen: Option<DateTime<Utc>>,
    /// When a check last reported it differently (a report that says the
    /// same every run does not move it, so it never makes a run write).
    pub last_seen: Option<DateTime<Utc>>,
}

/// Where a committed step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// Not run yet (or interrupted: the journal tells).
    Pending,
    /// Ran and succeeded.
    Done,
    /// Ran and failed.
    Failed,
}

/// One step of the committed migration: what runs, exactly as committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationStep {
    /// The item it resolves (`db/schema-behind`).
    pub item: String,
    /// Its id within the item.
    pub step: String,
    /// What it does, in words.
    pub title: String,
    /// Steps of the same item it waits for.
    pub after: Vec<String>,
    /// The machine must reboot after it.
    pub reboot: bool,
    /// Its fingerprint when committed.
    pub fingerprint: String,
    /// What runs.
    pub command: Command,
    /// Who it runs as (`None`: the user stead runs as).
    pub user: Option<String>,
    /// Where it runs (the check's `cwd`).
    pub cwd: PathBuf,
    /// Extra environment (the check's `env`).
    pub env: BTreeMap<String, String>,
    /// Killed after this many milliseconds (the check's `timeout`).
    pub timeout_ms: Option<u64>,
    /// Where it stands.
    pub status: StepStatus,
    /// The boot it finished in (a reboot step's dependents wait for
    /// another one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
}

/// The migration committed from the chosen steps: once committed, it moves
/// only along its own steps and edges, whatever the checks report meanwhile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Migration {
    /// `migration-<uuid>`, part of every step's idempotency key.
    pub id: String,
    /// When it was committed.
    pub committed_at: DateTime<Utc>,
    /// Its steps, in the order they were committed.
    pub steps: Vec<MigrationStep>,
}

impl Migration {
    /// The step of `item` named `step`.
    pub fn step(&self, item: &str, step: &str) -> Option<&MigrationStep> {
        self.steps.iter().find(|s| s.item == item && s.step == step)
    }

    /// True when every step succeeded.
    pub fn finished(&self) -> bool {
        self.steps.iter().all(|s| s.status == StepStatus::Done)
    }
}

/// What a plan found of checks and will write into the record: the items
/// after its checks ran (and `--choose`), the migration it runs, and what
/// it pruned or leaves for after a reboot. Empty when the manifest has no
/// check and the record holds none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckPlan {
    /// The record's `checks` once the plan is applied.
    pub records: BTreeMap<String, CheckRecord>,
    /// The migration the plan runs: one it commits, or the one in progress.
    pub migration: Option<Migration>,
    /// The migration is new: it is committed to the record before its
    /// first step runs.
    #[serde(default)]
    pub commit: bool,
    /// Items no longer reported, whose records (and answers) go.
    #[serde(default)]
    pub pruned: Vec<String>,
    /// Committed steps that wait for a reboot (`check.db/ITEM/STEP`).
    #[serde(default)]
    pub waiting_for_reboot: Vec<String>,
}

impl CheckPlan {
    /// Nothing about checks at all.
    pub fn is_empty(&self) -> bool {
        self == &CheckPlan::default()
    }

    /// The records as the checks left them, before a new migration took
    /// its items (`running` only for a migration already committed): what
    /// `stead check` records and what a plan shows.
    pub fn records_as_checked(&self) -> BTreeMap<String, CheckRecord> {
        let mut records = self.records.clone();
        if self.commit {
            for record in records.values_mut() {
                if record.status == ItemStatus::Running {
                    record.status = ItemStatus::Chosen;
                }
            }
        }
        records
    }
}
