//! End-to-end tests of symlinks in and at planned paths (issue 12, items
//! 5-7): apply acts on what it planned and never through a link that
//! appeared since; a link the user made among a path's ancestors is followed
//! once, at load, and the real path is what is shown, owned and claimed.

mod common;

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use common::Repo;

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// A dir outside the home with a file `secret` (0644) and a file `stray`.
fn outside() -> tempfile::TempDir {
    let out = tempfile::tempdir().unwrap();
    fs::write(out.path().join("secret"), "outside\n").unwrap();
    fs::set_permissions(out.path().join("secret"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(out.path().join("stray"), "outside stray\n").unwrap();
    out
}

/// `[exec.swap]`, which replaces `~/NAME` by a link to `target` when it
/// runs, so the race between plan and apply happens at a known moment.
fn swap_exec(name: &str, target: &Path) -> String {
    format!(
        "[exec.swap]\ncommand = \"mv ~/{name} ~/{name}.moved && ln -s '{}' ~/{name}\"\n",
        target.display()
    )
}

#[test]
fn a_saved_plan_refuses_a_target_swapped_for_a_symlink_and_chmods_nothing_outside() {
    let out = outside();
    let r = Repo::new("[file.f]\npath = \"~/f\"\ncontent = \"x\\n\"\nmode = \"0644\"\n");
    r.ok(&["apply", "--yes"]);
    r.write_manifest("[file.f]\npath = \"~/f\"\ncontent = \"x\\n\"\nmode = \"0600\"\n");
    let saved = r.home().join("plan.json");
    let shown = r.ok(&["plan", "--out", saved.to_str().unwrap()]);
    assert!(shown.contains("mode 0644 → 0600"), "{shown}");

    fs::remove_file(r.path("f")).unwrap();
    symlink(out.path().join("secret"), r.path("f")).unwrap();
    let (code, stdout, err) = r.run(&["apply", "--yes", saved.to_str().unwrap()]);
    assert_ne!(code, 0, "{stdout}");
    assert!(
        err.contains("planned ~/f when it was a regular file; it is a symlink to"),
        "{err}"
    );
    assert!(err.contains("Run 'stead plan --out"), "{err}");
    assert_eq!(
        mode(&out.path().join("secret")),
        0o644,
        "chmod went outside"
    );
}

#[test]
fn a_saved_plan_refuses_a_file_edited_since_the_plan() {
    let r = Repo::new("[file.f]\npath = \"~/f\"\ncontent = \"one\\n\"\n");
    r.ok(&["apply", "--yes"]);
    r.write_manifest("[file.f]\npath = \"~/f\"\ncontent = \"two\\n\"\n");
    let saved = r.home().join("plan.json");
    r.ok(&["plan", "--out", saved.to_str().unwrap()]);
    fs::write(r.path("f"), "edited after the plan\n").unwrap();
    let (code, _, err) = r.run(&["apply", "--yes", saved.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        err.contains("it is a regular file with other content now"),
        "{err}"
    );
    assert_eq!(read(&r.path("f")), "edited after the plan\n");
}

#[test]
fn a_saved_plan_refuses_a_purged_dir_swapped_for_a_link() {
    let out = outside();
    let r = Repo::new("[dir.d]\npath = \"~/d\"\npurge = true\n");
    fs::create_dir(r.path("d")).unwrap();
    fs::write(r.path("d/stray"), "mine\n").unwrap();
    r.ok(&["init"]);
    let saved = r.home().join("plan.json");
    let shown = r.ok(&["plan", "--out", saved.to_str().unwrap()]);
    assert!(shown.contains("purge 1 unmanaged: ~/d/stray"), "{shown}");
    fs::rename(r.path("d"), r.path("d.moved")).unwrap();
    symlink(out.path(), r.path("d")).unwrap();
    let (code, _, err) = r.run(&["apply", "--yes", saved.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("planned ~/d when it was a directory"), "{err}");
    assert_eq!(read(&out.path().join("stray")), "outside stray\n");
}

#[test]
fn a_dir_swapped_for_a_link_during_apply_is_never_purged_through() {
    let out = outside();
    let r = Repo::new(&format!(
        "{}\n[dir.d]\npath = \"~/d\"\npurge = true\nmode = \"0700\"\nafter = [\"exec.swap\"]\n",
        swap_exec("d", out.path())
    ));
    fs::create_dir(r.path("d")).unwrap();
    fs::write(r.path("d/stray"), "mine\n").unwrap();
    // --force: the mode of a dir stead did not create changes only then.
    let (code, stdout, err) = r.run(&["apply", "--yes", "--force"]);
    assert_ne!(code, 0, "{stdout}");
    let all = format!("{stdout}{err}");
    assert!(all.contains("is a symlink now"), "{all}");
    assert_eq!(read(&out.path().join("stray")), "outside stray\n");
    assert_eq!(read(&out.path().join("secret")), "outside\n");
    assert_ne!(mode(out.path()), 0o700, "chmod went outside");
}

#[test]
fn a_parent_dir_swapped_for_a_link_during_apply_is_never_written_through() {
    let out = outside();
    let r = Repo::new(&format!(
        "{}\n[file.f]\npath = \"~/d/secret\"\ncontent = \"planted\\n\"\nafter = [\"exec.swap\"]\n\n\
         [file.new]\npath = \"~/d/sub/new\"\ncontent = \"planted\\n\"\nafter = [\"exec.swap\"]\n",
        swap_exec("d", out.path())
    ));
    fs::create_dir(r.path("d")).unwrap();
    let (code, stdout, err) = r.run(&["apply", "--yes"]);
    assert_ne!(code, 0, "{stdout}");
    assert_eq!(read(&out.path().join("secret")), "outside\n");
    assert!(!out.path().join("sub").exists(), "a dir was made outside");
    assert!(format!("{stdout}{err}").contains("is a symlink now"));
}

#[test]
fn a_file_swapped_for_a_link_during_apply_is_never_chmodded_through() {
    let out = outside();
    let r = Repo::new("[file.f]\npath = \"~/f\"\ncontent = \"x\\n\"\nmode = \"0644\"\n");
    r.ok(&["apply", "--yes"]);
    r.write_manifest(&format!(
        "{}\n[file.f]\npath = \"~/f\"\ncontent = \"x\\n\"\nmode = \"0600\"\nafter = [\"exec.swap\"]\n",
        swap_exec("f", &out.path().join("secret"))
    ));
    let (code, stdout, err) = r.run(&["apply", "--yes"]);
    assert_ne!(code, 0, "{stdout}");
    assert!(format!("{stdout}{err}").contains("is a symlink now"));
    assert_eq!(mode(&out.path().join("secret")), 0o644);
}

#[test]
fn a_removal_never_crosses_a_symlinked_ancestor() {
    let out = outside();
    let r = Repo::new("[file.f]\npath = \"~/d/secret\"\ncontent = \"outside\\n\"\n");
    r.ok(&["apply", "--yes"]);
    fs::rename(r.path("d"), r.path("d.moved")).unwrap();
    symlink(out.path(), r.path("d")).unwrap();
    r.write_manifest("");
    let shown = r.ok(&["apply", "--yes"]);
    assert!(
        shown.contains("a symlink is now among the directories of its path, so it is left alone"),
        "{shown}"
    );
    assert_eq!(read(&out.path().join("secret")), "outside\n");
    assert!(r.ok(&["plan"]).contains("No changes"));
}

#[test]
fn a_link_swapped_in_during_apply_stops_a_removal() {
    // The plan saw a plain directory; the link appears while apply runs.
    let out = outside();
    let r = Repo::new("[file.f]\npath = \"~/d/secret\"\ncontent = \"outside\\n\"\n");
    r.ok(&["apply", "--yes"]);
    r.write_manifest(&swap_exec("d", out.path()));
    let (code, stdout, err) = r.run(&["apply", "--yes"]);
    assert_ne!(code, 0, "{stdout}");
    assert!(
        format!("{stdout}{err}").contains("is a symlink now"),
        "{stdout}{err}"
    );
    assert_eq!(read(&out.path().join("secret")), "outside\n");
}

#[test]
fn a_symlinked_ancestor_is_followed_and_the_real_path_shown_and_owned() {
    let out = tempfile::tempdir().unwrap();
    let r = Repo::new("[file.conf]\npath = \"~/.config/app.conf\"\ncontent = \"c\\n\"\n");
    symlink(out.path(), r.path(".config")).unwrap();
    let real = out.path().join("app.conf");
    let shown = r.ok(&["plan"]);
    assert!(shown.contains(real.to_str().unwrap()), "{shown}");
    r.ok(&["apply", "--yes"]);
    assert_eq!(read(&real), "c\n");
    assert!(
        fs::symlink_metadata(r.path(".config"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let state = r.sb.state_json();
    let keys = &state["resources"]["file.conf"]["keys"];
    assert_eq!(keys[0], real.to_str().unwrap(), "{state}");
    assert!(r.ok(&["plan"]).contains("No changes"));
}

#[test]
fn two_paths_to_one_file_through_a_symlinked_dir_are_claimed_twice() {
    let r = Repo::new(
        "[file.a]\npath = \"~/real/f\"\ncontent = \"a\\n\"\n\n[file.b]\npath = \"~/link/f\"\ncontent = \"b\\n\"\n",
    );
    fs::create_dir(r.path("real")).unwrap();
    symlink(r.path("real"), r.path("link")).unwrap();
    let (code, _, err) = r.run(&["plan"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("file.b claims ~/real/f, which file.a already claims"),
        "{err}"
    );
    assert!(err.contains("stead.toml:6:8"), "{err}");
    assert!(!r.path("real/f").exists());
}

#[test]
fn a_path_climbing_out_of_the_home_is_a_load_error_with_its_place() {
    let r = Repo::new("[file.a]\npath = \"~/../x\"\ncontent = \"a\\n\"\n");
    let (code, _, err) = r.run(&["plan"]);
    assert_ne!(code, 0);
    assert!(err.contains("leaves the home"), "{err}");
    assert!(err.contains("stead.toml:2:8"), "{err}");

    r.write_manifest(
        "[vars]\nup = \"..\"\n\n[file.a]\npath = \"~/${vars.up}/x\"\ncontent = \"a\\n\"\n",
    );
    let (code, _, err) = r.run(&["plan"]);
    assert_ne!(code, 0);
    assert!(err.contains("leaves the home"), "{err}");
    assert!(err.contains("stead.toml:5:8"), "{err}");
}

#[test]
fn purge_of_the_home_a_parent_of_it_or_the_root_is_refused() {
    let r = Repo::new("");
    let parent = r.home().parent().unwrap().display().to_string();
    fs::write(r.path("stray"), "user data\n").unwrap();
    // Only `plan`: were the check ever broken, an apply here would purge
    // the machine.
    for path in ["~", parent.as_str(), "/"] {
        r.write_manifest(&format!("[dir.all]\npath = \"{path}\"\npurge = true\n"));
        let (code, _, err) = r.run(&["plan"]);
        assert_ne!(code, 0, "purge of {path} was accepted");
        assert!(err.contains("purges the home"), "{path}: {err}");
        assert!(err.contains("stead.toml:1:"), "{path}: {err}");
    }
    // The home reached through a link is the home.
    let elsewhere = tempfile::tempdir().unwrap();
    symlink(r.home(), elsewhere.path().join("h")).unwrap();
    r.write_manifest(&format!(
        "[dir.all]\npath = \"{}\"\npurge = true\n",
        elsewhere.path().join("h").display()
    ));
    let (code, _, err) = r.run(&["plan"]);
    assert_ne!(code, 0);
    assert!(err.contains("purges the home"), "{err}");
    assert_eq!(read(&r.path("stray")), "user data\n");
}

#[test]
fn a_purge_keeps_an_exec_creates_marker_inside_it() {
    let count = tempfile::tempdir().unwrap();
    let log = count.path().join("runs");
    let r = Repo::new(&format!(
        "[dir.d]\npath = \"~/d\"\npurge = true\n\n\
         [exec.setup]\ncommand = \"echo run >> '{}' && touch ~/d/.done\"\ncreates = \"~/d/.done\"\nafter = [\"dir.d\"]\n",
        log.display()
    ));
    r.ok(&["apply", "--yes"]);
    for _ in 0..3 {
        let shown = r.ok(&["plan"]);
        assert!(shown.contains("No changes"), "{shown}");
        r.ok(&["apply", "--yes"]);
    }
    assert!(r.path("d/.done").exists());
    assert_eq!(read(&log), "run\n", "the exec ran again after a purge");
}

#[test]
fn as_root_a_link_another_user_owns_is_not_followed() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (lchown of a link to another user)");
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let r = Repo::new("[file.f]\npath = \"~/planted/f\"\ncontent = \"x\\n\"\n");
    symlink(out.path(), r.path("planted")).unwrap();
    std::os::unix::fs::lchown(r.path("planted"), Some(12345), Some(12345)).unwrap();
    let (code, _, err) = r.run(&["apply", "--yes"]);
    assert_ne!(code, 0);
    assert!(err.contains("owned by user 12345"), "{err}");
    assert!(err.contains("protected_symlinks"), "{err}");
    assert!(!out.path().join("f").exists());
}

#[test]
fn a_key_recorded_through_a_link_still_owns_the_real_path_it_reaches() {
    // A record made when ~/link was a plain directory; the user then made it
    // a link to ~/real. The resource keeps owning the file, now by its real path.
    let r = Repo::new("[file.f]\npath = \"~/link/f\"\ncontent = \"one\\n\"\n");
    r.ok(&["apply", "--yes"]);
    fs::rename(r.path("link"), r.path("real")).unwrap();
    symlink(r.path("real"), r.path("link")).unwrap();
    r.write_manifest("[file.f]\npath = \"~/link/f\"\ncontent = \"two\\n\"\n");
    let shown = r.ok(&["plan"]);
    assert!(shown.contains("~ file.f  ~/real/f"), "{shown}");
    assert!(!shown.contains("does not own"), "{shown}");
    r.ok(&["apply", "--yes"]);
    assert_eq!(read(&r.path("real/f")), "two\n");
    assert!(r.ok(&["plan"]).contains("No changes"));
}

#[test]
fn a_purge_never_crosses_a_symlinked_ancestor() {
    let out = outside();
    let r = Repo::new("[dir.d]\npath = \"~/link/d\"\npurge = true\n");
    fs::create_dir(out.path().join("d")).unwrap();
    fs::write(out.path().join("d/stray"), "outside stray\n").unwrap();
    symlink(out.path(), r.path("link")).unwrap();
    let (code, _, err) = r.run(&["apply", "--yes"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("would cross a symlink among its directories"),
        "{err}"
    );
    assert!(err.contains("stead.toml:2:8"), "{err}");
    assert_eq!(read(&out.path().join("d/stray")), "outside stray\n");
}

#[test]
fn a_home_behind_a_symlink_is_used_through_it_and_its_paths_shown_as_home_paths() {
    // /tmp/x/link -> /tmp/x/real, as on systems whose /home is a link.
    let top = tempfile::tempdir().unwrap();
    let real = top.path().join("real");
    fs::create_dir(&real).unwrap();
    let link = top.path().join("link");
    symlink(&real, &link).unwrap();
    let config = tempfile::tempdir().unwrap();
    fs::write(
        config.path().join("stead.toml"),
        "[file.rc]\npath = \"~/.rc\"\ncontent = \"rc\\n\"\n\n[file.deep]\npath = \"~/.config/app/conf\"\ncontent = \"deep\\n\"\n",
    )
    .unwrap();
    let stead = |args: &[&str]| {
        let out = assert_cmd::Command::cargo_bin("stead")
            .unwrap()
            .env("HOME", &link)
            .env("NO_COLOR", "1")
            .env_remove("STEAD_HOME")
            .env_remove("STEAD_STATE_DIR")
            .arg("--home")
            .arg(&link)
            .arg("--config")
            .arg(config.path())
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "stead {args:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let plan = stead(&["plan"]);
    assert!(plan.contains("+ file.rc  ~/.rc"), "{plan}");
    assert!(plan.contains("+ file.deep  ~/.config/app/conf"), "{plan}");
    stead(&["apply", "--yes"]);
    assert_eq!(read(&real.join(".rc")), "rc\n");
    assert_eq!(read(&real.join(".config/app/conf")), "deep\n");
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the home link stays"
    );
    let state: serde_json::Value =
        serde_json::from_slice(&fs::read(real.join(".stead/state.json")).unwrap()).unwrap();
    assert_eq!(state["resources"]["file.rc"]["keys"][0], "~/.rc", "{state}");
    assert!(stead(&["plan"]).contains("No changes"));
    // Removal goes through the link as well, and only to what stead wrote.
    fs::write(real.join(".config/app/mine"), "mine\n").unwrap();
    fs::write(config.path().join("stead.toml"), "").unwrap();
    stead(&["apply", "--yes"]);
    assert!(!real.join(".rc").exists() && !real.join(".config/app/conf").exists());
    assert_eq!(read(&real.join(".config/app/mine")), "mine\n");
    // Nothing beside the two dirs was written.
    let mut entries: Vec<_> = fs::read_dir(top.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    entries.sort();
    assert_eq!(entries, ["link", "real"]);
}
