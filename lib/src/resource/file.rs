//! `file`: content from `source`, `content` or `template`; `mode`; `ensure = "absent"`.

use std::fs;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::checksum::Checksum;
use crate::fsutil::FsError;
use zeroize::Zeroizing;

use crate::manifest::{ContentPart, FileContent, FileSpec, Kind, Problem, Spec, SpecInput};
use crate::safe_path;
use crate::seal::SealPath;
use crate::secret::{Scope, Secrets};
use crate::state::DriftStatus;

use super::kind::{
    ApplyEnv, Drift, Key, KeyType, KindSchema, Ownership, Planned, ResourceKind, unexpected_op,
    unexpected_spec,
};
use super::{
    Action, Applied, Op, PlanContext, ResourceError, backup, backup_encrypted, checksum, mode_of,
};

/// Lines of diff shown per file before it is cut.
const DIFF_LINES: usize = 200;

/// The `file` kind.
pub struct File;

impl KindSchema for File {
    fn kind(&self) -> Kind {
        Kind::File
    }

    fn keys(&self) -> &'static [Key] {
        const KEYS: &[Key] = &[
            Key::required("path", KeyType::Str),
            Key::optional("source", KeyType::Str),
            Key::optional("content", KeyType::Str),
            Key::optional("template", KeyType::Str),
            Key::optional("mode", KeyType::Str),
            Key::optional("ensure", KeyType::Str),
            Key::optional("sensitive", KeyType::Bool),
            Key::optional("ignore", KeyType::StrList),
            Key::optional("purge", KeyType::Bool),
            Key::optional("link", KeyType::Bool),
            Key::optional("template_suffix", KeyType::Str),
        ];
        KEYS
    }

    fn path_key(&self) -> Option<&'static str> {
        Some("path")
    }

    fn build(&self, input: &mut SpecInput) -> Option<Spec> {
        if let Some(tree) = super::tree::declared(input) {
            return tree;
        }
        if let Some(key) = super::tree::TREE_KEYS.iter().find(|k| input.has(k)) {
            let id = input.id().to_string();
            input.problem(
                Problem::at(
                    input.span(),
                    format!("{id} has `{key}`, which only a tree takes"),
                )
                .label("not a tree")
                .help("`ignore`, `purge`, `link` and `template_suffix` are for a `source` that is a directory"),
            );
            return None;
        }
        let path = input.path();
        let absent = input.ensure_absent();
        let content = content(input, absent);
        let mode = input.mode("mode");
        // A template that names a secret makes the file secret-bearing.
        let sensitive = input.flag("sensitive") || template_holds_secrets(input, content.as_ref());
        path.map(|path| {
            Spec::File(FileSpec {
                path,
                content,
                mode,
                sensitive,
            })
        })
    }

    fn ownership(&self) -> Ownership {
        Ownership {
            owns_path: true,
            adopt_when_right: true,
        }
    }
}

impl ResourceKind for File {
    fn plan(&self, spec: &Spec, ctx: &PlanContext, owned: bool) -> Result<Planned, ResourceError> {
        match spec {
            Spec::File(f) => plan(f, ctx, owned),
            other => Err(unexpected_spec(self.kind(), other)),
        }
    }

    fn plan_removal(
        &self,
        path: &Path,
        recorded: Option<&String>,
    ) -> Result<Planned, ResourceError> {
        plan_removal(path, recorded)
    }

    fn apply(&self, op: &Op, env: &ApplyEnv) -> Result<Applied, ResourceError> {
        match op {
            Op::WriteFile {
                path,
                content,
                mode,
                backup,
                encrypt_backup,
            } => write(path, content, *mode, (*backup, *encrypt_backup), env),
            Op::WriteSecret {
                path,
                parts,
                mode,
                backup,
            } => write_secret(path, parts, *mode, *backup, env),
            Op::Chmod { path, mode } => chmod(path, *mode).map(|()| Applied::default()),
            Op::RemoveFile {
                path,
                backup,
                encrypt_backup,
            } => remove(path, (*backup, *encrypt_backup), env),
            other => Err(unexpected_op(self.kind(), other)),
        }
    }

    fn drift(
        &self,
        path: &Path,
        meta: &fs::Metadata,
        recorded: Option<&String>,
        vouched: bool,
        declared: Option<&Spec>,
        secrets: &Secrets,
    ) -> Drift {
        drift(path, meta, recorded, vouched, declared, secrets)
    }

    /// A file with `ensure = "absent"` plans no checksum: once it is gone,
    /// stead no longer owns the path.
    fn releases(&self, planned_checksum: Option<&crate::checksum::Checksum>) -> bool {
        planned_checksum.is_none()
    }

    fn watch_paths(&self, spec: &Spec) -> Vec<std::path::PathBuf> {
        spec.path().map(Path::to_path_buf).into_iter().collect()
    }

    /// The file and its `source`; a template may include any file of the
    /// repo, so a templated file is planned every run.
    fn seal_paths(&self, spec: &Spec) -> Option<Vec<SealPath>> {
        let Spec::File(f) = spec else { return None };
        let mut paths = vec![SealPath::content(&f.path)];
        match &f.content {
            // A secret's value is not a path's stat (its rotation would not
            // break the seal).
            Some(FileContent::Template(_) | FileContent::Secret(_)) => return None,
            Some(FileContent::Source(source)) => paths.push(SealPath::content(source)),
            Some(FileContent::Inline(_)) | None => {}
        }
        Some(paths)
    }
}

/// Where the content comes from: exactly one of `source`, `content`,
/// `template`, unless the file is absent.
fn content(input: &mut SpecInput, absent: bool) -> Option<FileContent> {
    let sources: Vec<&str> = ["source", "content", "template"]
        .into_iter()
        .filter(|k| input.has(k))
        .collect();
    let id = input.id().to_string();
    match (absent, sources.as_slice()) {
        (true, []) => None,
        (true, [k, ..]) => {
            input.problem(
                Problem::at(
                    input.span(),
                    format!("{id} has ensure = \"absent\" and `{k}`"),
                )
                .help("an absent file has no content; remove one of them"),
            );
            None
        }
        (false, []) => {
            input.problem(
                Problem::at(
                    input.span(),
                    format!("{id} needs one of `source`, `content` or `template`"),
                )
                .label("no content"),
            );
            None
        }
        (false, ["content"]) => input.parts_at("content").map(|(parts, _)| inline(parts)),
        (false, ["source"]) => input.repo_path("source", true).map(FileContent::Source),
        (false, [_template]) => input.repo_path("template", true).map(FileContent::Template),
        (false, _) => {
            input.problem(
                Problem::at(
                    input.span(),
                    format!("{id} has more than one of `source`, `content`, `template`"),
                )
                .help("a file's content comes from exactly one of them"),
            );
            None
        }
    }
}

/// Whether the template of `content` names `${secret.NAME}` in its own
/// text (each an edge to that secret, checked at load).
fn template_holds_secrets(input: &mut SpecInput, content: Option<&FileContent>) -> bool {
    let Some(FileContent::Template(path)) = content else {
        return false;
    };
    let Some((_, span)) = input.literal("template") else {
        return false;
    };
    // Its existence was checked with its path; an unreadable template is
    // reported when it is rendered.
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    !input.secrets_named_in(&text, span).is_empty()
}

/// A rendered template's text as parts: each `${secret.NAME}` of a declared
/// secret (the rendering left it as written) becomes that secret; `None`
/// when it holds none.
fn template_parts(rendered: &str, ctx: &PlanContext) -> Option<Vec<ContentPart>> {
    let refs = crate::manifest::secret_references(rendered);
    let mut parts = Vec::new();
    let mut last = 0;
    for (name, range) in refs {
        let Some(secret) = ctx
            .manifest
            .get(&name)
            .and_then(|r| super::secret::secret_spec(&r.spec))
        else {
            continue;
        };
        if range.start > last {
            parts.push(ContentPart::Text(rendered[last..range.start].to_string()));
        }
        parts.push(match secret.scope {
            Scope::Lineage => ContentPart::Shared(secret.name.clone()),
            Scope::Machine => ContentPart::Secret(secret.name.clone()),
        });
        last = range.end;
    }
    if parts.is_empty() {
        return None;
    }
    if last < rendered.len() {
        parts.push(ContentPart::Text(rendered[last..].to_string()));
    }
    Some(parts)
}

/// Inline content: plain text (one part: the parts join adjacent text),
/// or text with values in it.
fn inline(mut parts: Vec<ContentPart>) -> FileContent {
    match parts.as_mut_slice() {
        [ContentPart::Text(t)] => FileContent::Inline(std::mem::take(t)),
        _ => FileContent::Secret(parts),
    }
}

/// A recorded file: changed since stead wrote it, replaced, or a mode that
/// differs from the declared one.
fn drift(
    path: &Path,
    meta: &fs::Metadata,
    recorded: Option<&String>,
    vouched: bool,
    declared: Option<&Spec>,
    secrets: &Secrets,
) -> Drift {
    let expected = recorded.cloned();
    if !meta.file_type().is_file() {
        return Drift {
            status: DriftStatus::Replaced,
            expected,
            actual: Some("not a regular file".into()),
        };
    }
    // A secret-bearing file's checksum is keyed by the machine identity.
    let keyed = recorded.is_some_and(|r| crate::secret::is_secret_checksum(r));
    let actual = match recorded.filter(|_| vouched) {
        Some(known) => Some(known.clone()),
        None => read_whole(path, meta)
            .map(|b| {
                let b = zeroize::Zeroizing::new(b);
                if keyed {
                    secrets.content_checksum(&b)
                } else {
                    checksum(&b)
                }
            })
            .ok(),
    };
    let actual_mode = mode_of(meta);
    let mode_drift = match declared {
        Some(Spec::File(f)) => f.mode.filter(|want| actual_mode != *want),
        _ => None,
    };
    if expected.is_some() && actual != expected {
        Drift {
            status: DriftStatus::Modified,
            expected,
            actual,
        }
    } else if let Some(want) = mode_drift {
        Drift {
            status: DriftStatus::Mode,
            expected: Some(format!("{want:04o}")),
            actual: Some(format!("{actual_mode:04o}")),
        }
    } else {
        Drift {
            status: DriftStatus::Unchanged,
            expected,
            actual,
        }
    }
}

/// The bytes a file should hold.
pub fn desired_content(content: &FileContent, ctx: &PlanContext) -> Result<Vec<u8>, ResourceError> {
    match content {
        FileContent::Inline(s) => Ok(s.as_bytes().to_vec()),
        // A source swapped for a FIFO after the load is refused, not waited on.
        FileContent::Source(p) => {
            crate::ownfile::read(p).map_err(|e| FsError::new("cannot read", p, e).into())
        }
        FileContent::Template(p) => render_template(p, ctx),
        // Never asked of secret content (plan_secret renders it); rendered
        // the same way if a caller does.
        FileContent::Secret(parts) => match render_secret(parts, ctx.secrets)? {
            Some(v) => Ok(v.to_vec()),
            None => Err(ResourceError::Internal(
                "secret content asked for before its secrets exist".into(),
            )),
        },
    }
}

/// The values content holds, as a plan names them: `secret.db`,
/// `exec.gen's output`.
fn value_names(parts: &[ContentPart]) -> String {
    let names: Vec<String> = parts
        .iter()
        .filter_map(|p| match p {
            ContentPart::Secret(n) | ContentPart::Shared(n) => Some(format!("secret.{n}")),
            ContentPart::Output(id) => Some(format!("{id}'s output")),
            ContentPart::Text(_) => None,
        })
        .collect();
    names.join(", ")
}

/// Secret content with its values in place, `None` while a secret it holds
/// has no value yet or is due for rotation (the secret's own change, which
/// this file waits for, makes it). Zeroized when dropped.
fn render_secret(
    parts: &[ContentPart],
    secrets: &Secrets,
) -> Result<Option<Zeroizing<Vec<u8>>>, ResourceError> {
    let mut out = Zeroizing::new(Vec::new());
    for part in parts {
        match part {
            ContentPart::Text(t) => out.extend_from_slice(t.as_bytes()),
            ContentPart::Secret(name) | ContentPart::Shared(name) => {
                let scope = match part {
                    ContentPart::Shared(_) => Scope::Lineage,
                    _ => Scope::Machine,
                };
                if secrets.rotation_requested(scope, name)? {
                    return Ok(None);
                }
                match secrets.value(scope, name) {
                    Ok(Some(v)) => out.extend_from_slice(v.expose()),
                    Ok(None) => return Ok(None),
                    // A lineage secret this machine cannot read yet (it
                    // joined after it was made): not known here.
                    Err(crate::secret::SecretError::Undecryptable { .. })
                        if scope == Scope::Lineage && !secrets.is_recipient_of(scope, name)? =>
                    {
                        return Ok(None);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            ContentPart::Output(id) => match secrets.output(id)? {
                Some(v) => out.extend_from_slice(v.expose()),
                None => return Ok(None),
            },
        }
    }
    Ok(Some(out))
}

fn render_template(path: &Path, ctx: &PlanContext) -> Result<Vec<u8>, ResourceError> {
    super::template::render(path, ctx)
}

/// Plans a file, with the checksum of the declared content (keyed by the
/// machine identity for a sensitive file).
pub(super) fn plan(f: &FileSpec, ctx: &PlanContext, owned: bool) -> Result<Planned, ResourceError> {
    if let Some(FileContent::Secret(parts)) = &f.content {
        return plan_secret(f, parts, ctx, owned);
    }
    let desired = match &f.content {
        // A sensitive template may name secrets: rendered once (with the
        // names in place, never the values), then read for them.
        Some(FileContent::Template(p)) if f.sensitive => {
            let rendered = render_template(p, ctx)?;
            if let Some(parts) = template_parts(&String::from_utf8_lossy(&rendered), ctx) {
                return plan_secret(f, &parts, ctx, owned);
            }
            Some(rendered)
        }
        Some(c) => Some(desired_content(c, ctx)?),
        None => None,
    };
    let hash = hasher(f.sensitive, ctx.secrets);
    let checksum = desired.as_deref().map(&hash);
    let planned = plan_content(f, desired, checksum.as_deref(), ctx, owned, &hash)?;
    Ok(Planned {
        checksum: checksum.map(Checksum::from),
        ..planned
    })
}

/// How a file's content is checksummed: keyed by the machine identity
/// when it must never be shown, else plain blake3.
fn hasher(sensitive: bool, secrets: &Secrets) -> impl Fn(&[u8]) -> String + '_ {
    move |b: &[u8]| {
        if sensitive {
            secrets.content_checksum(b)
        } else {
            checksum(b)
        }
    }
}

/// Plans a file whose content holds secrets. The plan holds the parts, never
/// the values: the values are decrypted here only to compare, and again
/// inside the write.
fn plan_secret(
    f: &FileSpec,
    parts: &[ContentPart],
    ctx: &PlanContext,
    owned: bool,
) -> Result<Planned, ResourceError> {
    let hash = hasher(true, ctx.secrets);
    let Some(content) = render_secret(parts, ctx.secrets)? else {
        return plan_secret_unknown(f, parts, ctx, owned, &hash);
    };
    let sum = hash(&content);
    // A new secret-bearing file is private unless its mode is declared.
    let private = FileSpec {
        mode: f.mode.or_else(|| (!f.path.exists()).then_some(0o600)),
        ..f.clone()
    };
    let planned = plan_content(
        &private,
        Some(content.to_vec()),
        Some(&sum),
        ctx,
        owned,
        &hash,
    )?;
    let op = match planned.op {
        Op::WriteFile {
            path,
            mut content,
            mode,
            backup,
            ..
        } => {
            zeroize::Zeroize::zeroize(&mut content);
            Op::WriteSecret {
                path,
                parts: parts.to_vec(),
                mode,
                backup,
            }
        }
        other => other,
    };
    let reason = planned
        .reason
        .replace("content differs", "secret content changed");
    Ok(Planned {
        checksum: Some(Checksum::from(sum)),
        reason,
        op,
        ..planned
    })
}

/// Files whose content holds the stdout of an exec that runs in this plan
/// (`${exec.NAME.stdout}`): what they will hold is known only once it has
/// run, so each is written after it, from the output it printed, and only
/// if that changes it (`write_secret`).
pub fn defer_to_outputs(resources: &[&crate::manifest::Resource], changes: &mut [super::Change]) {
    let runs: std::collections::HashSet<String> = changes
        .iter()
        .filter(|c| matches!(c.op, Op::Run(_)))
        .map(|c| c.id.clone())
        .collect();
    if runs.is_empty() {
        return;
    }
    let by_id: std::collections::HashMap<&str, &crate::manifest::Resource> =
        resources.iter().map(|r| (r.id.as_str(), *r)).collect();
    for change in changes.iter_mut() {
        let Some(Spec::File(f)) = by_id.get(change.id.as_str()).map(|r| &r.spec) else {
            continue;
        };
        let Some(FileContent::Secret(parts)) = &f.content else {
            continue;
        };
        let Some(exec) = parts.iter().find_map(|p| match p {
            ContentPart::Output(id) if runs.contains(id) => Some(id),
            _ => None,
        }) else {
            continue;
        };
        let mode = f
            .mode
            .or_else(|| fs::symlink_metadata(&f.path).ok().map(|m| mode_of(&m)));
        let backup = match &change.op {
            Op::WriteSecret { backup, .. } => *backup,
            _ => false,
        };
        match change.action {
            Action::Unchanged | Action::Update | Action::Create => {
                if change.action == Action::Unchanged {
                    change.action = Action::Update;
                    change.reason = format!("content from {exec}'s output, known after it runs");
                }
                change.op = Op::WriteSecret {
                    path: f.path.clone(),
                    parts: parts.clone(),
                    mode: mode.unwrap_or(0o600),
                    backup,
                };
                // What it writes is known when it is written.
                change.checksum = None;
            }
            Action::Remove | Action::Conflict => {}
        }
    }
}

/// A secret-bearing file whose secrets are made by this run: its content
/// is new whatever is there, and known only when it is written (the
/// checksum recorded is the write's).
fn plan_secret_unknown(
    f: &FileSpec,
    parts: &[ContentPart],
    ctx: &PlanContext,
    owned: bool,
    hash: &dyn Fn(&[u8]) -> String,
) -> Result<Planned, ResourceError> {
    let path = &f.path;
    let op = |backup: bool, mode: u32| Op::WriteSecret {
        path: path.clone(),
        parts: parts.to_vec(),
        mode,
        backup,
    };
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Planned::new(
                Action::Create,
                format!(
                    "content holds {}, made before it is written",
                    value_names(parts)
                ),
                op(false, f.mode.unwrap_or(0o600)),
            ));
        }
        Err(e) => return Err(FsError::new("cannot read", path, e).into()),
    };
    if meta.is_dir() {
        return Ok(Planned::conflict(
            "a directory is in the way; stead never replaces a directory it does not own",
        ));
    }
    if !owned && !ctx.force {
        return Ok(Planned::conflict(
            "exists and stead does not own it; 'stead apply --force' backs it up and replaces it",
        ));
    }
    let shown = ctx.manifest.display_path(path);
    let edited = !meta.is_file()
        || !owned
        || read_whole(path, &meta)
            .map(|b| {
                ctx.recorded
                    .get(&shown)
                    .is_none_or(|r| !r.is(&hash(&Zeroizing::new(b))))
            })
            .unwrap_or(true);
    Ok(Planned::new(
        Action::Update,
        format!(
            "secret content changed: it holds {}, made before it is written",
            value_names(parts)
        ),
        op(edited, f.mode.unwrap_or(mode_of(&meta))),
    ))
}

/// The file at `path` whole, `meta` its `lstat` just taken: `open`, then
/// `read` to end of file, without the `fstat` (and `lseek`) that `fs::read`
/// makes to learn a size the `lstat` gave.
fn read_whole(path: &Path, meta: &fs::Metadata) -> io::Result<Vec<u8>> {
    let mut file = fs::File::open(path)?;
    crate::safe_path::read_all(&mut file, usize::try_from(meta.len()).unwrap_or(0))
}

/// Whether the stat cache vouches that the owned file at `shown` (stamped
/// `meta`) holds `sum`, stead's recorded checksum too: then it is not read.
fn trusted(shown: &str, meta: &fs::Metadata, sum: &str, ctx: &PlanContext) -> bool {
    let Some(stats) = ctx.stat_cache else {
        return false;
    };
    let Some((key, entry)) = stats.cache.get_key_value(shown) else {
        return false;
    };
    let vouched = ctx.recorded.get(shown).is_some_and(|r| *r == sum)
        && entry.vouches(&crate::stat_cache::Stamp::of(meta), sum);
    if vouched {
        stats.keep_same(key);
    }
    vouched
}

/// Tells the stat cache that the owned file at `path`, stamped `before`
/// when `at` was taken and read whole since, holds `sum`, when its stamp
/// did not move while it was read.
fn verified(
    path: &Path,
    shown: &str,
    before: &fs::Metadata,
    at: i128,
    sum: &str,
    ctx: &PlanContext,
) {
    let Some(stats) = ctx.stat_cache else {
        return;
    };
    let stamp = crate::stat_cache::Stamp::of(before);
    let still = fs::symlink_metadata(path).is_ok_and(|m| crate::stat_cache::Stamp::of(&m) == stamp);
    if still
        && ctx.recorded.get(shown).is_some_and(|r| *r == sum)
        && let Some(entry) = crate::stat_cache::Entry::new(stamp, sum, at)
    {
        stats.keep(shown, entry);
    }
}

fn plan_content(
    f: &FileSpec,
    desired: Option<Vec<u8>>,
    sum: Option<&str>,
    ctx: &PlanContext,
    owned: bool,
    hash: &dyn Fn(&[u8]) -> String,
) -> Result<Planned, ResourceError> {
    let path = &f.path;
    let shown = ctx.manifest.display_path(path);
    // Taken before the lstat: the file must have been still for the racy
    // window before this moment to be trusted later.
    let at = ctx.stat_cache.map(|s| s.now());
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(FsError::new("cannot read", path, e).into()),
    };
    let Some(desired) = desired else {
        return Ok(plan_absent(path, meta.as_ref(), owned, f.sensitive));
    };
    let Some(meta) = meta else {
        return Ok(Planned::new(
            Action::Create,
            "",
            Op::WriteFile {
                path: path.clone(),
                content: desired,
                mode: f.mode.unwrap_or(0o644),
                backup: false,
                encrypt_backup: f.sensitive,
            },
        ));
    };
    if !meta.file_type().is_file() {
        return Ok(plan_over_other(f, desired, &meta, ctx, owned));
    }
    let actual_mode = mode_of(&meta);
    let mode = f.mode.unwrap_or(actual_mode);
    let mode_same = mode == actual_mode;
    if let Some(sum) = sum
        && owned
        && mode_same
        && trusted(&shown, &meta, sum, ctx)
    {
        return Ok(Planned::unchanged(""));
    }
    let actual = read_whole(path, &meta).map_err(|e| FsError::new("cannot read", path, e))?;
    let actual = Zeroizing::new(actual);
    let content_same = *actual == desired;
    if content_same && mode_same {
        if let (Some(sum), Some(at), true) = (sum, at, owned) {
            verified(path, &shown, &meta, at, sum, ctx);
        }
        return Ok(Planned::unchanged(""));
    }
    if !owned && !ctx.force {
        return Ok(Planned::conflict(
            "exists and stead does not own it; 'stead apply --force' backs it up and replaces it",
        ));
    }
    // Edited by hand since stead wrote it: the edit is kept in a backup.
    let edited = owned
        && !content_same
        && ctx
            .recorded
            .get(&shown)
            .is_some_and(|sum| *sum != hash(&actual));
    let mut reasons = Vec::new();
    if !owned {
        reasons.push("replaces a file stead does not own (backed up first)".to_string());
    }
    if edited {
        reasons.push("changed by hand since stead wrote it; backed up first".to_string());
    } else if !content_same {
        reasons.push("content differs".into());
    }
    if !mode_same {
        reasons.push(format!("mode {actual_mode:04o} → {mode:04o}"));
    }
    let diff = (!content_same).then(|| text_diff(&shown, &actual, &desired));
    let op = if content_same && owned {
        Op::Chmod {
            path: path.clone(),
            mode,
        }
    } else {
        Op::WriteFile {
            path: path.clone(),
            content: desired,
            mode,
            backup: !owned || edited,
            encrypt_backup: f.sensitive,
        }
    };
    Ok(Planned::new(Action::Update, reasons.join("; "), op).with_diff(diff))
}

/// `ensure = "absent"`: remove a file that is there (backed up unless stead
/// owns it), never a directory.
fn plan_absent(path: &Path, meta: Option<&fs::Metadata>, owned: bool, sensitive: bool) -> Planned {
    match meta {
        None => Planned::unchanged("absent"),
        Some(m) if m.is_dir() => Planned::conflict("is a directory; stead removes only files here"),
        Some(_) => Planned::new(
            Action::Remove,
            "ensure = \"absent\"",
            Op::RemoveFile {
                path: path.to_path_buf(),
                backup: !owned,
                encrypt_backup: sensitive,
            },
        ),
    }
}

/// Something that is not a regular file is where the file goes: replaced
/// (backed up first) when stead owns the path or is forced, unless it is a
/// directory; else a conflict.
fn plan_over_other(
    f: &FileSpec,
    desired: Vec<u8>,
    meta: &fs::Metadata,
    ctx: &PlanContext,
    owned: bool,
) -> Planned {
    let what = if meta.is_dir() {
        "a directory"
    } else if meta.file_type().is_symlink() {
        "a symlink"
    } else {
        "a special file"
    };
    if (ctx.force || owned) && !meta.is_dir() {
        return Planned::new(
            Action::Update,
            if owned {
                format!("replaces {what} stead made here (backed up first)")
            } else {
                format!("replaces {what} stead does not own (backed up first)")
            },
            Op::WriteFile {
                path: f.path.clone(),
                content: desired,
                mode: f.mode.unwrap_or(0o644),
                backup: true,
                encrypt_backup: f.sensitive,
            },
        );
    }
    Planned::conflict(format!(
        "{what} is in the way{}",
        if meta.is_dir() {
            "; stead never replaces a directory it does not own"
        } else {
            "; 'stead apply --force' backs it up and replaces it"
        }
    ))
}

/// Sides larger than this (in lines or bytes) are not diffed: the diff's
/// cost grows with the product of the sizes (a 50 000-line change took
/// ~20 s), and a diff of thousands of lines is not read in a plan anyway.
const DIFF_MAX_LINES: usize = 2_000;
const DIFF_MAX_BYTES: usize = 256 * 1024;

/// Time the diff algorithm may take before the plan gives up on it (for
/// inputs under the caps that are still costly, like long lines that all
/// differ).
const DIFF_DEADLINE: Duration = Duration::from_secs(1);

/// A unified diff of old → new, capped; binary content and content too
/// large to diff are summarized.
pub fn text_diff(name: &str, old: &[u8], new: &[u8]) -> String {
    let text = unified_diff(name, &format!("{name} (planned)"), old, new);
    let total = text.lines().count();
    if total > DIFF_LINES {
        let mut cut: String = text.lines().take(DIFF_LINES).collect::<Vec<_>>().join("\n");
        cut.push_str(&format!(
            "\n... ({} more diff lines not shown)\n",
            total - DIFF_LINES
        ));
        cut
    } else {
        text
    }
}

/// A unified diff of `old` → `new` under these labels, uncut; binary
/// content and content too large (or too slow) to diff are summarized.
pub fn unified_diff(old_label: &str, new_label: &str, old: &[u8], new: &[u8]) -> String {
    let (Ok(o), Ok(n)) = (std::str::from_utf8(old), std::str::from_utf8(new)) else {
        return format!(
            "binary content differs ({} bytes → {} bytes)\n",
            old.len(),
            new.len()
        );
    };
    let (old_lines, new_lines) = (o.lines().count(), n.lines().count());
    let summary = || format!("content differs ({old_lines} lines → {new_lines} lines)\n");
    if old_lines.max(new_lines) > DIFF_MAX_LINES || old.len().max(new.len()) > DIFF_MAX_BYTES {
        return summary();
    }
    let deadline = Instant::now() + DIFF_DEADLINE;
    let diff = similar::TextDiff::configure()
        .deadline(deadline)
        .diff_lines(o, n);
    // Past its deadline the algorithm returns a coarse diff, not a wrong
    // one; a summary is more honest than a diff that replaces everything.
    if Instant::now() >= deadline {
        return summary();
    }
    diff.unified_diff()
        .context_radius(3)
        .header(old_label, new_label)
        .to_string()
}

fn plan_removal(path: &Path, recorded: Option<&String>) -> Result<Planned, ResourceError> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Planned::new(
            Action::Remove,
            "no longer declared (already gone)",
            Op::None,
        )),
        Err(e) => Err(FsError::new("cannot read", path, e).into()),
        Ok(m)
            if m.file_type().is_file()
                && recorded.is_some_and(|r| crate::secret::is_secret_checksum(r)) =>
        {
            // A sensitive file's checksum is keyed, and proving it unchanged
            // would need the key here: it is backed up, encrypted, always.
            Ok(Planned::new(
                Action::Remove,
                "no longer declared; sensitive, so it is backed up encrypted first",
                Op::RemoveFile {
                    path: path.to_path_buf(),
                    backup: true,
                    encrypt_backup: true,
                },
            ))
        }
        Ok(m) if m.file_type().is_file() => {
            let actual = fs::read(path).map_err(|e| FsError::new("cannot read", path, e))?;
            // Only a file that matches what stead recorded writing goes
            // without a copy: one changed by hand, or whose checksum the
            // record lost, is backed up first.
            let reason = match recorded {
                Some(c) if *c == checksum(&actual) => "no longer declared",
                Some(_) => {
                    "no longer declared; changed since stead wrote it, so it is backed up first"
                }
                None => "no longer declared; no checksum recorded for it, so it is backed up first",
            };
            let changed = recorded.is_none_or(|c| *c != checksum(&actual));
            Ok(Planned::new(
                Action::Remove,
                reason,
                Op::RemoveFile {
                    path: path.to_path_buf(),
                    backup: changed,
                    encrypt_backup: false,
                },
            ))
        }
        Ok(_) => Ok(Planned::new(
            Action::Remove,
            "no longer declared; something else is there now, left alone",
            Op::None,
        )),
    }
}

/// Writes the file atomically in its directory, opened component by
/// component without following a link (missing ones are created): a link
/// that appeared in the path since the plan is refused, one at the target
/// itself is replaced, never followed.
pub(super) fn write(
    path: &Path,
    content: &[u8],
    mode: u32,
    (backup_first, sensitive): (bool, bool),
    env: &ApplyEnv,
) -> Result<Applied, ResourceError> {
    let (dir, name) = safe_path::open_parent_required(path, true)?;
    let backup = back_up(path, backup_first, sensitive, env)?;
    dir.write_atomic(&name, content, mode)?;
    Ok(Applied {
        checksum: Some(hasher(sensitive, env.secrets)(content)),
        backup,
        ..Applied::default()
    })
}

/// Writes a secret-bearing file: its secrets decrypted here, the content
/// written by [`write`] (temp file created with `mode`, so no other user
/// can open it between its creation and its rename), then zeroized.
fn write_secret(
    path: &Path,
    parts: &[ContentPart],
    mode: u32,
    backup_first: bool,
    env: &ApplyEnv,
) -> Result<Applied, ResourceError> {
    let Some(content) = render_secret(parts, env.secrets)? else {
        return Err(crate::secret::SecretError::NoValue {
            names: value_names(parts),
        }
        .into());
    };
    // Rendered the same as what is there (an exec whose output did not
    // change): nothing is written.
    if let Ok(meta) = fs::symlink_metadata(path)
        && meta.is_file()
        && mode_of(&meta) == mode
        && read_whole(path, &meta).is_ok_and(|b| Zeroizing::new(b).as_slice() == content.as_slice())
    {
        return Ok(Applied {
            checksum: Some(env.secrets.content_checksum(&content)),
            not_run: Some("its content came out as it already was".into()),
            ..Applied::default()
        });
    }
    write(path, &content, mode, (backup_first, true), env)
}

/// Backs up what is at `path` when asked and something is there: a
/// sensitive regular file age-encrypted to the machine, anything else as
/// a copy.
fn back_up(
    path: &Path,
    wanted: bool,
    sensitive: bool,
    env: &ApplyEnv,
) -> Result<Option<std::path::PathBuf>, ResourceError> {
    if !wanted || fs::symlink_metadata(path).is_err() {
        return Ok(None);
    }
    if !sensitive {
        return Ok(Some(backup(path, env.backups)?));
    }
    let encrypt = |b: &[u8]| env.secrets.encrypt_to_self(b).map_err(|e| e.to_string());
    Ok(Some(backup_encrypted(path, env.backups, &encrypt)?))
}

/// Sets the mode of the regular file at `path` (on its fd): refused when a
/// link or anything else took its place.
pub(super) fn chmod(path: &Path, mode: u32) -> Result<(), ResourceError> {
    let (dir, name) = safe_path::open_parent_required(path, false)?;
    dir.chmod_file(&name, mode)?;
    Ok(())
}

pub(super) fn remove(
    path: &Path,
    (backup_first, sensitive): (bool, bool),
    env: &ApplyEnv,
) -> Result<Applied, ResourceError> {
    // An already-gone directory (a purge took it) means the file is gone.
    let Some((dir, name)) = safe_path::open_parent(path, false)? else {
        return Ok(Applied::default());
    };
    let backup = back_up(path, backup_first, sensitive, env)?;
    // Only a removal that happened needs its directory fsync'd.
    if dir.remove_file(&name)? {
        dir.sync()?;
    }
    Ok(Applied {
        checksum: None,
        backup,
        ..Applied::default()
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;
    use crate::engine::Status;
    use crate::resource::tests::{Fixture, backup_of, change, mode, status};

    const A: &str =
        "[file.a]\npath = \"~/a\"\ncontent = \"one\\ntwo\\nthree\\n\"\nmode = \"0600\"\n";
    const A2: &str =
        "[file.a]\npath = \"~/a\"\ncontent = \"one\\nTWO\\nthree\\n\"\nmode = \"0600\"\n";

    #[test]
    fn inline_content_creates_then_is_unchanged() {
        let mut fx = Fixture::new();
        let plan = fx.plan(A);
        let c = change(&plan, "file.a");
        assert_eq!(c.action, Action::Create);
        assert_eq!(c.keys, ["~/a"]);
        assert_eq!(
            c.checksum.as_ref().map(Checksum::text),
            Some(checksum(b"one\ntwo\nthree\n"))
        );
        assert!(!fx.home.join("a").exists(), "planning must not write");
        fx.execute(&plan);
        let path = fx.home.join("a");
        assert_eq!(fs::read_to_string(&path).unwrap(), "one\ntwo\nthree\n");
        assert_eq!(mode(&path), 0o600);
        assert!(fx.owns("file.a"));
        assert_eq!(
            fx.state.checksums.get("~/a"),
            Some(&checksum(b"one\ntwo\nthree\n").into())
        );
        let again = fx.plan(A);
        assert_eq!(change(&again, "file.a").action, Action::Unchanged);
        assert!(again.is_empty());
    }

    #[test]
    fn source_file_is_copied_from_the_config_repo() {
        let mut fx = Fixture::new();
        fx.write_repo("shell/bashrc", "export A=1\n");
        let m = "[file.rc]\npath = \"~/.bashrc\"\nsource = \"shell/bashrc\"\n";
        let (plan, _) = fx.converge(m);
        assert_eq!(change(&plan, "file.rc").action, Action::Create);
        let path = fx.home.join(".bashrc");
        assert_eq!(fs::read_to_string(&path).unwrap(), "export A=1\n");
        assert_eq!(mode(&path), 0o644, "default mode");
        // The source changes: the target is updated with a diff.
        fx.write_repo("shell/bashrc", "export A=2\n");
        let plan = fx.plan(m);
        let c = change(&plan, "file.rc");
        assert_eq!(c.action, Action::Update);
        let diff = c.diff.as_deref().unwrap();
        assert!(
            diff.contains("-export A=1") && diff.contains("+export A=2"),
            "{diff}"
        );
        fx.converge(m);
        assert_eq!(fs::read_to_string(&path).unwrap(), "export A=2\n");
    }

    #[test]
    fn template_renders_vars_profile_and_facts_keeping_final_newline() {
        let mut fx = Fixture::new();
        fx.write_repo(
            "git.j2",
            "editor={{ editor }} again={{ vars.editor }} profile={{ profile }} home={{ home }}\n",
        );
        let m = "[settings]\ndefault_profile = \"work\"\n[vars]\neditor = \"nvim\"\n\
                 [profile.work.vars]\n[file.git]\npath = \"~/.gitconfig\"\ntemplate = \"git.j2\"\n";
        fx.converge(m);
        assert_eq!(
            fs::read_to_string(fx.home.join(".gitconfig")).unwrap(),
            format!(
                "editor=nvim again=nvim profile=work home={}\n",
                fx.home.display()
            )
        );
    }

    #[test]
    fn template_error_names_the_template_and_line() {
        let fx = Fixture::new();
        fx.write_repo("bad.j2", "ok\n{{ nope }}\n");
        let m = fx.manifest("[file.t]\npath = \"~/t\"\ntemplate = \"bad.j2\"\n");
        let g = crate::graph::Graph::build(&m).unwrap();
        let err = crate::plan::make(&m, &g, &fx.state, false, 1).unwrap_err();
        assert_eq!(err.0.len(), 1);
        assert_eq!(err.0[0].0, "file.t");
        match &err.0[0].1 {
            ResourceError::Template { path, message } => {
                assert_eq!(path, &fx.repo.join("bad.j2"));
                assert!(message.starts_with("line 2:"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn modified_target_is_an_update_with_a_unified_diff() {
        let mut fx = Fixture::new();
        fx.converge(A);
        let plan = fx.plan(A2);
        let c = change(&plan, "file.a");
        assert_eq!(c.action, Action::Update);
        assert_eq!(c.reason, "content differs");
        let diff = c.diff.as_deref().unwrap();
        assert!(diff.starts_with("--- ~/a\n+++ ~/a (planned)\n"), "{diff}");
        assert!(diff.contains("@@ -1,3 +1,3 @@"), "{diff}");
        assert!(diff.contains("\n one\n-two\n+TWO\n three\n"), "{diff}");
        fx.converge(A2);
        assert_eq!(
            fs::read_to_string(fx.home.join("a")).unwrap(),
            "one\nTWO\nthree\n"
        );
        // Drift by hand is repaired too.
        fs::write(fx.home.join("a"), "edited\n").unwrap();
        let plan = fx.plan(A2);
        let c = change(&plan, "file.a");
        assert_eq!(c.action, Action::Update);
        assert!(c.diff.as_deref().unwrap().contains("-edited\n"));
        fx.converge(A2);
    }

    #[test]
    fn mode_change_is_shown_and_only_chmods() {
        let mut fx = Fixture::new();
        fx.converge(A);
        let m = A.replace("0600", "0640");
        let plan = fx.plan(&m);
        let c = change(&plan, "file.a");
        assert_eq!(c.action, Action::Update);
        assert_eq!(c.reason, "mode 0600 → 0640");
        assert_eq!(c.diff, None);
        assert_eq!(
            c.op,
            Op::Chmod {
                path: fx.home.join("a"),
                mode: 0o640
            }
        );
        fx.converge(&m);
        assert_eq!(mode(&fx.home.join("a")), 0o640);
        // Without a declared mode, the actual mode is kept.
        let m = "[file.a]\npath = \"~/a\"\ncontent = \"one\\ntwo\\nthree\\n\"\n";
        assert!(fx.plan(m).is_empty());
    }

    #[test]
    fn unowned_file_conflicts_and_is_kept_unless_forced_then_backed_up() {
        let mut fx = Fixture::new();
        let path = fx.home.join("a");
        fs::write(&path, "mine\n").unwrap();
        let (plan, outcome) = fx.apply_with(A, false);
        let c = change(&plan, "file.a");
        assert_eq!(c.action, Action::Conflict);
        assert!(c.reason.contains("does not own"), "{}", c.reason);
        assert!(
            matches!(status(&plan, &outcome, "file.a"), Status::Failed(m) if m.starts_with("conflict"))
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), "mine\n");
        assert!(!fx.owns("file.a"));

        let (plan, outcome) = fx.apply_with(A, true);
        let c = change(&plan, "file.a");
        assert_eq!(c.action, Action::Update);
        assert!(c.reason.contains("backed up first"), "{}", c.reason);
        assert!(c.diff.as_deref().unwrap().contains("-mine"));
        let backup = backup_of(&plan, &outcome, "file.a");
        assert!(backup.starts_with(&fx.backups), "{}", backup.display());
        assert_eq!(fs::read_to_string(&backup).unwrap(), "mine\n");
        assert_eq!(fs::read_to_string(&path).unwrap(), "one\ntwo\nthree\n");
        assert!(fx.owns("file.a"));
        assert!(fx.plan(A).is_empty());
    }

    #[test]
    fn identical_unowned_file_is_adopted_without_writing() {
        let mut fx = Fixture::new();
        let path = fx.home.join("a");
        fs::write(&path, "one\ntwo\nthree\n").unwrap();
        fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let (plan, _) = fx.converge(A);
        assert_eq!(change(&plan, "file.a").action, Action::Unchanged);
        assert!(fx.owns("file.a"));
    }

    #[test]
    fn a_source_that_became_a_fifo_after_the_load_is_refused_not_waited_on() {
        let fx = Fixture::new();
        let source = fx.repo.join("src");
        fs::write(&source, "x\n").unwrap();
        let text = "[file.a]\npath = \"@HOME@/a\"\nsource = \"src\"\n";
        let m = fx.manifest(text);
        fs::remove_file(&source).unwrap();
        nix::unistd::mkfifo(&source, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let g = crate::graph::Graph::build(&m).unwrap();
        let err = crate::plan::make(&m, &g, &fx.state, false, 1).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("file.a") && text.contains("FIFO"), "{text}");
    }

    #[test]
    fn planted_symlink_at_the_target_is_a_conflict_and_never_followed() {
        let mut fx = Fixture::new();
        let victim = fx.out.join("victim");
        fs::write(&victim, "victim\n").unwrap();
        let path = fx.home.join("a");
        symlink(&victim, &path).unwrap();
        let (plan, _) = fx.apply_with(A, false);
        let c = change(&plan, "file.a");
        assert_eq!(c.action, Action::Conflict);
        assert!(
            c.reason.starts_with("a symlink is in the way"),
            "{}",
            c.reason
        );
        assert_eq!(fs::read_to_string(&victim).unwrap(), "victim\n");
        assert_eq!(fs::read_link(&path).unwrap(), victim);

        // Forced: the link itself is replaced (and backed up as a link).
        let (plan, outcome) = fx.apply_with(A, true);
        assert_eq!(change(&plan, "file.a").action, Action::Update);
        let backup = backup_of(&plan, &outcome, "file.a");
        assert_eq!(fs::read_link(&backup).unwrap(), victim);
        assert_eq!(fs::read_to_string(&victim).unwrap(), "victim\n");
        assert!(fs::symlink_metadata(&path).unwrap().file_type().is_file());
        assert_eq!(fs::read_to_string(&path).unwrap(), "one\ntwo\nthree\n");
    }

    #[test]
    fn symlink_planted_between_plan_and_apply_is_replaced_not_followed() {
        let mut fx = Fixture::new();
        let victim = fx.out.join("victim");
        fs::write(&victim, "victim\n").unwrap();
        fs::set_permissions(&victim, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        let path = fx.home.join("a");
        let plan = fx.plan(A);
        assert_eq!(change(&plan, "file.a").action, Action::Create);
        symlink(&victim, &path).unwrap();
        let outcome = fx.execute(&plan);
        assert!(!outcome.has_failures(), "{:?}", outcome.statuses);
        assert_eq!(fs::read_to_string(&victim).unwrap(), "victim\n");
        assert_eq!(mode(&victim), 0o644);
        assert!(fs::symlink_metadata(&path).unwrap().file_type().is_file());
        assert_eq!(fs::read_to_string(&path).unwrap(), "one\ntwo\nthree\n");

        // Same for an owned file swapped for a link before an update.
        let plan = fx.plan(A2);
        fs::remove_file(&path).unwrap();
        symlink(&victim, &path).unwrap();
        let outcome = fx.execute(&plan);
        assert!(!outcome.has_failures(), "{:?}", outcome.statuses);
        assert_eq!(fs::read_to_string(&victim).unwrap(), "victim\n");
        assert_eq!(fs::read_to_string(&path).unwrap(), "one\nTWO\nthree\n");
    }

    #[test]
    fn every_file_under_a_file_in_the_way_conflicts_and_under_a_missing_dir_is_created() {
        let fx = Fixture::new();
        fs::write(fx.home.join("f"), "a file\n").unwrap();
        let mut m = String::new();
        for (id, path) in [
            ("a", "~/f/a"),
            ("b", "~/f/b"),
            ("c", "~/f/c"),
            ("d", "~/new/sub/d"),
            ("e", "~/new/sub/e"),
            ("g", "~/new/g"),
        ] {
            m.push_str(&format!(
                "[file.{id}]\npath = \"{path}\"\ncontent = \"x\"\n"
            ));
        }
        // Each looked at after another found the same ancestors missing.
        let plan = fx.plan(&m);
        for id in ["file.a", "file.b", "file.c"] {
            let c = change(&plan, id);
            assert_eq!(c.action, Action::Conflict, "{id}");
            assert!(
                c.reason.contains("~/f is not a directory"),
                "{id}: {}",
                c.reason
            );
        }
        for id in ["file.d", "file.e", "file.g"] {
            assert_eq!(change(&plan, id).action, Action::Create, "{id}");
        }
    }

    #[test]
    fn a_directory_in_the_way_is_never_replaced_even_forced() {
        let mut fx = Fixture::new();
        fs::create_dir(fx.home.join("a")).unwrap();
        fs::write(fx.home.join("a/keep"), "k").unwrap();
        let (plan, _) = fx.apply_with(A, true);
        let c = change(&plan, "file.a");
        assert_eq!(c.action, Action::Conflict);
        assert!(
            c.reason.contains("never replaces a directory"),
            "{}",
            c.reason
        );
        assert_eq!(fs::read_to_string(fx.home.join("a/keep")).unwrap(), "k");
    }

    #[test]
    fn ensure_absent_removes_with_a_backup_of_what_stead_did_not_write() {
        let mut fx = Fixture::new();
        let m = "[file.gone]\npath = \"~/gone\"\nensure = \"absent\"\n";
        let path = fx.home.join("gone");
        fs::write(&path, "old secret\n").unwrap();
        let (plan, outcome) = fx.apply(m);
        let c = change(&plan, "file.gone");
        assert_eq!(c.action, Action::Remove);
        assert_eq!(c.checksum, None);
        assert!(!path.exists());
        let backup = backup_of(&plan, &outcome, "file.gone");
        assert_eq!(fs::read_to_string(backup).unwrap(), "old secret\n");
        assert!(!fx.owns("file.gone"));
        let again = fx.plan(m);
        assert_eq!(change(&again, "file.gone").action, Action::Unchanged);
        assert_eq!(change(&again, "file.gone").reason, "absent");
        // A directory at an absent path is a conflict, left alone.
        fs::create_dir(&path).unwrap();
        let (plan, _) = fx.apply_with(m, true);
        assert_eq!(change(&plan, "file.gone").action, Action::Conflict);
        assert!(path.is_dir());
    }

    #[test]
    fn switching_an_owned_file_to_absent_forgets_it() {
        let mut fx = Fixture::new();
        fx.converge(A);
        let m = "[file.a]\npath = \"~/a\"\nensure = \"absent\"\n";
        let (plan, outcome) = fx.converge(m);
        assert_eq!(change(&plan, "file.a").action, Action::Remove);
        // Owned and unchanged since written: no backup needed.
        assert!(matches!(
            status(&plan, &outcome, "file.a"),
            Status::Done(Applied { backup: None, .. })
        ));
        assert!(!fx.home.join("a").exists());
        assert!(!fx.owns("file.a"));
        assert!(!fx.state.checksums.contains_key("~/a"));
    }

    #[test]
    fn undeclared_owned_file_is_removed_and_edited_ones_backed_up() {
        let mut fx = Fixture::new();
        let both = "[file.a]\npath = \"~/a\"\ncontent = \"a\"\n\
                    [file.b]\npath = \"~/b\"\ncontent = \"b\"\n\
                    [file.c]\npath = \"~/c\"\ncontent = \"c\"\n";
        fx.converge(both);
        fs::write(fx.home.join("c"), "edited by hand").unwrap();
        let only_a = "[file.a]\npath = \"~/a\"\ncontent = \"a\"\n";
        let plan = fx.plan(only_a);
        assert_eq!(plan.removals_from, 1);
        let b = change(&plan, "file.b");
        assert_eq!(
            (b.action, b.reason.as_str()),
            (Action::Remove, "no longer declared")
        );
        assert_eq!(
            b.op,
            Op::RemoveFile {
                path: fx.home.join("b"),
                backup: false,
                encrypt_backup: false,
            }
        );
        assert!(matches!(
            change(&plan, "file.c").op,
            Op::RemoveFile { backup: true, .. }
        ));
        let outcome = fx.execute(&plan);
        assert!(!outcome.has_failures(), "{:?}", outcome.statuses);
        assert!(!fx.home.join("b").exists());
        assert!(!fx.home.join("c").exists());
        let backup = backup_of(&plan, &outcome, "file.c");
        assert_eq!(fs::read_to_string(backup).unwrap(), "edited by hand");
        assert_eq!(fs::read_to_string(fx.home.join("a")).unwrap(), "a");
        assert!(!fx.owns("file.b") && !fx.owns("file.c"));
        assert!(!fx.state.checksums.contains_key("~/b"));
        assert!(fx.plan(only_a).is_empty());
    }

    #[test]
    fn removing_a_file_whose_directory_a_purge_took_is_harmless() {
        // Regression (found by tests/idempotence.rs): the purge of ~/d takes
        // the now-unmanaged ~/d/sub, then the removal of file.f found its
        // file gone and failed to fsync the vanished ~/d/sub.
        let mut fx = Fixture::new();
        let dir = "[dir.d]\npath = \"~/d\"\npurge = true\n";
        fx.converge(&format!(
            "{dir}[file.f]\npath = \"~/d/sub/f\"\ncontent = \"x\"\n"
        ));
        let (plan, outcome) = fx.converge(dir);
        assert_eq!(change(&plan, "file.f").action, Action::Remove);
        assert!(!fx.home.join("d/sub").exists());
        assert!(fx.home.join("d").is_dir());
        assert!(!fx.owns("file.f"));
        let backup = backup_of(&plan, &outcome, "dir.d");
        assert_eq!(fs::read_to_string(backup.join("f")).unwrap(), "x");
    }

    #[test]
    fn undeclared_file_replaced_by_something_else_is_left_alone() {
        let mut fx = Fixture::new();
        fx.converge("[file.b]\npath = \"~/b\"\ncontent = \"b\"\n");
        let path = fx.home.join("b");
        fs::remove_file(&path).unwrap();
        fs::create_dir(&path).unwrap();
        fs::write(path.join("user"), "u").unwrap();
        let (plan, _) = fx.apply("[noop.x]\n");
        let c = change(&plan, "file.b");
        assert_eq!(c.action, Action::Remove);
        assert_eq!(c.op, Op::None);
        assert_eq!(fs::read_to_string(path.join("user")).unwrap(), "u");
        assert!(!fx.owns("file.b"));
    }

    #[test]
    fn renaming_a_resource_keeps_ownership_of_its_path() {
        let mut fx = Fixture::new();
        fx.converge("[file.old]\npath = \"~/x\"\ncontent = \"1\"\n");
        let m = "[file.new]\npath = \"~/x\"\ncontent = \"2\"\n";
        let (plan, _) = fx.converge(m);
        assert_eq!(change(&plan, "file.new").action, Action::Update);
        let old = change(&plan, "file.old");
        assert_eq!((old.action, &old.op), (Action::Remove, &Op::None));
        assert_eq!(fs::read_to_string(fx.home.join("x")).unwrap(), "2");
        assert!(fx.owns("file.new") && !fx.owns("file.old"));
    }

    #[test]
    fn content_too_large_to_diff_is_summarized() {
        let old: String = (0..DIFF_MAX_LINES + 1)
            .map(|i| format!("a {i}\n"))
            .collect();
        let new: String = (0..10).map(|i| format!("b {i}\n")).collect();
        assert_eq!(
            text_diff("~/f", old.as_bytes(), new.as_bytes()),
            format!(
                "content differs ({} lines → 10 lines)\n",
                DIFF_MAX_LINES + 1
            )
        );
        let long_line = "y".repeat(DIFF_MAX_BYTES + 1);
        assert_eq!(
            text_diff("~/f", b"x\n", long_line.as_bytes()),
            "content differs (1 lines → 1 lines)\n"
        );
    }

    #[test]
    fn diffs_are_capped_and_binary_is_summarized() {
        let old: String = (0..500).map(|i| format!("line {i}\n")).collect();
        let new: String = (0..500).map(|i| format!("LINE {i}\n")).collect();
        let d = text_diff("~/f", old.as_bytes(), new.as_bytes());
        assert_eq!(d.lines().count(), DIFF_LINES + 1);
        assert!(
            d.ends_with("more diff lines not shown)\n"),
            "{}",
            &d[d.len() - 80..]
        );
        assert_eq!(
            text_diff("~/f", &[0xff, 0xfe], b"abc"),
            "binary content differs (2 bytes → 3 bytes)\n"
        );
    }
}
