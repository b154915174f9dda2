//! A sandbox for end-to-end tests: a temp HOME that the binary is pointed at
//! with --home, so tests never touch the real home directory.

#![allow(dead_code)]

pub mod etcd;
pub mod fleet;
pub mod packages;
pub mod remote;

// The apt fixture lives in the testkit, so the package benchmark uses it too.
#[allow(unused_imports)]
pub use stead_testkit::apt;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use assert_cmd::Command;

pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        Sandbox {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn home(&self) -> &Path {
        self.dir.path()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.home().join(".stead")
    }

    pub fn state_file(&self) -> PathBuf {
        self.state_dir().join("state.json")
    }

    pub fn lock_file(&self) -> PathBuf {
        self.state_dir().join("state.lock")
    }

    pub fn layout(&self) -> stead_lib::layout::Layout {
        stead_lib::layout::Layout::new(self.home(), None)
    }

    /// `stead --home <sandbox> ARGS`, with a clean environment.
    pub fn stead(&self, args: &[&str]) -> Command {
        let mut cmd = Command::cargo_bin("stead").expect("stead binary");
        cmd.env_remove("STEAD_HOME")
            .env_remove("STEAD_STATE_DIR")
            .env_remove("STEAD_HISTORY_LIMIT")
            .env("HOME", self.home())
            .env("NO_COLOR", "1")
            .arg("--home")
            .arg(self.home())
            .args(args);
        cmd
    }

    /// Runs stead and returns (exit code, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = self.stead(args).output().expect("run stead");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs stead, expects success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args);
        assert_eq!(
            code, 0,
            "stead {args:?} failed\nstdout:\n{out}\nstderr:\n{err}"
        );
        out
    }

    /// Runs stead with --json, expects success, parses stdout.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.ok(&all);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
    }

    pub fn write_lock_config(&self, json: &str) {
        std::fs::create_dir_all(self.state_dir()).unwrap();
        std::fs::write(self.state_dir().join("lock_config.json"), json).unwrap();
    }

    pub fn state_json(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.state_file()).unwrap()).unwrap()
    }
}

/// A sandbox with a config repo beside the home: `<tmp>/home`, `<tmp>/config`.
pub struct Repo {
    pub sb: Sandbox,
    pub config: tempfile::TempDir,
}

impl Repo {
    pub fn new(manifest: &str) -> Repo {
        let repo = Repo {
            sb: Sandbox::new(),
            config: tempfile::tempdir().expect("config dir"),
        };
        repo.write_manifest(manifest);
        repo
    }

    pub fn write_manifest(&self, manifest: &str) {
        fs::write(self.config.path().join("stead.toml"), manifest).unwrap();
    }

    pub fn write_source(&self, rel: &str, content: &str) {
        let p = self.config.path().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    pub fn home(&self) -> &Path {
        self.sb.home()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.home().join(rel)
    }

    /// Appends to the journal what a run killed after it started leaves:
    /// its `run-start` record and no `run-end`.
    pub fn journal_a_killed_run(&self) {
        let journal = self.sb.state_dir().join("journal.jsonl");
        let mut text = fs::read_to_string(&journal).unwrap_or_default();
        text.push_str(concat!(
            r#"{"op_id":"killed:0","run_id":"killed","resource":"run","#,
            r#""action":"run-start","state":"started","at":"2026-12-06T00:00:00Z"}"#,
            "\n"
        ));
        fs::write(&journal, text).unwrap();
    }

    /// `stead --config <config> ARGS` -> (code, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        let config = self.config.path().to_str().unwrap().to_string();
        let mut all = vec!["--config", config.as_str()];
        all.extend_from_slice(args);
        self.sb.run(&all)
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let config = self.config.path().to_str().unwrap().to_string();
        let mut all = vec!["--config", config.as_str()];
        all.extend_from_slice(args);
        self.sb.ok(&all)
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let config = self.config.path().to_str().unwrap().to_string();
        let mut all = vec!["--config", config.as_str()];
        all.extend_from_slice(args);
        self.sb.json(&all)
    }

    /// Replaces the temp paths in output so snapshots are stable.
    pub fn redact(&self, text: &str) -> String {
        text.replace(self.config.path().to_str().unwrap(), "<config>")
            .replace(self.home().to_str().unwrap(), "<home>")
    }

    /// Starts `stead --home <home> --config <config> ARGS` in the background
    /// (stdout and stderr as given), for tests that signal or kill it.
    pub fn spawn(
        &self,
        args: &[&str],
        stdout: std::process::Stdio,
        stderr: std::process::Stdio,
    ) -> std::process::Child {
        std::process::Command::new(assert_cmd::cargo::cargo_bin("stead"))
            .env("HOME", self.home())
            .env("NO_COLOR", "1")
            .env_remove("STEAD_HOME")
            .env_remove("STEAD_STATE_DIR")
            .arg("--home")
            .arg(self.home())
            .arg("--config")
            .arg(self.config.path())
            .args(args)
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("start stead")
    }
}

/// The environment every test's git runs with: no system config, a fixed
/// author and committer.
pub fn git_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("GIT_CONFIG_NOSYSTEM", "1"),
        ("GIT_AUTHOR_NAME", "stead test"),
        ("GIT_AUTHOR_EMAIL", "test@stead.invalid"),
        ("GIT_COMMITTER_NAME", "stead test"),
        ("GIT_COMMITTER_EMAIL", "test@stead.invalid"),
    ]
}

/// `STEAD_NOW` ten seconds ahead: what a run verifies then is past the stat
/// cache's and the seal's racy window, without sleeping through it.
pub fn later() -> String {
    (chrono::Utc::now() + chrono::TimeDelta::seconds(10)).to_rfc3339()
}

/// Rewrites `path` with `content` (the same size as before) and puts its
/// mtime back to the nanosecond with `touch -d`: only its ctime shows the
/// edit.
pub fn edit_hidden_by_touch_d(path: &Path, content: &str) {
    use std::os::unix::fs::MetadataExt;
    let before = fs::metadata(path).unwrap();
    assert_eq!(before.size(), content.len() as u64, "keep the size");
    fs::write(path, content).unwrap();
    let stamp = format!("@{}.{:09}", before.mtime(), before.mtime_nsec());
    let status = std::process::Command::new("touch")
        .args(["-m", "-d", &stamp])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
    let now = fs::metadata(path).unwrap();
    assert_eq!(
        (now.size(), now.mtime(), now.mtime_nsec()),
        (before.size(), before.mtime(), before.mtime_nsec())
    );
}

/// Waits (at most 30 s) until `cond` holds, polling every 20 ms.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `base` with an exec that touches `<dir>/started`, then waits (at most a
/// minute, so a failing test cannot hang) until `<dir>/release` exists: it
/// holds a run, and its locks, while the test looks at them.
pub fn waiting_manifest(base: &str, dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"{base}
[exec.wait]
command = "touch '{d}/started'; i=0; while [ ! -e '{d}/release' ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done"
creates = "~/.never"
"#
    )
}
