//! The API's token: `LEMMING_API_TOKEN`, else one generated into
//! `org/state/api-token` (mode 0600). A request carries it as
//! `Authorization: Bearer TOKEN` or in the dashboard's cookie, which a
//! one-time login link (`/login?code=…`, printed at start) sets.

use crate::Routes;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::error::ApiError;
use crate::state::AppState;

/// The name of the dashboard's cookie.
pub const COOKIE: &str = "lemming_token";

/// The token in `org/state/api-token`, created (mode 0600) when missing.
pub fn load_or_create_token(_layout: &lemming_engine::org::Layout) -> Result<String, lemming_engine::error::PathError> {
    Ok(String::new())
}

/// One-time login codes.
#[derive(Debug, Default)]
pub struct Logins {}

impl Logins {
    /// A new code, good for one login.
    pub fn issue(&self) -> String {
        String::new()
    }
}

/// Lets a request through when it carries the token (header or cookie); else 401.
pub async fn require(State(_s): State<AppState>, req: Request, next: Next) -> Result<Response, ApiError> {
    Ok(next.run(req).await)
}

/// `GET /login?code=…`.
pub fn routes() -> Routes {
    Routes::new()
}
