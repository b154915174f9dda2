//! `stead completion SHELL` and `stead man`: the shell completion script and
//! the man page, both generated from the clap definitions so they never
//! drift from the real flags. Neither needs a state dir or a config repo.

use std::process::ExitCode;

use anyhow::{Context as _, Result};

/// The shells `stead completion` writes a script for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, clap::Args)]
pub struct CompletionArgs {
    /// The shell to complete in
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Prints the completion script for `args.shell` and the command line
/// `cli` on stdout.
pub fn completion(args: &CompletionArgs, mut cli: clap::Command) -> Result<ExitCode> {
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cli, "stead", &mut script);
    write_all(&script)
}

/// Prints the man page (roff) of the command line `cli` on stdout.
pub fn man(cli: clap::Command) -> Result<ExitCode> {
    let mut page = Vec::new();
    clap_mangen::Man::new(cli)
        .render(&mut page)
        .context("cannot render the man page")?;
    write_all(&page)
}

/// Writes generated text as it is (it is ours, not the user's: nothing to
/// escape); a reader that went away (`stead man | head`) is not an error.
fn write_all(bytes: &[u8]) -> Result<ExitCode> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to standard output")
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}
