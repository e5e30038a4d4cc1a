//! The dashboard: one page and its vendored scripts, embedded in the binary
//! (no build step, no CDN).

use crate::Routes;

/// `GET /` and `/assets/…`.
pub fn routes() -> Routes {
    Routes::new()
}
