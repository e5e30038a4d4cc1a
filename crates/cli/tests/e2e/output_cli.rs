//! What people see: untrusted text shown escaped (JSON unchanged), read-only
//! commands that show one bad file and go on, a replayed run logged once, and
//! the command line as a newcomer meets it (help, exit codes, messages, make demo).

use std::fs;
use std::io::Write;
use std::process::Stdio;

use serde_json::Value;

use crate::fixture::{clean_command, message_bytes, run, Output, TestOrg, BIN};

const CSI: &str = "\x1b[31m";
const OSC: &str = "\x1b]0;title\x07";

/// Asserts that no byte a terminal would obey reached the output (newlines and tabs aside).
#[track_caller]
fn inert(out: &Output, what: &str) {
    for (name, s) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        let bad: Vec<char> = s
            .chars()
            .filter(|c| (c.is_control() && *c != '\n' && *c != '\t') || ('\u{202a}'..='\u{202e}').contains(c))
            .collect();
        assert!(bad.is_empty(), "{what}: {name} holds control characters {bad:?}\n{out}");
    }
}

/// A message from manager to human, routed by a turn, whose text is hostile.
fn org_with_hostile_mail() -> (TestOrg, String) {
    let org = TestOrg::new();
    let body = format!("red {CSI}alert\nretitle {OSC}\n\tindented\rover\u{202e}drawn");
    let mut v: Value = serde_json::from_slice(&message_bytes("hostile-1", "manager", "human", &body)).unwrap();
    v["subject"] = Value::String(format!("subj{CSI}"));
    org.post_outbox("manager", "hostile-1", serde_json::to_vec(&v).unwrap());
    org.step();
    (org, body)
}

#[test]
fn a_message_body_with_escape_sequences_shows_escaped_in_inbox_and_unchanged_in_json() {
    let (org, body) = org_with_hostile_mail();

    let json = org.lemming_ok(&["inbox", "--json", "--peek"]).json();
    assert_eq!(json[0]["body"], body.as_str(), "--json must carry the body unchanged");
    assert_eq!(json[0]["subject"], format!("subj{CSI}").as_str());

    let out = org.lemming_ok(&["inbox", "--peek"]);
    inert(&out, "inbox");
    for shown in ["red \\x1b[31malert", "retitle \\x1b]0;title\\x07", "subject: subj\\x1b[31m", "\\rover\\u{202e}drawn"]
    {
        assert!(out.stdout.contains(shown), "inbox lacks {shown:?}\n{out}");
    }
    // The body's own newlines and tabs are kept: each of its lines is its own line.
    assert!(out.stdout.lines().any(|l| l.trim_start() == "retitle \\x1b]0;title\\x07"), "{out}");
    assert!(out.stdout.contains("\n  \tindented"), "the tab was not kept\n{out}");

    // --follow prints through the same renderer.
    let mut child = org.command(&["inbox", "--peek", "--follow"]).stdout(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    child.kill().unwrap();
    let got = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&got.stdout);
    assert!(stdout.contains("red \\x1b[31malert") && !stdout.contains('\x1b'), "{stdout}");
}

#[test]
fn model_text_and_errors_show_escaped_in_logs_step_inspect_chat_and_diagnostics() {
    let org = TestOrg::new();
    org.script(
        "manager",
        "[[reply]]\nagent = \"manager\"\nturn = 1\n\
         text = '{\"messages\":[{\"to\":\"human\",\"body\":\"hi \\u001b[2J\"}],\"notes\":\"noted \\u001b]0;pwned\\u0007 done\"}'\n\
         [[reply]]\nagent = \"manager\"\nturn = 2\nerror = \"down \\u001b[31m hard\"\n",
    );
    org.send("manager", "one");
    org.step();
    org.send("manager", "two");
    let out = org.lemming_ok(&["step"]);
    inert(&out, "step");
    assert!(out.stdout.contains("down \\x1b[31m hard"), "{out}");

    let out = org.lemming_ok(&["logs", "manager"]);
    inert(&out, "logs");
    assert!(out.stdout.contains("noted \\x1b]0;pwned\\x07 done"), "{out}");
    assert!(out.stdout.contains("down \\x1b[31m hard"), "{out}");
    // The JSON lines keep the text as the model wrote it.
    let json = org.lemming_ok(&["logs", "manager", "--json"]);
    let first: Value = serde_json::from_str(json.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(first["notes"], "noted \x1b]0;pwned\x07 done");

    let out = org.lemming_ok(&["inspect", "manager"]);
    inert(&out, "inspect");
    assert!(out.stdout.contains("trouble:    provider_down") && out.stdout.contains("\\x1b[31m"), "{out}");
    let out = org.lemming_ok(&["inbox", "--peek"]);
    inert(&out, "inbox");
    assert!(out.stdout.contains("hi \\x1b[2J"), "{out}");
    inert(&org.lemming_ok(&["status"]), "status");

    // chat: the mock echoes the line back, escape sequence included.
    let org = TestOrg::new();
    let mut child = org
        .command(&["chat", "manager"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(format!("hello {OSC}\n").as_bytes()).unwrap();
    let got = child.wait_with_output().unwrap();
    let out = Output {
        command: "lemming chat manager".into(),
        stdout: String::from_utf8_lossy(&got.stdout).into(),
        stderr: String::from_utf8_lossy(&got.stderr).into(),
        code: got.status.code(),
        signal: None,
    };
    assert_eq!(out.code, Some(0), "{out}");
    inert(&out, "chat");
    assert!(out.stdout.contains("manager received: hello \\x1b]0;title\\x07"), "{out}");

    // Diagnostics quote the file: a control character in org.toml is shown
    // as U+FFFD in the snippet, so the caret stays under its column.
    org.write("org/org.toml", format!("max_parallel = \"{CSI}\"\n"));
    let out = org.lemming(&["validate"]).fails_with(1);
    inert(&out, "validate");
    assert!(out.stderr.contains("max_parallel = \"\u{FFFD}[31m\""), "{out}");
    // And so do paths in errors.
    let out = run(&mut clean_command(&["--org", &format!("/nonexistent/{CSI}org"), "status"])).fails_with(1);
    inert(&out, "--org error");
    assert!(out.stderr.contains("/nonexistent/\\x1b[31morg"), "{out}");
}

#[test]
fn status_inspect_and_inbox_show_a_bad_file_and_go_on() {
    let org = TestOrg::new();
    org.send("manager", "hello @planner");
    org.step();
    org.send("manager", "again");
    // A corrupt attempts file, a torn ledger line, an activity log that is a
    // folder, a corrupt memory file beside a good one, a dead-letter reason
    // that is a folder and a folder among the human's unread mail.
    org.write("agents/planner/inbox/.attempts.json", "{not json");
    let ledger = org.read("org/state/ledger.jsonl");
    org.write("org/state/ledger.jsonl", format!("{{\"kind\":\"charge\" garbage\n{ledger}"));
    fs::remove_file(org.path("agents/manager/logs/activity.jsonl")).unwrap();
    fs::create_dir_all(org.path("agents/manager/logs/activity.jsonl")).unwrap();
    org.write("agents/planner/memory/good.json", "\"kept\"");
    org.write("agents/planner/memory/bad.json", "{torn");
    fs::create_dir_all(org.path("org/state/dead/odd.why.json")).unwrap();
    fs::create_dir_all(org.path("agents/human/inbox/new/zzz-odd.json")).unwrap();

    let out = org.lemming_ok(&["status"]);
    for needle in ["cannot read:", ".attempts.json", "activity.jsonl", "line 1 is not a ledger entry"] {
        assert!(out.stdout.contains(needle), "status lacks {needle:?}\n{out}");
    }
    assert!(out.stdout.contains("planner"), "{out}");
    let json = org.status_json();
    let unreadable = json["unreadable"].as_array().unwrap();
    assert_eq!(unreadable.len(), 3, "{json:#}");
    assert!(json["agents"].as_array().unwrap().iter().any(|a| a["name"] == "planner" && a["unread"] == 1), "{json:#}");

    let out = org.lemming_ok(&["inspect", "planner"]);
    assert!(out.stdout.contains("good: \"kept\""), "the good memory key is not shown\n{out}");
    assert!(out.stdout.contains("cannot read:") && out.stdout.contains("memory/bad.json"), "{out}");
    assert!(out.stdout.contains(".attempts.json"), "{out}");
    let out = org.lemming_ok(&["inspect", "manager"]);
    assert!(out.stdout.contains("activity.jsonl"), "{out}");

    let out = org.lemming_ok(&["inbox", "--peek"]);
    assert!(out.stdout.contains("manager received: hello @planner"), "the good mail is not shown\n{out}");
    assert!(out.stderr.contains("zzz-odd.json"), "the odd entry is not named\n{out}");

    // fsck names what it cannot read and still checks the rest.
    let out = org.lemming(&["fsck"]);
    assert!(out.code == Some(0) || out.code == Some(1), "{out}");
    assert!(out.stdout.contains("odd.why.json"), "{out}");
    assert!(out.stdout.contains("fsck: "), "{out}");
}

#[test]
fn fsck_reports_an_unreadable_ledger_once_and_no_missing_charges() {
    let org = TestOrg::new();
    for body in ["one", "two", "three"] {
        org.send("manager", body);
        org.step();
    }
    fs::remove_file(org.path("org/state/ledger.jsonl")).unwrap();
    fs::create_dir_all(org.path("org/state/ledger.jsonl")).unwrap();
    let out = org.lemming(&["--json", "fsck"]);
    let findings = out.json()["findings"].as_array().cloned().unwrap();
    let about_ledger: Vec<&Value> =
        findings.iter().filter(|f| f["paths"].to_string().contains("ledger.jsonl")).collect();
    assert_eq!(about_ledger.len(), 1, "{out}");
    assert_eq!(about_ledger[0]["code"], "unreadable_file", "{out}");
    assert!(!findings.iter().any(|f| f["code"] == "missing_charge"), "{out}");
    // status goes on without it.
    let out = org.lemming_ok(&["status"]);
    assert!(out.stdout.contains("cannot read:") && out.stdout.contains("ledger.jsonl"), "{out}");
}

/// Activity lines of `logs NAME --json` and the head lines of `logs NAME`.
fn logged_turns(org: &TestOrg, agent: &str) -> (Vec<u64>, Vec<String>) {
    let json = org.lemming_ok(&["logs", agent, "--json"]);
    let turns =
        json.stdout.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["turn"].as_u64().unwrap()).collect();
    let text = org.lemming_ok(&["logs", agent]);
    let heads = text.stdout.lines().filter(|l| l.starts_with("turn ")).map(String::from).collect();
    (turns, heads)
}

#[test]
fn logs_shows_a_run_replayed_after_a_crash_once_with_one_cost() {
    let org = TestOrg::new();
    org.send("manager", "hello");
    // The run is logged (and charged), then the process dies before the turn commits.
    let crashed = run(org.command(&["step"]).env("LEMMING_CRASH_AT", "effects"));
    assert!(crashed.code != Some(0), "the crash point was not reached\n{crashed}");
    let report = org.step();
    assert_eq!(report["replayed"], serde_json::json!(["manager"]), "{report:#}");

    let raw = org.activity("manager");
    assert_eq!(raw.len(), 2, "the replay is logged, marked: {raw:#?}");
    assert_eq!(raw[1]["replay"], true, "{raw:#?}");
    assert!(raw[0].get("replay").is_none(), "{raw:#?}");

    let (turns, heads) = logged_turns(&org, "manager");
    assert_eq!(turns, vec![1], "logs --json shows the run twice");
    assert_eq!(heads.len(), 1, "logs shows the run twice: {heads:#?}");
    let charges = org.ledger().iter().filter(|e| e["kind"] == "charge" && e["agent"] == "manager").count();
    assert_eq!(charges, 1);

    // A crash before the run was logged: the replay is its only entry, shown and marked.
    let org = TestOrg::new();
    org.send("manager", "hello");
    let crashed = run(org.command(&["step"]).env("LEMMING_CRASH_AT", "journaled"));
    assert!(crashed.code != Some(0), "{crashed}");
    org.step();
    let (turns, heads) = logged_turns(&org, "manager");
    assert_eq!(turns, vec![1]);
    assert_eq!(heads.len(), 1, "{heads:#?}");
    assert!(heads[0].contains("after a crash"), "{heads:#?}");
}

#[test]
fn help_says_what_lemming_is_lists_exit_codes_and_orders_commands_by_use() {
    let out = run(&mut clean_command(&["--help"])).ok();
    assert!(out.stdout.starts_with("lemming runs an organization of LLM agents"), "{out}");
    for code in ["0 ok", "1 an error", "2 a usage error", "3 the org is locked"] {
        assert!(out.stdout.contains(code), "--help lacks exit code {code:?}\n{out}");
    }
    let order = [
        "init", "send", "step", "inbox", "chat", "thread", "search", "replay", "export", "status", "logs", "agents",
        "inspect", "run", "serve", "pause", "resume", "stop", "validate", "models", "doctor", "top-up", "fsck",
        "reindex", "backup", "restore",
    ];
    let listed: Vec<&str> = out
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert_eq!(listed, order, "{out}");

    for cmd in order {
        let out = run(&mut clean_command(&[cmd, "--help"])).ok();
        let about = out.stdout.lines().next().unwrap_or_default();
        assert!(about.len() > 10 && !about.starts_with("Usage"), "{cmd} --help does not say what it does\n{out}");
        // Every option that takes a value names it by what it is, not by the option's own name.
        for l in out.stdout.lines().map(str::trim_start).filter(|l| l.starts_with('-')) {
            if let (Some(long), Some(value)) = (l.split_whitespace().find(|w| w.starts_with("--")), l.split_once('<')) {
                let value = value.1.split('>').next().unwrap();
                let own = long.trim_start_matches("--").to_uppercase().replace('-', "_");
                assert_ne!(value, own, "{cmd}: {l:?} names no value\n{out}");
            }
        }
    }
    for cmd in ["step", "run"] {
        let out = run(&mut clean_command(&[cmd, "--help"])).ok();
        assert!(out.stdout.contains("3 the org is locked"), "{cmd} --help lacks exit code 3\n{out}");
    }
    let out = run(&mut clean_command(&["stop", "--help"])).ok();
    assert!(out.stdout.contains("--wait <SECONDS>"), "{out}");
}

#[test]
fn inspect_speaks_the_files_words_and_people_have_no_credits_column_value() {
    let org = TestOrg::new();
    let out = org.lemming_ok(&["inspect", "planner"]);
    assert!(out.stdout.contains("wake mail"), "{out}");
    assert!(!out.stdout.contains("wake Mail"), "a Rust name leaked\n{out}");
    let out = org.lemming_ok(&["inspect", "human"]);
    assert!(out.stdout.contains("credits:    -"), "{out}");

    for cmd in ["status", "agents"] {
        let out = org.lemming_ok(&[cmd]);
        let header: Vec<&str> =
            out.stdout.lines().find(|l| l.starts_with("AGENT ")).unwrap().split_whitespace().collect();
        let human: Vec<&str> = out
            .stdout
            .lines()
            .find(|l| l.starts_with("human "))
            .unwrap_or_else(|| panic!("{out}"))
            .split_whitespace()
            .collect();
        for column in ["CREDITS", "SPENT"] {
            if let Some(i) = header.iter().position(|h| *h == column) {
                assert_eq!(human[i], "-", "{cmd}: the human's {column} is {:?}\n{out}", human[i]);
            }
        }
    }
    // Mail from an urgent sender shows its priority as the file spells it.
    org.lemming_ok(&["send", "--from", "manager", "--priority", "urgent", "human", "now"]);
    org.step();
    assert!(org.lemming_ok(&["inbox", "--peek"]).stdout.contains("[urgent]"));
}

#[test]
fn a_zero_turn_count_is_a_usage_error() {
    let org = TestOrg::new();
    org.send("manager", "hello");
    let out = org.lemming(&["step", "-n", "0"]).fails_with(2);
    assert!(out.stderr.contains("1 or more"), "{out}");
    assert_eq!(org.turn(), 0, "a refused step ran a turn");
    org.lemming(&["run", "--turns", "0"]).fails_with(2);
}

#[test]
fn an_org_flag_that_is_not_an_org_says_what_it_is_and_quotes_suggested_commands() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("notes.txt");
    fs::write(&file, "x").unwrap();
    let mut cases = vec![(file.clone(), "it is a file", false)];
    if std::path::Path::new("/etc/passwd").is_file() {
        cases.push(("/etc/passwd".into(), "it is a file", false));
    }
    let busy = tmp.path().join("busy");
    fs::create_dir_all(busy.join("src")).unwrap();
    cases.push((busy, "it has no org/org.toml", false));
    let empty = tmp.path().join("my empty org");
    fs::create_dir_all(&empty).unwrap();
    cases.push((empty.clone(), "empty folder", true));
    cases.push((tmp.path().join("not yet"), "does not exist", true));
    for (path, says, init) in cases {
        let out = run(&mut clean_command(&["--org", path.to_str().unwrap(), "status"])).fails_with(1);
        assert!(out.stderr.contains(says), "{out}");
        assert_eq!(out.stderr.contains("lemming init"), init, "init suggested where it would not work\n{out}");
        if init {
            let quoted = format!("lemming init '{}'", path.display());
            assert!(out.stderr.contains(&quoted), "the path is not quoted for the shell\n{out}");
        }
    }
    // A folder inside an org points at the org.
    let org = TestOrg::new();
    let out = run(&mut clean_command(&["--org", org.path("agents").to_str().unwrap(), "status"])).fails_with(1);
    assert!(out.stderr.contains(&format!("inside the org at {}", org.root.display())), "{out}");

    // init's next steps quote the folder too.
    let out = run(clean_command(&["init", empty.to_str().unwrap()]).current_dir(tmp.path())).ok();
    assert!(out.stderr.contains(&format!("cd '{}' &&", empty.display())), "{out}");
}

#[test]
fn make_demo_runs_with_cargo_target_dir_set_and_shows_errors() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if std::process::Command::new("make").arg("--version").output().is_err() {
        eprintln!("skipped: no make on this machine");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // A target folder elsewhere, holding the binary under test as its release build;
    // CARGO=true stands in for the build, already done.
    let target = tmp.path().join("elsewhere-target");
    fs::create_dir_all(target.join("release")).unwrap();
    fs::copy(BIN, target.join("release/lemming")).unwrap();
    let target = target.canonicalize().unwrap();
    let make = |demo_dir: &std::path::Path| {
        let mut cmd = std::process::Command::new("make");
        cmd.current_dir(&repo)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("CARGO_TARGET_DIR", &target)
            .args(["--no-print-directory", "demo", "CARGO=true"])
            .arg(format!("DEMO_DIR={}", demo_dir.display()));
        run(&mut cmd)
    };
    let out = make(&tmp.path().join("demo"));
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stdout.contains("== lemming status") && out.stdout.contains("AGENT"), "{out}");
    // The demo shows agents using tools: a file written, a hire, and a refusal.
    assert!(out.stdout.contains("tool write_file (call ") && out.stdout.contains("# Launch plan"), "{out}");
    assert!(out.stdout.contains("tool hire_agent failed: not permitted"), "{out}");
    assert!(tmp.path().join("demo/agents/tester/resume.toml").is_file(), "{out}");
    assert!(tmp.path().join("demo/org/org.toml").is_file(), "{out}");

    // A demo folder that is not empty: init's error is shown and make fails.
    let busy = tmp.path().join("busy");
    fs::create_dir_all(&busy).unwrap();
    fs::write(busy.join("mine.txt"), "x").unwrap();
    let out = make(&busy);
    assert_ne!(out.code, Some(0), "{out}");
    assert!(out.stderr.contains("not empty"), "init's error is hidden\n{out}");
}

#[test]
fn the_readme_installs_the_locked_cli_package_and_says_how_long_it_takes() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = fs::read_to_string(root.join("README.md")).unwrap();
    let line = readme
        .lines()
        .find(|l| l.starts_with("cargo install"))
        .unwrap_or_else(|| panic!("the README has no cargo install line"));
    assert!(line.starts_with("cargo install --locked --path crates/cli"), "{line}");
    assert!(line.contains("minute"), "no time estimate: {line}");
    let manifest = fs::read_to_string(root.join("crates/cli/Cargo.toml")).unwrap();
    assert!(manifest.contains("name = \"lemming\""), "crates/cli does not build the lemming binary");
}
