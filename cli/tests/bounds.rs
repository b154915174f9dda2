//! Apply and plan stay bounded in time and in size (issue 12): an exec that
//! leaves a background child holding its output open, a huge content diff,
//! an exec that prints megabytes.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::Repo;

/// Kills the process whose pid a test's command wrote to a file, when the
/// test ends (also when an assertion fails), so no `sleep` is left behind.
struct KillOnDrop(PathBuf);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = pid_in(&self.0) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn pid_in(file: &Path) -> Option<i32> {
    fs::read_to_string(file).ok()?.trim().parse().ok()
}

/// Running, not a zombie waiting to be reaped (an orphan's reaper may be
/// slow or absent in a container).
fn alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

/// A started stead, killed and reaped when dropped (if still running).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs stead with `args` and returns (code, stdout, stderr), or fails the
/// test once `limit` has passed (killing stead) instead of waiting for a
/// hang to end by itself.
fn run_within(r: &Repo, args: &[&str], limit: Duration) -> (i32, String, String) {
    let logs = tempfile::tempdir().expect("log dir");
    let (out_path, err_path) = (logs.path().join("out"), logs.path().join("err"));
    let out = fs::File::create(&out_path).expect("stdout file");
    let err = fs::File::create(&err_path).expect("stderr file");
    let started = Instant::now();
    let mut stead = Running(r.spawn(args, Stdio::from(out), Stdio::from(err)));
    let status = loop {
        if let Some(status) = stead.0.try_wait().expect("wait for stead") {
            break status;
        }
        assert!(
            started.elapsed() < limit,
            "stead {args:?} still running after {limit:?}\nstdout:\n{}",
            fs::read_to_string(&out_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let read = |p: &Path| String::from_utf8_lossy(&fs::read(p).expect("log")).into_owned();
    (
        status.code().unwrap_or(-1),
        read(&out_path),
        read(&err_path),
    )
}

#[test]
fn an_exec_leaving_a_background_child_on_its_output_finishes_and_keeps_the_child() {
    let r = Repo::new(
        r#"
[exec.daemon]
command = "sleep 300 & echo $! > daemon.pid; echo started"
"#,
    );
    let _cleanup = KillOnDrop(r.path("daemon.pid"));
    let (code, out, err) = run_within(&r, &["apply", "--yes"], Duration::from_secs(60));
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("exec.daemon ran"), "{out}");
    let pid = pid_in(&r.path("daemon.pid")).expect("the command wrote its child's pid");
    assert!(alive(pid), "the user's background child was killed");
}

#[test]
fn a_failing_exec_leaving_a_background_child_fails_without_waiting_for_it() {
    let r = Repo::new(
        r#"
[exec.daemon]
command = "sleep 300 & echo $! > daemon.pid; echo started; exit 4"
"#,
    );
    let _cleanup = KillOnDrop(r.path("daemon.pid"));
    let (code, out, err) = run_within(&r, &["apply", "--yes"], Duration::from_secs(60));
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("exited with status 4"), "{out}");
    assert!(out.contains("--- output ---\n  started"), "{out}");
}

#[test]
fn an_exec_that_times_out_has_its_background_child_killed_too() {
    let r = Repo::new(
        r#"
[exec.slow]
command = "sleep 300 & echo $! > child.pid; echo started; sleep 300"
timeout = "1s"
"#,
    );
    let _cleanup = KillOnDrop(r.path("child.pid"));
    let (code, out, _) = run_within(&r, &["apply", "--yes"], Duration::from_secs(60));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("timed out after 1s and was killed"), "{out}");
    let pid = pid_in(&r.path("child.pid")).expect("the command wrote its child's pid");
    // Killed with its group: wait (bounded) for the signal to land.
    let deadline = Instant::now() + Duration::from_secs(20);
    while alive(pid) {
        assert!(
            Instant::now() < deadline,
            "the background child outlived the timeout"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_huge_content_change_is_planned_quickly_as_a_summary() {
    let before: String = (0..100_000).map(|i| format!("before {i}\n")).collect();
    let after: String = (0..100_000).map(|i| format!("after {i}\n")).collect();
    let r = Repo::new("[file.big]\npath = \"~/big\"\nsource = \"big\"\n");
    r.write_source("big", &before);
    r.ok(&["apply", "--yes"]);
    r.write_source("big", &after);
    let (code, out, err) = run_within(&r, &["plan"], Duration::from_secs(30));
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("~ file.big"), "{out}");
    assert!(
        out.contains("content differs (100000 lines → 100000 lines)"),
        "{}",
        &out[..out.len().min(2000)]
    );
    assert!(!out.contains("+after 1\n"), "no diff lines are shown");
}

#[test]
fn a_failing_exec_that_prints_megabytes_keeps_only_a_capped_output() {
    let r = Repo::new(
        r#"
[exec.chatty]
command = "head -c 20000000 /dev/zero | tr '\\0' x; echo; echo last words; exit 3"
"#,
    );
    let (code, out, err) = run_within(&r, &["apply", "--yes"], Duration::from_secs(120));
    assert_eq!(code, 1, "{}", &out[..out.len().min(2000)]);
    assert!(
        out.len() + err.len() < 1_000_000,
        "{} bytes of output",
        out.len() + err.len()
    );
    assert!(
        out.contains("exited with status 3"),
        "{}",
        &out[..out.len().min(2000)]
    );
    assert!(
        out.contains(" bytes cut)"),
        "{}",
        &out[..out.len().min(2000)]
    );
    assert!(out.contains("last words"), "the end of the output is kept");
}
