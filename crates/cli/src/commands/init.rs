//! `lemming init [DIR]`: write the default org.

use std::path::PathBuf;

use lemming_engine::term::{line, shell_path};

use crate::ctx::{CliError, Ctx};

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
    println!("Wrote the default org to {} ({} files).", line(&dir.display().to_string()), written.len());
    eprintln!(
        "Next: cd {} && lemming send manager \"Please plan the launch @planner\" && lemming step && lemming inbox",
        line(&shell_path(&dir))
    );
    Ok(())
}
