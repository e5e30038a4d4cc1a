//! `org/state/events.jsonl`: what happened, one JSON line per event, appended
//! when a turn commits.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use crate::error::PathError;
use crate::fsx;
use crate::org::Layout;

/// Events gathered during a turn.
#[derive(Debug, Default)]
pub struct Events {
    lines: String,
}

impl Events {
    /// Records an event with its fields.
    pub fn push(&mut self, turn: u64, at: DateTime<Utc>, event: &str, fields: Value) {
        let mut v =
            json!({ "turn": turn, "at": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true), "event": event });
        if let (Value::Object(dst), Value::Object(src)) = (&mut v, fields) {
            dst.extend(src);
        }
        self.lines.push_str(&v.to_string());
        self.lines.push('\n');
    }

    /// Records a serializable value as an event's fields.
    pub fn push_value<T: Serialize>(&mut self, turn: u64, at: DateTime<Utc>, event: &str, fields: &T) {
        self.push(turn, at, event, serde_json::to_value(fields).unwrap_or(Value::Null));
    }

    /// Appends the gathered events durably.
    pub fn flush(self, layout: &Layout) -> Result<(), PathError> {
        fsx::append_lines_durable(&layout.events(), &self.lines)
    }
}
