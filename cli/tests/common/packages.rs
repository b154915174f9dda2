//! The world of a package test: a config repo, a package manager's
//! throw-away root (from the testkit), and logging wrappers put first on
//! `PATH` that count the programs stead starts.

use std::fs;
use std::path::{Path, PathBuf};

use super::Repo;

/// A config repo, a manager's root `R`, the environment that points stead
/// at it, and the wrappers' dir.
pub struct PackageWorld<R> {
    pub repo: Repo,
    pub root: R,
    env: Vec<(&'static str, String)>,
    _bin: tempfile::TempDir,
    /// The wrappers' dir: `calls.log` is their log.
    pub bin: PathBuf,
}

impl<R> PackageWorld<R> {
    /// A world whose stead runs with `env` and logs every start of the
    /// programs `wrapped` (each must be on `PATH`).
    pub fn new(
        root: R,
        env: Vec<(&'static str, String)>,
        wrapped: &[&str],
        manifest: &str,
    ) -> Self {
        let bin_dir = tempfile::tempdir().unwrap();
        let bin = bin_dir.path().to_path_buf();
        for name in wrapped {
            write_logging_wrapper(&bin, name, &which(name));
        }
        PackageWorld {
            repo: Repo::new(manifest),
            root,
            env,
            _bin: bin_dir,
            bin,
        }
    }

    /// `stead --config ... ARGS` with the root's environment and the
    /// wrappers first on `PATH`.
    pub fn command(&self, args: &[&str]) -> assert_cmd::Command {
        assert_cmd::Command::from_std(self.std_command(args))
    }

    /// [`PackageWorld::command`] as a `std` command (to spawn it).
    pub fn std_command(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("stead"));
        cmd.env_remove("STEAD_HOME")
            .env_remove("STEAD_STATE_DIR")
            .env_remove("STEAD_HISTORY_LIMIT")
            .env("HOME", self.repo.home())
            .env("NO_COLOR", "1")
            .args(["--home", self.repo.home().to_str().unwrap()])
            .args(["--config", self.repo.config.path().to_str().unwrap()])
            .args(args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        cmd.env("PATH", path);
        cmd
    }

    /// [`PackageWorld::command`], run: exit code, stdout, stderr.
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = self.command(args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// [`PackageWorld::run`], expecting success; stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args);
        assert_eq!(code, 0, "stead {args:?}\nstdout:\n{out}\nstderr:\n{err}");
        out
    }

    /// The programs stead started since the last call, each with its
    /// arguments.
    pub fn calls(&self) -> Vec<String> {
        let log = self.bin.join("calls.log");
        let text = fs::read_to_string(&log).unwrap_or_default();
        let _ = fs::remove_file(&log);
        // One call per NUL-ended record (an argument may hold a newline).
        text.split_terminator('\0').map(str::to_string).collect()
    }

    /// The journal's records.
    pub fn journal(&self) -> Vec<serde_json::Value> {
        let text = fs::read_to_string(self.repo.sb.state_dir().join("journal.jsonl")).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The journal's `started` record of a transaction, and the records
    /// that share its op id.
    pub fn transaction_records(&self) -> Vec<(serde_json::Value, Vec<serde_json::Value>)> {
        let journal = self.journal();
        journal
            .iter()
            .filter(|r| r["resource"] == "transaction" && r["state"] == "started")
            .map(|start| {
                let rest = journal
                    .iter()
                    .filter(|r| r["op_id"] == start["op_id"] && r["state"] != "started")
                    .cloned()
                    .collect();
                (start.clone(), rest)
            })
            .collect()
    }
}

/// `bin/NAME`: logs `NAME ARGS` (NUL-ended) to `bin/calls.log`, then runs
/// `real`.
pub fn write_logging_wrapper(bin: &Path, name: &str, real: &Path) {
    let script = format!(
        "#!/bin/sh\nprintf '%s\\0' \"{name} $*\" >> '{}'\nexec '{}' \"$@\"\n",
        bin.join("calls.log").display(),
        real.display()
    );
    let p = bin.join(name);
    fs::write(&p, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
}

/// `name` on `PATH`.
pub fn which(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is not on PATH"))
}

/// How many of `calls` started `program`.
pub fn count(calls: &[String], program: &str) -> usize {
    calls
        .iter()
        .filter(|c| c.split(' ').next() == Some(program))
        .count()
}

/// The members of a journal record, sorted.
pub fn members(record: &serde_json::Value) -> Vec<String> {
    let mut m: Vec<String> = record["members"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    m.sort_unstable();
    m
}

/// Waits (up to a minute) for `what` to hold, checking every 20 ms.
pub fn wait_for(what: &str, mut holds: impl FnMut() -> bool) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !holds() {
        assert!(
            std::time::Instant::now() < until,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The live processes (zombies left out) whose command line mentions
/// `text`.
pub fn processes_mentioning(text: &str) -> Vec<i32> {
    let Ok(proc) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    proc.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let zombie = fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                stat.rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
            });
            !zombie
                && fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(text)
                })
        })
        .collect()
}

/// `name -> version` pairs, as a fixture's `installed()` gives them.
pub fn versions(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// A manifest declaring each of `names` with `manager` and `extra` keys.
pub fn declare(manager: &str, names: &[&str], extra: &str) -> String {
    let mut m = String::from("[settings]\n");
    for n in names {
        m.push_str(&format!("[package.{n}]\nmanager = \"{manager}\"\n{extra}"));
    }
    m
}

/// Kills the child when dropped (a test that fails half way leaves no stead
/// running).
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
