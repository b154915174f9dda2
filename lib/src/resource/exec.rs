//! `exec`: run a command (argv, or a string with `sh -c`) with `cwd`, `env`
//! and `timeout`, guarded by `creates`, `unless` and `onlyif`. Output is
//! captured (capped) and shown on failure. The child runs in its own process
//! group, which is killed when the timeout passes; once the command itself
//! has exited, a background child it left holding the output open is not
//! waited for.

mod capture;

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::manifest::{Command, ExecSpec, Kind, Problem, Spec, SpecInput};
use crate::run::RunControl;

use super::kind::{
    ApplyEnv, Key, KeyType, KindSchema, Planned, ResourceKind, unexpected_op, unexpected_spec,
};
use super::{Action, Applied, Op, PlanContext, ResourceError};

/// The `exec` kind.
pub struct Exec;

impl KindSchema for Exec {
    fn kind(&self) -> Kind {
        Kind::Exec
    }

    fn keys(&self) -> &'static [Key] {
        const KEYS: &[Key] = &[
            Key::required("command", KeyType::Command),
            Key::optional("cwd", KeyType::Str),
            Key::optional("env", KeyType::StrMap),
            Key::optional("timeout", KeyType::Duration),
            Key::optional("creates", KeyType::Str),
            Key::optional("unless", KeyType::Command),
            Key::optional("onlyif", KeyType::Command),
            Key::optional("once", KeyType::Bool),
            Key::optional("idempotency_key", KeyType::Str),
            Key::optional("refresh_only", KeyType::Bool),
            Key::optional("output", KeyType::Bool),
        ];
        KEYS
    }

    fn build(&self, input: &mut SpecInput) -> Option<Spec> {
        let command = input.command("command");
        let cwd = input.target_path("cwd");
        let creates = input.target_path("creates");
        let unless = input.command("unless");
        let onlyif = input.command("onlyif");
        let env = input.map("env");
        let timeout = input.duration("timeout");
        let idempotency_key = idempotency_key(input);
        let refresh_only = input.flag("refresh_only");
        let output = input.flag("output").then(|| input.id().to_string());
        command.map(|command| {
            Spec::Exec(Box::new(ExecSpec {
                command,
                cwd,
                env,
                timeout,
                creates,
                unless,
                onlyif,
                idempotency_key,
                refresh_only,
                output,
            }))
        })
    }
}

impl ResourceKind for Exec {
    /// The `creates` marker: a purge keeps it.
    fn marker_paths<'s>(&self, spec: &'s Spec) -> Vec<&'s Path> {
        match spec {
            Spec::Exec(e) => e.creates.as_deref().into_iter().collect(),
            _ => Vec::new(),
        }
    }

    fn plan(&self, spec: &Spec, ctx: &PlanContext, _owned: bool) -> Result<Planned, ResourceError> {
        match spec {
            Spec::Exec(e) => plan(e, &ctx.manifest.home),
            other => Err(unexpected_spec(self.kind(), other)),
        }
    }

    /// An exec's plan rests on its `creates` marker (and the directories
    /// above it), and on the journal for one-shot and refresh-only steps
    /// (sealed anyway); `unless` and `onlyif` are commands run at every
    /// plan, so a guarded exec is planned every run.
    fn seal_paths(&self, spec: &Spec) -> Option<Vec<crate::seal::SealPath>> {
        let Spec::Exec(e) = spec else { return None };
        if e.unless.is_some() || e.onlyif.is_some() {
            return None;
        }
        Some(
            e.creates
                .iter()
                .flat_map(|c| c.ancestors())
                .map(crate::seal::SealPath::node)
                .collect(),
        )
    }

    fn apply(&self, op: &Op, env: &ApplyEnv) -> Result<Applied, ResourceError> {
        match op {
            Op::Run(r) => run(r, env),
            other => Err(unexpected_op(self.kind(), other)),
        }
    }
}

/// `idempotency_key = "..."` (not empty), else `once:<id>` for `once = true`.
fn idempotency_key(input: &mut SpecInput) -> Option<String> {
    if input.has("idempotency_key") {
        let (text, span) = input.text_at("idempotency_key")?;
        if text.trim().is_empty() {
            input.problem(
                Problem::at(span, "`idempotency_key` must not be empty").label("empty key"),
            );
            return None;
        }
        return Some(text);
    }
    input.flag("once").then(|| format!("once:{}", input.id()))
}

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
    /// Skip when this command succeeds (checked again right before running).
    #[serde(default)]
    pub unless: Option<Command>,
    /// Run only when this command succeeds (checked again right before running).
    #[serde(default)]
    pub onlyif: Option<Command>,
    /// A one-shot step's key, journaled with its records.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Runs only if refreshed (decided by the engine when its turn comes).
    #[serde(default)]
    pub refresh_only: bool,
    /// `HOME` for the command: the target home, so `~` in a shell command
    /// means the same as in the manifest.
    pub home: PathBuf,
    /// `output = true`: the exec's id, under which its stdout is kept
    /// (encrypted) as a value; its stdout is then never journaled or shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_of: Option<String>,
    /// Who it runs as (a check's migration step): `None`, the user stead
    /// runs as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// The outcome of one command.
pub(crate) struct Outcome {
    /// It exited with status 0.
    pub(crate) success: bool,
    /// How it ended, in words (`exited with status 100`).
    pub(crate) status: String,
    /// Its stdout and stderr as written, in order, capped.
    pub(crate) output: Vec<u8>,
}

fn plan(e: &ExecSpec, home: &Path) -> Result<Planned, ResourceError> {
    if let Some(c) = &e.creates
        && std::fs::symlink_metadata(c).is_ok()
    {
        return Ok(Planned::unchanged(format!("{} exists", c.display())));
    }
    let timeout = e.timeout;
    let run = Op::Run(Box::new(Run {
        command: e.command.clone(),
        cwd: e.cwd.clone(),
        env: e.env.clone(),
        // The loader caps a timeout at a year; saturate rather than wrap anyway.
        timeout_ms: e
            .timeout
            .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        creates: e.creates.clone(),
        unless: e.unless.clone(),
        onlyif: e.onlyif.clone(),
        idempotency_key: e.idempotency_key.clone(),
        refresh_only: e.refresh_only,
        home: home.to_path_buf(),
        output_of: e.output.clone(),
        user: None,
    }));
    // A cwd that an earlier resource of this run creates cannot host the
    // guards yet; they run right before the command instead.
    if let Some(cwd) = &e.cwd
        && (e.unless.is_some() || e.onlyif.is_some())
        && !cwd.is_dir()
    {
        return Ok(Planned::new(
            Action::Update,
            format!(
                "will run: {} (guards checked when it runs: {} does not exist yet)",
                e.command.display(),
                cwd.display()
            ),
            run,
        ));
    }
    if let Some(u) = &e.unless
        && run_command(u, e.cwd.as_ref(), &e.env, home, timeout, None)?.success
    {
        return Ok(Planned::unchanged("`unless` succeeded"));
    }
    if let Some(o) = &e.onlyif
        && !run_command(o, e.cwd.as_ref(), &e.env, home, timeout, None)?.success
    {
        return Ok(Planned::unchanged("`onlyif` failed"));
    }
    let reason = if e.refresh_only {
        format!("runs only if refreshed: {}", e.command.display())
    } else {
        format!("will run: {}", e.command.display())
    };
    Ok(Planned::new(Action::Update, reason, run))
}

/// Runs the command (its guards checked again first), as a child of `control`:
/// announced to its reaper and killed by its hard cancel.
pub(super) fn run(r: &Run, env: &ApplyEnv) -> Result<Applied, ResourceError> {
    let control = env.control;
    if let Some(c) = &r.creates
        && std::fs::symlink_metadata(c).is_ok()
    {
        return Ok(Applied {
            not_run: Some(format!("{} exists", c.display())),
            ..Applied::default()
        });
    }
    let timeout = r.timeout_ms.map(Duration::from_millis);
    if let Some(u) = &r.unless
        && run_command(u, r.cwd.as_ref(), &r.env, &r.home, timeout, Some(control))?.success
    {
        return Ok(Applied {
            not_run: Some("`unless` succeeded".into()),
            ..Applied::default()
        });
    }
    if let Some(o) = &r.onlyif
        && !run_command(o, r.cwd.as_ref(), &r.env, &r.home, timeout, Some(control))?.success
    {
        return Ok(Applied {
            not_run: Some("`onlyif` failed".into()),
            ..Applied::default()
        });
    }
    let as_user = match &r.user {
        Some(name) => RunAs::lookup(name)?,
        None => None,
    };
    let (outcome, stdout) = run_inner(
        &r.command,
        r.cwd.as_ref(),
        &r.env,
        &r.home,
        r.timeout_ms.map(Duration::from_millis),
        Some(control),
        r.output_of.is_some(),
        as_user.as_ref(),
    )?;
    if let (Some(id), true) = (&r.output_of, outcome.success) {
        keep_output(r, id, stdout, env)?;
    }
    if outcome.success {
        Ok(Applied {
            output: Some(String::from_utf8_lossy(&outcome.output).into_owned()),
            captured: Some(outcome.output),
            ..Applied::default()
        })
    } else {
        let mut msg = format!("`{}` {}", r.command.display(), outcome.status);
        // Shown lossily: a command may print any bytes.
        let out = String::from_utf8_lossy(&outcome.output);
        let out = out.trim_end();
        if !out.is_empty() {
            msg.push_str("\n--- output ---\n");
            msg.push_str(out);
        }
        Err(ResourceError::CommandFailed {
            message: msg,
            output: outcome.output,
        })
    }
}

/// Keeps what an `output = true` exec printed on stdout as its value
/// (encrypted, durable before the files that use it are written).
fn keep_output(
    r: &Run,
    id: &str,
    stdout: Option<Stdout>,
    env: &ApplyEnv,
) -> Result<(), ResourceError> {
    match stdout {
        Some(Ok(bytes)) => {
            let bytes = zeroize::Zeroizing::new(bytes);
            env.secrets.keep_output(id, &bytes)?;
            Ok(())
        }
        Some(Err(total)) => Err(ResourceError::Exec(format!(
            "`{}` printed {total} bytes on stdout; the output value of {id} may be at most {} bytes",
            r.command.display(),
            capture::WHOLE_MAX
        ))),
        None => Err(ResourceError::Internal(format!(
            "{id}: its stdout was not read"
        ))),
    }
}

/// How long output is still read once the command itself has exited. A
/// background child it started (`server &`) inherits its stdout and stderr
/// and may hold them open for good; the command's own exit status decides
/// success, and the run must not wait for the child. What the command wrote
/// before exiting is in the pipes already and is read in far less time.
const AFTER_EXIT_GRACE: Duration = Duration::from_secs(2);

/// Runs `command` in its own process group as a child of `control` (its
/// reaper, its cancel), output captured, killed after `timeout`.
pub(crate) fn run_command(
    command: &Command,
    cwd: Option<&PathBuf>,
    env: &BTreeMap<String, String>,
    home: &Path,
    timeout: Option<Duration>,
    control: Option<&RunControl>,
) -> Result<Outcome, ResourceError> {
    run_inner(command, cwd, env, home, timeout, control, false, None).map(|(o, _)| o)
}

/// [`run_command`] as `as_user`, stdout read apart (whole, or how many
/// bytes were past the cap): the outcome's output holds stderr only.
pub(crate) fn run_command_split(
    command: &Command,
    cwd: Option<&PathBuf>,
    env: &BTreeMap<String, String>,
    home: &Path,
    timeout: Option<Duration>,
    as_user: Option<&RunAs>,
) -> Result<(Outcome, Stdout), ResourceError> {
    let (outcome, stdout) = run_inner(command, cwd, env, home, timeout, None, true, as_user)?;
    let stdout = stdout.ok_or_else(|| {
        ResourceError::Internal(format!("`{}`: its stdout was not read", command.display()))
    })?;
    Ok((outcome, stdout))
}

/// Who a command runs as, looked up before it starts: nothing but
/// `setgroups`, `setgid` and `setuid` happens in the child between fork and
/// exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunAs {
    name: String,
    uid: nix::unistd::Uid,
    gid: nix::unistd::Gid,
    groups: Vec<nix::unistd::Gid>,
    home: PathBuf,
}

impl RunAs {
    /// `name` from the user database; `None` when it is the user stead
    /// runs as already. Another user needs root.
    pub(crate) fn lookup(name: &str) -> Result<Option<RunAs>, ResourceError> {
        let user = nix::unistd::User::from_name(name)
            .map_err(|e| ResourceError::Exec(format!("cannot look up user `{name}`: {e}")))?
            .ok_or_else(|| {
                ResourceError::Exec(format!(
                    "cannot run as `{name}`: there is no such user on this machine"
                ))
            })?;
        let euid = nix::unistd::geteuid();
        if user.uid == euid {
            return Ok(None);
        }
        if !euid.is_root() {
            return Err(ResourceError::Exec(format!(
                "cannot run as `{name}`: only root can run a command as another user, and stead runs as uid {euid}"
            )));
        }
        let c_name = std::ffi::CString::new(name)
            .map_err(|_| ResourceError::Exec(format!("cannot run as {name:?}: not a user name")))?;
        let groups = nix::unistd::getgrouplist(&c_name, user.gid)
            .map_err(|e| ResourceError::Exec(format!("cannot read the groups of `{name}`: {e}")))?;
        Ok(Some(RunAs {
            name: user.name,
            uid: user.uid,
            gid: user.gid,
            groups,
            home: user.dir,
        }))
    }
}

/// Stdout read apart: its bytes, or how many were written past the cap.
type Stdout = Result<Vec<u8>, u64>;

/// [`run_command`]; with `split`, stdout is read apart, whole (`Err(total)`
/// past the cap), and the outcome's output holds stderr only.
#[allow(clippy::too_many_arguments)]
fn run_inner(
    command: &Command,
    cwd: Option<&PathBuf>,
    env: &BTreeMap<String, String>,
    home: &Path,
    timeout: Option<Duration>,
    control: Option<&RunControl>,
    split: bool,
    as_user: Option<&RunAs>,
) -> Result<(Outcome, Option<Stdout>), ResourceError> {
    let run_id = control.map(RunControl::id);
    let (child, output, stdout) = spawn(command, cwd, env, home, run_id, split, as_user)?;
    let stdout = stdout.map(capture::start);
    // A timeout too long to represent as an instant is no limit at all.
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    // Announced first: until its reaper knows the group, a stead killed
    // now would leave the command running.
    let pgid = i32::try_from(child.id()).ok();
    if let (Some(g), Some(c)) = (pgid, control) {
        c.track(g, true);
    }
    let output = capture::start(output);
    let (waiter, exited_in_time) = wait_until(child, deadline);
    let timed_out = !exited_in_time;
    if timed_out && let Some(g) = pgid {
        // The whole group, background children included: a command past
        // its timeout is stopped, not left half done.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(g),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    if let (Some(g), Some(c)) = (pgid, control) {
        c.track(g, false);
    }
    let status = waiter
        .join()
        .map_err(|_| ResourceError::Exec("the command's waiter thread panicked".into()))?
        .map_err(|e| {
            ResourceError::Exec(format!("cannot wait for `{}`: {e}", command.display()))
        })?;
    let exited = Instant::now();
    // Not past the timeout either, unless it has passed already (then the
    // group was killed and its pipes close at once).
    let until = match deadline {
        Some(d) if !timed_out => (exited + AFTER_EXIT_GRACE).min(d),
        _ => exited + AFTER_EXIT_GRACE,
    };
    let output = output.finish(until);
    let stdout = stdout.map(|s| s.finish_whole(until));
    if timed_out {
        let outcome = Outcome {
            success: false,
            status: format!(
                "timed out after {:?} and was killed",
                timeout.unwrap_or_default()
            ),
            output,
        };
        return Ok((outcome, stdout));
    }
    let outcome = Outcome {
        success: status.success(),
        status: match status.code() {
            Some(c) => format!("exited with status {c}"),
            None => "was killed by a signal".to_string(),
        },
        output,
    };
    Ok((outcome, stdout))
}

type Waiter = std::thread::JoinHandle<std::io::Result<std::process::ExitStatus>>;

/// Waits for the command's own process to exit, up to `deadline`. Returns
/// its waiter (which reaps it, once killed if it did not exit in time) and
/// whether it exited in time.
fn wait_until(mut child: Child, deadline: Option<Instant>) -> (Waiter, bool) {
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let status = child.wait();
        let _ = tx.send(());
        status
    });
    let exited = match deadline {
        Some(d) => rx
            .recv_timeout(d.saturating_duration_since(Instant::now()))
            .is_ok(),
        None => rx.recv().is_ok(),
    };
    (waiter, exited)
}

/// A started command, the read end of its output pipe, and of its stdout
/// pipe when stdout is read apart.
type SpawnedChild = (Child, std::io::PipeReader, Option<std::io::PipeReader>);

/// Starts the command in its own process group, stdin `/dev/null`, stdout
/// and stderr into one pipe (so what it wrote keeps its order), and returns
/// the pipe's read end; with `split`, stdout into a pipe of its own.
fn spawn(
    command: &Command,
    cwd: Option<&PathBuf>,
    env: &BTreeMap<String, String>,
    home: &Path,
    run_id: Option<&str>,
    split: bool,
    as_user: Option<&RunAs>,
) -> Result<SpawnedChild, ResourceError> {
    let cannot_pipe = |e: std::io::Error| {
        ResourceError::Exec(format!("cannot start `{}`: {e}", command.display()))
    };
    let (reader, writer) = std::io::pipe().map_err(cannot_pipe)?;
    let (stdout_reader, writer_too) = if split {
        let (r, w) = std::io::pipe().map_err(cannot_pipe)?;
        (Some(r), w)
    } else {
        (None, writer.try_clone().map_err(cannot_pipe)?)
    };
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
    if let Some(id) = run_id {
        // Lets the reaper find it even if stead dies before announcing it.
        cmd.env(crate::run::RUN_ID_VAR, id);
    }
    cmd.env("HOME", home);
    if let Some(user) = as_user {
        cmd.env("HOME", &user.home)
            .env("USER", &user.name)
            .env("LOGNAME", &user.name);
        let (uid, gid, groups) = (user.uid, user.gid, user.groups.clone());
        // SAFETY: the closure runs in the child between fork and exec and
        // makes only three system calls, allocating nothing (the groups
        // were looked up before). The one unsafe block of the workspace
        // (lib/tests/architecture.rs).
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(move || {
                nix::unistd::setgroups(&groups)?;
                nix::unistd::setgid(gid)?;
                nix::unistd::setuid(uid)?;
                Ok(())
            });
        }
    }
    cmd.envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer_too))
        .stderr(Stdio::from(writer))
        .process_group(0);
    // `cmd` holds the write ends and is dropped on return: the reader then
    // sees the end of output once the command (and its children) close them.
    cmd.spawn()
        .map(|child| (child, reader, stdout_reader))
        .map_err(|e| {
            ResourceError::Exec(match cwd {
                Some(d) if !d.is_dir() => format!(
                    "cannot start `{}`: its working directory {} does not exist",
                    command.display(),
                    d.display()
                ),
                _ => format!("cannot start `{}`: {e}", command.display()),
            })
        })
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::engine::Status;
    use crate::resource::tests::{Fixture, change, status};

    fn output_of<'a>(
        plan: &crate::plan::Plan,
        outcome: &'a crate::engine::Outcome,
        id: &str,
    ) -> &'a str {
        match status(plan, outcome, id) {
            Status::Done(Applied {
                output: Some(o), ..
            }) => o,
            other => panic!("{id} did not run: {other:?}"),
        }
    }

    fn failure<'a>(
        plan: &crate::plan::Plan,
        outcome: &'a crate::engine::Outcome,
        id: &str,
    ) -> &'a str {
        match status(plan, outcome, id) {
            Status::Failed(m) => m,
            other => panic!("{id} did not fail: {other:?}"),
        }
    }

    fn run_shell(script: &str) -> Outcome {
        let home = tempfile::tempdir().unwrap();
        let command = Command::Shell(script.into());
        run_command(&command, None, &BTreeMap::new(), home.path(), None, None).unwrap()
    }

    #[test]
    fn non_utf8_output_is_kept_as_bytes_and_shown_lossily() {
        let outcome = run_shell(r"printf 'ok \377\376 end\n'");
        assert_eq!(outcome.output, b"ok \xff\xfe end\n");
        let mut fx = Fixture::new();
        let (plan, done) = fx.apply("[exec.e]\ncommand = \"printf 'a\\\\377b'\"\n");
        assert_eq!(output_of(&plan, &done, "exec.e"), "a\u{fffd}b");
        match status(&plan, &done, "exec.e") {
            Status::Done(a) => assert_eq!(a.captured.as_deref(), Some(&b"a\xffb"[..])),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn stdout_and_stderr_keep_the_order_they_were_written_in() {
        let outcome = run_shell("echo a; echo b >&2; echo c; echo d >&2");
        assert_eq!(String::from_utf8_lossy(&outcome.output), "a\nb\nc\nd\n");
    }

    #[test]
    fn argv_command_runs_without_a_shell_and_is_not_owned() {
        let mut fx = Fixture::new();
        // `$HOME` stays literal without a shell.
        let m = "[exec.e]\ncommand = [\"sh\", \"-c\", \"printf '%s' \\\"$1\\\" > @OUT@/argv\", \"sh\", \"a b $HOME\"]\n";
        let (plan, outcome) = fx.apply(m);
        let c = change(&plan, "exec.e");
        assert_eq!(c.action, Action::Update);
        assert!(c.reason.starts_with("will run: sh -c"), "{}", c.reason);
        assert!(c.keys.is_empty());
        assert!(matches!(status(&plan, &outcome, "exec.e"), Status::Done(_)));
        assert_eq!(
            fs::read_to_string(fx.out.join("argv")).unwrap(),
            "a b $HOME"
        );
        assert!(!fx.owns("exec.e"));
        // Without a guard an exec runs on every apply.
        assert_eq!(change(&fx.plan(m), "exec.e").action, Action::Update);
    }

    #[test]
    fn shell_string_runs_in_the_target_home_with_home_set() {
        let mut fx = Fixture::new();
        let m = "[exec.e]\ncommand = \"echo \\\"$HOME\\\" > where; pwd -P >> where; echo done\"\n";
        let (plan, outcome) = fx.apply(m);
        assert_eq!(output_of(&plan, &outcome, "exec.e"), "done\n");
        let text = fs::read_to_string(fx.home.join("where")).unwrap();
        let canonical = fx.home.canonicalize().unwrap();
        assert_eq!(
            text,
            format!("{}\n{}\n", fx.home.display(), canonical.display())
        );
        assert_ne!(
            std::env::var_os("HOME").as_deref(),
            Some(fx.home.as_os_str()),
            "the test process's HOME is not the target home"
        );
    }

    #[test]
    fn cwd_and_env_are_applied() {
        let mut fx = Fixture::new();
        fs::create_dir(fx.out.join("work")).unwrap();
        let m = "[exec.e]\ncommand = \"pwd -P > cwd.txt; printf '%s' \\\"$GREETING\\\" > env.txt\"\n\
                 cwd = \"@OUT@/work\"\nenv = { GREETING = \"hello there\" }\n";
        fx.apply(m);
        let work = fx.out.join("work");
        assert_eq!(
            fs::read_to_string(work.join("cwd.txt")).unwrap(),
            format!("{}\n", work.canonicalize().unwrap().display())
        );
        assert_eq!(
            fs::read_to_string(work.join("env.txt")).unwrap(),
            "hello there"
        );
        assert!(!fx.home.join("cwd.txt").exists());
    }

    #[test]
    fn timeout_kills_the_command_and_reports_it() {
        let mut fx = Fixture::new();
        let m = "[exec.slow]\ncommand = \"echo started; sleep 30\"\ntimeout = \"300ms\"\n";
        let started = std::time::Instant::now();
        let (plan, outcome) = fx.apply_with(m, false);
        let msg = failure(&plan, &outcome, "exec.slow");
        assert!(
            msg.contains("timed out after 300ms and was killed"),
            "{msg}"
        );
        assert!(msg.contains("--- output ---\nstarted"), "{msg}");
        // Killed as a group: the wait did not last for the whole `sleep 30`
        // (whose inherited stdout would otherwise hold the output open).
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
    }

    #[test]
    fn a_background_child_holding_the_output_is_not_waited_for_and_keeps_running() {
        /// Kills the child whose pid the command wrote, however the test ends.
        struct Kill(std::path::PathBuf);
        impl Drop for Kill {
            fn drop(&mut self) {
                if let Some(pid) = fs::read_to_string(&self.0)
                    .ok()
                    .and_then(|p| p.trim().parse::<i32>().ok())
                {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        let mut fx = Fixture::new();
        let _kill = Kill(fx.out.join("pid"));
        let m = "[exec.e]\ncommand = \"sleep 300 & echo $! > @OUT@/pid; echo started\"\n";
        let started = std::time::Instant::now();
        let (plan, outcome) = fx.apply(m);
        assert!(started.elapsed() < std::time::Duration::from_secs(60));
        assert_eq!(output_of(&plan, &outcome, "exec.e"), "started\n");
        let pid: i32 = fs::read_to_string(fx.out.join("pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let state = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        assert!(
            !state.rsplit_once(") ").unwrap().1.starts_with('Z'),
            "the user's background child was killed: {state}"
        );
    }

    #[test]
    fn output_is_capped_and_says_how_much_was_cut() {
        let mut fx = Fixture::new();
        let m = "[exec.e]\ncommand = \"echo first; head -c 1000000 /dev/zero | tr '\\\\0' x; echo; echo last >&2; exit 2\"\n";
        let (plan, outcome) = fx.apply_with(m, false);
        let msg = failure(&plan, &outcome, "exec.e");
        assert!(msg.len() < 70 * 1024, "{} bytes kept", msg.len());
        assert!(
            msg.contains("--- output ---\nfirst\nxxx"),
            "{}",
            &msg[..200]
        );
        assert!(msg.contains(" bytes cut)\n"), "no cut notice");
        assert!(msg.ends_with("xxx\nlast"), "{}", &msg[msg.len() - 100..]);
    }

    #[test]
    fn a_timeout_too_long_to_reach_is_no_limit() {
        // The loader caps `timeout` at a year, but a hand-edited saved plan
        // carries any `timeout_ms`: it must mean "no limit", not a panic.
        let fx = Fixture::new();
        let outcome = run_command(
            &Command::Shell("true".into()),
            None,
            &BTreeMap::new(),
            &fx.home,
            Some(Duration::from_millis(u64::MAX)),
            None,
        )
        .unwrap();
        assert!(outcome.success, "{}", outcome.status);
    }

    #[test]
    fn failure_captures_stdout_and_stderr_and_skips_dependents() {
        let mut fx = Fixture::new();
        let m = "[exec.bad]\ncommand = \"echo to-stdout; echo to-stderr >&2; exit 3\"\n\
                 [file.after]\npath = \"~/after\"\ncontent = \"x\"\nafter = [\"exec.bad\"]\n\
                 [file.free]\npath = \"~/free\"\ncontent = \"y\"\n";
        let (plan, outcome) = fx.apply_with(m, false);
        let msg = failure(&plan, &outcome, "exec.bad");
        assert!(msg.contains("exited with status 3"), "{msg}");
        assert!(msg.contains("to-stdout"), "{msg}");
        assert!(msg.contains("to-stderr"), "{msg}");
        assert!(
            matches!(status(&plan, &outcome, "file.after"), Status::Skipped(m) if m.to_string().contains("exec.bad")),
            "{:?}",
            outcome.statuses
        );
        assert!(!fx.home.join("after").exists());
        assert!(!fx.owns("file.after"));
        assert_eq!(fs::read_to_string(fx.home.join("free")).unwrap(), "y");
    }

    #[test]
    fn a_program_that_does_not_exist_fails_with_its_name() {
        let mut fx = Fixture::new();
        let (plan, outcome) = fx.apply_with(
            "[exec.e]\ncommand = [\"/nonexistent/stead-test-prog\"]\n",
            false,
        );
        let msg = failure(&plan, &outcome, "exec.e");
        assert!(
            msg.contains("cannot start `/nonexistent/stead-test-prog`"),
            "{msg}"
        );
    }

    #[test]
    fn creates_guard_skips_when_the_path_exists() {
        let mut fx = Fixture::new();
        let m = "[exec.e]\ncommand = \"echo run >> @OUT@/log; touch @OUT@/made\"\ncreates = \"@OUT@/made\"\n";
        fx.apply(m);
        let plan = fx.plan(m);
        let c = change(&plan, "exec.e");
        assert_eq!(c.action, Action::Unchanged);
        assert_eq!(
            c.reason,
            format!("{} exists", fx.out.join("made").display())
        );
        fx.apply(m);
        assert_eq!(fs::read_to_string(fx.out.join("log")).unwrap(), "run\n");
    }

    #[test]
    fn creates_is_checked_again_right_before_running() {
        let mut fx = Fixture::new();
        let m = "[exec.e]\ncommand = \"echo ran > @OUT@/log\"\ncreates = \"~/made\"\n";
        let plan = fx.plan(m);
        assert_eq!(change(&plan, "exec.e").action, Action::Update);
        fs::write(fx.home.join("made"), "").unwrap();
        let outcome = fx.execute(&plan);
        match status(&plan, &outcome, "exec.e") {
            Status::Done(Applied {
                not_run: Some(why), ..
            }) => assert_eq!(why, &format!("{} exists", fx.home.join("made").display())),
            other => panic!("exec.e was not skipped by its guard: {other:?}"),
        }
        assert!(!fx.out.join("log").exists());
    }

    #[test]
    fn unless_and_onlyif_guards() {
        let fx = Fixture::new();
        let plan_of = |guard: &str| {
            let m = format!("[exec.e]\ncommand = \"touch @OUT@/ran\"\n{guard}\n");
            let plan = fx.plan(&m);
            let c = change(&plan, "exec.e");
            (c.action, c.reason.clone())
        };
        assert_eq!(
            plan_of("unless = \"true\""),
            (Action::Unchanged, "`unless` succeeded".into())
        );
        assert_eq!(plan_of("unless = [\"false\"]").0, Action::Update);
        assert_eq!(
            plan_of("onlyif = [\"false\"]"),
            (Action::Unchanged, "`onlyif` failed".into())
        );
        assert_eq!(plan_of("onlyif = \"true\"").0, Action::Update);
        // Guards run with the same HOME, cwd and env as the command.
        fs::write(fx.home.join("marker"), "").unwrap();
        assert_eq!(
            plan_of("unless = \"test -f \\\"$HOME/marker\\\" && test -f marker\"").0,
            Action::Unchanged
        );
        assert_eq!(
            plan_of("env = { FLAG = \"on\" }\nonlyif = \"test \\\"$FLAG\\\" = on\"").0,
            Action::Update
        );
        assert_eq!(
            plan_of("env = { FLAG = \"off\" }\nonlyif = \"test \\\"$FLAG\\\" = on\"").0,
            Action::Unchanged
        );
        // Planning ran guards only, never the command.
        assert!(!fx.out.join("ran").exists());
    }

    #[test]
    fn references_to_managed_paths_reach_the_command() {
        let mut fx = Fixture::new();
        let m = "[file.cfg]\npath = \"~/cfg\"\ncontent = \"v=1\"\n\
                 [exec.e]\ncommand = [\"cp\", \"${file.cfg}\", \"@OUT@/copy\"]\n";
        fx.apply(m);
        assert_eq!(fs::read_to_string(fx.out.join("copy")).unwrap(), "v=1");
    }
}
