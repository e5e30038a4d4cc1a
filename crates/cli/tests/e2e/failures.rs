//! A failing agent fails alone: its mail stays unread, then goes to dead as
//! poison. Memory operations from a reply: each one applies or fails alone.

use serde_json::json;

use crate::fixture::{read_json, TestOrg};

#[test]
fn an_unusable_reply_keeps_the_mail_then_poisons_it_while_others_run() {
    let org = TestOrg::new();
    org.edit("org/org.toml", "max_attempts = 3", "max_attempts = 2");
    org.script("manager", "[[reply]]\nagent = \"manager\"\ntext = 'not json at all'\n");
    org.lemming_ok(&["validate"]);
    let id = org.send("manager", "hello");
    org.send_from("manager", "planner", "task one");

    let report = org.step();
    assert_eq!(report["ran"], json!(["planner"]), "the planner did not run beside the failing manager\n{report:#}");
    assert_eq!(report["failed"][0][0], "manager", "{report:#}");
    assert!(report["failed"][0][1].as_str().unwrap().contains("no JSON"), "{report:#}");
    assert!(org.ids("manager", "inbox", "new").contains(&id), "the failed agent's mail was consumed");
    let manager = org.agent_status("manager");
    assert_eq!(manager["state"], "failing", "{manager:#}");
    let last = org.activity("manager").pop().expect("no activity logged");
    assert_eq!(last["outcome"], "failed");
    assert_eq!(last["raw"], "not json at all");
    assert!(org.read("agents/manager/logs/activity.jsonl").contains("not json at all"));
    assert!(org.inbox_json("human").is_empty());

    org.send_from("manager", "planner", "task two");
    let report = org.step();
    assert_eq!(report["ran"], json!(["planner"]), "{report:#}");
    assert_eq!(report["failed"][0][0], "manager", "{report:#}");
    let dead = org.dead();
    let poisoned: Vec<_> = dead.iter().filter(|(_, w)| w["reason"] == "poison").collect();
    assert_eq!(poisoned.len(), 1, "{dead:#?}");
    let (dead_id, why) = poisoned[0];
    assert_eq!(why["mailbox"], "manager");
    assert!(why["detail"].as_str().unwrap().contains("2 times"), "{why:#}");
    assert_eq!(read_json(&org.path(&format!("org/state/dead/{dead_id}.json")))["id"], id.as_str());
    assert!(!org.ids("manager", "inbox", "new").contains(&id), "the poisoned mail is still unread");
    assert!(!org.ids("manager", "inbox", "cur").contains(&id), "the poisoned mail was consumed");
    assert_eq!(org.status_json()["dead_letters"], dead.len());
    assert_eq!(org.activity("planner").len(), 2);
    org.assert_ledger_balances();
}

#[test]
fn a_provider_error_fails_that_agent_alone() {
    let org = TestOrg::new();
    org.script("manager", "[[reply]]\nagent = \"manager\"\nerror = \"the model is down\"\n");
    let id = org.send("manager", "hello");
    org.send_from("manager", "planner", "task");
    let report = org.step();
    assert_eq!(report["ran"], json!(["planner"]), "{report:#}");
    assert!(report["failed"][0][1].as_str().unwrap().contains("the model is down"), "{report:#}");
    assert!(org.ids("manager", "inbox", "new").contains(&id));
    // The provider failed, not the mail: the mail waits without a failed attempt.
    let inspect = org.lemming_ok(&["inspect", "manager", "--json"]).json();
    assert!(inspect["failed_attempts"].get(&id).is_none(), "{inspect:#}");
    let manager = org.agent_status("manager");
    assert_eq!(
        (manager["state"].as_str(), manager["problem"].as_str()),
        (Some("provider_down"), Some(report["failed"][0][1].as_str().unwrap())),
        "{manager:#}"
    );
}

#[test]
fn memory_operations_apply_and_a_bad_one_does_not_stop_the_rest() {
    let org = TestOrg::new();
    org.write("agents/manager/memory/log.json", "[\"first\"]");
    org.write("agents/manager/memory/prefs.json", "{\"a\": 1}");
    org.write("agents/manager/memory/old.json", "\"bye\"");
    org.script(
        "manager",
        r#"[[reply]]
agent = "manager"
text = '''
{"messages":[{"to":"human","body":"noted"}],
 "memory":[
  {"op":"set","key":"goal","value":"ship it"},
  {"op":"append","key":"log","value":"second"},
  {"op":"merge","key":"prefs","value":{"b":2}},
  {"op":"delete","key":"old"},
  {"op":"set","key":"../escape","value":1},
  {"op":"set","key":"after","value":true}
 ]}
'''
"#,
    );
    org.send("manager", "remember this");
    let report = org.step();
    assert_eq!(report["ran"], json!(["manager"]), "{report:#}");

    let mem = |key: &str| read_json(&org.path(&format!("agents/manager/memory/{key}.json")));
    assert_eq!(mem("goal"), json!("ship it"));
    assert_eq!(mem("log"), json!(["first", "second"]));
    assert_eq!(mem("prefs"), json!({"a": 1, "b": 2}));
    assert_eq!(mem("after"), json!(true));
    assert_eq!(org.files("agents/manager/memory"), ["after.json", "goal.json", "log.json", "prefs.json"]);
    assert!(!org.path("agents/manager/escape.json").exists() && !org.path("agents/escape.json").exists());

    let last = org.activity("manager").pop().unwrap();
    assert_eq!(last["outcome"], "ok");
    let warnings = last["warnings"].to_string();
    assert!(warnings.contains("../escape"), "the bad op left no warning: {last:#}");
    let inbox = org.inbox_json("human");
    assert_eq!(inbox.len(), 1, "{inbox:#?}");
    assert_eq!(inbox[0]["body"], "noted");
    assert!(org.ids("manager", "inbox", "new").is_empty(), "the mail was not consumed");

    let inspect = org.lemming_ok(&["inspect", "manager", "--json"]).json();
    assert_eq!(inspect["memory"]["goal"], "ship it", "{inspect:#}");
}

#[test]
fn two_agents_writing_the_same_memory_key_on_a_fresh_org_both_keep_their_value() {
    let org = TestOrg::new();
    org.script("manager", "");
    org.edit("agents/planner/resume.toml", "model = \"default\"", "model = \"scripted\"");
    org.write(
        "org/script.toml",
        r#"[[reply]]
agent = "manager"
text = '{"messages":[{"to":"planner","body":"go"}],"memory":[{"op":"set","key":"goal","value":"manager"}]}'
[[reply]]
agent = "planner"
text = '{"memory":[{"op":"set","key":"goal","value":"planner"}]}'
"#,
    );
    org.send("manager", "start");
    org.lemming_ok(&["send", "--from", "manager", "planner", "hello"]);
    let report = org.step();
    assert_eq!(report["ran"], json!(["manager", "planner"]), "{report:#}");
    assert_eq!(org.read("agents/manager/memory/goal.json").trim(), "\"manager\"");
    assert_eq!(org.read("agents/planner/memory/goal.json").trim(), "\"planner\"");
    // The org keeps going: the next turn runs (planner answers manager's message).
    org.step();
    assert_eq!(org.status_json()["turn"], 2);
}
