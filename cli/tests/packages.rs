//! The `package` kind against the machine's real apt and dpkg, in a
//! throw-away root (`common::apt`): one query per plan, one transaction for
//! packages that change together, outcomes read back from dpkg, ownership
//! of only what stead installed, and an interrupted dpkg reported with its
//! repair. stead gets the root through `APT_CONFIG` and `DPKG_ADMINDIR`,
//! as any user would point apt at one; the programs it starts are counted
//! through a directory of logging wrappers put first on `PATH`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::apt::{AptRoot, Deb};
use common::packages::{PackageWorld, count, wait_for, which};

const A: Deb = Deb::new("stead-test-a", "1.0");
const B: Deb = Deb::new("stead-test-b", "1.0");
const C: Deb = Deb::new("stead-test-c", "1.0").with_depends("stead-test-a");
const D: Deb = Deb::new("stead-test-d", "1.0").with_conffile();
const A11: Deb = Deb::new("stead-test-a", "1.1");

/// A config repo, an apt root, and wrappers that log every apt and dpkg
/// program stead starts.
type World = PackageWorld<AptRoot>;

const WRAPPED: &[&str] = &["apt-get", "apt-cache", "dpkg", "dpkg-query"];

fn world(debs: &[Deb], manifest: &str) -> World {
    let apt = AptRoot::new(debs);
    let env = apt.env();
    PackageWorld::new(apt, env, WRAPPED, manifest)
}

/// dpkg's version and status of `name`.
fn status(w: &World, name: &str) -> Option<(String, String)> {
    w.root.installed().get(name).cloned()
}

fn installed(version: &str) -> Option<(String, String)> {
    Some((version.to_string(), "ii".to_string()))
}

const THREE: &str = "[package.stead-test-a]\n[package.stead-test-b]\n[package.stead-test-c]\n";

#[test]
fn three_packages_install_in_one_transaction_and_a_warm_plan_only_queries_once() {
    let w = world(&[A, B, C], THREE);
    let plan = w.ok(&["plan"]);
    assert!(
        plan.contains("+ package.{stead-test-a,stead-test-b,stead-test-c}  (apt, one transaction)"),
        "{plan}"
    );
    let calls = w.calls();
    assert_eq!(count(&calls, "dpkg-query"), 1, "{calls:?}");
    assert_eq!(count(&calls, "apt-get"), 0, "{calls:?}");

    w.ok(&["apply", "--yes"]);
    assert_eq!(w.root.transactions(), 1, "{}", w.root.history());
    for name in ["stead-test-a", "stead-test-b", "stead-test-c"] {
        assert_eq!(status(&w, name), installed("1.0"), "{name}");
    }
    let calls = w.calls();
    assert_eq!(count(&calls, "apt-get"), 1, "{calls:?}");

    let again = w.ok(&["plan"]);
    assert!(again.contains("No changes"), "{again}");
    let calls = w.calls();
    assert_eq!(
        calls.len(),
        1,
        "a warm plan starts one query and nothing else: {calls:?}"
    );
    assert_eq!(count(&calls, "dpkg-query"), 1, "{calls:?}");

    // One journaled start names every member; each member has its outcome.
    let journal = w.journal();
    let started: Vec<&serde_json::Value> = journal
        .iter()
        .filter(|r| r["resource"] == "transaction" && r["state"] == "started")
        .collect();
    assert_eq!(started.len(), 1, "{journal:?}");
    assert_eq!(started[0]["members"].as_array().unwrap().len(), 3);
    let done = journal
        .iter()
        .find(|r| r["resource"] == "transaction" && r["state"] == "succeeded")
        .expect("a succeeded record");
    assert_eq!(done["op_id"], started[0]["op_id"]);
    assert_eq!(done["members"].as_array().unwrap().len(), 3);
}

#[test]
fn a_package_left_with_its_config_files_is_planned_as_an_install() {
    let w = world(&[D], "[package.stead-test-d]\n");
    w.root.apt_get(&["install", "-y", "-q", "stead-test-d"]);
    w.root.remove_keep_config("stead-test-d");
    assert_eq!(status(&w, "stead-test-d").unwrap().1, "rc");
    let plan = w.ok(&["plan"]);
    assert!(
        plan.contains("+ package.stead-test-d  (removed, its config files left)"),
        "{plan}"
    );
    w.ok(&["apply", "--yes"]);
    assert_eq!(status(&w, "stead-test-d"), installed("1.0"));
}

#[test]
fn a_pin_upgrades_latest_follows_and_absent_removes() {
    let w = world(&[A, B], "[package.stead-test-a]\nversion = \"1.0\"\n");
    w.ok(&["apply", "--yes"]);
    assert_eq!(status(&w, "stead-test-a"), installed("1.0"));
    w.root.publish(&[A11]);
    // Pinned at 1.0: a newer version changes nothing.
    assert!(w.ok(&["plan"]).contains("No changes"));

    w.repo
        .write_manifest("[package.stead-test-a]\nversion = \"1.1\"\n");
    let plan = w.ok(&["plan"]);
    assert!(
        plan.contains("~ package.stead-test-a  (1.0 → 1.1)"),
        "{plan}"
    );
    w.ok(&["apply", "--yes"]);
    assert_eq!(status(&w, "stead-test-a"), installed("1.1"));

    w.repo.write_manifest(
        "[package.stead-test-a]\nversion = \"1.0\"\n[package.stead-test-b]\nensure = \"latest\"\n",
    );
    w.ok(&["apply", "--yes"]);
    assert_eq!(
        status(&w, "stead-test-a"),
        installed("1.0"),
        "a pin may go down"
    );
    assert_eq!(status(&w, "stead-test-b"), installed("1.0"));

    w.repo
        .write_manifest("[package.stead-test-a]\nensure = \"latest\"\n");
    let plan = w.ok(&["plan"]);
    assert!(
        plan.contains("~ package.stead-test-a  (1.0 → 1.1 (latest))"),
        "{plan}"
    );
    w.ok(&["apply", "--yes"]);
    assert_eq!(status(&w, "stead-test-a"), installed("1.1"));

    w.repo
        .write_manifest("[package.stead-test-a]\nensure = \"absent\"\n");
    let plan = w.ok(&["plan"]);
    assert!(plan.contains("- package.stead-test-a"), "{plan}");
    w.ok(&["apply", "--yes"]);
    assert_eq!(status(&w, "stead-test-a"), None);
    assert!(w.ok(&["plan"]).contains("No changes"));
}

#[test]
fn stead_removes_only_the_packages_it_installed() {
    let w = world(&[A, B], "[package.stead-test-a]\n[package.stead-test-b]\n");
    // The user had stead-test-a before stead was told about it.
    w.root.apt_get(&["install", "-y", "-q", "stead-test-a"]);
    let plan = w.ok(&["plan"]);
    assert!(
        plan.contains("+ package.stead-test-b  (not installed)"),
        "{plan}"
    );
    assert!(!plan.contains("package.stead-test-a"), "{plan}");
    w.ok(&["apply", "--yes"]);
    let resources = &w.repo.sb.state_json()["resources"];
    assert_eq!(
        resources["package.stead-test-b"]["names"][0],
        "apt:stead-test-b"
    );
    assert!(
        resources.get("package.stead-test-a").is_none(),
        "{resources}"
    );

    let (code, json, err) = w.run(&["--json", "plan"]);
    assert_eq!(code, 0, "{err}");
    let plan: serde_json::Value = serde_json::from_str(&json).unwrap();
    let reason = |id: &str| {
        plan["plan"]["changes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .map(|c| c["reason"].as_str().unwrap().to_string())
    };
    assert_eq!(
        reason("package.stead-test-a").as_deref(),
        Some("installed before stead; never removed by it")
    );
    assert_eq!(reason("package.stead-test-b").as_deref(), Some("installed"));

    w.repo.write_manifest("# nothing declared\n");
    let plan = w.ok(&["plan"]);
    assert!(
        plan.contains("- package.stead-test-b  (no longer declared; stead installed it)"),
        "{plan}"
    );
    w.ok(&["apply", "--yes"]);
    assert_eq!(
        status(&w, "stead-test-b"),
        None,
        "stead removes what it installed"
    );
    assert_eq!(
        status(&w, "stead-test-a"),
        installed("1.0"),
        "and leaves what it did not"
    );
    assert!(w.ok(&["plan"]).contains("No changes"));
}

#[test]
fn an_unknown_name_fails_only_itself_with_each_outcome_in_the_journal() {
    let w = world(
        &[A, B],
        "[package.stead-test-a]\n[package.stead-test-nope]\n[package.stead-test-b]\n",
    );
    let (code, out, err) = w.run(&["apply", "--yes"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        format!("{out}{err}").contains("stead-test-nope is not installed"),
        "{out}{err}"
    );
    assert_eq!(status(&w, "stead-test-a"), installed("1.0"));
    assert_eq!(status(&w, "stead-test-b"), installed("1.0"));
    let journal = w.journal();
    let started = journal
        .iter()
        .find(|r| r["resource"] == "transaction" && r["state"] == "started")
        .expect("a started record");
    assert_eq!(started["members"].as_array().unwrap().len(), 3, "{started}");
    let op = &started["op_id"];
    let done = journal
        .iter()
        .find(|r| r["op_id"] == *op && r["state"] == "succeeded")
        .expect("a succeeded record");
    let mut members: Vec<&str> = done["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    members.sort_unstable();
    assert_eq!(members, ["package.stead-test-a", "package.stead-test-b"]);
    let failed: Vec<&serde_json::Value> = journal
        .iter()
        .filter(|r| r["op_id"] == *op && r["state"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{journal:?}");
    assert_eq!(failed[0]["resource"], "package.stead-test-nope");
    // Only the installed ones are stead's.
    let resources = &w.repo.sb.state_json()["resources"];
    assert!(
        resources.get("package.stead-test-nope").is_none(),
        "{resources}"
    );
    assert!(
        resources.get("package.stead-test-a").is_some(),
        "{resources}"
    );
}

/// The deb file of `deb` in the fixture's repo.
fn deb_file(repo: &Path, deb: &Deb) -> PathBuf {
    fs::read_dir(repo)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with(&format!("{}_{}", deb.name, deb.version)) && n.ends_with(".deb")
            })
        })
        .unwrap_or_else(|| panic!("no deb for {} in {}", deb.name, repo.display()))
}

#[test]
fn a_transaction_killed_half_way_is_reported_with_its_repair_and_not_run_silently() {
    let w = world(&[A, B], "[package.stead-test-a]\n[package.stead-test-b]\n");
    // What a transaction killed between unpacking and configuring leaves:
    // dpkg unpacked the package and never configured it.
    w.root
        .dpkg(&["--unpack", deb_file(w.root.repo(), &A).to_str().unwrap()]);
    assert_eq!(status(&w, "stead-test-a").unwrap().1, "iU");
    let (code, out, err) = w.run(&["apply", "--yes"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(out.contains("! package.stead-test-a"), "{out}");
    assert!(out.contains("dpkg --configure -a"), "{out}");
    // Nothing was installed meanwhile: not even the package that was fine.
    assert!(out.contains("! package.stead-test-b"), "{out}");
    let calls = w.calls();
    assert_eq!(count(&calls, "apt-get"), 0, "{calls:?}");
    assert!(
        !calls.iter().any(|c| c.contains("--configure")),
        "stead must not repair dpkg by itself: {calls:?}"
    );
    // Once the user repairs it, stead goes on.
    w.root.dpkg(&["--configure", "-a"]);
    w.ok(&["apply", "--yes"]);
    assert_eq!(status(&w, "stead-test-b"), installed("1.0"));
}

#[test]
fn names_expand_to_one_resource_per_package_in_one_transaction() {
    let w = world(
        &[A, B],
        "[package.tools]\nnames = [\"stead-test-a\", \"stead-test-b\"]\n",
    );
    let plan = w.ok(&["plan"]);
    assert!(
        plan.contains("+ package.{tools/stead-test-a,tools/stead-test-b}  (apt, one transaction)"),
        "{plan}"
    );
    w.ok(&["apply", "--yes"]);
    assert_eq!(w.root.transactions(), 1, "{}", w.root.history());
    assert!(w.ok(&["plan"]).contains("No changes"));
}

/// Whether process `pid` still exists (a zombie counts as gone).
fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Kills the process whose pid is in `file` when dropped (a test that
/// fails half way leaves nothing running).
struct KillOnDrop(PathBuf);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = fs::read_to_string(&self.0)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[test]
fn a_stead_killed_during_the_transaction_leaves_dpkg_half_done_and_the_next_apply_names_the_repair()
{
    let w = world(&[A, B], "[package.stead-test-a]\n[package.stead-test-b]\n");
    // apt-get runs for real; its dpkg unpacks for real and stops before it
    // configures, so stead is killed inside the transaction.
    let blocked = w.bin.join("blocked.pid");
    let apt_pid = w.bin.join("apt-get.pid");
    let slow_dpkg = w.bin.join("slow-dpkg");
    fs::write(
        &slow_dpkg,
        format!(
            "#!/bin/sh\ncase \"$*\" in *--configure*) echo $$ > '{}'; exec sleep 600;; esac\nexec '{}' \"$@\"\n",
            blocked.display(),
            which("dpkg").display()
        ),
    )
    .unwrap();
    fs::write(
        w.bin.join("apt-get"),
        format!(
            "#!/bin/sh\necho $$ > '{}'\nexec '{}' -o Dir::Bin::dpkg='{}' \"$@\"\n",
            apt_pid.display(),
            which("apt-get").display(),
            slow_dpkg.display()
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&slow_dpkg, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let _sleeper = KillOnDrop(blocked.clone());
    let _apt = KillOnDrop(apt_pid.clone());

    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("stead"));
    cmd.env("HOME", w.repo.home())
        .env("NO_COLOR", "1")
        .env_remove("STEAD_HOME")
        .env_remove("STEAD_STATE_DIR")
        .env(
            "PATH",
            format!(
                "{}:{}",
                w.bin.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .args(["--home", w.repo.home().to_str().unwrap()])
        .args([
            "--config",
            w.repo.config.path().to_str().unwrap(),
            "apply",
            "--yes",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    for (k, v) in w.root.env() {
        cmd.env(k, v);
    }
    let mut stead = cmd.spawn().unwrap();
    wait_for("dpkg to reach --configure", || blocked.exists());
    stead.kill().unwrap();
    stead.wait().unwrap();
    // stead's reaper ends the transaction it left running.
    let pid: i32 = fs::read_to_string(&apt_pid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_for("the reaper to end apt-get", || !alive(pid));
    let half: Vec<String> = ["stead-test-a", "stead-test-b"]
        .iter()
        .filter_map(|n| status(&w, n).map(|s| s.1))
        .collect();
    assert_eq!(
        half,
        ["iU", "iU"],
        "dpkg unpacked both and configured neither"
    );

    // Back to the plain wrappers: the next apply reports, changes nothing.
    let w2_bin_apt = format!(
        "#!/bin/sh\nprintf '%s\\0' \"apt-get $*\" >> '{}'\nexec '{}' \"$@\"\n",
        w.bin.join("calls.log").display(),
        which("apt-get").display()
    );
    fs::write(w.bin.join("apt-get"), w2_bin_apt).unwrap();
    w.calls();
    let (code, out, err) = w.run(&["apply", "--yes"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(out.contains("Recovering from interrupted run"), "{out}");
    assert!(out.contains("! package.stead-test-a"), "{out}");
    assert!(out.contains("dpkg --configure -a"), "{out}");
    let calls = w.calls();
    assert_eq!(count(&calls, "apt-get"), 0, "{calls:?}");
    assert!(
        !calls.iter().any(|c| c.contains("--configure")),
        "{calls:?}"
    );

    w.root.dpkg(&["--configure", "-a"]);
    w.ok(&["apply", "--yes"]);
    assert_eq!(status(&w, "stead-test-a"), installed("1.0"));
    assert_eq!(status(&w, "stead-test-b"), installed("1.0"));
}

#[test]
fn the_workstation_example_plans_its_packages_as_one_transaction_before_their_config() {
    let w = world(&[A], "");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/workstation");
    let mut cmd = w
        .repo
        .sb
        .stead(&["--config", example.to_str().unwrap(), "plan"]);
    for (k, v) in w.root.env() {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = "+ package.{cli/git,cli/tmux,cli/ripgrep,cli/curl,editor}  (apt, one transaction)";
    assert!(text.contains(line), "{text}");
    assert!(
        !text.contains("telnet"),
        "telnet is not installed, so nothing to do: {text}"
    );
    let tmux = text
        .find("+ file.tmux")
        .expect("the tmux config is planned");
    assert!(text.find(line).unwrap() < tmux, "{text}");
}

#[test]
fn a_file_an_installed_package_ships_is_written_after_its_upgrade() {
    let w = world(&[A], "");
    w.root.apt_get(&["install", "-y", "-q", "stead-test-a"]);
    w.root.publish(&[A11]);
    let path = w.root.root().join(A.payload_path());
    w.repo.write_manifest(&format!(
        "[file.payload]\npath = \"{}\"\ncontent = \"mine\\n\"\n\n[package.stead-test-a]\nensure = \"latest\"\n",
        path.display()
    ));
    // The file is the package's, not stead's: --force replaces it.
    let (code, json, err) = w.run(&["--json", "plan", "--force"]);
    assert_eq!(code, 0, "{err}");
    let plan: serde_json::Value = serde_json::from_str(&json).unwrap();
    let ids: Vec<&str> = plan["plan"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["file.payload", "package.stead-test-a"]);
    assert_eq!(
        plan["plan"]["depends_on"][0],
        serde_json::json!([1]),
        "the file waits for the package that ships it: {json}"
    );
    let calls = w.calls();
    assert_eq!(
        count(&calls, "dpkg-query"),
        2,
        "the package query and one read of the shipped files: {calls:?}"
    );

    w.ok(&["apply", "--yes", "--force"]);
    assert_eq!(status(&w, "stead-test-a"), installed("1.1"));
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        "mine\n",
        "written after the upgrade, not overwritten by it"
    );
    assert!(w.ok(&["plan"]).contains("No changes"));
}

#[test]
fn packages_a_run_installed_before_it_was_killed_short_of_its_state_write_stay_steads() {
    let w = world(&[A, B], "# nothing declared yet\n");
    w.ok(&["apply", "--yes"]);
    let state_file = w.repo.sb.state_file();
    let before = fs::read(&state_file).unwrap();
    w.repo
        .write_manifest("[package.stead-test-a]\n[package.stead-test-b]\n");
    w.ok(&["apply", "--yes"]);
    // As if stead was killed after the transaction's outcome reached the
    // journal and before the state was written: the old state, and a run
    // with no end.
    fs::write(&state_file, before).unwrap();
    let journal = w.repo.sb.state_dir().join("journal.jsonl");
    let kept: Vec<String> = fs::read_to_string(&journal)
        .unwrap()
        .lines()
        .filter(|l| {
            let r: serde_json::Value = serde_json::from_str(l).unwrap();
            !(r["resource"] == "run" && r["action"] == "run-end")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(&journal, kept.concat()).unwrap();
    assert!(
        w.repo.sb.state_json()["resources"]
            .get("package.stead-test-a")
            .is_none()
    );

    let out = w.ok(&["apply", "--yes"]);
    assert!(out.contains("Recovering from interrupted run"), "{out}");
    let resources = &w.repo.sb.state_json()["resources"];
    assert_eq!(
        resources["package.stead-test-a"]["names"][0], "apt:stead-test-a",
        "{resources}"
    );
    // So stead still removes what it installed once it is undeclared.
    w.repo.write_manifest("# nothing declared\n");
    w.ok(&["apply", "--yes"]);
    assert_eq!(status(&w, "stead-test-a"), None);
    assert_eq!(status(&w, "stead-test-b"), None);
}

#[test]
fn packages_no_longer_declared_are_removed_in_one_transaction() {
    let w = world(&[A, B], "[package.stead-test-a]\n[package.stead-test-b]\n");
    w.ok(&["apply", "--yes"]);
    let before = w.root.transactions();
    w.repo.write_manifest("# nothing declared\n");
    let plan = w.ok(&["plan"]);
    assert!(
        plan.contains("- package.{stead-test-a,stead-test-b}  (apt, one transaction)"),
        "{plan}"
    );
    w.ok(&["apply", "--yes"]);
    assert_eq!(w.root.transactions(), before + 1, "{}", w.root.history());
    assert_eq!(status(&w, "stead-test-a"), None);
    assert_eq!(status(&w, "stead-test-b"), None);
    let records = w.transaction_records();
    let (start, rest) = records.last().unwrap();
    assert_eq!(start["action"], "remove", "{start}");
    assert_eq!(
        common::packages::members(start),
        ["package.stead-test-a", "package.stead-test-b"]
    );
    assert_eq!(rest[0]["state"], "succeeded");
    assert!(
        w.repo.sb.state_json()["resources"]
            .as_object()
            .unwrap()
            .is_empty()
    );
}
