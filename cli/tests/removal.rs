//! Removals and backups (issue 12, items 2-4): what stead removes without a
//! proof that it wrote it is backed up first, and outside the home not
//! removed at all without `--force`; backups are private, complete and one
//! folder per run; special files are noted, never opened; the temp files of
//! killed runs are removed by the next run.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::Repo;

/// Every path below `dir` (not following links).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

/// The backups of `name` (a file name) under the state dir's backups.
fn backups_named(r: &Repo, name: &str) -> Vec<PathBuf> {
    walk(&r.sb.state_dir().join("backups"))
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == name))
        .collect()
}

/// Edits state.json by hand, as a user (or bit rot) might.
fn edit_state(r: &Repo, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v = r.sb.state_json();
    edit(&mut v);
    fs::write(r.sb.state_file(), serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

fn file_manifest(path: &str, content: &str) -> String {
    format!("[file.f]\npath = \"{path}\"\ncontent = \"{content}\"\n")
}

const EMPTY: &str = "[noop.keep]\n";

#[test]
fn removal_of_a_file_without_a_recorded_checksum_is_backed_up_first() {
    let r = Repo::new(&file_manifest("~/f", "mine\\n"));
    r.ok(&["apply", "--yes"]);
    // The user edits it, and the record loses its checksum.
    fs::write(r.path("f"), "precious edit\n").unwrap();
    edit_state(&r, |v| {
        v["checksums"].as_object_mut().unwrap().remove("~/f");
    });
    r.write_manifest(EMPTY);
    let plan = r.ok(&["plan"]);
    assert!(plan.contains("no checksum recorded"), "{plan}");
    r.ok(&["apply", "--yes"]);
    assert!(!r.path("f").exists());
    let copies = backups_named(&r, "f");
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(fs::read_to_string(&copies[0]).unwrap(), "precious edit\n");
}

#[test]
fn removal_of_a_file_stead_wrote_unchanged_makes_no_backup() {
    let r = Repo::new(&file_manifest("~/f", "mine\\n"));
    r.ok(&["apply", "--yes"]);
    r.write_manifest(EMPTY);
    r.ok(&["apply", "--yes"]);
    assert!(!r.path("f").exists());
    assert!(backups_named(&r, "f").is_empty());
}

#[test]
fn removal_outside_the_home_needs_a_matching_checksum_or_force() {
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim.conf");
    fs::write(&victim, "system file stead never wrote\n").unwrap();
    let r = Repo::new(EMPTY);
    r.ok(&["apply", "--yes"]);
    // A hand-made record claims the file, without a checksum.
    let key = victim.to_str().unwrap().to_string();
    edit_state(&r, |v| {
        v["resources"]["file.ghost"] =
            serde_json::json!({"kind": "file", "keys": [key], "serial": 1});
    });
    let (code, out, err) = r.run(&["apply", "--yes"]);
    assert!(
        out.contains("outside the home") && out.contains("--force"),
        "code {code}\n{out}\n{err}"
    );
    assert_eq!(
        fs::read_to_string(&victim).unwrap(),
        "system file stead never wrote\n",
        "nothing outside the home is removed without proof"
    );
    // Still recorded: the next plan shows the same conflict.
    assert!(r.sb.state_json()["resources"]["file.ghost"].is_object());

    // --force removes it, backed up first.
    r.ok(&["apply", "--yes", "--force"]);
    assert!(!victim.exists());
    let copies = backups_named(&r, "victim.conf");
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(
        fs::read_to_string(&copies[0]).unwrap(),
        "system file stead never wrote\n"
    );
}

#[test]
fn a_file_stead_wrote_outside_the_home_is_removed_without_force() {
    let outside = tempfile::tempdir().unwrap();
    let p = outside.path().join("app.conf");
    let r = Repo::new(&file_manifest(p.to_str().unwrap(), "written by stead\\n"));
    r.ok(&["apply", "--yes"]);
    r.write_manifest(EMPTY);
    r.ok(&["apply", "--yes"]);
    assert!(!p.exists());
    assert!(backups_named(&r, "app.conf").is_empty());
}

#[test]
fn a_link_stead_made_outside_the_home_is_removed_and_a_foreign_one_is_not() {
    let outside = tempfile::tempdir().unwrap();
    let link = outside.path().join("l");
    let r = Repo::new(&format!(
        "[symlink.l]\npath = \"{}\"\ntarget = \"/etc/hostname\"\n",
        link.display()
    ));
    r.ok(&["apply", "--yes"]);
    // Someone points the link elsewhere: it is no longer stead's link.
    fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink("/elsewhere", &link).unwrap();
    r.write_manifest(EMPTY);
    let (_, out, _) = r.run(&["apply", "--yes"]);
    assert!(out.contains("outside the home"), "{out}");
    assert_eq!(fs::read_link(&link).unwrap(), Path::new("/elsewhere"));
    // Put back as stead made it: its recorded checksum matches, no --force needed.
    fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", &link).unwrap();
    r.ok(&["apply", "--yes"]);
    assert!(fs::symlink_metadata(&link).is_err());
}

#[test]
fn removal_of_a_link_without_a_recorded_checksum_is_backed_up() {
    let r = Repo::new("[symlink.l]\npath = \"~/l\"\ntarget = \"/etc/hostname\"\n");
    r.ok(&["apply", "--yes"]);
    edit_state(&r, |v| {
        if let Some(sums) = v["checksums"].as_object_mut() {
            sums.remove("~/l");
        }
    });
    r.write_manifest(EMPTY);
    r.ok(&["apply", "--yes"]);
    assert!(fs::symlink_metadata(r.path("l")).is_err());
    let copies = backups_named(&r, "l");
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(
        fs::read_link(&copies[0]).unwrap(),
        Path::new("/etc/hostname")
    );
}

#[test]
fn backups_of_one_run_share_one_private_folder() {
    let mut m = String::new();
    for i in 0..6 {
        m.push_str(&format!(
            "[file.f{i}]\npath = \"~/sub{i}/f{i}\"\ncontent = \"new\\n\"\n"
        ));
    }
    let r = Repo::new(&m);
    for i in 0..6 {
        fs::create_dir_all(r.path(&format!("sub{i}"))).unwrap();
        fs::write(r.path(&format!("sub{i}/f{i}")), format!("old {i}\n")).unwrap();
    }
    r.ok(&["apply", "--yes", "--force"]);
    let backups = r.sb.state_dir().join("backups");
    let runs: Vec<_> = fs::read_dir(&backups).unwrap().flatten().collect();
    assert_eq!(runs.len(), 1, "one folder per run: {runs:?}");
    for i in 0..6 {
        let copies = backups_named(&r, &format!("f{i}"));
        assert_eq!(copies.len(), 1);
        assert!(copies[0].starts_with(runs[0].path()));
        assert_eq!(
            fs::read_to_string(&copies[0]).unwrap(),
            format!("old {i}\n")
        );
    }
    let mut dirs: Vec<PathBuf> = walk(&backups).into_iter().filter(|p| p.is_dir()).collect();
    dirs.push(backups);
    for d in dirs {
        let mode = fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{} is {mode:o}", d.display());
    }
}

#[test]
fn a_fifo_in_a_purged_dir_is_noted_not_opened() {
    let r = Repo::new("[dir.d]\npath = \"~/d\"\npurge = true\n");
    fs::create_dir(r.path("d")).unwrap();
    nix::unistd::mkfifo(
        &r.path("d/pipe"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    // Opening the FIFO to copy it would block forever: bound the run.
    let config = r.config.path().to_str().unwrap().to_string();
    let out =
        r.sb.stead(&["--config", &config, "apply", "--yes"])
            .timeout(Duration::from_secs(60))
            .output()
            .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(fs::symlink_metadata(r.path("d/pipe")).is_err(), "purged");
    let notes = backups_named(&r, "pipe.stead-note");
    assert_eq!(notes.len(), 1, "{:?}", walk(&r.sb.state_dir()));
    let note = fs::read_to_string(&notes[0]).unwrap();
    assert!(note.contains("FIFO"), "{note}");
    assert!(backups_named(&r, "pipe").is_empty(), "never copied");
}

/// A PID no process can have (past the kernel's limit).
const DEAD: u32 = 99_999_999;
const HEX: &str = "0123456789abcdef0123456789abcdef";

#[test]
fn temps_of_killed_runs_are_removed_by_the_next_run_and_nothing_else() {
    let r = Repo::new(&file_manifest("~/dir/f", "v1\\n"));
    r.ok(&["apply", "--yes"]);
    let backups_sub = r.sb.state_dir().join("backups/20260101_000000.000/x");
    fs::create_dir_all(&backups_sub).unwrap();
    let stale = [
        // Next to a managed file: this scheme, and the older one.
        r.path(&format!("dir/.f.tmp-{DEAD}-stead-{HEX}")),
        r.path(&format!("dir/.f.tmp-{DEAD}-{HEX}")),
        // The state dir, the backups, the config repo (a killed commit).
        r.sb.state_dir()
            .join(format!(".state.json.tmp-{DEAD}-stead-{HEX}")),
        backups_sub.join(format!(".y.tmp-{DEAD}-stead-{HEX}")),
        r.config
            .path()
            .join(format!("src/.a.tmp-{DEAD}-stead-{HEX}")),
    ];
    let kept = [
        // A user's file that only looks similar, a live writer's temp, and
        // a stale-looking temp of a file stead does not manage.
        r.path("dir/.f.tmp-notes"),
        r.path(&format!("dir/.f.tmp-{}-stead-{HEX}", std::process::id())),
        r.path(&format!("dir/.other.tmp-{DEAD}-stead-{HEX}")),
    ];
    for p in stale.iter().chain(&kept) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, "partial").unwrap();
    }
    // What the killed run that left them journaled before it wrote.
    r.journal_a_killed_run();
    r.write_manifest(&file_manifest("~/dir/f", "v2\\n"));
    let out = r.ok(&["apply", "--yes"]);
    for p in &stale {
        assert!(!p.exists(), "{} left behind\n{out}", p.display());
        assert!(
            out.contains(&p.display().to_string()),
            "removal of {} not reported:\n{out}",
            p.display()
        );
    }
    for p in &kept {
        assert!(p.exists(), "{} removed", p.display());
    }
    assert_eq!(fs::read_to_string(r.path("dir/f")).unwrap(), "v2\n");
}

#[test]
fn temps_are_removed_even_when_nothing_else_changes() {
    let r = Repo::new(&file_manifest("~/f", "v1\\n"));
    r.ok(&["apply", "--yes"]);
    let temp = r.path(&format!(".f.tmp-{DEAD}-stead-{HEX}"));
    fs::write(&temp, "partial").unwrap();
    let out = r.ok(&["apply", "--yes"]);
    assert!(out.contains("No changes"), "{out}");
    assert!(out.contains("Removed a temp file"), "{out}");
    assert!(!temp.exists());
}

/// The directories of many managed files are swept on several threads:
/// every killed run's temp, in each of 40 directories, is removed and
/// reported, and nothing else.
#[test]
fn temps_next_to_files_in_many_directories_are_all_removed() {
    let manifest: String = (0..40)
        .map(|i| format!("[file.f{i}]\npath = \"~/d{i}/f\"\ncontent = \"v{i}\\n\"\n\n"))
        .collect();
    let r = Repo::new(&manifest);
    r.ok(&["apply", "--yes"]);
    let stale: Vec<_> = (0..40)
        .map(|i| r.path(&format!("d{i}/.f.tmp-{DEAD}-stead-{HEX}")))
        .collect();
    let kept: Vec<_> = (0..40)
        .map(|i| r.path(&format!("d{i}/.g.tmp-{DEAD}-stead-{HEX}")))
        .collect();
    for p in stale.iter().chain(&kept) {
        fs::write(p, "partial").unwrap();
    }
    r.journal_a_killed_run();
    let out = r.ok(&["apply", "--yes"]);
    for p in &stale {
        assert!(!p.exists(), "{} left behind\n{out}", p.display());
        assert!(out.contains(&p.display().to_string()), "{out}");
    }
    for p in &kept {
        assert!(p.exists(), "{} removed", p.display());
    }
}

/// Only a run writes in the backups' run folders, and only after its start
/// is in the journal: they are swept when the journal shows a run that did
/// not end, or no run at all, and not by every run (that walk would grow
/// with every backup the machine ever made). The backups dir itself is
/// swept by every run.
#[test]
fn backup_run_folders_are_swept_when_the_journal_shows_no_ended_run() {
    let r = Repo::new(&file_manifest("~/f", "mine\\n"));
    r.ok(&["apply", "--yes"]);
    fs::write(r.path("f"), "edited by hand\n").unwrap();
    r.ok(&["apply", "--yes"]);
    let copies = backups_named(&r, "f");
    assert_eq!(copies.len(), 1, "{copies:?}");
    let state_dir = r.sb.state_dir();
    let deep = copies[0]
        .parent()
        .unwrap()
        .join(format!(".f.tmp-{DEAD}-stead-{HEX}"));
    let top = state_dir
        .join("backups")
        .join(format!(".state_v1_x.json.tmp-{DEAD}-stead-{HEX}"));
    let apply = || {
        // A seal would skip the sweep along with the plan.
        let _ = fs::remove_file(state_dir.join("converged.seal"));
        r.ok(&["apply", "--yes"])
    };
    fs::write(&deep, "half a backup").unwrap();
    fs::write(&top, "half a state backup").unwrap();

    // The journal's last run ended: no run can have been cut short in there.
    apply();
    assert!(!top.exists(), "the backups dir was not swept");
    assert!(deep.exists(), "a run folder was walked after a clean run");

    // A run that started and never ended, as a SIGKILL leaves it.
    r.journal_a_killed_run();
    let out = apply();
    assert!(!deep.exists(), "not swept after an interrupted run:\n{out}");
    assert!(out.contains("Removed a temp file"), "{out}");

    // No journal at all (deleted, or moved aside as corrupt): proves nothing.
    fs::write(&deep, "half a backup").unwrap();
    fs::remove_file(state_dir.join("journal.jsonl")).unwrap();
    apply();
    assert!(!deep.exists(), "not swept without a journal");
}

/// Temps next to recorded paths are swept while the run plans, and those
/// next to paths only the plan names after it: a killed run's temp next to
/// a file declared for the first time, and next to a recorded file whose
/// declared path moved, are removed and reported once each, as is the one
/// next to the recorded path.
#[test]
fn temps_next_to_paths_only_the_plan_names_are_removed_too() {
    let r = Repo::new(&file_manifest("~/a/f", "v1\\n"));
    r.ok(&["apply", "--yes"]);
    let stale = [
        r.path(&format!("a/.f.tmp-{DEAD}-stead-{HEX}")),
        r.path(&format!("b/.g.tmp-{DEAD}-stead-{HEX}")),
        r.path(&format!("c/.f.tmp-{DEAD}-stead-{HEX}")),
    ];
    for p in &stale {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, "partial").unwrap();
    }
    r.journal_a_killed_run();
    r.write_manifest(&format!(
        "{}\n[file.g]\npath = \"~/b/g\"\ncontent = \"g\\n\"\n",
        file_manifest("~/c/f", "v1\\n")
    ));
    let out = r.ok(&["apply", "--yes"]);
    for p in &stale {
        assert!(!p.exists(), "{} left behind\n{out}", p.display());
        let shown = p.display().to_string();
        assert_eq!(out.matches(&shown).count(), 1, "{shown}:\n{out}");
    }
    assert_eq!(fs::read_to_string(r.path("c/f")).unwrap(), "v1\n");
    assert_eq!(fs::read_to_string(r.path("b/g")).unwrap(), "g\n");
}
