//! The `anthropic` kind: the Messages API.
//!
//! One request per try: `POST {base_url}/v1/messages` (default base URL
//! `https://api.anthropic.com`; a base URL that already ends in `/v1` gets
//! `/messages`), with the key in `x-api-key`, the `anthropic-version` header,
//! the system part of the prompt as the `system` field and the user part as
//! the one user message. `max_tokens` is required by the API: 1024 when the
//! model sets none.
//!
//! The reply text is the concatenation of the `text` blocks of `content`
//! (other blocks, such as `tool_use`, are skipped). Input tokens are
//! `input_tokens` plus any `cache_creation_input_tokens` and
//! `cache_read_input_tokens` (Anthropic counts cached prompt tokens apart),
//! output tokens are `output_tokens`; when usage is missing it is estimated.

use serde_json::{json, Value};

use crate::http::{self, excerpt, tokens, usage};
use crate::resilience::{Attempt, AttemptError};
use crate::{BoxFuture, ProviderSpec, Reply, Request, Usage};

/// `max_tokens` when the model key sets none (the API requires one).
pub const DEFAULT_MAX_TOKENS: u32 = 1024;

/// The `anthropic` kind.
pub struct Anthropic {
    spec: ProviderSpec,
    client: reqwest::Client,
}

impl Anthropic {
    /// A provider that sends every request through `client` (shared, built once).
    pub fn new(spec: ProviderSpec, client: reqwest::Client) -> Anthropic {
        Anthropic { spec, client }
    }
}

/// `{base}/v1/{path}`, accepting a base URL with or without `/v1`.
pub fn url(spec: &ProviderSpec, path: &str) -> String {
    let base = spec.base_url.as_deref().unwrap_or(ProviderSpec::DEFAULT_ANTHROPIC_URL).trim_end_matches('/');
    if base.ends_with("/v1") {
        http::join(base, path)
    } else {
        http::join(base, &format!("v1/{path}"))
    }
}

/// The request headers: `x-api-key`, `anthropic-version`, then the configured extras.
pub fn headers(spec: &ProviderSpec, key: Option<&str>) -> Result<reqwest::header::HeaderMap, AttemptError> {
    let mut map = reqwest::header::HeaderMap::new();
    if let Some(k) = key {
        map.insert("x-api-key", http::secret(k)?);
    }
    let version = reqwest::header::HeaderValue::from_str(&spec.anthropic_version)
        .map_err(|_| AttemptError::rejected("anthropic_version is not a valid header value"))?;
    map.insert("anthropic-version", version);
    map.extend(http::extra_headers(spec)?);
    Ok(map)
}

/// The JSON body of the request.
pub fn request_body(req: &Request) -> Value {
    let m = &req.model;
    let mut body = json!({
        "model": m.wire_name(),
        "max_tokens": m.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        "system": req.system,
        "messages": [{"role": "user", "content": req.prompt}],
    });
    if let Some(t) = m.temperature {
        body["temperature"] = json!(t);
    }
    body
}

/// Reads a Messages API response: the reply text, its usage and the stop reason.
pub fn parse_response(body: &str, req: &Request, key: Option<&str>) -> Result<(String, Usage, String), AttemptError> {
    let v: Value = serde_json::from_str(body)
        .map_err(|e| AttemptError::broken(format!("the response is not JSON ({e}): {}", excerpt(body, key))))?;
    if v.get("type").and_then(Value::as_str) == Some("error") || v.get("error").is_some_and(|e| !e.is_null()) {
        let err = &v["error"];
        let msg = err.get("message").and_then(Value::as_str).map(String::from).unwrap_or_else(|| err.to_string());
        return Err(AttemptError::down(format!("the server answered with an error: {}", excerpt(&msg, key))));
    }
    let Some(blocks) = v.get("content").and_then(Value::as_array) else {
        return Err(AttemptError::broken(format!(
            "the response has no `content` list (is base_url a Messages API?): {}",
            excerpt(body, key)
        )));
    };
    let text: String = blocks
        .iter()
        .filter(|b| b.get("type").and_then(Value::as_str).is_none_or(|t| t == "text"))
        .filter_map(|b| b.get("text").and_then(Value::as_str))
        .collect();
    let stop = v.get("stop_reason").and_then(Value::as_str).unwrap_or_default().to_string();
    let u = v.get("usage");
    let count = |k: &str| u.and_then(|u| u.get(k)).and_then(tokens);
    let input = count("input_tokens").map(|i| {
        i.saturating_add(count("cache_creation_input_tokens").unwrap_or(0))
            .saturating_add(count("cache_read_input_tokens").unwrap_or(0))
    });
    let usage = usage(input, count("output_tokens"), req, &text);
    Ok((text, usage, stop))
}

impl Attempt for Anthropic {
    fn attempt<'a>(&'a self, req: &'a Request) -> BoxFuture<'a, Result<Reply, AttemptError>> {
        const WIRE: http::Wire = http::Wire { headers, body: request_body, parse: parse_response };
        Box::pin(async move { http::attempt(&self.client, &self.spec, &url(&self.spec, "messages"), &WIRE, req).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ModelSpec, ProviderKind};

    fn req() -> Request {
        Request {
            agent: "manager".into(),
            turn: 1,
            system: "You are terse.".into(),
            prompt: "Say hello.".into(),
            mail: vec![],
            may_send_to: vec![],
            model: ModelSpec { model: Some("claude-x".into()), temperature: Some(0.0), ..ModelSpec::new("c", "a") },
            agent_dir: None,
            tools: vec![],
        }
    }

    #[test]
    fn body_headers_and_url() {
        let b = request_body(&req());
        assert_eq!(b["system"], "You are terse.");
        assert_eq!(b["messages"], json!([{"role": "user", "content": "Say hello."}]));
        assert_eq!(b["max_tokens"], DEFAULT_MAX_TOKENS);
        assert_eq!(b["temperature"], 0.0);
        let mut spec = ProviderSpec::new("a", ProviderKind::Anthropic);
        assert_eq!(url(&spec, "messages"), "https://api.anthropic.com/v1/messages");
        spec.base_url = Some("http://127.0.0.1:9/v1/".into());
        assert_eq!(url(&spec, "messages"), "http://127.0.0.1:9/v1/messages");
        let h = headers(&spec, Some("k")).unwrap();
        assert_eq!(h["x-api-key"], "k");
        assert_eq!(h["anthropic-version"], "2023-06-01");
    }

    #[test]
    fn parses_text_blocks_cached_usage_and_odd_shapes() {
        let r = req();
        let body = r#"{"id":"chatcmpl-1","type":"message","content":[{"type":"text","text":"[echo]"},{"type":"tool_use","id":"t","name":"f","input":{}},{"type":"text","text":"{}"}],"stop_reason":"end_turn","usage":{"cache_read_input_tokens":39,"input_tokens":5,"output_tokens":20}}"#;
        let (text, usage, stop) = parse_response(body, &r, None).unwrap();
        assert_eq!(text, "[echo]{}");
        assert_eq!(usage, Usage { input_tokens: 44, output_tokens: 20, estimated: false });
        assert_eq!(stop, "end_turn");
        let (text, usage, _) = parse_response(r#"{"content":[]}"#, &r, None).unwrap();
        assert_eq!(text, "");
        assert!(usage.estimated);
        let e =
            parse_response(r#"{"type":"error","error":{"type":"overloaded","message":"busy"}}"#, &r, None).unwrap_err();
        assert!(e.message.contains("busy"), "{e:?}");
        let e = parse_response(r#"{"choices":[]}"#, &r, None).unwrap_err();
        assert!(e.message.contains("no `content`"), "{e:?}");
    }
}
