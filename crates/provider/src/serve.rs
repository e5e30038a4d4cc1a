//! Managed local servers: `serve = { program, args, ... }` on an HTTP provider.
//!
//! lemming starts the server on the provider's first call, keeps it running
//! and stops it when it exits:
//!
//! - **Start on first use.** Before a call, [`Server::ensure`] makes sure the
//!   server answers `ready_path` (2xx) on the host and port of `base_url`. If
//!   something already answers there, it is used as it is (state `external`:
//!   someone else runs it, lemming neither watches nor stops it). Otherwise
//!   `program args` is started in its own process group, in the org folder,
//!   with stdin closed and stdout and stderr appended to its log; on Linux it
//!   gets `SIGKILL` when lemming dies, even by `kill -9`. Calls wait until it
//!   is ready, at most `startup_timeout_secs`; then they fail as
//!   [`Cause::Unavailable`] with the log file's name and last lines.
//!   Concurrent first calls start it once.
//! - **Restart.** A watcher thread waits on the process. When it exits, the
//!   exit is recorded and it is started again after a backoff (1 s, doubling
//!   up to 30 s; back to 1 s once it stayed up a minute). Calls during a
//!   restart wait for it to be ready again.
//! - **Stop on exit.** [`stop_all`] (called when the daemon stops and when
//!   any command ends) sends `SIGTERM` to each server's process group, then
//!   `SIGKILL` after a grace of [`GRACE`].
//!
//! Servers live in a process-wide table keyed by their state file (one per
//! org and provider), so the registry rebuilt on a hot reload finds the
//! running server: the same settings keep it; changed settings stop the old
//! one and start the new one on the next call.
//!
//! Each server's state is written atomically to its state file
//! (`org/state/serve/<provider>.json`, a [`ServeState`]): what `lemming
//! status` and `lemming doctor` show, from any process.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::resilience::{Attempt, AttemptError, Retry};
use crate::{BoxFuture, Cause, ProviderSpec, Reply, Request, ServeSpec};

/// How long a stopped server gets to exit after `SIGTERM` before `SIGKILL`.
pub const GRACE: Duration = Duration::from_secs(3);
/// A log over this size is moved to `<log>.1` when the server starts.
pub const LOG_CAP: u64 = 10 * 1024 * 1024;
/// The first restart's delay; it doubles on each restart in a row.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest delay between two restarts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A server ready this long before it died is restarted after [`FIRST_BACKOFF`] again.
pub const STEADY: Duration = Duration::from_secs(60);
/// The log lines quoted when a server does not get ready.
const TAIL_LINES: usize = 15;
/// How often readiness is polled while a server starts.
const POLL: Duration = Duration::from_millis(100);

/// Where a managed server stands, as its state file says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Configured, not yet needed (never written to the state file).
    Idle,
    /// Started; not yet answering `ready_path`.
    Starting,
    /// Answering `ready_path`: calls go to it.
    Ready,
    /// It exited; it is started again after a backoff.
    Restarting,
    /// It did not get ready in time (see `error`); the next call tries again.
    Failed,
    /// lemming stopped it when it exited.
    Stopped,
    /// Something lemming did not start already answered there; it is used as it is.
    External,
}

impl Phase {
    /// The state's word, as the state file spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Starting => "starting",
            Phase::Ready => "ready",
            Phase::Restarting => "restarting",
            Phase::Failed => "failed",
            Phase::Stopped => "stopped",
            Phase::External => "external",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state file of a managed server (`org/state/serve/<provider>.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServeState {
    /// The provider it serves.
    pub provider: String,
    /// The process (the leader of its process group), while there is one.
    pub pid: Option<u32>,
    /// Where it stands.
    pub state: Phase,
    /// How many times it was restarted after it exited.
    pub restarts: u32,
    /// How its last process ended (`exit status: 1`, `signal: 9 (SIGKILL)`).
    pub last_exit: Option<String>,
    /// When it entered this state.
    pub since: DateTime<Utc>,
    /// Where its output goes.
    pub log: PathBuf,
    /// The address polled for readiness.
    pub ready_url: String,
    /// Why it failed, for `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The process that manages it (lemming's pid), while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager: Option<u32>,
}

impl ServeState {
    /// Whether its process is alive now (`false` without a pid), and so is
    /// the lemming that manages it: a server dies with its manager, so a
    /// live pid without one is another process that got the number.
    pub fn alive(&self) -> bool {
        self.pid.is_some_and(pid_alive) && self.manager_alive()
    }

    /// Whether the lemming the file names as manager is alive (`true` when it names none).
    fn manager_alive(&self) -> bool {
        self.manager.is_none_or(pid_alive)
    }

    /// What `status` and `doctor` say of it: its state, unless the process
    /// the file names is gone (lemming was killed before it could say so).
    pub fn summary(&self) -> String {
        let since = self.since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let restarts = match self.restarts {
            0 => String::new(),
            n => format!(", {n} restart(s), last exit: {}", self.last_exit.as_deref().unwrap_or("?")),
        };
        match (self.state, self.pid) {
            (Phase::External, _) => format!("external (not started by lemming) at {} since {since}", self.ready_url),
            (Phase::Stopped, _) => format!("stopped since {since}"),
            (Phase::Failed, _) => format!("failed since {since}: {}", self.error.as_deref().unwrap_or("?")),
            (state, Some(pid)) if !self.manager_alive() => format!(
                "not running (lemming pid {} that ran it is gone, and pid {pid} with it; last state {state} since {since})",
                self.manager.unwrap_or(0)
            ),
            (state, Some(pid)) if pid_alive(pid) => format!("{state} (pid {pid}) since {since}{restarts}"),
            (state, Some(pid)) => format!("not running (pid {pid} is gone; last state {state} since {since})"),
            (state, None) => format!("{state} since {since}{restarts}"),
        }
    }
}

/// Reads a state file: `Ok(None)` when there is none.
pub fn read_state(path: &Path) -> Result<Option<ServeState>, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{}: not a server state file: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// A managed server as `status` and `doctor` show it, read from its state
/// file (never by starting or asking it).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The provider it serves.
    pub provider: String,
    /// The state file's state; `not_started` without a state file,
    /// `not_running` when the pid it names is gone, `unknown` when it cannot be read.
    pub state: String,
    /// Whether it answers calls now as far as the file says: its process is
    /// alive, or it is external.
    pub running: bool,
    /// Its process, when alive.
    pub pid: Option<u32>,
    /// Restarts after it exited.
    pub restarts: u32,
    /// How its last process ended.
    pub last_exit: Option<String>,
    /// Since when it is in this state.
    pub since: Option<DateTime<Utc>>,
    /// Its log.
    pub log: PathBuf,
    /// Its state file.
    pub state_file: PathBuf,
    /// The line `status` and `doctor` print.
    pub summary: String,
}

impl Report {
    /// The report of provider `provider`'s server, from `spec.state`.
    pub fn read(provider: &str, spec: &ServeSpec) -> Report {
        let mut r = Report {
            provider: provider.to_string(),
            state: "not_started".into(),
            running: false,
            pid: None,
            restarts: 0,
            last_exit: None,
            since: None,
            log: spec.log.clone(),
            state_file: spec.state.clone(),
            summary: "not started (lemming starts it on the first call)".into(),
        };
        match read_state(&spec.state) {
            Ok(None) => {}
            Err(e) => {
                r.state = "unknown".into();
                r.summary = format!("unknown: {e}");
            }
            Ok(Some(st)) => {
                let alive = st.alive();
                r.running = alive || st.state == Phase::External;
                r.state = match (st.state, st.pid) {
                    (_, Some(_)) if !alive => "not_running".into(),
                    (phase, _) => phase.as_str().into(),
                };
                r.pid = st.pid.filter(|_| alive);
                r.restarts = st.restarts;
                r.summary = st.summary();
                r.last_exit = st.last_exit;
                r.since = Some(st.since);
            }
        }
        r
    }
}

/// Whether the state file says another live lemming process runs the server.
fn managed_elsewhere(state: &Path) -> bool {
    let Ok(Some(st)) = read_state(state) else { return false };
    let busy = matches!(st.state, Phase::Starting | Phase::Ready | Phase::Restarting);
    busy && st.manager.is_some_and(|m| m != std::process::id() && pid_alive(m))
}

/// Whether a process with this pid exists and is not a zombie (it exited; only its parent's wait is missing).
pub fn pid_alive(pid: u32) -> bool {
    let Ok(id) = libc::pid_t::try_from(pid) else { return false };
    if id <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let r = unsafe { libc::kill(id, 0) };
    let exists = r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    exists && !is_zombie(pid)
}

/// Whether `/proc/<pid>/stat` says the process is a zombie (Linux; elsewhere never).
fn is_zombie(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // The state follows the command name, which is in parentheses and may hold spaces.
    stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next()) == Some("Z")
}

/// Sends `signal` to the process group led by `pid` (errors, such as a group already gone, are ignored).
fn kill_group(pid: u32, signal: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        if pid > 0 {
            // SAFETY: killpg has no memory effects; a stale group is ESRCH.
            unsafe { libc::killpg(pid, signal) };
        }
    }
}

/// What the server's settings say of where it answers.
#[derive(Debug, Clone)]
struct Target {
    /// `host:port` for the `Host` header.
    host: String,
    /// Where to connect.
    addrs: Vec<SocketAddr>,
    /// The readiness URL, for messages.
    url: String,
}

fn target(base_url: Option<&str>, ready_path: &str) -> Result<Target, String> {
    let base = base_url.ok_or("a managed server needs the provider's `base_url` (where it will answer)")?;
    let url = reqwest::Url::parse(base).map_err(|e| format!("base_url `{base}` is not a URL: {e}"))?;
    if url.scheme() != "http" {
        return Err(format!("base_url `{base}`: a managed server is reached over plain http://"));
    }
    let host = url.host_str().ok_or_else(|| format!("base_url `{base}` has no host"))?;
    let port = url.port_or_known_default().unwrap_or(80);
    let addrs = url.socket_addrs(|| Some(80)).map_err(|e| format!("base_url `{base}`: cannot resolve {host}: {e}"))?;
    Ok(Target { host: format!("{host}:{port}"), addrs, url: format!("http://{host}:{port}{ready_path}") })
}

/// One managed server.
pub struct Server {
    provider: String,
    spec: ServeSpec,
    base_url: Option<String>,
    target: Result<Target, String>,
    st: Mutex<Inner>,
    changed: Condvar,
    /// The version of the state last written to the state file. Held while
    /// writing, never together with `st` taken after it: the file is written
    /// outside `st`, which calls wait on from async code.
    written: Mutex<u64>,
}

struct Inner {
    phase: Phase,
    pid: Option<u32>,
    restarts: u32,
    last_exit: Option<String>,
    since: DateTime<Utc>,
    error: Option<String>,
    /// Set by [`Server::stop`]: no more starts.
    stopping: bool,
    /// Whether the thread that starts and watches the process runs.
    watching: bool,
    /// The server this one replaced (changed settings): it must be gone before this one starts.
    predecessor: Option<Arc<Server>>,
    /// Cleared for a replaced server, whose state file now belongs to its successor.
    owns_state: bool,
    /// Bumped on each change for the state file: an older one is never written over a newer one.
    version: u64,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("provider", &self.provider).field("program", &self.spec.program).finish()
    }
}

impl Server {
    /// A server for `provider`, not started.
    pub fn new(provider: &str, spec: ServeSpec, base_url: Option<String>) -> Server {
        Server {
            provider: provider.to_string(),
            target: target(base_url.as_deref(), &spec.ready_path),
            spec,
            base_url,
            st: Mutex::new(Inner {
                phase: Phase::Idle,
                pid: None,
                restarts: 0,
                last_exit: None,
                since: Utc::now(),
                error: None,
                stopping: false,
                watching: false,
                predecessor: None,
                owns_state: true,
                version: 0,
            }),
            changed: Condvar::new(),
            written: Mutex::new(0),
        }
    }

    /// The settings it was made with.
    pub fn spec(&self) -> &ServeSpec {
        &self.spec
    }

    /// Where it stands now.
    pub fn phase(&self) -> Phase {
        self.lock().phase
    }

    /// Its process, while there is one.
    pub fn pid(&self) -> Option<u32> {
        self.lock().pid
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes sure it answers: starts it on first use (or after a failed
    /// start), waits while it starts or restarts (at most
    /// `startup_timeout_secs`). The error says why and quotes the log.
    pub async fn ensure(self: &Arc<Self>) -> Result<(), String> {
        if matches!(self.phase(), Phase::Ready) {
            return Ok(());
        }
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || me.ensure_blocking())
            .await
            .unwrap_or_else(|e| Err(format!("the wait for the managed server failed: {e}")))
    }

    /// [`Server::ensure`], blocking the calling thread.
    pub fn ensure_blocking(self: &Arc<Self>) -> Result<(), String> {
        let target = self.target.clone().map_err(|e| format!("managed server: {e}"))?;
        let timeout = crate::config::secs(self.spec.startup_timeout_secs);
        let mut g = self.lock();
        if g.stopping {
            return Err("the managed server was stopped: lemming is exiting".into());
        }
        if g.phase == Phase::External {
            drop(g);
            if self.probe(&target) {
                return Ok(());
            }
            tracing::info!(provider = %self.provider, url = %target.url, "the external server is gone; lemming starts its own");
            g = self.lock();
            if g.phase == Phase::External {
                g.phase = Phase::Idle;
            }
        }
        match g.phase {
            Phase::Ready | Phase::External => return Ok(()),
            Phase::Stopped => return Err("the managed server was stopped: lemming is exiting".into()),
            Phase::Idle | Phase::Failed if !g.watching => {
                g.phase = Phase::Starting;
                g.error = None;
                g.watching = true;
                let me = Arc::clone(self);
                let spawned = std::thread::Builder::new()
                    .name(format!("serve-{}", self.provider))
                    .spawn(move || me.watch(target));
                if let Err(e) = spawned {
                    g.watching = false;
                    g.phase = Phase::Failed;
                    return Err(format!("cannot start the thread that runs the managed server: {e}"));
                }
            }
            _ => {}
        }
        let deadline = Instant::now() + timeout + POLL * 5;
        loop {
            match g.phase {
                Phase::Ready | Phase::External => return Ok(()),
                Phase::Stopped => return Err("the managed server was stopped: lemming is exiting".into()),
                Phase::Failed => return Err(g.error.clone().unwrap_or_else(|| "the managed server failed".into())),
                _ => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let phase = g.phase;
                drop(g);
                return Err(format!(
                    "the managed server is not ready after {} s (it is {phase}){}",
                    self.spec.startup_timeout_secs,
                    log_tail(&self.spec.log)
                ));
            }
            g = self.changed.wait_timeout(g, left).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// Whether `ready_path` answers 2xx now.
    fn probe(&self, target: &Target) -> bool {
        probe(target, &self.spec.ready_path)
    }

    /// Sets the state, releases the lock, writes the state file and wakes
    /// the waiters. Once it is stopping, only `Stopped` is taken: a watcher
    /// that gets there late must not say ready with no process.
    fn set(&self, mut g: MutexGuard<'_, Inner>, phase: Phase) {
        if g.stopping && phase != Phase::Stopped {
            self.changed.notify_all();
            return;
        }
        if g.phase != phase {
            g.since = Utc::now();
        }
        g.phase = phase;
        let snapshot = self.snapshot(&mut g);
        drop(g);
        self.write_state(snapshot);
        // After the write: a caller woken up by it finds the file saying so too.
        self.changed.notify_all();
    }

    /// The state file's content now, with its version (`None`: nothing to write).
    fn snapshot(&self, g: &mut Inner) -> Option<(u64, ServeState)> {
        if !g.owns_state || g.phase == Phase::Idle {
            return None;
        }
        g.version += 1;
        let state = ServeState {
            provider: self.provider.clone(),
            pid: g.pid,
            state: g.phase,
            restarts: g.restarts,
            last_exit: g.last_exit.clone(),
            since: g.since,
            log: self.spec.log.clone(),
            ready_url: self.target.as_ref().map(|t| t.url.clone()).unwrap_or_default(),
            error: g.error.clone(),
            manager: (!matches!(g.phase, Phase::Stopped | Phase::Failed)).then(std::process::id),
        };
        Some((g.version, state))
    }

    /// Writes a [`Server::snapshot`] unless a newer one was written, the
    /// file now belongs to a successor, or another live lemming process runs
    /// the server (the daemon, while `chat` runs): then its file stays.
    fn write_state(&self, snapshot: Option<(u64, ServeState)>) {
        let Some((version, state)) = snapshot else { return };
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        if *written >= version || !self.lock().owns_state || managed_elsewhere(&self.spec.state) {
            return;
        }
        let Some(dir) = self.spec.state.parent() else { return };
        let bytes = serde_json::to_vec_pretty(&state).unwrap_or_default();
        match lemming_fs::write_atomic(dir, &self.spec.state, &bytes) {
            Ok(()) => *written = version,
            Err(e) => {
                tracing::warn!(provider = %self.provider, error = %e, "cannot write the managed server's state file")
            }
        }
    }

    /// Sleeps `d`, or less when it is stopped; returns whether it is stopping.
    fn pause(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut g = self.lock();
        while !g.stopping {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            g = self.changed.wait_timeout(g, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        g.stopping
    }

    /// Marks the server restarting and waits out `backoff`, which then
    /// doubles (up to [`MAX_BACKOFF`]); `false` when it is being stopped
    /// meanwhile (the watcher then ends).
    fn restart_after(&self, g: MutexGuard<'_, Inner>, backoff: &mut Duration) -> bool {
        self.set(g, Phase::Restarting);
        if self.pause(*backoff) {
            self.lock().watching = false;
            self.changed.notify_all();
            return false;
        }
        *backoff = (*backoff * 2).min(MAX_BACKOFF);
        true
    }

    /// The thread that starts the server, waits on it, and restarts it.
    fn watch(self: Arc<Self>, target: Target) {
        let predecessor = self.lock().predecessor.take();
        if let Some(p) = predecessor {
            p.wait_gone(GRACE + Duration::from_secs(2));
        }
        let mut backoff = FIRST_BACKOFF;
        let mut first = true;
        loop {
            // Before each start, not only the first: another process may have
            // started one during the backoff; ours would not bind, and theirs
            // would answer our readiness probe.
            if self.probe(&target) {
                let mut g = self.lock();
                g.watching = false;
                g.pid = None;
                tracing::info!(provider = %self.provider, url = %target.url, "a server already answers; lemming uses it as it is");
                self.set(g, Phase::External);
                return;
            }
            let started = self.spawn().and_then(|child| {
                let pid = child.id();
                let mut g = self.lock();
                g.pid = Some(pid);
                let phase = if first { Phase::Starting } else { Phase::Restarting };
                self.set(g, phase);
                tracing::info!(provider = %self.provider, pid, program = %self.spec.program, "managed server started");
                self.wait_ready(child, &target)
            });
            let mut child = match started {
                Ok(child) => child,
                Err(why) => {
                    let tail = if first { log_tail(&self.spec.log) } else { String::new() };
                    let mut g = self.lock();
                    g.pid = None;
                    if g.stopping {
                        g.watching = false;
                        self.changed.notify_all();
                        return;
                    }
                    if first {
                        g.watching = false;
                        g.error = Some(format!("{why}{tail}"));
                        tracing::warn!(provider = %self.provider, error = %why, "the managed server did not start");
                        self.set(g, Phase::Failed);
                        return;
                    }
                    g.restarts += 1;
                    g.last_exit = Some(why.clone());
                    tracing::warn!(provider = %self.provider, error = %why, retry_in_secs = backoff.as_secs(), "the managed server did not start again");
                    if !self.restart_after(g, &mut backoff) {
                        return;
                    }
                    continue;
                }
            };
            let pid = child.id();
            {
                let mut g = self.lock();
                g.error = None;
                self.set(g, Phase::Ready);
            }
            tracing::info!(provider = %self.provider, pid, url = %target.url, "managed server ready");
            let ready_at = Instant::now();
            let status = child.wait();
            // What it started in its group goes with it.
            kill_group(pid, libc::SIGKILL);
            let exit = match status {
                Ok(s) => describe(s),
                Err(e) => format!("cannot wait for it: {e}"),
            };
            let mut g = self.lock();
            g.pid = None;
            g.last_exit = Some(exit.clone());
            if g.stopping {
                g.watching = false;
                self.changed.notify_all();
                return;
            }
            g.restarts += 1;
            if ready_at.elapsed() >= STEADY {
                backoff = FIRST_BACKOFF;
            }
            tracing::warn!(provider = %self.provider, pid, exit = %exit, retry_in_secs = backoff.as_secs_f64(), "the managed server exited; restarting it");
            if !self.restart_after(g, &mut backoff) {
                return;
            }
            first = false;
        }
    }

    /// Starts the process: its own group, stdin closed, output to the log,
    /// killed with lemming (Linux).
    fn spawn(&self) -> Result<Child, String> {
        use std::os::unix::process::CommandExt;
        let log = open_log(&self.spec.log, &self.spec.program, &self.spec.args)
            .map_err(|e| format!("cannot open its log {}: {e}", self.spec.log.display()))?;
        let err = log.try_clone().map_err(|e| format!("cannot open its log {}: {e}", self.spec.log.display()))?;
        let mut cmd = std::process::Command::new(&self.spec.program);
        cmd.args(&self.spec.args)
            .current_dir(&self.spec.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .process_group(0);
        #[cfg(target_os = "linux")]
        {
            // SAFETY: getpid is async-signal-safe.
            let parent = unsafe { libc::getpid() };
            // SAFETY: only async-signal-safe calls between fork and exec. The
            // death signal is tied to the thread that forks, which lives as
            // long as the process (it waits on it).
            unsafe {
                cmd.pre_exec(move || {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    // lemming died before the signal was set: do not outlive it.
                    if libc::getppid() != parent {
                        return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                    }
                    Ok(())
                });
            }
        }
        cmd.spawn().map_err(|e| format!("cannot run `{}`: {e}", self.spec.program))
    }

    /// Polls readiness until 2xx, the process exits, it is stopped, or the startup timeout.
    fn wait_ready(&self, mut child: Child, target: &Target) -> Result<Child, String> {
        let timeout = crate::config::secs(self.spec.startup_timeout_secs);
        let deadline = Instant::now() + timeout;
        let fail = |mut child: Child, why: String| {
            kill_group(child.id(), libc::SIGKILL);
            let _ = child.wait();
            Err(why)
        };
        loop {
            match child.try_wait() {
                Ok(Some(s)) => {
                    kill_group(child.id(), libc::SIGKILL);
                    return Err(format!("`{}` exited before it was ready ({})", self.spec.program, describe(s)));
                }
                Ok(None) => {}
                Err(e) => return fail(child, format!("cannot watch `{}`: {e}", self.spec.program)),
            }
            if self.lock().stopping {
                return fail(child, "stopped while starting".into());
            }
            if self.probe(target) {
                // Ours, not another process's on the same port: ours is still running.
                match child.try_wait() {
                    Ok(None) => return Ok(child),
                    Ok(Some(s)) => {
                        kill_group(child.id(), libc::SIGKILL);
                        return Err(format!(
                            "`{}` exited before it was ready ({}); something else answers {}",
                            self.spec.program,
                            describe(s),
                            target.url
                        ));
                    }
                    Err(e) => return fail(child, format!("cannot watch `{}`: {e}", self.spec.program)),
                }
            }
            if Instant::now() >= deadline {
                return fail(
                    child,
                    format!(
                        "`{}` did not answer {} with 2xx within startup_timeout_secs = {}",
                        self.spec.program, target.url, self.spec.startup_timeout_secs
                    ),
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Stops it: `SIGTERM` to its process group, `SIGKILL` after [`GRACE`].
    /// An external server is left alone. Returns once its process is gone.
    pub fn stop(&self) {
        let (pid, was) = {
            let mut g = self.lock();
            g.stopping = true;
            let was = g.phase;
            if was != Phase::Idle && was != Phase::External {
                g.phase = Phase::Stopped;
                g.since = Utc::now();
            }
            self.changed.notify_all();
            (g.pid, was)
        };
        if let Some(pid) = pid {
            tracing::info!(provider = %self.provider, pid, "stopping the managed server");
            kill_group(pid, libc::SIGTERM);
            if !self.wait_gone(GRACE) {
                kill_group(pid, libc::SIGKILL);
            }
        }
        self.wait_gone(GRACE);
        if was != Phase::Idle && was != Phase::External {
            let snapshot = self.snapshot(&mut self.lock());
            self.write_state(snapshot);
        }
    }

    /// Waits until no process and no watcher thread remain, at most `d`.
    fn wait_gone(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut g = self.lock();
        while g.watching || g.pid.is_some() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            g = self.changed.wait_timeout(g, left.min(POLL)).unwrap_or_else(|p| p.into_inner()).0;
        }
        true
    }

    fn same(&self, provider: &str, spec: &ServeSpec, base_url: &Option<String>) -> bool {
        self.provider == provider && &self.spec == spec && &self.base_url == base_url
    }
}

/// How a process ended, in words.
fn describe(s: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => s.to_string(),
    }
}

/// GET `path` over plain HTTP/1.1, with short timeouts: whether it answered 2xx.
fn probe(target: &Target, path: &str) -> bool {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", target.host);
    target.addrs.iter().any(|addr| {
        let Ok(mut s) = TcpStream::connect_timeout(addr, Duration::from_millis(500)) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
        if s.write_all(request.as_bytes()).is_err() {
            return false;
        }
        // The whole answer is read (bounded): a server whose answer is cut
        // short logs a broken pipe on each probe.
        let mut answer = Vec::new();
        let _ = (&mut s).take(64 * 1024).read_to_end(&mut answer);
        // "HTTP/1.1 200 ..."
        let head = String::from_utf8_lossy(&answer[..answer.len().min(16)]);
        let code = head.strip_prefix("HTTP/1.").and_then(|r| r.get(2..5)).and_then(|c| c.parse::<u16>().ok());
        code.is_some_and(|c| (200..300).contains(&c))
    })
}

/// Opens the log for appending, moving it to `<log>.1` first when it is over
/// [`LOG_CAP`], and notes the start in it.
fn open_log(path: &Path, program: &str, args: &[String]) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if std::fs::metadata(path).is_ok_and(|m| m.len() > LOG_CAP) {
        let mut old = path.as_os_str().to_owned();
        old.push(".1");
        std::fs::rename(path, PathBuf::from(old))?;
    }
    let mut f = OpenOptions::new().create(true).append(true).open(path)?;
    // One line: arguments may be whole scripts.
    let mut line = format!("{program:?}");
    for a in args {
        line.push(' ');
        line.push_str(&format!("{a:?}"));
    }
    let line: String = line.chars().take(400).collect();
    writeln!(f, "==== {} lemming starts: {line}", Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true))?;
    Ok(f)
}

/// The last lines of the log, as a message's tail ("" when it has none).
fn log_tail(path: &Path) -> String {
    let Ok(mut f) = File::open(path) else {
        return format!("; its log {} cannot be read", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(4096)));
    let mut bytes = Vec::new();
    let _ = f.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n    ");
    format!("; the last lines of its log {}:\n    {tail}", path.display())
}

/// The process-wide table of managed servers, keyed by state file.
fn table() -> MutexGuard<'static, HashMap<PathBuf, Arc<Server>>> {
    static TABLE: OnceLock<Mutex<HashMap<PathBuf, Arc<Server>>>> = OnceLock::new();
    TABLE.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner())
}

/// The managed server of a provider with `serve`, from the process-wide
/// table: the running one when its settings are the same; else a new one
/// (not started), and the old one is stopped in the background.
pub fn server(spec: &ProviderSpec) -> Option<Arc<Server>> {
    let serve = spec.serve.as_ref()?;
    let mut t = table();
    if let Some(s) = t.get(&serve.state) {
        if s.same(&spec.name, serve, &spec.base_url) {
            return Some(Arc::clone(s));
        }
    }
    let new = Arc::new(Server::new(&spec.name, serve.clone(), spec.base_url.clone()));
    if let Some(old) = t.insert(serve.state.clone(), Arc::clone(&new)) {
        {
            let mut g = old.lock();
            g.owns_state = false;
        }
        tracing::info!(provider = %spec.name, "the managed server's settings changed; the old one is stopped");
        new.lock().predecessor = Some(Arc::clone(&old));
        std::thread::spawn(move || old.stop());
    }
    Some(new)
}

/// Stops every managed server of this process (see [`Server::stop`]), all at
/// once; returns when they are gone. Called when lemming exits.
pub fn stop_all() {
    let servers: Vec<Arc<Server>> = table().values().cloned().collect();
    let handles: Vec<_> = servers.into_iter().map(|s| std::thread::spawn(move || s.stop())).collect();
    for h in handles {
        let _ = h.join();
    }
}

/// An HTTP kind's attempt behind its managed server: the server is made
/// ready before each try.
pub struct Served {
    inner: Box<dyn Attempt>,
    server: Arc<Server>,
}

impl Served {
    /// Wraps `inner`.
    pub fn new(inner: Box<dyn Attempt>, server: Arc<Server>) -> Served {
        Served { inner, server }
    }
}

impl Attempt for Served {
    fn attempt<'a>(&'a self, req: &'a Request) -> BoxFuture<'a, Result<Reply, AttemptError>> {
        Box::pin(async move {
            if let Err(message) = self.server.ensure().await {
                // The wait was the whole startup timeout: a retry now would wait again.
                return Err(AttemptError { message, retry: Retry::No, unhealthy: true, cause: Cause::Unavailable });
            }
            self.inner.attempt(req).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ModelSpec, ProviderKind};

    /// A tiny HTTP server: `/health` answers 503 for `delay` seconds, then
    /// 200; POST answers a chat completion; with a third argument it starts a
    /// `sleep` in its group and writes its pid there.
    const FAKE: &str = r#"
import http.server, subprocess, sys, time
port, delay = int(sys.argv[1]), float(sys.argv[2])
if len(sys.argv) > 3:
    p = subprocess.Popen(["sleep", "300"])
    open(sys.argv[3], "w").write(str(p.pid))
print("fake server starting on", port, flush=True)
t0 = time.time()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if time.time() - t0 >= delay else 503)
        self.end_headers()
        self.wfile.write(b"ok")
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = b'{"choices":[{"message":{"content":"{\\"messages\\":[]}"},"finish_reason":"stop"}]}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"#;

    fn python() -> Option<&'static str> {
        let ok = std::process::Command::new("python3").arg("-c").arg("pass").status().is_ok_and(|s| s.success());
        if !ok {
            println!("SKIPPED: python3 is missing (the fake server is a python3 script)");
        }
        ok.then_some("python3")
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    fn provider(dir: &Path, port: u16, args: &[&str], timeout: f64) -> ProviderSpec {
        let mut p = ProviderSpec::new("local", ProviderKind::OpenAi);
        p.base_url = Some(format!("http://127.0.0.1:{port}/v1"));
        p.max_retries = 0;
        p.serve = Some(ServeSpec {
            program: "python3".into(),
            args: ["-c", FAKE].iter().chain(args).map(|s| s.to_string()).collect(),
            ready_path: "/health".into(),
            startup_timeout_secs: timeout,
            log: dir.join("logs/serve-local.log"),
            state: dir.join("serve/local.json"),
            cwd: dir.to_path_buf(),
        });
        p
    }

    /// Gone: no such process, or a zombie nobody reaped yet.
    fn gone(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(s) => s.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')),
        }
    }

    fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !f() {
            assert!(Instant::now() < deadline, "timed out after {secs} s waiting until {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn state(dir: &Path) -> ServeState {
        read_state(&dir.join("serve/local.json")).unwrap().expect("a state file")
    }

    #[test]
    fn it_starts_on_first_use_waits_for_ready_and_stop_kills_its_group() {
        let Some(_) = python() else { return };
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child_file = dir.path().join("child.pid");
        let spec = provider(dir.path(), port, &[&port.to_string(), "0.7", child_file.to_str().unwrap()], 20.0);
        let s = server(&spec).unwrap();
        assert_eq!(s.phase(), Phase::Idle, "nothing runs before the first call");
        assert!(!dir.path().join("serve/local.json").exists());
        let t0 = Instant::now();
        s.ensure_blocking().unwrap();
        assert!(t0.elapsed() >= Duration::from_millis(600), "it waited for /health to say 200");
        assert!(probe(&target(spec.base_url.as_deref(), "/health").unwrap(), "/health"));
        let st = state(dir.path());
        assert_eq!(st.state, Phase::Ready);
        let pid = st.pid.unwrap();
        assert_eq!(Some(pid), s.pid());
        assert!(st.alive());
        assert_eq!(st.manager, Some(std::process::id()));
        let log = std::fs::read_to_string(dir.path().join("logs/serve-local.log")).unwrap();
        assert!(log.contains("fake server starting on"), "its output goes to the log: {log}");
        // Its own process group, killed as a whole.
        assert_eq!(unsafe { libc::getpgid(pid as libc::pid_t) }, pid as libc::pid_t);
        wait_until("the child pid is written", 5, || std::fs::read_to_string(&child_file).is_ok_and(|s| !s.is_empty()));
        let grandchild: u32 = std::fs::read_to_string(&child_file).unwrap().trim().parse().unwrap();
        assert!(!gone(grandchild));
        // The same settings on a rebuilt registry keep the running server.
        assert!(Arc::ptr_eq(&s, &server(&spec).unwrap()));
        s.stop();
        assert!(gone(pid), "the server is gone");
        wait_until("the server's own child is gone", 5, || gone(grandchild));
        let st = state(dir.path());
        assert_eq!((st.state, st.pid), (Phase::Stopped, None));
        assert!(!st.summary().contains("ready"));
        assert!(s.ensure_blocking().unwrap_err().contains("stopped"), "no start after a stop");
    }

    #[test]
    fn concurrent_first_calls_start_it_once() {
        let Some(_) = python() else { return };
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let s = server(&provider(dir.path(), port, &[&port.to_string(), "0.3"], 20.0)).unwrap();
        let waits: Vec<_> = (0..6)
            .map(|_| {
                let s = Arc::clone(&s);
                std::thread::spawn(move || s.ensure_blocking())
            })
            .collect();
        for w in waits {
            w.join().unwrap().unwrap();
        }
        let log = std::fs::read_to_string(dir.path().join("logs/serve-local.log")).unwrap();
        assert_eq!(log.matches("lemming starts").count(), 1, "{log}");
        s.stop();
    }

    #[test]
    fn a_server_that_is_not_ready_in_time_fails_the_call_with_its_log() {
        let Some(_) = python() else { return };
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let s = server(&provider(dir.path(), port, &[&port.to_string(), "1000"], 3.0)).unwrap();
        let t0 = Instant::now();
        let err = s.ensure_blocking().unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(8), "bounded by startup_timeout_secs");
        assert!(err.contains("startup_timeout_secs = 3"), "{err}");
        assert!(err.contains("serve-local.log"), "names the log: {err}");
        assert!(err.contains("fake server starting on"), "quotes its last lines: {err}");
        let st = state(dir.path());
        assert_eq!(st.state, Phase::Failed);
        assert!(st.error.unwrap().contains("fake server starting on"));
        assert!(!probe(&target(Some(&format!("http://127.0.0.1:{port}")), "/").unwrap(), "/"), "it was killed");
        s.stop();
    }

    #[test]
    fn a_program_that_exits_at_once_fails_the_call_with_why() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = provider(dir.path(), free_port(), &[], 5.0);
        let serve = spec.serve.as_mut().unwrap();
        serve.program = "sh".into();
        serve.args = vec!["-c".into(), "echo no model here >&2; exit 3".into()];
        let s = server(&spec).unwrap();
        let err = s.ensure_blocking().unwrap_err();
        assert!(err.contains("exited before it was ready (exit status 3)"), "{err}");
        assert!(err.contains("no model here"), "{err}");
        spec.serve.as_mut().unwrap().program = dir.path().join("missing").display().to_string();
        let err = server(&spec).unwrap().ensure_blocking().unwrap_err();
        assert!(err.contains("cannot run"), "{err}");
    }

    #[test]
    fn a_killed_server_is_restarted_and_calls_wait_for_it() {
        let Some(_) = python() else { return };
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let s = server(&provider(dir.path(), port, &[&port.to_string(), "0.2"], 20.0)).unwrap();
        s.ensure_blocking().unwrap();
        let first = s.pid().unwrap();
        unsafe { libc::kill(first as libc::pid_t, libc::SIGKILL) };
        wait_until("the exit is noticed", 5, || state(dir.path()).state == Phase::Restarting);
        let st = state(dir.path());
        assert_eq!(st.restarts, 1);
        assert!(st.last_exit.as_deref().unwrap().contains("signal 9"), "{st:?}");
        // A call during the restart waits for it.
        s.ensure_blocking().unwrap();
        let st = state(dir.path());
        assert_eq!(st.state, Phase::Ready);
        let second = st.pid.unwrap();
        assert_ne!(first, second);
        assert!(gone(first));
        s.stop();
        assert!(gone(second));
    }

    #[test]
    fn a_server_already_answering_is_used_as_external_and_left_running() {
        let Some(py) = python() else { return };
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut other = std::process::Command::new(py).args(["-c", FAKE, &port.to_string(), "0"]).spawn().unwrap();
        let spec = provider(dir.path(), port, &[&port.to_string(), "0"], 20.0);
        let t = target(spec.base_url.as_deref(), "/health").unwrap();
        wait_until("the other server answers", 10, || probe(&t, "/health"));
        let s = server(&spec).unwrap();
        s.ensure_blocking().unwrap();
        assert_eq!(s.phase(), Phase::External);
        let st = state(dir.path());
        assert_eq!((st.state, st.pid), (Phase::External, None));
        assert!(st.summary().contains("external"));
        assert!(!dir.path().join("logs/serve-local.log").exists(), "nothing was started");
        s.stop();
        assert!(probe(&t, "/health"), "an external server is not stopped");
        // Used by a second process while another lemming runs it: that one's file stays.
        let theirs = ServeState { state: Phase::Ready, pid: Some(other.id()), manager: Some(other.id()), ..st };
        std::fs::write(dir.path().join("serve/local.json"), serde_json::to_vec(&theirs).unwrap()).unwrap();
        let mut spec2 = spec.clone();
        spec2.serve.as_mut().unwrap().startup_timeout_secs = 21.0;
        let s2 = server(&spec2).unwrap();
        s2.ensure_blocking().unwrap();
        assert_eq!(s2.phase(), Phase::External);
        assert_eq!(state(dir.path()), theirs);
        s2.stop();
        let _ = other.kill();
        let _ = other.wait();
    }

    #[test]
    fn after_stop_a_late_watcher_cannot_say_ready() {
        let dir = tempfile::tempdir().unwrap();
        let spec = provider(dir.path(), free_port(), &[], 5.0);
        let s = Server::new("local", spec.serve.clone().unwrap(), spec.base_url.clone());
        s.set(s.lock(), Phase::Starting);
        assert_eq!(state(dir.path()).state, Phase::Starting);
        s.stop();
        assert_eq!(state(dir.path()).state, Phase::Stopped);
        // What a watcher that was between its probe and its `set` does.
        s.set(s.lock(), Phase::Ready);
        s.set(s.lock(), Phase::Restarting);
        assert_eq!(s.phase(), Phase::Stopped);
        assert_eq!(state(dir.path()).state, Phase::Stopped);
    }

    #[test]
    fn the_state_file_is_written_without_holding_the_state_lock() {
        let dir = tempfile::tempdir().unwrap();
        let spec = provider(dir.path(), free_port(), &[], 5.0);
        let serve = spec.serve.clone().unwrap();
        std::fs::create_dir_all(serve.state.parent().unwrap()).unwrap();
        // A FIFO as the state file: reading it (to see who manages the
        // server) blocks until a writer comes, like a slow disk.
        let c = std::ffi::CString::new(serve.state.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let s = Arc::new(Server::new("local", serve.clone(), spec.base_url.clone()));
        let setter = {
            let s = Arc::clone(&s);
            std::thread::spawn(move || s.set(s.lock(), Phase::External))
        };
        std::thread::sleep(Duration::from_millis(200));
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = {
            let s = Arc::clone(&s);
            std::thread::spawn(move || tx.send(s.phase()).unwrap())
        };
        let seen = rx.recv_timeout(Duration::from_secs(3));
        // Unblock the setter whatever happened.
        std::fs::OpenOptions::new().write(true).open(&serve.state).unwrap().write_all(b"{}").unwrap();
        setter.join().unwrap();
        reader.join().unwrap();
        assert_eq!(seen, Ok(Phase::External), "the state is readable while its file is written");
        assert_eq!(state(dir.path()).state, Phase::External);
    }

    #[test]
    fn a_server_started_elsewhere_during_the_backoff_is_used_as_external() {
        let Some(py) = python() else { return };
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let spec = provider(dir.path(), port, &[&port.to_string(), "0"], 20.0);
        let t = target(spec.base_url.as_deref(), "/health").unwrap();
        let s = server(&spec).unwrap();
        s.ensure_blocking().unwrap();
        let ours = s.pid().unwrap();
        unsafe { libc::kill(ours as libc::pid_t, libc::SIGKILL) };
        wait_until("the exit is noticed", 5, || s.phase() == Phase::Restarting);
        wait_until("its port is free", 5, || !probe(&t, "/health"));
        // Another process starts one within the first backoff (1 s).
        let mut other = std::process::Command::new(py)
            .args(["-c", FAKE, &port.to_string(), "0"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        wait_until("the other server answers", 10, || probe(&t, "/health"));
        wait_until("the other server is used as external", 10, || s.phase() == Phase::External);
        let log = std::fs::read_to_string(dir.path().join("logs/serve-local.log")).unwrap();
        assert_eq!(log.matches("lemming starts").count(), 1, "not started again: {log}");
        // The state file is written just after the phase changes in memory.
        wait_until("the state file says so", 5, || state(dir.path()).state == Phase::External);
        assert_eq!(state(dir.path()).pid, None);
        s.stop();
        assert!(probe(&t, "/health"), "theirs is left running");
        let _ = other.kill();
        let _ = other.wait();
    }

    #[test]
    fn changed_settings_stop_the_old_server() {
        let Some(_) = python() else { return };
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let spec = provider(dir.path(), port, &[&port.to_string(), "0"], 20.0);
        let old = server(&spec).unwrap();
        old.ensure_blocking().unwrap();
        let old_pid = old.pid().unwrap();
        let mut changed = spec.clone();
        changed.serve.as_mut().unwrap().startup_timeout_secs = 30.0;
        let new = server(&changed).unwrap();
        assert!(!Arc::ptr_eq(&old, &new));
        new.ensure_blocking().unwrap();
        assert_eq!(new.phase(), Phase::Ready, "its own, not the old one taken as external");
        assert!(gone(old_pid));
        assert_eq!(state(dir.path()).pid, new.pid());
        new.stop();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_registry_call_starts_the_managed_server() {
        let Some(_) = python() else { return };
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let spec = provider(dir.path(), port, &[&port.to_string(), "0.3"], 20.0);
        let model = ModelSpec { model: Some("fake".into()), ..ModelSpec::new("default", "local") };
        let registry =
            crate::Registry::new(std::slice::from_ref(&spec), [("default".to_string(), model.clone())].into());
        let req = Request {
            agent: "manager".into(),
            turn: 1,
            system: String::new(),
            prompt: "hi".into(),
            mail: vec![],
            may_send_to: vec![],
            model,
            agent_dir: None,
            tools: vec![],
            stream: None,
        };
        let reply = registry.complete(&req).await.unwrap();
        assert_eq!(reply.text, "{\"messages\":[]}");
        let s = server(&spec).unwrap();
        assert_eq!(s.phase(), Phase::Ready);
        tokio::task::spawn_blocking(move || s.stop()).await.unwrap();
    }

    #[test]
    fn a_large_log_is_moved_aside_at_start_and_a_dead_pid_is_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serve-x.log");
        std::fs::write(&log, vec![b'x'; LOG_CAP as usize + 1]).unwrap();
        drop(open_log(&log, "p", &[]).unwrap());
        assert!(std::fs::metadata(&log).unwrap().len() < 200);
        assert_eq!(std::fs::metadata(dir.path().join("serve-x.log.1")).unwrap().len(), LOG_CAP + 1);
        let mut dead = std::process::Command::new("true").spawn().unwrap();
        let pid = dead.id();
        dead.wait().unwrap();
        let st = ServeState {
            provider: "x".into(),
            pid: Some(pid),
            state: Phase::Ready,
            restarts: 0,
            last_exit: None,
            since: Utc::now(),
            log,
            ready_url: String::new(),
            error: None,
            manager: None,
        };
        assert!(!st.alive());
        assert!(st.summary().starts_with("not running"), "{}", st.summary());
        let mut spec = provider(dir.path(), 9, &[], 1.0).serve.unwrap();
        assert_eq!(Report::read("x", &spec).state, "not_started");
        spec.state = dir.path().join("x.json");
        std::fs::write(&spec.state, serde_json::to_vec(&st).unwrap()).unwrap();
        let r = Report::read("x", &spec);
        assert_eq!((r.state.as_str(), r.running, r.pid), ("not_running", false, None));
        let me = ServeState { pid: Some(std::process::id()), ..st.clone() };
        std::fs::write(&spec.state, serde_json::to_vec(&me).unwrap()).unwrap();
        let r = Report::read("x", &spec);
        assert_eq!((r.state.as_str(), r.running, r.pid), ("ready", true, Some(std::process::id())));
        // The lemming that ran it is gone: a live pid is someone else's now.
        let reused = ServeState { manager: Some(pid), ..me.clone() };
        assert!(!reused.alive());
        assert!(reused.summary().starts_with("not running"), "{}", reused.summary());
        std::fs::write(&spec.state, serde_json::to_vec(&reused).unwrap()).unwrap();
        let r = Report::read("x", &spec);
        assert_eq!((r.state.as_str(), r.running, r.pid), ("not_running", false, None));
        let managed = ServeState { manager: Some(std::process::id()), ..me };
        assert!(managed.alive());
        assert!(managed.summary().starts_with("ready (pid"), "{}", managed.summary());
        // A zombie (exited, not yet reaped) is not alive.
        let mut zombie = std::process::Command::new("true").spawn().unwrap();
        wait_until("it is a zombie", 5, || is_zombie(zombie.id()));
        assert!(!pid_alive(zombie.id()));
        let zst = ServeState { pid: Some(zombie.id()), manager: None, ..st };
        assert!(zst.summary().starts_with("not running"), "{}", zst.summary());
        zombie.wait().unwrap();
    }
}
