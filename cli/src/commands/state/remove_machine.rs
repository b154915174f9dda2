//! `stead state remove-machine MACHINE`: take a machine that is gone (sold,
//! reinstalled, retired) out of the lineage. Its entry and membership leave
//! the shared record; its history stays; it is kept on a `retired` list so
//! that merging an older copy cannot bring it back.

use std::process::ExitCode;

use anyhow::Result;
use serde_json::json;

use crate::commands::repo;
use crate::context::Context;
use crate::output::{outln, print_json};

#[derive(Debug, clap::Args)]
pub struct RemoveMachineArgs {
    /// The machine's id, id prefix (8+ characters) or hostname
    #[arg(value_name = "MACHINE")]
    pub machine: String,
}

pub fn run(ctx: &Context, args: &RemoveMachineArgs) -> Result<ExitCode> {
    let who = args.machine.as_str();
    let guard = ctx.lock_lineage_wide("remove-machine")?;
    let state = repo::load_state(ctx, &guard)?;
    let backend = repo::open(ctx, &state)?;
    let session = repo::session(ctx, backend.as_ref());
    let Some(mut record) = backend.read_working()? else {
        anyhow::bail!(
            "{} has no shared record (.stead/state.json); there is no lineage to remove a machine from",
            backend.root().display()
        );
    };
    session.refuse_if_retired(&state, &[Some(&record)])?;
    let matches: Vec<(String, String)> = record
        .machines
        .iter()
        .filter(|(id, m)| super::names_machine(who, id, &m.hostname))
        .map(|(id, m)| (id.clone(), m.hostname.clone()))
        .collect();
    let (id, hostname) = match matches.as_slice() {
        [one] => one.clone(),
        [] => anyhow::bail!(
            "no machine '{who}' in the lineage\nMachines: {}",
            record
                .machines
                .iter()
                .map(|(id, m)| format!("{} ({id})", m.hostname))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        many => anyhow::bail!(
            "'{who}' names {} machines; give the machine id instead: {}",
            many.len(),
            many.iter()
                .map(|(id, h)| format!("{h} ({id})"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    if id == state.machine.id {
        anyhow::bail!(
            "'{who}' is this machine; run 'stead state remove-machine' on another machine of the lineage\nNothing was changed."
        );
    }
    record.retire(&id);
    let (state, record) = session.settle(&guard, state, &record, Some("remove-machine"), None)?;
    // It could read the lineage's secrets: each is made anew for the
    // members left by the next apply.
    let rotated = if backend.tree_on_disk() {
        stead_lib::secret::retire_member(backend.root(), &id, &ctx.secrets_read_only()?)?
    } else {
        Vec::new()
    };
    let commit = session.commit_record(
        &[],
        &format!("stead: remove machine {hostname} ({id}) from the lineage"),
    )?;
    guard.release()?;
    if ctx.json {
        print_json(&json!({
            "removed": id, "hostname": hostname, "serial": state.lineage.serial,
            "machines": record.lineage.machines, "commit": commit,
            "secrets_to_rotate": rotated,
        }));
    } else {
        outln!(
            "{} Removed {hostname} ({id}) from the lineage; {} machine(s) remain. Its history is kept.",
            ctx.out.green("✓"),
            record.machine_count()
        );
        for name in &rotated {
            outln!(
                "  secret.{name} is marked for rotation: the next apply generates it anew for the machines left."
            );
        }
        outln!("Run 'stead sync' to share it.");
    }
    Ok(ExitCode::SUCCESS)
}
