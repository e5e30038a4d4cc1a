//! `lemming chat [AGENT]`: a line-oriented conversation. Each line read from
//! stdin is sent as the human; the replies in its thread are shown as they
//! come. With no daemon running, chat runs the turns itself.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lemming_engine::chat::{Conversation, Outcome, Progress, WaitOptions};
use lemming_engine::name::HUMAN;
use lemming_engine::org::Org;
use lemming_engine::send;
use lemming_engine::term;

use crate::commands::send::send_error;
use crate::ctx::{block_on, CliError, Ctx};
use crate::render::{message, MessageLayout};

#[derive(Debug, clap::Args)]
#[command(after_help = "Works with or without a daemon: when `lemming run` is running, chat waits \
    for its turns (up to --timeout); when none is, chat runs turns itself until a reply comes or \
    the agents have nothing left to do. End with Ctrl-D (end of input).")]
pub struct Args {
    /// The agent to talk to
    #[arg(default_value = "manager")]
    pub agent: String,
    /// Seconds to wait for a reply while a daemon runs the turns
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    pub timeout: f64,
    /// The most turns to run for one line when no daemon runs
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = crate::ctx::at_least_one)]
    pub max_turns: u64,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<(), CliError> {
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        return Err(CliError { message: format!("--timeout must be more than 0, not {}", args.timeout), code: 2 });
    }
    let root = ctx.root()?;
    let org = Org::load_or_last_good(&root, None);
    send::check(&org, HUMAN, &args.agent).map_err(send_error)?;
    let opts = WaitOptions {
        timeout: lemming_provider::config::secs(args.timeout),
        max_turns: args.max_turns,
        ..WaitOptions::default()
    };
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!("Talking to {} as {HUMAN}; one message per line, Ctrl-D to end.", args.agent);
    }
    let mut conversation = Conversation::new(HUMAN);
    let mut stdin = std::io::stdin().lock();
    let mut line = String::new();
    block_on(async {
        loop {
            if interactive {
                eprint!("> ");
                let _ = std::io::stderr().flush();
            }
            line.clear();
            if stdin.read_line(&mut line)? == 0 {
                if interactive {
                    eprintln!();
                }
                return Ok(());
            }
            let body = line.trim_end_matches(['\n', '\r']);
            if body.trim().is_empty() {
                continue;
            }
            // Reloaded for every line: the chart may have been edited meanwhile.
            let org = Org::load_or_last_good(&root, None);
            let sent = match conversation.send(&org, &args.agent, body) {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("error: {}", term::text(&send_error(e).message));
                    continue;
                }
            };
            let spinner = Spinner::start(&args.agent);
            let status = spinner.status.clone();
            let waited = conversation
                .wait(&root, &sent, &opts, |p| {
                    *status.lock().unwrap_or_else(|e| e.into_inner()) = match p {
                        Progress::Daemon(pid) => format!("the daemon (pid {pid}) runs the turns"),
                        Progress::Stepped(turn) => format!("ran turn {turn}"),
                        Progress::Locked => "another process runs a turn".into(),
                    };
                })
                .await;
            spinner.stop().await;
            let waited = waited?;
            for m in &waited.replies {
                print!("{}", message(m, MessageLayout::Chat));
            }
            let _ = std::io::stdout().flush();
            conversation.mark_read(&root, &waited.replies)?;
            match waited.outcome {
                Outcome::Answered => {}
                Outcome::Ended => println!("no reply (the conversation ended without an answer to you)"),
                Outcome::TimedOut => println!(
                    "no reply within {}s; it may still come: it is shown after your next line, or by `lemming inbox`",
                    args.timeout
                ),
            }
        }
    })?
}

/// A progress line on stderr while waiting: animated when stderr is a
/// terminal, else one plain line.
struct Spinner {
    status: Arc<Mutex<String>>,
    task: Option<(tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
}

impl Spinner {
    fn start(agent: &str) -> Spinner {
        let status = Arc::new(Mutex::new(String::new()));
        if !std::io::stderr().is_terminal() {
            eprintln!("waiting for {agent}...");
            return Spinner { status, task: None };
        }
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel();
        let shared = status.clone();
        let agent = agent.to_string();
        let task = tokio::spawn(async move {
            const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
            let started = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            for i in 0.. {
                tokio::select! {
                    _ = &mut stop_rx => break,
                    _ = tick.tick() => {}
                }
                let status = shared.lock().map(|s| s.clone()).unwrap_or_default();
                let sep = if status.is_empty() { "" } else { "; " };
                eprint!(
                    "\r\x1b[2K{} waiting for {agent} ({}s{sep}{status})",
                    FRAMES[i % FRAMES.len()],
                    started.elapsed().as_secs()
                );
                let _ = std::io::stderr().flush();
            }
            eprint!("\r\x1b[2K");
            let _ = std::io::stderr().flush();
        });
        Spinner { status, task: Some((stop_tx, task)) }
    }

    async fn stop(self) {
        if let Some((tx, task)) = self.task {
            let _ = tx.send(());
            let _ = task.await;
        }
    }
}
