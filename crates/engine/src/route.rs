//! Routing, the first and the last phase of a turn: every entry waiting in an
//! outbox is read from the mail store as a [`Message`], checked, and delivered
//! to each recipient the chart allows; the rest goes to dead with its reason
//! and a bounce to the sender.
//!
//! Mail for an agent that the store does not keep (one that lives on another
//! machine) is handed to a [`Transport`]. Deliveries, and the transport's
//! acceptance, are durable before the outbox entry moves to sent (G3).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};

use crate::clock::Clock;
use crate::error::PathError;
use crate::events::TurnReport;
use crate::events::{EventKind, Events};
use crate::fault;
use crate::fsx::Batch;
use crate::mailbox::{
    dead_id, show_name, show_target, Checked, Conflict, DeadReason, Fingerprint, Letter, MailStore, Outgoing, Pending,
    Reason, Unusable,
};
use crate::message::{self, Kind, Message, To};
use crate::name::{AgentName, ENGINE};
use crate::org::Org;
use crate::transport::{Arrival, Transport};
use crate::trouble;

/// Where routed mail goes: the mail store, and the transport for agents the
/// store does not keep.
#[derive(Clone, Copy)]
pub struct Post<'a> {
    /// The mail store.
    pub store: &'a dyn MailStore,
    /// The transport, if the org spans machines. Without one, mail for an
    /// agent the store does not keep waits in the outbox.
    pub transport: Option<&'a dyn Transport>,
    /// The ids of the messages that this very try of the turn wrote to the
    /// outboxes from replies it asked for (none replayed from the journal of
    /// an earlier try). The turn made these ids up (`message::reply_id`)
    /// and no earlier try ever wrote them, so no inbox can hold a copy:
    /// routing does not look in the recipients' inboxes for one (a file by
    /// that name in `inbox/new/` all the same fails the delivery's commit,
    /// never taken for the message).
    pub fresh: Option<&'a HashSet<String>>,
}

impl<'a> Post<'a> {
    /// Every agent's mail in `store`.
    pub fn local(store: &'a dyn MailStore) -> Post<'a> {
        Post { store, transport: None, fresh: None }
    }
}

fn reason(
    id: &str,
    code: Reason,
    detail: String,
    mailbox: &str,
    to: Vec<String>,
    turn: u64,
    at: DateTime<Utc>,
) -> DeadReason {
    DeadReason { id: id.into(), reason: code, detail, mailbox: mailbox.into(), to, turn, at }
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
        ack_required: false,
    }
}

/// Why an outbox entry is refused, and whom to tell.
struct Refusal<'a> {
    /// What its dead letter holds.
    letter: &'a Letter,
    /// The reason code.
    code: Reason,
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
    fn unparsed(letter: &'a Letter, code: Reason, id: &'a str, detail: String) -> Refusal<'a> {
        Refusal { letter, code, id, detail, to: vec![], bounce_of: Some((id, id)) }
    }
}

/// The state of one routing pass.
struct Router<'a> {
    post: Post<'a>,
    turn: u64,
    clock: &'a dyn Clock,
    now: DateTime<Utc>,
    deliveries: Batch,
    moves: Batch,
    seen: HashSet<(String, String)>,
    dead_taken: HashSet<String>,
    /// The message ids routed in this pass, with what tells their message
    /// from another (another one with the same id is a duplicate).
    routed: HashMap<String, Fingerprint>,
    report: &'a mut TurnReport,
    ev: &'a mut Events,
    /// Agents whose files cannot be used this turn: mail to them is held.
    sick: BTreeMap<String, PathError>,
    /// The entries left waiting in their outbox.
    waiting: Waiting,
}

impl Router<'_> {
    fn delivered(&mut self, to: &str, id: &str, from: &str) {
        self.report.delivered += 1;
        let kind = EventKind::Delivered { id: id.into(), from: from.into(), to: to.into() };
        self.ev.emit(self.clock.now(), kind);
    }

    /// Sends a refused outbox entry to dead with its reason, and bounces it to the
    /// sender unless it is itself a bounce (`bounce_of` is then `None`). Returns
    /// the dead letter's id.
    fn refuse(&mut self, p: &Pending, r: Refusal<'_>) -> String {
        let Refusal { letter, code, id, detail, to, bounce_of } = r;
        let dead_id = self.dead_letter(p, letter, code, id, detail.clone(), to);
        if let Some((refused_id, thread)) = bounce_of {
            self.bounce(p, &dead_id, refused_id, thread, &detail);
        }
        dead_id
    }

    /// Queues one dead letter of the entry `p` with its reason; returns its id.
    fn dead_letter(
        &mut self,
        p: &Pending,
        letter: &Letter,
        code: Reason,
        id: &str,
        detail: String,
        to: Vec<String>,
    ) -> String {
        let why = reason(id, code, detail, p.from.as_str(), to, self.turn, self.now);
        let why = self.post.store.refuse(&mut self.deliveries, p, letter, why, &mut self.dead_taken);
        self.report.dead += 1;
        self.ev.emit(self.clock.now(), EventKind::from(&why));
        why.id
    }

    /// Queues the bounce to the sender of `p` that says why its message
    /// `refused_id` died as the dead letter `dead_id`.
    fn bounce(&mut self, p: &Pending, dead_id: &str, refused_id: &str, thread: &str, detail: &str) {
        let agent = p.from.as_str();
        let b = bounce(agent, dead_id, refused_id, thread, detail, self.turn, self.now);
        if self.seen.insert((agent.to_string(), b.id.clone()))
            && self.post.store.deliver(&mut self.deliveries, agent, &b)
        {
            self.delivered(agent, &b.id, ENGINE);
        }
    }

    /// Refuses a whole entry (no recipient gets it) and takes it out of the outbox.
    fn refuse_whole(&mut self, p: &Pending, r: Refusal<'_>) {
        let letter = r.letter;
        let dead_id = self.refuse(p, r);
        self.post.store.drop_pending(&mut self.moves, p, letter, &dead_id);
    }

    /// Why the message `m` (read from `p`) reuses the id of another message
    /// already routed (in this pass, into a recipient's inbox, or in the
    /// sender's sent mail) with other content; `None` if its id is its own or
    /// it is the same message again (a repeated turn, a hard link, an identical copy).
    /// The recipients whose inbox holds this very message already go to `held`.
    fn duplicate(
        &mut self,
        p: &Pending,
        m: &Checked,
        to: &[String],
        held: &mut Vec<String>,
    ) -> Result<Option<String>, PathError> {
        let id = &m.msg.id;
        let again = "message ids must be unique: send it again with a new id";
        let fp = m.fingerprint();
        if self.routed.get(id).is_some_and(|prev| !prev.same(&fp)) {
            return Ok(Some(format!(
                "id {id} is already used by another message routed on this turn, with other content; {again}"
            )));
        }
        // The sender's sent mail is looked in all the same: moving the entry
        // there must never replace another file.
        let inboxes = if self.post.fresh.is_some_and(|f| f.contains(id)) { &[] } else { to };
        if let Some(c) = self.post.store.conflict(p, m, inboxes, held)? {
            return Ok(Some(duplicate_detail(p, id, &c)));
        }
        self.routed.insert(id.clone(), fp);
        Ok(None)
    }

    /// Delivers the mail other nodes published for this node's agents, or
    /// makes it a dead letter here. Returns the arrivals to acknowledge once
    /// the pass has committed; one whose recipient cannot take mail now (an
    /// invalid resume, files that cannot be used) is not acknowledged, and
    /// comes again.
    fn arrivals(&mut self, org: &Org, t: &dyn Transport) -> Vec<u64> {
        // In name order, as the org keeps its agents.
        let here: Vec<String> = org.agents.values().filter(|r| org.runs_here(r)).map(|r| r.name.to_string()).collect();
        let mut done = Vec::new();
        for a in t.incoming(&here) {
            if self.arrive(org, &a) {
                done.push(a.token);
            }
        }
        done
    }

    /// One arrival: false when it must come again later.
    fn arrive(&mut self, org: &Org, a: &Arrival) -> bool {
        let to = a.to.as_str();
        if self.sick.contains_key(to) || org.broken.contains_key(to) {
            return false;
        }
        let limit = org.settings.max_message_bytes;
        let msg = if a.bytes.len() as u64 > limit {
            let detail = format!("{} bytes; the limit is {limit} (max_message_bytes in org/org.toml)", a.bytes.len());
            Err((Reason::Oversize, detail))
        } else {
            Message::parse(&a.bytes).map_err(|e| (Reason::Malformed, e.to_string()))
        };
        let msg = msg.and_then(|m| match arrival_refusal(org, to, &m) {
            None => Ok(m),
            Some(refused) => Err(refused),
        });
        match msg {
            Ok(msg) => {
                if self.seen.insert((to.to_string(), msg.id.clone()))
                    && self.post.store.deliver(&mut self.deliveries, to, &msg)
                {
                    self.delivered(to, &msg.id, &msg.from);
                }
            }
            Err((code, detail)) => {
                let stem = Message::parse(&a.bytes).map(|m| m.id).unwrap_or_else(|_| digest(&a.bytes));
                let id = arrival_dead_id(&code, to, &stem);
                let mailbox = if org.agents.contains_key(to) { to } else { ENGINE };
                let detail = format!("mail from another node: {detail}");
                let why = reason(&id, code, detail, mailbox, vec![to.to_string()], self.turn, self.now);
                if self.post.store.refuse_arrival(&mut self.deliveries, &a.bytes, &why) {
                    self.report.dead += 1;
                    self.ev.emit(self.clock.now(), EventKind::from(&why));
                }
            }
        }
        true
    }

    fn route_file(&mut self, org: &Org, p: &Pending) -> Result<(), PathError> {
        let store = self.post.store;
        let agent = p.from.as_str();
        let name = p.show();
        let checked = match store.read_pending(p, org.settings.max_message_bytes)? {
            Outgoing::Gone => return Ok(()),
            Outgoing::Unusable { error, letter } => {
                let detail = unusable_detail(&name, &error);
                let code = error.code();
                let id = dead_id(&code, self.turn, agent, &name);
                self.refuse_whole(p, Refusal::unparsed(&letter, code, &id, detail));
                return Ok(());
            }
            Outgoing::Message(checked) => checked,
        };
        let msg = &checked.msg;
        let letter = checked.letter();
        let bounce_of = (msg.kind != Kind::Bounce).then_some((msg.id.as_str(), msg.thread.as_str()));
        let sick = |to: &str| self.sick.contains_key(to);
        let recipients = match decide(org, store, self.turn, agent, msg, &sick) {
            Decision::Refused { code, detail } => {
                let to = msg.to.0.clone();
                self.refuse_whole(p, Refusal { letter: &letter, code, id: &msg.id, detail, to, bounce_of });
                return Ok(());
            }
            Decision::Held { .. } => {
                self.report.held += 1;
                self.waiting.insert(p.clone());
                return Ok(());
            }
            Decision::Routed { recipients } => recipients,
        };
        let names: Vec<String> = recipients.iter().map(|r| r.to.clone()).collect();
        let mut held = Vec::new();
        if let Some(detail) = self.duplicate(p, &checked, &names, &mut held)? {
            let id = dead_id(&Reason::DuplicateId, self.turn, agent, &name);
            let to = msg.to.0.clone();
            let code = Reason::DuplicateId;
            self.refuse_whole(p, Refusal { letter: &letter, code, id: &id, detail, to, bounce_of });
            return Ok(());
        }
        let mut denied = Vec::new();
        let mut remote = Vec::new();
        let mut local = Vec::new();
        for r in recipients {
            match r.verdict {
                Verdict::Local => local.push(r.to),
                Verdict::Remote => remote.push(r.to),
                Verdict::Denied(d) => denied.push((r.to, d)),
            }
        }
        // Mail for agents elsewhere goes first: if the transport does not
        // take it, the whole entry waits, and the next turn routes it again.
        for to in &remote {
            let sent = match self.post.transport {
                Some(t) => t.send(to, msg).map_err(|e| e.to_string()),
                None => Err("no transport to the machine it lives on is configured".to_string()),
            };
            if let Err(e) = sent {
                tracing::warn!(from = agent, to = %to, id = %msg.id, error = %e, "mail for an agent elsewhere waits in the outbox");
                self.report.held += 1;
                self.waiting.insert(p.clone());
                return Ok(());
            }
            if self.seen.insert((to.clone(), msg.id.clone())) {
                self.delivered(to, &msg.id, agent);
            }
        }
        for to in &local {
            // `duplicate` looked in each inbox: one that holds the message needs no delivery.
            if self.seen.insert((to.clone(), msg.id.clone())) && !held.contains(to) {
                store.deliver_checked(&mut self.deliveries, p, &checked, to);
                self.delivered(to, &msg.id, agent);
            }
        }
        // Each refused recipient has a dead letter of its own; the sender gets
        // one bounce that names them all.
        let mut first_dead = None;
        for (to, denial) in &denied {
            let dead = self.dead_letter(p, &letter, denial.code(), &msg.id, denial.to_string(), vec![to.clone()]);
            first_dead.get_or_insert(dead);
        }
        if let (Some(dead_id), Some((refused_id, thread))) = (first_dead, bounce_of) {
            let detail = denied.iter().map(|(_, d)| d.to_string()).collect::<Vec<_>>().join("; ");
            self.bounce(p, &dead_id, refused_id, thread, &detail);
        }
        store.mark_sent(&mut self.moves, p);
        Ok(())
    }
}

/// What routing does with one message read from an outbox.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Refused for every recipient: it goes to dead with this reason, and
    /// its sender gets a bounce (unless it is a bounce itself).
    Refused {
        /// The reason code.
        code: Reason,
        /// What happened, for people.
        detail: String,
    },
    /// Left in the outbox for a later turn: a recipient cannot get mail now.
    Held {
        /// Why, for people.
        detail: String,
    },
    /// Checked recipient by recipient.
    Routed {
        /// Each recipient, in the order written, with what happens to its copy.
        recipients: Vec<Recipient>,
    },
}

/// One recipient of a routed message.
#[derive(Debug, Clone, PartialEq)]
pub struct Recipient {
    /// The agent.
    pub to: String,
    /// What happens to its copy.
    pub verdict: Verdict,
}

/// What happens to one recipient's copy of a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Delivered to its inbox in this org.
    Local,
    /// Handed to the transport: it lives on another machine.
    Remote,
    /// Refused by the chart: a dead letter names it, and the sender gets a bounce.
    Denied(crate::chart::Denial),
}

/// The agents a message from `owner` is for, as routing checks them one by
/// one: its `to` with groups and `*` expanded by the org ([`Org::recipients`]),
/// each once.
pub fn recipients(org: &Org, owner: &str, msg: &Message) -> Result<Vec<String>, crate::address::Unroutable> {
    Ok(org.recipients(owner, &msg.to)?.into_iter().map(|r| r.name).collect())
}

/// Decides what routing does with `msg`, read from `owner`'s outbox on
/// `turn`, from the org and the message alone: the sender, the TTL, held
/// recipients (invalid resumes, or `sick`: files that cannot be used), then
/// the chart for each recipient. Whether its id is another message's is
/// the store's to say ([`duplicate_detail`]). Routing and the dry run
/// (`lemming step --dry-run`) both decide through here.
pub fn decide(
    org: &Org,
    store: &dyn MailStore,
    turn: u64,
    owner: &str,
    msg: &Message,
    sick: &dyn Fn(&str) -> bool,
) -> Decision {
    if msg.from != owner {
        let detail = format!(
            "`from` is {:?} but the message is in {owner}'s outbox; an agent may only send as itself",
            msg.from
        );
        return Decision::Refused { code: Reason::SenderMismatch, detail };
    }
    if let Some(ttl) = msg.ttl_turns.filter(|ttl| turn > msg.turn.saturating_add(*ttl)) {
        let detail = format!("expired: written on turn {}, ttl_turns {ttl}, now turn {turn}", msg.turn);
        return Decision::Refused { code: Reason::Expired, detail };
    }
    let to = match recipients(org, owner, msg) {
        Ok(to) => to,
        Err(e) => return Decision::Refused { code: e.code(), detail: e.to_string() },
    };
    if let Some(held) = to.iter().find(|to| org.broken.contains_key(*to) || sick(to)) {
        let detail = if org.broken.contains_key(held) {
            format!("{held}'s resume is not valid: the message waits until it is fixed (see `lemming validate`)")
        } else {
            format!("{held}'s files cannot be used: the message waits until they can")
        };
        return Decision::Held { detail };
    }
    let chart = org.chart();
    let recipients = to
        .into_iter()
        .map(|to| {
            let verdict = match chart.check(owner, &to) {
                Ok(()) if store.is_local(&to) => Verdict::Local,
                Ok(()) => Verdict::Remote,
                Err(d) => Verdict::Denied(d),
            };
            Recipient { to, verdict }
        })
        .collect();
    Decision::Routed { recipients }
}

/// Why mail that arrived from another node for `to` is refused here, if it
/// is: the receiving node checks again what the sending node checked, so
/// that nobody who can publish to the server can put mail in an inbox that
/// the chart keeps it out of.
pub fn arrival_refusal(org: &Org, to: &str, msg: &Message) -> Option<(Reason, String)> {
    if !org.agents.get(to).is_some_and(|r| org.runs_here(r)) {
        return Some((
            Reason::UnknownRecipient,
            format!("it was published for {to:?}, which is no agent of this node"),
        ));
    }
    match org.agents.get(msg.from.as_str()) {
        Some(sender) if !org.runs_here(sender) => {}
        Some(_) => {
            let detail = format!(
                "`from` is {}, which runs on this node: mail from other nodes must come from their own agents",
                msg.from
            );
            return Some((Reason::SenderMismatch, detail));
        }
        None => {
            return Some((Reason::SenderMismatch, format!("`from` is {:?}, which is no agent of the org", msg.from)))
        }
    }
    if !org.recipients(&msg.from, &msg.to).is_ok_and(|rs| rs.iter().any(|r| r.name == to)) {
        return Some((
            Reason::UnknownRecipient,
            format!("it was published for {to}, but its `to` does not reach {to}"),
        ));
    }
    org.chart().check(&msg.from, to).err().map(|d| (d.code(), d.to_string()))
}

/// The dead-letter id of a refused arrival: the same each time the same
/// arrival comes again, so that it is one dead letter.
fn arrival_dead_id(code: &Reason, to: &str, stem: &str) -> String {
    dead_id(code, 0, "arrival", &format!("{to}-{stem}")).replacen("-t0-arrival-", "-arrival-", 1)
}

/// A short name for bytes that are not a message (FNV-1a, 64 bits).
fn digest(bytes: &[u8]) -> String {
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
    format!("{h:016x}")
}

/// Why an outbox entry named `name` that is not a message is refused.
pub fn unusable_detail(name: &str, error: &Unusable) -> String {
    match error {
        Unusable::NotRegular { kind, target } => format!(
            "{name} is {}{}, not a regular file: it was neither read nor followed. Write each message as \
             a regular file (to outbox/tmp/, then rename it into outbox/new/)",
            kind.describe(),
            show_target(target)
        ),
        Unusable::Oversize { size, limit } => {
            format!("{name} is {size} bytes; the limit is {limit} (max_message_bytes in org/org.toml)")
        }
        Unusable::Name | Unusable::Parse(_) => format!("{name}: {error}"),
    }
}

/// Why the message of outbox entry `p` is refused as a duplicate, given what
/// the store found holding its id ([`MailStore::conflict`]).
pub fn duplicate_detail(p: &Pending, id: &str, conflict: &Conflict) -> String {
    let again = "message ids must be unique: send it again with a new id";
    match conflict {
        Conflict::Delivered { to, copy } => {
            format!("id {id} was already delivered to {to} ({}) with other content; {again}", copy.display())
        }
        Conflict::Sent { copy } => {
            format!("{} was already routed ({}) with other content; {again}", p.show(), show_name(copy.as_os_str()))
        }
    }
}

/// The outbox entries a routing pass left where they were: held (for an
/// invalid resume, files that cannot be used, a transport that did not take
/// them), or in an outbox it skipped (a sick agent, a folder that is not an
/// agent's name). Anything else waiting after the pass came later.
pub type Waiting = BTreeSet<Pending>;

/// Routes every outbox: delivers what the chart allows, sends the rest to dead
/// with a bounce to the sender. Deliveries are durable before outbox entries move.
/// An agent whose outbox cannot be read is added to `sick` and skipped (its
/// entries wait); mail to a sick agent is held. Returns the entries it left
/// waiting, so that the daemon need not list every outbox again to tell held
/// mail from new.
pub fn route(
    org: &Org,
    post: Post<'_>,
    turn: u64,
    clock: &dyn Clock,
    report: &mut TurnReport,
    ev: &mut Events,
    sick: &mut BTreeMap<String, PathError>,
) -> Result<Waiting, PathError> {
    let store = post.store;
    let part = fault::apply_every(ROUTE_EVERY);
    // Held mail is counted by the last pass only: the second pass sees it again.
    report.held = 0;
    let mut r = Router {
        post,
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
        sick: std::mem::take(sick),
        waiting: Waiting::new(),
    };
    let arrived = post.transport.map(|t| r.arrivals(org, t)).unwrap_or_default();
    for agent in org.folders_here() {
        if AgentName::new(&agent).is_err() || r.sick.contains_key(&agent) {
            // What it could list there waits (nothing, if it cannot).
            r.waiting.extend(store.pending(&agent).unwrap_or_default());
            continue;
        }
        let entries = match store.pending(&agent) {
            Ok(entries) => entries,
            Err(e) if trouble::org_wide(&e) => return Err(e),
            Err(e) => {
                r.sick.insert(agent, e);
                continue;
            }
        };
        if entries.is_empty() {
            continue;
        }
        if org.broken.contains_key(&agent) {
            r.report.held += entries.len();
            r.waiting.extend(entries);
            continue;
        }
        for (i, p) in entries.iter().enumerate() {
            match r.route_file(org, p) {
                Ok(()) => {}
                Err(e) if trouble::org_wide(&e) => return Err(e),
                Err(e) => {
                    // The entries already routed stay routed; the rest wait for a later turn.
                    r.sick.insert(agent.clone(), e);
                    r.waiting.extend(entries[i..].iter().cloned());
                    break;
                }
            }
        }
        if r.deliveries.len() >= part {
            commit(store, &mut r.deliveries, &mut r.moves)?;
        }
    }
    *sick = std::mem::take(&mut r.sick);
    commit(store, &mut r.deliveries, &mut r.moves)?;
    // Durable in their inboxes (or dead letters) now: the other side may forget them.
    if let (Some(t), false) = (post.transport, arrived.is_empty()) {
        t.done(&arrived);
    }
    Ok(r.waiting)
}

/// A large routing pass commits its deliveries and moves every this many
/// deliveries: its memory grows with the part, not with the org's mail.
pub const ROUTE_EVERY: usize = 4096;

/// Commits the deliveries queued so far, then the moves of the entries they
/// delivered (G3: a delivery is durable before its entry leaves the outbox).
fn commit(store: &dyn MailStore, deliveries: &mut Batch, moves: &mut Batch) -> Result<(), PathError> {
    store.commit(std::mem::take(deliveries))?;
    fault::point("delivered");
    store.commit(std::mem::take(moves))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::clock::ManualClock;
    use crate::mailbox::{Folder, FsMailStore, READ_LIMIT};
    use crate::org::agent_folders;
    use crate::transport::TransportError;

    /// A transport that refuses until it is told to accept, and notes, for
    /// each message it is handed, whether its outbox entry was still waiting.
    struct Fake {
        accept: Mutex<bool>,
        store: FsMailStore,
        got: Mutex<Vec<(String, Message, bool)>>,
    }

    impl Transport for Fake {
        fn send(&self, to: &str, msg: &Message) -> Result<(), TransportError> {
            let waiting = self.store.message_path(&msg.from, Folder::Pending, &msg.id).exists();
            self.got.lock().unwrap().push((to.to_string(), msg.clone(), waiting));
            if *self.accept.lock().unwrap() {
                Ok(())
            } else {
                Err(TransportError { detail: "the other machine is unreachable".into() })
            }
        }

        fn incoming(&self, _here: &[String]) -> Vec<Arrival> {
            Vec::new()
        }

        fn done(&self, _tokens: &[u64]) {}
    }

    /// A transport that brings arrivals, once, and notes for each
    /// acknowledged one whether its recipient's inbox (or a dead letter)
    /// held it by then.
    struct Inbound {
        queue: Mutex<Vec<Arrival>>,
        store: FsMailStore,
        acked: Mutex<Vec<(u64, bool)>>,
    }

    impl Transport for Inbound {
        fn send(&self, _to: &str, _msg: &Message) -> Result<(), TransportError> {
            Ok(())
        }

        fn incoming(&self, here: &[String]) -> Vec<Arrival> {
            assert!(here.contains(&"manager".to_string()) && !here.contains(&"planner".to_string()), "{here:?}");
            std::mem::take(&mut *self.queue.lock().unwrap())
        }

        fn done(&self, tokens: &[u64]) {
            let dead = std::fs::read_dir(self.store.dead_path()).unwrap().count();
            let mut acked = self.acked.lock().unwrap();
            for t in tokens {
                let kept = match t {
                    1 | 2 => self.store.has("manager", "a1"),
                    _ => dead > 0,
                };
                acked.push((*t, kept));
            }
        }
    }

    /// Mail from another node is checked again here (sender, recipient,
    /// chart, bytes), delivered once, and acknowledged only once the pass
    /// has committed; mail for an agent that cannot take it now is not
    /// acknowledged, so that it comes again.
    #[test]
    fn arrivals_are_checked_again_delivered_once_and_acknowledged_after_the_commit() {
        let (_d, org) = org();
        let toml = std::fs::read_to_string(org.layout.org_toml()).unwrap();
        let cluster = "\n[cluster]\nname = \"t\"\nnats_url = \"nats://127.0.0.1:1\"\nnodes = [\"a\", \"b\"]\n";
        std::fs::write(org.layout.org_toml(), format!("{toml}{cluster}")).unwrap();
        let planner = org.layout.agent_dir("planner").join("resume.toml");
        let text = std::fs::read_to_string(&planner).unwrap();
        std::fs::write(&planner, text.replacen("name = \"planner\"", "name = \"planner\"\nnode = \"b\"", 1)).unwrap();
        std::fs::write(org.layout.agent_dir("coder_01").join("resume.toml"), "not toml [").unwrap();
        let mut org = Org::load(&org.layout.root).unwrap();
        org.here = Some("a".into());
        let store = org.mail();
        let bytes = |m: &Message| m.to_bytes();
        let arrival = |token, to: &str, bytes: Vec<u8>| Arrival { token, to: to.into(), bytes };
        let good = msg("a1", "planner", &["manager"]);
        let queue = vec![
            arrival(1, "manager", bytes(&good)),
            arrival(2, "manager", bytes(&good)),
            arrival(3, "manager", bytes(&msg("a3", "hr", &["manager"]))),
            arrival(4, "hr", bytes(&msg("a4", "planner", &["hr"]))),
            arrival(5, "manager", b"not a message".to_vec()),
            arrival(6, "human", bytes(&msg("a6", "planner", &["manager"]))),
            arrival(7, "coder_01", bytes(&msg("a7", "planner", &["coder_01"]))),
        ];
        let inbound = Inbound { queue: Mutex::new(queue), store: store.clone(), acked: Mutex::new(vec![]) };
        let report = pass(&org, Post { store: &store, transport: Some(&inbound), fresh: None }, 1);
        assert_eq!((report.delivered, report.dead), (1, 4), "{report:?}");
        assert!(store.has("manager", "a1"));
        let (unread, _) = store.unread("manager").unwrap();
        assert_eq!(unread.iter().filter(|m| m.id == "a1").count(), 1, "delivered once");
        let acked = inbound.acked.lock().unwrap().clone();
        assert_eq!(
            acked,
            [(1, true), (2, true), (3, true), (4, true), (5, true), (6, true)],
            "7 waits: coder_01's resume is invalid"
        );
        let dead = store.dead_files().unwrap();
        let reasons: Vec<String> = dead
            .reasons
            .iter()
            .map(|id| {
                let why: DeadReason = serde_json::from_slice(&std::fs::read(store.reason_path(id)).unwrap()).unwrap();
                assert!(why.detail.starts_with("mail from another node"), "{why:?}");
                why.reason.as_str().to_string()
            })
            .collect();
        let mut sorted = reasons.clone();
        sorted.sort();
        assert_eq!(sorted, ["chart_send_to", "malformed", "sender_mismatch", "unknown_recipient"], "{reasons:?}");
        assert_eq!(dead.letters.len(), 4, "each with its bytes");
    }

    fn org() -> (tempfile::TempDir, Org) {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("org");
        crate::init::init(&root).unwrap();
        let org = Org::load(&root).unwrap();
        for a in agent_folders(&org.layout) {
            org.mail().ensure(&a).unwrap();
        }
        (d, org)
    }

    fn msg(id: &str, from: &str, to: &[&str]) -> Message {
        let mut m =
            Message::parse(format!(r#"{{"id":"{id}","from":"{from}","to":"x","body":"hi"}}"#).as_bytes()).unwrap();
        m.to = To(to.iter().map(|s| s.to_string()).collect());
        m
    }

    fn pass(org: &Org, post: Post<'_>, turn: u64) -> TurnReport {
        let clock = ManualClock::new(Utc::now());
        let mut report = TurnReport { turn, ..TurnReport::default() };
        let mut ev = Events::new(turn);
        let mut sick = BTreeMap::new();
        route(org, post, turn, &clock, &mut report, &mut ev, &mut sick).unwrap();
        assert!(sick.is_empty(), "{sick:?}");
        report
    }

    /// Mail for an agent the store does not keep goes to the transport; the
    /// entry moves to sent only once the transport took it, and until then
    /// nobody gets it (the next turn routes it again, whole).
    #[test]
    fn a_remote_recipient_gets_its_mail_through_the_transport_before_the_entry_is_sent() {
        let (_d, org) = org();
        let store = org.mail().with_remote(["hr".to_string()]);
        let m = msg("m1", "manager", &["planner", "hr"]);
        store.send_now("manager", &m).unwrap();
        let fake = Fake { accept: Mutex::new(false), store: store.clone(), got: Mutex::new(vec![]) };
        let post = Post { store: &store, transport: Some(&fake), fresh: None };

        let report = pass(&org, post, 1);
        assert_eq!((report.held, report.delivered), (1, 0), "{report:?}");
        assert!(store.message_path("manager", Folder::Pending, "m1").exists(), "refused: the entry waits");
        assert!(!store.has("planner", "m1"), "nobody gets it until the transport takes it");

        *fake.accept.lock().unwrap() = true;
        let report = pass(&org, post, 2);
        assert_eq!((report.held, report.delivered), (0, 2), "{report:?}");
        assert!(store.has("planner", "m1"));
        assert!(!store.has("hr", "m1"), "the store keeps no inbox for hr");
        assert!(store.message_path("manager", Folder::Sent, "m1").exists());
        assert!(!store.message_path("manager", Folder::Pending, "m1").exists());
        let got = fake.got.lock().unwrap();
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got.iter().all(|(to, g, waiting)| to == "hr" && g.id == m.id && g.to == m.to && *waiting), "{got:?}");
    }

    /// The pass says which entries it left waiting, and only those: held
    /// for an invalid resume (the sender's or a recipient's), for a remote
    /// agent without a transport, or in a folder that is not an agent's.
    #[test]
    fn a_pass_returns_the_entries_it_left_waiting() {
        let (_d, org) = org();
        let root = org.layout.root.clone();
        crate::testing::edit(&root, "agents/planner/resume.toml", "title = \"Planner\"", "title = 7");
        let org = Org::load(&root).unwrap();
        assert!(org.broken.contains_key("planner"));
        let store = org.mail().with_remote(["hr".to_string()]);
        store.send_now("human", &msg("routed", "human", &["manager"])).unwrap();
        store.send_now("manager", &msg("to-broken", "manager", &["planner"])).unwrap();
        store.send_now("manager", &msg("to-remote", "manager", &["hr"])).unwrap();
        store.send_now("planner", &msg("from-broken", "planner", &["manager"])).unwrap();
        let odd = root.join("agents/Not.An.Agent/outbox/new");
        std::fs::create_dir_all(&odd).unwrap();
        std::fs::write(odd.join("x.json"), "{}").unwrap();
        let clock = ManualClock::new(Utc::now());
        let mut report = TurnReport { turn: 1, ..TurnReport::default() };
        let (mut ev, mut sick) = (Events::new(1), BTreeMap::new());
        let waiting = route(&org, Post::local(&store), 1, &clock, &mut report, &mut ev, &mut sick).unwrap();
        let got: Vec<(String, String)> = waiting.iter().map(|p| (p.from.clone(), p.show())).collect();
        let want = [
            ("Not.An.Agent", "x.json"),
            ("manager", "to-broken.json"),
            ("manager", "to-remote.json"),
            ("planner", "from-broken.json"),
        ];
        assert_eq!(got, want.map(|(a, f)| (a.to_string(), f.to_string())));
        assert_eq!(report.delivered, 1, "{report:?}");
    }

    /// Without a transport, mail for an agent elsewhere waits.
    #[test]
    fn mail_for_a_remote_agent_waits_without_a_transport() {
        let (_d, org) = org();
        let store = org.mail().with_remote(["planner".to_string()]);
        store.send_now("manager", &msg("m1", "manager", &["planner"])).unwrap();
        let report = pass(&org, Post::local(&store), 1);
        assert_eq!((report.held, report.delivered, report.dead), (1, 0, 0), "{report:?}");
        assert!(store.message_path("manager", Folder::Pending, "m1").exists());
    }

    /// One outbox entry is decided from the org and the message alone:
    /// routing and the dry run both ask [`decide`].
    #[test]
    fn the_decision_for_one_entry_is_made_from_the_org_and_the_message() {
        let (_d, org) = org();
        let store = org.mail().with_remote(["hr".to_string()]);
        let none = |_: &str| false;
        let m = msg("m1", "manager", &["planner", "hr", "nobody"]);
        let Decision::Routed { recipients } = decide(&org, &store, 1, "manager", &m, &none) else { panic!() };
        let verdicts: Vec<_> = recipients.iter().map(|r| (r.to.as_str(), &r.verdict)).collect();
        assert!(matches!(verdicts[0], ("planner", Verdict::Local)), "{verdicts:?}");
        assert!(matches!(verdicts[1], ("hr", Verdict::Remote)), "{verdicts:?}");
        assert!(matches!(verdicts[2], ("nobody", Verdict::Denied(d)) if d.code() == Reason::UnknownRecipient));

        let d = decide(&org, &store, 1, "planner", &m, &none);
        assert!(matches!(d, Decision::Refused { code: Reason::SenderMismatch, .. }), "{d:?}");
        let mut old = msg("m2", "manager", &["planner"]);
        (old.turn, old.ttl_turns) = (1, Some(2));
        assert!(matches!(decide(&org, &store, 3, "manager", &old, &none), Decision::Routed { .. }));
        let d = decide(&org, &store, 4, "manager", &old, &none);
        assert!(
            matches!(&d, Decision::Refused { code: Reason::Expired, detail } if detail.contains("ttl_turns 2")),
            "{d:?}"
        );
        let sick = |a: &str| a == "planner";
        let d = decide(&org, &store, 1, "manager", &old, &sick);
        assert!(matches!(&d, Decision::Held { detail } if detail.contains("planner's files")), "{d:?}");
    }

    /// A message to a group is checked for each member on its own: each
    /// refused member gets a dead letter of its own, the sender one bounce
    /// naming them all, and routing the same entry again (a repeated turn)
    /// writes nothing new.
    #[test]
    fn each_refused_member_of_a_group_has_its_own_dead_letter_and_the_sender_one_bounce() {
        let (_d, mut org) = org();
        let members = ["planner", "hr", "janitor", "coder_01"].map(|n| AgentName::new(n).unwrap());
        org.settings.groups.insert("eng".into(), members.to_vec());
        let store = org.mail();
        // planner may write to manager and coder_01 only.
        let m = msg("m1", "planner", &["@eng"]);
        store.send_now("planner", &m).unwrap();
        let entry = store.message_path("planner", Folder::Pending, "m1");
        let report = pass(&org, Post::local(&store), 1);
        assert_eq!((report.delivered, report.dead), (2, 2), "coder_01 and the bounce; hr and janitor: {report:?}");
        assert!(store.has("coder_01", "m1") && !store.has("planner", "m1"), "not to the sender itself");
        let mut dead = store.dead_letters().unwrap();
        dead.sort_by(|a, b| a.id.cmp(&b.id));
        let got: Vec<(&str, &str, Vec<String>)> =
            dead.iter().map(|d| (d.id.as_str(), d.reason.as_str(), d.to.clone())).collect();
        assert_eq!(
            got,
            [("m1", "chart_send_to", vec!["hr".to_string()]), ("m1.1", "chart_send_to", vec!["janitor".to_string()])]
        );
        let (bounces, _) = store.unread("planner").unwrap();
        assert_eq!(bounces.len(), 1, "{bounces:?}");
        assert!(bounces[0].body.contains("`hr`") && bounces[0].body.contains("`janitor`"), "{}", bounces[0].body);
        for to in ["hr", "janitor"] {
            assert!(store.dead_covers("planner", "m1", to, READ_LIMIT), "{to}");
        }
        assert!(!store.dead_covers("planner", "m1", "coder_01", READ_LIMIT));

        // The same entry routed again, as a turn repeated after a crash would.
        std::fs::rename(store.message_path("planner", Folder::Sent, "m1"), &entry).unwrap();
        let again = pass(&org, Post::local(&store), 1);
        assert_eq!(again.delivered, 0, "{again:?}");
        assert_eq!(store.dead_letters().unwrap().len(), 2);
        assert_eq!(store.unread("planner").unwrap().0.len(), 1);
    }

    /// Mail a turn's own replies wrote (`Post::fresh`) is delivered without
    /// a look for earlier copies. Should another file hold its name in an
    /// inbox all the same, the pass fails rather than take that file for the
    /// message; the entry waits, and the next pass, which looks, makes it a
    /// dead letter, leaving the other file as it was.
    #[test]
    fn a_fresh_message_never_takes_another_file_by_its_name_for_its_delivery() {
        let (_d, org) = org();
        let store = org.mail();
        store.send_now("manager", &msg("m1", "manager", &["planner"])).unwrap();
        let theirs = store.message_path("planner", Folder::Unread, "m1");
        std::fs::write(&theirs, "someone else's file").unwrap();
        let fresh: HashSet<String> = ["m1".to_string()].into();

        let post = Post { store: &store, transport: None, fresh: Some(&fresh) };
        let clock = ManualClock::new(Utc::now());
        let mut report = TurnReport { turn: 1, ..TurnReport::default() };
        let (mut ev, mut sick) = (Events::new(1), BTreeMap::new());
        let e = route(&org, post, 1, &clock, &mut report, &mut ev, &mut sick).unwrap_err();
        assert_eq!(e.path, theirs, "{e}");
        assert!(e.to_string().contains("another file by this name"), "{e}");
        assert!(store.message_path("manager", Folder::Pending, "m1").exists(), "the entry waits");
        assert_eq!(std::fs::read_to_string(&theirs).unwrap(), "someone else's file");

        let report = pass(&org, Post::local(&store), 2);
        // The one delivery is the bounce to the sender.
        assert_eq!((report.delivered, report.dead), (1, 1), "{report:?}");
        assert_eq!(std::fs::read_dir(theirs.parent().unwrap()).unwrap().count(), 1, "nothing else for planner");
        assert_eq!(std::fs::read_to_string(&theirs).unwrap(), "someone else's file");
        assert!(!store.message_path("manager", Folder::Pending, "m1").exists());
    }

    /// Local mail is delivered as a hard link of the outbox entry, which moves to sent.
    #[test]
    fn local_mail_is_delivered_and_sent() {
        let (_d, org) = org();
        let store = org.mail();
        store.send_now("manager", &msg("m1", "manager", &["planner"])).unwrap();
        let report = pass(&org, Post::local(&store), 1);
        assert_eq!(report.delivered, 1, "{report:?}");
        assert!(store.message_path("planner", Folder::Unread, "m1").exists());
        assert!(store.message_path("manager", Folder::Sent, "m1").exists());
        use std::os::unix::fs::MetadataExt;
        let ino = |p: std::path::PathBuf| std::fs::metadata(p).unwrap().ino();
        assert_eq!(
            ino(store.message_path("planner", Folder::Unread, "m1")),
            ino(store.message_path("manager", Folder::Sent, "m1"))
        );
    }
}
