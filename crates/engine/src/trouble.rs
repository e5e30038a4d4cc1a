//! What keeps an agent, or the whole daemon, from working right now, for `status`.
//!
//! - `org/state/trouble.json`: agents that sat a turn out, by name. Each turn
//!   rewrites it (atomically, and only when it changes): `io_error` (its files
//!   cannot be used: the path and the error), `provider_down` (its provider
//!   could not be reached; its mail waits) or `provider_error` (its provider
//!   refused the request or is misconfigured; its mail waits). An agent leaves
//!   it once it runs again, or once its files are usable again.
//! - `org/state/daemon-trouble.json`: why the daemon is backing off (a full
//!   disk, a read-only org) and how many model replies it holds in memory
//!   until it can journal them. A full disk has no room for a new file, so the
//!   daemon makes this one [`DAEMON_FILE_BYTES`] long when it starts and later
//!   overwrites it in place, padded with spaces: that needs no new space.
//!
//! [`check_agent_files`] is the cheap per-turn check of an agent's folders.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{PathError, WithPath};
use crate::org::Layout;

/// Why an agent sat a turn out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TroubleState {
    /// Its files cannot be used (the path is in [`AgentTrouble::path`]).
    IoError,
    /// Its provider could not be reached; its mail waits.
    ProviderDown,
    /// Its provider refused the request or is misconfigured; its mail waits.
    ProviderError,
}

impl TroubleState {
    /// The word `trouble.json` and `status` use: `io_error`, `provider_down`, `provider_error`.
    pub fn as_str(self) -> &'static str {
        match self {
            TroubleState::IoError => "io_error",
            TroubleState::ProviderDown => "provider_down",
            TroubleState::ProviderError => "provider_error",
        }
    }
}

impl std::fmt::Display for TroubleState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One agent's trouble.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentTrouble {
    /// Why it sits out.
    pub state: TroubleState,
    /// The first turn of this trouble.
    pub since_turn: u64,
    /// The last turn it was seen on.
    pub turn: u64,
    /// What went wrong (with the path, for `io_error`).
    pub error: String,
    /// The file or folder that cannot be used (`io_error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
}

/// `org/state/trouble.json`.
pub fn agents_path(layout: &Layout) -> PathBuf {
    layout.state_dir().join("trouble.json")
}

/// The agents in trouble; a missing or unreadable file is none.
pub fn read_agents(layout: &Layout) -> BTreeMap<String, AgentTrouble> {
    crate::fsx::read_small(&agents_path(layout), crate::mailbox::READ_LIMIT)
        .ok()
        .flatten()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Rewrites `org/state/trouble.json` when `now` differs from `before`.
pub fn write_agents(
    layout: &Layout,
    before: &BTreeMap<String, AgentTrouble>,
    now: &BTreeMap<String, AgentTrouble>,
) -> Result<(), PathError> {
    if before == now {
        return Ok(());
    }
    let p = agents_path(layout);
    if now.is_empty() {
        return match fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).with_path(&p),
            _ => Ok(()),
        };
    }
    let bytes = serde_json::to_vec_pretty(now).expect("trouble always serializes");
    crate::fsx::write_atomic(&layout.state_tmp(), &p, &bytes)
}

/// Records one agent's trouble on `turn`, keeping `since_turn` while the state stays the same.
pub fn note(
    map: &mut BTreeMap<String, AgentTrouble>,
    agent: &str,
    state: TroubleState,
    turn: u64,
    error: String,
    path: Option<PathBuf>,
) {
    let since_turn = map.get(agent).filter(|t| t.state == state).map_or(turn, |t| t.since_turn);
    map.insert(agent.to_string(), AgentTrouble { state, since_turn, turn, error, path });
}

/// Whether an I/O error is about the whole filesystem (full, over quota or
/// read-only) rather than one agent's files: the turn fails as a whole then.
pub fn org_wide(e: &PathError) -> bool {
    matches!(e.source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT | libc::EROFS))
}

/// Checks, without writing, that an agent's folders are folders the engine
/// may read, write and enter: the agent folder, its inbox and outbox with
/// their subfolders, and its `memory/` and `logs/` when they exist.
pub fn check_agent_files(layout: &Layout, agent: &str) -> Result<(), PathError> {
    let dir = layout.agent_dir(agent);
    let at = open_folder(&dir).with_path(&dir)?;
    let usable = |rel: &str| usable_in(&at, rel).map_err(|e| PathError { path: dir.join(rel), source: e });
    usable_in(&at, ".").with_path(&dir)?;
    for rel in crate::mailbox::FOLDERS {
        usable(rel)?;
    }
    for optional in ["memory", "logs"] {
        match usable(optional) {
            Err(e) if e.source.kind() == std::io::ErrorKind::NotFound => {}
            checked => checked?,
        }
    }
    Ok(())
}

/// `dir` opened as a handle to look up names in (`O_PATH`: it needs no
/// permission on `dir` itself, and a link to a folder is followed). Names
/// looked up from it walk two components, not the whole path from `/`.
fn open_folder(dir: &Path) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path holds a NUL byte"))?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(not_a_folder(std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just opened and nothing else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// `faccessat(2)` for read, write and search on `rel` in the folder `at`
/// with a trailing slash, so that one call tells that it exists, is a folder
/// (a link to one is followed) and takes what the engine does there: modes,
/// immutable folders and read-only mounts. Like `access(2)`, it asks for the
/// real user, who runs lemming.
fn usable_in(at: &std::os::fd::OwnedFd, rel: &str) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut bytes = Vec::with_capacity(rel.len() + 2);
    bytes.extend_from_slice(rel.as_bytes());
    bytes.push(b'/');
    let c = std::ffi::CString::new(bytes)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path holds a NUL byte"))?;
    // SAFETY: `at` is an open descriptor and `c` a valid NUL-terminated string, both outliving the call.
    let rc = unsafe { libc::faccessat(at.as_raw_fd(), c.as_ptr(), libc::R_OK | libc::W_OK | libc::X_OK, 0) };
    if rc != 0 {
        return Err(not_a_folder(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// `ENOTDIR` said in words; any other error as it is.
fn not_a_folder(e: std::io::Error) -> std::io::Error {
    if e.raw_os_error() == Some(libc::ENOTDIR) {
        return std::io::Error::new(std::io::ErrorKind::NotADirectory, "is not a folder");
    }
    e
}

/// The size of `org/state/daemon-trouble.json`, made when the daemon starts.
pub const DAEMON_FILE_BYTES: usize = 4096;

/// Why the daemon is backing off instead of running turns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonTrouble {
    /// Since when.
    pub since: DateTime<Utc>,
    /// The last error (with its path).
    pub error: String,
    /// Turns (or write probes) that failed in a row.
    pub failures: u32,
    /// The next try.
    pub retry_at: DateTime<Utc>,
    /// Model calls answered since the trouble began whose replies could not
    /// be journaled. The daemon holds them in memory and journals them once
    /// it can write again, without asking the model again.
    pub unjournaled_calls: u64,
}

/// `org/state/daemon-trouble.json`.
pub fn daemon_path(layout: &Layout) -> PathBuf {
    layout.state_dir().join("daemon-trouble.json")
}

/// Makes the daemon's trouble file, [`DAEMON_FILE_BYTES`] long and saying
/// "no trouble", so that later updates can overwrite it in place.
pub fn init_daemon_file(layout: &Layout) -> Result<(), PathError> {
    let bytes = padded(b"{}");
    crate::fsx::write_atomic(&layout.state_tmp(), &daemon_path(layout), &bytes)
}

/// Overwrites the daemon's trouble file in place (`None`: no trouble). This
/// works on a full disk; on a read-only org it fails, and `status` finds the
/// read-only filesystem by itself.
pub fn set_daemon(layout: &Layout, trouble: Option<&DaemonTrouble>) -> Result<(), PathError> {
    use std::os::unix::fs::FileExt;
    let p = daemon_path(layout);
    let mut text = match trouble {
        Some(t) => serde_json::to_vec(t).expect("trouble always serializes"),
        None => b"{}".to_vec(),
    };
    if text.len() > DAEMON_FILE_BYTES {
        // Only a very long error gets here: shorten it.
        if let Some(t) = trouble {
            let mut short = t.clone();
            short.error = short.error.chars().take(DAEMON_FILE_BYTES / 4).collect();
            text = serde_json::to_vec(&short).expect("trouble always serializes");
        }
    }
    let f = fs::OpenOptions::new().write(true).open(&p).with_path(&p)?;
    f.write_all_at(&padded(&text), 0).with_path(&p)
}

fn padded(text: &[u8]) -> Vec<u8> {
    let mut out = text.to_vec();
    out.resize(out.len().max(DAEMON_FILE_BYTES), b' ');
    out
}

/// The daemon's trouble, if the file says there is some.
pub fn read_daemon(layout: &Layout) -> Option<DaemonTrouble> {
    serde_json::from_slice(&crate::fsx::read_small(&daemon_path(layout), crate::mailbox::READ_LIMIT).ok()??).ok()
}

/// Whether the filesystem holding `dir` is mounted read-only, or has no room
/// left for an ordinary user: a sentence for `status`, `None` when it looks fine.
pub fn filesystem_problem(dir: &Path) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs fills the zeroed struct we own; `c` outlives the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    if st.f_flag & libc::ST_RDONLY != 0 {
        return Some(format!("the filesystem holding {} is read-only: no turn can run", dir.display()));
    }
    if st.f_bavail == 0 && st.f_blocks > 0 {
        return Some(format!("the filesystem holding {} is full: no turn can run until space is freed", dir.display()));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemon_file_is_overwritten_in_place_without_growing() {
        let d = tempfile::tempdir().unwrap();
        let layout = Layout::new(d.path());
        fs::create_dir_all(layout.state_dir()).unwrap();
        init_daemon_file(&layout).unwrap();
        assert_eq!(read_daemon(&layout), None);
        let t = DaemonTrouble {
            since: Utc::now(),
            error: "x".repeat(10_000),
            failures: 3,
            retry_at: Utc::now(),
            unjournaled_calls: 2,
        };
        set_daemon(&layout, Some(&t)).unwrap();
        assert_eq!(fs::metadata(daemon_path(&layout)).unwrap().len(), DAEMON_FILE_BYTES as u64);
        let back = read_daemon(&layout).unwrap();
        assert_eq!((back.failures, back.unjournaled_calls), (3, 2));
        set_daemon(&layout, None).unwrap();
        assert_eq!(read_daemon(&layout), None);
    }

    #[test]
    fn an_agent_whose_inbox_is_a_file_fails_the_check_with_that_path() {
        let d = tempfile::tempdir().unwrap();
        let layout = Layout::new(d.path());
        let mb = layout.mail();
        crate::mailbox::MailStore::ensure(&mb, "ann").unwrap();
        check_agent_files(&layout, "ann").unwrap();
        let inbox_new = mb.dir("ann", crate::mailbox::Folder::Unread);
        fs::remove_dir(&inbox_new).unwrap();
        fs::write(&inbox_new, "oops").unwrap();
        let e = check_agent_files(&layout, "ann").unwrap_err();
        assert_eq!(e.path, inbox_new);
        assert!(e.to_string().contains("is not a folder"), "{e}");
        assert!(!org_wide(&e));
    }

    #[test]
    fn the_check_names_the_folder_that_cannot_be_used_and_follows_links() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let layout = Layout::new(d.path());
        let e = check_agent_files(&layout, "ann").unwrap_err();
        assert_eq!((e.path, e.source.kind()), (layout.agent_dir("ann"), std::io::ErrorKind::NotFound));
        // An agent folder that is a link to one elsewhere is used through the link.
        let elsewhere = d.path().join("elsewhere");
        fs::create_dir_all(&elsewhere).unwrap();
        fs::create_dir_all(layout.agent_dir("ann").parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&elsewhere, layout.agent_dir("ann")).unwrap();
        let mb = layout.mail();
        crate::mailbox::MailStore::ensure(&mb, "ann").unwrap();
        check_agent_files(&layout, "ann").unwrap();
        // A folder the engine may not write into is named (root may write anywhere).
        let sent = mb.dir("ann", crate::mailbox::Folder::Sent);
        fs::set_permissions(&sent, fs::Permissions::from_mode(0o555)).unwrap();
        let writable = fs::write(sent.join("probe"), "x").is_ok();
        let checked = check_agent_files(&layout, "ann");
        fs::set_permissions(&sent, fs::Permissions::from_mode(0o755)).unwrap();
        if !writable {
            let e = checked.unwrap_err();
            assert_eq!((e.path, e.source.kind()), (sent, std::io::ErrorKind::PermissionDenied));
        }
        // `memory/` may be missing, but when it is there it must be a folder.
        let memory = layout.agent_dir("ann").join("memory");
        fs::write(&memory, "notes").unwrap();
        let e = check_agent_files(&layout, "ann").unwrap_err();
        assert_eq!(e.path, memory);
        assert!(e.to_string().contains("is not a folder"), "{e}");
        // The agent folder itself a file.
        fs::remove_file(layout.agent_dir("ann")).unwrap();
        fs::write(layout.agent_dir("ann"), "oops").unwrap();
        let e = check_agent_files(&layout, "ann").unwrap_err();
        assert_eq!(e.path, layout.agent_dir("ann"));
        assert!(e.to_string().contains("is not a folder"), "{e}");
    }

    #[test]
    fn since_turn_is_kept_while_the_state_stays() {
        let mut m = BTreeMap::new();
        note(&mut m, "a", TroubleState::ProviderDown, 3, "refused".into(), None);
        note(&mut m, "a", TroubleState::ProviderDown, 5, "refused".into(), None);
        assert_eq!((m["a"].since_turn, m["a"].turn), (3, 5));
        note(&mut m, "a", TroubleState::IoError, 6, "x".into(), None);
        assert_eq!(m["a"].since_turn, 6);
    }

    #[test]
    fn trouble_states_keep_their_words_in_trouble_json() {
        for (state, word) in [
            (TroubleState::IoError, "io_error"),
            (TroubleState::ProviderDown, "provider_down"),
            (TroubleState::ProviderError, "provider_error"),
        ] {
            assert_eq!(serde_json::to_value(state).unwrap(), word);
            assert_eq!(state.to_string(), word);
            assert_eq!(serde_json::from_value::<TroubleState>(word.into()).unwrap(), state);
        }
        // A file written before keeps its meaning.
        let old = r#"{"planner":{"state":"provider_down","since_turn":2,"turn":4,"error":"refused"}}"#;
        let m: BTreeMap<String, AgentTrouble> = serde_json::from_str(old).unwrap();
        assert_eq!(m["planner"].state, TroubleState::ProviderDown);
    }
}
