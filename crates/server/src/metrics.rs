//! `GET /metrics`: the Prometheus families, recorded from each committed
//! event and, in the daemon's process, from every provider call.
//!
//! Counters count since the server started (the hub starts at the end of
//! `events.jsonl`). The gauges read from the org's files (unread mail, open
//! breakers) are recomputed after each committed turn and every second, off
//! the request path: a scrape only encodes what is in memory.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use lemming_engine::events::{Event, EventKind};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::error::ApiError;
use crate::Routes;

/// How often the gauges read from files are recomputed between turns.
pub const GAUGE_EVERY: Duration = Duration::from_secs(1);

/// The content type of the answer (OpenMetrics text, which Prometheus reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The longest label value kept; longer ones are cut (they come from files).
const MAX_LABEL: usize = 128;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonL {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgentOutcomeL {
    agent: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgentModelL {
    agent: String,
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelDirectionL {
    model: String,
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderOutcomeL {
    provider: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderL {
    provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgentL {
    agent: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolOutcomeL {
    tool: String,
    outcome: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The metric families.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    turns: Counter,
    turn_duration: Histogram,
    delivered: Counter,
    dead: Family<ReasonL, Counter>,
    runs: Family<AgentOutcomeL, Counter>,
    credits: Family<AgentModelL, Counter<f64, AtomicU64>>,
    tokens: Family<ModelDirectionL, Counter>,
    requests: Family<ProviderOutcomeL, Counter>,
    request_duration: HistogramFamily<ProviderL>,
    unread: Family<AgentL, Gauge>,
    breaker_open: Family<ProviderL, Gauge>,
    tool_calls: Family<ToolOutcomeL, Counter>,
    /// The label values the file gauges were last set for (to drop the gone).
    seen: Mutex<(BTreeSet<String>, BTreeSet<String>)>,
}

fn turn_histogram() -> Histogram {
    // 5 ms to about 80 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

fn request_histogram() -> Histogram {
    // 10 ms to about 160 s.
    Histogram::new(exponential_buckets(0.01, 2.0, 15))
}

/// A label value from a file: cut to [`MAX_LABEL`] characters, and escaped
/// as the text format wants (the encoder writes values as they are).
fn label(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_LABEL));
    for c in s.chars().take(MAX_LABEL) {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

impl Metrics {
    /// Every family, at zero.
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::default();
        let m = Metrics {
            registry: Registry::default(),
            turns: Counter::default(),
            turn_duration: turn_histogram(),
            delivered: Counter::default(),
            dead: Family::default(),
            runs: Family::default(),
            credits: Family::default(),
            tokens: Family::default(),
            requests: Family::default(),
            request_duration: Family::new_with_constructor(request_histogram as fn() -> Histogram),
            unread: Family::default(),
            breaker_open: Family::default(),
            tool_calls: Family::default(),
            seen: Mutex::default(),
        };
        // Counters get their `_total` suffix from the encoder.
        registry.register("lemming_turns", "Turns committed", m.turns.clone());
        registry.register(
            "lemming_turn_duration_seconds",
            "How long each turn took, from its start to its commit",
            m.turn_duration.clone(),
        );
        registry.register("lemming_messages_delivered", "Messages delivered into inboxes", m.delivered.clone());
        registry.register("lemming_dead_letters", "Messages sent to org/state/dead/, by reason", m.dead.clone());
        registry.register("lemming_agent_runs", "Agent runs by outcome (ok, failed, skipped)", m.runs.clone());
        registry.register("lemming_credits_spent", "Credits charged, by agent and model", m.credits.clone());
        registry.register("lemming_tokens", "Tokens charged, by model and direction (input, output)", m.tokens.clone());
        registry.register(
            "lemming_provider_requests",
            "Provider calls by outcome (ok, unavailable, refused, request, reply, config)",
            m.requests.clone(),
        );
        registry.register(
            "lemming_provider_request_duration_seconds",
            "How long each provider call took",
            m.request_duration.clone(),
        );
        registry.register("lemming_unread_messages", "Unread messages in each agent's inbox", m.unread.clone());
        registry.register(
            "lemming_breaker_open",
            "1 while a provider's circuit breaker is open (calls fail fast), else 0",
            m.breaker_open.clone(),
        );
        registry.register("lemming_tool_calls", "Tool calls by tool and outcome (ok, failed)", m.tool_calls.clone());
        Arc::new(Metrics { registry, ..m })
    }

    /// Records a committed event.
    pub fn observe(&self, e: &Event) {
        match &e.kind {
            EventKind::Turn(r) => {
                self.turns.inc();
                self.turn_duration.observe(r.ms as f64 / 1000.0);
            }
            EventKind::Delivered { .. } => {
                self.delivered.inc();
            }
            EventKind::Dead { reason, .. } => {
                self.dead.get_or_create(&ReasonL { reason: label(reason.as_str()) }).inc();
            }
            EventKind::Ran { agent, .. } => self.run(agent, "ok"),
            EventKind::Failed { agent, .. } => self.run(agent, "failed"),
            EventKind::Skipped { agent, .. } => self.run(agent, "skipped"),
            EventKind::Charged { agent, model, cost, input_tokens, output_tokens } => {
                if cost.is_finite() && *cost > 0.0 {
                    self.credits.get_or_create(&AgentModelL { agent: label(agent), model: label(model) }).inc_by(*cost);
                }
                for (direction, n) in [("input", input_tokens), ("output", output_tokens)] {
                    let l = ModelDirectionL { model: label(model), direction: direction.into() };
                    self.tokens.get_or_create(&l).inc_by(*n);
                }
            }
            EventKind::Tool { call, .. } => {
                let outcome = if call.ok { "ok" } else { "failed" };
                self.tool_calls.get_or_create(&ToolOutcomeL { tool: label(&call.tool), outcome: outcome.into() }).inc();
            }
            EventKind::Recovered { .. }
            | EventKind::ToppedUp { .. }
            | EventKind::ReplyDelta { .. }
            | EventKind::Paused {}
            | EventKind::Resumed {}
            | EventKind::ConfigError { .. }
            | EventKind::TurnStarted {} => {}
        }
    }

    fn run(&self, agent: &str, outcome: &str) {
        self.runs.get_or_create(&AgentOutcomeL { agent: label(agent), outcome: outcome.into() }).inc();
    }

    /// Records a provider call.
    pub fn request(&self, provider: &str, outcome: &str, took: Duration) {
        let provider = label(provider);
        self.requests.get_or_create(&ProviderOutcomeL { provider: provider.clone(), outcome: label(outcome) }).inc();
        self.request_duration.get_or_create(&ProviderL { provider }).observe(took.as_secs_f64());
    }

    /// Recomputes the gauges read from the org's files: the unread mail of
    /// each agent (`inbox/new/`), and which providers' breakers are open
    /// (`org/state/breakers.json`). Agents and providers that are gone are dropped.
    pub fn refresh(&self, root: &Path) {
        let layout = lemming_engine::org::Layout::new(root);
        let mail = layout.mail();
        let mut agents = BTreeSet::new();
        for agent in lemming_engine::org::agent_folders(&layout) {
            if lemming_engine::name::AgentName::new(&agent).is_err() {
                continue;
            }
            match mail.unread_count(&agent) {
                Ok(n) => {
                    self.unread.get_or_create(&AgentL { agent: agent.clone() }).set(n as i64);
                    agents.insert(agent);
                }
                Err(e) => tracing::debug!(error = %e, "cannot count unread mail"),
            }
        }
        let now = chrono::Utc::now();
        let file = lemming_provider::breaker::read_file(&layout.breakers());
        let mut providers = BTreeSet::new();
        for (name, b) in &file.providers {
            let name = label(name);
            let open = i64::from(b.phase(now) == "open");
            self.breaker_open.get_or_create(&ProviderL { provider: name.clone() }).set(open);
            providers.insert(name);
        }
        let mut seen = self.seen.lock().expect("metrics lock");
        for gone in seen.0.difference(&agents) {
            self.unread.remove(&AgentL { agent: gone.clone() });
        }
        for gone in seen.1.difference(&providers) {
            // Closed: a provider leaves the file when its breaker closes.
            self.breaker_open.get_or_create(&ProviderL { provider: gone.clone() }).set(0);
        }
        seen.0 = agents;
        seen.1.extend(providers);
    }

    /// The families in the text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "cannot encode the metrics");
        }
        out
    }
}

/// Sees every provider call of this process.
struct Providers(Arc<Metrics>);

impl lemming_provider::observe::Observer for Providers {
    fn request(&self, provider: &str, outcome: &str, took: Duration) {
        self.0.request(provider, outcome, took);
    }
}

/// Records every provider call of this process in `metrics` (the first
/// metrics installed keep the calls: one observer per process).
pub fn observe_providers(metrics: &Arc<Metrics>) {
    if !lemming_provider::observe::set(Arc::new(Providers(metrics.clone()))) {
        tracing::debug!("a provider observer was installed already; provider calls are recorded there");
    }
}

/// Whether a scrape from `peer` may read the metrics: from this machine
/// (a loopback peer that asked for a loopback host) without the token, from
/// elsewhere with it. A proxy on this machine forwards with the public host,
/// and a web page that rebinds a name of its own to 127.0.0.1 sends that
/// name: neither gets them open.
fn allowed(peer: Option<SocketAddr>, headers: &axum::http::HeaderMap, token: &str) -> bool {
    let local_host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).is_some_and(loopback_host);
    (local_host && peer.is_some_and(|p| p.ip().is_loopback())) || crate::auth::carries(headers, token)
}

/// Whether a `Host` header names this machine's loopback (`localhost`,
/// `127.x.y.z`, `[::1]`, with or without a port).
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `GET /metrics`: open to this machine (loopback); from elsewhere it needs the token.
async fn metrics(State(m): State<Arc<Metrics>>, State(gate): State<crate::auth::Gate>, req: Request) -> Response {
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    if !allowed(peer, req.headers(), &gate.token) {
        return ApiError::unauthorized().into_response();
    }
    let mut r = m.encode().into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    r
}

/// `GET /metrics` (open on loopback; elsewhere it needs the token).
pub fn routes() -> Routes {
    Routes::new().add("GET", "/metrics", axum::routing::get(metrics))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lemming_engine::events::{Run, ToolUse, TurnReport};
    use lemming_engine::mailbox::Reason;

    fn ev(kind: EventKind) -> Event {
        Event { seq: 1, turn: 1, at: "2026-01-02T03:04:05.006Z".parse().unwrap(), kind }
    }

    /// The value of the sample `name{labels}` (`labels` as written, without braces; "" for none).
    fn sample(m: &Metrics, name: &str, labels: &str) -> Option<f64> {
        let text = m.encode();
        let key = if labels.is_empty() { format!("{name} ") } else { format!("{name}{{{labels}}} ") };
        text.lines().find_map(|l| l.strip_prefix(&key)).map(|v| v.split(' ').next().unwrap().parse().unwrap())
    }

    #[test]
    fn each_family_moves_as_its_events_come_in() {
        let m = Metrics::new();
        assert_eq!(sample(&m, "lemming_turns_total", ""), Some(0.0));
        m.observe(&ev(EventKind::Turn(TurnReport { turn: 1, ms: 1500, ..TurnReport::default() })));
        m.observe(&ev(EventKind::Turn(TurnReport { turn: 2, ms: 2, ..TurnReport::default() })));
        assert_eq!(sample(&m, "lemming_turns_total", ""), Some(2.0));
        assert_eq!(sample(&m, "lemming_turn_duration_seconds_count", ""), Some(2.0));
        assert_eq!(sample(&m, "lemming_turn_duration_seconds_sum", ""), Some(1.502));
        assert_eq!(sample(&m, "lemming_turn_duration_seconds_bucket", "le=\"0.005\""), Some(1.0));

        m.observe(&ev(EventKind::Delivered { id: "m".into(), from: "a".into(), to: "b".into() }));
        assert_eq!(sample(&m, "lemming_messages_delivered_total", ""), Some(1.0));

        let dead = EventKind::Dead {
            id: "d".into(),
            reason: Reason::Malformed,
            detail: "x".into(),
            mailbox: "a".into(),
            to: vec![],
        };
        m.observe(&ev(dead.clone()));
        m.observe(&ev(dead));
        assert_eq!(sample(&m, "lemming_dead_letters_total", "reason=\"malformed\""), Some(2.0));

        let run = Run { model: "default".into(), cost: 0.5, mail: 1, sent: 1 };
        m.observe(&ev(EventKind::Ran { agent: "manager".into(), run: run.clone(), error: None, cause: None }));
        m.observe(&ev(EventKind::Failed { agent: "manager".into(), run: None, error: Some("x".into()), cause: None }));
        m.observe(&ev(EventKind::Skipped {
            agent: "planner".into(),
            reason: lemming_engine::events::SkipReason::OutOfCredits,
            over: None,
        }));
        assert_eq!(sample(&m, "lemming_agent_runs_total", "agent=\"manager\",outcome=\"ok\""), Some(1.0));
        assert_eq!(sample(&m, "lemming_agent_runs_total", "agent=\"manager\",outcome=\"failed\""), Some(1.0));
        assert_eq!(sample(&m, "lemming_agent_runs_total", "agent=\"planner\",outcome=\"skipped\""), Some(1.0));

        let charged = |cost| EventKind::Charged {
            agent: "manager".into(),
            model: "default".into(),
            cost,
            input_tokens: 100,
            output_tokens: 7,
        };
        m.observe(&ev(charged(0.25)));
        m.observe(&ev(charged(0.5)));
        // A cost that is no number of credits moves nothing but the tokens.
        m.observe(&ev(charged(f64::NAN)));
        assert_eq!(sample(&m, "lemming_credits_spent_total", "agent=\"manager\",model=\"default\""), Some(0.75));
        assert_eq!(sample(&m, "lemming_tokens_total", "model=\"default\",direction=\"input\""), Some(300.0));
        assert_eq!(sample(&m, "lemming_tokens_total", "model=\"default\",direction=\"output\""), Some(21.0));

        let tool = |ok| EventKind::Tool {
            agent: "manager".into(),
            call: ToolUse { call: "c".into(), tool: "read_file".into(), ok, error: None, ms: 3, result: "r".into() },
        };
        m.observe(&ev(tool(true)));
        m.observe(&ev(tool(false)));
        m.observe(&ev(tool(false)));
        assert_eq!(sample(&m, "lemming_tool_calls_total", "tool=\"read_file\",outcome=\"ok\""), Some(1.0));
        assert_eq!(sample(&m, "lemming_tool_calls_total", "tool=\"read_file\",outcome=\"failed\""), Some(2.0));

        m.request("local", "ok", Duration::from_millis(20));
        m.request("local", "unavailable", Duration::from_millis(3));
        assert_eq!(sample(&m, "lemming_provider_requests_total", "provider=\"local\",outcome=\"ok\""), Some(1.0));
        assert_eq!(
            sample(&m, "lemming_provider_requests_total", "provider=\"local\",outcome=\"unavailable\""),
            Some(1.0)
        );
        assert_eq!(sample(&m, "lemming_provider_request_duration_seconds_count", "provider=\"local\""), Some(2.0));
        assert_eq!(sample(&m, "lemming_provider_request_duration_seconds_sum", "provider=\"local\""), Some(0.023));
    }

    #[test]
    fn label_values_from_files_cannot_break_the_text_format() {
        let m = Metrics::new();
        m.observe(&ev(EventKind::Ran {
            agent: "a\"b\\c\nd".into(),
            run: Run { model: "m".into(), cost: 0.0, mail: 0, sent: 0 },
            error: None,
            cause: None,
        }));
        let text = m.encode();
        assert!(text.contains("lemming_agent_runs_total{agent=\"a\\\"b\\\\c\\nd\",outcome=\"ok\"} 1"), "{text}");
        m.observe(&ev(EventKind::Ran {
            agent: "x".repeat(1000),
            run: Run { model: "m".into(), cost: 0.0, mail: 0, sent: 0 },
            error: None,
            cause: None,
        }));
        assert!(m.encode().contains(&format!("agent=\"{}\",", "x".repeat(MAX_LABEL))));
        assert!(!m.encode().contains(&"x".repeat(MAX_LABEL + 1)));
    }

    #[test]
    fn the_file_gauges_follow_the_inboxes_and_the_breakers() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        let new = |agent: &str| root.join(format!("agents/{agent}/inbox/new"));
        for agent in ["manager", "planner"] {
            std::fs::create_dir_all(new(agent)).unwrap();
        }
        std::fs::write(new("manager").join("m1.json"), "{}").unwrap();
        std::fs::write(new("manager").join("m2.json"), "{}").unwrap();
        std::fs::create_dir_all(root.join("org/state")).unwrap();
        let until = chrono::Utc::now() + chrono::Duration::minutes(5);
        let breakers = serde_json::json!({"providers": {"local": {"consecutive_failures": 5, "threshold": 5, "open_until": until}}});
        std::fs::write(root.join("org/state/breakers.json"), breakers.to_string()).unwrap();
        let m = Metrics::new();
        m.refresh(root);
        assert_eq!(sample(&m, "lemming_unread_messages", "agent=\"manager\""), Some(2.0));
        assert_eq!(sample(&m, "lemming_unread_messages", "agent=\"planner\""), Some(0.0));
        assert_eq!(sample(&m, "lemming_breaker_open", "provider=\"local\""), Some(1.0));

        std::fs::remove_file(new("manager").join("m1.json")).unwrap();
        std::fs::remove_dir_all(root.join("agents/planner")).unwrap();
        std::fs::write(root.join("org/state/breakers.json"), "{\"providers\":{}}").unwrap();
        m.refresh(root);
        assert_eq!(sample(&m, "lemming_unread_messages", "agent=\"manager\""), Some(1.0));
        assert_eq!(sample(&m, "lemming_unread_messages", "agent=\"planner\""), None, "a removed agent is dropped");
        assert_eq!(sample(&m, "lemming_breaker_open", "provider=\"local\""), Some(0.0), "closed again");
    }

    #[test]
    fn a_token_is_compared_whole() {
        let mut h = axum::http::HeaderMap::new();
        assert!(!crate::auth::carries(&h, "secret"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer secre"));
        assert!(!crate::auth::carries(&h, "secret"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer secret"));
        assert!(crate::auth::carries(&h, "secret"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert!(!crate::auth::carries(&h, ""), "an empty token opens nothing");
    }

    #[test]
    fn loopback_scrapes_need_no_token_and_others_do() {
        let mut none = axum::http::HeaderMap::new();
        none.insert(header::HOST, HeaderValue::from_static("127.0.0.1:7878"));
        let mut with = axum::http::HeaderMap::new();
        with.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer secret"));
        let mut proxied = axum::http::HeaderMap::new();
        proxied.insert(header::HOST, HeaderValue::from_static("lemming.example.com"));
        assert!(!allowed(Some("127.0.0.1:5000".parse().unwrap()), &proxied, "secret"), "a proxy's public host");
        for (host, ok) in
            [("localhost:9", true), ("[::1]:7878", true), ("127.1.2.3", true), ("evil.example:7878", false)]
        {
            assert_eq!(loopback_host(host), ok, "{host}");
        }
        let at = |a: &str| Some(a.parse::<SocketAddr>().unwrap());
        assert!(allowed(at("127.0.0.1:5000"), &none, "secret"));
        assert!(allowed(at("[::1]:5000"), &none, "secret"));
        assert!(!allowed(at("10.0.0.7:5000"), &none, "secret"));
        assert!(allowed(at("10.0.0.7:5000"), &with, "secret"));
        assert!(!allowed(None, &none, "secret"), "an unknown peer is not this machine");
    }
}
