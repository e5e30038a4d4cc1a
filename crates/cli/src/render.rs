//! Output: JSON, the one table layout and the one message layout every
//! command uses. Text that comes from messages, models or files passes
//! through [`term`] here or before it reaches a cell.

use std::fmt::Write as _;

use lemming_engine::message::{Kind, Message, Priority};
use lemming_engine::term;

use crate::ctx::CliError;

/// Prints a value as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(v: &T) -> Result<(), CliError> {
    let s = serde_json::to_string_pretty(v).map_err(|e| CliError::user(e.to_string()))?;
    println!("{s}");
    Ok(())
}

/// A config or message word as its file spells it (`mail`, `urgent`), not as
/// Rust names it (`Mail`, `Urgent`).
pub fn word<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".into(),
    }
}

/// How a column's cells line up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text.
    Left,
    /// Numbers.
    Right,
}

/// A table with a header line: each column as wide as its widest cell (and
/// at least its minimum), one space apart, two after a right-aligned column
/// that a left-aligned one follows; the last column is not padded.
#[derive(Debug)]
pub struct Table {
    columns: Vec<(&'static str, Align, usize)>,
    rows: Vec<Row>,
}

#[derive(Debug)]
enum Row {
    Cells(Vec<String>),
    /// A first cell, then one free text instead of the other columns.
    Note(String, String),
}

impl Table {
    /// A table of these columns: header, alignment and minimum width.
    pub fn new(columns: &[(&'static str, Align, usize)]) -> Table {
        Table { columns: columns.to_vec(), rows: Vec::new() }
    }

    /// Adds a row (missing cells are empty).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(Row::Cells(cells));
    }

    /// Adds a row of one first cell and a text across the other columns.
    pub fn note(&mut self, first: String, text: String) {
        self.rows.push(Row::Note(first, text));
    }

    /// The header and the rows, each line ending in a newline.
    pub fn render(&self) -> String {
        let len = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = self.columns.iter().map(|(h, _, min)| len(h).max(*min)).collect();
        for row in &self.rows {
            match row {
                Row::Cells(cells) => {
                    for (w, c) in widths.iter_mut().zip(cells) {
                        *w = (*w).max(len(c));
                    }
                }
                Row::Note(first, _) => widths[0] = widths[0].max(len(first)),
            }
        }
        let header: Vec<String> = self.columns.iter().map(|(h, ..)| h.to_string()).collect();
        let mut out = String::new();
        self.line(&mut out, &header, &widths);
        for row in &self.rows {
            match row {
                Row::Cells(cells) => self.line(&mut out, cells, &widths),
                Row::Note(first, text) => {
                    let _ = writeln!(out, "{first:<w$} {text}", w = widths[0]);
                }
            }
        }
        out
    }

    /// Writes one line of `cells` to `s` (a large org's table is thousands).
    fn line(&self, s: &mut String, cells: &[String], widths: &[usize]) {
        let start = s.len();
        for (i, ((_, align, _), w)) in self.columns.iter().zip(widths).enumerate() {
            let cell = cells.get(i).map(String::as_str).unwrap_or("");
            if i > 0 {
                let after_number = self.columns[i - 1].1 == Align::Right && *align == Align::Left;
                s.push_str(if after_number { "  " } else { " " });
            }
            match align {
                Align::Right => {
                    let _ = write!(s, "{cell:>w$}");
                }
                Align::Left if i + 1 == self.columns.len() => s.push_str(cell),
                Align::Left => {
                    let _ = write!(s, "{cell:<w$}");
                }
            }
        }
        // An empty last cell leaves no trailing spaces.
        let end = start + s[start..].trim_end().len();
        s.truncate(end);
        s.push('\n');
    }
}

/// How a message is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageLayout {
    /// For an inbox: a head line (marked `●` when unread) with time, sender
    /// and recipients, then its id, subject and indented body, then a blank line.
    Full {
        /// Not read yet.
        unread: bool,
        /// Read and moved to the archive (tagged `[archived]`).
        archived: bool,
    },
    /// For a conversation: `sender (subject): body`, continuation lines indented.
    Chat,
}

/// A message for people; every field passes through [`term`] (its text is untrusted).
pub fn message(m: &Message, layout: MessageLayout) -> String {
    let mut tags = String::new();
    if m.kind != Kind::Message {
        let _ = write!(tags, " [{}]", m.kind.as_str());
    }
    if m.priority != Priority::Normal {
        let _ = write!(tags, " [{}]", word(&m.priority));
    }
    match layout {
        MessageLayout::Chat => {
            let subject = m.subject.as_deref().map(|s| format!(" ({})", term::line(s))).unwrap_or_default();
            let body = term::text(m.body.trim_end()).replace('\n', "\n  ");
            format!("{}{tags}{subject}: {body}\n", term::line(&m.from))
        }
        MessageLayout::Full { unread, archived } => {
            if archived {
                tags.push_str(" [archived]");
            }
            let mut s = format!(
                "{} {} from {} to {}{tags}\n  id: {}",
                if unread { "●" } else { " " },
                m.created_at.format("%Y-%m-%d %H:%M:%S"),
                term::line(&m.from),
                term::line(&m.to.0.join(", ")),
                term::line(&m.id)
            );
            if let Some(r) = &m.reply_to {
                let _ = write!(s, "  reply to: {}", term::line(r));
            }
            if let Some(subject) = &m.subject {
                let _ = write!(s, "\n  subject: {}", term::line(subject));
            }
            for line in term::text(&m.body).lines() {
                let _ = write!(s, "\n  {line}");
            }
            s.push_str("\n\n");
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_stay_aligned_when_a_cell_is_wider_than_its_minimum() {
        let mut t = Table::new(&[("NAME", Align::Left, 6), ("CREDITS", Align::Right, 8), ("TO", Align::Left, 0)]);
        t.row(vec!["a".into(), "1.0000".into(), "x, y".into()]);
        t.row(vec!["a_much_longer_name".into(), "100.0000".into(), "z".into()]);
        t.row(vec!["nobody".into(), "0.0000".into(), String::new()]);
        t.note("broken".into(), "(invalid resume)".into());
        let out = t.render();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "NAME                CREDITS  TO");
        assert_eq!(lines[1], "a                    1.0000  x, y");
        assert_eq!(lines[2], "a_much_longer_name 100.0000  z");
        assert_eq!(lines[3], "nobody               0.0000");
        assert_eq!(lines[4], "broken             (invalid resume)");
        assert!(out.lines().all(|l| !l.ends_with(' ')), "no trailing spaces:\n{out}");
    }

    fn msg(json: serde_json::Value) -> Message {
        Message::parse(json.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn one_message_shows_its_kind_priority_and_subject_in_both_layouts() {
        let m =
            msg(serde_json::json!({"id": "m1", "from": "lemming", "to": ["human", "hr"], "body": "no\nroute\x1b[2J",
            "subject": "bounced", "kind": "bounce", "priority": "urgent", "reply_to": "m0",
            "created_at": "2026-01-02T03:04:05Z"}));
        let full = message(&m, MessageLayout::Full { unread: true, archived: false });
        assert_eq!(
            full,
            "● 2026-01-02 03:04:05 from lemming to human, hr [bounce] [urgent]\n  id: m1  reply to: m0\n  subject: \
             bounced\n  no\n  route\\x1b[2J\n\n"
        );
        assert_eq!(message(&m, MessageLayout::Chat), "lemming [bounce] [urgent] (bounced): no\n  route\\x1b[2J\n");
        let plain = msg(serde_json::json!({"id": "m2", "from": "manager", "to": "human", "body": "hi\n",
            "created_at": "2026-01-02T03:04:05Z"}));
        assert_eq!(message(&plain, MessageLayout::Chat), "manager: hi\n");
        assert!(message(&plain, MessageLayout::Full { unread: false, archived: false })
            .starts_with("  2026-01-02 03:04:05 from manager to human\n"));
    }
}
