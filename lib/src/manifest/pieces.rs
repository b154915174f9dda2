//! Where a large `stead.toml` may be cut into pieces that parse on their
//! own: before a `[kind.name]` header, when every table header of the text
//! has a shape whose meaning cannot change when the text is cut there.
//!
//! Why: the TOML parser keeps about 20 bytes per byte of text while it
//! parses (tokens, events, then a spanned tree); at 100 000 resources that
//! was most of a run's peak memory. A piece of [`PIECE_BYTES`] is parsed,
//! walked into declarations and dropped before the next.
//!
//! Whether the pieces together mean what the whole text means is checked by
//! the caller (`parse`): each piece must parse, no resource id may be
//! declared in two pieces, and no other top-level table may appear in two;
//! otherwise, and whenever anything is wrong, the whole text is parsed as
//! before, so every error is reported exactly as it always was.

use std::ops::Range;

use super::schema::KindTable;

/// About how many bytes of text a piece holds.
pub(super) const PIECE_BYTES: usize = 256 * 1024;

/// The pieces of `text`, each about `piece` bytes and starting at a line
/// `[kind.name]` (the first one at 0); `None` when the text is small, or
/// when any line that starts with `[` is not a plain header (see
/// [`header`]): such a line may be `[[array]]`, a table header whose
/// meaning depends on another one, or a line inside a multi-line value.
pub(super) fn split(text: &str, piece: usize, kinds: &dyn KindTable) -> Option<Vec<Range<usize>>> {
    if text.len() <= piece {
        return None;
    }
    let mut starts = vec![0];
    let mut at = 0;
    let mut in_root = true;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        // A kind's resources given as keys of the root table (`file = {...}`,
        // `file.a.path = ...`) would clash with a `[file.b]` header in the
        // whole text, but not in a piece without them.
        if in_root && kinds.find(root_key(trimmed)).is_some() {
            return None;
        }
        if trimmed.starts_with('[') {
            in_root = false;
            let splits_here = header(trimmed, kinds)?;
            let last = starts.last().copied().unwrap_or(0);
            // An indented header is fine where it is, but never a cut.
            if splits_here && trimmed.len() == line.len() && at - last >= piece {
                starts.push(at);
            }
        }
        at += line.len();
    }
    if starts.len() < 2 {
        return None;
    }
    let ends = starts.iter().skip(1).copied().chain([text.len()]);
    Some(starts.iter().zip(ends).map(|(&s, e)| s..e).collect())
}

/// The first key of a `key = value` or `key.more = value` line (empty for
/// anything else).
fn root_key(line: &str) -> &str {
    let end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .unwrap_or(line.len());
    &line[..end]
}

/// A line starting with `[`: `Some(true)` for `[kind.name]` (a place to
/// cut), `Some(false)` for another plain header whose first key is not a
/// kind (`[settings]`, `[profile.work.vars]`), `None` for anything else:
/// `[[...]]`, quoted or spaced keys, a comment after it, a `[kind]` or
/// `[kind.name.more]` header (these define part of a table that another
/// header may define too), or a line that is no header at all.
fn header(line: &str, kinds: &dyn KindTable) -> Option<bool> {
    let body = line.trim_end().strip_prefix('[')?.strip_suffix(']')?;
    let bare = |k: &str| {
        !k.is_empty()
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    let keys: Vec<&str> = body.split('.').collect();
    if !keys.iter().all(|k| bare(k)) {
        return None;
    }
    match kinds.find(keys[0]) {
        Some(_) if keys.len() == 2 => Some(true),
        Some(_) => None,
        None => Some(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::registry::REGISTRY;

    fn cut(text: &str, piece: usize) -> Option<Vec<&str>> {
        split(text, piece, &REGISTRY).map(|r| r.into_iter().map(|r| &text[r]).collect())
    }

    #[test]
    fn cuts_before_a_kind_header_once_a_piece_is_full() {
        let text = "[vars]\na = 1\n[file.a]\npath = \"~/a\"\n[file.b]\npath = \"~/b\"\n[dir.c]\npath = \"~/c\"\n";
        assert_eq!(
            cut(text, 20).unwrap(),
            [
                "[vars]\na = 1\n[file.a]\npath = \"~/a\"\n",
                "[file.b]\npath = \"~/b\"\n",
                "[dir.c]\npath = \"~/c\"\n"
            ]
        );
        assert_eq!(cut(text, text.len()), None, "small: one piece");
    }

    #[test]
    fn refuses_any_header_whose_meaning_depends_on_another() {
        let base = "[file.a]\npath = \"~/a\"\n[file.b]\npath = \"~/b\"\n";
        for bad in [
            "[file]\n",
            "[[file]]\n",
            "[file.b.c]\n",
            "[file.\"x y\"]\n",
            "[file.c] # note\n",
            "[ file.c ]\n",
            "  [1, 2],\n",
        ] {
            assert_eq!(cut(&format!("{base}{bad}"), 4), None, "{bad:?}");
        }
        assert!(cut(&format!("{base}[profile.work.vars]\n"), 4).is_some());
    }

    #[test]
    fn refuses_a_kind_given_as_keys_of_the_root_table() {
        let tail = "[file.b]\npath = \"~/b\"\n[file.c]\npath = \"~/c\"\n";
        for root in [
            "file = { a = { path = \"~/a\" } }\n",
            "file.a.path = \"~/a\"\n",
            "  dir.d = { path = \"~/d\" }\n",
        ] {
            assert_eq!(cut(&format!("{root}{tail}"), 4), None, "{root:?}");
        }
        // Other root keys are harmless.
        assert!(cut(&format!("# a comment\nnote = 1\n{tail}"), 4).is_some());
    }

    #[test]
    fn never_cuts_at_an_indented_header() {
        let text = "[file.a]\npath = \"~/a\"\n  [file.b]\npath = \"~/b\"\n";
        assert_eq!(cut(text, 4), None);
    }
}
