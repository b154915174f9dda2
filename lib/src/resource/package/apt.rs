//! The apt adapter of `package`: reads dpkg's database in one query, asks
//! apt for candidate versions in one query, tells an interrupted dpkg, and
//! installs or removes a group of packages as one `apt-get` transaction.
//!
//! Everything goes through the programs themselves, so `APT_CONFIG` and
//! `DPKG_ADMINDIR` in the environment point stead at another root exactly
//! as they point apt and dpkg there (the tests use throw-away roots so).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::managers::{Found, FoundState, read_output};

/// How long `apt-get` waits for another holder of dpkg's lock.
pub const LOCK_TIMEOUT_SECS: u32 = 120;

/// One package as dpkg's database has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// Its version (also kept for a package removed but not purged).
    pub version: String,
    /// dpkg's status abbreviation (`ii`: installed; `rc`: removed, config
    /// files left; `iU`, `iF`, `iH`: half done).
    pub status: String,
}

impl Installed {
    /// Installed and configured: status `ii` (the mgmt#988 lesson: not
    /// "has a version", which a removed package keeps).
    pub fn is_installed(&self) -> bool {
        self.status.starts_with("ii")
    }

    /// Left half done by an interrupted dpkg (unpacked, half configured,
    /// half installed, or waiting for triggers).
    pub fn is_half_done(&self) -> bool {
        let mut chars = self.status.chars();
        let _want = chars.next();
        matches!(chars.next(), Some('U' | 'F' | 'H' | 'W' | 't'))
    }

    /// What the package kind plans from: `rc` (removed, config files left)
    /// and a half-done status told apart from plain "not installed".
    pub fn found(self) -> Found {
        let state = if self.is_installed() {
            FoundState::Installed
        } else if self.is_half_done() {
            FoundState::HalfDone(self.status)
        } else if self.status.starts_with("rc") {
            FoundState::ConfigFiles
        } else {
            FoundState::NotInstalled
        };
        Found {
            version: self.version,
            state,
        }
    }
}

/// The packages of `names` that dpkg knows, by name: one `dpkg-query`.
/// A name dpkg never heard of is simply missing from the map. dpkg-query
/// exits 1 when any name is unknown and still prints the others, so its
/// output is read, not its exit code alone.
pub fn query(names: &[&str]) -> Result<HashMap<String, Found>, String> {
    if names.is_empty() {
        return Ok(HashMap::new());
    }
    let text = dpkg_query("-f=${Package}\t${Version}\t${db:Status-Abbrev}\n", names)?;
    Ok(parse_query(&text)
        .into_iter()
        .map(|(name, i)| (name, i.found()))
        .collect())
}

/// `dpkg-query -W FORMAT -- NAMES`, read even when it exits 1 (a name it
/// does not know).
fn dpkg_query(format: &str, names: &[&str]) -> Result<String, String> {
    let mut cmd = std::process::Command::new("dpkg-query");
    cmd.arg("-W").arg(format).arg("--").args(names);
    read_output(cmd, "dpkg-query", &[1])
}

/// The files each installed package of `names` ships, by name: one
/// `dpkg-query -W` of `${db-fsys:Files}`, under `DPKG_ROOT` when it is set
/// (a package that is not installed has no list: apt cannot say what it
/// would ship without downloading it).
pub fn shipped(names: &[&str]) -> Result<HashMap<String, Vec<PathBuf>>, String> {
    if names.is_empty() {
        return Ok(HashMap::new());
    }
    let text = dpkg_query("-f=${Package}\n${db-fsys:Files}", names)?;
    let root = std::env::var_os("DPKG_ROOT").map(PathBuf::from);
    Ok(parse_shipped(&text, root.as_deref()))
}

/// `dpkg-query -W -f='${Package}\n${db-fsys:Files}'` output: a package's
/// name on a line of its own, then its files, each on a line that starts
/// with a space; paths joined under `root`.
pub fn parse_shipped(text: &str, root: Option<&Path>) -> HashMap<String, Vec<PathBuf>> {
    let mut lists: HashMap<String, Vec<PathBuf>> = HashMap::new();
    let mut current: Option<&mut Vec<PathBuf>> = None;
    for line in text.lines() {
        match line.strip_prefix(' ') {
            None if !line.is_empty() => current = Some(lists.entry(line.to_string()).or_default()),
            None => {}
            Some(path) => {
                if let (Some(list), Some(p)) =
                    (current.as_mut(), super::managers::under_root(root, path))
                {
                    list.push(p);
                }
            }
        }
    }
    lists
}

/// `dpkg-query -W` output in the format [`query`] asks for.
pub fn parse_query(text: &str) -> HashMap<String, Installed> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let (name, version, status) = (fields.next()?, fields.next()?, fields.next()?);
            (!name.is_empty()).then(|| {
                (
                    name.to_string(),
                    Installed {
                        version: version.to_string(),
                        status: status.trim_end().to_string(),
                    },
                )
            })
        })
        .collect()
}

/// The candidate version apt would install for each of `names`
/// (`None`: apt knows no candidate): one `apt-cache policy`.
pub fn candidates(names: &[&str]) -> Result<HashMap<String, Option<String>>, String> {
    if names.is_empty() {
        return Ok(HashMap::new());
    }
    let out = std::process::Command::new("apt-cache")
        .arg("policy")
        .arg("--")
        .args(names)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| format!("cannot run apt-cache: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "apt-cache policy {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(parse_policy(&String::from_utf8_lossy(&out.stdout)))
}

/// `apt-cache policy` output: `NAME:` then `  Candidate: VERSION`.
pub fn parse_policy(text: &str) -> HashMap<String, Option<String>> {
    let mut out = HashMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if !line.starts_with(' ') {
            current = line.strip_suffix(':').map(str::to_string);
            continue;
        }
        if let (Some(name), Some(candidate)) = (
            current.as_ref(),
            line.trim_start().strip_prefix("Candidate:"),
        ) {
            let candidate = candidate.trim();
            let version =
                (candidate != "(none)" && !candidate.is_empty()).then(|| candidate.to_string());
            out.insert(name.clone(), version);
        }
    }
    out
}

/// dpkg's database directory: `DPKG_ADMINDIR`, else dpkg's default.
fn admin_dir() -> PathBuf {
    std::env::var_os("DPKG_ADMINDIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/dpkg"))
}

/// Why dpkg must be repaired before anything is installed or removed:
/// an interrupted run left its journal (`updates/`) or half-done packages
/// (`dpkg --audit`), and its repair. `None`: dpkg is consistent.
pub fn interrupted() -> Result<Option<(String, String)>, String> {
    let updates = admin_dir().join("updates");
    let pending = match std::fs::read_dir(&updates) {
        Ok(entries) => entries.filter_map(Result::ok).any(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        }),
        Err(_) => false,
    };
    let repair = || "sudo dpkg --configure -a".to_string();
    if pending {
        return Ok(Some((
            format!(
                "dpkg was interrupted (its journal in {} is not empty)",
                updates.display()
            ),
            repair(),
        )));
    }
    let out = std::process::Command::new("dpkg")
        .arg("--audit")
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| format!("cannot run dpkg --audit: {e}"))?;
    let report = String::from_utf8_lossy(&out.stdout);
    let first = report.lines().find(|l| !l.trim().is_empty());
    Ok(first.map(|l| (format!("dpkg --audit reports: {}", l.trim()), repair())))
}

/// `name` or `name=version`, as apt-get takes them.
fn with_version(name: &str, version: Option<&str>) -> String {
    match version {
        Some(v) => format!("{name}={v}"),
        None => name.to_string(),
    }
}

/// The `apt-get` argv that installs (`versions` pins) or removes `names`
/// in one transaction, non-interactive, keeping existing config files.
pub fn transaction_argv(install: bool, packages: &[(&str, Option<&str>)]) -> Vec<String> {
    let mut argv: Vec<String> = vec![
        "apt-get".into(),
        if install { "install" } else { "remove" }.into(),
        "-y".into(),
        "-q".into(),
        "-o".into(),
        format!("DPkg::Lock::Timeout={LOCK_TIMEOUT_SECS}"),
    ];
    if install {
        argv.extend(
            [
                "--no-install-recommends",
                "--allow-downgrades",
                "-o",
                "Dpkg::Options::=--force-confdef",
                "-o",
                "Dpkg::Options::=--force-confold",
            ]
            .map(String::from),
        );
    }
    argv.push("--".into());
    argv.extend(
        packages
            .iter()
            .map(|(n, v)| with_version(n, if install { *v } else { None })),
    );
    argv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installed_means_ii_and_a_removed_package_keeps_its_version() {
        let text = "a\t1.0\tii \nb\t2.0\trc \nc\t3.0\tiU \n";
        let got = parse_query(text);
        assert!(got["a"].is_installed());
        assert!(!got["b"].is_installed());
        assert_eq!(got["b"].version, "2.0");
        assert!(!got["c"].is_installed());
        assert!(got["c"].is_half_done());
        assert!(!got["a"].is_half_done() && !got["b"].is_half_done());
        assert_eq!(got.len(), 3);
        assert!(parse_query("garbage without tabs\n\n").is_empty());
    }

    #[test]
    fn shipped_files_follow_their_package_and_go_under_the_root() {
        let text = "a\n /.\n /etc\n /etc/a.conf\nb\n /usr/bin/b\n";
        let got = parse_shipped(text, Some(Path::new("/r")));
        assert_eq!(
            got["a"],
            [PathBuf::from("/r/etc"), PathBuf::from("/r/etc/a.conf")]
        );
        assert_eq!(got["b"], [PathBuf::from("/r/usr/bin/b")]);
        assert_eq!(
            parse_shipped(text, None)["b"],
            [PathBuf::from("/usr/bin/b")]
        );
    }

    #[test]
    fn policy_gives_each_candidate_and_none_for_none() {
        let text = "stead-a:\n  Installed: (none)\n  Candidate: 1.1\n  Version table:\n     1.1 500\n\
                    stead-b:\n  Installed: 1.0\n  Candidate: (none)\n";
        let got = parse_policy(text);
        assert_eq!(got["stead-a"].as_deref(), Some("1.1"));
        assert_eq!(got["stead-b"], None);
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn a_transaction_names_every_package_after_the_options() {
        let argv = transaction_argv(true, &[("a", None), ("b", Some("1.1"))]);
        let dashes = argv.iter().position(|a| a == "--").unwrap();
        assert_eq!(&argv[dashes + 1..], ["a", "b=1.1"]);
        assert!(argv.contains(&"--no-install-recommends".to_string()));
        let argv = transaction_argv(false, &[("a", None), ("b", Some("1.1"))]);
        assert_eq!(argv[1], "remove");
        assert_eq!(&argv[argv.len() - 2..], ["a", "b"]);
    }
}
