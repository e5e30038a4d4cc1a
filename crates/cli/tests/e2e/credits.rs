//! Credits: an agent without credits is skipped, a top-up lets it run, and the
//! ledger file adds up to what `status` shows.

use serde_json::json;

use crate::fixture::TestOrg;

#[test]
fn an_agent_without_credits_is_skipped_until_topped_up() {
    let org = TestOrg::new();
    org.edit("agents/manager/resume.toml", "credits = 100.0", "credits = 0.0");
    let id = org.send("manager", "hello");

    let report = org.step();
    assert_eq!(report["ran"], json!([]), "{report:#}");
    assert_eq!(report["skipped"], json!([["manager", "out_of_credits"]]), "{report:#}");
    let manager = org.agent_status("manager");
    assert_eq!(manager["state"], "out_of_credits", "{manager:#}");
    assert_eq!(manager["unread"], 1, "{manager:#}");
    assert_eq!(org.ids("manager", "inbox", "new"), [id.as_str()]);
    assert!(org.inbox_json("human").is_empty());
    let text = org.lemming_ok(&["step"]);
    assert!(text.stdout.contains("skipped: manager (out_of_credits)"), "{text}");

    let out = org.lemming_ok(&["top-up", "manager", "5"]);
    assert!(out.stdout.contains("manager: +5 credits, 5.0000 left"), "{out}");
    let top_ups: Vec<_> = org.ledger().into_iter().filter(|e| e["kind"] == "top_up").collect();
    assert_eq!(top_ups.len(), 1);
    assert_eq!((top_ups[0]["agent"].as_str(), top_ups[0]["amount"].as_f64()), (Some("manager"), Some(5.0)));
    assert_eq!(org.agent_status("manager")["credits"]["left"], 5.0);

    let report = org.step();
    assert_eq!(report["ran"], json!(["manager"]), "{report:#}");
    let manager = org.agent_status("manager");
    let left = manager["credits"]["left"].as_f64().unwrap();
    assert!(left > 0.0 && left < 5.0, "{manager:#}");
    assert_eq!(org.inbox_json("human")[0]["reply_to"], id.as_str());
    org.assert_ledger_balances();
}

#[test]
fn the_ledger_adds_up_to_the_status_after_a_busy_org() {
    let org = TestOrg::new();
    org.send("manager", "plan @planner and staff @hr");
    org.send("manager", "build @coder_01 @planner");
    for _ in 0..5 {
        org.step();
    }
    org.lemming_ok(&["top-up", "planner", "2.5"]);
    org.lemming_ok(&["top-up", "planner", "0.25"]);
    let ledger = org.ledger();
    let charged: std::collections::BTreeSet<_> =
        ledger.iter().filter(|e| e["kind"] == "charge").map(|e| e["agent"].as_str().unwrap().to_string()).collect();
    assert!(charged.len() >= 4, "the workload ran too few agents: {charged:?}");
    org.assert_ledger_balances();
    let spent = org.agent_status("planner")["credits"]["spent"].as_f64().unwrap();
    let budget = org.agent_status("planner")["credits"]["budget"].as_f64().unwrap();
    assert!((budget - 102.75).abs() < 1e-9 && spent > 0.0, "planner: budget {budget}, spent {spent}");
}

#[test]
fn top_up_refuses_bad_amounts_and_unknown_agents() {
    let org = TestOrg::new();
    org.lemming(&["top-up", "manager", "0"]).fails_with(1).stderr_has(&["from 0.0001 to"]);
    org.lemming(&["top-up", "manager", "NaN"]).fails_with(1).stderr_has(&["from 0.0001 to"]);
    org.lemming(&["top-up", "cfo", "5"]).fails_with(1).stderr_has(&["unknown agent `cfo`", "known: coder_01"]);
    org.lemming(&["top-up", "manager", "lots"]).fails_with(2);
    assert!(org.ledger().is_empty(), "a refused top-up wrote the ledger");
}
