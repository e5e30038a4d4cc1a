//! Daemon benchmarks, run against the real `lemming` binary (built beside this
//! one): the send-to-reply latency with wake on message, and the CPU and memory
//! of an idle daemon (with 1 s turns, and with 60 s turns).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use lemming_engine::message::{Kind, Message, Priority, To};
use lemming_engine::org::Layout;

/// The `lemming` binary next to this executable.
pub fn lemming_bin() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let bin = exe.with_file_name("lemming");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!("{} not found: build it with `cargo build --release --bin lemming`", bin.display()))
    }
}

pub(crate) struct Daemon(pub(crate) Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `lemming run --turn-seconds TURN_SECONDS` on `org` and returns once
/// its first turn has committed.
pub(crate) fn start(org: &Path, turn_seconds: f64) -> Result<Daemon, String> {
    start_node(org, turn_seconds, None)
}

/// [`start`], as the node `node` of an org on several nodes.
pub(crate) fn start_node(org: &Path, turn_seconds: f64, node: Option<&str>) -> Result<Daemon, String> {
    let node: Vec<&str> = node.map(|n| vec!["--node", n]).unwrap_or_default();
    let child = Command::new(lemming_bin()?)
        .args(["--org"])
        .arg(org)
        .args(node)
        .args(["run", "--turn-seconds", &turn_seconds.to_string()])
        .env("LEMMING_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let d = Daemon(child);
    // Ready once the first turn has committed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !org.join("org/state/turn.json").exists() {
        if Instant::now() > deadline {
            return Err("the daemon did not commit its first turn within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(200));
    Ok(d)
}

pub(crate) fn init(org: &Path) -> Result<(), String> {
    let out = Command::new(lemming_bin()?).arg("init").arg(org).output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// A message from the human to the manager, with a fresh id that is also its thread.
pub fn to_manager(body: String) -> Message {
    let now = Utc::now();
    let id = lemming_engine::clock::IdGen::message_id(&lemming_engine::clock::RandomIds, now, "human");
    Message {
        id: id.clone(),
        from: "human".into(),
        to: To(vec!["manager".into()]),
        subject: None,
        body,
        priority: Priority::Normal,
        reply_to: None,
        thread: id,
        created_at: now,
        turn: 0,
        ttl_turns: None,
        kind: Kind::Message,
        ack_required: false,
    }
}

/// Polls `inbox` until a message matching `want` is there, removes it, and
/// returns when it was seen, with the message. Other messages are left alone.
pub(crate) fn wait_for(
    inbox: &Path,
    deadline: Instant,
    what: &str,
    want: impl Fn(&Message) -> bool,
) -> Result<(Instant, Message), String> {
    loop {
        for e in std::fs::read_dir(inbox).map_err(|e| e.to_string())?.flatten() {
            if let Ok(m) = std::fs::read(e.path())
                .map_err(|e| e.to_string())
                .and_then(|b| Message::parse(&b).map_err(|e| e.to_string()))
            {
                if want(&m) {
                    let seen = Instant::now();
                    let _ = std::fs::remove_file(e.path());
                    return Ok((seen, m));
                }
            }
        }
        if Instant::now() > deadline {
            return Err(format!("no {what} within 5 s"));
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// Sends `n` messages one after another to the manager of a default org under
/// a running daemon, each as `lemming send` does (durable write into the
/// human's outbox), and measures until the manager's reply is in the human's inbox.
/// Returns (p50, p99, max) in ms.
pub fn latency(base: &Path, n: usize) -> Result<(f64, f64, f64), String> {
    let tmp = tempfile::tempdir_in(base).map_err(|e| e.to_string())?;
    let org = tmp.path().join("org");
    init(&org)?;
    let _d = start(&org, 60.0)?;
    latency_of(&org, n)
}

/// [`latency`] on `org`, whose daemons run: the human's `n` sends to the
/// manager, each until its reply is in the human's inbox.
pub(crate) fn latency_of(org: &Path, n: usize) -> Result<(f64, f64, f64), String> {
    let mb = Layout::new(org).mail();
    let inbox = org.join("agents/human/inbox/new");
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let msg = to_manager(format!("ping {i}"));
        let t = Instant::now();
        mb.send_now("human", &msg).map_err(|e| e.to_string())?;
        let (seen, _) = wait_for(&inbox, t + Duration::from_secs(5), &format!("reply to message {i}"), |m| {
            m.reply_to.as_deref() == Some(msg.id.as_str())
        })?;
        times.push(ms(seen - t));
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok((percentile(&times, 0.5), percentile(&times, 0.99), *times.last().unwrap_or(&0.0)))
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// p50 and p90 of a set of times, in ms.
#[derive(Debug, Clone, Copy)]
pub struct Spread {
    /// The median.
    pub p50: f64,
    /// The 90th percentile.
    pub p90: f64,
}

impl Spread {
    fn of(mut v: Vec<f64>) -> Spread {
        v.sort_by(|a, b| a.total_cmp(b));
        Spread { p50: percentile(&v, 0.5), p90: percentile(&v, 0.9) }
    }
}

/// What [`tool_round_trip`] measured.
#[derive(Debug, Clone, Copy)]
pub struct RoundTrip {
    /// A plain message: send to the manager's reply in the human's inbox (one turn).
    pub plain: Spread,
    /// A message asking for `read_file`: send to the manager's reply to it
    /// (the tool turn: the reply's messages go out after its calls ran).
    pub tool_turn: Spread,
    /// A message asking for `read_file`: send to the manager's acknowledgement
    /// `tool read_file ok: ...` in the human's inbox (the tool turn plus one).
    pub tool: Spread,
    /// Within each tool send: from the manager's reply to the message (the
    /// tool turn) to its acknowledgement of the result (the turn after).
    pub second_turn: Spread,
}

/// The tool round trip under a running daemon on the default org (mock
/// provider, `turn_seconds` 60, wake on message). `n` plain messages and `n`
/// messages with a line `/tool read_file {"path":"x.md"}` go to the manager,
/// alternately, so both kinds see the same machine. A plain message is done
/// when the manager's reply reaches the human; a tool message when the
/// manager's acknowledgement of the tool's result does: the turn that calls
/// the tool and delivers its result, the wake, and the turn that reads it.
pub fn tool_round_trip(base: &Path, n: usize) -> Result<RoundTrip, String> {
    let tmp = tempfile::tempdir_in(base).map_err(|e| e.to_string())?;
    let org = tmp.path().join("org");
    init(&org)?;
    let layout = Layout::new(&org);
    let ws = layout.workspace("manager");
    std::fs::create_dir_all(&ws).map_err(|e| e.to_string())?;
    std::fs::write(ws.join("x.md"), "# x\n\nA small file for the tool round trip.\n").map_err(|e| e.to_string())?;
    let _d = start(&org, 60.0)?;
    let mb = layout.mail();
    let inbox = org.join("agents/human/inbox/new");
    let (mut plain, mut tool_turn, mut tool, mut second) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        // Plain: one turn.
        let msg = to_manager(format!("ping {i}"));
        let t = Instant::now();
        mb.send_now("human", &msg).map_err(|e| e.to_string())?;
        let (seen, _) = wait_for(&inbox, t + Duration::from_secs(5), &format!("reply to plain message {i}"), |m| {
            m.reply_to.as_deref() == Some(msg.id.as_str())
        })?;
        plain.push(ms(seen - t));
        settle();
        // With a tool call: the tool turn, then the turn that reads the result.
        let msg = to_manager(format!("ping {i}\n/tool read_file {{\"path\":\"x.md\"}}"));
        let t = Instant::now();
        mb.send_now("human", &msg).map_err(|e| e.to_string())?;
        let deadline = t + Duration::from_secs(5);
        let (first, _) = wait_for(&inbox, deadline, &format!("reply to tool message {i}"), |m| {
            m.reply_to.as_deref() == Some(msg.id.as_str())
        })?;
        let (ack, m) = wait_for(&inbox, deadline, &format!("acknowledgement of read_file for message {i}"), |m| {
            m.thread == msg.thread && m.body.starts_with("tool read_file ")
        })?;
        if !m.body.starts_with("tool read_file ok: # x") {
            return Err(format!("the manager's read_file did not read x.md: {:?}", m.body));
        }
        tool_turn.push(ms(first - t));
        tool.push(ms(ack - t));
        second.push(ms(ack - first));
        settle();
    }
    Ok(RoundTrip {
        plain: Spread::of(plain),
        tool_turn: Spread::of(tool_turn),
        tool: Spread::of(tool),
        second_turn: Spread::of(second),
    })
}

/// Lets the turn that a delivery wakes (which finds nothing to do) finish, so
/// that every send meets an idle daemon.
fn settle() {
    std::thread::sleep(Duration::from_millis(30));
}

fn cpu_ticks(pid: u32) -> Result<u64, String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| e.to_string())?;
    // Fields after the command name (which is in parentheses): utime is the 12th, stime the 13th.
    let rest = s.rsplit_once(')').map(|(_, r)| r).ok_or("bad stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11).and_then(|v| v.parse().ok()).ok_or("bad utime")?;
    let stime: u64 = f.get(12).and_then(|v| v.parse().ok()).ok_or("bad stime")?;
    Ok(utime + stime)
}

fn status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

/// Starts a daemon with a turn every `turn_seconds` on an org of `agents`
/// agents with nothing to do and measures its CPU over `window`. Returns (cpu
/// percent, RSS MB, peak RSS MB).
pub fn idle(base: &Path, agents: usize, window: Duration, turn_seconds: f64) -> Result<(f64, f64, f64), String> {
    let tmp = tempfile::tempdir_in(base).map_err(|e| e.to_string())?;
    let org = tmp.path().join("org");
    let spec = crate::synth::Spec {
        agents,
        unread: 0,
        shape: crate::synth::Shape::Ring(2),
        latency_ms: 0,
        max_parallel: 8,
        calls: crate::synth::Calls::None,
        sandbox: None,
    };
    crate::synth::generate(&org, &spec).map_err(|e| e.to_string())?;
    let d = start(&org, turn_seconds)?;
    let pid = d.0.id();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let before = cpu_ticks(pid)?;
    std::thread::sleep(window);
    let after = cpu_ticks(pid)?;
    let cpu = (after - before) as f64 / hz / window.as_secs_f64() * 100.0;
    Ok((cpu, status_kb(pid, "VmRSS:") as f64 / 1024.0, status_kb(pid, "VmHWM:") as f64 / 1024.0))
}
