//! `stead`: the command-line edge of stead-lib. Parses flags, runs one
//! command, prints text or JSON, and maps errors to exit codes.

// A write to a closed or broken stderr panics in `eprintln!`: use `errln!`.
#![deny(clippy::print_stderr)]

mod cli;
mod commands;
mod context;
mod exit;
mod output;

/// jemalloc, not the system's malloc: a run that plans 100 000 files holds
/// about a sixth less memory at its peak and spends a fifth to almost half
/// less CPU (many small strings, no header per allocation; freed pages go
/// back within 100 ms, see `.cargo/config.toml`). Figures:
/// docs/performance.md, "The allocator".
#[cfg(unix)]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::process::ExitCode;

use crate::cli::{Cli, Command};
use crate::context::Context;
use crate::exit::Exit;
use crate::output::{Paint, errln};

fn main() -> ExitCode {
    let cli = parse();
    output::set_color(cli.global.color_when());
    install_signal_handler();
    let json = cli.global.json;
    // `apply --json` and `sync --json` are NDJSON streams: an error is one
    // more event.
    let ndjson = json && matches!(cli.command, Command::Apply(_) | Command::Sync(_));
    let err_paint = Paint;
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            let code = Exit::for_error(&error).code();
            if ndjson {
                output::print_json_line(&serde_json::json!({
                    "event": "error", "message": format!("{error:#}"), "exit_code": code
                }));
            } else if json {
                output::print_json(&serde_json::json!({
                    "error": { "message": format!("{error:#}"), "exit_code": code }
                }));
            }
            let text = format!("{} {}", err_paint.red("Error:"), render_error(&error));
            if manifest_error(&error).is_some() && miette_colors() {
                // miette's own colours would be escaped by `errln!`.
                output::write_stderr_raw(&format!("{text}\n"));
            } else {
                errln!("{text}");
            }
            ExitCode::from(code)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    use clap::CommandFactory;
    if let Command::Reaper = cli.command {
        // Started by `apply`, fed process groups on stdin until apply ends.
        stead_lib::run::reap(std::io::stdin().lock());
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::MergeDriver(args) = &cli.command {
        // Run by git inside a merge: no state, no lock, no output but errors.
        return commands::merge_driver::run(args);
    }
    // Generated from the flags alone: no home, state or config needed.
    match &cli.command {
        Command::Completion(args) => {
            return commands::completion::completion(args, Cli::command());
        }
        Command::Man => return commands::completion::man(Cli::command()),
        _ => {}
    }
    let ctx = Context::new(&cli.global)?;
    ctx.warn_if_lock_disabled();
    match cli.command {
        Command::Init(args) => commands::init::run(&ctx, &args),
        Command::Plan(args) => commands::plan::run(&ctx, &args),
        Command::Apply(args) => commands::apply::run(&ctx, &args),
        Command::Graph(args) => commands::graph::run(&ctx, &args),
        Command::Reaper | Command::MergeDriver(_) | Command::Completion(_) | Command::Man => {
            Ok(ExitCode::SUCCESS)
        }
        Command::Commit(args) => commands::commit::run(&ctx, &args),
        Command::Sync(args) => commands::sync::run(&ctx, &args),
        Command::State(cmd) => commands::state::run(&ctx, &cmd),
        Command::Fleet(cmd) => commands::fleet::run(&ctx, &cmd),
        Command::Secret(cmd) => commands::secret::run(&ctx, &cmd),
        Command::Check(args) => commands::check::run(&ctx, &args),
        Command::Watch(args) => commands::watch::run(&ctx, &args),
        Command::Choose(args) => commands::check::choose(&ctx, &args),
        Command::Doctor(args) => commands::doctor::run(&ctx, &args),
        Command::Add(args) => commands::add::run(&ctx, &args),
        Command::Edit(args) => commands::edit::run(&ctx, &args),
        Command::Status(args) => commands::status::run(&ctx, &args),
        Command::Cd => commands::cd::run(&ctx),
    }
}

/// The error and its causes, one per line, without repeating a cause that
/// the message already includes.
fn render_error(error: &anyhow::Error) -> String {
    if let Some(manifest) = manifest_error(error) {
        return render_manifest_error(manifest);
    }
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(&format!("\n  caused by: {cause}"));
        }
    }
    text
}

fn manifest_error(error: &anyhow::Error) -> Option<&stead_lib::manifest::ManifestError> {
    use stead_lib::converge::ConvergeError;
    use stead_lib::manifest::{LoadError, ManifestError};
    let load =
        error
            .downcast_ref::<LoadError>()
            .or_else(|| match error.downcast_ref::<ConvergeError>() {
                Some(ConvergeError::Manifest(e)) => Some(e),
                _ => None,
            });
    error.downcast_ref::<ManifestError>().or(match load {
        Some(LoadError::Invalid(e)) => Some(e),
        _ => None,
    })
}

/// Whether a manifest error is rendered in colour: stderr's one decision.
fn miette_colors() -> bool {
    output::colors(true)
}

/// The command line, with clap's own help and usage errors coloured by the
/// same `--color` (read ahead, since clap prints before the parse ends).
fn parse() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    use std::io::IsTerminal;
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let mut when = None;
    for (i, arg) in args.iter().enumerate() {
        let arg = arg.to_string_lossy();
        let value = match arg.strip_prefix("--color") {
            Some("") => args.get(i + 1).map(|v| v.to_string_lossy().into_owned()),
            Some(rest) => rest.strip_prefix('=').map(str::to_string),
            None if arg == "--no-color" => Some("never".to_string()),
            None => None,
        };
        when = value.or(when);
    }
    let when = match when.as_deref() {
        Some("always") => output::ColorWhen::Always,
        Some("never") => output::ColorWhen::Never,
        _ => output::ColorWhen::Auto,
    };
    let color = if output::decide(when, std::io::stderr().is_terminal(), |n| {
        std::env::var_os(n)
    }) {
        clap::ColorChoice::Always
    } else {
        clap::ColorChoice::Never
    };
    let matches = Cli::command().color(color).get_matches_from(args);
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// Every problem with its source line and a caret (miette), then the
/// `file:line:col` summary.
fn render_manifest_error(error: &stead_lib::manifest::ManifestError) -> String {
    let theme = if miette_colors() {
        miette::GraphicalTheme::unicode()
    } else {
        miette::GraphicalTheme::unicode_nocolor()
    };
    let handler = miette::GraphicalReportHandler::new_themed(theme);
    let mut out = format!("{}\n", error.summary());
    for report in error.reports() {
        let mut text = String::new();
        if handler.render_report(&mut text, &report).is_ok() {
            out.push('\n');
            out.push_str(&text);
        }
    }
    out.push_str("\nNothing was changed. Fix the manifest and run the command again.");
    out
}

/// The run that is executing now, if any: all the signal handler needs to
/// reach it. Set for the time a [`CurrentRun`] guard lives.
static CURRENT_RUN: std::sync::Mutex<Option<RunHandles>> = std::sync::Mutex::new(None);

/// What the signal handler acts on: the run, and its progress bar (which
/// steps aside while the handler prints, or its next redraw would leave a
/// stale copy of itself above the message).
#[derive(Clone)]
struct RunHandles {
    cancel: stead_lib::run::CancelHandle,
    bar: Option<indicatif::ProgressBar>,
}

impl RunHandles {
    fn say(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| errln!("{text}")),
            None => errln!("{text}"),
        }
    }
}

/// While it lives, Ctrl-C cancels this run gracefully instead of exiting.
pub struct CurrentRun(());

impl CurrentRun {
    /// Makes `handle` the run the signal handler cancels; `bar` is the
    /// progress bar shown meanwhile, if any.
    pub fn set(
        handle: stead_lib::run::CancelHandle,
        bar: Option<indicatif::ProgressBar>,
    ) -> CurrentRun {
        if let Ok(mut slot) = CURRENT_RUN.lock() {
            *slot = Some(RunHandles {
                cancel: handle,
                bar,
            });
        }
        CurrentRun(())
    }
}

impl Drop for CurrentRun {
    fn drop(&mut self) {
        if let Ok(mut slot) = CURRENT_RUN.lock() {
            *slot = None;
        }
    }
}

/// Ctrl-C and SIGTERM. While an apply executes: the first stops it starting
/// new work (running steps finish, the journal and state are written, exit
/// 130); the second kills the running commands (their steps fail, the same
/// orderly end follows); a third ends the process at once. Otherwise, and for
/// that third one, the lock file is removed and the process exits 130 (the
/// kernel drops the flock anyway).
fn install_signal_handler() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static SIGNALS: AtomicUsize = AtomicUsize::new(0);
    let _ = ctrlc::set_handler(|| {
        let n = SIGNALS.fetch_add(1, Ordering::SeqCst);
        let current = CURRENT_RUN.lock().ok().and_then(|slot| slot.clone());
        if let Some(run) = current.filter(|_| n < 2) {
            if n == 0 {
                run.cancel.stop();
                run.say(
                    "\nStopping: running steps finish and nothing new starts; the journal and the state are written.\n\
                     Press Ctrl-C again to kill the running commands.",
                );
            } else {
                run.cancel.kill();
                run.say("\nKilling the running commands.");
            }
            return;
        }
        // Local lock files, then the remote lock (a registered cleanup).
        stead_lib::lock::release_all_held();
        errln!("Interrupted.");
        std::process::exit(i32::from(Exit::Interrupted.code()));
    });
}
