//! The `openai` kind: the chat-completions wire format, which OpenAI, Azure
//! OpenAI, Ollama, vLLM, LM Studio, llama.cpp's server, SGLang, llamafile,
//! Groq, OpenRouter and others speak.
//!
//! One request per try: `POST {base_url}/chat/completions` with the system and
//! user parts of the prompt as two messages, the model's `temperature` and
//! `max_tokens`, and a bearer key from `api_key_env`. The Azure variant
//! (`azure_api_version` set) posts to
//! `{base_url}/openai/deployments/{deployment}/chat/completions?api-version=…`
//! with the key in an `api-key` header.
//!
//! With `structured = "json_schema"` the reply contract is sent as
//! a JSON schema ([`contract::schema`]) whose `to` is an enum of exactly the
//! agents this agent may write to, so that a server that enforces schemas
//! cannot even address an agent the chart forbids, and whose strings and lists
//! are bounded so that a complete reply fits in `max_tokens`
//! ([`contract::Limits::for_model`]). `json_object` asks for any JSON object.
//! The agent's tools, with `tools = "contract"` (the default), are part of
//! that schema: `tool_calls` whose `tool` is one of them and whose `args`
//! follow its schema.
//!
//! With `tools = "native"` the agent's tools go as function definitions
//! (`tools: [{"type": "function", "function": {name, description,
//! parameters}}]`), and the model's `message.tool_calls` come back in
//! [`Reply::tool_calls`]: ids as the server gives them (OpenAI's start with
//! `call_`, llama.cpp's need not), `function.arguments` parsed from its JSON
//! text (kept as a string when it is not JSON). A message with tool calls
//! and no content is an answer with empty text; `finish_reason` `tool_calls`
//! is not a cut.
//!
//! The response is read leniently: unknown fields are ignored, any
//! `finish_reason` is accepted and passed on in the [`Reply`] (`length` means
//! the reply was cut at `max_tokens`), `content` may be null, a string, or a list of
//! text parts. Usage comes from `usage.prompt_tokens` and
//! `usage.completion_tokens`; when the server sends none, it is estimated
//! (ceil(chars / 4)) and marked as such.

use serde_json::{json, Value};

use crate::contract;
use crate::http::{self, excerpt, tokens, usage, Parsed};
use crate::resilience::{Attempt, AttemptError};
use crate::stream;
use crate::{BoxFuture, NativeCall, ProviderSpec, Reply, Request, Structured, ToolMode};

/// The `openai` kind.
pub struct OpenAi {
    spec: ProviderSpec,
    client: reqwest::Client,
}

impl OpenAi {
    /// A provider that sends every request through `client` (shared, built once).
    pub fn new(spec: ProviderSpec, client: reqwest::Client) -> OpenAi {
        OpenAi { spec, client }
    }
}

/// The URL of the chat-completions endpoint for this model.
pub fn chat_url(spec: &ProviderSpec, model: &crate::ModelSpec) -> String {
    let base = spec.base_url.as_deref().unwrap_or("");
    match &spec.azure_api_version {
        Some(v) => {
            let deployment = model.deployment.as_deref().unwrap_or(model.wire_name());
            format!(
                "{}?api-version={v}",
                http::join(base, &format!("openai/deployments/{deployment}/chat/completions"))
            )
        }
        None => http::join(base, "chat/completions"),
    }
}

/// The URL that lists models (used by `lemming doctor`).
pub fn models_url(spec: &ProviderSpec) -> String {
    let base = spec.base_url.as_deref().unwrap_or("");
    match &spec.azure_api_version {
        Some(v) => format!("{}?api-version={v}", http::join(base, "openai/models")),
        None => http::join(base, "models"),
    }
}

/// The request headers: the key (bearer, or `api-key` for Azure), then the configured extras.
pub fn headers(spec: &ProviderSpec, key: Option<&str>) -> Result<reqwest::header::HeaderMap, AttemptError> {
    let mut map = reqwest::header::HeaderMap::new();
    if let Some(k) = key {
        if spec.azure_api_version.is_some() {
            map.insert("api-key", http::secret(k)?);
        } else {
            map.insert(reqwest::header::AUTHORIZATION, http::secret(&format!("Bearer {k}"))?);
        }
    }
    map.extend(http::extra_headers(spec)?);
    Ok(map)
}

/// Whether the request asks a streamed reply to end with its usage
/// (`stream_options.include_usage`): then the stream is whole only once that
/// usage, or `[DONE]`, arrived.
pub fn asks_usage(req: &Request) -> bool {
    req.model.stream
}

/// The JSON body of the request.
pub fn request_body(req: &Request) -> Value {
    let m = &req.model;
    let mut body = json!({
        "model": m.wire_name(),
        "messages": [
            {"role": "system", "content": req.system},
            {"role": "user", "content": req.prompt},
        ],
        "stream": m.stream,
    });
    if asks_usage(req) {
        // Without it, the usage of a streamed reply would have to be estimated.
        body["stream_options"] = json!({"include_usage": true});
    }
    if let Some(t) = m.temperature {
        body["temperature"] = json!(t);
    }
    if let Some(n) = m.max_tokens {
        body["max_tokens"] = json!(n);
    }
    match m.structured {
        Structured::None => {}
        Structured::JsonObject => body["response_format"] = json!({"type": "json_object"}),
        Structured::JsonSchema => {
            let ids: Vec<String> = req.mail.iter().map(|m| m.id.clone()).collect();
            let limits = contract::Limits::for_model(m, &req.may_send_to, &ids, &req.tools);
            let tools = contract::contract_tools(m.tools, &req.tools);
            body["response_format"] = json!({
                "type": "json_schema",
                "json_schema": {
                    "name": "lemming_reply",
                    "strict": true,
                    "schema": contract::schema(&req.may_send_to, &ids, tools, limits),
                }
            });
        }
    }
    if m.tools == ToolMode::Native && !req.tools.is_empty() {
        let functions: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                json!({
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
                })
            })
            .collect();
        body["tools"] = Value::Array(functions);
    }
    body
}

/// The native tool calls of a response message: `tool_calls[].{id,
/// function.name, function.arguments}`; arguments sent as an object (some
/// servers do) are taken as they are. A call with no id or name keeps it
/// empty: the engine gives it an id and answers `unknown tool`.
fn native_calls(message: Option<&Value>) -> Vec<NativeCall> {
    let calls = message.and_then(|m| m.get("tool_calls")).and_then(Value::as_array);
    calls
        .into_iter()
        .flatten()
        .map(|c| {
            let f = c.get("function");
            let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
            let args = match f.and_then(|f| f.get("arguments")) {
                Some(Value::String(s)) => http::call_args(s),
                None | Some(Value::Null) => json!({}),
                Some(v) => v.clone(),
            };
            NativeCall { id: text(c.get("id")), name: text(f.and_then(|f| f.get("name"))), args }
        })
        .collect()
}

/// Reads a chat-completions response: the reply text, its usage, the finish
/// reason and the native tool calls.
pub fn parse_response(body: &str, req: &Request, key: Option<&str>) -> Result<Parsed, AttemptError> {
    let v: Value = serde_json::from_str(body)
        .map_err(|e| AttemptError::broken(format!("the response is not JSON ({e}): {}", excerpt(body, key))))?;
    if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
        let msg = err.get("message").and_then(Value::as_str).map(String::from).unwrap_or_else(|| err.to_string());
        return Err(AttemptError::down(format!("the server answered with an error: {}", excerpt(&msg, key))));
    }
    let Some(choice) = v.get("choices").and_then(Value::as_array).and_then(|c| c.first()) else {
        return Err(AttemptError::broken(format!(
            "the response has no `choices` (is base_url a chat-completions API?): {}",
            excerpt(body, key)
        )));
    };
    let message = choice.get("message").or_else(|| choice.get("delta"));
    let text = match message.and_then(|m| m.get("content")) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.as_str().or_else(|| p.get("text").and_then(Value::as_str)))
            .collect::<Vec<_>>()
            .join(""),
        _ => choice.get("text").and_then(Value::as_str).unwrap_or_default().to_string(),
    };
    let finish = match choice.get("finish_reason") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => String::new(),
        Some(other) => other.to_string(),
    };
    let tool_calls = native_calls(message);
    let u = v.get("usage");
    let input = u.and_then(|u| u.get("prompt_tokens")).and_then(tokens);
    let output = u.and_then(|u| u.get("completion_tokens")).and_then(tokens);
    let usage = usage(input, output, req, &http::counted_text(&text, &tool_calls));
    Ok(Parsed { text, usage, finish, tool_calls })
}

/// One tool call as its pieces arrive.
#[derive(Debug, Default)]
struct CallPieces {
    id: String,
    name: String,
    args: String,
    /// Arguments sent as an object, not as text (some servers do).
    object: Option<Value>,
}

/// Reads a streamed chat completion: `data: {chunk}` events whose
/// `choices[0].delta` carries the next `content` (null in llama.cpp's first
/// chunk) and `tool_calls` pieces by `index`, a `finish_reason`, then (with
/// `stream_options.include_usage`) a chunk with `choices: []` and the
/// `usage`, then `data: [DONE]`. A stream is whole at `[DONE]`, or when the
/// body ends after a `finish_reason` and, if the request asked for it
/// ([`asks_usage`]), the usage that follows it: a body cut between the two
/// would otherwise be charged an estimate instead of what the server counted.
#[derive(Debug, Default)]
pub struct ChunkStream {
    key: Option<String>,
    text: String,
    calls: Vec<(u64, CallPieces)>,
    args_bytes: usize,
    finish: String,
    input: Option<u64>,
    output: Option<u64>,
    /// The request asked for the usage at the end.
    usage_asked: bool,
    /// A usage arrived with or after the `finish_reason` (the final count).
    final_usage: bool,
    done: bool,
}

/// The assembler of a streamed chat completion.
pub fn stream_assembler(req: &Request, key: Option<&str>) -> Box<dyn stream::Assembler> {
    Box::new(ChunkStream { key: key.map(String::from), usage_asked: asks_usage(req), ..ChunkStream::default() })
}

impl stream::Assembler for ChunkStream {
    fn event(&mut self, ev: &stream::Event) -> Result<Option<String>, AttemptError> {
        if ev.data.trim() == "[DONE]" {
            self.done = true;
            return Ok(None);
        }
        let v = stream::json(ev, self.key.as_deref())?;
        if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
            let msg = err.get("message").and_then(Value::as_str).map(String::from).unwrap_or_else(|| err.to_string());
            return Err(AttemptError::down(format!(
                "the server sent an error in the stream: {}",
                excerpt(&msg, self.key.as_deref())
            )));
        }
        let has_usage = v.get("usage").is_some_and(Value::is_object);
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            self.input = u.get("prompt_tokens").and_then(tokens).or(self.input);
            self.output = u.get("completion_tokens").and_then(tokens).or(self.output);
        }
        if has_usage && !self.finish.is_empty() {
            self.final_usage = true;
        }
        let choices = v.get("choices").and_then(Value::as_array);
        let Some(choice) =
            choices.and_then(|c| c.iter().find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0))
        else {
            return Ok(None);
        };
        if let Some(Value::String(f)) = choice.get("finish_reason") {
            self.finish = f.clone();
            // Some servers send the usage in the chunk that finishes.
            self.final_usage |= has_usage;
        }
        let delta = choice.get("delta");
        for c in delta.and_then(|d| d.get("tool_calls")).and_then(Value::as_array).into_iter().flatten() {
            // A server that numbers no call sends each one whole: it is a new call, whose
            // made-up index cannot be one a server sends.
            let index = c.get("index").and_then(Value::as_u64).unwrap_or(u64::MAX - self.calls.len() as u64);
            let at = match self.calls.iter().position(|(i, _)| *i == index) {
                Some(at) => at,
                None => {
                    self.calls.push((index, CallPieces::default()));
                    self.calls.len() - 1
                }
            };
            let call = &mut self.calls[at].1;
            let f = c.get("function");
            if let Some(id) = c.get("id").and_then(Value::as_str).filter(|s| !s.is_empty()) {
                call.id = id.to_string();
            }
            if let Some(name) = f.and_then(|f| f.get("name")).and_then(Value::as_str) {
                call.name.push_str(name);
            }
            match f.and_then(|f| f.get("arguments")) {
                Some(Value::String(piece)) => {
                    call.args.push_str(piece);
                    self.args_bytes += piece.len();
                }
                None | Some(Value::Null) => {}
                Some(v) => {
                    self.args_bytes += v.to_string().len();
                    call.object = Some(v.clone());
                }
            }
        }
        let piece = match delta.and_then(|d| d.get("content")) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => parts
                .iter()
                .filter_map(|p| p.as_str().or_else(|| p.get("text").and_then(Value::as_str)))
                .collect::<String>(),
            _ => choice.get("text").and_then(Value::as_str).unwrap_or_default().to_string(),
        };
        if piece.is_empty() {
            return Ok(None);
        }
        self.text.push_str(&piece);
        Ok(Some(piece))
    }

    fn over(&self) -> bool {
        self.done
    }

    fn whole(&self) -> bool {
        self.done || (!self.finish.is_empty() && (self.final_usage || !self.usage_asked))
    }

    fn size(&self) -> usize {
        self.text.len() + self.args_bytes
    }

    fn finish(self: Box<Self>, req: &Request) -> Parsed {
        let tool_calls: Vec<NativeCall> = self
            .calls
            .into_iter()
            .map(|(_, c)| NativeCall {
                id: c.id,
                name: c.name,
                args: c.object.unwrap_or_else(|| http::call_args(&c.args)),
            })
            .collect();
        let usage = usage(self.input, self.output, req, &http::counted_text(&self.text, &tool_calls));
        Parsed { text: self.text, usage, finish: self.finish, tool_calls }
    }
}

impl Attempt for OpenAi {
    fn attempt<'a>(&'a self, req: &'a Request) -> BoxFuture<'a, Result<Reply, AttemptError>> {
        const WIRE: http::Wire =
            http::Wire { headers, body: request_body, parse: parse_response, stream: stream_assembler };
        Box::pin(
            async move { http::attempt(&self.client, &self.spec, &chat_url(&self.spec, &req.model), &WIRE, req).await },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MailItem, ModelSpec, ProviderKind, ToolSpec, Usage};

    fn req(may: &[&str]) -> Request {
        Request {
            agent: "coder".into(),
            turn: 3,
            system: "You are coder.".into(),
            prompt: "planner says: go".into(),
            mail: vec![MailItem {
                id: "m1".into(),
                from: "planner".into(),
                body: "go".into(),
                kind: "message".into(),
                reply_to: None,
                thread: "m1".into(),
            }],
            may_send_to: may.iter().map(|s| s.to_string()).collect(),
            model: ModelSpec {
                model: Some("gpt-x".into()),
                temperature: Some(0.2),
                max_tokens: Some(2048),
                structured: Structured::JsonSchema,
                reply_max_messages: Some(2),
                reply_max_chars: Some(80),
                ..ModelSpec::new("smart", "local")
            },
            agent_dir: None,
            stream: None,
            tools: vec![],
        }
    }

    #[test]
    fn the_body_carries_model_messages_sampling_and_the_schema_with_to_as_an_enum() {
        let b = request_body(&req(&["planner", "human"]));
        assert_eq!(b["model"], "gpt-x");
        assert_eq!(b["messages"][0], json!({"role": "system", "content": "You are coder."}));
        assert_eq!(b["messages"][1]["role"], "user");
        assert_eq!(b["temperature"], 0.2);
        assert_eq!(b["max_tokens"], 2048);
        let schema = &b["response_format"]["json_schema"]["schema"];
        assert_eq!(b["response_format"]["type"], "json_schema");
        let msg = &schema["properties"]["messages"];
        assert_eq!(msg["items"]["properties"]["to"]["enum"], json!(["planner", "human"]));
        assert_eq!(msg["maxItems"], 2);
        assert_eq!(msg["items"]["properties"]["body"]["maxLength"], 80);
        assert_eq!(msg["items"]["properties"]["reply_to"]["enum"], json!(["m1", null]));
        assert_eq!(schema["required"], json!(["messages", "notes", "memory"]));
    }

    #[test]
    fn with_no_explicit_limits_the_schema_is_bounded_from_max_tokens() {
        let mut r = req(&["planner", "human"]);
        r.model.reply_max_messages = None;
        r.model.reply_max_chars = None;
        r.model.max_tokens = Some(1024);
        let b = request_body(&r);
        let schema = &b["response_format"]["json_schema"]["schema"];
        let limits = contract::Limits::for_model(&r.model, &r.may_send_to, &["m1".to_string()], &[]);
        let msg = &schema["properties"]["messages"];
        assert_eq!(msg["maxItems"], limits.messages);
        assert_eq!(msg["items"]["properties"]["body"]["maxLength"], limits.chars);
        assert_eq!(schema["properties"]["notes"]["maxLength"], limits.chars);
        assert_eq!(schema["properties"]["memory"]["maxItems"], limits.messages);
        assert!(contract::longest(schema).unwrap().tokens() <= 1024, "{schema:#}");
        r.model.max_tokens = Some(4096);
        let bigger = &request_body(&r)["response_format"]["json_schema"]["schema"];
        assert!(
            bigger["properties"]["notes"]["maxLength"].as_u64() > schema["properties"]["notes"]["maxLength"].as_u64()
        );
    }

    #[test]
    fn an_agent_that_may_write_to_nobody_gets_a_schema_with_no_messages() {
        let schema = contract::schema(&[], &[], &[], contract::Limits { messages: 2, chars: 10 });
        let msg = &schema["properties"]["messages"];
        assert_eq!(msg["maxItems"], 0);
        assert!(msg["items"]["properties"]["to"].get("enum").is_none(), "an empty enum is not valid JSON schema");
        let mut r = req(&[]);
        r.model.structured = Structured::JsonObject;
        assert_eq!(request_body(&r)["response_format"], json!({"type": "json_object"}));
        r.model.structured = Structured::None;
        r.model.temperature = None;
        let b = request_body(&r);
        assert!(b.get("response_format").is_none() && b.get("temperature").is_none());
    }

    #[test]
    fn urls_for_plain_and_azure() {
        let mut spec = ProviderSpec::new("p", ProviderKind::OpenAi);
        spec.base_url = Some("http://127.0.0.1:8080/v1/".into());
        let m = ModelSpec { model: Some("gpt-4o".into()), ..ModelSpec::new("k", "p") };
        assert_eq!(chat_url(&spec, &m), "http://127.0.0.1:8080/v1/chat/completions");
        spec.base_url = Some("https://res.openai.azure.com".into());
        spec.azure_api_version = Some("2024-10-21".into());
        assert_eq!(
            chat_url(&spec, &m),
            "https://res.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
        );
        let m = ModelSpec { deployment: Some("prod-4o".into()), ..m };
        assert!(chat_url(&spec, &m).contains("/deployments/prod-4o/"));
        let h = headers(&spec, Some("k3y")).unwrap();
        assert_eq!(h["api-key"], "k3y");
        assert!(h.get("authorization").is_none());
    }

    #[test]
    fn parses_leniently() {
        let r = req(&["planner"]);
        let body = r#"{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"{\"messages\":[]}","extra":1},"finish_reason":"weird_reason"}],"usage":{"prompt_tokens":61,"completion_tokens":226,"total_tokens":287,"prompt_tokens_details":{"cached_tokens":56}},"timings":{}}"#;
        let p = parse_response(body, &r, None).unwrap();
        assert_eq!(p.text, "{\"messages\":[]}");
        assert_eq!(p.usage, Usage { input_tokens: 61, output_tokens: 226, estimated: false });
        assert_eq!(p.finish, "weird_reason");
        assert!(p.tool_calls.is_empty());

        let tool = r#"{"choices":[{"message":{"role":"assistant","content":null,"tool_calls":[]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":2,"completion_tokens":10}}"#;
        assert_eq!(parse_response(tool, &r, None).unwrap().text, "");
        let parts = r#"{"choices":[{"message":{"content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}}]}"#;
        let p = parse_response(parts, &r, None).unwrap();
        assert_eq!(p.text, "ab");
        assert!(p.usage.estimated, "no usage: estimated");
        assert_eq!(p.usage.input_tokens, (r.prompt_chars() as u64).div_ceil(4));
    }

    fn native(mut r: Request) -> Request {
        r.model.tools = ToolMode::Native;
        r.tools = vec![ToolSpec {
            name: "read_file".into(),
            description: "Reads a file.".into(),
            parameters: json!({"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"], "additionalProperties": false}),
        }];
        r
    }

    #[test]
    fn native_tools_go_as_function_definitions_and_not_in_the_schema() {
        let r = native(req(&["planner"]));
        let b = request_body(&r);
        assert_eq!(
            b["tools"],
            json!([{"type": "function", "function": {"name": "read_file", "description": "Reads a file.", "parameters": r.tools[0].parameters}}])
        );
        let schema = &b["response_format"]["json_schema"]["schema"];
        assert!(schema["properties"].get("tool_calls").is_none(), "{schema:#}");
        // In the contract (the default), the tools are in the schema and no functions are sent.
        let mut c = r.clone();
        c.model.tools = ToolMode::Contract;
        let b = request_body(&c);
        assert!(b.get("tools").is_none());
        let calls = &b["response_format"]["json_schema"]["schema"]["properties"]["tool_calls"];
        assert_eq!(calls["items"]["anyOf"][0]["properties"]["tool"]["enum"], json!(["read_file"]));
        assert!(contract::longest(&b["response_format"]["json_schema"]["schema"]).unwrap().tokens() <= 2048);
        // No tools, no functions.
        let mut none = r;
        none.tools.clear();
        assert!(request_body(&none).get("tools").is_none());
    }

    #[test]
    fn native_calls_of_openai_are_mapped() {
        let r = native(req(&["planner"]));
        let body = r#"{"id":"chatcmpl-9","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_abc123","type":"function","function":{"name":"read_file","arguments":"{\"path\":\"notes.md\"}"}},{"id":"call_def","type":"function","function":{"name":"write_file","arguments":"{\"path\": \"x"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":80,"completion_tokens":31}}"#;
        let p = parse_response(body, &r, None).unwrap();
        assert_eq!(p.text, "", "no content, still an answer");
        assert_eq!(p.finish, "tool_calls");
        assert_eq!(
            p.tool_calls,
            vec![
                NativeCall { id: "call_abc123".into(), name: "read_file".into(), args: json!({"path": "notes.md"}) },
                NativeCall { id: "call_def".into(), name: "write_file".into(), args: json!("{\"path\": \"x") },
            ]
        );
    }

    #[test]
    fn native_calls_of_llama_cpp_keep_their_ids_without_a_call_prefix() {
        let r = native(req(&["planner"]));
        // llama.cpp's server: ids are random text, arguments a JSON string, content "" beside the calls.
        let body = r#"{"choices":[{"finish_reason":"tool_calls","index":0,"message":{"role":"assistant","content":"","tool_calls":[{"type":"function","function":{"name":"read_file","arguments":"{\"path\":\"a.txt\"}"},"id":"xQ3mJ9cXk2PzV8rT1bN7LwYf0hGs4DaE"},{"type":"function","function":{"name":"list_files","arguments":""},"id":"7"}]}}],"created":1,"model":"gemma","object":"chat.completion","usage":{"completion_tokens":20,"prompt_tokens":100,"total_tokens":120}}"#;
        let p = parse_response(body, &r, None).unwrap();
        assert_eq!(p.text, "");
        let ids: Vec<&str> = p.tool_calls.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["xQ3mJ9cXk2PzV8rT1bN7LwYf0hGs4DaE", "7"]);
        assert_eq!(p.tool_calls[0].args, json!({"path": "a.txt"}));
        assert_eq!(p.tool_calls[1].args, json!({}), "empty arguments are no arguments");
        // Arguments sent as an object, and a call with no id or function, are kept for the engine to judge.
        let odd = r#"{"choices":[{"message":{"content":"hi","tool_calls":[{"function":{"name":"calculate","arguments":{"expression":"1+1"}}},{"type":"function"}]},"finish_reason":"stop"}]}"#;
        let p = parse_response(odd, &r, None).unwrap();
        assert_eq!(p.text, "hi");
        assert_eq!(
            p.tool_calls[0],
            NativeCall { id: "".into(), name: "calculate".into(), args: json!({"expression": "1+1"}) }
        );
        assert_eq!(p.tool_calls[1], NativeCall { id: "".into(), name: "".into(), args: json!({}) });
        assert!(p.usage.estimated && p.usage.output_tokens > 1, "calls count in the estimate: {:?}", p.usage);
    }

    #[test]
    fn malformed_bodies_are_clear_errors() {
        let r = req(&[]);
        let e = parse_response("<html>bad gateway</html>", &r, None).unwrap_err();
        assert!(e.message.contains("not JSON") && e.message.contains("bad gateway"), "{e:?}");
        let e = parse_response(r#"{"object":"list","data":[]}"#, &r, None).unwrap_err();
        assert!(e.message.contains("no `choices`"), "{e:?}");
        let e = parse_response(r#"{"choices":[]}"#, &r, None).unwrap_err();
        assert!(e.message.contains("no `choices`"), "{e:?}");
        let e = parse_response(r#"{"error":{"message":"quota"}}"#, &r, None).unwrap_err();
        assert!(e.message.contains("quota"), "{e:?}");
    }

    fn assemble(r: &Request, body: &str, size: usize) -> Result<(Vec<String>, bool, Parsed), AttemptError> {
        stream::tests::assemble(stream_assembler(r, Some("sk-secret-key")), r, body, size)
    }

    /// llama.cpp's server: the first chunk has `content: null`, the usage comes
    /// in a last chunk with no choices, and `[DONE]` ends it.
    const LLAMA_STREAM: &str = concat!(
        "data: {\"choices\":[{\"finish_reason\":null,\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null}}],\"created\":1,\"id\":\"chatcmpl-x\",\"model\":\"gemma-270m\",\"object\":\"chat.completion.chunk\"}\n\n",
        "data: {\"choices\":[{\"finish_reason\":null,\"index\":0,\"delta\":{\"content\":\"{\\\"messages\\\"\"}}],\"object\":\"chat.completion.chunk\"}\n\n",
        ": keep-alive\n\n",
        "data: {\"choices\":[{\"finish_reason\":null,\"index\":0,\"delta\":{\"content\":\":[]}\"}}],\"object\":\"chat.completion.chunk\"}\n\n",
        "data: {\"choices\":[{\"finish_reason\":\"stop\",\"index\":0,\"delta\":{}}],\"object\":\"chat.completion.chunk\"}\n\n",
        "data: {\"choices\":[],\"usage\":{\"completion_tokens\":7,\"prompt_tokens\":61,\"total_tokens\":68},\"timings\":{\"predicted_ms\":3.1}}\n\n",
        "data: [DONE]\n\n",
    );

    #[test]
    fn a_stream_request_asks_for_the_usage_and_a_plain_one_does_not() {
        let mut r = req(&["planner"]);
        assert_eq!(request_body(&r)["stream"], false);
        assert!(request_body(&r).get("stream_options").is_none());
        r.model.stream = true;
        let b = request_body(&r);
        assert_eq!((&b["stream"], &b["stream_options"]), (&json!(true), &json!({"include_usage": true})));
    }

    #[test]
    fn a_llama_cpp_stream_is_assembled_in_any_split_and_with_crlf() {
        let r = req(&["planner"]);
        let crlf = LLAMA_STREAM.replace('\n', "\r\n");
        for body in [LLAMA_STREAM, crlf.as_str()] {
            for size in [1, 2, 3, 7, 64, 10_000] {
                let (pieces, whole, p) = assemble(&r, body, size).unwrap();
                assert_eq!(pieces, ["{\"messages\"", ":[]}"], "the null first chunk hands out nothing");
                assert!(whole);
                assert_eq!(p.text, "{\"messages\":[]}");
                assert_eq!(p.finish, "stop");
                assert_eq!(p.usage, Usage { input_tokens: 61, output_tokens: 7, estimated: false });
                assert!(p.tool_calls.is_empty());
            }
        }
    }

    #[test]
    fn tool_call_pieces_are_joined_by_index() {
        let r = native(req(&["planner"]));
        let body = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"read_file\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"pa\"}}]},\"finish_reason\":null}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"xQ3\",\"type\":\"function\",\"function\":{\"name\":\"list_files\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"th\\\":\\\"a.md\\\"}\"}}]},\"finish_reason\":null}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
        );
        // No usage chunk and no [DONE]: whole at the end of the body, thanks to the
        // finish_reason, when the request did not ask for the usage; cut when it did.
        let mut asked = r.clone();
        asked.model.stream = true;
        assert!(!assemble(&asked, body, 5).unwrap().1, "the usage asked for never came");
        let (pieces, whole, p) = assemble(&r, body, 5).unwrap();
        assert!(pieces.is_empty() && whole);
        assert_eq!(p.finish, "tool_calls");
        assert_eq!(
            p.tool_calls,
            vec![
                NativeCall { id: "call_1".into(), name: "read_file".into(), args: json!({"path": "a.md"}) },
                NativeCall { id: "xQ3".into(), name: "list_files".into(), args: json!({}) },
            ]
        );
        assert!(p.usage.estimated, "no usage was sent: {:?}", p.usage);
        // Calls sent whole and without an index (as some servers do) are each a call.
        let whole = "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"id\":\"a\",\"function\":{\"name\":\"read_file\",\"arguments\":{\"path\":\"x\"}}},{\"id\":\"b\",\"function\":{\"name\":\"list_files\",\"arguments\":\"\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\ndata: [DONE]\n\n";
        let (_, whole, p) = assemble(&r, whole, 16).unwrap();
        assert!(whole);
        assert_eq!(
            p.tool_calls,
            vec![
                NativeCall { id: "a".into(), name: "read_file".into(), args: json!({"path": "x"}) },
                NativeCall { id: "b".into(), name: "list_files".into(), args: json!({}) },
            ]
        );
    }

    #[test]
    fn a_stream_without_its_end_is_not_whole_and_errors_in_it_fail() {
        let r = req(&["planner"]);
        let cut: String = LLAMA_STREAM.split("data: {\"choices\":[{\"finish_reason\":\"stop\"").next().unwrap().into();
        let (pieces, whole, _) = assemble(&r, &cut, 9).unwrap();
        assert_eq!(pieces.len(), 2);
        assert!(!whole, "no finish_reason, no [DONE]: cut");
        // With the usage asked for: cut between the finish_reason and the usage chunk is
        // still cut; cut after the usage chunk (before [DONE]) is whole, with that usage.
        let mut asked = r.clone();
        asked.model.stream = true;
        let before_usage: String = LLAMA_STREAM.split("data: {\"choices\":[],\"usage\"").next().unwrap().into();
        assert!(assemble(&r, &before_usage, 9).unwrap().1, "the usage was not asked for");
        assert!(!assemble(&asked, &before_usage, 9).unwrap().1, "finish_reason without the usage asked for: cut");
        let before_done: String = LLAMA_STREAM.split("data: [DONE]").next().unwrap().into();
        let (_, whole, p) = assemble(&asked, &before_done, 9).unwrap();
        assert!(whole);
        assert_eq!(p.usage, Usage { input_tokens: 61, output_tokens: 7, estimated: false });
        // A usage in the chunk that finishes is the final one.
        let together = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"{}\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\n";
        let (_, whole, p) = assemble(&asked, together, 9).unwrap();
        assert!(whole && !p.usage.estimated, "{p:?}");
        // A usage in every chunk (before the finish_reason) is not the final count.
        let early = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"{}\"}}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\ndata: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";
        assert!(!assemble(&asked, early, 9).unwrap().1);
        let err = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"{\"}}]}\n\ndata: {\"error\":{\"message\":\"slot unavailable for sk-secret-key\",\"type\":\"server_error\"}}\n\n";
        let e = assemble(&r, err, 4).unwrap_err();
        assert!(e.message.contains("slot unavailable") && !e.message.contains("sk-secret-key"), "{e:?}");
        assert_eq!(e.cause, crate::Cause::Unavailable);
        let e = assemble(&r, "data: <html>\n\n", 4).unwrap_err();
        assert!(e.message.contains("not JSON") && e.message.contains("<html>"), "{e:?}");
    }
}
