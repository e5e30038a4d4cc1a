//! `lemming models`: the model keys of `org/models.toml`, their providers and prices.

use lemming_engine::term::line;
use lemming_engine::views;

use crate::ctx::{CliError, Ctx};
use crate::render::{print_json, Align, Table};

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(ctx: &Ctx, _args: Args) -> Result<(), CliError> {
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
