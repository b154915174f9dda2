//! `stead state lock-info`: who holds the state lock (and with `hybrid`,
//! the remote locks: the lineage's, and on etcd each machine's), with the
//! proof when it is stale.

use crate::context::Context;
use crate::output::outln;
use crate::output::print_json;
use anyhow::Result;
use chrono::Utc;
use serde_json::json;
use std::process::ExitCode;
use stead_lib::lock::{self, LockConfig, LockInfo, LockStatus, LockType, ago};
use stead_lib::sync::backend::{LockScope, RemoteHolder};

/// `stead state lock-info`.
pub fn run(ctx: &Context) -> Result<ExitCode> {
    let config = ctx.lock_config()?;
    let status = lock::inspect(&ctx.layout, &config)?;
    let remote = remote_view(ctx, &config);
    let offline = shared_record(ctx)
        .map(|r| ctx.offline_machines(&r))
        .unwrap_or_default();
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
            "offline_machines": offline,
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
    ctx.print_offline(&offline);
    Ok(ExitCode::SUCCESS)
}

/// The config repo's copy of the shared record, as last synced (read from
/// the clone, no network); `None` when there is none.
fn shared_record(ctx: &Context) -> Option<stead_lib::sync::shared::SharedRecord> {
    let state = match ctx.store.load() {
        Ok(Some(stead_lib::state::Loaded::Current(state))) => Some(*state),
        _ => None,
    };
    let dir = ctx.config_dir(state.as_ref()).ok()?;
    let backend = stead_lib::sync::open_with(&dir, &ctx.sync_options()).ok()?;
    backend.read_working().ok().flatten()
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
    /// Nobody holds a lock.
    Free { remote: String, place: String },
    /// Locks are held: the lineage's first, then (etcd) the machines'.
    Held { remote: String, held: Vec<HeldSeen> },
}

/// One held remote lock.
struct HeldSeen {
    /// Where it lives (a ref, a key).
    place: String,
    holder: RemoteHolder,
    /// Seconds left on the lease it is bound to (etcd); `None`: no lease.
    lease_left: Option<u64>,
}

impl HeldSeen {
    fn to_json(&self) -> serde_json::Value {
        let holder = &self.holder;
        json!({
            "ref": self.place,
            "scope": match &holder.scope {
                LockScope::Lineage => "lineage",
                LockScope::Machine(_) => "machine",
            },
            "commit": holder.revision, "holder": holder.info,
            "lease_ttl_left": self.lease_left,
            "raw_content": if holder.info.is_none() { Some(&holder.raw) } else { None },
        })
    }
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
    Some(match locker.holders() {
        Ok(holders) if holders.is_empty() => RemoteView::Free { remote, place },
        Ok(holders) => RemoteView::Held {
            remote,
            held: holders
                .into_iter()
                .map(|holder| HeldSeen {
                    place: locker.place_of(&holder),
                    lease_left: locker.lease_left(&holder),
                    holder,
                })
                .collect(),
        },
        Err(e) => RemoteView::Unreachable {
            remote,
            place,
            reason: e.to_string(),
        },
    })
}

impl RemoteView {
    /// The first held lock's fields at the top (the one lock of git), and
    /// every held lock under `held`.
    fn to_json(&self) -> serde_json::Value {
        match self {
            RemoteView::NoRemote => json!({"status": "no_remote"}),
            RemoteView::Unreachable { remote, reason, .. } => {
                json!({"status": "unreachable", "remote": remote, "reason": reason})
            }
            RemoteView::Free { remote, .. } => {
                json!({"status": "unlocked", "remote": remote, "held": []})
            }
            RemoteView::Held { remote, held } => {
                let mut doc = held.first().map_or(json!({}), HeldSeen::to_json);
                doc["status"] = json!("held");
                doc["remote"] = json!(remote);
                doc["held"] = held.iter().map(HeldSeen::to_json).collect();
                doc
            }
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
            RemoteView::Held { remote, held } => {
                for (i, seen) in held.iter().enumerate() {
                    if i > 0 {
                        outln!();
                    }
                    print_remote_holder(ctx, remote, seen, timeout);
                }
            }
        }
    }
}

/// One held remote lock: where, who, and its lease or its age.
fn print_remote_holder(ctx: &Context, remote: &str, seen: &HeldSeen, timeout: u64) {
    let HeldSeen {
        place,
        holder,
        lease_left,
    } = seen;
    outln!("Remote lock ({remote} {place}): locked\n");
    match &holder.info {
        Some(info) if lease_left.is_some() => {
            print_holder(info);
            outln!(
                "Lease: {} s left (kept alive while its holder runs; it ends with its holder, never for its age)",
                lease_left.unwrap_or(0)
            );
        }
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
            } else if holder
                .age(ctx.now())
                .is_some_and(|a| a.num_hours() >= stead_lib::sync::shared::OFFLINE_AFTER_HOURS)
            {
                outln!(
                    "\n{} its machine has not been seen for {} hours: the next machine that needs the lock breaks it.",
                    ctx.out.yellow("Offline:"),
                    stead_lib::sync::shared::OFFLINE_AFTER_HOURS
                );
            }
        }
        None => outln!("  unreadable content: {:?}", holder.raw),
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
        crate::output::utc(info.created_at)
    );
    outln!("Expected duration: {} s", info.expected_duration_seconds);
    if let Some(reason) = &info.reason {
        outln!("Reason: {}", crate::output::clean(reason));
    }
    if let Some(serial) = info.state_serial {
        outln!("State serial: {serial}");
    }
    outln!("Lock ID: {}", info.id);
}
