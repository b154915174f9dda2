//! `stead state ...`: read the state record and manage its lock.

use crate::output::outln;
use std::process::ExitCode;

use anyhow::Result;
use chrono::Utc;
use serde_json::json;
use stead_lib::lock::{self, LockConfig, LockInfo, LockStatus, LockType, ago};
use stead_lib::state::{Loaded, StateError};
use stead_lib::sync::backend::RemoteHolder;

use crate::context::Context;
use crate::output::print_json;

/// `stead state version`.
pub fn version(ctx: &Context) -> Result<ExitCode> {
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

/// `stead state history [--limit N]`: newest first.
pub fn history(ctx: &Context, limit: Option<usize>) -> Result<ExitCode> {
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
        .and_then(|dir| stead_lib::sync::open(&dir).ok())
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
        outln!("No history yet.");
        return Ok(ExitCode::SUCCESS);
    }
    let width = entries.iter().map(|e| e.operation.len()).max().unwrap_or(0);
    for e in entries {
        outln!(
            "{}. {:<width$}  {}  {}  {}",
            e.serial,
            e.operation,
            e.timestamp.format("%Y-%m-%d %H:%M:%S"),
            host_of(&e.machine_id),
            e.user,
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `stead state lock-info`.
pub fn lock_info(ctx: &Context) -> Result<ExitCode> {
    let config = ctx.lock_config()?;
    let status = lock::inspect(&ctx.layout, &config)?;
    let remote = remote_view(ctx, &config);
    if ctx.json {
        let (name, info, overdue, reason, content) = match &status {
            LockStatus::Unlocked => ("unlocked", None, false, None, None),
            LockStatus::Held { info, overdue } => ("held", Some(info), *overdue, None, None),
            LockStatus::HeldUnreadable { content } => {
                ("held_unreadable", None, false, None, Some(content))
            }
            LockStatus::Stale { info, reason } => {
                ("stale", info.as_ref(), false, Some(reason), None)
            }
        };
        print_json(&json!({
            "lock_type": config.lock_type,
            "remote_lock": remote.as_ref().map(RemoteView::to_json),
            "locked": !matches!(status, LockStatus::Unlocked),
            "status": name,
            "overdue": overdue,
            "stale_reason": reason,
            "holder": info,
            "raw_content": content,
            "lock_file": ctx.layout.lock_file(),
        }));
        return Ok(ExitCode::SUCCESS);
    }
    outln!("Lock type: {}", config.lock_type.as_str());
    match status {
        LockStatus::Unlocked => outln!("State is not locked"),
        LockStatus::Held { info, overdue } => {
            outln!("State is locked\n");
            print_holder(&info);
            if overdue {
                outln!(
                    "\n{} the lock is older than its timeout ({} s), but its holder is alive, \
                     so it is not broken.",
                    ctx.out.yellow("Overdue:"),
                    config.timeout
                );
            }
        }
        LockStatus::HeldUnreadable { content } => {
            outln!("State is locked by a live process, but the lock file cannot be read:");
            outln!("  {content:?}");
        }
        LockStatus::Stale { info, reason } => {
            outln!("State is locked ({})\n", ctx.out.yellow("STALE"));
            if let Some(info) = &info {
                print_holder(info);
                outln!();
            }
            outln!("Stale: {reason}.");
            if config.detect_stale {
                outln!(
                    "The next command that takes the lock removes it, or run \
                     'stead state unlock --force' now."
                );
            } else {
                outln!("Stale detection is off; run 'stead state unlock --force' to remove it.");
            }
        }
    }
    if let Some(remote) = &remote {
        outln!();
        remote.print(ctx, config.timeout);
    }
    Ok(ExitCode::SUCCESS)
}

/// The remote half of a hybrid lock, as read now.
enum RemoteView {
    /// No config repo with a remote to lock.
    NoRemote,
    /// The remote could not be read.
    Unreachable {
        remote: String,
        place: String,
        reason: String,
    },
    /// Nobody holds it.
    Free { remote: String, place: String },
    /// Someone holds it.
    Held {
        remote: String,
        place: String,
        holder: Box<RemoteHolder>,
    },
}

fn remote_view(ctx: &Context, config: &LockConfig) -> Option<RemoteView> {
    if config.lock_type != LockType::Hybrid {
        return None;
    }
    let Some(locker) = ctx.locker() else {
        return Some(RemoteView::NoRemote);
    };
    let remote = locker.remote().to_string();
    let place = locker.place().to_string();
    Some(match locker.inspect() {
        Ok(None) => RemoteView::Free { remote, place },
        Ok(Some(holder)) => RemoteView::Held {
            remote,
            place,
            holder: Box::new(holder),
        },
        Err(e) => RemoteView::Unreachable {
            remote,
            place,
            reason: e.to_string(),
        },
    })
}

impl RemoteView {
    fn to_json(&self) -> serde_json::Value {
        match self {
            RemoteView::NoRemote => json!({"status": "no_remote"}),
            RemoteView::Unreachable { remote, reason, .. } => {
                json!({"status": "unreachable", "remote": remote, "reason": reason})
            }
            RemoteView::Free { remote, .. } => json!({"status": "unlocked", "remote": remote}),
            RemoteView::Held {
                remote,
                place,
                holder,
            } => json!({
                "status": "held", "remote": remote, "ref": place,
                "commit": holder.revision, "holder": holder.info,
                "raw_content": if holder.info.is_none() { Some(&holder.raw) } else { None },
            }),
        }
    }

    fn print(&self, ctx: &Context, timeout: u64) {
        match self {
            RemoteView::NoRemote => outln!(
                "Remote lock: none (the config repo has no git remote; hybrid works as local)"
            ),
            RemoteView::Unreachable {
                remote,
                place,
                reason,
            } => {
                outln!("Remote lock ({remote} {place}): unknown, {reason}")
            }
            RemoteView::Free { remote, place } => {
                outln!("Remote lock ({remote} {place}): not locked")
            }
            RemoteView::Held {
                remote,
                place,
                holder,
            } => {
                outln!("Remote lock ({remote} {place}): locked\n");
                match &holder.info {
                    Some(info) => {
                        print_holder(info);
                        if holder
                            .age(Utc::now())
                            .is_some_and(|a| a.num_seconds() >= timeout as i64)
                        {
                            outln!(
                                "\n{} it is older than the timeout ({timeout} s): the next machine that needs the lock breaks it.",
                                ctx.out.yellow("Expired:")
                            );
                        }
                    }
                    None => outln!("  unreadable content: {:?}", holder.raw),
                }
            }
        }
    }
}

fn print_holder(info: &LockInfo) {
    let short: String = info.machine.id.chars().take(8).collect();
    outln!("Operation: {}", info.operation);
    outln!("Machine: {} ({short}...)", info.machine.hostname);
    outln!("User: {}", info.machine.user);
    outln!("PID: {}", info.machine.pid);
    outln!(
        "Acquired: {} ({})",
        ago(info.created_at, Utc::now()),
        info.created_at.format("%Y-%m-%d %H:%M:%S UTC")
    );
    outln!("Expected duration: {} s", info.expected_duration_seconds);
    if let Some(reason) = &info.reason {
        outln!("Reason: {reason}");
    }
    outln!("Lock ID: {}", info.id);
}

/// `stead state unlock [--force]`.
pub fn unlock(ctx: &Context, force: bool) -> Result<ExitCode> {
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

/// With `lock_type = hybrid`, `unlock --force` removes the remote lock too.
fn unlock_remote(ctx: &Context) -> Result<()> {
    let config = ctx.lock_config().unwrap_or_default();
    if config.lock_type != LockType::Hybrid {
        return Ok(());
    }
    let Some(locker) = ctx.locker() else {
        return Ok(());
    };
    match locker.force_unlock() {
        Ok(Some(holder)) => {
            let who = holder
                .info
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
            if !ctx.json {
                outln!(
                    "{} Removed the remote lock on '{}'{who}",
                    ctx.out.green("✓"),
                    locker.remote()
                );
            }
        }
        Ok(None) => {}
        Err(e) => ctx.warn(&format!("could not remove the remote lock: {e}")),
    }
    Ok(())
}

/// `stead state migrate [--no-backup]`.
pub fn migrate(ctx: &Context, backup: bool) -> Result<ExitCode> {
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
            } else {
                outln!(
                    "State is already at version {}; nothing to migrate.",
                    state.version
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        Some(Loaded::Legacy { .. }) => {}
    }
    let guard = ctx.lock("migrate", None)?;
    let (_, report) = ctx.migrate_locked(&guard, backup)?;
    guard.release()?;
    let Some(report) = report else {
        outln!("State is already at version 2; nothing to migrate.");
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
        outln!(
            "  Not carried over (kept in the backup): {}",
            report.dropped_fields.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `stead state journal`: the records of the last run in the journal (after
/// a clean run, the journal is compacted to that run; after a crash it also
/// holds the interrupted one, which is shown instead).
pub fn journal(ctx: &Context) -> Result<ExitCode> {
    use stead_lib::journal;
    let path = ctx.layout.state_dir().join(journal::JOURNAL_FILE);
    let loaded = journal::load(&path, &ctx.layout.backups_dir())?;
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
            r.at.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S%.3f"),
            state,
            r.action,
            r.resource
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
