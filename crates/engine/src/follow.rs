//! Waiting for new mail in an inbox, for people (`lemming inbox --follow`,
//! `lemming chat`): a [`crate::watch::folder`] watcher on the inbox's `new/`
//! folder wakes the wait, and a periodic rescan covers lost events and file
//! systems that send none.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::error::PathError;
use crate::mailbox::{FsMailStore, MailStore};
use crate::message::Message;
use crate::watch::Watcher;

/// How often to rescan when no event came.
pub const POLL: Duration = Duration::from_millis(500);

/// New unread mail of one agent, each message returned once.
pub struct NewMail {
    mb: FsMailStore,
    agent: String,
    seen: BTreeSet<String>,
    rx: mpsc::UnboundedReceiver<()>,
    watcher: Option<Watcher>,
    poll: Duration,
}

impl NewMail {
    /// Starts watching `agent`'s inbox (creating its mailbox folders if they
    /// are missing). Mail already unread counts as new unless passed to
    /// [`NewMail::mark_seen`].
    pub fn start(root: &Path, agent: &str, poll: Duration) -> Result<NewMail, PathError> {
        let mb = crate::org::Layout::new(root).mail();
        mb.ensure(agent)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let watcher = mb.watch(agent, tx);
        Ok(NewMail { mb, agent: agent.to_string(), seen: BTreeSet::new(), rx, watcher, poll })
    }

    /// Counts these messages as already returned.
    pub fn mark_seen(&mut self, ids: impl IntoIterator<Item = String>) {
        self.seen.extend(ids);
    }

    /// The unread mail not returned before, oldest first, without waiting.
    /// Entries that are not messages are left for the next turn (for the
    /// human's inbox, `lemming inbox`) to move to dead; files that cannot be
    /// read are passed over, so one never stops the rest.
    pub fn take(&mut self) -> Result<Vec<Message>, PathError> {
        let unread = self.mb.unread_skipping(&self.agent)?.messages;
        // Forget what was read meanwhile, so `seen` stays as small as the inbox.
        let present: BTreeSet<&str> = unread.iter().map(|m| m.id.as_str()).collect();
        self.seen.retain(|id| present.contains(id.as_str()));
        let fresh: Vec<Message> = unread.into_iter().filter(|m| !self.seen.contains(&m.id)).collect();
        self.seen.extend(fresh.iter().map(|m| m.id.clone()));
        Ok(fresh)
    }

    /// Waits until the inbox changes, or for the poll interval.
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

    /// Waits for new mail and returns it (see [`NewMail::take`]).
    pub async fn next(&mut self) -> Result<Vec<Message>, PathError> {
        loop {
            let fresh = self.take()?;
            if !fresh.is_empty() {
                return Ok(fresh);
            }
            self.changed().await;
        }
    }
}
