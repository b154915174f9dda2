//! `stead sync`: fetch, compare this machine's record with the remote's
//! against their common base, merge git and the record where the rules
//! decide (stop and say how to resolve where they do not), apply the merged
//! config, then commit and push the record.

use std::process::ExitCode;

use anyhow::Result;
use serde_json::json;
use stead_lib::sync::git::PushOutcome;
use stead_lib::sync::shared::{self, Direction, Strategy};

use super::apply::{Converge, converge};
use super::plan::DEFAULT_JOBS;
use super::repo::{self, Repo};
use crate::cli::SyncArgs;
use crate::context::Context;
use crate::output::{outln, print_json};

pub fn run(ctx: &Context, args: &SyncArgs) -> Result<ExitCode> {
    let guard = ctx.lock_for_sync("sync")?;
    let state = repo::load_state(ctx, &guard)?;
    let (repo, records, comparison) = repo::begin_merge(ctx, &state, true)?;

    let undecided: Vec<_> = comparison.undecided().collect();
    if !undecided.is_empty() {
        if ctx.json {
            print_json(&json!({
                "status": "conflicts", "direction": comparison.direction,
                "conflicts": comparison.conflicts, "applied": false, "pushed": false,
            }));
        } else {
            repo::print_conflicts(ctx, &comparison);
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
            repo::print_resolutions();
            outln!("Then run 'stead sync' again.");
        }
        guard.release()?;
        return Ok(ExitCode::FAILURE);
    }

    // Git first: nothing of the record is touched until the tree merged cleanly.
    if let Some(files) = repo::merge_remote(&repo, &records, "stead sync")? {
        guard.release()?;
        return repo::report_git_conflicts(ctx, &files, "stead sync");
    }
    if !ctx.json {
        outln!("{} Git pull completed successfully!", ctx.out.green("✓"));
        if !comparison.conflicts.is_empty() {
            repo::print_conflicts(ctx, &comparison);
            outln!();
        }
    }

    let me = state.machine.id.clone();
    let remote_commit = records.remote_commit.clone();
    let (target, operation) = match (comparison.direction, &comparison.remote) {
        (Direction::Diverged, Some(remote)) => {
            if !ctx.json {
                outln!("Attempting automatic merge...");
            }
            let merged = shared::merge(
                comparison.base.as_ref(),
                &comparison.local,
                remote,
                Some(&me),
                Strategy::Merge,
            );
            (merged, Some("sync"))
        }
        (Direction::RemoteAhead, Some(remote)) => (remote.clone(), None),
        _ => (comparison.local.clone(), None),
    };
    let (state, _) = repo::settle(
        ctx,
        &guard,
        &repo,
        state,
        &target,
        operation,
        remote_commit.as_deref(),
    )?;
    if !ctx.json {
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

    let mut code = ExitCode::SUCCESS;
    let mut apply_error = None;
    if !args.no_apply {
        if !ctx.json {
            outln!("\nApplying the merged config...");
        }
        match converge(
            ctx,
            &guard,
            state,
            &Converge {
                plan_file: None,
                profile: None,
                force: false,
                jobs: args.jobs.unwrap_or(DEFAULT_JOBS).max(1),
                rerun: &[],
                yes: true,
            },
        ) {
            Ok((c, _)) => code = c,
            Err(e) => apply_error = Some(e),
        }
    }

    // Whatever apply recorded (even when it failed) goes into the record too.
    let state = ctx.store.load_current()?;
    let record = shared::fold(
        stead_lib::sync::repo::read_working(&repo.git)?.as_ref(),
        &state,
    );
    repo::write_if_changed(&repo.git, &record)?;
    let committed = repo::commit_record(
        &repo.git,
        &[],
        &format!(
            "stead sync: {} at serial {}",
            state.machine.hostname, record.lineage.serial
        ),
    )?;
    // The merged record is shared even when applying failed: it is true
    // either way, and the other machines need it.
    let pushed = push_if_ahead(&repo);
    if let Some(e) = apply_error {
        guard.release()?;
        let shared_note = match &pushed {
            Ok(true) => format!("merged, committed and pushed to {}", repo.remote_branch()),
            _ => format!("merged and committed in {}", repo.git.root().display()),
        };
        ctx.warn(&format!(
            "the record was {shared_note}, but applying the merged config failed (below); \
             fix the cause and run 'stead sync' again."
        ));
        return Err(e);
    }
    let pushed = pushed?;
    guard.release()?;
    if ctx.json {
        print_json(&json!({
            "status": "synced", "direction": comparison.direction,
            "conflicts": comparison.conflicts, "serial": record.lineage.serial,
            "machines": record.lineage.machines, "committed": committed, "pushed": pushed,
            "applied": !args.no_apply,
        }));
    } else if pushed {
        outln!(
            "{} Pushed the shared record (serial {}) to {}",
            ctx.out.green("✓"),
            record.lineage.serial,
            repo.remote_branch()
        );
    } else {
        outln!(
            "{} Nothing to push: {} has everything",
            ctx.out.green("✓"),
            repo.remote_branch()
        );
    }
    Ok(code)
}

/// Pushes when HEAD has commits the remote branch lacks. A refusal (the
/// remote moved meanwhile) is an error that says to sync again.
pub fn push_if_ahead(repo: &Repo) -> Result<bool> {
    let Some(head) = repo.git.head()? else {
        return Ok(false);
    };
    if repo.git.rev_exists(&repo.up.tracking_ref)? {
        let remote = repo.git.run(&["rev-parse", &repo.up.tracking_ref])?;
        if repo.git.is_ancestor(&head, &remote)? {
            return Ok(false);
        }
    }
    match repo.git.push(&repo.up)? {
        PushOutcome::Pushed => Ok(true),
        PushOutcome::Rejected(reason) => {
            anyhow::bail!(
                "the remote refused the push ({reason}): another machine pushed meanwhile\n\
                 Nothing is lost: the record is committed in {}. Run 'stead sync' again.",
                repo.git.root().display()
            )
        }
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
