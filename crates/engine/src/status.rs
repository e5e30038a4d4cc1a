//! What `lemming status`, `agents` and `inspect` show: a read-only snapshot of
//! an org, taken without the org lock so it works while a daemon runs.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::activity;
use crate::error::{Diagnostic, PathError};
use crate::journal::Journal;
use crate::ledger::{Balance, Ledger};
use crate::mailbox::{FsMailStore, MailStore};
use crate::org::Org;
use crate::resume::{Resume, Wake};
use crate::turn::{self, PromptOverCredits};

/// The daemon's state.
#[derive(Debug, Clone, Serialize)]
pub struct DaemonState {
    /// Whether a daemon (`lemming run`) holds the org lock.
    pub running: bool,
    /// Its pid.
    pub pid: Option<u32>,
    /// Whether turns are paused.
    pub paused: bool,
    /// Why its turns fail and it is backing off (a full disk, a read-only org), if they do.
    pub trouble: Option<crate::trouble::DaemonTrouble>,
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
    /// `human`, `idle`, `ready` (has unread mail), `failing` (unusable
    /// replies), `out_of_credits`, `prompt_over_credits` (its prompt alone
    /// would cost more than it has left), `org_budget_spent` (the org-wide
    /// budget is spent), `invalid`, `io_error` (its files cannot be used; see
    /// `problem`), `provider_down` (its provider could not be reached; its mail
    /// waits) or `provider_error` (its provider refused the request or is
    /// misconfigured).
    pub state: String,
    /// What is wrong, for `io_error`, `provider_down` and `provider_error`
    /// (with the path, for `io_error`).
    pub problem: Option<String>,
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
    /// Invalid config files replaced by their last good version (in
    /// `org/state/last-good/`), relative to the org root.
    pub last_good: Vec<std::path::PathBuf>,
    /// Credits charged so far, to every agent.
    pub spent: f64,
    /// Credits charged so far per model key (the key that answered).
    pub spent_by_model: BTreeMap<String, f64>,
    /// The org-wide budget of `org.toml`, when set.
    pub budget: Option<OrgBudget>,
    /// Circuit breakers that are open, half-open or counting failures.
    pub breakers: Vec<BreakerStatus>,
    /// The filesystem holding the org is read-only or full, if it is.
    pub filesystem: Option<String>,
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
    let mb = org.mail();
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
    let budget = org.settings.budget.map(|b| OrgBudget {
        budget: b,
        spent,
        left: crate::ledger::credits(b - spent),
        exhausted: spent >= b,
    });
    let turn = skipped.or(Journal::new(&org.layout).last_turn(), 0, "the turn is shown as 0");
    let chart = org.chart();
    let exhausted = budget.as_ref().is_some_and(|b| b.exhausted);
    let trouble = crate::trouble::read_agents(&org.layout);
    let mut agents = Vec::new();
    let mut names: Vec<String> = org.agents.keys().map(|n| n.to_string()).collect();
    names.extend(org.broken.keys().cloned());
    names.sort();
    for name in names {
        let resume = org.agents.get(name.as_str());
        let credits = ledger.balance(&name, resume.map(|r| r.credits).unwrap_or(0.0));
        let (unread, unreadable) = match mb.unread_count(&name) {
            Ok(n) => (n, None),
            Err(e) => (0, Some(e.to_string())),
        };
        let (pending, unreadable) = match mb.pending_count(&name) {
            Ok(n) => (n, unreadable),
            Err(e) => (0, unreadable.or(Some(e.to_string()))),
        };
        let last = skipped.or(activity::try_last(root, &name), None, "the last run is not shown");
        let attempts = skipped.or(mb.try_attempts(&name), Default::default(), "failed attempts are not counted");
        let known = trouble.get(&name);
        let problem = unreadable.clone().or_else(|| known.map(|t| t.error.clone()));
        let state = match resume {
            None => "invalid",
            Some(_) if unreadable.is_some() => "io_error",
            Some(_) if known.is_some() => known.map(|t| t.state.as_str()).unwrap_or_default(),
            Some(r) if r.name.is_human() => "human",
            Some(_) if exhausted => "org_budget_spent",
            Some(_) if credits.left <= 0.0 => "out_of_credits",
            Some(r)
                if skipped.or(
                    prompt_over_credits(org, &chart, &mb, r, turn, credits.left, unread),
                    false,
                    "its prompt cost is not checked",
                ) =>
            {
                PromptOverCredits::REASON
            }
            Some(_) if !attempts.is_empty() => "failing",
            Some(_) if unread > 0 => "ready",
            Some(_) => "idle",
        };
        agents.push(AgentStatus {
            title: resume.map(|r| r.title.clone()).unwrap_or_default(),
            model: resume.and_then(|r| r.model.clone()),
            state: state.into(),
            problem: if resume.is_some() { problem } else { None },
            credits,
            unread,
            pending,
            last_run_turn: last.map(|a| a.turn),
            name,
        });
    }
    Ok(Status {
        turn,
        daemon: DaemonState {
            running: pid.is_some(),
            pid,
            paused: org.layout.paused().exists(),
            trouble: pid.and_then(|_| crate::trouble::read_daemon(&org.layout)),
        },
        agents,
        dead_letters: skipped.or(mb.dead_count(), 0, "dead letters are shown as 0"),
        problems: org.problems(),
        last_good: org.last_good.clone(),
        spent,
        spent_by_model: ledger.spent_per_model(),
        budget,
        breakers: breakers(org),
        filesystem: crate::trouble::filesystem_problem(root),
        unreadable: skipped.0,
    })
}

/// Whether the agent is due for its mail (or wakes always) but its prompt
/// alone would cost more than it has left, so the next turn skips it.
fn prompt_over_credits(
    org: &Org,
    chart: &crate::chart::Chart<'_>,
    mb: &FsMailStore,
    resume: &Resume,
    turn: u64,
    left: f64,
    unread: usize,
) -> Result<bool, PathError> {
    if unread == 0 && resume.schedule.wake != Wake::Always {
        return Ok(false);
    }
    let Some(model) = resume.model.as_deref().and_then(|k| org.models.models.get(k)) else { return Ok(false) };
    let (mut mail, _) = mb.unread(resume.name.as_str())?;
    let (_, system, user) = turn::prompt_for(org, chart, resume, turn.saturating_add(1), &mut mail);
    Ok(PromptOverCredits::check(model, &system, &user, left).is_some())
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
