//! Error values shared by the engine: I/O errors that carry their path, and config diagnostics.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

pub use lemming_fs::{PathError, WithPath};

/// One problem found in a config file, with where it is and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    /// The file.
    pub path: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub help: Option<String>,
    /// The offending source line with a caret under the column.
    #[serde(skip)]
    pub snippet: Option<String>,
}

impl Diagnostic {
    /// A problem with a whole file (no position).
    pub fn file(path: &Path, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            path: path.to_path_buf(),
            line: None,
            column: None,
            message: message.into(),
            help: None,
            snippet: None,
        }
    }

    /// A problem at a byte span of the file's text.
    pub fn at(path: &Path, text: &str, span: Option<Range<usize>>, message: impl Into<String>) -> Diagnostic {
        let mut d = Diagnostic::file(path, message);
        if let Some(span) = span {
            let (line, column, source_line) = locate(text, span.start);
            d.line = Some(line);
            d.column = Some(column);
            let width = text[span.start.min(text.len())..span.end.min(text.len())]
                .lines()
                .next()
                .map(|s| s.chars().count())
                .unwrap_or(1)
                .max(1);
            let source_line = shown_line(source_line);
            d.snippet =
                Some(format!("{line:>4} | {source_line}\n     | {}{}", " ".repeat(column - 1), "^".repeat(width)));
        }
        d
    }

    /// Adds the fix.
    pub fn help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }
}

/// A source line as a snippet shows it: control characters (terminal escapes
/// among them) become U+FFFD, one column each so the caret still lines up,
/// and whatever looks like a key or token is masked with `*`.
fn shown_line(line: &str) -> String {
    let mut out: Vec<char> = line.chars().map(|c| if c.is_control() && c != '\t' { '\u{fffd}' } else { c }).collect();
    let starts: Vec<usize> = line.char_indices().map(|(i, _)| i).collect();
    for r in lemming_provider::config::secret_ranges(line) {
        for (n, at) in starts.iter().enumerate() {
            if r.contains(at) {
                out[n] = '*';
            }
        }
    }
    out.into_iter().collect()
}

/// 1-based line and column (in characters) of a byte offset, and the line's text.
fn locate(text: &str, offset: usize) -> (usize, usize, &str) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = text[line_start..offset].chars().count() + 1;
    let line_end = text[line_start..].find('\n').map(|i| line_start + i).unwrap_or(text.len());
    (line, column, text[line_start..line_end].trim_end_matches('\r'))
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, ":{l}:{c}")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(s) = &self.snippet {
            write!(f, "\n{s}")?;
        }
        if let Some(h) = &self.help {
            write!(f, "\n  help: {h}")?;
        }
        Ok(())
    }
}

/// A list of diagnostics, for errors that report every problem found.
#[derive(Debug, Clone, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_line_and_column_with_caret() {
        let text = "a = 1\nbb = \"x\"\n";
        let d = Diagnostic::at(Path::new("f.toml"), text, Some(11..14), "bad");
        assert_eq!((d.line, d.column), (Some(2), Some(6)));
        let shown = d.to_string();
        assert!(shown.starts_with("f.toml:2:6: bad"), "{shown}");
        assert!(shown.contains("   2 | bb = \"x\"\n     |      ^^^"), "{shown}");
    }

    #[test]
    fn snippets_show_no_escapes_and_no_keys() {
        let text = "a = \"\u{1b}[31mred\"\nk = \"sk-proj-AbCdEfGhIjKlMnOpQrStUv0123\"\n";
        let d = Diagnostic::at(Path::new("f"), text, Some(4..5), "bad");
        assert!(!d.to_string().contains('\u{1b}'), "{d}");
        let at = text.find("k =").unwrap();
        let d = Diagnostic::at(Path::new("f"), text, Some(at..at + 1), "bad");
        assert!(!d.to_string().contains("AbCdEf") && d.to_string().contains("k = \"****"), "{d}");
    }
}
