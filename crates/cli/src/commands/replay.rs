//! `lemming replay TURN`: a committed turn derived again from its journal and compared with the files.

use lemming_engine::journal::Outcome;
use lemming_engine::replay::{self, Replay};
use lemming_engine::term::text;

use crate::ctx::{CliError, Ctx};
use crate::render::print_json;

#[derive(Debug, clap::Args)]
#[command(after_help = "Each journaled reply is parsed and planned again (message ids from the turn's \
    recorded start, recipients, bodies, priorities, threads, tool results, memory, the charge), \
    without calling a model, and compared with the ledger, the outboxes and the inboxes. Nothing \
    is written, not even the lock: it may run beside a daemon. The journal keeps the last \
    journal_keep_turns turns (org/org.toml).\n\n\
    Exit codes: 0 everything matches; 1 a difference (each is printed, naming the file and the \
    field), a turn not committed yet, or a journal no longer kept; 2 a usage error.")]
pub struct Args {
    /// The committed turn to replay
    #[arg(value_name = "TURN")]
    pub turn: u64,
    /// Replay only this agent's reply
    #[arg(long, value_name = "NAME")]
    pub agent: Option<String>,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<(), CliError> {
    let org = ctx.load_lenient()?;
    let r = replay::replay(&org, args.turn, args.agent.as_deref()).map_err(|e| CliError::user(e.to_string()))?;
    if ctx.json {
        print_json(&r)?;
    } else {
        print!("{}", summary(&r));
    }
    if r.matches() {
        return Ok(());
    }
    let n = r.differences().count();
    Err(CliError::user(format!("turn {} differs from its journal in {n} place(s)", r.turn)))
}

fn summary(r: &Replay) -> String {
    let mut s = String::new();
    if r.agents.is_empty() {
        s.push_str(&format!("turn {}: no agent ran\n", r.turn));
    }
    for a in &r.agents {
        let verdict = if a.differences.is_empty() { "matches" } else { "DIFFERS" };
        s.push_str(&format!(
            "turn {} {}: {verdict} ({}, model {}, cost {:.4}; {} message(s), {} tool result(s), {} memory key(s), {} mail read)\n",
            r.turn,
            text(&a.agent),
            if a.outcome == Outcome::Ok { "used" } else { "failed" },
            text(&a.model),
            a.cost,
            a.messages.len(),
            a.tool_results.len(),
            a.memory.len(),
            a.mail.len()
        ));
        for d in &a.differences {
            s.push_str(&format!("  {}\n", text(&d.to_string())));
        }
    }
    for d in &r.other {
        s.push_str(&format!("  {}\n", text(&d.to_string())));
    }
    s
}
