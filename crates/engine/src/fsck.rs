//! `lemming fsck`: checks the guarantees G2–G8 (docs/guarantees.md) on disk and reports
//! what it finds as typed [`Finding`]s, each a violation or a note.
//!
//! It never takes the org lock and never writes, so it runs on any org, even
//! while a daemon runs turns. Files move under it: a file listed and then gone
//! is skipped, and every check that could be fooled by a move in flight looks
//! again, in the order the engine moves files (`inbox/new` → `inbox/cur`,
//! `inbox/new` → `dead/`), before it reports anything:
//!
//! - a message is a duplicate only if it is in `inbox/cur` and then still in
//!   `inbox/new` (nothing moves from `cur` back to `new`), or in
//!   `inbox/archive` and then still in `inbox/cur` or `inbox/new` (nothing
//!   leaves the archive);
//! - a sent message is lost for a recipient only if it is in neither inbox
//!   folder and then no dead letter covers it (poison links the dead letter
//!   before it removes the inbox copy);
//! - journal records are judged against the turn committed *before* they were
//!   read, and ledger charges against the turn committed *after* the ledger was read.
//!
//! It also compares the search index ([`crate::index`]) with the files: a
//! difference is a note that suggests `lemming reindex`, never a violation,
//! since the index is derived from the files.
//!
//! Paths in findings are relative to the org root.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::PathError;
use crate::fsx::{self, list_json};
use crate::journal::{Journal, Outcome, Record};
use crate::ledger::{Entry, MAX_CREDITS};
use crate::lock;
use crate::mailbox::{message_id, DeadReason, Folder, FsMailStore, READ_LIMIT};
use crate::message::Message;
use crate::name::AgentName;
use crate::org::{agent_folders, Layout};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// A guarantee is broken: mail lost or duplicated, credits wrong, a reason missing.
    Violation,
    /// Worth knowing, and expected in a healthy org (pending mail, a turn in progress).
    Note,
}

/// What a finding is about. The snake_case names are stable: scripts match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    /// G2: a file in an inbox or in `outbox/sent` that is not a message.
    UnparseableMessage,
    /// G2: leftover temporary files of processes that have exited.
    StaleTmp,
    /// G2: a directory, symbolic link, FIFO, socket or device where a message
    /// file or a dead letter should be.
    NotARegularFile,
    /// G3: a message in two of an inbox's folders at once: unread
    /// (`inbox/new`), read (`inbox/cur`), archived (`inbox/archive`).
    DuplicateMessage,
    /// G3: an inbox file not named `<id>.json` after the id it holds.
    MisnamedMessage,
    /// G3: a routed message whose id a recipient holds with other content: two
    /// messages shared one id and one of them was never delivered.
    DuplicateId,
    /// G3: a routed message that a recipient never got, and no dead letter says why.
    LostMessage,
    /// G3: a routed message whose recipient's folder is gone (the agent was removed).
    RecipientGone,
    /// G3: a message to a group (`@name`) or to everyone (`*`) that an agent
    /// it reaches today never got, with no dead letter: the group or the
    /// chart changed after it was routed (or it was lost).
    MemberMissed,
    /// G3: messages waiting in an outbox for the next turn.
    PendingMessages,
    /// G4: a committed turn used a message that is still unread.
    UnconsumedMail,
    /// G4: a journal for a turn after the last committed one: interrupted or in progress.
    InterruptedTurn,
    /// G4: a journal line that does not parse (a write torn by a crash).
    TornJournalLine,
    /// G5: the same (turn, agent) charged more than once.
    DoubleCharge,
    /// G5: a negative or non-finite cost or top-up.
    InvalidAmount,
    /// G5: a charge for a turn after the one in progress.
    FutureCharge,
    /// G5: a committed reply that used tokens but has no charge.
    MissingCharge,
    /// G5: a complete ledger line that is not a ledger entry.
    CorruptLedgerLine,
    /// G5: a ledger line cut short by a crash; skipped by readers.
    TornLedgerLine,
    /// G6: a live process holds the org lock.
    LockHeld,
    /// G6: no live process holds the org lock.
    LockFree,
    /// G7: a dead letter without its reason.
    DeadWithoutReason,
    /// G7: a dead letter's reason that does not parse.
    UnreadableReason,
    /// G7: a reason whose dead letter is gone.
    ReasonWithoutLetter,
    /// G7: the dead letters, counted by reason.
    DeadLetters,
    /// G8: a tool call with more than one result in its turn's journal: it may have run twice.
    RepeatedToolCall,
    /// G8: a committed reply's tool call whose `tool_result` never reached the agent's inbox.
    MissingToolResult,
    /// A file or folder fsck could not read (other than one that went away).
    UnreadableFile,
    /// The search index differs from the files (it is derived: `lemming reindex` rebuilds it).
    StaleIndex,
}

impl Code {
    /// The severity of every finding with this code.
    pub fn severity(self) -> Severity {
        use Code::*;
        match self {
            UnparseableMessage | NotARegularFile | DuplicateMessage | MisnamedMessage | DuplicateId | LostMessage
            | UnconsumedMail | DoubleCharge | InvalidAmount | FutureCharge | MissingCharge | CorruptLedgerLine
            | DeadWithoutReason | UnreadableReason | RepeatedToolCall | MissingToolResult | UnreadableFile => {
                Severity::Violation
            }
            StaleTmp | RecipientGone | MemberMissed | PendingMessages | InterruptedTurn | TornJournalLine
            | TornLedgerLine | LockHeld | LockFree | ReasonWithoutLetter | DeadLetters | StaleIndex => Severity::Note,
        }
    }

    /// The guarantee it is about (`G2`…`G8`), or `io` for an unreadable file.
    pub fn guarantee(self) -> &'static str {
        use Code::*;
        match self {
            UnparseableMessage | StaleTmp | NotARegularFile => "G2",
            DuplicateMessage | MisnamedMessage | DuplicateId | LostMessage | RecipientGone | MemberMissed
            | PendingMessages => "G3",
            UnconsumedMail | InterruptedTurn | TornJournalLine => "G4",
            DoubleCharge | InvalidAmount | FutureCharge | MissingCharge | CorruptLedgerLine | TornLedgerLine => "G5",
            LockHeld | LockFree => "G6",
            DeadWithoutReason | UnreadableReason | ReasonWithoutLetter | DeadLetters => "G7",
            RepeatedToolCall | MissingToolResult => "G8",
            UnreadableFile => "io",
            StaleIndex => "index",
        }
    }

    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        use Code::*;
        match self {
            UnparseableMessage => "unparseable_message",
            StaleTmp => "stale_tmp",
            NotARegularFile => "not_a_regular_file",
            DuplicateMessage => "duplicate_message",
            MisnamedMessage => "misnamed_message",
            DuplicateId => "duplicate_id",
            LostMessage => "lost_message",
            RecipientGone => "recipient_gone",
            MemberMissed => "member_missed",
            PendingMessages => "pending_messages",
            UnconsumedMail => "unconsumed_mail",
            InterruptedTurn => "interrupted_turn",
            TornJournalLine => "torn_journal_line",
            DoubleCharge => "double_charge",
            InvalidAmount => "invalid_amount",
            FutureCharge => "future_charge",
            MissingCharge => "missing_charge",
            CorruptLedgerLine => "corrupt_ledger_line",
            TornLedgerLine => "torn_ledger_line",
            LockHeld => "lock_held",
            LockFree => "lock_free",
            DeadWithoutReason => "dead_without_reason",
            UnreadableReason => "unreadable_reason",
            ReasonWithoutLetter => "reason_without_letter",
            DeadLetters => "dead_letters",
            RepeatedToolCall => "repeated_tool_call",
            MissingToolResult => "missing_tool_result",
            UnreadableFile => "unreadable_file",
            StaleIndex => "stale_index",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// One thing fsck found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// Violation or note (always `code.severity()`).
    pub severity: Severity,
    /// What it is about.
    pub code: Code,
    /// The guarantee concerned (always `code.guarantee()`).
    pub guarantee: &'static str,
    /// The files concerned, relative to the org root.
    pub paths: Vec<PathBuf>,
    /// What it means and what to do, for people.
    pub message: String,
}

/// Everything fsck found, grouped by guarantee, violations first within each.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The findings.
    pub findings: Vec<Finding>,
}

impl Report {
    /// The number of violations.
    pub fn violations(&self) -> usize {
        self.findings.iter().filter(|f| f.severity == Severity::Violation).count()
    }

    /// The number of notes.
    pub fn notes(&self) -> usize {
        self.findings.iter().filter(|f| f.severity == Severity::Note).count()
    }

    /// Whether no guarantee is broken.
    pub fn ok(&self) -> bool {
        self.violations() == 0
    }

    /// The findings with this code.
    pub fn with_code(&self, code: Code) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.code == code)
    }
}

/// Checks the org at `root`. Read-only, lock-free; problems reading files become findings.
pub fn check(root: &Path) -> Report {
    let mut f = Fsck::new(root);
    f.lock();

    // Journal records are judged against the turn committed before they are read;
    // ledger charges against the turn committed after the ledger is read.
    let before = f.committed();
    let records = match before {
        Some(c) => f.journal_records(c),
        None => Vec::new(),
    };
    let ledger = f.ledger_lines();
    let after = before.and_then(|_| f.committed());
    // An unreadable ledger is one finding: the charges it holds are unknown, not missing.
    let charged = ledger.map(|lines| f.ledger_checks(&lines, after));
    f.journal_checks(&records, charged.as_ref());
    f.tool_checks(&records);
    if let Some(c) = after {
        f.interrupted(c);
    }

    let agents: Vec<String> = agent_folders(&f.layout).into_iter().filter(|a| AgentName::new(a).is_ok()).collect();
    let mut inboxes = BTreeMap::new();
    for agent in &agents {
        let inbox = f.inbox(agent);
        inboxes.insert(agent.clone(), inbox);
        f.pending(agent);
        let leftovers = f.mb.tmp_leftovers(agent);
        f.stale_tmp(leftovers);
    }
    let state_tmp = f.layout.state_tmp();
    let leftovers = fs::read_dir(&state_tmp).into_iter().flatten().flatten().map(|e| e.path()).collect();
    f.stale_tmp(leftovers);
    for agent in &agents {
        f.sent(agent, &inboxes);
    }
    f.dead();
    f.index();

    let mut findings = f.findings;
    findings.sort_by_key(|x| (x.guarantee, x.severity));
    Report { findings }
}

/// The file names of one agent's inbox, as first listed.
#[derive(Debug, Default)]
struct Inbox {
    new: BTreeSet<String>,
    cur: BTreeSet<String>,
    archive: BTreeSet<String>,
}

impl Inbox {
    fn holds(&self, name: &str) -> bool {
        self.new.contains(name) || self.cur.contains(name) || self.archive.contains(name)
    }
}

/// A ledger charge or top-up, with its line number.
struct Line {
    no: usize,
    entry: Entry,
}

struct Fsck {
    root: PathBuf,
    layout: Layout,
    /// The org as loaded now (leniently), for what groups and `*` expand to;
    /// loaded the first time a sent message names one.
    org: std::cell::OnceCell<crate::org::Org>,
    mb: FsMailStore,
    journal: Journal,
    /// The live holder of the org lock, if any.
    holder: Option<u32>,
    /// The most bytes read of one message file.
    read_limit: u64,
    findings: Vec<Finding>,
}

impl Fsck {
    fn new(root: &Path) -> Fsck {
        let layout = Layout::new(root);
        // Messages up to the org's size limit are read (at least READ_LIMIT).
        let org_toml = layout.org_toml();
        let configured = match fsx::read_entry(&org_toml, 1 << 20) {
            Ok(fsx::Entry::File { bytes, .. }) => String::from_utf8(bytes)
                .ok()
                .and_then(|t| crate::settings::parse(&org_toml, &t).ok())
                .map(|s| s.max_message_bytes),
            _ => None,
        };
        Fsck {
            read_limit: configured.unwrap_or_default().max(READ_LIMIT),
            root: root.to_path_buf(),
            org: std::cell::OnceCell::new(),
            mb: layout.mail(),
            journal: Journal::new(&layout),
            layout,
            holder: None,
            findings: Vec::new(),
        }
    }

    /// The search index against the files: a note, never a violation (it is derived).
    fn index(&mut self) {
        let drift = match crate::index::compare(&self.layout) {
            Ok(Some(d)) => d,
            Ok(None) => return,
            Err(e) => return self.unreadable(e),
        };
        let dir = self.layout.index_dir();
        if let Some(why) = drift.unreadable {
            let message = format!(
                "the search index cannot be read ({why}); the next search rebuilds it, or run `lemming reindex`"
            );
            return self.push(Code::StaleIndex, &[&dir], message);
        }
        if drift.missing.is_empty() && drift.gone.is_empty() {
            return;
        }
        let sample = |v: &[String]| {
            let shown: Vec<&str> = v.iter().take(3).map(String::as_str).collect();
            let more = if v.len() > 3 { format!(", and {} more", v.len() - 3) } else { String::new() };
            format!("{}{more}", shown.join(", "))
        };
        let mut parts = Vec::new();
        if !drift.missing.is_empty() {
            parts.push(format!("lacks {} message(s) of the files ({})", drift.missing.len(), sample(&drift.missing)));
        }
        if !drift.gone.is_empty() {
            parts.push(format!("has {} row(s) whose file is gone ({})", drift.gone.len(), sample(&drift.gone)));
        }
        let message = format!(
            "the search index {}; search shows only what the files hold, but may miss messages: run `lemming reindex`",
            parts.join(" and ")
        );
        self.push(Code::StaleIndex, &[&dir], message);
    }

    fn rel(&self, p: &Path) -> PathBuf {
        p.strip_prefix(&self.root).map(Path::to_path_buf).unwrap_or_else(|_| p.to_path_buf())
    }

    fn push(&mut self, code: Code, paths: &[&Path], message: String) {
        let paths = paths.iter().map(|p| self.rel(p)).collect();
        self.findings.push(Finding { severity: code.severity(), code, guarantee: code.guarantee(), paths, message });
    }

    fn unreadable(&mut self, e: PathError) {
        let message = format!(
            "cannot read {}: {}; fsck could not check what it holds. Fix its permissions and run fsck again",
            self.rel(&e.path).display(),
            e.source
        );
        self.push(Code::UnreadableFile, &[&e.path], message);
    }

    /// The JSON files of a folder (none if it is missing).
    fn list(&mut self, dir: &Path) -> Vec<String> {
        list_json(dir).unwrap_or_else(|e| {
            self.unreadable(e);
            Vec::new()
        })
    }

    /// Every entry of a mailbox folder but those starting with a dot (none if it is missing).
    fn list_all(&mut self, dir: &Path) -> Vec<std::ffi::OsString> {
        fsx::list_entries(dir).unwrap_or_else(|e| {
            self.unreadable(e);
            Vec::new()
        })
    }

    /// A mailbox or dead-letter file's bytes, read without following a link,
    /// blocking on a FIFO or reading past the size limit; `None` if it went
    /// away, or is not a regular file or too large (then `odd` says what to do
    /// about it), or could not be read (then a finding).
    fn read_message(&mut self, path: &Path, odd: &str) -> Option<Vec<u8>> {
        match fsx::read_entry(path, self.read_limit) {
            Ok(fsx::Entry::File { bytes, .. }) => Some(bytes),
            Ok(fsx::Entry::Gone) => None,
            Ok(fsx::Entry::TooLarge { size, .. }) => {
                let message = format!(
                    "{} is {size} bytes, more than the limit of {} bytes, so it was not read; {odd}",
                    self.rel(path).display(),
                    self.read_limit
                );
                self.push(Code::UnparseableMessage, &[path], message);
                None
            }
            Ok(fsx::Entry::NotRegular { kind, target }) => {
                let message = format!(
                    "{} is {}{}, not a regular file; the engine never reads or follows it. {odd}",
                    self.rel(path).display(),
                    kind.describe(),
                    target.map(|t| format!(" to {t:?}")).unwrap_or_default()
                );
                self.push(Code::NotARegularFile, &[path], message);
                None
            }
            Err(e) => {
                self.unreadable(e);
                None
            }
        }
    }

    /// A file's bytes; `None` if it went away (or could not be read, or is
    /// not a regular file: then a finding).
    fn read(&mut self, path: &Path) -> Option<Vec<u8>> {
        fsx::read_optional(path).unwrap_or_else(|e| {
            self.unreadable(e);
            None
        })
    }

    /// The last committed turn (0 before the first); `None` if `turn.json` is unreadable.
    fn committed(&mut self) -> Option<u64> {
        match self.journal.committed() {
            Ok(Some(c)) => Some(c.turn),
            // No turn.json: the engine goes on from the turn its history shows (0 for a new org).
            Ok(None) => Some(self.journal.recover().unwrap_or(0)),
            Err(e) => {
                if !self.findings.iter().any(|f| f.code == Code::UnreadableFile && f.paths == [self.rel(&e.path)]) {
                    let recovered = self.journal.recover().map(|t| t.to_string()).unwrap_or_else(|e| e.to_string());
                    let message = format!(
                        "{} does not hold the last committed turn ({}); the checks that need it (journal, future \
                         charges) were skipped. The engine recovers the turn from the journal, the ledger and the \
                         events ({recovered}) and writes the file again at the end of the next turn",
                        self.rel(&e.path).display(),
                        e.source
                    );
                    self.push(Code::UnreadableFile, &[&e.path], message);
                }
                None
            }
        }
    }

    // G6 ------------------------------------------------------------------

    fn lock(&mut self) {
        let path = self.layout.lock();
        // The kernel says who holds the lock; the pid in the file is only who took it last.
        match lock::holder(&self.layout) {
            Some(pid) => {
                self.holder = Some(pid);
                self.push(
                    Code::LockHeld,
                    &[&path],
                    format!(
                        "pid {pid} holds the org lock: a `lemming run` or `step` is running turns. Pending mail, \
                         temporary files and a turn in progress may be transient; run fsck again when it is idle \
                         to be sure"
                    ),
                );
            }
            None => match lock::last_pid(&self.layout) {
                Some(pid) => self.push(
                    Code::LockFree,
                    &[&path],
                    format!("no process runs turns: pid {pid}, the last to hold the org lock, no longer holds it"),
                ),
                None => self.push(Code::LockFree, &[&path], "no process runs turns: no one holds the org lock".into()),
            },
        }
    }

    // G4: the journal -------------------------------------------------------

    /// The records of committed turns (`turn <= committed`), the first per agent
    /// and turn as the engine reads them, with their turn.
    fn journal_records(&mut self, committed: u64) -> Vec<(u64, Record)> {
        let turns = self.journal.turns().unwrap_or_else(|e| {
            self.unreadable(e);
            Vec::new()
        });
        let mut out = Vec::new();
        for turn in turns.into_iter().filter(|t| *t <= committed) {
            let mut seen = BTreeSet::new();
            for r in self.journal_file(turn) {
                if seen.insert(r.agent.clone()) {
                    out.push((turn, r));
                }
            }
        }
        out
    }

    /// Every record that parses in a turn's journal; torn lines become notes.
    fn journal_file(&mut self, turn: u64) -> Vec<Record> {
        let path = self.journal.records_path(turn);
        let Some(bytes) = self.read(&path) else { return Vec::new() };
        let text = String::from_utf8_lossy(&bytes);
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Record>(line) {
                Ok(r) => out.push(r),
                Err(e) => self.push(
                    Code::TornJournalLine,
                    &[&path],
                    format!(
                        "line {} of turn {turn}'s journal does not parse ({e}): a write cut short by a crash. The \
                         engine ignores it; the reply it held, if any, was asked for again",
                        i + 1
                    ),
                ),
            }
        }
        out
    }

    /// Committed replies: their mail is consumed and their usage charged
    /// (`charged` is `None` when the ledger could not be read).
    fn journal_checks(&mut self, records: &[(u64, Record)], charged: Option<&BTreeSet<(u64, String)>>) {
        for (turn, r) in records {
            if r.outcome == Outcome::Ok {
                for id in &r.mail {
                    let new = self.mb.message_path(&r.agent, Folder::Unread, id);
                    let cur = self.mb.message_path(&r.agent, Folder::Read, id);
                    let archived = self.mb.message_path(&r.agent, Folder::Archive, id);
                    if new.exists() && !cur.exists() && !archived.exists() {
                        let message = format!(
                            "turn {turn} committed {}'s reply to message {id}, but the message is still unread: the \
                             agent will read and answer it again (G4: mail is consumed once the reply is durable). \
                             Move it to inbox/cur: mv {} {}",
                            r.agent,
                            crate::term::shell_path(&self.rel(&new)),
                            crate::term::shell_path(&self.rel(&cur))
                        );
                        self.push(Code::UnconsumedMail, &[&new], message);
                    }
                }
            }
            if let (Some(usage), Some(charged)) = (r.usage, charged) {
                if !charged.contains(&(*turn, r.agent.clone())) {
                    let path = self.journal.records_path(*turn);
                    let message = format!(
                        "turn {turn} committed a reply of {} ({} input + {} output tokens, {} credits) that the \
                         ledger never charged: {}'s balance is {} credits too high. Add the charge to \
                         org/state/ledger.jsonl while no turn runs, and report this as a bug",
                        r.agent, usage.input_tokens, usage.output_tokens, r.cost, r.agent, r.cost
                    );
                    self.push(Code::MissingCharge, &[&path], message);
                }
            }
        }
    }

    /// G8: each tool call of a committed reply has exactly one result: one
    /// `done` line in its turn's `tools.jsonl`, and its `tool_result` message
    /// in the agent's inbox.
    fn tool_checks(&mut self, records: &[(u64, Record)]) {
        let turns: BTreeSet<u64> =
            records.iter().filter(|(_, r)| !r.tool_calls.is_empty()).map(|(turn, _)| *turn).collect();
        for turn in turns {
            let path = self.journal.tools_path(turn);
            let Some(bytes) = self.read(&path) else { continue };
            let mut done: BTreeMap<(String, String), usize> = BTreeMap::new();
            for line in String::from_utf8_lossy(&bytes).lines() {
                if let Ok(l) = serde_json::from_str::<crate::journal::ToolLine>(line) {
                    if l.done.is_some() {
                        *done.entry((l.agent, l.call)).or_default() += 1;
                    }
                }
            }
            for ((agent, call), n) in done.into_iter().filter(|(_, n)| *n > 1) {
                let message = format!(
                    "turn {turn}: {agent}'s tool call {call} has {n} results in the journal: it may have run more                      than once (G8: a call with a side effect runs at most once). Check what it did, and report this                      as a bug"
                );
                self.push(Code::RepeatedToolCall, &[&path], message);
            }
        }
        for (turn, r) in records.iter().filter(|(_, r)| r.outcome == Outcome::Ok) {
            for pc in &r.tool_calls {
                let new = self.mb.message_path(&r.agent, Folder::Unread, &pc.result);
                let cur = self.mb.message_path(&r.agent, Folder::Read, &pc.result);
                let archived = self.mb.message_path(&r.agent, Folder::Archive, &pc.result);
                if !new.exists() && !cur.exists() && !archived.exists() {
                    let message = format!(
                        "turn {turn} committed {}'s tool call {} ({}), but its result {} is not in the agent's                          inbox: the agent never learns how the call went (G8: each call gets exactly one result)",
                        r.agent, pc.call.id, pc.call.tool, pc.result
                    );
                    self.push(Code::MissingToolResult, &[&new], message);
                }
            }
        }
    }

    /// Journals of turns after the last committed one.
    fn interrupted(&mut self, committed: u64) {
        let turns = self.journal.turns().unwrap_or_else(|e| {
            self.unreadable(e);
            Vec::new()
        });
        for turn in turns.into_iter().filter(|t| *t > committed) {
            let path = self.journal.records_path(turn);
            let replies = match self.journal_file(turn).len() {
                1 => "1 reply".to_string(),
                n => format!("{n} replies"),
            };
            let message = match self.holder {
                Some(pid) => format!(
                    "turn {turn} is not committed yet ({replies} journaled); pid {pid} holds the lock, so it is \
                     probably in progress"
                ),
                None => format!(
                    "turn {turn} was interrupted (a crash or a kill) with {replies} journaled; the next `lemming \
                     step` or `run` repeats it, reusing the journaled replies without asking the models again"
                ),
            };
            let dir = path.parent().unwrap_or(&path).to_path_buf();
            self.push(Code::InterruptedTurn, &[&dir], message);
        }
    }

    // G5: the ledger ------------------------------------------------------------

    /// Every ledger line that parses; torn and corrupt lines become findings.
    /// `None` when the ledger exists but cannot be read (one finding says so).
    fn ledger_lines(&mut self) -> Option<Vec<Line>> {
        let path = self.layout.ledger();
        let bytes = match fsx::read_optional(&path) {
            Ok(b) => b.unwrap_or_default(),
            Err(e) => {
                self.unreadable(e);
                return None;
            }
        };
        let text = String::from_utf8_lossy(&bytes);
        let mut out = Vec::new();
        for line in crate::ledger::read_lines(&text) {
            match line {
                crate::ledger::Line::Entry(no, entry) => out.push(Line { no, entry }),
                crate::ledger::Line::Torn(no, e) => self.push(
                    Code::TornLedgerLine,
                    &[&path],
                    format!(
                        "line {no} of the ledger is cut short ({e}): a write interrupted by a crash. Readers skip it, \
                         and the turn it belonged to charged again when it was repeated; nothing to do"
                    ),
                ),
                crate::ledger::Line::Corrupt(no, e) => self.push(
                    Code::CorruptLedgerLine,
                    &[&path],
                    format!(
                        "line {no} of the ledger is not a ledger entry ({e}); readers skip it, so whatever it held \
                         is not counted in any balance. Restore it from a backup or remove it while no turn runs"
                    ),
                ),
            }
        }
        Some(out)
    }

    /// Double and future charges, bad amounts; returns the charged (turn, agent) keys.
    fn ledger_checks(&mut self, lines: &[Line], committed: Option<u64>) -> BTreeSet<(u64, String)> {
        let path = self.layout.ledger();
        let mut charges: BTreeMap<(u64, String), Vec<(usize, f64)>> = BTreeMap::new();
        for l in lines {
            match &l.entry {
                Entry::Charge { turn, agent, cost, .. } => {
                    charges.entry((*turn, agent.clone())).or_default().push((l.no, *cost));
                    if !l.entry.valid() {
                        let message = format!(
                            "line {}: the charge of {agent} on turn {turn} is {cost} credits; a cost is a number from \
                             0 to {MAX_CREDITS}, and this one is not counted in the balance of {agent}: fix the line \
                             while no turn runs",
                            l.no
                        );
                        self.push(Code::InvalidAmount, &[&path], message);
                    }
                    if let Some(c) = committed.filter(|c| *turn > c.saturating_add(1)) {
                        let message = format!(
                            "line {}: {agent} is charged for turn {turn}, but the last committed turn is {c}, so \
                             turn {turn} has not run. The ledger was edited or turn.json rolled back; a charge of a \
                             future turn makes the real one be skipped. Remove the line while no turn runs",
                            l.no
                        );
                        self.push(Code::FutureCharge, &[&path], message);
                    }
                }
                Entry::TopUp { agent, amount, .. } => {
                    if !l.entry.valid() {
                        let message = format!(
                            "line {}: a top-up of {amount} credits for {agent}; a top-up is a number from 0 to \
                             {MAX_CREDITS}, and this one is not counted. Fix the line while no turn runs",
                            l.no
                        );
                        self.push(Code::InvalidAmount, &[&path], message);
                    }
                }
            }
        }
        for ((turn, agent), lines) in &charges {
            if lines.len() > 1 {
                let nos: Vec<String> = lines.iter().map(|(n, _)| n.to_string()).collect();
                let extra: f64 = lines.iter().skip(1).map(|(_, c)| c).sum();
                let message = format!(
                    "{agent} is charged {} times for turn {turn} (lines {}): {agent} paid {extra} credits too many \
                     (G5: one charge per turn and agent). Remove all but the first of these lines while no turn runs",
                    lines.len(),
                    nos.join(", ")
                );
                self.push(Code::DoubleCharge, &[&path], message);
            }
        }
        charges.into_keys().collect()
    }

    // G2 and G3: mailboxes ---------------------------------------------------

    /// Lists an agent's inbox; finds duplicates and files that are not messages.
    fn inbox(&mut self, agent: &str) -> Inbox {
        let new_dir = self.mb.dir(agent, Folder::Unread);
        let cur_dir = self.mb.dir(agent, Folder::Read);
        let archive_dir = self.mb.dir(agent, Folder::Archive);
        // Against the way mail moves (`new` to `cur` to `archive`): a name seen
        // in a later folder and then in an earlier one was in both at once.
        let archive_all = self.list_all(&archive_dir);
        let cur_all = self.list_all(&cur_dir);
        let new_all = self.list_all(&new_dir);
        let json = |all: &[std::ffi::OsString]| -> BTreeSet<String> {
            all.iter().filter_map(|n| n.to_str()).filter(|n| message_id(n).is_some()).map(String::from).collect()
        };
        let (archive, cur, new) = (json(&archive_all), json(&cur_all), json(&new_all));
        for (earlier, dir, state) in [(&cur, &cur_dir, "read"), (&new, &new_dir, "unread")] {
            for name in archive.intersection(earlier) {
                let (e, a) = (dir.join(name), archive_dir.join(name));
                if a.exists() && e.exists() {
                    let id = message_id(name).unwrap_or(name);
                    let message = format!(
                        "message {id} is both archived and {state} in {agent}'s inbox: it was delivered or moved \
                         twice (G3). The archived copy is the one read; remove the other so it is not read or \
                         archived again: rm {}",
                        crate::term::shell_path(&self.rel(&e))
                    );
                    self.push(Code::DuplicateMessage, &[&e, &a], message);
                }
            }
        }
        for name in new.intersection(&cur) {
            let (n, c) = (new_dir.join(name), cur_dir.join(name));
            if c.exists() && n.exists() {
                let id = message_id(name).unwrap_or(name);
                let message = format!(
                    "message {id} is both unread and read in {agent}'s inbox: it was delivered twice (G3). {agent} \
                     has already read it; remove the unread copy so it is not read again: rm {}",
                    crate::term::shell_path(&self.rel(&n))
                );
                self.push(Code::DuplicateMessage, &[&n, &c], message);
            }
        }
        // Unread entries that are not messages are moved to dead by the next
        // turn that runs the agent, or for the human by `lemming inbox`.
        let then = if agent == crate::name::HUMAN {
            "`lemming inbox` moves it to org/state/dead".to_string()
        } else {
            format!("the next turn that runs {agent} moves it to org/state/dead")
        };
        for name in &new_all {
            let path = new_dir.join(name);
            match name.to_str().filter(|n| n.ends_with(".json")) {
                Some(n) => self.message_file(agent, &path, n, &then),
                None => {
                    if self.read_message(&path, &then).is_some() {
                        let message = format!(
                            "{} in {agent}'s inbox is not named <id>.json, so it is not a message; {then} as \
                             `malformed`",
                            self.rel(&path).display()
                        );
                        self.push(Code::UnparseableMessage, &[&path], message);
                    }
                }
            }
        }
        let skipped = "Readers skip it; move it out of the inbox";
        for name in cur_all.iter().map(|n| (&cur_dir, n)).chain(archive_all.iter().map(|n| (&archive_dir, n))) {
            let path = name.0.join(name.1);
            let name = name.1;
            match name.to_str().filter(|n| n.ends_with(".json")) {
                Some(n) => self.message_file(agent, &path, n, skipped),
                // Readers skip other names in `cur/`; only what is not a file is worth a word.
                None => {
                    let _ = self.read_message(&path, skipped);
                }
            }
        }
        Inbox { new, cur, archive }
    }

    /// Parses an inbox file: it must be a message named after its id. `then`
    /// says what becomes of it if it is not a message.
    fn message_file(&mut self, agent: &str, path: &Path, name: &str, then: &str) {
        let Some(bytes) = self.read_message(path, then) else { return };
        match Message::parse(&bytes) {
            Ok(m) if crate::mailbox::message_file(&m.id) != name => {
                let message = format!(
                    "{} holds message {}: the engine names inbox files <id>.json and finds them by that name, so \
                     this one can be delivered again. Rename it to {}",
                    self.rel(path).display(),
                    m.id,
                    crate::mailbox::message_file(&m.id)
                );
                self.push(Code::MisnamedMessage, &[path], message);
            }
            Ok(_) => {}
            Err(e) => {
                let message = format!(
                    "{} in {agent}'s inbox is not a message ({e}). The engine delivers only messages that parse, \
                     so it was written or changed by something else. {then}",
                    self.rel(path).display()
                );
                self.push(Code::UnparseableMessage, &[path], message);
            }
        }
    }

    fn pending(&mut self, agent: &str) {
        let dir = self.mb.dir(agent, Folder::Pending);
        let n = self.list_all(&dir).len();
        if n > 0 {
            let message = format!(
                "{n} message(s) wait in {agent}'s outbox; the next turn routes them, or sets aside as dead letters \
                 those that are not messages (mail from or to an agent whose resume is invalid waits until the \
                 resume is fixed: see `lemming validate`)"
            );
            self.push(Code::PendingMessages, &[&dir], message);
        }
    }

    /// Leftover temporary files whose writer is gone (writers still alive are skipped).
    fn stale_tmp(&mut self, files: Vec<PathBuf>) {
        let mut by_dir: BTreeMap<PathBuf, Vec<PathBuf>> = BTreeMap::new();
        for p in files {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if fsx::tmp_pid(name).is_some_and(lock::pid_alive) {
                continue;
            }
            by_dir.entry(p.parent().map(Path::to_path_buf).unwrap_or_default()).or_default().push(p);
        }
        for (dir, files) in by_dir {
            // A turn cleans the mailboxes' tmp folders, not org/state/tmp.
            let then = if dir == self.layout.state_tmp() {
                "the engine does not clean this folder, so delete them while no process runs turns"
            } else {
                "the next `lemming step` or daemon start removes them, and a running daemon within ten turns"
            };
            let message = format!(
                "{} leftover temporary file(s) in {} whose writer has exited (a crash mid-write). Harmless, as no \
                 reader looks there; {then}",
                files.len(),
                self.rel(&dir).display()
            );
            let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
            self.push(Code::StaleTmp, &paths, message);
        }
    }

    /// Every routed message reached each recipient, or a dead letter says why not.
    fn sent(&mut self, agent: &str, inboxes: &BTreeMap<String, Inbox>) {
        let dir = self.mb.dir(agent, Folder::Sent);
        for file in self.list(&dir) {
            let path = dir.join(&file);
            let odd = "It was never delivered as a message; remove it (the engine now refuses such entries as \
                       dead letters)";
            let Some(bytes) = self.read_message(&path, odd) else { continue };
            let msg = match Message::parse(&bytes) {
                Ok(m) => m,
                Err(e) => {
                    let message = format!(
                        "{} is not a message ({e}), though it was checked when it was routed: it was changed since, \
                         and so was every inbox copy (they are hard links of it). fsck cannot check its delivery",
                        self.rel(&path).display()
                    );
                    self.push(Code::UnparseableMessage, &[&path], message);
                    continue;
                }
            };
            for (to, via) in self.recipients(agent, &msg) {
                self.delivered(agent, &path, &msg, &bytes, &to, via, inboxes);
            }
        }
    }

    /// Whom a routed message went to: the names it was written to, and the
    /// agents its groups and `*` expand to with the org as it is now (with
    /// the group or `*` that named them). A group that is gone names nobody.
    fn recipients(&self, from: &str, msg: &Message) -> Vec<(String, Option<String>)> {
        let mut out: Vec<(String, Option<String>)> = Vec::new();
        for written in &msg.to.0 {
            let one = crate::message::To(vec![written.clone()]);
            let via = crate::address::is_broadcast(&one).then(|| written.clone());
            let names = match via {
                None => vec![written.clone()],
                Some(_) => {
                    let org = self.org.get_or_init(|| crate::org::Org::load_or_last_good(&self.root, None));
                    org.recipients(from, &one).unwrap_or_default().into_iter().map(|r| r.name).collect()
                }
            };
            for n in names {
                match out.iter_mut().find(|(o, _)| *o == n) {
                    // Named directly as well: its loss is a loss.
                    Some(seen) if via.is_none() => seen.1 = None,
                    Some(_) => {}
                    None => out.push((n, via.clone())),
                }
            }
        }
        out
    }

    /// Whether `from` and `to` run on different nodes of `[cluster]`: the
    /// copy went through NATS, and `to`'s inbox is the other node's to check.
    fn across_nodes(&self, from: &str, to: &str) -> bool {
        let org = self.org.get_or_init(|| crate::org::Org::load_or_last_good(&self.root, None));
        let node = |a: &str| org.agents.get(a).and_then(|r| org.node_of(r));
        matches!((node(from), node(to)), (Some(f), Some(t)) if f != t)
    }

    #[allow(clippy::too_many_arguments)]
    fn delivered(
        &mut self,
        from: &str,
        sent: &Path,
        msg: &Message,
        bytes: &[u8],
        to: &str,
        via: Option<String>,
        inboxes: &BTreeMap<String, Inbox>,
    ) {
        let name = crate::mailbox::message_file(&msg.id);
        let valid = AgentName::new(to).is_ok();
        if valid {
            if inboxes.get(to).is_some_and(|i| i.holds(&name)) {
                self.same_copy(from, sent, msg, bytes, to);
                return;
            }
            // Delivered since the inbox was listed, or moved on: look again, in the order mail moves.
            if [Folder::Unread, Folder::Read, Folder::Archive]
                .into_iter()
                .any(|f| self.mb.message_path(to, f, &msg.id).exists())
            {
                self.same_copy(from, sent, msg, bytes, to);
                return;
            }
        }
        if self.mb.dead_covers(from, &msg.id, to, self.read_limit) || self.across_nodes(from, to) {
            return;
        }
        if !valid || !self.layout.agent_dir(to).is_dir() {
            let message = format!(
                "message {} from {from} was routed to {to}, which is no agent folder now (removed or renamed \
                 since?); its copy went with the folder. Nothing to do unless {to} should exist",
                msg.id
            );
            self.push(Code::RecipientGone, &[sent], message);
            return;
        }
        let inbox = self.mb.message_path(to, Folder::Unread, &msg.id);
        if let Some(via) = via {
            let message = format!(
                "message {} from {from} to {via} (turn {}) is in neither inbox/new nor inbox/cur of {to}, whom {via} \
                 reaches today, and no dead letter says why: {to} joined the group, or the chart changed, after it \
                 was routed (or it was lost). If {to} should have it: cp {} {}",
                msg.id,
                msg.turn,
                self.rel(sent).display(),
                self.rel(&inbox).display()
            );
            self.push(Code::MemberMissed, &[sent], message);
            return;
        }
        let message = format!(
            "message {} from {from} to {to} was routed (it is in {from}'s outbox/sent) but is in none of inbox/new, \
             inbox/cur and inbox/archive of {to}, and no dead letter says why: it was lost (G3). To deliver it \
             again: cp {} {}",
            msg.id,
            self.rel(sent).display(),
            self.rel(&inbox).display()
        );
        self.push(Code::LostMessage, &[sent], message);
    }

    /// Checks that what `to` holds under the id of `msg` is that message (the
    /// same file, as delivery is a hard link, or the same bytes): else two
    /// messages shared one id, and the one in `sent` never reached `to`.
    fn same_copy(&mut self, from: &str, sent: &Path, msg: &Message, bytes: &[u8], to: &str) {
        let Ok(m) = fs::symlink_metadata(sent) else { return };
        let fid = fsx::FileId::of(&m);
        // Mail moves from `new` to `cur` to `archive`: look in that order.
        for copy in [Folder::Unread, Folder::Read, Folder::Archive].map(|f| self.mb.message_path(to, f, &msg.id)) {
            match self.mb.same_file(&copy, fid, bytes) {
                Ok(true) => return,
                Ok(false) if fs::symlink_metadata(&copy).is_ok() => {
                    let id = &msg.id;
                    let message = format!(
                        "{} holds message {id}, but {to}'s copy of {id} ({}) is another message: two messages used \
                         one id, and this one never reached {to}, with no dead letter to say so. To deliver it, \
                         give it a new id and put it in {from}'s outbox/new again",
                        self.rel(sent).display(),
                        self.rel(&copy).display()
                    );
                    self.push(Code::DuplicateId, &[sent, &copy], message);
                    return;
                }
                Ok(false) => {}
                Err(e) => {
                    self.unreadable(e);
                    return;
                }
            }
        }
    }

    // G7: dead letters ---------------------------------------------------------

    fn dead(&mut self) {
        let dir = self.mb.dead_path();
        let crate::mailbox::DeadFiles { letters, reasons } = self.mb.dead_files().unwrap_or_else(|e| {
            self.unreadable(e);
            Default::default()
        });
        for id in letters.difference(&reasons) {
            let (letter, why) = (self.mb.letter_path(id), self.mb.reason_path(id));
            // The engine writes the reason before it links the letter: look again.
            if !why.exists() && letter.exists() {
                let message = format!(
                    "dead letter {id} has no reason beside it (G7: nothing refused without its reason). The engine \
                     writes the reason first, so it was removed or lost: read the letter, and write down why it \
                     died in {} or remove the letter",
                    self.rel(&why).display()
                );
                self.push(Code::DeadWithoutReason, &[&letter], message);
            }
        }
        for id in reasons.difference(&letters) {
            let (letter, why) = (self.mb.letter_path(id), self.mb.reason_path(id));
            if !letter.exists() && why.exists() {
                let message = format!(
                    "the reason {} has no dead letter beside it: the message itself was removed (or a turn is \
                     writing it right now). The reason still says what happened; nothing to do",
                    self.rel(&why).display()
                );
                self.push(Code::ReasonWithoutLetter, &[&why], message);
            }
        }
        for id in &letters {
            let letter = self.mb.letter_path(id);
            match fs::symlink_metadata(&letter) {
                Ok(m) if !m.file_type().is_file() => {
                    let kind = fsx::EntryKind::of(m.file_type());
                    let target = fs::read_link(&letter).map(|t| format!(" to {t:?}")).unwrap_or_default();
                    let message = format!(
                        "dead letter {} is {}{target}, not a regular file: a dead letter holds the bytes that were \
                         refused, never a link to something outside the org (an older lemming linked entries that \
                         were not files). Replace it by a regular file that says what it was",
                        self.rel(&letter).display(),
                        kind.describe()
                    );
                    self.push(Code::NotARegularFile, &[&letter], message);
                }
                _ => {}
            }
        }
        let mut by_reason: BTreeMap<String, usize> = BTreeMap::new();
        for id in &reasons {
            let why = self.mb.reason_path(id);
            let Some(bytes) = self.read_message(&why, "Replace it by the reason, as a regular file") else { continue };
            match serde_json::from_slice::<DeadReason>(&bytes) {
                Ok(r) => *by_reason.entry(r.reason.to_string()).or_default() += 1,
                Err(e) => {
                    let message = format!(
                        "the reason of dead letter {id} does not parse ({e}): why it died is lost (G7). Read the \
                         letter and write the reason again (see docs/on-disk-format.md)"
                    );
                    self.push(Code::UnreadableReason, &[&why], message);
                }
            }
        }
        let total: usize = by_reason.values().sum();
        if total > 0 {
            let counts: Vec<String> = by_reason.iter().map(|(r, n)| format!("{n} {r}")).collect();
            let message = format!(
                "{total} dead letter(s): {}. Each is a message refused, expired or poisoned, with its reason in \
                 <id>.why.json; `lemming status` counts them",
                counts.join(", ")
            );
            self.push(Code::DeadLetters, &[&dir], message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::MailStore;

    /// A default org with every agent's mailbox folders.
    fn org() -> (tempfile::TempDir, PathBuf) {
        let (d, root) = crate::testing::new_org();
        let mb = Layout::new(&root).mail();
        for a in agent_folders(&Layout::new(&root)) {
            mb.ensure(&a).unwrap();
        }
        (d, root)
    }

    fn msg(id: &str, from: &str, to: &[&str]) -> Message {
        crate::testing::message(id, from, to, "hi")
    }

    fn put(root: &Path, rel: &str, bytes: impl AsRef<[u8]>) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, bytes).unwrap();
    }

    /// Puts a message where routing leaves it: in the sender's `outbox/sent`.
    fn sent(root: &Path, m: &Message) {
        put(root, &format!("agents/{}/outbox/sent/{}", m.from, crate::mailbox::message_file(&m.id)), m.to_bytes());
    }

    fn deliver(root: &Path, m: &Message, to: &str, sub: &str) {
        put(root, &format!("agents/{to}/inbox/{sub}/{}", crate::mailbox::message_file(&m.id)), m.to_bytes());
    }

    fn why(root: &Path, id: &str, reason: &str, to: &[&str]) {
        why_in(root, id, reason, "planner", to)
    }

    /// A dead letter and its reason, refused in `mailbox`.
    fn why_in(root: &Path, id: &str, reason: &str, mailbox: &str, to: &[&str]) {
        let r = serde_json::json!({"id": id, "reason": reason, "detail": "d", "mailbox": mailbox,
            "to": to, "turn": 1, "at": "2026-01-01T00:00:00Z"});
        put(root, &format!("org/state/dead/{id}.why.json"), r.to_string());
        put(root, &format!("org/state/dead/{id}.json"), msg(id, "planner", to).to_bytes());
    }

    /// The codes found, with the paths of each finding.
    fn codes(r: &Report) -> Vec<(Code, Vec<String>)> {
        r.findings.iter().map(|f| (f.code, f.paths.iter().map(|p| p.display().to_string()).collect())).collect()
    }

    fn count(r: &Report, code: Code) -> usize {
        r.with_code(code).count()
    }

    fn charge(turn: u64, agent: &str, cost: f64) -> String {
        format!(
            "{{\"kind\":\"charge\",\"turn\":{turn},\"agent\":\"{agent}\",\"model\":\"default\",\"input_tokens\":1,\
             \"output_tokens\":1,\"cost\":{cost},\"at\":\"2026-01-01T00:00:00Z\"}}\n"
        )
    }

    fn record(turn: u64, agent: &str, mail: &[&str], usage: bool) -> String {
        let usage =
            if usage { serde_json::json!({"input_tokens": 10, "output_tokens": 5}) } else { serde_json::Value::Null };
        let r = serde_json::json!({"turn": turn, "agent": agent, "model": "default", "outcome": "ok", "reply": "{}",
            "error": null, "usage": usage, "cost": 0.5, "mail": mail, "messages": [], "memory": {},
            "notes": "", "warnings": []});
        format!("{r}\n")
    }

    fn commit(root: &Path, turn: u64) {
        put(root, "org/state/turn.json", format!("{{\"turn\":{turn},\"committed_at\":null}}"));
    }

    #[tokio::test]
    async fn a_clean_org_after_turns_has_no_violations_until_a_delivered_copy_goes() {
        let (_d, root) = org();
        let first = msg("20260101T000000000Z-human-aaaaaa", "human", &["manager"]);
        let mb = Layout::new(&root).mail();
        mb.send_now("human", &Message { body: "plan the launch @planner @hr".into(), ..first.clone() }).unwrap();
        mb.send_now("planner", &msg("20260101T000000001Z-planner-refused", "planner", &["hr"])).unwrap();
        crate::daemon::step(&root, 3, |_, _| {}).await.unwrap();

        let r = check(&root);
        assert!(r.ok(), "a clean org has violations: {:#?}", r.findings);
        // The lock file names this test process, which ran the turns and is alive.
        assert_eq!(count(&r, Code::LockHeld) + count(&r, Code::LockFree), 1, "{:#?}", r.findings);
        assert_eq!(count(&r, Code::DeadLetters), 1, "the refused message is a dead letter: {:#?}", r.findings);
        let read = mb.read_mail("planner").unwrap();
        let lost = read.iter().find(|m| m.from == "manager").expect("the planner read the manager's forward");

        // The planner's copy of the manager's forward disappears: lost.
        fs::remove_file(root.join(format!("agents/planner/inbox/cur/{}", crate::mailbox::message_file(&lost.id))))
            .unwrap();
        let r = check(&root);
        let found: Vec<_> = r.with_code(Code::LostMessage).collect();
        assert_eq!(found.len(), 1, "{:#?}", r.findings);
        assert_eq!(
            found[0].paths,
            [PathBuf::from(format!("agents/{}/outbox/sent/{}", lost.from, crate::mailbox::message_file(&lost.id)))]
        );
        assert!(found[0].message.contains("cp "), "{}", found[0].message);
        assert!(!r.ok());
    }

    #[test]
    fn a_search_index_behind_the_files_is_a_note_that_suggests_reindex() {
        let (_d, root) = org();
        let m = msg("m1", "human", &["manager"]);
        sent(&root, &m);
        deliver(&root, &m, "manager", "new");
        assert_eq!(count(&check(&root), Code::StaleIndex), 0, "no index: nothing to compare");
        crate::index::rebuild(&Layout::new(&root), &mut |_| {}).unwrap();
        assert_eq!(count(&check(&root), Code::StaleIndex), 0);
        // Mail put there behind the index's back.
        let m2 = msg("m2", "human", &["manager"]);
        sent(&root, &m2);
        deliver(&root, &m2, "manager", "cur");
        let r = check(&root);
        let found: Vec<_> = r.with_code(Code::StaleIndex).collect();
        assert_eq!(found.len(), 1, "{:#?}", r.findings);
        assert_eq!(found[0].severity, Severity::Note);
        assert!(found[0].message.contains("lacks 2 message(s)") && found[0].message.contains("lemming reindex"));
        assert!(r.ok(), "a stale index breaks no guarantee");
        crate::index::rebuild(&Layout::new(&root), &mut |_| {}).unwrap();
        assert_eq!(count(&check(&root), Code::StaleIndex), 0);
    }

    #[test]
    fn a_message_both_unread_and_read_is_a_duplicate() {
        let (_d, root) = org();
        let m = msg("m1", "human", &["manager"]);
        sent(&root, &m);
        deliver(&root, &m, "manager", "cur");
        assert!(check(&root).ok());
        deliver(&root, &m, "manager", "new");
        let r = check(&root);
        assert_eq!(
            codes(&r).into_iter().filter(|(c, _)| *c == Code::DuplicateMessage).collect::<Vec<_>>(),
            [(
                Code::DuplicateMessage,
                vec!["agents/manager/inbox/new/m1.json".to_string(), "agents/manager/inbox/cur/m1.json".to_string()]
            )]
        );
        assert_eq!(r.violations(), 1, "{:#?}", r.findings);
    }

    /// Archived mail is read mail: it counts as delivered, a copy both
    /// archived and read (or unread) is a duplicate, and its files are checked.
    #[test]
    fn archived_mail_is_delivered_mail_and_is_checked_like_read_mail() {
        let (_d, root) = org();
        let m = msg("m1", "human", &["manager"]);
        sent(&root, &m);
        deliver(&root, &m, "manager", "archive");
        let r = check(&root);
        assert!(r.ok(), "an archived copy is a delivered copy: {:#?}", r.findings);
        assert_eq!(count(&r, Code::LostMessage), 0);

        deliver(&root, &m, "manager", "cur");
        let r = check(&root);
        assert_eq!(
            codes(&r).into_iter().filter(|(c, _)| *c == Code::DuplicateMessage).collect::<Vec<_>>(),
            [(
                Code::DuplicateMessage,
                vec![
                    "agents/manager/inbox/cur/m1.json".to_string(),
                    "agents/manager/inbox/archive/m1.json".to_string()
                ]
            )]
        );
        fs::remove_file(root.join("agents/manager/inbox/cur/m1.json")).unwrap();

        // Another message under m1's name in the archive: m1 never reached the manager.
        let other = Message { body: "another".into(), ..msg("m1", "human", &["manager"]) };
        put(&root, "agents/manager/inbox/archive/m1.json", other.to_bytes());
        assert_eq!(count(&check(&root), Code::DuplicateId), 1);
        put(&root, "agents/manager/inbox/archive/m1.json", m.to_bytes());

        put(&root, "agents/manager/inbox/archive/junk.json", b"not a message");
        put(&root, "agents/manager/inbox/archive/m9.json", msg("m2", "human", &["manager"]).to_bytes());
        let c = codes(&check(&root));
        assert!(
            c.contains(&(Code::UnparseableMessage, vec!["agents/manager/inbox/archive/junk.json".into()])),
            "{c:?}"
        );
        assert!(c.contains(&(Code::MisnamedMessage, vec!["agents/manager/inbox/archive/m9.json".into()])), "{c:?}");
    }

    #[test]
    fn a_recipient_without_the_message_is_lost_unless_a_dead_letter_covers_it() {
        let (_d, root) = org();
        // manager got it; planner was refused by the chart; hr poisoned it; ghost is gone.
        let m = msg("m1", "human", &["manager", "planner", "hr", "ghost"]);
        sent(&root, &m);
        deliver(&root, &m, "manager", "cur");
        why_in(&root, "m1", "chart_read_from", "human", &["planner"]);
        why_in(&root, "m1-poison-hr", "poison", "hr", &["hr"]);
        let r = check(&root);
        assert!(r.ok(), "{:#?}", r.findings);
        assert_eq!(count(&r, Code::RecipientGone), 1, "{:#?}", r.findings);

        // coder_01 never got this one, and nothing says why.
        let lost = msg("m2", "manager", &["coder_01", "planner"]);
        sent(&root, &lost);
        deliver(&root, &lost, "planner", "new");
        let r = check(&root);
        let found: Vec<_> = r.with_code(Code::LostMessage).collect();
        assert_eq!(found.len(), 1, "{:#?}", r.findings);
        assert_eq!(found[0].paths, [PathBuf::from("agents/manager/outbox/sent/m2.json")]);
        assert!(found[0].message.contains("to coder_01"), "{}", found[0].message);

        // A refusal of the whole message covers every recipient.
        why_in(&root, "m2", "expired", "manager", &[]);
        assert!(check(&root).ok());
    }

    #[test]
    fn pending_outbox_mail_and_stale_tmp_files_are_notes() {
        let (_d, root) = org();
        let mb = Layout::new(&root).mail();
        mb.send_now("human", &msg("m1", "human", &["manager"])).unwrap();
        mb.send_now("human", &msg("m2", "human", &["manager"])).unwrap();
        // Dead writers (a pid that cannot exist, or no pid), and a live one (us).
        put(&root, "agents/human/outbox/tmp/m3.json.3000000000.tmp", "{");
        put(&root, "agents/manager/inbox/tmp/garbage", "");
        put(&root, "org/state/tmp/turn.json.3000000000.tmp", "");
        put(&root, &format!("agents/hr/inbox/tmp/x.json.{}.tmp", std::process::id()), "");
        let r = check(&root);
        assert!(r.ok(), "{:#?}", r.findings);
        let pending: Vec<_> = r.with_code(Code::PendingMessages).collect();
        assert_eq!(pending.len(), 1);
        assert!(pending[0].message.starts_with("2 message(s)"), "{}", pending[0].message);
        let mut stale: Vec<String> =
            r.with_code(Code::StaleTmp).flat_map(|f| f.paths.iter().map(|p| p.display().to_string())).collect();
        stale.sort();
        assert_eq!(
            stale,
            [
                "agents/human/outbox/tmp/m3.json.3000000000.tmp",
                "agents/manager/inbox/tmp/garbage",
                "org/state/tmp/turn.json.3000000000.tmp"
            ]
        );
    }

    #[test]
    fn inbox_files_that_are_not_messages_or_misnamed_are_violations() {
        let (_d, root) = org();
        put(&root, "agents/manager/inbox/new/junk.json", "{\"id\":");
        put(&root, "agents/planner/inbox/cur/other.json", msg("m9", "human", &["planner"]).to_bytes());
        put(&root, "agents/planner/inbox/new/.hidden.json", "ignored");
        let r = check(&root);
        let c = codes(&r);
        assert!(c.contains(&(Code::UnparseableMessage, vec!["agents/manager/inbox/new/junk.json".into()])), "{c:?}");
        assert!(c.contains(&(Code::MisnamedMessage, vec!["agents/planner/inbox/cur/other.json".into()])), "{c:?}");
        assert_eq!(r.violations(), 2, "{:#?}", r.findings);
    }

    #[test]
    fn ledger_double_negative_future_and_corrupt_lines_are_violations_and_a_torn_tail_a_note() {
        let (_d, root) = org();
        commit(&root, 2);
        let good = charge(1, "manager", 0.5) + &charge(2, "manager", 0.5) + &charge(3, "planner", 0.1);
        put(&root, "org/state/ledger.jsonl", format!("{good}{{\"kind\":\"charge\",\"tu"));
        let r = check(&root);
        assert!(r.ok(), "{:#?}", r.findings);
        assert_eq!(count(&r, Code::TornLedgerLine), 1, "{:#?}", r.findings);

        let bad = [
            charge(1, "manager", 0.25),
            charge(2, "hr", -1.0),
            charge(4, "hr", 1.0),
            "{\"kind\":\"top_up\",\"agent\":\"hr\",\"amount\":-5.0,\"at\":\"2026-01-01T00:00:00Z\"}\n".into(),
            "{\"kind\":\"top_up\",\"agent\":\"hr\",\"amount\":1e308,\"at\":\"2026-01-01T00:00:00Z\"}\n".into(),
            "{\"kind\":\"refund\",\"agent\":\"hr\"}\n".into(),
            "{\"kind\":\"charge\",\"turn\":2,\"ag\n".into(),
        ]
        .concat();
        put(&root, "org/state/ledger.jsonl", format!("{good}{bad}{}", charge(2, "janitor", 0.0)));
        let r = check(&root);
        assert_eq!(count(&r, Code::DoubleCharge), 1, "{:#?}", r.findings);
        assert!(r.with_code(Code::DoubleCharge).all(|f| f.message.contains("lines 1, 4")), "{:#?}", r.findings);
        assert_eq!(count(&r, Code::InvalidAmount), 3, "{:#?}", r.findings);
        assert_eq!(count(&r, Code::FutureCharge), 1, "{:#?}", r.findings);
        assert!(r.with_code(Code::FutureCharge).all(|f| f.message.contains("turn 4")), "{:#?}", r.findings);
        assert_eq!(count(&r, Code::CorruptLedgerLine), 1, "{:#?}", r.findings);
        // A line cut short in the middle is a recovered crash, not corruption.
        assert_eq!(count(&r, Code::TornLedgerLine), 1, "{:#?}", r.findings);
        assert_eq!(r.violations(), 6, "{:#?}", r.findings);
    }

    #[test]
    fn an_unreadable_ledger_is_reported_once_and_charges_are_not_called_missing() {
        let (_d, root) = org();
        for turn in 1..=3 {
            let id = format!("m{turn}");
            let m = msg(&id, "human", &["manager"]);
            sent(&root, &m);
            deliver(&root, &m, "manager", "cur");
            put(&root, &format!("org/state/journal/{turn}/records.jsonl"), record(turn, "manager", &[&id], true));
        }
        commit(&root, 3);
        // A folder where the ledger should be: it exists but cannot be read as a file.
        fs::create_dir_all(root.join("org/state/ledger.jsonl")).unwrap();
        let r = check(&root);
        let c = codes(&r);
        assert_eq!(count(&r, Code::MissingCharge), 0, "{c:?}");
        let unreadable: Vec<_> = r.with_code(Code::UnreadableFile).collect();
        assert_eq!(unreadable.len(), 1, "{c:?}");
        assert_eq!(unreadable[0].paths, vec![PathBuf::from("org/state/ledger.jsonl")], "{c:?}");
    }

    #[test]
    fn committed_replies_must_have_consumed_their_mail_and_been_charged() {
        let (_d, root) = org();
        let m = msg("m1", "human", &["manager"]);
        sent(&root, &m);
        deliver(&root, &m, "manager", "cur");
        put(&root, "org/state/journal/1/records.jsonl", record(1, "manager", &["m1"], true));
        put(&root, "org/state/ledger.jsonl", charge(1, "manager", 0.5));
        commit(&root, 1);
        assert!(check(&root).ok(), "{:#?}", check(&root).findings);

        // Turn 2 committed, but its mail is unread and its reply uncharged.
        let m2 = msg("m2", "human", &["manager"]);
        sent(&root, &m2);
        deliver(&root, &m2, "manager", "new");
        put(&root, "org/state/journal/2/records.jsonl", record(2, "manager", &["m2"], true) + "{\"tor\n");
        // Turn 3 is not committed: the same state is a turn to repeat, not a violation.
        let m3 = msg("m3", "human", &["planner"]);
        sent(&root, &m3);
        deliver(&root, &m3, "planner", "new");
        put(&root, "org/state/journal/3/records.jsonl", record(3, "planner", &["m3"], true));
        commit(&root, 2);
        let r = check(&root);
        let c = codes(&r);
        assert!(c.contains(&(Code::UnconsumedMail, vec!["agents/manager/inbox/new/m2.json".into()])), "{c:?}");
        assert!(c.contains(&(Code::MissingCharge, vec!["org/state/journal/2/records.jsonl".into()])), "{c:?}");
        assert!(c.contains(&(Code::InterruptedTurn, vec!["org/state/journal/3".into()])), "{c:?}");
        assert_eq!(count(&r, Code::TornJournalLine), 1, "{c:?}");
        assert_eq!(r.violations(), 2, "{:#?}", r.findings);
        let interrupted = r.with_code(Code::InterruptedTurn).next().unwrap();
        assert!(interrupted.message.contains("with 1 reply journaled"), "{}", interrupted.message);

        // A reply without usage (a failed call) is not charged.
        put(&root, "org/state/journal/2/records.jsonl", record(2, "manager", &[], false));
        assert!(check(&root).ok(), "{:#?}", check(&root).findings);
    }

    #[test]
    fn every_dead_letter_needs_its_reason() {
        let (_d, root) = org();
        why(&root, "a", "chart_send_to", &["hr"]);
        why(&root, "b", "poison", &["hr"]);
        let r = check(&root);
        assert!(r.ok(), "{:#?}", r.findings);
        let counted = r.with_code(Code::DeadLetters).next().expect("a count of dead letters");
        assert!(counted.message.starts_with("2 dead letter(s): 1 chart_send_to, 1 poison"), "{}", counted.message);

        fs::remove_file(root.join("org/state/dead/a.why.json")).unwrap();
        fs::remove_file(root.join("org/state/dead/b.json")).unwrap();
        put(&root, "org/state/dead/c.json", "{}");
        put(&root, "org/state/dead/c.why.json", "not json");
        let r = check(&root);
        let c = codes(&r);
        assert!(c.contains(&(Code::DeadWithoutReason, vec!["org/state/dead/a.json".into()])), "{c:?}");
        assert!(c.contains(&(Code::ReasonWithoutLetter, vec!["org/state/dead/b.why.json".into()])), "{c:?}");
        assert!(c.contains(&(Code::UnreadableReason, vec!["org/state/dead/c.why.json".into()])), "{c:?}");
        assert_eq!(r.violations(), 2, "{:#?}", r.findings);
    }

    #[test]
    fn the_lock_holder_is_named_when_alive() {
        let (_d, root) = org();
        let layout = Layout::new(&root);
        let held = lock::acquire(&layout).unwrap();
        let r = check(&root);
        let found: Vec<_> = r.with_code(Code::LockHeld).collect();
        assert_eq!(found.len(), 1, "{:#?}", r.findings);
        assert!(found[0].message.starts_with(&format!("pid {} holds", std::process::id())));
        drop(held);
        let r = check(&root);
        assert_eq!(count(&r, Code::LockHeld), 0);
        let free: Vec<_> = r.with_code(Code::LockFree).collect();
        assert_eq!(free.len(), 1, "{:#?}", r.findings);
        assert!(free[0].message.contains(&format!("pid {}", std::process::id())), "{}", free[0].message);
        put(&root, "org/state/lock", "3000000000\n");
        let r = check(&root);
        assert_eq!(count(&r, Code::LockHeld), 0);
        assert!(r.with_code(Code::LockFree).all(|f| f.message.contains("3000000000")), "{:#?}", r.findings);
    }

    /// The pid in the lock file is only who took the lock last: a live
    /// process whose pid is written there (a pid reused since, or a process
    /// that released the lock) holds nothing, and fsck asks the kernel.
    #[test]
    #[cfg(target_os = "linux")]
    fn a_live_pid_in_the_lock_file_without_the_lock_is_no_holder() {
        let (_d, root) = org();
        put(&root, "org/state/lock", format!("{}\n", std::process::id()));
        let r = check(&root);
        assert_eq!(count(&r, Code::LockHeld), 0, "{:#?}", r.findings);
        assert_eq!(count(&r, Code::LockFree), 1, "{:#?}", r.findings);
        assert!(r.with_code(Code::InterruptedTurn).all(|f| !f.message.contains("holds the lock")));
    }

    /// A poison letter whose id was taken by another message's letter gets
    /// the next free id (`<id>-poison-<agent>.1`), and it still accounts for
    /// the recipient that never read the message.
    #[test]
    fn a_poison_letter_under_a_numbered_id_covers_its_recipient() {
        let (_d, root) = org();
        let m = msg("m1", "human", &["manager"]);
        sent(&root, &m);
        why_in(&root, "m1-poison-manager", "poison", "manager", &["manager"]);
        why_in(&root, "m1-poison-manager.1", "poison", "manager", &["manager"]);
        let r = check(&root);
        assert_eq!(count(&r, Code::LostMessage), 0, "{:#?}", r.findings);
        // Without the letters, the message is lost.
        for f in ["m1-poison-manager", "m1-poison-manager.1"] {
            fs::remove_file(root.join(format!("org/state/dead/{f}.json"))).unwrap();
            fs::remove_file(root.join(format!("org/state/dead/{f}.why.json"))).unwrap();
        }
        assert_eq!(count(&check(&root), Code::LostMessage), 1);
    }

    /// A router's refusal covers a recipient only if it is the refusal of this
    /// message: made in its sender's outbox, under its id or an id that
    /// follows it (`<id>.1` when `<id>` held another letter).
    #[test]
    fn a_refusal_covers_only_its_own_message_and_may_have_a_numbered_id() {
        let (_d, root) = org();
        let m = msg("m1", "human", &["manager", "planner"]);
        sent(&root, &m);
        deliver(&root, &m, "manager", "cur");
        // Another sender's message that used the same id was refused whole.
        why_in(&root, "m1", "expired", "hr", &["manager"]);
        let r = check(&root);
        assert_eq!(count(&r, Code::LostMessage), 1, "another message's refusal covers nothing: {:#?}", r.findings);
        why_in(&root, "m1.1", "chart_read_from", "human", &["planner"]);
        let r = check(&root);
        assert_eq!(count(&r, Code::LostMessage), 0, "{:#?}", r.findings);
    }

    #[test]
    fn an_org_that_never_ran_has_nothing_to_report_and_a_bad_turn_file_is_a_violation() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("org");
        crate::init::init(&root).unwrap();
        let r = check(&root);
        assert_eq!(codes(&r), [(Code::LockFree, vec!["org/state/lock".to_string()])]);
        // fsck writes nothing, not even the state folder.
        assert!(!root.join("org/state").exists());

        put(&root, "org/state/turn.json", "{\"turn\":");
        let r = check(&root);
        assert_eq!(count(&r, Code::UnreadableFile), 1, "{:#?}", r.findings);
        assert!(!r.ok());
    }

    #[test]
    fn findings_are_grouped_by_guarantee_with_violations_first() {
        let (_d, root) = org();
        why(&root, "a", "poison", &["hr"]);
        fs::remove_file(root.join("org/state/dead/a.why.json")).unwrap();
        why(&root, "b", "poison", &["hr"]);
        Layout::new(&root).mail().send_now("human", &msg("m1", "human", &["manager"])).unwrap();
        let m = msg("m2", "human", &["manager"]);
        sent(&root, &m);
        let r = check(&root);
        let order: Vec<(&str, Severity)> = r.findings.iter().map(|f| (f.guarantee, f.severity)).collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, sorted);
        assert_eq!(r.findings[0].code, Code::LostMessage, "{:#?}", r.findings);
        let json = serde_json::to_value(&r.findings[0]).unwrap();
        assert_eq!(json["severity"], "violation");
        assert_eq!(json["code"], "lost_message");
        assert_eq!(json["guarantee"], "G3");
        assert_eq!(json["paths"], serde_json::json!(["agents/human/outbox/sent/m2.json"]));
    }

    #[test]
    fn a_tool_call_with_two_results_or_none_breaks_g8() {
        let (_d, root) = org();
        let call =
            |id: &str, result: &str| serde_json::json!({"id": id, "tool": "write_file", "args": {}, "result": result});
        let mut r: serde_json::Value = serde_json::from_str(record(1, "manager", &[], false).trim()).unwrap();
        r["tool_calls"] = serde_json::json!([call("a", "r-a"), call("b", "r-b")]);
        put(&root, "org/state/journal/1/records.jsonl", format!("{r}\n"));
        commit(&root, 1);
        let done = |call: &str| {
            format!(
                "{{\"agent\":\"manager\",\"call\":\"{call}\",\"done\":{{\"outcome\":{{\"tool\":\"write_file\",\"ok\":true,\"output\":\"x\",\"truncated\":false}},\"ms\":1}}}}\n"
            )
        };
        put(&root, "org/state/journal/1/tools.jsonl", format!("{}{}{}", done("a"), done("b"), done("a")));
        deliver(
            &root,
            &Message { kind: crate::message::Kind::ToolResult, ..msg("r-a", "lemming", &["manager"]) },
            "manager",
            "cur",
        );
        let report = check(&root);
        assert_eq!(count(&report, Code::RepeatedToolCall), 1, "{:?}", codes(&report));
        let missing: Vec<_> = report.with_code(Code::MissingToolResult).collect();
        assert_eq!(missing.len(), 1, "{:?}", codes(&report));
        assert!(missing[0].message.contains("r-b"), "{}", missing[0].message);
        assert_eq!(Code::RepeatedToolCall.guarantee(), "G8");
        assert!(!report.ok());
    }
}
