//! `org/org.toml`: turn length, wake-on-message, parallelism, limits, the org-wide budget.

use std::path::Path;

use crate::config::{Doc, MAX_CREDITS, MAX_SECS_F};
use crate::error::Diagnostic;

/// The org-wide settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Seconds between timer turns of `lemming run`.
    pub turn_seconds: f64,
    /// Whether a new outbox message starts an early turn.
    pub wake_on_message: bool,
    /// Quiet time after a new message before the early turn starts, in milliseconds.
    pub debounce_ms: u64,
    /// How many agents run at once.
    pub max_parallel: usize,
    /// Failed attempts on a piece of mail before it goes to dead as poison.
    pub max_attempts: u32,
    /// Largest accepted message file, in bytes.
    pub max_message_bytes: u64,
    /// Most unread messages put into one prompt; the rest wait for the next turn.
    pub max_mail_per_prompt: usize,
    /// How many turns of journal to keep.
    pub journal_keep_turns: u64,
    /// Days of daemon log files to keep.
    pub log_retention_days: u64,
    /// Org-wide credits for model calls: once all charges together reach it,
    /// no agent runs (`None`: no org-wide limit).
    pub budget: Option<f64>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            turn_seconds: 60.0,
            wake_on_message: true,
            debounce_ms: 5,
            max_parallel: 8,
            max_attempts: 3,
            max_message_bytes: 65536,
            max_mail_per_prompt: 50,
            journal_keep_turns: 20,
            log_retention_days: 7,
            budget: None,
        }
    }
}

/// The fields of `org.toml`.
const FIELDS: [&str; 10] = [
    "turn_seconds",
    "wake_on_message",
    "debounce_ms",
    "max_parallel",
    "max_attempts",
    "max_message_bytes",
    "max_mail_per_prompt",
    "journal_keep_turns",
    "log_retention_days",
    "budget",
];

/// Parses and validates `org.toml` text, reporting every problem.
pub fn parse(path: &Path, text: &str) -> Result<Settings, Vec<Diagnostic>> {
    let doc = Doc::parse(path, text)?;
    let mut s = Settings::default();
    {
        let t = doc.root();
        if let Some(v) = t.float("turn_seconds", 0.0, false, MAX_SECS_F, "turn_seconds = 60 (at most a year)") {
            s.turn_seconds = *v.get_ref();
        }
        if let Some(w) = t.bool("wake_on_message") {
            s.wake_on_message = w;
        }
        let int = |field: &str, range: std::ops::RangeInclusive<i64>, example: &str| {
            t.int(field, range, example).map(|v| *v.get_ref() as u64)
        };
        if let Some(v) = int("debounce_ms", 0..=60_000, "debounce_ms = 5 (milliseconds, at most a minute)") {
            s.debounce_ms = v;
        }
        if let Some(v) = int("max_parallel", 1..=4096, "max_parallel = 8") {
            s.max_parallel = v as usize;
        }
        if let Some(v) = int("max_attempts", 1..=1000, "max_attempts = 3") {
            s.max_attempts = v as u32;
        }
        if let Some(v) = int("max_message_bytes", 256..=MAX_MESSAGE_BYTES, "max_message_bytes = 65536") {
            s.max_message_bytes = v;
        }
        if let Some(v) = int("max_mail_per_prompt", 1..=100_000, "max_mail_per_prompt = 50") {
            s.max_mail_per_prompt = v as usize;
        }
        if let Some(v) = int("journal_keep_turns", 1..=1_000_000_000, "journal_keep_turns = 20") {
            s.journal_keep_turns = v;
        }
        if let Some(v) = int("log_retention_days", 1..=36_500, "log_retention_days = 7") {
            s.log_retention_days = v;
        }
        if let Some(b) = t.float(
            "budget",
            0.0,
            true,
            MAX_CREDITS,
            "budget = 1000.0 (credits for the whole org), or remove it for no org-wide limit",
        ) {
            s.budget = Some(*b.get_ref());
        }
        t.deny_unknown(&FIELDS);
    }
    let errs = doc.finish();
    if errs.is_empty() {
        Ok(s)
    } else {
        Err(errs)
    }
}

/// The largest `max_message_bytes` accepted (64 MiB).
pub const MAX_MESSAGE_BYTES: i64 = 64 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors() {
        assert_eq!(parse(Path::new("o"), "").unwrap(), Settings::default());
        let s = parse(Path::new("o"), "max_parallel = 64\nturn_seconds = 0.5\n").unwrap();
        assert_eq!((s.max_parallel, s.turn_seconds), (64, 0.5));
        let e = parse(Path::new("o"), "max_parallel = 0\nturn_seconds = -1.0\nbudget = -5.0\n").unwrap_err();
        assert_eq!(e.len(), 3);
        // Type errors do not hide the problems after them.
        let e = parse(
            Path::new("o"),
            "max_parallel = \"4\"\nwake_on_message = 1\ndebounce_ms = -5\nmax_attempts = 2.5\nbudget = 1e300\nturn_seconds = nan\nmax_paralel = 3\n",
        )
        .unwrap_err();
        let lines: Vec<_> = e.iter().map(|d| d.line.unwrap()).collect();
        assert_eq!(lines, vec![1, 2, 3, 4, 5, 6, 7], "{e:#?}");
        assert_eq!(parse(Path::new("o"), "budget = 12.5\n").unwrap().budget, Some(12.5));
        assert!(parse(Path::new("o"), "max_paralel = 3\n").unwrap_err()[0].message.contains("unknown field"));
    }
}
