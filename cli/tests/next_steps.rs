//! Messages that name the right next step (issue 13, item 6): `commit -m`
//! with no names accepts every drifted file with a `source` (through the
//! same check as `commit FILE`), a failed `commit --push` says the commit
//! was made locally and how to push it, `migrate --no-backup` does not
//! promise a backup, `state history --limit 0` does not say "No history".
//! (The plan footer of an interrupted one-shot step: `journal.rs`.)

mod common;

use std::path::{Path, PathBuf};

use common::remote::{Machine, Remote};
use common::{Repo, Sandbox};

const MANIFEST: &str = r#"
[profile.personal]

[file.bashrc]
path = "~/.bashrc"
source = "bashrc"

[file.vimrc]
path = "~/.vimrc"
source = "vimrc"

[file.greeting]
path = "~/.greeting"
template = "greeting.j2"
"#;

/// A bare remote seeded with the config, and one machine joined to it
/// (its clone at `<home>/dots`).
struct World {
    remote: Remote,
    m: Machine,
}

impl World {
    fn new() -> World {
        let remote = Remote::seeded(
            "main",
            &[
                ("stead.toml", MANIFEST),
                ("bashrc", "# shared bashrc\n"),
                ("vimrc", "set nu\n"),
                ("greeting.j2", "hello\n"),
            ],
        );
        let m = remote.join(Some("personal"));
        m.ok(&["sync"]);
        World { remote, m }
    }

    fn clone_dir(&self) -> PathBuf {
        self.m.clone_dir()
    }

    fn home(&self, rel: &str) -> PathBuf {
        self.m.sb.home().join(rel)
    }

    fn git(&self, dir: &Path, args: &[&str]) -> String {
        self.remote.git(dir, args)
    }

    fn run(&self, args: &[&str]) -> (i32, String, String) {
        self.m.run(args)
    }

    fn ok(&self, args: &[&str]) -> String {
        self.m.ok(args)
    }

    fn source(&self, rel: &str) -> String {
        std::fs::read_to_string(self.clone_dir().join(rel)).unwrap()
    }
}

#[test]
fn commit_with_no_names_accepts_every_drifted_file_that_has_a_source() {
    let w = World::new();
    std::fs::write(w.home(".bashrc"), "# better bashrc\n").unwrap();
    std::fs::write(w.home(".vimrc"), "set nu rnu\n").unwrap();
    std::fs::write(w.home(".greeting"), "hi\n").unwrap();

    let out = w.ok(&["commit", "-m", "Accept .bashrc changes"]);
    assert!(!out.contains("Nothing to commit"), "{out}");
    assert!(
        out.contains("Accepted ~/.bashrc into the repo (bashrc)"),
        "{out}"
    );
    assert!(
        out.contains("Accepted ~/.vimrc into the repo (vimrc)"),
        "{out}"
    );
    // A template has no source to copy back to: said, with what to do.
    assert!(
        out.contains(
            "Still drifted, not accepted: ~/.greeting (file.greeting renders it from a template"
        ),
        "{out}"
    );
    assert_eq!(w.source("bashrc"), "# better bashrc\n");
    assert_eq!(w.source("vimrc"), "set nu rnu\n");
    assert_eq!(
        w.git(&w.clone_dir(), &["log", "-1", "--format=%s"]),
        "Accept .bashrc changes"
    );
    let (code, out, _) = w.run(&["state", "check-drift"]);
    assert_eq!(code, 4, "{out}");
    assert!(!out.contains(".bashrc") && !out.contains(".vimrc"), "{out}");
}

#[test]
fn commit_with_no_names_refuses_a_source_with_uncommitted_edits_and_changes_nothing() {
    let w = World::new();
    std::fs::write(w.home(".bashrc"), "# better bashrc\n").unwrap();
    std::fs::write(w.home(".vimrc"), "set nu rnu\n").unwrap();
    // Work of one's own in the repo, not committed.
    std::fs::write(w.clone_dir().join("bashrc"), "# my unsaved edit\n").unwrap();
    let head = w.git(&w.clone_dir(), &["rev-parse", "HEAD"]);
    let state = std::fs::read(w.m.sb.state_file()).unwrap();

    let (code, out, err) = w.run(&["commit", "-m", "take all"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("bashrc"), "{err}");
    assert!(err.contains("git -C"), "{err}");
    assert_eq!(w.source("bashrc"), "# my unsaved edit\n");
    assert_eq!(w.source("vimrc"), "set nu\n", "one refusal copies nothing");
    assert_eq!(w.git(&w.clone_dir(), &["rev-parse", "HEAD"]), head);
    assert_eq!(std::fs::read(w.m.sb.state_file()).unwrap(), state);
}

#[test]
fn commit_push_to_an_unreachable_remote_says_the_commit_was_made_locally() {
    let w = World::new();
    w.git(
        &w.clone_dir(),
        &["remote", "set-url", "origin", "/nonexistent/remote.git"],
    );
    std::fs::write(w.home(".bashrc"), "# offline edit\n").unwrap();
    let (code, out, err) = w.run(&["commit", "-m", "offline", "--push", "~/.bashrc"]);
    assert_eq!(code, 1, "{out}{err}");
    let rev = w.git(&w.clone_dir(), &["rev-parse", "--short=12", "HEAD"]);
    assert!(
        err.contains(&format!("The commit {rev} was made in your clone")),
        "{err}"
    );
    assert!(err.contains("but the push failed"), "{err}");
    assert!(
        err.contains("run 'stead sync' (or 'stead commit -m MSG --push' again) to push it"),
        "{err}"
    );
    assert_eq!(
        w.git(&w.clone_dir(), &["log", "-1", "--format=%s"]),
        "offline"
    );
    assert_eq!(w.source("bashrc"), "# offline edit\n");
}

#[test]
fn history_with_limit_zero_does_not_say_there_is_no_history() {
    let r = Repo::new("");
    r.ok(&["init"]);
    let out = r.sb.ok(&["state", "history", "--limit", "0"]);
    assert!(!out.contains("No history yet"), "{out}");
    assert!(
        out.contains("No entries shown (--limit 0); the history holds 1"),
        "{out}"
    );
}

#[test]
fn migrate_no_backup_does_not_say_dropped_fields_are_kept_in_a_backup() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.state_dir()).unwrap();
    std::fs::write(
        sb.state_file(),
        r#"{"active_profile": "work", "dotfiles_path": "/d", "theme": "dark"}"#,
    )
    .unwrap();
    let out = sb.ok(&["state", "migrate", "--no-backup"]);
    assert!(out.contains("Backup: none (--no-backup)"), "{out}");
    assert!(!out.contains("kept in the backup"), "{out}");
    assert!(
        out.contains("Not carried over (lost: --no-backup took no copy): theme"),
        "{out}"
    );
}
