//! The command line: every command, flag and environment variable.

use clap::{Parser, Subcommand};

use crate::commands;
use crate::context::GlobalArgs;

/// stead keeps machines in the state their owner declared, and keeps the
/// record of that state safe across machines, processes and crashes.
#[derive(Debug, Parser)]
#[command(name = "stead", version, about, long_about = None)]
#[command(
    after_help = "Exit codes: 0 success, 1 error, 2 usage error, 3 state locked by another process (or machine), 4 drift or conflicts found (state check-drift, state check-conflicts, status) or an error item without a choice (check), 130 interrupted; plan --detailed-exitcode: 0 no changes, 2 changes, 1 error."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create this machine's state (state dir, machine id, lineage), or with
    /// --repo clone the config repo and join its lineage
    Init(commands::init::InitArgs),

    /// Show what apply would change; changes nothing
    Plan(commands::plan::PlanArgs),

    /// Converge the machine to the manifest
    Apply(commands::apply::ApplyArgs),

    /// Print the resource graph: edges and autoedges
    Graph(commands::graph::GraphArgs),

    /// Write this machine's record (and accepted drifted files) into the config repo and commit
    Commit(commands::commit::CommitArgs),

    /// Fetch and merge the remote, merge the shared record, apply, commit and push
    Sync(commands::sync::SyncArgs),

    /// Copy files from the home into the config repo and declare them in stead.toml
    Add(commands::add::AddArgs),

    /// Open the source of a managed path in $VISUAL/$EDITOR, then apply
    Edit(commands::edit::EditArgs),

    /// One line per path: what apply would do, and what drifted (exit 4 if anything)
    Status(commands::status::StatusArgs),

    /// Print the config repo's path (for cd "$(stead cd)")
    Cd,

    /// Run the manifest's checks, record their items and list them with
    /// their migration steps (exit 4 when an error item has no choice)
    Check(commands::check::CheckArgs),

    /// Choose a migration step for a check's item (or --dismiss one, or
    /// preseed answers with --file), for the next apply
    Choose(commands::check::ChooseArgs),

    /// Converge, then again whenever a managed path or the config repo
    /// changes; one line per run; exit 0 once converged (--converged-timeout)
    /// or after --max-runs
    Watch(commands::watch::WatchArgs),

    /// Show or rotate this machine's generated secrets
    #[command(subcommand)]
    Secret(crate::commands::secret::SecretCommand),

    /// Read and manage the state record and its lock
    #[command(subcommand)]
    State(crate::commands::state::StateCommand),

    /// See the lineage's machines together (stead fleet status)
    #[command(subcommand)]
    Fleet(crate::commands::fleet::FleetCommand),

    /// Check the environment (git, config repo, state, lock, journal, remote,
    /// merge driver, permissions, free space) and say how to fix what is wrong
    Doctor(commands::doctor::DoctorArgs),

    /// Print a shell completion script (bash, zsh, fish) on stdout
    Completion(commands::completion::CompletionArgs),

    /// Print the man page (roff) on stdout
    Man,

    /// (internal) git's merge driver for .stead/state.json: BASE OURS THEIRS PATH
    #[command(name = "__merge-driver", hide = true)]
    MergeDriver(commands::merge_driver::MergeDriverArgs),

    /// (internal) Kills the commands an apply left running when it dies
    #[command(name = "__reaper", hide = true)]
    Reaper,
}
