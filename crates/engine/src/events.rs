//! What happened in a turn, as typed [`Event`]s: the turn emits them as it
//! goes, and they are appended to `org/state/events.jsonl`, one JSON line each,
//! when the turn commits.
//!
//! A line is the event's fields plus `turn`, `at` (RFC 3339, milliseconds)
//! and `event`, its type:
//!
//! | `event` | fields |
//! |---|---|
//! | `delivered` | `id`, `from`, `to` |
//! | `dead` | `id` (the dead letter's), `reason`, `detail`, `mailbox`, `to` |
//! | `skipped` | `agent`, `reason`; for `prompt_over_credits` also `detail`, `tokens`, `cost`, `left` |
//! | `recovered` | `agent`, `why` |
//! | `ran` | `agent`, `model`, `cost`, `mail`, `sent`, `error` (null), `cause` (null) |
//! | `failed` | `agent`, `error`, `cause`; after a model call also `model`, `cost`, `mail`, `sent` |
//! | `turn` | the turn report (see [`crate::turn::TurnReport`]) |

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::clock::Clock;
use crate::error::PathError;
use crate::fsx;
use crate::mailbox::DeadReason;
use crate::org::Layout;
use crate::turn::TurnReport;

/// Why a due agent was not called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// It has no credits left.
    OutOfCredits,
    /// The org-wide budget is spent.
    OrgBudgetSpent,
    /// Its prompt alone would cost more than it has left.
    PromptOverCredits,
}

impl SkipReason {
    /// The code, as in the turn report and `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::OutOfCredits => "out_of_credits",
            SkipReason::OrgBudgetSpent => "org_budget_spent",
            SkipReason::PromptOverCredits => "prompt_over_credits",
        }
    }
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an agent's run failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailCause {
    /// The provider could not be used.
    Unavailable,
    /// The provider refused the request or is misconfigured.
    Refused,
    /// The provider refused this request as it is.
    Request,
    /// The reply could not be used.
    Reply,
    /// The agent's own files could not be used.
    IoError,
}

impl From<lemming_provider::Cause> for FailCause {
    fn from(c: lemming_provider::Cause) -> FailCause {
        match c {
            lemming_provider::Cause::Unavailable => FailCause::Unavailable,
            lemming_provider::Cause::Refused => FailCause::Refused,
            lemming_provider::Cause::Request => FailCause::Request,
            lemming_provider::Cause::Reply => FailCause::Reply,
        }
    }
}

/// What a model call of one agent came to, in a `ran` or `failed` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// The model that answered (or was asked last).
    pub model: String,
    /// Credits charged.
    pub cost: f64,
    /// Messages it read.
    pub mail: usize,
    /// Messages it sent.
    pub sent: usize,
}

/// One thing that happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    /// A message was put in an inbox.
    Delivered {
        /// The message id.
        id: String,
        /// Its sender.
        from: String,
        /// The recipient.
        to: String,
    },
    /// A message or mailbox entry went to `org/state/dead/`.
    Dead {
        /// The dead letter's id.
        id: String,
        /// The reason code.
        reason: String,
        /// What happened, for people.
        detail: String,
        /// The agent whose mailbox held it.
        mailbox: String,
        /// The recipients it was refused for.
        #[serde(default)]
        to: Vec<String>,
    },
    /// A due agent was not called.
    Skipped {
        /// The agent.
        agent: String,
        /// Why.
        reason: SkipReason,
        /// For `prompt_over_credits`: what it would cost.
        #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
        over: Option<Over>,
    },
    /// A reply kept in memory while it could not be journaled was journaled and used.
    Recovered {
        /// The agent.
        agent: String,
        /// Why it was kept.
        why: String,
    },
    /// An agent ran and its reply was used.
    Ran {
        /// The agent.
        agent: String,
        /// The call.
        #[serde(flatten)]
        run: Run,
        /// Always null (kept for readers that look at every run the same way).
        error: Option<String>,
        /// Always null.
        cause: Option<FailCause>,
    },
    /// An agent's run failed; its mail stays unread.
    Failed {
        /// The agent.
        agent: String,
        /// The call, when a model was called.
        #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
        run: Option<Run>,
        /// What went wrong.
        error: Option<String>,
        /// Why, as a code.
        cause: Option<FailCause>,
    },
    /// The turn committed: its report.
    Turn(TurnReport),
}

/// The cost of a prompt over the agent's credits, in a `skipped` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Over {
    /// For people.
    pub detail: String,
    /// The prompt's tokens (estimated).
    pub tokens: u64,
    /// What they cost.
    pub cost: f64,
    /// What the agent has left.
    pub left: f64,
}

impl From<&DeadReason> for EventKind {
    fn from(why: &DeadReason) -> EventKind {
        EventKind::Dead {
            id: why.id.clone(),
            reason: why.reason.clone(),
            detail: why.detail.clone(),
            mailbox: why.mailbox.clone(),
            to: why.to.clone(),
        }
    }
}

/// An event with the turn it belongs to and when it happened.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The turn.
    pub turn: u64,
    /// When.
    pub at: DateTime<Utc>,
    /// What.
    pub kind: EventKind,
}

impl Event {
    /// The event as one JSON object: `turn`, `at`, `event` and its fields.
    pub fn to_json(&self) -> Value {
        let mut v = json!({ "turn": self.turn, "at": self.at.to_rfc3339_opts(SecondsFormat::Millis, true) });
        if let (Value::Object(dst), Ok(Value::Object(src))) = (&mut v, serde_json::to_value(&self.kind)) {
            // The turn report's own `turn` is the same number.
            dst.extend(src);
        }
        v
    }

    /// Reads an event line of `events.jsonl`; `None` for a line that is not one.
    pub fn parse(line: &str) -> Option<Event> {
        let v: Value = serde_json::from_str(line).ok()?;
        let turn = v.get("turn")?.as_u64()?;
        let at = v.get("at")?.as_str()?.parse().ok()?;
        let kind = serde_json::from_value(v).ok()?;
        Some(Event { turn, at, kind })
    }
}

/// The events of one turn, stamped by its clock as they are emitted.
#[derive(Debug)]
pub struct Events {
    turn: u64,
    events: Vec<Event>,
}

impl Events {
    /// No events yet, for `turn`.
    pub fn new(turn: u64) -> Events {
        Events { turn, events: Vec::new() }
    }

    /// Emits an event now.
    pub fn emit(&mut self, clock: &dyn Clock, kind: EventKind) {
        self.events.push(Event { turn: self.turn, at: clock.now(), kind });
    }

    /// Adds an event stamped elsewhere.
    pub fn push(&mut self, event: Event) {
        self.events.push(event);
    }

    /// The events emitted so far.
    pub fn list(&self) -> &[Event] {
        &self.events
    }

    /// Appends the events durably.
    pub fn flush(self, layout: &Layout) -> Result<(), PathError> {
        let mut lines = String::new();
        for e in &self.events {
            lines.push_str(&e.to_json().to_string());
            lines.push('\n');
        }
        fsx::append_lines_durable(&layout.events(), &lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn t0() -> DateTime<Utc> {
        "2026-01-02T03:04:05.006Z".parse().unwrap()
    }

    #[test]
    fn lines_keep_their_shape_and_read_back() {
        let clock = ManualClock::new(t0());
        let mut ev = Events::new(7);
        ev.emit(&clock, EventKind::Delivered { id: "m1".into(), from: "a".into(), to: "b".into() });
        ev.emit(
            &clock,
            EventKind::Skipped {
                agent: "a".into(),
                reason: SkipReason::PromptOverCredits,
                over: Some(Over { detail: "d".into(), tokens: 3, cost: 0.5, left: 0.1 }),
            },
        );
        ev.emit(
            &clock,
            EventKind::Failed {
                agent: "b".into(),
                run: None,
                error: Some("disk".into()),
                cause: Some(FailCause::IoError),
            },
        );
        ev.emit(&clock, EventKind::Turn(TurnReport { turn: 7, delivered: 1, ..TurnReport::default() }));
        let lines: Vec<Value> = ev.list().iter().map(Event::to_json).collect();
        assert_eq!(
            lines[0],
            json!({"turn": 7, "at": "2026-01-02T03:04:05.006Z", "event": "delivered", "id": "m1", "from": "a", "to": "b"})
        );
        assert_eq!(lines[1]["reason"], "prompt_over_credits");
        assert_eq!(lines[1]["tokens"], 3);
        assert_eq!(
            lines[2],
            json!({"turn": 7, "at": "2026-01-02T03:04:05.006Z", "event": "failed", "agent": "b", "error": "disk", "cause": "io_error"})
        );
        assert_eq!(lines[3]["event"], "turn");
        assert_eq!(lines[3]["delivered"], 1);
        for (e, line) in ev.list().iter().zip(&lines) {
            assert_eq!(Event::parse(&line.to_string()).as_ref(), Some(e), "{line}");
        }
    }
}
