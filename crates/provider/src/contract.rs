//! The reply contract in one place.
//!
//! What a model is asked to answer is defined here once: the keys of a reply,
//! the fields of a message, the priorities and the memory operations. From
//! these come the three things that must agree:
//!
//! - the contract text every prompt ends with ([`instructions`]);
//! - the JSON schema sent with `structured = "json_schema"` ([`schema`]), whose
//!   strings and lists are all bounded so that the longest reply it allows fits
//!   in the model's `max_tokens` ([`Limits::for_model`]), tools' own argument
//!   schemas included ([`bounded`]);
//! - the engine's tolerant parser, which takes an object as a reply only when
//!   it has one of [`KEYS`], and hands memory operations to the memory module,
//!   which knows exactly the [`MEMORY_OPS`].
//!
//! Tool calls (`tool_calls`) are part of the contract only for an agent that
//! has tools and whose model takes them in the contract (`tools = "contract"`,
//! the default): the prompt lists its tools, and the schema lets `tool` name
//! only them, with `args` following each one's schema. A model with
//! `tools = "native"` gets its tools as function definitions instead
//! ([`crate::openai`], [`crate::anthropic`]), and the contract does not offer
//! `tool_calls`.
//!
//! The tests here and in the engine check that they agree.

use serde_json::{json, Map, Value};

use crate::{ModelSpec, Structured, ToolMode, ToolSpec};

/// Every top-level key of a reply. A JSON object with none of them is not a
/// reply (it is an example, a fragment, or a message object taken out of a
/// reply that was cut off).
pub const KEYS: [&str; 4] = ["messages", "notes", "memory", "tool_calls"];

/// The keys every model is asked for, in the prompt and in the schema.
/// [`TOOL_CALLS_KEY`] is offered as well when the agent has tools and its
/// model takes them in the contract ([`offered_keys`]).
pub const OFFERED_KEYS: [&str; 3] = ["messages", "notes", "memory"];

/// The key of the tool calls in a reply.
pub const TOOL_CALLS_KEY: &str = "tool_calls";

/// The fields of a tool call (the schema requires all of them).
pub const CALL_FIELDS: [&str; 3] = ["id", "tool", "args"];

/// The longest call id the schema allows, in characters.
pub const CALL_ID_MAX_CHARS: u32 = 32;

/// The tools the contract offers a model whose tool mode is `mode`: all of
/// them in the contract, none when they go as native function definitions.
pub fn contract_tools(mode: ToolMode, tools: &[ToolSpec]) -> &[ToolSpec] {
    match mode {
        ToolMode::Contract => tools,
        ToolMode::Native => &[],
    }
}

/// The keys a model is asked for: [`OFFERED_KEYS`], and [`TOOL_CALLS_KEY`]
/// when it is offered tools in the contract.
pub fn offered_keys(tools: &[ToolSpec], mode: ToolMode) -> Vec<&'static str> {
    let mut keys = OFFERED_KEYS.to_vec();
    if !contract_tools(mode, tools).is_empty() {
        keys.push(TOOL_CALLS_KEY);
    }
    keys
}

/// The fields of a message a model is asked for (the schema requires all of them).
pub const MESSAGE_FIELDS: [&str; 4] = ["to", "body", "priority", "reply_to"];

/// Fields of a message the parser also reads, though they are not asked for.
pub const MESSAGE_EXTRA_FIELDS: [&str; 2] = ["subject", "thread"];

/// Every priority a message may have. A missing or unknown one is [`DEFAULT_PRIORITY`].
pub const PRIORITIES: [&str; 3] = ["low", "normal", "urgent"];

/// The priority of a message that names none (or one not in [`PRIORITIES`]).
pub const DEFAULT_PRIORITY: &str = "normal";

/// The longest memory key, in characters.
pub const MEMORY_KEY_MAX_CHARS: u32 = 64;

/// What value a memory operation takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpValue {
    /// No value (it is ignored).
    None,
    /// Any JSON value.
    Any,
    /// A JSON object.
    Object,
}

/// One memory operation of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryOp {
    /// Its name, the value of `op`.
    pub name: &'static str,
    /// The value it takes.
    pub value: OpValue,
    /// What it does, as the prompt says it.
    pub effect: &'static str,
}

impl MemoryOp {
    /// Whether the JSON schema offers this operation. A bounded schema holds
    /// only scalar values (an object or list of any shape cannot be bounded,
    /// and OpenAI's strict mode refuses free-form objects), so `merge`, which
    /// needs an object, is offered only to models that answer in plain text.
    pub fn in_schema(&self) -> bool {
        self.value != OpValue::Object
    }
}

/// Every memory operation, in the order the prompt lists them.
pub const MEMORY_OPS: [MemoryOp; 4] = [
    MemoryOp { name: "set", value: OpValue::Any, effect: "stores the value" },
    MemoryOp { name: "append", value: OpValue::Any, effect: "adds the value to a list (a missing key becomes a list)" },
    MemoryOp { name: "merge", value: OpValue::Object, effect: "adds the keys of an object value to an object" },
    MemoryOp { name: "delete", value: OpValue::None, effect: "removes the key" },
];

/// The memory operations offered to a model that answers with `structured`.
pub fn memory_ops(structured: Structured) -> impl Iterator<Item = &'static MemoryOp> {
    MEMORY_OPS.iter().filter(move |op| structured != Structured::JsonSchema || op.in_schema())
}

/// The contract as told to a model that answers with `structured`: the last
/// part of every system prompt. With `tools` (the agent's granted tools) in
/// the contract (`mode` [`ToolMode::Contract`]), it offers `tool_calls` and
/// lists each tool with its arguments; with [`ToolMode::Native`] it only says
/// to call the functions the model is given; without tools it says nothing
/// of them.
pub fn instructions(structured: Structured, tools: &[ToolSpec], mode: ToolMode) -> String {
    let schema = structured == Structured::JsonSchema;
    let offered = contract_tools(mode, tools);
    let ops: Vec<&str> = memory_ops(structured).map(|op| op.name).collect();
    let effects: Vec<String> = memory_ops(structured).map(|op| format!("{} {}", op.name, op.effect)).collect();
    let value = if schema { "<string, number, true, false or null>" } else { "<json>" };
    let keys = match (schema, offered.is_empty()) {
        (true, true) => "Every key is required: use [] for no messages or memory operations, \"\" for no notes.",
        (true, false) => {
            "Every key is required: use [] for no messages, memory operations or tool calls, \"\" for no notes."
        }
        (false, _) => "Every key is optional.",
    };
    let calls = if offered.is_empty() {
        String::new()
    } else {
        format!(",\n \"{TOOL_CALLS_KEY}\":[{{\"id\":\"<your id for the call>\",\"tool\":\"<name>\",\"args\":{{...}}}}]")
    };
    let mut text = format!(
        r#"Reply with exactly one JSON object and nothing else:
{{"messages":[{{"to":"<agent>","body":"<text>","priority":"{DEFAULT_PRIORITY}","reply_to":"<id or null>"}}],
 "notes":"<private notes for your log>",
 "memory":[{{"op":"{ops}","key":"<key>","value":{value}}}]{calls}}}
{keys} Write only to the agents listed above; other messages bounce.
Priority is one of {priorities}.
Memory operations: {effects}.
Memory keys use a-z, 0-9, '_', '.', '-', at most {MEMORY_KEY_MAX_CHARS} characters."#,
        ops = ops.join("|"),
        priorities = PRIORITIES.join(", "),
        effects = effects.join("; "),
    );
    if !offered.is_empty() {
        text.push_str(&format!(
            "\nTools you may call (each result comes back to you as a tool_result message whose reply_to is the call's id; \
             call ids use letters, digits, '_', '.', '-', at most {CALL_ID_MAX_CHARS} characters):"
        ));
        for t in offered {
            text.push_str(&format!("\n- {} {}: {}", t.name, signature(&t.parameters), one_line(&t.description)));
        }
    } else if !tools.is_empty() {
        text.push_str(
            "\nTo use a tool, call one of the functions you are given; \
             each result comes back to you as a tool_result message whose reply_to is the call's id.",
        );
    }
    text
}

/// Text on one line, its whitespace runs made single blanks.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A compact signature of a JSON schema, for the prompt: `{path: string,
/// append: boolean|null}`, `[string]`, `"a"|"b"`.
pub fn signature(schema: &Value) -> String {
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return values.iter().map(Value::to_string).collect::<Vec<_>>().join("|");
    }
    if let Some(v) = schema.get("const") {
        return v.to_string();
    }
    if let Some(alts) = schema.get("anyOf").or_else(|| schema.get("oneOf")).and_then(Value::as_array) {
        return alts.iter().map(signature).collect::<Vec<_>>().join("|");
    }
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => return "any".into(),
    };
    let one = |t: &str| match t {
        "array" => format!("[{}]", schema.get("items").map(signature).unwrap_or_else(|| "any".into())),
        "object" => {
            let props = schema.get("properties").and_then(Value::as_object);
            let fields: Vec<String> =
                props.into_iter().flatten().map(|(k, p)| format!("{k}: {}", signature(p))).collect();
            format!("{{{}}}", fields.join(", "))
        }
        other => other.to_string(),
    };
    types.into_iter().map(one).collect::<Vec<_>>().join("|")
}

/// How big a reply the schema allows: the most items in each list and the
/// longest free string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most messages, and the most memory operations, in a reply.
    pub messages: u32,
    /// The longest free string (a body, the notes, a memory key or value), in
    /// characters. Memory keys are at most [`MEMORY_KEY_MAX_CHARS`] in any case.
    pub chars: u32,
}

impl Limits {
    /// The token budget assumed when a model sets no `max_tokens`.
    pub const DEFAULT_BUDGET_TOKENS: u32 = 1024;
    /// One message (and one memory operation) is allowed per this many tokens of budget...
    pub const TOKENS_PER_MESSAGE: u32 = 512;
    /// ...up to this many.
    pub const MAX_DERIVED_MESSAGES: u32 = 4;
    /// Fewer messages are allowed when each free string would be shorter than this.
    pub const MIN_DERIVED_CHARS: u32 = 64;

    /// The limits for a model, such that the longest reply the schema allows
    /// (every list full, every string at its limit, the longest name and id,
    /// and the JSON around them) takes at most `max_tokens` tokens
    /// ([`Limits::DEFAULT_BUDGET_TOKENS`] when unset), counted the way the
    /// worst case goes ([`Size::tokens`]): one token per character, and
    /// [`TOKENS_PER_GAP`] for each place JSON allows whitespace.
    ///
    /// - Messages (and memory operations): `reply_max_messages` when set;
    ///   otherwise one per [`Limits::TOKENS_PER_MESSAGE`] tokens, at least 1,
    ///   at most [`Limits::MAX_DERIVED_MESSAGES`], and fewer if the strings
    ///   would get shorter than [`Limits::MIN_DERIVED_CHARS`].
    /// - Characters: what is left once the lists are full, shared equally by
    ///   the free strings; `reply_max_chars` lowers it, never raises it.
    ///
    /// Tool calls count like messages: at most as many, and the longest one
    /// is a call of the tool with the longest arguments, every string and
    /// list in them at these limits ([`bounded`]). `tools` are the agent's
    /// granted tools; they count only when the model takes them in the
    /// contract ([`contract_tools`]).
    ///
    /// When not even empty strings fit (a tiny `max_tokens` with many
    /// messages), strings get 1 character and a reply may still be cut off,
    /// which the engine then reports as such.
    pub fn for_model(model: &ModelSpec, may_send_to: &[String], mail_ids: &[String], tools: &[ToolSpec]) -> Limits {
        let budget = Limits::budget_tokens(model);
        let tools = contract_tools(model.tools, tools);
        // The most characters each free string may have with `messages` items per list:
        // the longest reply grows with them, so search for the largest that fits.
        let fitting_chars = |messages: u32| -> u64 {
            let fits = |chars: u64| {
                let chars = u32::try_from(chars).unwrap_or(u32::MAX);
                longest(&schema(may_send_to, mail_ids, tools, Limits { messages, chars }))
                    .is_some_and(|n| n.tokens() <= budget)
            };
            let (mut lo, mut hi) = (0u64, budget);
            if !fits(lo) {
                return 0;
            }
            while lo < hi {
                let mid = lo + (hi - lo).div_ceil(2);
                if fits(mid) {
                    lo = mid;
                } else {
                    hi = mid - 1;
                }
            }
            lo
        };
        let messages = model.reply_max_messages.unwrap_or_else(|| {
            let mut m = (budget / u64::from(Limits::TOKENS_PER_MESSAGE))
                .clamp(1, u64::from(Limits::MAX_DERIVED_MESSAGES)) as u32;
            while m > 1 && fitting_chars(m) < u64::from(Limits::MIN_DERIVED_CHARS) {
                m -= 1;
            }
            m
        });
        let fit = fitting_chars(messages).clamp(1, u64::from(u32::MAX)) as u32;
        let chars = model.reply_max_chars.map_or(fit, |c| c.clamp(1, fit));
        Limits { messages, chars }
    }

    /// The most tokens a reply of this model may take: `max_tokens`, or
    /// [`Limits::DEFAULT_BUDGET_TOKENS`].
    pub fn budget_tokens(model: &ModelSpec) -> u64 {
        u64::from(model.max_tokens.unwrap_or(Limits::DEFAULT_BUDGET_TOKENS))
    }
}

/// The contract as a JSON schema that OpenAI's strict mode accepts (every
/// property required, no extra properties), bounded by `limits`:
///
/// - `messages[]` (at most `limits.messages`, none when `may_send_to` is
///   empty): `to` one of `may_send_to`; `body` a string; `priority` one of
///   [`PRIORITIES`]; `reply_to` one of `mail_ids` or null;
/// - `notes`: a string;
/// - `memory[]` (at most `limits.messages`): `op` one of the operations the
///   schema can hold ([`MemoryOp::in_schema`]); `key` a string (of at most
///   [`MEMORY_KEY_MAX_CHARS`]); `value` a string, number, boolean or null;
/// - `tool_calls[]` (at most `limits.messages`), only when `tools` is not
///   empty: each item is `anyOf` one object per tool, `{id, tool, args}`, with
///   `id` a string (of at most [`CALL_ID_MAX_CHARS`]), `tool` that tool's name
///   (an `enum` of one) and `args` its parameters schema, [`bounded`].
///
/// Every free string has `maxLength` `limits.chars`. Pass the tools the
/// contract offers ([`contract_tools`]): none for a model that takes them natively.
pub fn schema(may_send_to: &[String], mail_ids: &[String], tools: &[ToolSpec], limits: Limits) -> Value {
    let text = || json!({"type": "string", "maxLength": limits.chars});
    let to = if may_send_to.is_empty() {
        // No message can be written (maxItems 0); an empty enum is not valid JSON schema.
        text()
    } else {
        json!({"type": "string", "enum": may_send_to})
    };
    let reply_to = if mail_ids.is_empty() {
        json!({"type": "null"})
    } else {
        let mut ids: Vec<Value> = mail_ids.iter().map(|i| json!(i)).collect();
        ids.push(Value::Null);
        json!({"type": ["string", "null"], "enum": ids})
    };
    let ops: Vec<&str> = memory_ops(Structured::JsonSchema).map(|op| op.name).collect();
    let messages = json!({
        "type": "array",
        "maxItems": if may_send_to.is_empty() { 0 } else { limits.messages },
        "items": {
            "type": "object",
            "additionalProperties": false,
            "required": MESSAGE_FIELDS,
            "properties": {
                "to": to,
                "body": text(),
                "priority": {"type": "string", "enum": PRIORITIES},
                "reply_to": reply_to,
            }
        }
    });
    let memory = json!({
        "type": "array",
        "maxItems": limits.messages,
        "items": {
            "type": "object",
            "additionalProperties": false,
            "required": ["op", "key", "value"],
            "properties": {
                "op": {"type": "string", "enum": ops},
                "key": {"type": "string", "maxLength": limits.chars.min(MEMORY_KEY_MAX_CHARS)},
                "value": {"type": ["string", "number", "boolean", "null"], "maxLength": limits.chars},
            }
        }
    });
    let mut reply = json!({
        "type": "object",
        "additionalProperties": false,
        "required": OFFERED_KEYS,
        "properties": {"messages": messages, "notes": text(), "memory": memory},
    });
    if !tools.is_empty() {
        let calls: Vec<Value> = tools
            .iter()
            .map(|t| {
                json!({
                    "type": "object",
                    "additionalProperties": false,
                    "required": CALL_FIELDS,
                    "properties": {
                        "id": {"type": "string", "maxLength": limits.chars.min(CALL_ID_MAX_CHARS)},
                        "tool": {"type": "string", "enum": [t.name]},
                        "args": bounded(&t.parameters, limits),
                    }
                })
            })
            .collect();
        reply["properties"][TOOL_CALLS_KEY] =
            json!({"type": "array", "maxItems": limits.messages, "items": {"anyOf": calls}});
        reply["required"] = json!(offered_keys(tools, ToolMode::Contract));
    }
    reply
}

/// A tool's parameters schema made bounded, so that a reply that calls it
/// still fits `max_tokens`, and made acceptable to OpenAI's strict mode and
/// llama.cpp's grammar: every string without an `enum` gets a `maxLength` of
/// at most `limits.chars`, every list a `maxItems` of at most
/// `limits.messages` (a `minLength` or `minItems` above is lowered to it);
/// every object gets all its properties required and no others; `oneOf`
/// becomes `anyOf`; a schema with no type (any value, or a `$ref`) becomes a
/// bounded string, number, boolean or null. A free-form object (one with no
/// `properties`) can only be `{}`: an object of any shape cannot be bounded.
pub fn bounded(schema: &Value, limits: Limits) -> Value {
    let any = || json!({"type": ["string", "number", "boolean", "null"], "maxLength": limits.chars});
    let Value::Object(map) = schema else { return any() };
    let mut out: Map<String, Value> = map.clone();
    if let Some(alts) = out.remove("oneOf") {
        out.entry("anyOf").or_insert(alts);
    }
    if out.contains_key("enum") || out.contains_key("const") {
        return Value::Object(out);
    }
    if let Some(Value::Array(alts)) = out.get("anyOf") {
        let alts: Vec<Value> = alts.iter().map(|a| bounded(a, limits)).collect();
        out.insert("anyOf".into(), Value::Array(alts));
        return Value::Object(out);
    }
    let types: Vec<String> = match out.get("type") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).map(String::from).collect(),
        _ => vec![],
    };
    const TYPES: [&str; 7] = ["string", "number", "integer", "boolean", "null", "array", "object"];
    if types.is_empty() || types.iter().any(|t| !TYPES.contains(&t.as_str())) {
        let mut b = any();
        if let Some(d) = out.get("description") {
            b["description"] = d.clone();
        }
        return b;
    }
    let cap = |out: &mut Map<String, Value>, max: &str, min: &str, limit: u32| {
        let m = out.get(max).and_then(Value::as_u64).map_or(u64::from(limit), |m| m.min(u64::from(limit)));
        out.insert(max.into(), json!(m));
        if out.get(min).and_then(Value::as_u64).is_some_and(|n| n > m) {
            out.insert(min.into(), json!(m));
        }
    };
    if types.iter().any(|t| t == "string") {
        cap(&mut out, "maxLength", "minLength", limits.chars);
    }
    if types.iter().any(|t| t == "array") {
        cap(&mut out, "maxItems", "minItems", limits.messages);
        let items = out.get("items").map_or_else(any, |i| bounded(i, limits));
        out.insert("items".into(), items);
        out.remove("prefixItems");
    }
    if types.iter().any(|t| t == "object") {
        let props: Map<String, Value> = out
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(k, p)| (k.clone(), bounded(p, limits)))
            .collect();
        out.insert("required".into(), json!(props.keys().collect::<Vec<_>>()));
        out.insert("properties".into(), Value::Object(props));
        out.insert("additionalProperties".into(), json!(false));
        out.remove("patternProperties");
    }
    Value::Object(out)
}

/// The characters of the longest number a reply is assumed to hold: JSON
/// numbers have no length limit in a schema, but servers that enforce schemas
/// write at most 16 digits in each part (llama.cpp), which this allows for.
const LONGEST_NUMBER_CHARS: u64 = 40;

/// The tokens one whitespace gap may take. A server that enforces a schema
/// lets the model put whitespace after every value, bracket, colon and comma
/// (llama.cpp: a newline and up to 20 blanks), which a tokenizer may split in
/// two (a newline, then the indent).
pub const TOKENS_PER_GAP: u64 = 2;

/// The size of the longest reply a schema allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Size {
    /// Its characters, written compactly.
    pub chars: u64,
    /// The places where whitespace may go (after each value, and after each
    /// `{`, `[`, `,` and `:`).
    pub gaps: u64,
}

impl Size {
    /// The most tokens it may take: a token holds at least one character
    /// (digits, for one, are a token each in many tokenizers), and each gap
    /// may hold [`TOKENS_PER_GAP`] tokens of whitespace.
    pub fn tokens(self) -> u64 {
        self.chars.saturating_add(self.gaps.saturating_mul(TOKENS_PER_GAP))
    }

    fn plus(self, other: Size) -> Size {
        Size { chars: self.chars.saturating_add(other.chars), gaps: self.gaps.saturating_add(other.gaps) }
    }
}

/// The longest value a schema (as built by [`schema`]) allows: every list
/// full, every string at its `maxLength` (of characters that need no escape),
/// the longest `enum` value, the `const` value, the longest of the `anyOf`
/// alternatives. `None` when some string or list in it has no bound.
pub fn longest(schema: &Value) -> Option<Size> {
    let scalar = |chars: u64| Size { chars, gaps: 1 };
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return values.iter().map(|v| scalar(v.to_string().chars().count() as u64)).max_by_key(|s| s.tokens());
    }
    if let Some(v) = schema.get("const") {
        return Some(scalar(v.to_string().chars().count() as u64));
    }
    if let Some(alts) = schema.get("anyOf").and_then(Value::as_array) {
        let mut best: Option<Size> = None;
        for alt in alts {
            let size = longest(alt)?;
            if best.is_none_or(|b| size.tokens() > b.tokens()) {
                best = Some(size);
            }
        }
        return best;
    }
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => return None,
    };
    let mut best: Option<Size> = None;
    for t in types {
        let size = match t {
            "string" => scalar(schema.get("maxLength")?.as_u64()?.saturating_add(2)),
            "number" | "integer" => scalar(LONGEST_NUMBER_CHARS),
            "boolean" => scalar(5),
            "null" => scalar(4),
            "array" => {
                let n = schema.get("maxItems")?.as_u64()?;
                // `[` item `,` item ... `]`, whitespace after `[`, each `,` and `]`
                if n == 0 {
                    Size { chars: 2, gaps: 2 }
                } else {
                    let item = longest(schema.get("items")?)?;
                    let commas = n - 1;
                    Size {
                        chars: item.chars.saturating_mul(n).saturating_add(2 + commas),
                        gaps: item.gaps.saturating_mul(n).saturating_add(2 + commas),
                    }
                }
            }
            "object" => {
                // `{` `"key":value` `,` ... `}`, whitespace after `{`, each key, `:`, `,` and `}`
                let mut size = Size { chars: 2, gaps: 2 };
                let props = schema.get("properties").and_then(Value::as_object);
                for (i, (k, s)) in props.into_iter().flatten().enumerate() {
                    let key = Value::String(k.clone()).to_string().chars().count() as u64;
                    let comma = u64::from(i > 0);
                    size = size.plus(Size { chars: key + 1 + comma, gaps: 2 + comma }).plus(longest(s)?);
                }
                size
            }
            _ => return None,
        };
        if best.is_none_or(|b| size.tokens() > b.tokens()) {
            best = Some(size);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize, len: usize) -> Vec<String> {
        (0..n).map(|i| format!("{i:0>len$}")).collect()
    }

    fn tool(name: &str, parameters: Value) -> ToolSpec {
        ToolSpec { name: name.into(), description: format!("does {name}\n  well"), parameters }
    }

    /// Tools as the catalog gives them (strict: every property required,
    /// optional ones nullable), and a custom one with an unbounded schema.
    fn tools() -> Vec<ToolSpec> {
        let strict = |props: Value| {
            let required: Vec<String> = props.as_object().unwrap().keys().cloned().collect();
            json!({"type": "object", "additionalProperties": false, "required": required, "properties": props})
        };
        vec![
            tool("read_file", strict(json!({"path": {"type": "string"}}))),
            tool(
                "write_file",
                strict(
                    json!({"path": {"type": "string"}, "content": {"type": "string"}, "append": {"type": ["boolean", "null"]}}),
                ),
            ),
            tool(
                "hire_agent",
                strict(json!({
                    "name": {"type": "string", "maxLength": 64},
                    "title": {"type": "string"},
                    "model": {"type": ["string", "null"]},
                    "send_to": {"type": "array", "items": {"type": "string"}},
                    "credits": {"type": ["number", "null"]},
                })),
            ),
            tool(
                "lookup",
                json!({"type": "object", "properties": {
                    "query": {"type": "string", "maxLength": 1_000_000, "minLength": 1_000_000},
                    "tags": {"type": "array", "items": {"type": "string"}, "minItems": 50},
                    "mode": {"type": "string", "enum": ["fast", "thorough"]},
                    "either": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
                    "anything": {},
                    "free": {"type": "object"},
                    "odd": {"type": "file"},
                }}),
            ),
        ]
    }

    /// The longest reply itself, built value by value (a number stands in as a
    /// string of the same length): what `longest` measures.
    fn longest_value(s: &Value) -> Value {
        if let Some(values) = s.get("enum").and_then(Value::as_array) {
            return values.iter().max_by_key(|v| v.to_string().len()).cloned().unwrap();
        }
        if let Some(v) = s.get("const") {
            return v.clone();
        }
        if let Some(alts) = s.get("anyOf").and_then(Value::as_array) {
            let alt = alts.iter().max_by_key(|a| longest(a).unwrap().tokens()).unwrap();
            return longest_value(alt);
        }
        let types: Vec<&str> = match &s["type"] {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => panic!("no type: {s}"),
        };
        types
            .into_iter()
            .map(|t| match t {
                "string" => json!("x".repeat(s["maxLength"].as_u64().unwrap() as usize)),
                "number" | "integer" => json!("9".repeat(LONGEST_NUMBER_CHARS as usize - 2)),
                "boolean" => json!(false),
                "null" => Value::Null,
                "array" => Value::Array(vec![longest_value(&s["items"]); s["maxItems"].as_u64().unwrap() as usize]),
                "object" => Value::Object(
                    s.get("properties")
                        .and_then(Value::as_object)
                        .into_iter()
                        .flatten()
                        .map(|(k, p)| (k.clone(), longest_value(p)))
                        .collect(),
                ),
                other => panic!("unexpected type {other}"),
            })
            .max_by_key(|v| v.to_string().len())
            .unwrap()
    }

    fn model(max_tokens: Option<u32>) -> ModelSpec {
        ModelSpec { max_tokens, structured: Structured::JsonSchema, ..ModelSpec::new("k", "p") }
    }

    /// Every string without an `enum` has a `maxLength`, every list a
    /// `maxItems`, every object all its properties required and no others;
    /// no `oneOf`, `$ref` or untyped schema is left.
    fn assert_bounded(s: &Value, path: &str) {
        assert!(s.get("oneOf").is_none() && s.get("$ref").is_none(), "{path}: {s}");
        if let Some(alts) = s.get("anyOf").and_then(Value::as_array) {
            for (i, a) in alts.iter().enumerate() {
                assert_bounded(a, &format!("{path}|{i}"));
            }
            return;
        }
        assert!(s.get("type").is_some() || s.get("enum").is_some() || s.get("const").is_some(), "{path}: {s}");
        if s["type"] == "object" {
            let mut keys: Vec<&str> =
                s.get("properties").and_then(Value::as_object).into_iter().flatten().map(|(k, _)| k.as_str()).collect();
            let mut required: Vec<&str> = s["required"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
            keys.sort();
            required.sort();
            assert_eq!(required, keys, "{path}: every property is required");
            assert_eq!(s["additionalProperties"], json!(false), "{path}: no others");
        }
        let types: Vec<&str> = match s.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        if types.contains(&"string") && s.get("enum").is_none() {
            assert!(s["maxLength"].is_u64(), "{path} is a string with no maxLength: {s}");
        }
        if types.contains(&"array") {
            assert!(s["maxItems"].is_u64(), "{path} is a list with no maxItems: {s}");
            assert_bounded(&s["items"], &format!("{path}[]"));
        }
        for (k, p) in s.get("properties").and_then(Value::as_object).into_iter().flatten() {
            assert_bounded(p, &format!("{path}.{k}"));
        }
    }

    #[test]
    fn with_no_explicit_limits_every_string_and_list_is_bounded_and_the_longest_reply_fits_max_tokens() {
        for max_tokens in
            [None, Some(64), Some(200), Some(300), Some(512), Some(1024), Some(2048), Some(8192), Some(100_000)]
        {
            for ((agents, ids), tools) in
                [(names(0, 1), names(0, 1)), (names(3, 12), names(2, 40)), (names(40, 32), names(50, 128))]
                    .into_iter()
                    .flat_map(|a| [(a.clone(), vec![]), (a.clone(), tools()[..1].to_vec()), (a, tools())])
            {
                let m = model(max_tokens);
                let limits = Limits::for_model(&m, &agents, &ids, &tools);
                let s = schema(&agents, &ids, &tools, limits);
                assert_bounded(&s, "reply");
                let size = longest(&s).expect("bounded");
                let len = size.tokens() as usize;
                let budget = Limits::budget_tokens(&m) as usize;
                if budget <= 40_000 {
                    let value = longest_value(&s).to_string();
                    assert_eq!(value.chars().count() as u64, size.chars, "longest measures the longest reply\n{value}");
                }
                let fixed =
                    longest(&schema(&agents, &ids, &tools, Limits { chars: 0, ..limits })).unwrap().tokens() as usize;
                if fixed <= budget {
                    assert!(
                        len <= budget,
                        "max_tokens {max_tokens:?}, {} agents, {} tools: the longest reply may take {len} tokens",
                        agents.len(),
                        tools.len()
                    );
                    let more = longest(&schema(&agents, &ids, &tools, Limits { chars: limits.chars + 1, ..limits }))
                        .unwrap()
                        .tokens();
                    assert!(
                        more as usize > budget || limits.chars as usize >= budget,
                        "chars could be larger: {limits:?}"
                    );
                    assert!(limits.chars >= 1 && limits.messages >= 1, "{limits:?}");
                } else {
                    // Not even empty strings fit: the smallest limits, and the
                    // cut is then caught as a truncated reply.
                    assert_eq!(limits.messages, 1, "max_tokens {max_tokens:?}");
                }
            }
        }
    }

    #[test]
    fn derived_limits_grow_with_max_tokens_and_explicit_ones_only_lower_them() {
        let (agents, ids) = (names(3, 8), names(2, 36));
        let at = |t| Limits::for_model(&model(Some(t)), &agents, &ids, &[]);
        assert_eq!(at(1024).messages, 2);
        assert!(at(1024).chars >= Limits::MIN_DERIVED_CHARS, "{:?}", at(1024));
        assert!(at(4096).messages > at(1024).messages && at(4096).chars > at(1024).chars);
        assert_eq!(at(1_000_000).messages, Limits::MAX_DERIVED_MESSAGES);
        assert_eq!(Limits::for_model(&model(None), &agents, &ids, &[]), at(Limits::DEFAULT_BUDGET_TOKENS));
        // An explicit count is kept; explicit characters are a ceiling, never more than fits.
        let explicit = ModelSpec { reply_max_messages: Some(3), reply_max_chars: Some(500), ..model(Some(2048)) };
        let l = Limits::for_model(&explicit, &agents, &ids, &[]);
        assert_eq!(l.messages, 3);
        assert!(l.chars < 500, "{l:?}");
        let s = schema(&agents, &ids, &[], l);
        assert!(longest(&s).unwrap().tokens() <= 2048, "{s:#}");
        let small = ModelSpec { reply_max_chars: Some(20), ..model(Some(4096)) };
        assert_eq!(Limits::for_model(&small, &agents, &ids, &[]).chars, 20);
        let half = ModelSpec { reply_max_messages: Some(1), ..model(Some(1024)) };
        let l = Limits::for_model(&half, &agents, &ids, &[]);
        assert_eq!(l.messages, 1);
        assert!(l.chars > at(1024).chars, "fewer messages leave more room for each string: {l:?}");
    }

    #[test]
    fn the_schema_offers_exactly_the_contract() {
        let s = schema(&names(2, 5), &names(1, 5), &[], Limits { messages: 2, chars: 50 });
        let keys: Vec<&str> = s["properties"].as_object().unwrap().keys().map(String::as_str).collect();
        let mut offered = OFFERED_KEYS.to_vec();
        offered.sort();
        assert_eq!(keys, offered);
        assert_eq!(s["required"], json!(OFFERED_KEYS));
        assert!(OFFERED_KEYS.iter().all(|k| KEYS.contains(k)));
        let msg = &s["properties"]["messages"]["items"];
        assert_eq!(msg["required"], json!(MESSAGE_FIELDS));
        assert_eq!(msg["properties"]["priority"]["enum"], json!(PRIORITIES));
        assert!(PRIORITIES.contains(&DEFAULT_PRIORITY));
        let ops = &s["properties"]["memory"]["items"]["properties"]["op"]["enum"];
        let in_schema: Vec<&str> = MEMORY_OPS.iter().filter(|o| o.in_schema()).map(|o| o.name).collect();
        assert_eq!(ops, &json!(in_schema));
        assert_eq!(in_schema, ["set", "append", "delete"]);
    }

    #[test]
    fn the_prompt_text_offers_what_the_schema_offers_and_plain_text_offers_every_op() {
        for structured in [Structured::None, Structured::JsonObject, Structured::JsonSchema] {
            let text = instructions(structured, &[], ToolMode::Contract);
            for key in OFFERED_KEYS {
                assert!(text.contains(&format!("\"{key}\":")), "{structured:?}: {key} missing\n{text}");
            }
            assert!(!text.contains("tool_calls"), "tools are not offered\n{text}");
            for field in MESSAGE_FIELDS {
                assert!(text.contains(&format!("\"{field}\":")), "{structured:?}: {field} missing\n{text}");
            }
            for p in PRIORITIES {
                assert!(text.contains(p), "{structured:?}: priority {p} missing\n{text}");
            }
            let offered: Vec<&str> = memory_ops(structured).map(|o| o.name).collect();
            assert!(text.contains(&format!("\"op\":\"{}\"", offered.join("|"))), "{structured:?}\n{text}");
            for op in MEMORY_OPS {
                let named = text.contains(&format!("{} {}", op.name, op.effect));
                assert_eq!(named, offered.contains(&op.name), "{structured:?}: op {}\n{text}", op.name);
            }
        }
        assert!(instructions(Structured::None, &[], ToolMode::Contract).contains("merge"));
        assert!(
            !instructions(Structured::JsonSchema, &[], ToolMode::Contract).contains("merge"),
            "the schema cannot hold merge"
        );
        let schema_ops = schema(&names(1, 3), &[], &[], Limits { messages: 1, chars: 1 })["properties"]["memory"]
            ["items"]["properties"]["op"]["enum"]
            .clone();
        let told: Vec<&str> = memory_ops(Structured::JsonSchema).map(|o| o.name).collect();
        assert_eq!(schema_ops, json!(told));
    }

    #[test]
    fn the_schema_offers_exactly_the_granted_tools_and_only_when_there_are_some() {
        let limits = Limits { messages: 3, chars: 40 };
        let granted = tools();
        let s = schema(&names(2, 5), &names(1, 5), &granted, limits);
        assert_eq!(s["required"], json!(["messages", "notes", "memory", "tool_calls"]));
        assert_eq!(s["required"], json!(offered_keys(&granted, ToolMode::Contract)));
        assert!(offered_keys(&granted, ToolMode::Contract).iter().all(|k| KEYS.contains(k)));
        let calls = &s["properties"]["tool_calls"];
        assert_eq!(calls["type"], "array");
        assert_eq!(calls["maxItems"], 3);
        let alts = calls["items"]["anyOf"].as_array().unwrap();
        let offered: Vec<&Value> = alts.iter().map(|a| &a["properties"]["tool"]["enum"]).collect();
        let want: Vec<Value> = granted.iter().map(|t| json!([t.name])).collect();
        assert_eq!(offered, want.iter().collect::<Vec<_>>(), "one alternative per granted tool, in order");
        for (alt, t) in alts.iter().zip(&granted) {
            assert_eq!(alt["required"], json!(CALL_FIELDS));
            assert_eq!(alt["additionalProperties"], json!(false));
            assert_eq!(alt["properties"]["id"], json!({"type": "string", "maxLength": CALL_ID_MAX_CHARS}));
            assert_eq!(alt["properties"]["args"], bounded(&t.parameters, limits), "{}", t.name);
        }
        // Only the granted ones: a schema for one tool names only it.
        let one = schema(&names(2, 5), &[], &granted[..1], limits);
        assert_eq!(one["properties"]["tool_calls"]["items"]["anyOf"].as_array().unwrap().len(), 1);
        assert!(!one.to_string().contains("write_file"));
        // No tools, or tools a model takes natively: no tool_calls at all.
        for none in [
            schema(&names(2, 5), &[], &[], limits),
            schema(&names(2, 5), &[], contract_tools(ToolMode::Native, &granted), limits),
        ] {
            assert!(none["properties"].get("tool_calls").is_none());
            assert_eq!(none["required"], json!(OFFERED_KEYS));
        }
        assert_eq!(offered_keys(&granted, ToolMode::Native), OFFERED_KEYS);
        assert_eq!(offered_keys(&[], ToolMode::Contract), OFFERED_KEYS);
    }

    #[test]
    fn a_tools_args_keep_its_schema_and_get_bounds_where_it_has_none() {
        let limits = Limits { messages: 2, chars: 30 };
        // A strict, bounded-but-for-lengths schema keeps every constraint and gains maxLength.
        let write = &tools()[1];
        let b = bounded(&write.parameters, limits);
        assert_eq!(b["required"], write.parameters["required"]);
        assert_eq!(b["properties"]["append"], json!({"type": ["boolean", "null"]}));
        assert_eq!(b["properties"]["path"], json!({"type": "string", "maxLength": 30}));
        // A bound already lower is kept; a higher one is lowered.
        let hire = bounded(&tools()[2].parameters, Limits { messages: 2, chars: 100 });
        assert_eq!(hire["properties"]["name"]["maxLength"], 64);
        assert_eq!(bounded(&tools()[2].parameters, limits)["properties"]["name"]["maxLength"], 30);
        assert_eq!(hire["properties"]["send_to"]["maxItems"], 2);
        assert_eq!(hire["properties"]["send_to"]["items"]["maxLength"], 100);
        // A custom tool's loose schema is made strict and bounded.
        let b = bounded(&tools()[3].parameters, limits);
        assert_bounded(&b, "lookup");
        let p = &b["properties"];
        assert_eq!(p["query"], json!({"type": "string", "maxLength": 30, "minLength": 30}));
        assert_eq!(p["tags"]["maxItems"], 2);
        assert_eq!(p["tags"]["minItems"], 2);
        assert_eq!(p["mode"], json!({"type": "string", "enum": ["fast", "thorough"]}));
        assert_eq!(p["either"], json!({"anyOf": [{"type": "string", "maxLength": 30}, {"type": "integer"}]}));
        let any = json!({"type": ["string", "number", "boolean", "null"], "maxLength": 30});
        assert_eq!(p["anything"], any);
        assert_eq!(p["odd"], any, "an unknown type is any scalar");
        assert_eq!(
            p["free"],
            json!({"type": "object", "properties": {}, "required": [], "additionalProperties": false})
        );
        assert_eq!(bounded(&json!(true), limits), any);
        assert_eq!(bounded(&json!({"$ref": "#/$defs/x"}), limits), any);
        assert!(longest(&b).is_some());
    }

    #[test]
    fn the_prompt_text_and_the_schema_agree_on_tools() {
        let granted = tools();
        for structured in [Structured::None, Structured::JsonObject, Structured::JsonSchema] {
            let text = instructions(structured, &granted, ToolMode::Contract);
            for key in offered_keys(&granted, ToolMode::Contract) {
                assert!(text.contains(&format!("\"{key}\":")), "{structured:?}: {key} missing\n{text}");
            }
            for field in CALL_FIELDS {
                assert!(text.contains(&format!("\"{field}\":")), "{structured:?}: {field} missing\n{text}");
            }
            for t in &granted {
                let line = format!("\n- {} {}: does {} well", t.name, signature(&t.parameters), t.name);
                assert!(text.contains(&line), "{structured:?}: {line:?} missing\n{text}");
            }
            assert!(text.contains(&format!("at most {CALL_ID_MAX_CHARS} characters")));
            let schema = schema(&names(1, 3), &[], &granted, Limits { messages: 1, chars: 40 });
            let in_schema: Vec<String> = schema["properties"]["tool_calls"]["items"]["anyOf"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["properties"]["tool"]["enum"][0].as_str().unwrap().to_string())
                .collect();
            let listed: Vec<String> =
                text.lines().filter_map(|l| l.strip_prefix("- ")?.split(' ').next()).map(String::from).collect();
            assert_eq!(listed, in_schema, "the prompt lists the tools the schema offers");
            // The last line of the object closes it: the JSON example stays one object.
            assert!(text.contains("\"args\":{...}}]}\n"), "{text}");
        }
        assert!(instructions(Structured::JsonSchema, &granted, ToolMode::Contract)
            .contains("use [] for no messages, memory operations or tool calls"));
        // Native: no tool_calls key and no listing; the model is told to call its functions.
        let native = instructions(Structured::JsonSchema, &granted, ToolMode::Native);
        assert!(!native.contains("tool_calls") && !native.contains("read_file"), "{native}");
        assert!(native.contains("call one of the functions you are given"), "{native}");
        assert!(native.starts_with(&instructions(Structured::JsonSchema, &[], ToolMode::Contract)));
        // No tools: nothing about tools, whatever the mode.
        for mode in [ToolMode::Contract, ToolMode::Native] {
            assert!(!instructions(Structured::None, &[], mode).contains("tool"));
        }
    }

    #[test]
    fn signatures_are_compact() {
        assert_eq!(signature(&tools()[1].parameters), "{append: boolean|null, content: string, path: string}");
        assert_eq!(signature(&json!({"type": "array", "items": {"enum": ["a", "b"]}})), r#"["a"|"b"]"#);
        assert_eq!(signature(&json!({"oneOf": [{"type": "string"}, {"const": 1}]})), "string|1");
        assert_eq!(signature(&json!({})), "any");
    }

    #[test]
    fn a_native_model_is_not_limited_by_its_tools() {
        let (agents, ids) = (names(3, 8), names(2, 36));
        let contract = model(Some(1024));
        let native = ModelSpec { tools: ToolMode::Native, ..contract.clone() };
        let plain = Limits::for_model(&contract, &agents, &ids, &[]);
        assert_eq!(Limits::for_model(&native, &agents, &ids, &tools()), plain);
        let with_tools = Limits::for_model(&contract, &agents, &ids, &tools());
        assert!(with_tools.chars < plain.chars, "tool calls take room: {with_tools:?} vs {plain:?}");
    }

    #[test]
    fn longest_reads_enums_types_bounds_and_whitespace_gaps() {
        let size = |s: Value| longest(&s).map(|s| (s.chars, s.gaps));
        assert_eq!(size(json!({"enum": ["a", "ccc", null]})), Some((5, 1)));
        assert_eq!(size(json!({"type": ["string", "null"], "maxLength": 3})), Some((5, 1)));
        assert_eq!(size(json!({"type": "string"})), None, "no maxLength: unbounded");
        assert_eq!(size(json!({"type": "array", "items": {"type": "null"}})), None);
        assert_eq!(size(json!({"type": "array", "maxItems": 0, "items": {"type": "string"}})), Some((2, 2)));
        // `[ false, false ] `: gaps after `[`, each value, the comma and `]`.
        let list = json!({"type": "array", "maxItems": 2, "items": {"type": "boolean"}});
        assert_eq!(size(list.clone()), Some(("[false,false]".len() as u64, 5)));
        // `{ "a" : null , "bb" : [...] } `: 2 for the braces, 2 + 1 for `a`, 3 + 5 for `bb`.
        let obj = json!({"type": "object", "properties": {"a": {"type": "null"}, "bb": list}});
        assert_eq!(size(obj.clone()), Some((r#"{"a":null,"bb":[false,false]}"#.len() as u64, 2 + 3 + 3 + 5)));
        assert_eq!(longest_value(&obj).to_string().len() as u64, longest(&obj).unwrap().chars);
        assert_eq!(Size { chars: 10, gaps: 3 }.tokens(), 10 + 3 * TOKENS_PER_GAP);
        // anyOf: the longest alternative, unbounded if any is; const: its JSON text.
        let alts = json!({"anyOf": [{"type": "string", "maxLength": 10}, {"type": "boolean"}, {"const": "abc"}]});
        assert_eq!(size(alts), Some((12, 1)));
        assert_eq!(size(json!({"anyOf": [{"type": "null"}, {"type": "string"}]})), None);
        assert_eq!(size(json!({"const": {"a": 1}})), Some((7, 1)));
    }
}
