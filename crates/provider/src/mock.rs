//! The mock provider: deterministic and instant, the embedded default.
//!
//! For each unread `message` that is not a reply, it answers the sender with
//! `"<agent> received: <first 200 chars>"` and forwards the body to every
//! `@name` the agent may write to (not itself, not the sender): an agent, or
//! a group it may address (then `to` is `"@name"`). Replies,
//! bounces and other kinds are read and never answered, so conversations end.
//!
//! Tools, so that demos and tests need no model:
//!
//! - each line `/tool NAME {json args}` in such a message makes the agent call
//!   the tool NAME with those args, in the `tool_calls` of its reply: any
//!   NAME, granted or not, known or not, so that refusals show too. Args that
//!   are not JSON are passed as their raw text (the engine then answers that
//!   they must be an object); no args are `{}`. The call's id is
//!   `c<N>.<sender>` (`N` counting the reply's calls from 1), so that the
//!   result can be acknowledged to whoever asked; a sender whose name would
//!   make an invalid id gets `c<N>`, and no acknowledgement;
//! - each unread `tool_result` whose `reply_to` is such an id is acknowledged
//!   to that sender, when the agent may write to it: `tool NAME ok: <first
//!   200 chars of the output>` or `tool NAME failed: <error>`, as a reply to
//!   the result (so the sender reads it and never answers), in its thread.
//!   Any other `tool_result` is just read.
//!
//! With `stream = true` on its model key (and someone watching the request's
//! [`Request::stream`]), it hands its reply text out in [`STREAM_PIECES`]
//! pieces spread over its `latency_ms`, as a streaming model would, then
//! returns the same reply: streaming can be tried and tested without a server.

use std::time::Duration;

use serde_json::{json, Value};

use crate::{BoxFuture, Provider, ProviderError, Reply, Request, Usage};

/// How a line that asks the mock to call a tool starts.
pub const TOOL_LINE: &str = "/tool ";

/// How many pieces a streaming mock cuts its reply into (fewer when it is shorter).
pub const STREAM_PIECES: usize = 8;

/// The longest call id the engine keeps as it is.
const MAX_CALL_ID: usize = 64;

/// The mock provider.
#[derive(Debug, Clone, Default)]
pub struct Mock {
    /// Sleep before replying (for benchmarks of concurrency).
    pub latency: Duration,
}

impl Mock {
    /// The reply text the mock gives for a request (pure; no sleep).
    pub fn reply_text(req: &Request) -> String {
        let mut messages = Vec::new();
        let mut calls = Vec::new();
        for mail in &req.mail {
            if mail.kind == "tool_result" {
                if let Some(ack) = acknowledge(req, mail) {
                    messages.push(ack);
                }
                continue;
            }
            if mail.kind != "message" || mail.reply_to.is_some() {
                continue;
            }
            for (name, args) in tool_lines(&mail.body) {
                let n = calls.len() + 1;
                calls.push(json!({"id": call_id(n, &mail.from), "tool": name, "args": args}));
            }
            let excerpt: String = mail.body.chars().take(200).collect();
            messages.push(json!({
                "to": mail.from,
                "body": format!("{} received: {}", req.agent, excerpt),
                "reply_to": mail.id,
                "thread": mail.thread,
            }));
            let mut forwarded: Vec<&str> = Vec::new();
            for name in mentions(&mail.body) {
                if name == req.agent || name == mail.from || forwarded.contains(&name) {
                    continue;
                }
                // An agent it may write to, else a group it may address (`@name` in `may_send_to`).
                let to = if req.may_send_to.iter().any(|a| a == name) {
                    name.to_string()
                } else if req.may_send_to.iter().any(|a| a.strip_prefix('@') == Some(name)) {
                    format!("@{name}")
                } else {
                    continue;
                };
                forwarded.push(name);
                messages.push(json!({
                    "to": to,
                    "body": mail.body,
                    "thread": mail.thread,
                }));
            }
        }
        if calls.is_empty() {
            json!({ "messages": messages }).to_string()
        } else {
            json!({ "messages": messages, "tool_calls": calls }).to_string()
        }
    }
}

/// `text` cut into at most `n` pieces of nearly equal length (in chars,
/// never inside one), none of them empty; their concatenation is `text`.
pub fn pieces(text: &str, n: usize) -> Vec<&str> {
    let chars = text.chars().count();
    let n = n.clamp(1, chars.max(1));
    let mut out = Vec::with_capacity(n);
    let mut bounds = text.char_indices().map(|(i, _)| i).chain(std::iter::once(text.len()));
    let mut start = 0;
    let mut taken = 0;
    for k in 1..=n {
        // The end of piece k is after chars*k/n chars.
        let end_char = chars * k / n;
        let end = bounds.by_ref().nth(end_char - taken).unwrap_or(text.len());
        taken = end_char + 1;
        if end > start {
            out.push(&text[start..end]);
        }
        start = end;
    }
    out
}

/// The tool calls a body asks for: each line `/tool NAME {json args}`, with
/// its args parsed (`{}` when there are none, the raw text when they are not JSON).
pub fn tool_lines(body: &str) -> Vec<(&str, Value)> {
    body.lines()
        .filter_map(|line| line.trim().strip_prefix(TOOL_LINE))
        .filter_map(|rest| {
            let rest = rest.trim();
            let (name, args) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            if name.is_empty() {
                return None;
            }
            let args = args.trim();
            let args = if args.is_empty() {
                json!({})
            } else {
                serde_json::from_str(args).unwrap_or_else(|_| Value::String(args.to_string()))
            };
            Some((name, args))
        })
        .collect()
}

/// The id of the mock's `n`th call in a reply, asked for by `sender`:
/// `c<n>.<sender>`, or `c<n>` when that would not be a valid call id.
pub fn call_id(n: usize, sender: &str) -> String {
    let id = format!("c{n}.{sender}");
    let valid = id.len() <= MAX_CALL_ID
        && !sender.is_empty()
        && sender.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if valid {
        id
    } else {
        format!("c{n}")
    }
}

/// Who asked for the call with this id (see [`call_id`]).
pub fn call_sender(id: &str) -> Option<&str> {
    let (n, sender) = id.strip_prefix('c')?.split_once('.')?;
    (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && !sender.is_empty()).then_some(sender)
}

/// The message that tells the original sender what a tool call gave, for a
/// `tool_result` whose call the mock made for that sender.
fn acknowledge(req: &Request, result: &crate::MailItem) -> Option<Value> {
    let sender = call_sender(result.reply_to.as_deref()?)?;
    if !req.may_send_to.iter().any(|a| a == sender) {
        return None;
    }
    let outcome: Value = serde_json::from_str(&result.body).ok()?;
    let tool = outcome.get("tool").and_then(Value::as_str).unwrap_or("?");
    let text = |k: &str| match outcome.get(k) {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => String::new(),
        Some(v) => v.to_string(),
    };
    let body = if outcome.get("ok").and_then(Value::as_bool) == Some(true) {
        format!("tool {tool} ok: {}", text("output").chars().take(200).collect::<String>())
    } else {
        format!("tool {tool} failed: {}", text("error"))
    };
    Some(json!({"to": sender, "body": body, "reply_to": result.id, "thread": result.thread}))
}

/// With `LEMMING_MOCK_CALL_LOG=<file>`, appends `<turn> <agent> <pid>` for each
/// call: crash tests use it to check that no journaled agent is asked again.
fn log_call(req: &Request) {
    use std::io::Write;
    if let Some(path) = std::env::var_os("LEMMING_MOCK_CALL_LOG") {
        let line = format!("{} {} {}\n", req.turn, req.agent, std::process::id());
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = f.write_all(line.as_bytes()).and_then(|_| f.sync_data());
        }
    }
}

/// The `@name` mentions in a body, in order (names follow the agent-name rule).
pub fn mentions(body: &str) -> Vec<&str> {
    let bytes = body.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'@' && (i == 0 || !is_name_byte(bytes[i - 1])) {
            let start = i + 1;
            let mut end = start;
            if end < bytes.len() && bytes[end].is_ascii_lowercase() {
                while end < bytes.len() && is_name_byte(bytes[end]) && end - start < 64 {
                    end += 1;
                }
                // A trailing '-' or '_' is punctuation, not part of the name.
                while end > start + 1 && matches!(bytes[end - 1], b'-' | b'_') {
                    end -= 1;
                }
                out.push(&body[start..end]);
            }
            i = end.max(start);
        } else {
            i += 1;
        }
    }
    out
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
}

impl Provider for Mock {
    fn complete<'a>(&'a self, req: &'a Request) -> BoxFuture<'a, Result<Reply, ProviderError>> {
        Box::pin(async move {
            let text = Mock::reply_text(req);
            match req.stream.as_ref().filter(|_| req.model.stream) {
                Some(sink) => {
                    let pieces = pieces(&text, STREAM_PIECES);
                    let pause = self.latency / pieces.len().max(1) as u32;
                    for piece in pieces {
                        if !pause.is_zero() {
                            tokio::time::sleep(pause).await;
                        }
                        sink.send(crate::Chunk::Text(piece.to_string()));
                    }
                }
                None if !self.latency.is_zero() => tokio::time::sleep(self.latency).await,
                None => {}
            }
            log_call(req);
            let usage = Usage { estimated: false, ..Usage::estimate(req.prompt_chars(), text.chars().count()) };
            Ok(Reply { text, usage, model_key: req.model.key.clone(), finish: None, tool_calls: vec![] })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MailItem, ModelSpec};

    fn req(mail: Vec<MailItem>, may: &[&str]) -> Request {
        Request {
            agent: "manager".into(),
            turn: 1,
            system: "s".repeat(10),
            prompt: "p".repeat(7),
            mail,
            may_send_to: may.iter().map(|s| s.to_string()).collect(),
            model: ModelSpec::new("default", "mock"),
            agent_dir: None,
            stream: None,
            tools: vec![],
        }
    }

    fn mail(id: &str, from: &str, body: &str, reply_to: Option<&str>, kind: &str) -> MailItem {
        MailItem {
            id: id.into(),
            from: from.into(),
            body: body.into(),
            kind: kind.into(),
            reply_to: reply_to.map(String::from),
            thread: format!("th-{id}"),
        }
    }

    #[test]
    fn answers_and_forwards_mentions_it_may_send_to() {
        let r = req(
            vec![mail("m1", "human", "hello @planner @hr @manager @human @nobody", None, "message")],
            &["planner", "human"],
        );
        let v: serde_json::Value = serde_json::from_str(&Mock::reply_text(&r)).unwrap();
        let msgs = v["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 2, "{v}");
        assert_eq!(msgs[0]["to"], "human");
        assert_eq!(msgs[0]["body"], "manager received: hello @planner @hr @manager @human @nobody");
        assert_eq!(msgs[0]["reply_to"], "m1");
        assert_eq!(msgs[1]["to"], "planner");
        assert_eq!(msgs[1]["thread"], "th-m1");
        assert!(msgs[1].get("reply_to").is_none());
    }

    #[test]
    fn forwards_a_mention_of_a_group_it_may_address_to_the_group() {
        let r =
            req(vec![mail("m1", "human", "team: @eng and @ops", None, "message")], &["human", "planner", "@eng", "*"]);
        let v: serde_json::Value = serde_json::from_str(&Mock::reply_text(&r)).unwrap();
        let to: Vec<&str> = v["messages"].as_array().unwrap().iter().map(|m| m["to"].as_str().unwrap()).collect();
        assert_eq!(to, ["human", "@eng"], "{v}");
    }

    #[test]
    fn ignores_replies_and_bounces_and_truncates_to_200_chars() {
        let long = "x".repeat(300);
        let r = req(
            vec![
                mail("a", "planner", "done", Some("m0"), "message"),
                mail("b", "lemming", "bounced", None, "bounce"),
                mail("c", "human", &long, None, "message"),
            ],
            &["human"],
        );
        let v: serde_json::Value = serde_json::from_str(&Mock::reply_text(&r)).unwrap();
        let msgs = v["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0]["body"].as_str().unwrap().len(), "manager received: ".len() + 200);
    }

    #[tokio::test]
    async fn usage_is_ceil_chars_over_four() {
        let r = req(vec![], &[]);
        let reply = Mock::default().complete(&r).await.unwrap();
        assert_eq!(reply.text, r#"{"messages":[]}"#);
        assert_eq!(reply.usage.input_tokens, 5); // 17 chars
        assert_eq!(reply.usage.output_tokens, 4); // 15 chars
    }

    fn reply(r: &Request) -> Value {
        serde_json::from_str(&Mock::reply_text(r)).unwrap()
    }

    #[test]
    fn a_tool_line_makes_the_agent_call_the_tool_and_still_answer() {
        let body = "please\n/tool write_file {\"path\":\"a.txt\",\"content\":\"hi\"}\n  /tool read_file {\"path\": \"a.txt\"}\nthanks";
        let r = req(
            vec![
                mail("m1", "human", body, None, "message"),
                mail("m2", "planner", "/tool hire_agent {not json", None, "message"),
                mail("m3", "planner", "/tool list_files\n/tool   \nnot /tool x", None, "message"),
            ],
            &["human", "planner"],
        );
        let v = reply(&r);
        assert_eq!(
            v["tool_calls"],
            json!([
                {"id": "c1.human", "tool": "write_file", "args": {"path": "a.txt", "content": "hi"}},
                {"id": "c2.human", "tool": "read_file", "args": {"path": "a.txt"}},
                {"id": "c3.planner", "tool": "hire_agent", "args": "{not json"},
                {"id": "c4.planner", "tool": "list_files", "args": {}},
            ])
        );
        let msgs = v["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 3, "each message is still answered: {v}");
        assert_eq!(msgs[0]["body"], format!("manager received: {body}"));
        // A reply or a bounce never makes a call.
        let r = req(
            vec![
                mail("a", "planner", "/tool read_file {}", Some("m0"), "message"),
                mail("b", "lemming", "/tool read_file {}", None, "bounce"),
            ],
            &["planner"],
        );
        assert!(reply(&r).get("tool_calls").is_none());
    }

    #[test]
    fn call_ids_are_valid_and_name_the_sender() {
        let valid = |id: &str| {
            let b = id.as_bytes();
            !b.is_empty()
                && b.len() <= 64
                && b[0].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
        };
        for sender in ["human", "coder_01", "a-b", &"x".repeat(61), &"x".repeat(62), "bad name", "", "é"] {
            let id = call_id(7, sender);
            assert!(valid(&id), "{id:?}");
            assert_eq!(call_sender(&id), (id != "c7").then_some(sender), "{sender:?}");
        }
        assert_eq!(call_id(7, &"x".repeat(62)), "c7", "too long");
        assert_eq!(call_sender("c1.human"), Some("human"));
        for other in ["c.human", "cx.human", "d1.human", "c1.", "c1", "call_abc"] {
            assert_eq!(call_sender(other), None, "{other}");
        }
    }

    fn result(id: &str, reply_to: &str, body: &str) -> MailItem {
        MailItem { thread: "th-x".into(), ..mail(id, "lemming", body, Some(reply_to), "tool_result") }
    }

    #[test]
    fn a_tool_result_is_acknowledged_to_the_original_sender() {
        let long = "y".repeat(300);
        let ok = json!({"tool": "read_file", "ok": true, "output": long, "truncated": false}).to_string();
        let failed =
            json!({"tool": "hire_agent", "ok": false, "error": "not permitted: nope", "truncated": false}).to_string();
        let r = req(vec![result("r1", "c1.human", &ok), result("r2", "c2.planner", &failed)], &["human", "planner"]);
        let v = reply(&r);
        assert_eq!(
            v["messages"],
            json!([
                {"to": "human", "body": format!("tool read_file ok: {}", "y".repeat(200)), "reply_to": "r1", "thread": "th-x"},
                {"to": "planner", "body": "tool hire_agent failed: not permitted: nope", "reply_to": "r2", "thread": "th-x"},
            ])
        );
        assert!(v.get("tool_calls").is_none());
        // A result in the thread makes the sender read, never answer: the conversation ends.
        let ack = &v["messages"][0];
        let back = MailItem {
            reply_to: Some("r1".into()),
            ..mail("a1", "manager", ack["body"].as_str().unwrap(), None, "message")
        };
        assert_eq!(reply(&Request { agent: "human".into(), ..req(vec![back], &["manager"]) })["messages"], json!([]));
    }

    #[test]
    fn other_tool_results_are_just_read() {
        let ok = json!({"tool": "read_file", "ok": true, "output": "x", "truncated": false}).to_string();
        let r = req(
            vec![
                result("r1", "c1.cfo", &ok),                     // a sender it may not write to
                result("r2", "call_abc123", &ok),                // a call the mock did not make
                result("r3", "c3", &ok),                         // a call with no sender in its id
                result("r4", "c1.human", "not json"),            // a body that is no outcome
                mail("r5", "lemming", &ok, None, "tool_result"), // no reply_to at all
            ],
            &["human"],
        );
        assert_eq!(reply(&r), json!({"messages": []}));
    }

    #[test]
    fn pieces_cut_on_chars_and_join_back() {
        for (text, n) in
            [("", 8), ("a", 8), ("abc", 8), ("héllo wörld, ça va?", 8), (&"x".repeat(100) as &str, 8), ("ab", 1)]
        {
            let p = pieces(text, n);
            assert_eq!(p.concat(), text, "{text:?}");
            assert!(p.iter().all(|s| !s.is_empty()), "{p:?}");
            assert_eq!(p.len(), n.min(text.chars().count()), "{p:?}");
        }
        assert_eq!(pieces("abcdefgh", 4), ["ab", "cd", "ef", "gh"]);
    }

    #[tokio::test]
    async fn a_streaming_mock_hands_its_reply_out_in_pieces_over_its_latency() {
        use std::sync::{Arc, Mutex};
        let seen: Arc<Mutex<Vec<(std::time::Instant, crate::Chunk)>>> = Arc::default();
        let log = seen.clone();
        let all = seen;
        let mut r = req(vec![mail("m1", "human", "hello there, manager", None, "message")], &["human"]);
        r.model.stream = true;
        r.stream = Some(crate::StreamSink::new(move |c| log.lock().unwrap().push((std::time::Instant::now(), c))));
        let start = std::time::Instant::now();
        let mock = Mock { latency: Duration::from_millis(160) };
        let reply = mock.complete(&r).await.unwrap();
        let seen = all.lock().unwrap().clone();
        assert_eq!(seen.len(), STREAM_PIECES, "{seen:?}");
        let text: String = seen
            .iter()
            .map(|(_, c)| match c {
                crate::Chunk::Text(t) => t.as_str(),
                crate::Chunk::Restart => panic!("no restart"),
            })
            .collect();
        assert_eq!(text, reply.text);
        assert_eq!(reply.text, Mock::reply_text(&r), "the same reply as without streaming");
        assert!(seen[0].0 - start < Duration::from_millis(100), "the first piece comes early");
        assert!(start.elapsed() >= Duration::from_millis(160), "spread over the latency");
        // Without stream = true on the key, the sink is not used.
        r.model.stream = false;
        Mock::default().complete(&r).await.unwrap();
        assert_eq!(all.lock().unwrap().len(), STREAM_PIECES, "no more pieces");
    }

    #[test]
    fn mentions_follow_the_name_rule() {
        assert_eq!(mentions("hi @planner, and @coder_01. email a@b @ x @Up @a-"), vec!["planner", "coder_01", "a"]);
    }
}
