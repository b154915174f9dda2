//! stead-lib: the part of stead that a CLI, a daemon or another program can embed.
//!
//! It never prints, never reads the terminal and never exits the process; every
//! failure is a typed error that says what happened, where, and what to do next.
//!
//! The modules, from the bottom up (docs/architecture.md has the map and
//! the rules; a module uses only the ones listed before it):
//!
//! - [`layout`]: where stead keeps its files (home, state dir, file names).
//! - [`fsutil`]: atomic, durable file writes and private directories.
//! - [`backup`]: the per-run backup folder (complete copies, 0700, notes
//!   for special files).
//! - [`safe_path`]: act on exactly the planned path: no-follow, fd-relative
//!   creates, chmods, renames and removals; links resolved once at load.
//! - [`machine`]: this machine's identity (a kept UUID) and facts.
//! - [`lock`]: the state lock, proven stale by the kernel's flock.
//! - [`state`]: the versioned state record, its migration and its atomic store.
//! - [`run`]: run control: cancel flags, child processes, the reaper feed.
//! - [`manifest`]: `stead.toml` parsed into resources, every problem with its
//!   place; `manifest::schema` is what the loader knows of a kind.
//! - [`resource`]: the resource-kind contract, its registry, one file per kind.
//! - [`outcome`]: what executing a change produced (status, skip reasons).
//! - [`journal`]: the durable operation log and its recovery view.
//! - [`graph`]: the resource graph (edges, references, autoedges, cycles).
//! - [`plan`]: read, diff and plan; record an outcome into the state.
//! - [`engine`]: execute a plan by readiness, journaling every side effect.
//! - [`batch`]: file writes made durable together, by barrier.
//! - [`converge`]: the converge transaction (prepare, execute, record, commit).
//! - [`status`]: drift findings and diffs, and the two-column status view.
//! - [`add`]: `stead add`: copy home files into the config repo and
//!   declare them in `stead.toml`, comments and layout kept.
//! - [`sync`]: many machines: the shared record in the config repo, its
//!   3-way merge and conflicts, the backend traits (git, memory), the sync
//!   session and the hybrid lock.
//! - [`fleet`]: the fleet view: every machine of the lineage from one read
//!   of the shared record (profile, times, drift count, lock, offline).
//! - [`doctor`]: checks of the environment (git, repo, state, lock, journal,
//!   remote, merge driver, permissions, space), each ok/warn/fail with a fix.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod add;
pub mod backup;
pub mod batch;
pub mod check;
pub mod checksum;
pub mod command;
pub mod converge;
pub mod doctor;
pub mod engine;
pub mod fleet;
pub mod fsutil;
pub mod graph;
pub mod journal;
pub mod layout;
pub mod lock;
pub mod machine;
pub mod manifest;
pub mod migration;
pub mod outcome;
pub mod ownfile;
pub(crate) mod parallel;
pub mod plan;
pub mod resource;
pub mod run;
pub mod safe_path;
pub mod seal;
pub mod secret;
pub mod spare;
pub mod stat_cache;
pub mod state;
pub mod status;
pub mod sync;
pub mod watch;

/// The version of stead that wrote a record, stored as `stead_version`.
pub const STEAD_VERSION: &str = env!("CARGO_PKG_VERSION");
