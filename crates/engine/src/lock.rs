//! The org lock (guarantee G6): one process runs turns for an org at a time.
//!
//! `org/state/lock` is held with `flock` for the life of the process that runs
//! turns, and holds its pid. The kernel releases it when the process dies, so a
//! kill -9 leaves no stale lock.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;

use crate::error::{PathError, WithPath};
use crate::org::Layout;

/// A held org lock; released on drop.
#[derive(Debug)]
pub struct OrgLock {
    _file: File,
    /// The lock file.
    pub path: PathBuf,
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error("the org is locked by another lemming process{} ({})\n  help: stop it first (`lemming stop`, or kill {}), or use `lemming send`/`inbox`/`status`, which work alongside it", pid.map(|p| format!(" (pid {p})")).unwrap_or_default(), path.display(), pid.map(|p| p.to_string()).unwrap_or_else(|| "it".into()))]
    Held {
        /// The holder's pid, if it could be read.
        pid: Option<u32>,
        /// The lock file.
        path: PathBuf,
    },
    /// The lock file could not be opened.
    #[error(transparent)]
    Io(#[from] PathError),
}

/// Takes the org lock without waiting.
pub fn acquire(layout: &Layout) -> Result<OrgLock, LockError> {
    let path = layout.lock();
    let dir = layout.state_dir();
    fs::create_dir_all(&dir).with_path(&dir)?;
    let mut file =
        OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).with_path(&path)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Err(LockError::Held { pid: holder(layout), path }),
        Err(TryLockError::Error(e)) => return Err(LockError::Io(PathError { path, source: e })),
    }
    file.set_len(0).with_path(&path)?;
    file.seek(SeekFrom::Start(0)).with_path(&path)?;
    file.write_all(format!("{}\n", std::process::id()).as_bytes()).with_path(&path)?;
    Ok(OrgLock { _file: file, path })
}

/// The pid of the process holding the lock, if any. On Linux the kernel says
/// who holds the flock (`/proc/locks`), so a pid left in the file by a killed
/// process, and perhaps reused since, is never taken for the holder. Elsewhere
/// the pid written in the file is used when that process is alive. Reading
/// never takes the lock, so it cannot make a starting `step` fail.
pub fn holder(layout: &Layout) -> Option<u32> {
    if let Some(kernel) = flock_holder(&layout.lock()) {
        return kernel;
    }
    last_pid(layout).filter(|pid| pid_alive(*pid))
}

/// The pid written in the lock file: the last process that took the lock,
/// which may have exited (or released it) since. Only [`holder`] says who holds it.
pub fn last_pid(layout: &Layout) -> Option<u32> {
    let s = crate::fsx::read_small(&layout.lock(), 64).ok()??;
    std::str::from_utf8(&s).ok()?.trim().parse().ok()
}

/// `Some(holder)` when `/proc/locks` can be read; `None` when it cannot.
fn flock_holder(path: &std::path::Path) -> Option<Option<u32>> {
    use std::os::unix::fs::MetadataExt;
    let locks = fs::read_to_string("/proc/locks").ok()?;
    let Ok(meta) = fs::metadata(path) else { return Some(None) };
    let dev = meta.dev();
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let id = format!("{major:02x}:{minor:02x}:{}", meta.ino());
    // "1: FLOCK  ADVISORY  WRITE 1234 fd:00:5678 0 EOF" (waiters start with "->").
    let holder = locks.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.get(1) == Some(&"FLOCK") && f.get(5) == Some(&id.as_str())).then(|| f.get(4)?.parse().ok()).flatten()
    });
    Some(holder)
}

pub use crate::process::pid_alive;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_acquire_names_the_holder_and_drop_releases() {
        let d = tempfile::tempdir().unwrap();
        let l = Layout::new(d.path());
        let held = acquire(&l).unwrap();
        match acquire(&l) {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected Held, got {other:?}"),
        }
        assert_eq!(holder(&l), Some(std::process::id()));
        drop(held);
        assert_eq!(holder(&l), None, "the pid left in the file is not a holder");
        assert!(acquire(&l).is_ok());
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn an_exited_child_not_yet_reaped_is_not_alive() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Wait for it to exit without reaping it: it is a zombie until `wait`.
        let mut zombie = false;
        for _ in 0..500 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next()) == Some("Z") {
                zombie = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(zombie, "`true` did not exit within 5 s");
        assert!(!pid_alive(pid));
        child.wait().unwrap();
        assert!(pid_alive(std::process::id()));
    }
}
