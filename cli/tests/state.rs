//! `stead state version` and `stead state history`.

mod common;

use common::{Repo, Sandbox};

#[test]
fn version_prints_version_machine_and_serial() {
    let sb = Sandbox::new();
    sb.ok(&["init"]);
    let state = sb.state_json();
    let out = sb.ok(&["state", "version"]);
    assert_eq!(
        out,
        format!(
            "State Version: 3\nMachine ID: {}\nSerial: 1\n",
            state["machine"]["id"].as_str().unwrap()
        )
    );
}

#[test]
fn version_json_shape() {
    let sb = Sandbox::new();
    sb.ok(&["init"]);
    let state = sb.state_json();
    let v = sb.json(&["state", "version"]);
    assert_eq!(
        v,
        serde_json::json!({
            "schema": 1,
            "version": 3,
            "machine_id": state["machine"]["id"],
            "serial": 1,
            "lineage_id": state["lineage"]["id"],
            "state_path": sb.state_file(),
        })
    );
}

#[test]
fn commands_on_a_new_machine_say_to_run_init() {
    let sb = Sandbox::new();
    let (code, _out, err) = sb.run(&["state", "version"]);
    assert_eq!(code, 1);
    assert!(err.contains("no state found at"), "{err}");
    assert!(err.contains("Run 'stead init'"), "{err}");
    assert!(!sb.state_dir().exists(), "a read creates nothing");
}

#[test]
fn history_is_newest_first_in_the_documented_format() {
    let sb = Sandbox::new();
    sb.ok(&["init", "--profile", "a"]);
    sb.ok(&["init", "--profile", "b"]);
    sb.ok(&["init", "--profile", "c"]);
    let host = stead_lib::machine::hostname();
    let user = stead_lib::machine::current_user();
    let out = sb.ok(&["state", "history"]);
    let lines: Vec<_> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    let re = regex_lite(&host, &user);
    for (line, serial) in lines.iter().zip([3, 2, 1]) {
        assert!(
            line.starts_with(&format!("{serial}. init  ")),
            "{line:?} should start with serial {serial}"
        );
        assert!(re(line), "{line:?} does not match the history format");
    }
    let limited = sb.ok(&["state", "history", "--limit", "1"]);
    assert_eq!(limited.lines().count(), 1);
    assert!(limited.starts_with("3. init"));
}

/// `N. op  YYYY-MM-DD HH:MM:SS UTC  host  user`
fn regex_lite(host: &str, user: &str) -> impl Fn(&str) -> bool {
    let host = host.to_string();
    let user = user.to_string();
    move |line: &str| {
        let Some((_, rest)) = line.split_once(". init  ") else {
            return false;
        };
        let (stamp, rest) = rest.split_at(23);
        chrono::NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d %H:%M:%S UTC").is_ok()
            && rest == format!("  {host}  {user}")
    }
}

#[test]
fn history_json_lists_entries_newest_first() {
    let sb = Sandbox::new();
    sb.ok(&["init", "--profile", "a"]);
    sb.ok(&["init", "--profile", "b"]);
    let v = sb.json(&["state", "history"]);
    let list = v["history"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["serial"], 2);
    assert_eq!(list[1]["serial"], 1);
    let state = sb.state_json();
    assert_eq!(list[1]["id"], state["history"][0]["id"]);
    assert_eq!(list[0]["machine_id"], state["machine"]["id"]);
    assert_eq!(list[0]["hostname"], stead_lib::machine::hostname());
}

#[test]
fn history_limit_is_configurable_and_keeps_newest() {
    let sb = Sandbox::new();
    sb.ok(&["init"]);
    for p in ["a", "b", "c", "d"] {
        sb.ok(&["--history-limit", "3", "init", "--profile", p]);
    }
    let state = sb.state_json();
    let serials: Vec<_> = state["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["serial"].as_u64().unwrap())
        .collect();
    assert_eq!(serials, [3, 4, 5]);
    assert_eq!(state["lineage"]["serial"], 5);
}

#[test]
fn help_is_available_everywhere() {
    let sb = Sandbox::new();
    for args in [
        vec!["--help"],
        vec!["init", "--help"],
        vec!["state", "--help"],
        vec!["state", "version", "--help"],
        vec!["state", "history", "--help"],
        vec!["state", "lock-info", "--help"],
        vec!["state", "unlock", "--help"],
        vec!["state", "migrate", "--help"],
    ] {
        let out = sb.ok(&args);
        assert!(out.contains("Usage: stead"), "{args:?}: {out}");
    }
}

#[test]
fn state_history_with_a_70000_character_operation_is_an_error_not_a_panic() {
    let r = Repo::new("[file.a]\npath = \"~/a.txt\"\ncontent = \"a\\n\"\n");
    r.ok(&["init"]);
    let path = r.sb.state_file();
    let mut state = r.sb.state_json();
    state["history"][0]["operation"] = "x".repeat(70_000).into();
    std::fs::write(&path, serde_json::to_vec_pretty(&state).unwrap()).unwrap();
    let (code, out, err) = r.run(&["state", "history"]);
    assert_ne!(code, 101, "stead panicked:\n{err}");
    assert!(!err.contains("panicked"), "stead panicked:\n{err}");
    assert_ne!(code, 0, "an absurd record was shown:\n{out}");
    assert!(err.contains(path.to_str().unwrap()), "{err}");
    assert!(
        err.contains("operation is 70000 characters long; at most 1024 are allowed"),
        "{err}"
    );
}
