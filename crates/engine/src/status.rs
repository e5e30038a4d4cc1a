//! What `lemming status`, `agents` and `inspect` show: a read-only snapshot of
//! an org, taken without the org lock so it works while a daemon runs.

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
    /// `human`, `idle`, `ready` (has unread mail), `failing`, `out_of_credits` or `invalid`.
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
}

/// Takes a snapshot of the org.
pub fn status(org: &Org) -> Result<Status, PathError> {
    let root = &org.layout.root;
    let mb = Mailbox::new(root);
    let ledger = Ledger::load(&org.layout.ledger())?;
    let pid = crate::daemon::daemon_pid(&org.layout);
    let mut agents = Vec::new();
    let mut names: Vec<String> = org.agents.keys().map(|n| n.to_string()).collect();
    names.extend(org.broken.keys().cloned());
    names.sort();
    for name in names {
        let resume = org.agents.get(name.as_str());
        let credits = ledger.balance(&name, resume.map(|r| r.credits).unwrap_or(0.0));
        let unread = mb.unread_count(&name)?;
        let last = activity::last(root, &name);
        let state = match resume {
            None => "invalid",
            Some(r) if r.name.is_human() => "human",
            Some(_) if credits.left <= 0.0 => "out_of_credits",
            Some(_) if !mb.attempts(&name).is_empty() => "failing",
            Some(_) if unread > 0 => "ready",
            Some(_) => "idle",
        };
        agents.push(AgentStatus {
            title: resume.map(|r| r.title.clone()).unwrap_or_default(),
            model: resume.and_then(|r| r.model.clone()),
            state: state.into(),
            credits,
            unread,
            pending: mb.pending_count(&name)?,
            last_run_turn: last.map(|a| a.turn),
            name,
        });
    }
    Ok(Status {
        turn: Journal::new(&org.layout).last_turn()?,
        daemon: DaemonState { running: pid.is_some(), pid, paused: org.layout.paused().exists() },
        agents,
        dead_letters: mb.dead_count()?,
        problems: org.problems(),
    })
}
