//! `lemming inbox [AGENT]`: show unread mail; the human's is then marked read
//! (sending the read receipts its senders asked for), and what in it is not a
//! message is moved to dead.
//! With `--follow` it then keeps printing new mail as it arrives.

use lemming_engine::clock::Sources;
use lemming_engine::follow::{self, NewMail};
use lemming_engine::mailbox::BadFile;
use lemming_engine::name::HUMAN;
use lemming_engine::org::Org;
use lemming_engine::send;
use lemming_engine::term;
use lemming_engine::views::{self, InboxMessage};

use crate::ctx::{block_on, CliError, Ctx};
use crate::render::{message, print_json, MessageLayout};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Whose inbox [default: human]. Other agents' mail is only shown, never marked read.
    pub agent: Option<String>,
    /// Show read mail too, archived mail included (tagged [archived]; `"archived": true` in --json)
    #[arg(long)]
    pub all: bool,
    /// Do not mark anything read (nor send read receipts, nor move what is not a message to dead)
    #[arg(long)]
    pub peek: bool,
    /// Then keep printing new mail as it arrives, until Ctrl-C (with --json: one object per line)
    #[arg(short, long)]
    pub follow: bool,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<(), CliError> {
    let org = ctx.load_lenient()?;
    let agent = args.agent.unwrap_or_else(|| HUMAN.to_string());
    let views::Inbox { view, bad } = views::inbox(&org, &agent, args.all)?;
    // A file or folder that cannot be read is named, and the rest is still shown.
    for u in &view.unreadable {
        eprintln!("warning: cannot read {}; it is not shown", term::line(&u.to_string()));
    }
    for n in view.not_messages.iter().filter(|n| !n.unread) {
        eprintln!(
            "warning: {} in {}'s read mail is not a message ({}); not shown",
            term::line(&n.file),
            agent,
            term::line(&n.error)
        );
    }
    let mark_read = !args.peek && agent == HUMAN;
    set_aside(&org, &agent, &bad, mark_read)?;
    if args.follow {
        for m in &view.messages {
            print_one(m, ctx.json)?;
        }
        if view.messages.is_empty() && !ctx.json {
            eprintln!("No unread mail for {agent}; waiting for new mail (Ctrl-C to stop).");
        }
    } else if ctx.json {
        print_json(&view.messages)?;
    } else if view.messages.is_empty() {
        eprintln!("No unread mail for {agent}.");
    } else {
        for m in &view.messages {
            print!("{}", message(&m.message, MessageLayout::Full { unread: m.unread, archived: m.archived }));
        }
    }
    let ids = view.unread_ids();
    if mark_read {
        let unread: Vec<_> = view.messages.iter().filter(|m| m.unread).map(|m| m.message.clone()).collect();
        send::mark_read(&org, &agent, &unread, &Sources::real())?;
    }
    if !args.follow {
        return Ok(());
    }
    block_on(async move {
        let mut new_mail = NewMail::start(&org.layout.root, &agent, follow::POLL)?;
        new_mail.mark_seen(ids);
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        loop {
            tokio::select! {
                _ = &mut ctrl_c => return Ok::<(), CliError>(()),
                fresh = new_mail.next() => {
                    let fresh = fresh?;
                    for m in fresh.iter().cloned() {
                        print_one(&InboxMessage { message: m, unread: true, archived: false }, ctx.json)?;
                    }
                    if mark_read {
                        send::mark_read(&org, &agent, &fresh, &Sources::real())?;
                    }
                }
            }
        }
    })?
}

/// Warns about entries of the inbox that are not messages. When the inbox is
/// the human's and is being read (`mark_read`), they are moved to dead now (no
/// turn reads the human's inbox); otherwise the warning says who moves them.
fn set_aside(org: &Org, agent: &str, bad: &[BadFile], mark_read: bool) -> Result<(), CliError> {
    if bad.is_empty() {
        return Ok(());
    }
    if !mark_read {
        let then = if agent == HUMAN {
            "`lemming inbox` without --peek moves it to dead".to_string()
        } else {
            format!("the next turn that runs {agent} moves it to dead")
        };
        for b in bad {
            eprintln!(
                "warning: {} in {}'s inbox is not a message ({}); {then}",
                term::line(&b.name()),
                term::line(agent),
                term::line(&b.error.to_string())
            );
        }
        return Ok(());
    }
    let whys = send::set_aside(org, agent, bad, &Sources::real())?;
    let mb = org.mail();
    for (b, why) in bad.iter().zip(&whys) {
        let letter = mb.letter_path(&why.id);
        eprintln!(
            "warning: {} in {}'s inbox is not a message ({}); moved to {} as `{}`",
            term::line(&b.name()),
            term::line(agent),
            term::line(&b.error.to_string()),
            term::line(&letter.strip_prefix(mb.root()).unwrap_or(&letter).to_string_lossy()),
            why.reason
        );
    }
    Ok(())
}

/// One message for `--follow`: readable, or one JSON object on one line.
fn print_one(m: &InboxMessage, as_json: bool) -> Result<(), CliError> {
    if as_json {
        println!("{}", serde_json::to_string(m).map_err(|e| CliError::user(e.to_string()))?);
    } else {
        print!("{}", message(&m.message, MessageLayout::Full { unread: m.unread, archived: m.archived }));
    }
    Ok(())
}
