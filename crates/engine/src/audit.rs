//! `org/state/audit.jsonl`: one JSON line for every action that changes the
//! world outside the mail (tool calls with side effects, hires, top-ups,
//! pause and resume, config writes), with who, when, what and the outcome.
//!
//! The log is append-only and read by people and `fsck`; nothing in the
//! engine decides anything from it. [`append`] passes every entry's `what`
//! through [`redact`] before it is written, so a secret given in a tool's
//! arguments never reaches the file.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{PathError, WithPath};
use crate::fsx;
use crate::layout::Layout;

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// When.
    pub at: DateTime<Utc>,
    /// Who: an agent's name, or [`PERSON`] for the command line.
    pub who: String,
    /// What kind of action: `tool`, `hire`, `top_up`, `pause`, `resume`, `config`.
    pub action: String,
    /// What exactly (the tool and its arguments, the agent topped up, ...), secrets redacted.
    pub what: Value,
    /// How it went: [`OK`], or the error.
    pub outcome: String,
    /// The turn, when a turn did it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn: Option<u64>,
}

/// `who` of an action a person took through the command line.
pub const PERSON: &str = "person";

/// `outcome` of an action that did what was asked.
pub const OK: &str = "ok";

/// What replaces a secret's value.
pub const REDACTED: &str = "[redacted]";

impl Entry {
    /// An entry whose outcome is [`OK`] when `outcome` is `Ok`, else the error's text.
    pub fn new<E: std::fmt::Display>(
        at: DateTime<Utc>,
        who: &str,
        action: &str,
        what: Value,
        outcome: Result<(), E>,
    ) -> Entry {
        Entry {
            at,
            who: who.to_string(),
            action: action.to_string(),
            what,
            outcome: match outcome {
                Ok(()) => OK.to_string(),
                Err(e) => e.to_string(),
            },
            turn: None,
        }
    }

    /// The same entry, done by `turn`.
    pub fn in_turn(self, turn: u64) -> Entry {
        Entry { turn: Some(turn), ..self }
    }
}

/// Appends `entries` to the audit log, in one write, synced (the file and, when
/// it is new, its folder). Every entry's `what` is [`redact`]ed first.
pub fn append(layout: &Layout, entries: &[Entry]) -> Result<(), PathError> {
    if entries.is_empty() {
        return Ok(());
    }
    let dir = layout.state_dir();
    std::fs::create_dir_all(&dir).with_path(&dir)?;
    let mut lines = String::new();
    for e in entries {
        let e = Entry { what: brief(&redact(&e.what)), ..e.clone() };
        lines.push_str(&serde_json::to_string(&e).expect("an audit entry serializes"));
        lines.push('\n');
    }
    fsx::append_lines_durable(&layout.audit(), &lines)
}

/// `v` bounded for the log: each string cut to 200 characters, each list
/// and object to 50 items, each key to 64 characters (a file's content or a
/// model's long arguments are not kept whole).
fn brief(v: &Value) -> Value {
    match v {
        Value::String(s) if s.chars().count() > 200 => Value::from(s.chars().take(200).collect::<String>() + "…"),
        Value::Array(items) => Value::Array(items.iter().take(50).map(brief).collect()),
        Value::Object(m) => {
            Value::Object(m.iter().take(50).map(|(k, v)| (k.chars().take(64).collect(), brief(v))).collect())
        }
        other => other.clone(),
    }
}

/// Appends one entry; when the log cannot be written, says so in the daemon's
/// log and carries on: the action it records is done already, and failing it
/// now would invite doing it twice (a second top-up).
pub fn record(layout: &Layout, entry: Entry) {
    if let Err(e) = append(layout, std::slice::from_ref(&entry)) {
        tracing::warn!(error = %e, action = %entry.action, who = %entry.who, "the audit log could not be written");
    }
}

/// Every entry of the audit log, oldest first; lines that do not parse (a
/// torn write at a crash, a hand edit) are skipped. A missing log is empty.
pub fn read(layout: &Layout) -> Result<Vec<Entry>, PathError> {
    let Some(bytes) = fsx::read_optional(&layout.audit())? else { return Ok(Vec::new()) };
    Ok(String::from_utf8_lossy(&bytes).lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
}

/// `value` with every secret replaced by [`REDACTED`], at any depth:
/// - the value of an object key that names a secret (`api_key`, `token`,
///   `password`, `Authorization`, `x-api-key`, `accessToken`, ...);
/// - in a list of strings (a program's arguments), the item after a flag that
///   names one (`["--token", "abc"]`);
/// - in a string, what follows `NAME=` or `NAME:` when NAME names one
///   (`--password=abc`, `Authorization: Bearer abc`), and the word after `Bearer`.
pub fn redact(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if secret_name(k) && !v.is_null() { Value::from(REDACTED) } else { redact(v) };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            let mut after_flag = false;
            for item in items {
                out.push(if after_flag { Value::from(REDACTED) } else { redact(item) });
                after_flag = item
                    .as_str()
                    .is_some_and(|s| s.starts_with('-') && !s.contains('=') && secret_name(s.trim_start_matches('-')));
            }
            Value::Array(out)
        }
        Value::String(s) => Value::String(redact_text(s)),
        other => other.clone(),
    }
}

/// The words of a name that mark its value as a secret.
const SECRET_WORDS: [&str; 15] = [
    "key",
    "apikey",
    "token",
    "secret",
    "password",
    "passwd",
    "pwd",
    "passphrase",
    "authorization",
    "auth",
    "credential",
    "credentials",
    "cookie",
    "bearer",
    "signature",
];

/// Whether a key or flag name names a secret: one of its words (split at
/// `_`, `-`, `.`, spaces and lower-to-upper case changes) is in
/// [`SECRET_WORDS`], or it contains `password`, `secret` or `apikey`. So
/// `max_tokens` and `keyboard` are not secrets; `AWS_SECRET_ACCESS_KEY` is.
fn secret_name(name: &str) -> bool {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut prev_lower = false;
    for c in name.chars() {
        if !c.is_alphanumeric() {
            words.push(std::mem::take(&mut word));
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower {
            words.push(std::mem::take(&mut word));
        }
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
        word.extend(c.to_lowercase());
    }
    words.push(word);
    let flat = name.to_lowercase();
    words.iter().any(|w| SECRET_WORDS.contains(&w.as_str()))
        || ["password", "secret", "apikey", "api_key"].iter().any(|s| flat.contains(s))
}

/// `s` with the value after a secret's `NAME=` / `NAME:` and the word after
/// `Bearer ` redacted (up to the next space, or the end for `NAME:` and `Bearer`).
fn redact_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(['=', ':']) {
        let (head, tail) = rest.split_at(i);
        let sep = &tail[..1];
        let tail = &tail[1..];
        out.push_str(head);
        out.push_str(sep);
        let name_start = head.rfind(|c: char| c.is_whitespace() || c == '"' || c == '\'').map_or(0, |j| j + 1);
        let name = head[name_start..].trim_start_matches('-');
        if !name.is_empty() && secret_name(name) && !tail.is_empty() {
            // `Authorization: Bearer abc` and `token: abc` hide the rest of the
            // line; `token=abc more` hides one word.
            let lead = tail.len() - tail.trim_start().len();
            out.push_str(&tail[..lead]);
            let end = if sep == ":" {
                tail.find('\n').unwrap_or(tail.len())
            } else {
                tail.find(char::is_whitespace).unwrap_or(tail.len())
            };
            if end > lead {
                out.push_str(REDACTED);
            }
            rest = &tail[end..];
        } else {
            rest = tail;
        }
    }
    out.push_str(rest);
    redact_bearer(&out)
}

/// The word after each `Bearer ` (any case) replaced by [`REDACTED`].
fn redact_bearer(s: &str) -> String {
    let lower = s.to_ascii_lowercase();
    let mut out = String::with_capacity(s.len());
    let mut at = 0;
    while let Some(i) = lower[at..].find("bearer ").map(|i| i + at) {
        let start = i + "bearer ".len();
        let end = s[start..].find(char::is_whitespace).map_or(s.len(), |j| start + j);
        out.push_str(&s[at..start]);
        if end > start && &s[start..end] != REDACTED {
            out.push_str(REDACTED);
        } else {
            out.push_str(&s[start..end]);
        }
        at = end;
    }
    out.push_str(&s[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_and_lists_are_cut_in_the_log() {
        let v = serde_json::json!({"content": "x".repeat(300), "list": (0..60).collect::<Vec<u32>>()});
        let b = brief(&v);
        assert_eq!(b["content"].as_str().unwrap().chars().count(), 201);
        assert_eq!(b["list"].as_array().unwrap().len(), 50);
        assert_eq!(brief(&serde_json::json!("short")), "short");
    }
    use serde_json::json;

    fn at() -> DateTime<Utc> {
        "2026-01-02T03:04:05Z".parse().unwrap()
    }

    #[test]
    fn entries_are_appended_as_lines_and_read_back() {
        let d = tempfile::tempdir().unwrap();
        let layout = Layout::new(d.path());
        assert_eq!(read(&layout).unwrap(), vec![]);
        let a = Entry::new(at(), PERSON, "pause", json!({}), Ok::<(), String>(()));
        let b =
            Entry::new(at(), "hr", "hire", json!({"name": "scribe"}), Err("agents/scribe exists already")).in_turn(7);
        append(&layout, std::slice::from_ref(&a)).unwrap();
        append(&layout, std::slice::from_ref(&b)).unwrap();
        append(&layout, &[]).unwrap();
        let text = std::fs::read_to_string(layout.audit()).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text
            .starts_with(r#"{"at":"2026-01-02T03:04:05Z","who":"person","action":"pause","what":{},"outcome":"ok"}"#));
        assert_eq!(read(&layout).unwrap(), vec![a, b.clone()]);
        assert_eq!(b.outcome, "agents/scribe exists already");
        assert_eq!(b.turn, Some(7));
    }

    #[test]
    fn bad_lines_are_skipped_and_a_torn_end_does_not_swallow_the_next_entry() {
        let d = tempfile::tempdir().unwrap();
        let layout = Layout::new(d.path());
        std::fs::create_dir_all(layout.state_dir()).unwrap();
        // A line that is no entry, bytes that are not UTF-8, and a torn last line.
        std::fs::write(layout.audit(), b"{\"not\":\"an entry\"}\n\xff\xfe\n{\"at\":\"2026-").unwrap();
        let e = Entry::new(at(), PERSON, "resume", json!({}), Ok::<(), String>(()));
        append(&layout, std::slice::from_ref(&e)).unwrap();
        assert_eq!(read(&layout).unwrap(), vec![e]);
    }

    #[test]
    fn secrets_never_reach_the_file() {
        let d = tempfile::tempdir().unwrap();
        let layout = Layout::new(d.path());
        let what = json!({"tool": "fetch", "args": {"url": "x", "api_key": "sk-123", "headers": {"Authorization": "Bearer sk-456"}}});
        append(&layout, &[Entry::new(at(), "coder", "tool", what, Ok::<(), String>(()))]).unwrap();
        let text = std::fs::read_to_string(layout.audit()).unwrap();
        assert!(!text.contains("sk-123") && !text.contains("sk-456"), "{text}");
        assert_eq!(read(&layout).unwrap()[0].what["args"]["api_key"], REDACTED);
    }

    #[test]
    fn redacts_secret_keys_at_any_depth_and_keeps_the_rest() {
        let v = json!({
            "name": "scribe",
            "max_tokens": 5,
            "keyboard": "qwerty",
            "nested": [{"password": "p"}, {"AWS_SECRET_ACCESS_KEY": "a", "accessToken": "t", "x-api-key": "k"}],
            "credentials": {"user": "u", "pass": "p"},
            "token": null,
        });
        let r = redact(&v);
        assert_eq!(
            r,
            json!({
                "name": "scribe",
                "max_tokens": 5,
                "keyboard": "qwerty",
                "nested": [{"password": REDACTED}, {"AWS_SECRET_ACCESS_KEY": REDACTED, "accessToken": REDACTED, "x-api-key": REDACTED}],
                "credentials": REDACTED,
                "token": null,
            })
        );
    }

    #[test]
    fn redacts_secrets_in_arguments_and_text() {
        let args = json!(["-s", "--token", "abc", "--password=hunter2", "-H", "Authorization: Bearer xyz", "out.txt"]);
        assert_eq!(
            redact(&args),
            json!(["-s", "--token", REDACTED, "--password=[redacted]", "-H", "Authorization: [redacted]", "out.txt"])
        );
        let s = |t: &str| redact(&json!(t)).as_str().unwrap().to_string();
        assert_eq!(s("curl -H 'x' --header=Bearer abc.def end"), "curl -H 'x' --header=Bearer [redacted] end");
        assert_eq!(s("API_KEY=sk-1 make all"), "API_KEY=[redacted] make all");
        assert_eq!(s("secret: a b\nnext: c"), "secret: [redacted]\nnext: c");
        assert_eq!(s("time 10:30, ratio=2, path=a:b"), "time 10:30, ratio=2, path=a:b");
        assert_eq!(s("token="), "token=");
    }
}
