//! Views: what people (and programs) are shown of an org, as typed,
//! serializable values. Each view is built by one function from a loaded
//! [`Org`](crate::org::Org), reads only, and takes no lock, so it works beside
//! a running daemon. The command line prints a view as text or, with
//! `--json`, as JSON; an HTTP API serves the same values.
//!
//! A state file that cannot be read never hides the rest: it is named in the
//! view's `unreadable` list and the view is built without it.
//!
//! - [`status()`]: the turn, the daemon, every agent's state, dead letters;
//! - [`agents()`] and [`inspect()`]: the agents, and one agent in detail;
//! - [`models()`]: the model keys of `org/models.toml`;
//! - [`inbox()`] and [`thread()`]: an agent's mail, and one conversation
//!   across every mailbox;
//! - [`logs()`] and [`LogsFollow`]: an agent's activity log, once or as it grows;
//! - [`chart()`]: the org chart as nodes (with their state) and allowed edges;
//! - [`ledger()`]: the credits ledger's entries, with the balance after each;
//! - [`dead()`]: the dead letters with their reasons;
//! - [`messages()`] and [`message()`]: every message the org holds, searched and paged.

mod agents;
mod chart;
mod dead;
mod ledger;
mod logs;
mod mail;
mod messages;
mod models;
pub mod status;

pub use agents::{agents, inspect, AgentRow, AgentsView, InspectView, ModelSpend, ScheduleView};
pub use chart::{chart, ChartEdge, ChartNode, ChartView};
pub use dead::{dead, DeadLetter, DeadView};
pub use ledger::{ledger, LedgerRow, LedgerView};
pub use logs::{logs, LogsFollow, LogsView};
pub use mail::{inbox, thread, Inbox, InboxMessage, InboxView, NotAMessage, ThreadMessage, ThreadView};
pub use messages::{
    message, messages, MessageQuery, MessageQueryError, MessageRow, MessagesView, DEFAULT_LIMIT, MAX_LIMIT,
};
pub use models::{models, ModelRow, ModelsView, PriceView};
pub use status::{status, status_at, status_viewing, AgentState, AgentStatus, BreakerState, StatusView, Unreadable};

use crate::error::PathError;
use crate::org::UnknownAgent;

/// Why a view could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// The agent asked for is not in the org (the message lists the known ones).
    #[error(transparent)]
    UnknownAgent(#[from] UnknownAgent),
    /// No mailbox holds a message of this thread.
    #[error(
        "no message with the id or thread `{0}` in any inbox\n  help: ids are shown by `lemming inbox --all` (and \
         `inbox AGENT --all` for other agents)"
    )]
    UnknownThread(String),
    /// A file or folder the whole view depends on cannot be read.
    #[error(transparent)]
    Path(#[from] PathError),
}

/// Orgs for the views' tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::Path;

    use crate::message::Message;
    use crate::org::Org;

    /// The default org, before any turn.
    pub fn plain_org() -> (tempfile::TempDir, Org) {
        let dir = tempfile::tempdir().unwrap();
        crate::init::init(dir.path()).unwrap();
        let org = Org::load(dir.path()).unwrap();
        (dir, org)
    }

    /// The default org after the human wrote to the manager and one turn ran
    /// (the mock manager answers the human).
    pub fn org_after_one_turn() -> (tempfile::TempDir, Org) {
        let (dir, org) = plain_org();
        crate::send::send(&org, "human", "manager", "hello", Default::default()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(crate::daemon::step(dir.path(), 1, |_, _| {})).unwrap();
        let org = Org::load(dir.path()).unwrap();
        (dir, org)
    }

    /// Puts a message in an agent's unread mail, as a turn delivers it.
    pub fn deliver(dir: &tempfile::TempDir, agent: &str, m: &Message) {
        let p = Path::new(dir.path())
            .join("agents")
            .join(agent)
            .join("inbox/new")
            .join(crate::mailbox::message_file(&m.id));
        std::fs::write(p, m.to_bytes()).unwrap();
    }
}
