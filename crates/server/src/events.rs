//! `GET /api/events`: the org's committed events as Server-Sent Events. A
//! [`Hub`] reads `org/state/events.jsonl` as it grows (woken by the daemon's
//! bus when it runs in this process), keeps the recent events for clients
//! that reconnect with `Last-Event-ID`, and fans them out.

use std::sync::Arc;

use crate::Routes;

use crate::state::AppState;

/// The events as they are committed, for every client.
#[derive(Debug)]
pub struct Hub {}

impl Hub {
    /// A hub for the org at `layout`; `bus` is the daemon's, when it runs in this process.
    pub fn new(_layout: &lemming_engine::org::Layout, _bus: Option<lemming_engine::events::Bus>) -> Hub {
        Hub {}
    }
}

/// Reads new events into the hub until aborted.
pub async fn pump(_hub: Arc<Hub>, _state: AppState) {}

/// `GET /api/events`.
pub fn routes() -> Routes {
    Routes::new()
}
