//! `lemming models`: the model keys of `org/models.toml`, their providers and
//! prices; `--remote`, what each HTTP provider's server serves; `models use`,
//! switching agents to another model key by editing their resumes in place.

use std::time::Duration;

use lemming_engine::edit::{self, EditResumeError};
use lemming_engine::events::Problem;
use lemming_engine::name::HUMAN;
use lemming_engine::org::{agent_folders, Org};
use lemming_engine::term::line;
use lemming_engine::views;
use lemming_provider::remote::{self, Listing};
use serde::Serialize;

use crate::ctx::{block_on, CliError, Ctx};
use crate::render::{print_json, Align, Table};

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Sub>,
    /// Ask each HTTP provider's server which models it serves, and which keys use them
    #[arg(long)]
    pub remote: bool,
    /// With --remote: the time allowed per provider, in milliseconds
    #[arg(long, default_value_t = 2000, value_name = "MS", requires = "remote")]
    pub deadline_ms: u64,
}

#[derive(Debug, clap::Subcommand)]
pub enum Sub {
    /// Switch agents to a model key: sets `model` in their resume.toml, keeping the rest as written
    ///
    /// Edits agents/NAME/resume.toml in place: only the `model` value changes
    /// (or is added); comments, key order and layout are kept. Every edited
    /// resume is checked as `lemming validate` would check it before anything
    /// is written; with --all, if one is refused none is written. A key that
    /// is not in org/models.toml is refused. A running daemon picks the change
    /// up on its next turn.
    Use(UseArgs),
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("who").required(true).args(["agent", "all"])))]
pub struct UseArgs {
    /// The model key (a [models.KEY] table of org/models.toml)
    pub key: String,
    /// The agent to switch (repeat for several)
    #[arg(long, value_name = "NAME")]
    pub agent: Vec<String>,
    /// Switch every agent that is not a person (`human`)
    #[arg(long)]
    pub all: bool,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<(), CliError> {
    match args.command {
        Some(Sub::Use(u)) => use_key(ctx, u),
        None if args.remote => remote_list(ctx, Duration::from_millis(args.deadline_ms)),
        None => table(ctx),
    }
}

fn table(ctx: &Ctx) -> Result<(), CliError> {
    let org = ctx.load()?;
    let v = views::models(&org);
    if ctx.json {
        return print_json(&v.models);
    }
    let mut table = Table::new(&[
        ("KEY", Align::Left, 14),
        ("PROVIDER", Align::Left, 12),
        ("KIND", Align::Left, 10),
        ("MODEL", Align::Left, 22),
        ("PRICE", Align::Left, 34),
        ("STRUCTURED", Align::Left, 12),
        ("FALLBACK", Align::Left, 12),
        ("USED BY", Align::Left, 0),
    ]);
    for m in &v.models {
        table.row(vec![
            line(&m.key).into_owned(),
            line(&m.provider).into_owned(),
            m.kind.to_string(),
            line(&m.model).into_owned(),
            m.price.to_string(),
            m.structured.to_string(),
            line(m.fallback.as_deref().unwrap_or("-")).into_owned(),
            m.used_by.join(", "),
        ]);
    }
    print!("{}", table.render());
    Ok(())
}

/// One model a server serves, and the keys that send its id.
#[derive(Debug, Serialize)]
struct Served {
    id: String,
    used_by: Vec<String>,
}

/// A provider's listing with the keys that use each id.
#[derive(Debug, Serialize)]
struct RemoteRow {
    provider: String,
    kind: String,
    url: String,
    ok: bool,
    error: Option<String>,
    truncated: bool,
    elapsed_ms: u64,
    models: Vec<Served>,
    /// Keys of this provider whose model the server does not list.
    not_served: Vec<String>,
}

fn remote_list(ctx: &Ctx, deadline: Duration) -> Result<(), CliError> {
    let org = ctx.load()?;
    let registry = org.registry();
    let listings: Vec<Listing> = block_on(remote::list_all(&registry, deadline))?;
    let keys_of = |provider: &str, id: &str| -> Vec<String> {
        let m = org.models.models.values();
        m.filter(|m| m.provider == provider && m.wire_name() == id).map(|m| m.key.clone()).collect()
    };
    let rows: Vec<RemoteRow> = listings
        .into_iter()
        .map(|l| {
            let models: Vec<Served> =
                l.models.iter().map(|id| Served { id: id.clone(), used_by: keys_of(&l.provider, id) }).collect();
            let not_served = if l.error.is_some() || l.truncated {
                vec![]
            } else {
                let m = org.models.models.values();
                m.filter(|m| m.provider == l.provider && !l.models.iter().any(|id| id == m.wire_name()))
                    .map(|m| m.key.clone())
                    .collect()
            };
            RemoteRow {
                ok: l.error.is_none(),
                provider: l.provider,
                kind: l.kind,
                url: l.url,
                error: l.error,
                truncated: l.truncated,
                elapsed_ms: l.elapsed_ms,
                models,
                not_served,
            }
        })
        .collect();
    if ctx.json {
        return print_json(&rows);
    }
    if rows.is_empty() {
        println!("no HTTP provider in org/models.toml (only those of kind openai or anthropic serve a list)");
        return Ok(());
    }
    let mut table =
        Table::new(&[("PROVIDER", Align::Left, 12), ("MODEL", Align::Left, 40), ("USED BY", Align::Left, 0)]);
    for r in rows.iter().filter(|r| r.ok) {
        for m in &r.models {
            table.row(vec![line(&r.provider).into_owned(), line(&m.id).into_owned(), m.used_by.join(", ")]);
        }
    }
    print!("{}", table.render());
    for r in &rows {
        // Errors quote what servers answered: shown escaped.
        match &r.error {
            Some(e) => println!("{}: not listed: {}", line(&r.provider), line(e)),
            None if r.models.is_empty() => {
                println!("{}: the server lists no model ({})", line(&r.provider), line(&r.url))
            }
            None => {}
        }
        if r.truncated {
            println!("{}: the list is cut at {} models", line(&r.provider), r.models.len());
        }
        for k in &r.not_served {
            println!("{}: model key `{}` names a model the server does not list", line(&r.provider), line(k));
        }
    }
    Ok(())
}

/// One agent switched (or that already used the key).
#[derive(Debug, Serialize)]
struct Switch {
    agent: String,
    from: Option<String>,
    to: String,
    changed: bool,
}

fn use_key(ctx: &Ctx, args: UseArgs) -> Result<(), CliError> {
    let org = ctx.load()?;
    let key = args.key.as_str();
    if !org.models.models.contains_key(key) {
        let keys = org.models.models.keys().map(String::as_str);
        let near = lemming_engine::suggest::hint(lemming_engine::suggest::Kind::ModelKey, key, keys).brief();
        return Err(CliError::user(format!(
            "unknown model key `{key}` (closest: {near}); nothing was changed\n  help: use a key of org/models.toml \
             (`lemming models` lists them), or add a [models.{key}] table there"
        )));
    }
    let mut agents: Vec<String> = Vec::new();
    for a in if args.all { every_model_driven(&org) } else { args.agent.clone() } {
        if !agents.contains(&a) {
            agents.push(a);
        }
    }
    if agents.is_empty() {
        return Err(CliError::user("no agent to switch: every agent folder is a person's"));
    }
    // Every new text is judged before any is written.
    let mut plans = Vec::new();
    let mut refused = Vec::new();
    for agent in &agents {
        let text = edit::read_resume(&org, agent).map_err(|e| edit_error(agent, e))?;
        let (new, from) = edit::with_model(&text, key)
            .map_err(|e| CliError::user(format!("agents/{agent}/resume.toml is not TOML: {e}; nothing was changed")))?;
        if new == text {
            plans.push((Switch { agent: agent.clone(), from, to: key.into(), changed: false }, new));
            continue;
        }
        match org.check_resume(agent, new.clone().into_bytes()) {
            Ok(_) => plans.push((Switch { agent: agent.clone(), from, to: key.into(), changed: true }, new)),
            Err(d) => refused.extend(d.iter().map(|d| Problem::of(d, &org.layout.root))),
        }
    }
    if !refused.is_empty() {
        return Err(CliError::user(format!(
            "{}\nnothing was changed\n  help: fix the resume(s) above{}",
            problems(&refused),
            if args.all { ", or switch the others with --agent NAME" } else { "" }
        )));
    }
    let now = chrono::Utc::now();
    let mut done = Vec::new();
    for (s, new) in plans {
        if s.changed {
            edit::write_resume(&org, &s.agent, new.into_bytes(), now).map_err(|e| edit_error(&s.agent, e))?;
        }
        done.push(s);
    }
    if ctx.json {
        return print_json(&serde_json::json!({ "key": key, "agents": done }));
    }
    for s in &done {
        let from = s.from.as_deref().unwrap_or("(none)");
        if s.changed {
            println!("{}: {} -> {}", line(&s.agent), line(from), line(&s.to));
        } else {
            println!("{}: {} (already)", line(&s.agent), line(&s.to));
        }
    }
    Ok(())
}

/// Every agent folder but the people's: `human`, and any agent whose valid
/// resume names no model (only a person's may).
fn every_model_driven(org: &Org) -> Vec<String> {
    agent_folders(&org.layout)
        .into_iter()
        .filter(|a| a != HUMAN)
        .filter(|a| org.agents.get(a.as_str()).is_none_or(|r| r.model.is_some()))
        .collect()
}

fn problems(ps: &[Problem]) -> String {
    ps.iter()
        .map(|p| {
            let at = match (p.line, p.column) {
                (Some(l), Some(c)) => format!(":{l}:{c}"),
                (Some(l), None) => format!(":{l}"),
                _ => String::new(),
            };
            let help = p.help.as_deref().map(|h| format!("\n  help: {h}")).unwrap_or_default();
            format!("{}{at}: {}{help}", p.file, p.message)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn edit_error(agent: &str, e: EditResumeError) -> CliError {
    match e {
        EditResumeError::Invalid(p) | EditResumeError::Unreadable(p) => {
            CliError::user(format!("{}\nagents/{agent}/resume.toml was not changed", problems(&p)))
        }
        other => CliError::user(other.to_string()),
    }
}
