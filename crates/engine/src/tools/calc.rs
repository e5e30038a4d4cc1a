//! `calculate {expression}`: arithmetic, evaluated without any access to the world.

use serde_json::Value;

use super::Outcome;

/// Evaluates `args.expression`.
pub fn run(args: &Value) -> Outcome {
    let _ = args;
    Outcome::err("calculate", "not built yet")
}
