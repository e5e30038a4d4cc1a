//! Custom tools, declared in `org/tools.toml` (`[tools.NAME]`): a program that
//! gets the call's args as JSON on stdin and answers on stdout.

use serde_json::Value;

use super::{Ctx, Outcome, ToolSpec};

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

/// Runs a custom tool.
pub async fn run(ctx: &Ctx<'_>, name: &str, tool: &CustomTool, args: &Value) -> Outcome {
    let _ = (ctx, tool, args);
    Outcome::err(name, "not built yet")
}
