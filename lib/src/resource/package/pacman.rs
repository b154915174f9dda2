//! The pacman adapter of `package`: reads pacman's local database in one
//! query, its sync databases for candidate versions in one query, tells a
//! pacman that was interrupted (its database lock left behind), and
//! installs or removes a group of packages as one `pacman` transaction.
//!
//! `STEAD_PACMAN_CONFIG` points stead at another `pacman.conf` (`pacman
//! --config`), whose `RootDir`, `DBPath` and repositories pacman then uses
//! (the tests use throw-away roots so). stead never syncs the databases
//! (`-Sy`): refresh them yourself, as with apt's lists.

use std::collections::HashMap;
use std::path::PathBuf;

use super::managers::{Found, FoundState, read_output};

/// The environment variable naming another `pacman.conf`.
pub const CONFIG_VAR: &str = "STEAD_PACMAN_CONFIG";

fn config() -> Option<String> {
    std::env::var(CONFIG_VAR).ok().filter(|c| !c.is_empty())
}

fn pacman_argv() -> Vec<String> {
    let mut argv = vec!["pacman".to_string()];
    if let Some(c) = config() {
        argv.push("--config".into());
        argv.push(c);
    }
    argv
}

/// `pacman ARGS` (with the config in use), read when it exits 0 or a
/// code in `tolerated`.
fn pacman(args: &[&str], tolerated: &[i32]) -> Result<String, String> {
    let argv = pacman_argv();
    let mut cmd = std::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]).args(args);
    read_output(cmd, &format!("pacman {}", args[0]), tolerated)
}

/// The packages of `names` that are installed, by name: one `pacman -Q`.
/// pacman exits 1 when any name is missing and still prints the others.
pub fn query(names: &[&str]) -> Result<HashMap<String, Found>, String> {
    if names.is_empty() {
        return Ok(HashMap::new());
    }
    let mut args = vec!["-Q", "--"];
    args.extend_from_slice(names);
    Ok(parse_query(&pacman(&args, &[1])?))
}

/// `pacman -Q` output: `NAME VERSION` lines.
pub fn parse_query(text: &str) -> HashMap<String, Found> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let (name, version) = (words.next()?, words.next()?);
            words.next().is_none().then(|| {
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

/// The version the sync databases hold of each of `names`: one `pacman
/// -Sl` (every repository's list), read for the names asked.
pub fn candidates(names: &[&str]) -> Result<HashMap<String, Option<String>>, String> {
    let mut found: HashMap<String, Option<String>> =
        names.iter().map(|n| (n.to_string(), None)).collect();
    if names.is_empty() {
        return Ok(found);
    }
    parse_sync_list(&mut found, &pacman(&["-Sl"], &[])?);
    Ok(found)
}

/// `pacman -Sl` output (`REPO NAME VERSION [installed...]`) into `found`:
/// the first repository that lists a name wins, as pacman's order does.
pub fn parse_sync_list(found: &mut HashMap<String, Option<String>>, text: &str) {
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let (_repo, name, version) = match (words.next(), words.next(), words.next()) {
            (Some(r), Some(n), Some(v)) => (r, n, v),
            _ => continue,
        };
        if let Some(slot) = found.get_mut(name)
            && slot.is_none()
        {
            *slot = Some(version.to_string());
        }
    }
}

/// The files each installed package of `names` ships, by name: one
/// `pacman -Ql` (its paths already under `RootDir`). A package that is not
/// installed has no list: `pacman -Fl` would need the files databases,
/// which stead does not download.
pub fn shipped(names: &[&str]) -> Result<HashMap<String, Vec<PathBuf>>, String> {
    if names.is_empty() {
        return Ok(HashMap::new());
    }
    let mut args = vec!["-Ql", "--"];
    args.extend_from_slice(names);
    Ok(parse_shipped(&pacman(&args, &[1])?))
}

/// `pacman -Ql` output: `NAME PATH` lines (a directory's path ends with
/// `/`).
pub fn parse_shipped(text: &str) -> HashMap<String, Vec<PathBuf>> {
    let mut lists: HashMap<String, Vec<PathBuf>> = HashMap::new();
    for line in text.lines() {
        if let Some((name, path)) = line.split_once(' ')
            && let Some(p) = super::managers::under_root(None, path)
        {
            lists.entry(name.to_string()).or_default().push(p);
        }
    }
    lists
}

/// pacman's database directory: `pacman-conf DBPath` for the config in
/// use, else pacman's default.
fn db_path() -> PathBuf {
    let mut cmd = std::process::Command::new("pacman-conf");
    if let Some(c) = config() {
        cmd.arg("--config").arg(c);
    }
    cmd.arg("DBPath")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/pacman/"))
}

/// Why pacman must be looked at first: its database lock is there, so a
/// pacman is running or one was killed; and how to repair it.
pub fn interrupted() -> Result<Option<(String, String)>, String> {
    let lock = db_path().join("db.lck");
    Ok(lock.exists().then(|| {
        (
            format!(
                "pacman's database is locked ({} exists): another pacman is running, or one was interrupted",
                lock.display()
            ),
            format!("check that no pacman is running, then 'sudo rm {}'", lock.display()),
        )
    }))
}

/// The `pacman` argv that installs (`--needed`: what is installed already
/// is left alone) or removes `packages` in one transaction. pacman installs
/// what its repositories hold: a pin is refused when planned.
pub fn transaction_argv(install: bool, packages: &[(&str, Option<&str>)]) -> Vec<String> {
    let mut argv = pacman_argv();
    argv.push("--noconfirm".into());
    if install {
        argv.extend(["-S".to_string(), "--needed".to_string()]);
    } else {
        argv.push("-R".into());
    }
    argv.push("--".into());
    argv.extend(packages.iter().map(|(n, _)| n.to_string()));
    argv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_lines_are_name_and_version() {
        let got = parse_query("a 1.0-1\nb 2:3.1-4\nerror: package 'nope' was not found\n");
        assert_eq!(got.len(), 2);
        assert_eq!(got["b"].version, "2:3.1-4");
    }

    #[test]
    fn the_first_repository_listing_a_name_gives_its_candidate() {
        let mut found = HashMap::from([("a".to_string(), None), ("b".to_string(), None)]);
        parse_sync_list(
            &mut found,
            "core a 1.1-1 [installed: 1.0-1]\nextra a 2.0-1\nextra zz 1-1\nbroken\n",
        );
        assert_eq!(found["a"].as_deref(), Some("1.1-1"));
        assert_eq!(found["b"], None);
        assert_eq!(found.len(), 2);
    }

    #[test]
    fn shipped_lines_are_name_and_path() {
        let got = parse_shipped("a /r/usr/\na /r/usr/bin/a\nb /r/etc/b.conf\nbroken\n");
        assert_eq!(
            got["a"],
            [PathBuf::from("/r/usr"), PathBuf::from("/r/usr/bin/a")]
        );
        assert_eq!(got["b"], [PathBuf::from("/r/etc/b.conf")]);
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn an_install_keeps_what_is_installed_and_never_pins() {
        let argv = transaction_argv(true, &[("a", Some("1.0")), ("b", None)]);
        assert!(argv.contains(&"--needed".to_string()));
        assert_eq!(&argv[argv.len() - 2..], ["a", "b"]);
    }
}
