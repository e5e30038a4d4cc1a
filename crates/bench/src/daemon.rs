//! Daemon benchmarks, run against the real `lemming` binary (built beside this
//! one): the send-to-reply latency with wake on message, and the CPU and memory
//! of an idle daemon.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use lemming_engine::mailbox::Mailbox;
use lemming_engine::message::{Kind, Message, Priority, To};

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

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(org: &Path) -> Result<Daemon, String> {
    let child = Command::new(lemming_bin()?)
        .args(["--org"])
        .arg(org)
        .args(["run", "--turn-seconds", "60"])
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

fn init(org: &Path) -> Result<(), String> {
    let out = Command::new(lemming_bin()?).arg("init").arg(org).output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Sends `n` messages one after another to the manager of a default org under
/// a running daemon, each as `lemming send` does (durable write into the
/// human's outbox), and measures until the manager's reply is in the human's inbox.
/// Returns (p50, p99, max) in ms.
pub fn latency(base: &Path, n: usize) -> Result<(f64, f64, f64), String> {
    let tmp = tempfile::tempdir_in(base).map_err(|e| e.to_string())?;
    let org = tmp.path().join("org");
    init(&org)?;
    let _d = start(&org)?;
    let mb = Mailbox::new(&org);
    let inbox = org.join("agents/human/inbox/new");
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let now = Utc::now();
        let id = lemming_engine::clock::IdGen::message_id(&lemming_engine::clock::RandomIds, now, "human");
        let msg = Message {
            id: id.clone(),
            from: "human".into(),
            to: To(vec!["manager".into()]),
            subject: None,
            body: format!("ping {i}"),
            priority: Priority::Normal,
            reply_to: None,
            thread: id.clone(),
            created_at: now,
            turn: 0,
            ttl_turns: None,
            kind: Kind::Message,
        };
        let t = Instant::now();
        mb.send_now("human", &msg).map_err(|e| e.to_string())?;
        let deadline = t + Duration::from_secs(5);
        'wait: loop {
            for e in std::fs::read_dir(&inbox).map_err(|e| e.to_string())?.flatten() {
                if let Ok(bytes) = std::fs::read(e.path()) {
                    if Message::parse(&bytes).is_ok_and(|m| m.reply_to.as_deref() == Some(id.as_str())) {
                        let _ = std::fs::remove_file(e.path());
                        break 'wait;
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(format!("no reply to message {i} within 5 s"));
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok((percentile(&times, 0.5), percentile(&times, 0.99), *times.last().unwrap_or(&0.0)))
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

/// Starts a daemon on an org of `agents` agents with nothing to do and
/// measures its CPU over `window`. Returns (cpu percent, RSS MB, peak RSS MB).
pub fn idle(base: &Path, agents: usize, window: Duration) -> Result<(f64, f64, f64), String> {
    let tmp = tempfile::tempdir_in(base).map_err(|e| e.to_string())?;
    let org = tmp.path().join("org");
    let spec =
        crate::synth::Spec { agents, unread: 0, shape: crate::synth::Shape::Ring(2), latency_ms: 0, max_parallel: 8 };
    crate::synth::generate(&org, &spec).map_err(|e| e.to_string())?;
    let d = start(&org)?;
    let pid = d.0.id();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let before = cpu_ticks(pid)?;
    std::thread::sleep(window);
    let after = cpu_ticks(pid)?;
    let cpu = (after - before) as f64 / hz / window.as_secs_f64() * 100.0;
    Ok((cpu, status_kb(pid, "VmRSS:") as f64 / 1024.0, status_kb(pid, "VmHWM:") as f64 / 1024.0))
}
