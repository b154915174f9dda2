//! The walk over `stead.toml`'s spanned tables, by phase: the top-level
//! tables, profile selection, the paths (resolved first, claimed once), then
//! every resource built by its kind with its edges. Problems are collected,
//! not returned early, so one load reports them all. The graph (and its
//! cycles) is checked by the caller: see [`crate::graph::parse`].

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use toml::de::{DeTable, DeValue};

use super::diag::{ManifestError, Problem};
use super::input::{Lookup, SpecInput};
use super::pieces;
use super::refs::{RefValue, Reference};
use super::schema::KindTable;
use super::walker::{RawDecl, RawValue, Str, Walker, list_or_none};
use super::{Kind, LoadOptions, Manifest, Parsed, Resource, Retry};

/// The manifest's maps of ids and paths hash with foldhash, not SipHash:
/// they are looked up a few times per resource and edge, and the keys are
/// the user's own manifest, not input from someone else.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// The top-level tables as written.
#[derive(Default)]
struct Top {
    default_profile: Option<Str>,
    /// `[settings] secret_recipients`, each checked.
    secret_recipients: Vec<String>,
    vars: BTreeMap<String, String>,
    profile_vars: BTreeMap<String, (Range<usize>, BTreeMap<String, String>)>,
    decls: Vec<RawDecl>,
}

impl Top {
    /// Adds what `piece` declares, from a later piece of the same text (a
    /// table other than a kind's is in one piece only: nothing is replaced).
    fn take(&mut self, piece: Top) {
        if piece.default_profile.is_some() {
            self.default_profile = piece.default_profile;
        }
        self.secret_recipients.extend(piece.secret_recipients);
        self.vars.extend(piece.vars);
        self.profile_vars.extend(piece.profile_vars);
        self.decls.extend(piece.decls);
    }
}

/// Which declared resources exist, and which are in the active profile.
struct Scope {
    profile: Option<String>,
    known_profiles: BTreeSet<String>,
    declared: HashMap<String, Kind>,
    // Only ever asked `contains`: a hash set (a B-tree costs a string compare per level).
    active: HashSet<String>,
}

pub(super) fn parse(
    text: &Arc<String>,
    path: &Path,
    config_dir: &Path,
    options: &LoadOptions,
) -> Result<Parsed, ManifestError> {
    parse_in_pieces(text, path, config_dir, options, pieces::PIECE_BYTES)
}

/// [`parse`], a text larger than `piece` bytes parsed in pieces of about
/// that size when it can be (see [`pieces`]); else, or when anything in it
/// is wrong, whole.
pub(super) fn parse_in_pieces(
    text: &Arc<String>,
    path: &Path,
    config_dir: &Path,
    options: &LoadOptions,
    piece: usize,
) -> Result<Parsed, ManifestError> {
    if let Some(ranges) = pieces::split(text, piece, options.kinds)
        && let Some(parsed) = parse_pieces(text, &ranges, path, config_dir, options)
    {
        return Ok(parsed);
    }
    parse_whole(text, path, config_dir, options)
}

pub(super) fn parse_whole(
    text: &Arc<String>,
    path: &Path,
    config_dir: &Path,
    options: &LoadOptions,
) -> Result<Parsed, ManifestError> {
    let (root, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        let problems = syntax
            .iter()
            .map(|e| match e.span() {
                Some(span) => Problem::at(span, format!("invalid TOML: {}", e.message())),
                // The parser's depth limit carries no place: point at the
                // most deeply nested line, which is almost surely it.
                None => Problem::at(deepest_line(text), format!("invalid TOML: {}", e.message()))
                    .label("nested too deeply?")
                    .help("tables, arrays or dotted keys nest too deeply here; flatten them"),
            })
            .collect();
        return Err(ManifestError {
            path: path.to_path_buf(),
            text: Arc::clone(text),
            problems,
        });
    }
    let mut w = Walker::new(text, options.kinds);
    let mut top = Top::default();
    read_top(&mut w, &root.into_inner(), &mut top);
    Ok(resolve(w, top, text, path, config_dir, options))
}

/// The pieces `ranges` of `text` parsed and walked, on a few threads (each
/// walks its share one piece at a time), or `None`
/// when they may not mean what the whole text means (a piece does not
/// parse alone, an id or another top-level table is in two pieces) or
/// when anything is wrong: the caller then parses the whole text, which
/// finds the same problems in the same places as it always did.
pub(super) fn parse_pieces(
    text: &Arc<String>,
    ranges: &[Range<usize>],
    path: &Path,
    config_dir: &Path,
    options: &LoadOptions,
) -> Option<Parsed> {
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, MAX_PARSE_THREADS);
    parse_pieces_on(text, ranges, path, config_dir, options, threads)
}

/// At most this many threads parse a manifest's pieces: each holds one
/// piece's parse at a time, about 20 bytes per byte of text.
const MAX_PARSE_THREADS: usize = 4;

/// [`parse_pieces`] on up to `threads` threads.
pub(super) fn parse_pieces_on(
    text: &Arc<String>,
    ranges: &[Range<usize>],
    path: &Path,
    config_dir: &Path,
    options: &LoadOptions,
    threads: usize,
) -> Option<Parsed> {
    let walked = crate::parallel::map(ranges, threads, |range| {
        Ok(walk_piece(text, range, options.kinds))
    });
    let mut top = Top::default();
    let mut others: HashSet<String> = HashSet::default();
    for piece in walked {
        // A piece that is wrong, or whose thread panicked: parse whole.
        let piece = piece.ok().flatten()?;
        if !piece.others.into_iter().all(|name| others.insert(name)) {
            return None;
        }
        top.take(piece.top);
    }
    let mut ids = HashSet::with_capacity_and_hasher(top.decls.len(), Default::default());
    if !top.decls.iter().all(|d| ids.insert(d.id.as_str())) {
        return None;
    }
    drop(ids);
    let parsed = resolve(
        Walker::new(text, options.kinds),
        top,
        text,
        path,
        config_dir,
        options,
    );
    parsed.problems.is_empty().then_some(parsed)
}

/// One piece walked: what it declares, and the top-level tables in it that
/// are not kinds (each may be in one piece only).
struct Piece {
    top: Top,
    others: Vec<String>,
}

/// The piece `range` of `text` parsed and walked, or `None` when it does not
/// parse alone or anything in it is wrong.
fn walk_piece(text: &str, range: &Range<usize>, kinds: &'static dyn KindTable) -> Option<Piece> {
    let (root, syntax) = DeTable::parse_recoverable(&text[range.clone()]);
    if !syntax.is_empty() {
        return None;
    }
    let root = root.into_inner();
    // Each once: a text that names a table twice does not parse.
    let others = root
        .iter()
        .map(|(key, _)| key.get_ref().as_ref())
        .filter(|name| kinds.find(name).is_none())
        .map(str::to_string)
        .collect();
    let mut w = Walker::new(text, kinds);
    w.offset = range.start;
    let mut top = Top::default();
    read_top(&mut w, &root, &mut top);
    w.problems.is_empty().then_some(Piece { top, others })
}

/// From the tables as written to the manifest: the profile, the paths, then
/// every resource built by its kind with its edges.
fn resolve(
    mut w: Walker,
    mut top: Top,
    text: &Arc<String>,
    path: &Path,
    config_dir: &Path,
    options: &LoadOptions,
) -> Parsed {
    let w = &mut w;
    top.decls.sort_by_key(|d| d.span.start);
    let scope = select_profile(w, options, &top);
    let mut vars = std::mem::take(&mut top.vars);
    if let Some((_, pv)) = scope.profile.as_ref().and_then(|p| top.profile_vars.get(p)) {
        vars.extend(pv.clone());
    }
    let home = &options.home;
    let mut resolver = crate::safe_path::Resolver::new();
    let outputs = resolve_paths(w, &top.decls, &vars, &scope, home, &mut resolver);
    let real_home = resolver.resolve_dir(home).unwrap_or_else(|_| home.clone());
    // The execs whose stdout is a value (`output = true`).
    let valued: HashSet<String> = top
        .decls
        .iter()
        .filter(|d| {
            d.kind == super::Kind::Exec
                && matches!(d.fields.get("output"), Some(RawValue::Bool(true)))
        })
        .map(|d| d.id.clone())
        .collect();
    // The secrets a lineage shares (`scope = "lineage"`).
    let shared: HashSet<String> = top
        .decls
        .iter()
        .filter(|d| {
            matches!(d.fields.get("scope"), Some(RawValue::Str(s)) if s.text == "lineage")
                && d.id.starts_with("secret.")
        })
        .map(|d| d.id.clone())
        .collect();
    // Each declaration is dropped once its resources are built: its keys
    // and values are not held beside every resource at the end.
    let decls = std::mem::take(&mut top.decls);
    let build = Build {
        secret_recipients: &top.secret_recipients,
        scope: &scope,
        valued: &valued,
        shared: &shared,
        outputs: &outputs,
        vars: &vars,
        config_dir,
        home,
    };
    let mut resources = Vec::with_capacity(decls.len());
    // Which resources an expansion made (not the declaration itself).
    let mut expanded = Vec::with_capacity(decls.len());
    for d in decls {
        if let Some(r) = build.resource(w, &d) {
            let kind = w.kinds.get(r.kind());
            for one in kind.expand(r, &mut w.problems) {
                expanded.push(one.id != d.id);
                resources.push(one);
            }
        }
    }
    check_expanded(w, &resources, &expanded, home);
    let manifest = Manifest {
        path: path.to_path_buf(),
        config_dir: config_dir.to_path_buf(),
        home: home.clone(),
        real_home,
        profile: scope.profile.clone(),
        profiles: scope.known_profiles.clone(),
        vars,
        resources,
        protected: vec![config_dir.to_path_buf()],
        followed_links: resolver.into_followed(),
        partial: None,
    };
    Parsed {
        manifest,
        problems: std::mem::take(&mut w.problems),
        text: Arc::clone(text),
    }
}

/// `[settings]`, `[vars]`, `[profile.*]` and the resource tables of every kind.
fn read_top(w: &mut Walker, root: &DeTable, top: &mut Top) {
    for (key, value) in root.iter() {
        let name = key.get_ref().as_ref();
        match name {
            "settings" => read_settings(w, value, top),
            "vars" => {
                if let Some(table) = w.table(value, "[vars]") {
                    top.vars = w.scalar_map(table, "[vars]");
                }
            }
            "profile" => read_profiles(w, value, top),
            other => match w.kinds.find(other).map(|k| k.kind()) {
                Some(kind) => read_kind(w, kind, value, top),
                None => unknown_table(w, other, w.at(key.span()), value),
            },
        }
    }
}

fn read_settings(w: &mut Walker, value: &toml::Spanned<DeValue>, top: &mut Top) {
    let Some(table) = w.table(value, "[settings]") else {
        return;
    };
    for (k, v) in table.iter() {
        match k.get_ref().as_ref() {
            "default_profile" => top.default_profile = w.string(v, "default_profile"),
            "secret_recipients" => {
                for r in w.string_list(v, "secret_recipients").unwrap_or_default() {
                    match crate::secret::check_recipient(&r.text) {
                        Ok(()) => top.secret_recipients.push(r.text),
                        Err(e) => w
                            .problems
                            .push(Problem::at(r.span, e.to_string()).label("not a recipient")),
                    }
                }
            }
            other => w.problems.push(
                Problem::at(
                    w.at(k.span()),
                    format!("unknown key `{other}` in [settings]"),
                )
                .label("unknown key")
                .help("[settings] takes: default_profile, secret_recipients"),
            ),
        }
    }
}

fn read_profiles(w: &mut Walker, value: &toml::Spanned<DeValue>, top: &mut Top) {
    let Some(table) = w.table(value, "[profile]") else {
        return;
    };
    for (pname, pvalue) in table.iter() {
        let pn = pname.get_ref().to_string();
        let Some(pt) = w.table(pvalue, &format!("[profile.{pn}]")) else {
            continue;
        };
        let mut pv = BTreeMap::new();
        for (k, v) in pt.iter() {
            match k.get_ref().as_ref() {
                "vars" => {
                    if let Some(t) = w.table(v, &format!("[profile.{pn}.vars]")) {
                        pv = w.scalar_map(t, &format!("[profile.{pn}.vars]"));
                    }
                }
                other => w.problems.push(
                    Problem::at(
                        w.at(k.span()),
                        format!("unknown key `{other}` in [profile.{pn}]"),
                    )
                    .label("unknown key")
                    .help("a profile takes: vars"),
                ),
            }
        }
        top.profile_vars.insert(pn, (w.at(pname.span()), pv));
    }
}

fn read_kind(w: &mut Walker, kind: Kind, value: &toml::Spanned<DeValue>, top: &mut Top) {
    let name = kind.as_str();
    let Some(table) = w.table(value, &format!("[{name}]")) else {
        return;
    };
    for (rname, rvalue) in table.iter() {
        let id = format!("{name}.{}", rname.get_ref());
        let Some(rt) = w.table(rvalue, &format!("[{id}]")) else {
            continue;
        };
        top.decls.push(w.decl(kind, id, w.at(rname.span()), rt));
    }
}

fn unknown_table(w: &mut Walker, name: &str, span: Range<usize>, value: &toml::Spanned<DeValue>) {
    let kinds = w.kinds.names().join(", ");
    let problem = if !matches!(value.get_ref(), DeValue::Table(_)) {
        Problem::at(span, format!("unknown top-level key `{name}`"))
            .label("not a table")
            .help(format!(
                "the top level holds only tables: settings, vars, profile and the resource kinds {kinds}"
            ))
    } else {
        Problem::at(span, format!("unknown kind `{name}`"))
            .label("unknown kind")
            .help(format!(
                "resource kinds are {kinds}; other tables are settings, vars, profile"
            ))
    };
    w.problems.push(problem);
}

/// The profile: asked for, else the default; and the resources it holds.
fn select_profile(w: &mut Walker, options: &LoadOptions, top: &Top) -> Scope {
    let known_profiles: BTreeSet<String> = top
        .profile_vars
        .keys()
        .cloned()
        .chain(
            top.decls
                .iter()
                .flat_map(|d| d.profiles.iter().flatten().map(|p| p.text.clone())),
        )
        .collect();
    let profile = match (&options.profile, &top.default_profile) {
        (Some(p), _) => {
            if !known_profiles.contains(p) {
                w.problems.push(Problem {
                    message: format!(
                        "unknown profile `{p}` (given with --profile, or recorded by an earlier apply on this machine)"
                    ),
                    span: None,
                    label: String::new(),
                    help: Some(format!(
                        "profiles in this manifest: {}; choose one with --profile NAME",
                        list_or_none(&known_profiles)
                    )),
                });
            }
            Some(p.clone())
        }
        (None, Some(d)) => {
            if !known_profiles.contains(&d.text) {
                w.problems.push(
                    Problem::at(d.span.clone(), format!("unknown profile `{}`", d.text))
                        .label("no such profile")
                        .help(format!(
                            "profiles in this manifest: {}",
                            list_or_none(&known_profiles)
                        )),
                );
            }
            Some(d.text.clone())
        }
        (None, None) => None,
    };
    let declared = top.decls.iter().map(|d| (d.id.clone(), d.kind)).collect();
    let active = top
        .decls
        .iter()
        .filter(|d| match (&d.profiles, &profile) {
            (None, _) => true,
            (Some(list), Some(p)) => list.iter().any(|x| &x.text == p),
            (Some(_), None) => false,
        })
        .map(|d| d.id.clone())
        .collect();
    Scope {
        profile,
        known_profiles,
        declared,
        active,
    }
}

/// Phase A: the paths (they may use ${vars...} only), which are the outputs
/// that other resources reference. A path owned by a kind is claimed by at
/// most one active resource, and not edited by another.
fn resolve_paths(
    w: &mut Walker,
    decls: &[RawDecl],
    vars: &BTreeMap<String, String>,
    scope: &Scope,
    home: &Path,
    resolver: &mut crate::safe_path::Resolver,
) -> HashMap<String, PathBuf> {
    let mut outputs: HashMap<String, PathBuf> = HashMap::default();
    let mut claims: HashMap<std::ffi::OsString, &str> = HashMap::default();
    let mut edits: Vec<(&RawDecl, Range<usize>, PathBuf)> = Vec::new();
    let kinds = w.kinds;
    let path_lookup = |r: &Reference| -> Option<Result<RefValue, String>> {
        let kind = r.name.split_once('.').map(|(k, _)| k)?;
        kinds.find(kind).is_some().then(|| {
            Err(format!(
                "`${{{}}}` cannot be used in a path: paths may use only ${{vars.NAME}}",
                r.name
            ))
        })
    };
    for d in decls {
        let kind = kinds.get(d.kind);
        let Some(key) = kind.path_key() else {
            continue;
        };
        let Some(RawValue::Str(s)) = d.fields.get(key) else {
            continue;
        };
        let Some((text, _)) = w.resolve(s, vars, &path_lookup) else {
            continue;
        };
        let Some(path) = w.target_path(&text, s.span.clone(), home) else {
            continue;
        };
        // The links the user made among the path's ancestors are followed
        // here, once: the plan, the claims and the state hold the real path,
        // and apply follows no link (see `safe_path`).
        let path = match resolver.resolve(&path) {
            Ok(real) => real,
            Err(e) => {
                w.problems.push(
                    Problem::at(
                        s.span.clone(),
                        format!("cannot follow the path {text:?}: {e}"),
                    )
                    .label("unsafe path"),
                );
                continue;
            }
        };
        if scope.active.contains(&d.id) {
            if kind.ownership().owns_path {
                claim(w, &mut claims, d, &s.span, &path, home);
            } else {
                edits.push((d, s.span.clone(), path.clone()));
            }
        }
        outputs.insert(d.id.clone(), path);
    }
    // A kind that edits a path without owning it (`line`) would fight the
    // resource that writes the whole path on every run.
    for (d, span, path) in edits {
        if let Some(other) = claims.get(path.as_os_str()) {
            w.problems.push(
                Problem::at(
                    span,
                    format!(
                        "{} edits {}, which {other} manages",
                        d.id,
                        super::display_path(home, &path)
                    ),
                )
                .label("managed by another resource")
                .help("stead writes a managed path whole; put the change in that resource instead"),
            );
        }
    }
    outputs
}

/// Claims `path` for `d`, or records that another resource already did.
fn claim<'d>(
    w: &mut Walker,
    claims: &mut HashMap<std::ffi::OsString, &'d str>,
    d: &'d RawDecl,
    span: &Range<usize>,
    path: &Path,
    home: &Path,
) {
    match claims.get(path.as_os_str()) {
        Some(other) => w.problems.push(
            Problem::at(
                span.clone(),
                format!(
                    "{} claims {}, which {other} already claims",
                    d.id,
                    super::display_path(home, path)
                ),
            )
            .label("claimed twice")
            .help("two resources may not manage the same path"),
        ),
        None => {
            claims.insert(path.as_os_str().to_os_string(), &d.id);
        }
    }
}

/// What an expansion (a file tree) added may not take an id or a path that
/// another resource has: the declarations' own paths were claimed before
/// ([`resolve_paths`]); here every path an expanded resource manages is.
/// `expanded[i]`: `resources[i]` was made by an expansion.
fn check_expanded(w: &mut Walker, resources: &[Resource], expanded: &[bool], home: &Path) {
    if !expanded.iter().any(|e| *e) {
        return;
    }
    let mut ids: HashMap<&str, usize> =
        HashMap::with_capacity_and_hasher(resources.len(), Default::default());
    let mut claims: HashMap<&std::ffi::OsStr, usize> =
        HashMap::with_capacity_and_hasher(resources.len(), Default::default());
    for (i, r) in resources.iter().enumerate() {
        if let Some(other) = ids.insert(&r.id, i)
            && (expanded[i] || expanded[other])
        {
            let (mine, tree) = if expanded[i] {
                (r, &resources[other])
            } else {
                (&resources[other], r)
            };
            w.problems.push(
                Problem::at(
                    tree.span.clone(),
                    format!("{} is both declared and a file of a tree", mine.id),
                )
                .label("id taken twice")
                .help("rename the declaration"),
            );
        }
        let kind = w.kinds.get(r.kind());
        let Some(path) = r.spec.path() else { continue };
        if !kind.declarable() {
            continue;
        }
        match claims.get(path.as_os_str()) {
            Some(&other) if expanded[i] || expanded[other] => {
                let (mine, theirs) = if expanded[i] {
                    (r, &resources[other])
                } else {
                    (&resources[other], r)
                };
                w.problems.push(
                    Problem::at(
                        mine.span.clone(),
                        format!(
                            "{} manages {}, which {} manages too",
                            mine.id,
                            super::display_path(home, path),
                            theirs.id
                        ),
                    )
                    .label("claimed twice")
                    .help("a path has one manager: add it to the tree's `ignore`, or remove the other declaration"),
                );
            }
            Some(_) => {}
            None => {
                claims.insert(path.as_os_str(), i);
            }
        }
    }
}

/// Phase B: what building each resource needs.
struct Build<'b> {
    secret_recipients: &'b [String],
    scope: &'b Scope,
    valued: &'b HashSet<String>,
    shared: &'b HashSet<String>,
    outputs: &'b HashMap<String, PathBuf>,
    vars: &'b BTreeMap<String, String>,
    config_dir: &'b Path,
    home: &'b Path,
}

impl Build<'_> {
    /// The resource fully resolved, if it is active and has no problem.
    fn resource(&self, w: &mut Walker, d: &RawDecl) -> Option<Resource> {
        let kinds = w.kinds;
        let lookup = |r: &Reference| self.reference(r);
        let lookup: &Lookup = &lookup;
        let mut input = SpecInput {
            w,
            d,
            path: self.outputs.get(&d.id).cloned(),
            config_dir: self.config_dir,
            home: self.home,
            vars: self.vars,
            lookup,
            references: Vec::new(),
            secret_recipients: self.secret_recipients,
        };
        let spec = kinds.get(d.kind).build(&mut input);
        if spec.is_none() && input.w.problems.is_empty() {
            // A kind that builds nothing must say why (here or in an earlier
            // phase: any problem fails the load); were it silent, the
            // resource would vanish from the plan without a word.
            input.problem(Problem::at(
                d.span.clone(),
                format!("`{}` could not be built, and its kind gave no reason (a stead bug: please report it)", d.id),
            ));
        }
        let mut references = std::mem::take(&mut input.references);
        let after = self.edges(w, d, &d.after, "after");
        let before = self.edges(w, d, &d.before, "before");
        let notify = self.edges(w, d, &d.notify, "notify");
        references.sort();
        references.dedup();
        let spec = spec.filter(|_| self.scope.active.contains(&d.id))?;
        Some(Resource {
            id: d.id.clone(),
            spec,
            after: after.into(),
            before: before.into(),
            notify: notify.into(),
            references: references.into(),
            retry: retry(d),
            span: d.span.clone(),
        })
    }

    /// The value of `${kind.name}`: the path of a declared, active resource,
    /// or, for `secret.NAME`, a reference to its value.
    fn reference(&self, r: &Reference) -> Option<Result<RefValue, String>> {
        let name = r.name.as_str();
        if let Some(exec) = name.strip_suffix(".stdout")
            && exec.starts_with("exec.")
            && self.scope.declared.contains_key(exec)
        {
            return Some(if !self.valued.contains(exec) {
                Err(format!(
                    "`{exec}` has no value to reference: declare `output = true` on it to use its stdout"
                ))
            } else if self.scope.active.contains(exec) {
                Ok(RefValue::Output(exec.to_string()))
            } else {
                Err(format!(
                    "`{exec}` is not in the active profile ({})",
                    self.scope.profile.as_deref().unwrap_or("none")
                ))
            });
        }
        if !self.scope.declared.contains_key(name) {
            return None;
        }
        if let Some(secret) = name.strip_prefix("secret.") {
            return Some(if self.scope.active.contains(name) {
                Ok(if self.shared.contains(name) {
                    RefValue::Shared(secret.to_string())
                } else {
                    RefValue::Secret(secret.to_string())
                })
            } else {
                Err(format!(
                    "`{name}` is not in the active profile ({})",
                    self.scope.profile.as_deref().unwrap_or("none")
                ))
            });
        }
        Some(match self.outputs.get(name) {
            Some(p) if self.scope.active.contains(name) => {
                Ok(RefValue::Text(p.display().to_string()))
            }
            Some(_) => Err(format!(
                "`{name}` is not in the active profile ({})",
                self.scope.profile.as_deref().unwrap_or("none")
            )),
            None => Err(format!(
                "`{name}` has no value to reference (only file, dir and symlink have a path)"
            )),
        })
    }

    /// `after`, `before` or `notify`: declared ids other than itself, kept
    /// when they are in the active profile.
    fn edges(&self, w: &mut Walker, d: &RawDecl, list: &[Str], what: &str) -> Vec<String> {
        let mut out = Vec::new();
        for s in list {
            if !self.scope.declared.contains_key(&s.text) {
                w.problems.push(
                    Problem::at(
                        s.span.clone(),
                        format!("`{what}` names `{}`, which is not declared", s.text),
                    )
                    .label("dangling reference")
                    .help("resources are named `kind.name`, e.g. \"file.bashrc\""),
                );
            } else if s.text == d.id {
                w.problems.push(Problem::at(
                    s.span.clone(),
                    format!("{} names itself in `{what}`", d.id),
                ));
            } else if self.scope.active.contains(&s.text) {
                out.push(s.text.clone());
            }
        }
        out
    }
}

fn retry(d: &RawDecl) -> Retry {
    let forever = matches!(
        d.fields.get("retry"),
        Some(RawValue::Count(super::walker::RETRY_FOREVER))
    );
    Retry {
        retries: match d.fields.get("retry") {
            Some(RawValue::Count(n)) if !forever => *n,
            _ => 0,
        },
        forever,
        delay_ms: match d.fields.get("delay") {
            Some(RawValue::Duration(t)) => u64::try_from(t.as_millis()).unwrap_or(u64::MAX),
            _ => 0,
        },
        exponential: matches!(d.fields.get("backoff"), Some(RawValue::Bool(true))),
    }
}

/// The line with the most nesting marks (`.`, `[`, `{`), as a byte range:
/// where a span-less "recursion limit" error most likely is.
fn deepest_line(text: &str) -> Range<usize> {
    let mut best = (0, 0..0);
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        let depth = line
            .bytes()
            .filter(|b| matches!(b, b'.' | b'[' | b'{'))
            .count();
        if depth > best.0 {
            best = (depth, start..start + line.trim_end().len());
        }
        start += line.len();
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::super::schema::{Key, KindSchema, KindTable};
    use super::super::{Kind, LoadOptions, Manifest, SpecInput};
    use crate::manifest::Spec;

    /// A kind whose build gives nothing and says nothing (a bug the loader
    /// must not let pass silently).
    struct Silent;

    impl KindSchema for Silent {
        fn kind(&self) -> Kind {
            Kind::Exec
        }
        fn keys(&self) -> &'static [Key] {
            &[]
        }
        fn build(&self, _input: &mut SpecInput) -> Option<Spec> {
            None
        }
    }

    struct Table;

    impl KindTable for Table {
        fn find(&self, name: &str) -> Option<&dyn KindSchema> {
            (name == "exec").then_some(&Silent as &dyn KindSchema)
        }
        fn get(&self, _kind: Kind) -> &dyn KindSchema {
            &Silent
        }
        fn names(&self) -> Vec<&'static str> {
            vec!["exec"]
        }
    }

    static TABLE: Table = Table;

    #[test]
    fn a_kind_that_builds_nothing_without_a_reason_is_a_load_error_not_a_vanished_resource() {
        let dir = tempfile::tempdir().unwrap();
        let options = LoadOptions {
            home: dir.path().to_path_buf(),
            profile: None,
            kinds: &TABLE,
        };
        let text = "[exec.quiet]\n";
        let e = Manifest::parse(text, &dir.path().join("stead.toml"), dir.path(), &options)
            .expect_err("a resource that vanished");
        let shown = e.to_string();
        assert!(
            shown.contains("`exec.quiet` could not be built, and its kind gave no reason"),
            "{shown}"
        );
    }
}
