//! `lemming-bench`: the benchmarks behind BENCHMARKS.md.
//!
//! `lemming-bench` runs every case and prints a table. Each measurement runs in
//! a child process (`lemming-bench measure step|floor DIR`) so that its peak
//! RSS is its own. A step is measured twice: cold (the first turn an org ever
//! runs, which also creates each agent's log folder and file) and warm (the
//! same workload injected again into the org the cold turn left, as in an org
//! that has been running). The floor is compared with the warm turn. The
//! scale table (`scale.rs`) times the whole `lemming step` process against the
//! floor from 100 to 10,000 agents (`LEMMING_BENCH_SIZES`), with CPU and peak
//! RSS from `wait4`, the first turn against a warm one, a turn of the `all`
//! chart, and `lemming status` and `validate`. The daemon table (`daemon.rs`)
//! times send-to-reply and an idle daemon's CPU. The
//! tools table (`tools.rs`) compares the same turns with and without tool
//! calls; the server table (`server.rs`) times the API, the event stream and
//! what serving adds to a turn; the search table (`search.rs`) times `lemming
//! search` over 100,000 messages and what the index adds to a turn; the backup table (`backup.rs`) times `lemming
//! backup` and `restore` of 100,000 messages; the record table (`thread.rs`) times `lemming
//! thread` of a long conversation; the cluster table (`cluster.rs`) times mail across
//! nodes through a real nats-server against the same on one machine. `lemming-bench gen DIR AGENTS UNREAD SHAPE [CALLS]` writes a
//! synthetic org for your own experiments, and `lemming-bench inject DIR AGENTS UNREAD
//! SHAPE ROUND [ASIDE]` gives its agents another round of unread mail (the
//! mail it clears moves into the folder ASIDE when one is given, instead of
//! being removed).

mod backup;
mod cluster;
mod daemon;
mod floor;
mod http_stub;
mod scale;
mod search;
mod server;
mod synth;
mod thread;
mod tools;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use synth::{Calls, Shape, Spec};

struct Case {
    title: &'static str,
    spec: Spec,
    limit_ms: f64,
}

fn cases() -> Vec<Case> {
    let spec = |agents, unread, shape, latency_ms, max_parallel| Spec {
        agents,
        unread,
        shape,
        latency_ms,
        max_parallel,
        calls: Calls::None,
        sandbox: None,
    };
    vec![
        Case { title: "100 agents x 50 unread (ring:4)", spec: spec(100, 50, Shape::Ring(4), 0, 8), limit_ms: 250.0 },
        Case { title: "100 agents x 50 unread (star)", spec: spec(100, 50, Shape::Star, 0, 8), limit_ms: 250.0 },
        Case {
            title: "1000 agents x 20 unread (ring:4)",
            spec: spec(1000, 20, Shape::Ring(4), 0, 8),
            limit_ms: 2000.0,
        },
        Case { title: "1000 agents x 20 unread (all)", spec: spec(1000, 20, Shape::All, 0, 8), limit_ms: 2000.0 },
        Case {
            title: "50 due, mock 200 ms, max_parallel 64",
            spec: spec(50, 1, Shape::Ring(2), 200, 64),
            limit_ms: 400.0,
        },
    ]
}

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn one_step(rt: &tokio::runtime::Runtime, dir: &Path, expect: usize) -> Result<f64, String> {
    let t = Instant::now();
    let reports = rt.block_on(lemming_engine::daemon::step(dir, 1, |_, _| {})).map_err(|e| e.to_string())?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    let r = &reports[0];
    if r.ran.len() != expect || !r.failed.is_empty() {
        return Err(format!("unexpected turn: ran {} of {expect}, failed {:?}", r.ran.len(), r.failed));
    }
    Ok(ms)
}

/// Runs in the child: one measurement, printed as `cold_ms warm_ms rss_kb`.
fn measure(what: &str, dir: &Path, spec: Option<&Spec>) -> Result<(), String> {
    let (cold, warm) = match (what, spec) {
        ("step", Some(spec)) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            let cold = one_step(&rt, dir, spec.agents)?;
            synth::inject(dir, spec, 1).map_err(|e| e.to_string())?;
            (cold, one_step(&rt, dir, spec.agents)?)
        }
        ("floor", _) => {
            let t = Instant::now();
            floor::run(dir).map_err(|e| e.to_string())?;
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            (ms, ms)
        }
        _ => return Err(format!("unknown measurement {what}")),
    };
    println!("{cold:.3} {warm:.3} {}", peak_rss_kb());
    Ok(())
}

/// The command that runs one measurement in a child: `lemming-bench measure WHAT DIR SPEC...`.
fn measure_cmd(what: &str, dir: &Path, spec: &Spec) -> Result<Command, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(exe);
    // The sandbox finds bwrap on PATH; LEMMING_BWRAP (the peers' setup) names one elsewhere.
    if let Some(bw) = std::env::var_os("LEMMING_BWRAP").map(PathBuf::from) {
        if let Some(dir) = bw.parent() {
            let path = std::env::var_os("PATH").unwrap_or_default();
            let joined = std::env::join_paths(std::iter::once(dir.to_path_buf()).chain(std::env::split_paths(&path)))
                .map_err(|e| e.to_string())?;
            cmd.env("PATH", joined);
        }
    }
    cmd.args(["measure", what]).arg(dir).args([
        spec.agents.to_string(),
        spec.unread.to_string(),
        spec.shape.to_string(),
        spec.latency_ms.to_string(),
        spec.max_parallel.to_string(),
        spec.calls.to_string(),
    ]);
    Ok(cmd)
}

fn child(what: &str, dir: &Path, spec: &Spec) -> Result<(f64, f64, u64), String> {
    let out = measure_cmd(what, dir, spec)?.output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("{what} failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let s = String::from_utf8_lossy(&out.stdout);
    let v: Vec<f64> = s.split_whitespace().filter_map(|v| v.parse().ok()).collect();
    match v.as_slice() {
        [cold, warm, kb] => Ok((*cold, *warm, *kb as u64)),
        _ => Err(format!("{what}: unexpected output {s:?}")),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn run_all(runs: usize) -> Result<bool, String> {
    let base: PathBuf = std::env::var_os("LEMMING_BENCH_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let only = std::env::var("LEMMING_BENCH_ONLY").unwrap_or_default();
    let mut all_ok = true;
    if only.is_empty() || only == "steps" {
        all_ok &= run_steps(&base, runs)?;
    }
    if only.is_empty() || only == "scale" {
        all_ok &= scale::run(&base, runs)?;
    }
    if only.is_empty() || only == "daemon" {
        all_ok &= run_daemon(&base)?;
    }
    if only.is_empty() || only == "providers" {
        all_ok &= http_stub::run(&base, runs)?;
    }
    if only.is_empty() || only == "tools" {
        all_ok &= tools::run(&base, runs)?;
    }
    if only.is_empty() || only == "server" {
        all_ok &= server::run(&base, runs)?;
    }
    if only.is_empty() || only == "search" {
        all_ok &= search::run(&base, runs)?;
    }
    if only.is_empty() || only == "backup" {
        all_ok &= backup::run(&base)?;
    }
    if only.is_empty() || only == "thread" {
        all_ok &= thread::run(&base, runs)?;
    }
    if only.is_empty() || only == "cluster" {
        all_ok &= cluster::run(&base)?;
    }
    Ok(all_ok)
}

fn run_daemon(base: &Path) -> Result<bool, String> {
    println!();
    println!("| daemon | figure | aim |");
    println!("|---|---:|---:|");
    let (p50, p99, max) = daemon::latency(base, 200)?;
    println!("| send-to-reply latency, 200 sends, p50 | {p50:.1} ms | < 10 ms |");
    println!("| send-to-reply latency, 200 sends, p99 | {p99:.1} ms | < 30 ms |");
    println!("| send-to-reply latency, 200 sends, max | {max:.1} ms | |");
    let window = std::time::Duration::from_secs(10);
    let (cpu, rss, hwm) = daemon::idle(base, 100, window, 1.0)?;
    println!("| idle daemon, 100 agents, 1 s turns, CPU over 10 s | {cpu:.2} % | < 1 % |");
    println!("| idle daemon, 100 agents, 1 s turns, RSS (peak) | {rss:.1} MB ({hwm:.1} MB) | < 20 MB |");
    let (cpu60, _, _) = daemon::idle(base, 100, window, 60.0)?;
    println!("| idle daemon, 100 agents, 60 s turns, CPU over 10 s | {cpu60:.2} % | |");
    Ok(p50 < 10.0 && p99 < 30.0 && cpu < 1.0)
}

fn run_steps(base: &Path, runs: usize) -> Result<bool, String> {
    println!("| case | step, warm (median of {runs}) | step, cold | floor | warm / floor | limit | peak RSS step | peak RSS floor |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut all_ok = true;
    for case in cases() {
        let (mut warms, mut colds, mut floors, mut rss_s, mut rss_f) = (Vec::new(), Vec::new(), Vec::new(), 0, 0);
        for _ in 0..runs {
            let tmp = tempfile::tempdir_in(base).map_err(|e| e.to_string())?;
            let (a, b) = (tmp.path().join("step"), tmp.path().join("floor"));
            synth::generate(&a, &case.spec).map_err(|e| e.to_string())?;
            synth::generate(&b, &case.spec).map_err(|e| e.to_string())?;
            let (cold, warm, kb) = child("step", &a, &case.spec)?;
            let (_, fms, fkb) = child("floor", &b, &case.spec)?;
            warms.push(warm);
            colds.push(cold);
            floors.push(fms);
            rss_s = rss_s.max(kb);
            rss_f = rss_f.max(fkb);
        }
        let (s, c, f) = (median(warms), median(colds), median(floors));
        let ok = s <= case.limit_ms;
        all_ok &= ok;
        println!(
            "| {} | {s:.1} ms | {c:.1} ms | {f:.1} ms | {:.2}x | {} {:.0} ms | {:.1} MB | {:.1} MB |",
            case.title,
            s / f,
            if ok { "ok <" } else { "OVER" },
            case.limit_ms,
            rss_s as f64 / 1024.0,
            rss_f as f64 / 1024.0
        );
    }
    Ok(all_ok)
}

/// The synthetic org that `gen` and `inject` are asked for on the command line.
fn user_spec(agents: &str, unread: &str, shape: &str, calls: Calls) -> Result<Spec, String> {
    Ok(Spec {
        agents: agents.parse().map_err(|_| "AGENTS must be a number")?,
        unread: unread.parse().map_err(|_| "UNREAD must be a number")?,
        shape: Shape::parse(shape).ok_or("SHAPE is star, ring:K or all")?,
        latency_ms: 0,
        max_parallel: 8,
        calls,
        sandbox: None,
    })
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["measure", what, dir, agents, unread, shape, latency, par, calls] => (|| {
            // The sandbox is written into org.toml by `generate`, in the parent.
            let spec = Spec {
                agents: agents.parse().map_err(|_| "bad agents")?,
                unread: unread.parse().map_err(|_| "bad unread")?,
                shape: Shape::parse(shape).ok_or("bad shape")?,
                latency_ms: latency.parse().map_err(|_| "bad latency")?,
                max_parallel: par.parse().map_err(|_| "bad max_parallel")?,
                calls: Calls::parse(calls).ok_or("bad calls")?,
                sandbox: None,
            };
            measure(what, Path::new(dir), Some(&spec)).map(|_| true)
        })(),
        ["gen", dir, agents, unread, shape, calls @ ..] if calls.len() <= 1 => (|| {
            let calls = match calls.first() {
                Some(c) => Calls::parse(c).ok_or("CALLS is none, write_file:K, run_command:K or calculate:K")?,
                None => Calls::None,
            };
            synth::generate(Path::new(dir), &user_spec(agents, unread, shape, calls)?).map_err(|e| e.to_string())?;
            Ok::<bool, String>(true)
        })(),
        ["inject", dir, agents, unread, shape, round, aside @ ..] if aside.len() <= 1 => (|| {
            let round = round.parse().map_err(|_| "ROUND must be a number")?;
            let spec = user_spec(agents, unread, shape, Calls::None)?;
            synth::inject_aside(Path::new(dir), &spec, round, aside.first().map(Path::new))
                .map_err(|e| e.to_string())?;
            Ok::<bool, String>(true)
        })(),
        [] => run_all(std::env::var("LEMMING_BENCH_RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(3)),
        _ => Err("usage: lemming-bench [gen DIR AGENTS UNREAD star|ring:K|all [none|write_file:K|run_command:K|calculate:K]] | [inject DIR AGENTS UNREAD SHAPE ROUND [ASIDE]]"
            .into()),
    };
    match result {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("some cases are over their limit");
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
