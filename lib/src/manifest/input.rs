//! What a kind's `build` sees of one declared resource: its keys, already
//! typed, read through methods that resolve references and paths and record
//! every problem at the key's place.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Command;
use super::diag::Problem;
use super::refs::{ContentPart, RefValue, Reference};
use super::walker::{RawDecl, RawValue, Str, Walker};

/// Answers `${kind.name}` references (`None`: not a resource).
pub(super) type Lookup<'l> = dyn Fn(&Reference) -> Option<Result<RefValue, String>> + 'l;

/// One resource's keys, for [`super::schema::KindSchema::build`].
pub struct SpecInput<'x, 'a> {
    pub(super) w: &'x mut Walker<'a>,
    pub(super) d: &'x RawDecl,
    pub(super) path: Option<PathBuf>,
    pub(super) config_dir: &'x Path,
    pub(super) home: &'x Path,
    pub(super) vars: &'x BTreeMap<String, String>,
    pub(super) lookup: &'x Lookup<'x>,
    /// Resources referenced so far (edges).
    pub(super) references: Vec<String>,
    /// `[settings] secret_recipients` (each a checked age recipient).
    pub(super) secret_recipients: &'x [String],
}

impl SpecInput<'_, '_> {
    /// The resource's id (`kind.name`).
    pub fn id(&self) -> &str {
        &self.d.id
    }

    /// The resource's name: its id without the kind (`db` of `check.db`).
    pub fn name(&self) -> &str {
        let id = self.id();
        id.split_once('.').map_or(id, |(_, n)| n)
    }

    /// Where the resource is declared.
    pub fn span(&self) -> Range<usize> {
        self.d.span.clone()
    }

    /// The resolved path of the kind's path key (`None` if it had a problem).
    pub fn path(&self) -> Option<PathBuf> {
        self.path.clone()
    }

    /// `[settings] secret_recipients`: the admin recipients every secret
    /// is encrypted to besides its own.
    pub fn secret_recipients(&self) -> &[String] {
        self.secret_recipients
    }

    /// The target home (`~`).
    pub fn home(&self) -> &Path {
        self.home
    }

    /// Whether the key was given (with a valid type).
    pub fn has(&self, key: &str) -> bool {
        self.d.fields.contains_key(key)
    }

    /// Records a problem (the resource then fails to load).
    pub(crate) fn problem(&mut self, p: Problem) {
        self.w.problems.push(p);
    }

    fn raw(&self, key: &str) -> Option<Str> {
        match self.d.fields.get(key) {
            Some(RawValue::Str(s)) => Some(s.clone()),
            _ => None,
        }
    }

    fn resolve(&mut self, s: &Str) -> Option<String> {
        let (text, used) = self.w.resolve(s, self.vars, self.lookup)?;
        self.references.extend(used);
        Some(text)
    }

    /// A string key as written, unresolved, with its place (for enum-like
    /// values such as `ensure`).
    pub fn literal(&self, key: &str) -> Option<(String, Range<usize>)> {
        self.raw(key).map(|s| (s.text, s.span))
    }

    /// A string key with its references resolved.
    pub fn text(&mut self, key: &str) -> Option<String> {
        self.text_at(key).map(|(t, _)| t)
    }

    /// A string key with its references resolved, and its place.
    pub fn text_at(&mut self, key: &str) -> Option<(String, Range<usize>)> {
        let s = self.raw(key)?;
        let t = self.resolve(&s)?;
        Some((t, s.span))
    }

    /// A string key as text and secret references
    /// ([`super::ContentPart`]), with its place: `${secret.NAME}` is kept
    /// as a reference (an edge to `secret.NAME`), never resolved to a value.
    pub fn parts_at(&mut self, key: &str) -> Option<(Vec<ContentPart>, Range<usize>)> {
        let s = self.raw(key)?;
        let (parts, used) = self.w.resolve_parts(&s, self.vars, self.lookup, true)?;
        self.references.extend(used);
        Some((parts, s.span))
    }

    /// The secrets a template's text names as `${secret.NAME}` (its own
    /// text, not what it includes), each checked to be a declared, active
    /// secret and made an edge; problems at `span` (the `template` key).
    pub fn secrets_named_in(&mut self, text: &str, span: Range<usize>) -> Vec<String> {
        let mut out = Vec::new();
        for (name, range) in super::secret_references(text) {
            let r = &Reference {
                name,
                range,
                escape: false,
            };
            match (self.lookup)(r) {
                Some(Ok(RefValue::Secret(_) | RefValue::Shared(_))) => {
                    self.references.push(r.name.clone());
                    out.push(r.name.clone());
                }
                Some(Ok(_)) => {}
                Some(Err(msg)) => {
                    self.problem(Problem::at(span.clone(), msg).label("bad reference"))
                }
                None => self.problem(
                    Problem::at(
                        span.clone(),
                        format!("the template uses `${{{}}}`, which is not declared", r.name),
                    )
                    .label("dangling reference"),
                ),
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// A target path (absolute, or `~`-relative).
    pub fn target_path(&mut self, key: &str) -> Option<PathBuf> {
        let (t, span) = self.text_at(key)?;
        self.w.target_path(&t, span, self.home)
    }

    /// A path in the config repo (relative paths resolve there).
    pub fn repo_path(&mut self, key: &str, must_exist: bool) -> Option<PathBuf> {
        let (t, span) = self.text_at(key)?;
        self.w
            .repo_path(&t, span, self.config_dir, self.home, must_exist)
    }

    /// The config repo.
    pub fn config_dir(&self) -> &Path {
        self.config_dir
    }

    /// An array-of-strings key, each with its references resolved and its
    /// place (an item with a problem is left out).
    pub fn list(&mut self, key: &str) -> Vec<(String, Range<usize>)> {
        let Some(RawValue::List(items)) = self.d.fields.get(key) else {
            return Vec::new();
        };
        let items = items.clone();
        items
            .iter()
            .filter_map(|s| self.resolve(s).map(|t| (t, s.span.clone())))
            .collect()
    }

    /// The resolved path of a repo-path key without requiring it to exist,
    /// with its place.
    pub fn repo_path_at(&mut self, key: &str) -> Option<(PathBuf, Range<usize>)> {
        let (t, span) = self.text_at(key)?;
        let p = self
            .w
            .repo_path(&t, span.clone(), self.config_dir, self.home, false)?;
        Some((p, span))
    }

    /// An octal mode string.
    pub fn mode(&mut self, key: &str) -> Option<u32> {
        self.w.mode(self.d.fields.get(key))
    }

    /// A boolean key (absent: false).
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.d.fields.get(key), Some(RawValue::Bool(true)))
    }

    /// A whole-number key ([`super::schema::KeyType::Count`]).
    pub fn count(&self, key: &str) -> Option<u32> {
        match self.d.fields.get(key) {
            Some(RawValue::Count(n)) => Some(*n),
            _ => None,
        }
    }

    /// A duration key.
    pub fn duration(&self, key: &str) -> Option<Duration> {
        match self.d.fields.get(key) {
            Some(RawValue::Duration(t)) => Some(*t),
            _ => None,
        }
    }

    /// A command key: a string for `sh -c`, or program and arguments.
    pub fn command(&mut self, key: &str) -> Option<Command> {
        match self.d.fields.get(key)? {
            RawValue::Str(s) => self.resolve(s).map(Command::Shell),
            RawValue::List(items) => {
                let mut argv = Vec::new();
                for item in items {
                    argv.push(self.resolve(item)?);
                }
                Some(Command::Argv(argv))
            }
            _ => None,
        }
    }

    /// A table of strings, each resolved (a value with a problem is left out).
    pub fn map(&mut self, key: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if let Some(RawValue::Map(pairs)) = self.d.fields.get(key) {
            for (k, v) in pairs {
                if let Some(text) = self.resolve(v) {
                    out.insert(k.text.clone(), text);
                }
            }
        }
        out
    }

    /// `ensure`: true for `"absent"`, false for `"present"` or when not
    /// given; anything else is a problem (and reads as present).
    pub fn ensure_absent(&mut self) -> bool {
        match self.literal("ensure") {
            None => false,
            Some((e, _)) if e == "present" => false,
            Some((e, _)) if e == "absent" => true,
            Some((e, span)) => {
                self.problem(
                    Problem::at(
                        span,
                        format!("`ensure` must be \"present\" or \"absent\", not {e:?}"),
                    )
                    .label("bad value"),
                );
                false
            }
        }
    }
}
