//! `stead state journal`: the last apply's journal, each operation and
//! its outcome.

use crate::context::Context;
use crate::output::outln;
use crate::output::print_json;
use anyhow::Result;
use serde_json::json;
use std::process::ExitCode;

/// `stead state journal`: the records of the last run in the journal (it
/// may hold earlier runs: a clean run compacts it to its own only from
/// 64 KiB on; after a crash it also holds the interrupted one, which is
/// shown instead).
pub fn run(ctx: &Context) -> Result<ExitCode> {
    use stead_lib::journal;
    let path = ctx.layout.state_dir().join(journal::JOURNAL_FILE);
    // A read command: a corrupt journal is reported, not moved.
    let loaded = journal::load_read_only(&path)?;
    let last_run = loaded
        .records
        .iter()
        .rev()
        .find(|r| r.resource == "run" && r.action == journal::JournalAction::RunStart)
        .map(|r| r.run_id.clone());
    let records: Vec<&journal::Record> = match &last_run {
        Some(run) => loaded.records.iter().filter(|r| &r.run_id == run).collect(),
        None => Vec::new(),
    };
    let ended = records
        .iter()
        .any(|r| r.resource == "run" && r.action == journal::JournalAction::RunEnd);
    if ctx.json {
        print_json(&json!({
            "run_id": last_run,
            "ended": ended,
            "records": records,
            "torn_tail_ignored": loaded.torn_tail.is_some(),
        }));
        return Ok(ExitCode::SUCCESS);
    }
    let Some(run) = last_run else {
        outln!("The journal is empty: no apply has run here yet.");
        return Ok(ExitCode::SUCCESS);
    };
    outln!(
        "Run {run} ({})",
        if ended {
            "ended"
        } else {
            "interrupted: the next apply recovers it"
        }
    );
    for r in records {
        let state = serde_json::to_value(r.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let mut line = format!(
            "  {}  {:<10} {:<10} {}",
            // UTC like every other time stead shows; milliseconds order a run.
            r.at.format("%Y-%m-%d %H:%M:%S%.3f UTC"),
            state,
            r.action,
            subject(r)
        );
        if let Some(k) = &r.idemp_key {
            line.push_str(&format!("  [key {k}]"));
        }
        if let Some(d) = &r.detail {
            line.push_str(&format!("  {d}"));
        }
        outln!("{line}");
    }
    if loaded.torn_tail.is_some() {
        outln!("(a torn last line, left by a crash mid-write, was ignored)");
    }
    Ok(ExitCode::SUCCESS)
}

/// What a record is about: its resource, or a batch's count and first files
/// (`--json` lists every member).
fn subject(r: &stead_lib::journal::Record) -> String {
    const SHOWN: usize = 3;
    if r.members.is_empty() {
        return r.resource.clone();
    }
    let mut names = r.members[..r.members.len().min(SHOWN)].join(", ");
    if r.members.len() > SHOWN {
        names.push_str(&format!(", … ({} more)", r.members.len() - SHOWN));
    }
    format!("{} of {}: {names}", r.resource, r.members.len())
}
