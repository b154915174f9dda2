//! What the many-machine commands share: opening the config repo's sync
//! backend, telling the user what a sync session did on its own, and
//! printing conflicts. The sync steps themselves are the library's
//! ([`stead_lib::sync::session`]).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use stead_lib::lock::LockGuard;
use stead_lib::state::State;
use stead_lib::sync::Backend;
use stead_lib::sync::session::{Note, Session};
use stead_lib::sync::shared::{Comparison, Direction, Severity};

use crate::context::Context;
use crate::output::outln;

/// This machine's state, loaded under the lock; says to run `init --repo`
/// when there is none.
pub fn load_state(ctx: &Context, guard: &LockGuard) -> Result<State> {
    ctx.load_state_locked(guard)?.ok_or_else(|| {
        anyhow::anyhow!(
            "no state found at {}\nRun 'stead init --repo URL' to join your config repo.",
            ctx.store.path().display()
        )
    })
}

/// Opens the config repo recorded for this machine (or --config), whether
/// or not it has a remote.
pub fn open_local(ctx: &Context, state: &State) -> Result<Box<dyn Backend>> {
    let dir = ctx.config_dir(Some(state))?;
    Ok(stead_lib::sync::open_with(&dir, &ctx.sync_options())?)
}

/// Opens the config repo recorded for this machine (or --config), which
/// must have a remote to sync with.
pub fn open(ctx: &Context, state: &State) -> Result<Box<dyn Backend>> {
    let backend = open_local(ctx, state)?;
    backend.require_remote()?;
    Ok(backend)
}

/// Refuses a machine another machine removed from the lineage, as `sync`
/// does, by what the copies of the record in the clone say (the working
/// copy, HEAD's and the remote's as last fetched): no network. Only for a
/// machine that joined a config repo (`init --repo`); a repo that cannot be
/// opened or read is not this check's business.
pub fn refuse_if_removed(ctx: &Context, state: &State) -> Result<()> {
    if state.repo_url.is_none() {
        return Ok(());
    }
    let Ok(backend) = open(ctx, state) else {
        return Ok(());
    };
    let records = backend.records().ok();
    let working = backend.read_working().ok().flatten();
    let copies = [
        records.as_ref().and_then(|r| r.local.as_ref()),
        records.as_ref().and_then(|r| r.remote.as_ref()),
        working.as_ref(),
    ];
    session(ctx, backend.as_ref()).refuse_if_retired(state, &copies)?;
    Ok(())
}

/// A session over `backend` writing this machine's state.
pub fn session<'a>(ctx: &'a Context, backend: &'a dyn Backend) -> Session<'a> {
    Session::new(backend, &ctx.store)
}

/// Tells the user what a session did on its own.
pub fn note(ctx: &Context) -> impl FnMut(Note) + '_ {
    move |note| match note {
        Note::CommittedLeftover { root } => ctx.note(&format!(
            "Committing the record an interrupted stead run left uncommitted in {}.",
            root.display()
        )),
        Note::UsingLastFetched { reason, remote } => ctx.warn(&format!(
            "Cannot reach remote repository: {reason}\n\
             Comparing with what was last fetched from '{remote}'."
        )),
    }
}

/// With `--verbose`: which way the records moved and how the merge decides
/// each difference.
pub fn tell_decisions(ctx: &Context, comparison: &Comparison) {
    if !ctx.verbose {
        return;
    }
    let serial = |r: Option<&stead_lib::sync::shared::SharedRecord>| {
        r.map(|r| r.lineage.serial.to_string())
            .unwrap_or_else(|| "none".to_string())
    };
    let direction = match comparison.direction {
        Direction::UpToDate => "up to date, nothing to exchange",
        Direction::LocalAhead => "only this machine has news: the remote takes it",
        Direction::RemoteAhead => "only the remote has news: this machine takes it",
        Direction::Diverged => "both have news: merge",
    };
    ctx.note(&format!(
        "Merge: {direction} (local serial {}, remote serial {}, base serial {})",
        comparison.local.lineage.serial,
        serial(comparison.remote.as_ref()),
        serial(comparison.base.as_ref()),
    ));
    for c in &comparison.conflicts {
        ctx.note(&format!(
            "Merge: {} -> {}",
            crate::output::clean(&c.message()),
            if c.automatic {
                "decided by the merge rules"
            } else {
                "undecided: needs 'stead state resolve'"
            }
        ));
    }
}

/// Where the stead program is, for the merge driver.
pub fn stead_exe() -> Result<PathBuf> {
    std::env::current_exe().context("cannot tell where the stead program is")
}

/// The severity's mark.
pub fn mark(severity: Severity) -> &'static str {
    match severity {
        Severity::High => "🔴",
        Severity::Medium => "🟡",
        Severity::Low => "🟢",
    }
}

/// The numbered conflict list under its heading.
pub fn print_conflicts(ctx: &Context, comparison: &Comparison) {
    outln!("{}", ctx.out.yellow("⚠️  State Conflicts Detected"));
    outln!();
    for (i, c) in comparison.conflicts.iter().enumerate() {
        outln!("{}. {} {}", i + 1, mark(c.severity), c.message());
    }
}

/// When the remote changed this machine's own entry: whose it is and which
/// resolution keeps it.
pub fn print_ownership(comparison: &Comparison) {
    if !comparison.conflicts.iter().any(|c| c.is_own_entry()) {
        return;
    }
    outln!(
        "\nThis machine's own entry (its profile or config path) was changed outside this machine.\n\
         Each machine owns its entry, so that change is not taken without you: \
         'stead state resolve --merge' (or --use-local) keeps this machine's values; \
         --use-remote takes the remote's where they can be used here."
    );
}

/// The four ways out, as commands.
pub const RESOLUTIONS: [(&str, &str); 4] = [
    (
        "stead state resolve --use-local",
        "keep this machine's values on every clash",
    ),
    (
        "stead state resolve --use-remote",
        "take the remote's values on every clash, then 'stead apply'",
    ),
    (
        "stead state resolve --merge",
        "merge field by field; this machine keeps its own profile and path",
    ),
    (
        "stead state resolve --manual",
        "edit the merged record in $EDITOR before it is installed",
    ),
];

pub fn print_resolutions() {
    outln!("\nResolve with one of:");
    for (cmd, what) in RESOLUTIONS {
        outln!("  {cmd:<34} {what}");
    }
}

/// A tree update stopped on conflicts in other repo files: what to run to
/// finish, then `rerun` (the command that stopped, so its own choice still
/// applies).
pub fn report_tree_conflicts(
    ctx: &Context,
    backend: &dyn Backend,
    files: &[String],
    rerun: &str,
) -> Result<ExitCode> {
    let help = backend.stopped_update();
    let advice = format!(
        "Nothing was applied: stead never applies a conflicted tree.\n\
         Finish the merge, then run the command again:\n  \
         {}\n  \
         {rerun}\n\
         Or go back to where you were: {}",
        help.finish, help.undo
    );
    if ctx.json {
        // Under --json the same report is the error document (exit 1).
        anyhow::bail!("{}\n  {}\n\n{advice}", help.heading, files.join("\n  "));
    }
    outln!("{} {}", ctx.out.red("✗"), help.heading);
    for f in files {
        outln!("  {f}");
    }
    outln!("\n{advice}");
    Ok(ExitCode::FAILURE)
}
