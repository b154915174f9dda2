//! The entries of a state record read in part that a run has not taken:
//! the record's text, and where each entry of its two large maps
//! (`checksums`, `resources`) is in it, in key order, with which of them
//! the run took into memory (`super::in_part` reads a record so and
//! answers for it).

use std::fmt;

use crate::checksum::Checksum;

/// The entries of a record read in part that the run has not taken: none
/// for a record read whole (the default).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Unread(Option<Box<Rest>>);

/// The text and where its entries are.
#[derive(Clone, PartialEq, Eq)]
struct Rest {
    text: Box<str>,
    checksums: Entries,
    resources: Entries,
}

/// One map's entries in the text, in key order, and which the run took.
#[derive(Clone, Default, PartialEq, Eq)]
struct Entries {
    spans: Vec<Span>,
    taken: Vec<bool>,
    taken_count: usize,
}

/// Where one entry's key (without its quotes) and value are in the text.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct Span {
    key: u32,
    key_end: u32,
    value: u32,
    value_end: u32,
}

impl fmt::Debug for Unread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            None => f.write_str("Unread(none)"),
            Some(rest) => write!(
                f,
                "Unread({} of {} checksums, {} of {} resources)",
                rest.checksums.left(),
                rest.checksums.spans.len(),
                rest.resources.left(),
                rest.resources.spans.len()
            ),
        }
    }
}

/// Which of the two maps.
#[derive(Clone, Copy)]
pub(super) enum Which {
    Checksums,
    Resources,
}

impl Unread {
    /// The text the entries' places are in.
    pub(super) fn set_text(&mut self, text: String) {
        if let Some(rest) = self.0.as_deref_mut() {
            rest.text = text.into_boxed_str();
        }
    }

    /// Whether the record was read in part (some entries may still be in
    /// its text).
    pub fn is_partial(&self) -> bool {
        self.0.is_some()
    }

    fn entries(&self, which: Which) -> Option<(&str, &Entries)> {
        let rest = self.0.as_deref()?;
        Some(match which {
            Which::Checksums => (&rest.text, &rest.checksums),
            Which::Resources => (&rest.text, &rest.resources),
        })
    }

    /// The value text of `key` in `which`, unless absent or taken.
    pub(super) fn raw(&self, which: Which, key: &str) -> Option<&str> {
        let (text, entries) = self.entries(which)?;
        let at = entries.find(text, key)?;
        (!entries.taken[at]).then(|| entries.spans[at].value_of(text))
    }

    /// The checksum the text records for `key` (not taken).
    pub(crate) fn checksum(&self, key: &str) -> Option<Checksum> {
        // A string, checked when read; anything else gave up the read in part.
        serde_json::from_str(self.raw(Which::Checksums, key)?).ok()
    }

    /// Every key of `which` not taken, in order.
    pub(super) fn keys(&self, which: Which) -> impl Iterator<Item = &str> {
        self.entries(which)
            .into_iter()
            .flat_map(|(text, entries)| entries.left_spans().map(|s| s.key_of(text)))
    }

    /// Every entry of `which` not taken, in key order: its key and its
    /// value's text.
    pub(super) fn left_entries(&self, which: Which) -> impl Iterator<Item = (&str, &str)> {
        self.entries(which).into_iter().flat_map(|(text, entries)| {
            entries
                .left_spans()
                .map(|s| (s.key_of(text), s.value_of(text)))
        })
    }

    /// A record's entries at `checksums` and `resources` of a text given
    /// later ([`Unread::set_text`]), none taken.
    pub(super) fn new(checksums: Vec<Span>, resources: Vec<Span>) -> Unread {
        let entries = |spans: Vec<Span>| Entries {
            taken: vec![false; spans.len()],
            spans,
            taken_count: 0,
        };
        Unread(Some(Box::new(Rest {
            checksums: entries(checksums),
            resources: entries(resources),
            text: Box::default(),
        })))
    }

    /// Takes `key` of `which` from the text, parsed by `parse`, if it is
    /// there and not taken yet. An entry `parse` refuses stays in the text;
    /// the error comes with the line of the record the entry is on.
    pub(super) fn take<T, E>(
        &mut self,
        which: Which,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Result<Option<T>, (E, usize)> {
        let Some(rest) = self.0.as_deref_mut() else {
            return Ok(None);
        };
        let entries = match which {
            Which::Checksums => &mut rest.checksums,
            Which::Resources => &mut rest.resources,
        };
        let Some(at) = entries
            .find(&rest.text, key)
            .filter(|&at| !entries.taken[at])
        else {
            return Ok(None);
        };
        let span = entries.spans[at];
        let value = parse(span.value_of(&rest.text)).map_err(|e| {
            let before = rest.text.get(..span.key as usize).unwrap_or_default();
            (e, before.matches('\n').count() + 1)
        })?;
        entries.taken[at] = true;
        entries.taken_count += 1;
        Ok(Some(value))
    }

    /// How long the text is (0 for a record read whole).
    pub(super) fn text_len(&self) -> usize {
        self.0.as_ref().map_or(0, |rest| rest.text.len())
    }

    /// How many entries of `which` are still in the text.
    pub(super) fn left(&self, which: Which) -> usize {
        self.entries(which).map_or(0, |(_, e)| e.left())
    }
}

impl Entries {
    fn find(&self, text: &str, key: &str) -> Option<usize> {
        self.spans
            .binary_search_by(|s| s.key_of(text).cmp(key))
            .ok()
    }

    fn left(&self) -> usize {
        self.spans.len() - self.taken_count
    }

    fn left_spans(&self) -> impl Iterator<Item = &Span> {
        self.spans
            .iter()
            .zip(&self.taken)
            .filter(|(_, taken)| !**taken)
            .map(|(s, _)| s)
    }
}

impl Span {
    /// The entry whose key is at `key..key_end` and value at `value..value_end`.
    pub(super) fn new(key: u32, key_end: u32, value: u32, value_end: u32) -> Span {
        Span {
            key,
            key_end,
            value,
            value_end,
        }
    }

    fn key_of<'t>(&self, text: &'t str) -> &'t str {
        text.get(self.key as usize..self.key_end as usize)
            .unwrap_or_default()
    }

    fn value_of<'t>(&self, text: &'t str) -> &'t str {
        text.get(self.value as usize..self.value_end as usize)
            .unwrap_or_default()
    }
}
