//! `lemming restore FILE DIR`: unpack a backup into a new org folder and check it.

use std::path::PathBuf;

use lemming_engine::backup::{self, RestoreReport};
use lemming_engine::fsck::Finding;
use lemming_engine::term::text;

use crate::commands::backup::{progress_bar, show};
use crate::ctx::{CliError, Ctx};
use crate::render::print_json;

/// `lemming restore FILE DIR`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct Args {
    /// The archive written by `lemming backup`
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The folder to restore the org into: missing or empty
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

const AFTER_HELP: &str = "\
Checks every entry of the archive before it writes anything: a manifest
written by `lemming backup` first, in a format this lemming reads; names
relative to the org, without `..`; only folders, files and hard links to
earlier files (no symbolic links, devices or fifos); the whole archive
readable to its end, with as many files as its manifest says. A refused,
truncated or corrupt archive is an error naming the entry, and nothing is
written. The org is unpacked into a folder beside DIR, synced, and renamed
to DIR; then `lemming fsck` runs on it.

DIR must not exist or be empty. Exit code 1 when the archive is refused or
fsck finds a violation. With --json it prints {\"dir\",\"manifest\",\"links\",
\"bytes\",\"fsck\":{\"ok\",\"violations\",\"notes\",\"findings\"}}.";

#[derive(serde::Serialize)]
struct Json<'a> {
    dir: &'a std::path::Path,
    manifest: &'a backup::Manifest,
    links: u64,
    bytes: u64,
    fsck: Fsck<'a>,
}

#[derive(serde::Serialize)]
struct Fsck<'a> {
    ok: bool,
    violations: usize,
    notes: usize,
    findings: &'a [Finding],
}

pub fn run(ctx: &Ctx, args: Args) -> Result<(), CliError> {
    let bar = progress_bar(ctx.json, "unpacking");
    let report = backup::restore(&args.file, &args.dir, |p| show(&bar, p, "unpacking"));
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let r: RestoreReport = report.map_err(|e| CliError::user(e.to_string()))?;
    let violations = r.fsck.violations();
    if ctx.json {
        let fsck = Fsck { ok: r.fsck.ok(), violations, notes: r.fsck.notes(), findings: &r.fsck.findings };
        print_json(&Json { dir: &r.dir, manifest: &r.manifest, links: r.links, bytes: r.bytes, fsck })?;
    } else {
        println!(
            "restore: {} files ({} bytes, {} hard links) of turn {}, backed up {} -> {}",
            r.manifest.files,
            r.bytes,
            r.links,
            r.manifest.turn,
            r.manifest.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
            text(&r.dir.display().to_string())
        );
        for f in &r.fsck.findings {
            println!("  {}", crate::commands::fsck::line(f));
        }
        println!("fsck: {violations} violation(s), {} note(s)", r.fsck.notes());
    }
    if violations > 0 {
        return Err(CliError::user(format!(
            "the restored org {} has {violations} violation(s) of the guarantees (see above, or run `lemming fsck` there)",
            r.dir.display()
        )));
    }
    Ok(())
}
