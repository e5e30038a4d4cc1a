//! Errors as the API answers them: `{"error":{"code","message"}}` with the
//! right status, plus `details` where there is more to say (the diagnostics of
//! a refused resume, the known agents of an unknown name).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable code (`not_found`, `unauthorized`, `invalid`, …).
    pub code: &'static str,
    /// What was wrong and what to do, for people.
    pub message: String,
    /// More, machine-readable.
    pub details: Option<Value>,
    /// Seconds to wait before trying again (429).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a status, a code and a message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), details: None, retry_after: None }
    }

    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 401: no token, or a wrong one.
    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a token is needed: send `Authorization: Bearer TOKEN` (the token is LEMMING_API_TOKEN, or the one in org/state/api-token), or open the login link the server printed",
        )
    }

    /// 404: no such thing.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 413: the body is larger than the server takes.
    pub fn too_large() -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body is larger than {} bytes, the most this server takes", crate::MAX_BODY),
        )
    }

    /// 422: the content is not valid; `details` says where.
    pub fn invalid(message: impl Into<String>, details: Value) -> ApiError {
        ApiError { details: Some(details), ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message) }
    }

    /// 429: too many writes; try again after `secs`.
    pub fn too_many(secs: u64) -> ApiError {
        ApiError {
            retry_after: Some(secs),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many writes from this client; try again in {secs} s"),
            )
        }
    }

    /// 500: the org's files could not be used.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// 503: not ready.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// The body, as sent.
    pub fn body(&self) -> Value {
        let mut e = json!({ "code": self.code, "message": self.message });
        if let Some(d) = &self.details {
            e["details"] = d.clone();
        }
        json!({ "error": e })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(self.body())).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

impl From<lemming_engine::error::PathError> for ApiError {
    fn from(e: lemming_engine::error::PathError) -> ApiError {
        ApiError::internal(e.to_string())
    }
}

/// Puts the answers that middleware gives in its own words (the body limit's
/// 413, a route's 405) into the API's error shape.
pub async fn shape(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let method = req.method().clone();
    let r = next.run(req).await;
    let ours = r.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    match r.status() {
        StatusCode::PAYLOAD_TOO_LARGE if !ours => ApiError::too_large().into_response(),
        StatusCode::METHOD_NOT_ALLOWED if !ours => {
            let allow = r.headers().get(header::ALLOW).cloned();
            let mut e = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{method} is not served here; GET /api/openapi.json lists each route's methods"),
            )
            .into_response();
            if let Some(a) = allow {
                e.headers_mut().insert(header::ALLOW, a);
            }
            e
        }
        _ => r,
    }
}

/// The answer to a path no route serves.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route for `{}`; GET /api/openapi.json lists them", uri.path()))
}
