//! The ledger view (`GET /api/ledger?agent=`): the entries of
//! `org/state/ledger.jsonl` in the order they were written, for every agent
//! or one, each with the agent's balance after it (what a plot of credit use
//! over turns draws).

use std::collections::BTreeMap;

use serde::Serialize;

use super::status::Unreadable;
use super::ViewError;
use crate::ledger::{self, Entry, Line};
use crate::org::{Org, UnknownAgent};

/// One ledger entry and where it left its agent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LedgerRow {
    /// The entry, as written (`kind` is `charge` or `top_up`).
    #[serde(flatten)]
    pub entry: Entry,
    /// Its line in the ledger (1-based).
    pub line: usize,
    /// The agent's credits spent after this entry.
    pub spent: f64,
    /// The agent's credits left after this entry (its resume's budget, plus
    /// top-ups, minus charges so far).
    pub left: f64,
}

/// Ledger entries, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LedgerView {
    /// The agent asked for, if one was.
    pub agent: Option<String>,
    /// The entries.
    pub entries: Vec<LedgerRow>,
    /// Lines that are not entries (torn or corrupt; `lemming fsck` says
    /// more), and a ledger that cannot be read.
    pub unreadable: Vec<Unreadable>,
}

/// The ledger's entries, only `agent`'s when given (an agent of the org, or
/// a folder whose resume is invalid). Entries whose amount is invalid are
/// shown but not counted, as the ledger counts them.
pub fn ledger(org: &Org, agent: Option<&str>) -> Result<LedgerView, ViewError> {
    if let Some(a) = agent {
        if !org.broken.contains_key(a) {
            org.agent(a).map_err(|e: UnknownAgent| ViewError::UnknownAgent(e))?;
        }
    }
    let path = org.layout.ledger();
    let mut unreadable = Vec::new();
    let text = match crate::fsx::read_optional(&path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes.unwrap_or_default()).into_owned(),
        Err(e) => {
            unreadable.push(Unreadable { path: e.path, error: format!("{}; no entries are shown", e.source) });
            String::new()
        }
    };
    let budget = |a: &str| org.agents.get(a).map_or(0.0, |r| r.credits);
    let mut totals: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    let mut entries = Vec::new();
    for l in ledger::read_lines(&text) {
        let (line, entry) = match l {
            Line::Entry(no, e) => (no, e),
            Line::Torn(no, why) | Line::Corrupt(no, why) => {
                unreadable.push(Unreadable {
                    path: path.clone(),
                    error: format!("line {no} is not a ledger entry and is not shown ({why})"),
                });
                continue;
            }
        };
        let who = match &entry {
            Entry::Charge { agent, .. } | Entry::TopUp { agent, .. } => agent.clone(),
        };
        let t = totals.entry(who.clone()).or_insert((budget(&who), 0.0));
        if entry.valid() {
            match &entry {
                Entry::Charge { cost, .. } => t.1 += cost,
                Entry::TopUp { amount, .. } => t.0 += amount,
            }
        }
        let (spent, left) = (ledger::credits(t.1), ledger::credits(t.0 - t.1));
        if agent.is_none_or(|a| a == who) {
            entries.push(LedgerRow { entry, line, spent, left });
        }
    }
    Ok(LedgerView { agent: agent.map(String::from), entries, unreadable })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Ledger;
    use crate::views::testing::{org_after_one_turn, plain_org};

    #[test]
    fn entries_in_order_with_the_balance_after_each() {
        let (dir, org) = org_after_one_turn();
        let at = chrono::Utc::now();
        ledger::top_up(&org.layout, "planner", 100.0, 5.0, 1, at).unwrap();
        ledger::top_up(&org.layout, "manager", 100.0, 2.5, 1, at).unwrap();
        let mut text = std::fs::read_to_string(org.layout.ledger()).unwrap();
        text.push_str("{\"kind\":\"charge\",\"turn\":\n");
        std::fs::write(org.layout.ledger(), &text).unwrap();

        let all = ledger(&org, None).unwrap();
        let kinds: Vec<(&str, usize)> = all
            .entries
            .iter()
            .map(|r| match &r.entry {
                Entry::Charge { agent, .. } | Entry::TopUp { agent, .. } => (agent.as_str(), r.line),
            })
            .collect();
        assert_eq!(kinds, [("manager", 1), ("planner", 2), ("manager", 3)]);
        assert_eq!(all.unreadable.len(), 1, "the torn line is named");

        let mine = ledger(&org, Some("manager")).unwrap();
        assert_eq!(mine.entries.len(), 2);
        let totals = Ledger::load(&org.layout.ledger()).unwrap().balance("manager", 100.0);
        let last = mine.entries.last().unwrap();
        assert_eq!((last.spent, last.left), (totals.spent, totals.left), "the last row is the balance");
        assert!(mine.entries[0].spent > 0.0 && mine.entries[0].left < 100.0);
        let json = serde_json::to_value(&mine).unwrap();
        assert_eq!(json["entries"][0]["kind"], "charge");
        assert_eq!(json["entries"][1]["kind"], "top_up");
        assert_eq!(json["entries"][1]["amount"], 2.5);
        drop(dir);
    }

    #[test]
    fn an_unknown_agent_is_an_error_and_no_ledger_is_no_entries() {
        let (_dir, org) = plain_org();
        assert!(ledger(&org, None).unwrap().entries.is_empty());
        assert!(matches!(ledger(&org, Some("nobody")), Err(ViewError::UnknownAgent(_))));
        assert!(matches!(ledger(&org, Some("../x")), Err(ViewError::UnknownAgent(_))));
    }
}
