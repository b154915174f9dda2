//! The atomic store of `state.json`: load (refusing what it cannot read without
//! touching it) and commit (serial, parent serial, history, atomic write).

use std::io;
use std::path::{Path, PathBuf};

use chrono::Utc;

use super::error::StateError;
use super::schema::{CURRENT_VERSION, HistoryEntry, State};
use super::v1::StateV1;
use crate::fsutil::{self, FsError, WriteStage};
use crate::layout::Layout;
use crate::lock::LockGuard;

/// How many history entries a record keeps unless configured otherwise.
pub const DEFAULT_HISTORY_LIMIT: usize = 50;

/// What `state.json` holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Loaded {
    /// A version 2 record.
    Current(Box<State>),
    /// A version 2 record in the spec's spelling (`dotfiles_path`,
    /// `heimdal_version`, history without ids, foreign checksums), read into
    /// stead's form. The file is left as it is until a command writes.
    Normalised {
        /// The record as stead reads it.
        state: Box<State>,
        /// What was normalised, one line each, for the user.
        notes: Vec<String>,
        /// The file's bytes, for the backup taken before the first write.
        raw: Vec<u8>,
    },
    /// A version 1 record, which must be migrated before use.
    Legacy {
        /// The parsed record.
        v1: StateV1,
        /// The file's bytes, for the backup.
        raw: Vec<u8>,
    },
}

/// Loads and writes the state record of one state dir.
#[derive(Debug, Clone)]
pub struct StateStore {
    layout: Layout,
    history_limit: usize,
    /// The record as this store (or a clone of it) last read or wrote it.
    seen: std::sync::Arc<std::sync::Mutex<Option<Seen>>>,
}

/// A record's serial and what identified its file when it was read or
/// written: while `state.json` is still that file, its serial is known
/// without reading 2 MB (at 10 000 files) a second time before a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    file: FileId,
    serial: u64,
}

/// What tells one version of a file from another: a rename over it makes
/// another inode, and a write in place moves its change time (which no
/// user can set back; by the kernel's clock tick, a few ms) and usually
/// its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileId {
    fn of(meta: &std::fs::Metadata) -> FileId {
        use std::os::unix::fs::MetadataExt;
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

impl StateStore {
    /// A store for `layout`'s state dir, keeping [`DEFAULT_HISTORY_LIMIT`] entries.
    pub fn new(layout: Layout) -> Self {
        StateStore {
            layout,
            history_limit: DEFAULT_HISTORY_LIMIT,
            seen: Default::default(),
        }
    }

    /// Keeps at most `limit` history entries (at least 1).
    pub fn with_history_limit(mut self, limit: usize) -> Self {
        self.history_limit = limit.max(1);
        self
    }

    /// The history cap in force.
    pub fn history_limit(&self) -> usize {
        self.history_limit
    }

    /// The layout this store writes into.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// `<state-dir>/state.json`.
    pub fn path(&self) -> PathBuf {
        self.layout.state_file()
    }

    /// Reads the record: `None` when there is none yet.
    ///
    /// Never writes: a corrupt, truncated or newer file is reported and left as is.
    pub fn load(&self) -> Result<Option<Loaded>, StateError> {
        self.load_with(false)
    }

    /// Reads the record as [`StateStore::load`] does, but in part where it
    /// can ([`super::Unread`]): the small fields built, the entries of its
    /// two large maps left in the text until asked for. For a run that asks
    /// for a few entries of many (a drift repair on a sealed machine): look
    /// entries up with [`State::checksum_of`] and [`State::record_of`], and
    /// take the ones a run may change with [`State::take_entries`] before
    /// changing them. A record it cannot read in part is read whole.
    pub fn load_in_part(&self) -> Result<Option<Loaded>, StateError> {
        self.load_with(true)
    }

    fn load_with(&self, in_part: bool) -> Result<Option<Loaded>, StateError> {
        let path = self.path();
        let (raw, meta) = match crate::spare::read_shared(&path) {
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.remember(None);
                return Ok(None);
            }
            Err(e) => return Err(FsError::new("cannot read", &path, e).into()),
        };
        let loaded = if in_part {
            match String::from_utf8(raw) {
                Ok(text) => match super::in_part::read(text) {
                    Ok(state) => Ok(Loaded::Current(Box::new(state))),
                    Err(text) => parse(text.as_bytes(), &path, &self.layout),
                },
                Err(e) => parse(e.as_bytes(), &path, &self.layout),
            }
        } else {
            parse(&raw, &path, &self.layout)
        };
        self.remember(match &loaded {
            Ok(Loaded::Current(state)) => Some(Seen {
                file: FileId::of(&meta),
                serial: state.lineage.serial,
            }),
            _ => None,
        });
        loaded.map(Some)
    }

    fn remember(&self, seen: Option<Seen>) {
        if let Ok(mut slot) = self.seen.lock() {
            *slot = seen;
        }
    }

    /// `expected` when the record is the file this store last read or
    /// wrote at that serial, unchanged since (one `stat`); `None` when
    /// that cannot be told without reading it.
    fn serial_if_unchanged(&self, expected: u64) -> Option<u64> {
        let seen = (*self.seen.lock().ok()?)?;
        let now = std::fs::symlink_metadata(self.path()).ok()?;
        (seen.serial == expected && seen.file == FileId::of(&now)).then_some(expected)
    }

    /// The serial of a version 2 record on disk, read without building the
    /// record (the lock notes it; a full load is 10 ms at 10 000 files);
    /// `None` when there is none or it cannot be read as one.
    pub fn peek_serial(&self) -> Option<u64> {
        probe_serial(&crate::spare::read_shared(&self.path()).ok()?.0)
    }

    /// Reads a version 2 record, or says why there is none to use (missing,
    /// still version 1, corrupt, newer). Callers that migrate V1 use [`StateStore::load`].
    pub fn load_current(&self) -> Result<State, StateError> {
        match self.load()? {
            Some(Loaded::Current(state)) | Some(Loaded::Normalised { state, .. }) => Ok(*state),
            Some(Loaded::Legacy { .. }) => Err(StateError::Migration {
                path: self.path(),
                problem: "it must be migrated to version 2 first (run 'stead state migrate')"
                    .to_string(),
            }),
            None => Err(StateError::NotInitialized { path: self.path() }),
        }
    }

    /// Writes `state` as the next serial: bumps `lineage.serial`, sets
    /// `parent_serial`, appends one `operation` history entry, prunes history
    /// to the cap, and replaces the file atomically.
    ///
    /// Refuses (writing nothing) when the file on disk is not at the serial
    /// `state` was loaded at, or cannot be read. `state` is updated only when
    /// the write succeeded.
    pub fn commit(
        &self,
        guard: &LockGuard,
        state: &mut State,
        operation: &str,
    ) -> Result<(), StateError> {
        self.commit_observed(guard, state, operation, &mut |_| {})
    }

    /// [`StateStore::commit`], calling `observer` at each stage of the file write.
    pub fn commit_observed(
        &self,
        guard: &LockGuard,
        state: &mut State,
        operation: &str,
        observer: &mut dyn FnMut(WriteStage),
    ) -> Result<(), StateError> {
        let next = state
            .lineage
            .serial
            .checked_add(1)
            .ok_or_else(|| self.exhausted(state.lineage.serial))?;
        self.write_next(guard, state, Some(operation), next, observer)
    }

    /// Writes `state` as serial `serial`, which must be above the serial on
    /// disk: the write that takes a synced or merged shared record's serial,
    /// so that this machine and the repo agree on it. With `operation`, one
    /// history entry at `serial` is appended; without, the history is kept as
    /// given (taking the remote's record is not an operation of its own).
    ///
    /// Refuses like [`StateStore::commit`] when the file moved since `state`
    /// was loaded, and when `serial` would not go forward.
    pub fn commit_at(
        &self,
        guard: &LockGuard,
        state: &mut State,
        operation: Option<&str>,
        serial: u64,
    ) -> Result<(), StateError> {
        // Checked before going backwards: at the top there is no forward.
        self.check_writable(state)?;
        if serial <= state.lineage.serial {
            return Err(StateError::SerialBackwards {
                path: self.path(),
                current: state.lineage.serial,
                requested: serial,
            });
        }
        self.write_next(guard, state, operation, serial, &mut |_| {})
    }

    /// Fails when no write can follow `state` (its serial is the largest):
    /// for callers that change the machine before they commit, so that they
    /// refuse before changing anything.
    pub fn check_writable(&self, state: &State) -> Result<(), StateError> {
        if state.lineage.serial == u64::MAX {
            return Err(self.exhausted(state.lineage.serial));
        }
        Ok(())
    }

    fn exhausted(&self, serial: u64) -> StateError {
        StateError::SerialExhausted {
            path: self.path(),
            serial,
            backups: self.layout.backups_dir(),
        }
    }

    fn write_next(
        &self,
        _guard: &LockGuard,
        state: &mut State,
        operation: Option<&str>,
        serial: u64,
        observer: &mut dyn FnMut(WriteStage),
    ) -> Result<(), StateError> {
        let on_disk = self.serial_on_disk(state.lineage.serial)?;
        if on_disk != state.lineage.serial {
            return Err(StateError::SerialMoved {
                path: self.path(),
                expected: state.lineage.serial,
                found: on_disk,
            });
        }
        // The next record is `state` changed in place, not a copy of it (at
        // 100 000 files a copy is 45 MB); what changes is kept to be put
        // back if the write fails, so `state` is updated only by a write.
        let undo = Undo::of(state);
        let old = state.lineage.serial;
        state.version = CURRENT_VERSION;
        state.stead_version = crate::STEAD_VERSION.to_string();
        state.lineage.serial = serial;
        state.lineage.parent_serial = (old > 0).then_some(old);
        if let Some(operation) = operation {
            let entry = HistoryEntry {
                id: uuid::Uuid::new_v4().to_string(),
                operation: operation.to_string(),
                timestamp: Utc::now(),
                machine_id: state.machine.id.clone(),
                user: state.machine.user.clone(),
                serial,
            };
            state.history.push(entry);
        }
        prune_history(&mut state.history, self.history_limit);
        self.write(state, observer)
            .inspect_err(|_| undo.restore(state))
    }

    /// The serial of the record on disk (0: none), read without building
    /// the record when it is a readable version 2 or 3 one. Anything else
    /// is loaded whole, so a file that cannot be read, a version 1 record
    /// or a newer one refuses the write with the loader's own words. (A
    /// file that is valid JSON with the expected serial but wrong inside
    /// is overwritten: under the lock, it is the record this run loaded
    /// whole, edited by hand since.)
    fn serial_on_disk(&self, expected: u64) -> Result<u64, StateError> {
        if let Some(serial) = self.serial_if_unchanged(expected) {
            return Ok(serial);
        }
        match crate::spare::read_shared(&self.path()).map(|(raw, _)| raw) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Ok(raw) => {
                if let Some(serial) = probe_serial(&raw) {
                    return Ok(serial);
                }
            }
            Err(_) => {}
        }
        match self.load()? {
            Some(Loaded::Current(s)) | Some(Loaded::Normalised { state: s, .. }) => {
                Ok(s.lineage.serial)
            }
            Some(Loaded::Legacy { .. }) => Err(StateError::SerialMoved {
                path: self.path(),
                expected,
                found: 1,
            }),
            None => Ok(0),
        }
    }

    /// Writes `state` as is (no serial bump): for migrations that create serial 1.
    pub(super) fn write(
        &self,
        state: &State,
        observer: &mut dyn FnMut(WriteStage),
    ) -> Result<(), StateError> {
        fsutil::ensure_private_dir(self.layout.state_dir())?;
        // Under the lock no other write is in flight: any temp file is from a
        // writer that was killed mid-write.
        fsutil::remove_orphan_temps(&self.path());
        // Forgotten first: a write that fails after its rename leaves a
        // record this store has not seen.
        self.remember(None);
        let spare = self.layout.state_spare();
        crate::spare::write(&self.path(), &spare, 0o600, observer, &mut |out| {
            // A buffer of its own type in front of `out`: serde_json writes
            // each of the record's ~400 000 tokens on its own, and through
            // `dyn Write` each was a call that could not be inlined.
            use io::Write as _;
            if state.unread.is_partial() {
                return write_spliced(out, state);
            }
            let mut buffered = io::BufWriter::with_capacity(1 << 16, out);
            super::entry_lines::write(&mut buffered, state).map_err(io::Error::from)?;
            buffered.write_all(b"\n")?;
            buffered.flush()
        })?;
        if let Ok(meta) = std::fs::symlink_metadata(self.path()) {
            self.remember(Some(Seen {
                file: FileId::of(&meta),
                serial: state.lineage.serial,
            }));
        }
        Ok(())
    }
}

/// Writes a record read in part: the entries still in its text copied,
/// the others serialized. Debug builds (the test suite) check that every
/// such write reads back as the same record read whole.
fn write_spliced(out: &mut dyn io::Write, state: &State) -> io::Result<()> {
    let mut bytes = Vec::new();
    super::in_part::write_spliced(&mut bytes, state)?;
    bytes.push(b'\n');
    #[cfg(debug_assertions)]
    {
        let whole = state.clone().into_whole().map_err(io::Error::other)?;
        let back: State = serde_json::from_slice(&bytes)?;
        if back != whole {
            return Err(io::Error::other(
                "the record written from its text differs from the record read whole",
            ));
        }
    }
    out.write_all(&bytes)
}

/// What a commit changes in a record, to put back when its write fails.
struct Undo {
    version: u32,
    stead_version: String,
    serial: u64,
    parent_serial: Option<u64>,
    history: Vec<HistoryEntry>,
}

impl Undo {
    fn of(state: &State) -> Undo {
        Undo {
            version: state.version,
            stead_version: state.stead_version.clone(),
            serial: state.lineage.serial,
            parent_serial: state.lineage.parent_serial,
            history: state.history.clone(),
        }
    }

    fn restore(self, state: &mut State) {
        state.version = self.version;
        state.stead_version = self.stead_version;
        state.lineage.serial = self.serial;
        state.lineage.parent_serial = self.parent_serial;
        state.history = self.history;
    }
}

/// `lineage.serial` of a version 2 or 3 record, the whole text checked to
/// be JSON but nothing else of it built.
fn probe_serial(raw: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Probe {
        version: Option<u64>,
        lineage: Option<LineageProbe>,
    }
    #[derive(serde::Deserialize)]
    struct LineageProbe {
        serial: u64,
    }
    match serde_json::from_slice::<Probe>(raw).ok()? {
        Probe {
            version: Some(2 | 3),
            lineage: Some(l),
        } => Some(l.serial),
        _ => None,
    }
}

/// Keeps the newest `limit` entries of a history ordered oldest first.
fn prune_history(history: &mut Vec<HistoryEntry>, limit: usize) {
    if history.len() > limit {
        let excess = history.len() - limit;
        history.drain(..excess);
    }
}

fn parse(raw: &[u8], path: &Path, layout: &Layout) -> Result<Loaded, StateError> {
    let corrupt = |problem: String| StateError::Corrupt {
        path: path.to_path_buf(),
        problem,
        backups: layout.backups_dir(),
    };
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err(corrupt(
            "the file is empty (a write was cut short, or it was truncated)".to_string(),
        ));
    }
    // What stead wrote is read in one pass; anything else (another version,
    // the spec's spelling, a broken file) goes the long way below, which
    // reads the version first to say what it is. From text checked as UTF-8
    // once: from bytes, serde_json checks each of the record's ~80 000
    // strings on its own (a sixth of the parse, docs/performance.md).
    if let Ok(text) = std::str::from_utf8(raw)
        && let Ok(state) = serde_json::from_str::<State>(text)
        && matches!(state.version, 2 | 3)
    {
        return Ok(Loaded::Current(Box::new(state)));
    }
    // Only `version` is read here (other fields are skipped without being
    // built), so the record is fully parsed once, by the typed read below.
    #[derive(serde::Deserialize)]
    struct VersionProbe {
        #[serde(default)]
        version: Option<serde_json::Value>,
    }
    let probe: VersionProbe = serde_json::from_slice(raw).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            corrupt("expected a JSON object at the top level".to_string())
        }
        _ => corrupt(format!("invalid JSON: {e}")),
    })?;
    let version = match probe.version.as_ref() {
        None | Some(serde_json::Value::Null) => 1,
        Some(v) => v.as_u64().ok_or_else(|| {
            corrupt(format!(
                "\"version\" must be a positive whole number, found {v}"
            ))
        })?,
    };
    match version {
        1 => {
            let v1: StateV1 = serde_json::from_slice(raw)
                .map_err(|e| corrupt(format!("invalid version 1 record: {e}")))?;
            Ok(Loaded::Legacy {
                v1,
                raw: raw.to_vec(),
            })
        }
        // Version 3 only adds fields (absent when empty): a version 2
        // record is a version 3 one without checks, written as 3 next time.
        2 | 3 => match serde_json::from_slice::<State>(raw) {
            Ok(state) => Ok(Loaded::Current(Box::new(state))),
            // The spec's own spelling of version 2; anything else is
            // reported with the strict reader's error.
            Err(strict) => match super::foreign::read(raw) {
                Some((state, notes)) => Ok(Loaded::Normalised {
                    state: Box::new(state),
                    notes,
                    raw: raw.to_vec(),
                }),
                None => Err(corrupt(format!(
                    "invalid version {version} record: {strict}"
                ))),
            },
        },
        0 => Err(corrupt("\"version\" 0 is not a schema version".to_string())),
        found => Err(StateError::NewerVersion {
            path: path.to_path_buf(),
            found,
            supported: CURRENT_VERSION,
            stead: crate::STEAD_VERSION,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn entry(serial: u64) -> HistoryEntry {
        HistoryEntry {
            id: format!("id-{serial}"),
            operation: "apply".into(),
            timestamp: Utc::now(),
            machine_id: "m".into(),
            user: "u".into(),
            serial,
        }
    }

    #[test]
    fn prune_keeps_newest() {
        let mut h: Vec<_> = (1..=60).map(entry).collect();
        prune_history(&mut h, 50);
        assert_eq!(h.len(), 50);
        assert_eq!(h.first().unwrap().serial, 11);
        assert_eq!(h.last().unwrap().serial, 60);
    }

    #[test]
    fn a_record_with_bytes_that_are_not_utf8_is_corrupt_at_their_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path(), None);
        let mut state = State::new(crate::machine::MachineInfo::current("m"));
        state.lineage.serial = 4;
        let mut raw = serde_json::to_vec_pretty(&state).unwrap();
        let good = raw.clone();
        let user = raw.windows(6).position(|w| w == b"\"user\"").unwrap();
        let at = user + raw[user..].iter().position(|&b| b == b'\n').unwrap() - 3;
        raw[at] = 0xff;
        let line = 1 + raw[..at].iter().filter(|&&b| b == b'\n').count();
        let msg = parse(&raw, Path::new("/s.json"), &layout)
            .unwrap_err()
            .to_string();
        assert!(msg.contains(&format!("line {line} column")), "{msg}");
        assert!(msg.contains("/s.json"), "{msg}");
        assert!(
            matches!(parse(&good, Path::new("/s.json"), &layout), Ok(Loaded::Current(s)) if s.lineage.serial == 4)
        );
    }

    #[test]
    fn parse_reports_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path(), None);
        let err = parse(
            b"{\n  \"version\": 2,\n  oops\n}",
            Path::new("/s.json"),
            &layout,
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("line 3 column 3"), "{msg}");
        assert!(msg.contains("/s.json"), "{msg}");
    }

    #[test]
    fn peek_serial_reads_only_a_version_2_record() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path(), None);
        let store = StateStore::new(layout.clone());
        fs::create_dir_all(layout.state_dir()).unwrap();
        assert_eq!(store.peek_serial(), None, "no record");
        let mut state = State::new(crate::machine::MachineInfo::current("m"));
        state.lineage.serial = 41;
        fs::write(store.path(), serde_json::to_vec(&state).unwrap()).unwrap();
        assert_eq!(store.peek_serial(), Some(41));
        for other in [
            &br#"{"active_profile":"x"}"#[..],
            br#"{"version":1,"lineage":{"serial":3}}"#,
            br#"{"version":2,"lineage":{"serial":"x"}}"#,
            b"{ torn",
        ] {
            fs::write(store.path(), other).unwrap();
            assert_eq!(
                store.peek_serial(),
                None,
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }

    #[test]
    fn parse_detects_versions() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path(), None);
        let p = Path::new("/s.json");
        assert!(matches!(
            parse(br#"{"active_profile":"x"}"#, p, &layout),
            Ok(Loaded::Legacy { .. })
        ));
        assert!(matches!(
            parse(br#"{"version":1,"dotfiles_path":"/d"}"#, p, &layout),
            Ok(Loaded::Legacy { .. })
        ));
        assert!(matches!(
            parse(br#"{"version":7}"#, p, &layout),
            Err(StateError::NewerVersion { found: 7, .. })
        ));
        assert!(matches!(
            parse(b"   ", p, &layout),
            Err(StateError::Corrupt { .. })
        ));
        assert!(matches!(
            parse(br#"{"version":"two"}"#, p, &layout),
            Err(StateError::Corrupt { .. })
        ));
    }

    fn guard_for(layout: &Layout) -> LockGuard {
        crate::lock::acquire(
            layout,
            &crate::lock::LockConfig::default(),
            &crate::lock::LockRequest::new("test", "m"),
            &mut |_| {},
        )
        .unwrap()
    }

    /// `state.json` rewritten in place (same inode) at `serial`.
    fn rewrite_in_place(store: &StateStore, serial: u64, modified: Option<std::time::SystemTime>) {
        let mut state = store.load_current().unwrap();
        state.lineage.serial = serial;
        let text = serde_json::to_vec_pretty(&state).unwrap();
        let file = fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(store.path())
            .unwrap();
        let ino = std::os::unix::fs::MetadataExt::ino(&file.metadata().unwrap());
        std::io::Write::write_all(&mut &file, &text).unwrap();
        if let Some(t) = modified {
            file.set_modified(t).unwrap();
        }
        let now = fs::metadata(store.path()).unwrap();
        assert_eq!(std::os::unix::fs::MetadataExt::ino(&now), ino, "in place");
    }

    #[test]
    fn a_record_this_store_read_or_wrote_is_known_by_its_file_until_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path(), None);
        let guard = guard_for(&layout);
        let a = StateStore::new(layout.clone());
        let mut state = State::new(crate::machine::MachineInfo::current("m"));
        assert_eq!(a.serial_if_unchanged(0), None, "nothing seen yet");
        a.commit(&guard, &mut state, "init").unwrap();
        assert_eq!(a.serial_if_unchanged(1), Some(1), "what it wrote");
        assert_eq!(a.serial_if_unchanged(0), None, "another serial");
        assert_eq!(
            a.clone().serial_if_unchanged(1),
            Some(1),
            "a clone shares it"
        );

        // Another store's commit renames a new file over it.
        let b = StateStore::new(layout.clone());
        let mut other = b.load_current().unwrap();
        b.commit(&guard, &mut other, "apply").unwrap();
        assert_eq!(a.serial_if_unchanged(1), None, "replaced");
        let err = a.commit(&guard, &mut state, "apply").unwrap_err();
        assert!(
            matches!(
                err,
                StateError::SerialMoved {
                    expected: 1,
                    found: 2,
                    ..
                }
            ),
            "{err:?}"
        );

        // Loaded again: known again, until it is rewritten in place, with
        // another size or another modification time.
        let mut state = a.load_current().unwrap();
        assert_eq!(a.serial_if_unchanged(2), Some(2), "what it read");
        rewrite_in_place(&a, 12345, None);
        assert_eq!(a.serial_if_unchanged(2), None, "another size");
        let before = fs::read(a.path()).unwrap();
        let err = a.commit(&guard, &mut state, "apply").unwrap_err();
        assert!(
            matches!(
                err,
                StateError::SerialMoved {
                    expected: 2,
                    found: 12345,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(fs::read(a.path()).unwrap(), before, "nothing written");

        let mut state = a.load_current().unwrap();
        assert_eq!(a.serial_if_unchanged(12345), Some(12345));
        let long_ago = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1 << 30);
        rewrite_in_place(&a, 54321, Some(long_ago));
        assert_eq!(
            fs::metadata(a.path()).unwrap().len(),
            before.len() as u64,
            "the same size"
        );
        assert_eq!(
            a.serial_if_unchanged(12345),
            None,
            "another modification time"
        );
        let err = a.commit(&guard, &mut state, "apply").unwrap_err();
        assert!(
            matches!(err, StateError::SerialMoved { found: 54321, .. }),
            "{err:?}"
        );

        // A commit whose write fails leaves nothing remembered.
        let mut state = a.load_current().unwrap();
        let path = a.path();
        let err = a
            .commit_observed(&guard, &mut state, "apply", &mut |stage| {
                if stage == WriteStage::TempSynced {
                    fs::rename(&path, path.with_extension("aside")).unwrap();
                    fs::create_dir(&path).unwrap();
                }
            })
            .unwrap_err();
        assert!(err.to_string().contains("cannot rename"), "{err}");
        assert_eq!(a.serial_if_unchanged(54321), None);
    }

    #[test]
    fn a_commit_at_the_largest_serial_is_exhausted_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path(), None);
        let guard = guard_for(&layout);
        let store = StateStore::new(layout);
        let mut state = State::new(crate::machine::MachineInfo {
            id: "m".into(),
            hostname: "h".into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            user: "u".into(),
        });
        state.lineage.serial = u64::MAX;
        store.write(&state, &mut |_| {}).unwrap();
        let before = fs::read(store.path()).unwrap();

        let err = store.commit(&guard, &mut state, "apply").unwrap_err();
        assert!(
            matches!(
                err,
                StateError::SerialExhausted {
                    serial: u64::MAX,
                    ..
                }
            ),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains("serial is exhausted"), "{msg}");
        assert!(msg.contains(store.path().to_str().unwrap()), "{msg}");
        assert!(msg.contains("Nothing was written"), "{msg}");
        // A write that takes a serial cannot go past it either.
        let err = store
            .commit_at(&guard, &mut state, None, u64::MAX)
            .unwrap_err();
        assert!(matches!(err, StateError::SerialExhausted { .. }), "{err:?}");
        assert!(matches!(
            store.check_writable(&state),
            Err(StateError::SerialExhausted { .. })
        ));
        assert_eq!(fs::read(store.path()).unwrap(), before);
        assert_eq!(state.lineage.serial, u64::MAX);
        assert!(state.history.is_empty());
    }
}
