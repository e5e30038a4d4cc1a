//! `hire_agent {name, title, instructions, model?, send_to, read_from, credits?}`:
//! a new agent, written as `agents/NAME/resume.toml` after the same validation
//! as a hand-edited resume; it joins the org on the next turn.

use serde_json::Value;

use super::{Ctx, Outcome};

/// Hires the agent that `args` describes.
pub fn run(ctx: &Ctx<'_>, args: &Value) -> Outcome {
    let _ = (ctx, args);
    Outcome::err("hire_agent", "not built yet")
}
