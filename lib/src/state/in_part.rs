//! A state record read in part: its two large maps (`checksums`,
//! `resources`) kept as the text they were read from ([`Unread`]), each
//! entry parsed only when a run asks for it, and written back from that
//! text by the next commit.
//!
//! A drift repair on a sealed machine (docs/performance.md) changes a
//! hundred entries of a record of 20 000: building every entry was the
//! longest wait of such a run (6 ms at 10 000 files), and serializing every
//! entry again most of its commit. Read in part, the record is checked as
//! JSON whole (every value's syntax, every key in order), its small fields
//! are read as the whole read reads them, and each large map becomes a
//! sorted list of where its entries' keys and values are in the text.
//!
//! What a read in part must answer exactly as a whole read would:
//!
//! - a lookup ([`State::checksum_of`], [`State::record_of`]): the map's
//!   entry if the run has one, else the text's, parsed then;
//! - absence: every key is in the list, so a key absent from both is absent
//!   from the record;
//! - an entry the run changes or removes: the run takes it into the map
//!   first ([`State::take_entries`]), and from then on the text's is not
//!   used;
//! - the commit: every entry of the map, and every entry of the text not
//!   taken, in key order ([`write_spliced`]), each text entry copied as it
//!   is: for a record stead wrote, byte for byte what serializing the
//!   whole record writes (a property test below); debug builds check on
//!   every such commit that it reads back as the whole record.
//!
//! Anything the read in part cannot vouch for (a key that needs unescaping,
//! keys out of order or given twice, a checksum that is not a string, an
//! entry on several lines, a small field the strict reader refuses, a
//! record past 4 GiB) makes it give up, and the caller reads the record
//! whole, with the whole read's errors and normalisations. An entry's JSON
//! is checked, its fields are not until it is asked for: a repair reads in
//! part only a record the sealing run read whole and the seal found
//! unchanged since, so only a hand edit after that check can hide a broken
//! entry; it is then copied as it is (the next whole read reports it), or,
//! when the run takes it, fails the run before anything changes.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::io;

use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::schema::{ResourceRecord, State};
use super::unread::{Span, Unread, Which};
use crate::checksum::Checksum;

/// An entry of a record read in part that does not read as one, found
/// when the run takes it.
#[derive(Debug, thiserror::Error)]
#[error("the entry \"{key}\" of \"{map}\" on line {line} does not read as one ({source})")]
pub struct EntryError {
    /// `checksums` or `resources`.
    pub map: &'static str,
    /// The entry's key (a path or a resource id).
    pub key: String,
    /// Its line in the record, from 1.
    pub line: usize,
    /// What is wrong with its value (line and column within the value).
    pub source: serde_json::Error,
}

impl Unread {
    /// The resource record the text holds for `id` (not taken).
    pub(crate) fn resource(&self, id: &str) -> Option<Result<ResourceRecord, serde_json::Error>> {
        Some(serde_json::from_str(self.raw(Which::Resources, id)?))
    }
}

impl State {
    /// The checksum recorded for `key`: the map's, else, for a record read
    /// in part, the text's.
    pub fn checksum_of(&self, key: &str) -> Option<Cow<'_, Checksum>> {
        match self.checksums.get(key) {
            Some(sum) => Some(Cow::Borrowed(sum)),
            None => self.unread.checksum(key).map(Cow::Owned),
        }
    }

    /// The resource record of `id`: the map's, else, for a record read in
    /// part, the text's. A text entry that does not parse reads as absent
    /// here, and fails the run when it is taken ([`State::take_entries`];
    /// the module doc says why only a hand edit can make one).
    pub fn record_of(&self, id: &str) -> Option<Cow<'_, ResourceRecord>> {
        match self.resources.get(id) {
            Some(record) => Some(Cow::Borrowed(record)),
            None => self.unread.resource(id)?.ok().map(Cow::Owned),
        }
    }

    /// Every checksum key still in the text of a record read in part (the
    /// map's are in `checksums`).
    pub fn unread_checksum_keys(&self) -> impl Iterator<Item = &str> {
        self.unread.keys(Which::Checksums)
    }

    /// Every resource record still in the text of a record read in part,
    /// parsed (the map's are in `resources`); one that does not parse is
    /// left out (see [`State::record_of`]).
    pub fn unread_records(&self) -> impl Iterator<Item = (&str, ResourceRecord)> {
        self.unread
            .left_entries(Which::Resources)
            .filter_map(|(id, raw)| Some((id, serde_json::from_str(raw).ok()?)))
    }

    /// Takes into the maps the entries a run may change: the resource
    /// record of each of `ids` (and the checksums of its keys) and the
    /// checksum of each of `keys`, for each still in the text of a record
    /// read in part. From then on the maps hold them, as for a record read
    /// whole; the commit writes them from the maps. Nothing for a record
    /// read whole.
    pub fn take_entries<'k>(
        &mut self,
        ids: impl IntoIterator<Item = &'k str>,
        keys: impl IntoIterator<Item = &'k str>,
    ) -> Result<(), EntryError> {
        if !self.unread.is_partial() {
            return Ok(());
        }
        let mut record_keys = Vec::new();
        for id in ids {
            let parse = |raw: &str| serde_json::from_str::<ResourceRecord>(raw);
            let taken = self.unread.take(Which::Resources, id, parse);
            if let Some(record) = taken.map_err(|e| entry_error("resources", id, e))? {
                record_keys.extend(record.keys.iter().cloned());
                self.resources.insert(id.to_string(), record);
            }
        }
        for key in keys {
            self.take_checksum(key)?;
        }
        for key in &record_keys {
            self.take_checksum(key)?;
        }
        Ok(())
    }

    fn take_checksum(&mut self, key: &str) -> Result<(), EntryError> {
        let parse = |raw: &str| serde_json::from_str::<Checksum>(raw);
        let taken = self.unread.take(Which::Checksums, key, parse);
        if let Some(sum) = taken.map_err(|e| entry_error("checksums", key, e))? {
            self.checksums.insert(key.to_string(), sum);
        }
        Ok(())
    }

    /// How many entries the record holds, in the maps and, for a record
    /// read in part, still in the text: `(checksums, resources)`.
    pub fn entry_counts(&self) -> (usize, usize) {
        (
            self.checksums.len() + self.unread.left(Which::Checksums),
            self.resources.len() + self.unread.left(Which::Resources),
        )
    }

    /// The same record read whole: every entry still in the text taken
    /// into the maps.
    pub fn into_whole(mut self) -> Result<State, EntryError> {
        let ids: Vec<String> = self
            .unread
            .keys(Which::Resources)
            .map(str::to_string)
            .collect();
        let keys: Vec<String> = self
            .unread
            .keys(Which::Checksums)
            .map(str::to_string)
            .collect();
        self.take_entries(
            ids.iter().map(String::as_str),
            keys.iter().map(String::as_str),
        )?;
        self.unread = Unread::default();
        Ok(self)
    }
}

fn entry_error(
    map: &'static str,
    key: &str,
    (source, line): (serde_json::Error, usize),
) -> EntryError {
    EntryError {
        map,
        key: key.to_string(),
        line,
        source,
    }
}

/// Reads `text` (a state record) in part: its small fields into a
/// [`State`] whose two large maps are empty, and where each of their
/// entries is. `Err` gives `text` back when the read in part cannot vouch
/// for the result (see the module doc): read it whole
/// ([`super::StateStore::load_in_part`] does).
pub fn read(text: String) -> Result<State, String> {
    match read_spans(&text) {
        Some(mut state) => {
            state.unread.set_text(text);
            Ok(state)
        }
        None => Err(text),
    }
}

fn read_spans(text: &str) -> Option<State> {
    let base = text.as_ptr() as usize;
    u32::try_from(text.len()).ok()?;
    let mut de = serde_json::Deserializer::from_str(text);
    let top = de::Deserializer::deserialize_map(&mut de, Top { base }).ok()?;
    de.end().ok()?;
    let (head, checksums, resources) = (top.head, top.checksums?, top.resources?);
    let mut state: State = serde_json::from_str(&head).ok()?;
    if !matches!(state.version, 2 | 3) {
        return None;
    }
    state.unread = Unread::new(checksums, resources);
    Some(state)
}

/// What the top level of a record read in part gives: its small fields as
/// a JSON object of their own, with both large maps empty, and where the
/// large maps' entries are.
struct TopRead {
    head: String,
    checksums: Option<Vec<Span>>,
    resources: Option<Vec<Span>>,
}

/// Reads the top level of a record whose text starts at `base`.
struct Top {
    base: usize,
}

impl<'de> Visitor<'de> for Top {
    type Value = TopRead;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a state record")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopRead, A::Error> {
        let mut read = TopRead {
            head: String::with_capacity(16 * 1024),
            checksums: None,
            resources: None,
        };
        read.head.push('{');
        while let Some(key) = map.next_key_seed(BorrowedKey)? {
            let key = key.ok_or_else(|| de::Error::custom("a field name with escapes"))?;
            let slot = match key {
                "checksums" => &mut read.checksums,
                "resources" => &mut read.resources,
                _ => {
                    let value: &RawValue = map.next_value()?;
                    read.head.push('"');
                    read.head.push_str(key);
                    read.head.push_str("\":");
                    read.head.push_str(value.get());
                    read.head.push(',');
                    continue;
                }
            };
            if slot.is_some() {
                return Err(de::Error::custom("a map given twice"));
            }
            let strings = key == "checksums";
            *slot = Some(map.next_value_seed(Spans {
                base: self.base,
                strings,
            })?);
        }
        read.head.push_str("\"checksums\":{},\"resources\":{}}");
        Ok(read)
    }
}

/// A key read where it lies; `None` for one with escapes (which would need
/// a string of its own).
struct BorrowedKey;

impl<'de> DeserializeSeed<'de> for BorrowedKey {
    type Value = Option<&'de str>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for BorrowedKey {
    type Value = Option<&'de str>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Some(v))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// One large map's entries, as spans of the text at `base`, in strictly
/// ascending key order; with `strings`, every value a string.
struct Spans {
    base: usize,
    strings: bool,
}

impl<'de> DeserializeSeed<'de> for Spans {
    type Value = Vec<Span>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Spans {
    type Value = Vec<Span>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<Span>, A::Error> {
        let mut spans = Vec::new();
        let mut last: Option<&str> = None;
        while let Some(key) = map.next_key_seed(BorrowedKey)? {
            let key = key.ok_or_else(|| de::Error::custom("a key with escapes"))?;
            if last.is_some_and(|last| last >= key) {
                return Err(de::Error::custom("keys out of order"));
            }
            last = Some(key);
            let value: &RawValue = map.next_value()?;
            let value = value.get();
            if self.strings && !value.starts_with('"') {
                return Err(de::Error::custom("a checksum that is not a string"));
            }
            // Copied as it is by the next commit: on one line, as the
            // record's layout has each entry.
            if value.contains('\n') {
                return Err(de::Error::custom("an entry on several lines"));
            }
            let at = |s: &str| {
                u32::try_from((s.as_ptr() as usize).wrapping_sub(self.base))
                    .map_err(|_| de::Error::custom("past 4 GiB"))
            };
            let (k, v) = (at(key)?, at(value)?);
            spans.push(Span::new(
                k,
                k.saturating_add(key.len() as u32),
                v,
                v.saturating_add(value.len() as u32),
            ));
        }
        Ok(spans)
    }
}

/// Writes one map's entries as the record lays them out (`"key": value`,
/// one per line, four spaces in; `{}` when empty): the entries of `map`
/// and those of the text not taken, merged in key order (a key in both
/// takes the map's).
fn write_map<V: serde::Serialize>(
    out: &mut Vec<u8>,
    map: &BTreeMap<String, V>,
    unread: &Unread,
    which: Which,
) -> io::Result<()> {
    let mut left = unread.left_entries(which).peekable();
    let mut mine = map.iter().peekable();
    let mut first = true;
    loop {
        let take_text = match (left.peek(), mine.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some((k, _)), Some((m, _))) => *k < m.as_str(),
        };
        out.extend_from_slice(if first { b"{\n    " } else { b",\n    " });
        first = false;
        if take_text {
            if let Some((key, value)) = left.next() {
                out.push(b'"');
                out.extend_from_slice(key.as_bytes());
                out.extend_from_slice(b"\": ");
                out.extend_from_slice(value.as_bytes());
            }
        } else if let Some((key, value)) = mine.next() {
            // The text's entry of the same key, if any, is the map's now.
            left.next_if(|(k, _)| *k == key.as_str());
            serde_json::to_writer(&mut *out, key)?;
            out.extend_from_slice(b": ");
            serde_json::to_writer(&mut *out, value)?;
        }
    }
    out.extend_from_slice(if first { b"{}" } else { b"\n  }" });
    Ok(())
}

/// Writes `state`, read in part, as [`super::entry_lines::write`] writes a
/// record read whole: the small fields serialized, each large map's entries
/// merged from the map and the text ([`write_map`]).
pub(super) fn write_spliced(out: &mut Vec<u8>, state: &State) -> io::Result<()> {
    let mut skeleton = Vec::with_capacity(16 * 1024);
    super::entry_lines::write(&mut skeleton, &without_maps(state)).map_err(io::Error::from)?;
    let (Some(checksums_at), Some(resources_at)) = (
        find_once(&skeleton, b"\n  \"checksums\": {}"),
        find_once(&skeleton, b"\n  \"resources\": {}"),
    ) else {
        return Err(io::Error::other(
            "the record's maps were not found where they go",
        ));
    };
    let brace = |at: usize, name: &str| at + "\n  \"\": ".len() + name.len();
    let (c, r) = (
        brace(checksums_at, "checksums"),
        brace(resources_at, "resources"),
    );
    let (Some(before), Some(between), Some(after)) = (
        skeleton.get(..c),
        skeleton.get(c + 2..r),
        skeleton.get(r + 2..),
    ) else {
        return Err(io::Error::other("the record's maps are out of order"));
    };
    out.reserve(state.unread.text_len() + 16 * 1024);
    out.extend_from_slice(before);
    write_map(out, &state.checksums, &state.unread, Which::Checksums)?;
    out.extend_from_slice(between);
    write_map(out, &state.resources, &state.unread, Which::Resources)?;
    out.extend_from_slice(after);
    Ok(())
}

/// `state`'s small fields, with both large maps empty. (Destructured: a
/// field added to the record must be placed here.)
fn without_maps(state: &State) -> State {
    let State {
        version,
        active_profile,
        config_path,
        repo_url,
        last_sync,
        last_apply,
        machine,
        stead_version,
        lineage,
        history,
        checksums: _,
        resources: _,
        sync,
        checks,
        migration,
        unread: _,
    } = state;
    State {
        version: *version,
        active_profile: active_profile.clone(),
        config_path: config_path.clone(),
        repo_url: repo_url.clone(),
        last_sync: *last_sync,
        last_apply: *last_apply,
        machine: machine.clone(),
        stead_version: stead_version.clone(),
        lineage: lineage.clone(),
        history: history.clone(),
        checksums: BTreeMap::new(),
        resources: BTreeMap::new(),
        sync: sync.clone(),
        checks: checks.clone(),
        migration: migration.clone(),
        unread: Unread::default(),
    }
}

/// Where `needle` is in `hay`, if it is there exactly once.
fn find_once(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let mut found = hay
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle);
    let (at, _) = found.next()?;
    found.next().is_none().then_some(at)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::super::schema::tests::record;
    use super::*;

    fn machine() -> crate::machine::MachineInfo {
        crate::machine::MachineInfo {
            id: "m".into(),
            hostname: "h".into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            user: "u".into(),
        }
    }

    fn laid_out(state: &State) -> String {
        let mut out = Vec::new();
        super::super::entry_lines::write(&mut out, state).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn spliced(state: &State) -> String {
        let mut out = Vec::new();
        write_spliced(&mut out, state).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn sample() -> State {
        let mut state = State::new(machine());
        state.lineage.serial = 7;
        for (i, key) in ["~/a", "~/b/c", "/etc/x", "~/ü"].into_iter().enumerate() {
            let sum = if i == 2 {
                Checksum::of("secret:keyed")
            } else {
                Checksum::of(&format!("blake3:{}", blake3::hash(key.as_bytes()).to_hex()))
            };
            state.checksums.insert(key.into(), sum);
        }
        state
            .resources
            .insert("file.a".into(), record("file", &["~/a"], 3, &[]));
        state
            .resources
            .insert("file.c".into(), record("file", &["~/b/c"], 4, &[]));
        state.resources.insert(
            "package.git".into(),
            record("package", &[], 5, &["apt:git"]),
        );
        state
    }

    #[test]
    fn a_record_read_in_part_answers_every_lookup_as_the_whole_one() {
        let whole = sample();
        let part = read(laid_out(&whole)).expect("read in part");
        assert!(part.unread.is_partial());
        assert!(part.checksums.is_empty() && part.resources.is_empty());
        assert_eq!(part.lineage, whole.lineage);
        for (key, sum) in &whole.checksums {
            assert_eq!(part.checksum_of(key).as_deref(), Some(sum), "{key}");
        }
        for (id, rec) in &whole.resources {
            assert_eq!(part.record_of(id).as_deref(), Some(rec), "{id}");
        }
        for absent in ["~/", "~/a/", "~/b", "/", "file.b", ""] {
            assert!(part.checksum_of(absent).is_none(), "{absent}");
            assert!(part.record_of(absent).is_none(), "{absent}");
        }
        let keys: Vec<&str> = part.unread_checksum_keys().collect();
        let expected: Vec<&str> = whole.checksums.keys().map(String::as_str).collect();
        assert_eq!(keys, expected);
        let records: BTreeMap<String, ResourceRecord> = part
            .unread_records()
            .map(|(id, r)| (id.to_string(), r))
            .collect();
        assert_eq!(records, whole.resources);
        assert_eq!(part.entry_counts(), (4, 3));
        assert_eq!(part.clone().into_whole().unwrap(), whole);
    }

    #[test]
    fn an_entry_taken_is_read_from_the_map_and_written_from_it() {
        let whole = sample();
        let mut part = read(laid_out(&whole)).unwrap();
        part.take_entries(["file.a", "file.none"], ["~/b/c", "~/none"])
            .unwrap();
        // The record's keys come with it.
        assert_eq!(part.resources.keys().collect::<Vec<_>>(), ["file.a"]);
        assert_eq!(part.checksums.keys().collect::<Vec<_>>(), ["~/a", "~/b/c"]);
        assert_eq!(part.entry_counts(), (4, 3));
        // Removed from the map: gone, not read again from the text.
        part.resources.remove("file.a");
        part.checksums.remove("~/a");
        assert!(part.record_of("file.a").is_none());
        assert!(part.checksum_of("~/a").is_none());
        assert!(part.unread_checksum_keys().all(|k| k != "~/a"));
        // Taking again takes nothing back from the text.
        part.take_entries(["file.a"], ["~/a"]).unwrap();
        assert!(part.record_of("file.a").is_none());
        let mut expected = whole.clone();
        expected.resources.remove("file.a");
        expected.checksums.remove("~/a");
        assert_eq!(spliced(&part), laid_out(&expected));
    }

    #[test]
    fn an_entry_that_does_not_parse_fails_when_it_is_taken() {
        let text = laid_out(&sample()).replace("\"serial\":4", "\"serial\":\"four\"");
        let mut part = read(text).expect("only the entry's fields are wrong");
        assert!(part.record_of("file.c").is_none());
        assert_eq!(part.unread_records().count(), 2);
        part.take_entries(["file.a"], []).unwrap();
        let err = part.take_entries(["file.c"], []).unwrap_err();
        // Where it is in the record, not only where in its value.
        let line = laid_out(&sample())
            .lines()
            .position(|l| l.contains("\"file.c\""))
            .unwrap()
            + 1;
        assert_eq!(
            (err.map, err.key.as_str(), err.line),
            ("resources", "file.c", line)
        );
        let message = err.to_string();
        assert!(
            message.contains(&format!("\"file.c\" of \"resources\" on line {line}")),
            "{message}"
        );
        // Still there, not lost: taking it fails again, and so does the
        // whole record.
        assert!(part.take_entries(["file.c"], []).is_err());
        assert_eq!(part.entry_counts(), (4, 3));
        assert!(part.into_whole().is_err());
    }

    #[test]
    fn a_record_with_entries_on_several_lines_is_left_to_the_whole_read() {
        // Fully pretty, as stead wrote records before the entry-per-line
        // layout: its next commit rewrites it whole, in the new layout.
        let whole = sample();
        let pretty = serde_json::to_string_pretty(&whole).unwrap();
        assert_eq!(read(pretty.clone()), Err(pretty));
        // Compact on one line: read in part, each entry written on its own.
        let compact = serde_json::to_string(&whole).unwrap();
        let part = read(compact).expect("read in part");
        assert_eq!(spliced(&part), laid_out(&whole));
    }

    #[test]
    fn what_a_read_in_part_cannot_vouch_for_is_left_to_the_whole_read() {
        let text = laid_out(&sample());
        let cases = [
            ("an escaped key", text.replace("\"~/b/c\"", "\"~/b\\/c\"")),
            ("keys out of order", text.replace("\"~/a\"", "\"~/z\"")),
            ("a key given twice", text.replace("\"~/b/c\"", "\"~/a\"")),
            (
                "a checksum that is no string",
                text.replace("\"secret:keyed\"", "7"),
            ),
            ("an unknown field", text.replacen('{', "{\"extra\": 1,", 1)),
            (
                "a map given twice",
                text.replacen('{', "{\"resources\": {},", 1),
            ),
            ("no resources", text.replace("\"resources\"", "\"x\"")),
            (
                "a newer version",
                text.replace("\"version\": 3", "\"version\": 4"),
            ),
            ("trailing text", format!("{text} {{}}")),
            ("not JSON", text.replace("\"file.a\": {", "\"file.a\": {{")),
        ];
        for (what, bad) in cases {
            assert_ne!(bad, text, "{what}: the case changed nothing");
            assert_eq!(read(bad.clone()), Err(bad), "{what}");
        }
    }

    fn arb_state() -> impl Strategy<Value = State> {
        let key = "(~/|/)[a-cé]{1,3}(/[a-c]{1,2})?";
        let sum = prop_oneof![
            "[0-9a-f]{64}".prop_map(|h| Checksum::of(&format!("blake3:{h}"))),
            "[ -~]{0,12}".prop_map(|t| Checksum::of(&t)),
        ];
        let rec = (
            "[a-z]{1,5}",
            proptest::collection::vec(key, 0..3),
            0u64..9,
            proptest::collection::vec("[a-z:\"]{1,6}", 0..2),
        )
            .prop_map(|(kind, keys, serial, names)| ResourceRecord {
                kind,
                keys,
                serial,
                names: names.into(),
            });
        (
            proptest::collection::btree_map(key, sum, 0..12),
            proptest::collection::btree_map("[a-z]{1,3}\\.[a-c]{1,3}", rec, 0..12),
        )
            .prop_map(|(checksums, resources)| {
                let mut state = State::new(machine());
                state.checksums = checksums;
                state.resources = resources;
                state
            })
    }

    /// What a run does to the record it read: entries taken, then changed,
    /// removed and added, on taken keys and on new ones.
    #[derive(Debug, Clone)]
    enum Edit {
        Take(usize, usize),
        SetSum(usize, String),
        RemoveSum(usize),
        RemoveRecord(usize),
        NewSum(String),
        NewRecord(String, u64),
    }

    fn arb_edit() -> impl Strategy<Value = Edit> {
        prop_oneof![
            (0usize..20, 0usize..20).prop_map(|(a, b)| Edit::Take(a, b)),
            (0usize..20, "[a-z]{1,4}").prop_map(|(a, t)| Edit::SetSum(a, t)),
            (0usize..20).prop_map(Edit::RemoveSum),
            (0usize..20).prop_map(Edit::RemoveRecord),
            "~/[a-d]{1,4}".prop_map(Edit::NewSum),
            ("[a-z]{1,3}\\.[a-d]{1,3}", 0u64..9).prop_map(|(id, s)| Edit::NewRecord(id, s)),
        ]
    }

    /// The record's keys and ids before the run.
    type Known = (Vec<String>, Vec<String>);

    /// Applies `edit` to `part` (read in part) and `whole` alike, keeping
    /// to what a run may do: change only what it took.
    fn apply(edit: &Edit, part: &mut State, whole: &mut State, known: &Known) {
        let (keys, ids) = known;
        let pick = |list: &Vec<String>, i: usize| list.get(i % list.len().max(1)).cloned();
        match edit {
            Edit::Take(k, i) => {
                let (k, i) = (pick(keys, *k), pick(ids, *i));
                part.take_entries(i.as_deref(), k.as_deref()).unwrap();
            }
            Edit::SetSum(k, text) => {
                if let Some(k) = pick(keys, *k).filter(|k| part.checksums.contains_key(k)) {
                    part.checksums.insert(k.clone(), Checksum::of(text));
                    whole.checksums.insert(k, Checksum::of(text));
                }
            }
            Edit::RemoveSum(k) => {
                if let Some(k) = pick(keys, *k).filter(|k| part.checksums.contains_key(k)) {
                    part.checksums.remove(&k);
                    whole.checksums.remove(&k);
                }
            }
            Edit::RemoveRecord(i) => {
                if let Some(i) = pick(ids, *i).filter(|i| part.resources.contains_key(i)) {
                    part.resources.remove(&i);
                    whole.resources.remove(&i);
                }
            }
            Edit::NewSum(k) => {
                part.take_entries([], [k.as_str()]).unwrap();
                part.checksums.insert(k.clone(), Checksum::of("new"));
                whole.checksums.insert(k.clone(), Checksum::of("new"));
            }
            Edit::NewRecord(id, serial) => {
                part.take_entries([id.as_str()], []).unwrap();
                let rec = record("file", &["~/new"], *serial, &[]);
                part.resources.insert(id.clone(), rec.clone());
                whole.resources.insert(id.clone(), rec);
            }
        }
    }

    proptest! {
        #[test]
        fn a_record_read_in_part_and_changed_is_written_as_the_whole_one(
            state in arb_state(),
            edits in proptest::collection::vec(arb_edit(), 0..16),
        ) {
            let mut part = read(laid_out(&state)).expect("read in part");
            let mut whole = state.clone();
            let known = (
                state.checksums.keys().cloned().collect::<Vec<_>>(),
                state.resources.keys().cloned().collect::<Vec<_>>(),
            );
            for edit in &edits {
                apply(edit, &mut part, &mut whole, &known);
            }
            prop_assert_eq!(spliced(&part), laid_out(&whole));
            // Every lookup answers as the whole record does.
            let asked: BTreeSet<&String> = known.0.iter().chain(whole.checksums.keys()).collect();
            for key in asked {
                let got = part.checksum_of(key).map(Cow::into_owned);
                prop_assert_eq!(got.as_ref(), whole.checksums.get(key));
            }
            for id in known.1.iter().chain(whole.resources.keys()) {
                let got = part.record_of(id).map(Cow::into_owned);
                prop_assert_eq!(got.as_ref(), whole.resources.get(id));
            }
            prop_assert_eq!(
                part.entry_counts(),
                (whole.checksums.len(), whole.resources.len())
            );
            prop_assert_eq!(part.into_whole().unwrap(), whole);
        }
    }
}
