//! Check → migrate, end to end (issue 18): checks that report items, choices
//! that persist (by command, flag, preseeded file, across a new boot), stale
//! and pruned answers, a committed migration run by readiness as each
//! step's user, kills during a step, reboots, items appearing mid-run, and
//! the SQLite example against Debian's `sqlite3`.

mod common;

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::Repo;

/// A check that prints `before.json` until `~/migrated` exists, then
/// `after.json` (both in the config repo, where a check runs).
const CHECK: &str = r#"[check.db]
command = "if [ -e \"$STEAD_HOME/migrated\" ]; then cat after.json; else cat before.json; fi"

[file.app]
path = "~/app.conf"
content = "ok\n"
after = ["check.db"]
"#;

/// An error with two steps (`migrate` after `backup`) and a warning.
fn before(migrate: &str) -> String {
    format!(
        r#"{{"items": [
  {{"id": "behind", "severity": "error", "message": "at version 1, want 2",
    "steps": [
      {{"id": "backup", "title": "back up", "command": "echo backup >> \"$STEAD_HOME/log\""}},
      {{"id": "migrate", "title": "migrate", "after": ["backup"],
        "command": "{migrate}"}}],
    "default": "migrate"}},
  {{"id": "tidy", "severity": "warning", "message": "could be tidier",
    "steps": [{{"id": "sweep", "command": "true"}}]}}]}}"#
    )
}

const MIGRATE: &str = r#"echo migrate >> \"$STEAD_HOME/log\"; touch \"$STEAD_HOME/migrated\""#;

const AFTER: &str = r#"{"items": [{"id": "tidy", "severity": "warning", "message": "could be tidier",
  "steps": [{"id": "sweep", "command": "true"}]}]}"#;

fn repo() -> Repo {
    let r = Repo::new(CHECK);
    r.write_source("before.json", &before(MIGRATE));
    r.write_source("after.json", AFTER);
    r.ok(&["init"]);
    r
}

/// `stead --config C ARGS` with `STEAD_TEST_BOOT_ID` set -> (code, stdout, stderr).
fn run_in_boot(r: &Repo, boot: &str, args: &[&str]) -> (i32, String, String) {
    let config = r.config.path().to_str().unwrap().to_string();
    let mut all = vec!["--config", config.as_str()];
    all.extend_from_slice(args);
    let out =
        r.sb.stead(&all)
            .env("STEAD_TEST_BOOT_ID", boot)
            .output()
            .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn log(r: &Repo) -> String {
    fs::read_to_string(r.path("log")).unwrap_or_default()
}

fn checks(r: &Repo) -> serde_json::Value {
    r.sb.state_json()["checks"].clone()
}

#[test]
fn an_error_item_blocks_apply_until_chosen_and_the_choice_survives_a_new_boot() {
    let r = repo();
    let (code, out, _) = r.run(&["check"]);
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("db/behind  error  pending"), "{out}");
    assert!(out.contains("db/tidy  warning  pending"), "{out}");
    assert!(
        out.contains("- migrate: migrate after backup [default]"),
        "{out}"
    );

    let (code, _, err) = r.run(&["apply", "--yes"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("stead choose CHECK/ITEM STEP"), "{err}");
    assert!(
        err.contains("db/behind (pending): at version 1, want 2"),
        "{err}"
    );
    assert!(!r.path("app.conf").exists() && log(&r).is_empty());

    r.ok(&["choose", "db/behind", "migrate"]);
    let recorded = checks(&r);
    assert_eq!(recorded["db/behind"]["status"], "chosen", "{recorded}");
    assert_eq!(recorded["db/behind"]["choice"]["step"], "migrate");
    assert_eq!(recorded["db/behind"]["choice"]["via"], "command");

    // Another process in another boot reads the choice and runs it: the
    // chosen step after the step it runs after, then what waits for the check.
    let (code, out, err) = run_in_boot(&r, "boot-after-reboot", &["apply", "--yes"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(log(&r), "backup\nmigrate\n");
    assert_eq!(fs::read_to_string(r.path("app.conf")).unwrap(), "ok\n");
    let recorded = checks(&r);
    assert!(
        recorded.get("db/behind").is_none(),
        "pruned once resolved: {recorded}"
    );
    assert_eq!(recorded["db/tidy"]["status"], "pending");
    assert!(r.sb.state_json().get("migration").is_none());
    assert_eq!(r.sb.state_json()["version"], 3);

    // Nothing runs twice.
    r.ok(&["apply", "--yes"]);
    assert_eq!(log(&r), "backup\nmigrate\n");
    let (code, out, _) = r.run(&["check"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn choices_up_front_preseeded_dismissed_and_rejected() {
    // --choose up front: recorded as a flag, run at once.
    let r = repo();
    let out = r.ok(&["apply", "--yes", "--choose", "db/behind=migrate"]);
    assert!(out.contains("check.db/behind/migrate"), "{out}");
    assert_eq!(log(&r), "backup\nmigrate\n");

    // Preseeding before any check ran, and a dismissal of the warning.
    let r = repo();
    r.write_source(
        "answers.toml",
        "\"db/behind\" = \"migrate\"\n\"db/tidy\" = false\n",
    );
    let answers = r.config.path().join("answers.toml");
    r.ok(&["choose", "--file", answers.to_str().unwrap()]);
    assert_eq!(checks(&r)["db/behind"]["status"], "pending");
    let (code, out, _) = r.run(&["check"]);
    assert_eq!(code, 0, "the preseeded answer is taken:\n{out}");
    let recorded = checks(&r);
    assert_eq!(recorded["db/behind"]["status"], "chosen");
    assert_eq!(recorded["db/behind"]["choice"]["via"], "file");
    assert_eq!(recorded["db/tidy"]["status"], "dismissed");
    r.ok(&["apply", "--yes"]);
    assert_eq!(log(&r), "backup\nmigrate\n");

    // An error cannot be dismissed; an unknown step or item is refused.
    let r = repo();
    r.run(&["check"]);
    let (code, _, err) = r.run(&["choose", "--dismiss", "db/behind"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot be dismissed"), "{err}");
    let (code, _, err) = r.run(&["choose", "db/behind", "restore"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("has no step `restore`; its steps: backup, migrate"),
        "{err}"
    );
    let (code, _, err) = r.run(&["choose", "db/nothing", "x"]);
    assert_eq!(code, 1);
    assert!(err.contains("no check has reported db/nothing"), "{err}");
    // Up front too, even where the manifest declares no check.
    let (code, _, err) = r.run(&["apply", "--yes", "--choose", "db/nothing=x"]);
    assert_eq!(code, 1);
    assert!(err.contains("no check has reported db/nothing"), "{err}");
    let plain = Repo::new("[noop.n]\n");
    let (code, _, err) = plain.run(&["apply", "--yes", "--choose", "db/x=y"]);
    assert_eq!(code, 1);
    assert!(err.contains("no check has reported db/x"), "{err}");
    let (code, _, err) = plain.run(&["apply", "--yes", "--choose", "db-x"]);
    assert_eq!(code, 1);
    assert!(err.contains("is not an item address"), "{err}");
    // A malformed answers file names its place.
    r.write_source("bad.toml", "\"db/behind\" = \"migrate\"\n\"db/tidy\" = 3\n");
    let bad = r.config.path().join("bad.toml");
    let (code, _, err) = r.run(&["choose", "--file", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("bad.toml:2:1"), "{err}");
    assert!(log(&r).is_empty());
}

#[test]
fn a_changed_step_makes_its_choice_stale_and_a_vanished_item_is_pruned() {
    let r = repo();
    r.run(&["check"]);
    r.ok(&["choose", "db/behind", "migrate"]);
    // The check now offers `migrate` with another command.
    r.write_source(
        "before.json",
        &before(r#"echo migrate-v2 >> \"$STEAD_HOME/log\"; touch \"$STEAD_HOME/migrated\""#),
    );
    let (code, out, _) = r.run(&["check"]);
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("db/behind  error  stale"), "{out}");
    assert!(
        out.contains("step `migrate` changed since it was chosen"),
        "{out}"
    );
    let (code, _, err) = r.run(&["apply", "--yes"]);
    assert_eq!(code, 1);
    assert!(err.contains("db/behind (stale)"), "{err}");
    assert!(log(&r).is_empty(), "a stale choice is never run");
    // Chosen again, it runs the new command.
    r.ok(&["choose", "db/behind", "migrate"]);
    r.ok(&["apply", "--yes"]);
    assert_eq!(log(&r), "backup\nmigrate-v2\n");

    // An answer for an item no longer reported goes with it.
    let r = repo();
    r.run(&["check"]);
    r.ok(&["choose", "--dismiss", "db/tidy"]);
    r.write_source("before.json", r#"{"items": []}"#);
    let out = r.ok(&["check"]);
    assert!(out.contains("Pruned db/behind"), "{out}");
    assert!(out.contains("Pruned db/tidy"), "{out}");
    assert_eq!(
        checks(&r),
        serde_json::Value::Null,
        "nothing left in the record"
    );

    // Nor for a check no longer declared.
    let r = repo();
    r.run(&["check"]);
    assert!(checks(&r).get("db/behind").is_some());
    r.write_manifest("[noop.n]\n");
    let out = r.ok(&["apply", "--yes"]);
    assert_eq!(checks(&r), serde_json::Value::Null, "{out}");
}

/// Seconds since the epoch, as written by `date +%s.%N` into `name`.
fn stamp(home: &Path, name: &str) -> f64 {
    fs::read_to_string(home.join(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn independent_steps_overlap_a_dependent_waits_and_a_step_runs_as_nobody() {
    let root = nix::unistd::geteuid().is_root();
    let step = |id: &str| {
        format!(
            r#"{{"id": "{id}", "command": "date +%s.%N > \"$STEAD_HOME/{id}.start\"; sleep 1; date +%s.%N > \"$STEAD_HOME/{id}.end\""}}"#
        )
    };
    let nobody = if root {
        r#", {"id": "who", "user": "nobody", "command": "id -u; echo HOME=$HOME USER=$USER"}"#
    } else {
        ""
    };
    let report = format!(
        r#"{{"items": [
  {{"id": "a", "severity": "error", "message": "a", "steps": [{}]}},
  {{"id": "b", "severity": "error", "message": "b", "steps": [{}{nobody}]}},
  {{"id": "c", "severity": "error", "message": "c", "steps": [
     {}, {{"id": "last", "after": ["c"], "command": "date +%s.%N > \"$STEAD_HOME/last.start\"; touch \"$STEAD_HOME/migrated\""}}]}}]}}"#,
        step("a"),
        step("b"),
        step("c"),
    );
    let r = repo();
    r.write_source("before.json", &report);
    r.write_source("after.json", r#"{"items": []}"#);
    let mut args = vec![
        "apply",
        "--yes",
        "--choose",
        "db/a=a",
        "--choose",
        "db/c=last",
    ];
    if root {
        args.extend(["--choose", "db/b=who"]);
    }
    let out = r.ok(&args);
    let home = r.home();
    // Independent steps ran at the same time; `last` waited for `c`.
    let (a0, a1, c0, c1) = (
        stamp(home, "a.start"),
        stamp(home, "a.end"),
        stamp(home, "c.start"),
        stamp(home, "c.end"),
    );
    assert!(
        a0 < c1 && c0 < a1,
        "a [{a0}, {a1}] and c [{c0}, {c1}] did not overlap\n{out}"
    );
    assert!(
        stamp(home, "last.start") >= c1,
        "`last` started before `c` ended"
    );
    if !root {
        eprintln!("not root: the step as `nobody` needs root, so it was not declared");
        return;
    }
    let journal = fs::read_to_string(r.sb.state_dir().join("journal.jsonl")).unwrap();
    let done: serde_json::Value = journal
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["resource"] == "check.db/b/who" && v["state"] == "succeeded")
        .unwrap_or_else(|| panic!("no outcome for the step as nobody:\n{journal}"));
    let output = done["output"].as_str().unwrap_or_default().to_string();
    let uid = nix::unistd::User::from_name("nobody")
        .unwrap()
        .unwrap()
        .uid
        .to_string();
    assert!(output.starts_with(&format!("{uid}\n")), "{output}");
    assert!(output.contains("USER=nobody"), "{output}");
}

/// Waits (bounded) until `cond` holds, polling: a condition, not a guess.
fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_step_killed_midway_needs_rerun_and_a_succeeded_step_never_reruns() {
    let r = repo();
    // `migrate` marks its start, then waits until `~/go` exists.
    r.write_source(
        "before.json",
        &before(
            r#"echo start >> \"$STEAD_HOME/log\"; while [ ! -e \"$STEAD_HOME/go\" ]; do sleep 0.05; done; echo migrate >> \"$STEAD_HOME/log\"; touch \"$STEAD_HOME/migrated\""#,
        ),
    );
    r.run(&["check"]);
    r.ok(&["choose", "db/behind", "migrate"]);
    let mut child = r.spawn(
        &[
            "--state-dir",
            r.sb.state_dir().to_str().unwrap(),
            "apply",
            "--yes",
        ],
        Stdio::null(),
        Stdio::null(),
    );
    wait_for("the step to start", || log(&r).contains("start"));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // The reaper ends the step's process group with stead.
    fs::write(r.path("go"), "").unwrap();
    let (code, out, _) = r.run(&["apply", "--yes"]);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("stead apply --rerun check.db/behind/migrate"),
        "{out}"
    );
    assert_eq!(
        log(&r),
        "backup\nstart\n",
        "backup ran once; migrate did not finish"
    );
    let state = r.sb.state_json();
    assert!(
        state["migration"]["id"].is_string(),
        "still committed: {state}"
    );

    let out = r.ok(&["apply", "--yes", "--rerun", "check.db/behind/migrate"]);
    assert_eq!(log(&r), "backup\nstart\nstart\nmigrate\n", "{out}");
    assert!(r.sb.state_json().get("migration").is_none());
    r.ok(&["apply", "--yes"]);
    assert_eq!(log(&r), "backup\nstart\nstart\nmigrate\n");
}

#[test]
fn random_kills_over_a_three_step_graph_run_every_step_exactly_once() {
    // Each step records its start, works, and records that it finished
    // unless it already had (a rerun of a step whose kill landed after its
    // work is harmless, as an operator's --rerun must be able to assume).
    let step = |id: &str, after: &str| {
        format!(
            r#"{{"id": "{id}", "after": [{after}], "command": "echo start-{id} >> \"$STEAD_HOME/log\"; sleep 0.4; grep -qx done-{id} \"$STEAD_HOME/log\" || echo done-{id} >> \"$STEAD_HOME/log\"; [ {id} != c ] || touch \"$STEAD_HOME/migrated\""}}"#
        )
    };
    let report = format!(
        r#"{{"items": [{{"id": "behind", "severity": "error", "message": "m", "steps": [{}, {}, {}]}}]}}"#,
        step("a", ""),
        step("b", r#""a""#),
        step("c", r#""b""#)
    );
    let r = repo();
    r.write_source("before.json", &report);
    r.run(&["check"]);
    r.ok(&["choose", "db/behind", "c"]);
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut reruns: Vec<String> = Vec::new();
    let mut asked: std::collections::BTreeMap<String, usize> = Default::default();
    let state_dir = r.sb.state_dir();
    let mut kills = 0;
    for _ in 0..12 {
        if r.path("migrated").exists() && r.sb.state_json().get("migration").is_none() {
            break;
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut args = vec!["--state-dir", state_dir.to_str().unwrap(), "apply", "--yes"];
        for id in &reruns {
            args.extend(["--rerun", id.as_str()]);
            *asked.entry(id.clone()).or_default() += 1;
        }
        let mut child = r.spawn(&args, Stdio::null(), Stdio::null());
        std::thread::sleep(Duration::from_millis(seed % 500));
        if child.try_wait().unwrap().is_none() {
            kills += 1;
        }
        let _ = child.kill();
        child.wait().unwrap();
        // What an operator does: the plan names an interrupted step.
        let plan = r.run(&["plan"]).1;
        reruns = plan
            .split("stead apply --rerun ")
            .skip(1)
            .filter_map(|s| s.split(&[' ', '\''][..]).next())
            .map(str::to_string)
            .collect();
    }
    // Then runs until done, rerunning what it is told was interrupted.
    for _ in 0..5 {
        let mut args = vec!["apply", "--yes"];
        for id in &reruns {
            args.extend(["--rerun", id.as_str()]);
            *asked.entry(id.clone()).or_default() += 1;
        }
        let (code, out, _) = r.run(&args);
        if code == 0 {
            break;
        }
        reruns = out
            .split("stead apply --rerun ")
            .skip(1)
            .filter_map(|s| s.split(&[' ', '\''][..]).next())
            .map(str::to_string)
            .collect();
    }
    let log = log(&r);
    eprintln!("kills: {kills}, --rerun asked: {asked:?}\nlog:\n{log}");
    assert!(
        kills >= 3,
        "too few kills landed during the migration to prove anything"
    );
    assert!(r.sb.state_json().get("migration").is_none(), "{log}");
    for id in ["a", "b", "c"] {
        let done = log.lines().filter(|l| *l == format!("done-{id}")).count();
        let started = log.lines().filter(|l| *l == format!("start-{id}")).count();
        let reran = asked
            .get(&format!("check.db/behind/{id}"))
            .copied()
            .unwrap_or(0);
        assert_eq!(done, 1, "step {id} finished {done} times:\n{log}");
        assert!(
            started <= 1 + reran,
            "step {id} started {started} times with {reran} --rerun:\n{log}"
        );
    }
    // Order held: a finished before b started, b before c.
    let first = |what: &str| log.lines().position(|l| l == what).unwrap();
    assert!(
        first("done-a") < first("start-b") && first("done-b") < first("start-c"),
        "{log}"
    );
}

#[test]
fn an_item_reported_mid_run_is_recorded_and_not_executed() {
    let r = repo();
    r.write_source(
        "after.json",
        r#"{"items": [{"id": "new-thing", "severity": "error", "message": "appeared after the migration",
  "steps": [{"id": "fix", "command": "touch \"$STEAD_HOME/fixed\""}], "default": "fix"}]}"#,
    );
    r.ok(&["apply", "--yes", "--choose", "db/behind=migrate"]);
    assert_eq!(log(&r), "backup\nmigrate\n");
    assert!(
        !r.path("fixed").exists(),
        "a new item's step never joins the migration"
    );
    let recorded = checks(&r);
    assert_eq!(recorded["db/new-thing"]["status"], "pending", "{recorded}");
    assert!(recorded.get("db/behind").is_none());
    let (code, out, _) = r.run(&["check"]);
    assert_eq!(code, 4, "{out}");
}

#[test]
fn a_step_after_a_reboot_step_runs_only_in_another_boot() {
    let r = repo();
    r.write_source(
        "before.json",
        r#"{"items": [{"id": "kernel", "severity": "error", "message": "needs a new kernel",
  "steps": [
    {"id": "install", "reboot": true, "command": "echo install >> \"$STEAD_HOME/log\""},
    {"id": "finish", "after": ["install"], "command": "echo finish >> \"$STEAD_HOME/log\"; touch \"$STEAD_HOME/migrated\""}]}]}"#,
    );
    let (code, out, _) = run_in_boot(
        &r,
        "boot-1",
        &["apply", "--yes", "--choose", "db/kernel=finish"],
    );
    assert_eq!(
        code, 1,
        "what waits for the check waits for the reboot:\n{out}"
    );
    assert_eq!(log(&r), "install\n");
    assert!(!r.path("app.conf").exists());
    let (code, out, _) = run_in_boot(&r, "boot-1", &["apply", "--yes"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("waits for a reboot"), "{out}");
    assert_eq!(log(&r), "install\n");
    let (code, out, err) = run_in_boot(&r, "boot-2", &["apply", "--yes"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(log(&r), "install\nfinish\n");
    assert!(r.path("app.conf").exists());
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn sqlite(db: &Path, sql: &str) -> String {
    let out = std::process::Command::new("sqlite3")
        .arg(db)
        .arg(sql)
        .output()
        .expect("sqlite3 (Debian's sqlite3 package)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn the_sqlite_example_migrates_a_real_database_keeping_its_rows_and_a_backup() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/sqlite-migration");
    let r = Repo::new("");
    copy_dir(&example, r.config.path());
    let db = r.path("app/app.db");
    fs::create_dir_all(db.parent().unwrap()).unwrap();
    let seeded = std::process::Command::new("sh")
        .arg(r.config.path().join("seed.sh"))
        .arg(&db)
        .arg("2")
        .output()
        .unwrap();
    assert!(
        seeded.status.success(),
        "{}",
        String::from_utf8_lossy(&seeded.stderr)
    );
    assert_eq!(sqlite(&db, "PRAGMA user_version"), "2");
    r.ok(&["init"]);

    let (code, out, _) = r.run(&["check"]);
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("db/schema-behind  error  pending"), "{out}");
    assert!(
        out.contains("is at schema version 2; the config declares 3"),
        "{out}"
    );
    assert!(
        out.contains("- dump-restore: dump and restore into a new file"),
        "{out}"
    );
    let (code, _, err) = r.run(&["apply", "--yes"]);
    assert_eq!(code, 1, "{err}");
    assert!(!r.path("app/app.conf").exists());

    r.ok(&["choose", "db/schema-behind", "migrate"]);
    let out = r.ok(&["apply", "--yes"]);
    assert_eq!(sqlite(&db, "PRAGMA user_version"), "3", "{out}");
    assert_eq!(sqlite(&db, "SELECT count(*) FROM notes"), "3");
    assert_eq!(
        sqlite(&db, "SELECT body FROM notes ORDER BY id LIMIT 1"),
        "first note"
    );
    let backup = r.path("app/app.db.bak-v2");
    assert_eq!(
        sqlite(&backup, "PRAGMA user_version"),
        "2",
        "the backup is the old database"
    );
    assert!(
        r.path("app/app.conf").exists(),
        "what waited for the check ran"
    );
    let (code, out, _) = r.run(&["check"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_failed_step_ends_its_migration_and_a_recovery_step_is_chosen_like_any_other() {
    let r = repo();
    r.write_source(
        "before.json",
        r#"{"items": [{"id": "behind", "severity": "error", "message": "at version 1",
  "steps": [
    {"id": "migrate", "command": "echo half >> \"$STEAD_HOME/log\"; exit 3"},
    {"id": "after-migrate", "after": ["migrate"], "command": "echo never >> \"$STEAD_HOME/log\""},
    {"id": "restore", "title": "restore the backup", "command": "echo restore >> \"$STEAD_HOME/log\"; touch \"$STEAD_HOME/migrated\""}]}]}"#,
    );
    let (code, out, _) = r.run(&["apply", "--yes", "--choose", "db/behind=after-migrate"]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(log(&r), "half\n", "the failed step's dependent did not run");
    assert!(!r.path("app.conf").exists());
    let recorded = checks(&r);
    assert_eq!(recorded["db/behind"]["status"], "failed", "{recorded}");
    assert!(
        r.sb.state_json().get("migration").is_none(),
        "the migration ended"
    );
    let (code, _, err) = r.run(&["apply", "--yes"]);
    assert_eq!(code, 1);
    assert!(err.contains("db/behind (failed)"), "{err}");
    r.ok(&["choose", "db/behind", "restore"]);
    r.ok(&["apply", "--yes"]);
    assert_eq!(log(&r), "half\nrestore\n");
    assert!(r.path("app.conf").exists());
}

#[test]
fn check_output_for_people() {
    let r = repo();
    r.write_source("answers.toml", "\"db/tidy\" = false\n");
    let answers = r.config.path().join("answers.toml");
    r.ok(&["choose", "--file", answers.to_str().unwrap()]);
    let (code, out, _) = r.run(&["check"]);
    assert_eq!(code, 4);
    insta::assert_snapshot!("check_items", r.redact(&out));
    r.ok(&["choose", "db/behind", "migrate"]);
    let plan = r.ok(&["plan"]);
    insta::assert_snapshot!("plan_with_a_migration", r.redact(&plan));
}
