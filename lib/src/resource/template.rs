//! Rendering a `template` with minijinja: the context (vars, profile,
//! machine facts), `{% include %}` / `{% import %}` of other files of the
//! config repo (never outside it), and errors that point at the place in
//! the template (`file:line`, the line, a caret under what failed).

use std::collections::BTreeMap;
use std::path::{Component, Path};

use minijinja::{Environment, Error, ErrorKind, Value};

use super::{FsError, PlanContext, ResourceError};

/// Renders the template at `path` (inside the config repo).
pub fn render(path: &Path, ctx: &PlanContext) -> Result<Vec<u8>, ResourceError> {
    let source = std::fs::read_to_string(path).map_err(|e| FsError::new("cannot read", path, e))?;
    let repo = ctx.manifest.config_dir.clone();
    // Named by its place in the repo, as an include names it.
    let name = path
        .strip_prefix(&repo)
        .unwrap_or(path)
        .display()
        .to_string();
    let mut env = Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    let failed = |e: Error| failure(path, &repo, &name, &source, &e);
    // A rendered config file keeps its final newline, as written.
    let syntax = minijinja::syntax::SyntaxConfig::builder()
        .keep_trailing_newline(true)
        .build()
        .map_err(failed)?;
    env.set_syntax(syntax);
    let root = repo.clone();
    env.set_loader(move |wanted| load(&root, wanted));
    env.add_template_owned(name.clone(), source.clone())
        .map_err(failed)?;
    let tmpl = env.get_template(&name).map_err(failed)?;
    tmpl.render(context(ctx))
        .map(String::into_bytes)
        .map_err(failed)
}

/// What a template sees: every var (also as `vars`), `profile`, and the
/// machine facts.
fn context(ctx: &PlanContext) -> BTreeMap<String, Value> {
    let mut context: BTreeMap<String, Value> = ctx
        .manifest
        .vars
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.clone())))
        .collect();
    context.insert("vars".into(), Value::from(ctx.manifest.vars.clone()));
    let f = ctx.facts;
    for (k, v) in [
        ("hostname", &f.hostname),
        ("os", &f.os),
        ("arch", &f.arch),
        ("user", &f.user),
        ("home", &f.home),
        ("distro", &f.distro),
        ("distro_version", &f.distro_version),
        ("kernel", &f.kernel),
    ] {
        context.insert(k.into(), Value::from(v.clone()));
    }
    context.insert(
        "profile".into(),
        Value::from(ctx.manifest.profile.clone().unwrap_or_default()),
    );
    context
}

/// The loader of `{% include %}`, `{% import %}` and `{% extends %}`: a
/// name is a path relative to the config repo; an absolute path, a `..`
/// or a link leading out of the repo is refused (a template must not read
/// the machine's files); a missing file is minijinja's "not found".
fn load(repo: &Path, wanted: &str) -> Result<Option<String>, Error> {
    let refuse = |why: &str| {
        Err(Error::new(
            ErrorKind::InvalidOperation,
            format!(
                "cannot include `{wanted}`: {why}; templates include files of the config repo by their path in it"
            ),
        ))
    };
    let rel = Path::new(wanted);
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return refuse(if rel.is_absolute() {
            "an absolute path"
        } else {
            "`..` or `.` in the path"
        });
    }
    let path = repo.join(rel);
    let real = match path.canonicalize() {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return refuse(&e.to_string()),
    };
    let real_repo = repo.canonicalize().unwrap_or_else(|_| repo.to_path_buf());
    if !real.starts_with(&real_repo) {
        return refuse("a link leading out of the config repo");
    }
    std::fs::read_to_string(&real)
        .map(Some)
        .or_else(|e| refuse(&e.to_string()))
}

/// A render error as `template FILE: LINE: what`, then the line and a caret
/// under what failed (an undefined variable is named).
fn failure(path: &Path, repo: &Path, name: &str, source: &str, e: &Error) -> ResourceError {
    // An error inside an include comes wrapped: the innermost one has the place.
    let mut e = e;
    while let Some(inner) = std::error::Error::source(e).and_then(|s| s.downcast_ref::<Error>()) {
        e = inner;
    }
    // The error may be in an included template: show that one.
    let (file, text) = match e.name() {
        Some(n) if n != name => (repo.join(n), e.template_source().unwrap_or_default()),
        _ => (path.to_path_buf(), source),
    };
    let span = e.range().and_then(|r| text.get(r.clone()).map(|s| (r, s)));
    let what = match (e.kind(), &span) {
        (ErrorKind::UndefinedError, Some((_, s))) => {
            format!("undefined variable `{}`", s.trim())
        }
        // minijinja's own words, without the "(in NAME:LINE)" said above.
        _ => match e.detail() {
            Some(detail) => format!("{}: {detail}", e.kind()),
            None => e.kind().to_string(),
        },
    };
    let mut message = match e.line() {
        Some(line) => format!("line {line}: {what}"),
        None => what,
    };
    if let (Some(line), Some((range, _))) = (e.line(), &span) {
        message.push_str(&caret(text, line, range.clone()));
    }
    ResourceError::Template {
        path: file,
        message,
    }
}

/// `\n  LINE | text\n       |   ^^^` under `range` (byte offsets into
/// `text`) on line `line` (1-based).
fn caret(text: &str, line: usize, range: std::ops::Range<usize>) -> String {
    let Some(line_text) = text.lines().nth(line.saturating_sub(1)) else {
        return String::new();
    };
    let line_start = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum::<usize>();
    let from = range.start.saturating_sub(line_start).min(line_text.len());
    let to = range
        .end
        .saturating_sub(line_start)
        .clamp(from + 1, line_text.len().max(from + 1));
    let pad = |s: &str| {
        s.chars()
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect::<String>()
    };
    let before = line_text.get(..from).unwrap_or_default();
    let marked = line_text.get(from..to).unwrap_or("^");
    let gutter = line.to_string();
    format!(
        "\n  {gutter} | {line_text}\n  {} | {}{}",
        " ".repeat(gutter.len()),
        pad(before),
        "^".repeat(marked.chars().count().max(1))
    )
}

#[cfg(test)]
mod tests {
    use std::fs;

    use crate::resource::ResourceError;
    use crate::resource::tests::Fixture;

    /// Plans one `[file.t]` from template `t.j2`: the rendered text or the error.
    fn render(fx: &Fixture, template: &str) -> Result<String, (std::path::PathBuf, String)> {
        fx.write_repo("t.j2", template);
        let m = fx
            .manifest("[vars]\nname = \"stead\"\n[file.t]\npath = \"~/t\"\ntemplate = \"t.j2\"\n");
        let g = crate::graph::Graph::build(&m).unwrap();
        match crate::plan::make(&m, &g, &fx.state, false, 1) {
            Ok(plan) => match &plan.changes[0].op {
                crate::resource::Op::WriteFile { content, .. } => {
                    Ok(String::from_utf8(content.clone()).unwrap())
                }
                other => panic!("{other:?}"),
            },
            Err(e) => match &e.0[0].1 {
                ResourceError::Template { path, message } => Err((path.clone(), message.clone())),
                other => panic!("{other:?}"),
            },
        }
    }

    #[test]
    fn include_and_macros_come_from_the_config_repo() {
        let fx = Fixture::new();
        fx.write_repo("parts/head.j2", "# head for {{ name }}\n");
        fx.write_repo(
            "macros.j2",
            "{% macro kv(k, v) %}{{ k }} = {{ v }}{% endmacro %}",
        );
        let text = render(
            &fx,
            "{% include \"parts/head.j2\" %}{% import \"macros.j2\" as m %}{{ m.kv(\"a\", 1) }}\n",
        )
        .unwrap();
        assert_eq!(text, "# head for stead\na = 1\n");
    }

    #[test]
    fn includes_outside_the_config_repo_are_refused() {
        let fx = Fixture::new();
        fs::write(fx.home.join("secret"), "s3cret").unwrap();
        let outside = fx.home.join("secret");
        for name in ["../home/secret".to_string(), outside.display().to_string()] {
            let (_, message) = render(&fx, &format!("{{% include \"{name}\" %}}\n")).unwrap_err();
            assert!(message.contains("config repo"), "{name}: {message}");
            assert!(!message.contains("s3cret"));
        }
        // A link inside the repo that leads out of it.
        std::os::unix::fs::symlink(&outside, fx.repo.join("link.j2")).unwrap();
        let (_, message) = render(&fx, "{% include \"link.j2\" %}\n").unwrap_err();
        assert!(
            message.contains("a link leading out of the config repo"),
            "{message}"
        );
        // A missing one says so.
        let (_, message) = render(&fx, "{% include \"nope.j2\" %}\n").unwrap_err();
        assert!(message.contains("nope.j2"), "{message}");
    }

    #[test]
    fn an_undefined_variable_is_named_with_its_line_and_a_caret() {
        let fx = Fixture::new();
        let (path, message) = render(&fx, "ok\nname = {{ naem }}!\n").unwrap_err();
        assert_eq!(path, fx.repo.join("t.j2"));
        assert_eq!(
            message,
            "line 2: undefined variable `naem`\n  2 | name = {{ naem }}!\n    |           ^^^^"
        );
    }

    #[test]
    fn an_error_in_an_included_template_names_that_file() {
        let fx = Fixture::new();
        fx.write_repo("inc.j2", "first\n{{ missing }}\n");
        let (path, message) = render(&fx, "{% include \"inc.j2\" %}\n").unwrap_err();
        assert_eq!(path, fx.repo.join("inc.j2"));
        assert!(
            message.starts_with("line 2: undefined variable `missing`"),
            "{message}"
        );
    }

    #[test]
    fn machine_facts_distro_and_kernel_are_there() {
        let fx = Fixture::new();
        let text = render(&fx, "[{{ distro }}|{{ distro_version }}|{{ kernel }}]").unwrap();
        let release = crate::machine::OsRelease::read();
        let kernel = crate::machine::kernel_release();
        assert!(!kernel.is_empty());
        assert_eq!(
            text,
            format!("[{}|{}|{kernel}]", release.id, release.version_id)
        );
    }
}
