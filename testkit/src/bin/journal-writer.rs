//! `journal-writer <path> <n> [detail-bytes [nosync]]`
//!
//! Appends to the journal at `<path>` as one apply run does: a `run-start`
//! record (waited on), then `n` op records from 4 threads at once through one
//! group-committing [`JournalWriter`]. Each thread appends a record, waits for
//! its ticket, and only then prints the record's `op_id` on stdout (one
//! `write` per line, flushed): every id printed is acknowledged durable. A
//! `detail` of `detail-bytes` characters (default 0) makes records long, so
//! that a batch spans several pages and a kill can cut a write short. With
//! `nosync` the writer never fsyncs (as the `journal-nosync` build): a killed
//! process still loses nothing it acknowledged (the page cache outlives it),
//! and the writer spends its time in `write`, where a kill tears a line. Ends
//! with a `run-end` record and exits 0; a test kills it long before that.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

use stead_lib::engine::{self, RunJournal};
use stead_lib::journal::{JournalAction, JournalWriter, OpState};
use stead_testkit::{Failure, finish};

const THREADS: usize = 4;

fn main() -> ExitCode {
    finish(run())
}

fn run() -> Result<(), Failure> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || Failure::usage("usage: journal-writer PATH N [DETAIL-BYTES [nosync]]");
    let (path, n, detail_bytes, sync) = match args.as_slice() {
        [path, n] => (path, n, None, true),
        [path, n, d] => (path, n, Some(d), true),
        [path, n, d, nosync] if nosync == "nosync" => (path, n, Some(d), false),
        _ => return Err(usage()),
    };
    let n: u64 = n
        .parse()
        .map_err(|e| Failure::usage(format!("N {n:?}: {e}")))?;
    let detail_bytes: usize = match detail_bytes {
        None => 0,
        Some(d) => d
            .parse()
            .map_err(|e| Failure::usage(format!("DETAIL-BYTES {d:?}: {e}")))?,
    };

    let writer = JournalWriter::open(Path::new(path), sync).map_err(Failure::usage)?;
    let run = RunJournal::new(writer, engine::new_run_id());
    let run_op = format!("{}:0", run.run_id());
    run.writer()
        .append_durable(run.record(&run_op, "run", JournalAction::RunStart, OpState::Started))
        .map_err(Failure::usage)?;

    let next = AtomicU64::new(1);
    let outcome: Result<(), Failure> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (run, next) = (&run, &next);
                s.spawn(move || -> Result<(), Failure> {
                    loop {
                        let k = next.fetch_add(1, Ordering::SeqCst);
                        if k > n {
                            return Ok(());
                        }
                        let op_id = format!("{}:{k}", run.run_id());
                        let mut record = run.record(
                            &op_id,
                            &format!("file.t{t}"),
                            JournalAction::Create,
                            OpState::Started,
                        );
                        if detail_bytes > 0 {
                            record.detail = Some(detail_for(k, detail_bytes));
                        }
                        let done = run
                            .writer()
                            .append(record)
                            .wait()
                            .map_err(Failure::usage)
                            .and_then(|()| print_line(&op_id));
                        if let Err(failure) = done {
                            // The other threads stop too.
                            next.store(n.saturating_add(1), Ordering::SeqCst);
                            return Err(failure);
                        }
                    }
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| {
            w.join()
                .unwrap_or_else(|_| Err(Failure::usage("a writer thread panicked")))
        })
    });
    outcome?;

    run.writer()
        .append_durable(run.record(&run_op, "run", JournalAction::RunEnd, OpState::Succeeded))
        .map_err(Failure::usage)?;
    run.into_writer().close().map_err(Failure::usage)
}

/// The detail of op `k`: `bytes` characters a test can recompute and check.
fn detail_for(k: u64, bytes: usize) -> String {
    let digit = char::from(b'0' + (k % 10) as u8);
    std::iter::repeat_n(digit, bytes).collect()
}

/// Prints `line` and its newline in a single write, so that a kill never
/// leaves half an id on stdout.
fn print_line(line: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_all(format!("{line}\n").as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Failure::usage(format!("cannot write to stdout: {e}")))
}
