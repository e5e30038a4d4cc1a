//! An org that spans nodes (`[cluster]` in org.toml, `node` in resumes): what
//! `validate` and `agents` say, and what a process that is one node runs.

use serde_json::json;

use crate::fixture::{message_bytes, run, TestOrg};

/// The default org on nodes `a` and `b`, with planner on `b` and the others on `a`.
fn two_node_org() -> TestOrg {
    let org = TestOrg::new();
    let toml = org.read("org/org.toml");
    org.write(
        "org/org.toml",
        format!("{toml}\n[cluster]\nnats_url = \"nats://127.0.0.1:4222\"\nnodes = [\"a\", \"b\"]\n"),
    );
    org.edit("agents/planner/resume.toml", "name = \"planner\"", "name = \"planner\"\nnode = \"b\"");
    org
}

#[test]
fn validate_names_the_line_of_a_node_that_is_not_declared_and_agents_shows_where_each_runs() {
    let org = two_node_org();
    let agents = org.lemming_ok(&["--json", "agents"]).json();
    let node = |name: &str| agents.as_array().unwrap().iter().find(|a| a["name"] == name).unwrap()["node"].clone();
    assert_eq!((node("planner"), node("manager"), node("human")), (json!("b"), json!("a"), json!("a")));
    let table = org.lemming_ok(&["agents"]).stdout;
    assert!(table.lines().next().unwrap().contains("NODE"), "{table}");
    let planner = table.lines().find(|l| l.starts_with("planner")).unwrap();
    assert_eq!(planner.split_whitespace().nth(1), Some("b"), "{table}");

    org.edit("agents/planner/resume.toml", "node = \"b\"", "node = \"c\"");
    let out = org.lemming(&["validate"]).fails_with(1);
    out.stderr_has(&["agents/planner/resume.toml:", "`c` in `node` is no node of [cluster]", "add \"c\" to `nodes`"]);
    // On one machine, `agents` has no node column.
    let one = TestOrg::new();
    assert!(!one.lemming_ok(&["agents"]).stdout.contains("NODE"));
    assert!(one.lemming_ok(&["--json", "agents"]).json()[0].get("node").is_none());
}

#[test]
fn a_node_runs_only_its_agents_and_mail_for_another_node_waits_in_the_outbox() {
    let org = two_node_org();
    // A process that does not know which node it is runs no turn.
    org.lemming(&["step"]).fails_with(2).stderr_has(&["nodes a, b", "--node NAME or LEMMING_NODE=NAME"]);
    org.lemming(&["--node", "c", "step"]).fails_with(2).stderr_has(&["`c`", "is no node of this org"]);
    assert_eq!(org.turn(), 0, "no turn was run");

    org.drop_outbox("manager", "m1.json", message_bytes("m1", "manager", "planner", "plan it"));
    org.drop_outbox("manager", "m2.json", message_bytes("m2", "manager", "hr", "hire someone"));
    // Mail put straight into planner's inbox: node a must not run planner for it.
    org.write("agents/planner/inbox/new/p1.json", message_bytes("p1", "manager", "planner", "already here"));
    let out = org.lemming_ok(&["--json", "--node", "a", "step"]);
    let report = &out.json()[0];
    assert_eq!(report["ran"], json!(["hr"]), "{out}");
    assert!(org.ids("hr", "inbox", "cur").contains(&"m2".to_string()), "hr read its mail on node a");
    assert_eq!(org.ids("manager", "outbox", "new"), ["m1"], "mail for node b waits in the outbox");
    assert_eq!(org.ids("planner", "inbox", "new"), ["p1"], "planner's inbox is node b's business");

    // The same folder as node b (LEMMING_NODE): planner runs, hr does not.
    let mut b = org.command(&["--json", "step"]);
    b.env("LEMMING_NODE", "b");
    let out = run(&mut b).ok();
    assert_eq!(out.json()[0]["ran"], json!(["planner"]), "{out}");
    assert_eq!(org.ids("manager", "outbox", "new"), ["m1"], "node b does not route node a's outboxes");

    // A person sends from the node the sender runs on.
    let mut send = org.command(&["send", "manager", "hello"]);
    send.env("LEMMING_NODE", "b");
    run(&mut send).fails_with(1).stderr_has(&["human runs on node a, and this process is node b"]);
    org.lemming_ok(&["--node", "a", "send", "manager", "hello"]);
}
