//! Custom tools, declared in `org/tools.toml` (`[tools.NAME]`): a program that
//! gets the call's args as JSON on stdin and answers on stdout.
//!
//! ```toml
//! [tools.word_count]
//! program = "tools/word-count.sh"    # a name in PATH, or a path relative to the org folder
//! args = ["--json"]                  # fixed arguments (optional)
//! description = "Counts the words of a file in the workspace."
//! timeout_secs = 10                  # optional; else [tools] timeout_secs of org.toml
//! idempotent = true                  # optional; true: running it twice does no harm
//!
//! [tools.word_count.parameters]      # a JSON schema of type object, written as TOML
//! type = "object"
//! required = ["path"]
//! properties.path = { type = "string", description = "a file in the workspace" }
//! ```
//!
//! [`parse`] reports every problem of the file, each at its line and column.
//! [`run`] runs the program in the [`super::sandbox`], in the agent's
//! workspace, with the timeout and the output cap; its stdout is the result,
//! and a failure keeps its stderr in the error.

use serde_json::Value;

pub use super::catalog::{parse, valid_name, CustomTool, MAX_DESCRIPTION_BYTES};
use super::sandbox::{Job, Sandbox};
use super::{Ctx, Outcome};

/// Runs a custom tool, in the sandbox org.toml's `sandbox` gives.
pub async fn run(ctx: &Ctx<'_>, name: &str, tool: &CustomTool, args: &Value) -> Outcome {
    match Sandbox::for_mode(ctx.org.settings.sandbox) {
        Ok(sandbox) => run_in(ctx, name, tool, args, &sandbox).await,
        Err(why) => Outcome::err(name, why),
    }
}

/// Runs a custom tool in `sandbox`: the call's args as JSON on its stdin, its stdout the result.
pub async fn run_in(ctx: &Ctx<'_>, name: &str, tool: &CustomTool, args: &Value, sandbox: &Sandbox) -> Outcome {
    let path = match lemming_provider::program::resolve(&tool.program) {
        Ok(p) => p,
        Err(e) => {
            return Outcome::err(name, format!("custom tool `{name}` cannot run: {e} (fix program in org/tools.toml)"))
        }
    };
    let limits = &ctx.org.settings.tools;
    let secs = tool.timeout_secs.unwrap_or(limits.timeout_secs);
    let job = Job {
        program: &path,
        args: &tool.args,
        workspace: &ctx.org.layout.workspace(ctx.agent),
        org: &ctx.org.layout.root,
        env: &limits.env,
        stdin: Some(serde_json::to_vec(args).unwrap_or_default()),
        timeout: std::time::Duration::from_secs_f64(secs),
        max_output: usize::try_from(limits.max_output_bytes).unwrap_or(usize::MAX),
    };
    let out = match sandbox.run(job).await {
        Ok(out) => out,
        Err(e) => return Outcome::err(name, e),
    };
    let stderr = String::from_utf8_lossy(&out.ran.stderr);
    let stderr = stderr.trim_end();
    let with_stderr = |m: String| if stderr.is_empty() { m } else { format!("{m}\n--- stderr\n{stderr}") };
    if out.ran.timed_out {
        Outcome::err(name, with_stderr(format!("timed out after {secs}s; killed")))
    } else if !out.ran.success() {
        Outcome::err(name, with_stderr(format!("`{name}` {}", out.ran.how())))
    } else {
        Outcome::ok(name, String::from_utf8_lossy(&out.ran.stdout), out.ran.stdout_over)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Diagnostic;
    use serde_json::json;
    use std::collections::BTreeMap;
    use std::path::Path;

    fn p(text: &str) -> Result<BTreeMap<String, CustomTool>, Vec<Diagnostic>> {
        parse(Path::new("org/tools.toml"), text, Path::new("/org"))
    }

    #[test]
    fn a_valid_file_gives_every_tool_with_its_defaults() {
        let tools = p(r#"
[tools.word_count]
program = "tools/wc.sh"
args = ["--json"]
description = "Counts words."
timeout_secs = 5
idempotent = true

[tools.word_count.parameters]
type = "object"
required = ["path"]
properties.path = { type = "string", description = "a file" }

[tools.ping-2]
program = "ping-tool"
description = "Pings."
"#)
        .unwrap();
        let wc = &tools["word_count"];
        assert_eq!(wc.program, "/org/tools/wc.sh");
        assert_eq!((wc.args.clone(), wc.timeout_secs, wc.idempotent), (vec!["--json".to_string()], Some(5.0), true));
        assert_eq!(
            wc.parameters,
            json!({"type": "object", "required": ["path"], "properties": {"path": {"type": "string", "description": "a file"}}})
        );
        let ping = &tools["ping-2"];
        assert_eq!(ping.program, "ping-tool");
        assert_eq!((ping.timeout_secs, ping.idempotent), (None, false));
        assert_eq!(ping.parameters, json!({"type": "object", "properties": {}}));
        assert_eq!(ping.spec("ping-2").description, "Pings.");
        assert!(p("").unwrap().is_empty());
    }

    #[test]
    fn every_problem_is_reported_at_its_line_and_column() {
        let text = r#"[tools."bad name"]
program = "x"
description = "d"

[tools.read_file]
program = "x"
description = "d"

[tools.a]
description = "no program"

[tools.b]
program = "x"
description = ""
args = "x"
timeout_secs = 0
idempotent = "yes"
colour = "red"

[tools.c]
program = "x"
description = "d"
parameters = { type = "array" }

[tools.d]
program = "x"
description = "d"
[tools.d.parameters]
properties.x = { type = "string" }
required = ["y"]
default = 1979-05-27

[tools.e]
program = "x"
description = "d"
parameters = "{}"

[tools.f]
program = "x"

color = 1
"#;
        let errs = p(text).unwrap_err();
        let got: Vec<(usize, usize, String)> =
            errs.iter().map(|d| (d.line.unwrap(), d.column.unwrap(), d.message.clone())).collect();
        let want: Vec<(usize, &str)> = vec![
            (1, "`bad name` is not a valid tool name"),
            (5, "`read_file` is a built-in tool"),
            (9, "missing `program` in [tools.a]"),
            (14, "`description` is empty"),
            (15, "`args` must be a list of text"),
            (16, "`timeout_secs` must be more than 0"),
            (17, "`idempotent` must be true or false"),
            (18, "unknown field `colour` in [tools.b]"),
            (23, "`parameters` must be a schema of type \"object\", not \"array\""),
            (28, "`tools.d.parameters` has no `type`"),
            (30, "`required` names `y`, which is not in `properties`"),
            (31, "`tools.d.parameters.default` cannot be JSON"),
            (36, "`parameters` must be a table"),
            (38, "missing `description` in [tools.f]"),
            (41, "unknown field `color`"),
        ];
        let shown: Vec<String> = errs.iter().map(|d| d.to_string()).collect();
        assert_eq!(got.len(), want.len(), "{shown:#?}");
        for ((line, _, msg), (wl, wm)) in got.iter().zip(&want) {
            assert!(*line == *wl && msg.contains(wm), "want {wl}: {wm}\ngot {line}: {msg}\n{shown:#?}");
        }
        assert!(errs.iter().all(|d| d.help.is_some() && d.path == Path::new("org/tools.toml")), "{shown:#?}");
        // The column points at the value.
        assert_eq!(got[4].1, 8, "{shown:#?}");
    }

    /// A custom tool whose program is a shell script in the org's `tools/` folder.
    fn tool(root: &Path, name: &str, body: &str, timeout_secs: Option<f64>) -> CustomTool {
        use std::os::unix::fs::PermissionsExt;
        let dir = root.join("tools");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("{name}.sh"));
        std::fs::write(&file, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
        CustomTool {
            program: file.to_string_lossy().into_owned(),
            args: vec!["fixed arg".into()],
            description: "test".into(),
            parameters: json!({"type": "object"}),
            timeout_secs,
            idempotent: false,
        }
    }

    async fn call(org: &crate::org::Org, name: &str, t: &CustomTool, args: Value, s: &Sandbox) -> Outcome {
        let r = org.agent("manager").unwrap().clone();
        let ctx = Ctx { org, agent: "manager", resume: &r, turn: 1, now: chrono::Utc::now() };
        run_in(&ctx, name, t, &args, s).await
    }

    #[tokio::test]
    async fn the_program_gets_the_args_on_stdin_and_answers_on_stdout_in_every_sandbox() {
        let (_d, root) = crate::testing::new_org();
        let org = crate::org::Org::load(&root).unwrap();
        let echo = tool(&root, "echo", "read -r line; echo \"got $line ($1)\"; pwd; echo noise >&2", None);
        let mut all = super::super::sandbox::testing::sandboxes("custom tools in every sandbox");
        all.push(Sandbox::None);
        let ws = org.layout.workspace("manager");
        for s in &all {
            let o = call(&org, "echo", &echo, json!({"text": "a; b", "n": 1}), s).await;
            let ws = ws.canonicalize().unwrap();
            assert!(o.ok, "{s:?}: {o:?}");
            assert_eq!(
                o.output.unwrap(),
                format!("got {{\"n\":1,\"text\":\"a; b\"}} (fixed arg)\n{}\n", ws.display()),
                "{s:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_failing_or_slow_program_gives_its_stderr_and_a_clear_error() {
        let (_d, root) = crate::testing::new_org();
        let mut org = crate::org::Org::load(&root).unwrap();
        org.settings.tools.timeout_secs = 60.0;
        let fail = tool(&root, "fail", "echo partial; echo 'no such city' >&2; exit 2", None);
        let o = call(&org, "fail", &fail, json!({}), &Sandbox::None).await;
        assert!(!o.ok, "{o:?}");
        assert_eq!(o.error.as_deref(), Some("`fail` exited with status 2\n--- stderr\nno such city"));
        // Its own timeout wins over [tools] timeout_secs.
        let slow = tool(&root, "slow", "sleep 30", Some(0.3));
        let t = std::time::Instant::now();
        let o = call(&org, "slow", &slow, json!({}), &Sandbox::None).await;
        assert_eq!(o.error.as_deref(), Some("timed out after 0.3s; killed"));
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
        let gone = CustomTool { program: "lemming-no-such-tool".into(), ..slow };
        let o = call(&org, "gone", &gone, json!({}), &Sandbox::None).await;
        let e = o.error.unwrap();
        assert!(e.contains("custom tool `gone` cannot run") && e.contains("not in PATH"), "{e}");
        // A long answer is cut at max_output_bytes, and says so.
        org.settings.tools.max_output_bytes = 10;
        let long = tool(&root, "long", "echo 0123456789abcdef", None);
        let o = call(&org, "long", &long, json!({}), &Sandbox::None).await;
        assert_eq!((o.output.as_deref(), o.truncated), (Some("0123456789"), true));
    }

    #[test]
    fn names_follow_the_function_name_rule() {
        for ok in ["a", "word_count", "A-1", &"x".repeat(64)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "a b", "a.b", "é", "../x", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
