//! The `package` kind with `manager = "brew"`, against a recorded command
//! protocol: brew refuses to run as root and Homebrew is not on this
//! machine, so a stand-in `brew` (a shell script written by the test)
//! answers the four commands stead runs in Homebrew's documented formats:
//! `brew list --versions NAMES` (`NAME VERSION...` for each installed one,
//! exit 1 when any is not), `brew info --json=v2 NAMES` (the v2 JSON; an
//! unknown name fails the whole call with `Error: No available formula`),
//! `brew install NAMES` (resolves every name before installing any) and
//! `brew uninstall NAMES`. Its state is two files: what is installed and
//! what its formulae offer. This checks stead's side of the protocol (one
//! query, one transaction, outcomes read back, ownership), not Homebrew.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use common::packages::{PackageWorld, count, members, versions};

/// The stand-in's state: `installed` and `available`, lines `NAME VERSION`.
struct FakeBrew {
    dir: tempfile::TempDir,
}

impl FakeBrew {
    fn new(available: &[(&str, &str)]) -> FakeBrew {
        let brew = FakeBrew {
            dir: tempfile::tempdir().unwrap(),
        };
        fs::write(brew.file("installed"), "").unwrap();
        for (name, version) in available {
            brew.publish(name, version);
        }
        brew
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Makes `version` the one its formula offers.
    fn publish(&self, name: &str, version: &str) {
        let text = fs::read_to_string(self.file("available")).unwrap_or_default();
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| l.split(' ').next() != Some(name))
            .map(String::from)
            .collect();
        lines.push(format!("{name} {version}"));
        fs::write(self.file("available"), lines.join("\n") + "\n").unwrap();
    }

    /// Installs as the user would (`brew install NAME`).
    fn install_by_hand(&self, name: &str, version: &str) {
        let mut text = fs::read_to_string(self.file("installed")).unwrap();
        text.push_str(&format!("{name} {version}\n"));
        fs::write(self.file("installed"), text).unwrap();
    }

    fn installed(&self) -> BTreeMap<String, String> {
        fs::read_to_string(self.file("installed"))
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    /// The stand-in `brew`, logging each call to `bin/calls.log` as the
    /// package tests' wrappers do.
    fn write_program(&self, bin: &Path) {
        let state = self.dir.path().display();
        let log = bin.join("calls.log");
        let log = log.display();
        let script = format!(
            r#"#!/bin/sh
printf '%s\0' "brew $*" >> '{log}'
state='{state}'
cmd=$1; shift
case "$cmd" in
list)
  [ "$1" = --versions ] || {{ echo "unexpected: brew list $*" >&2; exit 64; }}
  shift; code=0
  for n in "$@"; do
    v=$(awk -v n="$n" '$1 == n {{ print $2 }}' "$state/installed")
    if [ -n "$v" ]; then echo "$n $v"; else code=1; fi
  done
  exit $code;;
info)
  [ "$1" = --json=v2 ] || {{ echo "unexpected: brew info $*" >&2; exit 64; }}
  shift
  for n in "$@"; do
    awk -v n="$n" '$1 == n {{ f = 1 }} END {{ exit !f }}' "$state/available" || {{
      echo "Error: No available formula with the name \"$n\"." >&2; exit 1; }}
  done
  printf '{{"formulae": ['; sep=
  for n in "$@"; do
    v=$(awk -v n="$n" '$1 == n {{ print $2 }}' "$state/available")
    printf '%s{{"name": "%s", "full_name": "%s", "versions": {{"stable": "%s", "head": null, "bottle": true}}, "revision": 0}}' "$sep" "$n" "$n" "$v"
    sep=', '
  done
  printf '], "casks": []}}\n';;
install)
  for n in "$@"; do
    awk -v n="$n" '$1 == n {{ f = 1 }} END {{ exit !f }}' "$state/available" || {{
      echo "Error: No available formula with the name \"$n\"." >&2; exit 1; }}
  done
  for n in "$@"; do
    v=$(awk -v n="$n" '$1 == n {{ print $2 }}' "$state/available")
    awk -v n="$n" '$1 != n' "$state/installed" > "$state/installed.new"
    echo "$n $v" >> "$state/installed.new"
    mv "$state/installed.new" "$state/installed"
    echo "==> Pouring $n--$v.bottle.tar.gz"
  done;;
uninstall)
  for n in "$@"; do
    awk -v n="$n" '$1 == n {{ f = 1 }} END {{ exit !f }}' "$state/installed" || {{
      echo "Error: No such keg: /opt/homebrew/Cellar/$n" >&2; exit 1; }}
  done
  for n in "$@"; do
    awk -v n="$n" '$1 != n' "$state/installed" > "$state/installed.new"
    mv "$state/installed.new" "$state/installed"
    echo "Uninstalling /opt/homebrew/Cellar/$n..."
  done;;
*) echo "unexpected: brew $cmd $*" >&2; exit 64;;
esac
"#
        );
        let path = bin.join("brew");
        fs::write(&path, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
}

type World = PackageWorld<FakeBrew>;

fn world(available: &[(&str, &str)], manifest: &str) -> World {
    let w = PackageWorld::new(FakeBrew::new(available), Vec::new(), &[], manifest);
    w.root.write_program(&w.bin);
    w
}

fn declare(names: &[&str], extra: &str) -> String {
    common::packages::declare("brew", names, extra)
}

const OFFERED: &[(&str, &str)] = &[("git", "2.45.1"), ("tmux", "3.4"), ("ripgrep", "14.1.0")];

#[test]
fn three_formulae_install_in_one_brew_call_and_a_warm_plan_runs_one_list() {
    let w = world(OFFERED, &declare(&["git", "tmux", "ripgrep"], ""));
    let plan = w.ok(&["plan"]);
    assert!(
        plan.contains("+ package.{git,tmux,ripgrep}  (brew, one transaction)"),
        "{plan}"
    );
    assert_eq!(w.calls(), ["brew list --versions git ripgrep tmux"]);

    w.ok(&["apply", "--yes"]);
    let calls = w.calls();
    let installs: Vec<&String> = calls
        .iter()
        .filter(|c| c.starts_with("brew install"))
        .collect();
    assert_eq!(installs.len(), 1, "{calls:?}");
    let mut names: Vec<&str> = installs[0].split(' ').skip(2).collect();
    names.sort_unstable();
    assert_eq!(names, ["git", "ripgrep", "tmux"]);
    assert_eq!(
        w.root.installed(),
        versions(&[("git", "2.45.1"), ("tmux", "3.4"), ("ripgrep", "14.1.0")])
    );

    assert!(w.ok(&["plan"]).contains("No changes"));
    let calls = w.calls();
    assert_eq!(calls.len(), 1, "a warm plan runs one query: {calls:?}");
    assert_eq!(count(&calls, "brew"), 1);

    let records = w.transaction_records();
    assert_eq!(records.len(), 1);
    assert_eq!(members(&records[0].0).len(), 3);
    assert_eq!(records[0].1[0]["state"], "succeeded");
    assert_eq!(
        w.repo.sb.state_json()["resources"]["package.git"]["names"][0],
        "brew:git"
    );
}

#[test]
fn latest_follows_the_formula_a_pin_is_refused_and_absent_uninstalls() {
    let w = world(OFFERED, &declare(&["git"], "ensure = \"latest\"\n"));
    w.ok(&["apply", "--yes"]);
    assert_eq!(w.root.installed(), versions(&[("git", "2.45.1")]));
    w.root.publish("git", "2.46.0");
    w.calls();
    let plan = w.ok(&["plan"]);
    assert!(
        plan.contains("~ package.git  (2.45.1 → 2.46.0 (latest))"),
        "{plan}"
    );
    assert_eq!(
        w.calls(),
        ["brew list --versions git", "brew info --json=v2 git"]
    );
    w.ok(&["apply", "--yes"]);
    assert_eq!(w.root.installed(), versions(&[("git", "2.46.0")]));

    w.repo
        .write_manifest(&declare(&["git"], "version = \"2.45.1\"\n"));
    let (code, out, err) = w.run(&["apply", "--yes"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        format!("{out}{err}").contains("brew installs what its repositories hold"),
        "{out}{err}"
    );

    w.repo
        .write_manifest(&declare(&["git"], "ensure = \"absent\"\n"));
    w.ok(&["apply", "--yes"]);
    assert!(w.root.installed().is_empty());
    assert!(w.ok(&["plan"]).contains("No changes"));
}

#[test]
fn an_unknown_formula_fails_only_itself_and_stead_uninstalls_only_what_it_installed() {
    let w = world(OFFERED, &declare(&["git", "nope", "tmux"], ""));
    w.root.install_by_hand("ripgrep", "14.1.0");
    let (code, out, err) = w.run(&["apply", "--yes"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        format!("{out}{err}").contains("nope is not installed"),
        "{out}{err}"
    );
    assert_eq!(
        w.root.installed(),
        versions(&[("git", "2.45.1"), ("tmux", "3.4"), ("ripgrep", "14.1.0")])
    );
    let (_, rest) = &w.transaction_records()[0];
    let failed: Vec<&serde_json::Value> = rest.iter().filter(|r| r["state"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{rest:?}");
    assert_eq!(failed[0]["resource"], "package.nope");

    // ripgrep was the user's: declared and undeclared, it stays; what
    // stead installed goes with its declaration.
    w.repo.write_manifest(&declare(&["git", "ripgrep"], ""));
    w.ok(&["apply", "--yes"]);
    assert_eq!(
        w.root.installed(),
        versions(&[("git", "2.45.1"), ("ripgrep", "14.1.0")])
    );
    w.repo.write_manifest("[settings]\n");
    let plan = w.ok(&["plan"]);
    assert!(
        plan.contains("- package.git  (no longer declared; stead installed it)"),
        "{plan}"
    );
    assert!(!plan.contains("ripgrep"), "{plan}");
    w.ok(&["apply", "--yes"]);
    assert_eq!(w.root.installed(), versions(&[("ripgrep", "14.1.0")]));
}

#[test]
fn an_unknown_name_among_latest_ones_is_asked_alone_so_the_others_keep_their_candidate() {
    let w = world(OFFERED, &declare(&["git", "nope"], "ensure = \"latest\"\n"));
    w.root.install_by_hand("git", "2.40.0");
    let plan: serde_json::Value = serde_json::from_str(&w.ok(&["--json", "plan"])).unwrap();
    let git = plan["plan"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "package.git")
        .unwrap();
    assert_eq!(git["reason"], "2.40.0 → 2.45.1 (latest)", "{plan}");
    assert_eq!(
        w.calls(),
        [
            "brew list --versions git nope",
            "brew info --json=v2 git nope",
            "brew info --json=v2 git",
            "brew info --json=v2 nope",
        ]
    );
}
