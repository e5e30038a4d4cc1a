//! `lemming doctor`: checks each provider against a deadline and gives a verdict.
//!
//! - HTTP kinds: the key is in its environment variable; the server answers
//!   (`GET …/models`); it accepts the key (a 401 or 403 says it does not); and,
//!   where allowed, one tiny request (`max_tokens = 1`) to the first model key
//!   that uses the provider. By default the tiny request goes only to servers
//!   on this machine, which cost nothing; `--call` sends it everywhere, `--no-call`
//!   nowhere.
//! - `command`: the program exists and is executable; with `--call`, it is run
//!   once with a tiny prompt.
//! - `mock` needs nothing; `script` needs its file to parse.
//!
//! Each provider is checked concurrently with the others and gets the same
//! deadline. The check bypasses retries and the circuit breaker (it reports
//! the breaker's state instead), and charges nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::http;
use crate::resilience::{Attempt, AttemptError};
use crate::{ModelSpec, ProviderKind, ProviderSpec, Registry, Request, Structured};

/// Whether to send one tiny request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// Only to servers on this machine (and never to commands).
    Local,
    /// To every provider.
    Always,
    /// To none.
    Never,
}

/// What `doctor` found about one provider.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// The provider name.
    pub provider: String,
    /// Its kind.
    pub kind: String,
    /// `ok`, `slow`, `unreachable`, `auth failed`, `error` or `breaker open`.
    pub verdict: String,
    /// Whether the provider can be used.
    pub ok: bool,
    /// What was checked, in order.
    pub details: Vec<String>,
    /// How long the check took.
    pub elapsed_ms: u64,
}

/// Checks every provider concurrently, each within `deadline`. Providers no
/// model key uses are checked too (they may be about to be used).
pub async fn check_all(registry: &Registry, deadline: Duration, call: Call) -> Vec<Verdict> {
    let registry = Arc::new(registry.clone());
    let mut tasks = tokio::task::JoinSet::new();
    for (i, name) in registry.specs().keys().enumerate() {
        let used = registry.models().values().any(|m| &m.provider == name);
        if name == "mock" && !used {
            continue;
        }
        let (registry, name) = (Arc::clone(&registry), name.clone());
        tasks.spawn(async move { (i, check(&registry, &name, deadline, call).await) });
    }
    let mut out = Vec::new();
    while let Some(Ok(v)) = tasks.join_next().await {
        out.push(v);
    }
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, v)| v).collect()
}

struct Findings {
    details: Vec<String>,
    verdict: Option<(&'static str, bool)>,
}

impl Findings {
    fn note(&mut self, s: impl Into<String>) {
        self.details.push(s.into());
    }
    fn fail(&mut self, verdict: &'static str, s: impl Into<String>) {
        self.details.push(s.into());
        self.verdict.get_or_insert((verdict, false));
    }
}

/// Checks one provider within `deadline`.
pub async fn check(registry: &Registry, name: &str, deadline: Duration, call: Call) -> Verdict {
    let started = Instant::now();
    let spec = registry.specs().get(name).cloned().unwrap_or_else(|| ProviderSpec::new(name, ProviderKind::Mock));
    let mut f = Findings { details: Vec::new(), verdict: None };
    let work = run_checks(registry, &spec, deadline, call, &mut f);
    if tokio::time::timeout(deadline, work).await.is_err() {
        let reached = f.details.iter().any(|d| d.starts_with("reachable"));
        if reached {
            f.note(format!("the test request did not finish within {} ms", deadline.as_millis()));
            f.verdict.get_or_insert(("slow", true));
        } else {
            f.fail("unreachable", format!("no answer within {} ms", deadline.as_millis()));
        }
    }
    if let Some(b) = registry.breaker(name) {
        let s = b.state();
        let now = chrono::Utc::now();
        match s.phase(now) {
            "open" => f.fail(
                "breaker open",
                format!(
                    "circuit breaker open until {} ({} failed calls in a row; last: {})",
                    s.open_until.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)).unwrap_or_default(),
                    s.consecutive_failures,
                    s.last_error.unwrap_or_default()
                ),
            ),
            "half_open" => f.note("circuit breaker half-open: the next call is a trial"),
            _ if s.consecutive_failures > 0 => {
                f.note(format!("{} failed call(s) in a row recently", s.consecutive_failures))
            }
            _ => {}
        }
    }
    let (verdict, ok) = f.verdict.unwrap_or(("ok", true));
    Verdict {
        provider: name.to_string(),
        kind: spec.kind.name().to_string(),
        verdict: verdict.to_string(),
        ok,
        details: f.details,
        elapsed_ms: started.elapsed().as_millis() as u64,
    }
}

fn tiny_request(model: &ModelSpec) -> Request {
    Request {
        agent: "doctor".into(),
        turn: 0,
        system: "Reply with the word OK.".into(),
        prompt: "ping".into(),
        mail: vec![],
        may_send_to: vec![],
        model: ModelSpec {
            max_tokens: Some(1),
            temperature: Some(0.0),
            structured: Structured::None,
            fallback: None,
            ..model.clone()
        },
        agent_dir: None,
        stream: None,
        tools: vec![],
    }
}

async fn run_checks(registry: &Registry, spec: &ProviderSpec, deadline: Duration, call: Call, f: &mut Findings) {
    let model = registry.models().values().find(|m| m.provider == spec.name).cloned();
    match spec.kind {
        ProviderKind::Mock => f.note("built in; needs nothing"),
        ProviderKind::Script => {
            let path = spec.script.clone().unwrap_or_default();
            match std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|t| toml::from_str::<toml::Value>(&t).map_err(|e| e.message().to_string()))
            {
                Ok(_) => f.note(format!("script {} parses", path.display())),
                Err(e) => f.fail("error", format!("script {}: {e}", path.display())),
            }
        }
        ProviderKind::Command => {
            let Some(c) = &spec.command else { return f.fail("error", "no `program` configured") };
            match crate::command::resolve(&c.program) {
                Ok(p) => f.note(format!("program {} is executable", p.display())),
                Err(e) => return f.fail("error", e),
            }
            if call != Call::Always {
                return f.note("not run (pass --call to run it once with a tiny prompt)");
            }
            let Some(model) = model else { return f.note("no model key uses it; not run") };
            let cmd = crate::command::Command::new(&spec.name, c.clone(), deadline);
            let t = Instant::now();
            match cmd.attempt(&tiny_request(&model)).await {
                Ok(r) => f.note(format!("ran in {} ms ({} bytes out)", t.elapsed().as_millis(), r.text.len())),
                Err(e) => f.fail("error", e.message),
            }
        }
        ProviderKind::OpenAi | ProviderKind::Anthropic => {
            // The doctor never starts a managed server: one that is not running is not checked.
            if let Some(serve) = spec.serve.as_ref().filter(|s| !crate::serve::Report::read(&spec.name, s).running) {
                return match crate::program::resolve(&serve.program) {
                    Ok(p) => f.note(format!(
                        "managed server {} not running: lemming starts it on the first call",
                        p.display()
                    )),
                    Err(e) => f.fail("error", format!("managed server: {e}")),
                };
            }
            http_checks(registry, spec, model, deadline, call, f).await
        }
    }
}

async fn http_checks(
    registry: &Registry,
    spec: &ProviderSpec,
    model: Option<ModelSpec>,
    deadline: Duration,
    call: Call,
    f: &mut Findings,
) {
    let Some(client) = registry.client(&spec.name).cloned() else {
        return f.fail("error", "the HTTP client could not be built");
    };
    let key = match http::api_key(spec) {
        Ok(k) => k,
        Err(e) => return f.fail("auth failed", e.message),
    };
    let openai = spec.kind == ProviderKind::OpenAi;
    let (url, headers) = crate::remote::models_request(spec, key.as_deref());
    let headers = match headers {
        Ok(h) => h,
        Err(e) => return f.fail("error", e.message),
    };
    let t = Instant::now();
    match http::send(client.get(&url).headers(headers), deadline, "the doctor's deadline", &url, key.as_deref()).await {
        Ok(r) => {
            f.note(format!("reachable: GET {url} answered {} in {} ms", r.status, t.elapsed().as_millis()));
            if let Some(var) = &spec.api_key_env {
                f.note(format!("the key in {var} is accepted"));
            }
        }
        Err(e) if e.message.starts_with("HTTP 401") || e.message.starts_with("HTTP 403") => {
            let hint = spec.api_key_env.as_deref().map(|v| format!(" (check {v})")).unwrap_or_default();
            return f.fail("auth failed", format!("{}{hint}", e.message));
        }
        Err(e) if e.message.starts_with("HTTP 4") && !e.message.starts_with("HTTP 429") => {
            // No model list here (404, 405, ...): the server is up all the same.
            f.note(format!("reachable: GET {url} answered {} in {} ms", &e.message[5..8], t.elapsed().as_millis()));
        }
        Err(e) if e.message.starts_with("HTTP ") => {
            return f.fail("error", format!("the server is not ready: {}", e.message))
        }
        Err(e) => return f.fail("unreachable", e.message),
    }
    let local = spec.base_url.as_deref().is_some_and(http::is_loopback);
    let allowed = match call {
        Call::Always => true,
        Call::Local => local,
        Call::Never => false,
    };
    if !allowed {
        return f.note("no test request sent (pass --call to send one tiny request)");
    }
    let Some(model) = model else { return f.note("no model key uses it; no test request sent") };
    let req = tiny_request(&model);
    let mut spec = spec.clone();
    spec.timeout_secs = deadline.as_secs_f64();
    let attempt: Box<dyn Attempt> = if openai {
        Box::new(crate::openai::OpenAi::new(spec, client))
    } else {
        Box::new(crate::anthropic::Anthropic::new(spec, client))
    };
    let t = Instant::now();
    match attempt.attempt(&req).await {
        Ok(r) => f.note(format!(
            "a tiny request to model `{}` answered in {} ms ({} + {} tokens)",
            model.key,
            t.elapsed().as_millis(),
            r.usage.input_tokens,
            r.usage.output_tokens
        )),
        Err(AttemptError { message, .. }) if message.starts_with("HTTP 401") || message.starts_with("HTTP 403") => {
            f.fail("auth failed", message)
        }
        Err(e) if e.message.starts_with("no complete answer") || e.message.starts_with("no answer") => {
            f.note(format!(
                "the tiny request to model `{}` did not finish within {} ms",
                model.key,
                deadline.as_millis()
            ));
            f.verdict.get_or_insert(("slow", true));
        }
        Err(e) => f.fail("error", format!("the tiny request to model `{}` failed: {}", model.key, e.message)),
    }
}
