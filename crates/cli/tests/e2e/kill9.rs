//! The kill -9 harness (guarantees G3–G5): `lemming run` works through a
//! seeded workload while the harness sends mail, drops agents' messages into
//! outboxes and reads the human's inbox, and kills the daemon with SIGKILL at
//! random moments, restarting it each time. At the end a daemon runs until the
//! org is quiet and is stopped cleanly, and the disk is checked against a model
//! of the deterministic mock:
//!
//! - every accepted message reaches each recipient exactly once, and so does
//!   every reply and forward the mock makes (one ack per human message);
//! - no `tmp/` folder holds anything;
//! - the ledger charges each (turn, agent) at most once and adds up with status;
//! - no agent whose reply was journaled is asked again (the mock's call log,
//!   `LEMMING_MOCK_CALL_LOG`, against the journal's pids);
//! - `lemming fsck` finds no violation.
//!
//! `LEMMING_KILL9_POINTS` sets the number of kills (default 200), and
//! `LEMMING_KILL9_SEED` the seed; every failure message names the seed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use lemming_provider::mock::mentions;
use serde_json::{json, Value};

use crate::crash::{assert_invariants, Lcg};
use crate::fixture::{committed_turn, read_json, wait_until, TestOrg};

/// Independent orgs, each in its own thread, that share the kill points.
const ORGS: usize = 4;

/// The daemon's timer: short, so that turns are in flight most of the time.
const TURN_SECONDS: &str = "0.02";

/// The mock's latency: each working turn spends this long waiting for the model.
const MOCK_MS: u64 = 20;

/// What the human asks the manager; the @mentions make it forward.
const ASKS: [&str; 6] = [
    "plan the launch @planner",
    "hire a designer @hr",
    "build the page @coder_01 @planner",
    "tidy up @janitor @hr",
    "how are things?",
    "ship it @planner @hr @coder_01 @janitor",
];

/// Messages agents write themselves: (from, to, body). Planner may not write
/// to hr, and `nobody` is no agent: those two are refused and bounced.
const RAW: [(&str, &[&str], &str); 6] = [
    ("planner", &["coder_01"], "fix the login bug @manager"),
    ("coder_01", &["planner"], "the build is green @coder_01 @janitor"),
    ("janitor", &["manager"], "the disk is almost full @hr @planner"),
    ("planner", &["hr"], "psst @hr"),
    ("manager", &["planner", "hr"], "all hands @coder_01"),
    ("manager", &["planner", "nobody"], "who is nobody? @coder_01"),
];

/// A message the workload started: its thread holds everything that follows from it.
struct Root {
    id: String,
    from: String,
    to: Vec<String>,
    body: String,
}

/// What one org's run did, for the summary line.
#[derive(Debug, Default)]
struct Stats {
    kills: usize,
    /// Kills after a model call of a turn that was not committed.
    after_a_call: usize,
    /// Kills after which more turns were committed than when the daemon started.
    progressed: usize,
    sends: usize,
    raws: usize,
    reads: usize,
    turns: u64,
    calls: usize,
    asked_again_unjournaled: usize,
    recovered_turns: usize,
    deliveries: usize,
}

fn env_u64(key: &str) -> Option<u64> {
    std::env::var(key).ok().map(|v| v.trim().parse().unwrap_or_else(|e| panic!("{key}={v:?}: {e}")))
}

#[test]
fn kill_9_at_random_moments_loses_duplicates_and_repeats_nothing() {
    let seed = env_u64("LEMMING_KILL9_SEED")
        .unwrap_or_else(|| SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as u64);
    let points = env_u64("LEMMING_KILL9_POINTS").unwrap_or(200) as usize;
    eprintln!(
        "kill9: seed {seed}, {points} kill points over {ORGS} orgs \
         (repeat with LEMMING_KILL9_SEED={seed} LEMMING_KILL9_POINTS={points})"
    );
    let start = Instant::now();
    let stats: Vec<Stats> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..ORGS)
            .map(|i| {
                let kills = points / ORGS + usize::from(i < points % ORGS);
                s.spawn(move || one_org(seed, i, kills))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| panic!("kill9 with seed {seed} failed (see the panic above)")))
            .collect()
    });
    let took = start.elapsed();
    for (i, s) in stats.iter().enumerate() {
        eprintln!("kill9: seed {seed}, org {i}: {s:?}");
    }
    let kills: usize = stats.iter().map(|s| s.kills).sum();
    let after_a_call: usize = stats.iter().map(|s| s.after_a_call).sum();
    eprintln!(
        "kill9: seed {seed}: {kills} kills ({after_a_call} in a turn after its model call, before its commit) in {took:?}"
    );
    assert_eq!(kills, points, "seed {seed}: not every kill point was a kill");
    assert!(
        points < 20 || after_a_call * 10 >= points,
        "seed {seed}: only {after_a_call} of {points} kills came between a model call and the commit; \
         the harness proves too little"
    );
}

/// The workload's state: what was sent, for the model.
struct Workload {
    roots: Vec<Root>,
    /// The ids `lemming send` printed.
    accepted: Vec<String>,
}

impl Workload {
    /// The human asks the manager something (with `lemming send`, beside the daemon).
    fn send(&mut self, org: &TestOrg, rng: &mut Lcg, ctx: &str, stats: &mut Stats) {
        let n = self.roots.len();
        let body = format!("#{n} {}", ASKS[rng.below(ASKS.len() as u64) as usize]);
        let out = org.lemming(&["send", "manager", &body]);
        assert_eq!(out.code, Some(0), "{ctx}: send failed beside the daemon\n{out}");
        let id = out.stdout.trim().to_string();
        self.accepted.push(id.clone());
        self.roots.push(Root { id, from: "human".into(), to: vec!["manager".into()], body });
        stats.sends += 1;
    }

    /// An agent writes a message into its own outbox, as agents do.
    fn post(&mut self, org: &TestOrg, rng: &mut Lcg, stats: &mut Stats) {
        let (from, to, text) = RAW[rng.below(RAW.len() as u64) as usize];
        let n = self.roots.len();
        let id = format!("20260101T000000000Z-{from}-raw{n:05}");
        let body = format!("#{n} {text}");
        let to: Vec<String> = to.iter().map(|t| t.to_string()).collect();
        org.post_outbox(from, &id, raw_message(&id, from, &to, &body));
        self.roots.push(Root { id, from: from.into(), to, body });
        stats.raws += 1;
    }

    /// One random action: send, post, read the human's inbox, or nothing.
    fn act(&mut self, org: &TestOrg, rng: &mut Lcg, ctx: &str, stats: &mut Stats) {
        match rng.below(100) {
            0..=44 => self.send(org, rng, ctx, stats),
            45..=74 => self.post(org, rng, stats),
            75..=89 => {
                let out = org.lemming(&["inbox"]);
                assert_eq!(out.code, Some(0), "{ctx}: inbox failed beside the daemon\n{out}");
                stats.reads += 1;
            }
            _ => {}
        }
    }
}

/// Kills and restarts one org's daemon `kills` times, then checks it.
fn one_org(seed: u64, index: usize, kills: usize) -> Stats {
    let ctx = format!("kill9 seed {seed}, org {index}");
    let mut rng = Lcg(seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let org = TestOrg::new();
    // Keep every journal (the check reads them all), and enough credits for every turn.
    org.edit("org/org.toml", "journal_keep_turns = 20", "journal_keep_turns = 100000");
    for agent in org.agent_folders() {
        let rel = format!("agents/{agent}/resume.toml");
        if org.read(&rel).contains("credits = 100.0") {
            org.edit(&rel, "credits = 100.0", "credits = 1000000.0");
        }
    }
    org.mock_latency(MOCK_MS);
    org.lemming_ok(&["validate"]);
    let calls = org.tmp.path().join("calls.log");
    let mut env = vec![("LEMMING_MOCK_CALL_LOG", calls.as_os_str())];
    if index % 2 == 1 {
        // Every other org's turns move their read mail beside the effects, as large turns do.
        env.push(("LEMMING_APART_MIN", std::ffi::OsStr::new("1")));
    }

    let mut stats = Stats::default();
    let mut started: Vec<u32> = Vec::new();
    let mut work = Workload { roots: Vec::new(), accepted: Vec::new() };
    for k in 0..kills {
        let turn = committed_turn(&org.root);
        let mut d = org.spawn_run_env(&["--turn-seconds", TURN_SECONDS], &env);
        started.push(d.pid);
        let born = Instant::now();
        // A third of the kills come early (start-up, recovery of the last turn), a third at
        // a random later moment, and a third aimed into a working turn (see below).
        let mode = rng.below(3);
        let life = match mode {
            0 => rng.below(80),
            1 => 80 + rng.below(520),
            _ => rng.below(200),
        };
        let mut moments: Vec<u64> = (0..rng.below(3)).map(|_| rng.below(life + 1)).collect();
        moments.sort_unstable();
        for at in moments {
            sleep_until(born + Duration::from_millis(at));
            work.act(&org, &mut rng, &ctx, &mut stats);
        }
        sleep_until(born + Duration::from_millis(life));
        if mode == 2 {
            // New mail wakes the daemon after its debounce (50 ms), and that turn asks the
            // mock: kill it 0–9 ms after the mock answers (journal, effects, routing, commit).
            let seen = std::fs::metadata(&calls).map(|m| m.len()).unwrap_or(0);
            if rng.below(2) == 0 {
                work.send(&org, &mut rng, &ctx, &mut stats);
            } else {
                work.post(&org, &mut rng, &mut stats);
            }
            let pid = format!(" {}", d.pid);
            wait_until(Duration::from_millis(500), || {
                let text = std::fs::read(&calls).unwrap_or_default();
                String::from_utf8_lossy(&text[(seen as usize).min(text.len())..]).lines().any(|l| l.ends_with(&pid))
            });
            std::thread::sleep(Duration::from_millis(rng.below(10)));
        }
        assert!(d.is_running(), "{ctx}, kill {k}: the daemon exited by itself\n{d}");
        let status = d.kill9();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{ctx}, kill {k}: the daemon ended otherwise\n{d}");
        stats.kills += 1;
        let next = committed_turn(&org.root) + 1;
        if next > turn + 1 {
            stats.progressed += 1;
        }
        // Killed in a turn after the model answered, before the commit: the case G4 is about.
        let mark = format!("{next} ");
        let pid = format!(" {}", d.pid);
        let text = std::fs::read_to_string(&calls).unwrap_or_default();
        if text.lines().any(|l| l.starts_with(&mark) && l.ends_with(&pid)) {
            stats.after_a_call += 1;
        }
    }
    let Workload { roots, accepted } = work;

    // A clean end: a daemon runs until the org is quiet and is stopped.
    let mut d = org.spawn_run_env(&["--turn-seconds", TURN_SECONDS], &env);
    started.push(d.pid);
    d.wait_ready();
    assert!(wait_quiet(&org, Duration::from_secs(60)), "{ctx}: the org is not quiet after 60 s\n{d}");
    let out = org.lemming(&["stop"]);
    assert_eq!(out.code, Some(0), "{ctx}: stop failed\n{out}\n{d}");
    let status = d.wait_exit(Duration::from_secs(10)).unwrap_or_else(|| panic!("{ctx}: no exit after stop\n{d}"));
    assert_eq!(status.code(), Some(0), "{ctx}: the daemon did not exit 0 after stop\n{d}");
    assert!(!org.path("org/state/daemon.json").exists(), "{ctx}: daemon.json outlived a clean stop");
    assert_tmp_empty(&org, &ctx);
    // Nothing is left to do: a step (whose model calls are logged too) does nothing.
    let step = org
        .command(&["--json", "step"])
        .env("LEMMING_MOCK_CALL_LOG", &calls)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    started.push(step.id());
    let out = step.wait_with_output().unwrap();
    assert!(out.status.success(), "{ctx}: the last step failed: {}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = &report[0];
    let idle = ["ran", "replayed", "failed"].iter().all(|k| r[k].as_array().is_some_and(|a| a.is_empty()));
    assert!(idle && r["delivered"] == 0 && r["dead"] == 0, "{ctx}: work was left after the clean stop: {r:#}");

    assert_invariants(&org, &accepted, &ctx);
    stats.deliveries = assert_model(&org, &roots, &accepted, &ctx);
    check_calls(&org, &calls, &started, &ctx, &mut stats);
    stats.turns = org.turn();
    stats
}

fn sleep_until(t: Instant) {
    if let Some(d) = t.checked_duration_since(Instant::now()) {
        std::thread::sleep(d);
    }
}

/// A message file as an agent writes it, to one or more recipients.
fn raw_message(id: &str, from: &str, to: &[String], body: &str) -> Vec<u8> {
    let v = json!({
        "id": id, "from": from, "to": to, "subject": null, "body": body, "priority": "normal",
        "reply_to": null, "thread": id, "created_at": "2026-01-01T00:00:00.000Z", "turn": 0,
        "ttl_turns": null, "kind": "message",
    });
    serde_json::to_vec_pretty(&v).unwrap()
}

/// Whether every outbox is drained and no agent but the human has unread mail.
fn quiet(org: &TestOrg) -> bool {
    org.agent_folders().iter().all(|a| {
        org.files(&format!("agents/{a}/outbox/new")).is_empty()
            && (a == "human" || org.files(&format!("agents/{a}/inbox/new")).is_empty())
    })
}

/// Waits until the org has been quiet for 300 ms in a row.
fn wait_quiet(org: &TestOrg, timeout: Duration) -> bool {
    let mut since: Option<Instant> = None;
    wait_until(timeout, || {
        if !quiet(org) {
            since = None;
            return false;
        }
        since.get_or_insert_with(Instant::now).elapsed() >= Duration::from_millis(300)
    })
}

/// No `tmp/` folder holds a file: the agents' mailboxes and `org/state/tmp`.
#[track_caller]
fn assert_tmp_empty(org: &TestOrg, ctx: &str) {
    let mut dirs = vec!["org/state/tmp".to_string()];
    for a in org.agent_folders() {
        dirs.push(format!("agents/{a}/outbox/tmp"));
        dirs.push(format!("agents/{a}/inbox/tmp"));
    }
    for dir in dirs {
        let left = org.files(&dir);
        assert!(left.is_empty(), "{ctx}: {dir} still holds {left:?} after a clean stop");
    }
}

/// The org chart, read from every resume's `send_to` and `read_from` lines.
struct Chart {
    send_to: BTreeMap<String, Vec<String>>,
    read_from: BTreeMap<String, Vec<String>>,
}

impl Chart {
    fn read(org: &TestOrg) -> Chart {
        let list = |text: &str, key: &str| -> Vec<String> {
            let line = text.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("no {key} in {text}"));
            line.split('"').skip(1).step_by(2).map(String::from).collect()
        };
        let mut chart = Chart { send_to: BTreeMap::new(), read_from: BTreeMap::new() };
        for a in org.agent_folders() {
            let text = org.read(&format!("agents/{a}/resume.toml"));
            chart.send_to.insert(a.clone(), list(&text, "send_to ="));
            chart.read_from.insert(a, list(&text, "read_from ="));
        }
        chart
    }

    /// Whether a message from `from` reaches `to` (both sides of the chart allow it).
    fn allows(&self, from: &str, to: &str) -> bool {
        let has = |l: Option<&Vec<String>>, name: &str| l.is_some_and(|l| l.iter().any(|x| x == "*" || x == name));
        from != to && has(self.send_to.get(from), to) && has(self.read_from.get(to), from)
    }
}

/// One delivered message, as the model sees it (bounce bodies are the engine's to word).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Mail {
    to: String,
    from: String,
    kind: String,
    body: String,
    reply: bool,
}

/// What the mock does with a message, and what the chart lets through.
fn simulate(chart: &Chart, from: &str, to: &[String], body: &str, reply: bool, out: &mut Vec<Mail>) {
    let mut refused = false;
    for t in to {
        if !chart.allows(from, t) {
            refused = true;
            continue;
        }
        out.push(Mail { to: t.clone(), from: from.into(), kind: "message".into(), body: body.into(), reply });
        if reply || t == "human" {
            continue;
        }
        let ack: String = body.chars().take(200).collect();
        simulate(chart, t, &[from.to_string()], &format!("{t} received: {ack}"), true, out);
        let mut forwarded: Vec<&str> = Vec::new();
        for m in mentions(body) {
            if m != t && m != from && !forwarded.contains(&m) && chart.allows(t, m) {
                forwarded.push(m);
                simulate(chart, t, &[m.to_string()], body, false, out);
            }
        }
    }
    if refused {
        out.push(Mail {
            to: from.into(),
            from: "lemming".into(),
            kind: "bounce".into(),
            body: String::new(),
            reply: true,
        });
    }
}

/// Compares every inbox, thread by thread, with the model; returns the number of deliveries.
#[track_caller]
fn assert_model(org: &TestOrg, roots: &[Root], accepted: &[String], ctx: &str) -> usize {
    let chart = Chart::read(org);
    let mut actual: BTreeMap<String, Vec<Mail>> = BTreeMap::new();
    let mut acks: BTreeMap<String, usize> = BTreeMap::new();
    let mut total = 0;
    for agent in org.agent_folders() {
        for sub in ["new", "cur"] {
            for id in org.ids(&agent, "inbox", sub) {
                let m = read_json(&org.path(&format!("agents/{agent}/inbox/{sub}/{id}.json")));
                let kind = m["kind"].as_str().unwrap().to_string();
                let body = if kind == "bounce" { String::new() } else { m["body"].as_str().unwrap().to_string() };
                if agent == "human" && m["from"] == "manager" {
                    if let Some(to) = m["reply_to"].as_str() {
                        *acks.entry(to.to_string()).or_default() += 1;
                    }
                }
                let mail = Mail {
                    to: agent.clone(),
                    from: m["from"].as_str().unwrap().into(),
                    kind,
                    body,
                    reply: !m["reply_to"].is_null(),
                };
                actual.entry(m["thread"].as_str().unwrap().to_string()).or_default().push(mail);
                total += 1;
            }
        }
    }
    for id in accepted {
        let n = acks.get(id).copied().unwrap_or(0);
        assert_eq!(n, 1, "{ctx}: the human has {n} acks of {id} from the manager (expected exactly 1)");
    }
    for root in roots {
        let mut expected = Vec::new();
        simulate(&chart, &root.from, &root.to, &root.body, false, &mut expected);
        expected.sort();
        let mut got = actual.remove(&root.id).unwrap_or_default();
        got.sort();
        assert_eq!(
            got, expected,
            "{ctx}: thread {} ({} → {:?}: {:?}) differs from the model",
            root.id, root.from, root.to, root.body
        );
    }
    assert!(actual.is_empty(), "{ctx}: mail in threads the workload never started: {actual:#?}");
    total
}

/// G4 against the mock's call log: every journaled reply was asked for by the
/// process that journaled it, and by no process started after it.
#[track_caller]
fn check_calls(org: &TestOrg, calls: &Path, started: &[u32], ctx: &str, stats: &mut Stats) {
    let order: HashMap<u32, usize> = started.iter().enumerate().map(|(i, p)| (*p, i)).collect();
    assert_eq!(order.len(), started.len(), "{ctx}: a pid was reused among the processes: {started:?}");
    let text = std::fs::read_to_string(calls).unwrap_or_default();
    let mut asked: BTreeMap<(u64, String), Vec<usize>> = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [turn, agent, pid] = f[..] else { continue };
        let (Ok(turn), Ok(pid)) = (turn.parse::<u64>(), pid.parse::<u32>()) else { continue };
        let by = *order.get(&pid).unwrap_or_else(|| panic!("{ctx}: model call `{line}` from a process never started"));
        asked.entry((turn, agent.to_string())).or_default().push(by);
        stats.calls += 1;
    }
    assert!(stats.calls > 0, "{ctx}: the mock logged no call; the check would prove nothing");
    let mut journaled: BTreeSet<(u64, String)> = BTreeSet::new();
    for turn in 1..=org.turn() + 1 {
        let Ok(text) = std::fs::read_to_string(org.path(&format!("org/state/journal/{turn}/records.jsonl"))) else {
            continue;
        };
        let mut pids = BTreeSet::new();
        // A torn last line (a kill mid-append) was never durable: the engine skips it too.
        for r in text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()) {
            let (agent, pid) = (r["agent"].as_str().unwrap().to_string(), r["pid"].as_u64().unwrap() as u32);
            assert_eq!(r["turn"], turn, "{ctx}: journal of turn {turn} holds {r}");
            let key = (turn, agent.clone());
            assert!(journaled.insert(key.clone()), "{ctx}: {key:?} is journaled twice: it was asked again");
            let by = *order.get(&pid).unwrap_or_else(|| panic!("{ctx}: {key:?} journaled by unknown pid {pid}"));
            let callers = asked.get(&key).cloned().unwrap_or_default();
            let own = callers.iter().filter(|c| **c == by).count();
            assert_eq!(own, 1, "{ctx}: {key:?} journaled by process #{by} (pid {pid}), which asked {own} times");
            let after: Vec<usize> = callers.iter().copied().filter(|c| *c > by).collect();
            assert!(
                after.is_empty(),
                "{ctx}: {key:?} was journaled by process #{by} (pid {pid}) and asked again by #{after:?}"
            );
            pids.insert(pid);
        }
        if pids.len() > 1 {
            stats.recovered_turns += 1;
        }
    }
    stats.asked_again_unjournaled = asked.values().filter(|c| c.len() > 1).count();
}
