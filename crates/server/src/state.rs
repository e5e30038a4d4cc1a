//! What every handler shares: the org's root, the token, the event hub, the
//! metrics, the rate limiter and the one-time login codes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use lemming_engine::clock::Sources;
use lemming_engine::org::Org;

use crate::error::ApiError;

/// How to serve an org.
#[derive(Debug, Clone)]
pub struct Options {
    /// The org's root folder.
    pub root: PathBuf,
    /// The address to listen on (`127.0.0.1:7878` by default; port 0 picks one).
    pub listen: SocketAddr,
    /// The token, when the environment sets one (`LEMMING_API_TOKEN`); else
    /// the one in `org/state/api-token` is used, created when missing.
    pub token: Option<String>,
    /// The clock and ids of the people's writes, and, when the daemon runs in
    /// the same process, the bus its turns publish their events on.
    pub sources: Sources,
    /// Whether the daemon runs in this process (events come from its bus).
    pub in_daemon: bool,
    /// Mutating requests one client may make per [`Options::rate_window`].
    pub rate_limit: u32,
    /// The rate limit's window.
    pub rate_window: std::time::Duration,
}

impl Options {
    /// Serving `root` on `listen`, with the token from the environment if set.
    pub fn new(root: PathBuf, listen: SocketAddr) -> Options {
        Options {
            root,
            listen,
            token: std::env::var("LEMMING_API_TOKEN").ok().filter(|t| !t.is_empty()),
            sources: Sources::real(),
            in_daemon: false,
            // A person clicking through the dashboard never comes near it.
            rate_limit: 30,
            rate_window: std::time::Duration::from_secs(10),
        }
    }
}

/// The default address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7878";

/// What the handlers share (cheap to clone).
#[derive(Clone)]
pub struct AppState {
    /// The org's root folder.
    pub root: PathBuf,
    /// The address served.
    pub listen: SocketAddr,
    /// The token every `/api` request must carry.
    pub token: Arc<str>,
    /// Whether the token came from the environment.
    pub token_from_env: bool,
    /// The clock and ids of the people's writes, and the daemon's bus.
    pub sources: Sources,
    /// Whether the daemon runs in this process.
    pub in_daemon: bool,
    /// The events, as they are committed.
    pub hub: Arc<crate::events::Hub>,
    /// The Prometheus families.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The rate limiter of the mutating routes.
    pub limiter: Arc<crate::limit::Limiter>,
    /// The one-time login codes.
    pub logins: Arc<crate::auth::Logins>,
}

impl AppState {
    /// The shared state for `opts`; reads or creates the token file when the
    /// environment gives no token.
    pub fn new(opts: Options) -> Result<AppState, lemming_engine::error::PathError> {
        let layout = lemming_engine::org::Layout::new(&opts.root);
        let token_from_env = opts.token.is_some();
        let token = match opts.token {
            Some(t) => t,
            None => crate::auth::load_or_create_token(&layout)?,
        };
        Ok(AppState {
            root: opts.root.clone(),
            listen: opts.listen,
            token: token.into(),
            token_from_env,
            in_daemon: opts.in_daemon,
            hub: Arc::new(crate::events::Hub::new(&layout, opts.in_daemon.then(|| opts.sources.bus.clone()))),
            metrics: crate::metrics::Metrics::new(),
            limiter: Arc::new(crate::limit::Limiter::new(opts.rate_limit, opts.rate_window)),
            logins: Arc::new(crate::auth::Logins::default()),
            sources: opts.sources,
        })
    }

    /// The org as its files are now (the last good version of an invalid
    /// config file, as the daemon uses it).
    pub fn org(&self) -> Result<Org, ApiError> {
        Ok(Org::load_or_last_good(&self.root, None))
    }
}
