//! Archive: with `archive_after_turns = N` in org.toml, the read mail of each
//! agent (`inbox/cur/`) written N or more turns ago moves to
//! `inbox/archive/`, in one group commit after the consume step. Nothing is
//! deleted; without the setting, no inbox is even listed.

use super::Turn;
use crate::error::PathError;
use crate::fsx::Batch;
use crate::name::AgentName;

impl Turn<'_> {
    /// Moves old read mail to the archive. An agent whose read mail cannot
    /// be listed keeps it there this turn (the next turn tries again).
    pub(super) fn archive(&mut self) -> Result<(), PathError> {
        let Some(after) = self.org.settings.archive_after_turns else { return Ok(()) };
        let mut moves = Batch::new();
        for agent in self.org.folders_here() {
            if AgentName::new(&agent).is_err() || self.sick.contains_key(&agent) {
                continue;
            }
            match self.mb.archive_read(&mut moves, &agent, self.turn, after) {
                Ok(n) => self.report.archived += n,
                Err(e) => tracing::warn!(agent = %agent, error = %e, "cannot archive read mail; tried again next turn"),
            }
        }
        moves.commit(&self.org.layout.root)
    }
}
