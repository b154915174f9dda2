//! `file`: content from `source`, `content` or `template`; `mode`; `ensure = "absent"`.

use std::fs;
use std::io;
use std::path::Path;

use crate::fsutil::{self, FsError};
use crate::manifest::{FileContent, FileSpec};

use super::{
    Action, Applied, Op, PlanContext, ResourceError, backup, checksum, ensure_parent, mode_of,
};

/// Lines of diff shown per file before it is cut.
const DIFF_LINES: usize = 200;

type Planned = (Action, String, Option<String>, Op);

/// The bytes a file should hold.
pub fn desired_content(content: &FileContent, ctx: &PlanContext) -> Result<Vec<u8>, ResourceError> {
    match content {
        FileContent::Inline(s) => Ok(s.as_bytes().to_vec()),
        FileContent::Source(p) => fs::read(p).map_err(|e| FsError::new("cannot read", p, e).into()),
        FileContent::Template(p) => render_template(p, ctx),
    }
}

fn render_template(path: &Path, ctx: &PlanContext) -> Result<Vec<u8>, ResourceError> {
    let source = fs::read_to_string(path).map_err(|e| FsError::new("cannot read", path, e))?;
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    let name = path.display().to_string();
    let err = |e: minijinja::Error| ResourceError::Template {
        path: path.to_path_buf(),
        message: match e.line() {
            Some(line) => format!("line {line}: {e}"),
            None => e.to_string(),
        },
    };
    // A rendered config file keeps its final newline, as written.
    let syntax = minijinja::syntax::SyntaxConfig::builder()
        .keep_trailing_newline(true)
        .build()
        .map_err(err)?;
    env.set_syntax(syntax);
    env.add_template(&name, &source).map_err(err)?;
    let mut context: std::collections::BTreeMap<String, minijinja::Value> = ctx
        .manifest
        .vars
        .iter()
        .map(|(k, v)| (k.clone(), minijinja::Value::from(v.clone())))
        .collect();
    context.insert(
        "vars".into(),
        minijinja::Value::from(ctx.manifest.vars.clone()),
    );
    let f = ctx.facts;
    for (k, v) in [
        ("hostname", &f.hostname),
        ("os", &f.os),
        ("arch", &f.arch),
        ("user", &f.user),
        ("home", &f.home),
    ] {
        context.insert(k.into(), minijinja::Value::from(v.clone()));
    }
    context.insert(
        "profile".into(),
        minijinja::Value::from(ctx.manifest.profile.clone().unwrap_or_default()),
    );
    let tmpl = env.get_template(&name).map_err(err)?;
    tmpl.render(context).map(String::into_bytes).map_err(err)
}

/// Plans a file; also returns the checksum of the declared content.
pub(super) fn plan(
    f: &FileSpec,
    ctx: &PlanContext,
    owned: bool,
) -> Result<(Planned, Option<String>), ResourceError> {
    let desired = match &f.content {
        Some(c) => Some(desired_content(c, ctx)?),
        None => None,
    };
    let sum = desired.as_deref().map(checksum);
    Ok((plan_content(f, desired, ctx, owned)?, sum))
}

fn plan_content(
    f: &FileSpec,
    desired: Option<Vec<u8>>,
    ctx: &PlanContext,
    owned: bool,
) -> Result<Planned, ResourceError> {
    let path = &f.path;
    let shown = ctx.manifest.display_path(path);
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(FsError::new("cannot read", path, e).into()),
    };
    let Some(desired) = desired else {
        // ensure = "absent"
        return Ok(match meta {
            None => (Action::Unchanged, "absent".into(), None, Op::None),
            Some(m) if m.is_dir() => (
                Action::Conflict,
                "is a directory; stead removes only files here".into(),
                None,
                Op::None,
            ),
            Some(_) => (
                Action::Remove,
                "ensure = \"absent\"".into(),
                None,
                Op::RemoveFile {
                    path: path.clone(),
                    backup: !owned,
                },
            ),
        });
    };
    let Some(meta) = meta else {
        return Ok((
            Action::Create,
            String::new(),
            None,
            Op::WriteFile {
                path: path.clone(),
                content: desired,
                mode: f.mode.unwrap_or(0o644),
                backup: false,
            },
        ));
    };
    if !meta.file_type().is_file() {
        let what = if meta.is_dir() {
            "a directory"
        } else if meta.file_type().is_symlink() {
            "a symlink"
        } else {
            "a special file"
        };
        if ctx.force && !meta.is_dir() {
            return Ok((
                Action::Update,
                format!("replaces {what} stead does not own (backed up first)"),
                None,
                Op::WriteFile {
                    path: path.clone(),
                    content: desired,
                    mode: f.mode.unwrap_or(0o644),
                    backup: true,
                },
            ));
        }
        return Ok((
            Action::Conflict,
            format!(
                "{what} is in the way{}",
                if meta.is_dir() {
                    "; stead never replaces a directory it does not own"
                } else {
                    "; 'stead apply --force' backs it up and replaces it"
                }
            ),
            None,
            Op::None,
        ));
    }
    let actual = fs::read(path).map_err(|e| FsError::new("cannot read", path, e))?;
    let actual_mode = mode_of(&meta);
    let mode = f.mode.unwrap_or(actual_mode);
    let content_same = actual == desired;
    let mode_same = mode == actual_mode;
    if content_same && mode_same {
        return Ok((Action::Unchanged, String::new(), None, Op::None));
    }
    if !owned && !ctx.force {
        return Ok((
            Action::Conflict,
            "exists and stead does not own it; 'stead apply --force' backs it up and replaces it"
                .into(),
            None,
            Op::None,
        ));
    }
    let mut reasons = Vec::new();
    if !owned {
        reasons.push("replaces a file stead does not own (backed up first)".to_string());
    }
    if !content_same {
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
            backup: !owned,
        }
    };
    Ok((Action::Update, reasons.join("; "), diff, op))
}

/// A unified diff of old → new, capped; binary content is summarized.
pub fn text_diff(name: &str, old: &[u8], new: &[u8]) -> String {
    match (std::str::from_utf8(old), std::str::from_utf8(new)) {
        (Ok(o), Ok(n)) => {
            let diff = similar::TextDiff::from_lines(o, n);
            let text = diff
                .unified_diff()
                .context_radius(3)
                .header(name, &format!("{name} (planned)"))
                .to_string();
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
        _ => format!(
            "binary content differs ({} bytes → {} bytes)\n",
            old.len(),
            new.len()
        ),
    }
}

pub(super) fn plan_removal(
    path: &Path,
    recorded: Option<&String>,
) -> Result<(Action, String, Op), ResourceError> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok((
            Action::Remove,
            "no longer declared (already gone)".into(),
            Op::None,
        )),
        Err(e) => Err(FsError::new("cannot read", path, e).into()),
        Ok(m) if m.file_type().is_file() => {
            let actual = fs::read(path).map_err(|e| FsError::new("cannot read", path, e))?;
            let changed = recorded.is_some_and(|c| *c != checksum(&actual));
            Ok((
                Action::Remove,
                if changed {
                    "no longer declared; changed since stead wrote it, so it is backed up first"
                        .into()
                } else {
                    "no longer declared".into()
                },
                Op::RemoveFile {
                    path: path.to_path_buf(),
                    backup: changed,
                },
            ))
        }
        Ok(_) => Ok((
            Action::Remove,
            "no longer declared; something else is there now, left alone".into(),
            Op::None,
        )),
    }
}

pub(super) fn write(
    path: &Path,
    content: &[u8],
    mode: u32,
    backup_first: bool,
    backups: &Path,
) -> Result<Applied, ResourceError> {
    let backup = if backup_first && fs::symlink_metadata(path).is_ok() {
        Some(backup(path, backups)?)
    } else {
        None
    };
    ensure_parent(path)?;
    fsutil::atomic_write(path, content, mode)?;
    Ok(Applied {
        checksum: Some(checksum(content)),
        backup,
        output: None,
    })
}

pub(super) fn chmod(path: &Path, mode: u32) -> Result<(), ResourceError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| FsError::new("cannot set permissions on", path, e).into())
}

pub(super) fn remove(
    path: &Path,
    backup_first: bool,
    backups: &Path,
) -> Result<Applied, ResourceError> {
    let backup = if backup_first && fs::symlink_metadata(path).is_ok() {
        Some(backup(path, backups)?)
    } else {
        None
    };
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(FsError::new("cannot remove", path, e).into()),
    }
    if let Some(dir) = path.parent() {
        fsutil::fsync_dir(dir)?;
    }
    Ok(Applied {
        checksum: None,
        backup,
        output: None,
    })
}
