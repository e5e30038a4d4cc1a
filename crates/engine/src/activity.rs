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
    pub outcome: String,
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
}

/// The activity log file of an agent.
pub fn path(root: &Path, agent: &str) -> PathBuf {
    root.join("agents").join(agent).join("logs/activity.jsonl")
}

/// Appends one run (made durable by the caller's group sync).
pub fn append(root: &Path, agent: &str, a: &Activity) -> Result<(), PathError> {
    let p = path(root, agent);
    if let Some(dir) = p.parent() {
        fs::create_dir_all(dir).with_path(dir)?;
    }
    fsx::append_lines(&p, &(serde_json::to_string(a).expect("activity serializes") + "\n"))
}

/// Every run logged, oldest first (lines that do not parse are skipped).
pub fn read(root: &Path, agent: &str) -> Result<Vec<Activity>, PathError> {
    let p = path(root, agent);
    match fs::read_to_string(&p) {
        Ok(t) => Ok(t.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_path(&p),
    }
}

/// The last run logged, reading only the end of the file.
pub fn last(root: &Path, agent: &str) -> Option<Activity> {
    let p = path(root, agent);
    let mut f = fs::File::open(p).ok()?;
    let len = f.metadata().ok()?.len();
    let start = len.saturating_sub(64 * 1024);
    f.seek(SeekFrom::Start(start)).ok()?;
    let mut buf = String::new();
    f.read_to_string(&mut buf).ok()?;
    buf.lines().rev().find_map(|l| serde_json::from_str(l).ok())
}
