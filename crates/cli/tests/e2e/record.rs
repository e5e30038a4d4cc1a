//! The record: read mail archived after `archive_after_turns`, `thread` across
//! every mailbox, and `export` to Markdown, JSON and HTML.

use std::fs;

use serde_json::Value;

use crate::fixture::{run, TestOrg};

/// An org that archives read mail one turn after it was written, and a
/// three-agent conversation run on the mock: the human asks the manager, who
/// answers and forwards the request to the planner, who answers the manager;
/// then the human answers the manager's answer. Returns the org and the ids
/// (asked, answer, forward, planner's answer, human's reply).
fn conversation() -> (TestOrg, [String; 5]) {
    let org = TestOrg::new();
    let toml = org.read("org/org.toml");
    org.write("org/org.toml", format!("{toml}\narchive_after_turns = 1\n"));
    let asked = org.send("manager", "please plan the launch with @planner");
    let t1 = org.step();
    assert_eq!(t1["archived"], 1, "the manager read the question, written on turn 0: {t1:#}");
    let answer = org.ids("human", "inbox", "new").pop().expect("the manager answered the human");
    let forward = org.ids("planner", "inbox", "new").pop().expect("the manager forwarded to the planner");
    let t2 = org.step();
    assert_eq!(t2["archived"], 1, "the planner read the forward: {t2:#}");
    let planned = org.ids("manager", "inbox", "new").pop().expect("the planner answered the manager");
    let out = org.lemming_ok(&["send", "--reply-to", &answer, "manager", "thanks, go ahead"]);
    let reply = out.stdout.trim().to_string();
    org.step();
    org.step();
    (org, [asked, answer, forward, planned, reply])
}

#[test]
fn read_mail_is_archived_and_still_shown_by_inbox_all_and_fsck_is_clean() {
    let (org, [asked, answer, forward, planned, reply]) = conversation();
    // Nothing is deleted: read mail moved from cur to archive.
    let archived = org.ids("manager", "inbox", "archive");
    for id in [&asked, &planned, &reply] {
        assert!(archived.contains(id), "{id} not archived: {archived:?}");
    }
    assert!(org.ids("manager", "inbox", "cur").is_empty());
    assert_eq!(org.ids("planner", "inbox", "archive"), std::slice::from_ref(&forward));

    let out = org.lemming_ok(&["inbox", "manager", "--all", "--json", "--peek"]);
    let shown = out.json();
    let first = shown.as_array().unwrap().iter().find(|m| m["id"] == asked.as_str()).expect("archived mail shown");
    assert_eq!((first["archived"].clone(), first["unread"].clone()), (Value::Bool(true), Value::Bool(false)));
    let text = org.lemming_ok(&["inbox", "manager", "--all", "--peek"]).stdout;
    assert!(text.contains("[archived]"), "{text}");
    let unread = org.lemming_ok(&["inbox", "manager", "--peek"]);
    assert!(!unread.stdout.contains(&asked), "archived mail is read mail\n{unread}");

    org.lemming_ok(&["fsck"]);

    // A person's read mail is archived too, and a reply to it keeps its thread.
    org.lemming_ok(&["inbox"]);
    org.step();
    assert!(org.ids("human", "inbox", "archive").contains(&answer), "{:?}", org.ids("human", "inbox", "archive"));
    let id = org.lemming_ok(&["send", "--reply-to", &answer, "manager", "one more thing"]).stdout.trim().to_string();
    let sent = crate::fixture::read_json(&org.path(&format!("agents/human/outbox/new/{id}.json")));
    assert_eq!(sent["thread"], asked.as_str(), "the thread of the archived message it answers");
}

/// A crash before the archive's moves, or after them but before the turn
/// commits: the repeated turn leaves each message in exactly one folder, as
/// an uninterrupted turn does, and fsck finds nothing wrong.
#[test]
fn a_crash_around_the_archive_loses_and_duplicates_nothing() {
    for point in ["consumed", "archived"] {
        let org = TestOrg::new();
        let toml = org.read("org/org.toml");
        org.write("org/org.toml", format!("{toml}\narchive_after_turns = 1\n"));
        let asked = org.send("manager", "please plan the launch with @planner");
        let crashed = run(org.command(&["step"]).env("LEMMING_CRASH_AT", point));
        assert_ne!(crashed.code, Some(0), "{point}: the step did not crash\n{crashed}");
        let t = org.step();
        assert_eq!(t["turn"], 1, "{point}: the turn is repeated: {t:#}");
        // The question sits in the manager's archive only; every message in one place, once.
        let folders = |agent: &str| -> Vec<String> {
            ["new", "cur", "archive"].iter().flat_map(|f| org.ids(agent, "inbox", f)).collect()
        };
        assert_eq!(org.ids("manager", "inbox", "archive"), std::slice::from_ref(&asked), "{point}: {t:#}");
        for agent in ["manager", "planner", "human"] {
            let mut ids = folders(agent);
            let n = ids.len();
            ids.sort();
            ids.dedup();
            assert_eq!(ids.len(), n, "{point}: {agent} holds a message twice: {ids:?}");
        }
        assert_eq!(folders("human").len(), 1, "{point}: one answer, not two");
        assert_eq!(folders("planner").len(), 1, "{point}: one forward, not two");
        org.lemming_ok(&["fsck"]);
    }
}

#[test]
fn a_repeated_delivery_of_an_archived_id_is_a_no_op_and_another_message_under_it_is_refused() {
    let (org, [asked, ..]) = conversation();
    let sent = org.read(&format!("agents/human/outbox/sent/{asked}.json"));
    let dead_before = org.dead().len();
    // The same message again, as after a repeated turn: nothing is delivered twice.
    org.drop_outbox("human", &format!("{asked}.json"), &sent);
    let t = org.step();
    assert_eq!(t["delivered"], 0, "{t:#}");
    assert!(!org.ids("manager", "inbox", "new").contains(&asked));
    assert_eq!(org.dead().len(), dead_before);
    // Another message under the archived id is a duplicate: refused, with a dead letter.
    let other = sent.replace("please plan the launch", "something else");
    org.drop_outbox("human", &format!("{asked}.json"), &other);
    org.step();
    assert!(!org.ids("manager", "inbox", "new").contains(&asked));
    let dead = org.dead();
    assert!(dead.values().any(|why| why["reason"] == "duplicate_id"), "{dead:#?}");
    org.lemming_ok(&["fsck"]);
}

#[test]
fn thread_shows_a_three_agent_conversation_in_reply_order_including_archived_mail() {
    let (org, [asked, answer, forward, planned, reply]) = conversation();
    let expected = [(&asked, 0), (&answer, 1), (&reply, 2), (&forward, 0), (&planned, 1)];
    for by in [&asked, &planned] {
        let v = org.lemming_ok(&["thread", by, "--json"]).json();
        assert_eq!(v["thread"], asked.as_str());
        let shape: Vec<(String, u64)> = v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["id"].as_str().unwrap().to_string(), m["depth"].as_u64().unwrap()))
            .collect();
        let want: Vec<(String, u64)> = expected.iter().map(|(id, d)| (id.to_string(), *d)).collect();
        assert_eq!(shape, want);
        let from: Vec<&str> = v["messages"].as_array().unwrap().iter().map(|m| m["from"].as_str().unwrap()).collect();
        assert_eq!(from, ["human", "manager", "human", "manager", "planner"]);
        let first = &v["messages"][0];
        assert_eq!(first["parent"], Value::Null);
        assert_eq!(v["messages"][1]["parent"], asked.as_str());
        let places = first["places"].as_array().unwrap();
        assert!(places.contains(&serde_json::json!({"agent": "manager", "state": "archived"})), "{places:?}");
        assert!(places.contains(&serde_json::json!({"agent": "human", "state": "sent"})), "{places:?}");
    }
    // The text: in the same order, replies indented under what they answer, archived mail tagged.
    let text = org.lemming_ok(&["thread", &answer]).stdout;
    let at = |id: &str| text.find(&format!("id: {id}")).unwrap_or_else(|| panic!("{id} not shown:\n{text}"));
    let pos: Vec<usize> = expected.iter().map(|(id, _)| at(id)).collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "not in reply order:\n{text}");
    let line_of = |id: &str| text[..at(id)].lines().last().unwrap_or("").to_string();
    assert_eq!(line_of(&reply), " ".repeat(4 * 2 + 2), "depth 2 is indented twice:\n{text}");
    assert_eq!(line_of(&asked), "  ", "depth 0 is not indented:\n{text}");
    let head = text.lines().next().unwrap();
    assert!(head.contains("[archived]") && head.contains("from human to manager"), "{text}");
    org.lemming(&["thread", "no-such-thread"]).fails_with(1).stderr_has(&["no-such-thread"]);
}

#[test]
fn export_writes_a_thread_an_agent_or_the_org_in_three_formats() {
    let (org, [asked, answer, forward, planned, reply]) = conversation();
    let nasty = "</style><script>alert(1)</script> & <img src=x>";
    let bad = org.lemming_ok(&["send", "--reply-to", &answer, "manager", nasty]).stdout.trim().to_string();
    org.step();

    let out = org.lemming_ok(&["export", "--thread", &answer, "--format", "json"]);
    let v = out.json();
    assert_eq!(v["format"], "lemming-export/1");
    let ids: Vec<&str> = v["messages"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [&asked, &answer, &reply, &bad, &forward, &planned]);

    let all = org.lemming_ok(&["export", "--all", "--format", "json"]).json();
    let all_ids: Vec<&str> = all["messages"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    let mut once = all_ids.clone();
    once.sort();
    once.dedup();
    assert_eq!(once.len(), all_ids.len(), "every message once");
    assert!(all_ids.contains(&bad.as_str()) && all_ids.contains(&asked.as_str()));
    let planner = org.lemming_ok(&["export", "--agent", "planner", "--format", "json"]).json();
    let planner_ids: Vec<&str> =
        planner["messages"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(planner_ids, [&forward, &planned], "what the planner received and sent");

    let md = org.lemming_ok(&["export", "--thread", &asked, "--format", "md"]).stdout;
    assert!(md.starts_with(&format!("# Thread {asked}")), "{md}");
    assert!(md.contains("please plan the launch"), "{md}");

    let file = org.tmp.path().join("thread.html");
    let f = file.to_str().unwrap();
    let done = org.lemming_ok(&["export", "--thread", &asked, "--format", "html", "-o", f]);
    assert!(done.stdout.is_empty(), "{done}");
    let html = fs::read_to_string(&file).unwrap();
    assert!(html.contains("&lt;/style&gt;&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;img src=x&gt;"), "{html}");
    assert!(!html.contains("<script") && !html.contains("<img"), "{html}");
    assert_eq!(html.matches("</style>").count(), 1);
    assert!(!html.contains("http://") && !html.contains("https://") && !html.contains("<link"), "{html}");

    // An existing file is kept unless --force.
    org.lemming(&["export", "--all", "--format", "md", "-o", f]).fails_with(1).stderr_has(&["exists", "--force"]);
    assert_eq!(fs::read_to_string(&file).unwrap(), html);
    org.lemming_ok(&["export", "--all", "--format", "md", "-o", f, "--force"]);
    assert!(fs::read_to_string(&file).unwrap().starts_with("# Every message of the org"));

    // Exactly one of --thread, --agent and --all.
    org.lemming(&["export", "--format", "md"]).fails_with(2);
    org.lemming(&["export", "--all", "--agent", "planner", "--format", "md"]).fails_with(2);
    org.lemming(&["export", "--agent", "nobody", "--format", "md"]).fails_with(1).stderr_has(&["nobody"]);
}
