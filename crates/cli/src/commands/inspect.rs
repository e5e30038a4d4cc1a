//! `lemming inspect NAME`: one agent in detail.

use lemming_engine::ledger::Ledger;
use lemming_engine::mailbox::Mailbox;
use lemming_engine::{activity, memory};

use crate::cli::{print_json, CliError, Ctx};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The agent
    pub name: String,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<(), CliError> {
    let org = ctx.load_lenient()?;
    let r = org.agent(&args.name)?;
    let name = r.name.as_str();
    let root = &org.layout.root;
    let ledger = Ledger::load(&org.layout.ledger())?;
    let mb = Mailbox::new(root);
    let chart = org.chart();
    let bal = ledger.balance(name, r.credits);
    let mem = memory::all(&memory::dir(root, name));
    let last = activity::last(root, name);
    let by_model = ledger.spent_by_model(name);
    let attempts = mb.attempts(name);
    let problems = org.problems_of(&[name]);
    if ctx.json {
        return print_json(&serde_json::json!({
            "name": name, "title": r.title, "description": r.description, "model": r.model,
            "schedule": {"every": r.schedule.every, "offset": r.schedule.offset, "wake": r.schedule.wake},
            "send_to": r.send_to.display(), "read_from": r.read_from.display(),
            "can_reach": chart.reachable(name), "reached_by": chart.senders(name),
            "credits": bal, "spent_by_model": by_model.iter().map(|(m, c)| serde_json::json!({"model": m, "spent": c})).collect::<Vec<_>>(),
            "unread": mb.unread_count(name)?, "pending": mb.pending_count(name)?,
            "failed_attempts": attempts,
            "memory": mem.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<serde_json::Map<_, _>>(),
            "last_run": last,
            "problems": problems,
            "last_good": org.last_good.iter().filter(|f| problems.iter().any(|p| p.path == root.join(f))).collect::<Vec<_>>(),
        }));
    }
    crate::commands::send::warn_problems(&org, &[name]);
    println!("{name} — {}\n{}\n", r.title, r.description);
    println!("model:      {}", r.model.as_deref().unwrap_or("- (driven by people)"));
    println!("schedule:   every {} offset {} wake {:?}", r.schedule.every, r.schedule.offset, r.schedule.wake);
    println!("send_to:    {}", r.send_to.display());
    println!("read_from:  {}", r.read_from.display());
    println!("can reach:  {}", chart.reachable(name).join(", "));
    println!("reached by: {}", chart.senders(name).join(", "));
    println!("credits:    {:.4} left of {:.4} (spent {:.4})", bal.left, bal.budget, bal.spent);
    for (m, c) in &by_model {
        println!("  spent on {m}: {c:.4}");
    }
    println!("mail:       {} unread, {} pending in outbox", mb.unread_count(name)?, mb.pending_count(name)?);
    for (id, a) in &attempts {
        println!("  failing:  {id}: {} attempt(s), last error: {}", a.count, a.last_error);
    }
    println!("memory:     {} key(s)", mem.len());
    for (k, v) in &mem {
        let s = v.to_string();
        println!("  {k}: {}", s.chars().take(100).collect::<String>());
    }
    match last {
        Some(a) => println!(
            "last run:   turn {} ({}), cost {:.4}, read {}, sent {}",
            a.turn,
            a.outcome,
            a.cost,
            a.mail_read.len(),
            a.sent.len()
        ),
        None => println!("last run:   never"),
    }
    Ok(())
}
