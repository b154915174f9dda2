//! `stead state check-drift`: compare managed files with the checksums
//! recorded when stead wrote them (and symlink targets and modes, when the
//! manifest can be read); with `--diff`, show how each drifted file differs
//! from its declared content. A file that a converged seal or the stat
//! cache vouches for is not read (`--full` reads every file).

use crate::output::outln;
use std::process::ExitCode;

use anyhow::Result;
use serde_json::json;
use stead_lib::converge;
use stead_lib::manifest::Manifest;
use stead_lib::seal;
use stead_lib::state::DriftStatus;
use stead_lib::status::{self, Finding};

use crate::context::Context;
use crate::output::{Paint, print_json};

#[derive(Debug, clap::Args)]
pub struct CheckDriftArgs {
    /// Also list files that did not drift
    #[arg(long)]
    pub all: bool,

    /// Show a unified diff of each drifted file: declared content vs what is on disk
    #[arg(long)]
    pub diff: bool,

    /// Read every managed file, trusting neither the converged seal nor the stat cache
    #[arg(long)]
    pub full: bool,
}

pub fn run(ctx: &Context, args: &CheckDriftArgs) -> Result<ExitCode> {
    let all = args.all;
    let trusted = trusted(ctx, None, args.full);
    let state = ctx.load_state()?;
    let manifest = sealed_manifest(ctx, &trusted).or_else(|| manifest(ctx, &state));
    let found = status::drift(
        &state,
        manifest.as_ref(),
        ctx.layout.home(),
        &ctx.secrets_read_only()?,
        &trusted.check(),
    );
    note_trusted(ctx, found.trusted);
    let findings = found.findings;
    let drifted = findings.iter().filter(|f| f.status.drifted()).count();
    let diff = |f: &Finding| {
        args.diff
            .then(|| manifest.as_ref().and_then(|m| status::drift_diff(m, f)))
            .flatten()
    };
    if ctx.json {
        let shown: Vec<_> = findings
            .iter()
            .filter(|f| all || f.status.drifted())
            .map(|f| {
                let mut v = json!(f);
                if args.diff {
                    v["diff"] = json!(diff(f));
                }
                v
            })
            .collect();
        print_json(&json!({"drift": drifted > 0, "drifted": drifted, "files": shown}));
    } else {
        print_report(ctx, &findings, all, &diff);
    }
    Ok(if drifted > 0 {
        crate::exit::Exit::Found.into()
    } else {
        ExitCode::SUCCESS
    })
}

/// The manifest, when it loads (drift is checked against the record
/// without it).
pub(crate) fn manifest(ctx: &Context, state: &stead_lib::state::State) -> Option<Manifest> {
    ctx.load_manifest(Some(state), None).ok().map(|(m, _)| m)
}

/// What a drift check with `--profile profile` (`None`: the recorded one)
/// may trust here; nothing with `full`.
pub(crate) fn trusted(ctx: &Context, profile: Option<&str>, full: bool) -> status::Trusted {
    let request = seal::Request {
        config: ctx.config.as_deref(),
        profile,
    };
    status::Trusted::read(
        &ctx.layout,
        &converge::seal_key(&ctx.layout, &request),
        full,
        converge::DEFAULT_JOBS,
    )
}

/// With -v, how many files were trusted without being read.
pub(crate) fn note_trusted(ctx: &Context, trusted: usize) {
    if trusted > 0 {
        ctx.verbose_note(&format!(
            "Trusted {trusted} unchanged file(s) by the converged seal or their stat without reading them ('--full' reads every file)."
        ));
    }
}

/// The manifest a seal that held vouches for, read from its compiled form
/// instead of parsing `stead.toml`.
pub(crate) fn sealed_manifest(ctx: &Context, trusted: &status::Trusted) -> Option<Manifest> {
    let digest = trusted.compiled()?;
    stead_lib::manifest::compiled::read(ctx.layout.state_dir(), &digest)
}

/// Managed paths that changed since stead wrote them: `(path, status)`.
pub(crate) fn drifted(
    ctx: &Context,
    state: &stead_lib::state::State,
) -> Vec<(String, DriftStatus)> {
    let trusted = trusted(ctx, None, false);
    let manifest = sealed_manifest(ctx, &trusted).or_else(|| manifest(ctx, state));
    let secrets = ctx
        .secrets_read_only()
        .unwrap_or_else(|_| stead_lib::secret::Secrets::unavailable());
    status::drift(
        state,
        manifest.as_ref(),
        ctx.layout.home(),
        &secrets,
        &trusted.check(),
    )
    .findings
    .into_iter()
    .filter(|f| f.status.drifted())
    .map(|f| (f.path, f.status))
    .collect()
}

/// Prints a diff indented under its file, `+`/`-` lines coloured.
pub(crate) fn print_diff(p: &Paint, diff: &str) {
    for line in diff.lines() {
        let styled = if line.starts_with('+') && !line.starts_with("+++") {
            p.green(line)
        } else if line.starts_with('-') && !line.starts_with("---") {
            p.red(line)
        } else {
            line.to_string()
        };
        outln!("    {styled}");
    }
}

fn print_report(
    ctx: &Context,
    findings: &[Finding],
    all: bool,
    diff: &dyn Fn(&Finding) -> Option<String>,
) {
    let p = &ctx.out;
    outln!("Checking for file drift...");
    let groups = [
        ("Modified Files", DriftStatus::Modified),
        ("Missing Files", DriftStatus::Missing),
        ("Replaced", DriftStatus::Replaced),
        ("Mode Changes", DriftStatus::Mode),
        ("Retargeted Symlinks", DriftStatus::Retargeted),
    ];
    let mut any = false;
    for (title, status) in groups {
        let list: Vec<_> = findings.iter().filter(|f| f.status == status).collect();
        if list.is_empty() {
            continue;
        }
        any = true;
        outln!("\n{} ({}):", p.bold(title), list.len());
        for f in list {
            outln!("  • {}", f.path);
            if let Some(e) = &f.expected {
                outln!("    Expected: {e}");
            }
            if let Some(a) = &f.actual {
                outln!("    Actual:   {a}");
            }
            if let Some(d) = diff(f) {
                print_diff(p, &d);
            }
        }
    }
    if all {
        let list: Vec<_> = findings.iter().filter(|f| !f.status.drifted()).collect();
        if !list.is_empty() {
            outln!("\n{} ({}):", p.bold("Unchanged Files"), list.len());
            for f in list {
                outln!("  • {}", f.path);
            }
        }
    }
    if any {
        outln!("\nTip: Run 'stead apply' to restore tracked files");
        outln!("     or 'stead commit -m MSG FILE...' to accept them into the config repo");
    } else {
        outln!(
            "\n{} No drift: {} managed path{} match the record.",
            p.green("✓"),
            findings.len(),
            if findings.len() == 1 { "" } else { "s" }
        );
    }
}
