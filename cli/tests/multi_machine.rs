//! Many machines over git, end to end: a real bare remote and two or three
//! temp HOMEs as machines, each with its own clone and state dir.
//!
//! Git runs isolated from the user's config (HOME is the sandbox, system
//! config off, identity from the environment), and the remote is a local
//! path, so nothing leaves the machine.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::Sandbox;
// The same config as the scenarios run on both backends (fleet_backends.rs).
use common::fleet::MANIFEST;
use common::git_env;
use common::remote::{Machine, Remote as World, hybrid, ids};
use serde_json::Value;

/// A bare remote whose default branch is `branch`, seeded with the config.
impl World {
    fn new(branch: &str) -> World {
        World::seeded(
            branch,
            &[
                ("stead.toml", MANIFEST),
                ("bashrc", "# shared bashrc\n"),
                ("greeting.j2", "hello from {{ vars.who }}\n"),
            ],
        )
    }

    /// The shared record on the remote branch.
    fn remote_record(&self, branch: &str) -> Value {
        self.record_on(branch)
    }

    /// A new machine: its own HOME, clone at `<home>/dots`, joined.
    fn machine(&self, profile: &str) -> Machine {
        self.join(Some(profile))
    }

    /// Edits the shared record in a separate plain clone and pushes it, as
    /// someone editing the repo by hand would.
    fn edit_remote_record(&self, edit: impl FnOnce(&mut Value)) {
        let name = format!("editor-{}", uuid_like());
        self.edit_record(&name, "edit the record by hand", &[], edit);
    }
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::SeqCst).to_string()
}

impl Machine {
    fn record(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.clone_dir().join(".stead/state.json")).unwrap())
            .unwrap()
    }

    fn history_ids(&self) -> Vec<String> {
        ids(&self.state()["history"])
    }

    /// Something that writes the local state: a drifted file restored.
    fn local_write(&self) {
        std::fs::write(self.sb.home().join(".bashrc"), "edited by hand\n").unwrap();
        self.ok(&["apply", "--yes"]);
    }
}

/// `in commit 6fb1e62 (2026-12-03)` (who changed an entry) made stable.
fn redact_commits(text: &str) -> String {
    const AT: &str = " in commit ";
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(AT) {
        out.push_str(&rest[..i]);
        out.push_str(" in commit <commit> (<date>)");
        let after = &rest[i + AT.len()..];
        rest = after.find(')').map_or("", |e| &after[e + 1..]);
    }
    out.push_str(rest);
    out
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn first_machine_starts_the_lineage_and_sync_pushes_it_on_main_master_and_trunk() {
    for branch in ["main", "master", "trunk"] {
        let w = World::new(branch);
        let a = w.machine("personal");
        let state = a.state();
        assert_eq!(state["repo_url"], w.url());
        assert_eq!(state["active_profile"], "personal");
        // The merge driver is installed: attributes committed, driver configured.
        let attrs = std::fs::read_to_string(a.clone_dir().join(".gitattributes")).unwrap();
        assert!(attrs.contains(".stead/state.json merge=stead"), "{attrs}");
        let driver = w.git(&a.clone_dir(), &["config", "merge.stead.driver"]);
        assert!(driver.ends_with("__merge-driver %O %A %B %P"), "{driver}");

        let out = a.ok(&["sync"]);
        assert!(
            out.starts_with("✓ Git pull completed successfully!\n"),
            "{out}"
        );
        assert!(out.contains(&format!("to origin/{branch}")), "{out}");
        assert_eq!(
            std::fs::read_to_string(a.sb.home().join(".greeting")).unwrap(),
            "hello from home\n"
        );
        let remote = w.remote_record(branch);
        assert_eq!(remote["lineage"]["id"], a.state()["lineage"]["id"]);
        assert_eq!(remote["lineage"]["serial"], a.state()["lineage"]["serial"]);
        assert_eq!(remote["lineage"]["machines"], serde_json::json!([a.id()]));
        // A second sync has nothing to do.
        let again = a.ok(&["sync"]);
        assert!(again.contains("Nothing to push"), "{again}");
    }
}

#[test]
fn init_repo_lineage_joins_only_the_lineage_named() {
    let w = World::new("main");
    let a = w.machine("personal");
    a.ok(&["sync"]);
    let lineage = a.state()["lineage"]["id"].as_str().unwrap().to_string();
    let b = Machine { sb: Sandbox::new() };
    let clone = b.clone_dir();
    let init = |id: &str| {
        b.run(&[
            "init",
            "--repo",
            w.url(),
            "--path",
            clone.to_str().unwrap(),
            "--lineage",
            id,
        ])
    };
    let (code, out, err) = init("lineage-not-this-one");
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&format!(
            "holds lineage {lineage}, not lineage-not-this-one"
        )),
        "{err}"
    );
    assert!(!b.sb.state_file().exists(), "b has no state");
    let (code, out, err) = init(&lineage);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(b.state()["lineage"]["id"], Value::from(lineage));
}

#[test]
fn a_second_machine_joins_and_both_see_it_after_a_sync() {
    let w = World::new("main");
    let a = w.machine("personal");
    a.ok(&["sync"]);
    let b = w.machine("work");
    let joined = b.state();
    assert_eq!(joined["lineage"]["id"], a.state()["lineage"]["id"]);
    let members = joined["lineage"]["machines"].as_array().unwrap().clone();
    assert!(members.contains(&Value::from(a.id())), "{members:?}");
    assert!(members.contains(&Value::from(b.id())), "{members:?}");
    b.ok(&["sync"]);
    a.ok(&["sync"]);

    for m in [&a, &b] {
        let state = m.state();
        let members: Vec<_> = state["lineage"]["machines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        assert_eq!(sorted(members), sorted(vec![a.id(), b.id()]));
        let history = m.json(&["state", "history"]);
        let by: Vec<_> = history["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["machine_id"].as_str().unwrap().to_string())
            .collect();
        assert!(by.contains(&a.id()) && by.contains(&b.id()), "{by:?}");
    }
    assert_eq!(
        std::fs::read_to_string(b.sb.home().join(".greeting")).unwrap(),
        "hello from office\n"
    );
    assert_eq!(
        a.state()["lineage"]["serial"],
        b.state()["lineage"]["serial"]
    );
    assert_eq!(a.record(), b.record());
    assert_eq!(a.history_ids(), b.history_ids());
}

/// A laptop (`personal`) and a desktop (`work`) that joined and synced,
/// both up to date with the remote.
fn two_synced(w: &World) -> (Machine, Machine) {
    common::remote::two_synced(|| w.machine("personal"), || w.machine("work"))
}

/// Two machines that wrote offline and committed, neither synced since:
/// (a, b, the serial of their common base).
fn diverged(w: &World) -> (Machine, Machine, u64) {
    let (a, b) = two_synced(w);
    let base = a.state()["lineage"]["serial"].as_u64().unwrap();
    for m in [&a, &b] {
        m.local_write();
        m.ok(&["commit", "-m", "offline work"]);
    }
    (a, b, base)
}

#[test]
fn offline_work_on_both_machines_diverges_and_sync_merges_every_entry_once() {
    let w = World::new("master");
    let (a, b, base) = diverged(&w);
    let (a_serial, b_serial) = (
        a.state()["lineage"]["serial"].as_u64().unwrap(),
        b.state()["lineage"]["serial"].as_u64().unwrap(),
    );
    let a_hist = a.history_ids();
    let b_hist = b.history_ids();
    a.ok(&["sync"]);
    let pushed = w.remote_record("master")["lineage"]["serial"]
        .as_u64()
        .unwrap();

    // b sees the divergence with the right serials and common parent.
    let check = b.run(&["state", "check-conflicts"]);
    assert_eq!(check.0, 4, "{check:?}");
    let line = format!(
        "1. 🔴 State diverged: local serial {b_serial} vs remote serial {pushed} (common parent: {base})"
    );
    assert!(check.1.contains(&line), "{}", check.1);
    assert!(
        check.1.contains("stead state resolve --use-local"),
        "{}",
        check.1
    );
    assert!(
        check.1.contains("stead state resolve --manual"),
        "{}",
        check.1
    );
    let json = b.json_code(&["state", "check-conflicts"], 4);
    assert_eq!(json["conflicts"][0]["kind"], "serial_divergence");
    assert_eq!(json["conflicts"][0]["severity"], "high");
    assert_eq!(json["conflicts"][0]["base"], base);
    assert!(a_serial > base);

    let out = b.ok(&["sync"]);
    assert!(out.contains(&line), "{out}");
    assert!(out.contains("Attempting automatic merge...\n✓ States merged successfully\n  - Combined 2 machine(s)\n  - Resolved 1 conflict(s)"), "{out}");
    let merged = b.record();
    let merged_ids = ids(&merged["history"]);
    for id in a_hist.iter().chain(&b_hist) {
        assert_eq!(
            merged_ids.iter().filter(|m| *m == id).count(),
            1,
            "entry {id} must be in the merge exactly once"
        );
    }
    let merged_serial = merged["lineage"]["serial"].as_u64().unwrap();
    assert!(merged_serial > pushed && merged_serial > b_serial);
    // The git merge of the record went through the driver: valid JSON, no markers.
    let text = std::fs::read_to_string(b.clone_dir().join(".stead/state.json")).unwrap();
    assert!(!text.contains("<<<<<<<"), "{text}");

    a.ok(&["sync"]);
    assert_eq!(a.record(), b.record());
    assert_eq!(a.history_ids(), b.history_ids());
    assert_eq!(
        a.state()["lineage"]["serial"],
        b.state()["lineage"]["serial"]
    );
}

impl Machine {
    fn json_code(&self, args: &[&str], code: i32) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let (got, out, err) = self.run(&all);
        assert_eq!(got, code, "{out}\n{err}");
        serde_json::from_str(&out).unwrap()
    }
}

#[test]
fn git_merges_the_record_through_the_driver_without_conflict_markers() {
    let w = World::new("main");
    let (a, b, _) = diverged(&w);
    a.ok(&["sync"]);
    // Plain git, no stead: both sides edited .stead/state.json.
    w.git(&b.clone_dir(), &["fetch", "-q"]);
    w.git(&b.clone_dir(), &["merge", "-q", "--no-edit", "origin/main"]);
    let text = std::fs::read_to_string(b.clone_dir().join(".stead/state.json")).unwrap();
    assert!(
        !text.contains("<<<<<<<") && !text.contains(">>>>>>>"),
        "{text}"
    );
    let merged: Value = serde_json::from_str(&text).unwrap();
    let theirs = w.remote_record("main");
    let ours_before: Value =
        serde_json::from_str(&w.git(&b.clone_dir(), &["show", "HEAD^1:.stead/state.json"]))
            .unwrap();
    for side in [&theirs, &ours_before] {
        for id in ids(&side["history"]) {
            assert!(ids(&merged["history"]).contains(&id), "lost {id}");
        }
    }
    let top = theirs["lineage"]["serial"]
        .as_u64()
        .unwrap()
        .max(ours_before["lineage"]["serial"].as_u64().unwrap());
    assert_eq!(merged["lineage"]["serial"].as_u64().unwrap(), top + 1);
    // And stead takes it from there.
    b.ok(&["sync"]);
    a.ok(&["sync"]);
    assert_eq!(a.record(), b.record());
}

#[test]
fn use_local_then_push_and_use_remote_then_apply_each_end_in_agreement() {
    // --use-local on b, then push; a takes it.
    let w = World::new("trunk");
    let (a, b, _) = diverged(&w);
    a.ok(&["sync"]);
    let out = b.ok(&["state", "resolve", "--use-local"]);
    assert!(
        out.starts_with("✓ Resolved with --use-local: serial "),
        "{out}"
    );
    let out = b.ok(&["sync"]);
    assert!(out.contains("Pushed the shared record"), "{out}");
    a.ok(&["sync"]);
    assert_eq!(a.record(), b.record());
    assert_eq!(a.history_ids(), b.history_ids());
    assert_eq!(b.state()["active_profile"], "work");

    // --use-remote on a whose entry was changed remotely, then apply.
    let w = World::new("trunk");
    let (a, b, _) = diverged(&w);
    b.ok(&["sync"]);
    let a_id = a.id();
    w.edit_remote_record(|r| {
        r["machines"][&a_id]["active_profile"] = "work".into();
    });
    b.ok(&["sync"]);
    let out = a.ok(&["state", "resolve", "--use-remote"]);
    assert!(out.contains("This machine: profile work"), "{out}");
    assert_eq!(a.state()["active_profile"], "work");
    a.ok(&["apply", "--yes"]);
    assert_eq!(
        std::fs::read_to_string(a.sb.home().join(".greeting")).unwrap(),
        "hello from office\n"
    );
    a.ok(&["sync"]);
    b.ok(&["sync"]);
    assert_eq!(a.record(), b.record());
    assert_eq!(a.history_ids(), b.history_ids());
}

#[test]
fn profile_and_path_mismatch_are_labelled_and_stop_sync_before_anything_changes() {
    let w = World::new("main");
    let a = w.machine("personal");
    a.ok(&["sync"]);
    let a_id = a.id();
    w.edit_remote_record(|r| {
        r["machines"][&a_id]["active_profile"] = "work".into();
        r["machines"][&a_id]["config_path"] = "/elsewhere".into();
    });
    // This machine changed its profile too: the merge cannot decide.
    let out = a.ok(&["init", "--profile", "laptop"]);
    assert!(out.contains("profile: personal → laptop"), "{out}");
    std::fs::write(a.sb.home().join(".bashrc"), "drifted\n").unwrap();
    let (code, out, _) = a.run(&["state", "check-conflicts"]);
    assert_eq!(code, 4, "{out}");
    let clone = a.clone_dir();
    assert!(
        out.contains(&format!(
            "🔴 Config path mismatch: local '{}' vs remote '/elsewhere'",
            clone.canonicalize().unwrap().display()
        )),
        "{out}"
    );
    assert!(
        out.contains("🟡 Profile mismatch: local 'laptop' vs remote 'work'"),
        "{out}"
    );
    assert!(out.contains("🟢 File '.bashrc' has been modified"), "{out}");
    let shown = out.replace(
        &clone.canonicalize().unwrap().display().to_string(),
        "<clone>",
    );
    insta::assert_snapshot!("check_conflicts_mismatch", redact_commits(&shown));

    let head = w.git(&clone, &["rev-parse", "HEAD"]);
    let state_before = std::fs::read(a.sb.state_file()).unwrap();
    let (code, out, _) = a.run(&["sync"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("The automatic merge cannot decide 2 of them"),
        "{out}"
    );
    assert!(
        out.contains("Nothing was merged, applied or pushed."),
        "{out}"
    );
    assert!(out.contains("stead state resolve --merge"), "{out}");
    assert_eq!(w.git(&clone, &["rev-parse", "HEAD"]), head);
    assert_eq!(std::fs::read(a.sb.state_file()).unwrap(), state_before);
    assert_eq!(
        std::fs::read_to_string(a.sb.home().join(".bashrc")).unwrap(),
        "drifted\n",
        "nothing applied"
    );
}

#[test]
fn drift_alone_is_low_and_sync_restores_the_file_with_a_backup() {
    let w = World::new("main");
    let a = w.machine("personal");
    a.ok(&["sync"]);
    std::fs::write(a.sb.home().join(".bashrc"), "my edit\n").unwrap();
    let json = a.json_code(&["state", "check-conflicts"], 4);
    assert_eq!(json["conflicts"][0]["kind"], "file_drift");
    assert_eq!(json["conflicts"][0]["severity"], "low");
    assert_eq!(json["conflicts"][0]["automatic"], true);
    let out = a.ok(&["sync"]);
    assert!(out.contains("🟢 File '.bashrc' has been modified"), "{out}");
    assert!(out.contains("backed up the original to"), "{out}");
    assert_eq!(
        std::fs::read_to_string(a.sb.home().join(".bashrc")).unwrap(),
        "# shared bashrc\n"
    );
}

#[test]
fn commit_accepts_a_drifted_file_into_its_source_but_not_a_template() {
    let w = World::new("main");
    let a = w.machine("personal");
    a.ok(&["sync"]);
    std::fs::write(a.sb.home().join(".bashrc"), "# better bashrc\n").unwrap();
    std::fs::write(a.sb.home().join(".greeting"), "hi\n").unwrap();
    let (code, _, err) = a.run(&["commit", "-m", "take both", "~/.bashrc", "~/.greeting"]);
    assert_eq!(code, 1);
    assert!(err.contains("~/.greeting cannot be copied back"), "{err}");
    assert!(err.contains("template"), "{err}");
    assert_eq!(
        std::fs::read_to_string(a.clone_dir().join("bashrc")).unwrap(),
        "# shared bashrc\n",
        "one bad name copies nothing"
    );
    let out = a.ok(&["commit", "-m", "better bashrc", "--push", "~/.bashrc"]);
    assert!(
        out.contains("Accepted ~/.bashrc into the repo (bashrc)"),
        "{out}"
    );
    assert!(out.contains("Pushed to origin/main"), "{out}");
    let shown = w.git(&w.remote, &["show", "main:bashrc"]);
    assert_eq!(shown, "# better bashrc");
    assert_eq!(
        w.git(&w.remote, &["log", "-1", "--format=%s", "main"]),
        "better bashrc"
    );
    let (code, out, _) = a.run(&["state", "check-drift"]);
    assert_eq!(code, 4, "the template still drifted: {out}");
    assert!(
        !out.contains(".bashrc"),
        "accepted, so no longer drifted: {out}"
    );
}

#[test]
fn state_diff_names_the_fields_that_differ() {
    let w = World::new("main");
    let (a, b, _) = diverged(&w);
    a.ok(&["sync"]);
    let json = b.json(&["state", "diff"]);
    let fields: Vec<_> = json["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap().to_string())
        .collect();
    assert!(
        fields
            .iter()
            .any(|f| f == &format!("machines.{}.last_apply", a.id())),
        "{fields:?}"
    );
    let only_remote = json["differences"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["field"].as_str().unwrap().starts_with("history[") && d["local"].is_null())
        .count();
    assert!(only_remote >= 1, "{json}");
    let out = b.ok(&["state", "diff"]);
    assert!(out.starts_with("Local record (serial "), "{out}");
    assert!(out.contains("only remote history["), "{out}");
}

#[test]
fn merge_strategy_and_an_invalid_manual_edit() {
    let w = World::new("main");
    let (a, b, _) = diverged(&w);
    a.ok(&["sync"]);
    let before_head = w.git(&b.clone_dir(), &["rev-parse", "HEAD"]);
    let before_state = std::fs::read(b.sb.state_file()).unwrap();
    // An editor that breaks the JSON: nothing changes.
    let editor = b.sb.home().join("break.sh");
    std::fs::write(&editor, "#!/bin/sh\necho '{ not json' > \"$1\"\n").unwrap();
    let (code, _, err) = b
        .cmd(&["state", "resolve", "--manual"])
        .env("EDITOR", format!("sh {}", editor.display()))
        .env_remove("VISUAL")
        .output()
        .map(|o| {
            (
                o.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&o.stdout).into_owned(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        })
        .unwrap();
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("the edited record is invalid: ")
            && err.contains("Nothing was changed. Run 'stead state resolve --manual' again."),
        "{err}"
    );
    assert!(err.contains("line 1 column"), "{err}");
    assert_eq!(w.git(&b.clone_dir(), &["rev-parse", "HEAD"]), before_head);
    assert_eq!(std::fs::read(b.sb.state_file()).unwrap(), before_state);

    // An editor that drops a history entry: refused too. The proposal is
    // saved by a first editor that then fails (changing nothing), edited
    // here, and put back by a second editor.
    let saved = b.sb.home().join("proposal.json");
    let out = b
        .cmd(&["state", "resolve", "--manual"])
        .env(
            "EDITOR",
            format!("sh -c 'cp \"$1\" {}; exit 1' sh", saved.display()),
        )
        .env_remove("VISUAL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing was changed"));
    let mut proposal: Value = serde_json::from_slice(&std::fs::read(&saved).unwrap()).unwrap();
    proposal["history"].as_array_mut().unwrap().remove(0);
    let edited = b.sb.home().join("edited.json");
    std::fs::write(&edited, serde_json::to_vec_pretty(&proposal).unwrap()).unwrap();
    let out = b
        .cmd(&["state", "resolve", "--manual"])
        .env("EDITOR", format!("cp {}", edited.display()))
        .env_remove("VISUAL")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("it drops 1 history entries"), "{err}");
    assert_eq!(std::fs::read(b.sb.state_file()).unwrap(), before_state);
    assert_eq!(w.git(&b.clone_dir(), &["rev-parse", "HEAD"]), before_head);

    // An editor that keeps the proposal: installed.
    let out = b
        .cmd(&["state", "resolve", "--manual"])
        .env("EDITOR", "true")
        .env_remove("VISUAL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    b.ok(&["sync"]);
    a.ok(&["sync"]);
    assert_eq!(a.record(), b.record());

    // --merge on a fresh divergence keeps every entry of both sides.
    a.local_write();
    a.ok(&["commit", "-m", "a again", "--push"]);
    b.local_write();
    let both: Vec<String> = a.history_ids().into_iter().chain(b.history_ids()).collect();
    b.ok(&["state", "resolve", "--merge"]);
    let merged = b.history_ids();
    for id in both {
        assert!(merged.contains(&id), "lost {id}");
    }
}

#[test]
fn unreachable_remote_sync_fails_clearly_and_keeps_the_record() {
    let w = World::new("main");
    let a = w.machine("personal");
    a.ok(&["sync"]);
    w.git(
        &a.clone_dir(),
        &["remote", "set-url", "origin", "/nonexistent/remote.git"],
    );
    let before = std::fs::read(a.sb.state_file()).unwrap();
    let (code, _, err) = a.run(&["sync"]);
    assert_eq!(code, 1);
    assert!(err.contains("Cannot reach remote repository: "), "{err}");
    assert!(err.contains("this machine's record is safe here"), "{err}");
    assert_eq!(std::fs::read(a.sb.state_file()).unwrap(), before);
    // check-conflicts still answers from what was last fetched.
    let (code, _, err) = a.run(&["state", "check-conflicts"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("Cannot reach remote repository"), "{err}");
}

// ---- hybrid lock ----

/// A manifest whose exec waits (at most a minute, so a failing test cannot
/// hang) until `<dir>/release` exists, after touching `<dir>/started`.
fn waiting_manifest(dir: &Path) -> String {
    common::waiting_manifest(
        r#"
[profile.personal.vars]
who = "home"

[file.bashrc]
path = "~/.bashrc"
source = "bashrc"
"#,
        dir,
    )
}

/// Starts `apply` on `m` and waits until its exec runs (it then holds both
/// locks until `<dir>/release` exists).
fn hold_with_apply(m: &Machine, dir: &Path) -> std::process::Child {
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("stead"))
        .env("HOME", m.sb.home())
        .env("NO_COLOR", "1")
        .envs(git_env())
        .args(["--home", m.sb.home().to_str().unwrap(), "apply", "--yes"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
        .spawn()
        .unwrap();
    let started = dir.join("started");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !started.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "apply never started its exec"
        );
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "apply ended early: {status}\n{}",
                std::fs::read_to_string(dir.join("stderr")).unwrap_or_default()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child
}

fn remote_lock_ref(w: &World) -> Option<String> {
    let out = w.git(&w.remote, &["for-each-ref", "refs/stead/"]);
    (!out.is_empty()).then_some(out)
}

#[test]
fn hybrid_lock_refuses_with_the_holders_details_then_is_broken_after_the_timeout() {
    let (w, a, b, signals) = hybrid_world();

    let mut holder = hold_with_apply(&a, signals.path());
    let lock_ref = remote_lock_ref(&w);
    assert!(lock_ref.is_some(), "a holds refs/stead/lock on the remote");

    // b is refused with a's details, exit 3.
    let (code, _, err) = b.run(&["apply", "--yes"]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("State is currently locked on remote 'origin' (refs/stead/lock)"),
        "{err}"
    );
    assert!(err.contains("Operation: apply"), "{err}");
    assert!(err.contains(&format!("PID: {}", holder.id())), "{err}");
    assert!(err.contains(&format!("({}...)", &a.id()[..8])), "{err}");
    let info = b.json(&["state", "lock-info"]);
    assert_eq!(info["remote_lock"]["status"], "held");
    assert_eq!(info["remote_lock"]["holder"]["machine"]["pid"], holder.id());

    // a dies without releasing: the remote lock stays.
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_eq!(remote_lock_ref(&w), lock_ref);
    let (code, _, _) = b.run(&["apply", "--yes"]);
    assert_eq!(code, 3, "not older than the timeout yet");

    // Once it is older than b's timeout, b breaks it with a notice.
    hybrid(&b, 1);
    let created = info["remote_lock"]["holder"]["created_at"]
        .as_str()
        .unwrap();
    let created = chrono::DateTime::parse_from_rfc3339(created).unwrap();
    while chrono::Utc::now() - created.with_timezone(&chrono::Utc)
        < chrono::Duration::milliseconds(1100)
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::fs::write(signals.path().join("release"), "").unwrap();
    let (code, _, err) = b.run(&["apply", "--yes"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("Broke the remote lock on 'origin' (apply by PID"),
        "{err}"
    );
    assert!(err.contains("older than the timeout (1 s)"), "{err}");
    assert_eq!(remote_lock_ref(&w), None, "b released its own lock");
}

#[test]
fn hybrid_lock_with_an_unreachable_remote_warns_and_goes_on_locally() {
    let w = World::new("main");
    let a = w.machine("personal");
    a.ok(&["sync"]);
    hybrid(&a, 300);
    w.git(
        &a.clone_dir(),
        &["remote", "set-url", "origin", "/nonexistent/remote.git"],
    );
    let (code, _, err) = a.run(&["apply", "--yes"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("⚠️  Warning: Cannot reach remote repository: ")
            && err.contains("\nProceeding with local-only lock.\nRemember to sync when connection is restored.\n"),
        "{err}"
    );
}

#[test]
fn hybrid_lock_refuses_when_the_remote_record_moved_since_the_last_sync() {
    let w = World::new("main");
    let a = w.machine("personal");
    a.ok(&["sync"]);
    let b = w.machine("work");
    b.ok(&["sync"]);
    hybrid(&a, 300);
    let before = std::fs::read(a.sb.state_file()).unwrap();
    let (code, _, err) = a.run(&["apply", "--yes"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("has changed since this machine last synced"),
        "{err}"
    );
    assert!(err.contains("Run 'stead sync' first"), "{err}");
    assert_eq!(std::fs::read(a.sb.state_file()).unwrap(), before);
    assert_eq!(remote_lock_ref(&w), None, "both locks released");
    a.ok(&["sync"]);
    a.ok(&["apply", "--yes"]);
    let info = a.ok(&["state", "lock-info"]);
    assert!(
        info.contains("Remote lock (origin refs/stead/lock): not locked"),
        "{info}"
    );
}

#[test]
fn a_removed_machine_leaves_the_lineage_for_good_and_rejoins_under_a_new_id() {
    let w = World::new("main");
    let (a, b) = two_synced(&w);
    let old_b = b.id();
    let b_history: Vec<String> = b.history_ids();

    let (code, _, err) = a.run(&["state", "remove-machine", &a.id()]);
    assert_eq!(code, 1);
    assert!(err.contains("is this machine"), "{err}");
    let out = a.ok(&["state", "remove-machine", &old_b[..8]]);
    assert!(
        out.contains(&format!(
            "Removed {}",
            b.state()["machine"]["hostname"].as_str().unwrap()
        )),
        "{out}"
    );
    a.ok(&["sync"]);
    let remote = w.remote_record("main");
    assert_eq!(remote["lineage"]["machines"], serde_json::json!([a.id()]));
    assert!(remote["machines"].get(&old_b).is_none());
    assert_eq!(remote["retired"], serde_json::json!([old_b.clone()]));
    for id in &b_history {
        assert!(
            ids(&remote["history"]).contains(id),
            "history of the removed machine is kept"
        );
    }

    // The removed machine is told, and changes nothing.
    let before = std::fs::read(b.sb.state_file()).unwrap();
    let (code, _, err) = b.run(&["sync"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("was removed from the lineage by another machine"),
        "{err}"
    );
    assert_eq!(std::fs::read(b.sb.state_file()).unwrap(), before);

    // Rejoining gives it a new identity; the old one stays retired.
    let clone = b.clone_dir();
    let out = b.ok(&["init", "--repo", w.url(), "--path", clone.to_str().unwrap()]);
    assert!(
        out.contains(&format!("old id {old_b} was removed")),
        "{out}"
    );
    assert_ne!(b.id(), old_b);
    b.ok(&["sync"]);
    a.ok(&["sync"]);
    let remote = w.remote_record("main");
    assert_eq!(
        sorted(
            remote["lineage"]["machines"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect()
        ),
        sorted(vec![a.id(), b.id()])
    );
    assert_eq!(remote["retired"], serde_json::json!([old_b]));
    assert_eq!(a.record(), b.record());
}

/// A world whose config has the waiting exec, with a and b synced and on
/// `hybrid` locks; returns (world, a, b, the signals dir).
fn hybrid_world() -> (World, Machine, Machine, tempfile::TempDir) {
    let w = World::new("main");
    let signals = tempfile::tempdir().unwrap();
    let seed = w.dir.path().join("seed");
    std::fs::write(seed.join("stead.toml"), waiting_manifest(signals.path())).unwrap();
    w.git(&seed, &["commit", "-q", "-am", "a step that waits"]);
    w.git(&seed, &["push", "-q", "origin", "HEAD"]);
    let a = w.machine("personal");
    let b = w.machine("personal");
    a.ok(&["sync", "--no-apply"]);
    b.ok(&["sync", "--no-apply"]);
    a.ok(&["sync", "--no-apply"]);
    hybrid(&a, 300);
    hybrid(&b, 300);
    (w, a, b, signals)
}

#[test]
fn unlock_force_removes_another_machines_remote_lock() {
    let (w, a, b, signals) = hybrid_world();
    let mut holder = hold_with_apply(&a, signals.path());
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert!(remote_lock_ref(&w).is_some());
    let out = b.ok(&["state", "unlock", "--force"]);
    assert!(
        out.contains(&format!(
            "Removed the remote lock on 'origin' held by PID {}",
            holder.id()
        )),
        "{out}"
    );
    assert_eq!(remote_lock_ref(&w), None);
    std::fs::write(signals.path().join("release"), "").unwrap();
    b.ok(&["apply", "--yes"]);
}

#[test]
fn ctrl_c_releases_the_remote_lock() {
    let (w, a, _b, signals) = hybrid_world();
    let holder = hold_with_apply(&a, signals.path());
    assert!(remote_lock_ref(&w).is_some());
    let signal = |pid: u32| {
        let ok = std::process::Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    };
    // First: stop starting work (wait until stead says so); second: kill
    // the running command. The apply then ends in order, releasing both locks.
    signal(holder.id());
    let said = signals.path().join("stderr");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !std::fs::read_to_string(&said)
        .unwrap_or_default()
        .contains("Press Ctrl-C again")
    {
        assert!(std::time::Instant::now() < deadline, "no stop notice");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    signal(holder.id());
    let out = holder.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    assert_eq!(remote_lock_ref(&w), None, "the remote lock is released");
    assert!(!a.sb.lock_file().exists(), "the local lock is released");
}

#[test]
fn sync_refuses_a_hand_edited_record_but_commits_one_a_killed_run_left() {
    let w = World::new("main");
    let a = w.machine("personal");
    a.ok(&["sync"]);
    let path = a.clone_dir().join(".stead/state.json");
    let committed = std::fs::read_to_string(&path).unwrap();

    // A hand edit that drops history: refused, left as it is.
    let mut record: Value = serde_json::from_str(&committed).unwrap();
    record["history"].as_array_mut().unwrap().remove(0);
    let edited = serde_json::to_string_pretty(&record).unwrap();
    std::fs::write(&path, &edited).unwrap();
    let (code, _, err) = a.run(&["sync"]);
    assert_eq!(code, 1);
    assert!(
        err.contains(".stead/state.json has changes that are not committed"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        edited,
        "left as it was"
    );

    // What a run killed between writing and committing leaves: a forward
    // copy. The next sync commits it and goes on.
    let mut record: Value = serde_json::from_str(&committed).unwrap();
    let serial = record["lineage"]["serial"].as_u64().unwrap();
    record["lineage"]["serial"] = (serial + 1).into();
    std::fs::write(&path, serde_json::to_string_pretty(&record).unwrap()).unwrap();
    let (code, out, err) = a.run(&["sync"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        err.contains("Committing the record an interrupted stead run left uncommitted"),
        "{err}"
    );
    assert_eq!(w.git(&a.clone_dir(), &["status", "--porcelain"]), "");

    // A merge left in progress is named, not tripped over.
    std::fs::write(
        a.clone_dir().join(".git/MERGE_HEAD"),
        w.git(&a.clone_dir(), &["rev-parse", "HEAD"]) + "\n",
    )
    .unwrap();
    let (code, _, err) = a.run(&["sync"]);
    assert_eq!(code, 1);
    assert!(err.contains("a git merge is in progress"), "{err}");
}

/// Waits (bounded) until no process has its working directory in `dir`.
fn wait_for_no_process_in(dir: &Path) {
    let dir = dir.canonicalize().unwrap();
    let busy = || {
        std::fs::read_dir("/proc").unwrap().flatten().any(|p| {
            std::fs::read_link(p.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(&dir))
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while busy() {
        assert!(
            std::time::Instant::now() < deadline,
            "a process stayed in {}",
            dir.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// xorshift, seeded: the kill moments of the sync crash test.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// `stead sync` on b is SIGKILLed at random moments while it has a
/// divergence to merge. After each kill, the next `stead sync` must finish
/// the job: no history entry of either machine lost, the state file never
/// torn, and both machines ending with the same record.
#[test]
fn sync_killed_at_random_moments_loses_nothing_and_the_next_sync_finishes() {
    let iterations: u64 = std::env::var("STEAD_SYNC_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let seed: u64 = std::env::var("STEAD_SYNC_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5EED_5717);
    let mut rng = Rng(seed | 1);
    let w = World::new("main");
    let (a, b) = two_synced(&w);
    // One full diverged sync, timed, to spread the kills over a whole run.
    a.local_write();
    a.ok(&["sync"]);
    b.local_write();
    let started = std::time::Instant::now();
    b.ok(&["sync"]);
    let full = started.elapsed().as_millis() as u64 + 20;
    a.ok(&["sync"]);

    let mut killed = 0;
    for i in 0..iterations {
        a.local_write();
        a.ok(&["sync"]);
        b.local_write();
        let mut expected: Vec<String> = a.history_ids();
        expected.extend(b.history_ids());
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("stead"))
            .env("HOME", b.sb.home())
            .env("NO_COLOR", "1")
            .envs(git_env())
            .args(["--home", b.sb.home().to_str().unwrap(), "sync"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(rng.below(full)));
        if child.try_wait().unwrap().is_none() {
            killed += 1;
        }
        let _ = child.kill();
        child.wait().unwrap();
        // A git command stead started outlives it for a moment (killing
        // stead does not kill its children); wait until none is left working
        // in the clone, as a person rerunning the command would.
        wait_for_no_process_in(&b.clone_dir());
        // The state file is never torn.
        let text = std::fs::read_to_string(b.sb.state_file()).unwrap();
        let state: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("iteration {i}: state.json torn ({e}):\n{text}"));
        assert_eq!(state["version"], 3);
        // The next sync finishes the job.
        let (code, out, err) = b.run(&["sync"]);
        assert_eq!(
            code, 0,
            "iteration {i} (seed {seed}): the sync after the kill failed\n{out}\n{err}"
        );
        a.ok(&["sync"]);
        // The repo's record keeps every entry (the local one is capped).
        let merged = ids(&b.record()["history"]);
        for id in &expected {
            assert!(
                merged.contains(id),
                "iteration {i} (seed {seed}): entry {id} lost"
            );
        }
        assert_eq!(a.record(), b.record(), "iteration {i} (seed {seed})");
    }
    eprintln!("{iterations} iterations, {killed} killed mid-sync (seed {seed})");
}

#[test]
fn a_corrupt_or_newer_shared_record_is_refused_with_where_and_changes_nothing() {
    let w = World::new("main");
    let a = w.machine("personal");
    a.ok(&["sync"]);
    let dir = w.dir.path().join("breaker");
    w.git(
        w.dir.path(),
        &["clone", "-q", w.url(), dir.to_str().unwrap()],
    );
    std::fs::write(
        dir.join(".stead/state.json"),
        "{\n  \"version\": 1,\n  \"lineage\": \n",
    )
    .unwrap();
    w.git(&dir, &["commit", "-q", "-am", "break the record"]);
    w.git(&dir, &["push", "-q"]);
    let before = std::fs::read(a.sb.state_file()).unwrap();
    let head = w.git(&a.clone_dir(), &["rev-parse", "HEAD"]);
    let (code, _, err) = a.run(&["sync"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(".stead/state.json is corrupt"), "{err}");
    assert!(err.contains("line 4 column 0"), "{err}");
    assert!(err.contains("git log -- .stead/state.json"), "{err}");
    assert_eq!(std::fs::read(a.sb.state_file()).unwrap(), before);
    assert_eq!(w.git(&a.clone_dir(), &["rev-parse", "HEAD"]), head);

    // A record from a newer stead is refused the same way.
    let mut record: Value =
        serde_json::from_slice(&std::fs::read(a.clone_dir().join(".stead/state.json")).unwrap())
            .unwrap();
    record["version"] = 9.into();
    std::fs::write(
        dir.join(".stead/state.json"),
        serde_json::to_vec_pretty(&record).unwrap(),
    )
    .unwrap();
    w.git(&dir, &["commit", "-q", "-am", "from the future"]);
    w.git(&dir, &["push", "-q"]);
    let (code, _, err) = a.run(&["state", "check-conflicts"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("has version 9, but this stead understands up to version 3"),
        "{err}"
    );
}

#[test]
fn commit_works_in_a_repo_without_a_remote_and_push_says_what_is_missing() {
    let w = World::new("main");
    let m = Machine { sb: Sandbox::new() };
    let repo = m.sb.home().join("dots");
    w.git(m.sb.home(), &["clone", "-q", w.url(), "dots"]);
    w.git(&repo, &["remote", "remove", "origin"]);
    m.ok(&["init", "--path", repo.to_str().unwrap()]);
    let out = m.ok(&["commit", "-m", "my record"]);
    assert!(out.contains("✓ Committed "), "{out}");
    assert_eq!(w.git(&repo, &["log", "-1", "--format=%s"]), "my record");
    assert!(repo.join(".stead/state.json").exists());
    let (code, _, err) = m.run(&["commit", "-m", "again", "--push"]);
    assert_eq!(code, 1);
    assert!(err.contains("has no remote to sync with"), "{err}");
    assert!(err.contains("remote add origin URL"), "{err}");
}

#[test]
fn a_text_conflict_in_another_file_stops_sync_before_applying_and_says_how_to_finish() {
    let w = World::new("main");
    let (a, b) = two_synced(&w);
    for (m, line) in [(&a, "# from a\n"), (&b, "# from b\n")] {
        std::fs::write(m.clone_dir().join("bashrc"), line).unwrap();
        w.git(&m.clone_dir(), &["commit", "-q", "-am", "edit bashrc"]);
    }
    a.ok(&["sync"]);
    let applied = std::fs::read_to_string(b.sb.home().join(".bashrc")).unwrap();
    let state_before = std::fs::read(b.sb.state_file()).unwrap();
    let (code, out, _) = b.run(&["sync"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "✗ Git merge stopped on conflicts in other files of the config repo:\n  bashrc\n"
        ),
        "{out}"
    );
    assert!(out.contains("Nothing was applied"), "{out}");
    assert!(
        out.contains("git add <files> && git commit\n  stead sync\n"),
        "{out}"
    );
    assert!(out.contains("git merge --abort"), "{out}");
    assert_eq!(
        std::fs::read_to_string(b.sb.home().join(".bashrc")).unwrap(),
        applied,
        "nothing applied on a conflicted tree"
    );
    assert_eq!(std::fs::read(b.sb.state_file()).unwrap(), state_before);
    // The record itself merged through the driver, without markers.
    let record = std::fs::read_to_string(b.clone_dir().join(".stead/state.json")).unwrap();
    assert!(!record.contains("<<<<<<<"), "{record}");
    // A second sync names the merge in progress.
    let (code, _, err) = b.run(&["sync"]);
    assert_eq!(code, 1);
    assert!(err.contains("a git merge is in progress"), "{err}");

    // Finish as told; the next sync applies the merged file and pushes.
    std::fs::write(b.clone_dir().join("bashrc"), "# from a and b\n").unwrap();
    w.git(&b.clone_dir(), &["add", "bashrc"]);
    w.git(&b.clone_dir(), &["commit", "-q", "--no-edit"]);
    b.ok(&["sync"]);
    assert_eq!(
        std::fs::read_to_string(b.sb.home().join(".bashrc")).unwrap(),
        "# from a and b\n"
    );
    // a applies the merged file too (its own record changes: one more
    // round until both agree).
    a.ok(&["sync"]);
    b.ok(&["sync"]);
    assert_eq!(a.record(), b.record());
    assert_eq!(
        std::fs::read_to_string(a.sb.home().join(".bashrc")).unwrap(),
        "# from a and b\n"
    );
}

#[test]
fn a_shared_record_with_an_absurd_history_operation_is_refused_and_history_still_shows() {
    let w = World::new("main");
    let (a, _b) = two_synced(&w);
    // Someone (a broken or hostile machine) pushes a 70 000-character entry.
    w.edit_remote_record(|r| {
        r["history"][0]["operation"] = "x".repeat(70_000).into();
    });
    let before = std::fs::read(a.sb.state_file()).unwrap();
    let (code, _, err) = a.run(&["sync"]);
    assert_ne!(code, 101, "stead panicked:\n{err}");
    assert_eq!(code, 1, "an absurd record was taken:\n{err}");
    assert!(err.contains(".stead/state.json is corrupt"), "{err}");
    assert!(
        err.contains("operation is 70000 characters long; at most 1024 are allowed"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(a.sb.state_file()).unwrap(),
        before,
        "nothing of the record reached this machine's state"
    );
    let (code, out, err) = a.run(&["state", "history"]);
    assert_eq!(code, 0, "history broke:\n{out}\n{err}");
}

/// Machine `a`, synced, with `~/.bashrc` drifted from what stead wrote.
fn drifted(w: &World) -> Machine {
    let a = w.machine("personal");
    a.ok(&["sync"]);
    std::fs::write(a.sb.home().join(".bashrc"), "# drifted on this machine\n").unwrap();
    a
}

/// What `commit FILE` must leave alone when it refuses: HEAD, the record in
/// the repo, this machine's state.
fn untouched(w: &World, a: &Machine) -> (String, Vec<u8>, Vec<u8>) {
    (
        w.git(&a.clone_dir(), &["rev-parse", "HEAD"]),
        std::fs::read(a.clone_dir().join(".stead/state.json")).unwrap(),
        std::fs::read(a.sb.state_file()).unwrap(),
    )
}

#[test]
fn commit_refuses_a_source_with_uncommitted_edits_and_changes_nothing() {
    let w = World::new("main");
    let a = drifted(&w);
    let source = a.clone_dir().join("bashrc");
    let work = "# my uncommitted work in the repo\nexport EDITOR=vi\n";
    std::fs::write(&source, work).unwrap();
    let before = untouched(&w, &a);

    let (code, out, err) = a.run(&["commit", "-m", "x", "~/.bashrc"]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains("bashrc has uncommitted changes"),
        "the message names the file: {err}"
    );
    assert!(
        err.contains("diff HEAD -- bashrc"),
        "how to see them: {err}"
    );
    assert!(err.contains("Nothing was committed"), "{err}");
    assert_eq!(std::fs::read_to_string(&source).unwrap(), work);
    assert_eq!(untouched(&w, &a), before);

    // Staged but not committed is uncommitted too.
    w.git(&a.clone_dir(), &["add", "bashrc"]);
    let (code, _, err) = a.run(&["commit", "-m", "x", "~/.bashrc"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("bashrc has uncommitted changes"), "{err}");
    assert_eq!(std::fs::read_to_string(&source).unwrap(), work);
    assert_eq!(untouched(&w, &a), before);
}

#[test]
fn commit_refuses_a_source_that_is_a_symlink_in_the_repo_and_keeps_the_link() {
    let w = World::new("main");
    let a = w.machine("personal");
    let clone = a.clone_dir();
    std::fs::rename(clone.join("bashrc"), clone.join("bashrc.real")).unwrap();
    std::os::unix::fs::symlink("bashrc.real", clone.join("bashrc")).unwrap();
    w.git(&clone, &["add", "-A"]);
    w.git(&clone, &["commit", "-q", "-m", "bashrc is a link"]);
    a.ok(&["sync"]);
    std::fs::write(a.sb.home().join(".bashrc"), "# drifted on this machine\n").unwrap();
    let before = untouched(&w, &a);

    let (code, out, err) = a.run(&["commit", "-m", "x", "~/.bashrc"]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("bashrc"), "{err}");
    assert!(err.contains("symlink"), "{err}");
    assert!(err.contains("Nothing was committed"), "{err}");
    let link = std::fs::symlink_metadata(clone.join("bashrc")).unwrap();
    assert!(link.file_type().is_symlink(), "the link was replaced");
    assert_eq!(
        std::fs::read_link(clone.join("bashrc")).unwrap(),
        PathBuf::from("bashrc.real")
    );
    assert_eq!(
        std::fs::read_to_string(clone.join("bashrc.real")).unwrap(),
        "# shared bashrc\n"
    );
    assert_eq!(untouched(&w, &a), before);
}

/// Issue 12, item 4: a `stead commit` killed mid-write leaves a temp next to
/// the source in the config repo; the next commit removes it (its writer is
/// gone) instead of leaving it for `git add` to pick up.
#[test]
fn a_killed_commits_temp_in_the_repo_is_removed_by_the_next_commit() {
    let w = World::new("main");
    let a = w.machine("personal");
    a.ok(&["sync"]);
    let temp = a
        .clone_dir()
        .join(".bashrc.tmp-99999999-stead-0123456789abcdef0123456789abcdef");
    std::fs::write(&temp, "# half a bashr").unwrap();
    std::fs::write(a.sb.home().join(".bashrc"), "# better bashrc\n").unwrap();
    let out = a.ok(&["commit", "-m", "better bashrc", "--push", "~/.bashrc"]);
    assert!(!temp.exists(), "the dead commit's temp is removed: {out}");
    assert!(out.contains("Removed a temp file"), "{out}");
    let tree = w.git(&w.remote, &["ls-tree", "-r", "--name-only", "main"]);
    assert!(!tree.contains(".tmp-"), "{tree}");
    assert_eq!(
        w.git(&w.remote, &["show", "main:bashrc"]),
        "# better bashrc"
    );
}

#[test]
fn sync_json_is_one_json_event_per_line_ending_with_the_sync_event() {
    let w = World::new("main");
    let a = w.machine("personal");
    let (code, out, err) = a.run(&["--json", "sync"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not NDJSON ({e}): {l}")))
        .collect();
    assert!(events.iter().all(|e| e["schema"] == 1), "{out}");
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(names.first(), Some(&"plan"), "{out}");
    assert_eq!(names.last(), Some(&"sync"), "{out}");
    assert_eq!(events.last().unwrap()["status"], "synced");
    assert!(names.contains(&"summary"), "{out}");
}

#[test]
fn a_tree_conflict_under_sync_json_is_one_error_event() {
    let w = World::new("main");
    let (a, b) = two_synced(&w);
    for (m, line) in [(&a, "# from a\n"), (&b, "# from b\n")] {
        std::fs::write(m.clone_dir().join("bashrc"), line).unwrap();
        w.git(&m.clone_dir(), &["commit", "-q", "-am", "edit bashrc"]);
    }
    a.ok(&["sync"]);
    let (code, out, _) = b.run(&["--json", "sync"]);
    assert_eq!(code, 1, "{out}");
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not NDJSON ({e}): {l}")))
        .collect();
    assert_eq!(lines.len(), 1, "{out}");
    assert_eq!(lines[0]["event"], "error");
    assert_eq!(lines[0]["schema"], 1);
    let message = lines[0]["message"].as_str().unwrap();
    assert!(
        message.contains("bashrc") && message.contains("git merge --abort"),
        "{message}"
    );
}
