//! The events file while a person's command appends to it beside a running
//! daemon that is killed (SIGKILL) now and then: `lemming inbox` sets aside
//! what is not a message in the human's inbox and appends a `dead` event for
//! each, under the file's lock, while turns append theirs. Every committed
//! turn's events stay in the file once, the numbers run 1, 2, 3… without a gap
//! or a repeat, and each entry set aside has exactly one `dead` event.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::fixture::{wait_until, TestOrg};

fn events(org: &TestOrg) -> Vec<Value> {
    let text = std::fs::read_to_string(org.path("org/state/events.jsonl")).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

#[test]
fn a_person_s_events_beside_a_daemon_that_is_killed_keep_every_turn_s_events_once() {
    let org = TestOrg::new();
    org.mock_latency(5);
    let mut d = org.spawn_run(&["--turn-seconds", "0.02"]);
    d.wait_ready();
    let mut bad = Vec::new();
    for i in 0..30 {
        // Something that is not a message, as a person's program might leave it.
        let name = format!("not-a-message-{i:02}.json");
        org.write(&format!("agents/human/inbox/new/{name}"), "{ nope");
        bad.push(name);
        if i % 3 == 0 {
            org.send("manager", &format!("#{i} plan the launch @planner"));
        }
        org.lemming_ok(&["inbox"]);
        if i % 6 == 5 {
            d.kill9();
            d = org.spawn_run(&["--turn-seconds", "0.02"]);
            d.wait_ready();
        }
    }
    let turn = org.turn();
    assert!(wait_until(Duration::from_secs(20), || org.turn() >= turn + 2), "no more turns\n{d}");
    org.lemming_ok(&["stop"]);
    assert!(d.wait_exit(Duration::from_secs(20)).is_some_and(|s| s.success()), "{d}");

    crate::turn::assert_events_once(&org, "inbox beside a killed daemon");
    let lines = events(&org);
    let mut dead: BTreeMap<String, usize> = BTreeMap::new();
    for e in lines.iter().filter(|e| e["event"] == "dead" && e["mailbox"] == "human") {
        *dead.entry(e["id"].as_str().unwrap().to_string()).or_default() += 1;
    }
    assert_eq!(dead.len(), bad.len(), "one dead event per entry set aside: {dead:#?}");
    assert!(dead.values().all(|n| *n == 1), "a dead event appended twice: {dead:#?}");
    assert!(org.files("agents/human/inbox/new").iter().all(|f| !f.starts_with("not-a-message")));
}
