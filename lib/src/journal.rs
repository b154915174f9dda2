//! The operation journal, `<state-dir>/journal.jsonl`: append-only JSON
//! lines, written by one thread that group-commits (one fsync covers every
//! record queued meanwhile), read back tolerating a torn last line, and
//! compacted after a clean run.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::fsutil::{self, FsError};

/// The journal's file name in the state dir.
pub const JOURNAL_FILE: &str = "journal.jsonl";

/// Whether the journal fsyncs: always, except in a build with the
/// `journal-nosync` feature, made only to measure the journal's cost.
pub const JOURNAL_SYNC: bool = !cfg!(feature = "journal-nosync");

/// Where an operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpState {
    /// About to start its side effect (durable before it begins).
    Started,
    /// Still going (a long step may say so).
    Running,
    /// Done.
    Succeeded,
    /// Ended without doing its job.
    Failed,
}

/// What a journal record is about. Written as the same strings as before
/// (`create`, `run-start`, ...); a value this version does not know (written
/// by a newer one) loads as [`JournalAction::Other`] and is kept as is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum JournalAction {
    /// A declared resource is created.
    Create,
    /// A declared resource is updated (or an exec runs).
    Update,
    /// A resource is removed.
    Remove,
    /// A conflict (never executed; here for completeness).
    Conflict,
    /// Nothing to do (never executed; here for completeness).
    Unchanged,
    /// A run began (resource `run`).
    RunStart,
    /// A run ended, after its state was committed (resource `run`).
    RunEnd,
    /// A refresh set on, or consumed by, a `refresh_only` exec.
    Refresh,
    /// A batch of file writes made durable together (resource `batch`, the
    /// files in `members`).
    Write,
    /// An action this version does not know.
    Other(String),
}

impl JournalAction {
    /// The name written in the journal.
    pub fn as_str(&self) -> &str {
        match self {
            JournalAction::Create => "create",
            JournalAction::Update => "update",
            JournalAction::Remove => "remove",
            JournalAction::Conflict => "conflict",
            JournalAction::Unchanged => "unchanged",
            JournalAction::RunStart => "run-start",
            JournalAction::RunEnd => "run-end",
            JournalAction::Refresh => REFRESH,
            JournalAction::Write => "write",
            JournalAction::Other(s) => s,
        }
    }

    /// The journal action of executing a planned change.
    pub fn of(action: crate::resource::Action) -> JournalAction {
        use crate::resource::Action;
        match action {
            Action::Create => JournalAction::Create,
            Action::Update => JournalAction::Update,
            Action::Remove => JournalAction::Remove,
            Action::Conflict => JournalAction::Conflict,
            Action::Unchanged => JournalAction::Unchanged,
        }
    }
}

impl From<String> for JournalAction {
    fn from(s: String) -> Self {
        match s.as_str() {
            "create" => JournalAction::Create,
            "update" => JournalAction::Update,
            "remove" => JournalAction::Remove,
            "conflict" => JournalAction::Conflict,
            "unchanged" => JournalAction::Unchanged,
            "run-start" => JournalAction::RunStart,
            "run-end" => JournalAction::RunEnd,
            REFRESH => JournalAction::Refresh,
            "write" => JournalAction::Write,
            _ => JournalAction::Other(s),
        }
    }
}

impl From<JournalAction> for String {
    fn from(a: JournalAction) -> String {
        a.as_str().to_string()
    }
}

impl std::fmt::Display for JournalAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, so widths and alignment (`{:<10}`) apply as to a string.
        f.pad(self.as_str())
    }
}

/// One journal line.
///
/// A run's view reads it through a twin without the members
/// (`WithoutMembers`, below): a field added here must be added there too,
/// which its conversion into a `Record` enforces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Unique per operation: `<run_id>:<n>`.
    pub op_id: String,
    /// The run it belongs to.
    pub run_id: String,
    /// `kind.name`, `run` for the run's own records, or `batch` for a batch
    /// of file writes (its files in `members`).
    pub resource: String,
    /// `create`, `update`, `remove`, `run-start`, `run-end`, ...
    pub action: JournalAction,
    /// Where it is.
    pub state: OpState,
    /// A one-shot step's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idemp_key: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
    /// A short note (a failure's first line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The resources of a batch record: on its `started` record every file
    /// the batch writes, on its `succeeded` record those it wrote (a member
    /// that failed has its own `failed` record with the batch's `op_id`).
    /// Absent in records of one resource, and in journals of earlier versions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
    /// What a command wrote (stdout and stderr in order), the exact bytes
    /// as captured (capped): text when UTF-8, else `{"hex": ...}`.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        with = "crate::resource::bytes_text"
    )]
    pub output: Vec<u8>,
}

impl Record {
    /// The resources this record is about: a batch's members, else its
    /// `resource`.
    pub fn subjects(&self) -> impl Iterator<Item = &str> {
        let own = self.members.is_empty().then_some(self.resource.as_str());
        self.members.iter().map(String::as_str).chain(own)
    }
}

/// What can go wrong with the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A filesystem operation failed.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// A line before the last one is not a record: the file was moved aside.
    #[error(
        "the journal {path} is corrupt at line {line}: {problem}\n\
         It was moved aside to {moved_to} (nothing was truncated); the next run starts a new journal.\n\
         Look at the moved file if a run was interrupted, then run the command again."
    )]
    CorruptMiddle {
        /// The journal.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What the parser said.
        problem: String,
        /// Where the file went.
        moved_to: PathBuf,
    },
    /// A line before the last one is not a record, found by a command that
    /// writes nothing (`plan`, a dry run): the file was left as it is.
    #[error(
        "the journal {path} is corrupt at line {line}: {problem}\n\
         Nothing was changed (this command writes nothing). 'stead apply' moves it aside to the \
         backups dir and starts a new journal; look at it first if a run was interrupted."
    )]
    Corrupt {
        /// The journal.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What the parser said.
        problem: String,
    },
    /// The writer thread is gone (it failed earlier, or was closed).
    #[error("the journal writer stopped: {0}")]
    Stopped(String),
}

#[derive(Default)]
struct Queue {
    /// Lines waiting for the writer.
    pending: Vec<(u64, Vec<u8>)>,
    /// Every ticket up to this one is durable.
    durable_through: u64,
    /// The first write error; every later waiter gets it too.
    failed: Option<String>,
    closing: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the writer (work queued) and the waiters (durable moved).
    changed: Condvar,
    next_ticket: AtomicU64,
    syncs: AtomicU64,
}

/// Appends records from many threads; one background thread writes them and
/// makes each batch durable with a single fsync.
pub struct JournalWriter {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// A queued record; [`Ticket::wait`] returns once it is durable.
pub struct Ticket {
    shared: Arc<Shared>,
    n: u64,
}

impl JournalWriter {
    /// Opens (creating, mode 0600) `path` for appending. With `sync = false`
    /// records are written but never fsync'd (only to measure the journal's
    /// cost).
    ///
    /// A torn last line left by a crash (what [`load`] ignores and reports as
    /// `torn_tail`; no ticket ever covered it) is cut off first: appended to,
    /// it would become an unreadable line in the middle of the journal.
    pub fn open(path: &Path, sync: bool) -> Result<JournalWriter, JournalError> {
        let file = crate::ownfile::open_with(
            path,
            OpenOptions::new()
                .create(true)
                .read(true)
                .append(true)
                .mode(0o600),
        )
        .map_err(|e| FsError::new("cannot open", path, e))?;
        cut_torn_tail(&file, path, sync)?;
        if let Some(dir) = path.parent() {
            fsutil::fsync_dir(dir)?;
        }
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            changed: Condvar::new(),
            next_ticket: AtomicU64::new(1),
            syncs: AtomicU64::new(0),
        });
        let for_thread = Arc::clone(&shared);
        let path = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("stead-journal".into())
            .spawn(move || write_loop(&for_thread, file, &path, sync))
            .map_err(|e| JournalError::Stopped(format!("cannot start the writer thread: {e}")))?;
        Ok(JournalWriter {
            shared,
            thread: Some(thread),
        })
    }

    /// Queues `record`; never waits for I/O.
    pub fn append(&self, record: Record) -> Ticket {
        // A record always serializes (strings, an enum and a timestamp).
        let mut line = serde_json::to_vec(&record).unwrap_or_default();
        line.push(b'\n');
        // Numbered under the lock, so every smaller ticket is already queued
        // or written: a batch written through ticket N covers all up to N.
        let n = match self.shared.queue.lock() {
            Ok(mut q) => {
                let n = self.shared.next_ticket.fetch_add(1, Ordering::SeqCst);
                q.pending.push((n, line));
                n
            }
            Err(_) => self.shared.next_ticket.fetch_add(1, Ordering::SeqCst),
        };
        self.shared.changed.notify_all();
        Ticket {
            shared: Arc::clone(&self.shared),
            n,
        }
    }

    /// Appends `record` and waits until it is durable.
    pub fn append_durable(&self, record: Record) -> Result<(), JournalError> {
        self.append(record).wait()
    }

    /// How many fsyncs the writer has done.
    pub fn sync_count(&self) -> u64 {
        self.shared.syncs.load(Ordering::SeqCst)
    }

    /// Writes everything queued, stops the thread, and reports a write error.
    pub fn close(mut self) -> Result<(), JournalError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), JournalError> {
        if let Ok(mut q) = self.shared.queue.lock() {
            q.closing = true;
        }
        self.shared.changed.notify_all();
        if let Some(t) = self.thread.take() {
            t.join()
                .map_err(|_| JournalError::Stopped("the writer thread panicked".into()))?;
        }
        match self.shared.queue.lock() {
            Ok(q) => match &q.failed {
                Some(e) => Err(JournalError::Stopped(e.clone())),
                None => Ok(()),
            },
            Err(_) => Err(JournalError::Stopped(
                "the journal queue is poisoned".into(),
            )),
        }
    }
}

impl Drop for JournalWriter {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

impl Ticket {
    /// Blocks until this record is durable (or the writer failed).
    pub fn wait(self) -> Result<(), JournalError> {
        let mut q = self
            .shared
            .queue
            .lock()
            .map_err(|_| JournalError::Stopped("the journal queue is poisoned".into()))?;
        loop {
            if q.durable_through >= self.n {
                return Ok(());
            }
            if let Some(e) = &q.failed {
                return Err(JournalError::Stopped(e.clone()));
            }
            q = self
                .shared
                .changed
                .wait(q)
                .map_err(|_| JournalError::Stopped("the journal queue is poisoned".into()))?;
        }
    }
}

/// Cuts the journal open as `file` back to the end of its last readable
/// line when the last line is torn (no newline) or unreadable. Reads only the
/// last line, backwards.
fn cut_torn_tail(file: &File, path: &Path, sync: bool) -> Result<(), JournalError> {
    const CHUNK: u64 = 64 * 1024;
    let read_err = |e| FsError::new("cannot read", path, e);
    let len = file.metadata().map_err(read_err)?.len();
    if len == 0 {
        return Ok(());
    }
    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, len - 1).map_err(read_err)?;
    let complete = last[0] == b'\n';
    let content_end = if complete { len - 1 } else { len };
    // The last line is `start..content_end`.
    let mut tail: Vec<u8> = Vec::new();
    let mut start = content_end;
    while start > 0 {
        let from = start.saturating_sub(CHUNK);
        let mut buf = vec![0u8; usize::try_from(start - from).unwrap_or(0)];
        file.read_exact_at(&mut buf, from).map_err(read_err)?;
        let newline = buf.iter().rposition(|b| *b == b'\n');
        let keep = newline.map_or(0, |i| i + 1);
        buf.drain(..keep);
        buf.extend_from_slice(&tail);
        tail = buf;
        start = from + keep as u64;
        if newline.is_some() {
            break;
        }
    }
    if complete && (tail.is_empty() || serde_json::from_slice::<Record>(&tail).is_ok()) {
        return Ok(());
    }
    file.set_len(start)
        .map_err(|e| FsError::new("cannot cut the torn last line of", path, e))?;
    if sync {
        file.sync_data()
            .map_err(|e| FsError::new("cannot fsync", path, e))?;
    }
    Ok(())
}

fn write_loop(shared: &Shared, mut file: File, path: &Path, sync: bool) {
    loop {
        let batch = {
            let Ok(mut q) = shared.queue.lock() else {
                return;
            };
            while q.pending.is_empty() && !q.closing {
                q = match shared.changed.wait(q) {
                    Ok(q) => q,
                    Err(_) => return,
                };
            }
            if q.pending.is_empty() && q.closing {
                return;
            }
            std::mem::take(&mut q.pending)
        };
        let last = batch.iter().map(|(n, _)| *n).max().unwrap_or(0);
        let mut bytes = Vec::with_capacity(batch.iter().map(|(_, l)| l.len()).sum());
        for (_, line) in &batch {
            bytes.extend_from_slice(line);
        }
        let result = file.write_all(&bytes).and_then(|()| {
            if sync {
                shared.syncs.fetch_add(1, Ordering::SeqCst);
                file.sync_data()
            } else {
                Ok(())
            }
        });
        let Ok(mut q) = shared.queue.lock() else {
            return;
        };
        match result {
            Ok(()) => q.durable_through = q.durable_through.max(last),
            Err(e) => {
                q.failed = Some(format!("cannot write {}: {e}", path.display()));
                shared.changed.notify_all();
                return;
            }
        }
        drop(q);
        shared.changed.notify_all();
    }
}

/// The journal as read back.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Every complete record, in file order.
    pub records: Vec<Record>,
    /// A partial last line (a write cut short by a crash), ignored.
    pub torn_tail: Option<String>,
    /// Where each of `records` lies, and what the lines before the torn
    /// tail were, for [`Parsed::new`].
    read: ReadLines,
}

/// Where a load's records lie in the file.
#[derive(Debug, Clone, Default)]
struct ReadLines {
    /// Each record's line (without its newline), parallel to the records.
    lines: Vec<std::ops::Range<usize>>,
    /// The bytes read up to and including the last record's newline.
    len: usize,
    /// Their BLAKE3 digest.
    digest: [u8; 32],
}

/// What a run's view of the journal parsed, kept until the run's end so
/// that its compaction ([`compact_if_large_after`]) parses only the lines
/// appended since: the run's own, a few hundred bytes where the journal it
/// read may hold a cold apply's whole run (300 KB at 10 000 files). The
/// records are kept without members, detail and output (what compaction
/// decides by needs none of them).
#[derive(Debug, Clone, Default)]
pub struct Parsed {
    records: Vec<Record>,
    read: ReadLines,
}

impl Parsed {
    /// Keeps what `loaded` parsed.
    pub fn new(loaded: Loaded) -> Parsed {
        let Loaded { records, read, .. } = loaded;
        let records = records
            .into_iter()
            .map(|r| Record {
                members: Vec::new(),
                detail: None,
                output: Vec::new(),
                ..r
            })
            .collect();
        Parsed { records, read }
    }
}

/// Reads the journal (missing: empty). A torn last line is ignored and
/// returned; an unreadable line before it moves the file aside to
/// `backups_dir` and is an error that says where it went.
pub fn load(path: &Path, backups_dir: &Path) -> Result<Loaded, JournalError> {
    load_with(path, Some(backups_dir))
}

/// [`load`] for a command that writes nothing: a corrupt middle is an
/// error ([`JournalError::Corrupt`]) and the file stays where it is.
pub fn load_read_only(path: &Path) -> Result<Loaded, JournalError> {
    load_with(path, None)
}

/// [`load`] without the batch members of any record, for a run's view of
/// the journal: what decides it (the last run, one-shot keys, pending
/// refreshes) never reads them, and the last run of a cold apply of
/// 10 000 files lists 20 000 of them. Each line is checked as [`load`]
/// checks it (the members must be a list of strings), so the same lines
/// are refused. Load again with [`load`] for the members of an
/// interrupted run.
pub fn load_without_members(path: &Path, backups_dir: &Path) -> Result<Loaded, JournalError> {
    load_as::<WithoutMembers>(path, Some(backups_dir))
}

/// [`load_without_members`] for a command that writes nothing, as
/// [`load_read_only`].
pub fn load_read_only_without_members(path: &Path) -> Result<Loaded, JournalError> {
    load_as::<WithoutMembers>(path, None)
}

/// A journal line read as a [`Record`], its members checked and dropped.
#[derive(Deserialize)]
struct WithoutMembers {
    op_id: String,
    run_id: String,
    resource: String,
    action: JournalAction,
    state: OpState,
    #[serde(default)]
    idemp_key: Option<String>,
    at: DateTime<Utc>,
    #[serde(default)]
    detail: Option<String>,
    #[serde(default, rename = "members")]
    _members: Strings,
    #[serde(default, with = "crate::resource::bytes_text")]
    output: Vec<u8>,
}

impl From<WithoutMembers> for Record {
    fn from(r: WithoutMembers) -> Record {
        Record {
            op_id: r.op_id,
            run_id: r.run_id,
            resource: r.resource,
            action: r.action,
            state: r.state,
            idemp_key: r.idemp_key,
            at: r.at,
            detail: r.detail,
            members: Vec::new(),
            output: r.output,
        }
    }
}

/// A list of strings, checked as `Vec<String>` is and not kept.
#[derive(Default)]
struct Strings;

impl<'de> Deserialize<'de> for Strings {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Strings, D::Error> {
        struct List;
        impl<'de> serde::de::Visitor<'de> for List {
            type Value = Strings;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Strings, A::Error> {
                while seq.next_element::<AString>()?.is_some() {}
                Ok(Strings)
            }
        }
        d.deserialize_seq(List)
    }
}

/// A string, checked and not kept.
struct AString;

impl<'de> Deserialize<'de> for AString {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<AString, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = AString;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<AString, E> {
                Ok(AString)
            }
        }
        d.deserialize_str(Text)
    }
}

fn load_with(path: &Path, backups_dir: Option<&Path>) -> Result<Loaded, JournalError> {
    load_as::<Record>(path, backups_dir)
}

/// Reads each line as an `R` made a [`Record`] (see [`load`]).
fn load_as<R: serde::de::DeserializeOwned + Into<Record>>(
    path: &Path,
    backups_dir: Option<&Path>,
) -> Result<Loaded, JournalError> {
    let bytes = match crate::ownfile::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Loaded::default()),
        Err(e) => return Err(FsError::new("cannot read", path, e).into()),
    };
    let mut loaded = Loaded::default();
    let complete = bytes.ends_with(b"\n");
    // (1-based line number in the file, where the line lies); empty lines
    // are skipped.
    let mut lines: Vec<(usize, std::ops::Range<usize>)> = Vec::new();
    let mut start = 0;
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        let range = start..start + line.len();
        start = range.end + 1;
        if !line.is_empty() {
            lines.push((i + 1, range));
        }
    }
    let count = lines.len();
    for (i, (number, range)) in lines.into_iter().enumerate() {
        let line = &bytes[range.clone()];
        let parsed = serde_json::from_slice::<R>(line);
        // The last line may be a write cut short: no newline, or not JSON.
        if i + 1 == count && (!complete || parsed.is_err()) {
            loaded.torn_tail = Some(String::from_utf8_lossy(line).into_owned());
            break;
        }
        match parsed {
            Ok(r) => {
                loaded.read.len = range.end + 1;
                loaded.read.lines.push(range);
                loaded.records.push(r.into());
            }
            Err(e) => {
                let Some(backups_dir) = backups_dir else {
                    return Err(JournalError::Corrupt {
                        path: path.to_path_buf(),
                        line: number,
                        problem: e.to_string(),
                    });
                };
                let moved_to = move_aside(path, backups_dir)?;
                return Err(JournalError::CorruptMiddle {
                    path: path.to_path_buf(),
                    line: number,
                    problem: e.to_string(),
                    moved_to,
                });
            }
        }
    }
    loaded.read.digest = *blake3::hash(&bytes[..loaded.read.len]).as_bytes();
    Ok(loaded)
}

fn move_aside(path: &Path, backups_dir: &Path) -> Result<PathBuf, JournalError> {
    fsutil::ensure_private_dir(backups_dir)?;
    let stamp = Utc::now().format("%Y%m%d_%H%M%S");
    let mut dest = backups_dir.join(format!("journal_corrupt_{stamp}.jsonl"));
    let mut n = 1;
    while dest.exists() {
        n += 1;
        dest = backups_dir.join(format!("journal_corrupt_{stamp}_{n}.jsonl"));
    }
    fs::rename(path, &dest).map_err(|e| FsError::new("cannot move aside", path, e))?;
    fsutil::fsync_dir(backups_dir)?;
    if let Some(dir) = path.parent() {
        fsutil::fsync_dir(dir)?;
    }
    Ok(dest)
}

/// The operations of `run_id` that started and have no outcome (a batch is
/// one operation; [`Record::subjects`] names its resources).
pub fn in_flight<'a>(records: &'a [Record], run_id: &str) -> Vec<&'a Record> {
    let ended: HashSet<&str> = records
        .iter()
        .filter(|r| r.run_id == run_id)
        .filter(|r| matches!(r.state, OpState::Succeeded | OpState::Failed))
        .map(|r| r.op_id.as_str())
        .collect();
    let mut seen = HashSet::new();
    records
        .iter()
        .filter(|r| r.run_id == run_id && r.resource != "run")
        .filter(|r| matches!(r.state, OpState::Started | OpState::Running))
        .filter(|r| !ended.contains(r.op_id.as_str()) && seen.insert(r.op_id.as_str()))
        .collect()
}

/// The last run that started and never ended: its id and start time.
pub fn interrupted_run(records: &[Record]) -> Option<(String, DateTime<Utc>)> {
    let start = records
        .iter()
        .rev()
        .find(|r| r.resource == "run" && r.action == JournalAction::RunStart)?;
    let ended = records.iter().any(|r| {
        r.run_id == start.run_id && r.resource == "run" && r.action == JournalAction::RunEnd
    });
    (!ended).then(|| (start.run_id.clone(), start.at))
}

/// True when the journal's last run started and ended: no run since it can
/// have left anything half-done (a run journals its start, durably, before
/// it writes anything). False for a journal with no run in it (missing, new,
/// or compacted to one-shot records), which proves nothing.
pub fn last_run_ended(records: &[Record]) -> bool {
    records
        .iter()
        .any(|r| r.resource == "run" && r.action == JournalAction::RunStart)
        && interrupted_run(records).is_none()
}

/// Keys of one-shot steps that succeeded in any run.
pub fn succeeded_keys(records: &[Record]) -> HashSet<String> {
    records
        .iter()
        .filter(|r| r.state == OpState::Succeeded)
        .filter_map(|r| r.idemp_key.clone())
        .collect()
}

/// One-shot steps whose latest run started and has no outcome (a crash cut
/// it off): key -> the `started` record's op id. They stay unfinished, across
/// runs and compactions, until the step runs again (`--rerun`, or a guard).
fn unfinished_one_shots(records: &[Record]) -> std::collections::HashMap<&str, &str> {
    let ended: HashSet<&str> = records
        .iter()
        .filter(|r| {
            r.action != JournalAction::Refresh
                && matches!(r.state, OpState::Succeeded | OpState::Failed)
        })
        .map(|r| r.op_id.as_str())
        .collect();
    let mut latest: std::collections::HashMap<&str, &str> = Default::default();
    for r in records {
        if r.action != JournalAction::Refresh
            && r.state == OpState::Started
            && let Some(k) = &r.idemp_key
        {
            latest.insert(k.as_str(), r.op_id.as_str());
        }
    }
    latest.retain(|_, op| !ended.contains(op));
    latest
}

/// Keys of one-shot steps left unfinished by a crash (see
/// `unfinished_one_shots`); not forgotten by compaction.
pub fn unfinished_keys(records: &[Record]) -> HashSet<String> {
    unfinished_one_shots(records)
        .into_keys()
        .map(str::to_string)
        .collect()
}

/// The action of refresh records. A change that notifies sets a refresh on
/// each target before its side effect (`started`, op `<op>>refresh:<target>`),
/// withdraws it if it did nothing (`failed`, same op), and the target consumes
/// every refresh set on it when it runs (`succeeded`).
pub const REFRESH: &str = "refresh";

/// Open refresh records (set, not withdrawn, not consumed), in file order.
fn open_refreshes(records: &[Record]) -> Vec<&Record> {
    let mut open: Vec<&Record> = Vec::new();
    for r in records
        .iter()
        .filter(|r| r.action == JournalAction::Refresh)
    {
        match r.state {
            OpState::Started | OpState::Running => open.push(r),
            OpState::Failed => open.retain(|o| o.op_id != r.op_id),
            OpState::Succeeded => open.retain(|o| o.resource != r.resource),
        }
    }
    open
}

/// Resources with a refresh set and not yet consumed (across runs: a crash
/// between a change and its refresh leaves it here for the next run).
pub fn pending_refreshes(records: &[Record]) -> HashSet<String> {
    open_refreshes(records)
        .into_iter()
        .map(|r| r.resource.clone())
        .collect()
}

/// The journal size from which a clean run compacts it
/// ([`compact_if_large`]): below it, the next run reads what a compaction
/// would drop in a fraction of a millisecond, less than the rewrite costs
/// (a read, a parse, a write, two fsyncs).
pub const COMPACT_FROM: u64 = 64 * 1024;

/// [`compact`] when the journal holds at least `from` bytes; else leaves
/// it as it is. What compaction drops is only ever of runs that ended
/// (their records are read again and found finished), so leaving it is
/// safe; the journal still shrinks once it is worth a rewrite.
pub fn compact_if_large(path: &Path, keep_run_id: &str, from: u64) -> Result<bool, JournalError> {
    // Nothing parsed before: every line is parsed.
    compact_if_large_after(path, keep_run_id, from, &Parsed::default())
}

/// Rewrites the journal atomically with only the records of `keep_run_id`,
/// the succeeded records of one-shot steps, the `started` records of one-shot
/// steps left unfinished, and the refreshes still pending (those must never
/// be lost).
pub fn compact(path: &Path, keep_run_id: &str) -> Result<(), JournalError> {
    let Some(bytes) = read_for_compaction(path)? else {
        return Ok(());
    };
    let (lines, records) = parse_lines(&bytes, 0);
    rewrite_kept(path, bytes, lines, records, keep_run_id)
}

/// [`compact_if_large`] that parses only what was appended since `parsed`
/// was read, when the journal still begins with exactly the bytes it was
/// read from (their digest); else it parses the whole, as [`compact`]. The
/// journal it writes is [`compact`]'s, byte for byte.
pub fn compact_if_large_after(
    path: &Path,
    keep_run_id: &str,
    from: u64,
    parsed: &Parsed,
) -> Result<bool, JournalError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.len() < from => return Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        _ => {}
    }
    let Some(bytes) = read_for_compaction(path)? else {
        return Ok(false);
    };
    let (lines, records, _) = parse_after(&bytes, parsed);
    rewrite_kept(path, bytes, lines, records, keep_run_id).map(|()| true)
}

/// What [`parse_lines`] makes of all of `bytes`, taken from `parsed` for
/// the bytes it was read from when `bytes` still begin with them (then
/// also `true`).
fn parse_after(bytes: &[u8], parsed: &Parsed) -> (Vec<std::ops::Range<usize>>, Vec<Record>, bool) {
    let read = &parsed.read;
    // (A `Parsed::default()` read nothing: reusing its none of the lines
    // or parsing all of them is the same.)
    let unchanged =
        bytes.len() >= read.len && blake3::hash(&bytes[..read.len]).as_bytes() == &read.digest;
    if !unchanged {
        let (lines, records) = parse_lines(bytes, 0);
        return (lines, records, false);
    }
    let (more_lines, more) = parse_lines(bytes, read.len);
    let mut lines = read.lines.clone();
    lines.extend(more_lines);
    let mut records = parsed.records.clone();
    records.extend(more);
    (lines, records, true)
}

/// The journal's bytes, `None` when there is none.
fn read_for_compaction(path: &Path) -> Result<Option<Vec<u8>>, JournalError> {
    match crate::ownfile::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(FsError::new("cannot read", path, e).into()),
    }
}

/// Each line of `bytes` from `start` on, read once: its place, and the
/// record without its batch members (checked, never built: a run of
/// 100 000 files lists 200 000), detail and output. A line that is no
/// record is left out, as `load` refuses it.
fn parse_lines(bytes: &[u8], mut start: usize) -> (Vec<std::ops::Range<usize>>, Vec<Record>) {
    let mut lines: Vec<std::ops::Range<usize>> = Vec::new();
    let mut records: Vec<Record> = Vec::new();
    while start < bytes.len() {
        let end = bytes[start..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(bytes.len(), |n| start + n);
        let line = start..end;
        start = end + 1;
        if let Ok(r) = serde_json::from_slice::<WithoutMembers>(&bytes[line.clone()]) {
            lines.push(line);
            records.push(Record {
                detail: None,
                output: Vec::new(),
                ..r.into()
            });
        }
    }
    (lines, records)
}

/// Rewrites the journal atomically with the lines of `records` (each at
/// its place in `bytes`) that a compaction keeps.
fn rewrite_kept(
    path: &Path,
    mut bytes: Vec<u8>,
    lines: Vec<std::ops::Range<usize>>,
    records: Vec<Record>,
    keep_run_id: &str,
) -> Result<(), JournalError> {
    let keep = kept_records(&records, keep_run_id);
    drop(records);
    // The kept lines are moved to the front of the journal's own bytes: a
    // second buffer of them was a copy of the whole run's journal.
    let mut kept = 0;
    for (line, _) in lines.into_iter().zip(keep).filter(|(_, keep)| *keep) {
        let len = line.len();
        bytes.copy_within(line, kept);
        kept += len;
        // Where the line's own newline was, or past the end (the last
        // line's, when the journal lacked it).
        if kept < bytes.len() {
            bytes[kept] = b'\n';
        } else {
            bytes.push(b'\n');
        }
        kept += 1;
    }
    bytes.truncate(kept);
    fsutil::atomic_write(path, &bytes, 0o600)?;
    Ok(())
}

/// Which of `records` a compaction keeps, each in turn: those of
/// `keep_run_id`, the succeeded records of one-shot steps, the `started`
/// records of one-shot steps left unfinished, and the refreshes still
/// pending.
fn kept_records(records: &[Record], keep_run_id: &str) -> Vec<bool> {
    let pending: HashSet<&str> = open_refreshes(records)
        .into_iter()
        .map(|r| r.op_id.as_str())
        .collect();
    let unfinished: HashSet<&str> = unfinished_one_shots(records).into_values().collect();
    records
        .iter()
        .map(|r| {
            r.run_id == keep_run_id
                || (r.state == OpState::Succeeded && r.idemp_key.is_some())
                || (r.action == JournalAction::Refresh
                    && r.state == OpState::Started
                    && pending.contains(r.op_id.as_str()))
                || (r.action != JournalAction::Refresh
                    && r.state == OpState::Started
                    && r.idemp_key.is_some()
                    && unfinished.contains(r.op_id.as_str()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_keep_their_names_on_disk_and_unknown_ones_survive() {
        for name in [
            "create",
            "update",
            "remove",
            "conflict",
            "unchanged",
            "run-start",
            "run-end",
            "refresh",
            "from-a-newer-stead",
        ] {
            let action = JournalAction::from(name.to_string());
            assert_eq!(
                serde_json::to_string(&action).unwrap(),
                format!("\"{name}\"")
            );
            assert_eq!(
                serde_json::from_str::<JournalAction>(&format!("\"{name}\"")).unwrap(),
                action
            );
        }
        assert_eq!(
            JournalAction::from("from-a-newer-stead".to_string()),
            JournalAction::Other("from-a-newer-stead".into())
        );
        assert_eq!(format!("{:<8}|", JournalAction::RunEnd), "run-end |");
    }

    fn rec(run: &str, n: u32, resource: &str, action: &str, state: OpState) -> Record {
        Record {
            op_id: format!("{run}:{n}"),
            run_id: run.to_string(),
            resource: resource.to_string(),
            action: JournalAction::from(action.to_string()),
            state,
            idemp_key: None,
            at: Utc::now(),
            detail: None,
            members: Vec::new(),
            output: Vec::new(),
        }
    }

    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join(JOURNAL_FILE);
        let backups = d.path().join("backups");
        (d, path, backups)
    }

    #[test]
    fn records_round_trip_and_a_waited_record_is_in_the_file() {
        let (_d, path, backups) = setup();
        let w = JournalWriter::open(&path, true).unwrap();
        let r = rec("r", 1, "file.a", "create", OpState::Started);
        w.append_durable(r.clone()).unwrap();
        // Read with a separate handle right after the wait.
        let loaded = load(&path, &backups).unwrap();
        assert_eq!(loaded.records, [r]);
        assert!(w.sync_count() >= 1);
        w.close().unwrap();
    }

    #[test]
    fn group_commit_covers_many_records_with_fewer_fsyncs() {
        let (_d, path, backups) = setup();
        let w = JournalWriter::open(&path, true).unwrap();
        std::thread::scope(|s| {
            for t in 0..8 {
                let w = &w;
                s.spawn(move || {
                    for i in 0..200 {
                        w.append_durable(rec(
                            &format!("t{t}"),
                            i,
                            "noop.x",
                            "update",
                            OpState::Succeeded,
                        ))
                        .unwrap();
                    }
                });
            }
        });
        let syncs = w.sync_count();
        w.close().unwrap();
        let loaded = load(&path, &backups).unwrap();
        assert_eq!(loaded.records.len(), 1600);
        let ids: HashSet<&str> = loaded.records.iter().map(|r| r.op_id.as_str()).collect();
        assert_eq!(ids.len(), 1600, "no record lost or doubled");
        assert!(
            (1..1600).contains(&syncs),
            "{syncs} fsyncs for 1600 records"
        );
    }

    #[test]
    fn a_torn_last_line_is_ignored_and_reported() {
        let (_d, path, backups) = setup();
        let r = rec("r", 1, "file.a", "create", OpState::Started);
        let mut text = serde_json::to_string(&r).unwrap();
        text.push('\n');
        text.push_str("{\"op_id\":\"r:2\",\"run_");
        fs::write(&path, &text).unwrap();
        let loaded = load(&path, &backups).unwrap();
        assert_eq!(loaded.records, std::slice::from_ref(&r));
        assert_eq!(
            loaded.torn_tail.as_deref(),
            Some("{\"op_id\":\"r:2\",\"run_")
        );
        // A complete last line without its newline is torn too (the newline
        // is the commit mark).
        let mut text = serde_json::to_string(&r).unwrap();
        text.push('\n');
        text.push_str(&serde_json::to_string(&r).unwrap());
        fs::write(&path, &text).unwrap();
        let loaded = load(&path, &backups).unwrap();
        assert_eq!(loaded.records.len(), 1);
        assert!(loaded.torn_tail.is_some());
    }

    #[test]
    fn appending_after_a_torn_tail_cuts_the_tail_first() {
        let (_d, path, backups) = setup();
        let r = rec("a", 1, "file.a", "create", OpState::Started);
        let line = serde_json::to_string(&r).unwrap();
        // A crash cut the last write short (no newline), or left a complete
        // but unreadable last line: either must not end up glued to, or
        // stuck before, the next run's records.
        let long = format!("{{\"detail\":\"{}", "x".repeat(150_000));
        for tail in ["{\"op_id\":\"a:2\",\"run_", "\0\0\0\0\n", &long] {
            fs::write(&path, format!("{line}\n{tail}")).unwrap();
            assert!(load(&path, &backups).unwrap().torn_tail.is_some());
            let w = JournalWriter::open(&path, true).unwrap();
            let next = rec("b", 0, "run", "run-start", OpState::Started);
            w.append_durable(next.clone()).unwrap();
            w.append_durable(rec("b", 1, "file.b", "create", OpState::Started))
                .unwrap();
            w.close().unwrap();
            let loaded = load(&path, &backups).unwrap();
            assert_eq!(loaded.records.len(), 3, "{tail:?}");
            assert_eq!(loaded.records[1], next);
            assert!(loaded.torn_tail.is_none());
        }
        // Only a torn line: the journal starts over.
        fs::write(&path, &long).unwrap();
        let w = JournalWriter::open(&path, true).unwrap();
        w.append_durable(r.clone()).unwrap();
        w.close().unwrap();
        assert_eq!(load(&path, &backups).unwrap().records, [r]);
        // A whole journal is left as it is.
        let before = fs::read(&path).unwrap();
        JournalWriter::open(&path, true).unwrap().close().unwrap();
        assert_eq!(fs::read(&path).unwrap(), before);
    }

    #[test]
    fn a_corrupt_middle_is_moved_aside_never_truncated() {
        let (_d, path, backups) = setup();
        let r = rec("r", 1, "file.a", "create", OpState::Started);
        let line = serde_json::to_string(&r).unwrap();
        // The line number counts every line, also an empty one.
        let text = format!("{line}\n\ngarbage\n{line}\n");
        fs::write(&path, &text).unwrap();
        let err = load(&path, &backups).unwrap_err();
        let JournalError::CorruptMiddle { line, moved_to, .. } = &err else {
            panic!("{err}");
        };
        assert_eq!(*line, 3);
        assert!(!path.exists());
        assert_eq!(fs::read_to_string(moved_to).unwrap(), text);
        assert!(err.to_string().contains("moved aside"), "{err}");
        // The next load starts empty.
        assert!(load(&path, &backups).unwrap().records.is_empty());
    }

    #[test]
    fn in_flight_interrupted_and_succeeded_keys() {
        let mut once = rec("a", 2, "exec.m", "update", OpState::Succeeded);
        once.idemp_key = Some("once:exec.m".into());
        let records = vec![
            rec("a", 0, "run", "run-start", OpState::Started),
            rec("a", 1, "file.x", "create", OpState::Started),
            rec("a", 1, "file.x", "create", OpState::Succeeded),
            once,
            rec("a", 0, "run", "run-end", OpState::Succeeded),
            rec("b", 0, "run", "run-start", OpState::Started),
            rec("b", 1, "file.y", "create", OpState::Started),
            rec("b", 2, "file.z", "create", OpState::Started),
            rec("b", 2, "file.z", "create", OpState::Failed),
        ];
        let (run, _) = interrupted_run(&records).unwrap();
        assert_eq!(run, "b");
        let ids: Vec<&str> = in_flight(&records, "b")
            .iter()
            .map(|r| r.resource.as_str())
            .collect();
        assert_eq!(ids, ["file.y"]);
        assert!(in_flight(&records, "a").is_empty());
        assert_eq!(
            succeeded_keys(&records),
            HashSet::from(["once:exec.m".to_string()])
        );
        assert!(interrupted_run(&records[..5]).is_none());
        // Only a journal whose last run ended proves nothing was cut short.
        assert!(last_run_ended(&records[..5]));
        assert!(!last_run_ended(&records));
        assert!(!last_run_ended(&records[1..4]), "no run in it");
        assert!(!last_run_ended(&[]));
    }

    #[test]
    fn a_batch_is_one_operation_whose_subjects_are_its_members() {
        let batch = |n: u32, state: OpState, members: &[&str]| Record {
            members: members.iter().map(|m| m.to_string()).collect(),
            ..rec("b", n, "batch", "write", state)
        };
        let records = vec![
            rec("b", 0, "run", "run-start", OpState::Started),
            batch(1, OpState::Started, &["file.p", "file.q", "file.r"]),
            batch(1, OpState::Succeeded, &["file.p", "file.q"]),
            rec("b", 1, "file.r", "create", OpState::Failed),
            batch(2, OpState::Started, &["file.s", "file.t"]),
        ];
        // The first batch ended (its written files and its failure share its
        // op id); the second was cut off with both its files in flight.
        let flying: Vec<&str> = in_flight(&records, "b")
            .iter()
            .flat_map(|r| r.subjects())
            .collect();
        assert_eq!(flying, ["file.s", "file.t"]);
        assert_eq!(records[3].subjects().collect::<Vec<_>>(), ["file.r"]);
        // `members` round-trips, and is left out of one-resource records.
        let line = serde_json::to_string(&records[2]).unwrap();
        assert!(line.contains(r#""members":["file.p","file.q"]"#), "{line}");
        assert!(
            !serde_json::to_string(&records[3])
                .unwrap()
                .contains("members")
        );
        assert_eq!(serde_json::from_str::<Record>(&line).unwrap(), records[2]);
        assert_eq!(
            JournalAction::from("write".to_string()),
            JournalAction::Write
        );
    }

    #[test]
    fn refreshes_stay_pending_until_consumed_or_withdrawn_and_survive_compaction() {
        let (_d, path, backups) = setup();
        let set = |run: &str, op: &str, target: &str| Record {
            op_id: op.into(),
            ..rec(run, 0, target, REFRESH, OpState::Started)
        };
        let mut withdrawn = set("a", "a:1>refresh:exec.x", "exec.x");
        withdrawn.state = OpState::Failed;
        let consumed = rec("b", 5, "exec.y", REFRESH, OpState::Succeeded);
        let records = vec![
            set("a", "a:1>refresh:exec.x", "exec.x"),
            withdrawn,
            set("a", "a:2>refresh:exec.y", "exec.y"),
            set("a", "a:3>refresh:exec.z", "exec.z"),
            consumed,
        ];
        assert_eq!(
            pending_refreshes(&records),
            HashSet::from(["exec.z".to_string()])
        );
        let w = JournalWriter::open(&path, false).unwrap();
        for r in records {
            w.append_durable(r).unwrap();
        }
        w.close().unwrap();
        compact(&path, "c").unwrap();
        let loaded = load(&path, &backups).unwrap();
        assert_eq!(loaded.records.len(), 1);
        assert_eq!(
            pending_refreshes(&loaded.records),
            HashSet::from(["exec.z".to_string()])
        );
    }

    #[test]
    fn an_unfinished_one_shot_survives_compaction_until_it_runs_again() {
        let (_d, path, backups) = setup();
        let keyed = |run: &str, n: u32, state: OpState| Record {
            idemp_key: Some("once:exec.m".into()),
            ..rec(run, n, "exec.m", "update", state)
        };
        let w = JournalWriter::open(&path, false).unwrap();
        w.append_durable(keyed("a", 1, OpState::Started)).unwrap();
        w.close().unwrap();
        assert_eq!(
            unfinished_keys(&load(&path, &backups).unwrap().records).len(),
            1
        );
        // A later run that did not run it is compacted away; the key stays.
        compact(&path, "b").unwrap();
        let records = load(&path, &backups).unwrap().records;
        assert_eq!(
            unfinished_keys(&records),
            HashSet::from(["once:exec.m".to_string()])
        );
        // Run again (--rerun) to an outcome: no longer unfinished.
        let w = JournalWriter::open(&path, false).unwrap();
        w.append_durable(keyed("c", 1, OpState::Started)).unwrap();
        w.append_durable(keyed("c", 1, OpState::Failed)).unwrap();
        w.close().unwrap();
        assert!(unfinished_keys(&load(&path, &backups).unwrap().records).is_empty());
    }

    #[test]
    fn compaction_keeps_the_run_and_succeeded_one_shots() {
        let (_d, path, backups) = setup();
        let w = JournalWriter::open(&path, false).unwrap();
        let mut once = rec("old", 1, "exec.m", "update", OpState::Succeeded);
        once.idemp_key = Some("k".into());
        for r in [
            rec("old", 0, "run", "run-start", OpState::Started),
            once.clone(),
            rec("old", 2, "file.a", "create", OpState::Succeeded),
            rec("new", 0, "run", "run-start", OpState::Started),
            rec("new", 0, "run", "run-end", OpState::Succeeded),
        ] {
            w.append_durable(r).unwrap();
        }
        assert_eq!(w.sync_count(), 0, "sync = false never fsyncs");
        w.close().unwrap();
        compact(&path, "new").unwrap();
        let loaded = load(&path, &backups).unwrap();
        let kept: Vec<(&str, &str)> = loaded
            .records
            .iter()
            .map(|r| (r.run_id.as_str(), r.resource.as_str()))
            .collect();
        assert_eq!(kept, [("old", "exec.m"), ("new", "run"), ("new", "run")]);
        assert_eq!(
            succeeded_keys(&loaded.records),
            HashSet::from(["k".to_string()])
        );
    }

    #[test]
    fn a_journal_read_without_members_holds_the_same_records_and_refuses_the_same_lines() {
        let (_d, path, backups) = setup();
        let line = |r: &Record| serde_json::to_string(r).unwrap();
        let mut batch = rec("r", 1, "batch", "write", OpState::Started);
        batch.members = vec!["file.a".into(), "file.\"b\"\n".into()];
        let mut once = rec("r", 2, "exec.x", "update", OpState::Failed);
        once.idemp_key = Some("k".into());
        once.detail = Some("exit 1".into());
        once.output = vec![0xff, b'\n'];
        let good = [
            rec("r", 0, "run", "run-start", OpState::Started),
            batch,
            once,
        ];
        let text: String = good.iter().map(|r| line(r) + "\n").collect();
        std::fs::write(&path, format!("{text}{{\"op_id\": \"torn")).unwrap();
        let whole = load_read_only(&path).unwrap();
        let lean = load_read_only_without_members(&path).unwrap();
        let without = |r: &Record| Record {
            members: Vec::new(),
            ..r.clone()
        };
        assert_eq!(whole.records, good);
        assert_eq!(lean.records, good.iter().map(without).collect::<Vec<_>>());
        assert_eq!(lean.torn_tail, whole.torn_tail);
        assert!(lean.torn_tail.is_some());

        // Members that are not a list of strings, or a record cut short,
        // in the middle: refused by both, with the same words.
        let bad_members = |members: &str| {
            let mut v = serde_json::to_value(&good[1]).unwrap();
            v["members"] = serde_json::from_str(members).unwrap();
            v.to_string()
        };
        for bad in [
            bad_members("[1]"),
            bad_members("\"file.a\""),
            bad_members("null"),
            bad_members("[[\"a\"]]"),
            r#"{"op_id": "r:9", "run_id": "r"}"#.to_string(),
        ] {
            std::fs::write(&path, format!("{text}{bad}\n{}\n", line(&good[0]))).unwrap();
            let problem = |e: JournalError| match e {
                JournalError::Corrupt { line, problem, .. } => (line, problem),
                other => panic!("{other}"),
            };
            let whole = problem(load_read_only(&path).unwrap_err());
            let lean = problem(load_read_only_without_members(&path).unwrap_err());
            assert_eq!(lean, whole, "{bad}");
            assert_eq!(whole.0, 4);
            // The writing form moves it aside, as `load` does.
            let moved = load_without_members(&path, &backups).unwrap_err();
            assert!(
                matches!(moved, JournalError::CorruptMiddle { line: 4, .. }),
                "{moved}"
            );
            assert!(!path.exists());
        }
    }

    #[test]
    fn a_journal_under_the_threshold_is_left_as_it_is_and_one_over_it_is_compacted() {
        let (_d, path, backups) = setup();
        let w = JournalWriter::open(&path, false).unwrap();
        for r in [
            rec("old", 0, "run", "run-start", OpState::Started),
            rec("old", 0, "run", "run-end", OpState::Succeeded),
            rec("new", 0, "run", "run-start", OpState::Started),
            rec("new", 0, "run", "run-end", OpState::Succeeded),
        ] {
            w.append_durable(r).unwrap();
        }
        w.close().unwrap();
        let before = fs::read(&path).unwrap();
        let size = before.len() as u64;
        assert!(!compact_if_large(&path, "new", size + 1).unwrap());
        assert_eq!(
            fs::read(&path).unwrap(),
            before,
            "untouched below the threshold"
        );
        // The old run, ended, reads back as no interrupted run.
        let view = load(&path, &backups).unwrap();
        assert_eq!(view.records.len(), 4);
        assert!(interrupted_run(&view.records).is_none());
        assert!(compact_if_large(&path, "new", size).unwrap());
        let runs: Vec<String> = load(&path, &backups)
            .unwrap()
            .records
            .into_iter()
            .map(|r| r.run_id)
            .collect();
        assert_eq!(runs, ["new", "new"]);
        fs::remove_file(&path).unwrap();
        assert!(!compact_if_large(&path, "new", 0).unwrap(), "no journal");
    }

    #[test]
    fn compaction_moves_the_kept_lines_whole_and_drops_what_does_not_parse() {
        let (_d, path, _backups) = setup();
        let line = |r: &Record| serde_json::to_string(r).unwrap();
        let mut batch = rec("new", 1, "batch", "create", OpState::Started);
        batch.members = vec!["file.a".into(), "file.b".into()];
        let mut failed = rec("new", 2, "exec.x", "update", OpState::Failed);
        failed.detail = Some("exit 1".into());
        failed.output = b"boom\n".to_vec();
        let last = rec("new", 3, "run", "run-end", OpState::Succeeded);
        let first = rec("new", 0, "run", "run-start", OpState::Started);
        // An old run first (dropped), a line that is no record, and a last
        // line without its newline.
        let text = format!(
            "{}\nnot json\n{}\n{}\n\n{}\n{}",
            line(&rec("old", 1, "file.a", "create", OpState::Succeeded)),
            line(&first),
            line(&batch),
            line(&failed),
            line(&last),
        );
        fs::write(&path, &text).unwrap();
        compact(&path, "new").unwrap();
        let expected = format!(
            "{}\n{}\n{}\n{}\n",
            line(&first),
            line(&batch),
            line(&failed),
            line(&last),
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), expected);
    }

    mod compaction_after_a_read {
        use super::*;
        use proptest::prelude::*;

        /// A record of one of a few runs, ops, resources and keys, so that
        /// refreshes are set, withdrawn and consumed across the read and
        /// one-shots run again after it.
        fn record(runs: &'static [&'static str]) -> impl Strategy<Value = Record> {
            (
                prop::sample::select(runs),
                0..4u32,
                prop::sample::select(vec!["run", "batch", "exec.x", "exec.y", "file.f"]),
                prop::sample::select(vec!["run-start", "run-end", "create", "refresh", "write"]),
                prop::sample::select(vec![
                    OpState::Started,
                    OpState::Running,
                    OpState::Succeeded,
                    OpState::Failed,
                ]),
                prop::option::of(prop::sample::select(vec!["k1", "k2"])),
                prop::bool::ANY,
            )
                .prop_map(|(run, n, resource, action, state, key, extra)| {
                    let mut r = rec(run, n, resource, action, state);
                    r.idemp_key = key.map(str::to_string);
                    if extra {
                        r.members = vec!["file.a".into(), "file.b".into()];
                        r.detail = Some("exit 1".into());
                        r.output = b"boom\n".to_vec();
                    }
                    r
                })
        }

        /// A journal line: a record, or an empty line.
        fn line(runs: &'static [&'static str]) -> impl Strategy<Value = Option<Record>> {
            prop_oneof![5 => record(runs).prop_map(Some), 1 => Just(None)]
        }

        fn text(lines: &[Option<Record>]) -> String {
            lines
                .iter()
                .map(|l| match l {
                    Some(r) => serde_json::to_string(r).unwrap() + "\n",
                    None => "\n".to_string(),
                })
                .collect()
        }

        proptest! {
            /// Compacting after a run's view read the journal writes what a
            /// compaction that parses it all writes, byte for byte, and
            /// parses only what was appended unless the journal changed
            /// under it; a torn tail the writer cut, lines that are no
            /// records and empty lines included.
            #[test]
            fn writes_what_a_whole_compaction_writes(
                before in prop::collection::vec(line(&["a", "b", "k"]), 0..24),
                torn in prop::sample::select(vec!["", "{\"op_id\":\"a:", "not json\n"]),
                after in prop::collection::vec(line(&["k", "a"]), 0..12),
                garbage_after in prop::bool::ANY,
                tamper in prop::option::of(0usize..4096),
            ) {
                let (_d, path, backups) = setup();
                fs::write(&path, text(&before) + torn).unwrap();
                let parsed = Parsed::new(load_without_members(&path, &backups).unwrap());
                // The run opens its writer (which cuts a torn tail) and
                // appends its records.
                JournalWriter::open(&path, false).unwrap().close().unwrap();
                let mut appended = text(&after);
                if garbage_after {
                    appended.push_str("not a record\n");
                }
                let mut bytes = fs::read(&path).unwrap();
                bytes.extend_from_slice(appended.as_bytes());
                let read_len = parsed.read.len;
                let tampered = match tamper {
                    Some(at) if read_len > 0 => {
                        bytes[at % read_len] ^= 0x01;
                        true
                    }
                    _ => false,
                };
                fs::write(&path, &bytes).unwrap();
                let whole = path.with_file_name("whole.jsonl");
                fs::write(&whole, &bytes).unwrap();

                let (_, _, reused) = parse_after(&bytes, &parsed);
                prop_assert_eq!(reused, !tampered);
                prop_assert!(compact_if_large_after(&path, "k", 0, &parsed).unwrap());
                compact(&whole, "k").unwrap();
                prop_assert_eq!(fs::read(&path).unwrap(), fs::read(&whole).unwrap());
            }
        }
    }
}
