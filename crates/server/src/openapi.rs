//! `GET /api/openapi.json`: the API described as OpenAPI 3, kept by hand
//! beside the routes (a test checks that it lists every route the router has).

use axum::Router;

use crate::state::AppState;

/// `GET /api/openapi.json`.
pub fn routes() -> Router<AppState> {
    Router::new()
}
