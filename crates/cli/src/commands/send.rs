//! `lemming send TO BODY`: write a message into an agent's outbox (as the human by default),
//! to an agent, a group (`@name`) or everyone the sender may write to (`*`).

use std::io::Read;

use lemming_engine::message::Priority;
use lemming_engine::org::Org;
use lemming_engine::send::{self, SendError, SendOptions};

use crate::ctx::{CliError, Ctx};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The recipient: an agent, a group of org.toml as `@name` (each member but
    /// the sender), or `*` (quoted: every agent the sender may write to)
    pub to: String,
    /// The message text; `-` reads it from stdin
    pub body: String,
    /// Send as this agent instead of `human`
    #[arg(long, value_name = "AGENT", default_value = "human")]
    pub from: String,
    /// low, normal or urgent
    #[arg(long, value_name = "LEVEL", default_value = "normal", value_parser = ["low", "normal", "urgent"])]
    pub priority: String,
    /// The id of the message this answers (its thread is kept)
    #[arg(long, value_name = "ID")]
    pub reply_to: Option<String>,
    /// A subject line
    #[arg(long, value_name = "TEXT")]
    pub subject: Option<String>,
    /// Expire if not delivered within this many turns
    #[arg(long, value_name = "TURNS")]
    pub ttl: Option<u64>,
    /// Ask for a read receipt: each recipient that reads it sends the sender a
    /// `receipt` message (from `lemming`)
    #[arg(long)]
    pub ack: bool,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<(), CliError> {
    let org = ctx.load_lenient()?;
    // Wrong names fail before stdin is read.
    send::check(&org, &args.from, &args.to).map_err(send_error)?;
    warn_problems(&org, &[&args.from, &args.to]);
    let body = if args.body == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        // `echo hi | lemming send manager -` sends "hi", not "hi\n".
        let trimmed = s.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&s);
        trimmed.to_string()
    } else {
        args.body
    };
    let opts = SendOptions {
        priority: Priority::parse(&args.priority).unwrap_or_default(),
        reply_to: args.reply_to,
        subject: args.subject,
        ttl_turns: args.ttl,
        ack: args.ack,
        ..SendOptions::default()
    };
    let msg = send::send(&org, &args.from, &args.to, &body, opts).map_err(send_error)?;
    println!("{}", msg.id);
    Ok(())
}

/// The message for a failed send, in the command line's words.
pub fn send_error(e: SendError) -> CliError {
    match e {
        SendError::BadReplyTo(id) => CliError::user(format!("--reply-to {id:?} is not a message id")),
        other => CliError::user(other.to_string()),
    }
}

/// Shows on stderr the problems of `org.toml`, `models.toml` and these agents'
/// resumes, each saying whether its last good version is in use.
pub fn warn_problems(org: &Org, agents: &[&str]) {
    for p in org.problems_of(agents) {
        let kept = org.last_good.iter().any(|rel| p.path == org.layout.root.join(rel));
        if kept {
            eprintln!("warning: the last good version of this file is used until it is fixed: {p}");
        } else {
            eprintln!("warning: {p}");
        }
    }
}
