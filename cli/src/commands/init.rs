//! `stead init`: create this machine's state (state dir, machine id, lineage at
//! serial 1, history entry `init`). Running it again changes nothing unless a
//! different profile or config path is given. In an empty directory it
//! writes a commented starter `stead.toml` first.

use crate::output::outln;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use serde_json::json;
use stead_lib::machine::MachineInfo;
use stead_lib::state::State;
use stead_lib::sync::session::{JoinRequest, JoinStatus, Joined};

use super::repo;

use crate::context::Context;
use crate::output::print_json;

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// The profile this machine applies
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,

    /// The config repo (your dotfiles repo); with --repo, where to clone it
    /// (default: <home>/.dotfiles) or an existing clone to adopt
    #[arg(long, value_name = "CONFIG_DIR")]
    pub path: Option<std::path::PathBuf>,

    /// Clone this config repo (or adopt the clone at --path) and join the
    /// lineage its .stead/state.json records, or start one
    #[arg(long, value_name = "URL", conflicts_with = "etcd")]
    pub repo: Option<String>,

    /// Keep the shared record and the lock on this etcd cluster (client
    /// URLs, comma-separated) instead of in the repo; --path names the
    /// config dir (usually a git clone), which stays where it is
    #[arg(long, value_name = "URL[,URL...]", requires = "path")]
    pub etcd: Option<String>,

    /// With --etcd: the key prefix the lineage lives under (default /stead/v1/)
    #[arg(long, value_name = "PREFIX", requires = "etcd")]
    pub prefix: Option<String>,

    /// With --etcd or --repo: join this lineage, refusing another one found
    /// there, or start it under this id when there is none (a lineage moved
    /// from another store keeps its id: `stead state version` shows it)
    #[arg(long, value_name = "ID", value_parser = lineage_id)]
    pub lineage: Option<String>,
}

/// A lineage id as given to `--lineage`: printable, without spaces, at
/// most 128 characters (stead's own are `lineage-<uuid>`).
fn lineage_id(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > 128 {
        return Err("a lineage id has 1 to 128 characters".to_string());
    }
    if let Some(c) = text.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "a lineage id holds no spaces or control characters (found {c:?})"
        ));
    }
    Ok(text.to_string())
}

/// What a local `init` did (`status` in `--json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum InitStatus {
    /// The state record was made.
    Created,
    /// The profile or config path changed.
    Updated,
    /// Nothing to change.
    Unchanged,
}

pub fn run(ctx: &Context, args: &InitArgs) -> Result<ExitCode> {
    if args.lineage.is_some() && args.repo.is_none() && args.etcd.is_none() {
        anyhow::bail!(
            "--lineage needs --etcd or --repo: it names the shared lineage to join or start\nNothing was changed."
        );
    }
    if let Some(url) = &args.repo {
        return run_repo(ctx, args, url);
    }
    if let Some(endpoints) = &args.etcd {
        return run_etcd(ctx, args, endpoints);
    }
    // An empty directory (--path, --config, else the current one on a
    // machine not initialised yet) gets a starter stead.toml, and becomes
    // the recorded config repo.
    let starter_dir = match (&args.path, &ctx.config) {
        (Some(p), _) | (None, Some(p)) => Some(p.clone()),
        (None, None) if !ctx.store.path().exists() => {
            Some(std::env::current_dir().context("cannot read the current directory")?)
        }
        (None, None) => None,
    };
    let starter = match &starter_dir {
        Some(dir) => stead_lib::add::write_starter(dir, args.profile.as_deref())?
            .then(|| dir.join(stead_lib::manifest::MANIFEST_FILE)),
        None => None,
    };
    let starter_dir = starter_dir.filter(|_| starter.is_some());
    let path = args.path.clone().or(starter_dir);
    let config_path = path.as_deref().map(config_path_string).transpose()?;
    let guard = ctx.lock_local("init")?;
    let machine_id = ctx.machine_id()?;
    // The machine's age identity: its secrets are encrypted to it.
    stead_lib::secret::Secrets::open(&ctx.layout, true)?;
    let loaded = ctx.load_state_locked(&guard)?;
    if let Some(profile) = &args.profile {
        let dir = match &config_path {
            Some(c) => Some(std::path::PathBuf::from(c)),
            None => ctx.config_dir(loaded.as_ref()).ok(),
        };
        if let Some(dir) = dir {
            check_profile(ctx, &dir, profile)?;
        }
    }
    let (status, state, changes) = match loaded {
        None => {
            let mut state = State::new(MachineInfo::current(&machine_id));
            state.active_profile = args.profile.clone();
            state.config_path = config_path;
            ctx.store.commit(&guard, &mut state, "init")?;
            (InitStatus::Created, state, Vec::new())
        }
        Some(mut state) => {
            let changes = apply_changes(&mut state, args.profile.clone(), config_path);
            if changes.is_empty() {
                (InitStatus::Unchanged, state, changes)
            } else {
                ctx.store.commit(&guard, &mut state, "init")?;
                (InitStatus::Updated, state, changes)
            }
        }
    };
    guard.release()?;
    report(ctx, status, &state, &changes, starter.as_deref());
    Ok(ExitCode::SUCCESS)
}

/// Refuses a profile that the manifest in `dir` does not declare (a
/// directory without a readable manifest yet cannot tell, so any name is
/// taken; `apply` reports a broken manifest itself).
fn check_profile(ctx: &Context, dir: &Path, profile: &str) -> Result<()> {
    let Ok(Some(declared)) = stead_lib::converge::declared_profiles(dir, ctx.layout.home()) else {
        return Ok(());
    };
    if declared.contains(profile) {
        return Ok(());
    }
    let list = if declared.is_empty() {
        "none (it declares no profiles; leave out --profile)".to_string()
    } else {
        declared.iter().cloned().collect::<Vec<_>>().join(", ")
    };
    anyhow::bail!(
        "unknown profile '{profile}': the manifest {} does not declare it\n\
         Profiles in this manifest: {list}\n\
         This machine's state was not changed. Run init again with --profile set to one of them.",
        dir.join(stead_lib::manifest::MANIFEST_FILE).display()
    )
}

/// Re-running init changes only what the user asked to change; returns the changes.
fn apply_changes(
    state: &mut State,
    profile: Option<String>,
    config_path: Option<String>,
) -> Vec<String> {
    let mut changes = Vec::new();
    if let Some(p) = profile.filter(|p| state.active_profile.as_ref() != Some(p)) {
        changes.push(format!(
            "profile: {} → {p}",
            state.active_profile.as_deref().unwrap_or("(none)")
        ));
        state.active_profile = Some(p);
    }
    if let Some(c) = config_path.filter(|c| state.config_path.as_ref() != Some(c)) {
        changes.push(format!(
            "config path: {} → {c}",
            state.config_path.as_deref().unwrap_or("(none)")
        ));
        state.config_path = Some(c);
    }
    changes
}

fn report(
    ctx: &Context,
    status: InitStatus,
    state: &State,
    changes: &[String],
    starter: Option<&Path>,
) {
    if ctx.json {
        let mut v = json!({
            "status": status,
            "state_path": ctx.store.path(),
            "machine_id": state.machine.id,
            "lineage_id": state.lineage.id,
            "serial": state.lineage.serial,
            "active_profile": state.active_profile,
            "config_path": state.config_path,
            "changes": changes,
        });
        if let Some(path) = starter {
            // Only when one was written: the shape is otherwise unchanged.
            v["starter"] = json!(path);
        }
        print_json(&v);
        return;
    }
    let p = &ctx.out;
    match status {
        InitStatus::Created => {
            outln!("{} {}", p.green("✓"), p.bold("Initialized stead state"));
            outln!("  State:    {}", ctx.store.path().display());
        }
        InitStatus::Updated => {
            outln!("{} Updated stead state", p.green("✓"));
            for change in changes {
                outln!("  {change}");
            }
        }
        InitStatus::Unchanged => {
            outln!(
                "Already initialized; nothing changed ({}).",
                ctx.store.path().display()
            );
        }
    }
    outln!(
        "  Machine:  {} ({})",
        state.machine.hostname,
        state.machine.id
    );
    outln!("  Lineage:  {}", state.lineage.id);
    outln!("  Serial:   {}", state.lineage.serial);
    if let Some(profile) = &state.active_profile {
        outln!("  Profile:  {profile}");
    }
    if let Some(config) = &state.config_path {
        outln!("  Config:   {config}");
    }
    if let Some(path) = starter {
        outln!(
            "\nWrote a starter {} (commented). Add files with 'stead add ~/.bashrc'.",
            path.display()
        );
    }
}

/// Whether `a` and `b` are the same directory.
fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

fn config_path_string(path: &Path) -> Result<String> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .context("cannot read the current directory")?
            .join(path)
    };
    let resolved = absolute.canonicalize().unwrap_or(absolute);
    resolved
        .to_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("the config path {} is not valid UTF-8", resolved.display()))
}

/// `init --repo URL`: clone (or adopt the clone at --path), join the
/// lineage of the repo's shared record or start one, install the merge
/// driver, and commit this machine's entry (pushed by the next sync).
fn run_repo(ctx: &Context, args: &InitArgs, url: &str) -> Result<ExitCode> {
    let (backend, cloned, found) = match &args.path {
        Some(p) => {
            let dest = std::path::absolute(p).context("cannot read the current directory")?;
            let (backend, cloned) =
                stead_lib::sync::open_or_clone_with(&dest, url, &ctx.sync_options())?;
            // --path inside a clone of the URL names that clone.
            let inside = !cloned && !same_dir(&dest, backend.root());
            let found = inside.then(|| format!("--path {} is inside it", dest.display()));
            (backend, cloned, found)
        }
        // Run inside a clone of the URL, that clone is the one: no second copy.
        None => match std::env::current_dir()
            .ok()
            .and_then(|cwd| stead_lib::sync::find_clone_with(&cwd, url, &ctx.sync_options()))
        {
            Some(backend) => (
                backend,
                false,
                Some(
                    "the current directory is a clone of it; no second clone was made".to_string(),
                ),
            ),
            None => {
                let dest = ctx.layout.home().join(".dotfiles");
                let (backend, cloned) =
                    stead_lib::sync::open_or_clone_with(&dest, url, &ctx.sync_options())?;
                (backend, cloned, None)
            }
        },
    };
    backend.require_remote()?;
    join_backend(ctx, args, backend.as_ref(), cloned, found.as_deref(), url)
}

/// `init --etcd URLS --path DIR`: name the cluster in the config dir's
/// `.stead/etcd.toml`, then join the lineage recorded there (or start one)
/// as `init --repo` does; the next sync publishes this machine's entry.
fn run_etcd(ctx: &Context, args: &InitArgs, endpoints: &str) -> Result<ExitCode> {
    let Some(path) = &args.path else {
        anyhow::bail!("--etcd needs --path: the config dir (usually a clone of your config repo)");
    };
    let dest = std::path::absolute(path).context("cannot read the current directory")?;
    if !dest.is_dir() {
        anyhow::bail!(
            "{} is not a directory\nNothing was changed. Clone your config repo there first \
             (git clone URL {}), or pass the config dir with --path.",
            dest.display(),
            dest.display()
        );
    }
    let config = stead_lib::sync::etcd::EtcdConfig::new(endpoints, args.prefix.as_deref())?;
    let root = stead_lib::sync::git::Git::open(&dest)
        .map(|g| g.root().to_path_buf())
        .unwrap_or(dest);
    config.write(&root)?;
    let backend = stead_lib::sync::open_with(&root, &ctx.sync_options())?;
    let name = stead_lib::sync::etcd_repo_url(&config.endpoints, &config.prefix);
    join_backend(ctx, args, backend.as_ref(), false, None, &name)
}

/// Joins the lineage the backend's record holds (or starts one) and reports.
fn join_backend(
    ctx: &Context,
    args: &InitArgs,
    backend: &dyn stead_lib::sync::Backend,
    cloned: bool,
    found: Option<&str>,
    url: &str,
) -> Result<ExitCode> {
    let session = repo::session(ctx, backend);
    if !cloned {
        // An existing clone joins what the remote has now, not what it last
        // saw. On etcd the cluster must answer: joining offline would start
        // a second lineage under a prefix that has one.
        session.prepare(&mut repo::note(ctx))?;
        if session.refresh(args.etcd.is_some(), &mut repo::note(ctx))? {
            let records = backend.records()?;
            if let Some(files) = session.update_tree(&records, "stead init")? {
                let rerun = match &args.etcd {
                    Some(e) => format!("stead init --etcd {e} --path {}", backend.root().display()),
                    None => format!(
                        "stead init --repo {url} --path {}",
                        backend.root().display()
                    ),
                };
                return repo::report_tree_conflicts(ctx, backend, &files, &rerun);
            }
        }
    }
    let root = config_path_string(backend.root())?;
    if let Some(profile) = &args.profile {
        check_profile(ctx, backend.root(), profile)?;
    }

    let guard = ctx.lock_local("init")?;
    let machine_id = ctx.machine_id()?;
    let existing = ctx.load_state_locked(&guard)?;
    let joined = session.join(
        &guard,
        &ctx.layout,
        JoinRequest {
            machine_id,
            existing,
            profile: args.profile.clone(),
            root: root.clone(),
            url: url.to_string(),
            lineage: args.lineage.clone(),
        },
        &repo::stead_exe()?,
    )?;
    guard.release()?;
    report_repo(ctx, &joined, cloned, found, &root, url);
    Ok(ExitCode::SUCCESS)
}

/// What `init --repo` did.
fn report_repo(
    ctx: &Context,
    joined: &Joined,
    cloned: bool,
    found: Option<&str>,
    root: &str,
    url: &str,
) {
    let Joined {
        status,
        state,
        record,
        commit,
        retired_id,
    } = joined;
    if ctx.json {
        print_json(&json!({
            "status": status.as_str(),
            "cloned": cloned,
            "config_path": root,
            "repo_url": url,
            "machine_id": state.machine.id,
            "lineage_id": state.lineage.id,
            "serial": state.lineage.serial,
            "machines": record.lineage.machines,
            "commit": commit,
        }));
        return;
    }
    let p = &ctx.out;
    if let Some(old) = retired_id {
        outln!(
            "{} This machine's old id {old} was removed from the lineage; it joins under the new id {}.",
            p.yellow("Note:"),
            state.machine.id
        );
    }
    if let Some(cluster) = url.strip_prefix("etcd:") {
        let cluster = cluster.replace("?prefix=", " ");
        outln!(
            "{} Using the config dir {root}; the shared record and the lock are on etcd {cluster}",
            p.green("✓")
        );
    } else if cloned {
        outln!("{} Cloned {url} into {root}", p.green("✓"));
    } else if let Some(why) = found {
        outln!("{} Using the existing clone {root} ({why})", p.green("✓"));
    } else {
        outln!("{} Using the existing clone {root}", p.green("✓"));
    }
    match status {
        JoinStatus::Joined => outln!(
            "{} Joined lineage {} ({} machine(s))",
            p.green("✓"),
            state.lineage.id,
            record.machine_count()
        ),
        JoinStatus::Started => outln!(
            "{} Started lineage {} (the repo had no shared record)",
            p.green("✓"),
            state.lineage.id
        ),
        JoinStatus::Updated => outln!("{} Updated this machine's record", p.green("✓")),
        _ => outln!(
            "Already a member of lineage {}; nothing changed.",
            state.lineage.id
        ),
    }
    outln!(
        "  Machine:  {} ({})",
        state.machine.hostname,
        state.machine.id
    );
    outln!("  Serial:   {}", state.lineage.serial);
    if let Some(profile) = &state.active_profile {
        outln!("  Profile:  {profile}");
    }
    outln!("  State:    {}", ctx.store.path().display());
    if commit.is_some() {
        outln!(
            "\nCommitted this machine's record. Run 'stead sync' to share it and apply the config."
        );
    }
    // An empty repo (or one without a manifest) cannot be synced yet: say
    // what to add before the sync that would refuse it.
    let manifest = std::path::Path::new(root).join("stead.toml");
    if std::fs::symlink_metadata(&manifest).is_err() {
        outln!(
            "{} {root} has no stead.toml yet: add one and commit it \
             ('git -C {root} add stead.toml && git -C {root} commit -m \"Add stead.toml\"') \
             before 'stead sync', which shares nothing from a repo without it.",
            p.yellow("Note:")
        );
    }
}
