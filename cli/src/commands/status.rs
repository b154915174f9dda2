//! `stead status`: one line per path, two columns like `git status
//! --short`: what apply would do there (`+ ~ - !`) and how it drifted since
//! stead wrote it (`M D T P L`). Exit 0 when clean, 4 when anything would
//! change or drifted. Takes no lock and changes nothing.

use crate::output::outln;
use std::process::ExitCode;

use anyhow::Result;
use serde_json::json;
use stead_lib::converge;
use stead_lib::status;

use crate::context::Context;
use crate::output::print_json;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Show the diff of each drifted file (declared content vs on disk)
    #[arg(long)]
    pub diff: bool,

    /// Use this profile instead of the recorded one
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
}

pub fn run(ctx: &Context, args: &StatusArgs) -> Result<ExitCode> {
    // A converged seal that still holds: an apply would change nothing
    // and nothing drifted, as `stead plan` trusts it (before the record
    // is read, as there: the seal has just found it as sealed).
    let trusted = super::drift::trusted(ctx, args.profile.as_deref(), false);
    if trusted.holds() {
        print_clean(ctx);
        return Ok(ExitCode::SUCCESS);
    }
    let state = ctx.current_state()?;
    let mut options =
        ctx.plan_options(None, args.profile.as_deref(), false, converge::DEFAULT_JOBS);
    options.drift = trusted.drifted();
    let mut prepared =
        converge::prepare_read_only(&ctx.layout, &state, &options, &converge::Silent)?;
    // The plan's own manifest (or the compiled form a drifted seal named).
    let manifest = prepared.manifest.take();
    let findings = status::drift(
        &state,
        manifest.as_ref(),
        ctx.layout.home(),
        &prepared.secrets,
        &trusted.check(),
    )
    .findings;
    let lines = status::lines(&prepared.plan, &findings);
    let diff = |path: &str| {
        let finding = findings.iter().find(|f| f.path == path)?;
        args.diff
            .then(|| status::drift_diff(manifest.as_ref()?, finding))
            .flatten()
    };
    if ctx.json {
        let entries: Vec<_> = lines
            .iter()
            .map(|l| {
                let mut v = json!(l);
                if args.diff {
                    v["diff"] = json!(diff(&l.path));
                }
                v
            })
            .collect();
        print_json(&json!({"clean": lines.is_empty(), "entries": entries}));
    } else if lines.is_empty() {
        print_clean(ctx);
    } else {
        let p = &ctx.out;
        for l in &lines {
            let (apply, drift) = l.columns();
            let apply = match apply {
                "+" => p.green(apply),
                "~" => p.yellow(apply),
                "-" | "!" => p.red(apply),
                other => other.to_string(),
            };
            let drift = if drift == " " {
                drift.to_string()
            } else {
                p.red(drift)
            };
            outln!("{apply}{drift} {}  {}", l.path, l.resource);
            if let Some(d) = diff(&l.path) {
                super::drift::print_diff(p, &d);
            }
        }
    }
    Ok(if lines.is_empty() {
        ExitCode::SUCCESS
    } else {
        crate::exit::Exit::Found.into()
    })
}

/// What a clean machine prints.
fn print_clean(ctx: &Context) {
    if ctx.json {
        print_json(&json!({"clean": true, "entries": []}));
    } else {
        outln!("Clean: the machine matches the manifest and nothing drifted.");
    }
}
