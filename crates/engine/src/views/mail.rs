//! Mail views: an agent's inbox (`lemming inbox`) and one conversation
//! across every inbox (a thread, `GET /api/threads/{id}`).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::status::Unreadable;
use super::ViewError;
use crate::error::PathError;
use crate::mailbox::{BadFile, MailRead};
use crate::message::Message;
use crate::org::{agent_folders, Org};
use crate::prompt;

/// A message as it stands in one inbox.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InboxMessage {
    /// The fields of the message file.
    #[serde(flatten)]
    pub message: Message,
    /// Still in `inbox/new/` (not yet read).
    pub unread: bool,
}

/// An inbox entry that is not a message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NotAMessage {
    /// Its file name, control characters escaped.
    pub file: String,
    /// Why it is not a message.
    pub error: String,
    /// In `inbox/new/` (moved to dead by the next turn that runs the agent,
    /// or by `lemming inbox` for a person) rather than among the read mail.
    pub unread: bool,
}

/// One agent's mail.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InboxView {
    /// Whose inbox.
    pub agent: String,
    /// The read mail (with `all`), oldest first, then the unread mail in the
    /// order a prompt shows it: urgent first, then oldest first.
    pub messages: Vec<InboxMessage>,
    /// Entries that are not messages.
    pub not_messages: Vec<NotAMessage>,
    /// Files or folders that could not be read; the rest is still shown.
    pub unreadable: Vec<Unreadable>,
}

impl InboxView {
    /// The ids of the unread messages shown (to mark them read).
    pub fn unread_ids(&self) -> Vec<String> {
        self.messages.iter().filter(|m| m.unread).map(|m| m.message.id.clone()).collect()
    }
}

/// An inbox as read: the view, and the unread entries that are not messages
/// as the mailbox needs them to move them to dead.
#[derive(Debug)]
pub struct Inbox {
    /// What is shown.
    pub view: InboxView,
    /// The entries of `inbox/new/` that are not messages (also in `view.not_messages`).
    pub bad: Vec<BadFile>,
}

fn read_or_note(read: Result<MailRead, PathError>) -> MailRead {
    read.unwrap_or_else(|e| MailRead { unreadable: vec![e], ..MailRead::default() })
}

fn unreadable(errors: Vec<PathError>) -> impl Iterator<Item = Unreadable> {
    errors.into_iter().map(|e| Unreadable { path: e.path, error: e.source.to_string() })
}

/// An agent's unread mail, and with `all` its read mail too. Reads only:
/// marking mail read and moving what is not a message to dead are the caller's.
pub fn inbox(org: &Org, agent: &str, all: bool) -> Result<Inbox, ViewError> {
    org.agent(agent)?;
    let mb = org.mail();
    let unread = read_or_note(mb.unread_skipping(agent));
    let mut view =
        InboxView { agent: agent.to_string(), messages: Vec::new(), not_messages: Vec::new(), unreadable: Vec::new() };
    view.unreadable.extend(unreadable(unread.unreadable));
    let not_message = |b: &BadFile, unread| NotAMessage { file: b.name(), error: b.error.to_string(), unread };
    view.not_messages.extend(unread.bad.iter().map(|b| not_message(b, true)));
    if all {
        let mut read = read_or_note(mb.read_mail_skipping(agent));
        view.unreadable.extend(unreadable(read.unreadable));
        view.not_messages.extend(read.bad.iter().map(|b| not_message(b, false)));
        read.messages.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        view.messages.extend(read.messages.into_iter().map(|message| InboxMessage { message, unread: false }));
    }
    let mut fresh = unread.messages;
    prompt::order(&mut fresh);
    view.messages.extend(fresh.into_iter().map(|message| InboxMessage { message, unread: true }));
    Ok(Inbox { view, bad: unread.bad })
}

/// A message of a thread.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThreadMessage {
    /// The fields of the message file.
    #[serde(flatten)]
    pub message: Message,
    /// How deep it sits in the tree of replies (0 for a message that answers
    /// none of the thread's messages).
    pub depth: usize,
    /// The recipients who have not read it yet.
    pub unread_by: Vec<String>,
}

/// One conversation: every delivered message of a thread, from every inbox.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThreadView {
    /// The thread's id (its first message's id).
    pub thread: String,
    /// The messages as a tree by `reply_to`, depth first: each message
    /// followed by its replies, siblings oldest first.
    pub messages: Vec<ThreadMessage>,
    /// Files or folders that could not be read; the rest is still shown.
    pub unreadable: Vec<Unreadable>,
}

/// The thread `id` names, or the thread of the message `id` names: its
/// messages from every agent's inbox, read or not, each once.
pub fn thread(org: &Org, id: &str) -> Result<ThreadView, ViewError> {
    let mb = org.mail();
    let mut found: BTreeMap<String, (Message, BTreeSet<String>)> = BTreeMap::new();
    let mut errors = Vec::new();
    for agent in agent_folders(&org.layout) {
        for (read, unread) in [(mb.unread_skipping(&agent), true), (mb.read_mail_skipping(&agent), false)] {
            let read = read_or_note(read);
            errors.extend(read.unreadable);
            for m in read.messages {
                let entry = found.entry(m.id.clone()).or_insert_with(|| (m, BTreeSet::new()));
                if unread {
                    entry.1.insert(agent.clone());
                }
            }
        }
    }
    let thread = found.get(id).map_or(id, |(m, _)| m.thread.as_str()).to_string();
    found.retain(|_, (m, _)| m.thread == thread);
    if found.is_empty() {
        return Err(ViewError::UnknownThread(id.to_string()));
    }
    let oldest_first = |a: &&Message, b: &&Message| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id));
    let mut replies: BTreeMap<&str, Vec<&Message>> = BTreeMap::new();
    let mut roots: Vec<&Message> = Vec::new();
    for (m, _) in found.values() {
        match m.reply_to.as_deref().filter(|r| found.contains_key(*r) && *r != m.id) {
            Some(parent) => replies.entry(parent).or_default().push(m),
            None => roots.push(m),
        }
    }
    roots.sort_by(oldest_first);
    replies.values_mut().for_each(|v| v.sort_by(oldest_first));
    // Depth first; a loop of replies with no way in is entered at its oldest message.
    let mut order: Vec<(&Message, usize)> = Vec::new();
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    let mut rest: Vec<&Message> = found.values().map(|(m, _)| m).collect();
    rest.sort_by(oldest_first);
    for start in roots.into_iter().chain(rest) {
        let mut stack = vec![(start, 0)];
        while let Some((m, depth)) = stack.pop() {
            if !seen.insert(m.id.as_str()) {
                continue;
            }
            order.push((m, depth));
            for r in replies.get(m.id.as_str()).into_iter().flatten().rev() {
                stack.push((r, depth + 1));
            }
        }
    }
    let messages = order
        .into_iter()
        .map(|(m, depth)| ThreadMessage {
            message: m.clone(),
            depth,
            unread_by: found[&m.id].1.iter().cloned().collect(),
        })
        .collect();
    Ok(ThreadView { thread, messages, unreadable: unreadable(errors).collect() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Priority;
    use crate::send::{send, SendOptions};
    use crate::views::testing::{deliver, org_after_one_turn};

    #[test]
    fn inbox_shows_unread_mail_urgent_first_and_read_mail_with_all() {
        let (dir, org) = org_after_one_turn();
        let mb = crate::org::Layout::new(dir.path()).mail();
        let first = mb.unread_skipping("human").unwrap().messages;
        assert_eq!(first.len(), 1, "the manager answered");
        mb.mark_read_now("human", &[first[0].id.clone()]).unwrap();
        let normal = send(&org, "manager", "human", "normal", SendOptions::default()).unwrap();
        deliver(&dir, "human", &normal);
        let urgent =
            send(&org, "manager", "human", "urgent", SendOptions { priority: Priority::Urgent, ..Default::default() })
                .unwrap();
        deliver(&dir, "human", &urgent);
        std::fs::write(dir.path().join("agents/human/inbox/new/junk.json"), "not a message").unwrap();

        let Inbox { view, bad } = inbox(&org, "human", false).unwrap();
        let ids: Vec<&str> = view.messages.iter().map(|m| m.message.id.as_str()).collect();
        assert_eq!(ids, [urgent.id.as_str(), normal.id.as_str()], "urgent first");
        assert!(view.messages.iter().all(|m| m.unread));
        assert_eq!(view.unread_ids(), [urgent.id.clone(), normal.id.clone()]);
        assert_eq!(bad.len(), 1);
        assert_eq!(view.not_messages.len(), 1);
        assert_eq!((view.not_messages[0].file.as_str(), view.not_messages[0].unread), ("junk.json", true));

        let all = inbox(&org, "human", true).unwrap().view;
        assert_eq!(all.messages.len(), 3);
        assert_eq!((all.messages[0].message.id.as_str(), all.messages[0].unread), (first[0].id.as_str(), false));
        let json = serde_json::to_value(&all.messages[0]).unwrap();
        assert_eq!(json["unread"], false);
        assert_eq!(json["id"], first[0].id.as_str(), "the message's fields sit beside `unread`");
        assert!(inbox(&org, "nobody", false).is_err());
    }

    #[test]
    fn a_thread_is_every_delivered_message_of_the_conversation_as_a_tree() {
        let (dir, org) = org_after_one_turn();
        let mb = crate::org::Layout::new(dir.path()).mail();
        let asked = mb.read_mail("manager").unwrap().pop().expect("the manager read the human's message");
        let answer = mb.unread_skipping("human").unwrap().messages.pop().expect("the manager answered");
        assert_eq!(answer.thread, asked.thread);
        let reply = SendOptions { reply_to: Some(answer.id.clone()), ..Default::default() };
        let again = send(&org, "human", "manager", "and then?", reply).unwrap();
        deliver(&dir, "manager", &again);
        let other = send(&org, "human", "manager", "another topic", SendOptions::default()).unwrap();
        deliver(&dir, "manager", &other);

        for by in [asked.thread.as_str(), again.id.as_str()] {
            let v = thread(&org, by).unwrap();
            assert_eq!(v.thread, asked.thread);
            let shape: Vec<(&str, usize)> = v.messages.iter().map(|m| (m.message.id.as_str(), m.depth)).collect();
            assert_eq!(shape, [(asked.id.as_str(), 0), (answer.id.as_str(), 1), (again.id.as_str(), 2)]);
            assert_eq!(v.messages[1].unread_by, ["human"]);
            assert_eq!(v.messages[2].unread_by, ["manager"]);
            assert!(v.messages[0].unread_by.is_empty());
        }
        let e = thread(&org, "no-such-id").unwrap_err();
        assert!(matches!(e, ViewError::UnknownThread(_)) && e.to_string().contains("no-such-id"), "{e}");
    }
}
