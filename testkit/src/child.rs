//! Running the package fixtures' programs (apt, dnf, rpm, pacman, makepkg)
//! so that none outlives its call: its own process group, a deadline, and
//! output collected.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;

/// How long one fixture command may take before it is killed.
pub(crate) const DEADLINE: Duration = Duration::from_secs(120);

/// A file's or dir's size and mtime (seconds, nanoseconds); None: absent.
/// A dir's stamp changes when an entry is added or removed.
pub type Stamp = Option<(u64, i64, i64)>;

/// The [`Stamp`] of `path` (not followed if a link).
pub fn stamp(path: &str) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.size(), m.mtime(), m.mtime_nsec()))
}

/// Each of `tools` (name, the Debian package that ships it) on `PATH`, by
/// name; Err names the missing one and its package, for `fixture`.
pub(crate) fn require_tools(
    fixture: &str,
    tools: &[(&'static str, &str)],
) -> Result<std::collections::BTreeMap<&'static str, PathBuf>, String> {
    tools
        .iter()
        .map(|(tool, package)| {
            find_on_path(tool).map(|p| (*tool, p)).ok_or_else(|| {
                format!(
                    "the {fixture} test fixture needs `{tool}` on PATH: install the Debian \
                     package `{package}` (apt-get install {package})"
                )
            })
        })
        .collect()
}

/// `out`'s stdout, panicking with `what` and its whole output when it did
/// not succeed.
pub(crate) fn stdout_of_success(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({})\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The executable `tool` on `PATH`.
pub(crate) fn find_on_path(tool: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(tool))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// Runs `cmd` in a process group of its own, collecting its output; once it
/// exits (or past [`DEADLINE`]) the whole group is killed, so nothing it
/// started outlives it.
///
/// With a `marker` (`NAME=value`, unique to this run), `cmd` gets it in its
/// environment, and whatever still runs with it once the group is killed
/// is ended too: fakeroot's `faked` daemon, started by makepkg, runs in a
/// session of its own. fakeroot ends it on the way out; not when the
/// deadline kills fakeroot first.
pub(crate) fn run_bounded(mut cmd: Command, what: &str, marker: Option<(&str, &str)>) -> Output {
    if let Some((name, value)) = marker {
        cmd.env(name, value);
    }
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let pid = Pid::from_raw(child.id() as i32);
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            r.read_to_end(&mut buf).unwrap();
            buf
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let start = Instant::now();
    let mut timed_out = false;
    // Waits without reaping (WNOWAIT): the group's id cannot be reused by
    // another process before the group is killed.
    loop {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        match waitid(Id::Pid(pid), flags) {
            Ok(WaitStatus::StillAlive) if start.elapsed() < DEADLINE => {
                std::thread::sleep(Duration::from_millis(2))
            }
            Ok(WaitStatus::StillAlive) => {
                timed_out = true;
                break;
            }
            Err(nix::errno::Errno::EINTR) => {}
            _ => break,
        }
    }
    let _ = killpg(pid, Signal::SIGKILL);
    let status = child.wait().unwrap();
    if let Some((name, value)) = marker {
        end_marked(format!("{name}={value}").as_bytes(), what);
    }
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    assert!(
        !timed_out,
        "{what} still ran after {DEADLINE:?}; killed\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr)
    );
    Output {
        status,
        stdout,
        stderr,
    }
}

/// The processes whose environment holds `marker` (`NAME=value`); zombies
/// show none.
fn marked_processes(marker: &[u8]) -> Vec<Pid> {
    let Ok(proc) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    proc.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == marker))
        })
        .map(Pid::from_raw)
        .collect()
}

/// Ends the processes left with `marker` in their environment: SIGTERM
/// first (faked then removes its SysV IPC objects), SIGKILL after
/// [`GRACE`]; panics if any is still there after twice that.
fn end_marked(marker: &[u8], what: &str) {
    const GRACE: Duration = Duration::from_secs(5);
    let start = Instant::now();
    loop {
        let left = marked_processes(marker);
        if left.is_empty() {
            return;
        }
        let signal = if start.elapsed() < GRACE {
            Signal::SIGTERM
        } else {
            Signal::SIGKILL
        };
        assert!(
            start.elapsed() < 2 * GRACE,
            "{what}: processes {left:?} outlived it and could not be ended"
        );
        for pid in left {
            let _ = kill(pid, signal);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
