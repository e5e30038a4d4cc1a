//! `GET /api/openapi.json`: the API described as OpenAPI 3, kept by hand
//! beside the routes (a test checks that it lists every route the router has).

use crate::Routes;

/// `GET /api/openapi.json`.
pub fn routes() -> Routes {
    Routes::new()
}
