//! A sync session over any [`Backend`]: make sure a merge can start,
//! refresh, compare this machine with the remote, merge the tree and the
//! record, settle the local state and the record on the result, commit and
//! publish. The commands that share records (sync, resolve, commit, init,
//! remove-machine, check-conflicts, diff) are these steps in some order;
//! what they print stays theirs, told through [`Note`] and [`Step`].
//!
//! `stead sync` runs in two phases around its apply: [`Session::merge`]
//! before, [`Session::finish`] after.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::SyncError;
use super::backend::{Backend, Published, Records, Revision, Update};
use super::shared::{self, Comparison, Direction, SharedRecord, Strategy};
use crate::layout::Layout;
use crate::lock::LockGuard;
use crate::machine::{self, MachineInfo, RecordKey};
use crate::state::DriftStatus;
use crate::state::{State, StateStore};

/// Something the session did on its own that the user should hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// A record an interrupted run wrote and did not commit was committed.
    CommittedLeftover {
        /// The config tree.
        root: PathBuf,
    },
    /// The remote could not be reached; the last refreshed copy is used.
    UsingLastFetched {
        /// Why.
        reason: String,
        /// The remote's name.
        remote: String,
    },
}

/// A step of [`Session::merge`] done, for the caller to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The tree took the remote's news.
    TreeUpdated,
    /// Both sides moved: the record is merged field by field.
    Merging,
}

/// How [`Session::merge`] ended.
#[derive(Debug)]
pub enum Merged {
    /// Conflicts the rules cannot decide: nothing was changed.
    Undecided,
    /// The tree update stopped on conflicts in these files; the record was
    /// not touched.
    TreeConflicts(Vec<String>),
    /// The local state and the working copy agree on `target`.
    Settled {
        /// The local state as written.
        state: Box<State>,
        /// What the record was settled on.
        target: Box<SharedRecord>,
    },
}

/// What [`Session::finish`] did.
#[derive(Debug)]
pub struct Finished {
    /// The record as committed.
    pub record: SharedRecord,
    /// The commit (`None`: nothing new).
    pub committed: Option<Revision>,
    /// Whether it was published (an error says why not; the commit stays).
    pub pushed: Result<bool, SyncError>,
}

/// What `init --repo` asks of [`Session::join`].
#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// This machine's id now.
    pub machine_id: String,
    /// This machine's state, if it has one.
    pub existing: Option<State>,
    /// The profile asked for (`None`: keep the recorded one).
    pub profile: Option<String>,
    /// The config tree's path, as recorded in state.
    pub root: String,
    /// The repo's URL.
    pub url: String,
    /// The lineage to join or start (`init --lineage`; `None`: whichever
    /// the record holds, or a new one).
    pub lineage: Option<String>,
}

/// How this machine stands in the lineage after [`Session::join`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinStatus {
    /// The repo had no record: this machine started the lineage.
    Started,
    /// This machine joined the repo's lineage.
    Joined,
    /// A member already; its record changed.
    Updated,
    /// A member already; nothing changed.
    Unchanged,
}

impl JoinStatus {
    /// The word in JSON and in the commit message's choice.
    pub fn as_str(self) -> &'static str {
        match self {
            JoinStatus::Started => "started",
            JoinStatus::Joined => "joined",
            JoinStatus::Updated => "updated",
            JoinStatus::Unchanged => "unchanged",
        }
    }
}

/// What [`Session::join`] did.
#[derive(Debug)]
pub struct Joined {
    /// How this machine stands.
    pub status: JoinStatus,
    /// The local state as written.
    pub state: State,
    /// The record as committed.
    pub record: SharedRecord,
    /// The commit (`None`: nothing new).
    pub commit: Option<Revision>,
    /// The old machine id, when it had been removed from the lineage and
    /// the machine joined under a new one.
    pub retired_id: Option<String>,
}

/// One sync over `backend`, writing the local state through `store`.
pub struct Session<'a> {
    backend: &'a dyn Backend,
    store: &'a StateStore,
}

impl<'a> Session<'a> {
    /// A session over an opened backend.
    pub fn new(backend: &'a dyn Backend, store: &'a StateStore) -> Self {
        Session { backend, store }
    }

    /// The backend.
    pub fn backend(&self) -> &'a dyn Backend {
        self.backend
    }

    /// How many of its own history entries this machine keeps in the shared
    /// record: the store's history limit, so that every entry the local
    /// state holds is one the shared record keeps too (the newest N of all
    /// machines are among each machine's newest N), and a fold never brings
    /// back what the floor pruned.
    pub fn history_keep(&self) -> usize {
        self.store.history_limit()
    }

    /// This machine's key for the checksums it publishes (made on first use).
    pub fn record_key(&self) -> Result<RecordKey, SyncError> {
        Ok(machine::load_or_create_record_key(self.store.layout())?)
    }

    /// [`Session::record_key`] for a comparison, which writes nothing: a
    /// machine without a key yet is compared with a key held in memory.
    pub fn record_key_read_only(&self) -> Result<RecordKey, SyncError> {
        Ok(machine::record_key_read_only(self.store.layout())?)
    }

    /// What `sync` and `resolve` start with: the merge driver in place,
    /// nothing in the way of a merge, and a refresh that must reach the remote.
    pub fn begin(&self, stead_exe: &Path, on_note: &mut dyn FnMut(Note)) -> Result<(), SyncError> {
        self.backend.install_merge_driver(stead_exe)?;
        self.prepare(on_note)?;
        self.refresh(true, on_note)?;
        Ok(())
    }

    /// Makes sure a merge can start: no update in progress, and no
    /// uncommitted change to the record's working copy. A working copy that a
    /// stead run wrote and did not get to commit (it was killed) is committed
    /// here: it is a valid record of the same lineage that keeps everything
    /// the committed one has. Anything else is refused, and nothing changes.
    pub fn prepare(&self, on_note: &mut dyn FnMut(Note)) -> Result<(), SyncError> {
        let root = self.backend.root().to_path_buf();
        if self.backend.update_in_progress()? {
            let conflicted = self.backend.conflicted_files()?;
            return Err(SyncError::UpdateInProgress { root, conflicted });
        }
        if self.backend.record_is_clean()? {
            return Ok(());
        }
        let refuse = || SyncError::UncommittedRecord { root: root.clone() };
        let working = self.backend.read_working().map_err(|_| refuse())?;
        let committed = self.backend.records()?.local;
        let forward = match (&working, &committed) {
            (Some(w), Some(c)) => w.keeps_all_of(c),
            (Some(_), None) => true,
            _ => false,
        };
        if !forward {
            return Err(refuse());
        }
        on_note(Note::CommittedLeftover { root: root.clone() });
        self.backend
            .commit(&[], "stead: the record an interrupted run left uncommitted")?;
        Ok(())
    }

    /// Refreshes from the remote; with `strict`, an unreachable remote is an
    /// error, else a note and the last refreshed copy is used. Returns
    /// whether it refreshed.
    pub fn refresh(&self, strict: bool, on_note: &mut dyn FnMut(Note)) -> Result<bool, SyncError> {
        match self.backend.refresh() {
            Ok(()) => Ok(true),
            Err(SyncError::Unreachable { reason, remote }) if !strict => {
                on_note(Note::UsingLastFetched { reason, remote });
                Ok(false)
            }
            Err(SyncError::Unreachable { reason, .. }) => Err(SyncError::MustReach { reason }),
            Err(e) => Err(e),
        }
    }

    /// The copies of the record and how this machine compares with the
    /// remote; `drift` lists managed paths changed on disk (`(path, status)`).
    pub fn compare(
        &self,
        state: &State,
        drift: &[(String, DriftStatus)],
    ) -> Result<(Records, Comparison), SyncError> {
        let records = self.backend.records()?;
        let mut comparison = shared::compare(
            state,
            records.local.as_ref(),
            records.remote.as_ref(),
            records.base.as_ref(),
            drift,
            &self.record_key_read_only()?,
            self.history_keep(),
        );
        // Who changed this machine's entry elsewhere: best effort, a backend
        // that cannot tell (or fails to) leaves it out of the message.
        if comparison.conflicts.iter().any(|c| c.is_own_entry())
            && let Ok(Some(who)) = self
                .backend
                .own_entry_changed_by(&records, &state.machine.id)
        {
            for c in &mut comparison.conflicts {
                c.set_changed_by(&who);
            }
        }
        Ok((records, comparison))
    }

    /// [`Session::compare`] for a merge: a machine removed from the lineage
    /// (by either copy) is refused.
    pub fn compare_for_merge(
        &self,
        state: &State,
        drift: &[(String, DriftStatus)],
    ) -> Result<(Records, Comparison), SyncError> {
        let (records, comparison) = self.compare(state, drift)?;
        self.refuse_if_retired(state, &[records.local.as_ref(), records.remote.as_ref()])?;
        Ok((records, comparison))
    }

    /// Refuses to go on for a machine another machine removed from the lineage.
    pub fn refuse_if_retired(
        &self,
        state: &State,
        copies: &[Option<&SharedRecord>],
    ) -> Result<(), SyncError> {
        let me = &state.machine.id;
        if copies.iter().flatten().any(|r| r.is_retired(me)) {
            return Err(SyncError::Retired {
                hostname: state.machine.hostname.clone(),
                id: me.clone(),
                repo_url: state.repo_url.clone(),
                root: self.backend.root().to_path_buf(),
            });
        }
        Ok(())
    }

    /// Brings the remote's news into the tree when it has any (the record
    /// through the merge driver). `Some(files)`: the update stopped on
    /// conflicts in those files and is left for the user to finish.
    pub fn update_tree(
        &self,
        records: &Records,
        what: &str,
    ) -> Result<Option<Vec<String>>, SyncError> {
        if !self.backend.remote_has_news(records)? {
            return Ok(None);
        }
        let message = format!("{what}: merge {}", self.backend.remote_branch());
        match self.backend.update(&message)? {
            Update::Conflicts(files) => Ok(Some(files)),
            Update::Clean => Ok(None),
        }
    }

    /// The record a sync settles on, and the local write's operation
    /// (`None`: the remote's record is taken as is).
    pub fn sync_target(comparison: &Comparison, me: &str) -> (SharedRecord, Option<&'static str>) {
        match (comparison.direction, &comparison.remote) {
            (Direction::Diverged, Some(remote)) => {
                let merged = shared::merge(
                    comparison.base.as_ref(),
                    &comparison.local,
                    remote,
                    Some(me),
                    Strategy::Merge,
                );
                (merged, Some("sync"))
            }
            (Direction::RemoteAhead, Some(remote)) => (remote.clone(), None),
            _ => (comparison.local.clone(), None),
        }
    }

    /// The first phase of `stead sync`, before its apply: stop on undecided
    /// conflicts; update the tree (nothing of the record is touched until it
    /// updated cleanly); settle the local state and the record on the merge.
    pub fn merge(
        &self,
        guard: &LockGuard,
        state: State,
        records: &Records,
        comparison: &Comparison,
        on_step: &mut dyn FnMut(Step),
    ) -> Result<Merged, SyncError> {
        if comparison.undecided().next().is_some() {
            return Ok(Merged::Undecided);
        }
        if let Some(files) = self.update_tree(records, "stead sync")? {
            return Ok(Merged::TreeConflicts(files));
        }
        on_step(Step::TreeUpdated);
        if comparison.direction == Direction::Diverged && comparison.remote.is_some() {
            on_step(Step::Merging);
        }
        let (target, operation) = Self::sync_target(comparison, &state.machine.id);
        let (state, _) = self.settle(
            guard,
            state,
            &target,
            operation,
            records.remote_rev.as_ref(),
        )?;
        Ok(Merged::Settled {
            state: Box::new(state),
            target: Box::new(target),
        })
    }

    /// The second phase of `stead sync`, after its apply: whatever the local
    /// state now holds (even after a failed apply) is folded into the record,
    /// committed and published. The record is shared even when applying
    /// failed: it is true either way, and the other machines need it.
    /// A machine that has nothing else to publish still says it is there,
    /// once an hour ([`shared::mark_seen`], at `now`). When the record has
    /// news, this machine's entry carries its drift count as `drift_of` says
    /// for the state now (the caller's drift check, run only then:
    /// [`shared::carry_drift`]).
    pub fn finish(
        &self,
        now: DateTime<Utc>,
        drift_of: &dyn Fn(&State) -> Option<u64>,
    ) -> Result<Finished, SyncError> {
        let state = self.store.load_current()?;
        let key = self.record_key()?;
        let mut record = shared::fold(
            self.backend.read_working()?.as_ref(),
            &state,
            &key,
            self.history_keep(),
        );
        shared::mark_seen(&mut record, &state.machine.id, now);
        let committed = self.backend.records()?.local;
        shared::carry_drift(&mut record, committed.as_ref(), &state.machine.id, || {
            drift_of(&state)
        });
        self.write_if_changed(&record)?;
        let lineage = self.lineage_paths()?;
        let committed = self.backend.commit(
            &lineage,
            &format!(
                "stead sync: {} at serial {}",
                state.machine.hostname, record.lineage.serial
            ),
        )?;
        let pushed = self.publish_if_ahead();
        Ok(Finished {
            record,
            committed,
            pushed,
        })
    }

    /// Makes the local state and the working copy of the record agree on
    /// `target` (a record that already holds everything this machine knows):
    /// the local state takes its lineage, members, history and this machine's
    /// entry, at its serial; then the working copy is `target` with the local
    /// state folded in. `operation` names the local write when it is one of
    /// its own (a merge or resolve); taking a record as is (`None`) is not.
    ///
    /// Returns the local state as written and the record as written.
    pub fn settle(
        &self,
        guard: &LockGuard,
        state: State,
        target: &SharedRecord,
        operation: Option<&str>,
        remote_rev: Option<&Revision>,
    ) -> Result<(State, SharedRecord), SyncError> {
        let key = self.record_key()?;
        let mut next = shared::adopt(&state, target, &key);
        let changed = next.lineage.id != state.lineage.id
            || next.lineage.machines != state.lineage.machines
            || self.kept_history(&next) != self.kept_history(&state)
            || next.active_profile != state.active_profile
            || next.config_path != state.config_path
            || next.checksums != state.checksums;
        let takes_serial = operation.is_none() && target.lineage.serial > state.lineage.serial;
        let state = if takes_serial || changed || operation.is_some() {
            // Taking a newer record as is keeps its serial, so both sides agree
            // on it; anything of this machine's own is a write of its own.
            let (serial, entry) = if takes_serial {
                (target.lineage.serial, None)
            } else {
                (
                    target
                        .lineage
                        .serial
                        .max(state.lineage.serial.saturating_add(1)),
                    Some(operation.unwrap_or("sync")),
                )
            };
            let remote_rev = remote_rev.map(Revision::as_str);
            next.last_sync = Some(Utc::now());
            next.sync.base_serial = Some(serial);
            next.sync.base_commit = remote_rev.map(str::to_string);
            next.lineage.git_commit = remote_rev.map(|c| c.chars().take(12).collect());
            self.store.commit_at(guard, &mut next, entry, serial)?;
            next
        } else {
            state
        };
        let record = shared::fold(Some(target), &state, &key, self.history_keep());
        self.write_if_changed(&record)?;
        Ok((state, record))
    }

    /// The ids of the history entries a write would keep (the newest, up to
    /// the cap). The shared record keeps every entry, so comparing whole
    /// histories would find news in every sync once it outgrows the cap.
    pub fn kept_history<'s>(&self, state: &'s State) -> Vec<&'s str> {
        kept_history(self.store, state)
    }

    /// Replaces the working copy when it differs.
    pub fn write_if_changed(&self, record: &SharedRecord) -> Result<bool, SyncError> {
        if self.backend.read_working()?.as_ref() == Some(record) {
            return Ok(false);
        }
        self.backend.write_working(record)?;
        Ok(true)
    }

    /// Commits the record and `extra` files (`None`: nothing to commit).
    pub fn commit_record(
        &self,
        extra: &[&str],
        message: &str,
    ) -> Result<Option<Revision>, SyncError> {
        let mut paths = extra.to_vec();
        paths.extend(self.lineage_paths()?);
        self.backend.commit(&paths, message)
    }

    /// Publishes this machine's age recipient in the config tree
    /// (`.stead/recipients/<machine-id>`, so that lineage secrets are
    /// encrypted to it) and returns the lineage's files a commit takes
    /// with the record: the members' recipients and the lineage secrets.
    pub fn lineage_paths(&self) -> Result<Vec<&'static str>, SyncError> {
        let root = self.backend.root();
        if !self.backend.tree_on_disk() {
            return Ok(Vec::new());
        }
        let layout = self.store.layout();
        let machine_id = machine::load_or_create_id(layout)?;
        let secrets = crate::secret::Secrets::open(layout, true)?;
        if let Some(recipient) = secrets.recipient() {
            crate::secret::publish_recipient(root, &machine_id, &recipient)?;
        }
        Ok([
            crate::secret::RECIPIENTS_DIR,
            crate::secret::LINEAGE_SECRETS_DIR,
        ]
        .into_iter()
        .filter(|d| root.join(d).exists())
        .collect())
    }

    /// Publishes when the local copy has revisions the remote lacks, on the
    /// remote revision last refreshed. A refusal (the remote moved
    /// meanwhile) is [`SyncError::PublishRejected`], which says to sync again.
    pub fn publish_if_ahead(&self) -> Result<bool, SyncError> {
        let expected = self.backend.remote_revision()?;
        Ok(match self.backend.publish(expected.as_ref())? {
            Published::Pushed(_) => true,
            Published::NothingNew => false,
        })
    }
}

impl Session<'_> {
    /// `init --repo`: join the lineage of the tree's record (or start one),
    /// this machine's own values winning (the profile asked for, the clone
    /// it is in); a machine id removed from the lineage is replaced first
    /// (in `layout`), since the machine is in use again. The local state is
    /// written and the record committed (the next sync publishes it).
    pub fn join(
        &self,
        guard: &LockGuard,
        layout: &Layout,
        request: JoinRequest,
        stead_exe: &Path,
    ) -> Result<Joined, SyncError> {
        let shared_rec = self.backend.read_working()?;
        let remote_rec = self.backend.records()?.remote;
        // Before anything is written (a retired id is replaced below).
        if let Some(asked) = &request.lineage {
            self.check_lineage(asked, shared_rec.as_ref(), request.existing.as_ref())?;
        }
        let mut machine_id = request.machine_id.clone();
        let mut retired_id = None;
        if [&shared_rec, &remote_rec]
            .into_iter()
            .flatten()
            .any(|rec| rec.is_retired(&machine_id))
        {
            let fresh = machine::replace_id(layout)?;
            retired_id = Some(std::mem::replace(&mut machine_id, fresh));
        }
        let mut state = request.existing.clone().unwrap_or_else(|| {
            let mut fresh = State::new(MachineInfo::current(&machine_id));
            // A lineage started under the id asked for (one moved from
            // another store keeps its id).
            if let Some(asked) = &request.lineage {
                fresh.lineage.id = asked.clone();
            }
            fresh
        });
        if retired_id.is_some() {
            state.machine = MachineInfo::current(&machine_id);
        }
        let (status, state) =
            self.join_state(guard, state, &machine_id, shared_rec.as_ref(), &request)?;
        let record = shared::fold(
            shared_rec.as_ref(),
            &state,
            &self.record_key()?,
            self.history_keep(),
        );
        self.write_if_changed(&record)?;
        self.backend.install_merge_driver(stead_exe)?;
        let message = match status {
            JoinStatus::Started => format!(
                "stead: start lineage {} on {}",
                state.lineage.id, state.machine.hostname
            ),
            JoinStatus::Joined => format!("stead: {} joins the lineage", state.machine.hostname),
            _ => format!("stead: {} updates its record", state.machine.hostname),
        };
        let lineage = self.lineage_paths()?;
        let commit = self.backend.commit(&lineage, &message)?;
        Ok(Joined {
            status,
            state,
            record,
            commit,
            retired_id,
        })
    }

    /// Refuses `init --lineage asked` when the record holds another
    /// lineage, or when no record does and this machine's state belongs to
    /// another (it would start that one instead).
    fn check_lineage(
        &self,
        asked: &str,
        shared_rec: Option<&SharedRecord>,
        existing: Option<&State>,
    ) -> Result<(), SyncError> {
        let (place, found) = match (shared_rec, existing) {
            (Some(rec), _) => (self.backend.remote_branch(), &rec.lineage.id),
            (None, Some(state)) => (
                format!("this machine's state ({})", self.store.path().display()),
                &state.lineage.id,
            ),
            (None, None) => return Ok(()),
        };
        if found == asked {
            return Ok(());
        }
        Err(SyncError::WrongLineage {
            place,
            found: found.clone(),
            asked: asked.to_string(),
        })
    }

    /// The local state after joining `shared_rec` (or starting a lineage),
    /// written unless nothing changed.
    fn join_state(
        &self,
        guard: &LockGuard,
        mut state: State,
        machine_id: &str,
        shared_rec: Option<&SharedRecord>,
        request: &JoinRequest,
    ) -> Result<(JoinStatus, State), SyncError> {
        let profile = request
            .profile
            .clone()
            .or_else(|| state.active_profile.clone());
        let before = state.clone();
        let existing = request.existing.is_some();
        let Some(rec) = shared_rec else {
            state.active_profile = profile;
            state.config_path = Some(request.root.clone());
            state.repo_url = Some(request.url.clone());
            if existing && state == before {
                return Ok((JoinStatus::Unchanged, state));
            }
            self.store.commit(guard, &mut state, "init")?;
            return Ok((JoinStatus::Started, state));
        };
        let member = rec.lineage.id == state.lineage.id
            && rec.lineage.machines.iter().any(|m| m == machine_id);
        // This machine's own values win on joining: the profile asked for,
        // and the clone it is in.
        let checksums = state.checksums.clone();
        state = shared::adopt(&state, rec, &self.record_key()?);
        state.checksums = checksums;
        state.active_profile = profile;
        state.config_path = Some(request.root.clone());
        state.repo_url = Some(request.url.clone());
        let unchanged = member
            && existing
            && state.active_profile == before.active_profile
            && state.config_path == before.config_path
            && state.repo_url == before.repo_url
            && self.kept_history(&state) == self.kept_history(&before);
        if unchanged {
            return Ok((JoinStatus::Unchanged, before));
        }
        let serial = rec
            .lineage
            .serial
            .max(state.lineage.serial)
            .saturating_add(1);
        let op = if member { "init" } else { "join" };
        self.store.commit_at(guard, &mut state, Some(op), serial)?;
        let status = if member {
            JoinStatus::Updated
        } else {
            JoinStatus::Joined
        };
        Ok((status, state))
    }
}

/// [`Session::kept_history`] for a store.
pub fn kept_history<'s>(store: &StateStore, state: &'s State) -> Vec<&'s str> {
    let mut ids: Vec<&str> = state.history.iter().map(|e| e.id.as_str()).collect();
    let excess = ids.len().saturating_sub(store.history_limit());
    ids.drain(..excess);
    ids
}
