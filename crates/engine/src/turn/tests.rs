//! Each phase of a turn on a real org in a temp folder (the default org, with
//! the mock provider, or a scripted one where a test needs a failure).

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::call::{Called, Calls};
use super::*;
use crate::clock::Sources;
use crate::events::{Event, EventKind, SkipReason};
use crate::ledger::Ledger;
use crate::mailbox::MailStore;
use crate::message::{self, Kind, Message, To};
use crate::send::{self, SendOptions};
use crate::testing::{edit, new_org};

fn t0() -> DateTime<Utc> {
    "2026-01-02T03:04:05.006Z".parse().unwrap()
}

/// Makes `agent` answer from `org/script.toml` (see the script provider).
fn script(root: &Path, agent: &str, script: &str) {
    let models = root.join("org/models.toml");
    let mut text = std::fs::read_to_string(&models).unwrap();
    text.push_str(
        "\n[providers.s]\nkind = \"script\"\nscript = \"org/script.toml\"\n\n[models.scripted]\nprovider = \"s\"\n",
    );
    std::fs::write(models, text).unwrap();
    std::fs::write(root.join("org/script.toml"), script).unwrap();
    edit(root, &format!("agents/{agent}/resume.toml"), "model = \"default\"", "model = \"scripted\"");
}

fn load(root: &Path) -> Org {
    let org = Org::load(root).unwrap();
    assert!(org.problems().is_empty(), "{:?}", org.problems());
    org
}

fn send_as_human(root: &Path, to: &str, body: &str, src: &Sources) -> String {
    let opts = SendOptions { sources: src.clone(), ..SendOptions::default() };
    send::send(&load(root), "human", to, body, opts).unwrap().id
}

async fn step(root: &Path, src: &Sources) -> TurnReport {
    let org = load(root);
    let registry = Arc::new(org.registry());
    run_keeping(&org, &registry, src, None, &mut Unjournaled::default()).await.unwrap()
}

/// Runs a turn's phases up to and including pick; returns the agents picked.
fn pick_after_route(org: &Org, src: &Sources) -> (Vec<String>, TurnReport, Vec<Event>) {
    let mut t = Turn::prepare(org, src).unwrap();
    route(org, Post::local(&t.mb), t.turn, &*src.clock, &mut t.report, &mut t.ev, &mut t.sick).unwrap();
    let ledger = Ledger::load(&org.layout.ledger()).unwrap();
    let registry = org.registry();
    let picked = pick_all(&mut t, &registry, &ledger, &HashSet::new());
    (picked, t.report, t.ev.all().unwrap())
}

/// Picks every agent of the turn, as the call phase does one at a time, and
/// commits the dead letters of the pick; returns the agents picked.
fn pick_all(
    t: &mut Turn<'_>,
    registry: &lemming_provider::Registry,
    ledger: &Ledger,
    answered: &HashSet<String>,
) -> Vec<String> {
    let mut due = pick::Due::new(t.org, registry, ledger, answered);
    let mut picked = Vec::new();
    while let Some(job) = t.next_job(&mut due).unwrap() {
        picked.push(job.agent);
    }
    due.take_housekeeping().commit(&t.org.layout.root).unwrap();
    picked
}

/// Calls every agent due on the turn, in one part; returns what the journal
/// takes, and the most prompts that existed at once.
async fn call_all(t: &mut Turn<'_>, registry: &Arc<lemming_provider::Registry>, ledger: &Ledger) -> (Called, usize) {
    let answered = HashSet::new();
    let mut due = pick::Due::new(t.org, registry, ledger, &answered);
    let mut calls = Calls::new(None);
    let fresh = t.call(registry, &mut due, &mut calls, usize::MAX).await;
    assert!(calls.done());
    let called = Called { fresh, housekeeping: due.take_housekeeping(), failed: calls.failed() };
    (called, due.most_prompts())
}

fn skipped_events(events: &[Event]) -> Vec<(String, SkipReason)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Skipped { agent, reason, .. } => Some((agent.clone(), *reason)),
            _ => None,
        })
        .collect()
}

#[test]
fn pick_calls_an_agent_with_mail_and_not_one_without() {
    let (_d, root) = new_org();
    let src = Sources::fixed(t0());
    send_as_human(&root, "manager", "hello", &src);
    let (picked, report, events) = pick_after_route(&load(&root), &src);
    // planner, hr, coder_01 and janitor wake on mail and have none: not called, not skipped.
    assert_eq!(picked, ["manager"]);
    assert!(report.skipped.is_empty() && skipped_events(&events).is_empty(), "{report:?}");
}

#[test]
fn pick_skips_an_agent_out_of_credits_or_whose_prompt_costs_more_than_it_has() {
    for (credits, reason) in [("0.0", SkipReason::OutOfCredits), ("0.000001", SkipReason::PromptOverCredits)] {
        let (_d, root) = new_org();
        edit(&root, "agents/manager/resume.toml", "credits = 100.0", &format!("credits = {credits}"));
        let src = Sources::fixed(t0());
        send_as_human(&root, "manager", "hello", &src);
        let (picked, report, events) = pick_after_route(&load(&root), &src);
        assert!(picked.is_empty(), "{credits}: {picked:?}");
        assert_eq!(report.skipped, [("manager".to_string(), reason)]);
        assert_eq!(skipped_events(&events), report.skipped);
        // The mail stays unread for when it is topped up.
        let mb = crate::org::Layout::new(&root).mail();
        assert_eq!(mb.unread("manager").unwrap().0.len(), 1);
    }
}

#[test]
fn pick_skips_every_due_agent_once_the_org_budget_is_spent() {
    let (_d, root) = new_org();
    edit(&root, "org/org.toml", "# budget = 1000.0", "budget = 0.0");
    let src = Sources::fixed(t0());
    send_as_human(&root, "manager", "hello", &src);
    let (picked, report, _) = pick_after_route(&load(&root), &src);
    assert!(picked.is_empty());
    assert_eq!(report.skipped, [("manager".to_string(), SkipReason::OrgBudgetSpent)]);
}

#[test]
fn pick_does_not_call_an_agent_whose_reply_is_already_at_hand() {
    let (_d, root) = new_org();
    let src = Sources::fixed(t0());
    send_as_human(&root, "manager", "hello", &src);
    let org = load(&root);
    let mut t = Turn::prepare(&org, &src).unwrap();
    route(&org, Post::local(&t.mb), t.turn, &*src.clock, &mut t.report, &mut t.ev, &mut t.sick).unwrap();
    let ledger = Ledger::load(&org.layout.ledger()).unwrap();
    assert!(pick_all(&mut t, &org.registry(), &ledger, &HashSet::from(["manager".to_string()])).is_empty());
}

/// A scripted manager whose reply is not JSON (a failure that counts against the mail).
const UNUSABLE: &str = "[[reply]]\nagent = \"manager\"\ntext = \"not json\"\n";
/// A scripted manager whose provider is down (a failure that does not).
const DOWN: &str = "[[reply]]\nagent = \"manager\"\nerror = \"connection refused\"\n";

#[tokio::test]
async fn apply_counts_attempts_and_sends_the_mail_to_dead_as_poison_after_max_attempts() {
    let (_d, root) = new_org();
    script(&root, "manager", UNUSABLE);
    edit(&root, "org/org.toml", "max_attempts = 3", "max_attempts = 2");
    let src = Sources::fixed(t0());
    let id = send_as_human(&root, "manager", "hello", &src);
    let mb = crate::org::Layout::new(&root).mail();

    let first = step(&root, &src).await;
    assert_eq!(first.failed.len(), 1, "{first:?}");
    let a = &mb.attempts("manager")[&id];
    assert_eq!((a.count, a.last_turn), (1, 1));
    assert!(a.last_error.contains("the raw reply is in the agent's activity log"), "{}", a.last_error);

    let second = step(&root, &src).await;
    assert_eq!(second.dead, 1, "{second:?}");
    assert!(mb.attempts("manager").is_empty(), "the poisoned message's attempts are dropped");
    assert!(mb.unread("manager").unwrap().0.is_empty());
    let poison = mb.dead_letters().unwrap();
    assert_eq!(poison.len(), 1);
    assert_eq!((poison[0].id.as_str(), poison[0].reason.as_str()), (format!("{id}-poison-manager").as_str(), "poison"));
    assert_eq!(poison[0].at, t0(), "the dead letter's time is the turn's clock");
}

#[tokio::test]
async fn apply_does_not_count_a_provider_that_is_down_against_the_mail() {
    let (_d, root) = new_org();
    script(&root, "manager", DOWN);
    edit(&root, "org/org.toml", "max_attempts = 3", "max_attempts = 1");
    let src = Sources::fixed(t0());
    send_as_human(&root, "manager", "hello", &src);
    for _ in 0..3 {
        let r = step(&root, &src).await;
        assert_eq!((r.failed.len(), r.dead), (1, 0), "{r:?}");
    }
    let mb = crate::org::Layout::new(&root).mail();
    assert!(mb.attempts("manager").is_empty());
    assert_eq!(mb.unread("manager").unwrap().0.len(), 1, "the mail waits for the provider");
}

#[tokio::test]
async fn apply_of_a_replayed_reply_charges_nothing_twice() {
    let (_d, root) = new_org();
    let src = Sources::fixed(t0());
    send_as_human(&root, "manager", "hello", &src);
    let org = load(&root);
    let registry = Arc::new(org.registry());
    // The first try of turn 1, up to its effects (a crash comes before consume).
    let mut t = Turn::prepare(&org, &src).unwrap();
    route(&org, Post::local(&t.mb), t.turn, &*src.clock, &mut t.report, &mut t.ev, &mut t.sick).unwrap();
    let ledger = Ledger::load(&org.layout.ledger()).unwrap();
    let (called, _) = call_all(&mut t, &registry, &ledger).await;
    let replies = t.journal(Default::default(), vec![], called, &mut Unjournaled::default()).unwrap();
    t.apply(&ledger, &replies, &Default::default(), &apply::Logs::Now(&root)).unwrap();
    let cost = t.report.cost;
    assert!(cost > 0.0);

    // The repeated turn replays the journaled reply.
    let again = step(&root, &src).await;
    assert_eq!((again.turn, again.replayed.clone(), again.cost), (1, vec!["manager".to_string()], 0.0), "{again:?}");
    let ledger = std::fs::read_to_string(org.layout.ledger()).unwrap();
    assert_eq!(ledger.lines().filter(|l| l.contains("\"charge\"")).count(), 1, "{ledger}");
}

#[tokio::test]
async fn consume_moves_only_the_mail_of_used_replies() {
    let (_d, root) = new_org();
    let src = Sources::fixed(t0());
    let id = send_as_human(&root, "manager", "hello", &src);
    let r = step(&root, &src).await;
    assert_eq!(r.ran, ["manager"]);
    let mb = crate::org::Layout::new(&root).mail();
    assert!(mb.unread("manager").unwrap().0.is_empty());
    assert_eq!(mb.read_mail("manager").unwrap().iter().map(|m| m.id.clone()).collect::<Vec<_>>(), [id]);
}

#[tokio::test]
async fn commit_keeps_the_events_in_turn_json_and_appends_them_once_after_it() {
    let (_d, root) = new_org();
    let src = Sources::fixed(t0());
    send_as_human(&root, "manager", "hello", &src);
    let mut rx = src.bus.subscribe();
    let report = step(&root, &src).await;
    let layout = crate::org::Layout::new(&root);
    let (turn, staged) = Journal::new(&layout).last_turn_and_events().unwrap();
    assert_eq!(turn, 1);
    let file: Vec<Event> = std::fs::read_to_string(layout.events()).unwrap().lines().filter_map(Event::parse).collect();
    assert_eq!(file, staged, "the events file holds exactly the events turn.json kept");
    // The subscriber saw them live, in order, numbered from 1.
    let mut live = Vec::new();
    while let Ok(e) = rx.try_recv() {
        live.push(e);
    }
    assert_eq!(live.remove(0).kind, EventKind::TurnStarted {});
    assert_eq!(live, file);
    assert_eq!(live.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=live.len() as u64).collect::<Vec<_>>());
    assert_eq!(live.last().unwrap().kind, EventKind::Turn(report));
    // The next turn continues the numbers and appends nothing of turn 1 again.
    step(&root, &src).await;
    let after: Vec<Event> =
        std::fs::read_to_string(layout.events()).unwrap().lines().filter_map(Event::parse).collect();
    assert_eq!(after[..file.len()], file[..]);
    assert_eq!(after.iter().filter(|e| e.turn == 1).count(), file.len());
    let seqs: Vec<u64> = after.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=after.len() as u64).collect::<Vec<_>>());
}

#[tokio::test]
async fn mail_sent_while_the_turn_runs_is_delivered_and_counted_as_arrived() {
    let (_d, root) = new_org();
    let src = Sources::fixed(t0());
    send_as_human(&root, "manager", "first", &src);
    // A second message, kept aside: manager's model call puts it in human's outbox,
    // as a person's `send` would while the turn runs.
    let outbox = root.join("agents/human/outbox/new");
    let before: HashSet<_> = std::fs::read_dir(&outbox).unwrap().map(|e| e.unwrap().file_name()).collect();
    let second = send_as_human(&root, "manager", "second", &src);
    let file =
        std::fs::read_dir(&outbox).unwrap().map(|e| e.unwrap().file_name()).find(|n| !before.contains(n)).unwrap();
    std::fs::create_dir(root.join("aside")).unwrap();
    std::fs::rename(outbox.join(&file), root.join("aside").join(&file)).unwrap();
    let models = root.join("org/models.toml");
    let mut text = std::fs::read_to_string(&models).unwrap();
    text.push_str(
        r#"
[providers.c]
kind = "command"
program = "sh"
args = ["-c", '''mv ../../../aside/* ../../human/outbox/new/ 2>/dev/null; cat >/dev/null; echo '{"messages":[{"to":"human","body":"on it"}]}' ''']

[models.cmd]
provider = "c"
"#,
    );
    std::fs::write(models, text).unwrap();
    edit(&root, "agents/manager/resume.toml", "model = \"default\"", "model = \"cmd\"");

    let r = step(&root, &src).await;
    assert_eq!(r.ran, ["manager"], "{r:?}");
    // The reply to human and the second message: only the second arrived from outside.
    assert_eq!((r.delivered, r.arrived), (3, 1), "{r:?}");
    let mb = crate::org::Layout::new(&root).mail();
    let unread: Vec<String> = mb.unread("manager").unwrap().0.iter().map(|m| m.id.clone()).collect();
    assert_eq!(unread, [second]);

    // A turn whose only deliveries are its own replies counts none.
    send_as_human(&root, "manager", "third", &src);
    let r = step(&root, &src).await;
    assert_eq!((r.ran.len(), r.arrived), (1, 0), "{r:?}");
}

/// Every file under the agents' mail folders and memory and `org/state/dead/`,
/// and the ledger, by path relative to the org: what a turn writes.
fn written(root: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut std::collections::BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if rel.ends_with("/logs") || rel.contains("/tmp") {
                continue;
            }
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(root, &root.join("agents"), &mut out);
    walk(root, &root.join("org/state/dead"), &mut out);
    out.insert("org/state/ledger.jsonl".into(), std::fs::read(root.join("org/state/ledger.jsonl")).unwrap());
    out
}

fn event_lines(root: &Path) -> Vec<String> {
    std::fs::read_to_string(root.join("org/state/events.jsonl")).unwrap().lines().map(String::from).collect()
}

fn copy_org(from: &Path, to: &Path) {
    // `cp -a` keeps the hard links between outboxes and inboxes.
    let ok = std::process::Command::new("cp").arg("-a").arg(from).arg(to).status().unwrap().success();
    assert!(ok, "cp -a {} {}", from.display(), to.display());
}

/// A committed turn, run again on a copy of the org from before it with the
/// same clock and ids, writes byte for byte the same messages, dead letters,
/// memory and ledger lines: from its journaled replies (no model is asked),
/// and from the model again (the mock answers the same). The clock is stopped
/// at a date far from today, so any time read from the system shows.
#[tokio::test]
async fn a_committed_turn_re_run_from_its_journal_writes_the_same_bytes() {
    let (d, root) = new_org();
    let src = Sources::fixed(t0());
    send_as_human(&root, "manager", "plan the launch @planner", &src);
    send_as_human(&root, "manager", "tidy up @janitor", &src);
    let first = step(&root, &src).await;
    assert_eq!(first.ran, ["manager"]);
    // Turn 2 also refuses a message (planner may not write to hr): a dead letter and a bounce.
    let refused = Message {
        id: "20260101T000000000Z-planner-refused".into(),
        from: "planner".into(),
        to: To(vec!["hr".into()]),
        subject: None,
        body: "psst @hr".into(),
        priority: message::Priority::Normal,
        reply_to: None,
        thread: "20260101T000000000Z-planner-refused".into(),
        created_at: t0(),
        turn: 1,
        ttl_turns: None,
        kind: Kind::Message,
        ack_required: false,
    };
    crate::org::Layout::new(&root).mail().send_now("planner", &refused).unwrap();
    let (replay, rerun) = (d.path().join("replay"), d.path().join("rerun"));
    copy_org(&root, &replay);
    copy_org(&root, &rerun);

    let t1 = t0() + chrono::Duration::seconds(61);
    let second = step(&root, &Sources::fixed(t1)).await;
    assert!(second.ran.len() >= 2 && second.dead == 1 && second.replayed.is_empty(), "{second:?}");
    let (want, want_events) = (written(&root), event_lines(&root));
    assert!(want.keys().any(|k| k.contains("-bounce")), "no bounce in {:#?}", want.keys());

    // From the journal: the replies of turn 2 are put back, as after a crash before its commit.
    let journal = "org/state/journal/2/records.jsonl";
    std::fs::create_dir_all(replay.join("org/state/journal/2")).unwrap();
    std::fs::copy(root.join(journal), replay.join(journal)).unwrap();
    let again = step(&replay, &Sources::fixed(t1)).await;
    assert_eq!(again.replayed, second.ran, "{again:?}");
    assert_eq!(written(&replay), want);
    let got_events = event_lines(&replay);
    assert_eq!(got_events.len(), want_events.len());
    // Only the turn report says that the replies were replayed.
    let n = want_events.len() - 1;
    assert_eq!(got_events[..n], want_events[..n]);
    let report = |line: &str| {
        let mut e = Event::parse(line).unwrap();
        if let EventKind::Turn(r) = &mut e.kind {
            r.replayed.clear();
        }
        e
    };
    assert_eq!(report(&got_events[n]), report(&want_events[n]));

    // From the model again.
    step(&rerun, &Sources::fixed(t1)).await;
    assert_eq!(written(&rerun), want);
    assert_eq!(event_lines(&rerun), want_events);
}

/// A subscriber sees a turn's `turn` event only once `turn.json` is written:
/// a try that cannot commit publishes what it did, but not that it committed.
#[tokio::test]
async fn the_turn_event_is_published_only_once_the_turn_is_committed() {
    let (_d, root) = new_org();
    let src = Sources::fixed(t0());
    send_as_human(&root, "manager", "hello", &src);
    let layout = crate::org::Layout::new(&root);
    // `turn.json` is a folder that is not empty: the turn cannot be committed.
    std::fs::create_dir_all(layout.turn_json().join("x")).unwrap();
    let mut rx = src.bus.subscribe();
    let org = load(&root);
    let registry = Arc::new(org.registry());
    let e = run_keeping(&org, &registry, &src, None, &mut Unjournaled::default()).await.unwrap_err();
    assert_eq!(e.path, layout.turn_json());
    let mut live = Vec::new();
    while let Ok(e) = rx.try_recv() {
        live.push(e.kind);
    }
    assert!(live.iter().any(|k| matches!(k, EventKind::Delivered { .. })), "{live:?}");
    assert!(!live.iter().any(|k| matches!(k, EventKind::Turn(_))), "a turn event for a turn not committed: {live:?}");

    std::fs::remove_dir_all(layout.turn_json()).unwrap();
    let report = step(&root, &src).await;
    let mut ends = Vec::new();
    while let Ok(e) = rx.try_recv() {
        if let EventKind::Turn(r) = e.kind {
            ends.push(r);
        }
    }
    assert_eq!(ends, [report]);
}

/// The unread `tool_result` messages of `agent`, by the call they answer.
fn results(root: &Path, agent: &str) -> std::collections::BTreeMap<String, serde_json::Value> {
    let mb = crate::org::Layout::new(root).mail();
    let (unread, _) = mb.unread(agent).unwrap();
    unread
        .into_iter()
        .filter(|m| m.kind == Kind::ToolResult)
        .map(|m| {
            assert_eq!(m.from, crate::name::ENGINE);
            (m.reply_to.clone().unwrap(), serde_json::from_str(&m.body).unwrap())
        })
        .collect()
}

#[tokio::test]
async fn each_tool_call_gets_one_visible_result_in_the_agents_inbox() {
    let (_d, root) = new_org();
    let src = Sources::fixed(t0());
    script(
        &root,
        "manager",
        r#"[[reply]]
agent = "manager"
text = '{"tool_calls":[{"id":"a","tool":"teleport","args":{}},{"id":"b","tool":"hire_agent","args":{"name":"x"}},{"tool":"recall","args":"q"}]}'
"#,
    );
    send_as_human(&root, "manager", "go", &src);
    let mut rx = src.bus.subscribe();
    let r = step(&root, &src).await;
    assert_eq!((r.ran.clone(), r.tool_calls), (vec!["manager".to_string()], 3), "{r:?}");
    let got = results(&root, "manager");
    assert_eq!(got.keys().collect::<Vec<_>>(), ["a", "b", "c2"], "{got:?}");
    assert_eq!((got["a"]["tool"].as_str(), got["a"]["ok"].as_bool()), (Some("teleport"), Some(false)));
    assert!(got["a"]["error"].as_str().unwrap().starts_with("unknown tool `teleport`"), "{got:?}");
    assert!(got["b"]["error"].as_str().unwrap().starts_with("not permitted"), "{got:?}");
    assert!(got["c2"]["error"].as_str().unwrap().contains("must be a JSON object"), "{got:?}");
    // Each call is an event and a line of the agent's activity log.
    let mut tools = Vec::new();
    while let Ok(e) = rx.try_recv() {
        if let EventKind::Tool { call, .. } = e.kind {
            tools.push((call.call, call.ok));
        }
    }
    assert_eq!(tools, [("a".to_string(), false), ("b".to_string(), false), ("c2".to_string(), false)]);
    let log = std::fs::read_to_string(crate::org::Layout::new(&root).activity_log("manager")).unwrap();
    let last: crate::activity::Activity = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert_eq!(last.tools.iter().map(|t| t.call.as_str()).collect::<Vec<_>>(), ["a", "b", "c2"]);
    // The results are the agent's mail: it is due on the next turn, and reads them.
    let next = step(&root, &src).await;
    assert_eq!(next.ran, ["manager"], "{next:?}");
}

/// Turn 1 of an org whose manager calls `write_file` (granted), run up to its
/// journal: the reply is journaled, nothing of it applied.
async fn journaled_write_call(root: &Path, src: &Sources) -> Org {
    script(
        root,
        "manager",
        r#"[[reply]]
agent = "manager"
text = '{"tool_calls":[{"id":"w","tool":"write_file","args":{"path":"out.txt","content":"once\n"}}]}'
"#,
    );
    assert!(std::fs::read_to_string(root.join("agents/manager/resume.toml")).unwrap().contains("\"write_file\""));
    send_as_human(root, "manager", "write it", src);
    let org = load(root);
    let registry = Arc::new(org.registry());
    let mut t = Turn::prepare(&org, src).unwrap();
    route(&org, Post::local(&t.mb), t.turn, &*src.clock, &mut t.report, &mut t.ev, &mut t.sick).unwrap();
    let ledger = Ledger::load(&org.layout.ledger()).unwrap();
    let (called, _) = call_all(&mut t, &registry, &ledger).await;
    t.journal(Default::default(), vec![], called, &mut Unjournaled::default()).unwrap();
    org
}

#[tokio::test]
async fn a_call_with_a_side_effect_started_before_a_crash_is_not_run_again() {
    let (_d, root) = new_org();
    let src = Sources::fixed(t0());
    let org = journaled_write_call(&root, &src).await;
    // The crashed try had started the call.
    let journal = Journal::new(&org.layout);
    let started = crate::journal::ToolLine { agent: "manager".into(), call: "w".into(), done: None };
    journal.append_tools(1, &[started]).unwrap();

    let r = step(&root, &src).await;
    assert_eq!((r.turn, r.replayed.clone(), r.tool_calls), (1, vec!["manager".to_string()], 1), "{r:?}");
    let got = results(&root, "manager");
    assert!(got["w"]["error"].as_str().unwrap().starts_with("interrupted"), "{got:?}");
    assert!(!org.layout.workspace("manager").join("out.txt").exists(), "the call ran again");
    let done: Vec<_> = std::fs::read_to_string(journal.tools_path(1))
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"done\""))
        .map(String::from)
        .collect();
    assert_eq!(done.len(), 1, "{done:?}");
}

#[tokio::test]
async fn a_call_done_before_a_crash_keeps_its_result_and_is_not_run_again() {
    let (_d, root) = new_org();
    let src = Sources::fixed(t0());
    let org = journaled_write_call(&root, &src).await;
    let journal = Journal::new(&org.layout);
    let outcome = crate::tools::Outcome::ok("write_file", "wrote 5 bytes to out.txt", false);
    let done = crate::journal::ToolDone { outcome: outcome.clone(), ms: 3 };
    let line = crate::journal::ToolLine { agent: "manager".into(), call: "w".into(), done: Some(done) };
    journal.append_tools(1, &[line]).unwrap();

    let r = step(&root, &src).await;
    assert_eq!(r.tool_calls, 1, "{r:?}");
    let got = results(&root, "manager");
    assert_eq!(got["w"], serde_json::to_value(&outcome).unwrap());
    assert!(!org.layout.workspace("manager").join("out.txt").exists(), "the call ran again");
    let text = std::fs::read_to_string(journal.tools_path(1)).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
}

#[tokio::test]
async fn calls_beyond_max_calls_are_not_run_and_the_log_says_so() {
    let (_d, root) = new_org();
    let src = Sources::fixed(t0());
    std::fs::write(root.join("org/org.toml"), "[tools]\nmax_calls = 2\n").unwrap();
    script(
        &root,
        "manager",
        r#"[[reply]]
agent = "manager"
text = '{"tool_calls":[{"id":"a","tool":"calculate","args":{"expression":"1+1"}},{"id":"b","tool":"calculate","args":{"expression":"2+2"}},{"id":"c","tool":"write_file","args":{"path":"no.txt","content":"x"}}]}'
"#,
    );
    edit(&root, "agents/manager/resume.toml", "\"recall\"]", "\"recall\", \"calculate\"]");
    send_as_human(&root, "manager", "go", &src);
    let r = step(&root, &src).await;
    assert_eq!(r.tool_calls, 2, "{r:?}");
    let got = results(&root, "manager");
    assert_eq!((got["a"]["output"].as_str(), got["b"]["output"].as_str()), (Some("2"), Some("4")), "{got:?}");
    assert!(!got.contains_key("c"), "{got:?}");
    assert!(!root.join("agents/manager/workspace/no.txt").exists());
    // The log says what was not run.
    let log = std::fs::read_to_string(crate::org::Layout::new(&root).activity_log("manager")).unwrap();
    let last: crate::activity::Activity = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert!(last.warnings.iter().any(|w| w.starts_with("1 of its 3 tool calls were not run")), "{:?}", last.warnings);
}

#[tokio::test]
async fn a_call_of_an_agent_whose_resume_broke_since_the_crash_gets_a_result_and_does_not_run() {
    let (_d, root) = new_org();
    let src = Sources::fixed(t0());
    journaled_write_call(&root, &src).await;
    // Before the turn is repeated, the manager's resume is broken: it is held, and its journaled call cannot run.
    edit(&root, "agents/manager/resume.toml", "title = \"Manager\"", "title = 7");
    let org = Org::load(&root).unwrap();
    assert!(org.broken.contains_key("manager"));
    let registry = Arc::new(org.registry());
    let r = run_keeping(&org, &registry, &src, None, &mut Unjournaled::default()).await.unwrap();
    assert_eq!(r.tool_calls, 1, "{r:?}");
    let got = results(&root, "manager");
    assert!(got["w"]["error"].as_str().unwrap().starts_with("not run: manager's resume is not valid"), "{got:?}");
    assert!(!root.join("agents/manager/workspace/out.txt").exists());
}

#[tokio::test]
async fn different_agents_calls_run_at_the_same_time() {
    let (d, root) = new_org();
    let src = Sources::fixed(t0());
    std::fs::write(root.join("org/org.toml"), "sandbox = \"none\"\n").unwrap();
    // coder_01 runs first and waits for a flag that only manager's call makes:
    // one after the other, it would give up before manager's call ran.
    let flag = d.path().join("flag");
    let wait = format!("for i in $(seq 100); do test -e {0} && exit 0; sleep 0.05; done; exit 1", flag.display());
    let make = format!("touch {}", flag.display());
    let call = |id: &str, script: &str| {
        serde_json::json!({"tool_calls": [{"id": id, "tool": "run_command", "args": {"program": "sh", "args": ["-c", script]}}]})
            .to_string()
    };
    script(
        &root,
        "manager",
        &format!(
            "[[reply]]\nagent = \"coder_01\"\ntext = '''{}'''\n\n[[reply]]\nagent = \"manager\"\ntext = '''{}'''\n",
            call("w", &wait),
            call("m", &make)
        ),
    );
    edit(&root, "agents/coder_01/resume.toml", "model = \"default\"", "model = \"scripted\"");
    for agent in ["manager", "coder_01"] {
        let rel = format!("agents/{agent}/resume.toml");
        edit(&root, &rel, "wake = \"mail\"", "wake = \"always\"");
        if agent == "manager" {
            edit(&root, &rel, "tools = [", "tools = [\"run_command\", ");
        }
    }
    edit(&root, "agents/manager/resume.toml", "tools = [", "commands = [\"sh -c\"]\ntools = [");
    edit(&root, "agents/coder_01/resume.toml", "commands = [\"ls\"", "commands = [\"sh -c\", \"ls\"");
    let r = step(&root, &src).await;
    assert_eq!(r.tool_calls, 2, "{r:?}");
    let got = results(&root, "coder_01");
    assert_eq!(got["w"]["ok"], true, "coder_01's call did not see manager's: {got:?}");
}

/// Replaces the org's agents with `n` workers (`worker_00`, ...) that wake on
/// every turn, each allowed to write to and read from `chart(i)` (a TOML list).
fn workers(root: &Path, n: usize, chart: impl Fn(usize) -> String) {
    std::fs::remove_dir_all(root.join("agents")).unwrap();
    for i in 0..n {
        let dir = root.join(format!("agents/worker_{i:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        let list = chart(i);
        let resume = format!(
            "name = \"worker_{i:02}\"\nmodel = \"default\"\n\n[schedule]\nwake = \"always\"\n\n\
             [permissions]\nsend_to = {list}\nread_from = {list}\n\n[budget]\ncredits = 100.0\n"
        );
        std::fs::write(dir.join("resume.toml"), resume).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_holds_no_more_prompts_at_once_than_max_parallel() {
    let (_d, root) = new_org();
    std::fs::write(root.join("org/org.toml"), "max_parallel = 2\n").unwrap();
    workers(&root, 12, |_| "[\"*\"]".to_string());
    let src = Sources::fixed(t0());
    let org = load(&root);
    let registry = Arc::new(org.registry());
    let mut t = Turn::prepare(&org, &src).unwrap();
    route(&org, Post::local(&t.mb), t.turn, &*src.clock, &mut t.report, &mut t.ev, &mut t.sick).unwrap();
    let ledger = Ledger::load(&org.layout.ledger()).unwrap();
    let (called, most_prompts) = call_all(&mut t, &registry, &ledger).await;
    assert_eq!(called.fresh.len(), 12, "every worker is called");
    assert!(called.fresh.iter().all(|r| r.outcome == crate::journal::Outcome::Ok));
    // Built all before the first call, there would be 12.
    assert!((1..=2).contains(&most_prompts), "{most_prompts} prompts at once");
}

#[test]
fn an_agent_that_may_write_to_everyone_of_a_large_org_is_told_so_and_its_schema_names_them_all() {
    let (_d, root) = new_org();
    let system = |root: &Path, agent: &str| {
        let org = load(root);
        let resume = &org.agents[&crate::name::AgentName::new(agent).unwrap()];
        let p = prompt_for(&org, &org.chart(), resume, 1, &mut Vec::new());
        (p.system, p.may)
    };
    let name = |i: usize| format!("worker_{i:02}");
    // Everyone may write to everyone.
    workers(&root, 12, |_| "[\"*\"]".to_string());
    let (text, may) = system(&root, "worker_00");
    assert!(
        text.contains(
            "You may write to: every agent of the org (11 of them, too many to list here); \
             write to one by its name, as in the `from` of its mail; or \"*\" (all of them at once)\n"
        ),
        "{text}"
    );
    assert!(!text.contains("worker_01"), "{text}");
    // The schema's `to` (the request's `may_send_to`) still names each one.
    let exact: Vec<String> = (1..12).map(name).chain(["*".to_string()]).collect();
    assert_eq!(may, exact);
    let limits = lemming_provider::contract::Limits { messages: 4, chars: 100 };
    let schema = lemming_provider::contract::schema(&may, &[], &[], limits);
    assert_eq!(schema.to_string().matches("worker_").count(), 11, "{schema}");
    // A few agents are named, even when they are everyone.
    workers(&root, 4, |_| "[\"*\"]".to_string());
    let (text, _) = system(&root, "worker_00");
    assert!(
        text.contains("You may write to: worker_01, worker_02, worker_03; or \"*\" (every agent above)\n"),
        "{text}"
    );
    // Many agents but not everyone: each one named.
    workers(&root, 12, |i| if i == 0 { "[\"*\"]".to_string() } else { "[\"worker_00\"]".to_string() });
    workers_except(&root, 11);
    let (text, _) = system(&root, "worker_00");
    let listed: Vec<String> = (1..11).map(name).collect();
    assert!(text.contains(&format!("You may write to: {}; or", listed.join(", "))), "{text}");
}

/// Makes the worker `i` read from nobody.
fn workers_except(root: &Path, i: usize) {
    let rel = format!("agents/worker_{i:02}/resume.toml");
    edit(root, &rel, "read_from = [\"worker_00\"]", "read_from = []");
}

#[tokio::test]
async fn mailbox_tmp_leftovers_are_swept_on_turn_one_and_every_tenth_turn_after() {
    let (_d, root) = new_org();
    let src = Sources::real();
    // The org as a daemon of this process keeps it: a turn is not its first here.
    let org = load(&root);
    let registry = Arc::new(org.registry());
    let step = |_: &Path, src: &Sources| {
        let (org, registry, src) = (&org, &registry, src.clone());
        async move { run_keeping(org, registry, &src, None, &mut Unjournaled::default()).await.unwrap() }
    };
    let tmp = root.join("agents/planner/outbox/tmp");
    // A writer that crashed: its pid is long gone.
    let leftover = |n: u32| {
        let p = tmp.join(format!("m{n}.json.{}.tmp", u32::MAX - n));
        std::fs::create_dir_all(&tmp).unwrap();
        std::fs::write(&p, "half").unwrap();
        p
    };
    let first = leftover(1);
    assert_eq!(step(&root, &src).await.turn, 1);
    assert!(!first.exists(), "turn 1 sweeps");
    let kept = leftover(2);
    for want in 2..=TMP_SWEEP_EVERY {
        assert_eq!(step(&root, &src).await.turn, want);
        assert!(kept.exists(), "turn {want} does not sweep");
    }
    assert_eq!(step(&root, &src).await.turn, TMP_SWEEP_EVERY + 1);
    assert!(!kept.exists(), "turn {} sweeps", TMP_SWEEP_EVERY + 1);
}

#[tokio::test]
async fn a_turn_that_repeats_an_interrupted_try_sweeps_the_tmp_folders() {
    let (_d, root) = new_org();
    let src = Sources::real();
    assert_eq!(step(&root, &src).await.turn, 1);
    // Another process's leftover.
    let p = root.join(format!("agents/planner/inbox/tmp/m.json.{}.tmp", u32::MAX - 7));
    std::fs::write(&p, "half").unwrap();
    assert_eq!(step(&root, &src).await.turn, 2);
    assert!(p.exists(), "turn 2 does not sweep");
    // A try of turn 3 journaled a line before it crashed (torn: no record).
    let org = load(&root);
    let journal = crate::journal::Journal::new(&org.layout);
    let records = journal.records_path(3);
    std::fs::create_dir_all(records.parent().unwrap()).unwrap();
    std::fs::write(&records, "{\"torn").unwrap();
    assert_eq!(step(&root, &src).await.turn, 3);
    assert!(!p.exists(), "the turn that repeats an interrupted try sweeps");
}

/// The replies' renames into place and the moves of the mail they read share
/// one sync: a turn of many agents in one part makes four group syncs (the
/// replies' files, then their renames with the moves, the deliveries, the
/// moves to `sent/`), where each step had its own before.
#[tokio::test]
async fn a_large_turn_syncs_the_replies_renames_with_the_read_mail_moves() {
    let (_d, root) = new_org();
    let n = crate::fsx::GROUP_SYNC_MIN + 8;
    workers(&root, n, |_| "[\"*\"]".to_string());
    let org = load(&root);
    let mb = org.mail();
    let mut mail = crate::fsx::Batch::new();
    for i in 0..n {
        let (to, from) = (format!("worker_{i:02}"), format!("worker_{:02}", (i + 1) % n));
        mb.ensure(&to).unwrap();
        let m = crate::testing::message(&format!("20260101T000000000Z-{from}-{i}"), &from, &[&to], "hello");
        assert!(mb.deliver(&mut mail, &to, &m));
    }
    mail.commit(&org.layout.root).unwrap();
    let before = crate::fsx::group_syncs::made(&org.layout.root);
    let r = step(&root, &Sources::fixed(t0())).await;
    assert_eq!((r.ran.len(), r.delivered as usize), (n, n), "each worker answers the one that wrote to it: {r:?}");
    for i in 0..n {
        let read = mb.dir(&format!("worker_{i:02}"), crate::mailbox::Folder::Read);
        assert_eq!(std::fs::read_dir(read).unwrap().count(), 1, "worker_{i:02} read its mail");
    }
    if cfg!(target_os = "linux") {
        assert_eq!(crate::fsx::group_syncs::made(&org.layout.root) - before, 4);
    }
}

#[tokio::test]
async fn a_part_with_many_moves_moves_its_read_mail_and_logs_its_runs_beside_the_effects() {
    let (_d, root) = new_org();
    let src = Sources::fixed(t0());
    let sent: Vec<String> =
        (0..APART_MIN + 8).map(|i| send_as_human(&root, "manager", &format!("note {i}"), &src)).collect();
    let r = step(&root, &src).await;
    assert_eq!(r.ran, ["manager"], "{r:?}");
    let mb = crate::org::Layout::new(&root).mail();
    let read: Vec<String> = mb.read_mail("manager").unwrap().into_iter().map(|m| m.id).collect();
    let unread: Vec<String> = mb.unread("manager").unwrap().0.into_iter().map(|m| m.id).collect();
    assert!(read.len() >= APART_MIN, "only {} moves: the test does not reach the thread", read.len());
    let mut all: Vec<String> = read.iter().chain(&unread).cloned().collect();
    all.sort();
    assert_eq!(all, sent, "every message is read or unread, once");
    let journal = Journal::new(&crate::org::Layout::new(&root)).records(r.turn).unwrap();
    let mut in_prompt = journal["manager"].mail.clone();
    in_prompt.sort();
    let mut moved = read.clone();
    moved.sort();
    assert_eq!(moved, in_prompt, "exactly the mail in the prompt moved to cur/");
    // The thread appended the run's line to the activity log.
    let runs = crate::activity::read(&root, "manager").unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!((runs[0].turn, runs[0].mail_read.len()), (r.turn, in_prompt.len()));
    // The effects were applied beside the moves: the reply was routed and charged.
    assert!(!mb.sent_skipping("manager").unwrap().messages.is_empty(), "the reply was not sent");
    assert!(Ledger::load(&crate::org::Layout::new(&root).ledger()).unwrap().has_charge(r.turn, "manager"));
}

#[tokio::test]
async fn a_run_whose_log_line_the_thread_cannot_append_counts_and_its_agent_shows_why() {
    let (_d, root) = new_org();
    let src = Sources::fixed(t0());
    for i in 0..APART_MIN {
        send_as_human(&root, "manager", &format!("note {i}"), &src);
    }
    // A folder where the log file should be: the append fails for this agent only.
    std::fs::create_dir_all(root.join("agents/manager/logs/activity.jsonl")).unwrap();
    let r = step(&root, &src).await;
    assert_eq!(r.ran, ["manager"], "the run counts: {r:?}");
    let mb = crate::org::Layout::new(&root).mail();
    assert!(mb.read_mail("manager").unwrap().len() >= APART_MIN, "the mail it read moved on");
    let trouble = trouble::read_agents(&crate::org::Layout::new(&root));
    let why = &trouble.get("manager").expect("manager shows no trouble").error;
    assert!(why.contains("activity.jsonl"), "{why}");
}
