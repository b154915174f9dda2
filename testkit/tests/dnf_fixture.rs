//! The dnf fixture itself (`stead_testkit::dnf`): the machine's real dnf and
//! rpm install, upgrade, downgrade and remove tiny rpms inside a throw-away
//! installroot configured only from files inside it, log their transactions
//! there, and leave the machine's own rpm and dnf state alone. Also pins
//! down the outputs stead's `manager = "dnf"` parses.

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use stead_testkit::dnf::{DnfRoot, Rpm, machine_stamps};

const A: Rpm = Rpm::new("stead-test-a", "1.0");
const B: Rpm = Rpm::new("stead-test-b", "1.0").with_requires("stead-test-a");
const A11: Rpm = Rpm::new("stead-test-a", "1.1");

/// `%{NAME}\t%{VERSION}-%{RELEASE}\n`, the query format stead uses.
const QF: &str = "%{NAME}\t%{VERSION}-%{RELEASE}\n";

/// Prints how long something took (visible with `--nocapture`).
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

fn versions(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn installed(dnf: &DnfRoot) -> Vec<(String, String)> {
    dnf.installed().into_iter().collect()
}

/// `program args` on the root, not expecting success: (exit code, stdout,
/// stderr).
fn run(dnf: &DnfRoot, program: &str, args: &[&str]) -> (i32, String, String) {
    let out = dnf.run(program, args);
    (
        out.status.code().expect("exited"),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn root_arg(dnf: &DnfRoot) -> String {
    format!("--installroot={}", dnf.root().to_str().unwrap())
}

#[test]
fn installing_a_package_pulls_in_its_dependency_inside_the_root_only() {
    let _t = Timed::start("whole test: new + install with a dependency");
    let before = machine_stamps();
    let dnf = {
        let _t = Timed::start("DnfRoot::new (2 rpms)");
        DnfRoot::new(&[A, B])
    };
    assert!(dnf.installed().is_empty(), "{:?}", dnf.installed());
    assert_eq!(dnf.transactions(), 0, "makecache is no transaction");

    {
        let _t = Timed::start("dnf install -y stead-test-b (2 packages)");
        dnf.dnf(&["install", "-y", "stead-test-b"]);
    }

    assert_eq!(
        installed(&dnf),
        versions(&[("stead-test-a", "1.0-1"), ("stead-test-b", "1.0-1")])
    );
    assert_eq!(dnf.transactions(), 1, "{}", dnf.log());
    // dnf's own history agrees: one transaction, two packages.
    let history = dnf.dnf(&["history", "list"]);
    let ids: Vec<&str> = history
        .lines()
        .filter(|l| {
            l.split('|')
                .next()
                .is_some_and(|id| id.trim().parse::<u32>().is_ok())
        })
        .collect();
    assert_eq!(ids.len(), 1, "{history}");
    assert!(
        ids[0].contains("Install") && ids[0].trim_end().ends_with('2'),
        "{history}"
    );

    // The files landed under the root; rpm lists them.
    let root = dnf.root();
    assert_eq!(
        fs::read_to_string(root.join(B.payload_path())).unwrap(),
        "stead-test-b 1.0\n"
    );
    assert_eq!(
        dnf.rpm(&["-ql", "stead-test-a"]),
        "/usr/share/stead-test\n/usr/share/stead-test/stead-test-a\n"
    );

    // dnf's cache, history, logs and locks, and the rpm database, are the
    // root's.
    for inside in [
        "var/cache/dnf/stead-test.solv",
        "var/lib/dnf/history.sqlite",
        "var/log/dnf.log",
        "var/log/dnf.rpm.log",
        "var/lib/rpm/rpmdb.sqlite",
        "var/lib/rpm/.rpm.lock",
    ] {
        assert!(root.join(inside).exists(), "no {inside} in the root");
    }
    assert_eq!(
        machine_stamps(),
        before,
        "the machine's own rpm/dnf files changed"
    );
}

#[test]
fn dnf_reads_only_the_roots_configuration() {
    let dnf = DnfRoot::new(&[A]);
    let out = dnf.dnf(&["-v", "repolist", "--all"]);
    let root = dnf.root().to_str().unwrap();
    let repos: Vec<&str> = out.lines().filter(|l| l.starts_with("Repo-id")).collect();
    assert_eq!(repos, ["Repo-id            : stead-test"], "{out}");
    for line in [
        format!("cachedir: {root}/var/cache/dnf"),
        format!("Repo-filename      : {root}/etc/yum.repos.d/stead-test.repo"),
        format!(
            "Repo-baseurl       : file://{}",
            dnf.repo().to_str().unwrap()
        ),
    ] {
        assert!(out.lines().any(|l| l == line), "no {line:?} in\n{out}");
    }
    // No release-version warning, no plugins.
    let (code, _, stderr) = run(&dnf, "dnf", &[&root_arg(&dnf), "-q", "repolist"]);
    assert_eq!((code, stderr.as_str()), (0, ""));
    assert!(!dnf.log().contains("Loaded plugins"), "{}", dnf.log());
}

#[test]
fn rpm_query_prints_missing_packages_on_stdout_and_fails() {
    let dnf = DnfRoot::new(&[A]);
    dnf.dnf(&["install", "-y", "-q", "stead-test-a"]);
    let root = dnf.root().to_str().unwrap();

    let (code, stdout, stderr) = run(&dnf, "rpm", &["--root", root, "-q", "nope", "stead-test-a"]);
    assert_eq!(code, 1);
    assert_eq!(
        stdout,
        "package nope is not installed\nstead-test-a-1.0-1.noarch\n"
    );
    assert_eq!(stderr, "");

    // stead's query: the order of the arguments, one line each; the exit
    // code counts the missing ones.
    let (code, stdout, stderr) = run(
        &dnf,
        "rpm",
        &["--root", root, "-q", "--qf", QF, "stead-test-a", "nope"],
    );
    assert_eq!(
        (code, stdout.as_str(), stderr.as_str()),
        (
            1,
            "stead-test-a\t1.0-1\npackage nope is not installed\n",
            ""
        )
    );
    let (code, stdout, _) = run(&dnf, "rpm", &["--root", root, "-q", "--qf", QF, "x", "y"]);
    assert_eq!(
        (code, stdout.as_str()),
        (
            2,
            "package x is not installed\npackage y is not installed\n"
        )
    );
    let (code, stdout, _) = run(
        &dnf,
        "rpm",
        &["--root", root, "-q", "--qf", QF, "stead-test-a"],
    );
    assert_eq!((code, stdout.as_str()), (0, "stead-test-a\t1.0-1\n"));
}

#[test]
fn a_published_newer_version_is_an_upgrade_not_an_install() {
    let _t = Timed::start("publish 1.1, upgrade");
    let dnf = DnfRoot::new(&[A]);
    dnf.dnf(&["install", "-y", "stead-test-a"]);
    assert_eq!(installed(&dnf), versions(&[("stead-test-a", "1.0-1")]));

    {
        let _t = Timed::start("publish (1 rpm)");
        dnf.publish(&[A11]);
    }
    let candidates = dnf.dnf(&[
        "-q",
        "repoquery",
        "--latest-limit",
        "1",
        "--qf",
        "%{name}\t%{version}-%{release}",
        "stead-test-a",
    ]);
    assert_eq!(candidates, "stead-test-a\t1.1-1\n");

    // dnf's default best=False: `install` of an installed name is done.
    let out = dnf.dnf(&["install", "-y", "stead-test-a"]);
    assert!(
        out.contains("Package stead-test-a-1.0-1.noarch is already installed.")
            && out.contains("Nothing to do."),
        "{out}"
    );
    assert_eq!(installed(&dnf), versions(&[("stead-test-a", "1.0-1")]));
    assert_eq!(dnf.transactions(), 1, "{}", dnf.log());

    {
        let _t = Timed::start("dnf upgrade -y stead-test-a");
        dnf.dnf(&["upgrade", "-y", "stead-test-a"]);
    }
    assert_eq!(installed(&dnf), versions(&[("stead-test-a", "1.1-1")]));
    assert_eq!(
        fs::read_to_string(dnf.root().join(A.payload_path())).unwrap(),
        "stead-test-a 1.1\n"
    );
    assert_eq!(dnf.transactions(), 2, "{}", dnf.log());
}

#[test]
fn a_pinned_version_installs_upgrades_and_downgrades() {
    let dnf = DnfRoot::new(&[A, A11]);
    // name-version-release and name-version both select a version.
    dnf.dnf(&["install", "-y", "-q", "stead-test-a-1.0-1"]);
    assert_eq!(installed(&dnf), versions(&[("stead-test-a", "1.0-1")]));
    let out = dnf.dnf(&["install", "-y", "stead-test-a-1.1"]);
    assert!(out.contains("\nUpgrading:\n"), "{out}");
    assert_eq!(installed(&dnf), versions(&[("stead-test-a", "1.1-1")]));
    let out = dnf.dnf(&["install", "-y", "stead-test-a-1.0-1"]);
    assert!(out.contains("\nDowngrading:\n"), "{out}");
    assert_eq!(installed(&dnf), versions(&[("stead-test-a", "1.0-1")]));
    assert_eq!(dnf.transactions(), 3, "{}", dnf.log());

    // A version the repository does not have.
    let (code, stdout, stderr) = run(
        &dnf,
        "dnf",
        &[&root_arg(&dnf), "install", "-y", "stead-test-a-9.9"],
    );
    eprintln!("install stead-test-a-9.9: exit {code}\nstdout:\n{stdout}stderr:\n{stderr}");
    assert_eq!(code, 1);
    assert!(
        stdout.contains("No match for argument: stead-test-a-9.9\n"),
        "{stdout}"
    );
    assert_eq!(stderr, "Error: Unable to find a match: stead-test-a-9.9\n");
    assert_eq!(dnf.transactions(), 3);
}

#[test]
fn remove_takes_out_a_package_and_what_it_alone_pulled_in() {
    let dnf = DnfRoot::new(&[A, B]);
    dnf.dnf(&["install", "-y", "-q", "stead-test-b"]);
    // clean_requirements_on_remove (dnf's default): a came in for b only.
    {
        let _t = Timed::start("dnf remove -y stead-test-b (2 packages)");
        dnf.dnf(&["remove", "-y", "stead-test-b"]);
    }
    assert!(dnf.installed().is_empty(), "{:?}", dnf.installed());
    assert!(!dnf.root().join(A.payload_path()).exists());
    assert_eq!(dnf.transactions(), 2, "{}", dnf.log());

    // Asked for by name, a stays when b goes; removing a takes b with it.
    dnf.dnf(&["install", "-y", "-q", "stead-test-a"]);
    dnf.dnf(&["install", "-y", "-q", "stead-test-b"]);
    dnf.dnf(&["remove", "-y", "-q", "stead-test-b"]);
    assert_eq!(installed(&dnf), versions(&[("stead-test-a", "1.0-1")]));
    dnf.dnf(&["install", "-y", "-q", "stead-test-b"]);
    dnf.dnf(&["remove", "-y", "-q", "stead-test-a"]);
    assert!(dnf.installed().is_empty(), "{:?}", dnf.installed());
    assert_eq!(dnf.transactions(), 7, "{}", dnf.log());
}

#[test]
fn an_unknown_name_fails_the_whole_install() {
    let dnf = DnfRoot::new(&[A, B]);
    let (code, stdout, stderr) = run(
        &dnf,
        "dnf",
        &[&root_arg(&dnf), "-y", "install", "stead-test-a", "nope"],
    );
    eprintln!("install stead-test-a nope: exit {code}\nstdout:\n{stdout}stderr:\n{stderr}");
    assert_eq!(code, 1);
    assert!(
        stdout.ends_with("No match for argument: nope\n"),
        "{stdout}"
    );
    assert_eq!(stderr, "Error: Unable to find a match: nope\n");
    assert!(dnf.installed().is_empty(), "strict: nothing is installed");
    assert_eq!(dnf.transactions(), 0);

    // Candidates for `ensure = latest`: one line per known name, unknown
    // names left out, exit 0.
    let (code, stdout, stderr) = run(
        &dnf,
        "dnf",
        &[
            &root_arg(&dnf),
            "-q",
            "repoquery",
            "--latest-limit",
            "1",
            "--qf",
            "%{name}\t%{version}-%{release}",
            "stead-test-b",
            "nope",
            "stead-test-a",
        ],
    );
    assert_eq!(
        (code, stdout.as_str(), stderr.as_str()),
        (0, "stead-test-a\t1.0-1\nstead-test-b\t1.0-1\n", "")
    );

    dnf.dnf(&["install", "-y", "-q", "stead-test-a"]);
    let (code, stdout, stderr) = run(&dnf, "dnf", &[&root_arg(&dnf), "-q", "list", "--available"]);
    eprintln!("list --available: exit {code}\nstdout:\n{stdout}stderr:\n{stderr}");
    assert_eq!(code, 0);
    let lines: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines,
        [
            vec!["Available", "Packages"],
            vec!["stead-test-b.noarch", "1.0-1", "stead-test"],
        ],
        "{stdout}"
    );
}

#[test]
fn a_process_with_another_home_shares_the_database_once_linked() {
    let dnf = DnfRoot::new(&[A]);
    let homes = tempfile::tempdir().unwrap();
    let (linked, unlinked) = (homes.path().join("linked"), homes.path().join("unlinked"));
    fs::create_dir_all(&linked).unwrap();
    fs::create_dir_all(&unlinked).unwrap();
    dnf.link_home(&linked);
    dnf.link_home(&linked); // Twice is fine.
    let root = dnf.root().to_str().unwrap().to_string();

    // Stead's way: only the installroot, its own HOME.
    let out = dnf.run_with_home(
        &linked,
        "dnf",
        &[
            &format!("--installroot={root}"),
            "-y",
            "-q",
            "install",
            "stead-test-a",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(installed(&dnf), versions(&[("stead-test-a", "1.0-1")]));
    assert!(dnf.stray_rpmdbs().is_empty());
    let out = dnf.run_with_home(
        &linked,
        "rpm",
        &["--root", &root, "-q", "--qf", QF, "stead-test-a"],
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "stead-test-a\t1.0-1\n"
    );

    // Not linked: rpm makes and reads an empty database of its own...
    let out = dnf.run_with_home(&unlinked, "rpm", &["--root", &root, "-qa"]);
    assert!(out.status.success() && out.stdout.is_empty(), "{out:?}");
    let stray = dnf.root().join(unlinked.strip_prefix("/").unwrap());
    assert_eq!(dnf.stray_rpmdbs(), [stray.join(".rpmdb/rpmdb.sqlite")]);
    // ... which the fixture refuses to ignore.
    let refused = catch_unwind(AssertUnwindSafe(|| dnf.installed()));
    let message = *refused.unwrap_err().downcast::<String>().unwrap();
    assert!(message.contains("DnfRoot::link_home"), "{message}");
}

#[test]
fn an_empty_repository_works_and_env_names_only_the_installroot() {
    let dnf = DnfRoot::try_new(&[]).unwrap();
    assert!(dnf.installed().is_empty());
    assert_eq!(
        dnf.env(),
        [(
            "STEAD_DNF_INSTALLROOT",
            dnf.root().to_str().unwrap().to_string()
        )]
    );
}
