//! The seam between an org's nodes: a [`Transport`] carries mail to agents
//! that live on another node and brings the mail published for this one's
//! (routing calls it, `route.rs`), and a [`Link`] is how a process gets one.
//! The transport over NATS JetStream is the `lemming-cluster` crate.

use std::sync::Arc;

use crate::events::TurnReport;
use crate::message::Message;
use crate::settings::Cluster;

/// Carries mail to agents that live elsewhere (on another node of
/// `[cluster]`), and brings the mail other nodes published for this one's.
pub trait Transport: Send + Sync {
    /// Hands `msg` over for `to`. Returns only once the message is durable on
    /// the other side (for a message queue, once the publish is
    /// acknowledged): the outbox entry moves to sent only then, and stays
    /// waiting for the next turn when this fails. The same (message,
    /// recipient) may be handed over again after a crash or a failure, and
    /// must not reach the recipient twice.
    fn send(&self, to: &str, msg: &Message) -> Result<(), TransportError>;

    /// Mail published for the agents `here` (this node's, in name order) and not yet
    /// acknowledged: empty when there is none, or when the other side
    /// cannot be reached. A message comes again until [`Transport::done`]
    /// acknowledges it, also to a later process.
    fn incoming(&self, here: &[String]) -> Vec<Arrival>;

    /// Acknowledges the arrivals of `tokens`: each is durable in its
    /// recipient's inbox, or a dead letter here.
    fn done(&self, tokens: &[u64]);

    /// Calls `wake` whenever mail for this node's agents may have arrived,
    /// or mail waiting for other nodes may go now (the link came back), or
    /// this process lost its node ([`Transport::lost`]).
    fn watch(&self, wake: Wake) {
        let _ = wake;
    }

    /// Claims this process's node across machines, and keeps it while the
    /// process runs. An error names the process that holds the node. When
    /// the other side cannot be reached now, the claim is made once it can.
    fn claim(&self) -> Result<(), String> {
        Ok(())
    }

    /// Why this process no longer holds its node (another process took it),
    /// if it does not: it must stop running turns.
    fn lost(&self) -> Option<String> {
        None
    }

    /// Tells the other nodes that this one committed the turn of `report`
    /// (`lemming status --cluster`) and has spent `spent` credits in all
    /// (the org-wide `budget`). Best effort: a failure is logged.
    fn turn_done(&self, report: &TurnReport, spent: f64) {
        let _ = (report, spent);
    }

    /// What the org's other nodes have spent, as they last said; `None`
    /// when it cannot be known now (each node then holds to `budget` on its
    /// own charges).
    fn spent_elsewhere(&self) -> Option<f64> {
        None
    }
}

/// A message another node published for an agent of this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrival {
    /// What [`Transport::done`] acknowledges it by.
    pub token: u64,
    /// The agent whose inbox it was published for.
    pub to: String,
    /// The message as published: untrusted until routing has checked it.
    pub bytes: Vec<u8>,
}

/// Wakes the process that routes (the daemon's loop).
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// Connects a process that is the node `node` of `[cluster]`, its org folder
/// at the path, to the others.
pub type Connect = Arc<dyn Fn(&Cluster, &str, &std::path::Path) -> Result<Arc<dyn Transport>, String> + Send + Sync>;

/// How a process reaches the other nodes of its org: how to connect, and
/// the transport once connected. Without a way to connect (tests, one
/// machine), mail for another node waits in its sender's outbox.
#[derive(Clone, Default)]
pub struct Link {
    /// Makes the transport, for an org with `[cluster]`.
    pub connect: Option<Connect>,
    /// The transport, once connected.
    pub transport: Option<Arc<dyn Transport>>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("connect", &self.connect.is_some())
            .field("transport", &self.transport.is_some())
            .finish()
    }
}

impl Link {
    /// A link that connects with `connect` when the org spans nodes.
    pub fn connecting(connect: Connect) -> Link {
        Link { connect: Some(connect), transport: None }
    }
}

/// Why a transport did not take a message.
#[derive(Debug, thiserror::Error)]
#[error("{detail}")]
pub struct TransportError {
    /// What happened, for people.
    pub detail: String,
}
