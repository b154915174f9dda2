//! Each machine owns its own entry of the shared record: a change to it made
//! outside the machine (another clone editing its profile or config path) is
//! a conflict this machine decides, never taken by `sync` on its own, and
//! never with a profile the manifest does not declare. End to end over real
//! git: a bare remote, temp HOMEs as machines, a plain clone as the editor.
//! Also the messages of `state resolve` and `init --profile`.

mod common;

use common::Sandbox;
use common::remote::{Machine, Remote as World};
use serde_json::Value;

const MANIFEST: &str = r#"
[settings]
default_profile = "personal"

[profile.personal.vars]
who = "home"

[profile.work.vars]
who = "office"

[profile.laptop.vars]
who = "lap"

[file.bashrc]
path = "~/.bashrc"
source = "bashrc"

[file.greeting]
path = "~/.greeting"
template = "greeting.j2"

[file.home_only]
path = "~/.home-only"
content = "only on personal machines\n"
profiles = ["personal"]
"#;

/// A bare remote seeded with the config.
impl World {
    fn new() -> World {
        World::seeded(
            "main",
            &[
                ("stead.toml", MANIFEST),
                ("bashrc", "# shared bashrc\n"),
                ("greeting.j2", "hello from {{ vars.who }}\n"),
            ],
        )
    }

    fn remote_record(&self) -> Value {
        self.record_on("main")
    }

    /// A new machine: its own HOME, clone at `<home>/dots`, joined and synced.
    fn machine(&self, profile: &str) -> Machine {
        let m = self.join(Some(profile));
        m.ok(&["sync"]);
        m
    }

    /// Someone else ("mallory") edits the record in a plain clone and pushes.
    fn edit_remote_record(&self, name: &str, edit: impl FnOnce(&mut Value)) {
        self.edit_record(
            name,
            "edit the record by hand",
            &[
                ("GIT_AUTHOR_NAME", "mallory"),
                ("GIT_AUTHOR_EMAIL", "mallory@elsewhere.invalid"),
            ],
            edit,
        );
    }
}

impl Machine {
    fn real_clone(&self) -> String {
        self.clone_dir()
            .canonicalize()
            .unwrap()
            .display()
            .to_string()
    }

    fn head(&self, w: &World) -> String {
        w.git(&self.clone_dir(), &["rev-parse", "HEAD"])
    }

    fn home_file(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.sb.home().join(name)).ok()
    }
}

#[test]
fn another_clone_edits_this_machines_profile_and_path_sync_and_merge_leave_both_alone() {
    let w = World::new();
    let a = w.machine("personal");
    let a_id = a.id();
    assert_eq!(
        a.home_file(".home-only").as_deref(),
        Some("only on personal machines\n")
    );
    w.edit_remote_record("mallory", |r| {
        r["machines"][&a_id]["active_profile"] = "work".into();
        r["machines"][&a_id]["config_path"] = "/elsewhere".into();
    });
    let state_before = std::fs::read(a.sb.state_file()).unwrap();
    let head_before = a.head(&w);

    // sync: a conflict this machine decides; nothing taken, removed or pushed.
    let (code, out, err) = a.run(&["sync"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(
            "🟡 Profile mismatch: local 'personal' vs remote 'work' (changed outside this machine \
             by mallory <mallory@elsewhere.invalid> in commit "
        ),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "🔴 Config path mismatch: local '{}' vs remote '/elsewhere' (changed outside this machine by mallory",
            a.real_clone()
        )),
        "{out}"
    );
    assert!(
        out.contains("The automatic merge cannot decide 2 of them"),
        "{out}"
    );
    assert!(
        out.contains("Nothing was merged, applied or pushed."),
        "{out}"
    );
    assert!(out.contains("Each machine owns its entry"), "{out}");
    assert_eq!(std::fs::read(a.sb.state_file()).unwrap(), state_before);
    assert_eq!(a.head(&w), head_before);
    assert_eq!(
        a.home_file(".home-only").as_deref(),
        Some("only on personal machines\n")
    );
    assert_eq!(
        a.home_file(".greeting").as_deref(),
        Some("hello from home\n")
    );

    // check-conflicts: both undecided, with who made the change.
    let (code, out, _) = a.run(&["--json", "state", "check-conflicts"]);
    assert_eq!(code, 4, "{out}");
    let json: Value = serde_json::from_str(&out).unwrap();
    let own: Vec<&Value> = json["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == "profile_mismatch" || c["kind"] == "path_mismatch")
        .collect();
    assert_eq!(own.len(), 2, "{json}");
    for c in own {
        assert_eq!(c["automatic"], false, "{c}");
        assert!(
            c["changed_by"]
                .as_str()
                .unwrap()
                .starts_with("mallory <mallory@elsewhere.invalid> in commit "),
            "{c}"
        );
    }

    // resolve --merge keeps this machine's own profile and path.
    let out = a.ok(&["state", "resolve", "--merge"]);
    assert!(
        out.contains(&format!(
            "This machine: profile personal, config {}",
            a.real_clone()
        )),
        "{out}"
    );
    let state = a.state();
    assert_eq!(state["active_profile"], "personal");
    assert_eq!(state["config_path"], a.real_clone().as_str());
    assert_eq!(
        a.home_file(".home-only").as_deref(),
        Some("only on personal machines\n")
    );

    // The next sync shares this machine's values; nothing is removed.
    let out = a.ok(&["sync"]);
    assert!(out.contains("Pushed the shared record"), "{out}");
    let remote = w.remote_record();
    assert_eq!(remote["machines"][&a_id]["active_profile"], "personal");
    assert_eq!(
        remote["machines"][&a_id]["config_path"],
        a.real_clone().as_str()
    );
    assert_eq!(
        a.home_file(".home-only").as_deref(),
        Some("only on personal machines\n")
    );
    assert_eq!(
        a.home_file(".greeting").as_deref(),
        Some("hello from home\n")
    );
    let (code, out, _) = a.run(&["state", "check-conflicts"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_profile_switched_from_outside_is_not_taken_by_sync() {
    // The profile alone (this machine did not change its own): still a
    // conflict, and the personal profile's file stays.
    let w = World::new();
    let a = w.machine("personal");
    let a_id = a.id();
    w.edit_remote_record("mallory", |r| {
        r["machines"][&a_id]["active_profile"] = "work".into();
    });
    let (code, out, _) = a.run(&["sync"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("🟡 Profile mismatch: local 'personal' vs remote 'work'"),
        "{out}"
    );
    assert!(!out.contains("Took the remote record"), "{out}");
    assert_eq!(a.state()["active_profile"], "personal");
    assert_eq!(
        a.home_file(".home-only").as_deref(),
        Some("only on personal machines\n")
    );
    assert_eq!(
        a.home_file(".greeting").as_deref(),
        Some("hello from home\n")
    );
    // --use-local keeps it too, and the next sync shares it.
    a.ok(&["state", "resolve", "--use-local"]);
    a.ok(&["sync"]);
    assert_eq!(
        w.remote_record()["machines"][&a_id]["active_profile"],
        "personal"
    );
    assert_eq!(
        a.home_file(".home-only").as_deref(),
        Some("only on personal machines\n")
    );
}

#[test]
fn use_remote_never_takes_an_undeclared_profile_or_a_path_that_is_not_here() {
    for bad in ["", "ghost"] {
        let w = World::new();
        let a = w.machine("personal");
        let a_id = a.id();
        w.edit_remote_record("mallory", |r| {
            r["machines"][&a_id]["active_profile"] = bad.into();
            r["machines"][&a_id]["config_path"] = "/nonexistent/elsewhere".into();
        });
        let (code, out, _) = a.run(&["sync"]);
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains(&format!(
                "Profile mismatch: local 'personal' vs remote '{bad}'"
            )),
            "{out}"
        );
        let out = a.ok(&["state", "resolve", "--use-remote"]);
        assert!(
            out.contains(&format!(
                "Note: Kept this machine's profile 'personal': the remote's '{bad}' is not a profile \
                 the manifest declares (declared: laptop, personal, work)."
            )),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "Note: Kept this machine's config path '{}': the remote's '/nonexistent/elsewhere' \
                 does not exist here.",
                a.real_clone()
            )),
            "{out}"
        );
        let state = a.state();
        assert_eq!(state["active_profile"], "personal");
        assert_eq!(state["config_path"], a.real_clone().as_str());
        // Everything still works from here.
        a.ok(&["apply", "--yes"]);
        a.ok(&["sync"]);
        assert_eq!(
            a.home_file(".home-only").as_deref(),
            Some("only on personal machines\n")
        );
    }
}

#[test]
fn use_remote_takes_a_declared_profile_from_outside() {
    let w = World::new();
    let a = w.machine("personal");
    let a_id = a.id();
    w.edit_remote_record("mallory", |r| {
        r["machines"][&a_id]["active_profile"] = "work".into();
    });
    let out = a.ok(&["state", "resolve", "--use-remote"]);
    assert!(out.contains("This machine: profile work"), "{out}");
    assert!(!out.contains("Kept this machine's"), "{out}");
    assert_eq!(a.state()["active_profile"], "work");
}

#[test]
fn resolve_with_nothing_to_resolve_changes_nothing() {
    let w = World::new();
    let a = w.machine("personal");
    let serial = a.state()["lineage"]["serial"].clone();
    let head = a.head(&w);
    for flag in ["--merge", "--use-local"] {
        let out = a.ok(&["state", "resolve", flag]);
        assert!(
            out.starts_with(
                "Nothing to resolve: this machine's record and origin/main do not conflict"
            ),
            "{out}"
        );
        assert!(out.contains("Nothing was changed."), "{out}");
        assert_eq!(a.state()["lineage"]["serial"], serial);
        assert_eq!(a.head(&w), head, "nothing committed");
    }
}

/// A machine whose entry was edited elsewhere: something for `resolve`.
fn conflicted() -> (World, Machine) {
    let w = World::new();
    let a = w.machine("personal");
    let a_id = a.id();
    w.edit_remote_record("mallory", |r| {
        r["machines"][&a_id]["active_profile"] = "work".into();
    });
    (w, a)
}

#[test]
fn manual_resolve_without_a_terminal_or_an_editor_refuses_instead_of_starting_vi() {
    let (w, a) = conflicted();
    // A `vi` on PATH that would show it was started.
    let bin = a.sb.home().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let marker = a.sb.home().join("vi-started");
    let vi = bin.join("vi");
    std::fs::write(&vi, format!("#!/bin/sh\ntouch {}\n", marker.display())).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&vi, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let state_before = std::fs::read(a.sb.state_file()).unwrap();
    let head = a.head(&w);
    let out = a
        .cmd(&["state", "resolve", "--manual"])
        .env_remove("EDITOR")
        .env_remove("VISUAL")
        .env("PATH", path)
        .write_stdin("")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "'stead state resolve --manual' needs an editor, and neither $VISUAL nor $EDITOR is set \
             and there is no terminal to run vi in"
        ),
        "{err}"
    );
    assert!(err.contains("Nothing was changed. Set EDITOR"), "{err}");
    assert!(!marker.exists(), "vi was started");
    assert_eq!(std::fs::read(a.sb.state_file()).unwrap(), state_before);
    assert_eq!(a.head(&w), head);
}

#[test]
fn an_invalid_manual_edit_says_so_plainly() {
    let (w, a) = conflicted();
    let editor = a.sb.home().join("break.sh");
    std::fs::write(&editor, "#!/bin/sh\necho '{ not json' > \"$1\"\n").unwrap();
    let head = a.head(&w);
    let out = a
        .cmd(&["state", "resolve", "--manual"])
        .env("EDITOR", format!("sh {}", editor.display()))
        .env_remove("VISUAL")
        .write_stdin("")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("Error: the edited record is invalid: "),
        "{err}"
    );
    assert!(err.contains("line 1 column"), "{err}");
    assert!(
        err.contains("Nothing was changed. Run 'stead state resolve --manual' again."),
        "{err}"
    );
    // Not the advice for a corrupt record in the repo.
    assert!(!err.contains("the shared record"), "{err}");
    assert!(!err.contains("git log"), "{err}");
    assert_eq!(a.head(&w), head);
}

#[test]
fn init_refuses_a_profile_the_manifest_does_not_declare() {
    let w = World::new();
    let m = Machine { sb: Sandbox::new() };
    let clone = m.clone_dir();
    let (code, out, err) = m.run(&[
        "init",
        "--repo",
        w.url(),
        "--path",
        clone.to_str().unwrap(),
        "--profile",
        "ghost",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("unknown profile 'ghost': the manifest ")
            && err.contains("stead.toml does not declare it"),
        "{err}"
    );
    assert!(
        err.contains("Profiles in this manifest: laptop, personal, work"),
        "{err}"
    );
    assert!(!m.sb.state_file().exists(), "no state written");
    // A plain init on that config repo refuses it too.
    let (code, _, err) = m.run(&[
        "init",
        "--path",
        clone.to_str().unwrap(),
        "--profile",
        "ghost",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("Profiles in this manifest: laptop, personal, work"),
        "{err}"
    );
    assert!(!m.sb.state_file().exists(), "no state written");
    // A declared one is taken.
    m.ok(&[
        "init",
        "--path",
        clone.to_str().unwrap(),
        "--profile",
        "work",
    ]);
    assert_eq!(m.state()["active_profile"], "work");
}
