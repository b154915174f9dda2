//! `line`: one line present in (or absent from) a file stead does not own,
//! like Ansible's `lineinfile`. `match` (a literal substring, so no regex
//! dependency) picks the line to replace. The file is rewritten atomically
//! with its mode kept, created only with `create = true`, never removed, and
//! never edited through a symlink.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::fsutil::FsError;
use crate::manifest::{Kind, OtherSpec, Problem, Spec, SpecInput};
use crate::safe_path;

use super::file::text_diff;
use super::kind::{
    ApplyEnv, Key, KeyType, KindSchema, Planned, ResourceKind, custom_data, custom_op,
    unexpected_op, unexpected_spec,
};
use super::{Action, Applied, Op, PlanContext, ResourceError, mode_of};

/// The kind's name.
const LINE: Kind = Kind::named("line");

/// The mode of a file `create = true` makes.
const NEW_FILE_MODE: u32 = 0o644;

/// What a `line` resource declares.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LineSpec {
    /// The file (absolute).
    pub path: PathBuf,
    /// The line, without its newline.
    pub line: String,
    /// `ensure = "absent"`: remove every copy (and every line holding `match`).
    pub absent: bool,
    /// A literal substring: the first line holding it is replaced by `line`.
    pub matches: Option<String>,
    /// Create the file when it does not exist.
    pub create: bool,
}

/// The `line` kind.
pub struct Line;

impl KindSchema for Line {
    fn kind(&self) -> Kind {
        LINE
    }

    fn keys(&self) -> &'static [Key] {
        const KEYS: &[Key] = &[
            Key::required("path", KeyType::Str),
            Key::required("line", KeyType::Str),
            Key::optional("ensure", KeyType::Str),
            Key::optional("match", KeyType::Str),
            Key::optional("create", KeyType::Bool),
        ];
        KEYS
    }

    fn path_key(&self) -> Option<&'static str> {
        Some("path")
    }

    fn build(&self, input: &mut SpecInput) -> Option<Spec> {
        let absent = input.ensure_absent();
        // A newline inside `line` would never compare equal to one line of
        // the file, so it would be appended on every run.
        let line = one_line(input, "line", "must be a single line (no newline)");
        let matches = if input.has("match") {
            Some(one_line(input, "match", "must be a non-empty single line")?)
        } else {
            None
        };
        let create = input.flag("create");
        let spec = LineSpec {
            path: input.path()?,
            line: line?,
            absent,
            matches,
            create,
        };
        Some(Spec::Other(OtherSpec {
            kind: LINE,
            path: Some(spec.path.clone()),
            data: Arc::new(spec),
        }))
    }
}

impl ResourceKind for Line {
    fn plan(&self, spec: &Spec, ctx: &PlanContext, _owned: bool) -> Result<Planned, ResourceError> {
        match spec {
            Spec::Other(o) => match o.data::<LineSpec>() {
                Some(l) => plan(l, ctx),
                None => Err(unexpected_spec(self.kind(), spec)),
            },
            other => Err(unexpected_spec(self.kind(), other)),
        }
    }

    fn apply(&self, op: &Op, _env: &ApplyEnv) -> Result<Applied, ResourceError> {
        match op {
            Op::Custom { data } => apply_edit(&custom_data(self.kind(), data)?),
            other => Err(unexpected_op(self.kind(), other)),
        }
    }

    fn watch_paths(&self, spec: &Spec) -> Vec<PathBuf> {
        spec.path().map(Path::to_path_buf).into_iter().collect()
    }

    /// The file it edits: its plan reads nothing else.
    fn seal_paths(&self, spec: &Spec) -> Option<Vec<crate::seal::SealPath>> {
        spec.path().map(|p| vec![crate::seal::SealPath::content(p)])
    }
}

/// A resolved string key that holds no newline (and, for `match`, is not
/// empty: it would hold every line).
fn one_line(input: &mut SpecInput, key: &str, rule: &str) -> Option<String> {
    let (text, span) = input.text_at(key)?;
    if text.contains('\n') || (key == "match" && text.is_empty()) {
        input.problem(Problem::at(span, format!("`{key}` {rule}")).label("bad value"));
        return None;
    }
    Some(text)
}

/// The file as it is, or `None` when it does not exist; a conflict when it is
/// not a regular file (a link stead must not follow, a directory...).
fn read(path: &Path) -> Result<Result<Option<(String, u32)>, Planned>, ResourceError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Ok(None)),
        Err(e) => return Err(FsError::new("cannot read", path, e).into()),
    };
    if meta.file_type().is_symlink() {
        return Ok(Err(Planned::conflict(format!(
            "{} is a symlink; stead edits lines only in a regular file, never through a link",
            path.display()
        ))));
    }
    if !meta.file_type().is_file() {
        return Ok(Err(Planned::conflict(format!(
            "{} is not a regular file",
            path.display()
        ))));
    }
    let bytes = fs::read(path).map_err(|e| FsError::new("cannot read", path, e))?;
    match String::from_utf8(bytes) {
        Ok(text) => Ok(Ok(Some((text, mode_of(&meta))))),
        Err(_) => Ok(Err(Planned::conflict(format!(
            "{} is not UTF-8 text; stead edits lines only in text files",
            path.display()
        )))),
    }
}

fn plan(l: &LineSpec, ctx: &PlanContext) -> Result<Planned, ResourceError> {
    let current = match read(&l.path)? {
        Ok(current) => current,
        Err(conflict) => return Ok(conflict),
    };
    let (old, action) = match current {
        Some((text, _mode)) => (text, Action::Update),
        None if l.absent => return Ok(Planned::unchanged("absent")),
        None if !l.create => {
            return Err(FsError::new(
                "cannot edit",
                &l.path,
                io::Error::new(
                    io::ErrorKind::NotFound,
                    "it does not exist (set create = true to create it)",
                ),
            )
            .into());
        }
        None => (String::new(), Action::Create),
    };
    let new = edit(&old, l);
    if new == old && action == Action::Update {
        return Ok(Planned::unchanged(""));
    }
    let replaces = l
        .matches
        .as_deref()
        .filter(|m| old.lines().any(|x| x.contains(m)));
    let reason = match replaces {
        _ if l.absent => "removes the line".to_string(),
        _ if action == Action::Create => "creates the file with the line".to_string(),
        Some(m) => format!("replaces the line holding `{m}`"),
        None => "adds the line".to_string(),
    };
    let shown = ctx.manifest.display_path(&l.path);
    let diff = text_diff(&shown, old.as_bytes(), new.as_bytes());
    // The diff shows the edit on the file as it is now; apply makes the edit
    // again on the file as it is then, so nothing written meanwhile is lost.
    let op = custom_op(LINE, l)?;
    Ok(Planned::new(action, reason, op).with_diff(Some(diff)))
}

/// The text with the line ensured: pure, so planning twice gives the same.
///
/// Present: the first line holding `match` becomes `line`; else, without a
/// copy of `line`, it is appended. Absent: every copy of `line` (and every
/// line holding `match`) goes.
pub fn edit(text: &str, l: &LineSpec) -> String {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let body = |seg: &str| seg.strip_suffix('\n').unwrap_or(seg).to_string();
    let holds_match = |seg: &str| l.matches.as_deref().is_some_and(|m| body(seg).contains(m));
    if l.absent {
        return lines
            .into_iter()
            .filter(|seg| body(seg) != l.line && !holds_match(seg))
            .collect();
    }
    if let Some(i) = lines.iter().position(|seg| holds_match(seg)) {
        let newline = if lines[i].ends_with('\n') { "\n" } else { "" };
        let replaced = format!("{}{newline}", l.line);
        let mut out: Vec<&str> = lines.clone();
        out[i] = &replaced;
        return out.concat();
    }
    if lines.iter().any(|seg| body(seg) == l.line) {
        return text.to_string();
    }
    let mut out = text.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&l.line);
    out.push('\n');
    out
}

/// Makes the edit on the file as it is now (atomically, mode kept), in its
/// directory opened without following a link; refuses a link or anything
/// but a regular UTF-8 file that took its place.
fn apply_edit(l: &LineSpec) -> Result<Applied, ResourceError> {
    let not_regular = |why: &str| -> ResourceError {
        FsError::new("cannot edit", &l.path, io::Error::other(why.to_string())).into()
    };
    let gone = || -> ResourceError {
        FsError::new(
            "cannot edit",
            &l.path,
            io::Error::new(
                io::ErrorKind::NotFound,
                "it no longer exists (set create = true to create it)",
            ),
        )
        .into()
    };
    let Some((dir, name)) = safe_path::open_parent(&l.path, false)? else {
        return if l.absent {
            Ok(Applied::default())
        } else {
            Err(gone())
        };
    };
    let current = match dir.read_regular(&name) {
        Ok(c) => c,
        Err(safe_path::PathError::Changed { .. }) => {
            return Err(not_regular(
                "it is no longer a regular text file (a link is never followed)",
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let (old, mode) = match current {
        Some((bytes, mode)) => match String::from_utf8(bytes) {
            Ok(text) => (text, mode),
            Err(_) => return Err(not_regular("it is no longer UTF-8 text")),
        },
        None if l.absent => return Ok(Applied::default()),
        None if l.create => (String::new(), NEW_FILE_MODE),
        None => return Err(gone()),
    };
    let new = edit(&old, l);
    if new != old {
        dir.write_atomic(&name, new.as_bytes(), mode)?;
    }
    Ok(Applied::default())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{PermissionsExt, symlink};

    use super::*;
    use crate::resource::tests::{Fixture, change, mode};

    fn spec(line: &str, absent: bool, matches: Option<&str>) -> LineSpec {
        LineSpec {
            path: PathBuf::from("/x"),
            line: line.into(),
            absent,
            matches: matches.map(str::to_string),
            create: false,
        }
    }

    fn manifest(extra: &str) -> String {
        format!("[line.l]\npath = \"~/rc\"\nline = \"export A=1\"\n{extra}")
    }

    #[test]
    fn edit_appends_once_replaces_a_match_and_removes_every_copy() {
        let add = spec("b", false, None);
        assert_eq!(edit("a\n", &add), "a\nb\n");
        assert_eq!(
            edit("a", &add),
            "a\nb\n",
            "a missing final newline is added first"
        );
        assert_eq!(edit("", &add), "b\n");
        assert_eq!(edit("a\nb\nc\n", &add), "a\nb\nc\n");
        let replace = spec("EDITOR=nvim", false, Some("EDITOR="));
        assert_eq!(
            edit("x\nEDITOR=vi\nEDITOR=ed\n", &replace),
            "x\nEDITOR=nvim\nEDITOR=ed\n"
        );
        assert_eq!(edit("EDITOR=vi", &replace), "EDITOR=nvim");
        assert_eq!(edit("x\n", &replace), "x\nEDITOR=nvim\n");
        let remove = spec("b", true, None);
        assert_eq!(edit("b\na\nb\nc\nb", &remove), "a\nc\n");
        assert_eq!(edit("a\n", &remove), "a\n");
        let remove_matching = spec("b", true, Some("EDITOR"));
        assert_eq!(edit("EDITOR=1\na\nb\n", &remove_matching), "a\n");
    }

    #[test]
    fn present_appends_once_keeps_the_mode_and_owns_nothing() {
        let mut fx = Fixture::new();
        let rc = fx.home.join("rc");
        fs::write(&rc, "# rc\n").unwrap();
        fs::set_permissions(&rc, fs::Permissions::from_mode(0o600)).unwrap();
        let m = manifest("");
        let plan = fx.plan(&m);
        let c = change(&plan, "line.l");
        assert_eq!(c.action, Action::Update);
        assert!(c.diff.as_deref().unwrap().contains("+export A=1"), "{c:?}");
        fx.converge(&m);
        assert_eq!(fs::read_to_string(&rc).unwrap(), "# rc\nexport A=1\n");
        assert_eq!(mode(&rc), 0o600);
        assert!(!fx.owns("line.l"));
        assert!(fx.state.checksums.is_empty());
        // No longer declared: the file stays as it is.
        fx.converge("");
        assert_eq!(fs::read_to_string(&rc).unwrap(), "# rc\nexport A=1\n");
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it_unless_create() {
        let mut fx = Fixture::new();
        let m = fx.manifest(&manifest(""));
        let g = crate::graph::Graph::build(&m).unwrap();
        let err = crate::plan::make(&m, &g, &fx.state, false, 1).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&fx.home.join("rc").display().to_string())
                && text.contains("create = true"),
            "{text}"
        );
        let (plan, _) = fx.converge(&manifest("create = true\n"));
        assert_eq!(change(&plan, "line.l").action, Action::Create);
        assert_eq!(
            fs::read_to_string(fx.home.join("rc")).unwrap(),
            "export A=1\n"
        );
        assert_eq!(mode(&fx.home.join("rc")), NEW_FILE_MODE);
        assert!(!fx.owns("line.l"));
    }

    #[test]
    fn a_path_another_resource_manages_is_a_load_error_but_lines_may_share_a_file() {
        let fx = Fixture::new();
        let text = fx.text(
            "[line.l]\npath = \"~/rc\"\nline = \"x\"\n[line.m]\npath = \"~/rc\"\nline = \"y\"\n\
             [file.rc]\npath = \"~/rc\"\ncontent = \"\"\n",
        );
        let err = fx.manifest_error(&text);
        let msgs: Vec<&str> = err.problems.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(
            msgs,
            [
                "line.l edits ~/rc, which file.rc manages",
                "line.m edits ~/rc, which file.rc manages"
            ]
        );
        assert_eq!(
            err.line_col(err.problems[0].span.clone().unwrap().start),
            (2, 8)
        );
        fx.manifest(
            "[line.l]\npath = \"~/rc\"\nline = \"x\"\n[line.m]\npath = \"~/rc\"\nline = \"y\"\n",
        );
    }

    #[test]
    fn a_line_with_a_newline_or_an_empty_match_is_a_load_error() {
        let fx = Fixture::new();
        let err = fx.manifest_error("[line.l]\npath = \"/x\"\nline = \"a\\nb\"\nmatch = \"\"\n");
        let msgs: Vec<&str> = err.problems.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(
            msgs,
            [
                "`line` must be a single line (no newline)",
                "`match` must be a non-empty single line"
            ]
        );
    }

    #[test]
    fn a_symlink_is_never_followed() {
        let fx = Fixture::new();
        let real = fx.out.join("real");
        fs::write(&real, "x\n").unwrap();
        symlink(&real, fx.home.join("rc")).unwrap();
        let plan = fx.plan(&manifest(""));
        let c = change(&plan, "line.l");
        assert_eq!(c.action, Action::Conflict);
        assert!(c.reason.contains("symlink"), "{}", c.reason);
        assert_eq!(fs::read_to_string(&real).unwrap(), "x\n");
    }

    #[test]
    fn apply_refuses_a_link_that_appeared_after_the_plan() {
        let fx = Fixture::new();
        let real = fx.out.join("real");
        fs::write(&real, "x\n").unwrap();
        let rc = fx.home.join("rc");
        symlink(&real, &rc).unwrap();
        let mut l = spec("y", false, None);
        l.path = rc;
        let err = apply_edit(&l).unwrap_err();
        assert!(err.to_string().contains("cannot edit"), "{err}");
        assert_eq!(fs::read_to_string(&real).unwrap(), "x\n");
    }

    #[test]
    fn an_op_that_does_not_read_back_is_refused_and_changes_nothing() {
        let fx = Fixture::new();
        let rc = fx.home.join("rc");
        fs::write(&rc, "x\n").unwrap();
        let edited = Op::Custom {
            data: serde_json::json!({ "path": rc, "lines": "y" }),
        };
        let env = ApplyEnv {
            backups: &fx.backups,
            control: &crate::run::RunControl::new(),
            secrets: &crate::secret::Secrets::unavailable(),
        };
        let err = Line.apply(&edited, &env).unwrap_err().to_string();
        assert!(
            err.contains("a line op of the plan does not read back") && err.contains("'stead plan"),
            "{err}"
        );
        assert_eq!(fs::read_to_string(&rc).unwrap(), "x\n");
    }
}
