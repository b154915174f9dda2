//! Helper programs for stead's multi-process tests (see `src/bin/`): they use
//! stead-lib exactly as the CLI does, so the tests exercise the real locks and
//! the real atomic writes across real processes.
//!
//! This library holds what the programs share: argument parsing, the layout
//! of a state dir given on the command line, the machine id, and printing
//! lines that a test reads as synchronisation points.
//!
//! Exit codes of every program: 0 done, [`EXIT_USAGE`] bad arguments or a
//! failed setup/IO step, [`EXIT_LOCKED`] the lock could not be taken.
//!
//! [`apt`], [`dnf`] and [`pacman`] are the throw-away roots the package
//! tests (and the package benchmark) install real packages into; [`etcd`]
//! is a real etcd cluster on loopback for the etcd backend's tests.

pub mod apt;
mod child;
pub mod dnf;
pub mod etcd;
pub mod pacman;

pub use child::Stamp;

use std::collections::BTreeMap;
use std::fmt::Display;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;

use stead_lib::fsutil;
use stead_lib::layout::Layout;
use stead_lib::lock::LockEvent;
use stead_lib::machine;

/// Exit code for bad arguments and failed setup or I/O.
pub const EXIT_USAGE: u8 = 2;
/// Exit code when the lock could not be taken (as the CLI's).
pub const EXIT_LOCKED: u8 = 3;

/// Why a helper program stops early: its exit code and what to print on stderr.
#[derive(Debug)]
pub struct Failure {
    /// The exit code.
    pub code: u8,
    /// The message for stderr.
    pub message: String,
}

impl Failure {
    /// A failure with exit code [`EXIT_USAGE`].
    pub fn usage(message: impl Display) -> Self {
        Failure {
            code: EXIT_USAGE,
            message: message.to_string(),
        }
    }

    /// A failure with exit code [`EXIT_LOCKED`].
    pub fn locked(message: impl Display) -> Self {
        Failure {
            code: EXIT_LOCKED,
            message: message.to_string(),
        }
    }
}

/// Prints the failure (if any) as `Error: ...` on stderr and makes the exit code.
pub fn finish(outcome: Result<(), Failure>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("Error: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

/// `--name value` arguments.
#[derive(Debug)]
pub struct Args {
    values: BTreeMap<String, String>,
}

impl Args {
    /// Parses the process's arguments; only `--NAME value` for the given names.
    pub fn parse(known: &[&str]) -> Result<Args, Failure> {
        Args::parse_from(std::env::args().skip(1), known)
    }

    /// Parses `args` (without the program name).
    pub fn parse_from(
        args: impl IntoIterator<Item = String>,
        known: &[&str],
    ) -> Result<Args, Failure> {
        let mut values = BTreeMap::new();
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let name = flag
                .strip_prefix("--")
                .filter(|name| known.contains(name))
                .ok_or_else(|| {
                    Failure::usage(format!(
                        "unknown argument {flag:?}; expected --{}",
                        known.join(" VALUE, --")
                    ))
                })?;
            let value = args
                .next()
                .ok_or_else(|| Failure::usage(format!("{flag} needs a value")))?;
            if values.insert(name.to_string(), value).is_some() {
                return Err(Failure::usage(format!("{flag} is given twice")));
            }
        }
        Ok(Args { values })
    }

    /// The value of `--name`, if given.
    pub fn optional(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// The value of `--name`, which must be given.
    pub fn required(&self, name: &str) -> Result<&str, Failure> {
        self.optional(name)
            .ok_or_else(|| Failure::usage(format!("--{name} is required")))
    }

    /// The value of `--name` parsed as a number (or anything `FromStr`).
    pub fn number<T>(&self, name: &str) -> Result<T, Failure>
    where
        T: FromStr,
        T::Err: Display,
    {
        let raw = self.required(name)?;
        raw.parse()
            .map_err(|e| Failure::usage(format!("--{name} {raw:?}: {e}")))
    }
}

/// The layout for an explicit state dir; home is the state dir's parent (the
/// helpers never touch managed files, only the state dir).
pub fn layout_for(state_dir: &Path) -> Layout {
    let home = state_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    Layout::new(home, Some(state_dir.to_path_buf()))
}

/// This machine's id, as the CLI gets it: the state dir is made private, then
/// the id is read or made.
pub fn machine_id(layout: &Layout) -> Result<String, Failure> {
    fsutil::ensure_private_dir(layout.state_dir()).map_err(Failure::usage)?;
    machine::load_or_create_id(layout).map_err(Failure::usage)
}

/// Prints one line on stdout and flushes it: a test waits for these lines.
pub fn say(line: impl Display) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|e| Failure::usage(format!("cannot write to stdout: {e}")))
}

/// Tells about a lock event on stderr, one line each.
pub fn report_event(event: LockEvent) {
    match event {
        LockEvent::StaleRemoved { info, reason } => {
            let pid = info
                .map(|i| format!(" (PID {})", i.machine.pid))
                .unwrap_or_default();
            eprintln!("event: removed a stale lock{pid}: {reason}");
        }
        LockEvent::Waiting {
            attempt, of, delay, ..
        } => {
            // Contenders retry thousands of times; one line per wait would
            // only flood the pipe.
            if attempt == 1 {
                eprintln!(
                    "event: the lock is held; retrying up to {of} times every {:.3}s",
                    delay.as_secs_f64()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, Failure> {
        Args::parse_from(args.iter().map(|a| a.to_string()), &["state-dir", "rounds"])
    }

    #[test]
    fn args_are_parsed_and_checked() {
        let a = parse(&["--state-dir", "/s", "--rounds", "7"]).unwrap();
        assert_eq!(a.required("state-dir").unwrap(), "/s");
        assert_eq!(a.number::<u32>("rounds").unwrap(), 7);
        assert!(a.optional("marker").is_none());
        assert!(parse(&["--other", "x"]).is_err());
        assert!(parse(&["--rounds"]).is_err());
        assert!(parse(&["--rounds", "1", "--rounds", "2"]).is_err());
        let a = parse(&["--rounds", "x"]).unwrap();
        assert_eq!(a.number::<u32>("rounds").unwrap_err().code, EXIT_USAGE);
    }

    #[test]
    fn layout_home_is_the_parent() {
        let l = layout_for(Path::new("/t/state"));
        assert_eq!(l.home(), Path::new("/t"));
        assert_eq!(l.state_dir(), Path::new("/t/state"));
        assert_eq!(l.lock_file(), Path::new("/t/state/state.lock"));
    }
}
