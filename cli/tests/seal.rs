//! The converged seal end to end: after a no-op apply past the racy window,
//! the next apply finds everything by its stat and prints what a planned
//! no-op prints, without planning; anything changed since (an edit hidden
//! by `touch -d`, a new declaration) is planned and applied as always;
//! `--json` and `--verify` always plan. `STEAD_NOW` moves the verification
//! time past the racy window instead of sleeping through it.

mod common;

use std::fs;

use common::{Repo, later};

const MANIFEST: &str = "[file.a]\npath = \"~/a\"\ncontent = \"aaa\\n\"\n\n[file.b]\npath = \"~/b\"\ncontent = \"bbb\\n\"\n";

fn apply(repo: &Repo, now: Option<&str>, extra: &[&str]) -> (i32, String, String) {
    let config = repo.config.path().to_str().unwrap().to_string();
    let mut args = vec!["--config", config.as_str(), "-v"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["apply", "--yes"]);
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

const SKIPPED: &str = "without planning";

/// Applied, then found unchanged past the racy window: sealed.
fn sealed() -> Repo {
    let repo = Repo::new(MANIFEST);
    let (code, out, err) = apply(&repo, None, &[]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = apply(&repo, Some(&later()), &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!err.contains(SKIPPED), "{err}");
    assert!(repo.sb.state_dir().join("converged.seal").exists());
    repo
}

#[test]
fn a_sealed_no_op_skips_the_plan_and_prints_what_a_planned_no_op_prints() {
    let repo = sealed();
    let (code, sealed_out, err) = apply(&repo, None, &[]);
    assert_eq!(code, 0, "{sealed_out}{err}");
    assert!(err.contains(SKIPPED), "{err}");
    // A seal is not used up: the next run skips the plan too.
    let (code, again_out, err) = apply(&repo, None, &[]);
    assert_eq!(code, 0);
    assert!(err.contains(SKIPPED), "still sealed: {err}");
    // --verify plans and reads every file: the same two lines.
    let (code, verified_out, err) = {
        let config = repo.config.path().to_str().unwrap().to_string();
        let out = repo
            .sb
            .stead(&["--config", &config, "-v", "apply", "--yes", "--verify"])
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(code, 0);
    assert!(!err.contains(SKIPPED), "--verify planned: {err}");
    assert_eq!(sealed_out, verified_out);
    assert_eq!(again_out, verified_out);
    assert_eq!(
        sealed_out,
        "No changes. The machine matches the manifest.\nPlan: 0 to create, 0 to update, 0 to remove, 2 unchanged.\n"
    );
    // The run released its lock.
    let (code, out, _) = repo.run(&["state", "lock-info"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("State is not locked"), "{out}");
}

#[test]
fn an_edit_in_the_same_second_hidden_by_touch_d_is_planned_and_repaired() {
    let repo = sealed();
    let path = repo.path("a");
    common::edit_hidden_by_touch_d(&path, "zzz\n");
    let (code, out, err) = apply(&repo, None, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!err.contains(SKIPPED), "{err}");
    assert!(
        out.contains("~ file.a  ~/a  (changed by hand since stead wrote it; backed up first)"),
        "{out}"
    );
    assert_eq!(fs::read_to_string(&path).unwrap(), "aaa\n");
    assert!(!repo.sb.state_dir().join("converged.seal").exists());
}

#[test]
fn a_new_declaration_is_planned_and_applied() {
    let repo = sealed();
    repo.write_manifest(&format!(
        "{MANIFEST}\n[file.c]\npath = \"~/c\"\ncontent = \"ccc\\n\"\n"
    ));
    let (code, out, err) = apply(&repo, None, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("+ file.c"), "{out}");
    assert_eq!(fs::read_to_string(repo.path("c")).unwrap(), "ccc\n");
}

#[test]
fn json_always_plans_and_lists_every_resource() {
    let repo = sealed();
    let config = repo.config.path().to_str().unwrap().to_string();
    let out = repo
        .sb
        .stead(&["--config", &config, "--json", "apply", "--yes"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let first: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(first["event"], "plan");
    assert_eq!(first["plan"]["changes"].as_array().unwrap().len(), 2);
    assert_eq!(first["empty"], true);
}

#[test]
fn plan_on_a_sealed_machine_prints_the_no_op_without_planning() {
    let repo = sealed();
    let config = repo.config.path().to_str().unwrap().to_string();
    let out = repo
        .sb
        .stead(&["--config", &config, "-v", "plan", "--detailed-exitcode"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains(SKIPPED));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "No changes. The machine matches the manifest.\nPlan: 0 to create, 0 to update, 0 to remove, 2 unchanged.\n"
    );
    // A drifted file breaks the seal: plan plans, and shows the change.
    fs::write(repo.path("b"), "drifted\n").unwrap();
    let out = repo
        .sb
        .stead(&["--config", &config, "-v", "plan", "--detailed-exitcode"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(!String::from_utf8_lossy(&out.stderr).contains(SKIPPED));
    assert!(String::from_utf8_lossy(&out.stdout).contains("~ file.b"));
}

#[test]
fn a_sealed_run_still_removes_a_killed_seal_writes_temp() {
    let repo = sealed();
    // PID 99 999 999 is above any pid_max: its writer is gone.
    let temp = repo
        .sb
        .state_dir()
        .join(".converged.seal.tmp-99999999-stead-0123456789abcdef0123456789abcdef");
    fs::write(&temp, "half a seal").unwrap();
    let (code, out, err) = apply(&repo, None, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains(SKIPPED), "{err}");
    assert!(!temp.exists());
    assert!(out.contains("Removed a temp file"), "{out}");
}
