//! What the `package` kind asks of a package manager, one function per
//! question, each dispatched to the manager's adapter (`apt`, `dnf`,
//! `pacman`): what is installed, what a `latest` would install, whether an
//! interrupted run must be repaired first, and one transaction.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::resource::ResourceError;
use crate::resource::exec::Outcome;
use crate::run::RunControl;

use super::{apt, brew, dnf, pacman};

/// A package manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Manager {
    /// Debian's apt and dpkg.
    Apt,
    /// Fedora's dnf and rpm.
    Dnf,
    /// Arch's pacman.
    Pacman,
    /// Homebrew (tested against a recorded protocol only, see `brew.rs`).
    Brew,
}

impl Manager {
    /// Its name in manifests, plans and the state (`apt:git`).
    pub fn as_str(self) -> &'static str {
        match self {
            Manager::Apt => "apt",
            Manager::Dnf => "dnf",
            Manager::Pacman => "pacman",
            Manager::Brew => "brew",
        }
    }

    /// The manager named `name`.
    pub fn named(name: &str) -> Option<Manager> {
        [Manager::Apt, Manager::Dnf, Manager::Pacman, Manager::Brew]
            .into_iter()
            .find(|m| m.as_str() == name)
    }

    /// The manager of this machine: the first whose query program is on
    /// `PATH` (dpkg-query, then rpm with dnf, then pacman, then brew).
    pub fn detect() -> Option<Manager> {
        let on_path = |program: &str| {
            std::env::var_os("PATH")
                .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(program).is_file()))
        };
        if on_path("dpkg-query") {
            Some(Manager::Apt)
        } else if on_path("rpm") && on_path("dnf") {
            Some(Manager::Dnf)
        } else if on_path("pacman") {
            Some(Manager::Pacman)
        } else if on_path("brew") {
            Some(Manager::Brew)
        } else {
            None
        }
    }

    /// Whether it can install a chosen version (pacman's repositories hold
    /// one version of each package; brew's formulae one too).
    pub fn pins(self) -> bool {
        !matches!(self, Manager::Pacman | Manager::Brew)
    }

    /// Whether `installed` is the `wanted` version. apt compares the whole
    /// version; dnf and pacman also take a version without its release
    /// (`1.0` is `1.0-1`).
    pub fn version_matches(self, installed: &str, wanted: &str) -> bool {
        installed == wanted
            || (self != Manager::Apt
                && installed
                    .strip_prefix(wanted)
                    .is_some_and(|rest| rest.starts_with('-')))
    }
}

/// One package as its manager's database has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its version (for apt also of a package removed with its config
    /// files left).
    pub version: String,
    /// Where it is.
    pub state: FoundState,
}

/// Where a package the database knows is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FoundState {
    /// Installed (dpkg: `ii`).
    Installed,
    /// Removed, its config files left (dpkg: `rc`): not installed.
    ConfigFiles,
    /// Left half done by an interrupted run (dpkg: `iU`, `iF`, ...).
    HalfDone(String),
    /// Known otherwise, and not installed.
    NotInstalled,
}

impl Found {
    /// Installed and complete.
    pub fn is_installed(&self) -> bool {
        self.state == FoundState::Installed
    }
}

/// Runs a read-only query with `LC_ALL=C` and returns its stdout. Exit 0,
/// or a code in `tolerated`, means "read it": the managers' queries exit 1
/// when any name is missing and still print the others.
pub(super) fn read_output(
    mut cmd: std::process::Command,
    what: &str,
    tolerated: &[i32],
) -> Result<String, String> {
    let out = cmd
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    match out.status.code() {
        Some(code) if code == 0 || tolerated.contains(&code) => {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        }
        _ => Err(format!(
            "{what} {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// What is installed of `names`, by name (one query).
pub fn query(m: Manager, names: &[&str]) -> Result<HashMap<String, Found>, String> {
    match m {
        Manager::Apt => apt::query(names),
        Manager::Dnf => dnf::query(names),
        Manager::Pacman => pacman::query(names),
        Manager::Brew => brew::query(names),
    }
}

/// The version a `latest` would install, by name (`None`: no candidate).
pub fn candidates(m: Manager, names: &[&str]) -> Result<HashMap<String, Option<String>>, String> {
    match m {
        Manager::Apt => apt::candidates(names),
        Manager::Dnf => dnf::candidates(names),
        Manager::Pacman => pacman::candidates(names),
        Manager::Brew => brew::candidates(names),
    }
}

/// The files each of `names` ships (or would ship), by name, as far as its
/// manager can say (one query); see each adapter's `shipped`.
pub fn shipped(m: Manager, names: &[&str]) -> Result<HashMap<String, Vec<PathBuf>>, String> {
    match m {
        Manager::Apt => apt::shipped(names),
        Manager::Dnf => dnf::shipped(names),
        Manager::Pacman => pacman::shipped(names),
        // `brew list --formula NAME` lists a keg's files under the cellar,
        // never a managed config path: no autoedge.
        Manager::Brew => Ok(HashMap::new()),
    }
}

/// `path` (absolute, as a package database lists it) under `root`; `None`
/// for what is no file of its own: the root itself (`/.`, `/`) or a
/// relative path.
pub fn under_root(root: Option<&Path>, path: &str) -> Option<PathBuf> {
    let path = path.trim_end_matches('/');
    if !path.starts_with('/') {
        return None;
    }
    // `//etc` is `/etc`: under the root, not the machine's.
    let rel = path.trim_start_matches('/');
    if rel.is_empty() || rel == "." {
        return None;
    }
    Some(root.unwrap_or(Path::new("/")).join(rel))
}

/// Why nothing may be installed or removed until the user repairs the
/// manager, and the command that repairs it; `None`: it is consistent.
pub fn interrupted(m: Manager) -> Result<Option<(String, String)>, String> {
    match m {
        Manager::Apt => apt::interrupted(),
        Manager::Dnf | Manager::Brew => Ok(None),
        Manager::Pacman => pacman::interrupted(),
    }
}

/// Installs (`version`: a pin) or removes `packages` in one transaction,
/// as a child of `control`.
pub(crate) fn transaction(
    m: Manager,
    install: bool,
    packages: &[(&str, Option<&str>)],
    control: &RunControl,
) -> Result<Outcome, ResourceError> {
    let argv = match m {
        Manager::Apt => apt::transaction_argv(install, packages),
        Manager::Dnf => dnf::transaction_argv(install, packages),
        Manager::Pacman => pacman::transaction_argv(install, packages),
        Manager::Brew => brew::transaction_argv(install, packages),
    };
    run(argv, control)
}

/// Runs a transaction's argv as a child of `control`: its own process
/// group (announced to the run's reaper, killed by a hard cancel), output
/// captured, non-interactive.
fn run(argv: Vec<String>, control: &RunControl) -> Result<Outcome, ResourceError> {
    let mut env = std::collections::BTreeMap::from([
        ("DEBIAN_FRONTEND".to_string(), "noninteractive".to_string()),
        ("LC_ALL".to_string(), "C".to_string()),
    ]);
    env.extend(
        brew::ENV
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    // A package manager is the machine's, not the target home's: it runs
    // in `/` with the HOME stead was started with (rpm on Debian keeps its
    // database under it).
    let root = std::path::PathBuf::from("/");
    let home = std::env::var_os("HOME").map_or_else(|| root.clone(), std::path::PathBuf::from);
    crate::resource::exec::run_command(
        &crate::manifest::Command::Argv(argv),
        Some(&root),
        &env,
        &home,
        None,
        Some(control),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listed_path_goes_under_the_root_and_the_root_itself_is_no_path() {
        let r = Some(Path::new("/tmp/r"));
        assert_eq!(under_root(r, "/etc/x"), Some(PathBuf::from("/tmp/r/etc/x")));
        assert_eq!(
            under_root(r, "/usr/share/"),
            Some(PathBuf::from("/tmp/r/usr/share"))
        );
        assert_eq!(under_root(None, "/etc/x"), Some(PathBuf::from("/etc/x")));
        assert_eq!(
            under_root(r, "//etc/x"),
            Some(PathBuf::from("/tmp/r/etc/x"))
        );
        for nothing in ["/.", "/", "//", "", "etc/x"] {
            assert_eq!(under_root(r, nothing), None, "{nothing:?}");
        }
    }

    #[test]
    fn a_version_matches_whole_or_for_dnf_and_pacman_without_its_release() {
        assert!(Manager::Apt.version_matches("1.0-1", "1.0-1"));
        assert!(!Manager::Apt.version_matches("1.0-1", "1.0"));
        assert!(Manager::Dnf.version_matches("1.0-1", "1.0"));
        assert!(Manager::Pacman.version_matches("1.0-1", "1.0"));
        assert!(!Manager::Dnf.version_matches("1.0.1-1", "1.0"));
        assert!(!Manager::Dnf.version_matches("1.0-1", "1.1"));
        for m in [Manager::Apt, Manager::Dnf, Manager::Pacman, Manager::Brew] {
            assert_eq!(Manager::named(m.as_str()), Some(m));
        }
    }
}
