//! `stead state history`: the operation history, newest first.

use crate::context::Context;
use crate::output::outln;
use crate::output::print_json;
use anyhow::Result;
use serde_json::json;
use std::process::ExitCode;

/// The widest the operation column is padded to.
const MAX_OPERATION_COLUMN: usize = 40;

/// `stead state history [--limit N]`: newest first.
#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// Show at most N entries
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
}

pub fn run(ctx: &Context, args: &HistoryArgs) -> Result<ExitCode> {
    let limit = args.limit;
    let state = ctx.load_state()?;
    let entries: Vec<_> = state
        .history_newest_first()
        .take(limit.unwrap_or(usize::MAX))
        .collect();
    // Other machines' hostnames are in the config repo's shared record,
    // when there is one; else they show as a short machine id.
    let shared = ctx
        .config_dir(Some(&state))
        .ok()
        .and_then(|dir| stead_lib::sync::open_with(&dir, &ctx.sync_options()).ok())
        .and_then(|backend| backend.read_working().ok().flatten());
    let host_of = |machine_id: &str| -> String {
        if machine_id == state.machine.id {
            state.machine.hostname.clone()
        } else if let Some(m) = shared.as_ref().and_then(|r| r.machines.get(machine_id)) {
            m.hostname.clone()
        } else {
            format!("{}...", machine_id.chars().take(8).collect::<String>())
        }
    };
    if ctx.json {
        let list: Vec<_> = entries
            .iter()
            .map(|e| {
                json!({
                    "id": e.id,
                    "serial": e.serial,
                    "operation": e.operation,
                    "timestamp": e.timestamp,
                    "machine_id": e.machine_id,
                    "hostname": host_of(&e.machine_id),
                    "user": e.user,
                })
            })
            .collect();
        print_json(&json!({ "history": list }));
        return Ok(ExitCode::SUCCESS);
    }
    if entries.is_empty() {
        match state.history.len() {
            0 => outln!("No history yet."),
            n => outln!(
                "No entries shown (--limit 0); the history holds {n} (newest first: 'stead state history --limit {}').",
                n.min(10)
            ),
        }
        return Ok(ExitCode::SUCCESS);
    }
    // Pad to the longest operation, but only so far: a format width over
    // u16::MAX panics ("Formatting argument out of range"), and columns
    // past the terminal align nothing. Counted in characters, as `{:<}` pads.
    let width = entries
        .iter()
        .map(|e| e.operation.chars().count())
        .max()
        .unwrap_or(0)
        .min(MAX_OPERATION_COLUMN);
    for e in entries {
        outln!(
            "{}. {:<width$}  {}  {}  {}",
            e.serial,
            e.operation,
            crate::output::utc(e.timestamp),
            host_of(&e.machine_id),
            e.user,
        );
    }
    Ok(ExitCode::SUCCESS)
}
