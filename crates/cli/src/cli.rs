//! Global options, dispatch to one command, and the one place where errors
//! become a message on stderr and an exit code (0 ok, 1 error, 2 usage, 3 locked).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lemming_engine::daemon::StepError;
use lemming_engine::lock::LockError;
use lemming_engine::org::{self, LoadOrgError, Org};

use crate::commands;

/// lemming runs an organization of LLM agents that talk through files.
#[derive(Debug, Parser)]
#[command(name = "lemming", version, about, propagate_version = true)]
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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write the default org into a new or empty folder
    Init(commands::init::Args),
    /// Check every TOML file of the org and report each problem
    Validate(commands::validate::Args),
    /// Run turns now
    Step(commands::step::Args),
    /// Send a message as the human (or --from another agent)
    Send(commands::send::Args),
    /// Read unread mail of the human (or another agent)
    Inbox(commands::inbox::Args),
    /// Show the turn, the daemon, each agent and the dead letters
    Status(commands::status::Args),
    /// List the agents
    Agents(commands::agents::Args),
    /// Show one agent in detail
    Inspect(commands::inspect::Args),
    /// Add credits to an agent
    #[command(name = "top-up")]
    TopUp(commands::top_up::Args),
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

fn init_tracing(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = std::env::var("LEMMING_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose);
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
        Command::TopUp(a) => commands::top_up::run(&ctx, a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.message);
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
