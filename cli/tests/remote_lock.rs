//! The remote and its lock when things go wrong, end to end with real git, a
//! bare remote in a temp dir and temp homes:
//!
//! - git calls that talk to a remote never hang: against a remote that
//!   accepts the connection and never answers (a loopback TCP server here),
//!   every network command ends within its timeout (`STEAD_NETWORK_TIMEOUT`),
//!   with `hybrid` falling back to the local-only lock and the others naming
//!   the remote and the timeout;
//! - a machine reclaims the remote lock a dead process of its own left.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::Sandbox;
use common::remote::Remote;
use common::{git_env, wait_until};

const MANIFEST: &str = r#"
[settings]
default_profile = "personal"

[profile.personal.vars]
who = "home"

[file.bashrc]
path = "~/.bashrc"
source = "bashrc"
"#;

/// The network timeout the tests configure, seconds.
const TIMEOUT: u64 = 1;

fn git(home: &Path, dir: &Path, args: &[&str]) -> String {
    common::remote::git_in(home, dir, args, &[])
}

/// A bare remote seeded with the config, and one machine joined and synced.
struct World {
    remote: Remote,
    sb: Sandbox,
}

impl World {
    fn new() -> World {
        let w = World::with_manifest(MANIFEST);
        w.ok(&["apply", "--yes"]);
        w
    }

    fn with_manifest(manifest: &str) -> World {
        let remote = Remote::seeded(
            "main",
            &[("stead.toml", manifest), ("bashrc", "# shared bashrc\n")],
        );
        let w = World {
            remote,
            sb: Sandbox::new(),
        };
        let url = w.remote.url().to_string();
        let clone = w.clone_dir();
        w.ok(&["init", "--repo", &url, "--path", clone.to_str().unwrap()]);
        w.ok(&["sync", "--no-apply"]);
        w
    }

    fn remote(&self) -> PathBuf {
        self.remote.remote.clone()
    }

    /// The remote lock ref on the bare remote, if any.
    fn remote_lock_ref(&self) -> Option<String> {
        let out = git(
            self.remote.dir.path(),
            &self.remote(),
            &["for-each-ref", "refs/stead/"],
        );
        (!out.is_empty()).then_some(out)
    }

    fn clone_dir(&self) -> PathBuf {
        self.sb.home().join("dots")
    }

    /// Runs stead with the default network timeout: setting a world up
    /// talks to a local remote, which a loaded machine can make slower than
    /// the short [`TIMEOUT`] (only [`World::run_bounded`] uses that).
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        self.run_with_timeout(args, None)
    }

    fn run_with_timeout(&self, args: &[&str], timeout: Option<u64>) -> (i32, String, String) {
        let mut cmd = self.sb.stead(args);
        cmd.envs(git_env());
        if let Some(t) = timeout {
            cmd.env("STEAD_NETWORK_TIMEOUT", t.to_string());
        }
        let out = cmd.output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args);
        assert_eq!(code, 0, "stead {args:?} failed\n{out}\n{err}");
        out
    }

    fn hybrid(&self) {
        self.sb.write_lock_config(
            r#"{"lock_type": "hybrid", "timeout": 300, "retry": {"attempts": 0}}"#,
        );
    }

    /// Points `origin` at a loopback server that accepts and never answers.
    fn hang_remote(&self) -> Silent {
        let silent = Silent::start();
        let url = format!("git://127.0.0.1:{}/x", silent.port);
        git(
            self.remote.dir.path(),
            &self.clone_dir(),
            &["remote", "set-url", "origin", &url],
        );
        silent
    }

    /// Runs stead, asserting it ends within the timeout (plus what the
    /// command itself takes) and leaves no git behind in the clone.
    fn run_bounded(&self, args: &[&str]) -> (i32, String, String) {
        let started = Instant::now();
        let result = self.run_with_timeout(args, Some(TIMEOUT));
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(TIMEOUT + 3),
            "stead {args:?} took {took:?}\n{result:?}"
        );
        assert_no_process_in(&self.clone_dir());
        result
    }
}

/// A loopback TCP server that accepts connections and never says a word.
struct Silent {
    port: u16,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Silent {
    fn start() -> Silent {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        // Holds every connection open, silent, until the test process ends.
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                match stream {
                    Ok(s) => {
                        held.push(s);
                        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    Err(_) => break,
                }
            }
        });
        Silent { port, accepted }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Waits (bounded) until no process has its working directory in `dir`: the
/// killed git and its helpers are gone.
fn assert_no_process_in(dir: &Path) {
    let dir = dir.canonicalize().unwrap();
    let busy = || {
        std::fs::read_dir("/proc").unwrap().flatten().any(|p| {
            std::fs::read_link(p.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(&dir))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    while busy() {
        assert!(Instant::now() < deadline, "a process stayed in {dir:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn says_timeout(text: &str) -> bool {
    text.contains(&format!(
        "cannot reach remote 'origin': 'origin' gave no answer within {TIMEOUT} s"
    )) || text.contains(&format!("'origin' gave no answer within {TIMEOUT} s"))
}

#[test]
fn lock_info_with_hybrid_ends_within_the_timeout_and_says_so() {
    let w = World::new();
    w.hybrid();
    let _silent = w.hang_remote();
    let (code, out, err) = w.run_bounded(&["state", "lock-info"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains(&format!(
            "Remote lock (origin refs/stead/lock): unknown, cannot reach remote 'origin': \
             'origin' gave no answer within {TIMEOUT} s"
        )),
        "{out}"
    );
    assert!(out.contains("--network-timeout"), "{out}");
}

#[test]
fn hybrid_apply_falls_back_to_the_local_lock_and_converges() {
    let w = World::new();
    w.hybrid();
    let _silent = w.hang_remote();
    std::fs::write(w.sb.home().join(".bashrc"), "edited by hand\n").unwrap();
    let (code, out, err) = w.run_bounded(&["apply", "--yes"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        err.contains(&format!(
            "⚠️  Warning: Cannot reach remote repository: 'origin' gave no answer within {TIMEOUT} s"
        )),
        "{err}"
    );
    assert!(
        err.contains(
            "\nProceeding with local-only lock.\nRemember to sync when connection is restored.\n"
        ),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(w.sb.home().join(".bashrc")).unwrap(),
        "# shared bashrc\n",
        "converged locally"
    );
    assert!(!w.sb.lock_file().exists(), "the local lock is released");
}

#[test]
fn check_conflicts_and_sync_end_within_the_timeout_naming_the_remote() {
    let w = World::new();
    let _silent = w.hang_remote();
    let (code, out, err) = w.run_bounded(&["state", "check-conflicts"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(says_timeout(&err), "{err}");
    assert!(
        err.contains("Comparing with what was last fetched from 'origin'."),
        "{err}"
    );
    assert!(out.contains("No conflicts"), "{out}");

    let (code, out, err) = w.run_bounded(&["sync"]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(says_timeout(&err), "{err}");
    assert!(err.contains("STEAD_NETWORK_TIMEOUT"), "{err}");
}

#[test]
fn the_timeout_is_configurable_with_a_flag() {
    let w = World::new();
    let _silent = w.hang_remote();
    let (code, _, err) = w.run_bounded(&["state", "check-conflicts", "--network-timeout", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(says_timeout(&err), "{err}");
    let (code, _, err) = w.run(&["state", "check-conflicts", "--network-timeout", "0"]);
    assert_eq!(code, 2, "{err}");
}

// ---- a machine's own dead remote lock ----

/// A manifest whose exec waits (at most a minute, so a failing test cannot
/// hang) until `<dir>/release` exists, after touching `<dir>/started`.
fn waiting_manifest(dir: &Path) -> String {
    common::waiting_manifest(
        r#"
[profile.personal.vars]
who = "home"

[file.bashrc]
path = "~/.bashrc"
source = "bashrc"
"#,
        dir,
    )
}

#[test]
fn after_sigkill_of_a_hybrid_apply_the_next_apply_reclaims_its_own_remote_lock() {
    let signals = tempfile::tempdir().unwrap();
    let w = World::with_manifest(&waiting_manifest(signals.path()));
    w.hybrid();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("stead"))
        .env("HOME", w.sb.home())
        .env("NO_COLOR", "1")
        .envs(git_env())
        .args(["--home", w.sb.home().to_str().unwrap(), "apply", "--yes"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = signals.path().join("started");
    wait_until("the apply holds the remote lock and runs its exec", || {
        assert!(child.try_wait().unwrap().is_none(), "apply ended early");
        started.exists() && w.remote_lock_ref().is_some()
    });
    let lock_ref = w.remote_lock_ref();

    // SIGKILL: no chance to release anything.
    child.kill().unwrap();
    child.wait().unwrap();
    std::fs::write(signals.path().join("release"), "").unwrap();
    assert_eq!(w.remote_lock_ref(), lock_ref, "the dead apply left it");

    // The next apply on the same machine proceeds at once, with a notice.
    let started_at = Instant::now();
    let (code, out, err) = w.run(&["apply", "--yes"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(started_at.elapsed() < Duration::from_secs(10));
    assert!(
        err.contains(&format!(
            "Released the remote lock on 'origin' left by apply (PID {pid}): \
             process {pid} of this machine is no longer running (same machine id and boot).",
            pid = child.id()
        )),
        "{err}"
    );
    assert_eq!(w.remote_lock_ref(), None, "released after the apply");
}

// ---- the 24-hour rule ----

impl World {
    /// A second machine joining the same remote, synced; returns its sandbox.
    fn join_other(&self) -> Sandbox {
        let other = Sandbox::new();
        let url = self.remote().to_str().unwrap().to_string();
        let clone = other.home().join("dots");
        let run = |args: &[&str]| {
            let out = other.stead(args).envs(git_env()).output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&["init", "--repo", &url, "--path", clone.to_str().unwrap()]);
        run(&["sync"]);
        self.ok(&["sync"]);
        other
    }

    /// Runs stead with the clock at `now`.
    fn run_at(&self, now: chrono::DateTime<chrono::Utc>, args: &[&str]) -> (i32, String, String) {
        let out = self
            .sb
            .stead(args)
            .envs(git_env())
            .env("STEAD_NOW", now.to_rfc3339())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

fn machine_id(sb: &Sandbox) -> String {
    std::fs::read_to_string(sb.state_dir().join("machine_id"))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn a_machine_unseen_for_24_hours_shows_as_offline() {
    let w = World::new();
    let b = w.join_other();
    let b_short = &machine_id(&b)[..8];
    let now = chrono::Utc::now();

    // Seen just now: nobody is offline.
    let (code, out, err) = w.run_at(now, &["state", "lock-info"]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("Offline machines"), "{out}");
    let (code, out, err) = w.run_at(now, &["state", "check-conflicts"]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("Offline machines"), "{out}");

    // Two days later (the clock injected), b is offline; this machine never is.
    let later = now + chrono::TimeDelta::hours(49);
    for args in [
        &["state", "lock-info"][..],
        &["state", "check-conflicts"][..],
    ] {
        let (code, out, err) = w.run_at(later, args);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(
            out.contains("Offline machines (not seen for 24 hours):\n"),
            "{args:?}: {out}"
        );
        assert!(
            out.contains(&format!("({b_short}...): last seen 2 days ago")),
            "{args:?}: {out}"
        );
        assert!(
            !out.contains(&format!("({}...)", &machine_id(&w.sb)[..8])),
            "{args:?}: {out}"
        );
        let mut json_args = vec!["--json"];
        json_args.extend_from_slice(args);
        let (_, out, _) = w.run_at(later, &json_args);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["offline_machines"][0]["id"], machine_id(&b), "{v}");
    }
}

#[test]
fn a_machine_that_syncs_with_nothing_to_say_is_still_seen() {
    let w = World::new();
    let b = w.join_other();
    let b_short = &machine_id(&b)[..8];
    let head = || git(w.remote.dir.path(), &w.remote(), &["rev-parse", "HEAD"]);

    // b syncs again a day and a half later, with nothing changed: it still
    // publishes that it was there (one commit)...
    let now = chrono::Utc::now();
    let later = now + chrono::TimeDelta::hours(36);
    let b_sync_at = |at: chrono::DateTime<chrono::Utc>| {
        let out = b
            .stead(&["sync"])
            .envs(git_env())
            .env("STEAD_NOW", at.to_rfc3339())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let before = head();
    b_sync_at(later);
    assert_ne!(head(), before, "the heartbeat was pushed");
    // ...and only once within the hour.
    let after_beat = head();
    b_sync_at(later + chrono::TimeDelta::minutes(30));
    assert_eq!(head(), after_beat, "no second heartbeat within the hour");

    // a, after its own sync, does not count b as offline 12 hours on.
    let (code, _, err) = w.run_at(later, &["sync"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = w.run_at(
        later + chrono::TimeDelta::hours(12),
        &["state", "lock-info"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains(&format!("({b_short}...)")), "{out}");
    // Without a word from b for 24 hours, it is.
    let (_, out, _) = w.run_at(
        later + chrono::TimeDelta::hours(25),
        &["state", "lock-info"],
    );
    assert!(
        out.contains(&format!("({b_short}...): last seen 1 day ago")),
        "{out}"
    );
}

#[test]
fn a_remote_lock_of_an_offline_machine_is_broken_with_a_notice() {
    let w = World::new();
    let b = w.join_other();
    // b's lock, taken 25 hours ago and never released; a's timeout is longer.
    let created = chrono::Utc::now() - chrono::TimeDelta::hours(25);
    let lock = serde_json::json!({
        "id": "0b0b0b0b-0000-4000-8000-000000000000",
        "lock_type": "hybrid",
        "operation": "apply",
        "machine": {"id": machine_id(&b), "hostname": "host-b", "pid": 4242, "user": "u"},
        "created_at": created.to_rfc3339(),
        "expected_duration_seconds": 60,
        "reason": null,
        "state_serial": null,
        "boot_id": "another-machines-boot",
        "pid_start_time": null,
    });
    let top = w.remote.dir.path();
    let remote = w.remote();
    let blob = {
        let mut child = std::process::Command::new("git")
            .current_dir(&remote)
            .args(["hash-object", "-w", "--stdin"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(lock.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let tree = {
        let mut child = std::process::Command::new("git")
            .current_dir(&remote)
            .args(["mktree"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("100644 blob {blob}\tlock.json\n").as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let commit = git(top, &remote, &["commit-tree", &tree, "-m", "stead lock"]);
    git(top, &remote, &["update-ref", "refs/stead/lock", &commit]);
    w.sb.write_lock_config(
        r#"{"lock_type": "hybrid", "timeout": 200000, "retry": {"attempts": 0}}"#,
    );

    let out = w.ok(&["state", "lock-info"]);
    assert!(
        out.contains("Offline: its machine has not been seen for 24 hours"),
        "{out}"
    );
    let (code, out, err) = w.run(&["apply", "--yes"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        err.contains(
            "Broke the remote lock on 'origin' (apply by PID 4242 on host-b, acquired 1 day ago): \
             its machine has not been seen for 24 hours, so it counts as offline."
        ),
        "{err}"
    );
    assert_eq!(w.remote_lock_ref(), None, "released after the apply");
}

// ---- what lock files say, and --verbose ----

#[test]
fn lock_files_carry_the_operation_the_serial_and_the_timeout() {
    let signals = tempfile::tempdir().unwrap();
    let w = World::with_manifest(&waiting_manifest(signals.path()));
    w.sb.write_lock_config(r#"{"lock_type": "hybrid", "timeout": 240, "retry": {"attempts": 0}}"#);
    let serial = w.sb.state_json()["lineage"]["serial"].as_u64().unwrap();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("stead"))
        .env("HOME", w.sb.home())
        .env("NO_COLOR", "1")
        .envs(git_env())
        .args(["--home", w.sb.home().to_str().unwrap(), "apply", "--yes"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = signals.path().join("started");
    wait_until("the apply holds both locks", || {
        assert!(child.try_wait().unwrap().is_none(), "apply ended early");
        started.exists() && w.remote_lock_ref().is_some()
    });
    let local: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.sb.lock_file()).unwrap()).unwrap();
    let remote_text = git(
        w.remote.dir.path(),
        &w.remote(),
        &["show", "refs/stead/lock:lock.json"],
    );
    let remote: serde_json::Value = serde_json::from_str(&remote_text).unwrap();
    std::fs::write(signals.path().join("release"), "").unwrap();
    assert!(child.wait().unwrap().success());
    for lock in [&local, &remote] {
        assert_eq!(lock["operation"], "apply", "{lock}");
        assert_eq!(lock["reason"], "apply the config to this machine", "{lock}");
        assert_eq!(lock["state_serial"], serial, "{lock}");
        assert_eq!(lock["expected_duration_seconds"], 240, "{lock}");
    }
}

#[test]
fn verbose_shows_git_commands_lock_steps_and_merge_decisions() {
    let w = World::new();
    let (code, _, err) = w.run(&["sync", "--verbose"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("$ git fetch --quiet -- origin\n"), "{err}");
    assert!(err.contains("Lock: took the local lock "), "{err}");
    assert!(
        err.contains("(sync, expected to take at most 300 s)"),
        "{err}"
    );
    assert!(
        err.contains("Merge: only this machine has news: the remote takes it (local serial"),
        "{err}"
    );

    let (code, _, err) = w.run(&["state", "check-conflicts", "--verbose"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("$ git fetch --quiet -- origin\n"), "{err}");
    assert!(err.contains("Merge: "), "{err}");
    let (_, _, quiet) = w.run(&["state", "check-conflicts"]);
    assert!(!quiet.contains("$ git"), "{quiet}");

    // migrate: its lock steps and what it does.
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.state_dir()).unwrap();
    std::fs::write(
        sb.state_file(),
        r#"{"active_profile": "work", "last_sync": "2026-01-15T10:30:00Z"}"#,
    )
    .unwrap();
    let out = sb
        .stead(&["state", "migrate", "--no-backup", "--verbose"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("Lock: took the local lock "), "{err}");
    assert!(
        err.contains("from version 1 to version 3 (--no-backup: no backup is made)"),
        "{err}"
    );
    assert!(err.contains("Lock: released"), "{err}");
}

#[test]
fn ctrl_c_during_a_hanging_fetch_leaves_no_git_behind() {
    let w = World::new();
    let silent = w.hang_remote();
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("stead"))
        .env("HOME", w.sb.home())
        .env("NO_COLOR", "1")
        .env("STEAD_NETWORK_TIMEOUT", "60")
        .envs(git_env())
        .args([
            "--home",
            w.sb.home().to_str().unwrap(),
            "state",
            "check-conflicts",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("git connects to the silent remote", || {
        silent.accepted() > 0
    });
    let ok = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_process_in(&w.clone_dir());
}
