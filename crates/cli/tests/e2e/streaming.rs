//! Streamed replies (`stream = true`): a stream cut mid-way is a failed try
//! that charges nothing and leaves the mail unread, and the whole stream that
//! follows is charged once with the usage it carried; against llama.cpp's
//! real server, a turn's reply is assembled from the stream through both the
//! chat-completions and the Messages API, charged with the streamed usage,
//! and routed; and fakellm's streams of both APIs are routed and charged.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lemming_provider::contract::{self, Limits};
use serde_json::{json, Value};

use crate::fake_http::{Answer, FakeServer};
use crate::fixture::{failed_agents, TestOrg};
use crate::peers::{gemma_behind_a_proxy, peer, Gemma};
use crate::providers::{charges, configure, step_env};

/// How the stream server answers one connection.
#[derive(Clone, Copy, Debug)]
enum Serve {
    /// The head and a few chunks of a chunked body, then the connection drops mid-body.
    Cut,
    /// The whole stream, with the usage chunk and `[DONE]`.
    Whole,
    /// A whole stream whose reply is cut by the token limit before its object closes.
    Length,
}

/// The reply the streams carry, in pieces as a model writes it.
const PIECES: [&str; 5] =
    ["{\"messages\":[{\"to\":", "\"human\",", "\"body\":\"streamed ", "hello\"}],", "\"notes\":\"n\"}"];

/// The usage the whole stream reports.
const USAGE: (u64, u64) = (1000, 500);

fn sse(v: Value) -> String {
    format!("data: {v}\n\n")
}

/// The chunks of a chat-completions stream: llama.cpp's null first chunk,
/// the pieces, the finish reason, the usage chunk, `[DONE]`.
fn stream_events() -> Vec<String> {
    let chunk = |delta: Value, finish: Value| {
        sse(
            json!({"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}),
        )
    };
    let mut out = vec![chunk(json!({"role": "assistant", "content": null}), Value::Null)];
    out.extend(PIECES.iter().map(|p| chunk(json!({"content": p}), Value::Null)));
    out.push(chunk(json!({}), json!("stop")));
    out.push(sse(
        json!({"id": "c1", "choices": [], "usage": {"prompt_tokens": USAGE.0, "completion_tokens": USAGE.1}}),
    ));
    out.push("data: [DONE]\n\n".into());
    out
}

/// A chat-completions server on 127.0.0.1 that streams its answers as
/// `plan` says, one connection each, and records each request's body; it
/// stops when dropped, or a minute after it started.
struct StreamServer {
    addr: SocketAddr,
    bodies: Arc<Mutex<Vec<Value>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StreamServer {
    fn start(plan: Vec<Serve>) -> StreamServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, s) = (Arc::clone(&bodies), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let mut plan = plan.into_iter();
            while !s.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(60) {
                let Ok((conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let Some(serve) = plan.next() else { return };
                let _ = answer(conn, serve, &b);
            }
        });
        StreamServer { addr, bodies, stop, thread: Some(thread) }
    }

    fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }
}

impl Drop for StreamServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request and answers it.
fn answer(mut conn: TcpStream, serve: Serve, bodies: &Mutex<Vec<Value>>) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let body = loop {
        let n = conn.read(&mut buf)?;
        got.extend_from_slice(&buf[..n]);
        let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
            if n == 0 {
                return Ok(());
            }
            continue;
        };
        let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
        let len = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        if got.len() >= end + 4 + len || n == 0 {
            break got[end + 4..].to_vec();
        }
    };
    bodies.lock().unwrap().push(serde_json::from_slice(&body).unwrap_or(Value::Null));
    let events = stream_events();
    match serve {
        Serve::Cut => {
            conn.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
            )?;
            for e in &events[..3] {
                conn.write_all(format!("{:x}\r\n{e}\r\n", e.len()).as_bytes())?;
                conn.flush()?;
                std::thread::sleep(Duration::from_millis(20));
            }
            // Dropped mid-body: no finish_reason, no [DONE].
        }
        Serve::Whole | Serve::Length => {
            let mut events = events;
            if let Serve::Length = serve {
                // The last piece and the `stop` finish are replaced by a `length` finish.
                let finish = json!({"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]});
                events.splice(PIECES.len()..PIECES.len() + 2, [sse(finish)]);
            }
            conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n")?;
            for e in &events {
                conn.write_all(e.as_bytes())?;
                conn.flush()?;
                if let Serve::Length = serve {
                    // Slow enough that each piece is passed on as it comes.
                    std::thread::sleep(Duration::from_millis(80));
                }
            }
            conn.shutdown(std::net::Shutdown::Write)?;
        }
    }
    Ok(())
}

fn stream_config(url: &str, max_retries: u32) -> String {
    format!(
        r#"
[providers.local]
kind = "openai"
base_url = "{url}"
timeout_secs = 20
max_retries = {max_retries}
backoff_ms = 10

[models.streamed]
provider = "local"
model = "test-model"
stream = true
input_price = 2.0
output_price = 8.0
"#
    )
}

#[track_caller]
fn assert_one_streamed_charge(org: &TestOrg) {
    let c = charges(org);
    assert_eq!(c.len(), 1, "exactly one charge: {c:#?}");
    assert_eq!(
        (c[0]["input_tokens"].as_u64(), c[0]["output_tokens"].as_u64()),
        (Some(USAGE.0), Some(USAGE.1)),
        "{c:#?}"
    );
    assert!(c[0].get("estimated").is_none(), "the stream carried the usage: {c:#?}");
    let cost = (USAGE.0 as f64 * 2.0 + USAGE.1 as f64 * 8.0) / 1e6;
    assert!((c[0]["cost"].as_f64().unwrap() - cost).abs() < 1e-12, "{c:#?}");
}

#[track_caller]
fn assert_answered_once(org: &TestOrg, id: &str) {
    let answers: Vec<Value> = org
        .inbox_json("human")
        .into_iter()
        .filter(|m| m["from"] == "manager" && m["body"] == "streamed hello")
        .collect();
    assert_eq!(answers.len(), 1, "{answers:#?}");
    assert!(!org.ids("manager", "inbox", "new").contains(&id.to_string()), "the mail was not consumed");
}

#[test]
fn a_cut_stream_is_a_failed_try_that_charges_nothing_and_the_whole_one_is_charged_once() {
    // 1. No retries: the cut stream fails the turn; the mail waits; nothing is charged.
    let server = StreamServer::start(vec![Serve::Cut, Serve::Whole]);
    let org = TestOrg::new();
    configure(&org, &stream_config(&server.url(), 0), "manager", "streamed");
    org.lemming_ok(&["validate"]);
    let id = org.send("manager", "hello manager");
    let (report, out) = step_env(&org, &[]);
    let failed = failed_agents(&report);
    let why = failed.get("manager").unwrap_or_else(|| panic!("the cut stream did not fail the turn\n{out}"));
    assert!(why.contains("stream") && why.contains("provider `local`"), "{why}");
    assert!(org.ids("manager", "inbox", "new").contains(&id), "a cut stream consumed the mail\n{out}");
    assert!(charges(&org).is_empty(), "a cut stream was charged: {:#?}", charges(&org));
    assert!(org.inbox_json("human").is_empty(), "a partial reply was routed: {:#?}", org.inbox_json("human"));
    let sent = &server.bodies()[0];
    assert_eq!((&sent["stream"], &sent["stream_options"]), (&json!(true), &json!({"include_usage": true})));

    // The next step gets the whole stream: answered once, charged once, with the streamed usage.
    let (report, out) = step_env(&org, &[]);
    assert_eq!(report["ran"], json!(["manager"]), "{out}");
    assert_answered_once(&org, &id);
    assert_one_streamed_charge(&org);
    assert_eq!(server.bodies().len(), 2);

    // 2. One retry: the cut try and the whole one in the same step; still one charge.
    // (The server is on 127.0.0.1, where retrying a cut reply costs nothing; from a
    // remote server it would not be retried: stream::not_twice.)
    let server = StreamServer::start(vec![Serve::Cut, Serve::Whole]);
    let org = TestOrg::new();
    configure(&org, &stream_config(&server.url(), 1), "manager", "streamed");
    let id = org.send("manager", "hello manager");
    let (report, out) = step_env(&org, &[]);
    assert_eq!(report["ran"], json!(["manager"]), "{out}");
    assert_eq!(server.bodies().len(), 2, "one cut try, one retry");
    assert_answered_once(&org, &id);
    assert_one_streamed_charge(&org);
    assert!(org.dead().is_empty(), "{:#?}", org.dead());
}

#[test]
fn chat_withdraws_a_streamed_reply_the_turn_could_not_use() {
    let server = StreamServer::start(vec![Serve::Length]);
    let org = TestOrg::new();
    configure(&org, &stream_config(&server.url(), 0), "manager", "streamed");
    let mut chat = org
        .command(&["chat", "manager", "--max-turns", "1"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    chat.stdin.take().unwrap().write_all(b"hello manager\n").unwrap();
    let out = chat.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let all = format!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("manager: streamed hello"), "the body was shown as it came:\n{all}");
    let shown = stdout.find("manager: streamed hello").unwrap();
    assert!(stdout[shown..].contains("(not delivered"), "the cut reply was left as if delivered:\n{all}");
    assert!(org.inbox_json("human").is_empty(), "{:#?}", org.inbox_json("human"));
}

/// The `data:` events of a recorded stream body, as JSON (`[DONE]` left out).
fn recorded_events(body: &str) -> Vec<Value> {
    body.lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix("data:"))
        .map(str::trim)
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("an event is not JSON ({e}): {d}")))
        .collect()
}

#[track_caller]
fn streamed_body(r: &crate::fake_http::Recorded) -> String {
    let (status, body) = r.response.clone().unwrap_or_else(|| panic!("no response recorded for {}", r.path));
    assert_eq!(status, 200, "the server refused the request: {body}");
    body
}

#[track_caller]
fn assert_charged(org: &TestOrg, count: usize, input: u64, output: u64) {
    let c = charges(org);
    assert_eq!(c.len(), count, "one charge per turn: {c:#?}");
    let last = c.last().unwrap();
    assert_eq!((last["input_tokens"].as_u64(), last["output_tokens"].as_u64()), (Some(input), Some(output)), "{c:#?}");
    assert!(last.get("estimated").is_none(), "the server reported usage in the stream: {c:#?}");
}

/// Through llama.cpp's real server with Gemma 3 270M, streamed: a reply of the
/// `openai` kind (constrained by the schema it sends) and one of the
/// `anthropic` kind (constrained by the same schema, given to the server as a
/// grammar, since /v1/messages takes none) are assembled from the stream,
/// charged exactly the usage the stream carried, and routed.
#[test]
fn llama_server_streams_a_reply_through_openai_and_anthropic_that_is_charged_and_routed() {
    let test = "llama_server_streams_a_reply_through_openai_and_anthropic_that_is_charged_and_routed";
    let _llama = crate::peers::one_llama_at_a_time();
    let Some((gemma, proxy)) = gemma_behind_a_proxy(test) else { return };

    // 1. openai kind, streamed, constrained by the reply schema.
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
stream = true
temperature = 0.0
max_tokens = 400
reply_max_messages = 1
reply_max_chars = 40
"#,
            proxy.url()
        ),
        "manager",
        "local",
    );
    org.edit(
        "agents/manager/resume.toml",
        "tools = [\"read_file\", \"write_file\", \"list_files\", \"recall\"]",
        "tools = []",
    );
    // The base model's reply depends on the prompt, which holds fresh ids: it
    // may send no message. Each turn is charged; within a few turns one is routed.
    let mut routed = 0;
    for turn in 1..=4 {
        let id = org.send("manager", "Please reply to the human.");
        let (report, out) = step_env(&org, &[]);
        assert_eq!(report["ran"], json!(["manager"]), "{out}\n{:#?}", org.activity("manager"));
        let calls = proxy.requests_to("/v1/chat/completions");
        assert_eq!(calls.len(), turn, "{calls:#?}");
        let call = calls.last().unwrap();
        assert_eq!(call.json()["stream"], true);
        let events = recorded_events(&streamed_body(call));
        assert!(events.len() > 3, "a stream of several chunks: {events:#?}");
        let text: String =
            events.iter().filter_map(|e| e["choices"].get(0).and_then(|c| c["delta"]["content"].as_str())).collect();
        let reply: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not a JSON reply ({e}): {text}"));
        let usage = events.iter().rev().find_map(|e| e.get("usage").filter(|u| u.is_object())).expect("a usage chunk");
        let (input, output) = (usage["prompt_tokens"].as_u64().unwrap(), usage["completion_tokens"].as_u64().unwrap());
        assert_charged(&org, turn, input, output);
        assert!(!org.ids("manager", "inbox", "new").contains(&id), "the mail was not consumed");
        routed += assert_routed(&org, &reply);
        if routed > 0 {
            break;
        }
    }
    assert!(routed > 0, "no streamed reply in four turns sent a message");

    drop((gemma, proxy));

    // 2. anthropic kind, streamed. llama-server's /v1/messages takes no schema,
    // so the server is started with the reply schema as its grammar, which
    // applies to every request that brings none of its own.
    let org = TestOrg::new();
    configure(
        &org,
        "[providers.llama]\nkind = \"anthropic\"\nbase_url = \"BASE\"\ntimeout_secs = 180\nmax_retries = 1\n\n[models.local]\nprovider = \"llama\"\nmodel = \"gemma-270m\"\nstream = true\ntemperature = 0.0\nmax_tokens = 400\n",
        "manager",
        "local",
    );
    org.edit(
        "agents/manager/resume.toml",
        "tools = [\"read_file\", \"write_file\", \"list_files\", \"recall\"]",
        "tools = []",
    );
    let reach: Vec<String> =
        serde_json::from_value(org.lemming_ok(&["--json", "inspect", "manager"]).json()["can_reach"].clone()).unwrap();
    // The mail ids are not known yet: reply_to can only be null, as the contract allows.
    let schema = contract::schema(&reach, &[], &[], Limits { messages: 1, chars: 40 });
    let tmp = tempfile::tempdir().unwrap();
    let grammar = tmp.path().join("reply.gbnf");
    std::fs::write(&grammar, gbnf(&schema)).unwrap();
    let (server, gguf) = (peer("LEMMING_LLAMA_SERVER").unwrap(), peer("LEMMING_GGUF").unwrap());
    let gemma = Gemma::start_with(&server, &gguf, &["--grammar-file".into(), grammar.to_str().unwrap().into()]);
    let upstream = gemma.addr;
    let proxy = FakeServer::start(move |_, _| Answer::Forward(upstream));
    let models = org.read("org/models.toml").replace("BASE", &proxy.url());
    org.write("org/models.toml", models);
    org.lemming_ok(&["validate"]);
    let mut routed = 0;
    for turn in 1..=4 {
        let id = org.send("manager", "Please reply to the human.");
        let (report, out) = step_env(&org, &[]);
        assert_eq!(report["ran"], json!(["manager"]), "{out}\n{:#?}", org.activity("manager"));
        let calls = proxy.requests_to("/v1/messages");
        assert_eq!(calls.len(), turn, "{calls:#?}");
        let call = calls.last().unwrap();
        assert_eq!(call.json()["stream"], true);
        let events = recorded_events(&streamed_body(call));
        let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
        assert_eq!(kinds.first(), Some(&"message_start"), "{kinds:?}");
        assert_eq!(kinds.last(), Some(&"message_stop"), "{kinds:?}");
        let text: String = events
            .iter()
            .filter(|e| e["type"] == "content_block_delta")
            .filter_map(|e| e["delta"]["text"].as_str())
            .collect();
        assert!(
            kinds.iter().filter(|k| **k == "content_block_delta").count() > 3,
            "a stream of several deltas: {kinds:?}"
        );
        let reply: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not a JSON reply ({e}): {text}"));
        let start = events.iter().find(|e| e["type"] == "message_start").unwrap();
        let u = &start["message"]["usage"];
        let n = |u: &Value, k: &str| u[k].as_u64().unwrap_or(0);
        let input = n(u, "input_tokens") + n(u, "cache_read_input_tokens") + n(u, "cache_creation_input_tokens");
        let delta = events.iter().rev().find(|e| e["type"] == "message_delta").expect("a message_delta");
        assert_charged(&org, turn, input, n(&delta["usage"], "output_tokens"));
        assert!(!org.ids("manager", "inbox", "new").contains(&id), "the mail was not consumed");
        routed += assert_routed(&org, &reply);
        if routed > 0 {
            break;
        }
    }
    assert!(routed > 0, "no streamed reply through /v1/messages in four turns sent a message");
}

/// Asserts that every message of an assembled reply of manager's is in its
/// recipient's inbox; how many there were.
#[track_caller]
fn assert_routed(org: &TestOrg, reply: &Value) -> usize {
    let messages = reply["messages"].as_array().unwrap_or_else(|| panic!("no messages list: {reply:#}"));
    for m in messages {
        let (to, body) = (m["to"].as_str().unwrap(), m["body"].as_str().unwrap());
        let inbox = org.inbox_json(to);
        assert!(inbox.iter().any(|x| x["from"] == "manager" && x["body"] == body), "not delivered to {to}: {inbox:#?}");
    }
    messages.len()
}

/// A llama.cpp grammar (GBNF) for the JSON that `schema` describes, for the
/// keywords the reply schema uses; it panics on any other, so that a change
/// of the schema cannot go unnoticed. llama-server's own `--json-schema`
/// cannot serve here: it fails every chat request ("Failed to initialize
/// samplers"), as it feeds the chat template's generation prompt to a grammar
/// that does not start with it; a grammar given as such is not fed it.
fn gbnf(schema: &Value) -> String {
    let rules = r#"
space ::= " "?
char ::= [^"\\\x7F\x00-\x1F] | [\\] (["\\bfnrt] | "u" [0-9a-fA-F]{4})
"#;
    format!("root ::= {}{rules}", gbnf_expr(schema))
}

fn gbnf_expr(schema: &Value) -> String {
    let known =
        ["type", "enum", "properties", "required", "additionalProperties", "items", "maxItems", "maxLength", "anyOf"];
    let map = schema.as_object().unwrap_or_else(|| panic!("not a schema: {schema}"));
    if let Some(k) = map.keys().find(|k| !known.contains(&k.as_str())) {
        panic!("the grammar cannot express `{k}`: {schema}");
    }
    let literal = |json: &str| format!("\"{}\"", json.replace('\\', "\\\\").replace('"', "\\\""));
    let alternatives = |alts: Vec<String>| format!("({})", alts.join(" | "));
    if let Some(values) = map.get("enum") {
        return alternatives(values.as_array().unwrap().iter().map(|v| literal(&v.to_string())).collect());
    }
    if let Some(alts) = map.get("anyOf") {
        return alternatives(alts.as_array().unwrap().iter().map(gbnf_expr).collect());
    }
    let one = |ty: &str| match ty {
        "null" => literal("null"),
        "boolean" => "(\"true\" | \"false\")".to_string(),
        "number" => "(\"-\"? [0-9]{1,10} (\".\" [0-9]{1,10})?)".to_string(),
        "string" => match map.get("maxLength").and_then(Value::as_u64) {
            Some(n) => format!(r#""\"" char{{0,{n}}} "\"""#),
            None => r#""\"" char* "\"""#.to_string(),
        },
        "array" => {
            let item = gbnf_expr(&map["items"]);
            let items = match map.get("maxItems").and_then(Value::as_u64) {
                Some(0) => String::new(),
                Some(1) => format!("({item})?"),
                Some(n) => format!("({item} (\",\" space {item}){{0,{}}})?", n - 1),
                None => format!("({item} (\",\" space {item})*)?"),
            };
            format!("(\"[\" space {items} space \"]\")")
        }
        "object" => {
            let fields: Vec<String> = map.get("required").and_then(Value::as_array).map_or(vec![], |r| {
                r.iter()
                    .map(|k| {
                        let k = k.as_str().unwrap();
                        format!(
                            "{} space \":\" space {}",
                            literal(&json!(k).to_string()),
                            gbnf_expr(&map["properties"][k])
                        )
                    })
                    .collect()
            });
            assert_eq!(
                fields.len(),
                map.get("properties").and_then(Value::as_object).map_or(0, |p| p.len()),
                "every property is required: {schema}"
            );
            format!("(\"{{\" space {} space \"}}\")", fields.join(" \",\" space "))
        }
        other => panic!("the grammar cannot express the type `{other}`: {schema}"),
    };
    match &map["type"] {
        Value::String(t) => one(t),
        Value::Array(ts) => alternatives(ts.iter().map(|t| one(t.as_str().unwrap())).collect()),
        t => panic!("the grammar cannot express the type {t}: {schema}"),
    }
}

#[test]
fn fakellm_streams_through_both_apis_and_the_replies_are_routed_and_charged() {
    let test = "fakellm_streams_through_both_apis_and_the_replies_are_routed_and_charged";
    let Some(fakellm) = crate::peers::peer("LEMMING_FAKELLM") else { return crate::peers::skip(test, "fakellm") };
    let tmp = tempfile::tempdir().unwrap();
    let rules = tmp.path().join("rules.yaml");
    std::fs::write(
        &rules,
        "rules:\n  - name: chat\n    when:\n      header.x-test-scenario: chat\n    respond:\n      content: '{\"messages\":[{\"to\":\"human\",\"body\":\"streamed by chat completions\"}]}'\n  - name: messages\n    when:\n      header.x-test-scenario: messages\n    respond:\n      content: '{\"messages\":[{\"to\":\"manager\",\"body\":\"streamed by the messages api\"}]}'\n",
    )
    .unwrap();
    let log = tmp.path().join("fakellm.log");
    let port = crate::fake_http::free_port();
    let args: Vec<String> =
        ["serve", "--host", "127.0.0.1", "--port", &port.to_string(), "--config", rules.to_str().unwrap()]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut child = crate::peers::start(&fakellm, &args, &log);
    crate::peers::wait_ready(&mut child, addr, "/_fakellm/stats", Duration::from_secs(30), &log);
    // Through a recording proxy, to compare the ledger with the usage the stream carried.
    let proxy = crate::fake_http::FakeServer::start(move |_, _| crate::fake_http::Answer::Forward(addr));

    let provider = |name: &str, kind: &str, base: &str| {
        format!(
            "[providers.{name}]\nkind = \"{kind}\"\nbase_url = \"{base}\"\nheaders = {{ \"X-Test-Scenario\" = \"{name}\" }}\nmax_retries = 0\n\n[models.{name}]\nprovider = \"{name}\"\nmodel = \"fake\"\nstream = true\ninput_price = 1.0\noutput_price = 2.0\n"
        )
    };
    let org = TestOrg::new();
    let tables =
        [provider("chat", "openai", &format!("{}/v1", proxy.url())), provider("messages", "anthropic", &proxy.url())]
            .join("\n");
    configure(&org, &tables, "manager", "chat");
    org.edit("agents/janitor/resume.toml", "model = \"default\"", "model = \"messages\"");
    org.lemming_ok(&["validate"]);
    org.send("manager", "hello");
    org.send_from("manager", "janitor", "hello janitor");
    let (report, out) = step_env(&org, &[]);
    let ran: Vec<String> = serde_json::from_value(report["ran"].clone()).unwrap();
    assert!(ran.contains(&"manager".to_string()) && ran.contains(&"janitor".to_string()), "{out}");
    assert!(org
        .inbox_json("human")
        .iter()
        .any(|m| m["from"] == "manager" && m["body"] == "streamed by chat completions"));
    assert!(org
        .inbox_json("manager")
        .iter()
        .any(|m| m["from"] == "janitor" && m["body"] == "streamed by the messages api"));
    let by = |agent: &str| charges(&org).into_iter().find(|c| c["agent"] == agent).unwrap();
    // fakellm's chat stream carries no usage chunk: estimated, and marked so.
    assert_eq!(by("manager")["estimated"], true, "{:#}", by("manager"));
    // Its Messages stream does: input from message_start, output from message_delta.
    let janitor = by("janitor");
    assert!(janitor.get("estimated").is_none(), "{janitor:#}");
    let calls = proxy.requests_to("/v1/messages");
    assert_eq!(calls.len(), 1, "{calls:#?}");
    let events = recorded_events(&streamed_body(&calls[0]));
    let start = events.iter().find(|e| e["type"] == "message_start").expect("a message_start");
    let delta = events.iter().rev().find(|e| e["type"] == "message_delta").expect("a message_delta");
    let sent = (start["message"]["usage"]["input_tokens"].as_u64(), delta["usage"]["output_tokens"].as_u64());
    assert!(sent.0.is_some() && sent.1.is_some(), "{events:#?}");
    assert_eq!((janitor["input_tokens"].as_u64(), janitor["output_tokens"].as_u64()), sent, "{janitor:#}");
}
