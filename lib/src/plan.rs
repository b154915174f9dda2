//! Read the actual state of every resource (in parallel), diff it against the
//! manifest, and produce a [`Plan`]: pure data that can be shown, saved, and
//! applied later (refused if the state serial moved underneath it). After
//! apply, [`record`] writes the outcome into the state record.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checksum::Checksum;
use crate::graph::Graph;
use crate::manifest::{Kind, Manifest};
use crate::outcome::{Outcome, Status};
use crate::resource::{self, Action, Change, Facts, PlanContext, ResourceError, registry};
use crate::safe_path::Resolver;
use crate::state::{ResourceRecord, State};

/// The version of the saved-plan format.
pub const PLAN_FORMAT: u32 = 1;

/// What `stead plan` computes and `stead apply` executes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Saved-plan format version.
    pub format: u32,
    /// The state serial the plan was made against.
    pub state_serial: u64,
    /// The lineage of that state.
    pub lineage_id: String,
    /// The profile used.
    pub profile: Option<String>,
    /// The config repo.
    pub config_dir: PathBuf,
    /// Where `~` pointed.
    pub home: PathBuf,
    /// Whether `--force` was in effect.
    pub force: bool,
    /// Every declared resource in dependency order, then removals.
    pub changes: Vec<Change>,
    /// For each change, the indices (into `changes`) it waits for.
    pub depends_on: Vec<Vec<usize>>,
    /// Index of the first removal of an undeclared resource (they run last).
    pub removals_from: usize,
    /// What was at each path a change acts on when the plan was made, by
    /// key: a saved plan is refused when one of them changed since.
    #[serde(default)]
    pub seen: BTreeMap<String, Seen>,
    /// The next stat cache, when it differs from the one this plan used:
    /// the files it trusted by their `lstat` or read and found right (never
    /// saved with a plan; `None` for a saved plan, or when nothing changed).
    #[serde(skip)]
    pub stat_next: Option<crate::stat_cache::StatCache>,
    /// How many files were trusted by their `lstat` without being read.
    #[serde(skip)]
    pub stat_trusted: usize,
    /// Declared resources not in this plan because the converged seal found
    /// every path they rest on as sealed ([`crate::seal::Check::Drifted`]):
    /// unchanged, and counted so.
    #[serde(skip)]
    pub vouched: usize,
    /// What the checks reported, the choices, and the migration this plan
    /// runs ([`crate::migration::settle`]).
    #[serde(
        default,
        skip_serializing_if = "crate::state::checks::CheckPlan::is_empty"
    )]
    pub checks: crate::state::checks::CheckPlan,
}

/// What was at a path when it was planned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Seen {
    /// Nothing.
    Absent,
    /// A regular file, with its content checksum unless only its type
    /// matters (a `line` edit is made again on the file as it is).
    File {
        /// `blake3:<hex>` of its content.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checksum: Option<String>,
    },
    /// A directory.
    Dir,
    /// A symlink with this text.
    Symlink {
        /// What the link says.
        target: PathBuf,
    },
    /// A FIFO, socket or device.
    Special,
}

impl Seen {
    /// What is at `path` now (a link is not followed; a FIFO is not opened).
    pub fn observe(path: &Path) -> Seen {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return Seen::Absent;
        };
        let ft = meta.file_type();
        if ft.is_dir() {
            Seen::Dir
        } else if ft.is_symlink() {
            Seen::Symlink {
                target: std::fs::read_link(path).unwrap_or_default(),
            }
        } else if ft.is_file() {
            Seen::File {
                checksum: read_regular(path).map(|b| resource::checksum(&b)),
            }
        } else {
            Seen::Special
        }
    }

    /// True when `now` is what this was (a file seen without its checksum
    /// matches any regular file).
    pub fn matches(&self, now: &Seen) -> bool {
        match (self, now) {
            (Seen::File { checksum: None }, Seen::File { .. }) => true,
            _ => self == now,
        }
    }

    /// `a regular file`, `a symlink to X`, ...
    pub fn describe(&self) -> String {
        match self {
            Seen::Absent => "nothing".into(),
            Seen::File { .. } => "a regular file".into(),
            Seen::Dir => "a directory".into(),
            Seen::Symlink { target } => format!("a symlink to {}", target.display()),
            Seen::Special => "a special file".into(),
        }
    }
}

/// The content of `path` if it is still a regular file when opened: never
/// through a link, never blocking on a FIFO that took its place.
fn read_regular(path: &Path) -> Option<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    let size = usize::try_from(meta.len()).ok()?;
    crate::safe_path::read_all(&mut file, size).ok()
}

/// Targets below this many are observed on the caller's thread: starting
/// threads would cost more than it saves.
const OBSERVE_ALONE_BELOW: usize = 16;

/// What was at each path the plan's changes act on, read on up to `jobs`
/// threads (each file is read and hashed: a repair's hundred files took a
/// millisecond on one thread).
fn observe_targets(changes: &[Change], home: &Path, jobs: usize) -> BTreeMap<String, Seen> {
    let targets: Vec<(&String, bool)> = changes
        .iter()
        .filter(|c| {
            !matches!(c.action, Action::Unchanged | Action::Conflict)
                && !matches!(c.op, resource::Op::None | resource::Op::Run(_))
        })
        .flat_map(|c| {
            let whole = registry::get(c.kind).ownership().owns_path;
            c.keys.iter().map(move |k| (k, whole))
        })
        .collect();
    let observe = |&(k, whole): &(&String, bool)| match Seen::observe(&crate::manifest::expand_key(
        home, k,
    )) {
        Seen::File { .. } if !whole => Seen::File { checksum: None },
        seen => seen,
    };
    let threads = if targets.len() < OBSERVE_ALONE_BELOW {
        1
    } else {
        jobs
    };
    let seen = crate::parallel::map(&targets, threads, |t| Ok(observe(t)));
    targets
        .iter()
        .zip(seen)
        // A part whose thread panicked is observed again here.
        .map(|(t, seen)| (t.0.clone(), seen.unwrap_or_else(|_| observe(t))))
        .collect()
}

/// How many of each action a plan holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// `+`
    pub create: usize,
    /// `~`
    pub update: usize,
    /// `-`
    pub remove: usize,
    /// `!`
    pub conflict: usize,
    /// Already right.
    pub unchanged: usize,
}

impl Plan {
    /// Counts per action.
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for ch in &self.changes {
            match ch.action {
                Action::Create => c.create += 1,
                Action::Update => c.update += 1,
                Action::Remove => c.remove += 1,
                Action::Conflict => c.conflict += 1,
                Action::Unchanged => c.unchanged += 1,
            }
        }
        c.unchanged += self.vouched;
        c
    }

    /// True when applying would change nothing.
    pub fn is_empty(&self) -> bool {
        self.changes.iter().all(|c| c.action == Action::Unchanged)
    }

    /// True when applying may start a program (an `exec`, a kind's own op
    /// such as a package manager's, a migration step): what a run's reaper
    /// process is for ([`crate::run`]). A plan of file, directory and link
    /// operations runs none.
    pub fn may_run_commands(&self) -> bool {
        !self.checks.is_empty()
            // Unchanged ones too: a refresh-only `exec` runs when notified.
            || self
                .changes
                .iter()
                .any(|c| matches!(c.op, resource::Op::Run(_) | resource::Op::Custom { .. }))
    }

    /// The plan without the content of sensitive files: what is shown
    /// (`--json`) and saved (`plan --out`). A write's content is emptied,
    /// and a saved plan's is made again when it is applied.
    pub fn redacted(&self) -> Plan {
        let mut plan = self.clone();
        for change in plan.changes.iter_mut().filter(|c| c.sensitive) {
            if let resource::Op::WriteFile { content, .. } = &mut change.op {
                content.clear();
            }
        }
        plan
    }

    /// The declared changes only (not removals), by id.
    pub fn change(&self, id: &str) -> Option<&Change> {
        self.changes.iter().find(|c| c.id == id)
    }
}

/// The removal of a record that touches nothing: the record is forgotten.
fn left_alone(id: &str, rec: &ResourceRecord, reason: &str) -> Change {
    Change {
        id: id.to_string(),
        kind: registry::find(&rec.kind).map_or(Kind::Noop, |k| k.kind()),
        action: Action::Remove,
        keys: rec.keys.clone(),
        reason: reason.into(),
        diff: None,
        checksum: None,
        op: resource::Op::None,
        retry: Default::default(),
        notify: Default::default(),
        sensitive: false,
    }
}

/// A stored key (`~/x` or absolute) as the real path it reaches now, links
/// among its ancestors resolved, in stored form.
fn real_key(manifest: &Manifest, resolver: &mut Resolver, key: &str) -> String {
    let path = crate::manifest::expand_key(&manifest.real_home, key);
    resolver
        .resolve(&path)
        .map(|p| manifest.display_path(&p))
        .unwrap_or_else(|_| key.to_string())
}

/// [`real_key`] of many keys. The keys of one directory share its
/// resolution: a key is `PREFIX/NAME`, its real key `REAL/NAME` with the
/// same `REAL` for every plain `NAME`, so where the first key of a prefix
/// is its own real key, so is every other, and nothing is resolved or
/// formatted for them (at 10 000 files, 20 000 paths made and shown, and
/// thrown away, on every plan).
struct RealKeys<'m, 'k> {
    manifest: &'m Manifest,
    resolver: Resolver,
    /// Per prefix seen: whether its keys are their own real keys.
    own: std::collections::HashMap<&'k str, bool, foldhash::fast::RandomState>,
    /// The last prefix found to be its own: keys come in the record's
    /// order, so a directory's keys come one after the other, and a
    /// comparison with the previous one spares the lookup.
    last_own: Option<&'k str>,
}

impl<'m, 'k> RealKeys<'m, 'k> {
    fn new(manifest: &'m Manifest) -> RealKeys<'m, 'k> {
        RealKeys {
            manifest,
            resolver: Resolver::new(),
            own: Default::default(),
            last_own: None,
        }
    }

    /// The real key of `key` when it is another one.
    fn other(&mut self, key: &'k str) -> Option<String> {
        let plain = key
            .rsplit_once('/')
            .filter(|(_, name)| !matches!(*name, "" | "." | ".."));
        if let Some((prefix, _)) = plain
            && (self.last_own == Some(prefix) || self.own.get(prefix) == Some(&true))
        {
            self.last_own = Some(prefix);
            return None;
        }
        let real = real_key(self.manifest, &mut self.resolver, key);
        let own = real == key;
        if let Some((prefix, _)) = plain {
            let own = *self.own.entry(prefix).or_insert(own);
            self.last_own = own.then_some(prefix);
        }
        (!own).then_some(real)
    }
}

/// Every key and name `state`'s resources own ([`resource::Owned`]'s set).
/// Ownership is by path, so renaming a resource keeps what it manages; a
/// key recorded through a symlinked ancestor (before paths were resolved
/// at load) still owns the real path it reaches.
fn all_owned<'k>(manifest: &Manifest, state: &'k State) -> HashSet<Cow<'k, str>> {
    // A record read in part: its entries still in the text, parsed.
    let unread: Vec<ResourceRecord> = state.unread_records().map(|(_, r)| r).collect();
    let mut real_keys = RealKeys::new(manifest);
    let keys = state
        .resources
        .values()
        .map(|r| r.keys.len() + r.names.len());
    let mut owned: HashSet<Cow<str>> = HashSet::with_capacity(keys.sum());
    for key in state.resources.values().flat_map(|r| r.keys.iter()) {
        if let Some(real) = real_keys.other(key) {
            owned.insert(Cow::Owned(real));
        }
        owned.insert(Cow::Borrowed(key));
    }
    for record in &unread {
        for key in &record.keys {
            if let Some(real) = real_keys.other(key) {
                owned.insert(Cow::Owned(real));
            }
            owned.insert(Cow::Owned(key.clone()));
        }
        owned.extend(record.names.iter().map(|n| Cow::Owned(n.clone())));
    }
    // Names (`apt:git`) never look like a stored path (`~/x`, `/x`).
    owned.extend(
        state
            .resources
            .values()
            .flat_map(|r| r.names.iter().map(|n| Cow::Borrowed(n.as_str()))),
    );
    owned
}

/// Why a plan could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot plan {}:\n{}", if .0.len() == 1 { "1 resource".to_string() } else { format!("{} resources", .0.len()) }, .0.iter().map(|(id, e)| format!("  {id}: {e}")).collect::<Vec<_>>().join("\n"))]
pub struct PlanError(pub Vec<(String, ResourceError)>);

/// Plans `manifest` against `state` and the machine, reading resources on
/// up to `jobs` threads, and every file whole.
pub fn make(
    manifest: &Manifest,
    graph: &Graph,
    state: &State,
    force: bool,
    jobs: usize,
) -> Result<Plan, PlanError> {
    make_cached(
        manifest,
        graph,
        state,
        force,
        jobs,
        None,
        &HashSet::new(),
        &crate::secret::Secrets::unavailable(),
    )
}

/// [`make`] that trusts the files `cache` vouches for by their `lstat`
/// (see [`crate::stat_cache`]), verified at `now_ns` (`None`: the clock),
/// and knows the resources an interrupted run finished (`recovered`, from
/// its journal), with this machine's `secrets`.
#[allow(clippy::too_many_arguments)]
pub fn make_cached(
    manifest: &Manifest,
    graph: &Graph,
    state: &State,
    force: bool,
    jobs: usize,
    cache: Option<(&crate::stat_cache::StatCache, Option<i128>)>,
    recovered: &HashSet<String>,
    secrets: &crate::secret::Secrets,
) -> Result<Plan, PlanError> {
    make_scoped(
        manifest, graph, state, force, jobs, cache, recovered, secrets, None,
    )
}

/// [`make_cached`] of only the declared resources in `only` (`None`: all
/// the manifest holds), for watch mode's re-plan of what changed and a
/// repair's plan of its part of the manifest ([`Manifest::partial`]).
/// A plan so scoped reads nothing else and plans no removal (it plans no
/// more than it was asked to), and the stat cache it leaves is `None` (the
/// next one is made by a whole plan); a plan of the whole manifest plans
/// removals and its stat cache as [`make_cached`] does.
#[allow(clippy::too_many_arguments)]
pub fn make_scoped(
    manifest: &Manifest,
    graph: &Graph,
    state: &State,
    force: bool,
    jobs: usize,
    cache: Option<(&crate::stat_cache::StatCache, Option<i128>)>,
    recovered: &HashSet<String>,
    secrets: &crate::secret::Secrets,
    only: Option<&HashSet<String>>,
) -> Result<Plan, PlanError> {
    let stat_use = cache
        .map(|(cache, now_ns)| resource::StatUse::new(cache, now_ns, manifest.resources.len()));
    let facts = Facts::current(&manifest.home);
    let owned = resource::Owned::new(&state.resources, || all_owned(manifest, state))
        .with_unread(&state.unread);
    let mut real_keys = RealKeys::new(manifest);
    // Usually every key is real already: then the record's own map serves,
    // instead of a copy of every path and checksum. (A record read in part
    // names its keys still in the text; their values are read only here.)
    let keys = state
        .checksums
        .keys()
        .map(String::as_str)
        .chain(state.unread_checksum_keys());
    let extra: Vec<(String, Cow<Checksum>)> = keys
        .filter_map(|k| real_keys.other(k).map(|real| (real, k)))
        .filter(|(real, _)| state.checksum_of(real).is_none())
        .filter_map(|(real, k)| Some((real, state.checksum_of(k)?)))
        .collect();
    let mut resolver = real_keys.resolver;
    let with_real;
    let recorded_map = if extra.is_empty() {
        &state.checksums
    } else {
        let mut all = state.checksums.clone();
        for (real, sum) in extra {
            all.entry(real).or_insert_with(|| sum.into_owned());
        }
        with_real = all;
        &with_real
    };
    let recorded = resource::Recorded::new(recorded_map, &state.unread);
    // Every declared resource's markers, also those of a manifest read in
    // part: a purge in the part must leave the others' markers alone.
    let declared_markers: Vec<&Path> = match &manifest.partial {
        Some(partial) => partial.markers.iter().map(PathBuf::as_path).collect(),
        None => resource::markers_of(&manifest.resources),
    };
    let markers: Vec<PathBuf> = declared_markers
        .into_iter()
        .map(|p| resolver.resolve(p).unwrap_or_else(|_| p.to_path_buf()))
        .collect();
    let ctx = PlanContext {
        manifest,
        facts: &facts,
        owned: &owned,
        recorded: &recorded,
        force,
        markers: &markers,
        stat_cache: stat_use.as_ref(),
        known_dirs: Default::default(),
        shared: Default::default(),
        recovered,
        secrets,
    };
    // A manifest read in part plans its part, and only it: what it does not
    // hold is still declared, never a removal.
    // So does a record read in part: it plans no removals of what it did
    // not read (the drift repairs that read it so are scoped anyway).
    let scoped = only.is_some() || manifest.partial.is_some() || state.unread.is_partial();
    let ordered = in_order(manifest, graph, only);
    let (mut changes, mut errors) = plan_declared(&ordered, &ctx, jobs);
    resource::file::defer_to_outputs(&ordered, &mut changes);
    let removals_from = changes.len();
    if !scoped {
        plan_removals(manifest, state, force, &mut changes, &mut errors);
    }
    if !errors.is_empty() {
        return Err(PlanError(errors));
    }
    let mut depends_on = dependencies(graph, &changes, removals_from);
    wait_for_shippers(&ctx, &changes, removals_from, &mut depends_on);
    let seen = observe_targets(&changes, &manifest.real_home, jobs);
    let (stat_next, stat_trusted) = match stat_use {
        Some(_) if scoped => (None, 0),
        Some(u) => {
            let cache = u.cache;
            let kept = u.next.into_inner().unwrap_or_default();
            next_stat_cache(cache, kept)
        }
        None => (None, 0),
    };
    Ok(Plan {
        format: PLAN_FORMAT,
        state_serial: state.lineage.serial,
        lineage_id: state.lineage.id.clone(),
        profile: manifest.profile.clone(),
        config_dir: manifest.config_dir.clone(),
        home: manifest.home.clone(),
        force,
        changes,
        depends_on,
        removals_from,
        seen,
        stat_next,
        stat_trusted,
        vouched: 0,
        checks: Default::default(),
    })
}

/// The resources to plan, in the graph's order: every one, or those of
/// `only`. A scope (a repair's hundred of ten thousand) is looked up by
/// id and sorted by rank, not found by testing every resource against it.
fn in_order<'m>(
    manifest: &'m Manifest,
    graph: &Graph,
    only: Option<&HashSet<String>>,
) -> Vec<&'m crate::manifest::Resource> {
    let Some(only) = only else {
        return graph
            .order
            .iter()
            .map(|&i| &manifest.resources[i])
            .collect();
    };
    // A node the order leaves out (none does) is left out here too.
    let mut rank = vec![None; graph.ids.len()];
    for (at, &node) in graph.order.iter().enumerate() {
        if let Some(slot) = rank.get_mut(node) {
            *slot = Some(at);
        }
    }
    let mut ranked: Vec<(usize, usize)> = only
        .iter()
        .filter_map(|id| graph.index_of(id))
        .filter_map(|node| Some((rank.get(node).copied().flatten()?, node)))
        .collect();
    ranked.sort_unstable();
    ranked
        .iter()
        .filter_map(|&(_, node)| manifest.resources.get(node))
        .collect()
}

/// The stat cache after this plan, when it differs from `cache`, and how
/// many of its entries `cache` held already (trusted or found again).
///
/// The new entries' vector becomes the next cache's: the kept ones are
/// added to it, not both copied into a third. A path both kept and found
/// anew (two resources of one path) keeps what was found anew.
fn next_stat_cache(
    cache: &crate::stat_cache::StatCache,
    kept: resource::Kept,
) -> (Option<crate::stat_cache::StatCache>, usize) {
    let resource::Kept { mut same, mut new } = kept;
    let trusted = same.len();
    if new.is_empty() {
        // Nothing new: unchanged exactly when every key of the cache was kept.
        same.sort_unstable();
        same.dedup();
        if same.len() == cache.len() {
            return (None, trusted);
        }
    }
    // Stable: of a path found anew twice, the later stays later, and wins.
    crate::stat_cache::sort_by_key_in_place(&mut new);
    let fresh = new.len();
    new.reserve(same.len());
    for key in same {
        let found_anew = new[..fresh]
            .binary_search_by(|(k, _)| (**k).cmp(key))
            .is_ok();
        if !found_anew && let Some(entry) = cache.get(key) {
            new.push((Box::from(key), entry.clone()));
        }
    }
    let next = crate::stat_cache::StatCache::of_packed(new);
    ((next != *cache).then_some(next), trusted)
}

/// What stead created that is no longer declared, planned for removal:
/// deepest paths first, so files go before the directories that hold them.
fn plan_removals(
    manifest: &Manifest,
    state: &State,
    force: bool,
    changes: &mut Vec<Change>,
    errors: &mut Vec<(String, ResourceError)>,
) {
    let declared: HashSet<&str> = manifest.resources.iter().map(|r| r.id.as_str()).collect();
    let mut gone: Vec<(&String, &ResourceRecord)> = state
        .resources
        .iter()
        .filter(|(id, _)| !declared.contains(id.as_str()))
        .collect();
    drop(declared);
    // Usually nothing is gone: then no set of every claimed path is built
    // (5 MB at 100 000 files, at the moment the plan holds the most).
    if gone.is_empty() {
        return;
    }
    gone.sort_by_key(|(id, rec)| {
        let depth = rec.keys.first().map_or(0, |k| k.matches('/').count());
        (std::cmp::Reverse(depth), (*id).clone())
    });
    // Paths a declared resource owns (a kind that only edits a file, like
    // `line`, does not take it over).
    let claimed: HashSet<String> = changes
        .iter()
        .filter(|c| registry::get(c.kind).ownership().owns_path)
        .flat_map(|c| c.keys.iter().cloned())
        .collect();
    let mut resolver = Resolver::new();
    for (id, rec) in gone {
        let mut is_claimed = |k: &String| {
            claimed.contains(k) || claimed.contains(&real_key(manifest, &mut resolver, k))
        };
        if !rec.keys.is_empty() && rec.keys.iter().all(&mut is_claimed) {
            changes.push(Change {
                id: id.clone(),
                kind: registry::find(&rec.kind).map_or(Kind::Noop, |k| k.kind()),
                action: Action::Remove,
                keys: rec.keys.clone(),
                reason: "no longer declared; its path is now managed by another resource".into(),
                diff: None,
                checksum: None,
                op: resource::Op::None,
                retry: Default::default(),
                notify: Default::default(),
                sensitive: false,
            });
            continue;
        }
        if let Some(reason) = manifest
            .resources
            .iter()
            .find_map(|r| registry::get(r.kind()).keeps_in_place(r, id))
        {
            changes.push(left_alone(id, rec, &reason));
            continue;
        }
        if rec
            .keys
            .iter()
            .any(|k| real_key(manifest, &mut resolver, k) != *k)
        {
            changes.push(left_alone(
                id,
                rec,
                "no longer declared; a symlink is now among the directories of its path, so it is left alone (stead never removes through a link)",
            ));
            continue;
        }
        match resource::plan_removal(id, rec, &manifest.real_home, &state.checksums, force) {
            Ok(c) => changes.push(c),
            Err(e) => errors.push((id.clone(), e)),
        }
    }
}

/// The changes that run as one transaction (mgmt's autogroup): changes of
/// one kind whose ops share a [`ResourceKind::transaction`] key and that
/// wait for exactly the same changes, so they are ready at the same moment
/// and none can depend on another (if one did, their waits would differ).
/// Removals of what is no longer declared, which run last, group only with
/// each other. Only groups of two or more, each in plan order; a change
/// with retries runs alone (a retry is per change).
///
/// [`ResourceKind::transaction`]: crate::resource::kind::ResourceKind::transaction
pub fn transactions(plan: &Plan) -> Vec<Vec<usize>> {
    type Group<'p> = (bool, &'p str, String, Vec<usize>);
    let mut groups: BTreeMap<Group, Vec<usize>> = BTreeMap::new();
    for (i, c) in plan.changes.iter().enumerate() {
        if matches!(c.action, Action::Unchanged | Action::Conflict) || c.retry.retries > 0 {
            continue;
        }
        let Some(key) = registry::get(c.kind).transaction(&c.op) else {
            continue;
        };
        let mut waits = plan.depends_on.get(i).cloned().unwrap_or_default();
        waits.sort_unstable();
        waits.dedup();
        let undeclared = i >= plan.removals_from;
        groups
            .entry((undeclared, c.kind.as_str(), key, waits))
            .or_default()
            .push(i);
    }
    let mut out: Vec<Vec<usize>> = groups.into_values().filter(|g| g.len() > 1).collect();
    out.sort_by_key(|g| g[0]);
    out
}

/// For each change, the indices of the changes it waits for (removals wait
/// for none: they run last).
fn dependencies(graph: &Graph, changes: &[Change], removals_from: usize) -> Vec<Vec<usize>> {
    // Index into `changes` of each graph node's declared change, by node
    // (`NONE`: it has none).
    const NONE: usize = usize::MAX;
    let mut position: Vec<usize> = vec![NONE; graph.ids.len()];
    for (i, c) in changes.iter().take(removals_from).enumerate() {
        if let Some(g) = graph.index_of(&c.id)
            && position[g] == NONE
        {
            position[g] = i;
        }
    }
    changes
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if i >= removals_from {
                return Vec::new();
            }
            let Some(g) = graph.index_of(&c.id) else {
                return Vec::new();
            };
            // Sized up front: collected, a list of one grew room for four.
            let mut waits = Vec::with_capacity(graph.dependencies[g].len());
            waits.extend(
                graph.dependencies[g]
                    .iter()
                    .map(|&d| position[d as usize])
                    .filter(|&p| p != NONE),
            );
            waits
        })
        .collect()
}

/// Autoedges found at plan time: a declared change of a managed path waits
/// for a declared change that ships that path
/// ([`ResourceKind::shipped_paths`]: `/etc/foo.conf` is written after the
/// package `foo` is installed, upgraded or removed). Each kind with changes
/// is asked once, and only when some other change has a path; a kind that
/// cannot say adds no edge (the user's `after` still orders). An edge that
/// would close a cycle is not added: the declared order wins.
///
/// [`ResourceKind::shipped_paths`]: crate::resource::kind::ResourceKind::shipped_paths
fn wait_for_shippers(
    ctx: &PlanContext,
    changes: &[Change],
    removals_from: usize,
    depends_on: &mut [Vec<usize>],
) {
    let declared = &changes[..removals_from.min(changes.len())];
    let acts = |c: &Change| !matches!(c.action, Action::Unchanged | Action::Conflict);
    if !declared.iter().any(|c| acts(c) && !c.keys.is_empty()) {
        return;
    }
    let mut by_kind: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, c) in declared.iter().enumerate() {
        if acts(c) {
            by_kind.entry(c.kind.as_str()).or_default().push(i);
        }
    }
    let mut shipped: Vec<(usize, Vec<PathBuf>)> = Vec::new();
    for members in by_kind.values() {
        let kind = registry::get(declared[members[0]].kind);
        let ops: Vec<&resource::Op> = members.iter().map(|&i| &declared[i].op).collect();
        if let Ok(lists) = kind.shipped_paths(&ops, ctx) {
            shipped.extend(
                members
                    .iter()
                    .copied()
                    .zip(lists)
                    .filter(|(_, l)| !l.is_empty()),
            );
        }
    }
    if shipped.is_empty() {
        return;
    }
    let mut managed: std::collections::HashMap<PathBuf, Vec<usize>> = Default::default();
    for (i, c) in declared.iter().enumerate() {
        if acts(c) {
            for key in &c.keys {
                let path = crate::manifest::expand_key(&ctx.manifest.real_home, key);
                managed.entry(path).or_default().push(i);
            }
        }
    }
    for (shipper, paths) in shipped {
        for path in paths {
            for &waiter in managed.get(&path).into_iter().flatten() {
                if declared[waiter].kind != declared[shipper].kind
                    && !depends_on[waiter].contains(&shipper)
                    && !waits_for(depends_on, shipper, waiter)
                {
                    depends_on[waiter].push(shipper);
                }
            }
        }
    }
}

/// Whether change `from` waits, directly or not, for change `to`.
fn waits_for(depends_on: &[Vec<usize>], from: usize, to: usize) -> bool {
    let mut seen = vec![false; depends_on.len()];
    let mut stack = vec![from];
    while let Some(i) = stack.pop() {
        if i == to {
            return true;
        }
        if std::mem::replace(&mut seen[i], true) {
            continue;
        }
        stack.extend(depends_on[i].iter().copied().filter(|&d| d < seen.len()));
    }
    false
}

/// Reads and diffs the declared resources on up to `jobs` threads, keeping
/// their order.
fn plan_declared(
    ordered: &[&crate::manifest::Resource],
    ctx: &PlanContext,
    jobs: usize,
) -> (Vec<Change>, Vec<(String, ResourceError)>) {
    let jobs = jobs.max(1);
    let chunk = ordered.len().div_ceil(jobs).max(1);
    // Each thread plans into its own slice of one vector, in order: the
    // changes are not collected per thread and then copied again (at
    // 100 000 resources each copy was 43 MB).
    let mut slots: Vec<Option<Change>> = Vec::new();
    slots.resize_with(ordered.len(), || None);
    let errors = std::thread::scope(|scope| {
        let handles: Vec<_> = ordered
            .chunks(chunk)
            .zip(slots.chunks_mut(chunk))
            .map(|(slice, out)| {
                scope.spawn(move || {
                    let mut errors = Vec::new();
                    for (r, slot) in slice.iter().zip(out) {
                        match resource::plan(r, ctx) {
                            Ok(c) => *slot = Some(c),
                            Err(e) => errors.push((r.id.clone(), e)),
                        }
                    }
                    errors
                })
            })
            .collect();
        // A reader thread that panicked must not make its resources vanish
        // from the plan: that would read as "nothing to do" for them.
        handles
            .into_iter()
            .flat_map(|h| {
                h.join().unwrap_or_else(|_| {
                    vec![(
                        "(planner)".to_string(),
                        ResourceError::Internal(
                            "a planning thread panicked; nothing was changed".into(),
                        ),
                    )]
                })
            })
            .collect::<Vec<_>>()
    });
    // `filter_map` over the vector's own iterator is collected in place
    // (same element size): no second vector. `flatten` is not, and grew a
    // new one by doubling.
    #[allow(clippy::filter_map_identity)]
    let changes = slots.into_iter().filter_map(|c| c).collect();
    (changes, errors)
}

/// What the journal says about one-shot steps (exec with `once` or an
/// `idempotency_key`).
#[derive(Debug, Default, Clone)]
pub struct OneShots {
    /// Keys whose step succeeded in some run: never run again.
    pub succeeded: HashSet<String>,
    /// Keys whose step started in an interrupted run and has no outcome.
    pub unfinished: HashSet<String>,
    /// Resources the user asked to run again (`apply --rerun ID`).
    pub rerun: HashSet<String>,
}

/// Settles one-shot steps in `plan`: a step whose key already succeeded is
/// unchanged; a step left unfinished by an interrupted run is re-run only if
/// a guard (`creates`, `unless`, `onlyif`) decided it is still needed, else it
/// becomes a conflict that names `--rerun`. `--rerun` overrides both.
pub fn settle_one_shots(plan: &mut Plan, one_shots: &OneShots) {
    for c in &mut plan.changes {
        let resource::Op::Run(run) = &c.op else {
            continue;
        };
        let Some(key) = run.idempotency_key.clone() else {
            continue;
        };
        if one_shots.rerun.contains(&c.id) {
            continue;
        }
        let guarded = run.creates.is_some() || run.unless.is_some() || run.onlyif.is_some();
        if one_shots.succeeded.contains(&key) {
            c.action = Action::Unchanged;
            c.reason = format!("one-shot step already ran (key {key})");
            c.op = resource::Op::None;
        } else if one_shots.unfinished.contains(&key) && !guarded {
            c.action = Action::Conflict;
            c.reason = format!(
                "a one-shot step that an interrupted run started, with no recorded outcome; \
                 check whether it ran, then 'stead apply --rerun {}' to run it again",
                c.id
            );
            c.op = resource::Op::None;
        }
    }
}

/// Settles `refresh_only` execs: one that no changing resource notifies and
/// that has no refresh pending from an earlier run is unchanged; the others
/// say who refreshes them. (The engine decides again when its turn comes: a
/// notifier may turn out to do nothing.)
pub fn settle_refreshes(plan: &mut Plan, pending: &HashSet<String>) {
    let mut notified_by: std::collections::HashMap<&str, Vec<&str>> = Default::default();
    for c in &plan.changes {
        if matches!(c.action, Action::Create | Action::Update | Action::Remove) {
            for t in &c.notify {
                notified_by
                    .entry(t.as_str())
                    .or_default()
                    .push(c.id.as_str());
            }
        }
    }
    let mut settled: Vec<(usize, Option<String>)> = Vec::new();
    for (i, c) in plan.changes.iter().enumerate() {
        let resource::Op::Run(run) = &c.op else {
            continue;
        };
        if !run.refresh_only {
            continue;
        }
        let by = notified_by.get(c.id.as_str());
        let reason = match (by, pending.contains(&c.id)) {
            (Some(ids), _) => Some(format!(
                "runs if {} changes: {}",
                ids.join(", "),
                run.command.display()
            )),
            (None, true) => Some(format!(
                "refresh pending from an interrupted run: {}",
                run.command.display()
            )),
            (None, false) => None,
        };
        settled.push((i, reason));
    }
    for (i, reason) in settled {
        let c = &mut plan.changes[i];
        match reason {
            Some(r) => c.reason = r,
            None => {
                c.action = Action::Unchanged;
                c.reason = "not refreshed".into();
                c.op = resource::Op::None;
            }
        }
    }
}

/// Records as owned the unchanged resources in `ids`: what an interrupted
/// run made (its journal says it succeeded) before it could write the state.
/// Files and links that are exactly as declared are adopted by [`record`]
/// anyway; this also covers directories, which are otherwise never adopted.
pub fn adopt_recovered(state: &mut State, plan: &Plan, ids: &HashSet<String>, serial: u64) {
    for c in &plan.changes[..plan.removals_from] {
        let owns_path = registry::get(c.kind).ownership().owns_path;
        if owns_path
            && c.action == Action::Unchanged
            && !c.keys.is_empty()
            && ids.contains(&c.id)
            && !state.resources.contains_key(&c.id)
        {
            state.resources.insert(
                c.id.clone(),
                ResourceRecord {
                    kind: c.kind.as_str().to_string(),
                    keys: c.keys.clone(),
                    serial,
                    names: Default::default(),
                },
            );
        }
    }
}

/// Writes the outcome of an apply into `state` (not to disk): ownership,
/// checksums, removals. `serial` is the serial the next write will have.
pub fn record(state: &mut State, plan: &Plan, outcome: &Outcome, serial: u64) {
    // Paths a declared resource takes over from an undeclared one but did not
    // get to write: the old record keeps them owned until a later run succeeds,
    // or the path would turn into a conflict with what stead itself wrote.
    let not_taken_over: HashSet<&str> = plan
        .changes
        .iter()
        .zip(&outcome.statuses)
        .take(plan.removals_from)
        .filter(|(_, s)| s.is_failure())
        .flat_map(|(c, _)| c.keys.iter().map(String::as_str))
        .collect();
    for (change, status) in plan.changes.iter().zip(&outcome.statuses) {
        let kind = registry::get(change.kind);
        if !kind.ownership().owns_path {
            continue;
        }
        let done = matches!(status, Status::Done(_));
        match change.action {
            Action::Remove
                if done
                    && change
                        .keys
                        .iter()
                        .any(|k| not_taken_over.contains(k.as_str())) => {}
            Action::Remove if done => {
                state.resources.remove(&change.id);
                for k in &change.keys {
                    state.checksums.remove(k);
                }
            }
            Action::Create | Action::Update if done => {
                if matches!(change.op, resource::Op::RemoveFile { .. }) {
                    continue;
                }
                let names = kind.owned_names(&change.op);
                // A kind that owns names owns only what this change made its
                // own (a package it installed, not one it upgraded).
                if names.as_ref().is_some_and(Vec::is_empty) {
                    if let Some(rec) = state.resources.get_mut(&change.id) {
                        rec.serial = serial;
                    }
                    continue;
                }
                state.resources.insert(
                    change.id.clone(),
                    ResourceRecord {
                        kind: change.kind.as_str().to_string(),
                        keys: change.keys.clone(),
                        serial,
                        names: names.unwrap_or_default().into(),
                    },
                );
                // A secret-bearing file made with a secret this run
                // generated had no known content at plan time: its write
                // says what it wrote.
                let written = match status {
                    Status::Done(applied) => applied.checksum.as_ref(),
                    _ => None,
                };
                if let Some(sum) = change
                    .checksum
                    .clone()
                    .or_else(|| written.map(|w| Checksum::of(w)))
                {
                    for k in &change.keys {
                        state.checksums.insert(k.clone(), sum.clone());
                    }
                }
            }
            Action::Unchanged => {
                let owned = state.resources.contains_key(&change.id);
                // A file or link that already is exactly as declared is adopted;
                // a directory stead did not create stays the user's.
                let adopt = !owned && kind.ownership().adopt_when_right && !change.keys.is_empty();
                // What an interrupted run of stead made its own by name (a
                // package it installed), planned unchanged with what it owns.
                let names = kind
                    .owned_names(&change.op)
                    .filter(|n| change.keys.is_empty() && !n.is_empty());
                if !owned && let Some(names) = names {
                    state.resources.insert(
                        change.id.clone(),
                        ResourceRecord {
                            kind: change.kind.as_str().to_string(),
                            keys: Vec::new(),
                            serial,
                            names: names.into(),
                        },
                    );
                    continue;
                }
                let absent = kind.releases(change.checksum.as_ref());
                if absent {
                    state.resources.remove(&change.id);
                    for k in &change.keys {
                        state.checksums.remove(k);
                    }
                    continue;
                }
                if adopt {
                    state.resources.insert(
                        change.id.clone(),
                        ResourceRecord {
                            kind: change.kind.as_str().to_string(),
                            keys: change.keys.clone(),
                            serial,
                            names: Default::default(),
                        },
                    );
                }
                if (owned || adopt)
                    && let Some(sum) = &change.checksum
                {
                    // Usually recorded already: not copied in again.
                    for k in &change.keys {
                        if state.checksums.get(k) != Some(sum) {
                            state.checksums.insert(k.clone(), sum.clone());
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::tests::{Fixture, change};
    use crate::stat_cache::StatCache;
    use crate::stat_cache::tests::entry;

    #[test]
    fn a_scope_is_planned_in_the_graphs_order_as_the_whole_manifest_is() {
        let fx = Fixture::new();
        // Declared out of order: the graph puts each after what it waits for.
        let text = "[noop.d]\nafter = [\"noop.c\"]\n[noop.c]\nafter = [\"noop.b\"]\n\
                    [noop.b]\n[noop.a]\nbefore = [\"noop.d\"]\n[noop.e]\n";
        let manifest = fx.manifest(text);
        let graph = Graph::build(&manifest).unwrap();
        let ids = |resources: Vec<&crate::manifest::Resource>| -> Vec<String> {
            resources.iter().map(|r| r.id.clone()).collect()
        };
        let all = ids(in_order(&manifest, &graph, None));
        assert_eq!(all.len(), 5);
        let scope: HashSet<String> = ["noop.d", "noop.b", "noop.e", "noop.gone"]
            .map(String::from)
            .into();
        let filtered: Vec<String> = all
            .iter()
            .filter(|id| scope.contains(*id))
            .cloned()
            .collect();
        assert_eq!(ids(in_order(&manifest, &graph, Some(&scope))), filtered);
        assert!(in_order(&manifest, &graph, Some(&HashSet::new())).is_empty());
    }

    #[test]
    fn only_a_plan_with_a_program_or_a_kind_of_its_own_may_run_commands() {
        let fx = Fixture::new();
        let files = fx.plan(
            "[dir.d]\npath = \"@HOME@/d\"\n[file.a]\npath = \"@HOME@/d/a\"\ncontent = \"x\"\n\
             [symlink.l]\npath = \"@HOME@/l\"\ntarget = \"@HOME@/d/a\"\n",
        );
        assert!(!files.is_empty());
        assert!(!files.may_run_commands());
        let refresh = fx.plan(
            "[file.a]\npath = \"@HOME@/a\"\ncontent = \"x\"\nnotify = [\"exec.r\"]\n\
             [exec.r]\ncommand = \"true\"\nrefresh_only = true\n",
        );
        assert!(refresh.may_run_commands());
        let line = fx.plan("[line.l]\npath = \"@HOME@/rc\"\nline = \"x\"\ncreate = true\n");
        assert!(line.may_run_commands());
    }

    /// A plan with enough targets to observe them on threads sees each as
    /// one observation of it alone sees it: absent, or a file with its
    /// content's checksum (a `line` edit's file without one).
    #[test]
    fn targets_observed_on_threads_are_each_what_was_there() {
        let fx = Fixture::new();
        let mut text = String::new();
        for i in 0..2 * OBSERVE_ALONE_BELOW {
            text += &format!("[file.f{i}]\npath = \"@HOME@/f{i}\"\ncontent = \"new\"\n");
            if i % 2 == 0 {
                std::fs::write(fx.home.join(format!("f{i}")), format!("old {i}")).unwrap();
            }
        }
        text += "[line.l]\npath = \"@HOME@/rc\"\nline = \"x\"\n";
        std::fs::write(fx.home.join("rc"), "y\n").unwrap();
        let plan = fx.plan_with(&text, true);
        assert_eq!(
            plan.seen.len(),
            2 * OBSERVE_ALONE_BELOW + 1,
            "{:?}",
            plan.seen
        );
        for i in 0..2 * OBSERVE_ALONE_BELOW {
            let want = if i % 2 == 0 {
                Seen::File {
                    checksum: Some(resource::checksum(format!("old {i}").as_bytes())),
                }
            } else {
                Seen::Absent
            };
            assert_eq!(plan.seen[&format!("~/f{i}")], want, "f{i}");
        }
        assert_eq!(plan.seen["~/rc"], Seen::File { checksum: None });
    }

    /// Every key's real key is what `real_key` makes of it alone, whatever
    /// order the keys of a directory come in: in a plain directory, through
    /// a linked one, the home itself, outside the home, and odd keys.
    #[test]
    fn real_keys_of_a_directory_agree_with_resolving_each_alone() {
        let d = tempfile::tempdir().unwrap();
        let base = d.path().canonicalize().unwrap();
        let home = base.join("home");
        for dir in ["home/plain", "elsewhere", "outside"] {
            std::fs::create_dir_all(base.join(dir)).unwrap();
        }
        std::os::unix::fs::symlink(base.join("elsewhere"), home.join("linked")).unwrap();
        let manifest = Manifest {
            path: base.join("repo/stead.toml"),
            config_dir: base.join("repo"),
            home: home.clone(),
            real_home: home.clone(),
            profile: None,
            profiles: Default::default(),
            vars: Default::default(),
            resources: Vec::new(),
            protected: Vec::new(),
            followed_links: Vec::new(),
            partial: None,
        };
        let outside = base.join("outside").display().to_string();
        let keys: Vec<String> = [
            "~/plain/a",
            "~/linked/a",
            "~/plain/b",
            "~/linked/b",
            "~/top",
            "~",
            "~/plain/",
            "~/plain/.",
            "~/plain/..",
            "~/linked/../plain/c",
            "~/missing/x",
            "apt:git",
        ]
        .iter()
        .map(|k| k.to_string())
        .chain([format!("{outside}/a"), format!("{outside}/b")])
        .collect();
        for order in [keys.clone(), keys.iter().rev().cloned().collect()] {
            let mut many = RealKeys::new(&manifest);
            for key in &order {
                let alone = real_key(&manifest, &mut Resolver::new(), key);
                let expected = (alone != *key).then_some(alone);
                assert_eq!(many.other(key), expected, "{key}");
            }
        }
        let mut many = RealKeys::new(&manifest);
        assert_eq!(
            many.other("~/linked/a").as_deref(),
            Some(base.join("elsewhere/a").to_str().unwrap())
        );
        assert_eq!(
            many.other("~/linked/b").as_deref(),
            Some(base.join("elsewhere/b").to_str().unwrap())
        );
    }

    fn kept<'a>(same: &[&'a str], new: &[(&str, i128)]) -> resource::Kept<'a> {
        resource::Kept {
            same: same.to_vec(),
            new: new.iter().map(|&(k, v)| (Box::from(k), entry(v))).collect(),
        }
    }

    #[test]
    fn a_cache_whose_every_entry_was_kept_is_not_written_again() {
        let cache = StatCache::of([("~/a".into(), entry(20)), ("~/b".into(), entry(20))]);
        let keys: Vec<&str> = ["~/b", "~/a", "~/b"].to_vec();
        let (next, trusted) = next_stat_cache(&cache, kept(&keys, &[]));
        assert_eq!(next, None);
        assert_eq!(trusted, 3);
        // One key not kept: the next cache is the rest.
        let (next, trusted) = next_stat_cache(&cache, kept(&["~/b"], &[]));
        assert_eq!(next, Some(StatCache::of([("~/b".into(), entry(20))])));
        assert_eq!(trusted, 1);
    }

    #[test]
    fn the_next_cache_holds_the_kept_and_the_new_and_the_new_win() {
        let cache = StatCache::of([
            ("~/a".into(), entry(20)),
            ("~/b".into(), entry(20)),
            ("~/c".into(), entry(20)),
        ]);
        // ~/c kept and found anew: the new entry wins. ~/d found anew
        // twice: the later wins. ~/b is not kept: it is gone.
        let (next, trusted) = next_stat_cache(
            &cache,
            kept(&["~/c", "~/a"], &[("~/d", 30), ("~/c", 31), ("~/d", 32)]),
        );
        let expected = StatCache::of([
            ("~/a".into(), entry(20)),
            ("~/c".into(), entry(31)),
            ("~/d".into(), entry(32)),
        ]);
        assert_eq!(next, Some(expected));
        assert_eq!(trusted, 2);
        // Everything read anew into an empty cache.
        let empty = StatCache::empty();
        let (next, trusted) = next_stat_cache(&empty, kept(&[], &[("~/b", 5), ("~/a", 6)]));
        let expected = StatCache::of([("~/a".into(), entry(6)), ("~/b".into(), entry(5))]);
        assert_eq!(next, Some(expected));
        assert_eq!(trusted, 0);
    }

    #[test]
    fn waits_for_follows_dependencies_through_every_step() {
        // 0 waits for 1, 1 for 2; 3 waits for nothing.
        let deps = vec![vec![1], vec![2], vec![], vec![]];
        assert!(waits_for(&deps, 0, 2));
        assert!(waits_for(&deps, 0, 1));
        assert!(!waits_for(&deps, 2, 0));
        assert!(!waits_for(&deps, 3, 0));
        // A cycle in the input does not loop.
        assert!(!waits_for(&[vec![1], vec![0]], 0, 2));
    }

    const M: &str = "[exec.once]\ncommand = \"true\"\nonce = true\n\n\
                     [exec.guarded]\ncommand = \"true\"\nonce = true\nunless = \"false\"\n\n\
                     [exec.plain]\ncommand = \"true\"\n";

    fn keys(ids: &[&str]) -> HashSet<String> {
        ids.iter().map(|i| format!("once:{i}")).collect()
    }

    /// A plan of package changes (`install` or not) waiting for `deps`.
    fn package_plan(changes: &[(&str, bool, Action, u32)], deps: Vec<Vec<usize>>) -> Plan {
        let fx = Fixture::new();
        let mut plan = fx.plan("[noop.x]\n");
        plan.changes = changes
            .iter()
            .map(|&(name, install, action, retries)| {
                let data = serde_json::json!({"manager": "apt", "install": install, "name": name});
                Change {
                    id: format!("package.{name}"),
                    kind: Kind::named("package"),
                    action,
                    keys: Vec::new(),
                    reason: String::new(),
                    diff: None,
                    checksum: None,
                    op: resource::kind::custom_op(Kind::named("package"), &data).unwrap(),
                    retry: crate::manifest::Retry {
                        retries,
                        ..Default::default()
                    },
                    notify: Default::default(),
                    sensitive: false,
                }
            })
            .collect();
        plan.removals_from = plan.changes.len();
        plan.depends_on = deps;
        plan
    }

    #[test]
    fn a_transaction_is_changes_of_one_action_that_wait_for_the_same_changes() {
        let c = Action::Create;
        let plan = package_plan(
            &[
                ("a", true, c, 0),
                ("b", true, c, 0),
                ("gone", false, Action::Remove, 0),
                ("c", true, c, 0),
                ("d", true, c, 0),
                ("e", true, c, 0),
                ("f", true, Action::Unchanged, 0),
                ("g", true, c, 2),
                ("h", true, c, 0),
                ("old", false, Action::Remove, 0),
            ],
            vec![
                vec![],
                vec![],
                vec![],
                vec![0],
                vec![0],
                vec![0, 1],
                vec![],
                vec![],
                vec![],
                vec![],
            ],
        );
        // a, b and h wait for nothing; c and d both wait for a (so for each
        // other's transaction); e waits for two; f has nothing to do; g
        // retries alone; the removals share the remove transaction.
        assert_eq!(
            transactions(&plan),
            vec![vec![0, 1, 8], vec![2, 9], vec![3, 4]]
        );

        // Removals of undeclared packages (past `removals_from`) run last:
        // they group with each other, never with a declared removal.
        let mut plan = package_plan(
            &[
                ("absent", false, Action::Remove, 0),
                ("x", false, Action::Remove, 0),
                ("y", false, Action::Remove, 0),
            ],
            vec![vec![], vec![], vec![]],
        );
        plan.removals_from = 1;
        assert_eq!(transactions(&plan), vec![vec![1, 2]]);
    }

    #[test]
    fn a_one_shot_that_succeeded_is_unchanged_and_plain_execs_still_run() {
        let fx = Fixture::new();
        let mut plan = fx.plan(M);
        settle_one_shots(
            &mut plan,
            &OneShots {
                succeeded: keys(&["exec.once", "exec.guarded"]),
                ..OneShots::default()
            },
        );
        assert_eq!(change(&plan, "exec.once").action, Action::Unchanged);
        assert_eq!(change(&plan, "exec.once").op, resource::Op::None);
        assert_eq!(change(&plan, "exec.guarded").action, Action::Unchanged);
        assert_eq!(change(&plan, "exec.plain").action, Action::Update);
    }

    #[test]
    fn an_unfinished_one_shot_reruns_only_when_guarded_or_asked() {
        let fx = Fixture::new();
        let unfinished = keys(&["exec.once", "exec.guarded"]);
        let mut plan = fx.plan(M);
        settle_one_shots(
            &mut plan,
            &OneShots {
                unfinished: unfinished.clone(),
                ..OneShots::default()
            },
        );
        let once = change(&plan, "exec.once");
        assert_eq!(once.action, Action::Conflict);
        assert!(
            once.reason.contains("stead apply --rerun exec.once"),
            "{}",
            once.reason
        );
        // Its guard said it is still needed: it runs (and the guard is
        // checked again right before).
        assert_eq!(change(&plan, "exec.guarded").action, Action::Update);

        let mut plan = fx.plan(M);
        settle_one_shots(
            &mut plan,
            &OneShots {
                unfinished,
                succeeded: keys(&["exec.guarded"]),
                rerun: ["exec.once".to_string(), "exec.guarded".to_string()].into(),
            },
        );
        assert_eq!(change(&plan, "exec.once").action, Action::Update);
        assert_eq!(change(&plan, "exec.guarded").action, Action::Update);
    }
}
