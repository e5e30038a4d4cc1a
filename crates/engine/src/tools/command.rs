//! `run_command {program, args?}`: a program from the agent's allowlist
//! (`permissions.commands`), argv only (never a shell), in its workspace,
//! inside the OS [`super::sandbox`].

use serde_json::Value;

use super::{Ctx, Outcome};

/// Runs `args.program` with `args.args`.
pub async fn run(ctx: &Ctx<'_>, args: &Value) -> Outcome {
    let _ = (ctx, args);
    Outcome::err("run_command", "not built yet")
}
