//! Filesystem events for the daemon. The notify callback only classifies a
//! path and forwards it into a channel; debouncing and scanning happen in the
//! daemon's async loop, and a periodic rescan covers lost events (and file
//! systems such as NFS that send none).

use std::path::Path;

use tokio::sync::mpsc;

/// A running watcher; dropping it stops the events.
pub struct Watcher {
    _inner: notify::RecommendedWatcher,
}

/// Watches `agents/` and `org/` of the org, and sends what `classify` makes
/// of each path that changes (nothing for `None`). Returns `None` (and the
/// daemon relies on its rescan) when the platform gives no watcher.
pub fn start<T: Send + 'static>(
    root: &Path,
    tx: mpsc::UnboundedSender<T>,
    classify: impl Fn(&Path) -> Option<T> + Send + 'static,
) -> Option<Watcher> {
    use notify::{RecursiveMode, Watcher as _};
    let mut w = match notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            if matches!(ev.kind, notify::EventKind::Access(_)) {
                return;
            }
            for p in &ev.paths {
                if let Some(c) = classify(p) {
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
