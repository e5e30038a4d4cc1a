//! `lemming inspect NAME`: one agent in detail.

use lemming_engine::ledger::Ledger;
use lemming_engine::term::{line, text};
use lemming_engine::{activity, memory};

use crate::cli::{print_json, word, CliError, Ctx};

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
    let mb = lemming_engine::org::Layout::new(root).mail();
    let chart = org.chart();
    // A state file that cannot be read is named below, and the rest is still shown.
    let mut unreadable: Vec<String> = Vec::new();
    let mut or = |e: lemming_engine::error::PathError, shown: &str| unreadable.push(format!("{e}; {shown}"));
    let ledger = Ledger::load(&org.layout.ledger()).unwrap_or_else(|e| {
        or(e, "credits are shown as if nothing was spent");
        Ledger::default()
    });
    let bal = ledger.balance(name, r.credits);
    let last = activity::try_last(root, name).unwrap_or_else(|e| {
        or(e, "the last run is not shown");
        None
    });
    let attempts = mb.try_attempts(name).unwrap_or_else(|e| {
        or(e, "failed attempts are not shown");
        Default::default()
    });
    let unread = mb.unread_count(name).unwrap_or_else(|e| {
        or(e, "unread mail is shown as 0");
        0
    });
    let pending = mb.pending_count(name).unwrap_or_else(|e| {
        or(e, "pending mail is shown as 0");
        0
    });
    let (mem, bad_memory) = memory::all_checked(&memory::dir(root, name));
    unreadable.extend(bad_memory.iter().map(|e| format!("{e}; this memory key is not shown")));
    let by_model = ledger.spent_by_model(name);
    let problems = org.problems_of(&[name]);
    let trouble = lemming_engine::trouble::read_agents(&org.layout).remove(name);
    if ctx.json {
        return print_json(&serde_json::json!({
            "name": name, "title": r.title, "description": r.description, "model": r.model,
            "schedule": {"every": r.schedule.every, "offset": r.schedule.offset, "wake": r.schedule.wake},
            "send_to": r.send_to.display(), "read_from": r.read_from.display(),
            "can_reach": chart.reachable(name), "reached_by": chart.senders(name),
            "credits": bal, "spent_by_model": by_model.iter().map(|(m, c)| serde_json::json!({"model": m, "spent": c})).collect::<Vec<_>>(),
            "unread": unread, "pending": pending,
            "failed_attempts": attempts,
            "trouble": trouble,
            "memory": mem.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<serde_json::Map<_, _>>(),
            "last_run": last,
            "problems": problems,
            "last_good": org.last_good.iter().filter(|f| problems.iter().any(|p| p.path == root.join(f))).collect::<Vec<_>>(),
            "unreadable": unreadable,
        }));
    }
    crate::commands::send::warn_problems(&org, &[name]);
    println!("{name} — {}\n{}\n", line(&r.title), text(&r.description));
    println!("model:      {}", line(r.model.as_deref().unwrap_or("- (driven by people)")));
    println!("schedule:   every {} offset {} wake {}", r.schedule.every, r.schedule.offset, word(&r.schedule.wake));
    println!("send_to:    {}", r.send_to.display());
    println!("read_from:  {}", r.read_from.display());
    println!("can reach:  {}", chart.reachable(name).join(", "));
    println!("reached by: {}", chart.senders(name).join(", "));
    if r.name.is_human() {
        println!("credits:    - (people are never charged)");
    } else {
        println!("credits:    {:.4} left of {:.4} (spent {:.4})", bal.left, bal.budget, bal.spent);
    }
    for (m, c) in &by_model {
        println!("  spent on {}: {c:.4}", line(m));
    }
    println!("mail:       {unread} unread, {pending} pending in outbox");
    if let Some(t) = &trouble {
        println!("trouble:    {} since turn {}: {}", t.state, t.since_turn, text(&t.error));
    }
    for (id, a) in &attempts {
        println!("  failing:  {}: {} attempt(s), last error: {}", line(id), a.count, line(&a.last_error));
    }
    println!("memory:     {} key(s)", mem.len());
    for (k, v) in &mem {
        let s = v.to_string();
        println!("  {}: {}", line(k), line(&s.chars().take(100).collect::<String>()));
    }
    match last {
        Some(a) => println!(
            "last run:   turn {} ({}), cost {:.4}, read {}, sent {}",
            a.turn,
            line(&a.outcome),
            a.cost,
            a.mail_read.len(),
            a.sent.len()
        ),
        None => println!("last run:   never"),
    }
    for u in &unreadable {
        println!("cannot read: {}", line(u));
    }
    Ok(())
}
