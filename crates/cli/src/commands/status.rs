//! `lemming status`: the turn, the daemon, each agent and the dead letters.

use lemming_engine::term;
use lemming_engine::views::{self, BreakerState};

use crate::ctx::{CliError, Ctx};
use crate::render::{print_json, Align, Table};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Every node of an org on several machines ([cluster] in org/org.toml):
    /// which process runs it, and its last turn, as the NATS server has them
    #[arg(long)]
    cluster: bool,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<(), CliError> {
    if args.cluster {
        return cluster(ctx);
    }
    // What the last status kept: only files changed since are read again.
    let layout = lemming_engine::org::Layout::new(&ctx.root()?);
    let (org, cache, s) = views::status_at(&layout)?;
    cache.save(&org.layout, &org.agents, &org.broken);
    // The process ends with this command: freeing every resume and row one
    // by one would cost a large org more than drawing the table.
    let (org, s) = (&*Box::leak(Box::new(org)), &*Box::leak(Box::new(s)));
    if ctx.json {
        return print_json(s);
    }
    let daemon = match (s.daemon.running, s.daemon.pid) {
        (true, Some(pid)) => format!("running (pid {pid}){}", if s.daemon.paused { ", paused" } else { "" }),
        _ => "not running".into(),
    };
    let tools = if s.tool_calls > 0 { format!(" ({} tool calls)", s.tool_calls) } else { String::new() };
    println!(
        "org: {}\nturn: {}{tools}\ndaemon: {daemon}\ndead letters: {}",
        term::line(&org.layout.root.display().to_string()),
        s.turn,
        s.dead_letters
    );
    if let Some(t) = &s.daemon.trouble {
        println!(
            "daemon trouble: turns fail since {} ({} in a row): {}\n  next try after a write probe at {}; {} model call(s) answered but not yet journaled (held in memory)",
            t.since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            t.failures,
            term::text(&t.error),
            t.retry_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            t.unjournaled_calls
        );
    }
    if let Some(f) = &s.filesystem {
        println!("filesystem: {}", term::text(f));
    }
    match &s.budget {
        Some(b) if b.exhausted => println!(
            "org budget: SPENT ({:.4} of {:.4}): no model is called until `budget` in org/org.toml is raised",
            b.spent, b.budget
        ),
        Some(b) => println!("org budget: {:.4} left of {:.4} (spent {:.4})", b.left, b.budget, b.spent),
        None => println!("spent: {:.4} (no org-wide budget)", s.spent),
    }
    for (model, spent) in &s.spent_by_model {
        println!("  spent on {}: {spent:.4}", term::line(model));
    }
    for b in &s.breakers {
        let provider = term::line(&b.provider);
        match b.state {
            BreakerState::Open => println!(
                "breaker OPEN: provider {provider} fails fast until {} ({} failed calls in a row; last: {})",
                b.open_until.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)).unwrap_or_default(),
                b.consecutive_failures,
                term::line(b.last_error.as_deref().unwrap_or("?"))
            ),
            BreakerState::HalfOpen => println!("breaker half-open: provider {provider}: the next call is a trial"),
            BreakerState::Closed => println!(
                "breaker closed: provider {provider}: {} of {} failures before it opens",
                b.consecutive_failures, b.threshold
            ),
        }
    }
    for m in &s.servers {
        println!("server {}: {}", term::line(&m.provider), term::text(&m.summary));
    }
    println!();
    let mut table = Table::new(&[
        ("AGENT", Align::Left, 16),
        ("MODEL", Align::Left, 10),
        ("STATE", Align::Left, 19),
        ("CREDITS", Align::Right, 10),
        ("SPENT", Align::Right, 10),
        ("UNREAD", Align::Right, 7),
        ("PENDING", Align::Right, 8),
        ("LAST RUN", Align::Right, 9),
    ]);
    for a in &s.agents {
        // People are never charged: their credits are no number, whatever their state.
        let (credits, spent) = if a.name == lemming_engine::name::HUMAN {
            ("-".to_string(), "-".to_string())
        } else {
            (format!("{:.4}", a.credits.left), format!("{:.4}", a.credits.spent))
        };
        table.row(vec![
            term::line(&a.name).into_owned(),
            term::line(a.model.as_deref().unwrap_or("-")).into_owned(),
            a.state.to_string(),
            credits,
            spent,
            a.unread.to_string(),
            a.pending.to_string(),
            a.last_run_turn.map(|t| t.to_string()).unwrap_or_else(|| "-".into()),
        ]);
    }
    print!("{}", table.render());
    for u in &s.unreadable {
        println!("\ncannot read: {}", term::text(&u.to_string()));
    }
    for a in s.agents.iter().filter(|a| a.problem.is_some()) {
        println!("\n{} is {}: {}", term::line(&a.name), a.state, term::text(a.problem.as_deref().unwrap_or_default()));
    }
    for f in &s.last_good {
        println!(
            "\n{} is invalid: the last good version (org/state/last-good/{}) is used until it is fixed",
            term::line(&f.display().to_string()),
            term::line(&f.display().to_string())
        );
    }
    for p in &s.problems {
        println!("\nproblem: {}", term::text(&p.to_string()));
    }
    Ok(())
}

/// `lemming status --cluster`.
fn cluster(ctx: &Ctx) -> Result<(), CliError> {
    let org = ctx.load_lenient()?;
    let Some(c) = &org.settings.cluster else {
        return Err(CliError {
            message: "this org is on one machine: org/org.toml has no [cluster] (see docs/cluster.md)".into(),
            code: 2,
        });
    };
    let nodes = lemming_cluster::cluster_status(c).map_err(CliError::user)?;
    if ctx.json {
        return print_json(&serde_json::json!({"nats_url": c.nats_url, "link": "connected", "nodes": nodes}));
    }
    println!("nats: {} (connected)", term::line(&c.nats_url));
    let mut table = Table::new(&[
        ("NODE", Align::Left, 12),
        ("PROCESS", Align::Left, 28),
        ("TURN", Align::Right, 6),
        ("AT", Align::Left, 24),
        ("RAN", Align::Right, 5),
        ("DELIVERED", Align::Right, 9),
        ("FAILED", Align::Right, 6),
        ("COST", Align::Right, 9),
    ]);
    for n in &nodes {
        let text = |v: &serde_json::Value| term::line(v.as_str().unwrap_or("?")).into_owned();
        let running = &n["running"];
        let process = if running.is_null() {
            "not running".to_string()
        } else {
            format!("pid {} on {}", running["pid"], text(&running["host"]))
        };
        let last = &n["last"];
        let num = |k: &str| if last.is_null() { "-".to_string() } else { last[k].to_string() };
        let cost = last["cost"].as_f64().map_or("-".to_string(), |c| format!("{c:.4}"));
        let at = if last.is_null() { "-".to_string() } else { text(&last["at"]) };
        table.row(vec![text(&n["node"]), process, num("turn"), at, num("ran"), num("delivered"), num("failed"), cost]);
    }
    print!("{}", table.render());
    Ok(())
}
