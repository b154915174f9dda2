//! `stead state migrate`: convert a version 1 state file to version 2,
//! backing it up first.

use crate::context::Context;
use crate::output::outln;
use crate::output::print_json;
use anyhow::Result;
use serde_json::json;
use std::process::ExitCode;
use stead_lib::state::{Loaded, StateError};

/// `stead state migrate [--no-backup]`.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// Do not copy the version 1 file to <state-dir>/backups/ first
    #[arg(long)]
    pub no_backup: bool,
}

pub fn run(ctx: &Context, args: &MigrateArgs) -> Result<ExitCode> {
    let backup = !args.no_backup;
    match ctx.store.load()? {
        None => {
            return Err(StateError::NotInitialized {
                path: ctx.store.path(),
            }
            .into());
        }
        Some(Loaded::Current(state)) => {
            if ctx.json {
                print_json(&json!({ "migrated": false, "version": state.version }));
            } else if state.version < stead_lib::state::CURRENT_VERSION {
                // Version 3 only adds fields that are absent when empty.
                outln!(
                    "State is at version {}, which reads as version {} as it is; nothing to migrate (the next write saves it as version {}).",
                    state.version,
                    stead_lib::state::CURRENT_VERSION,
                    stead_lib::state::CURRENT_VERSION
                );
            } else {
                outln!(
                    "State is already at version {}; nothing to migrate.",
                    state.version
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        Some(Loaded::Normalised { .. }) => return save_normalised(ctx),
        Some(Loaded::Legacy { .. }) => {}
    }
    let guard = ctx.lock("migrate", None)?;
    ctx.verbose_note(&format!(
        "Migrate: converting {} from version 1 to version {}{}",
        ctx.store.path().display(),
        stead_lib::state::CURRENT_VERSION,
        if backup {
            ", backing it up first"
        } else {
            " (--no-backup: no backup is made)"
        }
    ));
    let (_, report) = ctx.migrate_locked(&guard, backup)?;
    guard.release()?;
    ctx.verbose_note("Lock: released");
    let Some(report) = report else {
        outln!(
            "State is already at version {}; nothing to migrate.",
            stead_lib::state::CURRENT_VERSION
        );
        return Ok(ExitCode::SUCCESS);
    };
    if ctx.json {
        print_json(&json!({ "migrated": true, "report": report }));
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{} Migrated state from version {} to version {}",
        ctx.out.green("✓"),
        report.from_version,
        report.to_version
    );
    match &report.backup {
        Some(path) => outln!("  Backup: {}", path.display()),
        None => outln!("  Backup: none (--no-backup)"),
    }
    let m = &report.machine;
    outln!(
        "  Machine metadata added: {} ({}), {}/{}, user {}",
        m.hostname,
        m.id,
        m.os,
        m.arch,
        m.user
    );
    outln!(
        "  Lineage started: {} at serial {}",
        report.lineage_id,
        report.serial
    );
    outln!("  History: empty");
    outln!("  Checksums: initialized (empty)");
    if !report.dropped_fields.is_empty() {
        let kept = if report.backup.is_some() {
            "kept in the backup"
        } else {
            "lost: --no-backup took no copy"
        };
        outln!(
            "  Not carried over ({kept}): {}",
            report.dropped_fields.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A version 2 record in the spec's spelling: saved in stead's form (the
/// original copied to the backups first, the normalisations named).
fn save_normalised(ctx: &Context) -> Result<ExitCode> {
    let guard = ctx.lock("migrate", None)?;
    let Some(mut state) = ctx.load_state_locked(&guard)? else {
        return Err(StateError::NotInitialized {
            path: ctx.store.path(),
        }
        .into());
    };
    ctx.store.commit(&guard, &mut state, "migrate")?;
    guard.release()?;
    if ctx.json {
        print_json(
            &json!({ "migrated": false, "normalised": true, "version": state.version, "serial": state.lineage.serial }),
        );
    } else {
        outln!(
            "{} Saved the state record in stead's form (version {}, serial {})",
            ctx.out.green("✓"),
            state.version,
            state.lineage.serial
        );
    }
    Ok(ExitCode::SUCCESS)
}
