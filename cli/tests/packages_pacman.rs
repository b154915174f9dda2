//! The `package` kind with `manager = "pacman"`, against the machine's real
//! pacman in a throw-away root (`stead_testkit::pacman`): one `pacman -Q`
//! per plan, one `pacman -S` transaction for packages that change
//! together, `latest` from the sync database, a pin refused (a pacman
//! repository holds one version), ownership of only what stead installed,
//! and a database lock left by an interrupted pacman reported with its
//! repair. stead gets the root through `STEAD_PACMAN_CONFIG`; the programs
//! it starts are counted through logging wrappers first on `PATH`.

mod common;

use std::fs;

use common::packages::{
    KillOnDrop, PackageWorld, count, members, processes_mentioning, versions, wait_for,
};
use stead_testkit::pacman::{PacPkg, PacmanRoot};

const A: PacPkg = PacPkg::new("stead-test-a", "1.0");
const A11: PacPkg = PacPkg::new("stead-test-a", "1.1");
const B: PacPkg = PacPkg::new("stead-test-b", "1.0");
const C: PacPkg = PacPkg::new("stead-test-c", "1.0").with_depends("stead-test-a");

type World = PackageWorld<PacmanRoot>;

fn world(pkgs: &[PacPkg], manifest: &str) -> World {
    let pacman = PacmanRoot::new(pkgs);
    let env = pacman.env();
    PackageWorld::new(pacman, env, &["pacman", "pacman-conf"], manifest)
}

fn declare(names: &[&str], extra: &str) -> String {
    common::packages::declare("pacman", names, extra)
}

#[test]
fn three_packages_install_in_one_pacman_transaction_and_a_warm_plan_runs_one_query() {
    let machine = stead_testkit::pacman::machine_stamps();
    let w = world(
        &[A, B, C],
        &declare(&["stead-test-a", "stead-test-b", "stead-test-c"], ""),
    );
    let plan = w.ok(&["plan"]);
    assert!(
        plan.contains(
            "+ package.{stead-test-a,stead-test-b,stead-test-c}  (pacman, one transaction)"
        ),
        "{plan}"
    );
    w.calls();
    w.ok(&["apply", "--yes"]);
    assert_eq!(w.root.transactions(), 1, "{}", w.root.log());
    assert_eq!(
        w.root.installed(),
        versions(&[
            ("stead-test-a", "1.0-1"),
            ("stead-test-b", "1.0-1"),
            ("stead-test-c", "1.0-1")
        ])
    );
    let calls = w.calls();
    let installs: Vec<&String> = calls.iter().filter(|c| c.contains(" -S ")).collect();
    assert_eq!(installs.len(), 1, "{calls:?}");

    let again = w.ok(&["plan"]);
    assert!(again.contains("No changes"), "{again}");
    let calls = w.calls();
    assert_eq!(calls.len(), 1, "a warm plan starts one query: {calls:?}");
    assert_eq!(count(&calls, "pacman"), 1, "{calls:?}");
    assert!(calls[0].contains(" -Q "), "{calls:?}");

    let records = w.transaction_records();
    assert_eq!(records.len(), 1);
    let (start, rest) = &records[0];
    assert_eq!(members(start).len(), 3, "{start}");
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_eq!(rest[0]["state"], "succeeded");
    assert_eq!(
        w.repo.sb.state_json()["resources"]["package.stead-test-a"]["names"][0],
        "pacman:stead-test-a"
    );
    assert_eq!(
        stead_testkit::pacman::machine_stamps(),
        machine,
        "the machine's own pacman state is untouched"
    );
}

#[test]
fn latest_follows_the_sync_database_a_pin_is_refused_and_absent_removes() {
    let w = world(&[A], &declare(&["stead-test-a"], "ensure = \"latest\"\n"));
    w.ok(&["apply", "--yes"]);
    assert_eq!(w.root.installed(), versions(&[("stead-test-a", "1.0-1")]));
    assert!(w.ok(&["plan"]).contains("No changes"));

    w.root.publish(&[A11]);
    w.calls();
    let plan = w.ok(&["plan"]);
    assert!(
        plan.contains("~ package.stead-test-a  (1.0-1 → 1.1-1 (latest))"),
        "{plan}"
    );
    let calls = w.calls();
    assert_eq!(count(&calls, "pacman"), 2, "-Q and one -Sl: {calls:?}");
    w.ok(&["apply", "--yes"]);
    assert_eq!(w.root.installed(), versions(&[("stead-test-a", "1.1-1")]));

    // A pin cannot be had from a pacman repository: a conflict, nothing run.
    w.repo
        .write_manifest(&declare(&["stead-test-a"], "version = \"1.0\"\n"));
    let (code, out, err) = w.run(&["apply", "--yes"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        format!("{out}{err}").contains(
            "pacman installs what its repositories hold and cannot install a chosen version: remove `version`"
        ),
        "{out}{err}"
    );
    assert_eq!(w.root.installed(), versions(&[("stead-test-a", "1.1-1")]));

    w.repo
        .write_manifest(&declare(&["stead-test-a"], "ensure = \"absent\"\n"));
    assert!(w.ok(&["plan"]).contains("- package.stead-test-a"));
    w.ok(&["apply", "--yes"]);
    assert!(w.root.installed().is_empty());
    assert!(w.ok(&["plan"]).contains("No changes"));
}

#[test]
fn stead_removes_only_the_pacman_packages_it_installed() {
    let w = world(&[A, B], &declare(&["stead-test-a", "stead-test-b"], ""));
    w.root.pacman(&["-S", "stead-test-a"]);
    let plan = w.ok(&["plan"]);
    assert!(
        plan.contains("+ package.stead-test-b  (not installed)"),
        "{plan}"
    );
    assert!(!plan.contains("package.stead-test-a"), "{plan}");
    w.ok(&["apply", "--yes"]);

    w.repo.write_manifest("[settings]\n");
    let plan = w.ok(&["plan"]);
    assert!(
        plan.contains("- package.stead-test-b  (no longer declared; stead installed it)"),
        "{plan}"
    );
    w.ok(&["apply", "--yes"]);
    assert_eq!(w.root.installed(), versions(&[("stead-test-a", "1.0-1")]));
    assert!(w.ok(&["plan"]).contains("No changes"));
}

#[test]
fn an_unknown_name_fails_the_pacman_transaction_and_the_others_install_alone() {
    let w = world(
        &[A, B],
        &declare(&["stead-test-a", "stead-test-nope", "stead-test-b"], ""),
    );
    let (code, out, err) = w.run(&["apply", "--yes"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        format!("{out}{err}").contains("stead-test-nope is not installed"),
        "{out}{err}"
    );
    assert_eq!(
        w.root.installed(),
        versions(&[("stead-test-a", "1.0-1"), ("stead-test-b", "1.0-1")])
    );
    let records = w.transaction_records();
    assert_eq!(records.len(), 1, "{records:?}");
    let (start, rest) = &records[0];
    assert_eq!(members(start).len(), 3);
    let failed: Vec<&serde_json::Value> = rest.iter().filter(|r| r["state"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{rest:?}");
    assert_eq!(failed[0]["resource"], "package.stead-test-nope");
}

#[test]
fn a_database_lock_left_behind_is_a_conflict_naming_the_repair_and_nothing_runs() {
    let w = world(&[A], &declare(&["stead-test-a"], ""));
    // What a pacman killed mid-transaction leaves: its lock.
    let lock = w.root.root().join("var/lib/pacman/db.lck");
    assert!(lock.parent().unwrap().is_dir(), "DBPath is the root's");
    fs::write(&lock, "").unwrap();
    w.calls();
    let (code, out, err) = w.run(&["apply", "--yes"]);
    assert_ne!(code, 0, "{out}{err}");
    let all = format!("{out}{err}");
    assert!(
        all.contains(&format!(
            "pacman's database is locked ({} exists)",
            lock.display()
        )),
        "{all}"
    );
    assert!(
        all.contains(&format!("'sudo rm {}'", lock.display())),
        "{all}"
    );
    let calls = w.calls();
    assert!(
        !calls.iter().any(|c| c.contains(" -S")),
        "no transaction is tried: {calls:?}"
    );
    assert!(w.root.installed().is_empty());

    fs::remove_file(&lock).unwrap();
    w.ok(&["apply", "--yes"]);
    assert_eq!(w.root.installed(), versions(&[("stead-test-a", "1.0-1")]));
}

#[test]
fn a_file_an_installed_package_ships_is_written_after_its_upgrade() {
    let w = world(&[A], "[settings]\n");
    w.root.pacman(&["-S", "stead-test-a"]);
    w.root.publish(&[A11]);
    let path = w.root.root().join(A.payload_path());
    w.repo.write_manifest(&format!(
        "[file.payload]\npath = \"{}\"\ncontent = \"mine\\n\"\n\n{}",
        path.display(),
        declare(&["stead-test-a"], "ensure = \"latest\"\n")
    ));
    let (code, json, err) = w.run(&["--json", "plan", "--force"]);
    assert_eq!(code, 0, "{err}");
    let plan: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(plan["plan"]["changes"][1]["id"], "package.stead-test-a");
    assert_eq!(
        plan["plan"]["depends_on"][0],
        serde_json::json!([1]),
        "the file waits for the package that ships it: {json}"
    );
    w.ok(&["apply", "--yes", "--force"]);
    assert_eq!(w.root.installed(), versions(&[("stead-test-a", "1.1-1")]));
    assert_eq!(fs::read_to_string(&path).unwrap(), "mine\n");
    assert!(w.ok(&["plan"]).contains("No changes"));
}

#[test]
fn a_stead_killed_during_the_pacman_transaction_leaves_its_lock_and_the_next_apply_names_the_repair()
 {
    let w = world(&[A, B], &declare(&["stead-test-a", "stead-test-b"], ""));
    // pacman takes its lock, then reads the package from the repository: a
    // FIFO in its place holds pacman there, inside its transaction.
    let package = w.root.repo().join(A.file_name());
    let saved = fs::read(&package).unwrap();
    fs::remove_file(&package).unwrap();
    nix::unistd::mkfifo(&package, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let lock = w.root.root().join("var/lib/pacman/db.lck");
    let config = w.root.config().to_str().unwrap().to_string();

    let mut stead = KillOnDrop(
        w.std_command(&["apply", "--yes"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("pacman to take its lock", || lock.exists());
    stead.0.kill().unwrap();
    stead.0.wait().unwrap();
    // stead's reaper ends the pacman it left running; the lock stays.
    wait_for("the reaper to end pacman", || {
        processes_mentioning(&config).is_empty()
    });
    assert!(lock.exists());
    assert!(w.root.installed().is_empty());
    fs::remove_file(&package).unwrap();
    fs::write(&package, saved).unwrap();

    w.calls();
    let (code, out, err) = w.run(&["apply", "--yes"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(out.contains("Recovering from interrupted run"), "{out}");
    assert!(out.contains("! package.stead-test-a"), "{out}");
    assert!(
        out.contains(&format!("'sudo rm {}'", lock.display())),
        "{out}"
    );
    let calls = w.calls();
    assert!(!calls.iter().any(|c| c.contains(" -S ")), "{calls:?}");

    fs::remove_file(&lock).unwrap();
    w.ok(&["apply", "--yes"]);
    assert_eq!(
        w.root.installed(),
        versions(&[("stead-test-a", "1.0-1"), ("stead-test-b", "1.0-1")])
    );
}
