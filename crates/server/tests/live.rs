//! The live routes over real HTTP, in-process: `GET /api/events` (its
//! headers, frames as lines land in `events.jsonl`, `turn_started` and the
//! wake-up from the daemon's bus, the end of every stream at shutdown) and
//! `GET /metrics` (open on loopback, fast).

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use lemming_engine::events::{Bus, Event, EventKind, TurnReport};
use lemming_server::{bind, Options};

const TOKEN: &str = "secret-token-0123456789";

fn delivered(seq: u64) -> Event {
    let kind = EventKind::Delivered { id: format!("m{seq}"), from: "manager".into(), to: "human".into() };
    Event { seq, turn: 1, at: chrono::Utc::now(), kind }
}

fn append(root: &Path, events: &[Event]) {
    use std::io::Write;
    let text: String = events.iter().map(|e| format!("{}\n", e.to_json())).collect();
    let mut f =
        std::fs::OpenOptions::new().create(true).append(true).open(root.join("org/state/events.jsonl")).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// A server on a free loopback port for a bare org; stopped when the sender is dropped or fired.
struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(root: &Path, bus: Option<Bus>) -> Server {
    std::fs::create_dir_all(root.join("org/state")).unwrap();
    let mut opts = Options::new(root.to_path_buf(), "127.0.0.1:0".parse().unwrap());
    opts.token = Some(TOKEN.into());
    if let Some(bus) = bus {
        opts.sources.bus = bus;
        opts.in_daemon = true;
    }
    let bound = bind(opts).await.unwrap();
    let addr = bound.addr;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(bound.serve(async move {
        let _ = rx.await;
    }));
    Server { addr, stop: Some(tx), task }
}

impl Server {
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let done = tokio::time::timeout(Duration::from_secs(5), self.task).await;
        assert!(matches!(done, Ok(Ok(Ok(())))), "the server did not stop within 5 s with a stream open: {done:?}");
    }
}

/// An open event stream, parsed into frames as they come.
struct Stream {
    resp: reqwest::Response,
    buf: String,
}

impl Stream {
    async fn open(addr: SocketAddr, last: Option<u64>) -> (Stream, reqwest::header::HeaderMap) {
        let mut req = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(format!("http://{addr}/api/events"))
            .bearer_auth(TOKEN)
            .header("accept-encoding", "gzip, br");
        if let Some(id) = last {
            req = req.header("last-event-id", id.to_string());
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let headers = resp.headers().clone();
        (Stream { resp, buf: String::new() }, headers)
    }

    /// The next frame that is not a comment, within `limit`.
    async fn next(&mut self, limit: Duration) -> String {
        let frame = self.within(limit).await;
        frame.unwrap_or_else(|| panic!("no frame within {limit:?}; have {:?}", self.buf))
    }

    /// The next frame that is not a comment, if one comes within `limit`.
    async fn within(&mut self, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(i) = self.buf.find("\n\n") {
                let frame = self.buf[..i + 1].to_string();
                self.buf.drain(..i + 2);
                if frame.starts_with(':') {
                    continue;
                }
                return Some(frame);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, self.resp.chunk()).await.ok()?;
            let chunk = chunk.unwrap().expect("the stream ended");
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// Waits until the server's pump listens on `bus` (an event published
    /// before that is dropped): publishes `turn_started` until one comes
    /// through. The frame after it is the first that is not a `turn_started`.
    async fn when_listening(&mut self, bus: &Bus) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            bus.publish(&Event { seq: 0, turn: 0, at: chrono::Utc::now(), kind: EventKind::TurnStarted {} });
            if let Some(f) = self.within(Duration::from_millis(50)).await {
                assert_eq!(field(&f, "event"), Some("turn_started"), "{f}");
                return;
            }
            assert!(Instant::now() < deadline, "the server never listened on the bus");
        }
    }

    /// The next frame that is not a `turn_started`, within `limit`.
    async fn next_but_turn_started(&mut self, limit: Duration) -> String {
        loop {
            let f = self.next(limit).await;
            if field(&f, "event") != Some("turn_started") {
                return f;
            }
        }
    }
}

fn field<'a>(frame: &'a str, name: &str) -> Option<&'a str> {
    frame.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
}

#[tokio::test]
async fn the_stream_is_sse_uncompressed_and_sends_each_line_as_it_lands() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("org/state")).unwrap();
    append(d.path(), &[delivered(1), delivered(2)]);
    let server = start(d.path(), None).await;
    let (mut s, h) = Stream::open(server.addr, None).await;
    assert_eq!(h["content-type"], "text/event-stream");
    assert_eq!(h["cache-control"], "no-cache");
    assert_eq!(h["x-accel-buffering"], "no");
    assert!(h.get("content-encoding").is_none(), "compressed: {h:?}");
    let third = delivered(3);
    append(d.path(), std::slice::from_ref(&third));
    let f = s.next(Duration::from_secs(5)).await;
    assert_eq!(field(&f, "id"), Some("3"), "what was there before the server started is not sent: {f}");
    assert_eq!(field(&f, "event"), Some("delivered"));
    let data: serde_json::Value = serde_json::from_str(field(&f, "data").unwrap()).unwrap();
    assert_eq!(data, third.to_json());

    // A reconnect with Last-Event-ID 1 gets 2 (from the file) and 3 (from memory).
    let (mut again, _) = Stream::open(server.addr, Some(1)).await;
    let ids = [field(&again.next(Duration::from_secs(5)).await, "id").map(String::from), {
        let f = again.next(Duration::from_secs(5)).await;
        field(&f, "id").map(String::from)
    }];
    assert_eq!(ids, [Some("2".to_string()), Some("3".to_string())]);
    // An open stream does not hold the server up when it stops.
    server.stop().await;
}

#[tokio::test]
async fn a_bad_last_event_id_gets_400_with_the_error_shape() {
    let d = tempfile::tempdir().unwrap();
    let server = start(d.path(), None).await;
    let r = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{}/api/events", server.addr))
        .bearer_auth(TOKEN)
        .header("last-event-id", "abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_request");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_the_daemon_turn_started_is_live_and_a_committed_turn_is_sent_at_once() {
    let d = tempfile::tempdir().unwrap();
    let bus = Bus::new();
    let server = start(d.path(), Some(bus.clone())).await;
    let (mut s, _) = Stream::open(server.addr, None).await;
    // The pump subscribes to the bus as it starts.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut seq = 0;
    let mut latencies = Vec::new();
    for turn in 1..=5u64 {
        bus.publish(&Event { seq: 0, turn, at: chrono::Utc::now(), kind: EventKind::TurnStarted {} });
        let f = s.next(Duration::from_secs(5)).await;
        assert_eq!((field(&f, "event"), field(&f, "id")), (Some("turn_started"), None), "{f}");
        // Not on a poll's beat: somewhere between two.
        tokio::time::sleep(Duration::from_millis(37 * turn)).await;
        seq += 1;
        let report = Event {
            seq: seq + 1,
            turn,
            at: chrono::Utc::now(),
            kind: EventKind::Turn(TurnReport { turn, ..TurnReport::default() }),
        };
        append(d.path(), &[delivered(seq), report.clone()]);
        let published = Instant::now();
        bus.publish(&report);
        let f = s.next(Duration::from_secs(5)).await;
        assert_eq!(field(&f, "event"), Some("delivered"));
        latencies.push(published.elapsed());
        let f = s.next(Duration::from_secs(5)).await;
        assert_eq!(field(&f, "event"), Some("turn_committed"));
        seq += 1;
    }
    // The file is looked at every 250 ms: five sends this fast are the bus waking the hub.
    let worst = latencies.iter().max().unwrap();
    assert!(*worst < Duration::from_millis(100), "commit → frame latencies: {latencies:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_the_daemon_reply_deltas_are_live_without_an_id() {
    let d = tempfile::tempdir().unwrap();
    let bus = Bus::new();
    let server = start(d.path(), Some(bus.clone())).await;
    let (mut s, _) = Stream::open(server.addr, None).await;
    s.when_listening(&bus).await;
    for (text, restart) in [("{\"messages\":[{\"to", false), ("", true), ("{\"mess", false)] {
        let kind = EventKind::ReplyDelta { agent: "manager".into(), text: text.into(), restart };
        bus.publish(&Event { seq: 0, turn: 3, at: chrono::Utc::now(), kind });
        let f = s.next_but_turn_started(Duration::from_secs(5)).await;
        assert_eq!((field(&f, "event"), field(&f, "id")), (Some("reply_delta"), None), "{f}");
        let data: serde_json::Value = serde_json::from_str(field(&f, "data").unwrap()).unwrap();
        assert_eq!((data["agent"].as_str(), data["text"].as_str()), (Some("manager"), Some(text)), "{f}");
        assert_eq!(data["restart"].as_bool().unwrap_or(false), restart, "{f}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_open_on_loopback_and_answer_in_well_under_10_ms() {
    let d = tempfile::tempdir().unwrap();
    for i in 0..300 {
        std::fs::create_dir_all(d.path().join(format!("agents/agent{i}/inbox/new"))).unwrap();
    }
    let server = start(d.path(), None).await;
    append(d.path(), &[delivered(1)]);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("http://{}/metrics", server.addr);
    let mut times = Vec::new();
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while times.len() < 30 {
        let start = Instant::now();
        let r = client.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200, "open to loopback without a token");
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
        text = r.text().await.unwrap();
        times.push(start.elapsed());
        if !text.contains("lemming_unread_messages{agent=\"agent299\"} 0")
            || !text.contains("lemming_messages_delivered_total 1")
        {
            // Not refreshed yet: wait for the pump.
            assert!(Instant::now() < deadline, "the metrics never showed the org:\n{text}");
            times.clear();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    times.sort();
    let p50 = times[times.len() / 2];
    assert!(p50 < Duration::from_millis(10), "GET /metrics took {p50:?} (p50 of {times:?})");
    for family in [
        "lemming_turns",
        "lemming_turn_duration_seconds",
        "lemming_messages_delivered",
        "lemming_dead_letters",
        "lemming_agent_runs",
        "lemming_credits_spent",
        "lemming_tokens",
        "lemming_provider_requests",
        "lemming_provider_request_duration_seconds",
        "lemming_unread_messages",
        "lemming_breaker_open",
        "lemming_tool_calls",
    ] {
        assert!(text.contains(&format!("# TYPE {family} ")), "{family} is missing:\n{text}");
    }
    assert!(text.ends_with("# EOF\n"));
    server.stop().await;
}
