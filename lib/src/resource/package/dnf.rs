//! The dnf adapter of `package`: reads rpm's database in one query, asks
//! dnf for candidate versions in one query, and installs or removes a
//! group of packages as one `dnf` transaction.
//!
//! `STEAD_DNF_INSTALLROOT` points stead at another root (`dnf
//! --installroot`, `rpm --root`), whose own `etc/dnf/dnf.conf` and
//! repositories dnf reads (the tests use throw-away roots so).

use std::collections::HashMap;

use std::path::{Path, PathBuf};

use super::managers::{Found, FoundState, read_output, under_root};

/// The environment variable naming another root.
pub const ROOT_VAR: &str = "STEAD_DNF_INSTALLROOT";

/// An installed package's version as rpm prints it: `EPOCH:` only when it
/// has one, then `VERSION-RELEASE`.
const VERSION_FORMAT: &str = "%{NAME}\\t%|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE}\\n";

fn root() -> Option<String> {
    std::env::var(ROOT_VAR).ok().filter(|r| !r.is_empty())
}

fn rpm() -> std::process::Command {
    let mut cmd = std::process::Command::new("rpm");
    if let Some(r) = root() {
        cmd.arg("--root").arg(r);
    }
    cmd.env("LC_ALL", "C");
    cmd
}

fn dnf_argv() -> Vec<String> {
    let mut argv = vec!["dnf".to_string()];
    if let Some(r) = root() {
        argv.push(format!("--installroot={r}"));
    }
    argv
}

/// The packages of `names` that are installed, by name: one `rpm -q`.
/// rpm exits non-zero when any name is not installed (saying so on stdout,
/// without a tab) and still prints the others, so its output is read.
pub fn query(names: &[&str]) -> Result<HashMap<String, Found>, String> {
    if names.is_empty() {
        return Ok(HashMap::new());
    }
    let out = rpm()
        .arg("-q")
        .arg("--qf")
        .arg(VERSION_FORMAT)
        .arg("--")
        .args(names)
        .output()
        .map_err(|e| format!("cannot run rpm: {e}"))?;
    let found = parse_query(&String::from_utf8_lossy(&out.stdout));
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && found.is_empty() && stderr.contains("error") {
        return Err(format!("rpm -q {}: {}", out.status, stderr.trim()));
    }
    Ok(found)
}

/// `rpm -q --qf` output in `VERSION_FORMAT`; other lines ("package X is
/// not installed") are not packages.
pub fn parse_query(text: &str) -> HashMap<String, Found> {
    text.lines()
        .filter_map(|line| {
            let (name, version) = line.split_once('\t')?;
            (!name.is_empty() && !version.is_empty() && !version.contains('\t')).then(|| {
                (
                    name.to_string(),
                    Found {
                        version: version.to_string(),
                        state: FoundState::Installed,
                    },
                )
            })
        })
        .collect()
}

/// The newest version dnf knows of each of `names`: one `dnf repoquery`.
pub fn candidates(names: &[&str]) -> Result<HashMap<String, Option<String>>, String> {
    if names.is_empty() {
        return Ok(HashMap::new());
    }
    let text = dnf_repoquery(&[], "%{name}\t%{evr}\n", names)?;
    Ok(parse_candidates(names, &text))
}

/// `dnf [OPTIONS] -q repoquery --latest-limit 1 --qf FORMAT -- NAMES`.
fn dnf_repoquery(options: &[&str], format: &str, names: &[&str]) -> Result<String, String> {
    let argv = dnf_argv();
    let mut cmd = std::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .args(options)
        .args([
            "-q",
            "repoquery",
            "--latest-limit",
            "1",
            "--qf",
            format,
            "--",
        ])
        .args(names);
    read_output(cmd, "dnf repoquery", &[])
}

/// `dnf repoquery --qf '%{name}\t%{evr}'` output, for `names` (a name
/// dnf did not print has no candidate; one it printed unasked is left out).
pub fn parse_candidates(names: &[&str], text: &str) -> HashMap<String, Option<String>> {
    let mut found: HashMap<String, Option<String>> =
        names.iter().map(|n| (n.to_string(), None)).collect();
    for line in text.lines() {
        if let Some((name, evr)) = line.split_once('\t')
            && let Some(slot) = found.get_mut(name)
            && !evr.trim().is_empty()
        {
            *slot = Some(evr.trim().to_string());
        }
    }
    found
}

/// The files each of `names` ships, by name: one `dnf repoquery` of the
/// newest version in the repositories' metadata, from dnf's cache only
/// (`-C`: no download), so it answers for packages that are not installed
/// yet; paths under the installroot.
pub fn shipped(names: &[&str]) -> Result<HashMap<String, Vec<PathBuf>>, String> {
    if names.is_empty() {
        return Ok(HashMap::new());
    }
    let text = dnf_repoquery(&["-C"], "%{name}\t%{files}", names)?;
    let root = root().map(PathBuf::from);
    Ok(parse_shipped(&text, root.as_deref()))
}

/// `dnf repoquery --qf '%{name}\t%{files}'` output: a package's name, a
/// tab and its first file, then its other files on lines of their own;
/// paths joined under `root`.
pub fn parse_shipped(text: &str, root: Option<&Path>) -> HashMap<String, Vec<PathBuf>> {
    let mut lists: HashMap<String, Vec<PathBuf>> = HashMap::new();
    let mut current: Option<&mut Vec<PathBuf>> = None;
    for line in text.lines() {
        let path = match line.split_once('\t') {
            Some((name, first)) => {
                current = Some(lists.entry(name.to_string()).or_default());
                first
            }
            None => line,
        };
        if let (Some(list), Some(p)) = (current.as_mut(), under_root(root, path)) {
            list.push(p);
        }
    }
    lists
}

/// The `dnf` argv that installs (`name-version` for a pin) or removes
/// `packages` in one transaction, without weak dependencies.
pub fn transaction_argv(install: bool, packages: &[(&str, Option<&str>)]) -> Vec<String> {
    let mut argv = dnf_argv();
    argv.extend(["-y".to_string(), "-q".to_string()]);
    if install {
        argv.extend([
            "--setopt=install_weak_deps=False".to_string(),
            "install".to_string(),
        ]);
    } else {
        argv.push("remove".to_string());
    }
    argv.push("--".into());
    argv.extend(packages.iter().map(|(n, v)| match v {
        Some(v) if install => format!("{n}-{v}"),
        _ => n.to_string(),
    }));
    argv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_package_line_is_not_a_package() {
        let got = parse_query("a\t1.0-1\npackage nope is not installed\nb\t2:3.1-4.fc40\n");
        assert_eq!(got.len(), 2);
        assert_eq!(got["a"].version, "1.0-1");
        assert_eq!(got["b"].version, "2:3.1-4.fc40");
        assert!(got["a"].is_installed());
    }

    #[test]
    fn candidates_are_read_for_the_names_asked_only() {
        let got = parse_candidates(&["a", "b"], "a\t1.1-1\nzz\t9-1\nb\t\n");
        assert_eq!(got.len(), 2);
        assert_eq!(got["a"].as_deref(), Some("1.1-1"));
        assert_eq!(got["b"], None);
    }

    #[test]
    fn shipped_files_follow_the_name_and_tab_that_start_each_package() {
        let got = parse_shipped(
            "a\t/usr/share/t\n/usr/share/t/a\nb\t/etc/b.conf\n",
            Some(Path::new("/r")),
        );
        assert_eq!(
            got["a"],
            [
                PathBuf::from("/r/usr/share/t"),
                PathBuf::from("/r/usr/share/t/a")
            ]
        );
        assert_eq!(got["b"], [PathBuf::from("/r/etc/b.conf")]);
    }

    #[test]
    fn a_pin_is_name_dash_version_and_a_removal_ignores_it() {
        let argv = transaction_argv(true, &[("a", Some("1.0")), ("b", None)]);
        assert_eq!(&argv[argv.len() - 3..], ["--", "a-1.0", "b"]);
        let argv = transaction_argv(false, &[("a", Some("1.0"))]);
        assert!(argv.contains(&"remove".to_string()));
        assert_eq!(argv.last().map(String::as_str), Some("a"));
    }
}
