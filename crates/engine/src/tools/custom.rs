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

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};
use toml::Spanned;

use super::sandbox::{Job, Sandbox};
use super::{Ctx, Outcome, ToolSpec, BUILTIN};
use crate::config::{Doc, MAX_SECS_F};
use crate::error::Diagnostic;

/// One custom tool.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomTool {
    /// The program (a name looked up in `PATH`, or a path relative to the org folder).
    pub program: String,
    /// Fixed arguments.
    pub args: Vec<String>,
    /// What it does, as the model is told.
    pub description: String,
    /// Its arguments as a JSON schema.
    pub parameters: Value,
    /// Its own time limit, in seconds (else `[tools] timeout_secs`).
    pub timeout_secs: Option<f64>,
    /// Whether running it twice does no more than running it once.
    pub idempotent: bool,
}

impl CustomTool {
    /// The tool as a model is told of it.
    pub fn spec(&self, name: &str) -> ToolSpec {
        ToolSpec { name: name.into(), description: self.description.clone(), parameters: self.parameters.clone() }
    }
}

/// The fields of `[tools.NAME]`.
const FIELDS: [&str; 6] = ["program", "args", "description", "parameters", "timeout_secs", "idempotent"];

/// The longest `description` accepted, in bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 4096;

/// Whether `name` is a valid tool name: 1 to 64 of `a-z A-Z 0-9 _ -` (as
/// OpenAI's function names).
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Parses and validates `org/tools.toml` text, reporting every problem. A
/// relative `program` with a `/` is taken from `org_root`.
pub fn parse(path: &Path, text: &str, org_root: &Path) -> Result<BTreeMap<String, CustomTool>, Vec<Diagnostic>> {
    let doc = Doc::parse(path, text)?;
    let mut out = BTreeMap::new();
    {
        let root = doc.root();
        if let Some(tools) = root.table("tools") {
            for (name, t) in tools.tables() {
                let at = |span, m: String| doc.at(span, m);
                let mut ok = true;
                if !valid_name(&name) {
                    ok = false;
                    doc.push(
                        at(t.span(), format!("`{}` is not a valid tool name", crate::term::line(&name)))
                            .help("use 1 to 64 letters, digits, _ and - (models call tools by this name)"),
                    );
                } else if BUILTIN.contains(&name.as_str()) {
                    ok = false;
                    doc.push(
                        at(t.span(), format!("`{name}` is a built-in tool"))
                            .help(format!("give the custom tool another name (built-in: {})", BUILTIN.join(", "))),
                    );
                }
                let program = t.req_str(
                    "program",
                    "program = \"wc\" (a name in PATH) or program = \"tools/count.sh\" (relative to the org folder)",
                );
                if let Some(p) = program.as_ref().filter(|p| p.get_ref().trim().is_empty()) {
                    doc.push(at(Some(p.span()), "`program` is empty".into()).help("name the program to run"));
                }
                let args = t.str_list("args");
                let description =
                    t.req_str("description", "description = \"what it does\" (the model reads it to choose the tool)");
                if let Some(d) = &description {
                    let len = d.get_ref().trim().len();
                    if len == 0 || d.get_ref().len() > MAX_DESCRIPTION_BYTES {
                        let m = if len == 0 {
                            "`description` is empty".to_string()
                        } else {
                            format!(
                                "`description` is {} bytes; the limit is {MAX_DESCRIPTION_BYTES}",
                                d.get_ref().len()
                            )
                        };
                        doc.push(at(Some(d.span()), m).help("say in a sentence or two what the tool does"));
                    }
                }
                let parameters = schema(&t);
                let timeout = t.float("timeout_secs", 0.0, false, MAX_SECS_F, "timeout_secs = 30 (at most a year)");
                let idempotent = t.bool("idempotent").unwrap_or(false);
                t.deny_unknown(&FIELDS);
                let (Some(program), Some(description), Some(parameters), true) = (program, description, parameters, ok)
                else {
                    continue;
                };
                let prog = program.into_inner();
                let program = if prog.contains('/') && !Path::new(&prog).is_absolute() {
                    org_root.join(&prog).to_string_lossy().into_owned()
                } else {
                    prog
                };
                out.insert(
                    name,
                    CustomTool {
                        program,
                        args: args
                            .map(|a| a.into_inner().into_iter().map(Spanned::into_inner).collect())
                            .unwrap_or_default(),
                        description: description.into_inner(),
                        parameters,
                        timeout_secs: timeout.map(|t| *t.get_ref()),
                        idempotent,
                    },
                );
            }
        }
        root.deny_unknown(&["tools"]);
    }
    let errs = doc.finish();
    if errs.is_empty() {
        Ok(out)
    } else {
        Err(errs)
    }
}

/// `parameters`: a JSON schema of type object, its problems recorded (the
/// file is refused as a whole when it has any).
fn schema(t: &crate::config::Table) -> Option<Value> {
    if !t.has("parameters") {
        return Some(json!({"type": "object", "properties": {}}));
    }
    let doc = t.doc();
    let p = t.table("parameters")?;
    match p.str("type") {
        Some(ty) if ty.get_ref() == "object" => {}
        Some(ty) => doc.push(
            doc.at(
                Some(ty.span()),
                format!("`parameters` must be a schema of type \"object\", not \"{}\"", ty.get_ref()),
            )
            .help("a tool's arguments are an object: type = \"object\""),
        ),
        None if !p.has("type") => doc.push(
            doc.at(p.span(), format!("`{}` has no `type`", p.name()))
                .help("add type = \"object\" (a tool's arguments are an object)"),
        ),
        None => {}
    }
    // Each property is a schema (a table); `required` names properties.
    let names: Vec<String> =
        p.table("properties").map(|ps| ps.tables().into_iter().map(|(k, _)| k).collect()).unwrap_or_default();
    for r in p.str_list("required").map(Spanned::into_inner).unwrap_or_default() {
        if p.has("properties") && !names.contains(r.get_ref()) {
            doc.push(
                doc.at(Some(r.span()), format!("`required` names `{}`, which is not in `properties`", r.get_ref()))
                    .help(format!(
                        "add properties.{} = {{ type = \"string\" }}, or remove it from required",
                        r.get_ref()
                    )),
            );
        }
    }
    t.json("parameters").map(Spanned::into_inner)
}

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
