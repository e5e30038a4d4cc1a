//! The search table: `lemming search` over 100,000 messages (the real
//! binary, warm index, process start included), how long a rebuild of that
//! index takes, and what keeping the index up to date adds to a turn of 100
//! agents x 50 unread, against the same turn in an org without an index
//! (the update then finds none and returns). The two turns alternate within
//! one run, so they meet the same machine.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use chrono::{Duration, Utc};
use lemming_engine::message::{self, Kind, Message, Priority, To};
use lemming_engine::org::Layout;

use crate::synth::{self, Calls, Shape, Spec};

/// Messages in the searched org.
const MESSAGES: usize = 100_000;
/// Agents they are spread over (each holds MESSAGES / AGENTS in its read mail).
const AGENTS: usize = 100;
/// Searches timed per query.
const SEARCHES: usize = 30;

/// Runs the table; returns whether every figure is within its aim.
pub fn run(base: &Path, runs: usize) -> Result<bool, String> {
    println!();
    println!("| search | figure | aim |");
    println!("|---|---:|---:|");
    let mut all_ok = true;
    let tmp = tempfile::tempdir_in(base).map_err(|e| e.to_string())?;
    let dir = tmp.path().join("org");
    let spec = Spec {
        agents: AGENTS,
        unread: 0,
        shape: Shape::Ring(4),
        latency_ms: 0,
        max_parallel: 8,
        calls: Calls::None,
        sandbox: None,
    };
    synth::generate(&dir, &spec).map_err(|e| e.to_string())?;
    let df = fill(&dir).map_err(|e| e.to_string())?;
    let t = Instant::now();
    lemming(&dir, &["reindex"])?;
    let rebuild = t.elapsed().as_secs_f64();
    println!("| `lemming reindex` of {MESSAGES} messages | {rebuild:.1} s | |");
    for (what, query, aim) in [
        ("one rare word (1 hit)".to_string(), "zeppelin", 50.0),
        (format!("one word in {} messages, 20 shown", df[0]), "w100", 50.0),
        (format!("two words, both in {} messages, 20 shown", df[2]), "w10 w100", 50.0),
        (format!("one common word in {} messages, 20 shown", df[1]), "w10", 50.0),
    ] {
        // Warm: the index is open in the page cache.
        let hits = lemming(&dir, &["--json", "search", query])?;
        if !hits.contains("\"id\"") {
            return Err(format!("search {query:?} found nothing: {hits}"));
        }
        let mut ms = Vec::new();
        for _ in 0..SEARCHES {
            let t = Instant::now();
            lemming(&dir, &["--json", "search", query])?;
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let p50 = crate::median(ms);
        let ok = p50 < aim;
        all_ok &= ok;
        let verdict = format!("{} {aim:.0} ms", if ok { "ok <" } else { "OVER" });
        println!("| `lemming search`, {MESSAGES} messages, {what}, p50 of {SEARCHES} | {p50:.1} ms | {verdict} |");
    }
    drop(tmp);

    let spec = Spec { agents: 100, unread: 50, ..spec };
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        without.push(warm_step(base, &spec, false)?);
        with.push(warm_step(base, &spec, true)?);
    }
    let (w, wo) = (crate::median(with), crate::median(without));
    let ok = w / wo < 1.2;
    all_ok &= ok;
    println!("| 100 agents x 50 unread (ring:4), step, warm, median of {runs}: no index | {wo:.1} ms | |");
    println!("| the same, the index updated after the commit | {w:.1} ms | |");
    println!("| ratio | {:.2}x | {} 1.2x |", w / wo, if ok { "ok <" } else { "OVER" });
    Ok(all_ok)
}

/// The warm step of a fresh synthetic org; with `index`, the org has an
/// index (built before the cold step), which each turn then updates.
fn warm_step(base: &Path, spec: &Spec, index: bool) -> Result<f64, String> {
    let tmp = tempfile::tempdir_in(base).map_err(|e| e.to_string())?;
    let dir = tmp.path().join("org");
    synth::generate(&dir, spec).map_err(|e| e.to_string())?;
    if index {
        lemming_engine::index::rebuild(&Layout::new(&dir), &mut |_| {}).map_err(|e| e.to_string())?;
    }
    let (_, warm, _) = crate::child("step", &dir, spec)?;
    let indexed = Layout::new(&dir).index_dir().join("current").is_file();
    if indexed != index {
        return Err(format!("the org {} an index after its turns", if indexed { "has" } else { "lacks" }));
    }
    Ok(warm)
}

/// Runs the real binary on the org; its stdout.
fn lemming(dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(crate::daemon::lemming_bin()?)
        .arg("--org")
        .arg(dir)
        .args(args)
        .env("LEMMING_LOG", "warn")
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("lemming {args:?} failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Writes MESSAGES messages into the agents' read mail: bodies of 30 words
/// drawn from a vocabulary of 5,000 (`w0`…`w4999`) with a skew (the cube of
/// a uniform number), so that low words are common and high ones rare, and
/// one message that says `zeppelin`. Returns how many messages hold `w100`,
/// `w10`, and both.
fn fill(dir: &Path) -> std::io::Result<[usize; 3]> {
    let mut df = [0usize; 3];
    let base = Utc::now() - Duration::days(1);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..MESSAGES {
        let agent = synth::name(i % AGENTS);
        let from = synth::name((i + 1) % AGENTS);
        let at = base + Duration::milliseconds(i as i64);
        let id = format!("{}-{from}-s{i:06}", message::id_stamp(at));
        let mut body = String::new();
        let mut has = [false; 2];
        for _ in 0..30 {
            let r = (next() % 1_000_000) as f64 / 1_000_000.0;
            let w = (r * r * r * 5000.0) as u32;
            has[0] |= w == 100;
            has[1] |= w == 10;
            let _ = write!(body, "w{w} ");
        }
        df[0] += has[0] as usize;
        df[1] += has[1] as usize;
        df[2] += (has[0] && has[1]) as usize;
        if i == MESSAGES / 2 {
            body.push_str("and a zeppelin");
        }
        let msg = Message {
            id: id.clone(),
            from,
            to: To(vec![agent.clone()]),
            subject: None,
            body,
            priority: Priority::Normal,
            reply_to: None,
            thread: id,
            created_at: at,
            turn: 0,
            ttl_turns: None,
            kind: Kind::Message,
            ack_required: false,
        };
        let folder = dir.join("agents").join(&agent).join("inbox/cur");
        fs::write(folder.join(lemming_engine::mailbox::message_file(&msg.id)), msg.to_bytes())?;
    }
    Ok(df)
}
