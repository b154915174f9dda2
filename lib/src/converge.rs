//! The converge transaction: everything between "the lock is held" and "the
//! outcome is recorded", in one place for every front end (`stead plan`,
//! `stead apply`, `stead sync`, a daemon).
//!
//! [`prepare`] reads the journal (an interrupted run, one-shot steps,
//! pending refreshes), then plans from the manifest or loads a saved plan
//! (refused when the state moved underneath it), and settles one-shots and
//! refreshes. It changes nothing, so `stead plan` uses it too.
//!
//! [`execute`] runs a prepared plan under the lock, in this order, which is
//! what makes it crash-safe (docs/architecture.md, "Crash invariants"):
//!
//! 1. `run-start` is durable in the journal;
//! 2. the engine runs the changes: each change's `started` record is durable
//!    before its side effect, its outcome durable before it is reported;
//! 3. the outcome is recorded into the state, and the state is committed
//!    (atomic rename, fsync'd);
//! 4. only then is `run-end` durable: a crash before it leaves the run
//!    "interrupted" for the next one to recover;
//! 5. the journal is compacted last (once it holds [`journal::COMPACT_FROM`]
//!    bytes or more).
//!
//! The front end receives progress through a [`Reporter`] and cancels the
//! run through the [`RunControl`]'s [`crate::run::CancelHandle`].

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::engine::{self, EngineOptions, Event, RunJournal};
use crate::fsutil;
use crate::graph::Graph;
use crate::journal::{self, JournalAction, JournalError, JournalWriter, OpState};
use crate::layout::Layout;
use crate::lock::LockGuard;
use crate::manifest::{LoadError, LoadOptions, Manifest, compiled};
use crate::outcome::Outcome;
use crate::plan::{self, Plan, PlanError};
use crate::run::RunControl;
use crate::stat_cache::StatCache;
use crate::state::{State, StateError, StateStore};

/// Changes read and applied in parallel by default.
pub const DEFAULT_JOBS: usize = 8;

/// Why a converge step could not go on. Nothing was changed unless the
/// variant says so.
#[derive(Debug, thiserror::Error)]
pub enum ConvergeError {
    /// Neither `--config`, the current directory nor the state names a
    /// config repo.
    #[error(
        "no config repo given\n\
         Pass --config DIR (the directory holding stead.toml), run stead inside the config repo, \
         or record one with 'stead init --path DIR'."
    )]
    NoConfig,
    /// The manifest did not load.
    #[error(transparent)]
    Manifest(#[from] LoadError),
    /// A choice for a check's item (`--choose`) cannot be taken.
    #[error(transparent)]
    Choose(#[from] crate::migration::ChooseError),
    /// This machine's identity or a secret could not be read or made.
    #[error(transparent)]
    Secret(#[from] crate::secret::SecretError),
    /// A saved plan cannot be read.
    #[error("cannot read the plan {}", path.display())]
    ReadPlan {
        /// The plan file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A saved plan is not JSON of a plan.
    #[error("{} is not a saved stead plan", path.display())]
    NotAPlan {
        /// The plan file.
        path: PathBuf,
        /// What the parser said.
        #[source]
        source: serde_json::Error,
    },
    /// A saved plan of another format version.
    #[error("{} has plan format {found}, this stead reads format {}", path.display(), plan::PLAN_FORMAT)]
    PlanFormat {
        /// The plan file.
        path: PathBuf,
        /// Its format.
        found: u32,
    },
    /// The state moved since the saved plan was made.
    #[error(
        "the saved plan {path} is stale: it was made at state serial {plan_serial}, and the state is now at serial {state_serial}{lineage}\n\
         Nothing was changed. Run 'stead plan --out {path}' again and review the new plan.",
        path = .path.display(),
        lineage = if *.other_lineage { " of another lineage" } else { "" }
    )]
    StalePlan {
        /// The plan file.
        path: PathBuf,
        /// The serial it was made at.
        plan_serial: u64,
        /// The serial now.
        state_serial: u64,
        /// It was made for another lineage altogether.
        other_lineage: bool,
    },
    /// A sensitive file's content, which a saved plan does not hold, no
    /// longer renders to what was planned.
    #[error(
        "the saved plan {path} writes the sensitive file {id}, whose content is not saved in it, and its source no longer gives what was planned\n\
         Nothing was changed. Run 'stead plan --out {path}' again and review the new plan.",
        path = .path.display()
    )]
    SensitiveChanged {
        /// The plan file.
        path: PathBuf,
        /// The resource.
        id: String,
    },
    /// A path a saved plan acts on is not what it was when the plan was made.
    #[error(
        "the saved plan {path} planned {target} when it was {was}; it is {now} now\n\
         Nothing was changed. Run 'stead plan --out {path}' again and review the new plan.",
        path = .path.display()
    )]
    PlanTargetChanged {
        /// The plan file.
        path: PathBuf,
        /// The target, as shown in the plan (`~/x`).
        target: String,
        /// What was there then.
        was: String,
        /// What is there now.
        now: String,
    },
    /// `--rerun` names nothing that can be rerun.
    #[error(
        "--rerun {0}: the plan has no one-shot exec or migration step by that name (an exec with once = true or an idempotency_key, or check.CHECK/ITEM/STEP, that would run)"
    )]
    UnknownRerun(String),
    /// Reading a resource failed.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The journal could not be read or written.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The state could not be written.
    #[error(transparent)]
    State(#[from] StateError),
    /// The machine was changed but its record could not be written after:
    /// what was done is in the journal, and the next apply records it.
    #[error(
        "{changed} change{s} {were} applied to this machine, but the state record could not be written: {source}\n\
         Nothing is lost: the journal holds what was done, and the next 'stead apply' re-reads every \
         resource and records it (its run is reported as interrupted). Fix the cause (disk space, \
         permissions of the state dir), then run 'stead apply'.",
        s = if *.changed == 1 { "" } else { "s" },
        were = if *.changed == 1 { "was" } else { "were" }
    )]
    NotRecorded {
        /// How many changes were applied.
        changed: usize,
        /// Why the record could not be written.
        #[source]
        source: StateError,
    },
}

/// A run that started and never ended (the process died or was killed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterruptedRun {
    /// Its id.
    pub run_id: String,
    /// When it started.
    pub started: DateTime<Utc>,
    /// Operations it started and never finished.
    pub in_flight: usize,
}

/// What the journal says before a run.
#[derive(Debug, Clone, Default)]
pub struct JournalView {
    /// A run that never ended.
    pub interrupted: Option<InterruptedRun>,
    /// One-shot steps: done, unfinished, asked to rerun.
    pub one_shots: plan::OneShots,
    /// Resources the interrupted run finished (to record as owned).
    pub recovered: HashSet<String>,
    /// `refresh_only` execs with a refresh that no run consumed yet.
    pub pending_refreshes: HashSet<String>,
    /// Bytes of a torn last line a crash left (ignored).
    pub torn_tail: Option<usize>,
    /// The journal's last run ended ([`journal::last_run_ended`]): no killed
    /// run's backup temps can be in the backups' run folders.
    pub last_run_ended: bool,
    /// What the view parsed, for the run's compaction of the journal
    /// ([`journal::compact_if_large_after`]).
    pub parsed: journal::Parsed,
}

/// Reads the journal (a torn last line is ignored; a corrupt middle is moved
/// aside to the backups dir and reported as an error that says where).
pub fn journal_view(layout: &Layout, rerun: &[String]) -> Result<JournalView, JournalError> {
    journal_view_with(layout, rerun, false)
}

fn journal_view_with(
    layout: &Layout,
    rerun: &[String],
    read_only: bool,
) -> Result<JournalView, JournalError> {
    let path = layout.state_dir().join(journal::JOURNAL_FILE);
    // Batch members matter only to an interrupted run's recovery: read
    // without them, and again with them when the last run did not end.
    let load = |members: bool| match (read_only, members) {
        (true, false) => journal::load_read_only_without_members(&path),
        (true, true) => journal::load_read_only(&path),
        (false, false) => journal::load_without_members(&path, &layout.backups_dir()),
        (false, true) => journal::load(&path, &layout.backups_dir()),
    };
    let mut loaded = load(false)?;
    if journal::interrupted_run(&loaded.records).is_some() {
        loaded = load(true)?;
    }
    let interrupted =
        journal::interrupted_run(&loaded.records).map(|(run_id, started)| InterruptedRun {
            in_flight: journal::in_flight(&loaded.records, &run_id)
                .iter()
                .map(|r| r.subjects().count())
                .sum(),
            run_id,
            started,
        });
    let recovered = interrupted
        .as_ref()
        .map(|run| {
            loaded
                .records
                .iter()
                .filter(|r| r.run_id == run.run_id && r.state == OpState::Succeeded)
                .flat_map(|r| r.subjects().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Ok(JournalView {
        pending_refreshes: journal::pending_refreshes(&loaded.records),
        interrupted,
        recovered,
        one_shots: plan::OneShots {
            succeeded: journal::succeeded_keys(&loaded.records),
            // Across runs: a step refused for `--rerun` stays refused until it runs.
            unfinished: journal::unfinished_keys(&loaded.records),
            rerun: rerun.iter().cloned().collect(),
        },
        torn_tail: loaded.torn_tail.as_ref().map(String::len),
        last_run_ended: journal::last_run_ended(&loaded.records),
        parsed: journal::Parsed::new(loaded),
    })
}

/// Receives what a converge does, as it happens (from several threads).
pub trait Reporter: Sync {
    /// The journal holds a run that never ended; this run recovers it.
    fn recovering(&self, _run: &InterruptedRun) {}
    /// A change started, was retried, or finished.
    fn event(&self, _event: Event) {}
    /// [`recover_temps`] removed a temp file a killed run left at `path`.
    fn removed_temp(&self, _path: &Path) {}
}

/// A reporter that shows nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Reporter for Silent {}

/// Where the plan comes from.
#[derive(Debug, Clone)]
pub enum PlanSource<'a> {
    /// A plan saved by `stead plan --out`; refused if the state moved.
    Saved(&'a Path),
    /// The manifest of a config repo.
    Manifest {
        /// `--config`, else the config repo recorded in the state.
        config: Option<&'a Path>,
        /// `--profile`, else the one recorded in the state.
        profile: Option<&'a str>,
        /// Replace what stead does not own (after a backup).
        force: bool,
    },
}

/// What to prepare.
#[derive(Debug, Clone)]
pub struct PrepareOptions<'a> {
    /// The plan's source.
    pub source: PlanSource<'a>,
    /// Resources read at once.
    pub jobs: usize,
    /// One-shot execs to run again (`--rerun`).
    pub rerun: &'a [String],
    /// How files are checked: by the stat cache where it vouches, or
    /// (`verify`) every file read whole.
    pub check: FileCheck,
    /// Make a converged seal ([`crate::seal`]) of an unchanged plan, for
    /// this request (`None`: none is made; `--verify` and `--rerun` make
    /// none either).
    pub seal: Option<crate::seal::Request<'a>>,
    /// What settling the checks needs: this boot, and `--choose`.
    pub checks: CheckOptions<'a>,
    /// Plan only these resources and what waits for them (watch mode's
    /// re-plan of what changed; `None`: the whole manifest). Such a plan
    /// removes nothing and leaves checks as they are.
    pub only: Option<&'a HashSet<String>>,
    /// What a converged seal that no longer holds still vouches for
    /// ([`crate::seal::Check::Drifted`]): plan only its resources and what
    /// waits for them, as `only` does, and count the rest unchanged.
    pub drift: Option<&'a crate::seal::Drift>,
    /// The read of `drift`'s compiled manifest, started early
    /// ([`CompiledRead::start`]; `None`: read it here when needed).
    pub compiled: Option<&'a CompiledRead>,
}

/// What the checks of a plan need from the front end.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions<'a> {
    /// This boot's id (a step after a reboot step waits for another one);
    /// `None`: unknown, so no reboot can be proven.
    pub boot_id: Option<String>,
    /// Choices for this run (`--choose CHECK/ITEM=STEP`, a prompt).
    pub choose: &'a [crate::migration::Answer],
}

impl CheckOptions<'_> {
    /// This boot, no choice.
    pub fn this_boot() -> CheckOptions<'static> {
        CheckOptions {
            boot_id: crate::machine::boot_id(),
            choose: &[],
        }
    }
}

/// How a plan checks managed files (see [`crate::stat_cache`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileCheck {
    /// Read every file whole and trust none (`--verify`); what is found
    /// right is recorded for the next run all the same.
    pub verify: bool,
    /// The verification time to record, ns since the epoch (`None`: the
    /// clock; tests move it past the racy window).
    pub now_ns: Option<i128>,
}

/// A plan ready to show and execute, and what the journal said.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The plan, one-shots and refreshes settled.
    pub plan: Plan,
    /// The journal before the run.
    pub view: JournalView,
    /// The profile the plan was made for (recorded when it is applied).
    pub profile: Option<String>,
    /// A seal of the plan, when it changes nothing and every resource can
    /// be vouched for by the stat of its paths; [`record_unchanged`] writes
    /// it when the run records nothing.
    pub seal: Option<crate::seal::Draft>,
    /// This machine's secrets, as the plan read them (the run writes with
    /// the same).
    pub secrets: crate::secret::Secrets,
    /// The boot the plan was made in (recorded with the migration steps
    /// that run).
    pub boot_id: Option<String>,
    /// The manifest was the compiled form a drifted seal named, not
    /// `stead.toml` parsed again.
    pub from_compiled: bool,
    /// The plan is a drifted seal's (`PrepareOptions::drift`): the journal,
    /// the manifest and the record are as the apply that sealed left them.
    pub from_seal: bool,
    /// The manifest the plan was made from, kept by [`prepare_read_only`]
    /// (a front end that shows more than the plan needs it too), not by
    /// [`prepare`].
    pub manifest: Option<Manifest>,
}

/// Reads the journal (telling `reporter` about an interrupted run), then
/// plans or loads the saved plan, and settles one-shot steps and refreshes.
/// Changes nothing; needs no lock (but a plan made without one may be stale
/// by the time it is applied: [`execute`] must run under the lock, on a
/// plan prepared under it).
pub fn prepare(
    layout: &Layout,
    state: &State,
    options: &PrepareOptions,
    reporter: &dyn Reporter,
) -> Result<Prepared, ConvergeError> {
    prepare_with(layout, state, options, reporter, false)
}

/// [`prepare`] that writes nothing at all, for `plan` and dry runs (which
/// promise to change nothing): a corrupt journal is an error and stays where
/// it is, instead of being moved aside.
pub fn prepare_read_only(
    layout: &Layout,
    state: &State,
    options: &PrepareOptions,
    reporter: &dyn Reporter,
) -> Result<Prepared, ConvergeError> {
    prepare_with(layout, state, options, reporter, true)
}

fn prepare_with(
    layout: &Layout,
    state: &State,
    options: &PrepareOptions,
    reporter: &dyn Reporter,
    read_only: bool,
) -> Result<Prepared, ConvergeError> {
    let view = journal_view_with(layout, options.rerun, read_only)?;
    // An apply makes the machine's identity before it plans: the keyed
    // checksums of secret-bearing files it records are made with it.
    let mut secrets = crate::secret::Secrets::open(layout, !read_only)?;
    if let Some(run) = &view.interrupted {
        reporter.recovering(run);
    }
    let scope = options.only.or(options.drift.map(|d| &d.resources));
    // Before anything is read: a seal trusts only what had settled by then.
    let start_ns = options
        .check
        .now_ns
        .unwrap_or_else(crate::stat_cache::now_ns);
    let mut from_compiled = false;
    let (mut plan, profile, draft, manifest) = match &options.source {
        PlanSource::Saved(file) => {
            let mut plan = load_saved(file, state)?;
            secrets = secrets.with_config(&plan.config_dir);
            restore_sensitive(layout, file, state, &mut plan)?;
            let profile = plan.profile.clone();
            (plan, profile, None, None)
        }
        PlanSource::Manifest {
            config,
            profile,
            force,
        } => {
            // A run that changes something plans the drift and nothing else:
            // it reads only that part. One that shows more than its plan
            // (`plan`, `status`), or is asked for another scope, reads the
            // whole.
            let compiled = options.drift.and_then(|d| {
                let digest = d.compiled.as_ref()?;
                if read_only || options.only.is_some() {
                    return load_compiled(layout.state_dir(), digest);
                }
                options
                    .compiled
                    .and_then(|read| read.take(digest, &d.resources))
                    .or_else(|| load_scope(layout.state_dir(), digest, &d.resources))
            });
            from_compiled = compiled.is_some();
            let (manifest, graph) = match compiled {
                Some(loaded) => loaded,
                None => load_manifest(layout, *config, Some(state), *profile)?,
            };
            // Lineage secrets live in the config repo.
            secrets = secrets.with_config(&manifest.config_dir);
            // A shared record is read for the retired-machine check on every
            // apply; what it rests on is not the stat of a few paths.
            let draft = options
                .seal
                .as_ref()
                .filter(|_| {
                    !options.check.verify
                        && options.rerun.is_empty()
                        && scope.is_none()
                        && state.repo_url.is_none()
                })
                .and_then(|request| {
                    seal_draft(layout, request, &manifest, state.lineage.serial, start_ns)
                })
                .map(|draft| {
                    // Only a cache: a compiled form that cannot be written
                    // costs a later repair its parse, nothing else.
                    let compiled = if read_only {
                        None
                    } else {
                        let markers = crate::resource::markers_of(&manifest.resources);
                        let kept = compiled::Kept {
                            edges: &graph.packed_edges(),
                            order: &graph.order,
                            markers: &markers,
                        };
                        compiled::refresh(layout.state_dir(), &manifest, kept)
                            .ok()
                            .flatten()
                    };
                    draft.with_compiled(compiled)
                });
            // --verify trusts nothing but still records what it read, so
            // the next run can trust it. What a drifted seal leaves to plan
            // changed since: the cache cannot vouch for it.
            let cache = if options.check.verify || options.drift.is_some() {
                StatCache::empty()
            } else {
                StatCache::load(layout.state_dir())
            };
            let now = options.check.now_ns;
            let only = scope.map(|ids| graph.with_dependents(ids));
            let mut plan = plan::make_scoped(
                &manifest,
                &graph,
                state,
                *force,
                options.jobs.max(1),
                Some((&cache, now)),
                &view.recovered,
                &secrets,
                only.as_ref(),
            )?;
            if let Some(drift) = options.drift {
                plan.vouched = drift.sealed.saturating_sub(plan.changes.len());
            }
            let profile = manifest.profile.clone();
            // An apply lets it go now, as before it kept nothing: at
            // 100 000 resources it is tens of MB its run goes on without.
            (plan, profile, draft, read_only.then_some(manifest))
        }
    };
    if matches!(options.source, PlanSource::Manifest { .. }) && scope.is_none() {
        let user = crate::machine::current_user();
        crate::migration::settle(
            &mut plan,
            state,
            &crate::migration::SettleOptions {
                now: Utc::now(),
                user: &user,
                boot_id: options.checks.boot_id.as_deref(),
                choices: options.checks.choose,
            },
        )?;
    }
    check_rerun(&plan, options.rerun)?;
    plan::settle_one_shots(&mut plan, &view.one_shots);
    plan::settle_refreshes(&mut plan, &view.pending_refreshes);
    let clean_journal = view.interrupted.is_none() && view.torn_tail.is_none();
    let seal = draft.filter(|_| plan.is_empty() && clean_journal);
    Ok(Prepared {
        plan,
        view,
        profile,
        seal,
        secrets,
        boot_id: options.checks.boot_id.clone(),
        from_compiled,
        manifest,
        from_seal: options.drift.is_some() && matches!(options.source, PlanSource::Manifest { .. }),
    })
}

/// The compiled manifest a drifted seal names, with its graph, if it is
/// there and whole ([`compiled::read`]).
fn load_compiled(state_dir: &Path, digest: &compiled::Digest) -> Option<Compiled> {
    let (manifest, edges) = compiled::read_with_edges(state_dir, digest)?;
    let graph = Graph::from_packed(&manifest, edges)?;
    Some((manifest, graph))
}

/// The part of that compiled manifest a repair of `drifted` plans, with its
/// graph ([`compiled::read_scope`]). The part's resources come in the whole
/// graph's order, which is then the part's own order too (it orders by
/// place among ready nodes, and the part's edges are the whole's among its
/// nodes): anything else is no part, and the run reads the manifest whole.
fn load_scope(
    state_dir: &Path,
    digest: &compiled::Digest,
    drifted: &HashSet<String>,
) -> Option<Compiled> {
    let (manifest, edges) = compiled::read_scope(state_dir, digest, drifted)?;
    let graph = Graph::from_packed(&manifest, edges)?;
    let in_place = graph.order.iter().enumerate().all(|(at, &node)| at == node);
    in_place.then_some((manifest, graph))
}

/// The part of a drifted seal's compiled manifest that the drift plans
/// ([`compiled::read_scope`]) and its graph, read on a thread of its own
/// from the moment the drift is known: a repair needs both it and the
/// state record, and neither read needs the other (docs/performance.md,
/// "A 1% drift repair, fourth pass"). Given to [`prepare`] as
/// [`PrepareOptions::compiled`] with the same drift; dropped unused, the
/// read ends on its own (it only reads).
#[derive(Debug)]
pub struct CompiledRead {
    digest: compiled::Digest,
    drifted: HashSet<String>,
    reading: std::sync::Mutex<Option<std::thread::JoinHandle<Option<Compiled>>>>,
}

/// A compiled manifest and its graph.
type Compiled = (Manifest, Graph);

impl CompiledRead {
    /// Starts reading the compiled manifest `drift` names; `None` when it
    /// names none, or no thread could be started ([`prepare`] then reads
    /// it itself).
    pub fn start(layout: &Layout, drift: &crate::seal::Drift) -> Option<CompiledRead> {
        let digest = drift.compiled?;
        let state_dir = layout.state_dir().to_path_buf();
        let drifted = drift.resources.clone();
        let reading = std::thread::Builder::new()
            .name("compiled-read".to_string())
            .spawn(move || load_scope(&state_dir, &digest, &drifted))
            .ok()?;
        Some(CompiledRead {
            digest,
            drifted: drift.resources.clone(),
            reading: std::sync::Mutex::new(Some(reading)),
        })
    }

    /// What the read found for the drift of `drifted` in the compiled form
    /// `digest`, once (`None` after that, for another drift, when it found
    /// nothing whole, or when its thread panicked).
    fn take(&self, digest: &compiled::Digest, drifted: &HashSet<String>) -> Option<Compiled> {
        if self.digest != *digest || self.drifted != *drifted {
            return None;
        }
        let reading = self.reading.lock().ok()?.take()?;
        reading.join().ok().flatten()
    }
}

/// The key a converged seal is made for and checked against
/// ([`crate::seal::Key`]): what the run was asked, where stead keeps
/// things, who runs it, and the machine facts templates and profiles see.
pub fn seal_key(layout: &Layout, request: &crate::seal::Request) -> crate::seal::Key {
    use std::os::unix::ffi::OsStrExt;
    let facts = crate::resource::Facts::current(layout.home());
    let mut h = blake3::Hasher::new();
    let mut part = |bytes: &[u8]| {
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    part(&crate::seal::FORMAT.to_le_bytes());
    part(env!("CARGO_PKG_VERSION").as_bytes());
    part(layout.home().as_os_str().as_bytes());
    part(layout.state_dir().as_os_str().as_bytes());
    part(request.config.map_or(&[][..], |c| c.as_os_str().as_bytes()));
    part(&[u8::from(request.config.is_some())]);
    part(request.profile.unwrap_or("").as_bytes());
    part(&[u8::from(request.profile.is_some())]);
    part(&nix::unistd::geteuid().as_raw().to_le_bytes());
    part(&serde_json::to_vec(&facts).unwrap_or_default());
    *h.finalize().as_bytes()
}

/// A seal in the making for a plan of `manifest` ([`crate::seal`]): the
/// state record, the journal, the running binary and `stead.toml`; each
/// resource's own paths ([`crate::resource::kind::ResourceKind::seal_paths`],
/// named as that resource's, so that a run that finds only those changed
/// plans only it: [`crate::seal::Check::Drifted`]);
/// every directory above a managed path; every link the load followed and
/// the directories above it. `None` when a resource cannot be vouched for
/// by the stat of its paths.
pub fn seal_draft(
    layout: &Layout,
    request: &crate::seal::Request,
    manifest: &Manifest,
    serial: u64,
    start_ns: i128,
) -> Option<crate::seal::Draft> {
    use crate::seal::SealPath;
    // Sized for a path per resource: grown by doubling, the list held up
    // to twice that.
    let mut paths = Vec::with_capacity(4 + manifest.resources.len());
    paths.extend([
        SealPath::content(&layout.state_file()),
        SealPath::content(&journal_path(layout)),
        SealPath::content(&std::env::current_exe().ok()?),
        SealPath::content(&manifest.path),
    ]);
    let mut seen: HashSet<&Path> = HashSet::new();
    for (number, resource) in (0u32..).zip(&manifest.resources) {
        let kind = crate::resource::registry::get(resource.spec.kind());
        let own = kind.seal_paths(&resource.spec)?;
        paths.extend(own.into_iter().map(|p| p.owned_by(number)));
        if let Some(managed) = resource.spec.path() {
            seal_ancestors(managed.ancestors().skip(1), &mut seen, &mut paths);
        }
    }
    // The links the load followed decided where the paths lead: each must
    // still be the same link. By every stat field: a link made anew may get
    // the freed inode number of the one it replaces, but not its ctime.
    for link in &manifest.followed_links {
        paths.push(SealPath::content(link));
        seal_ancestors(link.ancestors().skip(1), &mut seen, &mut paths);
    }
    Some(crate::seal::Draft::begin(
        seal_key(layout, request),
        serial,
        start_ns,
        paths,
        manifest.resources.iter().map(|r| r.id.as_str()),
    ))
}

/// Adds each of `dirs` (a path's ancestors, nearest first) as a node, up to
/// the first one already added (whose own ancestors are then added too).
fn seal_ancestors<'m>(
    dirs: impl Iterator<Item = &'m Path>,
    seen: &mut HashSet<&'m Path>,
    paths: &mut Vec<crate::seal::SealPath>,
) {
    for dir in dirs {
        if !seen.insert(dir) {
            break;
        }
        paths.push(crate::seal::SealPath::node(dir));
    }
}

/// [`fsutil::remove_stale_temps`] in each directory of `dirs`, of the
/// names given for it, on a few threads: reading a hundred directories of
/// a hundred entries each is most of what a small repair's sweep costs.
fn sweep_dirs(dirs: &[(PathBuf, Vec<&str>)]) -> Vec<PathBuf> {
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, 8)
        .min(dirs.len().div_ceil(16).max(1));
    crate::parallel::map(dirs, threads, |(dir, names)| {
        Ok(fsutil::remove_stale_temps(dir, Some(names)))
    })
    .into_iter()
    // A thread that panicked only loses the report of its part.
    .flat_map(Result::unwrap_or_default)
    .collect()
}

/// Removes the temp files that killed writers left (a SIGKILL between a
/// temp's creation and its rename), telling `reporter` about each, and
/// returns them. Only names stead makes whose writer is gone count
/// ([`fsutil::stale_temp_target`]): in the state dir and the backups dir;
/// below the config repo (where a killed `stead commit` or `stead add`
/// leaves one that `git add -A` would commit); next to every path the state
/// or the plan names (temps of that name only), but for a drifted seal's
/// plan; and below the backups' run folders when a run may have been cut
/// short.
///
/// Only a run writes in the run folders, each after journaling its start
/// durably, and every run that finds an interrupted one comes here before
/// it writes or compacts the journal: so a temp in a run folder means the
/// journal shows the run that left it, or shows nothing at all, and they
/// are walked only then (they grow with every backup the machine ever
/// made). Next to managed paths a run, or `stead add` replacing a path by a
/// link, writes; neither can have since an apply sealed the machine
/// converged (after looking there) without changing the journal or the
/// manifest, which breaks the seal: a drifted seal's plan (a repair of what
/// a user changed) does not read every managed directory, which took about
/// as long as planning a small repair (docs/performance.md). A config repo
/// that holds the home is not walked (that would walk the whole home), so
/// with one the managed paths are read by every run.
///
/// Call it under the lock, before executing: no writer of this machine's
/// paths can be running then.
pub fn recover_temps(
    layout: &Layout,
    state: &State,
    prepared: &Prepared,
    reporter: &dyn Reporter,
) -> Vec<PathBuf> {
    let plan = &prepared.plan;
    let repo_holds_home = plan.home.starts_with(&plan.config_dir);
    let mut removed = Vec::new();
    if !prepared.from_seal || repo_holds_home {
        removed.extend(sweep_managed(layout, state, plan));
    }
    removed.extend(fsutil::remove_stale_temps(layout.state_dir(), None));
    removed.extend(if prepared.view.last_run_ended {
        fsutil::remove_stale_temps(&layout.backups_dir(), None)
    } else {
        fsutil::remove_stale_temps_below(&layout.backups_dir())
    });
    if !repo_holds_home {
        removed.extend(fsutil::remove_stale_temps_below(&plan.config_dir));
    }
    for path in &removed {
        reporter.removed_temp(path);
    }
    removed
}

/// The temps next to every path `state` records (in this layout's home)
/// and every path `plan` names (in the plan's home, which a saved plan
/// made for another home may not share), each directory read once.
fn sweep_managed(layout: &Layout, state: &State, plan: &Plan) -> Vec<PathBuf> {
    // A record read in part: the keys of its entries still in the text too.
    let unread: Vec<String> = state.unread_records().flat_map(|(_, r)| r.keys).collect();
    let recorded = || {
        state
            .resources
            .values()
            .flat_map(|r| r.keys.iter())
            .chain(&unread)
    };
    let mut removed = sweep_keys(layout.home(), recorded());
    if plan.home == layout.home() {
        // A change of a recorded resource with the keys it has on record
        // was swept with the record.
        let unswept = plan
            .changes
            .iter()
            .filter(|c| state.record_of(&c.id).is_none_or(|r| r.keys != c.keys))
            .flat_map(|c| c.keys.iter());
        removed.extend(sweep_keys(&plan.home, unswept));
    } else {
        let planned = plan.changes.iter().flat_map(|c| c.keys.iter());
        removed.extend(sweep_keys(&plan.home, recorded().chain(planned)));
    }
    removed
}

/// Removes the stale temps of each of `keys` (expanded in `home`) in its
/// directory, each directory read once.
fn sweep_keys<'k>(home: &Path, keys: impl Iterator<Item = &'k String>) -> Vec<PathBuf> {
    use std::collections::{BTreeMap, HashMap, btree_map::Entry};
    // Keys are grouped by their text before the last `/` (cheap), and each
    // group's directory expanded once: expanding only rewrites a leading
    // `~`, so keys with the same text there are in the same directory. The
    // names are borrowed from the keys, and each group's list is moved,
    // not copied: at 100 000 files these lists are 1.6 MB.
    let mut by_prefix: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut alone: Vec<PathBuf> = Vec::new();
    for key in keys {
        match key.rsplit_once('/') {
            Some((prefix, name)) if !matches!(name, "" | "." | "..") => {
                by_prefix.entry(prefix).or_default().push(name);
            }
            _ => alone.push(crate::manifest::expand_key(home, key)),
        }
    }
    let mut next_to: BTreeMap<PathBuf, Vec<&str>> = BTreeMap::new();
    for (prefix, names) in by_prefix {
        let sample = crate::manifest::expand_key(home, &format!("{prefix}/{}", names[0]));
        if let Some(dir) = sample.parent() {
            match next_to.entry(dir.to_path_buf()) {
                Entry::Vacant(entry) => {
                    entry.insert(names);
                }
                Entry::Occupied(mut entry) => entry.get_mut().extend(names),
            }
        }
    }
    for path in &alone {
        if let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str()))
        {
            next_to.entry(dir.to_path_buf()).or_default().push(name);
        }
    }
    let dirs: Vec<(PathBuf, Vec<&str>)> = next_to.into_iter().collect();
    sweep_dirs(&dirs)
}

/// The config repo: `config` (`--config`), else the one recorded in `state`.
pub fn config_dir(config: Option<&Path>, state: Option<&State>) -> Result<PathBuf, ConvergeError> {
    if let Some(c) = config {
        return Ok(c.to_path_buf());
    }
    state
        .and_then(|s| s.config_path.as_ref())
        .map(PathBuf::from)
        .ok_or(ConvergeError::NoConfig)
}

/// The config repo the directory `start` is in: `start` or its nearest
/// ancestor holding a `stead.toml` that is a regular file (a link or a
/// directory of that name does not make a config repo). `None` when there is
/// none up to `/`.
pub fn discover_config(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .find(|dir| {
            std::fs::symlink_metadata(dir.join(crate::manifest::MANIFEST_FILE))
                .is_ok_and(|m| m.file_type().is_file())
        })
        .map(Path::to_path_buf)
}

/// The profiles the manifest in `config_dir` declares, whatever else is
/// wrong in it (an unknown default profile, say). `Ok(None)`: there is no
/// `stead.toml` there.
pub fn declared_profiles(
    config_dir: &Path,
    home: &Path,
) -> Result<Option<std::collections::BTreeSet<String>>, crate::manifest::LoadError> {
    let options = LoadOptions {
        home: home.to_path_buf(),
        profile: None,
        kinds: &crate::resource::registry::REGISTRY,
    };
    match Manifest::read(config_dir, &options) {
        Ok(parsed) => Ok(Some(parsed.manifest.profiles)),
        Err(crate::manifest::LoadError::Read { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Loads the manifest of the config repo for `profile` (else the recorded
/// one) and builds its graph (a dependency cycle is one of the manifest's
/// problems). The state dir is protected: no resource may write into it.
pub fn load_manifest(
    layout: &Layout,
    config: Option<&Path>,
    state: Option<&State>,
    profile: Option<&str>,
) -> Result<(Manifest, Graph), ConvergeError> {
    let dir = config_dir(config, state)?;
    let profile = profile
        .map(str::to_string)
        .or_else(|| state.and_then(|s| s.active_profile.clone()));
    let (mut manifest, graph) = crate::graph::load(
        &dir,
        &LoadOptions {
            home: layout.home().to_path_buf(),
            profile,
            kinds: &crate::resource::registry::REGISTRY,
        },
    )?;
    manifest.protected.push(layout.state_dir().to_path_buf());
    Ok((manifest, graph))
}

fn load_saved(file: &Path, state: &State) -> Result<Plan, ConvergeError> {
    // A FIFO given as the plan must not hang apply: it is refused.
    let raw = crate::ownfile::read(file).map_err(|source| ConvergeError::ReadPlan {
        path: file.to_path_buf(),
        source,
    })?;
    let plan: Plan = serde_json::from_slice(&raw).map_err(|source| ConvergeError::NotAPlan {
        path: file.to_path_buf(),
        source,
    })?;
    if plan.format != plan::PLAN_FORMAT {
        return Err(ConvergeError::PlanFormat {
            path: file.to_path_buf(),
            found: plan.format,
        });
    }
    if plan.state_serial != state.lineage.serial || plan.lineage_id != state.lineage.id {
        return Err(ConvergeError::StalePlan {
            path: file.to_path_buf(),
            plan_serial: plan.state_serial,
            state_serial: state.lineage.serial,
            other_lineage: plan.lineage_id != state.lineage.id,
        });
    }
    check_targets(file, &plan)?;
    Ok(plan)
}

/// A saved plan holds no content of a sensitive file ([`Plan::redacted`]):
/// it is made again from the config repo the plan names, and must be what
/// was planned (its checksum), or the plan is refused.
fn restore_sensitive(
    layout: &Layout,
    file: &Path,
    state: &State,
    plan: &mut Plan,
) -> Result<(), ConvergeError> {
    let is_hidden = |c: &crate::resource::Change| {
        c.sensitive && matches!(c.op, crate::resource::Op::WriteFile { .. })
    };
    if !plan.changes.iter().any(is_hidden) {
        return Ok(());
    }
    let (manifest, graph) = load_manifest(
        layout,
        Some(&plan.config_dir),
        Some(state),
        plan.profile.as_deref(),
    )?;
    // A sensitive file's checksum is keyed by this machine's identity.
    let secrets = crate::secret::Secrets::open(layout, false)?.with_config(&manifest.config_dir);
    let fresh = plan::make_cached(
        &manifest,
        &graph,
        state,
        plan.force,
        1,
        None,
        &std::collections::HashSet::new(),
        &secrets,
    )?;
    for change in plan.changes.iter_mut().filter(|c| is_hidden(c)) {
        let planned = fresh.change(&change.id).and_then(|c| match &c.op {
            crate::resource::Op::WriteFile { content, .. } => Some(content),
            _ => None,
        });
        let same = |content: &&Vec<u8>| {
            change
                .checksum
                .as_ref()
                .is_some_and(|sum| sum.is(&secrets.content_checksum(content)))
        };
        let (Some(content), crate::resource::Op::WriteFile { content: slot, .. }) =
            (planned.filter(same), &mut change.op)
        else {
            return Err(ConvergeError::SensitiveChanged {
                path: file.to_path_buf(),
                id: change.id.clone(),
            });
        };
        slot.clone_from(content);
    }
    Ok(())
}

/// Re-reads every path the saved plan acts on: what changed since the plan
/// (a file swapped for a link, an edited file) refuses the whole plan.
fn check_targets(file: &Path, plan: &Plan) -> Result<(), ConvergeError> {
    for (key, was) in &plan.seen {
        let now = plan::Seen::observe(&crate::manifest::expand_key(&plan.home, key));
        if !was.matches(&now) {
            let now = match (&now, was) {
                (plan::Seen::File { .. }, plan::Seen::File { .. }) => {
                    "a regular file with other content".to_string()
                }
                _ => now.describe(),
            };
            return Err(ConvergeError::PlanTargetChanged {
                path: file.to_path_buf(),
                target: key.clone(),
                was: was.describe(),
                now,
            });
        }
    }
    Ok(())
}

/// `--rerun` names one-shot execs of the plan, or it is a mistake.
fn check_rerun(plan: &Plan, rerun: &[String]) -> Result<(), ConvergeError> {
    for id in rerun {
        let one_shot = plan.change(id).is_some_and(
            |c| matches!(&c.op, crate::resource::Op::Run(r) if r.idempotency_key.is_some()),
        );
        if !one_shot {
            return Err(ConvergeError::UnknownRerun(id.clone()));
        }
    }
    Ok(())
}

/// Where a transaction writes: the state store, under a held lock.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    /// Where the state dir is.
    pub layout: &'a Layout,
    /// The state record's store.
    pub store: &'a StateStore,
    /// The lock, held by the caller for the whole transaction.
    pub guard: &'a LockGuard,
}

/// What a run did: the outcome of every change, and the state as written.
#[derive(Debug, Clone)]
pub struct Executed {
    /// One status per plan change.
    pub outcome: Outcome,
    /// The state record after the run.
    pub state: State,
}

/// Records a plan that has nothing to change on disk. The record may still
/// have news: a profile switched with `--profile`, the config repo of a
/// first run, files already exactly as declared that stead now adopts, what
/// an interrupted run finished. Commits only when something changed; a
/// recovered interrupted run's journal is compacted.
pub fn record_unchanged(
    target: Target,
    mut state: State,
    prepared: &Prepared,
) -> Result<State, ConvergeError> {
    take_planned(&target, &mut state, prepared)?;
    let plan = &prepared.plan;
    // What could change, kept to compare: the small fields as they are,
    // the two large maps as a digest (a copy of them was the run's peak).
    let before = (
        state.ownership_digest(),
        state.checks.clone(),
        state.migration.clone(),
        state.active_profile.clone(),
        state.config_path.clone(),
    );
    let serial = state.lineage.serial.saturating_add(1);
    let mut updated = state;
    plan::record(
        &mut updated,
        plan,
        &Outcome::unchanged(plan.changes.len()),
        serial,
    );
    plan::adopt_recovered(&mut updated, plan, &prepared.view.recovered, serial);
    crate::migration::record(
        &mut updated,
        plan,
        &Outcome::unchanged(plan.changes.len()),
        prepared.boot_id.as_deref(),
    );
    note_profile_and_config(&mut updated, prepared);
    let (digest, checks, migration, active_profile, config_path) = before;
    let changed = updated.ownership_digest() != digest
        || updated.checks != checks
        || updated.migration != migration
        || updated.active_profile != active_profile
        || updated.config_path != config_path;
    if changed {
        updated.last_apply = Some(Utc::now());
        target.store.commit(target.guard, &mut updated, "apply")?;
    }
    let result = updated;
    save_stat_cache(target.layout, plan);
    if let Some(draft) = prepared.seal.as_ref().filter(|_| !changed) {
        // Only a cache: a seal that cannot be written costs the next run
        // its plan, nothing else.
        let _ = draft.seal(target.layout, plan.counts().unchanged);
    }
    if prepared.view.interrupted.is_some() {
        // The interrupted run's work was re-read and recorded; its records
        // have served their purpose (succeeded one-shot keys are kept by
        // compaction).
        journal::compact(&journal_path(target.layout), "")?;
    }
    Ok(result)
}

/// Takes into the maps of a record read in part (a drift repair's,
/// [`StateStore::load_in_part`]) every entry the run may change, before
/// anything changes: each change's resource record and keys, and the
/// records of what an interrupted run finished. Nothing for a record read
/// whole.
fn take_planned(
    target: &Target,
    state: &mut State,
    prepared: &Prepared,
) -> Result<(), ConvergeError> {
    let plan = &prepared.plan;
    let ids = plan.changes.iter().map(|c| c.id.as_str());
    let recovered = prepared.view.recovered.iter().map(String::as_str);
    let keys = plan
        .changes
        .iter()
        .flat_map(|c| c.keys.iter().map(String::as_str));
    state.take_entries(ids.chain(recovered), keys).map_err(|e| {
        ConvergeError::State(StateError::Corrupt {
            path: target.store.path(),
            problem: format!(
                "{e}; 'stead apply --verify' reads the record whole and says what is wrong where"
            ),
            backups: target.layout.backups_dir(),
        })
    })
}

/// Executes a prepared plan under the lock and records its outcome, in the
/// crash-safe order of this module's doc. The caller made `prepared` under
/// the same lock. `control` is this run's: its cancel handle stops it, its
/// reaper (if the caller set one) outlives a killed process.
pub fn execute(
    target: Target,
    mut state: State,
    prepared: &Prepared,
    jobs: usize,
    control: &RunControl,
    reporter: &dyn Reporter,
) -> Result<Executed, ConvergeError> {
    // The outcome is committed after the machine changed: a record that
    // cannot be written after is refused before anything runs.
    take_planned(&target, &mut state, prepared)?;
    target.store.check_writable(&state)?;
    // What is sealed as converged is about to change (the journal and the
    // state record would show it too; the seal goes first all the same).
    crate::seal::remove(target.layout).map_err(crate::state::StateError::from)?;
    let plan = &prepared.plan;
    commit_migration(&target, &mut state, plan)?;
    let path = journal_path(target.layout);
    let run = RunJournal::new(
        JournalWriter::open(&path, journal::JOURNAL_SYNC)?,
        engine::new_run_id(),
    )
    .with_pending_refreshes(prepared.view.pending_refreshes.clone());
    let run_op = format!("{}:0", run.run_id());
    run.writer().append_durable(run.record(
        &run_op,
        "run",
        JournalAction::RunStart,
        OpState::Started,
    ))?;
    let options = EngineOptions {
        jobs: jobs.max(1),
        backups: crate::backup::run_folder(&target.layout.backups_dir()),
        control: control.clone(),
        secrets: prepared.secrets.clone(),
    };
    let outcome = engine::execute_journaled(plan, &options, Some(&run), &|e| reporter.event(e));

    let serial = state.lineage.serial.saturating_add(1);
    plan::record(&mut state, plan, &outcome, serial);
    plan::adopt_recovered(&mut state, plan, &prepared.view.recovered, serial);
    crate::migration::record(&mut state, plan, &outcome, prepared.boot_id.as_deref());
    state.last_apply = Some(Utc::now());
    note_profile_and_config(&mut state, prepared);
    if let Err(source) = target.store.commit(target.guard, &mut state, "apply") {
        let changed = outcome
            .statuses
            .iter()
            .filter(|s| s.did_something())
            .count();
        return Err(if changed == 0 {
            source.into()
        } else {
            ConvergeError::NotRecorded { changed, source }
        });
    }
    reporter.event(Event::Durability(crate::batch::Stage::StateCommitted));
    // The run ends only once the state holds its outcome.
    let end = if outcome.has_failures() {
        OpState::Failed
    } else {
        OpState::Succeeded
    };
    run.writer()
        .append_durable(run.record(&run_op, "run", JournalAction::RunEnd, end))?;
    let run_id = run.run_id().to_string();
    run.into_writer().close()?;
    journal::compact_if_large_after(&path, &run_id, journal::COMPACT_FROM, &prepared.view.parsed)?;
    save_stat_cache(target.layout, &prepared.plan);
    Ok(Executed { outcome, state })
}

/// Commits a new migration (and the choices it was made from) to the
/// record before its first step runs: from then on, it moves only along its
/// own steps, whatever happens to the process.
fn commit_migration(target: &Target, state: &mut State, plan: &Plan) -> Result<(), ConvergeError> {
    if !plan.checks.commit {
        return Ok(());
    }
    state.checks.clone_from(&plan.checks.records);
    state.migration.clone_from(&plan.checks.migration);
    target
        .store
        .commit(target.guard, state, "commit migration")?;
    Ok(())
}

/// Records what the checks of `prepared` reported (`stead check`): the
/// items and the answers, without committing a migration (the items it
/// would run stay `chosen`). Writes only when the record changes.
pub fn record_checks(
    target: Target,
    mut state: State,
    prepared: &Prepared,
) -> Result<State, ConvergeError> {
    let records = prepared.plan.checks.records_as_checked();
    if records != state.checks {
        state.checks = records;
        target.store.commit(target.guard, &mut state, "check")?;
    }
    Ok(state)
}

/// Keeps what the plan trusted or read and found right for the next run,
/// when that differs from the cache the plan used (a run that trusted every
/// file writes nothing; a saved plan leaves the cache as it is). It is only
/// a cache: a failure to write it costs the next run its reads, nothing else.
fn save_stat_cache(layout: &Layout, plan: &Plan) {
    if let Some(next) = &plan.stat_next {
        let _ = next.save(layout.state_dir());
    }
}

fn note_profile_and_config(state: &mut State, prepared: &Prepared) {
    if let Some(p) = &prepared.profile {
        state.active_profile = Some(p.clone());
    }
    if state.config_path.is_none() {
        state.config_path = Some(prepared.plan.config_dir.display().to_string());
    }
}

fn journal_path(layout: &Layout) -> PathBuf {
    layout.state_dir().join(journal::JOURNAL_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_finds_the_nearest_directory_holding_a_manifest_file() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        let deep = repo.join("a/b");
        std::fs::create_dir_all(&deep).unwrap();
        assert_eq!(discover_config(&deep), None);
        std::fs::write(repo.join("stead.toml"), "").unwrap();
        assert_eq!(discover_config(&deep), Some(repo.clone()));
        assert_eq!(discover_config(&repo), Some(repo.clone()));
        // A directory named stead.toml is not a manifest.
        std::fs::create_dir_all(deep.join("stead.toml")).unwrap();
        assert_eq!(discover_config(&deep), Some(repo));
    }
}
