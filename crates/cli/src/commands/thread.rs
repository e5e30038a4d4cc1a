//! `lemming thread ID`: one conversation across every mailbox, as a tree of replies.

use lemming_engine::term;
use lemming_engine::views;

use crate::ctx::{CliError, Ctx};
use crate::render::{message, print_json, MessageLayout};

#[derive(Debug, clap::Args)]
#[command(after_help = "Reads every agent's inbox (unread, read and archived mail), every outbox's \
    sent mail and the dead letters, and marks nothing read. Replies are indented under the message \
    they answer, siblings oldest first. A message is marked ● while a recipient has not read it \
    yet, [archived] once every copy is archived, and [dead] when a copy is a dead letter.\n\n\
    With --json: {\"thread\": ID, \"messages\": [...], \"unreadable\": [...]}, the messages in the \
    order shown, each with the message's fields and `depth` (0 for a message that answers none of \
    the thread), `parent` (the id it answers, or null), `unread_by`, and `places` (each \
    {\"agent\": NAME, \"state\": \"unread\"|\"read\"|\"archived\"|\"sent\"}, or {\"state\": \"dead\"}).")]
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
    let mut out = String::new();
    for m in &v.messages {
        let indent = "    ".repeat(m.depth);
        let layout = MessageLayout::Full { unread: !m.unread_by.is_empty(), archived: m.archived() };
        let mut shown = message(&m.message, layout);
        if m.places.iter().any(|p| p.state == lemming_engine::mailbox::State::Dead) {
            // The head line ends at the first newline: tag it there.
            if let Some(i) = shown.find('\n') {
                shown.insert_str(i, " [dead]");
            }
        }
        for line in shown.lines() {
            if line.is_empty() {
                out.push('\n');
            } else {
                out.push_str(&indent);
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    print!("{out}");
    Ok(())
}
