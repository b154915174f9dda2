//! Exit codes, in one place: every code stead exits with, and which typed
//! errors map to which (the README's "Exit codes" lists the same).

use std::process::ExitCode;

/// How stead ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Success.
    Success,
    /// An error (also: an apply with a failed or skipped resource).
    Failure,
    /// The state is locked by another live process (or, with `hybrid`, by
    /// another machine).
    Locked,
    /// Drift or conflicts found (`state check-drift`, `state check-conflicts`),
    /// anything to show in `status`, or an error item without a choice
    /// (`check`).
    Found,
    /// Ctrl-C or SIGTERM.
    Interrupted,
}

impl Exit {
    /// The number the process exits with. (2, a usage error, is clap's.)
    pub const fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Failure => 1,
            Exit::Locked => 3,
            Exit::Found => 4,
            Exit::Interrupted => 130,
        }
    }

    /// The exit for an error that ended a command.
    pub fn for_error(error: &anyhow::Error) -> Exit {
        use stead_lib::lock::LockError;
        use stead_lib::sync::SyncError;
        let locked = matches!(
            error.downcast_ref::<LockError>(),
            Some(LockError::Locked { .. } | LockError::LockedUnreadable { .. })
        ) || matches!(
            error.downcast_ref::<SyncError>(),
            Some(
                SyncError::RemoteLocked { .. }
                    | SyncError::Lock(
                        LockError::Locked { .. } | LockError::LockedUnreadable { .. }
                    )
            )
        );
        if locked { Exit::Locked } else { Exit::Failure }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit.code())
    }
}
