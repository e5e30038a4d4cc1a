//! The tools table: what a tool call costs. The round trip of a `read_file`
//! under the daemon against a plain message, and one `lemming step` of 100
//! agents with one `write_file` each against the same step without calls. In
//! both, the two kinds alternate within one run, so they meet the same
//! machine.

use std::path::Path;

use crate::synth::{self, Calls, Shape, Spec};

/// Sends of each kind in the round-trip case.
const SENDS: usize = 30;

/// The step cases: agents and unread mail per agent, each with one
/// `write_file` per agent and without.
const STEPS: [(usize, usize, Shape); 2] = [(100, 1, Shape::Ring(2)), (100, 50, Shape::Ring(4))];

/// Runs the table; returns whether every figure is within its aim.
pub fn run(base: &Path, runs: usize) -> Result<bool, String> {
    println!();
    println!("| tools | figure | aim |");
    println!("|---|---:|---:|");
    let mut all_ok = true;
    let rt = crate::daemon::tool_round_trip(base, SENDS)?;
    let over = rt.tool.p50 - rt.plain.p50;
    println!(
        "| plain message to the manager, send to reply, {SENDS} sends, p50 / p90 | {:.1} / {:.1} ms | |",
        rt.plain.p50, rt.plain.p90
    );
    println!(
        "| message with /tool read_file, send to the reply (the tool turn), {SENDS} sends, p50 / p90 | {:.1} / {:.1} ms | |",
        rt.tool_turn.p50, rt.tool_turn.p90
    );
    println!(
        "| message with /tool read_file, send to the result's acknowledgement, {SENDS} sends, p50 / p90 | {:.1} / {:.1} ms | |",
        rt.tool.p50, rt.tool.p90
    );
    let ok = over < 20.0;
    all_ok &= ok;
    println!(
        "| tool round trip overhead (p50 difference) | {over:.1} ms | {} 20 ms |",
        if ok { "ok <" } else { "OVER" }
    );
    println!(
        "| within a tool send: reply to acknowledgement (the wake and the second turn), p50 / p90 | {:.1} / {:.1} ms | |",
        rt.second_turn.p50, rt.second_turn.p90
    );
    for (agents, unread, shape) in STEPS {
        let with = spec(agents, unread, shape, Calls::WriteFile(1));
        let without = spec(agents, unread, shape, Calls::WriteFile(0));
        let (mut w, mut wo) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            wo.push(warm_step(base, &without)?);
            w.push(warm_step(base, &with)?);
        }
        let (w, wo) = (crate::median(w), crate::median(wo));
        let ok = w / wo < 2.0;
        all_ok &= ok;
        println!(
            "| {agents} agents x {unread} unread ({shape}), step, warm, median of {runs}: no calls | {wo:.1} ms | |"
        );
        println!("| the same, one write_file per agent | {w:.1} ms | |");
        println!("| ratio | {:.2}x | {} 2x |", w / wo, if ok { "ok <" } else { "OVER" });
    }
    Ok(all_ok)
}

fn spec(agents: usize, unread: usize, shape: Shape, calls: Calls) -> Spec {
    Spec { agents, unread, shape, latency_ms: 0, max_parallel: 8, calls, sandbox: None }
}

/// One warm step on a fresh org, in a child process; checks that every call
/// it asked for gave an `ok` result.
fn warm_step(base: &Path, spec: &Spec) -> Result<f64, String> {
    let tmp = tempfile::tempdir_in(base).map_err(|e| e.to_string())?;
    let dir = tmp.path().join("org");
    synth::generate(&dir, spec).map_err(|e| e.to_string())?;
    let (_, warm, _) = crate::child("step", &dir, spec)?;
    synth::check_results(&dir, spec)?;
    Ok(warm)
}
