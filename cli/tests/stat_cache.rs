//! The stat cache end to end: a file verified by a full read and still for
//! the racy window is trusted by its `lstat` on the next run; any change
//! (also one made in the same second and hidden by `touch -d`) is still
//! found; `--verify` reads everything; `plan` writes no cache; a broken
//! cache is ignored. `STEAD_NOW` moves the verification time past the
//! racy window instead of sleeping through it. Each run here plans: the
//! converged seal an earlier no-op leaves (which would skip the plan, see
//! `seal.rs`) is removed first.

mod common;

use std::fs;

use common::{Repo, later};

const MANIFEST: &str = "[file.a]\npath = \"~/a\"\ncontent = \"aaa\\n\"\n\n[file.b]\npath = \"~/b\"\ncontent = \"bbb\\n\"\n";

fn apply(repo: &Repo, now: Option<&str>, extra: &[&str]) -> (i32, String, String) {
    let _ = fs::remove_file(repo.sb.state_dir().join("converged.seal"));
    let config = repo.config.path().to_str().unwrap().to_string();
    let mut args = vec!["--config", config.as_str(), "-v", "apply", "--yes"];
    args.extend_from_slice(extra);
    let mut cmd = repo.sb.stead(&args);
    if let Some(t) = now {
        cmd.env("STEAD_NOW", t);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn trusted(err: &str) -> usize {
    err.lines()
        .find_map(|l| l.strip_prefix("Trusted ")?.split(' ').next()?.parse().ok())
        .unwrap_or(0)
}

/// Applied, then verified past the racy window: both files cached.
fn cached() -> Repo {
    let repo = Repo::new(MANIFEST);
    let (code, out, err) = apply(&repo, None, &[]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = apply(&repo, Some(&later()), &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(repo.sb.state_dir().join("stat_cache.json").exists());
    repo
}

#[test]
fn a_file_verified_and_unchanged_is_trusted_by_its_stat_on_the_next_run() {
    let repo = cached();
    let (code, out, err) = apply(&repo, None, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(trusted(&err), 2, "{err}");
    assert!(out.contains("No changes"), "{out}");
    // --verify reads every file and trusts none, and what it read (past
    // the window here) is trusted again by the next run.
    let (code, out, err) = apply(&repo, Some(&later()), &["--verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(trusted(&err), 0, "{err}");
    let (_, _, err) = apply(&repo, None, &[]);
    assert_eq!(trusted(&err), 2, "{err}");
}

#[test]
fn an_edit_in_the_same_second_hidden_by_touch_d_is_still_found() {
    let repo = cached();
    let path = repo.path("a");
    common::edit_hidden_by_touch_d(&path, "zzz\n");

    let (code, out, err) = repo.run(&["state", "check-drift"]);
    assert_eq!(code, 4, "{out}{err}");
    let (code, out, err) = apply(&repo, None, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("~ file.a  ~/a  (changed by hand since stead wrote it; backed up first)"),
        "{out}"
    );
    assert_eq!(trusted(&err), 1, "only b is trusted: {err}");
    assert_eq!(fs::read_to_string(&path).unwrap(), "aaa\n");
}

#[test]
fn a_file_read_within_the_racy_window_is_not_trusted_later() {
    let repo = Repo::new(MANIFEST);
    apply(&repo, None, &[]);
    // Verified right after it was written (no clock moved): too fresh.
    apply(&repo, None, &[]);
    let (_, _, err) = apply(&repo, None, &[]);
    assert_eq!(trusted(&err), 0, "{err}");
}

#[test]
fn plan_writes_no_cache_and_a_broken_cache_is_ignored_and_replaced() {
    let repo = Repo::new(MANIFEST);
    apply(&repo, None, &[]);
    let cache = repo.sb.state_dir().join("stat_cache.json");
    let _ = fs::remove_file(&cache);
    let config = repo.config.path().to_str().unwrap().to_string();
    let out = repo
        .sb
        .stead(&["--config", &config, "plan"])
        .env("STEAD_NOW", later())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!cache.exists(), "plan wrote the stat cache");

    fs::write(&cache, "{ torn").unwrap();
    let (code, out, err) = apply(&repo, Some(&later()), &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(trusted(&err), 0);
    let text = fs::read_to_string(&cache).unwrap();
    assert!(text.starts_with("{\"format\":1"), "{text}");
    let (_, _, err) = apply(&repo, None, &[]);
    assert_eq!(trusted(&err), 2, "{err}");
}
