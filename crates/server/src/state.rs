//! What every handler shares: the org's root, the token, the event hub, the
//! metrics, the rate limiter and the one-time login codes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lemming_engine::clock::Sources;
use lemming_engine::org::{ConfigStamp, Org};

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
    /// Config writes (a resume's PUT) one client may make per
    /// [`Options::config_window`], on top of the limit of all writes.
    pub config_limit: u32,
    /// The config writes' window.
    pub config_window: std::time::Duration,
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
            config_limit: 5,
            config_window: std::time::Duration::from_secs(60),
        }
    }
}

/// The default address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7878";

/// An org as loaded, the stamp of its files then, and when that stamp was
/// last compared with the files.
struct Loaded {
    stamp: ConfigStamp,
    org: Arc<Org>,
    checked: Instant,
}

/// How long the org loaded for a request is used before its files are looked at again.
pub const RECHECK_ORG: Duration = Duration::from_millis(250);

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
    /// The stricter one of config writes.
    pub config_limiter: Arc<crate::limit::Limiter>,
    /// The one-time login codes.
    pub logins: Arc<crate::auth::Logins>,
    /// The org as last loaded, and the stamp of its files then.
    orgs: Arc<Mutex<Option<Loaded>>>,
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
            config_limiter: Arc::new(crate::limit::Limiter::new(opts.config_limit, opts.config_window)),
            logins: Arc::new(crate::auth::Logins::default()),
            orgs: Arc::default(),
            sources: opts.sources,
        })
    }

    /// The org as its files are now (the last good version of an invalid
    /// config file, as the daemon uses it). Loaded again only when a config
    /// file or the list of agent folders changed ([`ConfigStamp`]: a stat of
    /// each file, not a parse), which is looked at most every
    /// [`RECHECK_ORG`]: an edit by hand shows within that time, one through
    /// the API at once ([`AppState::forget_org`]).
    pub fn org(&self) -> Result<Arc<Org>, ApiError> {
        let mut cached = self.orgs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = cached.as_ref() {
            if l.checked.elapsed() < RECHECK_ORG {
                return Ok(Arc::clone(&l.org));
            }
        }
        let stamp = ConfigStamp::of(&lemming_engine::org::Layout::new(&self.root));
        if let Some(l) = cached.as_mut() {
            if l.stamp == stamp {
                l.checked = Instant::now();
                return Ok(Arc::clone(&l.org));
            }
        }
        let org = Arc::new(Org::load_or_last_good(&self.root, cached.as_ref().map(|l| l.org.as_ref())));
        *cached = Some(Loaded { stamp, org: Arc::clone(&org), checked: Instant::now() });
        Ok(org)
    }

    /// Loads the org again on the next request (after a write of a config file).
    pub fn forget_org(&self) {
        *self.orgs.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// What checking a token needs, for the auth middleware, the login and the metrics.
impl axum::extract::FromRef<AppState> for crate::auth::Gate {
    fn from_ref(s: &AppState) -> crate::auth::Gate {
        crate::auth::Gate { token: s.token.clone(), port: s.listen.port(), logins: s.logins.clone() }
    }
}

/// The events, for `GET /api/events`.
impl axum::extract::FromRef<AppState> for Arc<crate::events::Hub> {
    fn from_ref(s: &AppState) -> Arc<crate::events::Hub> {
        s.hub.clone()
    }
}

/// The metric families, for `GET /metrics`.
impl axum::extract::FromRef<AppState> for Arc<crate::metrics::Metrics> {
    fn from_ref(s: &AppState) -> Arc<crate::metrics::Metrics> {
        s.metrics.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> (tempfile::TempDir, AppState) {
        let dir = tempfile::tempdir().unwrap();
        lemming_engine::init::init(dir.path()).unwrap();
        let mut opts = Options::new(dir.path().to_path_buf(), "127.0.0.1:0".parse().unwrap());
        opts.token = Some("t".into());
        (dir, AppState::new(opts).unwrap())
    }

    /// The org is loaded once while its files stay as they are; an edit by
    /// hand is seen after the recheck interval, a write through the API at once.
    #[test]
    fn the_org_is_loaded_again_only_when_its_files_change() {
        let (dir, s) = state();
        let first = s.org().unwrap();
        std::thread::sleep(RECHECK_ORG);
        assert!(Arc::ptr_eq(&first, &s.org().unwrap()), "nothing changed: the same org");
        let resume = dir.path().join("agents/planner/resume.toml");
        let text =
            std::fs::read_to_string(&resume).unwrap().replace("title = \"Planner\"", "title = \"Chief planner\"");
        std::fs::write(&resume, text).unwrap();
        std::thread::sleep(RECHECK_ORG);
        let second = s.org().unwrap();
        assert_eq!(second.agent("planner").unwrap().title, "Chief planner");
        let text = std::fs::read_to_string(&resume).unwrap().replace("Chief planner", "Planner");
        std::fs::write(&resume, text).unwrap();
        s.forget_org();
        assert_eq!(s.org().unwrap().agent("planner").unwrap().title, "Planner", "forgotten: read again at once");
    }
}
