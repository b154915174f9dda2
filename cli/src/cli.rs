//! The command line: every command, flag and environment variable.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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
    Init(InitArgs),

    /// Show what apply would change; changes nothing
    Plan(PlanArgs),

    /// Converge the machine to the manifest
    Apply(ApplyArgs),

    /// Print the resource graph: edges and autoedges
    Graph {
        /// Output format
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
        /// Use this profile instead of the recorded one
        #[arg(long, value_name = "NAME")]
        profile: Option<String>,
    },

    /// Write this machine's record (and accepted drifted files) into the config repo and commit
    Commit(CommitArgs),

    /// Fetch and merge the remote, merge the shared record, apply, commit and push
    Sync(SyncArgs),

    /// Read and manage the state record and its lock
    #[command(subcommand)]
    State(StateCommand),

    /// (internal) git's merge driver for .stead/state.json: BASE OURS THEIRS PATH
    #[command(name = "__merge-driver", hide = true)]
    MergeDriver {
        /// The common ancestor's copy (%O)
        base: PathBuf,
        /// Our copy, replaced by the result (%A)
        ours: PathBuf,
        /// Their copy (%B)
        theirs: PathBuf,
        /// The path in the repo (%P)
        path: Option<String>,
    },

    /// (internal) Kills the commands an apply left running when it dies
    #[command(name = "__reaper", hide = true)]
    Reaper,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum GraphFormat {
    Dot,
    Json,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Save the plan to FILE for a later 'stead apply FILE'
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,

    /// Use this profile instead of the recorded one
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,

    /// Plan to replace what stead does not own (backed up first)
    #[arg(long)]
    pub force: bool,

    /// Read resources on up to N threads
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A plan saved by 'stead plan --out FILE'
    #[arg(value_name = "FILE")]
    pub plan: Option<PathBuf>,

    /// Show the plan and stop
    #[arg(long)]
    pub dry_run: bool,

    /// Do not ask for confirmation
    #[arg(long, short = 'y')]
    pub yes: bool,

    /// Replace what stead does not own, after copying it to <state-dir>/backups/
    #[arg(long)]
    pub force: bool,

    /// Run up to N changes at once (default: 8)
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,

    /// Use (and record) this profile
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,

    /// Run this one-shot exec again (once / idempotency_key), even if the
    /// journal says it ran or an interrupted run left it unfinished
    #[arg(long, value_name = "RESOURCE")]
    pub rerun: Vec<String>,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The profile this machine applies
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,

    /// The config repo (your dotfiles repo); with --repo, where to clone it
    /// (default: <home>/.dotfiles) or an existing clone to adopt
    #[arg(long, value_name = "CONFIG_DIR")]
    pub path: Option<PathBuf>,

    /// Clone this config repo (or adopt the clone at --path) and join the
    /// lineage its .stead/state.json records, or start one
    #[arg(long, value_name = "URL")]
    pub repo: Option<String>,
}

#[derive(Debug, Args)]
pub struct CommitArgs {
    /// The commit message
    #[arg(short, long, value_name = "MSG")]
    pub message: String,

    /// Push to the remote after committing
    #[arg(long)]
    pub push: bool,

    /// Drifted managed files to accept: each is copied back to its source in the repo
    #[arg(value_name = "FILES")]
    pub files: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Merge and push the record, but do not apply the merged config
    #[arg(long)]
    pub no_apply: bool,

    /// Run up to N changes at once when applying (default: 8)
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct ResolveArgs {
    /// This machine's copy wins every clash, and its own entry is the local one
    #[arg(long)]
    pub use_local: bool,

    /// The remote's copy wins every clash, and this machine takes its entry from the remote
    #[arg(long)]
    pub use_remote: bool,

    /// Field by field: higher serial, union of machines and history, newest times, remote checksums on a clash
    #[arg(long)]
    pub merge: bool,

    /// Edit the merged record in $EDITOR; it is installed only if it is valid
    #[arg(long)]
    pub manual: bool,
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Show the schema version, machine id and serial
    Version,

    /// Show the operation history, newest first
    History {
        /// Show at most N entries
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },

    /// Show who holds the state lock (and with lock_type hybrid, the remote lock), if anyone
    LockInfo,

    /// Remove the state lock (only with --force); with lock_type hybrid, the remote lock too
    Unlock {
        /// Remove it even though a process may still be working
        #[arg(long)]
        force: bool,
    },

    /// Compare managed files with the recorded checksums
    CheckDrift {
        /// Also list files that did not drift
        #[arg(long)]
        all: bool,
    },

    /// Show the journal of the last apply: each operation and its outcome
    Journal,

    /// List the conflicts between this machine's record and the remote's, with severities
    CheckConflicts,

    /// Settle the conflicts with one strategy and commit the result
    Resolve(ResolveArgs),

    /// Field by field, how this machine's record differs from the remote's
    Diff,

    /// Take a machine that is gone out of the lineage (its history stays)
    RemoveMachine {
        /// The machine's id, id prefix (8+ characters) or hostname
        #[arg(value_name = "MACHINE")]
        machine: String,
    },

    /// Migrate a version 1 state file to version 2
    Migrate {
        /// Do not copy the version 1 file to <state-dir>/backups/ first
        #[arg(long)]
        no_backup: bool,
    },
}
