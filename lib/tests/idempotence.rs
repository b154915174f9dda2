//! Property: applying a random manifest of files, dirs and symlinks converges
//! in one run. A second plan is empty, applying it touches nothing (no mtime
//! moves), and dropping some resources removes exactly what stead created for
//! them, after which the plan is empty again.
//!
//! 32 cases by default; set `PROPTEST_CASES` to run more.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use proptest::prelude::*;
use stead_lib::engine::{self, EngineOptions, Outcome};
use stead_lib::graph::Graph;
use stead_lib::machine::MachineInfo;
use stead_lib::manifest::{LoadOptions, Manifest};
use stead_lib::plan::{self, Plan};
use stead_lib::resource::Action;
use stead_lib::state::State;

#[derive(Debug, Clone)]
enum Content {
    Inline(String),
    Source(String),
    Template(String),
}

#[derive(Debug, Clone)]
struct DirDecl {
    parent: Option<usize>,
    mode: Option<u32>,
    purge: bool,
}

#[derive(Debug, Clone)]
struct FileDecl {
    parent: Option<usize>,
    /// In an undeclared subdirectory (created as a parent on write).
    nested: bool,
    content: Content,
    mode: Option<u32>,
}

#[derive(Debug, Clone)]
enum Target {
    /// Another declared dir or file, by index into dirs ++ files.
    Managed(usize),
    /// A path in the config repo (relative in the manifest).
    Repo(String),
    /// An absolute path outside home.
    Outside,
}

#[derive(Debug, Clone)]
struct LinkDecl {
    parent: Option<usize>,
    target: Target,
}

#[derive(Debug, Clone)]
struct Case {
    dirs: Vec<DirDecl>,
    files: Vec<FileDecl>,
    links: Vec<LinkDecl>,
    /// Which dirs, files, links survive into the second manifest.
    keep_dirs: Vec<bool>,
    keep_files: Vec<bool>,
    keep_links: Vec<bool>,
}

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 \n]{0,40}"
}

fn content() -> impl Strategy<Value = Content> {
    prop_oneof![
        text().prop_map(Content::Inline),
        text().prop_map(Content::Source),
        text().prop_map(Content::Template),
    ]
}

fn file_mode() -> impl Strategy<Value = Option<u32>> {
    prop::option::of(prop::sample::select(vec![
        0o600, 0o644, 0o640, 0o400, 0o755,
    ]))
}

fn dir_mode() -> impl Strategy<Value = Option<u32>> {
    prop::option::of(prop::sample::select(vec![0o700, 0o755, 0o750]))
}

fn case() -> impl Strategy<Value = Case> {
    (0usize..4, 0usize..7, 0usize..4).prop_flat_map(|(nd, nf, nl)| {
        let dirs = prop::collection::vec(
            (prop::option::of(any::<usize>()), dir_mode(), any::<bool>()),
            nd,
        );
        let files = prop::collection::vec(
            (
                prop::option::of(any::<usize>()),
                any::<bool>(),
                content(),
                file_mode(),
            ),
            nf,
        );
        let target = prop_oneof![
            3 => any::<usize>().prop_map(Target::Managed),
            1 => "[a-z]{1,6}".prop_map(Target::Repo),
            1 => Just(Target::Outside),
        ];
        let links = prop::collection::vec((prop::option::of(any::<usize>()), target), nl);
        (
            dirs,
            files,
            links,
            prop::collection::vec(any::<bool>(), nd),
            prop::collection::vec(any::<bool>(), nf),
            prop::collection::vec(any::<bool>(), nl),
        )
            .prop_map(
                move |(dirs, files, links, keep_dirs, keep_files, keep_links)| {
                    let parent =
                        |p: Option<usize>, below: usize| p.filter(|_| below > 0).map(|p| p % below);
                    Case {
                        dirs: dirs
                            .into_iter()
                            .enumerate()
                            .map(|(i, (p, mode, purge))| DirDecl {
                                parent: parent(p, i),
                                mode,
                                purge,
                            })
                            .collect(),
                        files: files
                            .into_iter()
                            .map(|(p, nested, content, mode)| FileDecl {
                                parent: parent(p, nd),
                                nested,
                                content,
                                mode,
                            })
                            .collect(),
                        links: links
                            .into_iter()
                            .map(|(p, target)| LinkDecl {
                                parent: parent(p, nd),
                                target: match target {
                                    Target::Managed(_) if nd + nf == 0 => Target::Outside,
                                    Target::Managed(k) => Target::Managed(k % (nd + nf)),
                                    t => t,
                                },
                            })
                            .collect(),
                        keep_dirs,
                        keep_files,
                        keep_links,
                    }
                },
            )
    })
}

struct Env {
    _root: tempfile::TempDir,
    home: PathBuf,
    repo: PathBuf,
    out: PathBuf,
    backups: PathBuf,
    state: State,
}

impl Env {
    fn new() -> Env {
        let root = tempfile::tempdir().unwrap();
        let mk = |n: &str| {
            let p = root.path().join(n);
            std::fs::create_dir_all(&p).unwrap();
            p
        };
        Env {
            home: mk("home"),
            repo: mk("repo"),
            out: mk("out"),
            backups: root.path().join("backups"),
            state: State::new(MachineInfo::current("prop-machine")),
            _root: root,
        }
    }

    fn plan(&self, text: &str) -> Plan {
        let m = Manifest::parse(
            text,
            &self.repo.join("stead.toml"),
            &self.repo,
            &LoadOptions {
                home: self.home.clone(),
                profile: None,
                kinds: &stead_lib::resource::registry::REGISTRY,
            },
        )
        .unwrap_or_else(|e| panic!("generated manifest does not load: {e}\n{text}"));
        let g = Graph::build(&m).unwrap();
        let plan = plan::make(&m, &g, &self.state, false, 2).unwrap_or_else(|e| panic!("{e}"));
        self.check_read_in_part(&m, &g);
        plan
    }

    /// A plan of every declared resource made from the record read in part
    /// (as a drift repair reads it) is the one made from the record read
    /// whole: lookups, what other records own, real keys.
    fn check_read_in_part(&self, m: &Manifest, g: &Graph) {
        let all: std::collections::HashSet<String> =
            m.resources.iter().map(|r| r.id.clone()).collect();
        let text = serde_json::to_string(&self.state).unwrap();
        let part =
            stead_lib::state::read_in_part(text).expect("a record stead wrote reads in part");
        assert!(part.unread.is_partial());
        let secrets = stead_lib::secret::Secrets::unavailable();
        let none = std::collections::HashSet::new();
        let scoped = |state: &State| {
            plan::make_scoped(m, g, state, false, 2, None, &none, &secrets, Some(&all))
                .unwrap_or_else(|e| panic!("{e}"))
        };
        assert_eq!(scoped(&part), scoped(&self.state));
    }

    fn execute(&mut self, plan: &Plan) -> Outcome {
        let outcome = engine::execute(plan, &EngineOptions::new(2, self.backups.clone()), &|_| {});
        let serial = self.state.lineage.serial + 1;
        plan::record(&mut self.state, plan, &outcome, serial);
        self.state.lineage.serial = serial;
        outcome
    }
}

/// The declared paths (home-relative) of dirs, then files, then links.
fn paths(case: &Case) -> (Vec<String>, Vec<String>, Vec<String>) {
    let mut dirs: Vec<String> = Vec::new();
    for (i, d) in case.dirs.iter().enumerate() {
        let base = d.parent.map_or(String::new(), |p| format!("{}/", dirs[p]));
        dirs.push(format!("{base}d{i}"));
    }
    let under = |p: Option<usize>| p.map_or(String::new(), |p| format!("{}/", dirs[p]));
    let files = case
        .files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let sub = if f.nested {
                format!("x{i}/")
            } else {
                String::new()
            };
            format!("{}{sub}f{i}", under(f.parent))
        })
        .collect();
    let links = case
        .links
        .iter()
        .enumerate()
        .map(|(i, l)| format!("{}l{i}", under(l.parent)))
        .collect();
    (dirs, files, links)
}

fn octal(m: u32) -> String {
    format!("{m:04o}")
}

/// Writes the repo files and returns the manifest text (only kept resources
/// when `kept_only`), plus the expected link targets by link index.
fn manifest(case: &Case, env: &Env, kept_only: bool) -> (String, Vec<PathBuf>) {
    let (dirs, files, links) = paths(case);
    let mut out = String::from("[vars]\nv = \"value\"\n");
    for (i, d) in case.dirs.iter().enumerate() {
        if kept_only && !case.keep_dirs[i] {
            continue;
        }
        out.push_str(&format!("[dir.d{i}]\npath = \"~/{}\"\n", dirs[i]));
        if let Some(m) = d.mode {
            out.push_str(&format!("mode = \"{}\"\n", octal(m)));
        }
        if d.purge {
            out.push_str("purge = true\n");
        }
    }
    for (i, f) in case.files.iter().enumerate() {
        if kept_only && !case.keep_files[i] {
            continue;
        }
        out.push_str(&format!("[file.f{i}]\npath = \"~/{}\"\n", files[i]));
        match &f.content {
            Content::Inline(s) => out.push_str(&format!("content = {s:?}\n")),
            Content::Source(s) => {
                std::fs::write(env.repo.join(format!("src{i}")), s).unwrap();
                out.push_str(&format!("source = \"src{i}\"\n"));
            }
            Content::Template(s) => {
                std::fs::write(
                    env.repo.join(format!("tpl{i}.j2")),
                    format!("{s}{{{{ v }}}}\n"),
                )
                .unwrap();
                out.push_str(&format!("template = \"tpl{i}.j2\"\n"));
            }
        }
        if let Some(m) = f.mode {
            out.push_str(&format!("mode = \"{}\"\n", octal(m)));
        }
    }
    let mut targets = Vec::new();
    for (i, l) in case.links.iter().enumerate() {
        let (text, target) = match &l.target {
            Target::Managed(k) => {
                let rel = dirs.iter().chain(&files).nth(*k).unwrap();
                (format!("~/{rel}"), env.home.join(rel))
            }
            Target::Repo(name) => (name.clone(), env.repo.join(name)),
            Target::Outside => {
                let p = env.out.join(format!("o{i}"));
                (p.display().to_string(), p)
            }
        };
        targets.push(target);
        if kept_only && !case.keep_links[i] {
            continue;
        }
        out.push_str(&format!(
            "[symlink.l{i}]\npath = \"~/{}\"\ntarget = {text:?}\n",
            links[i]
        ));
    }
    (out, targets)
}

fn expected_content(f: &FileDecl) -> String {
    match &f.content {
        Content::Inline(s) | Content::Source(s) => s.clone(),
        Content::Template(s) => format!("{s}value\n"),
    }
}

fn not_unchanged(plan: &Plan) -> Vec<(String, Action, String)> {
    plan.changes
        .iter()
        .filter(|c| c.action != Action::Unchanged)
        .map(|c| (c.id.clone(), c.action, c.reason.clone()))
        .collect()
}

/// mtime of every entry below `root` (not following links).
fn mtimes(root: &Path) -> BTreeMap<PathBuf, SystemTime> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            out.insert(p.clone(), meta.modified().unwrap());
            if meta.is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

fn mode_of(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    ProptestConfig::with_cases(cases)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn apply_converges_in_one_run_and_removal_too(case in case()) {
        let mut env = Env::new();
        let (text, targets) = manifest(&case, &env, false);

        // 1. A fresh home: everything is created, nothing conflicts.
        let first = env.plan(&text);
        prop_assert!(
            first.changes.iter().all(|c| matches!(c.action, Action::Create | Action::Unchanged)),
            "{:?}\n{text}", not_unchanged(&first)
        );
        let outcome = env.execute(&first);
        prop_assert!(!outcome.has_failures(), "{:?}\n{text}", outcome.statuses);

        // What is on disk is what was declared.
        let (dirs, files, links) = paths(&case);
        for (d, rel) in case.dirs.iter().zip(&dirs) {
            let p = env.home.join(rel);
            prop_assert!(p.is_dir(), "{rel}");
            if let Some(m) = d.mode {
                prop_assert_eq!(mode_of(&p), m, "{}", rel);
            }
        }
        for (f, rel) in case.files.iter().zip(&files) {
            let p = env.home.join(rel);
            prop_assert_eq!(std::fs::read_to_string(&p).unwrap(), expected_content(f));
            prop_assert_eq!(mode_of(&p), f.mode.unwrap_or(0o644), "{}", rel);
        }
        for (rel, target) in links.iter().zip(&targets) {
            prop_assert_eq!(&std::fs::read_link(env.home.join(rel)).unwrap(), target);
        }

        // 2. The second plan is empty, and applying it touches nothing.
        let before = mtimes(&env.home);
        let second = env.plan(&text);
        prop_assert!(second.is_empty(), "{:?}\n{text}", not_unchanged(&second));
        let outcome = env.execute(&second);
        prop_assert!(!outcome.has_failures(), "{:?}", outcome.statuses);
        prop_assert_eq!(mtimes(&env.home), before);
        prop_assert!(env.plan(&text).is_empty());

        // 3. Drop some resources: what stead made for them goes, and the
        // result converges too.
        let (kept, _) = manifest(&case, &env, true);
        let third = env.plan(&kept);
        let outcome = env.execute(&third);
        prop_assert!(!outcome.has_failures(), "{:?}\n{kept}", outcome.statuses);
        let fourth = env.plan(&kept);
        prop_assert!(fourth.is_empty(), "{:?}\n{kept}", not_unchanged(&fourth));
        for (i, rel) in files.iter().enumerate() {
            let exists = std::fs::symlink_metadata(env.home.join(rel)).is_ok();
            prop_assert_eq!(exists, case.keep_files[i], "{}", rel);
        }
        for (i, rel) in links.iter().enumerate() {
            let exists = std::fs::symlink_metadata(env.home.join(rel)).is_ok();
            prop_assert_eq!(exists, case.keep_links[i], "{}", rel);
        }
        for (i, rel) in dirs.iter().enumerate() {
            let p = env.home.join(rel);
            if case.keep_dirs[i] {
                prop_assert!(p.is_dir(), "{}", rel);
            }
            prop_assert_eq!(
                env.state.resources.contains_key(&format!("dir.d{i}")),
                case.keep_dirs[i]
            );
        }
        let declared = case.keep_dirs.iter().chain(&case.keep_files).chain(&case.keep_links).filter(|k| **k).count();
        prop_assert_eq!(env.state.resources.len(), declared);
    }
}
