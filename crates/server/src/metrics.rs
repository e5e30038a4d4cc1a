//! `GET /metrics`: the Prometheus families, recorded from each committed
//! event and, in the daemon's process, from every provider call.

use std::sync::Arc;

use crate::Routes;

/// The metric families.
#[derive(Debug)]
pub struct Metrics {}

impl Metrics {
    /// Every family, at zero.
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics {})
    }
}

/// `GET /metrics` (open on loopback; elsewhere it needs the token).
pub fn routes() -> Routes {
    Routes::new()
}
