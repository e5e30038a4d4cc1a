//! `lemming init [--template NAME] [DIR]`: write the default org or an example
//! org; `--list-templates` lists the templates.

use std::path::PathBuf;

use lemming_engine::init::{self, TemplateSummary, DEFAULT_TEMPLATE};
use lemming_engine::term::{line, shell_path, shell_quote};

use crate::ctx::{CliError, Ctx};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Templates are example orgs built into lemming: the default org, and a software
team, a research group, a support desk, a writers' room, a solo assistant with
tools, a code-review pipeline, a debate with a judge and an incident team. Each
runs on the mock provider as written; its org/models.toml shows a real model to
switch to, and its README.md what it shows and what to try.")]
pub struct Args {
    /// Where to write the org (must be missing or empty) [default: the current folder]
    #[arg(conflicts_with = "list_templates")]
    pub dir: Option<PathBuf>,
    /// Write this example org instead of the default one (see --list-templates)
    #[arg(long, value_name = "NAME", default_value = DEFAULT_TEMPLATE, conflicts_with = "list_templates")]
    pub template: String,
    /// List the templates with what each one is, and write nothing (--json: [{"name","description","first_message":{"to","body"}}])
    #[arg(long)]
    pub list_templates: bool,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<(), CliError> {
    if args.list_templates {
        let list: Vec<TemplateSummary> = init::templates().iter().map(init::Template::summary).collect();
        if ctx.json {
            println!("{}", serde_json::to_string_pretty(&list).map_err(|e| CliError::user(e.to_string()))?);
        } else {
            let width = list.iter().map(|t| t.name.len()).max().unwrap_or(0);
            for t in &list {
                println!("{:width$}  {}", t.name, line(&t.description));
            }
        }
        return Ok(());
    }
    // An unknown name is refused before the folder is looked at.
    let template = init::template(&args.template)?;
    let dir = match args.dir {
        Some(d) => d,
        None => std::env::current_dir()?,
    };
    let written = init::init_template(&dir, template.name)?;
    let what = if template.name == DEFAULT_TEMPLATE {
        "the default org".to_string()
    } else {
        format!("the {} template", template.name)
    };
    println!("Wrote {what} to {} ({} files).", line(&dir.display().to_string()), written.len());
    if let Some(first) = template.first_message() {
        let steps = if template.name == DEFAULT_TEMPLATE { "lemming step" } else { "lemming step -n 3" };
        eprintln!(
            "Next: cd {} && lemming send {} {} && {steps} && lemming inbox",
            line(&shell_path(&dir)),
            first.to,
            line(&shell_quote(&first.body)),
        );
    }
    if template.file("README.md").is_some() {
        eprintln!("Read README.md there for what this org shows and what to try.");
    }
    Ok(())
}
