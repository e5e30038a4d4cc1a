//! `lemming init [DIR]`: write the default org.

use std::path::PathBuf;

use crate::cli::{CliError, Ctx};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to write the org (must be missing or empty) [default: the current folder]
    pub dir: Option<PathBuf>,
}

pub fn run(_ctx: &Ctx, args: Args) -> Result<(), CliError> {
    let dir = match args.dir {
        Some(d) => d,
        None => std::env::current_dir()?,
    };
    let written = lemming_engine::init::init(&dir)?;
    println!("Wrote the default org to {} ({} files).", dir.display(), written.len());
    eprintln!(
        "Next: cd {} && lemming send manager \"Please plan the launch @planner\" && lemming step && lemming inbox",
        dir.display()
    );
    Ok(())
}
