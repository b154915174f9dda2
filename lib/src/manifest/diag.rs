//! Load errors of a manifest: every problem found, each with its place in
//! the file, reported together (miette diagnostics with spans).

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use miette::{NamedSource, SourceSpan};

/// One problem in a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What is wrong.
    pub message: String,
    /// Where, as a byte range of the manifest text.
    pub span: Option<Range<usize>>,
    /// A short label shown under the span.
    pub label: String,
    /// What to do about it.
    pub help: Option<String>,
}

impl Problem {
    pub(crate) fn at(span: Range<usize>, message: impl Into<String>) -> Self {
        Problem {
            message: message.into(),
            span: Some(span),
            label: "here".to_string(),
            help: None,
        }
    }

    pub(crate) fn label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    pub(crate) fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// Why a manifest could not be loaded: all its problems at once.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", self.summary())]
pub struct ManifestError {
    /// The manifest file.
    pub path: PathBuf,
    /// Its text (for spans).
    pub text: Arc<String>,
    /// Every problem found, in file order.
    pub problems: Vec<Problem>,
}

/// How many problems a report shows; the rest are counted ("... and N
/// more"). Thousands of problems are one mistake repeated, and printing them
/// all (each with its snippet) only buries the first.
pub const SHOWN_PROBLEMS: usize = 100;

/// A line longer than this (in bytes) is not shown as a snippet: the
/// renderer cannot place a caret past column 65 535, and a megabyte line is
/// no help on a terminal. The summary still gives `file:line:column`.
const MAX_SNIPPET_LINE: usize = 4096;

/// The start offset of every line of a text, to turn byte offsets into
/// lines and columns in O(log n) each (counting from the start of the text
/// for each problem made reporting quadratic).
#[derive(Debug, Clone)]
pub struct LineIndex {
    starts: Vec<usize>,
    len: usize,
}

impl LineIndex {
    /// Indexes `text` (one pass).
    pub fn new(text: &str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex {
            starts,
            len: text.len(),
        }
    }

    /// 1-based line and column of a byte offset. The column counts bytes,
    /// as the snippet's caret and header do, so the two always agree.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.len);
        let line = self.starts.partition_point(|&s| s <= offset);
        let start = self.starts[line.saturating_sub(1)];
        (line, offset - start + 1)
    }

    /// The byte length of the line holding `offset` (without its newline).
    fn line_len(&self, offset: usize) -> usize {
        let (line, _) = self.line_col(offset);
        let start = self.starts[line - 1];
        let end = self.starts.get(line).map_or(self.len, |next| next - 1);
        end - start
    }
}

impl ManifestError {
    /// 1-based line and column (in bytes) of a byte offset. For many
    /// offsets, build one [`LineIndex`] instead.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        LineIndex::new(&self.text).line_col(offset)
    }

    /// `file:line:col: message` for each problem (the first
    /// [`SHOWN_PROBLEMS`], then how many more).
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let index = LineIndex::new(&self.text);
        let file = self.path.display();
        let n = self.problems.len();
        let mut out = format!("{n} problem{} in {file}:", if n == 1 { "" } else { "s" });
        for p in self.problems.iter().take(SHOWN_PROBLEMS) {
            match &p.span {
                Some(span) => {
                    let (line, col) = index.line_col(span.start);
                    let _ = write!(out, "\n  {file}:{line}:{col}: {}", p.message);
                }
                None => {
                    let _ = write!(out, "\n  {file}: {}", p.message);
                }
            }
            if let Some(help) = &p.help {
                let _ = write!(out, " ({help})");
            }
        }
        if n > SHOWN_PROBLEMS {
            let _ = write!(out, "\n  ... and {} more", n - SHOWN_PROBLEMS);
        }
        out
    }

    /// The first [`SHOWN_PROBLEMS`] problems as miette reports with the
    /// source and a span label; a problem on a line too long to show gets
    /// no snippet (its place is in [`ManifestError::summary`]).
    pub fn reports(&self) -> Vec<ProblemReport> {
        let index = LineIndex::new(&self.text);
        let src = NamedSource::new(self.path.display().to_string(), self.text.clone());
        self.problems
            .iter()
            .take(SHOWN_PROBLEMS)
            .map(|p| ProblemReport {
                message: p.message.clone(),
                src: src.clone(),
                span: p
                    .span
                    .clone()
                    .filter(|s| {
                        let last = s.end.saturating_sub(1).max(s.start);
                        index.line_len(s.start) <= MAX_SNIPPET_LINE
                            && index.line_len(last) <= MAX_SNIPPET_LINE
                    })
                    .map(SourceSpan::from),
                label: p.label.clone(),
                help: p.help.clone(),
            })
            .collect()
    }
}

/// One problem, ready for a miette report handler.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("{message}")]
pub struct ProblemReport {
    message: String,
    #[source_code]
    src: NamedSource<Arc<String>>,
    #[label("{label}")]
    span: Option<SourceSpan>,
    label: String,
    #[help]
    help: Option<String>,
}
