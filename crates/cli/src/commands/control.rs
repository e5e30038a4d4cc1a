//! `lemming pause`, `resume` and `stop`: control a running daemon.

use lemming_engine::daemon::{self, StopError};

use crate::ctx::{block_on, CliError, Ctx};

#[derive(Debug, clap::Args)]
pub struct PauseArgs {}

#[derive(Debug, clap::Args)]
pub struct StopArgs {
    /// Seconds to wait for the daemon to exit
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    pub wait: f64,
}

pub fn pause(ctx: &Ctx, _args: PauseArgs) -> Result<(), CliError> {
    set(ctx, true)
}

pub fn resume(ctx: &Ctx, _args: PauseArgs) -> Result<(), CliError> {
    set(ctx, false)
}

fn set(ctx: &Ctx, paused: bool) -> Result<(), CliError> {
    let layout = lemming_engine::org::Layout::new(ctx.root()?);
    daemon::set_paused(&layout, paused, chrono::Utc::now())?;
    let running = daemon::daemon_pid(&layout);
    match (paused, running) {
        (true, Some(pid)) => {
            println!("paused: the daemon (pid {pid}) finishes its current turn and starts no new ones")
        }
        (true, None) => println!("paused: no daemon is running; `lemming run` will start paused"),
        (false, Some(pid)) => println!("resumed: the daemon (pid {pid}) starts turns again"),
        (false, None) => println!("resumed: no daemon is running"),
    }
    Ok(())
}

pub fn stop(ctx: &Ctx, args: StopArgs) -> Result<(), CliError> {
    let layout = lemming_engine::org::Layout::new(ctx.root()?);
    let wait = lemming_provider::config::secs(args.wait);
    match block_on(daemon::stop(&layout, wait))? {
        Ok(pid) => {
            println!("stopped the daemon (pid {pid})");
            Ok(())
        }
        Err(e @ StopError::NotRunning) => Err(CliError::user(e.to_string())),
        Err(e) => Err(CliError::user(e.to_string())),
    }
}
