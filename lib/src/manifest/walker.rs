//! The manifest's values as written: typed by the key tables (the common
//! keys here, each kind's own from its [`KindSchema`]), with every problem
//! recorded at its place; and the resolution of `${...}` references and paths.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::Kind;
use super::diag::Problem;
use super::refs::{self, ContentPart, RefValue, Reference};
use super::schema::{KeyType, KindSchema, KindTable};

/// The keys every resource takes, after the kind's own in "takes: ..." help.
const COMMON_KEYS: [&str; 7] = [
    "after", "before", "notify", "profiles", "retry", "delay", "backoff",
];

/// A string value and where it is.
#[derive(Debug, Clone)]
pub(crate) struct Str {
    pub(super) text: String,
    pub(super) span: Range<usize>,
}

/// A resource as written, before references are resolved.
pub(super) struct RawDecl {
    pub(super) id: String,
    pub(super) kind: Kind,
    pub(super) span: Range<usize>,
    pub(super) fields: Fields,
    // Thin: all of a manifest's declarations are held at once before
    // their resources are built, and most leave these empty.
    pub(super) after: thin_vec::ThinVec<Str>,
    pub(super) before: thin_vec::ThinVec<Str>,
    pub(super) notify: thin_vec::ThinVec<Str>,
    pub(super) profiles: Option<Vec<Str>>,
}

/// A declaration's keys and their values. A resource has a few, so a
/// vector: a B-tree map allocates a node of 11 entries (about 800 bytes)
/// per resource, 73 MB at 100 000 resources.
#[derive(Default)]
pub(super) struct Fields(Vec<(String, RawValue)>);

impl Fields {
    /// The value of `key`.
    pub(super) fn get(&self, key: &str) -> Option<&RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Whether `key` has a value.
    pub(super) fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Sets `key` to `value`, replacing the value it had.
    pub(super) fn insert(&mut self, key: String, value: RawValue) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key, value)),
        }
    }
}

/// A typed value of a key.
#[derive(Debug, Clone)]
pub(super) enum RawValue {
    Str(Str),
    List(Vec<Str>),
    Bool(bool),
    Map(Vec<(Str, Str)>),
    Duration(Duration),
    Count(u32),
}

/// Collects problems while walking the text.
pub(crate) struct Walker<'a> {
    pub(super) problems: Vec<Problem>,
    pub(super) text: &'a str,
    /// The kinds a manifest may declare, and their keys.
    pub(super) kinds: &'static dyn KindTable,
    /// Where in `text` the tables walked were parsed from: a large manifest
    /// is parsed in pieces (see `parse`), and a piece's spans start at 0.
    pub(super) offset: usize,
}

pub(super) fn list_or_none(set: &BTreeSet<String>) -> String {
    names_or_none(set.iter(), set.len())
}

/// How many names a help lists: 10 000 variables listed in the help of each
/// of 10 000 unknown references took minutes and most of a gigabyte.
const LISTED_NAMES: usize = 20;

/// How `retry = -1` (for ever) is kept until [`super::Retry`] is built.
pub(super) const RETRY_FOREVER: u32 = u32::MAX;

/// The first [`LISTED_NAMES`] of `total` names, then how many more.
pub(super) fn names_or_none<'n>(names: impl Iterator<Item = &'n String>, total: usize) -> String {
    if total == 0 {
        return "(none)".to_string();
    }
    let mut out = names
        .take(LISTED_NAMES)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if total > LISTED_NAMES {
        out.push_str(&format!(", ... ({} more)", total - LISTED_NAMES));
    }
    out
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
    /// A walker of `text` (whole, or the pieces of it) with no problem yet.
    pub(super) fn new(text: &'a str, kinds: &'static dyn KindTable) -> Self {
        Walker {
            problems: Vec::new(),
            text,
            kinds,
            offset: 0,
        }
    }

    /// A span of the piece being walked, as a span of the whole text.
    pub(super) fn at(&self, span: Range<usize>) -> Range<usize> {
        span.start + self.offset..span.end + self.offset
    }

    pub(super) fn table<'v, 'i>(
        &mut self,
        v: &'v Spanned<DeValue<'i>>,
        what: &str,
    ) -> Option<&'v DeTable<'i>> {
        match v.get_ref() {
            DeValue::Table(t) => Some(t),
            other => {
                self.problems.push(
                    Problem::at(
                        self.at(v.span()),
                        format!("{what} must be a table, found {}", type_name(other)),
                    )
                    .label("not a table"),
                );
                None
            }
        }
    }

    pub(super) fn string(&mut self, v: &Spanned<DeValue>, key: &str) -> Option<Str> {
        match v.get_ref() {
            DeValue::String(s) => Some(Str {
                text: s.to_string(),
                span: self.at(v.span()),
            }),
            other => {
                self.problems.push(
                    Problem::at(
                        self.at(v.span()),
                        format!("`{key}` must be a string, found {}", type_name(other)),
                    )
                    .label("expected a string"),
                );
                None
            }
        }
    }

    pub(super) fn string_list(&mut self, v: &Spanned<DeValue>, key: &str) -> Option<Vec<Str>> {
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
                        self.at(v.span()),
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
    pub(super) fn scalar_map(&mut self, t: &DeTable, what: &str) -> BTreeMap<String, String> {
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
                            Problem::at(self.at(v.span()), format!("{what} values cannot hold references"))
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
                            self.at(v.span()),
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

    /// A resource table: each key typed by the common keys, else by the
    /// kind's key table; then the kind's required keys.
    pub(super) fn decl(
        &mut self,
        kind: Kind,
        id: String,
        span: Range<usize>,
        t: &DeTable,
    ) -> RawDecl {
        let mut d = RawDecl {
            id,
            kind,
            span,
            // Room for every key of the table, not grown to 4 by the first
            // push: a resource has two or three, and at 100 000 resources
            // the room never used was 16 MB at the load's peak.
            fields: Fields(Vec::with_capacity(t.len())),
            after: Default::default(),
            before: Default::default(),
            notify: Default::default(),
            profiles: None,
        };
        let table = self.kinds.get(kind);
        for (k, v) in t.iter() {
            let key = k.get_ref().as_ref();
            match key {
                "after" => d.after = self.string_list(v, key).unwrap_or_default().into(),
                "before" => d.before = self.string_list(v, key).unwrap_or_default().into(),
                "notify" => d.notify = self.string_list(v, key).unwrap_or_default().into(),
                "profiles" => d.profiles = self.string_list(v, key),
                "retry" => self.retry(&mut d, v),
                "backoff" => self.backoff(&mut d, v),
                "delay" => self.duration(&mut d, key, v),
                _ => match table.keys().iter().find(|x| x.name == key) {
                    Some(def) => self.typed(&mut d, key, def.ty, v),
                    None => self.unknown_key(k, &d),
                },
            }
        }
        self.required(&d, table, t);
        d
    }

    /// A key of the kind's own table, checked against its type.
    fn typed(&mut self, d: &mut RawDecl, key: &str, ty: KeyType, v: &Spanned<DeValue>) {
        match ty {
            KeyType::Bool => match v.get_ref() {
                DeValue::Boolean(b) => {
                    d.fields.insert(key.to_string(), RawValue::Bool(*b));
                }
                other => self.problems.push(Problem::at(
                    self.at(v.span()),
                    format!("`{key}` must be true or false, found {}", type_name(other)),
                )),
            },
            KeyType::Command => self.command_value(d, key, v),
            KeyType::StrMap => {
                if let Some(et) = self.table(v, "`env`") {
                    let mut pairs = Vec::new();
                    for (ek, ev) in et.iter() {
                        if let Some(val) = self.string(ev, &format!("env.{}", ek.get_ref())) {
                            pairs.push((
                                Str {
                                    text: ek.get_ref().to_string(),
                                    span: self.at(ek.span()),
                                },
                                val,
                            ));
                        }
                    }
                    d.fields.insert(key.to_string(), RawValue::Map(pairs));
                }
            }
            KeyType::Duration => self.duration(d, key, v),
            KeyType::StrList => {
                if let Some(list) = self.string_list(v, key) {
                    d.fields.insert(key.to_string(), RawValue::List(list));
                }
            }
            KeyType::Str => {
                if let Some(s) = self.string(v, key) {
                    d.fields.insert(key.to_string(), RawValue::Str(s));
                }
            }
            KeyType::Count => match v.get_ref() {
                DeValue::Integer(i) => match i.as_str().parse::<u32>() {
                    Ok(n) if (1..=4096).contains(&n) && i.radix() == 10 => {
                        d.fields.insert(key.to_string(), RawValue::Count(n));
                    }
                    _ => self.problems.push(
                        Problem::at(
                            self.at(v.span()),
                            format!("`{key}` must be a whole number from 1 to 4096"),
                        )
                        .label("out of range"),
                    ),
                },
                other => self.problems.push(
                    Problem::at(
                        self.at(v.span()),
                        format!("`{key}` must be a whole number, found {}", type_name(other)),
                    )
                    .label("not a number"),
                ),
            },
        }
    }

    fn command_value(&mut self, d: &mut RawDecl, key: &str, v: &Spanned<DeValue>) {
        match v.get_ref() {
            DeValue::String(_) => {
                if let Some(s) = self.string(v, key) {
                    d.fields.insert(key.to_string(), RawValue::Str(s));
                }
            }
            DeValue::Array(_) => {
                if let Some(list) = self.string_list(v, key) {
                    if list.is_empty() {
                        self.problems.push(
                            Problem::at(self.at(v.span()), format!("`{key}` must not be empty"))
                                .label("empty command"),
                        );
                    } else {
                        d.fields.insert(key.to_string(), RawValue::List(list));
                    }
                }
            }
            other => self.problems.push(
                Problem::at(self.at(v.span()), format!("`{key}` must be a string (run with sh -c) or an array (program and arguments), found {}", type_name(other))),
            ),
        }
    }

    /// `retry`: 0 to 1000, or -1 for ever ([`RETRY_FOREVER`]).
    fn retry(&mut self, d: &mut RawDecl, v: &Spanned<DeValue>) {
        match v.get_ref() {
            DeValue::Integer(i) => match i.as_str().parse::<i64>() {
                Ok(n) if (0..=1000).contains(&n) && i.radix() == 10 => {
                    d.fields
                        .insert("retry".to_string(), RawValue::Count(n as u32));
                }
                // Forever: `stead watch` tries again after each `delay`; an
                // apply, which must end, does not retry it.
                Ok(-1) if i.radix() == 10 => {
                    d.fields
                        .insert("retry".to_string(), RawValue::Count(RETRY_FOREVER));
                }
                _ => self.problems.push(
                    Problem::at(
                        self.at(v.span()),
                        "`retry` must be a whole number from 0 to 1000, or -1 (for ever, in stead watch)",
                    )
                    .label("bad retry count"),
                ),
            },
            other => self.problems.push(
                Problem::at(
                    self.at(v.span()),
                    format!("`retry` must be a whole number, found {}", type_name(other)),
                )
                .label("not a number"),
            ),
        }
    }

    fn backoff(&mut self, d: &mut RawDecl, v: &Spanned<DeValue>) {
        match v.get_ref() {
            DeValue::String(s) if s.as_ref() == "exponential" || s.as_ref() == "fixed" => {
                d.fields.insert(
                    "backoff".to_string(),
                    RawValue::Bool(s.as_ref() == "exponential"),
                );
            }
            _ => self.problems.push(
                Problem::at(
                    self.at(v.span()),
                    "`backoff` must be \"fixed\" or \"exponential\"",
                )
                .label("bad backoff"),
            ),
        }
    }

    fn duration(&mut self, d: &mut RawDecl, key: &str, v: &Spanned<DeValue>) {
        // Seconds as f64 is exact for every integer in range; anything
        // larger is refused below, so precision lost there does not matter.
        let secs = match v.get_ref() {
            DeValue::Integer(i) => i
                .as_str()
                .parse::<u64>()
                .ok()
                .filter(|_| i.radix() == 10)
                .map(|n| n as f64),
            DeValue::String(s) => parse_duration(s),
            _ => None,
        };
        let problem = match secs {
            None => Problem::at(self.at(v.span()), format!("`{key}` must be a duration like \"30s\", \"500ms\", \"2m\" or a number of seconds"))
                .label("bad duration"),
            Some(s) => match Duration::try_from_secs_f64(s) {
                Ok(t) if t <= MAX_DURATION => {
                    d.fields.insert(key.to_string(), RawValue::Duration(t));
                    return;
                }
                _ => Problem::at(
                    self.at(v.span()),
                    format!(
                        "`{key}` must be at most 365 days (31536000 seconds, \"8760h\"); this is longer"
                    ),
                )
                .label("duration out of range"),
            },
        };
        self.problems.push(problem);
    }

    fn required(&mut self, d: &RawDecl, kind: &dyn KindSchema, t: &DeTable) {
        for key in kind.keys().iter().filter(|k| k.required).map(|k| k.name) {
            // A key that is present but invalid has its own problem already.
            let present = t.iter().any(|(k, _)| k.get_ref().as_ref() == key);
            if !d.fields.contains_key(key) && !present {
                self.problems.push(
                    Problem::at(
                        d.span.clone(),
                        format!("{} is missing the required key `{key}`", d.id),
                    )
                    .label(format!("needs `{key}`")),
                );
            }
        }
    }

    fn unknown_key(&mut self, k: &Spanned<std::borrow::Cow<str>>, d: &RawDecl) {
        let mut valid: Vec<&str> = self
            .kinds
            .get(d.kind)
            .keys()
            .iter()
            .map(|k| k.name)
            .collect();
        valid.extend(COMMON_KEYS);
        self.problems.push(
            Problem::at(
                self.at(k.span()),
                format!("unknown key `{}` in [{}]", k.get_ref(), d.id),
            )
            .label("unknown key")
            .help(format!("{} takes: {}", d.kind.as_str(), valid.join(", "))),
        );
    }

    /// Resolves `${...}` in a string; `lookup` answers resource references
    /// (`None`: not a resource). Problems are recorded; `None` if any.
    pub(super) fn resolve(
        &mut self,
        s: &Str,
        vars: &BTreeMap<String, String>,
        lookup: &dyn Fn(&Reference) -> Option<Result<RefValue, String>>,
    ) -> Option<(String, Vec<String>)> {
        // Most strings hold no reference (and no `$${`): no parts to build.
        if !s.text.contains("${") {
            return Some((s.text.clone(), Vec::new()));
        }
        let (parts, used) = self.resolve_parts(s, vars, lookup, false)?;
        let text = parts
            .into_iter()
            .map(|p| match p {
                ContentPart::Text(t) => t,
                // Refused by resolve_parts when secrets are not allowed.
                ContentPart::Secret(_) | ContentPart::Shared(_) | ContentPart::Output(_) => {
                    String::new()
                }
            })
            .collect();
        Some((text, used))
    }

    /// [`Walker::resolve`] into literal text and secret references: with
    /// `secrets`, a `${secret.NAME}` stays a [`ContentPart::Secret`] (its
    /// value is never in the manifest's memory); without, it is a problem.
    pub(super) fn resolve_parts(
        &mut self,
        s: &Str,
        vars: &BTreeMap<String, String>,
        lookup: &dyn Fn(&Reference) -> Option<Result<RefValue, String>>,
        secrets: bool,
    ) -> Option<(Vec<ContentPart>, Vec<String>)> {
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
        let whole = s.span.clone();
        let unclosed_at = |offset: usize| -> Range<usize> {
            if verbatim {
                return base + offset..base + offset + 2;
            }
            let nth = s.text[..offset].matches("${").count();
            raw_body
                .match_indices("${")
                .nth(nth)
                .map_or(whole.clone(), |(i, _)| base + i..base + i + 2)
        };
        let refs = match refs::scan(&s.text) {
            Ok(r) => r,
            Err(unclosed) => {
                self.problems.push(
                    Problem::at(
                        unclosed_at(unclosed),
                        "unclosed `${` (a reference ends with `}`; write `$${` for a literal `${`)",
                    )
                    .label("unclosed"),
                );
                return None;
            }
        };
        // The raw text's own references, scanned once: the i-th of the
        // decoded text is the i-th of the raw one when both have as many and
        // it reads the same (an escape inside `${...}` does not). Searching
        // the raw text again for each reference was quadratic.
        let raw_refs = (!verbatim)
            .then(|| refs::scan(raw_body).ok())
            .flatten()
            .filter(|raw| raw.len() == refs.len());
        let at = |i: usize, r: &Reference| -> Range<usize> {
            if verbatim {
                return base + r.range.start..base + r.range.end;
            }
            raw_refs
                .as_ref()
                .and_then(|raw| raw.get(i))
                .filter(|x| raw_body.get(x.range.clone()) == s.text.get(r.range.clone()))
                .map_or(whole.clone(), |x| base + x.range.start..base + x.range.end)
        };
        let mut ok = true;
        let mut values = Vec::new();
        let mut used = Vec::new();
        for (i, r) in refs.iter().enumerate().filter(|(_, r)| !r.escape) {
            let span = at(i, r);
            if let Some(var) = r.name.strip_prefix("vars.") {
                match vars.get(var) {
                    Some(v) => values.push(ContentPart::Text(v.clone())),
                    None => {
                        ok = false;
                        self.problems.push(
                            Problem::at(span, format!("unknown variable `{var}`"))
                                .label("dangling reference")
                                .help(format!(
                                    "variables: {}",
                                    names_or_none(vars.keys(), vars.len())
                                )),
                        );
                    }
                }
                continue;
            }
            match lookup(r) {
                Some(Ok(RefValue::Text(v))) => {
                    used.push(r.name.clone());
                    values.push(ContentPart::Text(v));
                }
                Some(Ok(RefValue::Secret(name))) if secrets => {
                    used.push(r.name.clone());
                    values.push(ContentPart::Secret(name));
                }
                Some(Ok(RefValue::Shared(name))) if secrets => {
                    used.push(r.name.clone());
                    values.push(ContentPart::Shared(name));
                }
                Some(Ok(RefValue::Output(id))) if secrets => {
                    // The edge is to the exec itself.
                    used.push(id.clone());
                    values.push(ContentPart::Output(id));
                }
                Some(Ok(RefValue::Secret(_) | RefValue::Shared(_) | RefValue::Output(_))) => {
                    ok = false;
                    self.problems.push(
                        Problem::at(
                            span,
                            format!("`${{{}}}` is a value kept encrypted: it can be used only in a file's `content`", r.name),
                        )
                        .label("secret here")
                        .help("a file whose `content` holds ${secret.NAME} is written with the value; nowhere else may hold it"),
                    );
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
        Some((refs::split(&s.text, &refs, values), used))
    }

    /// False (with a problem at `span`) when a path holds a NUL byte, which
    /// no file name can: the OS call would fail later with no position.
    fn no_nul(&mut self, text: &str, span: &Range<usize>) -> bool {
        if !text.contains('\0') {
            return true;
        }
        self.problems.push(
            Problem::at(
                span.clone(),
                "a path cannot contain a NUL character (\\u0000)",
            )
            .label("NUL in a path"),
        );
        false
    }

    /// A target path: absolute, or `~`-relative to the home.
    pub(super) fn target_path(
        &mut self,
        text: &str,
        span: Range<usize>,
        home: &Path,
    ) -> Option<PathBuf> {
        if !self.no_nul(text, &span) {
            return None;
        }
        if text == "~" {
            return Some(home.to_path_buf());
        }
        if let Some(rest) = text.strip_prefix("~/") {
            let path = normalize(&home.join(rest));
            if !path.starts_with(home) {
                self.problems.push(
                    Problem::at(
                        span,
                        format!("the path {text:?} leaves the home: `..` climbs above ~"),
                    )
                    .label("outside the home")
                    .help("write the absolute path if you mean a path outside the home"),
                );
                return None;
            }
            return Some(path);
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
    pub(super) fn repo_path(
        &mut self,
        text: &str,
        span: Range<usize>,
        config_dir: &Path,
        home: &Path,
        must_exist: bool,
    ) -> Option<PathBuf> {
        if !self.no_nul(text, &span) {
            return None;
        }
        let p = if text == "~" || text.starts_with("~/") {
            self.target_path(text, span.clone(), home)?
        } else if Path::new(text).is_absolute() {
            normalize(Path::new(text))
        } else {
            normalize(&config_dir.join(text))
        };
        if must_exist {
            // A FIFO here is not "missing": say what it is (reading it
            // would block).
            let (message, label) = match std::fs::metadata(&p) {
                Ok(m) if m.is_file() => return Some(p),
                Ok(m) if m.is_dir() => (
                    format!("{} is a directory, not a file", p.display()),
                    "not a file",
                ),
                Ok(m) => (
                    format!(
                        "{} is {}, not a regular file",
                        p.display(),
                        crate::ownfile::special_kind(m.file_type()).unwrap_or("special")
                    ),
                    "not a regular file",
                ),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => (
                    format!("{} does not exist in the config repo", p.display()),
                    "file not found",
                ),
                Err(e) => (format!("{} cannot be read: {e}", p.display()), "unreadable"),
            };
            self.problems.push(Problem::at(span, message).label(label));
            return None;
        }
        Some(p)
    }

    pub(super) fn mode(&mut self, v: Option<&RawValue>) -> Option<u32> {
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
}

/// Removes `.` and resolves `..` lexically (no filesystem access).
pub(super) fn normalize(p: &Path) -> PathBuf {
    crate::fsutil::normalize_lexically(p)
}

/// The longest `delay` or `timeout`: a year. Longer is a typo (or hostile),
/// and would overflow the millisecond counts a duration becomes later.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// The seconds of a duration string; `None` when it is not one.
/// `humantime` reads `"500ms"`, `"2m"`, `"1m30s"`, `"2h 5min"`, `"1day"`;
/// a single decimal term (`"1.5s"`, documented before humantime) is read
/// too. A number too big for f64 is infinite, which the caller refuses as
/// out of range.
fn parse_duration(s: &str) -> Option<f64> {
    let s = s.trim();
    match humantime::parse_duration(s) {
        Ok(d) => Some(d.as_secs_f64()),
        // Past what a `Duration` holds: out of range, not malformed.
        Err(humantime::DurationError::NumberOverflow) => Some(f64::INFINITY),
        Err(_) => decimal_duration(s),
    }
}

/// `"<decimal><unit>"` with unit `ms`, `s`, `m` or `h` (humantime takes
/// whole numbers only).
fn decimal_duration(s: &str) -> Option<f64> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit() && c != '.')?);
    let n: f64 = num.parse().ok()?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    (secs >= 0.0).then_some(secs)
}
