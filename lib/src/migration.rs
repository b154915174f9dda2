//! Checks' items, choices and the committed migration: merge what each
//! check reported into the record, take choices (a command, a flag, a
//! preseeded file, a prompt), turn the chosen steps into a migration that
//! is committed before its first step runs, expand it into the plan's
//! changes, and record how its steps ended.
//!
//! The rules:
//! - a choice names a step and keeps the step's fingerprint; when the check
//!   later offers that step changed (or not at all) the choice is `stale`
//!   and asked again, never reused;
//! - a check that ran and no longer reports an item prunes its record and
//!   any answer for it (so answers never pile up, debconf's complaint);
//! - once committed, a migration moves only along its own steps and edges:
//!   items reported meanwhile are recorded as pending, never added to it;
//! - a step after a `reboot = true` step runs only in a later boot;
//! - a failed step ends the migration: its item is `failed` and needs a new
//!   choice (a recovery step is an ordinary step).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use chrono::{DateTime, Utc};

use crate::check::{Item, Severity};
use crate::outcome::{Outcome, Status};
use crate::plan::Plan;
use crate::resource::check::{CHECK, CheckOp, CheckSpec, check_op};
use crate::resource::exec::Run;
use crate::resource::{Action, Change, Op};
use crate::state::State;
use crate::state::checks::{
    CheckPlan, CheckRecord, Choice, ChoiceVia, ItemStatus, Migration, MigrationStep, StepStatus,
};

/// A choice that cannot be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChooseError {
    /// Not `CHECK/ITEM` (or `CHECK/ITEM=STEP` for `--choose`).
    #[error(
        "`{0}` is not an item address: write CHECK/ITEM (`db/schema-behind` for [check.db]; `--choose db/schema-behind=STEP`)"
    )]
    BadAddress(String),
    /// No check reported it.
    #[error(
        "no check has reported {0}: run 'stead check' to see the items, or preseed an answer with 'stead choose --file'"
    )]
    UnknownItem(String),
    /// Its check does not offer that step.
    #[error("{item} has no step `{step}`; its steps: {offered}")]
    UnknownStep {
        /// The item.
        item: String,
        /// The step asked for.
        step: String,
        /// What it offers.
        offered: String,
    },
    /// Errors are resolved, not set aside.
    #[error("{0} is an error: it cannot be dismissed, only resolved by choosing one of its steps")]
    CannotDismiss(String),
    /// Its migration is running.
    #[error(
        "{0} is part of the migration in progress; its choice cannot change until that migration ends ('stead apply' resumes it)"
    )]
    Running(String),
}

/// A preseeded answers file that cannot be read as one: where, and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct AnswersError {
    /// The file.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// Reads a preseeded answers file (`stead choose --file`, like
/// `debconf-set-selections`): a TOML table of `"CHECK/ITEM" = "STEP"`, or
/// `= false` to dismiss. Each problem names its line and column.
pub fn parse_answers(
    file: &str,
    text: &str,
) -> Result<Vec<(String, Option<String>)>, AnswersError> {
    let at = |offset: usize, message: String| {
        let before = &text[..offset.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        AnswersError {
            file: file.to_string(),
            line,
            column,
            message,
        }
    };
    let doc: toml::Spanned<toml::Table> = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        at(
            offset,
            format!("not a TOML table of answers: {}", e.message()),
        )
    })?;
    let spans: toml::de::DeTable = toml::de::DeTable::parse(text)
        .map(toml::Spanned::into_inner)
        .map_err(|e| at(0, e.message().to_string()))?;
    let mut answers = Vec::new();
    for (address, value) in doc.into_inner() {
        let offset = spans
            .get_key_value(address.as_str())
            .map_or(0, |(k, _)| k.span().start);
        check_of(&address).map_err(|e| at(offset, e.to_string()))?;
        let step = match value {
            toml::Value::String(step) if !step.is_empty() => Some(step),
            toml::Value::Boolean(false) => None,
            other => {
                return Err(at(
                    offset,
                    format!(
                        "\"{address}\" = {other}: an answer is a step's id (\"{address}\" = \"STEP\") or false to dismiss"
                    ),
                ));
            }
        };
        answers.push((address, step));
    }
    Ok(answers)
}

/// What settling a plan's checks needs besides the plan and the record.
#[derive(Debug, Clone, Copy)]
pub struct SettleOptions<'a> {
    /// Now (first and last seen, choices made by flag).
    pub now: DateTime<Utc>,
    /// Who runs stead (choices made by flag).
    pub user: &'a str,
    /// This boot's id (`None`: unknown, so a reboot cannot be proven).
    pub boot_id: Option<&'a str>,
    /// Choices made for this run (`--choose CHECK/ITEM=STEP`, a prompt),
    /// taken before the migration is made.
    pub choices: &'a [Answer],
}

/// A choice made for one run, kept in the record when the run is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// `CHECK/ITEM`.
    pub address: String,
    /// The step.
    pub step: String,
    /// How it was made (`flag` or `prompt`).
    pub via: ChoiceVia,
}

impl Answer {
    /// `CHECK/ITEM=STEP`, as `--choose` takes it.
    pub fn parse(text: &str, via: ChoiceVia) -> Result<Answer, ChooseError> {
        match text.split_once('=') {
            Some((address, step)) if !step.is_empty() => {
                check_of(address)?;
                Ok(Answer {
                    address: address.to_string(),
                    step: step.to_string(),
                    via,
                })
            }
            _ => Err(ChooseError::BadAddress(text.to_string())),
        }
    }
}

/// Merges each check's report into the record, takes `--choose`, makes (or
/// resumes) the migration and adds its steps to the plan, and decides each
/// check's own change: it runs again after its steps, or it is a conflict
/// while an error item has no valid choice, or it is unchanged.
pub fn settle(plan: &mut Plan, state: &State, options: &SettleOptions) -> Result<(), ChooseError> {
    let checks: Vec<(usize, CheckOp)> = plan
        .changes
        .iter()
        .enumerate()
        .filter(|(_, c)| c.kind == CHECK)
        .filter_map(|(i, c)| check_op(&c.op).map(|op| (i, op)))
        .collect();
    if checks.is_empty()
        && state.checks.is_empty()
        && state.migration.is_none()
        && options.choices.is_empty()
    {
        return Ok(());
    }
    let mut out = CheckPlan {
        records: state.checks.clone(),
        ..CheckPlan::default()
    };
    let committed: HashSet<String> = state
        .migration
        .iter()
        .flat_map(|m| m.steps.iter().map(|s| s.item.clone()))
        .collect();
    for (_, op) in &checks {
        merge_report(&mut out, &op.spec.name, &op.report, options.now, &committed);
    }
    // A check no longer declared reports nothing again: its items and
    // answers go too (unless its committed migration still holds them).
    let declared: HashSet<String> = checks
        .iter()
        .map(|(_, op)| format!("check.{}", op.spec.name))
        .collect();
    let pruned = &mut out.pruned;
    out.records.retain(|address, record| {
        let keep = declared.contains(&record.check) || committed.contains(address);
        if !keep {
            pruned.push(address.clone());
        }
        keep
    });
    for answer in options.choices {
        choose(
            &mut out.records,
            &answer.address,
            Some(&answer.step),
            answer.via,
            options.user,
            options.now,
        )?;
    }
    let specs: HashMap<&str, &CheckSpec> = checks
        .iter()
        .map(|(_, op)| (op.spec.name.as_str(), &op.spec))
        .collect();
    out.migration = match &state.migration {
        Some(m) => Some(m.clone()),
        None => {
            let new = new_migration(&mut out.records, &specs, options.now);
            out.commit = new.is_some();
            new
        }
    };
    let added = add_steps(plan, &mut out, options.boot_id);
    for (i, op) in checks {
        decide_check(&mut plan.changes[i], &op, &out, added.get(&op.spec.name));
    }
    plan.checks = out;
    Ok(())
}

/// Merges one check's report: reported items are recorded (their choices
/// checked against what is offered now), items it no longer reports are
/// pruned with their answers, unless the committed migration holds them.
fn merge_report(
    out: &mut CheckPlan,
    check_name: &str,
    report: &crate::check::Report,
    now: DateTime<Utc>,
    committed: &HashSet<String>,
) {
    let check_id = format!("check.{check_name}");
    let mut reported = HashSet::new();
    for item in &report.items {
        let address = crate::check::address(check_name, &item.id);
        let record = out
            .records
            .entry(address.clone())
            .or_insert_with(|| CheckRecord {
                check: check_id.clone(),
                item: None,
                status: ItemStatus::Pending,
                choice: None,
                note: None,
                first_seen: Some(now),
                last_seen: None,
            });
        record.first_seen.get_or_insert(now);
        // Only news moves it: a check that reports the same thing every
        // run must not make every apply write the record.
        if record.item.as_ref() != Some(item) {
            record.last_seen = Some(now);
            record.item = Some(item.clone());
        }
        if !committed.contains(&address) {
            revalidate(record);
        }
        reported.insert(address);
    }
    let pruned = &mut out.pruned;
    out.records.retain(|address, record| {
        let keep =
            record.check != check_id || reported.contains(address) || committed.contains(address);
        if !keep {
            pruned.push(address.clone());
        }
        keep
    });
}

/// Where an item stands now that it is reported as `record.item`, given
/// the choice made for it.
fn revalidate(record: &mut CheckRecord) {
    let Some(item) = &record.item else { return };
    if record.status == ItemStatus::Done {
        // Reported again after its migration finished: a new problem.
        record.status = ItemStatus::Pending;
        record.choice = None;
        record.note = Some("reported again after its migration finished".into());
        return;
    }
    if record.status == ItemStatus::Failed {
        return;
    }
    let Some(choice) = &mut record.choice else {
        record.status = ItemStatus::Pending;
        return;
    };
    let (status, note) = match &choice.step {
        None if item.severity == Severity::Error => (
            ItemStatus::Stale,
            Some("it was dismissed, and it is an error now".to_string()),
        ),
        None => match &choice.fingerprint {
            Some(fp) if *fp != item.fingerprint => (
                ItemStatus::Stale,
                Some("it changed since it was dismissed".to_string()),
            ),
            _ => {
                choice.fingerprint = Some(item.fingerprint.clone());
                (ItemStatus::Dismissed, None)
            }
        },
        Some(step_id) => match item.steps.iter().find(|s| &s.id == step_id) {
            None => (
                ItemStatus::Stale,
                Some(format!("the check no longer offers step `{step_id}`")),
            ),
            Some(step) => match &choice.fingerprint {
                Some(fp) if *fp != step.fingerprint => (
                    ItemStatus::Stale,
                    Some(format!(
                        "step `{step_id}` changed since it was chosen (what it runs, its user, its order or its reboot)"
                    )),
                ),
                _ => {
                    choice.fingerprint = Some(step.fingerprint.clone());
                    (ItemStatus::Chosen, None)
                }
            },
        },
    };
    record.status = status;
    record.note = note;
}

/// Takes a choice for `address`: a step (`Some`), or a dismissal. An item no
/// check reported yet can be answered only by a preseeded file (bound when
/// it is reported).
pub fn choose(
    records: &mut BTreeMap<String, CheckRecord>,
    address: &str,
    step: Option<&str>,
    via: ChoiceVia,
    by: &str,
    now: DateTime<Utc>,
) -> Result<(), ChooseError> {
    let check = check_of(address)?;
    if !records.contains_key(address) && via != ChoiceVia::File {
        return Err(ChooseError::UnknownItem(address.to_string()));
    }
    let record = records
        .entry(address.to_string())
        .or_insert_with(|| CheckRecord {
            check: format!("check.{check}"),
            item: None,
            status: ItemStatus::Pending,
            choice: None,
            note: None,
            first_seen: None,
            last_seen: None,
        });
    if record.status == ItemStatus::Running {
        return Err(ChooseError::Running(address.to_string()));
    }
    let fingerprint = match (&record.item, step) {
        (None, _) => None,
        (Some(item), Some(step)) => Some(offered_step(item, address, step)?.to_string()),
        (Some(item), None) if item.severity == Severity::Error => {
            return Err(ChooseError::CannotDismiss(address.to_string()));
        }
        (Some(item), None) => Some(item.fingerprint.clone()),
    };
    record.status = match (&record.item, step) {
        (None, _) => ItemStatus::Pending,
        (Some(_), Some(_)) => ItemStatus::Chosen,
        (Some(_), None) => ItemStatus::Dismissed,
    };
    record.note = None;
    record.choice = Some(Choice {
        step: step.map(str::to_string),
        fingerprint,
        via,
        by: by.to_string(),
        at: now,
    });
    Ok(())
}

/// The fingerprint of `item`'s step `step`, or why there is none.
fn offered_step<'i>(item: &'i Item, address: &str, step: &str) -> Result<&'i str, ChooseError> {
    item.steps
        .iter()
        .find(|s| s.id == step)
        .map(|s| s.fingerprint.as_str())
        .ok_or_else(|| ChooseError::UnknownStep {
            item: address.to_string(),
            step: step.to_string(),
            offered: if item.steps.is_empty() {
                "none (it offers no step)".to_string()
            } else {
                item.steps
                    .iter()
                    .map(|s| s.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        })
}

/// The check part of `CHECK/ITEM`.
fn check_of(address: &str) -> Result<&str, ChooseError> {
    let id = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    };
    match address.split_once('/') {
        Some((check, item)) if id(check) && id(item) => Ok(check),
        _ => Err(ChooseError::BadAddress(address.to_string())),
    }
}

/// A migration of every chosen item whose check is declared: its chosen
/// step and the steps that step runs after (within the item), in the
/// order the check listed them. The items become `running`.
fn new_migration(
    records: &mut BTreeMap<String, CheckRecord>,
    specs: &HashMap<&str, &CheckSpec>,
    now: DateTime<Utc>,
) -> Option<Migration> {
    let mut steps = Vec::new();
    for (address, record) in records.iter_mut() {
        if record.status != ItemStatus::Chosen {
            continue;
        }
        let (Some(item), Some(chosen)) = (
            &record.item,
            record.choice.as_ref().and_then(|c| c.step.as_ref()),
        ) else {
            continue;
        };
        let Some(spec) = check_of(address).ok().and_then(|c| specs.get(c)) else {
            continue;
        };
        let wanted = with_prerequisites(item, chosen);
        for step in item.steps.iter().filter(|s| wanted.contains(s.id.as_str())) {
            steps.push(committed_step(address, step, spec));
        }
        record.status = ItemStatus::Running;
    }
    (!steps.is_empty()).then(|| Migration {
        id: format!("migration-{}", uuid::Uuid::new_v4()),
        committed_at: now,
        steps,
    })
}

/// `chosen` and every step it runs after, transitively.
fn with_prerequisites<'i>(item: &'i Item, chosen: &'i str) -> HashSet<&'i str> {
    let mut wanted = HashSet::new();
    let mut stack = vec![chosen];
    while let Some(id) = stack.pop() {
        if !wanted.insert(id) {
            continue;
        }
        if let Some(step) = item.steps.iter().find(|s| s.id == id) {
            stack.extend(step.after.iter().map(String::as_str));
        }
    }
    wanted
}

/// A step as committed: what runs, where, as whom, exactly.
fn committed_step(address: &str, step: &crate::check::Step, spec: &CheckSpec) -> MigrationStep {
    let mut env = spec.env.clone();
    env.entry("STEAD_HOME".to_string())
        .or_insert_with(|| spec.home.display().to_string());
    MigrationStep {
        item: address.to_string(),
        step: step.id.clone(),
        title: step.title.clone(),
        after: step.after.clone(),
        reboot: step.reboot,
        fingerprint: step.fingerprint.clone(),
        command: step.command.clone(),
        user: step.user.clone(),
        cwd: spec.cwd.clone(),
        env,
        timeout_ms: spec.timeout_ms,
        status: StepStatus::Pending,
        boot_id: None,
    }
}

/// The id of a step's change: `check.CHECK/ITEM/STEP`.
pub fn step_change_id(item: &str, step: &str) -> String {
    format!("check.{item}/{step}")
}

/// Adds the migration's pending steps that may run in this boot to the
/// plan, before its removals, each waiting for what its check waits for
/// and for the steps it runs after; a check's own change waits for its
/// steps. Returns, per check name, the ids of the steps added.
fn add_steps(
    plan: &mut Plan,
    out: &mut CheckPlan,
    boot_id: Option<&str>,
) -> HashMap<String, Vec<String>> {
    let mut added: HashMap<String, Vec<String>> = HashMap::new();
    let Some(migration) = &out.migration else {
        return added;
    };
    let runnable: Vec<&MigrationStep> = migration
        .steps
        .iter()
        .filter(|s| s.status == StepStatus::Pending)
        .filter(|s| {
            let waits = waits_for_reboot(migration, s, boot_id);
            if waits {
                out.waiting_for_reboot
                    .push(step_change_id(&s.item, &s.step));
            }
            !waits
        })
        .collect();
    if runnable.is_empty() {
        return added;
    }
    let at = plan.removals_from;
    let n = runnable.len();
    let check_index: HashMap<String, usize> = plan
        .changes
        .iter()
        .enumerate()
        .filter(|(_, c)| c.kind == CHECK)
        .map(|(i, c)| (c.id.clone(), i))
        .collect();
    // Removals move up by `n`; so do the indices that name them.
    for deps in &mut plan.depends_on {
        for d in deps.iter_mut().filter(|d| **d >= at) {
            *d += n;
        }
    }
    let position: HashMap<(&str, &str), usize> = runnable
        .iter()
        .enumerate()
        .map(|(k, s)| ((s.item.as_str(), s.step.as_str()), at + k))
        .collect();
    let mut new_changes = Vec::with_capacity(n);
    let mut new_deps = Vec::with_capacity(n);
    for step in &runnable {
        let check_name = step.item.split_once('/').map_or("", |(c, _)| c);
        let check_at = check_index.get(&format!("check.{check_name}")).copied();
        let mut deps: Vec<usize> = check_at
            .map(|i| plan.depends_on[i].clone())
            .unwrap_or_default();
        deps.extend(
            step.after
                .iter()
                .filter_map(|a| position.get(&(step.item.as_str(), a.as_str())).copied()),
        );
        new_changes.push(step_change(&migration.id, step, &plan.home));
        new_deps.push(deps);
        added
            .entry(check_name.to_string())
            .or_default()
            .push(step_change_id(&step.item, &step.step));
    }
    for (k, step) in runnable.iter().enumerate() {
        let check_name = step.item.split_once('/').map_or("", |(c, _)| c);
        if let Some(&i) = check_index.get(&format!("check.{check_name}")) {
            plan.depends_on[i].push(at + k);
        }
    }
    plan.changes.splice(at..at, new_changes);
    plan.depends_on.splice(at..at, new_deps);
    plan.removals_from += n;
    added
}

/// A step waits for a reboot when one of the steps it runs after (at any
/// depth) must reboot the machine and has not run in an earlier boot.
fn waits_for_reboot(migration: &Migration, step: &MigrationStep, boot_id: Option<&str>) -> bool {
    let mut stack: Vec<&str> = step.after.iter().map(String::as_str).collect();
    let mut seen = HashSet::new();
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        let Some(before) = migration.step(&step.item, id) else {
            continue;
        };
        if before.reboot {
            let rebooted_since = before.status == StepStatus::Done
                && boot_id.is_some()
                && before.boot_id.as_deref() != boot_id;
            if !rebooted_since {
                return true;
            }
        }
        stack.extend(before.after.iter().map(String::as_str));
    }
    false
}

/// The change that runs a committed step: a one-shot whose key names the
/// migration, so it never runs twice in it and a later migration of the
/// same item runs it anew.
fn step_change(migration_id: &str, step: &MigrationStep, home: &Path) -> Change {
    let who = step
        .user
        .as_deref()
        .map(|u| format!(" (as {u})"))
        .unwrap_or_default();
    Change {
        id: step_change_id(&step.item, &step.step),
        kind: CHECK,
        action: Action::Update,
        keys: Vec::new(),
        reason: format!(
            "migration step: {}{who}: {}",
            step.title,
            step.command.display()
        ),
        diff: None,
        checksum: None,
        op: Op::Run(Box::new(Run {
            command: step.command.clone(),
            cwd: Some(step.cwd.clone()),
            env: step.env.clone(),
            timeout_ms: step.timeout_ms,
            creates: None,
            unless: None,
            onlyif: None,
            idempotency_key: Some(format!("{migration_id}:{}/{}", step.item, step.step)),
            refresh_only: false,
            home: home.to_path_buf(),
            output_of: None,
            user: step.user.clone(),
        })),
        retry: Default::default(),
        notify: Default::default(),
        sensitive: false,
    }
}

/// A check's own change: run again after its steps; a conflict while one
/// of its error items has no valid choice or its steps wait for a reboot;
/// else unchanged.
fn decide_check(change: &mut Change, op: &CheckOp, out: &CheckPlan, steps: Option<&Vec<String>>) {
    let prefix = format!("{}/", op.spec.name);
    let items: Vec<(&String, &CheckRecord)> = out
        .records
        .iter()
        .filter(|(a, _)| a.starts_with(&prefix))
        .collect();
    let waiting: Vec<&String> = out
        .waiting_for_reboot
        .iter()
        .filter(|s| s.starts_with(&format!("check.{prefix}")))
        .collect();
    if let Some(steps) = steps {
        let mut op = op.clone();
        op.resolves = out
            .migration
            .iter()
            .flat_map(|m| &m.steps)
            .filter_map(|s| s.item.strip_prefix(&prefix))
            .map(str::to_string)
            .collect();
        op.resolves.dedup();
        match crate::resource::check::to_op(&op) {
            Ok(gate) => {
                change.op = gate;
                change.action = Action::Update;
                change.reason = format!(
                    "checks again after its migration steps: {}",
                    steps.join(", ")
                );
            }
            Err(e) => {
                change.op = Op::None;
                change.action = Action::Conflict;
                change.reason = e.to_string();
            }
        }
        return;
    }
    change.op = Op::None;
    let blocking: Vec<String> = items
        .iter()
        .filter(|(_, r)| blocks(r))
        .map(|(a, r)| format!("{a} ({})", r.status.as_str()))
        .collect();
    if !blocking.is_empty() {
        change.action = Action::Conflict;
        change.reason = format!(
            "error items without a valid choice: {}; choose a step with 'stead choose CHECK/ITEM STEP' (or 'stead apply --choose CHECK/ITEM=STEP')",
            blocking.join(", ")
        );
    } else if !waiting.is_empty() {
        change.action = Action::Conflict;
        change.reason = format!(
            "its migration waits for a reboot before {}; reboot, then apply again",
            waiting
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    } else {
        change.action = Action::Unchanged;
        change.reason = match items.len() {
            0 => "no items".to_string(),
            n => format!(
                "{n} item{}, none blocking: {}",
                if n == 1 { "" } else { "s" },
                items
                    .iter()
                    .map(|(a, r)| format!("{a} ({})", r.status.as_str()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
    }
}

/// An error item that nothing resolves yet: no valid choice, or its
/// migration failed.
pub fn blocks(record: &CheckRecord) -> bool {
    let error = record
        .item
        .as_ref()
        .is_some_and(|i| i.severity == Severity::Error);
    error
        && matches!(
            record.status,
            ItemStatus::Pending | ItemStatus::Stale | ItemStatus::Failed
        )
}

/// Error items of a plan that wait for a choice, by address.
pub fn unchosen(plan: &Plan) -> Vec<(&String, &CheckRecord)> {
    plan.checks
        .records
        .iter()
        .filter(|(_, r)| blocks(r))
        .collect()
}

/// Records how the plan's migration steps and checks ended into `state`:
/// the records the plan settled; each step done (with this boot), failed or
/// still pending; a check that ran again merges what it reported (new
/// items pending, never added to the migration). A finished migration is
/// closed and its items are done; a failed step closes it too, its item
/// failed and the steps not run dropped.
pub fn record(state: &mut State, plan: &Plan, outcome: &Outcome, boot_id: Option<&str>) {
    if plan.checks.is_empty() {
        return;
    }
    let mut out = plan.checks.clone();
    let statuses: HashMap<&str, &Status> = plan
        .changes
        .iter()
        .zip(&outcome.statuses)
        .map(|(c, s)| (c.id.as_str(), s))
        .collect();
    if let Some(migration) = &mut out.migration {
        record_steps(migration, plan, &statuses, boot_id);
    }
    close_migration(&mut out);
    // After the close: a finished item the check no longer reports is
    // pruned now, one it still reports is a new problem.
    let committed: HashSet<String> = out
        .migration
        .iter()
        .flat_map(|m| m.steps.iter().map(|s| s.item.clone()))
        .collect();
    let now = Utc::now();
    for change in plan.changes.iter().filter(|c| c.kind == CHECK) {
        let (Some(Status::Done(applied)), Some(op)) =
            (statuses.get(change.id.as_str()), check_op(&change.op))
        else {
            continue;
        };
        if let Some(report) = &applied.report {
            merge_report(&mut out, &op.spec.name, report, now, &committed);
        }
    }
    state.checks = out.records;
    state.migration = out.migration;
}

/// Each step's outcome into the migration: done (with the boot it ran in),
/// failed, or pending (not run, interrupted, skipped). A step the journal
/// says already succeeded (settled unchanged) is done.
fn record_steps(
    migration: &mut Migration,
    plan: &Plan,
    statuses: &HashMap<&str, &Status>,
    boot_id: Option<&str>,
) {
    for step in &mut migration.steps {
        let id = step_change_id(&step.item, &step.step);
        let Some(status) = statuses.get(id.as_str()) else {
            continue;
        };
        let action = plan.change(&id).map(|c| c.action);
        let settled_done = action == Some(Action::Unchanged);
        if action == Some(Action::Conflict) {
            // Interrupted in an earlier run: it waits for `--rerun`.
            continue;
        }
        match status {
            Status::Done(applied) if applied.not_run.is_none() => {
                step.status = StepStatus::Done;
                step.boot_id = boot_id.map(str::to_string);
            }
            Status::Unchanged if settled_done => {
                step.status = StepStatus::Done;
                step.boot_id
                    .get_or_insert_with(|| boot_id.unwrap_or("").to_string());
            }
            Status::Failed(_) => step.status = StepStatus::Failed,
            _ => {}
        }
    }
}

/// Ends a migration that finished (its items done) or failed (the items
/// with a failed step failed, those whose steps all ran done, the rest
/// asked again).
fn close_migration(out: &mut CheckPlan) {
    let Some(migration) = &out.migration else {
        return;
    };
    let failed = migration
        .steps
        .iter()
        .any(|s| s.status == StepStatus::Failed);
    if !failed && !migration.finished() {
        return;
    }
    let mut by_item: BTreeMap<&str, Vec<&MigrationStep>> = BTreeMap::new();
    for step in &migration.steps {
        by_item.entry(&step.item).or_default().push(step);
    }
    for (item, steps) in by_item {
        let Some(record) = out.records.get_mut(item) else {
            continue;
        };
        if let Some(bad) = steps.iter().find(|s| s.status == StepStatus::Failed) {
            record.status = ItemStatus::Failed;
            record.note = Some(format!(
                "step `{}` failed; choose again (a recovery step, or the same one)",
                bad.step
            ));
        } else if steps.iter().all(|s| s.status == StepStatus::Done) {
            record.status = ItemStatus::Done;
            record.note = None;
        } else {
            record.status = ItemStatus::Pending;
            record.choice = None;
            record.note =
                Some("its migration ended before its steps ran (another step failed)".into());
        }
    }
    out.migration = None;
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::check::Report;

    fn report(json: &str) -> Report {
        crate::check::parse("check.db", json.as_bytes()).unwrap()
    }

    /// An error `behind` whose `migrate` step runs `command`, after `backup`.
    fn behind(command: &str) -> Report {
        report(&format!(
            r#"{{"items": [{{"id": "behind", "severity": "error", "message": "m",
              "steps": [{{"id": "backup", "command": "b"}},
                        {{"id": "migrate", "command": "{command}", "after": ["backup"]}}]}},
              {{"id": "tidy", "severity": "warning", "message": "w"}}]}}"#
        ))
    }

    /// A check named `db` whose steps see `home`.
    fn spec(home: &str) -> CheckSpec {
        CheckSpec {
            name: "db".into(),
            command: crate::command::Command::Shell("true".into()),
            user: None,
            cwd: "/".into(),
            env: BTreeMap::new(),
            timeout_ms: None,
            home: home.into(),
        }
    }

    fn merged(out: &mut CheckPlan, r: &Report) {
        merge_report(out, "db", r, Utc::now(), &HashSet::new());
    }

    fn pick(
        out: &mut CheckPlan,
        address: &str,
        step: Option<&str>,
        via: ChoiceVia,
    ) -> Result<(), ChooseError> {
        choose(&mut out.records, address, step, via, "me", Utc::now())
    }

    #[test]
    fn a_choice_goes_stale_when_its_step_changes_and_comes_back_when_chosen_again() {
        let mut out = CheckPlan::default();
        merged(&mut out, &behind("m1"));
        assert_eq!(out.records["db/behind"].status, ItemStatus::Pending);
        pick(&mut out, "db/behind", Some("migrate"), ChoiceVia::Command).unwrap();
        merged(&mut out, &behind("m1"));
        assert_eq!(out.records["db/behind"].status, ItemStatus::Chosen);
        merged(&mut out, &behind("m2"));
        assert_eq!(out.records["db/behind"].status, ItemStatus::Stale);
        assert!(blocks(&out.records["db/behind"]));
        pick(&mut out, "db/behind", Some("migrate"), ChoiceVia::Command).unwrap();
        merged(&mut out, &behind("m2"));
        assert_eq!(out.records["db/behind"].status, ItemStatus::Chosen);
    }

    #[test]
    fn preseeded_answers_bind_when_reported_and_go_when_not() {
        let mut out = CheckPlan::default();
        assert_eq!(
            pick(&mut out, "db/behind", Some("migrate"), ChoiceVia::Command),
            Err(ChooseError::UnknownItem("db/behind".into()))
        );
        pick(&mut out, "db/behind", Some("migrate"), ChoiceVia::File).unwrap();
        pick(&mut out, "db/gone", Some("x"), ChoiceVia::File).unwrap();
        merged(&mut out, &behind("m"));
        assert_eq!(out.records["db/behind"].status, ItemStatus::Chosen);
        assert!(
            out.records["db/behind"]
                .choice
                .as_ref()
                .unwrap()
                .fingerprint
                .is_some()
        );
        assert!(!out.records.contains_key("db/gone"));
        assert_eq!(out.pruned, vec!["db/gone".to_string()]);
        // A preseeded step the check does not offer is stale, not run.
        let mut out = CheckPlan::default();
        pick(&mut out, "db/behind", Some("restore"), ChoiceVia::File).unwrap();
        merged(&mut out, &behind("m"));
        assert_eq!(out.records["db/behind"].status, ItemStatus::Stale);
    }

    #[test]
    fn a_new_migration_takes_the_chosen_step_and_what_it_runs_after() {
        let mut out = CheckPlan::default();
        let r = behind("m");
        merged(&mut out, &r);
        pick(&mut out, "db/behind", Some("migrate"), ChoiceVia::Flag).unwrap();
        let spec = spec("/home/u");
        let specs: HashMap<&str, &CheckSpec> = [("db", &spec)].into();
        let m = new_migration(&mut out.records, &specs, Utc::now()).unwrap();
        let steps: Vec<&str> = m.steps.iter().map(|s| s.step.as_str()).collect();
        assert_eq!(steps, ["backup", "migrate"]);
        assert_eq!(m.steps[0].env["STEAD_HOME"], "/home/u");
        assert_eq!(out.records["db/behind"].status, ItemStatus::Running);
        assert_eq!(
            pick(&mut out, "db/behind", Some("backup"), ChoiceVia::Command),
            Err(ChooseError::Running("db/behind".into()))
        );
    }

    #[test]
    fn a_failed_step_closes_the_migration_and_its_item_needs_a_new_choice() {
        let mut out = CheckPlan::default();
        merged(&mut out, &behind("m"));
        pick(&mut out, "db/behind", Some("migrate"), ChoiceVia::Flag).unwrap();
        let spec = spec("/");
        let specs: HashMap<&str, &CheckSpec> = [("db", &spec)].into();
        let mut m = new_migration(&mut out.records, &specs, Utc::now()).unwrap();
        m.steps[0].status = StepStatus::Done;
        m.steps[1].status = StepStatus::Failed;
        out.migration = Some(m);
        close_migration(&mut out);
        assert!(out.migration.is_none());
        assert_eq!(out.records["db/behind"].status, ItemStatus::Failed);
        assert!(blocks(&out.records["db/behind"]));
    }

    #[test]
    fn a_step_after_a_reboot_step_waits_for_another_boot() {
        let step = |id: &str, after: &[&str], reboot: bool, status: StepStatus| MigrationStep {
            item: "db/k".into(),
            step: id.into(),
            title: id.into(),
            after: after.iter().map(|s| s.to_string()).collect(),
            reboot,
            fingerprint: String::new(),
            command: crate::command::Command::Shell("true".into()),
            user: None,
            cwd: "/".into(),
            env: BTreeMap::new(),
            timeout_ms: None,
            status,
            boot_id: (status == StepStatus::Done).then(|| "b1".to_string()),
        };
        let mut m = Migration {
            id: "m".into(),
            committed_at: Utc::now(),
            steps: vec![
                step("install", &[], true, StepStatus::Pending),
                step("finish", &["install"], false, StepStatus::Pending),
            ],
        };
        assert!(waits_for_reboot(&m, &m.steps[1], Some("b1")));
        m.steps[0] = step("install", &[], true, StepStatus::Done);
        assert!(waits_for_reboot(&m, &m.steps[1], Some("b1")), "same boot");
        assert!(
            waits_for_reboot(&m, &m.steps[1], None),
            "no boot id: unprovable"
        );
        assert!(!waits_for_reboot(&m, &m.steps[1], Some("b2")));
        assert!(!waits_for_reboot(&m, &m.steps[0], Some("b1")));
    }

    #[test]
    fn answers_files_name_the_place_of_a_bad_answer() {
        let ok = parse_answers("a.toml", "\"db/x\" = \"s\"\n\"db/y\" = false\n").unwrap();
        assert_eq!(
            ok,
            vec![
                ("db/x".to_string(), Some("s".to_string())),
                ("db/y".to_string(), None)
            ]
        );
        let e = parse_answers("a.toml", "\"db/x\" = \"s\"\n\"db/y\" = 3\n").unwrap_err();
        assert_eq!((e.line, e.column), (2, 1), "{e}");
        let e = parse_answers("a.toml", "\"nocheck\" = \"s\"\n").unwrap_err();
        assert!(e.message.contains("not an item address"), "{e}");
        let e = parse_answers("a.toml", "x = [\n").unwrap_err();
        assert!(e.to_string().starts_with("a.toml:"), "{e}");
        assert!(parse_answers("a.toml", "").unwrap().is_empty());
    }

    /// One thing that happens to the record.
    #[derive(Debug, Clone)]
    enum Event {
        /// The check reports `behind` (with `migrate` running `m{0}`), or
        /// nothing when `None`.
        Report(Option<u8>),
        /// A choice by command: a step, or a dismissal.
        Choose(Option<&'static str>),
        /// A preseeded choice.
        Preseed(&'static str),
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            prop::option::of(0u8..3).prop_map(Event::Report),
            prop::option::of(prop_oneof![Just("backup"), Just("migrate"), Just("nope")])
                .prop_map(Event::Choose),
            prop_oneof![Just("migrate"), Just("nope")].prop_map(Event::Preseed),
        ]
    }

    proptest! {
        /// Whatever happens, after a check ran: a chosen item's choice has
        /// the fingerprint of the step the check offers now (never a stale
        /// one reused); nothing the check did not report is kept; an error
        /// is never dismissed.
        #[test]
        fn choices_are_never_reused_once_their_step_changed(events in prop::collection::vec(event(), 1..25)) {
            let mut out = CheckPlan::default();
            let mut last: Option<Report> = None;
            for e in events {
                match e {
                    Event::Report(v) => {
                        let r = v.map_or_else(|| report(r#"{"items": []}"#), |v| behind(&format!("m{v}")));
                        out.pruned.clear();
                        merged(&mut out, &r);
                        last = Some(r);
                    }
                    Event::Choose(step) => { let _ = pick(&mut out, "db/behind", step, ChoiceVia::Command); }
                    Event::Preseed(step) => { let _ = pick(&mut out, "db/behind", Some(step), ChoiceVia::File); }
                }
                if let Some(r) = &last {
                    let reported: HashSet<String> = r.items.iter().map(|i| format!("db/{}", i.id)).collect();
                    for (address, record) in &out.records {
                        if record.item.is_some() {
                            prop_assert!(reported.contains(address), "{address} kept though not reported");
                        }
                        if record.status == ItemStatus::Chosen {
                            let item = record.item.as_ref().unwrap();
                            let choice = record.choice.as_ref().unwrap();
                            let step = item.steps.iter().find(|s| Some(&s.id) == choice.step.as_ref()).unwrap();
                            prop_assert_eq!(Some(&step.fingerprint), choice.fingerprint.as_ref());
                        }
                        if record.status == ItemStatus::Dismissed {
                            prop_assert!(record.item.as_ref().unwrap().severity != Severity::Error);
                        }
                    }
                }
            }
        }
    }
}
