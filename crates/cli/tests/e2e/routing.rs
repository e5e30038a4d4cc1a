//! Routing: the org chart, dead letters and bounces, malformed files, and the name rule.

use serde_json::json;

use crate::fixture::{message_bytes, read_json, TestOrg};

/// The bounces (and other mail) an agent has, read and unread.
fn all_mail(org: &TestOrg, agent: &str) -> Vec<serde_json::Value> {
    org.lemming_ok(&["inbox", agent, "--all", "--json"]).json().as_array().unwrap().clone()
}

#[test]
fn send_refuses_what_the_chart_forbids() {
    let org = TestOrg::new();
    let out = org.lemming(&["send", "--from", "planner", "hr", "x"]).fails_with(1);
    out.stderr_has(&["planner may not send to hr", "send_to", "planner to write to: coder_01, manager"]);
    assert!(out.stdout.is_empty(), "{out}");
    assert!(org.files("agents/planner/outbox/new").is_empty(), "a refused send left a file");
    // The other side of the chart: hr accepts mail from manager only.
    org.lemming(&["send", "--from", "coder_01", "janitor", "x"]).fails_with(1).stderr_has(&["coder_01 may not send"]);
}

#[test]
fn a_message_the_chart_forbids_goes_to_dead_and_bounces_to_its_sender() {
    let org = TestOrg::new();
    let id = "20260101T000000000Z-planner-raw001";
    let bytes = message_bytes(id, "planner", "hr", "psst @hr");
    org.drop_outbox("planner", &format!("{id}.json"), &bytes);

    let report = org.step();
    assert_eq!(report["dead"], 1, "{report:#}");

    assert_eq!(std::fs::read(org.path(&format!("org/state/dead/{id}.json"))).unwrap(), bytes, "dead letter altered");
    let why = read_json(&org.path(&format!("org/state/dead/{id}.why.json")));
    assert_eq!(why["reason"], "chart_send_to", "{why:#}");
    assert!(why["detail"].as_str().unwrap().contains("send_to"), "{why:#}");
    assert_eq!(why["mailbox"], "planner");
    assert_eq!(why["to"], json!(["hr"]));

    assert!(org.ids("hr", "inbox", "new").is_empty() && org.ids("hr", "inbox", "cur").is_empty(), "hr got it anyway");
    assert!(org.files("agents/planner/outbox/new").is_empty(), "the refused file stayed in the outbox");
    let mail = all_mail(&org, "planner");
    let bounces: Vec<_> = mail.iter().filter(|m| m["kind"] == "bounce").collect();
    assert_eq!(bounces.len(), 1, "{mail:#?}");
    assert_eq!(bounces[0]["from"], "lemming");
    assert_eq!(bounces[0]["reply_to"], id);
    assert!(bounces[0]["body"].as_str().unwrap().contains("send_to"), "{:#}", bounces[0]);
    assert_eq!(org.status_json()["dead_letters"], 1);

    // The bounce is read, never answered, and never bounces on.
    org.step();
    assert_eq!(org.dead().len(), 1);
    assert!(org.ids("lemming", "inbox", "new").is_empty());
}

#[test]
fn a_recipient_that_does_not_read_from_the_sender_refuses_its_mail() {
    let org = TestOrg::new();
    // coder_01 may write to manager, but manager stops reading from it.
    org.edit(
        "agents/manager/resume.toml",
        "read_from = [\"human\", \"planner\", \"hr\", \"coder_01\",",
        "read_from = [\"human\", \"planner\", \"hr\",",
    );
    let id = "20260101T000000000Z-coder_01-raw002";
    org.drop_outbox("coder_01", &format!("{id}.json"), message_bytes(id, "coder_01", "manager", "done"));
    org.step();
    let dead = org.dead();
    assert_eq!(dead[id]["reason"], "chart_read_from", "{dead:#?}");
    assert!(dead[id]["detail"].as_str().unwrap().contains("read_from"));
    assert!(org.ids("manager", "inbox", "new").is_empty());
}

#[test]
fn a_message_claiming_another_sender_is_refused() {
    let org = TestOrg::new();
    let id = "20260101T000000000Z-planner-forged";
    org.drop_outbox("planner", &format!("{id}.json"), message_bytes(id, "manager", "hr", "trust me"));
    org.step();
    assert_eq!(org.dead()[id]["reason"], "sender_mismatch");
    assert!(org.ids("hr", "inbox", "new").is_empty() && org.ids("hr", "inbox", "cur").is_empty());
    assert_eq!(all_mail(&org, "planner").iter().filter(|m| m["kind"] == "bounce").count(), 1);
}

#[test]
fn a_malformed_outbox_file_goes_to_dead_and_the_turn_goes_on() {
    let org = TestOrg::new();
    let human = org.send("manager", "status please");
    let good = "20260101T000000000Z-planner-good01";
    org.drop_outbox("planner", "00-garbage.json", b"{ this is not json");
    org.drop_outbox("planner", &format!("{good}.json"), message_bytes(good, "planner", "manager", "plan ready"));

    let report = org.step();
    assert_eq!(report["dead"], 1, "{report:#}");
    let dead = org.dead();
    assert_eq!(dead.len(), 1, "{dead:#?}");
    let (dead_id, why) = dead.iter().next().unwrap();
    assert_eq!(why["reason"], "malformed", "{why:#}");
    assert_eq!(why["mailbox"], "planner");
    assert!(why["detail"].as_str().unwrap().contains("00-garbage.json"), "{why:#}");
    assert_eq!(
        std::fs::read(org.path(&format!("org/state/dead/{dead_id}.json"))).unwrap(),
        b"{ this is not json",
        "the malformed bytes were not kept"
    );
    assert!(org.files("agents/planner/outbox/new").is_empty());

    let bounces: Vec<_> = all_mail(&org, "planner").into_iter().filter(|m| m["kind"] == "bounce").collect();
    assert_eq!(bounces.len(), 1, "{bounces:#?}");
    assert_eq!(bounces[0]["from"], "lemming");
    assert!(bounces[0]["body"].as_str().unwrap().contains("00-garbage.json"), "{:#}", bounces[0]);

    // The rest of the turn: both good messages were delivered and the manager answered.
    assert!(org.ids("manager", "inbox", "cur").contains(&good.to_string()), "the good planner message was lost");
    assert!(org.ids("manager", "inbox", "cur").contains(&human), "the human's message was lost");
    let inbox = org.inbox_json("human");
    assert_eq!(inbox.len(), 1, "{inbox:#?}");
    assert_eq!(inbox[0]["reply_to"], human.as_str());
}

#[test]
fn a_malformed_file_in_an_inbox_goes_to_dead_before_the_agent_runs() {
    let org = TestOrg::new();
    org.write("agents/manager/inbox/new/broken.json", "not a message");
    let id = org.send("manager", "hi");
    let report = org.step();
    assert_eq!(report["dead"], 1, "{report:#}");
    assert_eq!(report["ran"], json!(["manager"]));
    let dead = org.dead();
    assert_eq!(dead.values().filter(|w| w["reason"] == "malformed").count(), 1, "{dead:#?}");
    assert!(!org.path("agents/manager/inbox/new/broken.json").exists());
    assert_eq!(org.inbox_json("human")[0]["reply_to"], id.as_str());
}

#[test]
fn send_to_an_unknown_agent_lists_the_known_ones() {
    let org = TestOrg::new();
    org.lemming(&["send", "nobody", "x"])
        .fails_with(1)
        .stderr_has(&["unknown agent `nobody`", "known: coder_01, hr, human, janitor, manager, planner"]);
    org.lemming(&["send", "--from", "cfo", "manager", "x"]).fails_with(1).stderr_has(&["unknown agent `cfo`"]);
    org.lemming(&["inbox", "nobody"]).fails_with(1).stderr_has(&["known: coder_01"]);
    assert!(org.files("agents/human/outbox/new").is_empty());
}

#[test]
fn in_a_larger_org_an_unknown_agent_names_only_the_closest_ones() {
    let org = TestOrg::new();
    for i in 1..=20 {
        let name = format!("worker_{i:02}");
        org.agent(&name, &format!("name = \"{name}\"\nmodel = \"default\"\n"));
    }
    let out = org.lemming(&["send", "worker_1", "x"]).fails_with(1);
    out.stderr_has(&["unknown agent `worker_1` (closest: worker_01, worker_10, "]);
    assert_eq!(out.stderr.matches("worker_").count(), 1 + 10, "{out}");
    assert!(!out.stderr.contains("janitor"), "{out}");
    let out = org.lemming(&["inspect", "zzz"]).fails_with(1);
    out.stderr_has(&["unknown agent `zzz` (26 agents; `lemming agents` lists them)"]);
    let out = org.lemming(&["send", "mangaer", "x"]).fails_with(1);
    out.stderr_has(&["unknown agent `mangaer` (closest: manager; groups: none; or \"*\""]);
    assert!(org.files("agents/human/outbox/new").is_empty());
}

#[test]
fn send_refuses_names_that_break_the_rule() {
    let org = TestOrg::new();
    for bad in ["../x", "a/b", "A", "a b", ".hidden"] {
        org.lemming(&["send", bad, "y"])
            .fails_with(1)
            .stderr_has(&[&format!("invalid agent name {bad:?}"), "start with a lower-case letter"]);
    }
    assert!(!org.path("agents/x").exists() && !org.path("x").exists() && !org.path("agents/a").exists());
    assert!(org.files("agents/human/outbox/new").is_empty());
}

#[test]
fn expired_and_oversize_messages_go_to_dead_with_their_reason() {
    let org = TestOrg::new();
    let expired = org.lemming_ok(&["send", "--ttl", "0", "manager", "too late"]).stdout.trim().to_string();
    let big = "20260101T000000000Z-planner-big";
    let body = "x".repeat(70_000);
    org.drop_outbox("planner", "big.json", message_bytes(big, "planner", "manager", &body));

    let report = org.step();
    assert_eq!(report["dead"], 2, "{report:#}");
    let dead = org.dead();
    assert_eq!(dead[&expired]["reason"], "expired", "{dead:#?}");
    let oversize: Vec<_> = dead.values().filter(|w| w["reason"] == "oversize").collect();
    assert_eq!(oversize.len(), 1, "{dead:#?}");
    assert!(oversize[0]["detail"].as_str().unwrap().contains("max_message_bytes"));
    assert!(org.ids("manager", "inbox", "new").is_empty() && org.ids("manager", "inbox", "cur").is_empty());
    let human = org.inbox_json("human");
    assert_eq!(human.len(), 1, "{human:#?}");
    assert_eq!((&human[0]["kind"], &human[0]["reply_to"]), (&json!("bounce"), &json!(expired)));
    assert_eq!(all_mail(&org, "planner").iter().filter(|m| m["kind"] == "bounce").count(), 1);

    org.lemming(&["send", "manager", &body]).fails_with(1).stderr_has(&["max_message_bytes"]);
}

#[test]
fn refused_files_with_the_same_name_or_id_each_keep_their_dead_letter_and_bounce() {
    let org = TestOrg::new();
    let refused = |body: &str| format!(r#"{{"id":"dup-1","from":"planner","to":"hr","body":"{body}"}}"#);
    // The same id refused twice, on two turns; and a malformed file with the same name twice.
    org.drop_outbox("planner", "dup-1.json", refused("first"));
    org.drop_outbox("planner", "junk.json", "not json 1");
    org.step();
    org.drop_outbox("planner", "dup-1.json", refused("second"));
    org.drop_outbox("planner", "junk.json", "not json 2");
    org.step();
    let dead: Vec<String> = org.files("org/state/dead").into_iter().filter(|f| !f.ends_with(".why.json")).collect();
    let bodies: Vec<String> = dead.iter().map(|f| org.read(&format!("org/state/dead/{f}"))).collect();
    for needle in ["first", "second", "not json 1", "not json 2"] {
        assert_eq!(bodies.iter().filter(|b| b.contains(needle)).count(), 1, "{needle} in {dead:?}");
    }
    assert_eq!(dead.len(), 4, "{dead:?}");
    for f in &dead {
        let why = f.replace(".json", ".why.json");
        assert!(org.files("org/state/dead").contains(&why), "{why} missing");
    }
    // Planner reads its bounces in the same turn, so count read and unread mail.
    let mut inbox = org.ids("planner", "inbox", "new");
    inbox.extend(org.ids("planner", "inbox", "cur"));
    let bounces = inbox.iter().filter(|id| id.ends_with("-bounce")).count();
    assert_eq!(bounces, 4, "planner is told about each refused file: {inbox:?}");
}
