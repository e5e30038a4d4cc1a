//! The tolerant reply parser: code fences and chatter around the
//! reply are skipped, the first top-level JSON object that has a key of the
//! contract is taken, missing keys get defaults, and `to` may be a string or a
//! list. The contract itself (keys, fields, priorities, memory operations) is
//! defined once, in [`lemming_provider::contract`].
//!
//! Only *top-level* objects count: an object inside another one (a message
//! object inside a reply) is never taken for the reply, and neither is anything
//! inside an object that does not close (a reply cut off by the token limit).

use lemming_provider::contract;
use serde_json::Value;

use crate::message::Priority;
/// A message the agent asked to send.
#[derive(Debug, Clone, PartialEq)]
pub struct OutMessage {
    /// Recipients.
    pub to: Vec<String>,
    /// Text.
    pub body: String,
    /// Priority (`normal` when missing or unknown).
    pub priority: Priority,
    /// The id it answers.
    pub reply_to: Option<String>,
    /// A subject line.
    pub subject: Option<String>,
    /// The thread, when the agent names one.
    pub thread: Option<String>,
}

/// A tool call the agent asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// The id the model gave it, if any (checked when the call is planned).
    pub id: Option<String>,
    /// The tool's name.
    pub tool: String,
    /// Its arguments, as given (the tool checks them).
    pub args: Value,
}

/// A parsed reply.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Parsed {
    /// Messages to send.
    pub messages: Vec<OutMessage>,
    /// The agent's notes to itself (logged).
    pub notes: String,
    /// Memory operations, as JSON.
    pub memory: Vec<Value>,
    /// Tool calls, in order.
    pub tool_calls: Vec<ToolCall>,
    /// Parts of the reply that were skipped, and why.
    pub warnings: Vec<String>,
}

/// Why a reply is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    /// No JSON object at all.
    #[error("the reply holds no JSON object")]
    NoJson,
    /// JSON objects, but none with a key of the contract.
    #[error("the reply holds no JSON object with any of the reply keys ({})", contract::KEYS.join(", "))]
    NotAReply,
    /// A JSON object starts but never closes: the reply was cut off. Nothing
    /// inside it is taken.
    #[error("the reply's JSON object does not close (the reply was cut off)")]
    Unclosed,
    /// A reply whose every part was unusable (a `messages` that is not a list,
    /// messages with no recipient, ...), so that nothing is left to apply: it
    /// is not taken as the model choosing to say nothing.
    #[error("nothing in the reply is usable: {}", .0.join("; "))]
    NothingUsable(Vec<String>),
}

/// What the text holds at its top level.
#[derive(Debug, PartialEq)]
enum Top<'a> {
    /// A balanced `{...}` span (it may still not be valid JSON).
    Closed(&'a str),
    /// An object that starts here and never closes; the scan ends.
    Unclosed,
}

/// Whether the `{` at `at` can start a JSON object: what follows it (after
/// blanks) is a string key or the closing brace. A brace in prose ("use { to
/// open") is not an object.
fn opens_object(b: &[u8], at: usize) -> bool {
    b[at + 1..].iter().find(|c| !c.is_ascii_whitespace()).is_none_or(|c| matches!(c, b'"' | b'}'))
}

/// The top-level objects of `text`, in order: each `{` that can start an
/// object, outside any other object, up to its matching close (strings and
/// escapes respected; `[`/`]` nest like braces). The scan is iterative, so
/// deep nesting cannot overflow the stack. The structural characters are
/// ASCII, so every span is cut at character boundaries.
fn top_level(text: &str) -> Vec<Top<'_>> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'{' || !opens_object(b, i) {
            i += 1;
            continue;
        }
        let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
        let mut end = None;
        for (j, &c) in b.iter().enumerate().skip(i) {
            if in_string {
                match c {
                    _ if escaped => escaped = false,
                    b'\\' => escaped = true,
                    b'"' => in_string = false,
                    _ => {}
                }
                continue;
            }
            match c {
                b'"' => in_string = true,
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(j);
                        break;
                    }
                }
                _ => {}
            }
        }
        match end {
            Some(e) => {
                out.push(Top::Closed(&text[i..=e]));
                i = e + 1;
            }
            None => {
                out.push(Top::Unclosed);
                break;
            }
        }
    }
    out
}

/// The reply object of `text`: the first top-level JSON object that has a key
/// of the contract ([`contract::KEYS`]). Objects without one (examples,
/// fragments) are passed over; an object that never closes ends the search.
pub fn reply_object(text: &str) -> Result<serde_json::Map<String, Value>, Unusable> {
    let mut seen_object = false;
    for top in top_level(text) {
        match top {
            Top::Closed(span) => {
                if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(span) {
                    if contract::KEYS.iter().any(|k| map.contains_key(*k)) {
                        return Ok(map);
                    }
                    seen_object = true;
                }
            }
            Top::Unclosed => return Err(Unusable::Unclosed),
        }
    }
    Err(if seen_object { Unusable::NotAReply } else { Unusable::NoJson })
}

/// Parses a reply.
pub fn parse(text: &str) -> Result<Parsed, Unusable> {
    let obj = reply_object(text)?;
    let mut out = Parsed::default();
    match obj.get("messages") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                match message(item) {
                    Ok(m) => out.messages.push(m),
                    Err(why) => out.warnings.push(format!("messages[{i}] skipped: {why}")),
                }
            }
        }
        Some(_) => out.warnings.push("`messages` is not a list; ignored".into()),
    }
    out.notes = match obj.get("notes") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    match obj.get("memory") {
        None | Some(Value::Null) => {}
        Some(Value::Array(ops)) => out.memory = ops.clone(),
        Some(_) => out.warnings.push("`memory` is not a list; ignored".into()),
    }
    match obj.get("tool_calls") {
        None | Some(Value::Null) => {}
        Some(Value::Array(calls)) => {
            for (i, item) in calls.iter().enumerate() {
                match tool_call(item) {
                    Ok(c) => out.tool_calls.push(c),
                    Err(why) => out.warnings.push(format!("tool_calls[{i}] skipped: {why}")),
                }
            }
        }
        Some(_) => out.warnings.push("`tool_calls` is not a list; ignored".into()),
    }
    // The model tried to say something and none of it could be used: a failed
    // attempt, not an "ok" that consumes the mail with nothing to show for it.
    if out.messages.is_empty()
        && out.memory.is_empty()
        && out.notes.is_empty()
        && out.tool_calls.is_empty()
        && !out.warnings.is_empty()
    {
        return Err(Unusable::NothingUsable(out.warnings));
    }
    Ok(out)
}

/// One item of `tool_calls`: `tool` (or `name`, as some models write it),
/// `args` (or `arguments`; a JSON string of an object is read as that object;
/// missing is `{}`), and an optional `id`.
fn tool_call(item: &Value) -> Result<ToolCall, String> {
    let obj = item.as_object().ok_or("not an object")?;
    let tool = match obj.get("tool").or_else(|| obj.get("name")) {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err("missing `tool`".into()),
    };
    let args = match obj.get("args").or_else(|| obj.get("arguments")) {
        None | Some(Value::Null) => Value::Object(serde_json::Map::new()),
        Some(Value::String(s)) => {
            serde_json::from_str::<Value>(s).ok().filter(Value::is_object).unwrap_or_else(|| Value::String(s.clone()))
        }
        Some(v) => v.clone(),
    };
    let id = match obj.get("id") {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    Ok(ToolCall { id, tool, args })
}

fn message(item: &Value) -> Result<OutMessage, String> {
    let obj = item.as_object().ok_or("not an object")?;
    let to: Vec<String> = match obj.get("to") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a.iter().filter_map(|v| v.as_str().map(String::from)).collect(),
        _ => return Err("missing `to`".into()),
    };
    if to.is_empty() {
        return Err("`to` names nobody".into());
    }
    let body = match obj.get("body") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => return Err("missing `body`".into()),
        Some(other) => other.to_string(),
    };
    let s = |k: &str| obj.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).map(String::from);
    Ok(OutMessage {
        to,
        body,
        priority: s("priority").and_then(|p| Priority::parse(&p)).unwrap_or_default(),
        reply_to: s("reply_to"),
        subject: s("subject"),
        thread: s("thread"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_fences_and_takes_the_first_object() {
        let text = "Sure!\n```json\n{\"messages\":[{\"to\":\"planner\",\"body\":\"go\",\"priority\":\"urgent\"}],\"notes\":\"n\"}\n```\n{\"messages\":[]}";
        let p = parse(text).unwrap();
        assert_eq!(p.messages.len(), 1);
        assert_eq!(p.messages[0].to, vec!["planner"]);
        assert_eq!(p.messages[0].priority, Priority::Urgent);
        assert_eq!(p.notes, "n");
    }

    #[test]
    fn defaults_and_lists() {
        let p = parse(r#"{"messages":[{"to":["a","b"],"body":"x"},{"body":"no to"},{"to":"c"}]}"#).unwrap();
        assert_eq!(p.messages[0].to, vec!["a", "b"]);
        assert_eq!(p.messages[0].priority, Priority::Normal);
        assert_eq!(p.warnings.len(), 2);
        assert_eq!(parse(r#"{"notes":null}"#).unwrap(), Parsed::default());
        assert_eq!(parse("I cannot help {with that"), Err(Unusable::NoJson));
        // Saying nothing on purpose is a reply; failing at everything is not.
        assert_eq!(parse(r#"{"messages":[]}"#).unwrap(), Parsed::default());
        for text in [r#"{"messages":"notalist"}"#, r#"{"messages":[{"body":"no to"}]}"#, r#"{"memory":7}"#] {
            assert!(matches!(parse(text), Err(Unusable::NothingUsable(w)) if !w.is_empty()), "{text}");
        }
        // One usable part is enough: the rest are warnings.
        let p = parse(r#"{"messages":"notalist","notes":"thinking"}"#).unwrap();
        assert_eq!((p.notes.as_str(), p.warnings.len()), ("thinking", 1));
        let p = parse("{bad} {\"notes\":{\"k\":1}}").unwrap();
        assert_eq!(p.notes, "{\"k\":1}");
    }

    /// What Gemma 3 270M wrote under a schema with no bounds: the outer object
    /// never closed, and its first message object is complete.
    const CUT_OFF: &str = r#"{"messages":[{"to":"human","body":"I will help","priority":"normal","reply_to":null},{"to":"human","body":"and then I will help and then I will help and then"#;

    #[test]
    fn an_object_inside_an_unclosed_one_is_never_the_reply() {
        assert_eq!(parse(CUT_OFF), Err(Unusable::Unclosed));
        assert_eq!(parse(&format!("```json\n{CUT_OFF}")), Err(Unusable::Unclosed));
        // Cut inside a string that holds braces, or just after a complete inner object.
        assert_eq!(
            parse(r#"{"notes":"a } and { in a string","messages":[{"to":"human","body":"x"}"#),
            Err(Unusable::Unclosed)
        );
        assert_eq!(parse(r#"{"messages":[{"to":"human","body":"x"}]"#), Err(Unusable::Unclosed));
        // A complete reply before a cut-off one is still the reply.
        let p = parse(&format!("{{\"notes\":\"first\"}}\n{CUT_OFF}")).unwrap();
        assert_eq!(p.notes, "first");
    }

    #[test]
    fn only_top_level_objects_count_and_they_need_a_contract_key() {
        // A message object on its own is not a reply.
        assert_eq!(parse(r#"{"to":"human","body":"hi"}"#), Err(Unusable::NotAReply));
        assert_eq!(parse("{}"), Err(Unusable::NotAReply));
        // A reply nested in another object is not top-level.
        assert_eq!(parse(r#"{"answer":{"messages":[{"to":"human","body":"hi"}]}}"#), Err(Unusable::NotAReply));
        // An example object before the reply is passed over.
        let p = parse(r#"Format: {"example":true}. Reply: {"messages":[{"to":"human","body":"real"}]}"#).unwrap();
        assert_eq!(p.messages[0].body, "real");
        // Braces in strings do not confuse the scan; escaped quotes do not end a string.
        let p = parse(r#"{"notes":"say \"}\" then {","messages":[{"to":"a","body":"}{"}]}"#).unwrap();
        assert_eq!((p.notes.as_str(), p.messages[0].body.as_str()), ("say \"}\" then {", "}{"));
        // A brace in prose does not swallow the reply after it.
        let p = parse(r#"Use { to open an object. {"notes":"ok"}"#).unwrap();
        assert_eq!(p.notes, "ok");
        // Unicode around and inside the reply.
        let p = parse("é✓ {\"notes\":\"ça {va}\"} ✓").unwrap();
        assert_eq!(p.notes, "ça {va}");
    }

    #[test]
    fn hostile_nesting_is_refused_without_panicking() {
        assert_eq!(parse(&"{\"a\":".repeat(200_000)), Err(Unusable::Unclosed));
        let deep = format!("{{\"messages\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(parse(&deep), Err(Unusable::NoJson), "too deep for the JSON reader: not an object");
        assert_eq!(parse("}}}]]] {\"notes\":\"n\"}").unwrap().notes, "n");
    }

    #[test]
    fn every_contract_key_makes_a_reply_and_tool_calls_are_read() {
        for key in contract::KEYS {
            assert!(parse(&format!("{{\"{key}\":null}}")).is_ok(), "{key} is a contract key");
        }
        // Tool calls alone are a reply: the agent acts and says nothing.
        let p = parse(r#"{"tool_calls":[{"id":"c1","tool":"read_file","args":{"path":"a.md"}}]}"#).unwrap();
        assert_eq!(
            p.tool_calls,
            [ToolCall { id: Some("c1".into()), tool: "read_file".into(), args: serde_json::json!({"path": "a.md"}) }]
        );
        // `name` and `arguments` (a JSON string, as native calls carry them) are read too; missing args are {}.
        let p = parse(r#"{"tool_calls":[{"name":"list_files","arguments":"{\"path\":\"x\"}"},{"tool":"recall"}]}"#)
            .unwrap();
        assert_eq!(p.tool_calls[0].args, serde_json::json!({"path": "x"}));
        assert_eq!((p.tool_calls[0].id.as_ref(), p.tool_calls[1].args.clone()), (None, serde_json::json!({})));
        // Arguments that are not an object are kept as given: the tool refuses them, visibly.
        let p = parse(r#"{"tool_calls":[{"tool":"calculate","args":"1+1"}]}"#).unwrap();
        assert_eq!(p.tool_calls[0].args, serde_json::json!("1+1"));
        // Items without a tool are skipped with a warning; none usable at all is a failed attempt.
        let only = parse(r#"{"tool_calls":[{"args":{}}]}"#);
        assert!(matches!(&only, Err(Unusable::NothingUsable(w)) if w[0].contains("tool_calls[0]")), "{only:?}");
        let p = parse(r#"{"tool_calls":"read it","notes":"n"}"#).unwrap();
        assert!(p.warnings.iter().any(|w| w.contains("tool_calls")), "{:?}", p.warnings);
    }

    #[test]
    fn the_parser_reads_every_field_and_priority_the_contract_names() {
        for (i, p) in contract::PRIORITIES.iter().enumerate() {
            assert!(Priority::parse(p).is_some(), "priority {p} of the contract is unknown to the parser");
            assert!(contract::PRIORITIES[..i].iter().all(|q| Priority::parse(q) != Priority::parse(p)));
        }
        assert_eq!(Priority::parse(contract::DEFAULT_PRIORITY), Some(Priority::default()));
        let mut msg = serde_json::Map::new();
        for f in contract::MESSAGE_FIELDS.iter().chain(&contract::MESSAGE_EXTRA_FIELDS) {
            msg.insert(f.to_string(), Value::String(format!("{f}-value")));
        }
        msg.insert("priority".into(), Value::String("urgent".into()));
        let p = parse(&serde_json::json!({"messages": [msg]}).to_string()).unwrap();
        let m = &p.messages[0];
        assert_eq!(m.to, vec!["to-value"]);
        assert_eq!(m.body, "body-value");
        assert_eq!(m.priority, Priority::Urgent);
        assert_eq!(m.reply_to.as_deref(), Some("reply_to-value"));
        assert_eq!(m.subject.as_deref(), Some("subject-value"));
        assert_eq!(m.thread.as_deref(), Some("thread-value"));
        assert_eq!(
            contract::MESSAGE_FIELDS.len() + contract::MESSAGE_EXTRA_FIELDS.len(),
            6,
            "a new field needs a check here"
        );
    }

    #[test]
    fn memory_applies_exactly_the_ops_and_keys_the_contract_names() {
        let dir = tempfile::tempdir().unwrap();
        for op in contract::MEMORY_OPS {
            let value = match op.value {
                contract::OpValue::None => Value::Null,
                contract::OpValue::Any => serde_json::json!("v"),
                contract::OpValue::Object => serde_json::json!({"a": 1}),
            };
            let (plan, errors) =
                crate::memory::plan(dir.path(), &[serde_json::json!({"op": op.name, "key": "k", "value": value})]);
            assert!(
                errors.is_empty() && plan.contains_key("k"),
                "op {} of the contract is refused: {errors:?}",
                op.name
            );
        }
        let (_, errors) =
            crate::memory::plan(dir.path(), &[serde_json::json!({"op": "upsert", "key": "k", "value": 1})]);
        assert_eq!(errors.len(), 1, "an op outside the contract must be refused");
        let max = contract::MEMORY_KEY_MAX_CHARS as usize;
        assert!(crate::memory::valid_key(&"k".repeat(max)));
        assert!(!crate::memory::valid_key(&"k".repeat(max + 1)));
    }
}
