//! The record's benchmark: `lemming thread` of a 1,000-message conversation in
//! an org of 10 agents that holds 9,000 other messages, timed as a whole
//! process (start, load, read, print) against the real `lemming` binary.
//!
//! Mail is laid out as routing leaves it: each message in its sender's
//! `outbox/sent/` and hard-linked into its recipient's inbox, most of it read,
//! some archived and some unread.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use chrono::{Duration, Utc};
use lemming_engine::message::{Kind, Message, Priority, To};

use crate::daemon::lemming_bin;
use crate::synth::name;

/// Agents in the org.
const AGENTS: usize = 10;
/// Messages of the conversation asked for.
const THREAD: usize = 1_000;
/// Other messages, in conversations of [`OTHER_LEN`].
const OTHER: usize = 9_000;
const OTHER_LEN: usize = 10;

/// Writes the org; returns the id of the conversation's first message.
fn generate(dir: &Path) -> std::io::Result<String> {
    fs::create_dir_all(dir.join("org"))?;
    fs::write(dir.join("org/org.toml"), "archive_after_turns = 5\n")?;
    fs::write(dir.join("org/models.toml"), "[providers.m]\nkind = \"mock\"\n[models.default]\nprovider = \"m\"\n")?;
    for i in 0..AGENTS {
        let adir = dir.join("agents").join(name(i));
        for sub in ["inbox/new", "inbox/cur", "inbox/archive", "inbox/tmp", "outbox/new", "outbox/sent", "outbox/tmp"] {
            fs::create_dir_all(adir.join(sub))?;
        }
        fs::write(
            adir.join("resume.toml"),
            format!(
                "name = \"{}\"\ntitle = \"Synthetic\"\nmodel = \"default\"\ninstructions = \"Talk.\"\n\
                 [permissions]\nsend_to = [\"*\"]\nread_from = [\"*\"]\n[budget]\ncredits = 10.0\n",
                name(i)
            ),
        )?;
    }
    let start = Utc::now() - Duration::days(1);
    let body = "Here is where the work stands, and what I need from you next: the figures for the \
                second quarter, the list of open questions, and a date for the review. "
        .repeat(2);
    // The conversation and the other mail interleave in time, as in a live org.
    let stamp = lemming_engine::message::id_stamp(start);
    let id_of = |conv: usize, pos: usize| format!("{stamp}-c{conv:04}-{pos:04}");
    let root = id_of(0, 0);
    for n in 0..(THREAD + OTHER) {
        // Every tenth message is the conversation's; the others go in turn to
        // conversations of OTHER_LEN.
        let (conv, pos) = if n % 10 == 0 {
            (0, n / 10)
        } else {
            let k = n - n / 10 - 1;
            (1 + k / OTHER_LEN, k % OTHER_LEN)
        };
        let id = id_of(conv, pos);
        // Replies: mostly to the message before, now and then to an older one (branches).
        let reply_to = match pos {
            0 => None,
            p if p % 4 == 0 => Some(id_of(conv, p / 2)),
            p => Some(id_of(conv, p - 1)),
        };
        let (from, to) = (name((n + conv) % AGENTS), name((n + conv + 1 + pos % 3) % AGENTS));
        let m = Message {
            id: id.clone(),
            from: from.clone(),
            to: To(vec![to.clone()]),
            subject: Some(format!("Conversation {conv}")),
            body: format!("{body}({pos})"),
            priority: Priority::Normal,
            reply_to,
            thread: id_of(conv, 0),
            created_at: start + Duration::milliseconds(n as i64),
            turn: (n / 100) as u64,
            ttl_turns: None,
            kind: Kind::Message,
            ack_required: false,
        };
        let file = format!("{id}.json");
        let sent = dir.join("agents").join(&from).join("outbox/sent").join(&file);
        fs::write(&sent, m.to_bytes())?;
        let folder = match n % 20 {
            0 => "inbox/new",
            1..=9 => "inbox/archive",
            _ => "inbox/cur",
        };
        fs::hard_link(&sent, dir.join("agents").join(&to).join(folder).join(&file))?;
    }
    Ok(root)
}

/// p50 and slowest of the whole `lemming thread` process, and p50 of its CPU
/// time (user and system), in ms, over `runs` runs (after one warm-up that
/// also checks the output).
fn time_thread(dir: &Path, root: &str, runs: usize) -> Result<(f64, f64, f64), String> {
    let bin = lemming_bin()?;
    let out = Command::new(&bin)
        .args(["--org"])
        .arg(dir)
        .args(["--json", "thread", root])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("lemming thread failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let n = v["messages"].as_array().map_or(0, Vec::len);
    if n != THREAD {
        return Err(format!("lemming thread showed {n} messages, not {THREAD}"));
    }
    let mut ms = Vec::new();
    let mut cpu = Vec::new();
    for _ in 0..runs {
        let before = children_cpu_ms();
        let t = Instant::now();
        let status = Command::new(&bin)
            .args(["--org"])
            .arg(dir)
            .args(["thread", root])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| e.to_string())?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        cpu.push(children_cpu_ms() - before);
        if !status.success() {
            return Err("lemming thread failed".into());
        }
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    cpu.sort_by(|a, b| a.total_cmp(b));
    Ok((ms[ms.len() / 2], ms[ms.len() - 1], cpu[cpu.len() / 2]))
}

/// The CPU time (user and system) of this process's waited-for children so far, in ms.
fn children_cpu_ms() -> f64 {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1000.0 + t.tv_usec as f64 / 1000.0;
    ms(u.ru_utime) + ms(u.ru_stime)
}

/// Runs the table; `true` when the aim is met.
pub fn run(base: &Path, runs: usize) -> Result<bool, String> {
    let tmp = tempfile::tempdir_in(base).map_err(|e| e.to_string())?;
    let root = generate(tmp.path()).map_err(|e| e.to_string())?;
    let (p50, max, cpu) = time_thread(tmp.path(), &root, runs.max(11))?;
    println!();
    println!("| record | figure | aim |");
    println!("|---|---:|---:|");
    println!(
        "| `lemming thread`, {THREAD}-message conversation, {AGENTS} agents, {OTHER} other messages, p50 (whole process) | {p50:.1} ms | < 100 ms |"
    );
    println!("| the same, slowest of {} runs | {max:.1} ms | |", runs.max(11));
    println!("| the same, CPU time (user + system), p50 | {cpu:.1} ms | |");
    Ok(p50 < 100.0)
}
