//! Terminal output: the one colour decision (`--color`, `NO_COLOR`,
//! `CLICOLOR_FORCE`, off when not a terminal) applied to every write, JSON
//! printing, and stdout writes that survive a closed pipe.

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
    let text = args.to_string();
    write_stderr_raw(&clean(&text));
}

/// [`write_stderr`] without [`clean`]: for text whose escape sequences are
/// meant (a coloured miette report of the user's own manifest).
pub fn write_stderr_raw(text: &str) {
    use std::io::Write;
    let mut stream = anstream::AutoStream::new(std::io::stderr().lock(), choice(true));
    let _ = stream.write_all(text.as_bytes());
}

thread_local! {
    /// What [`outln!`] wrote on this thread while a [`hold`] lasts.
    static HELD: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Holds what this thread writes to stdout until the guard is dropped, then
/// writes it at once: a plan of 10 000 changes is one `write`, not 10 000
/// (stdout is line-buffered). A hold inside another adds to the outer one.
pub fn hold() -> Held {
    let outer = HELD.with(|held| {
        let mut held = held.borrow_mut();
        let outer = held.is_none();
        held.get_or_insert_with(String::new);
        outer
    });
    Held { outer }
}

/// The guard [`hold`] returns.
#[must_use = "the output is written when the guard is dropped"]
pub struct Held {
    outer: bool,
}

impl Drop for Held {
    fn drop(&mut self) {
        if !self.outer {
            return;
        }
        if let Some(text) = HELD.with(|held| held.borrow_mut().take()) {
            write_stdout_now(&text);
        }
    }
}

/// Writes to stdout (or adds to a [`hold`]); a closed pipe is ignored,
/// other errors are reported once on stderr.
pub fn write_stdout(args: std::fmt::Arguments) {
    let text = args.to_string();
    let text = clean(&text);
    let held = HELD.with(|held| match held.borrow_mut().as_mut() {
        Some(buffer) => {
            buffer.push_str(&text);
            true
        }
        None => false,
    });
    if !held {
        write_stdout_now(&text);
    }
}

/// [`write_stdout`] of text already [`clean`]ed, now.
fn write_stdout_now(text: &str) {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    static REPORTED: AtomicBool = AtomicBool::new(false);
    let mut stream = anstream::AutoStream::new(std::io::stdout().lock(), choice(false));
    // Stripped here, not by the stream: it writes each line apart, and
    // stdout, line-buffered, would make each of those a `write`.
    let written = match stream.current_choice() {
        anstream::ColorChoice::Never => {
            let plain = anstream::adapter::strip_str(text).to_string();
            stream.into_inner().write_all(plain.as_bytes())
        }
        _ => stream.write_all(text.as_bytes()),
    };
    if let Err(e) = written
        && e.kind() != std::io::ErrorKind::BrokenPipe
        && !REPORTED.swap(true, Ordering::Relaxed)
    {
        errln!("cannot write to standard output: {e}");
    }
}

/// The escape sequences stead itself prints ([`Paint`]'s anstyle styles);
/// every other control character is escaped by [`clean`].
const OWN_SEQUENCES: [&str; 5] = ["\x1b[0m", "\x1b[1m", "\x1b[31m", "\x1b[32m", "\x1b[33m"];

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

/// When to colour: `--color auto|always|never`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ColorWhen {
    /// On a terminal, unless `NO_COLOR` is set; `CLICOLOR_FORCE` forces it.
    #[default]
    Auto,
    /// Also when the output is a pipe or a file, whatever the environment.
    Always,
    /// Never, whatever the environment.
    Never,
}

/// The `--color` of this run, set once by `main` before anything prints.
static COLOR_WHEN: std::sync::OnceLock<ColorWhen> = std::sync::OnceLock::new();

/// Records this run's `--color` (`--no-color`, deprecated, means `never`).
pub fn set_color(when: ColorWhen) {
    let _ = COLOR_WHEN.set(when);
}

/// The one colour decision, for a stream that is (or is not) a terminal:
/// `always`/`never` are final; `auto` is off when `NO_COLOR` is non-empty,
/// on when `CLICOLOR_FORCE` is non-empty and not `0`, else on only on a
/// terminal that is not `TERM=dumb`. `var` reads the environment.
pub fn decide(
    when: ColorWhen,
    is_terminal: bool,
    var: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> bool {
    let set = |name: &str| var(name).filter(|v| !v.is_empty());
    match when {
        ColorWhen::Always => true,
        ColorWhen::Never => false,
        ColorWhen::Auto if set("NO_COLOR").is_some() => false,
        ColorWhen::Auto if set("CLICOLOR_FORCE").is_some_and(|v| v != "0") => true,
        ColorWhen::Auto => is_terminal && var("TERM").is_none_or(|t| t != "dumb"),
    }
}

/// Whether colour reaches stdout (`false`) or stderr (`true`); decided once.
pub fn colors(stderr: bool) -> bool {
    use std::io::IsTerminal;
    static OUT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    static ERR: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let when = COLOR_WHEN.get().copied().unwrap_or_default();
    let env = |name: &str| std::env::var_os(name);
    if stderr {
        *ERR.get_or_init(|| decide(when, std::io::stderr().is_terminal(), env))
    } else {
        *OUT.get_or_init(|| decide(when, std::io::stdout().is_terminal(), env))
    }
}

/// The decision as anstream's choice for a stream.
fn choice(stderr: bool) -> anstream::ColorChoice {
    if colors(stderr) {
        anstream::ColorChoice::AlwaysAnsi
    } else {
        anstream::ColorChoice::Never
    }
}

const RED: anstyle::Style = anstyle::AnsiColor::Red.on_default().bold();
const GREEN: anstyle::Style = anstyle::AnsiColor::Green.on_default();
const YELLOW: anstyle::Style = anstyle::AnsiColor::Yellow.on_default();
const BOLD: anstyle::Style = anstyle::Style::new().bold();

/// Styles text (anstyle). Every styled string is written through
/// [`write_stdout`]/[`write_stderr`], whose stream drops the styles when the
/// colour decision ([`colors`]) is off: the decision is made in one place.
#[derive(Debug, Clone, Copy, Default)]
pub struct Paint;

impl Paint {
    fn wrap(style: anstyle::Style, text: &str) -> String {
        format!("{}{text}{}", style.render(), style.render_reset())
    }

    pub fn bold(&self, text: &str) -> String {
        Self::wrap(BOLD, text)
    }

    pub fn red(&self, text: &str) -> String {
        Self::wrap(RED, text)
    }

    pub fn green(&self, text: &str) -> String {
        Self::wrap(GREEN, text)
    }

    pub fn yellow(&self, text: &str) -> String {
        Self::wrap(YELLOW, text)
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

    #[test]
    fn a_hold_keeps_cleaned_lines_until_its_outer_guard_drops() {
        let held = || HELD.with(|h| h.borrow().clone());
        assert_eq!(held(), None);
        let outer = hold();
        outln!("one \u{1b}[2J");
        {
            let _inner = hold();
            outln!("two");
        }
        // The inner guard wrote nothing: the outer one still holds both.
        assert_eq!(held().as_deref(), Some("one \\u{1b}[2J\ntwo\n"));
        // Taken here so that the test prints nothing when `outer` drops.
        HELD.with(|h| h.borrow_mut().take());
        drop(outer);
        assert_eq!(held(), None);
    }

    #[test]
    fn own_styles_survive_clean() {
        let p = Paint;
        for styled in [p.red("x"), p.green("x"), p.yellow("x"), p.bold("x")] {
            assert_eq!(clean(&styled), styled);
        }
    }

    #[test]
    fn the_colour_decision() {
        use ColorWhen::*;
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        assert!(decide(Auto, true, env(&[("TERM", "xterm")])));
        assert!(!decide(Auto, false, env(&[])));
        assert!(!decide(Auto, true, env(&[("TERM", "dumb")])));
        assert!(!decide(Auto, true, env(&[("NO_COLOR", "1")])));
        assert!(decide(Auto, true, env(&[("NO_COLOR", "")])));
        assert!(decide(Auto, false, env(&[("CLICOLOR_FORCE", "1")])));
        assert!(!decide(Auto, false, env(&[("CLICOLOR_FORCE", "0")])));
        assert!(!decide(
            Auto,
            false,
            env(&[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")])
        ));
        assert!(decide(Always, false, env(&[("NO_COLOR", "1")])));
        assert!(!decide(Never, true, env(&[("CLICOLOR_FORCE", "1")])));
    }
}
