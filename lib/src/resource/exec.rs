//! `exec`: run a command (argv, or a string with `sh -c`) with `cwd`, `env`
//! and `timeout`, guarded by `creates`, `unless` and `onlyif`. Output is
//! captured and shown on failure. The child runs in its own process group,
//! which is killed when the timeout passes.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::manifest::{Command, ExecSpec};

use super::{Action, Applied, Op, ResourceError};

type Planned = (Action, String, Option<String>, Op);

/// What apply runs for an exec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// The command.
    pub command: Command,
    /// Working directory.
    pub cwd: Option<PathBuf>,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// Timeout in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Skip when this exists (checked again right before running).
    pub creates: Option<PathBuf>,
    /// `HOME` for the command: the target home, so `~` in a shell command
    /// means the same as in the manifest.
    pub home: PathBuf,
}

/// The outcome of one command.
struct Outcome {
    success: bool,
    status: String,
    output: String,
}

pub(super) fn plan(e: &ExecSpec, home: &Path) -> Result<Planned, ResourceError> {
    if let Some(c) = &e.creates
        && std::fs::symlink_metadata(c).is_ok()
    {
        return Ok((
            Action::Unchanged,
            format!("{} exists", c.display()),
            None,
            Op::None,
        ));
    }
    let timeout = e.timeout;
    if let Some(u) = &e.unless
        && run_command(u, e.cwd.as_ref(), &e.env, home, timeout)?.success
    {
        return Ok((
            Action::Unchanged,
            "`unless` succeeded".into(),
            None,
            Op::None,
        ));
    }
    if let Some(o) = &e.onlyif
        && !run_command(o, e.cwd.as_ref(), &e.env, home, timeout)?.success
    {
        return Ok((Action::Unchanged, "`onlyif` failed".into(), None, Op::None));
    }
    Ok((
        Action::Update,
        format!("will run: {}", e.command.display()),
        None,
        Op::Run(Run {
            command: e.command.clone(),
            cwd: e.cwd.clone(),
            env: e.env.clone(),
            timeout_ms: e.timeout.map(|t| t.as_millis() as u64),
            creates: e.creates.clone(),
            home: home.to_path_buf(),
        }),
    ))
}

pub(super) fn run(r: &Run) -> Result<Applied, ResourceError> {
    if let Some(c) = &r.creates
        && std::fs::symlink_metadata(c).is_ok()
    {
        return Ok(Applied {
            output: Some(format!("skipped: {} exists", c.display())),
            ..Applied::default()
        });
    }
    let outcome = run_command(
        &r.command,
        r.cwd.as_ref(),
        &r.env,
        &r.home,
        r.timeout_ms.map(Duration::from_millis),
    )?;
    if outcome.success {
        Ok(Applied {
            output: Some(outcome.output),
            ..Applied::default()
        })
    } else {
        let mut msg = format!("`{}` {}", r.command.display(), outcome.status);
        let out = outcome.output.trim_end();
        if !out.is_empty() {
            msg.push_str("\n--- output ---\n");
            msg.push_str(out);
        }
        Err(ResourceError::Exec(msg))
    }
}

fn run_command(
    command: &Command,
    cwd: Option<&PathBuf>,
    env: &BTreeMap<String, String>,
    home: &Path,
    timeout: Option<Duration>,
) -> Result<Outcome, ResourceError> {
    let mut cmd = match command {
        Command::Argv(argv) => {
            let mut c = std::process::Command::new(&argv[0]);
            c.args(&argv[1..]);
            c
        }
        Command::Shell(s) => {
            let mut c = std::process::Command::new("sh");
            c.arg("-c").arg(s);
            c
        }
    };
    // Without a cwd the command runs in the target home, never wherever
    // stead happened to be started.
    cmd.current_dir(cwd.map_or(home, |d| d.as_path()));
    cmd.env("HOME", home)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| ResourceError::Exec(format!("cannot start `{}`: {e}", command.display())))?;
    let output = collect_output(&mut child);
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let status = child.wait();
        let _ = tx.send(());
        status
    });
    let timed_out = match timeout {
        Some(t) => rx.recv_timeout(t).is_err(),
        None => {
            let _ = rx.recv();
            false
        }
    };
    if timed_out && let Ok(raw) = i32::try_from(pid) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(raw),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let status = waiter
        .join()
        .map_err(|_| ResourceError::Exec("the command's waiter thread panicked".into()))?
        .map_err(|e| {
            ResourceError::Exec(format!("cannot wait for `{}`: {e}", command.display()))
        })?;
    let output = output.join().unwrap_or_default();
    if timed_out {
        return Ok(Outcome {
            success: false,
            status: format!(
                "timed out after {:?} and was killed",
                timeout.unwrap_or_default()
            ),
            output,
        });
    }
    Ok(Outcome {
        success: status.success(),
        status: match status.code() {
            Some(c) => format!("exited with status {c}"),
            None => "was killed by a signal".to_string(),
        },
        output,
    })
}

/// Reads stdout and stderr on threads (so a chatty child never blocks) and
/// joins them into one text.
fn collect_output(child: &mut Child) -> std::thread::JoinHandle<String> {
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    std::thread::spawn(move || {
        let err_thread = std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(e) = err.as_mut() {
                let _ = e.read_to_string(&mut s);
            }
            s
        });
        let mut s = String::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_string(&mut s);
        }
        let e = err_thread.join().unwrap_or_default();
        s.push_str(&e);
        s
    })
}
