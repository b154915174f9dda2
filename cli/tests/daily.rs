//! The daily commands end to end: `add`, `edit`, `status`, `cd`, config
//! repo discovery from the current directory, `init`'s starter manifest,
//! `plan --detailed-exitcode` and `state check-drift --diff`.

mod common;

use std::fs;
use std::path::Path;

use common::{Repo, Sandbox};

const MANIFEST: &str = "# my dotfiles: hand-written, keep my comments\n\
[vars]\n\
name = \"Sam\"   # who I am\n\
\n\
# the first file\n\
[file.profile]\n\
path = \"~/.profile\"\n\
content = \"export NAME=${vars.name}\\n\"   # inline\n\
\n\
# a comment at the very end\n";

fn output(cmd: &mut assert_cmd::Command) -> (i32, String, String) {
    let out = cmd.output().expect("run stead");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn manifest_text(repo: &Repo) -> String {
    fs::read_to_string(repo.config.path().join("stead.toml")).unwrap()
}

#[test]
fn add_of_a_file_is_followed_by_an_empty_plan_and_keeps_the_manifest_byte_for_byte() {
    let repo = Repo::new(MANIFEST);
    repo.ok(&["apply", "--yes"]);
    let bashrc = repo.path(".bashrc");
    fs::write(&bashrc, "alias ll='ls -l'\n").unwrap();
    fs::set_permissions(&bashrc, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let git = repo.path(".config/git/config");
    fs::create_dir_all(git.parent().unwrap()).unwrap();
    fs::write(&git, "[user]\n\tname = Sam\n").unwrap();

    let out = repo.ok(&["add", s(&bashrc), s(&git)]);
    assert!(out.contains("file.bashrc"), "{out}");

    let text = manifest_text(&repo);
    // Everything the user wrote is there, unchanged, before the additions.
    assert!(text.starts_with(MANIFEST), "{text}");
    assert_eq!(
        &text[MANIFEST.len()..],
        "\n[file.bashrc]\npath = \"~/.bashrc\"\nsource = \"bashrc\"\nmode = \"0600\"\n\
         \n[file.config]\npath = \"~/.config/git/config\"\nsource = \"config/git/config\"\n"
    );
    assert_eq!(
        fs::read(repo.config.path().join("bashrc")).unwrap(),
        fs::read(&bashrc).unwrap()
    );
    assert!(repo.config.path().join("config/git/config").is_file());

    let plan = repo.json(&["plan"]);
    assert_eq!(plan["empty"], true, "{plan}");
    assert_eq!(plan["counts"]["unchanged"], 3);
    // Owned, with the checksum apply would record: drift is checked for it.
    let state = repo.sb.state_json();
    assert!(state["resources"]["file.bashrc"].is_object(), "{state}");
    assert!(state["checksums"]["~/.bashrc"].is_string(), "{state}");
    let (code, _, _) = repo.run(&["status"]);
    assert_eq!(code, 0);
}

#[test]
fn add_with_link_replaces_the_file_by_a_link_to_its_copy() {
    let repo = Repo::new("");
    let vimrc = repo.path(".vimrc");
    fs::write(&vimrc, "set nu\n").unwrap();
    repo.ok(&["add", "--link", s(&vimrc)]);
    let target = fs::read_link(&vimrc).unwrap();
    assert_eq!(target, repo.config.path().join("vimrc"));
    assert_eq!(fs::read_to_string(&vimrc).unwrap(), "set nu\n");
    assert!(
        manifest_text(&repo).contains("[symlink.vimrc]\npath = \"~/.vimrc\"\ntarget = \"vimrc\"\n")
    );
    assert_eq!(repo.json(&["plan"])["empty"], true);
}

#[test]
fn add_refuses_a_private_key_unless_forced() {
    let repo = Repo::new(MANIFEST);
    let key = repo.path(".ssh/deploy");
    fs::create_dir_all(key.parent().unwrap()).unwrap();
    fs::write(&key, "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=\n-----END OPENSSH PRIVATE KEY-----\n").unwrap();
    let (code, _, err) = repo.run(&["add", s(&key)]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("looks like a secret"), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert_eq!(manifest_text(&repo), MANIFEST);
    assert!(!repo.config.path().join("ssh").exists());

    repo.ok(&["add", "--force", s(&key)]);
    assert!(manifest_text(&repo).contains("[file.deploy]"));
}

#[test]
fn add_refuses_a_path_outside_the_home() {
    let repo = Repo::new(MANIFEST);
    let elsewhere = tempfile::tempdir().unwrap();
    let file = elsewhere.path().join("x.conf");
    fs::write(&file, "x\n").unwrap();
    let (code, _, err) = repo.run(&["add", s(&file)]);
    assert_eq!(code, 1);
    assert!(err.contains("is not inside the home"), "{err}");
    // `..` out of the home is resolved before the check.
    // (Both temp dirs are in the same parent.)
    let sneaky = repo
        .home()
        .join("..")
        .join(elsewhere.path().file_name().unwrap())
        .join("x.conf");
    assert!(sneaky.is_file());
    let (code, _, err) = repo.run(&["add", s(&sneaky)]);
    assert_eq!(code, 1);
    assert!(err.contains("is not inside the home"), "{err}");
    assert_eq!(manifest_text(&repo), MANIFEST);
}

#[test]
fn add_refuses_a_path_already_managed_and_a_malformed_manifest_with_its_place() {
    let repo = Repo::new(MANIFEST);
    repo.ok(&["apply", "--yes"]);
    let (code, _, err) = repo.run(&["add", s(&repo.path(".profile"))]);
    assert_eq!(code, 1);
    assert!(err.contains("already managed by file.profile"), "{err}");

    let dir = repo.path(".config/app");
    fs::create_dir_all(&dir).unwrap();
    let (code, _, err) = repo.run(&["add", "--template", s(&dir)]);
    assert_eq!(code, 1);
    assert!(err.contains("--template takes files"), "{err}");

    let broken = "[file.a]\npath = \"~/a\"\ncontent = \"a\"\n[file.b\n";
    repo.write_manifest(broken);
    let other = repo.path(".other");
    fs::write(&other, "o\n").unwrap();
    let (code, _, err) = repo.run(&["add", s(&other)]);
    assert_eq!(code, 1);
    assert!(err.contains("stead.toml:4:"), "{err}");
    assert_eq!(manifest_text(&repo), broken);
    assert!(!repo.config.path().join("other").exists());
}

#[test]
fn add_of_a_directory_is_followed_by_an_empty_plan() {
    let repo = Repo::new("");
    let dir = repo.path(".config/nvim");
    fs::create_dir_all(dir.join("lua")).unwrap();
    fs::write(dir.join("init.lua"), "require('x')\n").unwrap();
    fs::write(dir.join("lua/x.lua"), "return {}\n").unwrap();
    repo.ok(&["add", s(&dir)]);
    assert!(
        manifest_text(&repo)
            .contains("[file.nvim]\npath = \"~/.config/nvim\"\nsource = \"config/nvim\"\n")
    );
    assert!(repo.config.path().join("config/nvim/lua/x.lua").is_file());
    assert_eq!(repo.json(&["plan"])["empty"], true);
    // Each file of the tree is owned: an edit is drift, with its diff.
    fs::write(dir.join("lua/x.lua"), "return { x = 1 }\n").unwrap();
    let (code, out, _) = repo.run(&["status", "--diff"]);
    assert_eq!(code, 4, "{out}");
    assert!(out.starts_with("~M ~/.config/nvim/lua/x.lua"), "{out}");
    assert!(out.contains("+return { x = 1 }"), "{out}");
}

#[test]
fn status_is_clean_with_exit_0_and_drifted_with_exit_4() {
    let repo = Repo::new(MANIFEST);
    repo.ok(&["apply", "--yes"]);
    let (code, out, _) = repo.run(&["status"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Clean"), "{out}");

    fs::write(repo.path(".profile"), "export NAME=Alex\n").unwrap();
    let (code, out, _) = repo.run(&["status", "--diff"]);
    assert_eq!(code, 4, "{out}");
    // Apply would update it (~), and it was modified (M).
    assert!(out.starts_with("~M ~/.profile  file.profile\n"), "{out}");
    assert!(
        out.contains("-export NAME=Sam\n    +export NAME=Alex"),
        "{out}"
    );

    let (code, out, _) = repo.run(&["--json", "status"]);
    assert_eq!(code, 4);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["clean"], false);
    assert_eq!(v["entries"][0]["apply"], "update");
    assert_eq!(v["entries"][0]["drift"], "modified");
}

#[test]
fn status_shows_what_apply_would_create() {
    let repo = Repo::new(MANIFEST);
    let (code, out, _) = repo.run(&["status"]);
    assert_eq!(code, 4);
    assert_eq!(out, "+  ~/.profile  file.profile\n");
}

#[test]
fn check_drift_diff_shows_the_declared_content_against_the_disk() {
    let repo = Repo::new(MANIFEST);
    repo.ok(&["apply", "--yes"]);
    fs::write(repo.path(".profile"), "export NAME=Sam\nexport EDITOR=vi\n").unwrap();
    let (code, out, _) = repo.run(&["state", "check-drift", "--diff"]);
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("--- ~/.profile (declared)"), "{out}");
    assert!(out.contains("+++ ~/.profile (on disk)"), "{out}");
    assert!(out.contains("+export EDITOR=vi"), "{out}");
    // Without --diff, no diff.
    let (_, out, _) = repo.run(&["state", "check-drift"]);
    assert!(!out.contains("(declared)"), "{out}");
    let (_, out, _) = repo.run(&["--json", "state", "check-drift", "--diff"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        v["files"][0]["diff"]
            .as_str()
            .unwrap()
            .contains("+export EDITOR=vi")
    );
}

#[test]
fn edit_opens_the_source_in_the_editor_and_apply_converges_it() {
    let repo = Repo::new("[file.gitconfig]\npath = \"~/.gitconfig\"\nsource = \"gitconfig\"\n");
    repo.write_source("gitconfig", "[user]\n");
    repo.ok(&["apply", "--yes"]);
    let script = repo.config.path().join("..").join(format!(
        "editor-{}.sh",
        repo.config.path().file_name().unwrap().to_str().unwrap()
    ));
    fs::write(&script, "#!/bin/sh\nprintf '\\tname = Sam\\n' >> \"$1\"\n").unwrap();
    fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let config = repo.config.path().to_str().unwrap().to_string();
    let gitconfig = repo.path(".gitconfig");

    // Without --apply (and no terminal): edited, not applied.
    let (code, out, err) = output(
        repo.sb
            .stead(&["--config", &config, "edit", s(&gitconfig)])
            .env("EDITOR", &script)
            .env_remove("VISUAL"),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Run 'stead apply'"), "{out}");
    assert_eq!(fs::read_to_string(&gitconfig).unwrap(), "[user]\n");

    let (code, out, err) = output(
        repo.sb
            .stead(&["--config", &config, "edit", "file.gitconfig", "--apply"])
            .env("EDITOR", &script)
            .env_remove("VISUAL"),
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        fs::read_to_string(&gitconfig).unwrap(),
        "[user]\n\tname = Sam\n\tname = Sam\n"
    );
    assert_eq!(repo.json(&["plan"])["empty"], true);
    let _ = fs::remove_file(&script);

    // No editor and no terminal: a clear refusal.
    let (code, _, err) = output(
        repo.sb
            .stead(&["--config", &config, "edit", "file.gitconfig"])
            .env_remove("EDITOR")
            .env_remove("VISUAL"),
    );
    assert_eq!(code, 1);
    assert!(err.contains("needs an editor"), "{err}");
}

#[test]
fn cd_prints_the_config_repo_and_discovery_finds_it_from_a_subdirectory() {
    let repo = Repo::new(MANIFEST);
    let config = repo.config.path().to_str().unwrap();
    assert_eq!(repo.ok(&["cd"]), format!("{config}\n"));

    let sub = repo.config.path().join("a/b");
    fs::create_dir_all(&sub).unwrap();
    // No --config: the nearest parent holding stead.toml is the config repo.
    let (code, out, err) = output(repo.sb.stead(&["cd"]).current_dir(&sub));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("{config}\n"));
    let (code, out, err) = output(repo.sb.stead(&["plan"]).current_dir(&sub));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("+ file.profile"), "{out}");

    // Outside any config repo, with nothing recorded: the usual error.
    let nowhere = tempfile::tempdir().unwrap();
    let (code, _, err) = output(repo.sb.stead(&["cd"]).current_dir(nowhere.path()));
    assert_eq!(code, 1);
    assert!(err.contains("no config repo given"), "{err}");
}

#[test]
fn init_in_an_empty_directory_writes_a_starter_manifest_that_loads() {
    let sb = Sandbox::new();
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = output(sb.stead(&["init"]).current_dir(dir.path()));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Wrote a starter"), "{out}");
    let text = fs::read_to_string(dir.path().join("stead.toml")).unwrap();
    assert!(text.contains("# [file.bashrc]"), "{text}");
    // Recorded as the config repo: plan needs no flag, anywhere.
    let plan = sb.json(&["plan"]);
    assert_eq!(plan["empty"], true);
    assert_eq!(plan["counts"]["unchanged"], 0);

    // A directory with something in it is left alone.
    let full = tempfile::tempdir().unwrap();
    fs::write(full.path().join("notes"), "x").unwrap();
    let sb2 = Sandbox::new();
    sb2.ok(&["init", "--path", full.path().to_str().unwrap()]);
    assert!(!full.path().join("stead.toml").exists());
}

#[test]
fn plan_detailed_exitcode_is_0_2_and_1() {
    let repo = Repo::new(MANIFEST);
    let (code, _, _) = repo.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(code, 2);
    repo.ok(&["apply", "--yes"]);
    let (code, _, _) = repo.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(code, 0);
    repo.write_manifest("[file.x\n");
    let (code, _, _) = repo.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(code, 1);
    // Without the flag, changes are still exit 0.
    repo.write_manifest(MANIFEST);
    fs::remove_file(repo.path(".profile")).unwrap();
    let (code, _, _) = repo.run(&["plan"]);
    assert_eq!(code, 0);
}

#[test]
fn add_names_resources_uniquely_or_as_asked() {
    let repo = Repo::new("");
    for rel in [".config/git/config", ".ssh/config", ".config/app/config"] {
        let p = repo.path(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, rel).unwrap();
    }
    repo.ok(&["add", s(&repo.path(".config/git/config"))]);
    repo.ok(&[
        "add",
        s(&repo.path(".ssh/config")),
        s(&repo.path(".ssh/config")),
    ]);
    repo.ok(&["add", "--as", "app", s(&repo.path(".config/app/config"))]);
    let text = manifest_text(&repo);
    assert!(
        text.contains("[file.config]\npath = \"~/.config/git/config\""),
        "{text}"
    );
    assert!(
        text.contains("[file.config_2]\npath = \"~/.ssh/config\"\nsource = \"ssh/config\""),
        "{text}"
    );
    assert!(
        text.contains("[file.app]\npath = \"~/.config/app/config\""),
        "{text}"
    );
    assert_eq!(text.matches("[file.").count(), 3, "{text}");
    // A name that is taken is refused, not renamed.
    let other = repo.path(".other");
    fs::write(&other, "o").unwrap();
    let (code, _, err) = repo.run(&["add", "--as", "app", s(&other)]);
    assert_eq!(code, 1);
    assert!(err.contains("file.app is already declared"), "{err}");
    assert_eq!(repo.json(&["plan"])["empty"], true);
}

#[test]
fn the_daily_outputs_people_read() {
    let repo = Repo::new(MANIFEST);
    repo.ok(&["apply", "--yes"]);
    let bashrc = repo.path(".bashrc");
    fs::write(&bashrc, "alias ll='ls -l'\n").unwrap();
    let added = repo.ok(&["add", s(&bashrc)]);
    fs::write(repo.path(".profile"), "export NAME=Alex\n").unwrap();
    fs::remove_file(&bashrc).unwrap();
    let (_, status, _) = repo.run(&["status", "--diff"]);
    insta::assert_snapshot!(
        "daily_add_then_status",
        repo.redact(&format!(
            "$ stead add ~/.bashrc\n{added}\n$ stead status --diff\n{status}"
        ))
    );
}

#[test]
fn add_with_link_of_a_directory_links_the_whole_directory() {
    let repo = Repo::new("");
    let dir = repo.path(".config/fish");
    fs::create_dir_all(dir.join("functions")).unwrap();
    fs::write(dir.join("config.fish"), "set x 1\n").unwrap();
    fs::write(dir.join("functions/f.fish"), "function f; end\n").unwrap();
    repo.ok(&["add", "--link", s(&dir)]);
    assert_eq!(
        fs::read_link(&dir).unwrap(),
        repo.config.path().join("config/fish")
    );
    assert_eq!(
        fs::read_to_string(dir.join("functions/f.fish")).unwrap(),
        "function f; end\n"
    );
    assert_eq!(repo.json(&["plan"])["empty"], true);
    // A file below the linked directory is edited where it is, in the repo.
    let config = repo.config.path().to_str().unwrap().to_string();
    let (code, out, err) = output(
        repo.sb
            .stead(&[
                "--config",
                &config,
                "edit",
                s(&dir.join("functions/f.fish")),
            ])
            .env("EDITOR", "echo '# more' >>")
            .env_remove("VISUAL"),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("(symlink.fish)"), "{out}");
    assert_eq!(
        fs::read_to_string(repo.config.path().join("config/fish/functions/f.fish")).unwrap(),
        "function f; end\n# more\n"
    );
}

#[test]
fn a_quoted_tilde_path_means_the_target_home_for_add_and_edit() {
    // `stead add '~/.vimrc'`: the shell left `~`; it is --home's, not the
    // current directory's nor the real HOME's.
    let repo = Repo::new("");
    fs::write(repo.path(".vimrc"), "set nu\n").unwrap();
    let config = repo.config.path().to_str().unwrap().to_string();
    let elsewhere = tempfile::tempdir().unwrap();
    let (code, out, err) = output(
        repo.sb
            .stead(&["--config", &config, "add", "~/.vimrc"])
            .current_dir(elsewhere.path()),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        fs::read_to_string(repo.config.path().join("vimrc")).unwrap(),
        "set nu\n"
    );
    let script = elsewhere.path().join("editor.sh");
    fs::write(&script, "#!/bin/sh\necho 'set rnu' >> \"$1\"\n").unwrap();
    fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (code, out, err) = output(
        repo.sb
            .stead(&["--config", &config, "edit", "~/.vimrc"])
            .current_dir(elsewhere.path())
            .env("EDITOR", &script)
            .env_remove("VISUAL"),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        fs::read_to_string(repo.config.path().join("vimrc")).unwrap(),
        "set nu\nset rnu\n"
    );
}
