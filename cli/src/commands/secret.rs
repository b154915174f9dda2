//! `stead secret show NAME` and `stead secret rotate NAME`: read one of this
//! machine's secrets, or have the next apply generate it anew.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use anyhow::Result;
use serde_json::json;

use stead_lib::resource::secret::secret_spec;
use stead_lib::secret::{Scope, Secrets};

use crate::commands::apply::{self, ApplyArgs};
use crate::context::Context;
use crate::output::{outln, print_json};

#[derive(Debug, clap::Subcommand)]
pub enum SecretCommand {
    /// Print a secret's value (only on a terminal, or with --reveal)
    Show(ShowArgs),
    /// Generate a secret anew, then apply: the files that use it are
    /// rewritten and its `notify` targets refreshed
    Rotate(RotateArgs),
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The secret: NAME of [secret.NAME]
    pub name: String,
    /// Print it even when stdout is not a terminal (a pipe, a file, --json)
    #[arg(long)]
    pub reveal: bool,
}

#[derive(Debug, clap::Args)]
pub struct RotateArgs {
    /// The secret: NAME of [secret.NAME]
    pub name: String,
    /// Do not ask before applying
    #[arg(long, short = 'y')]
    pub yes: bool,
}

pub fn run(ctx: &Context, cmd: &SecretCommand) -> Result<ExitCode> {
    match cmd {
        SecretCommand::Show(args) => show(ctx, args),
        SecretCommand::Rotate(args) => rotate(ctx, args),
    }
}

/// `secret.NAME` with `NAME` checked to be a plain name (no path in it).
fn checked(name: &str) -> Result<&str> {
    let name = name.strip_prefix("secret.").unwrap_or(name);
    if !stead_lib::secret::is_plain_name(name) {
        anyhow::bail!(
            "{name:?} is not a secret's name: give NAME of [secret.NAME] (letters, digits, '_', '-')"
        );
    }
    Ok(name)
}

/// Where the declared `secret.NAME` is kept, and this machine's secrets
/// with the config repo it is declared in.
fn declared(ctx: &Context, name: &str) -> Result<(Scope, Secrets)> {
    let state = ctx.current_state()?;
    let (manifest, _) = ctx.load_manifest(Some(&state), None)?;
    let id = format!("secret.{name}");
    let Some(spec) = manifest.get(&id).and_then(|r| secret_spec(&r.spec)) else {
        anyhow::bail!(
            "{id} is not declared in {}\nDeclare [{id}] there and run 'stead apply' to generate it.",
            manifest.config_dir.join("stead.toml").display()
        );
    };
    let secrets = ctx.secrets_read_only()?.with_config(&manifest.config_dir);
    Ok((spec.scope, secrets))
}

fn show(ctx: &Context, args: &ShowArgs) -> Result<ExitCode> {
    let name = checked(&args.name)?;
    let on_terminal = std::io::stdout().is_terminal() && !ctx.json;
    if !on_terminal && !args.reveal {
        anyhow::bail!(
            "not printing secret.{name}: stdout is not a terminal (or --json was given)\n\
             Pass --reveal to print it anyway."
        );
    }
    let (scope, secrets) = declared(ctx, name)?;
    if scope == Scope::Lineage
        && secrets.stored_recipients(scope, name)?.is_some()
        && !secrets.is_recipient_of(scope, name)?
    {
        anyhow::bail!(
            "secret.{name} was encrypted before this machine joined the lineage, so it cannot be read here yet\n\
             A member that can read it encrypts it to this machine at its next 'stead sync'; then run 'stead sync' here."
        );
    }
    let Some(value) = secrets.value(scope, name)? else {
        anyhow::bail!(
            "secret.{name} has no value on this machine yet\n\
             Run 'stead apply' to generate it."
        );
    };
    let text = String::from_utf8_lossy(value.expose());
    if ctx.json {
        print_json(&json!({ "name": name, "value": text }));
    } else {
        outln!("{text}");
    }
    Ok(ExitCode::SUCCESS)
}

fn rotate(ctx: &Context, args: &RotateArgs) -> Result<ExitCode> {
    let name = checked(&args.name)?;
    {
        let _held = ctx.lock("secret rotate", None)?;
        let (scope, secrets) = declared(ctx, name)?;
        if !secrets.request_rotation(scope, name)? {
            anyhow::bail!(
                "secret.{name} has no value on this machine yet, so there is nothing to rotate\n\
                 Run 'stead apply' to generate it."
            );
        }
    }
    if !ctx.json {
        outln!("Rotation of secret.{name} requested; applying.\n");
    }
    apply::run(
        ctx,
        &ApplyArgs {
            plan: None,
            dry_run: false,
            yes: args.yes,
            force: false,
            jobs: None,
            profile: None,
            rerun: Vec::new(),
            verify: false,
            choose: Vec::new(),
        },
    )
}
