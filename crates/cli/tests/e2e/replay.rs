//! `lemming replay TURN` and `lemming step --dry-run`: a committed turn derived
//! again from its journal matches the files (and a hand edit is named), and a
//! dry run writes nothing and says what the next turn then does.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde_json::Value;

use crate::fixture::{message_bytes, TestOrg};

/// An org of the default agents where mail keeps flowing for many turns: each
/// agent reads at most two messages a turn, most run only every few turns,
/// and the human's mail asks for forwards and tool calls.
fn busy_org() -> TestOrg {
    let org = TestOrg::new();
    org.edit("org/org.toml", "max_mail_per_prompt = 50", "max_mail_per_prompt = 2");
    for (agent, every, offset) in [("planner", 2, 1), ("coder_01", 3, 2), ("hr", 4, 3), ("janitor", 5, 4)] {
        org.edit(
            &format!("agents/{agent}/resume.toml"),
            "every = 1\noffset = 0",
            &format!("every = {every}\noffset = {offset}"),
        );
    }
    for n in 0..14 {
        let body = match n % 4 {
            0 => format!("task {n}: @planner @coder_01 please split this"),
            1 => format!("task {n}: @hr @janitor tidy up\n/tool list_files {{}}"),
            2 => format!("task {n}: @coder_01 build it\n/tool recall {{\"query\": \"task\"}}"),
            _ => format!("task {n}: @planner @janitor @hr report"),
        };
        org.send("manager", &body);
    }
    org
}

/// The committed turns that journaled a reply.
fn journaled_turns(org: &TestOrg) -> Vec<u64> {
    let mut turns: Vec<u64> = fs::read_dir(org.path("org/state/journal"))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .collect();
    turns.sort_unstable();
    turns
}

#[test]
fn every_turn_of_a_mock_run_replays_to_what_is_on_disk() {
    let org = busy_org();
    org.lemming_ok(&["step", "-n", "20"]);
    let busy = journaled_turns(&org);
    assert!(busy.len() >= 15, "most of the 20 turns ran an agent: {busy:?}");
    let mut messages = 0;
    let before = every_path(&org.root);
    for turn in 1..=20u64 {
        let out = org.lemming_ok(&["replay", &turn.to_string()]);
        assert!(!out.stdout.contains("DIFFERS"), "{out}");
        let json = org.lemming_ok(&["--json", "replay", &turn.to_string()]).json();
        assert_eq!(json["turn"], turn);
        let agents = json["agents"].as_array().unwrap();
        assert_eq!(!agents.is_empty(), busy.contains(&turn), "turn {turn}: {json:#}");
        for a in agents {
            assert_eq!(a["differences"], serde_json::json!([]), "{a:#}");
            messages += a["messages"].as_array().unwrap().len();
        }
    }
    assert!(messages >= 20, "the run wrote messages for replay to check: {messages}");
    assert_same(&before, &every_path(&org.root));
    // One agent alone.
    let turn = busy[0].to_string();
    let one = org.lemming_ok(&["--json", "replay", &turn, "--agent", "manager"]).json();
    assert_eq!(one["agents"].as_array().unwrap().len(), 1, "{one:#}");
    org.lemming(&["replay", &turn, "--agent", "nobody"]).fails_with(1).stderr_has(&["no journaled reply of `nobody`"]);
}

#[test]
fn a_turn_not_committed_or_no_longer_journaled_is_a_clear_error() {
    let org = busy_org();
    org.edit("org/org.toml", "journal_keep_turns = 20", "journal_keep_turns = 2");
    org.lemming_ok(&["step", "-n", "6"]);
    org.lemming(&["replay", "7"]).fails_with(1).stderr_has(&["turn 7 is not committed", "last committed turn is 6"]);
    org.lemming(&["replay", "0"]).fails_with(1).stderr_has(&["turn 0 is not committed"]);
    org.lemming(&["replay", "1"])
        .fails_with(1)
        .stderr_has(&["journal of turn 1 is no longer kept", "journal_keep_turns"]);
    org.lemming_ok(&["replay", "6"]);
}

/// A charge line of the ledger for (turn, agent): its 0-based index among the lines.
fn charge_line(lines: &[String], turn: u64, agent: &str) -> usize {
    lines
        .iter()
        .position(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["kind"] == "charge" && v["turn"] == turn && v["agent"] == agent
        })
        .unwrap_or_else(|| panic!("no charge of {agent} on turn {turn}: {lines:#?}"))
}

#[test]
fn a_ledger_line_altered_by_hand_is_named() {
    let org = busy_org();
    org.lemming_ok(&["step", "-n", "4"]);
    let text = org.read("org/state/ledger.jsonl");
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let i = charge_line(&lines, 2, "manager");
    let mut v: Value = serde_json::from_str(&lines[i]).unwrap();
    let was = v["cost"].as_f64().unwrap();
    v["cost"] = serde_json::json!(was + 0.5);
    lines[i] = serde_json::to_string(&v).unwrap();
    org.write("org/state/ledger.jsonl", lines.join("\n") + "\n");

    let out = org.lemming(&["replay", "2"]).fails_with(1);
    let expected = format!(
        "org/state/ledger.jsonl line {}: manager on turn 2 was charged {:.4}, the journal says {was:.4}",
        i + 1,
        was + 0.5
    );
    assert!(out.stdout.contains(&expected), "{expected:?}\n{out}");
    out.stderr_has(&["turn 2 differs from its journal in 1 place"]);
    let json = org.lemming(&["--json", "replay", "2"]).fails_with(1).json();
    let diffs: Vec<&Value> =
        json["agents"].as_array().unwrap().iter().flat_map(|a| a["differences"].as_array().unwrap()).collect();
    assert_eq!(diffs.len(), 1, "{json:#}");
    assert_eq!(diffs[0]["field"], "cost");
    // The other turns still match.
    org.lemming_ok(&["replay", "1"]);
    org.lemming_ok(&["replay", "3"]);

    // A token count altered, too, and a charge for an agent the journal has no reply of.
    v["cost"] = serde_json::json!(was);
    v["output_tokens"] = serde_json::json!(v["output_tokens"].as_u64().unwrap() + 7);
    lines[i] = serde_json::to_string(&v).unwrap();
    let mut stray = v.clone();
    stray["agent"] = "janitor".into();
    lines.push(serde_json::to_string(&stray).unwrap());
    org.write("org/state/ledger.jsonl", lines.join("\n") + "\n");
    let out = org.lemming(&["replay", "2"]).fails_with(1);
    assert!(out.stdout.contains(&format!("line {}: manager on turn 2 was charged for", i + 1)), "{out}");
    assert!(
        out.stdout.contains(&format!(
            "line {}: janitor was charged on turn 2, but the journal has no reply of janitor",
            lines.len()
        )),
        "{out}"
    );
}

#[test]
fn a_delivered_message_altered_by_hand_is_named() {
    let org = busy_org();
    org.lemming_ok(&["step", "-n", "3"]);
    // A message manager wrote on turn 1, delivered to planner.
    let records = org.read("org/state/journal/1/records.jsonl");
    let manager: Value =
        records.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).find(|r| r["agent"] == "manager").unwrap();
    let m = manager["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["to"] == serde_json::json!(["planner"]) || m["to"] == "planner")
        .unwrap_or_else(|| panic!("manager wrote nothing to planner on turn 1: {manager:#}"));
    let id = m["id"].as_str().unwrap();
    let copy = ["new", "cur"]
        .iter()
        .map(|sub| format!("agents/planner/inbox/{sub}/{id}.json"))
        .find(|rel| org.path(rel).exists())
        .unwrap_or_else(|| panic!("planner has no copy of {id}"));
    org.lemming_ok(&["replay", "1"]);

    // The delivered copy is a link of the sender's: replaced, not written through.
    let mut altered: Value = serde_json::from_slice(&fs::read(org.path(&copy)).unwrap()).unwrap();
    altered["body"] = "something else".into();
    fs::remove_file(org.path(&copy)).unwrap();
    org.write(&copy, serde_json::to_vec(&altered).unwrap());

    let out = org.lemming(&["replay", "1"]).fails_with(1);
    let expected = format!("{copy}: body differs from the journaled reply");
    assert!(out.stdout.contains(&expected), "{expected:?}\n{out}");
    assert_eq!(out.stdout.matches("differs from").count(), 1, "only that copy differs\n{out}");

    // A copy that is gone, with no dead letter for it, is named too.
    fs::remove_file(org.path(&copy)).unwrap();
    let out = org.lemming(&["replay", "1"]).fails_with(1);
    assert!(
        out.stdout.contains(&format!("message {id} to planner (turn 1) is in no folder of planner's inbox")),
        "{out}"
    );

    // Mail the turn consumed, put back as unread by hand.
    let read = manager["mail"][0].as_str().unwrap();
    fs::rename(
        org.path(&format!("agents/manager/inbox/cur/{read}.json")),
        org.path(&format!("agents/manager/inbox/new/{read}.json")),
    )
    .unwrap();
    let out = org.lemming(&["replay", "1"]).fails_with(1);
    assert!(out.stdout.contains(&format!("manager read {read} on turn 1, but it is still unread")), "{out}");
}

/// One path of the org as a snapshot holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir,
    File(Vec<u8>),
    Link(std::path::PathBuf),
}

/// Every path under `dir` (files with their bytes, folders, symbolic links
/// with their targets, never followed), by path from `dir`.
fn every_path(dir: &Path) -> BTreeMap<String, Node> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Node>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            let t = fs::symlink_metadata(&p).unwrap().file_type();
            if t.is_symlink() {
                out.insert(rel, Node::Link(fs::read_link(&p).unwrap()));
            } else if t.is_dir() {
                out.insert(rel, Node::Dir);
                walk(base, &p, out);
            } else {
                out.insert(rel, Node::File(fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

#[track_caller]
fn assert_same(before: &BTreeMap<String, Node>, after: &BTreeMap<String, Node>) {
    for (path, node) in after {
        assert_eq!(before.get(path), Some(node), "{path} was created or changed");
    }
    for path in before.keys() {
        assert!(after.contains_key(path), "{path} was removed");
    }
}

#[test]
fn a_dry_run_writes_nothing_and_says_what_the_next_turn_does() {
    // A fresh org: no agent has folders yet, and no state.
    let org = TestOrg::new();
    let to_manager = org.send("manager", "hello @planner, please plan this");
    // planner may not write to hr: routing refuses it, and bounces it.
    let refused = "20260101T000000000Z-planner-raw001";
    org.drop_outbox("planner", &format!("{refused}.json"), message_bytes(refused, "planner", "hr", "psst"));
    std::os::unix::fs::symlink("org/org.toml", org.path("settings-link")).unwrap();

    let before = every_path(&org.root);
    assert_eq!(before.get("settings-link"), Some(&Node::Link("org/org.toml".into())));
    let out = org.lemming_ok(&["step", "--dry-run"]);
    assert_same(&before, &every_path(&org.root));
    assert!(out.stdout.contains("turn 1 (dry run: nothing is written)"), "{out}");
    assert!(out.stdout.contains(&format!("human {to_manager}: delivered to manager")), "{out}");
    assert!(out.stdout.contains(&format!("planner {refused}: refused for hr (chart_send_to)")), "{out}");
    assert!(out.stdout.contains("manager: runs (model default, 1 message(s) in its prompt)"), "{out}");
    assert!(out.stdout.contains("planner: runs"), "its bounce wakes it\n{out}");
    assert!(out.stdout.contains("hr: not run: no unread mail"), "{out}");
    assert!(out.stdout.contains("human: not run"), "{out}");
    assert!(out.stdout.contains("=== prompt of manager ===") && out.stdout.contains("hello @planner"), "{out}");

    let preview = org.lemming_ok(&["--json", "step", "--dry-run"]).json();
    assert_same(&before, &every_path(&org.root));
    let running: Vec<String> = preview["agents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "run")
        .map(|a| a["agent"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(running, ["manager", "planner"], "{preview:#}");
    let manager = preview["agents"].as_array().unwrap().iter().find(|a| a["agent"] == "manager").unwrap();
    assert!(manager["user"].as_str().unwrap().contains("hello @planner"), "{manager:#}");
    assert_eq!(manager["mail"], serde_json::json!([to_manager]));

    // The real turn does what the dry run said.
    let report = org.step();
    let ran: Vec<String> = report["ran"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect();
    assert_eq!(ran, running, "{report:#}");
    for r in preview["routes"].as_array().unwrap() {
        let id = r["id"].as_str().unwrap();
        for to in r["delivered"].as_array().unwrap() {
            let to = to.as_str().unwrap();
            let has = ["new", "cur"].iter().any(|sub| org.ids(to, "inbox", sub).iter().any(|i| i == id));
            assert!(has, "{to} did not get {id}");
        }
        for x in r["refused"].as_array().unwrap() {
            let why =
                org.dead().into_values().find(|w| w["id"] == id).unwrap_or_else(|| panic!("no dead letter for {id}"));
            assert_eq!(why["reason"], x["code"]);
        }
    }

    // Beside a state with history (journal, ledger, events, last-good copies) it writes nothing either.
    org.send("manager", "again @coder_01");
    let before = every_path(&org.root);
    assert!(before.contains_key("org/state/turn.json"));
    let out = org.lemming_ok(&["step", "--dry-run"]);
    assert!(out.stdout.contains("turn 2 (dry run"), "{out}");
    assert_same(&before, &every_path(&org.root));
}

/// Both read only, without the lock: they run beside a daemon, which holds it.
#[test]
fn replay_and_the_dry_run_run_beside_a_daemon() {
    let org = TestOrg::new();
    org.send("manager", "hello @planner");
    let mut daemon = org.spawn_run(&["--turn-seconds", "600"]);
    daemon.wait_ready();
    org.lemming(&["step"]).fails_with(3);
    org.lemming_ok(&["replay", "1"]);
    org.send("manager", "again");
    let out = org.lemming_ok(&["step", "--dry-run"]);
    assert!(out.stdout.contains("dry run: nothing is written"), "{out}");
    daemon.assert_running("after replay and a dry run");
}
