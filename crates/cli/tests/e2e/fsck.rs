//! `lemming fsck` (guarantee G3–G7): a clean org passes, also while a daemon
//! runs turns; lost, duplicated and double-charged state on disk is named by
//! its code, and the exit code is 1.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fixture::TestOrg;

/// Runs `lemming fsck --json` and asserts that it finds no violation (notes are fine).
#[track_caller]
pub fn assert_no_violations(org: &TestOrg, context: &str) {
    let out = org.lemming(&["fsck", "--json"]);
    let report = out.json();
    assert_eq!(report["violations"], 0, "{context}: fsck found violations\n{out}");
    assert_eq!(out.code, Some(0), "{context}: fsck found no violation but failed\n{out}");
    assert_eq!(report["ok"], true, "{context}\n{out}");
}

/// The codes of the findings with this severity, in report order.
fn codes(report: &Value, severity: &str) -> Vec<String> {
    report["findings"]
        .as_array()
        .unwrap_or_else(|| panic!("no findings list: {report:#}"))
        .iter()
        .filter(|f| f["severity"] == severity)
        .map(|f| f["code"].as_str().unwrap().to_string())
        .collect()
}

/// The paths of the findings with this code.
fn paths(report: &Value, code: &str) -> Vec<String> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["code"] == code)
        .flat_map(|f| f["paths"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()))
        .collect()
}

/// What `make demo` does.
fn demo(org: &TestOrg) -> String {
    let id = org.send("manager", "Please plan the launch @planner");
    org.send("manager", "/tool write_file {\"path\":\"launch.md\",\"content\":\"# Launch plan\"}");
    org.send(
        "manager",
        "@hr we need a tester\n/tool hire_agent {\"name\":\"tester\",\"title\":\"Tester\",\"instructions\":\"Test.\",\
         \"send_to\":[\"hr\"],\"read_from\":[\"hr\"],\"credits\":5}",
    );
    org.lemming_ok(&["step", "-n", "3"]);
    org.lemming_ok(&["inbox"]);
    org.lemming_ok(&["inbox", "manager", "--all"]);
    org.lemming_ok(&["status"]);
    id
}

#[test]
fn a_clean_org_after_the_demo_passes() {
    let org = TestOrg::new();
    demo(&org);
    let out = org.lemming_ok(&["fsck", "--json"]);
    let report = out.json();
    assert_eq!(report["ok"], true, "{out}");
    assert_eq!(report["violations"], 0, "{out}");
    assert_eq!(report["notes"], codes(&report, "note").len(), "{out}");
    assert!(codes(&report, "note").contains(&"lock_free".to_string()), "{out}");

    let out = org.lemming_ok(&["fsck"]);
    let last = out.stdout.lines().last().unwrap_or_default();
    assert!(last.starts_with("fsck: 0 violations, "), "{out}");
    assert!(out.stderr.is_empty(), "{out}");

    // It needs no valid config, only the org folder.
    org.write("org/org.toml", "max_parallel = \"many\"\n");
    org.lemming_ok(&["fsck"]);
}

#[test]
fn duplicated_lost_and_double_charged_state_is_named_and_exits_1() {
    let org = TestOrg::new();
    let asked = demo(&org);

    // The planner read the manager's forward; a copy of it comes back as unread.
    let read = org.ids("planner", "inbox", "cur");
    let forward = read.iter().find(|id| id.contains("-manager-")).expect("the planner read the manager's forward");
    let dup = format!("agents/planner/inbox/new/{forward}.json");
    org.write(&dup, org.read(&format!("agents/planner/inbox/cur/{forward}.json")));
    // The manager's first charge is appended again.
    let ledger = org.read("org/state/ledger.jsonl");
    let first = ledger.lines().find(|l| l.contains("\"charge\"")).unwrap();
    org.write("org/state/ledger.jsonl", format!("{ledger}{first}\n"));
    // The manager's copy of the human's message disappears.
    std::fs::remove_file(org.path(&format!("agents/manager/inbox/cur/{asked}.json"))).unwrap();

    let out = org.lemming(&["fsck", "--json"]).fails_with(1);
    out.stderr_has(&["3 violations"]);
    let report = out.json();
    assert_eq!(report["ok"], false, "{out}");
    assert_eq!(report["violations"], 3, "{out}");
    let mut violations = codes(&report, "violation");
    violations.sort();
    assert_eq!(violations, ["double_charge", "duplicate_message", "lost_message"], "{out}");
    assert!(paths(&report, "duplicate_message").contains(&dup), "{out}");
    assert_eq!(paths(&report, "lost_message"), [format!("agents/human/outbox/sent/{asked}.json")], "{out}");
    assert_eq!(paths(&report, "double_charge"), ["org/state/ledger.jsonl"], "{out}");

    let out = org.lemming(&["fsck"]).fails_with(1);
    for code in ["duplicate_message", "lost_message", "double_charge"] {
        assert!(out.stdout.contains(&format!("violation {code}: ")), "no line for {code}\n{out}");
    }
    assert!(out.stdout.lines().last().unwrap_or_default().starts_with("fsck: 3 violations, "), "{out}");
}

/// Kills the daemon if the test fails before it stops it.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn fsck_takes_no_lock_and_finds_nothing_wrong_while_a_daemon_runs_turns() {
    let org = TestOrg::new();
    let daemon = Daemon(
        org.command(&["run", "--turn-seconds", "1", "--rescan-seconds", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    let mut held = 0;
    for i in 0..30 {
        if i % 3 == 0 {
            org.send("manager", &format!("task {i} @planner @hr @coder_01"));
        }
        let out = org.lemming(&["fsck", "--json"]);
        let report = out.json();
        assert_eq!(report["violations"], 0, "round {i}: fsck found violations while the daemon ran\n{out}");
        held += codes(&report, "note").iter().filter(|c| *c == "lock_held").count();
        std::thread::sleep(Duration::from_millis(30));
    }
    assert!(held > 0, "fsck never saw the daemon hold the lock");
    assert!(started.elapsed() < Duration::from_secs(60));
    // SIGTERM, as `lemming stop` sends, then reap it (`stop` itself would wait
    // for the lock file's pid to die, and an unreaped child never does).
    // SAFETY: a signal to the daemon this test started.
    unsafe { libc::kill(daemon.0.id() as i32, libc::SIGTERM) };
    let mut daemon = daemon;
    let status = daemon.0.wait().unwrap();
    assert!(status.success(), "the daemon did not stop cleanly: {status:?}");
    assert!(org.status_json()["turn"].as_u64().unwrap() > 0, "the daemon ran no turn; the test proved nothing");
    assert_no_violations(&org, "after the daemon stopped");
}
