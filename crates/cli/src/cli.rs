//! Global options, dispatch to one command, and the one place where errors
//! become a message on stderr and an exit code (0 ok, 1 error, 2 usage, 3 locked).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands;
use crate::ctx::Ctx;

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
    /// Which node of the org's [cluster] this process is: it runs only that
    /// node's agents
    #[arg(long, global = true, env = "LEMMING_NODE", value_name = "NAME")]
    pub node: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

const AFTER_HELP: &str = "\
Start with: lemming init DIR, then lemming send manager \"hello\", lemming step, lemming inbox.

Exit codes: 0 ok; 1 an error (the message says what and where); 2 a usage error
(a wrong option or value); 3 the org is locked by another lemming process
(step and run; the message names its pid).";

/// The commands, in the order people meet them: set up, talk, watch, run, maintain.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write the default org, or an example org (--template), into a new or empty folder
    Init(commands::init::Args),
    /// Send a message as the human (or --from another agent); prints its id
    Send(commands::send::Args),
    /// Run turns now: route mail, run the agents that are due, route their replies
    ///
    /// Runs N turns one after the other and prints what each did: every outbox
    /// is routed by the org chart, the agents that are due are run through their
    /// models, their replies are routed, and the turn is committed. It takes the
    /// org lock for the turns, so it does not run beside a daemon (`lemming run`).
    /// With --dry-run it only shows what the next turn would do, and writes nothing.
    Step(commands::step::Args),
    /// Read unread mail of the human (or another agent)
    Inbox(commands::inbox::Args),
    /// Talk to an agent: send each line read from stdin and show the replies
    Chat(commands::chat::Args),
    /// Show a whole conversation across every mailbox, as a tree of replies
    Thread(commands::thread::Args),
    /// Find messages in every inbox, outbox and dead letter, best match first
    Search(commands::search::Args),
    /// Derive a committed turn again from its journal and compare it with the files
    Replay(commands::replay::Args),
    /// Write a thread, an agent's mail or the whole org's as Markdown, JSON or one HTML file
    Export(commands::export::Args),
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
    /// Serve the HTTP API, live events, dashboard and metrics of the org
    ///
    /// Serves until Ctrl-C or SIGTERM. At start it prints the address and a
    /// one-time login link for the dashboard. It runs no turns: run it beside
    /// `lemming run` or `lemming step`, or use `lemming run --http ADDR` to
    /// serve from the daemon itself.
    Serve(commands::serve::Args),
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
    /// List model keys and prices; --remote: what servers serve; `use`: switch agents
    ///
    /// Lists every model key of org/models.toml: its provider and kind, the
    /// model name sent, its price, how replies are constrained, its fallback and
    /// the agents that use it. With --remote it asks each HTTP provider's server
    /// which models it serves (GET /models; Ollama's /api/tags too) and which
    /// keys use them. `lemming models use KEY --agent NAME` (or --all) switches
    /// agents to another key by editing their resume.toml in place.
    Models(commands::models::Args),
    /// Check each provider: reachable, key accepted, one tiny request (500 ms each)
    ///
    /// Checks each provider of org/models.toml: the key is set, the server
    /// answers and accepts the key, and, for servers on this machine, one tiny
    /// request (max_tokens = 1) succeeds. Each provider gets the same deadline;
    /// they are checked at once. Nothing is charged. Exits 1 when a provider
    /// fails. With --detect it checks no provider: it looks for model servers
    /// on this machine and prints the lines that switch the org to them.
    Doctor(commands::doctor::Args),
    /// Add credits to an agent
    #[command(name = "top-up")]
    TopUp(commands::top_up::Args),
    /// Check the org's mailboxes, journal and ledger for lost, duplicated or torn state
    Fsck(commands::fsck::Args),
    /// Rebuild the search index from the files
    Reindex(commands::reindex::Args),
    /// Write the whole org to one archive, between two turns, beside a running daemon
    Backup(commands::backup::Args),
    /// Unpack a backup into a new org folder, then check it with fsck
    Restore(commands::restore::Args),
}

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
    if let Some(node) = &cli.node {
        // The engine reads the node from the environment each time it loads
        // the org; nothing else runs yet (no thread reads the environment).
        std::env::set_var(lemming_engine::org::NODE_ENV, node);
    }
    crate::log::init_tracing(cli.verbose, matches!(cli.command, Command::Run(_)));
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
        Command::Backup(a) => commands::backup::run(&ctx, a),
        Command::Restore(a) => commands::restore::run(&ctx, a),
        Command::Run(a) => commands::run::run(&ctx, a),
        Command::Serve(a) => commands::serve::run(&ctx, a),
        Command::Pause(a) => commands::control::pause(&ctx, a),
        Command::Resume(a) => commands::control::resume(&ctx, a),
        Command::Stop(a) => commands::control::stop(&ctx, a),
        Command::Chat(a) => commands::chat::run(&ctx, a),
        Command::Thread(a) => commands::thread::run(&ctx, a),
        Command::Search(a) => commands::search::run(&ctx, a),
        Command::Reindex(a) => commands::reindex::run(&ctx, a),
        Command::Replay(a) => commands::replay::run(&ctx, a),
        Command::Export(a) => commands::export::run(&ctx, a),
    };
    // Managed local servers started by this command (step, chat, run) stop with it.
    lemming_provider::serve::stop_all();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Errors quote paths, names and file contents: shown escaped.
            eprintln!("error: {}", lemming_engine::term::text(&e.message));
            ExitCode::from(e.code)
        }
    }
}
