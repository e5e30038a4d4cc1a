//! Sending as a person (`lemming send`, `lemming chat`): check the names and
//! the org chart, build the message, and write it durably into the sender's
//! outbox (G1). The next turn routes it.

use crate::chart::Denial;
use crate::error::PathError;
use crate::journal::Journal;
use crate::mailbox::Folder;
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

/// Checks that `from` and `to` are agents and that the chart lets `from` write
/// to `to`. [`send`] does this too; callers that must read the body first (from
/// stdin) call it before, so a wrong name fails at once.
pub fn check(org: &Org, from: &str, to: &str) -> Result<(), SendError> {
    org.agent(from)?;
    org.agent(to)?;
    org.chart().check(from, to).map_err(|denial| {
        let r = org.chart().reachable(from);
        SendError::Denied {
            denial,
            from: from.to_string(),
            reachable: if r.is_empty() { "nobody".into() } else { r.join(", ") },
        }
    })
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
        ack_required: false,
    };
    let size = msg.to_bytes().len() as u64;
    if size > org.settings.max_message_bytes {
        return Err(SendError::TooLarge { size, limit: org.settings.max_message_bytes });
    }
    mb.send_now(from, &msg)?;
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
