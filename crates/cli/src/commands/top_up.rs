//! `lemming top-up NAME AMOUNT`: add credits to an agent (a ledger entry).

use lemming_engine::journal::Journal;
use lemming_engine::ledger::{self, Ledger};

use crate::ctx::{CliError, Ctx};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The agent
    pub name: String,
    /// Credits to add (at least 0.0001, the precision credits are shown with; an agent may hold at most 1000000000000)
    #[arg(value_name = "AMOUNT")]
    pub amount: f64,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<(), CliError> {
    let org = ctx.load()?;
    let r = org.agent(&args.name)?;
    let turn = Journal::new(&org.layout).last_turn()?;
    ledger::top_up(&org.layout, r.name.as_str(), r.credits, args.amount, turn, chrono::Utc::now())
        .map_err(|e| CliError::user(e.to_string()))?;
    let left = Ledger::load(&org.layout.ledger())?.balance(r.name.as_str(), r.credits).left;
    println!("{}: +{} credits, {left:.4} left", r.name, args.amount);
    Ok(())
}
