//! A command's output (stdout and stderr share one pipe, so lines keep the
//! order they were written in), read on a thread: drained to the end (so
//! the command never blocks on a full pipe), kept only up to a cap (its
//! start and its end, with what was cut in between said) as the exact
//! bytes written, and stopped when asked, so that a background child
//! holding the pipe open cannot hold up the run.

use std::collections::VecDeque;
use std::fs::File;
use std::io::PipeReader;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// Bytes kept of the start of each stream (what the command set out to do)...
const KEEP_HEAD: usize = 8 * 1024;
/// ...and of its end, where a failing command usually says why. At most
/// 32 KiB in all: plenty to show a failure, and a
/// command printing megabytes cannot fill memory, the terminal or the
/// journal with them.
const KEEP_TAIL: usize = 24 * 1024;

/// How often a reader with no output coming looks whether it was told to stop.
const TICK: Duration = Duration::from_millis(100);

/// Read rounds after the stop time: what the command wrote before it is in
/// the pipe already and takes a round or two; a child still writing cannot
/// keep the reader going.
const FINAL_ROUNDS: usize = 16;

/// The kept bytes.
#[derive(Default)]
struct Capped {
    head: Vec<u8>,
    tail: VecDeque<u8>,
    cut: u64,
}

impl Capped {
    fn push(&mut self, bytes: &[u8]) {
        let n = KEEP_HEAD.saturating_sub(self.head.len()).min(bytes.len());
        self.head.extend_from_slice(&bytes[..n]);
        self.tail.extend(&bytes[n..]);
        let over = self.tail.len().saturating_sub(KEEP_TAIL);
        if over > 0 {
            self.tail.drain(..over);
            self.cut += over as u64;
        }
    }

    /// The bytes as written, any bytes at all (not only UTF-8), with a
    /// note where some were cut.
    fn into_bytes(self) -> Vec<u8> {
        let mut kept = self.head;
        if self.cut > 0 {
            kept.extend_from_slice(format!("\n(… {} bytes cut)\n", self.cut).as_bytes());
        }
        kept.extend(self.tail);
        kept
    }
}

/// The reading of one command's output, running on its thread.
pub(super) struct Capture {
    stop: mpsc::Sender<Instant>,
    thread: JoinHandle<Vec<Capped>>,
}

/// Starts reading the read end of the pipe the command writes both its
/// stdout and its stderr to.
pub(super) fn start(output: PipeReader) -> Capture {
    let streams = vec![File::from(OwnedFd::from(output))];
    let (stop, told) = mpsc::channel();
    let thread = std::thread::spawn(move || read_streams(streams, &told));
    Capture { stop, thread }
}

impl Capture {
    /// Reads on until every stream ends or `until` passes (then only what
    /// is in the pipes already), and returns the bytes kept, in the order
    /// they were written.
    pub(super) fn finish(self, until: Instant) -> Vec<u8> {
        self.finish_kept(until)
            .into_iter()
            .flat_map(Capped::into_bytes)
            .collect()
    }

    /// [`Capture::finish`] for a value that must be whole: its bytes, or
    /// `Err(total)` when more than the cap was written.
    pub(super) fn finish_whole(self, until: Instant) -> Result<Vec<u8>, u64> {
        let kept = self.finish_kept(until);
        let total: u64 = kept
            .iter()
            .map(|c| c.cut + (c.head.len() + c.tail.len()) as u64)
            .sum();
        if kept.iter().any(|c| c.cut > 0) {
            return Err(total);
        }
        Ok(kept.into_iter().flat_map(Capped::into_bytes).collect())
    }

    fn finish_kept(self, until: Instant) -> Vec<Capped> {
        // A reader that already ended dropped its receiver; nothing to tell.
        let _ = self.stop.send(until);
        self.thread.join().unwrap_or_default()
    }
}

/// The most a value read whole may be (what is kept of a stream).
pub(super) const WHOLE_MAX: usize = KEEP_HEAD + KEEP_TAIL;

fn read_streams(mut streams: Vec<File>, told: &mpsc::Receiver<Instant>) -> Vec<Capped> {
    let mut kept: Vec<Capped> = streams.iter().map(|_| Capped::default()).collect();
    let mut open: Vec<bool> = streams.iter().map(|_| true).collect();
    let mut until: Option<Instant> = None;
    while open.contains(&true) {
        if until.is_none() {
            match told.try_recv() {
                Ok(t) => until = Some(t),
                Err(mpsc::TryRecvError::Disconnected) => until = Some(Instant::now()),
                Err(mpsc::TryRecvError::Empty) => {}
            }
        }
        let wait = match until {
            Some(t) if Instant::now() >= t => {
                // Only what is in the pipes already, a bounded number of reads.
                for _ in 0..FINAL_ROUNDS {
                    match ready_streams(&streams, &open, Duration::ZERO) {
                        Some(ready) if !ready.is_empty() => {
                            for i in ready {
                                read_once(&mut streams[i], &mut kept[i], &mut open[i]);
                            }
                        }
                        _ => break,
                    }
                }
                break;
            }
            Some(t) => t.saturating_duration_since(Instant::now()).min(TICK),
            None => TICK,
        };
        let Some(ready) = ready_streams(&streams, &open, wait) else {
            break;
        };
        for i in ready {
            read_once(&mut streams[i], &mut kept[i], &mut open[i]);
        }
    }
    kept
}

/// The open streams with something to read (or at their end), after
/// waiting up to `wait`; `None` if polling itself failed.
fn ready_streams(streams: &[File], open: &[bool], wait: Duration) -> Option<Vec<usize>> {
    let indices: Vec<usize> = (0..streams.len()).filter(|&i| open[i]).collect();
    let mut fds: Vec<PollFd> = indices
        .iter()
        .map(|&i| PollFd::new(streams[i].as_fd(), PollFlags::POLLIN))
        .collect();
    let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX);
    match poll(&mut fds, timeout) {
        Ok(_) => {}
        Err(Errno::EINTR) => return Some(Vec::new()),
        Err(_) => return None,
    }
    Some(
        indices
            .into_iter()
            .zip(&fds)
            .filter(|(_, fd)| fd.revents().is_some_and(|r| !r.is_empty()))
            .map(|(i, _)| i)
            .collect(),
    )
}

/// One read of a ready stream (it does not block): kept, or the stream closed.
fn read_once(stream: &mut File, kept: &mut Capped, open: &mut bool) {
    let mut buf = [0u8; 64 * 1024];
    match stream.read(&mut buf) {
        Ok(0) => *open = false,
        Ok(n) => kept.push(&buf[..n]),
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
        Err(_) => *open = false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_output_is_kept_whole() {
        let mut c = Capped::default();
        c.push(b"hello ");
        c.push("wörld\n".as_bytes());
        c.push(b"\xff\xfe\n");
        assert_eq!(c.into_bytes(), b"hello w\xc3\xb6rld\n\xff\xfe\n");
    }

    #[test]
    fn long_output_keeps_its_start_and_end_and_says_what_was_cut() {
        let mut c = Capped::default();
        c.push(b"START");
        for _ in 0..1000 {
            c.push(&[b'x'; 1000]);
        }
        c.push(b"END");
        let total = 5 + 1000 * 1000 + 3;
        let cut = total - KEEP_HEAD - KEEP_TAIL;
        let text = String::from_utf8(c.into_bytes()).unwrap();
        assert!(text.starts_with("STARTxxx"), "{}", &text[..20]);
        assert!(text.ends_with("xxxEND"));
        assert!(text.contains(&format!("\n(… {cut} bytes cut)\n")));
        assert_eq!(
            text.len(),
            KEEP_HEAD + KEEP_TAIL + format!("\n(… {cut} bytes cut)\n").len()
        );
    }
}
