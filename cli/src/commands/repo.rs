//! What the many-machine commands share: opening the config repo, fetching,
//! comparing this machine with the remote, printing conflicts, and the step
//! that makes the local state and the repo's record agree.

use std::process::ExitCode;

use anyhow::{Context as _, Result};
use chrono::Utc;
use stead_lib::lock::LockGuard;
use stead_lib::state::State;
use stead_lib::sync::git::{Git, GitError, MergeOutcome, Upstream};
use stead_lib::sync::repo::{self, Records};
use stead_lib::sync::shared::{self, Comparison, SHARED_RECORD_PATH, Severity, SharedRecord};

use crate::context::Context;
use crate::output::outln;

/// Exit code of `state check-conflicts` when there are conflicts (as drift's).
pub const EXIT_CONFLICTS: u8 = super::drift::EXIT_DRIFT;

/// The config repo of this machine and where it syncs with.
pub struct Repo {
    pub git: Git,
    pub up: Upstream,
}

impl Repo {
    /// `<remote>/<branch>`, for messages.
    pub fn remote_branch(&self) -> String {
        format!("{}/{}", self.up.remote, self.up.branch)
    }
}

/// This machine's state, loaded under the lock; says to run `init --repo`
/// when there is none.
pub fn load_state(ctx: &Context, guard: &LockGuard) -> Result<State> {
    ctx.load_state_locked(guard)?.ok_or_else(|| {
        anyhow::anyhow!(
            "no state found at {}\nRun 'stead init --repo URL' to join your config repo.",
            ctx.store.path().display()
        )
    })
}

/// Makes sure a merge can start: no git merge in progress, and no
/// uncommitted change to the record's working copy. A working copy that a
/// stead run wrote and did not get to commit (it was killed) is committed
/// here: it is a valid record of the same lineage that keeps everything
/// HEAD's has. Anything else is refused, and nothing changes.
pub fn prepare_for_merge(ctx: &Context, repo: &Repo) -> Result<()> {
    if repo.git.rev_exists("MERGE_HEAD")? {
        anyhow::bail!(
            "a git merge is in progress in {}\n\
             Nothing was changed. Finish it (edit the conflicted files, git add, git commit) \
             or abort it (git merge --abort), then run the command again.",
            repo.git.root().display()
        );
    }
    if repo.git.is_clean(&[SHARED_RECORD_PATH])? {
        return Ok(());
    }
    let refuse = || {
        anyhow::anyhow!(
            "{} has changes that are not committed\n\
             Nothing was changed. Commit them ('stead commit -m MSG') or discard them \
             ('git -C {} checkout -- {}'), then run the command again.",
            repo.git.root().join(SHARED_RECORD_PATH).display(),
            repo.git.root().display(),
            SHARED_RECORD_PATH
        )
    };
    let working = repo::read_working(&repo.git).map_err(|_| refuse())?;
    let head = match repo.git.head()? {
        Some(h) => repo::read_at(&repo.git, &h)?,
        None => None,
    };
    let forward = match (&working, &head) {
        (Some(w), Some(h)) => w.keeps_all_of(h),
        (Some(_), None) => true,
        _ => false,
    };
    if !forward {
        return Err(refuse());
    }
    ctx.note(&format!(
        "Committing the record an interrupted stead run left uncommitted in {}.",
        repo.git.root().display()
    ));
    commit_record(
        &repo.git,
        &[],
        "stead: the record an interrupted run left uncommitted",
    )?;
    Ok(())
}

/// Merges the remote branch into HEAD when it has commits HEAD lacks (the
/// record through the merge driver). `Some(files)`: git stopped on
/// conflicts in those files and the merge is left for the user to finish.
pub fn merge_remote(repo: &Repo, records: &Records, what: &str) -> Result<Option<Vec<String>>> {
    if !records.remote_has_news(&repo.git)? {
        return Ok(None);
    }
    let message = format!("{what}: merge {}", repo.remote_branch());
    match repo.git.merge(&repo.up.tracking_ref, &message)? {
        MergeOutcome::Conflicts(files) => Ok(Some(files)),
        _ => Ok(None),
    }
}

/// Opens the config repo recorded for this machine (or --config) as a git
/// work tree; says what to run when it is not one.
pub fn open_git(ctx: &Context, state: &State) -> Result<Git> {
    let dir = ctx.config_dir(Some(state))?;
    Git::open(&dir).map_err(|e| match e {
        GitError::NotARepo { .. } => anyhow::anyhow!(
            "the config repo {} is not a git repository, so there is nothing to sync with\n\
             Run 'stead init --repo URL' to clone your config repo and join its lineage.",
            dir.display()
        ),
        e => e.into(),
    })
}

/// Opens the config repo recorded for this machine (or --config) and its
/// upstream; says what to run when there is none.
pub fn open(ctx: &Context, state: &State) -> Result<Repo> {
    with_upstream(open_git(ctx, state)?)
}

/// The repo with the upstream of its current branch, which must have one.
pub fn with_upstream(git: Git) -> Result<Repo> {
    let up = git.upstream()?.ok_or_else(|| {
        anyhow::anyhow!(
            "the config repo {} has no remote to sync with (or HEAD is detached)\n\
             Add one with 'git -C {} remote add origin URL', or check out a branch.",
            git.root().display(),
            git.root().display()
        )
    })?;
    Ok(Repo { git, up })
}

/// Fetches; with `strict`, an unreachable remote is an error, else a
/// warning and the last fetched copy is used. Returns whether it fetched.
pub fn fetch(ctx: &Context, repo: &Repo, strict: bool) -> Result<bool> {
    match repo.git.fetch(&repo.up.remote) {
        Ok(()) => Ok(true),
        Err(GitError::Unreachable { reason, .. }) if !strict => {
            ctx.warn(&format!(
                "Cannot reach remote repository: {reason}\n\
                 Comparing with what was last fetched from '{}'.",
                repo.up.remote
            ));
            Ok(false)
        }
        Err(GitError::Unreachable { reason, .. }) => anyhow::bail!(
            "Cannot reach remote repository: {reason}\n\
             Nothing was changed; this machine's record is safe here. Run the command again when the connection is restored."
        ),
        Err(e) => Err(e.into()),
    }
}

/// What `sync` and `state resolve` start with: the repo (merge driver in
/// place, nothing in the way of a merge), freshly fetched, and how this
/// machine compares with the remote (`drift`: see [`compare`]). A machine
/// removed from the lineage is refused here.
pub fn begin_merge(
    ctx: &Context,
    state: &State,
    drift: bool,
) -> Result<(Repo, Records, Comparison)> {
    let repo = open(ctx, state)?;
    ensure_merge_driver(&repo.git)?;
    prepare_for_merge(ctx, &repo)?;
    fetch(ctx, &repo, true)?;
    let (records, comparison) = compare(ctx, &repo, state, drift)?;
    refuse_if_retired(
        &repo.git,
        state,
        &[records.head.as_ref(), records.remote.as_ref()],
    )?;
    Ok((repo, records, comparison))
}

/// The copies of the record and how this machine compares with the remote;
/// with `drift`, managed files are read too and drift is listed (LOW).
pub fn compare(
    ctx: &Context,
    repo: &Repo,
    state: &State,
    drift: bool,
) -> Result<(Records, Comparison)> {
    let records = repo::read_records(&repo.git, &repo.up)?;
    let drift = if drift {
        super::drift::drifted(ctx, state)
    } else {
        Vec::new()
    };
    let comparison = shared::compare(
        state,
        records.head.as_ref(),
        records.remote.as_ref(),
        records.base.as_ref(),
        &drift,
    );
    Ok((records, comparison))
}

/// Refuses to go on for a machine another machine removed from the lineage.
pub fn refuse_if_retired(git: &Git, state: &State, copies: &[Option<&SharedRecord>]) -> Result<()> {
    let me = &state.machine.id;
    if copies.iter().flatten().any(|r| r.is_retired(me)) {
        anyhow::bail!(
            "this machine ({}, {me}) was removed from the lineage by another machine ('stead state remove-machine')\n\
             Nothing was changed. To use it again, run 'stead init --repo {} --path {}': it rejoins under a new machine id.",
            state.machine.hostname,
            state.repo_url.as_deref().unwrap_or("URL"),
            git.root().display()
        );
    }
    Ok(())
}

/// The severity's mark.
pub fn mark(severity: Severity) -> &'static str {
    match severity {
        Severity::High => "🔴",
        Severity::Medium => "🟡",
        Severity::Low => "🟢",
    }
}

/// The numbered conflict list under its heading.
pub fn print_conflicts(ctx: &Context, comparison: &Comparison) {
    outln!("{}", ctx.out.yellow("⚠️  State Conflicts Detected"));
    outln!();
    for (i, c) in comparison.conflicts.iter().enumerate() {
        outln!("{}. {} {}", i + 1, mark(c.severity), c.message());
    }
}

/// The four ways out, as commands.
pub const RESOLUTIONS: [(&str, &str); 4] = [
    (
        "stead state resolve --use-local",
        "keep this machine's values on every clash",
    ),
    (
        "stead state resolve --use-remote",
        "take the remote's values on every clash, then 'stead apply'",
    ),
    (
        "stead state resolve --merge",
        "merge field by field (newest times, remote checksums on a clash)",
    ),
    (
        "stead state resolve --manual",
        "edit the merged record in $EDITOR before it is installed",
    ),
];

pub fn print_resolutions() {
    outln!("\nResolve with one of:");
    for (cmd, what) in RESOLUTIONS {
        outln!("  {cmd:<34} {what}");
    }
}

/// Makes the local state and the working copy of the record agree on
/// `target` (a record that already holds everything this machine knows):
/// the local state takes its lineage, members, history and this machine's
/// entry, at its serial; then the working copy is `target` with the local
/// state folded in. `operation` names the local write when it is one of its
/// own (a merge or resolve); taking a record as is (`None`) is not.
///
/// Returns the local state as written and the record as written.
pub fn settle(
    ctx: &Context,
    guard: &LockGuard,
    repo: &Repo,
    state: State,
    target: &SharedRecord,
    operation: Option<&str>,
    remote_commit: Option<&str>,
) -> Result<(State, SharedRecord)> {
    let mut next = shared::adopt(&state, target);
    let changed = next.lineage.id != state.lineage.id
        || next.lineage.machines != state.lineage.machines
        || kept_history(ctx, &next) != kept_history(ctx, &state)
        || next.active_profile != state.active_profile
        || next.config_path != state.config_path
        || next.checksums != state.checksums;
    let takes_serial = operation.is_none() && target.lineage.serial > state.lineage.serial;
    let state = if takes_serial || changed || operation.is_some() {
        // Taking a newer record as is keeps its serial, so both sides agree
        // on it; anything of this machine's own is a write of its own.
        let (serial, entry) = if takes_serial {
            (target.lineage.serial, None)
        } else {
            (
                target.lineage.serial.max(state.lineage.serial + 1),
                Some(operation.unwrap_or("sync")),
            )
        };
        next.last_sync = Some(Utc::now());
        next.sync.base_serial = Some(serial);
        next.sync.base_commit = remote_commit.map(str::to_string);
        next.lineage.git_commit = remote_commit.map(|c| c.chars().take(12).collect());
        ctx.store.commit_at(guard, &mut next, entry, serial)?;
        next
    } else {
        state
    };
    let record = shared::fold(Some(target), &state);
    write_if_changed(&repo.git, &record)?;
    Ok((state, record))
}

/// The ids of the history entries a write would keep (the newest, up to
/// the cap). The shared record keeps every entry, so comparing whole
/// histories would find news in every sync once it outgrows the cap.
pub fn kept_history<'a>(ctx: &Context, state: &'a State) -> Vec<&'a str> {
    let mut ids: Vec<&str> = state.history.iter().map(|e| e.id.as_str()).collect();
    let excess = ids.len().saturating_sub(ctx.store.history_limit());
    ids.drain(..excess);
    ids
}

/// Replaces the working copy when it differs.
pub fn write_if_changed(git: &Git, record: &SharedRecord) -> Result<bool> {
    if repo::read_working(git)?.as_ref() == Some(record) {
        return Ok(false);
    }
    repo::write_working(git, record)?;
    Ok(true)
}

/// Stages the record and commits it (`None`: nothing to commit).
pub fn commit_record(git: &Git, extra: &[&str], message: &str) -> Result<Option<String>> {
    let mut paths = vec![SHARED_RECORD_PATH];
    if git.root().join(".gitattributes").exists() {
        paths.push(".gitattributes");
    }
    paths.extend_from_slice(extra);
    git.add(&paths)?;
    Ok(git.commit(message)?)
}

/// Routes the record to stead's merge driver in this clone.
pub fn ensure_merge_driver(git: &Git) -> Result<bool> {
    let exe = std::env::current_exe().context("cannot tell where the stead program is")?;
    Ok(repo::install_merge_driver(git, &exe)?)
}

/// A text conflict in other repo files: what to run to finish, then
/// `rerun` (the command that stopped, so its own choice still applies).
pub fn report_git_conflicts(ctx: &Context, files: &[String], rerun: &str) -> Result<ExitCode> {
    outln!(
        "{} Git merge stopped on conflicts in other files of the config repo:",
        ctx.out.red("✗")
    );
    for f in files {
        outln!("  {f}");
    }
    outln!(
        "\nNothing was applied: stead never applies a conflicted tree.\n\
         Finish the merge, then run the command again:\n  \
         edit the files, then: git add <files> && git commit\n  \
         {rerun}\n\
         Or go back to where you were: git merge --abort"
    );
    Ok(ExitCode::FAILURE)
}
