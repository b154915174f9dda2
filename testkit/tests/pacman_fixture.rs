//! The pacman fixture itself (`stead_testkit::pacman`): the machine's real
//! pacman installs, upgrades and removes tiny makepkg-built packages inside a
//! throw-away root, logs its transactions there, and leaves the machine's
//! own pacman configuration, database, cache and log alone.
//!
//! The last test only records what pacman does with the commands stead may
//! run (visible with `--nocapture`).

use std::fs;
use std::process::Output;
use std::time::Instant;

use stead_testkit::pacman::{PacPkg, PacmanRoot, REPO, machine_stamps};

const A: PacPkg = PacPkg::new("stead-test-a", "1.0");
const A11: PacPkg = PacPkg::new("stead-test-a", "1.1");
const B: PacPkg = PacPkg::new("stead-test-b", "1.0").with_depends("stead-test-a");

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

/// Runs `f`, printing how long it took.
fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let t = f();
    eprintln!("  {what}: {:?}", start.elapsed());
    t
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// Prints a command's exit code, stdout and stderr for the report.
fn show(what: &str, out: &Output) {
    eprintln!(
        "=== {what}: exit {:?}\n--- stdout:\n{}--- stderr:\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
}

fn installed(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

#[test]
fn installing_a_package_pulls_in_its_dependency_inside_the_root_only() {
    let _t = Timed::start("install with a dependency");
    let before = machine_stamps();
    let pacman = timed("try_new (2 packages)", || PacmanRoot::new(&[A, B]));
    assert!(pacman.installed().is_empty(), "{:?}", pacman.installed());
    assert_eq!(pacman.transactions(), 0, "{}", pacman.log());
    assert_eq!(
        pacman.env(),
        vec![(
            "STEAD_PACMAN_CONFIG",
            pacman.config().to_str().unwrap().to_string()
        )]
    );

    timed("pacman -S (2 packages)", || {
        pacman.pacman(&["-S", "stead-test-b"])
    });

    assert_eq!(
        pacman.installed(),
        installed(&[("stead-test-a", "1.0-1"), ("stead-test-b", "1.0-1")])
    );
    assert_eq!(pacman.transactions(), 1, "{}", pacman.log());
    let log = pacman.log();
    assert!(
        log.contains(&format!(
            "Running 'pacman --config {} --noconfirm -S stead-test-b'",
            pacman.config().display()
        )),
        "{log}"
    );
    assert!(
        log.contains("[ALPM] installed stead-test-a (1.0-1)"),
        "{log}"
    );
    assert!(
        log.contains("[ALPM] installed stead-test-b (1.0-1)"),
        "{log}"
    );

    // The files landed under the root, and pacman lists them there.
    let root = pacman.root();
    assert_eq!(
        fs::read_to_string(root.join(B.payload_path())).unwrap(),
        "stead-test-b 1.0\n"
    );
    assert_eq!(
        fs::read_to_string(root.join(A.payload_path())).unwrap(),
        "stead-test-a 1.0\n"
    );
    let listed = pacman.pacman(&["-Ql", "stead-test-a"]);
    assert!(
        listed.lines().any(|l| l
            == format!(
                "stead-test-a {}/usr/share/stead-test/stead-test-a",
                root.display()
            )),
        "{listed}"
    );
    // Its database, cache and lock are under the root too.
    assert!(
        root.join("var/lib/pacman/local/stead-test-a-1.0-1/desc")
            .is_file()
    );
    assert!(
        root.join(format!("var/lib/pacman/sync/{REPO}.db"))
            .is_file()
    );
    assert!(
        root.join("var/cache/pacman/pkg")
            .join(A.file_name())
            .is_file()
    );
    assert!(!root.join("var/lib/pacman/db.lck").exists());

    drop(pacman);
    assert_eq!(
        machine_stamps(),
        before,
        "the machine's pacman state changed"
    );
}

#[test]
fn a_query_with_a_missing_package_exits_1_and_still_lists_the_installed_one() {
    let _t = Timed::start("query with a missing package");
    let pacman = PacmanRoot::new(&[A]);
    // Nothing installed: `-Q` alone exits 1 too, printing nothing.
    let none = pacman.pacman_output(&["-Q"]);
    show("pacman -Q (nothing installed)", &none);
    assert_eq!(none.status.code(), Some(1));
    assert_eq!(text(&none.stdout), "");
    assert_eq!(text(&none.stderr), "");

    pacman.pacman(&["-S", "stead-test-a"]);
    let out = timed("pacman -Q a nope", || {
        pacman.pacman_output(&["-Q", "stead-test-a", "nope"])
    });
    show("pacman -Q stead-test-a nope", &out);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "stead-test-a 1.0-1\n");
    assert_eq!(text(&out.stderr), "error: package 'nope' was not found\n");

    let all = pacman.pacman_output(&["-Q", "stead-test-a"]);
    assert_eq!(all.status.code(), Some(0));
    assert_eq!(text(&all.stdout), "stead-test-a 1.0-1\n");
    // Queries are no transactions.
    assert_eq!(pacman.transactions(), 1, "{}", pacman.log());
}

#[test]
fn a_published_version_is_installed_by_s_without_a_sync_of_its_own() {
    let _t = Timed::start("upgrade to a published version");
    let pacman = PacmanRoot::new(&[A]);
    pacman.pacman(&["-S", "stead-test-a"]);
    assert_eq!(pacman.installed(), installed(&[("stead-test-a", "1.0-1")]));
    let candidate =
        |pacman: &PacmanRoot| pacman.pacman(&["-Sp", "--print-format", "%n %v", "stead-test-a"]);
    assert_eq!(candidate(&pacman), "stead-test-a 1.0-1\n");

    timed("publish 1.1", || pacman.publish(&[A11]));
    assert_eq!(candidate(&pacman), "stead-test-a 1.1-1\n");
    // Still 1.0 until installed: publishing upgrades nothing.
    assert_eq!(pacman.installed(), installed(&[("stead-test-a", "1.0-1")]));

    // As stead runs it: no -y, the fixture's sync is enough.
    timed("pacman -S (upgrade)", || {
        pacman.pacman(&["-S", "--needed", "stead-test-a"])
    });
    assert_eq!(pacman.installed(), installed(&[("stead-test-a", "1.1-1")]));
    assert_eq!(
        fs::read_to_string(pacman.root().join(A.payload_path())).unwrap(),
        "stead-test-a 1.1\n"
    );
    assert_eq!(pacman.transactions(), 2, "{}", pacman.log());
    assert!(
        pacman
            .log()
            .contains("[ALPM] upgraded stead-test-a (1.0-1 -> 1.1-1)"),
        "{}",
        pacman.log()
    );
}

#[test]
fn removing_a_package_deletes_its_files_and_its_database_entry() {
    let _t = Timed::start("remove");
    let pacman = PacmanRoot::new(&[A]);
    pacman.pacman(&["-S", "stead-test-a"]);
    let payload = pacman.root().join(A.payload_path());
    assert!(payload.is_file());

    timed("pacman -R", || pacman.pacman(&["-R", "stead-test-a"]));

    assert!(pacman.installed().is_empty(), "{:?}", pacman.installed());
    assert!(!payload.exists());
    assert!(
        !pacman
            .root()
            .join("var/lib/pacman/local/stead-test-a-1.0-1")
            .exists()
    );
    assert_eq!(pacman.transactions(), 2, "{}", pacman.log());
    assert!(
        pacman.log().contains("[ALPM] removed stead-test-a (1.0-1)"),
        "{}",
        pacman.log()
    );
}

/// Records (and pins) what pacman does with the commands stead may run.
#[test]
fn pacman_answers_the_commands_stead_runs_as_its_adapter_reads_them() {
    let _t = Timed::start("report");
    let pacman = PacmanRoot::new(&[A, B]);

    // Candidate versions, nothing installed: -Sp lists the whole
    // transaction, dependencies included.
    let out = pacman.pacman_output(&["-Sp", "--print-format", "%n %v", "stead-test-b"]);
    show("-Sp --print-format '%n %v' stead-test-b", &out);
    assert_eq!(
        text(&out.stdout),
        "stead-test-a 1.0-1\nstead-test-b 1.0-1\n"
    );
    let out = pacman.pacman_output(&[
        "-Sp",
        "--print-format",
        "%n %v",
        "stead-test-a",
        "stead-test-b",
    ]);
    show("-Sp --print-format '%n %v' stead-test-a stead-test-b", &out);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout),
        "stead-test-a 1.0-1\nstead-test-b 1.0-1\n"
    );
    let out = pacman.pacman_output(&["-Sp", "--print-format", "%n %v", "stead-test-a", "nope"]);
    show("-Sp --print-format '%n %v' stead-test-a nope", &out);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "");
    let out = pacman.pacman_output(&["-Sl", REPO]);
    show("-Sl steadtest", &out);
    assert_eq!(
        text(&out.stdout),
        "steadtest stead-test-a 1.0-1\nsteadtest stead-test-b 1.0-1\n"
    );

    // One missing target: nothing is installed at all.
    let out = pacman.pacman_output(&["-S", "stead-test-a", "nope"]);
    show("-S stead-test-a nope", &out);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "");
    assert_eq!(text(&out.stderr), "error: target not found: nope\n");
    assert!(pacman.installed().is_empty());
    assert_eq!(pacman.transactions(), 0, "{}", pacman.log());

    // With the repository's name.
    let out = pacman.pacman_output(&["-S", "steadtest/stead-test-a"]);
    show("-S steadtest/stead-test-a", &out);
    assert!(out.status.success());
    assert_eq!(pacman.installed(), installed(&[("stead-test-a", "1.0-1")]));

    // Already installed: --needed skips it (a warning on stderr, exit 0,
    // no transaction); without --needed pacman reinstalls it.
    let out = pacman.pacman_output(&["-S", "--needed", "stead-test-a"]);
    show("-S --needed stead-test-a (installed)", &out);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stderr),
        "warning: stead-test-a-1.0-1 is up to date -- skipping\n"
    );
    assert_eq!(pacman.transactions(), 1, "{}", pacman.log());
    let out = pacman.pacman_output(&["-S", "--needed", "stead-test-a", "stead-test-b"]);
    show("-S --needed stead-test-a stead-test-b (a installed)", &out);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(pacman.transactions(), 2, "{}", pacman.log());

    // Removing a package another one needs fails, removing nothing.
    let out = pacman.pacman_output(&["-R", "stead-test-a"]);
    show("-R stead-test-a (b depends on it)", &out);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(pacman.installed().len(), 2);
    let out = pacman.pacman_output(&["-R", "stead-test-a", "nope"]);
    show("-R stead-test-a nope", &out);
    assert_eq!(out.status.code(), Some(1));

    // A repository holds one version of a package: once 1.1 is published,
    // -Sl shows it beside the installed 1.0, and -S --needed upgrades.
    pacman.publish(&[A11]);
    let out = pacman.pacman_output(&["-Sl", REPO]);
    show("-Sl steadtest (after publishing 1.1)", &out);
    assert_eq!(
        text(&out.stdout),
        "steadtest stead-test-a 1.1-1 [installed: 1.0-1]\nsteadtest stead-test-b 1.0-1 [installed]\n"
    );
    let out = pacman.pacman_output(&["-S", "--needed", "stead-test-a", "stead-test-b"]);
    show("-S --needed a b (a upgradable, b installed)", &out);
    assert_eq!(
        pacman.installed(),
        installed(&[("stead-test-a", "1.1-1"), ("stead-test-b", "1.0-1")])
    );
}
