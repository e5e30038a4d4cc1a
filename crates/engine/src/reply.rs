//! The tolerant reply parser (DESIGN §4): code fences are skipped, the first
//! JSON object in the text is taken, missing keys get defaults, and `to` may be
//! a string or a list.

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

/// A parsed reply.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Parsed {
    /// Messages to send.
    pub messages: Vec<OutMessage>,
    /// The agent's notes to itself (logged).
    pub notes: String,
    /// Memory operations, as JSON.
    pub memory: Vec<Value>,
    /// Parts of the reply that were skipped, and why.
    pub warnings: Vec<String>,
}

/// Why a reply is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the reply holds no JSON object")]
pub struct NoJson;

/// The first JSON object in `text`.
pub fn first_object(text: &str) -> Option<serde_json::Map<String, Value>> {
    for (i, _) in text.match_indices('{') {
        let mut stream = serde_json::Deserializer::from_str(&text[i..]).into_iter::<Value>();
        if let Some(Ok(Value::Object(map))) = stream.next() {
            return Some(map);
        }
    }
    None
}

/// Parses a reply.
pub fn parse(text: &str) -> Result<Parsed, NoJson> {
    let obj = first_object(text).ok_or(NoJson)?;
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
    Ok(out)
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
        assert_eq!(parse("{}").unwrap(), Parsed::default());
        assert_eq!(parse("I cannot help {with that"), Err(NoJson));
        let p = parse("{bad} {\"notes\":{\"k\":1}}").unwrap();
        assert_eq!(p.notes, "{\"k\":1}");
    }
}
