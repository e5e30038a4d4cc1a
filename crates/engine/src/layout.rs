//! Where an org's files are: [`Layout`] names every path outside the agents'
//! own files, so that no other module spells a state file's place.

use std::path::{Path, PathBuf};

/// Paths of an org's files outside the agents' folders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The org folder (holds `org/` and `agents/`).
    pub root: PathBuf,
}

impl Layout {
    /// The layout of the org at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Layout {
        Layout { root: root.into() }
    }
    /// `org/org.toml`.
    pub fn org_toml(&self) -> PathBuf {
        self.root.join("org/org.toml")
    }
    /// `org/models.toml`.
    pub fn models_toml(&self) -> PathBuf {
        self.root.join("org/models.toml")
    }
    /// `agents/`.
    pub fn agents_dir(&self) -> PathBuf {
        self.root.join("agents")
    }
    /// `agents/<name>/`.
    pub fn agent_dir(&self, name: &str) -> PathBuf {
        self.root.join("agents").join(name)
    }
    /// `agents/<name>/memory/`.
    pub fn memory_dir(&self, name: &str) -> PathBuf {
        self.agent_dir(name).join("memory")
    }
    /// `agents/<name>/logs/activity.jsonl`.
    pub fn activity_log(&self, name: &str) -> PathBuf {
        self.agent_dir(name).join(ACTIVITY_LOG)
    }
    /// The org's mail store, reading inbox files up to [`crate::mailbox::READ_LIMIT`]
    /// bytes (a loaded org's [`Org::mail`] reads up to its `max_message_bytes`).
    pub fn mail(&self) -> crate::mailbox::FsMailStore {
        crate::mailbox::FsMailStore::new(&self.root)
    }
    /// `org/state/`, owned by the engine.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join("org/state")
    }
    /// `org/state/tmp/`, for atomic writes of state files.
    pub fn state_tmp(&self) -> PathBuf {
        self.root.join("org/state/tmp")
    }
    /// `org/state/turn.json`.
    pub fn turn_json(&self) -> PathBuf {
        self.root.join("org/state/turn.json")
    }
    /// `org/state/lock`.
    pub fn lock(&self) -> PathBuf {
        self.root.join("org/state/lock")
    }
    /// `org/state/turn.lock`: held (flock) by whatever runs a turn, from its
    /// start to its commit, and by a backup for its whole copy.
    pub fn turn_lock(&self) -> PathBuf {
        self.root.join("org/state/turn.lock")
    }
    /// `org/state/backup.lock`: held shared by a person's read (mail moved to
    /// `cur/`), exclusively by a backup.
    pub fn backup_lock(&self) -> PathBuf {
        self.root.join("org/state/backup.lock")
    }
    /// `org/state/ledger.jsonl`.
    pub fn ledger(&self) -> PathBuf {
        self.root.join("org/state/ledger.jsonl")
    }
    /// `org/state/journal/`.
    pub fn journal_dir(&self) -> PathBuf {
        self.root.join("org/state/journal")
    }
    /// `org/state/events.jsonl`.
    pub fn events(&self) -> PathBuf {
        self.root.join("org/state/events.jsonl")
    }
    /// `org/state/cache/`: what views keep of their last read to read less
    /// the next time; derived, and safe to delete.
    pub fn cache_dir(&self) -> PathBuf {
        self.root.join("org/state/cache")
    }
    /// `org/state/index/`: the derived search index (see [`crate::index`]).
    pub fn index_dir(&self) -> PathBuf {
        self.root.join("org/state/index")
    }
    /// `org/state/audit.jsonl`: actions that change the world outside the mail.
    pub fn audit(&self) -> PathBuf {
        self.root.join("org/state/audit.jsonl")
    }
    /// `org/tools.toml`: the custom tools.
    pub fn tools_toml(&self) -> PathBuf {
        self.root.join("org/tools.toml")
    }
    /// `shared/`: the folder agents granted it reach with the file tools as `shared/…`.
    pub fn shared_dir(&self) -> PathBuf {
        self.root.join("shared")
    }
    /// `agents/NAME/workspace/`: where an agent's tools read, write and run.
    pub fn workspace(&self, name: &str) -> PathBuf {
        self.agent_dir(name).join("workspace")
    }
    /// `org/state/daemon.json`: the running daemon's pid.
    pub fn daemon_json(&self) -> PathBuf {
        self.root.join("org/state/daemon.json")
    }
    /// `org/state/paused`: present while the daemon is paused.
    pub fn paused(&self) -> PathBuf {
        self.root.join("org/state/paused")
    }
    /// `org/state/last-good/`: the last valid version of each config file, at
    /// its path relative to the org root (`org/org.toml`), but for a resume,
    /// kept as `agents/NAME.toml` (see [`Layout::last_good`]).
    pub fn last_good_dir(&self) -> PathBuf {
        self.root.join("org/state/last-good")
    }
    /// `org/state/last-good/agents.json`: the last good version of every
    /// resume, in one file (by agent name), so that the first turn of a large
    /// org writes one file, not one per agent.
    pub fn last_good_resumes(&self) -> PathBuf {
        self.last_good_dir().join("agents.json")
    }
    /// Where the last good version of the config file `rel` (relative to the
    /// root) is kept at its own path: `org.toml`, `models.toml` and
    /// `tools.toml`. Resumes are in [`Layout::last_good_resumes`]; earlier
    /// versions kept a resume, `agents/NAME/resume.toml`, as
    /// `agents/NAME.toml` here (still read when the bundle has none).
    pub fn last_good(&self, rel: &Path) -> PathBuf {
        match resume_folder(rel) {
            Some(name) => self.last_good_dir().join("agents").join(format!("{name}.toml")),
            None => self.last_good_dir().join(rel),
        }
    }
    /// Where versions before the flat layout kept the last good version of
    /// `rel`: at its own path (read when [`Layout::last_good`] has none).
    pub fn last_good_mirrored(&self, rel: &Path) -> PathBuf {
        self.last_good_dir().join(rel)
    }
    /// `org/state/breakers.json`: the providers' circuit breakers.
    pub fn breakers(&self) -> PathBuf {
        self.root.join("org/state").join(lemming_provider::breaker::FILE_NAME)
    }
}

/// The agent folder whose resume `rel` is, when it is `agents/NAME/resume.toml`.
pub(crate) fn resume_folder(rel: &Path) -> Option<&str> {
    let mut parts = rel.components().map(|c| c.as_os_str().to_str());
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(Some("agents")), Some(Some(name)), Some(Some("resume.toml")), None) => Some(name),
        _ => None,
    }
}

/// An agent's activity log, relative to its folder.
pub const ACTIVITY_LOG: &str = "logs/activity.jsonl";
