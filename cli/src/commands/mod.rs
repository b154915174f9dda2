//! One module per command or command group.

pub mod init;
pub mod state;
