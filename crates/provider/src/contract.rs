//! The reply contract in one place.
//!
//! What a model is asked to answer is defined here once: the keys of a reply,
//! the fields of a message, the priorities and the memory operations. From
//! these come the three things that must agree:
//!
//! - the contract text every prompt ends with ([`instructions`]);
//! - the JSON schema sent with `structured = "json_schema"` ([`schema`]), whose
//!   strings and lists are all bounded so that the longest reply it allows fits
//!   in the model's `max_tokens` ([`Limits::for_model`]);
//! - the engine's tolerant parser, which takes an object as a reply only when
//!   it has one of [`KEYS`], and hands memory operations to the memory module,
//!   which knows exactly the [`MEMORY_OPS`].
//!
//! The tests here and in the engine check that they agree.

use serde_json::{json, Value};

use crate::{ModelSpec, Structured};

/// Every top-level key of a reply. A JSON object with none of them is not a
/// reply (it is an example, a fragment, or a message object taken out of a
/// reply that was cut off).
pub const KEYS: [&str; 4] = ["messages", "notes", "memory", "tool_calls"];

/// The keys a model is asked for, in the prompt and in the schema.
/// `tool_calls` is recognised as a reply key but not offered: agents have no
/// tools in this build.
pub const OFFERED_KEYS: [&str; 3] = ["messages", "notes", "memory"];

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
/// part of every system prompt.
pub fn instructions(structured: Structured) -> String {
    let schema = structured == Structured::JsonSchema;
    let ops: Vec<&str> = memory_ops(structured).map(|op| op.name).collect();
    let effects: Vec<String> = memory_ops(structured).map(|op| format!("{} {}", op.name, op.effect)).collect();
    let value = if schema { "<string, number, true, false or null>" } else { "<json>" };
    let keys = if schema {
        "Every key is required: use [] for no messages or memory operations, \"\" for no notes."
    } else {
        "Every key is optional."
    };
    format!(
        r#"Reply with exactly one JSON object and nothing else:
{{"messages":[{{"to":"<agent>","body":"<text>","priority":"{DEFAULT_PRIORITY}","reply_to":"<id or null>"}}],
 "notes":"<private notes for your log>",
 "memory":[{{"op":"{ops}","key":"<key>","value":{value}}}]}}
{keys} Write only to the agents listed above; other messages bounce.
Priority is one of {priorities}.
Memory operations: {effects}.
Memory keys use a-z, 0-9, '_', '.', '-', at most {MEMORY_KEY_MAX_CHARS} characters."#,
        ops = ops.join("|"),
        priorities = PRIORITIES.join(", "),
        effects = effects.join("; "),
    )
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
    /// When not even empty strings fit (a tiny `max_tokens` with many
    /// messages), strings get 1 character and a reply may still be cut off,
    /// which the engine then reports as such.
    pub fn for_model(model: &ModelSpec, may_send_to: &[String], mail_ids: &[String]) -> Limits {
        let budget = Limits::budget_tokens(model);
        // The most characters each free string may have with `messages` items per list:
        // the longest reply grows with them, so search for the largest that fits.
        let fitting_chars = |messages: u32| -> u64 {
            let fits = |chars: u64| {
                let chars = u32::try_from(chars).unwrap_or(u32::MAX);
                longest(&schema(may_send_to, mail_ids, Limits { messages, chars }))
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
///   [`MEMORY_KEY_MAX_CHARS`]); `value` a string, number, boolean or null.
///
/// Every free string has `maxLength` `limits.chars`.
pub fn schema(may_send_to: &[String], mail_ids: &[String], limits: Limits) -> Value {
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
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": OFFERED_KEYS,
        "properties": {"messages": messages, "notes": text(), "memory": memory},
    })
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
/// the longest `enum` value. `None` when some string or list in it has no bound.
pub fn longest(schema: &Value) -> Option<Size> {
    let scalar = |chars: u64| Size { chars, gaps: 1 };
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return values.iter().map(|v| scalar(v.to_string().chars().count() as u64)).max_by_key(|s| s.tokens());
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

    /// The longest reply itself, built value by value (a number stands in as a
    /// string of the same length): what `longest` measures.
    fn longest_value(s: &Value) -> Value {
        if let Some(values) = s.get("enum").and_then(Value::as_array) {
            return values.iter().max_by_key(|v| v.to_string().len()).cloned().unwrap();
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
                "number" => json!("9".repeat(LONGEST_NUMBER_CHARS as usize - 2)),
                "boolean" => json!(false),
                "null" => Value::Null,
                "array" => Value::Array(vec![longest_value(&s["items"]); s["maxItems"].as_u64().unwrap() as usize]),
                "object" => Value::Object(
                    s["properties"].as_object().unwrap().iter().map(|(k, p)| (k.clone(), longest_value(p))).collect(),
                ),
                other => panic!("unexpected type {other}"),
            })
            .max_by_key(|v| v.to_string().len())
            .unwrap()
    }

    fn model(max_tokens: Option<u32>) -> ModelSpec {
        ModelSpec { max_tokens, structured: Structured::JsonSchema, ..ModelSpec::new("k", "p") }
    }

    /// Every string without an `enum` has a `maxLength`, every list a `maxItems`.
    fn assert_bounded(s: &Value, path: &str) {
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
            for (agents, ids) in
                [(names(0, 1), names(0, 1)), (names(3, 12), names(2, 40)), (names(40, 32), names(50, 128))]
            {
                let m = model(max_tokens);
                let limits = Limits::for_model(&m, &agents, &ids);
                let s = schema(&agents, &ids, limits);
                assert_bounded(&s, "reply");
                let size = longest(&s).expect("bounded");
                let len = size.tokens() as usize;
                let budget = Limits::budget_tokens(&m) as usize;
                if budget <= 40_000 {
                    let value = longest_value(&s).to_string();
                    assert_eq!(value.chars().count() as u64, size.chars, "longest measures the longest reply\n{value}");
                }
                let fixed = longest(&schema(&agents, &ids, Limits { chars: 0, ..limits })).unwrap().tokens() as usize;
                if fixed <= budget {
                    assert!(
                        len <= budget,
                        "max_tokens {max_tokens:?}, {} agents: the longest reply may take {len} tokens",
                        agents.len()
                    );
                    let more =
                        longest(&schema(&agents, &ids, Limits { chars: limits.chars + 1, ..limits })).unwrap().tokens();
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
        let at = |t| Limits::for_model(&model(Some(t)), &agents, &ids);
        assert_eq!(at(1024).messages, 2);
        assert!(at(1024).chars >= Limits::MIN_DERIVED_CHARS, "{:?}", at(1024));
        assert!(at(4096).messages > at(1024).messages && at(4096).chars > at(1024).chars);
        assert_eq!(at(1_000_000).messages, Limits::MAX_DERIVED_MESSAGES);
        assert_eq!(Limits::for_model(&model(None), &agents, &ids), at(Limits::DEFAULT_BUDGET_TOKENS));
        // An explicit count is kept; explicit characters are a ceiling, never more than fits.
        let explicit = ModelSpec { reply_max_messages: Some(3), reply_max_chars: Some(500), ..model(Some(2048)) };
        let l = Limits::for_model(&explicit, &agents, &ids);
        assert_eq!(l.messages, 3);
        assert!(l.chars < 500, "{l:?}");
        let s = schema(&agents, &ids, l);
        assert!(longest(&s).unwrap().tokens() <= 2048, "{s:#}");
        let small = ModelSpec { reply_max_chars: Some(20), ..model(Some(4096)) };
        assert_eq!(Limits::for_model(&small, &agents, &ids).chars, 20);
        let half = ModelSpec { reply_max_messages: Some(1), ..model(Some(1024)) };
        let l = Limits::for_model(&half, &agents, &ids);
        assert_eq!(l.messages, 1);
        assert!(l.chars > at(1024).chars, "fewer messages leave more room for each string: {l:?}");
    }

    #[test]
    fn the_schema_offers_exactly_the_contract() {
        let s = schema(&names(2, 5), &names(1, 5), Limits { messages: 2, chars: 50 });
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
            let text = instructions(structured);
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
        assert!(instructions(Structured::None).contains("merge"));
        assert!(!instructions(Structured::JsonSchema).contains("merge"), "the schema cannot hold merge");
        let schema_ops = schema(&names(1, 3), &[], Limits { messages: 1, chars: 1 })["properties"]["memory"]["items"]
            ["properties"]["op"]["enum"]
            .clone();
        let told: Vec<&str> = memory_ops(Structured::JsonSchema).map(|o| o.name).collect();
        assert_eq!(schema_ops, json!(told));
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
    }
}
