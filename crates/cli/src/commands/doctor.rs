//! `lemming doctor`: checks every provider (reachability, auth, one tiny
//! request where allowed) within a deadline, and prints a verdict for each;
//! then says which sandbox `run_command` and custom tools run in. With
//! `--detect` it looks for model servers on this machine instead.

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
    /// Instead of checking the providers, look for model servers on this machine
    /// (Ollama 11434, LM Studio 1234, llama.cpp 8080, vLLM 8000, and each --port),
    /// all within the deadline, and print how to switch the org to each one found
    #[arg(long, conflicts_with_all = ["call", "no_call"])]
    pub detect: bool,
    /// With --detect: one more port of 127.0.0.1 to probe (repeat for more)
    #[arg(long, value_name = "N", requires = "detect")]
    pub port: Vec<u16>,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<(), CliError> {
    if args.detect {
        return detect(ctx, &args);
    }
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

/// `--detect`: probes the usual ports and `--port`s within the deadline and
/// prints, for each server found, the tables to add and the switch command.
/// Finding nothing is not an error (exit 0): it says how to start a server.
/// It needs no org; with one, the suggested names avoid those in use.
fn detect(ctx: &Ctx, args: &Args) -> Result<(), CliError> {
    let taken: Vec<String> = match ctx.load() {
        Ok(org) => {
            org.models.providers.iter().map(|p| p.name.clone()).chain(org.models.models.keys().cloned()).collect()
        }
        Err(_) => vec![],
    };
    let ports = lemming_provider::detect::ports(&args.port);
    let found = block_on(lemming_provider::detect::detect(&ports, Duration::from_millis(args.deadline_ms), &taken))?;
    if ctx.json {
        return print_json(&found);
    }
    // Everything below quotes what servers answered: shown escaped.
    for f in &found.found {
        let models = if f.models.is_empty() { "none listed".to_string() } else { f.models.join(", ") };
        println!("found {} on 127.0.0.1:{}: {}", f.server, f.port, line(&models));
        println!("  add to org/models.toml:");
        for l in f.toml.lines() {
            println!("    {}", line(l));
        }
        println!("  then switch every agent to it:");
        println!("    {}", line(&f.command));
    }
    for m in &found.missed {
        println!("port {}: {}", m.port, line(&m.why));
    }
    if found.found.is_empty() {
        println!(
            "no model server found on 127.0.0.1 (ports {}) within {} ms\n  \
             help: start one, for example `ollama serve` then `ollama pull llama3.2`, or \
             `llama-server -m MODEL.gguf --port 8080`; then run `lemming doctor --detect` again \
             (add --port N for another port)",
            ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", "),
            found.deadline_ms
        );
    }
    println!("searched in {} ms", found.elapsed_ms);
    Ok(())
}
