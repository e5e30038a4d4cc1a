//! `lemming search` and `lemming reindex` on the real binary: a word among
//! 10,000 messages, an index deleted or overwritten with garbage, mail
//! indexed by a turn and by `send` without a reindex, the filters, and fsck's
//! note about an index that differs from the files.

use std::fs;

use serde_json::Value;

use crate::fixture::{message_bytes, TestOrg};

/// The database the index's pointer file names.
fn index_db(org: &TestOrg) -> std::path::PathBuf {
    let name = org.read("org/state/index/current");
    org.path(&format!("org/state/index/{}", name.trim()))
}

/// `lemming --json search ARGS`: the hits, as (mailbox, agent, id).
fn hits(org: &TestOrg, args: &[&str]) -> (Vec<(String, String, String)>, Value) {
    let mut all = vec!["--json", "search"];
    all.extend_from_slice(args);
    let out = org.lemming_ok(&all);
    let v = out.json();
    let list = v["hits"]
        .as_array()
        .unwrap_or_else(|| panic!("no hits list\n{out}"))
        .iter()
        .map(|h| {
            let s = |k: &str| h[k].as_str().unwrap_or("").to_string();
            (s("mailbox"), s("agent"), s("id"))
        })
        .collect();
    (list, v)
}

#[test]
fn a_word_in_one_message_among_10000_is_found_in_its_mailbox_also_after_the_index_is_deleted_or_corrupt() {
    let org = TestOrg::new();
    // 10,000 message files, written as delivered mail: most in the manager's
    // read mail and the planner's unread mail, one in hr's read mail.
    let words = ["launch", "budget", "status", "review", "meeting", "report", "plan", "draft"];
    for i in 0..9_999 {
        let (agent, sub) = if i % 2 == 0 { ("manager", "cur") } else { ("planner", "new") };
        let id = format!("20260101T000000000Z-human-{i:06}");
        let body = format!("{} {} number {i} for the team", words[i % 8], words[(i / 8) % 8]);
        org.write(&format!("agents/{agent}/inbox/{sub}/{id}.json"), message_bytes(&id, "human", agent, &body));
    }
    let needle = "20260101T000000000Z-planner-needle";
    let body = "the offsite needs a zeppelin and a brass band";
    org.write(&format!("agents/hr/inbox/cur/{needle}.json"), message_bytes(needle, "planner", "hr", body));

    let out = org.lemming_ok(&["search", "zeppelin"]);
    assert!(out.stderr.contains("rebuilt"), "the first search builds the index\n{out}");
    assert!(out.stdout.contains(needle) && out.stdout.contains("hr inbox"), "{out}");
    assert!(out.stdout.contains("needs a zeppelin and"), "a snippet\n{out}");
    assert!(!out.stdout.contains('\x1b'), "no marks when stdout is not a terminal\n{out}");

    let (first, v) = hits(&org, &["zeppelin"]);
    assert_eq!(first, [("inbox".to_string(), "hr".to_string(), needle.to_string())]);
    let h = &v["hits"][0];
    assert_eq!((h["from"].as_str(), h["to"][0].as_str()), (Some("planner"), Some("hr")));
    let snippet = h["snippet"].as_str().unwrap();
    assert!(snippet.contains("zeppelin") && !snippet.contains('\u{E000}'), "plain in JSON: {snippet:?}");
    // Common words rank and stop at the limit.
    assert_eq!(hits(&org, &["launch", "--limit", "7"]).0.len(), 7);

    // Deleted: the next search rebuilds it and finds the same.
    fs::remove_file(index_db(&org)).unwrap();
    let out = org.lemming_ok(&["--json", "search", "zeppelin"]);
    assert!(out.stderr.contains("rebuilt"), "{out}");
    assert_eq!(hits(&org, &["zeppelin"]).0, first);
    assert_eq!(hits(&org, &["launch", "--limit", "7"]).0.len(), 7);

    // Overwritten with garbage: the same.
    fs::write(index_db(&org), vec![0xa5u8; 64 << 10]).unwrap();
    let out = org.lemming_ok(&["--json", "search", "zeppelin"]);
    assert!(out.stderr.contains("rebuilt"), "{out}");
    assert_eq!(out.json()["hits"].as_array().unwrap().len(), 1, "{out}");
    assert_eq!(hits(&org, &["zeppelin"]).0, first);

    // Every file of the index folder garbage, the pointer included: the same.
    for e in fs::read_dir(org.path("org/state/index")).unwrap() {
        fs::write(e.unwrap().path(), b"\x00garbage\xff").unwrap();
    }
    assert_eq!(hits(&org, &["zeppelin"]).0, first);

    // Gone from the files: gone from the results.
    fs::remove_file(org.path(&format!("agents/hr/inbox/cur/{needle}.json"))).unwrap();
    assert!(hits(&org, &["zeppelin"]).0.is_empty());
}

#[test]
fn mail_sent_and_delivered_by_a_step_is_found_without_a_reindex_and_fsck_agrees() {
    let org = TestOrg::new();
    // Build the (empty) index first.
    assert!(hits(&org, &["anything"]).0.is_empty());
    let id = org.send("manager", "please order the pelican food");
    // Found before any turn: the send indexed its outbox copy.
    assert_eq!(hits(&org, &["pelican"]).0, [("outbox".to_string(), "human".to_string(), id.clone())]);
    org.step();
    // fsck reads the index as the turn left it: nothing is missing.
    let fsck = org.lemming_ok(&["--json", "fsck"]).json();
    let stale: Vec<&Value> =
        fsck["findings"].as_array().unwrap().iter().filter(|f| f["code"] == "stale_index").collect();
    assert!(stale.is_empty(), "the turn indexed what it delivered: {stale:?}");
    let found = hits(&org, &["pelican", "--to", "manager"]).0;
    assert!(found.contains(&("inbox".to_string(), "manager".to_string(), id.clone())), "{found:?}");
    assert!(found.contains(&("outbox".to_string(), "human".to_string(), id.clone())), "{found:?}");
}

#[test]
fn from_to_and_thread_filter_the_hits() {
    let org = TestOrg::new();
    let put = |agent: &str, id: &str, from: &str, body: &str| {
        org.write(&format!("agents/{agent}/inbox/cur/{id}.json"), message_bytes(id, from, agent, body));
    };
    put("manager", "m-a", "human", "walrus one");
    put("manager", "m-b", "planner", "walrus two");
    put("hr", "m-c", "planner", "walrus three");
    org.lemming_ok(&["reindex"]);
    let ids = |args: &[&str]| {
        let mut v: Vec<String> = hits(&org, args).0.into_iter().map(|h| h.2).collect();
        v.sort();
        v
    };
    assert_eq!(ids(&["walrus"]), ["m-a", "m-b", "m-c"]);
    assert_eq!(ids(&["walrus", "--from", "planner"]), ["m-b", "m-c"]);
    assert_eq!(ids(&["walrus", "--to", "manager"]), ["m-a", "m-b"]);
    assert_eq!(ids(&["walrus", "--from", "planner", "--to", "hr"]), ["m-c"]);
    // message_bytes makes each message its own thread.
    assert_eq!(ids(&["walrus", "--thread", "m-b"]), ["m-b"]);
}

#[test]
fn a_bad_fts_query_is_a_clear_error_and_plain_words_never_are() {
    let org = TestOrg::new();
    org.write("agents/manager/inbox/cur/m-a.json", message_bytes("m-a", "human", "manager", "don't panic (yet)"));
    let out = org.lemming(&["search", "--fts", "panic AND ("]).fails_with(1);
    out.stderr_has(&["not valid FTS5 syntax", "double quotes", "--fts"]);
    assert_eq!(hits(&org, &["don't", "(yet)"]).0.len(), 1);
    assert_eq!(hits(&org, &["--fts", "pan* NOT calm"]).0.len(), 1);
    org.lemming(&["search", "  "]).fails_with(1).stderr_has(&["empty"]);
}

#[test]
fn fsck_notes_a_stale_index_and_reindex_clears_it() {
    let org = TestOrg::new();
    org.write("agents/manager/inbox/cur/m-a.json", message_bytes("m-a", "human", "manager", "alpha"));
    let out = org.lemming_ok(&["--json", "reindex"]);
    assert_eq!(out.json()["messages"], 1, "{out}");
    // Behind the index's back.
    org.write("agents/hr/inbox/new/m-b.json", message_bytes("m-b", "human", "hr", "beta"));
    let out = org.lemming_ok(&["fsck"]);
    assert!(out.stdout.contains("stale_index") && out.stdout.contains("lemming reindex"), "{out}");
    assert!(out.stdout.contains("inbox:hr m-b"), "{out}");
    let before = crate::fixture::snapshot(&org.path("org/state/index"));
    org.lemming_ok(&["fsck"]);
    assert_eq!(crate::fixture::snapshot(&org.path("org/state/index")), before, "fsck wrote to the index");
    org.lemming_ok(&["reindex"]);
    let out = org.lemming_ok(&["fsck"]);
    assert!(!out.stdout.contains("stale_index"), "{out}");
    assert_eq!(hits(&org, &["beta"]).0.len(), 1);
}

#[test]
fn a_snippet_is_one_line_with_the_body_s_control_characters_escaped() {
    let org = TestOrg::new();
    let body = "first line\nthe \x1b[31m marmot \x1b[0m line\rand\ttabs";
    org.write("agents/manager/inbox/cur/m-a.json", message_bytes("m-a", "human", "manager", body));
    let out = org.lemming_ok(&["search", "marmot"]);
    assert!(!out.stdout.contains('\x1b') && !out.stdout.contains('\r'), "{out}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "a heading and a one-line snippet\n{out}");
    assert!(lines[1].contains("first line the \\x1b[31m marmot \\x1b[0m line and tabs"), "{out}");
}
