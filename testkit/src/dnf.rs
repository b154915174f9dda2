//! The machine's real dnf and rpm in a throw-away installroot, for
//! end-to-end tests of packages with `manager = "dnf"`: tiny noarch `.rpm`s
//! (no scriptlets) built with `rpmbuild`, served from a `file://`
//! repository indexed with `createrepo_c`, installed by
//! `dnf --installroot=<tmp>/root`.
//!
//! Stead is pointed at the root by one variable, `STEAD_DNF_INSTALLROOT`
//! ([`DnfRoot::env`]), and then runs plain `dnf --installroot=<root> -y ...`
//! and `rpm --root <root> -q ...`; everything else comes from files inside
//! the root, which dnf 4 searches before the machine's when given
//! `--installroot`:
//!
//! - `<root>/etc/dnf/dnf.conf` (instead of the machine's): no plugins, no
//!   gpg check, no weak dependencies, no protected packages, no log
//!   rotation (rotating takes a lock in the machine's `/var/log`), and
//!   `reposdir=/etc/yum.repos.d`, which dnf reads inside the root because
//!   the directory exists there (were it missing, dnf would read the
//!   machine's repositories);
//! - `<root>/etc/yum.repos.d/stead-test.repo`: the only repository;
//! - `<root>/etc/dnf/vars/releasever` (`1`): without it dnf warns that it
//!   cannot detect the release version (`releasever=` in `dnf.conf` does
//!   not help);
//! - dnf puts its cache, logs (`<root>/var/log/dnf.log`, `dnf.rpm.log`,
//!   ...), history (`<root>/var/lib/dnf/history.sqlite`) and locks
//!   (`*_lock.pid`) under the root by itself.
//!
//! The rpm database: Debian's rpm sets `%_dbpath` to `~/.rpmdb`, so rpm
//! and dnf (through librpm) open `<root>$HOME/.rpmdb`: neither
//! `/var/lib/rpm` nor `/usr/lib/sysimage/rpm`, and a different database
//! for every HOME. The fixture keeps the one database in
//! `<root>/var/lib/rpm` (made with `rpm --initdb`) and links
//! `<root><home>/.rpmdb` to it (a relative link, valid both from outside
//! and inside rpm's chroot) for its own temp HOME and for every HOME given
//! to [`DnfRoot::link_home`]: a test runs stead with its sandbox's HOME,
//! so it must link that HOME first. [`DnfRoot::installed`] panics if it
//! finds a database elsewhere in the root (a process ran rpm or dnf with a
//! HOME that was not linked).
//!
//! Nothing outside the temp dir is written (as long as the repository's
//! metadata is not expired: libdnf checks expired metadata in a fresh
//! `/tmp/tmpdir.XXXXXX`, removed afterwards, whatever TMPDIR says, so
//! [`DnfRoot::publish`] rebuilds the cache instead of expiring it). dnf
//! still *reads* a few of the machine's files that no option inside the
//! root redirects: its aliases (`/etc/dnf/aliases.d`), the default
//! protected packages list (`/etc/dnf/protected.d`, then overridden to
//! empty), libdnf's global `/etc/dnf/dnf.conf`, `/etc/os-release` (user
//! agent) and rpm's macros; never the machine's repositories. No network:
//! the only repository is a local directory.
//!
//! Every command the fixture runs gets a temp HOME and TMPDIR (rpmbuild's
//! `%_tmppath` too), `LC_ALL=C`, no stdin, a deadline, and its own process
//! group, which is killed once the command is over: no process outlives
//! it.
//!
//! Must run as root: rpm chroots into the root, and dnf refuses to change
//! packages as a regular user (and would keep its cache in the machine's
//! `/var/tmp`). Needs `dnf` (Debian package `dnf`), `rpm` and `rpmbuild`
//! (`rpm`), `createrepo_c` (`createrepo-c`); [`DnfRoot::new`] panics
//! naming the missing Debian package rather than letting a test skip.

use crate::child::{Stamp, require_tools, run_bounded, stamp, stdout_of_success};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The tools the fixture runs, each with the Debian package that ships it.
const TOOLS: &[(&str, &str)] = &[
    ("dnf", "dnf"),
    ("rpm", "rpm"),
    ("rpmbuild", "rpm"),
    ("createrepo_c", "createrepo-c"),
];

/// Where the root's one rpm database lives, relative to the root.
const RPMDB: &str = "var/lib/rpm";

/// A tiny package: noarch, release `1`, no scriptlets, no automatic
/// dependencies. It ships [`Rpm::payload_path`] (content
/// `"<name> <version>\n"`, so an upgrade changes it) and owns its directory
/// `/usr/share/stead-test`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rpm {
    pub name: &'static str,
    pub version: &'static str,
    /// The `Requires:` field, e.g. `"stead-test-a"` or
    /// `"stead-test-a >= 1.1"`.
    pub requires: Option<&'static str>,
}

impl Rpm {
    pub const fn new(name: &'static str, version: &'static str) -> Rpm {
        Rpm {
            name,
            version,
            requires: None,
        }
    }

    pub const fn with_requires(self, requires: &'static str) -> Rpm {
        Rpm {
            requires: Some(requires),
            ..self
        }
    }

    /// `usr/share/stead-test/<name>`, relative to the root.
    pub fn payload_path(&self) -> String {
        format!("usr/share/stead-test/{}", self.name)
    }

    /// `<name>-<version>-1.noarch.rpm`.
    pub fn file_name(&self) -> String {
        format!("{}-{}-1.noarch.rpm", self.name, self.version)
    }

    fn spec(&self) -> String {
        // A version has no `-` (it separates version and release).
        for (what, v, bad) in [
            ("name", self.name, "%{}"),
            ("version", self.version, "-%{}"),
        ] {
            assert!(
                !v.is_empty() && !v.contains(|c: char| c.is_whitespace() || bad.contains(c)),
                "unusable rpm {what} {v:?}"
            );
        }
        let requires = self
            .requires
            .map(|r| {
                assert!(!r.contains(['\n', '%']), "unusable Requires {r:?}");
                format!("Requires: {r}\n")
            })
            .unwrap_or_default();
        format!(
            "Name: {name}\n\
             Version: {version}\n\
             Release: 1\n\
             Summary: stead test package {name}\n\
             License: MIT\n\
             BuildArch: noarch\n\
             AutoReqProv: no\n\
             Source0: payload\n\
             {requires}\n\
             %description\n\
             stead test package {name}\n\n\
             %install\n\
             install -D -m 0644 %{{SOURCE0}} %{{buildroot}}/usr/share/stead-test/{name}\n\n\
             %files\n\
             %dir /usr/share/stead-test\n\
             /usr/share/stead-test/{name}\n",
            name = self.name,
            version = self.version,
        )
    }
}

/// A throw-away dnf installroot with its own repository: `<tmp>/root` (the
/// installroot), `<tmp>/repo` (the repository, rpms in `noarch/`),
/// `<tmp>/build` (specs and rpmbuild's tree), `<tmp>/home` (HOME),
/// `<tmp>/tmp` (TMPDIR).
pub struct DnfRoot {
    dir: tempfile::TempDir,
    root: PathBuf,
    repo: PathBuf,
}

impl DnfRoot {
    /// [`DnfRoot::try_new`], panicking with its message.
    pub fn new(rpms: &[Rpm]) -> DnfRoot {
        DnfRoot::try_new(rpms).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Builds `rpms` into a `file://` repository, lays out the root (its
    /// dnf configuration, an empty rpm database) and fills dnf's metadata
    /// cache (`dnf makecache`). Err names the Debian package to install
    /// when a tool is missing, or says that root is needed.
    pub fn try_new(rpms: &[Rpm]) -> Result<DnfRoot, String> {
        require_tools("dnf", TOOLS)?;
        if !nix::unistd::geteuid().is_root() {
            return Err(
                "the dnf test fixture must run as root: rpm chroots into the \
                        installroot, and dnf does not change packages for a regular user"
                    .into(),
            );
        }
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let root = dir.path().join("root");
        let repo = dir.path().join("repo");
        let text = path_text(&repo);
        for sub in ["etc/dnf/vars", "etc/yum.repos.d", RPMDB] {
            fs::create_dir_all(root.join(sub)).unwrap();
        }
        for sub in ["repo/noarch", "build", "home", "tmp"] {
            fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        fs::write(
            root.join("etc/dnf/dnf.conf"),
            "# The stead test fixture's isolated root (testkit/src/dnf.rs): dnf reads\n\
             # this file instead of the machine's /etc/dnf/dnf.conf.\n\
             [main]\n\
             # Read inside the root because it exists there.\n\
             reposdir=/etc/yum.repos.d\n\
             # dnf puts these under the root.\n\
             cachedir=/var/cache/dnf\n\
             logdir=/var/log\n\
             persistdir=/var/lib/dnf\n\
             gpgcheck=False\n\
             plugins=False\n\
             install_weak_deps=False\n\
             protected_packages=\n\
             # No rotation: rotating locks the machine's /var/log/log_lock.pid.\n\
             log_size=0\n\
             # \"RPM transaction start.\" in dnf.log counts the transactions.\n\
             logfilelevel=10\n",
        )
        .unwrap();
        fs::write(root.join("etc/dnf/vars/releasever"), "1\n").unwrap();
        fs::write(
            root.join("etc/yum.repos.d/stead-test.repo"),
            format!(
                "[stead-test]\n\
                 name=stead test repository\n\
                 baseurl=file://{text}\n\
                 enabled=1\n\
                 gpgcheck=False\n"
            ),
        )
        .unwrap();
        let dnf = DnfRoot { dir, root, repo };
        dnf.link_home(&dnf.dir.path().join("home"));
        dnf.rpm(&["--dbpath", &format!("/{RPMDB}"), "--initdb"]);
        dnf.build(rpms);
        dnf.ok("createrepo_c", &["-q", "--no-database", &text]);
        dnf.dnf(&["-q", "makecache"]);
        Ok(dnf)
    }

    /// Builds `rpms` into the repository (beside what is there: publishing
    /// `1.1` of a package keeps `1.0` available), re-indexes it and
    /// rebuilds dnf's metadata cache (`dnf clean metadata`, `dnf
    /// makecache`), so the next `dnf install` or `dnf upgrade` sees them.
    pub fn publish(&self, rpms: &[Rpm]) {
        self.build(rpms);
        self.ok(
            "createrepo_c",
            &["-q", "--no-database", &path_text(&self.repo)],
        );
        self.dnf(&["-q", "clean", "metadata"]);
        self.dnf(&["-q", "makecache"]);
    }

    /// One `rpmbuild -bb` for all of `rpms`, into `<repo>/noarch`.
    fn build(&self, rpms: &[Rpm]) {
        if rpms.is_empty() {
            return;
        }
        let build = self.dir.path().join("build");
        let mut specs = Vec::new();
        for rpm in rpms {
            let tree = build.join(format!("{}-{}", rpm.name, rpm.version));
            let _ = fs::remove_dir_all(&tree);
            fs::create_dir_all(&tree).unwrap();
            fs::write(
                tree.join("payload"),
                format!("{} {}\n", rpm.name, rpm.version),
            )
            .unwrap();
            let spec = tree.join(format!("{}.spec", rpm.name));
            fs::write(&spec, rpm.spec()).unwrap();
            specs.push(path_text(&spec));
        }
        let b = path_text(&build);
        let defines = [
            format!("_topdir {b}/top"),
            // Expanded per spec: each package's payload is in its own tree.
            format!("_sourcedir {b}/%{{name}}-%{{version}}"),
            format!("_rpmdir {}", path_text(&self.repo)),
            // Otherwise /var/tmp.
            format!("_tmppath {}", path_text(&self.dir.path().join("tmp"))),
            "__os_install_post %{nil}".to_string(),
        ];
        let mut args = vec!["-bb", "--quiet"];
        for d in &defines {
            args.extend(["--define", d.as_str()]);
        }
        args.extend(specs.iter().map(String::as_str));
        self.ok("rpmbuild", &args);
        for rpm in rpms {
            let built = self.repo.join("noarch").join(rpm.file_name());
            assert!(built.is_file(), "rpmbuild made no {}", built.display());
        }
    }

    /// What stead needs to use this root: `STEAD_DNF_INSTALLROOT`. (Its
    /// HOME must be given to [`DnfRoot::link_home`] as well.)
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![("STEAD_DNF_INSTALLROOT", path_text(&self.root))]
    }

    /// The installroot: packages' files land under it.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The repository (`baseurl=file://<repo>`).
    pub fn repo(&self) -> &Path {
        &self.repo
    }

    /// Makes rpm and dnf run with HOME `home` use the root's one database:
    /// links `<root><home>/.rpmdb` to it (Debian's rpm keeps its database
    /// in `~/.rpmdb`). Call it with the HOME stead runs with before
    /// running stead. `home` must be absolute, without `..`.
    pub fn link_home(&self, home: &Path) {
        let parts: Vec<_> = home
            .components()
            .filter(|c| !matches!(c, Component::RootDir | Component::CurDir))
            .collect();
        assert!(
            home.is_absolute() && parts.iter().all(|c| matches!(c, Component::Normal(_))),
            "link_home needs an absolute HOME without `..`, not {}",
            home.display()
        );
        let dir = parts
            .iter()
            .fold(self.root.clone(), |p, c| p.join(c.as_os_str()));
        let link = dir.join(".rpmdb");
        let target: PathBuf = std::iter::repeat_n(Component::ParentDir, parts.len())
            .map(|c| c.as_os_str())
            .chain([std::ffi::OsStr::new(RPMDB)])
            .collect();
        match fs::read_link(&link) {
            Ok(t) if t == target => return,
            Ok(t) => panic!(
                "{} links to {}, not {}",
                link.display(),
                t.display(),
                target.display()
            ),
            Err(_) if fs::symlink_metadata(&link).is_ok() => panic!(
                "{} is already a database of its own: rpm or dnf ran with HOME={} \
                 before link_home",
                link.display(),
                home.display()
            ),
            Err(_) => {}
        }
        fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
    }

    /// Runs `program args` with a temp HOME (linked, see
    /// [`DnfRoot::link_home`]) and TMPDIR, `LC_ALL=C` and no stdin, in its
    /// own process group (killed when it is over); panics past the
    /// deadline. Success is not checked.
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        self.run_with_home(&self.dir.path().join("home"), program, args)
    }

    /// [`DnfRoot::run`] with HOME `home` (as stead would run it).
    pub fn run_with_home(&self, home: &Path, program: &str, args: &[&str]) -> Output {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env("HOME", home)
            .env("TMPDIR", self.dir.path().join("tmp"))
            .env("LC_ALL", "C")
            .env_remove("STEAD_DNF_INSTALLROOT")
            .stdin(Stdio::null())
            .current_dir(self.dir.path());
        run_bounded(cmd, &format!("{program} {args:?}"), None)
    }

    /// [`DnfRoot::run`], expecting success; returns stdout.
    fn ok(&self, program: &str, args: &[&str]) -> String {
        stdout_of_success(self.run(program, args), &format!("{program} {args:?}"))
    }

    /// `dnf --installroot=<root> ARGS` (e.g. `install -y NAME`), as the
    /// user would run it; panics with its output on failure, returns
    /// stdout.
    pub fn dnf(&self, args: &[&str]) -> String {
        let root = format!("--installroot={}", path_text(&self.root));
        let all: Vec<&str> = [root.as_str()]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        self.ok("dnf", &all)
    }

    /// `rpm --root <root> ARGS`; panics with its output on failure, returns
    /// stdout.
    pub fn rpm(&self, args: &[&str]) -> String {
        let root = path_text(&self.root);
        let all: Vec<&str> = ["--root", root.as_str()]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        self.ok("rpm", &all)
    }

    /// Every installed package: name -> `version-release` (e.g. `1.0-1`).
    /// Panics if the root holds an rpm database other than its own (see
    /// [`DnfRoot::link_home`]).
    pub fn installed(&self) -> BTreeMap<String, String> {
        let strays = self.stray_rpmdbs();
        assert!(
            strays.is_empty(),
            "rpm databases besides <root>/{RPMDB}: {strays:?}; rpm or dnf ran on this root \
             with a HOME not given to DnfRoot::link_home"
        );
        let out = self.rpm(&["-qa", "--qf", "%{NAME}\t%{VERSION}-%{RELEASE}\n"]);
        out.lines()
            .map(|line| {
                let Some((name, version)) = line.split_once('\t') else {
                    panic!("unexpected rpm -qa line {line:?}");
                };
                (name.to_string(), version.to_string())
            })
            .collect()
    }

    /// `rpmdb.sqlite` files under the root outside `<root>/var/lib/rpm`:
    /// databases that rpm or dnf made for a HOME not given to
    /// [`DnfRoot::link_home`] (empty: all is well).
    pub fn stray_rpmdbs(&self) -> Vec<PathBuf> {
        let own = self.root.join(RPMDB);
        let mut found = Vec::new();
        let mut dirs = vec![self.root.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in fs::read_dir(&dir).unwrap() {
                let entry = entry.unwrap();
                let kind = entry.file_type().unwrap();
                if kind.is_dir() {
                    dirs.push(entry.path());
                } else if entry.file_name() == "rpmdb.sqlite" && dir != own {
                    found.push(entry.path());
                }
            }
        }
        found
    }

    /// How many rpm transactions dnf has run in the root (each `dnf
    /// install`, `upgrade`, `remove`... that changed something counts one,
    /// however many packages it changed; `makecache` and failed resolutions
    /// count none): the `RPM transaction start.` lines of
    /// `<root>/var/log/dnf.log`.
    pub fn transactions(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.ends_with(" DDEBUG RPM transaction start."))
            .count()
    }

    /// The root's `var/log/dnf.log` ("" before any dnf command).
    pub fn log(&self) -> String {
        fs::read_to_string(self.root.join("var/log/dnf.log")).unwrap_or_default()
    }
}

/// The [`Stamp`]s of the machine's own rpm and dnf state, configuration
/// and logs (directories too: adding a file changes their mtime), to
/// compare before and after a test. `~/.rpmdb` is the machine's default
/// rpm database on Debian.
pub fn machine_stamps() -> Vec<(String, Stamp)> {
    let mut paths: Vec<String> = [
        "/var/lib/rpm",
        "/var/lib/dnf",
        "/var/cache/dnf",
        "/var/log/dnf.log",
        "/var/log/dnf.rpm.log",
        "/var/log/dnf.librepo.log",
        "/var/log/hawkey.log",
        "/var/log/log_lock.pid",
        "/etc/dnf",
        "/etc/dnf/dnf.conf",
        "/etc/dnf/vars",
        "/etc/yum.repos.d",
        "/etc/yum/repos.d",
        "/etc/distro.repos.d",
        "/usr/lib/sysimage/rpm",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    if let Some(home) = std::env::var_os("HOME") {
        let db = Path::new(&home).join(".rpmdb");
        paths.push(path_text(&db));
        paths.push(path_text(&db.join("rpmdb.sqlite")));
    }
    paths
        .into_iter()
        .map(|p| {
            let s = stamp(&p);
            (p, s)
        })
        .collect()
}

/// A temp path as text, for configuration files and arguments.
fn path_text(p: &Path) -> String {
    let s = p.to_str().expect("UTF-8 temp path").to_string();
    assert!(
        !s.contains(['"', '\n', ' ', '%']),
        "unusable temp path {s:?}"
    );
    s
}
