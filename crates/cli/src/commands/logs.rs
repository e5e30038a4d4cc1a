//! `lemming logs NAME [-f]`: an agent's activity log, one entry per run.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::time::Duration;

use lemming_engine::activity::{self, Activity, Runs, Tail};
use lemming_engine::follow::Follow;
use lemming_engine::term::{line, text};

use crate::cli::{block_on, CliError, Ctx};

/// How often `--follow` looks for new runs when no change of the log's folder was seen.
const POLL: Duration = Duration::from_millis(200);

#[derive(Debug, clap::Args)]
#[command(after_help = "Each run is logged in agents/NAME/logs/activity.jsonl. \
    The daemon's own log (JSON lines, rotated daily) is in org/state/logs/.")]
pub struct Args {
    /// The agent
    pub name: String,
    /// Show the last N runs
    #[arg(short = 'n', long = "runs", default_value_t = 20, value_name = "N", value_parser = crate::cli::at_least_one)]
    pub n: u64,
    /// Keep printing new runs as they are logged, until Ctrl-C
    #[arg(short, long)]
    pub follow: bool,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<(), CliError> {
    let org = ctx.load_lenient()?;
    // An agent whose resume is invalid still has its log, and that is when it is wanted.
    if !org.broken.contains_key(&args.name) {
        org.agent(&args.name)?;
    }
    let mut tail = Tail::new(&org.layout.root, &args.name);
    // A run replayed after a crash is logged again, marked; it is shown once.
    let mut runs = Runs::default();
    let lines = once(&mut runs, tail.read_new()?);
    let first = lines.len().saturating_sub(usize::try_from(args.n).unwrap_or(usize::MAX));
    show(&lines[first..], ctx.json);
    if !args.follow {
        if lines.is_empty() && !ctx.json {
            eprintln!("No runs logged for {} yet.", args.name);
        }
        return Ok(());
    }
    if std::io::stderr().is_terminal() {
        eprintln!("Waiting for new runs of {}; Ctrl-C to stop.", args.name);
    }
    let log = activity::path(&org.layout.root, &args.name);
    block_on(async move {
        let mut follow = Follow::new(tail, log.parent().unwrap_or(&org.layout.root), POLL);
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        loop {
            tokio::select! {
                _ = &mut ctrl_c => return Ok::<(), CliError>(()),
                lines = follow.next() => show(&once(&mut runs, lines?), ctx.json),
            }
        }
    })?
}

/// The log lines without the replays of runs already logged (lines that are
/// not runs are kept, for `show` to report).
fn once(runs: &mut Runs, lines: Vec<String>) -> Vec<String> {
    lines.into_iter().filter(|l| activity::parse(l).is_none_or(|a| runs.is_new(&a))).collect()
}

/// Prints log lines: as they are with `--json`, else readable.
fn show(lines: &[String], json: bool) {
    for l in lines {
        if json {
            println!("{l}");
        } else if let Some(a) = activity::parse(l) {
            print!("{}", render(&a));
        } else {
            eprintln!("warning: skipped a log line that is not a run: {}", line(l));
        }
    }
}

/// One run: a head line, then what it sent, its notes, warnings, error and
/// (when it could not be used) the raw reply.
fn render(a: &Activity) -> String {
    let mut s = format!(
        "turn {} {} {} model {} read {} sent {} cost {:.4}{}\n",
        a.turn,
        a.at.format("%Y-%m-%d %H:%M:%S"),
        line(&a.outcome),
        line(&a.model),
        a.mail_read.len(),
        a.sent.len(),
        a.cost,
        if a.replay { " (applied after a crash, from the journaled reply)" } else { "" }
    );
    if !a.sent.is_empty() {
        let _ = writeln!(s, "  sent: {}", line(&a.sent.join(", ")));
    }
    if !a.notes.is_empty() {
        let _ = writeln!(s, "  notes: {}", indent(&a.notes));
    }
    for w in &a.warnings {
        let _ = writeln!(s, "  warning: {}", indent(w));
    }
    if let Some(e) = &a.error {
        let _ = writeln!(s, "  error: {}", indent(e));
    }
    if let Some(raw) = &a.raw {
        s.push_str("  raw reply:\n");
        for l in text(raw).lines() {
            let _ = writeln!(s, "    | {l}");
        }
    }
    s
}

/// Continuation lines of a multi-line text, indented under its label, with
/// its control characters escaped (notes, warnings and errors quote models).
fn indent(t: &str) -> String {
    text(t.trim_end()).replace('\n', "\n    ")
}
