//! `lemming serve [--listen ADDR]`: the HTTP API, the live events, the
//! dashboard and the metrics of an org, until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::Path;

use lemming_engine::clock::Sources;

use crate::ctx::{block_on, CliError, Ctx};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
The address is --listen, else `listen` in the [http] table of org/org.toml,
else 127.0.0.1:7878 (port 0 picks a free one). Every /api route needs the
token: LEMMING_API_TOKEN, else the one in org/state/api-token (created at the
first start); the login link printed at start sets it in the browser. /health
and /ready are open, and /metrics is open to this machine (asked by a
loopback name). An address other than loopback is refused (exit 1) unless
LEMMING_API_TOKEN is set (at least 16 characters a cookie can carry).

Events come from org/state/events.jsonl, so `lemming step` or a daemon in
another process can run beside it; `lemming run --http ADDR` serves from the
daemon itself.")]
pub struct Args {
    /// The address and port to listen on, for example 127.0.0.1:7878
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<(), CliError> {
    let root = ctx.root()?;
    let listen = listen_addr(&root, args.listen);
    block_on(async {
        let bound = bind(&root, listen, Sources::real(), false).await?;
        bound.serve(crate::ctx::shutdown_signal()).await?;
        eprintln!("lemming: stopped serving");
        Ok(())
    })?
}

/// The address: the command line's, else `[http] listen` of org.toml, else the default.
fn listen_addr(root: &Path, given: Option<SocketAddr>) -> SocketAddr {
    given
        .or_else(|| configured(root))
        .unwrap_or_else(|| lemming_server::state::DEFAULT_LISTEN.parse().expect("the default address"))
}

/// Binds the server for the org at `root` and says where it is and how to
/// sign in; `in_daemon` when the daemon runs in this process with `sources`.
pub(crate) async fn bind(
    root: &Path,
    listen: SocketAddr,
    sources: Sources,
    in_daemon: bool,
) -> Result<lemming_server::Bound, CliError> {
    let mut opts = lemming_server::Options::new(root.to_path_buf(), listen);
    let token_from_env = opts.token.is_some();
    opts.sources = sources;
    opts.in_daemon = in_daemon;
    let bound = lemming_server::bind(opts).await.map_err(|e| CliError::user(e.to_string()))?;
    let token = if token_from_env { "LEMMING_API_TOKEN" } else { "org/state/api-token" };
    // One write, so whoever reads the first line can read the link too.
    let said = format!(
        "lemming: serving the API and dashboard of {} at http://{}/\nopen {} to sign in (or use the token in {token})\n",
        root.display(),
        bound.addr,
        bound.login_url()
    );
    eprint!("{said}");
    Ok(bound)
}

/// `[http] listen` of org.toml, for `lemming run` without --http.
pub(crate) fn configured(root: &Path) -> Option<SocketAddr> {
    lemming_engine::org::Org::load_or_last_good(root, None).settings.http_listen
}
