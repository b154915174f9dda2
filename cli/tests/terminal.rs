//! stead on a real terminal (a pty): the confirm prompt (no leaves nothing,
//! not even a state dir, on a first run; yes applies), the progress bar,
//! and Ctrl-C during an apply (one summary line, exit 130). Every wait is
//! for a pattern or an exit, with a deadline.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use common::Repo;
use portable_pty::{CommandBuilder, PtySize, native_pty_system};

const DEADLINE: Duration = Duration::from_secs(60);

/// A stead running on a pty: what it wrote, and its exit.
struct Term {
    output: Receiver<Vec<u8>>,
    seen: String,
    writer: Box<dyn Write + Send>,
    exit: Receiver<u32>,
    killer: Box<dyn portable_pty::ChildKiller + Send + Sync>,
    exited: bool,
}

impl Term {
    /// `stead --home <home> --config <config> ARGS` on a new pty.
    fn start(repo: &Repo, args: &[&str]) -> Term {
        Term::start_piped(repo, args, false)
    }

    /// [`Term::start`]; with `pipe_stdout`, stead's stdout goes through a
    /// pipe (`stead ... | cat`, as `stead apply | tee log`).
    fn start_piped(repo: &Repo, args: &[&str], pipe_stdout: bool) -> Term {
        let pair = native_pty_system()
            .openpty(PtySize {
                rows: 40,
                cols: 160,
                pixel_width: 0,
                pixel_height: 0,
            })
            .expect("open a pty");
        let stead = assert_cmd::cargo::cargo_bin("stead");
        let mut cmd = if pipe_stdout {
            let mut sh = CommandBuilder::new("sh");
            sh.args(["-c", "\"$0\" \"$@\" | cat"]);
            sh.arg(&stead);
            sh
        } else {
            CommandBuilder::new(&stead)
        };
        for var in [
            "STEAD_HOME",
            "STEAD_STATE_DIR",
            "STEAD_CONFIG",
            "CLICOLOR_FORCE",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("HOME", repo.home());
        cmd.env("NO_COLOR", "1");
        cmd.env("TERM", "xterm");
        cmd.cwd(repo.home());
        cmd.arg("--home");
        cmd.arg(repo.home());
        cmd.arg("--config");
        cmd.arg(repo.config.path());
        cmd.args(args);
        let mut child = pair.slave.spawn_command(cmd).expect("spawn stead");
        // Only the child holds the terminal's slave side now: its end is EOF.
        drop(pair.slave);
        let killer = child.clone_killer();
        let (exit_tx, exit) = channel();
        std::thread::spawn(move || {
            let code = child.wait().map(|s| s.exit_code()).unwrap_or(u32::MAX);
            let _ = exit_tx.send(code);
        });
        let mut reader = pair.master.try_clone_reader().expect("pty reader");
        let writer = pair.master.take_writer().expect("pty writer");
        let (tx, output) = channel();
        std::thread::spawn(move || {
            // Keeps the master open as long as the reader reads.
            let _master = pair.master;
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Term {
            output,
            seen: String::new(),
            writer,
            exit,
            killer,
            exited: false,
        }
    }

    /// Reads until the output holds `pattern` (panics with what was seen
    /// when the deadline passes first).
    fn expect(&mut self, pattern: &str) {
        let deadline = Instant::now() + DEADLINE;
        while !self.seen.contains(pattern) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.output.recv_timeout(left) {
                Ok(chunk) => self.seen.push_str(&String::from_utf8_lossy(&chunk)),
                Err(_) => panic!("never saw {pattern:?}; the terminal showed:\n{}", self.seen),
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write to the pty");
        self.writer.flush().expect("flush the pty");
    }

    /// Waits for the exit code, then for what is left of the output.
    fn finish(&mut self) -> u32 {
        let code = self
            .exit
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|_| panic!("stead did not exit; it showed:\n{}", self.seen));
        self.exited = true;
        while let Ok(chunk) = self.output.recv_timeout(Duration::from_secs(5)) {
            self.seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        code
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        // A failed test leaves no stead behind.
        if !self.exited {
            let _ = self.killer.kill();
        }
    }
}

/// Waits (bounded) until `path` exists.
fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + DEADLINE;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

const TWO_FILES: &str = "[file.a]\npath = \"~/a.txt\"\ncontent = \"a\\n\"\n\n\
                         [file.b]\npath = \"~/b.txt\"\ncontent = \"b\\n\"\n";

#[test]
fn no_at_the_first_prompt_changes_nothing_and_writes_no_state() {
    let repo = Repo::new(TWO_FILES);
    let mut term = Term::start(&repo, &["apply"]);
    term.expect("+ file.a");
    term.expect("Apply these changes? [y/N]");
    term.send(b"n\r");
    term.expect("Apply cancelled");
    assert_eq!(term.finish(), 0, "{}", term.seen);
    assert!(!repo.path("a.txt").exists());
    assert!(
        !repo.sb.state_dir().exists(),
        "a first run that was refused wrote {}",
        repo.sb.state_dir().display()
    );
}

#[test]
fn yes_at_the_prompt_applies() {
    let repo = Repo::new(TWO_FILES);
    let mut term = Term::start(&repo, &["apply"]);
    term.expect("Apply these changes? [y/N]");
    term.send(b"y\r");
    term.expect("Apply complete");
    assert_eq!(term.finish(), 0, "{}", term.seen);
    assert_eq!(
        std::fs::read_to_string(repo.path("a.txt")).expect("a"),
        "a\n"
    );
    assert!(repo.sb.state_file().exists());
    // Asked once: the plan agreed to on the first run is not asked again.
    assert_eq!(term.seen.matches("Apply these changes?").count(), 1);
}

#[test]
fn the_prompt_asks_when_only_stdin_is_a_terminal() {
    let repo = Repo::new(TWO_FILES);
    let mut term = Term::start_piped(&repo, &["apply"], true);
    term.expect("Apply these changes (2 to create, 0 to update, 0 to remove)? [y/N]");
    term.send(b"y\r");
    term.expect("Apply complete");
    assert_eq!(term.finish(), 0, "{}", term.seen);
    assert_eq!(
        std::fs::read_to_string(repo.path("b.txt")).expect("b"),
        "b\n"
    );
}

/// An exec that runs until the test creates `release`, between files.
const SLOW: &str = r#"
[file.early]
path = "~/early.txt"
content = "early\n"
before = ["exec.slow"]

[exec.slow]
command = "touch started; i=0; while [ ! -e release ]; do i=$((i+1)); [ $i -gt 1200 ] && exit 1; sleep 0.05; done; touch finished"

[file.after1]
path = "~/after1.txt"
content = "after\n"
after = ["exec.slow"]

[file.after2]
path = "~/after2.txt"
content = "after\n"
after = ["exec.slow"]
"#;

#[test]
fn the_progress_bar_shows_elapsed_rate_and_eta_on_a_terminal() {
    let repo = Repo::new(SLOW);
    let mut term = Term::start(&repo, &["apply", "--yes"]);
    wait_for_file(&repo.path("started"));
    term.expect("elapsed");
    term.expect("ETA");
    std::fs::write(repo.path("release"), "").expect("release");
    term.expect("Apply complete");
    assert_eq!(term.finish(), 0, "{}", term.seen);
}

#[test]
fn ctrl_c_during_an_apply_says_one_summary_line_and_exits_130() {
    let repo = Repo::new(SLOW);
    let mut term = Term::start(&repo, &["apply", "--yes"]);
    wait_for_file(&repo.path("started"));
    term.send(b"\x03");
    term.expect("Stopping");
    std::fs::write(repo.path("release"), "").expect("release");
    term.expect("Interrupted:");
    assert_eq!(term.finish(), 130, "{}", term.seen);
    let seen = &term.seen;
    assert!(seen.contains("2 finished"), "{seen}");
    assert!(seen.contains("2 not started"), "{seen}");
    assert_eq!(seen.matches("Interrupted:").count(), 1, "{seen}");
    assert!(
        !seen.contains("after1 skipped"),
        "no line per unstarted change: {seen}"
    );
    assert!(repo.path("finished").exists(), "the running step finished");
    assert!(!repo.path("after1.txt").exists(), "nothing new started");
}

/// The screen a terminal shows after `bytes` (what a user would see).
fn screen(bytes: &str) -> String {
    let size = |n: u16| std::num::NonZeroU16::new(n).expect("a size");
    let mut parser = vt100::Parser::new(size(40), size(160), 0);
    parser.process(bytes.as_bytes());
    parser.screen().contents()
}

#[test]
fn the_stopping_message_stays_on_screen_and_the_bar_leaves_no_stale_copy() {
    let repo = Repo::new(SLOW);
    let mut term = Term::start(&repo, &["apply", "--yes"]);
    wait_for_file(&repo.path("started"));
    term.expect("ETA");
    term.send(b"\x03");
    term.expect("Press Ctrl-C again");
    // The running step ends: the bar steps once more, then clears.
    std::fs::write(repo.path("release"), "").expect("release");
    term.expect("Interrupted:");
    assert_eq!(term.finish(), 130, "{}", term.seen);
    let shown = screen(&term.seen);
    // The bar steps aside for the message: no stale copy of it is left.
    assert!(!shown.contains("ETA"), "a stale progress bar:\n{shown}");
    for line in [
        "Stopping: running steps finish and nothing new starts; the journal and the state are written.",
        "Press Ctrl-C again to kill the running commands.",
    ] {
        assert!(
            shown.lines().any(|l| l.trim_end() == line),
            "{line:?} is not a line of the screen:\n{shown}"
        );
    }
}

#[test]
fn apply_on_a_terminal_asks_for_a_step_for_an_unchosen_error_item() {
    let repo = Repo::new(
        "[check.db]\ncommand = \"if [ -e \\\"$STEAD_HOME/done\\\" ]; then echo '{\\\"items\\\": []}'; else cat report.json; fi\"\n",
    );
    repo.write_source(
        "report.json",
        r#"{"items": [{"id": "behind", "severity": "error", "message": "at version 1",
  "steps": [{"id": "dump", "title": "dump and restore", "command": "echo dump > \"$STEAD_HOME/done\""},
            {"id": "migrate", "title": "migrate in place", "command": "echo migrate > \"$STEAD_HOME/done\""}],
  "default": "migrate"}]}"#,
    );
    repo.ok(&["init"]);
    let mut term = Term::start(&repo, &["apply"]);
    term.expect("db/behind (error): at version 1");
    term.expect("2) migrate: migrate in place");
    term.expect("Which step? [1-2, default 2]");
    term.send(b"\r");
    term.expect("check.db/behind/migrate");
    term.expect("Apply these changes? [y/N]");
    term.send(b"y\r");
    term.expect("Apply complete");
    assert_eq!(term.finish(), 0, "{}", term.seen);
    assert_eq!(
        std::fs::read_to_string(repo.path("done")).unwrap(),
        "migrate\n"
    );
}
