//! Terminal output: colors (off when not a tty, with --no-color or NO_COLOR),
//! JSON printing, and stdout writes that survive a closed pipe.

/// `println!` for stdout that does not panic when the reader went away
/// (`stead graph | head`): the command still finishes its work and releases
/// its lock; only the output is lost, which the reader asked for.
macro_rules! outln {
    () => { $crate::output::write_stdout(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!` counterpart of [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::write_stdout(format_args!($($arg)*)) };
}

/// `eprintln!` that does not panic when stderr is closed (`2>&-`) or
/// broken: a message nobody can read is dropped, the command goes on (and
/// still releases its lock).
macro_rules! errln {
    () => { $crate::output::write_stderr(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::output::write_stderr(format_args!("{}\n", format_args!($($arg)*))) };
}

pub(crate) use {errln, out, outln};

/// Writes to stderr; any error is ignored (there is nowhere left to say it).
pub fn write_stderr(args: std::fmt::Arguments) {
    use std::io::Write;
    let _ = std::io::stderr().lock().write_fmt(args);
}

/// Writes to stdout; a closed pipe is ignored, other errors are reported once
/// on stderr.
pub fn write_stdout(args: std::fmt::Arguments) {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    static REPORTED: AtomicBool = AtomicBool::new(false);
    if let Err(e) = std::io::stdout().lock().write_fmt(args)
        && e.kind() != std::io::ErrorKind::BrokenPipe
        && !REPORTED.swap(true, Ordering::Relaxed)
    {
        errln!("cannot write to standard output: {e}");
    }
}

use std::io::IsTerminal;

/// Styles text for stdout or stderr.
#[derive(Debug, Clone, Copy)]
pub struct Paint {
    enabled: bool,
}

impl Paint {
    /// Colors for a stream when it is a terminal and nothing forbids them.
    pub fn new(no_color_flag: bool, is_terminal: bool) -> Self {
        let env_forbids = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Paint {
            enabled: is_terminal && !no_color_flag && !env_forbids,
        }
    }

    pub fn for_stdout(no_color_flag: bool) -> Self {
        Self::new(no_color_flag, std::io::stdout().is_terminal())
    }

    pub fn for_stderr(no_color_flag: bool) -> Self {
        Self::new(no_color_flag, std::io::stderr().is_terminal())
    }

    fn wrap(&self, code: &str, text: &str) -> String {
        if self.enabled {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    pub fn bold(&self, text: &str) -> String {
        self.wrap("1", text)
    }

    pub fn red(&self, text: &str) -> String {
        self.wrap("1;31", text)
    }

    pub fn green(&self, text: &str) -> String {
        self.wrap("32", text)
    }

    pub fn yellow(&self, text: &str) -> String {
        self.wrap("33", text)
    }
}

/// Prints a JSON value on stdout, pretty, with a final newline.
pub fn print_json(value: &serde_json::Value) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => outln!("{text}"),
        Err(e) => errln!("cannot encode JSON output: {e}"),
    }
}
