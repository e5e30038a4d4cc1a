//! Commit: the agents in trouble, the turn's report as its last event,
//! `turn.json` (with the turn's events), then the events appended to
//! `events.jsonl`, and old journals pruned.

use std::collections::BTreeMap;

use super::{Ran, Turn, TurnReport, Unjournaled};
use crate::error::PathError;
use crate::events::{EventKind, EventLog, FailCause};
use crate::fault;
use crate::journal::Outcome;
use crate::org::{agent_folders, Org};
use crate::trouble::{self, TroubleState};

impl Turn<'_> {
    /// Commits the turn. Its events are written into `turn.json` with the
    /// commit and appended to the events file after it, so that a committed
    /// turn's events are appended once (a crash in between is finished by the
    /// next turn) and an uncommitted try's never.
    pub(super) fn commit(mut self, runs: &[Ran], held: &mut Unjournaled) -> Result<TurnReport, PathError> {
        let (org, turn, clock) = (self.org, self.turn, self.clock);
        let trouble_now = agent_trouble(org, turn, &self.trouble_before, runs, &self.sick);
        for (agent, e) in &self.sick {
            if org.agents.contains_key(agent.as_str()) && !self.report.failed.iter().any(|(a, _)| a == agent) {
                self.report.failed.push((agent.clone(), format!("cannot use its files: {e}")));
                let error = Some(e.to_string());
                self.ev.emit(
                    clock.now(),
                    EventKind::Failed { agent: agent.clone(), run: None, error, cause: Some(FailCause::IoError) },
                );
            }
        }
        trouble::write_agents(&org.layout, &self.trouble_before, &trouble_now)?;

        let now = clock.now();
        self.report.ms = (now - self.started).num_milliseconds().max(0) as u64;
        // Published once `turn.json` is written and the events appended: to a
        // subscriber, it says the turn committed and its lines are in the file.
        self.ev.emit_unpublished(now, EventKind::Turn(self.report.clone()));
        self.journal.commit(turn, now, self.ev.lines()?)?;
        held.calls = 0;
        fault::point("committed");
        // Nothing of this turn is in the file before its commit: no line to leave out.
        if let Err(e) = self.ev.append(&EventLog::new(&org.layout)) {
            // The turn is committed; the next one appends its events first.
            tracing::error!(turn, error = %e, "cannot append the turn's events; the next turn appends them");
        }
        self.ev.publish_last();
        self.journal.prune(turn, org.settings.journal_keep_turns);
        let report = self.report;
        tracing::info!(
            turn,
            ran = report.ran.len(),
            failed = report.failed.len(),
            dead = report.dead,
            cost = report.cost,
            "turn committed"
        );
        Ok(report)
    }
}

/// The agents in trouble after this turn: those whose files could not be used,
/// and those whose provider was down or refused; an agent that ran, or whose
/// files are usable again, leaves the list.
fn agent_trouble(
    org: &Org,
    turn: u64,
    before: &BTreeMap<String, trouble::AgentTrouble>,
    runs: &[Ran],
    sick: &BTreeMap<String, PathError>,
) -> BTreeMap<String, trouble::AgentTrouble> {
    let folders = agent_folders(&org.layout);
    // An io_error lasts only while the agent's files stay unusable.
    let mut now: BTreeMap<String, trouble::AgentTrouble> = before
        .iter()
        .filter(|(a, t)| folders.contains(a) && (t.state != TroubleState::IoError || sick.contains_key(*a)))
        .map(|(a, t)| (a.clone(), t.clone()))
        .collect();
    for r in runs {
        let state = match r.cause {
            Some(lemming_provider::Cause::Unavailable) if r.outcome == Outcome::Failed => TroubleState::ProviderDown,
            Some(lemming_provider::Cause::Refused) if r.outcome == Outcome::Failed => TroubleState::ProviderError,
            // Its files failed after it ran: noted below.
            _ if sick.contains_key(&r.agent) => continue,
            _ => {
                now.remove(&r.agent);
                continue;
            }
        };
        trouble::note(&mut now, &r.agent, state, turn, r.error.clone().unwrap_or_default(), None);
    }
    for (agent, e) in sick {
        trouble::note(&mut now, agent, TroubleState::IoError, turn, e.to_string(), Some(e.path.clone()));
    }
    now
}
