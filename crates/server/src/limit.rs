//! Per-client rate limits of the mutating routes: at most `limit` requests
//! per client address in a sliding window; the next gets 429 with
//! `Retry-After`.
//!
//! Each client's window is the times of its last requests (at most `limit`
//! of them). Clients whose window has passed are forgotten whenever the
//! table grows past [`MAX_CLIENTS`], so memory stays bounded whoever calls.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::error::ApiError;

/// The most clients remembered at once.
pub const MAX_CLIENTS: usize = 4096;

/// The mutating requests of each client in the current window.
#[derive(Debug)]
pub struct Limiter {
    limit: u32,
    window: Duration,
    clients: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl Limiter {
    /// At most `limit` requests per `window` and client.
    pub fn new(limit: u32, window: Duration) -> Limiter {
        Limiter { limit, window, clients: Mutex::new(HashMap::new()) }
    }

    /// Counts a request of `client` at `now`: `Err(seconds)` to wait when it
    /// is over the limit (it is then not counted).
    pub fn check(&self, client: IpAddr, now: Instant) -> Result<(), u64> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if clients.len() >= MAX_CLIENTS && !clients.contains_key(&client) {
            let window = self.window;
            clients.retain(|_, times| times.back().is_some_and(|t| now.saturating_duration_since(*t) < window));
            if clients.len() >= MAX_CLIENTS {
                // Every remembered client is active: forget the one idle longest.
                let idle = clients.iter().min_by_key(|(_, t)| t.back().copied()).map(|(ip, _)| *ip);
                if let Some(ip) = idle {
                    clients.remove(&ip);
                }
            }
        }
        let times = clients.entry(client).or_default();
        while times.front().is_some_and(|t| now.saturating_duration_since(*t) >= self.window) {
            times.pop_front();
        }
        if times.len() >= self.limit as usize {
            let oldest = times.front().copied().unwrap_or(now);
            let wait = self.window.saturating_sub(now.saturating_duration_since(oldest));
            // Whole seconds, rounded up: waiting that long is always enough.
            return Err(wait.as_millis().div_ceil(1000).max(1) as u64);
        }
        times.push_back(now);
        Ok(())
    }

    /// How many clients are remembered.
    pub fn clients(&self) -> usize {
        self.clients.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Counts a mutating request against its client's window in `limiter` (the
/// peer's address); 429 with `Retry-After` when over the limit.
pub async fn limit(State(limiter): State<Arc<Limiter>>, req: Request, next: Next) -> Result<Response, ApiError> {
    let client =
        req.extensions().get::<ConnectInfo<SocketAddr>>().map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    limiter.check(client, Instant::now()).map_err(ApiError::too_many)?;
    Ok(next.run(req).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(n))
    }

    #[test]
    fn the_request_over_the_limit_waits_until_the_oldest_leaves_the_window() {
        let l = Limiter::new(5, Duration::from_secs(10));
        let t0 = Instant::now();
        for i in 0..5 {
            assert_eq!(l.check(ip(1), t0 + Duration::from_millis(i * 100)), Ok(()));
        }
        assert_eq!(l.check(ip(1), t0 + Duration::from_millis(500)), Err(10), "ceil(9.5 s)");
        assert_eq!(l.check(ip(2), t0), Ok(()), "another client has its own window");
        assert_eq!(l.check(ip(1), t0 + Duration::from_millis(9_999)), Err(1));
        assert_eq!(l.check(ip(1), t0 + Duration::from_secs(10)), Ok(()), "the first request left the window");
        assert_eq!(l.check(ip(1), t0 + Duration::from_millis(10_050)), Err(1));
        assert_eq!(l.check(ip(1), t0 + Duration::from_secs(11)), Ok(()));
    }

    #[test]
    fn memory_stays_bounded_whoever_calls() {
        let l = Limiter::new(2, Duration::from_secs(1));
        let t0 = Instant::now();
        for n in 0..(MAX_CLIENTS as u32 * 3) {
            l.check(ip(n), t0).unwrap();
        }
        assert!(l.clients() <= MAX_CLIENTS);
        // Once their windows passed, old clients are forgotten for new ones.
        l.check(ip(u32::MAX), t0 + Duration::from_secs(2)).unwrap();
        assert_eq!(l.clients(), 1);
    }
}
