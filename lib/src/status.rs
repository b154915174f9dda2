//! What `stead status` and `stead state check-drift` report: each managed
//! path compared with what stead recorded writing (drift), the diff of a
//! drifted file against its declared content, and the short two-column view
//! (what apply would do, what drifted) of a plan and those findings; and
//! which file of the config repo a managed path comes from (`stead edit`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::manifest::{FileContent, Manifest, Resource, Spec, expand_key};
use crate::plan::Plan;
use crate::resource::{Action, Facts, PlanContext};
use crate::state::{DriftStatus, State};

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

/// Every path `state` records, compared with the disk (and with the
/// declared link targets and modes when `manifest` loaded), sorted by path.
/// `secrets`: this machine's, for the keyed checksums of sensitive files.
pub fn drift(
    state: &State,
    manifest: Option<&Manifest>,
    home: &Path,
    secrets: &crate::secret::Secrets,
) -> Vec<Finding> {
    // Declared resources by id (a map: `Manifest::get` scans, quadratic over the state).
    let declared: HashMap<&str, &Spec> = manifest
        .iter()
        .flat_map(|m| m.resources.iter().rev())
        .map(|r| (r.id.as_str(), &r.spec))
        .collect();
    let mut findings = Vec::new();
    for (id, rec) in &state.resources {
        for key in &rec.keys {
            let path = expand_key(home, key);
            let d = crate::resource::drift(
                &rec.kind,
                &path,
                state
                    .checksums
                    .get(key)
                    .map(crate::checksum::Checksum::text)
                    .as_ref(),
                declared.get(id.as_str()).copied(),
                secrets,
            );
            findings.push(Finding {
                path: key.clone(),
                resource: id.clone(),
                status: d.status,
                expected: d.expected,
                actual: d.actual,
            });
        }
    }
    findings.sort_by(|a, b| a.path.cmp(&b.path));
    findings
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
    let (owned, recorded) = (crate::resource::Owned::nothing(), BTreeMap::new());
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
        );
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
