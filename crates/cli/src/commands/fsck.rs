//! `lemming fsck`: check G2–G8 on disk, say what was found, exit 1 on a violation.

use lemming_engine::fsck::{self, Finding, Severity};
use lemming_engine::term;

use crate::ctx::{CliError, Ctx};
use crate::render::print_json;

/// `lemming fsck` takes no options besides the global ones.
#[derive(Debug, clap::Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct Args {}

const AFTER_HELP: &str = "\
Checks the org's files against lemming's guarantees G2–G8 (docs/guarantees.md):
every routed message reached each recipient exactly once, or a dead letter says
why not; committed replies consumed their mail and were charged once; ledger
lines are whole and sane; every dead letter has its reason; every tool call has
exactly one result. It only reads: it
takes no lock and works while `lemming run` runs (run it again when idle to rule
out a turn in progress).

Exit code 1 when a guarantee is violated; notes alone exit 0. With --json it prints
{\"ok\",\"violations\",\"notes\",\"findings\":[{\"severity\",\"code\",\"guarantee\",\"paths\",\"message\"}]}
with paths relative to the org folder.";

/// What `--json` prints.
#[derive(serde::Serialize)]
struct Json<'a> {
    ok: bool,
    violations: usize,
    notes: usize,
    findings: &'a [Finding],
}

pub fn run(ctx: &Ctx, _args: Args) -> Result<(), CliError> {
    // The root only: fsck must work on an org whose config does not load.
    let root = ctx.root()?;
    let report = fsck::check(&root);
    let (violations, notes) = (report.violations(), report.notes());
    if ctx.json {
        print_json(&Json { ok: report.ok(), violations, notes, findings: &report.findings })?;
    } else {
        let mut group = None;
        for f in &report.findings {
            if group != Some(f.guarantee) {
                group = Some(f.guarantee);
                println!("{}", heading(f.guarantee));
            }
            println!("  {}", line(f));
        }
        println!("fsck: {violations} violation{}, {notes} note{}", plural(violations), plural(notes));
    }
    if violations > 0 {
        return Err(CliError::user(format!(
            "{violations} violation{} of the guarantees found in {}",
            plural(violations),
            root.display()
        )));
    }
    Ok(())
}

fn heading(guarantee: &str) -> &'static str {
    match guarantee {
        "G2" => "G2 whole files:",
        "G3" => "G3 exactly-once delivery:",
        "G4" => "G4 consumed after the reply is durable:",
        "G5" => "G5 ledger:",
        "G6" => "G6 one process runs turns:",
        "G7" => "G7 nothing dropped silently:",
        "index" => "the search index (derived from the files):",
        _ => "files fsck could not read:",
    }
}

pub(crate) fn line(f: &Finding) -> String {
    let severity = match f.severity {
        Severity::Violation => "violation",
        Severity::Note => "note",
    };
    let mut shown: Vec<String> = f.paths.iter().take(3).map(|p| p.display().to_string()).collect();
    if f.paths.len() > 3 {
        shown.push(format!("and {} more", f.paths.len() - 3));
    }
    let paths = if shown.is_empty() { String::new() } else { format!(" [{}]", shown.join(", ")) };
    // Messages hold file names and paths from the org: shown escaped.
    term::line(&format!("{severity:<9} {}: {}{paths}", f.code, f.message)).into_owned()
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
