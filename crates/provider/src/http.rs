//! What the HTTP kinds share: one `reqwest` client per provider (built once,
//! so connections are reused), the key from the environment, sending a JSON
//! request with a total timeout, and turning statuses and transport errors into
//! [`AttemptError`]s with a short, key-free excerpt of the body; and what
//! every wire format's parser needs: token counts and the usage of a reply.

use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::resilience::{parse_retry_after, AttemptError, Retry};
pub use crate::wire::{chain, excerpt, is_loopback, Parsed, EXCERPT_CHARS};
use crate::Cause;
use crate::ProviderSpec;

/// Builds the provider's client: connect timeout, connection pool, rustls.
pub fn client(spec: &ProviderSpec) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(crate::config::secs(spec.connect_timeout_secs.min(spec.timeout_secs)))
        .pool_idle_timeout(Duration::from_secs(90))
        .user_agent(concat!("lemming/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {}", chain(&e)))
}

/// The API key named by `api_key_env`: `Ok(None)` when the provider names none.
pub fn api_key(spec: &ProviderSpec) -> Result<Option<String>, AttemptError> {
    let Some(var) = &spec.api_key_env else { return Ok(None) };
    match std::env::var(var) {
        Ok(k) if !k.trim().is_empty() => Ok(Some(k.trim().to_string())),
        _ => Err(AttemptError::rejected(format!(
            "the environment variable {var} is not set (api_key_env of provider `{}` names it); export it before running lemming",
            spec.name
        ))),
    }
}

/// The configured extra headers, checked (validation already refused bad ones):
/// `headers` with their literal values, then `headers_env` with values read now
/// from the environment (marked sensitive). An unset or empty variable fails
/// the call with a message that names it.
pub fn extra_headers(spec: &ProviderSpec) -> Result<HeaderMap, AttemptError> {
    let mut map = HeaderMap::new();
    let name = |k: &str| {
        HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| AttemptError::rejected(format!("header name `{k}` is not valid")))
    };
    for (k, v) in &spec.headers {
        let value = HeaderValue::from_str(v)
            .map_err(|_| AttemptError::rejected(format!("header `{k}` has an invalid value")))?;
        map.insert(name(k)?, value);
    }
    for (k, var) in &spec.headers_env {
        let value = match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => v.trim().to_string(),
            _ => {
                return Err(AttemptError::rejected(format!(
                    "the environment variable {var} is not set (headers_env of provider `{}` names it for the header `{k}`); export it before running lemming",
                    spec.name
                )))
            }
        };
        let mut value = HeaderValue::from_str(&value).map_err(|_| {
            AttemptError::rejected(format!(
                "the environment variable {var} holds characters that cannot go in the header `{k}`"
            ))
        })?;
        value.set_sensitive(true);
        map.insert(name(k)?, value);
    }
    Ok(map)
}

/// The values of the `headers_env` variables that are set, to scrub from error messages.
fn header_secrets(spec: &ProviderSpec) -> Vec<String> {
    spec.headers_env
        .values()
        .filter_map(|var| std::env::var(var).ok())
        .map(|v| v.trim().to_string())
        .filter(|v| v.len() >= 4)
        .collect()
}

/// A header value that is never printed (a key).
pub fn secret(value: &str) -> Result<HeaderValue, AttemptError> {
    let mut v = HeaderValue::from_str(value)
        .map_err(|_| AttemptError::rejected("the API key holds characters that cannot go in a header"))?;
    v.set_sensitive(true);
    Ok(v)
}

/// A successful response: status and body text.
#[derive(Debug)]
pub struct Response {
    /// The HTTP status.
    pub status: u16,
    /// The body.
    pub body: String,
    /// How long the exchange took.
    pub elapsed: Duration,
}

/// Sends one request and reads the whole body within `timeout`. A non-2xx
/// status, a timeout or a transport error becomes an [`AttemptError`]:
/// 408, 429 and 5xx are retried (after `Retry-After` when sent), other 4xx are
/// not; 400, 413 and 422 blame the request (see [`Cause::Request`]).
/// `key` is scrubbed from any excerpt.
/// `limit` names the setting behind `timeout` in the error message.
pub async fn send(
    req: reqwest::RequestBuilder,
    timeout: Duration,
    limit: &str,
    url: &str,
    key: Option<&str>,
) -> Result<Response, AttemptError> {
    let started = Instant::now();
    let exchange = async {
        let resp = open(req, timeout, limit, url, key).await?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| transport(&e, url, timeout, limit))?;
        Ok((status, body))
    };
    let (status, body) = match tokio::time::timeout(timeout, exchange).await {
        Err(_) => {
            return Err(AttemptError::transient(format!(
                "no complete answer from {url} within {:.1} s ({limit})",
                timeout.as_secs_f64()
            )))
        }
        Ok(r) => r?,
    };
    Ok(Response { status: status.as_u16(), body, elapsed: started.elapsed() })
}

/// Sends one request and waits for the head of a successful response (its
/// body still to read); any other status becomes an [`AttemptError`], as
/// [`send`] says. The caller bounds the time.
async fn open(
    req: reqwest::RequestBuilder,
    timeout: Duration,
    limit: &str,
    url: &str,
    key: Option<&str>,
) -> Result<reqwest::Response, AttemptError> {
    let resp = req.send().await.map_err(|e| transport(&e, url, timeout, limit))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
    let body = resp.text().await.map_err(|e| transport(&e, url, timeout, limit))?;
    let message = format!("HTTP {status} from {url}: {}", excerpt(&body, key));
    let code = status.as_u16();
    Err(if code == 429 || code == 408 || status.is_server_error() {
        AttemptError {
            retry: retry_after.map(Retry::After).unwrap_or(Retry::Backoff),
            ..AttemptError::transient(message)
        }
    } else if matches!(code, 400 | 413 | 422) {
        AttemptError { cause: Cause::Request, ..AttemptError::rejected(message) }
    } else {
        AttemptError::rejected(message)
    })
}

/// A transport error: connection refused, a timeout, a broken body.
fn transport(e: &reqwest::Error, url: &str, timeout: Duration, limit: &str) -> AttemptError {
    if e.is_timeout() {
        AttemptError::transient(format!("no answer from {url} within {:.1} s ({limit})", timeout.as_secs_f64()))
    } else if e.is_connect() {
        AttemptError::transient(format!("cannot connect to {url}: {}", root_cause(e)))
    } else if e.is_builder() {
        AttemptError::rejected(format!("cannot build a request for {url}: {}", root_cause(e)))
    } else {
        AttemptError::transient(format!("request to {url} failed: {}", chain(e)))
    }
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur: &dyn std::error::Error = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Joins a base URL and a path with exactly one `/`.
pub fn join(base: &str, path: &str) -> String {
    format!("{}/{}", base.trim_end_matches('/'), path.trim_start_matches('/'))
}

/// A native call's arguments from the JSON text a server sent: the parsed
/// value, `{}` for an empty text (a call with no arguments), else the raw text
/// as a string (the engine then answers that the arguments must be an object).
pub fn call_args(text: &str) -> serde_json::Value {
    if text.trim().is_empty() {
        return serde_json::json!({});
    }
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_string()))
}

/// The text a reply's usage is estimated from when the server reports none:
/// its text and its native calls.
pub(crate) fn counted_text(text: &str, calls: &[crate::NativeCall]) -> String {
    let mut all = text.to_string();
    for c in calls {
        all.push_str(&c.id);
        all.push_str(&c.name);
        all.push_str(&c.args.to_string());
    }
    all
}

/// The wire format of one HTTP kind: its headers, request body and parser.
pub struct Wire {
    /// The request headers (with the key).
    pub headers: fn(&ProviderSpec, Option<&str>) -> Result<reqwest::header::HeaderMap, AttemptError>,
    /// The JSON body for a request.
    pub body: fn(&crate::Request) -> serde_json::Value,
    /// Reply text, usage, stop reason and native tool calls from a response body.
    pub parse: fn(&str, &crate::Request, Option<&str>) -> Result<Parsed, AttemptError>,
    /// The reader of a streamed response's events (`stream = true`).
    pub stream: fn(&crate::Request, Option<&str>) -> Box<dyn crate::stream::Assembler>,
}

/// One try of an HTTP kind: POST the request as JSON to `url`, read the whole
/// reply within `timeout_secs`, parse it, and log what it cost.
pub async fn attempt(
    client: &reqwest::Client,
    spec: &ProviderSpec,
    url: &str,
    wire: &Wire,
    req: &crate::Request,
) -> Result<crate::Reply, AttemptError> {
    let key = api_key(spec)?;
    let timeout = crate::config::secs(spec.timeout_secs);
    let builder = client.post(url).headers((wire.headers)(spec, key.as_deref())?).json(&(wire.body)(req));
    // Values of `headers_env` are secrets too: a server that echoes them must not put them in a message.
    let scrub = |mut e: AttemptError| {
        for s in header_secrets(spec) {
            e.message = e.message.replace(&s, "[redacted]");
        }
        e
    };
    let started = Instant::now();
    let (parsed, status) = if req.model.stream {
        let src = crate::stream::Source { url, key: key.as_deref(), timeout, started };
        let opened = tokio::time::timeout(timeout, open(builder, timeout, "timeout_secs", url, key.as_deref())).await;
        let resp = match opened {
            Err(_) => Err(AttemptError::transient(format!(
                "no answer from {url} within {:.1} s (timeout_secs)",
                timeout.as_secs_f64()
            ))),
            Ok(r) => r,
        }
        .map_err(scrub)?;
        let status = resp.status().as_u16();
        let asm = (wire.stream)(req, key.as_deref());
        (crate::stream::read(resp, asm, wire.parse, req, &src).await.map_err(scrub)?, status)
    } else {
        let resp = send(builder, timeout, "timeout_secs", url, key.as_deref()).await.map_err(scrub)?;
        ((wire.parse)(&resp.body, req, key.as_deref()).map_err(scrub)?, resp.status)
    };
    let Parsed { text, usage, finish, tool_calls } = parsed;
    note_finish(&spec.name, req, &text, &finish, tool_calls.len());
    tracing::debug!(provider = %spec.name, model = %req.model.key, agent = %req.agent, status, ms = started.elapsed().as_millis() as u64, stream = req.model.stream, input = usage.input_tokens, output = usage.output_tokens, calls = tool_calls.len(), "answered");
    let finish = Some(finish).filter(|s| !s.is_empty());
    Ok(crate::Reply { text, usage, model_key: req.model.key.clone(), finish, tool_calls })
}

/// Logs what is odd about a reply that still counts as an answer (a reply
/// with native tool calls and no text is not odd).
fn note_finish(provider: &str, req: &crate::Request, text: &str, finish: &str, calls: usize) {
    if req.turn == 0 {
        return; // a probe (`lemming doctor`), not an agent's run
    }
    if crate::Reply::TRUNCATED.contains(&finish) {
        tracing::warn!(provider, model = %req.model.key, agent = %req.agent, finish, "the reply was cut at max_tokens; it is unusable unless its JSON object closed");
    }
    if text.trim().is_empty() && calls == 0 {
        tracing::warn!(provider, model = %req.model.key, agent = %req.agent, finish, "the model returned no text");
    }
}

/// A token count that may be an integer, a float or missing.
pub(crate) fn tokens(v: &serde_json::Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_f64().filter(|f| f.is_finite() && *f >= 0.0).map(|f| f.round() as u64))
}

/// Usage from the counts the server reported; what is missing is estimated and marked.
pub(crate) fn usage(input: Option<u64>, output: Option<u64>, req: &crate::Request, text: &str) -> crate::Usage {
    let guess = crate::Usage::estimate(req.prompt_chars(), text.chars().count());
    crate::Usage {
        input_tokens: input.unwrap_or(guess.input_tokens),
        output_tokens: output.unwrap_or(guess.output_tokens),
        estimated: input.is_none() || output.is_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_short_single_line_and_key_free() {
        let body = format!("{{\"error\":\n  \"bad key sk-secret-123 given\"}}{}", "x".repeat(1000));
        let e = excerpt(&body, Some("sk-secret-123"));
        assert!(!e.contains("sk-secret-123") && e.contains("[redacted]"), "{e}");
        assert!(!e.contains('\n'));
        assert_eq!(e.chars().count(), EXCERPT_CHARS + 1);
        assert_eq!(excerpt("  ", None), "(empty body)");
    }

    #[test]
    fn headers_env_are_read_at_call_time_and_name_a_missing_variable() {
        let mut spec = ProviderSpec::new("gw", crate::ProviderKind::OpenAi);
        spec.headers_env.insert("x-api-key".into(), "LEMMING_HTTP_TEST_HEADER_VAR".into());
        std::env::remove_var("LEMMING_HTTP_TEST_HEADER_VAR");
        let e = extra_headers(&spec).unwrap_err();
        assert!(
            e.message.contains("LEMMING_HTTP_TEST_HEADER_VAR is not set") && e.message.contains("x-api-key"),
            "{e:?}"
        );
        std::env::set_var("LEMMING_HTTP_TEST_HEADER_VAR", "v-123");
        let h = extra_headers(&spec).unwrap();
        assert_eq!(h["x-api-key"], "v-123");
        assert!(h["x-api-key"].is_sensitive());
    }

    #[test]
    fn call_args_are_parsed_and_kept_raw_when_not_json() {
        use serde_json::json;
        assert_eq!(call_args(r#"{"path":"a.md"}"#), json!({"path": "a.md"}));
        assert_eq!(call_args("  "), json!({}), "no arguments");
        assert_eq!(call_args("[1]"), json!([1]), "valid JSON is kept as it is, object or not");
        assert_eq!(call_args(r#"{"path": "a.md""#), json!(r#"{"path": "a.md""#), "cut JSON stays raw text");
    }

    #[test]
    fn joins_and_recognises_loopback() {
        assert_eq!(join("http://h/v1/", "/chat/completions"), "http://h/v1/chat/completions");
        assert!(is_loopback("http://127.0.0.1:8080/v1"));
        assert!(is_loopback("http://localhost:11434/v1"));
        assert!(is_loopback("http://[::1]:1/"));
        assert!(!is_loopback("https://api.openai.com/v1"));
    }
}
