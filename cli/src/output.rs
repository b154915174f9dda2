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
    let text = args.to_string();
    let _ = std::io::stderr().lock().write_all(clean(&text).as_bytes());
}

/// [`write_stderr`] without [`clean`]: for text whose escape sequences are
/// meant (a coloured miette report of the user's own manifest).
pub fn write_stderr_raw(text: &str) {
    use std::io::Write;
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// Writes to stdout; a closed pipe is ignored, other errors are reported once
/// on stderr.
pub fn write_stdout(args: std::fmt::Arguments) {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    static REPORTED: AtomicBool = AtomicBool::new(false);
    let text = args.to_string();
    if let Err(e) = std::io::stdout().lock().write_all(clean(&text).as_bytes())
        && e.kind() != std::io::ErrorKind::BrokenPipe
        && !REPORTED.swap(true, Ordering::Relaxed)
    {
        errln!("cannot write to standard output: {e}");
    }
}

/// The escape sequences stead itself prints ([`Paint`]); every other
/// control character is escaped by [`clean`].
const OWN_SEQUENCES: [&str; 5] = ["\x1b[0m", "\x1b[1m", "\x1b[1;31m", "\x1b[32m", "\x1b[33m"];

/// Text made safe for a terminal: control characters (ESC, CR, BEL, ...)
/// and the bidi overrides that reorder what a terminal shows are written as
/// `\u{..}` escapes, so a file name, another machine's hostname or a lock
/// holder's operation cannot clear the screen, move the cursor or hide what
/// a plan will remove. Newlines, tabs and stead's own colours are kept.
/// Every line printed with [`outln!`] and [`errln!`] goes through it, so no
/// call site can forget it.
pub fn clean(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| {
        (c.is_control() && c != '\n' && c != '\t')
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if let Some(own) = OWN_SEQUENCES.iter().find(|seq| rest.starts_with(**seq)) {
            out.push_str(own);
            rest = &rest[own.len()..];
            continue;
        }
        if unsafe_char(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    std::borrow::Cow::Owned(out)
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

/// A time as every human line shows it: UTC, labelled (`2026-12-03
/// 07:41:21 UTC`). JSON carries RFC 3339 with `Z` (chrono's serde).
pub fn utc(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// The version of every JSON document and event stead prints
/// (`docs/json.md`); raised only when a shape changes incompatibly.
pub const JSON_SCHEMA: u64 = 1;

/// `value` with `"schema": JSON_SCHEMA` at its top level (objects only).
pub fn with_schema(value: &serde_json::Value) -> serde_json::Value {
    let mut value = value.clone();
    if let Some(object) = value.as_object_mut() {
        object.insert("schema".into(), JSON_SCHEMA.into());
    }
    value
}

/// Prints a JSON document on stdout, pretty, with a final newline, marked
/// with its schema version.
pub fn print_json(value: &serde_json::Value) {
    match serde_json::to_string_pretty(&with_schema(value)) {
        Ok(text) => outln!("{text}"),
        Err(e) => errln!("cannot encode JSON output: {e}"),
    }
}

/// Prints one event of an NDJSON stream (`apply --json`): one compact line,
/// marked with its schema version.
pub fn print_json_line(value: &serde_json::Value) {
    outln!("{}", with_schema(value));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_plain_text_and_own_colours_kept() {
        assert_eq!(clean("a\u{1b}[2Jb\n\tc\r"), "a\\u{1b}[2Jb\n\tc\\u{d}");
        assert_eq!(clean("x\u{202e}y"), "x\\u{202e}y");
        assert_eq!(
            clean("\u{1b}[8mhidden\u{1b}[32m+"),
            "\\u{1b}[8mhidden\u{1b}[32m+"
        );
        assert!(matches!(clean("plain é"), std::borrow::Cow::Borrowed(_)));
    }
}
