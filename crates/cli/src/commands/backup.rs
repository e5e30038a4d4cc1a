//! `lemming backup FILE`: the org as one archive, copied between two turns.

use std::path::PathBuf;

use indicatif::ProgressBar;
use lemming_engine::backup::{self, BackupError, BackupReport, Progress, Wait};
use lemming_engine::term::text;

use crate::ctx::{CliError, Ctx};
use crate::render::print_json;

/// `lemming backup FILE [--force]`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct Args {
    /// The archive to write (a .tar.gz file, outside the org)
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Replace FILE if it exists
    #[arg(long)]
    pub force: bool,
}

const AFTER_HELP: &str = "\
Writes the whole org (config, mailboxes, state, memories, workspaces) to one
gzip-compressed tar file, taken between two turns: a running daemon (`lemming
run`) finishes the turn in progress and waits to start the next one until the
copy is done, and `lemming inbox` waits to mark mail read. `lemming send` goes
on meanwhile: a message sent during the backup is in it whole, or not at all.
Left out: tmp/ folders' contents, lock files, daemon.json and the search index
(rebuilt when needed).

The file is written beside FILE and renamed into place once complete; an
existing FILE is refused unless --force. On a terminal a progress bar shows
the files copied; the last line sums up: files, bytes, turn and seconds.
Restore it with `lemming restore FILE DIR`.

With --json it prints {\"path\",\"manifest\":{\"format\",\"lemming_version\",
\"created_at\",\"turn\",\"files\"},\"links\",\"bytes\",\"archive_bytes\",\"skipped\",\"seconds\"}.";

pub fn run(ctx: &Ctx, args: Args) -> Result<(), CliError> {
    let root = ctx.root()?;
    let bar = progress_bar(ctx.json, "copying");
    let report = backup::backup(
        &root,
        &args.file,
        args.force,
        |w| {
            if let Some(bar) = &bar {
                bar.set_message(match w {
                    Wait::Reads => "waiting for a person's read to finish",
                    Wait::Turn => "waiting for the turn in progress to commit",
                });
            } else if !ctx.json {
                eprintln!("{}", waiting(w));
            }
        },
        |p| show(&bar, p, "copying"),
    );
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let report = report.map_err(|e: BackupError| CliError::user(e.to_string()))?;
    if ctx.json {
        return print_json(&report);
    }
    for p in &report.skipped {
        eprintln!("warning: left out (not a folder or a regular file): {}", text(&p.display().to_string()));
    }
    println!("{}", summary(&report));
    Ok(())
}

fn waiting(w: Wait) -> &'static str {
    match w {
        Wait::Reads => "backup: waiting for a person's read to finish",
        Wait::Turn => "backup: waiting for the turn in progress to commit",
    }
}

fn summary(r: &BackupReport) -> String {
    format!(
        "backup: {} files ({} bytes, {} hard links) at turn {} in {:.1} s -> {} ({} bytes)",
        r.manifest.files,
        r.bytes,
        r.links,
        r.manifest.turn,
        r.seconds,
        text(&r.path.display().to_string()),
        r.archive_bytes
    )
}

/// A progress bar on stderr when both outputs are a terminal and not --json.
pub(crate) fn progress_bar(json: bool, what: &'static str) -> Option<ProgressBar> {
    let bar = crate::progress::bar(json, 0, "{msg} [{bar:30}] {pos}/{len} files ({elapsed})")?;
    bar.set_message(what);
    Some(bar)
}

/// Moves the bar to `p`.
pub(crate) fn show(bar: &Option<ProgressBar>, p: Progress, what: &'static str) {
    if let Some(bar) = bar {
        if bar.length() != Some(p.total) {
            bar.set_length(p.total);
        }
        bar.set_message(format!("{what} {}", indicatif::HumanBytes(p.bytes)));
        bar.set_position(p.files);
    }
}
