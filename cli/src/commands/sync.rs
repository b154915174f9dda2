//! `stead sync`: fetch, compare this machine's record with the remote's
//! against their common base, merge git and the record where the rules
//! decide (stop and say how to resolve where they do not), apply the merged
//! config, then commit and push the record.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use serde_json::json;
use stead_lib::sync::session::{Merged, Step};
use stead_lib::sync::shared::{self, Comparison, Direction};

use super::apply::{Converge, converge};
use super::repo;
use crate::context::Context;
use crate::output::{outln, print_json_line};
use stead_lib::converge::DEFAULT_JOBS;

#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    /// Merge and push the record, but do not apply the merged config
    #[arg(long)]
    pub no_apply: bool,

    /// Run up to N changes at once when applying (default: 8)
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
}

pub fn run(ctx: &Context, args: &SyncArgs) -> Result<ExitCode> {
    let guard = ctx.lock_for_sync("sync")?;
    let state = repo::load_state(ctx, &guard)?;
    let backend = repo::open(ctx, &state)?;
    let session = repo::session(ctx, backend.as_ref());
    session.begin(&repo::stead_exe()?, &mut repo::note(ctx))?;
    let drift = super::drift::drifted(ctx, &state);
    let (records, comparison) = session.compare_for_merge(&state, &drift)?;
    repo::tell_decisions(ctx, &comparison);
    // Nothing is shared from a repo with no config to apply: checked before
    // anything is merged or pushed, and again once the remote's news is in.
    let news = backend.remote_has_news(&records)?;
    if !news {
        require_manifest(ctx, &state, backend.root())?;
    }

    let mut on_step = |step| match step {
        Step::TreeUpdated if !ctx.json => {
            outln!(
                "{} {}",
                ctx.out.green("✓"),
                session.backend().updated_message()
            );
            if !comparison.conflicts.is_empty() {
                repo::print_conflicts(ctx, &comparison);
                outln!();
            }
        }
        Step::Merging if !ctx.json => outln!("Attempting automatic merge..."),
        _ => {}
    };
    let (state, target) = match session.merge(&guard, state, &records, &comparison, &mut on_step)? {
        Merged::Undecided => {
            report_undecided(ctx, &comparison);
            guard.release()?;
            return Ok(ExitCode::FAILURE);
        }
        Merged::TreeConflicts(files) => {
            guard.release()?;
            return repo::report_tree_conflicts(ctx, backend.as_ref(), &files, "stead sync");
        }
        Merged::Settled { state, target } => (*state, *target),
    };
    if news {
        require_manifest(ctx, &state, backend.root())?;
    }
    if !ctx.json {
        report_settled(ctx, &comparison, &state, &target);
    }

    let (code, apply_error) = apply_merged(ctx, &guard, state, args);

    // Whatever apply recorded (even when it failed) goes into the record too,
    // with the drift count left after it when the record has news.
    let finished = session.finish(ctx.now(), &|state| {
        Some(super::drift::drifted(ctx, state).len() as u64)
    })?;
    let record = finished.record;
    if let Some(e) = apply_error {
        guard.release()?;
        let shared_note = match &finished.pushed {
            Ok(true) => format!(
                "merged, committed and pushed to {}",
                backend.remote_branch()
            ),
            _ => format!("merged and committed in {}", backend.root().display()),
        };
        ctx.warn(&format!(
            "the record was {shared_note}, but applying the merged config failed (below); \
             fix the cause and run 'stead sync' again."
        ));
        return Err(e);
    }
    let pushed = finished.pushed?;
    guard.release()?;
    if ctx.json {
        // The last line of the stream the converge above began (docs/json.md).
        print_json_line(&json!({
            "event": "sync", "status": "synced", "direction": comparison.direction,
            "conflicts": comparison.conflicts, "serial": record.lineage.serial,
            "machines": record.lineage.machines, "committed": finished.committed, "pushed": pushed,
            "applied": !args.no_apply,
        }));
    } else if pushed {
        outln!(
            "{} Pushed the shared record (serial {}) to {}",
            ctx.out.green("✓"),
            record.lineage.serial,
            backend.remote_branch()
        );
    } else {
        outln!(
            "{} Nothing to push: {} has everything",
            ctx.out.green("✓"),
            backend.remote_branch()
        );
    }
    Ok(code)
}

/// Fails unless the config repo at `root` holds a `stead.toml` that loads:
/// a sync must not share (or report as done) a record of a repo that has
/// no config to apply, such as an empty one.
fn require_manifest(ctx: &Context, state: &stead_lib::state::State, root: &Path) -> Result<()> {
    let file = root.join("stead.toml");
    let fix = format!(
        "Nothing was pushed. Add a stead.toml to {root} (see docs/manifest.md), commit it \
         ('git -C {root} add stead.toml && git -C {root} commit -m \"Add stead.toml\"'), \
         then run 'stead sync' again.",
        root = root.display()
    );
    if std::fs::symlink_metadata(&file).is_err() {
        anyhow::bail!(
            "the config repo {} has no stead.toml, so there is no config to apply or share\n{fix}",
            root.display()
        );
    }
    if let Err(e) = ctx.load_manifest(Some(state), None) {
        anyhow::bail!(
            "the config repo's {} cannot be loaded: {e:#}\n\
             Nothing was pushed. Fix it, commit it, then run 'stead sync' again.",
            file.display()
        );
    }
    Ok(())
}

/// Applies the merged config unless `--no-apply`: the exit code, or the
/// error (the record is still committed and pushed after it).
fn apply_merged(
    ctx: &Context,
    guard: &stead_lib::lock::LockGuard,
    state: stead_lib::state::State,
    args: &SyncArgs,
) -> (ExitCode, Option<anyhow::Error>) {
    if args.no_apply {
        return (ExitCode::SUCCESS, None);
    }
    if !ctx.json {
        outln!("\nApplying the merged config...");
    }
    match converge(
        ctx,
        guard,
        state,
        &Converge {
            plan_file: None,
            profile: None,
            force: false,
            jobs: args.jobs.unwrap_or(DEFAULT_JOBS).max(1),
            rerun: &[],
            yes: true,
            agreed: None,
            verify: false,
            choose: &[],
            drift: None,
            compiled: None,
        },
    ) {
        Ok((code, _)) => (code, None),
        Err(e) => (ExitCode::SUCCESS, Some(e)),
    }
}

/// Conflicts the automatic merge cannot decide: nothing was changed.
fn report_undecided(ctx: &Context, comparison: &Comparison) {
    let undecided: Vec<_> = comparison.undecided().collect();
    if ctx.json {
        print_json_line(&json!({
            "event": "sync", "status": "conflicts", "direction": comparison.direction,
            "conflicts": comparison.conflicts, "applied": false, "pushed": false,
        }));
        return;
    }
    repo::print_conflicts(ctx, comparison);
    outln!(
        "\n{} The automatic merge cannot decide {} of them (marked above as {}).\n\
         Nothing was merged, applied or pushed.",
        ctx.out.red("✗"),
        undecided.len(),
        undecided
            .iter()
            .map(|c| format!("{} {}", repo::mark(c.severity), kind_name(&c.kind)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    repo::print_ownership(comparison);
    repo::print_resolutions();
    outln!("Then run 'stead sync' again.");
}

/// Which way the record went.
fn report_settled(
    ctx: &Context,
    comparison: &Comparison,
    state: &stead_lib::state::State,
    target: &shared::SharedRecord,
) {
    let resolved = comparison.conflicts.len();
    match comparison.direction {
        Direction::Diverged => {
            outln!("{} States merged successfully", ctx.out.green("✓"));
            outln!("  - Combined {} machine(s)", target.machine_count());
            outln!("  - Resolved {resolved} conflict(s)");
        }
        Direction::RemoteAhead => outln!(
            "{} Took the remote record (serial {}, {} machine(s))",
            ctx.out.green("✓"),
            target.lineage.serial,
            target.machine_count()
        ),
        Direction::LocalAhead => outln!(
            "{} This machine's record is newer (serial {}); the remote takes it",
            ctx.out.green("✓"),
            state.lineage.serial
        ),
        Direction::UpToDate => outln!(
            "{} The shared record is up to date (serial {})",
            ctx.out.green("✓"),
            state.lineage.serial
        ),
    }
    if resolved > 0 && comparison.direction != Direction::Diverged {
        outln!("  - Resolved {resolved} conflict(s)");
    }
}

fn kind_name(kind: &shared::ConflictKind) -> &'static str {
    match kind {
        shared::ConflictKind::LineageMismatch { .. } => "lineage mismatch",
        shared::ConflictKind::SerialDivergence { .. } => "serial divergence",
        shared::ConflictKind::PathMismatch { .. } => "path mismatch",
        shared::ConflictKind::ProfileMismatch { .. } => "profile mismatch",
        shared::ConflictKind::FileDrift { .. } => "file drift",
    }
}
