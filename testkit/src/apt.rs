//! The machine's real apt and dpkg in a throw-away root, for end-to-end
//! tests of packages: tiny `.deb`s (no maintainer scripts) built with
//! `dpkg-deb`, served from a flat `file:` repository indexed with
//! `apt-ftparchive`, installed by `apt-get` into `<tmp>/root`.
//!
//! Nothing outside the temp dir is written: apt reads only `<tmp>/apt.conf`
//! (through `APT_CONFIG`) and the empty `<root>/etc/apt/apt.conf.d`, so the
//! machine's hooks (`DPkg::Post-Invoke`, `DPkg::Pre-Install-Pkgs`, ...) are
//! never read; its lists, caches, locks (`<root>/var/lib/dpkg/lock*`,
//! `<root>/var/lib/apt/lists/lock`, `<root>/var/cache/apt/archives/lock`) and
//! logs (`<root>/var/log/apt/history.log`) are under the root, and dpkg runs
//! with `--root`, `--admindir` and `--log` inside it. No network: the only
//! source is the `file:` repository.
//!
//! Every command the fixture runs gets a temp HOME (dpkg reads
//! `~/.dpkg.cfg`) and TMPDIR, `LC_ALL=C`, no stdin, a deadline, and its own
//! process group, which is killed once the command is over: no process
//! outlives it.
//!
//! Needs `dpkg`, `dpkg-deb`, `dpkg-query`, `apt-get`, `apt-config` and
//! `apt-ftparchive` (Debian package `apt-utils`); [`AptRoot::new`] panics
//! naming the missing Debian package rather than letting a test skip.

use crate::child::{Stamp, require_tools, run_bounded, stamp, stdout_of_success};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The tools the fixture runs, each with the Debian package that ships it.
const TOOLS: &[(&str, &str)] = &[
    ("dpkg", "dpkg"),
    ("dpkg-deb", "dpkg"),
    ("dpkg-query", "dpkg"),
    ("apt-get", "apt"),
    ("apt-config", "apt"),
    ("apt-ftparchive", "apt-utils"),
];

/// A tiny package: `Architecture: all`, no maintainer scripts. It ships
/// [`Deb::payload_path`] (content `"<name> <version>\n"`, so an upgrade
/// changes it) and [`Deb::etc_path`] (content `"# <name>\n"` in every
/// version, so an upgrade never asks about a changed conffile).
#[derive(Clone, Copy, Debug, Default)]
pub struct Deb {
    pub name: &'static str,
    pub version: &'static str,
    /// The `Depends:` field, e.g. `"stead-test-a"` or `"stead-test-a (>= 1.1)"`.
    pub depends: Option<&'static str>,
    /// Declares [`Deb::etc_path`] a conffile, so `dpkg --remove` leaves the
    /// package in `rc` state (config-files) instead of gone.
    pub conffile: bool,
}

impl Deb {
    pub const fn new(name: &'static str, version: &'static str) -> Deb {
        Deb {
            name,
            version,
            depends: None,
            conffile: false,
        }
    }

    pub const fn with_depends(self, depends: &'static str) -> Deb {
        Deb {
            depends: Some(depends),
            ..self
        }
    }

    pub const fn with_conffile(self) -> Deb {
        Deb {
            conffile: true,
            ..self
        }
    }

    /// `usr/share/stead-test/<name>`, relative to the root.
    pub fn payload_path(&self) -> String {
        format!("usr/share/stead-test/{}", self.name)
    }

    /// `etc/stead-test/<name>.conf`, relative to the root: a file shipped
    /// under `etc/` (a conffile only with [`Deb::conffile`]).
    pub fn etc_path(&self) -> String {
        format!("etc/stead-test/{}.conf", self.name)
    }

    fn file_name(&self) -> String {
        format!("{}_{}_all.deb", self.name, self.version)
    }

    fn control(&self) -> String {
        let mut c = format!(
            "Package: {}\nVersion: {}\nArchitecture: all\n\
             Maintainer: stead tests <test@stead.invalid>\n",
            self.name, self.version
        );
        if let Some(d) = self.depends {
            c.push_str(&format!("Depends: {d}\n"));
        }
        c.push_str(&format!("Description: stead test package {}\n", self.name));
        c
    }
}

/// A throw-away apt/dpkg root with its own flat repository:
/// `<tmp>/root` (the root), `<tmp>/repo` (the repository), `<tmp>/apt.conf`
/// (`APT_CONFIG`), `<tmp>/build` (package trees), `<tmp>/home` (HOME),
/// `<tmp>/tmp` (TMPDIR).
pub struct AptRoot {
    dir: tempfile::TempDir,
    root: PathBuf,
    repo: PathBuf,
}

impl AptRoot {
    /// [`AptRoot::try_new`], panicking with its message.
    pub fn new(debs: &[Deb]) -> AptRoot {
        AptRoot::try_new(debs).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Builds `debs` into a flat `file:` repository, lays out an empty root
    /// (an empty dpkg database) and runs `apt-get update` in it. Err names
    /// the Debian package to install when a tool is missing.
    pub fn try_new(debs: &[Deb]) -> Result<AptRoot, String> {
        let found = require_tools("apt", TOOLS)?;
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let root = dir.path().join("root");
        let repo = dir.path().join("repo");
        let text = |p: &Path| {
            let s = p.to_str().expect("UTF-8 temp path").to_string();
            assert!(!s.contains(['"', '\n', ' ']), "unusable temp path {s:?}");
            s
        };
        let (r, d) = (text(&root), text(&found["dpkg"]));
        for sub in [
            "etc/apt/apt.conf.d",
            "etc/apt/sources.list.d",
            "etc/apt/preferences.d",
            "etc/apt/trusted.gpg.d",
            "var/lib/dpkg/info",
            "var/lib/dpkg/updates",
            "var/lib/dpkg/triggers",
            "var/lib/apt/lists/partial",
            "var/cache/apt/archives/partial",
            "var/log/apt",
        ] {
            fs::create_dir_all(root.join(sub)).unwrap();
        }
        for sub in ["repo", "build", "home", "tmp"] {
            fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
        fs::write(
            root.join("etc/apt/sources.list"),
            format!("deb [trusted=yes] file:{} ./\n", text(&repo)),
        )
        .unwrap();
        // Outside <root>/etc/apt: apt reads APT_CONFIG first and then
        // Dir::Etc::main (<root>/etc/apt/apt.conf), so a config there would
        // be read twice and its lists (DPkg::Options) doubled.
        fs::write(
            dir.path().join("apt.conf"),
            format!(
                "// The stead test fixture's isolated root (cli/tests/common/apt.rs).\n\
                 Dir \"{r}/\";\n\
                 Dir::State::status \"{r}/var/lib/dpkg/status\";\n\
                 Dir::Bin::dpkg \"{d}\";\n\
                 // The file method reads the repository in a 0700 temp dir.\n\
                 APT::Sandbox::User \"root\";\n\
                 DPkg::Options {{ \"--root={r}\"; \"--admindir={r}/var/lib/dpkg\"; \
                 \"--log={r}/var/log/dpkg.log\"; \"--force-not-root\"; \"--force-unsafe-io\"; }};\n"
            ),
        )
        .unwrap();
        let apt = AptRoot { dir, root, repo };
        apt.publish(debs);
        Ok(apt)
    }

    /// Builds `debs` into the repository (beside what is there: publishing
    /// `1.1` of a package keeps `1.0` available), re-indexes it and runs
    /// `apt-get update`.
    pub fn publish(&self, debs: &[Deb]) {
        for deb in debs {
            self.build(deb);
        }
        let packages = self.ok("apt-ftparchive", &["packages", "."], Some(&self.repo));
        fs::write(self.repo.join("Packages"), packages).unwrap();
        let _ = fs::remove_file(self.repo.join("Release"));
        let release = self.ok("apt-ftparchive", &["release", "."], Some(&self.repo));
        fs::write(self.repo.join("Release"), release).unwrap();
        self.apt_get(&["-q", "update"]);
    }

    fn build(&self, deb: &Deb) {
        let tree = self
            .dir
            .path()
            .join("build")
            .join(format!("{}_{}", deb.name, deb.version));
        let _ = fs::remove_dir_all(&tree);
        let file = |rel: &str, content: &str| {
            let p = tree.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, content).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        };
        file("DEBIAN/control", &deb.control());
        if deb.conffile {
            file("DEBIAN/conffiles", &format!("/{}\n", deb.etc_path()));
        }
        file(
            &deb.payload_path(),
            &format!("{} {}\n", deb.name, deb.version),
        );
        file(&deb.etc_path(), &format!("# {}\n", deb.name));
        // dpkg-deb wants 0755..0775 directories, whatever the umask.
        for d in [
            "",
            "DEBIAN",
            "usr",
            "usr/share",
            "usr/share/stead-test",
            "etc",
            "etc/stead-test",
        ] {
            fs::set_permissions(tree.join(d), fs::Permissions::from_mode(0o755)).unwrap();
        }
        let out = self.repo.join(deb.file_name());
        let (tree, out) = (tree.to_str().unwrap(), out.to_str().unwrap());
        self.ok(
            "dpkg-deb",
            &["--root-owner-group", "-Zgzip", "--build", tree, out],
            None,
        );
    }

    /// What a process needs to use this root: `APT_CONFIG`, `DPKG_ADMINDIR`
    /// (dpkg-query), `DPKG_ROOT` (a bare `dpkg` works on the root, though it
    /// still logs to the machine's `/var/log/dpkg.log` unless given
    /// `--log`), `DEBIAN_FRONTEND=noninteractive`.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let root = self.root.to_str().unwrap();
        vec![
            (
                "APT_CONFIG",
                self.dir.path().join("apt.conf").to_str().unwrap().into(),
            ),
            ("DPKG_ADMINDIR", format!("{root}/var/lib/dpkg")),
            ("DPKG_ROOT", root.into()),
            ("DEBIAN_FRONTEND", "noninteractive".into()),
        ]
    }

    /// The isolated root: packages' files land under it.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The flat repository (`deb [trusted=yes] file:<repo> ./`).
    pub fn repo(&self) -> &Path {
        &self.repo
    }

    /// Runs `program args` with this root's [`AptRoot::env`], a temp HOME
    /// and TMPDIR, `LC_ALL=C` and no stdin, in its own process group (killed
    /// when it is over); panics past the deadline. Success is not checked.
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        self.run_in(program, args, None)
    }

    fn run_in(&self, program: &str, args: &[&str], dir: Option<&Path>) -> Output {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .envs(self.env())
            .env("HOME", self.dir.path().join("home"))
            .env("TMPDIR", self.dir.path().join("tmp"))
            .env("LC_ALL", "C")
            .stdin(Stdio::null());
        if let Some(dir) = dir {
            cmd.current_dir(dir);
        }
        run_bounded(cmd, &format!("{program} {args:?}"), None)
    }

    /// [`AptRoot::run`], expecting success; returns stdout.
    fn ok(&self, program: &str, args: &[&str], dir: Option<&Path>) -> String {
        stdout_of_success(
            self.run_in(program, args, dir),
            &format!("{program} {args:?}"),
        )
    }

    /// `apt-get ARGS` on this root, as the user would run it (before a
    /// test, say); panics with its output on failure, returns stdout.
    pub fn apt_get(&self, args: &[&str]) -> String {
        self.ok("apt-get", args, None)
    }

    /// `dpkg ARGS` on this root (with the same `--root`, `--admindir` and
    /// `--log` as apt's dpkg); panics with its output on failure, returns
    /// stdout.
    pub fn dpkg(&self, args: &[&str]) -> String {
        let root = self.root.to_str().unwrap();
        let (r, a, l) = (
            format!("--root={root}"),
            format!("--admindir={root}/var/lib/dpkg"),
            format!("--log={root}/var/log/dpkg.log"),
        );
        let mut all = vec![
            r.as_str(),
            a.as_str(),
            l.as_str(),
            "--force-not-root",
            "--force-unsafe-io",
        ];
        all.extend_from_slice(args);
        self.ok("dpkg", &all, None)
    }

    /// `dpkg --remove NAME` (not purge): a package with a conffile
    /// ([`Deb::with_conffile`]) is left in `rc` state. Not an apt
    /// transaction: [`AptRoot::transactions`] does not count it.
    pub fn remove_keep_config(&self, name: &str) {
        self.dpkg(&["--remove", name]);
    }

    /// Every package dpkg knows (purged ones aside): name -> (version,
    /// status abbreviation such as `ii` or `rc`).
    pub fn installed(&self) -> BTreeMap<String, (String, String)> {
        let out = self.ok(
            "dpkg-query",
            &["-W", "-f=${Package}\t${Version}\t${db:Status-Abbrev}\n"],
            None,
        );
        out.lines()
            .map(|line| {
                let mut f = line.split('\t');
                let (Some(name), Some(version), Some(status), None) =
                    (f.next(), f.next(), f.next(), f.next())
                else {
                    panic!("unexpected dpkg-query line {line:?}");
                };
                (
                    name.to_string(),
                    (version.to_string(), status.trim_end().to_string()),
                )
            })
            .collect()
    }

    /// How many transactions apt has logged in the root's
    /// `var/log/apt/history.log` (`apt-get update` logs none).
    pub fn transactions(&self) -> usize {
        self.history()
            .lines()
            .filter(|l| l.starts_with("Start-Date:"))
            .count()
    }

    /// The root's `var/log/apt/history.log` ("" before any transaction).
    pub fn history(&self) -> String {
        fs::read_to_string(self.root.join("var/log/apt/history.log")).unwrap_or_default()
    }
}

/// The [`Stamp`]s of the machine's own dpkg and apt state and logs, to
/// compare before and after a test.
pub fn machine_stamps() -> Vec<(&'static str, Stamp)> {
    [
        "/var/lib/dpkg/status",
        "/var/lib/dpkg/lock",
        "/var/log/dpkg.log",
        "/var/log/apt/history.log",
        "/var/log/apt/term.log",
    ]
    .into_iter()
    .map(|p| (p, stamp(p)))
    .collect()
}
