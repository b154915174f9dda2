//! `stead state check-conflicts`: the conflicts between this machine's
//! record and the remote's, with severities and the four resolutions.

use crate::commands::repo;
use crate::context::Context;
use crate::output::{outln, print_json};
use anyhow::Result;
use serde_json::json;
use std::process::ExitCode;

pub fn run(ctx: &Context) -> Result<ExitCode> {
    let state = ctx.load_state()?;
    let backend = repo::open(ctx, &state)?;
    let session = repo::session(ctx, backend.as_ref());
    let fetched = session.refresh(false, &mut repo::note(ctx))?;
    let drift = crate::commands::drift::drifted(ctx, &state);
    let (records, comparison) = session.compare(&state, &drift)?;
    repo::tell_decisions(ctx, &comparison);
    if let Err(removed @ stead_lib::sync::SyncError::Retired { .. }) =
        session.refuse_if_retired(&state, &[records.local.as_ref(), records.remote.as_ref()])
    {
        // Nothing else matters until the machine rejoins: sync and apply refuse it.
        if ctx.json {
            print_json(&json!({
                "removed": true,
                "machine_id": state.machine.id,
                "message": removed.to_string(),
                "conflicts": comparison.conflicts,
                "fetched": fetched,
            }));
        } else {
            outln!("{} {removed}", ctx.out.red("✗"));
        }
        return Ok(crate::exit::Exit::Found.into());
    }
    let found = !comparison.conflicts.is_empty();
    let offline = ctx.offline_machines(comparison.remote.as_ref().unwrap_or(&comparison.local));
    if ctx.json {
        print_json(&json!({
            "removed": false,
            "conflicts": comparison.conflicts,
            "direction": comparison.direction,
            "local_serial": comparison.local.lineage.serial,
            "remote_serial": comparison.remote.as_ref().map(|r| r.lineage.serial),
            "base_serial": comparison.base.as_ref().map(|b| b.lineage.serial),
            "fetched": fetched,
            "offline_machines": offline,
            "resolutions": repo::RESOLUTIONS.iter().map(|(c, _)| c).collect::<Vec<_>>(),
        }));
    } else if found {
        repo::print_conflicts(ctx, &comparison);
        let automatic = comparison.undecided().next().is_none();
        outln!(
            "\n{}",
            if automatic {
                "'stead sync' merges these automatically."
            } else {
                "The automatic merge cannot decide all of these."
            }
        );
        repo::print_ownership(&comparison);
        repo::print_resolutions();
    } else {
        outln!(
            "{} No conflicts: local serial {}, remote serial {} ({}).",
            ctx.out.green("✓"),
            comparison.local.lineage.serial,
            comparison
                .remote
                .as_ref()
                .map(|r| r.lineage.serial.to_string())
                .unwrap_or_else(|| "none yet".to_string()),
            backend.remote_branch()
        );
    }
    if !ctx.json {
        ctx.print_offline(&offline);
    }
    Ok(if found {
        crate::exit::Exit::Found.into()
    } else {
        ExitCode::SUCCESS
    })
}
