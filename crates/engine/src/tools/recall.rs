//! `recall {query}`: searches the agent's memory (keys and values).

use serde_json::Value;

use super::{Ctx, Outcome};

/// Searches the calling agent's memory for `args.query`.
pub fn run(ctx: &Ctx<'_>, args: &Value) -> Outcome {
    let _ = (ctx, args);
    Outcome::err("recall", "not built yet")
}
