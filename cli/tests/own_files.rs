//! A FIFO (or another special file) in place of one of stead's own files is
//! refused at once with the file's name and what to do; it used to block
//! `open` forever, holding every command (issue 12, item 9).

mod common;

use std::path::Path;
use std::time::Duration;

use common::Repo;

/// Far above what a refusal takes; a hang is killed here.
const DEADLINE: Duration = Duration::from_secs(20);

fn mkfifo(path: &Path) {
    let _ = std::fs::remove_file(path);
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::S_IRWXU).unwrap();
}

/// `stead --config C ARGS`, killed at the deadline -> (code, stdout, stderr).
fn run(r: &Repo, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["--config", r.config.path().to_str().unwrap()];
    all.extend_from_slice(args);
    let out = r.sb.stead(&all).timeout(DEADLINE).output().unwrap();
    let code = out.status.code().unwrap_or(-1);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_ne!(
        code, -1,
        "stead {args:?} hung (killed after {DEADLINE:?}):\n{err}"
    );
    (code, String::from_utf8_lossy(&out.stdout).into_owned(), err)
}

fn initialised() -> Repo {
    let r = Repo::new("[file.a]\npath = \"~/a\"\ncontent = \"x\"\n");
    r.ok(&["init"]);
    r.ok(&["apply", "--yes"]);
    r
}

#[test]
fn a_fifo_in_place_of_an_own_file_is_refused_not_waited_on() {
    for name in [
        "state.json",
        "journal.jsonl",
        "lock_config.json",
        "machine_id",
    ] {
        let r = initialised();
        let fifo = r.sb.state_dir().join(name);
        mkfifo(&fifo);
        // A plan takes no lock and uses the id in the state: it reads
        // neither lock_config.json nor machine_id.
        let commands: &[&[&str]] = if name == "lock_config.json" || name == "machine_id" {
            &[&["apply", "--yes"]]
        } else {
            &[&["plan"], &["apply", "--yes"]]
        };
        for args in commands {
            let (code, _out, err) = run(&r, args);
            assert_ne!(code, 0, "{name}: {args:?} succeeded:\n{err}");
            assert_ne!(code, 101, "{name}: {args:?} panicked:\n{err}");
            assert!(
                err.contains(&fifo.display().to_string()) && err.contains("FIFO"),
                "{name}: {args:?} does not name the file and say what it is:\n{err}"
            );
        }
    }
}

#[test]
fn a_fifo_manifest_is_refused_and_not_called_missing() {
    let r = initialised();
    let manifest = r.config.path().join("stead.toml");
    mkfifo(&manifest);
    let (code, _out, err) = run(&r, &["plan"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("stead.toml") && err.contains("FIFO"), "{err}");
    assert!(!err.contains("It needs a stead.toml"), "{err}");
}

#[test]
fn a_fifo_lock_file_is_refused_and_unlock_force_removes_it() {
    let r = initialised();
    let lock = r.sb.lock_file();
    mkfifo(&lock);
    let (code, _out, err) = run(&r, &["apply", "--yes"]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("state.lock") && err.contains("FIFO"), "{err}");
    let (code, _out, err) = run(&r, &["state", "lock-info"]);
    assert_ne!(code, 101, "{err}");
    let (code, out, err) = run(&r, &["state", "unlock", "--force"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("FIFO"), "{out}");
    assert!(!lock.exists(), "the FIFO is still there");
    run(&r, &["apply", "--yes"]);
    r.ok(&["apply", "--yes"]);
}

#[test]
fn a_fifo_given_as_a_saved_plan_is_refused_not_waited_on() {
    let r = initialised();
    let plan = r.sb.home().join("plan.json");
    mkfifo(&plan);
    let (code, _out, err) = run(&r, &["apply", "--yes", plan.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("plan.json") && err.contains("FIFO"), "{err}");
}
