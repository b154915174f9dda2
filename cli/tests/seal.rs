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

const ONLY_DRIFTED: &str = "planned only the";

/// What -v says when a drift was planned from the compiled manifest.
const COMPILED: &str = "The manifest was the compiled form that apply kept";

/// The lines of an apply that describe its plan (not where backups went).
fn plan_lines(out: &str) -> Vec<&str> {
    out.lines()
        .filter(|l| l.starts_with("~ ") || l.starts_with("Plan:"))
        .collect()
}

#[test]
fn a_file_edited_on_a_sealed_machine_is_planned_alone_and_shown_as_a_full_plan_shows_it() {
    let edited = sealed();
    fs::write(edited.path("a"), "edited by hand\n").unwrap();
    let (code, out, err) = apply(&edited, None, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains(ONLY_DRIFTED), "{err}");
    assert!(!err.contains(SKIPPED), "{err}");
    assert_eq!(fs::read_to_string(edited.path("a")).unwrap(), "aaa\n");

    // The same edit with no seal: the whole manifest is planned.
    let full = sealed();
    fs::remove_file(full.sb.state_dir().join("converged.seal")).unwrap();
    fs::write(full.path("a"), "edited by hand\n").unwrap();
    let (code, full_out, err) = apply(&full, None, &[]);
    assert_eq!(code, 0, "{full_out}{err}");
    assert!(!err.contains(ONLY_DRIFTED), "{err}");
    assert_eq!(plan_lines(&out), plan_lines(&full_out));
    assert_eq!(
        plan_lines(&out),
        [
            "~ file.a  ~/a  (changed by hand since stead wrote it; backed up first)",
            "Plan: 0 to create, 1 to update, 0 to remove, 1 unchanged.",
        ]
    );
    // What was repaired is recorded: a full plan finds nothing to do.
    let config = edited.config.path().to_str().unwrap().to_string();
    let plan = edited
        .sb
        .stead(&["--config", &config, "plan"])
        .output()
        .unwrap();
    let plan = String::from_utf8_lossy(&plan.stdout).into_owned();
    assert!(plan.contains("No changes"), "{plan}");
}

#[test]
fn plan_on_a_sealed_machine_with_an_edited_file_plans_it_alone() {
    let repo = sealed();
    fs::write(repo.path("b"), "edited\n").unwrap();
    let config = repo.config.path().to_str().unwrap().to_string();
    let out = repo
        .sb
        .stead(&["--config", &config, "-v", "plan"])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains(ONLY_DRIFTED), "{stderr}");
    assert!(
        stdout.contains("Plan: 0 to create, 1 to update, 0 to remove, 1 unchanged."),
        "{stdout}"
    );
}

/// What waits for a drifted resource is planned with it: a file's repair
/// still notifies the exec that reloads it.
#[test]
fn a_drifted_file_still_notifies_what_waits_for_it() {
    let manifest = "[file.conf]\npath = \"~/app.conf\"\ncontent = \"v1\\n\"\nnotify = [\"exec.reload\"]\n\n[exec.reload]\ncommand = \"echo reload >> reloads\"\ncwd = \"~\"\nrefresh_only = true\n";
    let repo = Repo::new(manifest);
    let (code, out, err) = apply(&repo, None, &[]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = apply(&repo, Some(&later()), &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(repo.sb.state_dir().join("converged.seal").exists());
    let reloads = repo.path("reloads");
    assert_eq!(fs::read_to_string(&reloads).unwrap(), "reload\n");

    fs::write(repo.path("app.conf"), "edited\n").unwrap();
    let (code, out, err) = apply(&repo, None, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains(ONLY_DRIFTED), "{err}");
    assert!(err.contains(COMPILED), "{err}");
    assert_eq!(fs::read_to_string(repo.path("app.conf")).unwrap(), "v1\n");
    assert_eq!(fs::read_to_string(&reloads).unwrap(), "reload\nreload\n");
}

/// A drift is planned from the compiled manifest the sealing run kept, and
/// plans and applies exactly what a parse of `stead.toml` would: the same
/// output when the compiled form is there, altered (a flipped byte) or
/// gone, where the run parses `stead.toml` instead.
#[test]
fn a_drift_planned_from_the_compiled_manifest_applies_what_a_parse_would() {
    let mut outputs = Vec::new();
    for damage in ["none", "flipped", "removed"] {
        let repo = sealed();
        let compiled = repo.sb.state_dir().join("converged.manifest");
        match damage {
            "flipped" => {
                let mut bytes = fs::read(&compiled).unwrap();
                let mid = bytes.len() / 2;
                bytes[mid] ^= 0x20;
                fs::write(&compiled, bytes).unwrap();
            }
            "removed" => fs::remove_file(&compiled).unwrap(),
            _ => assert!(compiled.is_file()),
        }
        fs::write(repo.path("b"), "edited\n").unwrap();
        let (code, out, err) = apply(&repo, None, &[]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(err.contains(ONLY_DRIFTED), "{damage}: {err}");
        assert_eq!(err.contains(COMPILED), damage == "none", "{damage}: {err}");
        assert_eq!(fs::read_to_string(repo.path("b")).unwrap(), "bbb\n");
        assert_eq!(fs::read_to_string(repo.path("a")).unwrap(), "aaa\n");
        // Each repo's temp dir and each run's stamp are in the backup's path.
        let out: Vec<&str> = out
            .lines()
            .map(|l| match l.find("backed up the original to ") {
                Some(at) => &l[..at],
                None => l,
            })
            .collect();
        outputs.push(out.join("\n"));
    }
    assert!(outputs[0].contains("~ file.b"), "{}", outputs[0]);
    assert_eq!(outputs[0], outputs[1]);
    assert_eq!(outputs[0], outputs[2]);
}

/// A sensitive file's inline content is never copied out of the manifest:
/// no compiled form is kept, and nothing in the state dir holds it.
#[test]
fn a_manifest_with_a_sensitive_file_keeps_no_compiled_form() {
    let manifest = format!(
        "{MANIFEST}\n[file.pin]\npath = \"~/pin\"\ncontent = \"pin=8231-5577\\n\"\nsensitive = true\n"
    );
    let repo = Repo::new(&manifest);
    let (code, out, err) = apply(&repo, None, &[]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = apply(&repo, Some(&later()), &[]);
    assert_eq!(code, 0, "{out}{err}");
    let state = repo.sb.state_dir();
    assert!(state.join("converged.seal").exists());
    assert!(!state.join("converged.manifest").exists());
    let mut stack = vec![state.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            } else {
                let bytes = fs::read(entry.path()).unwrap();
                assert!(
                    !bytes.windows(9).any(|w| w == b"8231-5577"),
                    "{}",
                    entry.path().display()
                );
            }
        }
    }
    // A drift of another file is still planned alone, from stead.toml.
    fs::write(repo.path("a"), "edited\n").unwrap();
    let (code, out, err) = apply(&repo, None, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains(ONLY_DRIFTED), "{err}");
    assert!(!err.contains(COMPILED), "{err}");
    assert_eq!(fs::read_to_string(repo.path("a")).unwrap(), "aaa\n");
}

#[test]
fn a_new_declaration_is_planned_and_applied() {
    let repo = sealed();
    repo.write_manifest(&format!(
        "{MANIFEST}\n[file.c]\npath = \"~/c\"\ncontent = \"ccc\\n\"\n"
    ));
    let (code, out, err) = apply(&repo, None, &[]);
    assert_eq!(code, 0, "{out}{err}");
    // stead.toml changed: every plan rests on it, so all is planned.
    assert!(!err.contains(ONLY_DRIFTED), "{err}");
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

/// A repair of what drifted on a sealed machine does not read every
/// managed directory for killed writers' temps: none can be there that the
/// apply which sealed did not look for, unless the journal or the manifest
/// changed since (which breaks the seal). One planted there anyway stays
/// through the repair, and the next full plan (`--verify`) removes it.
#[test]
fn a_drift_repair_leaves_the_managed_directories_to_the_next_full_plan() {
    let repo = sealed();
    // No process has this PID: its writer is gone.
    let temp = repo.path(".a.tmp-99999999-stead-0123456789abcdef0123456789abcdef");
    fs::write(&temp, "planted: no run since the seal left it").unwrap();
    fs::write(repo.path("b"), "edited\n").unwrap();
    let (code, out, err) = apply(&repo, None, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains(ONLY_DRIFTED), "{err}");
    assert_eq!(fs::read_to_string(repo.path("b")).unwrap(), "bbb\n");
    assert!(temp.exists(), "a drift repair read the managed directories");
    let out = repo.ok(&["apply", "--yes", "--verify"]);
    assert!(!temp.exists(), "{out}");
    assert!(out.contains("Removed a temp file"), "{out}");
}

/// A run killed on a sealed machine leaves its temps next to the files it
/// wrote, and its start in the journal, which the seal names: the next run
/// plans everything, not only what drifted, and removes the temp (next to
/// a managed file the drift does not touch) once, reporting it; the drifted
/// file is repaired.
#[test]
fn a_killed_runs_temp_on_a_sealed_machine_is_removed_by_a_full_plan() {
    let repo = sealed();
    // No process has this PID: its writer is gone.
    let temp = repo.path(".a.tmp-99999999-stead-0123456789abcdef0123456789abcdef");
    fs::write(&temp, "partial").unwrap();
    repo.journal_a_killed_run();
    fs::write(repo.path("b"), "edited\n").unwrap();
    let (code, out, err) = apply(&repo, None, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!err.contains(ONLY_DRIFTED), "{err}");
    assert!(!err.contains(SKIPPED), "{err}");
    assert!(!temp.exists(), "{out}{err}");
    let shown = temp.display().to_string();
    assert_eq!(
        format!("{out}{err}").matches(&shown).count(),
        1,
        "{out}{err}"
    );
    assert_eq!(fs::read_to_string(repo.path("b")).unwrap(), "bbb\n");
    assert_eq!(fs::read_to_string(repo.path("a")).unwrap(), "aaa\n");
}

/// A repair on a sealed machine reads the state record in part, and the
/// record it commits holds what a repair that reads it whole commits (the
/// same drift repaired with `--verify`, which plans in full): the same
/// resources and checksums, the untouched entries and the repaired ones.
#[test]
fn a_repair_reads_the_record_in_part_and_commits_what_a_whole_read_commits() {
    const READ_IN_PART: &str = "The state record was read in part";
    let records = |repo: &Repo| -> (serde_json::Value, serde_json::Value) {
        let text = fs::read_to_string(repo.sb.state_dir().join("state.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        (v["checksums"].clone(), v["resources"].clone())
    };
    let mut committed = Vec::new();
    for verify in [false, true] {
        let repo = sealed();
        fs::write(repo.path("b"), "edited\n").unwrap();
        let extra: &[&str] = if verify { &["--verify"] } else { &[] };
        let config = repo.config.path().to_str().unwrap().to_string();
        let mut args = vec!["--config", config.as_str(), "-v", "apply", "--yes"];
        args.extend_from_slice(extra);
        let out = repo.sb.stead(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
        assert_eq!(err.contains(READ_IN_PART), !verify, "{err}");
        assert_eq!(err.contains(ONLY_DRIFTED), !verify, "{err}");
        assert_eq!(fs::read_to_string(repo.path("b")).unwrap(), "bbb\n");
        let (checksums, resources) = records(&repo);
        assert_eq!(checksums.as_object().unwrap().len(), 2, "{checksums}");
        assert_eq!(resources.as_object().unwrap().len(), 2, "{resources}");
        committed.push((checksums, resources));
        // Read whole by the next run, and nothing is left to do.
        let (code, out, err) = apply(&repo, Some(&later()), &[]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("No changes"), "{out}");
    }
    assert_eq!(committed[0], committed[1]);
}
