//! One turn, as a sequence of phases on the turn's state (`Turn`), each in
//! its own file under `turn/`:
//!
//! 1. **prepare**: the turn number, the last turn's events if a crash kept
//!    them from the events file, every agent's folders, stale tmp files;
//! 2. **route** every outbox;
//! 3. **pick** the agents that are due and can pay, with their prompts (`pick.rs`);
//! 4. **call** their models, concurrently up to `max_parallel`, and
//!    **journal** the replies (`call.rs`);
//! 5. **apply** their effects and **consume** the mail they read (`apply.rs`);
//! 6. **route again**, so replies arrive in the same turn;
//! 7. **commit** (`commit.rs`).
//!
//! Every phase ends in a group commit ([`Batch`]): one filesystem sync per
//! step, not one per file. The order of the commits is what makes a crash at
//! any point safe:
//!
//! 1. deliveries are durable before outbox files move to `sent/` (G3);
//! 2. each reply is journaled, with the plan of its effects, before any effect;
//! 3. effects (outbox, memory, ledger, attempts) are durable before the mail
//!    that produced them moves to `cur/` (G4);
//! 4. the turn's events are staged in its journal folder, then `turn.json` is
//!    written, then the events are appended to `events.jsonl` (the next turn
//!    appends any that a crash kept out, and none twice).
//!
//! A turn repeated after a crash finds the journaled replies, with the ids of
//! the messages they write, so it writes the same ids, calls no model twice,
//! and charges no (turn, agent) twice (G5).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use lemming_provider::Registry;
use serde::{Deserialize, Serialize};

use crate::clock::{Clock, Sources};
use crate::error::PathError;
use crate::events::{EventKind, EventLog, Events, SkipReason};
use crate::fault;
use crate::fsx::{self, Batch, FileId};
use crate::journal::{Journal, Record};
use crate::mailbox::{dead_id, show_name, DeadReason, Letter, Mailbox};
use crate::message::{self, Kind, Message, To};
use crate::name::{AgentName, ENGINE};
use crate::org::{agent_folders, Org};
use crate::trouble;

mod apply;
mod call;
mod commit;
mod pick;
#[cfg(test)]
mod tests;

pub use pick::{prompt_for, PromptOverCredits};

/// What a turn did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TurnReport {
    /// The turn number.
    pub turn: u64,
    /// Messages delivered into inboxes (bounces included).
    pub delivered: usize,
    /// Messages sent to `dead/` (refused, malformed, expired or poisoned).
    pub dead: usize,
    /// Messages held because their sender or recipient has an invalid resume.
    pub held: usize,
    /// Agents that ran and whose reply was used.
    pub ran: Vec<String>,
    /// Agents whose journaled reply from an interrupted run was reused.
    pub replayed: Vec<String>,
    /// Agents whose reply came on an earlier try of this turn that could not
    /// journal it (a full disk): it was kept in memory and is journaled now;
    /// their model was not asked again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recovered: Vec<String>,
    /// Agents whose run failed, with the reason.
    pub failed: Vec<(String, String)>,
    /// Agents that were due but skipped, with the reason (`out_of_credits`, `org_budget_spent`).
    pub skipped: Vec<(String, SkipReason)>,
    /// Credits charged this turn.
    pub cost: f64,
}

/// A stop request: when it turns `true`, provider calls still in flight are
/// abandoned, the agents that already answered are applied, and the turn
/// commits; the others keep their mail unread for the next turn.
pub type Stop = tokio::sync::watch::Receiver<bool>;

/// Replies a model gave on a try of a turn that then could not journal them
/// (a full disk, a read-only org). Whoever repeats the turn in the same
/// process (the daemon) passes them back, so that the turn journals and uses
/// them instead of asking the same (turn, agent) again.
#[derive(Debug, Default)]
pub struct Unjournaled {
    turn: u64,
    records: Vec<Record>,
    /// Model calls that answered but could not be journaled, since the last
    /// committed turn. Counted, logged and shown in `status` by the daemon.
    pub calls: u64,
}

impl Unjournaled {
    /// Whether replies are held.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The held replies of `turn` for agents the journal does not have yet.
    fn take(&mut self, turn: u64, journaled: &BTreeMap<String, Record>) -> Vec<Record> {
        let records = std::mem::take(&mut self.records);
        if self.turn != turn && !records.is_empty() {
            tracing::warn!(held = self.turn, turn, "replies held for another turn are dropped");
            return Vec::new();
        }
        records.into_iter().filter(|r| !journaled.contains_key(&r.agent)).collect()
    }
}

/// Runs one turn on a loaded org. The caller holds the org lock.
pub async fn run(org: &Org, registry: &Arc<Registry>, stop: Option<Stop>) -> Result<TurnReport, PathError> {
    run_keeping(org, registry, &Sources::real(), stop, &mut Unjournaled::default()).await
}

/// [`run`], reusing the replies in `held` that an earlier try of this turn
/// could not journal, and leaving there the replies that this try cannot.
/// Time comes from `src`'s clock, and each event is published on its bus as
/// it happens.
pub async fn run_keeping(
    org: &Org,
    registry: &Arc<Registry>,
    src: &Sources,
    stop: Option<Stop>,
    held: &mut Unjournaled,
) -> Result<TurnReport, PathError> {
    let mut t = Turn::prepare(org, src)?;
    let clock = &*src.clock;
    route(org, &t.mb, t.turn, clock, &mut t.report, &mut t.ev, &mut t.sick)?;
    fault::point("routed");
    let journaled = t.journal.records(t.turn)?;
    let carried = held.take(t.turn, &journaled);
    let mut ledger = crate::ledger::Ledger::load(&org.layout.ledger())?;
    let answered: HashSet<&str> =
        journaled.keys().chain(carried.iter().map(|r| &r.agent)).map(String::as_str).collect();
    let jobs = t.pick(registry, &ledger, &answered)?;
    let fresh = call::call(org, registry, jobs, stop, t.turn, t.started, clock).await;
    let replies = t.journal(journaled, carried, fresh, held)?;
    fault::point("journaled");
    t.apply(&mut ledger, &replies)?;
    fault::point("effects");
    t.consume(&replies.records)?;
    fault::point("consumed");
    route(org, &t.mb, t.turn, clock, &mut t.report, &mut t.ev, &mut t.sick)?;
    fault::point("routed_again");
    t.commit(&replies.records, held)
}

/// The state of one turn, handed from phase to phase.
struct Turn<'a> {
    org: &'a Org,
    clock: &'a dyn Clock,
    mb: Mailbox,
    journal: Journal,
    /// The turn number.
    turn: u64,
    /// When it started: the stamp of the ids of the messages its replies write.
    started: DateTime<Utc>,
    report: TurnReport,
    ev: Events,
    /// Agents whose files cannot be used this turn: they sit it out, alone.
    sick: BTreeMap<String, PathError>,
    /// The agents in trouble after the last turn.
    trouble_before: BTreeMap<String, trouble::AgentTrouble>,
}

/// The journaled replies a turn applies.
struct Replies {
    /// Every reply of the turn, replayed ones first, then by agent.
    records: Vec<Record>,
    /// The agents whose reply was journaled by an earlier, interrupted try.
    replayed: Vec<String>,
}

impl<'a> Turn<'a> {
    /// Starts the next turn: its number, the events of the last one that a
    /// crash kept out of the events file, every agent's folders (an agent
    /// whose folders cannot be used is sick), and no stale tmp files.
    fn prepare(org: &'a Org, src: &'a Sources) -> Result<Turn<'a>, PathError> {
        let journal = Journal::new(&org.layout);
        let last = journal.last_turn()?;
        let Some(turn) = last.checked_add(1) else {
            return Err(PathError {
                path: org.layout.turn_json(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("the turn counter is at its maximum ({last}); the file is corrupt: remove it, and the turn is recovered from the journal and the ledger"),
                ),
            });
        };
        let last_seq = EventLog::new(&org.layout).catch_up(&journal.staged_events(last)?)?;
        let clock = &*src.clock;
        let mut t = Turn {
            org,
            clock,
            mb: Mailbox::new(&org.layout.root).with_read_limit(org.settings.max_message_bytes),
            journal,
            turn,
            started: clock.now(),
            report: TurnReport { turn, ..TurnReport::default() },
            ev: Events::live(turn, last_seq + 1, src.bus.clone()),
            sick: BTreeMap::new(),
            trouble_before: trouble::read_agents(&org.layout),
        };
        for folder in agent_folders(&org.layout) {
            if AgentName::new(&folder).is_ok() {
                let ensured = t.mb.ensure(&folder).and_then(|_| trouble::check_agent_files(&org.layout, &folder));
                if let Err(e) = ensured {
                    if trouble::org_wide(&e) {
                        return Err(e);
                    }
                    t.sick.insert(folder, e);
                    continue;
                }
                fsx::clean_stale_tmp(t.mb.tmp_leftovers(&folder));
            }
        }
        // State files (`daemon.json`, `turn.json`, dead-letter reasons, memory) are written through here too.
        fsx::clean_stale_tmp(
            std::fs::read_dir(org.layout.state_tmp()).into_iter().flatten().flatten().map(|e| e.path()),
        );
        Ok(t)
    }
}

fn reason(
    id: &str,
    code: &str,
    detail: String,
    mailbox: &str,
    to: Vec<String>,
    turn: u64,
    at: DateTime<Utc>,
) -> DeadReason {
    DeadReason { id: id.into(), reason: code.into(), detail, mailbox: mailbox.into(), to, turn, at }
}

/// The engine's notice to a sender that its message was refused (its id
/// follows the dead letter's, which is unique, cut to fit when too long).
fn bounce(
    to: &str,
    dead_id: &str,
    refused_id: &str,
    thread: &str,
    detail: &str,
    turn: u64,
    at: DateTime<Utc>,
) -> Message {
    Message {
        id: message::fit_id(&format!("{dead_id}-bounce")),
        from: ENGINE.into(),
        to: To(vec![to.to_string()]),
        subject: Some("undeliverable".into()),
        body: format!("Your message {refused_id} was not delivered: {detail}"),
        priority: message::Priority::Normal,
        reply_to: Some(refused_id.to_string()),
        thread: thread.to_string(),
        created_at: at,
        turn,
        ttl_turns: None,
        kind: Kind::Bounce,
    }
}

/// Why an outbox entry is refused, and whom to tell.
struct Refusal<'a> {
    /// What its dead letter holds.
    letter: &'a Letter,
    /// The reason code.
    code: &'a str,
    /// The id the dead letter's id starts from.
    id: &'a str,
    /// What happened, for people.
    detail: String,
    /// The recipients it is refused for.
    to: Vec<String>,
    /// The refused message's id and thread, for the bounce to its sender
    /// (`None` for a bounce, which is never bounced again).
    bounce_of: Option<(&'a str, &'a str)>,
}

impl<'a> Refusal<'a> {
    /// An entry that is not a message at all: its dead letter's id stands for
    /// the message's id and thread in the bounce.
    fn unparsed(letter: &'a Letter, code: &'a str, id: &'a str, detail: String) -> Refusal<'a> {
        Refusal { letter, code, id, detail, to: vec![], bounce_of: Some((id, id)) }
    }
}

/// The state of one routing pass.
struct Router<'a> {
    mb: &'a Mailbox,
    turn: u64,
    clock: &'a dyn Clock,
    now: DateTime<Utc>,
    deliveries: Batch,
    moves: Batch,
    seen: HashSet<(String, String)>,
    dead_taken: HashSet<String>,
    /// The message ids routed in this pass, with the file and a hash of the
    /// bytes that carried them (another file with the same id and other
    /// bytes is a duplicate).
    routed: HashMap<String, (FileId, u64)>,
    report: &'a mut TurnReport,
    ev: &'a mut Events,
    /// Agents whose files cannot be used this turn: mail to them is held.
    sick: BTreeMap<String, PathError>,
}

impl Router<'_> {
    fn delivered(&mut self, to: &str, id: &str, from: &str) {
        self.report.delivered += 1;
        let kind = EventKind::Delivered { id: id.into(), from: from.into(), to: to.into() };
        self.ev.emit(self.clock, kind);
    }

    /// Sends a refused outbox entry to dead with its reason, and bounces it to the
    /// sender unless it is itself a bounce (`bounce_of` is then `None`). Returns
    /// the dead letter's id.
    fn refuse(&mut self, agent: &str, file: &OsStr, r: Refusal<'_>) -> String {
        let Refusal { letter, code, id, detail, to, bounce_of } = r;
        let entry = self.mb.outbox_path(agent, "new").join(file);
        let dead_id = self.mb.free_dead_id(id, &entry, letter, &self.dead_taken);
        self.dead_taken.insert(dead_id.clone());
        let why = reason(&dead_id, code, detail.clone(), agent, to, self.turn, self.now);
        self.mb.dead_pending(&mut self.deliveries, agent, file, letter, &why);
        if let Some((refused_id, thread)) = bounce_of {
            let b = bounce(agent, &dead_id, refused_id, thread, &detail, self.turn, self.now);
            if self.seen.insert((agent.to_string(), b.id.clone())) && self.mb.deliver(&mut self.deliveries, agent, &b) {
                self.delivered(agent, &b.id, ENGINE);
            }
        }
        self.report.dead += 1;
        self.ev.emit(self.clock, EventKind::from(&why));
        dead_id
    }

    /// Refuses a whole entry (no recipient gets it) and takes it out of the outbox.
    fn refuse_whole(&mut self, agent: &str, file: &OsStr, r: Refusal<'_>) {
        let letter = r.letter;
        let dead_id = self.refuse(agent, file, r);
        self.mb.drop_pending(&mut self.moves, agent, file, letter, &dead_id);
    }

    /// Why `msg` (read from `file`) reuses the id of another message already
    /// routed (in this pass, into a recipient's inbox, or in the sender's
    /// `sent/`) with other content; `None` if its id is its own or it is the
    /// same message again (a repeated turn, a hard link, an identical copy).
    fn duplicate(
        &mut self,
        agent: &str,
        file: &OsStr,
        msg: &Message,
        fid: FileId,
        bytes: &[u8],
    ) -> Result<Option<String>, PathError> {
        let mb = self.mb;
        let hash = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            bytes.hash(&mut h);
            h.finish()
        };
        let id = &msg.id;
        let again = "message ids must be unique: send it again with a new id";
        if let Some((f, h)) = self.routed.get(id) {
            if *f != fid && *h != hash {
                return Ok(Some(format!(
                    "id {id} is already used by another message routed on this turn, with other content; {again}"
                )));
            }
        }
        for to in &msg.to.0 {
            if let Some(copy) = mb.other_copy(to, id, fid, bytes)? {
                let rel = copy.strip_prefix(mb.root()).unwrap_or(&copy);
                return Ok(Some(format!(
                    "id {id} was already delivered to {to} ({}) with other content; {again}",
                    rel.display()
                )));
            }
        }
        let sent = mb.outbox_path(agent, "sent").join(file);
        if std::fs::symlink_metadata(&sent).is_ok() && !mb.same_file(&sent, fid, bytes)? {
            return Ok(Some(format!(
                "{} was already routed (outbox/sent/{}) with other content; {again}",
                show_name(file),
                show_name(file)
            )));
        }
        self.routed.insert(id.clone(), (fid, hash));
        Ok(None)
    }

    fn route_file(&mut self, org: &Org, agent: &str, file: &OsStr) -> Result<(), PathError> {
        let mb = self.mb;
        let name = show_name(file);
        let limit = org.settings.max_message_bytes;
        let (fid, bytes) = match mb.read_pending(agent, file, limit)? {
            fsx::Entry::Gone => return Ok(()),
            fsx::Entry::NotRegular { kind, target } => {
                let code = "not_a_regular_file";
                let id = dead_id(code, self.turn, agent, &name);
                let detail = format!(
                    "{name} is {}{}, not a regular file: it was neither read nor followed. Write each message as \
                     a regular file (to outbox/tmp/, then rename it into outbox/new/)",
                    kind.describe(),
                    target
                        .as_ref()
                        .map(|t| format!(" to `{}`", crate::term::line(&t.to_string_lossy())))
                        .unwrap_or_default()
                );
                let letter = Letter::Note { kind, target };
                self.refuse_whole(agent, file, Refusal::unparsed(&letter, code, &id, detail));
                return Ok(());
            }
            fsx::Entry::TooLarge { id: fid, size } => {
                let id = dead_id("oversize", self.turn, agent, &name);
                let detail = format!(
                    "{name} is {size} bytes; the limit is {} (max_message_bytes in org/org.toml)",
                    org.settings.max_message_bytes
                );
                self.refuse_whole(agent, file, Refusal::unparsed(&Letter::Link(fid), "oversize", &id, detail));
                return Ok(());
            }
            fsx::Entry::File { id, bytes } => (id, bytes),
        };
        let letter = Letter::Link(fid);
        let parsed = if file.to_str().is_some_and(|n| n.ends_with(".json")) {
            Message::parse(&bytes).map_err(|e| e.to_string())
        } else {
            Err(crate::mailbox::Unusable::Name.to_string())
        };
        let msg = match parsed {
            Ok(m) => m,
            Err(e) => {
                let id = dead_id("malformed", self.turn, agent, &name);
                self.refuse_whole(agent, file, Refusal::unparsed(&letter, "malformed", &id, format!("{name}: {e}")));
                return Ok(());
            }
        };
        let bounce_of = (msg.kind != Kind::Bounce).then_some((msg.id.as_str(), msg.thread.as_str()));
        let refusal = if msg.from != agent {
            Some((
                "sender_mismatch",
                format!(
                    "`from` is {:?} but the message is in {agent}'s outbox; an agent may only send as itself",
                    msg.from
                ),
            ))
        } else {
            msg.ttl_turns.filter(|ttl| self.turn > msg.turn.saturating_add(*ttl)).map(|ttl| {
                ("expired", format!("expired: written on turn {}, ttl_turns {ttl}, now turn {}", msg.turn, self.turn))
            })
        };
        if let Some((code, detail)) = refusal {
            let to = msg.to.0.clone();
            self.refuse_whole(agent, file, Refusal { letter: &letter, code, id: &msg.id, detail, to, bounce_of });
            return Ok(());
        }
        if msg.to.0.iter().any(|to| org.broken.contains_key(to) || self.sick.contains_key(to)) {
            self.report.held += 1;
            return Ok(());
        }
        if let Some(detail) = self.duplicate(agent, file, &msg, fid, &bytes)? {
            let id = dead_id("duplicate_id", self.turn, agent, &name);
            let to = msg.to.0.clone();
            self.refuse_whole(
                agent,
                file,
                Refusal { letter: &letter, code: "duplicate_id", id: &id, detail, to, bounce_of },
            );
            return Ok(());
        }
        let chart = org.chart();
        let mut denied = Vec::new();
        for to in &msg.to.0 {
            match chart.check(agent, to) {
                Ok(()) => {
                    if self.seen.insert((to.clone(), msg.id.clone()))
                        && mb.deliver_pending(&mut self.deliveries, agent, file, to, &msg.id, fid)
                    {
                        self.delivered(to, &msg.id, agent);
                    }
                }
                Err(d) => denied.push((to.clone(), d)),
            }
        }
        if !denied.is_empty() {
            let code = denied[0].1.code();
            let detail = denied.iter().map(|(_, d)| d.to_string()).collect::<Vec<_>>().join("; ");
            let to = denied.iter().map(|(t, _)| t.clone()).collect();
            self.refuse(agent, file, Refusal { letter: &letter, code, id: &msg.id, detail, to, bounce_of });
        }
        mb.mark_sent(&mut self.moves, agent, file);
        Ok(())
    }
}

/// Routes every outbox: delivers what the chart allows, sends the rest to dead
/// with a bounce to the sender. Deliveries are durable before outbox files move.
/// An agent whose outbox cannot be read is added to `sick` and skipped (its
/// files wait); mail to a sick agent is held.
fn route(
    org: &Org,
    mb: &Mailbox,
    turn: u64,
    clock: &dyn Clock,
    report: &mut TurnReport,
    ev: &mut Events,
    sick: &mut BTreeMap<String, PathError>,
) -> Result<(), PathError> {
    // Held mail is counted by the last pass only: the second pass sees it again.
    report.held = 0;
    let mut r = Router {
        mb,
        turn,
        clock,
        now: clock.now(),
        deliveries: Batch::new(),
        moves: Batch::new(),
        seen: HashSet::new(),
        dead_taken: HashSet::new(),
        routed: HashMap::new(),
        report,
        ev,
        sick: BTreeMap::new(),
    };
    r.sick = std::mem::take(sick);
    for agent in agent_folders(&org.layout) {
        if AgentName::new(&agent).is_err() || r.sick.contains_key(&agent) {
            continue;
        }
        let files = match mb.pending(&agent) {
            Ok(files) => files,
            Err(e) if trouble::org_wide(&e) => return Err(e),
            Err(e) => {
                r.sick.insert(agent, e);
                continue;
            }
        };
        if files.is_empty() {
            continue;
        }
        if org.broken.contains_key(&agent) {
            r.report.held += files.len();
            continue;
        }
        for file in files {
            match r.route_file(org, &agent, &file) {
                Ok(()) => {}
                Err(e) if trouble::org_wide(&e) => return Err(e),
                Err(e) => {
                    // The files already routed stay routed; the rest wait for a later turn.
                    r.sick.insert(agent.clone(), e);
                    break;
                }
            }
        }
    }
    *sick = std::mem::take(&mut r.sick);
    let (deliveries, moves) = (r.deliveries, r.moves);
    deliveries.commit(mb.root())?;
    fault::point("delivered");
    moves.commit(mb.root())
}
