//! The circuit breaker of each provider, and its state file.
//!
//! After `breaker_threshold` consecutive failed calls (timeouts, connection
//! errors, 429, 5xx, malformed responses, command failures), a provider's
//! breaker opens: for `breaker_cooldown_secs` every call fails fast, so the
//! fallback model answers at once. When the cool-down is over one trial call
//! goes through (half-open): success closes the breaker, failure opens it again.
//! A rejected request (another 4xx) says nothing about the provider's health
//! and neither counts nor resets.
//!
//! Every lemming command is its own process, so the state lives in a small
//! file as well (`org/state/breakers.json`), rewritten whole and durably
//! (through `lemming_fs::write_atomic`: a temporary file in `tmp/` beside it,
//! fsynced and renamed, the folder fsynced) whenever a breaker's counters
//! change, and read when a registry is built. Calls that succeed on a closed
//! breaker write nothing. The format:
//!
//! ```json
//! {"providers": {"local": {"consecutive_failures": 5, "threshold": 5,
//!   "opened_at": "2026-11-22T18:00:00Z", "open_until": "2026-11-22T18:00:30Z",
//!   "last_error": "HTTP 500 Internal Server Error: boom"}}}
//! ```
//!
//! A provider missing from the file is closed with no failures.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The name of the state file inside `org/state/`.
pub const FILE_NAME: &str = "breakers.json";

/// One provider's breaker, as stored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BreakerState {
    /// Failed calls in a row.
    #[serde(default)]
    pub consecutive_failures: u32,
    /// The threshold that opens the breaker (for people reading the file).
    #[serde(default)]
    pub threshold: u32,
    /// When it last opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opened_at: Option<DateTime<Utc>>,
    /// Calls fail fast until then; a trial call goes through after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_until: Option<DateTime<Utc>>,
    /// The last failure's message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl BreakerState {
    /// `open` (failing fast), `half_open` (cool-down over, the next call is a
    /// trial) or `closed`.
    pub fn phase(&self, now: DateTime<Utc>) -> &'static str {
        match self.open_until {
            Some(t) if now < t => "open",
            Some(_) => "half_open",
            None => "closed",
        }
    }
}

/// The whole state file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BreakerFile {
    /// By provider name.
    #[serde(default)]
    pub providers: BTreeMap<String, BreakerState>,
}

/// Reads a state file; a missing or unreadable file is empty (every breaker
/// closed). It is read as every state file is: a FIFO or a link put in its
/// place is refused (and logged), never waited on or followed.
pub fn read_file(path: &Path) -> BreakerFile {
    let bytes = lemming_fs::read_optional(path).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot read the circuit breaker state; every breaker starts closed");
        None
    });
    bytes.and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

/// The state file shared by the breakers of one registry.
#[derive(Debug)]
pub struct Board {
    path: PathBuf,
    file: Mutex<BreakerFile>,
}

impl Board {
    /// Opens the board of a state file (reading what is there).
    pub fn open(path: &Path) -> Arc<Board> {
        Arc::new(Board { path: path.to_path_buf(), file: Mutex::new(read_file(path)) })
    }

    fn get(&self, provider: &str) -> Option<BreakerState> {
        self.file.lock().expect("breaker board lock").providers.get(provider).cloned()
    }

    /// Stores one provider's state and rewrites the file atomically and durably.
    fn put(&self, provider: &str, state: &BreakerState) {
        let mut file = self.file.lock().expect("breaker board lock");
        // Another process may have written since: start from the file on disk.
        *file = read_file(&self.path);
        if state.consecutive_failures == 0 && state.open_until.is_none() {
            file.providers.remove(provider);
        } else {
            file.providers.insert(provider.to_string(), state.clone());
        }
        let bytes = serde_json::to_vec_pretty(&*file).expect("breaker state serializes");
        if let Err(e) = lemming_fs::write_atomic(&self.tmp_dir(), &self.path, &bytes) {
            tracing::warn!(error = %e, "cannot write the circuit breaker state");
        }
    }

    /// Where the temporary files of its writes go: `tmp/` beside the state
    /// file (`org/state/tmp/`, with every other state file's).
    fn tmp_dir(&self) -> PathBuf {
        self.path.parent().unwrap_or(Path::new(".")).join("tmp")
    }
}

#[derive(Debug, Default)]
struct Live {
    state: BreakerState,
    /// A half-open trial call is in flight (this process only).
    probing: bool,
}

/// One provider's circuit breaker.
#[derive(Debug)]
pub struct Breaker {
    provider: String,
    threshold: u32,
    cooldown: Duration,
    live: Mutex<Live>,
    board: Option<Arc<Board>>,
}

/// What the breaker says about a call about to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    /// Go ahead.
    Yes,
    /// Fail fast, for this reason.
    No(String),
}

impl Breaker {
    /// A breaker that opens after `threshold` failures in a row for `cooldown`,
    /// persisted on `board` when given.
    pub fn new(provider: &str, threshold: u32, cooldown: Duration, board: Option<Arc<Board>>) -> Breaker {
        let mut state = board.as_ref().and_then(|b| b.get(provider)).unwrap_or_default();
        state.threshold = threshold.max(1);
        Breaker {
            provider: provider.to_string(),
            threshold: threshold.max(1),
            cooldown,
            live: Mutex::new(Live { state, probing: false }),
            board,
        }
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        self.live.lock().expect("breaker lock").state.clone()
    }

    /// Whether a call may start now.
    pub fn admit(&self, now: DateTime<Utc>) -> Admit {
        let mut live = self.live.lock().expect("breaker lock");
        match live.state.open_until {
            Some(until) if now < until => Admit::No(format!(
                "circuit breaker open until {} after {} failed calls in a row (last: {})",
                until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                live.state.consecutive_failures,
                live.state.last_error.as_deref().unwrap_or("?")
            )),
            Some(_) if live.probing => {
                Admit::No("circuit breaker half-open: a trial call is in flight; failing fast until it ends".into())
            }
            Some(_) => {
                live.probing = true;
                Admit::Yes
            }
            None => Admit::Yes,
        }
    }

    /// A call succeeded: close the breaker.
    pub fn success(&self) {
        let mut live = self.live.lock().expect("breaker lock");
        live.probing = false;
        if live.state.consecutive_failures == 0 && live.state.open_until.is_none() {
            return;
        }
        if live.state.open_until.is_some() {
            tracing::info!(provider = %self.provider, "circuit breaker closed");
        }
        live.state = BreakerState { threshold: self.threshold, ..BreakerState::default() };
        self.persist(&live.state);
    }

    /// A call failed in a way that says the provider is unhealthy.
    pub fn failure(&self, now: DateTime<Utc>, error: &str) {
        let mut live = self.live.lock().expect("breaker lock");
        live.probing = false;
        live.state.consecutive_failures = live.state.consecutive_failures.saturating_add(1);
        live.state.last_error = Some(error.chars().take(300).collect());
        if live.state.consecutive_failures >= self.threshold {
            let until = now + chrono::Duration::from_std(self.cooldown).unwrap_or(chrono::Duration::seconds(30));
            live.state.opened_at = Some(now);
            live.state.open_until = Some(until);
            tracing::warn!(
                provider = %self.provider,
                failures = live.state.consecutive_failures,
                until = %until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "circuit breaker open: calls fail fast until the cool-down ends"
            );
        }
        self.persist(&live.state);
    }

    /// A call ended without saying anything about the provider's health (a rejected request).
    pub fn neutral(&self) {
        self.live.lock().expect("breaker lock").probing = false;
    }

    fn persist(&self, state: &BreakerState) {
        if let Some(board) = &self.board {
            board.put(&self.provider, state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_k_failures_fails_fast_then_lets_one_trial_through() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join(FILE_NAME);
        let b = Breaker::new("p", 3, Duration::from_secs(10), Some(Board::open(&path)));
        let t0 = Utc::now();
        for _ in 0..2 {
            assert_eq!(b.admit(t0), Admit::Yes);
            b.failure(t0, "HTTP 500");
        }
        assert_eq!(b.state().phase(t0), "closed");
        assert_eq!(read_file(&path).providers["p"].consecutive_failures, 2);
        b.failure(t0, "HTTP 500: boom");
        assert_eq!(b.state().phase(t0), "open");
        let Admit::No(why) = b.admit(t0 + chrono::Duration::seconds(5)) else { panic!("admitted while open") };
        assert!(why.contains("3 failed calls") && why.contains("boom"), "{why}");

        // Another process sees the open breaker through the file.
        let other = Breaker::new("p", 3, Duration::from_secs(10), Some(Board::open(&path)));
        assert!(matches!(other.admit(t0 + chrono::Duration::seconds(5)), Admit::No(_)));

        // After the cool-down: one trial, the others fail fast until it ends.
        let later = t0 + chrono::Duration::seconds(11);
        assert_eq!(b.state().phase(later), "half_open");
        assert_eq!(b.admit(later), Admit::Yes);
        assert!(matches!(b.admit(later), Admit::No(_)));
        b.failure(later, "again");
        assert!(matches!(b.admit(later + chrono::Duration::seconds(1)), Admit::No(_)), "a failed trial reopens");
        let much_later = later + chrono::Duration::seconds(11);
        assert_eq!(b.admit(much_later), Admit::Yes);
        b.success();
        assert_eq!(b.state().phase(much_later), "closed");
        assert_eq!(b.admit(much_later), Admit::Yes);
        assert!(read_file(&path).providers.is_empty(), "a closed breaker leaves no entry");
    }

    #[test]
    fn neutral_outcomes_neither_count_nor_reset() {
        let b = Breaker::new("p", 2, Duration::from_secs(10), None);
        let t = Utc::now();
        b.failure(t, "timeout");
        b.neutral();
        assert_eq!(b.state().consecutive_failures, 1);
        b.failure(t, "timeout");
        assert_eq!(b.state().phase(t), "open");
    }

    #[test]
    fn the_state_file_is_written_atomically_through_tmp_and_read_back() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join(FILE_NAME);
        let b = Breaker::new("p", 2, Duration::from_secs(10), Some(Board::open(&path)));
        let t = Utc::now();
        b.failure(t, "HTTP 500");
        b.failure(t, "HTTP 503");
        // Written through the one atomic write: its temporary file went to
        // tmp/ beside the state file and was renamed away.
        let tmp = d.path().join("tmp");
        assert_eq!(std::fs::read_dir(&tmp).expect("the write goes through tmp/").count(), 0);
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 2, "only the state file and tmp/: {names:?}");
        let on_disk = read_file(&path);
        assert_eq!(on_disk.providers["p"], b.state());
        assert_eq!(on_disk.providers["p"].phase(t), "open");
    }

    #[test]
    fn a_fifo_in_place_of_the_state_file_is_refused_not_waited_on() {
        use std::os::unix::ffi::OsStrExt;
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join(FILE_NAME);
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        std::thread::spawn(move || {
            let b = Breaker::new("p", 1, Duration::from_secs(10), Some(Board::open(&p)));
            b.failure(Utc::now(), "HTTP 500");
            let _ = tx.send(b.state());
        });
        let state = rx.recv_timeout(Duration::from_secs(10)).expect("reading the state file blocked on a FIFO");
        assert_eq!(state.consecutive_failures, 1);
        // The write replaced the FIFO with the state file.
        assert_eq!(read_file(&path).providers["p"].consecutive_failures, 1);
    }
}
