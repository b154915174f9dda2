//! What every command needs: where things are, how to print, and the common
//! steps (take the lock and tell the user about it, load the state migrating a
//! version 1 file on the way).

use crate::output::{self, errln};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use stead_lib::converge;
use stead_lib::graph::Graph;
use stead_lib::layout::Layout;
use stead_lib::lock::{self, LockConfig, LockEvent, LockGuard, LockRequest, LockType};
use stead_lib::machine::{self, MachineInfo};
use stead_lib::manifest::Manifest;
use stead_lib::state::{Loaded, MigrationReport, State, StateError, StateStore};
use stead_lib::sync::backend::BreakReason;
use stead_lib::sync::hybrid::{self, HybridEvent, RemoteRequest};
use stead_lib::sync::{Backend, LockScope, RemoteLocker};

/// The lock a command holds: the local one, and with `hybrid` the remote one.
pub use stead_lib::sync::hybrid::Held;

use crate::output::Paint;

/// Flags every command takes.
#[derive(Debug, clap::Args)]
pub struct GlobalArgs {
    /// The config repo holding stead.toml (default: the current directory or
    /// its nearest parent holding one, else the one recorded by init)
    #[arg(long, global = true, env = "STEAD_CONFIG", value_name = "DIR")]
    pub config: Option<PathBuf>,

    /// Where `~` points for managed paths (default: $HOME)
    #[arg(long, global = true, env = "STEAD_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,

    /// The state dir (default: <home>/.stead)
    #[arg(long, global = true, env = "STEAD_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// History entries to keep in the state record (and this machine's own
    /// newest N in the shared record)
    #[arg(
        long,
        global = true,
        env = "STEAD_HISTORY_LIMIT",
        value_name = "N",
        default_value_t = stead_lib::state::DEFAULT_HISTORY_LIMIT,
        value_parser = clap::value_parser!(usize),
    )]
    pub history_limit: usize,

    /// Seconds a git call that talks to the remote (fetch, push, ls-remote,
    /// clone, the remote lock) may take before it is stopped
    #[arg(
        long,
        global = true,
        env = "STEAD_NETWORK_TIMEOUT",
        value_name = "SECS",
        default_value_t = stead_lib::sync::DEFAULT_NETWORK_TIMEOUT.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..=86400),
    )]
    pub network_timeout: u64,

    /// Print machine-readable JSON instead of text
    #[arg(long, global = true)]
    pub json: bool,

    /// Say more about what happens
    #[arg(short, long, global = true)]
    pub verbose: bool,

    /// When to colour the output: auto (on a terminal; NO_COLOR=1 turns it
    /// off, CLICOLOR_FORCE=1 on), always, never
    #[arg(
        long,
        global = true,
        value_enum,
        value_name = "WHEN",
        default_value_t = crate::output::ColorWhen::Auto
    )]
    pub color: crate::output::ColorWhen,

    /// Deprecated: the same as --color never
    #[arg(long, global = true, hide = true)]
    pub no_color: bool,
}

impl GlobalArgs {
    /// `--color`, with the deprecated `--no-color` meaning `never`.
    pub fn color_when(&self) -> crate::output::ColorWhen {
        if self.no_color {
            crate::output::ColorWhen::Never
        } else {
            self.color
        }
    }
}

pub struct Context {
    pub config: Option<PathBuf>,
    pub layout: Layout,
    pub store: StateStore,
    pub json: bool,
    pub verbose: bool,
    /// How long a git call that talks to the remote may take.
    pub network_timeout: std::time::Duration,
    /// How this machine authenticates to etcd (STEAD_ETCD_USER, STEAD_ETCD_CA, ...).
    pub etcd_access: stead_lib::sync::etcd::Access,
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
        let config = match global.config.as_deref() {
            Some(dir) => Some(absolute(dir)?),
            // Inside a config repo (or below it), that repo is the one.
            None => std::env::current_dir()
                .ok()
                .and_then(|cwd| converge::discover_config(&cwd)),
        };
        Ok(Context {
            config,
            layout,
            store,
            json: global.json,
            verbose: global.verbose,
            network_timeout: std::time::Duration::from_secs(global.network_timeout),
            etcd_access: stead_lib::sync::etcd::Access {
                credentials: etcd_credentials()?,
                tls: etcd_tls(),
            },
            out: Paint,
            err: Paint,
        })
    }

    /// How the config repo's backend talks to its remote: the network
    /// timeout, and with `--verbose` every git command shown as it runs.
    pub fn sync_options(&self) -> stead_lib::sync::Options {
        let trace = self.verbose.then(|| {
            stead_lib::sync::git::Trace(std::sync::Arc::new(|args: &str| {
                errln!("$ git {}", crate::output::clean(args));
            }))
        });
        stead_lib::sync::Options {
            network_timeout: self.network_timeout,
            trace,
            etcd_access: self.etcd_access.clone(),
        }
    }

    /// Says `message` on stderr with `--verbose`.
    pub fn verbose_note(&self, message: &str) {
        if self.verbose {
            errln!("{message}");
        }
    }

    /// A path given on the command line: `~` or `~/x` (quoted, so the shell
    /// left it as written in stead.toml) is under the target home, which
    /// --home may have moved; a relative one is the current directory's.
    pub fn user_path(&self, arg: &Path) -> Result<PathBuf> {
        let text = arg.to_string_lossy();
        if text == "~" || text.starts_with("~/") {
            return Ok(stead_lib::manifest::expand_key(self.layout.home(), &text));
        }
        let cwd = std::env::current_dir().context("cannot read the current directory")?;
        Ok(cwd.join(arg))
    }

    /// How a plan checks managed files: every file read with `verify`, else
    /// by the stat cache, verified at `STEAD_NOW` when that is set (tests
    /// move the clock past the racy window).
    pub fn file_check(&self, verify: bool) -> stead_lib::converge::FileCheck {
        let now_ns = std::env::var("STEAD_NOW").ok().map(|_| {
            let now = self.now();
            i128::from(now.timestamp()) * 1_000_000_000 + i128::from(now.timestamp_subsec_nanos())
        });
        stead_lib::converge::FileCheck { verify, now_ns }
    }

    /// Options to plan the config repo (`config`, else `--config` or the
    /// recorded one) for `profile`, read-only style: no `--rerun`, no seal,
    /// no choice, files checked by the stat cache.
    pub fn plan_options<'a>(
        &'a self,
        config: Option<&'a std::path::Path>,
        profile: Option<&'a str>,
        force: bool,
        jobs: usize,
    ) -> stead_lib::converge::PrepareOptions<'a> {
        stead_lib::converge::PrepareOptions {
            source: stead_lib::converge::PlanSource::Manifest {
                config: config.or(self.config.as_deref()),
                profile,
                force,
            },
            jobs,
            rerun: &[],
            check: self.file_check(false),
            seal: None,
            checks: self.check_options(&[]),
            only: None,
            drift: None,
            compiled: None,
        }
    }

    /// What a plan's checks need: this boot's id (`STEAD_TEST_BOOT_ID`
    /// when set, so tests can stand in for a reboot; else the kernel's),
    /// and the choices made for this run.
    pub fn check_options<'a>(
        &self,
        choose: &'a [stead_lib::migration::Answer],
    ) -> stead_lib::converge::CheckOptions<'a> {
        let boot_id = std::env::var("STEAD_TEST_BOOT_ID")
            .ok()
            .filter(|b| !b.is_empty())
            .or_else(stead_lib::machine::boot_id);
        stead_lib::converge::CheckOptions { boot_id, choose }
    }

    /// The time now: `STEAD_NOW` (RFC 3339) when set, so tests can move the
    /// clock; else the system clock.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        std::env::var("STEAD_NOW")
            .ok()
            .and_then(|v| chrono::DateTime::parse_from_rfc3339(v.trim()).ok())
            .map(|t| t.with_timezone(&chrono::Utc))
            .unwrap_or_else(chrono::Utc::now)
    }

    /// The lineage's machines unseen for 24 hours, from `record` (see
    /// [`stead_lib::sync::shared::offline_machines`]).
    pub fn offline_machines(
        &self,
        record: &stead_lib::sync::shared::SharedRecord,
    ) -> Vec<stead_lib::sync::shared::OfflineMachine> {
        let me = machine::read_id(&self.layout.machine_id_file())
            .ok()
            .flatten()
            .unwrap_or_default();
        stead_lib::sync::shared::offline_machines(record, self.now(), &me)
    }

    /// Prints the offline machines (nothing when there are none).
    pub fn print_offline(&self, offline: &[stead_lib::sync::shared::OfflineMachine]) {
        if offline.is_empty() {
            return;
        }
        crate::output::outln!(
            "\n{} (not seen for {} hours):",
            self.out.yellow("Offline machines"),
            stead_lib::sync::shared::OFFLINE_AFTER_HOURS
        );
        for m in offline {
            let short: String = m.id.chars().take(8).collect();
            crate::output::outln!(
                "  {} ({short}...): last seen {} ({})",
                crate::output::clean(&m.hostname),
                lock::ago(m.last_seen, self.now()),
                crate::output::utc(m.last_seen)
            );
        }
    }

    pub fn warn(&self, message: &str) {
        errln!("{} {message}", self.err.yellow("⚠️  Warning:"));
    }

    pub fn note(&self, message: &str) {
        errln!("{message}");
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

    /// This machine's secrets for a command that writes nothing (its
    /// identity if it has one).
    pub fn secrets_read_only(&self) -> Result<stead_lib::secret::Secrets> {
        Ok(stead_lib::secret::Secrets::open(&self.layout, false)?)
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
    ///
    /// The remote lock is this machine's own where the backend has one per
    /// machine (etcd), so other machines' runs do not wait for it, and only
    /// news for this machine counts as the record having moved.
    pub fn lock(&self, operation: &str, state_serial: Option<u64>) -> Result<Held> {
        self.lock_scoped(operation, state_serial, true, false)
    }

    /// [`Context::lock`] for a write that touches other machines' parts of
    /// the shared record (remove-machine): the remote lock is the
    /// lineage's, which waits for every machine's.
    pub fn lock_lineage_wide(&self, operation: &str) -> Result<Held> {
        self.lock_scoped(operation, None, true, true)
    }

    /// [`Context::lock`] for the commands that bring the remote's news in
    /// (sync, resolve): no check that the remote record stood still.
    pub fn lock_for_sync(&self, operation: &str) -> Result<Held> {
        self.lock_scoped(operation, None, false, false)
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
        lineage_wide: bool,
    ) -> Result<Held> {
        let config = self.lock_config()?;
        let local = self.lock_local_guard(&config, operation, state_serial)?;
        let backend = if config.lock_type == LockType::Hybrid && local.info().is_some() {
            self.repo_for_lock()
        } else {
            None
        };
        let request = RemoteRequest {
            check_advance,
            lineage_wide,
            warn: warn_unreleased,
        };
        let held =
            hybrid::acquire_remote(local, &config, backend.as_deref(), request, &mut |event| {
                self.tell_hybrid(event, config.timeout)
            })?;
        if config.lock_type == LockType::Hybrid {
            self.verbose_note(if held.holds_remote() {
                "Lock: took the remote lock too"
            } else {
                "Lock: holding the local lock only"
            });
        }
        Ok(held)
    }

    /// What taking the remote half of a hybrid lock reported.
    fn tell_hybrid(&self, event: HybridEvent, timeout: u64) {
        match event {
            HybridEvent::NoRemote => self.warn(
                "lock_type is hybrid, but the config repo has no git remote; proceeding with the local lock only.",
            ),
            HybridEvent::Unreachable { reason } => self.warn(&format!(
                "Cannot reach remote repository: {reason}\n\
                 Proceeding with local-only lock.\n\
                 Remember to sync when connection is restored."
            )),
            HybridEvent::Broke {
                remote,
                previous,
                why: BreakReason::DeadHere(proof),
                ..
            } => {
                let what = previous
                    .info
                    .as_ref()
                    .map(|i| format!(" left by {} (PID {})", i.operation, i.machine.pid))
                    .unwrap_or_default();
                self.note(&format!(
                    "Released the remote lock on '{remote}'{what}: {proof}."
                ));
            }
            HybridEvent::Broke {
                remote,
                previous,
                why: BreakReason::Offline,
                ..
            } => {
                let who = broken_holder(&previous);
                self.note(&format!(
                    "Broke the remote lock on '{remote}'{who}: its machine has not been seen for {} hours, \
                     so it counts as offline.",
                    stead_lib::sync::shared::OFFLINE_AFTER_HOURS
                ));
            }
            HybridEvent::Broke {
                remote, previous, ..
            } => {
                let who = broken_holder(&previous);
                self.note(&format!(
                    "Broke the remote lock on '{remote}'{who}: it is older than the timeout ({timeout} s), \
                     and a holder on another machine cannot be proven alive."
                ));
            }
        }
    }

    fn lock_local_guard(
        &self,
        config: &LockConfig,
        operation: &str,
        state_serial: Option<u64>,
    ) -> Result<LockGuard> {
        let mut request = LockRequest::new(operation, &self.machine_id()?);
        request.reason = Some(lock_reason(operation));
        request.expected_duration_seconds = config.timeout;
        request.state_serial = state_serial.or_else(|| self.store.peek_serial());
        let guard = lock::acquire(&self.layout, config, &request, &mut |event| match event {
            LockEvent::StaleRemoved { info, reason } => {
                let who = info
                    .map(|i| {
                        format!(
                            " ({} by PID {} on {})",
                            i.operation,
                            i.machine.pid,
                            crate::output::clean(&i.machine.hostname)
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
        if guard.info().is_some() {
            self.verbose_note(&format!(
                "Lock: took the local lock {} ({operation}, expected to take at most {} s)",
                self.layout.lock_file().display(),
                config.timeout
            ));
        }
        Ok(guard)
    }

    /// The config repo's backend, for the remote lock: `None` when there
    /// is no repo with a remote to lock.
    pub fn repo_for_lock(&self) -> Option<Box<dyn Backend>> {
        let dir = match &self.config {
            Some(c) => c.clone(),
            None => match self.store.load() {
                Ok(Some(Loaded::Current(state) | Loaded::Normalised { state, .. })) => {
                    PathBuf::from(state.config_path?)
                }
                _ => return None,
            },
        };
        let backend = stead_lib::sync::open_with(&dir, &self.sync_options()).ok()?;
        backend.require_remote().ok()?;
        Some(backend)
    }

    /// The config repo's lineage-wide remote lock, which sees every lock
    /// of the lineage (`None`: no repo with a remote).
    pub fn locker(&self) -> Option<Box<dyn RemoteLocker>> {
        self.repo_for_lock()?.locker(&LockScope::Lineage)
    }

    /// Loads the state record, migrating a version 1 file (with a backup)
    /// under the lock first.
    pub fn load_state(&self) -> Result<State> {
        match self.store.load()? {
            Some(Loaded::Current(state)) => Ok(*state),
            Some(Loaded::Normalised { state, notes, .. }) => {
                self.note_normalised(&notes, None);
                Ok(*state)
            }
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
        self.load_state_locked_with(guard, false)
    }

    /// [`Context::load_state_locked`], reading the record in part where it
    /// can ([`stead_lib::state::StateStore::load_in_part`]): for a repair
    /// of what drifted on a sealed machine, which asks for a few of its
    /// entries.
    pub fn load_state_in_part_locked(&self, guard: &LockGuard) -> Result<Option<State>> {
        self.load_state_locked_with(guard, true)
    }

    fn load_state_locked_with(&self, guard: &LockGuard, in_part: bool) -> Result<Option<State>> {
        let loaded = if in_part {
            self.store.load_in_part()?
        } else {
            self.store.load()?
        };
        match loaded {
            Some(Loaded::Current(state)) => Ok(Some(*state)),
            Some(Loaded::Normalised { state, notes, raw }) => {
                // The next write replaces the file in stead's form: what was
                // set aside stays in the copy.
                let backup = self.store.backup_original(&raw)?;
                self.note_normalised(&notes, Some(&backup));
                Ok(Some(*state))
            }
            Some(Loaded::Legacy { .. }) => {
                let (state, report) = self.migrate_locked(guard, true)?;
                if let Some(report) = report {
                    let backup = report
                        .backup
                        .as_ref()
                        .map(|p| format!(" (backup: {})", p.display()))
                        .unwrap_or_default();
                    self.note(&format!(
                        "Migrated the state record from version 1 to version {}{backup}.",
                        stead_lib::state::CURRENT_VERSION
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

    /// Says what was normalised in a record read in the spec's spelling;
    /// `backup`: the copy of the original taken before this command writes.
    pub fn note_normalised(&self, notes: &[String], backup: Option<&Path>) {
        let mut message = match backup {
            Some(path) => format!(
                "The state record is in the spec's spelling of version 2; this command saves it \
                 in stead's form (the original is kept in {}). Normalised:",
                output::clean(&path.display().to_string())
            ),
            None => "The state record is in the spec's spelling of version 2; read in stead's \
                     form and left as it is on disk (the next command that writes the record \
                     saves it, or run 'stead state migrate'). Normalised:"
                .to_string(),
        };
        for note in notes {
            message.push_str("\n  - ");
            message.push_str(&output::clean(note));
        }
        self.note(&message);
    }

    /// The error for a command that needs a state record when there is none.
    pub fn not_initialized_error(&self) -> anyhow::Error {
        self.not_initialized()
    }

    fn not_initialized(&self) -> anyhow::Error {
        StateError::NotInitialized {
            path: self.store.path(),
        }
        .into()
    }
}

impl Context {
    /// The config repo: --config, else the one the current directory is in,
    /// else the one recorded in state.
    pub fn config_dir(&self, state: Option<&State>) -> Result<PathBuf> {
        Ok(converge::config_dir(self.config.as_deref(), state)?)
    }

    /// Loads the manifest and its graph for `profile` (else the recorded one).
    pub fn load_manifest(
        &self,
        state: Option<&State>,
        profile: Option<&str>,
    ) -> Result<(Manifest, Graph)> {
        Ok(converge::load_manifest(
            &self.layout,
            self.config.as_deref(),
            state,
            profile,
        )?)
    }

    /// The state record, or an unsaved fresh one when this machine has none
    /// yet (for the commands that never write: plan, graph, a dry run).
    pub fn current_state(&self) -> Result<State> {
        match self.store.load()? {
            Some(Loaded::Current(s)) => Ok(*s),
            Some(Loaded::Normalised { state, notes, .. }) => {
                self.note_normalised(&notes, None);
                Ok(*state)
            }
            // Read-only: migrated in memory, the file left as version 1.
            Some(Loaded::Legacy { v1, .. }) => {
                let id = machine::read_id(&self.layout.machine_id_file())?
                    .unwrap_or_else(|| "new-machine".to_string());
                let state = self
                    .store
                    .migrated_in_memory(&v1, MachineInfo::current(&id))?;
                self.note(
                    "The state record is version 1: read as if migrated, and left as it is \
                     (the next apply migrates it, or run 'stead state migrate').",
                );
                Ok(state)
            }
            None => {
                let id = machine::read_id(&self.layout.machine_id_file())?
                    .unwrap_or_else(|| "new-machine".to_string());
                Ok(State::new(MachineInfo::current(&id)))
            }
        }
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

/// A remote lock that could not be released (from a release, a drop or the
/// signal handler): a warning, since it expires after the timeout.
fn warn_unreleased(message: &str) {
    errln!("⚠️  Warning: {message}");
}

/// What a lock taken for `operation` is for, in the lock file's `reason`.
fn lock_reason(operation: &str) -> String {
    match operation {
        "apply" => "apply the config to this machine".to_string(),
        "sync" => "sync the state record with the remote".to_string(),
        "commit" => "commit changes to the config repo".to_string(),
        "resolve" => "resolve conflicts with the remote record".to_string(),
        "migrate" => "migrate the state record to version 2".to_string(),
        "remove-machine" => "remove a machine from the lineage".to_string(),
        "init" => "initialise this machine".to_string(),
        other => format!("stead {other}"),
    }
}

/// ` (apply by PID 42 on host, acquired 1 day ago)` for a broken remote
/// lock's holder, as read (its hostname cleaned of control characters);
/// empty when the lock was unreadable.
fn broken_holder(previous: &stead_lib::sync::backend::RemoteHolder) -> String {
    previous
        .info
        .as_ref()
        .map(|i| {
            format!(
                " ({} by PID {} on {}, acquired {})",
                i.operation,
                i.machine.pid,
                crate::output::clean(&i.machine.hostname),
                lock::ago(i.created_at, chrono::Utc::now())
            )
        })
        .unwrap_or_default()
}

/// The etcd user and password from the environment: `STEAD_ETCD_USER`, with
/// `STEAD_ETCD_PASSWORD` or `STEAD_ETCD_PASSWORD_FILE` (a file holding the
/// password; a final newline is dropped). Per machine, never in the repo.
fn etcd_credentials() -> Result<Option<stead_lib::sync::etcd::Credentials>> {
    let Some(user) = std::env::var_os("STEAD_ETCD_USER").filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    let user = user.to_string_lossy().into_owned();
    let password = match (
        std::env::var("STEAD_ETCD_PASSWORD"),
        std::env::var_os("STEAD_ETCD_PASSWORD_FILE"),
    ) {
        (Ok(p), _) => p,
        (Err(_), Some(file)) => {
            let text = std::fs::read_to_string(&file).with_context(|| {
                format!(
                    "cannot read STEAD_ETCD_PASSWORD_FILE {}",
                    PathBuf::from(&file).display()
                )
            })?;
            text.strip_suffix('\n').unwrap_or(&text).to_string()
        }
        (Err(_), None) => anyhow::bail!(
            "STEAD_ETCD_USER is set but no password: set STEAD_ETCD_PASSWORD or STEAD_ETCD_PASSWORD_FILE"
        ),
    };
    Ok(Some(stead_lib::sync::etcd::Credentials {
        user,
        password: zeroize::Zeroizing::new(password),
    }))
}

/// The etcd TLS files from the environment (`None`: none named):
/// `STEAD_ETCD_CA`, `STEAD_ETCD_CERT`, `STEAD_ETCD_KEY`.
fn etcd_tls() -> Option<stead_lib::sync::etcd::TlsFiles> {
    let path = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let files = stead_lib::sync::etcd::TlsFiles {
        ca: path("STEAD_ETCD_CA"),
        cert: path("STEAD_ETCD_CERT"),
        key: path("STEAD_ETCD_KEY"),
    };
    (files.ca.is_some() || files.cert.is_some() || files.key.is_some()).then_some(files)
}
