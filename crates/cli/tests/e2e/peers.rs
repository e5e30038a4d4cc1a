//! The providers against real LLM servers that other people wrote
//! (docs/llm-peers.md): llama.cpp's `llama-server` running Gemma 3 270M, and
//! the scripted `fakellm`. Each test finds its peer through
//! `$LEMMING_LLAMA_SERVER`, `$LEMMING_GGUF` and `$LEMMING_FAKELLM`, or the
//! `env.sh` that `scripts/setup-llm-peers.sh` writes, and says SKIPPED (on the
//! terminal, past the test harness's capture) when it is not installed.
//!
//! Every request goes through a recording proxy (`fake_http::Answer::Forward`),
//! so the tests can compare the ledger with the usage the server reported.
//! The peer runs on a free port and is killed when the test ends, even on panic.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::fake_http::{self, free_port, Answer, FakeServer};
use crate::fixture::{failed_agents, TestOrg};
use crate::providers::{charges, configure, step_env};

/// The peers' paths: the environment first, then `env.sh`.
pub(crate) fn peer(var: &str) -> Option<PathBuf> {
    let from_env = std::env::var_os(var).map(PathBuf::from);
    let from_file = || {
        let dir = std::env::var_os("LEMMING_PEERS_DIR")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/lemming-peers")))?;
        let text = std::fs::read_to_string(dir.join("env.sh")).ok()?;
        text.lines()
            .filter_map(|l| l.trim().strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| *k == var)
            .map(|(_, v)| PathBuf::from(v.trim().trim_matches('"').trim_matches('\'')))
    };
    from_env.or_else(from_file).filter(|p| p.exists())
}

pub(crate) fn skip(test: &str, what: &str) {
    // Written to the real stderr, so that it shows even though the test passes.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {test}: {what} is not installed; run scripts/setup-llm-peers.sh (or set LEMMING_LLAMA_SERVER, LEMMING_GGUF, LEMMING_FAKELLM)"
    );
}

/// A child process killed (and reaped) when dropped.
pub(crate) struct KillOnDrop(pub(crate) Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `GET path` answers 200, or panics with the log after `limit`.
pub(crate) fn wait_ready(child: &mut KillOnDrop, addr: SocketAddr, path: &str, limit: Duration, log: &Path) {
    let start = Instant::now();
    loop {
        if let Some((200, _)) = fake_http::request(addr, "GET", path) {
            return;
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!(
                "the peer exited ({status}) before it was ready:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            start.elapsed() < limit,
            "the peer was not ready within {limit:?}:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) fn start(program: &Path, args: &[String], log: &Path) -> KillOnDrop {
    let log_file = std::fs::File::create(log).unwrap();
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
    KillOnDrop(child)
}

/// The proxied response of a request, parsed.
/// Gemma behind a proxy that records every request (the proxy is what the
/// org is configured with); `None`, with SKIPPED on stderr, when llama-server
/// or the model is not installed.
pub(crate) fn gemma_behind_a_proxy(test: &str) -> Option<(Gemma, FakeServer)> {
    let (Some(server), Some(gguf)) = (peer("LEMMING_LLAMA_SERVER"), peer("LEMMING_GGUF")) else {
        skip(test, "llama-server or the Gemma GGUF");
        return None;
    };
    let gemma = Gemma::start(&server, &gguf);
    let upstream = gemma.addr;
    Some((gemma, FakeServer::start(move |_, _| Answer::Forward(upstream))))
}

/// The tests that run llama-server take turns: on a 2-core machine several
/// models generating at once slow each one past its `timeout_secs`. Held for
/// the whole test (a test that failed while holding it does not block the rest).
static LLAMA: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Waits for this test's turn to run llama-server; see [`LLAMA`].
pub(crate) fn one_llama_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    LLAMA.lock().unwrap_or_else(|e| e.into_inner())
}

/// llama-server with Gemma 3 270M on an ephemeral port of 127.0.0.1, ready
/// to answer; stopped when dropped.
pub(crate) struct Gemma {
    /// Where it listens.
    pub addr: SocketAddr,
    _child: KillOnDrop,
    _tmp: tempfile::TempDir,
}

impl Gemma {
    pub(crate) fn start(server: &Path, gguf: &Path) -> Gemma {
        Gemma::start_with(server, gguf, &[])
    }

    /// The same, with more arguments for llama-server.
    pub(crate) fn start_with(server: &Path, gguf: &Path, extra: &[String]) -> Gemma {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("llama-server.log");
        let port = free_port();
        let args: Vec<String> = [
            "-m",
            gguf.to_str().unwrap(),
            "--alias",
            "gemma-270m",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "-c",
            "4096",
            "-t",
            "2",
            "--no-webui",
            "--seed",
            "42",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(extra.iter().cloned())
        .collect();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut child = start(server, &args, &log);
        wait_ready(&mut child, addr, "/health", Duration::from_secs(60), &log);
        Gemma { addr, _child: child, _tmp: tmp }
    }
}

#[track_caller]
pub(crate) fn response(r: &fake_http::Recorded) -> Value {
    let (status, body) = r.response.clone().unwrap_or_else(|| panic!("no response recorded for {}", r.path));
    assert_eq!(status, 200, "the server refused the request: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("the server's body is not JSON ({e}): {body}"))
}

#[track_caller]
fn assert_charge(org: &TestOrg, model: &str, input: u64, output: u64, prices: (f64, f64)) {
    let c = charges(org);
    let c = c.last().unwrap_or_else(|| panic!("nothing charged"));
    assert_eq!(c["model"], model, "{c:#}");
    assert_eq!((c["input_tokens"].as_u64(), c["output_tokens"].as_u64()), (Some(input), Some(output)), "{c:#}");
    assert!(c.get("estimated").is_none(), "the server reported usage: {c:#}");
    let cost = (input as f64 * prices.0 + output as f64 * prices.1) / 1e6;
    assert!((c["cost"].as_f64().unwrap() - cost).abs() < 1e-9, "{c:#} != {cost}");
}

#[test]
fn llama_server_answers_through_openai_with_a_schema_and_through_anthropic_messages() {
    let test = "llama_server_answers_through_openai_with_a_schema_and_through_anthropic_messages";
    let _llama = crate::peers::one_llama_at_a_time();
    let Some((_gemma, proxy)) = gemma_behind_a_proxy(test) else { return };
    let prices = (1000.0, 2000.0);

    // 1. openai kind, constrained by the reply schema.
    let org = TestOrg::new();
    configure(
        &org,
        &format!(
            r#"
[providers.llama]
kind = "openai"
base_url = "{}/v1"
timeout_secs = 180
max_retries = 1

[models.local]
provider = "llama"
model = "gemma-270m"
structured = "json_schema"
temperature = 0.0
max_tokens = 400
reply_max_messages = 1
reply_max_chars = 40
input_price = 1000.0
output_price = 2000.0
"#,
            proxy.url()
        ),
        "manager",
        "local",
    );
    // The reply contract alone, as before tools (they have tests of their own).
    org.edit(
        "agents/manager/resume.toml",
        "tools = [\"read_file\", \"write_file\", \"list_files\", \"recall\"]",
        "tools = []",
    );
    let permitted: Vec<String> =
        serde_json::from_value(org.lemming_ok(&["inspect", "manager", "--json"]).json()["can_reach"].clone()).unwrap();
    // Every reply must obey the schema. An empty `messages` list obeys it too,
    // and a 270M model sometimes writes one (its prompt holds random ids), so
    // routing is shown on the first of up to three turns that wrote a message.
    let mut wrote = false;
    let mut resp = Value::Null;
    for attempt in 1..=3 {
        let id = org.send("manager", "Please reply to the human.");
        let (report, out) = step_env(&org, &[]);
        assert_eq!(report["ran"], json!(["manager"]), "{out}\n{:#?}", org.activity("manager"));
        let calls = proxy.requests_to("/v1/chat/completions");
        assert_eq!(calls.len(), attempt, "{calls:#?}");
        let call = calls.last().unwrap();
        assert_eq!(call.json()["response_format"]["type"], "json_schema");
        resp = response(call);
        let content = resp["choices"][0]["message"]["content"].as_str().unwrap();
        let reply: Value =
            serde_json::from_str(content).unwrap_or_else(|e| panic!("not schema-valid JSON ({e}): {content}"));

        // The reply obeys the schema: `to` among the permitted agents, lengths held.
        let messages = reply["messages"].as_array().unwrap_or_else(|| panic!("no messages list: {reply:#}"));
        assert!(messages.len() <= 1, "{reply:#}");
        assert!(reply["notes"].as_str().is_some_and(|n| n.chars().count() <= 40), "{reply:#}");
        assert!(reply["memory"].is_array(), "{reply:#}");
        for m in messages {
            let to = m["to"].as_str().unwrap();
            assert!(permitted.iter().any(|p| p == to), "`to` {to} is not permitted ({permitted:?})");
            let body = m["body"].as_str().unwrap();
            assert!(body.chars().count() <= 40, "{reply:#}");
            assert!(["low", "normal", "urgent"].contains(&m["priority"].as_str().unwrap()), "{reply:#}");
            assert!(m["reply_to"].is_null() || m["reply_to"] == id.as_str(), "{reply:#}");
            // Routed: the recipient has it, from the manager.
            let inbox = org.inbox_json(to);
            assert!(
                inbox.iter().any(|x| x["from"] == "manager" && x["body"] == body),
                "not delivered to {to}: {inbox:#?}"
            );
        }
        assert!(!org.ids("manager", "inbox", "new").contains(&id), "the mail was not consumed");
        if !messages.is_empty() {
            wrote = true;
            break;
        }
    }
    assert!(wrote, "three schema-valid replies and none wrote a message: {resp:#}");
    assert!(org.dead().is_empty(), "{:#?}", org.dead());
    let usage = &resp["usage"];
    assert_charge(
        &org,
        "local",
        usage["prompt_tokens"].as_u64().unwrap(),
        usage["completion_tokens"].as_u64().unwrap(),
        prices,
    );

    // 2. anthropic kind against the same server's /v1/messages (no schema there).
    let org = TestOrg::new();
    configure(
        &org,
        &format!(
            "[providers.llama]\nkind = \"anthropic\"\nbase_url = \"{}\"\ntimeout_secs = 180\nmax_retries = 1\n\n[models.local]\nprovider = \"llama\"\nmodel = \"gemma-270m\"\ntemperature = 0.0\nmax_tokens = 60\ninput_price = 1000.0\noutput_price = 2000.0\n",
            proxy.url()
        ),
        "manager",
        "local",
    );
    let id = org.send("manager", "Please reply to the human.");
    let (report, out) = step_env(&org, &[]);
    let calls = proxy.requests_to("/v1/messages");
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_eq!(calls[0].header("anthropic-version"), Some("2023-06-01"));
    let resp = response(&calls[0]);
    assert_eq!(resp["type"], "message", "{resp:#}");
    let u = &resp["usage"];
    let n = |k: &str| u[k].as_u64().unwrap_or(0);
    assert_charge(
        &org,
        "local",
        n("input_tokens") + n("cache_read_input_tokens") + n("cache_creation_input_tokens"),
        n("output_tokens"),
        prices,
    );
    if report["ran"] == json!(["manager"]) {
        assert!(!org.ids("manager", "inbox", "new").contains(&id), "{out}");
    } else {
        assert_eq!(report["failed"][0][0], "manager", "{out}");
        assert!(org.ids("manager", "inbox", "new").contains(&id), "a failed attempt consumed the mail\n{out}");
        let last = org.activity("manager").pop().unwrap();
        assert_eq!(last["outcome"], "failed");
        assert!(last["raw"].is_string(), "the raw reply is not kept: {last:#}");
    }
}

const FAKELLM_RULES: &str = r#"
rules:
  - name: rate_limited
    when:
      header.x-test-scenario: rate_limit
    respond:
      status: 429
      error: "Rate limit exceeded (mock)"
  - name: retry_first
    when:
      header.x-test-scenario: retry
      turn: 1
    respond:
      status: 429
      error: "slow down"
  - name: retry_then_ok
    when:
      header.x-test-scenario: retry
      turn_in: [2, 100]
    respond:
      content: '{"messages":[{"to":"human","body":"ok after retry"}]}'
  - name: server_error
    when:
      header.x-test-scenario: boom
    respond:
      status: 500
      error: "boom"
  - name: tool_call
    when:
      header.x-test-scenario: tools
    respond:
      tool_calls:
        - name: get_weather
          arguments: {city: Paris}
  - name: anthropic_json
    when:
      header.x-test-scenario: anthropic
    respond:
      content: '{"messages":[{"to":"manager","body":"hi from the messages api"}]}'
"#;

#[test]
fn fakellm_scripted_statuses_and_odd_but_legal_shapes() {
    let test = "fakellm_scripted_statuses_and_odd_but_legal_shapes";
    let Some(fakellm) = peer("LEMMING_FAKELLM") else { return skip(test, "fakellm") };
    let tmp = tempfile::tempdir().unwrap();
    let rules = tmp.path().join("rules.yaml");
    std::fs::write(&rules, FAKELLM_RULES).unwrap();
    let log = tmp.path().join("fakellm.log");
    let port = free_port();
    let args: Vec<String> =
        ["serve", "--host", "127.0.0.1", "--port", &port.to_string(), "--config", rules.to_str().unwrap()]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let upstream: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut child = start(&fakellm, &args, &log);
    wait_ready(&mut child, upstream, "/_fakellm/stats", Duration::from_secs(30), &log);
    let proxy = FakeServer::start(move |_, _| Answer::Forward(upstream));

    // One provider per scenario, each with its own conversation, one agent on each.
    let conv = format!("lemming-{}-{}", std::process::id(), port);
    let provider = |name: &str, kind: &str, scenario: &str, extra: &str| {
        let base = if kind == "openai" { format!("{}/v1", proxy.url()) } else { proxy.url() };
        format!(
            "[providers.{name}]\nkind = \"{kind}\"\nbase_url = \"{base}\"\nheaders = {{ \"X-Test-Scenario\" = \"{scenario}\", \"X-Fakellm-Conversation-Id\" = \"{conv}-{scenario}\" }}\nbackoff_ms = 50\n{extra}\n[models.{name}]\nprovider = \"{name}\"\nmodel = \"fake-{scenario}\"\ninput_price = 1.0\noutput_price = 2.0\n"
        )
    };
    let org = TestOrg::new();
    let tables = [
        provider("retry", "openai", "retry", "max_retries = 2"),
        provider("limited", "openai", "rate_limit", "max_retries = 1"),
        provider("boom", "openai", "boom", "max_retries = 0\nbreaker_threshold = 1\nbreaker_cooldown_secs = 600")
            .replace("output_price = 2.0\n", "output_price = 2.0\nfallback = \"default\"\n"),
        provider("tools", "openai", "tools", "max_retries = 0"),
        provider("claude", "anthropic", "anthropic", "max_retries = 0"),
    ]
    .join("\n");
    configure(&org, &tables, "manager", "retry");
    for (agent, key) in [("planner", "limited"), ("hr", "boom"), ("coder_01", "tools"), ("janitor", "claude")] {
        org.edit(&format!("agents/{agent}/resume.toml"), "model = \"default\"", &format!("model = \"{key}\""));
    }
    org.lemming_ok(&["validate"]);
    org.send("manager", "hello");
    let mut ids = BTreeMap::new();
    for agent in ["planner", "hr", "coder_01", "janitor"] {
        ids.insert(agent, org.send_from("manager", agent, &format!("hello {agent}")));
    }
    let (report, out) = step_env(&org, &[]);
    let by_scenario = |s: &str| -> Vec<fake_http::Recorded> {
        proxy.requests().into_iter().filter(|r| r.header("x-test-scenario") == Some(s)).collect()
    };
    let failed = failed_agents(&report);
    let ran: Vec<String> = serde_json::from_value(report["ran"].clone()).unwrap();

    // 429 then 200: one retry, and the reply arrives.
    assert!(ran.contains(&"manager".to_string()), "{out}");
    assert_eq!(by_scenario("retry").len(), 2);
    assert!(org.inbox_json("human").iter().any(|m| m["body"] == "ok after retry"));

    // 429 every time: the retries run out; the error names provider, model, status and body.
    assert_eq!(by_scenario("rate_limit").len(), 2, "one try and one retry");
    let why = &failed["planner"];
    assert!(
        why.contains("provider `limited` (model `limited`)")
            && why.contains("429")
            && why.contains("Rate limit exceeded (mock)"),
        "{why}"
    );
    assert!(org.ids("planner", "inbox", "new").contains(&ids["planner"]));

    // 500 with K = 1: the breaker opens and the fallback answers; the ledger names it.
    assert!(ran.contains(&"hr".to_string()), "{out}");
    let hr = charges(&org).into_iter().find(|c| c["agent"] == "hr").unwrap();
    assert_eq!(hr["model"], "default", "{hr:#}");
    let status = org.status_json();
    assert!(
        status["breakers"].as_array().unwrap().iter().any(|b| b["provider"] == "boom" && b["state"] == "open"),
        "{status:#}"
    );

    // A native tool call with `content: null` (though no function was offered): the call is
    // used, and the tool it names is no tool, which its result says; charged what the server reported.
    assert!(!failed.contains_key("coder_01"), "{failed:?}");
    let tools = response(&by_scenario("tools")[0]);
    assert!(tools["choices"][0]["message"]["content"].is_null(), "{tools:#}");
    let coder = charges(&org).into_iter().find(|c| c["agent"] == "coder_01").unwrap();
    assert_eq!(coder["output_tokens"], tools["usage"]["completion_tokens"], "{coder:#}");
    let result = crate::tools::tool_results(&org, "coder_01");
    assert_eq!(result.len(), 1, "{result:#?}");
    let body = crate::tools::body(&result[0]);
    assert!(body["error"].as_str().unwrap().starts_with("unknown tool `get_weather`"), "{body}");
    assert!(!org.ids("coder_01", "inbox", "new").contains(&ids["coder_01"]), "the mail was read");

    // The Messages API: the reply is routed, usage charged as reported.
    assert!(ran.contains(&"janitor".to_string()), "{out}");
    let claude = response(&by_scenario("anthropic")[0]);
    let janitor = charges(&org).into_iter().find(|c| c["agent"] == "janitor").unwrap();
    assert_eq!(janitor["input_tokens"], claude["usage"]["input_tokens"]);
    assert_eq!(janitor["output_tokens"], claude["usage"]["output_tokens"]);
    assert!(org
        .inbox_json("manager")
        .iter()
        .any(|m| m["from"] == "janitor" && m["body"] == "hi from the messages api"));
    assert!(!out.stderr.contains("panicked"), "{out}");
}
