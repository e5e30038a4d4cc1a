//! An org that spans nodes (`[cluster]` in org.toml, `node` in resumes): what
//! `validate` and `agents` say, what a process that is one node runs, and
//! mail between nodes through a real `nats-server` with JetStream (found
//! through `$LEMMING_NATS_SERVER` or the peers' `env.sh`; SKIPPED when it is
//! not installed). Each server listens on a free loopback port, keeps its
//! store in the test's folder, and is killed when the test ends.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::fake_http::free_port;
use crate::fixture::{message_bytes, run, wait_until, TestOrg};
use crate::peers::{peer, KillOnDrop};

/// The default org on nodes `a` and `b` of the NATS server at `url`, with
/// planner on `b` and the others on `a`.
fn two_node_org_at(url: &str) -> TestOrg {
    let org = TestOrg::new();
    let toml = org.read("org/org.toml");
    org.write(
        "org/org.toml",
        format!("{toml}\n[cluster]\nname = \"t\"\nnats_url = \"{url}\"\nnodes = [\"a\", \"b\"]\n"),
    );
    org.edit("agents/planner/resume.toml", "name = \"planner\"", "name = \"planner\"\nnode = \"b\"");
    org
}

/// [`two_node_org_at`] a port where no server listens.
fn two_node_org() -> TestOrg {
    two_node_org_at(&format!("nats://127.0.0.1:{}", free_port()))
}

/// A `nats-server` with JetStream on a free loopback port.
struct Nats {
    child: Option<KillOnDrop>,
    bin: PathBuf,
    port: u16,
    store: PathBuf,
}

/// The `nats-server` binary; `None`, with SKIPPED for `test`, when it is not installed.
fn nats_server(test: &str) -> Option<PathBuf> {
    let bin = peer("LEMMING_NATS_SERVER");
    if bin.is_none() {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: {test}: nats-server is not installed; run scripts/setup-llm-peers.sh --only nats (or set LEMMING_NATS_SERVER)"
        );
    }
    bin
}

impl Nats {
    /// Starts one, its store in `dir`; `None` (and SKIPPED) when it is not installed.
    fn start(test: &str, dir: &Path) -> Option<Nats> {
        let bin = nats_server(test)?;
        let mut n = Nats { child: None, bin, port: free_port(), store: dir.join("jetstream") };
        n.restart();
        Some(n)
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server again on the same port and store (after [`Nats::stop`]).
    fn restart(&mut self) {
        let child = Command::new(&self.bin)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start nats-server");
        self.child = Some(KillOnDrop(child));
        let start = Instant::now();
        while self.client().is_none() {
            assert!(start.elapsed() < Duration::from_secs(10), "nats-server did not listen within 10 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        self.child = None;
    }

    /// A raw client of NATS's text protocol, past its greeting.
    fn client(&self) -> Option<(TcpStream, BufReader<TcpStream>)> {
        let s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut r = BufReader::new(s.try_clone().ok()?);
        let mut info = String::new();
        r.read_line(&mut info).ok()?;
        info.starts_with("INFO").then_some((s, r))
    }

    /// Publishes `payload` on `subject` as anyone who can reach the server
    /// could: a core publish, which the org's stream keeps.
    fn publish(&self, subject: &str, payload: &[u8]) {
        let (mut s, mut r) = self.client().expect("nats-server answers");
        write!(s, "CONNECT {{\"verbose\":false}}\r\nPUB {subject} {}\r\n", payload.len()).unwrap();
        s.write_all(payload).unwrap();
        s.write_all(b"\r\nPING\r\n").unwrap();
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "PONG", "the server took the publish");
    }
}

/// The same org as `a` in a folder of its own: node `b`'s copy.
fn node_b_of(a: &TestOrg) -> TestOrg {
    TestOrg::copy_of(&a.root)
}

/// `lemming --json --node NODE step` on `org`: the turn's report.
#[track_caller]
fn step_on(org: &TestOrg, node: &str) -> serde_json::Value {
    let out = org.lemming_ok(&["--json", "--node", node, "step"]);
    out.json()[0].clone()
}

#[test]
fn validate_names_the_line_of_a_node_that_is_not_declared_and_agents_shows_where_each_runs() {
    let org = two_node_org();
    let agents = org.lemming_ok(&["--json", "agents"]).json();
    let node = |name: &str| agents.as_array().unwrap().iter().find(|a| a["name"] == name).unwrap()["node"].clone();
    assert_eq!((node("planner"), node("manager"), node("human")), (json!("b"), json!("a"), json!("a")));
    let table = org.lemming_ok(&["agents"]).stdout;
    assert!(table.lines().next().unwrap().contains("NODE"), "{table}");
    let planner = table.lines().find(|l| l.starts_with("planner")).unwrap();
    assert_eq!(planner.split_whitespace().nth(1), Some("b"), "{table}");

    org.edit("agents/planner/resume.toml", "node = \"b\"", "node = \"c\"");
    let out = org.lemming(&["validate"]).fails_with(1);
    out.stderr_has(&["agents/planner/resume.toml:", "`c` in `node` is no node of [cluster]", "add \"c\" to `nodes`"]);
    // On one machine, `agents` has no node column.
    let one = TestOrg::new();
    assert!(!one.lemming_ok(&["agents"]).stdout.contains("NODE"));
    assert!(one.lemming_ok(&["--json", "agents"]).json()[0].get("node").is_none());
}

#[test]
fn a_node_runs_only_its_agents_and_mail_for_another_node_waits_in_the_outbox() {
    let org = two_node_org();
    // A process that does not know which node it is runs no turn.
    org.lemming(&["step"]).fails_with(2).stderr_has(&["nodes a, b", "--node NAME or LEMMING_NODE=NAME"]);
    org.lemming(&["--node", "c", "step"]).fails_with(2).stderr_has(&["`c`", "is no node of this org"]);
    assert_eq!(org.turn(), 0, "no turn was run");

    org.drop_outbox("manager", "m1.json", message_bytes("m1", "manager", "planner", "plan it"));
    org.drop_outbox("manager", "m2.json", message_bytes("m2", "manager", "hr", "hire someone"));
    // Mail put straight into planner's inbox: node a must not run planner for it.
    org.write("agents/planner/inbox/new/p1.json", message_bytes("p1", "manager", "planner", "already here"));
    let out = org.lemming_ok(&["--json", "--node", "a", "step"]);
    let report = &out.json()[0];
    assert_eq!(report["ran"], json!(["hr"]), "{out}");
    assert!(org.ids("hr", "inbox", "cur").contains(&"m2".to_string()), "hr read its mail on node a");
    assert_eq!(org.ids("manager", "outbox", "new"), ["m1"], "mail for node b waits in the outbox");
    assert_eq!(org.ids("planner", "inbox", "new"), ["p1"], "planner's inbox is node b's business");

    // The same folder as node b (LEMMING_NODE): planner runs, hr does not.
    let mut b = org.command(&["--json", "step"]);
    b.env("LEMMING_NODE", "b");
    let out = run(&mut b).ok();
    assert_eq!(out.json()[0]["ran"], json!(["planner"]), "{out}");
    assert_eq!(org.ids("manager", "outbox", "new"), ["m1"], "node b does not route node a's outboxes");

    // A person sends from the node the sender runs on.
    let mut send = org.command(&["send", "manager", "hello"]);
    send.env("LEMMING_NODE", "b");
    run(&mut send).fails_with(1).stderr_has(&["human runs on node a, and this process is node b"]);
    org.lemming_ok(&["--node", "a", "send", "manager", "hello"]);
}

#[test]
fn mail_crosses_nodes_through_jetstream_once_and_the_chart_holds_on_both_sides() {
    let test = "mail_crosses_nodes_through_jetstream_once_and_the_chart_holds_on_both_sides";
    let dir = tempfile::tempdir().unwrap();
    let Some(mut nats) = Nats::start(test, dir.path()) else { return };
    let a = two_node_org_at(&nats.url());
    let b = node_b_of(&a);

    // human -> manager on node a; manager's reply to planner crosses to node b.
    a.lemming_ok(&["--node", "a", "send", "manager", "Please plan the launch @planner"]);
    let turn = step_on(&a, "a");
    assert_eq!(turn["ran"], json!(["manager"]), "{turn}");
    assert!(a.ids("manager", "outbox", "new").is_empty(), "published, so moved to sent/");
    let to_planner: Vec<String> = a.ids("manager", "outbox", "sent");
    let turn = step_on(&b, "b");
    assert_eq!(turn["ran"], json!(["planner"]), "planner got the mail on node b: {turn}");
    let got = b.ids("planner", "inbox", "cur");
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(to_planner.contains(&got[0]), "{got:?} is one of {to_planner:?}");
    // planner's answer comes back to manager on node a.
    let turn = step_on(&a, "a");
    assert_eq!(turn["ran"], json!(["manager"]), "{turn}");
    let from_planner = b.ids("planner", "outbox", "sent");
    assert!(a.ids("manager", "inbox", "cur").iter().any(|id| from_planner.contains(id)), "the reply arrived");

    // The sending node checks the chart: planner may not write to hr.
    b.drop_outbox("planner", "x1.json", message_bytes("x1", "planner", "hr", "psst"));
    step_on(&b, "b");
    let dead = b.dead();
    assert!(dead.values().any(|w| w["reason"] == "chart_send_to" && w["to"] == json!(["hr"])), "{dead:#?}");
    let told = [b.ids("planner", "inbox", "new"), b.ids("planner", "inbox", "cur")].concat();
    assert!(told.iter().any(|id| id.ends_with("-bounce")), "planner is told: {told:?}");

    // The receiving node checks it again: mail published straight to planner's
    // subject, as anyone with access to the server could, is refused there.
    let subject = "lemming.t.inbox.planner";
    nats.publish(subject, &message_bytes("inj1", "hr", "planner", "hr may not write to planner"));
    nats.publish(subject, &message_bytes("inj2", "planner", "planner", "planner runs on node b"));
    nats.publish(subject, b"not a message");
    // The same message twice (past any dedupe window): one copy.
    let twice = message_bytes("dup1", "manager", "planner", "once only");
    nats.publish(subject, &twice);
    nats.publish(subject, &twice);
    let turn = step_on(&b, "b");
    assert_eq!(turn["dead"], json!(3), "{turn}");
    let cur = b.ids("planner", "inbox", "cur");
    assert!(!cur.iter().any(|id| id.starts_with("inj")), "{cur:?}");
    assert_eq!(cur.iter().filter(|id| *id == "dup1").count(), 1, "{cur:?}");
    let reasons: Vec<String> = b
        .dead()
        .values()
        .filter(|w| w["detail"].as_str().is_some_and(|d| d.starts_with("mail from another node")))
        .map(|w| w["reason"].as_str().unwrap().to_string())
        .collect();
    for want in ["chart_send_to", "sender_mismatch", "malformed"] {
        assert!(reasons.iter().any(|r| r == want), "{want} in {reasons:?}");
    }
    // Acknowledged: another step gets nothing again.
    let turn = step_on(&b, "b");
    assert_eq!((turn["dead"].clone(), turn["delivered"].clone()), (json!(0), json!(0)), "{turn}");

    // With the server down, mail for node b waits in the outbox; once it is
    // back (its store kept), the next turn sends it.
    nats.stop();
    a.drop_outbox("manager", "w1.json", message_bytes("w1", "manager", "planner", "while the server is down"));
    step_on(&a, "a");
    assert_eq!(a.ids("manager", "outbox", "new"), ["w1"], "it waits");
    nats.restart();
    let start = Instant::now();
    while a.ids("manager", "outbox", "new").contains(&"w1".to_string()) {
        assert!(start.elapsed() < Duration::from_secs(30), "w1 was not sent once the server was back");
        std::thread::sleep(Duration::from_millis(200));
        step_on(&a, "a");
    }
    step_on(&b, "b");
    assert!(b.ids("planner", "inbox", "cur").contains(&"w1".to_string()), "w1 reached planner on node b");
    for org in [&a, &b] {
        org.lemming_ok(&["fsck"]);
    }
}

#[test]
fn two_daemons_on_two_nodes_carry_a_message_and_its_reply_without_waiting_for_a_timer() {
    let test = "two_daemons_on_two_nodes_carry_a_message_and_its_reply_without_waiting_for_a_timer";
    let dir = tempfile::tempdir().unwrap();
    let Some(nats) = Nats::start(test, dir.path()) else { return };
    let a = two_node_org_at(&nats.url());
    let b = node_b_of(&a);
    // Timed turns an hour apart: only the arrival of mail can wake a node.
    let mut da = a.spawn_run(&["--node", "a", "--turn-seconds", "3600"]);
    let mut db = b.spawn_run(&["--node", "b", "--turn-seconds", "3600"]);
    da.wait_ready();
    db.wait_ready();
    a.lemming_ok(&["--node", "a", "send", "manager", "Please plan the launch @planner"]);
    let back = wait_until(Duration::from_secs(20), || {
        let from_planner = b.ids("planner", "outbox", "sent");
        !from_planner.is_empty()
            && [a.ids("manager", "inbox", "new"), a.ids("manager", "inbox", "cur")]
                .concat()
                .iter()
                .any(|id| from_planner.contains(id))
    });
    assert!(back, "planner's reply did not reach manager on node a\n{da}\n{db}");
    let got = [b.ids("planner", "inbox", "new"), b.ids("planner", "inbox", "cur")].concat();
    assert_eq!(got.len(), 1, "planner got manager's message once: {got:?}");
    da.assert_running("node a");
    db.assert_running("node b");

    // Every node's process and last turn, from either node's folder.
    let status = b.lemming_ok(&["--json", "status", "--cluster"]).json();
    let nodes = status["nodes"].as_array().unwrap();
    assert_eq!(nodes.iter().map(|n| n["node"].clone()).collect::<Vec<_>>(), [json!("a"), json!("b")], "{status}");
    for (n, d) in nodes.iter().zip([&da, &db]) {
        assert_eq!(n["running"]["pid"], json!(d.pid), "{status}");
        assert!(n["last"]["turn"].as_u64().unwrap() >= 2, "a turn ran on each node since the first: {status}");
    }
    let table = a.lemming_ok(&["status", "--cluster"]).stdout;
    assert!(table.contains(&format!("pid {} on", db.pid)) && table.contains("NODE"), "{table}");
    db.signal(libc::SIGTERM);
    assert!(db.wait_exit(Duration::from_secs(20)).is_some(), "{db}");
    let status = a.lemming_ok(&["--json", "status", "--cluster"]).json();
    assert!(status["nodes"][1]["running"].is_null(), "a stopped node runs nowhere: {status}");
    assert!(status["nodes"][1]["last"]["turn"].is_u64(), "its last turn stays: {status}");
}

#[test]
fn status_cluster_needs_a_cluster_and_says_when_the_server_cannot_be_reached() {
    let one = TestOrg::new();
    one.lemming(&["status", "--cluster"]).fails_with(2).stderr_has(&["on one machine", "[cluster]"]);
    let org = two_node_org();
    org.lemming(&["status", "--cluster"])
        .fails_with(1)
        .stderr_has(&["cannot reach the NATS server at nats://127.0.0.1:"]);
}

#[test]
fn make_demo_cluster_shows_a_reply_coming_back_from_the_other_node() {
    let test = "make_demo_cluster_shows_a_reply_coming_back_from_the_other_node";
    let Some(nats) = nats_server(test) else { return };
    if Command::new("make").arg("--version").output().is_err() {
        let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: no make on this machine");
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let tmp = tempfile::tempdir().unwrap();
    // The binary under test as the release build of a target folder elsewhere;
    // CARGO=true stands in for the build, already done.
    let target = tmp.path().join("target");
    std::fs::create_dir_all(target.join("release")).unwrap();
    std::fs::copy(crate::fixture::BIN, target.join("release/lemming")).unwrap();
    let demo = tmp.path().join("demo");
    let mut make = Command::new("make");
    make.current_dir(&repo)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::var_os("HOME").unwrap_or_default())
        .env("LEMMING_NATS_SERVER", &nats)
        .env("CARGO_TARGET_DIR", &target)
        .args(["--no-print-directory", "demo-cluster", "CARGO=true"])
        .arg(format!("DEMO_DIR={}", demo.display()));
    let out = run(&mut make);
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stdout.contains("reached manager on node a in"), "{out}");
    assert!(out.stdout.contains("from planner to manager"), "the thread shows the reply: {out}");
    // Both daemons stopped, and the server with them.
    for node in ["node-a", "node-b"] {
        assert!(!demo.join(node).join("org/state/daemon.json").exists(), "{node} still runs\n{out}");
    }
}

#[test]
fn a_second_process_claiming_a_running_node_exits_3_and_names_the_holder() {
    let test = "a_second_process_claiming_a_running_node_exits_3_and_names_the_holder";
    let dir = tempfile::tempdir().unwrap();
    let Some(nats) = Nats::start(test, dir.path()) else { return };
    let b1 = two_node_org_at(&nats.url());
    // The same node's folder on "another machine".
    let b2 = node_b_of(&b1);
    let mut holder = b1.spawn_run(&["--node", "b", "--turn-seconds", "3600"]);
    holder.wait_ready();
    let out = b2.lemming(&["--node", "b", "step"]).fails_with(3);
    out.stderr_has(&["node b is run by", &format!("pid {}", holder.pid), &b1.root.display().to_string()]);
    let mut second = b2.spawn_run(&["--node", "b"]);
    let status = second.wait_exit(Duration::from_secs(20)).expect("the second daemon exits");
    assert_eq!(status.code(), Some(3), "{second}");
    assert!(second.output().contains("node b is run by"), "{second}");
    // Node a is another node: its process runs beside.
    b2.lemming_ok(&["--node", "a", "step"]);
    // Once the holder stops, it lets the node go at once.
    holder.signal(libc::SIGTERM);
    assert!(holder.wait_exit(Duration::from_secs(20)).is_some(), "{holder}");
    b2.lemming_ok(&["--node", "b", "step"]);
}

#[test]
fn a_daemon_whose_node_was_taken_while_it_could_not_renew_stops_with_3() {
    let test = "a_daemon_whose_node_was_taken_while_it_could_not_renew_stops_with_3";
    let dir = tempfile::tempdir().unwrap();
    let Some(nats) = Nats::start(test, dir.path()) else { return };
    let b1 = two_node_org_at(&nats.url());
    let b2 = node_b_of(&b1);
    let mut first = b1.spawn_run(&["--node", "b", "--turn-seconds", "3600"]);
    first.wait_ready();
    // Frozen past its lease (15 s), as a machine cut off from the server would be.
    first.signal(libc::SIGSTOP);
    let mut second = None;
    let start = Instant::now();
    while second.is_none() {
        assert!(start.elapsed() < Duration::from_secs(40), "the frozen holder's lease did not lapse");
        std::thread::sleep(Duration::from_secs(1));
        let mut d = b2.spawn_run(&["--node", "b", "--turn-seconds", "3600"]);
        match d.wait_exit(Duration::from_secs(2)) {
            Some(status) => assert_eq!(status.code(), Some(3), "{d}"),
            None => second = Some(d),
        }
    }
    let mut second = second.unwrap();
    second.wait_ready();
    first.signal(libc::SIGCONT);
    let status = first.wait_exit(Duration::from_secs(30)).expect("the first daemon stops once it sees the node taken");
    assert_eq!(status.code(), Some(3), "{first}");
    assert!(first.output().contains(&format!("node b is run by pid {}", second.pid)), "{first}");
    second.assert_running("the node's new holder");
}

/// The ids in every folder of `agent`'s inbox (new, cur, archive), with repeats.
fn inbox_ids(org: &TestOrg, agent: &str) -> Vec<String> {
    ["new", "cur", "archive"].iter().flat_map(|f| org.ids(agent, "inbox", f)).collect()
}

/// Sends flow from node a while node b is killed at 30 random moments and
/// the server is restarted 5 times (its store kept); then node a stops for
/// longer than the dedupe window while mail for it is queued. Every message
/// ends in its recipient's inbox once, and fsck is clean on both nodes.
#[test]
fn mail_between_nodes_survives_kill_9_of_a_node_and_restarts_of_the_server_exactly_once() {
    let test = "mail_between_nodes_survives_kill_9_of_a_node_and_restarts_of_the_server_exactly_once";
    let dir = tempfile::tempdir().unwrap();
    let Some(mut nats) = Nats::start(test, dir.path()) else { return };
    let seed = std::env::var("LEMMING_CLUSTER_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    let (kills, restarts) = (30, 5);
    eprintln!("{test}: seed {seed} (repeat with LEMMING_CLUSTER_SEED={seed})");
    let mut rng = crate::crash::Lcg(seed);
    let a = two_node_org_at(&nats.url());
    a.edit("org/org.toml", "nodes = [\"a\", \"b\"]", "nodes = [\"a\", \"b\"]\ndedupe_window_secs = 1");
    let b = node_b_of(&a);
    let run = ["--turn-seconds", "1"];
    let mut da = a.spawn_run(&[&["--node", "a"][..], &run[..]].concat());
    let mut db = b.spawn_run(&[&["--node", "b"][..], &run[..]].concat());
    da.wait_ready();
    let mut sent = 0;
    for k in 0..kills {
        // Sends flow all the time: each crosses to node b and back.
        a.lemming_ok(&["--node", "a", "send", "manager", &format!("#{sent} please plan @planner")]);
        sent += 1;
        std::thread::sleep(Duration::from_millis(50 + rng.below(400)));
        db.kill9();
        if k % (kills / restarts) == 0 {
            nats.stop();
            std::thread::sleep(Duration::from_millis(rng.below(500)));
            nats.restart();
        }
        // A node killed at random moments is restarted, as a supervisor would.
        db = b.spawn_run(&[&["--node", "b"][..], &run[..]].concat());
        let started = Instant::now();
        // The dead process held the node's lease: the same folder on this machine takes it over at once.
        while db.try_exit().is_some() {
            assert!(started.elapsed() < Duration::from_secs(30), "seed {seed}: node b did not come back\n{db}");
            std::thread::sleep(Duration::from_millis(500));
            db = b.spawn_run(&[&["--node", "b"][..], &run[..]].concat());
        }
    }
    // Node a stops for longer than the dedupe window (1 s here) while mail for it is queued.
    da.signal(libc::SIGTERM);
    assert!(da.wait_exit(Duration::from_secs(20)).is_some(), "{da}");
    let queued: Vec<String> = (0..3).map(|i| format!("20260101T000000000Z-planner-q{i}")).collect();
    for id in &queued {
        b.drop_outbox("planner", &format!("{id}.json"), message_bytes(id, "planner", "manager", "while a is down"));
    }
    let published = wait_until(Duration::from_secs(20), || b.ids("planner", "outbox", "new").is_empty());
    assert!(published, "seed {seed}: node b did not publish the queued mail\n{db}");
    std::thread::sleep(Duration::from_millis(2500));
    da = a.spawn_run(&[&["--node", "a"][..], &run[..]].concat());
    // Quiet: every message and every reply lands.
    let settled = wait_until(Duration::from_secs(90), || {
        let to_planner = a.ids("manager", "outbox", "sent").len();
        inbox_ids(&b, "planner").len() >= sent + queued.len()
            && b.ids("planner", "outbox", "sent").len() >= sent
            && a.ids("manager", "outbox", "new").is_empty()
            && b.ids("planner", "outbox", "new").is_empty()
            && to_planner >= 2 * sent + queued.len()
            && inbox_ids(&a, "manager").len() >= 2 * sent + queued.len()
    });
    da.signal(libc::SIGTERM);
    db.signal(libc::SIGTERM);
    assert!(da.wait_exit(Duration::from_secs(20)).is_some() && db.wait_exit(Duration::from_secs(20)).is_some());
    assert!(settled, "seed {seed}: the mail did not settle\n{da}\n{db}");
    // Every copy manager sent planner is in planner's inbox on node b once, and every reply back once.
    let at_b = inbox_ids(&b, "planner");
    let at_a = inbox_ids(&a, "manager");
    let to_planner: Vec<String> = a
        .ids("manager", "outbox", "sent")
        .into_iter()
        .filter(|id| {
            crate::fixture::read_json(&a.path(&format!("agents/manager/outbox/sent/{id}.json")))["to"] == "planner"
        })
        .collect();
    // One forward per send, and one answer to each message queued while a was down.
    assert_eq!(to_planner.len(), sent + queued.len(), "seed {seed}");
    for (what, sent, got) in [
        ("manager's mail to planner", to_planner, &at_b),
        ("planner's replies to manager", b.ids("planner", "outbox", "sent"), &at_a),
    ] {
        for id in &sent {
            assert_eq!(got.iter().filter(|g| *g == id).count(), 1, "seed {seed}: {what}: {id} in {got:?}");
        }
    }
    assert_eq!(at_b.len(), sent + queued.len(), "seed {seed}: {at_b:?}");
    for id in &queued {
        assert_eq!(at_a.iter().filter(|g| *g == id).count(), 1, "seed {seed}: {id} queued while a was down");
    }
    for org in [&a, &b] {
        org.lemming_ok(&["fsck"]);
    }
}

#[test]
fn a_three_server_jetstream_cluster_with_three_replicas_loses_nothing_when_one_server_dies() {
    let test = "a_three_server_jetstream_cluster_with_three_replicas_loses_nothing_when_one_server_dies";
    let Some(bin) = nats_server(test) else { return };
    let dir = tempfile::tempdir().unwrap();
    let (ports, routes): (Vec<u16>, Vec<u16>) = (0..3).map(|_| (free_port(), free_port())).unzip();
    let monitor = free_port();
    let all_routes = routes.iter().map(|r| format!("nats://127.0.0.1:{r}")).collect::<Vec<_>>().join(",");
    let mut servers: Vec<Option<KillOnDrop>> = (0..3)
        .map(|i| {
            let child = Command::new(&bin)
                .args(["-a", "127.0.0.1", "-p", &ports[i].to_string(), "-n", &format!("s{i}"), "-js", "-sd"])
                .arg(dir.path().join(format!("s{i}")))
                .args(["--cluster_name", "lemming", "--cluster", &format!("nats://127.0.0.1:{}", routes[i])])
                .args(["--routes", &all_routes])
                .args(if i == 2 { vec!["-m".to_string(), monitor.to_string()] } else { vec![] })
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("cannot start nats-server");
            Some(KillOnDrop(child))
        })
        .collect();
    let url = ports.iter().map(|p| format!("nats://127.0.0.1:{p}")).collect::<Vec<_>>().join(", ");
    let a = two_node_org_at(&url);
    a.edit("org/org.toml", "nodes = [\"a\", \"b\"]", "nodes = [\"a\", \"b\"]\nreplicas = 3");
    let b = node_b_of(&a);
    let mut da = a.spawn_run(&["--node", "a", "--turn-seconds", "1"]);
    let mut db = b.spawn_run(&["--node", "b", "--turn-seconds", "1"]);
    da.wait_ready();
    db.wait_ready();
    let sends = 12;
    for i in 0..sends {
        if i == sends / 2 {
            // One of the three servers dies during the traffic.
            servers[0] = None;
        }
        a.lemming_ok(&["--node", "a", "send", "manager", &format!("#{i} please plan @planner")]);
        std::thread::sleep(Duration::from_millis(150));
    }
    let settled = wait_until(Duration::from_secs(90), || {
        inbox_ids(&b, "planner").len() >= sends && inbox_ids(&a, "manager").len() >= 2 * sends
    });
    assert!(settled, "the mail did not settle with two servers of three\n{da}\n{db}");
    assert_eq!(inbox_ids(&b, "planner").len(), sends, "one forward per send");
    assert_eq!(inbox_ids(&a, "manager").len(), 2 * sends, "each send and each reply");
    da.assert_running("node a");
    db.assert_running("node b");
    // The org's stream is kept by three servers, as replicas = 3 asks.
    let (code, body) = crate::fake_http::request(
        std::net::SocketAddr::from(([127, 0, 0, 1], monitor)),
        "GET",
        "/jsz?streams=true&config=true",
    )
    .expect("the monitoring endpoint answers");
    assert_eq!(code, 200, "{body}");
    let jsz: serde_json::Value = serde_json::from_str(&body).unwrap();
    let stream = jsz["account_details"][0]["stream_detail"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "LEMMING_T").cloned())
        .unwrap_or_else(|| panic!("no stream LEMMING_T in {jsz}"));
    assert_eq!(stream["config"]["num_replicas"], json!(3), "{stream}");
}

#[test]
fn more_mail_than_the_server_lets_a_consumer_hold_unacknowledged_arrives_in_one_step() {
    let test = "more_mail_than_the_server_lets_a_consumer_hold_unacknowledged_arrives_in_one_step";
    let dir = tempfile::tempdir().unwrap();
    let Some(nats) = Nats::start(test, dir.path()) else { return };
    let a = two_node_org_at(&nats.url());
    let b = node_b_of(&a);
    // JetStream's default is 1,000 unacknowledged messages per consumer.
    let n = 1500;
    for i in 0..n {
        let id = format!("20260101T000000000Z-manager-bulk{i:05}");
        a.drop_outbox("manager", &format!("{id}.json"), message_bytes(&id, "manager", "planner", "bulk"));
    }
    assert_eq!(step_on(&a, "a")["delivered"], json!(n), "all published");
    step_on(&b, "b");
    assert_eq!(inbox_ids(&b, "planner").len(), n, "all delivered in one step");
}

#[test]
fn the_org_wide_budget_counts_what_every_node_spent() {
    let test = "the_org_wide_budget_counts_what_every_node_spent";
    let dir = tempfile::tempdir().unwrap();
    let Some(nats) = Nats::start(test, dir.path()) else { return };
    let a = two_node_org_at(&nats.url());
    a.edit("org/org.toml", "# budget = 1000.0", "budget = 0.1");
    let b = node_b_of(&a);
    // Node a spends past the budget: the manager runs twice (about 0.067 a run with the mock).
    for i in 0..2 {
        a.lemming_ok(&["--node", "a", "send", "manager", &format!("#{i} please plan @planner")]);
        assert_eq!(step_on(&a, "a")["ran"], json!(["manager"]));
    }
    // Node b has spent nothing, but the org has: planner's mail waits.
    let turn = step_on(&b, "b");
    assert_eq!(turn["ran"], json!([]), "{turn}");
    assert!(turn["skipped"].to_string().contains("org_budget_spent"), "{turn}");
    assert_eq!(inbox_ids(&b, "planner").len(), 2, "the mail arrived, unread");
    let status = b.lemming_ok(&["--json", "status", "--cluster"]).json();
    assert!(status["nodes"][0]["spent"].as_f64().unwrap() > 0.1, "{status}");
}

/// `GET /api/status` of a daemon's API at `addr`, as JSON.
fn api_status(org: &TestOrg, addr: std::net::SocketAddr) -> serde_json::Value {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let body = rt.block_on(async {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let r = client
            .get(format!("http://{addr}/api/status"))
            .bearer_auth(crate::live::token(org))
            .timeout(Duration::from_secs(20))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        r.text().await.unwrap()
    });
    serde_json::from_str(&body).unwrap()
}

#[test]
fn the_api_status_shows_every_node_and_the_link() {
    let test = "the_api_status_shows_every_node_and_the_link";
    // A server that cannot be reached: the link says so, the rest answers.
    let down = two_node_org();
    let mut d = down.spawn_run(&["--node", "a", "--http", "127.0.0.1:0", "--turn-seconds", "3600"]);
    let addr = crate::live::served_at(|| d.output());
    d.wait_ready();
    let status = api_status(&down, addr);
    assert_eq!(status["cluster"]["link"], json!("unreachable"), "{status}");
    assert!(status["turn"].is_u64() && status["agents"].is_array(), "{status}");
    drop(d);

    let dir = tempfile::tempdir().unwrap();
    let Some(nats) = Nats::start(test, dir.path()) else { return };
    let a = two_node_org_at(&nats.url());
    let mut d = a.spawn_run(&["--node", "a", "--http", "127.0.0.1:0", "--turn-seconds", "3600"]);
    let addr = crate::live::served_at(|| d.output());
    d.wait_ready();
    let status = api_status(&a, addr);
    assert_eq!(status["cluster"]["link"], json!("connected"), "{status}");
    let nodes = status["cluster"]["nodes"].as_array().unwrap();
    assert_eq!(nodes[0]["running"]["pid"], json!(d.pid), "{status}");
    assert!(nodes[1]["running"].is_null(), "node b runs nowhere: {status}");
    // On one machine there is no `cluster`.
    let one = TestOrg::new();
    assert!(one.lemming_ok(&["status", "--json"]).json().get("cluster").is_none());
}
