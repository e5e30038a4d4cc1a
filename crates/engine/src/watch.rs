//! Filesystem events for the daemon. The watcher only classifies a path and
//! forwards it into a channel; debouncing and scanning happen in the
//! daemon's async loop, and a periodic rescan covers lost events (and file
//! systems such as NFS that send none).
//!
//! On Linux the daemon's watcher is inotify itself, read by a task of the
//! daemon's runtime, on the folders the caller names only (not every folder
//! of the org), and for changes only. notify's inotify backend also asks for
//! an event on every open, of files and of folders: each turn lists every
//! outbox and inbox, so an idle daemon woke its watcher thread for hundreds
//! of events per turn that it then threw away, and paid for them in the
//! kernel on every open.

use std::path::Path;

use tokio::sync::mpsc;

/// A running watcher; dropping it stops the events.
pub struct Watcher {
    _notify: Option<notify::RecommendedWatcher>,
    #[cfg(target_os = "linux")]
    _task: Option<linux::Task>,
}

impl Watcher {
    fn notify(w: notify::RecommendedWatcher) -> Watcher {
        Watcher {
            _notify: Some(w),
            #[cfg(target_os = "linux")]
            _task: None,
        }
    }
}

/// Watches the folders under `agents/` and `org/` of the org that `watched`
/// accepts (given each folder's path; `agents/` and `org/` themselves must be
/// accepted for anything to be watched), and sends what `classify` makes of
/// each path that is created, written, moved or removed in them (nothing for
/// `None`). A folder created later is watched when `watched` accepts it, and
/// the files already in it are sent as if they had just come. Returns `None`
/// (and the daemon relies on its rescan) when the platform gives no watcher.
///
/// Call it from within a tokio runtime: on Linux the events are read by a
/// task of it. Outside one, and on other platforms, notify watches the two
/// folders recursively and `watched` is not used.
pub fn start<T: Send + 'static>(
    root: &Path,
    tx: mpsc::UnboundedSender<T>,
    watched: impl Fn(&Path) -> bool + Send + 'static,
    classify: impl Fn(&Path) -> Option<T> + Send + 'static,
) -> Option<Watcher> {
    #[cfg(target_os = "linux")]
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        match linux::start(&rt, root, tx.clone(), Box::new(watched), Box::new(classify)) {
            Ok(task) => return Some(Watcher { _notify: None, _task: Some(task) }),
            Err((e, classify)) => {
                tracing::warn!(error = %e, "no inotify watcher; trying notify's");
                return start_notify(root, tx, classify);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = watched;
    start_notify(root, tx, classify)
}

/// [`start`] through notify: `agents/` and `org/`, recursively.
fn start_notify<T: Send + 'static>(
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
    Some(Watcher::notify(w))
}

#[cfg(target_os = "linux")]
mod linux {
    //! The daemon's watcher on Linux: inotify on the chosen folders, read by
    //! a task of the runtime.

    use std::collections::HashMap;
    use std::ffi::OsString;
    use std::path::{Path, PathBuf};

    use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
    use tokio::io::unix::AsyncFd;
    use tokio::sync::mpsc;

    /// Which folders to watch.
    pub(super) type Watched = Box<dyn Fn(&Path) -> bool + Send>;
    /// What a path means to the caller.
    pub(super) type Classify<T> = Box<dyn Fn(&Path) -> Option<T> + Send>;

    /// Changes only: no open, no read, no close of a file only read.
    const MASK: WatchMask = WatchMask::CREATE
        .union(WatchMask::MOVED_TO)
        .union(WatchMask::MOVED_FROM)
        .union(WatchMask::DELETE)
        .union(WatchMask::CLOSE_WRITE)
        .union(WatchMask::ATTRIB)
        .union(WatchMask::ONLYDIR);

    /// The task that reads the events; it stops when dropped.
    pub(super) struct Task(tokio::task::JoinHandle<()>);

    impl Drop for Task {
        fn drop(&mut self) {
            self.0.abort();
        }
    }

    /// The watched folders, by watch.
    struct Tree<T> {
        watches: Watches,
        dirs: HashMap<WatchDescriptor, PathBuf>,
        watched: Watched,
        classify: Classify<T>,
        tx: mpsc::UnboundedSender<T>,
    }

    impl<T> Tree<T> {
        /// Watches `dir` if it is wanted, and the wanted folders in it. With
        /// `announce`, what is already in them is sent (a folder that was
        /// just created may have been filled before its watch existed).
        fn add(&mut self, dir: &Path, announce: bool) {
            if !(self.watched)(dir) {
                return;
            }
            match self.watches.add(dir, MASK) {
                Ok(wd) => {
                    self.dirs.insert(wd, dir.to_path_buf());
                }
                Err(e) => {
                    // Gone already, or the watch limit: the rescan covers it.
                    tracing::debug!(dir = %dir.display(), error = %e, "cannot watch; relying on the periodic rescan");
                    return;
                }
            }
            let Ok(entries) = std::fs::read_dir(dir) else { return };
            for e in entries.flatten() {
                let path = e.path();
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    self.add(&path, announce);
                } else if announce {
                    self.send(&path);
                }
            }
        }

        /// Stops watching `dir` and the folders under it (moved away).
        fn remove(&mut self, dir: &Path) {
            let gone: Vec<WatchDescriptor> =
                self.dirs.iter().filter(|(_, p)| p.starts_with(dir)).map(|(wd, _)| wd.clone()).collect();
            for wd in gone {
                self.dirs.remove(&wd);
                let _ = self.watches.remove(wd);
            }
        }

        fn send(&self, path: &Path) {
            if let Some(c) = (self.classify)(path) {
                let _ = self.tx.send(c);
            }
        }

        /// Handles one event.
        fn event(&mut self, wd: &WatchDescriptor, mask: EventMask, name: Option<OsString>) {
            if mask.contains(EventMask::IGNORED) {
                self.dirs.remove(wd);
                return;
            }
            if mask.contains(EventMask::Q_OVERFLOW) {
                tracing::debug!("inotify's queue overflowed; the periodic rescan covers the lost events");
                return;
            }
            let (Some(dir), Some(name)) = (self.dirs.get(wd), name) else { return };
            let path = dir.join(name);
            if mask.contains(EventMask::ISDIR) {
                if mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
                    self.add(&path, true);
                } else if mask.contains(EventMask::MOVED_FROM) {
                    self.remove(&path);
                }
            }
            self.send(&path);
        }
    }

    /// Starts the watcher on `root`'s `agents/` and `org/`. On failure, the
    /// classifier comes back, for another watcher.
    pub(super) fn start<T: Send + 'static>(
        rt: &tokio::runtime::Handle,
        root: &Path,
        tx: mpsc::UnboundedSender<T>,
        watched: Watched,
        classify: Classify<T>,
    ) -> Result<Task, (std::io::Error, Classify<T>)> {
        let inotify = match Inotify::init() {
            Ok(i) => i,
            Err(e) => return Err((e, classify)),
        };
        let mut tree = Tree { watches: inotify.watches(), dirs: HashMap::new(), watched, classify, tx };
        // The runtime's reactor takes the descriptor: from within the runtime.
        let _entered = rt.enter();
        // SAFETY: the descriptor is the `Inotify`'s own, and it stays open
        // while registered: `Tree`'s `Watches` shares it, and `AsyncFd`
        // deregisters it before dropping its `Inotify`.
        let mut fd = match unsafe { AsyncFd::register(inotify) } {
            Ok(fd) => fd,
            Err(e) => return Err((e.into(), tree.classify)),
        };
        for top in ["agents", "org"] {
            tree.add(&root.join(top), false);
        }
        Ok(Task(rt.spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let mut ready = match fd.readable_mut().await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(error = %e, "the inotify watcher stopped; relying on the periodic rescan");
                        return;
                    }
                };
                let read = ready.try_io(|fd| {
                    let events = fd.get_mut().read_events(&mut buf)?;
                    Ok(events.map(|e| (e.wd, e.mask, e.name.map(|n| n.to_os_string()))).collect::<Vec<_>>())
                });
                match read {
                    // Nothing to read after all: wait again.
                    Err(_would_block) => continue,
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "the inotify watcher stopped; relying on the periodic rescan");
                        return;
                    }
                    Ok(Ok(events)) => {
                        for (wd, mask, name) in events {
                            tree.event(&wd, mask, name);
                        }
                        if tree.tx.is_closed() {
                            return;
                        }
                    }
                }
            }
        })))
    }
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
    Some(Watcher::notify(w))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;

    /// Every path the watcher reports, with folders under `agents/` one level deep watched only.
    fn watcher(root: &Path) -> (Watcher, mpsc::UnboundedReceiver<PathBuf>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let top = root.to_path_buf();
        let shallow = move |d: &Path| d.strip_prefix(&top).is_ok_and(|r| r.components().count() <= 2);
        let w = start(root, tx, shallow, |p| Some(p.to_path_buf())).expect("a watcher");
        (w, rx)
    }

    /// The paths reported within `wait`.
    async fn reported(rx: &mut mpsc::UnboundedReceiver<PathBuf>, wait: Duration) -> Vec<PathBuf> {
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(Some(p)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            // Made, then closed after writing: once is enough.
            if got.last() != Some(&p) {
                got.push(p);
            }
        }
        got
    }

    #[tokio::test]
    async fn changes_in_watched_folders_are_reported_and_reads_and_other_folders_are_not() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        for dir in ["agents/a/deep", "org"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        std::fs::write(root.join("agents/a/read.txt"), "x").unwrap();
        let (_w, mut rx) = watcher(root);
        // Reads and listings are not changes.
        std::fs::read(root.join("agents/a/read.txt")).unwrap();
        std::fs::read_dir(root.join("agents/a")).unwrap().for_each(drop);
        // Too deep: not watched.
        std::fs::write(root.join("agents/a/deep/x"), "x").unwrap();
        std::fs::write(root.join("org/org.toml"), "x").unwrap();
        let got = reported(&mut rx, Duration::from_millis(300)).await;
        assert_eq!(got, [root.join("org/org.toml")], "the write, nothing else");
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_folder_made_later_is_watched_and_what_it_already_holds_is_reported() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        for dir in ["agents", "org"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        let (_w, mut rx) = watcher(root);
        // Made and filled before the watcher can watch it.
        std::fs::create_dir_all(root.join("agents/b")).unwrap();
        std::fs::write(root.join("agents/b/early"), "x").unwrap();
        let got = reported(&mut rx, Duration::from_millis(300)).await;
        assert!(got.contains(&root.join("agents/b")), "{got:?}");
        assert!(got.contains(&root.join("agents/b/early")), "{got:?}");
        std::fs::write(root.join("agents/b/late"), "x").unwrap();
        let got = reported(&mut rx, Duration::from_millis(300)).await;
        assert_eq!(got, [root.join("agents/b/late")]);
    }
}
