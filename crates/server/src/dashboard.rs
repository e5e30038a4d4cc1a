//! The dashboard: one page and its vendored scripts, embedded in the binary
//! (no build step, no CDN).

use axum::Router;

use crate::state::AppState;

/// `GET /` and `/assets/…`.
pub fn routes() -> Router<AppState> {
    Router::new()
}
