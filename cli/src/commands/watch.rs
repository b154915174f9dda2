//! `stead watch`: converge, then converge again whenever a managed path or
//! the config repo changes (the library's watch loop, fed by inotify
//! through `notify`), one line per run (`--json`: one JSON document per
//! line). Each run takes the lock and releases it, so `plan`, `state
//! lock-info` and syncs work between runs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Result;
use notify::{RecursiveMode, Watcher};
use serde_json::json;
use stead_lib::converge::{self, Target};
use stead_lib::resource::{Action, Op};
use stead_lib::run::RunControl;
use stead_lib::watch::{self, End, Event, EventSource, Note, Options, RunReport, Runner, Trigger};

use crate::context::Context;
use crate::exit::Exit;
use crate::output::{outln, print_json_line};

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// Exit 0 once converged (nothing pending, the last run settled) for
    /// this many seconds
    #[arg(long, value_name = "SECS")]
    pub converged_timeout: Option<f64>,

    /// Quiet time after the last event before a run, in milliseconds
    #[arg(long, value_name = "MS", default_value_t = 200)]
    pub debounce: u64,

    /// A full run at least this often, in seconds (the safety net for
    /// missed events and what cannot be watched)
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub interval: u64,

    /// Exit 0 after this many runs
    #[arg(long, value_name = "N")]
    pub max_runs: Option<u64>,

    /// Use (and record) this profile
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,

    /// Run up to N changes at once (default: 8)
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
}

pub fn run(ctx: &Context, args: &WatchArgs) -> Result<ExitCode> {
    if ctx.store.load()?.is_none() {
        anyhow::bail!(
            "no state record yet: run 'stead init' (or 'stead apply' once) before 'stead watch'"
        );
    }
    let converged_timeout = match args.converged_timeout {
        Some(s) if !(0.0..=31_536_000.0).contains(&s) => {
            anyhow::bail!("--converged-timeout {s}: give a number of seconds from 0 to a year")
        }
        s => s.map(Duration::from_secs_f64),
    };
    let options = Options {
        debounce: Duration::from_millis(args.debounce),
        interval: Duration::from_secs(args.interval.max(1)),
        converged_timeout,
        max_runs: args.max_runs,
        ..Options::default()
    };
    let mut source = Inotify::new()?;
    let mut runner = CliRunner {
        ctx,
        profile: args.profile.as_deref(),
        jobs: args.jobs.unwrap_or(converge::DEFAULT_JOBS).max(1),
        recorded: BTreeMap::new(),
        secrets: stead_lib::secret::Secrets::open(&ctx.layout, false)?,
        watching: 0,
        managed: BTreeMap::new(),
        declared: BTreeMap::new(),
    };
    let end = watch::watch(&mut source, &watch::SystemClock, &mut runner, &options);
    let (word, code) = match end {
        End::Converged => ("converged", ExitCode::SUCCESS),
        End::MaxRuns => ("max-runs", ExitCode::SUCCESS),
        End::Stopped => ("stopped", Exit::Interrupted.into()),
    };
    if ctx.json {
        print_json_line(&json!({ "event": "end", "reason": word }));
    } else {
        outln!("Watch ended: {word}.");
    }
    Ok(code)
}

/// One convergence per run, as `apply --yes` would make it, without asking.
struct CliRunner<'a> {
    ctx: &'a Context,
    profile: Option<&'a str>,
    jobs: usize,
    /// What the last run recorded: kind and checksum of each managed path.
    recorded: BTreeMap<PathBuf, (String, Option<String>)>,
    secrets: stead_lib::secret::Secrets,
    /// How many directories were watched after the last run.
    watching: usize,
    /// Managed paths (as on disk) and their resources, after the last run.
    managed: BTreeMap<PathBuf, String>,
    /// Declared paths and their resources, from the last whole plan.
    declared: BTreeMap<PathBuf, String>,
}

impl CliRunner<'_> {
    fn converge(&mut self, trigger: &Trigger, held: &BTreeSet<String>) -> Result<RunReport> {
        let ctx = self.ctx;
        let guard = ctx.lock("watch", None)?;
        let state = ctx
            .load_state_locked(&guard)?
            .ok_or_else(|| ctx.not_initialized_error())?;
        // Paths changed: those resources and what waits for them are
        // planned again, nothing else.
        let only: Option<std::collections::HashSet<String>> = match trigger {
            Trigger::Paths(paths) => Some(
                paths
                    .iter()
                    .filter_map(|p| self.managed.get(p).cloned())
                    .collect(),
            ),
            Trigger::Retry(ids) => Some(ids.iter().cloned().collect()),
            _ => None,
        };
        let mut options = ctx.plan_options(None, self.profile, false, self.jobs);
        options.only = only.as_ref();
        let mut prepared = converge::prepare(&ctx.layout, &state, &options, &converge::Silent)?;
        converge::recover_temps(&ctx.layout, &state, &prepared, &converge::Silent);
        hold(&mut prepared.plan, held);
        let planned = prepared.plan.changes.len();
        let target = Target {
            layout: &ctx.layout,
            store: &ctx.store,
            guard: &guard,
        };
        let ran = if prepared.plan.is_empty() {
            Ran {
                state: converge::record_unchanged(target, state, &prepared)?,
                changed: 0,
                settled: true,
                stop: false,
                retry: BTreeMap::new(),
            }
        } else {
            self.execute(target, state, &prepared, held)?
        };
        guard.release()?;
        self.remember(&ran.state, &prepared.plan, only.is_none());
        Ok(RunReport {
            planned,
            changed: ran.changed,
            settled: ran.settled,
            managed: self.managed.clone(),
            config_dir: prepared.plan.config_dir.clone(),
            state_dir: ctx.layout.state_dir().to_path_buf(),
            serial: ran.state.lineage.serial,
            stop: ran.stop,
            retry: ran.retry,
        })
    }

    /// Executes a plan that changes something, as `apply` does, under a
    /// run control the signal handler reaches.
    fn execute(
        &self,
        target: Target,
        state: stead_lib::state::State,
        prepared: &converge::Prepared,
        held: &BTreeSet<String>,
    ) -> Result<Ran> {
        let control = RunControl::new();
        let reaper = super::apply::start_reaper(self.ctx, &control);
        let executed = {
            let _current = crate::CurrentRun::set(control.cancel_handle(), None);
            converge::execute(
                target,
                state,
                prepared,
                self.jobs,
                &control,
                &converge::Silent,
            )
        };
        control.clear_reaper();
        if let Some(mut r) = reaper {
            let _ = r.wait();
        }
        let executed = executed?;
        let outcomes = || prepared.plan.changes.iter().zip(&executed.outcome.statuses);
        let changed = outcomes().filter(|(_, s)| s.did_something()).count();
        let settled = outcomes().all(|(c, s)| !s.is_failure() || held.contains(&c.id));
        // `retry = -1`: the watch tries it again after its pause.
        let retry = outcomes()
            .filter(|(c, s)| c.retry.forever && matches!(s, stead_lib::engine::Status::Failed(_)))
            .map(|(c, _)| {
                let pause = Duration::from_millis(c.retry.delay_ms);
                (c.id.clone(), (pause, c.retry.exponential))
            })
            .collect();
        Ok(Ran {
            changed,
            settled,
            stop: control.stop_requested(),
            retry,
            state: executed.state,
        })
    }

    /// What the watch needs of a run's record: each managed path's kind and
    /// checksum (its own writes), and the paths it watches with their
    /// resources (declared ones from a whole plan, so a path stead does not
    /// own yet, a conflict, is watched as well).
    fn remember(
        &mut self,
        state: &stead_lib::state::State,
        plan: &stead_lib::plan::Plan,
        whole: bool,
    ) {
        let home = self.ctx.layout.home();
        self.recorded = state
            .resources
            .values()
            .flat_map(|r| r.keys.iter().map(move |k| (r.kind.clone(), k)))
            .map(|(kind, key)| {
                let path = stead_lib::manifest::expand_key(home, key);
                (path, (kind, state.checksums.get(key).map(|sum| sum.text())))
            })
            .collect();
        if whole {
            self.declared = plan.changes[..plan.removals_from]
                .iter()
                .flat_map(|c| {
                    c.keys
                        .iter()
                        .map(move |k| (stead_lib::manifest::expand_key(home, k), c.id.clone()))
                })
                .collect();
        }
        self.managed = self.declared.clone();
        self.managed
            .extend(state.resources.iter().flat_map(|(id, r)| {
                r.keys
                    .iter()
                    .map(move |k| (stead_lib::manifest::expand_key(home, k), id.clone()))
            }));
    }
}

/// What executing a plan left.
struct Ran {
    state: stead_lib::state::State,
    changed: usize,
    settled: bool,
    stop: bool,
    retry: BTreeMap<String, (Duration, bool)>,
}

/// Marks the changes of held resources as conflicts: someone else keeps
/// changing them, and stead leaves them alone until a manual apply.
fn hold(plan: &mut stead_lib::plan::Plan, held: &BTreeSet<String>) {
    for change in plan.changes.iter_mut() {
        if held.contains(&change.id) && change.action != Action::Unchanged {
            change.action = Action::Conflict;
            change.op = Op::None;
            change.reason = "changed by someone else again and again; the watch leaves it alone \
                             until a manual 'stead apply'"
                .to_string();
        }
    }
}

impl Runner for CliRunner<'_> {
    fn run(&mut self, trigger: &Trigger, held: &BTreeSet<String>) -> Result<RunReport, String> {
        self.converge(trigger, held).map_err(|e| format!("{e:#}"))
    }

    fn as_recorded(&self, path: &Path) -> bool {
        let Some((kind, sum)) = self.recorded.get(path) else {
            return false;
        };
        let drift =
            stead_lib::resource::drift(kind, path, sum.as_ref(), &|_| false, None, &self.secrets);
        drift.status == stead_lib::state::DriftStatus::Unchanged
    }

    fn serial(&self) -> Option<u64> {
        self.ctx.store.peek_serial()
    }

    fn note(&mut self, note: Note) {
        let json = self.ctx.json;
        match note {
            Note::Ran {
                run,
                trigger,
                report,
            } => {
                let why = describe(&trigger, self.ctx.layout.home());
                let dirs = watch::watch_dirs(&report).len();
                if json {
                    print_json_line(&json!({
                        "event": "run", "run": run, "trigger": why,
                        "planned": report.planned, "changed": report.changed, "settled": report.settled,
                        "serial": report.serial, "watching": dirs,
                    }));
                } else {
                    let state = if report.settled {
                        "converged"
                    } else {
                        "not converged (see 'stead plan')"
                    };
                    outln!(
                        "run {run} ({why}): {} planned, {} changed, {state}; watching {dirs} directories",
                        report.planned,
                        report.changed
                    );
                }
                self.watching = dirs;
            }
            Note::RunFailed { run, message } => {
                if json {
                    print_json_line(&json!({ "event": "run", "run": run, "error": message }));
                } else {
                    outln!("run {run} failed: {message}");
                }
            }
            Note::Held { id, changes } => {
                if json {
                    print_json_line(
                        &json!({ "event": "held", "resource": id, "changes": changes }),
                    );
                } else {
                    outln!(
                        "{id} was changed by someone else {changes} times within a minute: left alone until a manual 'stead apply'"
                    );
                }
            }
            Note::Released => {
                if json {
                    print_json_line(&json!({ "event": "released" }));
                } else {
                    outln!("The state was applied by hand: held resources are watched again.");
                }
            }
            Note::Warning(w) => {
                if json {
                    print_json_line(&json!({ "event": "warning", "message": w }));
                } else {
                    outln!("warning: {w}");
                }
            }
        }
    }
}

/// Why a run happened, in a few words.
fn describe(trigger: &Trigger, home: &Path) -> String {
    match trigger {
        Trigger::Start => "start".into(),
        Trigger::Config => "config repo changed".into(),
        Trigger::Rescan => "events were lost: full run".into(),
        Trigger::Interval => "interval".into(),
        Trigger::Retry(ids) => format!(
            "retry: {}",
            ids.iter().cloned().collect::<Vec<_>>().join(", ")
        ),
        Trigger::Paths(paths) => {
            let shown: Vec<String> = paths
                .iter()
                .map(|p| match p.strip_prefix(home) {
                    Ok(rel) => format!("~/{}", rel.display()),
                    Err(_) => p.display().to_string(),
                })
                .collect();
            format!("changed: {}", shown.join(", "))
        }
    }
}

/// Events from inotify (`notify`): the config repo recursively, every
/// other directory on its own; a directory that cannot be watched because
/// the watch limit is reached is polled instead (said once).
struct Inotify {
    watcher: notify::RecommendedWatcher,
    poller: notify::PollWatcher,
    events: mpsc::Receiver<notify::Result<notify::Event>>,
    watched: BTreeMap<PathBuf, bool>,
    warned: bool,
    /// `STEAD_TEST_MAX_WATCHES`: the kernel's watch limit, stood in for
    /// by tests (lowering the real one would touch every process).
    test_limit: Option<usize>,
}

impl Inotify {
    fn new() -> Result<Inotify> {
        let (tx, events) = mpsc::channel();
        let poll_tx = tx.clone();
        let watcher = notify::recommended_watcher(move |e| {
            let _ = tx.send(e);
        })?;
        let poller = notify::PollWatcher::new(
            move |e| {
                let _ = poll_tx.send(e);
            },
            // By content: a file rewritten within the second of its last
            // write keeps its mtime to the second, and would be missed.
            notify::Config::default()
                .with_poll_interval(Duration::from_secs(2))
                .with_compare_contents(true),
        )?;
        Ok(Inotify {
            watcher,
            poller,
            events,
            watched: BTreeMap::new(),
            warned: false,
            test_limit: std::env::var("STEAD_TEST_MAX_WATCHES")
                .ok()
                .and_then(|v| v.parse().ok()),
        })
    }
}

impl EventSource for Inotify {
    fn watch(&mut self, dirs: &BTreeSet<PathBuf>) {
        let gone: Vec<PathBuf> = self
            .watched
            .keys()
            .filter(|d| !dirs.contains(*d))
            .cloned()
            .collect();
        for dir in gone {
            if self.watched.remove(&dir) == Some(true) {
                let _ = self.poller.unwatch(&dir);
            } else {
                let _ = self.watcher.unwatch(&dir);
            }
        }
        // The config repo is the first directory that holds the others'
        // sources; it is watched whole (templates, sources, .git/refs).
        let config = dirs
            .iter()
            .find(|d| d.join("stead.toml").is_file())
            .cloned();
        for dir in dirs {
            if self.watched.contains_key(dir) || !dir.is_dir() {
                continue;
            }
            let mode = if Some(dir) == config.as_ref() {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            let inotify_watches = self.watched.values().filter(|p| !**p).count();
            let result = match self.test_limit {
                Some(limit) if inotify_watches >= limit => {
                    Err(notify::Error::new(notify::ErrorKind::MaxFilesWatch))
                }
                _ => self.watcher.watch(dir, mode),
            };
            match result {
                Ok(()) => {
                    self.watched.insert(dir.clone(), false);
                }
                Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => {
                    if self.poller.watch(dir, mode).is_ok() {
                        self.watched.insert(dir.clone(), true);
                    }
                }
                Err(_) => {}
            }
        }
    }

    fn next(&mut self, timeout: Duration) -> Option<Event> {
        let polled = self.watched.values().filter(|p| **p).count();
        if polled > 0 && !self.warned {
            self.warned = true;
            return Some(Event::Warning(format!(
                "the inotify watch limit is reached (fs.inotify.max_user_watches): {polled} directories are polled every 2 s instead"
            )));
        }
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            return match self.events.recv_timeout(left) {
                Ok(Ok(event)) if event.need_rescan() => Some(Event::Rescan),
                // Reads change nothing, and the watch itself reads what it
                // checks: counting them would make it chase its own tail.
                Ok(Ok(event)) if matches!(event.kind, notify::EventKind::Access(_)) => continue,
                Ok(Ok(event)) => Some(Event::Changed(event.paths)),
                Ok(Err(e)) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => {
                    Some(Event::Warning(e.to_string()))
                }
                Ok(Err(_)) => Some(Event::Rescan),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => Some(Event::Stop),
            };
        }
    }
}
