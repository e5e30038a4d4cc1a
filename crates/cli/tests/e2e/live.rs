//! Live events and metrics of the real binary: `lemming run --http` pushes a
//! turn's events to an open `GET /api/events` stream as the turn commits, a
//! client reconnecting with `Last-Event-ID` gets exactly the events it missed
//! (compared with `events.jsonl`), `lemming serve` beside `lemming step` sends
//! what lands in the file, `/metrics` has every family after a turn, and a
//! real Prometheus scrapes it and counts the daemon's turns.

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use crate::fake_http::free_port;
use crate::fixture::{committed_turn, wait_until, Daemon, TestOrg};
use crate::peers::{peer, KillOnDrop};

/// One SSE frame as it arrived.
#[derive(Debug, Clone)]
struct Frame {
    /// When it arrived.
    at: Instant,
    /// The same, by the wall clock (to compare with an event's `at`).
    wall: SystemTime,
    id: Option<u64>,
    event: String,
    data: String,
}

impl Frame {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("data is not JSON ({e}): {self:?}"))
    }
}

/// An open `GET /api/events`, read on its own thread; its frames arrive on a channel.
struct Sse {
    rx: mpsc::Receiver<Frame>,
    seen: Vec<Frame>,
}

impl Sse {
    /// Opens the stream (with `Last-Event-ID: last` if given) and returns once
    /// its headers have come: from then on nothing committed is missed.
    fn open(addr: SocketAddr, token: &str, last: Option<u64>) -> Sse {
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let token = token.to_string();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let mut req = client().get(format!("http://{addr}/api/events")).bearer_auth(&token);
                if let Some(id) = last {
                    req = req.header("Last-Event-ID", id.to_string());
                }
                let mut resp = match req.send().await {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let head = format!("{} {:?}", resp.status(), resp.headers().get("content-type"));
                let _ = ready_tx.send(if resp.status() == 200 { Ok(()) } else { Err(head) });
                let mut buf = String::new();
                while let Ok(Some(chunk)) = resp.chunk().await {
                    buf.push_str(&String::from_utf8_lossy(&chunk));
                    while let Some(i) = buf.find("\n\n") {
                        let text: String = buf.drain(..i + 2).collect();
                        if let Some(f) = parse(&text) {
                            if tx.send(f).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        });
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => Sse { rx, seen: Vec::new() },
            other => panic!("GET /api/events did not open: {other:?}"),
        }
    }

    /// Reads frames until one satisfies `want` (returned), or panics after `limit`.
    #[track_caller]
    fn until(&mut self, limit: Duration, what: &str, mut want: impl FnMut(&Frame) -> bool) -> Frame {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(f) => {
                    self.seen.push(f.clone());
                    if want(&f) {
                        return f;
                    }
                }
                Err(_) => panic!("no {what} within {limit:?}; frames so far:\n{:#?}", self.seen),
            }
        }
    }

    /// The frames that arrive within `d`.
    fn drain_for(&mut self, d: Duration) -> Vec<Frame> {
        let deadline = Instant::now() + d;
        let mut out = Vec::new();
        while let Ok(f) = self.rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            out.push(f.clone());
            self.seen.push(f);
        }
        out
    }
}

/// One frame's fields; `None` for a comment.
fn parse(text: &str) -> Option<Frame> {
    let (mut id, mut event, mut data) = (None, None, None);
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("id: ") {
            id = Some(v.parse().unwrap_or_else(|_| panic!("id is not a number: {text:?}")));
        } else if let Some(v) = line.strip_prefix("event: ") {
            event = Some(v.to_string());
        } else if let Some(v) = line.strip_prefix("data: ") {
            data = Some(v.to_string());
        }
    }
    let event = event?;
    Some(Frame {
        at: Instant::now(),
        wall: SystemTime::now(),
        id,
        event,
        data: data.unwrap_or_else(|| panic!("a frame without data: {text:?}")),
    })
}

/// The name of an events.jsonl line on the wire.
fn wire(event: &str) -> &str {
    match event {
        "turn" => "turn_committed",
        "tool" => "tool_call",
        other => other,
    }
}

/// The lines of `org/state/events.jsonl`, parsed.
fn file_events(root: &Path) -> Vec<Value> {
    fs::read_to_string(root.join("org/state/events.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The address a server printed (`… at http://ADDR/`), waiting up to 20 s for it.
#[track_caller]
pub(crate) fn served_at(mut output: impl FnMut() -> String) -> SocketAddr {
    let mut found = None;
    let printed = wait_until(Duration::from_secs(20), || {
        let said = output();
        // The address and the sign-in link are said together; wait for the whole of it.
        if !said.lines().any(|l| l.starts_with("open ") && l.contains("/login?code=")) {
            return false;
        }
        found = said
            .lines()
            .find_map(|l| {
                l.split_once(" at http://").filter(|_| l.starts_with("lemming: serving")).map(|(_, r)| r.to_string())
            })
            .and_then(|r| r.trim_end_matches('/').parse().ok());
        found.is_some()
    });
    assert!(printed, "the server never said where it listens:\n{}", output());
    found.unwrap()
}

/// The API token: org/state/api-token (LEMMING_API_TOKEN is not set in the tests).
pub(crate) fn token(org: &TestOrg) -> String {
    fs::read_to_string(org.path("org/state/api-token")).map(|t| t.trim().to_string()).unwrap_or_default()
}

/// Sends `body` to `to` as the human through `POST /api/send`; returns the id.
fn send_via_api(org: &TestOrg, addr: SocketAddr, to: &str, body: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (status, answer) = rt.block_on(async {
        let r = client()
            .post(format!("http://{addr}/api/send"))
            .bearer_auth(token(org))
            .json(&serde_json::json!({ "to": to, "body": body }))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.text().await.unwrap_or_default())
    });
    assert_eq!(status, 200, "POST /api/send answered {status}: {answer}");
    let v: Value = serde_json::from_str(&answer).unwrap();
    v["id"].as_str().unwrap_or_else(|| panic!("no id in {answer}")).to_string()
}

/// An HTTP client that ignores the environment's proxies.
fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

fn get(url: &str) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        match client().get(url).timeout(Duration::from_secs(5)).send().await {
            Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(e) => (0, e.to_string()),
        }
    })
}

/// The value of one sample of a metrics text (`labels` as written, "" for none).
fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let key = if labels.is_empty() { format!("{name} ") } else { format!("{name}{{{labels}}} ") };
    text.lines().find_map(|l| l.strip_prefix(&key)).and_then(|v| v.split(' ').next()?.parse().ok())
}

/// `lemming run --http 127.0.0.1:0` on `org`, its address, once it has committed its first turn.
fn daemon_with_http(org: &TestOrg) -> (Daemon, SocketAddr) {
    let mut d = org.spawn_run(&["--http", "127.0.0.1:0"]);
    let addr = served_at(|| d.output());
    d.wait_ready();
    (d, addr)
}

#[test]
fn a_sent_message_s_events_are_pushed_as_the_turn_commits_and_a_reconnect_gets_exactly_what_it_missed() {
    let org = TestOrg::new();
    // Events from before the server started: a reconnect reads them from the file.
    org.send("manager", "before");
    org.step();
    let before = file_events(&org.root).len() as u64;
    assert!(before >= 3, "the first step wrote its events");
    let (mut d, addr) = daemon_with_http(&org);
    let mut sse = Sse::open(addr, &token(&org), None);

    let id = send_via_api(&org, addr, "manager", "hello over the API");
    let mine = sse.until(Duration::from_secs(10), "the message's delivered event", |f| {
        f.event == "delivered" && f.json()["id"] == id.as_str()
    });
    assert_eq!(mine.json()["to"], "manager");
    let ran = sse.until(Duration::from_secs(10), "manager's ran event", |f| f.event == "ran");
    assert_eq!(ran.json()["agent"], "manager");
    let reply = sse.until(Duration::from_secs(10), "the reply's delivered event", |f| {
        f.event == "delivered" && f.json()["to"] == "human"
    });
    let turn = reply.json()["turn"].as_u64().unwrap();
    let committed = sse.until(Duration::from_secs(10), "the turn's turn_committed event", |f| {
        f.event == "turn_committed" && f.json()["turn"] == turn
    });
    assert!(
        sse.seen.iter().any(|f| f.event == "turn_started" && f.id.is_none()),
        "the daemon's turn_started is pushed live, without an id: {:#?}",
        sse.seen
    );
    // The reply's delivered event arrives within 100 ms of the commit: of the
    // turn_committed frame, and of the commit's own time.
    let gap = committed.at.max(reply.at) - committed.at.min(reply.at);
    assert!(gap < Duration::from_millis(100), "reply delivered and turn committed arrived {gap:?} apart");
    let at: chrono::DateTime<chrono::Utc> = committed.json()["at"].as_str().unwrap().parse().unwrap();
    let arrived: chrono::DateTime<chrono::Utc> = reply.wall.into();
    let latency = arrived - at;
    assert!(
        latency < chrono::Duration::milliseconds(100),
        "the reply's delivered event arrived {latency} after the turn committed at {at}"
    );
    // The frames carry the file's lines, under their own numbers and names.
    let file: BTreeMap<u64, Value> =
        file_events(&org.root).into_iter().map(|e| (e["seq"].as_u64().unwrap(), e)).collect();
    for f in sse.seen.iter().filter(|f| f.id.is_some()) {
        let line = &file[&f.id.unwrap()];
        assert_eq!(&f.json(), line);
        assert_eq!(f.event, wire(line["event"].as_str().unwrap()));
    }

    // A client that had event 1 reconnects: events 2.. come from the file
    // (before the server started) and from memory, then nothing else.
    let n = 1;
    let mut again = Sse::open(addr, &token(&org), Some(n));
    let want: Vec<(u64, String, Value)> = file_events(&org.root)
        .into_iter()
        .filter(|e| e["seq"].as_u64().unwrap() > n)
        .map(|e| (e["seq"].as_u64().unwrap(), wire(e["event"].as_str().unwrap()).to_string(), e))
        .collect();
    assert!(want.len() as u64 > before, "events from before the server and after it");
    let last = want.last().unwrap().0;
    again.until(Duration::from_secs(10), "the last event of the file", |f| f.id == Some(last));
    again.drain_for(Duration::from_millis(500));
    let got: Vec<(u64, String, Value)> =
        again.seen.iter().filter_map(|f| Some((f.id?, f.event.clone(), f.json()))).collect();
    assert_eq!(got, want, "exactly the events after {n}, in order, once each");
    d.assert_running("after the streams");
}

#[test]
fn metrics_has_every_family_after_a_turn_of_the_daemon() {
    let org = TestOrg::new();
    let (mut d, addr) = daemon_with_http(&org);
    let id = send_via_api(&org, addr, "manager", "count me");
    let answered = wait_until(Duration::from_secs(10), || {
        file_events(&org.root).iter().any(|e| e["event"] == "delivered" && e["to"] == "human")
    });
    assert!(answered, "no answer to {id}\n{d}");
    let url = format!("http://{addr}/metrics");
    let mut text = String::new();
    // Recorded when the hub reads the turn (at once) and the gauges a moment after.
    let recorded = wait_until(Duration::from_secs(5), || {
        text = get(&url).1;
        sample(&text, "lemming_unread_messages", "agent=\"human\"").is_some_and(|n| n >= 1.0)
            && sample(&text, "lemming_agent_runs_total", "agent=\"manager\",outcome=\"ok\"").is_some_and(|n| n >= 1.0)
    });
    assert!(recorded, "the turn is not in the metrics:\n{text}");
    assert!(sample(&text, "lemming_turns_total", "").unwrap() >= 2.0, "the first turn and this one:\n{text}");
    assert!(sample(&text, "lemming_turn_duration_seconds_count", "").unwrap() >= 2.0);
    assert!(sample(&text, "lemming_messages_delivered_total", "").unwrap() >= 2.0);
    assert!(sample(&text, "lemming_credits_spent_total", "agent=\"manager\",model=\"default\"").unwrap() > 0.0);
    assert!(sample(&text, "lemming_tokens_total", "model=\"default\",direction=\"input\"").unwrap() > 0.0);
    assert!(sample(&text, "lemming_provider_requests_total", "provider=\"mock\",outcome=\"ok\"").unwrap() >= 1.0);
    assert!(sample(&text, "lemming_provider_request_duration_seconds_count", "provider=\"mock\"").unwrap() >= 1.0);
    for family in ["lemming_dead_letters", "lemming_breaker_open", "lemming_tool_calls"] {
        assert!(text.contains(&format!("# TYPE {family} ")), "{family} is missing:\n{text}");
    }
    d.assert_running("after the scrapes");
}

/// `lemming serve` as a child process, its output in a file; SIGTERM and reaped when dropped.
struct Serve {
    child: Child,
    log: std::path::PathBuf,
}

impl Serve {
    fn start(org: &TestOrg) -> Serve {
        Serve::start_with(org, &["--listen", "127.0.0.1:0"])
    }

    fn start_with(org: &TestOrg, args: &[&str]) -> Serve {
        let log = org.tmp.path().join("serve.log");
        let out = fs::File::create(&log).unwrap();
        let argv: Vec<&str> = std::iter::once("serve").chain(args.iter().copied()).collect();
        let child =
            org.command(&argv).stdin(Stdio::null()).stdout(out.try_clone().unwrap()).stderr(out).spawn().unwrap();
        Serve { child, log }
    }

    fn output(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, and its exit code within 5 s.
    fn stop(&mut self) -> Option<i32> {
        // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let mut code = None;
        wait_until(Duration::from_secs(5), || {
            code = self.child.try_wait().unwrap().map(|s| s.code().unwrap_or(-1));
            code.is_some()
        });
        code
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn serve_beside_step_sends_what_lands_in_the_file_and_stops_on_sigterm() {
    let org = TestOrg::new();
    let mut serve = Serve::start(&org);
    let addr = served_at(|| serve.output());
    assert!(serve.output().contains("/login?code="), "the login link is printed:\n{}", serve.output());
    let mut sse = Sse::open(addr, &token(&org), None);
    org.send("manager", "hello from step");
    org.step();
    let committed = sse.until(Duration::from_secs(5), "turn_committed", |f| f.event == "turn_committed");
    // A person's event, appended outside any turn, arrives too.
    org.lemming_ok(&["top-up", "manager", "5"]);
    let topped = sse.until(Duration::from_secs(5), "topped_up", |f| f.event == "topped_up");
    assert_eq!(topped.json()["agent"], "manager");
    let file: Vec<u64> = file_events(&org.root).iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    let got: Vec<u64> = sse.seen.iter().filter_map(|f| f.id).collect();
    assert_eq!(got, file, "every line of the file, in order (the server started on an empty file)");
    assert!(committed.id.is_some() && sse.seen.iter().any(|f| f.event == "ran"));
    assert_eq!(serve.stop(), Some(0), "SIGTERM stops it, open stream or not:\n{}", serve.output());
}

#[test]
fn serve_refuses_an_address_beyond_loopback_without_a_token() {
    let org = TestOrg::new();
    let out = org.lemming(&["serve", "--listen", "0.0.0.0:0"]).fails_with(1);
    out.stderr_has(&["refusing to listen on 0.0.0.0:0 without a token", "LEMMING_API_TOKEN"]);
}

/// Prometheus: `$LEMMING_PROMETHEUS`, else `prometheus` on the PATH.
fn prometheus() -> Option<std::path::PathBuf> {
    peer("LEMMING_PROMETHEUS").or_else(|| {
        std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .map(|d| d.join("prometheus"))
            .find(|p| p.is_file())
    })
}

#[test]
fn a_real_prometheus_scrapes_the_daemon_and_counts_its_turns() {
    let Some(bin) = prometheus() else {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: a_real_prometheus_scrapes_the_daemon_and_counts_its_turns: prometheus is not installed; run scripts/setup-llm-peers.sh --only prometheus"
        );
        return;
    };
    let org = TestOrg::new();
    let (mut d, addr) = daemon_with_http(&org);
    let port = free_port();
    let dir = org.tmp.path().join("prometheus");
    fs::create_dir_all(dir.join("data")).unwrap();
    let config = format!(
        "global:\n  scrape_interval: 250ms\n  scrape_timeout: 200ms\nscrape_configs:\n  - job_name: lemming\n    static_configs:\n      - targets: ['{addr}']\n"
    );
    fs::write(dir.join("prometheus.yml"), config).unwrap();
    let log = dir.join("prometheus.log");
    let out = fs::File::create(&log).unwrap();
    let mut prom = KillOnDrop(
        std::process::Command::new(&bin)
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display())),
    );
    let papi: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    crate::peers::wait_ready(&mut prom, papi, "/-/ready", Duration::from_secs(30), &log);

    // A few turns, each woken by a message.
    for i in 0..3 {
        let id = send_via_api(&org, addr, "manager", &format!("turn {i}"));
        let answered = wait_until(Duration::from_secs(10), || {
            let replies =
                file_events(&org.root).iter().filter(|e| e["event"] == "delivered" && e["to"] == "human").count();
            replies > i
        });
        assert!(answered, "no answer to {id}\n{d}");
    }
    // The daemon's turns: every turn it committed, all after its server started.
    let turns = committed_turn(&org.root) - d.start_turn;
    assert!(turns >= 4, "the first turn and one per message: {turns}");
    let url = format!("http://{papi}/api/v1/query?query=lemming_turns_total");
    let mut last = String::new();
    let counted = wait_until(Duration::from_secs(30), || {
        last = get(&url).1;
        let v: Value = serde_json::from_str(&last).unwrap_or(Value::Null);
        v["data"]["result"][0]["value"][1].as_str() == Some(turns.to_string().as_str())
    });
    assert!(
        counted,
        "Prometheus did not count {turns} turns within 30 s; last answer: {last}\n--- prometheus log\n{}",
        fs::read_to_string(&log).unwrap_or_default()
    );
    d.assert_running("after the scrapes");
    drop(prom);
}

#[test]
fn run_and_serve_listen_where_org_toml_says_and_the_server_stops_with_the_daemon() {
    let org = TestOrg::new();
    let toml = org.read("org/org.toml");
    org.write("org/org.toml", format!("{toml}\n[http]\nlisten = \"127.0.0.1:0\"\n"));
    let mut d = org.spawn_run(&[]);
    let addr = served_at(|| d.output());
    d.wait_ready();
    assert_eq!(get(&format!("http://{addr}/health")).0, 200);
    d.signal(libc::SIGTERM);
    let status = d.wait_exit(Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{d}");
    assert_eq!(get(&format!("http://{addr}/health")).0, 0, "the server is gone with the daemon");

    let mut serve = Serve::start_with(&org, &[]);
    let addr = served_at(|| serve.output());
    assert_eq!(get(&format!("http://{addr}/health")).0, 200);
    assert_eq!(serve.stop(), Some(0));
}
