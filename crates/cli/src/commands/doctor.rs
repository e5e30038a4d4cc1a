//! `lemming doctor`: checks every provider (reachability, auth, one tiny
//! request where allowed) within a deadline, and prints a verdict for each;
//! then says which sandbox `run_command` and custom tools run in.

use std::time::Duration;

use lemming_engine::term::line;
use lemming_engine::tools::sandbox;
use lemming_provider::doctor::{self, Call};

use crate::ctx::{block_on, CliError, Ctx};
use crate::render::print_json;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Also send the tiny request to remote servers and run command providers once (they may charge for it)
    #[arg(long, conflicts_with = "no_call")]
    pub call: bool,
    /// Send no tiny request anywhere
    #[arg(long)]
    pub no_call: bool,
    /// The time allowed per provider, in milliseconds
    #[arg(long, default_value_t = 500, value_name = "MS")]
    pub deadline_ms: u64,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<(), CliError> {
    let org = ctx.load()?;
    let registry = org.registry();
    let call = match (args.call, args.no_call) {
        (true, _) => Call::Always,
        (_, true) => Call::Never,
        _ => Call::Local,
    };
    let verdicts = block_on(doctor::check_all(&registry, Duration::from_millis(args.deadline_ms), call))?;
    let sandbox = sandbox::report(org.settings.sandbox);
    // Programs being refused is a failure only for an org that runs programs.
    let runs_programs =
        org.agents.values().any(|r| r.tools.iter().any(|t| t == "run_command" || org.tools.custom.contains_key(t)));
    // Managed local servers, as their state files say (the doctor never starts one).
    let servers: Vec<_> = org
        .models
        .providers
        .iter()
        .filter_map(|p| p.serve.as_ref().map(|s| lemming_provider::serve::Report::read(&p.name, s)))
        .collect();
    if ctx.json {
        print_json(&serde_json::json!({ "providers": verdicts, "sandbox": sandbox, "servers": servers }))?;
    } else {
        for v in &verdicts {
            println!("{:<16} {:<10} {} ({} ms)", line(&v.provider), v.kind, v.verdict.to_uppercase(), v.elapsed_ms);
            // Details quote what servers answered: shown escaped.
            for d in &v.details {
                println!("    {}", line(d));
            }
        }
        if verdicts.is_empty() {
            println!("no providers to check");
        }
        for s in &servers {
            println!("{:<16} {:<10} {}", line(&s.provider), "server", line(&s.summary));
        }
        let verdict = match (sandbox.ok, runs_programs) {
            (true, _) => "OK",
            (false, true) => "REFUSED",
            (false, false) => "NONE",
        };
        println!("{:<16} {:<10} {verdict}", "sandbox", sandbox.sandbox.unwrap_or(sandbox.mode));
        for l in sandbox.description.lines() {
            println!("    {}", line(l.trim()));
        }
    }
    let failed: Vec<&str> = verdicts.iter().filter(|v| !v.ok).map(|v| v.provider.as_str()).collect();
    if !sandbox.ok && runs_programs && failed.is_empty() {
        return Err(CliError::user(
            "no sandbox for the programs agents may run (run_command, custom tools), so they are refused\n  help: \
             install bubblewrap, or see the sandbox line above"
                .to_string(),
        ));
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::user(format!(
            "{} provider(s) failed the check: {}\n  help: fix org/models.toml or the environment, then run `lemming doctor` again",
            failed.len(),
            failed.join(", ")
        )))
    }
}
