//! Per-agent activity logs: `agents/<name>/logs/activity.jsonl`, one JSON line
//! per run (turn, mail read, messages sent, cost, notes, errors, and the raw
//! reply when it could not be used).

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{PathError, WithPath};
use crate::fsx;

/// One run of an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Activity {
    /// The turn.
    pub turn: u64,
    /// When.
    pub at: chrono::DateTime<chrono::Utc>,
    /// `ok` or `failed`.
    pub outcome: crate::journal::Outcome,
    /// The model key that answered.
    pub model: String,
    /// Ids of the mail in the prompt.
    pub mail_read: Vec<String>,
    /// Ids of the messages written.
    pub sent: Vec<String>,
    /// Credits charged.
    pub cost: f64,
    /// The agent's notes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub notes: String,
    /// What went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Skipped parts of the reply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The raw reply, kept when it could not be used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
    /// True when this is a turn repeated after a crash, applying the reply
    /// journaled by the interrupted run: the same run, not a new one (no model
    /// was called and nothing is charged again). The interrupted run may have
    /// logged it already; [`Runs`] shows each run once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replay: bool,
    /// The tool calls of the reply and how each went.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<crate::events::ToolUse>,
}

/// Drops the log entries of runs already shown: a replay of a turn whose
/// run was logged before the crash. Keeps what it has seen, so it works on a
/// log read in pieces (`lemming logs -f`).
#[derive(Debug, Clone, Default)]
pub struct Runs {
    turns: std::collections::HashSet<u64>,
}

impl Runs {
    /// Whether to show this entry: every first entry of a turn, and no replay
    /// of a turn already shown.
    pub fn is_new(&mut self, a: &Activity) -> bool {
        self.turns.insert(a.turn) || !a.replay
    }
}

/// The activity log file of an agent.
pub fn path(root: &Path, agent: &str) -> PathBuf {
    crate::org::Layout::new(root).activity_log(agent)
}

/// One run as a line of the log ([`append_line`]).
pub fn to_line(a: &Activity) -> String {
    serde_json::to_string(a).expect("activity serializes") + "\n"
}

/// Appends one run, as [`to_line`] makes it (made durable by the caller's group sync).
pub fn append_line(root: &Path, agent: &str, line: &str) -> Result<(), PathError> {
    let p = path(root, agent);
    match fsx::append_lines(&p, line) {
        // The first run of an agent makes its `logs/`.
        Err(e) if e.source.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = p.parent() {
                fs::create_dir_all(dir).with_path(dir)?;
            }
            fsx::append_lines(&p, line)
        }
        appended => appended,
    }
}

/// Every run logged, oldest first (lines that do not parse are skipped).
pub fn read(root: &Path, agent: &str) -> Result<Vec<Activity>, PathError> {
    let Some(buf) = fsx::read_optional(&path(root, agent))? else { return Ok(Vec::new()) };
    Ok(String::from_utf8_lossy(&buf).lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
}

/// The last run logged, reading only the end of the file (none when it cannot be read).
pub fn last(root: &Path, agent: &str) -> Option<Activity> {
    try_last(root, agent).ok().flatten()
}

/// The last run logged, reading only the end of the file; a missing log has
/// none, a log that cannot be read is an error.
pub fn try_last(root: &Path, agent: &str) -> Result<Option<Activity>, PathError> {
    let p = path(root, agent);
    let Some(mut f) = fsx::open_regular(fs::OpenOptions::new().read(true), &p)? else { return Ok(None) };
    let len = f.metadata().with_path(&p)?.len();
    // Most lines are short: the end is read a little at a time, up to
    // LAST_WINDOW bytes, until a whole line there parses (`status` reads every
    // agent's log).
    let mut window = FIRST_WINDOW;
    loop {
        let start = len.saturating_sub(window);
        f.seek(SeekFrom::Start(start)).with_path(&p)?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).with_path(&p)?;
        // A window that starts inside a line drops that part of a line; the
        // tail may also start inside a multi-byte character: decode leniently.
        let whole = if start == 0 { &buf[..] } else { buf.splitn(2, |b| *b == b'\n').nth(1).unwrap_or_default() };
        let found = String::from_utf8_lossy(whole).lines().rev().find_map(parse);
        if found.is_some() || start == 0 || window >= LAST_WINDOW {
            return Ok(found);
        }
        window *= 8;
    }
}

/// The end of an activity log read first by [`try_last`]…
const FIRST_WINDOW: u64 = 4 * 1024;
/// …and the most it reads.
const LAST_WINDOW: u64 = 256 * 1024;

/// Parses one line of an activity log.
pub fn parse(line: &str) -> Option<Activity> {
    serde_json::from_str(line).ok()
}

/// Follows an agent's activity log as it grows (`lemming logs -f`, through
/// [`crate::follow::Follow`]).
#[derive(Debug, Clone)]
pub struct Tail {
    path: PathBuf,
    offset: u64,
}

impl Tail {
    /// Follows `agents/<agent>/logs/activity.jsonl` from its start.
    pub fn new(root: &Path, agent: &str) -> Tail {
        Tail { path: path(root, agent), offset: 0 }
    }

    /// The complete lines appended since the last call (every line on the
    /// first call). A file that does not exist yet has none; a file that
    /// shrank (replaced) is read again from its start. A line still being
    /// written is left for the next call.
    pub fn read_new(&mut self) -> Result<Vec<String>, PathError> {
        let Some(mut f) = fsx::open_regular(fs::OpenOptions::new().read(true), &self.path)? else {
            return Ok(Vec::new());
        };
        let len = f.metadata().with_path(&self.path)?.len();
        if len < self.offset {
            self.offset = 0;
        }
        if len == self.offset {
            return Ok(Vec::new());
        }
        f.seek(SeekFrom::Start(self.offset)).with_path(&self.path)?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).with_path(&self.path)?;
        let Some(end) = buf.iter().rposition(|&b| b == b'\n') else { return Ok(Vec::new()) };
        self.offset += end as u64 + 1;
        Ok(String::from_utf8_lossy(&buf[..end]).lines().filter(|l| !l.trim().is_empty()).map(String::from).collect())
    }
}

impl crate::follow::Source for Tail {
    type Item = String;

    /// The complete lines appended since the last call ([`Tail::read_new`]).
    fn take(&mut self) -> Result<Vec<String>, PathError> {
        self.read_new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_reads_complete_lines_as_they_are_appended() {
        let dir = tempfile::tempdir().unwrap();
        let mut tail = Tail::new(dir.path(), "planner");
        assert!(tail.read_new().unwrap().is_empty(), "a missing log has no lines");
        let p = path(dir.path(), "planner");
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, "{\"a\":1}\n{\"b\":").unwrap();
        assert_eq!(tail.read_new().unwrap(), ["{\"a\":1}"]);
        assert!(tail.read_new().unwrap().is_empty(), "a partial line was returned");
        fsx_append(&p, "2}\n\n{\"c\":3}\n");
        assert_eq!(tail.read_new().unwrap(), ["{\"b\":2}", "{\"c\":3}"]);
        fs::write(&p, "{\"d\":4}\n").unwrap();
        assert_eq!(tail.read_new().unwrap(), ["{\"d\":4}"], "a replaced file is read from its start");
    }

    fn run(turn: u64, replay: bool) -> Activity {
        Activity {
            turn,
            at: chrono::Utc::now(),
            outcome: crate::journal::Outcome::Ok,
            model: "default".into(),
            mail_read: vec![],
            sent: vec![],
            cost: 1.0,
            notes: String::new(),
            error: None,
            warnings: vec![],
            raw: None,
            replay,
            tools: vec![],
        }
    }

    #[test]
    fn the_last_run_is_found_however_long_its_line() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(try_last(dir.path(), "planner").unwrap(), None, "no log, no run");
        let p = path(dir.path(), "planner");
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        let line = |a: &Activity| serde_json::to_string(a).unwrap() + "\n";
        let long = |turn| Activity { notes: "é".repeat(20_000), ..run(turn, false) };
        fs::write(&p, line(&run(1, false)) + &line(&run(2, false))).unwrap();
        assert_eq!(try_last(dir.path(), "planner").unwrap().unwrap().turn, 2);
        // 40 KB lines: longer than the first window, and than the second.
        fsx_append(&p, &(line(&long(3)) + &line(&long(4))));
        assert_eq!(try_last(dir.path(), "planner").unwrap().unwrap().turn, 4);
        fsx_append(&p, &line(&run(5, false))[..40]);
        assert_eq!(try_last(dir.path(), "planner").unwrap().unwrap().turn, 4, "a torn last line is passed over");
        fsx_append(&p, &("\n".to_string() + &line(&long(6))[..30_000]));
        assert_eq!(try_last(dir.path(), "planner").unwrap().unwrap().turn, 4, "a long torn line too");
    }

    #[test]
    fn a_replay_of_a_logged_run_is_shown_once_and_a_first_replay_is_shown() {
        let mut runs = Runs::default();
        assert!(runs.is_new(&run(1, false)));
        assert!(!runs.is_new(&run(1, true)), "turn 1 was logged before the crash");
        assert!(!runs.is_new(&run(1, true)), "a second crash replays it again");
        assert!(runs.is_new(&run(2, true)), "turn 2 crashed before its run was logged");
        assert!(runs.is_new(&run(3, false)));
        let line = serde_json::to_string(&run(4, false)).unwrap();
        assert!(!line.contains("replay"), "a plain run's line is unchanged: {line}");
        assert!(parse(&serde_json::to_string(&run(4, true)).unwrap()).unwrap().replay);
    }

    fn fsx_append(p: &Path, s: &str) {
        use std::io::Write;
        fs::OpenOptions::new().append(true).open(p).unwrap().write_all(s.as_bytes()).unwrap();
    }
}
