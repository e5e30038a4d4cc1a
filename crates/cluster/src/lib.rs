//! Mail between the nodes of one org, over NATS JetStream: the transport
//! behind the engine's [`Transport`] seam (`[cluster]` in org.toml).
//!
//! - `names.rs`: the stream, its subjects and the consumer, from the org's
//!   name and the node's;
//! - `client.rs`: the client's options (reconnection, credentials from the
//!   environment);
//! - `link.rs`: the connection, on a runtime of its own so that the engine's
//!   synchronous routing can wait for it: publishing with `Nats-Msg-Id`
//!   (returns once JetStream has stored the message), fetching what arrived
//!   for this node's agents, acknowledging it once it is durable in their
//!   inboxes, and the backoff while the server cannot be reached;
//! - `lease.rs`: a lease per node name in a key-value bucket, so that one
//!   process at a time runs a node, on whichever machine;
//! - `status.rs`: each node's last turn in another bucket, and what
//!   `lemming status --cluster` reads back.
//!
//! The engine delivers what arrives (idempotently by id, so a message
//! redelivered past JetStream's dedupe window is still caught) and checks
//! the chart again before it does.

#![warn(missing_docs)]

mod client;
mod lease;
mod link;
mod names;
mod status;

use std::path::Path;
use std::sync::Arc;

use lemming_engine::settings::Cluster;
use lemming_engine::transport::{Connect, Transport};

pub use link::Nats;
pub use names::Names;
pub use status::read as cluster_status;

/// How the engine connects a process that is one node of `[cluster]` to the
/// org's NATS server. The connection is made in the background: a server
/// that is down makes mail between nodes wait, not the process fail.
pub fn connector() -> Connect {
    Arc::new(|cluster: &Cluster, node: &str, org: &Path| -> Result<Arc<dyn Transport>, String> {
        Ok(Arc::new(Nats::connect(cluster, node, org)?))
    })
}
