//! What every command shares: its context (where the org is, whether to print
//! JSON), its error type with the exit code, and small helpers for arguments
//! and async work. Commands import this module; it imports no command.

use std::path::PathBuf;

use lemming_engine::clock::Sources;
use lemming_engine::daemon::StepError;
use lemming_engine::lock::LockError;
use lemming_engine::org::{self, LoadOrgError, Org};
use lemming_engine::transport::Link;

/// Exit codes of the commands that run turns, for their --help.
pub const LOCKED_HELP: &str = "\
Exit codes: 0 ok; 1 an error; 2 a usage error; 3 the org is locked by another
lemming process (a daemon or another step): its pid is named.";

/// Parses a count that must be 1 or more (`step -n`, `run --turns`,
/// `chat --max-turns`, `logs -n`).
pub fn at_least_one(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(0) => Err("it must be 1 or more".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e}; it must be a whole number, 1 or more")),
    }
}

/// An error on its way to stderr, with its exit code.
#[derive(Debug)]
pub struct CliError {
    pub message: String,
    pub code: u8,
}

impl CliError {
    pub fn user(message: impl Into<String>) -> CliError {
        CliError { message: message.into(), code: 1 }
    }
}

macro_rules! into_cli_error {
    ($($t:ty),*) => {$(
        impl From<$t> for CliError {
            fn from(e: $t) -> CliError {
                CliError::user(e.to_string())
            }
        }
    )*};
}
into_cli_error!(
    LoadOrgError,
    lemming_engine::error::PathError,
    lemming_engine::init::InitError,
    lemming_engine::org::UnknownAgent,
    lemming_engine::views::ViewError,
    lemming_engine::index::IndexError,
    std::io::Error
);

impl From<LockError> for CliError {
    fn from(e: LockError) -> CliError {
        let code = if matches!(e, LockError::Held { .. }) { 3 } else { 1 };
        CliError { message: e.to_string(), code }
    }
}

impl From<StepError> for CliError {
    fn from(e: StepError) -> CliError {
        match e {
            StepError::Locked(l) => l.into(),
            StepError::Node(message) => CliError { message, code: 2 },
            StepError::NodeTaken(message) => CliError { message, code: 3 },
            other => CliError::user(other.to_string()),
        }
    }
}

/// What every command gets.
pub struct Ctx {
    pub org: Option<PathBuf>,
    pub json: bool,
}

impl Ctx {
    /// The org root, found from --org, LEMMING_ORG or the current folder.
    pub fn root(&self) -> Result<PathBuf, CliError> {
        let cwd = std::env::current_dir()?;
        Ok(org::find_root(self.org.as_deref(), &cwd)?)
    }

    /// The org, loaded and validated (bad resumes are reported by `problems`, not here).
    pub fn load(&self) -> Result<Org, CliError> {
        Ok(Org::load(&self.root()?)?)
    }

    /// The org for read-only commands and `send`: an invalid `org.toml` or
    /// `models.toml` falls back to defaults (its problems are in `problems()`),
    /// so these work while a bad edit waits to be fixed.
    pub fn load_lenient(&self) -> Result<Org, CliError> {
        Ok(Org::load_or_last_good(&self.root()?, None))
    }

    /// The clock, ids and bus of the turns a command runs, with the link to
    /// the other nodes of an org with `[cluster]` (NATS JetStream).
    pub fn sources(&self) -> Sources {
        Sources { link: Link::connecting(lemming_cluster::connector()), ..Sources::real() }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("stop requested; finishing the turn in flight");
}

/// Runs a future on a runtime built for this command.
pub fn block_on<F: std::future::Future>(f: F) -> Result<F::Output, CliError> {
    Ok(runtime()?.block_on(f))
}

/// Runs a future that may start managed local servers (`step`, `chat`): on
/// SIGINT or SIGTERM the command stops those servers and exits 130, rather
/// than dying with them still running. A turn cut short this way is finished
/// by the next one, as after a crash. The signal is awaited on its own task, so
/// it is heard even while the command blocks on its input.
pub fn block_on_stopping_servers<F: std::future::Future>(f: F) -> Result<F::Output, CliError> {
    let rt = runtime()?;
    rt.spawn(async {
        shutdown_signal().await;
        tokio::task::spawn_blocking(lemming_provider::serve::stop_all).await.ok();
        std::process::exit(130);
    });
    Ok(rt.block_on(f))
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::user(format!("cannot start the async runtime: {e}")))
}
