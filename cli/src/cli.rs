//! The command line: every command, flag and environment variable.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::commands;

/// stead keeps machines in the state their owner declared, and keeps the
/// record of that state safe across machines, processes and crashes.
#[derive(Debug, Parser)]
#[command(name = "stead", version, about, long_about = None)]
#[command(
    after_help = "Exit codes: 0 success, 1 error, 2 usage error, 3 state locked by another process (or machine), 4 drift or conflicts found (state check-drift, state check-conflicts), 130 interrupted."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The config repo holding stead.toml (default: the one recorded by init)
    #[arg(long, global = true, env = "STEAD_CONFIG", value_name = "DIR")]
    pub config: Option<PathBuf>,

    /// Where `~` points for managed paths (default: $HOME)
    #[arg(long, global = true, env = "STEAD_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,

    /// The state dir (default: <home>/.stead)
    #[arg(long, global = true, env = "STEAD_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// History entries to keep in the state record
    #[arg(
        long,
        global = true,
        env = "STEAD_HISTORY_LIMIT",
        value_name = "N",
        default_value_t = stead_lib::state::DEFAULT_HISTORY_LIMIT,
        value_parser = clap::value_parser!(usize),
    )]
    pub history_limit: usize,

    /// Print machine-readable JSON instead of text
    #[arg(long, global = true)]
    pub json: bool,

    /// Say more about what happens
    #[arg(short, long, global = true)]
    pub verbose: bool,

    /// Never color the output (also: NO_COLOR=1)
    #[arg(long, global = true)]
    pub no_color: bool,
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

    /// Read and manage the state record and its lock
    #[command(subcommand)]
    State(crate::commands::state::StateCommand),

    /// (internal) git's merge driver for .stead/state.json: BASE OURS THEIRS PATH
    #[command(name = "__merge-driver", hide = true)]
    MergeDriver(commands::merge_driver::MergeDriverArgs),

    /// (internal) Kills the commands an apply left running when it dies
    #[command(name = "__reaper", hide = true)]
    Reaper,
}
