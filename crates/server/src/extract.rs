//! The extractors every route uses, so that no request is answered in
//! another shape than `{"error":{"code","message"}}`: path segments, query
//! strings and JSON bodies that do not parse are 400s saying what was
//! expected, and a body over the limit is a 413.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A path parameter, its rejection in the API's error shape.
pub struct PathParam<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParam<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| PathParam(p.0))
            .map_err(|r| ApiError::bad_request(format!("bad path: {}", r.body_text())))
    }
}

/// A query string, its rejection in the API's error shape.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state).await.map(|q| QueryParams(q.0)).map_err(|r| {
            ApiError::bad_request(format!(
                "bad query string: {}; GET /api/openapi.json lists each route's parameters",
                r.body_text()
            ))
        })
    }
}

/// A request body's bytes, at most [`crate::MAX_BODY`] (413 beyond).
pub struct RawBody(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        axum::body::Bytes::from_request(req, state).await.map(RawBody).map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large()
            } else {
                ApiError::bad_request(format!("cannot read the body: {}", r.body_text()))
            }
        })
    }
}

/// A JSON body (whatever its `Content-Type`), its problems in the API's
/// error shape: 400 naming what is wrong, 413 when too large.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            ApiError::bad_request(format!(
                "the body is not the JSON this route takes: {e}; GET /api/openapi.json shows each body"
            ))
        })
    }
}
