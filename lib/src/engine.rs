//! Execute a [`Plan`]: by readiness, not by waves. A change starts the moment
//! its dependencies finish, up to `jobs` at once; changes that share a path
//! never run at the same time. A failure marks its dependents skipped while
//! independent branches go on. Removals run last, deepest path first.

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, mpsc};

use crate::plan::Plan;
use crate::resource::{self, Action, Applied, Op};

/// What happened to one change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Applied.
    Done(Applied),
    /// Nothing to do.
    Unchanged,
    /// Failed, with the cause.
    Failed(String),
    /// Not run because a dependency failed or was skipped.
    Skipped(String),
}

/// The result of executing a plan: one status per plan change, same order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Parallel to `plan.changes`.
    pub statuses: Vec<Status>,
}

impl Outcome {
    /// True if anything failed or was skipped.
    pub fn has_failures(&self) -> bool {
        self.statuses
            .iter()
            .any(|s| matches!(s, Status::Failed(_) | Status::Skipped(_)))
    }
}

/// Progress, as it happens.
#[derive(Debug)]
pub enum Event<'a> {
    /// A change started.
    Started {
        /// Its id.
        id: &'a str,
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
    /// Where forced overwrites and purges back up what they replace.
    pub backups: PathBuf,
}

/// Executes `plan`, reporting progress to `on_event` (from several threads).
pub fn execute(plan: &Plan, options: &EngineOptions, on_event: &(dyn Fn(Event) + Sync)) -> Outcome {
    let n = plan.changes.len();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut indegree = vec![0usize; n];
    let is_removal: Vec<bool> = (0..n).map(|i| i >= plan.removals_from).collect();
    for (i, deps) in plan.depends_on.iter().enumerate() {
        for &d in deps {
            if d < n {
                dependents[d].push(i);
                indegree[i] += 1;
            }
        }
    }
    let mut statuses: Vec<Option<Status>> = vec![None; n];
    let jobs = options.jobs.max(1);

    std::thread::scope(|scope| {
        let (job_tx, job_rx) = mpsc::channel::<usize>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (done_tx, done_rx) = mpsc::channel::<(usize, Status)>();
        for _ in 0..jobs {
            let job_rx = Arc::clone(&job_rx);
            let done_tx = done_tx.clone();
            let changes = &plan.changes;
            let backups = &options.backups;
            scope.spawn(move || {
                loop {
                    let next = match job_rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => break,
                    };
                    let Ok(i) = next else { break };
                    on_event(Event::Started { id: &changes[i].id });
                    let status = run_one(&changes[i], backups);
                    if done_tx.send((i, status)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done_tx);

        let mut ready: VecDeque<usize> = (0..n)
            .filter(|&i| !is_removal[i] && indegree[i] == 0)
            .collect();
        let mut blocked: Vec<usize> = Vec::new();
        let mut busy_keys: HashSet<&str> = HashSet::new();
        let mut running = 0usize;
        let finish = |i: usize,
                      status: Status,
                      statuses: &mut Vec<Option<Status>>,
                      indegree: &mut Vec<usize>,
                      ready: &mut VecDeque<usize>| {
            let failed = matches!(status, Status::Failed(_) | Status::Skipped(_));
            on_event(Event::Finished {
                id: &plan.changes[i].id,
                status: &status,
            });
            statuses[i] = Some(status);
            if failed {
                let mut stack = vec![i];
                while let Some(f) = stack.pop() {
                    for &d in &dependents[f] {
                        if statuses[d].is_none() {
                            let s =
                                Status::Skipped(format!("{} did not complete", plan.changes[f].id));
                            on_event(Event::Finished {
                                id: &plan.changes[d].id,
                                status: &s,
                            });
                            statuses[d] = Some(s);
                            stack.push(d);
                        }
                    }
                }
            } else {
                for &d in &dependents[i] {
                    indegree[d] -= 1;
                    if indegree[d] == 0 && statuses[d].is_none() {
                        ready.push_back(d);
                    }
                }
            }
        };
        loop {
            while running < jobs {
                let Some(i) = ready.pop_front() else { break };
                if statuses[i].is_some() {
                    continue;
                }
                let c = &plan.changes[i];
                if let Some(status) = settle_inline(c) {
                    finish(i, status, &mut statuses, &mut indegree, &mut ready);
                    continue;
                }
                if c.keys.iter().any(|k| busy_keys.contains(k.as_str())) {
                    blocked.push(i);
                    continue;
                }
                busy_keys.extend(c.keys.iter().map(String::as_str));
                if job_tx.send(i).is_err() {
                    finish(
                        i,
                        Status::Failed("the worker pool stopped".into()),
                        &mut statuses,
                        &mut indegree,
                        &mut ready,
                    );
                    continue;
                }
                running += 1;
            }
            if running == 0 {
                if blocked.is_empty() {
                    break;
                }
                ready.extend(blocked.drain(..));
                continue;
            }
            let Ok((i, status)) = done_rx.recv() else {
                break;
            };
            running -= 1;
            for k in &plan.changes[i].keys {
                busy_keys.remove(k.as_str());
            }
            ready.extend(blocked.drain(..));
            finish(i, status, &mut statuses, &mut indegree, &mut ready);
        }
        drop(job_tx);
    });

    // Removals last, one at a time, deepest first (the plan's order).
    for i in 0..n {
        if is_removal[i] && statuses[i].is_none() {
            let c = &plan.changes[i];
            let status = settle_inline(c).unwrap_or_else(|| {
                on_event(Event::Started { id: &c.id });
                run_one(c, &options.backups)
            });
            on_event(Event::Finished {
                id: &c.id,
                status: &status,
            });
            statuses[i] = Some(status);
        }
    }
    Outcome {
        statuses: statuses
            .into_iter()
            .map(|s| s.unwrap_or_else(|| Status::Skipped("not reached".into())))
            .collect(),
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

fn run_one(c: &resource::Change, backups: &std::path::Path) -> Status {
    match resource::apply(c, backups) {
        Ok(applied) => Status::Done(applied),
        Err(e) => Status::Failed(e.to_string()),
    }
}
