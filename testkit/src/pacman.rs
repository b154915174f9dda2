//! The machine's real pacman in a throw-away root, for end-to-end tests of
//! packages with `manager = "pacman"`: tiny packages (no install scripts)
//! built with the real `makepkg`, served from a `file://` repository named
//! [`REPO`] indexed with `repo-add`, installed by `pacman` into `<tmp>/root`.
//!
//! Nothing outside the temp dir is written: pacman reads only
//! `<tmp>/pacman.conf` (given with `--config`; the machine's
//! `/etc/pacman.conf` is never read), which puts everything pacman writes or
//! reads under the root: `RootDir`, `DBPath` (with its lock `db.lck`),
//! `CacheDir`, `LogFile`, `GPGDir` and `HookDir` (without it pacman would read
//! the machine's `/etc/pacman.d/hooks`; its system hook dir is already under
//! `RootDir`), with `SigLevel = Never`. No network: the only repository is
//! the `file://` one. That one file is all stead needs: [`PacmanRoot::env`]
//! is `STEAD_PACMAN_CONFIG=<tmp>/pacman.conf`, and stead runs
//! `pacman --config <it> --noconfirm ...`.
//!
//! pacman keeps a copy of the repository's database under `DBPath`: the
//! fixture refreshes it (`pacman -Syy`) after every [`PacmanRoot::publish`],
//! so `pacman -S` (without `-y`) installs what was published last. A pacman
//! repository holds one version of each package: publishing `1.1` replaces
//! `1.0` in its database.
//!
//! pacman installs and removes only as root, and makepkg refuses to run as
//! root: the fixture must run as root ([`PacmanRoot::try_new`] says so
//! otherwise) and runs makepkg as `nobody` (`setpriv`) in `<tmp>/build`, owned
//! by `nobody`; so the temp dir is `0711` and the dirs above it (`TMPDIR`,
//! `/tmp`) must let `nobody` through. makepkg gets its own configuration
//! (`<tmp>/makepkg.conf`: no stripping, no compressing of man pages,
//! `.pkg.tar.gz`), `--nodeps`, and `PACMAN=true`: it never runs pacman, so it
//! does not read the machine's pacman database for `.BUILDINFO` either.
//!
//! Every command the fixture runs gets a temp HOME and TMPDIR, `LC_ALL=C`,
//! no stdin, a deadline, and its own process group, which is killed once the
//! command is over: no process outlives it. One leaves the group: makepkg's
//! fakeroot starts the `faked` daemon in a session of its own (and ends it,
//! with the SysV message queues and semaphore it made, on the way out); so a
//! makepkg runs with a marker in its environment, and whatever still has it
//! once makepkg is over (killed at the deadline, say) is ended too.
//!
//! Needs `pacman` and `repo-add` (Debian package `pacman-package-manager`),
//! `makepkg` (`makepkg`), `bsdtar` (`libarchive-tools`), `fakeroot`
//! (`fakeroot`) and `setpriv` (`util-linux`); [`PacmanRoot::new`] panics
//! naming the missing Debian package rather than letting a test skip.

use crate::child::{Stamp, require_tools, run_bounded, stamp, stdout_of_success};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use nix::unistd::{Gid, Group, Uid, User, chown};

/// The tools the fixture runs, each with the Debian package that ships it.
const TOOLS: &[(&str, &str)] = &[
    ("pacman", "pacman-package-manager"),
    ("repo-add", "pacman-package-manager"),
    ("makepkg", "makepkg"),
    ("bsdtar", "libarchive-tools"),
    ("fakeroot", "fakeroot"),
    ("setpriv", "util-linux"),
];

/// The name of the fixture's repository (`[steadtest]` in its pacman.conf).
/// Not `local`: pacman reserves that name for the database of installed
/// packages.
pub const REPO: &str = "steadtest";

/// The user makepkg runs as (it refuses to run as root), and the groups
/// tried for it (Debian's `nogroup`, elsewhere `nobody`).
const BUILD_USER: &str = "nobody";
const BUILD_GROUPS: &[&str] = &["nogroup", "nobody"];

/// A tiny package: `arch = any`, `pkgrel = 1`, no install script. It ships
/// [`PacPkg::payload_path`] (content `"<name> <version>\n"`, so an upgrade
/// changes it).
#[derive(Clone, Copy, Debug, Default)]
pub struct PacPkg {
    /// pacman's package name: letters, digits and `@._+-`.
    pub name: &'static str,
    /// The `pkgver` (pacman's version is `<version>-1`): letters, digits,
    /// `.` and `_`.
    pub version: &'static str,
    /// The `depends` array, whitespace-separated pacman dependencies, e.g.
    /// `"stead-test-a"` or `"stead-test-a>=1.1"`.
    pub depends: Option<&'static str>,
}

impl PacPkg {
    pub const fn new(name: &'static str, version: &'static str) -> PacPkg {
        PacPkg {
            name,
            version,
            depends: None,
        }
    }

    pub const fn with_depends(self, depends: &'static str) -> PacPkg {
        PacPkg {
            depends: Some(depends),
            ..self
        }
    }

    /// `usr/share/stead-test/<name>`, relative to the root.
    pub fn payload_path(&self) -> String {
        format!("usr/share/stead-test/{}", self.name)
    }

    /// The version as pacman shows it: `<version>-1` (`pkgrel` 1).
    pub fn full_version(&self) -> String {
        format!("{}-1", self.version)
    }

    /// The package file makepkg writes: `<name>-<version>-1-any.pkg.tar.gz`.
    pub fn file_name(&self) -> String {
        format!("{}-{}-any.pkg.tar.gz", self.name, self.full_version())
    }

    fn check(&self) {
        let ok = |s: &str, extra: &str| {
            !s.is_empty()
                && !s.starts_with(['-', '.'])
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
        };
        assert!(
            ok(self.name, "@._+-"),
            "unusable package name {:?}",
            self.name
        );
        assert!(ok(self.version, "._"), "unusable pkgver {:?}", self.version);
        if let Some(d) = self.depends {
            assert!(
                d.split_whitespace().all(|d| ok(d, "@._+-<>=:")),
                "unusable depends {d:?}"
            );
        }
    }

    /// The PKGBUILD: a `package()` that writes the payload file, nothing
    /// else (no sources, no `build()`, no install script).
    fn pkgbuild(&self) -> String {
        let depends = self
            .depends
            .map(|d| {
                let quoted: Vec<String> = d.split_whitespace().map(|d| format!("'{d}'")).collect();
                format!("depends=({})\n", quoted.join(" "))
            })
            .unwrap_or_default();
        format!(
            "# The stead test fixture's package (testkit/src/pacman.rs).\n\
             pkgname='{name}'\n\
             pkgver='{version}'\n\
             pkgrel=1\n\
             pkgdesc='stead test package {name}'\n\
             arch=(any)\n\
             license=(none)\n\
             {depends}\
             package() {{\n\
             \tmkdir -p \"$pkgdir/usr/share/stead-test\"\n\
             \tprintf '%s %s\\n' '{name}' '{version}' > \"$pkgdir/{payload}\"\n\
             }}\n",
            name = self.name,
            version = self.version,
            payload = self.payload_path(),
        )
    }
}

/// A throw-away pacman root with its own repository: `<tmp>/root` (the
/// root: `RootDir`, and the database, cache, log, GPG and hook dirs under
/// it), `<tmp>/repo` (the repository [`REPO`]), `<tmp>/pacman.conf`,
/// `<tmp>/makepkg.conf`, `<tmp>/build` (makepkg's dirs, owned by `nobody`),
/// `<tmp>/home` (HOME), `<tmp>/tmp` (TMPDIR).
pub struct PacmanRoot {
    dir: tempfile::TempDir,
    root: PathBuf,
    repo: PathBuf,
    config: PathBuf,
    builder: (Uid, Gid),
}

impl PacmanRoot {
    /// [`PacmanRoot::try_new`], panicking with its message.
    pub fn new(pkgs: &[PacPkg]) -> PacmanRoot {
        PacmanRoot::try_new(pkgs).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Builds `pkgs` with makepkg into the repository (`repo-add`), lays out
    /// an empty root, writes its pacman.conf and syncs the repository's
    /// database (`pacman -Syy`). Err names the Debian package to install
    /// when a tool is missing, and says so when not run as root.
    pub fn try_new(pkgs: &[PacPkg]) -> Result<PacmanRoot, String> {
        require_tools("pacman", TOOLS)?;
        if !Uid::effective().is_root() {
            return Err(
                "the pacman test fixture must run as root: pacman installs and removes \
                 packages only as root (makepkg then runs as `nobody`)"
                    .into(),
            );
        }
        let user = User::from_name(BUILD_USER)
            .ok()
            .flatten()
            .ok_or_else(|| format!("the pacman test fixture needs the user `{BUILD_USER}`"))?;
        let group = BUILD_GROUPS
            .iter()
            .find_map(|g| Group::from_name(g).ok().flatten())
            .ok_or_else(|| {
                format!(
                    "the pacman test fixture needs one of the groups {}",
                    BUILD_GROUPS.join(", ")
                )
            })?;
        let builder = (user.uid, group.gid);

        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        // makepkg (as nobody) must get through to <tmp>/build.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o711))
            .map_err(|e| format!("chmod {}: {e}", dir.path().display()))?;
        let root = dir.path().join("root");
        let repo = dir.path().join("repo");
        let config = dir.path().join("pacman.conf");
        let text = |p: &Path| {
            let s = p.to_str().expect("UTF-8 temp path").to_string();
            assert!(
                !s.contains(['"', '\'', '\n', ' ', '#', '=']),
                "unusable temp path {s:?}"
            );
            s
        };
        let (r, repo_text) = (text(&root), text(&repo));
        for sub in [
            "var/lib/pacman",
            "var/cache/pacman/pkg",
            "var/log",
            "etc/pacman.d/hooks",
            "etc/pacman.d/gnupg",
        ] {
            fs::create_dir_all(root.join(sub)).unwrap();
        }
        for sub in ["repo", "home", "tmp"] {
            fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        for sub in ["build", "build/home", "build/tmp"] {
            let p = dir.path().join(sub);
            fs::create_dir_all(&p).unwrap();
            chown(&p, Some(builder.0), Some(builder.1))
                .map_err(|e| format!("chown {}: {e}", p.display()))?;
        }
        fs::write(
            &config,
            format!(
                "# The stead test fixture's isolated root (testkit/src/pacman.rs).\n\
                 [options]\n\
                 RootDir = {r}/\n\
                 DBPath = {r}/var/lib/pacman/\n\
                 CacheDir = {r}/var/cache/pacman/pkg/\n\
                 LogFile = {r}/var/log/pacman.log\n\
                 GPGDir = {r}/etc/pacman.d/gnupg/\n\
                 HookDir = {r}/etc/pacman.d/hooks/\n\
                 Architecture = auto\n\
                 SigLevel = Never\n\
                 LocalFileSigLevel = Never\n\
                 RemoteFileSigLevel = Never\n\
                 \n\
                 [{REPO}]\n\
                 Server = file://{repo_text}\n"
            ),
        )
        .unwrap();
        let makepkg_conf = dir.path().join("makepkg.conf");
        fs::write(
            &makepkg_conf,
            format!(
                "# The stead test fixture's makepkg (testkit/src/pacman.rs).\n\
             CARCH=\"{arch}\"\n\
             BUILDENV=(!distcc !color !ccache !check !sign)\n\
             OPTIONS=(!strip !docs !libtool !staticlibs emptydirs !zipman !purge !debug !lto)\n\
             INTEGRITY_CHECK=(sha256)\n\
             COMPRESSGZ=(gzip -c -f -n)\n\
             PKGEXT='.pkg.tar.gz'\n\
             SRCEXT='.src.tar.gz'\n\
             PACKAGER='stead tests <test@stead.invalid>'\n",
                arch = std::env::consts::ARCH
            ),
        )
        .unwrap();
        fs::set_permissions(&makepkg_conf, fs::Permissions::from_mode(0o644)).unwrap();
        let pacman = PacmanRoot {
            dir,
            root,
            repo,
            config,
            builder,
        };
        pacman.publish(pkgs);
        Ok(pacman)
    }

    /// Builds `pkgs` (all at once, one makepkg each) into the repository,
    /// adds them to its database (`repo-add`: a package already there is
    /// replaced, e.g. `1.0` by `1.1`; its old file stays in the repository's
    /// dir) and refreshes the root's copy of the database (`pacman -Syy`).
    pub fn publish(&self, pkgs: &[PacPkg]) {
        for (i, pkg) in pkgs.iter().enumerate() {
            pkg.check();
            assert!(
                pkgs[..i]
                    .iter()
                    .all(|p| (p.name, p.version) != (pkg.name, pkg.version)),
                "{} {} is given twice",
                pkg.name,
                pkg.version
            );
        }
        let built: Vec<PathBuf> = std::thread::scope(|s| {
            let builds: Vec<_> = pkgs
                .iter()
                .map(|pkg| s.spawn(move || self.build(pkg)))
                .collect();
            builds.into_iter().map(|b| b.join().unwrap()).collect()
        });
        let mut files = Vec::new();
        for (pkg, file) in pkgs.iter().zip(built) {
            fs::copy(&file, self.repo.join(pkg.file_name())).unwrap();
            files.push(pkg.file_name());
        }
        if !files.is_empty() {
            let db = format!("{REPO}.db.tar.gz");
            let mut args = vec!["-q", db.as_str()];
            args.extend(files.iter().map(String::as_str));
            self.ok("repo-add", &args, Some(&self.repo));
        }
        // -yy: pacman compares the database's mtime in whole seconds, so a
        // plain -y right after the last sync may keep the old copy.
        self.pacman(&["-Syy"]);
    }

    /// Runs makepkg as `nobody` for one package; returns the package file.
    fn build(&self, pkg: &PacPkg) -> PathBuf {
        let build = self.dir.path().join("build");
        let tree = build.join(format!("{}-{}", pkg.name, pkg.version));
        let _ = fs::remove_dir_all(&tree);
        fs::create_dir(&tree).unwrap();
        fs::write(tree.join("PKGBUILD"), pkg.pkgbuild()).unwrap();
        for p in [&tree, &tree.join("PKGBUILD")] {
            chown(p, Some(self.builder.0), Some(self.builder.1)).unwrap();
        }
        let (uid, gid) = (
            format!("--reuid={}", self.builder.0),
            format!("--regid={}", self.builder.1),
        );
        let conf = self.dir.path().join("makepkg.conf");
        let mut cmd = Command::new("setpriv");
        cmd.args([uid.as_str(), gid.as_str(), "--clear-groups", "makepkg"])
            .arg("--config")
            .arg(&conf)
            .args(["--nodeps", "--force", "--noconfirm", "--nocolor"])
            .current_dir(&tree)
            .env("HOME", build.join("home"))
            .env("TMPDIR", build.join("tmp"))
            .env("LC_ALL", "C")
            // makepkg reads these from the environment before its config.
            .env("PKGDEST", &tree)
            .env("SRCDEST", &tree)
            .env("SRCPKGDEST", &tree)
            .env("LOGDEST", &tree)
            .env("BUILDDIR", &tree)
            .env_remove("PKGEXT")
            .env_remove("SRCEXT")
            .env_remove("GPGKEY")
            .env_remove("PACKAGER")
            .env_remove("CARCH")
            // With --nodeps makepkg runs pacman only for `-Qi` (the
            // `installed` list of .BUILDINFO), which would read the
            // machine's pacman database.
            .env("PACMAN", "true")
            .stdin(Stdio::null());
        let what = format!("makepkg (as {BUILD_USER}) for {} {}", pkg.name, pkg.version);
        let marker = format!("{}/{}-{}", self.dir.path().display(), pkg.name, pkg.version);
        stdout_of_success(
            run_bounded(cmd, &what, Some(("STEAD_TESTKIT_PACMAN_BUILD", &marker))),
            &what,
        );
        let file = tree.join(pkg.file_name());
        assert!(file.is_file(), "{what} made no {}", file.display());
        file
    }

    /// What a process needs to use this root: `STEAD_PACMAN_CONFIG`, the
    /// pacman.conf that holds everything (stead runs
    /// `pacman --config <it> --noconfirm ...`).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![(
            "STEAD_PACMAN_CONFIG",
            self.config.to_str().unwrap().to_string(),
        )]
    }

    /// The root's pacman.conf (`<tmp>/pacman.conf`).
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// The isolated root: packages' files land under it.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The repository's dir (`Server = file://<repo>`).
    pub fn repo(&self) -> &Path {
        &self.repo
    }

    /// Runs `program args` with a temp HOME and TMPDIR, `LC_ALL=C` and no
    /// stdin, in its own process group (killed when it is over); panics past
    /// the deadline. Success is not checked. For pacman, give
    /// `--config <config>` yourself (see [`PacmanRoot::pacman_output`]).
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        self.run_in(program, args, None)
    }

    fn run_in(&self, program: &str, args: &[&str], dir: Option<&Path>) -> Output {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env("HOME", self.dir.path().join("home"))
            .env("TMPDIR", self.dir.path().join("tmp"))
            .env("LC_ALL", "C")
            .stdin(Stdio::null());
        if let Some(dir) = dir {
            cmd.current_dir(dir);
        }
        run_bounded(cmd, &format!("{program} {args:?}"), None)
    }

    /// [`PacmanRoot::run`], expecting success; returns stdout.
    fn ok(&self, program: &str, args: &[&str], dir: Option<&Path>) -> String {
        stdout_of_success(
            self.run_in(program, args, dir),
            &format!("{program} {args:?}"),
        )
    }

    /// `pacman --config <config> --noconfirm ARGS`, as stead runs it;
    /// success is not checked.
    pub fn pacman_output(&self, args: &[&str]) -> Output {
        let config = self.config.to_str().unwrap();
        let mut all = vec!["--config", config, "--noconfirm"];
        all.extend_from_slice(args);
        self.run("pacman", &all)
    }

    /// `pacman --config <config> --noconfirm ARGS` on this root (to set it
    /// up before a test, say); panics with its output on failure, returns
    /// stdout.
    pub fn pacman(&self, args: &[&str]) -> String {
        stdout_of_success(self.pacman_output(args), &format!("pacman {args:?}"))
    }

    /// Every installed package: name -> version (`1.0-1`), from
    /// `pacman -Q` (which exits 1, printing nothing, when none is).
    pub fn installed(&self) -> BTreeMap<String, String> {
        let out = self.pacman_output(&["-Q"]);
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(
            (out.status.success() || (out.status.code() == Some(1) && stdout.is_empty()))
                && out.stderr.is_empty(),
            "pacman -Q failed ({})\nstdout:\n{stdout}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
            .lines()
            .map(|line| {
                let Some((name, version)) = line.split_once(' ') else {
                    panic!("unexpected pacman -Q line {line:?}");
                };
                (name.to_string(), version.to_string())
            })
            .collect()
    }

    /// How many transactions pacman has logged in the root's
    /// `var/log/pacman.log` (`[ALPM] transaction started`; a sync logs none).
    pub fn transactions(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("[ALPM] transaction started"))
            .count()
    }

    /// The root's `var/log/pacman.log` ("" before pacman first ran).
    pub fn log(&self) -> String {
        fs::read_to_string(self.root.join("var/log/pacman.log")).unwrap_or_default()
    }
}

/// The [`Stamp`]s of the machine's own pacman configuration, database,
/// cache and log (and makepkg's configuration), to compare before and after
/// a test. A dir's stamp changes when an entry is added or removed.
pub fn machine_stamps() -> Vec<(&'static str, Stamp)> {
    [
        "/etc/pacman.conf",
        "/etc/pacman.d",
        "/etc/pacman.d/hooks",
        "/etc/pacman.d/gnupg",
        "/etc/makepkg.conf",
        "/var/lib/pacman",
        "/var/lib/pacman/local",
        "/var/lib/pacman/sync",
        "/var/lib/pacman/db.lck",
        "/var/cache/pacman",
        "/var/cache/pacman/pkg",
        "/var/log/pacman.log",
        "/usr/share/libalpm/hooks",
    ]
    .into_iter()
    .map(|p| {
        let s = stamp(p);
        (p, s)
    })
    .collect()
}
