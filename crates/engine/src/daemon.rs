//! Running turns: [`step`] runs N turns now; [`run`] is the daemon, the same
//! turn function in a loop. Both hold the org lock and reload the org before
//! every turn, so edits take effect on the next turn.
//!
//! The daemon starts a turn every `turn_seconds`, and early (after
//! `debounce_ms`) when a new file lands in an outbox (`wake_on_message`).
//! Events come from [`crate::watch`]; a rescan every [`RunOptions::rescan`]
//! covers lost events. While `org/state/paused` exists it starts no turns. Its
//! shutdown signal is a future, so tests can pass their own: the turn in
//! flight finishes (agents still waiting for a model keep their mail unread),
//! the lock is released and [`run`] returns.
//!
//! A turn that fails (a full disk, a read-only org, any I/O error that is not
//! one agent's alone) does not stop the daemon. It says why in
//! `org/state/daemon-trouble.json` (see [`crate::trouble`]), waits
//! [`BACKOFF_FIRST`], doubling up to [`BACKOFF_MAX`], and before the next try
//! writes a small probe file: no turn starts, and no model is called, until
//! the probe succeeds. Replies that answered but could not be journaled are
//! kept in memory ([`turn::Unjournaled`]) and journaled by the next try of the
//! same turn, so no (turn, agent) is asked twice by this process.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch as tokio_watch};
use tokio::time::Instant;

use crate::clock::Sources;
use crate::error::{PathError, WithPath};
use crate::fsx;
use crate::lock::{self, LockError};
use crate::mailbox::MailStore;
use crate::org::{agent_folders, ConfigStamp, Layout, LoadOrgError, Org};
use crate::route::Waiting;
use crate::trouble::{self, DaemonTrouble};
use crate::turn::{self, TurnReport};
use crate::watch;

/// Why turns could not run.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// Another process holds the org lock.
    #[error(transparent)]
    Locked(#[from] LockError),
    /// The org's config is invalid.
    #[error(transparent)]
    Load(#[from] LoadOrgError),
    /// A file operation failed.
    #[error(transparent)]
    Io(#[from] PathError),
    /// The org spans nodes and this process does not know which it is
    /// (see [`Org::check_node`]), or cannot set up its link to the others.
    #[error("{0}")]
    Node(String),
    /// Another process, maybe on another machine, runs this node.
    #[error("{0}")]
    NodeTaken(String),
}

/// Connects `src`'s link for `org` (an org on several nodes) and claims the
/// process's node; an `org` on one machine needs neither.
fn link_for(org: &Org, src: &mut Sources) -> Result<(), StepError> {
    let had = src.link.transport.is_some();
    if let (Some(cluster), Some(here), Some(connect), false) =
        (&org.settings.cluster, &org.here, &src.link.connect, had)
    {
        src.link.transport = Some(connect(cluster, here, &org.layout.root).map_err(StepError::Node)?);
    }
    match &src.link.transport {
        Some(t) if !had => t.claim().map_err(StepError::NodeTaken),
        Some(t) => t.lost().map_or(Ok(()), |why| Err(StepError::NodeTaken(why))),
        None => Ok(()),
    }
}

/// Runs `n` turns now. `on_turn` sees each report as it is committed.
pub async fn step(root: &Path, n: u64, on_turn: impl FnMut(&TurnReport, &Org)) -> Result<Vec<TurnReport>, StepError> {
    step_with(root, n, &Sources::real(), on_turn).await
}

/// [`step`], with the turns' time, ids and bus from `src`: a caller that
/// subscribed to `src.bus` sees each event as it happens (`lemming chat`
/// shows a reply while its model streams it).
pub async fn step_with(
    root: &Path,
    n: u64,
    src: &Sources,
    mut on_turn: impl FnMut(&TurnReport, &Org),
) -> Result<Vec<TurnReport>, StepError> {
    let layout = Layout::new(root);
    let _lock = lock::acquire(&layout)?;
    let mut reports = Vec::new();
    let mut src = src.clone();
    for _ in 0..n {
        let org = Org::load(root)?;
        org.check_node().map_err(StepError::Node)?;
        link_for(&org, &mut src)?;
        keep_last_good(&org, None);
        let registry = Arc::new(org.registry());
        let report = turn::run_keeping(&org, &registry, &src, None, &mut turn::Unjournaled::default()).await?;
        on_turn(&report, &org);
        reports.push(report);
    }
    Ok(reports)
}

/// What a filesystem event means to the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A file landed in some `agents/*/outbox/new/`: wake for an early turn.
    Outbox,
    /// A config file (or an agent folder) changed: reload.
    Config,
    /// Mail may have come from another node of the org, or the link to the
    /// other nodes is back (mail for them may go): a turn, even though no
    /// outbox changed.
    Arrived,
}

/// Classifies a path inside the org.
pub fn classify(root: &Path, path: &Path) -> Option<Change> {
    let rel = path.strip_prefix(root).ok()?;
    let parts: Vec<&str> = rel
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect();
    match parts.as_slice() {
        parts if crate::mailbox::is_pending_entry(parts) => Some(Change::Outbox),
        ["agents", _, "resume.toml"]
        | ["agents", _]
        | ["org", "org.toml"]
        | ["org", "models.toml"]
        | ["org", "state", "paused"] => Some(Change::Config),
        _ => None,
    }
}

/// Whether the folder `dir` inside the org is worth a watch: those where
/// [`classify`] finds something (outboxes' `new/`, agent folders, the config
/// folders, `org/state/` for the pause file) and the folders on the way to
/// them. Not inboxes, memory, logs, workspaces or the journal: the turn's own
/// writes there mean nothing to the daemon.
pub fn watched(root: &Path, dir: &Path) -> bool {
    let Ok(rel) = dir.strip_prefix(root) else { return false };
    let parts: Vec<&str> = rel.components().filter_map(|c| c.as_os_str().to_str()).collect();
    crate::mailbox::is_pending_folder(&parts)
        || matches!(parts.as_slice(), ["agents"] | ["agents", _] | ["org"] | ["org", "state"])
}

/// The first wait after a failed turn.
pub const BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between two tries while turns fail.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// The wait after `previous` (zero before the first failure): doubling, capped.
pub fn next_backoff(previous: Duration) -> Duration {
    if previous.is_zero() {
        BACKOFF_FIRST
    } else {
        previous.saturating_mul(2).min(BACKOFF_MAX)
    }
}

/// How to run the daemon.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Stop after this many turns.
    pub turns: Option<u64>,
    /// Overrides `turn_seconds` of org.toml.
    pub turn_seconds: Option<f64>,
    /// How often to rescan outboxes and config files for missed events.
    pub rescan: Duration,
    /// The clock and ids of its turns, and the bus they publish their events on
    /// (`sources.bus.subscribe()` sees every event as it happens).
    pub sources: Sources,
}

impl Default for RunOptions {
    fn default() -> RunOptions {
        RunOptions { turns: None, turn_seconds: None, rescan: Duration::from_secs(2), sources: Sources::real() }
    }
}

/// `org/state/daemon.json`: which process is the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonFile {
    /// Its pid.
    pub pid: u32,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Where it serves the HTTP API (`lemming run --http`), once bound: `lemming
    /// chat` reads the live events there. Absent in older files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
}

/// The running daemon's file, when `daemon.json` names a live process that holds the lock.
pub fn daemon_file(layout: &Layout) -> Option<DaemonFile> {
    let d: DaemonFile = serde_json::from_slice(&fsx::read_optional(&layout.daemon_json()).ok()??).ok()?;
    (lock::holder(layout) == Some(d.pid)).then_some(d)
}

/// Records in `daemon.json` where the daemon (this process) serves the API.
/// Waits (up to `wait`) for the daemon to write its file first, and tries
/// again while the write fails (a turn starting in this process clears its
/// temporary files, the one being written among them).
pub async fn record_api(layout: &Layout, api: &str, wait: Duration) -> Result<(), PathError> {
    let deadline = Instant::now() + wait;
    loop {
        let read = fsx::read_optional(&layout.daemon_json()).ok().flatten();
        let mut failed = None;
        if let Some(mut d) = read.and_then(|b| serde_json::from_slice::<DaemonFile>(&b).ok()) {
            if d.pid == std::process::id() {
                if d.api.as_deref() == Some(api) {
                    return Ok(());
                }
                d.api = Some(api.to_string());
                let bytes = serde_json::to_vec(&d).unwrap_or_default();
                failed = fsx::write_atomic(&layout.state_tmp(), &layout.daemon_json(), &bytes).err();
                // Read back on the next round: done once the file says so.
            }
        }
        if Instant::now() >= deadline {
            return failed.map_or(Ok(()), Err);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The running daemon's pid: `daemon.json` names a live process that holds the lock.
pub fn daemon_pid(layout: &Layout) -> Option<u32> {
    daemon_file(layout).map(|d| d.pid)
}

/// Runs the daemon until `shutdown` resolves or `opts.turns` turns are done.
/// `on_turn` sees each committed turn; `on_problems` sees the config problems
/// whenever they change (empty when every file is valid again).
pub async fn run(
    root: &Path,
    mut opts: RunOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
    mut on_turn: impl FnMut(&TurnReport),
    mut on_problems: impl FnMut(&[crate::error::Diagnostic]),
) -> Result<u64, StepError> {
    let layout = Layout::new(root);
    let _lock = lock::acquire(&layout)?;
    let mut org = Org::load(root)?;
    org.check_node().map_err(StepError::Node)?;
    link_for(&org, &mut opts.sources)?;
    let mut saved = keep_last_good(&org, None);
    let file = DaemonFile { pid: std::process::id(), started_at: opts.sources.now(), api: None };
    fsx::write_atomic(&layout.state_tmp(), &layout.daemon_json(), &serde_json::to_vec(&file).unwrap_or_default())?;
    let _cleanup = RemoveOnDrop(layout.daemon_json());
    if let Err(e) = trouble::init_daemon_file(&layout) {
        tracing::warn!(error = %e, "cannot write the daemon's trouble file; `status` will not show why turns fail");
    }
    let _cleanup_trouble = RemoveOnDrop(trouble::daemon_path(&layout));
    let mut held = turn::Unjournaled::default();
    let mut outage: Option<DaemonTrouble> = None;
    let mut backoff = Duration::ZERO;

    let (stop_tx, stop_rx) = tokio_watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    if let Some(t) = &opts.sources.link.transport {
        // Mail from other nodes, or the link back: as if an outbox had changed.
        let tx = ev_tx.clone();
        t.watch(Arc::new(move || {
            let _ = tx.send(Change::Arrived);
        }));
    }
    let (base, top) = (root.to_path_buf(), root.to_path_buf());
    let watcher = watch::start(root, ev_tx, move |d| watched(&top, d), move |p| classify(&base, p));
    let watching = watcher.is_some();

    let mut registry = Arc::new(org.registry());
    let mut problems: Vec<String> = Vec::new();
    report_problems(&org, &mut problems, &mut on_problems, opts.sources.now());
    let mut stamp = ConfigStamp::of(&layout);
    let mut rescan = tokio::time::interval(opts.rescan);
    rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stop = stop_rx.clone();
    // The first turn runs at once: it finishes whatever a previous run left.
    let mut next_timer = Instant::now();
    let mut wake_at: Option<Instant> = None;
    let mut leftover = Waiting::new();
    // When outboxes were last looked at as a whole (after a turn): the rescan
    // is skipped while that is fresher than its period.
    let mut looked = Instant::now();
    // The last turn delivered mail sent while it ran, or tool results: their recipients are due now.
    let mut due_now = false;
    let mut done = 0u64;
    // Why this process stopped being its node, if another took it.
    let mut taken = None;
    tracing::info!(pid = file.pid, org = %root.display(), "daemon started");
    loop {
        if *stop.borrow() {
            break;
        }
        let paused = layout.paused().exists();
        let due = match wake_at {
            // While turns fail, new mail waits for the backoff like everything else.
            Some(w) if w < next_timer && outage.is_none() => w,
            _ => next_timer,
        };
        let early = wake_at.is_some_and(|w| w <= due);
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            Some(change) = ev_rx.recv() => {
                match change {
                    Change::Outbox if org.settings.wake_on_message && wake_at.is_none() => {
                        wake_at = Some(Instant::now() + Duration::from_millis(org.settings.debounce_ms));
                    }
                    Change::Outbox => {}
                    Change::Arrived if org.settings.wake_on_message => {
                        due_now = true;
                        wake_at.get_or_insert(Instant::now() + Duration::from_millis(org.settings.debounce_ms));
                    }
                    Change::Arrived => {}
                    Change::Config => {
                        reload(root, &mut org, &mut saved, &mut registry, &mut problems, &mut on_problems, opts.sources.now());
                        stamp = ConfigStamp::of(&layout);
                    }
                }
                continue;
            }
            _ = rescan.tick() => {
                // A turn looked at every outbox and config file since: nothing for the rescan to cover.
                if looked.elapsed() < opts.rescan {
                    continue;
                }
                let now = ConfigStamp::of(&layout);
                if now != stamp {
                    stamp = now;
                    reload(root, &mut org, &mut saved, &mut registry, &mut problems, &mut on_problems, opts.sources.now());
                }
                if org.settings.wake_on_message && wake_at.is_none() && has_new_pending(&org, &leftover) {
                    wake_at = Some(Instant::now());
                }
                continue;
            }
            _ = tokio::time::sleep_until(due), if !paused => {}
        }
        wake_at = None;
        if let Some(why) = opts.sources.link.transport.as_ref().and_then(|t| t.lost()) {
            tracing::error!(reason = %why, "this node is run by another process now; no more turns here");
            taken = Some(why);
            break;
        }
        if early && !std::mem::take(&mut due_now) && !has_new_pending(&org, &leftover) {
            continue;
        }
        // Parsed again only when a config file changed since the last load
        // (stamped before loading: an edit during the load is seen next time),
        // or when its files could not be saved as the last good ones.
        let now = ConfigStamp::of(&layout);
        if now != stamp || !saved {
            stamp = now;
            reload(root, &mut org, &mut saved, &mut registry, &mut problems, &mut on_problems, opts.sources.now());
        }
        if let Some(t) = outage.as_mut() {
            if let Err(e) = fsx::probe(&layout.state_tmp()) {
                backoff = next_backoff(backoff);
                note_failure(&layout, t, &e, backoff, &held, opts.sources.now());
                tracing::warn!(error = %e, retry_in_secs = backoff.as_secs(), "the org still takes no writes; no turn, no model call");
                next_timer = Instant::now() + backoff;
                continue;
            }
        }
        let (report, waiting) =
            match turn::run_waiting(&org, &registry, &opts.sources, Some(stop_rx.clone()), &mut held).await {
                Ok(done) => done,
                Err(e) => {
                    backoff = next_backoff(backoff);
                    let t = outage.get_or_insert_with(|| DaemonTrouble {
                        since: opts.sources.now(),
                        error: String::new(),
                        failures: 0,
                        retry_at: opts.sources.now(),
                        unjournaled_calls: 0,
                    });
                    note_failure(&layout, t, &e, backoff, &held, opts.sources.now());
                    tracing::error!(
                        error = %e,
                        failures = t.failures,
                        unjournaled_calls = t.unjournaled_calls,
                        retry_in_secs = backoff.as_secs(),
                        "the turn failed; the daemon stays up and tries again after a write probe"
                    );
                    next_timer = Instant::now() + backoff;
                    while ev_rx.try_recv().is_ok() {}
                    continue;
                }
            };
        if let Some(t) = outage.take() {
            tracing::info!(
                failures = t.failures,
                since = %t.since,
                unjournaled_calls = t.unjournaled_calls,
                recovered = ?report.recovered,
                "turns run again"
            );
            backoff = Duration::ZERO;
            if let Err(e) = trouble::set_daemon(&layout, None) {
                tracing::warn!(error = %e, "cannot clear the daemon's trouble file");
            }
        }
        on_turn(&report);
        done += 1;
        let seconds = opts.turn_seconds.unwrap_or(org.settings.turn_seconds);
        next_timer = Instant::now() + lemming_provider::config::secs(seconds.max(0.001));
        // Mail the turn's last routing left waiting was held (an invalid resume);
        // mail that landed during the turn is new, and wakes the next turn early,
        // whether it still waits in an outbox or the turn's last routing delivered it.
        leftover = waiting;
        // A chain of tool calls moves at model speed: each result wakes the next turn.
        due_now = report.arrived > 0 || report.tool_calls > 0;
        if org.settings.wake_on_message && due_now {
            // What is due is known and complete: no burst to wait for.
            wake_at = Some(Instant::now());
        } else if org.settings.wake_on_message && !watching && has_new_pending(&org, &leftover) {
            wake_at = Some(Instant::now() + Duration::from_millis(org.settings.debounce_ms));
        }
        // With a watcher, mail that landed after the turn's last routing raised
        // an event that is still queued, and wakes an early turn; so do the
        // turn's own writes to outboxes, which the look before an early turn
        // tells apart. A turn with nothing to do raises none: no look at all.
        looked = Instant::now();
        if opts.turns.is_some_and(|n| done >= n) {
            break;
        }
    }
    if !held.is_empty() {
        tracing::error!(
            unjournaled_calls = held.calls,
            "stopping with replies that could not be journaled: they are lost, and their agents will be asked again"
        );
    }
    // The managed local servers stop with the daemon (SIGTERM, then SIGKILL after a grace).
    let _ = tokio::task::spawn_blocking(lemming_provider::serve::stop_all).await;
    tracing::info!(turns = done, "daemon stopped");
    if let Some(why) = taken {
        return Err(StepError::NodeTaken(why));
    }
    Ok(done)
}

/// Records a failed turn or probe in the daemon's trouble file (in place: it works on a full disk).
fn note_failure(
    layout: &Layout,
    t: &mut DaemonTrouble,
    e: &PathError,
    backoff: Duration,
    held: &turn::Unjournaled,
    now: DateTime<Utc>,
) {
    t.failures = t.failures.saturating_add(1);
    t.error = e.to_string();
    t.unjournaled_calls = t.unjournaled_calls.max(held.calls);
    t.retry_at = now + chrono::Duration::from_std(backoff).unwrap_or(chrono::Duration::seconds(60));
    if let Err(e) = trouble::set_daemon(layout, Some(t)) {
        tracing::warn!(error = %e, "cannot write the daemon's trouble file");
    }
}

struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Reloads every config file, keeping the last good version of any that is invalid.
fn reload(
    root: &Path,
    org: &mut Org,
    saved: &mut bool,
    registry: &mut Arc<lemming_provider::Registry>,
    problems: &mut Vec<String>,
    on_problems: &mut impl FnMut(&[crate::error::Diagnostic]),
    now: DateTime<Utc>,
) {
    let next = Org::load_or_last_good(root, Some(org));
    if next.models != org.models {
        *registry = Arc::new(next.registry());
    }
    // `org`'s versions were saved when it was loaded, unless that failed
    // (then every file is written again).
    *saved = keep_last_good(&next, saved.then_some(&*org));
    *org = next;
    report_problems(org, problems, on_problems, now);
}

/// Saves the valid config files as their last good version, for the other
/// commands to use while a file is invalid. A failure (a full disk) leaves the
/// previous version there and is logged: turns go on.
fn keep_last_good(org: &Org, saved: Option<&Org>) -> bool {
    match org.save_last_good_since(saved) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "cannot save the last good version of the config files");
            false
        }
    }
}

/// Tells `on_problems` and the events file (a `config_error` event) when the
/// config files' problems change.
fn report_problems(
    org: &Org,
    seen: &mut Vec<String>,
    on_problems: &mut impl FnMut(&[crate::error::Diagnostic]),
    at: DateTime<Utc>,
) {
    let now = org.problems();
    let text: Vec<String> = now.iter().map(|d| d.to_string()).collect();
    if text != *seen {
        for d in &now {
            tracing::error!(file = %d.path.display(), line = d.line, column = d.column, "{}", d.message);
        }
        if now.is_empty() && !seen.is_empty() {
            tracing::info!("every config file is valid again");
        }
        on_problems(&now);
        let problems = now.iter().map(|d| crate::events::Problem::of(d, &org.layout.root)).collect();
        let turn = crate::journal::Journal::new(&org.layout).last_turn().unwrap_or_default();
        crate::events::append_person(&org.layout, turn, at, vec![crate::events::EventKind::ConfigError { problems }]);
        *seen = text;
    }
}

/// Whether some outbox holds an entry that the last turn did not leave
/// waiting (mail held for an invalid resume does not wake the daemon again
/// and again). Stops at the first.
fn has_new_pending(org: &Org, leftover: &Waiting) -> bool {
    let mb = org.mail();
    agent_folders(&org.layout)
        .into_iter()
        .any(|agent| mb.pending(&agent).unwrap_or_default().iter().any(|p| !leftover.contains(p)))
}

/// Why `stop` could not stop the daemon.
#[derive(Debug, thiserror::Error)]
pub enum StopError {
    /// No daemon runs for this org.
    #[error("no daemon is running for this org")]
    NotRunning,
    /// It did not exit in time.
    #[error(
        "the daemon (pid {0}) did not stop within {1:?}; it may be finishing a slow model call; try again or kill it"
    )]
    Timeout(u32, Duration),
}

/// Asks the daemon to stop (SIGTERM) and waits until it has released the lock.
pub async fn stop(layout: &Layout, wait: Duration) -> Result<u32, StopError> {
    let pid = daemon_pid(layout).ok_or(StopError::NotRunning)?;
    // SAFETY: sending a signal to a pid has no memory-safety preconditions.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let deadline = Instant::now() + wait;
    while lock::holder(layout) == Some(pid) {
        if Instant::now() >= deadline {
            return Err(StopError::Timeout(pid, wait));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(pid)
}

/// Pauses (`true`) or resumes (`false`) the daemon's turns; durable. The
/// pause file holds when it was paused (`at`). A person does it: the audit
/// log records it (`pause` or `resume`, whether turns were paused before, and
/// the outcome), refused or not.
pub fn set_paused(layout: &Layout, paused: bool, at: DateTime<Utc>) -> Result<(), PathError> {
    let p = layout.paused();
    let was_paused = p.exists();
    let done = if paused {
        std::fs::create_dir_all(layout.state_dir())
            .with_path(layout.state_dir())
            .and_then(|()| fsx::write_atomic(&layout.state_tmp(), &p, at.to_rfc3339().as_bytes()))
    } else {
        match std::fs::remove_file(&p) {
            Ok(()) => fsx::sync_dir(&layout.state_dir()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_path(&p),
        }
    };
    let action = if paused { "pause" } else { "resume" };
    let what = serde_json::json!({ "was_paused": was_paused });
    if done.is_ok() && was_paused != paused {
        use crate::events::EventKind;
        let turn = crate::journal::Journal::new(layout).last_turn().unwrap_or_default();
        let kind = if paused { EventKind::Paused {} } else { EventKind::Resumed {} };
        crate::events::append_person(layout, turn, at, vec![kind]);
    }
    crate::audit::record(
        layout,
        crate::audit::Entry::new(at, crate::audit::PERSON, action, what, done.as_ref().map(|_| ())),
    );
    done
}

#[cfg(test)]
mod tests {
    //! The daemon in-process under paused tokio time: its timers (turns,
    //! backoff, rescans, a shutdown after a delay) fire at once, in virtual
    //! time. Its filesystem watcher and file I/O are real; each test holds
    //! without them (the watcher only ever makes a turn earlier).
    use super::*;
    use crate::clock::Clock;

    #[test]
    fn classifies_outbox_and_config_paths() {
        let r = Path::new("/org");
        assert_eq!(classify(r, Path::new("/org/agents/human/outbox/new/x.json")), Some(Change::Outbox));
        assert_eq!(classify(r, Path::new("/org/agents/human/outbox/tmp/x.json.1.tmp")), None);
        assert_eq!(classify(r, Path::new("/org/agents/human/inbox/new/x.json")), None);
        assert_eq!(classify(r, Path::new("/org/agents/planner/resume.toml")), Some(Change::Config));
        assert_eq!(classify(r, Path::new("/org/org/models.toml")), Some(Change::Config));
        assert_eq!(classify(r, Path::new("/org/org/state/turn.json")), None);
    }

    /// Every folder on the way to a path the daemon cares about is watched,
    /// and the folders where the turn writes for itself are not.
    #[test]
    fn the_folders_watched_are_those_on_the_way_to_what_matters() {
        let r = Path::new("/org");
        for p in ["agents/human/outbox/new/x.json", "agents/planner/resume.toml", "org/models.toml", "org/state/paused"]
        {
            let path = r.join(p);
            assert!(classify(r, &path).is_some(), "{p}");
            for dir in path.ancestors().skip(1).take_while(|d| *d != r) {
                assert!(watched(r, dir), "{} is on the way to {p}", dir.display());
            }
        }
        for dir in ["agents/human/inbox", "agents/human/inbox/new", "agents/human/outbox/sent", "org/state/journal"] {
            assert!(!watched(r, &r.join(dir)), "{dir}");
        }
        assert!(!watched(r, Path::new("/elsewhere/agents")));
    }

    /// A clock that reads tokio's (paused) time, from `base`.
    #[derive(Debug)]
    struct TokioClock {
        base: DateTime<Utc>,
        start: Instant,
    }

    impl Clock for TokioClock {
        fn now(&self) -> DateTime<Utc> {
            self.base + chrono::Duration::from_std(self.start.elapsed()).unwrap()
        }
    }

    fn t0() -> DateTime<Utc> {
        "2026-01-02T03:04:05.006Z".parse().unwrap()
    }

    fn sources() -> Sources {
        Sources { clock: Arc::new(TokioClock { base: t0(), start: Instant::now() }), ..Sources::fixed(t0()) }
    }

    fn new_org() -> (tempfile::TempDir, std::path::PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("org");
        crate::init::init(&root).unwrap();
        (d, root)
    }

    fn opts(turns: Option<u64>) -> RunOptions {
        RunOptions { turns, turn_seconds: Some(60.0), rescan: Duration::from_secs(3600), sources: sources() }
    }

    /// Whether `d` is `want`, give or take the timer's millisecond and a test's polling.
    #[track_caller]
    fn about(d: Duration, want: Duration) {
        assert!(d.abs_diff(want) <= Duration::from_millis(20), "{d:?}, not {want:?}");
    }

    fn send(root: &Path, body: &str) -> String {
        let org = Org::load(root).unwrap();
        crate::send::send(&org, "human", "manager", body, crate::send::SendOptions::default()).unwrap().id
    }

    fn answered(root: &Path, id: &str) -> bool {
        let mb = crate::org::Layout::new(root).mail();
        mb.unread("human").unwrap().0.iter().any(|m| m.reply_to.as_deref() == Some(id))
    }

    #[tokio::test(start_paused = true)]
    async fn turns_fire_every_turn_seconds_in_virtual_time() {
        let (_d, root) = new_org();
        let (real, start) = (std::time::Instant::now(), Instant::now());
        let mut at = Vec::new();
        let done = run(&root, opts(Some(3)), std::future::pending(), |r| at.push((r.turn, start.elapsed())), |_| {})
            .await
            .unwrap();
        assert_eq!(done, 3);
        assert_eq!(at.iter().map(|(t, _)| *t).collect::<Vec<_>>(), [1, 2, 3]);
        // The first turn runs at once: it finishes whatever a previous run left.
        about(at[0].1, Duration::ZERO);
        about(at[1].1 - at[0].1, Duration::from_secs(60));
        about(at[2].1 - at[1].1, Duration::from_secs(60));
        assert!(real.elapsed() < Duration::from_secs(20), "two minutes of turns took {:?}", real.elapsed());
        let committed = crate::journal::Journal::new(&Layout::new(&root)).committed().unwrap().unwrap();
        assert_eq!(committed.committed_at, Some(t0() + chrono::Duration::from_std(at[2].1).unwrap()));
    }

    /// A backup holds the turn lock: the daemon starts no turn until it lets go.
    #[tokio::test(start_paused = true)]
    async fn a_held_turn_lock_keeps_the_daemon_from_starting_a_turn() {
        let (_d, root) = new_org();
        let layout = Layout::new(&root);
        let backup = crate::lock::try_turn(&layout).unwrap().expect("a free turn lock");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let mut turns = Vec::new();
        let daemon = run(&root, opts(Some(1)), async { drop(stop_rx.await) }, |r| turns.push(r.turn), |_| {});
        let person = async {
            tokio::time::sleep(Duration::from_secs(120)).await;
            let journal = crate::journal::Journal::new(&layout);
            assert_eq!(journal.last_turn().unwrap(), 0, "a turn ran while the turn lock was held");
            drop(backup);
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert_eq!(journal.last_turn().unwrap(), 1, "the turn did not run once the lock was free");
            let _ = stop_tx.send(());
        };
        let (done, ()) = tokio::join!(daemon, person);
        assert_eq!(done.unwrap(), 1);
        assert_eq!(turns, [1]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_shutdown_future_ends_it_between_turns() {
        let (_d, root) = new_org();
        let start = Instant::now();
        let shutdown = tokio::time::sleep(Duration::from_secs(90));
        let done = run(&root, opts(None), shutdown, |_| {}, |_| {}).await.unwrap();
        assert_eq!(done, 2, "turns at 0 s and 60 s, then the stop at 90 s");
        about(start.elapsed(), Duration::from_secs(90));
        assert!(!Layout::new(&root).daemon_json().exists(), "daemon.json outlived the daemon");
        assert_eq!(crate::lock::holder(&Layout::new(&root)), None, "the lock is released");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_turn_backs_off_1_2_4_8_seconds_and_turns_run_again_once_it_is_fixed() {
        let (_d, root) = new_org();
        let layout = Layout::new(&root);
        std::fs::create_dir_all(layout.state_dir()).unwrap();
        // The journal is a file: every turn fails on it, as on an org-wide I/O error.
        std::fs::write(layout.journal_dir(), "not a folder").unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let start = Instant::now();
        let mut turns = Vec::new();
        let daemon =
            run(&root, opts(None), async { drop(stop_rx.await) }, |r| turns.push((r.turn, start.elapsed())), |_| {});
        let watch = async {
            let (mut seen, mut failures) = (0, Vec::new());
            while failures.len() < 4 {
                tokio::time::sleep(Duration::from_millis(5)).await;
                if let Some(t) = trouble::read_daemon(&layout) {
                    if t.failures > seen {
                        seen = t.failures;
                        failures.push((start.elapsed(), t));
                    }
                }
            }
            std::fs::remove_file(layout.journal_dir()).unwrap();
            // The next try (8 s after the fourth failure) runs the turn.
            tokio::time::sleep(Duration::from_secs(9)).await;
            assert!(trouble::read_daemon(&layout).is_none(), "the trouble is not cleared");
            stop_tx.send(()).unwrap();
            failures
        };
        let (done, failures) = tokio::join!(daemon, watch);
        assert_eq!(done.unwrap(), 1);
        let at: Vec<Duration> = failures.iter().map(|(at, _)| *at).collect();
        about(at[0], Duration::ZERO);
        for (i, want) in [1, 2, 4].into_iter().enumerate() {
            about(at[i + 1] - at[i], Duration::from_secs(want));
        }
        // The trouble file tells when the next try comes, by the injected clock.
        for ((at, t), wait) in failures.iter().zip([1, 2, 4, 8]) {
            assert!(t.error.contains("journal"), "{}", t.error);
            let retry_in = (t.retry_at - t0()).to_std().unwrap() - *at;
            assert!(retry_in.abs_diff(Duration::from_secs(wait)) < Duration::from_millis(20), "{retry_in:?}");
            assert_eq!(t.since, t0());
        }
        assert_eq!(turns.len(), 1);
        about(turns[0].1 - at[3], Duration::from_secs(8));
    }

    #[tokio::test(start_paused = true)]
    async fn new_mail_wakes_a_turn_by_the_next_rescan_without_waiting_for_the_timer() {
        let (_d, root) = new_org();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let opts = RunOptions { rescan: Duration::from_secs(2), ..opts(None) };
        let daemon = run(&root, opts, async { drop(stop_rx.await) }, |_| {}, |_| {});
        let person = async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            let id = send(&root, "ping");
            let sent = Instant::now();
            while !answered(&root, &id) {
                tokio::time::sleep(Duration::from_millis(10)).await;
                assert!(sent.elapsed() < Duration::from_secs(30), "not answered before the timer turn");
            }
            stop_tx.send(()).unwrap();
            sent.elapsed()
        };
        let (done, took) = tokio::join!(daemon, person);
        // The watcher may wake it sooner; the rescan does within its period, even without the watcher.
        assert!(took <= Duration::from_millis(2100), "answered after {took:?}");
        assert_eq!(done.unwrap(), 2);
    }

    /// With the default org (`debounce_ms = 0`), mail to an idle daemon
    /// starts a turn at once: the watcher wakes it, nothing waits for a burst.
    #[tokio::test(start_paused = true)]
    async fn mail_to_an_idle_daemon_starts_a_turn_at_once() {
        let (_d, root) = new_org();
        assert_eq!(Org::load(&root).unwrap().settings.debounce_ms, 0);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let daemon = run(&root, opts(None), async { drop(stop_rx.await) }, |_| {}, |_| {});
        let person = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let mut took = Vec::new();
            for i in 0..3 {
                let id = send(&root, &format!("ping {i}"));
                let sent = Instant::now();
                while !answered(&root, &id) {
                    assert!(sent.elapsed() < Duration::from_secs(1), "not answered at once");
                    tokio::time::sleep(Duration::from_micros(100)).await;
                }
                took.push(sent.elapsed());
            }
            stop_tx.send(()).unwrap();
            took
        };
        let (done, took) = tokio::join!(daemon, person);
        assert_eq!(done.unwrap(), 4, "the first turn and one per message");
        // Virtual time: only the polling above and a wait in the daemon make it pass.
        assert!(took.iter().all(|t| *t < Duration::from_millis(3)), "{took:?}");
    }

    /// Mail that lands after the turn's last routing (here: as the turn
    /// ends) wakes the next turn at once, not the timer's.
    #[tokio::test(start_paused = true)]
    async fn mail_that_lands_as_a_turn_ends_wakes_the_next_turn() {
        let (_d, root) = new_org();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let late = std::sync::Mutex::new(None);
        let on_turn = |r: &TurnReport| {
            if r.turn == 1 {
                *late.lock().unwrap() = Some((send(&root, "late"), Instant::now()));
            }
        };
        let daemon = run(&root, opts(None), async { drop(stop_rx.await) }, on_turn, |_| {});
        let person = async {
            loop {
                let sent = late.lock().unwrap().clone();
                if let Some((id, at)) = sent {
                    if answered(&root, &id) {
                        break;
                    }
                    assert!(at.elapsed() < Duration::from_secs(1), "the late mail waits for the timer");
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            stop_tx.send(()).unwrap();
        };
        let (done, ()) = tokio::join!(daemon, person);
        assert_eq!(done.unwrap(), 2);
    }

    /// Mail the turn's routing left waiting (for an agent whose resume is
    /// invalid) wakes no turn, however often the daemon looks; new mail does.
    #[tokio::test(start_paused = true)]
    async fn held_mail_wakes_no_turn_and_new_mail_still_does() {
        let (_d, root) = new_org();
        crate::testing::edit(&root, "agents/planner/resume.toml", "title = \"Planner\"", "title = 7");
        let held = crate::message::Message::parse(br#"{"id":"held-1","from":"manager","to":"planner","body":"hi"}"#);
        Layout::new(&root).mail().send_now("manager", &held.unwrap()).unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let opts = RunOptions { rescan: Duration::from_millis(500), ..opts(None) };
        let mut turns = 0;
        let daemon = run(&root, opts, async { drop(stop_rx.await) }, |_| turns += 1, |_| {});
        let person = async {
            // Many rescans, and one timer turn.
            tokio::time::sleep(Duration::from_secs(90)).await;
            let id = send(&root, "still there?");
            let sent = Instant::now();
            while !answered(&root, &id) {
                assert!(sent.elapsed() < Duration::from_secs(2), "new mail waits for the timer");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            stop_tx.send(()).unwrap();
        };
        let (done, ()) = tokio::join!(daemon, person);
        assert_eq!(done.unwrap(), 3, "the first turn, the timer's at 60 s, and the new mail's");
        assert_eq!(turns, 3);
        let pending = Layout::new(&root).mail().pending("manager").unwrap();
        assert_eq!(pending.len(), 1, "the held mail still waits");
    }

    #[tokio::test(start_paused = true)]
    async fn a_paused_daemon_starts_no_turn_until_resumed() {
        let (_d, root) = new_org();
        let layout = Layout::new(&root);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let opts = RunOptions { rescan: Duration::from_secs(2), ..opts(None) };
        let mut turns = 0;
        let daemon = run(&root, opts, async { drop(stop_rx.await) }, |_| turns += 1, |_| {});
        let person = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            set_paused(&layout, true, t0()).unwrap();
            let id = send(&root, "anyone?");
            // Longer than the debounce, many rescans and the timer: nothing may start a turn.
            tokio::time::sleep(Duration::from_secs(150)).await;
            assert!(!answered(&root, &id), "answered while paused");
            assert_eq!(crate::org::Layout::new(&root).mail().pending("human").unwrap().len(), 1, "routed while paused");
            set_paused(&layout, false, t0()).unwrap();
            let resumed = Instant::now();
            while !answered(&root, &id) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(resumed.elapsed() <= Duration::from_millis(2100), "answered {:?} after resume", resumed.elapsed());
            stop_tx.send(()).unwrap();
        };
        let (done, ()) = tokio::join!(daemon, person);
        assert_eq!(done.unwrap(), 2, "the first turn, and the one after resume");
    }

    #[tokio::test(start_paused = true)]
    async fn a_subscriber_sees_every_event_of_the_daemon_s_turns_in_order() {
        let (_d, root) = new_org();
        send(&root, "plan the launch @planner");
        let opts = opts(Some(2));
        let mut rx = opts.sources.bus.subscribe();
        run(&root, opts, std::future::pending(), |_| {}, |_| {}).await.unwrap();
        let mut live = Vec::new();
        let mut started = Vec::new();
        while let Ok(e) = rx.try_recv() {
            match e.kind {
                crate::events::EventKind::TurnStarted {} => started.push((e.turn, e.seq)),
                _ => live.push(e),
            }
        }
        assert_eq!(started, [(1, 0), (2, 0)], "each turn's start is told, unnumbered");
        let seqs: Vec<u64> = live.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=live.len() as u64).collect::<Vec<_>>());
        let ends: Vec<u64> =
            live.iter().filter(|e| matches!(e.kind, crate::events::EventKind::Turn(_))).map(|e| e.turn).collect();
        assert_eq!(ends, [1, 2], "each turn ends with its report");
        assert!(live.iter().any(
            |e| e.turn == 2 && matches!(&e.kind, crate::events::EventKind::Ran { agent, .. } if agent == "planner")
        ));
        // What was published is what the file holds.
        let file: Vec<crate::events::Event> = std::fs::read_to_string(Layout::new(&root).events())
            .unwrap()
            .lines()
            .filter_map(crate::events::Event::parse)
            .collect();
        assert_eq!(file, live);
    }

    #[test]
    fn pause_and_resume_are_in_the_audit_log_even_when_they_fail() {
        let (_d, root) = new_org();
        let layout = Layout::new(&root);
        set_paused(&layout, true, t0()).unwrap();
        set_paused(&layout, false, t0()).unwrap();
        // A folder where the pause file goes cannot be removed as a file.
        std::fs::create_dir_all(layout.paused().join("x")).unwrap();
        let e = set_paused(&layout, false, t0()).unwrap_err();
        let got: Vec<_> = crate::audit::read(&layout)
            .unwrap()
            .into_iter()
            .map(|e| (e.who, e.action, e.what["was_paused"].clone(), e.outcome))
            .collect();
        assert_eq!(
            got,
            [
                ("person".into(), "pause".into(), false.into(), "ok".into()),
                ("person".into(), "resume".into(), true.into(), "ok".into()),
                ("person".into(), "resume".into(), true.into(), e.to_string()),
            ]
        );
    }

    fn event_names(layout: &Layout) -> Vec<String> {
        std::fs::read_to_string(layout.events())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?.get("event")?.as_str().map(String::from))
            .collect()
    }

    /// A pause and a resume that change something are events for the live
    /// stream; pausing a paused daemon is not.
    #[test]
    fn pause_and_resume_append_their_events_once() {
        let (_d, root) = new_org();
        let layout = Layout::new(&root);
        set_paused(&layout, true, t0()).unwrap();
        set_paused(&layout, true, t0()).unwrap();
        set_paused(&layout, false, t0()).unwrap();
        assert_eq!(event_names(&layout), ["paused", "resumed"]);
    }

    /// The daemon tells the live stream when the config files' problems
    /// change: each problem at its place, then an empty list once fixed.
    #[tokio::test(start_paused = true)]
    async fn config_problems_are_events_when_they_change() {
        let (_d, root) = new_org();
        let layout = Layout::new(&root);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let opts = RunOptions { rescan: Duration::from_millis(100), ..opts(None) };
        let daemon = run(&root, opts, async { drop(stop_rx.await) }, |_| {}, |_| {});
        let person = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            crate::testing::edit(&root, "agents/planner/resume.toml", "title = \"Planner\"", "title = \"Planner");
            tokio::time::sleep(Duration::from_millis(500)).await;
            crate::testing::edit(&root, "agents/planner/resume.toml", "title = \"Planner", "title = \"Planner\"");
            tokio::time::sleep(Duration::from_millis(500)).await;
            stop_tx.send(()).unwrap();
        };
        let (done, ()) = tokio::join!(daemon, person);
        done.unwrap();
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(layout.events())
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .filter(|v: &serde_json::Value| v["event"] == "config_error")
            .collect();
        assert_eq!(lines.len(), 2, "{lines:#?}");
        let p = &lines[0]["problems"][0];
        assert_eq!(p["file"], "agents/planner/resume.toml", "{p}");
        assert!(p["line"].as_u64().is_some() && p["column"].as_u64().is_some(), "{p}");
        assert_eq!(lines[1]["problems"], serde_json::json!([]), "fixed: an empty list");
    }

    #[tokio::test(start_paused = true)]
    async fn an_agent_hired_while_the_daemon_runs_works_from_the_next_turn() {
        let (_d, root) = new_org();
        crate::testing::edit(&root, "agents/manager/resume.toml", "tools = [", "tools = [\"hire_agent\", ");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let opts = RunOptions { rescan: Duration::from_secs(2), ..opts(None) };
        let daemon = run(&root, opts, async { drop(stop_rx.await) }, |_| {}, |_| {});
        let person = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let org = Org::load(&root).unwrap();
            let manager = org.agent("manager").unwrap();
            let ctx = crate::tools::Ctx { org: &org, agent: "manager", resume: manager, turn: 1, now: t0() };
            let args = serde_json::json!({
                "name": "scribe", "title": "Scribe", "instructions": "Take notes.",
                "send_to": ["human"], "read_from": ["human"],
            });
            let call = crate::tools::Call { id: "c1".into(), tool: "hire_agent".into(), args };
            let out = crate::tools::run(&ctx, &call).await;
            assert!(out.ok, "{out:?}");
            // The person lets the human and the new agent talk, then writes to it.
            let human = "agents/human/resume.toml";
            crate::testing::edit(&root, human, "send_to = [\"manager\"]", "send_to = [\"manager\", \"scribe\"]");
            crate::testing::edit(&root, human, "read_from = [\"manager\"]", "read_from = [\"manager\", \"scribe\"]");
            let org = Org::load(&root).unwrap();
            let opts = crate::send::SendOptions::default();
            let id = crate::send::send(&org, "human", "scribe", "take notes", opts).unwrap().id;
            let sent = Instant::now();
            while !answered(&root, &id) {
                assert!(sent.elapsed() < Duration::from_secs(120), "the new agent never answered");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            stop_tx.send(()).unwrap();
        };
        let (done, ()) = tokio::join!(daemon, person);
        assert!(done.unwrap() >= 2);
    }

    #[tokio::test]
    async fn a_streaming_model_publishes_its_reply_in_pieces_on_the_bus_only() {
        let (_d, root) = new_org();
        crate::testing::edit(&root, "org/models.toml", "provider = \"mock\"", "provider = \"slow\"\nstream = true");
        let models = root.join("org/models.toml");
        let text = std::fs::read_to_string(&models).unwrap() + "\n[providers.slow]\nkind = \"mock\"\nlatency_ms = 80\n";
        std::fs::write(models, text).unwrap();
        send(&root, "hello there, how are you today?");
        let src = Sources::real();
        let mut rx = src.bus.subscribe();
        let reports = step_with(&root, 1, &src, |_, _| {}).await.unwrap();
        assert_eq!(reports[0].ran, ["manager"], "{:?}", reports[0]);
        let mut pieces = Vec::new();
        while let Ok(e) = rx.try_recv() {
            if let crate::events::EventKind::ReplyDelta { agent, text, restart } = e.kind {
                assert_eq!((agent.as_str(), restart, e.seq, e.turn), ("manager", false, 0, 1));
                pieces.push(text);
            }
        }
        assert!(pieces.len() > 1, "several pieces: {pieces:?}");
        let records = crate::journal::Journal::new(&Layout::new(&root)).records(1).unwrap();
        assert_eq!(records["manager"].reply.as_deref(), Some(pieces.concat().as_str()), "the journaled reply");
        let events = std::fs::read_to_string(Layout::new(&root).events()).unwrap();
        assert!(events.contains("\"turn\"") && !events.contains("reply_delta"), "{events}");
    }

    #[test]
    fn an_older_daemon_file_without_api_still_reads_and_none_is_not_written() {
        let old = r#"{"pid":42,"started_at":"2026-01-02T03:04:05.006Z"}"#;
        let d: DaemonFile = serde_json::from_str(old).unwrap();
        assert_eq!((d.pid, d.api.as_deref()), (42, None));
        assert_eq!(serde_json::to_string(&d).unwrap(), old, "no api: the field is left out");
        let with = DaemonFile { api: Some("127.0.0.1:7878".into()), ..d };
        let back: DaemonFile = serde_json::from_slice(&serde_json::to_vec(&with).unwrap()).unwrap();
        assert_eq!(back, with);
    }

    #[tokio::test]
    async fn the_api_address_is_recorded_in_this_daemon_s_file_only() {
        let (_d, root) = new_org();
        let layout = Layout::new(&root);
        let mine = DaemonFile { pid: std::process::id(), started_at: t0(), api: None };
        fsx::write_atomic(&layout.state_tmp(), &layout.daemon_json(), &serde_json::to_vec(&mine).unwrap()).unwrap();
        record_api(&layout, "127.0.0.1:9", Duration::from_secs(5)).await.unwrap();
        let read: DaemonFile = serde_json::from_slice(&std::fs::read(layout.daemon_json()).unwrap()).unwrap();
        assert_eq!(read.api.as_deref(), Some("127.0.0.1:9"));
        // Another process's file is left alone (after the wait).
        let other = DaemonFile { pid: 1, started_at: t0(), api: None };
        fsx::write_atomic(&layout.state_tmp(), &layout.daemon_json(), &serde_json::to_vec(&other).unwrap()).unwrap();
        record_api(&layout, "127.0.0.1:9", Duration::from_millis(100)).await.unwrap();
        let read: DaemonFile = serde_json::from_slice(&std::fs::read(layout.daemon_json()).unwrap()).unwrap();
        assert_eq!(read, other);
    }
}
