//! `stead-bench packages`: the `package` kind beside its floors, measured
//! in one run on a throw-away apt root (stead-testkit's `apt`; the
//! machine's own packages are never touched):
//!
//! * a warm `stead plan` of N declared packages, all installed, beside one
//!   `dpkg-query` of the same names (what the plan must cost at least: it
//!   reads them in that one query);
//! * installing K packages with `stead apply` (one apt transaction) beside
//!   K `apt-get install` calls one by one (what a tool that installs per
//!   resource does) and one plain `apt-get install` of all K (the floor);
//! * the autoedges' cost: a plan of N package upgrades and F files (so stead
//!   reads the files the N packages ship, one `dpkg-query`) beside a plan of
//!   the N upgrades alone and one of the F files alone.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use stead_testkit::apt::{AptRoot, Deb};

use crate::{Env, Measured, Result, Workspace, measure};

/// What to measure.
#[derive(Debug, Clone)]
pub struct PackageOptions {
    /// Declared (and installed) packages of the warm-plan cases.
    pub declared: Vec<usize>,
    /// Packages installed by the install case.
    pub install: usize,
    /// Runs per measurement (the median is reported).
    pub repeat: usize,
}

/// The flags stead gives apt-get, so the baselines do the same work.
const APT_FLAGS: &[&str] = &[
    "install",
    "-y",
    "-q",
    "-o",
    "DPkg::Lock::Timeout=120",
    "--no-install-recommends",
    "-o",
    "Dpkg::Options::=--force-confdef",
    "-o",
    "Dpkg::Options::=--force-confold",
    "--",
];

fn names(prefix: &str, n: usize) -> Vec<&'static str> {
    // Leaked: the fixture's `Deb` takes static names, and a benchmark run
    // makes a few hundred.
    (0..n)
        .map(|i| &*Box::leak(format!("{prefix}{i:04}").into_boxed_str()))
        .collect()
}

fn debs(names: &[&'static str]) -> Vec<Deb> {
    names.iter().map(|n| Deb::new(n, "1.0")).collect()
}

fn manifest(names: &[&str]) -> String {
    names.iter().map(|n| format!("[package.{n}]\n")).collect()
}

/// `stead ARGS` on `ws` with the root's environment, under the rss wrapper.
fn stead(env: &Env, apt: &AptRoot, ws: &Workspace, args: &[&str]) -> Result<Measured> {
    let mut cmd = env.stead_command(ws, args);
    cmd.envs(apt.env());
    let m = measure(cmd)?;
    if m.exit != 0 {
        return Err(format!("stead {} exited {}: {}", args.join(" "), m.exit, m.stderr).into());
    }
    Ok(m)
}

/// What `stead plan` prints (to check that a warm plan is empty).
fn plan_text(env: &Env, apt: &AptRoot, ws: &Workspace) -> Result<String> {
    let out = Command::new(&env.stead)
        .arg("--home")
        .arg(ws.home())
        .arg("--state-dir")
        .arg(ws.state())
        .arg("--config")
        .arg(ws.config())
        .args(["--no-color", "plan"])
        .env("HOME", ws.env_home())
        .envs(apt.env())
        .stdin(Stdio::null())
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn timed(f: impl FnOnce() -> Result<()>) -> Result<Duration> {
    let start = Instant::now();
    f()?;
    Ok(start.elapsed())
}

fn check(out: std::process::Output, what: &str) -> Result<()> {
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{what}: {}", String::from_utf8_lossy(&out.stderr)).into())
    }
}

fn install(apt: &AptRoot, names: &[&str]) -> Result<()> {
    let mut args = APT_FLAGS.to_vec();
    args.extend_from_slice(names);
    check(apt.run("apt-get", &args), "apt-get install")
}

fn remove(apt: &AptRoot, names: &[&str]) -> Result<()> {
    let mut args = vec!["remove", "-y", "-q", "--"];
    args.extend_from_slice(names);
    check(apt.run("apt-get", &args), "apt-get remove")
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs.get(xs.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn row(case: &str, stead: Duration, base: &str, baseline: Duration) -> String {
    let ratio = stead.as_secs_f64() / baseline.as_secs_f64().max(1e-9);
    format!(
        "| {case} | {} | {base}: {} | {ratio:.2}× |\n",
        ms(stead),
        ms(baseline)
    )
}

/// A warm plan of `n` installed packages beside one `dpkg-query`.
fn warm_plan(env: &Env, n: usize, repeat: usize) -> Result<String> {
    let all = names("stead-bench-p", n);
    let apt = AptRoot::try_new(&debs(&all))?;
    install(&apt, &all)?;
    let ws = Workspace::new(env, "stead-bench-pkg-")?;
    std::fs::write(ws.config().join("stead.toml"), manifest(&all))?;
    let shown = plan_text(env, &apt, &ws)?;
    if !shown.contains("No changes") {
        return Err(format!("the warm plan of {n} packages is not empty:\n{shown}").into());
    }
    let mut stead_times = Vec::new();
    let mut query_times = Vec::new();
    for _ in 0..repeat.max(1) {
        stead_times.push(stead(env, &apt, &ws, &["plan"])?.wall);
        let mut args = vec![
            "-W",
            "-f=${Package}\t${Version}\t${db:Status-Abbrev}\n",
            "--",
        ];
        args.extend_from_slice(&all);
        query_times.push(timed(|| check(apt.run("dpkg-query", &args), "dpkg-query"))?);
    }
    Ok(row(
        &format!("warm plan, {n} packages installed"),
        median(stead_times),
        "one dpkg-query",
        median(query_times),
    ))
}

/// Installing `k` packages: stead's one transaction, apt-get one by one,
/// one apt-get.
fn install_k(env: &Env, k: usize, repeat: usize) -> Result<String> {
    let all = names("stead-bench-i", k);
    let apt = AptRoot::try_new(&debs(&all))?;
    let (mut by_stead, mut one_by_one, mut at_once) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..repeat.max(1) {
        let ws = Workspace::new(env, "stead-bench-pkg-")?;
        std::fs::write(ws.config().join("stead.toml"), manifest(&all))?;
        let before = apt.transactions();
        by_stead.push(stead(env, &apt, &ws, &["apply", "--yes"])?.wall);
        if apt.transactions() != before + 1 {
            return Err(format!(
                "stead installed {k} packages in {} apt transactions, not one",
                apt.transactions() - before
            )
            .into());
        }
        remove(&apt, &all)?;
        one_by_one.push(timed(|| all.iter().try_for_each(|n| install(&apt, &[n])))?);
        remove(&apt, &all)?;
        at_once.push(timed(|| install(&apt, &all))?);
        remove(&apt, &all)?;
    }
    let stead_t = median(by_stead);
    let mut out = row(
        &format!("install {k} packages (stead: one transaction)"),
        stead_t,
        &format!("apt-get one by one ({k} calls)"),
        median(one_by_one),
    );
    out.push_str(&row(
        &format!("install {k} packages (stead: one transaction)"),
        stead_t,
        "one apt-get of all (floor)",
        median(at_once),
    ));
    Ok(out)
}

/// A plan of `n` package upgrades beside `files` files to create: with
/// both, stead reads what the packages ship (autoedges); alone, it does not.
fn autoedge_plan(env: &Env, n: usize, files: usize, repeat: usize) -> Result<String> {
    let all = names("stead-bench-u", n);
    let apt = AptRoot::try_new(&debs(&all))?;
    install(&apt, &all)?;
    let newer: Vec<Deb> = all.iter().map(|n| Deb::new(n, "1.1")).collect();
    apt.publish(&newer);
    let packages: String = all
        .iter()
        .map(|n| format!("[package.{n}]\nensure = \"latest\"\n"))
        .collect();
    let file_decls: String = (0..files)
        .map(|i| format!("[file.f{i:04}]\npath = \"~/f{i:04}\"\ncontent = \"{i}\\n\"\n"))
        .collect();
    let mut cases = Vec::new();
    for manifest in [
        format!("{packages}{file_decls}"),
        packages.clone(),
        file_decls.clone(),
    ] {
        let ws = Workspace::new(env, "stead-bench-pkg-")?;
        std::fs::write(ws.config().join("stead.toml"), manifest)?;
        let mut times = Vec::new();
        for _ in 0..repeat.max(1) {
            times.push(stead(env, &apt, &ws, &["plan"])?.wall);
        }
        cases.push(median(times));
    }
    let both = format!("plan, {n} package upgrades + {files} files (reads what the packages ship)");
    let mut out = row(
        &both,
        cases[0],
        &format!("the {n} upgrades alone"),
        cases[1],
    );
    out.push_str(&row(
        &both,
        cases[0],
        &format!("the {files} files alone"),
        cases[2],
    ));
    Ok(out)
}

/// Runs the package cases; returns a Markdown table.
pub fn run(env: &Env, opts: &PackageOptions) -> Result<String> {
    let mut table =
        String::from("| case | stead | baseline | stead / baseline |\n|---|---|---|---|\n");
    for &n in &opts.declared {
        table.push_str(&warm_plan(env, n, opts.repeat)?);
    }
    if opts.install > 0 {
        table.push_str(&install_k(env, opts.install, opts.repeat)?);
    }
    if let Some(&n) = opts.declared.iter().max() {
        table.push_str(&autoedge_plan(env, n, 200, opts.repeat)?);
    }
    Ok(table)
}
