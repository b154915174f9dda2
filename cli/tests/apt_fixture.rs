//! The apt fixture itself (`common::apt`): the machine's real apt-get and
//! dpkg install, upgrade and remove tiny packages inside a throw-away root,
//! log their transactions there, read none of the machine's apt
//! configuration, and leave the machine's own dpkg state and logs alone.

mod common;

use std::fs;
use std::time::Instant;

use common::apt::{AptRoot, Deb, machine_stamps};

const A: Deb = Deb::new("stead-test-a", "1.0");
const B: Deb = Deb::new("stead-test-b", "1.0").with_depends("stead-test-a");

/// Prints how long a test took (visible with `--nocapture`).
struct Timed(&'static str, Instant);

impl Timed {
    fn start(name: &'static str) -> Timed {
        Timed(name, Instant::now())
    }
}

impl Drop for Timed {
    fn drop(&mut self) {
        eprintln!("{}: {:?}", self.0, self.1.elapsed());
    }
}

fn entry(version: &str, status: &str) -> (String, String) {
    (version.to_string(), status.to_string())
}

#[test]
fn installing_a_package_pulls_in_its_dependency_inside_the_root_only() {
    let _t = Timed::start("install with a dependency");
    let before = machine_stamps();
    let apt = AptRoot::new(&[A, B]);
    assert!(apt.installed().is_empty(), "{:?}", apt.installed());
    assert_eq!(apt.transactions(), 0, "{}", apt.history());

    apt.apt_get(&[
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        "stead-test-b",
    ]);

    let installed = apt.installed();
    assert_eq!(installed.len(), 2, "{installed:?}");
    assert_eq!(installed["stead-test-a"], entry("1.0", "ii"));
    assert_eq!(installed["stead-test-b"], entry("1.0", "ii"));
    assert_eq!(apt.transactions(), 1, "{}", apt.history());
    assert!(
        apt.history()
            .contains("Commandline: apt-get install -y -q --no-install-recommends stead-test-b"),
        "{}",
        apt.history()
    );

    // The files landed under the root, and dpkg lists them.
    let root = apt.root();
    assert_eq!(
        fs::read_to_string(root.join(B.payload_path())).unwrap(),
        "stead-test-b 1.0\n"
    );
    assert_eq!(
        fs::read_to_string(root.join(A.etc_path())).unwrap(),
        "# stead-test-a\n"
    );
    let listed = apt.run("dpkg-query", &["-L", "stead-test-a"]);
    assert!(listed.status.success());
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(
        listed
            .lines()
            .any(|l| l == "/etc/stead-test/stead-test-a.conf"),
        "{listed}"
    );

    // The locks apt and dpkg took, and their logs, are the root's.
    for inside in [
        "var/lib/dpkg/lock",
        "var/lib/dpkg/lock-frontend",
        "var/cache/apt/archives/lock",
        "var/lib/apt/lists/lock",
        "var/log/apt/term.log",
        "var/log/dpkg.log",
    ] {
        assert!(root.join(inside).exists(), "no {inside} in the root");
    }
    assert_eq!(
        machine_stamps(),
        before,
        "the machine's own dpkg/apt files changed"
    );
}

#[test]
fn remove_keep_config_leaves_a_package_with_a_conffile_in_rc_state() {
    let _t = Timed::start("remove, keep config");
    let a = A.with_conffile();
    let apt = AptRoot::new(&[a]);
    apt.apt_get(&["install", "-y", "-q", "stead-test-a"]);
    assert_eq!(apt.installed()["stead-test-a"], entry("1.0", "ii"));

    apt.remove_keep_config("stead-test-a");

    assert_eq!(apt.installed()["stead-test-a"], entry("1.0", "rc"));
    assert!(!apt.root().join(a.payload_path()).exists());
    assert!(apt.root().join(a.etc_path()).exists(), "the conffile stays");
    assert_eq!(apt.transactions(), 1, "{}", apt.history());
}

#[test]
fn a_published_newer_version_is_installed_as_an_upgrade() {
    let _t = Timed::start("publish 1.1, upgrade");
    let apt = AptRoot::new(&[A]);
    apt.apt_get(&["install", "-y", "-q", "stead-test-a"]);
    assert_eq!(apt.installed()["stead-test-a"], entry("1.0", "ii"));

    apt.publish(&[Deb::new("stead-test-a", "1.1")]);
    apt.apt_get(&["install", "-y", "-q", "stead-test-a"]);

    assert_eq!(apt.installed()["stead-test-a"], entry("1.1", "ii"));
    assert_eq!(
        fs::read_to_string(apt.root().join(A.payload_path())).unwrap(),
        "stead-test-a 1.1\n"
    );
    assert_eq!(apt.transactions(), 2, "{}", apt.history());
    let history = apt.history();
    assert!(
        history
            .lines()
            .any(|l| l.starts_with("Upgrade: stead-test-a:") && l.ends_with("(1.0, 1.1)")),
        "{history}"
    );
}

#[test]
fn apt_reads_none_of_the_machines_configuration() {
    let _t = Timed::start("apt-config dump");
    let apt = AptRoot::new(&[]);
    let out = apt.run("apt-config", &["dump"]);
    assert!(out.status.success());
    let dump = String::from_utf8(out.stdout).unwrap();
    for hook in [
        "Pre-Invoke",
        "Post-Invoke",
        "Pre-Install-Pkgs",
        "Update::Post-Invoke",
    ] {
        assert!(!dump.contains(hook), "apt read a {hook} hook:\n{dump}");
    }
    let root = apt.root().to_str().unwrap();
    assert!(
        dump.lines().any(|l| l == format!("Dir \"{root}/\";")),
        "{dump}"
    );
    // The config is read once: dpkg's options are not doubled.
    let roots = dump.matches(&format!("\"--root={root}\"")).count();
    assert_eq!(roots, 1, "{dump}");
    assert!(apt.installed().is_empty());
}
