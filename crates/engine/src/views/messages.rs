//! The message browser's views (`GET /api/messages`, `GET /api/messages/{id}`):
//! every message the org holds, once each, from every inbox (unread, read
//! and archived) and every outbox's sent mail, with who has read it.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::status::Unreadable;
use super::ViewError;
use crate::mailbox::{Folder, State};
use crate::message::{self, Message};
use crate::org::{agent_folders, Org};

/// The most messages one page holds.
pub const MAX_LIMIT: usize = 500;

/// The messages a page holds when no limit is asked for.
pub const DEFAULT_LIMIT: usize = 50;

/// A message, and where it is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessageRow {
    /// The fields of the message file.
    #[serde(flatten)]
    pub message: Message,
    /// The recipients who have it unread (`inbox/new/`).
    pub unread_by: Vec<String>,
    /// The recipients who have read it (`inbox/cur/`).
    pub read_by: Vec<String>,
    /// The recipients who have read it and archived it (`inbox/archive/`).
    pub archived_by: Vec<String>,
}

/// Which messages a page shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageQuery {
    /// Only messages from or to this agent.
    pub agent: Option<String>,
    /// Only this thread (a thread id, or the id of any of its messages).
    pub thread: Option<String>,
    /// Only messages whose subject or body holds this text (case-insensitive).
    pub q: Option<String>,
    /// At most this many ([`DEFAULT_LIMIT`] when not given, at most [`MAX_LIMIT`]).
    pub limit: Option<usize>,
    /// Only messages older than this one (its id): the next page.
    pub before: Option<String>,
}

/// One page of messages.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessagesView {
    /// Newest first (by `created_at`, then id).
    pub messages: Vec<MessageRow>,
    /// The `before` that asks for the next page, when there are more.
    pub next_before: Option<String>,
    /// Files or folders that could not be read; the rest is still shown.
    pub unreadable: Vec<Unreadable>,
}

/// Why a query cannot be answered.
#[derive(Debug, thiserror::Error)]
pub enum MessageQueryError {
    /// `limit` is 0 or more than [`MAX_LIMIT`].
    #[error("limit must be 1 to {MAX_LIMIT}, not {0}")]
    Limit(usize),
    /// An id (`before`, `thread`, or one message's) breaks the id rule.
    #[error("{0:?} is not a message id: ids use only A-Z, a-z, 0-9, '_', '.', '-' (at most 128 bytes, starting with a letter or digit)")]
    BadId(String),
    /// No message has this id.
    #[error("no message with the id `{0}` in any mailbox\n  help: GET /api/messages lists them")]
    UnknownMessage(String),
    /// The agent, or the whole view, failed.
    #[error(transparent)]
    View(#[from] ViewError),
}

/// Every message once, by id, with who holds it unread, read or archived.
struct AllMail {
    by_id: BTreeMap<String, Located>,
    unreadable: Vec<Unreadable>,
}

type Located = (Message, BTreeSet<String>, BTreeSet<String>, BTreeSet<String>);

fn all_mail(org: &Org) -> AllMail {
    let scanned = org.mail().scan(&agent_folders(&org.layout), false, &|_| true);
    let by_id = scanned
        .messages
        .into_iter()
        // The browser shows mail that was routed: one still waiting in an
        // outbox is not shown until it is.
        .filter(|(_, l)| l.places.iter().any(|p| p.state != State::Pending))
        .map(|(id, l)| {
            let by = |state| l.agents(state).into_iter().collect::<BTreeSet<String>>();
            let (unread, read, archived) = (by(State::Unread), by(State::Read), by(State::Archived));
            (id, (l.message, unread, read, archived))
        })
        .collect();
    let unreadable =
        scanned.unreadable.into_iter().map(|e| Unreadable { path: e.path, error: e.source.to_string() }).collect();
    AllMail { by_id, unreadable }
}

fn row((message, unread, read, archived): Located) -> MessageRow {
    MessageRow {
        message,
        unread_by: unread.into_iter().collect(),
        read_by: read.into_iter().collect(),
        archived_by: archived.into_iter().collect(),
    }
}

fn check_id(id: &str) -> Result<(), MessageQueryError> {
    if message::valid_id(id) {
        Ok(())
    } else {
        Err(MessageQueryError::BadId(id.to_string()))
    }
}

/// One page of the org's messages, as `query` asks.
pub fn messages(org: &Org, query: &MessageQuery) -> Result<MessagesView, MessageQueryError> {
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(MessageQueryError::Limit(limit));
    }
    if let Some(a) = &query.agent {
        if !org.broken.contains_key(a.as_str()) {
            org.agent(a).map_err(ViewError::from)?;
        }
    }
    for id in query.before.iter().chain(&query.thread) {
        check_id(id)?;
    }
    let AllMail { mut by_id, unreadable } = all_mail(org);
    let before = match &query.before {
        Some(id) => {
            let (m, ..) = by_id.get(id).ok_or_else(|| MessageQueryError::UnknownMessage(id.clone()))?;
            Some((m.created_at, m.id.clone()))
        }
        None => None,
    };
    let thread = query.thread.as_ref().map(|t| by_id.get(t).map_or(t.clone(), |(m, ..)| m.thread.clone()));
    let needle = query.q.as_ref().map(|q| q.to_lowercase()).filter(|q| !q.is_empty());
    by_id.retain(|_, (m, unread, read, archived)| {
        // An agent's mail: what it sent, and what reached its inbox (by name, a group or `*`).
        let holds = |a: &String| unread.contains(a) || read.contains(a) || archived.contains(a);
        query.agent.as_ref().is_none_or(|a| m.from == *a || m.to.0.contains(a) || holds(a))
            && thread.as_ref().is_none_or(|t| m.thread == *t)
            && needle.as_ref().is_none_or(|q| {
                m.body.to_lowercase().contains(q) || m.subject.as_ref().is_some_and(|s| s.to_lowercase().contains(q))
            })
            && before.as_ref().is_none_or(|b| (m.created_at, &m.id) < (b.0, &b.1))
    });
    let mut rows: Vec<MessageRow> = by_id.into_values().map(row).collect();
    rows.sort_by(|a, b| (b.message.created_at, &b.message.id).cmp(&(a.message.created_at, &a.message.id)));
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next_before = if more { rows.last().map(|r| r.message.id.clone()) } else { None };
    Ok(MessagesView { messages: rows, next_before, unreadable })
}

/// The message `id`, wherever it is.
pub fn message(org: &Org, id: &str) -> Result<MessageRow, MessageQueryError> {
    check_id(id)?;
    if let Some(found) = by_file_name(org, id) {
        return Ok(found);
    }
    // A message in a file named otherwise (written into an outbox by hand)
    // is found by reading every mailbox.
    let mut all = all_mail(org);
    all.by_id.remove(id).map(row).ok_or_else(|| MessageQueryError::UnknownMessage(id.to_string()))
}

/// The message `id` from the files its id names in every mailbox (delivery
/// names them so): a look in four folders per agent rather than a read of
/// every message (the dashboard asks for each message as it is delivered).
fn by_file_name(org: &Org, id: &str) -> Option<MessageRow> {
    let mb = org.mail();
    let (mut found, mut unread, mut read, mut archived) = (None, BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for agent in agent_folders(&org.layout) {
        for folder in [Folder::Unread, Folder::Read, Folder::Archive, Folder::Sent] {
            let Some(m) = mb.find(&agent, folder, id).ok().flatten() else { continue };
            match folder {
                Folder::Unread => unread.insert(agent.clone()),
                Folder::Read => read.insert(agent.clone()),
                Folder::Archive => archived.insert(agent.clone()),
                _ => false,
            };
            found.get_or_insert(m);
        }
    }
    found.map(|m| row((m, unread, read, archived)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::send::{send, SendOptions};
    use crate::views::testing::{deliver, org_after_one_turn};

    fn ids(v: &MessagesView) -> Vec<&str> {
        v.messages.iter().map(|r| r.message.id.as_str()).collect()
    }

    #[test]
    fn every_message_once_newest_first_filtered_and_paged() {
        let (dir, org) = org_after_one_turn();
        let mb = org.mail();
        let asked = mb.read_mail("manager").unwrap().pop().unwrap();
        let answer = mb.unread_skipping("human").unwrap().messages.pop().unwrap();
        // A message still waiting in an outbox is not shown; one delivered is.
        let waiting = send(&org, "human", "manager", "not routed yet", SendOptions::default()).unwrap();
        let reply =
            SendOptions { reply_to: Some(answer.id.clone()), subject: Some("Budget".into()), ..Default::default() };
        let again = send(&org, "human", "manager", "And THEN?", reply).unwrap();
        deliver(&dir, "manager", &again);
        std::fs::remove_file(mb.message_path("human", crate::mailbox::Folder::Pending, &again.id)).unwrap();

        let all = messages(&org, &MessageQuery::default()).unwrap();
        assert!(!ids(&all).contains(&waiting.id.as_str()));
        assert_eq!(ids(&all)[..], [again.id.as_str(), answer.id.as_str(), asked.id.as_str()]);
        let first = &all.messages[2];
        assert_eq!((first.read_by.clone(), first.unread_by.clone()), (vec!["manager".to_string()], vec![]));
        assert_eq!(all.messages[1].unread_by, ["human"]);
        assert_eq!(all.next_before, None);

        let q = |f: fn(&mut MessageQuery)| {
            let mut q = MessageQuery::default();
            f(&mut q);
            messages(&org, &q).unwrap()
        };
        assert_eq!(ids(&q(|q| q.q = Some("then".into()))), [again.id.as_str()]);
        assert_eq!(ids(&q(|q| q.q = Some("budget".into()))), [again.id.as_str()], "the subject is searched");
        assert_eq!(q(|q| q.agent = Some("planner".into())).messages.len(), 0);
        assert_eq!(q(|q| q.agent = Some("manager".into())).messages.len(), 3);
        let by_thread =
            messages(&org, &MessageQuery { thread: Some(answer.id.clone()), ..Default::default() }).unwrap();
        assert_eq!(by_thread.messages.len(), 3, "a message's id names its thread");
        let page = q(|q| q.limit = Some(2));
        assert_eq!(ids(&page).len(), 2);
        assert_eq!(page.next_before.as_deref(), Some(answer.id.as_str()));
        let next = messages(&org, &MessageQuery { before: page.next_before.clone(), ..Default::default() }).unwrap();
        assert_eq!(ids(&next), [asked.id.as_str()]);

        let one = message(&org, &answer.id).unwrap();
        assert_eq!(one.message, answer);
        let json = serde_json::to_value(&one).unwrap();
        assert_eq!(json["id"], answer.id.as_str());
        assert_eq!(json["unread_by"][0], "human");
    }

    /// One message is found by the files its id names, with the same row as
    /// the list shows; one only in a file named by hand is found too.
    #[test]
    fn one_message_by_its_file_name_or_by_reading_every_mailbox() {
        let (dir, org) = org_after_one_turn();
        let all = messages(&org, &MessageQuery::default()).unwrap();
        for r in &all.messages {
            let one = message(&org, &r.message.id).unwrap();
            assert_eq!((&one.message, &one.unread_by, &one.read_by), (&r.message, &r.unread_by, &r.read_by));
        }
        let mut m = all.messages[0].message.clone();
        m.id = "20260101T000000000Z-human-by-hand".into();
        m.thread = m.id.clone();
        std::fs::write(dir.path().join("agents/human/outbox/sent/my-note.json"), m.to_bytes()).unwrap();
        assert_eq!(message(&org, &m.id).unwrap().message, m);
    }

    #[test]
    fn bad_queries_say_what_is_wrong() {
        let (_dir, org) = org_after_one_turn();
        let q = |q: MessageQuery| messages(&org, &q).unwrap_err();
        assert!(matches!(q(MessageQuery { limit: Some(0), ..Default::default() }), MessageQueryError::Limit(0)));
        assert!(matches!(q(MessageQuery { limit: Some(501), ..Default::default() }), MessageQueryError::Limit(501)));
        assert!(matches!(
            q(MessageQuery { agent: Some("nobody".into()), ..Default::default() }),
            MessageQueryError::View(ViewError::UnknownAgent(_))
        ));
        assert!(matches!(
            q(MessageQuery { before: Some("../x".into()), ..Default::default() }),
            MessageQueryError::BadId(_)
        ));
        assert!(matches!(
            q(MessageQuery { before: Some("nope".into()), ..Default::default() }),
            MessageQueryError::UnknownMessage(_)
        ));
        assert!(matches!(message(&org, "a/b"), Err(MessageQueryError::BadId(_))));
        assert!(matches!(message(&org, "nope"), Err(MessageQueryError::UnknownMessage(_))));
    }
}
