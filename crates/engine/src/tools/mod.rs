//! Tools: what agents do besides talking. An agent asks for tool calls in its
//! reply; the turn journals them, runs them here, and delivers each result to
//! the agent's own inbox as a `tool_result` message.
//!
//! - [`Call`] is one call as journaled, [`Outcome`] what it gave (the body of
//!   its `tool_result` message);
//! - [`Catalog`] ([`catalog`]) knows every tool: the built-in ones and the
//!   custom ones of `org/tools.toml`, each with its JSON schema and whether it
//!   has side effects ([`Effect`]);
//! - [`run`] checks that the tool exists and is granted, then runs it:
//!   [`files`] (`read_file`, `write_file`, `list_files`, `search_files`,
//!   confined to the agent's workspace and, when granted, the org's `shared/`),
//!   [`command`] (`run_command`, an allowlisted program in the [`sandbox`]),
//!   [`calc`] (`calculate`), [`recall`] (`recall`, the agent's memory) and
//!   [`hire`] (`hire_agent`).

pub mod calc;
pub mod catalog;
pub mod command;
pub mod custom;
mod dirfd;
pub mod files;
pub mod hire;
pub mod recall;
pub mod sandbox;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::org::Org;
use crate::resume::Resume;
pub use catalog::{Catalog, Effect, ToolSpec, BUILTIN};

/// One tool call an agent asked for, as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Call {
    /// Its id: the model's when it is a valid id and unique in the reply, else `c<N>`.
    pub id: String,
    /// The tool's name.
    pub tool: String,
    /// Its arguments (an object, for every tool).
    pub args: Value,
}

/// What a call gave: the body of its `tool_result` message is this as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The tool called.
    pub tool: String,
    /// Whether it did what was asked.
    pub ok: bool,
    /// What it gave, when `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Why it failed, when not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether the output was cut at a limit.
    #[serde(default)]
    pub truncated: bool,
}

impl Outcome {
    /// A call that did what was asked.
    pub fn ok(tool: &str, output: impl Into<String>, truncated: bool) -> Outcome {
        Outcome { tool: tool.into(), ok: true, output: Some(output.into()), error: None, truncated }
    }

    /// A call that failed, and why.
    pub fn err(tool: &str, error: impl Into<String>) -> Outcome {
        Outcome { tool: tool.into(), ok: false, output: None, error: Some(error.into()), truncated: false }
    }

    /// The body of its `tool_result` message.
    pub fn body(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// What a tool needs to know of the org and of the agent that calls it.
pub struct Ctx<'a> {
    /// The org (its layout, settings, agents and tools).
    pub org: &'a Org,
    /// The agent that calls.
    pub agent: &'a str,
    /// Its resume (the tools and commands it is granted).
    pub resume: &'a Resume,
    /// The turn.
    pub turn: u64,
    /// Now, by the turn's clock (for the audit log).
    pub now: DateTime<Utc>,
}

impl Ctx<'_> {
    /// How long a program may run.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.org.settings.tools.timeout_secs)
    }
}

/// Runs one call: an unknown tool gives `unknown tool`, one the agent is not
/// granted `not permitted`; otherwise the tool runs, and every failure is an
/// [`Outcome`] with its error (nothing panics, nothing is silent).
pub async fn run(ctx: &Ctx<'_>, call: &Call) -> Outcome {
    let tool = call.tool.as_str();
    if !ctx.org.tools.knows(tool) {
        let known = ctx.org.tools.names().join(", ");
        return Outcome::err(
            tool,
            format!(
                "unknown tool `{}` (known: {known})",
                crate::term::line(&tool.chars().take(64).collect::<String>())
            ),
        );
    }
    if !ctx.resume.tools.iter().any(|t| t == tool) {
        return Outcome::err(
            tool,
            format!("not permitted: {} is not granted `{tool}` (permissions.tools in its resume)", ctx.agent),
        );
    }
    if !call.args.is_object() {
        return Outcome::err(tool, format!("the arguments of `{tool}` must be a JSON object, not {}", call.args));
    }
    match tool {
        "read_file" | "write_file" | "list_files" | "search_files" => files::run(ctx, tool, &call.args),
        "run_command" => command::run(ctx, &call.args).await,
        "calculate" => calc::run(&call.args),
        "recall" => recall::run(ctx, &call.args),
        "hire_agent" => hire::run(ctx, &call.args),
        _ => match ctx.org.tools.custom.get(tool) {
            Some(t) => custom::run(ctx, tool, t, &call.args).await,
            None => Outcome::err(tool, "unknown tool"),
        },
    }
}
