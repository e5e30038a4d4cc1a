//! Entries of `outbox/new/` and `inbox/new/` that are not plain message files:
//! directories, symbolic links of every kind, FIFOs, sockets, devices, names
//! that do not end in `.json`, and a second message reusing a delivered id.
//! Each is set aside in `dead/` with its reason; every other message flows.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fixture::{message_bytes, read_json, run, Output, TestOrg};

/// `lemming ARGS`, killed (and the test failed) if it has not finished within
/// 60 s: a FIFO once made commands hang forever.
#[track_caller]
fn in_time(org: &TestOrg, args: &[&str]) -> Output {
    let mut child =
        org.command(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("cannot run lemming");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!("lemming {args:?} did not finish within 60 s\n{}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    Output {
        command: format!("lemming {}", args.join(" ")),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code(),
        signal: std::os::unix::process::ExitStatusExt::signal(&out.status),
    }
}

/// `lemming --json step` within 60 s: the report of its turn.
#[track_caller]
fn step_in_time(org: &TestOrg) -> Value {
    in_time(org, &["--json", "step"]).ok().json()[0].clone()
}

/// The kinds of odd entry a test can make here, by name.
const KINDS: [&str; 8] = [
    "directory",
    "dangling_symlink",
    "symlink_to_dev_zero",
    "symlink_to_a_message",
    "symlink_to_a_folder",
    "fifo",
    "socket",
    "char_device",
];

/// Makes an odd entry of `kind` at `path`; returns false when this system does
/// not allow it (a device node needs privileges). A socket's listener is
/// returned so that it stays bound.
fn make(org: &TestOrg, kind: &str, path: &Path) -> Option<Option<std::os::unix::net::UnixListener>> {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    match kind {
        "directory" => {
            fs::create_dir(path).unwrap();
            fs::write(path.join("inside.txt"), "kept").unwrap();
        }
        "dangling_symlink" => symlink(org.tmp.path().join("nowhere"), path).unwrap(),
        "symlink_to_dev_zero" => symlink("/dev/zero", path).unwrap(),
        "symlink_to_a_message" => {
            // A valid message the chart allows, outside the org: whoever controls it
            // could rewrite it after the check, so it must never be delivered.
            let outside = org.tmp.path().join("outside.json");
            let id = "20260101T000000000Z-planner-viasymlink";
            fs::write(&outside, message_bytes(id, "planner", "manager", "via a link")).unwrap();
            symlink(&outside, path).unwrap();
        }
        "symlink_to_a_folder" => symlink(org.tmp.path(), path).unwrap(),
        "fifo" => {
            let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
            // SAFETY: a valid NUL-terminated path.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo failed");
        }
        "socket" => return Some(Some(std::os::unix::net::UnixListener::bind(path).unwrap())),
        "char_device" => {
            let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
            // SAFETY: a valid NUL-terminated path; the numbers are those of /dev/null.
            if unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o644, libc::makedev(1, 3)) } != 0 {
                return None;
            }
        }
        other => panic!("unknown kind {other}"),
    }
    Some(None)
}

/// No inbox, sent folder or dead letter of the org holds a symbolic link.
#[track_caller]
fn assert_no_links(org: &TestOrg) {
    let mut dirs = vec![org.path("org/state/dead")];
    for a in org.agent_folders() {
        for sub in ["inbox/new", "inbox/cur", "outbox/sent"] {
            dirs.push(org.path(&format!("agents/{a}/{sub}")));
        }
    }
    for d in dirs {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            assert!(!e.file_type().unwrap().is_symlink(), "{} is a symbolic link", e.path().display());
        }
    }
}

#[track_caller]
fn fsck_clean(org: &TestOrg) {
    let out = org.lemming(&["fsck"]);
    assert_eq!(out.code, Some(0), "fsck found violations\n{out}");
}

/// The bounces an agent got, read or not.
#[track_caller]
fn bounces(org: &TestOrg, agent: &str) -> Vec<Value> {
    let all = org.lemming_ok(&["inbox", agent, "--all", "--json"]).json();
    all.as_array().unwrap().iter().filter(|m| m["kind"] == "bounce").cloned().collect()
}

/// The only dead letter, with its id.
#[track_caller]
fn only_dead(org: &TestOrg) -> (String, Value) {
    let dead = org.dead();
    assert_eq!(dead.len(), 1, "{dead:#?}");
    dead.into_iter().next().unwrap()
}

#[test]
fn each_odd_entry_in_an_outbox_goes_to_dead_and_every_other_message_is_delivered() {
    for kind in KINDS {
        let org = TestOrg::new();
        let human = org.send("manager", "status please");
        let good = "20260101T000000000Z-planner-good01";
        org.drop_outbox("planner", &format!("{good}.json"), message_bytes(good, "planner", "manager", "plan ready"));
        let entry = org.path("agents/planner/outbox/new/00-odd.json");
        let Some(_listener) = make(&org, kind, &entry) else {
            eprintln!("{kind}: not possible here, skipped");
            continue;
        };

        let report = step_in_time(&org);
        assert_eq!(report["dead"], 1, "{kind}: {report:#}");
        let (id, why) = only_dead(&org);
        assert_eq!(why["reason"], "not_a_regular_file", "{kind}: {why:#}");
        assert_eq!(why["mailbox"], "planner", "{kind}");
        assert!(why["detail"].as_str().unwrap().contains("00-odd.json"), "{kind}: {why:#}");
        assert!(fs::symlink_metadata(&entry).is_err(), "{kind}: the entry is still in the outbox");

        // The dead letter is a regular file: a note, since nothing was read.
        let letter = org.path(&format!("org/state/dead/{id}.json"));
        assert!(fs::symlink_metadata(&letter).unwrap().file_type().is_file(), "{kind}: the dead letter is no file");
        let note = read_json(&letter);
        assert!(note["note"].as_str().unwrap().contains("nothing was read"), "{kind}: {note:#}");
        if kind == "directory" {
            let aside = org.path(note["moved_to"].as_str().unwrap());
            assert_eq!(fs::read_to_string(aside.join("inside.txt")).unwrap(), "kept", "{kind}: contents lost");
        }
        if kind == "symlink_to_a_message" {
            assert!(!org.ids("manager", "inbox", "cur").iter().any(|i| i.contains("viasymlink")), "delivered");
            assert!(!org.ids("manager", "inbox", "new").iter().any(|i| i.contains("viasymlink")), "delivered");
            assert_eq!(note["target"], org.tmp.path().join("outside.json").to_str().unwrap(), "{note:#}");
        }
        assert_no_links(&org);

        // Every other message went through, and the sender was told.
        let cur = org.ids("manager", "inbox", "cur");
        assert!(cur.contains(&good.to_string()) && cur.contains(&human), "{kind}: mail lost: {cur:?}");
        let bounces = bounces(&org, "planner");
        assert_eq!(bounces.len(), 1, "{kind}: {bounces:#?}");
        assert!(bounces[0]["body"].as_str().unwrap().contains("not a regular file"), "{kind}: {:#}", bounces[0]);

        // Nothing is left to do again, and the org is sound.
        let again = step_in_time(&org);
        assert_eq!(again["dead"], 0, "{kind}: {again:#}");
        assert_eq!(org.dead().len(), 1, "{kind}");
        fsck_clean(&org);
    }
}

#[test]
fn odd_entries_in_an_inbox_go_to_dead_before_the_agent_runs() {
    let org = TestOrg::new();
    let dir = org.path("agents/manager/inbox/new");
    fs::create_dir_all(&dir).unwrap();
    let mut made = 0;
    let mut listeners = Vec::new();
    for kind in KINDS {
        if let Some(l) = make(&org, kind, &dir.join(format!("{kind}.json"))) {
            listeners.extend(l);
            made += 1;
        }
    }
    let id = org.send("manager", "hi");

    let report = step_in_time(&org);
    assert_eq!(report["dead"], made, "{report:#}");
    assert_eq!(report["ran"], serde_json::json!(["manager"]), "{report:#}");
    let dead = org.dead();
    assert_eq!(dead.values().filter(|w| w["reason"] == "not_a_regular_file").count(), made, "{dead:#?}");
    assert!(org.files("agents/manager/inbox/new").is_empty());
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0, "odd entries left in the inbox");
    assert_eq!(org.inbox_json("human")[0]["reply_to"], id.as_str());
    assert_no_links(&org);
    fsck_clean(&org);
}

#[test]
fn fsck_reports_odd_entries_without_following_or_blocking() {
    let org = TestOrg::new();
    let _l = make(&org, "fifo", &org.path("agents/manager/inbox/new/pipe.json"));
    let _l = make(&org, "symlink_to_dev_zero", &org.path("agents/planner/inbox/cur/zero.json"));
    let report = in_time(&org, &["--json", "fsck"]).json();
    let odd: Vec<&Value> =
        report["findings"].as_array().unwrap().iter().filter(|f| f["code"] == "not_a_regular_file").collect();
    assert_eq!(odd.len(), 2, "{report:#}");
    assert!(odd.iter().any(|f| f["message"].as_str().unwrap().contains("FIFO")), "{odd:#?}");
}

#[test]
fn a_file_whose_name_is_not_json_goes_to_dead_as_malformed() {
    let org = TestOrg::new();
    let id = "20260101T000000000Z-planner-txt001";
    let bytes = message_bytes(id, "planner", "manager", "plan ready");
    org.drop_outbox("planner", "plan.txt", &bytes);
    // A name that is not UTF-8 is not ignored either.
    let weird = org.path("agents/planner/outbox/new").join(std::ffi::OsStr::from_bytes(b"caf\xe9"));
    fs::write(&weird, "x").unwrap();
    // Names starting with a dot are files being written: left alone.
    org.drop_outbox("planner", ".partial.json", "{");

    let report = step_in_time(&org);
    assert_eq!(report["dead"], 2, "{report:#}");
    let dead = org.dead();
    assert_eq!(dead.values().filter(|w| w["reason"] == "malformed").count(), 2, "{dead:#?}");
    let (txt, why) = dead.iter().find(|(_, w)| w["detail"].as_str().unwrap().contains("plan.txt")).unwrap();
    assert!(why["detail"].as_str().unwrap().contains(".json"), "{why:#}");
    assert_eq!(fs::read(org.path(&format!("org/state/dead/{txt}.json"))).unwrap(), bytes, "bytes not kept");
    assert_eq!(org.files("agents/planner/outbox/new"), vec![".partial.json"]);
    assert!(org.ids("manager", "inbox", "cur").is_empty() && org.ids("manager", "inbox", "new").is_empty());
    let bounces = bounces(&org, "planner");
    assert_eq!(bounces.len(), 2, "{bounces:#?}");
}

/// The `dead` events of `org/state/events.jsonl`.
fn dead_events(org: &TestOrg) -> Vec<Value> {
    org.read("org/state/events.jsonl")
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["event"] == "dead")
        .collect()
}

#[test]
fn a_second_message_with_a_delivered_id_and_other_content_goes_to_dead_as_duplicate_id() {
    let org = TestOrg::new();
    let id = "20260101T000000000Z-planner-dup001";
    let first = message_bytes(id, "planner", "manager", "the first");
    org.drop_outbox("planner", &format!("{id}.json"), &first);
    step_in_time(&org);
    assert!(org.ids("manager", "inbox", "cur").contains(&id.to_string()));

    // The same bytes again (a copy, not a link): idempotent, nothing new.
    org.drop_outbox("planner", &format!("{id}.json"), &first);
    let report = step_in_time(&org);
    assert_eq!(report["dead"], 0, "{report:#}");
    assert!(org.dead().is_empty());

    // Other bytes under the same id: refused, never silently dropped.
    org.drop_outbox("planner", &format!("{id}.json"), message_bytes(id, "planner", "manager", "the second"));
    let report = step_in_time(&org);
    assert_eq!(report["dead"], 1, "{report:#}");
    let (dead_id, why) = only_dead(&org);
    assert_eq!(why["reason"], "duplicate_id", "{why:#}");
    assert!(why["detail"].as_str().unwrap().contains("already delivered to manager"), "{why:#}");
    assert!(
        String::from_utf8_lossy(&fs::read(org.path(&format!("org/state/dead/{dead_id}.json"))).unwrap())
            .contains("the second"),
        "the dead letter is not the refused message"
    );
    let copy = read_json(&org.path(&format!("agents/manager/inbox/cur/{id}.json")));
    assert_eq!(copy["body"], "the first", "the delivered message was changed");
    assert_eq!(read_json(&org.path(&format!("agents/planner/outbox/sent/{id}.json")))["body"], "the first");
    assert!(org.files("agents/planner/outbox/new").is_empty());
    let bounce = bounces(&org, "planner");
    assert_eq!(bounce.len(), 1, "{bounce:#?}");
    assert_eq!(bounce[0]["reply_to"], id);
    assert!(dead_events(&org).iter().any(|e| e["reason"] == "duplicate_id"), "no dead event");
    fsck_clean(&org);
}

#[test]
fn two_files_with_one_id_in_one_turn_deliver_one_and_refuse_the_other() {
    let org = TestOrg::new();
    let id = "20260101T000000000Z-planner-dup002";
    org.drop_outbox("planner", "a.json", message_bytes(id, "planner", "manager", "from a"));
    org.drop_outbox("planner", "b.json", message_bytes(id, "planner", "coder_01", "from b"));
    // A hard link of a delivered file is the same message, not a duplicate.
    fs::hard_link(org.path("agents/planner/outbox/new/a.json"), org.path("agents/planner/outbox/new/c.json")).unwrap();
    let report = step_in_time(&org);
    assert_eq!(report["dead"], 1, "{report:#}");
    let (_, why) = only_dead(&org);
    assert_eq!(why["reason"], "duplicate_id", "{why:#}");
    assert!(why["detail"].as_str().unwrap().contains("b.json") || why["to"] == serde_json::json!(["coder_01"]));
    assert!(org.ids("coder_01", "inbox", "new").is_empty() && org.ids("coder_01", "inbox", "cur").is_empty());
    fsck_clean(&org);
}

#[test]
fn fsck_reports_a_duplicate_id_left_over_in_sent() {
    let org = TestOrg::new();
    let id = "20260101T000000000Z-planner-dup003";
    org.drop_outbox("planner", &format!("{id}.json"), message_bytes(id, "planner", "manager", "the first"));
    step_in_time(&org);
    // What an older lemming did with a second message under that id: moved it to sent/.
    let sent = org.path(&format!("agents/planner/outbox/sent/{id}.json"));
    fs::remove_file(&sent).unwrap();
    fs::write(&sent, message_bytes(id, "planner", "manager", "the second")).unwrap();
    let out = org.lemming(&["--json", "fsck"]);
    assert_eq!(out.code, Some(1), "{out}");
    let report = out.json();
    let dup: Vec<&Value> =
        report["findings"].as_array().unwrap().iter().filter(|f| f["code"] == "duplicate_id").collect();
    assert_eq!(dup.len(), 1, "{report:#}");
    assert!(dup[0]["message"].as_str().unwrap().contains("new id"), "{:#}", dup[0]);
}

#[test]
fn lemming_inbox_moves_what_is_not_a_message_in_the_humans_inbox_to_dead() {
    let org = TestOrg::new();
    org.write("agents/human/inbox/new/broken.json", "not a message");
    let _l = make(&org, "fifo", &org.path("agents/human/inbox/new/pipe.json"));

    let peek = in_time(&org, &["inbox", "--peek"]).ok();
    peek.stderr_has(&["broken.json", "without --peek"]);
    assert!(org.path("agents/human/inbox/new/broken.json").exists(), "--peek moved it");

    let out = in_time(&org, &["inbox"]).ok();
    out.stderr_has(&["broken.json", "pipe.json", "moved to org/state/dead/"]);
    assert_eq!(fs::read_dir(org.path("agents/human/inbox/new")).unwrap().count(), 0);
    let dead = org.dead();
    let mut reasons: Vec<&str> = dead.values().map(|w| w["reason"].as_str().unwrap()).collect();
    reasons.sort();
    assert_eq!(reasons, ["malformed", "not_a_regular_file"], "{dead:#?}");
    assert!(dead.values().all(|w| w["mailbox"] == "human"));
    let (mid, _) = dead.iter().find(|(_, w)| w["reason"] == "malformed").unwrap();
    assert_eq!(org.read(&format!("org/state/dead/{mid}.json")), "not a message", "bytes not kept");
    assert_eq!(dead_events(&org).len(), 2);
    let again = org.lemming_ok(&["inbox"]);
    assert!(!again.stderr.contains("warning"), "{again}");
    fsck_clean(&org);
}

/// A step aborted at `point`, as a crash would.
fn crash_at(org: &TestOrg, point: &str) -> Output {
    let out = run(org.command(&["step"]).env("LEMMING_CRASH_AT", point));
    assert_eq!(out.signal, Some(libc::SIGABRT), "{point}: no crash\n{out}");
    out
}

#[test]
fn a_turn_repeated_after_a_crash_sets_an_odd_entry_aside_once() {
    for point in ["batch_renamed", "delivered"] {
        for kind in ["directory", "symlink_to_dev_zero"] {
            let org = TestOrg::new();
            let entry = org.path("agents/planner/outbox/new/odd.json");
            make(&org, kind, &entry).unwrap();
            let good = "20260101T000000000Z-planner-good02";
            org.drop_outbox("planner", &format!("{good}.json"), message_bytes(good, "planner", "manager", "hi"));
            crash_at(&org, point);
            step_in_time(&org);
            step_in_time(&org);
            let dead = org.dead();
            assert_eq!(dead.len(), 1, "{point} {kind}: {dead:#?}");
            assert!(fs::symlink_metadata(&entry).is_err(), "{point} {kind}: still in the outbox");
            let bounces = bounces(&org, "planner");
            assert_eq!(bounces.len(), 1, "{point} {kind}: {bounces:#?}");
            assert!(org.ids("manager", "inbox", "cur").contains(&good.to_string()), "{point} {kind}");
            fsck_clean(&org);
        }
    }
}

#[test]
fn bad_files_of_one_name_in_an_outbox_and_an_inbox_each_keep_their_dead_letter() {
    let org = TestOrg::new();
    org.drop_outbox("planner", "x.json", "outbox garbage");
    org.write("agents/planner/inbox/new/x.json", "inbox garbage");
    // Two inbox names that make the same dead-letter id.
    org.write("agents/planner/inbox/new/y z.json", "first");
    org.write("agents/planner/inbox/new/y_z.json", "second");
    let report = step_in_time(&org);
    assert_eq!(report["dead"], 4, "{report:#}");
    let dead = org.dead();
    assert_eq!(dead.len(), 4, "{dead:#?}");
    let mut kept: Vec<String> = dead.keys().map(|id| org.read(&format!("org/state/dead/{id}.json"))).collect();
    kept.sort();
    assert_eq!(kept, ["first", "inbox garbage", "outbox garbage", "second"]);
    fsck_clean(&org);
}

#[test]
fn a_refused_message_with_the_longest_id_still_bounces_as_a_message() {
    // The bounce's id is derived from the dead letter's; with a 128-byte id it
    // would be too long to be a message id, and the bounce itself would die.
    let org = TestOrg::new();
    let id = format!("20260101T000000000Z-planner-{}", "x".repeat(128 - 28));
    assert_eq!(id.len(), 128);
    // planner may not write to janitor: refused, bounced.
    org.drop_outbox("planner", &format!("{id}.json"), message_bytes(&id, "planner", "janitor", "hello"));
    let report = step_in_time(&org);
    assert_eq!(report["dead"], 1, "{report:#}");
    let (_, why) = only_dead(&org);
    assert_eq!(why["reason"], "chart_send_to", "{why:#}");
    let bounce = bounces(&org, "planner");
    assert_eq!(bounce.len(), 1, "{bounce:#?}");
    assert_eq!(bounce[0]["reply_to"], id.as_str());
    assert!(bounce[0]["id"].as_str().unwrap().len() <= 128, "{bounce:#?}");
    // The same again on a repeated pass: one bounce, no dead bounce.
    step_in_time(&org);
    assert_eq!(bounces(&org, "planner").len(), 1);
    assert_eq!(org.dead().len(), 1);
    fsck_clean(&org);
}

#[test]
fn an_activity_log_that_is_a_fifo_or_a_link_blocks_nothing() {
    // The class is wider than mailboxes: an agent's activity log is read by
    // `status`, `inspect` and `logs`, and appended to by the turn.
    for kind in ["fifo", "symlink_to_dev_zero"] {
        let org = TestOrg::new();
        let log = org.path("agents/manager/logs/activity.jsonl");
        fs::create_dir_all(log.parent().unwrap()).unwrap();
        if kind == "fifo" {
            let c = std::ffi::CString::new(log.as_os_str().as_bytes()).unwrap();
            // SAFETY: a valid NUL-terminated path.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo failed");
        } else {
            symlink("/dev/zero", &log).unwrap();
        }
        org.send("manager", "hello");
        let report = step_in_time(&org);
        // The run counts; only its log line is lost, and the agent shows why.
        assert_eq!(report["ran"], serde_json::json!(["manager"]), "{kind}: {report:#}");
        let status = in_time(&org, &["status"]).ok();
        assert!(status.stdout.contains("activity.jsonl"), "{kind}: {status}");
        let logs = in_time(&org, &["logs", "manager"]);
        assert_eq!(logs.code, Some(1), "{kind}: {logs}");
        assert!(logs.stderr.contains("not a regular file") || logs.stderr.contains("not followed"), "{kind}: {logs}");
        in_time(&org, &["inspect", "manager"]).ok();
    }
}
