//! The state lock: `<state-dir>/state.lock`, proven live or stale by the kernel.
//!
//! The lock file holds a JSON [`LockInfo`] and its holder keeps an exclusive
//! `flock` on it for its whole life. The kernel drops a flock when its holder
//! dies (even by SIGKILL), so a lock file whose flock can be taken belongs to a
//! dead holder: stale by proof, not by guessing, and immune to PID reuse.
//!
//! Taking the lock: write the full JSON to a temp file, flock it, then
//! `link()` it to `state.lock`. The link is atomic and fails if the lock
//! exists, so a reader never sees a half-written lock and two takers never
//! both win. Releasing: unlink `state.lock` (only if it is still ours), then
//! close, which drops the flock. A taker that finds a stale lock removes it
//! while holding its flock, so two takers cannot both remove it.
//!
//! This module is the local lock. Type `hybrid` adds the remote half on top
//! of it ([`crate::sync::remote_lock`], taken by the caller after this one);
//! `disabled` takes nothing (callers warn loudly).

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::fsutil::{self, FsError};
use crate::layout::Layout;
use crate::machine;

/// How the state is locked, from `lock_config.json`. Read in any case
/// (`"Hybrid"`, as the spec's example writes it, is `hybrid`); written in
/// lower case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LockType {
    /// A flock'd lock file in the state dir.
    #[default]
    Local,
    /// Local, then the config repo remote's lock ref ([`crate::sync::remote_lock`]).
    Hybrid,
    /// No lock at all: concurrent runs can corrupt the state.
    Disabled,
}

impl<'de> Deserialize<'de> for LockType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        match name.to_ascii_lowercase().as_str() {
            "local" => Ok(LockType::Local),
            "hybrid" => Ok(LockType::Hybrid),
            "disabled" => Ok(LockType::Disabled),
            _ => Err(serde::de::Error::unknown_variant(
                &name,
                &["local", "hybrid", "disabled"],
            )),
        }
    }
}

impl LockType {
    /// The name used in config files and output.
    pub fn as_str(self) -> &'static str {
        match self {
            LockType::Local => "local",
            LockType::Hybrid => "hybrid",
            LockType::Disabled => "disabled",
        }
    }
}

/// Retries while the lock is held by someone else.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Retries after the first try (0 = fail at once).
    pub attempts: u32,
    /// Seconds before the first retry.
    pub delay_seconds: f64,
    /// Double the delay after each retry.
    pub exponential_backoff: bool,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            attempts: 3,
            delay_seconds: 1.0,
            exponential_backoff: true,
        }
    }
}

/// `<state-dir>/lock_config.json`; a missing file means all defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LockConfig {
    /// `local`, `hybrid` or `disabled`.
    pub lock_type: LockType,
    /// Seconds after which a lock is reported overdue (a live holder's lock is never broken).
    pub timeout: u64,
    /// Remove locks whose holder is proven dead.
    pub detect_stale: bool,
    /// Retries while the lock is held.
    pub retry: RetryConfig,
}

impl Default for LockConfig {
    fn default() -> Self {
        LockConfig {
            lock_type: LockType::Local,
            timeout: 300,
            detect_stale: true,
            retry: RetryConfig::default(),
        }
    }
}

impl LockConfig {
    /// Reads `lock_config.json`; defaults when it does not exist.
    pub fn load(layout: &Layout) -> Result<LockConfig, LockError> {
        let path = layout.lock_config_file();
        match crate::ownfile::read(&path) {
            Ok(raw) => {
                let config: LockConfig =
                    serde_json::from_slice(&raw).map_err(|e| LockError::BadConfig {
                        path: path.clone(),
                        problem: e.to_string(),
                    })?;
                if !config.retry.delay_seconds.is_finite() || config.retry.delay_seconds < 0.0 {
                    return Err(LockError::BadConfig {
                        path,
                        problem: "retry.delay_seconds must be a number of seconds >= 0".to_string(),
                    });
                }
                Ok(config)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(LockConfig::default()),
            Err(e) => Err(FsError::new("cannot read", &path, e).into()),
        }
    }

    /// The delay before retry number `retry` (0-based).
    pub fn retry_delay(&self, retry: u32) -> Duration {
        let factor = if self.retry.exponential_backoff {
            2f64.powi(retry.min(20) as i32)
        } else {
            1.0
        };
        Duration::from_secs_f64((self.retry.delay_seconds * factor).min(3600.0))
    }
}

/// Who holds the lock: stored in `state.lock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// A UUID per acquisition.
    pub id: String,
    /// The configured lock type when it was taken.
    pub lock_type: LockType,
    /// What the holder is doing (`apply`, `init`, ...).
    pub operation: String,
    /// The holding machine and process.
    pub machine: LockHolder,
    /// When it was taken.
    pub created_at: DateTime<Utc>,
    /// How long the holder expected to take.
    pub expected_duration_seconds: u64,
    /// Why, in the holder's words.
    pub reason: Option<String>,
    /// The state serial when it was taken.
    pub state_serial: Option<u64>,
    /// The kernel boot id when it was taken.
    pub boot_id: Option<String>,
    /// The holder process's start time (clock ticks since boot), against PID reuse.
    pub pid_start_time: Option<u64>,
}

/// The holding machine and process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    /// The machine id.
    pub id: String,
    /// The hostname.
    pub hostname: String,
    /// The holder's pid.
    pub pid: u32,
    /// The holder's user.
    pub user: String,
}

/// What a caller wants the lock for.
#[derive(Debug, Clone)]
pub struct LockRequest {
    /// The operation (`apply`, `init`, ...).
    pub operation: String,
    /// This machine's id.
    pub machine_id: String,
    /// Why (free text).
    pub reason: Option<String>,
    /// How long the caller expects to hold it.
    pub expected_duration_seconds: u64,
    /// The state serial now, if known.
    pub state_serial: Option<u64>,
}

impl LockRequest {
    /// A request for `operation` by `machine_id` with no reason, 60 s expected.
    pub fn new(operation: &str, machine_id: &str) -> Self {
        LockRequest {
            operation: operation.to_string(),
            machine_id: machine_id.to_string(),
            reason: None,
            expected_duration_seconds: 60,
            state_serial: None,
        }
    }
}

/// The lock file as seen from outside.
#[derive(Debug, Clone, PartialEq)]
pub enum LockStatus {
    /// No lock file.
    Unlocked,
    /// A live holder has it.
    Held {
        /// The holder.
        info: LockInfo,
        /// Older than the configured timeout (reported, never broken).
        overdue: bool,
    },
    /// The lock file is being written or has content stead cannot parse, and a
    /// live process holds it.
    HeldUnreadable {
        /// The raw content.
        content: String,
    },
    /// The holder is proven gone.
    Stale {
        /// The holder, if the file could be parsed.
        info: Option<LockInfo>,
        /// The proof, in words.
        reason: String,
    },
}

/// What happened while taking the lock, for the caller to tell the user.
#[derive(Debug, Clone, PartialEq)]
pub enum LockEvent {
    /// A stale lock was removed.
    StaleRemoved {
        /// Its holder, if readable.
        info: Option<LockInfo>,
        /// The proof that the holder is gone.
        reason: String,
    },
    /// The lock is held; waiting before retry `attempt` of `of`.
    Waiting {
        /// The holder, if readable.
        info: Option<LockInfo>,
        /// 1-based retry number.
        attempt: u32,
        /// Number of retries configured.
        of: u32,
        /// How long until the retry.
        delay: Duration,
    },
}

/// Why the lock could not be taken, read or removed.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// A filesystem operation failed.
    #[error(transparent)]
    Fs(#[from] FsError),

    /// `lock_config.json` is invalid.
    #[error(
        "the lock config {path} is invalid: {problem}\n\
         Fix it (fields: lock_type local|hybrid|disabled, timeout, detect_stale, \
         retry {{attempts, delay_seconds, exponential_backoff}}) or delete it to use the defaults."
    )]
    BadConfig {
        /// The config file.
        path: PathBuf,
        /// What is wrong, with line and column.
        problem: String,
    },

    /// A live process holds the lock.
    #[error("{}", locked_message(.info, *.overdue, *.timeout))]
    Locked {
        /// The holder.
        info: Box<LockInfo>,
        /// Older than the timeout.
        overdue: bool,
        /// The configured timeout, seconds.
        timeout: u64,
    },

    /// A live process holds the lock but its file cannot be read.
    #[error(
        "State is currently locked\n\n\
         The lock file {path} cannot be read ({content:?}), but a live process holds it.\n\
         Wait for it to finish, or run 'stead state unlock --force' if no stead process is running."
    )]
    LockedUnreadable {
        /// The lock file.
        path: PathBuf,
        /// Its content.
        content: String,
    },

    /// The holder is gone, but stead may not remove its lock on its own:
    /// stale detection is off, or another process still has the lock file
    /// open (so removing it could break a lock someone is taking over).
    #[error("State is locked by a holder that is gone: {reason}\n{}", if *.detection_off {
        "Stale detection is off in lock_config.json; run 'stead state unlock --force' to remove the lock."
    } else {
        "Another process still has the lock file open, so stead will not remove it on its own; \
         if no stead process is running, run 'stead state unlock --force'."
    })]
    StaleNotRemoved {
        /// The proof.
        reason: String,
        /// Whether `detect_stale` is off (else the file is still held open).
        detection_off: bool,
    },
}

fn locked_message(info: &LockInfo, overdue: bool, timeout: u64) -> String {
    let short_id: String = info.machine.id.chars().take(8).collect();
    let mut msg = format!(
        "State is currently locked\n\n\
         Operation: {}\n\
         Machine: {} ({}...)\n\
         User: {}\n\
         PID: {}\n\
         Acquired: {}",
        info.operation,
        info.machine.hostname,
        short_id,
        info.machine.user,
        info.machine.pid,
        ago(info.created_at, Utc::now()),
    );
    if let Some(reason) = &info.reason {
        msg.push_str(&format!("\nReason: {reason}"));
    }
    if overdue {
        msg.push_str(&format!(
            "\n\nThe lock is older than its timeout ({timeout} s), but its holder is alive, \
             so it was not broken."
        ));
    }
    msg.push_str(
        "\n\nWait for that operation to finish and try again, or run \
         'stead state unlock --force' if that process is gone.",
    );
    msg
}

/// "10 minutes ago", "just now", ... for a past instant.
pub fn ago(then: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - then).num_seconds();
    let plural = |n: i64, unit: &str| {
        if n == 1 {
            format!("1 {unit} ago")
        } else {
            format!("{n} {unit}s ago")
        }
    };
    match secs {
        i64::MIN..=4 => "just now".to_string(),
        5..=59 => plural(secs, "second"),
        60..=3599 => plural(secs / 60, "minute"),
        3600..=86399 => plural(secs / 3600, "hour"),
        _ => plural(secs / 86400, "day"),
    }
}

/// What this process holds and must give back if it is interrupted: lock
/// files, and cleanup actions registered with [`register_cleanup`] (the
/// remote half of a hybrid lock). This is the library's one process-wide
/// mutable static: the last-resort cleanup a signal handler runs.
static HELD: Mutex<HeldSet> = Mutex::new(HeldSet {
    files: Vec::new(),
    actions: Vec::new(),
    next: 0,
});

/// A cleanup action, run once: on its owner's release or on a signal.
pub type Cleanup = Box<dyn FnOnce() + Send>;

struct HeldSet {
    files: Vec<(PathBuf, u64, u64)>,
    actions: Vec<(u64, Cleanup)>,
    next: u64,
}

fn held() -> std::sync::MutexGuard<'static, HeldSet> {
    // A panic while it was held leaves the list itself intact.
    HELD.lock().unwrap_or_else(|p| p.into_inner())
}

/// The handle of a registered cleanup action.
#[derive(Debug)]
pub struct CleanupId(u64);

/// Registers `action` to run when [`release_all_held`] runs (a signal), or
/// when its owner calls [`run_cleanup`], whichever comes first.
pub fn register_cleanup(action: Cleanup) -> CleanupId {
    let mut held = held();
    held.next += 1;
    let id = held.next;
    held.actions.push((id, action));
    CleanupId(id)
}

/// Runs a registered action now, unless a signal handler already ran it.
pub fn run_cleanup(id: CleanupId) {
    let action = {
        let mut held = held();
        let at = held.actions.iter().position(|(i, _)| *i == id.0);
        at.map(|at| held.actions.remove(at).1)
    };
    if let Some(action) = action {
        action();
    }
}

/// Drops a registered action without running it: its owner finished what
/// it guarded (a child process that ended on its own).
pub fn forget_cleanup(id: CleanupId) {
    held().actions.retain(|(i, _)| *i != id.0);
}

/// The held lock; released on drop (also during a panic's unwinding).
#[derive(Debug)]
pub struct LockGuard {
    inner: Option<HeldLock>,
    lock_type: LockType,
}

#[derive(Debug)]
struct HeldLock {
    path: PathBuf,
    file: File,
    dev: u64,
    ino: u64,
    info: LockInfo,
}

impl LockGuard {
    /// The record written into the lock file (`None` when locking is disabled).
    pub fn info(&self) -> Option<&LockInfo> {
        self.inner.as_ref().map(|h| &h.info)
    }

    /// The lock type in force.
    pub fn lock_type(&self) -> LockType {
        self.lock_type
    }

    /// Releases the lock now, reporting errors (drop ignores them).
    pub fn release(mut self) -> Result<(), LockError> {
        self.release_inner()
    }

    fn release_inner(&mut self) -> Result<(), LockError> {
        let Some(held) = self.inner.take() else {
            return Ok(());
        };
        unregister(&held.path, held.dev, held.ino);
        let result = unlink_if_same(&held.path, held.dev, held.ino);
        drop(held.file);
        result
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let _ = self.release_inner();
    }
}

fn unregister(path: &Path, dev: u64, ino: u64) {
    held()
        .files
        .retain(|(p, d, i)| !(p == path && *d == dev && *i == ino));
}

/// Removes the lock files this process holds, then runs the registered
/// cleanup actions. For signal handlers (Ctrl-C, SIGTERM) that are about to
/// end the process, where guards will not drop.
pub fn release_all_held() {
    let (files, actions) = {
        let mut held = held();
        (
            std::mem::take(&mut held.files),
            std::mem::take(&mut held.actions),
        )
    };
    for (path, dev, ino) in files {
        let _ = unlink_if_same(&path, dev, ino);
    }
    for (_, action) in actions {
        action();
    }
}

fn unlink_if_same(path: &Path, dev: u64, ino: u64) -> Result<(), LockError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.dev() == dev && m.ino() == ino => {
            // Not flushed: a lock file that comes back after a power cut
            // has no holder's flock, so it is stale (see `try_link`).
            fs::remove_file(path).map_err(|e| FsError::new("cannot remove", path, e))?;
            Ok(())
        }
        // Someone removed it (`unlock --force`) and maybe another took it: not ours.
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(FsError::new("cannot read", path, e).into()),
    }
}

/// The lock's current status. Takes no lock and changes nothing.
pub fn inspect(layout: &Layout, config: &LockConfig) -> Result<LockStatus, LockError> {
    let path = layout.lock_file();
    let file = match crate::ownfile::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(LockStatus::Unlocked),
        Err(e) => return Err(FsError::new("cannot open", &path, e).into()),
    };
    let content = read_content(&path)?;
    let parsed: Option<LockInfo> = serde_json::from_str(&content).ok();
    let free = match file.try_lock_shared() {
        Ok(()) => true,
        Err(TryLockError::WouldBlock) => false,
        Err(TryLockError::Error(e)) => return Err(FsError::new("cannot flock", &path, e).into()),
    };
    drop(file);
    Ok(classify(parsed, content, free, config))
}

fn read_content(path: &Path) -> Result<String, LockError> {
    match crate::ownfile::read(path) {
        Ok(raw) => Ok(String::from_utf8_lossy(&raw).into_owned()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(FsError::new("cannot read", path, e).into()),
    }
}

fn classify(
    info: Option<LockInfo>,
    content: String,
    flock_free: bool,
    config: &LockConfig,
) -> LockStatus {
    if flock_free {
        let reason = match &info {
            None => "the lock file is unreadable and no process holds it".to_string(),
            Some(info) => dead_holder_reason(info),
        };
        return LockStatus::Stale { info, reason };
    }
    match info {
        None => LockStatus::HeldUnreadable { content },
        Some(info) => {
            if let Some(reason) = holder_gone_while_flocked(&info) {
                return LockStatus::Stale {
                    info: Some(info),
                    reason,
                };
            }
            let age = (Utc::now() - info.created_at).num_seconds();
            let overdue = age > config.timeout as i64;
            LockStatus::Held { info, overdue }
        }
    }
}

/// Why a holder whose flock is free is gone, in the most specific words we can prove.
fn dead_holder_reason(info: &LockInfo) -> String {
    let pid = info.machine.pid;
    if info.boot_id.is_some() && info.boot_id != machine::boot_id() {
        return "the machine has rebooted since the lock was taken".to_string();
    }
    if !pid_alive(pid) {
        return format!("process {pid} is no longer running");
    }
    if info.pid_start_time.is_some() && info.pid_start_time != process_start_time(pid) {
        return format!("process {pid} died and its pid now belongs to another process");
    }
    format!("process {pid} no longer holds the lock")
}

/// Why the holder of a lock another copy of which `taker` found (the remote
/// half of a hybrid lock) is proven dead: it was taken on this very machine
/// (same machine id and hostname as `taker`) during this very boot (same
/// boot id as now), and its process is gone (or its pid now belongs to
/// another process). `None` when that cannot be proven: a holder on another
/// machine, or of another boot, or still running, is never judged dead here.
pub fn proven_dead_here(holder: &LockInfo, taker: &LockInfo) -> Option<String> {
    let this_boot = machine::boot_id();
    let same_machine =
        holder.machine.id == taker.machine.id && holder.machine.hostname == taker.machine.hostname;
    if !same_machine || this_boot.is_none() || holder.boot_id != this_boot {
        return None;
    }
    let pid = holder.machine.pid;
    if pid == std::process::id() {
        return None;
    }
    if !pid_alive(pid) {
        return Some(format!(
            "process {pid} of this machine is no longer running (same machine id and boot)"
        ));
    }
    if holder.pid_start_time.is_some() && holder.pid_start_time != process_start_time(pid) {
        return Some(format!(
            "process {pid} of this machine died and its pid now belongs to another process"
        ));
    }
    None
}

/// A flock can outlive its taker when a child inherited the descriptor; the
/// holder is still gone when its pid is gone on this very boot.
fn holder_gone_while_flocked(info: &LockInfo) -> Option<String> {
    let same_boot = info.boot_id.is_some() && info.boot_id == machine::boot_id();
    let same_machine = info.machine.hostname == machine::hostname();
    let pid = info.machine.pid;
    if same_boot && same_machine && !pid_alive(pid) {
        return Some(format!(
            "process {pid} is no longer running (another process still has the lock file open)"
        ));
    }
    None
}

fn pid_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if raw <= 0 {
        return false;
    }
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    }
}

/// A process's start time in clock ticks since boot (field 22 of `/proc/PID/stat`).
fn process_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses; fields resume after the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Takes the lock, removing a stale one (when configured) and retrying per
/// config while a live holder has it. `events` hears about both.
pub fn acquire(
    layout: &Layout,
    config: &LockConfig,
    request: &LockRequest,
    events: &mut dyn FnMut(LockEvent),
) -> Result<LockGuard, LockError> {
    if config.lock_type == LockType::Disabled {
        return Ok(LockGuard {
            inner: None,
            lock_type: LockType::Disabled,
        });
    }
    fsutil::ensure_private_dir(layout.state_dir())?;
    let mut retry = 0;
    loop {
        match try_acquire_once(layout, config, request, events)? {
            Attempt::Taken(guard) => return Ok(guard),
            Attempt::Again => continue,
            Attempt::Busy(status) => {
                if retry >= config.retry.attempts {
                    return Err(match status {
                        LockStatus::Held { info, overdue } => LockError::Locked {
                            info: Box::new(info),
                            overdue,
                            timeout: config.timeout,
                        },
                        LockStatus::Stale { reason, .. } => LockError::StaleNotRemoved {
                            reason,
                            detection_off: !config.detect_stale,
                        },
                        LockStatus::HeldUnreadable { content } => LockError::LockedUnreadable {
                            path: layout.lock_file(),
                            content,
                        },
                        LockStatus::Unlocked => continue,
                    });
                }
                let delay = config.retry_delay(retry);
                retry += 1;
                let info = match &status {
                    LockStatus::Held { info, .. } => Some(info.clone()),
                    _ => None,
                };
                events(LockEvent::Waiting {
                    info,
                    attempt: retry,
                    of: config.retry.attempts,
                    delay,
                });
                std::thread::sleep(delay);
            }
        }
    }
}

enum Attempt {
    Taken(LockGuard),
    Again,
    Busy(LockStatus),
}

const TEMP_PREFIX: &str = ".state.lock.tmp-";

fn try_acquire_once(
    layout: &Layout,
    config: &LockConfig,
    request: &LockRequest,
    events: &mut dyn FnMut(LockEvent),
) -> Result<Attempt, LockError> {
    let info = holder_info(config, request);
    match try_link(layout, config, info)? {
        Some(decided) => Ok(decided),
        None => examine_existing(layout, config, events),
    }
}

/// Who is taking the lock, as the lock file will say.
fn holder_info(config: &LockConfig, request: &LockRequest) -> LockInfo {
    let pid = std::process::id();
    LockInfo {
        id: uuid::Uuid::new_v4().to_string(),
        lock_type: config.lock_type,
        operation: request.operation.clone(),
        machine: LockHolder {
            id: request.machine_id.clone(),
            hostname: machine::hostname(),
            pid,
            user: machine::current_user(),
        },
        created_at: Utc::now(),
        expected_duration_seconds: request.expected_duration_seconds,
        reason: request.reason.clone(),
        state_serial: request.state_serial,
        boot_id: machine::boot_id(),
        pid_start_time: process_start_time(pid),
    }
}

/// Writes `info` to a fresh flocked temp file and links it to the lock path:
/// `Some(Taken)` when the link made it ours, `Some(Again)` when a sweeper
/// raced us, `None` when a lock is already there.
fn try_link(
    layout: &Layout,
    config: &LockConfig,
    info: LockInfo,
) -> Result<Option<Attempt>, LockError> {
    let path = layout.lock_file();
    let dir = layout.state_dir();
    let mut json = serde_json::to_vec_pretty(&info)
        .map_err(|e| FsError::new("cannot encode", &path, io::Error::other(e)))?;
    json.push(b'\n');

    let tmp = dir.join(format!("{TEMP_PREFIX}{}", uuid::Uuid::new_v4().simple()));
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(|e| FsError::new("cannot create", &tmp, e))?;
    let written = (|| {
        match file.try_lock() {
            Ok(()) => {}
            // A sweeper is looking at our fresh temp file: start over.
            Err(TryLockError::WouldBlock) => return Ok(false),
            Err(TryLockError::Error(e)) => return Err(FsError::new("cannot flock", &tmp, e)),
        }
        // Not flushed, nor is the link below: only a power cut loses what
        // the page cache holds, and after one no process holds the flock,
        // so the lock (whole, torn, empty or gone) is stale all the same.
        file.write_all(&json)
            .map_err(|e| FsError::new("cannot write", &tmp, e))?;
        Ok(true)
    })();
    match written {
        Ok(true) => {}
        Ok(false) => {
            let _ = fs::remove_file(&tmp);
            return Ok(Some(Attempt::Again));
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e.into());
        }
    }
    let linked = fs::hard_link(&tmp, &path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            let meta = file
                .metadata()
                .map_err(|e| FsError::new("cannot read", &path, e))?;
            held().files.push((path.clone(), meta.dev(), meta.ino()));
            sweep_orphan_temps(dir);
            Ok(Some(Attempt::Taken(LockGuard {
                inner: Some(HeldLock {
                    path,
                    file,
                    dev: meta.dev(),
                    ino: meta.ino(),
                    info,
                }),
                lock_type: config.lock_type,
            })))
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(None),
        // Our temp file was swept before the link: start over.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Some(Attempt::Again)),
        Err(e) => Err(FsError::new("cannot create", &path, e).into()),
    }
}

/// A lock exists: is its holder alive? A stale one is removed (then try
/// again); a live one makes the lock busy.
fn examine_existing(
    layout: &Layout,
    config: &LockConfig,
    events: &mut dyn FnMut(LockEvent),
) -> Result<Attempt, LockError> {
    let path = layout.lock_file();
    let dir = layout.state_dir();
    let existing = match crate::ownfile::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Attempt::Again),
        Err(e) => return Err(FsError::new("cannot open", &path, e).into()),
    };
    let content = {
        let mut raw = Vec::new();
        io::Read::read_to_end(&mut &existing, &mut raw)
            .map_err(|e| FsError::new("cannot read", &path, e))?;
        String::from_utf8_lossy(&raw).into_owned()
    };
    let parsed: Option<LockInfo> = serde_json::from_str(&content).ok();
    let flock_free = match existing.try_lock() {
        Ok(()) => true,
        Err(TryLockError::WouldBlock) => false,
        Err(TryLockError::Error(e)) => return Err(FsError::new("cannot flock", &path, e).into()),
    };
    if !same_file(&path, &existing)? {
        // Released or replaced while we looked.
        return Ok(Attempt::Again);
    }
    let status = classify(parsed, content, flock_free, config);
    match status {
        // Only the process holding a stale lock's flock may remove it: a
        // holder whose pid is gone but whose flock is held (a taker removing
        // it right now, an inspector, an inheriting child) is left alone, or
        // two takers could each remove the other's fresh lock.
        LockStatus::Stale { info, reason } if config.detect_stale && flock_free => {
            match fs::remove_file(&path) {
                Ok(()) => fsutil::fsync_dir(dir)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Attempt::Again),
                Err(e) => return Err(FsError::new("cannot remove stale lock", &path, e).into()),
            }
            events(LockEvent::StaleRemoved { info, reason });
            Ok(Attempt::Again)
        }
        status => Ok(Attempt::Busy(status)),
    }
}

fn same_file(path: &Path, file: &File) -> Result<bool, LockError> {
    let open = file
        .metadata()
        .map_err(|e| FsError::new("cannot read", path, e))?;
    match fs::symlink_metadata(path) {
        Ok(m) => Ok(m.dev() == open.dev() && m.ino() == open.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(FsError::new("cannot read", path, e).into()),
    }
}

/// Removes temp files left by takers that died between creating and linking
/// them (their flock is free). Best effort: a failure here changes nothing.
fn sweep_orphan_temps(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(TEMP_PREFIX) {
            continue;
        }
        let p = entry.path();
        if let Ok(f) = crate::ownfile::open(&p)
            && f.try_lock().is_ok()
        {
            let _ = fs::remove_file(&p);
        }
    }
}

/// What `unlock --force` removed.
#[derive(Debug, Clone, PartialEq)]
pub struct UnlockReport {
    /// The holder, if the file could be parsed.
    pub info: Option<LockInfo>,
    /// The raw content of the removed file.
    pub content: String,
    /// Whether a live process still held it (its work is no longer protected).
    pub holder_alive: bool,
}

/// Removes the lock file whatever it holds (also a corrupt one). `None` if
/// there was none.
pub fn force_unlock(layout: &Layout) -> Result<Option<UnlockReport>, LockError> {
    let path = layout.lock_file();
    // A FIFO, socket or device in its place (no lock file stead made) is
    // removed unopened: opening a FIFO would block forever.
    match fs::symlink_metadata(&path) {
        Ok(m) if !m.file_type().is_file() && !m.file_type().is_dir() => {
            let kind = crate::ownfile::special_kind(m.file_type()).unwrap_or("not a regular file");
            match fs::remove_file(&path) {
                Ok(()) => fsutil::fsync_dir(layout.state_dir())?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(FsError::new("cannot remove", &path, e).into()),
            }
            return Ok(Some(UnlockReport {
                info: None,
                content: format!("({kind}, not a lock file)"),
                holder_alive: false,
            }));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        _ => {}
    }
    let file = match crate::ownfile::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FsError::new("cannot open", &path, e).into()),
    };
    let content = read_content(&path)?;
    let info: Option<LockInfo> = serde_json::from_str(&content).ok();
    let holder_alive = matches!(file.try_lock_shared(), Err(TryLockError::WouldBlock));
    drop(file);
    match fs::remove_file(&path) {
        Ok(()) => fsutil::fsync_dir(layout.state_dir())?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FsError::new("cannot remove", &path, e).into()),
    }
    Ok(Some(UnlockReport {
        info,
        content,
        holder_alive,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, Layout, LockConfig) {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path(), None);
        let mut config = LockConfig::default();
        config.retry.attempts = 0;
        (dir, layout, config)
    }

    fn take(layout: &Layout, config: &LockConfig) -> Result<LockGuard, LockError> {
        acquire(
            layout,
            config,
            &LockRequest::new("apply", "m-1"),
            &mut |_| {},
        )
    }

    /// Takes the lock as machine `m-2`, with what it heard on the way.
    fn take_as_m2(
        layout: &Layout,
        config: &LockConfig,
    ) -> Result<(LockGuard, Vec<LockEvent>), LockError> {
        let mut events = Vec::new();
        let g = acquire(
            layout,
            config,
            &LockRequest::new("apply", "m-2"),
            &mut |e| events.push(e),
        )?;
        Ok((g, events))
    }

    #[test]
    fn only_a_dead_process_of_this_machine_and_boot_is_proven_dead_here() {
        let config = LockConfig::default();
        let taker = holder_info(&config, &LockRequest::new("apply", "m-1"));
        let mut dead = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = dead.id();
        dead.wait().unwrap();
        let mut holder = taker.clone();
        holder.machine.pid = dead_pid;
        holder.pid_start_time = None;
        if machine::boot_id().is_none() {
            return; // no boot id here: nothing can be proven
        }
        let proof = proven_dead_here(&holder, &taker).expect("a dead pid of this boot");
        assert!(proof.contains(&format!("process {dead_pid}")), "{proof}");

        let mut other_machine = holder.clone();
        other_machine.machine.id = "m-2".to_string();
        assert_eq!(proven_dead_here(&other_machine, &taker), None);
        let mut other_boot = holder.clone();
        other_boot.boot_id = Some("another-boot".to_string());
        assert_eq!(proven_dead_here(&other_boot, &taker), None);
        let mut no_boot = holder.clone();
        no_boot.boot_id = None;
        assert_eq!(proven_dead_here(&no_boot, &taker), None);

        let mut live = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let mut alive = holder.clone();
        alive.machine.pid = live.id();
        alive.pid_start_time = process_start_time(live.id());
        assert_eq!(proven_dead_here(&alive, &taker), None, "a live holder");
        live.kill().unwrap();
        live.wait().unwrap();
    }

    #[test]
    fn second_taker_is_refused_while_held_and_succeeds_after() {
        let (_d, layout, config) = setup();
        let guard = take(&layout, &config).unwrap();
        assert!(layout.lock_file().exists());
        // flock is per open file description, so this process is refused too.
        let err = take(&layout, &config).unwrap_err();
        assert!(matches!(err, LockError::Locked { .. }), "{err}");
        assert!(err.to_string().starts_with("State is currently locked"));
        drop(guard);
        assert!(!layout.lock_file().exists());
        take(&layout, &config).unwrap();
    }

    #[test]
    fn guard_is_released_by_a_panic() {
        let (_d, layout, config) = setup();
        let l2 = layout.clone();
        let c2 = config.clone();
        let r = std::panic::catch_unwind(move || {
            let _g = take(&l2, &c2).unwrap();
            panic!("boom");
        });
        assert!(r.is_err());
        assert!(!layout.lock_file().exists());
    }

    #[test]
    fn inspect_reports_holder_and_overdue() {
        let (_d, layout, mut config) = setup();
        assert_eq!(inspect(&layout, &config).unwrap(), LockStatus::Unlocked);
        let _g = take(&layout, &config).unwrap();
        match inspect(&layout, &config).unwrap() {
            LockStatus::Held { info, overdue } => {
                assert_eq!(info.operation, "apply");
                assert_eq!(info.machine.pid, std::process::id());
                assert!(!overdue);
            }
            other => panic!("{other:?}"),
        }
        config.timeout = 0;
        let mut info: LockInfo =
            serde_json::from_slice(&fs::read(layout.lock_file()).unwrap()).unwrap();
        info.created_at -= chrono::Duration::seconds(5);
        // Rewrite in place (same inode, flock kept) to age the lock.
        fs::write(layout.lock_file(), serde_json::to_vec(&info).unwrap()).unwrap();
        assert!(matches!(
            inspect(&layout, &config).unwrap(),
            LockStatus::Held { overdue: true, .. }
        ));
        // Overdue but alive: never broken.
        assert!(matches!(
            take(&layout, &config),
            Err(LockError::Locked { overdue: true, .. })
        ));
    }

    #[test]
    fn leftover_lock_file_without_flock_is_stale_and_taken_over() {
        let (_d, layout, config) = setup();
        let g = take(&layout, &config).unwrap();
        let content = fs::read(layout.lock_file()).unwrap();
        drop(g);
        // A holder that died leaves its file behind with its flock gone.
        let mut info: LockInfo = serde_json::from_slice(&content).unwrap();
        info.machine.pid = u32::MAX - 1;
        fs::write(layout.lock_file(), serde_json::to_vec(&info).unwrap()).unwrap();
        match inspect(&layout, &config).unwrap() {
            LockStatus::Stale { reason, .. } => assert!(reason.contains("no longer running")),
            other => panic!("{other:?}"),
        }
        let (g, events) = take_as_m2(&layout, &config).unwrap();
        assert!(matches!(
            events.as_slice(),
            [LockEvent::StaleRemoved { .. }]
        ));
        assert_eq!(g.info().unwrap().machine.id, "m-2");
    }

    #[test]
    fn a_lock_file_a_power_cut_left_empty_or_cut_short_is_stale_and_taken_over() {
        // The lock is not flushed: after a power cut its file may be gone,
        // whole, empty or any prefix of its JSON, and no process holds it.
        let (_d, layout, config) = setup();
        let g = take(&layout, &config).unwrap();
        let whole = fs::read(layout.lock_file()).unwrap();
        drop(g);
        for cut in [0, 1, whole.len() / 2, whole.len() - 2] {
            fs::write(layout.lock_file(), &whole[..cut]).unwrap();
            let (g, events) =
                take_as_m2(&layout, &config).unwrap_or_else(|e| panic!("{cut} bytes: {e}"));
            match events.as_slice() {
                [LockEvent::StaleRemoved { reason, .. }] => {
                    assert!(reason.contains("unreadable"), "{cut} bytes: {reason}")
                }
                other => panic!("{cut} bytes: {other:?}"),
            }
            assert_eq!(g.info().unwrap().machine.id, "m-2");
            drop(g);
            assert!(!layout.lock_file().exists(), "{cut} bytes: released");
        }
    }

    #[test]
    fn stale_lock_is_kept_when_detection_is_off() {
        let (_d, layout, mut config) = setup();
        config.detect_stale = false;
        fs::create_dir_all(layout.state_dir()).unwrap();
        fs::write(layout.lock_file(), b"{ torn").unwrap();
        let err = take(&layout, &config).unwrap_err();
        assert!(matches!(err, LockError::StaleNotRemoved { .. }), "{err}");
        assert!(layout.lock_file().exists());
    }

    #[test]
    fn force_unlock_removes_corrupt_file() {
        let (_d, layout, _config) = setup();
        fs::create_dir_all(layout.state_dir()).unwrap();
        fs::write(layout.lock_file(), b"not json").unwrap();
        let report = force_unlock(&layout).unwrap().unwrap();
        assert_eq!(report.content, "not json");
        assert!(report.info.is_none());
        assert!(!report.holder_alive);
        assert!(!layout.lock_file().exists());
        assert!(force_unlock(&layout).unwrap().is_none());
    }

    #[test]
    fn release_after_force_unlock_leaves_new_holder_alone() {
        let (_d, layout, config) = setup();
        let g1 = take(&layout, &config).unwrap();
        let report = force_unlock(&layout).unwrap().unwrap();
        assert!(report.holder_alive);
        let g2 = take(&layout, &config).unwrap();
        drop(g1);
        assert!(layout.lock_file().exists(), "g1 must not remove g2's lock");
        drop(g2);
        assert!(!layout.lock_file().exists());
    }

    // `release_all_held` acts on every lock of the process, so it is tested
    // alone in its own process: lib/tests/release_all_held.rs. Here it would
    // remove the locks of tests running beside it.

    #[test]
    fn disabled_takes_nothing() {
        let (_d, layout, mut config) = setup();
        config.lock_type = LockType::Disabled;
        let g = take(&layout, &config).unwrap();
        assert!(g.info().is_none());
        assert!(!layout.lock_file().exists());
    }

    #[test]
    fn config_defaults_and_errors() {
        let (_d, layout, _c) = setup();
        assert_eq!(LockConfig::load(&layout).unwrap(), LockConfig::default());
        fs::create_dir_all(layout.state_dir()).unwrap();
        fs::write(
            layout.lock_config_file(),
            br#"{"lock_type":"hybrid","timeout":5}"#,
        )
        .unwrap();
        let c = LockConfig::load(&layout).unwrap();
        assert_eq!(c.lock_type, LockType::Hybrid);
        assert_eq!(c.timeout, 5);
        assert!(c.detect_stale);
        fs::write(layout.lock_config_file(), br#"{"lock_type":"nfs"}"#).unwrap();
        let err = LockConfig::load(&layout).unwrap_err().to_string();
        assert!(err.contains("line 1 column"), "{err}");
        assert!(err.contains("lock_config.json"), "{err}");
    }

    #[test]
    fn the_spec_lock_config_loads_with_its_capitalised_type() {
        let (_d, layout, _c) = setup();
        fs::create_dir_all(layout.state_dir()).unwrap();
        fs::write(
            layout.lock_config_file(),
            include_bytes!("../tests/fixtures/spec-lock_config.json"),
        )
        .unwrap();
        let c = LockConfig::load(&layout).unwrap();
        assert_eq!(c.lock_type, LockType::Hybrid);
        assert_eq!(c.timeout, 600);
        assert_eq!(c.retry.attempts, 5);
        for (name, want) in [("LOCAL", LockType::Local), ("Disabled", LockType::Disabled)] {
            let c: LockConfig =
                serde_json::from_str(&format!(r#"{{"lock_type":"{name}"}}"#)).unwrap();
            assert_eq!(c.lock_type, want);
        }
        // Written back in lower case.
        let text = serde_json::to_string(&c).unwrap();
        assert!(text.contains(r#""lock_type":"hybrid""#), "{text}");
    }

    #[test]
    fn ago_words() {
        let now = Utc::now();
        assert_eq!(ago(now, now), "just now");
        assert_eq!(
            ago(now - chrono::Duration::minutes(10), now),
            "10 minutes ago"
        );
        assert_eq!(ago(now - chrono::Duration::hours(1), now), "1 hour ago");
    }

    #[test]
    fn retry_delay_backs_off() {
        let c = LockConfig::default();
        assert_eq!(c.retry_delay(0), Duration::from_secs(1));
        assert_eq!(c.retry_delay(2), Duration::from_secs(4));
    }
}
