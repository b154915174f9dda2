//! `stead doctor`: runs the library's environment checks and prints each as
//! ok/warn/fail with its fix (or JSON); exit 1 when any check failed.

use std::process::ExitCode;

use anyhow::Result;
use stead_lib::doctor::{self, Check, Inputs, Level};

use crate::context::Context;
use crate::output::{outln, print_json};

#[derive(Debug, clap::Args)]
pub struct DoctorArgs {}

pub fn run(ctx: &Context, _args: &DoctorArgs) -> Result<ExitCode> {
    let sync = ctx.sync_options();
    let checks = doctor::run(&Inputs {
        layout: &ctx.layout,
        store: &ctx.store,
        config: ctx.config.as_deref(),
        sync: &sync,
    });
    let healthy = doctor::healthy(&checks);
    if ctx.json {
        print_json(&serde_json::json!({
            "healthy": healthy,
            "checks": checks,
        }));
    } else {
        print_checks(ctx, &checks);
    }
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_checks(ctx: &Context, checks: &[Check]) {
    let p = &ctx.out;
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for check in checks {
        let level = match check.level {
            Level::Ok => p.green("ok  "),
            Level::Warn => p.yellow("warn"),
            Level::Fail => p.red("FAIL"),
        };
        let mut lines = check.message.lines();
        outln!(
            "{level}  {:width$}  {}",
            check.name,
            lines.next().unwrap_or_default()
        );
        let indent = " ".repeat(width + 8);
        for line in lines {
            outln!("{indent}{line}");
        }
        if let Some(fix) = &check.fix {
            outln!("{indent}fix: {fix}");
        }
    }
    let count = |level| checks.iter().filter(|c| c.level == level).count();
    outln!(
        "\n{} ok, {} warning(s), {} failure(s).",
        count(Level::Ok),
        count(Level::Warn),
        count(Level::Fail)
    );
}
