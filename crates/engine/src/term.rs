//! Text on its way to a person's terminal: untrusted text made inert, and
//! command suggestions quoted for the shell.
//!
//! Message bodies, replies from models, agent and file names, paths and
//! server errors can all hold bytes that a terminal obeys: ESC sequences that
//! recolour, retitle or rewrite the screen, a carriage return that overwrites
//! a line, a bidirectional override that reorders what is shown. Every human
//! renderer passes such text through [`line`] (one-line fields) or [`text`]
//! (bodies, notes and diagnostics, whose newlines and tabs are kept). JSON
//! output needs neither: its encoder escapes control characters itself.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether a character must be escaped; `keep_layout` keeps `\n` and `\t`.
fn unsafe_char(c: char, keep_layout: bool) -> bool {
    match c {
        '\n' | '\t' => !keep_layout,
        // C0 controls (ESC, BEL, CR, backspace, ...), DEL and the C1 controls
        // (U+0080–U+009F, among them the one-character CSI, U+009B).
        '\0'..='\x1f' | '\x7f'..='\u{9f}' => true,
        // Bidirectional embeddings, overrides and isolates: they reorder the
        // text shown after them, so what is read is not what is there.
        '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => true,
        // Line and paragraph separators: a line break some terminals obey.
        '\u{2028}' | '\u{2029}' => true,
        _ => false,
    }
}

fn escape(s: &str, keep_layout: bool) -> Cow<'_, str> {
    if !s.chars().any(|c| unsafe_char(c, keep_layout)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if !unsafe_char(c, keep_layout) {
            out.push(c);
            continue;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x100 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
        }
    }
    Cow::Owned(out)
}

/// A one-line field (a name, an id, a subject, a path, a model key) safe to
/// print: every control character is shown escaped (`\x1b`, `\n`, `\t`,
/// `\u{202e}`), so the text can neither drive the terminal nor break the line.
pub fn line(s: &str) -> Cow<'_, str> {
    escape(s, false)
}

/// Multi-line text (a message body, notes, a raw reply, an error) safe to
/// print: newlines and tabs are kept, every other control character is shown
/// escaped as by [`line`].
pub fn text(s: &str) -> Cow<'_, str> {
    escape(s, true)
}

/// A word for a command a person may copy into a POSIX shell: unchanged when
/// it holds only characters the shell takes literally, else in single quotes
/// (`'it'\''s'`).
pub fn shell_quote(word: &str) -> Cow<'_, str> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-+.,:/@%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        return Cow::Borrowed(word);
    }
    Cow::Owned(format!("'{}'", word.replace('\'', "'\\''")))
}

/// [`shell_quote`] of a path (lossy for names that are not UTF-8).
pub fn shell_path(path: &std::path::Path) -> String {
    shell_quote(&path.to_string_lossy()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_and_controls_are_shown_not_obeyed() {
        assert_eq!(line("\x1b[31mred\x1b[0m"), "\\x1b[31mred\\x1b[0m");
        assert_eq!(line("\x1b]0;title\x07"), "\\x1b]0;title\\x07");
        assert_eq!(line("a\rb\x08c\x7fd\0"), "a\\rb\\x08c\\x7fd\\x00");
        assert_eq!(line("\u{9b}31m"), "\\x9b31m", "the one-character CSI (C1)");
        assert_eq!(line("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(line("x\u{2028}y"), "x\\u{2028}y");
    }

    #[test]
    fn one_line_fields_escape_newlines_and_tabs_but_texts_keep_them() {
        assert_eq!(line("a\nb\tc"), "a\\nb\\tc");
        assert_eq!(text("a\nb\tc"), "a\nb\tc");
        assert_eq!(text("line 1\r\nline 2\x1b[2J"), "line 1\\r\nline 2\\x1b[2J");
    }

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        for s in ["", "hello, world", "héllo → 世界 ✓ 🐹", "back\\slash"] {
            assert!(matches!(line(s), Cow::Borrowed(b) if b == s), "{s:?}");
            assert!(matches!(text(s), Cow::Borrowed(b) if b == s), "{s:?}");
        }
    }

    #[test]
    fn shell_words_are_quoted_when_the_shell_would_split_or_expand_them() {
        assert_eq!(shell_quote("/tmp/my-org"), "/tmp/my-org");
        assert_eq!(shell_quote("/tmp/my org"), "'/tmp/my org'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote("$HOME"), "'$HOME'");
        assert_eq!(shell_quote("a;rm -rf ~"), "'a;rm -rf ~'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_path(std::path::Path::new("/a b/c")), "'/a b/c'");
    }
}
