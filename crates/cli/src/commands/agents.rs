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
    let mut table = Table::new(&[
        ("AGENT", Align::Left, 16),
        ("TITLE", Align::Left, 12),
        ("MODEL", Align::Left, 10),
        ("CREDITS", Align::Right, 10),
        ("GROUPS", Align::Left, 14),
        ("SENDS TO", Align::Left, 0),
    ]);
    for a in &v.agents {
        // People are never charged: their credits are no number.
        let credits =
            if a.name == lemming_engine::name::HUMAN { "-".to_string() } else { format!("{:.4}", a.credits_left) };
        table.row(vec![
            a.name.clone(),
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
    }
    for name in &v.invalid {
        table.note(line(name).into_owned(), "(invalid resume: run `lemming validate`)".into());
    }
    print!("{}", table.render());
    Ok(())
}
