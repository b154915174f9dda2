//! Manifest loading: kinds, references, profiles, and every load error with its place.

use std::path::{Path, PathBuf};

use super::*;

fn load(text: &str) -> Result<Manifest, ManifestError> {
    load_with(text, None)
}

fn load_with(text: &str, profile: Option<&str>) -> Result<Manifest, ManifestError> {
    let repo = tempfile::tempdir().unwrap();
    std::fs::write(repo.path().join("rc"), "x").unwrap();
    std::fs::write(repo.path().join("t.j2"), "{{ email }}").unwrap();
    let repo_path = repo.path().to_path_buf();
    // The temp repo must outlive parsing only (existence checks happen now).
    let result = Manifest::parse(
        &text.replace("REPO", repo_path.to_str().unwrap()),
        &repo_path.join(MANIFEST_FILE),
        &repo_path,
        &LoadOptions {
            home: PathBuf::from("/home/me"),
            profile: profile.map(str::to_string),
            kinds: &crate::resource::registry::REGISTRY,
        },
    );
    drop(repo);
    result
}

fn messages(e: &ManifestError) -> Vec<String> {
    e.problems.iter().map(|p| p.message.clone()).collect()
}

#[test]
fn parses_every_kind_with_references_and_profiles() {
    let m = load_with(
        r#"
[settings]
default_profile = "personal"

[vars]
editor = "nvim"

[profile.work.vars]
email = "me@work.example"

[profile.personal.vars]
email = "me@home.example"

[dir.config]
path = "~/.config"
mode = "0700"

[file.rc]
path = "~/.bashrc"
source = "rc"
mode = "0644"
notify = ["exec.reload"]

[file.git]
path = "~/.gitconfig"
template = "t.j2"

[file.note]
path = "~/.config/note"
content = "editor=${vars.editor} rc=${file.rc}"

[symlink.nvim]
path = "~/.config/nvim"
target = "rc"

[exec.reload]
command = ["echo", "${vars.editor}"]
creates = "~/.done"
timeout = "2s"
env = { A = "b" }

[noop.work_only]
profiles = ["work"]
"#,
        None,
    )
    .unwrap();
    assert_eq!(m.profile.as_deref(), Some("personal"));
    assert_eq!(m.vars["email"], "me@home.example");
    let ids: Vec<_> = m.resources.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "dir.config",
            "file.rc",
            "file.git",
            "file.note",
            "symlink.nvim",
            "exec.reload"
        ]
    );
    match &m.get("file.note").unwrap().spec {
        Spec::File(f) => {
            assert_eq!(
                f.content,
                Some(FileContent::Inline(
                    "editor=nvim rc=/home/me/.bashrc".into()
                ))
            );
            assert_eq!(f.path, Path::new("/home/me/.config/note"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(m.get("file.note").unwrap().references, ["file.rc"]);
    match &m.get("exec.reload").unwrap().spec {
        Spec::Exec(e) => {
            assert_eq!(e.command, Command::Argv(vec!["echo".into(), "nvim".into()]));
            assert_eq!(e.timeout, Some(std::time::Duration::from_secs(2)));
            assert_eq!(e.creates.as_deref(), Some(Path::new("/home/me/.done")));
            assert_eq!(e.env["A"], "b");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(m.get("file.rc").unwrap().notify, ["exec.reload"]);

    let work = load_with(
        "[profile.work.vars]\n[noop.w]\nprofiles = [\"work\"]\n",
        Some("work"),
    )
    .unwrap();
    assert_eq!(work.resources.len(), 1);
}

#[test]
fn all_problems_are_reported_at_once_with_places() {
    let text = r#"[file.a]
path = "~/a"
sorce = "rc"

[widget.x]
size = 1

[file.b]
path = "relative/b"
content = "${vars.nope}"
mode = "999"

[exec.c]
after = ["file.zzz"]
"#;
    let e = load(text).unwrap_err();
    let msgs = messages(&e);
    assert!(
        msgs.iter().any(|m| m == "unknown key `sorce` in [file.a]"),
        "{msgs:?}"
    );
    assert!(
        msgs.iter().any(|m| m == "unknown kind `widget`"),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.contains("must be absolute or start with ~/")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter().any(|m| m == "unknown variable `nope`"),
        "{msgs:?}"
    );
    assert!(msgs.iter().any(|m| m == "bad mode \"999\""), "{msgs:?}");
    assert!(
        msgs.iter()
            .any(|m| m == "exec.c is missing the required key `command`"),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m == "`after` names `file.zzz`, which is not declared"),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m == "file.a needs one of `source`, `content` or `template`")
    );
    // Places: `sorce` is on line 3, column 1.
    let sorce = e
        .problems
        .iter()
        .find(|p| p.message.contains("sorce"))
        .unwrap();
    assert_eq!(e.line_col(sorce.span.clone().unwrap().start), (3, 1));
    let summary = e.to_string();
    assert!(
        summary.contains("stead.toml:3:1: unknown key `sorce` in [file.a]"),
        "{summary}"
    );
}

#[test]
fn two_resources_claiming_one_path() {
    let e = load(
        "[file.a]\npath = \"~/x\"\ncontent = \"1\"\n[file.b]\npath = \"~/x\"\ncontent = \"2\"\n",
    )
    .unwrap_err();
    assert_eq!(
        messages(&e),
        ["file.b claims ~/x, which file.a already claims"]
    );
}

#[test]
fn unknown_profile_and_syntax_errors() {
    let e = load_with("[noop.a]\n", Some("nope")).unwrap_err();
    assert_eq!(
        messages(&e),
        [
            "unknown profile `nope` (given with --profile, or recorded by an earlier apply on this machine)"
        ]
    );
    let e = load("[settings]\ndefault_profile = \"ghost\"\n").unwrap_err();
    assert_eq!(messages(&e), ["unknown profile `ghost`"]);
    let e = load("[file.a\npath = 1").unwrap_err();
    assert!(
        messages(&e)[0].starts_with("invalid TOML"),
        "{:?}",
        messages(&e)
    );
    assert!(e.problems[0].span.is_some());
}

#[test]
fn missing_source_and_bad_types() {
    let e = load(
        "[file.a]\npath = \"~/a\"\nsource = \"missing\"\n[dir.d]\npath = 5\n[symlink.s]\npath = \"~/s\"\n",
    )
    .unwrap_err();
    let msgs = messages(&e);
    assert!(
        msgs.iter()
            .any(|m| m.ends_with("missing does not exist in the config repo")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m == "`path` must be a string, found an integer"),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m == "symlink.s is missing the required key `target`"),
        "{msgs:?}"
    );
    assert!(
        !msgs
            .iter()
            .any(|m| m == "dir.d is missing the required key `path`"),
        "{msgs:?}"
    );
}

#[test]
fn display_and_expand_keys() {
    let home = Path::new("/home/me");
    assert_eq!(
        display_path(home, Path::new("/home/me/.bashrc")),
        "~/.bashrc"
    );
    assert_eq!(display_path(home, Path::new("/etc/x")), "/etc/x");
    assert_eq!(expand_key(home, "~/.bashrc"), Path::new("/home/me/.bashrc"));
}

#[test]
fn display_path_by_bytes_agrees_with_components() {
    use std::os::unix::ffi::OsStrExt;
    let by_components = |home: &Path, path: &Path| match path.strip_prefix(home) {
        Ok(rest) if rest.as_os_str().is_empty() => "~".to_string(),
        Ok(rest) => format!("~/{}", rest.display()),
        Err(_) => path.display().to_string(),
    };
    let bad = std::ffi::OsStr::from_bytes(b"/home/me/caf\xe9");
    let paths = [
        Path::new("/home/me"),
        Path::new("/home/me/a/b"),
        Path::new("/home/meat/x"),
        Path::new("/home"),
        Path::new("/etc/x"),
        Path::new("/home/me/./a"),
        Path::new("/home//me/a"),
        Path::new(bad),
    ];
    for home in ["/home/me", "/home/me/", "/", "/home//me", "/home/./me"] {
        for path in paths {
            assert_eq!(
                display_path(Path::new(home), path),
                by_components(Path::new(home), path),
                "{home} {path:?}"
            );
        }
    }
}

/// The text a problem's span covers.
fn spanned<'a>(text: &'a str, e: &ManifestError, message_part: &str) -> &'a str {
    let p = e
        .problems
        .iter()
        .find(|p| p.message.contains(message_part))
        .unwrap_or_else(|| panic!("no problem mentioning {message_part:?}: {:?}", messages(e)));
    &text[p.span.clone().expect("a span")]
}

#[test]
fn a_doubled_dollar_writes_a_literal_reference_opener() {
    let m = load(
        r#"
[vars]
price = "$${cost}"

[exec.e]
command = "echo $${HOME} ${vars.price}"
"#,
    )
    .unwrap();
    let Spec::Exec(e) = &m.get("exec.e").unwrap().spec else {
        panic!("not an exec")
    };
    assert_eq!(e.command.display(), "echo ${HOME} ${cost}");
}

#[test]
fn references_in_variables_and_resource_references_in_paths_are_refused() {
    let e = load(
        r#"
[vars]
base = "b"
greeting = "hi ${vars.base}"

[dir.config]
path = "~/cfg"

[file.a]
path = "${dir.config}/a.conf"
content = "a"
"#,
    )
    .unwrap_err();
    let msgs = messages(&e);
    assert!(
        msgs.iter()
            .any(|m| m == "[vars] values cannot hold references"),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.contains("`${dir.config}` cannot be used in a path")),
        "{msgs:?}"
    );
}

#[test]
fn spans_stay_on_the_reference_after_escapes_and_in_multiline_strings() {
    let text = "[file.a]\npath = \"~/a\"\ncontent = \"a\\tb\\tc ${vars.one}\"\n\n[file.b]\npath = \"~/b\"\ncontent = \"\"\"\nline\n${vars.two}\"\"\"\n";
    let e = load(text).unwrap_err();
    assert_eq!(spanned(text, &e, "`one`"), "${vars.one}");
    assert_eq!(spanned(text, &e, "`two`"), "${vars.two}");
}

#[test]
fn a_missing_required_key_is_reported_beside_another_resources_bad_key() {
    let e = load("[file.b]\ncontent = \"b\"\n\n[dir.c]\npath = 5\n").unwrap_err();
    let msgs = messages(&e);
    assert!(
        msgs.contains(&"file.b is missing the required key `path`".to_string()),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("`path` must be a string")),
        "{msgs:?}"
    );
}

#[test]
fn once_and_idempotency_key_make_a_one_shot_exec() {
    let m = load(
        "[exec.a]\ncommand = \"true\"\nonce = true\n\n[exec.b]\ncommand = \"true\"\nidempotency_key = \"db-init-v2\"\n\n[exec.c]\ncommand = \"true\"\n",
    )
    .unwrap();
    let key = |id: &str| match &m.get(id).unwrap().spec {
        Spec::Exec(e) => e.idempotency_key.clone(),
        _ => panic!("not an exec"),
    };
    assert_eq!(key("exec.a").as_deref(), Some("once:exec.a"));
    assert_eq!(key("exec.b").as_deref(), Some("db-init-v2"));
    assert_eq!(key("exec.c"), None);
    let e =
        load("[exec.a]\ncommand = \"true\"\nonce = \"yes\"\nidempotency_key = \"\"\n").unwrap_err();
    let msgs = messages(&e);
    assert!(
        msgs.contains(&"`once` must be true or false, found a string".to_string()),
        "{msgs:?}"
    );
    assert!(
        msgs.contains(&"`idempotency_key` must not be empty".to_string()),
        "{msgs:?}"
    );
}

fn exec_timeout(value: &str) -> Result<Option<std::time::Duration>, ManifestError> {
    let m = load(&format!(
        "[exec.e]\ncommand = \"true\"\ntimeout = {value}\n"
    ))?;
    match &m.get("exec.e").unwrap().spec {
        Spec::Exec(e) => Ok(e.timeout),
        other => panic!("{other:?}"),
    }
}

#[test]
fn durations_are_read_by_humantime_with_the_one_year_cap() {
    use std::time::Duration;
    for (text, want) in [
        ("\"1m30s\"", Duration::from_secs(90)),
        ("\"2h\"", Duration::from_secs(7200)),
        ("\"500ms\"", Duration::from_millis(500)),
        ("\"2h 5min\"", Duration::from_secs(7500)),
        ("\"1.5s\"", Duration::from_millis(1500)),
        ("45", Duration::from_secs(45)),
    ] {
        assert_eq!(exec_timeout(text).unwrap(), Some(want), "{text}");
    }
    let text = "[exec.e]\ncommand = \"true\"\ntimeout = \"90 parsecs\"\n";
    let e = load(text).unwrap_err();
    assert_eq!(
        spanned(text, &e, "must be a duration like"),
        "\"90 parsecs\""
    );
    for over in ["\"366days\"", "\"9000h\"", "\"99999999999999999999999s\""] {
        let text = format!("[exec.e]\ncommand = \"true\"\ntimeout = {over}\n");
        let e = load(&text).unwrap_err();
        assert_eq!(
            spanned(&text, &e, "must be at most 365 days"),
            over,
            "{over}"
        );
    }
}

/// A manifest parsed in pieces (cut before every `[kind.name]`) and whole:
/// the same resources, or the same problems at the same places.
fn pieces_and_whole(text: &str) -> (Result<Parsed, ManifestError>, Result<Parsed, ManifestError>) {
    let repo = tempfile::tempdir().unwrap();
    std::fs::write(repo.path().join("rc"), "x").unwrap();
    let text = std::sync::Arc::new(text.replace("REPO", repo.path().to_str().unwrap()));
    let path = repo.path().join(MANIFEST_FILE);
    let options = LoadOptions {
        home: PathBuf::from("/home/me"),
        profile: None,
        kinds: &crate::resource::registry::REGISTRY,
    };
    let pieces = parse::parse_in_pieces(&text, &path, repo.path(), &options, 1);
    let whole = parse::parse_whole(&text, &path, repo.path(), &options);
    // Walked on several threads, the pieces are refused as they are on one.
    if let Some(ranges) = pieces::split(&text, 1, options.kinds) {
        let apart = parse::parse_pieces_on(&text, &ranges, &path, repo.path(), &options, 1);
        for threads in [2, 3] {
            let together =
                parse::parse_pieces_on(&text, &ranges, &path, repo.path(), &options, threads);
            assert_eq!(
                together.as_ref().map(|p| &p.manifest.resources),
                apart.as_ref().map(|p| &p.manifest.resources),
                "{threads} threads: {text}"
            );
        }
    }
    (pieces, whole)
}

fn same_problems(a: &[Problem], b: &[Problem]) -> bool {
    let key = |p: &[Problem]| {
        let mut v: Vec<_> = p
            .iter()
            .map(|p| (p.span.as_ref().map(|s| (s.start, s.end)), p.message.clone()))
            .collect();
        v.sort();
        v
    };
    key(a) == key(b)
}

const IN_PIECES: &str = r#"
[settings]
default_profile = "work"

[vars]
name = "me"

[profile.work.vars]
name = "work-me"

[dir.conf]
path = "~/.config"

[file.a]
path = "~/.config/a"
content = "hello ${vars.name} in ${dir.conf}"
after = ["exec.later"]

[file.b]
path = "~/.config/b"
source = "REPO/rc"
profiles = ["home"]

[exec.later]
command = ["true"]
creates = "${file.a}"
notify = ["noop.n"]

[noop.n]
before = ["file.a"]
"#;

#[test]
fn a_manifest_parsed_in_pieces_is_the_manifest_parsed_whole() {
    let repo = tempfile::tempdir().unwrap();
    let path = repo.path().join(MANIFEST_FILE);
    let options = LoadOptions {
        home: PathBuf::from("/home/me"),
        profile: None,
        kinds: &crate::resource::registry::REGISTRY,
    };
    let text = std::sync::Arc::new(IN_PIECES.replace("REPO", repo.path().to_str().unwrap()));
    std::fs::write(repo.path().join("rc"), "x").unwrap();
    let ranges = pieces::split(&text, 1, options.kinds).unwrap();
    assert_eq!(ranges.len(), 6, "cut before each [kind.name]");
    let whole = parse::parse_whole(&text, &path, repo.path(), &options).unwrap();
    assert!(whole.problems.is_empty(), "{:?}", whole.problems);
    let w = whole.manifest;
    // One thread walks the pieces in order; more walk shares of them at
    // once, and their declarations are joined in the text's order.
    for threads in [1, 2, 3, 6] {
        let pieces = parse::parse_pieces_on(&text, &ranges, &path, repo.path(), &options, threads)
            .expect("these pieces parse alone");
        assert!(pieces.problems.is_empty(), "{:?}", pieces.problems);
        let p = pieces.manifest;
        assert_eq!(p.resources, w.resources, "{threads} threads");
        assert_eq!(
            (&p.vars, &p.profile, &p.profiles),
            (&w.vars, &w.profile, &w.profiles),
            "{threads} threads"
        );
        assert_eq!(p.resources.len(), 4);
        assert_eq!(&text[p.resources[1].span.clone()], "a");
    }
}

#[test]
fn a_manifest_that_pieces_would_misread_is_parsed_whole_with_the_same_errors() {
    for text in [
        // The same resource in two pieces: a TOML error only when whole.
        "[file.a]\npath = \"~/a\"\ncontent = \"x\"\n[file.b]\npath = \"~/b\"\ncontent = \"y\"\n[file.a]\nmode = \"0600\"\n",
        // [vars] twice, in two pieces.
        "[vars]\nx = \"1\"\n[file.a]\npath = \"~/a\"\ncontent = \"x\"\n[vars]\ny = \"2\"\n",
        // A problem in a later piece, and a dangling reference to an earlier one.
        "[file.a]\npath = \"~/a\"\ncontent = \"x\"\n[file.b]\npath = \"~/b\"\ncontent = 3\nafter = [\"file.c\"]\n",
        // A cut inside a multi-line string.
        "[file.a]\npath = \"~/a\"\ncontent = \"\"\"\n[file.b]\n\"\"\"\n[file.c]\npath = \"~/c\"\ncontent = \"x\"\n",
        // A path claimed in two pieces.
        "[file.a]\npath = \"~/a\"\ncontent = \"x\"\n[file.b]\npath = \"~/a\"\ncontent = \"y\"\n",
    ] {
        let (pieces, whole) = pieces_and_whole(text);
        match (pieces, whole) {
            (Ok(p), Ok(w)) => {
                assert!(same_problems(&p.problems, &w.problems), "{text}");
                assert_eq!(p.manifest.resources, w.manifest.resources, "{text}");
            }
            (Err(p), Err(w)) => assert!(same_problems(&p.problems, &w.problems), "{text}"),
            (p, w) => panic!("{text}: pieces {:?} whole {:?}", p.is_ok(), w.is_ok()),
        }
    }
    let (pieces, whole) = pieces_and_whole(IN_PIECES);
    assert_eq!(
        pieces.unwrap().manifest.resources,
        whole.unwrap().manifest.resources
    );
}
