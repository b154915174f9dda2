//! The converged seal through the library's converge transaction: a no-op
//! run past the racy window seals, and the seal then holds until anything a
//! plan rests on changes: a managed file (also edited in the same second
//! with its mtime set back), its source, `stead.toml`, a directory above a
//! managed path, a link the load followed, the state record, the journal,
//! or what the run is asked. Runs that change something remove it first;
//! manifests with resources a stat cannot vouch for are never sealed. The
//! verification time is moved past the racy window (`FileCheck::now_ns`)
//! instead of sleeping through it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use stead_lib::converge::{self, FileCheck, PlanSource, PrepareOptions, Silent, Target};
use stead_lib::layout::Layout;
use stead_lib::lock::{self, LockConfig, LockRequest};
use stead_lib::machine::MachineInfo;
use stead_lib::run::RunControl;
use stead_lib::seal::{self, Request, SEAL_FILE, Seal};
use stead_lib::state::{Loaded, State, StateStore};

const FILES: &str = r#"
[file.a]
path = "~/d/a"
content = "aaa\n"

[file.b]
path = "~/d/sub/b"
source = "b.src"
mode = "0600"

[file.gone]
path = "~/gone"
ensure = "absent"

[dir.d]
path = "~/d"

[symlink.l]
path = "~/l"
target = "~/d/a"

[noop.n]
"#;

struct Machine {
    root: tempfile::TempDir,
    layout: Layout,
    config: PathBuf,
}

/// Ten seconds ahead: what is read then is past the racy window.
fn later() -> i128 {
    stead_lib::stat_cache::now_ns() + 10_000_000_000
}

impl Machine {
    fn new(manifest: &str) -> Machine {
        let root = tempfile::tempdir().unwrap();
        let home = root.path().join("home");
        let config = root.path().join("config");
        fs::create_dir_all(&home).unwrap();
        fs::create_dir_all(&config).unwrap();
        fs::write(config.join("stead.toml"), manifest).unwrap();
        fs::write(config.join("b.src"), "bbb\n").unwrap();
        Machine {
            layout: Layout::new(home, Some(root.path().join("state"))),
            config,
            root,
        }
    }

    fn home(&self) -> &Path {
        self.layout.home()
    }

    fn request(&self) -> Request<'_> {
        Request {
            config: Some(&self.config),
            profile: None,
        }
    }

    /// One apply under the lock, verified at `now_ns` (`None`: the clock):
    /// executes the plan, or records an unchanged one (which may seal).
    /// Returns whether the plan changed anything.
    fn apply(&self, now_ns: Option<i128>) -> bool {
        let store = StateStore::new(self.layout.clone());
        let guard = lock::acquire(
            &self.layout,
            &LockConfig::default(),
            &LockRequest::new("apply", "test-machine"),
            &mut |_| {},
        )
        .unwrap();
        let state = match store.load().unwrap() {
            Some(Loaded::Current(state)) => *state,
            None => State::new(MachineInfo::current("test-machine")),
            Some(_) => panic!("unexpected state form"),
        };
        let check = FileCheck {
            verify: false,
            now_ns,
        };
        let prepared = converge::prepare(
            &self.layout,
            &state,
            &self.options(check, None, None),
            &Silent,
        )
        .unwrap();
        let target = Target {
            layout: &self.layout,
            store: &store,
            guard: &guard,
        };
        let changed = !prepared.plan.is_empty();
        if changed {
            let executed =
                converge::execute(target, state, &prepared, 2, &RunControl::new(), &Silent)
                    .unwrap();
            assert!(!executed.outcome.has_failures());
        } else {
            converge::record_unchanged(target, state, &prepared).unwrap();
        }
        guard.release().unwrap();
        changed
    }

    /// Applied, then found unchanged past the racy window: sealed.
    fn sealed(manifest: &str) -> Machine {
        let m = Machine::new(manifest);
        assert!(m.apply(None), "the first run creates");
        assert!(!m.apply(Some(later())), "the second run changes nothing");
        assert!(m.seal_file().exists(), "a no-op past the racy window seals");
        assert!(m.holds().is_some(), "the fresh seal holds");
        m
    }

    fn seal_file(&self) -> PathBuf {
        self.layout.state_dir().join(SEAL_FILE)
    }

    fn holds(&self) -> Option<seal::Hit> {
        self.holds_for(&self.request())
    }

    fn holds_for(&self, request: &Request) -> Option<seal::Hit> {
        Seal::read(&self.layout)?.holds(&converge::seal_key(&self.layout, request), 4)
    }

    /// What the seal vouches for when it does not hold: the ids of the
    /// resources left to plan, or `None` for a plan in full.
    fn drifted(&self) -> Option<Vec<String>> {
        let seal = Seal::read(&self.layout)?;
        match seal.check(&converge::seal_key(&self.layout, &self.request()), 4) {
            seal::Check::Drifted(d) => {
                let mut ids: Vec<String> = d.resources.into_iter().collect();
                ids.sort();
                Some(ids)
            }
            seal::Check::Holds(_) => panic!("the seal still holds"),
            seal::Check::Broken => None,
        }
    }

    /// What the seal, drifted, vouches for.
    fn drift(&self) -> seal::Drift {
        let seal = Seal::read(&self.layout).unwrap();
        match seal.check(&converge::seal_key(&self.layout, &self.request()), 4) {
            seal::Check::Drifted(drift) => drift,
            other => panic!("the seal does not drift: {other:?}"),
        }
    }

    /// `prepare` of the repair of `drift`, with the compiled manifest read
    /// on a thread of its own when `compiled` is given.
    fn prepare_repair(
        &self,
        state: &State,
        drift: &seal::Drift,
        compiled: Option<&converge::CompiledRead>,
    ) -> converge::Prepared {
        let options = self.options(FileCheck::default(), Some(drift), compiled);
        converge::prepare(&self.layout, state, &options, &Silent).unwrap()
    }

    /// What an apply of this machine's manifest is asked, as `stead apply`
    /// asks it (a seal requested).
    fn options<'a>(
        &'a self,
        check: FileCheck,
        drift: Option<&'a seal::Drift>,
        compiled: Option<&'a converge::CompiledRead>,
    ) -> PrepareOptions<'a> {
        PrepareOptions {
            source: PlanSource::Manifest {
                config: Some(&self.config),
                profile: None,
                force: false,
            },
            jobs: 2,
            rerun: &[],
            check,
            seal: Some(self.request()),
            checks: Default::default(),
            only: None,
            drift,
            compiled,
        }
    }
}

#[test]
fn a_sealed_no_op_counts_its_resources_and_every_path_it_rests_on() {
    let m = Machine::sealed(FILES);
    let hit = m.holds().unwrap();
    assert_eq!(hit.unchanged, 6);
    assert_eq!(
        hit.serial,
        StateStore::new(m.layout.clone())
            .load_current()
            .unwrap()
            .lineage
            .serial
    );
    // state, journal, binary, stead.toml; a, b, b.src, gone, l; the
    // directories from ~/d/sub up to /.
    let dirs = m.home().join("d/sub").ancestors().count();
    assert_eq!(hit.paths, 4 + 5 + dirs, "{hit:?}");
}

#[test]
fn a_no_op_within_the_racy_window_leaves_no_seal() {
    let m = Machine::new(FILES);
    assert!(m.apply(None));
    assert!(!m.apply(None), "nothing to change");
    assert!(
        !m.seal_file().exists(),
        "files written a moment ago are not settled"
    );
}

#[test]
fn an_edit_in_the_same_second_with_its_mtime_set_back_breaks_the_seal() {
    let m = Machine::sealed(FILES);
    let a = m.home().join("d/a");
    let before = fs::metadata(&a).unwrap();
    fs::write(&a, "AAA\n").unwrap();
    let mtime = nix::sys::time::TimeSpec::new(
        std::os::unix::fs::MetadataExt::mtime(&before),
        std::os::unix::fs::MetadataExt::mtime_nsec(&before),
    );
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        &a,
        &mtime,
        &mtime,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::mtime_nsec(&fs::metadata(&a).unwrap()),
        std::os::unix::fs::MetadataExt::mtime_nsec(&before),
        "size and mtime are as they were"
    );
    assert!(m.holds().is_none(), "the ctime still moved");
    assert!(m.apply(None), "the plan finds the edit and repairs it");
    assert_eq!(fs::read_to_string(&a).unwrap(), "aaa\n");
}

/// Each change to something a plan rests on, made to a fresh sealed machine,
/// and what the broken seal still vouches for: a change to a path only one
/// resource rests on leaves only that resource to plan (`Some`); a change
/// to one that every plan or several resources rest on leaves a plan in
/// full (`None`).
#[test]
fn anything_a_plan_rests_on_breaks_the_seal() {
    type Change = fn(&Machine);
    let changes: &[(&str, Option<&[&str]>, Change)] = &[
        ("managed file removed", Some(&["file.a"]), |m| {
            fs::remove_file(m.home().join("d/a")).unwrap()
        }),
        ("managed file's mode", Some(&["file.b"]), |m| {
            fs::set_permissions(m.home().join("d/sub/b"), fs::Permissions::from_mode(0o644))
                .unwrap()
        }),
        ("source edited", Some(&["file.b"]), |m| {
            fs::write(m.config.join("b.src"), "BBB\n").unwrap()
        }),
        ("absent file created", Some(&["file.gone"]), |m| {
            fs::write(m.home().join("gone"), "x").unwrap()
        }),
        ("link replaced", Some(&["symlink.l"]), |m| {
            fs::remove_file(m.home().join("l")).unwrap();
            std::os::unix::fs::symlink(m.home().join("d/sub/b"), m.home().join("l")).unwrap();
        }),
        (
            "two managed files edited",
            Some(&["file.a", "file.b"]),
            |m| {
                fs::write(m.home().join("d/a"), "A\n").unwrap();
                fs::write(m.home().join("d/sub/b"), "B\n").unwrap();
            },
        ),
        // Also the directory above ~/d/a: not dir.d's alone.
        ("declared directory's mode", None, |m| {
            fs::set_permissions(m.home().join("d"), fs::Permissions::from_mode(0o700)).unwrap()
        }),
        (
            "a managed file edited and a directory above one swapped",
            None,
            |m| {
                fs::write(m.home().join("d/a"), "A\n").unwrap();
                let sub = m.home().join("d/sub");
                let moved = m.root.path().join("moved-sub");
                fs::rename(&sub, &moved).unwrap();
                std::os::unix::fs::symlink(&moved, &sub).unwrap();
            },
        ),
        ("directory above a file swapped for a link", None, |m| {
            let sub = m.home().join("d/sub");
            let moved = m.root.path().join("moved-sub");
            fs::rename(&sub, &moved).unwrap();
            std::os::unix::fs::symlink(&moved, &sub).unwrap();
        }),
        ("stead.toml rewritten with the same text", None, |m| {
            let text = fs::read(m.config.join("stead.toml")).unwrap();
            fs::write(m.config.join("stead.toml"), text).unwrap();
        }),
        ("state record replaced by a copy", None, |m| {
            let state = m.layout.state_file();
            let copy = state.with_extension("copy");
            fs::copy(&state, &copy).unwrap();
            fs::rename(&copy, &state).unwrap();
        }),
        ("journal appended", None, |m| {
            use std::io::Write;
            let journal = m.layout.state_dir().join("journal.jsonl");
            let mut f = fs::OpenOptions::new().append(true).open(journal).unwrap();
            f.write_all(b"\n").unwrap();
        }),
    ];
    for (what, left_to_plan, change) in changes {
        let m = Machine::sealed(FILES);
        change(&m);
        assert!(m.holds().is_none(), "the seal still held after: {what}");
        let expected = left_to_plan.map(|ids| ids.iter().map(|s| s.to_string()).collect());
        assert_eq!(m.drifted(), expected, "after: {what}");
    }
}

#[test]
fn a_seal_holds_only_for_the_request_it_was_made_for() {
    let m = Machine::sealed(FILES);
    let other_profile = Request {
        config: Some(&m.config),
        profile: Some("work"),
    };
    assert!(m.holds_for(&other_profile).is_none());
    let no_config = Request {
        config: None,
        profile: None,
    };
    assert!(m.holds_for(&no_config).is_none());
}

#[test]
fn a_link_the_load_followed_is_part_of_the_seal() {
    let text = "[file.a]\npath = \"~/cfg/a\"\ncontent = \"a\\n\"\n";
    let m = Machine::new(text);
    let real = m.root.path().join("real-cfg");
    let other = m.root.path().join("other-cfg");
    fs::create_dir_all(&real).unwrap();
    fs::create_dir_all(&other).unwrap();
    std::os::unix::fs::symlink(&real, m.home().join("cfg")).unwrap();
    assert!(m.apply(None));
    assert_eq!(fs::read_to_string(real.join("a")).unwrap(), "a\n");
    assert!(!m.apply(Some(later())));
    assert!(m.holds().is_some());
    // The same file, but the link now leads elsewhere: a plan would write
    // ~/cfg/a into other-cfg.
    fs::remove_file(m.home().join("cfg")).unwrap();
    std::os::unix::fs::symlink(&other, m.home().join("cfg")).unwrap();
    assert!(m.holds().is_none());
}

#[test]
fn resources_a_stat_cannot_vouch_for_are_never_sealed() {
    let manifests = [
        "[file.a]\npath = \"~/a\"\ncontent = \"a\\n\"\n[exec.e]\ncommand = \"true\"\nunless = \"true\"\n",
        "[file.t]\npath = \"~/t\"\ntemplate = \"t.j2\"\n",
        "[dir.p]\npath = \"~/p\"\npurge = true\n",
    ];
    for text in manifests {
        let m = Machine::new(text);
        fs::write(m.config.join("t.j2"), "{{ 1 + 1 }}\n").unwrap();
        m.apply(None);
        assert!(!m.apply(Some(later())), "{text}");
        assert!(!m.seal_file().exists(), "sealed: {text}");
    }
}

#[test]
fn a_run_that_changes_something_removes_the_seal() {
    let m = Machine::sealed(FILES);
    fs::write(m.config.join("stead.toml"), FILES.replace("aaa", "changed")).unwrap();
    assert!(m.apply(None));
    assert!(!m.seal_file().exists());
    assert_eq!(
        fs::read_to_string(m.home().join("d/a")).unwrap(),
        "changed\n"
    );
}

#[test]
fn a_damaged_or_foreign_seal_file_is_no_seal() {
    let m = Machine::sealed(FILES);
    let good = fs::read(m.seal_file()).unwrap();
    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    let damaged: [Vec<u8>; 4] = [
        flipped,
        good[..good.len() - 1].to_vec(),
        b"not a seal".to_vec(),
        Vec::new(),
    ];
    for bytes in damaged {
        fs::write(m.seal_file(), &bytes).unwrap();
        assert!(Seal::read(&m.layout).is_none());
    }
    // A damaged seal costs only the plan: the next no-op seals again.
    assert!(!m.apply(Some(later())));
    assert!(m.holds().is_some());
}

#[test]
fn a_directory_that_moves_while_the_plan_runs_is_not_sealed() {
    let m = Machine::new(FILES);
    assert!(m.apply(None));
    let manifest = stead_lib::converge::load_manifest(&m.layout, Some(&m.config), None, None)
        .unwrap()
        .0;
    let draft = converge::seal_draft(&m.layout, &m.request(), &manifest, 1, later()).unwrap();
    assert!(
        draft.paths().iter().any(|p| p.path == m.home().join("d")),
        "the declared directory is sealed as a node"
    );
    fs::set_permissions(m.home().join("d"), fs::Permissions::from_mode(0o711)).unwrap();
    assert!(!draft.seal(&m.layout, 6).unwrap());
    assert!(!m.seal_file().exists());
}

const EXEC_AND_LINE: &str = r#"
[exec.marker]
command = "touch \"$HOME/marker\""
creates = "~/marker"

[line.rc]
path = "~/rc"
line = "export A=1"
create = true
"#;

#[test]
fn an_exec_with_a_marker_and_a_line_are_sealed_by_the_paths_they_read() {
    let m = Machine::sealed(EXEC_AND_LINE);
    assert!(m.home().join("marker").exists());
    assert_eq!(m.holds().unwrap().unchanged, 2);

    fs::remove_file(m.home().join("marker")).unwrap();
    assert!(
        m.holds().is_none(),
        "the marker is gone: the exec would run"
    );

    let m = Machine::sealed(EXEC_AND_LINE);
    fs::write(m.home().join("rc"), "export B=2\n").unwrap();
    assert!(m.holds().is_none(), "the line is gone from the file");
}

#[test]
fn a_marker_reached_through_a_link_is_sealed_by_the_link_itself() {
    let text =
        "[exec.marker]\ncommand = \"touch \\\"$HOME/via/marker\\\"\"\ncreates = \"~/via/marker\"\n";
    let m = Machine::new(text);
    let first = m.root.path().join("first");
    let second = m.root.path().join("second");
    fs::create_dir_all(&first).unwrap();
    fs::create_dir_all(&second).unwrap();
    std::os::unix::fs::symlink(&first, m.home().join("via")).unwrap();
    assert!(m.apply(None));
    assert!(first.join("marker").exists());
    assert!(!m.apply(Some(later())));
    assert!(m.holds().is_some());
    // Re-pointed: the marker is not there any more (a new link may even
    // get the old one's inode number).
    fs::remove_file(m.home().join("via")).unwrap();
    std::os::unix::fs::symlink(&second, m.home().join("via")).unwrap();
    assert!(m.holds().is_none());
}

/// A drift's compiled manifest read on a thread of its own, started before
/// the state record is loaded (as `stead apply` does), gives the plan that
/// a read inside `prepare` gives. The read is used once (with the file
/// gone, a second prepare with it parses `stead.toml`), and never for
/// another digest than its own.
#[test]
fn a_compiled_manifest_read_beside_the_state_load_plans_what_prepare_reads() {
    let m = Machine::sealed(FILES);
    fs::write(m.home().join("d/a"), "edited\n").unwrap();
    let drift = m.drift();
    assert!(
        drift.compiled.is_some(),
        "the sealing run kept a compiled form"
    );
    let guard = lock::acquire(
        &m.layout,
        &LockConfig::default(),
        &LockRequest::new("apply", "test-machine"),
        &mut |_| {},
    )
    .unwrap();
    let read = converge::CompiledRead::start(&m.layout, &drift).unwrap();
    let state = StateStore::new(m.layout.clone()).load_current().unwrap();
    let mut elsewhere = drift.clone();
    elsewhere.compiled = Some([7; 32]);
    let prepare = |drift: &seal::Drift, compiled: Option<&converge::CompiledRead>| {
        m.prepare_repair(&state, drift, compiled)
    };
    let other_digest = prepare(&elsewhere, Some(&read));
    let early = prepare(&drift, Some(&read));
    let inside = prepare(&drift, None);
    fs::remove_file(m.layout.state_dir().join("converged.manifest")).unwrap();
    let again = prepare(&drift, Some(&read));
    assert!(
        !other_digest.from_compiled,
        "no compiled form has that digest"
    );
    assert!(early.from_compiled, "the read's result");
    assert!(inside.from_compiled, "the file, read in prepare");
    assert!(
        !again.from_compiled,
        "the read was used up, the file is gone"
    );
    let ids: Vec<&str> = early.plan.changes.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(
        ids,
        ["file.a", "symlink.l"],
        "the drifted file and what waits for it"
    );
    assert_eq!(early.plan.changes, inside.plan.changes);
    assert_eq!(again.plan.changes, inside.plan.changes);
    assert_eq!(other_digest.plan.changes, inside.plan.changes);
    guard.release().unwrap();
}

/// A repair plans from the part of the compiled manifest its drift needs
/// (the drifted resources and what waits for them), and that plan is the
/// one the whole manifest, parsed from `stead.toml`, gives for the same
/// drift: in each drift below, with a directory whose files wait for it,
/// ordering edges, a link to a drifted file, and an exec whose marker is
/// in the directory (outside the part but when its marker is removed).
#[test]
fn a_repair_planned_from_its_part_of_the_compiled_manifest_is_the_whole_manifests_plan() {
    const TEXT: &str = r#"
[dir.d]
path = "~/d"
mode = "0755"

[file.a]
path = "~/d/a"
content = "aaa\n"

[file.b]
path = "~/d/b"
content = "bbb\n"
mode = "0644"
after = ["file.a"]

[file.far]
path = "~/far"
content = "far\n"

[exec.make]
command = "mkdir -p \"$HOME/d\" && touch \"$HOME/d/built\""
creates = "~/d/built"

[symlink.l]
path = "~/l"
target = "~/d/a"

[noop.n]
after = ["file.b"]
"#;
    type Drift = fn(&Path);
    let drifts: [(&str, Drift); 5] = [
        ("a file's content", |home| {
            fs::write(home.join("d/a"), "edited\n").unwrap()
        }),
        ("a file's mode", |home| {
            fs::set_permissions(home.join("d/b"), fs::Permissions::from_mode(0o600)).unwrap()
        }),
        ("a file others wait for, and one alone", |home| {
            fs::write(home.join("d/b"), "edited\n").unwrap();
            fs::write(home.join("far"), "edited\n").unwrap();
        }),
        ("the exec's marker", |home| {
            fs::remove_file(home.join("d/built")).unwrap()
        }),
        ("the link", |home| {
            fs::remove_file(home.join("l")).unwrap();
            std::os::unix::fs::symlink(home.join("far"), home.join("l")).unwrap();
        }),
    ];
    for (what, drift) in drifts {
        let m = Machine::sealed(TEXT);
        drift(m.home());
        let found = m.drift();
        assert!(found.compiled.is_some(), "{what}");
        let state = StateStore::new(m.layout.clone()).load_current().unwrap();
        let prepare =
            |compiled: Option<&converge::CompiledRead>| m.prepare_repair(&state, &found, compiled);
        let read = converge::CompiledRead::start(&m.layout, &found).unwrap();
        let on_its_thread = prepare(Some(&read));
        let in_prepare = prepare(None);
        fs::remove_file(m.layout.state_dir().join("converged.manifest")).unwrap();
        let parsed = prepare(None);
        assert!(
            on_its_thread.from_compiled && in_prepare.from_compiled,
            "{what}"
        );
        assert!(!parsed.from_compiled, "{what}");
        assert!(!parsed.plan.is_empty(), "{what}: something to repair");
        assert_eq!(on_its_thread.plan, parsed.plan, "{what}");
        assert_eq!(in_prepare.plan, parsed.plan, "{what}");
        let ids: Vec<&str> = parsed.plan.changes.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(
            ids.contains(&"exec.make"),
            what == "the exec's marker",
            "{what}: {ids:?}"
        );
        // And the repair it makes leaves the machine as declared.
        assert!(m.apply(None), "{what}: the repair changes something");
        assert!(!m.apply(Some(later())), "{what}: then nothing is left");
        assert!(m.home().join("d/built").exists(), "{what}");
    }
}
