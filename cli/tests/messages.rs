//! Messages that used to mislead or panic: each says what happened, where,
//! and what to run next (issue 12, "Messages" and item 12).

mod common;

use common::{Repo, Sandbox};
use stead_lib::lock::{self, LockConfig, LockGuard, LockRequest};

/// What a panic looks like from outside: Rust's panic exit code, or its message.
fn assert_no_panic(code: i32, err: &str) {
    assert_ne!(code, 101, "stead panicked:\n{err}");
    assert!(!err.contains("panicked"), "stead panicked:\n{err}");
}

/// This test process holds the state lock (its flock lives with the guard).
fn hold(sb: &Sandbox, operation: &str) -> LockGuard {
    let layout = sb.layout();
    std::fs::create_dir_all(layout.state_dir()).unwrap();
    let id = stead_lib::machine::load_or_create_id(&layout).unwrap();
    lock::acquire(
        &layout,
        &LockConfig::default(),
        &LockRequest::new(operation, &id),
        &mut |_| {},
    )
    .unwrap()
}

#[test]
fn a_broken_stderr_while_waiting_for_the_lock_is_no_panic() {
    let sb = Sandbox::new();
    sb.write_lock_config(r#"{"retry": {"attempts": 1, "delay_seconds": 0.01}}"#);
    let _guard = hold(&sb, "apply");
    // A pipe whose reader is gone: every write to stderr fails with EPIPE.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let status = std::process::Command::new(assert_cmd::cargo::cargo_bin("stead"))
        .env("HOME", sb.home())
        .env_remove("STEAD_HOME")
        .env_remove("STEAD_STATE_DIR")
        .arg("--home")
        .arg(sb.home())
        .arg("init")
        .stdout(std::process::Stdio::null())
        .stderr(writer)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(3), "{status:?} (101 is a panic)");
}

#[test]
fn an_invalid_utf8_byte_in_the_manifest_is_placed_not_called_missing() {
    let r = Repo::new("");
    let mut text = b"[file.a]\npath = \"~/a\"\ncontent = \"ab".to_vec();
    text.push(0xff);
    text.extend_from_slice(b"\"\n");
    std::fs::write(r.config.path().join("stead.toml"), text).unwrap();
    let (code, _out, err) = r.run(&["plan"]);
    assert_no_panic(code, &err);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("stead.toml:3:14: invalid UTF-8 (byte 0xff)"),
        "no file:line:column in\n{err}"
    );
    assert!(
        !err.contains("Is "),
        "reported as a missing stead.toml:\n{err}"
    );
}

/// A dir with `purge`, holding a non-UTF-8 name and a name with a terminal
/// escape sequence (clear screen) in it.
fn purge_repo() -> (Repo, std::path::PathBuf, std::path::PathBuf) {
    use std::os::unix::ffi::OsStrExt;
    let r = Repo::new("[dir.d]\npath = \"~/d\"\npurge = true\n");
    r.ok(&["init"]);
    std::fs::create_dir(r.path("d")).unwrap();
    let bad = r.path("d").join(std::ffi::OsStr::from_bytes(b"bad\xff"));
    let esc = r.path("d").join("esc\u{1b}[2Jx");
    std::fs::write(&bad, "b").unwrap();
    std::fs::write(&esc, "e").unwrap();
    (r, bad, esc)
}

#[test]
fn json_plan_shows_a_non_utf8_purged_name_as_lossy_and_hex() {
    let (r, bad, _esc) = purge_repo();
    let (code, out, err) = r.run(&["--json", "plan"]);
    assert_no_panic(code, &err);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let purge = v["plan"]["changes"][0]["op"]["purge"].as_array().unwrap();
    let hex: String = {
        use std::os::unix::ffi::OsStrExt;
        bad.as_os_str()
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    assert!(
        purge
            .iter()
            .any(|p| p["hex"] == hex.as_str()
                && p["lossy"].as_str().unwrap().ends_with("bad\u{fffd}")),
        "{purge:?}"
    );
    // A saved plan reads the exact name back, and its apply removes it.
    let saved = r.sb.home().join("plan.json");
    r.ok(&["plan", "--out", saved.to_str().unwrap()]);
    r.ok(&["apply", "--yes", saved.to_str().unwrap()]);
    assert!(!bad.exists(), "the non-UTF-8 entry was not purged");
}

#[test]
fn escape_sequences_in_names_from_disk_are_printed_escaped() {
    let (r, _bad, _esc) = purge_repo();
    let (code, out, err) = r.run(&["plan"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        !out.contains('\u{1b}'),
        "a raw ESC reached the terminal:\n{out:?}"
    );
    assert!(out.contains("esc\\u{1b}[2Jx"), "{out}");
}

#[test]
fn another_holders_hostname_is_printed_escaped() {
    let sb = Sandbox::new();
    let guard = hold(&sb, "apply");
    // Rewrite the held lock in place (same inode: the flock stays).
    let mut info = guard.info().unwrap().clone();
    info.machine.hostname = "evil\u{1b}[2J\u{1b}[8mhidden\r".to_string();
    std::fs::write(sb.lock_file(), serde_json::to_vec_pretty(&info).unwrap()).unwrap();
    let (code, out, err) = sb.run(&["state", "lock-info"]);
    assert_no_panic(code, &err);
    let all = format!("{out}{err}");
    assert!(all.contains("evil\\u{1b}[2J"), "{all}");
    assert!(
        !all.contains('\u{1b}') && !all.contains('\r'),
        "raw control characters:\n{all:?}"
    );
}

#[test]
fn a_fifo_source_is_called_not_a_regular_file() {
    let r = Repo::new("[file.a]\npath = \"~/a\"\nsource = \"src\"\n");
    nix::unistd::mkfifo(&r.config.path().join("src"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    let (code, _out, err) = r.run(&["plan"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("stead.toml:3:10:")
            && err.contains("is a FIFO (named pipe), not a regular file"),
        "{err}"
    );
    assert!(!err.contains("does not exist"), "{err}");
}

#[test]
fn a_nul_in_a_path_is_a_load_error_with_its_place() {
    for (text, place) in [
        (
            "[file.a]\npath = \"~/a\\u0000b\"\ncontent = \"x\"\n",
            "stead.toml:2:8:",
        ),
        (
            "[vars]\nn = \"a\\u0000b\"\n[file.a]\npath = \"~/${vars.n}\"\ncontent = \"x\"\n",
            "stead.toml:4:8:",
        ),
        (
            "[file.a]\npath = \"~/a\"\nsource = \"s\\u0000\"\n",
            "stead.toml:3:10:",
        ),
    ] {
        let r = Repo::new(text);
        let (code, _out, err) = r.run(&["plan"]);
        assert_eq!(code, 1, "{text}\n{err}");
        assert!(
            err.contains(&format!("{place} a path cannot contain a NUL character")),
            "{text}\n{err}"
        );
    }
}

#[test]
fn a_too_deep_dotted_header_is_placed() {
    let text = format!(
        "[file.a]\npath = \"~/a\"\ncontent = \"x\"\n\n[{}]\n",
        vec!["t"; 300].join(".")
    );
    let r = Repo::new(&text);
    let (code, _out, err) = r.run(&["plan"]);
    assert_no_panic(code, &err);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("stead.toml:5:1: invalid TOML"),
        "no place in\n{err}"
    );
}

/// Every file under `dir` with its bytes (a snapshot to compare).
fn snapshot(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p.clone());
                out.push((p, Vec::new()));
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap_or_default()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn plan_and_dry_run_leave_a_corrupt_journal_where_it_is() {
    let r = Repo::new("[file.a]\npath = \"~/a\"\ncontent = \"a\\n\"\n");
    r.ok(&["apply", "--yes"]);
    let journal = r.sb.state_dir().join("journal.jsonl");
    let good = std::fs::read_to_string(&journal).unwrap();
    std::fs::write(&journal, format!("not json at all\n{good}")).unwrap();
    let before = snapshot(&r.sb.state_dir());
    for args in [
        &["plan"][..],
        &["apply", "--dry-run"][..],
        &["state", "journal"][..],
    ] {
        let (code, out, err) = r.run(args);
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert!(
            err.contains("corrupt at line 1") && err.contains("Nothing was changed"),
            "{args:?}: {err}"
        );
        assert_eq!(
            snapshot(&r.sb.state_dir()),
            before,
            "{args:?} wrote to the state dir"
        );
    }
    // apply still moves it aside and goes on.
    let (code, _, err) = r.run(&["apply", "--yes"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("moved aside"), "{err}");
}

#[test]
fn plan_reads_a_version_1_state_without_migrating_it() {
    let r = Repo::new("[file.a]\npath = \"~/a\"\ncontent = \"a\\n\"\n");
    std::fs::create_dir_all(r.sb.state_dir()).unwrap();
    let v1 = format!(
        r#"{{"active_profile": null, "dotfiles_path": "{}"}}"#,
        r.config.path().display()
    );
    std::fs::write(r.sb.state_file(), &v1).unwrap();
    let before = snapshot(&r.sb.state_dir());
    let (code, out, err) = r.run(&["plan"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("+ file.a"), "{out}");
    assert!(
        err.contains("version 1") && err.contains("left as it is"),
        "{err}"
    );
    assert_eq!(
        snapshot(&r.sb.state_dir()),
        before,
        "plan wrote to the state dir"
    );
    assert_eq!(std::fs::read_to_string(r.sb.state_file()).unwrap(), v1);
}

#[test]
fn a_file_where_a_declared_dir_should_be_is_a_conflict_not_an_aborted_plan() {
    let r = Repo::new(
        "[dir.d]\npath = \"~/d\"\n[file.f]\npath = \"~/d/f\"\ncontent = \"x\"\n\
         [file.g]\npath = \"~/g\"\ncontent = \"x\"\n",
    );
    r.ok(&["init"]);
    std::fs::write(r.path("d"), "not a dir").unwrap();
    let (code, out, err) = r.run(&["plan"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("! dir.d  ~/d"), "{out}");
    assert!(
        out.contains("! file.f  ~/d/f  (~/d is not a directory"),
        "{out}"
    );
    assert!(out.contains("+ file.g  ~/g"), "{out}");
    // Neither conflict is one --force replaces: the footer must not offer it.
    assert!(
        out.contains("nothing is changed for them, not even with force"),
        "{out}"
    );
    assert!(!out.contains("'stead apply --force' backs it up"), "{out}");
}

#[test]
fn the_conflict_footer_offers_force_only_for_the_conflicts_it_replaces() {
    let r = Repo::new("[dir.d]\npath = \"~/d\"\n[file.g]\npath = \"~/g\"\ncontent = \"x\"\n");
    r.ok(&["init"]);
    std::fs::write(r.path("d"), "not a dir").unwrap();
    std::fs::write(r.path("g"), "mine").unwrap();
    let out = r.ok(&["plan"]);
    assert!(
        out.contains("2 conflicts (!): 'stead apply --force' backs up and replaces 1 of them"),
        "{out}"
    );
}

#[test]
fn a_state_write_failing_after_changes_says_they_were_applied_and_will_be_recovered() {
    // An exec that breaks the record mid-run: the commit after it is refused
    // (stead never overwrites a state file it cannot parse).
    let r = Repo::new("");
    let state = r.sb.state_file();
    r.write_manifest(&format!(
        "[file.a]\npath = \"~/a\"\ncontent = \"x\"\n\
         [exec.break]\ncommand = [\"sh\", \"-c\", \"printf garbage > '{}'\"]\nafter = [\"file.a\"]\n",
        state.display()
    ));
    r.ok(&["init"]);
    let (code, out, err) = r.run(&["apply", "--yes"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(r.path("a").exists());
    assert!(
        err.contains(
            "2 changes were applied to this machine, but the state record could not be written"
        ),
        "{err}"
    );
    assert!(err.contains("the next 'stead apply'"), "{err}");
}

#[test]
fn merging_shared_records_at_the_largest_serial_does_not_wrap_or_panic() {
    use stead_lib::machine::{MachineInfo, RecordKey};
    use stead_lib::state::State;
    use stead_lib::sync::shared;
    let sb = Sandbox::new();
    let record = |id: &str| {
        let mut s = State::new(MachineInfo::current(id));
        s.lineage.id = "lineage-x".to_string();
        s.lineage.serial = u64::MAX;
        shared::to_bytes(&shared::fold(None, &s, &RecordKey::from_bytes([7; 32]), 50))
    };
    let (base, ours, theirs) = (
        sb.home().join("base"),
        sb.home().join("ours"),
        sb.home().join("theirs"),
    );
    std::fs::write(&base, "").unwrap();
    std::fs::write(&ours, record("a")).unwrap();
    std::fs::write(&theirs, record("b")).unwrap();
    let (code, out, err) = sb.run(&[
        "__merge-driver",
        base.to_str().unwrap(),
        ours.to_str().unwrap(),
        theirs.to_str().unwrap(),
    ]);
    assert_no_panic(code, &err);
    let merged = shared::parse(&std::fs::read(&ours).unwrap(), "merged").unwrap();
    assert_eq!(merged.lineage.serial, u64::MAX, "{out}{err}");
}
