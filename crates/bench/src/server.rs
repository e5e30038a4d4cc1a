//! Server benchmarks, against the real `lemming` binary: `GET /api/status`
//! with 1,000 agents, `/metrics`, 200 live event streams during 100 turns
//! (every client gets every event; the server's memory; commit-to-client
//! latency), and what serving the API with idle clients adds to a turn.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::daemon::lemming_bin;
use crate::synth::{Calls, Shape, Spec};

/// A `lemming serve` or `lemming run --http` process, killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
    token: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `lemming ARGS` on `org` and waits for the address it prints.
fn start(org: &Path, args: &[&str]) -> Result<Server, String> {
    let mut child = Command::new(lemming_bin()?)
        .arg("--org")
        .arg(org)
        .args(args)
        .env("LEMMING_LOG", "warn")
        .env_remove("LEMMING_API_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent {
                if let Some(rest) = line.split("http://").nth(1) {
                    let addr = rest.split('/').next().unwrap_or_default().to_string();
                    sent = tx.send(addr).is_ok();
                }
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(20)).map_err(|_| {
        let _ = child.kill();
        format!("`lemming {}` printed no address within 20 s", args.join(" "))
    })?;
    let addr: SocketAddr = addr.parse().map_err(|_| format!("not an address: {addr}"))?;
    let token = std::fs::read_to_string(org.join("org/state/api-token")).map_err(|e| e.to_string())?;
    Ok(Server { child, addr, token: token.trim().to_string() })
}

/// One HTTP/1.0 request; returns the status and the body.
fn request(s: &Server, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String), String> {
    let mut c = TcpStream::connect(s.addr).map_err(|e| e.to_string())?;
    let body = body.unwrap_or("");
    write!(
        c,
        "{method} {path} HTTP/1.0\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        s.addr,
        s.token,
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut out = String::new();
    c.read_to_string(&mut out).map_err(|e| e.to_string())?;
    let status = out.split(' ').nth(1).and_then(|v| v.parse().ok()).ok_or("no status line")?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

/// p50 in ms of `n` GETs of `path`.
fn get_p50(s: &Server, path: &str, n: usize) -> Result<f64, String> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let (status, _) = request(s, "GET", path, None)?;
        if status != 200 {
            return Err(format!("GET {path}: {status}"));
        }
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok(times[times.len() / 2])
}

/// What one event-stream client saw: (seq, event name, latency in ms from
/// the event's `at` to its arrival).
type Seen = Vec<(u64, String, f64)>;

/// Opens `n` event streams; each records what it gets until `stop`.
fn clients(s: &Server, n: usize, stop: &Arc<AtomicBool>) -> Result<Vec<Arc<Mutex<Seen>>>, String> {
    let mut all = Vec::new();
    for _ in 0..n {
        let mut c = TcpStream::connect(s.addr).map_err(|e| e.to_string())?;
        write!(c, "GET /api/events HTTP/1.0\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\r\n", s.addr, s.token)
            .map_err(|e| e.to_string())?;
        c.set_read_timeout(Some(Duration::from_millis(200))).map_err(|e| e.to_string())?;
        let seen = Arc::new(Mutex::new(Seen::new()));
        let (mine, stop) = (Arc::clone(&seen), Arc::clone(stop));
        std::thread::spawn(move || {
            let mut r = BufReader::new(c);
            let (mut id, mut name) = (None::<u64>, String::new());
            let mut line = String::new();
            while !stop.load(Ordering::Relaxed) {
                line.clear();
                match r.read_line(&mut line) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(_) => continue,
                }
                let l = line.trim_end();
                if let Some(v) = l.strip_prefix("id: ") {
                    id = v.parse().ok();
                } else if let Some(v) = l.strip_prefix("event: ") {
                    name = v.to_string();
                } else if let Some(v) = l.strip_prefix("data: ") {
                    let now = chrono::Utc::now();
                    let at = serde_json::from_str::<serde_json::Value>(v)
                        .ok()
                        .and_then(|d| d.get("at")?.as_str()?.parse::<chrono::DateTime<chrono::Utc>>().ok());
                    let ms = at.map(|a| (now - a).num_microseconds().unwrap_or(0) as f64 / 1000.0).unwrap_or(f64::NAN);
                    if let Some(seq) = id.take() {
                        mine.lock().unwrap_or_else(|e| e.into_inner()).push((seq, std::mem::take(&mut name), ms));
                    }
                }
            }
        });
        all.push(seen);
    }
    Ok(all)
}

fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0u64) as f64
        / 1024.0
}

/// The seqs of the events in `events.jsonl` after `after`.
fn file_seqs(org: &Path, after: u64) -> Vec<u64> {
    std::fs::read_to_string(org.join("org/state/events.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?.get("seq")?.as_u64())
        .filter(|s| *s > after)
        .collect()
}

fn init(org: &Path) -> Result<(), String> {
    let out = Command::new(lemming_bin()?).arg("init").arg(org).output().map_err(|e| e.to_string())?;
    out.status.success().then_some(()).ok_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned())
}

fn lemming(org: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(lemming_bin()?).arg("--org").arg(org).args(args).output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("lemming {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr)))
    }
}

/// What [`streams`] measured.
struct Streams {
    turns: usize,
    events: usize,
    complete: usize,
    rss_before: f64,
    rss_after: f64,
    latency_p50: f64,
    latency_p99: f64,
}

/// 200 clients on the daemon's event stream while 100 messages go to the
/// manager one after another (each waits for its reply: a turn each).
fn streams(base: &Path, n_clients: usize, sends: usize) -> Result<Streams, String> {
    let tmp = tempfile::tempdir_in(base).map_err(|e| e.to_string())?;
    let org = tmp.path().join("org");
    init(&org)?;
    let s = start(&org, &["run", "--turn-seconds", "3600", "--http", "127.0.0.1:0"])?;
    std::thread::sleep(Duration::from_millis(300));
    let pid = s.child.id();
    let start_seq = file_seqs(&org, 0).last().copied().unwrap_or(0);
    let rss_before = rss_mb(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let seen = clients(&s, n_clients, &stop)?;
    std::thread::sleep(Duration::from_millis(300));
    let inbox = org.join("agents/human/inbox/new");
    // Sent as `lemming send` does (a script posting 100 messages in a few
    // seconds through the API would meet its rate limit).
    let mb = lemming_engine::org::Layout::new(&org).mail();
    for i in 0..sends {
        let msg = crate::daemon::to_manager(format!("ping {i}"));
        mb.send_now("human", &msg).map_err(|e| e.to_string())?;
        let id = msg.id;
        let deadline = Instant::now() + Duration::from_secs(10);
        'wait: loop {
            for e in std::fs::read_dir(&inbox).map_err(|e| e.to_string())?.flatten() {
                if let Ok(m) = lemming_engine::message::Message::parse(&std::fs::read(e.path()).unwrap_or_default()) {
                    if m.reply_to.as_deref() == Some(id.as_str()) {
                        let _ = std::fs::remove_file(e.path());
                        break 'wait;
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(format!("no reply to message {i} within 10 s"));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    std::thread::sleep(Duration::from_millis(1000));
    let rss_after = rss_mb(pid);
    stop.store(true, Ordering::Relaxed);
    let want = file_seqs(&org, start_seq);
    let turns = std::fs::read_to_string(org.join("org/state/events.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("\"event\":\"turn\""))
        .count();
    let mut complete = 0;
    let mut lat = Vec::new();
    for c in &seen {
        let got = c.lock().unwrap_or_else(|e| e.into_inner());
        let seqs: Vec<u64> = got.iter().map(|(s, _, _)| *s).collect();
        if seqs == want {
            complete += 1;
        }
        lat.extend(got.iter().filter(|(_, n, _)| n == "turn_committed").map(|(_, _, ms)| *ms));
    }
    lat.retain(|v| v.is_finite());
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| lat.get(((lat.len().max(1) - 1) as f64 * p).round() as usize).copied().unwrap_or(f64::NAN);
    Ok(Streams {
        turns,
        events: want.len(),
        complete,
        rss_before,
        rss_after,
        latency_p50: pct(0.5),
        latency_p99: pct(0.99),
    })
}

/// 1,000 agents with 10 unread messages each, in a ring of 4.
fn thousand() -> Spec {
    Spec {
        agents: 1000,
        unread: 10,
        shape: Shape::Ring(4),
        latency_ms: 0,
        max_parallel: 8,
        calls: Calls::None,
        sandbox: None,
    }
}

/// A 1,000-agent org under a paused daemon, for timing its turns: with
/// `http`, the daemon also serves the API to `streams` connected event
/// streams (connected, reading what comes, asking for nothing).
struct Rig {
    org: PathBuf,
    spec: Spec,
    server: Server,
    seen: Vec<Arc<Mutex<Seen>>>,
    stop: Arc<AtomicBool>,
    round: usize,
    _tmp: tempfile::TempDir,
}

impl Rig {
    fn new(base: &Path, http: bool, streams: usize) -> Result<Rig, String> {
        let tmp = tempfile::tempdir_in(base).map_err(|e| e.to_string())?;
        let org: PathBuf = tmp.path().join("org");
        let spec = thousand();
        crate::synth::generate(&org, &spec).map_err(|e| e.to_string())?;
        lemming(&org, &["pause"])?;
        let mut args = vec!["run", "--turn-seconds", "0.2"];
        if http {
            args.extend(["--http", "127.0.0.1:0"]);
        }
        let server = if http {
            start(&org, &args)?
        } else {
            let child = Command::new(lemming_bin()?)
                .arg("--org")
                .arg(&org)
                .args(&args)
                .env("LEMMING_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| e.to_string())?;
            Server { child, addr: SocketAddr::from(([127, 0, 0, 1], 0)), token: String::new() }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let seen = if http { clients(&server, streams, &stop)? } else { Vec::new() };
        Ok(Rig { org, spec, server, seen, stop, round: 0, _tmp: tmp })
    }

    /// One turn on freshly injected mail: its `ms`, and with streams, the
    /// time from its commit until every stream had all of its events.
    fn turn(&mut self) -> Result<(f64, Option<f64>), String> {
        self.round += 1;
        lemming(&self.org, &["pause"])?;
        // Let a turn in flight end.
        std::thread::sleep(Duration::from_millis(600));
        crate::synth::inject(&self.org, &self.spec, self.round).map_err(|e| e.to_string())?;
        let before = turn_lines(&self.org).len();
        lemming(&self.org, &["resume"])?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let (ms, seq) = loop {
            let lines = turn_lines(&self.org);
            // The first turn after the resume ran the injected mail.
            if let Some(t) = lines.get(before) {
                let ran = t.get("ran").and_then(|r| r.as_array().map(Vec::len)).unwrap_or(0);
                if ran != self.spec.agents {
                    return Err(format!("the turn after resume ran {ran} agents, not {}", self.spec.agents));
                }
                let ms = t.get("ms").and_then(|v| v.as_f64()).ok_or("a turn event without `ms`")?;
                break (ms, t.get("seq").and_then(|v| v.as_u64()).unwrap_or(0));
            }
            if Instant::now() > deadline {
                return Err("no turn within 60 s of resume".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        lemming(&self.org, &["pause"])?;
        if self.seen.is_empty() {
            return Ok((ms, None));
        }
        let committed = Instant::now();
        let has = |c: &Arc<Mutex<Seen>>| c.lock().unwrap_or_else(|e| e.into_inner()).iter().any(|(q, _, _)| *q == seq);
        while !self.seen.iter().all(has) {
            if committed.elapsed() > Duration::from_secs(60) {
                return Err("the streams did not get the turn's events within 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok((ms, Some(committed.elapsed().as_secs_f64() * 1000.0)))
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.server.child.kill();
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The `turn` events of `events.jsonl`.
fn turn_lines(org: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(org.join("org/state/events.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("\"event\":\"turn\""))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Runs every server case and prints its table.
pub fn run(base: &Path, runs: usize) -> Result<bool, String> {
    println!();
    println!("| server | figure | aim |");
    println!("|---|---:|---:|");
    let mut ok = true;

    let tmp = tempfile::tempdir_in(base).map_err(|e| e.to_string())?;
    let org = tmp.path().join("org");
    crate::synth::generate(&org, &thousand()).map_err(|e| e.to_string())?;
    let s = start(&org, &["serve", "--listen", "127.0.0.1:0"])?;
    let status = get_p50(&s, "/api/status", 50)?;
    let metrics = get_p50(&s, "/metrics", 200)?;
    drop(s);
    println!("| `GET /api/status`, 1,000 agents, p50 of 50 | {status:.1} ms | < 20 ms |");
    println!("| `GET /metrics`, 1,000 agents, p50 of 200 | {metrics:.2} ms | < 10 ms |");
    ok &= status < 20.0 && metrics < 10.0;

    let st = streams(base, 200, 100)?;
    println!(
        "| 200 event streams, {} turns ({} events): clients that got every event | {} of 200 | 200 |",
        st.turns, st.events, st.complete
    );
    println!(
        "| the server's RSS: before the clients, after {} turns with them | {:.1} MB, {:.1} MB (+{:.1} MB) | < +30 MB |",
        st.turns,
        st.rss_before,
        st.rss_after,
        st.rss_after - st.rss_before
    );
    println!(
        "| commit to client (`turn_committed`), p50 / p99 | {:.1} ms / {:.1} ms | p50 < 50 ms |",
        st.latency_p50, st.latency_p99
    );
    ok &= st.complete == 200 && st.rss_after - st.rss_before < 30.0 && st.latency_p50 < 50.0;

    // The three daemons take turns, round after round, so that the machine's
    // ups and downs fall on all of them; the first (cold) turn of each is left out.
    let rounds = runs.max(3) + 2;
    let mut rigs = [Rig::new(base, false, 0)?, Rig::new(base, true, 0)?, Rig::new(base, true, 200)?];
    let (mut ms, mut fanout) = ([Vec::new(), Vec::new(), Vec::new()], Vec::new());
    for round in 0..rounds {
        for (i, rig) in rigs.iter_mut().enumerate() {
            let (t, f) = rig.turn()?;
            if round > 0 {
                ms[i].push(t);
                fanout.extend(f);
            }
        }
    }
    drop(rigs);
    let [alone, bare, with] = ms.map(median);
    let pct = |x: f64| (x / alone - 1.0) * 100.0;
    let n = rounds - 1;
    println!("| a turn of 1,000 agents x 10 unread (median of {n}, warm): the daemon alone | {alone:.0} ms | |");
    println!(
        "| the same, the daemon serving the API, no stream connected | {bare:.0} ms ({:+.1} %) | < +5 % |",
        pct(bare)
    );
    println!(
        "| the same, the daemon serving 200 connected event streams | {with:.0} ms ({:+.1} %) | < +5 % |",
        pct(with)
    );
    println!("| then until all 200 streams had the turn's ~12,000 events (median) | {:.0} ms | |", median(fanout));
    let extra = pct(with).max(pct(bare));
    ok &= extra < 5.0;
    Ok(ok)
}
