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

impl ManifestError {
    /// 1-based line and column of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let upto = &self.text[..offset.min(self.text.len())];
        let line = upto.matches('\n').count() + 1;
        let col = upto.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }

    /// `file:line:col: message` for each problem.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "{} problem{} in {}:",
            self.problems.len(),
            if self.problems.len() == 1 { "" } else { "s" },
            self.path.display()
        );
        for p in &self.problems {
            match &p.span {
                Some(span) => {
                    let (line, col) = self.line_col(span.start);
                    out.push_str(&format!(
                        "\n  {}:{line}:{col}: {}",
                        self.path.display(),
                        p.message
                    ));
                }
                None => out.push_str(&format!("\n  {}: {}", self.path.display(), p.message)),
            }
            if let Some(help) = &p.help {
                out.push_str(&format!(" ({help})"));
            }
        }
        out
    }

    /// Each problem as a miette report with the source and a span label.
    pub fn reports(&self) -> Vec<ProblemReport> {
        let src = NamedSource::new(self.path.display().to_string(), self.text.clone());
        self.problems
            .iter()
            .map(|p| ProblemReport {
                message: p.message.clone(),
                src: src.clone(),
                span: p.span.clone().map(SourceSpan::from),
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
