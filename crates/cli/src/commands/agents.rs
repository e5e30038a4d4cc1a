//! `lemming agents`: list the agents.

use lemming_engine::ledger::Ledger;
use lemming_engine::term::line;

use crate::cli::{print_json, CliError, Ctx};

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(ctx: &Ctx, _args: Args) -> Result<(), CliError> {
    let org = ctx.load_lenient()?;
    let ledger = Ledger::load(&org.layout.ledger())?;
    let chart = org.chart();
    let rows: Vec<serde_json::Value> = org
        .agents
        .values()
        .map(|r| {
            serde_json::json!({
                "name": r.name,
                "title": r.title,
                "model": r.model,
                "every": r.schedule.every,
                "wake": r.schedule.wake,
                "sends_to": chart.reachable(r.name.as_str()),
                "credits_left": ledger.balance(r.name.as_str(), r.credits).left,
            })
        })
        .collect();
    if ctx.json {
        return print_json(&rows);
    }
    println!("{:<16} {:<12} {:<10} {:>10}  SENDS TO", "AGENT", "TITLE", "MODEL", "CREDITS");
    for r in org.agents.values() {
        // People are never charged: their credits are no number.
        let credits = if r.name.is_human() {
            "-".to_string()
        } else {
            format!("{:.4}", ledger.balance(r.name.as_str(), r.credits).left)
        };
        println!(
            "{:<16} {:<12} {:<10} {:>10}  {}",
            r.name,
            line(&r.title),
            line(r.model.as_deref().unwrap_or("-")),
            credits,
            chart.reachable(r.name.as_str()).join(", ")
        );
    }
    for name in org.broken.keys() {
        println!("{:<16} (invalid resume: run `lemming validate`)", line(name));
    }
    Ok(())
}
