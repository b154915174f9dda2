//! `stead state version`: the schema version, machine id and serial.

use crate::context::Context;
use crate::output::outln;
use crate::output::print_json;
use anyhow::Result;
use serde_json::json;
use std::process::ExitCode;

/// `stead state version`.
pub fn run(ctx: &Context) -> Result<ExitCode> {
    let state = ctx.load_state()?;
    if ctx.json {
        print_json(&json!({
            "version": state.version,
            "machine_id": state.machine.id,
            "serial": state.lineage.serial,
            "lineage_id": state.lineage.id,
            "state_path": ctx.store.path(),
        }));
    } else {
        outln!("State Version: {}", state.version);
        outln!("Machine ID: {}", state.machine.id);
        outln!("Serial: {}", state.lineage.serial);
        if ctx.verbose {
            outln!("Lineage: {}", state.lineage.id);
            outln!("State file: {}", ctx.store.path().display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
