//! `lemming thread ID`: one conversation across every inbox, as a tree of replies.

use lemming_engine::term;
use lemming_engine::views;

use crate::ctx::{CliError, Ctx};
use crate::render::{message, print_json, MessageLayout};

#[derive(Debug, clap::Args)]
#[command(after_help = "Reads every agent's inbox, read mail and unread, and marks nothing read. \
    A message is marked ● while a recipient has not read it yet; replies are indented under \
    the message they answer.")]
pub struct Args {
    /// A thread id, or the id of any message in it
    pub id: String,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<(), CliError> {
    let org = ctx.load_lenient()?;
    let v = views::thread(&org, &args.id)?;
    for u in &v.unreadable {
        eprintln!("warning: cannot read {}; it is not shown", term::line(&u.to_string()));
    }
    if ctx.json {
        return print_json(&v);
    }
    for m in &v.messages {
        let indent = "    ".repeat(m.depth);
        let shown = message(&m.message, MessageLayout::Full { unread: !m.unread_by.is_empty() });
        for line in shown.lines() {
            if line.is_empty() {
                println!();
            } else {
                println!("{indent}{line}");
            }
        }
    }
    Ok(())
}
