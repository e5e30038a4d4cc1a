//! [`FsMailStore`]: the mail store on the filesystem, and the only code that
//! builds paths inside a mailbox or `org/state/dead/`.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;

use super::{is_dead_id_for, Attempts};
use super::{
    message_file, poison_id, BadFile, Checked, Conflict, DeadReason, Letter, MailRead, MailStore, Outgoing, Pending,
    Reason, Unusable, READ_LIMIT,
};
use crate::error::{PathError, WithPath};
use crate::fsx::{self, list_entries, list_json, write_atomic, Batch, Entry, EntryKind, FileId, Moves};
use crate::message::Message;
use crate::watch::{self, Watcher};

/// What a name in an inbox holds against a message being routed.
#[derive(Debug, PartialEq)]
enum Found {
    /// Nothing.
    Nothing,
    /// The same message: the very file, or the same bytes.
    Same,
    /// Something else.
    Other,
}

/// The mailboxes of one org, on disk.
#[derive(Debug, Clone)]
pub struct FsMailStore {
    root: PathBuf,
    pub(super) read_limit: u64,
    remote: BTreeSet<String>,
}

/// A folder of an agent's mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Folder {
    /// `outbox/new/`: written, waiting to be routed.
    Pending,
    /// `outbox/sent/`: routed.
    Sent,
    /// `inbox/new/`: delivered, unread.
    Unread,
    /// `inbox/cur/`: read.
    Read,
    /// `inbox/archive/`: read, and moved aside `archive_after_turns` after it was written.
    Archive,
}

/// The half of an agent's mailbox a folder belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    /// Mail delivered to the agent.
    Inbox,
    /// Mail the agent wrote.
    Outbox,
}

impl Side {
    /// `inbox` or `outbox`, as people and the search index name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Inbox => "inbox",
            Side::Outbox => "outbox",
        }
    }
}

/// The dead letters, as people and the search index name them beside the two sides.
pub const DEAD_LETTERS: &str = "dead";

/// Every folder of an agent's mailbox, relative to the agent's folder,
/// parents first: what the per-turn check of an agent's folders looks at.
pub const FOLDERS: [&str; 8] =
    ["inbox", "outbox", "inbox/new", "inbox/cur", "inbox/tmp", "outbox/new", "outbox/sent", "outbox/tmp"];

/// An agent's unread mail, relative to its folder (what `status` counts).
pub const UNREAD_FOLDER: &str = "inbox/new";

/// An agent's mail waiting to be routed, relative to its folder.
pub const PENDING_FOLDER: &str = "outbox/new";

/// The failed attempts on an agent's unread mail, relative to its folder.
pub const ATTEMPTS_FILE: &str = "inbox/.attempts.json";

impl Folder {
    /// Every folder that holds messages. A unit test checks it against
    /// [`FsMailStore::folders`], so a folder added there is listed here too.
    pub const ALL: &'static [Folder] = &[Folder::Pending, Folder::Sent, Folder::Unread, Folder::Read, Folder::Archive];

    /// The half of the mailbox it is in: a message moves between the folders
    /// of one side (`new` → `cur`), never across.
    pub fn side(self) -> Side {
        match self {
            Folder::Pending | Folder::Sent => Side::Outbox,
            Folder::Unread | Folder::Read | Folder::Archive => Side::Inbox,
        }
    }

    fn rel(self) -> &'static str {
        match self {
            Folder::Pending => "outbox/new",
            Folder::Sent => "outbox/sent",
            Folder::Unread => "inbox/new",
            Folder::Read => "inbox/cur",
            Folder::Archive => "inbox/archive",
        }
    }
}

/// Whether a path inside the org (its components, from the org root) is an
/// entry waiting in some outbox that a router would pick up: a
/// `<name>.json` in `agents/<agent>/outbox/new/`, not hidden.
pub fn is_pending_entry(parts: &[&str]) -> bool {
    matches!(parts, ["agents", _, "outbox", "new", file] if file.ends_with(".json") && !file.starts_with('.'))
}

/// Whether a path inside the org (its components, from the org root) is a
/// folder on the way from an agent folder to its pending entries
/// ([`is_pending_entry`]): `agents/<agent>/outbox/` or its `new/`.
pub fn is_pending_folder(parts: &[&str]) -> bool {
    matches!(parts, ["agents", _, "outbox"] | ["agents", _, "outbox", "new"])
}

/// The names in `org/state/dead/`, as listed: letters and reasons by dead-letter id.
#[derive(Debug, Default)]
pub struct DeadFiles {
    /// Ids with a letter (`<id>.json`).
    pub letters: BTreeSet<String>,
    /// Ids with a reason (`<id>.why.json`).
    pub reasons: BTreeSet<String>,
}

impl FsMailStore {
    /// The mailboxes of the org at `root`; inbox files are read up to [`READ_LIMIT`] bytes.
    /// Outside this module, [`crate::org::Layout::mail`] and [`crate::org::Org::mail`] make one.
    pub fn new(root: impl Into<PathBuf>) -> FsMailStore {
        FsMailStore { root: root.into(), read_limit: READ_LIMIT, remote: BTreeSet::new() }
    }

    /// Reads inbox files up to `max_message_bytes` when that is more than [`READ_LIMIT`]
    /// (so that mail the org accepted can always be read back).
    pub fn with_read_limit(mut self, max_message_bytes: u64) -> FsMailStore {
        self.read_limit = max_message_bytes.max(READ_LIMIT);
        self
    }

    /// Says that these agents live on another machine: this store keeps no
    /// inbox for them, and the router hands their mail to a transport.
    pub fn with_remote(mut self, agents: impl IntoIterator<Item = String>) -> FsMailStore {
        self.remote = agents.into_iter().collect();
        self
    }

    fn agent(&self, agent: &str) -> PathBuf {
        self.agent_path(agent, &[], 0)
    }
    fn outbox(&self, agent: &str, sub: &str) -> PathBuf {
        self.agent_path(agent, &["outbox", sub], 0)
    }
    fn inbox(&self, agent: &str, sub: &str) -> PathBuf {
        self.agent_path(agent, &["inbox", sub], 0)
    }

    /// `<root>/agents/<agent>/<parts>...`, made in one allocation with room
    /// for `more` bytes after it: a turn makes a few paths for every message
    /// it reads, moves or routes.
    fn agent_path(&self, agent: &str, parts: &[&str], more: usize) -> PathBuf {
        let len = self.root.as_os_str().len() + agent.len() + parts.iter().map(|p| p.len() + 1).sum::<usize>();
        let mut p = PathBuf::with_capacity(len + "/agents/".len() + more);
        p.push(&self.root);
        p.push("agents");
        p.push(agent);
        for part in parts {
            p.push(part);
        }
        p
    }
    fn dead_dir(&self) -> PathBuf {
        self.root.join("org/state/dead")
    }
    fn state_tmp(&self) -> PathBuf {
        self.root.join("org/state/tmp")
    }
    fn pending_path(&self, p: &Pending) -> PathBuf {
        self.outbox(&p.from, "new").join(&p.name)
    }

    /// Moves message `id` from unread to read and makes the move durable, as
    /// the turn does for the mail a reply read.
    #[cfg(test)]
    pub(crate) fn consume_now(&self, agent: &str, id: &str) -> Result<(), PathError> {
        let mut m = Moves::new();
        self.consume(&mut m, agent, id)?;
        let mut left = crate::fsx::Unsynced::default();
        m.leave(&mut left);
        left.sync(&self.root)
    }

    /// A folder of an agent's mailbox, for diagnostics and fsck.
    pub fn dir(&self, agent: &str, folder: Folder) -> PathBuf {
        self.agent_path(agent, &[folder.rel()], 0)
    }

    /// Where message `id` is (or would be) in a folder of an agent's mailbox
    /// (`<id>.json`, as [`message_file`] names it).
    pub fn message_path(&self, agent: &str, folder: Folder, id: &str) -> PathBuf {
        let mut p = self.agent_path(agent, &[folder.rel()], id.len() + ".json".len() + 1);
        p.push(id);
        p.as_mut_os_string().push(".json");
        p
    }

    /// Every folder of an agent's mailbox, parents first ([`FOLDERS`]).
    pub fn folders(&self, agent: &str) -> Vec<PathBuf> {
        FOLDERS.iter().map(|f| self.agent_path(agent, &[f], 0)).collect()
    }

    /// `org/state/dead/`.
    pub fn dead_path(&self) -> PathBuf {
        self.dead_dir()
    }

    /// The letter of dead letter `id`.
    pub fn letter_path(&self, id: &str) -> PathBuf {
        self.dead_dir().join(message_file(id))
    }

    /// The reason of dead letter `id`.
    pub fn reason_path(&self, id: &str) -> PathBuf {
        self.dead_dir().join(format!("{id}.why.json"))
    }

    /// Where a dead directory was moved aside.
    fn aside_path(&self, id: &str) -> PathBuf {
        self.dead_dir().join(format!("{id}.dir"))
    }

    /// The letters and reasons in `org/state/dead/`.
    pub fn dead_files(&self) -> Result<DeadFiles, PathError> {
        let mut out = DeadFiles::default();
        for name in list_json(&self.dead_dir())? {
            if let Some(id) = name.strip_suffix(".why.json") {
                out.reasons.insert(id.to_string());
            } else if let Some(id) = name.strip_suffix(".json") {
                out.letters.insert(id.to_string());
            }
        }
        Ok(out)
    }

    /// Whether a dead letter accounts for message `id` from `from` not
    /// reaching `to`: a poison letter of `to`, or a refusal by the router of
    /// the whole message or for `to`. Reasons are read afresh, up to `limit`
    /// bytes; one that cannot be read covers nothing.
    pub fn dead_covers(&self, from: &str, id: &str, to: &str, limit: u64) -> bool {
        let reason = |dead: &str| match fsx::read_entry(&self.reason_path(dead), limit) {
            Ok(Entry::File { bytes, .. }) => serde_json::from_slice::<DeadReason>(&bytes).ok(),
            _ => None,
        };
        let exists = |dead: &str| {
            fs::symlink_metadata(self.letter_path(dead)).is_ok() || fs::symlink_metadata(self.reason_path(dead)).is_ok()
        };
        // Ids given from one base follow each other: base, base.1, base.2, ...
        let chain = |base: String| {
            (0u64..)
                .map(move |n| if n == 0 { base.clone() } else { format!("{base}.{n}") })
                .take_while(move |d| exists(d))
        };
        if chain(poison_id(id, to)).next().is_some() {
            return true;
        }
        chain(id.to_string()).any(|dead| {
            reason(&dead).is_some_and(|r| {
                is_dead_id_for(&r.id, id)
                    && r.mailbox == from
                    && (r.reason.whole_message() || r.to.iter().any(|t| t == to))
            })
        })
    }

    /// Writes a message into the sender's outbox now, durably (G1): it is
    /// fsynced, renamed into place and the folder fsynced before this returns.
    pub fn send_now(&self, agent: &str, msg: &Message) -> Result<PathBuf, PathError> {
        self.ensure(agent)?;
        let path = self.outbox(agent, "new").join(crate::mailbox::message_file(&msg.id));
        write_atomic(&self.outbox(agent, "tmp"), &path, &msg.to_bytes())?;
        Ok(path)
    }

    /// The copy of message `id` in an agent's inbox (unread, else read, else
    /// archived), if any. Whatever holds the name counts (a link is not followed).
    fn delivered_copy(&self, agent: &str, id: &str) -> Option<PathBuf> {
        let name = message_file(id);
        [
            self.inbox(agent, "new").join(&name),
            self.inbox(agent, "cur").join(&name),
            self.inbox(agent, "archive").join(&name),
        ]
        .into_iter()
        .find(|p| fs::symlink_metadata(p).is_ok())
    }

    /// The copy of message `id` that an agent's inbox holds, wherever the
    /// inbox keeps it (the same lookup as [`MailStore::has`]), with the
    /// message it holds (`None`: not a message with that id).
    pub fn find_delivered(&self, agent: &str, id: &str) -> Result<Option<(PathBuf, Option<Message>)>, PathError> {
        let Some(path) = self.delivered_copy(agent, id) else { return Ok(None) };
        let msg = match fsx::read_entry(&path, self.read_limit)? {
            Entry::File { bytes, .. } => Message::parse(&bytes).ok().filter(|m| m.id == id),
            _ => None,
        };
        Ok(Some((path, msg)))
    }

    /// Whether `path` holds the same message as the file `id` with `bytes`: it is
    /// that very file (a hard link), or a regular file with the same bytes.
    pub fn same_file(&self, path: &Path, id: FileId, bytes: &[u8]) -> Result<bool, PathError> {
        Ok(self.copy_at(path, id, bytes)? == Found::Same)
    }

    /// What `path` holds against the file `id` with `bytes`, with one look
    /// at the name: nothing, the same message ([`MailStore::same_file`]), or another.
    fn copy_at(&self, path: &Path, id: FileId, bytes: &[u8]) -> Result<Found, PathError> {
        match fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_file() && FileId::of(&m) == id => return Ok(Found::Same),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Found::Nothing),
            Err(e) => return Err(e).with_path(path),
        }
        Ok(match fsx::read_entry(path, bytes.len() as u64)? {
            Entry::File { bytes: b, .. } if b == bytes => Found::Same,
            // Moved or removed since the look above (a person reading).
            Entry::Gone => Found::Nothing,
            _ => Found::Other,
        })
    }

    /// The number of unread messages (entries in `inbox/new/`).
    pub fn unread_count(&self, agent: &str) -> Result<usize, PathError> {
        Ok(list_entries(&self.inbox(agent, "new"))?.len())
    }

    /// The number of entries waiting in the outbox.
    pub fn pending_count(&self, agent: &str) -> Result<usize, PathError> {
        Ok(list_entries(&self.outbox(agent, "new"))?.len())
    }

    /// Reads every consumed message (`inbox/cur/`), oldest id first.
    pub fn read_mail(&self, agent: &str) -> Result<Vec<Message>, PathError> {
        Ok(self.read_box(agent, "cur")?.0)
    }

    /// Like [`MailStore::unread`], for people's views (`lemming inbox`): a file
    /// that cannot be read is returned apart with its error, and the others are
    /// still read. Only a folder that cannot be listed fails the call.
    pub fn unread_skipping(&self, agent: &str) -> Result<MailRead, PathError> {
        self.read_box_skipping(agent, "new")
    }

    /// Like [`FsMailStore::read_mail`], returning files that cannot be read (or
    /// parsed) apart instead of failing.
    pub fn read_mail_skipping(&self, agent: &str) -> Result<MailRead, PathError> {
        self.read_box_skipping(agent, "cur")
    }

    /// Reads every archived message (`inbox/archive/`) like
    /// [`FsMailStore::read_mail_skipping`]; none when nothing was archived.
    pub fn archive_skipping(&self, agent: &str) -> Result<MailRead, PathError> {
        self.read_box_skipping(agent, "archive")
    }

    /// Queues the move to `inbox/archive/` of every read message of `agent`
    /// (`inbox/cur/`) written `after` or more turns before `turn`, and
    /// returns how many. Each move is one rename, so a message is always in
    /// `cur/` or in `archive/`, never lost and never in both; a name the
    /// archive holds already is left in `cur/` (fsck reports it). Files of
    /// `cur/` that are not messages stay where they are. The archive folder
    /// is made (durably) the first time.
    pub fn archive_read(&self, b: &mut Batch, agent: &str, turn: u64, after: u64) -> Result<usize, PathError> {
        let read = self.read_box_skipping(agent, "cur")?;
        let old: Vec<&Message> = read.messages.iter().filter(|m| turn.saturating_sub(m.turn) >= after).collect();
        if old.is_empty() {
            return Ok(0);
        }
        let archive = self.inbox(agent, "archive");
        if !archive.is_dir() {
            fs::create_dir_all(&archive).with_path(&archive)?;
            fsx::sync_dir(&self.agent(agent).join("inbox"))?;
        }
        let mut n = 0;
        for m in old {
            let name = message_file(&m.id);
            let (from, to) = (self.inbox(agent, "cur").join(&name), archive.join(&name));
            // A file named by hand after another id is left alone.
            if fs::symlink_metadata(&to).is_err() && fs::symlink_metadata(&from).is_ok() {
                b.rename(from, to);
                n += 1;
            }
        }
        Ok(n)
    }

    /// The messages an agent's outbox has routed (`outbox/sent/`), read like
    /// [`FsMailStore::read_mail_skipping`], for people's views of every message.
    pub fn sent_skipping(&self, agent: &str) -> Result<MailRead, PathError> {
        self.read_dir_skipping(&self.outbox(agent, "sent"))
    }

    /// Every message in one folder of an agent's mailbox, read like
    /// [`FsMailStore::read_mail_skipping`] (for the search index).
    pub fn folder_skipping(&self, agent: &str, folder: Folder) -> Result<MailRead, PathError> {
        self.read_dir_skipping(&self.dir(agent, folder))
    }

    /// The folder of `side` of an agent's mailbox that holds a file named for
    /// message `id`, if any (a link is not followed).
    pub fn holder(&self, agent: &str, side: Side, id: &str) -> Option<Folder> {
        Folder::ALL
            .iter()
            .copied()
            .filter(|f| f.side() == side)
            .find(|f| fs::symlink_metadata(self.message_path(agent, *f, id)).is_ok())
    }

    /// The message `id` in an agent's `folder`, read from the file its id
    /// names; `None` when there is no such file, or it holds no message with
    /// that id (a file named by hand).
    pub fn find(&self, agent: &str, folder: Folder, id: &str) -> Result<Option<Message>, PathError> {
        match fsx::read_entry(&self.message_path(agent, folder, id), self.read_limit)? {
            Entry::File { bytes, .. } => Ok(Message::parse(&bytes).ok().filter(|m| m.id == id)),
            _ => Ok(None),
        }
    }

    /// The message the dead letter `id` holds, if it holds one with that id.
    pub fn dead_message(&self, id: &str) -> Option<Message> {
        match fsx::read_entry(&self.letter_path(id), self.read_limit) {
            Ok(Entry::File { bytes, .. }) => Message::parse(&bytes).ok().filter(|m| m.id == id),
            _ => None,
        }
    }

    fn read_box(&self, agent: &str, sub: &str) -> Result<(Vec<Message>, Vec<BadFile>), PathError> {
        self.messages_of(self.read_files(&self.inbox(agent, sub))?)
    }

    fn read_box_skipping(&self, agent: &str, sub: &str) -> Result<MailRead, PathError> {
        self.read_dir_skipping(&self.inbox(agent, sub))
    }

    fn read_dir_skipping(&self, dir: &Path) -> Result<MailRead, PathError> {
        Ok(self.read_files(dir)?.parse(self.read_limit))
    }

    /// An agent's unread files, read but not parsed ([`Files::parse`]):
    /// reading them ahead on one thread, the pick parses them on another.
    pub(crate) fn unread_files(&self, agent: &str) -> Result<Files, PathError> {
        self.read_files(&self.inbox(agent, "new"))
    }

    /// The messages and bad entries of `files` (as [`MailStore::unread`]
    /// returns them), or the first that could not be read.
    pub(crate) fn messages_of(&self, files: Files) -> Result<(Vec<Message>, Vec<BadFile>), PathError> {
        let read = files.parse(self.read_limit);
        match read.unreadable.into_iter().next() {
            Some(e) => Err(e),
            None => Ok((read.messages, read.bad)),
        }
    }

    /// Reads every entry of `dir` that does not start with a dot, in name order.
    fn read_files(&self, dir: &Path) -> Result<Files, PathError> {
        let listed = fsx::list_typed(dir)?;
        let mut files = Vec::with_capacity(listed.len());
        for (file, regular) in listed {
            let p = dir.join(&file);
            // A name listed as a regular file is opened without a look first.
            let read = if regular {
                fsx::read_listed_entry(&p, self.read_limit)
            } else {
                fsx::read_entry(&p, self.read_limit)
            };
            files.push((file, read));
        }
        Ok(Files(files))
    }

    /// Moves messages of a person's inbox to `cur/` now, durably (`lemming inbox`).
    pub fn mark_read_now(&self, agent: &str, ids: &[String]) -> Result<(), PathError> {
        if ids.is_empty() {
            return Ok(());
        }
        // A backup copies the org with no mail moving between its folders.
        let _reading = crate::lock::reading(&crate::org::Layout::new(&self.root))?;
        for id in ids {
            let name = message_file(id);
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
        b.write(&self.state_tmp(), self.reason_path(&why.id), bytes);
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
                let path = self.letter_path(&candidate);
                let aside = self.aside_path(&candidate);
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
    fn note(&self, entry: &Path, letter: &Letter, dead_id: &str) -> Vec<u8> {
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
            let aside = self.aside_path(dead_id);
            v["moved_to"] = aside.strip_prefix(&self.root).unwrap_or(&aside).to_string_lossy().into();
        }
        let mut bytes = serde_json::to_vec_pretty(&v).expect("a note always serializes");
        bytes.push(b'\n');
        bytes
    }

    /// Queues the dead letter of `entry` (a hard link of the file, or a note)
    /// under a free id starting from `why.id`, and its reason beside it.
    fn dead_letter(
        &self,
        b: &mut Batch,
        entry: &Path,
        letter: &Letter,
        mut why: DeadReason,
        taken: &mut HashSet<String>,
    ) -> DeadReason {
        why.id = self.free_dead_id(&why.id, entry, letter, taken);
        taken.insert(why.id.clone());
        self.dead_why(b, &why);
        let path = self.letter_path(&why.id);
        match letter {
            Letter::Link(fid) => b.link_same(entry.to_path_buf(), path, *fid),
            Letter::Note { .. } => b.write(&self.state_tmp(), path, self.note(entry, letter, &why.id)),
        }
        why
    }

    /// Queues the removal of `entry` from its `new/` folder once its dead letter
    /// `dead_id` is made: a directory is moved to `dead/<dead_id>.dir` (its
    /// contents are not ours to delete), anything else is unlinked (a link
    /// is removed, never what it points to).
    fn set_aside(&self, b: &mut Batch, entry: &Path, letter: &Letter, dead_id: &str) {
        match letter {
            Letter::Note { kind: EntryKind::Directory, .. } => b.rename(entry.to_path_buf(), self.aside_path(dead_id)),
            _ => b.remove(entry.to_path_buf()),
        }
    }

    /// Moves entries of a person's `inbox/new/` that are not messages to dead
    /// now, durably (`lemming inbox`). `turn` is the last committed turn, `at` now.
    pub fn dead_bad_now(
        &self,
        agent: &str,
        bad: &[BadFile],
        turn: u64,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<DeadReason>, PathError> {
        if bad.is_empty() {
            return Ok(vec![]);
        }
        self.ensure(agent)?;
        let mut b = Batch::new();
        let mut taken = HashSet::new();
        let whys = bad.iter().map(|f| self.dead_bad(&mut b, agent, f, turn, at, &mut taken)).collect();
        b.commit(&self.root)?;
        Ok(whys)
    }

    /// Every dead letter's reason, by id (for tests: people see the count,
    /// and fsck reads each reason itself).
    #[cfg(test)]
    pub(crate) fn dead_letters(&self) -> Result<Vec<DeadReason>, PathError> {
        let mut out = Vec::new();
        for id in self.dead_files()?.reasons {
            let p = self.reason_path(&id);
            // One reason that cannot be read or parsed is shown as such; the others still are.
            let parsed = crate::fsx::read_small(&p, READ_LIMIT)
                .map_err(|e| e.to_string())
                .and_then(|b| b.ok_or_else(|| format!("{}: removed while it was read", p.display())))
                .and_then(|b| serde_json::from_slice::<DeadReason>(&b).map_err(|e| e.to_string()));
            match parsed {
                Ok(r) => out.push(r),
                Err(e) => out.push(DeadReason {
                    id,
                    reason: Reason::UnreadableReason,
                    detail: format!("{}: {e}", p.display()),
                    mailbox: String::new(),
                    to: vec![],
                    turn: 0,
                    at: chrono::Utc::now(),
                }),
            }
        }
        Ok(out)
    }

    /// The number of dead letters.
    pub fn dead_count(&self) -> Result<usize, PathError> {
        Ok(self.dead_files()?.reasons.len())
    }

    fn attempts_path(&self, agent: &str) -> PathBuf {
        self.agent(agent).join(ATTEMPTS_FILE)
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

    /// Leftover files in the `tmp/` folders of an agent's mailboxes.
    pub fn tmp_leftovers(&self, agent: &str) -> Vec<PathBuf> {
        [self.outbox(agent, "tmp"), self.inbox(agent, "tmp")]
            .iter()
            .flat_map(|d| fs::read_dir(d).into_iter().flatten().flatten().map(|e| e.path()))
            .collect()
    }

    /// The org root.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl MailStore for FsMailStore {
    fn ensure(&self, agent: &str) -> Result<(), PathError> {
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

    fn is_local(&self, agent: &str) -> bool {
        !self.remote.contains(agent)
    }

    /// Every entry of `outbox/new/` (all names but those starting with a dot,
    /// whatever they are), oldest id first.
    fn pending(&self, agent: &str) -> Result<Vec<Pending>, PathError> {
        let names = list_entries(&self.outbox(agent, "new"))?;
        Ok(names.into_iter().map(|name| Pending { from: agent.to_string(), name }).collect())
    }

    fn read_pending(&self, p: &Pending, limit: u64) -> Result<Outgoing, PathError> {
        let (fid, bytes) = match fsx::read_entry(&self.pending_path(p), limit)? {
            Entry::Gone => return Ok(Outgoing::Gone),
            Entry::NotRegular { kind, target } => {
                let letter = Letter::Note { kind, target: target.clone() };
                return Ok(Outgoing::Unusable { error: Unusable::NotRegular { kind, target }, letter });
            }
            Entry::TooLarge { id, size } => {
                return Ok(Outgoing::Unusable { error: Unusable::Oversize { size, limit }, letter: Letter::Link(id) })
            }
            Entry::File { id, bytes } => (id, bytes),
        };
        let letter = Letter::Link(fid);
        if !p.name.to_str().is_some_and(|n| n.ends_with(".json")) {
            return Ok(Outgoing::Unusable { error: Unusable::Name, letter });
        }
        Ok(match Message::parse(&bytes) {
            Ok(msg) => Outgoing::Message(Checked::new(msg, fid, bytes)),
            Err(e) => Outgoing::Unusable { error: e.into(), letter },
        })
    }

    /// Mail moves from `new/` to `cur/` at any time (a person reading): a copy
    /// that vanishes while it is looked at is looked for again in `cur/`,
    /// never taken as a conflict.
    fn conflict(
        &self,
        p: &Pending,
        m: &Checked,
        to: &[String],
        held: &mut Vec<String>,
    ) -> Result<Option<Conflict>, PathError> {
        let id = &m.msg.id;
        for to in to.iter().filter(|to| self.is_local(to)) {
            // In the order mail moves: unread, read, archived.
            for folder in [Folder::Unread, Folder::Read, Folder::Archive] {
                let copy = self.message_path(to, folder, id);
                match self.copy_at(&copy, m.fid, &m.bytes)? {
                    Found::Same => {
                        held.push(to.clone());
                        break;
                    }
                    Found::Nothing => {}
                    Found::Other => {
                        let copy = copy.strip_prefix(&self.root).map(Path::to_path_buf).unwrap_or(copy);
                        return Ok(Some(Conflict::Delivered { to: to.clone(), copy }));
                    }
                }
            }
        }
        let sent = self.outbox(&p.from, "sent").join(&p.name);
        if fs::symlink_metadata(&sent).is_ok() && !self.same_file(&sent, m.fid, &m.bytes)? {
            return Ok(Some(Conflict::Sent { copy: Path::new(Folder::Sent.rel()).join(&p.name) }));
        }
        Ok(None)
    }

    /// Delivery is a hard link of the outbox file, which is durable already.
    fn deliver_pending(&self, b: &mut Batch, p: &Pending, m: &Checked, to: &str) -> bool {
        if self.has(to, &m.msg.id) {
            return false;
        }
        self.deliver_checked(b, p, m, to);
        true
    }

    fn deliver_checked(&self, b: &mut Batch, p: &Pending, m: &Checked, to: &str) {
        b.link_same(self.pending_path(p), self.message_path(to, Folder::Unread, &m.msg.id), m.fid);
    }

    fn deliver(&self, b: &mut Batch, agent: &str, msg: &Message) -> bool {
        if self.has(agent, &msg.id) {
            return false;
        }
        b.write(
            &self.inbox(agent, "tmp"),
            self.inbox(agent, "new").join(crate::mailbox::message_file(&msg.id)),
            msg.to_bytes(),
        );
        true
    }

    fn mark_sent(&self, b: &mut Batch, p: &Pending) {
        b.rename(self.pending_path(p), self.outbox(&p.from, "sent").join(&p.name));
    }

    fn refuse(
        &self,
        b: &mut Batch,
        p: &Pending,
        letter: &Letter,
        why: DeadReason,
        taken: &mut HashSet<String>,
    ) -> DeadReason {
        self.dead_letter(b, &self.pending_path(p), letter, why, taken)
    }

    fn refuse_arrival(&self, b: &mut Batch, bytes: &[u8], why: &DeadReason) -> bool {
        let path = self.letter_path(&why.id);
        if fs::symlink_metadata(&path).is_ok() {
            return false;
        }
        self.dead_why(b, why);
        b.write(&self.state_tmp(), path, bytes.to_vec());
        true
    }

    fn drop_pending(&self, b: &mut Batch, p: &Pending, letter: &Letter, dead_id: &str) {
        self.set_aside(b, &self.pending_path(p), letter, dead_id);
    }

    fn post(&self, b: &mut Batch, agent: &str, msg: &Message) -> bool {
        if self.message_path(agent, Folder::Pending, &msg.id).exists()
            || self.message_path(agent, Folder::Sent, &msg.id).exists()
        {
            return false;
        }
        self.post_new(b, agent, msg);
        true
    }

    fn post_new(&self, b: &mut Batch, agent: &str, msg: &Message) {
        b.write(&self.outbox(agent, "tmp"), self.message_path(agent, Folder::Pending, &msg.id), msg.to_bytes());
    }

    /// Entries that are not messages (unparseable, oversize, misnamed, not
    /// regular files) are returned apart.
    fn unread(&self, agent: &str) -> Result<(Vec<Message>, Vec<BadFile>), PathError> {
        self.read_box(agent, "new")
    }

    /// Whatever holds the name counts (a link is not followed).
    fn has(&self, agent: &str, id: &str) -> bool {
        self.delivered_copy(agent, id).is_some()
    }

    fn is_unread(&self, agent: &str, id: &str) -> bool {
        self.message_path(agent, Folder::Unread, id).exists()
            && !self.message_path(agent, Folder::Read, id).exists()
            && !self.message_path(agent, Folder::Archive, id).exists()
    }

    fn consume(&self, m: &mut Moves, agent: &str, id: &str) -> Result<(), PathError> {
        m.rename_if_there(&self.message_path(agent, Folder::Unread, id), &self.message_path(agent, Folder::Read, id))
    }

    /// The dead letter's id is made from the reason, the turn and the entry's
    /// name ([`super::dead_id`]).
    fn dead_bad(
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
        let why = DeadReason {
            id: super::dead_id(&code, turn, agent, &bad.name()),
            reason: code,
            detail: format!("{}: {}", bad.name(), bad.error),
            mailbox: agent.into(),
            to: vec![],
            turn,
            at,
        };
        let why = self.dead_letter(b, &entry, &bad.letter, why, taken);
        self.set_aside(b, &entry, &bad.letter, &why.id);
        why
    }

    /// The letter's id starts from [`super::poison_id`]; a letter of another
    /// message already there under that id is kept, and this one gets the next free id.
    fn poison(
        &self,
        b: &mut Batch,
        agent: &str,
        id: &str,
        detail: String,
        turn: u64,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Option<DeadReason> {
        let entry = self.message_path(agent, Folder::Unread, id);
        let m = fs::symlink_metadata(&entry).ok().filter(|m| m.file_type().is_file())?;
        let why = DeadReason {
            id: poison_id(id, agent),
            reason: Reason::Poison,
            detail,
            mailbox: agent.into(),
            to: vec![agent.to_string()],
            turn,
            at,
        };
        let letter = Letter::Link(FileId::of(&m));
        let why = self.dead_letter(b, &entry, &letter, why, &mut HashSet::new());
        b.remove(entry);
        Some(why)
    }

    fn attempts(&self, agent: &str) -> Attempts {
        self.try_attempts(agent).unwrap_or_default()
    }

    /// Removed when empty.
    fn set_attempts(&self, b: &mut Batch, agent: &str, attempts: &Attempts) {
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

    fn watch(&self, agent: &str, tx: mpsc::UnboundedSender<()>) -> Option<Watcher> {
        watch::folder(&self.inbox(agent, "new"), tx)
    }

    fn commit(&self, b: Batch) -> Result<(), PathError> {
        b.commit(&self.root)
    }
}

/// The entries of a mailbox folder as read, each with its name, not yet parsed.
pub(crate) struct Files(Vec<(std::ffi::OsString, Result<Entry, PathError>)>);

impl Files {
    /// The messages, and apart the entries that are not messages or could
    /// not be read; `limit` is the size the files were read with.
    pub(crate) fn parse(self, limit: u64) -> MailRead {
        let mut good = Vec::with_capacity(self.0.len());
        let mut bad = Vec::new();
        let mut unreadable = Vec::new();
        for (file, read) in self.0 {
            let (id, bytes) = match read {
                Ok(Entry::File { id, bytes }) => (id, bytes),
                // Consumed or moved by someone else meanwhile.
                Ok(Entry::Gone) => continue,
                Ok(Entry::TooLarge { id, size }) => {
                    let error = Unusable::Oversize { size, limit };
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
        MailRead { messages: good, bad, unreadable }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::To;

    fn store() -> (tempfile::TempDir, FsMailStore) {
        let d = tempfile::tempdir().unwrap();
        let s = FsMailStore::new(d.path());
        for a in ["a", "b"] {
            s.ensure(a).unwrap();
        }
        (d, s)
    }

    fn msg(id: &str, from: &str, to: &str, body: &str) -> Message {
        let mut m =
            Message::parse(format!(r#"{{"id":"{id}","from":"{from}","to":"x","body":"{body}"}}"#).as_bytes()).unwrap();
        m.to = To(vec![to.to_string()]);
        m
    }

    fn commit(s: &FsMailStore, f: impl FnOnce(&mut Batch)) {
        let mut b = Batch::new();
        f(&mut b);
        s.commit(b).unwrap();
    }

    #[test]
    fn every_message_folder_of_a_mailbox_is_in_the_folder_list_with_its_side() {
        let (_d, s) = store();
        let listed: Vec<PathBuf> = Folder::ALL.iter().map(|f| s.dir("a", *f)).collect();
        for dir in s.folders("a") {
            let name = dir.file_name().unwrap().to_str().unwrap();
            // The two halves themselves and their tmp folders hold no message.
            if ["inbox", "outbox", "tmp"].contains(&name) {
                continue;
            }
            assert!(listed.contains(&dir), "{} holds messages but is not in Folder::ALL", dir.display());
        }
        for f in Folder::ALL {
            let half = if f.side() == Side::Inbox { "inbox" } else { "outbox" };
            assert!(s.dir("a", *f).parent().unwrap().ends_with(half), "{f:?} is not in the {half}");
        }
        let m = msg("m1", "a", "b", "x");
        commit(&s, |b| assert!(s.deliver(b, "b", &m)));
        assert_eq!(s.holder("b", Side::Inbox, "m1"), Some(Folder::Unread));
        s.consume_now("b", "m1").unwrap();
        assert_eq!(s.holder("b", Side::Inbox, "m1"), Some(Folder::Read));
        assert_eq!(s.holder("b", Side::Outbox, "m1"), None);
        assert_eq!(s.folder_skipping("b", Folder::Read).unwrap().messages.len(), 1);
    }

    #[test]
    fn delivery_is_idempotent_by_id() {
        let (_d, s) = store();
        let m = msg("m1", "a", "b", "first");
        let mut queued = false;
        commit(&s, |b| queued = s.deliver(b, "b", &m));
        assert!(queued && s.has("b", "m1") && s.is_unread("b", "m1"));
        // The same id again, even with other bytes, is not written twice.
        commit(&s, |b| queued = s.deliver(b, "b", &msg("m1", "a", "b", "second")));
        assert!(!queued);
        let (mail, bad) = s.unread("b").unwrap();
        assert!(bad.is_empty());
        assert_eq!(mail.iter().map(|m| (m.id.as_str(), m.body.as_str())).collect::<Vec<_>>(), [("m1", "first")]);
        // Read mail counts too.
        s.consume_now("b", "m1").unwrap();
        commit(&s, |b| queued = s.deliver(b, "b", &msg("m1", "a", "b", "third")));
        assert!(!queued && s.has("b", "m1"));
    }

    fn written_on(id: &str, turn: u64) -> Message {
        Message { turn, ..msg(id, "a", "b", "x") }
    }

    #[test]
    fn read_mail_old_enough_moves_to_the_archive_and_stays_delivered() {
        let (_d, s) = store();
        commit(&s, |b| {
            for (id, turn) in [("m1", 1), ("m2", 3), ("m3", 4)] {
                s.deliver(b, "b", &written_on(id, turn));
            }
        });
        s.consume_now("b", "m1").unwrap();
        s.consume_now("b", "m2").unwrap();
        fs::write(s.dir("b", Folder::Read).join("junk.json"), "{").unwrap();
        // Turn 5, after 2 turns: m1 (turn 1) and m2 (turn 3) are old enough;
        // m3 is unread, and junk is no message.
        let mut b = Batch::new();
        assert_eq!(s.archive_read(&mut b, "b", 5, 2).unwrap(), 2);
        s.commit(b).unwrap();
        let ids = |f| list_json(&s.dir("b", f)).unwrap();
        assert_eq!(ids(Folder::Archive), ["m1.json", "m2.json"]);
        assert_eq!(ids(Folder::Read), ["junk.json"]);
        assert_eq!(ids(Folder::Unread), ["m3.json"]);
        assert_eq!(s.find("b", Folder::Archive, "m1").unwrap().unwrap().id, "m1");
        assert_eq!(s.archive_skipping("b").unwrap().messages.len(), 2);
        // Nothing more to move: a repeat moves nothing.
        let mut b = Batch::new();
        assert_eq!(s.archive_read(&mut b, "b", 5, 2).unwrap(), 0);
        assert!(b.is_empty());

        // An archived id is still delivered: a repeated delivery is a no-op.
        let mut queued = true;
        commit(&s, |b| queued = s.deliver(b, "b", &msg("m1", "a", "b", "again")));
        assert!(!queued && s.has("b", "m1") && !s.is_unread("b", "m1"));
        assert!(!s.message_path("b", Folder::Unread, "m1").exists());
        // So is one from an outbox, and another message under that id is a conflict.
        s.send_now("a", &msg("m1", "a", "b", "other bytes")).unwrap();
        let p = s.pending("a").unwrap().remove(0);
        let Outgoing::Message(c) = s.read_pending(&p, READ_LIMIT).unwrap() else { panic!("a message") };
        let mut b = Batch::new();
        assert!(!s.deliver_pending(&mut b, &p, &c, "b"));
        let mut held = Vec::new();
        assert_eq!(
            s.conflict(&p, &c, &["b".to_string()], &mut held).unwrap(),
            Some(Conflict::Delivered { to: "b".into(), copy: PathBuf::from("agents/b/inbox/archive/m1.json") })
        );
        assert!(held.is_empty(), "{held:?}");
    }

    /// A repeated routing finds the very message in the inboxes it reached,
    /// unread or read: those need no delivery, the others do.
    #[test]
    fn conflict_names_the_inboxes_that_hold_the_very_message_already() {
        let (_d, s) = store();
        for agent in ["c", "d"] {
            s.ensure(agent).unwrap();
        }
        let m = msg("m1", "a", "b", "hello");
        s.send_now("a", &m).unwrap();
        let p = s.pending("a").unwrap().remove(0);
        let Outgoing::Message(c) = s.read_pending(&p, READ_LIMIT).unwrap() else { panic!("a message") };
        commit(&s, |b| {
            s.deliver_checked(b, &p, &c, "b");
            s.deliver_checked(b, &p, &c, "c");
        });
        s.consume_now("c", "m1").unwrap();
        let mut held = Vec::new();
        let to = ["b".to_string(), "c".to_string(), "d".to_string()];
        assert_eq!(s.conflict(&p, &c, &to, &mut held).unwrap(), None);
        assert_eq!(held, ["b", "c"], "d's inbox does not hold it");
        assert!(s.is_unread("b", "m1") && s.has("c", "m1") && !s.has("d", "m1"));
    }

    /// A name the archive holds already is never replaced by the move.
    #[test]
    fn archiving_never_replaces_an_archived_file() {
        let (_d, s) = store();
        commit(&s, |b| {
            s.deliver(b, "b", &written_on("m1", 1));
        });
        s.consume_now("b", "m1").unwrap();
        fs::create_dir_all(s.dir("b", Folder::Archive)).unwrap();
        fs::write(s.message_path("b", Folder::Archive, "m1"), "kept").unwrap();
        let mut b = Batch::new();
        assert_eq!(s.archive_read(&mut b, "b", 9, 1).unwrap(), 0);
        s.commit(b).unwrap();
        assert_eq!(fs::read(s.message_path("b", Folder::Archive, "m1")).unwrap(), b"kept");
        assert!(s.message_path("b", Folder::Read, "m1").exists());
    }

    #[test]
    fn a_message_path_is_its_folder_joined_with_its_file_name_whatever_the_root() {
        for root in ["/srv/org", "/srv/org/", "org", "./org/", "/"] {
            let s = FsMailStore::new(root);
            for folder in [Folder::Pending, Folder::Sent, Folder::Unread, Folder::Read, Folder::Archive] {
                let id = "20260101T000000000Z-a-1";
                let joined = Path::new(root).join("agents").join("a").join(folder.rel());
                assert_eq!(s.dir("a", folder), joined);
                assert_eq!(s.message_path("a", folder, id), joined.join(message_file(id)), "{root} {folder:?}");
            }
            assert_eq!(s.inbox("a", "tmp"), Path::new(root).join("agents/a/inbox/tmp"));
            assert_eq!(s.outbox("a", "sent"), Path::new(root).join("agents/a/outbox/sent"));
        }
    }

    #[test]
    fn consuming_moves_unread_mail_to_read() {
        let (_d, s) = store();
        commit(&s, |b| {
            s.deliver(b, "b", &msg("m1", "a", "b", "x"));
            s.deliver(b, "b", &msg("m2", "a", "b", "y"));
        });
        s.consume_now("b", "m1").unwrap();
        assert!(!s.is_unread("b", "m1") && s.has("b", "m1"));
        assert_eq!(s.unread("b").unwrap().0.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["m2"]);
        assert_eq!(s.read_mail("b").unwrap().iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["m1"]);
        // Consuming what is not unread does nothing.
        s.consume_now("b", "gone").unwrap();
        assert!(!s.has("b", "gone"));
    }

    #[test]
    fn pending_lists_every_entry_and_reading_one_trusts_none() {
        let (_d, s) = store();
        s.send_now("a", &msg("m1", "a", "b", "x")).unwrap();
        let out = s.dir("a", Folder::Pending);
        fs::write(out.join("junk.json"), "{").unwrap();
        fs::write(out.join("notes.txt"), "hello").unwrap();
        fs::write(out.join(".hidden.json"), "{").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", out.join("link.json")).unwrap();
        fs::create_dir(out.join("dir.json")).unwrap();
        let pending = s.pending("a").unwrap();
        let names: Vec<String> = pending.iter().map(Pending::show).collect();
        assert_eq!(names, ["dir.json", "junk.json", "link.json", "m1.json", "notes.txt"]);
        let read: Vec<String> = pending
            .iter()
            .map(|p| match s.read_pending(p, 1 << 20).unwrap() {
                Outgoing::Gone => "gone".to_string(),
                Outgoing::Unusable { error, .. } => error.code().to_string(),
                Outgoing::Message(c) => c.msg.id,
            })
            .collect();
        assert_eq!(read, ["not_a_regular_file", "malformed", "not_a_regular_file", "m1", "malformed"]);
    }

    #[test]
    fn unread_returns_bad_entries_apart() {
        let (_d, s) = store();
        commit(&s, |b| {
            s.deliver(b, "b", &msg("m1", "a", "b", "x"));
        });
        let new = s.dir("b", Folder::Unread);
        fs::write(new.join("junk.json"), "{").unwrap();
        fs::write(new.join("notes.txt"), "{}").unwrap();
        std::os::unix::fs::symlink("/dev/zero", new.join("zero.json")).unwrap();
        let f = fs::File::create(new.join("big.json")).unwrap();
        f.set_len(READ_LIMIT + 1).unwrap();
        let (mail, bad) = s.unread("b").unwrap();
        assert_eq!(mail.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["m1"]);
        let codes: Vec<(String, Reason)> = bad.iter().map(|b| (b.name(), b.error.code())).collect();
        assert_eq!(
            codes,
            [
                ("big.json".to_string(), Reason::Oversize),
                ("junk.json".to_string(), Reason::Malformed),
                ("notes.txt".to_string(), Reason::Malformed),
                ("zero.json".to_string(), Reason::NotARegularFile),
            ]
        );
    }

    #[test]
    fn a_bad_entry_goes_to_dead_with_its_reason_and_a_repeat_adds_nothing() {
        let (_d, s) = store();
        fs::write(s.dir("b", Folder::Unread).join("junk.json"), "{").unwrap();
        let at = chrono::Utc::now();
        let entry = s.dir("b", Folder::Unread).join("junk.json");
        let (_, bad) = s.unread("b").unwrap();
        let mut b = Batch::new();
        let why = s.dead_bad(&mut b, "b", &bad[0], 3, at, &mut HashSet::new());
        s.commit(b).unwrap();
        assert_eq!(why.id, "malformed-t3-b-junk");
        assert_eq!(why.reason, Reason::Malformed);
        assert!(!entry.exists());
        assert_eq!(fs::read(s.letter_path(&why.id)).unwrap(), b"{");
        // A crash before the entry was removed: the turn is repeated, and
        // finds its own letter under the same id.
        fs::hard_link(s.letter_path(&why.id), &entry).unwrap();
        let (_, bad) = s.unread("b").unwrap();
        let mut b = Batch::new();
        let again = s.dead_bad(&mut b, "b", &bad[0], 3, at, &mut HashSet::new());
        s.commit(b).unwrap();
        assert_eq!(again, why);
        assert!(!entry.exists());
        assert_eq!(s.dead_letters().unwrap(), vec![why]);
        assert_eq!(s.dead_count().unwrap(), 1);
    }

    #[test]
    fn refusals_in_one_batch_get_ids_of_their_own() {
        let (_d, s) = store();
        s.send_now("a", &msg("m1", "a", "b", "x")).unwrap();
        fs::write(s.dir("a", Folder::Pending).join("other.json"), "{").unwrap();
        let pending = s.pending("a").unwrap();
        let mut taken = HashSet::new();
        let mut b = Batch::new();
        let mut ids = Vec::new();
        for p in &pending {
            let letter = match s.read_pending(p, 1 << 20).unwrap() {
                Outgoing::Message(c) => c.letter(),
                Outgoing::Unusable { letter, .. } => letter,
                Outgoing::Gone => unreachable!(),
            };
            let why = DeadReason {
                id: "m1".into(),
                reason: Reason::Expired,
                detail: "d".into(),
                mailbox: "a".into(),
                to: vec![],
                turn: 1,
                at: chrono::Utc::now(),
            };
            let why = s.refuse(&mut b, p, &letter, why, &mut taken);
            s.drop_pending(&mut b, p, &letter, &why.id);
            ids.push(why.id);
        }
        s.commit(b).unwrap();
        assert_eq!(ids, ["m1", "m1.1"]);
        assert!(s.pending("a").unwrap().is_empty());
        assert_eq!(s.dead_files().unwrap().letters.into_iter().collect::<Vec<_>>(), ["m1", "m1.1"]);
    }

    /// A poison letter never replaces another letter under its id: before,
    /// the link counted as made, and the poisoned message was removed from
    /// the inbox with no letter of its own.
    #[test]
    fn poison_takes_the_next_free_id_and_keeps_the_message() {
        let (_d, s) = store();
        commit(&s, |b| {
            s.deliver(b, "b", &msg("m1", "a", "b", "poisonous"));
        });
        fs::write(s.letter_path("m1-poison-b"), "an older letter").unwrap();
        fs::write(s.reason_path("m1-poison-b"), "{}").unwrap();
        let mut why = None;
        commit(&s, |b| why = s.poison(b, "b", "m1", "failed 3 times".into(), 4, chrono::Utc::now()));
        let why = why.unwrap();
        assert_eq!(
            (why.id.as_str(), &why.reason, why.to.as_slice()),
            ("m1-poison-b.1", &Reason::Poison, &["b".to_string()][..])
        );
        assert_eq!(fs::read(s.letter_path("m1-poison-b")).unwrap(), b"an older letter");
        let kept = Message::parse(&fs::read(s.letter_path("m1-poison-b.1")).unwrap()).unwrap();
        assert_eq!(kept.body, "poisonous");
        assert!(!s.has("b", "m1"));
        // Mail no longer unread is not poisoned.
        commit(&s, |b| assert!(s.poison(b, "b", "m1", "again".into(), 5, chrono::Utc::now()).is_none()));
        assert!(s.dead_covers("a", "m1", "b", READ_LIMIT));
        assert!(!s.dead_covers("a", "m1", "a", READ_LIMIT));
    }

    /// An oversize inbox file's reason states the limit that was applied, and
    /// does not pin it on `max_message_bytes` alone: with the default 64 KiB
    /// setting, the inbox limit is 16 MiB, and the user must be able to tell
    /// why a file under 16 MiB would have passed.
    #[test]
    fn oversize_inbox_file_names_the_rule_of_its_limit() {
        let d = tempfile::tempdir().unwrap();
        let mb = FsMailStore::new(d.path()).with_read_limit(65536);
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
