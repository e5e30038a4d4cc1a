//! `lemming search QUERY`: every message of the org, ranked, with the text around each match.

use std::io::IsTerminal;

use lemming_engine::index::{self, Hit, Query};
use lemming_engine::org::Layout;
use lemming_engine::term;

use crate::ctx::{CliError, Ctx};
use crate::render::print_json;

#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    /// The words to find (a message must hold every one; case and accents do not matter)
    #[arg(required = true, value_name = "QUERY")]
    pub words: Vec<String>,
    /// Only messages from this sender
    #[arg(long, value_name = "AGENT")]
    pub from: Option<String>,
    /// Only messages to this recipient
    #[arg(long, value_name = "AGENT")]
    pub to: Option<String>,
    /// Only messages of this thread (its id)
    #[arg(long, value_name = "ID")]
    pub thread: Option<String>,
    /// At most this many messages, best first
    #[arg(long, default_value_t = 20, value_parser = crate::ctx::at_least_one, value_name = "N")]
    pub limit: u64,
    /// Read QUERY as SQLite FTS5 syntax: AND, OR, NOT, "exact phrases", prefix*, NEAR(a b, 5)
    #[arg(long)]
    pub fts: bool,
}

const AFTER_HELP: &str = "\
Searches every inbox (unread, read and archived), every outbox and the dead
letters, and ranks the messages by relevance (bm25). Each hit shows the mailbox
it is in, its id, sender, recipients and date, and the text around the match.
A message in several mailboxes (the sender's outbox, each recipient's inbox) is
a hit in each.

Words are plain terms: punctuation inside a word is fine (`lemming search
don't`). With --fts the query is FTS5 syntax instead; a query it refuses is an
error that says how to quote it.

The index lives in org/state/index/ and is derived from the files: each turn
and each `lemming send` update it, a missing or damaged index is rebuilt by the
next search, and `lemming reindex` rebuilds it on demand. A message whose file
is gone is never shown.

With --json it prints {\"hits\":[{\"mailbox\",\"agent\",\"letter\",\"id\",\"from\",\"to\",
\"thread\",\"subject\",\"kind\",\"created_at\",\"turn\",\"score\",\"snippet\"}]}.";

pub fn run(ctx: &Ctx, args: Args) -> Result<(), CliError> {
    let root = ctx.root()?;
    let q = Query {
        text: args.words.join(" "),
        raw: args.fts,
        from: args.from,
        to: args.to,
        thread: args.thread,
        limit: usize::try_from(args.limit).unwrap_or(usize::MAX),
    };
    let found = index::search(&Layout::new(&root), &q)?;
    if let Some(why) = &found.rebuilt {
        eprintln!("note: the search index was rebuilt from the files ({})", term::line(why));
    }
    if ctx.json {
        return print_json(&serde_json::json!({ "hits": found.hits }));
    }
    if found.hits.is_empty() {
        eprintln!("no message matches {}", term::line(&q.text));
        return Ok(());
    }
    let marks = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    for (i, h) in found.hits.iter().enumerate() {
        if i > 0 {
            println!();
        }
        println!("{}", heading(h));
        println!("    {}", snippet(h, marks));
    }
    Ok(())
}

/// `manager inbox  ID  2026-12-02 07:00  human → manager  "subject"`.
fn heading(h: &Hit) -> String {
    let place = match (&h.agent, &h.letter) {
        (Some(a), _) => format!("{a} {}", h.mailbox),
        (None, Some(l)) if *l != h.id => format!("dead letter {l}"),
        _ => "dead letter".to_string(),
    };
    let date = chrono::DateTime::parse_from_rfc3339(&h.created_at)
        .map(|d| d.with_timezone(&chrono::Utc).format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|_| h.created_at.clone());
    let from = if h.from.is_empty() { "?" } else { &h.from };
    let subject = h.subject.as_ref().map(|s| format!("  \"{s}\"")).unwrap_or_default();
    term::line(&format!("{place}  {}  {date}  {from} → {}{subject}", h.id, h.to.join(", "))).into_owned()
}

/// The text around the match, on one line; the matched words in bold on a terminal.
fn snippet(h: &Hit, marks: bool) -> String {
    h.snippet
        .pieces
        .iter()
        .map(|(text, hit)| {
            // One line: the body's own line breaks become spaces; other controls show escaped.
            let flat = text.replace(['\n', '\r', '\t'], " ");
            let safe = term::line(&flat);
            if *hit && marks {
                format!("\x1b[1;4m{safe}\x1b[0m")
            } else {
                safe.into_owned()
            }
        })
        .collect()
}
