//! The `anthropic` kind: the Messages API.
//!
//! One request per try: `POST {base_url}/v1/messages` (default base URL
//! `https://api.anthropic.com`; a base URL that already ends in `/v1` gets
//! `/messages`), with the key in `x-api-key`, the `anthropic-version` header,
//! the system part of the prompt as the `system` field and the user part as
//! the one user message. `max_tokens` is required by the API: 1024 when the
//! model sets none.
//!
//! The reply text is the concatenation of the `text` blocks of `content`.
//! With `tools = "native"` the agent's tools go as `tools: [{name,
//! description, input_schema}]`, and each `tool_use` block (`{id, name,
//! input}`) becomes one of [`Reply::tool_calls`], in order; without it,
//! `tool_use` blocks are skipped. `stop_reason` `tool_use` is not a cut.
//! Input tokens are
//! `input_tokens` plus any `cache_creation_input_tokens` and
//! `cache_read_input_tokens` (Anthropic counts cached prompt tokens apart),
//! output tokens are `output_tokens`; when usage is missing it is estimated.

use serde_json::{json, Value};

use crate::http::{self, excerpt, tokens, usage, Parsed};
use crate::resilience::{Attempt, AttemptError};
use crate::stream;
use crate::{BoxFuture, NativeCall, ProviderSpec, Reply, Request, ToolMode};

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
    if m.stream {
        body["stream"] = json!(true);
    }
    if m.tools == ToolMode::Native && !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.parameters}))
            .collect();
        body["tools"] = Value::Array(tools);
    }
    body
}

/// Reads a Messages API response: the reply text, its usage, the stop reason
/// and the `tool_use` blocks (when the model takes tools natively).
pub fn parse_response(body: &str, req: &Request, key: Option<&str>) -> Result<Parsed, AttemptError> {
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
    let text_of = |b: &Value, k: &str| b.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let tool_calls: Vec<NativeCall> = if req.model.tools == ToolMode::Native {
        blocks
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_use"))
            .map(|b| NativeCall {
                id: text_of(b, "id"),
                name: text_of(b, "name"),
                args: b.get("input").cloned().filter(|i| !i.is_null()).unwrap_or_else(|| json!({})),
            })
            .collect()
    } else {
        vec![]
    };
    let stop = v.get("stop_reason").and_then(Value::as_str).unwrap_or_default().to_string();
    let u = v.get("usage");
    let count = |k: &str| u.and_then(|u| u.get(k)).and_then(tokens);
    let input = count("input_tokens").map(|i| {
        i.saturating_add(count("cache_creation_input_tokens").unwrap_or(0))
            .saturating_add(count("cache_read_input_tokens").unwrap_or(0))
    });
    let usage = usage(input, count("output_tokens"), req, &http::counted_text(&text, &tool_calls));
    Ok(Parsed { text, usage, finish: stop, tool_calls })
}

/// One content block of a streamed message.
#[derive(Debug)]
enum Block {
    Text,
    Tool { id: String, name: String, json: String, input: Option<Value> },
    Other,
}

/// Reads a streamed message: `message_start` (input and cache token counts),
/// `content_block_start` (a `text` block, or a `tool_use` block with its id
/// and name), `content_block_delta` (`text_delta` text, `input_json_delta`
/// pieces of a tool's input), `content_block_stop`, `message_delta` (the
/// `stop_reason` and the output token count), `message_stop`; `ping` is
/// ignored and `error` fails the try. A stream is whole at `message_stop`.
#[derive(Debug, Default)]
pub struct MessageStream {
    key: Option<String>,
    native: bool,
    text: String,
    blocks: Vec<(u64, Block)>,
    json_bytes: usize,
    stop: String,
    input: Option<u64>,
    cache: u64,
    output: Option<u64>,
    done: bool,
}

/// The assembler of a streamed message.
pub fn stream_assembler(req: &Request, key: Option<&str>) -> Box<dyn stream::Assembler> {
    Box::new(MessageStream {
        key: key.map(String::from),
        native: req.model.tools == ToolMode::Native,
        ..MessageStream::default()
    })
}

impl MessageStream {
    fn counts(&mut self, u: Option<&Value>) {
        let Some(u) = u.filter(|u| u.is_object()) else { return };
        let count = |k: &str| u.get(k).and_then(tokens);
        if let Some(i) = count("input_tokens") {
            self.input = Some(i);
        }
        // Cached prompt tokens are counted apart; later counts repeat earlier ones, not add to them.
        let cache = count("cache_creation_input_tokens").unwrap_or(0) + count("cache_read_input_tokens").unwrap_or(0);
        if u.get("cache_creation_input_tokens").is_some() || u.get("cache_read_input_tokens").is_some() {
            self.cache = cache;
        }
        if let Some(o) = count("output_tokens") {
            self.output = Some(o);
        }
    }

    fn block(&mut self, index: u64) -> &mut Block {
        let at = match self.blocks.iter().position(|(i, _)| *i == index) {
            Some(at) => at,
            None => {
                self.blocks.push((index, Block::Other));
                self.blocks.len() - 1
            }
        };
        &mut self.blocks[at].1
    }
}

impl stream::Assembler for MessageStream {
    fn event(&mut self, ev: &stream::Event) -> Result<Option<String>, AttemptError> {
        let v = stream::json(ev, self.key.as_deref())?;
        let kind = v.get("type").and_then(Value::as_str).unwrap_or(&ev.event);
        let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
        let str_of = |v: Option<&Value>, k: &str| v.and_then(|v| v.get(k)).and_then(Value::as_str).map(String::from);
        match kind {
            "message_start" => self.counts(v.get("message").and_then(|m| m.get("usage"))),
            "content_block_start" => {
                let b = v.get("content_block");
                let block = match b.and_then(|b| b.get("type")).and_then(Value::as_str) {
                    Some("text") => {
                        *self.block(index) = Block::Text;
                        let first = str_of(b, "text").unwrap_or_default();
                        if !first.is_empty() {
                            self.text.push_str(&first);
                            return Ok(Some(first));
                        }
                        return Ok(None);
                    }
                    Some("tool_use") => Block::Tool {
                        id: str_of(b, "id").unwrap_or_default(),
                        name: str_of(b, "name").unwrap_or_default(),
                        json: String::new(),
                        input: b
                            .and_then(|b| b.get("input"))
                            .filter(|i| i.as_object().is_some_and(|o| !o.is_empty()))
                            .cloned(),
                    },
                    _ => Block::Other,
                };
                *self.block(index) = block;
            }
            "content_block_delta" => {
                let d = v.get("delta");
                match d.and_then(|d| d.get("type")).and_then(Value::as_str) {
                    Some("text_delta") => {
                        let piece = str_of(d, "text").unwrap_or_default();
                        if piece.is_empty() {
                            return Ok(None);
                        }
                        self.text.push_str(&piece);
                        return Ok(Some(piece));
                    }
                    Some("input_json_delta") => {
                        let piece = str_of(d, "partial_json").unwrap_or_default();
                        self.json_bytes += piece.len();
                        match self.block(index) {
                            Block::Tool { json, .. } => json.push_str(&piece),
                            other => {
                                *other =
                                    Block::Tool { id: String::new(), name: String::new(), json: piece, input: None }
                            }
                        }
                    }
                    _ => {} // thinking and signature deltas are not part of the reply
                }
            }
            "message_delta" => {
                if let Some(stop) = str_of(v.get("delta"), "stop_reason") {
                    self.stop = stop;
                }
                self.counts(v.get("usage"));
            }
            "message_stop" => self.done = true,
            "error" => {
                let err = v.get("error");
                let msg = str_of(err, "message").unwrap_or_else(|| v.to_string());
                let message = format!("the server sent an error in the stream: {}", excerpt(&msg, self.key.as_deref()));
                // Overloaded (529) and internal errors pass (retried only while no part of the
                // reply arrived: stream::not_twice); the others say the request will not do.
                return Err(match str_of(err, "type").as_deref() {
                    Some("overloaded_error" | "api_error") => AttemptError::transient(message),
                    _ => AttemptError::down(message),
                });
            }
            _ => {} // ping, content_block_stop, and events added later
        }
        Ok(None)
    }

    fn over(&self) -> bool {
        self.done
    }

    fn whole(&self) -> bool {
        self.done
    }

    fn size(&self) -> usize {
        self.text.len() + self.json_bytes
    }

    fn finish(self: Box<Self>, req: &Request) -> Parsed {
        let native = self.native;
        let tool_calls: Vec<NativeCall> = self
            .blocks
            .into_iter()
            .filter(|_| native)
            .filter_map(|(_, b)| match b {
                Block::Tool { id, name, json, input } => {
                    let args = match input {
                        Some(i) if json.trim().is_empty() => i,
                        _ => http::call_args(&json),
                    };
                    Some(NativeCall { id, name, args })
                }
                _ => None,
            })
            .collect();
        let input = self.input.map(|i| i.saturating_add(self.cache));
        let usage = usage(input, self.output, req, &http::counted_text(&self.text, &tool_calls));
        Parsed { text: self.text, usage, finish: self.stop, tool_calls }
    }
}

impl Attempt for Anthropic {
    fn attempt<'a>(&'a self, req: &'a Request) -> BoxFuture<'a, Result<Reply, AttemptError>> {
        const WIRE: http::Wire =
            http::Wire { headers, body: request_body, parse: parse_response, stream: stream_assembler };
        Box::pin(async move { http::attempt(&self.client, &self.spec, &url(&self.spec, "messages"), &WIRE, req).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ModelSpec, ProviderKind, ToolSpec, Usage};

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
            stream: None,
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
        let p = parse_response(body, &r, None).unwrap();
        assert_eq!(p.text, "[echo]{}");
        assert_eq!(p.usage, Usage { input_tokens: 44, output_tokens: 20, estimated: false });
        assert_eq!(p.finish, "end_turn");
        assert!(p.tool_calls.is_empty(), "tool_use blocks are skipped unless tools are native");
        let p = parse_response(r#"{"content":[]}"#, &r, None).unwrap();
        assert_eq!(p.text, "");
        assert!(p.usage.estimated);
        let e =
            parse_response(r#"{"type":"error","error":{"type":"overloaded","message":"busy"}}"#, &r, None).unwrap_err();
        assert!(e.message.contains("busy"), "{e:?}");
        let e = parse_response(r#"{"choices":[]}"#, &r, None).unwrap_err();
        assert!(e.message.contains("no `content`"), "{e:?}");
    }

    fn native() -> Request {
        let mut r = req();
        r.model.tools = ToolMode::Native;
        r.tools = vec![ToolSpec {
            name: "list_files".into(),
            description: "Lists files.".into(),
            parameters: json!({"type": "object", "properties": {"path": {"type": ["string", "null"]}}, "required": ["path"], "additionalProperties": false}),
        }];
        r
    }

    #[test]
    fn native_tools_go_as_tool_definitions() {
        let r = native();
        let b = request_body(&r);
        assert_eq!(
            b["tools"],
            json!([{"name": "list_files", "description": "Lists files.", "input_schema": r.tools[0].parameters}])
        );
        let mut c = r;
        c.model.tools = ToolMode::Contract;
        assert!(request_body(&c).get("tools").is_none(), "in the contract, tools are in the prompt");
        c.model.tools = ToolMode::Native;
        c.tools.clear();
        assert!(request_body(&c).get("tools").is_none());
    }

    #[test]
    fn tool_use_blocks_mixed_with_text_become_native_calls_in_order() {
        let r = native();
        let body = r#"{"id":"msg_01","type":"message","role":"assistant","model":"claude-x","content":[{"type":"text","text":"Let me look."},{"type":"tool_use","id":"toolu_01A09q90qw90lq917835lq9","name":"list_files","input":{"path":null}},{"type":"text","text":" And read."},{"type":"tool_use","id":"toolu_02","name":"read_file","input":{"path":"a.md"}}],"stop_reason":"tool_use","usage":{"input_tokens":300,"output_tokens":60}}"#;
        let p = parse_response(body, &r, None).unwrap();
        assert_eq!(p.text, "Let me look. And read.");
        assert_eq!(p.finish, "tool_use");
        assert_eq!(
            p.tool_calls,
            vec![
                NativeCall {
                    id: "toolu_01A09q90qw90lq917835lq9".into(),
                    name: "list_files".into(),
                    args: json!({"path": null})
                },
                NativeCall { id: "toolu_02".into(), name: "read_file".into(), args: json!({"path": "a.md"}) },
            ]
        );
        let reply = Reply {
            text: p.text,
            usage: p.usage,
            model_key: "c".into(),
            finish: Some(p.finish),
            tool_calls: p.tool_calls,
        };
        assert!(!reply.truncated(), "tool_use is not a cut");
        // Only tool calls, no text: still an answer.
        let only =
            r#"{"content":[{"type":"tool_use","id":"t1","name":"list_files","input":{}}],"stop_reason":"tool_use"}"#;
        let p = parse_response(only, &r, None).unwrap();
        assert_eq!((p.text.as_str(), p.tool_calls.len()), ("", 1));
    }

    fn assemble(r: &Request, body: &str, size: usize) -> Result<(Vec<String>, bool, Parsed), AttemptError> {
        stream::tests::assemble(stream_assembler(r, Some("sk-ant-secret")), r, body, size)
    }

    /// A streamed message with a text block and a tool_use block whose input comes in pieces.
    const MESSAGE_STREAM: &str = concat!(
        "event: message_start\n",
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-x\",\"stop_reason\":null,\"usage\":{\"input_tokens\":25,\"cache_creation_input_tokens\":3,\"cache_read_input_tokens\":10,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\n",
        "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: ping\n",
        "data: {\"type\":\"ping\"}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"{\\\"messages\\\":\"}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"[]}\"}}\n\n",
        "event: content_block_stop\n",
        "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: content_block_start\n",
        "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_01\",\"name\":\"read_file\",\"input\":{}}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"path\\\": \\\"no\"}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"tes.md\\\"}\"}}\n\n",
        "event: content_block_stop\n",
        "data: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
        "event: message_delta\n",
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":42}}\n\n",
        "event: message_stop\n",
        "data: {\"type\":\"message_stop\"}\n\n",
    );

    #[test]
    fn a_stream_request_says_so() {
        let mut r = req();
        assert!(request_body(&r).get("stream").is_none());
        r.model.stream = true;
        assert_eq!(request_body(&r)["stream"], true);
    }

    #[test]
    fn a_streamed_message_is_assembled_in_any_split_and_with_crlf() {
        let mut r = req();
        r.model.tools = ToolMode::Native;
        let crlf = MESSAGE_STREAM.replace('\n', "\r\n");
        for body in [MESSAGE_STREAM, crlf.as_str()] {
            for size in [1, 3, 8, 100, 100_000] {
                let (pieces, whole, p) = assemble(&r, body, size).unwrap();
                assert_eq!(pieces, ["{\"messages\":", "[]}"]);
                assert!(whole);
                assert_eq!(p.text, "{\"messages\":[]}");
                assert_eq!(p.finish, "tool_use");
                assert_eq!(p.usage, Usage { input_tokens: 38, output_tokens: 42, estimated: false });
                assert_eq!(
                    p.tool_calls,
                    vec![NativeCall {
                        id: "toolu_01".into(),
                        name: "read_file".into(),
                        args: json!({"path": "notes.md"})
                    }]
                );
            }
        }
        // In the contract, tool_use blocks are skipped, as in a whole response.
        let (_, _, p) = assemble(&req(), MESSAGE_STREAM, 50).unwrap();
        assert!(p.tool_calls.is_empty());
    }

    #[test]
    fn a_message_without_message_stop_is_not_whole_and_an_error_event_fails() {
        let r = req();
        let cut = MESSAGE_STREAM.split("event: message_stop").next().unwrap();
        let (pieces, whole, _) = assemble(&r, cut, 16).unwrap();
        assert_eq!(pieces.len(), 2);
        assert!(!whole, "stop_reason without message_stop is still cut");
        let overloaded = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\nevent: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        let e = assemble(&r, overloaded, 7).unwrap_err();
        assert!(e.message.contains("Overloaded"), "{e:?}");
        assert_eq!((e.cause, e.retry), (crate::Cause::Unavailable, crate::resilience::Retry::Backoff));
        let invalid = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\"message\":\"bad key sk-ant-secret\"}}\n\n";
        let e = assemble(&r, invalid, 7).unwrap_err();
        assert_eq!(e.retry, crate::resilience::Retry::No);
        assert!(!e.message.contains("sk-ant-secret"), "{e:?}");
    }

    #[test]
    fn a_stream_without_usage_is_estimated_and_marked() {
        let r = req();
        let body = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hello\"}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        let (_, whole, p) = assemble(&r, body, 10).unwrap();
        assert!(whole && p.usage.estimated, "{p:?}");
        assert_eq!(p.text, "hello");
    }
}
