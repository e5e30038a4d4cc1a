//! Tools on the real binary: the mock calls the tool named by a `/tool NAME
//! {args}` line, the turn runs it and delivers its result to the caller's inbox
//! as a `tool_result` message; refusals are results too; a call with a side
//! effect runs at most once across kill -9 (G8); a hire joins a running daemon.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::crash::Lcg;
use crate::fixture::{run, wait_until, TestOrg};

/// Every `tool_result` message of `agent`, read or not (oldest first).
pub fn tool_results(org: &TestOrg, agent: &str) -> Vec<Value> {
    let mut out: Vec<Value> = ["new", "cur"]
        .iter()
        .flat_map(|sub| org.files(&format!("agents/{agent}/inbox/{sub}")).into_iter().map(move |f| (sub, f)))
        .filter_map(|(sub, f)| std::fs::read(org.path(&format!("agents/{agent}/inbox/{sub}/{f}"))).ok())
        .filter_map(|b| serde_json::from_slice::<Value>(&b).ok())
        .filter(|m| m["kind"] == "tool_result")
        .collect();
    out.sort_by_key(|m| m["id"].as_str().unwrap_or_default().to_string());
    out
}

/// The body of a `tool_result` message, parsed.
#[track_caller]
pub fn body(result: &Value) -> Value {
    serde_json::from_str(result["body"].as_str().unwrap()).unwrap_or_else(|e| panic!("{e}: {result}"))
}

/// The tool calls in `agent`'s activity log: (call id, tool, ok).
fn logged_calls(org: &TestOrg, agent: &str) -> Vec<(String, String, bool)> {
    org.activity(agent)
        .iter()
        .flat_map(|a| a["tools"].as_array().cloned().unwrap_or_default())
        .map(|t| (t["call"].as_str().unwrap().into(), t["tool"].as_str().unwrap().into(), t["ok"] == true))
        .collect()
}

#[test]
fn a_mock_agent_writes_then_reads_a_file_and_gets_both_results_as_tool_result_mail() {
    let org = TestOrg::new();
    org.send(
        "manager",
        "please keep notes\n/tool write_file {\"path\":\"notes/today.md\",\"content\":\"hello tools\"}\n\
         /tool read_file {\"path\":\"notes/today.md\"}",
    );
    let report = org.step();
    assert_eq!(report["tool_calls"], 2, "{report:#}");
    assert_eq!(org.read("agents/manager/workspace/notes/today.md"), "hello tools");

    let calls = logged_calls(&org, "manager");
    let tools: Vec<&str> = calls.iter().map(|c| c.1.as_str()).collect();
    assert_eq!(tools, ["write_file", "read_file"], "{calls:?}");
    assert!(calls.iter().all(|c| c.2), "{calls:?}");
    let results = tool_results(&org, "manager");
    assert_eq!(results.len(), 2, "{results:#?}");
    for (result, call) in results.iter().zip(&calls) {
        assert_eq!(result["from"].as_str(), Some("lemming"));
        assert_eq!(crate::fixture::recipients(result), ["manager"]);
        assert_eq!(result["reply_to"].as_str(), Some(call.0.as_str()), "the result answers its call");
        assert_eq!(body(result)["tool"].as_str(), Some(call.1.as_str()));
    }
    assert_eq!(body(&results[1])["output"], "hello tools", "{results:#?}");
    assert_eq!(org.status_json()["tool_calls"], 2);
    let logs = org.lemming_ok(&["logs", "manager"]).stdout;
    assert!(logs.contains("tool write_file (call ") && logs.contains("ms: ok"), "{logs}");

    // The results wake the agent: it reads them, and the mock tells the sender how they went.
    let report = org.step();
    assert_eq!(report["ran"], serde_json::json!(["manager"]), "{report:#}");
    let acks: Vec<String> = org.inbox_json("human").iter().map(|m| m["body"].as_str().unwrap().to_string()).collect();
    assert!(acks.iter().any(|b| b.starts_with("tool write_file ok")), "{acks:?}");
    assert!(acks.iter().any(|b| b.starts_with("tool read_file ok") && b.contains("hello tools")), "{acks:?}");
    assert!(org.inbox_json("manager").is_empty(), "the results were read");
    org.lemming_ok(&["fsck"]);
}

#[test]
fn a_call_to_a_tool_not_granted_or_unknown_gets_a_result_that_says_so() {
    let org = TestOrg::new();
    org.send(
        "manager",
        "/tool hire_agent {\"name\":\"spy\",\"title\":\"Spy\",\"instructions\":\"x\",\"send_to\":[],\"read_from\":[]}\n\
         /tool teleport {}\n/tool read_file [1, 2]",
    );
    let report = org.step();
    assert_eq!(report["tool_calls"], 3, "{report:#}");
    let errors: Vec<String> =
        tool_results(&org, "manager").iter().map(|r| body(r)["error"].as_str().unwrap_or_default().into()).collect();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(errors.iter().any(|e| e.starts_with("not permitted")), "{errors:?}");
    assert!(errors.iter().any(|e| e.starts_with("unknown tool `teleport`")), "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("must be a JSON object")), "{errors:?}");
    assert!(!org.path("agents/spy").exists(), "a refused hire created a folder");
    org.step();
    let acks: Vec<String> = org.inbox_json("human").iter().map(|m| m["body"].as_str().unwrap().to_string()).collect();
    assert!(acks.iter().any(|b| b.contains("hire_agent failed: not permitted")), "{acks:?}");
}

/// A program on `PATH` that appends a line to `out.txt` in its working folder
/// (the agent's workspace), slowly enough to be killed while it runs.
fn append_line_program(dir: &Path) {
    let p = dir.join("append-line");
    std::fs::write(&p, "#!/bin/sh\nsleep 0.05\necho line >> out.txt\nsleep 0.05\n").unwrap();
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

/// An org whose coder may run `append-line`, unconfined (the point is G8, not
/// the sandbox), with one message asking it to.
fn append_org() -> TestOrg {
    let org = TestOrg::new();
    org.edit("org/org.toml", "sandbox = \"auto\"", "sandbox = \"none\"");
    org.edit("agents/manager/resume.toml", "tools = [", "commands = [\"append-line\"]\ntools = [\"run_command\", ");
    org.send("manager", "/tool run_command {\"program\":\"append-line\"}");
    org
}

fn path_with(bin: &Path) -> std::ffi::OsString {
    let mut path = bin.as_os_str().to_owned();
    path.push(":");
    path.push(std::env::var_os("PATH").unwrap_or_default());
    path
}

#[test]
fn kill_9_during_a_side_effect_never_runs_it_twice() {
    let bin = tempfile::tempdir().unwrap();
    append_line_program(bin.path());
    let path = path_with(bin.path());
    let seed = std::env::var("LEMMING_E2E_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_700d_u64);
    let mut rng = Lcg(seed);
    let points = ["tools_started", "tools_ran", "acted", "effects", "consumed", "committed"];
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    for round in 0..(points.len() + 24) {
        let org = append_org();
        let context = format!("round {round} (seed {seed})");
        if let Some(point) = points.get(round) {
            let out = run(org.command(&["step"]).env("PATH", &path).env("LEMMING_CRASH_AT", point));
            assert_eq!(out.signal, Some(libc::SIGABRT), "{context}: {point} was not reached\n{out}");
        } else {
            let mut child =
                org.command(&["step"]).env("PATH", &path).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
            std::thread::sleep(Duration::from_millis(rng.below(250)));
            let _ = child.kill();
            let _ = child.wait();
        }
        // Recovery: steps until the call has its result.
        let start = Instant::now();
        while tool_results(&org, "manager").is_empty() {
            run(org.command(&["step"]).env("PATH", &path)).ok();
            assert!(start.elapsed() < Duration::from_secs(30), "{context}: no result after recovery");
        }
        let lines = std::fs::read_to_string(org.path("agents/manager/workspace/out.txt")).unwrap_or_default();
        let results = tool_results(&org, "manager");
        assert_eq!(results.len(), 1, "{context}: {results:#?}");
        let b = body(&results[0]);
        let ran = lines.lines().count();
        assert!(ran <= 1, "{context}: the command ran {ran} times");
        if b["ok"] == true {
            assert_eq!(ran, 1, "{context}: ok without the line");
        } else {
            assert!(b["error"].as_str().unwrap().starts_with("interrupted"), "{context}: {b}");
        }
        *outcomes.entry(if b["ok"] == true { "ok".into() } else { "interrupted".into() }).or_default() += 1;
        org.lemming_ok(&["fsck"]);
    }
    eprintln!("kill -9 during run_command: {outcomes:?}");
    assert!(outcomes.contains_key("interrupted"), "no kill landed while the command ran: {outcomes:?}");
}

#[test]
fn a_hire_is_validated_audited_and_joins_a_running_daemon_on_the_next_turn() {
    let org = TestOrg::new();
    let mut d = org.spawn_run(&[]);
    d.wait_ready();
    // The manager forwards the body to hr (the @mention); hr is granted hire_agent, the manager is not.
    org.send(
        "manager",
        "@hr we need a tester\n/tool hire_agent {\"name\":\"tester\",\"title\":\"Tester\",\
         \"instructions\":\"Test what the coders build.\",\"send_to\":[\"hr\"],\"read_from\":[\"hr\"],\"credits\":5}",
    );
    let hired = wait_until(Duration::from_secs(10), || org.path("agents/tester/resume.toml").exists());
    assert!(hired, "no hire\n{d}");
    // The daemon loads it on its next turn: it keeps the valid resume as its last good version.
    let joined = wait_until(Duration::from_secs(10), || org.last_good_resume("tester").is_some());
    assert!(joined, "the daemon did not pick up the new agent\n{d}");
    org.lemming_ok(&["validate"]);
    let tester = org.agent_status("tester");
    assert_eq!(tester["credits"]["left"], 5.0, "{tester:#}");
    let audit = org.read("org/state/audit.jsonl");
    let hires: Vec<Value> =
        audit.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|e| e["action"] == "hire").collect();
    assert!(hires.iter().any(|e| e["who"] == "hr" && e["outcome"] == "ok"), "{audit}");
    let errors: Vec<Value> = tool_results(&org, "manager").iter().map(body).collect();
    assert!(errors.iter().any(|b| b["error"].as_str().is_some_and(|e| e.starts_with("not permitted"))), "{errors:?}");
    d.assert_running("after the hire");
}

/// The server's answers for the two runs of a native-tools agent: first a
/// native call of `read_file`, then a reply that says nothing.
fn native_org(server_url: &str, kind: &str) -> TestOrg {
    let org = TestOrg::new();
    let base = if kind == "openai" { format!("{server_url}/v1") } else { server_url.to_string() };
    crate::providers::configure(
        &org,
        &format!(
            "[providers.fake]\nkind = \"{kind}\"\nbase_url = \"{base}\"\napi_key_env = \"FAKE_KEY\"\nmax_retries = 0\n\n\
             [models.native]\nprovider = \"fake\"\ntools = \"native\"\n"
        ),
        "manager",
        "native",
    );
    org.write("agents/manager/workspace/plan.md", "step one: ship it");
    org.send("manager", "read the plan");
    org
}

/// Two turns of a native-tools agent against `server`: the call runs, and the
/// second request carries its result.
fn native_round_trip(org: &TestOrg, server: &crate::fake_http::FakeServer, tools_of: impl Fn(&Value) -> Vec<String>) {
    let (report, out) = crate::providers::step_env(org, &[("FAKE_KEY", "k")]);
    assert_eq!(report["tool_calls"], 1, "{report:#}\n{out}");
    let results = tool_results(org, "manager");
    assert_eq!(results.len(), 1, "{results:#?}");
    assert_eq!(body(&results[0])["output"], "step one: ship it", "{results:#?}");
    let first = server.requests()[0].json();
    let offered = tools_of(&first);
    assert_eq!(offered, ["read_file", "write_file", "list_files", "recall"], "the granted tools, as functions");

    let (report, out) = crate::providers::step_env(org, &[("FAKE_KEY", "k")]);
    assert_eq!(report["ran"], serde_json::json!(["manager"]), "the result woke the agent: {report:#}\n{out}");
    let second = String::from_utf8_lossy(&server.requests()[1].body).to_string();
    assert!(second.contains("step one: ship it") && second.contains("tool_result"), "{second}");
    assert!(second.contains(results[0]["reply_to"].as_str().unwrap()), "the result names its call\n{second}");
}

#[test]
fn native_tool_calls_of_an_openai_shaped_server_run_and_the_next_request_carries_the_result() {
    use crate::fake_http::{Answer, FakeServer};
    let server = FakeServer::start(|_, n| {
        Answer::json(if n == 0 {
            // llama.cpp's shape: an id without a `call_` prefix, arguments as a JSON string, no content.
            serde_json::json!({"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant",
                "content": null, "tool_calls": [{"id": "Zk3q9pX2", "type": "function",
                "function": {"name": "read_file", "arguments": "{\"path\":\"plan.md\"}"}}]}}],
                "usage": {"prompt_tokens": 20, "completion_tokens": 8}})
            .to_string()
        } else {
            crate::providers::chat(r#"{"messages":[],"notes":"read it"}"#, Some((30, 5)))
        })
    });
    let org = native_org(&server.url(), "openai");
    native_round_trip(&org, &server, |body| {
        body["tools"].as_array().unwrap().iter().map(|t| t["function"]["name"].as_str().unwrap().to_string()).collect()
    });
    assert_eq!(tool_results(&org, "manager")[0]["reply_to"], "Zk3q9pX2", "the server's id is kept");
}

#[test]
fn native_tool_calls_of_an_anthropic_shaped_server_run_and_the_next_request_carries_the_result() {
    use crate::fake_http::{Answer, FakeServer};
    let server = FakeServer::start(|_, n| {
        let content = if n == 0 {
            // Text with braces beside the call: the call is used all the same, the text kept as notes.
            serde_json::json!([{"type": "text", "text": "Let me read {\"path\": \"plan.md\"} first."},
                {"type": "tool_use", "id": "toolu_01A", "name": "read_file", "input": {"path": "plan.md"}}])
        } else {
            serde_json::json!([{"type": "text", "text": "{\"messages\":[],\"notes\":\"read it\"}"}])
        };
        let stop = if n == 0 { "tool_use" } else { "end_turn" };
        Answer::json(
            serde_json::json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": content,
                "stop_reason": stop, "usage": {"input_tokens": 20, "output_tokens": 8}})
            .to_string(),
        )
    });
    let org = native_org(&server.url(), "anthropic");
    native_round_trip(&org, &server, |body| {
        body["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_string()).collect()
    });
    assert_eq!(tool_results(&org, "manager")[0]["reply_to"], "toolu_01A");
}

#[test]
fn a_schema_constrained_local_model_names_only_granted_tools_and_gets_the_results() {
    use crate::peers::{gemma_behind_a_proxy, response};
    let test = "a_schema_constrained_local_model_names_only_granted_tools_and_gets_the_results";
    let _llama = crate::peers::one_llama_at_a_time();
    let Some((_gemma, proxy)) = gemma_behind_a_proxy(test) else { return };
    let org = TestOrg::new();
    crate::providers::configure(
        &org,
        &format!(
            "[providers.llama]\nkind = \"openai\"\nbase_url = \"{}/v1\"\ntimeout_secs = 180\nmax_retries = 1\n\n\
             [models.local]\nprovider = \"llama\"\nmodel = \"gemma-270m\"\nstructured = \"json_schema\"\n\
             temperature = 0.0\nmax_tokens = 400\nreply_max_messages = 1\nreply_max_chars = 40\n",
            proxy.url()
        ),
        "manager",
        "local",
    );
    org.edit(
        "agents/manager/resume.toml",
        "tools = [\"read_file\", \"write_file\", \"list_files\", \"recall\"]",
        "tools = [\"list_files\"]",
    );
    org.write("agents/manager/workspace/report.md", "draft");
    org.send("manager", "Call the list_files tool now to see the files in your workspace.");
    let mut calls = 0;
    for turn in 0..3 {
        let (report, out) = crate::providers::step_env(&org, &[]);
        let requests = proxy.requests_to("/v1/chat/completions");
        let Some(last) = requests.last() else { panic!("turn {turn}: no request\n{out}") };
        // The schema offers exactly the granted tool, with its own arguments.
        let schema = &last.json()["response_format"]["json_schema"]["schema"];
        let items = &schema["properties"]["tool_calls"]["items"]["anyOf"];
        let offered: Vec<&Value> = items.as_array().unwrap().iter().map(|i| &i["properties"]["tool"]["enum"]).collect();
        assert_eq!(offered, [&serde_json::json!(["list_files"])], "{schema:#}");
        let content = response(last)["choices"][0]["message"]["content"].as_str().unwrap_or_default().to_string();
        let reply: Value =
            serde_json::from_str(&content).unwrap_or_else(|e| panic!("not schema-valid JSON ({e}): {content}"));
        let asked = reply["tool_calls"].as_array().unwrap_or_else(|| panic!("no tool_calls list: {reply:#}"));
        for c in asked {
            assert_eq!(c["tool"], "list_files", "{reply:#}");
        }
        calls += asked.len();
        assert_eq!(report["tool_calls"].as_u64().unwrap_or(0) as usize, asked.len(), "{report:#}");
        if calls > 0 {
            break;
        }
    }
    assert!(calls > 0, "the model called no tool in three turns");
    let results = tool_results(&org, "manager");
    assert_eq!(results.len(), calls, "{results:#?}");
    assert!(results.iter().all(|r| body(r)["tool"] == "list_files"), "{results:#?}");
    // What it listed is the model's choice of path; that it got an answer is the engine's.
    assert!(results.iter().all(|r| body(r)["ok"].is_boolean()), "{results:#?}");
}

#[test]
fn with_a_daemon_a_tool_result_wakes_the_next_turn_at_once() {
    let org = TestOrg::new();
    org.write("agents/manager/workspace/x.md", "x marks the spot");
    let mut d = org.spawn_run(&[]);
    d.wait_ready();
    let start = Instant::now();
    org.send("manager", "/tool read_file {\"path\":\"x.md\"}");
    // The call's turn, then the turn that reads its result: both long before the 60 s timer.
    let acked = wait_until(Duration::from_secs(10), || {
        org.inbox_json("human").iter().any(|m| m["body"].as_str().is_some_and(|b| b.starts_with("tool read_file ok")))
    });
    assert!(acked, "no ack of the tool result\n{d}");
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
    d.assert_running("after the tool round trip");
}
