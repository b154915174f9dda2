//! The command-line conventions: completion scripts, the man page, and the
//! one colour decision (`--color`, `NO_COLOR`, `CLICOLOR_FORCE`).

mod common;

use std::process::Command;

use common::{Repo, Sandbox};

/// stead with no HOME and no state dir: the generators need neither.
fn stead_bare(args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().expect("temp dir");
    assert_cmd::Command::cargo_bin("stead")
        .expect("stead binary")
        .env_remove("HOME")
        .env_remove("STEAD_HOME")
        .env_remove("STEAD_STATE_DIR")
        .env_remove("STEAD_CONFIG")
        .current_dir(dir.path())
        .args(args)
        .output()
        .expect("run stead")
}

/// A tool the test needs: its absence fails under CI (which installs it,
/// see .ci/run) and is said, not hidden, elsewhere.
fn require_tool(name: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "`{name}` is not installed; .ci/run installs it (apt-get install man-db groff-base)"
        );
        println!("SKIPPED: `{name}` is not installed here (CI installs it)");
    }
    found
}

#[test]
fn bash_completion_is_valid_bash_and_needs_no_state() {
    let out = stead_bare(&["completion", "bash"]);
    assert!(out.status.success(), "{out:?}");
    let script = String::from_utf8(out.stdout).expect("utf-8");
    for sub in ["apply", "plan", "completion", "man", "state"] {
        assert!(script.contains(sub), "bash script lacks {sub}");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("stead.bash");
    std::fs::write(&file, &script).expect("write script");
    let check = Command::new("bash")
        .arg("-n")
        .arg(&file)
        .output()
        .expect("run bash -n");
    assert!(
        check.status.success(),
        "bash -n rejects the script: {}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn zsh_and_fish_completions_name_the_subcommands() {
    for shell in ["zsh", "fish"] {
        let out = stead_bare(&["completion", shell]);
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = String::from_utf8(out.stdout).expect("utf-8");
        for sub in ["apply", "plan", "sync", "man"] {
            assert!(script.contains(sub), "{shell} script lacks {sub}");
        }
    }
}

#[test]
fn unknown_shell_is_a_usage_error() {
    let out = stead_bare(&["completion", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bash"));
}

#[test]
fn man_page_renders_with_man() {
    let out = stead_bare(&["man"]);
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.starts_with(b".ie") || out.stdout.starts_with(b".TH"));
    if !require_tool("man") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let page = dir.path().join("stead.1");
    std::fs::write(&page, &out.stdout).expect("write page");
    let rendered = Command::new("man")
        .arg("-l")
        .arg(&page)
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .env("MANWIDTH", "80")
        .output()
        .expect("run man");
    assert!(rendered.status.success(), "{rendered:?}");
    let text = String::from_utf8_lossy(&rendered.stdout);
    assert!(text.contains("NAME"), "{text}");
    assert!(text.contains("SYNOPSIS"), "{text}");
    assert!(text.contains("stead"), "{text}");
}

/// Whether `text` holds an ANSI escape sequence.
fn has_ansi(text: &str) -> bool {
    text.contains('\u{1b}')
}

/// A failing command whose error ("Error:") is coloured when colour is on;
/// stdout and stderr are pipes.
fn error_output(sandbox: &Sandbox, env: &[(&str, &str)], args: &[&str]) -> String {
    let missing = sandbox.home().join("no-such-config");
    let mut cmd = sandbox.stead(&["--config", missing.to_str().expect("utf-8 path")]);
    cmd.args(args);
    cmd.env_remove("NO_COLOR").env_remove("CLICOLOR_FORCE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run stead");
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn color_always_colours_a_pipe() {
    let s = Sandbox::new();
    let err = error_output(&s, &[], &["--color", "always", "plan"]);
    assert!(has_ansi(&err), "{err}");
}

#[test]
fn no_color_with_auto_on_a_pipe_has_no_escapes() {
    let s = Sandbox::new();
    let err = error_output(&s, &[("NO_COLOR", "1")], &["--color", "auto", "plan"]);
    assert!(!has_ansi(&err), "{err}");
    let err = error_output(&s, &[], &["plan"]);
    assert!(!has_ansi(&err), "a pipe is not a terminal: {err}");
}

#[test]
fn clicolor_force_forces_colour_unless_zero() {
    let s = Sandbox::new();
    let err = error_output(&s, &[("CLICOLOR_FORCE", "1")], &["plan"]);
    assert!(has_ansi(&err), "{err}");
    let err = error_output(&s, &[("CLICOLOR_FORCE", "0")], &["plan"]);
    assert!(!has_ansi(&err), "{err}");
}

#[test]
fn never_and_the_old_no_color_flag_win_over_clicolor_force() {
    let s = Sandbox::new();
    let env = [("CLICOLOR_FORCE", "1")];
    let err = error_output(&s, &env, &["--color", "never", "plan"]);
    assert!(!has_ansi(&err), "{err}");
    let err = error_output(&s, &env, &["--no-color", "plan"]);
    assert!(!has_ansi(&err), "{err}");
}

/// `stead ARGS` in `repo` with the colour variables cleared: (stdout, stderr).
fn repo_output(repo: &Repo, args: &[&str]) -> (String, String) {
    let config = repo.config.path().to_str().expect("utf-8 path").to_string();
    let mut cmd = repo.sb.stead(&["--config", &config]);
    cmd.args(args)
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR_FORCE");
    let out = cmd.output().expect("run stead");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_plan_on_stdout_follows_the_same_decision() {
    let repo = Repo::new("[file.a]\npath = \"~/a\"\ncontent = \"x\"\n");
    let (out, _) = repo_output(&repo, &["--color", "always", "plan"]);
    assert!(has_ansi(&out), "{out}");
    let (out, _) = repo_output(&repo, &["--color", "never", "plan"]);
    assert!(!has_ansi(&out), "{out}");
    assert!(out.contains("~/a") || out.contains("file.a"), "{out}");
}

#[test]
fn manifest_reports_from_miette_follow_the_same_decision() {
    let repo = Repo::new("[file.a]\npath = \"~/a\"\ncontent = 3\n");
    let (_, err) = repo_output(&repo, &["--color", "always", "plan"]);
    assert!(err.contains("stead.toml"), "{err}");
    // Beyond the "Error:" prefix: miette's own report is coloured too.
    let report = err.split_once("Error:").map(|(_, r)| r).unwrap_or_default();
    assert!(has_ansi(report), "{err}");
    let (_, err) = repo_output(&repo, &["--color", "never", "plan"]);
    assert!(err.contains("stead.toml") && !has_ansi(&err), "{err}");
}

/// `n` files and, when `failing`, one exec that fails.
fn many_changes(n: usize, failing: bool) -> Repo {
    let mut manifest = String::new();
    for i in 0..n {
        manifest.push_str(&format!(
            "[file.f{i}]\npath = \"~/f{i}\"\ncontent = \"{i}\\n\"\n\n"
        ));
    }
    if failing {
        manifest.push_str("[exec.broken]\ncommand = \"echo nope >&2; exit 3\"\n");
    }
    Repo::new(&manifest)
}

#[test]
fn many_changes_get_a_line_each_only_with_verbose() {
    let repo = many_changes(25, false);
    let out = repo.ok(&["apply", "--yes"]);
    assert!(!out.contains("f3 created"), "{out}");
    assert!(out.contains("Apply complete: 25 created"), "{out}");
    let repo = many_changes(25, false);
    let out = repo.ok(&["-v", "apply", "--yes"]);
    assert_eq!(out.matches(" created\n").count(), 25, "{out}");
}

#[test]
fn few_changes_get_a_line_each() {
    let repo = many_changes(3, false);
    let out = repo.ok(&["apply", "--yes"]);
    assert_eq!(out.matches(" created\n").count(), 3, "{out}");
}

#[test]
fn with_stderr_redirected_what_matters_is_still_on_stdout() {
    let repo = many_changes(25, true);
    let (code, out, _) = repo.run(&["apply", "--yes"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("exec.broken failed"), "{out}");
    assert!(
        out.contains("24 created") || out.contains("25 created"),
        "{out}"
    );
}
