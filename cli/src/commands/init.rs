//! `stead init`: create this machine's state (state dir, machine id, lineage at
//! serial 1, history entry `init`). Running it again changes nothing unless a
//! different profile or config path is given.

use crate::output::outln;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use serde_json::json;
use stead_lib::machine::MachineInfo;
use stead_lib::state::State;

use crate::cli::InitArgs;
use crate::context::Context;
use crate::output::print_json;

pub fn run(ctx: &Context, args: &InitArgs) -> Result<ExitCode> {
    let config_path = args.path.as_deref().map(config_path_string).transpose()?;
    let guard = ctx.lock("init", None)?;
    let machine_id = ctx.machine_id()?;
    let (status, state, changes) = match ctx.load_state_locked(&guard)? {
        None => {
            let mut state = State::new(MachineInfo::current(&machine_id));
            state.active_profile = args.profile.clone();
            state.config_path = config_path;
            ctx.store.commit(&guard, &mut state, "init")?;
            ("created", state, Vec::new())
        }
        Some(mut state) => {
            let changes = apply_changes(&mut state, args.profile.clone(), config_path);
            if changes.is_empty() {
                ("unchanged", state, changes)
            } else {
                ctx.store.commit(&guard, &mut state, "init")?;
                ("updated", state, changes)
            }
        }
    };
    guard.release()?;
    report(ctx, status, &state, &changes);
    Ok(ExitCode::SUCCESS)
}

/// Re-running init changes only what the user asked to change; returns the changes.
fn apply_changes(
    state: &mut State,
    profile: Option<String>,
    config_path: Option<String>,
) -> Vec<String> {
    let mut changes = Vec::new();
    if let Some(p) = profile.filter(|p| state.active_profile.as_ref() != Some(p)) {
        changes.push(format!(
            "profile: {} → {p}",
            state.active_profile.as_deref().unwrap_or("(none)")
        ));
        state.active_profile = Some(p);
    }
    if let Some(c) = config_path.filter(|c| state.config_path.as_ref() != Some(c)) {
        changes.push(format!(
            "config path: {} → {c}",
            state.config_path.as_deref().unwrap_or("(none)")
        ));
        state.config_path = Some(c);
    }
    changes
}

fn report(ctx: &Context, status: &str, state: &State, changes: &[String]) {
    if ctx.json {
        print_json(&json!({
            "status": status,
            "state_path": ctx.store.path(),
            "machine_id": state.machine.id,
            "lineage_id": state.lineage.id,
            "serial": state.lineage.serial,
            "active_profile": state.active_profile,
            "config_path": state.config_path,
            "changes": changes,
        }));
        return;
    }
    let p = &ctx.out;
    match status {
        "created" => {
            outln!("{} {}", p.green("✓"), p.bold("Initialized stead state"));
            outln!("  State:    {}", ctx.store.path().display());
        }
        "updated" => {
            outln!("{} Updated stead state", p.green("✓"));
            for change in changes {
                outln!("  {change}");
            }
        }
        _ => {
            outln!(
                "Already initialized; nothing changed ({}).",
                ctx.store.path().display()
            );
        }
    }
    outln!(
        "  Machine:  {} ({})",
        state.machine.hostname,
        state.machine.id
    );
    outln!("  Lineage:  {}", state.lineage.id);
    outln!("  Serial:   {}", state.lineage.serial);
    if let Some(profile) = &state.active_profile {
        outln!("  Profile:  {profile}");
    }
    if let Some(config) = &state.config_path {
        outln!("  Config:   {config}");
    }
}

fn config_path_string(path: &Path) -> Result<String> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .context("cannot read the current directory")?
            .join(path)
    };
    let resolved = absolute.canonicalize().unwrap_or(absolute);
    resolved
        .to_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("the config path {} is not valid UTF-8", resolved.display()))
}
