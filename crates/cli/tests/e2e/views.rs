//! The views commands print: every documented `--json` field, the tables'
//! columns whatever the width of a cell, `logs` counting only runs, and
//! `thread` showing a conversation across inboxes.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::fixture::TestOrg;

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap_or_else(|| panic!("not an object: {v:#}")).keys().cloned().collect()
}

fn set(words: &[&str]) -> BTreeSet<String> {
    words.iter().map(|w| w.to_string()).collect()
}

#[track_caller]
fn has_all(v: &Value, documented: &[&str]) {
    let missing: Vec<String> = set(documented).difference(&keys(v)).cloned().collect();
    assert!(missing.is_empty(), "missing {missing:?} in {v:#}");
}

#[test]
fn every_documented_json_field_is_printed() {
    let org = TestOrg::new();
    org.send("manager", "hello");
    org.step();

    let status = org.lemming_ok(&["status", "--json"]).json();
    has_all(
        &status,
        &[
            "turn",
            "daemon",
            "agents",
            "dead_letters",
            "problems",
            "last_good",
            "spent",
            "spent_by_model",
            "budget",
            "breakers",
            "filesystem",
            "unreadable",
        ],
    );
    has_all(&status["daemon"], &["running", "pid", "paused", "trouble"]);
    let agent = &status["agents"][0];
    has_all(agent, &["name", "title", "model", "state", "problem", "credits", "unread", "pending", "last_run_turn"]);
    has_all(&agent["credits"], &["budget", "spent", "left"]);

    let agents = org.lemming_ok(&["agents", "--json"]).json();
    has_all(&agents[0], &["name", "title", "model", "every", "wake", "sends_to", "credits_left"]);

    let inspect = org.lemming_ok(&["inspect", "manager", "--json"]).json();
    has_all(
        &inspect,
        &[
            "name",
            "title",
            "description",
            "model",
            "schedule",
            "send_to",
            "read_from",
            "can_reach",
            "reached_by",
            "credits",
            "spent_by_model",
            "unread",
            "pending",
            "failed_attempts",
            "trouble",
            "memory",
            "last_run",
            "problems",
            "last_good",
            "unreadable",
        ],
    );
    has_all(&inspect["schedule"], &["every", "offset", "wake"]);
    assert_eq!(inspect["last_run"]["outcome"], "ok", "{inspect:#}");

    let models = org.lemming_ok(&["models", "--json"]).json();
    has_all(
        &models[0],
        &[
            "key",
            "provider",
            "kind",
            "model",
            "price",
            "temperature",
            "max_tokens",
            "structured",
            "fallback",
            "used_by",
        ],
    );

    let inbox = org.lemming_ok(&["inbox", "--peek", "--json"]).json();
    let first = &inbox[0];
    has_all(first, &["id", "from", "to", "subject", "body", "priority", "reply_to", "thread", "created_at", "unread"]);
    assert_eq!(first["unread"], true);
}

#[test]
fn logs_counts_and_prints_only_runs() {
    let org = TestOrg::new();
    org.send("manager", "one");
    org.step();
    org.send("manager", "two");
    org.step();
    let log = "agents/manager/logs/activity.jsonl";
    org.write(log, org.read(log) + "this line is not a run\n");

    let last = org.lemming_ok(&["logs", "manager", "-n", "1"]);
    assert!(last.stdout.starts_with("turn 2 "), "-n 1 is the last run, not the last line\n{last}");
    last.stderr_has(&["not a run", "this line is not a run"]);

    let json = org.lemming_ok(&["logs", "manager", "--json"]);
    let runs: Vec<Value> = json
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}\n{json}")))
        .collect();
    assert_eq!(runs.iter().map(|r| r["turn"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2], "{json}");
    json.stderr_has(&["this line is not a run"]);
}

#[test]
fn tables_keep_their_columns_when_a_name_is_wider_than_the_column() {
    let org = TestOrg::new();
    let long = "a_rather_long_agent_name";
    org.agent(long, &format!("name = \"{long}\"\nmodel = \"default\"\n"));
    for cmd in ["status", "agents"] {
        let out = org.lemming_ok(&[cmd]).stdout;
        let header = out.lines().find(|l| l.starts_with("AGENT")).unwrap_or_else(|| panic!("no header\n{out}"));
        let end = header.find("CREDITS").unwrap() + "CREDITS".len();
        let rows: Vec<&str> =
            out.lines().skip_while(|l| !l.starts_with("AGENT")).skip(1).take_while(|l| !l.is_empty()).collect();
        assert!(rows.iter().any(|r| r.starts_with(long)), "{out}");
        for row in rows {
            assert!(
                row.get(..end).is_some_and(|b| b.ends_with(|c: char| c != ' '))
                    && (row.len() == end || row[end..].starts_with(' ')),
                "`{cmd}`: the credits of this row do not end under CREDITS:\n{header}\n{row}"
            );
        }
    }
}

#[test]
fn thread_shows_a_conversation_across_inboxes_as_a_tree() {
    let org = TestOrg::new();
    let asked = org.send("manager", "hello");
    org.step();
    let answer = org.inbox_json("human").pop().expect("the manager answered");

    for by in [asked.as_str(), answer["id"].as_str().unwrap()] {
        let v = org.lemming_ok(&["thread", by, "--json"]).json();
        assert_eq!(v["thread"], asked.as_str(), "{v:#}");
        let shape: Vec<(String, u64)> = v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["id"].as_str().unwrap().to_string(), m["depth"].as_u64().unwrap()))
            .collect();
        assert_eq!(shape[..2], [(asked.clone(), 0), (answer["id"].as_str().unwrap().to_string(), 1)], "{v:#}");
        assert_eq!(v["messages"][1]["unread_by"], serde_json::json!(["human"]), "{v:#}");
    }
    let text = org.lemming_ok(&["thread", &asked]);
    assert!(text.stdout.contains("from human to manager") && text.stdout.contains("    ● "), "{text}");
    assert_eq!(org.inbox_json("human").len(), 1, "thread marked mail read");
    org.lemming(&["thread", "no-such-message"]).fails_with(1).stderr_has(&["no-such-message", "help: "]);
}
