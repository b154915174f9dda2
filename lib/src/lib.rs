//! stead-lib: the part of stead that a CLI, a daemon or another program can embed.
//!
//! It never prints, never reads the terminal and never exits the process; every
//! failure is a typed error that says what happened, where, and what to do next.
//!
//! - [`layout`]: where stead keeps its files (home, state dir, file names).
//! - [`fsutil`]: atomic, durable file writes and private directories.
//! - [`machine`]: this machine's identity (a kept UUID) and facts.
//! - [`state`]: the versioned state record, its migration and its atomic store.
//! - [`lock`]: the state lock, proven stale by the kernel's flock.
//! - [`sync`]: many machines: the shared record in the config repo, its
//!   3-way merge and conflicts, the backend traits (git, memory), the sync
//!   session and the hybrid lock.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod engine;
pub mod fsutil;
pub mod graph;
pub mod journal;
pub mod layout;
pub mod lock;
pub mod machine;
pub mod manifest;
pub mod plan;
pub mod resource;
pub mod state;
pub mod sync;

/// The version of stead that wrote a record, stored as `stead_version`.
pub const STEAD_VERSION: &str = env!("CARGO_PKG_VERSION");
