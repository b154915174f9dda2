//! `stead add PATH...`: copy files from the home into the config repo,
//! declare them in `stead.toml` (comments and layout kept), and record them
//! as owned, so the next plan shows them unchanged (the library's `add`
//! module does all of it; this asks, locks and prints).

use crate::output::outln;
use std::collections::HashSet;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use serde_json::json;
use stead_lib::add::{AddRequest, Added};
use stead_lib::converge;
use stead_lib::machine::MachineInfo;
use stead_lib::manifest::LoadOptions;
use stead_lib::state::State;

use crate::context::Context;
use crate::output::print_json;

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// Files or directories in the home to take into the config repo
    #[arg(value_name = "PATH", required = true)]
    pub paths: Vec<PathBuf>,

    /// Declare the copy as a template (`template =`) instead of a `source`
    #[arg(long)]
    pub template: bool,

    /// Replace the file in the home by a link to its copy (a [symlink.NAME])
    #[arg(long, conflicts_with = "template")]
    pub link: bool,

    /// The resource name (default: the file name without leading dots)
    #[arg(long = "as", value_name = "NAME")]
    pub name: Option<String>,

    /// Add files that look like secrets (private keys) too
    #[arg(long)]
    pub force: bool,
}

pub fn run(ctx: &Context, args: &AddArgs) -> Result<ExitCode> {
    let request = AddRequest {
        paths: args
            .paths
            .iter()
            .map(|p| ctx.user_path(p))
            .collect::<Result<_>>()?,
        template: args.template,
        link: args.link,
        name: args.name.clone(),
        force: args.force,
    };
    let guard = ctx.lock("add", None)?;
    let mut state = match ctx.load_state_locked(&guard)? {
        Some(state) => state,
        None => State::new(MachineInfo::current(&ctx.machine_id()?)),
    };
    let config = ctx.config_dir(Some(&state))?;
    let options = LoadOptions {
        home: ctx.layout.home().to_path_buf(),
        profile: state.active_profile.clone(),
        kinds: &stead_lib::resource::registry::REGISTRY,
    };
    let added = match stead_lib::add::add(
        &config,
        &options,
        &[ctx.layout.state_dir().to_path_buf()],
        &request,
    ) {
        // Shown like every command's manifest error: each problem with its
        // line and a caret.
        Err(stead_lib::add::AddError::Manifest(e)) => return Err(e.into()),
        other => other?,
    };
    // The plan made now is the one the next `stead plan` shows: what it
    // shows unchanged is recorded as owned, as apply would.
    let prepared = converge::prepare_read_only(
        &ctx.layout,
        &state,
        &ctx.plan_options(Some(&config), None, false, converge::DEFAULT_JOBS),
        &converge::Silent,
    )?;
    let ids: HashSet<String> = added.iter().map(|a| a.id.clone()).collect();
    let changed = stead_lib::add::adopt(&mut state, &prepared.plan, &ids);
    if state.config_path.is_none() {
        let config = config.canonicalize().unwrap_or(config.clone());
        state.config_path = Some(config.display().to_string());
    }
    ctx.store.commit(&guard, &mut state, "add")?;
    guard.release()?;
    report(ctx, &config, &added, &changed);
    Ok(ExitCode::SUCCESS)
}

fn report(ctx: &Context, config: &std::path::Path, added: &[Added], changed: &[String]) {
    if ctx.json {
        print_json(&json!({
            "config_dir": config,
            "added": added,
            "changes_pending": changed,
        }));
        return;
    }
    let p = &ctx.out;
    for a in added {
        let how = if a.linked { "linked to" } else { "copied to" };
        outln!(
            "{} {}  {}  ({how} {})",
            p.green("+"),
            a.id,
            a.path,
            a.source
        );
    }
    let config = config.display();
    outln!(
        "\nAdded {} to {config}/stead.toml; stead now owns {}.",
        count(added.len()),
        if added.len() == 1 { "it" } else { "them" }
    );
    if !changed.is_empty() {
        ctx.warn(&format!(
            "'stead plan' shows a change for {}: the declared content differs from the file \
             (a template renders it otherwise?). Run 'stead plan' to see it.",
            changed.join(", ")
        ));
    }
    outln!("Commit it with 'git -C {config} add -A && git -C {config} commit'.");
}

fn count(n: usize) -> String {
    if n == 1 {
        "1 path".to_string()
    } else {
        format!("{n} paths")
    }
}
