//! Running turns: `step` (N turns now, under the org lock). The org is loaded
//! afresh before every turn, so edits to any config take effect on the next one.

use std::path::Path;
use std::sync::Arc;

use crate::error::PathError;
use crate::lock::{self, LockError};
use crate::org::{LoadOrgError, Org};
use crate::turn::{self, TurnReport};

/// Why turns could not run.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// Another process holds the org lock.
    #[error(transparent)]
    Locked(#[from] LockError),
    /// The org's config is invalid.
    #[error(transparent)]
    Load(#[from] LoadOrgError),
    /// A file operation failed.
    #[error(transparent)]
    Io(#[from] PathError),
}

/// Runs `n` turns now. `on_turn` sees each report as it is committed.
pub async fn step(
    root: &Path,
    n: u64,
    mut on_turn: impl FnMut(&TurnReport, &Org),
) -> Result<Vec<TurnReport>, StepError> {
    let layout = crate::org::Layout::new(root);
    let _lock = lock::acquire(&layout)?;
    let mut reports = Vec::new();
    for _ in 0..n {
        let org = Org::load(root)?;
        let registry = Arc::new(org.registry());
        let report = turn::run(&org, &registry).await?;
        on_turn(&report, &org);
        reports.push(report);
    }
    Ok(reports)
}
