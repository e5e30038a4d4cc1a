//! `lemming doctor --detect`: finds model servers on this machine.
//!
//! Each port of 127.0.0.1 is probed at once (the usual ones, [`USUAL`], and
//! any the caller adds), and every probe shares one deadline, so the whole
//! search takes at most that long however many ports there are, even when a
//! port accepts connections and never answers. On each port three questions
//! go out together, and the answers say what the server is:
//!
//! - `GET /props` answering with llama.cpp's settings (`default_generation_settings`,
//!   `build_info` or `model_path`): llama.cpp's `llama-server` (llamafile is one);
//! - `GET /api/version` answering `{"version": …}`: Ollama (its models from `/api/tags`);
//! - otherwise `GET /v1/models` answering a model list: an OpenAI-compatible
//!   server (vLLM when its models say `owned_by: vllm`, LM Studio when on its port).
//!
//! For each one found it writes the tables to add to `org/models.toml` and
//! the command that switches the org's agents to it. Ids come from the
//! server: they are quoted as TOML strings here and escaped by the printer.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::remote::{get_capped, parse_list};

/// The usual ports of local model servers, with the provider name used for what answers there.
pub const USUAL: [(u16, &str); 4] = [(11434, "ollama"), (1234, "lmstudio"), (8080, "llamacpp"), (8000, "vllm")];

/// A server found.
#[derive(Debug, Clone, Serialize)]
pub struct Found {
    /// The port on 127.0.0.1.
    pub port: u16,
    /// What it is: `ollama`, `llama.cpp`, `vllm`, `lm studio` or `openai-compatible`.
    pub server: String,
    /// The base URL to configure (`http://127.0.0.1:PORT/v1`).
    pub base_url: String,
    /// The models it serves (at most [`crate::remote::MAX_IDS`]).
    pub models: Vec<String>,
    /// The provider name and model key the suggestion uses.
    pub name: String,
    /// The tables to add to `org/models.toml`.
    pub toml: String,
    /// The command that switches every agent to it.
    pub command: String,
}

/// A port where nothing was found, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Missed {
    /// The port.
    pub port: u16,
    /// `nothing listens`, `no answer within N ms`, or what answered instead.
    pub why: String,
}

/// What the search found.
#[derive(Debug, Clone, Serialize)]
pub struct Detection {
    /// The servers found, in the order of the ports asked.
    pub found: Vec<Found>,
    /// The ports where none was.
    pub missed: Vec<Missed>,
    /// How long the whole search took.
    pub elapsed_ms: u64,
    /// The deadline it had.
    pub deadline_ms: u64,
}

/// The ports to probe: the usual ones, then `extra` (each once, in order).
pub fn ports(extra: &[u16]) -> Vec<u16> {
    let mut out: Vec<u16> = USUAL.iter().map(|(p, _)| *p).collect();
    for p in extra {
        if !out.contains(p) {
            out.push(*p);
        }
    }
    out
}

/// Probes every port of 127.0.0.1 in `ports` at once, all within `deadline`.
/// `taken` are the provider names and model keys already in use: a suggested
/// name that is taken gets a suffix.
pub async fn detect(ports: &[u16], deadline: Duration, taken: &[String]) -> Detection {
    let started = Instant::now();
    let client = match reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(deadline)
        .user_agent(concat!("lemming/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            let why = format!("cannot build the HTTP client: {}", crate::http::chain(&e));
            let missed = ports.iter().map(|&port| Missed { port, why: why.clone() }).collect();
            return Detection { found: vec![], missed, elapsed_ms: 0, deadline_ms: deadline.as_millis() as u64 };
        }
    };
    let mut tasks = tokio::task::JoinSet::new();
    for (i, &port) in ports.iter().enumerate() {
        let client = client.clone();
        tasks.spawn(async move {
            let probe = tokio::time::timeout(deadline, probe(&client, port)).await;
            (i, port, probe.unwrap_or_else(|_| Err(format!("no answer within {} ms", deadline.as_millis()))))
        });
    }
    let mut results = Vec::new();
    while let Some(Ok(r)) = tasks.join_next().await {
        results.push(r);
    }
    results.sort_by_key(|(i, _, _)| *i);
    let mut taken: Vec<String> = taken.to_vec();
    let (mut found, mut missed) = (Vec::new(), Vec::new());
    for (_, port, r) in results {
        match r {
            Ok((server, models)) => {
                let f = suggest(port, &server, models, &taken);
                taken.push(f.name.clone());
                found.push(f);
            }
            Err(why) => missed.push(Missed { port, why }),
        }
    }
    Detection {
        found,
        missed,
        elapsed_ms: started.elapsed().as_millis() as u64,
        deadline_ms: deadline.as_millis() as u64,
    }
}

/// A GET's status and parsed JSON body (`Null` when not JSON).
async fn get(client: &reqwest::Client, port: u16, path: &str) -> Result<(u16, Value), String> {
    let url = format!("http://127.0.0.1:{port}{path}");
    let (status, body, _) = get_capped(client.get(&url), &url).await?;
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

/// What answers on `port`, and its models.
async fn probe(client: &reqwest::Client, port: u16) -> Result<(String, Vec<String>), String> {
    // All at once, so that what identifies a server never waits for another answer within the deadline.
    let (props, version, models, tags) = tokio::join!(
        get(client, port, "/props"),
        get(client, port, "/api/version"),
        get(client, port, "/v1/models"),
        get(client, port, "/api/tags")
    );
    if let (Err(e), Err(_), Err(_)) = (&props, &version, &models) {
        return Err(if e.starts_with("cannot connect") { "nothing listens".into() } else { e.clone() });
    }
    let ok = |r: &Result<(u16, Value), String>| match r {
        Ok((s, v)) if (200..300).contains(s) => Some(v.clone()),
        _ => None,
    };
    let list = ok(&models).and_then(|v| parse_list(v.to_string().as_bytes()).ok());
    let ids = list.as_ref().map(|l| l.ids.clone()).unwrap_or_default();
    if let Some(p) = ok(&props) {
        if ["default_generation_settings", "build_info", "model_path"].iter().any(|k| p.get(k).is_some()) {
            return Ok(("llama.cpp".into(), ids));
        }
    }
    if ok(&version).is_some_and(|v| v.get("version").is_some_and(Value::is_string)) {
        // Ollama names its models in /api/tags; /v1/models says the same where it exists.
        let tags = tags.ok().filter(|(s, _)| *s == 200);
        let tags = tags.and_then(|(_, v)| parse_list(v.to_string().as_bytes()).ok()).map(|l| l.ids);
        return Ok(("ollama".into(), tags.unwrap_or(ids)));
    }
    let Some(list) = list else {
        let what = match &models {
            Ok((s, _)) => format!("something answers, but GET /v1/models answered {s} with no model list"),
            Err(e) => e.clone(),
        };
        return Err(what);
    };
    let vllm = list
        .json
        .get("data")
        .and_then(Value::as_array)
        .is_some_and(|d| d.iter().any(|m| m.get("owned_by").and_then(Value::as_str) == Some("vllm")));
    let server = if vllm {
        "vllm"
    } else if port == 1234 {
        "lm studio"
    } else {
        "openai-compatible"
    };
    Ok((server.into(), ids))
}

/// The tables and command for a server found on `port`.
fn suggest(port: u16, server: &str, models: Vec<String>, taken: &[String]) -> Found {
    let base = match server {
        "ollama" => "ollama".to_string(),
        "llama.cpp" => "llamacpp".to_string(),
        "vllm" => "vllm".to_string(),
        "lm studio" => "lmstudio".to_string(),
        _ => USUAL.iter().find(|(p, _)| *p == port).map(|(_, n)| n.to_string()).unwrap_or(format!("local_{port}")),
    };
    let mut name = base.clone();
    let mut n = 2;
    while taken.contains(&name) {
        name = format!("{base}_{n}");
        n += 1;
    }
    let base_url = format!("http://127.0.0.1:{port}/v1");
    // llama-server answers with whatever it loaded, whatever the name sent.
    let model = models.first().cloned().unwrap_or_else(|| "local".to_string());
    let quoted = toml::Value::String(model).to_string();
    let toml = format!(
        "[providers.{name}]\nkind = \"openai\"\nbase_url = \"{base_url}\"\ntimeout_secs = 180\nmax_retries = 1\n\n\
         [models.{name}]\nprovider = \"{name}\"\nmodel = {quoted}\nstructured = \"json_schema\"\nmax_tokens = 1024\n"
    );
    let command = format!("lemming models use {name} --all");
    Found { port, server: server.to_string(), base_url, models, name, toml, command }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_are_valid_toml_with_free_names() {
        let f = suggest(11434, "ollama", vec!["llama3.2:latest".into()], &["ollama".into()]);
        assert_eq!(f.name, "ollama_2");
        assert_eq!(f.command, "lemming models use ollama_2 --all");
        let t: toml::Value = toml::from_str(&f.toml).unwrap();
        assert_eq!(t["providers"]["ollama_2"]["base_url"].as_str(), Some("http://127.0.0.1:11434/v1"));
        assert_eq!(t["models"]["ollama_2"]["model"].as_str(), Some("llama3.2:latest"));
        // An id from the server cannot break out of its string.
        let f = suggest(9999, "openai-compatible", vec!["x\"\n[evil]\ny = \"".into()], &[]);
        assert_eq!(f.name, "local_9999");
        let t: toml::Value = toml::from_str(&f.toml).unwrap();
        assert_eq!(t["models"]["local_9999"]["model"].as_str(), Some("x\"\n[evil]\ny = \""));
        assert!(t.get("evil").is_none());
        assert_eq!(ports(&[8080, 9]), [11434, 1234, 8080, 8000, 9]);
    }
}
