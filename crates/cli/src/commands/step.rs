//! `lemming step [-n N]`: run N turns now.

use lemming_engine::daemon;
use lemming_engine::term::{line, text};

use crate::ctx::{block_on, CliError, Ctx};
use crate::render::print_json;

#[derive(Debug, clap::Args)]
#[command(after_help = crate::ctx::LOCKED_HELP)]
pub struct Args {
    /// How many turns to run (1 or more)
    #[arg(short = 'n', long = "turns", default_value_t = 1, value_name = "N", value_parser = crate::ctx::at_least_one)]
    pub n: u64,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<(), CliError> {
    let root = ctx.root()?;
    let json = ctx.json;
    let reports = block_on(daemon::step(&root, args.n, |r, org| {
        if !json {
            for p in &org.stale {
                eprintln!(
                    "warning: invalid; its last good version is used until it is fixed: {}",
                    text(&p.to_string())
                );
            }
            for p in org.broken.values().flatten() {
                eprintln!("warning: agent held until its resume is fixed: {}", text(&p.to_string()));
            }
            println!("{}", summary(r));
        }
    }))??;
    if json {
        print_json(&reports)?;
    }
    Ok(())
}

fn summary(r: &lemming_engine::turn::TurnReport) -> String {
    let mut s = format!(
        "turn {}: ran {}, delivered {}, failed {}, dead {}, cost {:.4}",
        r.turn,
        r.ran.len(),
        r.delivered,
        r.failed.len(),
        r.dead,
        r.cost
    );
    if !r.ran.is_empty() {
        s.push_str(&format!("\n  ran: {}", r.ran.join(", ")));
    }
    if !r.replayed.is_empty() {
        s.push_str(&format!("\n  replayed from the journal: {}", r.replayed.join(", ")));
    }
    for (a, e) in &r.failed {
        s.push_str(&format!("\n  failed: {a}: {}", line(e)));
    }
    for (a, why) in &r.skipped {
        s.push_str(&format!("\n  skipped: {a} ({})", why));
    }
    if r.archived > 0 {
        s.push_str(&format!("\n  archived: {} read message(s) moved to inbox/archive", r.archived));
    }
    if r.held > 0 {
        s.push_str(&format!("\n  held: {} message(s) wait for an invalid resume to be fixed", r.held));
    }
    s
}
