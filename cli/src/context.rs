//! What every command needs: where things are, how to print, and the common
//! steps (take the lock and tell the user about it, load the state migrating a
//! version 1 file on the way).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use stead_lib::graph::Graph;
use stead_lib::layout::Layout;
use stead_lib::lock::{self, LockConfig, LockEvent, LockGuard, LockRequest, LockType};
use stead_lib::machine::{self, MachineInfo};
use stead_lib::manifest::{LoadOptions, Manifest};
use stead_lib::state::{Loaded, MigrationReport, State, StateError, StateStore};
use stead_lib::sync::SyncError;
use stead_lib::sync::git::{Git, GitError, Upstream};
use stead_lib::sync::remote_lock::{self, RemoteLock};
use stead_lib::sync::{repo, shared};

use crate::cli::GlobalArgs;
use crate::output::Paint;

pub struct Context {
    pub config: Option<PathBuf>,
    pub layout: Layout,
    pub store: StateStore,
    pub json: bool,
    pub verbose: bool,
    pub out: Paint,
    pub err: Paint,
}

impl Context {
    pub fn new(global: &GlobalArgs) -> Result<Self> {
        let home = match &global.home {
            Some(h) => absolute(h)?,
            None => match std::env::var_os("HOME") {
                Some(h) if !h.is_empty() => PathBuf::from(h),
                _ => anyhow::bail!(
                    "cannot tell where your home directory is: HOME is not set\n\
                     Set HOME or pass --home DIR (or STEAD_HOME)."
                ),
            },
        };
        let state_dir = global.state_dir.as_deref().map(absolute).transpose()?;
        let layout = Layout::new(home, state_dir);
        let store = StateStore::new(layout.clone()).with_history_limit(global.history_limit);
        let config = global.config.as_deref().map(absolute).transpose()?;
        Ok(Context {
            config,
            layout,
            store,
            json: global.json,
            verbose: global.verbose,
            out: Paint::for_stdout(global.no_color),
            err: Paint::for_stderr(global.no_color),
        })
    }

    pub fn warn(&self, message: &str) {
        eprintln!("{} {message}", self.err.yellow("⚠️  Warning:"));
    }

    pub fn note(&self, message: &str) {
        eprintln!("{message}");
    }

    pub fn lock_config(&self) -> Result<LockConfig> {
        Ok(LockConfig::load(&self.layout)?)
    }

    /// Warns when locking is disabled; every run says so.
    pub fn warn_if_lock_disabled(&self) {
        if let Ok(config) = LockConfig::load(&self.layout)
            && config.lock_type == LockType::Disabled
        {
            self.warn(&format!(
                "locking is disabled in {}; concurrent stead runs can corrupt the state.",
                self.layout.lock_config_file().display()
            ));
        }
    }

    /// This machine's id, made on first use (creates the state dir).
    pub fn machine_id(&self) -> Result<String> {
        stead_lib::fsutil::ensure_private_dir(self.layout.state_dir())?;
        Ok(machine::load_or_create_id(&self.layout)?)
    }

    /// Takes the state lock for `operation`, telling the user about stale
    /// locks removed and waits. With `lock_type = hybrid` the remote lock is
    /// taken too, and the remote record must not have moved since this
    /// machine last synced.
    pub fn lock(&self, operation: &str, state_serial: Option<u64>) -> Result<Held> {
        self.lock_scoped(operation, state_serial, true)
    }

    /// [`Context::lock`] for the commands that bring the remote's news in
    /// (sync, resolve): no check that the remote record stood still.
    pub fn lock_for_sync(&self, operation: &str) -> Result<Held> {
        self.lock_scoped(operation, None, false)
    }

    /// Only the local lock, whatever the configured type (init, which may
    /// have no repo yet).
    pub fn lock_local(&self, operation: &str) -> Result<Held> {
        let config = self.lock_config()?;
        Ok(Held::local_only(
            self.lock_local_guard(&config, operation, None)?,
        ))
    }

    fn lock_scoped(
        &self,
        operation: &str,
        state_serial: Option<u64>,
        check_advance: bool,
    ) -> Result<Held> {
        let config = self.lock_config()?;
        let local = self.lock_local_guard(&config, operation, state_serial)?;
        if config.lock_type != LockType::Hybrid {
            return Ok(Held::local_only(local));
        }
        let Some(info) = local.info().cloned() else {
            return Ok(Held::local_only(local));
        };
        let Some((git, up)) = self.repo_for_lock() else {
            self.warn(
                "lock_type is hybrid, but the config repo has no git remote; proceeding with the local lock only.",
            );
            return Ok(Held::local_only(local));
        };
        let taken = match remote_lock::acquire(&git, &up.remote, &info, config.timeout) {
            Err(GitError::Unreachable { reason, .. }) => {
                self.warn(&format!(
                    "Cannot reach remote repository: {reason}\n\
                     Proceeding with local-only lock.\n\
                     Remember to sync when connection is restored."
                ));
                return Ok(Held::local_only(local));
            }
            Err(e) => {
                local.release()?;
                return Err(e.into());
            }
            Ok(remote_lock::Acquired::Held(holder)) => {
                local.release()?;
                return Err(SyncError::RemoteLocked {
                    remote: up.remote,
                    holder: Box::new(holder),
                    timeout: config.timeout,
                }
                .into());
            }
            Ok(remote_lock::Acquired::Broke { lock, previous }) => {
                let who = previous
                    .info
                    .as_ref()
                    .map(|i| {
                        format!(
                            " ({} by PID {} on {}, acquired {})",
                            i.operation,
                            i.machine.pid,
                            i.machine.hostname,
                            lock::ago(i.created_at, chrono::Utc::now())
                        )
                    })
                    .unwrap_or_default();
                self.note(&format!(
                    "Broke the remote lock on '{}'{who}: it is older than the timeout ({} s), \
                     and a holder on another machine cannot be proven alive.",
                    up.remote, config.timeout
                ));
                lock
            }
            Ok(remote_lock::Acquired::Taken(lock)) => lock,
        };
        let held = Held {
            local,
            remote: Some(RemoteHeld::new(git.clone(), taken)),
        };
        if check_advance && let Err(e) = remote_stood_still(&git, &up) {
            held.release()?;
            return Err(e);
        }
        Ok(held)
    }

    fn lock_local_guard(
        &self,
        config: &LockConfig,
        operation: &str,
        state_serial: Option<u64>,
    ) -> Result<LockGuard> {
        let mut request = LockRequest::new(operation, &self.machine_id()?);
        request.state_serial = state_serial;
        let guard = lock::acquire(&self.layout, config, &request, &mut |event| match event {
            LockEvent::StaleRemoved { info, reason } => {
                let who = info
                    .map(|i| {
                        format!(
                            " ({} by PID {} on {})",
                            i.operation, i.machine.pid, i.machine.hostname
                        )
                    })
                    .unwrap_or_default();
                self.note(&format!("Removed a stale lock{who}: {reason}."));
            }
            LockEvent::Waiting {
                info,
                attempt,
                of,
                delay,
            } => {
                let who = info
                    .map(|i| format!(" by {} (PID {})", i.operation, i.machine.pid))
                    .unwrap_or_default();
                self.note(&format!(
                    "State is locked{who}; retry {attempt}/{of} in {:.1}s...",
                    delay.as_secs_f64()
                ));
            }
        })?;
        Ok(guard)
    }

    /// The config repo and its upstream, for the remote lock: `None` when
    /// there is no repo with a remote to lock.
    pub fn repo_for_lock(&self) -> Option<(Git, Upstream)> {
        let dir = match &self.config {
            Some(c) => c.clone(),
            None => match self.store.load() {
                Ok(Some(Loaded::Current(state))) => PathBuf::from(state.config_path?),
                _ => return None,
            },
        };
        let git = Git::open(&dir).ok()?;
        let up = git.upstream().ok()??;
        Some((git, up))
    }

    /// Loads the state record, migrating a version 1 file (with a backup)
    /// under the lock first.
    pub fn load_state(&self) -> Result<State> {
        match self.store.load()? {
            Some(Loaded::Current(state)) => Ok(*state),
            Some(Loaded::Legacy { .. }) => {
                let guard = self.lock("migrate", None)?;
                let state = self.load_state_locked(&guard)?;
                guard.release()?;
                state.ok_or_else(|| self.not_initialized())
            }
            None => Err(self.not_initialized()),
        }
    }

    /// Loads the state record while holding the lock, migrating a version 1
    /// file (with a backup). `None` when there is no record yet.
    pub fn load_state_locked(&self, guard: &LockGuard) -> Result<Option<State>> {
        match self.store.load()? {
            Some(Loaded::Current(state)) => Ok(Some(*state)),
            Some(Loaded::Legacy { .. }) => {
                let (state, report) = self.migrate_locked(guard, true)?;
                if let Some(report) = report {
                    let backup = report
                        .backup
                        .as_ref()
                        .map(|p| format!(" (backup: {})", p.display()))
                        .unwrap_or_default();
                    self.note(&format!(
                        "Migrated the state record from version 1 to version 2{backup}."
                    ));
                }
                Ok(Some(state))
            }
            None => Ok(None),
        }
    }

    /// Migrates a version 1 record (`None` report: it was version 2 already).
    pub fn migrate_locked(
        &self,
        guard: &LockGuard,
        backup: bool,
    ) -> Result<(State, Option<MigrationReport>)> {
        let machine = MachineInfo::current(&self.machine_id()?);
        match self.store.migrate_if_legacy(guard, machine, backup)? {
            Some((state, report)) => Ok((state, Some(report))),
            None => Ok((self.store.load_current()?, None)),
        }
    }

    fn not_initialized(&self) -> anyhow::Error {
        StateError::NotInitialized {
            path: self.store.path(),
        }
        .into()
    }
}

impl Context {
    /// The config repo: --config, else the one recorded in state.
    pub fn config_dir(&self, state: Option<&State>) -> Result<PathBuf> {
        if let Some(c) = &self.config {
            return Ok(c.clone());
        }
        match state.and_then(|s| s.config_path.as_ref()) {
            Some(p) => Ok(PathBuf::from(p)),
            None => anyhow::bail!(
                "no config repo given\n\
                 Pass --config DIR (the directory holding stead.toml), or record one with \
                 'stead init --path DIR'."
            ),
        }
    }

    /// Loads the manifest and its graph for `profile` (else the recorded one).
    pub fn load_manifest(
        &self,
        state: Option<&State>,
        profile: Option<&str>,
    ) -> Result<(Manifest, Graph)> {
        let dir = self.config_dir(state)?;
        let profile = profile
            .map(str::to_string)
            .or_else(|| state.and_then(|s| s.active_profile.clone()));
        let (mut manifest, graph) = stead_lib::graph::load(
            &dir,
            &LoadOptions {
                home: self.layout.home().to_path_buf(),
                profile,
            },
        )?;
        manifest
            .protected
            .push(self.layout.state_dir().to_path_buf());
        Ok((manifest, graph))
    }
}

/// `path` made absolute against the current directory, `.` components
/// dropped (`--config .` names the directory itself in messages and state).
fn absolute(path: &Path) -> Result<PathBuf> {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        let cwd = std::env::current_dir().context("cannot read the current directory")?;
        cwd.join(path)
    };
    Ok(joined.components().collect())
}

/// The lock a command holds: the local one, and with `hybrid` the remote one.
/// Derefs to the local guard, which is what the store asks for.
pub struct Held {
    local: LockGuard,
    remote: Option<RemoteHeld>,
}

impl std::ops::Deref for Held {
    type Target = LockGuard;
    fn deref(&self) -> &LockGuard {
        &self.local
    }
}

impl Held {
    fn local_only(local: LockGuard) -> Self {
        Held {
            local,
            remote: None,
        }
    }

    /// Releases the remote lock (a failure is a warning: it expires after
    /// the timeout), then the local one.
    pub fn release(self) -> Result<()> {
        if let Some(remote) = self.remote {
            remote.release();
        }
        self.local.release()?;
        Ok(())
    }
}

/// The remote half, released on drop and on Ctrl-C (see [`release_remote_lock`]).
struct RemoteHeld {
    released: bool,
}

/// The remote lock this process holds, for the signal handler.
static REMOTE_HELD: std::sync::Mutex<Option<(Git, RemoteLock)>> = std::sync::Mutex::new(None);

impl RemoteHeld {
    fn new(git: Git, lock: RemoteLock) -> Self {
        if let Ok(mut slot) = REMOTE_HELD.lock() {
            *slot = Some((git, lock));
        }
        RemoteHeld { released: false }
    }

    fn release(mut self) {
        self.released = true;
        release_remote_lock();
    }
}

impl Drop for RemoteHeld {
    fn drop(&mut self) {
        if !self.released {
            release_remote_lock();
        }
    }
}

/// Deletes the remote lock this process holds, if any (leased on our own
/// commit, so a lock someone broke and took is left alone).
pub fn release_remote_lock() {
    let taken = REMOTE_HELD.lock().ok().and_then(|mut slot| slot.take());
    if let Some((git, lock)) = taken
        && let Err(e) = remote_lock::release(&git, &lock)
    {
        eprintln!(
            "⚠️  Warning: could not release the remote lock on '{}': {e}\n\
             It expires after the lock timeout; 'stead state unlock --force' removes it now.",
            lock.remote
        );
    }
}

/// Fails when the remote's record moved since the common base (another
/// machine pushed since this one last synced).
fn remote_stood_still(git: &Git, up: &Upstream) -> Result<()> {
    git.fetch(&up.remote)?;
    let records = repo::read_records(git, up)?;
    let Some(remote) = &records.remote else {
        return Ok(());
    };
    if shared::moved_since(Some(remote), records.base.as_ref()) {
        return Err(SyncError::RemoteAdvanced {
            remote: up.remote.clone(),
            remote_serial: remote.lineage.serial,
            base_serial: records.base.map(|b| b.lineage.serial).unwrap_or(0),
        }
        .into());
    }
    Ok(())
}
