//! One module per command or command group.

pub mod add;
pub mod apply;
pub mod cd;
pub mod commit;
pub mod completion;
pub mod doctor;
pub mod drift;
pub mod edit;
pub mod graph;
pub mod init;
pub mod merge_driver;
pub mod plan;
pub mod repo;
pub mod state;
pub mod status;
pub mod sync;
