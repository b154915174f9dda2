//! `${...}` references inside manifest strings: `${vars.NAME}` and
//! `${kind.name}` (a resource's output: its path). `$${` writes a literal
//! `${` (for shell `${VAR}` in a command).

use std::ops::Range;

/// One `${...}` found in a string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reference {
    /// What is inside the braces, e.g. `vars.email` or `file.bashrc`.
    pub name: String,
    /// Byte range of `${...}` inside the string (of `$${` for an escape).
    pub range: Range<usize>,
    /// `$${`: stands for a literal `${`, refers to nothing.
    pub escape: bool,
}

/// Splits a string into literal text and references. An unclosed `${` is an
/// error naming its offset.
pub(crate) fn scan(s: &str) -> Result<Vec<Reference>, usize> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = s[from..].find("${") {
        let start = from + i;
        if start > from && s.as_bytes()[start - 1] == b'$' {
            out.push(Reference {
                name: String::new(),
                range: start - 1..start + 2,
                escape: true,
            });
            from = start + 2;
            continue;
        }
        let Some(len) = s[start + 2..].find('}') else {
            return Err(start);
        };
        let end = start + 2 + len + 1;
        out.push(Reference {
            name: s[start + 2..end - 1].trim().to_string(),
            range: start..end,
            escape: false,
        });
        from = end;
    }
    Ok(out)
}

/// Replaces every reference with what `lookup` gives for it, and every
/// escape with `${`.
pub(crate) fn substitute(
    s: &str,
    refs: &[Reference],
    mut lookup: impl FnMut(&Reference) -> Option<String>,
) -> String {
    let mut out = String::with_capacity(s.len());
    let mut last = 0;
    for r in refs {
        out.push_str(&s[last..r.range.start]);
        if r.escape {
            out.push_str("${");
            last = r.range.end;
            continue;
        }
        match lookup(r) {
            Some(v) => out.push_str(&v),
            None => out.push_str(&s[r.range.clone()]),
        }
        last = r.range.end;
    }
    out.push_str(&s[last..]);
    out
}

/// What a reference stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RefValue {
    /// Text put in its place (a variable, a resource's path).
    Text(String),
    /// A secret's value, named (`NAME` of `secret.NAME`): never put in
    /// the manifest's text, kept as a [`ContentPart::Secret`].
    Secret(String),
    /// An exec's stdout (`exec.NAME`), known when it has run: kept as a
    /// [`ContentPart::Output`].
    Output(String),
    /// A lineage secret's value (`NAME`), kept as a [`ContentPart::Shared`].
    Shared(String),
}

/// A piece of text whose references are resolved: literal text, or where a
/// secret's value goes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContentPart {
    /// Literal text.
    Text(String),
    /// The value of `secret.NAME` (the name).
    Secret(String),
    /// The stdout of the exec `exec.NAME` (its id) when it last ran.
    Output(String),
    /// The value of `secret.NAME` with `scope = "lineage"` (the name).
    Shared(String),
}

/// `s` as parts: the text between references, each escape as `${`, and
/// `values` (one per non-escape reference, in order) in their places.
/// Adjacent text is joined.
pub(crate) fn split(s: &str, refs: &[Reference], values: Vec<ContentPart>) -> Vec<ContentPart> {
    let mut out: Vec<ContentPart> = Vec::new();
    let push_text = |out: &mut Vec<ContentPart>, t: &str| {
        if t.is_empty() {
            return;
        }
        match out.last_mut() {
            Some(ContentPart::Text(last)) => last.push_str(t),
            _ => out.push(ContentPart::Text(t.to_string())),
        }
    };
    let mut values = values.into_iter();
    let mut last = 0;
    for r in refs {
        push_text(&mut out, &s[last..r.range.start]);
        last = r.range.end;
        if r.escape {
            push_text(&mut out, "${");
            continue;
        }
        match values.next() {
            Some(ContentPart::Text(t)) => push_text(&mut out, &t),
            Some(secret) => out.push(secret),
            None => push_text(&mut out, &s[r.range.clone()]),
        }
    }
    push_text(&mut out, &s[last..]);
    if out.is_empty() {
        out.push(ContentPart::Text(String::new()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_and_substitutes() {
        let s = "a ${vars.x} b ${file.rc}";
        let refs = scan(s).unwrap();
        assert_eq!(refs.len(), 2);
        assert_eq!(refs[0].name, "vars.x");
        assert_eq!(&s[refs[1].range.clone()], "${file.rc}");
        let out = substitute(s, &refs, |r| Some(r.name.to_uppercase()));
        assert_eq!(out, "a VARS.X b FILE.RC");
        assert_eq!(scan("x ${oops"), Err(2));
        assert!(scan("no refs").unwrap().is_empty());
    }

    #[test]
    fn a_doubled_dollar_is_a_literal() {
        let s = "echo $${HOME} ${vars.x} $$${vars.y}";
        let refs = scan(s).unwrap();
        let names: Vec<(&str, bool)> = refs.iter().map(|r| (r.name.as_str(), r.escape)).collect();
        assert_eq!(names, [("", true), ("vars.x", false), ("", true)]);
        let out = substitute(s, &refs, |r| Some(r.name.to_uppercase()));
        assert_eq!(out, "echo ${HOME} VARS.X $${vars.y}");
    }
}
