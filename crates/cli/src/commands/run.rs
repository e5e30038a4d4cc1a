//! `lemming run`: the daemon. Turns on a timer and early when mail lands; hot
//! reload; pause and resume; a clean stop on SIGINT or SIGTERM.

use lemming_engine::daemon::{self, RunOptions};

use crate::ctx::{block_on, CliError, Ctx};

#[derive(Debug, clap::Args)]
#[command(after_help = crate::ctx::LOCKED_HELP)]
pub struct Args {
    /// Stop after N turns
    #[arg(long, value_name = "N", value_parser = crate::ctx::at_least_one)]
    pub turns: Option<u64>,
    /// Seconds between timer turns (overrides turn_seconds in org/org.toml)
    #[arg(long, value_name = "SECONDS")]
    pub turn_seconds: Option<f64>,
    /// Seconds between rescans of outboxes and config files, for events the
    /// filesystem did not report (NFS reports none)
    #[arg(long, value_name = "SECONDS", default_value_t = 2.0)]
    pub rescan_seconds: f64,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<(), CliError> {
    let root = ctx.root()?;
    for (name, v) in [("--turn-seconds", args.turn_seconds), ("--rescan-seconds", Some(args.rescan_seconds))] {
        if let Some(v) = v {
            if !(v.is_finite() && v > 0.0 && v <= lemming_provider::config::MAX_SECS) {
                return Err(CliError {
                    message: format!("{name} must be more than 0 and at most a year, not {v}"),
                    code: 2,
                });
            }
        }
    }
    let retention = lemming_engine::org::Org::load(&root).map(|o| o.settings.log_retention_days).unwrap_or(7);
    let _guard = crate::log::init_file_log(&root.join("org/state/logs"), retention as usize);
    let opts = RunOptions {
        turns: args.turns,
        turn_seconds: args.turn_seconds,
        rescan: lemming_provider::config::secs(args.rescan_seconds),
        ..RunOptions::default()
    };
    eprintln!(
        "lemming: daemon for {} (pid {}); stop with Ctrl-C or `lemming stop`",
        root.display(),
        std::process::id()
    );
    let turns = block_on(daemon::run(
        &root,
        opts,
        shutdown_signal(),
        |r| {
            tracing::info!(
                turn = r.turn,
                ran = r.ran.len(),
                delivered = r.delivered,
                failed = r.failed.len(),
                dead = r.dead,
                cost = r.cost,
                "turn"
            )
        },
        |problems| {
            for p in problems {
                eprintln!(
                    "error: invalid edit refused; the last good version stays in use:\n{}",
                    lemming_engine::term::text(&p.to_string())
                );
            }
        },
    ))??;
    eprintln!("lemming: stopped after {turns} turn(s)");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("stop requested; finishing the turn in flight");
}
