//! The walk over `stead.toml`'s spanned tables: validation of every key,
//! profile selection, reference resolution, path claims and cycles.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::diag::{ManifestError, Problem};
use super::refs::{self, Reference};
use super::{
    Command, DirSpec, ExecSpec, FileContent, FileSpec, Kind, LoadOptions, Manifest, Resource,
    Retry, Spec, SymlinkSpec,
};

const COMMON_KEYS: [&str; 7] = [
    "after", "before", "notify", "profiles", "retry", "delay", "backoff",
];

fn kind_keys(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::File => &["path", "source", "content", "template", "mode", "ensure"],
        Kind::Dir => &["path", "mode", "purge"],
        Kind::Symlink => &["path", "target"],
        Kind::Exec => &[
            "command",
            "cwd",
            "env",
            "timeout",
            "creates",
            "unless",
            "onlyif",
            "once",
            "idempotency_key",
            "refresh_only",
        ],
        Kind::Noop => &[],
    }
}

/// A string value and where it is.
#[derive(Debug, Clone)]
struct Str {
    text: String,
    span: Range<usize>,
}

/// A resource as written, before references are resolved.
struct RawDecl {
    id: String,
    kind: Kind,
    span: Range<usize>,
    fields: BTreeMap<String, RawValue>,
    after: Vec<Str>,
    before: Vec<Str>,
    notify: Vec<Str>,
    profiles: Option<Vec<Str>>,
}

#[derive(Debug, Clone)]
enum RawValue {
    Str(Str),
    List(Vec<Str>),
    Bool(bool),
    Map(Vec<(Str, Str)>),
    Duration(Duration),
    Count(u32),
}

struct Walker<'a> {
    problems: Vec<Problem>,
    text: &'a str,
}

pub(super) fn parse(
    text: &str,
    path: &Path,
    config_dir: &Path,
    options: &LoadOptions,
) -> Result<Manifest, ManifestError> {
    let error = |problems: Vec<Problem>| ManifestError {
        path: path.to_path_buf(),
        text: Arc::new(text.to_string()),
        problems,
    };
    let (root, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        let problems = syntax
            .iter()
            .map(|e| Problem {
                message: format!("invalid TOML: {}", e.message()),
                span: e.span(),
                label: "here".to_string(),
                help: None,
            })
            .collect();
        return Err(error(problems));
    }
    let mut w = Walker {
        problems: Vec::new(),
        text,
    };
    let root = root.into_inner();

    let mut default_profile: Option<Str> = None;
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let mut profile_vars: BTreeMap<String, (Range<usize>, BTreeMap<String, String>)> =
        BTreeMap::new();
    let mut decls: Vec<RawDecl> = Vec::new();

    for (key, value) in root.iter() {
        let name = key.get_ref().as_ref();
        let kspan = key.span();
        match name {
            "settings" => {
                let Some(table) = w.table(value, "[settings]") else {
                    continue;
                };
                for (k, v) in table.iter() {
                    match k.get_ref().as_ref() {
                        "default_profile" => default_profile = w.string(v, "default_profile"),
                        other => w.problems.push(
                            Problem::at(k.span(), format!("unknown key `{other}` in [settings]"))
                                .label("unknown key")
                                .help("[settings] takes: default_profile"),
                        ),
                    }
                }
            }
            "vars" => {
                if let Some(table) = w.table(value, "[vars]") {
                    vars = w.scalar_map(table, "[vars]");
                }
            }
            "profile" => {
                let Some(table) = w.table(value, "[profile]") else {
                    continue;
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
                                    k.span(),
                                    format!("unknown key `{other}` in [profile.{pn}]"),
                                )
                                .label("unknown key")
                                .help("a profile takes: vars"),
                            ),
                        }
                    }
                    profile_vars.insert(pn, (pname.span(), pv));
                }
            }
            other => match Kind::parse(other) {
                Some(kind) => {
                    let Some(table) = w.table(value, &format!("[{other}]")) else {
                        continue;
                    };
                    for (rname, rvalue) in table.iter() {
                        let id = format!("{other}.{}", rname.get_ref());
                        let Some(rt) = w.table(rvalue, &format!("[{id}]")) else {
                            continue;
                        };
                        decls.push(w.decl(kind, id, rname.span(), rt));
                    }
                }
                None if !matches!(value.get_ref(), DeValue::Table(_)) => w.problems.push(
                    Problem::at(kspan, format!("unknown top-level key `{other}`"))
                        .label("not a table")
                        .help(format!(
                            "the top level holds only tables: settings, vars, profile and the resource kinds {}",
                            Kind::ALL.map(Kind::as_str).join(", ")
                        )),
                ),
                None => w.problems.push(
                    Problem::at(kspan, format!("unknown kind `{other}`"))
                        .label("unknown kind")
                        .help(format!(
                            "resource kinds are {}; other tables are settings, vars, profile",
                            Kind::ALL.map(Kind::as_str).join(", ")
                        )),
                ),
            },
        }
    }
    decls.sort_by_key(|d| d.span.start);

    // The profile: asked for, else the default.
    let known_profiles: BTreeSet<String> = profile_vars
        .keys()
        .cloned()
        .chain(
            decls
                .iter()
                .flat_map(|d| d.profiles.iter().flatten().map(|p| p.text.clone())),
        )
        .collect();
    let profile = match (&options.profile, &default_profile) {
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
    if let Some((_, pv)) = profile.as_ref().and_then(|p| profile_vars.get(p)) {
        vars.extend(pv.clone());
    }

    let declared: HashMap<String, Kind> = decls.iter().map(|d| (d.id.clone(), d.kind)).collect();
    // Only ever asked `contains`: a hash set (a B-tree costs a string compare per level).
    let active: std::collections::HashSet<String> = decls
        .iter()
        .filter(|d| match (&d.profiles, &profile) {
            (None, _) => true,
            (Some(list), Some(p)) => list.iter().any(|x| &x.text == p),
            (Some(_), None) => false,
        })
        .map(|d| d.id.clone())
        .collect();

    // Phase A: the paths (they may use ${vars...} only), which are the outputs
    // that other resources reference.
    let mut outputs: HashMap<String, PathBuf> = HashMap::new();
    let mut claims: HashMap<std::ffi::OsString, String> = HashMap::new();
    let home = &options.home;
    for d in &decls {
        let key = if d.kind == Kind::Exec || d.kind == Kind::Noop {
            continue;
        } else {
            "path"
        };
        let Some(RawValue::Str(s)) = d.fields.get(key) else {
            continue;
        };
        let path_lookup = |r: &Reference| -> Option<Result<String, String>> {
            let kind = r.name.split_once('.').map(|(k, _)| k)?;
            Kind::ALL.iter().any(|k| k.as_str() == kind).then(|| {
                Err(format!(
                    "`${{{}}}` cannot be used in a path: paths may use only ${{vars.NAME}}",
                    r.name
                ))
            })
        };
        let Some((text, _)) = w.resolve(s, &vars, &path_lookup) else {
            continue;
        };
        let Some(path) = w.target_path(&text, s.span.clone(), home) else {
            continue;
        };
        if active.contains(&d.id) {
            if let Some(other) = claims.get(path.as_os_str()) {
                w.problems.push(
                    Problem::at(
                        s.span.clone(),
                        format!(
                            "{} claims {}, which {other} already claims",
                            d.id,
                            super::display_path(home, &path)
                        ),
                    )
                    .label("claimed twice")
                    .help("two resources may not manage the same path"),
                );
            } else {
                claims.insert(path.as_os_str().to_os_string(), d.id.clone());
            }
        }
        outputs.insert(d.id.clone(), path);
    }

    // Phase B: every resource of the active profile, fully resolved.
    let mut resources = Vec::new();
    for d in &decls {
        let lookup = |r: &Reference| -> Option<Result<String, String>> {
            let name = r.name.as_str();
            if !declared.contains_key(name) {
                return None;
            }
            Some(match outputs.get(name) {
                Some(p) if active.contains(name) => Ok(p.display().to_string()),
                Some(_) => Err(format!(
                    "`{name}` is not in the active profile ({})",
                    profile.as_deref().unwrap_or("none")
                )),
                None => Err(format!(
                    "`{name}` has no value to reference (only file, dir and symlink have a path)"
                )),
            })
        };
        let mut references: Vec<String> = Vec::new();
        let mut res = |w: &mut Walker, s: &Str| -> Option<String> {
            let (text, used) = w.resolve(s, &vars, &lookup)?;
            references.extend(used);
            Some(text)
        };
        let field = |key: &str| match d.fields.get(key) {
            Some(RawValue::Str(s)) => Some(s.clone()),
            _ => None,
        };
        let spec = match d.kind {
            Kind::File => {
                let path = outputs.get(&d.id).cloned();
                let absent = match field("ensure") {
                    None => false,
                    Some(e) if e.text == "present" => false,
                    Some(e) if e.text == "absent" => true,
                    Some(e) => {
                        w.problems.push(
                            Problem::at(
                                e.span.clone(),
                                format!(
                                    "`ensure` must be \"present\" or \"absent\", not {:?}",
                                    e.text
                                ),
                            )
                            .label("bad value"),
                        );
                        false
                    }
                };
                let sources: Vec<&str> = ["source", "content", "template"]
                    .into_iter()
                    .filter(|k| d.fields.contains_key(*k))
                    .collect();
                let content = match (absent, sources.as_slice()) {
                    (true, []) => None,
                    (true, [k, ..]) => {
                        w.problems.push(
                            Problem::at(
                                d.span.clone(),
                                format!("{} has ensure = \"absent\" and `{k}`", d.id),
                            )
                            .help("an absent file has no content; remove one of them"),
                        );
                        None
                    }
                    (false, []) => {
                        w.problems.push(
                            Problem::at(
                                d.span.clone(),
                                format!("{} needs one of `source`, `content` or `template`", d.id),
                            )
                            .label("no content"),
                        );
                        None
                    }
                    (false, [k]) => field(k).and_then(|s| {
                        let t = res(&mut w, &s)?;
                        if *k == "content" {
                            return Some(FileContent::Inline(t));
                        }
                        let p = w.repo_path(&t, s.span.clone(), config_dir, home, true)?;
                        Some(if *k == "source" {
                            FileContent::Source(p)
                        } else {
                            FileContent::Template(p)
                        })
                    }),
                    (false, _) => {
                        w.problems.push(
                            Problem::at(
                                d.span.clone(),
                                format!(
                                    "{} has more than one of `source`, `content`, `template`",
                                    d.id
                                ),
                            )
                            .help("a file's content comes from exactly one of them"),
                        );
                        None
                    }
                };
                let mode = w.mode(d.fields.get("mode"));
                path.map(|path| {
                    Spec::File(FileSpec {
                        path,
                        content,
                        mode,
                    })
                })
            }
            Kind::Dir => {
                let mode = w.mode(d.fields.get("mode"));
                let purge = matches!(d.fields.get("purge"), Some(RawValue::Bool(true)));
                outputs
                    .get(&d.id)
                    .cloned()
                    .map(|path| Spec::Dir(DirSpec { path, mode, purge }))
            }
            Kind::Symlink => {
                let target = field("target").and_then(|s| {
                    let t = res(&mut w, &s)?;
                    w.repo_path(&t, s.span.clone(), config_dir, home, false)
                });
                match (outputs.get(&d.id).cloned(), target) {
                    (Some(path), Some(target)) => Some(Spec::Symlink(SymlinkSpec { path, target })),
                    _ => None,
                }
            }
            Kind::Exec => {
                let command = w.command(d, "command", &mut res);
                let cwd = field("cwd").and_then(|s| {
                    let t = res(&mut w, &s)?;
                    w.target_path(&t, s.span.clone(), home)
                });
                let creates = field("creates").and_then(|s| {
                    let t = res(&mut w, &s)?;
                    w.target_path(&t, s.span.clone(), home)
                });
                let unless = w.command(d, "unless", &mut res);
                let onlyif = w.command(d, "onlyif", &mut res);
                let mut env = BTreeMap::new();
                if let Some(RawValue::Map(pairs)) = d.fields.get("env") {
                    for (k, v) in pairs {
                        if let Some(text) = res(&mut w, v) {
                            env.insert(k.text.clone(), text);
                        }
                    }
                }
                let timeout = match d.fields.get("timeout") {
                    Some(RawValue::Duration(t)) => Some(*t),
                    _ => None,
                };
                let idempotency_key = match (field("idempotency_key"), d.fields.get("once")) {
                    (Some(k), _) => match res(&mut w, &k) {
                        Some(t) if t.trim().is_empty() => {
                            w.problems.push(
                                Problem::at(k.span.clone(), "`idempotency_key` must not be empty")
                                    .label("empty key"),
                            );
                            None
                        }
                        other => other,
                    },
                    (None, Some(RawValue::Bool(true))) => Some(format!("once:{}", d.id)),
                    _ => None,
                };
                command.map(|command| {
                    Spec::Exec(ExecSpec {
                        command,
                        cwd,
                        env,
                        timeout,
                        creates,
                        unless,
                        onlyif,
                        idempotency_key,
                        refresh_only: matches!(
                            d.fields.get("refresh_only"),
                            Some(RawValue::Bool(true))
                        ),
                    })
                })
            }
            Kind::Noop => Some(Spec::Noop),
        };
        let mut edge = |list: &[Str], what: &str| -> Vec<String> {
            let mut out = Vec::new();
            for s in list {
                if !declared.contains_key(&s.text) {
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
                } else if active.contains(&s.text) {
                    out.push(s.text.clone());
                }
            }
            out
        };
        let after = edge(&d.after, "after");
        let before = edge(&d.before, "before");
        let notify = edge(&d.notify, "notify");
        references.sort();
        references.dedup();
        if let Some(spec) = spec
            && active.contains(&d.id)
        {
            let retry = Retry {
                retries: match d.fields.get("retry") {
                    Some(RawValue::Count(n)) => *n,
                    _ => 0,
                },
                delay_ms: match d.fields.get("delay") {
                    Some(RawValue::Duration(t)) => u64::try_from(t.as_millis()).unwrap_or(u64::MAX),
                    _ => 0,
                },
                exponential: matches!(d.fields.get("backoff"), Some(RawValue::Bool(true))),
            };
            resources.push(Resource {
                id: d.id.clone(),
                spec,
                after,
                before,
                notify,
                references,
                retry,
                span: d.span.clone(),
            });
        }
    }

    let mut manifest = Manifest {
        path: path.to_path_buf(),
        config_dir: config_dir.to_path_buf(),
        home: home.clone(),
        profile,
        vars,
        resources,
        text: Arc::new(text.to_string()),
        protected: vec![config_dir.to_path_buf()],
        graph: None,
    };
    // The graph skips edges to resources that failed to load, so a cycle among
    // the rest is reported in the same run as the other problems. The graph
    // built here is kept for the caller (building it is a large part of a load).
    match crate::graph::Graph::build(&manifest) {
        Ok(graph) => manifest.graph = Some(graph),
        Err(cycle) => {
            for id in &cycle.ids {
                if let Some(r) = manifest.get(id) {
                    w.problems.push(
                    Problem::at(r.span.clone(), format!("dependency cycle: {}", cycle.ids.join(" → ")))
                        .label("part of the cycle")
                        .help("remove one of its edges: after, before, notify, a reference or an autoedge"),
                );
                    break;
                }
            }
        }
    }
    if w.problems.is_empty() {
        Ok(manifest)
    } else {
        w.problems
            .sort_by_key(|p| p.span.as_ref().map_or(0, |s| s.start));
        Err(error(w.problems))
    }
}

fn list_or_none(set: &BTreeSet<String>) -> String {
    if set.is_empty() {
        "(none)".to_string()
    } else {
        set.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}

fn type_name(v: &DeValue) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

impl<'a> Walker<'a> {
    fn table<'v, 'i>(
        &mut self,
        v: &'v Spanned<DeValue<'i>>,
        what: &str,
    ) -> Option<&'v DeTable<'i>> {
        match v.get_ref() {
            DeValue::Table(t) => Some(t),
            other => {
                self.problems.push(
                    Problem::at(
                        v.span(),
                        format!("{what} must be a table, found {}", type_name(other)),
                    )
                    .label("not a table"),
                );
                None
            }
        }
    }

    fn string(&mut self, v: &Spanned<DeValue>, key: &str) -> Option<Str> {
        match v.get_ref() {
            DeValue::String(s) => Some(Str {
                text: s.to_string(),
                span: v.span(),
            }),
            other => {
                self.problems.push(
                    Problem::at(
                        v.span(),
                        format!("`{key}` must be a string, found {}", type_name(other)),
                    )
                    .label("expected a string"),
                );
                None
            }
        }
    }

    fn string_list(&mut self, v: &Spanned<DeValue>, key: &str) -> Option<Vec<Str>> {
        match v.get_ref() {
            DeValue::Array(items) => {
                let mut out = Vec::new();
                for item in items.iter() {
                    out.push(self.string(item, key)?);
                }
                Some(out)
            }
            other => {
                self.problems.push(
                    Problem::at(
                        v.span(),
                        format!(
                            "`{key}` must be an array of strings, found {}",
                            type_name(other)
                        ),
                    )
                    .label("expected [\"...\"]"),
                );
                None
            }
        }
    }

    /// A table of scalars, each turned into a string (for vars).
    fn scalar_map(&mut self, t: &DeTable, what: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (k, v) in t.iter() {
            let text = match v.get_ref() {
                // A variable's value is not expanded (no order among vars to
                // expand them in); say so rather than keep `${...}` literally.
                DeValue::String(s) => match refs::scan(s) {
                    Ok(found) if found.iter().all(|r| r.escape) => {
                        refs::substitute(s, &found, |_| None)
                    }
                    _ => {
                        self.problems.push(
                            Problem::at(v.span(), format!("{what} values cannot hold references"))
                                .label("`${` in a variable")
                                .help("variables are not expanded; write the value out, or $${ for a literal ${"),
                        );
                        continue;
                    }
                },
                DeValue::Integer(i) => i.to_string(),
                DeValue::Float(f) => f.to_string(),
                DeValue::Boolean(b) => b.to_string(),
                other => {
                    self.problems.push(
                        Problem::at(
                            v.span(),
                            format!(
                                "{what} values must be strings, numbers or booleans, found {}",
                                type_name(other)
                            ),
                        )
                        .label("not a scalar"),
                    );
                    continue;
                }
            };
            out.insert(k.get_ref().to_string(), text);
        }
        out
    }

    fn decl(&mut self, kind: Kind, id: String, span: Range<usize>, t: &DeTable) -> RawDecl {
        let mut d = RawDecl {
            id,
            kind,
            span,
            fields: BTreeMap::new(),
            after: Vec::new(),
            before: Vec::new(),
            notify: Vec::new(),
            profiles: None,
        };
        let allowed = kind_keys(kind);
        for (k, v) in t.iter() {
            let key = k.get_ref().as_ref();
            match key {
                "after" => d.after = self.string_list(v, key).unwrap_or_default(),
                "before" => d.before = self.string_list(v, key).unwrap_or_default(),
                "notify" => d.notify = self.string_list(v, key).unwrap_or_default(),
                "profiles" => d.profiles = self.string_list(v, key),
                "purge" | "once" | "refresh_only" => match v.get_ref() {
                    DeValue::Boolean(b) if allowed.contains(&key) => {
                        d.fields.insert(key.to_string(), RawValue::Bool(*b));
                    }
                    _ if !allowed.contains(&key) => self.unknown_key(k, &d),
                    other => self.problems.push(
                        Problem::at(v.span(), format!("`{key}` must be true or false, found {}", type_name(other))),
                    ),
                },
                "command" | "unless" | "onlyif" if allowed.contains(&key) => match v.get_ref() {
                    DeValue::String(_) => {
                        if let Some(s) = self.string(v, key) {
                            d.fields.insert(key.to_string(), RawValue::Str(s));
                        }
                    }
                    DeValue::Array(_) => {
                        if let Some(list) = self.string_list(v, key) {
                            if list.is_empty() {
                                self.problems.push(
                                    Problem::at(v.span(), format!("`{key}` must not be empty"))
                                        .label("empty command"),
                                );
                            } else {
                                d.fields.insert(key.to_string(), RawValue::List(list));
                            }
                        }
                    }
                    other => self.problems.push(
                        Problem::at(v.span(), format!("`{key}` must be a string (run with sh -c) or an array (program and arguments), found {}", type_name(other))),
                    ),
                },
                "env" if allowed.contains(&key) => {
                    if let Some(et) = self.table(v, "`env`") {
                        let mut pairs = Vec::new();
                        for (ek, ev) in et.iter() {
                            if let Some(val) = self.string(ev, &format!("env.{}", ek.get_ref())) {
                                pairs.push((
                                    Str {
                                        text: ek.get_ref().to_string(),
                                        span: ek.span(),
                                    },
                                    val,
                                ));
                            }
                        }
                        d.fields.insert(key.to_string(), RawValue::Map(pairs));
                    }
                }
                "retry" => match v.get_ref() {
                    DeValue::Integer(i) => match i.as_str().parse::<i64>() {
                        Ok(n) if (0..=1000).contains(&n) && i.radix() == 10 => {
                            d.fields.insert(key.to_string(), RawValue::Count(n as u32));
                        }
                        Ok(-1) => self.problems.push(
                            Problem::at(v.span(), "`retry = -1` (forever) is only allowed in watch mode")
                                .label("forever")
                                .help("give a number of retries, e.g. retry = 3"),
                        ),
                        _ => self.problems.push(
                            Problem::at(v.span(), "`retry` must be a whole number from 0 to 1000")
                                .label("bad retry count"),
                        ),
                    },
                    other => self.problems.push(
                        Problem::at(v.span(), format!("`retry` must be a whole number, found {}", type_name(other)))
                            .label("not a number"),
                    ),
                },
                "backoff" => match v.get_ref() {
                    DeValue::String(s) if s.as_ref() == "exponential" || s.as_ref() == "fixed" => {
                        d.fields.insert(key.to_string(), RawValue::Bool(s.as_ref() == "exponential"));
                    }
                    _ => self.problems.push(
                        Problem::at(v.span(), "`backoff` must be \"fixed\" or \"exponential\"")
                            .label("bad backoff"),
                    ),
                },
                "timeout" | "delay" if key == "delay" || allowed.contains(&key) => {
                    let parsed = match v.get_ref() {
                        DeValue::Integer(i) => i
                            .as_str()
                            .parse::<u64>()
                            .ok()
                            .filter(|_| i.radix() == 10)
                            .map(Duration::from_secs),
                        DeValue::String(s) => parse_duration(s),
                        _ => None,
                    };
                    match parsed {
                        Some(t) => {
                            d.fields.insert(key.to_string(), RawValue::Duration(t));
                        }
                        None => self.problems.push(
                            Problem::at(v.span(), format!("`{key}` must be a duration like \"30s\", \"500ms\", \"2m\" or a number of seconds"))
                                .label("bad duration"),
                        ),
                    }
                }
                _ if allowed.contains(&key) => {
                    if let Some(s) = self.string(v, key) {
                        d.fields.insert(key.to_string(), RawValue::Str(s));
                    }
                }
                _ => self.unknown_key(k, &d),
            }
        }
        let required: &[&str] = match kind {
            Kind::File | Kind::Dir => &["path"],
            Kind::Symlink => &["path", "target"],
            Kind::Exec => &["command"],
            Kind::Noop => &[],
        };
        for key in required {
            // A key that is present but invalid has its own problem already.
            let present = t.iter().any(|(k, _)| k.get_ref().as_ref() == *key);
            if !d.fields.contains_key(*key) && !present {
                self.problems.push(
                    Problem::at(
                        d.span.clone(),
                        format!("{} is missing the required key `{key}`", d.id),
                    )
                    .label(format!("needs `{key}`")),
                );
            }
        }
        d
    }

    fn unknown_key(&mut self, k: &Spanned<std::borrow::Cow<str>>, d: &RawDecl) {
        let mut valid: Vec<&str> = kind_keys(d.kind).to_vec();
        valid.extend(COMMON_KEYS);
        self.problems.push(
            Problem::at(
                k.span(),
                format!("unknown key `{}` in [{}]", k.get_ref(), d.id),
            )
            .label("unknown key")
            .help(format!("{} takes: {}", d.kind.as_str(), valid.join(", "))),
        );
    }

    /// Resolves `${...}` in a string; `lookup` answers resource references
    /// (`None`: not a resource). Problems are recorded; `None` if any.
    fn resolve(
        &mut self,
        s: &Str,
        vars: &BTreeMap<String, String>,
        lookup: &dyn Fn(&Reference) -> Option<Result<String, String>>,
    ) -> Option<(String, Vec<String>)> {
        // Offset of the string's content in the file: after the opening quote(s).
        let raw = &self.text[s.span.clone()];
        let quote = if raw.starts_with("\"\"\"") || raw.starts_with("'''") {
            3
        } else {
            1
        };
        let base = s.span.start + quote;
        // Offsets in the decoded text match the file only when nothing was
        // decoded (no escapes, no trimmed first newline); otherwise find the
        // same `${...}` text in the raw string, else point at the whole string.
        let raw_body =
            &self.text[(base).min(s.span.end)..s.span.end.saturating_sub(quote).max(base)];
        let verbatim = raw_body == s.text;
        let at = |range: &Range<usize>| -> Range<usize> {
            if verbatim {
                return base + range.start..base + range.end;
            }
            let piece = &s.text[range.clone()];
            let nth = s.text[..range.start].matches(piece).count();
            raw_body
                .match_indices(piece)
                .nth(nth)
                .map_or(s.span.clone(), |(i, _)| base + i..base + i + piece.len())
        };
        let refs = match refs::scan(&s.text) {
            Ok(r) => r,
            Err(unclosed) => {
                self.problems.push(
                    Problem::at(
                        at(&(unclosed..unclosed + 2)),
                        "unclosed `${` (a reference ends with `}`; write `$${` for a literal `${`)",
                    )
                    .label("unclosed"),
                );
                return None;
            }
        };
        let mut ok = true;
        let mut values = Vec::new();
        let mut used = Vec::new();
        for r in refs.iter().filter(|r| !r.escape) {
            let span = at(&r.range);
            if let Some(var) = r.name.strip_prefix("vars.") {
                match vars.get(var) {
                    Some(v) => values.push(v.clone()),
                    None => {
                        ok = false;
                        self.problems.push(
                            Problem::at(span, format!("unknown variable `{var}`"))
                                .label("dangling reference")
                                .help(format!(
                                    "variables: {}",
                                    list_or_none(&vars.keys().cloned().collect())
                                )),
                        );
                    }
                }
                continue;
            }
            match lookup(r) {
                Some(Ok(v)) => {
                    used.push(r.name.clone());
                    values.push(v);
                }
                Some(Err(msg)) => {
                    ok = false;
                    self.problems
                        .push(Problem::at(span, msg).label("bad reference"));
                }
                None => {
                    ok = false;
                    self.problems.push(
                        Problem::at(
                            span,
                            format!("`${{{}}}` refers to nothing declared", r.name),
                        )
                        .label("dangling reference")
                        .help(
                            "use ${vars.NAME} or ${kind.name} of a declared resource; write $${ for a literal ${ (shell ${VAR})",
                        ),
                    );
                }
            }
        }
        if !ok {
            return None;
        }
        let mut it = values.into_iter();
        Some((refs::substitute(&s.text, &refs, |_| it.next()), used))
    }

    /// A target path: absolute, or `~`-relative to the home.
    fn target_path(&mut self, text: &str, span: Range<usize>, home: &Path) -> Option<PathBuf> {
        if text == "~" {
            return Some(home.to_path_buf());
        }
        if let Some(rest) = text.strip_prefix("~/") {
            return Some(normalize(&home.join(rest)));
        }
        let p = Path::new(text);
        if p.is_absolute() {
            return Some(normalize(p));
        }
        self.problems.push(
            Problem::at(
                span,
                format!("the path {text:?} must be absolute or start with ~/"),
            )
            .label("relative path")
            .help("~ is the target home (--home)"),
        );
        None
    }

    /// A path in the config repo (relative paths resolve there).
    fn repo_path(
        &mut self,
        text: &str,
        span: Range<usize>,
        config_dir: &Path,
        home: &Path,
        must_exist: bool,
    ) -> Option<PathBuf> {
        let p = if text == "~" || text.starts_with("~/") {
            self.target_path(text, span.clone(), home)?
        } else if Path::new(text).is_absolute() {
            normalize(Path::new(text))
        } else {
            normalize(&config_dir.join(text))
        };
        if must_exist && !p.is_file() {
            let (message, label) = if p.is_dir() {
                (
                    format!("{} is a directory, not a file", p.display()),
                    "not a file",
                )
            } else {
                (
                    format!("{} does not exist in the config repo", p.display()),
                    "file not found",
                )
            };
            self.problems.push(Problem::at(span, message).label(label));
            return None;
        }
        Some(p)
    }

    fn mode(&mut self, v: Option<&RawValue>) -> Option<u32> {
        let Some(RawValue::Str(s)) = v else {
            return None;
        };
        let ok = !s.text.is_empty()
            && s.text.len() <= 4
            && s.text.chars().all(|c| ('0'..='7').contains(&c));
        match (ok, u32::from_str_radix(&s.text, 8)) {
            (true, Ok(m)) if m <= 0o7777 => Some(m),
            _ => {
                self.problems.push(
                    Problem::at(s.span.clone(), format!("bad mode {:?}", s.text))
                        .label("not an octal mode")
                        .help("write modes as octal strings, e.g. mode = \"0644\""),
                );
                None
            }
        }
    }

    fn command(
        &mut self,
        d: &RawDecl,
        key: &str,
        res: &mut dyn FnMut(&mut Walker<'a>, &Str) -> Option<String>,
    ) -> Option<Command> {
        match d.fields.get(key)? {
            RawValue::Str(s) => res(self, s).map(Command::Shell),
            RawValue::List(items) => {
                let mut argv = Vec::new();
                for item in items {
                    argv.push(res(self, item)?);
                }
                Some(Command::Argv(argv))
            }
            _ => None,
        }
    }
}

/// Removes `.` and resolves `..` lexically (no filesystem access).
fn normalize(p: &Path) -> PathBuf {
    crate::fsutil::normalize_lexically(p)
}

fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}
