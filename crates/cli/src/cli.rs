//! Global options, dispatch to one command, and the one place where errors
//! become a message on stderr and an exit code (0 ok, 1 error, 2 usage, 3 locked).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lemming_engine::daemon::StepError;
use lemming_engine::lock::LockError;
use lemming_engine::org::{self, LoadOrgError, Org};

use crate::commands;

/// lemming runs an organization of LLM agents that talk only through files.
///
/// Each agent is a folder with a resume, an inbox and an outbox; every turn
/// routes their mail by the org chart and runs the agents that have mail.
#[derive(Debug, Parser)]
#[command(name = "lemming", version, propagate_version = true, after_help = AFTER_HELP)]
pub struct Cli {
    /// The org folder [default: $LEMMING_ORG, else the nearest parent folder with org/org.toml]
    #[arg(long, global = true, env = "LEMMING_ORG", value_name = "DIR")]
    pub org: Option<PathBuf>,
    /// More log output on stderr (repeat for more); LEMMING_LOG sets a filter
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Print data as JSON where the command prints data
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

const AFTER_HELP: &str = "\
Start with: lemming init DIR, then lemming send manager \"hello\", lemming step, lemming inbox.

Exit codes: 0 ok; 1 an error (the message says what and where); 2 a usage error
(a wrong option or value); 3 the org is locked by another lemming process
(step and run; the message names its pid).";

/// Exit codes of the commands that run turns, for their --help.
pub const LOCKED_HELP: &str = "\
Exit codes: 0 ok; 1 an error; 2 a usage error; 3 the org is locked by another
lemming process (a daemon or another step): its pid is named.";

/// The commands, in the order people meet them: set up, talk, watch, run, maintain.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write the default org into a new or empty folder
    Init(commands::init::Args),
    /// Send a message as the human (or --from another agent); prints its id
    Send(commands::send::Args),
    /// Run turns now: route mail, run the agents that are due, route their replies
    ///
    /// Runs N turns one after the other and prints what each did: every outbox
    /// is routed by the org chart, the agents that are due are run through their
    /// models, their replies are routed, and the turn is committed. It takes the
    /// org lock for the turns, so it does not run beside a daemon (`lemming run`).
    Step(commands::step::Args),
    /// Read unread mail of the human (or another agent)
    Inbox(commands::inbox::Args),
    /// Talk to an agent: send each line read from stdin and show the replies
    Chat(commands::chat::Args),
    /// Show the turn, the daemon, each agent and the dead letters
    Status(commands::status::Args),
    /// Show an agent's activity log: one entry per run (-f follows it)
    Logs(commands::logs::Args),
    /// List the agents
    Agents(commands::agents::Args),
    /// Show one agent in detail
    Inspect(commands::inspect::Args),
    /// Run the daemon: turns on a timer and early when mail lands, until stopped
    ///
    /// Runs in the foreground: a turn at once, then one every turn_seconds and
    /// early when mail lands in an outbox. Edits to the config apply from the
    /// next turn; an invalid edit is refused and the last good version stays in
    /// use (`lemming status` shows why). Ctrl-C, SIGTERM or `lemming stop` finish
    /// the turn in flight, release the lock and exit 0. It holds the org lock
    /// while it runs.
    Run(commands::run::Args),
    /// Let the daemon finish its current turn, then start no new ones
    Pause(commands::control::PauseArgs),
    /// Let a paused daemon start turns again
    Resume(commands::control::PauseArgs),
    /// Stop the daemon cleanly (it finishes its turn and releases the lock)
    Stop(commands::control::StopArgs),
    /// Check every TOML file of the org and report each problem
    ///
    /// Checks org/org.toml, org/models.toml and every agent's resume.toml, and
    /// reports each problem with its file, line, column and a fix. Exits 0 when
    /// every file is valid, 1 when a problem is found.
    Validate(commands::validate::Args),
    /// List the model keys, their providers and prices
    ///
    /// Lists every model key of org/models.toml: its provider and kind, the
    /// model name sent, its price, how replies are constrained, its fallback and
    /// the agents that use it.
    Models(commands::models::Args),
    /// Check each provider: reachable, key accepted, one tiny request (500 ms each)
    ///
    /// Checks each provider of org/models.toml: the key is set, the server
    /// answers and accepts the key, and, for servers on this machine, one tiny
    /// request (max_tokens = 1) succeeds. Each provider gets the same deadline;
    /// they are checked at once. Nothing is charged. Exits 1 when a provider
    /// fails.
    Doctor(commands::doctor::Args),
    /// Add credits to an agent
    #[command(name = "top-up")]
    TopUp(commands::top_up::Args),
    /// Check the org's mailboxes, journal and ledger for lost, duplicated or torn state
    Fsck(commands::fsck::Args),
}

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
}

/// Runs a future on a runtime built for this command.
pub fn block_on<F: std::future::Future>(f: F) -> Result<F::Output, CliError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::user(format!("cannot start the async runtime: {e}")))?;
    Ok(rt.block_on(f))
}

fn filter(verbose: u8, default: &str) -> tracing_subscriber::EnvFilter {
    use tracing_subscriber::EnvFilter;
    let level = match verbose {
        0 => default,
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    std::env::var("LEMMING_LOG").ok().and_then(|f| EnvFilter::try_new(f).ok()).unwrap_or_else(|| EnvFilter::new(level))
}

fn init_tracing(verbose: u8, command: &Command) {
    use tracing_subscriber::prelude::*;
    // The daemon also logs to a file, set up by `run` once it knows the org.
    if matches!(command, Command::Run(_)) {
        return;
    }
    let stderr = stderr_layer();
    let _ = tracing_subscriber::registry().with(stderr.with_filter(filter(verbose, "warn"))).try_init();
}

/// The daemon's logging: human-readable lines on stderr (from info, or as
/// `-v`/`LEMMING_LOG` say) and JSON lines in `dir`, rotated daily and kept
/// `keep` days. The guard must live as long as the daemon.
pub fn init_file_log(dir: &std::path::Path, keep: usize) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    use tracing_subscriber::prelude::*;
    let verbose = VERBOSE.load(std::sync::atomic::Ordering::Relaxed);
    let stderr = stderr_layer();
    // The appender prunes old files by listing the folder, and complains when it is missing.
    let _ = std::fs::create_dir_all(dir);
    let appender = tracing_appender::rolling::Builder::new()
        .rotation(tracing_appender::rolling::Rotation::DAILY)
        .filename_prefix("lemming")
        .filename_suffix("jsonl")
        .max_log_files(keep.max(1))
        .build(dir);
    match appender {
        Ok(appender) => {
            let (writer, guard) = tracing_appender::non_blocking(appender);
            let json = tracing_subscriber::fmt::layer().json().with_writer(writer);
            let _ = tracing_subscriber::registry()
                .with(stderr.with_filter(filter(verbose, "info")))
                .with(json.with_filter(filter(verbose, "info")))
                .try_init();
            Some(guard)
        }
        Err(e) => {
            let _ = tracing_subscriber::registry().with(stderr.with_filter(filter(verbose, "info"))).try_init();
            tracing::warn!(dir = %dir.display(), error = %e, "cannot write log files; logging to stderr only");
            None
        }
    }
}

fn stderr_layer<S>() -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use std::io::IsTerminal;
    use tracing_subscriber::field::MakeExt;
    // Field values quote replies, errors and paths: shown escaped, like all human output.
    let fields = tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
        let shown = format!("{value:?}");
        let shown = lemming_engine::term::text(&shown);
        match field.name() {
            "message" => write!(w, "{shown}"),
            name => write!(w, "{name}={shown}"),
        }
    })
    .delimited(" ");
    tracing_subscriber::fmt::layer()
        .fmt_fields(fields)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
}

static VERBOSE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// SIGPIPE stays ignored (the Rust default): a `command` provider that exits
/// without reading its prompt makes that write fail with `EPIPE`, which is the
/// call's business, instead of killing lemming. Our own output closed by its
/// reader (`lemming inbox | head`) makes `println!` panic with a broken pipe:
/// this hook turns that into the quiet death by SIGPIPE that command-line
/// tools are expected to have, and leaves every other panic to the default hook.
fn quiet_on_closed_output() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        let closed = text.starts_with("failed printing to std") && text.contains("Broken pipe");
        if closed {
            // SAFETY: signal(2) and raise(3) have no memory-safety preconditions; the
            // default SIGPIPE action ends the process here, as a write would have.
            unsafe {
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
                libc::raise(libc::SIGPIPE);
            }
            std::process::exit(141);
        }
        default(info);
    }));
}

pub fn main() -> ExitCode {
    quiet_on_closed_output();
    let cli = Cli::parse();
    VERBOSE.store(cli.verbose, std::sync::atomic::Ordering::Relaxed);
    init_tracing(cli.verbose, &cli.command);
    let ctx = Ctx { org: cli.org, json: cli.json };
    let result = match cli.command {
        Command::Init(a) => commands::init::run(&ctx, a),
        Command::Validate(a) => commands::validate::run(&ctx, a),
        Command::Step(a) => commands::step::run(&ctx, a),
        Command::Send(a) => commands::send::run(&ctx, a),
        Command::Inbox(a) => commands::inbox::run(&ctx, a),
        Command::Status(a) => commands::status::run(&ctx, a),
        Command::Agents(a) => commands::agents::run(&ctx, a),
        Command::Inspect(a) => commands::inspect::run(&ctx, a),
        Command::Logs(a) => commands::logs::run(&ctx, a),
        Command::TopUp(a) => commands::top_up::run(&ctx, a),
        Command::Models(a) => commands::models::run(&ctx, a),
        Command::Doctor(a) => commands::doctor::run(&ctx, a),
        Command::Fsck(a) => commands::fsck::run(&ctx, a),
        Command::Run(a) => commands::run::run(&ctx, a),
        Command::Pause(a) => commands::control::pause(&ctx, a),
        Command::Resume(a) => commands::control::resume(&ctx, a),
        Command::Stop(a) => commands::control::stop(&ctx, a),
        Command::Chat(a) => commands::chat::run(&ctx, a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Errors quote paths, names and file contents: shown escaped.
            eprintln!("error: {}", lemming_engine::term::text(&e.message));
            ExitCode::from(e.code)
        }
    }
}

/// Prints a value as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(v: &T) -> Result<(), CliError> {
    let s = serde_json::to_string_pretty(v).map_err(|e| CliError::user(e.to_string()))?;
    println!("{s}");
    Ok(())
}

/// A config or message word as its file spells it (`mail`, `urgent`), not as
/// Rust names it (`Mail`, `Urgent`).
pub fn word<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".into(),
    }
}
