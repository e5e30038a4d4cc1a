//! The message file: one JSON object per file, named `<id>.json`.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// Message ids: a time-sortable prefix, then any of `A-Za-z0-9_.-`; at most 128 bytes.
pub fn valid_id(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
        // `dead/<id>.why.json` is the reason file of dead letter `<id>`.
        && !id.ends_with(".why")
}

/// `id` made to fit the id rules when the engine derives it from other ids
/// (a bounce's id from its dead letter's): kept as it is when it fits, else
/// cut to 100 bytes and followed by a hash of the whole, so that it stays
/// unique and the same when a turn is repeated.
pub fn fit_id(id: &str) -> String {
    if valid_id(id) {
        return id.to_string();
    }
    let clean: String =
        id.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') { c } else { '_' }).collect();
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    let head = match clean.trim_start_matches(|c: char| !c.is_ascii_alphanumeric()) {
        "" => "id",
        head => head,
    };
    format!("{}-{hash:016x}", &head[..head.len().min(100)])
}

/// The timestamp prefix of ids: `20261122T180000123Z`, which sorts by time.
pub fn id_stamp(at: DateTime<Utc>) -> String {
    at.format("%Y%m%dT%H%M%S%3fZ").to_string()
}

/// The id of the `pos`-th message an agent wrote on a turn: the same whenever the turn is repeated.
pub fn reply_id(turn_started: DateTime<Utc>, turn: u64, agent: &str, pos: usize) -> String {
    format!("{}-t{turn}-{agent}-{pos:03}", id_stamp(turn_started))
}

/// The id of the result of the `pos`-th tool call of `agent`'s reply on `turn`:
/// planned with the reply, so that a repeated turn delivers it once.
pub fn tool_result_id(turn_started: DateTime<Utc>, turn: u64, agent: &str, pos: usize) -> String {
    format!("{}-t{turn}-{agent}-tool{pos:03}", id_stamp(turn_started))
}

/// The id of the receipt that `reader` read message `id`: the same whenever
/// it is made again (a repeated turn), so that it is delivered once.
pub fn receipt_id(id: &str, reader: &str) -> String {
    fit_id(&format!("{id}-receipt-{reader}"))
}

/// The engine's `receipt` to the sender of `msg`, which `reader` read on (or
/// after) `turn`: `None` unless the sender asked for one (`ack_required`) on
/// a message of kind `message` from someone else than the engine or `reader`.
pub fn receipt(msg: &Message, reader: &str, turn: u64, at: DateTime<Utc>) -> Option<Message> {
    if !msg.ack_required || msg.kind != Kind::Message || msg.from == crate::name::ENGINE || msg.from == reader {
        return None;
    }
    Some(Message {
        id: receipt_id(&msg.id, reader),
        from: crate::name::ENGINE.into(),
        to: To(vec![msg.from.clone()]),
        subject: Some("read receipt".into()),
        body: format!("{reader} read your message {} on turn {turn}", msg.id),
        priority: Priority::Normal,
        reply_to: Some(msg.id.clone()),
        thread: msg.thread.clone(),
        created_at: at,
        turn,
        ttl_turns: None,
        kind: Kind::Receipt,
        ack_required: false,
    })
}

/// How urgent a message is; the prompt lists urgent mail first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Read first.
    Urgent,
    /// The default.
    #[default]
    Normal,
    /// Read last.
    Low,
}

impl Priority {
    /// Parses `low`, `normal` or `urgent`.
    pub fn parse(s: &str) -> Option<Priority> {
        match s {
            "low" => Some(Priority::Low),
            "normal" => Some(Priority::Normal),
            "urgent" => Some(Priority::Urgent),
            _ => None,
        }
    }
}

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Written by an agent or a person.
    #[default]
    Message,
    /// The engine's notice that a message was refused.
    Bounce,
    /// The result of a tool call.
    ToolResult,
    /// A notice from the engine.
    System,
    /// The engine's notice to a sender that a recipient read a message sent
    /// with `ack_required` (§10).
    Receipt,
}

impl Kind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Message => "message",
            Kind::Bounce => "bounce",
            Kind::ToolResult => "tool_result",
            Kind::System => "system",
            Kind::Receipt => "receipt",
        }
    }
}

/// Recipients: one name on disk is written as a string, several as a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct To(pub Vec<String>);

impl Serialize for To {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.len() == 1 {
            self.0[0].serialize(s)
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for To {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<To, D::Error> {
        // A visitor rather than an untagged enum, which would first copy the
        // value aside to try each form (this runs for every message read).
        struct OneOrMany;
        impl<'de> serde::de::Visitor<'de> for OneOrMany {
            type Value = To;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a name or a list of names")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<To, E> {
                Ok(To(vec![s.to_string()]))
            }
            fn visit_string<E: serde::de::Error>(self, s: String) -> Result<To, E> {
                Ok(To(vec![s]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<To, A::Error> {
                let mut names = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                while let Some(name) = seq.next_element::<String>()? {
                    names.push(name);
                }
                Ok(To(names))
            }
        }
        d.deserialize_any(OneOrMany)
    }
}

/// A message, as stored in `<id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Unique and sortable by time.
    pub id: String,
    /// The sender (an agent, or `lemming` for the engine).
    pub from: String,
    /// The recipients.
    pub to: To,
    /// An optional subject line.
    #[serde(default)]
    pub subject: Option<String>,
    /// The text.
    pub body: String,
    /// `low`, `normal` or `urgent`.
    #[serde(default)]
    pub priority: Priority,
    /// The id this message answers.
    #[serde(default)]
    pub reply_to: Option<String>,
    /// The conversation; a new conversation's thread is its first message's id.
    #[serde(default)]
    pub thread: String,
    /// When it was written.
    #[serde(default = "Utc::now", serialize_with = "ser_time")]
    pub created_at: DateTime<Utc>,
    /// The turn it was written on (0 before the first turn).
    #[serde(default)]
    pub turn: u64,
    /// Expire after this many turns undelivered.
    #[serde(default)]
    pub ttl_turns: Option<u64>,
    /// What it is.
    #[serde(default)]
    pub kind: Kind,
    /// Whether the sender asked for a `receipt` when a recipient reads it;
    /// written only when true.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ack_required: bool,
}

fn ser_time<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// Why bytes from a mailbox are not a usable message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseMessageError {
    /// Not JSON, or missing required fields.
    #[error("not a message: {0}")]
    Json(String),
    /// The id breaks the id rule.
    #[error(
        "invalid id {0:?}: ids use only A-Z, a-z, 0-9, '_', '.', '-' (at most 128, starting with a letter or digit, not ending in `.why`)"
    )]
    Id(String),
    /// No recipient.
    #[error("the message has no recipient in `to`")]
    NoRecipient,
}

impl Message {
    /// Parses and checks a message file's bytes. A missing thread becomes the id.
    pub fn parse(bytes: &[u8]) -> Result<Message, ParseMessageError> {
        let mut m: Message = serde_json::from_slice(bytes).map_err(|e| ParseMessageError::Json(e.to_string()))?;
        if !valid_id(&m.id) {
            return Err(ParseMessageError::Id(m.id));
        }
        if m.to.0.is_empty() {
            return Err(ParseMessageError::NoRecipient);
        }
        if m.thread.is_empty() {
            m.thread = m.id.clone();
        }
        Ok(m)
    }

    /// The file's bytes (pretty JSON, newline-terminated).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("a message always serializes");
        v.push(b'\n');
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_fills_defaults() {
        let m = Message::parse(br#"{"id":"a1","from":"human","to":"manager","body":"hi"}"#).unwrap();
        assert_eq!(m.thread, "a1");
        assert_eq!(m.priority, Priority::Normal);
        assert_eq!(m.kind, Kind::Message);
        let again = Message::parse(&m.to_bytes()).unwrap();
        assert_eq!(again, Message { created_at: again.created_at, ..m.clone() });
        let v: serde_json::Value = serde_json::from_slice(&m.to_bytes()).unwrap();
        assert_eq!(v["to"], "manager");
        for key in [
            "id",
            "from",
            "to",
            "subject",
            "body",
            "priority",
            "reply_to",
            "thread",
            "created_at",
            "turn",
            "ttl_turns",
            "kind",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
    }

    #[test]
    fn a_receipt_answers_only_a_message_that_asked_for_one() {
        let t = Utc::now();
        let mut m = Message::parse(br#"{"id":"m1","from":"human","to":"planner","body":"hi","thread":"t1"}"#).unwrap();
        assert_eq!(receipt(&m, "planner", 7, t), None, "no ack_required");
        m.ack_required = true;
        let r = receipt(&m, "planner", 7, t).unwrap();
        assert_eq!(
            (r.id.as_str(), r.from.as_str(), r.to.0.as_slice()),
            ("m1-receipt-planner", "lemming", &["human".to_string()][..])
        );
        assert_eq!((r.kind, r.reply_to.as_deref(), r.thread.as_str()), (Kind::Receipt, Some("m1"), "t1"));
        assert_eq!(r.body, "planner read your message m1 on turn 7");
        assert_eq!(r, receipt(&m, "planner", 7, t).unwrap(), "the same receipt again");
        assert_ne!(r.id, receipt(&m, "coder_01", 7, t).unwrap().id, "one per reader");
        for kind in [Kind::Bounce, Kind::Receipt, Kind::System, Kind::ToolResult] {
            assert_eq!(receipt(&Message { kind, ..m.clone() }, "planner", 7, t), None, "{kind:?}");
        }
        assert_eq!(receipt(&Message { from: "lemming".into(), ..m.clone() }, "planner", 7, t), None);
        assert_eq!(receipt(&m, "human", 7, t), None, "not to oneself");
        assert!(valid_id(&receipt(&Message { id: "x".repeat(128), ..m }, "planner", 7, t).unwrap().id));
    }

    #[test]
    fn refuses_bad_ids_and_garbage() {
        assert!(matches!(Message::parse(b"{nope"), Err(ParseMessageError::Json(_))));
        assert!(matches!(
            Message::parse(br#"{"id":"../x","from":"a","to":"b","body":""}"#),
            Err(ParseMessageError::Id(_))
        ));
        assert!(matches!(
            Message::parse(br#"{"id":"x.why","from":"a","to":"b","body":""}"#),
            Err(ParseMessageError::Id(_))
        ));
        assert!(matches!(
            Message::parse(br#"{"id":"x","from":"a","to":[],"body":""}"#),
            Err(ParseMessageError::NoRecipient)
        ));
        let many = Message::parse(br#"{"id":"x","from":"a","to":["b","c"],"body":""}"#).unwrap();
        assert_eq!(many.to.0, vec!["b", "c"]);
        for to in ["7", "[\"b\", 7]", "{\"b\": 1}", "null"] {
            let bytes = format!(r#"{{"id":"x","from":"a","to":{to},"body":""}}"#);
            match Message::parse(bytes.as_bytes()) {
                Err(ParseMessageError::Json(e)) => assert!(e.contains("expected a"), "{to}: {e}"),
                other => panic!("{to}: {other:?}"),
            }
        }
        let e = Message::parse(br#"{"id":"x","from":"a","to":7,"body":""}"#).unwrap_err().to_string();
        assert!(e.contains("expected a name or a list of names"), "{e}");
    }

    #[test]
    fn reply_ids_are_deterministic_and_sort_by_time() {
        let t = DateTime::parse_from_rfc3339("2026-11-22T18:00:00.5Z").unwrap().with_timezone(&Utc);
        assert_eq!(reply_id(t, 3, "manager", 1), "20261122T180000500Z-t3-manager-001");
        // Derived ids that would be too long are cut and hashed, deterministically.
        let long = format!("{}-bounce", "a".repeat(150));
        let fit = fit_id(&long);
        assert!(valid_id(&fit) && fit.len() <= 117, "{fit}");
        assert_eq!(fit, fit_id(&long));
        assert_ne!(fit, fit_id(&format!("{}-bounce", "a".repeat(151))));
        assert_eq!(fit_id("short-bounce"), "short-bounce");
        assert!(valid_id(&fit_id("_.x.why")));
        assert!(valid_id(&fit_id("___")));
        use crate::clock::IdGen;
        let sent = crate::clock::RandomIds.message_id(t, "human");
        assert!(sent < reply_id(t + chrono::Duration::milliseconds(1), 1, "a", 0));
    }
}
