//! Retries and the circuit breaker, shared by the `openai`, `anthropic` and
//! `command` kinds.
//!
//! A kind implements [`Attempt`]: one try, whose error says whether trying
//! again may help and whether it speaks about the provider's health.
//! [`Resilient`] wraps it into a [`Provider`]: it asks the [`Breaker`] first,
//! then tries up to `1 + max_retries` times. Timeouts, connection errors, 429
//! and 5xx are retried after an exponential backoff with jitter, or after the
//! server's `Retry-After` (seconds) when it sends one; any other 4xx is not.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use crate::breaker::{Admit, Breaker};
use crate::{BoxFuture, Cause, Provider, ProviderError, Reply, Request};

/// The longest `Retry-After` honoured; a server asking for more gets no retry.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// The longest backoff between two tries.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Whether and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Trying again will not help (a rejected request, a bad config).
    No,
    /// Try again after the backoff.
    Backoff,
    /// Try again after this long (the server's `Retry-After`).
    After(Duration),
}

/// Why one try failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptError {
    /// What went wrong: status, a short body excerpt, never a key.
    pub message: String,
    /// Whether to try again.
    pub retry: Retry,
    /// Whether this failure counts against the provider's circuit breaker.
    pub unhealthy: bool,
    /// Whose failure it is (whether it counts as a failed attempt of the mail).
    pub cause: Cause,
}

impl AttemptError {
    /// A failure worth a retry that says the provider is unhealthy (timeout, 5xx, ...).
    pub fn transient(message: impl Into<String>) -> AttemptError {
        AttemptError { message: message.into(), retry: Retry::Backoff, unhealthy: true, cause: Cause::Unavailable }
    }

    /// An answer that cannot be used, which a retry will not fix (a malformed
    /// body, too much output): a failed attempt of the mail.
    pub fn broken(message: impl Into<String>) -> AttemptError {
        AttemptError { message: message.into(), retry: Retry::No, unhealthy: true, cause: Cause::Reply }
    }

    /// The provider failed without an answer, and a retry now will not fix it
    /// (a program that crashed or exited non-zero, a server that answers with
    /// an error object): the provider is down, the mail waits.
    pub fn down(message: impl Into<String>) -> AttemptError {
        AttemptError { message: message.into(), retry: Retry::No, unhealthy: true, cause: Cause::Unavailable }
    }

    /// A rejected request or a config problem: no retry, and the provider is not to blame.
    pub fn rejected(message: impl Into<String>) -> AttemptError {
        AttemptError { message: message.into(), retry: Retry::No, unhealthy: false, cause: Cause::Refused }
    }
}

/// One try of a call.
pub trait Attempt: Send + Sync {
    /// Tries once.
    fn attempt<'a>(&'a self, req: &'a Request) -> BoxFuture<'a, Result<Reply, AttemptError>>;
}

/// Retry settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Tries after the first.
    pub max_retries: u32,
    /// The first backoff before jitter; it doubles on every retry.
    pub backoff: Duration,
}

impl Policy {
    /// The delay before retry number `n` (0-based): `backoff × 2ⁿ`, capped at
    /// [`MAX_BACKOFF`], scaled by a random factor in [0.5, 1) ("equal jitter").
    pub fn delay(&self, n: u32) -> Duration {
        let base = self.backoff.saturating_mul(2u32.saturating_pow(n.min(20))).min(MAX_BACKOFF);
        base.mul_f64(0.5 + 0.5 * random_fraction())
    }
}

/// A number in [0, 1) from the standard library's randomly seeded hasher.
fn random_fraction() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Parses a `Retry-After` value in seconds (an HTTP date is not honoured: the
/// normal backoff applies).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| crate::config::secs(secs))
}

/// A provider with retries and a circuit breaker around its [`Attempt`].
pub struct Resilient {
    name: String,
    inner: Box<dyn Attempt>,
    policy: Policy,
    breaker: Arc<Breaker>,
}

impl Resilient {
    /// Wraps one kind's attempt.
    pub fn new(name: &str, inner: Box<dyn Attempt>, policy: Policy, breaker: Arc<Breaker>) -> Resilient {
        Resilient { name: name.to_string(), inner, policy, breaker }
    }

    async fn call(&self, req: &Request) -> Result<Reply, ProviderError> {
        let fail = |message: String, retryable: bool, cause: Cause| ProviderError::Call {
            provider: self.name.clone(),
            model: req.model.key.clone(),
            message,
            retryable,
            cause,
        };
        if let Admit::No(why) = self.breaker.admit(Utc::now()) {
            return Err(fail(why, true, Cause::Unavailable));
        }
        let tries = self.policy.max_retries + 1;
        for n in 0..tries {
            let e = match self.inner.attempt(req).await {
                Ok(reply) => {
                    self.breaker.success();
                    return Ok(reply);
                }
                Err(e) => e,
            };
            let last = n + 1 == tries;
            let wait = match e.retry {
                Retry::No => None,
                _ if last => None,
                Retry::Backoff => Some(self.policy.delay(n)),
                Retry::After(d) if d <= MAX_RETRY_AFTER => Some(d),
                Retry::After(_) => None,
            };
            let Some(wait) = wait else {
                let mut message = e.message.clone();
                if n > 0 {
                    message.push_str(&format!(" (after {} tries)", n + 1));
                }
                if let Retry::After(d) = e.retry {
                    if d > MAX_RETRY_AFTER && !last {
                        message.push_str(&format!(
                            " (the server asks to retry after {} s; lemming waits at most {} s)",
                            d.as_secs(),
                            MAX_RETRY_AFTER.as_secs()
                        ));
                    }
                }
                if e.unhealthy {
                    self.breaker.failure(Utc::now(), &e.message);
                } else {
                    self.breaker.neutral();
                }
                return Err(fail(message, e.retry != Retry::No, e.cause));
            };
            tracing::warn!(
                provider = %self.name,
                model = %req.model.key,
                agent = %req.agent,
                attempt = n + 1,
                wait_ms = wait.as_millis() as u64,
                error = %e.message,
                "call failed; retrying"
            );
            tokio::time::sleep(wait).await;
        }
        unreachable!("the loop returns on its last try")
    }
}

impl Provider for Resilient {
    fn complete<'a>(&'a self, req: &'a Request) -> BoxFuture<'a, Result<Reply, ProviderError>> {
        Box::pin(self.call(req))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;

    use super::*;
    use crate::{ModelSpec, Usage};

    struct Scripted {
        results: Mutex<Vec<Result<(), AttemptError>>>,
        calls: AtomicU32,
    }

    impl Attempt for Arc<Scripted> {
        fn attempt<'a>(&'a self, req: &'a Request) -> BoxFuture<'a, Result<Reply, AttemptError>> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                let next = self.results.lock().unwrap().remove(0);
                next.map(|_| Reply {
                    text: "{}".into(),
                    usage: Usage::default(),
                    model_key: req.model.key.clone(),
                    finish: None,
                    tool_calls: vec![],
                })
            })
        }
    }

    fn req() -> Request {
        Request {
            agent: "a".into(),
            turn: 1,
            system: String::new(),
            prompt: String::new(),
            mail: vec![],
            may_send_to: vec![],
            model: ModelSpec::new("m", "p"),
            agent_dir: None,
            stream: None,
            tools: vec![],
        }
    }

    fn provider(results: Vec<Result<(), AttemptError>>, retries: u32, k: u32) -> (Resilient, Arc<Scripted>) {
        let s = Arc::new(Scripted { results: Mutex::new(results), calls: AtomicU32::new(0) });
        let breaker = Arc::new(Breaker::new("p", k, Duration::from_secs(60), None));
        let policy = Policy { max_retries: retries, backoff: Duration::from_millis(100) };
        (Resilient::new("p", Box::new(Arc::clone(&s)), policy, breaker), s)
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_failures_and_honours_retry_after() {
        let (p, s) = provider(
            vec![
                Err(AttemptError::transient("HTTP 503")),
                Err(AttemptError {
                    retry: Retry::After(Duration::from_secs(7)),
                    ..AttemptError::transient("HTTP 429")
                }),
                Ok(()),
            ],
            2,
            5,
        );
        let t = tokio::time::Instant::now();
        p.complete(&req()).await.unwrap();
        assert_eq!(s.calls.load(Ordering::SeqCst), 3);
        let waited = t.elapsed();
        assert!(waited >= Duration::from_millis(7050) && waited < Duration::from_millis(7101), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn no_retry_on_rejected_requests_and_the_error_names_the_provider_and_model() {
        let (p, s) =
            provider(vec![Err(AttemptError::rejected("HTTP 400 Bad Request: context too long")), Ok(())], 3, 1);
        let e = p.complete(&req()).await.unwrap_err().to_string();
        assert_eq!(s.calls.load(Ordering::SeqCst), 1);
        assert!(e.contains("provider `p` (model `m`): HTTP 400 Bad Request: context too long"), "{e}");
        // A rejected request does not open the breaker, even with K = 1.
        p.complete(&req()).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_beyond_the_cap_is_not_waited_for() {
        let (p, s) = provider(
            vec![Err(AttemptError {
                retry: Retry::After(Duration::from_secs(3600)),
                ..AttemptError::transient("HTTP 429")
            })],
            3,
            5,
        );
        let e = p.complete(&req()).await.unwrap_err().to_string();
        assert_eq!(s.calls.load(Ordering::SeqCst), 1);
        assert!(e.contains("retry after 3600 s"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_breaker_counts_calls_not_tries_and_then_fails_fast() {
        let fails = (0..4).map(|_| Err(AttemptError::transient("HTTP 500"))).collect();
        let (p, s) = provider(fails, 1, 2);
        assert!(p.complete(&req()).await.is_err());
        assert!(p.complete(&req()).await.is_err());
        assert_eq!(s.calls.load(Ordering::SeqCst), 4, "two calls of two tries each");
        let e = p.complete(&req()).await.unwrap_err().to_string();
        assert_eq!(s.calls.load(Ordering::SeqCst), 4, "an open breaker makes no call");
        assert!(e.contains("circuit breaker open"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_cause_of_the_last_try_is_the_cause_of_the_call() {
        let (p, _) =
            provider(vec![Err(AttemptError::transient("HTTP 503")), Err(AttemptError::broken("not JSON"))], 1, 5);
        assert_eq!(p.complete(&req()).await.unwrap_err().cause(), Cause::Reply);
        let (p, _) = provider(vec![Err(AttemptError::rejected("HTTP 400"))], 1, 5);
        assert_eq!(p.complete(&req()).await.unwrap_err().cause(), Cause::Refused);
        let (p, _) =
            provider(vec![Err(AttemptError::transient("refused")), Err(AttemptError::transient("refused"))], 1, 1);
        assert_eq!(p.complete(&req()).await.unwrap_err().cause(), Cause::Unavailable);
        let e = p.complete(&req()).await.unwrap_err();
        assert!(e.to_string().contains("circuit breaker open") && e.cause() == Cause::Unavailable, "{e}");
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let p = Policy { max_retries: 5, backoff: Duration::from_millis(200) };
        for n in 0..4 {
            let full = Duration::from_millis(200 * 2u64.pow(n));
            let d = p.delay(n);
            assert!(d >= full / 2 && d < full, "retry {n}: {d:?}");
        }
        assert!(p.delay(30) <= MAX_BACKOFF);
        assert_eq!(parse_retry_after(" 1 "), Some(Duration::from_secs(1)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-3"), None);
    }
}
