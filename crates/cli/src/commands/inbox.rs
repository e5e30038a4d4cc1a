//! `lemming inbox [AGENT]`: show unread mail; the human's is then marked read,
//! and what in it is not a message is moved to dead.
//! With `--follow` it then keeps printing new mail as it arrives.

use lemming_engine::events::{Event, EventKind, Events};
use lemming_engine::follow::{self, NewMail};
use lemming_engine::journal::Journal;
use lemming_engine::mailbox::{BadFile, MailRead, Mailbox};
use lemming_engine::message::Message;
use lemming_engine::name::HUMAN;
use lemming_engine::org::Org;
use lemming_engine::prompt;
use lemming_engine::term;

use crate::cli::{block_on, print_json, word, CliError, Ctx};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Whose inbox [default: human]. Other agents' mail is only shown, never marked read.
    pub agent: Option<String>,
    /// Show read mail too
    #[arg(long)]
    pub all: bool,
    /// Do not mark anything read (nor move what is not a message to dead)
    #[arg(long)]
    pub peek: bool,
    /// Then keep printing new mail as it arrives, until Ctrl-C (with --json: one object per line)
    #[arg(short, long)]
    pub follow: bool,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<(), CliError> {
    let org = ctx.load_lenient()?;
    let agent = args.agent.unwrap_or_else(|| HUMAN.to_string());
    org.agent(&agent)?;
    let mb = Mailbox::new(&org.layout.root).with_read_limit(org.settings.max_message_bytes);
    // A file or folder that cannot be read is named, and the rest is still shown.
    let MailRead { messages: mut unread, bad, unreadable } =
        mb.unread_skipping(&agent).unwrap_or_else(|e| MailRead { unreadable: vec![e], ..MailRead::default() });
    for e in &unreadable {
        warn_unreadable(e);
    }
    let mark_read = !args.peek && agent == HUMAN;
    set_aside(&org, &mb, &agent, &bad, mark_read)?;
    prompt::order(&mut unread);
    let mut shown: Vec<(Message, bool)> = Vec::new();
    if args.all {
        let MailRead { messages: mut read, bad: bad_read, unreadable } =
            mb.read_mail_skipping(&agent).unwrap_or_else(|e| MailRead { unreadable: vec![e], ..MailRead::default() });
        for e in &unreadable {
            warn_unreadable(e);
        }
        for b in &bad_read {
            eprintln!(
                "warning: {} in {}'s read mail is not a message ({}); not shown",
                term::line(&b.name()),
                agent,
                term::line(&b.error.to_string())
            );
        }
        read.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        shown.extend(read.into_iter().map(|m| (m, false)));
    }
    shown.extend(unread.iter().cloned().map(|m| (m, true)));
    if args.follow {
        for (m, unread) in &shown {
            print_one(m, *unread, ctx.json);
        }
        if shown.is_empty() && !ctx.json {
            eprintln!("No unread mail for {agent}; waiting for new mail (Ctrl-C to stop).");
        }
    } else if ctx.json {
        let items: Vec<serde_json::Value> = shown.iter().map(|(m, unread)| json(m, *unread)).collect();
        print_json(&items)?;
    } else if shown.is_empty() {
        eprintln!("No unread mail for {agent}.");
    } else {
        for (m, unread) in &shown {
            print!("{}", render(m, *unread));
        }
    }
    let ids: Vec<String> = unread.iter().map(|m| m.id.clone()).collect();
    if mark_read {
        mb.mark_read_now(&agent, &ids)?;
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
                    for m in &fresh {
                        print_one(m, true, ctx.json);
                    }
                    if mark_read {
                        let ids: Vec<String> = fresh.iter().map(|m| m.id.clone()).collect();
                        mb.mark_read_now(&agent, &ids)?;
                    }
                }
            }
        }
    })?
}

fn warn_unreadable(e: &lemming_engine::error::PathError) {
    eprintln!("warning: cannot read {}; it is not shown", term::line(&e.to_string()));
}

/// Warns about entries of the inbox that are not messages. When the inbox is
/// the human's and is being read (`mark_read`), they are moved to dead now (no
/// turn reads the human's inbox); otherwise the warning says who moves them.
fn set_aside(org: &Org, mb: &Mailbox, agent: &str, bad: &[BadFile], mark_read: bool) -> Result<(), CliError> {
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
    let turn = Journal::new(&org.layout).last_turn().unwrap_or_default();
    let whys = mb.dead_bad_now(agent, bad, turn)?;
    let mut ev = Events::new(turn);
    for (b, why) in bad.iter().zip(&whys) {
        eprintln!(
            "warning: {} in {}'s inbox is not a message ({}); moved to org/state/dead/{}.json as `{}`",
            term::line(&b.name()),
            term::line(agent),
            term::line(&b.error.to_string()),
            why.id,
            why.reason
        );
        ev.push(Event { seq: 0, turn: why.turn, at: why.at, kind: EventKind::from(why) });
    }
    ev.flush(&org.layout)?;
    Ok(())
}

/// One message for `--follow`: readable, or one JSON object on one line.
fn print_one(m: &Message, unread: bool, as_json: bool) {
    if as_json {
        println!("{}", json(m, unread));
    } else {
        print!("{}", render(m, unread));
    }
}

/// A message as JSON: the fields of its file plus `unread`.
fn json(m: &Message, unread: bool) -> serde_json::Value {
    let mut v = serde_json::to_value(m).unwrap_or_default();
    v["unread"] = serde_json::Value::Bool(unread);
    v
}

/// A message for people: a head line, its id, subject and body, every field
/// passed through [`term`] (the message's text is untrusted).
pub(crate) fn render(m: &Message, unread: bool) -> String {
    let mut head = format!(
        "{} {} from {} to {}",
        if unread { "●" } else { " " },
        m.created_at.format("%Y-%m-%d %H:%M:%S"),
        term::line(&m.from),
        term::line(&m.to.0.join(", "))
    );
    if m.kind != lemming_engine::message::Kind::Message {
        head.push_str(&format!(" [{}]", m.kind.as_str()));
    }
    if m.priority != lemming_engine::message::Priority::Normal {
        head.push_str(&format!(" [{}]", word(&m.priority)));
    }
    let mut s = format!("{head}\n  id: {}", term::line(&m.id));
    if let Some(r) = &m.reply_to {
        s.push_str(&format!("  reply to: {}", term::line(r)));
    }
    if let Some(subj) = &m.subject {
        s.push_str(&format!("\n  subject: {}", term::line(subj)));
    }
    for line in term::text(&m.body).lines() {
        s.push_str(&format!("\n  {line}"));
    }
    s.push_str("\n\n");
    s
}
