//! One module per command or command group.

pub mod apply;
pub mod commit;
pub mod completion;
pub mod doctor;
pub mod drift;
pub mod graph;
pub mod init;
pub mod merge_driver;
pub mod plan;
pub mod repo;
pub mod state;
pub mod sync;
