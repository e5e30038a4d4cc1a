//! The real providers through the real binary: `openai` and `anthropic`
//! against in-process fake servers (see `fake_http.rs`), `command` against
//! shell scripts, retries, the circuit breaker and fallback, timeouts,
//! malformed bodies, costs and the org-wide budget, `models` and `doctor`.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::fake_http::{free_port, Answer, FakeServer};
use crate::fixture::{run, Output, TestOrg};

/// Appends provider and model tables to `org/models.toml` and gives `agent` the model `key`.
pub fn configure(org: &TestOrg, tables: &str, agent: &str, key: &str) {
    let base = org.read("org/models.toml");
    org.write("org/models.toml", format!("{base}\n{tables}"));
    org.edit(&format!("agents/{agent}/resume.toml"), "model = \"default\"", &format!("model = \"{key}\""));
}

/// `lemming --json step` with extra environment variables: the turn's report and the output.
#[track_caller]
pub fn step_env(org: &TestOrg, env: &[(&str, &str)]) -> (Value, Output) {
    let mut cmd = org.command(&["--json", "step"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run(&mut cmd).ok();
    let report = out.json()[0].clone();
    (report, out)
}

/// A chat-completions response.
pub fn chat(content: &str, usage: Option<(u64, u64)>) -> String {
    let mut v = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "test-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "system_fingerprint": "fp", "timings": {"predicted_ms": 1.0},
    });
    if let Some((i, o)) = usage {
        v["usage"] = json!({"prompt_tokens": i, "completion_tokens": o, "total_tokens": i + o});
    }
    v.to_string()
}

/// The charges of the ledger, in order.
pub fn charges(org: &TestOrg) -> Vec<Value> {
    org.ledger().into_iter().filter(|e| e["kind"] == "charge").collect()
}

#[track_caller]
fn assert_close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-12, "{a} != {b}");
}

/// Fails if `needle` is in any file under `dir`.
#[track_caller]
fn assert_nowhere(dir: &Path, needle: &str) {
    for (path, bytes) in crate::fixture::snapshot(dir) {
        assert!(!String::from_utf8_lossy(&bytes).contains(needle), "{needle:?} was written to {path}");
    }
}

const REPLY_TO_HUMAN: &str = r#"{"messages":[{"to":"human","body":"hello from the fake model"}],"notes":"n"}"#;

#[test]
fn openai_sends_the_configured_request_delivers_the_reply_and_charges_usage_times_prices() {
    let server = FakeServer::start(|_, _| Answer::json(chat(REPLY_TO_HUMAN, Some((1000, 500)))));
    let org = TestOrg::new();
    configure(
        &org,
        &format!(
            r#"
[providers.fake]
kind = "openai"
base_url = "{}/v1"
api_key_env = "FAKE_OPENAI_KEY"
headers = {{ "X-Org" = "acme" }}
timeout_secs = 10
max_retries = 0

[models.smart]
provider = "fake"
model = "test-model"
temperature = 0.3
max_tokens = 77
structured = "json_schema"
input_price = 2.0
output_price = 8.0
"#,
            server.url()
        ),
        "manager",
        "smart",
    );
    org.lemming_ok(&["validate"]);
    let id = org.send("manager", "hello manager, please answer");
    let secret = "sk-test-secret-4f9a2c";
    let (report, out) = step_env(&org, &[("FAKE_OPENAI_KEY", secret)]);
    assert_eq!(report["ran"], json!(["manager"]), "{out}");

    let reqs = server.requests();
    assert_eq!(reqs.len(), 1, "one call, no retry");
    let r = &reqs[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/v1/chat/completions"));
    assert_eq!(r.header("authorization"), Some(format!("Bearer {secret}").as_str()));
    assert_eq!(r.header("x-org"), Some("acme"));
    let body = r.json();
    assert_eq!(body["model"], "test-model");
    assert_eq!(body["temperature"], 0.3);
    assert_eq!(body["max_tokens"], 77);
    assert_eq!(body["messages"][0]["role"], "system");
    assert!(body["messages"][0]["content"].as_str().unwrap().contains("You are manager"), "{body:#}");
    assert_eq!(body["messages"][1]["role"], "user");
    let user = body["messages"][1]["content"].as_str().unwrap();
    assert!(user.contains("hello manager, please answer") && user.contains(&id), "{user}");
    let can_reach = org.lemming_ok(&["inspect", "manager", "--json"]).json()["can_reach"].clone();
    let schema = &body["response_format"]["json_schema"]["schema"];
    // The agents it may reach, then `*` for all of them (the default org has no groups).
    let mut may = can_reach.as_array().unwrap().clone();
    may.push(json!("*"));
    assert_eq!(schema["properties"]["messages"]["items"]["properties"]["to"]["enum"], json!(may), "{body:#}");

    let inbox = org.inbox_json("human");
    assert_eq!(inbox.len(), 1, "{inbox:#?}");
    assert_eq!(
        (inbox[0]["from"].as_str(), inbox[0]["body"].as_str()),
        (Some("manager"), Some("hello from the fake model"))
    );

    let c = charges(&org);
    assert_eq!(c.len(), 1);
    assert_eq!(
        (c[0]["model"].as_str(), c[0]["input_tokens"].as_u64(), c[0]["output_tokens"].as_u64()),
        (Some("smart"), Some(1000), Some(500))
    );
    assert_close(c[0]["cost"].as_f64().unwrap(), (1000.0 * 2.0 + 500.0 * 8.0) / 1e6);
    assert!(c[0].get("estimated").is_none(), "the server reported usage: {:#}", c[0]);
    let status = org.status_json();
    assert_close(status["spent_by_model"]["smart"].as_f64().unwrap(), 0.006);
    org.assert_ledger_balances();

    // The key never reaches a file or the output.
    assert_nowhere(&org.root, secret);
    assert!(!out.stdout.contains(secret) && !out.stderr.contains(secret));
}

#[test]
fn openai_without_usage_is_charged_an_estimate_marked_as_such() {
    let server = FakeServer::start(|_, _| Answer::json(chat(REPLY_TO_HUMAN, None)));
    let org = TestOrg::new();
    configure(
        &org,
        &format!(
            "[providers.fake]\nkind = \"openai\"\nbase_url = \"{}/v1\"\nmax_retries = 0\n\n[models.smart]\nprovider = \"fake\"\ninput_price = 2.0\noutput_price = 8.0\n",
            server.url()
        ),
        "manager",
        "smart",
    );
    org.send("manager", "hello");
    let (report, out) = step_env(&org, &[]);
    assert_eq!(report["ran"], json!(["manager"]), "{out}");
    let body = server.requests()[0].json();
    assert_eq!(body["model"], "smart", "no `model` set: the key is sent");
    assert!(
        body.get("temperature").is_none() && body.get("max_tokens").is_none() && body.get("response_format").is_none()
    );
    let c = &charges(&org)[0];
    assert_eq!(c["estimated"], true, "{c:#}");
    let (i, o) = (c["input_tokens"].as_u64().unwrap(), c["output_tokens"].as_u64().unwrap());
    assert_eq!(o, (REPLY_TO_HUMAN.chars().count() as u64).div_ceil(4));
    assert!(i > 100, "{c:#}");
    assert_close(c["cost"].as_f64().unwrap(), (i as f64 * 2.0 + o as f64 * 8.0) / 1e6);
}

#[test]
fn azure_posts_to_the_deployment_with_an_api_key_header() {
    let server = FakeServer::start(|_, _| Answer::json(chat(REPLY_TO_HUMAN, Some((10, 5)))));
    let org = TestOrg::new();
    configure(
        &org,
        &format!(
            "[providers.az]\nkind = \"openai\"\nbase_url = \"{}\"\nazure_api_version = \"2024-10-21\"\napi_key_env = \"AZ_KEY\"\nmax_retries = 0\n\n[models.gpt]\nprovider = \"az\"\nmodel = \"gpt-4o\"\ndeployment = \"prod-4o\"\n",
            server.url()
        ),
        "manager",
        "gpt",
    );
    org.send("manager", "hello");
    let (report, out) = step_env(&org, &[("AZ_KEY", "azure-key-77")]);
    assert_eq!(report["ran"], json!(["manager"]), "{out}");
    let r = &server.requests()[0];
    assert_eq!(r.path, "/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21");
    assert_eq!(r.header("api-key"), Some("azure-key-77"));
    assert_eq!(r.header("authorization"), None);
}

#[test]
fn anthropic_sends_the_messages_request_delivers_the_reply_and_charges_usage_times_prices() {
    let server = FakeServer::start(|_, _| {
        Answer::json(
            json!({
                "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test",
                "content": [{"type": "text", "text": REPLY_TO_HUMAN}],
                "stop_reason": "end_turn", "stop_sequence": null,
                "usage": {"input_tokens": 30, "cache_read_input_tokens": 70, "output_tokens": 50}
            })
            .to_string(),
        )
    });
    let org = TestOrg::new();
    configure(
        &org,
        &format!(
            "[providers.claude]\nkind = \"anthropic\"\nbase_url = \"{}\"\napi_key_env = \"ANTHROPIC_TEST_KEY\"\nmax_retries = 0\n\n[models.sonnet]\nprovider = \"claude\"\nmodel = \"claude-test\"\ntemperature = 0.5\nmax_tokens = 321\ninput_price = 3.0\noutput_price = 15.0\n",
            server.url()
        ),
        "manager",
        "sonnet",
    );
    let id = org.send("manager", "hello claude");
    let (report, out) = step_env(&org, &[("ANTHROPIC_TEST_KEY", "ant-key-123")]);
    assert_eq!(report["ran"], json!(["manager"]), "{out}");
    let r = &server.requests()[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/v1/messages"));
    assert_eq!(r.header("x-api-key"), Some("ant-key-123"));
    assert_eq!(r.header("anthropic-version"), Some("2023-06-01"));
    let body = r.json();
    assert_eq!(body["model"], "claude-test");
    assert_eq!(body["max_tokens"], 321);
    assert_eq!(body["temperature"], 0.5);
    assert!(body["system"].as_str().unwrap().contains("You are manager"), "{body:#}");
    assert_eq!(body["messages"].as_array().unwrap().len(), 1);
    assert_eq!(body["messages"][0]["role"], "user");
    assert!(body["messages"][0]["content"].as_str().unwrap().contains(&id));
    assert_eq!(org.inbox_json("human")[0]["body"], "hello from the fake model");
    let c = &charges(&org)[0];
    assert_eq!(
        (c["model"].as_str(), c["input_tokens"].as_u64(), c["output_tokens"].as_u64()),
        (Some("sonnet"), Some(100), Some(50))
    );
    assert_close(c["cost"].as_f64().unwrap(), (100.0 * 3.0 + 50.0 * 15.0) / 1e6);
    assert_nowhere(&org.root, "ant-key-123");
}

#[test]
fn a_429_with_retry_after_costs_one_retry_and_about_a_second() {
    let server = FakeServer::start(|_, n| {
        if n == 0 {
            Answer::Respond {
                status: 429,
                headers: vec![("Retry-After".into(), "1".into())],
                body: r#"{"error":{"message":"slow down"}}"#.into(),
            }
        } else {
            Answer::json(chat(REPLY_TO_HUMAN, Some((10, 5))))
        }
    });
    let org = TestOrg::new();
    // A backoff of 10 ms: only Retry-After can explain a wait of a second.
    configure(
        &org,
        &format!(
            "[providers.fake]\nkind = \"openai\"\nbase_url = \"{}/v1\"\nmax_retries = 3\nbackoff_ms = 10\n\n[models.smart]\nprovider = \"fake\"\n",
            server.url()
        ),
        "manager",
        "smart",
    );
    org.send("manager", "hello");
    let t = Instant::now();
    let (report, out) = step_env(&org, &[]);
    assert_eq!(report["ran"], json!(["manager"]), "{out}");
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2, "one retry");
    let gap = reqs[1].at - reqs[0].at;
    assert!(gap >= Duration::from_millis(950) && gap < Duration::from_millis(2500), "waited {gap:?}");
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(out.stderr.contains("retrying") && out.stderr.contains("429"), "{out}");
    assert_eq!(org.inbox_json("human").len(), 1);
}

#[test]
fn a_server_that_always_fails_opens_the_breaker_and_the_fallback_answers() {
    let server = FakeServer::start(|_, _| Answer::status(500, r#"{"error":{"message":"boom: the GPU caught fire"}}"#));
    let org = TestOrg::new();
    configure(
        &org,
        &format!(
            "[providers.flaky]\nkind = \"openai\"\nbase_url = \"{}/v1\"\nmax_retries = 1\nbackoff_ms = 10\nbreaker_threshold = 2\nbreaker_cooldown_secs = 600\n\n[models.main]\nprovider = \"flaky\"\nfallback = \"default\"\n",
            server.url()
        ),
        "manager",
        "main",
    );
    let mut expected_requests = 0;
    for turn in 1..=3 {
        org.send("manager", &format!("message {turn}"));
        let (report, out) = step_env(&org, &[]);
        assert_eq!(report["ran"], json!(["manager"]), "turn {turn}: the fallback did not answer\n{out}");
        if turn <= 2 {
            expected_requests += 2; // one call = a try and a retry
            assert!(out.stderr.contains("trying fallback") && out.stderr.contains("HTTP 500"), "{out}");
            assert!(out.stderr.contains("boom: the GPU caught fire"), "the error has no body excerpt\n{out}");
        } else {
            assert!(out.stderr.contains("circuit breaker open"), "{out}");
        }
        assert_eq!(server.requests().len(), expected_requests, "turn {turn}");
        let last = charges(&org).pop().unwrap();
        assert_eq!((last["turn"].as_u64(), last["model"].as_str()), (Some(turn), Some("default")), "{last:#}");
        if turn == 1 {
            let b = &org.status_json()["breakers"][0];
            assert_eq!((b["state"].as_str(), b["consecutive_failures"].as_u64()), (Some("closed"), Some(1)), "{b:#}");
        }
    }
    let status = org.status_json();
    let b = &status["breakers"][0];
    assert_eq!((b["provider"].as_str(), b["state"].as_str()), (Some("flaky"), Some("open")), "{status:#}");
    assert!(b["last_error"].as_str().unwrap().contains("HTTP 500"));
    let text = org.lemming_ok(&["status"]).stdout;
    assert!(text.contains("breaker OPEN: provider flaky"), "{text}");
    assert_eq!(org.inbox_json("human").len(), 3, "the fallback's answers were delivered");
}

#[test]
fn a_hanging_server_is_cut_at_the_timeout_and_the_mail_stays_unread() {
    let server = FakeServer::start(|_, _| Answer::Hang);
    let org = TestOrg::new();
    configure(
        &org,
        &format!(
            "[providers.slow]\nkind = \"openai\"\nbase_url = \"{}/v1\"\ntimeout_secs = 1\nmax_retries = 0\n\n[models.smart]\nprovider = \"slow\"\n",
            server.url()
        ),
        "manager",
        "smart",
    );
    let id = org.send("manager", "hello");
    let t = Instant::now();
    let (report, out) = step_env(&org, &[]);
    let took = t.elapsed();
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(6), "the step took {took:?}");
    assert_eq!(report["failed"][0][0], "manager", "{out}");
    let why = report["failed"][0][1].as_str().unwrap();
    assert!(why.contains("provider `slow` (model `smart`)") && why.contains("within 1.0 s"), "{why}");
    assert!(org.ids("manager", "inbox", "new").contains(&id), "the mail was consumed");
    // A timeout is the provider's failure, not the mail's: no failed attempt is counted.
    let inspect = org.lemming_ok(&["inspect", "manager", "--json"]).json();
    assert!(inspect["failed_attempts"].get(&id).is_none(), "{inspect:#}");
    assert_eq!(org.agent_status("manager")["state"], "provider_down");
    assert!(charges(&org).is_empty(), "nothing answered, nothing charged");
}

#[test]
fn malformed_bodies_are_failed_attempts_with_a_clear_log_line() {
    let server = FakeServer::start(|_, n| match n {
        0 => Answer::json("this is not json at all"),
        _ => Answer::json(r#"{"object":"list","data":[]}"#),
    });
    let org = TestOrg::new();
    configure(
        &org,
        &format!(
            "[providers.odd]\nkind = \"openai\"\nbase_url = \"{}/v1\"\nmax_retries = 0\n\n[models.smart]\nprovider = \"odd\"\n",
            server.url()
        ),
        "manager",
        "smart",
    );
    let id = org.send("manager", "hello");
    for needle in ["the response is not JSON", "the response has no `choices`"] {
        let (report, out) = step_env(&org, &[]);
        assert_eq!(report["failed"][0][0], "manager", "{out}");
        assert!(report["failed"][0][1].as_str().unwrap().contains(needle), "{report:#}");
        assert!(out.stderr.contains(needle) && out.stderr.contains("mail stays unread"), "no clear log line\n{out}");
        assert!(!out.stderr.contains("panicked"), "{out}");
        assert!(org.ids("manager", "inbox", "new").contains(&id));
    }
    assert_eq!(server.requests().len(), 2);
}

fn write_script(org: &TestOrg, rel: &str, body: &str) {
    org.write(rel, format!("#!/bin/sh\n{body}\n"));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(org.path(rel), std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn command_reads_the_prompt_on_stdin_only_and_its_stdout_is_the_reply() {
    let org = TestOrg::new();
    write_script(
        &org,
        "bin/echo-model.sh",
        r#"cat > stdin.txt
printf '%s\n' "$@" > args.txt
env > env.txt
last=$(tail -n 1 stdin.txt | tr -d '"\\')
printf '{"messages":[{"to":"human","body":"echo: %s"}]}\n' "$last""#,
    );
    configure(
        &org,
        "[providers.cli]\nkind = \"command\"\nprogram = \"bin/echo-model.sh\"\nargs = [\"--fixed-arg\"]\nenv = [\"PATH\", \"ALLOWED_VAR\"]\ntimeout_secs = 10\n\n[models.local]\nprovider = \"cli\"\nmodel = \"tiny\"\ncost_per_call = 0.25\n",
        "manager",
        "local",
    );
    org.lemming_ok(&["validate"]);
    let tricky = r#"-rf --help $(touch pwned1) `touch pwned2`; touch pwned3 | cat & "quoted' \ *"#;
    org.lemming_ok(&["send", "manager", "--", tricky]);
    let (report, out) = step_env(&org, &[("ALLOWED_VAR", "yes"), ("SECRET_VAR", "no-no")]);
    assert_eq!(report["ran"], json!(["manager"]), "{out}");

    let ws = "agents/manager/workspace";
    let stdin = org.read(&format!("{ws}/stdin.txt"));
    assert!(stdin.starts_with("You are manager") && stdin.trim_end().ends_with(tricky), "{stdin}");
    assert_eq!(org.read(&format!("{ws}/args.txt")), "--fixed-arg\n", "the prompt leaked into argv");
    let env = org.read(&format!("{ws}/env.txt"));
    assert!(
        env.contains("ALLOWED_VAR=yes") && env.contains("LEMMING_AGENT=manager") && env.contains("LEMMING_MODEL=tiny")
    );
    assert!(!env.contains("SECRET_VAR") && !env.contains("LEMMING_ORG"), "{env}");
    for (path, _) in crate::fixture::snapshot(org.tmp.path()) {
        assert!(!path.contains("pwned"), "a shell ran the prompt: {path}");
    }
    let reply = &org.inbox_json("human")[0];
    let expected: String = tricky.chars().filter(|c| *c != '"' && *c != '\\').collect();
    assert_eq!(reply["body"].as_str().unwrap(), format!("echo: {expected}"));
    let c = &charges(&org)[0];
    assert_eq!(
        (c["model"].as_str(), c["cost"].as_f64(), c["estimated"].as_bool()),
        (Some("local"), Some(0.25), Some(true))
    );
}

#[test]
fn command_that_sleeps_past_the_timeout_is_killed_and_the_mail_stays_unread() {
    let org = TestOrg::new();
    write_script(&org, "bin/sleeper.sh", "echo $$ > pid\necho 'thinking...' >&2\nexec sleep 30");
    configure(
        &org,
        "[providers.cli]\nkind = \"command\"\nprogram = \"bin/sleeper.sh\"\ntimeout_secs = 1\nmax_retries = 0\n\n[models.local]\nprovider = \"cli\"\n",
        "manager",
        "local",
    );
    let id = org.send("manager", "hello");
    let t = Instant::now();
    let (report, out) = step_env(&org, &[]);
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    let why = report["failed"][0][1].as_str().unwrap_or_default();
    assert!(
        why.contains("did not finish within 1.0 s") && why.contains("killed") && why.contains("thinking..."),
        "{out}"
    );
    let pid: i32 = org.read("agents/manager/workspace/pid").trim().parse().unwrap();
    // SAFETY: signal 0 only checks whether the process exists.
    assert!(unsafe { libc::kill(pid, 0) } != 0, "the sleeper {pid} is still alive");
    assert!(org.ids("manager", "inbox", "new").contains(&id));
    assert!(org.read("agents/manager/logs/command-stderr.log").contains("thinking..."));
}

#[test]
fn an_org_budget_stops_every_model_call_once_spent() {
    let org = TestOrg::new();
    org.write("org/org.toml", format!("{}\nbudget = 0.01\n", org.read("org/org.toml")));
    org.send("manager", "first @planner");
    let (report, _) = step_env(&org, &[]);
    assert_eq!(report["ran"], json!(["manager"]), "{report:#}");
    let status = org.status_json();
    assert!(status["spent"].as_f64().unwrap() >= 0.01, "the mock prices did not spend the budget: {status:#}");
    assert_eq!(status["budget"]["exhausted"], true, "{status:#}");

    let id = org.send("manager", "second");
    let (report, _) = step_env(&org, &[]);
    assert_eq!(report["ran"], json!([]), "{report:#}");
    let skipped: Vec<(String, String)> = serde_json::from_value(report["skipped"].clone()).unwrap();
    assert!(skipped.contains(&("manager".into(), "org_budget_spent".into())), "{report:#}");
    assert!(skipped.contains(&("planner".into(), "org_budget_spent".into())), "{report:#}");
    assert!(org.ids("manager", "inbox", "new").contains(&id));
    assert_eq!(org.agent_status("manager")["state"], "org_budget_spent");
    let text = org.lemming_ok(&["status"]).stdout;
    assert!(text.contains("org budget: SPENT"), "{text}");

    org.edit("org/org.toml", "budget = 0.01", "budget = 1000.0");
    let (report, _) = step_env(&org, &[]);
    assert!(report["ran"].as_array().unwrap().contains(&json!("manager")), "raising the budget resumes: {report:#}");
    org.assert_ledger_balances();
}

#[test]
fn models_lists_keys_providers_and_prices() {
    let org = TestOrg::new();
    configure(
        &org,
        "[providers.cloud]\nkind = \"openai\"\nbase_url = \"https://api.example.com/v1\"\napi_key_env = \"K\"\n\n[models.smart]\nprovider = \"cloud\"\nmodel = \"gpt-x\"\ninput_price = 0.15\noutput_price = 0.6\nstructured = \"json_schema\"\nfallback = \"default\"\n\n[models.flat]\nprovider = \"mock\"\ncost_per_call = 0.01\n",
        "planner",
        "smart",
    );
    let out = org.lemming_ok(&["models"]);
    let line = out.stdout.lines().find(|l| l.starts_with("smart")).unwrap_or_else(|| panic!("{out}"));
    for part in ["cloud", "openai", "gpt-x", "0.15 in / 0.6 out per M tokens", "json_schema", "default", "planner"] {
        assert!(line.contains(part), "{part:?} missing from {line:?}");
    }
    assert!(out.stdout.contains("0.01 per call"), "{out}");
    let rows = org.lemming_ok(&["models", "--json"]).json();
    let smart = rows.as_array().unwrap().iter().find(|r| r["key"] == "smart").unwrap();
    assert_eq!(smart["price"], json!({"input_per_million": 0.15, "output_per_million": 0.6}));
    assert_eq!(smart["kind"], "openai");
}

#[test]
fn doctor_gives_each_provider_a_verdict_within_its_deadline() {
    let good = FakeServer::start(|r, _| {
        if r.path.ends_with("/models") {
            Answer::json(r#"{"object":"list","data":[{"id":"m"}]}"#)
        } else {
            Answer::json(chat("OK", Some((5, 1))))
        }
    });
    let locked = FakeServer::start(|_, _| Answer::status(401, r#"{"error":{"message":"Invalid API Key"}}"#));
    let hanging = FakeServer::start(|_, _| Answer::Hang);
    let org = TestOrg::new();
    let tables = format!(
        r#"
[providers.good]
kind = "openai"
base_url = "{}/v1"
api_key_env = "GOOD_KEY"
[models.g]
provider = "good"

[providers.locked]
kind = "anthropic"
base_url = "{}"
api_key_env = "GOOD_KEY"
[models.l]
provider = "locked"

[providers.gone]
kind = "openai"
base_url = "http://127.0.0.1:{}/v1"
[models.x]
provider = "gone"

[providers.stuck]
kind = "openai"
base_url = "{}/v1"
[models.s]
provider = "stuck"

[providers.nocli]
kind = "command"
program = "lemming-no-such-program"
[models.c]
provider = "nocli"
"#,
        good.url(),
        locked.url(),
        free_port(),
        hanging.url()
    );
    configure(&org, &tables, "manager", "g");
    let t = Instant::now();
    let mut cmd = org.command(&["doctor", "--json"]);
    cmd.env("GOOD_KEY", "good-key-1");
    let out = run(&mut cmd).fails_with(1);
    assert!(t.elapsed() < Duration::from_secs(5), "the checks did not run at once within 500 ms: {:?}", t.elapsed());
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    let verdicts = report["providers"].as_array().unwrap();
    let verdict = |p: &str| {
        let v = verdicts.iter().find(|v| v["provider"] == p).unwrap_or_else(|| panic!("no verdict for {p}\n{out}"));
        (v["verdict"].as_str().unwrap().to_string(), v["details"].to_string(), v["elapsed_ms"].as_u64().unwrap())
    };
    let (v, d, _) = verdict("good");
    assert_eq!(v, "ok", "{d}");
    assert!(d.contains("tiny request"), "{d}");
    assert_eq!(good.requests_to("/v1/chat/completions")[0].json()["max_tokens"], 1);
    assert_eq!(good.requests()[0].header("authorization"), Some("Bearer good-key-1"));
    assert_eq!(verdict("locked").0, "auth failed");
    assert_eq!(verdict("gone").0, "unreachable");
    let (v, d, ms) = verdict("stuck");
    assert_eq!(v, "unreachable", "{d}");
    assert!((450..1500).contains(&ms), "the deadline is 500 ms: {ms}");
    let (v, d, _) = verdict("nocli");
    assert_eq!(v, "error");
    assert!(d.contains("not in PATH"), "{d}");
    assert!(out.stderr.contains("4 provider(s) failed the check"), "{out}");
    assert!(!out.stdout.contains("good-key-1"));

    let text = run(org.command(&["doctor", "--no-call"]).env("GOOD_KEY", "good-key-1")).fails_with(1);
    assert!(
        text.stdout.contains("good") && text.stdout.contains("OK") && text.stdout.contains("no test request sent"),
        "{text}"
    );
}

#[test]
fn every_preset_in_examples_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/models");
    let mut presets: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).collect();
    presets.sort();
    let names: Vec<String> = presets.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    for want in [
        "openai",
        "anthropic",
        "ollama",
        "lmstudio",
        "vllm",
        "llamacpp",
        "command",
        "gemini",
        "groq",
        "openrouter",
        "llamafile",
        "sglang",
    ] {
        assert!(names.contains(&format!("{want}.toml")), "no preset {want}.toml in {names:?}");
    }
    for p in presets {
        let org = TestOrg::new();
        std::fs::copy(&p, org.path("org/models.toml")).unwrap();
        let out = org.lemming(&["validate"]);
        assert_eq!(out.code, Some(0), "{} does not validate\n{out}", p.display());
        let models = org.lemming_ok(&["models", "--json"]).json();
        assert!(models.as_array().unwrap().iter().any(|m| m["key"] == "default"), "{}: no `default` key", p.display());
    }
}
