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
    /// Also serve the HTTP API, live events, dashboard and metrics on ADDR
    /// (for example 127.0.0.1:7878), pushed from the turns themselves; else
    /// `listen` in the [http] table of org/org.toml, if set. See `lemming serve --help`
    #[arg(long, value_name = "ADDR")]
    pub http: Option<std::net::SocketAddr>,
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
    let loaded = lemming_engine::org::Org::load(&root);
    let retention = loaded.as_ref().map(|o| o.settings.log_retention_days).unwrap_or(7);
    // `[http] listen` is read like every setting the daemon uses: from the
    // last good org.toml while the file is invalid.
    let http = args.http.or_else(|| crate::commands::serve::configured(&root));
    let _guard = crate::log::init_file_log(&root.join("org/state/logs"), retention as usize);
    let opts = RunOptions {
        turns: args.turns,
        turn_seconds: args.turn_seconds,
        rescan: lemming_provider::config::secs(args.rescan_seconds),
        sources: ctx.sources(),
    };
    // The server shares the daemon's bus, so its events come from the turns themselves.
    let sources = opts.sources.clone();
    eprintln!(
        "lemming: daemon for {} (pid {}); stop with Ctrl-C or `lemming stop`",
        root.display(),
        std::process::id()
    );
    let turns = block_on(async {
        let server = match http {
            Some(addr) => {
                let bound = crate::commands::serve::bind(&root, addr, sources, true).await?;
                // In daemon.json once the daemon has written it: `lemming chat` reads the live events there.
                let layout = lemming_engine::org::Layout::new(&root);
                let api = bound.addr.to_string();
                tokio::spawn(async move {
                    if let Err(e) = daemon::record_api(&layout, &api, std::time::Duration::from_secs(30)).await {
                        tracing::warn!(error = %e, "cannot record the API address in daemon.json; chat will not show replies as they stream");
                    }
                });
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                let task = tokio::spawn(bound.serve(async move {
                    let _ = stopped.await;
                }));
                Some((stop, task))
            }
            None => None,
        };
        let turns = run_daemon(&root, opts).await;
        if let Some((stop, task)) = server {
            // The server stops with the daemon.
            let _ = stop.send(());
            match tokio::time::timeout(std::time::Duration::from_secs(5), task).await {
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "the HTTP server stopped with an error"),
                Ok(_) => {}
                Err(_) => tracing::warn!("the HTTP server did not stop within 5 s; leaving it"),
            }
        }
        turns
    })??;
    eprintln!("lemming: stopped after {turns} turn(s)");
    Ok(())
}

/// The daemon until it stops: logs each turn, and says on stderr when an
/// edit of the config is refused.
async fn run_daemon(root: &std::path::Path, opts: RunOptions) -> Result<u64, CliError> {
    Ok(daemon::run(
        root,
        opts,
        crate::ctx::shutdown_signal(),
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
    )
    .await?)
}
