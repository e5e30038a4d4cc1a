//! The mailboxes: the only code that knows where messages live on disk.
//!
//! ```text
//! agents/<name>/outbox/{tmp,new,sent}/   written to tmp, renamed to new, moved to sent once routed
//! agents/<name>/inbox/{tmp,new,cur}/     delivered to new; moved to cur once consumed
//! agents/<name>/inbox/.attempts.json     failed attempts per unread message
//! org/state/dead/<id>.json, <id>.why.json  undeliverable or poisoned mail and the reason
//! ```
//!
//! Writes go through [`Batch`] (group commit) or [`write_atomic`] (one file, G1).
//! Delivery is idempotent by id: a message already in `new/` or `cur/` is not written again.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{PathError, WithPath};
use crate::fsx::{self, list_json, write_atomic, Batch};
use crate::message::{Message, ParseMessageError};

/// The mailboxes of one org.
#[derive(Debug, Clone)]
pub struct Mailbox {
    root: PathBuf,
}

/// Why a message went to `dead/`, stored as `<id>.why.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadReason {
    /// The dead letter's id (its file stem).
    pub id: String,
    /// A machine-readable code: `malformed`, `sender_mismatch`, `unknown_recipient`,
    /// `chart_send_to`, `chart_read_from`, `oversize`, `expired`, `poison`.
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

/// A file in `inbox/new` that is not a valid message.
#[derive(Debug)]
pub struct BadFile {
    /// Its file name.
    pub file: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Why it is bad.
    pub error: ParseMessageError,
}

impl Mailbox {
    /// The mailboxes of the org at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Mailbox {
        Mailbox { root: root.into() }
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

    /// The file names waiting in an agent's `outbox/new/`, oldest id first.
    pub fn pending(&self, agent: &str) -> Result<Vec<String>, PathError> {
        list_json(&self.outbox(agent, "new"))
    }

    /// Reads a pending outbox file: its size and bytes.
    pub fn read_pending(&self, agent: &str, file: &str) -> Result<Vec<u8>, PathError> {
        let p = self.outbox(agent, "new").join(file);
        fs::read(&p).with_path(&p)
    }

    /// The size of a pending outbox file.
    pub fn pending_size(&self, agent: &str, file: &str) -> Result<u64, PathError> {
        let p = self.outbox(agent, "new").join(file);
        fs::metadata(&p).map(|m| m.len()).with_path(&p)
    }

    /// Queues the move of a routed outbox file to `sent/`.
    pub fn mark_sent(&self, b: &mut Batch, agent: &str, file: &str) {
        b.rename(self.outbox(agent, "new").join(file), self.outbox(agent, "sent").join(file));
    }

    /// Whether a message with this id is already in an agent's inbox (`new/` or `cur/`).
    pub fn has(&self, agent: &str, id: &str) -> bool {
        let name = format!("{id}.json");
        self.inbox(agent, "new").join(&name).exists() || self.inbox(agent, "cur").join(&name).exists()
    }

    /// Queues delivery of a pending outbox file into an agent's `inbox/new/` as a
    /// hard link (the outbox file is already durable), unless it is already
    /// there. Returns whether it was queued.
    pub fn deliver_pending(&self, b: &mut Batch, from: &str, file: &str, to: &str, id: &str) -> bool {
        if self.has(to, id) {
            return false;
        }
        b.link(self.outbox(from, "new").join(file), self.inbox(to, "new").join(format!("{id}.json")));
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

    /// The number of unread messages (files in `inbox/new/`).
    pub fn unread_count(&self, agent: &str) -> Result<usize, PathError> {
        Ok(list_json(&self.inbox(agent, "new"))?.len())
    }

    /// The number of messages waiting in `outbox/new/`.
    pub fn pending_count(&self, agent: &str) -> Result<usize, PathError> {
        Ok(self.pending(agent)?.len())
    }

    /// Reads every unread message, oldest id first. Files that do not parse are returned apart.
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
        for file in list_json(&dir)? {
            let p = dir.join(&file);
            let bytes = match fs::read(&p) {
                Ok(b) => b,
                // Consumed or moved by someone else meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    unreadable.push(PathError { path: p, source: e });
                    continue;
                }
            };
            match Message::parse(&bytes) {
                Ok(m) => good.push(m),
                Err(error) => bad.push(BadFile { file, bytes, error }),
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

    /// A dead-letter id for the pending outbox file `file`, starting from `id`:
    /// `id` itself unless `dead/<id>.json` holds another file (then `id.1`,
    /// `id.2`, ...). When it already holds this very file (a repeated turn,
    /// as delivery is by hard link) the id is reused, so a repeat adds nothing.
    /// `taken` are ids already used in the current batch.
    pub fn free_dead_id(&self, id: &str, agent: &str, file: &str, taken: &HashSet<String>) -> String {
        use std::os::unix::fs::MetadataExt;
        let src = fs::metadata(self.outbox(agent, "new").join(file)).ok();
        let mut candidate = id.to_string();
        for n in 1.. {
            if !taken.contains(&candidate) {
                match fs::metadata(self.dead_dir().join(format!("{candidate}.json"))) {
                    Err(_) => return candidate,
                    Ok(m) if src.as_ref().is_some_and(|s| s.ino() == m.ino() && s.dev() == m.dev()) => {
                        return candidate
                    }
                    Ok(_) => {}
                }
            }
            candidate = format!("{id}.{n}");
        }
        candidate
    }

    /// Queues a dead letter for a pending outbox file: the file is linked as
    /// `dead/<id>.json` and the reason written beside it. The caller then moves
    /// the file to `sent/` (some recipients got it) or drops it ([`Mailbox::drop_pending`]).
    pub fn dead_pending(&self, b: &mut Batch, agent: &str, file: &str, why: &DeadReason) {
        self.dead_why(b, why);
        b.link(self.outbox(agent, "new").join(file), self.dead_dir().join(format!("{}.json", why.id)));
    }

    /// Queues a dead letter for an unread inbox file: linked as `dead/<id>.json`
    /// with the reason beside it, then removed from `inbox/new/`.
    pub fn dead_unread(&self, b: &mut Batch, agent: &str, file: &str, why: &DeadReason) {
        self.dead_why(b, why);
        b.link(self.inbox(agent, "new").join(file), self.dead_dir().join(format!("{}.json", why.id)));
        b.remove(self.inbox(agent, "new").join(file));
    }

    /// Queues the removal of a file from `outbox/new/` (after it was linked into dead).
    pub fn drop_pending(&self, b: &mut Batch, agent: &str, file: &str) {
        b.remove(self.outbox(agent, "new").join(file));
    }

    /// Every dead letter's reason, by id.
    pub fn dead_letters(&self) -> Result<Vec<DeadReason>, PathError> {
        let dir = self.dead_dir();
        let mut out = Vec::new();
        for file in list_json(&dir)? {
            if let Some(stem) = file.strip_suffix(".why.json") {
                let p = dir.join(&file);
                // One reason that cannot be read or parsed is shown as such; the others still are.
                let parsed = fs::read(&p)
                    .map_err(|e| e.to_string())
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
        match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
                .with_path(&path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Attempts::new()),
            Err(e) => Err(e).with_path(&path),
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
