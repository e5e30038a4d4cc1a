//! `org/org.toml`: turn length, wake-on-message, parallelism, limits, the org-wide budget.

use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    turn_seconds: Option<Spanned<f64>>,
    wake_on_message: Option<bool>,
    debounce_ms: Option<u64>,
    max_parallel: Option<Spanned<i64>>,
    max_attempts: Option<Spanned<i64>>,
    max_message_bytes: Option<Spanned<i64>>,
    max_mail_per_prompt: Option<Spanned<i64>>,
    journal_keep_turns: Option<Spanned<i64>>,
    log_retention_days: Option<Spanned<i64>>,
    budget: Option<Spanned<f64>>,
}

/// Parses and validates `org.toml` text, reporting every problem.
pub fn parse(path: &Path, text: &str) -> Result<Settings, Vec<Diagnostic>> {
    let raw: Raw = toml::from_str(text).map_err(|e| vec![Diagnostic::from_toml(path, text, &e)])?;
    let mut s = Settings::default();
    let mut errs = Vec::new();
    if let Some(t) = raw.turn_seconds {
        let v = *t.get_ref();
        if !(v.is_finite() && v > 0.0 && v <= lemming_provider::config::MAX_SECS) {
            errs.push(
                Diagnostic::at(path, text, Some(t.span()), "`turn_seconds` must be more than 0 and at most a year")
                    .help("turn_seconds = 60"),
            );
        }
        s.turn_seconds = *t.get_ref();
    }
    let mut int = |v: Option<Spanned<i64>>, field: &str, min: i64, max: i64, slot: &mut u64| {
        if let Some(v) = v {
            if *v.get_ref() < min || *v.get_ref() > max {
                errs.push(
                    Diagnostic::at(
                        path,
                        text,
                        Some(v.span()),
                        if max == i64::MAX {
                            format!("`{field}` must be {min} or more")
                        } else {
                            format!("`{field}` must be from {min} to {max}")
                        },
                    )
                    .help(format!("set {field} = {} or more", min.max(1))),
                );
            } else {
                *slot = *v.get_ref() as u64;
            }
        }
    };
    let (mut par, mut att, mut mmb, mut mail) =
        (s.max_parallel as u64, s.max_attempts as u64, s.max_message_bytes, s.max_mail_per_prompt as u64);
    int(raw.max_parallel, "max_parallel", 1, 4096, &mut par);
    int(raw.max_attempts, "max_attempts", 1, i64::MAX, &mut att);
    int(raw.max_message_bytes, "max_message_bytes", 256, i64::MAX, &mut mmb);
    int(raw.max_mail_per_prompt, "max_mail_per_prompt", 1, i64::MAX, &mut mail);
    int(raw.journal_keep_turns, "journal_keep_turns", 1, i64::MAX, &mut s.journal_keep_turns);
    int(raw.log_retention_days, "log_retention_days", 1, i64::MAX, &mut s.log_retention_days);
    s.max_parallel = par as usize;
    s.max_attempts = att.min(u32::MAX as u64) as u32;
    s.max_message_bytes = mmb;
    s.max_mail_per_prompt = mail as usize;
    if let Some(w) = raw.wake_on_message {
        s.wake_on_message = w;
    }
    if let Some(d) = raw.debounce_ms {
        s.debounce_ms = d;
    }
    if let Some(b) = raw.budget {
        if !crate::ledger::valid_amount(*b.get_ref()) {
            errs.push(
                Diagnostic::at(
                    path,
                    text,
                    Some(b.span()),
                    format!("`budget` must be a number from 0 to {}", crate::ledger::MAX_CREDITS),
                )
                .help("budget = 1000.0 (credits for the whole org), or remove it for no org-wide limit"),
            );
        }
        s.budget = Some(*b.get_ref());
    }
    if errs.is_empty() {
        Ok(s)
    } else {
        Err(errs)
    }
}

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
        assert_eq!(parse(Path::new("o"), "budget = 12.5\n").unwrap().budget, Some(12.5));
        assert!(parse(Path::new("o"), "max_paralel = 3\n").unwrap_err()[0].message.contains("unknown field"));
    }
}
