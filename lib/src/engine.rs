//! Execute a [`Plan`]: by readiness, not by waves. A change starts the moment
//! its dependencies finish, up to `jobs` at once; changes that share a path
//! never run at the same time. A failure marks its dependents skipped while
//! independent branches go on. Removals run last, deepest path first.
//!
//! With a [`RunJournal`], every change with a side effect is journaled: its
//! `started` record is durable before the side effect begins, and its
//! `succeeded`/`failed` record is durable before the change is reported.
//!
//! File writes that are ready together run as one batch ([`crate::batch`]):
//! one `started` record names every member, one barrier makes their data
//! durable before any rename, one more makes the renames durable before the
//! outcome is recorded. A batch waits at most [`BATCH_HOLD`] for more files
//! while other work runs, so batching never holds up independent work.

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use crate::batch::{self, Stage};

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
    /// A batch of file writes passed a stage of its durability order (for
    /// tests that check the order; front ends ignore it).
    Durability(Stage),
}

/// How long a batch of file writes waits for more ready files while other
/// changes run (longer batches share barriers; this bounds the delay).
pub const BATCH_HOLD: Duration = Duration::from_millis(20);

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
    /// Where the run's secrets are, to render and hash secret-bearing
    /// files and to encrypt their backups.
    pub secrets: crate::secret::Secrets,
}

impl EngineOptions {
    /// `jobs` at once, backups into a new run folder under the backups dir
    /// `backups`, a fresh [`RunControl`], no secrets.
    pub fn new(jobs: usize, backups: impl Into<PathBuf>) -> Self {
        EngineOptions {
            jobs,
            backups: crate::backup::run_folder(&backups.into()),
            control: RunControl::new(),
            secrets: crate::secret::Secrets::unavailable(),
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
            members: Vec::new(),
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

/// One unit of work for a worker thread.
enum Job {
    /// One change.
    One(usize),
    /// File writes made durable together.
    Batch(Vec<usize>),
    /// Changes applied as one transaction ([`crate::plan::transactions`]).
    Together(Vec<usize>),
}

impl Job {
    fn members(&self) -> Vec<usize> {
        match self {
            Job::One(i) => vec![*i],
            Job::Batch(m) | Job::Together(m) => m.clone(),
        }
    }
}

/// What the dispatcher tracks between rounds.
struct Dispatch<'s> {
    job_tx: mpsc::Sender<Job>,
    jobs: usize,
    /// Jobs handed out and not yet finished.
    running: usize,
    /// Ready changes whose key a running change holds.
    blocked: Vec<usize>,
    busy_keys: HashSet<&'s str>,
    batch: PendingBatch<'s>,
}

/// File writes gathered for the next batch.
#[derive(Default)]
struct PendingBatch<'s> {
    members: Vec<usize>,
    dirs: HashSet<&'s Path>,
    since: Option<Instant>,
}

impl<'s> PendingBatch<'s> {
    fn has_room_for(&self, c: &'s resource::Change) -> bool {
        self.members.len() < batch::MAX_FILES
            && (self.dirs.len() < batch::MAX_DIRS
                || write_dir(c).is_some_and(|d| self.dirs.contains(d)))
    }

    fn add(&mut self, i: usize, c: &'s resource::Change) {
        self.members.push(i);
        if let Some(d) = write_dir(c) {
            self.dirs.insert(d);
        }
        self.since.get_or_insert_with(Instant::now);
    }

    /// How long it has waited, when it holds anything.
    fn waited(&self) -> Option<Duration> {
        self.since
            .filter(|_| !self.members.is_empty())
            .map(|t| t.elapsed())
    }
}

/// A change that can join a batch: a plain file write (backed up first in
/// the clear or not at all: an encrypted backup is made alone), no
/// retries, no refresh to set.
fn batchable(c: &resource::Change) -> bool {
    matches!(c.op, Op::WriteFile { backup, encrypt_backup, .. } if !(backup && encrypt_backup))
        && c.retry.retries == 0
        && c.notify.is_empty()
}

fn write_dir(c: &resource::Change) -> Option<&Path> {
    match &c.op {
        Op::WriteFile { path, .. } => path.parent(),
        _ => None,
    }
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
    /// For each change, the transaction it belongs to (an index into
    /// `transactions`).
    transaction_of: Vec<Option<usize>>,
    transactions: Vec<Vec<usize>>,
    /// Changes handed to a worker as members of a transaction.
    sent: Vec<bool>,
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
        let transactions = crate::plan::transactions(plan);
        let mut transaction_of = vec![None; n];
        for (t, members) in transactions.iter().enumerate() {
            for &i in members {
                transaction_of[i] = Some(t);
            }
        }
        Schedule {
            plan,
            on_event,
            dependents,
            indegree,
            statuses: vec![None; n],
            attempts: vec![0; n],
            ready,
            transaction_of,
            transactions,
            sent: vec![false; n],
        }
    }

    /// The members of change `i`'s transaction `t` that can run now (`i`
    /// first), marked sent; members that settle without a worker (the run
    /// was stopped) are finished here instead.
    fn gather(&mut self, t: usize, i: usize, worker: &Worker) -> Vec<usize> {
        let mut members = vec![i];
        self.sent[i] = true;
        for j in self.transactions[t].clone() {
            if j == i || self.sent[j] || self.statuses[j].is_some() || self.indegree[j] != 0 {
                continue;
            }
            self.sent[j] = true;
            match self.settle_without_worker(j, worker) {
                Some(status) => self.finish(j, status),
                None => members.push(j),
            }
        }
        members
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
    /// changes that share a key never run at the same time. Ready file
    /// writes gather into a batch that runs as one job.
    fn run_declared<'s>(
        &mut self,
        scope: &'s std::thread::Scope<'s, '_>,
        worker: &'s Worker<'s>,
        jobs: usize,
    ) where
        'p: 's,
    {
        let (job_tx, job_rx) = mpsc::channel::<Job>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (done_tx, done_rx) = mpsc::channel::<Vec<(usize, Status, u32)>>();
        for _ in 0..jobs {
            let job_rx = Arc::clone(&job_rx);
            let done_tx = done_tx.clone();
            let plan = self.plan;
            scope.spawn(move || {
                while let Some(job) = job_rx.lock().ok().and_then(|rx| rx.recv().ok()) {
                    let members = job.members();
                    // A panic would leave the scheduler waiting for an answer
                    // that never comes: it fails the job's changes instead.
                    let finished = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        run_job(plan, job, worker, jobs)
                    }))
                    .unwrap_or_else(|_| {
                        let why = "internal error: a worker panicked while running it";
                        members
                            .into_iter()
                            .map(|i| (i, Status::Failed(why.into()), 1))
                            .collect()
                    });
                    if done_tx.send(finished).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done_tx);
        let mut state: Dispatch<'p> = Dispatch {
            job_tx,
            jobs,
            running: 0,
            blocked: Vec::new(),
            busy_keys: HashSet::new(),
            batch: PendingBatch::default(),
        };
        loop {
            self.dispatch_ready(&mut state, worker);
            if state.running == 0 {
                if state.blocked.is_empty() {
                    break;
                }
                self.ready.extend(state.blocked.drain(..));
                continue;
            }
            // A pending batch goes out after its hold, if a worker is free
            // for it; with none free, only a finished job can change anything.
            let hold = state.batch.waited().filter(|_| state.running < jobs);
            let finished = match hold {
                Some(waited) => match done_rx.recv_timeout(BATCH_HOLD.saturating_sub(waited)) {
                    Ok(finished) => finished,
                    Err(mpsc::RecvTimeoutError::Timeout) => continue,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                },
                None => match done_rx.recv() {
                    Ok(finished) => finished,
                    Err(_) => break,
                },
            };
            state.running -= 1;
            for (i, _, _) in &finished {
                for k in &self.plan.changes[*i].keys {
                    state.busy_keys.remove(k.as_str());
                }
            }
            self.ready.extend(state.blocked.drain(..));
            for (i, status, tries) in finished {
                self.attempts[i] = tries;
                self.finish(i, status);
            }
        }
    }

    /// Hands every ready change to a worker, as far as `jobs` allows; file
    /// writes join the pending batch, which goes out when a worker is free
    /// and it is full, nothing else runs, or it has waited [`BATCH_HOLD`].
    fn dispatch_ready(&mut self, d: &mut Dispatch<'p>, worker: &Worker) {
        let mut waiting: VecDeque<usize> = VecDeque::new();
        while let Some(i) = self.ready.pop_front() {
            if self.statuses[i].is_some() || self.sent[i] {
                continue;
            }
            if let Some(status) = self.settle_without_worker(i, worker) {
                self.finish(i, status);
                continue;
            }
            let c: &'p resource::Change = &self.plan.changes[i];
            if c.keys.iter().any(|k| d.busy_keys.contains(k.as_str())) {
                d.blocked.push(i);
                continue;
            }
            if let Some(t) = self.transaction_of[i] {
                if d.running >= d.jobs {
                    waiting.push_back(i);
                    continue;
                }
                let members = self.gather(t, i, worker);
                self.send(d, Job::Together(members));
                continue;
            }
            if batchable(c) {
                if !d.batch.has_room_for(c) {
                    if d.running >= d.jobs {
                        waiting.push_back(i);
                        continue;
                    }
                    let full = std::mem::take(&mut d.batch).members;
                    self.send(d, Job::Batch(full));
                }
                d.busy_keys.extend(c.keys.iter().map(String::as_str));
                d.batch.add(i, c);
                continue;
            }
            if d.running >= d.jobs {
                waiting.push_back(i);
                continue;
            }
            d.busy_keys.extend(c.keys.iter().map(String::as_str));
            self.send(d, Job::One(i));
        }
        self.ready = waiting;
        let batch_due = d.running == 0
            || d.batch.members.len() >= batch::MAX_FILES
            || d.batch.waited().is_some_and(|w| w >= BATCH_HOLD);
        if !d.batch.members.is_empty() && d.running < d.jobs && batch_due {
            let due = std::mem::take(&mut d.batch).members;
            self.send(d, Job::Batch(due));
        }
    }

    fn send(&mut self, d: &mut Dispatch, job: Job) {
        let members = job.members();
        if d.job_tx.send(job).is_err() {
            for i in members {
                for k in &self.plan.changes[i].keys {
                    d.busy_keys.remove(k.as_str());
                }
                self.finish(i, Status::Failed("the worker pool stopped".into()));
            }
            return;
        }
        d.running += 1;
    }

    /// Removals last, one at a time, deepest first (the plan's order); the
    /// members of a transaction ([`crate::plan::transactions`]) together.
    fn run_removals(&mut self, worker: &Worker) {
        for i in self.plan.removals_from..self.plan.changes.len() {
            if self.statuses[i].is_some() {
                continue;
            }
            if let Some(t) = self.transaction_of[i] {
                let members: Vec<usize> = self.transactions[t]
                    .iter()
                    .copied()
                    .filter(|&j| self.statuses[j].is_none())
                    .collect();
                for (j, status, tries) in run_together(self.plan, &members, worker) {
                    self.attempts[j] = tries;
                    self.report(j, status);
                }
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

/// Runs one job on a worker thread; returns how each of its changes ended
/// and the attempts made.
fn run_job(plan: &Plan, job: Job, worker: &Worker, threads: usize) -> Vec<(usize, Status, u32)> {
    match job {
        Job::One(i) => {
            let c = &plan.changes[i];
            (worker.on_event)(Event::Started { id: &c.id });
            let (status, tries) = run_with_retries(c, worker);
            vec![(i, status, tries)]
        }
        Job::Batch(members) => run_batch(plan, &members, worker, threads),
        Job::Together(members) => run_together(plan, &members, worker),
    }
}

/// Runs changes as one transaction of their kind
/// ([`resource::kind::ResourceKind::apply_together`]) between one durable
/// `started` record naming them all and their outcome records: a crash in
/// between leaves every member in doubt, so the next run reads them again.
fn run_together(plan: &Plan, members: &[usize], worker: &Worker) -> Vec<(usize, Status, u32)> {
    if worker.options.control.stop_requested() {
        return members
            .iter()
            .map(|&i| (i, Status::Skipped(Skip::Interrupted), 0))
            .collect();
    }
    let changes: Vec<(usize, &resource::Change)> =
        members.iter().map(|&i| (i, &plan.changes[i])).collect();
    let Some(&(_, first)) = changes.first() else {
        return Vec::new();
    };
    for (_, c) in &changes {
        (worker.on_event)(Event::Started { id: &c.id });
    }
    let action = JournalAction::of(first.action);
    let op_id = worker
        .journal
        .map_or_else(|| "transaction".to_string(), RunJournal::next_op_id);
    if let Some(j) = worker.journal {
        let mut r = j.record(&op_id, "transaction", action.clone(), OpState::Started);
        r.members = changes.iter().map(|(_, c)| c.id.clone()).collect();
        if let Err(e) = j.writer.append(r).wait() {
            let why = format!("not run: the journal could not record its start ({e})");
            return changes
                .iter()
                .map(|(i, _)| (*i, Status::Failed(why.clone()), 1))
                .collect();
        }
    }
    let ops: Vec<&Op> = changes.iter().map(|(_, c)| &c.op).collect();
    let env = resource::ApplyEnv {
        backups: &worker.options.backups,
        control: &worker.options.control,
        secrets: &worker.options.secrets,
    };
    let results = resource::registry::get(first.kind).apply_together(&ops, &env);
    let mut statuses: Vec<(usize, Status, u32)> = changes
        .iter()
        .enumerate()
        .map(|(n, (i, _))| match results.get(n) {
            Some(Ok(applied)) => (*i, Status::Done(applied.clone()), 1),
            Some(Err(e)) => (*i, Status::Failed(e.to_string()), 1),
            None => (
                *i,
                Status::Failed("internal error: no result for it".into()),
                1,
            ),
        })
        .collect();
    for ((_, c), (_, status, _)) in changes.iter().zip(&statuses) {
        if status.did_something()
            && !c.notify.is_empty()
            && let Ok(mut set) = worker.refreshed.lock()
        {
            set.extend(c.notify.iter().cloned());
        }
    }
    if let Some(j) = worker.journal
        && let Err(e) =
            record_group_outcome(j, &op_id, ("transaction", action), &changes, &statuses)
    {
        fail_unrecorded(&mut statuses, &e);
    }
    statuses
}

/// Changes applied but not recorded (the journal failed) become failures:
/// nothing is reported done that the journal could lose.
fn fail_unrecorded(statuses: &mut [(usize, Status, u32)], e: &crate::journal::JournalError) {
    for (_, status, _) in statuses {
        if matches!(status, Status::Done(_)) {
            *status = Status::Failed(format!(
                "applied, but the journal could not record it ({e}); the next run re-reads it"
            ));
        }
    }
}

/// Runs file writes as one batch between one durable `started` record
/// naming them all and their outcome records (see [`crate::batch`]).
fn run_batch(
    plan: &Plan,
    members: &[usize],
    worker: &Worker,
    threads: usize,
) -> Vec<(usize, Status, u32)> {
    if worker.options.control.stop_requested() {
        return members
            .iter()
            .map(|&i| (i, Status::Skipped(Skip::Interrupted), 0))
            .collect();
    }
    let changes: Vec<(usize, &resource::Change)> =
        members.iter().map(|&i| (i, &plan.changes[i])).collect();
    let files: Vec<batch::Member> = changes
        .iter()
        .filter_map(|(_, c)| match &c.op {
            Op::WriteFile {
                path,
                content,
                mode,
                backup,
                ..
            } => Some(batch::Member {
                path,
                content,
                mode: *mode,
                backup: backup.then_some(worker.options.backups.as_path()),
            }),
            _ => None,
        })
        .collect();
    if files.len() != changes.len() {
        // Only file writes join a batch; anything else would be a bug here.
        return changes
            .iter()
            .map(|(i, c)| (*i, run_with_retries(c, worker).0, 1))
            .collect();
    }
    for (_, c) in &changes {
        (worker.on_event)(Event::Started { id: &c.id });
    }
    let journal = worker.journal;
    let op_id = journal.map_or_else(|| "batch".to_string(), RunJournal::next_op_id);
    let mut started = journal.map(|j| {
        let mut r = j.record(&op_id, "batch", JournalAction::Write, OpState::Started);
        r.members = changes.iter().map(|(_, c)| c.id.clone()).collect();
        j.writer.append(r)
    });
    let stage = |s: Stage| (worker.on_event)(Event::Durability(s));
    let results = batch::write(&op_id, &files, threads, &stage, &mut || {
        started.take().map_or(Ok(()), |t| {
            t.wait()
                .map_err(|e| format!("the journal could not record it ({e})"))
        })
    });
    let mut statuses: Vec<(usize, Status, u32)> = changes
        .iter()
        .zip(results)
        .map(|((i, _), r)| match r {
            Ok(applied) => (*i, Status::Done(applied), 1),
            Err(e) => (*i, Status::Failed(e), 1),
        })
        .collect();
    if let Some(j) = journal {
        stage(Stage::OutcomeQueued {
            batch: op_id.clone(),
        });
        if let Err(e) = record_group_outcome(
            j,
            &op_id,
            ("batch", JournalAction::Write),
            &changes,
            &statuses,
        ) {
            fail_unrecorded(&mut statuses, &e);
        }
    }
    statuses
}

/// The outcome of a group (a batch of file writes, a transaction): one
/// `succeeded` record as `(resource, action)` naming the members that were
/// applied, one `failed` record per member that was not; waits until they
/// are durable.
fn record_group_outcome(
    j: &RunJournal,
    op_id: &str,
    (name, action): (&str, JournalAction),
    changes: &[(usize, &resource::Change)],
    statuses: &[(usize, Status, u32)],
) -> Result<(), crate::journal::JournalError> {
    let mut last = None;
    let written: Vec<String> = changes
        .iter()
        .zip(statuses)
        .filter(|(_, (_, s, _))| matches!(s, Status::Done(_)))
        .map(|((_, c), _)| c.id.clone())
        .collect();
    if !written.is_empty() {
        let mut r = j.record(op_id, name, action, OpState::Succeeded);
        r.members = written;
        last = Some(j.writer.append(r));
    }
    for ((_, c), (_, status, _)) in changes.iter().zip(statuses) {
        if let Status::Failed(e) = status {
            let mut r = j.record(op_id, &c.id, JournalAction::of(c.action), OpState::Failed);
            r.detail = Some(e.lines().next().unwrap_or_default().to_string());
            last = Some(j.writer.append(r));
        }
    }
    // One group commit: the last ticket covers every record queued before it.
    last.map_or(Ok(()), crate::journal::Ticket::wait)
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
        resource::apply(
            c,
            &resource::ApplyEnv {
                backups: &options.backups,
                control: &options.control,
                secrets: &options.secrets,
            },
        )
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

    #[test]
    fn file_writes_batched_together_do_not_wait_for_unrelated_work() {
        // `slow` waits (up to 20 s) for files that depend only on `fast`:
        // a batch held until every running change ended would wait for
        // `slow`, which would give up. A 3rd file shows the batch forming.
        let fx = Fixture::new();
        let file = |n: &str| {
            format!("[file.{n}]\npath = \"~/{n}\"\ncontent = \"x\"\nafter = [\"exec.fast\"]\n\n")
        };
        let text = exec("slow", &wait_for("b", 20), &[])
            + &exec("fast", "true", &[])
            + &file("a")
            + &file("b")
            + &file("c");
        let (plan, outcome) = run(&fx, &text, 4);
        assert!(!outcome.has_failures(), "{:?}", outcome.statuses);
        assert!(done(&plan, &outcome, "exec.slow"));
    }

    /// CPU time (user + system, in clock ticks) of the calling thread.
    fn thread_cpu_ticks() -> u64 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // Fields after the command name (which ends with the last ')').
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = rest.split(' ').collect();
        // utime and stime are fields 14 and 15 of the whole line.
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }

    #[test]
    fn a_batch_waiting_for_a_free_worker_does_not_spin_the_scheduler() {
        // One worker, busy for 2 s with `slow`; the file is ready at once
        // and must wait. The scheduler runs on this thread: waiting, it
        // sleeps; spinning on an expired hold, it would burn the 2 s.
        let fx = Fixture::new();
        let text = exec("slow", "sleep 2", &[]) + "[file.f]\npath = \"~/f\"\ncontent = \"x\"\n";
        let plan = fx.plan(&text);
        let before = thread_cpu_ticks();
        let outcome = execute(&plan, &EngineOptions::new(1, fx.backups.clone()), &|_| {});
        let used = thread_cpu_ticks() - before;
        assert!(!outcome.has_failures(), "{:?}", outcome.statuses);
        assert!(
            used < 10,
            "the scheduler thread used {used} ticks while waiting"
        );
    }

    /// What the stage-order test saw, in order.
    #[derive(Debug)]
    enum Seen {
        Stage(Stage),
        Finished(String),
    }

    /// Writes `n` files in 3 directories through a journaled run and
    /// returns what happened in order. At each barrier the hook looks at the
    /// disk itself: at the data barrier no target exists yet and the batch's
    /// `started` record is already in the journal file; at the name barrier
    /// every target holds its content.
    fn run_batched(n: usize) -> (Vec<Seen>, Vec<String>) {
        let fx = Fixture::new();
        let mut text = String::new();
        for i in 0..n {
            text.push_str(&format!(
                "[file.f{i}]\npath = \"~/d{}/f{i}\"\ncontent = \"file {i}\\n\"\n\n",
                i % 3
            ));
        }
        let plan = fx.plan(&text);
        let journal_path = fx.out.join("journal.jsonl");
        let journal = RunJournal::new(JournalWriter::open(&journal_path, true).unwrap(), "run");
        let target = |i: usize| fx.home.join(format!("d{}/f{i}", i % 3));
        let seen = Mutex::new(Vec::new());
        let outcome = execute_journaled(
            &plan,
            &EngineOptions::new(4, fx.backups.clone()),
            Some(&journal),
            &|e| match e {
                Event::Durability(stage) => {
                    match &stage {
                        Stage::DataBarrier { .. } => {
                            let text = std::fs::read_to_string(&journal_path).unwrap();
                            assert!(
                                text.contains("\"state\":\"started\",")
                                    && text.contains("\"members\""),
                                "the started record is durable before any rename: {text}"
                            );
                            assert!((0..n).all(|i| !target(i).exists()), "nothing renamed yet");
                        }
                        Stage::NameBarrier { .. } => {
                            assert!((0..n).all(|i| {
                                std::fs::read_to_string(target(i))
                                    .is_ok_and(|t| t == format!("file {i}\n"))
                            }));
                        }
                        _ => {}
                    }
                    seen.lock().unwrap().push(Seen::Stage(stage));
                }
                Event::Finished { id, .. } => {
                    seen.lock().unwrap().push(Seen::Finished(id.to_string()))
                }
                _ => {}
            },
        );
        assert!(!outcome.has_failures(), "{:?}", outcome.statuses);
        journal.into_writer().close().unwrap();
        let records: Vec<String> = std::fs::read_to_string(&journal_path)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        (seen.into_inner().unwrap(), records)
    }

    fn position(seen: &[Seen], what: impl Fn(&Seen) -> bool) -> Vec<usize> {
        seen.iter()
            .enumerate()
            .filter(|(_, s)| what(s))
            .map(|(i, _)| i)
            .collect()
    }

    /// Checks the order of one batch: every temp written before the data
    /// barrier, every rename after it and before the name barrier, the
    /// outcome queued after that, and each member reported after the outcome.
    fn check_batch_order(seen: &[Seen], batch_id: &str, expected: batch::Barrier) -> usize {
        let in_batch = |b: &str| b == batch_id;
        let temps = position(
            seen,
            |s| matches!(s, Seen::Stage(Stage::TempWritten { batch, .. }) if in_batch(batch)),
        );
        let data = position(
            seen,
            |s| matches!(s, Seen::Stage(Stage::DataBarrier { batch, barrier }) if in_batch(batch) && *barrier == expected),
        );
        let renames = position(
            seen,
            |s| matches!(s, Seen::Stage(Stage::Renamed { batch, .. }) if in_batch(batch)),
        );
        let names = position(
            seen,
            |s| matches!(s, Seen::Stage(Stage::NameBarrier { batch, barrier }) if in_batch(batch) && *barrier == expected),
        );
        let queued = position(
            seen,
            |s| matches!(s, Seen::Stage(Stage::OutcomeQueued { batch }) if in_batch(batch)),
        );
        assert_eq!(
            (data.len(), names.len(), queued.len()),
            (1, 1, 1),
            "{seen:?}"
        );
        assert_eq!(temps.len(), renames.len());
        assert!(
            temps.iter().all(|&t| t < data[0]),
            "a temp after the data barrier"
        );
        assert!(
            renames.iter().all(|&r| r > data[0] && r < names[0]),
            "a rename outside its barriers"
        );
        assert!(queued[0] > names[0], "the outcome before the name barrier");
        let members: Vec<String> = seen[..]
            .iter()
            .filter_map(|s| match s {
                Seen::Stage(Stage::Renamed { batch, path }) if in_batch(batch) => Some(format!(
                    "file.{}",
                    path.file_name().unwrap().to_string_lossy()
                )),
                _ => None,
            })
            .collect();
        for m in &members {
            let reported = position(seen, |s| matches!(s, Seen::Finished(id) if id == m));
            assert!(
                reported.len() == 1 && reported[0] > queued[0],
                "{m} reported before its outcome"
            );
        }
        members.len()
    }

    /// Files edited by hand since stead wrote them are repaired in one
    /// batch: each original backed up, durably, after the batch's data
    /// barrier and before its own rename.
    #[test]
    fn repairs_that_keep_the_originals_share_one_batch_and_back_up_before_renaming() {
        let mut fx = Fixture::new();
        let text: String = (0..6)
            .map(|i| {
                format!(
                    "[file.f{i}]\npath = \"~/d{}/f{i}\"\ncontent = \"file {i}\\n\"\n\n",
                    i % 2
                )
            })
            .collect();
        fx.converge(&text);
        let target = |i: usize| fx.home.join(format!("d{}/f{i}", i % 2));
        for i in 0..6 {
            std::fs::write(target(i), format!("edited {i}\n")).unwrap();
        }
        let plan = fx.plan(&text);
        assert!(
            plan.changes
                .iter()
                .all(|c| matches!(c.op, Op::WriteFile { backup: true, .. })),
            "{:?}",
            plan.changes
        );
        let seen = Mutex::new(Vec::new());
        let outcome = execute(&plan, &EngineOptions::new(4, fx.backups.clone()), &|e| {
            if let Event::Durability(stage) = e {
                seen.lock().unwrap().push(stage);
            }
        });
        assert!(!outcome.has_failures(), "{:?}", outcome.statuses);
        let seen = seen.into_inner().unwrap();
        let data: Vec<usize> = (0..seen.len())
            .filter(|&k| matches!(seen[k], Stage::DataBarrier { .. }))
            .collect();
        assert_eq!(data.len(), 1, "one batch: {seen:?}");
        for i in 0..6 {
            let path = target(i);
            let at = |want: &dyn Fn(&Stage) -> bool| seen.iter().position(want).unwrap();
            let backed = at(&|s| matches!(s, Stage::BackedUp { path: p, .. } if *p == path));
            let renamed = at(&|s| matches!(s, Stage::Renamed { path: p, .. } if *p == path));
            assert!(data[0] < backed && backed < renamed, "{seen:?}");
            assert_eq!(
                std::fs::read_to_string(&path).unwrap(),
                format!("file {i}\n")
            );
            let copy = crate::resource::tests::backup_of(&plan, &outcome, &format!("file.f{i}"));
            assert_eq!(
                std::fs::read_to_string(copy).unwrap(),
                format!("edited {i}\n")
            );
        }
    }

    #[test]
    fn a_batch_renames_only_after_its_data_barrier_and_reports_only_after_its_name_barrier() {
        for (n, expected) in [(5, batch::Barrier::Fsync), (400, batch::Barrier::Syncfs)] {
            let (seen, records) = run_batched(n);
            let batches: HashSet<String> = seen
                .iter()
                .filter_map(|s| match s {
                    Seen::Stage(Stage::DataBarrier { batch, .. }) => Some(batch.clone()),
                    _ => None,
                })
                .collect();
            // All ready at once, they share one batch (and its barrier kind).
            assert_eq!(batches.len(), 1, "{batches:?}");
            let b = batches.iter().next().unwrap();
            assert_eq!(
                check_batch_order(&seen, b, expected),
                n,
                "every file went through it"
            );
            // One started and one succeeded record for the whole batch.
            assert_eq!(
                records
                    .iter()
                    .filter(|r| r.contains("\"resource\":\"batch\""))
                    .count(),
                2
            );
        }
    }
}
