//! `stead state ...`: read and manage the state record, its lock and its
//! journal, and (with a shared config repo) its conflicts with the remote.
//! One file per subcommand, each with its arguments beside its `run`.

mod check_conflicts;
mod diff;
mod history;
mod journal;
mod lock_info;
mod migrate;
mod remove_machine;
mod resolve;
mod unlock;
mod version;

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

use crate::context::Context;

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Show the schema version, machine id and serial
    Version,

    /// Show the operation history, newest first
    History(history::HistoryArgs),

    /// Show who holds the state lock (and with lock_type hybrid, the remote locks), if anyone
    LockInfo,

    /// Remove the state lock (only with --force); with lock_type hybrid, the remote locks too
    Unlock(unlock::UnlockArgs),

    /// Compare managed files with the recorded checksums
    CheckDrift(super::drift::CheckDriftArgs),

    /// Show the journal of the last apply: each operation and its outcome
    Journal,

    /// List the conflicts between this machine's record and the remote's, with severities
    CheckConflicts,

    /// Settle the conflicts with one strategy and commit the result
    Resolve(resolve::ResolveArgs),

    /// Field by field, how this machine's record differs from the remote's
    Diff,

    /// Take a machine that is gone out of the lineage (its history stays)
    RemoveMachine(remove_machine::RemoveMachineArgs),

    /// Migrate a version 1 state file to version 2
    Migrate(migrate::MigrateArgs),
}

/// Runs one `stead state` subcommand.
pub fn run(ctx: &Context, command: &StateCommand) -> Result<ExitCode> {
    match command {
        StateCommand::Version => version::run(ctx),
        StateCommand::History(args) => history::run(ctx, args),
        StateCommand::LockInfo => lock_info::run(ctx),
        StateCommand::Unlock(args) => unlock::run(ctx, args),
        StateCommand::CheckDrift(args) => super::drift::run(ctx, args),
        StateCommand::Journal => journal::run(ctx),
        StateCommand::CheckConflicts => check_conflicts::run(ctx),
        StateCommand::Resolve(args) => resolve::run(ctx, args),
        StateCommand::Diff => diff::run(ctx),
        StateCommand::RemoveMachine(args) => remove_machine::run(ctx, args),
        StateCommand::Migrate(args) => migrate::run(ctx, args),
    }
}

/// Whether `who`, as the user typed it, names the machine with this id and
/// hostname: the whole id, an id prefix of 8 or more characters, or the
/// hostname (`remove-machine`, `unlock --machine`).
pub(crate) fn names_machine(who: &str, id: &str, hostname: &str) -> bool {
    id == who || hostname == who || (who.len() >= 8 && id.starts_with(who))
}
