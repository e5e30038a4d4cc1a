//! lemming-fs: the single-file primitives that every crate of lemming writes and reads state through.
//!
//! - [`write_atomic`]: a write that no reader ever sees half done and that is
//!   durable when it returns (a temporary file, fsynced, renamed into place,
//!   the folder fsynced). The engine's group commits write their temporary
//!   files through the same [`write_tmp`] and name them with [`tmp_path`].
//! - [`read_entry`], [`read_small`], [`read_optional`], [`open_regular`]: reads
//!   that never follow a symbolic link, never block on a FIFO, never open a
//!   device and never read past a limit; a missing file is `None`, not an error.
//! - [`PathError`]: every I/O error carries the path it happened on.
//!
//! It sits below both the engine and the providers (whose circuit breakers
//! keep a state file), so that both write and read files one way.
#![warn(missing_docs)]

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// An I/O error together with the path it happened on.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct PathError {
    /// The file or folder.
    pub path: PathBuf,
    /// The underlying error.
    #[source]
    pub source: io::Error,
}

/// Attaches a path to an I/O result.
pub trait WithPath<T> {
    /// Maps the error into a [`PathError`] naming `path`.
    fn with_path(self, path: impl AsRef<Path>) -> Result<T, PathError>;
}

impl<T> WithPath<T> for Result<T, io::Error> {
    fn with_path(self, path: impl AsRef<Path>) -> Result<T, PathError> {
        self.map_err(|source| PathError { path: path.as_ref().to_path_buf(), source })
    }
}

static FULL_DISK_FLAG: OnceLock<Option<PathBuf>> = OnceLock::new();

/// A full disk, for tests: while the file named by `LEMMING_FULL_DISK_FLAG`
/// exists, every write of file data fails with `ENOSPC` (renames, links and
/// removals still work, as on a real full disk). `Ok` otherwise; unset, each
/// check is one load.
pub fn disk_full() -> io::Result<()> {
    let flag = FULL_DISK_FLAG.get_or_init(|| std::env::var_os("LEMMING_FULL_DISK_FLAG").map(Into::into));
    match flag {
        Some(f) if f.exists() => Err(io::Error::from_raw_os_error(libc::ENOSPC)),
        _ => Ok(()),
    }
}

/// Fsyncs a folder so that renames and creations in it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), PathError> {
    File::open(dir).and_then(|f| f.sync_all()).with_path(dir)
}

/// Writes `bytes` to `path` atomically and durably through the folder
/// `tmp_dir` (created if missing; it must be on the same filesystem): the
/// bytes go to a temporary file there, which is fsynced and renamed onto
/// `path`, and `path`'s folder is fsynced. A failed write leaves no
/// temporary file behind.
pub fn write_atomic(tmp_dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), PathError> {
    write_atomic_with(tmp_dir, path, |w| w.write_all(bytes))
}

/// [`write_atomic`] of what `write` writes, through a buffer: a large file
/// (the commit of a 10,000-agent turn) is never held whole in memory.
pub fn write_atomic_with(
    tmp_dir: &Path,
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), PathError> {
    replace(tmp_dir, path, true, write)?;
    sync_dir(path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")))
}

/// Writes what `write` writes to a temporary file in `tmp_dir` (created if
/// missing), fsynced when `sync` is set, and renames it onto `path`. A
/// failed write leaves no temporary file behind.
fn replace(
    tmp_dir: &Path,
    path: &Path,
    sync: bool,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), PathError> {
    fs::create_dir_all(tmp_dir).with_path(tmp_dir)?;
    let tmp = tmp_path(tmp_dir, path);
    let written = write_tmp_with(&tmp, sync, write).and_then(|()| fs::rename(&tmp, path).with_path(path));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// Writes `bytes` to `path` atomically but not durably, through `tmp_dir`,
/// making `path`'s folder and `tmp_dir` if missing: for a file derived from
/// others, which a reader checks and a crash may leave empty or missing.
pub fn write_derived(tmp_dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), PathError> {
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_path(dir)?;
    }
    replace(tmp_dir, path, false, |w| w.write_all(bytes))
}

/// Creates the temporary file `tmp` with `bytes`, fsyncing its data when
/// `sync` is set (a group commit that syncs the whole filesystem does not).
/// The first step of every atomic write: the caller renames it into place.
///
/// The file is created new (`O_EXCL`), so whatever already has its name is
/// never written through: a symbolic link planted there (in a folder others
/// can write, such as an agent's workspace) is removed, not followed, and a
/// stale file of a process that had the same pid is replaced.
pub fn write_tmp(tmp: &Path, bytes: &[u8], sync: bool) -> Result<(), PathError> {
    let mut f = create_tmp(tmp)?;
    f.write_all(bytes).with_path(tmp)?;
    if sync {
        f.sync_data().with_path(tmp)?;
    }
    Ok(())
}

/// [`write_tmp`] of what `write` writes, through a buffer of 64 KB.
fn write_tmp_with(
    tmp: &Path,
    sync: bool,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), PathError> {
    let f = create_tmp(tmp)?;
    let mut w = std::io::BufWriter::with_capacity(64 << 10, &f);
    write(&mut w).and_then(|()| w.flush()).with_path(tmp)?;
    drop(w);
    if sync {
        f.sync_data().with_path(tmp)?;
    }
    Ok(())
}

/// Creates the temporary file `tmp`, new (see [`write_tmp`]).
fn create_tmp(tmp: &Path) -> Result<fs::File, PathError> {
    disk_full().with_path(tmp)?;
    let create = || std::fs::OpenOptions::new().write(true).create_new(true).open(tmp);
    match create() {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            fs::remove_file(tmp).with_path(tmp)?;
            create()
        }
        other => other,
    }
    .with_path(tmp)
}

/// A temporary name in `tmp_dir` for a write of `target`, unique in this
/// process (two writes of the same file name in one batch must not share
/// one), ending in `.<pid>.tmp` (see [`tmp_pid`]).
pub fn tmp_path(tmp_dir: &Path, target: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    tmp_dir.join(format!("{name}.{n}.{}.tmp", pid()))
}

/// This process's id, asked of the system once: `getpid` is a system call
/// each time, and a turn names a few files and a journal record an agent
/// with it. lemming never forks without exec.
pub fn pid() -> u32 {
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *PID.get_or_init(std::process::id)
}

/// The pid of the process that wrote a temporary file, from its name
/// (`<name>.<pid>.tmp`), or `None` when the name does not have that form.
pub fn tmp_pid(file_name: &str) -> Option<u32> {
    file_name.strip_suffix(".tmp").and_then(|s| s.rsplit('.').next()).and_then(|p| p.parse().ok())
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
    // Look first, so that devices and FIFOs are never opened at all.
    match fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_file() => return Ok(not_regular(path, &m)),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Entry::Gone),
        Err(e) => return Err(e).with_path(path),
    }
    read_listed_entry(path, limit)
}

/// [`read_entry`] for a name that a folder listing has just reported as a
/// regular file (its `d_type`): the look before opening is skipped, and the
/// checks on the open descriptor still refuse whatever replaced it since.
/// Saves a system call per message where whole inboxes are read.
pub fn read_listed_entry(path: &Path, limit: u64) -> Result<Entry, PathError> {
    use std::io::Read;
    // Checked on the descriptor: the name may have been replaced since it was looked at.
    let file = open_unread(path);
    let file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Entry::Gone),
        Err(e) => {
            // ELOOP (a link) or ENXIO (a socket): say what it is now.
            return match fs::symlink_metadata(path) {
                Ok(m) if !m.file_type().is_file() => Ok(not_regular(path, &m)),
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
    // Its size and a byte more, most often in one call: a short read of a
    // regular file is its end, a full one says it grew since the check.
    let mut bytes = vec![0; (m.len() as usize).saturating_add(1)];
    let mut file = file;
    let got = loop {
        match file.read(&mut bytes) {
            Ok(n) => break n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).with_path(path),
        }
    };
    bytes.truncate(got);
    if got as u64 > m.len() {
        // It grew: read on to its end, never more than the limit allows.
        let rest = limit.saturating_add(1).saturating_sub(got as u64);
        file.take(rest).read_to_end(&mut bytes).with_path(path)?;
    }
    if bytes.len() as u64 > limit {
        return Ok(Entry::TooLarge { id, size: bytes.len() as u64 });
    }
    Ok(Entry::File { id, bytes })
}

/// Whether opening without updating the access time is allowed here: it
/// is for files the process owns; after one refusal (files of another
/// user) it is not asked again.
static NOATIME: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Opens a file to read it, never following a link or blocking, and, where
/// allowed, without updating its access time (`O_NOATIME`): nothing in
/// lemming looks at it, and updating it dirties the inode of every message
/// read, for the next sync to write.
fn open_unread(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::sync::atomic::Ordering;
    let flags = libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
    if NOATIME.load(Ordering::Relaxed) {
        match OpenOptions::new().read(true).custom_flags(flags | libc::O_NOATIME).open(path) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => NOATIME.store(false, Ordering::Relaxed),
            r => return r,
        }
    }
    OpenOptions::new().read(true).custom_flags(flags).open(path)
}

/// What [`read_entry`] says of a name that is not a regular file.
fn not_regular(path: &Path, m: &fs::Metadata) -> Entry {
    let kind = EntryKind::of(m.file_type());
    let target = if kind == EntryKind::Symlink { fs::read_link(path).ok() } else { None };
    Entry::NotRegular { kind, target }
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

/// Reads a whole state file that may not exist yet (the ledger, the commit
/// record, a journal): `None` when it is missing. Like [`read_small`] it
/// never follows a symbolic link, blocks on a FIFO or opens a device: such a
/// name is an error naming the path, not a hang. For files that grow with the
/// org's history, so there is no size limit; use [`read_small`] for files that
/// have one.
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, PathError> {
    read_small(path, u64::MAX)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Sets a file's access time a day before its modification time: a read
    /// on a `relatime` mount would then update it.
    fn age_atime(path: &Path) -> i64 {
        use std::os::unix::fs::MetadataExt;
        let mtime = fs::metadata(path).unwrap().mtime();
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        let times = [
            libc::timespec { tv_sec: mtime - 86_400, tv_nsec: 0 },
            libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT },
        ];
        // SAFETY: `c` is a valid NUL-terminated path and `times` two valid timespecs.
        assert_eq!(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) }, 0);
        mtime - 86_400
    }

    #[test]
    fn reading_mail_leaves_its_access_time_alone() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let (control, mail) = (dir.path().join("control.json"), dir.path().join("m1.json"));
        for p in [&control, &mail] {
            fs::write(p, "{}").unwrap();
        }
        let aged = age_atime(&control);
        fs::read(&control).unwrap();
        if fs::metadata(&control).unwrap().atime() == aged {
            println!("SKIPPED: this filesystem does not update access times on reads");
            return;
        }
        let aged = age_atime(&mail);
        assert!(matches!(read_listed_entry(&mail, 100).unwrap(), Entry::File { .. }));
        assert!(matches!(read_entry(&mail, 100).unwrap(), Entry::File { .. }));
        assert_eq!(fs::metadata(&mail).unwrap().atime(), aged);
    }

    #[test]
    fn a_link_planted_at_the_temporary_name_is_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside.txt");
        fs::write(&outside, "keep me").unwrap();
        let tmp = dir.path().join("notes.md.0.1.tmp");
        std::os::unix::fs::symlink(&outside, &tmp).unwrap();
        write_tmp(&tmp, b"new", true).unwrap();
        assert_eq!(fs::read_to_string(&outside).unwrap(), "keep me");
        assert_eq!(fs::read_to_string(&tmp).unwrap(), "new");
        assert!(!fs::symlink_metadata(&tmp).unwrap().file_type().is_symlink());
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
    fn read_optional_is_none_when_missing_and_refuses_what_is_not_a_file() {
        use std::os::unix::ffi::OsStrExt;
        let d = tempfile::tempdir().unwrap();
        assert!(read_optional(&d.path().join("missing")).unwrap().is_none());
        let file = d.path().join("ledger.jsonl");
        fs::write(&file, b"a\n\xffb\n").unwrap();
        assert_eq!(read_optional(&file).unwrap().unwrap(), b"a\n\xffb\n");

        // A FIFO would block a plain read forever, a link to /dev/zero never end.
        let fifo = d.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let e = read_optional(&fifo).unwrap_err();
        assert_eq!(e.path, fifo);
        assert!(e.to_string().contains("FIFO") && e.to_string().contains("not a regular file"), "{e}");
        let zero = d.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let e = read_optional(&zero).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        let e = read_optional(d.path()).unwrap_err();
        assert!(e.to_string().contains("directory"), "{e}");
    }

    #[test]
    fn read_small_keeps_its_limit() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("memory.json");
        fs::write(&p, [b'x'; 11]).unwrap();
        let e = read_small(&p, 10).unwrap_err();
        assert!(e.to_string().contains("the limit is 10"), "{e}");
        assert_eq!(read_small(&p, 11).unwrap().unwrap().len(), 11);
        assert!(read_small(&d.path().join("gone"), 10).unwrap().is_none());
    }

    #[test]
    fn write_atomic_replaces_whole_and_leaves_no_temporary_file() {
        let d = tempfile::tempdir().unwrap();
        let tmp = d.path().join("tmp");
        let p = d.path().join("state.json");
        write_atomic(&tmp, &p, b"{\"a\":1}").unwrap();
        write_atomic(&tmp, &p, b"{}").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"{}");
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0, "a temporary file was left");

        // A failed rename (the target is a folder) removes its temporary file
        // and names the target.
        let dir = d.path().join("taken");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("x"), "x").unwrap();
        let e = write_atomic(&tmp, &dir, b"{}").unwrap_err();
        assert_eq!(e.path, dir);
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0, "a failed write left its temporary file");
    }

    #[test]
    fn temporary_names_are_unique_and_carry_the_pid() {
        let (a, b) = (tmp_path(Path::new("t"), Path::new("x.json")), tmp_path(Path::new("t"), Path::new("x.json")));
        assert_ne!(a, b);
        let name = a.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("x.json."), "{name}");
        assert_eq!(tmp_pid(name), Some(std::process::id()));
        assert_eq!(tmp_pid("x.json"), None);
    }
}
