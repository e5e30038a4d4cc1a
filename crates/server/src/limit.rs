//! Per-client rate limits of the mutating routes: at most `limit` requests
//! per client address in a sliding window; the next gets 429 with
//! `Retry-After`.

use std::time::Duration;

/// The mutating requests of each client in the current window.
#[derive(Debug)]
pub struct Limiter {
    limit: u32,
    window: Duration,
}

impl Limiter {
    /// At most `limit` requests per `window` and client.
    pub fn new(limit: u32, window: Duration) -> Limiter {
        Limiter { limit, window }
    }
}
