//! Execute a [`Plan`]: by readiness, not by waves. A change starts the moment
//! its dependencies finish, up to `jobs` at once; changes that share a path
//! never run at the same time. A failure marks its dependents skipped while
//! independent branches go on. Removals run last, deepest path first.
//!
//! With a [`RunJournal`], every change with a side effect is journaled: its
//! `started` record is durable before the side effect begins, and its
//! `succeeded`/`failed` record is durable before the change is reported.

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, mpsc};

use crate::journal::{JournalAction, JournalWriter, OpState, Record};
use crate::plan::Plan;
use crate::resource::{self, Action, Applied, Op, ResourceError};
use crate::run::RunControl;

pub use crate::outcome::{Outcome, Skip, Status};

/// Progress, as it happens.
#[derive(Debug)]
pub enum Event<'a> {
    /// A change started.
    Started {
        /// Its id.
        id: &'a str,
    },
    /// An attempt failed and the change will be tried again (`retry`).
    Retrying {
        /// Its id.
        id: &'a str,
        /// The attempt that failed (1-based).
        attempt: u32,
        /// Attempts allowed in all.
        of: u32,
        /// Why it failed.
        error: &'a str,
    },
    /// A change ended (also skipped and unchanged ones).
    Finished {
        /// Its id.
        id: &'a str,
        /// How it ended.
        status: &'a Status,
    },
}

/// How to execute.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// At most this many changes at once.
    pub jobs: usize,
    /// The run's backup folder ([`crate::backup::run_folder`]): where
    /// overwrites, purges and removals back up what they replace.
    pub backups: PathBuf,
    /// This run's cancel flags and commands (see [`crate::run`]).
    pub control: RunControl,
}

impl EngineOptions {
    /// `jobs` at once, backups into a new run folder under the backups dir
    /// `backups`, a fresh [`RunControl`].
    pub fn new(jobs: usize, backups: impl Into<PathBuf>) -> Self {
        EngineOptions {
            jobs,
            backups: crate::backup::run_folder(&backups.into()),
            control: RunControl::new(),
        }
    }
}

/// The journal of one run, as the engine writes it.
pub struct RunJournal {
    writer: JournalWriter,
    run_id: String,
    next_op: std::sync::atomic::AtomicU64,
    /// Refreshes an earlier run set and nobody consumed yet.
    pending_refreshes: HashSet<String>,
}

impl std::fmt::Debug for RunJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunJournal")
            .field("run_id", &self.run_id)
            .finish_non_exhaustive()
    }
}

impl RunJournal {
    /// Journals run `run_id` through `writer`.
    pub fn new(writer: JournalWriter, run_id: impl Into<String>) -> Self {
        RunJournal {
            writer,
            run_id: run_id.into(),
            next_op: std::sync::atomic::AtomicU64::new(1),
            pending_refreshes: HashSet::new(),
        }
    }

    /// Refreshes left pending by earlier runs (from the journal): their
    /// targets run in this one.
    pub fn with_pending_refreshes(mut self, pending: HashSet<String>) -> Self {
        self.pending_refreshes = pending;
        self
    }

    /// This run's id.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The writer (for run-level records and closing).
    pub fn writer(&self) -> &JournalWriter {
        &self.writer
    }

    /// Gives the writer back (to close it).
    pub fn into_writer(self) -> JournalWriter {
        self.writer
    }

    /// A record of this run, stamped now.
    pub fn record(
        &self,
        op_id: &str,
        resource: &str,
        action: JournalAction,
        state: OpState,
    ) -> Record {
        Record {
            op_id: op_id.to_string(),
            run_id: self.run_id.clone(),
            resource: resource.to_string(),
            action,
            state,
            idemp_key: None,
            at: chrono::Utc::now(),
            detail: None,
            output: Vec::new(),
        }
    }

    fn next_op_id(&self) -> String {
        let n = self
            .next_op
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{}:{n}", self.run_id)
    }
}

/// A new run id (a UUID).
pub fn new_run_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Executes `plan`, reporting progress to `on_event` (from several threads).
pub fn execute(plan: &Plan, options: &EngineOptions, on_event: &(dyn Fn(Event) + Sync)) -> Outcome {
    execute_journaled(plan, options, None, on_event)
}

/// [`execute`], journaling every side effect in `journal`.
pub fn execute_journaled(
    plan: &Plan,
    options: &EngineOptions,
    journal: Option<&RunJournal>,
    on_event: &(dyn Fn(Event) + Sync),
) -> Outcome {
    // Targets refreshed so far: by a change of this run, or pending from one
    // before. A `refresh_only` exec runs only if it is in here when its turn
    // comes (every notifier is one of its dependencies, so it has finished).
    let refreshed: Mutex<HashSet<String>> = Mutex::new(
        journal
            .map(|j| j.pending_refreshes.clone())
            .unwrap_or_default(),
    );
    let worker = Worker {
        options,
        journal,
        refreshed: &refreshed,
        on_event,
    };
    let mut schedule = Schedule::new(plan, on_event);
    std::thread::scope(|scope| schedule.run_declared(scope, &worker, options.jobs.max(1)));
    schedule.run_removals(&worker);
    schedule.into_outcome(options.control.stop_requested())
}

/// What a worker thread needs to run one change.
struct Worker<'a> {
    options: &'a EngineOptions,
    journal: Option<&'a RunJournal>,
    refreshed: &'a Mutex<HashSet<String>>,
    on_event: &'a (dyn Fn(Event) + Sync),
}

/// The scheduler's view of a plan: what waits for what, what is done.
struct Schedule<'p> {
    plan: &'p Plan,
    on_event: &'p (dyn Fn(Event) + Sync),
    dependents: Vec<Vec<usize>>,
    indegree: Vec<usize>,
    statuses: Vec<Option<Status>>,
    attempts: Vec<u32>,
    ready: VecDeque<usize>,
}

impl<'p> Schedule<'p> {
    fn new(plan: &'p Plan, on_event: &'p (dyn Fn(Event) + Sync)) -> Self {
        let n = plan.changes.len();
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
        let mut indegree = vec![0usize; n];
        for (i, deps) in plan.depends_on.iter().enumerate() {
            for &d in deps {
                if d < n {
                    dependents[d].push(i);
                    indegree[i] += 1;
                }
            }
        }
        let ready = (0..n)
            .filter(|&i| !Self::is_removal(plan, i) && indegree[i] == 0)
            .collect();
        Schedule {
            plan,
            on_event,
            dependents,
            indegree,
            statuses: vec![None; n],
            attempts: vec![0; n],
            ready,
        }
    }

    fn is_removal(plan: &Plan, i: usize) -> bool {
        i >= plan.removals_from
    }

    /// Records how change `i` ended: a failure skips its dependents
    /// transitively; a success makes the ones waiting only on it ready.
    fn finish(&mut self, i: usize, status: Status) {
        let failed = status.is_failure();
        self.report(i, status);
        if failed {
            let mut stack = vec![i];
            while let Some(f) = stack.pop() {
                // Each change finishes once, so its list is needed once.
                for d in std::mem::take(&mut self.dependents[f]) {
                    if self.statuses[d].is_none() {
                        let why = Skip::DependencyFailed(self.plan.changes[f].id.clone());
                        self.report(d, Status::Skipped(why));
                        stack.push(d);
                    }
                }
            }
        } else {
            for d in std::mem::take(&mut self.dependents[i]) {
                self.indegree[d] -= 1;
                if self.indegree[d] == 0 && self.statuses[d].is_none() {
                    self.ready.push_back(d);
                }
            }
        }
    }

    fn report(&mut self, i: usize, status: Status) {
        (self.on_event)(Event::Finished {
            id: &self.plan.changes[i].id,
            status: &status,
        });
        self.statuses[i] = Some(status);
    }

    /// What change `i` comes to without a worker, if anything: interrupted,
    /// not refreshed, unchanged, a conflict, a no-op.
    fn settle_without_worker(&self, i: usize, worker: &Worker) -> Option<Status> {
        let c = &self.plan.changes[i];
        if worker.options.control.stop_requested() {
            // Its dependents stay unreached and end as interrupted too.
            return Some(Status::Skipped(Skip::Interrupted));
        }
        let not_refreshed = matches!(&c.op, Op::Run(r) if r.refresh_only)
            && !worker.refreshed.lock().is_ok_and(|set| set.contains(&c.id));
        if not_refreshed {
            return Some(Status::Unchanged);
        }
        settle_inline(c)
    }

    /// Runs the declared changes by readiness on `jobs` worker threads;
    /// changes that share a key never run at the same time.
    fn run_declared<'s>(
        &mut self,
        scope: &'s std::thread::Scope<'s, '_>,
        worker: &'s Worker<'s>,
        jobs: usize,
    ) where
        'p: 's,
    {
        let (job_tx, job_rx) = mpsc::channel::<usize>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (done_tx, done_rx) = mpsc::channel::<(usize, Status, u32)>();
        for _ in 0..jobs {
            let job_rx = Arc::clone(&job_rx);
            let done_tx = done_tx.clone();
            let changes = &self.plan.changes;
            scope.spawn(move || {
                while let Some(i) = job_rx.lock().ok().and_then(|rx| rx.recv().ok()) {
                    (worker.on_event)(Event::Started { id: &changes[i].id });
                    let (status, tries) = run_with_retries(&changes[i], worker);
                    if done_tx.send((i, status, tries)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done_tx);
        let mut blocked: Vec<usize> = Vec::new();
        let mut busy_keys: HashSet<&str> = HashSet::new();
        let mut running = 0usize;
        loop {
            while running < jobs {
                let Some(i) = self.ready.pop_front() else {
                    break;
                };
                if self.statuses[i].is_some() {
                    continue;
                }
                if let Some(status) = self.settle_without_worker(i, worker) {
                    self.finish(i, status);
                    continue;
                }
                let c = &self.plan.changes[i];
                if c.keys.iter().any(|k| busy_keys.contains(k.as_str())) {
                    blocked.push(i);
                    continue;
                }
                busy_keys.extend(c.keys.iter().map(String::as_str));
                if job_tx.send(i).is_err() {
                    self.finish(i, Status::Failed("the worker pool stopped".into()));
                    continue;
                }
                running += 1;
            }
            if running == 0 {
                if blocked.is_empty() {
                    break;
                }
                self.ready.extend(blocked.drain(..));
                continue;
            }
            let Ok((i, status, tries)) = done_rx.recv() else {
                break;
            };
            running -= 1;
            for k in &self.plan.changes[i].keys {
                busy_keys.remove(k.as_str());
            }
            self.ready.extend(blocked.drain(..));
            self.attempts[i] = tries;
            self.finish(i, status);
        }
    }

    /// Removals last, one at a time, deepest first (the plan's order).
    fn run_removals(&mut self, worker: &Worker) {
        for i in self.plan.removals_from..self.plan.changes.len() {
            if self.statuses[i].is_some() {
                continue;
            }
            let status = self.settle_without_worker(i, worker).unwrap_or_else(|| {
                let c = &self.plan.changes[i];
                (worker.on_event)(Event::Started { id: &c.id });
                let (status, tries) = run_with_retries(c, worker);
                self.attempts[i] = tries;
                status
            });
            self.report(i, status);
        }
    }

    fn into_outcome(self, stopped: bool) -> Outcome {
        let unreached = if stopped {
            Skip::Interrupted
        } else {
            Skip::NotReached
        };
        Outcome {
            statuses: self
                .statuses
                .into_iter()
                .map(|s| s.unwrap_or_else(|| Status::Skipped(unreached.clone())))
                .collect(),
            attempts: self.attempts,
        }
    }
}

/// Changes that need no worker: unchanged, conflicts, and no-op removals.
fn settle_inline(c: &resource::Change) -> Option<Status> {
    match (c.action, &c.op) {
        (Action::Unchanged, _) => Some(Status::Unchanged),
        (Action::Conflict, _) => Some(Status::Failed(format!("conflict: {}", c.reason))),
        (_, Op::None) => Some(Status::Done(Applied::default())),
        _ => None,
    }
}

/// Runs one change, and again after a failure as its `retry` allows (each
/// attempt journaled); returns the last status and the attempts made.
fn run_with_retries(c: &resource::Change, worker: &Worker) -> (Status, u32) {
    let control = &worker.options.control;
    let total = c.retry.retries.saturating_add(1);
    let mut attempt = 1;
    loop {
        let status = run_journaled(c, worker, (attempt, total));
        if status.did_something()
            && !c.notify.is_empty()
            && let Ok(mut set) = worker.refreshed.lock()
        {
            set.extend(c.notify.iter().cloned());
        }
        if matches!(status, Status::Done(_)) || attempt >= total {
            let status = match status {
                Status::Failed(e) if total > 1 => {
                    Status::Failed(format!("{e}\n(gave up after {attempt} attempts)"))
                }
                other => other,
            };
            return (status, attempt);
        }
        if let Status::Failed(e) = &status {
            (worker.on_event)(Event::Retrying {
                id: &c.id,
                attempt,
                of: total,
                error: e,
            });
        }
        // Wait out the delay in small steps, so Ctrl-C is not held up.
        let until = std::time::Instant::now() + c.retry.delay_before(attempt);
        while std::time::Instant::now() < until && !control.stop_requested() {
            std::thread::sleep(
                until
                    .saturating_duration_since(std::time::Instant::now())
                    .min(std::time::Duration::from_millis(50)),
            );
        }
        if control.stop_requested() {
            return (status, attempt);
        }
        attempt += 1;
    }
}

/// Runs one attempt of a change between its durable `started` and outcome
/// records.
fn run_journaled(c: &resource::Change, worker: &Worker, (attempt, total): (u32, u32)) -> Status {
    let Some(j) = worker.journal else {
        return run_one(c, worker.options);
    };
    let op_id = j.next_op_id();
    set_refreshes(j, c, &op_id);
    let action = JournalAction::of(c.action);
    // A one-shot step's key goes on its records; on the outcome only when the
    // command really ran (a guard checked right before may have skipped it).
    let key = match &c.op {
        Op::Run(r) => r.idempotency_key.clone(),
        _ => None,
    };
    let mut start = j.record(&op_id, &c.id, action.clone(), OpState::Started);
    start.idemp_key = key.clone();
    if total > 1 {
        start.detail = Some(format!("attempt {attempt} of {total}"));
    }
    if let Err(e) = j.writer.append_durable(start) {
        return Status::Failed(format!(
            "not started: the journal could not record it ({e})"
        ));
    }
    let (status, output) = run_one_captured(c, worker.options);
    settle_refreshes(j, c, &op_id, &status);
    let mut end = outcome_record(j, c, &op_id, action, key, &status, (attempt, total));
    end.output = output;
    match j.writer.append_durable(end) {
        Ok(()) => status,
        Err(e) if matches!(status, Status::Done(_)) => Status::Failed(format!(
            "applied, but the journal could not record it ({e}); the next run re-reads it"
        )),
        Err(_) => status,
    }
}

fn refresh_op(op_id: &str, target: &str) -> String {
    format!("{op_id}>refresh:{target}")
}

/// Refreshes are set before the side effect (made durable with the
/// `started` record that follows), so a crash after the change but before
/// its targets ran still leaves them pending for the next run.
fn set_refreshes(j: &RunJournal, c: &resource::Change, op_id: &str) {
    for target in &c.notify {
        let mut set = j.record(
            &refresh_op(op_id, target),
            target,
            JournalAction::Refresh,
            OpState::Started,
        );
        set.detail = Some(format!("from {}", c.id));
        j.writer.append(set);
    }
}

/// A change that did nothing withdraws the refreshes it set; a
/// `refresh_only` exec that ran consumes every refresh set on it.
fn settle_refreshes(j: &RunJournal, c: &resource::Change, op_id: &str, status: &Status) {
    let did_something = status.did_something();
    if !did_something {
        for target in &c.notify {
            j.writer.append(j.record(
                &refresh_op(op_id, target),
                target,
                JournalAction::Refresh,
                OpState::Failed,
            ));
        }
    }
    if did_something && matches!(&c.op, Op::Run(r) if r.refresh_only) {
        j.writer
            .append(j.record(op_id, &c.id, JournalAction::Refresh, OpState::Succeeded));
    }
}

/// The `succeeded`/`failed` record of one attempt.
fn outcome_record(
    j: &RunJournal,
    c: &resource::Change,
    op_id: &str,
    action: JournalAction,
    key: Option<String>,
    status: &Status,
    (attempt, total): (u32, u32),
) -> Record {
    let state = if matches!(status, Status::Done(_)) {
        OpState::Succeeded
    } else {
        OpState::Failed
    };
    let mut end = j.record(op_id, &c.id, action, state);
    match status {
        Status::Failed(e) => {
            let first = e.lines().next().unwrap_or_default();
            end.detail = Some(if total > 1 {
                format!("attempt {attempt} of {total}: {first}")
            } else {
                first.to_string()
            });
            end.idemp_key = key;
        }
        Status::Done(applied) => match &applied.not_run {
            Some(why) => end.detail = Some(format!("not run: {why}")),
            None => end.idemp_key = key,
        },
        _ => {}
    }
    end
}

fn run_one(c: &resource::Change, options: &EngineOptions) -> Status {
    run_one_captured(c, options).0
}

/// [`run_one`], and what a command wrote (the exact bytes, capped), for
/// its journal record: kept whether it succeeded or failed.
fn run_one_captured(c: &resource::Change, options: &EngineOptions) -> (Status, Vec<u8>) {
    // A panic in a worker would leave the scheduler waiting for an answer
    // that never comes; it becomes this change's failure instead.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        resource::apply(c, &options.backups, &options.control)
    }));
    match result {
        Ok(Ok(applied)) => {
            let output = applied.captured.clone().unwrap_or_default();
            (Status::Done(applied), output)
        }
        Ok(Err(ResourceError::CommandFailed { message, output })) => {
            (Status::Failed(message), output)
        }
        Ok(Err(e)) => (Status::Failed(e.to_string()), Vec::new()),
        Err(_) => (
            Status::Failed(format!("internal error: applying {} panicked", c.id)),
            Vec::new(),
        ),
    }
}

#[cfg(test)]
mod tests {
    //! Scheduling, observed through exec commands that wait for each other's
    //! marker files: a command waiting for a marker that only a concurrently
    //! running change can make fails (after a bounded wait) when the engine
    //! does not run them together, and passes at once when it does.

    use super::*;
    use crate::resource::tests::{Fixture, status};

    /// Shell that waits up to `secs` for `file` in the home, else exits 1.
    fn wait_for(file: &str, secs: u32) -> String {
        format!(
            "i=0; while [ ! -e {file} ]; do i=$((i+1)); [ $i -gt {} ] && exit 1; sleep 0.05; done",
            secs * 20
        )
    }

    fn exec(name: &str, command: &str, after: &[&str]) -> String {
        let after: Vec<String> = after.iter().map(|a| format!("\"{a}\"")).collect();
        format!(
            "[exec.{name}]\ncommand = \"{command}\"\nafter = [{}]\n\n",
            after.join(", ")
        )
    }

    fn run(fx: &Fixture, text: &str, jobs: usize) -> (Plan, Outcome) {
        let plan = fx.plan(text);
        let outcome = execute(
            &plan,
            &EngineOptions::new(jobs, fx.backups.clone()),
            &|_| {},
        );
        (plan, outcome)
    }

    fn done(plan: &Plan, outcome: &Outcome, id: &str) -> bool {
        matches!(status(plan, outcome, id), Status::Done(_))
    }

    #[test]
    fn a_change_starts_when_its_own_dependencies_finish_not_a_whole_wave() {
        // `slow` waits for the marker of `after_fast`, which depends only on
        // `fast`. An engine that runs level by level would hold `after_fast`
        // until `slow` ends, and `slow` would give up.
        let fx = Fixture::new();
        let m = exec("slow", &wait_for("after_fast", 20), &[])
            + &exec("fast", "true", &[])
            + &exec("after_fast", "touch after_fast", &["exec.fast"]);
        let (plan, outcome) = run(&fx, &m, 4);
        assert!(!outcome.has_failures(), "{:?}", outcome.statuses);
        assert!(done(&plan, &outcome, "exec.slow"));
    }

    #[test]
    fn jobs_bounds_how_many_changes_run_at_once() {
        // a and b each wait for the other's marker: possible only side by side.
        let text = exec("a", &format!("touch a; {}", wait_for("b", 20)), &[])
            + &exec("b", &format!("touch b; {}", wait_for("a", 20)), &[]);
        let fx = Fixture::new();
        let (plan, outcome) = run(&fx, &text, 2);
        assert!(done(&plan, &outcome, "exec.a") && done(&plan, &outcome, "exec.b"));

        // One at a time: whichever runs first waits in vain (1 s) and fails.
        let short = exec("a", &format!("touch a; {}", wait_for("b", 1)), &[])
            + &exec("b", &format!("touch b; {}", wait_for("a", 1)), &[]);
        let fx = Fixture::new();
        let (plan, outcome) = run(&fx, &short, 1);
        let failed = ["exec.a", "exec.b"]
            .iter()
            .filter(|id| matches!(status(&plan, &outcome, id), Status::Failed(_)))
            .count();
        assert_eq!(failed, 1, "{:?}", outcome.statuses);
    }

    #[test]
    fn changes_that_share_a_key_never_overlap() {
        // No manifest lets two resources claim one path, so the shared key is
        // set on the plan directly. Each marks its start, then checks that the
        // other is not midway (started, not ended), then stays midway for half
        // a second: run side by side, at least one of them sees the other.
        let fx = Fixture::new();
        let step = |me: &str, other: &str| {
            format!(
                "touch {me}.start; if test -e {other}.start && test ! -e {other}.end; then exit 1; fi; sleep 0.5; touch {me}.end"
            )
        };
        let text = exec("first", &step("first", "second"), &[])
            + &exec("second", &step("second", "first"), &[]);
        let mut plan = fx.plan(&text);
        for c in &mut plan.changes {
            c.keys = vec!["~/shared".into()];
        }
        let outcome = execute(&plan, &EngineOptions::new(4, fx.backups.clone()), &|_| {});
        assert!(!outcome.has_failures(), "{:?}", outcome.statuses);
        assert!(fx.home.join("first.end").exists() && fx.home.join("second.end").exists());
    }

    #[test]
    fn a_failure_skips_its_dependents_transitively_and_nothing_else() {
        let fx = Fixture::new();
        let text = exec("bad", "exit 2", &[])
            + &exec("child", "touch child", &["exec.bad"])
            + &exec("grandchild", "touch grandchild", &["exec.child"])
            + &exec("other", "touch other", &[]);
        let (plan, outcome) = run(&fx, &text, 2);
        assert!(matches!(
            status(&plan, &outcome, "exec.bad"),
            Status::Failed(_)
        ));
        for id in ["exec.child", "exec.grandchild"] {
            assert!(
                matches!(status(&plan, &outcome, id), Status::Skipped(_)),
                "{id}: {:?}",
                status(&plan, &outcome, id)
            );
        }
        assert!(done(&plan, &outcome, "exec.other"));
        assert!(!fx.home.join("child").exists() && !fx.home.join("grandchild").exists());
        assert!(fx.home.join("other").exists());
    }

    #[test]
    fn every_change_gets_exactly_one_finished_event() {
        let fx = Fixture::new();
        let text = exec("bad", "exit 2", &[])
            + &exec("child", "true", &["exec.bad"])
            + &exec("ok", "true", &[]);
        let plan = fx.plan(&text);
        let finished = Mutex::new(Vec::new());
        execute(&plan, &EngineOptions::new(3, fx.backups.clone()), &|e| {
            if let Event::Finished { id, .. } = e {
                finished.lock().unwrap().push(id.to_string());
            }
        });
        let mut got = finished.into_inner().unwrap();
        got.sort();
        assert_eq!(got, ["exec.bad", "exec.child", "exec.ok"]);
    }
}
