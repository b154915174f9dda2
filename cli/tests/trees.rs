//! Directory trees end to end: a `[file.NAME]` whose `source` is a
//! directory manages every file under its `path`, each as its own entry
//! (planned, drift-checked, repaired one by one), with `ignore` rules and
//! the repo's `.steadignore`, templates, `link = true`, and `purge`.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::Repo;

const FILES: usize = 1000;

/// A repo whose `tree/` holds `FILES` files in 20 directories, plus files
/// the ignore rules leave out.
fn big_tree(manifest_extra: &str) -> Repo {
    let repo = Repo::new(&format!(
        "[file.tree]\npath = \"~/.config/app\"\nsource = \"tree\"\nignore = [\"*.bak\", \"cache/\"]\n{manifest_extra}"
    ));
    for i in 0..FILES {
        repo.write_source(
            &format!("tree/d{:02}/f{i:04}.txt", i % 20),
            &format!("file {i}\n"),
        );
    }
    repo.write_source("tree/d00/old.bak", "ignored by the tree\n");
    repo.write_source("tree/cache/blob", "ignored dir\n");
    repo.write_source("tree/d01/debug.log", "ignored by .steadignore\n");
    repo.write_source(".steadignore", "*.log\n");
    repo.write_source("tree/bin/run", "#!/bin/sh\n");
    fs::set_permissions(
        repo.config.path().join("tree/bin/run"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    repo.sb.ok(&["init"]);
    repo
}

fn target(repo: &Repo, rel: &str) -> std::path::PathBuf {
    repo.path(&format!(".config/app/{rel}"))
}

fn count_files(dir: &Path) -> usize {
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            if e.file_type().unwrap().is_dir() {
                count_files(&e.path())
            } else {
                1
            }
        })
        .sum()
}

#[test]
fn a_tree_of_a_thousand_files_is_applied_drifted_repaired_and_purged() {
    let repo = big_tree("purge = true\n");

    // Applied: every file, modes kept, ignored ones left out.
    let out = repo.ok(&["apply", "--yes"]);
    assert!(out.contains("Apply complete"), "{out}");
    let app = repo.path(".config/app");
    assert_eq!(
        count_files(&app),
        FILES + 1,
        "the thousand files and bin/run"
    );
    assert_eq!(
        fs::read_to_string(target(&repo, "d07/f0007.txt")).unwrap(),
        "file 7\n"
    );
    for ignored in ["d00/old.bak", "cache", "d01/debug.log"] {
        assert!(!target(&repo, ignored).exists(), "{ignored} was copied");
    }
    let mode = fs::metadata(target(&repo, "bin/run"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755, "the source's mode is kept");
    // Each file is its own entry in the state.
    let state = repo.sb.state_json();
    let sums = state["checksums"].as_object().unwrap();
    assert!(
        sums.contains_key("~/.config/app/d07/f0007.txt"),
        "{:?}",
        sums.keys().take(3)
    );
    assert!(state["resources"]["file.tree/d07/f0007.txt"].is_object());
    let plan = repo.ok(&["plan"]);
    assert!(
        plan.contains("0 to create, 0 to update, 0 to remove"),
        "{plan}"
    );

    // Drifted: two files edited by hand, each shown by its own path.
    fs::write(target(&repo, "d03/f0003.txt"), "hand edit\n").unwrap();
    fs::write(target(&repo, "d05/f0105.txt"), "hand edit\n").unwrap();
    let (code, out, _) = repo.run(&["state", "check-drift"]);
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("Modified Files (2)"), "{out}");
    assert!(out.contains("~/.config/app/d03/f0003.txt"), "{out}");
    assert!(out.contains("~/.config/app/d05/f0105.txt"), "{out}");

    // Repaired one by one: the plan updates exactly those two.
    let plan = repo.ok(&["plan"]);
    assert!(
        plan.contains("0 to create, 2 to update, 0 to remove"),
        "{plan}"
    );
    assert!(
        plan.contains("~ file.tree/d03/f0003.txt  ~/.config/app/d03/f0003.txt"),
        "{plan}"
    );
    assert!(
        plan.contains("-hand edit\n"),
        "the plan shows the file's diff: {plan}"
    );
    repo.ok(&["apply", "--yes"]);
    assert_eq!(
        fs::read_to_string(target(&repo, "d03/f0003.txt")).unwrap(),
        "file 3\n"
    );
    let (code, _, _) = repo.run(&["state", "check-drift"]);
    assert_eq!(code, 0);

    // Purged: a file dropped from the source is removed; a file the user put
    // there is reported, kept without --force, removed (backed up) with it.
    fs::remove_file(repo.config.path().join("tree/d09/f0009.txt")).unwrap();
    fs::write(target(&repo, "d09/mine.txt"), "the user's\n").unwrap();
    fs::write(target(&repo, "d09/also.bak"), "ignored on this side too\n").unwrap();
    let (code, out, err) = repo.run(&["apply", "--yes"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("1 entry stead never wrote: ~/.config/app/d09/mine.txt; left alone. 'stead apply --force' removes them"),
        "{out}"
    );
    assert!(
        !target(&repo, "d09/f0009.txt").exists(),
        "dropped from the source"
    );
    assert_eq!(
        fs::read_to_string(target(&repo, "d09/mine.txt")).unwrap(),
        "the user's\n"
    );
    let out = repo.ok(&["apply", "--yes", "--force"]);
    assert!(out.contains("✓ file.tree updated"), "{out}");
    assert!(!target(&repo, "d09/mine.txt").exists());
    assert!(
        target(&repo, "d09/also.bak").exists(),
        "an ignored entry is never reported"
    );
    let backup = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("backed up the original to "))
        .expect("a backup line");
    assert_eq!(fs::read_to_string(backup).unwrap(), "the user's\n");
    let plan = repo.ok(&["plan"]);
    assert!(plan.contains("No changes"), "{plan}");
}

#[test]
fn without_purge_a_file_dropped_from_the_source_is_left_in_place_and_forgotten() {
    let repo = Repo::new("[file.t]\npath = \"~/t\"\nsource = \"t\"\n");
    repo.write_source("t/a", "a\n");
    repo.write_source("t/b", "b\n");
    repo.sb.ok(&["init"]);
    repo.ok(&["apply", "--yes"]);
    fs::write(repo.path("t/stray"), "mine\n").unwrap();
    fs::remove_file(repo.config.path().join("t/b")).unwrap();

    let plan = repo.ok(&["plan"]);
    assert!(
        plan.contains("file.t/b  ~/t/b  (no longer in the source of file.t; left in place and no longer managed (purge = true removes it))"),
        "{plan}"
    );
    assert!(
        !plan.contains("stray"),
        "no purge: nothing is reported: {plan}"
    );
    let out = repo.ok(&["apply", "--yes"]);
    assert!(
        out.contains("file.t/b no longer managed (nothing removed)"),
        "{out}"
    );
    assert_eq!(fs::read_to_string(repo.path("t/b")).unwrap(), "b\n");
    assert!(repo.sb.state_json()["checksums"].get("~/t/b").is_none());
    assert!(repo.ok(&["plan"]).contains("No changes"));
}

#[test]
fn removing_the_tree_declaration_removes_what_it_wrote_and_nothing_else() {
    let repo = Repo::new("[file.t]\npath = \"~/t\"\nsource = \"t\"\n");
    repo.write_source("t/a", "a\n");
    repo.write_source("t/sub/b", "b\n");
    repo.sb.ok(&["init"]);
    repo.ok(&["apply", "--yes"]);
    fs::write(repo.path("t/sub/user"), "mine\n").unwrap();
    repo.write_manifest("");
    repo.ok(&["apply", "--yes"]);
    assert!(!repo.path("t/a").exists());
    assert!(!repo.path("t/sub/b").exists());
    assert_eq!(
        fs::read_to_string(repo.path("t/sub/user")).unwrap(),
        "mine\n"
    );
}

#[test]
fn templates_render_links_link_and_the_whole_tree_comes_before_what_follows_it() {
    let repo = Repo::new(
        r#"
[vars]
greeting = "hello"

[file.t]
path = "~/t"
source = "t"

[file.l]
path = "~/l"
source = "l"
link = true

[exec.count]
command = "ls ~/t > ~/listing"
creates = "~/listing"
after = ["file.t"]
"#,
    );
    repo.write_source(
        "t/a.conf.j2",
        "{{ greeting }} from {{ profile or 'none' }}\n",
    );
    repo.write_source("t/z/plain", "plain\n");
    repo.write_source("l/x", "x\n");
    repo.write_source("l/deep/y", "y\n");
    repo.sb.ok(&["init"]);
    repo.ok(&["apply", "--yes"]);
    assert_eq!(
        fs::read_to_string(repo.path("t/a.conf")).unwrap(),
        "hello from none\n"
    );
    assert!(!repo.path("t/a.conf.j2").exists());
    for rel in ["x", "deep/y"] {
        let link = repo.path(&format!("l/{rel}"));
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(
            fs::read_link(&link).unwrap(),
            repo.config.path().join("l").join(rel)
        );
    }
    // The exec ran after every file of the tree was there.
    assert_eq!(
        fs::read_to_string(repo.path("listing")).unwrap(),
        "a.conf\nz\n"
    );
    assert!(repo.ok(&["plan"]).contains("No changes"));
}

/// Loads `manifest` with `plan`: exit 1, `want` in the report, placed at
/// `stead.toml:LINE:`.
fn load_error(repo: &Repo, manifest: &str, line: usize, want: &str) {
    repo.write_manifest(manifest);
    let (code, _, err) = repo.run(&["plan"]);
    assert_eq!(code, 1, "{manifest}: {err}");
    assert!(err.contains(want), "{manifest}: {err}");
    assert!(
        err.contains(&format!("stead.toml:{line}:")),
        "{manifest}: {err}"
    );
}

#[test]
fn tree_mistakes_are_load_errors_with_their_place() {
    let repo = Repo::new("");
    repo.write_source("t/a", "a\n");
    repo.sb.ok(&["init"]);
    let tree = "[file.t]\npath = \"~/t\"\nsource = \"t\"\n";

    std::os::unix::fs::symlink("/etc/passwd", repo.config.path().join("t/link")).unwrap();
    load_error(&repo, tree, 1, "t/link in the tree's source is a symlink");
    fs::remove_file(repo.config.path().join("t/link")).unwrap();

    load_error(
        &repo,
        &format!("{tree}\n[file.a]\npath = \"~/t/a\"\ncontent = \"x\"\n"),
        1,
        "file.t/a manages ~/t/a, which file.a manages too",
    );
    load_error(
        &repo,
        &format!("{tree}\n[file.\"t/a\"]\npath = \"~/elsewhere\"\ncontent = \"x\"\n"),
        5,
        "file.t/a is both declared and a file of a tree",
    );
    load_error(
        &repo,
        "[file.one]\npath = \"~/one\"\ncontent = \"x\"\npurge = true\n",
        1,
        "file.one has `purge`, which only a tree takes",
    );
    load_error(
        &repo,
        "[file.t]\npath = \"~\"\nsource = \"t\"\npurge = true\n",
        1,
        "would report everything in ~",
    );
    for source in ["/etc", "..", "."] {
        load_error(
            &repo,
            &format!("[file.t]\npath = \"~/t\"\nsource = \"{source}\"\n"),
            1,
            "is not a directory inside the config repo",
        );
    }
    load_error(
        &repo,
        "[tree.t]\npath = \"~/t\"\n",
        1,
        "unknown kind `tree`",
    );
    // Nothing was written by any of them.
    assert!(!repo.path("t").exists());
}

#[test]
fn a_sensitive_tree_never_shows_its_files_content() {
    let repo = Repo::new("[file.keys]\npath = \"~/keys\"\nsource = \"keys\"\nsensitive = true\n");
    repo.write_source("keys/token", "s3cr3t-one\n");
    repo.sb.ok(&["init"]);
    repo.ok(&["apply", "--yes"]);
    repo.write_source("keys/token", "s3cr3t-two\n");
    let plan = repo.ok(&["plan"]);
    assert!(plan.contains("~ file.keys/token"), "{plan}");
    assert!(plan.contains("(sensitive content hidden)"), "{plan}");
    assert!(!plan.contains("s3cr3t"), "{plan}");
    let (_, json, _) = repo.run(&["--json", "plan"]);
    assert!(!json.contains("s3cr3t"), "{json}");
    // Drift of a sensitive file is named, its content never shown.
    std::fs::write(repo.path("keys/token"), "s3cr3t-by-hand\n").unwrap();
    for args in [
        &["state", "check-drift", "--diff"][..],
        &["status", "--diff"][..],
        &["--json", "state", "check-drift", "--diff"][..],
    ] {
        let (code, out, err) = repo.run(args);
        assert_eq!(code, 4, "{args:?}: {out}{err}");
        assert!(out.contains("keys/token"), "{args:?}: {out}");
        assert!(
            !out.contains("s3cr3t") && !err.contains("s3cr3t"),
            "{args:?}: {out}{err}"
        );
    }
}
