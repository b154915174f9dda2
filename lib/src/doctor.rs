//! `stead doctor`'s checks: each looks at one part of the environment stead
//! depends on (git, the config repo, the state record, the lock, the
//! journal, the remote, the merge driver, the state dir's permissions, free
//! space) and says ok, warn or fail, with what to do about it. It changes
//! nothing: no lock is taken, no file is written, no stale lock is removed.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::converge;
use crate::journal;
use crate::layout::Layout;
use crate::lock::{self, LockConfig, LockStatus};
use crate::state::{Loaded, State, StateStore};
use crate::sync::git::Git;
use crate::sync::repo::{ATTRIBUTES_LINE, MERGE_DRIVER};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// As it should be.
    Ok,
    /// Works, but something deserves attention.
    Warn,
    /// Something stead needs is broken.
    Fail,
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked (`git`, `state`, `lock`, ...).
    pub name: &'static str,
    /// How it came out.
    pub level: Level,
    /// What was found, in one or a few lines.
    pub message: String,
    /// What to do about it (none when it is ok).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, message: impl Into<String>) -> Check {
        Check {
            name,
            level: Level::Ok,
            message: message.into(),
            fix: None,
        }
    }

    fn warn(name: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name,
            level: Level::Warn,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }

    fn fail(name: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name,
            level: Level::Fail,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }
}

/// What the checks look at.
pub struct Inputs<'a> {
    /// Where stead keeps its files.
    pub layout: &'a Layout,
    /// The state store.
    pub store: &'a StateStore,
    /// The config repo given on the command line, if any (else the one the
    /// state records).
    pub config: Option<&'a Path>,
    /// How to talk to the remote (the network timeout bounds the check).
    pub sync: &'a crate::sync::Options,
}

/// Free space below this on a filesystem stead writes to is a warning, and
/// below [`FAIL_BYTES`] a failure (an apply could not write its state).
const WARN_BYTES: u64 = 200 * 1024 * 1024;
const FAIL_BYTES: u64 = 10 * 1024 * 1024;
/// The same for free inodes.
const WARN_INODES: u64 = 10_000;
const FAIL_INODES: u64 = 100;

/// Runs every check, in a fixed order.
pub fn run(inputs: &Inputs) -> Vec<Check> {
    let mut checks = vec![check_git()];
    let (state_check, state) = check_state(inputs.store);
    checks.push(state_check);
    checks.push(check_lock(inputs.layout));
    checks.push(check_journal(inputs.layout));
    checks.extend(check_config_repo(inputs, state.as_ref()));
    checks.push(check_permissions(inputs.layout.state_dir()));
    checks.extend(check_space(inputs.layout));
    checks
}

/// Whether every check is ok or a warning.
pub fn healthy(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.level != Level::Fail)
}

fn check_git() -> Check {
    match std::process::Command::new("git").arg("--version").output() {
        Ok(out) if out.status.success() => {
            let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
            Check::ok("git", version)
        }
        Ok(out) => Check::fail(
            "git",
            format!(
                "'git --version' failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            "Reinstall git.",
        ),
        Err(e) => Check::fail(
            "git",
            format!("cannot run git: {e}"),
            "Install git and make sure it is on PATH (commit and sync need it).",
        ),
    }
}

/// The state record as the next command would read it; the record itself
/// when it is readable (the config repo check needs it).
fn check_state(store: &StateStore) -> (Check, Option<State>) {
    let path = store.path();
    match store.load() {
        Ok(None) => (
            Check::warn(
                "state",
                format!("no state record yet at {}", path.display()),
                "Run 'stead init' (or 'stead apply', which initializes on its first run).",
            ),
            None,
        ),
        Ok(Some(Loaded::Current(state))) => (
            Check::ok(
                "state",
                format!(
                    "{} is readable: version {}, serial {}, {} resources",
                    path.display(),
                    state.version,
                    state.lineage.serial,
                    state.resources.len()
                ),
            ),
            Some(*state),
        ),
        Ok(Some(Loaded::Normalised { state, .. })) => (
            Check::warn(
                "state",
                format!(
                    "{} is readable, in the spec's spelling of version 2",
                    path.display()
                ),
                "Run 'stead state migrate' to save it in stead's form (a copy of the original is kept).",
            ),
            Some(*state),
        ),
        Ok(Some(Loaded::Legacy { .. })) => (
            Check::warn(
                "state",
                format!("{} is version 1", path.display()),
                "Run 'stead state migrate' (a backup is kept); the next apply migrates it too.",
            ),
            None,
        ),
        // The load error names the file and says how to restore it.
        Err(e) => (
            Check::fail(
                "state",
                e.to_string(),
                "Restore a good copy or run 'stead state migrate', as the message says; \
                 stead changes nothing until the record is readable.",
            ),
            None,
        ),
    }
}

fn check_lock(layout: &Layout) -> Check {
    let config = match LockConfig::load(layout) {
        Ok(c) => c,
        Err(e) => {
            return Check::fail(
                "lock",
                e.to_string(),
                format!("Fix or remove {}.", layout.lock_config_file().display()),
            );
        }
    };
    let config_note = format!("lock type {}", config.lock_type.as_str());
    match lock::inspect(layout, &config) {
        Ok(LockStatus::Unlocked) => Check::ok("lock", format!("not held ({config_note})")),
        Ok(LockStatus::Held { info, overdue }) => {
            let who = format!(
                "held by '{}' (PID {} on {}) since {}",
                info.operation,
                info.machine.pid,
                info.machine.hostname,
                lock::ago(info.created_at, chrono::Utc::now())
            );
            if overdue {
                Check::warn(
                    "lock",
                    format!("{who}, longer than its timeout ({} s)", config.timeout),
                    format!(
                        "If PID {} is stuck, stop it; the lock is released when it ends.",
                        info.machine.pid
                    ),
                )
            } else {
                Check::ok("lock", who)
            }
        }
        Ok(LockStatus::HeldUnreadable { .. }) => Check::warn(
            "lock",
            "held by a live process, but the lock file cannot be read (being written?)",
            "Run 'stead state lock-info' again in a moment.",
        ),
        Ok(LockStatus::Stale { reason, .. }) => Check::warn(
            "lock",
            format!("a stale lock file is left: {reason}"),
            "Nothing to do: the next command removes it (or run 'stead state unlock').",
        ),
        Err(e) => Check::fail(
            "lock",
            e.to_string(),
            format!("Check the permissions of {}.", layout.lock_file().display()),
        ),
    }
}

fn check_journal(layout: &Layout) -> Check {
    let path = layout.state_dir().join(journal::JOURNAL_FILE);
    let loaded = match journal::load_read_only(&path) {
        Ok(l) => l,
        Err(e) => {
            return Check::fail(
                "journal",
                e.to_string(),
                "The next apply moves the unreadable journal aside to the backups dir and starts a new one.",
            );
        }
    };
    let mut notes = Vec::new();
    if let Some((run_id, started)) = journal::interrupted_run(&loaded.records) {
        let in_flight: usize = journal::in_flight(&loaded.records, &run_id)
            .iter()
            .map(|r| r.subjects().count())
            .sum();
        notes.push(format!(
            "run {run_id} (started {}) never ended, {in_flight} operation(s) in flight",
            started.format("%Y-%m-%d %H:%M:%S UTC")
        ));
    }
    if loaded.torn_tail.is_some() {
        notes.push("the last line was cut short (a write interrupted by a crash)".to_string());
    }
    if notes.is_empty() {
        return Check::ok(
            "journal",
            format!("{} records, every run ended", loaded.records.len()),
        );
    }
    Check::warn(
        "journal",
        notes.join("; "),
        "The next apply recovers: it ignores the cut line, plans again from what is on disk, \
         records what the interrupted run finished and runs only what is still to do.",
    )
}

/// The config repo: found, a git repo, clean; then its remote and merge driver.
fn check_config_repo(inputs: &Inputs, state: Option<&State>) -> Vec<Check> {
    let dir = match converge::config_dir(inputs.config, state) {
        Ok(d) => d,
        Err(_) => {
            return vec![Check::warn(
                "config",
                "no config repo given or recorded",
                "Pass --config DIR, or record one with 'stead init --path DIR'.",
            )];
        }
    };
    if !dir.join(crate::manifest::MANIFEST_FILE).is_file() {
        return vec![Check::fail(
            "config",
            format!(
                "{} holds no {}",
                dir.display(),
                crate::manifest::MANIFEST_FILE
            ),
            "Pass --config with the directory holding stead.toml, or run 'stead init --path DIR'.",
        )];
    }
    let git = match Git::open(&dir) {
        Ok(g) => inputs.sync.apply(g),
        Err(_) => {
            return vec![Check::warn(
                "config",
                format!("{} is not a git repository", dir.display()),
                format!(
                    "Run 'git init' in {} to commit and sync it (apply works without).",
                    dir.display()
                ),
            )];
        }
    };
    let repo = match git.is_clean(&[]) {
        Ok(true) => Check::ok("config", format!("{} (committed, clean)", dir.display())),
        Ok(false) => Check::warn(
            "config",
            format!("{} has uncommitted changes", dir.display()),
            "Commit them ('stead commit' or git commit) so other machines get them.",
        ),
        Err(e) => Check::fail(
            "config",
            e.to_string(),
            "Check the repository with 'git status'.",
        ),
    };
    let mut checks = vec![repo, check_remote(&git)];
    match check_etcd(&dir, inputs.sync) {
        // The record is on etcd: git never merges it, no driver is needed.
        Some(etcd) => checks.push(etcd),
        None => checks.push(check_merge_driver(&git)),
    }
    checks
}

/// The etcd cluster the config dir names (`None`: it names none): reachable
/// within the network timeout, and holding a record or not yet.
fn check_etcd(dir: &Path, options: &crate::sync::Options) -> Option<Check> {
    if !dir.join(crate::sync::etcd::CONFIG_FILE).exists() {
        return None;
    }
    #[cfg(feature = "etcd")]
    {
        let fix = "Check that etcd runs at the endpoints of .stead/etcd.toml ('etcdctl endpoint health'), \
                   and this machine's STEAD_ETCD_USER and password if the cluster has authentication.";
        let backend = match crate::sync::etcd::open(dir, options) {
            Ok(Some(b)) => b,
            Ok(None) => return None,
            Err(e) => return Some(Check::fail("etcd", e.to_string(), fix)),
        };
        Some(match backend.peek() {
            Ok(record) => Check::ok(
                "etcd",
                match record {
                    Some(r) => format!(
                        "{} is reachable: lineage {}, {} machine(s)",
                        backend.describe(),
                        r.lineage.id,
                        r.machine_count()
                    ),
                    None => format!("{} is reachable, no record yet", backend.describe()),
                },
            ),
            // Offline is a state stead works in: a warning, as for git.
            Err(e @ crate::sync::SyncError::Unreachable { .. }) => {
                Check::warn("etcd", e.to_string(), fix)
            }
            Err(e) => Check::fail("etcd", e.to_string(), fix),
        })
    }
    #[cfg(not(feature = "etcd"))]
    {
        let _ = options;
        Some(Check::fail(
            "etcd",
            "the config dir keeps its record on etcd, and this stead was built without the etcd feature",
            "Install a stead built with its default features.",
        ))
    }
}

fn check_remote(git: &Git) -> Check {
    let upstream = match git.upstream() {
        Ok(Some(up)) => up,
        Ok(None) => {
            return Check::ok(
                "remote",
                "no remote configured (this machine does not sync)",
            );
        }
        Err(e) => return Check::fail("remote", e.to_string(), "Check 'git remote -v'."),
    };
    let url = git
        .remote_url(&upstream.remote)
        .ok()
        .flatten()
        .unwrap_or_default();
    match git.check_reachable(&upstream.remote) {
        Ok(()) => Check::ok(
            "remote",
            format!("'{}' ({url}) is reachable", upstream.remote),
        ),
        // Offline is a state stead works in (apply runs, hybrid falls back
        // to the local lock), not a broken install: a warning.
        Err(e) => Check::warn(
            "remote",
            format!("{e} ({url})"),
            format!(
                "Check the network and the URL ('git remote -v'); a slow remote may need a longer \
                 --network-timeout (now {} s).",
                git.network_timeout().as_secs()
            ),
        ),
    }
}

fn check_merge_driver(git: &Git) -> Check {
    let fix = "Run 'stead commit' or 'stead sync' in this clone: it installs the driver.";
    let driver = match git.config_get(&format!("merge.{MERGE_DRIVER}.driver")) {
        Ok(Some(d)) => d,
        Ok(None) => {
            return Check::warn(
                "merge-driver",
                "not installed in this clone: git would text-merge .stead/state.json",
                fix,
            );
        }
        Err(e) => return Check::fail("merge-driver", e.to_string(), fix),
    };
    if let Some(exe) = driver_exe(&driver)
        && !exe.exists()
    {
        return Check::warn(
            "merge-driver",
            format!("installed, but names {}, which is gone", exe.display()),
            fix,
        );
    }
    let attributes = std::fs::read_to_string(git.root().join(".gitattributes")).unwrap_or_default();
    if !attributes.lines().any(|l| l.trim() == ATTRIBUTES_LINE) {
        return Check::warn(
            "merge-driver",
            format!("installed, but .gitattributes lacks '{ATTRIBUTES_LINE}'"),
            fix,
        );
    }
    Check::ok("merge-driver", "installed")
}

/// The program a driver command line names: `'<exe>' __merge-driver ...`.
fn driver_exe(driver: &str) -> Option<PathBuf> {
    let quoted = driver.strip_prefix('\'')?;
    let end = quoted.find("' __merge-driver")?;
    Some(PathBuf::from(quoted[..end].replace(r"'\''", "'")))
}

fn check_permissions(state_dir: &Path) -> Check {
    use std::os::unix::fs::MetadataExt;
    let meta = match std::fs::metadata(state_dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Check::ok(
                "permissions",
                format!("{} does not exist yet", state_dir.display()),
            );
        }
        Err(e) => {
            return Check::fail(
                "permissions",
                format!("cannot read {}: {e}", state_dir.display()),
                "Check the permissions of its parent directory.",
            );
        }
    };
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Check::fail(
            "permissions",
            format!(
                "{} is owned by uid {}, not by you (uid {me})",
                state_dir.display(),
                meta.uid()
            ),
            format!("Run 'chown -R {me} {}'.", state_dir.display()),
        );
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Check::fail(
            "permissions",
            format!(
                "{} is writable by others (mode {mode:o}): anyone could change the record",
                state_dir.display()
            ),
            format!("Run 'chmod go-w {}'.", state_dir.display()),
        );
    }
    Check::ok(
        "permissions",
        format!("{} is yours, mode {mode:o}", state_dir.display()),
    )
}

/// Free space and inodes of the state dir's and the home's filesystems
/// (once when they are the same).
// statvfs's counts are u64 here but u32 on some targets: keep `u64::from`.
#[allow(clippy::useless_conversion)]
fn check_space(layout: &Layout) -> Vec<Check> {
    let mut seen = Vec::new();
    let mut checks = Vec::new();
    for dir in [layout.state_dir(), layout.home()] {
        let at = existing_ancestor(dir);
        match nix::sys::statvfs::statvfs(&at) {
            Ok(st) => {
                if seen.contains(&st.filesystem_id()) {
                    continue;
                }
                seen.push(st.filesystem_id());
                let frsize = u64::from(st.fragment_size()).max(1);
                let bytes = u64::from(st.blocks_available()).saturating_mul(frsize);
                let inodes = u64::from(st.files_available());
                // A filesystem without inode accounting reports 0 of 0.
                let counts_inodes = u64::from(st.files()) > 0;
                checks.push(space_check(dir, bytes, inodes, counts_inodes));
            }
            Err(e) => checks.push(Check::warn(
                "space",
                format!("cannot read the free space of {}: {e}", at.display()),
                "Check that the directory is reachable.",
            )),
        }
    }
    checks
}

/// The level of a filesystem with `bytes` and `inodes` free.
fn space_check(dir: &Path, bytes: u64, inodes: u64, counts_inodes: bool) -> Check {
    let message = format!(
        "{}: {} free, {} inodes free",
        dir.display(),
        human_bytes(bytes),
        if counts_inodes {
            inodes.to_string()
        } else {
            "unlimited".to_string()
        }
    );
    let fix = format!(
        "Free some space (or inodes) on the filesystem of {}.",
        dir.display()
    );
    if bytes < FAIL_BYTES || (counts_inodes && inodes < FAIL_INODES) {
        Check::fail("space", message, fix)
    } else if bytes < WARN_BYTES || (counts_inodes && inodes < WARN_INODES) {
        Check::warn("space", message, fix)
    } else {
        Check::ok("space", message)
    }
}

/// `dir`, or its nearest ancestor that exists (the state dir may not yet).
fn existing_ancestor(dir: &Path) -> PathBuf {
    dir.ancestors()
        .find(|a| a.exists())
        .unwrap_or(Path::new("/"))
        .to_path_buf()
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn space_levels() {
        let d = Path::new("/x");
        assert_eq!(space_check(d, 1 << 40, 1 << 20, true).level, Level::Ok);
        assert_eq!(space_check(d, 50 << 20, 1 << 20, true).level, Level::Warn);
        assert_eq!(space_check(d, 1 << 20, 1 << 20, true).level, Level::Fail);
        assert_eq!(space_check(d, 1 << 40, 50, true).level, Level::Fail);
        assert_eq!(space_check(d, 1 << 40, 0, false).level, Level::Ok);
    }

    #[test]
    fn driver_exe_reads_the_quoted_path() {
        assert_eq!(
            driver_exe(r"'/opt/my stead/it'\''s' __merge-driver %O %A %B %P"),
            Some(PathBuf::from("/opt/my stead/it's"))
        );
        assert_eq!(driver_exe("stead __merge-driver"), None);
    }

    #[test]
    fn permissions_flag_a_group_writable_state_dir() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(check_permissions(dir.path()).level, Level::Ok);
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o770)).unwrap();
        let check = check_permissions(dir.path());
        assert_eq!(check.level, Level::Fail);
        assert!(check.fix.unwrap().contains("chmod go-w"));
    }

    #[test]
    fn human_bytes_reads_well() {
        assert_eq!(human_bytes(512), "512.0 B");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.0 MiB");
    }
}
