//! `stead fleet status`, end to end: a real bare remote and temp HOMEs as
//! machines (each its own clone and state dir, git isolated from the
//! user's config), the clock moved with `STEAD_NOW`.

mod common;

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Stdio;

use chrono::{DateTime, TimeDelta, Utc};
use common::Sandbox;
use common::remote::{Machine, Remote};
use serde_json::Value;

const MANIFEST: &str = r#"
[settings]
default_profile = "personal"

[profile.personal.vars]
who = "home"

[profile.work.vars]
who = "office"

[file.bashrc]
path = "~/.bashrc"
source = "bashrc"

[file.greeting]
path = "~/.greeting"
template = "greeting.j2"
"#;

const ID_A: &str = "aaaaaaaa-0000-4000-8000-000000000001";
const ID_B: &str = "bbbbbbbb-0000-4000-8000-000000000002";

fn world() -> Remote {
    Remote::seeded(
        "main",
        &[
            ("stead.toml", MANIFEST),
            ("bashrc", "# shared bashrc\n"),
            ("greeting.j2", "hello from {{ vars.who }}\n"),
        ],
    )
}

/// A machine with the id `id` (written before `init`, so tables and
/// snapshots are stable), joined to `w` with `profile`.
fn join_as(w: &Remote, id: &str, profile: &str) -> Machine {
    let m = Machine { sb: Sandbox::new() };
    let dir = m.sb.state_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(dir.join("machine_id"), format!("{id}\n")).unwrap();
    let clone = m.clone_dir();
    m.ok(&[
        "init",
        "--repo",
        w.url(),
        "--path",
        clone.to_str().unwrap(),
        "--profile",
        profile,
    ]);
    assert_eq!(m.id(), id);
    m
}

/// Runs stead on `m` with the clock at `now` -> (code, stdout, stderr).
fn run_at(m: &Machine, now: DateTime<Utc>, args: &[&str]) -> (i32, String, String) {
    let out = m
        .cmd(args)
        .env("STEAD_NOW", now.to_rfc3339())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `fleet status --json` on `m` at `now`, expected to succeed.
fn fleet_at(m: &Machine, now: DateTime<Utc>) -> Value {
    let (code, out, err) = run_at(m, now, &["--json", "fleet", "status"]);
    assert_eq!(code, 0, "{out}\n{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
}

fn fleet(m: &Machine) -> Value {
    fleet_at(m, Utc::now())
}

/// The row of machine `id`.
fn row<'a>(v: &'a Value, id: &str) -> &'a Value {
    v["machines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id)
        .unwrap_or_else(|| panic!("no row for {id}: {v}"))
}

/// Two machines joined and synced in turn (a, b, a).
fn two_synced(w: &Remote) -> (Machine, Machine) {
    common::remote::two_synced(|| join_as(w, ID_A, "personal"), || join_as(w, ID_B, "work"))
}

/// Puts a lock (its JSON) on the remote's `refs/stead/lock`, as a machine
/// holding the lineage lock would have.
fn plant_lock(w: &Remote, lock: &Value) {
    let remote = &w.remote;
    let piped = |args: &[&str], input: &[u8]| {
        let mut child = std::process::Command::new("git")
            .current_dir(remote)
            .envs(common::git_env())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let blob = piped(
        &["hash-object", "-w", "--stdin"],
        lock.to_string().as_bytes(),
    );
    let tree = piped(
        &["mktree"],
        format!("100644 blob {blob}\tlock.json\n").as_bytes(),
    );
    let commit = w.git(remote, &["commit-tree", &tree, "-m", "stead lock"]);
    w.git(remote, &["update-ref", "refs/stead/lock", &commit]);
}

fn lock_json(id: &str, host: &str, operation: &str, created: DateTime<Utc>) -> Value {
    serde_json::json!({
        "id": "0b0b0b0b-0000-4000-8000-000000000000",
        "lock_type": "hybrid",
        "operation": operation,
        "machine": {"id": id, "hostname": host, "pid": 4242, "user": "sam"},
        "created_at": created.to_rfc3339(),
        "expected_duration_seconds": 300,
        "reason": null,
        "state_serial": null,
        "boot_id": "another-machines-boot",
        "pid_start_time": null,
    })
}

#[test]
fn two_machines_that_synced_are_listed_on_either_with_profiles_and_times() {
    let w = world();
    let (a, b) = two_synced(&w);
    for (viewer, me) in [(&a, ID_A), (&b, ID_B)] {
        let v = fleet(viewer);
        assert_eq!(v["schema"], 1, "{v}");
        assert_eq!(v["source"], "remote", "{v}");
        assert_eq!(v["remote"], "origin/main", "{v}");
        assert_eq!(v["lineage_id"], a.state()["lineage"]["id"], "{v}");
        let ids: Vec<&str> = v["machines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, [ID_A, ID_B], "sorted by id");
        for (id, profile) in [(ID_A, "personal"), (ID_B, "work")] {
            let m = row(&v, id);
            assert_eq!(m["active_profile"], profile, "{m}");
            assert_eq!(m["this_machine"], id == me, "{m}");
            assert_eq!(m["offline"], false, "{m}");
            assert_eq!(m["drift"], 0, "{m}");
            assert_eq!(m["lock"], Value::Null, "{m}");
            for time in ["last_apply", "last_sync", "last_seen"] {
                let t = m[time].as_str().unwrap_or_else(|| panic!("{time}: {m}"));
                let t = DateTime::parse_from_rfc3339(t).unwrap();
                assert!(Utc::now() - t.with_timezone(&Utc) < TimeDelta::minutes(10));
            }
            assert_eq!(m["os"], std::env::consts::OS);
            assert!(m["config_path"].as_str().unwrap().ends_with("/dots"), "{m}");
        }
        assert_eq!(v["lock_known"], true, "{v}");
        assert_eq!(v["lock"], Value::Null, "{v}");
    }
    // The times are the ones the record holds.
    let record = w.record_on("main");
    let v = fleet(&a);
    for id in [ID_A, ID_B] {
        let (m, r) = (row(&v, id), &record["machines"][id]);
        assert_eq!(
            DateTime::parse_from_rfc3339(m["last_apply"].as_str().unwrap()).unwrap(),
            DateTime::parse_from_rfc3339(r["last_apply"].as_str().unwrap()).unwrap()
        );
    }
}

#[test]
fn a_machine_unseen_for_24_hours_is_offline_and_this_machine_is_not() {
    let w = world();
    let (a, _b) = two_synced(&w);
    let later = Utc::now() + TimeDelta::hours(25);
    let v = fleet_at(&a, later);
    assert_eq!(row(&v, ID_B)["offline"], true, "{v}");
    assert_eq!(row(&v, ID_A)["offline"], false, "this machine: {v}");
    let (code, out, err) = run_at(&a, later, &["fleet", "status"]);
    assert_eq!(code, 0, "{err}");
    let b_line = out.lines().find(|l| l.contains("(bbbbbbbb)")).unwrap();
    assert!(b_line.ends_with(" offline"), "{out}");
    assert!(b_line.contains("1 day ago"), "{out}");
    let a_line = out.lines().find(|l| l.contains("(aaaaaaaa)")).unwrap();
    assert!(
        a_line.starts_with('*') && a_line.ends_with(" online"),
        "{out}"
    );
    // Within the 24 hours, online.
    let v = fleet_at(&a, Utc::now() + TimeDelta::hours(23));
    assert_eq!(row(&v, ID_B)["offline"], false, "{v}");
}

#[test]
fn a_held_remote_lock_shows_its_holder() {
    let w = world();
    let (a, _b) = two_synced(&w);
    let now = Utc::now();
    plant_lock(
        &w,
        &lock_json(ID_B, "host-b", "apply", now - TimeDelta::minutes(5)),
    );
    let v = fleet_at(&a, now);
    let lock = &row(&v, ID_B)["lock"];
    assert_eq!(lock["operation"], "apply", "{v}");
    assert_eq!(lock["age_seconds"], 300, "{v}");
    assert_eq!(row(&v, ID_A)["lock"], Value::Null, "{v}");
    assert_eq!(v["lock"]["machine_id"], ID_B, "{v}");
    assert_eq!(v["lock"]["hostname"], "host-b", "{v}");
    let (code, out, err) = run_at(&a, now, &["fleet", "status"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("Lineage lock: held by host-b (bbbbbbbb) for apply, acquired 5 minutes ago"),
        "{out}"
    );
    let b_line = out.lines().find(|l| l.contains("(bbbbbbbb)")).unwrap();
    assert!(b_line.contains("apply, 5 minutes ago"), "{out}");
}

#[test]
fn a_drifted_file_is_counted_when_its_machine_publishes_and_repaired_counts_zero() {
    let w = world();
    let a = join_as(&w, ID_A, "personal");
    a.ok(&["sync"]);
    let b = join_as(&w, ID_B, "work");
    b.ok(&["apply", "--yes"]);
    std::fs::write(b.sb.home().join(".bashrc"), "edited by hand\n").unwrap();
    // A sync that does not apply leaves the file drifted, and publishes
    // (b's join and apply are news): its count goes with it.
    b.ok(&["sync", "--no-apply"]);
    let v = fleet(&a);
    assert_eq!(row(&v, ID_B)["drift"], 1, "{v}");
    assert_eq!(row(&v, ID_A)["drift"], 0, "{v}");
    // The count only, never which path.
    let record = w.record_on("main").to_string();
    assert!(record.contains("\"drift\": 1") || record.contains("\"drift\":1"));
    // A sync that applies repairs it, and publishes (its apply is news).
    b.ok(&["sync"]);
    let v = fleet(&a);
    assert_eq!(row(&v, ID_B)["drift"], 0, "{v}");
    assert_eq!(
        std::fs::read_to_string(b.sb.home().join(".bashrc")).unwrap(),
        "# shared bashrc\n"
    );
}

#[test]
fn a_drift_count_that_changed_alone_is_not_pushed() {
    let w = world();
    let (a, b) = two_synced(&w);
    let head = || w.git(&w.remote, &["rev-parse", "HEAD"]);
    let before = head();
    std::fs::write(b.sb.home().join(".bashrc"), "edited by hand\n").unwrap();
    let out = b.ok(&["sync", "--no-apply"]);
    assert!(out.contains("Nothing to push"), "{out}");
    assert_eq!(head(), before);
    assert_eq!(row(&fleet(&a), ID_B)["drift"], 0);
}

#[test]
fn before_the_first_sync_the_clone_s_record_is_shown_and_said_so() {
    let w = world();
    let a = join_as(&w, ID_A, "personal");
    let (code, out, err) = a.run(&["--json", "fleet", "status"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["source"], "local", "{v}");
    assert_eq!(v["machines"][0]["id"], ID_A, "{v}");
    assert!(
        err.contains("origin/main has no shared record yet: showing this clone's. Run 'stead sync' to share it."),
        "{err}"
    );
}

#[test]
fn an_unreachable_remote_warns_and_shows_the_committed_copy() {
    let w = world();
    let (a, _b) = two_synced(&w);
    w.git(
        &a.clone_dir(),
        &["remote", "set-url", "origin", "/nonexistent/remote.git"],
    );
    let (code, out, err) = a.run(&["--json", "fleet", "status"]);
    assert_eq!(code, 0, "an offline read is no failure: {err}");
    assert!(err.contains("Cannot reach remote repository"), "{err}");
    assert!(err.contains("as this clone last committed it"), "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["source"], "local", "{v}");
    assert_eq!(v["lock_known"], false, "{v}");
    assert_eq!(v["machines"].as_array().unwrap().len(), 2, "{v}");
    let (code, out, _) = a.run(&["fleet", "status"]);
    assert_eq!(code, 0);
    assert!(out.contains("as this clone last committed it"), "{out}");
    assert!(
        out.contains("Lineage lock: unknown (the remote could not be read)"),
        "{out}"
    );
}

#[test]
fn a_config_repo_without_a_shared_record_says_what_to_run() {
    let w = world();
    let sb = Sandbox::new();
    let clone = sb.home().join("plain");
    w.git(
        sb.home(),
        &["clone", "-q", w.url(), clone.to_str().unwrap()],
    );
    let out = sb
        .stead(&["--config", clone.to_str().unwrap(), "fleet", "status"])
        .envs(common::git_env())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("has no shared record (.stead/state.json) yet"),
        "{err}"
    );
    assert!(
        err.contains(
            "Run 'stead init --repo URL' on each machine to join the config repo, then 'stead sync'"
        ),
        "{err}"
    );
    assert!(!Path::new(&sb.state_dir()).exists(), "nothing written");
}

#[test]
fn the_table_for_people() {
    let w = world();
    let (a, _b) = two_synced(&w);
    let now: DateTime<Utc> = "2030-06-01T12:00:00Z".parse().unwrap();
    let at = |hours: i64| (now - TimeDelta::hours(hours)).to_rfc3339();
    w.edit_record("editor", "fixed names and times", &[], |r| {
        for (id, host, apply, sync, drift) in
            [(ID_A, "laptop", 2, 2, 0), (ID_B, "desktop", 30, 26, 1)]
        {
            let m = &mut r["machines"][id];
            m["hostname"] = host.into();
            m["last_apply"] = at(apply).into();
            m["last_sync"] = at(sync).into();
            m["drift"] = drift.into();
        }
    });
    plant_lock(
        &w,
        &lock_json(ID_A, "laptop", "apply", now - TimeDelta::minutes(5)),
    );
    let (code, out, err) = run_at(&a, now, &["fleet", "status"]);
    assert_eq!(code, 0, "{err}");
    let lineage = a.state()["lineage"]["id"].as_str().unwrap().to_string();
    insta::assert_snapshot!("fleet_status", out.replace(&lineage, "<lineage>"));
}

#[test]
fn fleet_watch_on_a_git_lineage_says_it_needs_etcd_and_changes_nothing() {
    let w = world();
    let (a, _b) = two_synced(&w);
    let before = std::fs::read(a.sb.state_file()).unwrap();
    let (code, _, err) = a.run(&["fleet", "watch", "--max-runs", "1"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("'stead fleet watch' waits on etcd"), "{err}");
    assert!(err.contains("stead init --etcd URL --path"), "{err}");
    assert_eq!(std::fs::read(a.sb.state_file()).unwrap(), before);
}
