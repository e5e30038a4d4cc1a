//! `lemming models --remote`: what each configured HTTP provider's server
//! serves, asked the way `doctor` asks it (the provider's key and headers).
//!
//! - `openai` kind: `GET {base_url}/models` (OpenAI's list: `data[].id`).
//!   When that fails and the server is on this machine or on Ollama's port
//!   (11434), Ollama's own `GET /api/tags` at the host's root is tried too:
//!   older Ollamas and some proxies serve only that one.
//! - `anthropic` kind: `GET /v1/models` (`data[].id`).
//!
//! Every provider is asked at once, each within the same deadline. What a
//! server sends is untrusted: at most [`MAX_BODY_BYTES`] of it are read, at
//! most [`MAX_IDS`] ids of at most [`MAX_ID_CHARS`] characters are kept, and
//! the caller escapes them before printing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::http;
use crate::{ProviderKind, ProviderSpec, Registry};

/// The most bytes of a list read from a server (OpenRouter's full list with
/// descriptions is a few MB; a longer answer is cut and said so).
pub const MAX_BODY_BYTES: usize = 8 << 20;
/// The most model ids kept from one list.
pub const MAX_IDS: usize = 2000;
/// The longest id kept, in characters (longer ones are cut, marked with `…`).
pub const MAX_ID_CHARS: usize = 200;

/// What one provider's server said it serves.
#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    /// The provider name.
    pub provider: String,
    /// Its kind.
    pub kind: String,
    /// The URL that answered with the list (or the last one tried).
    pub url: String,
    /// The ids it serves, in its order (empty on failure).
    pub models: Vec<String>,
    /// Whether the list was cut at [`MAX_IDS`] or [`MAX_BODY_BYTES`].
    pub truncated: bool,
    /// Why it could not be listed (`None` when it was).
    pub error: Option<String>,
    /// How long it took.
    pub elapsed_ms: u64,
}

/// Lists every HTTP provider's models concurrently, each within `deadline`,
/// in provider name order. Other kinds serve no list and are left out.
pub async fn list_all(registry: &Registry, deadline: Duration) -> Vec<Listing> {
    let registry = Arc::new(registry.clone());
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (name, spec)) in registry.specs().iter().enumerate() {
        if !matches!(spec.kind, ProviderKind::OpenAi | ProviderKind::Anthropic) {
            continue;
        }
        let (registry, name) = (Arc::clone(&registry), name.clone());
        tasks.spawn(async move { (i, list(&registry, &name, deadline).await) });
    }
    let mut out = Vec::new();
    while let Some(Ok(v)) = tasks.join_next().await {
        out.push(v);
    }
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, v)| v).collect()
}

/// Lists one provider's models within `deadline`.
pub async fn list(registry: &Registry, name: &str, deadline: Duration) -> Listing {
    let started = Instant::now();
    let spec = registry.specs().get(name).cloned().unwrap_or_else(|| ProviderSpec::new(name, ProviderKind::Mock));
    let mut out = Listing {
        provider: name.to_string(),
        kind: spec.kind.name().to_string(),
        url: String::new(),
        models: vec![],
        truncated: false,
        error: None,
        elapsed_ms: 0,
    };
    let work = ask(registry, &spec, &mut out);
    if tokio::time::timeout(deadline, work).await.is_err() {
        out.error = Some(format!("no answer from {} within {} ms", out.url, deadline.as_millis()));
    }
    out.elapsed_ms = started.elapsed().as_millis() as u64;
    out
}

async fn ask(registry: &Registry, spec: &ProviderSpec, out: &mut Listing) {
    let Some(client) = registry.client(&spec.name).cloned() else {
        out.error = Some("the HTTP client could not be built".into());
        return;
    };
    let key = match http::api_key(spec) {
        Ok(k) => k,
        Err(e) => {
            out.error = Some(e.message);
            return;
        }
    };
    let openai = spec.kind == ProviderKind::OpenAi;
    let (url, headers) = models_request(spec, key.as_deref());
    let headers = match headers {
        Ok(h) => h,
        Err(e) => {
            out.error = Some(e.message);
            return;
        }
    };
    out.url = url.clone();
    let first = get_list(client.get(&url).headers(headers.clone()), &url, key.as_deref()).await;
    let err = match first {
        Ok(l) => return out.fill(l),
        Err(e) => e,
    };
    let tags = openai.then(|| spec.base_url.as_deref().and_then(ollama_tags_url)).flatten();
    if let Some(tags) = tags {
        out.url = tags.clone();
        match get_list(client.get(&tags).headers(headers), &tags, key.as_deref()).await {
            Ok(l) => return out.fill(l),
            Err(e2) => {
                out.url = url;
                out.error = Some(format!("{err}; {e2}"));
                return;
            }
        }
    }
    out.error = Some(err);
}

impl Listing {
    fn fill(&mut self, l: List) {
        self.models = l.ids;
        self.truncated = l.truncated;
    }
}

/// Ollama's `/api/tags` at the root of `base_url`, when it is worth asking:
/// the server is on this machine or on Ollama's port.
pub fn ollama_tags_url(base_url: &str) -> Option<String> {
    let u = reqwest::Url::parse(base_url).ok()?;
    if !(http::is_loopback(base_url) || u.port_or_known_default() == Some(11434)) {
        return None;
    }
    let mut root = u.clone();
    root.set_path("/api/tags");
    root.set_query(None);
    Some(root.to_string())
}

/// A list of ids as read.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct List {
    /// The ids.
    pub ids: Vec<String>,
    /// Whether it was cut.
    pub truncated: bool,
    /// The answer, parsed (for a caller that looks at more than ids).
    pub json: Value,
}

/// Sends `req` and reads at most [`MAX_BODY_BYTES`] of a 2xx answer, parsed
/// as a model list. The caller bounds it in time. `key` is scrubbed from errors.
pub async fn get_list(req: reqwest::RequestBuilder, url: &str, key: Option<&str>) -> Result<List, String> {
    let (status, body, cut) = get_capped(req, url).await?;
    if !(200..300).contains(&status) {
        return Err(format!("HTTP {status} from {url}: {}", http::excerpt(&String::from_utf8_lossy(&body), key)));
    }
    if cut {
        // A cut JSON document does not parse: say why instead.
        return Err(format!("the answer of {url} is longer than {} MB; not read", MAX_BODY_BYTES >> 20));
    }
    parse_list(&body).map_err(|e| format!("{url} answered {e}"))
}

/// Sends `req` and reads the status and at most [`MAX_BODY_BYTES`] of the body
/// (and whether there was more).
pub async fn get_capped(req: reqwest::RequestBuilder, url: &str) -> Result<(u16, Vec<u8>, bool), String> {
    let mut resp = req.send().await.map_err(|e| {
        if e.is_connect() {
            format!("cannot connect to {url}")
        } else {
            format!("request to {url} failed: {}", http::chain(&e))
        }
    })?;
    let status = resp.status().as_u16();
    let mut body = Vec::new();
    while let Some(chunk) =
        resp.chunk().await.map_err(|e| format!("reading the answer of {url}: {}", http::chain(&e)))?
    {
        let room = MAX_BODY_BYTES - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((status, body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, body, false))
}

/// The ids of a model list: OpenAI's and Anthropic's `{"data": [{"id"}]}`, or
/// Ollama's `{"models": [{"name"}]}` (`model` when there is no `name`).
pub fn parse_list(body: &[u8]) -> Result<List, String> {
    let json: Value = serde_json::from_slice(body).map_err(|e| format!("something that is not JSON ({e})"))?;
    let entries = match (json.get("data").and_then(Value::as_array), json.get("models").and_then(Value::as_array)) {
        (Some(d), _) => d.iter().map(|m| m.get("id")).collect::<Vec<_>>(),
        (None, Some(m)) => m.iter().map(|m| m.get("name").or_else(|| m.get("model"))).collect(),
        (None, None) => return Err("JSON with neither `data` nor `models` (not a model list)".into()),
    };
    let mut out = List { truncated: entries.len() > MAX_IDS, ..List::default() };
    for id in entries.into_iter().take(MAX_IDS).flatten().filter_map(Value::as_str) {
        let mut kept: String = id.chars().take(MAX_ID_CHARS).collect();
        if kept.len() < id.len() {
            kept.push('…');
        }
        out.ids.push(kept);
    }
    out.json = json;
    Ok(out)
}

/// Where an HTTP provider lists its models, and the headers (with the key)
/// to ask with: `GET {base_url}/models` for `openai`, `/v1/models` for `anthropic`.
pub fn models_request(
    spec: &ProviderSpec,
    key: Option<&str>,
) -> (String, Result<reqwest::header::HeaderMap, crate::resilience::AttemptError>) {
    if spec.kind == ProviderKind::OpenAi {
        (crate::openai::models_url(spec), crate::openai::headers(spec, key))
    } else {
        (crate::anthropic::url(spec, "models"), crate::anthropic::headers(spec, key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_of_each_shape_parse_and_are_bounded() {
        let l = parse_list(br#"{"object":"list","data":[{"id":"gpt-4o"},{"id":"o3"},{"x":1}]}"#).unwrap();
        assert_eq!(l.ids, ["gpt-4o", "o3"]);
        let l = parse_list(br#"{"models":[{"name":"llama3.2:latest","model":"llama3.2:latest"},{"model":"qwen"}]}"#)
            .unwrap();
        assert_eq!(l.ids, ["llama3.2:latest", "qwen"]);
        assert!(parse_list(b"<html>").unwrap_err().contains("not JSON"));
        assert!(parse_list(b"{\"error\":1}").unwrap_err().contains("not a model list"));
        let many: Vec<Value> = (0..MAX_IDS + 5).map(|i| serde_json::json!({ "id": format!("m{i}") })).collect();
        let l = parse_list(serde_json::json!({ "data": many }).to_string().as_bytes()).unwrap();
        assert_eq!((l.ids.len(), l.truncated), (MAX_IDS, true));
        let long = "x".repeat(MAX_ID_CHARS * 3);
        let l = parse_list(serde_json::json!({ "data": [{ "id": long }] }).to_string().as_bytes()).unwrap();
        assert_eq!(l.ids[0].chars().count(), MAX_ID_CHARS + 1);
    }

    #[test]
    fn ollama_tags_are_asked_only_of_local_servers_or_its_port() {
        assert_eq!(ollama_tags_url("http://127.0.0.1:11434/v1").as_deref(), Some("http://127.0.0.1:11434/api/tags"));
        assert_eq!(ollama_tags_url("http://localhost:9000/x/v1/").as_deref(), Some("http://localhost:9000/api/tags"));
        assert_eq!(ollama_tags_url("http://gpu-box:11434/v1").as_deref(), Some("http://gpu-box:11434/api/tags"));
        assert_eq!(ollama_tags_url("https://api.openai.com/v1"), None);
    }
}
