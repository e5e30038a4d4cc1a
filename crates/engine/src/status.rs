//! What `lemming status`, `agents` and `inspect` show: a read-only snapshot of
//! an org, taken without the org lock so it works while a daemon runs.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::activity;
use crate::error::{Diagnostic, PathError};
use crate::journal::Journal;
use crate::ledger::{Balance, Ledger};
use crate::mailbox::Mailbox;
use crate::org::Org;

/// The daemon's state.
#[derive(Debug, Clone, Serialize)]
pub struct DaemonState {
    /// Whether a daemon (`lemming run`) holds the org lock.
    pub running: bool,
    /// Its pid.
    pub pid: Option<u32>,
    /// Whether turns are paused.
    pub paused: bool,
}

/// One agent's line in the status.
#[derive(Debug, Clone, Serialize)]
pub struct AgentStatus {
    /// The name.
    pub name: String,
    /// Its title.
    pub title: String,
    /// The model key (`null` for the human).
    pub model: Option<String>,
    /// `human`, `idle`, `ready` (has unread mail), `failing`, `out_of_credits`,
    /// `org_budget_spent` (the org-wide budget is spent) or `invalid`.
    pub state: String,
    /// Credits.
    pub credits: Balance,
    /// Unread messages.
    pub unread: usize,
    /// Messages waiting in its outbox.
    pub pending: usize,
    /// The last turn it ran on.
    pub last_run_turn: Option<u64>,
}

/// The whole status.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The last committed turn.
    pub turn: u64,
    /// The daemon.
    pub daemon: DaemonState,
    /// Every agent folder, valid or not.
    pub agents: Vec<AgentStatus>,
    /// Messages in `org/state/dead/`.
    pub dead_letters: usize,
    /// Config problems (invalid resumes).
    pub problems: Vec<Diagnostic>,
    /// Credits charged so far, to every agent.
    pub spent: f64,
    /// Credits charged so far per model key (the key that answered).
    pub spent_by_model: BTreeMap<String, f64>,
    /// The org-wide budget of `org.toml`, when set.
    pub budget: Option<OrgBudget>,
    /// Circuit breakers that are open, half-open or counting failures.
    pub breakers: Vec<BreakerStatus>,
    /// State files that could not be read (or lines of them that were
    /// skipped); the rest of the status is shown without them.
    pub unreadable: Vec<Unreadable>,
}

/// A state file the status could not read, or a part of one it skipped.
#[derive(Debug, Clone, Serialize)]
pub struct Unreadable {
    /// The file or folder.
    pub path: std::path::PathBuf,
    /// What went wrong, and what was shown instead.
    pub error: String,
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.error)
    }
}

/// Collects what could not be read, so one bad file never hides the rest.
#[derive(Default)]
struct Skipped(Vec<Unreadable>);

impl Skipped {
    /// The value, or `fallback` with the error noted.
    fn or<T>(&mut self, r: Result<T, PathError>, fallback: T, shown: &str) -> T {
        r.unwrap_or_else(|e| {
            self.0.push(Unreadable { path: e.path, error: format!("{}; {shown}", e.source) });
            fallback
        })
    }
}

/// The org-wide budget (`budget` in `org.toml`).
#[derive(Debug, Clone, Serialize)]
pub struct OrgBudget {
    /// The budget.
    pub budget: f64,
    /// Charged so far.
    pub spent: f64,
    /// What is left.
    pub left: f64,
    /// True once it is spent: no model is called until it is raised.
    pub exhausted: bool,
}

/// One provider's circuit breaker, from `org/state/breakers.json`.
#[derive(Debug, Clone, Serialize)]
pub struct BreakerStatus {
    /// The provider.
    pub provider: String,
    /// `open` (calls fail fast), `half_open` (the next call is a trial) or
    /// `closed` (failures counted, below the threshold).
    pub state: String,
    /// Failed calls in a row.
    pub consecutive_failures: u32,
    /// Failures that open it.
    pub threshold: u32,
    /// Calls fail fast until then.
    pub open_until: Option<chrono::DateTime<chrono::Utc>>,
    /// The last failure.
    pub last_error: Option<String>,
}

/// Takes a snapshot of the org.
/// A file that cannot be read is listed in [`Status::unreadable`] and the
/// rest is still shown.
pub fn status(org: &Org) -> Result<Status, PathError> {
    let root = &org.layout.root;
    let mb = Mailbox::new(root);
    let mut skipped = Skipped::default();
    let ledger_path = org.layout.ledger();
    let ledger = skipped.or(Ledger::load(&ledger_path), Ledger::default(), "credits are shown as if nothing was spent");
    for no in &ledger.torn_lines {
        skipped.0.push(Unreadable {
            path: ledger_path.clone(),
            error: format!("line {no} is not a ledger entry and is not counted (`lemming fsck` says more)"),
        });
    }
    let pid = crate::daemon::daemon_pid(&org.layout);
    let spent = ledger.total_spent();
    let budget = org.settings.budget.map(|b| OrgBudget { budget: b, spent, left: b - spent, exhausted: spent >= b });
    let exhausted = budget.as_ref().is_some_and(|b| b.exhausted);
    let mut agents = Vec::new();
    let mut names: Vec<String> = org.agents.keys().map(|n| n.to_string()).collect();
    names.extend(org.broken.keys().cloned());
    names.sort();
    for name in names {
        let resume = org.agents.get(name.as_str());
        let credits = ledger.balance(&name, resume.map(|r| r.credits).unwrap_or(0.0));
        let unread = skipped.or(mb.unread_count(&name), 0, "unread mail is shown as 0");
        let last = skipped.or(activity::try_last(root, &name), None, "the last run is not shown");
        let attempts = skipped.or(mb.try_attempts(&name), Default::default(), "failed attempts are not counted");
        let state = match resume {
            None => "invalid",
            Some(r) if r.name.is_human() => "human",
            Some(_) if exhausted => "org_budget_spent",
            Some(_) if credits.left <= 0.0 => "out_of_credits",
            Some(_) if !attempts.is_empty() => "failing",
            Some(_) if unread > 0 => "ready",
            Some(_) => "idle",
        };
        agents.push(AgentStatus {
            title: resume.map(|r| r.title.clone()).unwrap_or_default(),
            model: resume.and_then(|r| r.model.clone()),
            state: state.into(),
            credits,
            unread,
            pending: skipped.or(mb.pending_count(&name), 0, "pending mail is shown as 0"),
            last_run_turn: last.map(|a| a.turn),
            name,
        });
    }
    Ok(Status {
        turn: skipped.or(Journal::new(&org.layout).last_turn(), 0, "the turn is shown as 0"),
        daemon: DaemonState { running: pid.is_some(), pid, paused: org.layout.paused().exists() },
        agents,
        dead_letters: skipped.or(mb.dead_count(), 0, "dead letters are shown as 0"),
        problems: org.problems(),
        spent,
        spent_by_model: ledger.spent_per_model(),
        budget,
        breakers: breakers(org),
        unreadable: skipped.0,
    })
}

/// The breakers recorded in `org/state/breakers.json`, for providers still configured.
fn breakers(org: &Org) -> Vec<BreakerStatus> {
    let now = chrono::Utc::now();
    lemming_provider::breaker::read_file(&org.layout.breakers())
        .providers
        .into_iter()
        .filter(|(name, _)| org.models.providers.iter().any(|p| &p.name == name))
        .map(|(provider, b)| BreakerStatus {
            state: b.phase(now).to_string(),
            consecutive_failures: b.consecutive_failures,
            threshold: b.threshold,
            open_until: b.open_until,
            last_error: b.last_error,
            provider,
        })
        .collect()
}
