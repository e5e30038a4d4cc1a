//! The credits ledger (DESIGN §5 G5): append-only `org/state/ledger.jsonl`.
//!
//! One JSON line per entry. Charges are keyed by (turn, agent): a repeated turn
//! never charges twice. Balance = budget + top-ups − charges.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{PathError, WithPath};
use crate::fsx;

/// One ledger line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    /// A model call paid by an agent.
    Charge {
        /// The turn.
        turn: u64,
        /// The agent.
        agent: String,
        /// The model key that answered.
        model: String,
        /// Prompt tokens.
        input_tokens: u64,
        /// Reply tokens.
        output_tokens: u64,
        /// Credits.
        cost: f64,
        /// Whether the tokens are estimates (the provider reported none).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        estimated: bool,
        /// When.
        at: DateTime<Utc>,
    },
    /// Credits added by a person.
    TopUp {
        /// The agent.
        agent: String,
        /// Credits added.
        amount: f64,
        /// The last committed turn when it was added.
        #[serde(default)]
        turn: u64,
        /// When.
        at: DateTime<Utc>,
    },
}

/// One non-empty line of the ledger, with its 1-based number.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// A valid entry.
    Entry(usize, Entry),
    /// A line cut short by a crash mid-append (the last line, a prefix of an
    /// entry, or zeros after a power loss). The next append starts on a new
    /// line, so it may stand anywhere; the repeated turn charged again.
    Torn(usize, String),
    /// A complete line that is not a ledger entry (an edit gone wrong).
    Corrupt(usize, String),
}

/// Reads every non-empty line of ledger text. Readers skip torn and corrupt
/// lines; `fsck` reports them.
pub fn read_lines(text: &str) -> Vec<Line> {
    let last = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()).map(|(i, _)| i).last();
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| match serde_json::from_str::<Entry>(line) {
            Ok(e) => Line::Entry(i + 1, e),
            Err(e) if Some(i) == last || e.is_eof() || line.contains('\0') => Line::Torn(i + 1, e.to_string()),
            Err(e) => Line::Corrupt(i + 1, e.to_string()),
        })
        .collect()
}

/// An agent's credits.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Balance {
    /// Budget from the resume plus top-ups.
    pub budget: f64,
    /// Charges so far.
    pub spent: f64,
    /// What is left.
    pub left: f64,
}

/// The ledger, read into totals.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    path: PathBuf,
    charged: HashSet<(u64, String)>,
    spent: BTreeMap<String, f64>,
    by_model: BTreeMap<(String, String), f64>,
    top_ups: BTreeMap<String, f64>,
    /// Lines that do not parse (a torn write after a crash); skipped.
    pub torn_lines: Vec<usize>,
    /// (turn, agent) keys charged more than once (a G5 violation; fsck reports it).
    pub duplicate_charges: Vec<(u64, String)>,
}

impl Ledger {
    /// Reads the ledger (missing = empty).
    pub fn load(path: &Path) -> Result<Ledger, PathError> {
        let mut l = Ledger { path: path.to_path_buf(), ..Ledger::default() };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(l),
            Err(e) => return Err(e).with_path(path),
        };
        for line in read_lines(&text) {
            match line {
                Line::Entry(_, e) => l.add(&e),
                Line::Torn(no, _) | Line::Corrupt(no, _) => l.torn_lines.push(no),
            }
        }
        Ok(l)
    }

    fn add(&mut self, e: &Entry) {
        match e {
            Entry::Charge { turn, agent, model, cost, .. } => {
                if !self.charged.insert((*turn, agent.clone())) {
                    self.duplicate_charges.push((*turn, agent.clone()));
                }
                *self.spent.entry(agent.clone()).or_default() += cost;
                *self.by_model.entry((agent.clone(), model.clone())).or_default() += cost;
            }
            Entry::TopUp { agent, amount, .. } => *self.top_ups.entry(agent.clone()).or_default() += amount,
        }
    }

    /// Whether (turn, agent) is already charged.
    pub fn has_charge(&self, turn: u64, agent: &str) -> bool {
        self.charged.contains(&(turn, agent.to_string()))
    }

    /// An agent's balance, given its resume budget.
    pub fn balance(&self, agent: &str, budget: f64) -> Balance {
        let budget = budget + self.top_ups.get(agent).copied().unwrap_or(0.0);
        let spent = self.spent.get(agent).copied().unwrap_or(0.0);
        Balance { budget, spent, left: budget - spent }
    }

    /// Spend per model key for an agent.
    pub fn spent_by_model(&self, agent: &str) -> Vec<(String, f64)> {
        self.by_model.iter().filter(|((a, _), _)| a == agent).map(|((_, m), c)| (m.clone(), *c)).collect()
    }

    /// Everything charged, to every agent (what an org-wide `budget` is compared with).
    pub fn total_spent(&self) -> f64 {
        self.spent.values().sum()
    }

    /// Spend per model key, over every agent.
    pub fn spent_per_model(&self) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for ((_, model), cost) in &self.by_model {
            *out.entry(model.clone()).or_default() += cost;
        }
        out
    }

    /// Appends entries in one durable write and records them in the totals.
    /// Charges already present are skipped.
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), PathError> {
        let mut lines = String::new();
        for e in entries {
            if let Entry::Charge { turn, agent, .. } = e {
                if self.has_charge(*turn, agent) {
                    continue;
                }
            }
            self.add(e);
            lines.push_str(&serde_json::to_string(e).expect("an entry always serializes"));
            lines.push('\n');
        }
        fsx::append_lines_durable(&self.path, &lines)
    }
}

/// Appends a top-up now, durably (the file is fsynced before this returns).
pub fn top_up(path: &Path, agent: &str, amount: f64, turn: u64) -> Result<Entry, PathError> {
    let e = Entry::TopUp { agent: agent.to_string(), amount, turn, at: Utc::now() };
    let line = serde_json::to_string(&e).expect("an entry always serializes") + "\n";
    fsx::append_lines_durable(path, &line)?;
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charge(turn: u64, agent: &str, cost: f64) -> Entry {
        Entry::Charge {
            turn,
            agent: agent.into(),
            model: "default".into(),
            input_tokens: 1,
            output_tokens: 1,
            cost,
            estimated: false,
            at: Utc::now(),
        }
    }

    #[test]
    fn balance_is_budget_plus_top_ups_minus_charges_and_replays_do_not_charge_twice() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("ledger.jsonl");
        let mut l = Ledger::load(&p).unwrap();
        l.append(&[charge(1, "a", 2.5), charge(1, "b", 1.0)]).unwrap();
        l.append(&[charge(1, "a", 2.5)]).unwrap();
        top_up(&p, "a", 10.0, 1).unwrap();
        let l = Ledger::load(&p).unwrap();
        assert_eq!(l.balance("a", 5.0), Balance { budget: 15.0, spent: 2.5, left: 12.5 });
        assert_eq!(l.balance("b", 1.0).left, 0.0);
        assert_eq!(l.total_spent(), 3.5);
        assert_eq!(l.spent_per_model().into_iter().collect::<Vec<_>>(), vec![("default".to_string(), 3.5)]);
        assert!(l.duplicate_charges.is_empty());
        assert_eq!(std::fs::read_to_string(&p).unwrap().lines().count(), 3);
    }

    #[test]
    fn torn_lines_are_skipped_and_counted() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("ledger.jsonl");
        std::fs::write(
            &p,
            "{\"kind\":\"top_up\",\"agent\":\"a\",\"amount\":1.0,\"at\":\"2026-01-01T00:00:00Z\"}\n{\"kind\":\"cha",
        )
        .unwrap();
        let l = Ledger::load(&p).unwrap();
        assert_eq!(l.torn_lines, vec![2]);
        assert_eq!(l.balance("a", 0.0).left, 1.0);
    }
}
