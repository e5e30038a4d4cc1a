//! Replies from models, through the real binary: a reply cut off at the token
//! limit leaves the mail unread and says why; only a top-level object with a
//! contract key is a reply; and the schema sent with `structured =
//! "json_schema"` bounds every string and list from `max_tokens`.

use serde_json::{json, Value};

use crate::fake_http::{Answer, FakeServer};
use crate::fixture::TestOrg;
use crate::providers::{charges, configure, step_env};

/// What Gemma 3 270M wrote with the schema and the default settings: the
/// outer object never closes, and its first message object is complete.
const CUT_OFF: &str = r#"{"messages":[{"to":"human","body":"Hello! I am the manager.","priority":"normal","reply_to":null},{"to":"human","body":"I will help you with the task and then I will help you with the"#;

/// A chat-completions response with this content and finish reason.
fn chat_finish(content: &str, finish: &str) -> String {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "test-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}],
        "usage": {"prompt_tokens": 300, "completion_tokens": 64, "total_tokens": 364},
    })
    .to_string()
}

fn openai_org(server: &FakeServer, model_fields: &str) -> TestOrg {
    let org = TestOrg::new();
    configure(
        &org,
        &format!(
            "[providers.local]\nkind = \"openai\"\nbase_url = \"{}/v1\"\nmax_retries = 0\n\n[models.small]\nprovider = \"local\"\nmodel = \"gemma-270m\"\n{model_fields}",
            server.url()
        ),
        "manager",
        "small",
    );
    org.lemming_ok(&["validate"]);
    org
}

/// Every string in a schema without an `enum` has a `maxLength`, every list a `maxItems`.
fn unbounded(schema: &Value, path: &str, out: &mut Vec<String>) {
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if types.contains(&"string") && schema.get("enum").is_none() && !schema["maxLength"].is_u64() {
        out.push(format!("{path} (string)"));
    }
    if types.contains(&"array") {
        if !schema["maxItems"].is_u64() {
            out.push(format!("{path} (list)"));
        }
        unbounded(&schema["items"], &format!("{path}[]"), out);
    }
    for (k, p) in schema["properties"].as_object().into_iter().flatten() {
        unbounded(p, &format!("{path}.{k}"), out);
    }
}

#[test]
fn a_reply_cut_at_max_tokens_leaves_the_mail_unread_sends_nothing_and_says_why() {
    let server = FakeServer::start(|_, n| match n {
        0 => Answer::json(chat_finish(CUT_OFF, "length")),
        _ => Answer::json(chat_finish(
            r#"{"messages":[{"to":"human","body":"done","priority":"normal","reply_to":null}],"notes":"","memory":[]}"#,
            "stop",
        )),
    });
    let org = openai_org(&server, "structured = \"json_schema\"\nmax_tokens = 512\n");
    let id = org.send("manager", "please plan the launch");

    let (report, out) = step_env(&org, &[]);
    assert_eq!(report["ran"], json!([]), "a cut-off reply must not count as a run\n{out}");
    assert_eq!(report["failed"][0][0], "manager", "{out}");
    let why = report["failed"][0][1].as_str().unwrap();
    assert!(why.contains("does not close") && why.contains("cut off at its token limit"), "{why}");
    assert!(why.contains("`length`") && why.contains("max_tokens 512"), "{why}");

    // The mail stays unread, with one failed attempt; nothing was sent.
    assert!(org.ids("manager", "inbox", "new").contains(&id), "the mail was consumed");
    assert!(org.ids("manager", "inbox", "cur").is_empty());
    assert_eq!(org.lemming_ok(&["inspect", "manager", "--json"]).json()["failed_attempts"][&id]["count"], 1);
    assert!(org.inbox_json("human").is_empty(), "the inner message object was sent");
    assert!(org.ids("manager", "outbox", "sent").is_empty() && org.ids("manager", "outbox", "new").is_empty());

    // The activity log and the log line say why, and keep the raw reply.
    let last = org.activity("manager").pop().expect("no activity logged");
    assert_eq!(last["outcome"], "failed", "{last:#}");
    assert_eq!(last["raw"], CUT_OFF);
    assert!(last["error"].as_str().unwrap().contains("cut off at its token limit"), "{last:#}");
    assert!(out.stderr.contains("cut off at its token limit") && out.stderr.contains("mail stays unread"), "{out}");
    assert_eq!(org.agent_status("manager")["state"], "failing");
    // The call was paid for, so it is charged once.
    assert_eq!(charges(&org).len(), 1);
    org.assert_ledger_balances();

    // The schema sent bounded every string and list, though the config set no limits.
    let body = server.requests()[0].json();
    let schema = &body["response_format"]["json_schema"]["schema"];
    let mut loose = Vec::new();
    unbounded(schema, "reply", &mut loose);
    assert!(loose.is_empty(), "unbounded: {loose:?}\n{schema:#}");
    let p = &schema["properties"];
    let n = |v: &Value| v.as_u64().unwrap_or_else(|| panic!("not a bound: {v}\n{schema:#}"));
    let strings = n(&p["notes"]["maxLength"])
        + n(&p["messages"]["maxItems"]) * n(&p["messages"]["items"]["properties"]["body"]["maxLength"])
        + n(&p["memory"]["maxItems"]) * n(&p["memory"]["items"]["properties"]["value"]["maxLength"]);
    assert!(strings > 0 && strings < 512, "the strings alone allow {strings} characters\n{schema:#}");

    // The next answer is whole: the same mail is answered and consumed.
    let (report, out) = step_env(&org, &[]);
    assert_eq!(report["ran"], json!(["manager"]), "{out}");
    let inbox = org.inbox_json("human");
    assert_eq!(inbox.len(), 1, "{inbox:#?}");
    assert_eq!(inbox[0]["body"], "done");
    assert!(org.ids("manager", "inbox", "cur").contains(&id));
    org.lemming_ok(&["fsck"]);
}

#[test]
fn anthropic_stop_reason_max_tokens_is_a_cut_off_reply_too() {
    let server = FakeServer::start(|_, _| {
        Answer::json(
            json!({
                "type": "message", "role": "assistant",
                "content": [{"type": "text", "text": CUT_OFF}],
                "stop_reason": "max_tokens",
                "usage": {"input_tokens": 10, "output_tokens": 20},
            })
            .to_string(),
        )
    });
    let org = TestOrg::new();
    configure(
        &org,
        &format!(
            "[providers.a]\nkind = \"anthropic\"\nbase_url = \"{}\"\nmax_retries = 0\n\n[models.claude]\nprovider = \"a\"\nmax_tokens = 32\n",
            server.url()
        ),
        "manager",
        "claude",
    );
    let id = org.send("manager", "hello");
    let (report, out) = step_env(&org, &[]);
    let why = report["failed"][0][1].as_str().unwrap_or_else(|| panic!("manager did not fail\n{out}"));
    assert!(why.contains("`max_tokens`") && why.contains("does not close"), "{why}");
    assert!(org.ids("manager", "inbox", "new").contains(&id));
    assert!(org.inbox_json("human").is_empty());
}

#[test]
fn only_a_top_level_object_with_a_contract_key_is_a_reply() {
    let org = TestOrg::new();
    // A lone message object, a reply nested in another object, then a reply
    // whose object closed before the token limit cut the chatter after it.
    org.script(
        "manager",
        r#"[[reply]]
turn = 1
text = '{"to":"human","body":"a message object, not a reply"}'
[[reply]]
turn = 2
text = '{"answer":{"messages":[{"to":"human","body":"nested"}]}}'
[[reply]]
turn = 3
finish = "length"
text = '{"messages":[{"to":"human","body":"whole"}],"notes":"n"} and then I kept talking until'
"#,
    );
    let id = org.send("manager", "hello");
    for turn in 1..=2 {
        let report = org.step();
        assert_eq!(report["failed"][0][0], "manager", "turn {turn}: {report:#}");
        let why = report["failed"][0][1].as_str().unwrap();
        assert!(why.contains("no JSON object with any of the reply keys"), "turn {turn}: {why}");
        assert!(org.inbox_json("human").is_empty(), "turn {turn}: something was sent");
        assert!(org.ids("manager", "inbox", "new").contains(&id), "turn {turn}: the mail was consumed");
    }
    let report = org.step();
    assert_eq!(report["ran"], json!(["manager"]), "{report:#}");
    let inbox = org.inbox_json("human");
    assert_eq!(inbox.len(), 1, "{inbox:#?}");
    assert_eq!(inbox[0]["body"], "whole");
    let last = org.activity("manager").pop().unwrap();
    assert_eq!(last["outcome"], "ok");
    assert!(last["warnings"].to_string().contains("cut off at its token limit"), "{last:#}");
}

/// Gemma 3 270M under the schema with no reply limits in the config (the
/// setting that once rambled to `max_tokens` and lost the mail): the bounds
/// derived from `max_tokens` make it close its reply in time, and the reply is
/// either used whole or refused with the mail kept, never consumed for nothing.
#[test]
fn llama_server_closes_its_reply_within_max_tokens_under_the_derived_bounds() {
    use crate::peers::{gemma_behind_a_proxy, response};
    let test = "llama_server_closes_its_reply_within_max_tokens_under_the_derived_bounds";
    let _llama = crate::peers::one_llama_at_a_time();
    let Some((_gemma, proxy)) = gemma_behind_a_proxy(test) else { return };

    for max_tokens in [400, 1024] {
        let org = TestOrg::new();
        configure(
            &org,
            &format!(
                "[providers.llama]\nkind = \"openai\"\nbase_url = \"{}/v1\"\ntimeout_secs = 180\nmax_retries = 0\n\n[models.local]\nprovider = \"llama\"\nmodel = \"gemma-270m\"\nstructured = \"json_schema\"\ntemperature = 0.0\nmax_tokens = {max_tokens}\n",
                proxy.url()
            ),
            "manager",
            "local",
        );
        let id = org.send("manager", "Please plan the product launch with the planner and tell me how it goes.");
        let before = proxy.requests_to("/v1/chat/completions").len();
        let (report, out) = step_env(&org, &[]);
        let calls = proxy.requests_to("/v1/chat/completions");
        assert_eq!(calls.len(), before + 1, "{out}");
        let resp = response(&calls[before]);
        let choice = &resp["choices"][0];
        let content = choice["message"]["content"].as_str().unwrap_or_default();
        assert_ne!(
            choice["finish_reason"], "length",
            "max_tokens {max_tokens}: the derived bounds did not make the reply fit\n{content}"
        );
        let reply: Value = serde_json::from_str(content)
            .unwrap_or_else(|e| panic!("max_tokens {max_tokens}: not a whole JSON reply ({e}): {content}"));
        assert_eq!(report["ran"], json!(["manager"]), "max_tokens {max_tokens}: {out}");
        assert!(!org.ids("manager", "inbox", "new").contains(&id));
        let sent = reply["messages"].as_array().map_or(0, Vec::len);
        assert_eq!(org.activity("manager").pop().unwrap()["sent"].as_array().unwrap().len(), sent, "{reply:#}");
    }
}
