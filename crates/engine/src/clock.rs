//! Where the engine gets the time and fresh ids: a [`Clock`] and an [`IdGen`],
//! given to the turn and the daemon as [`Sources`]. The real ones read the
//! system clock and hash it with the pid; tests pass fixed ones, so that a turn
//! can be re-derived from its journal byte for byte.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

/// The current time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock for tests: it starts at a given instant and moves only when told
/// to, or by `step` after every reading (zero by default).
#[derive(Debug)]
pub struct ManualClock {
    at: Mutex<DateTime<Utc>>,
    step: chrono::Duration,
}

impl ManualClock {
    /// A clock stopped at `at`.
    pub fn new(at: DateTime<Utc>) -> ManualClock {
        ManualClock { at: Mutex::new(at), step: chrono::Duration::zero() }
    }

    /// A clock that moves by `step` after every reading.
    pub fn stepping(at: DateTime<Utc>, step: chrono::Duration) -> ManualClock {
        ManualClock { at: Mutex::new(at), step }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: chrono::Duration) {
        let mut at = self.at.lock().unwrap_or_else(|e| e.into_inner());
        *at += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        let mut at = self.at.lock().unwrap_or_else(|e| e.into_inner());
        let now = *at;
        *at += self.step;
        now
    }
}

/// Fresh ids for messages that people write (`lemming send`, `chat`). The ids
/// of agents' messages, dead letters and bounces are derived from the turn and
/// need no source.
pub trait IdGen: Send + Sync + fmt::Debug {
    /// A new message id from `from`, written at `at`: the time stamp first, so
    /// ids sort by time, then the sender, then a part that makes it unique.
    fn message_id(&self, at: DateTime<Utc>, from: &str) -> String;
}

/// Ids made unique by a random hash of the time and the process id.
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomIds;

impl IdGen for RandomIds {
    fn message_id(&self, at: DateTime<Utc>, from: &str) -> String {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(at.timestamp_nanos_opt().unwrap_or_default() as u128);
        h.write_u32(std::process::id());
        format!("{}-{from}-{:06x}", crate::message::id_stamp(at), h.finish() & 0xff_ffff)
    }
}

/// Ids made unique by a counter, for tests: the same sequence every run.
#[derive(Debug, Default)]
pub struct CountingIds {
    next: AtomicU64,
}

impl IdGen for CountingIds {
    fn message_id(&self, at: DateTime<Utc>, from: &str) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{}-{from}-{n:06x}", crate::message::id_stamp(at))
    }
}

/// The clock and the id source a turn, the daemon or a person's command uses,
/// and the bus its turns publish their events on.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The time.
    pub clock: Arc<dyn Clock>,
    /// Fresh message ids.
    pub ids: Arc<dyn IdGen>,
    /// Where each event of a turn is published as it happens
    /// ([`crate::events::Bus::subscribe`] to see them).
    pub bus: crate::events::Bus,
    /// How mail reaches the other nodes of an org with `[cluster]`.
    pub link: crate::transport::Link,
}

impl Sources {
    /// The system clock and random ids.
    pub fn real() -> Sources {
        Sources {
            clock: Arc::new(SystemClock),
            ids: Arc::new(RandomIds),
            bus: crate::events::Bus::new(),
            link: crate::transport::Link::default(),
        }
    }

    /// A clock stopped at `at` (see [`ManualClock`]) and counting ids.
    pub fn fixed(at: DateTime<Utc>) -> Sources {
        Sources {
            clock: Arc::new(ManualClock::new(at)),
            ids: Arc::new(CountingIds::default()),
            bus: crate::events::Bus::new(),
            link: crate::transport::Link::default(),
        }
    }

    /// Now, by the clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
}

impl Default for Sources {
    fn default() -> Sources {
        Sources::real()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        "2026-01-02T03:04:05.006Z".parse().unwrap()
    }

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let c = ManualClock::new(t0());
        assert_eq!(c.now(), t0());
        assert_eq!(c.now(), t0());
        c.advance(chrono::Duration::seconds(2));
        assert_eq!(c.now(), t0() + chrono::Duration::seconds(2));
        let s = ManualClock::stepping(t0(), chrono::Duration::milliseconds(1));
        assert_eq!((s.now(), s.now()), (t0(), t0() + chrono::Duration::milliseconds(1)));
    }

    #[test]
    fn counting_ids_repeat_across_runs_and_are_valid() {
        let (a, b) = (CountingIds::default(), CountingIds::default());
        let first: Vec<String> = (0..3).map(|_| a.message_id(t0(), "human")).collect();
        let again: Vec<String> = (0..3).map(|_| b.message_id(t0(), "human")).collect();
        assert_eq!(first, again);
        assert_eq!(first[0], "20260102T030405006Z-human-000000");
        assert_ne!(first[0], first[1]);
        assert!(first.iter().all(|id| crate::message::valid_id(id)));
    }

    #[test]
    fn random_ids_differ_and_sort_by_time() {
        let r = RandomIds;
        let a = r.message_id(t0(), "human");
        let b = r.message_id(t0() + chrono::Duration::milliseconds(1), "human");
        assert!(a < b, "{a} !< {b}");
        assert!(crate::message::valid_id(&a));
    }
}
