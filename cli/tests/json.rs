//! The `--json` contract (docs/json.md): every document carries
//! `"schema": 1`, `apply --json` is an NDJSON stream in every case, the plan
//! shows modes in octal and never the content of a `sensitive` file. Shapes
//! are snapshot-tested with times, ids, checksums and temp paths redacted.

mod common;

use std::fs;

use common::{Repo, Sandbox};
use serde_json::Value;
use stead_lib::lock::{self, LockConfig, LockRequest};

const MANIFEST: &str = r#"
[file.secret]
path = "~/.secret"
content = "password=hunter2\n"
mode = "0600"
sensitive = true

[file.plain]
path = "~/.plain"
content = "hello\n"
"#;

/// Runs `stead --json ARGS` and returns (exit code, stdout).
fn run_json(r: &Repo, args: &[&str]) -> (i32, String) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (code, out, _) = r.run(&all);
    (code, out)
}

/// Every line of an NDJSON stream, each parsed (a line that is not one JSON
/// object fails the test).
fn events(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON per line ({e}): {l}"))
        })
        .collect()
}

fn names(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["event"].as_str().unwrap_or("?"))
        .collect()
}

/// Snapshots `text` with temp paths, lineage and machine ids, checksums
/// and times replaced (insta filters), so the shape is what is compared.
fn snapshot(r: &Repo, name: &str, text: &str) {
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"lineage-[0-9a-f-]{36}", "<lineage>");
    settings.add_filter(r"blake3:[0-9a-f]{64}", "<checksum>");
    settings.add_filter(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)",
        "<time>",
    );
    settings.add_filter(
        r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        "<uuid>",
    );
    settings.bind(|| insta::assert_snapshot!(name, r.redact(text)));
}

#[test]
fn plan_json_shape_has_schema_octal_modes_and_hides_sensitive_content() {
    let r = Repo::new(MANIFEST);
    let (code, out) = run_json(&r, &["plan"]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("hunter2"), "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["schema"], 1);
    let secret = &v["plan"]["changes"][0];
    assert_eq!(secret["op"]["mode"], "0600");
    assert_eq!(secret["op"]["content"], "(sensitive content hidden)");
    assert_eq!(v["plan"]["changes"][1]["op"]["content"], "hello\n");
    snapshot(&r, "plan_json", &out);
}

#[test]
fn sensitive_diff_is_hidden_in_the_human_plan() {
    let r = Repo::new(MANIFEST);
    r.ok(&["apply", "--yes"]);
    fs::write(r.path(".secret"), "password=changed-by-hand\n").unwrap();
    let out = r.ok(&["plan"]);
    assert!(out.contains("(sensitive content hidden)"), "{out}");
    assert!(
        !out.contains("hunter2") && !out.contains("changed-by-hand"),
        "{out}"
    );
}

#[test]
fn apply_json_is_ndjson_when_it_changes_things_and_when_nothing_changes() {
    let r = Repo::new(MANIFEST);
    let (code, out) = run_json(&r, &["apply", "--yes"]);
    assert_eq!(code, 0, "{out}");
    let first = events(&out);
    assert!(first.iter().all(|e| e["schema"] == 1), "{out}");
    assert!(!out.contains("hunter2"), "{out}");
    // Changes run concurrently: started/done lines may interleave.
    let mut seen = names(&first);
    assert_eq!(
        (seen.first(), seen.last()),
        (Some(&"plan"), Some(&"summary")),
        "{out}"
    );
    seen.sort_unstable();
    assert_eq!(
        seen,
        ["done", "done", "plan", "started", "started", "summary"],
        "{out}"
    );

    // Nothing to do: still a stream, a plan then a summary, each one line.
    let (code, out) = run_json(&r, &["apply", "--yes"]);
    assert_eq!(code, 0, "{out}");
    let again = events(&out);
    assert_eq!(names(&again), ["plan", "summary"], "{out}");
    assert_eq!(again[1]["dry_run"], false);
    snapshot(&r, "apply_json_nothing_to_do", &out);
}

#[test]
fn apply_json_dry_run_is_a_plan_then_a_summary() {
    let r = Repo::new(MANIFEST);
    let (code, out) = run_json(&r, &["apply", "--dry-run"]);
    assert_eq!(code, 0, "{out}");
    let ev = events(&out);
    assert_eq!(names(&ev), ["plan", "summary"], "{out}");
    assert_eq!(ev[1]["dry_run"], true);
    assert!(ev.iter().all(|e| e["schema"] == 1));
}

#[test]
fn apply_json_errors_are_one_error_event() {
    let r = Repo::new(MANIFEST);
    // No --yes under --json: refused before anything happens.
    let (code, out) = run_json(&r, &["apply"]);
    assert_eq!(code, 1);
    let ev = events(&out);
    assert_eq!(names(&ev), ["error"], "{out}");
    assert_eq!(ev[0]["exit_code"], 1);
    snapshot(&r, "apply_json_error", &out);

    // A bad manifest.
    r.write_manifest("[file.x]\npath = 3\n");
    let (code, out) = run_json(&r, &["apply", "--yes"]);
    assert_ne!(code, 0);
    assert_eq!(names(&events(&out)), ["error"], "{out}");
}

#[test]
fn apply_json_lock_refusal_is_an_error_event_with_exit_code_3() {
    let r = Repo::new(MANIFEST);
    r.sb.write_lock_config(r#"{"retry": {"attempts": 0}}"#);
    let layout = r.sb.layout();
    fs::create_dir_all(layout.state_dir()).unwrap();
    let id = stead_lib::machine::load_or_create_id(&layout).unwrap();
    let _guard = lock::acquire(
        &layout,
        &LockConfig::default(),
        &LockRequest::new("apply", &id),
        &mut |_| {},
    )
    .unwrap();
    let (code, out) = run_json(&r, &["apply", "--yes"]);
    assert_eq!(code, 3, "{out}");
    let ev = events(&out);
    assert_eq!(names(&ev), ["error"], "{out}");
    assert_eq!(ev[0]["exit_code"], 3);
    assert_eq!(ev[0]["schema"], 1);
}

#[test]
fn every_json_document_carries_schema_1() {
    let r = Repo::new(MANIFEST);
    r.ok(&["apply", "--yes"]);
    for args in [
        &["plan"][..],
        &["graph"],
        &["state", "version"],
        &["state", "history"],
        &["state", "lock-info"],
        &["state", "check-drift"],
        &["state", "journal"],
        &["state", "migrate"],
    ] {
        let (code, out) = run_json(&r, args);
        assert_eq!(code, 0, "{args:?}: {out}");
        let v: Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?} not JSON ({e}): {out}"));
        assert_eq!(v["schema"], 1, "{args:?}: {out}");
    }
    // An error is a document too.
    let sb = Sandbox::new();
    let (code, out, _) = sb.run(&["--json", "state", "version"]);
    assert_ne!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["schema"].as_u64(), v["error"]["exit_code"].as_i64()),
        (Some(1), Some(code as i64))
    );
}

#[test]
fn saved_plan_holds_no_sensitive_content_and_is_refused_when_the_source_changed() {
    let r = Repo::new(MANIFEST);
    r.ok(&["init"]);
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("saved-plan.json");
    let saved_arg = saved.to_str().unwrap();
    r.ok(&["plan", "--out", saved_arg]);
    assert!(!fs::read_to_string(&saved).unwrap().contains("hunter2"));

    // Applied as saved: the content is made again from the repo.
    r.ok(&["apply", "--yes", saved_arg]);
    assert_eq!(
        fs::read_to_string(r.path(".secret")).unwrap(),
        "password=hunter2\n"
    );

    // The source moves between plan and apply: the plan is refused.
    fs::write(r.path(".secret"), "by hand\n").unwrap();
    r.ok(&["plan", "--out", saved_arg]);
    r.write_manifest(&MANIFEST.replace("hunter2", "swordfish"));
    let (code, _, err) = r.run(&["apply", "--yes", saved_arg]);
    assert_ne!(code, 0);
    assert!(err.contains("sensitive file file.secret"), "{err}");
    assert_eq!(fs::read_to_string(r.path(".secret")).unwrap(), "by hand\n");
}

#[test]
fn document_shapes_snapshots() {
    let r = Repo::new(MANIFEST);
    // One job: the stream's order is fixed.
    let (code, out) = run_json(&r, &["apply", "--yes", "--jobs", "1"]);
    assert_eq!(code, 0, "{out}");
    snapshot(&r, "apply_json_stream", &out);
    fs::write(r.path(".plain"), "edited\n").unwrap();
    for (name, args) in [
        ("state_journal_json", &["state", "journal"][..]),
        ("check_drift_json", &["state", "check-drift"]),
        ("graph_json", &["graph"]),
        ("state_version_json", &["state", "version"]),
    ] {
        let (_, out) = run_json(&r, args);
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{name}: {e}: {out}"));
        assert_eq!(v["schema"], 1, "{name}");
        snapshot(&r, name, &out);
    }
}
