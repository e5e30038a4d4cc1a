//! The catalog of tools: the built-in ones, with the JSON schema of their
//! arguments, and the custom ones of `org/tools.toml` (parsed and checked
//! here, every problem at its line); which of them have side effects; and
//! which an agent is granted. It knows nothing of running a tool (that is
//! [`super::run`]), so the org can hold a catalog without depending on the tools.

use std::collections::BTreeMap;
use std::path::Path;

pub use lemming_provider::ToolSpec;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use toml::Spanned;

use crate::config::{Doc, MAX_SECS_F};
use crate::error::Diagnostic;
use crate::resume::Resume;

/// Whether running a call twice could do twice what it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// It only reads: after a crash, it simply runs again.
    Pure,
    /// It changes something (a file, a program's world, the org): it runs at
    /// most once per call (G8), and a call interrupted by a crash gets the
    /// error `interrupted`.
    SideEffect,
}

/// The built-in tools, by name.
pub const BUILTIN: [&str; 8] =
    ["read_file", "write_file", "list_files", "search_files", "run_command", "calculate", "recall", "hire_agent"];

/// Every tool the org knows: the built-in ones and those of `org/tools.toml`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    /// The custom tools, by name.
    pub custom: BTreeMap<String, CustomTool>,
}

impl Catalog {
    /// The names of every tool, built-in first.
    pub fn names(&self) -> Vec<String> {
        BUILTIN.iter().map(|s| s.to_string()).chain(self.custom.keys().cloned()).collect()
    }

    /// Whether `name` is a tool.
    pub fn knows(&self, name: &str) -> bool {
        BUILTIN.contains(&name) || self.custom.contains_key(name)
    }

    /// Whether calling `name` has side effects (`None`: no such tool).
    pub fn effect(&self, name: &str) -> Option<Effect> {
        match name {
            "read_file" | "list_files" | "search_files" | "calculate" | "recall" => Some(Effect::Pure),
            "write_file" | "run_command" | "hire_agent" => Some(Effect::SideEffect),
            _ => self.custom.get(name).map(|t| if t.idempotent { Effect::Pure } else { Effect::SideEffect }),
        }
    }

    /// The tool as a model is told of it (`None`: no such tool).
    pub fn spec(&self, name: &str) -> Option<ToolSpec> {
        match self.custom.get(name) {
            Some(t) => Some(t.spec(name)),
            None => builtin_spec(name),
        }
    }

    /// The tools `resume` may use, in the order it grants them (names that
    /// are no tool are left out; validation reports them).
    pub fn granted(&self, resume: &Resume) -> Vec<ToolSpec> {
        resume.tools.iter().filter_map(|t| self.spec(t)).collect()
    }
}

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

/// The built-in tool `name` as a model is told of it (`None`: not built in).
///
/// Every schema is an object whose properties are all required and that
/// allows no others, as OpenAI's strict mode wants: an optional argument is
/// typed `[T, "null"]`, and the tools take it absent or null alike.
pub fn builtin_spec(name: &str) -> Option<ToolSpec> {
    let (description, properties): (&str, Value) = match name {
        "read_file" => (
            "Read a text file of your workspace (or shared/… when granted). Long files are cut.",
            json!({"path": text("The file, relative to your workspace; shared/NAME for the org's shared folder.")}),
        ),
        "write_file" => (
            "Write a text file in your workspace (or shared/… when granted), creating its folders; replaces the file \
             unless append is true.",
            json!({
                "path": text("The file, relative to your workspace; shared/NAME for the org's shared folder."),
                "content": text("The text to write."),
                "append": {"type": ["boolean", "null"], "description": "true: add to the end of the file instead of replacing it."},
            }),
        ),
        "list_files" => (
            "List a folder of your workspace (or shared/… when granted): folders end with /, files show their size.",
            json!({"path": optional_text("The folder, relative to your workspace; null for the workspace itself.")}),
        ),
        "search_files" => (
            "Search the text files under a folder of your workspace for a literal, case-sensitive string; gives \
             path:line: text for each matching line.",
            json!({
                "pattern": text("The text to look for (literal, case-sensitive)."),
                "path": optional_text("The folder or file to search, relative to your workspace; null for all of it."),
            }),
        ),
        "run_command" => (
            "Run a program you are allowed (permissions.commands) in your workspace, in a sandbox, with arguments \
             (never through a shell); gives its exit status and output.",
            json!({
                "program": text("The program's name, as allowed in permissions.commands."),
                "args": {"type": ["array", "null"], "items": {"type": "string"}, "description": "Its arguments, one string each."},
            }),
        ),
        "calculate" => (
            "Evaluate an arithmetic expression: + - * / % ^, parentheses, and sqrt, abs, min, max, round, floor, \
             ceil, ln, log10, exp, pi, e.",
            json!({"expression": text("The expression, such as (2 + 3) * 4 / sqrt(2).")}),
        ),
        "recall" => (
            "Search your memory: gives each key whose name or value contains the query (case-insensitive); an empty \
             query lists every key.",
            json!({"query": text("The text to look for; empty for every key.")}),
        ),
        "hire_agent" => (
            "Hire a new agent into the org: it joins on the next turn.",
            json!({
                "name": text("Its name: a lower-case letter, then up to 63 of a-z, 0-9, _ or -."),
                "title": text("Its title, in a few words."),
                "instructions": text("What it is for and how it should work."),
                "model": optional_text("The model key to run it on; null for yours."),
                "send_to": names("The agents it may write to: you, or agents you may write to."),
                "read_from": names("The agents it accepts mail from: you, or agents you may write to."),
                "credits": {"type": ["number", "null"], "description": "Its starting credits (capped by the org); null for the default."},
            }),
        ),
        _ => return None,
    };
    let required: Vec<&String> = properties.as_object().map(|o| o.keys().collect()).unwrap_or_default();
    Some(ToolSpec {
        name: name.to_string(),
        description: description.to_string(),
        parameters: json!({
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": false,
        }),
    })
}

/// A required string argument's schema.
fn text(description: &str) -> Value {
    json!({"type": "string", "description": description})
}

/// An optional string argument's schema.
fn optional_text(description: &str) -> Value {
    json!({"type": ["string", "null"], "description": description})
}

/// A list of agent names' schema.
fn names(description: &str) -> Value {
    json!({"type": "array", "items": {"type": "string"}, "description": description})
}
