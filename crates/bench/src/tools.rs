//! The tools table: what a tool call costs. The round trip of a `read_file`
//! under the daemon against a plain message; one `lemming step` of 100
//! agents with one `write_file` each against the same step without calls;
//! and the sandbox's start cost per command: a step with `run_command true`
//! calls against the same step with as many `calculate` calls, under each
//! `sandbox` of org.toml. In each, the kinds compared alternate within one
//! run, so they meet the same machine.

use std::path::Path;

use crate::synth::{self, Calls, Shape, Spec};

/// Sends of each kind in the round-trip case.
const SENDS: usize = 30;

/// The step cases: agents and unread mail per agent, each with one
/// `write_file` per agent and without.
const STEPS: [(usize, usize, Shape); 2] = [(100, 1, Shape::Ring(2)), (100, 50, Shape::Ring(4))];

/// The sandbox cases: agents, and calls each (within `max_calls` of
/// org.toml, 16 by default, so that every call runs).
const SANDBOXED: (usize, usize) = (20, 10);

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
    sandboxes(base, runs)?;
    Ok(all_ok)
}

/// The sandbox's start cost per command: (step with N `run_command true`
/// − step with N `calculate`) / N, for `none`, `landlock` and `bwrap`, the
/// median over runs of each run's pair (steps back to back). A mode that
/// does not work here (its calls were refused) is reported as such.
fn sandboxes(base: &Path, runs: usize) -> Result<(), String> {
    let (agents, k) = SANDBOXED;
    let n = (agents * k) as f64;
    let mut none = None;
    for mode in ["none", "landlock", "bwrap"] {
        // One agent at a time, so that the commands run one after another and
        // the difference is each command's own cost, not a share of it.
        let mk =
            |calls| Spec { sandbox: Some(mode.to_string()), max_parallel: 1, ..spec(agents, 1, Shape::Ring(2), calls) };
        let (calc, cmd) = (mk(Calls::Calculate(k)), mk(Calls::RunTrue(k)));
        let (mut c, mut r, mut per) = (Vec::new(), Vec::new(), Vec::new());
        let mut refused = None;
        for _ in 0..runs {
            let calc_ms = warm_step(base, &calc)?;
            match warm_step(base, &cmd) {
                Ok(ms) => {
                    c.push(calc_ms);
                    r.push(ms);
                    per.push((ms - calc_ms) / n);
                }
                Err(Refused(e)) => {
                    refused = Some(e);
                    break;
                }
                Err(Failed(e)) => return Err(e),
            }
        }
        let label = format!("sandbox = \"{mode}\": {agents} agents x {k} calls, step, warm, median of {runs}");
        if let Some(e) = refused {
            println!(
                "| {label}: run_command refused, not measured ({}) | | |",
                e.chars().take(200).collect::<String>()
            );
            continue;
        }
        let (c, r, per) = (crate::median(c), crate::median(r), crate::median(per));
        let beyond = match (mode, none) {
            ("none", _) => {
                none = Some(per);
                String::new()
            }
            (_, Some(base)) => format!(" ({:+.2} ms over none)", per - base),
            _ => String::new(),
        };
        println!("| {label}: calculate / run_command true | {c:.1} / {r:.1} ms | |");
        println!("| per command, sandbox = \"{mode}\" | {per:.2} ms{beyond} | |");
    }
    Ok(())
}

fn spec(agents: usize, unread: usize, shape: Shape, calls: Calls) -> Spec {
    Spec { agents, unread, shape, latency_ms: 0, max_parallel: 8, calls, sandbox: None }
}

/// Why a step gave no time.
enum StepError {
    /// Its calls did not all give an `ok` result (a sandbox that is not available).
    Refused(String),
    /// It failed.
    Failed(String),
}
use StepError::{Failed, Refused};

impl From<StepError> for String {
    fn from(e: StepError) -> String {
        match e {
            Refused(e) | Failed(e) => e,
        }
    }
}

/// One warm step on a fresh org, in a child process; checks that every call
/// it asked for gave an `ok` result.
fn warm_step(base: &Path, spec: &Spec) -> Result<f64, StepError> {
    let tmp = tempfile::tempdir_in(base).map_err(|e| Failed(e.to_string()))?;
    let dir = tmp.path().join("org");
    synth::generate(&dir, spec).map_err(|e| Failed(e.to_string()))?;
    let (_, warm, _) = crate::child("step", &dir, spec).map_err(Failed)?;
    synth::check_results(&dir, spec).map_err(Refused)?;
    Ok(warm)
}
