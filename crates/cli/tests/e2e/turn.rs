//! A turn's events (`org/state/events.jsonl`): appended exactly once per
//! committed turn, numbered 1, 2, 3… across the org's history, whatever point
//! a crash (`LEMMING_CRASH_AT`) or a kill -9 comes at. The crash and kill
//! tests of `crash.rs` check the same on every org they recover.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::fixture::{run, TestOrg};

/// Every line of `events.jsonl`, parsed (a torn line is skipped, as readers do).
fn events(org: &TestOrg) -> Vec<Value> {
    let text = std::fs::read_to_string(org.path("org/state/events.jsonl")).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// A line without its `seq`: how a turn's kept event and its appended copy compare.
fn content(e: &Value) -> Value {
    let mut e = e.clone();
    e.as_object_mut().unwrap().remove("seq");
    e
}

/// No committed turn's events are lost or doubled: `seq` runs 1, 2, 3… with
/// no gap; each committed turn has one `turn` event and no later turn has
/// any; and the last committed turn's lines are exactly those its committing
/// try kept in `turn.json`.
#[track_caller]
pub(crate) fn assert_events_once(org: &TestOrg, context: &str) {
    let lines = events(org);
    let seqs: Vec<u64> = lines.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    let want: Vec<u64> = (1..=lines.len() as u64).collect();
    assert_eq!(seqs, want, "{context}: seq is not 1, 2, 3…");
    let committed = org.turn();
    let mut reports: BTreeMap<u64, usize> = BTreeMap::new();
    for e in lines.iter().filter(|e| e["event"] == "turn") {
        *reports.entry(e["turn"].as_u64().unwrap()).or_default() += 1;
    }
    let every: BTreeMap<u64, usize> = (1..=committed).map(|t| (t, 1)).collect();
    assert_eq!(reports, every, "{context}: the turn events of turns 1..={committed}");
    if let Some(kept) = kept_events(org) {
        let turn = committed;
        let staged: Vec<Value> = kept.lines().map(|l| content(&serde_json::from_str(l).unwrap())).collect();
        // A person's command (`inbox`) logs its `dead` events with the last committed turn's number.
        let appended: Vec<Value> = lines
            .iter()
            .filter(|e| e["turn"] == turn)
            .map(content)
            .filter(|e| staged.contains(e) || e["event"] != "dead")
            .collect();
        assert_eq!(appended, staged, "{context}: turn {turn}'s events differ from those turn.json kept");
    }
    assert!(lines.iter().all(|e| e["turn"].as_u64().unwrap() <= committed), "{context}: events of an uncommitted turn");
}

/// The events the last committed turn kept in `turn.json`, if it has any.
fn kept_events(org: &TestOrg) -> Option<String> {
    let text = std::fs::read_to_string(org.path("org/state/turn.json")).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v["events"].as_str().map(str::to_string)
}

/// What the human asks: the @mentions make the manager forward, so turns 2 and 3 have work too.
fn load(org: &TestOrg) {
    org.send("manager", "plan the launch @planner");
    org.send("manager", "build the page @coder_01 @planner");
}

#[test]
fn a_turn_s_events_are_appended_once_whatever_point_a_crash_comes_at() {
    for point in ["routed", "journaled", "effects", "routed_again", "committed", "routed_again:2", "committed:3"] {
        let org = TestOrg::new();
        load(&org);
        let out = run(org.command(&["step", "-n", "4"]).env("LEMMING_CRASH_AT", point));
        assert_eq!(out.signal, Some(libc::SIGABRT), "LEMMING_CRASH_AT={point} did not abort the step\n{out}");
        let committed = org.turn();
        if point.starts_with("committed") {
            // The turn is committed and its events are kept in turn.json, not appended yet.
            assert!(kept_events(&org).is_some_and(|k| k.contains("\"event\":\"turn\"")), "{point}");
            assert!(!events(&org).iter().any(|e| e["turn"] == committed), "{point}: appended before the crash");
        } else {
            assert!(!events(&org).iter().any(|e| e["turn"].as_u64().unwrap() > committed), "{point}");
        }
        // The next step appends what the crash kept out, then its own.
        org.step();
        assert_events_once(&org, point);
        for _ in 0..3 {
            org.step();
        }
        assert_events_once(&org, point);
    }
}

#[test]
fn a_person_s_events_during_turns_keep_the_numbers_in_order() {
    // `inbox` moves what is not a message in the human's inbox to dead and logs
    // a `dead` event, as its own process, between turns.
    let org = TestOrg::new();
    load(&org);
    org.step();
    org.write("agents/human/inbox/new/not-a-message.json", "{ nope");
    org.lemming_ok(&["inbox"]);
    org.step();
    org.step();
    assert_events_once(&org, "with inbox");
    let dead: BTreeSet<String> =
        events(&org).iter().filter(|e| e["event"] == "dead").map(|e| e["mailbox"].as_str().unwrap().into()).collect();
    assert!(dead.contains("human"), "no dead event of the human's inbox: {dead:?}");
}
