//! Watch mode's loop: converge once, then again whenever something changes
//! (a managed path, the config repo, a rescan), debounced, with a periodic
//! full run as the safety net; drop events for what stead itself wrote (by
//! content, not by a timing window); leave alone a resource someone else
//! keeps changing (a flapping guard); and end when converged for a while,
//! after a number of runs, or when asked to stop.
//!
//! The loop is driven through three traits so that tests and embedders can
//! feed it: an [`EventSource`] (the CLI's is inotify through `notify`), a
//! [`Clock`], and a [`Runner`] that does one convergence (takes the lock,
//! plans, applies, records, releases) and says what it manages.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What an event source reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Something happened at these paths (a managed path's directory, or
    /// the config repo).
    Changed(Vec<PathBuf>),
    /// Events were lost (a queue overflow): anything may have changed.
    Rescan,
    /// Something the front end should say once (a watch limit reached).
    Warning(String),
    /// End the watch (a signal).
    Stop,
}

/// Where events come from.
pub trait EventSource {
    /// Watches `dirs` (and no longer what it watched before and is not in
    /// them). The config repo is among them.
    fn watch(&mut self, dirs: &BTreeSet<PathBuf>);

    /// The next event, waiting at most `timeout`; `None` when none came.
    fn next(&mut self, timeout: Duration) -> Option<Event>;
}

/// The time (a fake one in tests).
pub trait Clock {
    /// Now.
    fn now(&self) -> Instant;
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// Why a run happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// The first run.
    Start,
    /// Managed paths changed (by someone else).
    Paths(BTreeSet<PathBuf>),
    /// The config repo changed: reload the manifest.
    Config,
    /// Events were lost.
    Rescan,
    /// The periodic safety net.
    Interval,
    /// Resources with `retry = -1` that failed, whose pause is over.
    Retry(BTreeSet<String>),
}

/// What one convergence did and what the watch needs next.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Resources it planned (after a change of paths: those resources and
    /// what waits for them).
    pub planned: usize,
    /// Changes it made.
    pub changed: usize,
    /// Nothing is left to do but what is held (no failure, no other
    /// conflict): converged.
    pub settled: bool,
    /// Managed paths (as on disk) and the resource each belongs to.
    pub managed: BTreeMap<PathBuf, String>,
    /// The config repo.
    pub config_dir: PathBuf,
    /// The state dir: what happens in it is never a change to act on
    /// (stead's own record, journal and backups).
    pub state_dir: PathBuf,
    /// The state serial its record was left at (a serial moved by
    /// someone else means a manual apply: holds end).
    pub serial: u64,
    /// The run was asked to stop (a signal): the watch ends after it.
    pub stop: bool,
    /// Resources with `retry = -1` that failed: the pause before the next
    /// try, and whether it doubles with each failure in a row.
    pub retry: BTreeMap<String, (Duration, bool)>,
}

/// One convergence, and the checks the loop asks between runs.
pub trait Runner {
    /// Converges once (the whole manifest; `trigger` says why), leaving the
    /// resources in `held` alone (a conflict that says why).
    fn run(&mut self, trigger: &Trigger, held: &BTreeSet<String>) -> Result<RunReport, String>;

    /// True when `path` is as stead last recorded it (its content checksum,
    /// its type and mode): an event for it was stead's own write.
    fn as_recorded(&self, path: &Path) -> bool;

    /// The state serial now (`None`: unreadable).
    fn serial(&self) -> Option<u64>;

    /// Tells the front end something (a run, a hold, a warning).
    fn note(&mut self, note: Note);
}

/// What the loop tells the front end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// A run happened.
    Ran {
        /// Its number (1 for the first).
        run: u64,
        /// Why.
        trigger: Trigger,
        /// What it did.
        report: RunReport,
    },
    /// A run failed before it could converge anything.
    RunFailed {
        /// Its number.
        run: u64,
        /// Why.
        message: String,
    },
    /// A resource changed by someone else too often is left alone.
    Held {
        /// The resource.
        id: String,
        /// How many changes in the window.
        changes: usize,
    },
    /// Holds ended: someone applied by hand.
    Released,
    /// A source's warning.
    Warning(String),
}

/// How the loop behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// Quiet time after the last event before a run.
    pub debounce: Duration,
    /// A full run at least this often.
    pub interval: Duration,
    /// End (converged) after this long with nothing pending and the last
    /// run settled.
    pub converged_timeout: Option<Duration>,
    /// End after this many runs.
    pub max_runs: Option<u64>,
    /// A resource changed by someone else this many times ...
    pub flap_changes: usize,
    /// ... within this long is held.
    pub flap_window: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            debounce: Duration::from_millis(200),
            interval: Duration::from_secs(600),
            converged_timeout: None,
            max_runs: None,
            flap_changes: 3,
            flap_window: Duration::from_secs(60),
        }
    }
}

/// How a watch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Converged for `converged_timeout`.
    Converged,
    /// `max_runs` runs made.
    MaxRuns,
    /// Asked to stop.
    Stopped,
}

/// What the loop keeps between events.
struct Loop<'a, C: Clock> {
    clock: &'a C,
    options: &'a Options,
    runs: u64,
    last: RunReport,
    /// Our own last serial: another one means someone applied.
    serial: Option<u64>,
    /// When each resource was changed by someone else, recently.
    changes: HashMap<String, VecDeque<Instant>>,
    held: BTreeSet<String>,
    pending: Option<Trigger>,
    quiet_until: Option<Instant>,
    /// When the first event now waiting came.
    first_pending: Option<Instant>,
    next_full: Instant,
    settled_since: Option<Instant>,
    stopped: bool,
    /// When each failing `retry = -1` resource is tried again, and how
    /// many times in a row it failed.
    retry_due: BTreeMap<String, (Instant, u32)>,
}

/// Runs the watch until it ends. The first run happens at once (events are
/// trusted only after it, mgmt's rule); then each batch of events, once
/// quiet for `debounce`, makes a run.
pub fn watch<C: Clock>(
    source: &mut dyn EventSource,
    clock: &C,
    runner: &mut dyn Runner,
    options: &Options,
) -> End {
    let now = clock.now();
    let mut state = Loop {
        clock,
        options,
        runs: 0,
        last: RunReport::default(),
        serial: None,
        changes: HashMap::new(),
        held: BTreeSet::new(),
        pending: None,
        quiet_until: None,
        first_pending: None,
        next_full: now + options.interval,
        settled_since: None,
        stopped: false,
        retry_due: BTreeMap::new(),
    };
    state.run(source, runner, Trigger::Start);
    loop {
        if state.stopped {
            return End::Stopped;
        }
        if options.max_runs.is_some_and(|max| state.runs >= max) {
            return End::MaxRuns;
        }
        let now = clock.now();
        let runs = state.runs;
        if let Some(end) = state.due(now, source, runner) {
            return end;
        }
        if state.runs != runs {
            // A run happened: see whether it was the last before waiting.
            continue;
        }
        let timeout = state.next_deadline().saturating_duration_since(clock.now());
        match source.next(timeout) {
            None => {}
            Some(Event::Stop) => return End::Stopped,
            Some(Event::Warning(w)) => runner.note(Note::Warning(w)),
            Some(Event::Rescan) => state.schedule(Trigger::Rescan),
            Some(Event::Changed(paths)) => state.changed(paths, runner),
        }
    }
}

impl<C: Clock> Loop<'_, C> {
    /// Runs what is due at `now`; `Some` when the watch ends.
    fn due(
        &mut self,
        now: Instant,
        source: &mut dyn EventSource,
        runner: &mut dyn Runner,
    ) -> Option<End> {
        if self.pending.is_some() && self.quiet_until.is_none_or(|q| now >= q) {
            let trigger = self.pending.take().unwrap_or(Trigger::Interval);
            self.run(source, runner, trigger);
            return None;
        }
        if self.pending.is_none() && now >= self.next_full {
            self.run(source, runner, Trigger::Interval);
            return None;
        }
        let ready: BTreeSet<String> = self
            .retry_due
            .iter()
            .filter(|(_, (at, _))| now >= *at)
            .map(|(id, _)| id.clone())
            .collect();
        if self.pending.is_none() && !ready.is_empty() {
            self.run(source, runner, Trigger::Retry(ready));
            return None;
        }
        match (self.options.converged_timeout, self.settled_since) {
            (Some(t), Some(since)) if self.pending.is_none() && now >= since + t => {
                Some(End::Converged)
            }
            _ => None,
        }
    }

    /// The next instant something is due.
    fn next_deadline(&self) -> Instant {
        let mut next = self.next_full;
        if self.pending.is_some() {
            next = next.min(self.quiet_until.unwrap_or_else(|| self.clock.now()));
        }
        if let (Some(t), Some(since), None) = (
            self.options.converged_timeout,
            self.settled_since,
            &self.pending,
        ) {
            next = next.min(since + t);
        }
        if let Some((at, _)) = self.retry_due.values().min() {
            next = next.min(*at);
        }
        next
    }

    /// Adds `trigger` to what the next run is for (a full run covers all).
    fn schedule(&mut self, trigger: Trigger) {
        self.pending = Some(match (self.pending.take(), trigger) {
            (Some(Trigger::Paths(mut a)), Trigger::Paths(b)) => {
                a.extend(b);
                Trigger::Paths(a)
            }
            (Some(Trigger::Paths(_)) | None, other) => other,
            (Some(full), Trigger::Paths(_)) => full,
            (Some(_), other) => other,
        });
        // Quiet for `debounce`, but never put off more than ten times that
        // since the first event waiting: a writer that never stops must not
        // keep every run from happening.
        let now = self.clock.now();
        let first = *self.first_pending.get_or_insert(now);
        let latest = first + self.options.debounce * 10;
        self.quiet_until = Some((now + self.options.debounce).min(latest));
        self.settled_since = None;
    }

    /// Events at `paths`: the config repo's make a full run; a managed
    /// path's, unless it is as stead recorded it (its own write) or held,
    /// count toward the flapping guard and make a run; others are noise.
    fn changed(&mut self, paths: Vec<PathBuf>, runner: &mut dyn Runner) {
        let mut external = BTreeSet::new();
        let mut config = false;
        for path in paths {
            if !self.last.state_dir.as_os_str().is_empty() && path.starts_with(&self.last.state_dir)
            {
                continue;
            }
            if path.starts_with(&self.last.config_dir)
                && !is_git_noise(&self.last.config_dir, &path)
            {
                config = true;
                continue;
            }
            let Some(id) = self.last.managed.get(&path).cloned() else {
                continue;
            };
            if self.held.contains(&id) || runner.as_recorded(&path) {
                continue;
            }
            external.insert(path);
        }
        if config {
            self.schedule(Trigger::Config);
        } else if !external.is_empty() {
            self.schedule(Trigger::Paths(external));
        }
    }

    /// Counts a change of `id` by someone else: true when it reached the
    /// guard's count within its window.
    fn flapping(&mut self, id: &str) -> bool {
        let now = self.clock.now();
        let window = self.options.flap_window;
        let times = self.changes.entry(id.to_string()).or_default();
        times.push_back(now);
        while times
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > window)
        {
            times.pop_front();
        }
        times.len() >= self.options.flap_changes
    }

    /// Counts one change by someone else for each resource of a batch of
    /// changed paths (a burst of events from one save is one change), and
    /// holds those that reached the guard. False when nothing of the batch
    /// is left to run for.
    fn count_changes(&mut self, paths: &BTreeSet<PathBuf>, runner: &mut dyn Runner) -> bool {
        let ids: BTreeSet<String> = paths
            .iter()
            .filter_map(|p| self.last.managed.get(p).cloned())
            .collect();
        let mut left = false;
        for id in ids {
            if self.held.contains(&id) {
                continue;
            }
            if self.flapping(&id) {
                self.held.insert(id.clone());
                runner.note(Note::Held {
                    id,
                    changes: self.options.flap_changes,
                });
            } else {
                left = true;
            }
        }
        left
    }

    /// After a run: the `retry = -1` resources it ran that failed are
    /// tried again after their pause (doubled per failure in a row with
    /// `backoff = "exponential"`, at least a second, at most the interval);
    /// those it ran that did not fail are no longer due.
    fn schedule_retries(&mut self, trigger: &Trigger, report: &RunReport) {
        let ran: Option<BTreeSet<String>> = match trigger {
            Trigger::Retry(ids) => Some(ids.clone()),
            Trigger::Paths(paths) => Some(
                paths
                    .iter()
                    .filter_map(|p| self.last.managed.get(p).cloned())
                    .collect(),
            ),
            _ => None,
        };
        let mut earlier = std::mem::take(&mut self.retry_due);
        if let Some(ran) = &ran {
            earlier.retain(|id, _| !ran.contains(id) || report.retry.contains_key(id));
            self.retry_due = earlier
                .iter()
                .filter(|(id, _)| !ran.contains(*id))
                .map(|(id, due)| (id.clone(), *due))
                .collect();
        }
        let now = self.clock.now();
        for (id, (delay, exponential)) in &report.retry {
            let failures = earlier.get(id).map_or(1, |(_, n)| n.saturating_add(1));
            let factor = if *exponential {
                1u32.checked_shl(failures.saturating_sub(1).min(20))
                    .unwrap_or(u32::MAX)
            } else {
                1
            };
            let pause = delay
                .saturating_mul(factor)
                .clamp(Duration::from_secs(1), self.options.interval);
            self.retry_due.insert(id.clone(), (now + pause, failures));
        }
    }

    /// One run: holds end first if someone applied by hand meanwhile.
    fn run(&mut self, source: &mut dyn EventSource, runner: &mut dyn Runner, trigger: Trigger) {
        if self.serial.is_some() && runner.serial() != self.serial && !self.held.is_empty() {
            self.held.clear();
            self.changes.clear();
            runner.note(Note::Released);
        }
        self.pending = None;
        self.quiet_until = None;
        self.first_pending = None;
        if let Trigger::Paths(paths) = &trigger
            && !self.count_changes(paths, runner)
        {
            // Only held resources changed: nothing to run for. The last
            // run's settledness stands.
            self.settled_since = self.last.settled.then(|| self.clock.now());
            return;
        }
        self.runs += 1;
        self.next_full = self.clock.now() + self.options.interval;
        match runner.run(&trigger, &self.held) {
            Ok(report) => {
                self.schedule_retries(&trigger, &report);
                self.stopped = report.stop;
                self.serial = Some(report.serial);
                self.settled_since = report.settled.then(|| self.clock.now());
                let dirs = watch_dirs(&report);
                source.watch(&dirs);
                runner.note(Note::Ran {
                    run: self.runs,
                    trigger,
                    report: report.clone(),
                });
                self.last = report;
            }
            Err(message) => {
                self.settled_since = None;
                runner.note(Note::RunFailed {
                    run: self.runs,
                    message,
                });
            }
        }
    }
}

/// What to watch after a run: the config repo and the directory above each
/// managed path (a watch on a file itself goes blind after an editor's
/// rename save).
pub fn watch_dirs(report: &RunReport) -> BTreeSet<PathBuf> {
    let mut dirs: BTreeSet<PathBuf> = report
        .managed
        .keys()
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .collect();
    if !report.config_dir.as_os_str().is_empty() {
        dirs.insert(report.config_dir.clone());
    }
    dirs
}

/// Inside the config repo's `.git/`, only `HEAD` and refs matter (a pull
/// lands as a ref change); the rest (objects, index, locks) is noise.
fn is_git_noise(config_dir: &Path, path: &Path) -> bool {
    let Ok(inside) = path.strip_prefix(config_dir.join(".git")) else {
        return false;
    };
    !(inside == Path::new("HEAD") || inside.starts_with("refs"))
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use super::*;

    /// A clock the source moves.
    #[derive(Clone)]
    struct FakeClock {
        start: Instant,
        offset: Rc<Cell<Duration>>,
    }

    impl Clock for FakeClock {
        fn now(&self) -> Instant {
            self.start + self.offset.get()
        }
    }

    /// Events at given times; waiting moves the fake clock.
    struct Script {
        clock: FakeClock,
        events: VecDeque<(Duration, Event)>,
        watched: Vec<BTreeSet<PathBuf>>,
    }

    impl EventSource for Script {
        fn watch(&mut self, dirs: &BTreeSet<PathBuf>) {
            self.watched.push(dirs.clone());
        }

        fn next(&mut self, timeout: Duration) -> Option<Event> {
            let now = self.clock.offset.get();
            match self.events.front() {
                Some((at, _)) if *at <= now + timeout => {
                    let (at, event) = self.events.pop_front()?;
                    self.clock.offset.set(at.max(now));
                    Some(event)
                }
                // Nothing more will ever come: time runs on to the deadline.
                _ => {
                    self.clock.offset.set(now + timeout);
                    None
                }
            }
        }
    }

    /// A runner that records its runs; `own` are the paths that are as
    /// stead recorded them.
    #[derive(Default)]
    struct Fake {
        runs: Vec<(Trigger, BTreeSet<String>)>,
        own: BTreeSet<PathBuf>,
        notes: Vec<Note>,
        serial: u64,
        unsettled_runs: u64,
        failing: BTreeMap<String, (Duration, bool)>,
    }

    impl Runner for Fake {
        fn run(&mut self, trigger: &Trigger, held: &BTreeSet<String>) -> Result<RunReport, String> {
            self.runs.push((trigger.clone(), held.clone()));
            self.serial += 1;
            Ok(RunReport {
                planned: 2,
                changed: 0,
                settled: self.runs.len() as u64 > self.unsettled_runs,
                managed: [
                    (PathBuf::from("/h/a"), "file.a".to_string()),
                    (PathBuf::from("/h/d/b"), "file.b".to_string()),
                ]
                .into(),
                config_dir: PathBuf::from("/cfg"),
                state_dir: PathBuf::from("/cfg/.state"),
                serial: self.serial,
                stop: false,
                retry: self.failing.clone(),
            })
        }

        fn as_recorded(&self, path: &Path) -> bool {
            self.own.contains(path)
        }

        fn serial(&self) -> Option<u64> {
            Some(self.serial)
        }

        fn note(&mut self, note: Note) {
            self.notes.push(note);
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn run_script(
        events: Vec<(u64, Event)>,
        runner: &mut Fake,
        options: &Options,
    ) -> (End, Duration) {
        let clock = FakeClock {
            start: Instant::now(),
            offset: Rc::new(Cell::new(Duration::ZERO)),
        };
        let mut source = Script {
            clock: clock.clone(),
            events: events.into_iter().map(|(t, e)| (ms(t), e)).collect(),
            watched: Vec::new(),
        };
        let end = watch(&mut source, &clock, runner, options);
        assert!(
            source
                .watched
                .last()
                .is_some_and(|d| d.contains(Path::new("/h/d")))
        );
        (end, clock.offset.get())
    }

    fn changed(p: &str) -> Event {
        Event::Changed(vec![PathBuf::from(p)])
    }

    fn opts() -> Options {
        Options {
            debounce: ms(100),
            interval: Duration::from_secs(600),
            converged_timeout: None,
            max_runs: None,
            ..Options::default()
        }
    }

    #[test]
    fn a_burst_of_events_makes_one_run_after_the_quiet_time() {
        let mut runner = Fake::default();
        let options = Options {
            max_runs: Some(2),
            ..opts()
        };
        let burst = (0..50).map(|i| (1000 + i * 10, changed("/h/a"))).collect();
        let (end, at) = run_script(burst, &mut runner, &options);
        assert_eq!(end, End::MaxRuns);
        assert_eq!(runner.runs.len(), 2);
        assert_eq!(
            runner.runs[1].0,
            Trigger::Paths([PathBuf::from("/h/a")].into())
        );
        // The last event came at 1490 ms; the run waited 100 ms of quiet.
        assert_eq!(at, ms(1590));
    }

    #[test]
    fn a_writer_that_never_stops_still_gets_a_run_ten_quiet_times_after_it_began() {
        let mut runner = Fake::default();
        let options = Options {
            max_runs: Some(2),
            ..opts()
        };
        let endless = (0..500).map(|i| (1000 + i * 50, changed("/h/a"))).collect();
        let (_, at) = run_script(endless, &mut runner, &options);
        assert_eq!(runner.runs.len(), 2);
        assert_eq!(at, ms(2000), "1 s (10 x 100 ms) after the first event");
    }

    #[test]
    fn a_failing_retry_forever_resource_is_tried_again_after_its_pause_doubling() {
        let mut runner = Fake {
            failing: [("exec.up".to_string(), (Duration::from_secs(2), true))].into(),
            ..Fake::default()
        };
        let options = Options {
            max_runs: Some(4),
            ..opts()
        };
        let (_, at) = run_script(Vec::new(), &mut runner, &options);
        let triggers: Vec<&Trigger> = runner.runs.iter().map(|(t, _)| t).collect();
        let retry = Trigger::Retry(["exec.up".to_string()].into());
        assert_eq!(triggers, [&Trigger::Start, &retry, &retry, &retry]);
        // Pauses of 2, 4 and 8 s.
        assert_eq!(at, Duration::from_secs(14));
    }

    #[test]
    fn a_rescan_or_a_config_change_makes_a_full_run() {
        let mut runner = Fake::default();
        let options = Options {
            max_runs: Some(3),
            ..opts()
        };
        let events = vec![
            (1000, changed("/h/a")),
            (1010, Event::Rescan),
            (5000, changed("/cfg/stead.toml")),
        ];
        run_script(events, &mut runner, &options);
        let triggers: Vec<&Trigger> = runner.runs.iter().map(|(t, _)| t).collect();
        assert_eq!(
            triggers,
            [&Trigger::Start, &Trigger::Rescan, &Trigger::Config]
        );
    }

    #[test]
    fn own_writes_and_git_internals_and_unmanaged_paths_make_no_run() {
        let mut runner = Fake {
            own: [PathBuf::from("/h/a")].into(),
            ..Fake::default()
        };
        let options = Options {
            converged_timeout: Some(Duration::from_secs(2)),
            ..opts()
        };
        let events = vec![
            (500, changed("/h/a")),
            (600, changed("/cfg/.git/objects/ab/cdef")),
            (650, changed("/cfg/.state/journal.jsonl")),
            (700, changed("/cfg/.git/index.lock")),
            (800, changed("/h/unmanaged")),
        ];
        let (end, at) = run_script(events, &mut runner, &options);
        assert_eq!(end, End::Converged);
        assert_eq!(runner.runs.len(), 1, "{:?}", runner.runs);
        // Converged 2 s after the first (settled) run: the noise did not
        // reset the timer.
        assert_eq!(at, Duration::from_secs(2));
    }

    #[test]
    fn a_pull_in_the_config_repo_counts() {
        let mut runner = Fake::default();
        let options = Options {
            max_runs: Some(2),
            ..opts()
        };
        run_script(
            vec![(300, changed("/cfg/.git/refs/heads/main"))],
            &mut runner,
            &options,
        );
        assert_eq!(runner.runs[1].0, Trigger::Config);
    }

    #[test]
    fn a_resource_changed_by_someone_else_three_times_in_a_minute_is_held() {
        let mut runner = Fake::default();
        let options = Options {
            max_runs: Some(4),
            ..opts()
        };
        // Changes of /h/a every 1 s: the first two make runs, the third holds
        // it; a change of /h/d/b still runs, with file.a held.
        let events = vec![
            (1000, changed("/h/a")),
            (2000, changed("/h/a")),
            (3000, changed("/h/a")),
            (3500, changed("/h/a")),
            (4000, changed("/h/d/b")),
        ];
        run_script(events, &mut runner, &options);
        assert_eq!(runner.runs.len(), 4);
        assert_eq!(
            runner.runs[3].0,
            Trigger::Paths([PathBuf::from("/h/d/b")].into())
        );
        assert_eq!(runner.runs[3].1, ["file.a".to_string()].into());
        let held: Vec<&Note> = runner
            .notes
            .iter()
            .filter(|n| matches!(n, Note::Held { .. }))
            .collect();
        assert_eq!(held.len(), 1, "said once: {held:?}");
    }

    #[test]
    fn changes_spread_wider_than_the_window_are_not_flapping() {
        let mut runner = Fake::default();
        let options = Options {
            max_runs: Some(4),
            ..opts()
        };
        let events = vec![
            (1000, changed("/h/a")),
            (40_000, changed("/h/a")),
            (80_000, changed("/h/a")),
        ];
        run_script(events, &mut runner, &options);
        assert!(runner.runs.iter().all(|(_, held)| held.is_empty()));
        assert_eq!(runner.runs.len(), 4);
    }

    #[test]
    fn the_converged_timer_starts_after_the_last_settled_run() {
        let mut runner = Fake {
            unsettled_runs: 1,
            ..Fake::default()
        };
        let options = Options {
            converged_timeout: Some(Duration::from_secs(2)),
            ..opts()
        };
        // The first run is not settled: no timer. A change at 1 s runs at
        // 1.1 s (settled); converged 2 s later.
        let (end, at) = run_script(vec![(1000, changed("/h/a"))], &mut runner, &options);
        assert_eq!(end, End::Converged);
        assert_eq!(at, ms(3100));
        assert_eq!(runner.runs.len(), 2);
    }

    #[test]
    fn the_interval_runs_in_full_and_stop_ends_the_watch() {
        let mut runner = Fake::default();
        let options = Options {
            interval: Duration::from_secs(10),
            ..opts()
        };
        let (end, at) = run_script(vec![(25_000, Event::Stop)], &mut runner, &options);
        assert_eq!(end, End::Stopped);
        assert_eq!(at, Duration::from_secs(25));
        let triggers: Vec<&Trigger> = runner.runs.iter().map(|(t, _)| t).collect();
        assert_eq!(
            triggers,
            [&Trigger::Start, &Trigger::Interval, &Trigger::Interval]
        );
    }

    #[test]
    fn a_manual_apply_ends_the_holds() {
        let mut runner = Fake::default();
        let options = Options {
            max_runs: Some(3),
            flap_changes: 1,
            ..opts()
        };
        // One change holds file.a at once; someone applies (the serial
        // moves); the next run has nothing held.
        let events = vec![(1000, changed("/h/a")), (2000, Event::Rescan)];
        let clock = FakeClock {
            start: Instant::now(),
            offset: Rc::new(Cell::new(Duration::ZERO)),
        };
        let mut source = Script {
            clock: clock.clone(),
            events: events.into_iter().map(|(t, e)| (ms(t), e)).collect(),
            watched: Vec::new(),
        };
        struct Bumping(Fake);
        impl Runner for Bumping {
            fn run(&mut self, t: &Trigger, held: &BTreeSet<String>) -> Result<RunReport, String> {
                self.0.run(t, held)
            }
            fn as_recorded(&self, p: &Path) -> bool {
                self.0.as_recorded(p)
            }
            fn serial(&self) -> Option<u64> {
                // Someone else wrote the record since each of our runs.
                Some(self.0.serial + 100)
            }
            fn note(&mut self, n: Note) {
                self.0.note(n)
            }
        }
        let mut bumping = Bumping(std::mem::take(&mut runner));
        watch(&mut source, &clock, &mut bumping, &options);
        let runner = bumping.0;
        assert!(runner.notes.iter().any(|n| matches!(n, Note::Held { .. })));
        assert!(runner.notes.contains(&Note::Released));
        assert!(runner.runs.last().unwrap().1.is_empty());
    }
}
