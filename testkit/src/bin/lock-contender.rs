//! `lock-contender --state-dir DIR --rounds N --marker PATH --counter PATH`
//!
//! Prints `ready` once set up, then waits for a line (or EOF) on stdin, so a
//! test can start many contenders at the same instant. Then, N times: takes
//! the state lock (retrying per `lock_config.json`), and inside it
//!
//! - creates `marker` with `O_CREAT|O_EXCL`: finding it already there means
//!   another process is inside the lock too (an overlap);
//! - reads the integer in `counter`, yields the CPU, writes it back plus one:
//!   a torn read or a lost update also proves an overlap (the test compares
//!   the final count with the number of rounds);
//! - removes the marker (finding it gone is an overlap as well);
//!
//! and releases the lock. At the end it prints `overlaps <n>` and exits 0.
//! Exit 3 if the lock could not be taken, 2 on any other failure.

use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, ErrorKind};
use std::path::Path;
use std::process::ExitCode;

use stead_lib::lock::{self, LockConfig, LockRequest};
use stead_testkit::{Args, Failure, finish, layout_for, machine_id, report_event, say};

fn main() -> ExitCode {
    finish(run())
}

fn run() -> Result<(), Failure> {
    let args = Args::parse(&["state-dir", "rounds", "marker", "counter"])?;
    let layout = layout_for(Path::new(args.required("state-dir")?));
    let rounds: u32 = args.number("rounds")?;
    let marker = Path::new(args.required("marker")?);
    let counter = Path::new(args.required("counter")?);

    let config = LockConfig::load(&layout).map_err(Failure::usage)?;
    let request = LockRequest::new("contend", &machine_id(&layout)?);

    say("ready")?;
    io::stdin()
        .lock()
        .read_line(&mut String::new())
        .map_err(|e| Failure::usage(format!("cannot read stdin: {e}")))?;

    let mut overlaps: u64 = 0;
    for _ in 0..rounds {
        let guard = lock::acquire(&layout, &config, &request, &mut report_event)
            .map_err(Failure::locked)?;

        let own_marker = match OpenOptions::new().write(true).create_new(true).open(marker) {
            Ok(_) => true,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                overlaps += 1;
                false
            }
            Err(e) => {
                return Err(Failure::usage(format!(
                    "cannot create {}: {e}",
                    marker.display()
                )));
            }
        };

        let raw = fs::read_to_string(counter)
            .map_err(|e| Failure::usage(format!("cannot read {}: {e}", counter.display())))?;
        let value: u64 = match raw.trim().parse() {
            Ok(v) => v,
            Err(_) => {
                // Another writer truncated it under us.
                overlaps += 1;
                0
            }
        };
        // Give a concurrent process (if the lock let one in) the chance to
        // interleave its read-modify-write with ours.
        std::thread::yield_now();
        fs::write(counter, format!("{}\n", value + 1))
            .map_err(|e| Failure::usage(format!("cannot write {}: {e}", counter.display())))?;

        if own_marker {
            match fs::remove_file(marker) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => overlaps += 1,
                Err(e) => {
                    return Err(Failure::usage(format!(
                        "cannot remove {}: {e}",
                        marker.display()
                    )));
                }
            }
        }

        guard.release().map_err(Failure::usage)?;
    }
    say(format_args!("overlaps {overlaps}"))
}
