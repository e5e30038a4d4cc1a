//! Mail across nodes (`LEMMING_BENCH_ONLY=cluster`), against a real
//! `nats-server` with JetStream on a free loopback port, beside the same
//! work on one machine in the same run:
//!
//! - send-to-reply latency: the human on node a writes to the manager, who
//!   runs on node b under its own daemon; the reply comes back to node a;
//! - 10,000 messages: the human's outbox holds 10,000 messages for the
//!   manager; `lemming step` on node a publishes them, `lemming step` on node
//!   b delivers them (and runs the manager once); against one `lemming step`
//!   doing both on one machine.
//!
//! Skipped (and said so) when nats-server is not installed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::daemon::{init, latency_of, lemming_bin, start_node, to_manager, Daemon};
use crate::scale::run_timed;

/// Sends to the manager across nodes, for the latency.
const SENDS: usize = 200;
/// Messages of the throughput case.
const MESSAGES: usize = 10_000;

/// `nats-server`: `$LEMMING_NATS_SERVER`, or the one the peers' setup installed.
fn nats_server() -> Option<PathBuf> {
    std::env::var_os("LEMMING_NATS_SERVER")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/lemming-peers/venv-nats/bin/nats-server"))
        })
        .filter(|p| p.is_file())
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// A nats-server with JetStream, its store in `dir`; returns it and its URL.
fn start_nats(bin: &Path, dir: &Path) -> Result<(Daemon, String), String> {
    let port = free_port()?;
    let child = Command::new(bin)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(dir.join("jetstream"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let k = Daemon(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err("nats-server did not listen within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((k, format!("nats://127.0.0.1:{port}")))
}

/// A default org at `a` on nodes a and b of the server at `url`, the manager
/// on node b (everyone else on a), and its copy for node b at `b`.
fn two_nodes(a: &Path, b: &Path, url: &str) -> Result<(), String> {
    init(a)?;
    let toml = a.join("org/org.toml");
    let text = std::fs::read_to_string(&toml).map_err(|e| e.to_string())?;
    let cluster = format!("\n[cluster]\nname = \"bench\"\nnats_url = \"{url}\"\nnodes = [\"a\", \"b\"]\n");
    std::fs::write(&toml, text + &cluster).map_err(|e| e.to_string())?;
    let resume = a.join("agents/manager/resume.toml");
    let text = std::fs::read_to_string(&resume).map_err(|e| e.to_string())?;
    std::fs::write(&resume, text.replacen("name = \"manager\"", "name = \"manager\"\nnode = \"b\"", 1))
        .map_err(|e| e.to_string())?;
    let out = Command::new("cp").arg("-a").arg(a).arg(b).output().map_err(|e| e.to_string())?;
    out.status.success().then_some(()).ok_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Writes `MESSAGES` messages from the human to the manager into the human's
/// outbox of `org` (not one sync each: one `sync` at the end).
fn fill_outbox(org: &Path) -> Result<(), String> {
    let new = org.join("agents/human/outbox/new");
    std::fs::create_dir_all(&new).map_err(|e| e.to_string())?;
    for i in 0..MESSAGES {
        let msg = to_manager(format!("bulk {i}"));
        std::fs::write(new.join(format!("{}.json", msg.id)), msg.to_bytes()).map_err(|e| e.to_string())?;
    }
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    Ok(())
}

/// The wall time of `lemming --org ORG [--node NODE] step`, in ms.
fn step(org: &Path, node: Option<&str>) -> Result<f64, String> {
    let mut cmd = Command::new(lemming_bin()?);
    cmd.arg("--org").arg(org);
    if let Some(n) = node {
        cmd.args(["--node", n]);
    }
    Ok(run_timed(cmd.args(["step", "--json"]))?.wall_ms)
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// Runs both cases; false when the latency misses its aim.
pub fn run(base: &Path) -> Result<bool, String> {
    println!();
    let Some(bin) = nats_server() else {
        println!("cluster: skipped: nats-server is not installed (scripts/setup-llm-peers.sh --only nats)");
        return Ok(true);
    };
    println!("| across nodes (nats-server, loopback) | across nodes | one machine | aim |");
    println!("|---|---:|---:|---:|");
    let tmp = tempfile::tempdir_in(base).map_err(|e| e.to_string())?;
    let (_nats, url) = start_nats(&bin, tmp.path())?;

    // Latency: two daemons, and one on one machine, in the same run.
    let (a, b) = (tmp.path().join("lat-a"), tmp.path().join("lat-b"));
    two_nodes(&a, &b, &url)?;
    let one = tmp.path().join("lat-one");
    init(&one)?;
    let (p50, p99, max) = {
        let _da = start_node(&a, 60.0, Some("a"))?;
        let _db = start_node(&b, 60.0, Some("b"))?;
        latency_of(&a, SENDS)?
    };
    let (p50_1, p99_1, max_1) = {
        let _d = crate::daemon::start(&one, 60.0)?;
        latency_of(&one, SENDS)?
    };
    println!("| send-to-reply latency, {SENDS} sends, p50 | {p50:.1} ms | {p50_1:.1} ms | < 30 ms |");
    println!("| send-to-reply latency, {SENDS} sends, p99 | {p99:.1} ms | {p99_1:.1} ms | < 100 ms |");
    println!("| send-to-reply latency, {SENDS} sends, max | {max:.1} ms | {max_1:.1} ms | |");

    // Throughput: the org's own stream, a fresh pair of folders (the names differ).
    let (a, b) = (tmp.path().join("bulk-a"), tmp.path().join("bulk-b"));
    two_nodes(&a, &b, &url)?;
    let toml = a.join("org/org.toml");
    let text = std::fs::read_to_string(&toml).map_err(|e| e.to_string())?;
    for org in [&a, &b] {
        std::fs::write(org.join("org/org.toml"), text.replace("name = \"bench\"", "name = \"bulk\""))
            .map_err(|e| e.to_string())?;
    }
    let one = tmp.path().join("bulk-one");
    init(&one)?;
    fill_outbox(&a)?;
    fill_outbox(&one)?;
    let publish = step(&a, Some("a"))?;
    let deliver = step(&b, Some("b"))?;
    let local = step(&one, None)?;
    let got = count(&b.join("agents/manager/inbox/cur")) + count(&b.join("agents/manager/inbox/new"));
    if got != MESSAGES {
        return Err(format!("node b's manager holds {got} of the {MESSAGES} messages after one step"));
    }
    let across = publish + deliver;
    let per = |t: f64| t * 1000.0 / MESSAGES as f64;
    println!(
        "| {MESSAGES} messages: publish on node a + deliver on node b, one `step` each | {publish:.0} + {deliver:.0} = {across:.0} ms | {local:.0} ms | |"
    );
    println!("| per message | {:.1} µs | {:.1} µs | |", per(across), per(local));
    println!(
        "| messages per second | {:.0} | {:.0} | |",
        MESSAGES as f64 * 1000.0 / across,
        MESSAGES as f64 * 1000.0 / local
    );
    Ok(p50 < 30.0 && p99 < 100.0)
}
