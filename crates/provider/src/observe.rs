//! Who watches the provider calls: one process-wide [`Observer`] (the
//! metrics of `lemming run --http`) sees every call of a provider, with its
//! outcome and how long it took. With none set, observing costs a load.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Sees each provider call as it ends.
pub trait Observer: Send + Sync {
    /// A call of `provider` ended with `outcome` (`ok`, or the error's cause:
    /// `unavailable`, `refused`, `request`, `reply`, `config`) after `took`.
    fn request(&self, provider: &str, outcome: &str, took: Duration);
}

static OBSERVER: OnceLock<Arc<dyn Observer>> = OnceLock::new();

/// Sets the process's observer; `false` when one was set already (it stays).
pub fn set(observer: Arc<dyn Observer>) -> bool {
    OBSERVER.set(observer).is_ok()
}

/// Tells the observer, if any, about a call.
pub(crate) fn request(provider: &str, outcome: &str, took: Duration) {
    if let Some(o) = OBSERVER.get() {
        o.request(provider, outcome, took);
    }
}
