//! The search index: every message of the org (each inbox, each outbox and
//! every dead letter) in a SQLite FTS5 database under `org/state/index/`,
//! ranked by bm25 and shown with snippets (`lemming search`).
//!
//! The index is derived and never trusted over the files:
//!
//! - a row is keyed by the message and the mailbox that holds it (an agent's
//!   inbox or outbox, or the dead letters), not by folder: mail moving from
//!   `new/` to `cur/` (or to an archive) needs no update, and a hit is shown
//!   only while a file of that mailbox still holds it;
//! - after each committed turn ([`after_turn`]) it reads the events appended to
//!   `events.jsonl` since the offset it recorded and indexes the messages they
//!   name (`delivered`: the recipient's copy and the sender's; `dead`: the
//!   letter). `lemming send` indexes the message it wrote ([`sent`]). Neither
//!   ever fails the turn or the send: a failure is a warning, and the index is
//!   caught up or rebuilt later;
//! - [`rebuild`] (`lemming reindex`, and [`search`] when the index is missing,
//!   unreadable, corrupt, of another schema, or behind in a way the events
//!   cannot catch up) writes a whole new database beside the old one, then
//!   renames a one-line pointer file (`current`) into place: a reader opens
//!   either the old index or the new one, never half of one. Database files
//!   are never renamed while open, so a write-ahead log can never meet a
//!   database it does not belong to.
//!
//! The database uses WAL and a busy timeout: the daemon, `lemming send` and a
//! search may write at once. [`compare`] (for `lemming fsck`) reads it without
//! writing anything.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, Transaction};
use serde::Serialize;

use crate::error::{PathError, WithPath};
use crate::events::{Event, EventKind};
use crate::fsx::{self, Entry};
use crate::mailbox::{message_id, Folder, FsMailStore, Side, DEAD_LETTERS, READ_LIMIT};
use crate::message::Message;
use crate::name::AgentName;
use crate::org::{agent_folders, Layout};

/// The schema of the database; an index of another version is rebuilt.
pub const SCHEMA: i64 = 1;

/// The file in `org/state/index/` that names the database in use.
const POINTER: &str = "current";

/// The most bytes of a dead letter that is not a message that are indexed.
const RAW_LETTER_BYTES: usize = 64 << 10;

/// How long a writer waits for another to finish.
const BUSY: Duration = Duration::from_secs(10);

/// Why the index could not be used.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The database could not be read or written.
    #[error("the search index {}: {source}\n  help: `lemming reindex` rebuilds it from the files", path.display())]
    Sqlite {
        /// The database.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// A file could not be read or written.
    #[error(transparent)]
    Io(#[from] PathError),
    /// A raw FTS5 query (`--fts`) that SQLite refused.
    #[error(
        "the search query {query:?} is not valid FTS5 syntax: {detail}\n  help: put double quotes around words \
         with punctuation (\"don't\", \"a-b\"), or leave out --fts to search the words as they are"
    )]
    Query {
        /// The query as given.
        query: String,
        /// What SQLite said.
        detail: String,
    },
    /// No words to search for.
    #[error("the search query is empty\n  help: give one or more words, as in `lemming search budget`")]
    EmptyQuery,
}

fn sql(path: &Path) -> impl Fn(rusqlite::Error) -> IndexError + '_ {
    move |source| IndexError::Sqlite { path: path.to_path_buf(), source }
}

/// Whether SQLite says the file is not a database, or a damaged one.
fn is_corrupt(e: &IndexError) -> bool {
    matches!(e, IndexError::Sqlite { source: rusqlite::Error::SqliteFailure(f, _), .. }
        if matches!(f.code, ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt))
}

/// Where a message is: whose inbox or outbox, or the dead letters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mailbox {
    /// An agent's inbox (unread, read or archived).
    Inbox(String),
    /// An agent's outbox (waiting or sent).
    Outbox(String),
    /// `org/state/dead/`.
    Dead,
}

impl Mailbox {
    /// As stored: `inbox:NAME`, `outbox:NAME` or `dead`.
    fn key(&self) -> String {
        match self {
            Mailbox::Inbox(a) => format!("{}:{a}", Side::Inbox.as_str()),
            Mailbox::Outbox(a) => format!("{}:{a}", Side::Outbox.as_str()),
            Mailbox::Dead => DEAD_LETTERS.to_string(),
        }
    }

    fn parse(s: &str) -> Option<Mailbox> {
        match s.split_once(':') {
            Some((side, a)) if side == Side::Inbox.as_str() => Some(Mailbox::Inbox(a.to_string())),
            Some((side, a)) if side == Side::Outbox.as_str() => Some(Mailbox::Outbox(a.to_string())),
            None if s == DEAD_LETTERS => Some(Mailbox::Dead),
            _ => None,
        }
    }

    fn of(agent: &str, side: Side) -> Mailbox {
        match side {
            Side::Inbox => Mailbox::Inbox(agent.to_string()),
            Side::Outbox => Mailbox::Outbox(agent.to_string()),
        }
    }

    /// `inbox`, `outbox` or `dead`.
    pub fn kind(&self) -> &'static str {
        match self {
            Mailbox::Inbox(_) => Side::Inbox.as_str(),
            Mailbox::Outbox(_) => Side::Outbox.as_str(),
            Mailbox::Dead => DEAD_LETTERS,
        }
    }

    /// The agent whose mailbox it is (none for the dead letters).
    pub fn agent(&self) -> Option<&str> {
        match self {
            Mailbox::Inbox(a) | Mailbox::Outbox(a) => Some(a),
            Mailbox::Dead => None,
        }
    }
}

impl std::fmt::Display for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mailbox::Inbox(a) => write!(f, "{a}'s inbox"),
            Mailbox::Outbox(a) => write!(f, "{a}'s outbox"),
            Mailbox::Dead => f.write_str("dead letters"),
        }
    }
}

/// Whether the file a row names is still there: the files are the truth.
fn file_exists(mb: &FsMailStore, file: &str, mailbox: &Mailbox) -> bool {
    match mailbox {
        Mailbox::Inbox(a) => mb.holder(a, Side::Inbox, file).is_some(),
        Mailbox::Outbox(a) => mb.holder(a, Side::Outbox, file).is_some(),
        Mailbox::Dead => fs::symlink_metadata(mb.letter_path(file)).is_ok(),
    }
}

/// One indexed message: the fields stored beside its text.
struct Row<'a> {
    /// The message id, or the dead letter's id for a dead letter.
    file: &'a str,
    mailbox: &'a Mailbox,
    msg: &'a Message,
}

/// The database in use, by the pointer file; `None` when there is none (or
/// the pointer does not name a database file of this folder).
fn current(layout: &Layout) -> Result<Option<PathBuf>, PathError> {
    let pointer = layout.index_dir().join(POINTER);
    let Some(bytes) = fsx::read_optional(&pointer)? else { return Ok(None) };
    let name = String::from_utf8_lossy(&bytes).trim().to_string();
    let ok = name.starts_with("search-")
        && name.ends_with(".db")
        && name.len() < 100
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    Ok(ok.then(|| layout.index_dir().join(name)))
}

/// An open index.
struct Index {
    path: PathBuf,
    conn: Connection,
}

/// Why an index is not usable and must be rebuilt.
enum Opened {
    Ready(Index),
    Rebuild(String),
}

impl Index {
    /// Opens the index in use for reading and writing, or says why it must be rebuilt.
    fn open(layout: &Layout) -> Result<Opened, IndexError> {
        let Some(path) = current(layout)? else { return Ok(Opened::Rebuild("there is no index yet".into())) };
        if !path.is_file() {
            return Ok(Opened::Rebuild(format!("{} is missing", path.display())));
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = match Connection::open_with_flags(&path, flags) {
            Ok(c) => c,
            Err(e) => return Ok(Opened::Rebuild(format!("{} cannot be opened ({e})", path.display()))),
        };
        let index = Index { path, conn };
        match index.prepare() {
            Ok(None) => Ok(Opened::Ready(index)),
            Ok(Some(why)) => Ok(Opened::Rebuild(why)),
            Err(e) if is_corrupt(&e) => Ok(Opened::Rebuild(format!("{} is corrupt ({e})", index.path.display()))),
            Err(e) => Err(e),
        }
    }

    /// Sets the connection up and checks the schema: `Some(why)` when it must be rebuilt.
    fn prepare(&self) -> Result<Option<String>, IndexError> {
        let c = &self.conn;
        c.busy_timeout(BUSY).map_err(sql(&self.path))?;
        c.pragma_update(None, "synchronous", "NORMAL").map_err(sql(&self.path))?;
        let schema: Option<String> = match c.query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| r.get(0))
        {
            Ok(v) => Some(v),
            Err(rusqlite::Error::QueryReturnedNoRows) => None,
            Err(rusqlite::Error::SqliteFailure(f, m)) if f.code == ErrorCode::Unknown => {
                // No meta table: not an index of ours.
                return Ok(Some(format!("{} is not a search index ({})", self.path.display(), m.unwrap_or_default())));
            }
            Err(e) => return Err(sql(&self.path)(e)),
        };
        if schema.as_deref() != Some(SCHEMA.to_string().as_str()) {
            return Ok(Some(format!(
                "{} has schema {}, this lemming uses {SCHEMA}",
                self.path.display(),
                schema.unwrap_or_else(|| "none".into())
            )));
        }
        Ok(None)
    }

    fn offset(tx: &Transaction, path: &Path) -> Result<u64, IndexError> {
        let v: Option<String> = tx
            .query_row("SELECT value FROM meta WHERE key = 'offset'", [], |r| r.get(0))
            .optional()
            .map_err(sql(path))?;
        Ok(v.and_then(|v| v.parse().ok()).unwrap_or(0))
    }

    /// Indexes the messages named by the events appended since the recorded
    /// offset. `false` when the events file is shorter than the offset: the
    /// index cannot be caught up, only rebuilt.
    fn catch_up(&mut self, layout: &Layout) -> Result<bool, IndexError> {
        let path = self.path.clone();
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(sql(&path))?;
        let offset = Index::offset(&tx, &path)?;
        let Some((lines, end)) = events_since(&layout.events(), offset)? else { return Ok(false) };
        if end == offset {
            return Ok(true);
        }
        let mb = layout.mail();
        for line in lines.lines() {
            let Some(ev) = Event::parse(line) else { continue };
            match ev.kind {
                EventKind::Delivered { id, from, to } => {
                    refresh(&tx, &path, &mb, &id, &Mailbox::Inbox(to))?;
                    if AgentName::new(&from).is_ok() {
                        refresh(&tx, &path, &mb, &id, &Mailbox::Outbox(from))?;
                    }
                }
                EventKind::Dead { id, mailbox, .. } => {
                    let msg = refresh(&tx, &path, &mb, &id, &Mailbox::Dead)?;
                    // The copy it came from (an outbox entry refused, an inbox
                    // entry poisoned) is gone: its row goes too.
                    let original = msg.map(|m| m.id).unwrap_or(id);
                    if AgentName::new(&mailbox).is_ok() {
                        for side in [Side::Inbox, Side::Outbox] {
                            let m = Mailbox::of(&mailbox, side);
                            if !file_exists(&mb, &original, &m) {
                                remove(&tx, &path, &original, &m)?;
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        tx.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('offset', ?1)", [end.to_string()])
            .map_err(sql(&path))?;
        tx.commit().map_err(sql(&path))?;
        Ok(true)
    }
}

/// The whole lines of the events file after `offset`, and the offset after
/// them; `None` when the file is shorter than `offset`.
fn events_since(path: &Path, offset: u64) -> Result<Option<(String, u64)>, IndexError> {
    let mut f = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((offset == 0).then(|| (String::new(), 0)));
        }
        Err(e) => return Err(e).with_path(path).map_err(IndexError::from),
    };
    let len = f.metadata().with_path(path)?.len();
    if len < offset {
        return Ok(None);
    }
    f.seek(SeekFrom::Start(offset)).with_path(path)?;
    let mut bytes = Vec::new();
    f.take(len - offset).read_to_end(&mut bytes).with_path(path)?;
    // A line still being written (or torn by a crash) waits for the next time.
    let whole = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    bytes.truncate(whole);
    Ok(Some((String::from_utf8_lossy(&bytes).into_owned(), offset + whole as u64)))
}

/// The offset after the last whole line of the events file (0 when there is none).
fn events_end(path: &Path) -> Result<u64, PathError> {
    let mut f = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_path(path),
    };
    let mut end = f.metadata().with_path(path)?.len();
    // Back from the end, a block at a time, to the last newline.
    let mut block = vec![0u8; 64 << 10];
    while end > 0 {
        let start = end.saturating_sub(block.len() as u64);
        let n = (end - start) as usize;
        f.seek(SeekFrom::Start(start)).with_path(path)?;
        f.read_exact(&mut block[..n]).with_path(path)?;
        if let Some(i) = block[..n].iter().rposition(|b| *b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// Reads message `file` of `mailbox` afresh and stores it, or drops its row
/// when no file holds it any more. Returns the message stored.
fn refresh(
    tx: &Connection,
    path: &Path,
    mb: &FsMailStore,
    file: &str,
    mailbox: &Mailbox,
) -> Result<Option<Message>, IndexError> {
    let msg = match mailbox {
        Mailbox::Inbox(a) | Mailbox::Outbox(a) => {
            let side = if matches!(mailbox, Mailbox::Inbox(_)) { Side::Inbox } else { Side::Outbox };
            match mb.holder(a, side, file) {
                Some(folder) => mb.find(a, folder, file)?,
                None => None,
            }
        }
        Mailbox::Dead => read_letter(mb, file)?,
    };
    match &msg {
        Some(m) => put(tx, path, &Row { file, mailbox, msg: m })?,
        None => remove(tx, path, file, mailbox)?,
    }
    Ok(msg)
}

/// A dead letter as a message; a letter that is not one is indexed by its
/// text, as the body of a message from nobody.
fn read_letter(mb: &FsMailStore, id: &str) -> Result<Option<Message>, PathError> {
    let bytes = match fsx::read_entry(&mb.letter_path(id), READ_LIMIT)? {
        Entry::File { bytes, .. } => bytes,
        _ => return Ok(None),
    };
    if let Ok(m) = Message::parse(&bytes) {
        return Ok(Some(m));
    }
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(RAW_LETTER_BYTES)]).into_owned();
    Ok(Some(Message {
        id: id.to_string(),
        from: String::new(),
        to: crate::message::To(vec![]),
        subject: None,
        body: text,
        priority: Default::default(),
        reply_to: None,
        thread: String::new(),
        created_at: chrono::DateTime::<chrono::Utc>::UNIX_EPOCH,
        turn: 0,
        ttl_turns: None,
        kind: Default::default(),
        ack_required: false,
    }))
}

/// Recipients as stored: each between spaces, so that `instr` finds a whole name.
fn recipients(msg: &Message) -> String {
    format!(" {} ", msg.to.0.join(" "))
}

fn put(c: &Connection, path: &Path, r: &Row) -> Result<(), IndexError> {
    remove(c, path, r.file, r.mailbox)?;
    let m = r.msg;
    c.prepare_cached(
        "INSERT INTO messages(file, mailbox, id, sender, recipients, thread, subject, body, kind, created_at, turn)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )
    .and_then(|mut s| {
        s.execute(params![
            r.file,
            r.mailbox.key(),
            m.id,
            m.from,
            recipients(m),
            m.thread,
            m.subject.as_deref().unwrap_or(""),
            m.body,
            m.kind.as_str(),
            m.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            m.turn as i64,
        ])
    })
    .map_err(sql(path))?;
    Ok(())
}

fn remove(c: &Connection, path: &Path, file: &str, mailbox: &Mailbox) -> Result<(), IndexError> {
    c.prepare_cached("DELETE FROM messages WHERE file = ?1 AND mailbox = ?2")
        .and_then(|mut s| s.execute(params![file, mailbox.key()]))
        .map_err(sql(path))?;
    Ok(())
}

const CREATE: &str = "
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE messages(
    rowid INTEGER PRIMARY KEY,
    file TEXT NOT NULL,
    mailbox TEXT NOT NULL,
    id TEXT NOT NULL,
    sender TEXT NOT NULL,
    recipients TEXT NOT NULL,
    thread TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    kind TEXT NOT NULL,
    created_at TEXT NOT NULL,
    turn INTEGER NOT NULL,
    UNIQUE(file, mailbox)
);
CREATE INDEX messages_sender ON messages(sender);
CREATE INDEX messages_thread ON messages(thread);
CREATE VIRTUAL TABLE messages_fts USING fts5(
    subject, body, content='messages', content_rowid='rowid', tokenize='unicode61 remove_diacritics 2'
);
";

const TRIGGERS: &str = "
CREATE TRIGGER messages_ai AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts(rowid, subject, body) VALUES (new.rowid, new.subject, new.body);
END;
CREATE TRIGGER messages_ad AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, subject, body) VALUES ('delete', old.rowid, old.subject, old.body);
END;
";

/// How far a rebuild is: messages read of those listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Files read so far.
    pub done: u64,
    /// Files listed.
    pub total: u64,
}

/// What a rebuild did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rebuilt {
    /// Messages indexed.
    pub messages: u64,
    /// Files that could not be read or are not messages (not indexed).
    pub skipped: u64,
    /// The new database, relative to the org root.
    pub path: PathBuf,
}

/// Where the messages of the org are: each agent's mailbox halves, and the dead letters.
fn sources(layout: &Layout) -> Vec<(String, Side)> {
    let agents = agent_folders(layout).into_iter().filter(|a| AgentName::new(a).is_ok());
    agents.flat_map(|a| [(a.clone(), Side::Inbox), (a, Side::Outbox)]).collect()
}

/// Rebuilds the index from the files: a new database written beside the old,
/// put in place by renaming the pointer file. `progress` sees each step.
pub fn rebuild(layout: &Layout, progress: &mut dyn FnMut(Progress)) -> Result<Rebuilt, IndexError> {
    let dir = layout.index_dir();
    fs::create_dir_all(&dir).with_path(&dir)?;
    let mb = layout.mail();
    // Events after this point are caught up by the next update: a message
    // delivered while the files are read is indexed either way.
    let offset = events_end(&layout.events())?;
    let sources = sources(layout);
    let mut total = 0u64;
    for (agent, side) in &sources {
        for f in Folder::ALL.iter().filter(|f| f.side() == *side) {
            total += fsx::list_entries(&mb.dir(agent, *f))?.len() as u64;
        }
    }
    let letters = mb.dead_files()?.letters;
    total += letters.len() as u64;
    let mut p = Progress { done: 0, total };
    progress(p);

    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let pid = std::process::id();
    let build = dir.join(format!("build-{pid}-{stamp}.db"));
    let done = dir.join(format!("search-{stamp}-{pid}.db"));
    let _ = fs::remove_file(&build);
    let mut conn = Connection::open(&build).map_err(sql(&build))?;
    let built = (|| {
        conn.pragma_update(None, "journal_mode", "OFF").map_err(sql(&build))?;
        conn.pragma_update(None, "synchronous", "OFF").map_err(sql(&build))?;
        conn.execute_batch(CREATE).map_err(sql(&build))?;
        let tx = conn.transaction().map_err(sql(&build))?;
        let (mut messages, mut skipped) = (0u64, 0u64);
        for (agent, side) in &sources {
            let mailbox = Mailbox::of(agent, *side);
            for f in Folder::ALL.iter().filter(|f| f.side() == *side) {
                let read = mb.folder_skipping(agent, *f)?;
                skipped += (read.bad.len() + read.unreadable.len()) as u64;
                for m in &read.messages {
                    // A message both unread and read (a crash between two moves) is one row.
                    put(&tx, &build, &Row { file: &m.id, mailbox: &mailbox, msg: m })?;
                    messages += 1;
                }
                p.done += (read.messages.len() + read.bad.len() + read.unreadable.len()) as u64;
                progress(p);
            }
        }
        for id in &letters {
            match read_letter(&mb, id)? {
                Some(m) => {
                    put(&tx, &build, &Row { file: id, mailbox: &Mailbox::Dead, msg: &m })?;
                    messages += 1;
                }
                None => skipped += 1,
            }
            p.done += 1;
            if p.done.is_multiple_of(256) {
                progress(p);
            }
        }
        tx.execute("INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')", []).map_err(sql(&build))?;
        tx.execute("INSERT INTO meta(key, value) VALUES ('schema', ?1)", [SCHEMA.to_string()]).map_err(sql(&build))?;
        tx.execute("INSERT INTO meta(key, value) VALUES ('offset', ?1)", [offset.to_string()]).map_err(sql(&build))?;
        tx.execute_batch(TRIGGERS).map_err(sql(&build))?;
        tx.commit().map_err(sql(&build))?;
        conn.execute_batch("INSERT INTO messages_fts(messages_fts) VALUES ('optimize');").map_err(sql(&build))?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(sql(&build))?;
        Ok::<_, IndexError>((messages, skipped))
    })();
    // Closing the last connection checkpoints and removes the log: only the database file is left.
    let closed = conn.close().map_err(|(_, e)| sql(&build)(e));
    let (messages, skipped) = match built.and_then(|b| closed.map(|_| b)) {
        Ok(b) => b,
        Err(e) => {
            remove_db(&build);
            return Err(e);
        }
    };
    p.done = p.total;
    progress(p);
    let synced = fs::File::open(&build).and_then(|f| f.sync_all()).with_path(&build);
    if let Err(e) = synced.and_then(|_| fs::rename(&build, &done).with_path(&build)) {
        remove_db(&build);
        return Err(e.into());
    }
    let name = done.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    fsx::write_atomic(&layout.state_tmp(), &dir.join(POINTER), format!("{name}\n").as_bytes())?;
    // Another rebuild may have put its own in place since: the pointer says which to keep.
    sweep(&dir, &current(layout)?.unwrap_or_else(|| done.clone()));
    let path = done.strip_prefix(&layout.root).map(Path::to_path_buf).unwrap_or(done);
    tracing::info!(messages, skipped, path = %path.display(), "search index rebuilt");
    Ok(Rebuilt { messages, skipped, path })
}

fn remove_db(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = fs::remove_file(PathBuf::from(p));
    }
}

/// Removes the databases no pointer names any more, and builds left by
/// processes that have exited. A process that still has an old one open
/// keeps reading it; its next open finds the new one.
fn sweep(dir: &Path, keep: &Path) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let keep = keep.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let base = name.trim_end_matches("-wal").trim_end_matches("-shm").trim_end_matches("-journal");
        let old = base.starts_with("search-") && base.ends_with(".db") && base != keep;
        let orphan = base.strip_prefix("build-").and_then(|r| r.split('-').next()).and_then(|p| p.parse::<u32>().ok());
        if old || orphan.is_some_and(|pid| !crate::process::pid_alive(pid)) {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// What to search for.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// The words (or, with `raw`, an FTS5 query).
    pub text: String,
    /// Whether `text` is FTS5 query syntax (`AND`, `OR`, `NOT`, `"phrases"`, `prefix*`, `NEAR`).
    pub raw: bool,
    /// Only messages from this sender.
    pub from: Option<String>,
    /// Only messages to this recipient.
    pub to: Option<String>,
    /// Only messages of this thread.
    pub thread: Option<String>,
    /// At most this many hits.
    pub limit: usize,
}

impl Query {
    /// The FTS5 query: each word quoted (a plain term, whatever its
    /// punctuation), unless the text is raw FTS5 syntax.
    fn fts(&self) -> Result<String, IndexError> {
        if self.raw {
            return match self.text.trim() {
                "" => Err(IndexError::EmptyQuery),
                t => Ok(t.to_string()),
            };
        }
        let words: Vec<String> =
            self.text.split_whitespace().map(|w| format!("\"{}\"", w.replace('"', "\"\""))).collect();
        if words.is_empty() {
            return Err(IndexError::EmptyQuery);
        }
        Ok(words.join(" "))
    }
}

/// Where the match is in a snippet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snippet {
    /// The text in pieces, each with whether it is a match.
    pub pieces: Vec<(String, bool)>,
}

impl Snippet {
    const OPEN: char = '\u{E000}';
    const CLOSE: char = '\u{E001}';

    fn parse(s: &str) -> Snippet {
        let mut pieces = Vec::new();
        let (mut cur, mut hit) = (String::new(), false);
        for c in s.chars() {
            if c == Snippet::OPEN || c == Snippet::CLOSE {
                if !cur.is_empty() {
                    pieces.push((std::mem::take(&mut cur), hit));
                }
                hit = c == Snippet::OPEN;
            } else {
                cur.push(c);
            }
        }
        if !cur.is_empty() {
            pieces.push((cur, hit));
        }
        Snippet { pieces }
    }

    /// The text without marks.
    pub fn plain(&self) -> String {
        self.pieces.iter().map(|(t, _)| t.as_str()).collect()
    }
}

impl Serialize for Snippet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.plain())
    }
}

/// One message found.
#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    /// `inbox`, `outbox` or `dead`.
    pub mailbox: &'static str,
    /// Whose inbox or outbox (none for a dead letter).
    pub agent: Option<String>,
    /// The dead letter's id (for a dead letter).
    pub letter: Option<String>,
    /// The message id.
    pub id: String,
    /// Its sender.
    pub from: String,
    /// Its recipients.
    pub to: Vec<String>,
    /// Its thread.
    pub thread: String,
    /// Its subject, if any.
    pub subject: Option<String>,
    /// Its kind.
    pub kind: String,
    /// When it was written (RFC 3339).
    pub created_at: String,
    /// The turn it was written on.
    pub turn: u64,
    /// The bm25 score: lower is a better match.
    pub score: f64,
    /// The text around the match.
    pub snippet: Snippet,
}

/// What a search found.
#[derive(Debug, Clone, Serialize)]
pub struct Found {
    /// The hits, best first.
    pub hits: Vec<Hit>,
    /// Why the index was rebuilt before searching, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rebuilt: Option<String>,
}

/// Searches every message of the org, best match first. The index is caught
/// up from the events first, and rebuilt when it is missing, corrupt, of
/// another schema, or behind the events in a way it cannot catch up.
pub fn search(layout: &Layout, q: &Query) -> Result<Found, IndexError> {
    let fts = q.fts()?;
    let mut rebuilt = None;
    let mut tries = 0;
    loop {
        tries += 1;
        let opened = match Index::open(layout) {
            // A rebuild put another database in place and removed this one
            // while it was opened: open the one in place now.
            Err(IndexError::Sqlite { path, .. }) if tries < 3 && replaced(layout, &path) => continue,
            opened => opened?,
        };
        let mut index = match opened {
            Opened::Ready(i) => i,
            Opened::Rebuild(why) if tries < 3 => {
                tracing::info!(why = %why, "rebuilding the search index");
                rebuild(layout, &mut |_| {})?;
                rebuilt = Some(why);
                continue;
            }
            Opened::Rebuild(why) => {
                return Err(IndexError::Io(PathError {
                    path: layout.index_dir(),
                    source: std::io::Error::other(format!("the rebuilt search index cannot be used: {why}")),
                }))
            }
        };
        let outcome = index.catch_up(layout).and_then(|caught| match caught {
            true => index.query(layout, q, &fts).map(Some),
            false => Ok(None),
        });
        match outcome {
            Ok(Some(hits)) => return Ok(Found { hits, rebuilt }),
            Ok(None) if tries < 3 => {
                rebuilt = Some("the events file is shorter than the index has read".into());
                drop(index);
                rebuild(layout, &mut |_| {})?;
            }
            Err(e) if is_corrupt(&e) && tries < 3 => {
                rebuilt = Some(e.to_string());
                drop(index);
                rebuild(layout, &mut |_| {})?;
            }
            Err(IndexError::Sqlite { path, .. }) if tries < 3 && replaced(layout, &path) => continue,
            Ok(None) => return Ok(Found { hits: vec![], rebuilt }),
            Err(e) => return Err(e),
        }
    }
}

/// Whether the pointer names another database than `path` now: a rebuild
/// replaced it, and may have removed it and its WAL files while in use.
fn replaced(layout: &Layout, path: &Path) -> bool {
    current(layout).ok().flatten().is_some_and(|now| now != path)
}

impl Index {
    fn query(&self, layout: &Layout, q: &Query, fts: &str) -> Result<Vec<Hit>, IndexError> {
        let raw_error = |e: rusqlite::Error| match &e {
            rusqlite::Error::SqliteFailure(f, Some(m))
                if f.code == ErrorCode::Unknown && (m.starts_with("fts5:") || m.starts_with("no such column")) =>
            {
                IndexError::Query { query: q.text.clone(), detail: m.clone() }
            }
            _ => sql(&self.path)(e),
        };
        let mut ranked = self
            .conn
            .prepare(
                "SELECT m.rowid, m.file, m.mailbox FROM messages_fts JOIN messages m ON m.rowid = messages_fts.rowid
                 WHERE messages_fts MATCH ?1
                   AND (?2 IS NULL OR m.sender = ?2)
                   AND (?3 IS NULL OR instr(m.recipients, ' ' || ?3 || ' ') > 0 OR m.mailbox = 'inbox:' || ?3)
                   AND (?4 IS NULL OR m.thread = ?4)
                 ORDER BY rank",
            )
            .map_err(raw_error)?;
        let mut rows = ranked.query(params![fts, q.from, q.to, q.thread]).map_err(raw_error)?;
        let mb = layout.mail();
        let mut hits = Vec::new();
        let mut detail = self
            .conn
            .prepare(&format!(
                "SELECT m.id, m.sender, m.recipients, m.thread, m.subject, m.kind, m.created_at, m.turn,
                        bm25(messages_fts), snippet(messages_fts, -1, '{}', '{}', '…', 24)
                 FROM messages_fts JOIN messages m ON m.rowid = messages_fts.rowid
                 WHERE messages_fts MATCH ?1 AND messages_fts.rowid = ?2",
                Snippet::OPEN,
                Snippet::CLOSE
            ))
            .map_err(raw_error)?;
        while hits.len() < q.limit {
            let Some(row) = rows.next().map_err(raw_error)? else { break };
            let rowid: i64 = row.get(0).map_err(sql(&self.path))?;
            let file: String = row.get(1).map_err(sql(&self.path))?;
            let Some(mailbox) = Mailbox::parse(&row.get::<_, String>(2).map_err(sql(&self.path))?) else { continue };
            // The files are the truth: a row whose file is gone is not shown.
            if !file_exists(&mb, &file, &mailbox) {
                continue;
            }
            let hit = detail
                .query_row(params![fts, rowid], |r| {
                    let to: String = r.get(2)?;
                    let subject: String = r.get(4)?;
                    Ok(Hit {
                        mailbox: mailbox.kind(),
                        agent: mailbox.agent().map(str::to_string),
                        letter: (mailbox == Mailbox::Dead).then(|| file.clone()),
                        id: r.get(0)?,
                        from: r.get(1)?,
                        to: to.split_whitespace().map(str::to_string).collect(),
                        thread: r.get(3)?,
                        subject: (!subject.is_empty()).then_some(subject),
                        kind: r.get(5)?,
                        created_at: r.get(6)?,
                        turn: r.get::<_, i64>(7)? as u64,
                        score: r.get(8)?,
                        snippet: Snippet::parse(&r.get::<_, String>(9)?),
                    })
                })
                .map_err(raw_error)?;
            hits.push(hit);
        }
        Ok(hits)
    }
}

/// After a committed turn: indexes the messages its events name. An index
/// that does not exist yet is left for the next search to build; a failure is
/// a warning (the next search catches up or rebuilds). Never fails the turn.
pub fn after_turn(layout: &Layout) {
    match Index::open(layout) {
        Ok(Opened::Ready(mut index)) => match index.catch_up(layout) {
            Ok(true) => {}
            Ok(false) => tracing::info!("the search index is behind the events file; the next search rebuilds it"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot update the search index; the next search catches up or rebuilds it")
            }
        },
        Ok(Opened::Rebuild(_)) => {}
        Err(e) => tracing::warn!(error = %e, "cannot open the search index; the next search rebuilds it"),
    }
}

/// After `lemming send`: indexes the message written into `from`'s outbox.
/// Never fails the send (the file is what counts): a failure is a warning.
pub fn sent(layout: &Layout, from: &str, msg: &Message) {
    let result = match Index::open(layout) {
        Ok(Opened::Ready(index)) => {
            put(&index.conn, &index.path, &Row { file: &msg.id, mailbox: &Mailbox::Outbox(from.to_string()), msg })
        }
        Ok(Opened::Rebuild(_)) => Ok(()),
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, id = %msg.id, "cannot add the message to the search index; `lemming reindex` adds it");
    }
}

/// How the index differs from the files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Drift {
    /// Messages in the files that the index lacks, as `mailbox file`.
    pub missing: Vec<String>,
    /// Rows of the index whose file is gone, as `mailbox file`.
    pub gone: Vec<String>,
    /// Why the index cannot be read at all, if so.
    pub unreadable: Option<String>,
}

/// Compares the index with the files, reading only (for `lemming fsck`).
/// `None` when there is no index (none was ever built: nothing to compare).
pub fn compare(layout: &Layout) -> Result<Option<Drift>, PathError> {
    let Some(path) = current(layout)? else { return Ok(None) };
    let mut drift = Drift::default();
    let rows = match read_keys(&path) {
        Ok(rows) => rows,
        Err(e) => {
            drift.unreadable = Some(e.to_string());
            return Ok(Some(drift));
        }
    };
    let mb = layout.mail();
    let mut files = BTreeSet::new();
    for (agent, side) in sources(layout) {
        let mailbox = Mailbox::of(&agent, side).key();
        for f in Folder::ALL.iter().filter(|f| f.side() == side) {
            for name in fsx::list_json(&mb.dir(&agent, *f))? {
                if let Some(id) = message_id(&name) {
                    files.insert((mailbox.clone(), id.to_string()));
                }
            }
        }
    }
    for id in mb.dead_files()?.letters {
        files.insert((DEAD_LETTERS.to_string(), id));
    }
    drift.missing = files.difference(&rows).map(|(m, f)| format!("{m} {f}")).collect();
    drift.gone = rows.difference(&files).map(|(m, f)| format!("{m} {f}")).collect();
    Ok(Some(drift))
}

/// Every (mailbox, file) of the database at `path`, opened read-only: as an
/// immutable file when no write-ahead log is beside it, so that nothing is
/// created or changed.
fn read_keys(path: &Path) -> Result<BTreeSet<(String, String)>, IndexError> {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let mode = if Path::new(&wal).exists() { "mode=ro" } else { "immutable=1" };
    let uri = format!("file:{}?{mode}", path.display().to_string().replace('?', "%3f").replace('#', "%23"));
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(uri, flags).map_err(sql(path))?;
    conn.busy_timeout(BUSY).map_err(sql(path))?;
    let ok: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0)).map_err(sql(path))?;
    if ok != "ok" {
        return Err(sql(path)(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            Some(format!("quick_check: {ok}")),
        )));
    }
    let mut s = conn.prepare("SELECT mailbox, file FROM messages").map_err(sql(path))?;
    let rows = s.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(sql(path))?;
    rows.collect::<Result<_, _>>().map_err(sql(path))
}

#[cfg(test)]
mod tests;
