//! One agent's trouble is that agent's alone, and a full disk is nobody's end:
//! a `command` program that never reads its prompt, output into a closed pipe,
//! an agent whose files cannot be used, a full disk under a running daemon,
//! and a provider that refuses connections for longer than `max_attempts`.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::fake_http::{free_port, Answer, FakeServer};
use crate::fixture::{failed_agents, message_bytes, run, wait_until, TestOrg};
use crate::providers::{charges, chat, configure};

fn write_script(org: &TestOrg, rel: &str, body: &str) {
    org.write(rel, format!("#!/bin/sh\n{body}\n"));
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(org.path(rel), fs::Permissions::from_mode(0o755)).unwrap();
}

/// The unread messages of the human that `from` wrote.
fn mail_from(org: &TestOrg, from: &str) -> Vec<Value> {
    org.inbox_json("human").into_iter().filter(|m| m["from"] == from).collect()
}

#[test]
fn fifty_runs_of_a_command_that_never_reads_its_prompt_kill_no_lemming() {
    let org = TestOrg::new();
    // Answers at once and exits: a prompt bigger than the pipe's buffer finds no reader.
    write_script(&org, "bin/deaf.sh", r#"printf '{"messages":[],"notes":"did not read"}\n'"#);
    configure(
        &org,
        "[providers.cli]\nkind = \"command\"\nprogram = \"bin/deaf.sh\"\ntimeout_secs = 20\nmax_retries = 0\n\n[models.deaf]\nprovider = \"cli\"\n",
        "manager",
        "deaf",
    );
    org.edit("org/org.toml", "max_message_bytes = 65536", "max_message_bytes = 400000");
    org.lemming_ok(&["validate"]);
    for i in 0..50u64 {
        let size = 1024 + i * (300 * 1024 - 1024) / 49;
        let id = format!("big-{i:02}");
        org.post_outbox("human", &id, message_bytes(&id, "human", "manager", &"x".repeat(size as usize)));
        let out = org.lemming(&["--json", "step"]);
        assert_eq!((out.code, out.signal), (Some(0), None), "run {i}, a prompt of over {size} bytes\n{out}");
        let report = &out.json()[0];
        assert_eq!(report["ran"], json!(["manager"]), "run {i}: the program answered, so the run counts\n{out}");
        assert!(org.ids("manager", "inbox", "cur").contains(&id), "run {i}: the mail was not consumed");
    }
}

#[test]
fn output_into_a_closed_pipe_ends_lemming_quietly() {
    let org = TestOrg::new();
    org.send("manager", "hello");
    org.step();
    assert!(!org.inbox_json("human").is_empty());
    for args in [&["status"][..], &["inbox", "--peek"][..], &["--json", "status"][..]] {
        // `lemming ... | head -0`: the reader is gone before lemming writes.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = org.command(args).stdout(writer).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "lemming {args:?}: {:?}\n{stderr}", out.status);
        assert!(stderr.is_empty(), "lemming {args:?} was not quiet:\n{stderr}");
    }
}

#[test]
fn an_agent_whose_inbox_is_a_file_sits_out_while_the_others_run() {
    let org = TestOrg::new();
    let inbox = org.path("agents/planner/inbox");
    let _ = fs::remove_dir_all(&inbox);
    fs::write(&inbox, "not a folder").unwrap();
    org.post_outbox("manager", "to-planner-1", message_bytes("to-planner-1", "manager", "planner", "a task"));
    let id = org.send("manager", "hello");

    let out = org.lemming(&["--json", "step"]).ok();
    let report = &out.json()[0];
    assert!(report["ran"].as_array().unwrap().contains(&json!("manager")), "{out}");
    let failed = failed_agents(report);
    assert!(failed["planner"].contains("agents/planner/inbox"), "{out}");
    assert_eq!(failed.len(), 1, "only the planner fails\n{out}");
    assert!(org.ids("manager", "inbox", "cur").contains(&id));
    assert_eq!(mail_from(&org, "manager").len(), 1, "the manager's answer did not arrive");
    assert!(
        org.files("agents/manager/outbox/new").contains(&"to-planner-1.json".to_string()),
        "mail to the planner must wait in the outbox while its inbox is unusable"
    );

    let planner = org.agent_status("planner");
    assert_eq!(planner["state"], "io_error", "{planner:#}");
    assert!(planner["problem"].as_str().unwrap().contains("agents/planner/inbox"), "{planner:#}");
    let text = org.lemming_ok(&["status"]).stdout;
    assert!(text.contains("planner is io_error") && text.contains("agents/planner/inbox"), "{text}");

    // Fixed: the next turn delivers the waiting mail and the planner runs.
    fs::remove_file(&inbox).unwrap();
    let report = org.step();
    assert!(report["ran"].as_array().unwrap().contains(&json!("planner")), "{report:#}");
    assert!(org.ids("planner", "inbox", "cur").contains(&"to-planner-1".to_string()));
    assert_ne!(org.agent_status("planner")["state"], "io_error");
    crate::fsck::assert_no_violations(&org, "after the planner's inbox was fixed");
}

#[test]
fn a_daemon_keeps_running_while_one_agent_has_unusable_files() {
    let org = TestOrg::new();
    let mut d = org.spawn_run(&["--turn-seconds", "60"]);
    d.wait_ready();
    let outbox_new = org.path("agents/planner/outbox/new");
    let _ = fs::remove_dir_all(&outbox_new);
    fs::write(&outbox_new, "not a folder").unwrap();
    let id = org.send("manager", "hello");
    let answered = wait_until(Duration::from_secs(20), || {
        org.ids("manager", "inbox", "cur").contains(&id) && !mail_from(&org, "manager").is_empty()
    });
    assert!(answered, "the manager did not answer beside the broken planner\n{d}");
    // Turns go on: a second message is answered too.
    let id2 = org.send("manager", "again");
    assert!(
        wait_until(Duration::from_secs(20), || org.ids("manager", "inbox", "cur").contains(&id2)),
        "no second turn\n{d}"
    );
    d.assert_running("one agent's unusable outbox");
    let planner = org.agent_status("planner");
    assert_eq!(planner["state"], "io_error", "{planner:#}");
    assert!(planner["problem"].as_str().unwrap().contains("agents/planner/outbox/new"), "{planner:#}");
    org.lemming_ok(&["stop"]);
    assert!(d.wait_exit(Duration::from_secs(20)).is_some_and(|s| s.success()), "{d}");
}

/// `(turn, agent)` → how many times the model was called, from the script's log.
fn calls(log: &Path) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for line in fs::read_to_string(log).unwrap_or_default().lines() {
        *out.entry(line.to_string()).or_default() += 1;
    }
    out
}

#[test]
fn a_full_disk_under_a_running_daemon_costs_no_second_call_and_loses_nothing() {
    let org = TestOrg::new();
    let ctl = org.tmp.path().join("ctl");
    fs::create_dir_all(&ctl).unwrap();
    let flag = ctl.join("full");
    // The model logs each call; when told to, it fills the disk while it answers,
    // so that its reply cannot be journaled.
    write_script(
        &org,
        "bin/model.sh",
        r#"cat > /dev/null
echo "$LEMMING_TURN $LEMMING_AGENT" >> "$1/calls.log"
if [ -f "$1/fill-now" ]; then rm -f "$1/fill-now"; : > "$1/full"; fi
printf '{"messages":[{"to":"human","body":"answer on turn %s"}]}\n' "$LEMMING_TURN""#,
    );
    configure(
        &org,
        &format!(
            "[providers.cli]\nkind = \"command\"\nprogram = \"bin/model.sh\"\nargs = [{:?}]\ntimeout_secs = 20\nmax_retries = 0\n\n[models.local]\nprovider = \"cli\"\ncost_per_call = 1.0\n",
            ctl.to_str().unwrap()
        ),
        "manager",
        "local",
    );
    org.lemming_ok(&["validate"]);
    let mut d = org.spawn_run_env(&["--turn-seconds", "60"], &[("LEMMING_FULL_DISK_FLAG", flag.as_os_str())]);
    d.wait_ready();

    let id1 = org.send("manager", "one");
    assert!(wait_until(Duration::from_secs(20), || mail_from(&org, "manager").len() == 1), "no first answer\n{d}");

    // The disk fills while the model answers the second message.
    fs::write(ctl.join("fill-now"), "").unwrap();
    let id2 = org.send("manager", "two");
    let trouble = || org.status_json()["daemon"]["trouble"].clone();
    assert!(
        wait_until(Duration::from_secs(20), || trouble()["unjournaled_calls"] == 1),
        "status shows no trouble: {:#}\n{d}",
        org.status_json()
    );
    assert!(flag.exists(), "the model did not fill the disk");
    assert!(trouble()["error"].as_str().unwrap().contains("No space left"), "{:#}", trouble());
    // A send on the full disk is refused, with the reason: it was never accepted.
    let mut cmd = org.command(&["send", "manager", "three"]);
    cmd.env("LEMMING_FULL_DISK_FLAG", &flag);
    run(&mut cmd).fails_with(1).stderr_has(&["No space left"]);
    // Backing off: probes fail, no model is called again.
    std::thread::sleep(Duration::from_millis(3500));
    d.assert_running("a full disk");
    assert!(trouble()["failures"].as_u64().unwrap() >= 2, "{:#}", trouble());
    let text = org.lemming_ok(&["status"]).stdout;
    assert!(text.contains("daemon trouble") && text.contains("No space left"), "{text}");
    let before = calls(&ctl.join("calls.log"));
    assert_eq!(before.values().sum::<usize>(), 2, "the model was called again while the disk was full: {before:?}");

    // Space returns: the held reply is journaled and delivered, without a new call.
    fs::remove_file(&flag).unwrap();
    assert!(
        wait_until(Duration::from_secs(90), || mail_from(&org, "manager").len() == 2),
        "the answer to the second message never came\n{d}"
    );
    assert!(
        wait_until(Duration::from_secs(10), || org.status_json()["daemon"]["trouble"].is_null()),
        "the trouble is still shown: {:#}",
        org.status_json()
    );
    let id4 = org.send("manager", "four");
    assert!(wait_until(Duration::from_secs(20), || mail_from(&org, "manager").len() == 3), "no fourth answer\n{d}");
    org.lemming_ok(&["stop"]);
    assert!(d.wait_exit(Duration::from_secs(20)).is_some_and(|s| s.success()), "{d}");

    let calls = calls(&ctl.join("calls.log"));
    for (key, n) in &calls {
        assert_eq!(*n, 1, "the model was called {n} times for turn/agent {key}: {calls:?}");
    }
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert_eq!(charges(&org).len(), 3, "each call is charged once: {:#?}", charges(&org));
    let mut bodies: Vec<String> =
        mail_from(&org, "manager").iter().map(|m| m["body"].as_str().unwrap().to_string()).collect();
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), 3, "an answer was delivered twice or lost: {bodies:?}");
    let read = org.ids("manager", "inbox", "cur");
    for id in [&id1, &id2, &id4] {
        assert!(read.contains(id), "{id} was not consumed");
    }
    assert!(org.read("org/state/events.jsonl").contains("\"recovered\""), "no event tells of the held reply");
    org.assert_ledger_balances();
    crate::fsck::assert_no_violations(&org, "after the disk was full");
}

#[test]
fn a_provider_refusing_connections_longer_than_max_attempts_leaves_the_mail_waiting() {
    let port = free_port();
    let org = TestOrg::new();
    org.edit("org/org.toml", "max_attempts = 3", "max_attempts = 2");
    configure(
        &org,
        &format!(
            "[providers.far]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:{port}/v1\"\nmax_retries = 0\nbreaker_threshold = 2\nbreaker_cooldown_secs = 0.2\n\n[models.far]\nprovider = \"far\"\n"
        ),
        "manager",
        "far",
    );
    org.lemming_ok(&["validate"]);
    let id = org.send("manager", "hello");
    for n in 1..=4 {
        let report = org.step();
        assert_eq!(report["failed"][0][0], "manager", "turn {n}: {report:#}");
        let why = report["failed"][0][1].as_str().unwrap();
        assert!(why.contains("cannot connect") || why.contains("circuit breaker"), "turn {n}: {why}");
        assert!(org.ids("manager", "inbox", "new").contains(&id), "turn {n}: the mail is no longer unread");
        assert!(org.dead().is_empty(), "turn {n}: good mail became poison: {:#?}", org.dead());
        let manager = org.agent_status("manager");
        assert_eq!(manager["state"], "provider_down", "turn {n}: {manager:#}");
        assert!(!manager["problem"].as_str().unwrap().is_empty(), "{manager:#}");
    }
    let inspect = org.lemming_ok(&["inspect", "manager", "--json"]).json();
    assert!(inspect["failed_attempts"].as_object().is_none_or(|a| a.is_empty()), "{inspect:#}");

    // The server comes back: the mail is answered.
    let reply = r#"{"messages":[{"to":"human","body":"back online"}]}"#;
    let _server = FakeServer::start_on(port, move |_, _| Answer::json(chat(reply, Some((10, 5)))));
    std::thread::sleep(Duration::from_millis(300));
    let report = org.step();
    assert_eq!(report["ran"], json!(["manager"]), "{report:#}");
    assert!(org.ids("manager", "inbox", "cur").contains(&id));
    assert_eq!(mail_from(&org, "manager")[0]["body"], "back online");
    assert_eq!(org.agent_status("manager")["state"], "idle");
    assert!(org.dead().is_empty());
}

#[test]
fn a_step_on_a_full_disk_fails_cleanly_before_any_model_is_paid() {
    let org = TestOrg::new();
    let ctl = org.tmp.path().join("ctl");
    fs::create_dir_all(&ctl).unwrap();
    write_script(
        &org,
        "bin/model.sh",
        r#"cat > /dev/null
echo "$LEMMING_TURN $LEMMING_AGENT" >> "$1/calls.log"
printf '{"messages":[{"to":"human","body":"answer"}]}\n'"#,
    );
    configure(
        &org,
        &format!(
            "[providers.cli]\nkind = \"command\"\nprogram = \"bin/model.sh\"\nargs = [{:?}]\n\n[models.local]\nprovider = \"cli\"\n",
            ctl.to_str().unwrap()
        ),
        "manager",
        "local",
    );
    let id = org.send("manager", "hello");
    let flag = ctl.join("full");
    fs::write(&flag, "").unwrap();
    for _ in 0..3 {
        let mut cmd = org.command(&["step"]);
        cmd.env("LEMMING_FULL_DISK_FLAG", &flag);
        run(&mut cmd).fails_with(1).stderr_has(&["No space left"]);
    }
    assert!(!ctl.join("calls.log").exists(), "a model was called on a full disk");
    fs::remove_file(&flag).unwrap();
    org.step();
    assert_eq!(calls(&ctl.join("calls.log")).len(), 1);
    assert!(org.ids("manager", "inbox", "cur").contains(&id));
    crate::fsck::assert_no_violations(&org, "after steps on a full disk");
}

#[test]
fn a_request_the_server_refuses_as_too_big_is_a_failed_attempt_but_a_bad_key_is_not() {
    // 400 blames the request (the prompt, so the mail in it): after
    // max_attempts the mail is poison. 401 blames the config: the mail waits.
    for (status, poisoned) in [(400, true), (401, false)] {
        let server = FakeServer::start(move |_, _| {
            Answer::status(status, r#"{"error":{"message":"maximum context length exceeded"}}"#)
        });
        let org = TestOrg::new();
        org.edit("org/org.toml", "max_attempts = 3", "max_attempts = 2");
        configure(
            &org,
            &format!(
                "[providers.far]\nkind = \"openai\"\nbase_url = \"{}/v1\"\nmax_retries = 0\n\n[models.far]\nprovider = \"far\"\n",
                server.url()
            ),
            "manager",
            "far",
        );
        let id = org.send("manager", "a very long question");
        for _ in 0..3 {
            org.step();
        }
        let dead = org.dead();
        if poisoned {
            assert!(dead.values().any(|d| d["reason"] == "poison"), "HTTP {status}: {dead:#?}");
            assert!(!org.ids("manager", "inbox", "new").contains(&id), "HTTP {status}");
        } else {
            assert!(dead.is_empty(), "HTTP {status}: {dead:#?}");
            assert!(org.ids("manager", "inbox", "new").contains(&id), "HTTP {status}");
            assert_eq!(org.agent_status("manager")["state"], "provider_error");
        }
    }
}
