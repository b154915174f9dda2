//! `stead state check-drift`: compare managed files with the checksums
//! recorded when stead wrote them (and symlink targets and modes, when the
//! manifest can be read).

use crate::output::outln;
use std::process::ExitCode;

use anyhow::Result;
use serde_json::json;
use stead_lib::manifest::{Spec, expand_key};
use stead_lib::state::DriftStatus;

use crate::context::Context;
use crate::output::print_json;

#[derive(Debug, serde::Serialize)]
struct Finding {
    path: String,
    resource: String,
    status: DriftStatus,
    expected: Option<String>,
    actual: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct CheckDriftArgs {
    /// Also list files that did not drift
    #[arg(long)]
    pub all: bool,
}

pub fn run(ctx: &Context, args: &CheckDriftArgs) -> Result<ExitCode> {
    let all = args.all;
    let state = ctx.load_state()?;
    let findings = findings(ctx, &state);
    let drifted = findings.iter().filter(|f| f.status.drifted()).count();
    if ctx.json {
        let shown: Vec<_> = findings
            .iter()
            .filter(|f| all || f.status.drifted())
            .collect();
        print_json(&json!({"drift": drifted > 0, "drifted": drifted, "files": shown}));
    } else {
        print_report(ctx, &findings, all);
    }
    Ok(if drifted > 0 {
        crate::exit::Exit::Found.into()
    } else {
        ExitCode::SUCCESS
    })
}

/// Managed paths that changed since stead wrote them: `(path, status)`.
pub(crate) fn drifted(
    ctx: &Context,
    state: &stead_lib::state::State,
) -> Vec<(String, DriftStatus)> {
    findings(ctx, state)
        .into_iter()
        .filter(|f| f.status.drifted())
        .map(|f| (f.path, f.status))
        .collect()
}

/// Every managed path compared with the record, sorted by path.
fn findings(ctx: &Context, state: &stead_lib::state::State) -> Vec<Finding> {
    let manifest = ctx.load_manifest(Some(state), None).ok().map(|(m, _)| m);
    // Declared resources by id (a map: `Manifest::get` scans, quadratic over the state).
    let declared_by_id: std::collections::HashMap<&str, &Spec> = manifest
        .iter()
        .flat_map(|m| m.resources.iter().rev())
        .map(|r| (r.id.as_str(), &r.spec))
        .collect();
    let home = ctx.layout.home();
    let mut findings = Vec::new();
    for (id, rec) in &state.resources {
        for key in &rec.keys {
            let path = expand_key(home, key);
            let declared = declared_by_id.get(id.as_str()).copied();
            // What drift means is each kind's (the library's); this only reports it.
            let d =
                stead_lib::resource::drift(&rec.kind, &path, state.checksums.get(key), declared);
            findings.push(Finding {
                path: key.clone(),
                resource: id.clone(),
                status: d.status,
                expected: d.expected,
                actual: d.actual,
            });
        }
    }
    findings.sort_by(|a, b| a.path.cmp(&b.path));
    findings
}

fn print_report(ctx: &Context, findings: &[Finding], all: bool) {
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
