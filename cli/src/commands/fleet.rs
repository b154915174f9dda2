//! `stead fleet ...`: the lineage's machines seen together. `stead fleet
//! status` prints one row per machine from one read of the shared record
//! (the remote's, refreshed; this clone's when the remote cannot be
//! reached); the view itself is the library's ([`stead_lib::fleet`]).

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use serde_json::json;
use stead_lib::fleet::{self, FleetMachine, FleetStatus, LockSeen, Source};
use stead_lib::lock::ago;
use stead_lib::machine;
use stead_lib::state::{Loaded, State};
use stead_lib::sync::LockScope;
use stead_lib::sync::etcd::watch::{ConfigWatch, Waited};
use stead_lib::sync::session::Note;
use stead_lib::sync::shared::{OFFLINE_AFTER_HOURS, SHARED_RECORD_PATH};

use super::repo;
use crate::context::Context;
use crate::output::{clean, outln, print_json};

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Every machine of the lineage: profile, last apply, last sync, drift
    /// count, the remote locks held, and offline after 24 hours unseen
    Status,
    /// Sync, then sync again as soon as another machine pushes a config
    /// change (an etcd watch on the lineage's config commit), and at least
    /// every --interval seconds; needs the etcd backend (docs/etcd.md)
    Watch {
        /// A sync at least this often even when nothing changed, seconds
        #[arg(long, value_name = "SECS", default_value_t = 600)]
        interval: u64,
        /// Stop after N syncs (exit 0)
        #[arg(long, value_name = "N")]
        max_runs: Option<u64>,
    },
}

/// Runs one `stead fleet` subcommand.
pub fn run(ctx: &Context, command: &FleetCommand) -> Result<ExitCode> {
    match command {
        FleetCommand::Status => status(ctx),
        FleetCommand::Watch { interval, max_runs } => watch(ctx, *interval, *max_runs),
    }
}

/// `stead fleet watch`: a sync per config change pushed by any machine of
/// the lineage (and per interval), each taking and releasing the lock as
/// `stead sync` does, so other commands run between them. A sync that fails
/// is reported and the watch goes on.
fn watch(ctx: &Context, interval: u64, max_runs: Option<u64>) -> Result<ExitCode> {
    let state: Option<State> = match ctx.store.load() {
        Ok(Some(Loaded::Current(s) | Loaded::Normalised { state: s, .. })) => Some(*s),
        _ => None,
    };
    let dir = ctx.config_dir(state.as_ref())?;
    let Some(backend) = stead_lib::sync::etcd::open(&dir, &ctx.sync_options())? else {
        anyhow::bail!(
            "the config repo {} keeps its shared record in git, and 'stead fleet watch' waits on etcd\n\
             Nothing was changed. Use 'stead watch' to converge on local changes, run 'stead sync' from a timer, \
             or move the lineage to etcd ('stead init --etcd URL --path {}', docs/etcd.md).",
            dir.display(),
            dir.display()
        );
    };
    let mut waiter = ConfigWatch::new(backend.cluster().clone(), backend.prefix())?;
    drop(backend);
    let mut trigger = "start".to_string();
    let mut runs = 0u64;
    loop {
        runs += 1;
        let args = super::sync::SyncArgs {
            no_apply: false,
            jobs: None,
        };
        let outcome = match super::sync::run(ctx, &args) {
            Ok(code) if code == ExitCode::SUCCESS => "synced".to_string(),
            Ok(_) => "the sync stopped (see above)".to_string(),
            Err(e) => {
                ctx.warn(&format!("{e:#}"));
                "the sync failed (see above)".to_string()
            }
        };
        if ctx.json {
            print_json(&json!({
                "event": "run", "run": runs, "trigger": trigger,
                "config_commit": waiter.last().commit, "outcome": outcome,
            }));
        } else {
            outln!("fleet watch: run {runs} ({trigger}): {outcome}");
        }
        if max_runs.is_some_and(|n| runs >= n) {
            return Ok(ExitCode::SUCCESS);
        }
        trigger = match waiter.wait(std::time::Duration::from_secs(interval.max(1)))? {
            Waited::Changed { commit, relisted } => {
                let short: String = commit.chars().take(12).collect();
                if relisted {
                    format!("config changed to {short}, read again after a compaction")
                } else {
                    format!("config changed to {short}")
                }
            }
            Waited::Quiet => "interval".to_string(),
        };
    }
}

fn status(ctx: &Context) -> Result<ExitCode> {
    // Read-only: a state in an older form is read as it is, not migrated.
    let state: Option<State> = match ctx.store.load() {
        Ok(Some(Loaded::Current(s) | Loaded::Normalised { state: s, .. })) => Some(*s),
        _ => None,
    };
    let dir = ctx.config_dir(state.as_ref())?;
    let backend = stead_lib::sync::open_with(&dir, &ctx.sync_options())?;
    backend.require_remote()?;
    let session = repo::session(ctx, backend.as_ref());
    let reached = session.refresh(false, &mut |note| match note {
        Note::UsingLastFetched { reason, .. } => ctx.warn(&format!(
            "Cannot reach remote repository: {reason}\n\
             Showing the shared record as this clone last committed it; other machines may have moved on since."
        )),
        Note::CommittedLeftover { .. } => {}
    })?;
    let Some((record, source)) = fleet::read_record(backend.as_ref(), reached)? else {
        anyhow::bail!(
            "the config repo {} has no shared record ({SHARED_RECORD_PATH}) yet, here or on {}, so there is no fleet to show\n\
             Run 'stead init --repo URL' on each machine to join the config repo, then 'stead sync' to share its record.",
            dir.display(),
            backend.remote_branch()
        );
    };
    if reached && source == Source::Local {
        ctx.note(&format!(
            "{} has no shared record yet: showing this clone's. Run 'stead sync' to share it.",
            backend.remote_branch()
        ));
    }
    // The remote locks (the lineage's, and on etcd each machine's), read
    // only from a remote that was reached.
    let lock_read = if reached {
        backend
            .locker(&LockScope::Lineage)
            .map(|locker| locker.holders())
    } else {
        None
    };
    if let Some(Err(e)) = &lock_read {
        ctx.warn(&format!("cannot read the remote locks: {e}"));
    }
    let lock = match &lock_read {
        Some(Ok(holders)) => LockSeen::from(holders.as_slice()),
        _ => LockSeen::Unknown,
    };
    let me = machine::read_id(&ctx.layout.machine_id_file())
        .ok()
        .flatten()
        .unwrap_or_default();
    let now = ctx.now();
    let view = fleet::status(&record, source, lock, now, &me);
    if ctx.json {
        let mut doc = serde_json::to_value(&view)?;
        doc["remote"] = json!(backend.remote_branch());
        doc["offline_after_hours"] = json!(OFFLINE_AFTER_HOURS);
        print_json(&doc);
    } else {
        print_view(ctx, &view, &backend.remote_branch(), now);
    }
    Ok(ExitCode::SUCCESS)
}

/// The table and the lineage lock's line.
fn print_view(ctx: &Context, view: &FleetStatus, remote: &str, now: chrono::DateTime<chrono::Utc>) {
    let from = match view.source {
        Source::Remote => format!("as {remote} has it"),
        Source::Local => "as this clone last committed it".to_string(),
    };
    outln!(
        "Lineage {} (serial {}), {from}: {} machine{}",
        view.lineage_id,
        view.serial,
        view.machines.len(),
        if view.machines.len() == 1 { "" } else { "s" }
    );
    outln!();
    let when =
        |t: Option<chrono::DateTime<chrono::Utc>>| t.map_or("never".to_string(), |t| ago(t, now));
    let header = [
        "MACHINE",
        "PROFILE",
        "LAST APPLY",
        "LAST SYNC",
        "DRIFT",
        "LOCK",
        "STATE",
    ];
    let rows: Vec<[String; 7]> = view
        .machines
        .iter()
        .map(|m| {
            [
                machine_cell(m),
                m.active_profile
                    .as_deref()
                    .map_or("-".to_string(), |p| clean(p).into_owned()),
                when(m.last_apply),
                when(m.last_sync),
                m.drift.map_or("-".to_string(), |d| d.to_string()),
                m.lock.as_ref().map_or("-".to_string(), |l| {
                    format!("{}, {}", clean(&l.operation), ago(l.acquired_at, now))
                }),
                if m.offline { "offline" } else { "online" }.to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |mark: &str, cells: &[String]| {
        let mut out = format!("{mark} ");
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}"));
            }
        }
        out
    };
    outln!("{}", line(" ", &header.map(String::from)));
    for (m, row) in view.machines.iter().zip(&rows) {
        let mut text = line(if m.this_machine { "*" } else { " " }, row);
        if m.offline {
            let cut = text.len() - "offline".len();
            text = format!("{}{}", &text[..cut], ctx.out.yellow("offline"));
        }
        outln!("{text}");
    }
    outln!();
    outln!("{}", lock_line(view, now));
    outln!(
        "(* this machine; drift: managed paths that differed from the record when the machine last published; \
         offline: not seen for {OFFLINE_AFTER_HOURS} hours)"
    );
}

/// `hostname (1234abcd)`, cleaned of control characters.
fn machine_cell(m: &FleetMachine) -> String {
    let short: String = m.id.chars().take(8).collect();
    format!("{} ({short})", clean(&m.hostname))
}

/// Who holds the lineage lock, in one line.
fn lock_line(view: &FleetStatus, now: chrono::DateTime<chrono::Utc>) -> String {
    if !view.lock_known {
        return "Lineage lock: unknown (the remote could not be read)".to_string();
    }
    let Some(lock) = &view.lock else {
        return "Lineage lock: not held".to_string();
    };
    match (&lock.machine_id, &lock.operation, lock.acquired_at) {
        (Some(id), Some(op), Some(at)) => {
            let short: String = id.chars().take(8).collect();
            format!(
                "Lineage lock: held by {} ({short}) for {}, acquired {} ({})",
                clean(lock.hostname.as_deref().unwrap_or("?")),
                clean(op),
                ago(at, now),
                crate::output::utc(at)
            )
        }
        _ => {
            "Lineage lock: held, but its content cannot be read ('stead state lock-info' shows it)"
                .to_string()
        }
    }
}
