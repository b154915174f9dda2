//! The brew adapter of `package` (Homebrew, on macOS and Linux): reads the
//! installed formulae and casks in one `brew list --versions`, candidate
//! versions in one `brew info --json=v2`, and installs or removes a group
//! of packages as one `brew install` or `brew uninstall`.
//!
//! brew refuses to run as root and could not run on the machine stead is
//! tested on: this adapter is tested against a recorded command protocol
//! (a stand-in `brew` that answers in brew's documented formats:
//! `cli/tests/packages_brew.rs`), not a real Homebrew. stead never updates
//! brew (`HOMEBREW_NO_AUTO_UPDATE`): `latest` means the newest version
//! brew's formulae already know, as with apt's lists.

use std::collections::HashMap;

use serde::Deserialize;

use super::managers::{Found, FoundState, read_output};

/// The environment stead runs brew with: never updating itself or asking.
pub const ENV: &[(&str, &str)] = &[
    ("HOMEBREW_NO_AUTO_UPDATE", "1"),
    ("HOMEBREW_NO_ENV_HINTS", "1"),
    ("NONINTERACTIVE", "1"),
];

/// `brew ARGS`, read when it exits 0 or a code in `tolerated`.
fn brew(args: &[&str], tolerated: &[i32]) -> Result<String, String> {
    let mut cmd = std::process::Command::new("brew");
    cmd.args(args).envs(ENV.iter().copied());
    read_output(cmd, &format!("brew {}", args[0]), tolerated)
}

/// The packages of `names` that are installed, by name: one `brew list
/// --versions`. brew exits 1 when any name is not installed and still
/// prints the others.
pub fn query(names: &[&str]) -> Result<HashMap<String, Found>, String> {
    if names.is_empty() {
        return Ok(HashMap::new());
    }
    // No `--`: names never start with `-` (the manifest refuses them).
    let mut args = vec!["list", "--versions"];
    args.extend_from_slice(names);
    Ok(parse_query(&brew(&args, &[1])?))
}

/// `brew list --versions` output: `NAME VERSION...` lines, one version per
/// installed keg, the newest last.
pub fn parse_query(text: &str) -> HashMap<String, Found> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let name = words.next()?;
            let version = words.last()?;
            Some((
                name.to_string(),
                Found {
                    version: version.to_string(),
                    state: FoundState::Installed,
                },
            ))
        })
        .collect()
}

/// The version brew would install of each of `names`: one `brew info
/// --json=v2`. brew fails the whole call when one name is unknown; then
/// each name is asked alone, so an unknown one only has no candidate.
pub fn candidates(names: &[&str]) -> Result<HashMap<String, Option<String>>, String> {
    let mut found: HashMap<String, Option<String>> =
        names.iter().map(|n| (n.to_string(), None)).collect();
    if names.is_empty() {
        return Ok(found);
    }
    let info = |names: &[&str]| {
        let mut args = vec!["info", "--json=v2"];
        args.extend_from_slice(names);
        brew(&args, &[])
    };
    let texts = match info(names) {
        Ok(text) => vec![text],
        // brew fails the whole call for one name it does not know: asked
        // alone, the others still get their candidate.
        Err(_) => {
            let mut texts = Vec::new();
            for name in names {
                match info(&[name]) {
                    Ok(text) => texts.push(text),
                    Err(e) if unknown_name(&e) => {}
                    Err(e) => return Err(e),
                }
            }
            texts
        }
    };
    for text in texts {
        for (name, version) in parse_info(&text)? {
            if let Some(slot) = found.get_mut(&name) {
                *slot = Some(version);
            }
        }
    }
    Ok(found)
}

/// Whether brew failed because it knows no formula or cask of that name
/// (it then has no candidate), not for another reason.
fn unknown_name(error: &str) -> bool {
    error.contains("No available formula")
        || error.contains("No formulae or casks found")
        || error.contains("No available cask")
}

#[derive(Deserialize)]
struct Info {
    #[serde(default)]
    formulae: Vec<Formula>,
    #[serde(default)]
    casks: Vec<Cask>,
}

#[derive(Deserialize)]
struct Formula {
    name: String,
    versions: FormulaVersions,
    #[serde(default)]
    revision: u32,
}

#[derive(Deserialize)]
struct FormulaVersions {
    stable: Option<String>,
}

#[derive(Deserialize)]
struct Cask {
    token: String,
    version: Option<String>,
}

/// `brew info --json=v2` output: each formula's stable version (with
/// `_REVISION` when it has one, as `brew list --versions` shows it) and
/// each cask's version.
pub fn parse_info(text: &str) -> Result<Vec<(String, String)>, String> {
    let info: Info =
        serde_json::from_str(text).map_err(|e| format!("brew info --json=v2 printed {e}"))?;
    let formulae = info.formulae.into_iter().filter_map(|f| {
        let stable = f.versions.stable?;
        let version = match f.revision {
            0 => stable,
            r => format!("{stable}_{r}"),
        };
        Some((f.name, version))
    });
    let casks = info
        .casks
        .into_iter()
        .filter_map(|c| Some((c.token, c.version?)));
    Ok(formulae.chain(casks).collect())
}

/// The `brew` argv that installs (an outdated installed formula is
/// upgraded by `brew install`) or removes `packages` in one call. brew
/// installs what its formulae say: a pin is refused when planned.
pub fn transaction_argv(install: bool, packages: &[(&str, Option<&str>)]) -> Vec<String> {
    let mut argv = vec![
        "brew".to_string(),
        if install { "install" } else { "uninstall" }.to_string(),
    ];
    argv.extend(packages.iter().map(|(n, _)| n.to_string()));
    argv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_lines_give_the_newest_keg() {
        let got = parse_query("git 2.44.0 2.45.1\ntmux 3.4\n\n");
        assert_eq!(got.len(), 2);
        assert_eq!(got["git"].version, "2.45.1");
        assert!(got["tmux"].is_installed());
    }

    #[test]
    fn info_gives_formula_versions_with_their_revision_and_cask_versions() {
        let text = r#"{"formulae": [
            {"name": "git", "versions": {"stable": "2.45.1", "head": "HEAD"}, "revision": 0},
            {"name": "tmux", "versions": {"stable": "3.4"}, "revision": 2},
            {"name": "headonly", "versions": {"stable": null}}
          ], "casks": [{"token": "firefox", "version": "126.0"}]}"#;
        let got = parse_info(text).unwrap();
        assert_eq!(
            got,
            [
                ("git".to_string(), "2.45.1".to_string()),
                ("tmux".to_string(), "3.4_2".to_string()),
                ("firefox".to_string(), "126.0".to_string()),
            ]
        );
        assert!(parse_info("Error: no").is_err());
    }

    #[test]
    fn only_an_unknown_name_is_taken_for_no_candidate() {
        assert!(unknown_name(
            "brew info 1: Error: No available formula with the name \"nope\"."
        ));
        assert!(!unknown_name(
            "brew info 1: Error: Failed to download formula.jws.json"
        ));
    }

    #[test]
    fn a_transaction_is_one_install_or_uninstall_of_every_name() {
        assert_eq!(
            transaction_argv(true, &[("a", Some("1")), ("b", None)]),
            ["brew", "install", "a", "b"]
        );
        assert_eq!(
            transaction_argv(false, &[("a", None)]),
            ["brew", "uninstall", "a"]
        );
    }
}
