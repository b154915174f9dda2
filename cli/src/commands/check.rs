//! `stead check` (run the manifest's checks, record and list their items)
//! and `stead choose` (a step for an item, a dismissal, or answers from a
//! file), and the listing of items that `plan` and `apply` share.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use serde_json::json;
use stead_lib::converge::{self, DEFAULT_JOBS, Target};
use stead_lib::migration::{self, Answer};
use stead_lib::state::checks::{CheckPlan, CheckRecord, ChoiceVia, ItemStatus};

use crate::context::Context;
use crate::exit::Exit;
use crate::output::{Paint, outln, print_json};

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Use this profile (else the recorded one)
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["item", "dismiss", "file"])))]
pub struct ChooseArgs {
    /// The item: CHECK/ITEM (`db/schema-behind` for [check.db])
    #[arg(value_name = "CHECK/ITEM")]
    pub item: Option<String>,

    /// The step to run for it
    #[arg(value_name = "STEP", requires = "item")]
    pub step: Option<String>,

    /// Set a warning or recommendation aside (an error cannot be)
    #[arg(long, value_name = "CHECK/ITEM", conflicts_with_all = ["item", "file"])]
    pub dismiss: Option<String>,

    /// Preseed answers from a TOML file: `"CHECK/ITEM" = "STEP"`, or
    /// `"CHECK/ITEM" = false` to dismiss (also for items not reported yet)
    #[arg(long, value_name = "FILE", conflicts_with_all = ["item", "dismiss"])]
    pub file: Option<std::path::PathBuf>,
}

/// `stead check`: runs every check of the manifest (nothing else changes),
/// records what they report, lists each item with its steps and choice.
/// Exit 4 when an error item has no valid choice.
pub fn run(ctx: &Context, args: &CheckArgs) -> Result<ExitCode> {
    let guard = ctx.lock("check", None)?;
    let state = ctx
        .load_state_locked(&guard)?
        .ok_or_else(|| ctx.not_initialized_error())?;
    let prepared = converge::prepare_read_only(
        &ctx.layout,
        &state,
        &ctx.plan_options(None, args.profile.as_deref(), false, DEFAULT_JOBS),
        &converge::Silent,
    )?;
    let target = Target {
        layout: &ctx.layout,
        store: &ctx.store,
        guard: &guard,
    };
    let state = converge::record_checks(target, state, &prepared)?;
    guard.release()?;
    let checks = &prepared.plan.checks;
    let blocking = state
        .checks
        .values()
        .filter(|r| migration::blocks(r))
        .count();
    if ctx.json {
        print_json(&json!({
            "items": items_json(&state.checks),
            "migration": checks.migration,
            "pruned": checks.pruned,
            "blocking": blocking,
        }));
    } else {
        for address in &checks.pruned {
            outln!("Pruned {address}: its check no longer reports it (its answer went with it).");
        }
        if state.checks.is_empty() {
            outln!("No items: every check reports all is well.");
        } else {
            print_items(&ctx.out, &state.checks);
        }
        if let Some(m) = &state.migration {
            outln!(
                "\nA migration is in progress ({}, committed {}); 'stead apply' resumes it.",
                m.id,
                m.committed_at.format("%Y-%m-%d %H:%M:%S UTC")
            );
        }
        if blocking > 0 {
            outln!(
                "\n{blocking} error item(s) need a choice: 'stead choose CHECK/ITEM STEP', then 'stead apply'."
            );
        }
    }
    Ok(if blocking > 0 {
        Exit::Found.into()
    } else {
        ExitCode::SUCCESS
    })
}

/// `stead choose`: records a choice in the state record, for the next apply.
pub fn choose(ctx: &Context, args: &ChooseArgs) -> Result<ExitCode> {
    let answers = match (&args.item, &args.dismiss, &args.file) {
        (Some(item), _, _) => {
            let Some(step) = &args.step else {
                anyhow::bail!(
                    "name the step to run for {item}: 'stead choose {item} STEP' ('stead check' lists its steps)"
                );
            };
            vec![(item.clone(), Some(step.clone()), ChoiceVia::Command)]
        }
        (None, Some(item), _) => vec![(item.clone(), None, ChoiceVia::Command)],
        (None, None, Some(file)) => read_answers(file)?,
        (None, None, None) => anyhow::bail!("name an item, --dismiss ITEM or --file FILE"),
    };
    let guard = ctx.lock("choose", None)?;
    let mut state = ctx
        .load_state_locked(&guard)?
        .ok_or_else(|| ctx.not_initialized_error())?;
    let user = stead_lib::machine::current_user();
    let now = ctx.now();
    for (address, step, via) in &answers {
        migration::choose(
            &mut state.checks,
            address,
            step.as_deref(),
            *via,
            &user,
            now,
        )?;
    }
    ctx.store.commit(&guard, &mut state, "choose")?;
    guard.release()?;
    if ctx.json {
        let chosen: BTreeMap<&String, Option<&CheckRecord>> = answers
            .iter()
            .map(|(a, _, _)| (a, state.checks.get(a)))
            .collect();
        print_json(&json!({ "chosen": chosen }));
        return Ok(ExitCode::SUCCESS);
    }
    for (address, step, _) in &answers {
        let known = state.checks.get(address).is_some_and(|r| r.item.is_some());
        match (step, known) {
            (Some(step), true) => {
                outln!("{address}: step `{step}` chosen; it runs at the next 'stead apply'.")
            }
            (Some(step), false) => {
                outln!("{address}: `{step}` preseeded; it is taken when a check reports the item.")
            }
            (None, true) => outln!("{address}: dismissed."),
            (None, false) => outln!("{address}: dismissal preseeded."),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The answers of a preseeded file (`stead choose --file`).
fn read_answers(file: &std::path::Path) -> Result<Vec<(String, Option<String>, ChoiceVia)>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let answers = migration::parse_answers(&file.display().to_string(), &text)?;
    Ok(answers
        .into_iter()
        .map(|(address, step)| (address, step, ChoiceVia::File))
        .collect())
}

/// One block per item: address, severity, status, message, its steps (the
/// default and the chosen one marked), and why it is stale or failed.
pub fn print_items(p: &Paint, records: &BTreeMap<String, CheckRecord>) {
    for (address, record) in records {
        let chosen = record.choice.as_ref().and_then(|c| c.step.as_deref());
        let Some(item) = &record.item else {
            outln!(
                "{address}  (not reported yet)  preseeded: {}",
                chosen.unwrap_or("dismiss")
            );
            continue;
        };
        let severity = match item.severity {
            stead_lib::check::Severity::Error => p.red("error"),
            stead_lib::check::Severity::Warning => p.yellow("warning"),
            stead_lib::check::Severity::Recommendation => "recommendation".into(),
        };
        outln!("{address}  {severity}  {}", record.status.as_str());
        outln!("    {}", item.message);
        if let Some(note) = &record.note {
            outln!("    ({note})");
        }
        for step in &item.steps {
            let mut marks = Vec::new();
            if chosen == Some(step.id.as_str()) && record.status != ItemStatus::Stale {
                marks.push("chosen");
            }
            if item.default.as_deref() == Some(step.id.as_str()) {
                marks.push("default");
            }
            let marks = if marks.is_empty() {
                String::new()
            } else {
                format!(" [{}]", marks.join(", "))
            };
            let after = if step.after.is_empty() {
                String::new()
            } else {
                format!(" after {}", step.after.join(", "))
            };
            let user = step
                .user
                .as_deref()
                .map(|u| format!(" as {u}"))
                .unwrap_or_default();
            let reboot = if step.reboot { ", then reboot" } else { "" };
            outln!(
                "    - {}: {}{user}{after}{reboot}{marks}",
                step.id,
                step.title
            );
        }
    }
}

/// The items of a record, for `--json`.
pub fn items_json(records: &BTreeMap<String, CheckRecord>) -> serde_json::Value {
    serde_json::to_value(records).unwrap_or_default()
}

/// The checks part of a plan, after its changes: items (those needing a
/// choice first) and steps waiting for a reboot. Nothing when the plan has
/// no check.
pub fn print_plan_checks(p: &Paint, checks: &CheckPlan) {
    if checks.records.is_empty() && checks.waiting_for_reboot.is_empty() {
        return;
    }
    outln!("\nCheck items:");
    print_items(p, &checks.records_as_checked());
    for step in &checks.waiting_for_reboot {
        outln!("{step} waits for a reboot.");
    }
}

/// Asks on the terminal for a step for each error item without a valid
/// choice. `None`: the user gave no answer for one (nothing is chosen).
pub fn ask(records: &[(&String, &CheckRecord)]) -> Result<Option<Vec<Answer>>> {
    use std::io::{BufRead, Write};
    let mut answers = Vec::new();
    for (address, record) in records {
        let Some(item) = &record.item else { continue };
        if item.steps.is_empty() {
            anyhow::bail!(
                "{address}: {}\nIts check offers no step to resolve it; fix it by hand, then apply again. Nothing was changed.",
                item.message
            );
        }
        let mut prompt = format!("\n{address} (error): {}\n", item.message);
        for (n, step) in item.steps.iter().enumerate() {
            prompt.push_str(&format!("  {}) {}: {}\n", n + 1, step.id, step.title));
        }
        let default = item
            .default
            .as_deref()
            .and_then(|d| item.steps.iter().position(|s| s.id == d));
        prompt.push_str(&match default {
            Some(d) => format!("Which step? [1-{}, default {}] ", item.steps.len(), d + 1),
            None => format!("Which step? [1-{}] ", item.steps.len()),
        });
        crate::output::write_stderr(format_args!("{prompt}"));
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        let picked = match line.trim() {
            "" => default,
            text => text
                .parse::<usize>()
                .ok()
                .and_then(|n| n.checked_sub(1))
                .filter(|&n| n < item.steps.len())
                .or_else(|| item.steps.iter().position(|s| s.id == text)),
        };
        let Some(picked) = picked else {
            return Ok(None);
        };
        answers.push(Answer {
            address: (*address).clone(),
            step: item.steps[picked].id.clone(),
            via: ChoiceVia::Prompt,
        });
    }
    Ok(Some(answers))
}
