//! `stead state check-drift` end to end: a file that the converged seal or
//! the stat cache vouches for is not read, and what the check reports is
//! exactly what `--full` (which reads every file) reports, on a sealed
//! machine, on one whose seal drifted, and on one with only a stat cache;
//! an edit made in the same second and hidden by `touch -d` is still found.
//! `stead status` trusts the seal as `stead plan` does, and shows what it
//! shows without one.
//! `STEAD_NOW` moves the verification time past the racy window instead of
//! sleeping through it.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::{Repo, later};

const MANIFEST: &str = "[file.a]\npath = \"~/a\"\ncontent = \"aaa\\n\"\n\n\
                        [file.b]\npath = \"~/b\"\ncontent = \"bbb\\n\"\n";

/// What -v says when files were trusted without being read.
const TRUSTED: &str = "unchanged file(s) by the converged seal or their stat without reading them";

fn apply(repo: &Repo, now: Option<&str>) {
    let config = repo.config.path().to_str().unwrap().to_string();
    let mut cmd = repo.sb.stead(&["--config", &config, "apply", "--yes"]);
    if let Some(t) = now {
        cmd.env("STEAD_NOW", t);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// Applied, then found unchanged past the racy window: sealed, and every
/// file in the stat cache.
fn sealed(manifest: &str) -> Repo {
    let repo = Repo::new(manifest);
    apply(&repo, None);
    apply(&repo, Some(&later()));
    assert!(repo.sb.state_dir().join("converged.seal").exists());
    assert!(repo.sb.state_dir().join("stat_cache.json").exists());
    repo
}

/// How many files `check-drift -v` says it trusted (0: it says nothing).
fn trusted(err: &str) -> usize {
    err.lines()
        .find(|l| l.contains(TRUSTED))
        .and_then(|l| l.strip_prefix("Trusted ")?.split(' ').next()?.parse().ok())
        .unwrap_or(0)
}

/// `check-drift -v` with `extra`: exit code, stdout, files trusted.
fn check(repo: &Repo, extra: &[&str]) -> (i32, String, usize) {
    let mut args = vec!["-v"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["state", "check-drift"]);
    let (code, out, err) = repo.run(&args);
    (code, out, trusted(&err))
}

/// The trusting check and the full one report the same, in text and JSON
/// (every path listed); returns the trusting check's exit code and the
/// files it trusted.
fn same_as_full(repo: &Repo) -> (i32, usize) {
    let (code, out, trusted) = check(repo, &["--json"]);
    let (full_code, full_out, full_trusted) = {
        let (code, out, err) = repo.run(&["-v", "--json", "state", "check-drift", "--full"]);
        (code, out, self::trusted(&err))
    };
    assert_eq!(full_trusted, 0, "--full trusts nothing");
    assert_eq!((code, &out), (full_code, &full_out));
    for args in [
        &["--json", "state", "check-drift", "--all"][..],
        &["state", "check-drift", "--all", "--diff"],
    ] {
        let full = [args, &["--full"]].concat();
        assert_eq!(repo.run(args), repo.run(&full), "{args:?}");
    }
    (code, trusted)
}

/// After `path` was edited in a way its mtime hides: the check finds it
/// alone modified and trusts the other file, as `--full` reports.
fn only_modified(repo: &Repo, path: &str) {
    let (code, out, trusted) = check(repo, &[]);
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains("Modified Files (1)") && out.contains(path),
        "{out}"
    );
    assert_eq!(trusted, 1, "the other file is vouched for");
    assert_eq!(same_as_full(repo), (4, 1));
}

#[test]
fn on_a_sealed_machine_no_file_is_read_and_the_report_is_the_full_one() {
    let repo = sealed(MANIFEST);
    let (code, out, trusted) = check(&repo, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("No drift"), "{out}");
    assert_eq!(trusted, 2);
    assert_eq!(same_as_full(&repo), (0, 2));
}

#[test]
fn an_edit_hidden_by_touch_d_on_a_sealed_machine_is_found_and_only_it_is_read() {
    let repo = sealed(MANIFEST);
    common::edit_hidden_by_touch_d(&repo.path("a"), "zzz\n");
    only_modified(&repo, "~/a");
}

#[test]
fn without_a_seal_the_stat_cache_vouches_and_an_edit_hidden_by_touch_d_is_found() {
    let repo = sealed(MANIFEST);
    fs::remove_file(repo.sb.state_dir().join("converged.seal")).unwrap();
    let (code, out, trusted) = check(&repo, &[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(trusted, 2);
    common::edit_hidden_by_touch_d(&repo.path("b"), "zzz\n");
    only_modified(&repo, "~/b");
}

#[test]
fn every_kind_of_drift_is_reported_as_the_full_check_reports_it() {
    let manifest = format!(
        "{MANIFEST}\n\
         [file.m]\npath = \"~/m\"\ncontent = \"mmm\\n\"\nmode = \"0644\"\n\n\
         [file.gone]\npath = \"~/gone\"\ncontent = \"g\\n\"\n\n\
         [file.swapped]\npath = \"~/swapped\"\ncontent = \"s\\n\"\n\n\
         [dir.d]\npath = \"~/d\"\n\n\
         [symlink.l]\npath = \"~/l\"\ntarget = \"~/a\"\n"
    );
    let repo = sealed(&manifest);
    let (code, _, trusted) = check(&repo, &[]);
    assert_eq!((code, trusted), (0, 5));
    assert_eq!(same_as_full(&repo), (0, 5));
    // Every kind of drift at once: the seal no longer holds for these
    // resources, and the rest are still vouched for.
    common::edit_hidden_by_touch_d(&repo.path("a"), "zzz\n");
    fs::set_permissions(repo.path("m"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::remove_file(repo.path("gone")).unwrap();
    fs::remove_file(repo.path("swapped")).unwrap();
    fs::create_dir(repo.path("swapped")).unwrap();
    fs::remove_file(repo.path("l")).unwrap();
    std::os::unix::fs::symlink(repo.path("b"), repo.path("l")).unwrap();
    let (code, out, trusted) = check(&repo, &[]);
    assert_eq!(code, 4, "{out}");
    for title in [
        "Modified Files (1)",
        "Missing Files (1)",
        "Replaced (1)",
        "Mode Changes (1)",
        "Retargeted Symlinks (1)",
    ] {
        assert!(out.contains(title), "{title}: {out}");
    }
    assert_eq!(trusted, 1, "only ~/b is left to the seal");
    assert_eq!(same_as_full(&repo), (4, 1));
    // And with no seal, by the stat cache.
    fs::remove_file(repo.sb.state_dir().join("converged.seal")).unwrap();
    let (code, _, trusted) = check(&repo, &[]);
    assert_eq!((code, trusted), (4, 1));
    assert_eq!(same_as_full(&repo), (4, 1));
}

/// `stead status` in text and JSON, with and without `--diff`.
fn status_outputs(repo: &Repo) -> Vec<(i32, String, String)> {
    [&[][..], &["--diff"], &["--json"], &["--json", "--diff"]]
        .iter()
        .map(|extra| {
            let mut args = vec!["status"];
            args.extend_from_slice(extra);
            let (code, out, _) = repo.run(&args);
            (code, out, extra.join(" "))
        })
        .collect()
}

#[test]
fn status_on_a_sealed_machine_shows_what_it_shows_without_the_seal() {
    let repo = sealed(MANIFEST);
    let (code, out, _) = repo.run(&["status"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Clean"), "{out}");
    let with_seal = status_outputs(&repo);
    common::edit_hidden_by_touch_d(&repo.path("a"), "zzz\n");
    let drifted_seal = status_outputs(&repo);
    assert_eq!(drifted_seal[0].0, 4, "{:?}", drifted_seal[0]);
    assert!(
        drifted_seal[0].1.contains("~M ~/a  file.a"),
        "{:?}",
        drifted_seal[0]
    );
    // Without the seal: a full plan, the stat cache for the drift column.
    fs::remove_file(repo.sb.state_dir().join("converged.seal")).unwrap();
    assert_eq!(status_outputs(&repo), drifted_seal);
    // Back to clean and sealed, then without the seal again.
    apply(&repo, None);
    apply(&repo, Some(&later()));
    assert!(repo.sb.state_dir().join("converged.seal").exists());
    assert_eq!(status_outputs(&repo), with_seal);
    fs::remove_file(repo.sb.state_dir().join("converged.seal")).unwrap();
    assert_eq!(status_outputs(&repo), with_seal);
}
