//! The read routes: status, agents, one agent, its resume (GET), messages,
//! threads, the chart, the ledger, logs and dead letters, each from the
//! engine's views (the same values the CLI renders).

use crate::Routes;

/// The read routes.
pub fn routes() -> Routes {
    Routes::new()
}
