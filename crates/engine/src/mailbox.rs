//! The mailboxes: the only code that knows where messages live on disk.
//!
//! ```text
//! agents/<name>/outbox/{tmp,new,sent}/   written to tmp, renamed to new, moved to sent once routed
//! agents/<name>/inbox/{tmp,new,cur}/     delivered to new; moved to cur once consumed
//! agents/<name>/inbox/.attempts.json     failed attempts per unread message
//! org/state/dead/<id>.json, <id>.why.json  undeliverable or poisoned mail and the reason
//! org/state/dead/<id>.dir/                 a directory found in a mailbox, moved aside
//! ```
//!
//! Writes go through [`Batch`] (group commit) or [`write_atomic`] (one file, G1).
//! Delivery is idempotent by id: a message already in `new/` or `cur/` is not written again.
//!
//! Nothing in `new/` is trusted to be what its name says: entries are read with
//! [`fsx::read_entry`] (never following a link, never blocking on a FIFO, never
//! reading past a size limit), and anything that is not a regular file is set
//! aside as `not_a_regular_file`.

use std::collections::{BTreeMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{PathError, WithPath};
use crate::fsx::{self, list_entries, list_json, write_atomic, Batch, Entry};
pub use crate::fsx::{EntryKind, FileId};
use crate::message::{Message, ParseMessageError};

/// The most bytes read of one inbox file, unless the org's `max_message_bytes`
/// is larger (see [`Mailbox::with_read_limit`]).
pub const READ_LIMIT: u64 = 16 << 20;

/// The mailboxes of one org.
#[derive(Debug, Clone)]
pub struct Mailbox {
    root: PathBuf,
    read_limit: u64,
}

/// Why a message went to `dead/`, stored as `<id>.why.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadReason {
    /// The dead letter's id (its file stem).
    pub id: String,
    /// A machine-readable code: `malformed`, `not_a_regular_file`, `sender_mismatch`,
    /// `unknown_recipient`, `chart_send_to`, `chart_read_from`, `oversize`, `expired`,
    /// `duplicate_id`, `poison`.
    pub reason: String,
    /// What happened, for people.
    pub detail: String,
    /// The agent whose mailbox held it.
    pub mailbox: String,
    /// Recipients it was refused for, when known.
    #[serde(default)]
    pub to: Vec<String>,
    /// The turn it was refused on.
    pub turn: u64,
    /// When.
    pub at: chrono::DateTime<chrono::Utc>,
}

/// Failed attempts on one unread message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// How many turns failed with this message unread in the prompt.
    pub count: u32,
    /// The last turn that failed (a repeated turn does not count twice).
    pub last_turn: u64,
    /// The last error.
    pub last_error: String,
}

/// Failed attempts by message id.
pub type Attempts = BTreeMap<String, Attempt>;

/// What was read from one inbox folder for a person's view.
#[derive(Debug, Default)]
pub struct MailRead {
    /// The messages, oldest id first.
    pub messages: Vec<Message>,
    /// Files that are not valid messages.
    pub bad: Vec<BadFile>,
    /// Files that could not be read, with why.
    pub unreadable: Vec<PathError>,
}

/// Why an entry of a mailbox is not a usable message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    /// A directory, symbolic link, FIFO, socket or device: never read, never followed.
    #[error("it is {}{}, not a regular file; it was neither read nor followed", .kind.describe(), show_target(.target))]
    NotRegular {
        /// What it is.
        kind: EntryKind,
        /// Where it points, for a symbolic link.
        target: Option<PathBuf>,
    },
    /// Larger than the size limit.
    #[error("it is {size} bytes; the limit is {limit} bytes for a file in an inbox (the larger of 16 MiB and max_message_bytes in org/org.toml)")]
    Oversize {
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A name that does not end in `.json`.
    #[error("its name does not end in .json: message files are named <id>.json (names starting with a dot are ignored, for files still being written)")]
    Name,
    /// Bytes that are not a message.
    #[error(transparent)]
    Parse(#[from] ParseMessageError),
}

impl Unusable {
    /// The dead-letter reason code.
    pub fn code(&self) -> &'static str {
        match self {
            Unusable::NotRegular { .. } => "not_a_regular_file",
            Unusable::Oversize { .. } => "oversize",
            Unusable::Name | Unusable::Parse(_) => "malformed",
        }
    }
}

fn show_target(target: &Option<PathBuf>) -> String {
    target.as_ref().map(|t| format!(" to `{}`", crate::term::line(&t.to_string_lossy()))).unwrap_or_default()
}

/// A file name for messages and diagnostics: escaped as [`crate::term::line`]
/// escapes any one-line field, bytes that are not UTF-8 replaced.
pub fn show_name(name: &OsStr) -> String {
    crate::term::line(&name.to_string_lossy()).into_owned()
}

/// A dead-letter id for a file that has no usable id of its own: unique per
/// (reason, turn, mailbox, file name), and the same when the turn is repeated.
pub fn dead_id(code: &str, turn: u64, agent: &str, file: &str) -> String {
    let stem: String = file
        .trim_end_matches(".json")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .take(48)
        .collect();
    format!("{code}-t{turn}-{agent}-{stem}")
}

/// What a dead letter holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Letter {
    /// A hard link of the refused regular file, which must still be this very
    /// file when it is linked.
    Link(FileId),
    /// A note written in place of an entry that is not a regular file: there
    /// are no bytes to keep, and a link would point outside the org.
    Note {
        /// What the entry was.
        kind: EntryKind,
        /// Where it pointed, for a symbolic link.
        target: Option<PathBuf>,
    },
}

/// A file in `inbox/new` that is not a valid message.
#[derive(Debug)]
pub struct BadFile {
    /// Its file name.
    pub file: OsString,
    /// Its bytes (none when it was not read).
    pub bytes: Vec<u8>,
    /// Why it is bad.
    pub error: Unusable,
    /// What its dead letter will hold.
    pub letter: Letter,
}

impl BadFile {
    /// Its file name, for people.
    pub fn name(&self) -> String {
        show_name(&self.file)
    }
}

impl Mailbox {
    /// The mailboxes of the org at `root`; inbox files are read up to [`READ_LIMIT`] bytes.
    pub fn new(root: impl Into<PathBuf>) -> Mailbox {
        Mailbox { root: root.into(), read_limit: READ_LIMIT }
    }

    /// Reads inbox files up to `max_message_bytes` when that is more than [`READ_LIMIT`]
    /// (so that mail the org accepted can always be read back).
    pub fn with_read_limit(mut self, max_message_bytes: u64) -> Mailbox {
        self.read_limit = max_message_bytes.max(READ_LIMIT);
        self
    }

    fn agent(&self, agent: &str) -> PathBuf {
        self.root.join("agents").join(agent)
    }
    fn outbox(&self, agent: &str, sub: &str) -> PathBuf {
        self.agent(agent).join("outbox").join(sub)
    }
    fn inbox(&self, agent: &str, sub: &str) -> PathBuf {
        self.agent(agent).join("inbox").join(sub)
    }
    /// `org/state/dead/`.
    pub fn dead_dir(&self) -> PathBuf {
        self.root.join("org/state/dead")
    }
    fn state_tmp(&self) -> PathBuf {
        self.root.join("org/state/tmp")
    }

    /// Creates an agent's mailbox folders (and the dead-letter folder).
    pub fn ensure(&self, agent: &str) -> Result<(), PathError> {
        // `inbox/cur` is made last: when it exists, so do the others.
        if self.inbox(agent, "cur").is_dir() && self.dead_dir().is_dir() {
            return Ok(());
        }
        for d in [
            self.outbox(agent, "tmp"),
            self.outbox(agent, "new"),
            self.outbox(agent, "sent"),
            self.inbox(agent, "tmp"),
            self.inbox(agent, "new"),
            self.dead_dir(),
            self.state_tmp(),
            self.inbox(agent, "cur"),
        ] {
            if !d.is_dir() {
                fs::create_dir_all(&d).with_path(&d)?;
            }
        }
        Ok(())
    }

    /// Writes a message into the sender's `outbox/new/` now, durably (G1): it is
    /// fsynced, renamed into place and the folder fsynced before this returns.
    pub fn send_now(&self, agent: &str, msg: &Message) -> Result<PathBuf, PathError> {
        self.ensure(agent)?;
        let path = self.outbox(agent, "new").join(msg.file_name());
        write_atomic(&self.outbox(agent, "tmp"), &path, &msg.to_bytes())?;
        Ok(path)
    }

    /// Queues a message into an agent's outbox unless it is already there
    /// (in `new/` or `sent/`). Returns whether it was queued.
    pub fn post(&self, b: &mut Batch, agent: &str, msg: &Message) -> bool {
        let name = msg.file_name();
        if self.outbox(agent, "new").join(&name).exists() || self.outbox(agent, "sent").join(&name).exists() {
            return false;
        }
        b.write(&self.outbox(agent, "tmp"), self.outbox(agent, "new").join(name), msg.to_bytes());
        true
    }

    /// Every entry waiting in an agent's `outbox/new/` (all names but those
    /// starting with a dot, whatever they are), oldest id first.
    pub fn pending(&self, agent: &str) -> Result<Vec<OsString>, PathError> {
        list_entries(&self.outbox(agent, "new"))
    }

    /// Reads a pending outbox entry safely, up to `limit` bytes (see [`fsx::read_entry`]).
    pub fn read_pending(&self, agent: &str, file: &OsStr, limit: u64) -> Result<Entry, PathError> {
        fsx::read_entry(&self.outbox(agent, "new").join(file), limit)
    }

    /// Queues the move of a routed outbox file to `sent/`.
    pub fn mark_sent(&self, b: &mut Batch, agent: &str, file: &OsStr) {
        b.rename(self.outbox(agent, "new").join(file), self.outbox(agent, "sent").join(file));
    }

    /// Whether a message with this id is already in an agent's inbox (`new/` or `cur/`).
    pub fn has(&self, agent: &str, id: &str) -> bool {
        self.delivered_copy(agent, id).is_some()
    }

    /// The copy of message `id` in an agent's inbox (`new/`, else `cur/`), if any.
    /// Whatever holds the name counts (a link is not followed).
    pub fn delivered_copy(&self, agent: &str, id: &str) -> Option<PathBuf> {
        let name = format!("{id}.json");
        [self.inbox(agent, "new").join(&name), self.inbox(agent, "cur").join(&name)]
            .into_iter()
            .find(|p| fs::symlink_metadata(p).is_ok())
    }

    /// A copy of message `id` in an agent's inbox that is *another* message
    /// than the file `fid` with `bytes`, if there is one. Mail moves from
    /// `new/` to `cur/` at any time (a person reading): a copy that vanishes
    /// while it is looked at is looked for again in `cur/`, never taken as a
    /// conflict.
    pub fn other_copy(&self, agent: &str, id: &str, fid: FileId, bytes: &[u8]) -> Result<Option<PathBuf>, PathError> {
        let name = format!("{id}.json");
        for copy in [self.inbox(agent, "new").join(&name), self.inbox(agent, "cur").join(&name)] {
            if self.same_file(&copy, fid, bytes)? {
                return Ok(None);
            }
            if fs::symlink_metadata(&copy).is_ok() {
                return Ok(Some(copy));
            }
        }
        Ok(None)
    }

    /// Whether `path` holds the same message as the file `id` with `bytes`: it is
    /// that very file (a hard link), or a regular file with the same bytes.
    pub fn same_file(&self, path: &Path, id: FileId, bytes: &[u8]) -> Result<bool, PathError> {
        match fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_file() && FileId::of(&m) == id => return Ok(true),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e).with_path(path),
        }
        Ok(matches!(fsx::read_entry(path, bytes.len() as u64)?, Entry::File { bytes: b, .. } if b == bytes))
    }

    /// Queues delivery of a pending outbox file into an agent's `inbox/new/` as a
    /// hard link (the outbox file is already durable), unless it is already
    /// there. The link is made only if the outbox name still holds the file
    /// `checked` (the one that was read). Returns whether it was queued.
    pub fn deliver_pending(
        &self,
        b: &mut Batch,
        from: &str,
        file: &OsStr,
        to: &str,
        id: &str,
        checked: FileId,
    ) -> bool {
        if self.has(to, id) {
            return false;
        }
        b.link_same(self.outbox(from, "new").join(file), self.inbox(to, "new").join(format!("{id}.json")), checked);
        true
    }

    /// Queues delivery of a message the engine wrote (a bounce) into an agent's
    /// `inbox/new/`, unless it is already there. Returns whether it was queued.
    pub fn deliver(&self, b: &mut Batch, agent: &str, msg: &Message) -> bool {
        if self.has(agent, &msg.id) {
            return false;
        }
        b.write(&self.inbox(agent, "tmp"), self.inbox(agent, "new").join(msg.file_name()), msg.to_bytes());
        true
    }

    /// The number of unread messages (entries in `inbox/new/`).
    pub fn unread_count(&self, agent: &str) -> Result<usize, PathError> {
        Ok(list_entries(&self.inbox(agent, "new"))?.len())
    }

    /// The number of messages waiting in `outbox/new/`.
    pub fn pending_count(&self, agent: &str) -> Result<usize, PathError> {
        Ok(self.pending(agent)?.len())
    }

    /// Reads every unread message, oldest id first. Entries that are not
    /// messages (unparseable, oversize, misnamed, not regular files) are returned apart.
    pub fn unread(&self, agent: &str) -> Result<(Vec<Message>, Vec<BadFile>), PathError> {
        self.read_box(agent, "new")
    }

    /// Reads every consumed message (`inbox/cur/`), oldest id first.
    pub fn read_mail(&self, agent: &str) -> Result<Vec<Message>, PathError> {
        Ok(self.read_box(agent, "cur")?.0)
    }

    /// Like [`Mailbox::unread`], for people's views (`lemming inbox`): a file
    /// that cannot be read is returned apart with its error, and the others are
    /// still read. Only a folder that cannot be listed fails the call.
    pub fn unread_skipping(&self, agent: &str) -> Result<MailRead, PathError> {
        self.read_box_skipping(agent, "new")
    }

    /// Like [`Mailbox::read_mail`], returning files that cannot be read (or
    /// parsed) apart instead of failing.
    pub fn read_mail_skipping(&self, agent: &str) -> Result<MailRead, PathError> {
        self.read_box_skipping(agent, "cur")
    }

    fn read_box(&self, agent: &str, sub: &str) -> Result<(Vec<Message>, Vec<BadFile>), PathError> {
        let read = self.read_box_skipping(agent, sub)?;
        match read.unreadable.into_iter().next() {
            Some(e) => Err(e),
            None => Ok((read.messages, read.bad)),
        }
    }

    fn read_box_skipping(&self, agent: &str, sub: &str) -> Result<MailRead, PathError> {
        let dir = self.inbox(agent, sub);
        let mut good = Vec::new();
        let mut bad = Vec::new();
        let mut unreadable = Vec::new();
        for file in list_entries(&dir)? {
            let p = dir.join(&file);
            let (id, bytes) = match fsx::read_entry(&p, self.read_limit) {
                Ok(Entry::File { id, bytes }) => (id, bytes),
                // Consumed or moved by someone else meanwhile.
                Ok(Entry::Gone) => continue,
                Ok(Entry::TooLarge { id, size }) => {
                    let error = Unusable::Oversize { size, limit: self.read_limit };
                    bad.push(BadFile { file, bytes: vec![], error, letter: Letter::Link(id) });
                    continue;
                }
                Ok(Entry::NotRegular { kind, target }) => {
                    let letter = Letter::Note { kind, target: target.clone() };
                    bad.push(BadFile { file, bytes: vec![], error: Unusable::NotRegular { kind, target }, letter });
                    continue;
                }
                Err(e) => {
                    unreadable.push(e);
                    continue;
                }
            };
            if !file.to_str().is_some_and(|n| n.ends_with(".json")) {
                bad.push(BadFile { file, bytes, error: Unusable::Name, letter: Letter::Link(id) });
                continue;
            }
            match Message::parse(&bytes) {
                Ok(m) => good.push(m),
                Err(e) => bad.push(BadFile { file, bytes, error: e.into(), letter: Letter::Link(id) }),
            }
        }
        Ok(MailRead { messages: good, bad, unreadable })
    }

    /// Queues the move of a consumed message from `inbox/new/` to `inbox/cur/`.
    pub fn consume(&self, b: &mut Batch, agent: &str, id: &str) {
        let name = format!("{id}.json");
        let from = self.inbox(agent, "new").join(&name);
        if from.exists() {
            b.rename(from, self.inbox(agent, "cur").join(name));
        }
    }

    /// Moves messages of a person's inbox to `cur/` now, durably (`lemming inbox`).
    pub fn mark_read_now(&self, agent: &str, ids: &[String]) -> Result<(), PathError> {
        if ids.is_empty() {
            return Ok(());
        }
        for id in ids {
            let name = format!("{id}.json");
            let from = self.inbox(agent, "new").join(&name);
            match fs::rename(&from, self.inbox(agent, "cur").join(&name)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_path(&from),
            }
        }
        fsx::sync_dir(&self.inbox(agent, "new"))?;
        fsx::sync_dir(&self.inbox(agent, "cur"))
    }

    fn dead_why(&self, b: &mut Batch, why: &DeadReason) {
        let mut bytes = serde_json::to_vec_pretty(why).expect("a reason always serializes");
        bytes.push(b'\n');
        b.write(&self.state_tmp(), self.dead_dir().join(format!("{}.why.json", why.id)), bytes);
    }

    /// A dead-letter id for the mailbox entry `entry`, starting from `id`:
    /// `id` itself unless `dead/<id>.json` (or `dead/<id>.dir`) holds something
    /// else (then `id.1`, `id.2`, ...). When it already holds this very letter
    /// (a repeated turn: the same file linked, or the same note) the id is
    /// reused, so a repeat adds nothing. `taken` are ids already used in the
    /// current batch.
    pub fn free_dead_id(&self, id: &str, entry: &Path, letter: &Letter, taken: &HashSet<String>) -> String {
        let mut candidate = id.to_string();
        for n in 1.. {
            if !taken.contains(&candidate) {
                let path = self.dead_dir().join(format!("{candidate}.json"));
                let aside = self.dead_dir().join(format!("{candidate}.dir"));
                let same = match fs::symlink_metadata(&path) {
                    Err(_) if fs::symlink_metadata(&aside).is_err() => return candidate,
                    Err(_) => false,
                    Ok(m) => match letter {
                        Letter::Link(fid) => m.file_type().is_file() && FileId::of(&m) == *fid,
                        Letter::Note { .. } => {
                            let note = self.note(entry, letter, &candidate);
                            matches!(fsx::read_entry(&path, note.len() as u64), Ok(Entry::File { bytes, .. }) if bytes == note)
                        }
                    },
                };
                if same {
                    return candidate;
                }
            }
            candidate = format!("{id}.{n}");
        }
        candidate
    }

    /// The note that stands as the dead letter `dead_id` of an entry that is
    /// not a regular file (empty for a [`Letter::Link`]). It depends on nothing
    /// but its arguments, so a repeated turn writes the same note.
    pub fn note(&self, entry: &Path, letter: &Letter, dead_id: &str) -> Vec<u8> {
        let Letter::Note { kind, target } = letter else { return Vec::new() };
        let rel = entry.strip_prefix(&self.root).unwrap_or(entry);
        let mut v = serde_json::json!({
            "note": format!(
                "nothing was read: {} was {}, not a regular file, so there are no bytes to keep",
                rel.display(),
                kind.describe()
            ),
            "entry": rel.to_string_lossy(),
            "kind": kind.as_str(),
        });
        if let Some(t) = target {
            v["target"] = t.to_string_lossy().into();
        }
        if *kind == EntryKind::Directory {
            v["moved_to"] = format!("org/state/dead/{dead_id}.dir").into();
        }
        let mut bytes = serde_json::to_vec_pretty(&v).expect("a note always serializes");
        bytes.push(b'\n');
        bytes
    }

    /// Queues the dead letter of `entry` (a hard link of the file, or a note)
    /// and its reason beside it.
    fn dead_letter(&self, b: &mut Batch, entry: &Path, letter: &Letter, why: &DeadReason) {
        self.dead_why(b, why);
        let path = self.dead_dir().join(format!("{}.json", why.id));
        match letter {
            Letter::Link(fid) => b.link_same(entry.to_path_buf(), path, *fid),
            Letter::Note { .. } => b.write(&self.state_tmp(), path, self.note(entry, letter, &why.id)),
        }
    }

    /// Queues the removal of `entry` from its `new/` folder once its dead letter
    /// `dead_id` is made: a directory is moved to `dead/<dead_id>.dir` (its
    /// contents are not ours to delete), anything else is unlinked (a link
    /// is removed, never what it points to).
    fn set_aside(&self, b: &mut Batch, entry: &Path, letter: &Letter, dead_id: &str) {
        match letter {
            Letter::Note { kind: EntryKind::Directory, .. } => {
                b.rename(entry.to_path_buf(), self.dead_dir().join(format!("{dead_id}.dir")))
            }
            _ => b.remove(entry.to_path_buf()),
        }
    }

    /// Queues a dead letter for a pending outbox entry: the file is linked as
    /// `dead/<id>.json` (or a note written there) and the reason written beside
    /// it. The caller then moves the file to `sent/` (some recipients got it)
    /// or drops it ([`Mailbox::drop_pending`]).
    pub fn dead_pending(&self, b: &mut Batch, agent: &str, file: &OsStr, letter: &Letter, why: &DeadReason) {
        self.dead_letter(b, &self.outbox(agent, "new").join(file), letter, why);
    }

    /// Queues a dead letter for an entry of `inbox/new/` that is not a message
    /// (see [`Mailbox::unread`]), under a free id made from its reason, the turn
    /// and its name, then its removal from `inbox/new/`. `taken` gathers the
    /// dead ids used by the batch; `at` is when. Returns the reason.
    pub fn dead_bad(
        &self,
        b: &mut Batch,
        agent: &str,
        bad: &BadFile,
        turn: u64,
        at: chrono::DateTime<chrono::Utc>,
        taken: &mut HashSet<String>,
    ) -> DeadReason {
        let entry = self.inbox(agent, "new").join(&bad.file);
        let code = bad.error.code();
        let id = self.free_dead_id(&dead_id(code, turn, agent, &bad.name()), &entry, &bad.letter, taken);
        taken.insert(id.clone());
        let why = DeadReason {
            id: id.clone(),
            reason: code.into(),
            detail: format!("{}: {}", bad.name(), bad.error),
            mailbox: agent.into(),
            to: vec![],
            turn,
            at,
        };
        self.dead_letter(b, &entry, &bad.letter, &why);
        self.set_aside(b, &entry, &bad.letter, &id);
        why
    }

    /// Moves entries of a person's `inbox/new/` that are not messages to dead
    /// now, durably (`lemming inbox`). `turn` is the last committed turn.
    pub fn dead_bad_now(&self, agent: &str, bad: &[BadFile], turn: u64) -> Result<Vec<DeadReason>, PathError> {
        if bad.is_empty() {
            return Ok(vec![]);
        }
        self.ensure(agent)?;
        let mut b = Batch::new();
        let mut taken = HashSet::new();
        let at = chrono::Utc::now();
        let whys = bad.iter().map(|f| self.dead_bad(&mut b, agent, f, turn, at, &mut taken)).collect();
        b.commit(&self.root)?;
        Ok(whys)
    }

    /// Queues a dead letter for an unread inbox file: linked as `dead/<id>.json`
    /// with the reason beside it, then removed from `inbox/new/`.
    pub fn dead_unread(&self, b: &mut Batch, agent: &str, file: &str, why: &DeadReason) {
        self.dead_why(b, why);
        b.link(self.inbox(agent, "new").join(file), self.dead_dir().join(format!("{}.json", why.id)));
        b.remove(self.inbox(agent, "new").join(file));
    }

    /// Queues the removal of an entry from `outbox/new/` once its dead letter
    /// `dead_id` is made (a directory is moved to `dead/<dead_id>.dir`).
    pub fn drop_pending(&self, b: &mut Batch, agent: &str, file: &OsStr, letter: &Letter, dead_id: &str) {
        self.set_aside(b, &self.outbox(agent, "new").join(file), letter, dead_id);
    }

    /// Every dead letter's reason, by id.
    pub fn dead_letters(&self) -> Result<Vec<DeadReason>, PathError> {
        let dir = self.dead_dir();
        let mut out = Vec::new();
        for file in list_json(&dir)? {
            if let Some(stem) = file.strip_suffix(".why.json") {
                let p = dir.join(&file);
                // One reason that cannot be read or parsed is shown as such; the others still are.
                let parsed = crate::fsx::read_small(&p, READ_LIMIT)
                    .map_err(|e| e.to_string())
                    .and_then(|b| b.ok_or_else(|| format!("{}: removed while it was read", p.display())))
                    .and_then(|b| serde_json::from_slice::<DeadReason>(&b).map_err(|e| e.to_string()));
                match parsed {
                    Ok(r) => out.push(r),
                    Err(e) => out.push(DeadReason {
                        id: stem.to_string(),
                        reason: "unreadable_reason".into(),
                        detail: format!("{}: {e}", p.display()),
                        mailbox: String::new(),
                        to: vec![],
                        turn: 0,
                        at: chrono::Utc::now(),
                    }),
                }
            }
        }
        Ok(out)
    }

    /// The number of dead letters.
    pub fn dead_count(&self) -> Result<usize, PathError> {
        Ok(list_json(&self.dead_dir())?.iter().filter(|f| f.ends_with(".why.json")).count())
    }

    fn attempts_path(&self, agent: &str) -> PathBuf {
        self.agent(agent).join("inbox/.attempts.json")
    }

    /// Failed attempts on an agent's unread mail (none when the file cannot be read).
    pub fn attempts(&self, agent: &str) -> Attempts {
        self.try_attempts(agent).unwrap_or_default()
    }

    /// Failed attempts on an agent's unread mail, or why `.attempts.json` cannot
    /// be read or parsed (a missing file is no attempts).
    pub fn try_attempts(&self, agent: &str) -> Result<Attempts, PathError> {
        let path = self.attempts_path(agent);
        match crate::fsx::read_small(&path, READ_LIMIT)? {
            Some(b) => serde_json::from_slice(&b)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
                .with_path(&path),
            None => Ok(Attempts::new()),
        }
    }

    /// Queues a rewrite of an agent's attempts (removed when empty).
    pub fn set_attempts(&self, b: &mut Batch, agent: &str, attempts: &Attempts) {
        let path = self.attempts_path(agent);
        if attempts.is_empty() {
            if path.exists() {
                b.remove(path);
            }
        } else {
            let bytes = serde_json::to_vec_pretty(attempts).expect("attempts always serialize");
            b.write(&self.inbox(agent, "tmp"), path, bytes);
        }
    }

    /// Leftover files in the `tmp/` folders of an agent's mailboxes.
    pub fn tmp_leftovers(&self, agent: &str) -> Vec<PathBuf> {
        [self.outbox(agent, "tmp"), self.inbox(agent, "tmp")]
            .iter()
            .flat_map(|d| fs::read_dir(d).into_iter().flatten().flatten().map(|e| e.path()))
            .collect()
    }

    /// The path of an inbox folder, for diagnostics and fsck.
    pub fn inbox_path(&self, agent: &str, sub: &str) -> PathBuf {
        self.inbox(agent, sub)
    }

    /// The path of an outbox folder, for diagnostics and fsck.
    pub fn outbox_path(&self, agent: &str, sub: &str) -> PathBuf {
        self.outbox(agent, sub)
    }

    /// The org root.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An oversize inbox file's reason states the limit that was applied, and
    /// does not pin it on `max_message_bytes` alone: with the default 64 KiB
    /// setting, the inbox limit is 16 MiB, and the user must be able to tell
    /// why a file under 16 MiB would have passed.
    #[test]
    fn oversize_inbox_file_names_the_rule_of_its_limit() {
        let d = tempfile::tempdir().unwrap();
        let mb = Mailbox::new(d.path()).with_read_limit(65536);
        let new = mb.inbox("a", "new");
        fs::create_dir_all(&new).unwrap();
        let f = fs::File::create(new.join("big.json")).unwrap();
        f.set_len(READ_LIMIT + 1).unwrap();
        let read = mb.unread_skipping("a").unwrap();
        let why = read.bad[0].error.to_string();
        assert!(why.contains(&format!("the limit is {READ_LIMIT}")), "{why}");
        assert!(why.contains("16 MiB") && why.contains("max_message_bytes"), "{why}");
    }
}
