//! Synthetic orgs: N agents, M unread messages each, a chosen chart shape.
//!
//! In each inbox one message is a new request and the rest are replies, so the
//! mock writes exactly one reply per agent.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use chrono::{Duration, Utc};
use lemming_engine::message::{self, Kind, Message, Priority, To};

/// Who may talk to whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Agent 0 talks with everyone; the others only with agent 0.
    Star,
    /// Each agent talks with its k nearest neighbours on each side of a ring.
    Ring(usize),
    /// Everyone talks with everyone.
    All,
}

impl Shape {
    /// Parses `star`, `ring:K` or `all`.
    pub fn parse(s: &str) -> Option<Shape> {
        match s {
            "star" => Some(Shape::Star),
            "all" => Some(Shape::All),
            _ => s.strip_prefix("ring:").and_then(|k| k.parse().ok()).map(Shape::Ring),
        }
    }

    fn neighbours(self, i: usize, n: usize) -> Vec<usize> {
        match self {
            Shape::Star if i == 0 => (1..n).collect(),
            Shape::Star => vec![0],
            Shape::Ring(k) => {
                let mut v: Vec<usize> =
                    (1..=k.min((n - 1) / 2).max(1)).flat_map(|d| [(i + d) % n, (i + n - d) % n]).collect();
                v.sort();
                v.dedup();
                v.retain(|j| *j != i);
                v
            }
            Shape::All => (0..n).filter(|j| *j != i).collect(),
        }
    }
}

impl std::fmt::Display for Shape {
    /// The name `parse` reads back.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shape::Star => f.write_str("star"),
            Shape::All => f.write_str("all"),
            Shape::Ring(k) => write!(f, "ring:{k}"),
        }
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Agents.
    pub agents: usize,
    /// Unread messages per agent.
    pub unread: usize,
    /// Chart shape.
    pub shape: Shape,
    /// Mock latency per call, in ms.
    pub latency_ms: u64,
    /// `max_parallel` in org.toml.
    pub max_parallel: usize,
}

/// The name of agent `i`.
pub fn name(i: usize) -> String {
    format!("a{i:04}")
}

/// Writes the org into `dir` (which must be empty or missing).
pub fn generate(dir: &Path, spec: &Spec) -> std::io::Result<()> {
    let n = spec.agents;
    fs::create_dir_all(dir.join("org"))?;
    fs::write(
        dir.join("org/org.toml"),
        format!("max_parallel = {}\nmax_mail_per_prompt = {}\n", spec.max_parallel, spec.unread.max(1)),
    )?;
    fs::write(
        dir.join("org/models.toml"),
        format!(
            "[providers.m]\nkind = \"mock\"\nlatency_ms = {}\n[models.default]\nprovider = \"m\"\ninput_price = 1.0\noutput_price = 2.0\n",
            spec.latency_ms
        ),
    )?;
    for i in 0..n {
        let me = name(i);
        let nb = spec.shape.neighbours(i, n);
        let list = match spec.shape {
            Shape::All => "\"*\"".to_string(),
            _ => nb.iter().map(|j| format!("\"{}\"", name(*j))).collect::<Vec<_>>().join(", "),
        };
        let adir = dir.join("agents").join(&me);
        for sub in ["inbox/new", "inbox/cur", "inbox/tmp", "outbox/new", "outbox/sent", "outbox/tmp"] {
            fs::create_dir_all(adir.join(sub))?;
        }
        fs::write(
            adir.join("resume.toml"),
            format!(
                "name = \"{me}\"\ntitle = \"Synthetic\"\nmodel = \"default\"\ninstructions = \"Answer requests.\"\n[permissions]\nsend_to = [{list}]\nread_from = [{list}]\n[budget]\ncredits = 1000.0\n"
            ),
        )?;
    }
    inject(dir, spec, 0)
}

/// Clears every inbox's unread mail and writes `spec.unread` fresh messages into
/// each (one new request, the rest replies), then syncs, as mail delivered by
/// earlier turns would be. `round` keeps ids unique across injections.
pub fn inject(dir: &Path, spec: &Spec, round: usize) -> std::io::Result<()> {
    let n = spec.agents;
    let base = Utc::now() - Duration::hours(1);
    for i in 0..n {
        let me = name(i);
        let nb = spec.shape.neighbours(i, n);
        let new_dir = dir.join("agents").join(&me).join("inbox/new");
        for e in fs::read_dir(&new_dir)?.flatten() {
            fs::remove_file(e.path())?;
        }
        for k in 0..spec.unread {
            let from = name(nb[k % nb.len()]);
            let at = base + Duration::milliseconds((k * n + i) as i64);
            let id = format!("{}-{from}-r{round}-{i:04}{k:04}", message::id_stamp(at));
            let mut body = String::new();
            let _ = write!(body, "Message {k} for {me}: please look at item {} and report back.", k * 7 + i);
            let msg = Message {
                id: id.clone(),
                from,
                to: To(vec![me.clone()]),
                subject: None,
                body,
                priority: Priority::Normal,
                reply_to: (k > 0).then(|| format!("earlier-{i}-{k}")),
                thread: id,
                created_at: at,
                turn: 0,
                ttl_turns: None,
                kind: Kind::Message,
            };
            fs::write(new_dir.join(lemming_engine::mailbox::message_file(&msg.id)), msg.to_bytes())?;
        }
    }
    lemming_engine::fsx::sync_fs(dir).map_err(|e| std::io::Error::other(e.to_string()))
}
