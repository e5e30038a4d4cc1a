//! Crash safety (guarantee G3–G5): a real `lemming step` is aborted at each
//! crash point (`LEMMING_CRASH_AT`) or killed with SIGKILL at random moments,
//! then plain steps run until the org is quiet. Afterwards every accepted
//! message is in each recipient's inbox exactly once, no (turn, agent) is
//! charged twice, and every inbox holds the same mail as an uninterrupted run.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use crate::fixture::{message_bytes, read_json, recipients, run, TestOrg};

/// What the human asks; the @mentions make the manager forward to several agents.
const WORKLOAD: [&str; 4] =
    ["plan the launch @planner", "hire a designer @hr", "build the page @coder_01 @planner", "tidy up @janitor @hr"];

/// A message the chart refuses (planner may not write to hr): a dead letter and a bounce.
const REFUSED: &str = "20260101T000000000Z-planner-refused";

/// Puts the workload into the outboxes; returns the ids `send` printed.
fn load(org: &TestOrg) -> Vec<String> {
    let ids = WORKLOAD.iter().map(|body| org.send("manager", body)).collect();
    org.drop_outbox("planner", &format!("{REFUSED}.json"), message_bytes(REFUSED, "planner", "hr", "psst @hr"));
    ids
}

/// Runs plain steps until a turn does nothing at all; returns how many ran.
fn settle(org: &TestOrg, context: &str) -> usize {
    for n in 1..=15 {
        let r = org.step();
        let empty = |k: &str| r[k].as_array().is_some_and(|a| a.is_empty());
        if empty("ran") && empty("replayed") && empty("failed") && r["delivered"] == 0 && r["dead"] == 0 {
            return n;
        }
    }
    panic!("{context}: the org is not quiet after 15 steps");
}

/// Every agent's mail (unread and read), as sorted `from [kind]: body` lines.
fn mail(org: &TestOrg) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for agent in org.agent_folders() {
        let mut lines = Vec::new();
        for sub in ["new", "cur"] {
            for id in org.ids(&agent, "inbox", sub) {
                let m = read_json(&org.path(&format!("agents/{agent}/inbox/{sub}/{id}.json")));
                lines.push(format!("{} [{}]: {}", m["from"].as_str().unwrap(), m["kind"].as_str().unwrap(), m["body"]));
            }
        }
        lines.sort();
        out.insert(agent, lines);
    }
    out
}

struct Reference {
    mail: BTreeMap<String, Vec<String>>,
    dead: BTreeSet<String>,
}

/// The same workload run without interruption, once per test binary.
fn reference() -> &'static Reference {
    static REF: OnceLock<Reference> = OnceLock::new();
    REF.get_or_init(|| {
        let org = TestOrg::new();
        let sent = load(&org);
        settle(&org, "reference run");
        assert_invariants(&org, &sent, "reference run");
        let r = Reference { mail: mail(&org), dead: org.dead().into_keys().collect() };
        let busy = r.mail.values().filter(|m| !m.is_empty()).count();
        assert!(busy >= 5, "the workload reaches too few agents: {:#?}", r.mail);
        r
    })
}

/// G3 and G5 on disk: each accepted message is in each recipient's inbox exactly
/// once, nothing else is there but bounces, outboxes are drained, and the ledger adds up;
/// and `lemming fsck` finds no violation either.
#[track_caller]
pub(crate) fn assert_invariants(org: &TestOrg, sent: &[String], context: &str) {
    let agents = org.agent_folders();
    let dead = org.dead();
    let mut copies: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut bounces = BTreeSet::new();
    for agent in &agents {
        for sub in ["new", "cur"] {
            for id in org.ids(agent, "inbox", sub) {
                let m = read_json(&org.path(&format!("agents/{agent}/inbox/{sub}/{id}.json")));
                assert_eq!(m["id"], id.as_str(), "{context}: {agent}/inbox/{sub}/{id}.json holds another id");
                if m["kind"] == "bounce" {
                    bounces.insert((agent.clone(), id.clone()));
                }
                *copies.entry((agent.clone(), id)).or_default() += 1;
            }
        }
    }
    let mut accepted = BTreeSet::new();
    for agent in &agents {
        let pending = org.files(&format!("agents/{agent}/outbox/new"));
        assert!(pending.is_empty(), "{context}: agents/{agent}/outbox/new still holds {pending:?}");
        for id in org.ids(agent, "outbox", "sent") {
            let m = read_json(&org.path(&format!("agents/{agent}/outbox/sent/{id}.json")));
            let refused: Vec<String> = dead.get(&id).map(recipients).unwrap_or_default();
            for to in recipients(&m).into_iter().filter(|to| !refused.contains(to)) {
                accepted.insert((to, id.clone()));
            }
        }
    }
    for (key, n) in &copies {
        assert_eq!(*n, 1, "{context}: {key:?} is in the inbox {n} times (new and cur)");
        assert!(
            accepted.contains(key) || bounces.contains(key),
            "{context}: {key:?} is in an inbox but was never sent"
        );
    }
    for key in &accepted {
        assert!(copies.contains_key(key), "{context}: accepted message {key:?} was never delivered");
    }
    let human_sent = org.ids("human", "outbox", "sent");
    for id in sent {
        assert!(human_sent.contains(id), "{context}: the human's {id} was never routed");
        assert!(copies.contains_key(&("manager".to_string(), id.clone())), "{context}: the human's {id} was lost");
    }
    for (id, why) in &dead {
        if why["reason"] != "poison" {
            let bounce = (why["mailbox"].as_str().unwrap().to_string(), format!("{id}-bounce"));
            assert!(bounces.contains(&bounce), "{context}: dead letter {id} was not bounced to its sender");
        }
    }
    org.assert_ledger_balances();
    crate::turn::assert_events_once(org, context);
    crate::fsck::assert_no_violations(org, context);
}

/// Aborts a step at `point` (twice in a row: recovery itself can crash), then
/// recovers with plain steps and compares the result with the reference run.
fn crash_at(point: &str) {
    crash_in_parts_at(point, None, Cut::Abort);
}

/// What a crash leaves on disk.
#[derive(Clone, Copy, PartialEq)]
enum Cut {
    /// Everything the process did: an abort keeps the kernel's unsynced work.
    Abort,
    /// A power cut that loses the renames of the replies' messages into the
    /// outboxes, not yet synced, and keeps the read mail's moves to `cur/`,
    /// which share their sync (`Turn::unsynced`).
    LosingEffects,
}

/// [`crash_at`], with the crashing steps applying their replies in parts of
/// `parts` (`LEMMING_APPLY_EVERY`), and the recovery in one part.
fn crash_in_parts_at(point: &str, parts: Option<usize>, cut: Cut) {
    crash_with(point, parts, cut, false);
}

/// [`crash_in_parts_at`]; with `moves_apart`, the crashing steps move every
/// part's read mail on a thread of its own, beside the effects
/// (`LEMMING_APART_MIN`), as a large turn does.
fn crash_with(point: &str, parts: Option<usize>, cut: Cut, moves_apart: bool) {
    let reference = reference();
    let org = TestOrg::new();
    let sent = load(&org);
    for attempt in 0..2 {
        let mut step = org.command(&["step", "-n", "8"]);
        step.env("LEMMING_CRASH_AT", point);
        if let Some(n) = parts {
            step.env("LEMMING_APPLY_EVERY", n.to_string());
        }
        if moves_apart {
            step.env("LEMMING_APART_MIN", "1");
        }
        let out = run(&mut step);
        if attempt == 1 && out.code == Some(0) {
            break; // the work ran out before the point was reached again
        }
        assert_eq!(out.signal, Some(libc::SIGABRT), "LEMMING_CRASH_AT={point} did not abort the step\n{out}");
        out.stderr_has(&["crash point"]);
        if cut == Cut::LosingEffects {
            let lost = lose_outbox_renames(&org);
            assert!(attempt == 1 || lost > 0, "{point}: no reply was in an outbox to lose");
        }
        // People read their mail while nothing runs: read mail must not come back.
        org.lemming_ok(&["inbox"]);
    }
    settle(&org, point);
    assert_invariants(&org, &sent, point);
    assert_eq!(mail(&org), reference.mail, "{point}: the mail differs from an uninterrupted run");
    assert_eq!(org.dead().into_keys().collect::<BTreeSet<_>>(), reference.dead, "{point}: other dead letters");
}

/// Removes every message waiting in an outbox, as a power cut that lost
/// their renames into `outbox/new/` would (the files stay in `tmp/` under
/// their temporary names, which the next turn sweeps); returns how many.
/// Right after a turn's first routing, only the turn's replies are there.
fn lose_outbox_renames(org: &TestOrg) -> usize {
    let mut lost = 0;
    for agent in org.agent_folders() {
        for name in org.files(&format!("agents/{agent}/outbox/new")) {
            std::fs::remove_file(org.path(&format!("agents/{agent}/outbox/new/{name}"))).unwrap();
            lost += 1;
        }
    }
    lost
}

/// The replies' messages are rewritten from the journal when the read mail
/// moved and they were lost (G4): once the mail is in `cur/`, only the
/// journal holds them.
#[test]
fn a_power_cut_that_keeps_the_read_mail_moves_and_loses_the_replies_loses_nothing() {
    crash_in_parts_at("consumed", None, Cut::LosingEffects);
}

/// The same in a later part of a turn in parts, where the next part's sync
/// makes the earlier part's replies durable.
#[test]
fn a_power_cut_in_a_later_part_that_loses_the_replies_loses_nothing() {
    crash_in_parts_at("consumed:3", Some(1), Cut::LosingEffects);
}

macro_rules! crash_tests {
    ($($name:ident => $point:literal,)*) => {$(
        #[test]
        fn $name() {
            crash_at($point);
        }
    )*};
}

crash_tests! {
    crash_at_batch_renamed_1 => "batch_renamed:1",
    crash_at_batch_renamed_2 => "batch_renamed:2",
    crash_at_batch_renamed_3 => "batch_renamed:3",
    crash_at_batch_renamed_in_a_later_turn => "batch_renamed:7",
    crash_at_delivered => "delivered",
    crash_at_delivered_on_the_second_pass => "delivered:2",
    crash_at_routed => "routed",
    crash_at_journaled => "journaled",
    crash_at_journaled_in_turn_2 => "journaled:2",
    crash_at_effects => "effects",
    crash_at_effects_in_turn_2 => "effects:2",
    crash_at_consumed => "consumed",
    crash_at_routed_again => "routed_again",
    crash_at_routed_again_in_turn_3 => "routed_again:3",
    crash_at_committed => "committed",
    crash_at_committed_in_turn_2 => "committed:2",
}

/// A turn that applies its replies in parts ends as the same turn in one
/// part: the same mail everywhere, the same dead letters, each run charged
/// once, in the same number of turns.
#[test]
fn turns_in_parts_of_one_agent_end_as_turns_in_one_part() {
    let reference = reference();
    let org = TestOrg::new();
    let sent = load(&org);
    let mut several = false;
    for _ in 0..15 {
        let out = run(org.command(&["--json", "step"]).env("LEMMING_APPLY_EVERY", "1"));
        assert_eq!(out.code, Some(0), "{out}");
        let r = out.json()[0].clone();
        let ran = r["ran"].as_array().map_or(0, Vec::len);
        several |= ran > 1;
        if ran == 0 && r["delivered"] == 0 && r["dead"] == 0 {
            break;
        }
    }
    assert!(several, "no turn ran more than one agent: no turn had two parts");
    assert_invariants(&org, &sent, "in parts");
    assert_eq!(mail(&org), reference.mail, "the mail differs from turns in one part");
    assert_eq!(org.dead().into_keys().collect::<BTreeSet<_>>(), reference.dead);
}

macro_rules! crash_in_parts_tests {
    ($($name:ident => $point:literal,)*) => {$(
        #[test]
        fn $name() {
            crash_in_parts_at($point, Some(1), Cut::Abort);
        }
    )*};
}

// A turn in parts of one agent (and routing committed after each sender): the
// points of a later part than the first (the manager alone runs in turn 1;
// several agents run, and write, in the turns after).
crash_in_parts_tests! {
    crash_in_parts_at_journaled_3 => "journaled:3",
    crash_in_parts_at_effects_3 => "effects:3",
    crash_in_parts_at_effects_4 => "effects:4",
    crash_in_parts_at_consumed_3 => "consumed:3",
    crash_in_parts_at_batch_renamed_9 => "batch_renamed:9",
    crash_in_parts_at_routed_again_2 => "routed_again:2",
    crash_in_parts_at_delivered_3 => "delivered:3",
    crash_in_parts_at_delivered_6 => "delivered:6",
}

macro_rules! crash_with_moves_apart_tests {
    ($($name:ident => $point:literal,)*) => {$(
        #[test]
        fn $name() {
            crash_with($point, Some(2), Cut::Abort, true);
        }
    )*};
}

// The read mail moved while the effects are applied: a crash at "effects"
// finds the moves anywhere from none to all.
crash_with_moves_apart_tests! {
    crash_with_moves_apart_at_effects => "effects",
    crash_with_moves_apart_at_effects_3 => "effects:3",
    crash_with_moves_apart_at_consumed_2 => "consumed:2",
}

/// A power cut that keeps the moves made beside the effects and loses the
/// effects loses nothing either.
#[test]
fn a_power_cut_that_keeps_moves_made_beside_the_effects_and_loses_them_loses_nothing() {
    crash_with("consumed", None, Cut::LosingEffects, true);
}

/// A small seeded generator (Knuth's MMIX LCG), so a failing run can be repeated.
pub(crate) struct Lcg(pub(crate) u64);

impl Lcg {
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn kill_at_random_moments_then_recover() {
    let seed = std::env::var("LEMMING_E2E_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as u64);
    eprintln!("random kills with seed {seed} (repeat with LEMMING_E2E_SEED={seed})");
    let rounds: u64 = std::env::var("LEMMING_E2E_KILL_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(8);
    let mut rng = Lcg(seed);
    let reference = reference();
    let mut kills = 0;
    for o in 0..3 {
        let org = TestOrg::new();
        org.write(
            "org/models.toml",
            org.read("org/models.toml").replace("provider = \"mock\"", "provider = \"slow\"")
                + "\n[providers.slow]\nkind = \"mock\"\nlatency_ms = 30\n",
        );
        org.lemming_ok(&["validate"]);
        let sent = load(&org);
        for round in 0..rounds {
            let context = format!("seed {seed}, org {o}, round {round}");
            let delay = rng.below(151);
            let mut step = org.command(&["step", "-n", "2"]);
            if o == 1 {
                // The second org's turns move their read mail beside the effects.
                step.env("LEMMING_APART_MIN", "1");
            }
            if o == 2 {
                // The last org's turns apply their replies one at a time.
                step.env("LEMMING_APPLY_EVERY", "1");
            }
            let mut child = step
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("{context}: cannot start step: {e}"));
            std::thread::sleep(Duration::from_millis(delay));
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap();
                kills += 1;
            }
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success() || out.status.signal() == Some(libc::SIGKILL),
                "{context}: step ended with {:?}\n--- stderr\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            if rng.below(2) == 0 {
                org.lemming_ok(&["inbox"]);
            }
        }
        let context = format!("seed {seed}, org {o}");
        settle(&org, &context);
        assert_invariants(&org, &sent, &context);
        assert_eq!(mail(&org), reference.mail, "{context}: the mail differs from an uninterrupted run");
        assert_eq!(org.dead().into_keys().collect::<BTreeSet<_>>(), reference.dead, "{context}");
    }
    assert!(kills > 0, "seed {seed}: no step was killed; the test proved nothing");
}

/// G4: a turn repeated after a crash reuses the journaled reply and does not
/// ask the model again. The script changes between the crash and the recovery,
/// so a second call would show.
#[test]
fn a_repeated_turn_reuses_the_journaled_reply_instead_of_asking_again() {
    let script = |body: &str| {
        format!(
            "[[reply]]\nagent = \"manager\"\ntext = '{{\"messages\":[{{\"to\":\"human\",\"body\":\"{body}\"}}]}}'\n"
        )
    };
    for (point, expected) in [
        ("routed", "second answer"),
        ("journaled", "first answer"),
        ("effects", "first answer"),
        ("consumed", "first answer"),
        ("routed_again", "first answer"),
    ] {
        let org = TestOrg::new();
        org.script("manager", &script("first answer"));
        let id = org.send("manager", "question");
        let out = run(org.command(&["step"]).env("LEMMING_CRASH_AT", point));
        assert_eq!(out.signal, Some(libc::SIGABRT), "{point}: no crash\n{out}");
        org.write("org/script.toml", script("second answer"));

        let report = org.step();
        let replayed = report["replayed"] == serde_json::json!(["manager"]);
        assert_eq!(replayed, expected == "first answer", "{point}: {report:#}");
        let bodies: Vec<_> = org.inbox_json("human").iter().map(|m| m["body"].as_str().unwrap().to_string()).collect();
        assert_eq!(bodies, [expected], "{point}: the human got other answers");
        assert_eq!(org.ids("manager", "inbox", "cur"), [id], "{point}");
        let charges = org.ledger().iter().filter(|e| e["kind"] == "charge" && e["agent"] == "manager").count();
        assert_eq!(charges, 1, "{point}: the manager was charged {charges} times");
        org.assert_ledger_balances();
        crate::fsck::assert_no_violations(&org, point);
    }
}
