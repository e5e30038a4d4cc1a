//! Backup and restore: the whole org as one gzip-compressed tar archive.
//!
//! [`backup`] copies the org between two turns: it holds the turn lock (see
//! [`crate::lock`]) for the whole copy, so a running daemon waits to start its
//! next turn, and the backup lock, so a person's read moves no mail meanwhile.
//! When no process runs turns it also takes the org lock. `lemming send` goes
//! on: a message renamed into an outbox is in the archive or not, never in
//! part, as only whole files are copied and never the contents of `tmp/`
//! folders. The archive starts with a [`Manifest`], keeps hard links as
//! links (a delivered message and its sender's sent copy stay one file), and
//! leaves out what is not state: the lock files, `daemon.json`, the daemon's
//! trouble file and the derived search index. It is written beside the target
//! file, fsynced and renamed into place, in constant memory: the names to copy
//! are listed first in an unlinked scratch file, then streamed.
//!
//! [`restore`] checks every entry before it writes anything (relative paths
//! without `..`, only folders, files and hard links to earlier entries, a
//! manifest it knows first, the file count), unpacks into a folder beside the
//! target, syncs it, renames it into place and runs [`crate::fsck`] on it.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{PathError, WithPath};
use crate::fsx;
use crate::lock::{self, LockError};
use crate::org::{agent_folders, Layout};

/// The name of the archive's first entry, the [`Manifest`].
pub const MANIFEST: &str = "lemming-backup.json";
/// The archive format this lemming writes and reads.
pub const FORMAT: u32 = 1;
/// The largest manifest [`restore`] reads.
const MANIFEST_MAX: u64 = 64 * 1024;
/// How many times [`backup`] starts again when a file it listed vanished
/// before it was copied (a person's `lemming resume` removing the pause file).
const ATTEMPTS: u32 = 3;

/// The archive's first entry: what it holds and which lemming wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The archive format ([`FORMAT`]).
    pub format: u32,
    /// The version of the lemming that wrote it.
    pub lemming_version: String,
    /// When the copy was taken.
    pub created_at: DateTime<Utc>,
    /// The last committed turn of the org it holds.
    pub turn: u64,
    /// How many files (regular files and hard links) follow the manifest.
    pub files: u64,
}

/// How far a backup or a restore is, for a progress display.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Files (and hard links) copied so far.
    pub files: u64,
    /// Files to copy in all.
    pub total: u64,
    /// Bytes of file contents copied so far.
    pub bytes: u64,
}

/// What a backup waits for before it copies, told once each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// A person's read is moving mail.
    Reads,
    /// A turn is running: the backup starts when it commits.
    Turn,
}

/// What a backup wrote.
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    /// The archive.
    pub path: PathBuf,
    /// The manifest written first.
    pub manifest: Manifest,
    /// Of the files, how many are hard links to an earlier one.
    pub links: u64,
    /// Bytes of file contents copied.
    pub bytes: u64,
    /// The archive's size.
    pub archive_bytes: u64,
    /// Entries left out because they are not folders or regular files
    /// (symbolic links, fifos, sockets), relative to the org.
    pub skipped: Vec<PathBuf>,
    /// How long it took.
    pub seconds: f64,
}

/// Why a backup was not written.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The target exists and `force` was not given.
    #[error("{} already exists\n  help: choose another file name, or pass --force to replace it", .0.display())]
    Exists(PathBuf),
    /// The target is inside the org it copies.
    #[error("{} is inside the org {} that it would copy\n  help: write the backup outside the org's folder", file.display(), root.display())]
    InsideOrg {
        /// The target.
        file: PathBuf,
        /// The org.
        root: PathBuf,
    },
    /// Files kept vanishing between the listing and the copy.
    #[error("{} vanished while the org was copied, {ATTEMPTS} times in a row\n  help: stop whatever removes files from the org (not a daemon or `lemming send`: those are safe) and try again", .0.display())]
    Vanished(PathBuf),
    /// A file operation failed.
    #[error(transparent)]
    Io(#[from] PathError),
}

/// Writes a consistent archive of the org at `root` to `file` (see the
/// module's docs). `on_wait` is told when it waits for a read or a turn;
/// `on_progress` sees every copied file.
pub fn backup(
    root: &Path,
    file: &Path,
    force: bool,
    mut on_wait: impl FnMut(Wait),
    mut on_progress: impl FnMut(Progress),
) -> Result<BackupReport, BackupError> {
    let start = Instant::now();
    let layout = Layout::new(root);
    if !force && fs::symlink_metadata(file).is_ok() {
        return Err(BackupError::Exists(file.to_path_buf()));
    }
    let name = file.file_name().ok_or_else(|| BackupError::Io(not_a_file(file)))?;
    let parent = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let real_parent = parent.canonicalize().with_path(&parent)?;
    let real_root = root.canonicalize().with_path(root)?;
    if real_parent.starts_with(&real_root) {
        return Err(BackupError::InsideOrg { file: file.to_path_buf(), root: root.to_path_buf() });
    }
    // No process runs turns: take the org lock too, so that no `step` starts.
    let _org = match lock::acquire(&layout) {
        Ok(held) => Some(held),
        Err(LockError::Held { .. }) => None,
        Err(LockError::Io(e)) => return Err(e.into()),
    };
    let _reads = lock::backup(&layout, || on_wait(Wait::Reads))?;
    let _turn = lock::turn_for_backup(&layout, || on_wait(Wait::Turn))?;
    let turn = crate::journal::Journal::new(&layout).last_turn()?;

    let mut stem = name.to_os_string();
    stem.push(format!(".tmp-{}", std::process::id()));
    let tmp = parent.join(&stem);
    let mut guard = Leftover(Some(tmp.clone()));
    let skip = Skip::of(&layout);
    let mut attempt = 0;
    let (manifest, written) = loop {
        attempt += 1;
        let mut list = scratch(&parent, &stem)?;
        let (total, skipped) = list_files(&layout.root, &skip, &mut list)?;
        let manifest = Manifest {
            format: FORMAT,
            lemming_version: env!("CARGO_PKG_VERSION").to_string(),
            created_at: Utc::now(),
            turn,
            files: total,
        };
        match write_archive(&layout.root, &tmp, &manifest, list, &mut on_progress) {
            Ok(written) => break (manifest, Written { skipped, ..written }),
            Err(Copy::Vanished(p)) if attempt < ATTEMPTS => {
                tracing::info!(file = %p.display(), "a file vanished during the backup; starting again");
            }
            Err(Copy::Vanished(p)) => return Err(BackupError::Vanished(p)),
            Err(Copy::Io(e)) => return Err(e.into()),
        }
    };
    fs::rename(&tmp, file).with_path(file)?;
    guard.0 = None;
    fsx::sync_dir(&parent)?;
    let archive_bytes = fs::metadata(file).with_path(file)?.len();
    Ok(BackupReport {
        path: file.to_path_buf(),
        manifest,
        links: written.links,
        bytes: written.bytes,
        archive_bytes,
        skipped: written.skipped,
        seconds: start.elapsed().as_secs_f64(),
    })
}

fn not_a_file(file: &Path) -> PathError {
    PathError { path: file.to_path_buf(), source: io::Error::new(io::ErrorKind::InvalidInput, "not a file name") }
}

/// Removes a file or folder left by a failed backup or restore.
struct Leftover(Option<PathBuf>);

impl Drop for Leftover {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = if p.is_dir() { fs::remove_dir_all(&p) } else { fs::remove_file(&p) };
        }
    }
}

/// An unlinked scratch file beside the archive: gone when closed, whatever happens.
fn scratch(parent: &Path, stem: &std::ffi::OsStr) -> Result<File, PathError> {
    let mut name = stem.to_os_string();
    name.push(".list");
    let path = parent.join(name);
    let f = OpenOptions::new().read(true).write(true).create_new(true).open(&path).with_path(&path)?;
    fs::remove_file(&path).with_path(&path)?;
    Ok(f)
}

/// What the copy leaves out, as absolute paths.
struct Skip {
    /// Folders kept empty: their contents are being written, never state.
    empty: HashSet<PathBuf>,
    /// Folders and files left out.
    out: HashSet<PathBuf>,
}

impl Skip {
    fn of(layout: &Layout) -> Skip {
        let mb = layout.mail();
        let mut empty: HashSet<PathBuf> = [layout.state_tmp()].into();
        for agent in agent_folders(layout) {
            empty.extend(mb.folders(&agent).into_iter().filter(|d| d.file_name().is_some_and(|n| n == "tmp")));
        }
        let out = [
            layout.lock(),
            layout.turn_lock(),
            layout.backup_lock(),
            layout.daemon_json(),
            crate::trouble::daemon_path(layout),
            // Derived, rebuilt on demand: the search index, and what views
            // keep of their last read.
            layout.state_dir().join("index"),
            layout.cache_dir(),
        ]
        .into();
        Skip { empty, out }
    }
}

/// Lists every folder (`d`) and regular file (`f`) to copy into `list`, as
/// NUL-terminated paths relative to `root`, parents before their contents.
/// Returns the number of files and what was left out as neither.
fn list_files(root: &Path, skip: &Skip, list: &mut File) -> Result<(u64, Vec<PathBuf>), PathError> {
    let mut out = BufWriter::new(&mut *list);
    let (mut files, mut odd) = (0u64, Vec::new());
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if skip.empty.contains(&dir) {
            continue;
        }
        let entries = fs::read_dir(&dir).with_path(&dir)?;
        for e in entries {
            let e = e.with_path(&dir)?;
            let path = e.path();
            if skip.out.contains(&path) {
                continue;
            }
            let rel = path.strip_prefix(root).unwrap_or(&path);
            let kind = match e.file_type() {
                Ok(t) if t.is_dir() => b'd',
                Ok(t) if t.is_file() => b'f',
                // Gone since it was listed: it is not in the copy.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                _ => {
                    odd.push(rel.to_path_buf());
                    continue;
                }
            };
            out.write_all(&[kind]).with_path(&path)?;
            out.write_all(rel.as_os_str().as_bytes()).with_path(&path)?;
            out.write_all(b"\0").with_path(&path)?;
            if kind == b'd' {
                stack.push(path);
            } else {
                files += 1;
            }
        }
    }
    out.flush().with_path(root)?;
    drop(out);
    io::Seek::rewind(list).with_path(root)?;
    Ok((files, odd))
}

/// What one copy wrote.
#[derive(Default)]
struct Written {
    links: u64,
    bytes: u64,
    skipped: Vec<PathBuf>,
}

enum Copy {
    /// A listed file was gone (or changed size) when it was copied.
    Vanished(PathBuf),
    Io(PathError),
}

impl From<PathError> for Copy {
    fn from(e: PathError) -> Copy {
        Copy::Io(e)
    }
}

/// Writes the manifest and every listed entry to `tmp`, and fsyncs it.
fn write_archive(
    root: &Path,
    tmp: &Path,
    manifest: &Manifest,
    list: File,
    on_progress: &mut impl FnMut(Progress),
) -> Result<Written, Copy> {
    let out = File::create(tmp).with_path(tmp)?;
    let gz = flate2::write::GzEncoder::new(BufWriter::with_capacity(256 * 1024, out), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let json = serde_json::to_vec_pretty(manifest).expect("a manifest always serializes");
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(json.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(manifest.created_at.timestamp().max(0) as u64);
    tar.append_data(&mut h, MANIFEST, json.as_slice()).with_path(tmp)?;

    // A file with more than one link is written once; its other names are links to the first.
    let mut firsts: HashMap<(u64, u64), (PathBuf, u64)> = HashMap::new();
    let mut done = Written::default();
    let mut progress = Progress { total: manifest.files, ..Progress::default() };
    for record in BufReader::new(list).split(0) {
        let record = record.with_path(tmp)?;
        let Some((&kind, rel)) = record.split_first() else { continue };
        let rel = PathBuf::from(std::ffi::OsStr::from_bytes(rel));
        let path = root.join(&rel);
        let mut h = tar::Header::new_gnu();
        if kind == b'd' {
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Copy::Vanished(path)),
                Err(e) => return Err(Copy::Io(PathError { path, source: e })),
            };
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            h.set_mode(meta.mode() & 0o777);
            h.set_mtime(meta.mtime().max(0) as u64);
            tar.append_data(&mut h, &rel, io::empty()).with_path(&path)?;
            continue;
        }
        let file = match OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Copy::Vanished(path)),
            Err(e) => return Err(Copy::Io(PathError { path, source: e })),
        };
        let meta = file.metadata().with_path(&path)?;
        if !meta.is_file() {
            return Err(Copy::Vanished(path));
        }
        h.set_mode(meta.mode() & 0o777);
        h.set_mtime(meta.mtime().max(0) as u64);
        let key = (meta.dev(), meta.ino());
        if let Some((first, left)) = firsts.get_mut(&key) {
            h.set_entry_type(tar::EntryType::Link);
            h.set_size(0);
            tar.append_link(&mut h, &rel, &*first).with_path(&path)?;
            *left -= 1;
            if *left == 0 {
                firsts.remove(&key);
            }
            done.links += 1;
        } else {
            if meta.nlink() > 1 {
                firsts.insert(key, (rel.clone(), meta.nlink() - 1));
            }
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(meta.len());
            let mut exact = Exact { inner: file.take(meta.len()), left: meta.len() };
            match tar.append_data(&mut h, &rel, &mut exact) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(Copy::Vanished(path)),
                Err(e) => return Err(Copy::Io(PathError { path, source: e })),
            }
            done.bytes += meta.len();
            progress.bytes += meta.len();
        }
        progress.files += 1;
        on_progress(progress);
    }
    let gz = tar.into_inner().with_path(tmp)?;
    let buf = gz.finish().with_path(tmp)?;
    let out = buf.into_inner().map_err(|e| PathError { path: tmp.to_path_buf(), source: e.into_error() })?;
    out.sync_all().with_path(tmp)?;
    Ok(done)
}

/// Reads exactly `left` bytes, or fails with `UnexpectedEof` (a file that
/// shrank while it was copied would otherwise break the archive).
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the file shrank while it was copied"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// What a restore wrote, and what fsck found in it.
#[derive(Debug)]
pub struct RestoreReport {
    /// The restored org.
    pub dir: PathBuf,
    /// The archive's manifest.
    pub manifest: Manifest,
    /// Of the files, how many were hard links.
    pub links: u64,
    /// Bytes of file contents written.
    pub bytes: u64,
    /// fsck's findings on the restored org.
    pub fsck: crate::fsck::Report,
}

/// Why a restore wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The target folder holds something.
    #[error("{} is not empty\n  help: restore into a new folder or an empty one", .0.display())]
    NotEmpty(PathBuf),
    /// An entry that a restore does not write.
    #[error("{}: entry {index} `{name}`: {why}; nothing was written\n  help: restore only archives written by `lemming backup`", file.display())]
    Refused {
        /// The archive.
        file: PathBuf,
        /// The entry's position, from 1 (the manifest).
        index: u64,
        /// The entry's name, as stored (escaped).
        name: String,
        /// Why it is refused.
        why: String,
    },
    /// The archive cannot be read to its end.
    #[error("{} is truncated or corrupt at entry {index}{}: {source}; nothing was written\n  help: take the backup again, or restore another copy", file.display(), after.as_ref().map(|a| format!(" (after `{a}`)")).unwrap_or_default())]
    Corrupt {
        /// The archive.
        file: PathBuf,
        /// The entry where reading broke, from 1.
        index: u64,
        /// The last entry read whole.
        after: Option<String>,
        /// What the reader said.
        source: io::Error,
    },
    /// A file operation failed.
    #[error(transparent)]
    Io(#[from] PathError),
}

type Archive = tar::Archive<flate2::read::GzDecoder<BufReader<File>>>;

fn open_archive(file: &Path) -> Result<Archive, PathError> {
    let f = File::open(file).with_path(file)?;
    Ok(tar::Archive::new(flate2::read::GzDecoder::new(BufReader::with_capacity(256 * 1024, f))))
}

/// What kind of entry, once checked.
enum Kind {
    Dir,
    File,
    Link(PathBuf),
}

/// Unpacks the archive `file` into `dir`, which must be missing or empty
/// (see the module's docs), then runs fsck on it. `on_progress` sees every
/// file written.
pub fn restore(file: &Path, dir: &Path, mut on_progress: impl FnMut(Progress)) -> Result<RestoreReport, RestoreError> {
    let existed = match fs::read_dir(dir) {
        Ok(mut d) => match d.next() {
            Some(_) => return Err(RestoreError::NotEmpty(dir.to_path_buf())),
            None => true,
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => return Err(RestoreError::NotEmpty(dir.to_path_buf())),
        Err(e) => return Err(PathError { path: dir.to_path_buf(), source: e }.into()),
    };
    let manifest = check_archive(file)?;

    let name = dir.file_name().ok_or_else(|| RestoreError::Io(not_a_file(dir)))?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).with_path(&parent)?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".restoring-{}", std::process::id()));
    let tmp = parent.join(tmp_name);
    fs::create_dir(&tmp).with_path(&tmp)?;
    let mut guard = Leftover(Some(tmp.clone()));

    let mut archive = open_archive(file)?;
    let entries = archive.entries().with_path(file)?;
    let mut progress = Progress { total: manifest.files, ..Progress::default() };
    let mut links = 0;
    for (i, entry) in entries.enumerate() {
        let index = i as u64 + 1;
        let mut entry = entry.map_err(|source| corrupt(file, index, None, source))?;
        if index == 1 {
            continue;
        }
        let rel = entry.path().map_err(|source| corrupt(file, index, None, source))?.into_owned();
        // Checked before, and again here: the file is opened twice, and what
        // is written must stay inside the folder even if it changed between.
        let checked = check_path(&rel).and_then(|()| kind(&entry)).and_then(|k| match &k {
            Kind::Link(target) => check_path(target).map(|()| k),
            _ => Ok(k),
        });
        let path = tmp.join(&rel);
        match checked {
            Ok(Kind::Dir) => fs::create_dir_all(&path).with_path(&path)?,
            Ok(Kind::File) => {
                if let Some(p) = path.parent() {
                    fs::create_dir_all(p).with_path(p)?;
                }
                let mode = entry.header().mode().unwrap_or(0o644) & 0o777 | 0o600;
                let mut out =
                    OpenOptions::new().write(true).create_new(true).mode(mode).open(&path).with_path(&path)?;
                let n = io::copy(&mut entry, &mut out).map_err(|source| corrupt(file, index, None, source))?;
                #[cfg(not(target_os = "linux"))]
                out.sync_all().with_path(&path)?;
                progress.bytes += n;
                progress.files += 1;
            }
            Ok(Kind::Link(target)) => {
                if let Some(p) = path.parent() {
                    fs::create_dir_all(p).with_path(p)?;
                }
                fs::hard_link(tmp.join(target), &path).with_path(&path)?;
                links += 1;
                progress.files += 1;
            }
            // Checked before: only a changed archive gets here.
            Err(why) => return Err(RestoreError::Refused { file: file.to_path_buf(), index, name: shown(&rel), why }),
        }
        on_progress(progress);
    }
    fsx::sync_fs(&tmp)?;
    if existed {
        fs::remove_dir(dir).with_path(dir)?;
    }
    fs::rename(&tmp, dir).with_path(dir)?;
    guard.0 = None;
    fsx::sync_dir(&parent)?;
    let fsck = crate::fsck::check(dir);
    Ok(RestoreReport { dir: dir.to_path_buf(), manifest, links, bytes: progress.bytes, fsck })
}

fn corrupt(file: &Path, index: u64, after: Option<&Path>, source: io::Error) -> RestoreError {
    RestoreError::Corrupt { file: file.to_path_buf(), index, after: after.map(shown), source }
}

/// An entry name from the archive, safe to show.
fn shown(p: &Path) -> String {
    crate::term::line(&p.to_string_lossy()).into_owned()
}

/// Reads the whole archive and checks every entry (see the module's docs)
/// and the gzip checksum; returns the manifest.
fn check_archive(file: &Path) -> Result<Manifest, RestoreError> {
    let refused = |index: u64, name: &Path, why: String| RestoreError::Refused {
        file: file.to_path_buf(),
        index,
        name: shown(name),
        why,
    };
    let mut archive = open_archive(file)?;
    let mut manifest: Option<Manifest> = None;
    let (mut files, mut dirs): (HashSet<PathBuf>, HashSet<PathBuf>) = (HashSet::new(), HashSet::new());
    let mut last: Option<PathBuf> = None;
    let mut index = 0u64;
    {
        let entries = archive.entries().with_path(file)?;
        for entry in entries {
            index += 1;
            let mut entry = entry.map_err(|source| corrupt(file, index, last.as_deref(), source))?;
            let raw = entry.path_bytes().into_owned();
            let rel = PathBuf::from(std::ffi::OsStr::from_bytes(&raw));
            if index == 1 {
                let is_manifest = rel == Path::new(MANIFEST) && entry.header().entry_type().is_file();
                if !is_manifest || entry.size() > MANIFEST_MAX {
                    return Err(refused(index, &rel, format!("the archive does not start with its manifest `{MANIFEST}`; it was not written by `lemming backup`")));
                }
                let mut json = Vec::new();
                entry.read_to_end(&mut json).map_err(|source| corrupt(file, index, None, source))?;
                let m: Manifest = serde_json::from_slice(&json)
                    .map_err(|e| refused(index, &rel, format!("the manifest cannot be read: {e}")))?;
                if m.format != FORMAT {
                    return Err(refused(
                        index,
                        &rel,
                        format!(
                            "archive format {} is not one this lemming {} reads (format {FORMAT}); use the lemming that wrote it ({})",
                            m.format,
                            env!("CARGO_PKG_VERSION"),
                            m.lemming_version
                        ),
                    ));
                }
                manifest = Some(m);
                last = Some(rel);
                continue;
            }
            check_path(&rel).map_err(|why| refused(index, &rel, why))?;
            if files.contains(&rel) || dirs.contains(&rel) || rel == Path::new(MANIFEST) {
                return Err(refused(index, &rel, "the name comes twice".into()));
            }
            match kind(&entry).map_err(|why| refused(index, &rel, why))? {
                Kind::Dir => {
                    dirs.insert(rel.clone());
                }
                Kind::File => {
                    files.insert(rel.clone());
                }
                Kind::Link(target) => {
                    if !files.contains(&target) {
                        return Err(refused(
                            index,
                            &rel,
                            format!("a hard link to `{}`, which is not a file earlier in the archive", shown(&target)),
                        ));
                    }
                    files.insert(rel.clone());
                }
            }
            last = Some(rel);
        }
    }
    // The gzip checksum and length are checked at the end of the stream.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|source| corrupt(file, index + 1, last.as_deref(), source))?;
    let Some(manifest) = manifest else {
        return Err(corrupt(file, 1, None, io::Error::new(io::ErrorKind::UnexpectedEof, "the archive is empty")));
    };
    if files.len() as u64 != manifest.files {
        let e = io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the manifest promises {} files, the archive holds {}", manifest.files, files.len()),
        );
        return Err(corrupt(file, index + 1, last.as_deref(), e));
    }
    Ok(manifest)
}

/// A name a restore may write: relative, only plain components.
fn check_path(rel: &Path) -> Result<(), String> {
    if rel.as_os_str().is_empty() {
        return Err("an empty name".into());
    }
    for c in rel.components() {
        match c {
            Component::Normal(_) => {}
            Component::ParentDir => return Err("the name holds `..`: it would write outside the folder".into()),
            Component::RootDir | Component::Prefix(_) => {
                return Err("an absolute name: it would write outside the folder".into())
            }
            Component::CurDir => return Err("the name holds `.`".into()),
        }
    }
    Ok(())
}

/// What an entry is; anything but a folder, a regular file or a hard link is refused.
fn kind<R: Read>(entry: &tar::Entry<R>) -> Result<Kind, String> {
    use tar::EntryType as T;
    match entry.header().entry_type() {
        T::Directory => Ok(Kind::Dir),
        T::Regular | T::Continuous => Ok(Kind::File),
        T::Link => {
            let target = entry
                .link_name()
                .map_err(|e| format!("its link target cannot be read: {e}"))?
                .ok_or("a hard link without a target")?
                .into_owned();
            check_path(&target).map_err(|why| format!("its link target `{}`: {why}", shown(&target)))?;
            Ok(Kind::Link(target))
        }
        T::Symlink => Err("a symbolic link: a restore writes only folders, files and hard links".into()),
        T::Char | T::Block => Err("a device: a restore writes only folders, files and hard links".into()),
        T::Fifo => Err("a fifo: a restore writes only folders, files and hard links".into()),
        other => Err(format!("an entry of type {other:?}: a restore writes only folders, files and hard links")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::new_org as org;

    fn send(root: &Path, body: &str) -> String {
        let org = crate::org::Org::load(root).unwrap();
        crate::send::send(&org, "human", "manager", body, crate::send::SendOptions::default()).unwrap().id
    }

    #[test]
    fn a_backup_waits_for_the_turn_in_progress_and_holds_the_turn_lock_while_it_copies() {
        let (d, root) = org();
        send(&root, "hello");
        let layout = Layout::new(&root);
        let turn = lock::try_turn(&layout).unwrap().unwrap();
        let file = d.path().join("b.tar.gz");
        let (tx, rx) = std::sync::mpsc::channel();
        let (r, f) = (root.clone(), file.clone());
        let copier = std::thread::spawn(move || {
            backup(&r, &f, false, |w| tx.send(w).unwrap(), |_| {}).map(|r| r.manifest.files)
        });
        assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap(), Wait::Turn);
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(!copier.is_finished() && !file.exists(), "the backup copied during the turn");
        drop(turn);
        assert!(copier.join().unwrap().unwrap() > 5);
        assert!(file.is_file());
        assert!(lock::try_turn(&layout).unwrap().is_some(), "the backup released the turn lock");
    }

    /// A real turn whose model takes 600 ms: a backup started during the call
    /// copies the org once the turn has committed, with its reply.
    #[test]
    fn a_backup_started_during_a_turn_copies_the_org_once_the_turn_commits() {
        let (d, root) = org();
        crate::testing::edit(&root, "org/models.toml", "provider = \"mock\"", "provider = \"slow\"");
        let models = std::fs::read_to_string(root.join("org/models.toml")).unwrap();
        let slow = format!("{models}\n[providers.slow]\nkind = \"mock\"\nlatency_ms = 600\n");
        std::fs::write(root.join("org/models.toml"), slow).unwrap();
        let id = send(&root, "hello");
        let r = root.clone();
        let turn = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(crate::daemon::step(&r, 1, |_, _| {})).unwrap()
        });
        let layout = Layout::new(&root);
        let t0 = Instant::now();
        while lock::try_turn(&layout).unwrap().is_some() {
            assert!(t0.elapsed() < std::time::Duration::from_secs(10), "the turn never started");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let file = d.path().join("b.tar.gz");
        let mut waited = Vec::new();
        let report = backup(&root, &file, false, |w| waited.push(w), |_| {}).unwrap();
        assert_eq!(turn.join().unwrap()[0].turn, 1);
        assert_eq!(report.manifest.turn, 1, "the copy was taken before the turn committed");
        assert_eq!(waited, [Wait::Turn]);
        let restored = d.path().join("r");
        let back = restore(&file, &restored, |_| {}).unwrap();
        assert!(back.fsck.ok(), "{:?}", back.fsck.findings);
        let human = crate::mailbox::MailStore::unread(&Layout::new(&restored).mail(), "human").unwrap().0;
        assert!(
            human.iter().any(|m| m.reply_to.as_deref() == Some(id.as_str())),
            "the turn's reply is not in the copy"
        );
    }

    #[test]
    fn an_existing_file_is_refused_without_force_and_a_file_inside_the_org_always() {
        let (d, root) = org();
        let file = d.path().join("b.tar.gz");
        std::fs::write(&file, "keep me").unwrap();
        let e = backup(&root, &file, false, |_| {}, |_| {}).unwrap_err();
        assert!(matches!(e, BackupError::Exists(_)), "{e}");
        assert!(e.to_string().contains("--force"), "{e}");
        assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
        backup(&root, &file, true, |_| {}, |_| {}).unwrap();
        assert_ne!(std::fs::read(&file).unwrap(), b"keep me");
        let e = backup(&root, &root.join("shared.tar.gz"), false, |_| {}, |_| {}).unwrap_err();
        assert!(matches!(e, BackupError::InsideOrg { .. }), "{e}");
        let left: Vec<_> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 2, "no scratch or tmp file is left: {left:?}");
    }

    #[test]
    fn the_manifest_comes_first_and_state_that_is_not_state_stays_out() {
        let (d, root) = org();
        let layout = Layout::new(&root);
        send(&root, "hello");
        std::fs::create_dir_all(layout.state_dir().join("index")).unwrap();
        std::fs::write(layout.state_dir().join("index/search.db"), "derived").unwrap();
        std::fs::write(layout.state_tmp().join("half"), "half a file").unwrap();
        std::fs::write(layout.daemon_json(), "{}").unwrap();
        let file = d.path().join("b.tar.gz");
        let mut seen = Vec::new();
        let report = backup(&root, &file, false, |_| {}, |p| seen.push(p)).unwrap();
        let mut a = open_archive(&file).unwrap();
        let names: Vec<String> =
            a.entries().unwrap().map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names[0], MANIFEST);
        for out in ["org/state/index", "org/state/tmp/half", "org/state/daemon.json", "org/state/lock"] {
            assert!(!names.iter().any(|n| n.starts_with(out)), "{out} is in the archive: {names:?}");
        }
        assert!(names.iter().any(|n| n == "org/state/tmp"), "the tmp folder itself is kept (empty)");
        assert!(names.iter().any(|n| n == "org/org.toml"));
        assert_eq!(seen.last().unwrap().files, report.manifest.files);
        assert_eq!(seen.last().unwrap().total, report.manifest.files);
    }

    #[test]
    fn check_path_refuses_parents_and_absolute_names() {
        assert!(check_path(Path::new("agents/a/inbox/new/x.json")).is_ok());
        assert!(check_path(Path::new("../x")).unwrap_err().contains(".."));
        assert!(check_path(Path::new("a/../../x")).unwrap_err().contains(".."));
        assert!(check_path(Path::new("/etc/passwd")).unwrap_err().contains("absolute"));
        assert!(check_path(Path::new("")).is_err());
    }
}
