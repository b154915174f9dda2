//! Many machines: the shared record in the config repo, how two copies of it
//! are compared and merged, and the git backend that moves it.
//!
//! - [`shared`]: the record's schema, fold (local state into it), 3-way
//!   merge, conflict detection and field diff. Pure: no I/O.
//! - [`git`]: the `git` program driven for clone, fetch, merge, push and the
//!   remote lock ref.
pub mod git;
pub mod shared;
