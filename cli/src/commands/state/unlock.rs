//! `stead state unlock --force`: remove the state lock (and with `hybrid`,
//! the remote locks) and say what was removed.

use crate::context::Context;
use crate::output::outln;
use crate::output::print_json;
use anyhow::Result;
use chrono::Utc;
use serde_json::json;
use std::process::ExitCode;
use stead_lib::lock::{self, LockStatus, LockType, ago};
use stead_lib::sync::backend::RemoteHolder;

/// `stead state unlock [--force]`.
#[derive(Debug, clap::Args)]
pub struct UnlockArgs {
    /// Remove it even though a process may still be working
    #[arg(long)]
    pub force: bool,
    /// With lock_type hybrid: remove only the remote lock that MACHINE
    /// holds (its id, an id prefix of 8 or more characters, or its
    /// hostname); this machine's own state lock is left as it is
    #[arg(long, value_name = "MACHINE", requires = "force")]
    pub machine: Option<String>,
}

pub fn run(ctx: &Context, args: &UnlockArgs) -> Result<ExitCode> {
    if let Some(who) = &args.machine {
        return unlock_machine(ctx, who);
    }
    let force = args.force;
    if force {
        unlock_remote(ctx)?;
    }
    if !force {
        let config = ctx.lock_config().unwrap_or_default();
        let status = lock::inspect(&ctx.layout, &config)?;
        if status == LockStatus::Unlocked {
            if ctx.json {
                print_json(&json!({ "removed": false, "locked": false }));
            } else {
                outln!("State is not locked");
            }
            return Ok(ExitCode::SUCCESS);
        }
        anyhow::bail!(
            "refusing to remove the state lock without --force\n\
             Removing a lock that a live stead process holds lets two runs write the state at once.\n\
             Run 'stead state lock-info' to see who holds it; if that process is gone, run \
             'stead state unlock --force'."
        );
    }
    let Some(report) = lock::force_unlock(&ctx.layout)? else {
        if ctx.json {
            print_json(&json!({ "removed": false, "locked": false }));
        } else {
            outln!("State is not locked");
        }
        return Ok(ExitCode::SUCCESS);
    };
    if ctx.json {
        print_json(&json!({
            "removed": true,
            "holder": report.info,
            "holder_alive": report.holder_alive,
            "raw_content": if report.info.is_none() { Some(&report.content) } else { None },
        }));
        return Ok(ExitCode::SUCCESS);
    }
    match &report.info {
        Some(info) => outln!(
            "{} Removed the state lock held by PID {} ({} on {}, user {}, acquired {})",
            ctx.out.green("✓"),
            info.machine.pid,
            info.operation,
            info.machine.hostname,
            info.machine.user,
            ago(info.created_at, Utc::now()),
        ),
        None => outln!(
            "{} Removed an unreadable lock file (it held {:?})",
            ctx.out.green("✓"),
            report.content.chars().take(200).collect::<String>()
        ),
    }
    if report.holder_alive {
        ctx.warn(
            "a live process still held this lock; its run is no longer protected from \
             concurrent changes.",
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// With `lock_type = hybrid`, `unlock --force` removes the remote locks
/// too: the lineage's, and on etcd every machine's.
fn unlock_remote(ctx: &Context) -> Result<()> {
    let config = ctx.lock_config().unwrap_or_default();
    if config.lock_type != LockType::Hybrid {
        return Ok(());
    }
    let Some(locker) = ctx.locker() else {
        return Ok(());
    };
    let removed = match locker.force_unlock() {
        Ok(removed) => removed,
        Err(e) => {
            ctx.warn(&format!("could not remove the remote lock: {e}"));
            return Ok(());
        }
    };
    if ctx.json {
        return Ok(());
    }
    for holder in &removed {
        print_removed(ctx, locker.remote(), holder);
    }
    Ok(())
}

/// `unlock --force --machine MACHINE`: only the remote lock MACHINE holds.
fn unlock_machine(ctx: &Context, who: &str) -> Result<ExitCode> {
    let config = ctx.lock_config().unwrap_or_default();
    if config.lock_type != LockType::Hybrid {
        anyhow::bail!(
            "--machine removes a remote lock, and this machine's lock_type is '{}': it takes none\n\
             Run 'stead state unlock --force' to remove this machine's own state lock.",
            config.lock_type.as_str()
        );
    }
    let Some(locker) = ctx.locker() else {
        anyhow::bail!(
            "the config repo has no remote, so there is no remote lock to remove\n\
             Run 'stead state lock-info' to see the locks there are."
        );
    };
    let mut removed = Vec::new();
    for holder in locker.holders()? {
        if held_by(&holder, who) && locker.force_remove(&holder)? {
            removed.push(holder);
        }
    }
    if ctx.json {
        let locks: Vec<_> = removed
            .iter()
            .map(|h| json!({"ref": locker.place_of(h), "holder": h.info}))
            .collect();
        print_json(&json!({ "removed": !removed.is_empty(), "remote_locks_removed": locks }));
    } else if removed.is_empty() {
        outln!("No remote lock is held by '{}'", crate::output::clean(who));
    } else {
        for holder in &removed {
            print_removed(ctx, locker.remote(), holder);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether `holder` is machine `who`'s, named as `remove-machine` names it.
fn held_by(holder: &RemoteHolder, who: &str) -> bool {
    holder
        .info
        .as_ref()
        .is_some_and(|i| super::names_machine(who, &i.machine.id, &i.machine.hostname))
}

/// One line for a removed remote lock: where, and whose it was.
fn print_removed(ctx: &Context, remote: &str, holder: &RemoteHolder) {
    let who = holder
        .info
        .as_ref()
        .map(|i| {
            format!(
                " held by PID {} ({} on {}, acquired {})",
                i.machine.pid,
                i.operation,
                i.machine.hostname,
                ago(i.created_at, Utc::now())
            )
        })
        .unwrap_or_default();
    let place = holder
        .place
        .as_ref()
        .map(|p| format!(" ({p})"))
        .unwrap_or_default();
    outln!(
        "{} Removed the remote lock on '{remote}'{place}{who}",
        ctx.out.green("✓")
    );
}
