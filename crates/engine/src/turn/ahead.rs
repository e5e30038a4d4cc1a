//! Read ahead: the unread mail of the agents the pick comes to next, read on
//! a thread of its own while the pick builds the prompts of the agents
//! before them and their models answer. Listing an inbox and reading its
//! files is most of what the pick costs; with a second core, the turn no
//! longer waits for it. The pick parses what was read: the thread's share
//! was the larger one, and the two threads now take about as long.
//!
//! The thread reads an agent's mail a little before the pick comes to it.
//! What lands in that inbox in between waits for the next turn, as mail that
//! lands just after the pick does: a receipt for mail an agent of an earlier
//! part of the turn read (a large turn applies its replies in parts, while
//! the other calls go on), or a message a person put there by hand. Nothing
//! read is lost or read twice: the turn moves to `cur/` only the mail that
//! was in a prompt.
//!
//! The thread hands its reads over a few agents at a time
//! ([`Ahead::AGENTS`]), so that the two threads seldom wake each other, and
//! stays at most two such handfuls ahead, so that the mail in memory stays
//! bounded. It stops when the pick no longer wants its reads (the turn
//! ended early).

use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::JoinHandle;

use crate::error::PathError;
use crate::mailbox::{BadFile, Files, FsMailStore, MailStore};
use crate::message::Message;

/// An agent's unread mail, as [`MailStore::unread`] returns it.
type Unread = Result<(Vec<Message>, Vec<BadFile>), PathError>;

/// An agent's unread files, as the thread read them.
type Read = Result<Files, PathError>;

/// The reads of the thread, in the order of the agents it was given.
#[derive(Default)]
pub(super) struct Ahead {
    reads: Option<Receiver<Vec<(String, Read)>>>,
    /// Reads taken from `reads` for agents the pick has not come to yet, the first last.
    taken: Vec<(String, Read)>,
    thread: Option<JoinHandle<()>>,
}

impl Ahead {
    /// How many agents' reads are handed over at once.
    const AGENTS: usize = 8;

    /// Starts reading the unread mail of `agents`, in this order (the pick's).
    /// Fewer than two agents are read by the pick itself.
    pub(super) fn start(mb: FsMailStore, agents: Vec<String>) -> Ahead {
        if agents.len() < 2 {
            return Ahead::default();
        }
        let (tx, rx) = sync_channel(1);
        let spawned = std::thread::Builder::new().name("lemming-read-ahead".into()).spawn(move || {
            for handful in agents.chunks(Ahead::AGENTS) {
                let reads = handful.iter().map(|agent| (agent.clone(), mb.unread_files(agent))).rev().collect();
                if tx.send(reads).is_err() {
                    // The pick is over.
                    return;
                }
            }
        });
        match spawned {
            Ok(thread) => Ahead { reads: Some(rx), taken: Vec::new(), thread: Some(thread) },
            Err(e) => {
                tracing::debug!(error = %e, "no thread to read mail ahead; the pick reads it");
                Ahead::default()
            }
        }
    }

    /// `agent`'s unread mail: as read ahead, or read now by `mb` when it was
    /// not (an agent the thread was not given, or no thread).
    pub(super) fn unread(&mut self, mb: &FsMailStore, agent: &str) -> Unread {
        loop {
            if self.taken.is_empty() {
                match self.reads.as_ref().map(Receiver::recv) {
                    Some(Ok(reads)) => self.taken = reads,
                    _ => return mb.unread(agent),
                }
            }
            match self.taken.pop() {
                // Read for an agent the pick passed by since (sick meanwhile): not wanted.
                Some((a, _)) if a.as_str() < agent => continue,
                Some((a, read)) if a == agent => return read.and_then(|files| mb.messages_of(files)),
                later => {
                    self.taken.extend(later);
                    return mb.unread(agent);
                }
            }
        }
    }
}

impl Drop for Ahead {
    fn drop(&mut self) {
        // The thread's next send fails, and it ends.
        self.reads = None;
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("the thread reading mail ahead panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::To;

    fn store(root: &std::path::Path, agents: &[&str]) -> FsMailStore {
        let mb = FsMailStore::new(root);
        for a in agents {
            mb.ensure(a).unwrap();
        }
        mb
    }

    /// Delivers a message to `to`, and returns its id.
    fn deliver(mb: &FsMailStore, to: &str, id: &str) -> String {
        let mut m = Message::parse(format!(r#"{{"id":"{id}","from":"ceo","to":"x","body":"hi"}}"#).as_bytes()).unwrap();
        m.to = To(vec![to.to_string()]);
        let mut b = crate::fsx::Batch::new();
        mb.deliver(&mut b, to, &m);
        b.commit(mb.root()).unwrap();
        m.id
    }

    fn ids(read: Unread) -> Vec<String> {
        read.unwrap().0.into_iter().map(|m| m.id).collect()
    }

    #[test]
    fn each_agent_gets_its_own_mail_whether_read_ahead_passed_over_or_not_given() {
        let tmp = tempfile::tempdir().unwrap();
        let agents = ["ann", "bob", "cat", "dan"];
        let mb = store(tmp.path(), &agents);
        let mine: Vec<String> = agents.iter().map(|a| deliver(&mb, a, &format!("m-{a}"))).collect();
        // The thread reads ann, bob and dan; the pick passes bob by and asks for cat, which it was not given.
        let mut ahead = Ahead::start(mb.clone(), vec!["ann".into(), "bob".into(), "dan".into()]);
        assert_eq!(ids(ahead.unread(&mb, "ann")), [mine[0].clone()]);
        assert_eq!(ids(ahead.unread(&mb, "cat")), [mine[2].clone()]);
        assert_eq!(ids(ahead.unread(&mb, "dan")), [mine[3].clone()]);
        // Past the thread's last agent, the pick reads for itself.
        let late = deliver(&mb, "ann", "m-ann-again");
        assert!(ids(ahead.unread(&mb, "ann")).contains(&late));
    }

    #[test]
    fn a_pick_that_stops_early_ends_the_thread() {
        let tmp = tempfile::tempdir().unwrap();
        let agents: Vec<String> = (0..50).map(|i| format!("a{i:02}")).collect();
        let names: Vec<&str> = agents.iter().map(String::as_str).collect();
        let mb = store(tmp.path(), &names);
        let mut ahead = Ahead::start(mb.clone(), agents.clone());
        assert!(ahead.unread(&mb, "a00").unwrap().0.is_empty());
        // Dropped with 49 reads not taken: the thread, blocked on a full channel, ends and is joined.
        drop(ahead);
    }
}
