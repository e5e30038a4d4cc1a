//! `lemming agents`: list the agents.

use lemming_engine::term::line;
use lemming_engine::views;

use crate::ctx::{CliError, Ctx};
use crate::render::{print_json, Align, Table};

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(ctx: &Ctx, _args: Args) -> Result<(), CliError> {
    let org = ctx.load_lenient()?;
    let v = views::agents(&org)?;
    if ctx.json {
        return print_json(&v.agents);
    }
    // Where each agent runs, once the org spans machines.
    let nodes = org.settings.cluster.is_some();
    let mut columns = vec![("AGENT", Align::Left, 16)];
    if nodes {
        columns.push(("NODE", Align::Left, 8));
    }
    columns.extend([
        ("TITLE", Align::Left, 12),
        ("MODEL", Align::Left, 10),
        ("CREDITS", Align::Right, 10),
        ("GROUPS", Align::Left, 14),
        ("SENDS TO", Align::Left, 0),
    ]);
    let mut table = Table::new(&columns);
    for a in &v.agents {
        // People are never charged: their credits are no number.
        let credits =
            if a.name == lemming_engine::name::HUMAN { "-".to_string() } else { format!("{:.4}", a.credits_left) };
        let mut row = vec![a.name.clone()];
        if nodes {
            row.push(a.node.clone().unwrap_or_default());
        }
        row.extend([
            line(&a.title).into_owned(),
            line(a.model.as_deref().unwrap_or("-")).into_owned(),
            credits,
            if a.groups.is_empty() {
                "-".to_string()
            } else {
                a.groups.iter().map(|g| format!("@{g}")).collect::<Vec<_>>().join(", ")
            },
            a.sends_to.join(", "),
        ]);
        table.row(row);
    }
    for name in &v.invalid {
        table.note(line(name).into_owned(), "(invalid resume: run `lemming validate`)".into());
    }
    print!("{}", table.render());
    Ok(())
}
