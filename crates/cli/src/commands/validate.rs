//! `lemming validate`: check every TOML file (org.toml, models.toml,
//! tools.toml, every resume) and report each problem.

use lemming_engine::org::{LoadOrgError, Org};
use lemming_engine::term;

use crate::ctx::{CliError, Ctx};
use crate::render::print_json;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(ctx: &Ctx, _args: Args) -> Result<(), CliError> {
    let root = ctx.root()?;
    let (problems, agents, tools) = match Org::load(&root) {
        Ok(org) => (org.problems(), org.agents.len(), org.tools.custom.len()),
        Err(LoadOrgError::Invalid(d)) => {
            // org.toml or models.toml is invalid; the resumes are checked all the
            // same, so that every problem in every file shows at once.
            let mut all = d.0;
            all.extend(Org::load_or_last_good(&root, None).broken.into_values().flatten());
            (all, 0, 0)
        }
        Err(e) => return Err(e.into()),
    };
    if ctx.json {
        print_json(&serde_json::json!({ "ok": problems.is_empty(), "agents": agents, "problems": problems }))?;
    } else {
        for p in &problems {
            eprintln!("error: {}\n", term::text(&p.to_string()));
        }
    }
    if problems.is_empty() {
        if !ctx.json {
            let tools = match tools {
                0 => String::new(),
                1 => ", tools.toml (1 custom tool)".to_string(),
                n => format!(", tools.toml ({n} custom tools)"),
            };
            println!("ok: org.toml, models.toml{tools} and {agents} agents are valid");
        }
        Ok(())
    } else {
        Err(CliError::user(format!("{} problem(s) found; the files above need fixing", problems.len())))
    }
}
