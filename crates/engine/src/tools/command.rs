//! `run_command {program, args?}`: a program from the agent's allowlist
//! (`permissions.commands`), argv only (never a shell), in its workspace,
//! inside the OS [`super::sandbox`].
//!
//! - `program` is a name on the allowlist, looked up in lemming's `PATH`; a
//!   name with `/` is refused.
//! - `args` is a list of text, each passed as one argument as it is (`a; b`
//!   is one argument: no shell ever reads it). An absolute path or a `..`
//!   component (also after `=`, as in `--out=../x`) is refused.
//! - Code on the command line (`python3 -c`, `sh -c`, `node -e`, `perl -e`,
//!   ...) is refused unless the allowlist holds that very form, e.g.
//!   `"python3 -c"`.
//! - stdin is closed; the output is the exit status, stdout and stderr,
//!   together cut at `max_output_bytes`; at `timeout_secs` the program and
//!   everything it started are killed.

use serde_json::Value;

use super::sandbox::{Job, Output, Sandbox};
use super::{Ctx, Outcome};

/// The tool's name.
const TOOL: &str = "run_command";

/// An interpreter's way of taking code on the command line.
struct Inline {
    /// The form `permissions.commands` must hold after the program's name to allow it (`-c`).
    flag: &'static str,
    /// Its short letter, also inside a cluster such as `-ec` (`None`: a word, not a flag).
    letter: Option<char>,
    /// Its long forms and words (`--eval`, deno's `eval`).
    long: &'static [&'static str],
}

const fn short(flag: &'static str, letter: char, long: &'static [&'static str]) -> Inline {
    Inline { flag, letter: Some(letter), long }
}

const SHELL: &[Inline] = &[short("-c", 'c', &[])];
const PYTHON: &[Inline] = &[short("-c", 'c', &[])];
const NODE: &[Inline] = &[short("-e", 'e', &["--eval"]), short("-p", 'p', &["--print"])];
const DENO: &[Inline] = &[Inline { flag: "eval", letter: None, long: &["eval"] }];
const PERL: &[Inline] = &[short("-e", 'e', &[]), short("-E", 'E', &[])];
const RUBY_LUA_R: &[Inline] = &[short("-e", 'e', &[])];
const PHP: &[Inline] = &[short("-r", 'r', &[])];

/// The ways `program` takes code on the command line (empty: not an interpreter lemming knows).
fn inline_forms(program: &str) -> &'static [Inline] {
    // python3.12, perl5.36, lua5.4: a version after the name is the same interpreter.
    let base = program.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    match base {
        "sh" | "bash" | "dash" | "zsh" | "ksh" | "mksh" | "ash" | "yash" | "fish" | "csh" | "tcsh" | "busybox" => SHELL,
        "python" | "pypy" => PYTHON,
        "node" | "nodejs" | "bun" => NODE,
        "deno" => DENO,
        "perl" => PERL,
        "ruby" | "lua" | "luajit" | "Rscript" | "R" => RUBY_LUA_R,
        "php" => PHP,
        _ => &[],
    }
}

/// The first argument that gives `program` code to run, and its form (`-c`).
fn inline_code<'a>(program: &str, args: &'a [String]) -> Option<(&'a str, &'static str)> {
    let forms = inline_forms(program);
    for a in args {
        let name = a.split('=').next().unwrap_or(a);
        for f in forms {
            let long = f.long.contains(&name);
            let cluster = !a.starts_with("--")
                && a.len() > 1
                && a.starts_with('-')
                && f.letter.is_some_and(|l| a[1..].split('=').next().unwrap_or("").contains(l));
            if long || cluster {
                return Some((a, f.flag));
            }
        }
    }
    None
}

/// Why an argument is refused: an absolute path or a `..` component,
/// anywhere in it: the whole argument, the value of `--opt=VALUE` or
/// `-oVALUE` (an option letter with its value attached, as `tar -C/`), and
/// each part after `=`, `:`, `,` or `@` (`file:/x`, `@/x`, `a,/x`).
fn bad_arg(a: &str) -> Option<&'static str> {
    if a.contains('\0') {
        return Some("text with a NUL byte");
    }
    // `-C/home` and `-C..`: a short option with its value attached.
    let attached = a.strip_prefix('-').filter(|r| !r.starts_with('-')).and_then(|r| r.get(1..));
    let parts = a.split(['=', ':', ',', '@']).chain(attached);
    let mut absolute = false;
    let mut dotdot = false;
    for p in parts {
        absolute |= p.starts_with('/') || p.starts_with('~');
        dotdot |= p.split('/').any(|c| c == "..");
    }
    if absolute {
        Some("an absolute path; only paths relative to the workspace are allowed")
    } else if dotdot {
        Some("a path with `..`; only paths inside the workspace are allowed")
    } else {
        None
    }
}

/// Text shown in an error, on one line and not too long.
fn shown(s: &str) -> String {
    crate::term::line(&s.chars().take(80).collect::<String>()).into_owned()
}

/// What a call asks for, checked against the allowlist: the program's name and its arguments.
fn check(ctx: &Ctx<'_>, args: &Value) -> Result<(String, Vec<String>), String> {
    let program = match args.get("program") {
        Some(Value::String(p)) => p.clone(),
        Some(other) => return Err(format!("`program` must be text (a program's name), not {other}")),
        None => return Err("missing `program`: give the name of a program in permissions.commands".into()),
    };
    let list: Vec<String> = match args.get("args") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(format!("`args` item {} must be text, not {other}", i + 1)),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(format!("`args` must be a list of text, not {other}")),
    };
    if let Some(extra) = args.as_object().and_then(|o| o.keys().find(|k| *k != "program" && *k != "args")) {
        return Err(format!("unknown argument `{}` (run_command takes program and args)", shown(extra)));
    }
    if program.contains('/') {
        return Err(format!(
            "`{}` is a path: give the program's name, as listed in permissions.commands; it is looked up in PATH",
            shown(&program)
        ));
    }
    let allowed = &ctx.resume.commands;
    let listed = allowed.iter().any(|c| c.split_whitespace().next() == Some(program.as_str()));
    if program.is_empty() || !listed {
        let names: Vec<&String> = allowed.iter().collect();
        let names = if names.is_empty() {
            "none".to_string()
        } else {
            names.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        };
        return Err(format!("not permitted: `{}` is not in permissions.commands (allowed: {names})", shown(&program)));
    }
    for (i, a) in list.iter().enumerate() {
        if let Some(why) = bad_arg(a) {
            return Err(format!("argument {} (`{}`) is refused: {why}", i + 1, shown(a)));
        }
    }
    if let Some((arg, flag)) = inline_code(&program, &list) {
        let entry = format!("{program} {flag}");
        if !allowed.iter().any(|c| c.split_whitespace().collect::<Vec<_>>().join(" ") == entry) {
            return Err(format!(
                "not permitted: `{}` runs code given on the command line (`{}`); only permissions.commands entry \"{entry}\" allows that",
                shown(&program),
                shown(arg)
            ));
        }
    }
    Ok((program, list))
}

/// Runs `args.program` with `args.args`, in the sandbox org.toml's `sandbox` gives.
pub async fn run(ctx: &Ctx<'_>, args: &Value) -> Outcome {
    match Sandbox::for_mode(ctx.org.settings.sandbox) {
        Ok(sandbox) => run_in(ctx, args, &sandbox).await,
        Err(why) => match check(ctx, args) {
            // The call's own mistakes first: they do not depend on the machine.
            Err(e) => Outcome::err(TOOL, e),
            Ok(_) => Outcome::err(TOOL, why),
        },
    }
}

/// Runs the call in `sandbox`.
pub async fn run_in(ctx: &Ctx<'_>, args: &Value, sandbox: &Sandbox) -> Outcome {
    let (program, list) = match check(ctx, args) {
        Ok(v) => v,
        Err(e) => return Outcome::err(TOOL, e),
    };
    let path = match lemming_provider::program::resolve(&program) {
        Ok(p) => p,
        Err(_) => return Outcome::err(TOOL, format!("program `{}` is not installed (not in PATH)", shown(&program))),
    };
    let limits = &ctx.org.settings.tools;
    let job = Job {
        program: &path,
        args: &list,
        workspace: &ctx.org.layout.workspace(ctx.agent),
        org: &ctx.org.layout.root,
        env: &limits.env,
        stdin: None,
        timeout: ctx.timeout(),
        max_output: usize::try_from(limits.max_output_bytes).unwrap_or(usize::MAX),
    };
    match sandbox.run(job).await {
        Ok(out) => outcome(&program, ctx.timeout().as_secs_f64(), out),
        Err(e) => Outcome::err(TOOL, e),
    }
}

/// The output as the agent reads it: the exit status, then stdout and stderr, labelled.
pub fn sections(out: &Output) -> String {
    let mut text = match out.ran.status.and_then(|s| s.code()) {
        Some(c) => format!("exit status: {c}\n"),
        None => format!("{}\n", out.ran.how()),
    };
    for (label, body) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        text.push_str(&format!("--- {label}\n{body}"));
        if !body.is_empty() && !body.ends_with('\n') {
            text.push('\n');
        }
    }
    if out.truncated {
        text.push_str("--- (output cut at max_output_bytes)\n");
    }
    text
}

fn outcome(program: &str, secs: f64, out: Output) -> Outcome {
    let mut o = if out.ran.timed_out {
        Outcome::err(TOOL, format!("timed out after {secs}s; killed\n{}", sections(&out)))
    } else if out.ran.success() {
        Outcome::ok(TOOL, sections(&out), out.truncated)
    } else {
        Outcome::err(TOOL, format!("`{program}` {}\n{}", out.ran.how(), sections(&out)))
    };
    o.truncated = out.truncated;
    o
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::{Duration, Instant};

    use serde_json::json;

    use super::*;
    use crate::org::Org;
    use crate::resume::Resume;
    use crate::settings::SandboxMode;
    use crate::tools::sandbox::testing::sandboxes;

    fn setup(mode: SandboxMode) -> (tempfile::TempDir, Org) {
        let (d, root) = crate::testing::new_org();
        let mut org = Org::load(&root).unwrap();
        org.settings.sandbox = mode;
        (d, org)
    }

    fn resume(org: &Org, commands: &[&str]) -> Resume {
        let mut r = org.agent("manager").unwrap().clone();
        r.tools = vec![TOOL.into()];
        r.commands = commands.iter().map(|s| s.to_string()).collect();
        r
    }

    async fn call(org: &Org, r: &Resume, args: Value, sandbox: Option<&Sandbox>) -> Outcome {
        let ctx = Ctx { org, agent: "manager", resume: r, turn: 1, now: chrono::Utc::now() };
        match sandbox {
            Some(s) => run_in(&ctx, &args, s).await,
            None => run(&ctx, &args).await,
        }
    }

    fn err(o: &Outcome) -> &str {
        assert!(!o.ok, "{o:?}");
        o.error.as_deref().unwrap()
    }

    #[tokio::test]
    async fn refuses_what_the_allowlist_and_the_rules_do_not_allow() {
        let (_d, org) = setup(SandboxMode::None);
        let r = resume(&org, &["echo", "python3", "sh", "bash", "node", "perl -e"]);
        let cases: Vec<(Value, &str)> = vec![
            (
                json!({"program": "rm", "args": ["-rf", "x"]}),
                "not permitted: `rm` is not in permissions.commands (allowed: echo, python3, sh, bash, node, perl -e)",
            ),
            (json!({"program": "/bin/echo"}), "is a path"),
            (json!({"program": "./echo"}), "is a path"),
            (json!({"program": ""}), "not permitted"),
            (json!({"program": 3}), "`program` must be text"),
            (json!({}), "missing `program`"),
            (json!({"program": "echo", "args": "a b"}), "`args` must be a list of text"),
            (json!({"program": "echo", "args": ["a", 2]}), "`args` item 2 must be text"),
            (json!({"program": "echo", "argv": []}), "unknown argument `argv`"),
            (
                json!({"program": "echo", "args": ["/etc/passwd"]}),
                "argument 1 (`/etc/passwd`) is refused: an absolute path",
            ),
            (
                json!({"program": "echo", "args": ["ok", "--out=/etc/x"]}),
                "argument 2 (`--out=/etc/x`) is refused: an absolute path",
            ),
            (json!({"program": "echo", "args": ["../../x.txt"]}), "is refused: a path with `..`"),
            (json!({"program": "echo", "args": ["a/../../b"]}), "a path with `..`"),
            (json!({"program": "echo", "args": ["--in=../x"]}), "a path with `..`"),
            (
                json!({"program": "python3", "args": ["-c", "print(1)"]}),
                "only permissions.commands entry \"python3 -c\" allows that",
            ),
            (json!({"program": "python3", "args": ["-Ic", "print(1)"]}), "\"python3 -c\""),
            (json!({"program": "sh", "args": ["-ec", "id"]}), "\"sh -c\""),
            (json!({"program": "bash", "args": ["-l", "-c", "id"]}), "\"bash -c\""),
            (json!({"program": "node", "args": ["--eval=1"]}), "\"node -e\""),
            (json!({"program": "node", "args": ["-p", "1"]}), "\"node -p\""),
            (json!({"program": "perl", "args": ["-E", "say 1"]}), "\"perl -E\""),
        ];
        for (args, want) in cases {
            let o = call(&org, &r, args.clone(), None).await;
            assert!(err(&o).contains(want), "{args}: {o:?}");
        }
        // Neither `..` inside a name nor a relative path is refused; nor is a script.
        for a in ["a..b", "notes/x.txt", "x=1", "-n", "-la", "--color=auto", "a:b", "x@y"] {
            assert!(bad_arg(a).is_none(), "{a}");
        }
        // Paths hidden in an option's value, attached or after a separator.
        for a in ["-C/", "-C..", "-o/home/u/x", "file:/etc/passwd", "@/etc/passwd", "a,/x", "x=~/y", "~", "-I../x"] {
            assert!(bad_arg(a).is_some(), "{a}");
        }
        assert!(inline_code("python3", &["script.py".into()]).is_none());
        assert!(inline_code("python3.12", &["-c".into()]).is_some());
        assert!(inline_code("echo", &["-c".into()]).is_none());
        // An empty allowlist says so.
        let none = resume(&org, &[]);
        let o = call(&org, &none, json!({"program": "echo"}), None).await;
        assert!(err(&o).ends_with("(allowed: none)"), "{o:?}");
    }

    #[tokio::test]
    async fn argv_only_closed_stdin_and_a_clean_environment() {
        let (_d, org) = setup(SandboxMode::None);
        let r = resume(&org, &["echo", "cat", "env", "python3 -c", "false"]);
        let o = call(&org, &r, json!({"program": "echo", "args": ["a; echo b", "$(id)", "`id`", "*"]}), None).await;
        assert!(o.ok, "{o:?}");
        assert_eq!(o.output.as_deref(), Some("exit status: 0\n--- stdout\na; echo b $(id) `id` *\n--- stderr\n"));
        // stdin is closed: cat ends at once instead of waiting for input.
        let t = Instant::now();
        let o = call(&org, &r, json!({"program": "cat"}), None).await;
        assert!(o.ok && t.elapsed() < Duration::from_secs(5), "{o:?}");
        // Only the variables of [tools] env are passed (PATH and LANG by default).
        let o = call(&org, &r, json!({"program": "env"}), None).await;
        let out = o.output.unwrap();
        assert!(out.contains("PATH=") && !out.contains("HOME="), "{out}");
        // The allowed inline form runs, in the workspace.
        let o =
            call(&org, &r, json!({"program": "python3", "args": ["-c", "import os; print(os.getcwd())"]}), None).await;
        let ws = org.layout.workspace("manager").canonicalize().unwrap();
        assert!(o.output.as_deref().unwrap().contains(&format!("{}\n", ws.display())), "{o:?}");
        // A program that is allowed but not installed.
        let r = resume(&org, &["lemming-no-such-program"]);
        let o = call(&org, &r, json!({"program": "lemming-no-such-program"}), None).await;
        assert!(err(&o).contains("is not installed"), "{o:?}");
    }

    #[tokio::test]
    async fn a_failure_keeps_its_output_and_a_long_output_is_cut() {
        let (_d, mut org) = setup(SandboxMode::None);
        org.settings.tools.max_output_bytes = 100;
        let r = resume(&org, &["sh -c", "seq"]);
        let o = call(&org, &r, json!({"program": "sh", "args": ["-c", "echo out; echo oops >&2; exit 3"]}), None).await;
        assert_eq!(err(&o), "`sh` exited with status 3\nexit status: 3\n--- stdout\nout\n--- stderr\noops\n");
        let o = call(&org, &r, json!({"program": "seq", "args": ["1", "100000"]}), None).await;
        assert!(o.ok && o.truncated, "{o:?}");
        let out = o.output.unwrap();
        assert!(
            out.starts_with("exit status: 0\n--- stdout\n1\n2\n")
                && out.ends_with("(output cut at max_output_bytes)\n")
        );
        assert!(out.len() < 200, "{out}");
    }

    /// Whether a process whose command line is `cmdline` is running.
    fn running(cmdline: &str) -> bool {
        std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " ").trim() == cmdline)
                .unwrap_or(false)
        })
    }

    #[tokio::test]
    async fn a_command_past_its_timeout_is_killed_with_its_children_in_every_sandbox() {
        let (_d, mut org) = setup(SandboxMode::None);
        org.settings.tools.timeout_secs = 0.5;
        let r = resume(&org, &["sh -c"]);
        let mut all = sandboxes("a_command_past_its_timeout_is_killed_with_its_children_in_every_sandbox");
        all.push(Sandbox::None);
        for (i, s) in all.iter().enumerate() {
            let (a, b) = (format!("{}", 4711 + 2 * i), format!("{}", 4712 + 2 * i));
            let script = format!("sleep {a} & sleep {b}");
            let t = Instant::now();
            let o = call(&org, &r, json!({"program": "sh", "args": ["-c", script]}), Some(s)).await;
            assert!(err(&o).starts_with("timed out after 0.5s; killed"), "{s:?}: {o:?}");
            assert!(t.elapsed() < Duration::from_secs(5), "{s:?}: {:?}", t.elapsed());
            let gone = (0..200).any(|_| {
                std::thread::sleep(Duration::from_millis(10));
                !running(&format!("sleep {a}")) && !running(&format!("sleep {b}"))
            });
            assert!(gone, "{s:?}: a sleep survived the timeout");
        }
    }

    #[tokio::test]
    async fn inside_the_sandbox_only_the_workspace_is_writable_and_there_is_no_network() {
        let all = sandboxes("inside_the_sandbox_only_the_workspace_is_writable_and_there_is_no_network");
        let (d, org) = setup(SandboxMode::None);
        let r = resume(&org, &["sh -c", "bash -c"]);
        let outside = d.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        for s in &all {
            let target = outside.join(format!("{}.txt", s.kind()));
            let script = format!("echo x > {}", target.display());
            let o = call(&org, &r, json!({"program": "sh", "args": ["-c", script]}), Some(s)).await;
            assert!(!o.ok && !target.exists(), "{s:?} wrote outside the workspace: {o:?}");
            // Nor a sibling's workspace.
            let sibling = org.layout.workspace("planner");
            std::fs::create_dir_all(&sibling).unwrap();
            let script = format!("echo x > {}/x.txt", sibling.display());
            let o = call(&org, &r, json!({"program": "sh", "args": ["-c", script]}), Some(s)).await;
            assert!(!o.ok && !sibling.join("x.txt").exists(), "{s:?}: {o:?}");
            let o = call(&org, &r, json!({"program": "sh", "args": ["-c", "echo inside > inside.txt"]}), Some(s)).await;
            assert!(o.ok, "{s:?}: {o:?}");
            let inside = org.layout.workspace("manager").join("inside.txt");
            assert_eq!(std::fs::read_to_string(&inside).unwrap(), "inside\n");
            std::fs::remove_file(&inside).unwrap();
            let script = format!("echo hello > /dev/tcp/127.0.0.1/{port}");
            let o = call(&org, &r, json!({"program": "bash", "args": ["-c", script]}), Some(s)).await;
            assert!(!o.ok, "{s:?} reached the network: {o:?}");
            assert!(listener.accept().is_err(), "{s:?}: the listener got a connection");
        }
        // Without a sandbox the same connection goes through: the test can tell.
        let script = format!("echo hello > /dev/tcp/127.0.0.1/{port}");
        let o = call(&org, &r, json!({"program": "bash", "args": ["-c", script]}), Some(&Sandbox::None)).await;
        assert!(o.ok, "{o:?}");
        let accepted = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            listener.accept().is_ok()
        });
        assert!(accepted);
        assert!(!Path::new(&outside.join("none.txt")).exists());
    }

    #[tokio::test]
    async fn under_bubblewrap_a_program_sees_its_workspace_and_nothing_else_of_the_org() {
        let all = sandboxes("under_bubblewrap_a_program_sees_its_workspace_and_nothing_else_of_the_org");
        let Some(bwrap) = all.iter().find(|s| s.kind() == "bwrap") else { return };
        let (_d, org) = setup(SandboxMode::None);
        let r = resume(&org, &["sh -c"]);
        let secret = org.layout.memory_dir("planner").join("plan.json");
        std::fs::create_dir_all(secret.parent().unwrap()).unwrap();
        std::fs::write(&secret, "\"the secret plan\"").unwrap();
        std::fs::create_dir_all(org.layout.workspace("manager")).unwrap();
        std::fs::write(org.layout.workspace("manager").join("mine.txt"), "mine").unwrap();
        let script = format!("cat mine.txt; cat {} ; ls {}", secret.display(), org.layout.agents_dir().display());
        let o = call(&org, &r, json!({"program": "sh", "args": ["-c", script.clone()]}), Some(bwrap)).await;
        // Only its own file, and only its own folder under agents/.
        let out = o.output.clone().unwrap_or_default();
        let stdout = out.split("--- stderr").next().unwrap_or_default();
        assert!(stdout.ends_with("--- stdout\nminemanager\n"), "{o:?}");
        // Unconfined, the same script reads it: the test can tell.
        let o = call(&org, &r, json!({"program": "sh", "args": ["-c", script]}), Some(&Sandbox::None)).await;
        assert!(format!("{o:?}").contains("the secret plan"), "{o:?}");
    }

    #[tokio::test]
    async fn with_no_sandbox_available_programs_are_refused_after_the_calls_own_checks() {
        let (_d, mut org) = setup(SandboxMode::None);
        let r = resume(&org, &["echo"]);
        // A mode whose sandbox this machine lacks: Landlock on a kernel without it,
        // else bwrap when it is not on PATH; with both present there is nothing to refuse.
        let mode = if crate::tools::sandbox::landlock_abi() == 0 {
            SandboxMode::Landlock
        } else if Sandbox::for_mode(SandboxMode::Bwrap).is_err() {
            SandboxMode::Bwrap
        } else {
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                b"SKIPPED: refusal without a sandbox: this machine has both bwrap and Landlock\n",
            );
            return;
        };
        org.settings.sandbox = mode;
        let o = call(&org, &r, json!({"program": "echo", "args": ["hi"]}), None).await;
        assert!(err(&o).starts_with("no sandbox available"), "{o:?}");
        let o = call(&org, &r, json!({"program": "rm"}), None).await;
        assert!(err(&o).contains("not in permissions.commands"), "{o:?}");
    }
}
