//! `lemming send TO BODY`: write a message into an agent's outbox (as the human by default).

use std::io::Read;

use chrono::Utc;
use lemming_engine::journal::Journal;
use lemming_engine::mailbox::Mailbox;
use lemming_engine::message::{self, Kind, Message, Priority, To};

use crate::cli::{CliError, Ctx};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The recipient agent
    pub to: String,
    /// The message text; `-` reads it from stdin
    pub body: String,
    /// Send as this agent instead of `human`
    #[arg(long, default_value = "human")]
    pub from: String,
    /// low, normal or urgent
    #[arg(long, default_value = "normal", value_parser = ["low", "normal", "urgent"])]
    pub priority: String,
    /// The id of the message this answers (its thread is kept)
    #[arg(long, value_name = "ID")]
    pub reply_to: Option<String>,
    /// A subject line
    #[arg(long)]
    pub subject: Option<String>,
    /// Expire if not delivered within this many turns
    #[arg(long, value_name = "TURNS")]
    pub ttl: Option<u64>,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<(), CliError> {
    let org = ctx.load_lenient()?;
    org.agent(&args.from)?;
    org.agent(&args.to)?;
    if let Err(denied) = org.chart().check(&args.from, &args.to) {
        return Err(CliError::user(format!("{denied}\n  help: the org chart allows {} to write to: {}", args.from, {
            let r = org.chart().reachable(&args.from);
            if r.is_empty() {
                "nobody".into()
            } else {
                r.join(", ")
            }
        })));
    }
    let body = if args.body == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        // `echo hi | lemming send manager -` sends "hi", not "hi\n".
        let trimmed = s.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&s);
        trimmed.to_string()
    } else {
        args.body
    };
    let mb = Mailbox::new(&org.layout.root);
    let thread = match &args.reply_to {
        Some(id) => {
            if !message::valid_id(id) {
                return Err(CliError::user(format!("--reply-to {id:?} is not a message id")));
            }
            let found = mb.read_mail(&args.from)?.into_iter().chain(mb.unread(&args.from)?.0).find(|m| &m.id == id);
            found.map(|m| m.thread).unwrap_or_else(|| id.clone())
        }
        None => String::new(),
    };
    let now = Utc::now();
    let id = message::new_id(now, &args.from);
    let msg = Message {
        thread: if thread.is_empty() { id.clone() } else { thread },
        id,
        from: args.from.clone(),
        to: To(vec![args.to]),
        subject: args.subject,
        body,
        priority: Priority::parse(&args.priority).unwrap_or_default(),
        reply_to: args.reply_to,
        created_at: now,
        turn: Journal::new(&org.layout).last_turn()?,
        ttl_turns: args.ttl,
        kind: Kind::Message,
    };
    let size = msg.to_bytes().len() as u64;
    if size > org.settings.max_message_bytes {
        return Err(CliError::user(format!(
            "the message is {size} bytes; the limit is {} (max_message_bytes in org/org.toml)",
            org.settings.max_message_bytes
        )));
    }
    mb.send_now(&args.from, &msg)?;
    println!("{}", msg.id);
    Ok(())
}
