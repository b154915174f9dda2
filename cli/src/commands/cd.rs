//! `stead cd`: print the config repo's path, for `cd "$(stead cd)"`.

use crate::output::outln;
use std::process::ExitCode;

use anyhow::Result;
use serde_json::json;

use crate::context::Context;
use crate::output::print_json;

pub fn run(ctx: &Context) -> Result<ExitCode> {
    let state = ctx
        .store
        .load()
        .ok()
        .flatten()
        .and_then(|loaded| match loaded {
            stead_lib::state::Loaded::Current(state)
            | stead_lib::state::Loaded::Normalised { state, .. } => Some(*state),
            stead_lib::state::Loaded::Legacy { .. } => None,
        });
    let dir = ctx.config_dir(state.as_ref())?;
    if !dir.is_dir() {
        anyhow::bail!(
            "the config repo {} is not a directory\n\
             Pass --config DIR, or record the right one with 'stead init --path DIR'.",
            dir.display()
        );
    }
    if ctx.json {
        print_json(&json!({ "config_dir": dir }));
    } else {
        // The bare path, nothing else: it is read by `$(...)`.
        outln!("{}", dir.display());
    }
    Ok(ExitCode::SUCCESS)
}
