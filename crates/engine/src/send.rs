//! Sending as a person (`lemming send`, `lemming chat`): check the names and
//! the org chart, build the message, and write it durably into the sender's
//! outbox (G1). The next turn routes it.

use crate::chart::Denial;
use crate::error::PathError;
use crate::journal::Journal;
use crate::mailbox::{Folder, MailStore};
use crate::message::{self, Kind, Message, Priority, To};
use crate::org::{Org, UnknownAgent};

/// What else goes into a message besides its sender, recipient and body.
#[derive(Debug, Clone, Default)]
pub struct SendOptions {
    /// Its priority.
    pub priority: Priority,
    /// The id of the message it answers; its thread is kept when that message is found.
    pub reply_to: Option<String>,
    /// A subject line.
    pub subject: Option<String>,
    /// Expire if not delivered within this many turns.
    pub ttl_turns: Option<u64>,
    /// Ask for a `receipt` from each recipient that reads it (`ack_required`).
    pub ack: bool,
    /// Where its time stamp and id come from.
    pub sources: crate::clock::Sources,
}

/// Why a message could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The sender or the recipient is not an agent of the org (the known ones are listed).
    #[error(transparent)]
    UnknownAgent(#[from] UnknownAgent),
    /// The org chart does not let the sender write to the recipient.
    #[error("{denial}\n  help: the org chart allows {from} to write to: {reachable}")]
    Denied {
        /// Why.
        denial: Denial,
        /// The sender.
        from: String,
        /// Whom the sender may write to, comma separated (or `nobody`).
        reachable: String,
    },
    /// `to` names a group that does not exist, or reaches nobody.
    #[error("{reason}\n  help: {from} may write to: {reachable}")]
    Unroutable {
        /// Why.
        reason: crate::address::Unroutable,
        /// The sender.
        from: String,
        /// Whom the sender may write to: agents and groups, comma separated (or `nobody`).
        reachable: String,
    },
    /// The sender runs on another node of the cluster: its outbox is routed there.
    #[error("{from} runs on node {node}, and this process is node {here}: its outbox is routed on node {node}\n  help: send from node {node} (--node {node} on the machine with its folder)")]
    Elsewhere {
        /// The sender.
        from: String,
        /// The node it runs on.
        node: String,
        /// This process's node.
        here: String,
    },
    /// `reply_to` is not a message id.
    #[error("reply_to {0:?} is not a message id")]
    BadReplyTo(String),
    /// The message file would be larger than `max_message_bytes`.
    #[error("the message is {size} bytes; the limit is {limit} (max_message_bytes in org/org.toml)")]
    TooLarge {
        /// Its size in bytes.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A file operation failed.
    #[error(transparent)]
    Io(#[from] PathError),
}

/// Checks that `from` is an agent and that `to` reaches someone: an agent the
/// chart lets `from` write to, a group (`@name`) with at least one member it
/// lets `from` write to (the others are refused one by one when the message
/// is routed, and bounced), or `*`. [`send`] does this too; callers that must
/// read the body first (from stdin) call it before, so a wrong name fails at once.
pub fn check(org: &Org, from: &str, to: &str) -> Result<(), SendError> {
    let sender = org.agent(from)?;
    if let (Some(node), Some(here)) = (org.node_of(sender), &org.here) {
        if node != here {
            return Err(SendError::Elsewhere { from: from.into(), node: node.into(), here: here.clone() });
        }
    }
    let chart = org.chart();
    let reachable = || {
        let mut r = chart.reachable(from);
        r.extend(reachable_groups(org, from).into_iter().map(|g| format!("@{g}")));
        if r.is_empty() {
            "nobody".to_string()
        } else {
            r.join(", ")
        }
    };
    let denied = |denial| SendError::Denied { denial, from: from.to_string(), reachable: reachable() };
    let written = To(vec![to.to_string()]);
    if !crate::address::is_broadcast(&written) {
        if let Err(e) = org.agent(to) {
            if org.broken.contains_key(to) || crate::name::AgentName::new(to).is_err() {
                return Err(e.into());
            }
            let message = format!(
                "unknown agent `{to}` ({}; groups: {}; or \"*\" for everyone {from} may write to)",
                chart.hint(to),
                crate::address::group_hint(to, &org.settings.groups).brief()
            );
            return Err(UnknownAgent { message }.into());
        }
        return chart.check(from, to).map_err(denied);
    }
    let recipients = org.recipients(from, &written).map_err(|reason| SendError::Unroutable {
        reason,
        from: from.to_string(),
        reachable: reachable(),
    })?;
    let mut first = None;
    for r in &recipients {
        match chart.check(from, &r.name) {
            Ok(()) => return Ok(()),
            Err(d) => {
                first.get_or_insert(d);
            }
        }
    }
    // A group none of whose members `from` may write to.
    match first {
        Some(d) => Err(denied(d)),
        None => Ok(()),
    }
}

/// The groups of which `from` may reach at least one member, in name order.
pub fn reachable_groups(org: &Org, from: &str) -> Vec<String> {
    if org.settings.groups.is_empty() {
        return Vec::new();
    }
    groups_within(org, &org.chart().reachable(from))
}

/// The groups with at least one member in `reach` (whom an agent may reach,
/// in name order, as [`crate::chart::Chart::reachable`] gives it), in name order.
pub fn groups_within(org: &Org, reach: &[String]) -> Vec<String> {
    let within = |m: &str| reach.binary_search_by(|r| r.as_str().cmp(m)).is_ok();
    org.settings
        .groups
        .iter()
        .filter(|(_, members)| members.iter().any(|m| within(m.as_str())))
        .map(|(g, _)| g.clone())
        .collect()
}

/// Sends `body` from `from` to `to`: the message is durable in `from`'s
/// `outbox/new/` when this returns (G1), and is routed by the next turn.
pub fn send(org: &Org, from: &str, to: &str, body: &str, opts: SendOptions) -> Result<Message, SendError> {
    check(org, from, to)?;
    let mb = org.mail();
    let thread = match &opts.reply_to {
        Some(id) => {
            if !message::valid_id(id) {
                return Err(SendError::BadReplyTo(id.clone()));
            }
            // Read, unread or archived, by the file its id names.
            let mut found = None;
            for folder in [Folder::Read, Folder::Unread, Folder::Archive] {
                if let Some(m) = mb.find(from, folder, id)? {
                    found = Some(m);
                    break;
                }
            }
            found.map(|m| m.thread).unwrap_or_else(|| id.clone())
        }
        None => String::new(),
    };
    let now = opts.sources.now();
    let id = opts.sources.ids.message_id(now, from);
    let msg = Message {
        thread: if thread.is_empty() { id.clone() } else { thread },
        id,
        from: from.to_string(),
        to: To(vec![to.to_string()]),
        subject: opts.subject,
        body: body.to_string(),
        priority: opts.priority,
        reply_to: opts.reply_to,
        created_at: now,
        turn: Journal::new(&org.layout).last_turn()?,
        ttl_turns: opts.ttl_turns,
        kind: Kind::Message,
        ack_required: opts.ack,
    };
    let size = msg.to_bytes().len() as u64;
    if size > org.settings.max_message_bytes {
        return Err(SendError::TooLarge { size, limit: org.settings.max_message_bytes });
    }
    mb.send_now(from, &msg)?;
    // The file is what counts (G1): the index only warns when it cannot follow.
    crate::index::sent(&org.layout, from, &msg);
    Ok(msg)
}

/// Moves the entries of a person's `inbox/new/` that are not messages to
/// dead now, durably, and appends their `dead` events (no turn reads a
/// person's inbox: `lemming inbox` does this as it reads it). Returns their
/// reasons, in the order of `bad`.
pub fn set_aside(
    org: &Org,
    agent: &str,
    bad: &[crate::mailbox::BadFile],
    src: &crate::clock::Sources,
) -> Result<Vec<crate::mailbox::DeadReason>, PathError> {
    use crate::events::{Event, EventKind, Events};
    if bad.is_empty() {
        return Ok(vec![]);
    }
    let turn = Journal::new(&org.layout).last_turn().unwrap_or_default();
    let whys = org.mail().dead_bad_now(agent, bad, turn, src.now())?;
    let mut ev = Events::new(turn);
    for why in &whys {
        ev.push(Event { seq: 0, turn: why.turn, at: why.at, kind: EventKind::from(why) });
    }
    ev.flush(&org.layout)?;
    Ok(whys)
}

/// Marks a person's unread `messages` read (`lemming inbox`): first the
/// receipts of those that asked for one are delivered to their senders,
/// durably, then the messages move to `inbox/cur/`. A receipt's id is derived
/// from the message and the reader, so reading again after a crash between
/// the two sends none twice. Returns the receipts delivered.
pub fn mark_read(
    org: &Org,
    agent: &str,
    messages: &[Message],
    src: &crate::clock::Sources,
) -> Result<Vec<Message>, PathError> {
    use crate::events::{Event, EventKind, Events};
    let mb = org.mail();
    let turn = Journal::new(&org.layout).last_turn().unwrap_or_default();
    let mut batch = crate::fsx::Batch::new();
    let mut sent = Vec::new();
    for m in messages {
        let Some(receipt) = message::receipt(m, agent, turn, src.now()) else { continue };
        let sender = receipt.to.0[0].as_str();
        let known = org.agents.contains_key(sender) || org.broken.contains_key(sender);
        if known && mb.is_local(sender) && mb.deliver(&mut batch, sender, &receipt) {
            sent.push(receipt);
        }
    }
    batch.commit(&org.layout.root)?;
    if !sent.is_empty() {
        let mut ev = Events::new(turn);
        for r in &sent {
            let kind = EventKind::Delivered { id: r.id.clone(), from: r.from.clone(), to: r.to.0[0].clone() };
            ev.push(Event { seq: 0, turn, at: r.created_at, kind });
        }
        ev.flush(&org.layout)?;
    }
    let ids: Vec<String> = messages.iter().map(|m| m.id.clone()).collect();
    mb.mark_read_now(agent, &ids)?;
    Ok(sent)
}
