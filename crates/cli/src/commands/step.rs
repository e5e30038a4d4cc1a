//! `lemming step [-n N]`: run N turns now.

use lemming_engine::daemon;
use lemming_engine::preview::{self, Action};
use lemming_engine::term::{line, text};

use crate::ctx::{block_on_stopping_servers, CliError, Ctx};
use crate::render::print_json;

#[derive(Debug, clap::Args)]
#[command(after_help = crate::ctx::LOCKED_HELP)]
pub struct Args {
    /// How many turns to run (1 or more)
    #[arg(short = 'n', long = "turns", default_value_t = 1, value_name = "N", value_parser = crate::ctx::at_least_one)]
    pub n: u64,
    /// Show what the next turn would do, and write nothing: what routing would
    /// do with each outbox entry, which agents would run (and why the others
    /// would not), and each one's full prompt. It calls no model, takes no lock,
    /// and may run beside a daemon; --json gives it all as data
    #[arg(long, conflicts_with = "n")]
    pub dry_run: bool,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<(), CliError> {
    if args.dry_run {
        return dry_run(ctx);
    }
    let root = ctx.root()?;
    let json = ctx.json;
    // A bar over the turns, on a terminal only; each turn's summary prints above it.
    let bar = crate::progress::bar(json, args.n, "{spinner} {pos}/{len} turns [{bar:30}] {msg} ({elapsed})");
    if let Some(bar) = &bar {
        bar.set_message("running the first turn");
        bar.enable_steady_tick(std::time::Duration::from_millis(100));
    }
    let reports = block_on_stopping_servers(daemon::step_with(&root, args.n, &ctx.sources(), |r, org| {
        if let Some(bar) = &bar {
            bar.inc(1);
            bar.set_message(format!(
                "last: turn {}: ran {}, delivered {}, failed {}",
                r.turn,
                r.ran.len(),
                r.delivered,
                r.failed.len()
            ));
        }
        let print = || {
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
        };
        match &bar {
            Some(bar) => bar.suspend(print),
            None if !json => print(),
            None => {}
        }
    }));
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let reports = reports??;
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
        s.push_str(&format!(
            "\n  held: {} message(s) wait in their outbox: a recipient's resume is invalid or its files cannot \
             be used, or its node cannot be reached now",
            r.held
        ));
    }
    s
}

/// `--dry-run`: the next turn, as [`preview::preview`] sees it.
fn dry_run(ctx: &Ctx) -> Result<(), CliError> {
    let org = lemming_engine::org::Org::load(&ctx.root()?)?;
    let p = preview::preview(&org)?;
    if ctx.json {
        return print_json(&p);
    }
    println!("turn {} (dry run: nothing is written)", p.turn);
    println!("routing:");
    if p.routes.is_empty() {
        println!("  no outbox holds mail");
    }
    for r in &p.routes {
        let what = r.id.as_deref().map_or_else(|| r.file.clone(), str::to_string);
        let mut parts = Vec::new();
        if !r.delivered.is_empty() {
            parts.push(format!("delivered to {}", r.delivered.join(", ")));
        }
        if !r.remote.is_empty() {
            parts.push(format!("handed over for {}", r.remote.join(", ")));
        }
        for x in &r.refused {
            let whom = x.to.as_deref().map_or_else(|| "refused".to_string(), |to| format!("refused for {to}"));
            parts.push(format!("{whom} ({}): {}", x.code, x.detail));
        }
        if let Some(h) = &r.held {
            parts.push(format!("held: {h}"));
        }
        println!("  {} {}: {}", text(&r.from), text(&what), text(&parts.join("; ")));
    }
    println!("agents:");
    for a in &p.agents {
        match &a.action {
            Action::Run { model, mail, .. } => {
                println!("  {}: runs (model {}, {} message(s) in its prompt)", text(&a.agent), text(model), mail.len())
            }
            Action::Skip { reason, detail } => println!("  {}: skipped ({reason}): {}", text(&a.agent), line(detail)),
            Action::Idle { why } => println!("  {}: not run: {}", text(&a.agent), line(why)),
        }
    }
    for a in &p.agents {
        if let Action::Run { system, user, .. } = &a.action {
            println!(
                "\n=== prompt of {} ===\n--- system ---\n{}\n--- user ---\n{}",
                text(&a.agent),
                text(system),
                text(user)
            );
        }
    }
    Ok(())
}
