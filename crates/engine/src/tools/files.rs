//! The file tools: `read_file`, `write_file`, `list_files` and `search_files`,
//! confined to the agent's `workspace/` (and the org's `shared/` folder when
//! the agent is granted it), and the JSON schemas of every built-in tool.

use serde_json::Value;

use super::{Ctx, Outcome, ToolSpec};

/// The built-in tool `name` as a model is told of it (`None`: not built in).
pub fn builtin_spec(name: &str) -> Option<ToolSpec> {
    let _ = name;
    None
}

/// Runs one of the file tools.
pub fn run(ctx: &Ctx<'_>, tool: &str, args: &Value) -> Outcome {
    let _ = (ctx, args);
    Outcome::err(tool, "not built yet")
}
