//! `lemming logs NAME [-f]`: an agent's activity log, one entry per run.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::time::Duration;

use lemming_engine::activity::Activity;
use lemming_engine::term::{line, text};
use lemming_engine::views::{LogsFollow, LogsView};

use crate::ctx::{block_on, CliError, Ctx};
use crate::render::word;

/// How often `--follow` looks for new runs when no change of the log's folder is seen.
const POLL: Duration = Duration::from_millis(200);

#[derive(Debug, clap::Args)]
#[command(after_help = "Each run is logged in agents/NAME/logs/activity.jsonl. \
    The daemon's own log (JSON lines, rotated daily) is in org/state/logs/.")]
pub struct Args {
    /// The agent
    pub name: String,
    /// Show the last N runs
    #[arg(short = 'n', long = "runs", default_value_t = 20, value_name = "N", value_parser = crate::ctx::at_least_one)]
    pub n: u64,
    /// Keep printing new runs as they are logged, until Ctrl-C
    #[arg(short, long)]
    pub follow: bool,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<(), CliError> {
    let org = ctx.load_lenient()?;
    let mut follow = LogsFollow::start(&org, &args.name)?;
    let first = follow.read_new()?.last(usize::try_from(args.n).unwrap_or(usize::MAX));
    show(&first, ctx.json)?;
    if !args.follow {
        if first.runs.is_empty() && !ctx.json {
            eprintln!("No runs logged for {} yet.", args.name);
        }
        return Ok(());
    }
    if std::io::stderr().is_terminal() {
        eprintln!("Waiting for new runs of {}; Ctrl-C to stop.", args.name);
    }
    let mut follow = follow.follow(&org, POLL);
    block_on(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        loop {
            tokio::select! {
                _ = &mut ctrl_c => return Ok::<(), CliError>(()),
                fresh = follow.next() => {
                    for v in fresh? {
                        show(&v, ctx.json)?;
                    }
                }
            }
        }
    })?
}

/// Prints runs: one JSON object per line with `--json`, else readable; lines
/// of the log that are not runs are named on stderr.
fn show(v: &LogsView, json: bool) -> Result<(), CliError> {
    for a in &v.runs {
        if json {
            println!("{}", serde_json::to_string(a).map_err(|e| CliError::user(e.to_string()))?);
        } else {
            print!("{}", render(a));
        }
    }
    for l in &v.not_runs {
        eprintln!("warning: skipped a log line that is not a run: {}", line(l));
    }
    Ok(())
}

/// One run: a head line, then what it sent, its notes, warnings, error and
/// (when it could not be used) the raw reply.
fn render(a: &Activity) -> String {
    let mut s = format!(
        "turn {} {} {} model {} read {} sent {} cost {:.4}{}\n",
        a.turn,
        a.at.format("%Y-%m-%d %H:%M:%S"),
        word(&a.outcome),
        line(&a.model),
        a.mail_read.len(),
        a.sent.len(),
        a.cost,
        if a.replay { " (applied after a crash, from the journaled reply)" } else { "" }
    );
    if !a.sent.is_empty() {
        let _ = writeln!(s, "  sent: {}", line(&a.sent.join(", ")));
    }
    for t in &a.tools {
        let how = if t.ok { "ok".to_string() } else { format!("failed: {}", indent(t.error.as_deref().unwrap_or(""))) };
        let _ = writeln!(s, "  tool {} (call {}) in {} ms: {how}", line(&t.tool), line(&t.call), t.ms);
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
