//! Tests of the search index: what it finds, where, and how it recovers from
//! a missing, corrupt or stale database.

use super::*;
use crate::mailbox::MailStore;

fn org() -> (tempfile::TempDir, PathBuf) {
    let (d, root) = crate::testing::new_org();
    let mb = Layout::new(&root).mail();
    for a in agent_folders(&Layout::new(&root)) {
        mb.ensure(&a).unwrap();
    }
    (d, root)
}

fn msg(id: &str, from: &str, to: &str, body: &str) -> Message {
    crate::testing::message(id, from, &[to], body)
}

/// Delivers `m` into `to`'s unread mail, as routing would.
fn deliver(root: &Path, m: &Message, to: &str) {
    let mb = Layout::new(root).mail();
    let mut b = fsx::Batch::new();
    assert!(mb.deliver(&mut b, to, m));
    mb.commit(b).unwrap();
}

fn q(text: &str) -> Query {
    Query { text: text.into(), limit: 20, ..Query::default() }
}

fn ids(f: &Found) -> Vec<(String, String, Option<String>)> {
    f.hits.iter().map(|h| (h.id.clone(), h.mailbox.to_string(), h.agent.clone())).collect()
}

/// The rows of the index in use for message `id`, as `mailbox` keys, read
/// straight from the database (no catch-up).
fn rows(root: &Path, id: &str) -> Vec<String> {
    let path = current(&Layout::new(root)).unwrap().expect("an index");
    let c = Connection::open(path).unwrap();
    let mut s = c.prepare("SELECT mailbox FROM messages WHERE id = ?1 ORDER BY mailbox").unwrap();
    let v = s.query_map([id], |r| r.get(0)).unwrap().collect::<Result<Vec<String>, _>>().unwrap();
    v
}

/// An org with 300 messages of filler and one with a rare word, read by the manager.
fn haystack(root: &Path) {
    for i in 0..300 {
        let m = msg(&format!("m{i:04}"), "human", "manager", &format!("status report number {i} about the launch"));
        deliver(root, &m, "manager");
    }
    let needle = msg("needle", "planner", "hr", "the budget mentions a zeppelin for the party");
    deliver(root, &needle, "hr");
    let mb = Layout::new(root).mail();
    mb.consume_now("hr", "needle").unwrap();
}

#[test]
fn the_events_are_read_to_their_last_whole_line() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("events.jsonl");
    assert_eq!(events_end(&p).unwrap(), 0);
    assert_eq!(events_since(&p, 0).unwrap(), Some((String::new(), 0)));
    assert_eq!(events_since(&p, 5).unwrap(), None);
    let long = "x".repeat(100_000);
    fs::write(&p, format!("a\n{long}\ntorn")).unwrap();
    assert_eq!(events_end(&p).unwrap(), 100_003);
    let (lines, end) = events_since(&p, 2).unwrap().unwrap();
    assert_eq!((lines.len(), end), (100_001, 100_003));
    assert_eq!(events_since(&p, 100_008).unwrap(), None, "shorter than the offset");
    fs::write(&p, "no newline at all").unwrap();
    assert_eq!(events_end(&p).unwrap(), 0);
}

#[test]
fn plain_words_are_quoted_terms_and_an_empty_query_is_refused() {
    assert_eq!(q("don't a-b \"x").fts().unwrap(), r#""don't" "a-b" """x""#);
    assert!(matches!(q("  ").fts(), Err(IndexError::EmptyQuery)));
    assert_eq!(Query { raw: true, ..q("a OR b*") }.fts().unwrap(), "a OR b*");
}

#[test]
fn a_snippet_keeps_its_marks_apart_and_is_plain_as_a_string() {
    let s = Snippet::parse("the \u{E000}budget\u{E001} is \u{E000}big\u{E001}");
    assert_eq!(
        s.pieces,
        [("the ".into(), false), ("budget".into(), true), (" is ".into(), false), ("big".into(), true)]
    );
    assert_eq!(s.plain(), "the budget is big");
    assert_eq!(serde_json::to_string(&s).unwrap(), "\"the budget is big\"");
}

#[test]
fn search_builds_the_index_and_finds_a_rare_word_in_its_mailbox_with_a_snippet() {
    let (_d, root) = org();
    haystack(&root);
    let layout = Layout::new(&root);
    let found = search(&layout, &q("zeppelin")).unwrap();
    assert!(found.rebuilt.is_some(), "the first search builds the index");
    assert_eq!(ids(&found), [("needle".into(), "inbox".into(), Some("hr".into()))]);
    let s = &found.hits[0].snippet;
    assert!(s.pieces.contains(&("zeppelin".into(), true)), "{s:?}");
    assert!(s.plain().contains("mentions a zeppelin for"), "{s:?}");
    // The second search uses it as it is.
    let again = search(&layout, &q("zeppelin")).unwrap();
    assert!(again.rebuilt.is_none());
    assert_eq!(ids(&again), ids(&found));
    // Ranked: the message that says "launch" twice comes first.
    // Put there by hand, with no event: only a rebuild sees it.
    deliver(&root, &msg("twice", "human", "manager", "launch launch"), "manager");
    assert!(search(&layout, &q("launch")).unwrap().hits.iter().all(|h| h.id != "twice"));
    rebuild(&layout, &mut |_| {}).unwrap();
    let found = search(&layout, &q("launch")).unwrap();
    assert_eq!(found.hits[0].id, "twice");
    assert_eq!(found.hits.len(), 20, "the limit");
}

#[test]
fn a_missing_or_garbage_index_is_rebuilt_with_the_same_results() {
    let (_d, root) = org();
    haystack(&root);
    let layout = Layout::new(&root);
    let first = ids(&search(&layout, &q("zeppelin")).unwrap());
    let db = current(&layout).unwrap().unwrap();
    fs::remove_file(&db).unwrap();
    let found = search(&layout, &q("zeppelin")).unwrap();
    assert!(found.rebuilt.as_deref().is_some_and(|w| w.contains("missing")), "{:?}", found.rebuilt);
    assert_eq!(ids(&found), first);

    let db = current(&layout).unwrap().unwrap();
    fs::write(&db, vec![0x5a; 8192]).unwrap();
    let found = search(&layout, &q("zeppelin")).unwrap();
    assert!(found.rebuilt.is_some());
    assert_eq!(ids(&found), first);
    // The old databases are gone; one is left, named by the pointer.
    let left: Vec<_> = fs::read_dir(layout.index_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".db"))
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");

    // A pointer that names something else entirely is no index.
    fs::write(layout.index_dir().join(POINTER), "../../../etc/passwd\n").unwrap();
    let found = search(&layout, &q("zeppelin")).unwrap();
    assert!(found.rebuilt.is_some());
    assert_eq!(ids(&found), first);
}

#[test]
fn an_index_of_another_schema_or_ahead_of_the_events_is_rebuilt() {
    let (_d, root) = org();
    haystack(&root);
    let layout = Layout::new(&root);
    search(&layout, &q("zeppelin")).unwrap();
    let db = current(&layout).unwrap().unwrap();
    Connection::open(&db).unwrap().execute("UPDATE meta SET value = '999' WHERE key = 'schema'", []).unwrap();
    let found = search(&layout, &q("zeppelin")).unwrap();
    assert!(found.rebuilt.as_deref().is_some_and(|w| w.contains("schema 999")), "{:?}", found.rebuilt);

    let db = current(&layout).unwrap().unwrap();
    Connection::open(&db).unwrap().execute("UPDATE meta SET value = '100000' WHERE key = 'offset'", []).unwrap();
    let found = search(&layout, &q("zeppelin")).unwrap();
    assert!(found.rebuilt.as_deref().is_some_and(|w| w.contains("events file")), "{:?}", found.rebuilt);
    assert_eq!(found.hits.len(), 1);
}

#[test]
fn rows_are_keyed_by_mailbox_and_a_hit_whose_file_is_gone_is_not_shown() {
    let (_d, root) = org();
    let layout = Layout::new(&root);
    let m = msg("m1", "human", "manager", "quarterly numbers");
    deliver(&root, &m, "manager");
    assert_eq!(
        ids(&search(&layout, &q("quarterly")).unwrap()),
        [("m1".into(), "inbox".into(), Some("manager".into()))]
    );
    // Read: moved to cur, no update needed.
    let mb = layout.mail();
    mb.consume_now("manager", "m1").unwrap();
    assert_eq!(search(&layout, &q("quarterly")).unwrap().hits.len(), 1);
    // Gone from the files: gone from the results, though the row stays.
    fs::remove_file(mb.message_path("manager", Folder::Read, "m1")).unwrap();
    assert!(search(&layout, &q("quarterly")).unwrap().hits.is_empty());
    assert_eq!(rows(&root, "m1"), ["inbox:manager"]);
}

#[test]
fn filters_by_sender_recipient_and_thread() {
    let (_d, root) = org();
    let layout = Layout::new(&root);
    deliver(&root, &msg("a1", "human", "manager", "apple pie"), "manager");
    deliver(&root, &msg("a2", "planner", "hr", "apple tart"), "hr");
    deliver(&root, &Message { thread: "t9".into(), ..msg("a3", "planner", "manager", "apple juice") }, "manager");
    let all = |qq: Query| {
        let mut v: Vec<String> = search(&layout, &qq).unwrap().hits.into_iter().map(|h| h.id).collect();
        v.sort();
        v
    };
    assert_eq!(all(q("apple")), ["a1", "a2", "a3"]);
    assert_eq!(all(Query { from: Some("planner".into()), ..q("apple") }), ["a2", "a3"]);
    assert_eq!(all(Query { to: Some("manager".into()), ..q("apple") }), ["a1", "a3"]);
    // A whole name only: `man` is nobody.
    assert!(all(Query { to: Some("man".into()), ..q("apple") }).is_empty());
    assert_eq!(all(Query { thread: Some("t9".into()), ..q("apple") }), ["a3"]);
}

#[test]
fn raw_fts_syntax_works_and_a_bad_query_says_how_to_quote() {
    let (_d, root) = org();
    let layout = Layout::new(&root);
    deliver(&root, &msg("a1", "human", "manager", "apple pie"), "manager");
    deliver(&root, &msg("a2", "human", "manager", "pear tart"), "manager");
    let found = search(&layout, &Query { raw: true, ..q("appl* OR tart") }).unwrap();
    assert_eq!(found.hits.len(), 2);
    let e = search(&layout, &Query { raw: true, ..q("apple AND (") }).unwrap_err();
    assert!(matches!(e, IndexError::Query { .. }), "{e:?}");
    assert!(e.to_string().contains("double quotes"), "{e}");
    // Without --fts the same words are plain terms.
    assert!(search(&layout, &q("apple AND (")).unwrap().hits.is_empty());
    // A word of punctuation alone holds no term: it is left out.
    assert_eq!(search(&layout, &q("apple (")).unwrap().hits.len(), 1);
    assert_eq!(search(&layout, &q("apple")).unwrap().hits.len(), 1);
}

#[tokio::test]
async fn a_turn_indexes_what_it_delivered_and_send_indexes_the_outbox_copy() {
    let (_d, root) = org();
    let layout = Layout::new(&root);
    rebuild(&layout, &mut |_| {}).unwrap();
    let org = crate::org::Org::load(&root).unwrap();
    let sent = crate::send::send(&org, "human", "manager", "ship the gizmo", Default::default()).unwrap();
    // Indexed by the send, before any turn.
    assert_eq!(rows(&root, &sent.id), ["outbox:human"]);
    crate::daemon::step(&root, 1, |_, _| {}).await.unwrap();
    // Indexed by the turn: no search ran in between.
    assert_eq!(rows(&root, &sent.id), ["inbox:manager", "outbox:human"]);
    let drift = compare(&layout).unwrap().unwrap();
    assert!(drift.missing.is_empty() && drift.gone.is_empty(), "{drift:?}");
}

#[test]
fn a_dead_letter_is_indexed_and_the_copy_it_came_from_is_dropped() {
    let (_d, root) = org();
    let layout = Layout::new(&root);
    rebuild(&layout, &mut |_| {}).unwrap();
    let org = crate::org::Org::load(&root).unwrap();
    let sent = crate::send::send(&org, "human", "manager", "a walrus note", Default::default()).unwrap();
    // The outbox entry is refused by hand, as a router would: it becomes a dead letter.
    let mb = layout.mail();
    fs::write(mb.letter_path(&sent.id), sent.to_bytes()).unwrap();
    fs::remove_file(mb.message_path("human", Folder::Pending, &sent.id)).unwrap();
    let why = crate::mailbox::DeadReason {
        id: sent.id.clone(),
        reason: crate::mailbox::Reason::parse("denied"),
        detail: "no".into(),
        mailbox: "human".into(),
        to: vec!["manager".into()],
        turn: 0,
        at: chrono::Utc::now(),
    };
    crate::events::append_person(&layout, 0, chrono::Utc::now(), vec![EventKind::from(&why)]);
    let found = search(&layout, &q("walrus")).unwrap();
    assert_eq!(ids(&found), [(sent.id.clone(), "dead".into(), None)]);
    assert_eq!(found.hits[0].letter.as_deref(), Some(sent.id.as_str()));
    assert_eq!(rows(&root, &sent.id), ["dead"]);
}

#[test]
fn compare_finds_messages_missing_from_the_index_and_rows_whose_file_is_gone() {
    let (_d, root) = org();
    let layout = Layout::new(&root);
    assert_eq!(compare(&layout).unwrap(), None, "no index: nothing to compare");
    deliver(&root, &msg("a1", "human", "manager", "x"), "manager");
    rebuild(&layout, &mut |_| {}).unwrap();
    assert_eq!(compare(&layout).unwrap(), Some(Drift::default()));
    deliver(&root, &msg("a2", "human", "hr", "y"), "hr");
    fs::remove_file(layout.mail().message_path("manager", Folder::Unread, "a1")).unwrap();
    let before: Vec<_> = fs::read_dir(layout.index_dir()).unwrap().map(|e| e.unwrap().file_name()).collect();
    let drift = compare(&layout).unwrap().unwrap();
    assert_eq!(drift.missing, ["inbox:hr a2"]);
    assert_eq!(drift.gone, ["inbox:manager a1"]);
    // Read-only: no file was added to the index folder.
    let after: Vec<_> = fs::read_dir(layout.index_dir()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(before, after);
    let db = current(&layout).unwrap().unwrap();
    fs::write(&db, b"garbage").unwrap();
    assert!(compare(&layout).unwrap().unwrap().unreadable.is_some());
}

#[test]
fn a_rebuild_reports_its_progress_to_the_end() {
    let (_d, root) = org();
    for i in 0..10 {
        deliver(&root, &msg(&format!("p{i}"), "human", "manager", "x"), "manager");
    }
    let mut seen = Vec::new();
    let r = rebuild(&Layout::new(&root), &mut |p| seen.push(p)).unwrap();
    assert_eq!(r.messages, 10);
    assert_eq!(seen.first(), Some(&Progress { done: 0, total: 10 }));
    assert_eq!(seen.last(), Some(&Progress { done: 10, total: 10 }));
}

#[test]
fn rebuilds_sends_and_searches_at_once_leave_one_usable_index() {
    let (_d, root) = org();
    haystack(&root);
    let layout = Layout::new(&root);
    rebuild(&layout, &mut |_| {}).unwrap();
    let org = crate::org::Org::load(&root).unwrap();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| rebuild(&layout, &mut |_| {}).unwrap());
        }
        s.spawn(|| {
            for i in 0..20 {
                crate::send::send(&org, "human", "manager", &format!("okapi {i}"), Default::default()).unwrap();
            }
        });
        s.spawn(|| {
            for _ in 0..5 {
                assert_eq!(search(&layout, &q("zeppelin")).unwrap().hits.len(), 1);
            }
        });
    });
    assert_eq!(search(&layout, &q("zeppelin")).unwrap().hits.len(), 1);
    // Sends that landed in a database a rebuild then replaced are found after the next rebuild.
    rebuild(&layout, &mut |_| {}).unwrap();
    assert_eq!(search(&layout, &Query { limit: 100, ..q("okapi") }).unwrap().hits.len(), 20);
    let dbs = fs::read_dir(layout.index_dir()).unwrap().filter(|e| {
        let n = e.as_ref().unwrap().file_name();
        n.to_string_lossy().ends_with(".db")
    });
    assert_eq!(dbs.count(), 1);
}

#[tokio::test]
async fn a_broken_index_fails_neither_a_send_nor_a_turn_and_the_next_search_mends_it() {
    let (_d, root) = org();
    let layout = Layout::new(&root);
    rebuild(&layout, &mut |_| {}).unwrap();
    let db = current(&layout).unwrap().unwrap();
    fs::write(&db, vec![0x42; 4096]).unwrap();
    let org = crate::org::Org::load(&root).unwrap();
    let sent = crate::send::send(&org, "human", "manager", "a capybara memo", Default::default()).unwrap();
    let reports = crate::daemon::step(&root, 1, |_, _| {}).await.unwrap();
    assert_eq!(reports[0].delivered, 2, "the message and the manager's reply: {:?}", reports[0]);
    let found = search(&layout, &q("capybara")).unwrap();
    assert!(found.rebuilt.as_deref().is_some_and(|w| w.contains("corrupt")), "{:?}", found.rebuilt);
    let mut places: Vec<_> = ids(&found).into_iter().filter(|h| h.0 == sent.id).collect();
    places.sort();
    assert_eq!(
        places,
        [
            (sent.id.clone(), "inbox".into(), Some("manager".into())),
            (sent.id.clone(), "outbox".into(), Some("human".into()))
        ]
    );
}
