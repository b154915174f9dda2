//! How a path stead recorded compares with what is on disk now: the
//! vocabulary of `stead state check-drift`, shared by the resource kinds that
//! find drift and the sync code that reports it as a conflict.

use serde::{Deserialize, Serialize};

/// How a recorded path differs from what stead wrote there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriftStatus {
    /// As stead wrote it.
    Unchanged,
    /// Nothing is there.
    Missing,
    /// Its content changed.
    Modified,
    /// Something of another type is there (a dir for a file, a file for a link).
    Replaced,
    /// Only its permission bits changed.
    Mode,
    /// A link that points elsewhere.
    Retargeted,
}

impl DriftStatus {
    /// The name shown and written in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            DriftStatus::Unchanged => "unchanged",
            DriftStatus::Missing => "missing",
            DriftStatus::Modified => "modified",
            DriftStatus::Replaced => "replaced",
            DriftStatus::Mode => "mode",
            DriftStatus::Retargeted => "retargeted",
        }
    }

    /// True for every status but [`DriftStatus::Unchanged`].
    pub fn drifted(self) -> bool {
        self != DriftStatus::Unchanged
    }
}

impl std::fmt::Display for DriftStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_json_and_text_are_the_lowercase_ones() {
        for (status, name) in [
            (DriftStatus::Unchanged, "unchanged"),
            (DriftStatus::Missing, "missing"),
            (DriftStatus::Modified, "modified"),
            (DriftStatus::Replaced, "replaced"),
            (DriftStatus::Mode, "mode"),
            (DriftStatus::Retargeted, "retargeted"),
        ] {
            assert_eq!(status.to_string(), name);
            assert_eq!(
                serde_json::to_string(&status).unwrap(),
                format!("\"{name}\"")
            );
            assert_eq!(status.drifted(), name != "unchanged");
        }
    }
}
