//! The org lock (guarantee G6): one process runs turns for an org at a time.
//!
//! `org/state/lock` is held with `flock` for the life of the process that runs
//! turns, and holds its pid. The kernel releases it when the process dies, so a
//! kill -9 leaves no stale lock.
//!
//! Two more flocks let a backup copy the org between two turns beside a
//! running daemon: the turn lock (`org/state/turn.lock`), held by every turn
//! from its start to its commit and by a backup for its whole copy, and the
//! backup lock (`org/state/backup.lock`), held shared by a person's read that
//! moves mail and exclusively by a backup.

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

/// A held turn lock or backup lock (`org/state/turn.lock`,
/// `org/state/backup.lock`); released on drop, or by the kernel when the
/// process dies.
#[derive(Debug)]
pub struct Flock {
    _file: File,
    /// The lock file.
    pub path: PathBuf,
}

/// How often a turn that waits for the turn lock tries again.
pub const TURN_LOCK_POLL: std::time::Duration = std::time::Duration::from_millis(50);

fn open_flock(layout: &Layout, path: PathBuf) -> Result<(File, PathBuf), PathError> {
    let dir = layout.state_dir();
    fs::create_dir_all(&dir).with_path(&dir)?;
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).with_path(&path)?;
    Ok((file, path))
}

/// Takes `path` exclusively (`shared`: shared) without waiting: `None` while another holds it.
fn try_flock(layout: &Layout, path: PathBuf, shared: bool) -> Result<Option<Flock>, PathError> {
    let (file, path) = open_flock(layout, path)?;
    let got = if shared { file.try_lock_shared() } else { file.try_lock() };
    match got {
        Ok(()) => Ok(Some(Flock { _file: file, path })),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(PathError { path, source: e }),
    }
}

/// Takes `path`, waiting as long as another holds it; `on_wait` is told once
/// when it has to wait.
fn wait_flock(layout: &Layout, path: PathBuf, shared: bool, on_wait: impl FnOnce()) -> Result<Flock, PathError> {
    if let Some(held) = try_flock(layout, path.clone(), shared)? {
        return Ok(held);
    }
    on_wait();
    let (file, path) = open_flock(layout, path)?;
    let got = if shared { file.lock_shared() } else { file.lock() };
    got.with_path(&path)?;
    Ok(Flock { _file: file, path })
}

/// Takes the turn lock for one turn, from its start to its commit. While a
/// backup holds it the turn waits (said once in the log), trying again every
/// [`TURN_LOCK_POLL`] without blocking the runtime.
pub async fn turn(layout: &Layout) -> Result<Flock, PathError> {
    let mut told = false;
    loop {
        if let Some(held) = try_flock(layout, layout.turn_lock(), false)? {
            if told {
                tracing::info!("the backup is done; the turn starts");
            }
            return Ok(held);
        }
        if !told {
            tracing::info!(lock = %layout.turn_lock().display(), "waiting for a backup to finish before starting the turn");
            told = true;
        }
        tokio::time::sleep(TURN_LOCK_POLL).await;
    }
}

/// Takes the turn lock without waiting: `None` while a turn (or a backup) holds it.
pub fn try_turn(layout: &Layout) -> Result<Option<Flock>, PathError> {
    try_flock(layout, layout.turn_lock(), false)
}

/// Takes the turn lock for a backup, waiting for the turn in progress to
/// commit; `on_wait` is told once when it has to wait.
pub fn turn_for_backup(layout: &Layout, on_wait: impl FnOnce()) -> Result<Flock, PathError> {
    wait_flock(layout, layout.turn_lock(), false, on_wait)
}

/// Takes the backup lock exclusively (a backup), waiting for a person's
/// read in progress; people's reads then wait for the backup.
pub fn backup(layout: &Layout, on_wait: impl FnOnce()) -> Result<Flock, PathError> {
    wait_flock(layout, layout.backup_lock(), false, on_wait)
}

/// Takes the backup lock shared, for a person's read that moves mail to
/// `cur/`: reads go on together and beside turns, and wait only for a backup.
pub fn reading(layout: &Layout) -> Result<Flock, PathError> {
    wait_flock(layout, layout.backup_lock(), true, || {
        tracing::info!("waiting for a backup to finish before marking mail read");
    })
}

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

    // In real time: a process another test forks at that moment holds a
    // copy of the lock's descriptor until it execs, which on a busy machine
    // outlasts a second of paused time (twenty quick polls).
    #[tokio::test]
    async fn a_turn_waits_while_the_turn_lock_is_held_and_starts_once_it_is_released() {
        let d = tempfile::tempdir().unwrap();
        let l = Layout::new(d.path());
        let backup = try_turn(&l).unwrap().expect("a free lock");
        assert!(try_turn(&l).unwrap().is_none(), "a second holder while the first holds it");
        let waiting = tokio::time::timeout(TURN_LOCK_POLL * 6, turn(&l)).await;
        assert!(waiting.is_err(), "the turn took the lock while a backup held it");
        drop(backup);
        let held = tokio::time::timeout(std::time::Duration::from_secs(30), turn(&l)).await;
        assert!(held.unwrap().is_ok());
    }

    #[test]
    fn reads_share_the_backup_lock_and_a_backup_excludes_them() {
        let d = tempfile::tempdir().unwrap();
        let l = Layout::new(d.path());
        let (a, b) = (reading(&l).unwrap(), reading(&l).unwrap());
        assert!(try_flock(&l, l.backup_lock(), false).unwrap().is_none(), "a backup beside two reads");
        drop((a, b));
        let _backup = backup(&l, || panic!("nothing to wait for")).unwrap();
        assert!(try_flock(&l, l.backup_lock(), true).unwrap().is_none(), "a read during a backup");
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
