//! Running the helper programs from tests: a child whose stdout lines are
//! read with a deadline (they are the synchronisation points), whose stderr is
//! collected for assertions and failure messages, and which is killed and
//! reaped when dropped, also when an assertion fails.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use stead_lib::layout::Layout;

/// How long a test waits for a child's line or exit before failing.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A temp dir holding a state dir (`<tmp>/state`); the home is `<tmp>`.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        let sandbox = Sandbox {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        fs::create_dir(sandbox.state_dir()).expect("create state dir");
        sandbox
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.path().join("state")
    }

    /// The layout the helper programs use for `--state-dir <state_dir>`.
    pub fn layout(&self) -> Layout {
        Layout::new(self.path(), Some(self.state_dir()))
    }

    /// Writes `<state-dir>/lock_config.json`.
    pub fn lock_config(&self, json: serde_json::Value) {
        fs::write(
            self.layout().lock_config_file(),
            serde_json::to_vec_pretty(&json).expect("encode"),
        )
        .expect("write lock_config.json");
    }

    /// Names in the state dir starting with `prefix`.
    pub fn state_dir_entries(&self, prefix: &str) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.state_dir())
            .expect("read state dir")
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|n| n.starts_with(prefix))
            .collect();
        names.sort();
        names
    }

    /// Starts helper program `bin` (a `CARGO_BIN_EXE_*` path) with
    /// `--state-dir <state_dir>` and `args`, inside the sandbox (cwd and HOME).
    pub fn spawn(&self, bin: &str, args: &[&str]) -> Proc {
        let mut cmd = Command::new(bin);
        cmd.arg("--state-dir")
            .arg(self.state_dir())
            .args(args)
            .current_dir(self.path())
            .env("HOME", self.path());
        Proc::spawn(cmd)
    }
}

/// What a child left when it ended.
#[derive(Debug)]
pub struct Exit {
    pub status: ExitStatus,
    /// Stdout lines not read before the exit.
    pub stdout: Vec<String>,
    pub stderr: String,
}

impl Exit {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub fn signal(&self) -> Option<i32> {
        std::os::unix::process::ExitStatusExt::signal(&self.status)
    }
}

/// A running helper program; killed (SIGKILL) and reaped on drop.
pub struct Proc {
    name: String,
    child: Option<Child>,
    pid: u32,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<JoinHandle<()>>,
}

impl Proc {
    pub fn spawn(mut cmd: Command) -> Proc {
        let name = Path::new(cmd.get_program())
            .file_name()
            .unwrap_or(OsStr::new("?"))
            .to_string_lossy()
            .into_owned();
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let pid = child.id();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout piped");
        let mut stderr_pipe = child.stderr.take().expect("stderr piped");

        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let stderr_reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match stderr_pipe.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => sink
                        .lock()
                        .expect("stderr buffer")
                        .push_str(&String::from_utf8_lossy(&buf[..n])),
                }
            }
        });
        Proc {
            name: format!("{name}[{pid}]"),
            child: Some(child),
            pid,
            stdin,
            lines,
            stderr,
            stderr_reader: Some(stderr_reader),
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// What the child wrote on stderr so far.
    pub fn stderr_so_far(&self) -> String {
        self.stderr.lock().expect("stderr buffer").clone()
    }

    /// The next stdout line; `None` when stdout was closed (the child ended).
    /// Fails the test after `timeout`.
    pub fn next_line(&mut self, timeout: Duration) -> Option<String> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => Some(line),
            Err(RecvTimeoutError::Disconnected) => None,
            Err(RecvTimeoutError::Timeout) => panic!(
                "{}: no line on stdout within {timeout:?}; stderr so far:\n{}",
                self.name,
                self.stderr_so_far()
            ),
        }
    }

    /// Reads the next stdout line, which must start with `prefix`, and returns
    /// the rest of it.
    pub fn expect_line(&mut self, prefix: &str) -> String {
        match self.next_line(PATIENCE) {
            Some(line) => match line.strip_prefix(prefix) {
                Some(rest) => rest.to_string(),
                None => panic!(
                    "{}: expected a line starting with {prefix:?}, got {line:?}; stderr:\n{}",
                    self.name,
                    self.stderr_so_far()
                ),
            },
            None => {
                let exit = self.wait();
                panic!(
                    "{}: ended ({:?}) before printing {prefix:?}; stderr:\n{}",
                    self.name, exit.status, exit.stderr
                )
            }
        }
    }

    /// Writes one line to the child's stdin.
    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("{}: cannot write stdin: {e}", self.name));
    }

    /// Closes the child's stdin (it sees EOF).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Whether the child is still running (not yet exited).
    pub fn is_running(&mut self) -> bool {
        let child = self.child.as_mut().expect("not reaped yet");
        child.try_wait().expect("try_wait").is_none()
    }

    /// Waits (at most [`PATIENCE`]) for the child to end, reaps it and
    /// collects what it left on stdout and stderr.
    pub fn wait(&mut self) -> Exit {
        self.stdin = None;
        let mut child = self.child.take().expect("waited twice");
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                // Put it back so that drop kills and reaps it.
                self.child = Some(child);
                panic!(
                    "{}: still running after {PATIENCE:?}; stderr so far:\n{}",
                    self.name,
                    self.stderr_so_far()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        self.finish(status)
    }

    /// SIGKILLs the child and reaps it.
    pub fn kill(&mut self) -> Exit {
        let mut child = self.child.take().expect("already reaped");
        signal::kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL)
            .unwrap_or_else(|e| panic!("{}: cannot SIGKILL: {e}", self.name));
        let status = child.wait().expect("wait");
        self.finish(status)
    }

    fn finish(&mut self, status: ExitStatus) -> Exit {
        self.stdin = None;
        // The child is gone, so its pipes are closed (no helper forks) and the
        // readers end.
        let mut stdout = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(PATIENCE) {
            stdout.push(line);
        }
        if let Some(reader) = self.stderr_reader.take() {
            reader.join().expect("stderr reader");
        }
        Exit {
            status,
            stdout,
            stderr: self.stderr_so_far(),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = signal::kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
    }
}

/// xorshift64*: enough randomness for kill points, reproducible from a seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// A number from the environment (panics on one that is not).
pub fn env_number(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} is a number")))
}
