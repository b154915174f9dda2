//! File trees: a `[file.NAME]` whose `source` is a directory of the config
//! repo manages the whole tree under its `path`.
//!
//! A tree is not one big resource: at load it expands ([`KindSchema::expand`])
//! into one first-class resource per entry of the source (a `dir` for the
//! root and each subdirectory, a `file` per file, or a `symlink` per file
//! with `link = true`; files ending in the template suffix, `.j2` unless
//! declared, render as templates under the name without it), so each is
//! planned, checksummed, journaled, owned, drift-checked and repaired by its
//! own path, exactly as if declared one by one. The member ids are
//! `file.NAME/REL` (the root dir is `file.NAME/`).
//!
//! The declaration itself stays as one resource of the `tree` kind, after
//! every member (so `after = ["file.NAME"]` waits for the whole tree), whose
//! plan is the tree's own business: with `purge = true`, entries under the
//! root that no member manages and stead never wrote are reported, and only
//! with `--force` removed (each backed up first). What stead wrote earlier
//! and is no longer in the source is removed with `purge = true`, and left in
//! place (forgotten, not deleted) without it ([`ResourceKind::keeps_in_place`]).
//!
//! `ignore` patterns (gitignore syntax, relative to the tree's source) and
//! the repo's `.steadignore` (relative to the repo's root) leave entries out
//! of the source, and out of the purge's report on the target side.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::fsutil::FsError;
use crate::manifest::{
    DirSpec, FileContent, FileSpec, Kind, OtherSpec, Problem, Resource, Spec, SpecInput,
    SymlinkSpec,
};

use super::kind::{
    ApplyEnv, Key, KindSchema, Planned, ResourceKind, custom_data, custom_op, unexpected_op,
    unexpected_spec,
};
use super::{Action, Applied, Op, PlanContext, ResourceError};

/// The kind of a tree's own resource (never declared as such).
pub const TREE: Kind = Kind::named("tree");

/// The file at the repo's root whose patterns every tree ignores.
pub const STEADIGNORE: &str = ".steadignore";

/// The template suffix when none is declared.
pub const DEFAULT_TEMPLATE_SUFFIX: &str = ".j2";

/// The keys only a tree takes (the `file` kind lists them).
pub const TREE_KEYS: [&str; 4] = ["ignore", "purge", "link", "template_suffix"];

/// Entries one tree may hold: past this the source is almost surely the
/// wrong directory (a home, a build dir).
pub const MAX_ENTRIES: usize = 200_000;

/// What a tree declaration says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeSpec {
    /// The target root (absolute, real).
    pub root: PathBuf,
    /// The source directory in the config repo.
    pub source: PathBuf,
    /// The config repo (where `.steadignore` is).
    pub config_dir: PathBuf,
    /// `ignore` patterns, gitignore syntax, relative to `source`.
    pub ignore: Vec<String>,
    /// Remove what stead wrote that left the source; report the rest.
    pub purge: bool,
    /// Link each file instead of copying it.
    pub link: bool,
    /// Files ending in it render as templates (empty: none do).
    pub template_suffix: String,
    /// The mode of every file (else each keeps its source's).
    pub mode: Option<u32>,
    /// Every file's content is kept out of plans, diffs and JSON.
    pub sensitive: bool,
}

/// The `tree` kind.
pub struct Tree;

impl KindSchema for Tree {
    fn kind(&self) -> Kind {
        TREE
    }

    fn keys(&self) -> &'static [Key] {
        &[]
    }

    fn declarable(&self) -> bool {
        false
    }

    fn build(&self, _input: &mut SpecInput) -> Option<Spec> {
        None
    }

    fn expand(&self, resource: Resource, problems: &mut Vec<Problem>) -> Vec<Resource> {
        let Some(spec) = tree_spec(&resource.spec).cloned() else {
            return vec![resource];
        };
        match walk_source(&spec) {
            Ok(entries) => members(resource, &spec, &entries),
            Err(message) => {
                problems.push(Problem::at(resource.span.clone(), message).label("tree source"));
                Vec::new()
            }
        }
    }
}

impl ResourceKind for Tree {
    fn plan(&self, spec: &Spec, ctx: &PlanContext, _owned: bool) -> Result<Planned, ResourceError> {
        let Some(t) = tree_spec(spec) else {
            return Err(unexpected_spec(self.kind(), spec));
        };
        plan(t, ctx)
    }

    fn apply(&self, op: &Op, env: &ApplyEnv) -> Result<Applied, ResourceError> {
        let Op::Custom { data } = op else {
            return Err(unexpected_op(self.kind(), op));
        };
        let strays: Strays = custom_data(self.kind(), data)?;
        remove_strays(&strays.entries, env.backups)
    }

    fn keeps_in_place(&self, resource: &Resource, gone: &str) -> Option<String> {
        let t = tree_spec(&resource.spec)?;
        let inside = gone
            .strip_prefix(resource.id.as_str())
            .is_some_and(|rest| rest.starts_with('/'));
        (inside && !t.purge).then(|| {
            format!(
                "no longer in the source of {}; left in place and no longer managed (purge = true removes it)",
                resource.id
            )
        })
    }

    fn watch_paths(&self, spec: &Spec) -> Vec<PathBuf> {
        spec.path().map(Path::to_path_buf).into_iter().collect()
    }
}

/// The tree spec in `spec`, if it is one.
pub fn tree_spec(spec: &Spec) -> Option<&TreeSpec> {
    match spec {
        Spec::Other(o) if o.kind == TREE => o.data::<TreeSpec>(),
        _ => None,
    }
}

/// `Some` when the declaration's `source` is a directory: the tree's spec
/// (`None` inside when it has a problem, recorded in `input`). `None`: not
/// a tree (no `source`, or not a directory), and nothing was recorded.
pub fn declared(input: &mut SpecInput) -> Option<Option<Spec>> {
    if !input.has("source") {
        return None;
    }
    let Some((source, _)) = input.repo_path_at("source") else {
        return Some(None);
    };
    if !fs::metadata(&source).is_ok_and(|m| m.is_dir()) {
        return None;
    }
    Some(build(input, source))
}

fn build(input: &mut SpecInput, source: PathBuf) -> Option<Spec> {
    let id = input.id().to_string();
    for key in ["content", "template", "ensure"] {
        if input.has(key) {
            input.problem(
                Problem::at(
                    input.span(),
                    format!("{id} has a directory `source` (a tree) and `{key}`"),
                )
                .label("tree")
                .help("a tree's files come from its source directory; remove the key"),
            );
            return None;
        }
    }
    let root = input.path()?;
    let config_dir = input.config_dir().to_path_buf();
    if !source.starts_with(&config_dir) || source == config_dir {
        input.problem(
            Problem::at(
                input.span(),
                format!(
                    "{id}'s source {} is not a directory inside the config repo",
                    source.display()
                ),
            )
            .label("tree source outside the repo")
            .help("a tree copies a directory of the config repo, e.g. source = \"nvim\""),
        );
        return None;
    }
    if root.starts_with(&config_dir) || root.starts_with(&source) {
        input.problem(
            Problem::at(
                input.span(),
                format!(
                    "{id} would write its tree into the config repo ({})",
                    root.display()
                ),
            )
            .label("tree inside the repo")
            .help("a tree's `path` is where its files go, outside the config repo"),
        );
        return None;
    }
    let purge = input.flag("purge");
    if purge && super::dir::holds_the_home(&root, input.home()) {
        input.problem(
            Problem::at(
                input.span(),
                format!(
                    "`purge` of the tree {id} would report everything in {} that the tree does not hold",
                    crate::manifest::display_path(input.home(), &root)
                ),
            )
            .label("purges the home")
            .help("purge a tree inside the home, such as ~/.config/app"),
        );
        return None;
    }
    let ignore = input.list("ignore").into_iter().map(|(p, _)| p).collect();
    let template_suffix = input
        .text("template_suffix")
        .unwrap_or_else(|| DEFAULT_TEMPLATE_SUFFIX.to_string());
    let spec = TreeSpec {
        root: root.clone(),
        source,
        config_dir,
        ignore,
        purge,
        link: input.flag("link"),
        template_suffix,
        mode: input.mode("mode"),
        sensitive: input.flag("sensitive"),
    };
    if let Err(message) = matchers(&spec) {
        input.problem(Problem::at(input.span(), message).label("bad ignore pattern"));
        return None;
    }
    Some(Spec::Other(OtherSpec {
        kind: TREE,
        path: Some(root),
        data: Arc::new(spec),
    }))
}

/// The tree's ignore rules: its own `ignore`, then the repo's `.steadignore`.
struct Matchers {
    own: Gitignore,
    repo: Gitignore,
}

impl Matchers {
    /// Whether the source path `path` is left out.
    fn ignores(&self, path: &Path, is_dir: bool) -> bool {
        let name = path.file_name().and_then(|n| n.to_str());
        if matches!(name, Some(".git") | Some(STEADIGNORE)) {
            return true;
        }
        let own = self.own.matched(path, is_dir);
        if own.is_whitelist() {
            return false;
        }
        own.is_ignore() || self.repo.matched(path, is_dir).is_ignore()
    }
}

fn matchers(t: &TreeSpec) -> Result<Matchers, String> {
    let mut own = GitignoreBuilder::new(&t.source);
    for p in &t.ignore {
        own.add_line(None, p)
            .map_err(|e| format!("bad `ignore` pattern {p:?}: {e}"))?;
    }
    let mut repo = GitignoreBuilder::new(&t.config_dir);
    let file = t.config_dir.join(STEADIGNORE);
    if file.is_file()
        && let Some(e) = repo.add(&file)
    {
        return Err(format!("cannot use {}: {e}", file.display()));
    }
    Ok(Matchers {
        own: own.build().map_err(|e| format!("bad `ignore`: {e}"))?,
        repo: repo
            .build()
            .map_err(|e| format!("cannot use {}: {e}", file.display()))?,
    })
}

/// One entry of a tree's source.
#[derive(Debug)]
struct SourceEntry {
    /// Relative to the source.
    rel: PathBuf,
    is_dir: bool,
    mode: u32,
}

/// The source's entries, ignored ones left out, sorted by path. A link or a
/// special file in the source is an error: a tree copies regular files, and
/// never follows a link out of the repo.
fn walk_source(t: &TreeSpec) -> Result<Vec<SourceEntry>, String> {
    let m = Arc::new(matchers(t)?);
    let filter = Arc::clone(&m);
    let walker = ignore::WalkBuilder::new(&t.source)
        .standard_filters(false)
        .hidden(false)
        .follow_links(false)
        .sort_by_file_name(|a, b| a.cmp(b))
        .filter_entry(move |e| {
            let is_dir = e.file_type().is_some_and(|f| f.is_dir());
            e.depth() == 0 || !filter.ignores(e.path(), is_dir)
        })
        .build();
    let mut out = Vec::new();
    for entry in walker {
        let entry = entry.map_err(|e| format!("cannot read the tree's source: {e}"))?;
        if entry.depth() == 0 {
            continue;
        }
        let path = entry.path();
        let meta = fs::symlink_metadata(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let ft = meta.file_type();
        if !(ft.is_file() || ft.is_dir()) {
            let what = if ft.is_symlink() {
                "a symlink"
            } else {
                crate::ownfile::special_kind(ft).unwrap_or("a special file")
            };
            return Err(format!(
                "{} in the tree's source is {what}; a tree holds only files and directories (add it to `ignore`, or declare a [symlink.NAME] for it)",
                path.display()
            ));
        }
        let rel = path.strip_prefix(&t.source).unwrap_or(path).to_path_buf();
        out.push(SourceEntry {
            rel,
            is_dir: ft.is_dir(),
            mode: meta.permissions().mode() & 0o7777,
        });
        if out.len() > MAX_ENTRIES {
            return Err(format!(
                "the tree's source {} holds more than {MAX_ENTRIES} entries; is it the right directory? (`ignore` leaves parts out)",
                t.source.display()
            ));
        }
    }
    Ok(out)
}

/// The resources a tree stands for: its members, then itself after them.
fn members(tree: Resource, t: &TreeSpec, entries: &[SourceEntry]) -> Vec<Resource> {
    let member = |rel: &Path, spec: Spec| Resource {
        id: format!("{}/{}", tree.id, rel.display()),
        spec,
        after: tree.after.clone(),
        before: Default::default(),
        notify: tree.notify.clone(),
        references: Default::default(),
        retry: tree.retry,
        span: tree.span.clone(),
    };
    let mut out = Vec::with_capacity(entries.len() + 2);
    // The root may exist already (~/.config): its mode stays the user's.
    out.push(member(
        Path::new(""),
        Spec::Dir(DirSpec {
            path: t.root.clone(),
            mode: None,
            purge: false,
        }),
    ));
    for e in entries {
        let source = t.source.join(&e.rel);
        let (rel, spec) = if e.is_dir {
            let spec = Spec::Dir(DirSpec {
                path: t.root.join(&e.rel),
                mode: Some(e.mode),
                purge: false,
            });
            (e.rel.clone(), spec)
        } else if let Some(rel) = template_target(&e.rel, &t.template_suffix) {
            let spec = Spec::File(FileSpec {
                path: t.root.join(&rel),
                content: Some(FileContent::Template(source)),
                mode: Some(t.mode.unwrap_or(e.mode)),
                sensitive: t.sensitive,
            });
            (rel, spec)
        } else if t.link {
            let spec = Spec::Symlink(SymlinkSpec {
                path: t.root.join(&e.rel),
                target: source,
            });
            (e.rel.clone(), spec)
        } else {
            let spec = Spec::File(FileSpec {
                path: t.root.join(&e.rel),
                content: Some(FileContent::Source(source)),
                mode: Some(t.mode.unwrap_or(e.mode)),
                sensitive: t.sensitive,
            });
            (e.rel.clone(), spec)
        };
        out.push(member(&rel, spec));
    }
    let mut tree = tree;
    tree.after.extend(out.iter().map(|r| r.id.clone()));
    out.push(tree);
    out
}

/// `rel` without the template suffix, when it has it (and more).
fn template_target(rel: &Path, suffix: &str) -> Option<PathBuf> {
    if suffix.is_empty() {
        return None;
    }
    let name = rel.file_name()?.to_str()?;
    let stem = name.strip_suffix(suffix).filter(|s| !s.is_empty())?;
    Some(rel.with_file_name(stem))
}

/// Entries under a purged tree that stead never wrote, to remove.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Strays {
    entries: Vec<PathBuf>,
}

/// How many strays a plan line names before "and N more".
const NAMED_STRAYS: usize = 5;

fn plan(t: &TreeSpec, ctx: &PlanContext) -> Result<Planned, ResourceError> {
    if !t.purge {
        return Ok(Planned::unchanged(""));
    }
    let strays = find_strays(t, ctx)?;
    if strays.is_empty() {
        return Ok(Planned::unchanged(""));
    }
    let mut names: Vec<String> = strays
        .iter()
        .take(NAMED_STRAYS)
        .map(|p| ctx.manifest.display_path(p))
        .collect();
    if strays.len() > NAMED_STRAYS {
        names.push(format!("and {} more", strays.len() - NAMED_STRAYS));
    }
    let what = format!(
        "{} {} stead never wrote: {}",
        strays.len(),
        if strays.len() == 1 {
            "entry"
        } else {
            "entries"
        },
        names.join(", ")
    );
    if !ctx.force {
        return Ok(Planned::conflict(format!(
            "{what}; left alone. 'stead apply --force' removes them (each backed up first), or add them to `ignore`"
        )));
    }
    let op = custom_op(TREE, &Strays { entries: strays })?;
    Ok(Planned::new(
        Action::Update,
        format!("purge {what} (each backed up first)"),
        op,
    ))
}

/// What lies under the root that no member manages, stead does not own,
/// no ignore rule covers and nothing protects, shallowest first (a stray
/// directory is one entry, unless something kept lies inside it).
fn find_strays(t: &TreeSpec, ctx: &PlanContext) -> Result<Vec<PathBuf>, ResourceError> {
    let rules = matchers(t).map_err(ResourceError::Internal)?;
    let members: HashSet<&Path> = ctx
        .manifest
        .resources
        .iter()
        .filter_map(|r| r.spec.path())
        .filter(|p| p.starts_with(&t.root))
        .collect();
    let kept = |p: &Path| {
        members.contains(p)
            || ctx.owned.contains(None, &ctx.manifest.display_path(p))
            || ctx.manifest.protected.iter().any(|k| k.starts_with(p))
            || ctx.markers.iter().any(|k| k.starts_with(p))
    };
    let holds_kept =
        |dir: &Path| {
            members.iter().any(|m| m.starts_with(dir))
                || ctx.markers.iter().any(|k| k.starts_with(dir))
                || ctx.manifest.protected.iter().any(|k| k.starts_with(dir))
                || ctx.owned.all().iter().any(|k| {
                    crate::manifest::expand_key(&ctx.manifest.real_home, k).starts_with(dir)
                })
        };
    let mut out = Vec::new();
    let mut dirs = vec![t.root.clone()];
    while let Some(dir) = dirs.pop() {
        let read = match fs::read_dir(&dir) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(FsError::new("cannot read", &dir, e).into()),
        };
        let mut found = Vec::new();
        for entry in read {
            let entry = entry.map_err(|e| FsError::new("cannot read", &dir, e))?;
            found.push((entry.path(), entry.file_type().is_ok_and(|f| f.is_dir())));
        }
        found.sort();
        for (path, is_dir) in found {
            let rel = path.strip_prefix(&t.root).unwrap_or(&path);
            if rules.ignores(&t.source.join(rel), is_dir) {
                continue;
            }
            if is_dir && (members.contains(path.as_path()) || holds_kept(&path)) {
                dirs.push(path);
            } else if !kept(&path) {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Removes the strays, each backed up first, relative to its parent (no
/// link followed): the same removal as a `dir` purge, grouped by parent.
fn remove_strays(entries: &[PathBuf], backups: &Path) -> Result<Applied, ResourceError> {
    let mut by_parent: BTreeMap<&Path, Vec<PathBuf>> = BTreeMap::new();
    for e in entries {
        if let Some(parent) = e.parent() {
            by_parent.entry(parent).or_default().push(e.clone());
        }
    }
    let mut applied = Applied::default();
    for (parent, list) in by_parent {
        let done = super::dir::purge(parent, None, &list, backups)?;
        if applied.backup.is_none() {
            applied.backup = done.backup;
        }
    }
    applied.output = Some(format!(
        "removed {} entries stead never wrote (backed up)",
        entries.len()
    ));
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(source: &Path, config: &Path, ignore: &[&str]) -> TreeSpec {
        TreeSpec {
            root: PathBuf::from("/nowhere"),
            source: source.to_path_buf(),
            config_dir: config.to_path_buf(),
            ignore: ignore.iter().map(|s| s.to_string()).collect(),
            purge: false,
            link: false,
            template_suffix: DEFAULT_TEMPLATE_SUFFIX.into(),
            mode: None,
            sensitive: false,
        }
    }

    #[test]
    fn the_template_suffix_is_stripped_only_from_names_that_have_more() {
        let t = |p: &str, s: &str| template_target(Path::new(p), s);
        assert_eq!(t("a/b.conf.j2", ".j2"), Some(PathBuf::from("a/b.conf")));
        assert_eq!(t("a/.j2", ".j2"), None);
        assert_eq!(t("a/b.conf", ".j2"), None);
        assert_eq!(t("a/b.conf.j2", ""), None);
    }

    #[test]
    fn ignore_rules_have_gitignore_semantics_and_the_tree_can_take_back_the_repo_s() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path();
        let source = config.join("tree");
        fs::create_dir_all(source.join("sub/cache")).unwrap();
        fs::write(config.join(STEADIGNORE), "*.log\n/tree/top-only\n").unwrap();
        let m = matchers(&spec(
            &source,
            config,
            &["cache/", "!keep.log", "/anchored"],
        ))
        .unwrap();
        let ig = |rel: &str, dir: bool| m.ignores(&source.join(rel), dir);
        assert!(ig("sub/x.log", false), "the repo's rule applies everywhere");
        assert!(!ig("sub/keep.log", false), "the tree's negation wins");
        assert!(
            ig("sub/cache", true) && !ig("sub/cache", false),
            "cache/ is a directory rule"
        );
        assert!(
            ig("anchored", false) && !ig("sub/anchored", false),
            "anchored to the source"
        );
        assert!(
            ig("top-only", false),
            "the repo's rules are relative to the repo"
        );
        assert!(ig(".git", true) && ig("sub/.steadignore", false));
        assert!(!ig("sub/x.txt", false));
    }

    #[test]
    fn a_bad_pattern_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = matchers(&spec(dir.path(), dir.path(), &["a[z-a]"]))
            .err()
            .unwrap();
        assert!(err.contains("bad `ignore` pattern \"a[z-a]\""), "{err}");
    }
}
