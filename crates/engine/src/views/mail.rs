//! Mail views: an agent's inbox (`lemming inbox`) and one conversation
//! across every mailbox (a thread, `lemming thread`, `GET /api/threads/{id}`).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::status::Unreadable;
use super::ViewError;
use crate::error::PathError;
use crate::mailbox::{BadFile, Folder, MailRead, Place, State};
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
    /// Read and moved to `inbox/archive/` (`archive_after_turns`).
    pub archived: bool,
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
    /// The read mail (with `all`, archived mail included), oldest first, then the unread mail in the
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

/// An agent's unread mail, and with `all` its read mail too (archived or
/// not). Reads only:
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
        let mut old = Vec::new();
        for (read, archived) in [(mb.read_mail_skipping(agent), false), (mb.archive_skipping(agent), true)] {
            let read = read_or_note(read);
            view.unreadable.extend(unreadable(read.unreadable));
            view.not_messages.extend(read.bad.iter().map(|b| not_message(b, false)));
            old.extend(read.messages.into_iter().map(|message| InboxMessage { message, unread: false, archived }));
        }
        old.sort_by(|a, b| a.message.created_at.cmp(&b.message.created_at).then(a.message.id.cmp(&b.message.id)));
        view.messages.extend(old);
    }
    let mut fresh = unread.messages;
    prompt::order(&mut fresh);
    view.messages.extend(fresh.into_iter().map(|message| InboxMessage { message, unread: true, archived: false }));
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
    /// The id of the message of the thread it answers (none at depth 0).
    pub parent: Option<String>,
    /// The recipients who have not read it yet.
    pub unread_by: Vec<String>,
    /// Every place it is in: whose inbox (unread, read, archived), whose
    /// outbox (sent), or the dead letters.
    pub places: Vec<Place>,
}

impl ThreadMessage {
    /// Whether every inbox copy is archived (and there is one).
    pub fn archived(&self) -> bool {
        let inbox = |p: &&Place| matches!(p.state, State::Unread | State::Read | State::Archived);
        let mut copies = self.places.iter().filter(inbox).peekable();
        copies.peek().is_some() && copies.all(|p| p.state == State::Archived)
    }
}

/// One conversation: every message of a thread, from every mailbox.
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
/// messages from every agent's inbox (unread, read and archived), sent mail
/// and the dead letters, each once.
///
/// The message `id` names is looked up by its file name; then only the files
/// that hold the thread's id among their bytes are parsed (a message of the
/// thread names it in its `thread` field, or holds escapes that the test
/// lets through too).
pub fn thread(org: &Org, id: &str) -> Result<ThreadView, ViewError> {
    // Ids name files: one that breaks the id rule names none (and no path is built from it).
    if !crate::message::valid_id(id) {
        return Err(ViewError::UnknownThread(id.to_string()));
    }
    let mb = org.mail();
    let agents = agent_folders(&org.layout);
    let named = agents
        .iter()
        .find_map(|a| {
            [Folder::Unread, Folder::Read, Folder::Archive, Folder::Sent, Folder::Pending]
                .into_iter()
                .find_map(|f| mb.find(a, f, id).ok().flatten())
        })
        .or_else(|| mb.dead_message(id));
    let thread = named.map_or_else(|| id.to_string(), |m| m.thread);
    // A message is UTF-8 (one that is not does not parse): the search is std's.
    let keep =
        |bytes: &[u8]| std::str::from_utf8(bytes).is_ok_and(|t| t.contains(thread.as_str()) || t.contains("\\u"));
    let scanned = mb.scan(&agents, true, &keep);
    let found: BTreeMap<&str, &crate::mailbox::Located> =
        scanned.messages.iter().filter(|(_, l)| l.message.thread == thread).map(|(k, l)| (k.as_str(), l)).collect();
    if found.is_empty() {
        return Err(ViewError::UnknownThread(id.to_string()));
    }
    let messages: Vec<&Message> = found.values().map(|l| &l.message).collect();
    let messages = tree(&messages)
        .into_iter()
        .map(|(m, depth, parent)| {
            let l = found[m.id.as_str()];
            ThreadMessage {
                message: m.clone(),
                depth,
                parent: parent.map(str::to_string),
                unread_by: l.agents(State::Unread),
                places: l.places.clone(),
            }
        })
        .collect();
    Ok(ThreadView { thread, messages, unreadable: unreadable(scanned.unreadable).collect() })
}

/// Messages as a tree by `reply_to`, depth first: each with its depth and
/// the id of the message it answers among them; siblings oldest first
/// (by `created_at`, then id). A loop of replies with no way in is entered
/// at its oldest message.
pub fn tree<'a>(messages: &[&'a Message]) -> Vec<(&'a Message, usize, Option<&'a str>)> {
    let ids: BTreeSet<&str> = messages.iter().map(|m| m.id.as_str()).collect();
    let oldest_first = |a: &&Message, b: &&Message| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id));
    let mut replies: BTreeMap<&str, Vec<&Message>> = BTreeMap::new();
    let mut roots: Vec<&Message> = Vec::new();
    for m in messages {
        match m.reply_to.as_deref().filter(|r| ids.contains(*r) && *r != m.id) {
            Some(parent) => replies.entry(parent).or_default().push(m),
            None => roots.push(m),
        }
    }
    roots.sort_by(oldest_first);
    replies.values_mut().for_each(|v| v.sort_by(oldest_first));
    let mut order = Vec::new();
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    let mut rest: Vec<&Message> = messages.to_vec();
    rest.sort_by(oldest_first);
    for start in roots.into_iter().chain(rest) {
        let mut stack = vec![(start, 0, None)];
        while let Some((m, depth, parent)) = stack.pop() {
            if !seen.insert(m.id.as_str()) {
                continue;
            }
            order.push((m, depth, parent));
            for r in replies.get(m.id.as_str()).into_iter().flatten().rev() {
                stack.push((r, depth + 1, Some(m.id.as_str())));
            }
        }
    }
    order
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
        // A message that spells its thread with an escape is in it too.
        let escaped = Message { id: "20990101T000000000Z-esc".into(), reply_to: None, ..again.clone() };
        let text = String::from_utf8(escaped.to_bytes()).unwrap();
        let t = &asked.thread;
        let second = t[1..].chars().next().unwrap();
        let text = text.replace(
            &format!("\"thread\": \"{t}"),
            &format!("\"thread\": \"{}\\u{:04x}{}", &t[..1], second as u32, &t[2..]),
        );
        assert!(!text.contains(asked.thread.as_str()), "the thread's id is not in the bytes: {text}");
        std::fs::write(dir.path().join("agents/manager/inbox/new/20990101T000000000Z-esc.json"), text).unwrap();
        let v = thread(&org, &asked.thread).unwrap();
        assert!(v.messages.iter().any(|m| m.message.id == escaped.id), "the escaped thread is read as it parses");
        let e = thread(&org, "no-such-id").unwrap_err();
        assert!(matches!(e, ViewError::UnknownThread(_)) && e.to_string().contains("no-such-id"), "{e}");
        // A path is no id: it names no thread.
        for bad in ["../x", "../../etc/passwd", "a/b", ""] {
            assert!(matches!(thread(&org, bad), Err(ViewError::UnknownThread(_))), "{bad}");
        }
    }

    /// Archived mail, mail only in an outbox's sent mail and dead letters are
    /// in the thread too, each once with its places; `inbox --all` shows
    /// archived mail as such.
    #[test]
    fn a_thread_and_an_inbox_see_the_archive_the_sent_mail_and_the_dead_letters() {
        let (dir, org) = org_after_one_turn();
        let mb = org.mail();
        let asked = mb.read_mail("manager").unwrap().pop().unwrap();
        let answer = mb.unread_skipping("human").unwrap().messages.pop().unwrap();
        let mut b = crate::fsx::Batch::new();
        assert_eq!(mb.archive_read(&mut b, "manager", 9, 1).unwrap(), 1);
        b.commit(dir.path()).unwrap();
        // A reply whose only copy is the sender's sent mail, and one that died.
        let reply = |body: &str, id: &str| Message {
            id: id.into(),
            body: body.into(),
            reply_to: Some(answer.id.clone()),
            created_at: answer.created_at + chrono::Duration::seconds(if id.ends_with('1') { 1 } else { 2 }),
            ..asked.clone()
        };
        let sent_only = reply("sent, never delivered", "20990101T000000000Z-r1");
        std::fs::write(mb.message_path("human", Folder::Sent, &sent_only.id), sent_only.to_bytes()).unwrap();
        let died = reply("refused", "20990101T000000000Z-r2");
        std::fs::write(mb.letter_path(&died.id), died.to_bytes()).unwrap();
        // Another conversation is not in this one.
        let other = send(&org, "human", "manager", "another topic", SendOptions::default()).unwrap();
        deliver(&dir, "manager", &other);

        // A dead letter's id names its thread too.
        assert_eq!(thread(&org, &died.id).unwrap().thread, asked.thread);
        let v = thread(&org, &answer.id).unwrap();
        let shape: Vec<(&str, usize, Option<&str>)> =
            v.messages.iter().map(|m| (m.message.id.as_str(), m.depth, m.parent.as_deref())).collect();
        assert_eq!(
            shape,
            [
                (asked.id.as_str(), 0, None),
                (answer.id.as_str(), 1, Some(asked.id.as_str())),
                (sent_only.id.as_str(), 2, Some(answer.id.as_str())),
                (died.id.as_str(), 2, Some(answer.id.as_str())),
            ]
        );
        let places = |i: usize| -> Vec<(Option<&str>, State)> {
            v.messages[i].places.iter().map(|p| (p.agent.as_deref(), p.state)).collect()
        };
        assert_eq!(places(0), [(Some("human"), State::Sent), (Some("manager"), State::Archived)]);
        assert!(v.messages[0].archived() && !v.messages[1].archived());
        assert_eq!(places(2), [(Some("human"), State::Sent)]);
        assert_eq!(places(3), [(None, State::Dead)]);
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["messages"][0]["places"][1], serde_json::json!({"agent": "manager", "state": "archived"}));
        assert_eq!(json["messages"][1]["parent"], asked.id.as_str());
        assert_eq!(json["messages"][3]["places"][0], serde_json::json!({"state": "dead"}));

        let all = inbox(&org, "manager", true).unwrap().view;
        let shown: Vec<(&str, bool, bool)> =
            all.messages.iter().map(|m| (m.message.id.as_str(), m.unread, m.archived)).collect();
        assert_eq!(shown, [(asked.id.as_str(), false, true), (other.id.as_str(), true, false)]);
        assert_eq!(serde_json::to_value(&all.messages[0]).unwrap()["archived"], true);
        assert_eq!(inbox(&org, "manager", false).unwrap().view.messages.len(), 1, "unread only");
        // The message browser sees the archive too.
        let row = crate::views::message(&org, &asked.id).unwrap();
        assert_eq!((row.archived_by.clone(), row.read_by.clone()), (vec!["manager".to_string()], vec![]));
        let listed = crate::views::messages(&org, &Default::default()).unwrap();
        let listed = listed.messages.iter().find(|r| r.message.id == asked.id).unwrap();
        assert_eq!(listed.archived_by, ["manager"]);
    }

    #[test]
    fn the_tree_enters_a_loop_of_replies_at_its_oldest_message() {
        let (_dir, org) = org_after_one_turn();
        let base = org.mail().read_mail("manager").unwrap().pop().unwrap();
        let at = |id: &str, reply_to: &str, s: i64| Message {
            id: id.into(),
            reply_to: Some(reply_to.into()),
            created_at: base.created_at + chrono::Duration::seconds(s),
            ..base.clone()
        };
        let (a, b, c) = (at("a", "c", 2), at("b", "a", 3), at("c", "b", 1));
        let order: Vec<(&str, usize)> = tree(&[&a, &b, &c]).into_iter().map(|(m, d, _)| (m.id.as_str(), d)).collect();
        assert_eq!(order, [("c", 0), ("a", 1), ("b", 2)]);
    }
}
