//! Run control: what one run owns instead of process-wide statics. A
//! [`RunControl`] is made per run and passed down to the engine and to every
//! command it starts; its [`CancelHandle`] is what a front end's signal
//! handler (or another thread) uses to stop that run and no other.
//!
//! - Soft cancel ([`CancelHandle::stop`]): start nothing new; running
//!   changes finish.
//! - Hard cancel ([`CancelHandle::kill`]): also kill the process group of
//!   every command the run has running.
//! - The supervisor announces each command's process group to a reaper
//!   process (see [`reap`]) so that commands never outlive a run whose
//!   process died, however it died.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// One run's cancel flags, its running commands and its reaper feed.
/// Cloning shares them (the engine's workers each hold a clone).
#[derive(Clone)]
pub struct RunControl {
    inner: Arc<Inner>,
}

struct Inner {
    /// Set in every command's environment ([`RUN_ID_VAR`]), so the reaper
    /// can find this run's commands even if one was never announced.
    id: String,
    stop: AtomicBool,
    /// Process groups of the commands running now (each child leads its own).
    running: Mutex<Vec<i32>>,
    /// Where process groups are announced (`+PGID`, `-PGID`), if anywhere.
    reaper: Mutex<Option<Box<dyn Write + Send>>>,
}

impl std::fmt::Debug for RunControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunControl")
            .field("stop", &self.stop_requested())
            .field("running", &*lock(&self.inner.running))
            .finish_non_exhaustive()
    }
}

/// Cancels one run. Cheap to clone and safe to use from a signal-handling
/// thread.
#[derive(Clone, Debug)]
pub struct CancelHandle {
    control: RunControl,
}

impl CancelHandle {
    /// Soft cancel: the run starts nothing new; running changes finish and
    /// the rest end as interrupted.
    pub fn stop(&self) {
        self.control.inner.stop.store(true, Ordering::SeqCst);
    }

    /// Hard cancel: a soft cancel, and every running command's process group
    /// is killed (SIGKILL); their changes fail.
    pub fn kill(&self) {
        self.stop();
        self.control.kill_running_commands();
    }

    /// True once a cancel was asked for.
    pub fn stop_requested(&self) -> bool {
        self.control.stop_requested()
    }
}

impl Default for RunControl {
    fn default() -> Self {
        RunControl {
            inner: Arc::new(Inner {
                id: uuid::Uuid::new_v4().to_string(),
                stop: AtomicBool::new(false),
                running: Mutex::new(Vec::new()),
                reaper: Mutex::new(None),
            }),
        }
    }
}

/// The environment variable that carries a run's id into its commands.
pub const RUN_ID_VAR: &str = "STEAD_RUN_ID";

impl RunControl {
    /// A fresh run: not stopped, nothing running, no reaper.
    pub fn new() -> Self {
        RunControl::default()
    }

    /// This run's id, set as [`RUN_ID_VAR`] in every command it starts.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The handle that cancels this run.
    pub fn cancel_handle(&self) -> CancelHandle {
        CancelHandle {
            control: self.clone(),
        }
    }

    /// True once [`CancelHandle::stop`] (or `kill`) was called.
    pub fn stop_requested(&self) -> bool {
        self.inner.stop.load(Ordering::SeqCst)
    }

    /// Announces every command's process group on `to` from now on (`+PGID`
    /// when it starts, `-PGID` when it ends), for a reaper process that kills
    /// the ones still running when this process dies (see [`reap`]).
    pub fn set_reaper(&self, mut to: Box<dyn Write + Send>) {
        // The run's id first: a command started and killed before it was
        // announced still carries it.
        let _ = writeln!(to, "={}", self.inner.id).and_then(|()| to.flush());
        *lock(&self.inner.reaper) = Some(to);
    }

    /// Stops announcing, telling the reaper the run ended cleanly (so it
    /// leaves alone what the run's commands left running on purpose);
    /// closing the channel lets the reaper end.
    pub fn clear_reaper(&self) {
        if let Some(mut w) = lock(&self.inner.reaper).take() {
            let _ = writeln!(w, ".").and_then(|()| w.flush());
        }
    }

    /// The process groups of the commands running now.
    pub fn running_commands(&self) -> Vec<i32> {
        lock(&self.inner.running).clone()
    }

    fn kill_running_commands(&self) {
        for pgid in self.running_commands() {
            kill_group(pgid);
        }
    }

    /// Records that a command leading process group `pgid` started (`true`)
    /// or ended (`false`), and tells the reaper.
    pub(crate) fn track(&self, pgid: i32, running: bool) {
        {
            let mut groups = lock(&self.inner.running);
            if running {
                groups.push(pgid);
            } else {
                groups.retain(|&g| g != pgid);
            }
        }
        if let Some(w) = lock(&self.inner.reaper).as_mut() {
            let sign = if running { '+' } else { '-' };
            // A reaper that went away only costs the protection it gave.
            let _ = writeln!(w, "{sign}{pgid}").and_then(|()| w.flush());
        }
    }
}

/// A poisoned lock still holds good data here (a list of pids, a writer):
/// a panic elsewhere must not stop a cancel.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

fn kill_group(pgid: i32) {
    if pgid > 1 {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pgid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// The reaper's loop: reads `=RUNID`, then `+PGID` / `-PGID` lines until
/// end of input (the announcing process ended or died: the kernel closes its
/// end), then kills every group still running. Without the clean-end line
/// `.` (the run's process died), it also kills every process whose
/// environment carries the run's id: a command started but not yet announced
/// when the process was killed. Returns the groups it killed (announced
/// ones).
pub fn reap(input: impl std::io::BufRead) -> Vec<i32> {
    let mut live: Vec<i32> = Vec::new();
    let mut run_id: Option<String> = None;
    let mut clean_end = false;
    for line in input.lines().map_while(Result::ok) {
        let (sign, rest) = line.split_at(line.len().min(1));
        match (sign, rest.trim().parse::<i32>()) {
            ("+", Ok(g)) if g > 1 => live.push(g),
            ("-", Ok(g)) => live.retain(|&x| x != g),
            ("=", _) if !rest.trim().is_empty() => run_id = Some(rest.trim().to_string()),
            (".", _) => clean_end = true,
            _ => {}
        }
    }
    for &g in &live {
        kill_group(g);
    }
    if !clean_end && let Some(id) = run_id {
        kill_carriers(&id);
    }
    live
}

/// Kills every process whose environment holds `STEAD_RUN_ID=<id>`, again
/// until none is left (one may fork while the others die), a few passes at
/// most.
fn kill_carriers(id: &str) {
    let needle = format!("{RUN_ID_VAR}={id}");
    for _ in 0..5 {
        let found = carriers(&needle);
        if found.is_empty() {
            return;
        }
        for pid in found {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Pids whose `/proc/PID/environ` holds `needle` as one entry.
fn carriers(needle: &str) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id();
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| u32::try_from(pid).is_ok_and(|p| p != me))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                env.split(|&b| b == 0)
                    .any(|entry| entry == needle.as_bytes())
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancel_reaches_only_its_own_run() {
        let first = RunControl::new();
        let second = RunControl::new();
        first.cancel_handle().stop();
        assert!(first.stop_requested());
        assert!(!second.stop_requested());
    }

    #[test]
    fn tracked_groups_are_announced_to_the_reaper_and_forgotten_when_done() {
        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let control = RunControl::new();
        let sink = Sink::default();
        control.set_reaper(Box::new(sink.clone()));
        control.track(4242, true);
        assert_eq!(control.running_commands(), [4242]);
        control.track(4242, false);
        assert!(control.running_commands().is_empty());
        control.clear_reaper();
        control.track(7, true);
        assert_eq!(
            String::from_utf8(sink.0.lock().unwrap().clone()).unwrap(),
            format!("={}\n+4242\n-4242\n.\n", control.id())
        );
    }

    #[test]
    fn the_reaper_kills_the_groups_still_announced_at_end_of_input() {
        use std::os::unix::process::CommandExt;
        // A real process group: `sleep` leading its own group.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let g = i32::try_from(child.id()).unwrap();
        let input = format!("+{g}\n+999999\n-999999\n+not-a-number\n");
        let killed = reap(std::io::Cursor::new(input));
        assert_eq!(killed, [g]);
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "killed by SIGKILL");
    }

    #[test]
    fn a_group_that_ended_is_left_alone() {
        assert!(reap(std::io::Cursor::new("+12345\n-12345\n")).is_empty());
    }

    #[test]
    fn a_hard_cancel_kills_the_running_commands_of_its_run_only() {
        use std::os::unix::process::CommandExt;
        use std::os::unix::process::ExitStatusExt;
        let spawn = || {
            std::process::Command::new("sleep")
                .arg("30")
                .process_group(0)
                .spawn()
                .unwrap()
        };
        let (mut mine, mut other) = (spawn(), spawn());
        let (a, b) = (RunControl::new(), RunControl::new());
        a.track(i32::try_from(mine.id()).unwrap(), true);
        b.track(i32::try_from(other.id()).unwrap(), true);
        a.cancel_handle().kill();
        assert!(a.stop_requested() && !b.stop_requested());
        assert_eq!(mine.wait().unwrap().signal(), Some(9));
        assert!(
            other.try_wait().unwrap().is_none(),
            "the other run's command was killed"
        );
        other.kill().unwrap();
        other.wait().unwrap();
    }

    /// `sleep 30` in its own group, carrying `id` as a run's commands do,
    /// announced to nobody. Returned once its environment can be read:
    /// `spawn` returns when the child's exec has begun, before the kernel
    /// has laid out the new environment, and `/proc/PID/environ` reads
    /// empty until it has.
    fn carrier(id: &str) -> std::process::Child {
        use std::os::unix::process::CommandExt;
        let child = std::process::Command::new("sleep")
            .arg("30")
            .env(RUN_ID_VAR, id)
            .process_group(0)
            .spawn()
            .unwrap();
        let needle = format!("{RUN_ID_VAR}={id}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !carriers(&needle).contains(&i32::try_from(child.id()).unwrap()) {
            assert!(
                std::time::Instant::now() < deadline,
                "the carrier never showed its environment"
            );
            std::thread::yield_now();
        }
        child
    }

    #[test]
    fn a_run_that_died_has_its_unannounced_commands_killed() {
        use std::os::unix::process::ExitStatusExt;
        let id = uuid::Uuid::new_v4().to_string();
        let mut child = carrier(&id);
        // No `.`: the announcing process died (stead was SIGKILLed between
        // starting the command and announcing its group).
        reap(std::io::Cursor::new(format!("={id}\n")));
        assert_eq!(child.wait().unwrap().signal(), Some(9));
    }

    #[test]
    fn a_clean_end_leaves_what_the_run_left_running() {
        let id = uuid::Uuid::new_v4().to_string();
        let mut child = carrier(&id);
        reap(std::io::Cursor::new(format!("={id}\n.\n")));
        let alive = child.try_wait().unwrap().is_none();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            alive,
            "a clean end killed a process the run left on purpose"
        );
    }
}
