//! One module per command or command group.

pub mod apply;
pub mod drift;
pub mod graph;
pub mod init;
pub mod plan;
pub mod state;
