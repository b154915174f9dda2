//! What executing a plan produced, per change: the vocabulary shared by the
//! engine that produces it, the plan recording that reads it and the front
//! ends that show it. A leaf module, so that `plan` and `engine` need not
//! know each other.

use crate::resource::Applied;

/// What happened to one change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Applied.
    Done(Applied),
    /// Nothing to do.
    Unchanged,
    /// Failed, with the cause.
    Failed(String),
    /// Not run, and why.
    Skipped(Skip),
}

/// Why a change was not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// The run was cancelled before it started.
    Interrupted,
    /// A change it depends on (this id) failed or was skipped.
    DependencyFailed(String),
    /// The engine ended without reaching it (a bug, or the worker pool died).
    NotReached,
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::Interrupted => f.write_str("interrupted before it started"),
            Skip::DependencyFailed(id) => write!(f, "{id} did not complete"),
            Skip::NotReached => f.write_str("not reached"),
        }
    }
}

impl Status {
    /// True if the change was applied and really did something: not an exec
    /// whose guard, checked again right before running, said to skip it.
    pub fn did_something(&self) -> bool {
        matches!(self, Status::Done(a) if a.not_run.is_none())
    }

    /// True for a failure or a skip.
    pub fn is_failure(&self) -> bool {
        matches!(self, Status::Failed(_) | Status::Skipped(_))
    }
}

/// The result of executing a plan: one status per plan change, same order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Parallel to `plan.changes`.
    pub statuses: Vec<Status>,
    /// Parallel to `plan.changes`: attempts made (0: never run; more than 1
    /// with `retry`).
    pub attempts: Vec<u32>,
}

impl Outcome {
    /// Every change unchanged (a plan with nothing to do).
    pub fn unchanged(changes: usize) -> Outcome {
        Outcome {
            statuses: vec![Status::Unchanged; changes],
            attempts: vec![0; changes],
        }
    }

    /// True if anything failed or was skipped.
    pub fn has_failures(&self) -> bool {
        self.statuses.iter().any(Status::is_failure)
    }

    /// How many changes a cancel kept from starting.
    pub fn interrupted(&self) -> usize {
        self.statuses
            .iter()
            .filter(|s| matches!(s, Status::Skipped(Skip::Interrupted)))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_reasons_read_as_before() {
        assert_eq!(
            Skip::Interrupted.to_string(),
            "interrupted before it started"
        );
        assert_eq!(
            Skip::DependencyFailed("exec.a".into()).to_string(),
            "exec.a did not complete"
        );
        assert_eq!(Skip::NotReached.to_string(), "not reached");
    }

    #[test]
    fn an_exec_its_guard_skipped_did_nothing() {
        let ran = Status::Done(Applied::default());
        let guarded = Status::Done(Applied {
            not_run: Some("`unless` succeeded".into()),
            ..Applied::default()
        });
        assert!(ran.did_something());
        assert!(!guarded.did_something());
        assert!(!Status::Unchanged.did_something());
    }
}
