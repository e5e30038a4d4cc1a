//! The scale table: whole-process `lemming step` against the floor as the org
//! grows (100 to 10,000 agents), the first turn of a fresh org against a warm
//! one, the peak RSS of a turn of the `all` chart, and `lemming status` and
//! `lemming validate` on the same orgs.
//!
//! Every figure is of a whole child process: wall time from spawn to exit,
//! user and system CPU and peak RSS from `wait4`'s rusage.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::daemon::lemming_bin;
use crate::synth::{self, Calls, Shape, Spec};

/// Agent counts run when `LEMMING_BENCH_SIZES` is not set.
const DEFAULT_SIZES: [usize; 4] = [100, 1000, 5000, 10000];
/// Unread messages per agent in every scale org.
const UNREAD: usize = 10;
/// Sizes up to this many agents run at least [`SMALL_RUNS`] times.
const SMALL: usize = 100;
/// See [`SMALL`].
const SMALL_RUNS: usize = 15;
/// Runs of `status` and `validate` per size.
const QUERY_RUNS: usize = 5;
/// Step time within this many times the floor's, at every size.
const MAX_STEP_OVER_FLOOR: f64 = 1.25;
/// The first turn of a fresh org within this many times a warm one.
const MAX_COLD_OVER_WARM: f64 = 1.3;
/// Peak RSS of one turn at 10,000 agents, in MB.
const MAX_RSS_10K_MB: f64 = 40.0;
/// Peak RSS of one turn of the `all` chart at 1,000 agents, in MB.
const MAX_RSS_ALL_MB: f64 = 25.0;
/// How long the measured runs wait after the bench last removed anything.
/// An ext4 without a journal (as on the machine in BENCHMARKS.md) looks past
/// every inode freed in the last 60 seconds each time it makes one, and in
/// the last 360 seconds when the block of the inode table it looks at has
/// changes not yet written (`recently_deleted` in `fs/ext4/ialloc.c`), as it
/// has once a turn made an inode beside it. A turn makes a file per agent
/// (its reply), a first turn three: without the wait, a turn pays for the
/// bench's own cleanup, which no user's turn follows. The orgs of every
/// size are removed at the end, not between sizes, so the bench waits once.
const FORGET: Duration = Duration::from_secs(361);

/// What one child process cost.
#[derive(Debug, Clone, Default)]
pub struct Cost {
    /// Spawn to exit, in ms.
    pub wall_ms: f64,
    /// User CPU, in ms.
    pub user_ms: f64,
    /// System CPU, in ms.
    pub sys_ms: f64,
    /// Peak resident set, in KB.
    pub rss_kb: u64,
    /// What it printed on stdout.
    pub stdout: String,
}

fn timeval_ms(t: libc::timeval) -> f64 {
    t.tv_sec as f64 * 1000.0 + t.tv_usec as f64 / 1000.0
}

/// Runs `cmd` to its end and returns its cost; an error (with its stderr) if
/// it did not exit with 0.
pub fn run_timed(cmd: &mut Command) -> Result<Cost, String> {
    let what = format!("{cmd:?}");
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let t = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("{what}: {e}"))?;
    let mut err_pipe = child.stderr.take().ok_or("no stderr pipe")?;
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let mut stdout = String::new();
    let read = child.stdout.take().ok_or("no stdout pipe")?.read_to_string(&mut stdout);
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain integers, for which all zeroes is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = loop {
        // SAFETY: both pointers are to live locals; the child is ours and not yet reaped.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == -1 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        break r;
    };
    let wall_ms = t.elapsed().as_secs_f64() * 1000.0;
    let stderr = stderr.join().unwrap_or_default();
    if reaped != pid {
        return Err(format!("{what}: wait4: {}", std::io::Error::last_os_error()));
    }
    read.map_err(|e| format!("{what}: reading its output: {e}"))?;
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        return Err(format!("{what} failed (wait status {status}): {}", stderr.trim()));
    }
    Ok(Cost {
        wall_ms,
        user_ms: timeval_ms(ru.ru_utime),
        sys_ms: timeval_ms(ru.ru_stime),
        rss_kb: ru.ru_maxrss as u64,
        stdout,
    })
}

/// Reads `LEMMING_BENCH_SIZES`: agent counts, comma-separated.
fn sizes(var: Option<&str>) -> Result<Vec<usize>, String> {
    let Some(var) = var.filter(|v| !v.trim().is_empty()) else { return Ok(DEFAULT_SIZES.to_vec()) };
    var.split(',')
        .map(|s| match s.trim().parse::<usize>() {
            Ok(n) if n >= 2 => Ok(n),
            _ => Err(format!(
                "LEMMING_BENCH_SIZES={var:?}: {:?} is not an agent count of 2 or more; give comma-separated counts, e.g. 100,1000",
                s.trim()
            )),
        })
        .collect()
}

/// The first 200 characters of `s`, for an error message.
fn head(s: &str) -> String {
    s.chars().take(200).collect()
}

/// Checks what `lemming step --json` printed: one turn that ran all `agents`
/// and failed none, so a step that did less cannot pass for a fast one.
fn check_step(json: &str, agents: usize) -> Result<(), String> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("step --json did not print JSON ({e}): {:?}", head(json)))?;
    let turns = v.as_array().ok_or_else(|| format!("step --json: not a list of turns: {:?}", head(json)))?;
    let [turn] = turns.as_slice() else {
        return Err(format!("step --json: {} turns, expected 1", turns.len()));
    };
    let ran = turn["ran"].as_array().ok_or("step --json: no `ran` list")?.len();
    let failed = turn["failed"].as_array().ok_or("step --json: no `failed` list")?;
    if ran != agents || !failed.is_empty() {
        let first = failed.first().map(|f| format!(", first failure: {f}")).unwrap_or_default();
        return Err(format!("step ran {ran} of {agents} agents, {} failed{first}", failed.len()));
    }
    Ok(())
}

/// Checks what `lemming validate --json` printed: valid, with all `agents`.
fn check_validate(json: &str, agents: usize) -> Result<(), String> {
    let v: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| format!("validate --json did not print JSON ({e}): {:?}", head(json)))?;
    if v["ok"] != serde_json::Value::Bool(true) || v["agents"].as_u64() != Some(agents as u64) {
        return Err(format!("validate: expected ok with {agents} agents, got {:?}", head(json)));
    }
    Ok(())
}

fn spec(agents: usize, shape: Shape) -> Spec {
    Spec { agents, unread: UNREAD, shape, latency_ms: 0, max_parallel: 8, calls: Calls::None, sandbox: None }
}

fn sync() {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
}

/// One whole-process `lemming --org DIR step --json`, checked.
fn step(dir: &Path, agents: usize) -> Result<Cost, String> {
    let c = run_timed(Command::new(lemming_bin()?).arg("--org").arg(dir).args(["step", "--json"]))?;
    check_step(&c.stdout, agents).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(c)
}

/// One whole-process floor (`lemming-bench measure floor DIR ...`), checked.
fn floor(dir: &Path, spec: &Spec) -> Result<Cost, String> {
    let c = run_timed(&mut crate::measure_cmd("floor", dir, spec)?)?;
    check_floor(dir, spec.agents).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(c)
}

/// Checks, after the floor, that it did its work: each agent's `inbox/new`
/// holds only the reply of the agent before it in name order, as the floor
/// delivers (its unread mail moved to `cur/`).
fn check_floor(dir: &Path, agents: usize) -> Result<(), String> {
    let mut order: Vec<String> = (0..agents).map(synth::name).collect();
    order.sort();
    for (i, me) in order.iter().enumerate() {
        let new_dir = dir.join("agents").join(me).join("inbox/new");
        let mut names: Vec<String> = std::fs::read_dir(&new_dir)
            .map_err(|e| format!("{}: {e}", new_dir.display()))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let want = format!("reply-{}.json", order[(i + agents - 1) % agents]);
        if names != [want.as_str()] {
            return Err(format!(
                "the floor did not do its work: {} holds {} file(s) ({}), expected only {want}",
                new_dir.display(),
                names.len(),
                head(&names.join(", "))
            ));
        }
    }
    Ok(())
}

/// Generates `spec` into `dir`, saying so on stderr, since a large org takes a while.
fn generate(dir: &Path, spec: &Spec, what: &str) -> Result<(), String> {
    eprintln!("scale: generating {} agents x {} unread ({}, {what})...", spec.agents, spec.unread, spec.shape);
    let t = Instant::now();
    synth::generate(dir, spec).map_err(|e| format!("generating {}: {e}", dir.display()))?;
    eprintln!("scale:   done in {:.1} s", t.elapsed().as_secs_f64());
    Ok(())
}

/// Fresh unread mail for `dir`'s next warm run. The mail it replaces goes
/// aside (next to the org) rather than away: freed inodes would make the
/// first turns run beside these warm ones pay for the bench's cleanup (see
/// [`FORGET`]).
fn inject(dir: &Path, spec: &Spec, round: usize) -> Result<(), String> {
    let aside = dir.with_extension("aside");
    synth::inject_aside(dir, spec, round, Some(&aside))
        .map_err(|e| format!("injecting into {}: {e}", dir.display()))?;
    sync();
    Ok(())
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// The median of a non-empty list (the upper one of an even count).
fn median_of(v: impl IntoIterator<Item = f64>) -> f64 {
    crate::median(v.into_iter().collect())
}

/// `ok < LIMIT unit`, or `OVER LIMIT unit`.
fn mark(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "OVER"
    }
}

/// `status` and `validate` at one size.
struct Queries {
    agents: usize,
    /// The first `status` after the turns: nothing kept from an earlier one.
    status_first_ms: f64,
    /// `status` again once the files have settled (median of [`QUERY_RUNS`]).
    status_ms: f64,
    validate_ms: f64,
}

/// Runs the scale tables; false when a limit was missed.
pub fn run(base: &Path, runs: usize) -> Result<bool, String> {
    let asked = runs.max(1);
    let sizes = sizes(std::env::var("LEMMING_BENCH_SIZES").ok().as_deref())?;
    let mut all_ok = true;
    println!();
    println!(
        "| agents x {UNREAD} unread (ring:4) | runs | step, warm (median) | floor (median) | step / floor | user CPU step / floor | sys CPU step / floor | peak RSS step | peak RSS floor | first turn, cold (median) | cold / warm | limits |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    let mut queries = Vec::new();
    // The benches before this one removed their orgs just now: wait before
    // making any org, so that each is measured soon after it is made, its
    // files still in memory, as a new org's are (this machine pages out
    // what was not touched for a minute).
    eprintln!(
        "scale: waiting {:.0} s, until the file system no longer looks past the inodes that the benches before removed (see BENCHMARKS.md)...",
        FORGET.as_secs_f64()
    );
    std::thread::sleep(FORGET);
    // Every size's orgs, removed at the end (see FORGET).
    let mut kept = Vec::new();
    for &n in &sizes {
        // A turn of a small org takes tens of milliseconds, where one
        // disturbance of the machine is a large share: more runs, as they are cheap.
        let runs = if n <= SMALL { asked.max(SMALL_RUNS) } else { asked };
        let s = spec(n, Shape::Ring(4));
        let tmp = tempfile::tempdir_in(base).map_err(|e| e.to_string())?;
        let (step_dir, floor_dir) = (tmp.path().join("step"), tmp.path().join("floor"));
        generate(&step_dir, &s, "the step's org")?;
        generate(&floor_dir, &s, "the floor's org")?;
        // As many first turns as warm runs, each on a fresh org of its own,
        // so that a median meets a median: one first turn alone is at the
        // mercy of one slow sync. Their orgs are all made before the first
        // of them runs, and removed with the rest at the end.
        let fresh: Vec<_> = (2..=runs).map(|r| tmp.path().join(format!("cold-{r}"))).collect();
        for dir in &fresh {
            generate(dir, &s, "a first turn's org")?;
        }
        sync();
        eprintln!("scale: {n} agents: {runs} first turn(s), each followed by a warm run of step and of the floor...");
        let mut colds = vec![step(&step_dir, n)?];
        // The floor's first run is not counted: it creates the journal and state folders.
        floor(&floor_dir, &s)?;
        let (mut steps, mut floors) = (Vec::new(), Vec::new());
        for r in 1..=runs {
            eprintln!("scale: {n} agents: run {r} of {runs}...");
            // A first turn and a warm one side by side, so that both meet
            // the machine as it is at the time.
            if let Some(dir) = r.checked_sub(2).and_then(|i| fresh.get(i)) {
                colds.push(step(dir, n)?);
            }
            inject(&step_dir, &s, r)?;
            steps.push(step(&step_dir, n)?);
            inject(&floor_dir, &s, r)?;
            floors.push(floor(&floor_dir, &s).map_err(|e| format!("the floor, run {r} on the same org: {e}"))?);
        }
        let warm = median_of(steps.iter().map(|c| c.wall_ms));
        let fl = median_of(floors.iter().map(|c| c.wall_ms));
        let cold = median_of(colds.iter().map(|c| c.wall_ms));
        let rss_s = steps.iter().chain(&colds).map(|c| c.rss_kb).max().unwrap_or(0);
        let rss_f = floors.iter().map(|c| c.rss_kb).max().unwrap_or(0);
        let (ratio, cold_ratio) = (warm / fl, cold / warm);
        let mut missed = Vec::new();
        if ratio > MAX_STEP_OVER_FLOOR {
            missed.push(format!("step / floor > {MAX_STEP_OVER_FLOOR}"));
        }
        if cold_ratio > MAX_COLD_OVER_WARM {
            missed.push(format!("cold / warm > {MAX_COLD_OVER_WARM}"));
        }
        if n == 10000 && mb(rss_s) >= MAX_RSS_10K_MB {
            missed.push(format!("RSS step >= {MAX_RSS_10K_MB} MB"));
        }
        all_ok &= missed.is_empty();
        let limits = if missed.is_empty() {
            let rss = if n == 10000 { format!(", RSS < {MAX_RSS_10K_MB} MB") } else { String::new() };
            format!("ok: step / floor <= {MAX_STEP_OVER_FLOOR}, cold / warm <= {MAX_COLD_OVER_WARM}{rss}")
        } else {
            format!("OVER: {}", missed.join(", "))
        };
        println!(
            "| {n} | {runs} | {warm:.0} ms | {fl:.0} ms | {ratio:.2}x | {:.0} / {:.0} ms | {:.0} / {:.0} ms | {:.1} MB | {:.1} MB | {:.0} ms | {cold_ratio:.2}x | {limits} |",
            median_of(steps.iter().map(|c| c.user_ms)),
            median_of(floors.iter().map(|c| c.user_ms)),
            median_of(steps.iter().map(|c| c.sys_ms)),
            median_of(floors.iter().map(|c| c.sys_ms)),
            mb(rss_s),
            mb(rss_f),
            cold,
        );
        eprintln!("scale: {n} agents: status and validate, {QUERY_RUNS} runs each...");
        queries.push(run_queries(&step_dir, n)?);
        kept.push(tmp);
    }
    all_ok &= print_queries(&queries);
    all_ok &= run_all_chart(base)?;
    eprintln!("scale: removing the orgs...");
    for tmp in kept {
        tmp.close().map_err(|e| e.to_string())?;
    }
    Ok(all_ok)
}

fn run_queries(dir: &Path, agents: usize) -> Result<Queries, String> {
    let bin = lemming_bin()?;
    let status = || run_timed(Command::new(&bin).arg("--org").arg(dir).arg("status")).map(|c| c.wall_ms);
    let status_first_ms = status()?;
    // `status` keeps only what has not changed for a while (the file system's
    // clock ticks coarsely): the files the turns wrote settle, and one
    // `status` keeps what it read of them.
    std::thread::sleep(lemming_engine::view_cache::SETTLED + std::time::Duration::from_millis(100));
    status()?;
    let (mut again, mut validate) = (Vec::new(), Vec::new());
    for _ in 0..QUERY_RUNS {
        again.push(status()?);
        let v = run_timed(Command::new(&bin).arg("--org").arg(dir).args(["validate", "--json"]))?;
        check_validate(&v.stdout, agents)?;
        validate.push(v.wall_ms);
    }
    Ok(Queries { agents, status_first_ms, status_ms: median_of(again), validate_ms: median_of(validate) })
}

/// The status and validate table; false when a limit was missed.
fn print_queries(queries: &[Queries]) -> bool {
    println!();
    println!(
        "| agents (warm org) | `status`, first after the turns | `status` again (median of {QUERY_RUNS}) | limit | `validate` (median of {QUERY_RUNS}) | validate per agent | limit |"
    );
    println!("|---:|---:|---:|---|---:|---:|---|");
    let mut all_ok = true;
    for q in queries {
        let status_limit = match q.agents {
            1000 => Some(30.0),
            10000 => Some(200.0),
            _ => None,
        };
        let validate_limit = (q.agents == 10000).then_some(1000.0);
        let cell = |ms: f64, limit: Option<f64>, all_ok: &mut bool| match limit {
            Some(l) => {
                *all_ok &= ms < l;
                format!("{} < {l:.0} ms", mark(ms < l))
            }
            None => String::new(),
        };
        let sl = cell(q.status_ms, status_limit, &mut all_ok);
        let vl = cell(q.validate_ms, validate_limit, &mut all_ok);
        println!(
            "| {} | {:.1} ms | {:.1} ms | {sl} | {:.1} ms | {:.1} µs | {vl} |",
            q.agents,
            q.status_first_ms,
            q.status_ms,
            q.validate_ms,
            q.validate_ms * 1000.0 / q.agents as f64
        );
    }
    all_ok
}

/// One warm turn of the `all` chart at 1,000 agents; false when over its RSS limit.
fn run_all_chart(base: &Path) -> Result<bool, String> {
    let s = spec(1000, Shape::All);
    let tmp = tempfile::tempdir_in(base).map_err(|e| e.to_string())?;
    let dir = tmp.path().join("step");
    generate(&dir, &s, "the all chart")?;
    sync();
    step(&dir, s.agents)?;
    inject(&dir, &s, 1)?;
    let warm = step(&dir, s.agents)?;
    let ok = mb(warm.rss_kb) < MAX_RSS_ALL_MB;
    println!();
    println!("| one warm turn, whole process | time | peak RSS | limit |");
    println!("|---|---:|---:|---|");
    println!(
        "| 1000 agents x {UNREAD} unread (all) | {:.0} ms | {:.1} MB | {} < {MAX_RSS_ALL_MB:.0} MB |",
        warm.wall_ms,
        mb(warm.rss_kb),
        mark(ok)
    );
    tmp.close().map_err(|e| e.to_string())?;
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_default_read_a_list_and_refuse_what_is_not_a_count() {
        assert_eq!(sizes(None).unwrap(), vec![100, 1000, 5000, 10000]);
        assert_eq!(sizes(Some("")).unwrap(), vec![100, 1000, 5000, 10000]);
        assert_eq!(sizes(Some("100, 1000")).unwrap(), vec![100, 1000]);
        assert_eq!(sizes(Some("7")).unwrap(), vec![7]);
        for bad in ["100,x", "1", "0", "100,,1000", "-5"] {
            let e = sizes(Some(bad)).unwrap_err();
            assert!(e.starts_with("LEMMING_BENCH_SIZES=") && e.contains("e.g. 100,1000"), "{bad}: {e}");
        }
        assert!(sizes(Some("100,x")).unwrap_err().contains("\"x\" is not"));
    }

    fn turn(ran: usize, failed: &[(&str, &str)]) -> String {
        let ran: Vec<String> = (0..ran).map(synth::name).collect();
        serde_json::json!([{"turn": 3, "delivered": 0, "ran": ran, "failed": failed}]).to_string()
    }

    #[test]
    fn a_step_passes_only_when_it_ran_every_agent_and_none_failed() {
        check_step(&turn(4, &[]), 4).unwrap();
        assert_eq!(check_step(&turn(3, &[]), 4).unwrap_err(), "step ran 3 of 4 agents, 0 failed");
        let e = check_step(&turn(4, &[("a0001", "mock: boom")]), 4).unwrap_err();
        assert!(e.starts_with("step ran 4 of 4 agents, 1 failed, first failure: ") && e.contains("boom"), "{e}");
        assert!(check_step("turn 1: ran 4", 4).unwrap_err().contains("did not print JSON"));
        assert_eq!(check_step("[]", 4).unwrap_err(), "step --json: 0 turns, expected 1");
        assert_eq!(check_step("[{\"failed\":[]}]", 4).unwrap_err(), "step --json: no `ran` list");
        assert!(check_step("{}", 4).unwrap_err().contains("not a list of turns"));
    }

    #[test]
    fn validate_passes_only_when_ok_with_every_agent() {
        check_validate(r#"{"ok":true,"agents":10,"problems":[]}"#, 10).unwrap();
        assert!(check_validate(r#"{"ok":true,"agents":9,"problems":[]}"#, 10).is_err());
        assert!(check_validate(r#"{"ok":false,"agents":10,"problems":["x"]}"#, 10).is_err());
        assert!(check_validate("ok: 10 agents are valid", 10).is_err());
    }

    #[test]
    fn the_floor_is_checked_and_runs_again_on_an_org_it_ran_on() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Spec { agents: 3, unread: 2, shape: Shape::Ring(1), ..spec(3, Shape::Ring(1)) };
        synth::generate(tmp.path(), &s).unwrap();
        let e = check_floor(tmp.path(), 3).unwrap_err();
        assert!(e.starts_with("the floor did not do its work: ") && e.contains("holds 2 file(s)"), "{e}");
        crate::floor::run(tmp.path()).unwrap();
        check_floor(tmp.path(), 3).unwrap();
        for round in 1..=2 {
            synth::inject(tmp.path(), &s, round).unwrap();
            assert!(check_floor(tmp.path(), 3).is_err(), "fresh mail is unread before the floor runs");
            crate::floor::run(tmp.path()).unwrap();
            check_floor(tmp.path(), 3).unwrap();
        }
        let cur = tmp.path().join("agents/a0001/inbox/cur");
        assert_eq!(std::fs::read_dir(cur).unwrap().count(), 6, "three rounds of 2 messages were read");
    }

    #[test]
    fn median_takes_the_middle_whatever_the_order() {
        assert_eq!(median_of([3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median_of([5.0]), 5.0);
        assert_eq!(median_of([4.0, 1.0, 3.0, 2.0]), 3.0);
    }

    #[test]
    fn run_timed_reports_a_child_s_cpu_rss_and_output_and_refuses_a_failure() {
        let c =
            run_timed(Command::new("sh").args(["-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; echo done"]))
                .unwrap();
        assert_eq!(c.stdout, "done\n");
        assert!(c.user_ms + c.sys_ms > 0.0, "{c:?}");
        assert!(c.wall_ms > 0.0 && c.rss_kb > 0, "{c:?}");
        let e = run_timed(Command::new("sh").args(["-c", "echo nope >&2; exit 3"])).unwrap_err();
        assert!(e.contains("failed") && e.contains("nope"), "{e}");
    }
}
