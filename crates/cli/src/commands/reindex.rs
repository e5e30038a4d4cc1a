//! `lemming reindex`: rebuild the search index from the files.

use std::time::Instant;

use lemming_engine::index;
use lemming_engine::org::Layout;

use crate::ctx::{CliError, Ctx};
use crate::render::print_json;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Reads every message of the org (each inbox, each outbox and the dead letters)
into a new index beside the old one in org/state/index/, then puts it in place
at once: a search running meanwhile uses the old index or the new one, never
half of one. The files are never changed. Safe beside a running daemon; mail
delivered while it runs is added by the next update.

It is never required: a missing or damaged index is rebuilt by the next
search. Run it when `lemming fsck` says the index differs from the files.
With --json it prints {\"messages\",\"skipped\",\"path\",\"ms\"}.")]
pub struct Args {}

pub fn run(ctx: &Ctx, _args: Args) -> Result<(), CliError> {
    let root = ctx.root()?;
    let start = Instant::now();
    let bar = crate::progress::bar(ctx.json, 0, "{bar:40} {pos}/{len} messages ({per_sec}, {eta} left)");
    let rebuilt = index::rebuild(&Layout::new(&root), &mut |p| {
        if let Some(bar) = &bar {
            bar.set_length(p.total);
            bar.set_position(p.done);
        }
    });
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let r = rebuilt?;
    let ms = start.elapsed().as_millis() as u64;
    if ctx.json {
        return print_json(
            &serde_json::json!({ "messages": r.messages, "skipped": r.skipped, "path": r.path, "ms": ms }),
        );
    }
    let skipped = if r.skipped > 0 {
        format!(" ({} file(s) that are not messages left out; `lemming fsck` says which)", r.skipped)
    } else {
        String::new()
    };
    println!("indexed {} message(s) in {ms} ms{skipped}", r.messages);
    Ok(())
}
