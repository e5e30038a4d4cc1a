//! Groups, broadcast and read receipts: `[groups]` in org.toml, `to =
//! "@group"` and `"*"`, groups in `send_to`/`read_from`, per-recipient
//! refusals with one bounce, and the `receipt` a message sent with `--ack`
//! brings back when it is read (by an agent's run, or by a person with `inbox`).

use serde_json::Value;

use crate::fixture::{message_bytes, read_json, recipients, run, TestOrg};

/// The default org with `engineering = planner, coder_01, hr, janitor,
/// human`, and `human` allowed to write to the group. planner and coder_01
/// read from human; hr and janitor do not.
fn org_with_engineering() -> TestOrg {
    let org = TestOrg::new();
    let toml = org.read("org/org.toml");
    org.write(
        "org/org.toml",
        format!("{toml}\n[groups]\nengineering = [\"planner\", \"coder_01\", \"hr\", \"janitor\", \"human\"]\n"),
    );
    org.edit("agents/human/resume.toml", "send_to = [\"manager\"]", "send_to = [\"manager\", \"@engineering\"]");
    org.edit(
        "agents/planner/resume.toml",
        "read_from = [\"manager\", \"coder_01\"]",
        "read_from = [\"manager\", \"coder_01\", \"human\"]",
    );
    org.edit(
        "agents/coder_01/resume.toml",
        "read_from = [\"planner\", \"manager\"]",
        "read_from = [\"planner\", \"manager\", \"human\"]",
    );
    org
}

/// How many copies of message `id` an agent holds, read or unread.
fn copies(org: &TestOrg, agent: &str, id: &str) -> usize {
    ["new", "cur"].iter().filter(|sub| org.ids(agent, "inbox", sub).contains(&id.to_string())).count()
}

/// Every message in an agent's inbox (unread and read), parsed.
fn inbox(org: &TestOrg, agent: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        for id in org.ids(agent, "inbox", sub) {
            out.push(read_json(&org.path(&format!("agents/{agent}/inbox/{sub}/{id}.json"))));
        }
    }
    out
}

/// The dead letters of message `id` written for `mailbox`'s outbox.
fn dead_of(org: &TestOrg, mailbox: &str, id: &str) -> Vec<(String, Value)> {
    org.dead()
        .into_iter()
        .filter(|(dead, why)| why["mailbox"] == mailbox && (dead == id || dead.starts_with(&format!("{id}."))))
        .collect()
}

/// fsck's findings (`--json`), with its verdict.
fn fsck(org: &TestOrg) -> Value {
    run(&mut org.command(&["--json", "fsck"])).json()
}

#[test]
fn send_to_a_group_reaches_each_member_once_and_each_refused_member_has_its_own_dead_letter() {
    let org = org_with_engineering();
    let id = org.send("@engineering", "standup in five");
    let sent = read_json(&org.path(&format!("agents/human/outbox/new/{id}.json")));
    assert_eq!(sent["to"], "@engineering", "the group stays in the message as written");
    org.step();

    for member in ["planner", "coder_01"] {
        assert_eq!(copies(&org, member, &id), 1, "{member} must get it once");
    }
    for refused in ["hr", "janitor", "human", "manager"] {
        assert_eq!(copies(&org, refused, &id), 0, "{refused} must get nothing");
    }
    // One dead letter per refused member, each naming only that member.
    let dead = dead_of(&org, "human", &id);
    let mut to: Vec<(String, String)> =
        dead.iter().map(|(_, why)| (recipients(why).join(","), why["reason"].as_str().unwrap().to_string())).collect();
    to.sort();
    assert_eq!(
        to,
        [("hr".to_string(), "chart_read_from".to_string()), ("janitor".to_string(), "chart_read_from".to_string())],
        "{dead:#?}"
    );
    for (dead_id, _) in &dead {
        assert!(
            org.path(&format!("org/state/dead/{dead_id}.json")).is_file(),
            "{dead_id}: no letter beside its reason"
        );
    }
    // One bounce, naming both.
    let bounces: Vec<Value> =
        inbox(&org, "human").into_iter().filter(|m| m["kind"] == "bounce" && m["reply_to"] == id.as_str()).collect();
    assert_eq!(bounces.len(), 1, "{bounces:#?}");
    let body = bounces[0]["body"].as_str().unwrap();
    assert!(
        body.contains("hr does not read from human") && body.contains("janitor does not read from human"),
        "{body}"
    );

    // fsck expands the group as the router did: no loss, nobody gone.
    let report = fsck(&org);
    assert_eq!(report["ok"], true, "{report:#}");
    let codes: Vec<&str> = report["findings"].as_array().unwrap().iter().map(|f| f["code"].as_str().unwrap()).collect();
    assert!(!codes.iter().any(|c| ["lost_message", "recipient_gone", "member_missed"].contains(c)), "{report:#}");
    // A member's copy removed by hand is found, and named.
    std::fs::remove_file(org.path(&format!("agents/planner/inbox/cur/{id}.json")))
        .or_else(|_| std::fs::remove_file(org.path(&format!("agents/planner/inbox/new/{id}.json"))))
        .unwrap();
    let report = fsck(&org);
    let missed: Vec<&Value> =
        report["findings"].as_array().unwrap().iter().filter(|f| f["code"] == "member_missed").collect();
    assert_eq!(missed.len(), 1, "{report:#}");
    assert!(missed[0]["message"].as_str().unwrap().contains("of planner"), "{report:#}");
}

#[test]
fn a_member_named_twice_gets_the_message_once() {
    let org = org_with_engineering();
    let id = "20260101T000000000Z-human-twice";
    let mut v: Value = serde_json::from_slice(&message_bytes(id, "human", "x", "hello")).unwrap();
    v["to"] = serde_json::json!(["planner", "@engineering", "planner"]);
    org.drop_outbox("human", &format!("{id}.json"), serde_json::to_vec(&v).unwrap());
    let report = org.step();
    assert_eq!(copies(&org, "planner", id), 1);
    assert_eq!(copies(&org, "coder_01", id), 1);
    let delivered_to_planner = std::fs::read_to_string(org.path("org/state/events.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"delivered\"") && l.contains(id) && l.contains("\"to\":\"planner\""))
        .count();
    assert_eq!(delivered_to_planner, 1, "{report:#}");
    assert_eq!(fsck(&org)["ok"], true);
}

#[test]
fn to_everyone_reaches_exactly_the_agents_the_sender_may_write_to() {
    let org = TestOrg::new();
    let reach: Vec<String> = org.lemming_ok(&["--json", "inspect", "manager"]).json()["can_reach"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert!(reach.len() >= 3, "{reach:?}");
    let id = org.send_from("manager", "*", "all hands");
    org.step();
    for agent in org.agent_folders() {
        let want = usize::from(reach.contains(&agent));
        assert_eq!(copies(&org, &agent, &id), want, "{agent} (the chart lets manager reach {reach:?})");
    }
    assert!(dead_of(&org, "manager", &id).is_empty(), "`*` never bounces: {:#?}", org.dead());
    assert!(!inbox(&org, "manager").iter().any(|m| m["kind"] == "bounce"), "no bounce");
    assert_eq!(fsck(&org)["ok"], true);

    // A sender who can reach nobody: refused, with the reason.
    org.edit("agents/hr/resume.toml", "send_to = [\"manager\"]", "send_to = []");
    org.lemming(&["send", "--from", "hr", "*", "anyone?"]).fails_with(1).stderr_has(&["reaches nobody", "nobody"]);
    let lonely = "20260101T000000000Z-hr-lonely";
    org.drop_outbox("hr", &format!("{lonely}.json"), message_bytes(lonely, "hr", "*", "anyone?"));
    org.step();
    let dead = dead_of(&org, "hr", lonely);
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert_eq!(dead[0].1["reason"], "no_recipient");
}

#[test]
fn an_unknown_group_is_refused_whole_and_the_bounce_lists_the_groups() {
    let org = org_with_engineering();
    let out = org.lemming(&["send", "@nope", "hi"]).fails_with(1);
    out.stderr_has(&["unknown group `@nope` (known: @engineering)", "human may write to:"]);
    // An unknown name lists the agents and the groups.
    org.lemming(&["send", "cfo", "hi"]).fails_with(1).stderr_has(&[
        "unknown agent `cfo` (known: coder_01, hr, human, janitor, manager, planner; groups: @engineering; or \"*\"",
    ]);

    let id = "20260101T000000000Z-human-nope";
    let mut v: Value = serde_json::from_slice(&message_bytes(id, "human", "x", "hi")).unwrap();
    v["to"] = serde_json::json!(["manager", "@nope"]);
    org.drop_outbox("human", &format!("{id}.json"), serde_json::to_vec(&v).unwrap());
    org.step();
    assert_eq!(copies(&org, "manager", id), 0, "the whole message is refused");
    let dead = dead_of(&org, "human", id);
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert_eq!(dead[0].1["reason"], "unknown_group");
    let bounce = inbox(&org, "human").into_iter().find(|m| m["reply_to"] == id).expect("a bounce");
    assert!(bounce["body"].as_str().unwrap().contains("(known: @engineering)"), "{bounce:#}");
}

#[test]
fn groups_in_send_to_and_read_from_are_their_members_and_agents_shows_membership() {
    let org = TestOrg::new();
    let toml = org.read("org/org.toml");
    org.write("org/org.toml", format!("{toml}\n[groups]\nleads = [\"manager\", \"planner\"]\n"));
    // hr may now write to planner through the group, and planner reads from it.
    org.edit("agents/hr/resume.toml", "send_to = [\"manager\"]", "send_to = [\"@leads\"]");
    org.edit(
        "agents/planner/resume.toml",
        "read_from = [\"manager\", \"coder_01\"]",
        "read_from = [\"manager\", \"coder_01\", \"hr\"]",
    );
    let hr = org.lemming_ok(&["--json", "inspect", "hr"]).json();
    assert_eq!(hr["send_to"], "@leads", "shown as written");
    assert_eq!(hr["can_reach"], serde_json::json!(["manager", "planner"]));
    let planner = org.lemming_ok(&["--json", "inspect", "planner"]).json();
    assert_eq!(planner["groups"], serde_json::json!(["leads"]));
    assert!(org.lemming_ok(&["inspect", "planner"]).stdout.contains("groups:     @leads"), "inspect shows groups");
    let agents = org.lemming_ok(&["--json", "agents"]).json();
    let groups = |name: &str| agents.as_array().unwrap().iter().find(|a| a["name"] == name).unwrap()["groups"].clone();
    assert_eq!(groups("manager"), serde_json::json!(["leads"]));
    assert_eq!(groups("hr"), serde_json::json!([]));
    assert!(org.lemming_ok(&["agents"]).stdout.contains("@leads"));

    // A change of the group applies on the next load, like any config change.
    org.edit("org/org.toml", "leads = [\"manager\", \"planner\"]", "leads = [\"manager\"]");
    let hr = org.lemming_ok(&["--json", "inspect", "hr"]).json();
    assert_eq!(hr["can_reach"], serde_json::json!(["manager"]));
}

#[test]
fn config_errors_name_the_file_the_line_and_the_fix() {
    let org = TestOrg::new();
    let toml = org.read("org/org.toml");
    let line = toml.lines().count() + 3;
    org.write("org/org.toml", format!("{toml}\n[groups]\nengineering = [\"planer\", \"coder_01\"]\n"));
    let out = org.lemming(&["validate"]).fails_with(1);
    out.stderr_has(&[
        &format!("org/org.toml:{line}:16"),
        "`planer` in group `engineering` is no agent (known: planner, ",
        "help: fix the name, remove it, or create agents/planer/resume.toml",
    ]);

    org.write("org/org.toml", format!("{toml}\n[groups]\nengineering = [\"planner\", \"coder_01\"]\n"));
    org.edit("agents/hr/resume.toml", "send_to = [\"manager\"]", "send_to = [\"manager\", \"@enginering\"]");
    let resume = org.read("agents/hr/resume.toml");
    let line = resume.lines().position(|l| l.starts_with("send_to")).unwrap() + 1;
    let out = org.lemming(&["validate"]).fails_with(1);
    out.stderr_has(&[
        &format!("agents/hr/resume.toml:{line}:"),
        "unknown group `@enginering` in `send_to` (known: @engineering)",
        "help: use a group defined under [groups] in org/org.toml",
    ]);
}

/// The receipts in `agent`'s inbox that answer message `id`.
fn receipts(org: &TestOrg, agent: &str, id: &str) -> Vec<Value> {
    inbox(org, agent).into_iter().filter(|m| m["kind"] == "receipt" && m["reply_to"] == id).collect()
}

#[test]
fn a_message_sent_with_ack_brings_back_exactly_one_receipt_also_after_a_crash() {
    // No crash, then a crash at each point of the turn that consumes it, and
    // inside each of its group commits (between making files and moving any).
    let mut points: Vec<Option<String>> = vec![None];
    points.extend(["journaled", "effects", "consumed", "routed_again"].map(|p| Some(p.to_string())));
    points.extend((1..=6).map(|n| Some(format!("batch_renamed:{n}"))));
    for point in points {
        let point = point.as_deref();
        let org = TestOrg::new();
        let id = org.lemming_ok(&["send", "--ack", "manager", "please confirm"]).stdout.trim().to_string();
        let sent = read_json(&org.path(&format!("agents/human/outbox/new/{id}.json")));
        assert_eq!(sent["ack_required"], true);
        if let Some(point) = point {
            let out = run(org.command(&["step"]).env("LEMMING_CRASH_AT", point));
            // A turn has fewer group commits than the last points name: then it ends well.
            let crashed = out.signal == Some(libc::SIGABRT);
            assert!(crashed || (point.starts_with("batch_renamed") && out.code == Some(0)), "{point}: no crash\n{out}");
        }
        org.step();
        org.step();
        let got = receipts(&org, "human", &id);
        assert_eq!(got.len(), 1, "{point:?}: {got:#?}");
        let r = &got[0];
        assert_eq!((r["from"].as_str(), r["thread"].as_str()), (Some("lemming"), Some(id.as_str())), "{point:?}");
        let body = r["body"].as_str().unwrap();
        assert!(body.starts_with(&format!("manager read your message {id} on turn ")), "{point:?}: {body}");
        assert_eq!(copies(&org, "manager", &id), 1, "{point:?}");
        assert_eq!(fsck(&org)["ok"], true, "{point:?}");
    }
}

#[test]
fn no_receipt_without_ack_nor_for_a_poisoned_message() {
    let org = TestOrg::new();
    let id = org.send("manager", "no receipt wanted");
    org.step();
    assert!(receipts(&org, "human", &id).is_empty());

    // A message the reader fails on until it is poison: dead, and no receipt.
    org.script("manager", "[[reply]]\nagent = \"manager\"\ntext = 'not json at all'\n");
    let id = org.lemming_ok(&["send", "--ack", "manager", "poison me"]).stdout.trim().to_string();
    for _ in 0..4 {
        org.step();
    }
    assert!(org.dead().keys().any(|d| d.starts_with(&format!("{id}-poison-manager"))), "{:#?}", org.dead());
    assert!(receipts(&org, "human", &id).is_empty());
}

#[test]
fn a_person_reading_with_inbox_sends_one_receipt_and_peek_sends_none() {
    let org = TestOrg::new();
    let id = org.lemming_ok(&["send", "--from", "manager", "--ack", "human", "read me"]).stdout.trim().to_string();
    // Route it without running the manager again afterwards: one step delivers it to human.
    org.step();
    assert_eq!(org.ids("human", "inbox", "new"), [id.as_str()]);

    org.lemming_ok(&["inbox", "--peek"]);
    assert!(receipts(&org, "manager", &id).is_empty(), "--peek reads nothing");
    assert_eq!(org.ids("human", "inbox", "new"), [id.as_str()]);

    org.lemming_ok(&["inbox"]);
    assert_eq!(org.ids("human", "inbox", "cur"), [id.as_str()]);
    let got = receipts(&org, "manager", &id);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(got[0]["body"].as_str().unwrap().starts_with(&format!("human read your message {id}")), "{got:#?}");
    org.lemming_ok(&["inbox", "--all"]);
    assert_eq!(receipts(&org, "manager", &id).len(), 1, "reading again sends no second receipt");
    assert_eq!(fsck(&org)["ok"], true);
}

/// A different message reusing an id already delivered to a member, sent to
/// the group, is a duplicate: refused with a dead letter and a bounce, never
/// dropped because the group's name is no inbox.
#[test]
fn a_group_message_reusing_a_delivered_id_is_refused_as_a_duplicate() {
    let org = org_with_engineering();
    let id = org.send("@engineering", "first");
    org.step();
    assert_eq!(copies(&org, "coder_01", &id), 1);
    let mut again = read_json(&org.path(&format!("agents/human/outbox/sent/{id}.json")));
    again["body"] = "other content under the same id".into();
    org.drop_outbox("human", "again.json", serde_json::to_vec(&again).unwrap());
    org.step();
    let duplicates: Vec<_> = org.dead().into_values().filter(|why| why["reason"] == "duplicate_id").collect();
    assert_eq!(duplicates.len(), 1, "{duplicates:?}");
    let bodies: Vec<Value> = inbox(&org, "coder_01").into_iter().map(|m| m["body"].clone()).collect();
    assert!(!bodies.contains(&"other content under the same id".into()), "{bodies:?}");
    assert_eq!(fsck(&org)["ok"], true, "{}", fsck(&org));
}

/// `*` means an agent whose resume is broken right now too: the message waits
/// until it is fixed, rather than leave that agent out for good.
#[test]
fn to_everyone_waits_for_an_agent_whose_resume_is_broken() {
    let org = TestOrg::new();
    let id = org.send_from("manager", "*", "hello all");
    let good = org.read("agents/planner/resume.toml");
    org.write("agents/planner/resume.toml", format!("{good}\njunk = [\n"));
    org.step();
    assert_eq!(copies(&org, "planner", &id), 0);
    assert!(dead_of(&org, "manager", &id).is_empty(), "held, not refused");
    org.write("agents/planner/resume.toml", good);
    org.step();
    for agent in ["planner", "coder_01", "hr", "janitor", "human"] {
        assert_eq!(copies(&org, agent, &id), 1, "{agent}");
    }
}

/// `search --to` finds mail that reached an agent through a group.
#[test]
fn search_to_an_agent_finds_mail_it_got_through_a_group() {
    let org = org_with_engineering();
    let id = org.send("@engineering", "the zebrafish standup");
    org.step();
    let hits = org.lemming_ok(&["search", "--json", "--to", "coder_01", "zebrafish"]).json();
    let hits = hits["hits"].as_array().unwrap().clone();
    assert!(hits.iter().any(|h| h["id"] == id.as_str() && h["agent"] == "coder_01"), "{hits:?}");
}

/// Replay checks a message to a group against whom it reached on its turn,
/// not against the group as it is now.
#[test]
fn replay_of_a_message_to_a_group_holds_after_the_group_changes() {
    let org = TestOrg::new();
    let toml = org.read("org/org.toml");
    org.write("org/org.toml", format!("{toml}\n[groups]\neng = [\"planner\", \"coder_01\"]\n"));
    org.send("manager", "please tell @eng about it");
    org.step();
    let to_eng = |agent: &str| inbox(&org, agent).iter().any(|m| m["to"] == "@eng");
    assert!(to_eng("planner") && to_eng("coder_01") && !to_eng("hr"), "the mock forwards to the group");
    org.lemming_ok(&["replay", "1"]);
    org.write("org/org.toml", format!("{toml}\n[groups]\neng = [\"planner\", \"coder_01\", \"hr\"]\n"));
    org.lemming_ok(&["replay", "1"]);
    // A copy lost since is still named.
    let lost = org.ids("coder_01", "inbox", "new").into_iter().chain(org.ids("coder_01", "inbox", "cur"));
    for id in lost {
        let sub = if org.path(&format!("agents/coder_01/inbox/new/{id}.json")).exists() { "new" } else { "cur" };
        let path = org.path(&format!("agents/coder_01/inbox/{sub}/{id}.json"));
        if read_json(&path)["to"] == "@eng" {
            std::fs::remove_file(path).unwrap();
        }
    }
    org.lemming(&["replay", "1"]).fails_with(1);
}

/// A message still waiting in an outbox is part of its thread.
#[test]
fn thread_shows_a_message_still_waiting_in_an_outbox() {
    let org = TestOrg::new();
    let id = org.send("manager", "not routed yet");
    let out = org.lemming_ok(&["thread", &id]);
    assert!(out.stdout.contains("not routed yet"), "{out}");
    let v = org.lemming_ok(&["--json", "thread", &id]).json();
    assert_eq!(v["messages"][0]["places"][0]["state"], "pending", "{v}");
}
