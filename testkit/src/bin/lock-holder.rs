//! `lock-holder --state-dir DIR [--operation OP]`
//!
//! Takes the state lock as the CLI does (lock config from the state dir,
//! machine id made on first use), prints `acquired <pid>`, then holds the lock
//! until stdin reaches EOF, releases it and exits 0. If the lock cannot be
//! taken, prints the error on stderr and exits 3. Lock events (a stale lock
//! removed, waiting) are told on stderr as `event: ...` lines.

use std::io::{self, Read};
use std::path::Path;
use std::process::ExitCode;

use stead_lib::lock::{self, LockConfig, LockRequest};
use stead_testkit::{Args, Failure, finish, layout_for, machine_id, report_event, say};

fn main() -> ExitCode {
    finish(run())
}

fn run() -> Result<(), Failure> {
    let args = Args::parse(&["state-dir", "operation"])?;
    let layout = layout_for(Path::new(args.required("state-dir")?));
    let operation = args.optional("operation").unwrap_or("hold");

    let config = LockConfig::load(&layout).map_err(Failure::usage)?;
    let request = LockRequest::new(operation, &machine_id(&layout)?);
    let guard =
        lock::acquire(&layout, &config, &request, &mut report_event).map_err(Failure::locked)?;
    say(format_args!("acquired {}", std::process::id()))?;

    // Hold until the test closes our stdin (or dies, which closes it too).
    io::stdin()
        .lock()
        .read_to_end(&mut Vec::new())
        .map_err(|e| Failure::usage(format!("cannot read stdin: {e}")))?;

    guard.release().map_err(Failure::usage)?;
    Ok(())
}
