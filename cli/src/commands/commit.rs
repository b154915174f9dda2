//! `stead commit -m MSG [--push] [FILES...]`: accept drifted managed files
//! into the config repo (copied back to their `source`), write this
//! machine's record into `.stead/state.json`, commit, and optionally push.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use serde_json::json;
use stead_lib::manifest::{FileContent, Spec};
use stead_lib::resource::checksum;
use stead_lib::state::DriftStatus;
use stead_lib::sync::{Backend, check_overwrite, shared};

use super::repo;
use crate::context::Context;
use crate::output::{outln, print_json};

#[derive(Debug, clap::Args)]
pub struct CommitArgs {
    /// The commit message
    #[arg(short, long, value_name = "MSG")]
    pub message: String,

    /// Push to the remote after committing
    #[arg(long)]
    pub push: bool,

    /// Drifted managed files to accept: each is copied back to its source in the repo
    #[arg(value_name = "FILES")]
    pub files: Vec<String>,
}

pub fn run(ctx: &Context, args: &CommitArgs) -> Result<ExitCode> {
    // A commit that is not pushed touches only this clone: the local lock
    // is enough. A push takes the remote lock too, and the remote must have
    // stood still since the last sync.
    let guard = if args.push {
        ctx.lock("commit", None)?
    } else {
        ctx.lock_local("commit")?
    };
    let mut state = repo::load_state(ctx, &guard)?;
    let backend = repo::open_local(ctx, &state)?;
    // Only a push needs the remote; checked before anything changes.
    if args.push {
        backend.require_remote()?;
    }
    // A commit killed mid-write left a temp in the repo, which would be
    // committed with the rest: under the lock, a dead writer's temps go.
    for path in stead_lib::fsutil::remove_stale_temps_below(backend.root()) {
        if !ctx.json {
            outln!(
                "Removed a temp file an interrupted run left: {}",
                path.display()
            );
        }
    }
    let session = repo::session(ctx, backend.as_ref());
    let working = backend.read_working()?;
    session.refuse_if_retired(&state, &[working.as_ref()])?;
    if let Some(w) = &working
        && w.lineage.id != state.lineage.id
    {
        anyhow::bail!(
            "this machine belongs to lineage {}, but the repo's record is lineage {}\n\
             Nothing was committed. Run 'stead init --repo URL --path {}' to join the repo's lineage.",
            state.lineage.id,
            w.lineage.id,
            backend.root().display()
        );
    }

    // Every named file is checked (and the state must take a write) before
    // anything changes: a refusal leaves the tree, the repo and the state as
    // they were.
    // With no names: every drifted file that has a `source` in the repo,
    // through the same checks as named ones; the rest are said below.
    let (names, not_accepted) = if args.files.is_empty() {
        drifted_sources(ctx, &state)?
    } else {
        (args.files.clone(), Vec::new())
    };
    let plan = plan_accept(ctx, &state, backend.as_ref(), &names)?;
    if !plan.is_empty() {
        ctx.store.check_writable(&state)?;
    }
    backend.install_merge_driver(&repo::stead_exe()?)?;
    // Accept drifted files: the repo takes what is on disk.
    let accepted = copy_back(plan)?;
    if !accepted.is_empty() {
        for a in &accepted {
            state
                .checksums
                .insert(a.key.clone(), a.checksum.as_str().into());
        }
        ctx.store.commit(&guard, &mut state, "commit")?;
    }

    let mut record = shared::fold(
        working.as_ref(),
        &state,
        &session.record_key()?,
        session.history_keep(),
    );
    // A record with news carries the drift count left after the accepted
    // files. News is judged against the working copy read above (the
    // committed one, unless a killed run left it uncommitted): the repo may
    // have no remote, so the backend's copies are not asked for.
    shared::carry_drift(&mut record, working.as_ref(), &state.machine.id, || {
        Some(super::drift::drifted(ctx, &state).len() as u64)
    });
    session.write_if_changed(&record)?;
    let sources: Vec<String> = accepted
        .iter()
        .map(|a| a.repo_path.display().to_string())
        .collect();
    let source_refs: Vec<&str> = sources.iter().map(String::as_str).collect();
    let commit = session.commit_record(&source_refs, &args.message)?;
    // A failed push leaves the commit made: said so, with how to push it.
    let pushed = if args.push {
        session.publish_if_ahead().map_err(|e| (e, commit.clone()))
    } else {
        Ok(false)
    };
    guard.release()?;
    let pushed = match pushed {
        Ok(pushed) => pushed,
        Err((e, commit)) => {
            let made = match &commit {
                Some(rev) => format!(
                    "The commit {} was made in your clone ({}), but the push failed",
                    rev.as_str().chars().take(12).collect::<String>(),
                    backend.root().display()
                ),
                None => format!(
                    "Nothing new was committed; the commits your clone ({}) holds were not pushed",
                    backend.root().display()
                ),
            };
            anyhow::bail!(
                "{made}: {e}\n\
                 Nothing is lost: when {} can be reached, run 'stead sync' (or 'stead commit -m MSG --push' again) to push it.",
                backend.remote_branch()
            );
        }
    };

    if ctx.json {
        print_json(&json!({
            "commit": commit, "pushed": pushed, "serial": record.lineage.serial,
            "not_accepted": not_accepted.iter().map(|(path, why)| json!({"path": path, "why": why})).collect::<Vec<_>>(),
            "accepted": accepted.iter().map(|a| json!({"path": a.key, "source": a.repo_path})).collect::<Vec<_>>(),
        }));
        return Ok(ExitCode::SUCCESS);
    }
    for a in &accepted {
        outln!(
            "{} Accepted {} into the repo ({})",
            ctx.out.green("✓"),
            a.key,
            a.repo_path.display()
        );
    }
    for (key, why) in &not_accepted {
        outln!(
            "Still drifted, not accepted: {} ({})",
            crate::output::clean(key),
            crate::output::clean(why)
        );
    }
    match &commit {
        Some(rev) => outln!(
            "{} Committed {} (record serial {})",
            ctx.out.green("✓"),
            rev.as_str().chars().take(12).collect::<String>(),
            record.lineage.serial
        ),
        None if not_accepted.is_empty() => {
            outln!("Nothing to commit: the repo already holds this machine's record.")
        }
        None => outln!(
            "Nothing to commit: the repo already holds this machine's record, and no drifted file \
             above can be copied back to a source."
        ),
    }
    if args.push {
        if pushed {
            outln!(
                "{} Pushed to {}",
                ctx.out.green("✓"),
                backend.remote_branch()
            );
        } else {
            outln!(
                "Nothing to push: {} has everything.",
                backend.remote_branch()
            );
        }
    } else if commit.is_some() {
        outln!("Run 'stead sync' (or 'stead commit --push') to share it.");
    }
    Ok(ExitCode::SUCCESS)
}

struct Accepted {
    /// The managed path as recorded (`~/.bashrc`).
    key: String,
    /// The source file in the repo (relative to its root).
    repo_path: PathBuf,
    /// The new checksum.
    checksum: String,
}

/// A drifted path `commit` does not copy back, and why (with what to do).
type NotAccepted = (String, String);

/// For `commit -m MSG` with no names: the drifted files whose content
/// comes from a `source` in the repo (to accept, by their `~/` name), and
/// the other drifted paths with why they are not copied back.
fn drifted_sources(
    ctx: &Context,
    state: &stead_lib::state::State,
) -> Result<(Vec<String>, Vec<NotAccepted>)> {
    let drifted = super::drift::drifted(ctx, state);
    if drifted.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let (manifest, _) = ctx.load_manifest(Some(state), None)?;
    let home = ctx.layout.home();
    let mut accept = Vec::new();
    let mut others = Vec::new();
    for (key, status) in drifted {
        let target = stead_lib::manifest::expand_key(home, &key);
        let content = manifest.resources.iter().find_map(|r| match &r.spec {
            Spec::File(f) if f.path == target => Some((r.id.as_str(), &f.content)),
            _ => None,
        });
        let why = match (status, content) {
            (DriftStatus::Modified, Some((_, Some(FileContent::Source(_))))) => {
                accept.push(key);
                continue;
            }
            (DriftStatus::Modified, Some((id, Some(FileContent::Template(_))))) => format!(
                "{id} renders it from a template: edit the template, or 'stead apply' restores it"
            ),
            (DriftStatus::Modified, Some((id, Some(FileContent::Inline(_))))) => format!(
                "{id} declares its content in stead.toml: edit it there, or 'stead apply' restores it"
            ),
            (status, _) => format!("{status}: nothing to copy back; 'stead apply' restores it"),
        };
        others.push((key, why));
    }
    Ok((accept, others))
}

/// A named file that passed every check, not copied yet.
struct Planned {
    key: String,
    /// The source's absolute path.
    source: PathBuf,
    bytes: Vec<u8>,
    checksum: String,
    repo_path: PathBuf,
}

/// Checks each named drifted file and where it goes. Every name is checked
/// before anything is copied, so one bad name copies nothing.
fn plan_accept(
    ctx: &Context,
    state: &stead_lib::state::State,
    backend: &dyn Backend,
    files: &[String],
) -> Result<Vec<Planned>> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let repo_root = backend.root();
    let (manifest, _) = ctx.load_manifest(Some(state), None)?;
    let home = ctx.layout.home();
    let mut plan = Vec::new();
    for name in files {
        let target = target_path(home, name)?;
        let key = manifest.display_path(&target);
        let resource = manifest.resources.iter().find(|r| match &r.spec {
            Spec::File(f) => f.path == target,
            _ => false,
        });
        let Some(resource) = resource else {
            anyhow::bail!(
                "{name} is not a file stead manages (no file resource has path {key})\n\
                 Nothing was committed."
            );
        };
        let Spec::File(spec) = &resource.spec else {
            continue;
        };
        let source = match &spec.content {
            Some(FileContent::Source(src)) => src.clone(),
            Some(FileContent::Template(t)) => anyhow::bail!(
                "{key} cannot be copied back: {} renders it from the template {}, and a rendered file is not the template\n\
                 Edit the template instead, then run 'stead apply'. Nothing was committed.",
                resource.id,
                t.display()
            ),
            Some(FileContent::Inline(_) | FileContent::Secret(_)) => anyhow::bail!(
                "{key} cannot be copied back: {} declares its content inline in stead.toml\n\
                 Edit stead.toml instead. Nothing was committed.",
                resource.id
            ),
            None => anyhow::bail!(
                "{key} is declared absent by {}; there is nothing to copy back. Nothing was committed.",
                resource.id
            ),
        };
        let bytes =
            std::fs::read(&target).with_context(|| format!("cannot read {}", target.display()))?;
        let sum = checksum(&bytes);
        if state
            .checksums
            .get(&key)
            .is_some_and(|recorded| recorded.is(&sum))
        {
            anyhow::bail!("{key} has not drifted: it is what stead wrote. Nothing was committed.");
        }
        let repo_path = source
            .strip_prefix(repo_root)
            .map(Path::to_path_buf)
            .map_err(|_| {
                anyhow::anyhow!(
                    "the source of {key} ({}) is outside the config repo {}; nothing was committed",
                    source.display(),
                    repo_root.display()
                )
            })?;
        // The copy replaces the source: it must hold nothing uncommitted
        // (that work would be gone, with no backup) and must not be a link.
        check_overwrite(backend, &repo_path.to_string_lossy(), &key)?;
        plan.push(Planned {
            key,
            source,
            bytes,
            checksum: sum,
            repo_path,
        });
    }
    Ok(plan)
}

/// Copies each planned file over its source.
fn copy_back(plan: Vec<Planned>) -> Result<Vec<Accepted>> {
    let mut accepted = Vec::new();
    for p in plan {
        let mode = std::fs::metadata(&p.source)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
            .unwrap_or(0o644);
        stead_lib::fsutil::atomic_write(&p.source, &p.bytes, mode)?;
        accepted.push(Accepted {
            key: p.key,
            repo_path: p.repo_path,
            checksum: p.checksum,
        });
    }
    Ok(accepted)
}

/// A file named on the command line: `~/x`, absolute, or relative to the
/// current directory.
fn target_path(home: &Path, name: &str) -> Result<PathBuf> {
    let path = if name == "~" || name.starts_with("~/") {
        stead_lib::manifest::expand_key(home, name)
    } else if Path::new(name).is_absolute() {
        PathBuf::from(name)
    } else {
        std::env::current_dir()
            .context("cannot read the current directory")?
            .join(name)
    };
    Ok(stead_lib::fsutil::normalize_lexically(&path))
}
