//! What `stead status` and `stead state check-drift` report: each managed
//! path compared with what stead recorded writing (drift), the diff of a
//! drifted file against its declared content, and the short two-column view
//! (what apply would do, what drifted) of a plan and those findings; and
//! which file of the config repo a managed path comes from (`stead edit`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::layout::Layout;
use crate::manifest::{FileContent, Kind, Manifest, Resource, Spec, expand_key};
use crate::plan::Plan;
use crate::resource::{Action, Drift, Facts, PlanContext};
use crate::seal::Check;
use crate::stat_cache::{Stamp, StatCache};
use crate::state::{DriftStatus, ResourceRecord, State};

/// One managed path compared with the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The path as stored (`~/x`).
    pub path: String,
    /// The resource that owns it.
    pub resource: String,
    /// How it differs.
    pub status: DriftStatus,
    /// What was expected (a checksum, a link target, a mode).
    pub expected: Option<String>,
    /// What is there.
    pub actual: Option<String>,
}

/// How a drift check may spare itself reading files.
#[derive(Debug, Clone, Copy)]
pub struct DriftCheck<'a> {
    /// Vouches for a file whose stat is exactly the one recorded when its
    /// content was last verified (racy-git rule, [`StatCache`]); `None`
    /// reads every file (`check-drift --full`).
    pub cache: Option<&'a StatCache>,
    /// What a converged seal vouches for ([`crate::seal`]): a file of a
    /// resource it vouches for is as it was when the whole plan was empty,
    /// so it is neither stat'ed nor read.
    pub sealed: Sealed<'a>,
    /// Threads that stat and read.
    pub jobs: usize,
}

/// What a converged seal vouches for, as a drift check sees it.
#[derive(Debug, Clone, Copy)]
pub enum Sealed<'a> {
    /// No seal held (or none was asked): nothing is vouched for.
    Nothing,
    /// The seal held: every resource is as sealed.
    Everything,
    /// The seal held but for the paths of these resources.
    AllBut(&'a HashSet<String>),
}

impl Sealed<'_> {
    fn vouches(&self, resource: &str) -> bool {
        match self {
            Sealed::Nothing => false,
            Sealed::Everything => true,
            Sealed::AllBut(changed) => !changed.contains(resource),
        }
    }
}

/// What a drift check of this machine may trust, read from its state dir:
/// a converged seal made for `key` and, when that does not hold, the stat
/// cache. Owns what a [`DriftCheck`] borrows.
#[derive(Debug)]
pub struct Trusted {
    seal: Option<crate::seal::Check>,
    cache: Option<StatCache>,
    jobs: usize,
}

impl Trusted {
    /// What may be trusted (`full`: nothing, every file is read). The
    /// seal is checked now, on `jobs` threads, as `stead plan` does: a
    /// check reads, so it takes no lock.
    pub fn read(layout: &Layout, key: &crate::seal::Key, full: bool, jobs: usize) -> Trusted {
        if full {
            return Trusted {
                seal: None,
                cache: None,
                jobs,
            };
        }
        let seal = crate::seal::Seal::read(layout).map(|s| s.check(key, jobs));
        // A seal that held at all leaves only its changed resources to
        // read, and those changed since the cache was made.
        let cache = match seal {
            Some(Check::Holds(_) | Check::Drifted(_)) => None,
            Some(Check::Broken) | None => Some(StatCache::load(layout.state_dir())),
        };
        Trusted { seal, cache, jobs }
    }

    /// Whether a converged seal holds: nothing changed since an apply
    /// found the machine as declared.
    pub fn holds(&self) -> bool {
        matches!(self.seal, Some(Check::Holds(_)))
    }

    /// What a seal that drifted still vouches for (a plan may plan only
    /// the rest: [`crate::converge::PrepareOptions::drift`]).
    pub fn drifted(&self) -> Option<&crate::seal::Drift> {
        match &self.seal {
            Some(Check::Drifted(drift)) => Some(drift),
            _ => None,
        }
    }

    /// The compiled manifest a seal that held names: the one a load of
    /// `stead.toml` would give now ([`crate::manifest::compiled`]).
    pub fn compiled(&self) -> Option<[u8; 32]> {
        match &self.seal {
            Some(Check::Holds(hit)) => hit.compiled,
            Some(Check::Drifted(drift)) => drift.compiled,
            Some(Check::Broken) | None => None,
        }
    }

    /// The check that trusts it.
    pub fn check(&self) -> DriftCheck<'_> {
        DriftCheck {
            cache: self.cache.as_ref(),
            sealed: match &self.seal {
                Some(Check::Holds(_)) => Sealed::Everything,
                Some(Check::Drifted(drift)) => Sealed::AllBut(&drift.resources),
                Some(Check::Broken) | None => Sealed::Nothing,
            },
            jobs: self.jobs,
        }
    }
}

impl DriftCheck<'_> {
    /// Reads every file, on `jobs` threads, trusting nothing.
    pub fn full(jobs: usize) -> DriftCheck<'static> {
        DriftCheck {
            cache: None,
            sealed: Sealed::Nothing,
            jobs,
        }
    }
}

/// What a drift check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drifts {
    /// Every recorded path compared, sorted by path.
    pub findings: Vec<Finding>,
    /// Files a seal or the stat cache vouched for, not read.
    pub trusted: usize,
}

/// Every path `state` records, compared with the disk (and with the
/// declared link targets and modes when `manifest` loaded), sorted by path.
/// `secrets`: this machine's, for the keyed checksums of sensitive files.
/// `check` says what may be trusted without reading ([`DriftCheck`]).
pub fn drift(
    state: &State,
    manifest: Option<&Manifest>,
    home: &Path,
    secrets: &crate::secret::Secrets,
    check: &DriftCheck,
) -> Drifts {
    let trusted = std::sync::atomic::AtomicUsize::new(0);
    let count = |vouched: bool| {
        if vouched {
            trusted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        vouched
    };
    // Declared resources by id (a map: `Manifest::get` scans, quadratic over the state).
    let declared: HashMap<&str, &Spec> = manifest
        .iter()
        .flat_map(|m| m.resources.iter().rev())
        .map(|r| (r.id.as_str(), &r.spec))
        .collect();
    let items: Vec<(&String, &ResourceRecord, &String)> = state
        .resources
        .iter()
        .flat_map(|(id, rec)| rec.keys.iter().map(move |key| (id, rec, key)))
        .collect();
    let found = crate::parallel::map(&items, check.jobs, |&(id, rec, key)| {
        let recorded = state
            .checksums
            .get(key)
            .map(crate::checksum::Checksum::text);
        // Only a file's content is read to compare; nothing else is vouched for.
        let is_file = rec.kind == Kind::File.as_str();
        let d = match recorded.as_ref() {
            // As sealed: the file holds what stead recorded, its mode and
            // type are as declared.
            Some(sum) if is_file && count(check.sealed.vouches(id)) => Drift {
                status: DriftStatus::Unchanged,
                expected: Some(sum.clone()),
                actual: Some(sum.clone()),
            },
            _ => {
                let vouch = |meta: &std::fs::Metadata| {
                    let entry = check.cache.and_then(|c| c.get(key));
                    match (entry, recorded.as_ref()) {
                        (Some(entry), Some(sum)) if is_file => {
                            count(entry.vouches(&Stamp::of(meta), sum))
                        }
                        _ => false,
                    }
                };
                crate::resource::drift(
                    &rec.kind,
                    &expand_key(home, key),
                    recorded.as_ref(),
                    &vouch,
                    declared.get(id.as_str()).copied(),
                    secrets,
                )
            }
        };
        Ok(Finding {
            path: key.clone(),
            resource: id.clone(),
            status: d.status,
            expected: d.expected,
            actual: d.actual,
        })
    });
    let mut findings: Vec<Finding> = found
        .into_iter()
        .zip(&items)
        .map(|(found, &(id, _, key))| {
            // A thread that panicked leaves its paths reported as not
            // known to be unchanged, not lost.
            found.unwrap_or_else(|why| Finding {
                path: key.clone(),
                resource: id.clone(),
                status: DriftStatus::Modified,
                expected: None,
                actual: Some(format!(
                    "not checked ({why}); run the check again, and report it if it repeats"
                )),
            })
        })
        .collect();
    findings.sort_by(|a, b| a.path.cmp(&b.path));
    Drifts {
        findings,
        trusted: trusted.into_inner(),
    }
}

/// Whether a resource's file contents may be shown (in a drift diff). This
/// is the one place that decides: a resource marked `sensitive` (or a file
/// of a sensitive tree) is refused here, so no front end can print its
/// content by another route.
pub fn may_show_content(resource: &Resource) -> bool {
    !resource.spec.is_sensitive()
}

/// A unified diff of a drifted file: its declared content (rendered, for a
/// template) against what is on disk now. `None` when there is nothing to
/// diff: not a declared file with content, nothing on disk, or content that
/// may not be shown ([`may_show_content`]).
pub fn drift_diff(manifest: &Manifest, finding: &Finding) -> Option<String> {
    let resource = manifest.get(&finding.resource)?;
    if !may_show_content(resource) {
        return None;
    }
    let Spec::File(file) = &resource.spec else {
        return None;
    };
    let content: &FileContent = file.content.as_ref()?;
    let facts = Facts::current(&manifest.home);
    let (owned, recorded) = (
        crate::resource::Owned::nothing(),
        crate::resource::Recorded::nothing(),
    );
    let ctx = PlanContext {
        manifest,
        facts: &facts,
        owned: &owned,
        recorded: &recorded,
        force: false,
        markers: &[],
        stat_cache: None,
        known_dirs: Default::default(),
        shared: Default::default(),
        recovered: &HashSet::new(),
        secrets: &crate::secret::Secrets::unavailable(),
    };
    let declared = crate::resource::file::desired_content(content, &ctx).ok()?;
    let path = expand_key(&manifest.home, &finding.path);
    let meta = std::fs::symlink_metadata(&path).ok()?;
    if !meta.file_type().is_file() {
        return None;
    }
    let actual = std::fs::read(&path).ok()?;
    (declared != actual).then(|| {
        unified(
            &format!("{} (declared)", finding.path),
            &format!("{} (on disk)", finding.path),
            &declared,
            &actual,
        )
    })
}

/// A unified diff of `old` → `new` under these labels; binary or very large
/// content is summarised (the plan's diff, uncut).
pub fn unified(old_label: &str, new_label: &str, old: &[u8], new: &[u8]) -> String {
    crate::resource::file::unified_diff(old_label, new_label, old, new)
}

/// The file in the config repo that a managed path comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceOf {
    /// The resource that declares the path.
    pub resource: String,
    /// Its `source` or `template` file (or the repo file below a linked
    /// directory).
    pub source: PathBuf,
}

/// Why a managed path has no source to edit.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// No resource declares it.
    #[error(
        "{0} is not managed by any resource of the manifest\nAdd it first with 'stead add {0}'."
    )]
    NotManaged(String),
    /// Declared, but its content is not a file in the repo.
    #[error("{resource} has no source file to edit: {why}\nEdit stead.toml instead.")]
    NoSource {
        /// The resource.
        resource: String,
        /// What it declares instead.
        why: &'static str,
    },
}

/// The source of `target`: a resource id (`file.bashrc`), or `path` (the
/// target made absolute), a path a resource manages (a tree's files are
/// resources of their own): its `source` or `template`, or a link's target
/// inside the config repo; or a file below a linked directory of the repo
/// (`stead add --link ~/.config/fish`), which is edited where it is.
pub fn source_of(manifest: &Manifest, target: &str, path: &Path) -> Result<SourceOf, SourceError> {
    let real = match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => std::fs::canonicalize(parent)
            .map(|p| p.join(name))
            .unwrap_or_else(|_| path.to_path_buf()),
        _ => path.to_path_buf(),
    };
    let managed = || {
        manifest
            .resources
            .iter()
            .find(|r| r.spec.path().is_some_and(|p| p == real || p == path))
    };
    let in_linked_dir = || {
        manifest.resources.iter().find(|r| {
            matches!(&r.spec, Spec::Symlink(l)
                if l.target.starts_with(&manifest.config_dir)
                    && std::fs::canonicalize(&l.target).is_ok_and(|t| real.starts_with(t)))
        })
    };
    let (resource, inside) = match manifest.get(target).or_else(managed) {
        Some(r) => (r, false),
        None => (
            in_linked_dir().ok_or_else(|| SourceError::NotManaged(target.to_string()))?,
            true,
        ),
    };
    let no_source = |why| SourceError::NoSource {
        resource: resource.id.clone(),
        why,
    };
    let source = match &resource.spec {
        _ if inside => real,
        Spec::File(f) => match &f.content {
            Some(FileContent::Source(s) | FileContent::Template(s)) => s.clone(),
            Some(FileContent::Inline(_) | FileContent::Secret(_)) => {
                return Err(no_source("its content is inline"));
            }
            None => return Err(no_source("it is declared absent")),
        },
        Spec::Symlink(l) if l.target.starts_with(&manifest.config_dir) => l.target.clone(),
        Spec::Symlink(_) => return Err(no_source("its target is outside the config repo")),
        _ => return Err(no_source("it is not a file")),
    };
    Ok(SourceOf {
        resource: resource.id.clone(),
        source,
    })
}

/// One line of `stead status`: a path, what apply would do there, and how
/// it drifted since stead wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Line {
    /// The path as stored (`~/x`), or the resource id for one with no path.
    pub path: String,
    /// The resource.
    pub resource: String,
    /// What apply would do (`None`: nothing).
    pub apply: Option<Action>,
    /// How it drifted (`None`: it did not).
    pub drift: Option<DriftStatus>,
}

impl Line {
    /// The two columns: the plan symbol (`+ ~ - !`) and the drift letter.
    pub fn columns(&self) -> (&'static str, &'static str) {
        let apply = self.apply.map_or(" ", Action::symbol);
        (apply, self.drift.map_or(" ", drift_letter))
    }
}

/// The drift column's letter: `M` modified, `D` deleted (missing), `T`
/// type changed (replaced), `P` permissions, `L` link retargeted.
pub fn drift_letter(status: DriftStatus) -> &'static str {
    match status {
        DriftStatus::Unchanged => " ",
        DriftStatus::Modified => "M",
        DriftStatus::Missing => "D",
        DriftStatus::Replaced => "T",
        DriftStatus::Mode => "P",
        DriftStatus::Retargeted => "L",
    }
}

/// The status lines: every path a change of `plan` acts on or a finding
/// says drifted, one line each, sorted by path. Empty: clean.
pub fn lines(plan: &Plan, findings: &[Finding]) -> Vec<Line> {
    let mut by_path: BTreeMap<String, Line> = BTreeMap::new();
    for c in &plan.changes {
        if c.action == Action::Unchanged {
            continue;
        }
        let keys: Vec<String> = if c.keys.is_empty() {
            vec![c.id.clone()]
        } else {
            c.keys.clone()
        };
        for key in keys {
            by_path
                .entry(key.clone())
                .or_insert_with(|| Line {
                    path: key,
                    resource: c.id.clone(),
                    apply: None,
                    drift: None,
                })
                .apply = Some(c.action);
        }
    }
    for f in findings.iter().filter(|f| f.status.drifted()) {
        by_path
            .entry(f.path.clone())
            .or_insert_with(|| Line {
                path: f.path.clone(),
                resource: f.resource.clone(),
                apply: None,
                drift: None,
            })
            .drift = Some(f.status);
    }
    by_path.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::tests::Fixture;

    #[test]
    fn a_drifted_file_has_a_line_in_both_columns_and_its_diff() {
        let mut fx = Fixture::new();
        let m = "[file.a]\npath = \"~/a\"\ncontent = \"one\\ntwo\\n\"\n\n\
                 [file.b]\npath = \"~/b\"\ncontent = \"b\\n\"\n";
        fx.apply(m);
        std::fs::write(fx.home.join("a"), "one\nthree\n").unwrap();
        let manifest = fx.manifest(m);
        let findings = drift(
            &fx.state,
            Some(&manifest),
            &fx.home,
            &crate::secret::Secrets::unavailable(),
            &DriftCheck::full(4),
        )
        .findings;
        let drifted: Vec<_> = findings.iter().filter(|f| f.status.drifted()).collect();
        assert_eq!(drifted.len(), 1);
        assert_eq!(drifted[0].path, "~/a");
        let diff = drift_diff(&manifest, drifted[0]).unwrap();
        assert!(diff.contains("--- ~/a (declared)"), "{diff}");
        assert!(diff.contains("-two\n+three"), "{diff}");
        let plan = fx.plan(m);
        let lines = lines(&plan, &findings);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].columns(), ("~", "M"));
        // Unchanged files have no diff.
        let b = findings.iter().find(|f| f.path == "~/b").unwrap();
        assert_eq!(drift_diff(&manifest, b), None);
    }

    const TWO_FILES: &str = "[file.a]\npath = \"~/a\"\ncontent = \"one\\n\"\n\n\
                             [file.b]\npath = \"~/b\"\ncontent = \"b\\n\"\n";

    fn status_of(drifts: &Drifts, path: &str) -> DriftStatus {
        drifts
            .findings
            .iter()
            .find(|f| f.path == path)
            .map(|f| f.status)
            .unwrap()
    }

    #[test]
    fn a_file_a_seal_vouches_for_is_taken_as_recorded_and_full_reads_it() {
        let mut fx = Fixture::new();
        fx.apply(TWO_FILES);
        // Changed behind the seal's back (a seal that held would not be
        // believed here; this shows what it spares).
        std::fs::write(fx.home.join("a"), "changed\n").unwrap();
        let manifest = fx.manifest(TWO_FILES);
        let secrets = crate::secret::Secrets::unavailable();
        let run = |check: &DriftCheck| drift(&fx.state, Some(&manifest), &fx.home, &secrets, check);
        let everything = DriftCheck {
            sealed: Sealed::Everything,
            ..DriftCheck::full(2)
        };
        let found = run(&everything);
        assert_eq!(status_of(&found, "~/a"), DriftStatus::Unchanged);
        assert_eq!(found.trusted, 2);
        let changed: HashSet<String> = ["file.a".to_string()].into();
        let all_but_a = DriftCheck {
            sealed: Sealed::AllBut(&changed),
            ..DriftCheck::full(2)
        };
        let found = run(&all_but_a);
        assert_eq!(status_of(&found, "~/a"), DriftStatus::Modified);
        assert_eq!(status_of(&found, "~/b"), DriftStatus::Unchanged);
        assert_eq!(found.trusted, 1);
        let found = run(&DriftCheck::full(2));
        assert_eq!(status_of(&found, "~/a"), DriftStatus::Modified);
        assert_eq!(found.trusted, 0);
        // A vouched-for file is not even stat'ed: the seal's own check of
        // its path stands for that (here it went behind the seal's back,
        // and only the full check sees it).
        std::fs::remove_file(fx.home.join("b")).unwrap();
        let found = run(&all_but_a);
        assert_eq!(status_of(&found, "~/b"), DriftStatus::Unchanged);
        let found = run(&DriftCheck::full(2));
        assert_eq!(status_of(&found, "~/b"), DriftStatus::Missing);
    }

    #[test]
    fn a_file_the_stat_cache_vouches_for_is_not_read_unless_its_stamp_or_the_racy_rule_says_so() {
        use crate::stat_cache::Entry;
        let mut fx = Fixture::new();
        fx.apply(TWO_FILES);
        let path = fx.home.join("a");
        std::fs::write(&path, "changed\n").unwrap();
        let recorded = fx.state.checksums["~/a"].text();
        let stamp = Stamp::of(&std::fs::symlink_metadata(&path).unwrap());
        let settled = stamp.mtime_ns.max(stamp.ctime_ns) + crate::stat_cache::RACY_NS;
        let cache_of = |stamp: Stamp, verified_ns: i128| {
            StatCache::of([(
                "~/a".to_string(),
                Entry::new(stamp, &recorded, verified_ns).unwrap(),
            )])
        };
        let manifest = fx.manifest(TWO_FILES);
        let secrets = crate::secret::Secrets::unavailable();
        let run = |cache: &StatCache| {
            let check = DriftCheck {
                cache: Some(cache),
                ..DriftCheck::full(2)
            };
            drift(&fx.state, Some(&manifest), &fx.home, &secrets, &check)
        };
        // The entry says this very stamp held the recorded content: it is
        // believed, so the file is not read.
        let found = run(&cache_of(stamp, settled));
        assert_eq!(status_of(&found, "~/a"), DriftStatus::Unchanged);
        assert_eq!(found.trusted, 1);
        // Verified within the racy window of its last change: read.
        let found = run(&cache_of(stamp, settled - 1));
        assert_eq!(status_of(&found, "~/a"), DriftStatus::Modified);
        assert_eq!(found.trusted, 0);
        // Another stamp (one field off): read.
        let other = Stamp {
            size: stamp.size + 1,
            ..stamp
        };
        let found = run(&cache_of(other, settled));
        assert_eq!(status_of(&found, "~/a"), DriftStatus::Modified);
        assert_eq!(found.trusted, 0);
    }

    #[test]
    fn the_source_of_a_path_is_its_source_or_template_and_inline_content_has_none() {
        let fx = Fixture::new();
        fx.write_repo("bashrc", "x\n");
        fx.write_repo("gitconfig.j2", "{{ user }}\n");
        let m = fx.manifest(
            "[file.bashrc]\npath = \"~/.bashrc\"\nsource = \"bashrc\"\n\n\
             [file.git]\npath = \"~/.gitconfig\"\ntemplate = \"gitconfig.j2\"\n\n\
             [file.inline]\npath = \"~/.inline\"\ncontent = \"i\"\n",
        );
        let home = |rel: &str| fx.home.join(rel);
        let found = source_of(&m, "x", &home(".bashrc")).unwrap();
        assert_eq!(found.resource, "file.bashrc");
        assert!(found.source.ends_with("bashrc") && found.source.starts_with(&fx.repo));
        let found = source_of(&m, "file.git", Path::new("/nowhere")).unwrap();
        assert!(found.source.ends_with("gitconfig.j2"));
        assert!(matches!(
            source_of(&m, "x", &home(".inline")),
            Err(SourceError::NoSource { .. })
        ));
        assert!(matches!(
            source_of(&m, "x", &home(".nothing")),
            Err(SourceError::NotManaged(_))
        ));
    }
}
