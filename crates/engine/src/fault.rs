//! Crash points for tests: `LEMMING_CRASH_AT=<point>[:<n>]` makes the process
//! abort (as a power cut would, with no cleanup) the n-th time (default 1st) it
//! reaches `point`. Unset, each check is one relaxed atomic load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
static SEEN: AtomicU64 = AtomicU64::new(0);

/// Aborts the process here if `LEMMING_CRASH_AT` names this point.
pub fn point(name: &str) {
    let target = TARGET.get_or_init(|| {
        let v = std::env::var("LEMMING_CRASH_AT").ok()?;
        let (p, n) = match v.split_once(':') {
            Some((p, n)) => (p.to_string(), n.parse().unwrap_or(1)),
            None => (v, 1),
        };
        Some((p, n))
    });
    if let Some((p, n)) = target {
        if p == name && SEEN.fetch_add(1, Ordering::Relaxed) + 1 >= *n {
            eprintln!("lemming: crash point `{name}` reached (LEMMING_CRASH_AT); aborting");
            std::process::abort();
        }
    }
}
