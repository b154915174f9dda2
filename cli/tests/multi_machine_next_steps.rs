//! Many machines, the next step each message names (issue 13, item 6): a
//! removed machine, `init --repo` inside a clone, uncommitted changes in
//! the way of a sync, a merge a killed sync left, and an empty remote.
//!
//! Real git against a bare remote in a temp dir, isolated from the user's
//! config (HOME is the sandbox, system config off, identity from the
//! environment); each machine is a temp HOME with its own clone.

mod common;

use common::Sandbox;
use common::remote::{Machine, Remote as World};
use serde_json::Value;

const MANIFEST: &str = r#"
[settings]
default_profile = "personal"

[profile.personal.vars]
who = "home"

[file.bashrc]
path = "~/.bashrc"
source = "bashrc"
"#;

/// A bare remote on `main`, seeded with the config.
impl World {
    fn new() -> World {
        World::seeded(
            "main",
            &[("stead.toml", MANIFEST), ("bashrc", "# shared bashrc\n")],
        )
    }

    /// Every ref of the remote (`refname sha` lines).
    fn remote_refs(&self) -> String {
        self.git(
            &self.remote,
            &["for-each-ref", "--format=%(refname) %(objectname)"],
        )
    }

    /// A new machine: its own HOME, clone at `<home>/dots`, joined.
    fn machine(&self) -> Machine {
        self.join(None)
    }
}

fn two_synced(w: &World) -> (Machine, Machine) {
    let a = w.machine();
    a.ok(&["sync"]);
    let b = w.machine();
    b.ok(&["sync"]);
    a.ok(&["sync"]);
    (a, b)
}

#[test]
fn a_removed_machine_is_told_by_check_conflicts_and_refused_by_apply_even_offline() {
    let w = World::new();
    let (a, b) = two_synced(&w);
    a.ok(&["state", "remove-machine", &b.id()[..8]]);
    a.ok(&["sync"]);

    // check-conflicts fetches the removal and says what it means.
    let (code, out, err) = b.run(&["state", "check-conflicts"]);
    assert_eq!(code, 4, "{out}\n{err}");
    assert!(!out.contains("No conflicts"), "{out}");
    assert!(
        out.contains("was removed from the lineage by another machine"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "run 'stead init --repo {} --path {}'",
            w.url(),
            b.clone_dir().display()
        )),
        "{out}"
    );
    let (code, out, _) = b.run(&["--json", "state", "check-conflicts"]);
    assert_eq!(code, 4);
    let json: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["removed"], true);

    // apply refuses it as sync does, from the copy last fetched: the remote
    // is gone, and nothing is changed.
    std::fs::rename(&w.remote, w.dir.path().join("gone.git")).unwrap();
    let bashrc = b.sb.home().join(".bashrc");
    std::fs::write(&bashrc, "edited here\n").unwrap();
    let before = std::fs::read(b.sb.state_file()).unwrap();
    let (code, out, err) = b.run(&["apply", "--yes"]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains("was removed from the lineage by another machine"),
        "{err}"
    );
    assert!(err.contains("rejoins under a new machine id"), "{err}");
    assert_eq!(std::fs::read_to_string(&bashrc).unwrap(), "edited here\n");
    assert_eq!(std::fs::read(b.sb.state_file()).unwrap(), before);
}

#[test]
fn init_repo_inside_a_clone_of_the_repo_uses_it_and_makes_no_second_clone() {
    let w = World::new();
    let m = Machine { sb: Sandbox::new() };
    let mine = m.sb.home().join("mine");
    w.git(m.sb.home(), &["clone", "-q", w.url(), "mine"]);
    let head = w.git(&mine, &["rev-parse", "HEAD"]);

    // Run from inside the clone, without --path.
    let (code, out, err) = m.run_in(Some(&mine.join(".")), &["init", "--repo", w.url()]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains(&format!(
            "Using the existing clone {} (the current directory is a clone of it; no second clone was made)",
            mine.canonicalize().unwrap().display()
        )),
        "{out}"
    );
    assert!(!m.sb.home().join(".dotfiles").exists(), "no second clone");
    assert_eq!(
        m.state()["config_path"],
        mine.canonicalize().unwrap().to_str().unwrap()
    );

    // A --path inside it (not there yet), with the URL spelled file://.
    let other = Machine { sb: Sandbox::new() };
    let sub = mine.join("sub");
    let url = format!("file://{}", w.url());
    let (code, out, err) = other.run(&["init", "--repo", &url, "--path", sub.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains(&format!("(--path {} is inside it)", sub.display())),
        "{out}"
    );
    assert!(!sub.exists(), "no clone nested in the clone");
    assert_eq!(
        w.git(&mine, &["rev-list", "--count", &format!("{head}..HEAD")]),
        "2",
        "both machines' records are committed in the one clone"
    );

    // A clone of another repo at --path is a clear error, and nothing is made.
    let elsewhere = World::new();
    let third = Machine { sb: Sandbox::new() };
    let (code, _, err) = third.run(&[
        "init",
        "--repo",
        elsewhere.url(),
        "--path",
        mine.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!(
            "{} is a clone of {}, not of {}",
            mine.display(),
            w.url(),
            elsewhere.url()
        )),
        "{err}"
    );
    assert!(!third.sb.state_file().exists());
}

#[test]
fn sync_names_the_uncommitted_files_in_the_way_and_changes_nothing() {
    let w = World::new();
    let (a, b) = two_synced(&w);
    // b commits a change to bashrc and shares it.
    std::fs::write(b.clone_dir().join("bashrc"), "# from b\n").unwrap();
    w.git(&b.clone_dir(), &["commit", "-q", "-am", "b's bashrc"]);
    b.ok(&["sync"]);
    // a has an uncommitted edit of the same file, and a new untracked one
    // the remote does not have (not in the way).
    std::fs::write(a.clone_dir().join("bashrc"), "# a's own edit\n").unwrap();
    std::fs::write(a.clone_dir().join("notes"), "mine\n").unwrap();
    let head = w.git(&a.clone_dir(), &["rev-parse", "HEAD"]);
    let refs = w.remote_refs();
    let state = std::fs::read(a.sb.state_file()).unwrap();

    let (code, out, err) = a.run(&["sync"]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains(&format!(
            "the config repo {} has uncommitted changes to files the remote's update would overwrite:\n  bashrc\n",
            a.clone_dir().display()
        )),
        "{err}"
    );
    assert!(!err.contains("notes"), "{err}");
    assert!(err.contains("stead commit -m MSG"), "{err}");
    assert!(
        err.contains(&format!("git -C {} stash -u", a.clone_dir().display())),
        "{err}"
    );
    assert!(
        !err.contains("would be overwritten by merge"),
        "not git's raw error: {err}"
    );
    assert_eq!(w.git(&a.clone_dir(), &["rev-parse", "HEAD"]), head);
    assert_eq!(
        std::fs::read_to_string(a.clone_dir().join("bashrc")).unwrap(),
        "# a's own edit\n"
    );
    assert_eq!(w.remote_refs(), refs, "nothing pushed");
    assert_eq!(std::fs::read(a.sb.state_file()).unwrap(), state);

    // Following the advice works.
    w.git(&a.clone_dir(), &["stash", "-u"]);
    a.ok(&["sync"]);
}

#[test]
fn a_merge_a_killed_sync_left_is_named_as_interrupted_not_conflicted() {
    let w = World::new();
    let (a, b) = two_synced(&w);
    std::fs::write(b.clone_dir().join("bashrc"), "# from b\n").unwrap();
    w.git(&b.clone_dir(), &["commit", "-q", "-am", "b's bashrc"]);
    b.ok(&["sync"]);
    // What a sync killed inside its merge leaves: the merge done in the
    // tree, MERGE_HEAD written, no commit, nothing conflicted.
    w.git(&a.clone_dir(), &["fetch", "-q"]);
    w.git(
        &a.clone_dir(),
        &["merge", "-q", "--no-commit", "--no-ff", "origin/main"],
    );
    let refs = w.remote_refs();

    let (code, out, err) = a.run(&["sync"]);
    assert_eq!(code, 1, "{out}\n{err}");
    let root = a.clone_dir().display().to_string();
    assert!(
        err.contains(&format!(
            "a git merge is in progress in {root}, but it was interrupted before it finished"
        )),
        "{err}"
    );
    assert!(err.contains("no file is left conflicted"), "{err}");
    assert!(!err.contains("edit the conflicted files"), "{err}");
    assert!(
        err.contains(&format!("Abort it with 'git -C {root} merge --abort'")),
        "{err}"
    );
    assert_eq!(w.remote_refs(), refs, "nothing pushed");

    // The step it names, then sync, finishes the job.
    w.git(&a.clone_dir(), &["merge", "--abort"]);
    a.ok(&["sync"]);
    assert_eq!(
        std::fs::read_to_string(a.sb.home().join(".bashrc")).unwrap(),
        "# from b\n"
    );

    // A merge stopped on conflicts is named with its files.
    b.ok(&["sync"]);
    std::fs::write(b.clone_dir().join("bashrc"), "# b again\n").unwrap();
    w.git(&b.clone_dir(), &["commit", "-q", "-am", "b's bashrc again"]);
    b.ok(&["sync"]);
    std::fs::write(a.clone_dir().join("bashrc"), "# a's own\n").unwrap();
    w.git(&a.clone_dir(), &["commit", "-q", "-am", "a's bashrc"]);
    let (code, _, _) = a.run(&["sync"]);
    assert_eq!(code, 1);
    let (code, _, err) = a.run(&["sync"]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!(
            "a git merge is in progress in {root}, stopped on conflicts in:\n  bashrc\n"
        )),
        "{err}"
    );
}

#[test]
fn sync_on_an_empty_remote_pushes_nothing_and_says_to_add_stead_toml() {
    let w = World::empty("main");
    let m = Machine { sb: Sandbox::new() };
    let clone = m.clone_dir();
    let out = m.ok(&["init", "--repo", w.url(), "--path", clone.to_str().unwrap()]);
    assert!(
        out.contains(&format!(
            "Note: {} has no stead.toml yet: add one and commit it",
            clone.display()
        )),
        "{out}"
    );
    let (code, out, err) = m.run(&["sync"]);
    assert_eq!(code, 1, "{out}\n{err}");
    let root = m.clone_dir().display().to_string();
    assert!(
        err.contains(&format!(
            "the config repo {root} has no stead.toml, so there is no config to apply or share"
        )),
        "{err}"
    );
    assert!(
        err.contains("Nothing was pushed. Add a stead.toml"),
        "{err}"
    );
    assert!(!out.contains('✓'), "no success reported: {out}");
    assert_eq!(w.remote_refs(), "", "nothing pushed");

    // With a stead.toml committed, the same sync goes through.
    std::fs::write(m.clone_dir().join("stead.toml"), MANIFEST).unwrap();
    std::fs::write(m.clone_dir().join("bashrc"), "# first\n").unwrap();
    w.git(&m.clone_dir(), &["add", "stead.toml", "bashrc"]);
    w.git(&m.clone_dir(), &["commit", "-q", "-m", "Add stead.toml"]);
    m.ok(&["sync"]);
    assert!(w.remote_refs().contains("refs/heads/main"));
}
