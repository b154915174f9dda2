//! `stead plan`: read, diff, show. Takes no lock and changes nothing.

use crate::output::errln;
use crate::output::outln;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use serde_json::json;
use stead_lib::converge;
use stead_lib::plan::Plan;
use stead_lib::resource::{Action, SENSITIVE_HIDDEN};
use stead_lib::seal;

use crate::context::Context;
use crate::output::{self, Paint, print_json};

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// Save the plan to FILE for a later 'stead apply FILE' (on a machine
    /// with no identity yet, this makes it: the saved plan's checksums of
    /// sensitive files are keyed by it)
    #[arg(long, value_name = "FILE")]
    pub out: Option<std::path::PathBuf>,

    /// Use this profile instead of the recorded one
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,

    /// Plan to replace what stead does not own (backed up first)
    #[arg(long)]
    pub force: bool,

    /// Read resources on up to N threads
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,

    /// Exit 0 when there are no changes, 2 when there are, 1 on an error (as Terraform)
    #[arg(long)]
    pub detailed_exitcode: bool,
}

use stead_lib::converge::DEFAULT_JOBS;

pub fn run(ctx: &Context, args: &PlanArgs) -> Result<ExitCode> {
    // A machine unchanged since an apply found it converged: nothing to
    // plan (a saved plan and --json need the plan itself).
    let mut drift = None;
    if args.out.is_none() && !ctx.json {
        let request = seal::Request {
            config: ctx.config.as_deref(),
            profile: args.profile.as_deref(),
        };
        let jobs = args.jobs.unwrap_or(DEFAULT_JOBS).max(1);
        match seal::Seal::read(&ctx.layout)
            .map(|s| s.check(&converge::seal_key(&ctx.layout, &request), jobs))
        {
            Some(seal::Check::Holds(hit)) => {
                print_sealed(ctx, &hit);
                return Ok(ExitCode::SUCCESS);
            }
            Some(seal::Check::Drifted(d)) => drift = Some(d),
            Some(seal::Check::Broken) | None => {}
        }
    }
    let state = ctx.current_state()?;
    if args.out.is_some() {
        // The apply of the saved plan checks its sensitive files' keyed
        // checksums with this machine's identity: it must be the one the
        // plan is made with, not a throw-away.
        stead_lib::fsutil::ensure_private_dir(ctx.layout.state_dir())?;
        stead_lib::secret::Secrets::open(&ctx.layout, true)?;
    }
    let mut options = ctx.plan_options(
        None,
        args.profile.as_deref(),
        args.force,
        args.jobs.unwrap_or(DEFAULT_JOBS),
    );
    options.drift = drift.as_ref();
    let prepared = converge::prepare_read_only(&ctx.layout, &state, &options, &converge::Silent)?;
    note_torn_tail(ctx, &prepared);
    if let Some(drift) = &drift {
        note_drift(ctx, drift, &prepared);
    }
    let plan = prepared.plan;
    if let Some(out) = &args.out {
        // A sensitive file's content is not saved; apply makes it again.
        let mut bytes = serde_json::to_vec_pretty(&plan.redacted())?;
        bytes.push(b'\n');
        stead_lib::fsutil::atomic_write(out, &bytes, 0o600)
            .with_context(|| format!("cannot save the plan to {}", out.display()))?;
    }
    if ctx.json {
        print_json(&plan_json(&plan));
    } else {
        print_plan(&ctx.out, &plan);
        if let Some(out) = &args.out {
            outln!(
                "\nSaved the plan to {}; run 'stead apply {}' to apply it.",
                out.display(),
                out.display()
            );
        }
    }
    Ok(if args.detailed_exitcode && !plan.is_empty() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// What a run whose seal held prints: what a plan that changes nothing
/// prints.
pub fn print_sealed(ctx: &Context, hit: &seal::Hit) {
    ctx.verbose_note(&format!(
        "Nothing changed since an apply found the machine as declared: {} path(s) found as they were by their stat, without planning ('stead apply --verify' plans and reads every file).",
        hit.paths
    ));
    outln!("No changes. The machine matches the manifest.");
    outln!(
        "Plan: 0 to create, 0 to update, 0 to remove, {} unchanged.",
        hit.unchanged
    );
}

/// With -v, what a converged seal that no longer held still vouched for.
pub fn note_drift(ctx: &Context, drift: &seal::Drift, prepared: &converge::Prepared) {
    let plan = &prepared.plan;
    ctx.verbose_note(&format!(
        "{} path(s) changed since an apply found the machine as declared: planned only the {} resource(s) they belong to and what waits for them ({} in all); the other {} were found as they were by their stat ('stead apply --verify' plans and reads every file).{}",
        drift.changed_paths,
        drift.resources.len(),
        plan.changes.len(),
        plan.vouched,
        if prepared.from_compiled {
            " The manifest was the compiled form that apply kept, not stead.toml parsed again."
        } else {
            ""
        }
    ));
}

/// With -v, a torn journal line a crash left is mentioned (it is ignored).
pub fn note_torn_tail(ctx: &Context, prepared: &converge::Prepared) {
    if let Some(bytes) = prepared.view.torn_tail
        && ctx.verbose
    {
        errln!("journal: ignored a torn last line ({bytes} bytes) left by a crash");
    }
}

/// The plan document of `plan --json` (docs/json.md): modes as octal
/// strings, no content of a sensitive file.
pub fn plan_json(plan: &Plan) -> serde_json::Value {
    let mut shown = serde_json::to_value(plan.redacted()).unwrap_or_default();
    if let Some(changes) = shown
        .get_mut("changes")
        .and_then(serde_json::Value::as_array_mut)
    {
        for change in changes {
            let sensitive = change["sensitive"].as_bool().unwrap_or(false);
            if let Some(op) = change
                .get_mut("op")
                .and_then(serde_json::Value::as_object_mut)
            {
                octal_mode(op);
                if sensitive && op.contains_key("content") {
                    op.insert("content".into(), SENSITIVE_HIDDEN.into());
                }
            }
        }
    }
    let transactions: Vec<Vec<&str>> = stead_lib::plan::transactions(plan)
        .iter()
        .map(|g| g.iter().map(|&i| plan.changes[i].id.as_str()).collect())
        .collect();
    json!({
        "counts": plan.counts(),
        "empty": plan.is_empty(),
        "plan": shown,
        "transactions": transactions,
    })
}

/// One line for changes that run as one transaction:
/// `+ package.{git,curl}  (apt, one transaction)`.
fn print_transaction(p: &Paint, plan: &Plan, group: &[usize]) {
    let first = &plan.changes[group[0]];
    let symbol = match first.action {
        Action::Create => p.green("+"),
        Action::Remove => p.red("-"),
        _ => p.yellow("~"),
    };
    let kind = first.kind.as_str();
    let names: Vec<String> = group
        .iter()
        .map(|&i| {
            let id = plan.changes[i].id.as_str();
            output::clean(
                id.strip_prefix(kind)
                    .and_then(|r| r.strip_prefix('.'))
                    .unwrap_or(id),
            )
            .to_string()
        })
        .collect();
    let manager = stead_lib::resource::registry::get(first.kind)
        .transaction(&first.op)
        .and_then(|k| k.split_once(':').map(|(m, _)| m.to_string()))
        .unwrap_or_else(|| kind.to_string());
    outln!(
        "{symbol} {kind}.{{{}}}  ({manager}, one transaction)",
        names.join(",")
    );
}

/// `"mode": 420` as `"mode": "0644"`, as people write modes.
fn octal_mode(op: &mut serde_json::Map<String, serde_json::Value>) {
    if let Some(mode) = op.get("mode").and_then(serde_json::Value::as_u64) {
        op.insert("mode".into(), format!("{mode:04o}").into());
    }
}

/// The reviewable plan: one line per change, diffs indented, then the counts.
pub fn print_plan(p: &Paint, plan: &Plan) {
    let _held = crate::output::hold();
    let mut shown = 0;
    // A transaction of named things (packages) is one line, where its first
    // member stands; one of paths (directories made together) keeps a line
    // per path, as each path is what the plan is read for.
    let mut together: std::collections::HashMap<usize, Vec<usize>> = Default::default();
    let mut member = vec![false; plan.changes.len()];
    let named = |group: &Vec<usize>| group.iter().all(|&i| plan.changes[i].keys.is_empty());
    for group in stead_lib::plan::transactions(plan)
        .into_iter()
        .filter(named)
    {
        for &i in &group {
            member[i] = true;
        }
        together.insert(group[0], group);
    }
    for (i, c) in plan.changes.iter().enumerate() {
        if c.action == Action::Unchanged {
            continue;
        }
        if let Some(group) = together.get(&i) {
            shown += 1;
            print_transaction(p, plan, group);
            continue;
        }
        if member[i] {
            continue;
        }
        shown += 1;
        let symbol = match c.action {
            Action::Create => p.green("+"),
            Action::Update => p.yellow("~"),
            Action::Remove => p.red("-"),
            Action::Conflict => p.red("!"),
            Action::Unchanged => " ".into(),
        };
        let key = c.keys.first().map(|k| format!("  {k}")).unwrap_or_default();
        let reason = if c.reason.is_empty() {
            String::new()
        } else {
            format!("  ({})", c.reason)
        };
        outln!("{symbol} {}{key}{reason}", c.id);
        if let Some(diff) = &c.diff {
            super::drift::print_diff(p, diff);
        }
    }
    super::check::print_plan_checks(p, &plan.checks);
    let n = plan.counts();
    if shown == 0 {
        outln!("No changes. The machine matches the manifest.");
    } else {
        outln!();
    }
    outln!(
        "Plan: {} to create, {} to update, {} to remove, {} unchanged.",
        n.create,
        n.update,
        n.remove,
        n.unchanged
    );
    if n.conflict > 0 {
        // --force replaces only some conflicts (a file stead does not own,
        // not a directory or a file where a dir should be); by convention
        // (docs/kinds.md) those, and only those, name it in their reason.
        // A one-shot step an interrupted run left without an outcome names
        // `--rerun` instead: --force does nothing for it.
        let conflicts = || plan.changes.iter().filter(|c| c.action == Action::Conflict);
        let forceable = conflicts().filter(|c| c.reason.contains("--force")).count();
        let reruns: Vec<&str> = conflicts()
            .filter(|c| !c.reason.contains("--force") && c.reason.contains("--rerun"))
            .map(|c| c.id.as_str())
            .collect();
        let others = n.conflict - forceable - reruns.len();
        let rerun_text = |ids: &[&str]| {
            let (them, it) = if ids.len() == 1 {
                ("a one-shot step", "it ran")
            } else {
                ("one-shot steps", "they ran")
            };
            format!(
                "{them} an interrupted run started: check whether {it}, then 'stead apply {}' \
                 runs {} again",
                ids.iter()
                    .map(|id| format!("--rerun {}", output::clean(id)))
                    .collect::<Vec<_>>()
                    .join(" "),
                if ids.len() == 1 { "it" } else { "them" }
            )
        };
        let what = if forceable == n.conflict {
            "stead will not overwrite what it does not own; 'stead apply --force' backs it up and replaces it.".to_string()
        } else if reruns.len() == n.conflict {
            format!("{}.", rerun_text(&reruns))
        } else if forceable == 0 && reruns.is_empty() {
            "nothing is changed for them, not even with force; their reasons above say what to fix."
                .to_string()
        } else {
            let mut parts = Vec::new();
            if forceable > 0 {
                parts.push(format!(
                    "'stead apply --force' backs up and replaces {forceable} of them (their reasons say so)"
                ));
            }
            if !reruns.is_empty() {
                parts.push(rerun_text(&reruns));
            }
            if others > 0 {
                parts.push("the others' reasons say what to fix".to_string());
            }
            format!("{}.", parts.join("; "))
        };
        outln!(
            "{} {} conflict{} (!): {what}",
            p.red("!"),
            n.conflict,
            if n.conflict == 1 { "" } else { "s" }
        );
    }
}
