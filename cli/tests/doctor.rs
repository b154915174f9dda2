//! `stead doctor`: a healthy sandbox passes; a broken state file fails
//! naming the file; an unreachable remote is a warning reported within the network
//! timeout; `--json` carries every check.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Repo, git_env};

const MANIFEST: &str = "[file.a]\npath = \"~/a\"\ncontent = \"a\\n\"\n";

/// Runs git in `dir` (HOME: `home`); expects success.
fn git(home: &Path, dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .current_dir(dir)
        .env("HOME", home)
        .envs(git_env())
        .args(args)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A config repo committed on `main`, applied once; with `remote`, the
/// branch tracks `origin` at that URL (`push`: and it was pushed there).
fn applied_repo(remote: Option<&str>, push: bool) -> Repo {
    let repo = Repo::new(MANIFEST);
    let (home, dir) = (repo.home().to_path_buf(), repo.config.path().to_path_buf());
    git(&home, &dir, &["init", "-q", "-b", "main"]);
    git(&home, &dir, &["add", "-A"]);
    git(&home, &dir, &["commit", "-q", "-m", "config"]);
    if let Some(url) = remote {
        git(&home, &dir, &["remote", "add", "origin", url]);
        git(&home, &dir, &["config", "branch.main.remote", "origin"]);
        git(
            &home,
            &dir,
            &["config", "branch.main.merge", "refs/heads/main"],
        );
        if push {
            git(&home, &dir, &["push", "-q", "origin", "main"]);
        }
    }
    repo.ok(&["apply", "--yes"]);
    repo
}

/// `stead doctor --json` -> (exit code, the check named `name`).
fn doctor_check(repo: &Repo, env: &[(&str, &str)], name: &str) -> (i32, serde_json::Value) {
    let config = repo.config.path().to_str().expect("utf-8").to_string();
    let mut cmd = repo.sb.stead(&["--config", &config, "--json", "doctor"]);
    cmd.envs(git_env().into_iter().chain(env.iter().copied()));
    let out = cmd.output().expect("run stead");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(doc["schema"], 1);
    let check = doc["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no {name} check in {doc}"));
    (out.status.code().unwrap_or(-1), check)
}

#[test]
fn a_healthy_sandbox_passes_with_every_check_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let remote = dir.path().join("remote.git");
    let status = std::process::Command::new("git")
        .args(["init", "-q", "--bare", "-b", "main"])
        .arg(&remote)
        .status()
        .expect("git init");
    assert!(status.success());
    let repo = applied_repo(remote.to_str(), true);
    let (code, out, err) = repo.run(&["doctor"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("FAIL"), "{out}");
    for name in [
        "git",
        "state",
        "lock",
        "journal",
        "config",
        "remote",
        "merge-driver",
        "permissions",
        "space",
    ] {
        assert!(out.contains(&format!(" {name} ")), "no {name} line: {out}");
    }
    assert!(out.contains("is reachable"), "{out}");
    assert!(out.contains("0 failure(s)"), "{out}");
    let (code, state) = doctor_check(&repo, &[], "state");
    assert_eq!((code, state["level"].as_str()), (0, Some("ok")), "{state}");
}

#[test]
fn a_corrupt_state_file_fails_naming_the_file() {
    let repo = applied_repo(None, false);
    let path = repo.sb.state_file();
    std::fs::write(&path, "{ this is not json").expect("break state");
    let (code, out, _) = repo.run(&["doctor"]);
    assert_eq!(code, 1, "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("FAIL"))
        .unwrap_or_else(|| panic!("no FAIL line: {out}"));
    assert!(line.contains("state"), "{out}");
    assert!(line.contains(&path.display().to_string()), "{out}");
    assert!(out.contains("stead state migrate"), "{out}");
    let (code, state) = doctor_check(&repo, &[], "state");
    assert_eq!(code, 1);
    assert_eq!(state["level"], "fail", "{state}");
    // Nothing was repaired or moved: the doctor only looks.
    assert_eq!(
        std::fs::read_to_string(&path).expect("state"),
        "{ this is not json"
    );
}

#[test]
fn a_remote_path_that_does_not_exist_is_a_warning_of_the_remote_check() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("gone.git");
    let repo = applied_repo(missing.to_str(), false);
    let (code, remote) = doctor_check(&repo, &[], "remote");
    assert_eq!(code, 0, "offline is not a failure: {remote}");
    assert_eq!(remote["level"], "warn", "{remote}");
    assert!(
        remote["message"]
            .as_str()
            .unwrap_or_default()
            .contains("origin"),
        "{remote}"
    );
}

#[test]
fn a_remote_that_never_answers_is_reported_within_the_timeout() {
    // Connections complete in the kernel's backlog; nothing ever answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "git://127.0.0.1:{}/config.git",
        listener.local_addr().expect("addr").port()
    );
    let repo = applied_repo(Some(&url), false);
    let started = Instant::now();
    let (code, remote) = doctor_check(&repo, &[("STEAD_NETWORK_TIMEOUT", "1")], "remote");
    let took = started.elapsed();
    assert_eq!(code, 0, "offline is not a failure: {remote}");
    assert_eq!(remote["level"], "warn", "{remote}");
    let message = remote["message"].as_str().unwrap_or_default();
    assert!(message.contains("cannot reach remote 'origin'"), "{remote}");
    assert!(
        remote["fix"]
            .as_str()
            .unwrap_or_default()
            .contains("--network-timeout"),
        "{remote}"
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");
    drop(listener);
}

#[test]
fn doctor_needs_no_state_and_writes_none() {
    let repo = Repo::new(MANIFEST);
    let (code, out, _) = repo.run(&["doctor"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("no state record yet"), "{out}");
    assert!(!repo.sb.state_dir().exists(), "doctor wrote a state dir");
}

/// Takes the state lock from this test process (a live holder).
fn hold(repo: &Repo) -> stead_lib::lock::LockGuard {
    use stead_lib::lock::{self, LockConfig, LockRequest};
    let layout = repo.sb.layout();
    let id = stead_lib::machine::load_or_create_id(&layout).expect("machine id");
    lock::acquire(
        &layout,
        &LockConfig::default(),
        &LockRequest::new("apply", &id),
        &mut |_| {},
    )
    .expect("take the lock")
}

#[test]
fn the_lock_holder_is_named_and_a_stale_lock_is_a_warning_left_in_place() {
    let repo = applied_repo(None, false);
    let guard = hold(&repo);
    let (code, lock) = doctor_check(&repo, &[], "lock");
    assert_eq!((code, lock["level"].as_str()), (0, Some("ok")), "{lock}");
    let me = format!("PID {}", std::process::id());
    assert!(
        lock["message"].as_str().unwrap_or_default().contains(&me),
        "{lock}"
    );
    // The holder dies: its file names a pid that has exited, no flock.
    let mut info: stead_lib::lock::LockInfo =
        serde_json::from_slice(&std::fs::read(repo.sb.lock_file()).expect("lock")).expect("info");
    drop(guard);
    let mut child = std::process::Command::new("true").spawn().expect("true");
    info.machine.pid = child.id();
    info.pid_start_time = None;
    child.wait().expect("wait");
    std::fs::write(
        repo.sb.lock_file(),
        serde_json::to_vec_pretty(&info).expect("json"),
    )
    .expect("plant");
    let (code, lock) = doctor_check(&repo, &[], "lock");
    assert_eq!((code, lock["level"].as_str()), (0, Some("warn")), "{lock}");
    assert!(
        lock["message"]
            .as_str()
            .unwrap_or_default()
            .contains("no longer running"),
        "{lock}"
    );
    assert!(repo.sb.lock_file().exists(), "the doctor removed the lock");
}

#[test]
fn a_torn_journal_is_a_warning_that_says_what_the_next_apply_does() {
    let repo = applied_repo(None, false);
    let journal = repo.sb.state_dir().join("journal.jsonl");
    let mut bytes = std::fs::read(&journal).expect("journal");
    bytes.extend_from_slice(b"{\"run_id\": \"cut");
    std::fs::write(&journal, &bytes).expect("tear");
    let (code, check) = doctor_check(&repo, &[], "journal");
    assert_eq!(
        (code, check["level"].as_str()),
        (0, Some("warn")),
        "{check}"
    );
    assert!(
        check["message"]
            .as_str()
            .unwrap_or_default()
            .contains("cut short"),
        "{check}"
    );
    assert!(
        check["fix"]
            .as_str()
            .unwrap_or_default()
            .contains("next apply"),
        "{check}"
    );
}
