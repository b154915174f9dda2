//! `stead state resolve`: settle the conflicts with one strategy
//! (`--use-local`, `--use-remote`, `--merge`, `--manual`) and commit.

use crate::commands::repo;
use crate::context::Context;
use crate::output::{outln, print_json};
use anyhow::{Context as _, Result};
use serde_json::json;
use std::process::ExitCode;
use stead_lib::sync::shared::{self, SharedRecord, Strategy};

#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct ResolveArgs {
    /// This machine's copy wins every clash, and its own entry is the local one
    #[arg(long)]
    pub use_local: bool,

    /// The remote's copy wins every clash, and this machine takes its entry from the remote
    #[arg(long)]
    pub use_remote: bool,

    /// Field by field: higher serial, union of machines and history, newest times, remote checksums on a clash
    #[arg(long)]
    pub merge: bool,

    /// Edit the merged record in $EDITOR; it is installed only if it is valid
    #[arg(long)]
    pub manual: bool,
}

pub fn run(ctx: &Context, args: &ResolveArgs) -> Result<ExitCode> {
    let (flag, strategy) = if args.use_local {
        ("--use-local", Strategy::UseLocal)
    } else if args.use_remote {
        ("--use-remote", Strategy::UseRemote)
    } else if args.merge {
        ("--merge", Strategy::Merge)
    } else {
        ("--manual", Strategy::Merge)
    };
    let guard = ctx.lock_for_sync("resolve")?;
    let state = repo::load_state(ctx, &guard)?;
    let backend = repo::open(ctx, &state)?;
    let session = repo::session(ctx, backend.as_ref());
    session.begin(&repo::stead_exe()?, &mut repo::note(ctx))?;
    let (records, comparison) = session.compare_for_merge(&state, &[])?;
    let Some(remote) = comparison.remote.clone() else {
        outln!(
            "Nothing to resolve: {} has no shared record yet. Run 'stead sync' to push this machine's.",
            backend.remote_branch()
        );
        guard.release()?;
        return Ok(ExitCode::SUCCESS);
    };
    if comparison.conflicts.is_empty() {
        guard.release()?;
        if ctx.json {
            print_json(&json!({
                "strategy": flag.trim_start_matches("--"), "status": "nothing-to-resolve",
                "serial": state.lineage.serial, "commit": null,
            }));
        } else {
            outln!(
                "Nothing to resolve: this machine's record and {} do not conflict (serial {}).\n\
                 Nothing was changed. Run 'stead sync' to exchange them.",
                backend.remote_branch(),
                state.lineage.serial
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let me = state.machine.id.clone();
    let mut resolved = shared::merge(
        comparison.base.as_ref(),
        &comparison.local,
        &remote,
        Some(&me),
        strategy,
    );
    if args.manual {
        resolved = edit(ctx, &resolved, &comparison.local, &remote, &me)?;
    }

    // The trees' histories join first; the record is installed on top.
    let rerun = format!("stead state resolve {flag}");
    if let Some(files) = session.update_tree(&records, &rerun)? {
        guard.release()?;
        return repo::report_tree_conflicts(ctx, backend.as_ref(), &files, &rerun);
    }
    // This machine's own profile and path are taken from elsewhere only
    // where they can be used here (the tree is the merged one now).
    let declared = declared_profiles(ctx, backend.root());
    let kept = shared::keep_usable_own(
        &mut resolved,
        &comparison.local,
        &me,
        &|p| declared.as_ref().is_some_and(|d| d.contains(p)),
        &|p| std::path::Path::new(p).is_dir(),
    );
    let (state, record) = session.settle(
        &guard,
        state,
        &resolved,
        Some("resolve"),
        records.remote_rev.as_ref(),
    )?;
    let commit = session.commit_record(
        &[],
        &format!(
            "stead state resolve {flag}: {} at serial {}",
            state.machine.hostname, record.lineage.serial
        ),
    )?;
    guard.release()?;
    if ctx.json {
        print_json(&json!({
            "strategy": flag.trim_start_matches("--"), "status": "resolved",
            "serial": record.lineage.serial, "machines": record.lineage.machines,
            "history": record.history.len(), "commit": commit, "kept_own": kept,
        }));
        return Ok(ExitCode::SUCCESS);
    }
    for k in &kept {
        report_kept(ctx, k, declared.as_ref());
    }
    outln!(
        "{} Resolved with {flag}: serial {}, {} machine(s), {} history entries",
        ctx.out.green("✓"),
        record.lineage.serial,
        record.machine_count(),
        record.history.len()
    );
    if let Some(mine) = record.machines.get(&me) {
        outln!(
            "  This machine: profile {}, config {}",
            mine.active_profile.as_deref().unwrap_or("(none)"),
            mine.config_path.as_deref().unwrap_or("(none)")
        );
    }
    outln!("Committed in {}.", backend.root().display());
    if strategy == Strategy::UseRemote {
        outln!("Next: 'stead apply' to make this machine match, then 'stead sync' to share it.");
    } else {
        outln!("Next: 'stead sync' to push it (and apply).");
    }
    Ok(ExitCode::SUCCESS)
}

/// The profiles the config tree's manifest declares (`None`: it has no
/// readable manifest, so no profile from elsewhere can be checked and none
/// is taken).
fn declared_profiles(
    ctx: &Context,
    root: &std::path::Path,
) -> Option<std::collections::BTreeSet<String>> {
    stead_lib::converge::declared_profiles(root, ctx.layout.home())
        .ok()
        .flatten()
}

/// Says which of this machine's own values a resolution kept, and why.
fn report_kept(
    ctx: &Context,
    kept: &shared::KeptOwn,
    declared: Option<&std::collections::BTreeSet<String>>,
) {
    let show = |v: &Option<String>| match v.as_deref() {
        None => "(none)".to_string(),
        Some(v) => format!("'{v}'"),
    };
    let why = if kept.field == "active_profile" {
        let list = match declared {
            Some(d) if !d.is_empty() => d.iter().cloned().collect::<Vec<_>>().join(", "),
            Some(_) => "none".to_string(),
            None => "the manifest cannot be read".to_string(),
        };
        format!(
            "Kept this machine's profile {}: the remote's {} is not a profile the manifest declares (declared: {list}).",
            show(&kept.kept),
            show(&kept.refused)
        )
    } else {
        format!(
            "Kept this machine's config path {}: the remote's {} does not exist here.",
            show(&kept.kept),
            show(&kept.refused)
        )
    };
    outln!("{} {why}", ctx.out.yellow("Note:"));
}

/// Opens `$VISUAL`/`$EDITOR` (else `vi`) on a copy of `proposed` in the
/// state dir; returns the edit only if it is a valid record that keeps
/// every history entry and machine of both sides and moves the serial past
/// both. An invalid edit changes nothing.
fn edit(
    ctx: &Context,
    proposed: &SharedRecord,
    local: &SharedRecord,
    remote: &SharedRecord,
    me: &str,
) -> Result<SharedRecord> {
    let editor = super::super::editor(
        "stead state resolve --manual",
        "Set EDITOR (e.g. EDITOR=nano), or resolve with --use-local, --use-remote or --merge.",
    )?;
    let copy = ctx
        .layout
        .state_dir()
        .join(format!("resolve-{}.json", std::process::id()));
    stead_lib::fsutil::atomic_write(&copy, &shared::to_bytes(proposed), 0o600)?;
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(&copy)
        .status()
        .with_context(|| format!("cannot start the editor '{editor}'"));
    let read = std::fs::read(&copy);
    let _ = std::fs::remove_file(&copy);
    let status = status?;
    if !status.success() {
        anyhow::bail!("the editor '{editor}' exited with {status}; nothing was changed");
    }
    let bytes = read.with_context(|| format!("cannot read the edited copy {}", copy.display()))?;
    let invalid = |why: String| {
        anyhow::anyhow!(
            "the edited record is invalid: {why}\nNothing was changed. Run 'stead state resolve --manual' again."
        )
    };
    let edited = shared::parse(&bytes, "(edited)").map_err(|e| {
        invalid(match e {
            shared::SharedError::Corrupt { problem, .. } => problem,
            shared::SharedError::Newer {
                found, supported, ..
            } => format!("its version {found} is above {supported}, the highest this stead writes"),
        })
    })?;
    let floor = local
        .lineage
        .serial
        .max(remote.lineage.serial)
        .saturating_add(1);
    if edited.lineage.serial < floor {
        return Err(invalid(format!(
            "its serial {} must be at least {floor} (above both sides)",
            edited.lineage.serial
        )));
    }
    if edited.lineage.id != local.lineage.id && edited.lineage.id != remote.lineage.id {
        return Err(invalid(format!(
            "its lineage {} is neither side's ({} or {})",
            edited.lineage.id, local.lineage.id, remote.lineage.id
        )));
    }
    let lost = edited.missing_history(&[local, remote]).len();
    if lost > 0 {
        return Err(invalid(format!("it drops {lost} history entries")));
    }
    if !edited.machines.contains_key(me) {
        return Err(invalid(format!("it has no entry for this machine ({me})")));
    }
    for id in edited.machines.keys() {
        if !edited.lineage.machines.contains(id) {
            return Err(invalid(format!(
                "machine {id} has an entry but is not in lineage.machines"
            )));
        }
    }
    Ok(edited)
}
