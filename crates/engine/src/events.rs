//! What happened in a turn, as typed [`Event`]s: the turn emits them as it
//! goes, publishes each at once on a [`Bus`] (for in-process subscribers, such
//! as a live stream; its last, `turn`, once the turn is committed), and
//! appends them to `org/state/events.jsonl`, one JSON line each, exactly
//! once, after the turn commits.
//!
//! Every event has a sequence number, `seq`, that grows by one across the
//! org's whole history (it continues from the last line of `events.jsonl`).
//! The turn writes its events into `turn.json` with its commit, and appends
//! them to the events file after; a crash in between is finished by the next
//! turn ([`EventLog::catch_up`]), and a line already in the file is never
//! appended again. A try of a turn that does not commit appends nothing.
//!
//! A line is the event's fields plus `seq`, `turn`, `at` (RFC 3339,
//! milliseconds) and `event`, its type:
//!
//! | `event` | fields |
//! |---|---|
//! | `delivered` | `id`, `from`, `to` |
//! | `dead` | `id` (the dead letter's), `reason`, `detail`, `mailbox`, `to` |
//! | `skipped` | `agent`, `reason`; for `prompt_over_credits` also `detail`, `tokens`, `cost`, `left` |
//! | `recovered` | `agent`, `why` |
//! | `ran` | `agent`, `model`, `cost`, `mail`, `sent`, `error` (null), `cause` (null) |
//! | `failed` | `agent`, `error`, `cause`; after a model call also `model`, `cost`, `mail`, `sent` |
//! | `tool` | `agent`, `call`, `tool`, `ok`, `error`, `ms`, `result` |
//! | `charged` | `agent`, `model`, `cost`, `input_tokens`, `output_tokens` |
//! | `topped_up` | `agent`, `amount` (a person's) |
//! | `paused`, `resumed` | none (a person's) |
//! | `config_error` | `problems`: `file`, `line`, `column`, `message`, `help` (empty: valid again) |
//! | `turn` | the turn report (see [`TurnReport`]) |
//!
//! `turn_started` and `reply_delta` (`agent`, `text`, `restart`: a piece of a
//! streaming reply) are published on the [`Bus`] only, with `seq` 0.

use std::collections::HashSet;
use std::io::Write;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{PathError, WithPath};
use crate::fsx;
use crate::layout::Layout;
use crate::mailbox::{DeadReason, Reason};

/// What a turn did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TurnReport {
    /// The turn number.
    pub turn: u64,
    /// Messages delivered into inboxes (bounces included).
    pub delivered: usize,
    /// Messages sent to `dead/` (refused, malformed, expired or poisoned).
    pub dead: usize,
    /// Messages held because their sender or recipient has an invalid resume.
    pub held: usize,
    /// Agents that ran and whose reply was used.
    pub ran: Vec<String>,
    /// Agents whose journaled reply from an interrupted run was reused.
    pub replayed: Vec<String>,
    /// Agents whose reply came on an earlier try of this turn that could not
    /// journal it (a full disk): it was kept in memory and is journaled now;
    /// their model was not asked again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recovered: Vec<String>,
    /// Agents whose run failed, with the reason.
    pub failed: Vec<(String, String)>,
    /// Agents that were due but skipped, with the reason (`out_of_credits`, `org_budget_spent`).
    pub skipped: Vec<(String, SkipReason)>,
    /// Credits charged this turn.
    pub cost: f64,
    /// Messages that were sent while the turn ran (not by its own replies) and
    /// that its second routing delivered: their recipients have not seen them,
    /// so a daemon starts the next turn at once rather than at its timer.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub arrived: usize,
    /// Tool calls whose results this turn delivered (their agents are due).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tool_calls: usize,
    /// Read messages this turn moved to `inbox/archive/` (`archive_after_turns`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub archived: usize,
    /// How long the turn took, from its start to its commit, in milliseconds
    /// (by the turn's clock).
    #[serde(default)]
    pub ms: u64,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

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
        reason: Reason,
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
    /// A tool call of an agent's reply ran (or was refused), and its result
    /// went to the agent's inbox.
    Tool {
        /// The agent that called.
        agent: String,
        /// The call and how it went.
        #[serde(flatten)]
        call: ToolUse,
    },
    /// An agent's model call was charged in the ledger.
    Charged {
        /// The agent.
        agent: String,
        /// The model that answered.
        model: String,
        /// Credits charged.
        cost: f64,
        /// Prompt tokens.
        input_tokens: u64,
        /// Completion tokens.
        output_tokens: u64,
    },
    /// A person added credits to an agent.
    ToppedUp {
        /// The agent.
        agent: String,
        /// The credits added.
        amount: f64,
    },
    /// A person paused the daemon's turns.
    Paused {},
    /// A person let the daemon start turns again.
    Resumed {},
    /// The config files' problems changed (an empty list: every file is valid again).
    ConfigError {
        /// Each problem, at its place.
        problems: Vec<Problem>,
    },
    /// A turn started. Published on the [`Bus`] only, with `seq` 0: it is
    /// never written to `events.jsonl` (a try that does not commit started too).
    TurnStarted {},
    /// A piece of an agent's reply as its model streams it (`stream = true`).
    /// Published on the [`Bus`] only, with `seq` 0, and never written to
    /// `events.jsonl`: the journal holds the whole reply once it is complete.
    ReplyDelta {
        /// The agent whose model is answering.
        agent: String,
        /// The next piece of the reply's raw text (the reply object's JSON as
        /// the model writes it); empty with `restart`.
        text: String,
        /// The try failed: forget this agent's text so far (a retry may follow).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        restart: bool,
    },
    /// The turn committed: its report.
    Turn(TurnReport),
}

/// A config file's problem, in a `config_error` event (and in the API's
/// answer to a refused resume).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    /// The file, relative to the org's root when it is inside it.
    pub file: String,
    /// Its line (1-based), when known.
    pub line: Option<usize>,
    /// Its column (1-based), when known.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub help: Option<String>,
}

impl Problem {
    /// The problem of `d`, its file named relative to `root`.
    pub fn of(d: &crate::error::Diagnostic, root: &std::path::Path) -> Problem {
        let file = d.path.strip_prefix(root).unwrap_or(&d.path).display().to_string();
        Problem { file, line: d.line, column: d.column, message: d.message.clone(), help: d.help.clone() }
    }
}

/// Appends a person's events (outside a turn) durably: numbered after the
/// last line, stamped with `turn` (the last committed one). A failure is
/// logged: the action itself is done and audited.
pub fn append_person(layout: &Layout, turn: u64, at: DateTime<Utc>, kinds: Vec<EventKind>) {
    let mut ev = Events::new(turn);
    for kind in kinds {
        ev.push(Event { seq: 0, turn, at, kind });
    }
    if let Err(e) = ev.flush(layout) {
        tracing::warn!(error = %e, "cannot append to the events file");
    }
}

/// One tool call and how it went: in a `tool` event and in the activity log.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ToolUse {
    /// The call's id.
    pub call: String,
    /// The tool.
    pub tool: String,
    /// Whether it did what was asked.
    pub ok: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How long it took, in milliseconds.
    pub ms: u64,
    /// The id of its `tool_result` message.
    pub result: String,
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

/// An event with its place in the org's history, the turn it belongs to and
/// when it happened.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Its sequence number: one more than the event before it in `events.jsonl`.
    pub seq: u64,
    /// The turn.
    pub turn: u64,
    /// When.
    pub at: DateTime<Utc>,
    /// What.
    pub kind: EventKind,
}

impl Event {
    /// The event as one JSON object: `seq`, `turn`, `at`, `event` and its fields.
    pub fn to_json(&self) -> Value {
        let mut v =
            json!({ "seq": self.seq, "turn": self.turn, "at": self.at.to_rfc3339_opts(SecondsFormat::Millis, true) });
        if let (Value::Object(dst), Ok(Value::Object(src))) = (&mut v, serde_json::to_value(&self.kind)) {
            // The turn report's own `turn` is the same number.
            dst.extend(src);
        }
        v
    }

    /// Reads an event line of `events.jsonl`; `None` for a line that is not
    /// one. A line written before events were numbered has `seq` 0.
    pub fn parse(line: &str) -> Option<Event> {
        let v: Value = serde_json::from_str(line).ok()?;
        let seq = v.get("seq").and_then(Value::as_u64).unwrap_or(0);
        let turn = v.get("turn")?.as_u64()?;
        let at = v.get("at")?.as_str()?.parse().ok()?;
        let kind = serde_json::from_value(v).ok()?;
        Some(Event { seq, turn, at, kind })
    }

    /// The line without its `seq`: the same event numbered otherwise (a turn
    /// appended after a person's command took its numbers) is the same line.
    fn content(&self) -> String {
        let mut v = self.to_json();
        if let Value::Object(m) = &mut v {
            m.remove("seq");
        }
        v.to_string()
    }
}

/// An in-process channel the turn publishes each event on as it happens,
/// and its `turn` event once it is committed: a try that does not commit
/// publishes no `turn` event, and the next try publishes its own events under
/// the same numbers.
/// Subscribers that fall behind by more than its capacity miss the oldest
/// (they get [`tokio::sync::broadcast::error::RecvError::Lagged`] and can read
/// the rest from `events.jsonl` by `seq`). Publishing with no subscriber costs
/// next to nothing.
#[derive(Debug, Clone)]
pub struct Bus {
    tx: tokio::sync::broadcast::Sender<Event>,
}

impl Bus {
    /// How many events a subscriber may fall behind.
    pub const CAPACITY: usize = 4096;

    /// A bus with no subscribers.
    pub fn new() -> Bus {
        Bus { tx: tokio::sync::broadcast::channel(Bus::CAPACITY).0 }
    }

    /// A receiver of every event published from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    /// Publishes `event` to the current subscribers.
    pub fn publish(&self, event: &Event) {
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(event.clone());
        }
    }
}

impl Default for Bus {
    fn default() -> Bus {
        Bus::new()
    }
}

/// The events of one turn, stamped by its clock and numbered as they are
/// emitted, and published on its bus. A person's command keeps its few in
/// memory; a turn spools its own ([`Events::spool_in`]): a turn of 10,000
/// agents emits 30,000, megabytes of them.
#[derive(Debug)]
pub struct Events {
    turn: u64,
    next_seq: u64,
    bus: Option<Bus>,
    kept: Kept,
    /// Counts the deliveries of mail sent by others than the engine and the
    /// turn's own replies ([`Events::count_arrivals`]).
    arrivals: Option<(HashSet<String>, usize)>,
}

/// Where the events are kept until they are appended.
#[derive(Debug)]
enum Kept {
    Memory(Vec<Event>),
    Spool(Box<Spool>),
}

/// Events as `events.jsonl` lines, written to a file as they are emitted:
/// an unnamed file in `org/state/tmp/` (removed from its folder as soon as it
/// is made, so that nothing is left behind), never synced. The commit copies
/// the lines into `turn.json` and the events file, which are.
#[derive(Debug)]
struct Spool {
    out: std::io::BufWriter<std::fs::File>,
    /// The file, for the messages of errors.
    path: std::path::PathBuf,
    count: usize,
    /// The first `seq` of its lines.
    first_seq: u64,
    /// The first write that failed: the commit reports it.
    failed: Option<std::io::Error>,
    /// The last event written (published by [`Events::publish_last`]).
    last: Option<Event>,
}

impl Spool {
    fn push(&mut self, e: Event) {
        if self.failed.is_none() {
            let written = serde_json::to_writer(&mut self.out, &e.to_json())
                .map_err(std::io::Error::from)
                .and_then(|_| self.out.write_all(b"\n"));
            match written {
                Ok(()) => self.count += 1,
                Err(e) => self.failed = Some(e),
            }
        }
        self.last = Some(e);
    }

    /// The file with every line written, read from its start.
    fn file(&mut self) -> Result<&std::fs::File, PathError> {
        use std::io::{Seek, SeekFrom};
        if let Some(e) = &self.failed {
            return Err(std::io::Error::new(e.kind(), e.to_string())).with_path(&self.path);
        }
        self.out.flush().with_path(&self.path)?;
        let mut f = self.out.get_ref();
        f.seek(SeekFrom::Start(0)).with_path(&self.path)?;
        Ok(f)
    }
}

impl Events {
    /// No events yet, for `turn`, numbered when they are appended ([`Events::flush`]).
    pub fn new(turn: u64) -> Events {
        Events { turn, next_seq: 0, bus: None, kept: Kept::Memory(Vec::new()), arrivals: None }
    }

    /// No events yet, for `turn`: the first is numbered `first_seq`, and each
    /// is published on `bus` as it is emitted.
    /// Publishes `turn_started` at once (it is never appended).
    pub fn live(turn: u64, first_seq: u64, bus: Bus, at: DateTime<Utc>) -> Events {
        bus.publish(&Event { seq: 0, turn, at, kind: EventKind::TurnStarted {} });
        Events { next_seq: first_seq, bus: Some(bus), ..Events::new(turn) }
    }

    /// These events (none emitted yet), spooled to an unnamed file in `dir`
    /// rather than kept in memory.
    pub fn spool_in(self, dir: &std::path::Path) -> Result<Events, PathError> {
        let path = dir.join(format!("events-{}.{}.tmp", self.turn, std::process::id()));
        let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path).with_path(&path)?;
        std::fs::remove_file(&path).with_path(&path)?;
        let spool = Spool {
            out: std::io::BufWriter::with_capacity(64 * 1024, file),
            path,
            count: 0,
            first_seq: self.next_seq,
            failed: None,
            last: None,
        };
        Ok(Events { kept: Kept::Spool(Box::new(spool)), ..self })
    }

    /// The bus its events are published on (none for a person's command).
    pub fn bus(&self) -> Option<&Bus> {
        self.bus.as_ref()
    }

    /// Emits an event that happened `at` (now, by the turn's clock).
    pub fn emit(&mut self, at: DateTime<Utc>, kind: EventKind) {
        self.emit_unpublished(at, kind);
        self.publish_last();
    }

    /// Emits an event now and publishes it only at [`Events::publish_last`]:
    /// the turn's report, which tells subscribers that the turn committed.
    pub fn emit_unpublished(&mut self, at: DateTime<Utc>, kind: EventKind) {
        // 0: numbered when appended.
        let seq = self.next_seq;
        if seq != 0 {
            self.next_seq = self.next_seq.saturating_add(1);
        }
        self.push(Event { seq, turn: self.turn, at, kind });
    }

    /// Publishes the last event emitted.
    pub fn publish_last(&self) {
        let last = match &self.kept {
            Kept::Memory(events) => events.last(),
            Kept::Spool(spool) => spool.last.as_ref(),
        };
        if let (Some(bus), Some(e)) = (&self.bus, last) {
            bus.publish(e);
        }
    }

    /// Adds an event stamped elsewhere (numbered when appended).
    pub fn push(&mut self, event: Event) {
        if let (Some((own, n)), EventKind::Delivered { id, from, .. }) = (&mut self.arrivals, &event.kind) {
            if from != crate::name::ENGINE && !own.contains(id) {
                *n += 1;
            }
        }
        match &mut self.kept {
            Kept::Memory(events) => events.push(event),
            Kept::Spool(spool) => spool.push(event),
        }
    }

    /// From now on, counts the deliveries of mail that came from others
    /// than the engine and than the messages `own` (the ids of those the
    /// turn's replies wrote): mail that arrived during the turn.
    pub fn count_arrivals(&mut self, own: HashSet<String>) {
        self.arrivals = Some((own, 0));
    }

    /// How many deliveries were counted since [`Events::count_arrivals`].
    pub fn arrivals(&self) -> usize {
        self.arrivals.as_ref().map_or(0, |(_, n)| *n)
    }

    /// The events emitted so far (read back from the spool when spooled).
    pub fn all(&mut self) -> Result<Vec<Event>, PathError> {
        match &mut self.kept {
            Kept::Memory(events) => Ok(events.clone()),
            Kept::Spool(spool) => {
                let mut out = Vec::new();
                let read = spooled_lines(spool.file()?, |line| {
                    out.extend(Event::parse(line));
                    Ok(())
                });
                read.with_path(&spool.path)?;
                Ok(out)
            }
        }
    }

    /// The events as `events.jsonl` lines, written out as they are
    /// formatted or read back (a large turn's are megabytes).
    pub fn lines(&mut self) -> Result<Lines<'_>, PathError> {
        match &mut self.kept {
            Kept::Memory(events) => Ok(Lines(Source::Events(events))),
            Kept::Spool(spool) => Ok(Lines(Source::Spool(spool.file()?))),
        }
    }

    /// Appends the events durably to the events file, numbered after its
    /// last line when it already reached their numbers (a person's command
    /// appended meanwhile); returns the last `seq` in the file.
    pub fn append(&mut self, log: &EventLog) -> Result<u64, PathError> {
        match &mut self.kept {
            Kept::Memory(events) => log.append(events, false),
            Kept::Spool(spool) => {
                let (first_seq, count) = (spool.first_seq, spool.count);
                log.append_spooled(spool.file()?, first_seq, count)
            }
        }
    }

    /// Appends the events durably now, numbered after the last line (for a
    /// person's command, which runs no turn).
    pub fn flush(mut self, layout: &Layout) -> Result<(), PathError> {
        self.append(&EventLog::new(layout)).map(|_| ())
    }
}

/// Events as `events.jsonl` lines, each ended by a newline ([`Events::lines`]).
#[derive(Debug, Clone, Copy)]
pub struct Lines<'a>(Source<'a>);

#[derive(Debug, Clone, Copy)]
enum Source<'a> {
    Events(&'a [Event]),
    /// A spool's file, read from its start.
    Spool(&'a std::fs::File),
}

impl<'a> Lines<'a> {
    /// `events` as lines.
    pub fn new(events: &'a [Event]) -> Lines<'a> {
        Lines(Source::Events(events))
    }
}

impl std::fmt::Display for Lines<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Source::Events(events) => {
                for e in events {
                    writeln!(f, "{}", e.to_json())?;
                }
            }
            Source::Spool(file) => {
                spooled_lines(file, |line| f.write_str(line).map_err(std::io::Error::other))
                    .map_err(|_| std::fmt::Error)?;
            }
        }
        Ok(())
    }
}

/// Calls `each` with every line of a spool's `file` (read from where it
/// stands: [`Spool::file`] puts it at its start), newline included. The
/// lines are whole and each valid UTF-8, as the spool wrote them.
fn spooled_lines(file: &std::fs::File, mut each: impl FnMut(&str) -> std::io::Result<()>) -> std::io::Result<()> {
    use std::io::BufRead;
    let mut r = std::io::BufReader::new(file);
    let mut line = String::new();
    while r.read_line(&mut line)? > 0 {
        each(&line)?;
        line.clear();
    }
    Ok(())
}

/// `org/state/events.jsonl`, appended under an exclusive lock on the file, so
/// that a turn and a person's command never take the same numbers.
#[derive(Debug, Clone)]
pub struct EventLog {
    path: std::path::PathBuf,
}

/// The end of the events file: its last `seq`, and the lines since the last
/// committed turn before `turn` (its `turn` event), which an append of
/// `turn`'s events must not repeat.
struct Tail {
    last_seq: u64,
    since: Vec<Event>,
}

impl EventLog {
    /// The events file of the org with this layout.
    pub fn new(layout: &Layout) -> EventLog {
        EventLog { path: layout.events() }
    }

    /// The last event's `seq` (0 for no events). Lines written before events
    /// were numbered count one each.
    pub fn last_seq(&self) -> Result<u64, PathError> {
        match fsx::open_regular(std::fs::OpenOptions::new().read(true), &self.path)? {
            None => Ok(0),
            Some(mut f) => Ok(self.tail(&mut f, 0)?.last_seq),
        }
    }

    /// Appends the events of `turn`, the last committed turn, that are not in
    /// the file yet (all of them, unless a crash came after the commit and
    /// before or during the append); returns the last `seq` in the file. The
    /// turn calls it first, with the events the last one kept in `turn.json`.
    pub fn catch_up(&self, kept: &[Event]) -> Result<u64, PathError> {
        let Some(last) = kept.last() else { return self.last_seq() };
        // The turn's report is its last event, written by the same append as
        // the others: when the file ends with it (or with a person's events
        // after it), nothing was kept out. Otherwise look at every line since
        // the turn before.
        if matches!(last.kind, EventKind::Turn(_)) {
            if let Some(f) = fsx::open_regular(std::fs::OpenOptions::new().read(true), &self.path)? {
                if let Some(seq) = self.ends_with_turn(f, last.turn)? {
                    return Ok(seq);
                }
            }
        }
        self.append(kept, true)
    }

    /// [`EventLog::catch_up`] after the committed turn `turn`: its events,
    /// which `kept` reads from `turn.json`, are read and parsed only when the
    /// file does not end with them (a crash came between the commit and the
    /// append). A turn of a large org keeps tens of thousands.
    pub fn catch_up_turn(
        &self,
        turn: u64,
        kept: impl FnOnce() -> Result<Vec<Event>, PathError>,
    ) -> Result<u64, PathError> {
        if let Some(f) = fsx::open_regular(std::fs::OpenOptions::new().read(true), &self.path)? {
            if let Some(seq) = self.ends_with_turn(f, turn)? {
                return Ok(seq);
            }
        }
        self.catch_up(&kept()?)
    }

    /// The last `seq` when the last `turn` event of the file is that of
    /// `turn`, read from the file's end back to it (`None` when it is another
    /// turn's, or there is none). The window grows until it holds a whole
    /// `turn` event: with 10,000 agents, one lists 10,000 names.
    fn ends_with_turn(&self, mut f: std::fs::File, turn: u64) -> Result<Option<u64>, PathError> {
        let mut window: u64 = 64 * 1024;
        loop {
            let (text, whole) = self.read_end(&mut f, window)?;
            let mut last_seq = 0;
            for e in text.rsplit('\n').filter_map(Event::parse) {
                last_seq = last_seq.max(e.seq);
                if matches!(e.kind, EventKind::Turn(_)) {
                    return Ok((e.turn == turn).then_some(last_seq));
                }
            }
            if whole {
                return Ok(None);
            }
            window = window.saturating_mul(4);
        }
    }

    /// Appends `events` durably, under the file's lock, and returns the last
    /// `seq` in the file. An event keeps its `seq` unless the file already
    /// reached it (a person's command appended meanwhile), and is then
    /// numbered after the last line. With `once`, the events are one turn's,
    /// and those already in the file since its previous turn are left out.
    pub fn append(&self, events: &[Event], once: bool) -> Result<u64, PathError> {
        if events.is_empty() {
            return self.last_seq();
        }
        let turn = events.first().map(|e| e.turn).unwrap_or(0);
        let (_locked, tail, existed) = self.open_locked(if once { turn } else { 0 })?;
        let seen: std::collections::HashSet<String> = if once {
            tail.since.iter().filter(|e| e.turn == turn).map(Event::content).collect()
        } else {
            Default::default()
        };
        // Saturating: a number as high as it goes (a hand edit) is no reason to panic.
        let mut last = tail.last_seq;
        if once && events.iter().all(|e| seen.contains(&e.content())) {
            return Ok(last);
        }
        // Written as numbered, one line at a time: a large turn has 100,000 events.
        fsx::append_durable_with(&self.path, |w| {
            for e in events {
                if seen.contains(&e.content()) {
                    continue;
                }
                let seq = e.seq.max(last.saturating_add(1));
                last = seq;
                serde_json::to_writer(&mut *w, &Event { seq, ..e.clone() }.to_json())?;
                w.write_all(b"\n")?;
            }
            Ok(())
        })?;
        self.created(existed)?;
        // The lock is released when `_locked` closes.
        Ok(last)
    }

    /// The file opened for appending under its exclusive lock (released
    /// when the file closes), its tail as [`EventLog::tail`] reads it for
    /// `turn`, and whether it existed before.
    fn open_locked(&self, turn: u64) -> Result<(std::fs::File, Tail, bool), PathError> {
        let existed = std::fs::symlink_metadata(&self.path).is_ok();
        let mut f =
            match fsx::open_regular(std::fs::OpenOptions::new().read(true).append(true).create(true), &self.path)? {
                Some(f) => f,
                None => return Err(std::io::Error::from(std::io::ErrorKind::NotFound)).with_path(&self.path),
            };
        lock_exclusive(&f).with_path(&self.path)?;
        let tail = self.tail(&mut f, turn)?;
        Ok((f, tail, existed))
    }

    /// Makes the file's name durable when [`EventLog::open_locked`] created it.
    fn created(&self, existed: bool) -> Result<(), PathError> {
        if existed {
            return Ok(());
        }
        fsx::sync_dir(self.path.parent().unwrap_or(std::path::Path::new(".")))
    }

    /// Appends `count` spooled lines read from `spool`, numbered from
    /// `first_seq` on, durably, under the file's lock (see [`Events::append`]).
    /// They are copied as they are unless the file already reached their
    /// numbers: then each is numbered after the last line.
    fn append_spooled(&self, spool: &std::fs::File, first_seq: u64, count: usize) -> Result<u64, PathError> {
        if count == 0 {
            return self.last_seq();
        }
        let (_locked, tail, existed) = self.open_locked(0)?;
        let mut last = tail.last_seq;
        let renumber = first_seq <= last;
        fsx::append_durable_with(&self.path, |w| {
            spooled_lines(spool, |line| match renumber.then(|| Event::parse(line)).flatten() {
                Some(e) => {
                    last = last.saturating_add(1);
                    serde_json::to_writer(&mut *w, &Event { seq: last, ..e }.to_json())?;
                    w.write_all(b"\n")
                }
                None => w.write_all(line.as_bytes()),
            })
        })?;
        if !renumber {
            last = first_seq.saturating_add(count as u64 - 1);
        }
        self.created(existed)?;
        // The lock is released when `_locked` closes.
        Ok(last)
    }

    /// The last `window` bytes of the file, without the first line when it
    /// may begin before them, and whether they reach the file's start.
    fn read_end(&self, f: &mut std::fs::File, window: u64) -> Result<(String, bool), PathError> {
        use std::io::{Read, Seek, SeekFrom};
        let len = f.metadata().with_path(&self.path)?.len();
        let start = len.saturating_sub(window);
        let mut buf = Vec::new();
        f.seek(SeekFrom::Start(start)).with_path(&self.path)?;
        f.take(len - start).read_to_end(&mut buf).with_path(&self.path)?;
        let text = String::from_utf8_lossy(&buf);
        let text = if start > 0 { text.split_once('\n').map_or("", |(_, rest)| rest) } else { &text };
        Ok((text.to_string(), start == 0))
    }

    /// Reads the file backwards from its end: far enough to find the last
    /// `seq` and, for `turn` > 0, back to the `turn` event of a turn before it.
    fn tail(&self, f: &mut std::fs::File, turn: u64) -> Result<Tail, PathError> {
        let mut window: u64 = 64 * 1024;
        loop {
            let (text, whole) = self.read_end(f, window)?;
            if turn == 0 {
                // Only the last number: the last numbered line, read from the end.
                let numbered = text.rsplit('\n').filter(|l| l.contains("\"seq\"")).find_map(Event::parse);
                if let Some(e) = numbered {
                    return Ok(Tail { last_seq: e.seq, since: Vec::new() });
                }
                if whole {
                    // No numbered line at all: the old lines count one each.
                    let last_seq = text.split('\n').filter_map(Event::parse).count() as u64;
                    return Ok(Tail { last_seq, since: Vec::new() });
                }
                window = window.saturating_mul(4);
                continue;
            }
            let events: Vec<(Event, bool)> =
                text.split('\n').filter_map(|l| Event::parse(l).map(|e| (e, l.contains("\"seq\"")))).collect();
            let last_seq = events.iter().rev().find(|(_, numbered)| *numbered).map(|(e, _)| e.seq);
            let boundary = events.iter().rposition(|(e, _)| e.turn < turn && matches!(e.kind, EventKind::Turn(_)));
            if whole || (last_seq.is_some() && boundary.is_some()) {
                // No numbered line at all: the old lines count one each.
                let last_seq = last_seq.unwrap_or(events.len() as u64);
                let from = boundary.map_or(0, |b| b + 1);
                let since = events.into_iter().skip(from).map(|(e, _)| e).collect();
                return Ok(Tail { last_seq, since });
            }
            window = window.saturating_mul(4);
        }
    }
}

/// Takes an exclusive `flock` on `f`, waiting for other writers.
fn lock_exclusive(f: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: flock on a file descriptor we own; no memory is shared.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    fn t0() -> DateTime<Utc> {
        "2026-01-02T03:04:05.006Z".parse().unwrap()
    }

    #[test]
    fn lines_keep_their_shape_and_read_back() {
        let clock = ManualClock::new(t0());
        let mut ev = Events::live(7, 1, Bus::new(), t0());
        ev.emit(clock.now(), EventKind::Delivered { id: "m1".into(), from: "a".into(), to: "b".into() });
        ev.emit(
            clock.now(),
            EventKind::Skipped {
                agent: "a".into(),
                reason: SkipReason::PromptOverCredits,
                over: Some(Over { detail: "d".into(), tokens: 3, cost: 0.5, left: 0.1 }),
            },
        );
        ev.emit(
            clock.now(),
            EventKind::Failed {
                agent: "b".into(),
                run: None,
                error: Some("disk".into()),
                cause: Some(FailCause::IoError),
            },
        );
        ev.emit(clock.now(), EventKind::Turn(TurnReport { turn: 7, delivered: 1, ..TurnReport::default() }));
        let lines: Vec<Value> = ev.all().unwrap().iter().map(Event::to_json).collect();
        assert_eq!(
            lines[0],
            json!({"seq": 1, "turn": 7, "at": "2026-01-02T03:04:05.006Z", "event": "delivered", "id": "m1", "from": "a", "to": "b"})
        );
        assert_eq!(lines[1]["reason"], "prompt_over_credits");
        assert_eq!(lines[1]["tokens"], 3);
        assert_eq!(
            lines[2],
            json!({"seq": 3, "turn": 7, "at": "2026-01-02T03:04:05.006Z", "event": "failed", "agent": "b", "error": "disk", "cause": "io_error"})
        );
        assert_eq!(lines[3]["event"], "turn");
        assert_eq!(lines[3]["delivered"], 1);
        for (e, line) in ev.all().unwrap().iter().zip(&lines) {
            assert_eq!(Event::parse(&line.to_string()).as_ref(), Some(e), "{line}");
        }
    }

    /// The events of a turn: a delivery, a skip and its report.
    fn turn_events(turn: u64, first_seq: u64, bus: Bus) -> Events {
        let clock = ManualClock::stepping(t0(), chrono::Duration::milliseconds(1));
        let mut ev = Events::live(turn, first_seq, bus, t0());
        ev.emit(clock.now(), EventKind::Delivered { id: format!("m{turn}"), from: "a".into(), to: "b".into() });
        ev.emit(clock.now(), EventKind::Skipped { agent: "c".into(), reason: SkipReason::OutOfCredits, over: None });
        ev.emit(clock.now(), EventKind::Turn(TurnReport { turn, delivered: 1, ..TurnReport::default() }));
        ev
    }

    fn file_lines(layout: &Layout) -> Vec<Event> {
        std::fs::read_to_string(layout.events()).unwrap().lines().filter_map(Event::parse).collect()
    }

    fn seqs(events: &[Event]) -> Vec<u64> {
        events.iter().map(|e| e.seq).collect()
    }

    /// [`turn_events`], spooled to a file in `dir` as they are emitted.
    fn spooled_turn_events(dir: &std::path::Path, turn: u64, first_seq: u64) -> Events {
        let clock = ManualClock::stepping(t0(), chrono::Duration::milliseconds(1));
        let mut ev = Events::live(turn, first_seq, Bus::new(), t0()).spool_in(dir).unwrap();
        ev.emit(clock.now(), EventKind::Delivered { id: format!("m{turn}"), from: "a".into(), to: "b".into() });
        ev.emit(clock.now(), EventKind::Skipped { agent: "c".into(), reason: SkipReason::OutOfCredits, over: None });
        ev.emit(clock.now(), EventKind::Turn(TurnReport { turn, delivered: 1, ..TurnReport::default() }));
        ev
    }

    #[test]
    fn spooled_events_are_the_same_lines_and_leave_no_file_behind() {
        let d = tempfile::tempdir().unwrap();
        let layout = Layout::new(d.path());
        let tmp = layout.state_tmp();
        std::fs::create_dir_all(&tmp).unwrap();
        let log = EventLog::new(&layout);
        let (mut kept, mut spooled) = (turn_events(1, 1, Bus::new()), spooled_turn_events(&tmp, 1, 1));
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "the spool has no name");
        assert_eq!(spooled.all().unwrap(), kept.all().unwrap());
        assert_eq!(spooled.lines().unwrap().to_string(), kept.lines().unwrap().to_string());
        // Read again from the start each time.
        assert_eq!(spooled.lines().unwrap().to_string().lines().count(), 3);
        assert_eq!(spooled.append(&log).unwrap(), 3);
        assert_eq!(std::fs::read_to_string(layout.events()).unwrap(), kept.lines().unwrap().to_string());
        // A person's events took the turn's numbers meanwhile: the turn's are numbered after them.
        let mut two = spooled_turn_events(&tmp, 2, 4);
        let mut person = Events::new(2);
        person.push(Event { seq: 0, turn: 2, at: t0(), kind: EventKind::Paused {} });
        person.flush(&layout).unwrap();
        assert_eq!(two.append(&log).unwrap(), 7);
        let file = file_lines(&layout);
        assert_eq!(seqs(&file), [1, 2, 3, 4, 5, 6, 7]);
        assert!(matches!(file[3].kind, EventKind::Paused {}));
        let turn_two: Vec<EventKind> = two.all().unwrap().into_iter().map(|e| e.kind).collect();
        assert_eq!(file[4..].iter().map(|e| e.kind.clone()).collect::<Vec<_>>(), turn_two);
        // Nothing emitted: nothing appended.
        let mut none = Events::live(3, 8, Bus::new(), t0()).spool_in(&tmp).unwrap();
        assert_eq!(none.append(&log).unwrap(), 7);
        assert_eq!(file_lines(&layout).len(), 7);
    }

    #[test]
    fn arrivals_count_deliveries_from_others_than_the_engine_and_the_turn_s_own() {
        let mut ev = Events::live(1, 1, Bus::new(), t0());
        let delivered =
            |id: &str, from: &str| EventKind::Delivered { id: id.into(), from: from.into(), to: "b".into() };
        ev.emit(t0(), delivered("before", "a"));
        ev.count_arrivals(["own".to_string()].into());
        for (id, from) in [("own", "a"), ("bounce", crate::name::ENGINE), ("new", "a"), ("new2", "human")] {
            ev.emit(t0(), delivered(id, from));
        }
        ev.emit(t0(), EventKind::Skipped { agent: "c".into(), reason: SkipReason::OutOfCredits, over: None });
        assert_eq!(ev.arrivals(), 2);
    }

    #[test]
    fn a_turn_s_events_are_appended_once_however_often_it_is_tried() {
        let d = tempfile::tempdir().unwrap();
        let layout = Layout::new(d.path());
        std::fs::create_dir_all(layout.state_dir()).unwrap();
        let log = EventLog::new(&layout);
        assert_eq!(log.last_seq().unwrap(), 0);
        let mut one = turn_events(1, 1, Bus::new());
        assert_eq!(log.append(&one.all().unwrap(), true).unwrap(), 3);
        // A crash after the append and before anything else: catching up appends nothing.
        assert_eq!(log.catch_up(&one.all().unwrap()).unwrap(), 3);
        let mut two = turn_events(2, 4, Bus::new());
        // A torn append (a power cut mid-write): the first line made it, the rest did not.
        let text = two.lines().unwrap().to_string();
        let first_and_a_half = &text[..text.find('\n').unwrap() + 10];
        fsx::append_lines(&layout.events(), first_and_a_half).unwrap();
        assert_eq!(log.catch_up(&two.all().unwrap()).unwrap(), 6);
        assert_eq!(log.catch_up(&two.all().unwrap()).unwrap(), 6);
        let lines = file_lines(&layout);
        assert_eq!(seqs(&lines), [1, 2, 3, 4, 5, 6], "{lines:#?}");
        assert_eq!(lines.iter().filter(|e| e.turn == 2).count(), 3);
    }

    /// With 10,000 agents a `turn` event lists every name: one longer than
    /// the first window read from the end is still found there, so catching
    /// up does not read the whole turn back.
    #[test]
    fn a_turn_event_longer_than_the_first_window_is_found_from_the_end() {
        let d = tempfile::tempdir().unwrap();
        let layout = Layout::new(d.path());
        std::fs::create_dir_all(layout.state_dir()).unwrap();
        let log = EventLog::new(&layout);
        let clock = ManualClock::stepping(t0(), chrono::Duration::milliseconds(1));
        let mut one = Events::live(1, 1, Bus::new(), t0());
        one.emit(clock.now(), EventKind::Delivered { id: "m1".into(), from: "a".into(), to: "b".into() });
        let ran: Vec<String> = (0..20_000).map(|i| format!("a{i:05}")).collect();
        one.emit(clock.now(), EventKind::Turn(TurnReport { turn: 1, ran, ..TurnReport::default() }));
        assert_eq!(log.append(&one.all().unwrap(), true).unwrap(), 2);
        let size = std::fs::metadata(layout.events()).unwrap().len();
        assert!(size > 64 * 1024, "the turn event is only {size} bytes");
        let f = || std::fs::File::open(layout.events()).unwrap();
        assert_eq!(log.ends_with_turn(f(), 1).unwrap(), Some(2));
        assert_eq!(log.ends_with_turn(f(), 2).unwrap(), None, "the last turn event is turn 1's");
        assert_eq!(log.catch_up(&one.all().unwrap()).unwrap(), 2);
        assert_eq!(file_lines(&layout).len(), 2);
    }

    #[test]
    fn a_person_s_events_appended_during_a_turn_take_the_next_numbers() {
        let d = tempfile::tempdir().unwrap();
        let layout = Layout::new(d.path());
        std::fs::create_dir_all(layout.state_dir()).unwrap();
        let log = EventLog::new(&layout);
        log.append(&turn_events(1, 1, Bus::new()).all().unwrap(), true).unwrap();
        // Turn 2 numbers its events from 4 as it goes; meanwhile `inbox` appends one.
        let mut two = turn_events(2, 4, Bus::new());
        let mut person = Events::new(1);
        let why = DeadReason {
            id: "x".into(),
            reason: crate::mailbox::Reason::Malformed,
            detail: "d".into(),
            mailbox: "human".into(),
            to: vec![],
            turn: 1,
            at: t0(),
        };
        person.push(Event { seq: 0, turn: 1, at: t0(), kind: EventKind::from(&why) });
        person.flush(&layout).unwrap();
        assert_eq!(log.last_seq().unwrap(), 4);
        assert_eq!(log.append(&two.all().unwrap(), true).unwrap(), 7);
        let lines = file_lines(&layout);
        assert_eq!(seqs(&lines), [1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(lines[3].turn, 1, "the person's event");
        // Catching up after that crash-free append adds nothing.
        assert_eq!(log.catch_up(&two.all().unwrap()).unwrap(), 7);
        assert_eq!(file_lines(&layout).len(), 7);
    }

    #[test]
    fn numbering_continues_after_lines_written_before_numbers() {
        let d = tempfile::tempdir().unwrap();
        let layout = Layout::new(d.path());
        std::fs::create_dir_all(layout.state_dir()).unwrap();
        let old = "{\"turn\":1,\"at\":\"2026-01-02T03:04:05.006Z\",\"event\":\"delivered\",\"id\":\"m\",\"from\":\"a\",\"to\":\"b\"}\n";
        std::fs::write(layout.events(), old.repeat(5)).unwrap();
        let log = EventLog::new(&layout);
        assert_eq!(log.last_seq().unwrap(), 5);
        assert_eq!(log.append(&turn_events(2, 6, Bus::new()).all().unwrap(), true).unwrap(), 8);
        assert_eq!(log.last_seq().unwrap(), 8);
    }

    #[test]
    fn a_number_as_high_as_it_goes_does_not_overflow() {
        let d = tempfile::tempdir().unwrap();
        let layout = Layout::new(d.path());
        std::fs::create_dir_all(layout.state_dir()).unwrap();
        let max = u64::MAX;
        let line = format!("{{\"seq\":{max},\"turn\":1,\"at\":\"2026-01-02T03:04:05.006Z\",\"event\":\"delivered\",\"id\":\"m\",\"from\":\"a\",\"to\":\"b\"}}\n");
        std::fs::write(layout.events(), line).unwrap();
        let log = EventLog::new(&layout);
        assert_eq!(log.last_seq().unwrap(), max);
        let mut ev = turn_events(2, log.last_seq().unwrap().saturating_add(1), Bus::new());
        ev.emit(t0(), EventKind::Delivered { id: "n".into(), from: "a".into(), to: "b".into() });
        assert_eq!(log.append(&ev.all().unwrap(), true).unwrap(), max);
        assert_eq!(file_lines(&layout).len(), 5);
    }

    #[test]
    fn a_subscriber_sees_each_event_as_it_is_emitted() {
        let bus = Bus::new();
        let mut rx = bus.subscribe();
        let clock = ManualClock::new(t0());
        let mut ev = Events::live(3, 10, bus.clone(), clock.now());
        let started = rx.try_recv().unwrap();
        assert_eq!((started.seq, started.kind), (0, EventKind::TurnStarted {}), "turn_started first, unnumbered");
        assert!(&ev.all().unwrap().is_empty(), "turn_started is never appended");
        ev.emit(clock.now(), EventKind::Delivered { id: "m".into(), from: "a".into(), to: "b".into() });
        assert_eq!(rx.try_recv().unwrap(), ev.all().unwrap()[0], "published before the next one is emitted");
        ev.emit(clock.now(), EventKind::Skipped { agent: "c".into(), reason: SkipReason::OutOfCredits, over: None });
        assert_eq!(rx.try_recv().unwrap().seq, 11);
        assert!(rx.try_recv().is_err());
    }
}
