//! `lemming inspect NAME`: one agent in detail.

use lemming_engine::term::{line, text};
use lemming_engine::views;

use crate::ctx::{CliError, Ctx};
use crate::render::{print_json, word};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The agent
    pub name: String,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<(), CliError> {
    let org = ctx.load_lenient()?;
    let v = views::inspect(&org, &args.name)?;
    if ctx.json {
        return print_json(&v);
    }
    crate::commands::send::warn_problems(&org, &[&v.name]);
    println!("{} — {}\n{}\n", v.name, line(&v.title), text(&v.description));
    println!("model:      {}", line(v.model.as_deref().unwrap_or("- (driven by people)")));
    println!("schedule:   every {} offset {} wake {}", v.schedule.every, v.schedule.offset, word(&v.schedule.wake));
    println!("send_to:    {}", v.send_to);
    println!("read_from:  {}", v.read_from);
    if !v.groups.is_empty() {
        println!("groups:     {}", v.groups.iter().map(|g| format!("@{g}")).collect::<Vec<_>>().join(", "));
    }
    println!("can reach:  {}", v.can_reach.join(", "));
    println!("reached by: {}", v.reached_by.join(", "));
    let t = &v.tools;
    if t.granted.is_empty() {
        println!("tools:      none");
    } else {
        println!("tools:      {}", line(&t.granted.join(", ")));
    }
    if !t.commands.is_empty() {
        println!("commands:   {}", line(&t.commands.join(", ")));
    }
    if t.shared != lemming_engine::resume::Shared::None {
        println!("shared/:    {}", word(&t.shared));
    }
    if v.name == lemming_engine::name::HUMAN {
        println!("credits:    - (people are never charged)");
    } else {
        println!("credits:    {:.4} left of {:.4} (spent {:.4})", v.credits.left, v.credits.budget, v.credits.spent);
    }
    for m in &v.spent_by_model {
        println!("  spent on {}: {:.4}", line(&m.model), m.spent);
    }
    println!("mail:       {} unread, {} pending in outbox", v.unread, v.pending);
    if let Some(t) = &v.trouble {
        println!("trouble:    {} since turn {}: {}", t.state, t.since_turn, text(&t.error));
    }
    for (id, a) in &v.failed_attempts {
        println!("  failing:  {}: {} attempt(s), last error: {}", line(id), a.count, line(&a.last_error));
    }
    println!("memory:     {} key(s)", v.memory.len());
    for (k, value) in &v.memory {
        let s = value.to_string();
        println!("  {}: {}", line(k), line(&s.chars().take(100).collect::<String>()));
    }
    match &v.last_run {
        Some(a) => println!(
            "last run:   turn {} ({}), cost {:.4}, read {}, sent {}",
            a.turn,
            word(&a.outcome),
            a.cost,
            a.mail_read.len(),
            a.sent.len()
        ),
        None => println!("last run:   never"),
    }
    for u in &v.unreadable {
        println!("cannot read: {}", line(u));
    }
    Ok(())
}
