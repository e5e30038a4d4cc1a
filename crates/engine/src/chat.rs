//! A person's conversation with agents (`lemming chat`): send a line, then
//! wait for the replies in its thread. When a daemon runs, waiting is watching
//! the person's inbox; when none does, [`Conversation::wait`] runs the turns
//! itself ([`crate::daemon::step`]) until a reply comes or the org has nothing
//! left to do.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use crate::clock::Sources;
use crate::daemon::{self, StepError};
use crate::follow::{self, NewMail};
use crate::message::Message;
use crate::org::{Layout, Org};
use crate::send::{self, SendError, SendOptions};
use crate::views::{self, AgentState};

/// How long to wait for a reply.
#[derive(Debug, Clone)]
pub struct WaitOptions {
    /// The longest wait for a daemon (or another process running turns) to answer.
    pub timeout: Duration,
    /// The most turns to run when no daemon runs.
    pub max_turns: u64,
    /// How often to rescan the inbox when no filesystem event came.
    pub poll: Duration,
    /// The time, ids and bus of the turns run here when no daemon runs:
    /// subscribe to `sources.bus` to see their events as they happen (the
    /// pieces of a streaming reply among them).
    pub sources: Sources,
}

impl Default for WaitOptions {
    fn default() -> WaitOptions {
        WaitOptions { timeout: Duration::from_secs(60), max_turns: 20, poll: follow::POLL, sources: Sources::real() }
    }
}

/// What the wait is doing, for a progress line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A daemon with this pid runs the turns; waiting for it.
    Daemon(u32),
    /// No daemon runs; this turn was just run here.
    Stepped(u64),
    /// Another process (a `lemming step`) holds the org lock; waiting for it.
    Locked,
}

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A reply to the message came.
    Answered,
    /// Turns were run until none had anything left to do (or the turn limit
    /// was reached), and no reply came.
    Ended,
    /// The timeout passed while someone else ran the turns.
    TimedOut,
}

/// What a wait found.
#[derive(Debug, Clone)]
pub struct Waited {
    /// Unread replies in the conversation's threads, oldest first: the answer,
    /// and late replies to earlier messages. Not yet marked read.
    pub replies: Vec<Message>,
    /// How it ended.
    pub outcome: Outcome,
}

/// The messages a person sent in one conversation, to recognise the replies.
#[derive(Debug, Clone)]
pub struct Conversation {
    me: String,
    ids: BTreeSet<String>,
    threads: BTreeSet<String>,
}

impl Conversation {
    /// A conversation of the agent `me` (usually `human`).
    pub fn new(me: &str) -> Conversation {
        Conversation { me: me.to_string(), ids: BTreeSet::new(), threads: BTreeSet::new() }
    }

    /// Sends `body` to `to` (see [`send::send`]) as a new thread of this conversation.
    pub fn send(&mut self, org: &Org, to: &str, body: &str) -> Result<Message, SendError> {
        let msg = send::send(org, &self.me, to, body, SendOptions::default())?;
        self.ids.insert(msg.id.clone());
        self.threads.insert(msg.thread.clone());
        Ok(msg)
    }

    /// Whether a message belongs to this conversation: in one of its threads, or a reply to one of its messages.
    pub fn has(&self, m: &Message) -> bool {
        self.threads.contains(&m.thread) || m.reply_to.as_ref().is_some_and(|r| self.ids.contains(r))
    }

    /// Waits for a reply to `sent` in `me`'s inbox. With a daemon running it
    /// watches the inbox for up to `opts.timeout`; with none it runs turns
    /// (taking the org lock for each) until a reply comes, until a turn leaves
    /// no agent with unread mail to work on and no outbox with mail to route,
    /// or for `opts.max_turns` turns. The replies are returned unread: mark
    /// them read with [`Conversation::mark_read`] once they are shown.
    pub async fn wait(
        &self,
        root: &Path,
        sent: &Message,
        opts: &WaitOptions,
        mut progress: impl FnMut(Progress),
    ) -> Result<Waited, StepError> {
        let layout = Layout::new(root);
        let mut mail = NewMail::start(root, &self.me, opts.poll)?;
        let mut replies: Vec<Message> = Vec::new();
        let deadline = Instant::now() + opts.timeout;
        let mut turns = 0u64;
        let mut quiet = false;
        loop {
            replies.extend(mail.take()?.into_iter().filter(|m| self.has(m)));
            let outcome = if replies.iter().any(|m| m.thread == sent.thread || m.reply_to.as_ref() == Some(&sent.id)) {
                Some(Outcome::Answered)
            } else if quiet || turns >= opts.max_turns {
                Some(Outcome::Ended)
            } else {
                None
            };
            if let Some(outcome) = outcome {
                return Ok(Waited { replies, outcome });
            }
            if let Some(pid) = daemon::daemon_pid(&layout) {
                progress(Progress::Daemon(pid));
                if Instant::now() >= deadline {
                    return Ok(Waited { replies, outcome: Outcome::TimedOut });
                }
                tokio::select! {
                    _ = mail.changed() => {}
                    _ = tokio::time::sleep_until(deadline) => {}
                }
                continue;
            }
            let mut waiting = Ok(true);
            match daemon::step_with(root, 1, &opts.sources, |_, org| waiting = work_waiting(org)).await {
                Ok(reports) => {
                    turns += 1;
                    quiet = !waiting?;
                    if let Some(r) = reports.last() {
                        progress(Progress::Stepped(r.turn));
                    }
                }
                Err(StepError::Locked(_)) => {
                    // A `lemming step` (or a daemon starting up) runs turns; let it.
                    progress(Progress::Locked);
                    if Instant::now() >= deadline {
                        return Ok(Waited { replies, outcome: Outcome::TimedOut });
                    }
                    mail.changed().await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Marks shown replies read (moves them to `inbox/cur/`), durably, after
    /// the read receipts their senders asked for are delivered (as `lemming
    /// inbox` does).
    pub fn mark_read(&self, root: &Path, replies: &[Message]) -> Result<(), crate::error::PathError> {
        let org = Org::load_or_last_good(root, None);
        crate::send::mark_read(&org, &self.me, replies, &crate::clock::Sources::real()).map(|_| ())
    }
}

/// Whether a next turn has something to do: mail to route, or an agent
/// (not a person) with unread mail and credits to work on it.
fn work_waiting(org: &Org) -> Result<bool, StepError> {
    let s = views::status(org)?;
    Ok(s.agents.iter().any(|a| a.pending > 0 || matches!(a.state, AgentState::Ready | AgentState::Failing)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: &str, thread: &str, reply_to: Option<&str>) -> Message {
        let mut m = Message::parse(
            serde_json::json!({"id": id, "from": "manager", "to": "human", "body": "b", "thread": thread,
                "created_at": "2026-01-01T00:00:00Z"})
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        m.reply_to = reply_to.map(String::from);
        m
    }

    #[test]
    fn a_reply_belongs_by_thread_or_by_reply_to() {
        let mut c = Conversation::new("human");
        c.ids.insert("a1".into());
        c.threads.insert("a1".into());
        assert!(c.has(&msg("r1", "a1", None)), "same thread");
        assert!(c.has(&msg("r2", "other", Some("a1"))), "answers our message in another thread");
        assert!(!c.has(&msg("r3", "other", Some("zz"))), "not ours");
        assert!(!c.has(&msg("r4", "other", None)), "not ours");
    }
}
