//! Many machines for end-to-end tests: a bare git remote in a temp dir
//! (seeded with a config repo, or empty) and machines that each have their
//! own temp HOME and a clone at `<home>/dots`. Real git, isolated from the
//! user's git config by [`super::git_env`].

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use serde_json::Value;

use super::{Sandbox, git_env};

/// Runs git in `dir` with `home` as HOME and `env` on top; expects success,
/// returns stdout trimmed.
pub fn git_in(home: &Path, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = std::process::Command::new("git")
        .current_dir(dir)
        .env("HOME", home)
        .envs(git_env())
        .envs(env.iter().copied())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A bare remote (`<tmp>/remote.git`) and the temp dir around it.
pub struct Remote {
    pub dir: tempfile::TempDir,
    pub remote: PathBuf,
}

impl Remote {
    /// A bare remote whose default branch is `branch`, with no commit.
    pub fn empty(branch: &str) -> Remote {
        let dir = tempfile::tempdir().unwrap();
        let remote = dir.path().join("remote.git");
        let r = Remote { dir, remote };
        r.git(
            r.dir.path(),
            &["init", "-q", "--bare", "-b", branch, "remote.git"],
        );
        r
    }

    /// A bare remote on `branch` whose first commit holds `files`
    /// (`(path, content)`, `stead.toml` among them).
    pub fn seeded(branch: &str, files: &[(&str, &str)]) -> Remote {
        let r = Remote::empty(branch);
        let seed = r.dir.path().join("seed");
        r.git(r.dir.path(), &["clone", "-q", r.url(), "seed"]);
        for (path, content) in files {
            let p = seed.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        r.git(&seed, &["add", "-A"]);
        r.git(&seed, &["commit", "-q", "-m", "seed"]);
        r.git(&seed, &["push", "-q", "origin", "HEAD"]);
        r
    }

    pub fn url(&self) -> &str {
        self.remote.to_str().unwrap()
    }

    /// Runs git in `dir` (HOME: the temp dir), expects success, returns stdout.
    pub fn git(&self, dir: &Path, args: &[&str]) -> String {
        git_in(self.dir.path(), dir, args, &[])
    }

    /// [`Remote::git`] with more environment (another author, ...).
    pub fn git_as(&self, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
        git_in(self.dir.path(), dir, args, env)
    }

    /// The shared record on the remote's `branch`.
    pub fn record_on(&self, branch: &str) -> Value {
        let text = self.git(
            &self.remote,
            &["show", &format!("{branch}:.stead/state.json")],
        );
        serde_json::from_str(&text).unwrap()
    }

    /// Edits the shared record in a fresh plain clone (`<tmp>/<name>`) and
    /// pushes it with `message`, as someone editing the repo by hand would;
    /// `env` sets the author.
    pub fn edit_record(
        &self,
        name: &str,
        message: &str,
        env: &[(&str, &str)],
        edit: impl FnOnce(&mut Value),
    ) {
        let dir = self.dir.path().join(name);
        self.git(
            self.dir.path(),
            &["clone", "-q", self.url(), dir.to_str().unwrap()],
        );
        let path = dir.join(".stead/state.json");
        let mut record: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        edit(&mut record);
        std::fs::write(&path, serde_json::to_vec_pretty(&record).unwrap()).unwrap();
        self.git_as(&dir, &["commit", "-q", "-am", message], env);
        self.git(&dir, &["push", "-q"]);
    }

    /// A new machine with a clone of the config repo at `<home>/dots`, not
    /// joined to anything yet.
    pub fn cloned_machine(&self) -> Machine {
        let m = Machine { sb: Sandbox::new() };
        let clone = m.clone_dir();
        self.git(
            self.dir.path(),
            &["clone", "-q", self.url(), clone.to_str().unwrap()],
        );
        m
    }

    /// A new machine joined with `init --repo` (clone at `<home>/dots`),
    /// with `--profile` when given.
    pub fn join(&self, profile: Option<&str>) -> Machine {
        let m = Machine { sb: Sandbox::new() };
        let clone = m.clone_dir();
        let mut args = vec![
            "init",
            "--repo",
            self.url(),
            "--path",
            clone.to_str().unwrap(),
        ];
        if let Some(p) = profile {
            args.extend(["--profile", p]);
        }
        m.ok(&args);
        m
    }
}

/// Two machines made by `first` and `second`, each synced once after it
/// joins, then `first` again, so that both saw everything.
pub fn two_synced(
    first: impl FnOnce() -> Machine,
    second: impl FnOnce() -> Machine,
) -> (Machine, Machine) {
    let a = first();
    a.ok(&["sync"]);
    let b = second();
    b.ok(&["sync"]);
    a.ok(&["sync"]);
    (a, b)
}

/// One machine: its sandbox (HOME, state dir) and its clone at `<home>/dots`.
pub struct Machine {
    pub sb: Sandbox,
}

impl Machine {
    pub fn clone_dir(&self) -> PathBuf {
        self.sb.home().join("dots")
    }

    /// Its machine id.
    pub fn id(&self) -> String {
        std::fs::read_to_string(self.sb.state_dir().join("machine_id"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// `stead --home <its home> ARGS` with git isolated.
    pub fn cmd(&self, args: &[&str]) -> assert_cmd::Command {
        let mut cmd = self.sb.stead(args);
        cmd.envs(git_env());
        cmd
    }

    /// Runs stead (in `dir` when given) -> (exit code, stdout, stderr).
    pub fn run_in(&self, dir: Option<&Path>, args: &[&str]) -> (i32, String, String) {
        let mut cmd = self.cmd(args);
        if let Some(dir) = dir {
            cmd.current_dir(dir);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        self.run_in(None, args)
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

    /// Runs stead with `--json`, expects success, parses stdout.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).unwrap()
    }

    /// Its local state record.
    pub fn state(&self) -> Value {
        self.sb.state_json()
    }
}

/// The ids of a history (`record["history"]` or a state's), in order.
pub fn ids(history: &Value) -> Vec<String> {
    history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

/// Puts `m` on the hybrid lock (the lineage's lock and its own) with
/// `timeout` seconds (on etcd: the lease's TTL), and no retry.
pub fn hybrid(m: &Machine, timeout: u64) {
    m.sb.write_lock_config(&format!(
        r#"{{"lock_type": "hybrid", "timeout": {timeout}, "retry": {{"attempts": 0}}}}"#
    ));
}

/// Starts `stead --home <its home> ARGS` on `m` in the background, stdout
/// and stderr piped.
pub fn spawn(m: &Machine, args: &[&str]) -> Child {
    m.spawn_with(args, Stdio::piped(), Stdio::piped())
}

impl Machine {
    /// Starts `stead --home <its home> ARGS` in the background with git
    /// isolated, stdout and stderr as given.
    pub fn spawn_with(&self, args: &[&str], stdout: Stdio, stderr: Stdio) -> Child {
        std::process::Command::new(assert_cmd::cargo::cargo_bin("stead"))
            .env("HOME", self.sb.home())
            .env("NO_COLOR", "1")
            .envs(git_env())
            .arg("--home")
            .arg(self.sb.home())
            .args(args)
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap()
    }
}
