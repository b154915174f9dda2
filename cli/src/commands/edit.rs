//! `stead edit PATH`: open the source of a managed path (its template, for
//! a templated file) in `$VISUAL`/`$EDITOR`, then apply: with `--apply`, or
//! on a terminal where apply shows the plan and asks.

use crate::output::outln;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use serde_json::json;

use crate::context::Context;
use crate::output::print_json;

#[derive(Debug, clap::Args)]
pub struct EditArgs {
    /// A managed path in the home (or a resource id, `file.bashrc`)
    #[arg(value_name = "PATH")]
    pub path: PathBuf,

    /// Apply the config after editing (on a terminal, the plan is shown and confirmed first)
    #[arg(long)]
    pub apply: bool,
}

pub fn run(ctx: &Context, args: &EditArgs) -> Result<ExitCode> {
    let state = ctx.current_state()?;
    let (manifest, _) = ctx.load_manifest(Some(&state), None)?;
    let target = args.path.to_string_lossy().into_owned();
    let found = stead_lib::status::source_of(&manifest, &target, &ctx.user_path(&args.path)?)?;
    let editor = super::editor(
        "stead edit",
        "Set EDITOR (e.g. EDITOR=nano) and run it again.",
    )?;
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(&found.source)
        .status()
        .with_context(|| format!("cannot start the editor '{editor}'"))?;
    if !status.success() {
        anyhow::bail!(
            "the editor '{editor}' exited with {status}; nothing was applied\n\
             The source is {}.",
            found.source.display()
        );
    }
    let terminal = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    if ctx.json {
        print_json(&json!({"resource": found.resource, "source": found.source}));
    } else {
        outln!("Edited {} ({}).", found.source.display(), found.resource);
    }
    // On a terminal apply shows the plan and asks; off one (or under
    // --json, where nobody can answer), --apply is the yes.
    let can_ask = terminal && !ctx.json;
    if !args.apply && !can_ask {
        if !ctx.json {
            outln!("Run 'stead apply' to apply it.");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut argv = vec!["apply"];
    if !can_ask {
        argv.push("--yes");
    }
    use clap::{Args as _, FromArgMatches as _};
    let matches = super::apply::ApplyArgs::augment_args(clap::Command::new("apply"))
        .try_get_matches_from(argv)?;
    let apply = super::apply::ApplyArgs::from_arg_matches(&matches)?;
    super::apply::run(ctx, &apply)
}
