//! The mock provider: deterministic and instant, the embedded default.
//!
//! For each unread `message` that is not a reply, it answers the sender with
//! `"<agent> received: <first 200 chars>"` and forwards the body to every
//! `@name` the agent may write to (not itself, not the sender). Replies,
//! bounces and other kinds are read and never answered, so conversations end.

use std::time::Duration;

use serde_json::json;

use crate::{BoxFuture, Provider, ProviderError, Reply, Request, Usage};

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
        for mail in &req.mail {
            if mail.kind != "message" || mail.reply_to.is_some() {
                continue;
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
                if req.may_send_to.iter().any(|a| a == name) {
                    forwarded.push(name);
                    messages.push(json!({
                        "to": name,
                        "body": mail.body,
                        "thread": mail.thread,
                    }));
                }
            }
        }
        json!({ "messages": messages }).to_string()
    }
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
            if !self.latency.is_zero() {
                tokio::time::sleep(self.latency).await;
            }
            let text = Mock::reply_text(req);
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

    #[test]
    fn mentions_follow_the_name_rule() {
        assert_eq!(mentions("hi @planner, and @coder_01. email a@b @ x @Up @a-"), vec!["planner", "coder_01", "a"]);
    }
}
