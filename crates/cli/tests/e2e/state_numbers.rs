//! Numbers and state files a user can get wrong: amounts stay finite and
//! bounded, an agent is not called for a prompt it cannot pay, config files
//! have size limits, every command agrees with the daemon about the last good
//! version of an invalid file, and a lost `turn.json` does not restart the
//! turn numbering.

use std::time::Duration;

use serde_json::{json, Value};

use crate::fixture::{wait_until, TestOrg};

/// Every line of `org/state/events.jsonl`, parsed.
fn events(org: &TestOrg) -> Vec<Value> {
    std::fs::read_to_string(org.path("org/state/events.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn amounts_are_finite_and_bounded() {
    let org = TestOrg::new();
    for _ in 0..2 {
        org.lemming(&["top-up", "manager", "1e308"]).fails_with(1).stderr_has(&["to 1000000000000", "1e308"]);
    }
    org.lemming(&["top-up", "manager", "inf"]).fails_with(1).stderr_has(&["from 0.0001 to"]);
    assert!(org.ledger().is_empty(), "a refused top-up wrote the ledger");
    assert_eq!(org.agent_status("manager")["credits"]["left"], 100.0);

    // Up to the bound is fine; past it, what the agent would hold is refused.
    org.lemming_ok(&["top-up", "manager", "999999999900"]);
    org.lemming(&["top-up", "manager", "1"])
        .fails_with(1)
        .stderr_has(&["manager has 1000000000000 credits left", "an agent may hold at most 1000000000000"]);
    let status = org.lemming_ok(&["status"]);
    assert!(!status.stdout.contains("inf"), "{status}");
    assert_eq!(org.agent_status("manager")["credits"]["left"], 1e12);

    // Resume credits and the org budget have the same bound.
    org.edit("agents/hr/resume.toml", "credits = 100.0", "credits = 1e308");
    org.lemming(&["validate"])
        .fails_with(1)
        .stderr_has(&["`credits` must be a number from 0 to 1000000000000, not 1e308"]);
    org.edit("org/org.toml", "max_parallel = 8", "max_parallel = 8\nbudget = 1e300");
    org.lemming(&["validate"]).fails_with(1).stderr_has(&["`budget` must be a number from 0 to 1000000000000"]);
}

#[test]
fn a_fresh_org_has_spent_zero_not_minus_zero() {
    let org = TestOrg::new();
    let status = org.lemming_ok(&["status"]);
    assert!(status.stdout.contains("spent: 0.0000 (no org-wide budget)"), "{status}");
    let inspect = org.lemming_ok(&["inspect", "manager"]);
    let json = org.lemming_ok(&["status", "--json"]);
    for out in [&status, &inspect, &json] {
        assert!(!out.stdout.contains("-0.0"), "a negative zero is shown\n{out}");
    }
    assert!(json.json()["spent"].as_f64().unwrap().is_sign_positive());
}

/// An org whose manager has 1 credit and about 15,000 tokens of instructions
/// (60,000 characters): 1.5 credits at 100 per million, more than it has.
pub(crate) fn manager_over_credits() -> TestOrg {
    let org = TestOrg::new();
    let text = org.read("agents/manager/resume.toml");
    let long = "Be thorough. ".repeat(60_000 / 13);
    org.write(
        "agents/manager/resume.toml",
        text.replace("credits = 100.0", "credits = 1.0").replacen(
            "instructions = \"\"\"",
            &format!("instructions = \"\"\"{long}"),
            1,
        ),
    );
    org
}

#[test]
fn an_agent_is_not_called_when_its_prompt_alone_costs_more_than_it_has() {
    let org = manager_over_credits();
    org.lemming_ok(&["validate"]);
    let id = org.send("manager", "hello");

    let report = org.step();
    assert_eq!(report["ran"], json!([]), "{report:#}");
    assert_eq!(report["skipped"], json!([["manager", "prompt_over_credits"]]), "{report:#}");
    assert!(org.ledger().is_empty(), "the agent was charged: {:#?}", org.ledger());
    assert_eq!(org.ids("manager", "inbox", "new"), [id.as_str()], "the mail did not stay unread");
    assert_eq!(org.agent_status("manager")["state"], "prompt_over_credits");
    let skipped = events(&org).into_iter().find(|e| e["event"] == "skipped").expect("no skipped event");
    assert_eq!(skipped["reason"], "prompt_over_credits");
    assert!(skipped["detail"].as_str().unwrap().contains("top it up"), "{skipped:#}");
    let estimate = skipped["tokens"].as_u64().unwrap();
    assert!(skipped["cost"].as_f64().unwrap() > 1.0 && skipped["left"] == 1.0, "{skipped:#}");
    let text = org.lemming_ok(&["step"]);
    assert!(text.stdout.contains("skipped: manager (prompt_over_credits)"), "{text}");

    // Topped up, it runs; the estimate was the prompt the model was charged for.
    org.lemming_ok(&["top-up", "manager", "5"]);
    assert_eq!(org.agent_status("manager")["state"], "ready");
    let report = org.step();
    assert_eq!(report["ran"], json!(["manager"]), "{report:#}");
    let charge = org.ledger().into_iter().find(|e| e["kind"] == "charge").unwrap();
    let charged = charge["input_tokens"].as_u64().unwrap();
    assert!(charged.abs_diff(estimate) * 100 <= estimate, "estimated {estimate} tokens, charged {charged}");
    org.assert_ledger_balances();
}

#[test]
fn resumes_and_instructions_have_a_size_limit() {
    let org = TestOrg::new();
    let long = "x".repeat(70_000);
    org.agent("hr", &format!("name = \"hr\"\nmodel = \"default\"\ninstructions = \"\"\"{long}\"\"\"\n"));
    org.lemming(&["validate"])
        .fails_with(1)
        .stderr_has(&["agents/hr/resume.toml:3:16: `instructions` is 70000 bytes; the limit is 65536 bytes", "help:"]);
    org.agent("hr", &format!("# {}\nname = \"hr\"\nmodel = \"default\"\n", "x".repeat(300_000)));
    org.lemming(&["validate"])
        .fails_with(1)
        .stderr_has(&["agents/hr/resume.toml: the file is 300033 bytes; the limit is 262144 bytes"]);
    // The rest of the org still runs.
    org.send("manager", "hello");
    assert_eq!(org.step()["ran"], json!(["manager"]));
}

#[test]
fn send_status_and_inspect_use_the_last_good_version_and_show_the_error() {
    let org = TestOrg::new();
    org.send("manager", "first");
    org.step();
    let rel = "agents/manager/resume.toml";
    assert_eq!(org.last_good_resume("manager"), Some(org.read(rel)), "step kept no last good version");

    let good = org.read(rel);
    let line = 1 + good.lines().position(|l| l == "every = 1").unwrap();
    org.write(rel, good.replacen("every = 1", "every = = 1", 1));
    let at = format!("{rel}:{line}:9");

    let out = org.lemming_ok(&["send", "manager", "second"]);
    out.stderr_has(&[&at, "last good version"]);
    let id = out.stdout.trim().to_string();

    let status = org.status_json();
    assert_eq!(status["last_good"], json!([rel]), "{status:#}");
    assert!(status["problems"].as_array().unwrap().iter().any(|p| p["line"] == line), "{status:#}");
    let manager = org.agent_status("manager");
    assert_eq!((&manager["state"], &manager["pending"]), (&json!("idle"), &json!(0)), "{manager:#}");
    assert_eq!(org.agent_status("human")["pending"], 1);
    let text = org.lemming_ok(&["status"]);
    assert!(
        text.stdout.contains(&format!("{rel} is invalid: the last good version")) && text.stdout.contains(&at),
        "{text}"
    );

    let inspect = org.lemming_ok(&["inspect", "manager"]);
    inspect.stderr_has(&[&at]);
    assert!(inspect.stdout.contains("manager — Manager"), "{inspect}");
    let inspect = org.lemming_ok(&["inspect", "manager", "--json"]).json();
    assert_eq!(inspect["last_good"], json!([rel]));

    // Turns run manager with its last good version, and the bad edit is never saved.
    let report = org.step();
    assert_eq!(report["ran"], json!(["manager"]), "{report:#}");
    assert!(org.inbox_json("human").iter().any(|m| m["reply_to"] == id.as_str()));
    assert_eq!(org.last_good_resume("manager"), Some(good.clone()));

    // A new agent whose first resume is invalid has no last good version: it is held.
    org.agent("scribe", "name = \"scribe\"\nmodel = \"nope\"\n");
    org.lemming(&["send", "scribe", "hi"])
        .fails_with(1)
        .stderr_has(&["no last good version", "unknown model key `nope`"]);
    assert_eq!(org.agent_status("scribe")["state"], "invalid");

    // Once fixed, the problem is gone everywhere.
    org.write(rel, &good);
    let status = org.status_json();
    assert_eq!(status["last_good"], json!([]), "{status:#}");
    let out = org.lemming_ok(&["send", "manager", "third"]);
    assert!(!out.stderr.contains("warning"), "{out}");
}

#[test]
fn while_the_daemon_runs_a_bad_edit_of_a_resume_does_not_stop_send() {
    let org = TestOrg::new();
    let mut d = org.spawn_run(&[]);
    d.wait_ready();
    let rel = "agents/manager/resume.toml";
    let saved = || org.last_good_resume("manager");
    assert!(wait_until(Duration::from_secs(10), || saved().is_some()), "the daemon kept no last good version\n{d}");
    let good = org.read(rel);
    org.write(rel, good.replacen("every = 1", "every = = 1", 1));
    assert!(wait_until(Duration::from_secs(10), || d.output().contains(rel)), "the daemon did not report it\n{d}");

    let id = org.send("manager", "are you there?");
    let answered =
        wait_until(Duration::from_secs(10), || org.inbox_json("human").iter().any(|m| m["reply_to"] == id.as_str()));
    assert!(answered, "no answer from manager with a broken resume\n{d}");
    assert_eq!(saved(), Some(good));
    d.assert_running("after a bad edit");
}

#[test]
fn a_lost_or_corrupt_turn_file_does_not_restart_the_numbering() {
    let org = TestOrg::new();
    org.send("manager", "plan @planner");
    for _ in 0..3 {
        org.step();
    }
    assert_eq!(org.turn(), 3);

    std::fs::remove_file(org.path("org/state/turn.json")).unwrap();
    assert_eq!(org.status_json()["turn"], 3);
    assert_eq!(org.step()["turn"], 4);
    assert_eq!(org.turn(), 4, "the next commit wrote turn.json again");

    org.write("org/state/turn.json", "{\"turn\": oops");
    org.lemming_ok(&["status"]);
    assert_eq!(org.step()["turn"], 5);

    org.write("org/state/turn.json", "");
    org.send("manager", "again");
    assert_eq!(org.step()["turn"], 6);
    let turns: Vec<u64> =
        events(&org).iter().filter(|e| e["event"] == "turn").map(|e| e["turn"].as_u64().unwrap()).collect();
    assert_eq!(turns, [1, 2, 3, 4, 5, 6]);
    org.lemming_ok(&["fsck"]);

    // A counter at its maximum cannot go on: a clear error, not a turn that
    // reuses its number (and replays an old journal) forever.
    org.write("org/state/turn.json", format!("{{\"turn\": {}}}", u64::MAX));
    let out = org.lemming(&["step"]).fails_with(1);
    assert!(out.stderr.contains("turn.json") && out.stderr.contains("at its maximum"), "{out}");
    std::fs::remove_file(org.path("org/state/turn.json")).unwrap();
    assert_eq!(org.step()["turn"], 7);
}
