//! Filesystem events for the daemon. The notify callback only classifies a
//! path and forwards it into a channel; debouncing and scanning happen in the
//! daemon's async loop, and a periodic rescan covers lost events (and file
//! systems such as NFS that send none).

use std::path::{Component, Path};

use tokio::sync::mpsc;

/// What a filesystem event means to the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A file landed in some `agents/*/outbox/new/`: wake for an early turn.
    Outbox,
    /// A config file (or an agent folder) changed: reload.
    Config,
}

/// Classifies a path inside the org.
pub fn classify(root: &Path, path: &Path) -> Option<Change> {
    let rel = path.strip_prefix(root).ok()?;
    let parts: Vec<&str> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect();
    match parts.as_slice() {
        parts if crate::mailbox::is_pending_entry(parts) => Some(Change::Outbox),
        ["agents", _, "resume.toml"]
        | ["agents", _]
        | ["org", "org.toml"]
        | ["org", "models.toml"]
        | ["org", "state", "paused"] => Some(Change::Config),
        _ => None,
    }
}

/// A running watcher; dropping it stops the events.
pub struct Watcher {
    _inner: notify::RecommendedWatcher,
}

/// Watches `agents/` and `org/` of the org. Returns `None` (and the daemon
/// relies on its rescan) when the platform gives no watcher.
pub fn start(root: &Path, tx: mpsc::UnboundedSender<Change>) -> Option<Watcher> {
    use notify::{RecursiveMode, Watcher as _};
    let base = root.to_path_buf();
    let mut w = match notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            if matches!(ev.kind, notify::EventKind::Access(_)) {
                return;
            }
            for p in &ev.paths {
                if let Some(c) = classify(&base, p) {
                    let _ = tx.send(c);
                }
            }
        }
    }) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "no filesystem watcher; relying on the periodic rescan");
            return None;
        }
    };
    for dir in [root.join("agents"), root.join("org")] {
        if let Err(e) = w.watch(&dir, RecursiveMode::Recursive) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch; relying on the periodic rescan");
        }
    }
    Some(Watcher { _inner: w })
}

/// Watches one folder (not its subfolders) and sends `()` on every change in
/// it, for people who wait on an inbox. Returns `None` when the platform gives
/// no watcher or the folder cannot be watched; callers then poll.
pub fn folder(dir: &Path, tx: mpsc::UnboundedSender<()>) -> Option<Watcher> {
    use notify::{RecursiveMode, Watcher as _};
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok_and(|ev| !matches!(ev.kind, notify::EventKind::Access(_))) {
            let _ = tx.send(());
        }
    })
    .map_err(|e| tracing::debug!(error = %e, "no filesystem watcher; polling"))
    .ok()?;
    w.watch(dir, RecursiveMode::NonRecursive)
        .map_err(|e| tracing::debug!(dir = %dir.display(), error = %e, "cannot watch; polling"))
        .ok()?;
    Some(Watcher { _inner: w })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_outbox_and_config_paths() {
        let r = Path::new("/org");
        assert_eq!(classify(r, Path::new("/org/agents/human/outbox/new/x.json")), Some(Change::Outbox));
        assert_eq!(classify(r, Path::new("/org/agents/human/outbox/tmp/x.json.1.tmp")), None);
        assert_eq!(classify(r, Path::new("/org/agents/human/inbox/new/x.json")), None);
        assert_eq!(classify(r, Path::new("/org/agents/planner/resume.toml")), Some(Change::Config));
        assert_eq!(classify(r, Path::new("/org/org/models.toml")), Some(Change::Config));
        assert_eq!(classify(r, Path::new("/org/org/state/turn.json")), None);
    }
}
