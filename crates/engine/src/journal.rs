//! Recovery records: `org/state/journal/<turn>/records.jsonl` holds each
//! agent's journaled reply with the plan of its effects (one line per agent,
//! appended in one write per turn); the org's `turn.json` holds the last
//! committed turn (DESIGN §5 G3, G4).
//!
//! A turn repeated after a crash reuses every journaled reply, with the
//! message ids planned the first time, instead of calling the model again.
//! Agents that were not journaled run afresh and get new ids, which cannot
//! collide: an id names its agent.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use lemming_provider::Usage;
use serde::{Deserialize, Serialize};

use crate::error::{PathError, WithPath};
use crate::fsx::write_atomic;
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
}

/// The last committed turn, `org/state/turn.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Committed {
    /// The turn number (0 before the first).
    pub turn: u64,
    /// When it was committed.
    pub committed_at: Option<DateTime<Utc>>,
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

    /// The last committed turn (0 if none).
    pub fn last_turn(&self) -> Result<u64, PathError> {
        Ok(self.committed()?.map(|c| c.turn).unwrap_or(0))
    }

    /// The commit record, if any turn was committed.
    pub fn committed(&self) -> Result<Option<Committed>, PathError> {
        let p = self.layout.turn_json();
        match fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
                .with_path(&p),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_path(&p),
        }
    }

    /// The records already journaled for `turn`, by agent. A torn last line
    /// (a crash mid-append) was never made durable and is ignored.
    pub fn records(&self, turn: u64) -> Result<BTreeMap<String, Record>, PathError> {
        let p = self.dir(turn).join("records.jsonl");
        let text = match fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(e).with_path(&p),
        };
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
        if records.is_empty() {
            return Ok(());
        }
        let dir = self.dir(turn);
        if !dir.is_dir() {
            fs::create_dir_all(&dir).with_path(&dir)?;
            crate::fsx::sync_dir(&self.layout.journal_dir())?;
        }
        let mut lines = String::new();
        for r in records {
            lines.push_str(&serde_json::to_string(r).expect("a record always serializes"));
            lines.push('\n');
        }
        crate::fsx::append_lines_durable(&self.dir(turn).join("records.jsonl"), &lines)
    }

    /// Commits `turn`: writes `turn.json` atomically and durably.
    pub fn commit(&self, turn: u64, at: DateTime<Utc>) -> Result<(), PathError> {
        let c = Committed { turn, committed_at: Some(at) };
        let bytes = serde_json::to_vec_pretty(&c).expect("commit record serializes");
        write_atomic(&self.layout.state_tmp(), &self.layout.turn_json(), &bytes)
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
