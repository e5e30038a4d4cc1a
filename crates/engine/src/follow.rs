//! Following what grows on disk, for people: new mail in an inbox (`lemming
//! inbox --follow`, `lemming chat`) and new runs in an activity log (`lemming
//! logs --follow`). One mechanism, [`Follow`]: a [`crate::watch::folder`]
//! watcher on the folder wakes the wait, and a periodic rescan covers lost
//! events, file systems that send none and folders that do not exist yet.
//! What is new is the [`Source`]'s business: [`Unread`] for an inbox,
//! [`crate::views::LogsFollow`] for an activity log (each run once, over
//! [`crate::activity::Tail`], which is a source of lines too).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::error::PathError;
use crate::mailbox::{FsMailStore, MailStore};
use crate::message::Message;
use crate::watch::{self, Watcher};

/// How often to rescan when no event came.
pub const POLL: Duration = Duration::from_millis(500);

/// Something that can be followed: each call returns what is new since the last.
pub trait Source {
    /// One new thing (a message, a log line).
    type Item;
    /// What is new since the last call, oldest first, without waiting.
    fn take(&mut self) -> Result<Vec<Self::Item>, PathError>;
}

/// A [`Source`] followed: woken by a watcher on one folder, rescanned every `poll`.
pub struct Follow<S> {
    source: S,
    rx: mpsc::UnboundedReceiver<()>,
    watcher: Option<Watcher>,
    poll: Duration,
}

impl<S: Source> Follow<S> {
    /// Follows `source`, whose changes show in the folder `dir` (watched when
    /// it exists and the platform allows; otherwise only rescanned).
    pub fn new(source: S, dir: &Path, poll: Duration) -> Follow<S> {
        Follow::watching(source, |tx| watch::folder(dir, tx), poll)
    }

    /// Follows `source`, woken by the watcher that `watch` starts (`None`:
    /// only rescanned).
    pub fn watching(
        source: S,
        watch: impl FnOnce(mpsc::UnboundedSender<()>) -> Option<Watcher>,
        poll: Duration,
    ) -> Follow<S> {
        let (tx, rx) = mpsc::unbounded_channel();
        let watcher = watch(tx);
        Follow { source, rx, watcher, poll }
    }

    /// What is new now, without waiting (see [`Source::take`]).
    pub fn take(&mut self) -> Result<Vec<S::Item>, PathError> {
        self.source.take()
    }

    /// Waits until the folder changes, or for the poll interval.
    pub async fn changed(&mut self) {
        if self.watcher.is_some() {
            tokio::select! {
                Some(()) = self.rx.recv() => {
                    while self.rx.try_recv().is_ok() {}
                }
                _ = tokio::time::sleep(self.poll) => {}
            }
        } else {
            tokio::time::sleep(self.poll).await;
        }
    }

    /// Waits for something new and returns it.
    pub async fn next(&mut self) -> Result<Vec<S::Item>, PathError> {
        loop {
            let fresh = self.take()?;
            if !fresh.is_empty() {
                return Ok(fresh);
            }
            self.changed().await;
        }
    }
}

/// The unread mail of one agent, each message returned once.
pub struct Unread {
    mb: FsMailStore,
    agent: String,
    seen: BTreeSet<String>,
}

impl Source for Unread {
    type Item = Message;

    /// The unread mail not returned before, oldest first. Entries that are
    /// not messages are left for the next turn (for the human's inbox,
    /// `lemming inbox`) to move to dead; files that cannot be read are passed
    /// over, so one never stops the rest.
    fn take(&mut self) -> Result<Vec<Message>, PathError> {
        let unread = self.mb.unread_skipping(&self.agent)?.messages;
        // Forget what was read meanwhile, so `seen` stays as small as the inbox.
        let present: BTreeSet<&str> = unread.iter().map(|m| m.id.as_str()).collect();
        self.seen.retain(|id| present.contains(id.as_str()));
        let fresh: Vec<Message> = unread.into_iter().filter(|m| !self.seen.contains(&m.id)).collect();
        self.seen.extend(fresh.iter().map(|m| m.id.clone()));
        Ok(fresh)
    }
}

/// New unread mail of one agent, woken by its inbox's `new/` folder.
pub type NewMail = Follow<Unread>;

impl Follow<Unread> {
    /// Starts watching `agent`'s inbox (creating its mailbox folders if they
    /// are missing). Mail already unread counts as new unless passed to
    /// [`NewMail::mark_seen`].
    pub fn start(root: &Path, agent: &str, poll: Duration) -> Result<NewMail, PathError> {
        let mb = crate::org::Layout::new(root).mail();
        mb.ensure(agent)?;
        let unread = Unread { mb: mb.clone(), agent: agent.to_string(), seen: BTreeSet::new() };
        Ok(Follow::watching(unread, |tx| mb.watch(agent, tx), poll))
    }

    /// Counts these messages as already returned.
    pub fn mark_seen(&mut self, ids: impl IntoIterator<Item = String>) {
        self.source.seen.extend(ids);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activity::Tail;

    fn append(p: &Path, text: &str) {
        use std::io::Write;
        std::fs::OpenOptions::new().create(true).append(true).open(p).unwrap().write_all(text.as_bytes()).unwrap();
    }

    #[tokio::test]
    async fn a_watched_log_wakes_the_follower_long_before_the_rescan() {
        let d = tempfile::tempdir().unwrap();
        let log = crate::activity::path(d.path(), "planner");
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        append(&log, "{\"old\":1}\n");
        let mut tail = Tail::new(d.path(), "planner");
        assert_eq!(tail.take().unwrap(), vec!["{\"old\":1}"]);
        // A rescan every minute: only the watcher can make this quick.
        let mut follow = Follow::new(tail, log.parent().unwrap(), Duration::from_secs(60));
        assert!(follow.watcher.is_some(), "the log's folder is watched");
        let writer = {
            let log = log.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                append(&log, "{\"new\":2}\n");
            })
        };
        let got = tokio::time::timeout(Duration::from_secs(10), follow.next()).await.expect("not woken").unwrap();
        assert_eq!(got, vec!["{\"new\":2}"]);
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn a_folder_that_does_not_exist_yet_is_rescanned() {
        let d = tempfile::tempdir().unwrap();
        let log = crate::activity::path(d.path(), "planner");
        let mut follow = Follow::new(Tail::new(d.path(), "planner"), log.parent().unwrap(), Duration::from_millis(20));
        assert!(follow.watcher.is_none(), "a missing folder cannot be watched");
        assert!(follow.take().unwrap().is_empty());
        let writer = {
            let log = log.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                std::fs::create_dir_all(log.parent().unwrap()).unwrap();
                append(&log, "{\"first\":1}\n");
            })
        };
        let got = tokio::time::timeout(Duration::from_secs(10), follow.next()).await.expect("not rescanned").unwrap();
        assert_eq!(got, vec!["{\"first\":1}"]);
        writer.await.unwrap();
    }
}
