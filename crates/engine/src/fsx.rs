//! Durable file operations: atomic writes and group commits (guarantees G1, G2).
//!
//! A single write (`write_atomic`) goes to a temporary file, is fsynced, renamed
//! into place, and the folder is fsynced. A [`Batch`] does the same for many
//! files with one filesystem sync per step instead of one per file: write every
//! temporary file, sync, rename them all, sync. No reader ever sees a partial
//! file, and when `commit` returns every file is durable.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{PathError, WithPath};

/// Fsyncs a folder so that renames and creations in it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), PathError> {
    File::open(dir).and_then(|f| f.sync_all()).with_path(dir)
}

/// Writes `bytes` to `path` atomically and durably through `tmp_dir`.
pub fn write_atomic(tmp_dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), PathError> {
    fs::create_dir_all(tmp_dir).with_path(tmp_dir)?;
    let tmp = tmp_path(tmp_dir, path);
    crate::fault::disk_full().with_path(&tmp)?;
    {
        let mut f = File::create(&tmp).with_path(&tmp)?;
        f.write_all(bytes).with_path(&tmp)?;
        f.sync_all().with_path(&tmp)?;
    }
    fs::rename(&tmp, path).with_path(path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// A temporary name unique in this process (two writes of the same file name
/// in one batch must not share one), ending in `.<pid>.tmp` (see [`tmp_pid`]).
fn tmp_path(tmp_dir: &Path, target: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    tmp_dir.join(format!("{name}.{n}.{}.tmp", std::process::id()))
}

/// The pid of the process that wrote a temporary file, from its name
/// (`<name>.<pid>.tmp`), or `None` when the name does not have that form.
pub fn tmp_pid(file_name: &str) -> Option<u32> {
    file_name.strip_suffix(".tmp").and_then(|s| s.rsplit('.').next()).and_then(|p| p.parse().ok())
}

/// Removes temporary files left by processes that are gone (a crash mid-write).
///
/// lemming's temporary names end in `.<pid>.tmp`: those of live processes (a
/// concurrent `send`) are kept. Other programs may use `tmp/` too (write, then
/// rename into `new/`): their files are removed only when an hour old.
pub fn clean_stale_tmp(files: impl IntoIterator<Item = PathBuf>) {
    for p in files {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let remove = match tmp_pid(name) {
            Some(pid) => pid == std::process::id() || !crate::process::pid_alive(pid),
            None => fs::metadata(&p)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > std::time::Duration::from_secs(3600)),
        };
        if remove {
            let _ = fs::remove_file(p);
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
    moves: Vec<(PathBuf, PathBuf)>,
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
        self.moves.push((from, to));
    }

    /// Queues a removal, done with the renames.
    pub fn remove(&mut self, path: PathBuf) {
        self.removes.push(path);
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.links.is_empty() && self.moves.is_empty() && self.removes.is_empty()
    }

    /// Writes every file, syncs, renames them into place and makes the links,
    /// syncs, then does the queued moves and removals and syncs again. `root`
    /// names the filesystem.
    pub fn commit(self, root: &Path) -> Result<(), PathError> {
        if self.is_empty() {
            return Ok(());
        }
        // A small batch syncs exactly its own files and folders; a large one
        // syncs the filesystem once per step (cheaper than hundreds of fsyncs,
        // but it also flushes other programs' dirty data).
        let ops = self.writes.len() + self.links.len() + self.moves.len() + self.removes.len();
        let small = ops < GROUP_SYNC_MIN || !cfg!(target_os = "linux");
        let sync = |dirs: Vec<&Path>| -> Result<(), PathError> {
            if small {
                let mut dirs = dirs;
                dirs.sort();
                dirs.dedup();
                dirs.into_iter().try_for_each(sync_dir)
            } else {
                sync_fs(root)
            }
        };
        let parent = |p: &'_ PathBuf| -> PathBuf { p.parent().map(Path::to_path_buf).unwrap_or_default() };
        if !self.writes.is_empty() || !self.links.is_empty() {
            for (tmp, _, bytes) in &self.writes {
                crate::fault::disk_full().with_path(tmp)?;
                let mut f = File::create(tmp).with_path(tmp)?;
                f.write_all(bytes).with_path(tmp)?;
                if small {
                    f.sync_data().with_path(tmp)?;
                }
            }
            if !small && !self.writes.is_empty() {
                sync_fs(root)?;
            }
            for (tmp, path, _) in &self.writes {
                fs::rename(tmp, path).with_path(path)?;
            }
            for (existing, new, id) in &self.links {
                match fs::hard_link(existing, new) {
                    Ok(()) => crate::fault::read_at_once(new),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
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
            let dirs: Vec<PathBuf> =
                self.writes.iter().map(|w| parent(&w.1)).chain(self.links.iter().map(|l| parent(&l.1))).collect();
            sync(dirs.iter().map(PathBuf::as_path).collect())?;
        }
        if !self.moves.is_empty() || !self.removes.is_empty() {
            for (from, to) in &self.moves {
                match fs::rename(from, to) {
                    Ok(()) => {}
                    // Already moved by an earlier, interrupted run: idempotent.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound && to.exists() => {}
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
            let dirs: Vec<PathBuf> = self
                .moves
                .iter()
                .flat_map(|(f, t)| [parent(f), parent(t)])
                .chain(self.removes.iter().map(parent))
                .collect();
            sync(dirs.iter().map(PathBuf::as_path).collect())?;
        }
        Ok(())
    }
}

/// Appends lines to a file and fsyncs it (and its folder when the file is new).
pub fn append_lines_durable(path: &Path, lines: &str) -> Result<(), PathError> {
    if lines.is_empty() {
        return Ok(());
    }
    let new = !path.exists();
    append_lines(path, lines)?;
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
    crate::fault::disk_full().with_path(path)?;
    let mut f = open_regular(OpenOptions::new().create(true).append(true).read(true), path)?
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
        .with_path(path)?;
    let len = f.metadata().with_path(path)?.len();
    let mut buf = String::with_capacity(lines.len() + 1);
    if len > 0 {
        use std::io::{Read, Seek, SeekFrom};
        let mut last = [0u8; 1];
        f.seek(SeekFrom::Start(len - 1)).with_path(path)?;
        f.read_exact(&mut last).with_path(path)?;
        if last[0] != b'\n' {
            buf.push('\n');
        }
    }
    buf.push_str(lines);
    f.write_all(buf.as_bytes()).with_path(path)
}

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

/// The identity of a file on disk: its device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    /// The device.
    pub dev: u64,
    /// The inode.
    pub ino: u64,
}

impl FileId {
    /// The identity in `m`.
    pub fn of(m: &fs::Metadata) -> FileId {
        use std::os::unix::fs::MetadataExt;
        FileId { dev: m.dev(), ino: m.ino() }
    }
}

/// What a folder entry is when it is not a regular file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A folder.
    Directory,
    /// A symbolic link (whatever it points to, if anything).
    Symlink,
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// Something else that is not a regular file.
    Other,
}

impl EntryKind {
    /// The kind of a non-regular file type.
    pub fn of(t: fs::FileType) -> EntryKind {
        use std::os::unix::fs::FileTypeExt;
        if t.is_dir() {
            EntryKind::Directory
        } else if t.is_symlink() {
            EntryKind::Symlink
        } else if t.is_fifo() {
            EntryKind::Fifo
        } else if t.is_socket() {
            EntryKind::Socket
        } else if t.is_char_device() {
            EntryKind::CharDevice
        } else if t.is_block_device() {
            EntryKind::BlockDevice
        } else {
            EntryKind::Other
        }
    }

    /// The stable snake_case name: `directory`, `symlink`, `fifo`, `socket`,
    /// `char_device`, `block_device`, `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Directory => "directory",
            EntryKind::Symlink => "symlink",
            EntryKind::Fifo => "fifo",
            EntryKind::Socket => "socket",
            EntryKind::CharDevice => "char_device",
            EntryKind::BlockDevice => "block_device",
            EntryKind::Other => "other",
        }
    }

    /// The kind for people: "a directory", "a symbolic link", ...
    pub fn describe(self) -> &'static str {
        match self {
            EntryKind::Directory => "a directory",
            EntryKind::Symlink => "a symbolic link",
            EntryKind::Fifo => "a FIFO (named pipe)",
            EntryKind::Socket => "a socket",
            EntryKind::CharDevice => "a character device",
            EntryKind::BlockDevice => "a block device",
            EntryKind::Other => "a special file",
        }
    }
}

/// A folder entry as [`read_entry`] found it.
#[derive(Debug)]
pub enum Entry {
    /// A regular file, read whole.
    File {
        /// Which file it is (delivery links exactly this file).
        id: FileId,
        /// Its bytes.
        bytes: Vec<u8>,
    },
    /// A regular file larger than the limit; nothing was kept.
    TooLarge {
        /// Which file it is.
        id: FileId,
        /// Its size in bytes (at least).
        size: u64,
    },
    /// Not a regular file: never read, never followed.
    NotRegular {
        /// What it is.
        kind: EntryKind,
        /// Where it points, for a symbolic link.
        target: Option<PathBuf>,
    },
    /// Gone (moved or removed meanwhile).
    Gone,
}

/// Reads a file of a mailbox without trusting what the name is: it is opened
/// with `O_NOFOLLOW | O_NONBLOCK` (a symbolic link is never followed, a FIFO
/// never blocks), its type and size are checked on the open descriptor, and
/// at most `limit` bytes are read. A directory, link, FIFO, socket or device
/// comes back as [`Entry::NotRegular`]; a device is not even opened.
pub fn read_entry(path: &Path, limit: u64) -> Result<Entry, PathError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let not_regular = |m: &fs::Metadata| {
        let kind = EntryKind::of(m.file_type());
        let target = if kind == EntryKind::Symlink { fs::read_link(path).ok() } else { None };
        Entry::NotRegular { kind, target }
    };
    // Look first, so that devices and FIFOs are never opened at all.
    match fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_file() => return Ok(not_regular(&m)),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Entry::Gone),
        Err(e) => return Err(e).with_path(path),
    }
    // Then check again on the descriptor: the name may have been replaced meanwhile.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path);
    let file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Entry::Gone),
        Err(e) => {
            // ELOOP (a link) or ENXIO (a socket): say what it is now.
            return match fs::symlink_metadata(path) {
                Ok(m) if !m.file_type().is_file() => Ok(not_regular(&m)),
                Err(e2) if e2.kind() == std::io::ErrorKind::NotFound => Ok(Entry::Gone),
                _ => Err(e).with_path(path),
            };
        }
    };
    let m = file.metadata().with_path(path)?;
    if !m.file_type().is_file() {
        return Ok(Entry::NotRegular { kind: EntryKind::of(m.file_type()), target: None });
    }
    let id = FileId::of(&m);
    if m.len() > limit {
        return Ok(Entry::TooLarge { id, size: m.len() });
    }
    // The file may grow after the check: never read more than the limit allows.
    let mut bytes = Vec::with_capacity(m.len() as usize);
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes).with_path(path)?;
    if bytes.len() as u64 > limit {
        return Ok(Entry::TooLarge { id, size: bytes.len() as u64 });
    }
    Ok(Entry::File { id, bytes })
}

/// Reads a small state file (memory, attempts, dead-letter reasons, trouble)
/// through [`read_entry`]: `None` when it does not exist; an error naming the
/// path when it is not a regular file (a FIFO would block, a link to
/// `/dev/zero` would never end) or is larger than `limit` bytes.
pub fn read_small(path: &Path, limit: u64) -> Result<Option<Vec<u8>>, PathError> {
    let refused = |what: String| Err(std::io::Error::new(std::io::ErrorKind::InvalidData, what)).with_path(path);
    match read_entry(path, limit)? {
        Entry::File { bytes, .. } => Ok(Some(bytes)),
        Entry::Gone => Ok(None),
        Entry::NotRegular { kind, .. } => {
            refused(format!("is {}, not a regular file; it was not read", kind.describe()))
        }
        Entry::TooLarge { size, .. } => refused(format!("is {size} bytes or more; the limit is {limit}")),
    }
}

/// Opens a state file (a log, the ledger) with `options`, never following a
/// symbolic link and never blocking on a FIFO: anything that is not a regular
/// file is an error naming the path. A missing file is `None`.
pub fn open_regular(options: &mut OpenOptions, path: &Path) -> Result<Option<File>, PathError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = match options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "is a symbolic link, not a regular file; it was not followed",
            ))
            .with_path(path)
        }
        Err(e) => return Err(e).with_path(path),
    };
    let m = file.metadata().with_path(path)?;
    if !m.file_type().is_file() {
        let what = format!("is {}, not a regular file; it was not read", EntryKind::of(m.file_type()).describe());
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, what)).with_path(path);
    }
    Ok(Some(file))
}

/// Every name in a folder that a mailbox reader must deal with: all but those
/// starting with a dot (names that are not UTF-8 included); sorted.
pub fn list_entries(dir: &Path) -> Result<Vec<std::ffi::OsString>, PathError> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = Vec::new();
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_path(dir),
    };
    for entry in rd {
        let name = entry.with_path(dir)?.file_name();
        if !name.as_bytes().starts_with(b".") {
            out.push(name);
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn read_entry_never_follows_blocks_or_reads_past_the_limit() {
        use std::os::unix::ffi::OsStrExt;
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        assert!(matches!(read_entry(&fifo, 10).unwrap(), Entry::NotRegular { kind: EntryKind::Fifo, .. }));
        let zero = d.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        match read_entry(&zero, 10).unwrap() {
            Entry::NotRegular { kind: EntryKind::Symlink, target } => {
                assert_eq!(target.unwrap(), Path::new("/dev/zero"))
            }
            other => panic!("{other:?}"),
        }
        let dangling = d.path().join("dangling");
        std::os::unix::fs::symlink(d.path().join("nowhere"), &dangling).unwrap();
        assert!(matches!(read_entry(&dangling, 10).unwrap(), Entry::NotRegular { kind: EntryKind::Symlink, .. }));
        assert!(matches!(read_entry(d.path(), 10).unwrap(), Entry::NotRegular { kind: EntryKind::Directory, .. }));
        let big = d.path().join("big");
        fs::write(&big, [b'x'; 11]).unwrap();
        assert!(matches!(read_entry(&big, 10).unwrap(), Entry::TooLarge { size: 11, .. }));
        assert!(matches!(read_entry(&big, 11).unwrap(), Entry::File { bytes, .. } if bytes.len() == 11));
        assert!(matches!(read_entry(&d.path().join("gone"), 10).unwrap(), Entry::Gone));
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
