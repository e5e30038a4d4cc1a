//! `lemming export (--thread ID | --agent NAME | --all) --format md|json|html [-o FILE]`:
//! the record, for people outside the org.

use std::io::Write;
use std::path::PathBuf;

use lemming_engine::export::{self, ExportError, Format, Scope};
use lemming_engine::term;

use crate::ctx::{CliError, Ctx};

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["thread", "agent", "all"])))]
#[command(after_help = "Every message is taken once, from every inbox (unread, read and archived), \
    every outbox's sent mail and the dead letters, with where it is. Messages are sorted by time; \
    in a thread, each reply sits under the message it answers.\n\n\
    md: one section per message, bodies in code fences (nothing in a body is markup).\n\
    json: {\"format\": \"lemming-export/1\", \"scope\": ..., \"messages\": [...], \"unreadable\": [...]}; \
    each message has the message file's fields, `depth`, `parent` and `places` \
    ([{\"agent\": NAME, \"state\": \"unread\"|\"read\"|\"archived\"|\"sent\"}, {\"state\": \"dead\"}]).\n\
    html: one self-contained file: inline style, no script, nothing loaded from anywhere, every \
    field of every message escaped.\n\n\
    Without -o the export goes to stdout. With -o it is written to a temporary file beside FILE, \
    synced, then put in place whole; an existing FILE is kept unless --force.")]
pub struct Args {
    /// One conversation: a thread id, or the id of any message in it
    #[arg(long, value_name = "ID")]
    pub thread: Option<String>,
    /// What this agent received and sent
    #[arg(long, value_name = "NAME")]
    pub agent: Option<String>,
    /// Every message of the org
    #[arg(long)]
    pub all: bool,
    /// md (Markdown), json or html (one self-contained file)
    #[arg(long, value_enum, value_name = "KIND")]
    pub format: FormatArg,
    /// Write to this file (atomically) instead of stdout
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Replace FILE if it exists
    #[arg(long, requires = "output")]
    pub force: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum FormatArg {
    Md,
    Json,
    Html,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<(), CliError> {
    let org = ctx.load_lenient()?;
    let scope = match (args.thread, args.agent) {
        (Some(t), _) => Scope::Thread(t),
        (_, Some(a)) => Scope::Agent(a),
        _ => Scope::All,
    };
    let format = match args.format {
        FormatArg::Md => Format::Md,
        FormatArg::Json => Format::Json,
        FormatArg::Html => Format::Html,
    };
    let record = export::collect(&org, &scope).map_err(error)?;
    for u in &record.unreadable {
        eprintln!("warning: cannot read {}; it is not exported", term::line(u));
    }
    let bytes = export::render(&record, format);
    match &args.output {
        Some(path) => {
            export::write_file(path, &bytes, args.force).map_err(error)?;
            eprintln!("Wrote {} message(s) to {}.", record.messages.len(), term::line(&path.to_string_lossy()));
        }
        None => std::io::stdout().lock().write_all(&bytes)?,
    }
    Ok(())
}

fn error(e: ExportError) -> CliError {
    CliError::user(e.to_string())
}
