//! The everyday path: init, send, step, inbox, status; exit codes, org discovery and the lock.

use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;

use crate::fixture::{clean_command, run, snapshot, TestOrg};

#[test]
fn init_into_an_empty_folder_gives_a_valid_org() {
    let tmp = tempfile::tempdir().unwrap();
    for dir in [tmp.path().join("missing"), tmp.path().join("empty")] {
        if dir.ends_with("empty") {
            fs::create_dir(&dir).unwrap();
        }
        let out = run(clean_command(&["init", dir.to_str().unwrap()]).current_dir(tmp.path())).ok();
        assert!(out.stdout.contains(&format!("Wrote the default org to {}", dir.display())), "{out}");
        for f in ["org/org.toml", "org/models.toml", "agents/human/resume.toml", "agents/manager/resume.toml"] {
            assert!(dir.join(f).is_file(), "init did not write {f}");
        }
        let out = run(clean_command(&["--org", dir.to_str().unwrap(), "validate"]).current_dir(tmp.path())).ok();
        assert!(out.stdout.contains("ok:"), "{out}");
        assert!(out.stderr.is_empty(), "validate of a fresh org warns\n{out}");
    }
}

#[test]
fn init_refuses_a_non_empty_folder_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("busy");
    fs::create_dir_all(dir.join("org")).unwrap();
    fs::write(dir.join("notes.txt"), "mine\n").unwrap();
    fs::write(dir.join("org/org.toml"), "max_parallel = 2\n").unwrap();
    let before = snapshot(&dir);

    let out = run(clean_command(&["init", dir.to_str().unwrap()]).current_dir(tmp.path())).fails_with(1);
    out.stderr_has(&["refuses", "not empty", &dir.display().to_string()]);
    assert_eq!(snapshot(&dir), before, "init changed a folder it refused");
}

#[test]
fn send_then_step_answers_the_human_and_forwards_to_the_planner() {
    let org = TestOrg::new();
    let id = org.send("manager", "hello @planner");
    assert!(org.files("agents/human/outbox/new").contains(&format!("{id}.json")), "send left no outbox file");

    let report = org.step();
    assert_eq!(report["ran"], serde_json::json!(["manager"]), "{report:#}");

    let inbox = org.inbox_json("human");
    assert_eq!(inbox.len(), 1, "{inbox:#?}");
    assert_eq!(inbox[0]["body"], "manager received: hello @planner");
    assert_eq!(inbox[0]["reply_to"], id.as_str());
    assert_eq!(inbox[0]["from"], "manager");

    let planner = org.inbox_json("planner");
    assert_eq!(planner.len(), 1, "{planner:#?}");
    assert_eq!(planner[0]["body"], "hello @planner");
    assert_eq!(planner[0]["from"], "manager");
    assert_eq!(org.agent_status("planner")["unread"], 1);

    let status = org.status_json();
    assert_eq!(status["turn"], 1);
    let manager = org.agent_status("manager");
    assert!(manager["credits"]["spent"].as_f64().unwrap() > 0.0, "{manager:#}");
    assert_eq!(manager["last_run_turn"], 1);
    assert!(org.files("agents/human/outbox/new").is_empty(), "the human's message was not routed");
    assert!(org.files("agents/human/outbox/sent").contains(&format!("{id}.json")));
}

#[test]
fn inbox_marks_the_humans_mail_read_and_all_still_shows_it() {
    let org = TestOrg::new();
    let id = org.send("manager", "hello");
    org.step();

    let first = org.lemming_ok(&["inbox", "--json"]).json();
    assert_eq!(first.as_array().unwrap().len(), 1, "{first:#}");
    assert_eq!(first[0]["reply_to"], id.as_str());
    assert_eq!(first[0]["unread"], true);

    let second = org.lemming_ok(&["inbox", "--json"]).json();
    assert_eq!(second, serde_json::json!([]), "mail shown once is still unread");
    assert_eq!(org.agent_status("human")["unread"], 0);

    let all = org.lemming_ok(&["inbox", "--all", "--json"]).json();
    assert_eq!(all.as_array().unwrap().len(), 1, "{all:#}");
    assert_eq!(all[0]["body"], "manager received: hello");
    assert_eq!(all[0]["unread"], false);

    let text = org.lemming_ok(&["inbox"]);
    assert!(text.stderr.contains("No unread mail for human"), "{text}");
}

#[test]
fn peek_and_other_agents_inboxes_mark_nothing_read() {
    let org = TestOrg::new();
    org.send("manager", "hello @planner");
    org.step();
    for _ in 0..2 {
        assert_eq!(org.lemming_ok(&["inbox", "--peek", "--json"]).json().as_array().unwrap().len(), 1);
        assert_eq!(org.lemming_ok(&["inbox", "planner", "--json"]).json().as_array().unwrap().len(), 1);
    }
}

#[test]
fn the_conversation_ends_after_the_planner_replies() {
    let org = TestOrg::new();
    org.send("manager", "hello @planner");
    org.step();
    let forwarded = org.inbox_json("planner");
    assert_eq!(forwarded.len(), 1);
    org.lemming_ok(&["inbox"]); // the human reads the manager's answer

    let report = org.step();
    assert_eq!(report["ran"], serde_json::json!(["planner"]), "{report:#}");
    let manager = org.inbox_json("manager");
    assert_eq!(manager.len(), 1, "{manager:#?}");
    assert_eq!(manager[0]["body"], "planner received: hello @planner");
    assert_eq!(manager[0]["reply_to"], forwarded[0]["id"]);
    assert_eq!(manager[0]["from"], "planner");

    let report = org.step();
    assert_eq!(report["ran"], serde_json::json!(["manager"]), "{report:#}");
    assert_eq!(report["delivered"], 0, "the manager answered a reply\n{report:#}");

    let ledger = org.read("org/state/ledger.jsonl");
    let report = org.step();
    assert_eq!(report["ran"], serde_json::json!([]), "{report:#}");
    assert_eq!(report["delivered"], 0, "{report:#}");
    assert_eq!(report["cost"], 0.0, "{report:#}");
    assert_eq!(org.read("org/state/ledger.jsonl"), ledger, "a quiet turn charged someone");
    for agent in org.agent_folders() {
        for dir in ["outbox/new", "inbox/new"] {
            let left = org.files(&format!("agents/{agent}/{dir}"));
            assert!(left.is_empty(), "agents/{agent}/{dir} is not empty: {left:?}");
        }
    }
    assert_eq!(org.status_json()["turn"], 4);
    org.assert_ledger_balances();
}

#[test]
fn a_usage_error_exits_2() {
    let org = TestOrg::new();
    org.lemming(&["step", "--bogus"]).fails_with(2).stderr_has(&["--bogus"]);
    org.lemming(&["frobnicate"]).fails_with(2);
    org.lemming(&["send", "manager"]).fails_with(2);
}

#[test]
fn the_org_is_found_from_a_subfolder_and_with_dash_dash_org() {
    let org = TestOrg::new();
    let sub = org.path("agents/manager");
    let out =
        run(org.command(&["send", "manager", "from a subfolder"]).env_remove("LEMMING_ORG").current_dir(&sub)).ok();
    let id = out.stdout.trim();
    assert!(org.files("agents/human/outbox/new").contains(&format!("{id}.json")), "{out}");

    let outside = org.tmp.path().join("elsewhere");
    fs::create_dir_all(&outside).unwrap();
    let out = run(org
        .command(&["--org", org.root.to_str().unwrap(), "--json", "step"])
        .env_remove("LEMMING_ORG")
        .current_dir(&outside))
    .ok();
    assert_eq!(out.json()[0]["ran"], serde_json::json!(["manager"]), "{out}");
    // A relative --org is taken from the current folder.
    let out =
        run(org.command(&["--org", "org", "status", "--json"]).env_remove("LEMMING_ORG").current_dir(org.tmp.path()))
            .ok();
    assert_eq!(out.json()["turn"], 1, "{out}");

    // Outside any org (unless the machine has one above the temp folder).
    if !outside.ancestors().any(|d| d.join("org/org.toml").is_file()) {
        run(org.command(&["status"]).env_remove("LEMMING_ORG").current_dir(&outside))
            .fails_with(1)
            .stderr_has(&["no org found", "lemming init"]);
    }
    run(org.command(&["status"]).env("LEMMING_ORG", &outside).current_dir(&sub))
        .fails_with(1)
        .stderr_has(&["is not an org", "org/org.toml"]);
}

#[test]
fn step_exits_3_and_names_the_pid_while_another_process_holds_the_lock() {
    let org = TestOrg::new();
    org.send("manager", "hello");
    fs::create_dir_all(org.path("org/state")).unwrap();
    let mut lock =
        fs::OpenOptions::new().create(true).truncate(false).write(true).open(org.path("org/state/lock")).unwrap();
    // SAFETY: flock on a descriptor that `lock` keeps open.
    let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    assert_eq!(rc, 0, "cannot flock: {}", std::io::Error::last_os_error());
    let pid = std::process::id();
    lock.set_len(0).unwrap();
    writeln!(lock, "{pid}").unwrap();

    let out = org.lemming(&["step"]).fails_with(3);
    out.stderr_has(&[&format!("pid {pid}"), "locked"]);
    assert!(out.stdout.is_empty(), "{out}");
    let status = org.status_json();
    assert_eq!(status["turn"], 0, "a turn ran without the lock");
    // The lock holder here is no daemon (no `org/state/daemon.json` names it): status says so.
    assert_eq!(status["daemon"]["running"], false, "{status:#}");
    assert_eq!(org.agent_status("manager")["unread"], 0, "the locked step routed mail");

    drop(lock);
    assert_eq!(org.step()["ran"], serde_json::json!(["manager"]));
}

#[test]
fn agents_lists_every_agent_in_aligned_columns() {
    let org = TestOrg::new();
    let out = org.lemming_ok(&["agents"]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    let header = lines[0];
    let title_col = header.find("TITLE").unwrap();
    let names: Vec<&str> = lines[1..].iter().map(|l| l.split_whitespace().next().unwrap()).collect();
    assert_eq!(names, ["coder_01", "hr", "human", "janitor", "manager", "planner"], "{out}");
    for l in &lines[1..] {
        assert!(
            l.len() > title_col && l.as_bytes()[title_col - 1] == b' ',
            "column TITLE is misaligned in {l:?}\n{out}"
        );
        assert_ne!(l.as_bytes()[title_col], b' ', "column TITLE is misaligned in {l:?}\n{out}");
    }
    let json = org.lemming_ok(&["agents", "--json"]).json();
    let manager = json.as_array().unwrap().iter().find(|a| a["name"] == "manager").unwrap();
    assert_eq!(manager["sends_to"], serde_json::json!(["coder_01", "hr", "human", "janitor", "planner"]));
}

#[test]
fn send_dash_reads_the_body_from_stdin() {
    let org = TestOrg::new();
    let mut child = org
        .command(&["send", "manager", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"line one\nline two @planner\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let msg = crate::fixture::read_json(&org.path(&format!("agents/human/outbox/new/{id}.json")));
    assert!(msg["body"].as_str().unwrap().starts_with("line one\nline two @planner"), "{msg:#}");
    org.step();
    assert_eq!(org.inbox_json("planner").len(), 1, "the @mention on the second line was not seen");
}
