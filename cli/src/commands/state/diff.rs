//! `stead state diff`: field by field, how this machine's record differs
//! from the remote's.

use crate::commands::repo;
use crate::context::Context;
use crate::output::{outln, print_json};
use anyhow::Result;
use serde_json::json;
use std::process::ExitCode;
use stead_lib::sync::shared::{self, SharedRecord};

pub fn run(ctx: &Context) -> Result<ExitCode> {
    let state = ctx.load_state()?;
    let backend = repo::open(ctx, &state)?;
    let session = repo::session(ctx, backend.as_ref());
    session.refresh(false, &mut repo::note(ctx))?;
    let (_, comparison) = session.compare(&state, &[])?;
    let empty = SharedRecord::new(&comparison.local.lineage.id);
    let remote = comparison.remote.as_ref().unwrap_or(&empty);
    let diffs = shared::diff(&comparison.local, remote);
    if ctx.json {
        print_json(&json!({
            "local_serial": comparison.local.lineage.serial,
            "remote_serial": comparison.remote.as_ref().map(|r| r.lineage.serial),
            "differences": diffs,
        }));
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "Local record (serial {}) vs {} ({}):",
        comparison.local.lineage.serial,
        backend.remote_branch(),
        comparison
            .remote
            .as_ref()
            .map(|r| format!("serial {}", r.lineage.serial))
            .unwrap_or_else(|| "no record yet".to_string())
    );
    if diffs.is_empty() {
        outln!("  no differences");
    }
    let show = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "(absent)".to_string(),
        other => other.to_string(),
    };
    for d in &diffs {
        if d.field.starts_with("history[") {
            let (side, entry) = if d.remote.is_null() {
                ("only local ", &d.local)
            } else if d.local.is_null() {
                ("only remote", &d.remote)
            } else {
                ("differs    ", &d.remote)
            };
            outln!(
                "  {side} {} {} on {} at {} (serial {})",
                d.field,
                entry["operation"].as_str().unwrap_or("?"),
                entry["machine_id"]
                    .as_str()
                    .map(|m| m.chars().take(8).collect::<String>())
                    .unwrap_or_default(),
                entry["timestamp"].as_str().unwrap_or("?"),
                entry["serial"]
            );
        } else {
            outln!(
                "  {}: local {}, remote {}",
                d.field,
                show(&d.local),
                show(&d.remote)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
