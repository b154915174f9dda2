//! The `package` kind with `manager = "dnf"`, against the machine's real
//! dnf and rpm in a throw-away installroot (`stead_testkit::dnf`): one rpm
//! query per plan, one dnf transaction for packages that change together,
//! outcomes read back from rpm, pins, `latest`, and ownership of only what
//! stead installed. stead gets the root through `STEAD_DNF_INSTALLROOT`;
//! the programs it starts are counted through logging wrappers first on
//! `PATH`.

mod common;

use std::fs;

use common::packages::{
    KillOnDrop, PackageWorld, count, members, processes_mentioning, versions, wait_for,
};
use stead_testkit::dnf::{DnfRoot, Rpm};

const A: Rpm = Rpm::new("stead-test-a", "1.0");
const A11: Rpm = Rpm::new("stead-test-a", "1.1");
const B: Rpm = Rpm::new("stead-test-b", "1.0");
const C: Rpm = Rpm::new("stead-test-c", "1.0").with_requires("stead-test-a");

type World = PackageWorld<DnfRoot>;

fn world(rpms: &[Rpm], manifest: &str) -> World {
    let dnf = DnfRoot::new(rpms);
    let env = dnf.env();
    let w = PackageWorld::new(dnf, env, &["dnf", "rpm"], manifest);
    // Debian's rpm keeps its database under HOME: stead's HOME must share
    // the root's one database.
    w.root.link_home(w.repo.sb.home());
    w
}

const DNF: &str = "[settings]\n";

fn declare(names: &[&str], extra: &str) -> String {
    common::packages::declare("dnf", names, extra)
}

#[test]
fn three_packages_install_in_one_dnf_transaction_and_a_warm_plan_runs_one_rpm_query() {
    let machine = stead_testkit::dnf::machine_stamps();
    let w = world(
        &[A, B, C],
        &declare(&["stead-test-a", "stead-test-b", "stead-test-c"], ""),
    );
    let plan = w.ok(&["plan"]);
    assert!(
        plan.contains("+ package.{stead-test-a,stead-test-b,stead-test-c}  (dnf, one transaction)"),
        "{plan}"
    );
    let calls = w.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(count(&calls, "rpm"), 1, "{calls:?}");

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
    assert_eq!(count(&w.calls(), "dnf"), 1);

    let again = w.ok(&["plan"]);
    assert!(again.contains("No changes"), "{again}");
    let calls = w.calls();
    assert_eq!(calls.len(), 1, "a warm plan starts one query: {calls:?}");
    assert_eq!(count(&calls, "rpm"), 1, "{calls:?}");

    let records = w.transaction_records();
    assert_eq!(records.len(), 1);
    let (start, rest) = &records[0];
    assert_eq!(members(start).len(), 3, "{start}");
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_eq!(rest[0]["state"], "succeeded");
    assert_eq!(members(&rest[0]), members(start));
    assert_eq!(
        w.repo.sb.state_json()["resources"]["package.stead-test-c"]["names"][0],
        "dnf:stead-test-c"
    );
    assert!(w.root.stray_rpmdbs().is_empty());
    assert_eq!(
        stead_testkit::dnf::machine_stamps(),
        machine,
        "the machine's own rpm and dnf state is untouched"
    );
}

#[test]
fn a_pin_upgrades_and_downgrades_latest_follows_and_absent_removes() {
    let w = world(
        &[A, A11],
        &declare(&["stead-test-a"], "version = \"1.0\"\n"),
    );
    w.ok(&["apply", "--yes"]);
    assert_eq!(w.root.installed(), versions(&[("stead-test-a", "1.0-1")]));
    // dnf takes a version without its release: 1.0 is 1.0-1.
    assert!(w.ok(&["plan"]).contains("No changes"));

    w.repo
        .write_manifest(&declare(&["stead-test-a"], "version = \"1.1-1\"\n"));
    let plan = w.ok(&["plan"]);
    assert!(
        plan.contains("~ package.stead-test-a  (1.0-1 → 1.1-1)"),
        "{plan}"
    );
    w.ok(&["apply", "--yes"]);
    assert_eq!(w.root.installed(), versions(&[("stead-test-a", "1.1-1")]));

    w.repo
        .write_manifest(&declare(&["stead-test-a"], "version = \"1.0\"\n"));
    w.ok(&["apply", "--yes"]);
    assert_eq!(
        w.root.installed(),
        versions(&[("stead-test-a", "1.0-1")]),
        "a pin may go down"
    );

    w.repo
        .write_manifest(&declare(&["stead-test-a"], "ensure = \"latest\"\n"));
    w.calls();
    let plan = w.ok(&["plan"]);
    assert!(
        plan.contains("~ package.stead-test-a  (1.0-1 → 1.1-1 (latest))"),
        "{plan}"
    );
    let calls = w.calls();
    assert_eq!(count(&calls, "dnf"), 1, "one candidate query: {calls:?}");
    w.ok(&["apply", "--yes"]);
    assert_eq!(w.root.installed(), versions(&[("stead-test-a", "1.1-1")]));
    assert!(w.ok(&["plan"]).contains("No changes"));

    w.repo
        .write_manifest(&declare(&["stead-test-a"], "ensure = \"absent\"\n"));
    assert!(w.ok(&["plan"]).contains("- package.stead-test-a"));
    w.ok(&["apply", "--yes"]);
    assert!(w.root.installed().is_empty());
    assert!(w.ok(&["plan"]).contains("No changes"));
    assert_eq!(w.root.transactions(), 5, "{}", w.root.log());
}

#[test]
fn stead_removes_only_the_rpms_it_installed() {
    let w = world(&[A, B], &declare(&["stead-test-a", "stead-test-b"], ""));
    w.root.dnf(&["install", "-y", "-q", "stead-test-a"]);
    let plan = w.ok(&["plan"]);
    assert!(
        plan.contains("+ package.stead-test-b  (not installed)"),
        "{plan}"
    );
    assert!(!plan.contains("package.stead-test-a"), "{plan}");
    w.ok(&["apply", "--yes"]);

    w.repo.write_manifest(DNF);
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
fn an_unknown_name_fails_the_dnf_transaction_and_each_known_package_is_retried_alone() {
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
    // dnf refuses the whole transaction when one name is unknown; stead
    // then installs the others one at a time.
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
    let resources = &w.repo.sb.state_json()["resources"];
    assert!(resources.get("package.stead-test-nope").is_none());
    assert!(resources.get("package.stead-test-b").is_some());
}

#[test]
fn a_file_a_package_will_ship_is_written_after_the_package_is_installed() {
    let shipped = "usr/share/stead-test/stead-test-a";
    let w = world(&[A], DNF);
    let path = w.root.root().join(shipped);
    w.repo.write_manifest(&format!(
        "[file.payload]\npath = \"{}\"\ncontent = \"mine\\n\"\n\n{}",
        path.display(),
        declare(&["stead-test-a"], "")
    ));
    let (code, json, err) = w.run(&["--json", "plan"]);
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

    let (code, out, err) = w.run(&["apply", "--yes"]);
    eprintln!("{out}{err}");
    assert_eq!(code, 0);
    assert_eq!(w.root.installed(), versions(&[("stead-test-a", "1.0-1")]));
    assert_eq!(fs::read_to_string(&path).unwrap(), "mine\n");
}

#[test]
fn a_declared_order_the_other_way_wins_over_the_autoedge() {
    let w = world(&[A], DNF);
    let path = w.root.root().join("usr/share/stead-test/stead-test-a");
    w.repo.write_manifest(&format!(
        "[file.payload]\npath = \"{}\"\ncontent = \"mine\\n\"\n\n{}after = [\"file.payload\"]\n",
        path.display(),
        declare(&["stead-test-a"], "")
    ));
    let (code, json, err) = w.run(&["--json", "plan"]);
    assert_eq!(code, 0, "{err}");
    let plan: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        plan["plan"]["depends_on"],
        serde_json::json!([[], [0]]),
        "no edge back from the file to the package: {json}"
    );
}

#[test]
fn a_stead_killed_while_dnf_reads_a_package_leaves_nothing_half_done_and_the_next_apply_installs() {
    let w = world(&[A, B], &declare(&["stead-test-a", "stead-test-b"], ""));
    // dnf reads a local repository's packages in place: a FIFO in the place
    // of one holds dnf there until the test opens the other end.
    let package = w.root.repo().join("noarch").join(A.file_name());
    let saved = fs::read(&package).unwrap();
    fs::remove_file(&package).unwrap();
    nix::unistd::mkfifo(&package, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let root = w.root.root().to_str().unwrap().to_string();

    let mut stead = KillOnDrop(
        w.std_command(&["apply", "--yes"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Opening the writing end without blocking succeeds once a reader
    // (dnf) waits on the FIFO; the writer is held open, writing nothing.
    let mut writer = None;
    wait_for("dnf to open the package", || {
        use std::os::unix::fs::OpenOptionsExt;
        writer = fs::OpenOptions::new()
            .write(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open(&package)
            .ok();
        writer.is_some()
    });
    stead.0.kill().unwrap();
    stead.0.wait().unwrap();
    wait_for("the reaper to end dnf", || {
        processes_mentioning(&format!("--installroot={root}")).is_empty()
    });
    drop(writer);
    assert!(w.root.installed().is_empty(), "{:?}", w.root.installed());
    fs::remove_file(&package).unwrap();
    fs::write(&package, saved).unwrap();

    let (code, out, err) = w.run(&["apply", "--yes"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Recovering from interrupted run"), "{out}");
    assert_eq!(
        w.root.installed(),
        versions(&[("stead-test-a", "1.0-1"), ("stead-test-b", "1.0-1")])
    );
    assert!(w.root.stray_rpmdbs().is_empty());
}
