//! Durable file operations: atomic writes and group commits (guarantees G1, G2).
//!
//! A single write ([`write_atomic`]) goes to a temporary file, is fsynced, renamed
//! into place, and the folder is fsynced. A [`Batch`] does the same for many
//! files with one filesystem sync per step instead of one per file: write every
//! temporary file, sync, rename them all, sync. No reader ever sees a partial
//! file, and when `commit` returns every file is durable. A turn may leave a
//! batch's last sync to the next one ([`Batch::commit_leaving`], [`Unsynced`]),
//! so that two steps share it.
//!
//! The single-file primitives (the atomic write, and reads that never follow a
//! link or block: [`read_entry`], [`read_small`], [`read_optional`],
//! [`open_regular`]) live in the `lemming-fs` crate, below the engine and the
//! providers, so that a provider's state file is written the same way; they
//! are re-exported here.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{PathError, WithPath};

pub use lemming_fs::{
    open_regular, read_entry, read_listed_entry, read_optional, read_small, sync_dir, tmp_path, tmp_pid, write_atomic,
    write_atomic_with, write_derived, write_tmp, Entry, EntryKind, FileId,
};

/// Removes temporary files left by processes that are gone (a crash mid-write).
///
/// lemming's temporary names end in `.<pid>.tmp`: those of live processes (a
/// concurrent `send`) are kept. Other programs may use `tmp/` too (write, then
/// rename into `new/`): their files are removed only when an hour old.
/// A folder is removed only when lemming named it (a hire's folder, made
/// whole before it is renamed into `agents/`) and its process is gone.
pub fn clean_stale_tmp(files: impl IntoIterator<Item = PathBuf>) {
    for p in files {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let pid = tmp_pid(name);
        let remove = match pid {
            Some(pid) => pid == std::process::id() || !crate::process::pid_alive(pid),
            None => fs::metadata(&p)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > std::time::Duration::from_secs(3600)),
        };
        if remove {
            let is_dir = fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir());
            if !is_dir {
                let _ = fs::remove_file(p);
            } else if pid.is_some_and(|pid| pid != std::process::id()) {
                let _ = fs::remove_dir_all(p);
            }
        }
    }
}

/// Flushes every dirty file of the filesystem that holds `root` (one `syncfs`).
pub fn sync_fs(root: &Path) -> Result<(), PathError> {
    let f = File::open(root).with_path(root)?;
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: syncfs only reads the descriptor, which `f` keeps open.
        let rc = unsafe { libc::syncfs(f.as_raw_fd()) };
        #[cfg(test)]
        group_syncs::count(root);
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).with_path(root);
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        f.sync_all().with_path(root)?;
        // Without syncfs there is no group flush: sync the whole tree's files is too costly,
        // so callers on other systems get per-file fsync through `Batch`.
        Ok(())
    }
}

/// Batches of at least this many operations are made durable with one
/// `syncfs` per step; smaller ones with an fsync of each file and folder.
pub const GROUP_SYNC_MIN: usize = 32;

/// A group of durable writes and moves, committed with one sync per step.
#[derive(Debug, Default)]
pub struct Batch {
    writes: Vec<(PathBuf, PathBuf, Vec<u8>)>,
    links: Vec<(PathBuf, PathBuf, Option<FileId>)>,
    /// From, to, and whether a source that is gone is fine (see [`Batch::rename_if_there`]).
    moves: Vec<(PathBuf, PathBuf, bool)>,
    removes: Vec<PathBuf>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Batch {
        Batch::default()
    }

    /// Queues an atomic write of `bytes` to `path`, through the folder `tmp_dir`.
    pub fn write(&mut self, tmp_dir: &Path, path: PathBuf, bytes: Vec<u8>) {
        let tmp = tmp_path(tmp_dir, &path);
        self.writes.push((tmp, path, bytes));
    }

    /// Queues a hard link of an existing durable file, made with the writes'
    /// renames (a link that exists already counts as done).
    pub fn link(&mut self, existing: PathBuf, new: PathBuf) {
        self.links.push((existing, new, None));
    }

    /// Queues a hard link like [`Batch::link`], of `existing` only if it is still
    /// the file `id` (the one that was read and checked): if the name was
    /// replaced meanwhile (by a symbolic link, say), the new link is removed
    /// again and the commit fails, so that nothing unchecked is ever linked.
    pub fn link_same(&mut self, existing: PathBuf, new: PathBuf, id: FileId) {
        self.links.push((existing, new, Some(id)));
    }

    /// Queues a rename, done after every write and link is durable.
    pub fn rename(&mut self, from: PathBuf, to: PathBuf) {
        self.moves.push((from, to, false));
    }

    /// Queues a rename like [`Batch::rename`] of a file that someone else may
    /// move or remove first (a person reading mail by hand): a source that is
    /// gone by then is passed over, at no cost to the others. This spares a
    /// look before every move.
    pub fn rename_if_there(&mut self, from: PathBuf, to: PathBuf) {
        self.moves.push((from, to, true));
    }

    /// Queues a removal, done with the renames.
    pub fn remove(&mut self, path: PathBuf) {
        self.removes.push(path);
    }

    /// How many operations are queued.
    pub fn len(&self) -> usize {
        self.writes.len() + self.links.len() + self.moves.len() + self.removes.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.links.is_empty() && self.moves.is_empty() && self.removes.is_empty()
    }

    /// Writes every file, syncs, renames them into place and makes the links,
    /// syncs, then does the queued moves and removals and syncs again. `root`
    /// names the filesystem.
    pub fn commit(self, root: &Path) -> Result<(), PathError> {
        let mut left = Unsynced::default();
        self.commit_leaving(root, &mut left)?;
        left.sync(root)
    }

    /// [`Batch::commit`] without the last sync: the operations of the last
    /// step are added to `left`, for a later sync to make durable with other
    /// work ([`Unsynced`]). What `left` held before is made durable by this
    /// batch's first sync: before its renames into place when it writes
    /// files, else before its moves and removals when it has any;
    /// otherwise `left` keeps it too.
    pub fn commit_leaving(self, root: &Path, left: &mut Unsynced) -> Result<(), PathError> {
        if self.is_empty() {
            return Ok(());
        }
        // A small batch syncs exactly its own files and folders; a large one
        // syncs the filesystem once per step (cheaper than hundreds of fsyncs,
        // but it also flushes other programs' dirty data). The folders to
        // sync are gathered only for a small batch: a large one's list would
        // be as long as the batch.
        let whole = self.len() >= GROUP_SYNC_MIN && cfg!(target_os = "linux");
        let parent = |p: &'_ PathBuf| -> PathBuf { p.parent().map(Path::to_path_buf).unwrap_or_default() };
        if !self.writes.is_empty() || !self.links.is_empty() {
            for (tmp, _, bytes) in &self.writes {
                write_tmp(tmp, bytes, !whole)?;
            }
            if !self.writes.is_empty() {
                // A small batch's files were fsynced one by one as they were written.
                left.add(whole, Vec::new);
                left.sync(root)?;
            }
            for (tmp, path, _) in &self.writes {
                fs::rename(tmp, path).with_path(path)?;
            }
            for (existing, new, id) in &self.links {
                match fs::hard_link(existing, new) {
                    Ok(()) => crate::fault::read_at_once(new),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => match id {
                        // Linked by an earlier, interrupted run: done. Any other
                        // file by that name is never taken for the message.
                        Some(id) if !same_file_at(new, *id)? => {
                            let e = std::io::Error::new(
                                std::io::ErrorKind::AlreadyExists,
                                format!("another file by this name is already there; {} was not delivered and is checked again on the next turn", existing.display()),
                            );
                            return Err(e).with_path(new);
                        }
                        _ => continue,
                    },
                    Err(e) => return Err(e).with_path(new),
                }
                if let Some(id) = id {
                    // A person may read (move or remove) the new link at once,
                    // as `lemming inbox` does: then the name it was made from
                    // tells what was linked.
                    let linked = match fs::symlink_metadata(new) {
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                            fs::symlink_metadata(existing).with_path(existing)?
                        }
                        r => r.with_path(new)?,
                    };
                    if !linked.file_type().is_file() || FileId::of(&linked) != *id {
                        let _ = fs::remove_file(new);
                        let e = std::io::Error::other(format!(
                            "{} was replaced while it was being routed; the new one is checked on the next turn",
                            existing.display()
                        ));
                        return Err(e).with_path(existing);
                    }
                }
            }
            crate::fault::point("batch_renamed");
            left.add(whole, || {
                self.writes.iter().map(|w| parent(&w.1)).chain(self.links.iter().map(|l| parent(&l.1))).collect()
            });
        }
        if !self.moves.is_empty() || !self.removes.is_empty() {
            // What the moves and removals may depend on (a dead letter's link
            // before the removal of its entry) is durable first.
            left.sync(root)?;
            for (from, to, optional) in &self.moves {
                match fs::rename(from, to) {
                    Ok(()) => {}
                    // Already moved by an earlier, interrupted run (idempotent), or by someone else.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound && (*optional || to.exists()) => {}
                    Err(e) => return Err(e).with_path(from),
                }
            }
            for p in &self.removes {
                match fs::remove_file(p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e).with_path(p),
                }
            }
            left.add(whole, || {
                let moved = self.moves.iter().flat_map(|(f, t, _)| [parent(f), parent(t)]);
                moved.chain(self.removes.iter().map(parent)).collect()
            });
        }
        Ok(())
    }
}

/// Whether `path` is the regular file `id` (a name that is gone is not).
fn same_file_at(path: &Path, id: FileId) -> Result<bool, PathError> {
    match fs::symlink_metadata(path) {
        Ok(m) => Ok(m.file_type().is_file() && FileId::of(&m) == id),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_path(path),
    }
}

/// Renames, links and removals that are done but not yet durable, left by
/// [`Batch::commit_leaving`] and [`Moves::leave`] so that two steps share a
/// sync. A crash (a power cut) may then keep any of them and lose others:
/// only for work that a repeated turn redoes from its journal.
#[derive(Debug, Default)]
pub struct Unsynced {
    /// Whether they are made durable with one `syncfs` (they were many).
    whole: bool,
    /// Otherwise, the folders to fsync.
    dirs: Vec<PathBuf>,
}

impl Unsynced {
    /// Whether nothing is left to sync.
    pub fn is_empty(&self) -> bool {
        !self.whole && self.dirs.is_empty()
    }

    /// Adds operations in the folders `dirs` (gathered only when they are
    /// few: `whole` says they are many).
    fn add(&mut self, whole: bool, dirs: impl FnOnce() -> Vec<PathBuf>) {
        if whole || self.whole {
            self.whole = true;
            self.dirs = Vec::new();
        } else {
            self.dirs.extend(dirs());
        }
    }

    /// Makes everything left durable now: one `syncfs` of the filesystem
    /// that holds `root` for many operations, an fsync of each folder for a few.
    pub fn sync(&mut self, root: &Path) -> Result<(), PathError> {
        let left = std::mem::take(self);
        if left.whole {
            sync_fs(root)
        } else {
            sync_dirs(left.dirs)
        }
    }
}

/// Fsyncs each of `dirs` once.
fn sync_dirs(mut dirs: Vec<PathBuf>) -> Result<(), PathError> {
    dirs.sort();
    dirs.dedup();
    dirs.iter().try_for_each(|d| sync_dir(d))
}

/// Renames done at once and made durable together later ([`Moves::leave`]):
/// the counterpart of a [`Batch`]'s moves for a turn's read mail, where a
/// queue of both paths of 100,000 moves held tens of megabytes. Start one
/// only once what must be durable before the moves is committed.
#[derive(Debug, Default)]
pub struct Moves {
    done: usize,
    /// The folders to fsync, while the moves are too few for one `syncfs`.
    dirs: Vec<PathBuf>,
}

impl Moves {
    /// No move yet.
    pub fn new() -> Moves {
        Moves::default()
    }

    /// Renames `from` to `to` now, like [`Batch::rename_if_there`]: a source
    /// that is gone (moved by a person, or by an earlier, interrupted run) is
    /// passed over.
    pub fn rename_if_there(&mut self, from: &Path, to: &Path) -> Result<(), PathError> {
        match fs::rename(from, to) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_path(from),
        }
        self.done += 1;
        if self.grouped() {
            self.dirs = Vec::new();
        } else {
            let parent = |p: &Path| p.parent().map(Path::to_path_buf).unwrap_or_default();
            self.dirs.extend([parent(from), parent(to)]);
        }
        Ok(())
    }

    /// Whether the moves are many enough to be made durable with one `syncfs`.
    fn grouped(&self) -> bool {
        cfg!(target_os = "linux") && self.done >= GROUP_SYNC_MIN
    }

    /// Leaves every move to be made durable with what comes next: adds
    /// them to `left` ([`Unsynced`]).
    pub fn leave(self, left: &mut Unsynced) {
        if self.done > 0 {
            left.add(self.grouped(), || self.dirs);
        }
    }
}

/// Appends lines to a file and fsyncs it (and its folder when the file is new).
pub fn append_lines_durable(path: &Path, lines: &str) -> Result<(), PathError> {
    if lines.is_empty() {
        return Ok(());
    }
    append_durable(path, buffer_for(lines), |w| w.write_all(lines.as_bytes()))
}

/// [`append_lines_durable`] of the lines that `write` writes, streamed
/// through a buffer rather than gathered first: a turn of 10,000 agents
/// journals tens of megabytes. A crash midway leaves whole lines and at most
/// one torn line, which readers skip, as with a single write.
pub fn append_durable_with(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), PathError> {
    append_durable(path, APPEND_BUFFER, write)
}

/// [`append_durable_with`] through a buffer of `capacity` bytes.
fn append_durable(
    path: &Path,
    capacity: usize,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), PathError> {
    let new = !path.exists();
    append_with(path, capacity, write)?;
    File::open(path).and_then(|f| f.sync_data()).with_path(path)?;
    if new {
        sync_dir(path.parent().unwrap_or(Path::new(".")))?;
    }
    Ok(())
}

/// Appends lines to a file in one write, without syncing (logs).
/// If the file ends in a torn line from a crash, a newline is written first so
/// that the torn line stays on its own and is skipped by readers.
pub fn append_lines(path: &Path, lines: &str) -> Result<(), PathError> {
    if lines.is_empty() {
        return Ok(());
    }
    append_with(path, buffer_for(lines), |w| w.write_all(lines.as_bytes()))
}

/// The buffer that holds `lines` and a newline before them, up to [`APPEND_BUFFER`]:
/// an activity log's line needs no 64 KB.
fn buffer_for(lines: &str) -> usize {
    (lines.len() + 1).min(APPEND_BUFFER)
}

/// What [`append_lines`] does, with the lines that `write` writes into a
/// buffer of `capacity` bytes: lines that fit it go in one write.
fn append_with(
    path: &Path,
    capacity: usize,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), PathError> {
    crate::fault::disk_full().with_path(path)?;
    let f = open_regular(OpenOptions::new().create(true).append(true).read(true), path)?
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
        .with_path(path)?;
    let len = f.metadata().with_path(path)?.len();
    let mut w = std::io::BufWriter::with_capacity(capacity, &f);
    if len > 0 {
        use std::os::unix::fs::FileExt;
        let mut last = [0u8; 1];
        f.read_exact_at(&mut last, len - 1).with_path(path)?;
        if last[0] != b'\n' {
            w.write_all(b"\n").with_path(path)?;
        }
    }
    write(&mut w).and_then(|()| w.flush()).with_path(path)
}

/// The buffer of an append: larger lines are written as they come.
const APPEND_BUFFER: usize = 64 << 10;

/// Checks that the filesystem holding `dir` takes writes: writes one small
/// file there and removes it (no sync: a full disk or a read-only mount
/// refuses the write itself). Cheap enough to run before any model is called,
/// and, after a full disk or a read-only org, before trying again.
pub fn probe(dir: &Path) -> Result<(), PathError> {
    fs::create_dir_all(dir).with_path(dir)?;
    let p = dir.join(format!("write-probe.{}.tmp", std::process::id()));
    let written = crate::fault::disk_full().and_then(|_| File::create(&p)?.write_all(&[b'.'; 4096]));
    let _ = fs::remove_file(&p);
    written.with_path(&p)
}

/// Every name in a folder that a mailbox reader must deal with: all but those
/// starting with a dot (names that are not UTF-8 included); sorted.
pub fn list_entries(dir: &Path) -> Result<Vec<std::ffi::OsString>, PathError> {
    Ok(list_typed(dir)?.into_iter().map(|(name, _)| name).collect())
}

/// [`list_entries`], each name with whether the listing says it is a regular
/// file (its `d_type`; looked up only where the filesystem does not say).
pub fn list_typed(dir: &Path) -> Result<Vec<(std::ffi::OsString, bool)>, PathError> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = Vec::new();
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_path(dir),
    };
    for entry in rd {
        let entry = entry.with_path(dir)?;
        let name = entry.file_name();
        if !name.as_bytes().starts_with(b".") {
            let regular = entry.file_type().is_ok_and(|t| t.is_file());
            out.push((name, regular));
        }
    }
    out.sort();
    Ok(out)
}

/// The JSON files of a folder that readers should see: not in `tmp/`, not
/// starting with a dot, ending in `.json`; sorted by name.
pub fn list_json(dir: &Path) -> Result<Vec<String>, PathError> {
    Ok(list_entries(dir)?.into_iter().filter_map(|n| n.into_string().ok()).filter(|n| n.ends_with(".json")).collect())
}

/// How many `syncfs` calls this test process made for each root: a test
/// counts a turn's group syncs.
#[cfg(test)]
pub(crate) mod group_syncs {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    static MADE: Mutex<BTreeMap<PathBuf, usize>> = Mutex::new(BTreeMap::new());

    pub(super) fn count(root: &Path) {
        *MADE.lock().unwrap_or_else(|e| e.into_inner()).entry(root.to_path_buf()).or_default() += 1;
    }

    /// The `syncfs` calls made so far for `root`.
    pub(crate) fn made(root: &Path) -> usize {
        MADE.lock().unwrap_or_else(|e| e.into_inner()).get(root).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_rename_at_once_pass_over_a_gone_source_and_name_a_failing_one() {
        let d = tempfile::tempdir().unwrap();
        let (new, cur) = (d.path().join("new"), d.path().join("cur"));
        fs::create_dir_all(&new).unwrap();
        fs::create_dir_all(&cur).unwrap();
        let n = GROUP_SYNC_MIN + 3;
        for i in 0..n {
            fs::write(new.join(format!("m{i}.json")), "x").unwrap();
        }
        let mut m = Moves::new();
        m.rename_if_there(&new.join("m0.json"), &cur.join("m0.json")).unwrap();
        // Done at once, not queued; a few moves keep their folders for fsync.
        assert!(cur.join("m0.json").exists() && !new.join("m0.json").exists());
        assert!(!m.grouped() && m.dirs.len() == 2);
        m.rename_if_there(&new.join("gone.json"), &cur.join("gone.json")).unwrap();
        assert_eq!(m.done, 1, "a gone source is no move");
        for i in 1..n {
            m.rename_if_there(&new.join(format!("m{i}.json")), &cur.join(format!("m{i}.json"))).unwrap();
        }
        // Many moves sync the filesystem once, and hold no folder list.
        assert_eq!(m.grouped(), cfg!(target_os = "linux"));
        if m.grouped() {
            assert!(m.dirs.is_empty());
        }
        // A file cannot replace a folder: the error names the source.
        let err = m.rename_if_there(&cur.join("m1.json"), &new).unwrap_err();
        assert!(err.to_string().contains("m1.json"), "{err}");
        let mut left = Unsynced::default();
        m.leave(&mut left);
        assert!(!left.is_empty());
        left.sync(d.path()).unwrap();
        assert!(left.is_empty());
        assert_eq!(fs::read_dir(&cur).unwrap().count(), n);
        assert_eq!(fs::read_dir(&new).unwrap().count(), 0);
        Moves::new().leave(&mut left);
        assert!(left.is_empty(), "no move leaves nothing to sync");
    }

    #[test]
    fn stale_tmp_folders_go_only_when_lemming_named_them_and_their_process_is_gone() {
        let d = tempfile::tempdir().unwrap();
        // No process has pid 0x7fff_fff0 (above pid_max); this process's own folder may be in use.
        let dead = d.path().join("scribe.3.2147483632.tmp");
        let mine = d.path().join(format!("scribe.4.{}.tmp", std::process::id()));
        let foreign = d.path().join("someone-elses");
        for f in [&dead, &mine, &foreign] {
            fs::create_dir_all(f.join("inside")).unwrap();
        }
        clean_stale_tmp([dead.clone(), mine.clone(), foreign.clone()]);
        assert!(!dead.exists());
        assert!(mine.is_dir() && foreign.is_dir());
    }

    #[test]
    fn a_move_of_a_file_someone_took_first_passes_it_over_only_when_asked() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("here"), "x").unwrap();
        let mut b = Batch::new();
        b.rename_if_there(d.path().join("taken"), d.path().join("taken-moved"));
        b.rename_if_there(d.path().join("here"), d.path().join("here-moved"));
        b.commit(d.path()).unwrap();
        assert!(d.path().join("here-moved").exists() && !d.path().join("taken-moved").exists());
        let mut b = Batch::new();
        b.rename(d.path().join("taken"), d.path().join("taken-moved"));
        assert!(b.commit(d.path()).is_err(), "a plain rename of a missing file with nothing at its target fails");
    }

    #[test]
    fn batch_writes_moves_and_removes() {
        let d = tempfile::tempdir().unwrap();
        let tmp = d.path().join("tmp");
        fs::create_dir_all(&tmp).unwrap();
        fs::write(d.path().join("old"), "x").unwrap();
        fs::write(d.path().join("gone"), "x").unwrap();
        let mut b = Batch::new();
        b.write(&tmp, d.path().join("a.json"), b"{}".to_vec());
        b.rename(d.path().join("old"), d.path().join("new"));
        b.remove(d.path().join("gone"));
        b.commit(d.path()).unwrap();
        assert_eq!(fs::read(d.path().join("a.json")).unwrap(), b"{}");
        assert!(d.path().join("new").exists() && !d.path().join("old").exists());
        assert!(!d.path().join("gone").exists());
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
    }

    #[test]
    fn link_same_refuses_a_name_replaced_after_the_check() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("m.json");
        fs::write(&file, "{}").unwrap();
        let Entry::File { id, .. } = read_entry(&file, 100).unwrap() else { panic!() };
        // Replaced by a link to something else between the check and the delivery.
        fs::remove_file(&file).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", &file).unwrap();
        let mut b = Batch::new();
        b.link_same(file.clone(), d.path().join("delivered.json"), id);
        let e = b.commit(d.path()).unwrap_err();
        assert!(e.to_string().contains("replaced"), "{e}");
        assert!(fs::symlink_metadata(d.path().join("delivered.json")).is_err(), "the link stayed");

        fs::remove_file(&file).unwrap();
        fs::write(&file, "{}").unwrap();
        let Entry::File { id, .. } = read_entry(&file, 100).unwrap() else { panic!() };
        let mut b = Batch::new();
        b.link_same(file.clone(), d.path().join("delivered.json"), id);
        b.commit(d.path()).unwrap();
        assert_eq!(fs::read(d.path().join("delivered.json")).unwrap(), b"{}");
    }

    #[test]
    fn append_isolates_a_torn_last_line() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("l.jsonl");
        fs::write(&p, "{\"a\":1}\n{\"tor").unwrap();
        append_lines(&p, "{\"b\":2}\n").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "{\"a\":1}\n{\"tor\n{\"b\":2}\n");
    }
}
