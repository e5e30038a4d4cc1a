//! The mail store: where messages wait, are delivered, read, and set aside.
//!
//! [`MailStore`] is what the turn and the router ask of it: the entries
//! waiting in an outbox, delivering a message into an inbox (idempotent by
//! id), the unread mail, consuming it, dead letters, whether an inbox holds an
//! id, and a watch on new mail. Its one implementation is the filesystem,
//! [`FsMailStore`]:
//!
//! ```text
//! agents/<name>/outbox/{tmp,new,sent}/   written to tmp, renamed to new, moved to sent once routed
//! agents/<name>/inbox/{tmp,new,cur}/     delivered to new; moved to cur once consumed
//! agents/<name>/inbox/archive/           read mail moved aside `archive_after_turns` after it was written
//! agents/<name>/inbox/.attempts.json     failed attempts per unread message
//! org/state/dead/<id>.json, <id>.why.json  undeliverable or poisoned mail and the reason
//! org/state/dead/<id>.dir/                 a directory found in a mailbox, moved aside
//! ```
//!
//! This module is the one place that knows those names: message files
//! (`<id>.json`), dead letters and their reasons, poison letters
//! (`<id>-poison-<agent>`), the dead-letter ids of entries that have no id of
//! their own, and the reason codes ([`Reason`]).
//!
//! Changes join a group commit ([`Batch`]): the caller orders the commits
//! (deliveries durable before outbox files move to `sent/`, effects durable
//! before mail moves to `cur/`), which is what makes a crash at any point safe.
//!
//! Nothing in a mailbox is trusted to be what its name says: entries are read
//! with [`crate::fsx::read_entry`] (never following a link, never blocking on a
//! FIFO, never reading past a size limit), and anything that is not a regular
//! file is set aside as `not_a_regular_file`.

use std::collections::{BTreeMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::error::PathError;
pub use crate::fsx::{Batch, EntryKind, FileId, Moves};
use crate::message::{Message, ParseMessageError};
use crate::watch::Watcher;

mod fs;
mod scan;

pub(crate) use fs::Files;
pub use fs::{
    is_pending_entry, is_pending_folder, DeadFiles, Folder, FsMailStore, Side, ATTEMPTS_FILE, DEAD_LETTERS, FOLDERS,
    PENDING_FOLDER, UNREAD_FOLDER,
};
pub use scan::{Located, Place, Scanned, State};

/// The most bytes read of one inbox file, unless the org's `max_message_bytes`
/// is larger (see [`FsMailStore::with_read_limit`]).
pub const READ_LIMIT: u64 = 16 << 20;

/// What the turn and the router need of a mail store. Every change is queued
/// on a [`Batch`] (or, for read mail, done on a [`Moves`] that the caller
/// starts once the replies that read it are journaled), so that the caller
/// decides what is durable before what.
pub trait MailStore: Send + Sync {
    /// Creates an agent's mailbox (and the dead letters' place) if missing.
    fn ensure(&self, agent: &str) -> Result<(), PathError>;

    /// Whether `agent`'s inbox is kept by this store. Mail for an agent that
    /// lives elsewhere goes to a transport (see `transport::Transport`).
    fn is_local(&self, agent: &str) -> bool;

    /// Every entry waiting in an agent's outbox, oldest id first.
    fn pending(&self, agent: &str) -> Result<Vec<Pending>, PathError>;

    /// Reads a waiting entry, up to `limit` bytes, without trusting it to be a message.
    fn read_pending(&self, p: &Pending, limit: u64) -> Result<Outgoing, PathError>;

    /// Another message than `m` that already holds its id in the inbox of one
    /// of its recipients `to` (its `to` with groups and `*` expanded) or in
    /// the sender's sent mail, if there is one (the same message again, as
    /// after a repeated turn, is no conflict). The recipients whose inbox
    /// holds this very message already are added to `held`: they need no
    /// delivery ([`MailStore::deliver_checked`] for the others).
    fn conflict(
        &self,
        p: &Pending,
        m: &Checked,
        to: &[String],
        held: &mut Vec<String>,
    ) -> Result<Option<Conflict>, PathError>;

    /// Queues delivery of the checked entry `p` to `to`'s inbox, unless that
    /// inbox holds its id already. Returns whether it was queued. The entry
    /// is delivered only if it is still the one that was checked.
    fn deliver_pending(&self, b: &mut Batch, p: &Pending, m: &Checked, to: &str) -> bool;

    /// [`MailStore::deliver_pending`] to an inbox that [`MailStore::conflict`]
    /// has just found without the message (not in `held`): it is not looked
    /// for again.
    fn deliver_checked(&self, b: &mut Batch, p: &Pending, m: &Checked, to: &str);

    /// Queues delivery of a message the engine wrote (a bounce) into `to`'s
    /// inbox, unless it holds that id already. Returns whether it was queued.
    fn deliver(&self, b: &mut Batch, to: &str, msg: &Message) -> bool;

    /// Queues the move of a routed entry to the sender's sent mail.
    fn mark_sent(&self, b: &mut Batch, p: &Pending);

    /// Queues the dead letter of a refused entry (the entry itself, or a note
    /// when it is not a file) with its reason. `why.id` is the id to start
    /// from: the letter gets it unless it holds another letter already (see
    /// [`FsMailStore::free_dead_id`]); `taken` gathers the ids this batch
    /// uses. Returns the reason as written.
    fn refuse(
        &self,
        b: &mut Batch,
        p: &Pending,
        letter: &Letter,
        why: DeadReason,
        taken: &mut HashSet<String>,
    ) -> DeadReason;

    /// Queues the dead letter of mail that arrived from another node and was
    /// refused here (`bytes`, as they arrived) with its reason. Returns
    /// false, queuing nothing, when that letter is there already (the same
    /// arrival again).
    fn refuse_arrival(&self, b: &mut Batch, bytes: &[u8], why: &DeadReason) -> bool;

    /// Queues the removal of a refused entry from the outbox once its dead
    /// letter `dead_id` is made.
    fn drop_pending(&self, b: &mut Batch, p: &Pending, letter: &Letter, dead_id: &str);

    /// Queues a message into an agent's outbox unless it is there already. Returns whether it was queued.
    fn post(&self, b: &mut Batch, agent: &str, msg: &Message) -> bool;

    /// [`MailStore::post`] for a message that no earlier try of the turn
    /// wrote (its reply was not journaled before): it is not looked for first.
    fn post_new(&self, b: &mut Batch, agent: &str, msg: &Message);

    /// Every unread message, oldest id first, and apart the entries that are not messages.
    fn unread(&self, agent: &str) -> Result<(Vec<Message>, Vec<BadFile>), PathError>;

    /// Whether an agent's inbox holds message `id`, unread, read or archived.
    fn has(&self, agent: &str, id: &str) -> bool;

    /// Whether message `id` is unread (and not read as well) in an agent's inbox.
    fn is_unread(&self, agent: &str, id: &str) -> bool;

    /// Moves a message from unread to read (made durable later: [`Moves::leave`]).
    fn consume(&self, m: &mut Moves, agent: &str, id: &str) -> Result<(), PathError>;

    /// Queues the dead letter of an unread entry that is not a message, and
    /// its removal from the inbox. `at` is when; `taken` gathers the batch's dead ids.
    fn dead_bad(
        &self,
        b: &mut Batch,
        agent: &str,
        bad: &BadFile,
        turn: u64,
        at: chrono::DateTime<chrono::Utc>,
        taken: &mut HashSet<String>,
    ) -> DeadReason;

    /// Queues the dead letter of unread message `id` that made the agent fail
    /// too often (`poison`), and its removal from the inbox; `None` when it is
    /// no longer unread.
    fn poison(
        &self,
        b: &mut Batch,
        agent: &str,
        id: &str,
        detail: String,
        turn: u64,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Option<DeadReason>;

    /// Failed attempts on an agent's unread mail (none when they cannot be read).
    fn attempts(&self, agent: &str) -> Attempts;

    /// Queues a rewrite of an agent's attempts.
    fn set_attempts(&self, b: &mut Batch, agent: &str, attempts: &Attempts);

    /// Watches an agent's unread mail: `()` is sent on every change. `None`
    /// when no watch can be set up (callers then poll).
    fn watch(&self, agent: &str, tx: mpsc::UnboundedSender<()>) -> Option<Watcher>;

    /// Makes a batch of this store's changes durable.
    fn commit(&self, b: Batch) -> Result<(), PathError>;
}

/// An entry waiting in an agent's outbox.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pending {
    /// The agent whose outbox holds it.
    pub from: String,
    /// Its name in the outbox (any bytes: it is not trusted).
    pub name: OsString,
}

impl Pending {
    /// Its name, for people.
    pub fn show(&self) -> String {
        show_name(&self.name)
    }
}

/// What a waiting entry turned out to be.
#[derive(Debug)]
pub enum Outgoing {
    /// It went away meanwhile (routed by someone else, or removed).
    Gone,
    /// It is no message: refused whole.
    Unusable {
        /// Why.
        error: Unusable,
        /// What its dead letter holds.
        letter: Letter,
    },
    /// A message, and the very bytes that were checked.
    Message(Checked),
}

/// A message read from an outbox entry, with what identifies the entry, so
/// that only this very entry is ever delivered.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The message.
    pub msg: Message,
    fid: FileId,
    bytes: Vec<u8>,
}

impl Checked {
    fn new(msg: Message, fid: FileId, bytes: Vec<u8>) -> Checked {
        Checked { msg, fid, bytes }
    }

    /// What its dead letter holds if it is refused: the entry itself.
    pub fn letter(&self) -> Letter {
        Letter::Link(self.fid)
    }

    /// What tells this message from another with the same id.
    pub fn fingerprint(&self) -> Fingerprint {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.bytes.hash(&mut h);
        Fingerprint { fid: self.fid, hash: h.finish() }
    }
}

/// The entry and a hash of the bytes of a checked message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    fid: FileId,
    hash: u64,
}

impl Fingerprint {
    /// Whether both are the same message: the same entry (a hard link), or the same bytes.
    pub fn same(&self, other: &Fingerprint) -> bool {
        self.fid == other.fid || self.hash == other.hash
    }
}

/// Where another message with the same id already is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conflict {
    /// In a recipient's inbox.
    Delivered {
        /// The recipient.
        to: String,
        /// The copy, relative to the org root.
        copy: PathBuf,
    },
    /// In the sender's sent mail, under the same name.
    Sent {
        /// The sent copy, relative to the sender's folder.
        copy: PathBuf,
    },
}

/// Why a message went to dead: the reason codes, serialized as snake_case
/// strings. A code this version does not know is kept as it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// Not a message: bytes that do not parse, or a name that is not `<id>.json`.
    Malformed,
    /// A directory, symbolic link, FIFO, socket or device.
    NotARegularFile,
    /// `from` is not the agent whose outbox held it.
    SenderMismatch,
    /// A recipient that is no agent.
    UnknownRecipient,
    /// `to` names a group (`@name`) that org.toml does not define.
    UnknownGroup,
    /// `to` reaches nobody (`*` from a sender who may write to no agent, or a
    /// group whose only member is the sender).
    NoRecipient,
    /// The sender may not send to the recipient.
    ChartSendTo,
    /// The recipient may not read from the sender.
    ChartReadFrom,
    /// Larger than the size limit.
    Oversize,
    /// Older than its `ttl_turns`.
    Expired,
    /// Its id is another message's.
    DuplicateId,
    /// It made its reader fail `max_attempts` times.
    Poison,
    /// A reason file that cannot be read (shown in its letter's place).
    UnreadableReason,
    /// A code this version does not know.
    Other(String),
}

impl Reason {
    const KNOWN: [Reason; 13] = [
        Reason::Malformed,
        Reason::NotARegularFile,
        Reason::SenderMismatch,
        Reason::UnknownRecipient,
        Reason::UnknownGroup,
        Reason::NoRecipient,
        Reason::ChartSendTo,
        Reason::ChartReadFrom,
        Reason::Oversize,
        Reason::Expired,
        Reason::DuplicateId,
        Reason::Poison,
        Reason::UnreadableReason,
    ];

    /// The code, as written in `<id>.why.json` and the events.
    pub fn as_str(&self) -> &str {
        match self {
            Reason::Malformed => "malformed",
            Reason::NotARegularFile => "not_a_regular_file",
            Reason::SenderMismatch => "sender_mismatch",
            Reason::UnknownRecipient => "unknown_recipient",
            Reason::UnknownGroup => "unknown_group",
            Reason::NoRecipient => "no_recipient",
            Reason::ChartSendTo => "chart_send_to",
            Reason::ChartReadFrom => "chart_read_from",
            Reason::Oversize => "oversize",
            Reason::Expired => "expired",
            Reason::DuplicateId => "duplicate_id",
            Reason::Poison => "poison",
            Reason::UnreadableReason => "unreadable_reason",
            Reason::Other(s) => s,
        }
    }

    /// The reason with this code.
    pub fn parse(code: &str) -> Reason {
        Reason::KNOWN.into_iter().find(|r| r.as_str() == code).unwrap_or_else(|| Reason::Other(code.to_string()))
    }

    /// Whether a refusal for this reason refuses the message for every
    /// recipient (the others name the recipients they refuse it for).
    pub fn whole_message(&self) -> bool {
        matches!(
            self,
            Reason::Malformed
                | Reason::NotARegularFile
                | Reason::SenderMismatch
                | Reason::UnknownGroup
                | Reason::NoRecipient
                | Reason::Oversize
                | Reason::Expired
                | Reason::DuplicateId
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Reason {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Reason, D::Error> {
        Ok(Reason::parse(&String::deserialize(d)?))
    }
}

/// Why a message went to dead, stored as `<id>.why.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadReason {
    /// The dead letter's id (its file stem).
    pub id: String,
    /// The reason code.
    pub reason: Reason,
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
    /// The dead-letter reason.
    pub fn code(&self) -> Reason {
        match self {
            Unusable::NotRegular { .. } => Reason::NotARegularFile,
            Unusable::Oversize { .. } => Reason::Oversize,
            Unusable::Name | Unusable::Parse(_) => Reason::Malformed,
        }
    }
}

/// ` to `<target>``, for a symbolic link's target in a one-line text (empty without one).
pub fn show_target(target: &Option<PathBuf>) -> String {
    target.as_ref().map(|t| format!(" to `{}`", crate::term::line(&t.to_string_lossy()))).unwrap_or_default()
}

/// A file name for messages and diagnostics: escaped as [`crate::term::line`]
/// escapes any one-line field, bytes that are not UTF-8 replaced.
pub fn show_name(name: &OsStr) -> String {
    crate::term::line(&name.to_string_lossy()).into_owned()
}

/// The file name of message `id`: `<id>.json`.
pub fn message_file(id: &str) -> String {
    format!("{id}.json")
}

/// The message id a mailbox file name stands for (`<id>.json`), if it is one.
pub fn message_id(file: &str) -> Option<&str> {
    file.strip_suffix(".json").filter(|id| !id.is_empty() && !id.ends_with(".why"))
}

/// A dead-letter id for a file that has no usable id of its own: unique per
/// (reason, turn, mailbox, file name), and the same when the turn is repeated.
pub fn dead_id(code: &Reason, turn: u64, agent: &str, file: &str) -> String {
    let stem: String = file
        .trim_end_matches(".json")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .take(48)
        .collect();
    format!("{code}-t{turn}-{agent}-{stem}")
}

/// The dead-letter id a poison letter of message `id` in `agent`'s inbox
/// starts from (see [`FsMailStore::free_dead_id`] for the ids that follow it).
pub fn poison_id(id: &str, agent: &str) -> String {
    format!("{id}-poison-{agent}")
}

/// Whether dead-letter id `dead` was given for the id `base`: `base` itself,
/// or `base.<n>` when `base` held another letter already.
pub fn is_dead_id_for(dead: &str, base: &str) -> bool {
    match dead.strip_prefix(base) {
        Some("") => true,
        Some(rest) => rest.strip_prefix('.').is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
        None => false,
    }
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

/// An entry of an inbox that is not a valid message.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What builds a path inside a mailbox or `org/state/dead/`, or names a
    /// mail file, in code: `inbox` or `outbox` as a path component of a string
    /// (`"inbox"`, `"inbox/…"`, `"…/inbox"`, `"…/inbox/…"`), a mailbox folder
    /// joined on, the dead letters' folder, and the names of their files.
    const PATH_BUILDING: [&str; 20] = [
        "\"inbox\"",
        "\"outbox\"",
        "\"inbox/",
        "\"outbox/",
        "/inbox\"",
        "/outbox\"",
        "/inbox/",
        "/outbox/",
        "inbox_path",
        "outbox_path",
        "join(\"new\")",
        "join(\"cur\")",
        "join(\"sent\")",
        "join(\"dead",
        "\"dead\"",
        "\"org/state/dead",
        "state/dead/{",
        "}.why.json",
        "\"why.json\"",
        "-poison-{",
    ];

    /// Lines allowed to, as (file, what the line holds), and why. Each must
    /// still be found, so that none outlives its line.
    const ALLOWED: [(&str, &str); 2] = [
        // A crash-test hook that plays a person reading a just-delivered
        // file at once: it runs inside a batch's commit, below the store.
        ("fault.rs", "box_dir.join(\"cur\")"),
        // The default org's `.gitignore`, a text for git naming the runtime folders.
        ("init.rs", "\"# Runtime folders of this org.\\n/agents/*/inbox/\\n"),
    ];

    /// The lines of `text` (a source file's, outside comments and the items
    /// marked `#[cfg(test)]`) that build mailbox paths, as `file:line: text`.
    fn path_building(file: &str, text: &str) -> Vec<String> {
        let mut found = Vec::new();
        let mut lines = text.lines().enumerate();
        while let Some((i, l)) = lines.next() {
            let t = l.trim();
            if t == "#[cfg(test)]" {
                skip_item(&mut lines, l.len() - l.trim_start().len());
            } else if !t.starts_with("//") && PATH_BUILDING.iter().any(|p| l.contains(p)) {
                found.push(format!("{file}:{}: {t}", i + 1));
            }
        }
        found
    }

    /// Skips the item that starts on the next line at `indent` (code is
    /// formatted by rustfmt): a declaration ending on its line (`mod tests;`),
    /// or everything through the `}` that closes it at the same indent.
    fn skip_item<'a>(lines: &mut impl Iterator<Item = (usize, &'a str)>, indent: usize) {
        // Past the item's other attributes, to its first line.
        let Some((_, first)) = lines.by_ref().find(|(_, l)| !l.trim_start().starts_with("#[")) else { return };
        if first.trim_end().ends_with(';') || first.trim_end().ends_with('}') {
            return;
        }
        for (_, l) in lines {
            let t = l.trim_start();
            if t.starts_with('}') && l.len() - t.len() == indent {
                return;
            }
        }
    }

    /// What `path_building` finds that no allowance covers, and the allowances that cover nothing.
    fn not_allowed(found: Vec<String>) -> (Vec<String>, Vec<String>) {
        let covers = |f: &str, (file, held): &(&str, &str)| f.starts_with(&format!("{file}:")) && f.contains(held);
        let unused = ALLOWED
            .iter()
            .filter(|a| !found.iter().any(|f| covers(f, a)))
            .map(|(file, held)| format!("{file}: {held}"))
            .collect();
        let found = found.into_iter().filter(|f| !ALLOWED.iter().any(|a| covers(f, a))).collect();
        (found, unused)
    }

    fn sources(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                sources(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    /// No engine module outside the mail store builds an inbox, outbox or
    /// dead-letter path: they ask the store.
    #[test]
    fn only_the_mail_store_builds_mailbox_paths() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&src, &mut files);
        assert!(files.len() > 20, "{files:?}");
        let mut found = Vec::new();
        for f in files {
            let rel = f.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
            // `x/tests.rs` is a `#[cfg(test)] mod tests;` kept in its own file.
            if rel == "mailbox.rs" || rel.starts_with("mailbox/") || rel.ends_with("/tests.rs") {
                continue;
            }
            found.extend(path_building(&rel, &std::fs::read_to_string(&f).unwrap()));
        }
        let (found, unused) = not_allowed(found);
        assert!(
            found.is_empty(),
            "mailbox paths built outside the mail store (ask the store instead):\n{}",
            found.join("\n")
        );
        assert!(unused.is_empty(), "allowances that no line needs any more (remove them): {unused:?}");
    }

    #[test]
    fn the_path_check_finds_path_building_and_passes_over_comments_and_tests() {
        let text = r#"//! agents/<name>/inbox/new
let a = 1;
let d = root.join("agents").join(a).join("inbox");
let n = format!("{id}-poison-{agent}");
#[cfg(test)]
mod tests;
let e = format!("{}/inbox", agent_dir.display());
let f = Path::new(&root).join("agents").join(a).join("outbox/new");
#[cfg(test)]
#[allow(dead_code)]
fn helper() {
    let x = dir.join("new");
}
let g = root.join(format!("agents/{a}/outbox"));
let h = root.join("org/state").join("dead").join(format!("{id}.why.json"));
let t = "moves it to inbox/cur, then outbox/sent";
#[cfg(test)]
mod more {
    fn f() {
        let y = dir.join("inbox");
    }
}
"#;
        assert_eq!(
            path_building("x.rs", text),
            [
                "x.rs:3: let d = root.join(\"agents\").join(a).join(\"inbox\");",
                "x.rs:4: let n = format!(\"{id}-poison-{agent}\");",
                "x.rs:7: let e = format!(\"{}/inbox\", agent_dir.display());",
                "x.rs:8: let f = Path::new(&root).join(\"agents\").join(a).join(\"outbox/new\");",
                "x.rs:14: let g = root.join(format!(\"agents/{a}/outbox\"));",
                "x.rs:15: let h = root.join(\"org/state\").join(\"dead\").join(format!(\"{id}.why.json\"));",
            ]
        );
    }

    #[test]
    fn an_allowance_covers_its_line_only_and_must_be_used() {
        let (file, held) = ALLOWED[0];
        let lines: Vec<String> = ALLOWED.iter().map(|(f, h)| format!("{f}:9: let _ = x({h});")).collect();
        let other = format!("{file}:10: let p = root.join(\"inbox\");");
        let (found, unused) = not_allowed(lines.iter().cloned().chain([other.clone()]).collect());
        assert_eq!((found, unused), (vec![other], vec![]));
        let (_, unused) = not_allowed(lines[1..].to_vec());
        assert_eq!(unused, [format!("{file}: {held}")]);
    }

    #[test]
    fn reasons_serialize_as_their_codes_and_unknown_codes_are_kept() {
        for r in Reason::KNOWN {
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(json, format!("\"{}\"", r.as_str()));
            assert_eq!(serde_json::from_str::<Reason>(&json).unwrap(), r);
        }
        let odd: Reason = serde_json::from_str("\"from_the_future\"").unwrap();
        assert_eq!(odd, Reason::Other("from_the_future".into()));
        assert_eq!(serde_json::to_string(&odd).unwrap(), "\"from_the_future\"");
    }

    #[test]
    fn dead_ids_for_a_base_are_the_base_and_its_numbered_followers() {
        assert!(is_dead_id_for("m1-poison-hr", "m1-poison-hr"));
        assert!(is_dead_id_for("m1-poison-hr.2", "m1-poison-hr"));
        assert!(!is_dead_id_for("m1-poison-hrx", "m1-poison-hr"));
        assert!(!is_dead_id_for("m1-poison-hr.", "m1-poison-hr"));
        assert!(!is_dead_id_for("m1-poison-hr.x", "m1-poison-hr"));
        assert_eq!(message_id("m1.json"), Some("m1"));
        assert_eq!(message_id("m1.why.json"), None);
        assert_eq!(message_id("m1"), None);
    }
}
