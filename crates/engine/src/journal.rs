//! Recovery records: `org/state/journal/<turn>/records.jsonl` holds each
//! agent's journaled reply with the plan of its effects (one line per agent,
//! appended in one write per turn); the org's `turn.json` holds the last
//! committed turn (guarantees G3, G4).
//!
//! A turn repeated after a crash reuses every journaled reply, with the
//! message ids planned the first time, instead of calling the model again.
//! Agents that were not journaled run afresh and get new ids, which cannot
//! collide: an id names its agent.
//!
//! A missing or unreadable `turn.json` is recovered from what the turns left
//! behind ([`Journal::recover`]), so numbering never starts again at 1 over an
//! existing history.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use lemming_provider::Usage;
use serde::{Deserialize, Serialize};

use crate::error::{PathError, WithPath};
use crate::fsx::write_atomic_with;
use crate::message::Message;
use crate::org::Layout;

/// How an agent's run went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The reply was used.
    Ok,
    /// The call failed or the reply was unusable; the mail stays unread.
    Failed,
}

/// One agent's run on one turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The turn.
    pub turn: u64,
    /// The agent.
    pub agent: String,
    /// The model key that answered (or was asked, on failure).
    pub model: String,
    /// Ok or failed.
    pub outcome: Outcome,
    /// The raw reply text, when there was one.
    pub reply: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// Token usage, when the model answered.
    pub usage: Option<Usage>,
    /// Credits charged.
    pub cost: f64,
    /// The mail in the prompt (consumed on success, counted as an attempt on failure).
    pub mail: Vec<String>,
    /// Messages to write to the agent's outbox.
    pub messages: Vec<Message>,
    /// Memory after the reply's operations (`null` = deleted).
    pub memory: BTreeMap<String, Option<serde_json::Value>>,
    /// The agent's notes.
    pub notes: String,
    /// Skipped parts of the reply and failed memory operations.
    pub warnings: Vec<String>,
    /// The process that called the model (to check, after crashes, that no
    /// journaled agent was asked again).
    #[serde(default)]
    pub pid: u32,
    /// Whose failure a failed run was. Only an unusable reply (or a record
    /// written before this was kept) counts as a failed attempt of the mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<lemming_provider::Cause>,
    /// The tool calls of the reply, in order, each with the id planned for its result.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<PlannedCall>,
    /// The conversation the reply continues (the thread of the first mail it
    /// read): its tool results join it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
    /// When the turn started: the stamp of the ids planned for its messages
    /// and tool results (`lemming replay` plans them again from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<DateTime<Utc>>,
    /// When the reply was taken: its messages' `created_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
}

/// A tool call of a journaled reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedCall {
    /// The call.
    #[serde(flatten)]
    pub call: crate::tools::Call,
    /// The id of its `tool_result` message.
    pub result: String,
}

/// One line of a turn's `tools.jsonl`: a call with a side effect is about to
/// run (no `done`), or a call is done, with its result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolLine {
    /// The agent that called.
    pub agent: String,
    /// The call's id.
    pub call: String,
    /// The result, once the call is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done: Option<ToolDone>,
}

/// A finished tool call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDone {
    /// What it gave.
    pub outcome: crate::tools::Outcome,
    /// How long it took, in milliseconds.
    pub ms: u64,
}

/// Where a tool call of a turn stands.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolState {
    /// It was about to run when the turn stopped: it may or may not have run.
    Started,
    /// It ran (or was refused), and this is its result.
    Done(ToolDone),
}

/// The last committed turn, `org/state/turn.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Committed {
    /// The turn number (0 before the first).
    pub turn: u64,
    /// When it was committed.
    pub committed_at: Option<DateTime<Utc>>,
    /// The turn's events, as `events.jsonl` lines. They are appended to the
    /// events file right after the commit, and kept here until the next turn
    /// commits, so that the next turn appends them when a crash came between
    /// the commit and the append ([`crate::events::EventLog::catch_up`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub events: String,
}

/// `turn.json` with its events passed over, not copied nor parsed.
#[derive(Deserialize)]
struct Head {
    turn: u64,
}

/// `turn.json` with the last of its events, the turn's own.
struct LastEvent {
    turn: u64,
    last: Option<String>,
}

impl LastEvent {
    fn read(bytes: &[u8]) -> serde_json::Result<LastEvent> {
        #[derive(Deserialize)]
        struct Raw<'a> {
            turn: u64,
            #[serde(default, borrow)]
            events: Option<&'a serde_json::value::RawValue>,
        }
        let raw: Raw<'_> = serde_json::from_slice(bytes)?;
        Ok(LastEvent { turn: raw.turn, last: raw.events.and_then(|e| last_line(e.get())) })
    }
}

/// The last line of `raw`, a JSON string of lines each ended by a newline,
/// decoded; none when `raw` is no such string.
fn last_line(raw: &str) -> Option<String> {
    let body = raw.strip_prefix('"')?.strip_suffix('"')?;
    let body = body.strip_suffix("\\n").unwrap_or(body);
    // A newline is written `\n`; a backslash and an `n` is `\\n`: a newline
    // is an `n` after an odd run of backslashes.
    let bytes = body.as_bytes();
    let mut start = 0;
    for i in (0..bytes.len()).rev() {
        if bytes[i] == b'n' {
            let run = bytes[..i].iter().rev().take_while(|b| **b == b'\\').count();
            if run % 2 == 1 {
                start = i + 1;
                break;
            }
        }
    }
    serde_json::from_str(&format!("\"{}\"", &body[start..])).ok()
}

/// The highest `turn` of any line of the events file (0 when there is none).
/// Read line by line: the file grows with the org's history.
fn last_event_turn(path: &std::path::Path) -> Result<u64, PathError> {
    use std::io::BufRead;
    #[derive(Deserialize)]
    struct Turn {
        turn: u64,
    }
    let Some(file) = crate::fsx::open_regular(fs::OpenOptions::new().read(true), path)? else { return Ok(0) };
    let mut last = 0;
    for line in std::io::BufReader::new(file).split(b'\n') {
        let line = line.with_path(path)?;
        if let Ok(t) = serde_json::from_slice::<Turn>(&line) {
            last = last.max(t.turn);
        }
    }
    Ok(last)
}

/// The journal of one org.
#[derive(Debug, Clone)]
pub struct Journal {
    layout: Layout,
}

impl Journal {
    /// The journal of the org with this layout.
    pub fn new(layout: &Layout) -> Journal {
        Journal { layout: layout.clone() }
    }

    fn dir(&self, turn: u64) -> PathBuf {
        self.layout.journal_dir().join(turn.to_string())
    }

    /// The last committed turn (0 if none). When `turn.json` is missing or
    /// cannot be read, the turn is recovered from the journal, the ledger and
    /// the events ([`Journal::recover`]); the next commit writes it again.
    /// A `turn.json` that is behind the journal (a folder of a turn later
    /// than the next one, as after restoring an old copy) is stale: it is
    /// recovered the same way, so that no turn number is used twice.
    pub fn last_turn(&self) -> Result<u64, PathError> {
        // Its events are passed over, not parsed: every command asks.
        Ok(self.last_head()?.0)
    }

    /// [`Journal::last_turn`], with the events that committed it, kept in
    /// `turn.json` (none when the turn was recovered from the history), from
    /// one read of the file: what a turn needs before it starts.
    pub fn last_turn_and_events(&self) -> Result<(u64, Vec<crate::events::Event>), PathError> {
        let (turn, c) = self.last_committed()?;
        let events = match c {
            Some(c) if c.turn == turn => c.events.lines().filter_map(crate::events::Event::parse).collect(),
            _ => Vec::new(),
        };
        Ok((turn, events))
    }

    /// The last committed turn, and `turn.json`'s record when it says so.
    pub fn last_committed(&self) -> Result<(u64, Option<Committed>), PathError> {
        self.last_committed_as(|b| serde_json::from_slice::<Committed>(b), |c| c.turn)
    }

    /// [`Journal::last_committed`] with `turn.json`'s events left unparsed.
    fn last_head(&self) -> Result<(u64, Option<Head>), PathError> {
        self.last_committed_as(|b| serde_json::from_slice::<Head>(b), |h| h.turn)
    }

    /// The last committed turn, and the last of the events that committed
    /// it when `turn.json` says so (the turn's own event): what `status`
    /// shows. The other events (one per agent in a large org) are not parsed.
    pub fn last_turn_event(&self) -> Result<(u64, Option<crate::events::Event>), PathError> {
        let (turn, head) = self.last_committed_as(LastEvent::read, |h| h.turn)?;
        let last = head.filter(|h| h.turn == turn).and_then(|h| h.last);
        Ok((turn, last.as_deref().and_then(crate::events::Event::parse)))
    }

    /// [`Journal::last_committed`] with `turn.json` read by `read`, whose
    /// turn `turn_of` gives.
    fn last_committed_as<T>(
        &self,
        read: impl FnOnce(&[u8]) -> serde_json::Result<T>,
        turn_of: impl Fn(&T) -> u64,
    ) -> Result<(u64, Option<T>), PathError> {
        match self.read_turn_json(read) {
            Ok(Some(c)) => {
                let began = self.turns()?.last().copied().unwrap_or(0);
                if began <= turn_of(&c).saturating_add(1) {
                    return Ok((turn_of(&c), Some(c)));
                }
                let turn = self.recover()?.max(turn_of(&c));
                tracing::warn!(stale = turn_of(&c), turn, "turn.json is behind the journal; the last committed turn was recovered from the journal, ledger and events");
                Ok((turn, Some(c)))
            }
            Ok(None) => Ok((self.recover()?, None)),
            Err(e) => {
                let turn = self.recover()?;
                tracing::warn!(error = %e, turn, "turn.json is unreadable; the last committed turn was recovered from the journal, ledger and events");
                Ok((turn, None))
            }
        }
    }

    /// The last committed turn as the org's history shows it, for when
    /// `turn.json` is lost:
    ///
    /// - an event of turn N (a turn's events are appended after `turn.json` is
    ///   written) or a top-up made after turn N means N was committed;
    /// - a journal folder or a charge of turn N means N began, so N − 1 was
    ///   committed. N is then run again, which is what happens after a crash
    ///   before the commit: its journaled replies are reused, nothing is
    ///   delivered or charged twice.
    ///
    /// 0 for an org with no history. A file that exists but cannot be read is
    /// an error: guessing low would reuse turn numbers.
    pub fn recover(&self) -> Result<u64, PathError> {
        let began = self.turns()?.last().copied().unwrap_or(0);
        let ledger = crate::ledger::Ledger::load(&self.layout.ledger())?;
        let (charged, topped_up) = ledger.last_turns();
        let evented = last_event_turn(&self.layout.events())?;
        Ok(evented.max(topped_up).max(began.max(charged).saturating_sub(1)))
    }

    /// The commit record, if any turn was committed.
    pub fn committed(&self) -> Result<Option<Committed>, PathError> {
        self.read_turn_json(|b| serde_json::from_slice(b))
    }

    /// `turn.json` as `read` reads it; none when it does not exist, an
    /// error naming it when it cannot be read or `read` refuses it.
    fn read_turn_json<T>(&self, read: impl FnOnce(&[u8]) -> serde_json::Result<T>) -> Result<Option<T>, PathError> {
        let p = self.layout.turn_json();
        let Some(b) = crate::fsx::read_optional(&p)? else { return Ok(None) };
        read(&b).map(Some).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)).with_path(&p)
    }

    /// The records already journaled for `turn`, by agent. A torn last line
    /// (a crash mid-append) was never made durable and is ignored.
    pub fn records(&self, turn: u64) -> Result<BTreeMap<String, Record>, PathError> {
        let p = self.dir(turn).join("records.jsonl");
        // Bytes, not text: a line that is not UTF-8 is skipped like any
        // line that does not parse, not an error for the whole turn.
        let Some(bytes) = crate::fsx::read_optional(&p)? else { return Ok(BTreeMap::new()) };
        let text = String::from_utf8_lossy(&bytes);
        let mut out = BTreeMap::new();
        for line in text.lines() {
            if let Ok(r) = serde_json::from_str::<Record>(line) {
                out.entry(r.agent.clone()).or_insert(r);
            }
        }
        Ok(out)
    }

    /// The file holding `turn`'s records (`fsck` reads every line of it).
    pub fn records_path(&self, turn: u64) -> PathBuf {
        self.dir(turn).join("records.jsonl")
    }

    /// The turns that have a journal folder, oldest first (missing folder = none).
    pub fn turns(&self) -> Result<Vec<u64>, PathError> {
        let dir = self.layout.journal_dir();
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_path(&dir),
        };
        let mut out: Vec<u64> =
            rd.flatten().filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok())).collect();
        out.sort_unstable();
        Ok(out)
    }

    /// Appends records for `turn` in one write, durably (the turn's folder too).
    pub fn append(&self, turn: u64, records: &[Record]) -> Result<(), PathError> {
        self.append_lines(turn, "records.jsonl", records)
    }

    /// What `turn`'s tool calls have come to so far, by (agent, call id): each
    /// call is `started` (a side effect was about to run) and then `done`.
    pub fn tool_states(&self, turn: u64) -> Result<BTreeMap<(String, String), ToolState>, PathError> {
        let Some(bytes) = crate::fsx::read_optional(&self.tools_path(turn))? else { return Ok(BTreeMap::new()) };
        let mut out = BTreeMap::new();
        for line in String::from_utf8_lossy(&bytes).lines() {
            let Ok(l) = serde_json::from_str::<ToolLine>(line) else { continue };
            let state = match l.done {
                Some(done) => ToolState::Done(done),
                None => ToolState::Started,
            };
            // A call is done once: a later line never replaces its result.
            let slot = out.entry((l.agent, l.call)).or_insert(ToolState::Started);
            if matches!(slot, ToolState::Started) {
                *slot = state;
            }
        }
        Ok(out)
    }

    /// The file of `turn`'s tool call states (`fsck` reads every line of it).
    pub fn tools_path(&self, turn: u64) -> PathBuf {
        self.dir(turn).join("tools.jsonl")
    }

    /// Appends tool call states for `turn` in one write, durably.
    pub fn append_tools(&self, turn: u64, lines: &[ToolLine]) -> Result<(), PathError> {
        self.append_lines(turn, "tools.jsonl", lines)
    }

    fn append_lines<T: Serialize>(&self, turn: u64, file: &str, items: &[T]) -> Result<(), PathError> {
        if items.is_empty() {
            return Ok(());
        }
        let dir = self.dir(turn);
        if !dir.is_dir() {
            fs::create_dir_all(&dir).with_path(&dir)?;
            crate::fsx::sync_dir(&self.layout.journal_dir())?;
        }
        crate::fsx::append_durable_with(&dir.join(file), |w| {
            for item in items {
                serde_json::to_writer(&mut *w, item)?;
                w.write_all(b"\n")?;
            }
            Ok(())
        })
    }

    /// Commits `turn`: writes `turn.json`, with the turn's `events` lines,
    /// atomically and durably. A try of the turn that does not get here
    /// leaves no event anywhere but with the subscribers of its bus.
    pub fn commit(&self, turn: u64, at: DateTime<Utc>, events: crate::events::Lines<'_>) -> Result<(), PathError> {
        // `Committed`'s fields, the events formatted into the file as they
        // are escaped: a large turn's are megabytes.
        #[derive(Serialize)]
        struct Streamed<'a> {
            turn: u64,
            committed_at: Option<DateTime<Utc>>,
            #[serde(serialize_with = "as_string")]
            events: crate::events::Lines<'a>,
        }
        fn as_string<S: serde::Serializer>(lines: &crate::events::Lines<'_>, s: S) -> Result<S::Ok, S::Error> {
            s.collect_str(lines)
        }
        let c = Streamed { turn, committed_at: Some(at), events };
        write_atomic_with(&self.layout.state_tmp(), &self.layout.turn_json(), |w| {
            serde_json::to_writer_pretty(w, &c).map_err(std::io::Error::from)
        })
    }

    /// Removes journals of turns older than `turn - keep`.
    pub fn prune(&self, turn: u64, keep: u64) {
        let Ok(rd) = fs::read_dir(self.layout.journal_dir()) else { return };
        for e in rd.flatten() {
            let old = e
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|t| t.saturating_add(keep) < turn);
            if old {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_line_of_the_events_is_read_without_the_others() {
        let lines = [
            r#"{"a":"one"}"#,
            r#"{"b":"a newline\nin a string"}"#,
            r#"{"c":"ends in a backslash\\"}"#,
            r#"{"d":"a backslash, then n: \\n, and \"quotes\""}"#,
            "{\"e\":\"é, ☃, \\u0007\"}",
        ];
        for last in 0..lines.len() {
            let events: String = lines[..=last].iter().map(|l| format!("{l}\n")).collect();
            let text = serde_json::to_string(&Committed { turn: 3, committed_at: None, events }).unwrap();
            let head = LastEvent::read(text.as_bytes()).unwrap();
            assert_eq!(head.turn, 3);
            assert_eq!(head.last.as_deref(), Some(lines[last]), "{text}");
            let head: Head = serde_json::from_str(&text).unwrap();
            assert_eq!(head.turn, 3);
        }
        // No events: no line.
        let head = LastEvent::read(br#"{"turn":1}"#).unwrap();
        assert!(head.last.is_none());
        assert_eq!(last_line("\"\""), Some(String::new()));
        assert_eq!(last_line("7"), None, "not a string");
    }

    fn put(layout: &Layout, rel: &str, text: &str) {
        let p = layout.root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    #[test]
    fn a_lost_or_corrupt_turn_file_is_recovered_from_the_history() {
        let d = tempfile::tempdir().unwrap();
        let layout = Layout::new(d.path());
        let j = Journal::new(&layout);
        assert_eq!(j.last_turn().unwrap(), 0, "a new org starts at 0");

        // Events are appended after the commit: turn 7 was committed.
        put(
            &layout,
            "org/state/events.jsonl",
            "{\"turn\":6,\"event\":\"turn\"}\n{\"turn\":7,\"event\":\"turn\"}\n{\"tu",
        );
        assert_eq!(j.last_turn().unwrap(), 7);
        // A journal folder of turn 9 means it began: it is run again.
        put(&layout, "org/state/journal/9/records.jsonl", "");
        assert_eq!(j.last_turn().unwrap(), 8);
        // So does a charge of turn 10.
        let charge = "{\"kind\":\"charge\",\"turn\":10,\"agent\":\"a\",\"model\":\"m\",\"input_tokens\":1,\"output_tokens\":1,\"cost\":0.1,\"at\":\"2026-01-01T00:00:00Z\"}\n";
        put(&layout, "org/state/ledger.jsonl", charge);
        assert_eq!(j.last_turn().unwrap(), 9);
        // A top-up names the turn committed when it was made.
        let top_up =
            "{\"kind\":\"top_up\",\"agent\":\"a\",\"amount\":1.0,\"turn\":12,\"at\":\"2026-01-01T00:00:00Z\"}\n";
        put(&layout, "org/state/ledger.jsonl", &format!("{charge}{top_up}"));
        assert_eq!(j.last_turn().unwrap(), 12);

        // A corrupt turn.json is recovered the same way; a valid one is the truth.
        put(&layout, "org/state/turn.json", "{\"turn\":");
        assert_eq!(j.last_turn().unwrap(), 12);
        put(&layout, "org/state/turn.json", "");
        assert_eq!(j.last_turn().unwrap(), 12);
        j.commit(13, Utc::now(), crate::events::Lines::new(&[])).unwrap();
        assert_eq!(j.last_turn().unwrap(), 13);
    }

    #[test]
    fn a_turn_file_behind_the_journal_is_recovered_not_trusted() {
        let d = tempfile::tempdir().unwrap();
        let layout = Layout::new(d.path());
        let j = Journal::new(&layout);
        put(&layout, "org/state/events.jsonl", "{\"turn\":9,\"event\":\"turn\"}\n");
        put(&layout, "org/state/journal/9/records.jsonl", "");
        // Turn 10 began and was not committed yet: turn.json says 9, and is right.
        j.commit(9, Utc::now(), crate::events::Lines::new(&[])).unwrap();
        put(&layout, "org/state/journal/10/records.jsonl", "");
        assert_eq!(j.last_turn().unwrap(), 9);
        // An old copy of turn.json (turn 1) over that history would reuse
        // turn 2 and replay its journal: the history wins.
        j.commit(1, Utc::now(), crate::events::Lines::new(&[])).unwrap();
        assert_eq!(j.last_turn().unwrap(), 9);
    }

    #[test]
    fn a_record_line_that_is_not_utf8_is_skipped() {
        let d = tempfile::tempdir().unwrap();
        let layout = Layout::new(d.path());
        put(&layout, "org/state/journal/3/records.jsonl", "");
        let p = layout.root.join("org/state/journal/3/records.jsonl");
        fs::write(&p, b"\xff\xfe not a record\n").unwrap();
        assert!(Journal::new(&layout).records(3).unwrap().is_empty());
    }

    #[test]
    fn an_unreadable_history_is_an_error_not_a_restart() {
        let d = tempfile::tempdir().unwrap();
        let layout = Layout::new(d.path());
        // The events file is a folder: it cannot be read, so the turn cannot be known.
        fs::create_dir_all(layout.events()).unwrap();
        let e = Journal::new(&layout).last_turn().unwrap_err();
        assert_eq!(e.path, layout.events());
    }

    /// The events a commit keeps are those of the turn `turn.json` holds,
    /// and only those: a turn recovered from the history has none to catch up.
    #[test]
    fn the_committed_turn_keeps_its_events_in_turn_json() {
        let d = tempfile::tempdir().unwrap();
        let layout = Layout::new(d.path());
        fs::create_dir_all(layout.state_tmp()).unwrap();
        let j = Journal::new(&layout);
        assert_eq!(j.last_turn_and_events().unwrap(), (0, vec![]), "nothing committed yet");
        let line = "{\"seq\":7,\"turn\":4,\"at\":\"2026-01-01T00:00:00.000Z\",\"event\":\"delivered\",\"id\":\"m\",\"from\":\"a\",\"to\":\"b\"}\n";
        let event = crate::events::Event::parse(line.trim_end()).unwrap();
        let written = format!("{}\n", event.to_json());
        j.commit(4, Utc::now(), crate::events::Lines::new(&[event])).unwrap();
        let raw: serde_json::Value = serde_json::from_slice(&fs::read(layout.turn_json()).unwrap()).unwrap();
        assert_eq!(raw["events"], written, "the lines, escaped as one string");
        let (turn, kept) = j.last_turn_and_events().unwrap();
        assert_eq!(turn, 4);
        assert_eq!(kept.iter().map(|e| (e.seq, e.turn)).collect::<Vec<_>>(), [(7, 4)]);
        // turn.json behind the journal: the recovered turn is another, whose events it does not hold.
        put(&layout, "org/state/journal/7/records.jsonl", "");
        let (turn, kept) = j.last_turn_and_events().unwrap();
        assert_eq!(turn, 6);
        assert!(kept.is_empty(), "another turn's");
        assert_eq!(j.committed().unwrap().unwrap().turn, 4);
    }
}
