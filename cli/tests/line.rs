//! End-to-end tests of the `line` kind: a line present in (or absent from) a
//! file stead does not own, run as a user would.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::Repo;

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// Applies, then checks that a second plan changes nothing.
fn converge(repo: &Repo) -> String {
    let out = repo.ok(&["apply", "--yes"]);
    let again = repo.ok(&["plan"]);
    assert!(again.contains("No changes"), "second plan:\n{again}");
    out
}

#[test]
fn present_appends_the_line_once_and_keeps_the_mode() {
    let repo =
        Repo::new("[line.path]\npath = \"~/.profile\"\nline = \"export PATH=$HOME/bin:$PATH\"\n");
    let profile = repo.path(".profile");
    fs::write(&profile, "# my profile\n").unwrap();
    fs::set_permissions(&profile, fs::Permissions::from_mode(0o640)).unwrap();

    let plan = repo.ok(&["plan"]);
    assert!(
        plan.contains("~ line.path  ~/.profile  (adds the line)"),
        "{plan}"
    );
    assert!(plan.contains("+export PATH=$HOME/bin:$PATH"), "{plan}");
    converge(&repo);
    converge(&repo);
    assert_eq!(
        read(&profile),
        "# my profile\nexport PATH=$HOME/bin:$PATH\n"
    );
    assert_eq!(
        fs::metadata(&profile).unwrap().permissions().mode() & 0o7777,
        0o640
    );
    // It edits a file it does not own: nothing is recorded as stead's.
    let state = repo.sb.state_json();
    assert_eq!(state["resources"], serde_json::json!({}), "{state}");

    // No longer declared: the file and its line stay.
    repo.write_manifest("");
    converge(&repo);
    assert_eq!(
        read(&profile),
        "# my profile\nexport PATH=$HOME/bin:$PATH\n"
    );
}

#[test]
fn absent_removes_every_copy() {
    let repo = Repo::new(
        "[line.no_beep]\npath = \"~/.inputrc\"\nline = \"set bell-style audible\"\nensure = \"absent\"\n",
    );
    let inputrc = repo.path(".inputrc");
    fs::write(
        &inputrc,
        "set bell-style audible\nset editing-mode vi\nset bell-style audible\n",
    )
    .unwrap();
    let plan = repo.ok(&["plan"]);
    assert!(plan.contains("(removes the line)"), "{plan}");
    converge(&repo);
    assert_eq!(read(&inputrc), "set editing-mode vi\n");
}

#[test]
fn match_replaces_the_first_matching_line() {
    let repo = Repo::new(
        "[line.editor]\npath = \"~/.bashrc\"\nline = \"export EDITOR=nvim\"\nmatch = \"export EDITOR=\"\n",
    );
    let bashrc = repo.path(".bashrc");
    fs::write(
        &bashrc,
        "alias ll='ls -l'\nexport EDITOR=vi\nexport PAGER=less\n",
    )
    .unwrap();
    let plan = repo.ok(&["plan"]);
    assert!(
        plan.contains("-export EDITOR=vi") && plan.contains("+export EDITOR=nvim"),
        "{plan}"
    );
    assert!(
        plan.contains("(replaces the line holding `export EDITOR=`)"),
        "{plan}"
    );
    converge(&repo);
    assert_eq!(
        read(&bashrc),
        "alias ll='ls -l'\nexport EDITOR=nvim\nexport PAGER=less\n"
    );
}

#[test]
fn a_missing_file_is_an_error_naming_it_unless_create() {
    let repo = Repo::new("[line.l]\npath = \"~/.hushlogin\"\nline = \"quiet\"\n");
    let (code, out, err) = repo.run(&["plan"]);
    assert_ne!(code, 0, "{out}{err}");
    let path = repo.path(".hushlogin");
    assert!(
        err.contains(&format!("line.l: cannot edit {}", path.display()))
            && err.contains("set create = true"),
        "{err}"
    );
    assert!(!path.exists());

    repo.write_manifest("[line.l]\npath = \"~/.hushlogin\"\nline = \"quiet\"\ncreate = true\n");
    converge(&repo);
    assert_eq!(read(&path), "quiet\n");
}

#[test]
fn a_symlinked_file_is_refused_and_its_target_untouched() {
    let repo = Repo::new("[line.l]\npath = \"~/.bashrc\"\nline = \"x\"\n");
    repo.write_source("bashrc", "real\n");
    let target = repo.config.path().join("bashrc");
    std::os::unix::fs::symlink(&target, repo.path(".bashrc")).unwrap();
    let plan = repo.ok(&["plan"]);
    assert!(plan.contains("! line.l"), "{plan}");
    assert!(plan.contains("is a symlink"), "{plan}");
    // --force would not change this: the footer must not offer it.
    assert!(
        plan.contains("1 conflict (!): nothing is changed for them") && !plan.contains("--force"),
        "{plan}"
    );
    let (code, out, err) = repo.run(&["apply", "--yes", "--force"]);
    assert_ne!(code, 0, "{out}{err}");
    assert_eq!(read(&target), "real\n");
    assert!(
        fs::symlink_metadata(repo.path(".bashrc"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn bad_keys_are_load_errors_with_their_place() {
    let repo = Repo::new("[line.l]\npath = \"~/x\"\nensure = \"gone\"\ncreate = \"yes\"\n");
    let (code, _, err) = repo.run(&["plan"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("line.l is missing the required key `line`"),
        "{err}"
    );
    assert!(
        err.contains("`ensure` must be \"present\" or \"absent\", not \"gone\""),
        "{err}"
    );
    assert!(
        err.contains("`create` must be true or false, found a string"),
        "{err}"
    );
}

#[test]
fn two_lines_in_one_file_both_land_in_one_apply() {
    // Each line's edit is made on the file as it is when it runs: the
    // second must not write back the content the first saw at plan time.
    let repo = Repo::new(
        "[line.a]\npath = \"~/.profile\"\nline = \"alias a=1\"\n\n\
         [line.b]\npath = \"~/.profile\"\nline = \"alias b=2\"\n",
    );
    let profile = repo.path(".profile");
    fs::write(&profile, "# mine\n").unwrap();
    converge(&repo);
    let text = read(&profile);
    assert!(
        text.starts_with("# mine\n")
            && text.contains("alias a=1\n")
            && text.contains("alias b=2\n"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 3, "{text}");
}

#[test]
fn an_edit_made_after_the_plan_is_kept() {
    // A saved plan applied later (or a confirmation that waited) must not
    // write back the file as it was when planned: the user's line stays.
    let repo = Repo::new("[line.a]\npath = \"~/.profile\"\nline = \"alias a=1\"\n");
    let profile = repo.path(".profile");
    fs::write(&profile, "# mine\n").unwrap();
    repo.ok(&["init"]);
    let saved = repo.home().join("plan.json");
    repo.ok(&["plan", "--out", saved.to_str().unwrap()]);
    fs::write(&profile, "# mine\nexport EDITOR=vi\n").unwrap();
    repo.ok(&["apply", "--yes", saved.to_str().unwrap()]);
    assert_eq!(read(&profile), "# mine\nexport EDITOR=vi\nalias a=1\n");
}
