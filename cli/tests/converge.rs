//! End-to-end tests of converging: `plan`, `apply`, `graph` and
//! `state check-drift`, run as a user would, in temp homes with a config repo
//! written by each test.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{Repo, Sandbox};

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

fn mode_of(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/dotfiles")
}

#[test]
fn example_dotfiles_apply_on_a_fresh_machine_without_init_then_plan_is_empty() {
    let sb = Sandbox::new();
    let example = examples_dir();
    let config = example.to_str().unwrap();
    assert!(!sb.state_file().exists());

    let out = sb.ok(&["--config", config, "apply", "--yes"]);
    assert!(out.contains("Initialized stead state"), "{out}");
    assert!(out.contains("Apply complete"), "{out}");

    // What the example declares is there.
    let bashrc = sb.home().join(".bashrc");
    assert_eq!(read(&bashrc), read(&example.join("shell/bashrc")));
    let gitconfig = read(&sb.home().join(".gitconfig"));
    assert!(gitconfig.contains("[user]"), "{gitconfig}");
    let nvim = sb.home().join(".config/nvim");
    assert!(
        fs::symlink_metadata(&nvim)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(
        nvim.join("init.lua").is_file(),
        "the symlink resolves into the config repo"
    );

    // The record: resources, checksums, last_apply and an `apply` history entry.
    let state = sb.state_json();
    assert!(state["last_apply"].is_string());
    assert_eq!(
        state["config_path"]
            .as_str()
            .map(|s| s.ends_with("dotfiles")),
        Some(true)
    );
    let resources = state["resources"].as_object().unwrap();
    assert!(resources.contains_key("file.bashrc"), "{resources:?}");
    let checksum = state["checksums"]["~/.bashrc"].as_str().unwrap();
    assert_eq!(
        checksum,
        format!(
            "blake3:{}",
            blake3::hash(&fs::read(&bashrc).unwrap()).to_hex()
        )
    );
    let ops: Vec<&str> = state["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["operation"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["init", "apply"]);

    // The second plan (using the config recorded in state) is empty.
    let plan = sb.ok(&["plan"]);
    assert!(plan.contains("No changes"), "{plan}");
    let json = sb.json(&["plan"]);
    assert_eq!(json["empty"], true);

    // A second apply changes nothing and records nothing new but the apply.
    let before = fs::metadata(&bashrc).unwrap().modified().unwrap();
    sb.ok(&["apply", "--yes"]);
    assert_eq!(fs::metadata(&bashrc).unwrap().modified().unwrap(), before);
}

#[test]
fn plan_changes_nothing_and_takes_no_lock() {
    let r = Repo::new(
        r##"
[file.a]
path = "~/a.txt"
content = "a\n"
"##,
    );
    r.ok(&["init"]);
    let state_before = fs::read(r.sb.state_file()).unwrap();
    // A live lock held by someone else does not stop a plan.
    let layout = r.sb.layout();
    let id = stead_lib::machine::load_or_create_id(&layout).unwrap();
    let holder = stead_lib::lock::acquire(
        &layout,
        &stead_lib::lock::LockConfig::default(),
        &stead_lib::lock::LockRequest::new("test", &id),
        &mut |_| {},
    )
    .unwrap();
    assert!(r.sb.lock_file().exists());
    let out = r.ok(&["plan"]);
    assert!(out.contains("+ file.a"), "{out}");
    assert!(!r.path("a.txt").exists());
    assert_eq!(fs::read(r.sb.state_file()).unwrap(), state_before);
    drop(holder);
}

#[test]
fn sibling_dirs_made_together_still_show_a_line_each_and_journal_one_transaction() {
    let r = Repo::new(
        r##"
[dir.a]
path = "~/a"

[dir.b]
path = "~/b"
mode = "0700"

[file.f]
path = "~/a/f"
content = "f\n"
"##,
    );
    let out = r.ok(&["plan"]);
    assert!(out.contains("+ dir.a  ~/a\n"), "{out}");
    assert!(out.contains("+ dir.b  ~/b\n"), "{out}");
    assert!(!out.contains("one transaction"), "{out}");
    let json: serde_json::Value = serde_json::from_str(&r.ok(&["plan", "--json"])).unwrap();
    assert_eq!(
        json["transactions"],
        serde_json::json!([["dir.a", "dir.b"]])
    );
    r.ok(&["apply", "--yes"]);
    assert!(r.path("a").is_dir() && r.path("b").is_dir());
    assert_eq!(mode_of(&r.path("b")), 0o700);
    assert_eq!(read(&r.path("a/f")), "f\n");
    // One started record names both directories.
    let journal = read(&r.sb.state_dir().join("journal.jsonl"));
    let started: Vec<&str> = journal
        .lines()
        .filter(|l| l.contains("\"resource\":\"transaction\"") && l.contains("\"started\""))
        .collect();
    assert_eq!(started.len(), 1, "{journal}");
    assert!(
        started[0].contains("\"members\":[\"dir.a\",\"dir.b\"]"),
        "{journal}"
    );
    assert!(r.ok(&["plan"]).contains("No changes"));
}

#[test]
fn plan_output_shows_create_update_conflict_remove_and_counts() {
    let r = Repo::new(
        r##"
[vars]
name = "Ada"

[file.greeting]
path = "~/greeting.txt"
content = "hello ${vars.name}\nsecond line\n"

[file.script]
path = "~/bin/tool"
content = "#!/bin/sh\necho tool\n"
mode = "0755"

[file.old]
path = "~/old.txt"
content = "old\n"

[dir.conf]
path = "~/.config/app"
mode = "0700"

[symlink.link]
path = "~/link"
target = "~/greeting.txt"
"##,
    );
    r.ok(&["apply", "--yes"]);
    // Drift one file's content and another's mode, drop one declaration, and
    // put a user's file where a new resource wants to be.
    fs::write(r.path("greeting.txt"), "hello Bob\nsecond line\n").unwrap();
    fs::set_permissions(r.path("bin/tool"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(r.path(".bashrc"), "# mine\n").unwrap();
    r.write_manifest(
        r##"
[vars]
name = "Ada"

[file.greeting]
path = "~/greeting.txt"
content = "hello ${vars.name}\nsecond line\n"

[file.script]
path = "~/bin/tool"
content = "#!/bin/sh\necho tool\n"
mode = "0755"

[file.bashrc]
path = "~/.bashrc"
content = "# managed\n"

[file.new]
path = "~/new.txt"
content = "new\n"

[dir.conf]
path = "~/.config/app"
mode = "0700"

[symlink.link]
path = "~/link"
target = "~/greeting.txt"
"##,
    );
    let out = r.ok(&["plan"]);
    insta::assert_snapshot!("plan_mixed", r.redact(&out));

    let json = r.json(&["plan"]);
    let counts = &json["counts"];
    assert_eq!(
        (
            counts["create"].as_u64(),
            counts["update"].as_u64(),
            counts["remove"].as_u64()
        ),
        (Some(1), Some(2), Some(1))
    );
    assert_eq!(counts["conflict"], 1);
    assert_eq!(counts["unchanged"], 2);
}

#[test]
fn unowned_file_is_a_conflict_and_force_backs_it_up_before_replacing() {
    let r = Repo::new(
        r##"
[file.bashrc]
path = "~/.bashrc"
content = "# managed by stead\n"

[file.other]
path = "~/other.txt"
content = "other\n"
"##,
    );
    fs::write(r.path(".bashrc"), "# my own bashrc\n").unwrap();

    let plan = r.ok(&["plan"]);
    assert!(plan.contains("! file.bashrc  ~/.bashrc"), "{plan}");
    assert!(
        plan.contains("--force"),
        "the plan says how to resolve it: {plan}"
    );

    // Without --force the user's file is untouched; independent work goes on.
    let (code, out, _) = r.run(&["apply", "--yes"]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(read(&r.path(".bashrc")), "# my own bashrc\n");
    assert_eq!(read(&r.path("other.txt")), "other\n");
    assert!(out.contains("file.bashrc"), "{out}");
    assert!(r.sb.state_json()["resources"].get("file.bashrc").is_none());

    // With --force: backed up first, then replaced, and the output says where.
    let out = r.ok(&["apply", "--yes", "--force"]);
    assert_eq!(read(&r.path(".bashrc")), "# managed by stead\n");
    let backup_line = out
        .lines()
        .find(|l| l.contains("backed up the original to "))
        .unwrap_or_else(|| panic!("no backup line in:\n{out}"));
    let backup = PathBuf::from(
        backup_line
            .split("backed up the original to ")
            .nth(1)
            .unwrap()
            .trim(),
    );
    assert!(
        backup.starts_with(r.sb.state_dir().join("backups")),
        "{backup:?}"
    );
    assert_eq!(read(&backup), "# my own bashrc\n");
    // Now stead owns it: a later plan is empty and it is in the record.
    assert!(r.sb.state_json()["resources"].get("file.bashrc").is_some());
    assert!(r.ok(&["plan"]).contains("No changes"));
}

#[test]
fn removing_a_declaration_removes_only_what_stead_created() {
    let r = Repo::new(
        r##"
[dir.d]
path = "~/d"

[file.inside]
path = "~/d/managed.txt"
content = "managed\n"

[file.keep]
path = "~/keep.txt"
content = "keep\n"
"##,
    );
    r.ok(&["apply", "--yes"]);
    fs::write(r.path("d/user.txt"), "the user's own\n").unwrap();
    r.write_manifest(
        r##"
[file.keep]
path = "~/keep.txt"
content = "keep\n"
"##,
    );

    let plan = r.ok(&["plan"]);
    assert!(plan.contains("- file.inside  ~/d/managed.txt"), "{plan}");
    assert!(plan.contains("- dir.d  ~/d"), "{plan}");
    assert!(
        plan.contains("0 to create, 0 to update, 2 to remove, 1 unchanged"),
        "{plan}"
    );

    let out = r.ok(&["apply", "--yes"]);
    assert!(!r.path("d/managed.txt").exists());
    // The directory held a file stead never made: it stays, with that file.
    assert_eq!(read(&r.path("d/user.txt")), "the user's own\n");
    assert!(out.contains("dir.d no longer managed"), "{out}");
    assert_eq!(read(&r.path("keep.txt")), "keep\n");
    let state = r.sb.state_json();
    let resources = state["resources"].as_object().unwrap();
    assert_eq!(resources.keys().collect::<Vec<_>>(), ["file.keep"]);
    assert!(state["checksums"].get("~/d/managed.txt").is_none());
    assert!(r.ok(&["plan"]).contains("No changes"));

    // A file stead never created is never removed by dropping a declaration.
    fs::write(r.path("stray.txt"), "x").unwrap();
    r.write_manifest("");
    let out = r.ok(&["apply", "--yes"]);
    assert!(!r.path("keep.txt").exists(), "{out}");
    assert!(r.path("stray.txt").exists());
}

#[test]
fn ensure_absent_removes_a_file_stead_created() {
    let r = Repo::new("[file.a]\npath = \"~/a.txt\"\ncontent = \"a\"\n");
    r.ok(&["apply", "--yes"]);
    assert!(r.path("a.txt").exists());
    r.write_manifest("[file.a]\npath = \"~/a.txt\"\nensure = \"absent\"\n");
    let plan = r.ok(&["plan"]);
    assert!(plan.contains("- file.a"), "{plan}");
    r.ok(&["apply", "--yes"]);
    assert!(!r.path("a.txt").exists());
    assert!(r.ok(&["plan"]).contains("No changes"));
}

#[test]
fn a_failing_exec_skips_only_its_dependents() {
    let r = Repo::new(
        r##"
[exec.broken]
command = "echo 'it broke' >&2; exit 3"

[exec.dependent]
command = ["touch", "dependent-ran"]
after = ["exec.broken"]

[file.grandchild]
path = "~/grandchild.txt"
content = "x"
after = ["exec.dependent"]

[exec.independent]
command = "touch independent-ran"

[file.unrelated]
path = "~/unrelated.txt"
content = "fine\n"
"##,
    );
    let (code, out, err) = r.run(&["apply", "--yes"]);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    // Independent branches ran (exec's cwd defaults to the target home).
    assert!(r.path("independent-ran").exists());
    assert_eq!(read(&r.path("unrelated.txt")), "fine\n");
    // Dependents did not.
    assert!(!r.path("dependent-ran").exists());
    assert!(!r.path("grandchild.txt").exists());
    // The summary names the failure, its cause and the captured output, and
    // the skipped dependents.
    assert!(out.contains("Failed exec.broken"), "{out}");
    assert!(out.contains("exited with status 3"), "{out}");
    assert!(out.contains("it broke"), "{out}");
    assert!(
        out.contains("exec.dependent (exec.broken did not complete)"),
        "{out}"
    );
    assert!(out.contains("file.grandchild"), "{out}");
    // What succeeded is recorded.
    let state = r.sb.state_json();
    assert!(state["resources"].get("file.unrelated").is_some());
    assert!(state["resources"].get("file.grandchild").is_none());

    // --json: one event per resource, then a summary.
    let (code, out, _) = r.run(&["--json", "apply", "--yes"]);
    assert_eq!(code, 1);
    let events: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let of = |id: &str| {
        events
            .iter()
            .filter(|e| e["id"] == id && e["event"] != "started")
            .map(|e| e["event"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(of("exec.broken"), ["failed"]);
    assert_eq!(of("exec.dependent"), ["skipped"]);
    assert_eq!(of("file.grandchild"), ["skipped"]);
    assert_eq!(events.last().unwrap()["event"], "summary");
}

#[test]
fn exec_guards_decide_whether_it_runs() {
    let r = Repo::new(
        r##"
[exec.creates]
command = "echo run >> creates.log; touch marker"
creates = "~/marker"

[exec.unless]
command = "echo run >> unless.log"
unless = "test -e unless.log"

[exec.onlyif]
command = "echo run >> onlyif.log"
onlyif = "test -e go"
"##,
    );
    r.ok(&["apply", "--yes"]);
    r.ok(&["apply", "--yes"]);
    assert_eq!(read(&r.path("creates.log")), "run\n");
    assert_eq!(read(&r.path("unless.log")), "run\n");
    assert!(!r.path("onlyif.log").exists());
    fs::write(r.path("go"), "").unwrap();
    let plan = r.ok(&["plan"]);
    assert!(plan.contains("~ exec.onlyif"), "{plan}");
    assert!(!plan.contains("exec.creates"), "{plan}");
    r.ok(&["apply", "--yes"]);
    assert_eq!(read(&r.path("onlyif.log")), "run\n");
}

#[test]
fn exec_timeout_kills_the_command_and_fails() {
    let r = Repo::new(
        r##"
[exec.slow]
command = "sleep 30; touch finished"
timeout = "1s"
"##,
    );
    let started = std::time::Instant::now();
    let (code, out, _) = r.run(&["apply", "--yes"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("timed out") || out.contains("timeout"),
        "{out}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(25));
    assert!(!r.path("finished").exists());
}

#[test]
fn saved_plan_is_applied_and_refused_once_the_serial_moved() {
    let r = Repo::new("[file.a]\npath = \"~/a.txt\"\ncontent = \"a\\n\"\n");
    r.ok(&["init"]);
    let plan_file = r.sb.home().join("plan.json");
    let out = r.ok(&["plan", "--out", plan_file.to_str().unwrap()]);
    assert!(out.contains("Saved the plan"), "{out}");
    // Applying the saved plan does what it says.
    r.write_manifest("[file.a]\npath = \"~/a.txt\"\ncontent = \"changed since\\n\"\n");
    r.ok(&["apply", "--yes", plan_file.to_str().unwrap()]);
    assert_eq!(
        read(&r.path("a.txt")),
        "a\n",
        "the saved plan, not the new manifest"
    );

    // A plan saved before another apply is refused.
    let stale = r.sb.home().join("stale.json");
    r.ok(&["plan", "--out", stale.to_str().unwrap()]);
    r.ok(&["apply", "--yes"]);
    let serial = r.sb.state_json()["lineage"]["serial"].clone();
    let content = read(&r.path("a.txt"));
    let (code, out, err) = r.run(&["apply", "--yes", stale.to_str().unwrap()]);
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("serial"), "{err}");
    assert_eq!(read(&r.path("a.txt")), content);
    assert_eq!(r.sb.state_json()["lineage"]["serial"], serial);
}

#[test]
fn dry_run_shows_the_plan_and_changes_nothing() {
    let r = Repo::new("[file.a]\npath = \"~/a.txt\"\ncontent = \"a\\n\"\n");
    let out = r.ok(&["apply", "--dry-run"]);
    assert!(out.contains("+ file.a"), "{out}");
    assert!(!r.path("a.txt").exists());
}

#[test]
fn apply_without_yes_and_without_a_terminal_refuses() {
    let r = Repo::new("[file.a]\npath = \"~/a.txt\"\ncontent = \"a\\n\"\n");
    let (code, out, err) = r.run(&["apply"]);
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("--yes"), "{err}");
    assert!(!r.path("a.txt").exists());
}

#[test]
fn writes_do_not_follow_a_symlink_planted_at_the_target() {
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim.txt");
    fs::write(&victim, "precious\n").unwrap();
    let r = Repo::new("[file.a]\npath = \"~/a.txt\"\ncontent = \"managed\\n\"\n");
    r.ok(&["apply", "--yes"]);
    // Someone swaps the managed file for a symlink to another file.
    fs::remove_file(r.path("a.txt")).unwrap();
    std::os::unix::fs::symlink(&victim, r.path("a.txt")).unwrap();
    let _ = r.run(&["apply", "--yes", "--force"]);
    assert_eq!(read(&victim), "precious\n");
    let meta = fs::symlink_metadata(r.path("a.txt")).unwrap();
    assert!(
        meta.file_type().is_file(),
        "the link was replaced, not followed"
    );
    assert_eq!(read(&r.path("a.txt")), "managed\n");
}

#[test]
fn templates_render_vars_profile_vars_and_facts() {
    let r = Repo::new(
        r##"
[settings]
default_profile = "personal"

[vars]
editor = "nvim"

[profile.personal.vars]
email = "me@home.example"

[profile.work.vars]
email = "me@work.example"

[file.gitconfig]
path = "~/.gitconfig"
template = "gitconfig.j2"
mode = "0600"

[file.work_only]
path = "~/work.txt"
content = "work\n"
profiles = ["work"]
"##,
    );
    r.write_source(
        "gitconfig.j2",
        "[user]\n  email = {{ email }}\n[core]\n  editor = {{ editor }}\n# {{ home }}\n",
    );
    r.ok(&["apply", "--yes"]);
    let text = read(&r.path(".gitconfig"));
    assert!(text.contains("email = me@home.example"), "{text}");
    assert!(text.contains("editor = nvim"), "{text}");
    assert!(
        text.contains(&format!("# {}", r.home().display())),
        "{text}"
    );
    assert_eq!(mode_of(&r.path(".gitconfig")), 0o600);
    assert!(!r.path("work.txt").exists());

    // Switching profile: the template re-renders, the work-only file appears.
    let out = r.ok(&["apply", "--yes", "--profile", "work"]);
    assert!(
        read(&r.path(".gitconfig")).contains("me@work.example"),
        "{out}"
    );
    assert!(r.path("work.txt").exists());
    assert_eq!(r.sb.state_json()["active_profile"], "work");
    // The recorded profile is used next time.
    assert!(r.ok(&["plan"]).contains("No changes"));
}

#[test]
fn graph_prints_explicit_reference_and_auto_edges() {
    let r = Repo::new(
        r##"
[dir.conf]
path = "~/.config/app"

[file.conf]
path = "~/.config/app/app.conf"
content = "x"

[symlink.link]
path = "~/app.conf"
target = "~/.config/app/app.conf"

[exec.reload]
command = ["cat", "${file.conf}"]
after = ["noop.first"]

[noop.first]
before = ["file.conf"]
notify = ["exec.reload"]
"##,
    );
    let json = r.json(&["graph", "--format", "json"]);
    let mut edges: Vec<(String, String, String, bool)> = json["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["from"].as_str().unwrap().to_string(),
                e["to"].as_str().unwrap().to_string(),
                e["kind"].as_str().unwrap().to_string(),
                e["auto"].as_bool().unwrap(),
            )
        })
        .collect();
    edges.sort();
    let expect = |f: &str, t: &str, k: &str, auto: bool| (f.into(), t.into(), k.into(), auto);
    let mut expected = vec![
        expect("dir.conf", "file.conf", "parent_dir", true),
        expect("file.conf", "symlink.link", "symlink_target", true),
        expect("file.conf", "exec.reload", "reference", false),
        expect("noop.first", "exec.reload", "after", false),
        expect("noop.first", "exec.reload", "notify", false),
        expect("noop.first", "file.conf", "before", false),
    ];
    expected.sort();
    assert_eq!(edges, expected);

    let dot = r.ok(&["graph"]);
    assert!(dot.starts_with("digraph"), "{dot}");
    assert!(
        dot.contains(r#""dir.conf" -> "file.conf" [label="parent_dir", style=dashed];"#),
        "autoedges are dashed:\n{dot}"
    );
    assert!(
        dot.contains(r#""noop.first" -> "file.conf" [label="before"];"#),
        "{dot}"
    );
}

#[test]
fn check_drift_reports_modified_and_missing_files_with_exit_code_4() {
    let r = Repo::new(
        r##"
[file.a]
path = "~/a.txt"
content = "a\n"

[file.b]
path = "~/b.txt"
content = "b\n"

[file.c]
path = "~/c.txt"
content = "c\n"
"##,
    );
    r.ok(&["apply", "--yes"]);
    let out = r.ok(&["state", "check-drift"]);
    assert!(out.contains("No drift"), "{out}");

    fs::write(r.path("a.txt"), "edited\n").unwrap();
    fs::remove_file(r.path("b.txt")).unwrap();
    let (code, out, _) = r.run(&["state", "check-drift"]);
    assert_eq!(code, 4, "{out}");
    let expected_a = format!("blake3:{}", blake3::hash(b"a\n").to_hex());
    let actual_a = format!("blake3:{}", blake3::hash(b"edited\n").to_hex());
    assert!(out.starts_with("Checking for file drift...\n"), "{out}");
    assert!(
        out.contains(&format!(
            "Modified Files (1):\n  • ~/a.txt\n    Expected: {expected_a}\n    Actual:   {actual_a}\n"
        )),
        "{out}"
    );
    assert!(out.contains("Missing Files (1):\n  • ~/b.txt\n"), "{out}");
    assert!(
        out.contains("Tip: Run 'stead apply' to restore tracked files"),
        "{out}"
    );
    assert!(
        !out.contains("~/c.txt"),
        "unchanged files only with --all: {out}"
    );

    let (code, all, _) = r.run(&["state", "check-drift", "--all"]);
    assert_eq!(code, 4);
    assert!(all.contains("~/c.txt"), "{all}");

    let (code, json, _) = r.run(&["--json", "state", "check-drift"]);
    assert_eq!(code, 4);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["drift"], true);
    let statuses: Vec<(&str, &str)> = json["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["path"].as_str().unwrap(), f["status"].as_str().unwrap()))
        .collect();
    assert_eq!(statuses, [("~/a.txt", "modified"), ("~/b.txt", "missing")]);

    // apply restores drifted files: they show as `~` (and `+`) in the plan.
    let plan = r.ok(&["plan"]);
    assert!(plan.contains("~ file.a"), "{plan}");
    assert!(plan.contains("+ file.b"), "{plan}");
    r.ok(&["apply", "--yes"]);
    assert_eq!(read(&r.path("a.txt")), "a\n");
    assert_eq!(read(&r.path("b.txt")), "b\n");
    let (code, _, _) = r.run(&["state", "check-drift"]);
    assert_eq!(code, 0);
}

#[test]
fn check_drift_sees_mode_and_symlink_target_changes() {
    let r = Repo::new(
        r##"
[file.a]
path = "~/a.txt"
content = "a\n"
mode = "0600"

[symlink.l]
path = "~/l"
target = "~/a.txt"
"##,
    );
    r.ok(&["apply", "--yes"]);
    fs::set_permissions(r.path("a.txt"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::remove_file(r.path("l")).unwrap();
    std::os::unix::fs::symlink("/somewhere/else", r.path("l")).unwrap();
    let (code, out, _) = r.run(&["state", "check-drift"]);
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("~/a.txt"), "{out}");
    assert!(out.contains("~/l"), "{out}");
    r.ok(&["apply", "--yes"]);
    assert_eq!(mode_of(&r.path("a.txt")), 0o600);
    assert_eq!(fs::read_link(r.path("l")).unwrap(), r.path("a.txt"));
}

#[test]
fn load_errors_are_all_reported_with_file_line_column_and_a_caret() {
    let r = Repo::new(
        r##"[settings]
default_profile = "nope"

[file.a]
path = "~/a.txt"
content = "${vars.missing}"
colour = "blue"

[file.b]
path = "~/a.txt"
content = "x"
mode = "999"

[gadget.x]
path = "~/x"

[dir.d]
mode = "0755"

[noop.p]
after = ["noop.q"]

[noop.q]
after = ["noop.p"]
"##,
    );
    let (code, out, err) = r.run(&["plan"]);
    assert_eq!(code, 1, "{out}");
    let manifest = r.config.path().join("stead.toml");
    let m = manifest.display();
    for (line_col, what) in [
        ("2:19", "unknown profile `nope`"),
        ("6:12", "unknown variable `missing`"),
        ("7:1", "unknown key `colour` in [file.a]"),
        ("10:8", "file.b claims"),
        ("12:8", "bad mode \"999\""),
        ("14:2", "unknown kind `gadget`"),
        ("17:6", "dir.d is missing the required key `path`"),
        ("20:7", "dependency cycle: noop.p → noop.q → noop.p"),
    ] {
        let needle = format!("{m}:{line_col}: {what}");
        assert!(err.contains(&needle), "missing {needle:?} in:\n{err}");
    }
    assert!(err.contains("8 problems"), "{err}");
    // miette's caret rendering of one of them.
    assert!(err.contains(" 7 │ colour = \"blue\""), "{err}");
    assert!(err.contains("╰── unknown key"), "{err}");
    assert!(err.contains("Nothing was changed"), "{err}");
    assert!(
        !r.sb.state_file().exists(),
        "a failed plan initializes nothing"
    );
}

#[test]
fn a_missing_config_says_what_to_run() {
    let sb = Sandbox::new();
    let (code, _, err) = sb.run(&["plan"]);
    assert_eq!(code, 1);
    assert!(err.contains("--config"), "{err}");
}

#[test]
fn a_purge_never_touches_the_state_dir_or_the_config_repo_inside_it() {
    // (A purge of the home itself is refused: cli/tests/symlinks.rs.)
    let sb = Sandbox::new();
    let boxed = sb.home().join("box");
    let config = boxed.join("dotfiles");
    let state_dir = boxed.join("state");
    fs::create_dir_all(&config).unwrap();
    fs::write(
        config.join("stead.toml"),
        "[dir.box]\npath = \"~/box\"\npurge = true\n\n[file.rc]\npath = \"~/box/.rc\"\ncontent = \"x\\n\"\n",
    )
    .unwrap();
    fs::write(boxed.join("stray"), "user data\n").unwrap();
    let args = |rest: &[&'static str]| -> Vec<String> {
        let mut v = vec![
            "--state-dir".to_string(),
            state_dir.display().to_string(),
            "--config".to_string(),
            config.display().to_string(),
        ];
        v.extend(rest.iter().map(|s| s.to_string()));
        v
    };
    let apply = args(&["apply", "--yes"]);
    let apply: Vec<&str> = apply.iter().map(String::as_str).collect();
    let out = sb.ok(&apply);
    assert!(out.contains("purge 1 unmanaged: ~/box/stray"), "{out}");
    assert!(!boxed.join("stray").exists());
    assert!(config.join("stead.toml").exists());
    assert!(state_dir.join("state.json").exists());
    // The purged file was backed up, once, not into a copy of itself.
    let line = out
        .lines()
        .find(|l| l.contains("backed up the original to "))
        .unwrap();
    let backup = PathBuf::from(
        line.split("backed up the original to ")
            .nth(1)
            .unwrap()
            .trim(),
    );
    assert_eq!(read(&backup), "user data\n");
    let plan = args(&["plan"]);
    let plan: Vec<&str> = plan.iter().map(String::as_str).collect();
    assert!(sb.ok(&plan).contains("No changes"));
}

#[test]
fn exec_guards_wait_for_a_cwd_created_in_the_same_run() {
    let r = Repo::new(
        r#"
[dir.work]
path = "~/work"

[exec.setup]
command = "echo ran >> log"
cwd = "~/work"
unless = "test -f done"
after = ["dir.work"]

[exec.mark]
command = "touch done"
cwd = "~/work"
after = ["exec.setup"]
"#,
    );
    let plan = r.ok(&["plan"]);
    assert!(plan.contains("guards checked when it runs"), "{plan}");
    r.ok(&["apply", "--yes"]);
    assert_eq!(read(&r.path("work/log")), "ran\n");
    // Now the guard can run at plan time and says there is nothing to do.
    let plan = r.ok(&["plan"]);
    assert!(!plan.contains("exec.setup"), "{plan}");
    r.ok(&["apply", "--yes"]);
    assert_eq!(read(&r.path("work/log")), "ran\n");
}

#[test]
fn a_guard_is_checked_again_right_before_its_command_runs() {
    // Planned to run (the marker is missing at plan time), but an earlier
    // resource in the same run creates the marker: the command must not run.
    let r = Repo::new(
        r#"
[file.marker]
path = "~/marker"
content = "x"

[exec.once]
command = "echo ran >> log"
unless = "test -f marker"
after = ["file.marker"]
"#,
    );
    let plan = r.ok(&["plan"]);
    assert!(plan.contains("~ exec.once"), "{plan}");
    let out = r.ok(&["apply", "--yes"]);
    assert!(!r.path("log").exists(), "{out}");
    assert!(
        out.contains("exec.once not run (`unless` succeeded)"),
        "{out}"
    );
}

#[test]
fn a_path_handed_to_a_renamed_resource_stays_owned_when_the_new_one_fails() {
    let r = Repo::new("[file.old]\npath = \"~/x\"\ncontent = \"one\\n\"\n");
    r.ok(&["apply", "--yes"]);
    r.write_manifest(
        r#"
[exec.broken]
command = "exit 1"

[file.new]
path = "~/x"
content = "two\n"
after = ["exec.broken"]
"#,
    );
    let (code, out, _) = r.run(&["apply", "--yes"]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(read(&r.path("x")), "one\n");
    // stead still owns ~/x: no conflict once the cause is fixed.
    r.write_manifest("[file.new]\npath = \"~/x\"\ncontent = \"two\\n\"\n");
    let plan = r.ok(&["plan"]);
    assert!(!plan.contains('!'), "{plan}");
    r.ok(&["apply", "--yes"]);
    assert_eq!(read(&r.path("x")), "two\n");
    let state = r.sb.state_json();
    let ids: Vec<&String> = state["resources"].as_object().unwrap().keys().collect();
    assert_eq!(ids, ["file.new"]);
}

#[test]
fn an_apply_with_nothing_to_change_still_records_adoption_and_the_profile() {
    let r = Repo::new(
        r#"
[profile.a.vars]
[profile.b.vars]

[file.x]
path = "~/x"
content = "same\n"
"#,
    );
    fs::write(r.path("x"), "same\n").unwrap();
    let out = r.ok(&["apply", "--yes", "--profile", "b"]);
    assert!(out.contains("No changes"), "{out}");
    let state = r.sb.state_json();
    assert!(
        state["resources"].get("file.x").is_some(),
        "adopted: {state}"
    );
    assert_eq!(state["active_profile"], "b");
    assert!(state["config_path"].is_string());
    // Once adopted, dropping the declaration removes it like anything stead made.
    r.write_manifest("[profile.a.vars]\n[profile.b.vars]\n");
    let plan = r.ok(&["plan"]);
    assert!(plan.contains("- file.x"), "{plan}");
    // And an apply that has no news writes nothing.
    r.write_manifest(
        "[profile.a.vars]\n[profile.b.vars]\n[file.x]\npath = \"~/x\"\ncontent = \"same\\n\"\n",
    );
    let serial = r.sb.state_json()["lineage"]["serial"].clone();
    r.ok(&["apply", "--yes"]);
    assert_eq!(r.sb.state_json()["lineage"]["serial"], serial);
}
