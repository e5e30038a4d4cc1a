//! lemming-server: the HTTP API, the live event stream, the embedded
//! dashboard and the Prometheus metrics of one org.
//!
//! [`serve`] binds an address and serves [`router`] until its shutdown
//! future resolves. `lemming serve` runs it alone (its events come from
//! `org/state/events.jsonl`); `lemming run --http` runs it beside the daemon,
//! sharing the daemon's [`lemming_engine::events::Bus`], so events are pushed
//! from the turn itself.
//!
//! # Module map
//!
//! - [`state`]: what every handler shares ([`state::AppState`]);
//! - [`error`]: errors as `{"error":{"code","message"}}` with their status;
//! - [`auth`]: the bearer token (from `LEMMING_API_TOKEN` or
//!   `org/state/api-token`), the dashboard's cookie and its one-time login link;
//! - [`limit`]: per-client rate limits of the mutating routes;
//! - [`extract`]: path, query and body extractors that answer in the error shape;
//! - [`api`]: the read routes (status, agents, messages, chart, ledger, logs, dead);
//! - [`write`]: the mutating routes (send, top-up, pause, resume, the resume editor);
//! - [`events`]: `GET /api/events`, Server-Sent Events with `Last-Event-ID`;
//! - [`metrics`]: `GET /metrics`, the Prometheus families and what records them;
//! - [`openapi`]: `GET /api/openapi.json`, every route described;
//! - [`dashboard`]: the one embedded page and its vendored scripts.
#![warn(missing_docs)]

pub mod api;
pub mod auth;
pub mod dashboard;
pub mod error;
pub mod events;
pub mod extract;
pub mod limit;
pub mod metrics;
pub mod openapi;
pub mod state;
pub mod write;

use std::future::Future;
use std::net::SocketAddr;

use axum::routing::MethodRouter;
use axum::Router;

pub use state::{AppState, Options};

/// Routes, and the list of them (method, path): each module adds its routes
/// through [`Routes::add`], so that the OpenAPI description can be checked
/// against every route the router really has ([`route_list`]).
pub struct Routes {
    router: Router<AppState>,
    list: Vec<(&'static str, &'static str)>,
}

impl Routes {
    /// No routes.
    pub fn new() -> Routes {
        Routes { router: Router::new(), list: Vec::new() }
    }

    /// Adds the route `method path` (`method` is `GET`, `POST`, `PUT`, …,
    /// and must be the method `handler` answers).
    pub fn add(mut self, method: &'static str, path: &'static str, handler: MethodRouter<AppState>) -> Routes {
        self.router = self.router.route(path, handler);
        self.list.push((method, path));
        self
    }

    /// These routes and `other`'s.
    pub fn merge(mut self, other: Routes) -> Routes {
        self.router = self.router.merge(other.router);
        self.list.extend(other.list);
        self
    }

    /// Wraps the routes so far (a middleware layer).
    pub fn map(mut self, f: impl FnOnce(Router<AppState>) -> Router<AppState>) -> Routes {
        self.router = f(self.router);
        self
    }

    /// The (method, path) of every route.
    pub fn list(&self) -> &[(&'static str, &'static str)] {
        &self.list
    }
}

impl Default for Routes {
    fn default() -> Routes {
        Routes::new()
    }
}

/// The largest request body accepted (a resume, a message): 1 MiB.
pub const MAX_BODY: usize = 1 << 20;

/// Every route, with its middleware (the token on `/api`).
fn routes(state: &AppState) -> Routes {
    let open = Routes::new()
        .merge(dashboard::routes())
        .merge(auth::routes())
        .merge(metrics::routes())
        .add("GET", "/health", axum::routing::get(health))
        .add("GET", "/ready", axum::routing::get(ready));
    let api = Routes::new()
        .merge(api::routes())
        .merge(write::routes(state))
        .merge(events::routes())
        .merge(openapi::routes())
        .map(|r| r.layer(axum::middleware::from_fn_with_state(state.clone(), auth::require)));
    open.merge(api)
}

/// The (method, path) of every route the router serves.
pub fn route_list(state: &AppState) -> Vec<(&'static str, &'static str)> {
    routes(state).list
}

/// Every route of the API and the dashboard, with its middleware.
pub fn router(state: AppState) -> Router {
    routes(&state)
        .router
        .fallback(error::not_found)
        .layer(tower_http::limit::RequestBodyLimitLayer::new(MAX_BODY))
        .layer(axum::middleware::from_fn(error::shape))
        .with_state(state)
}

/// `GET /health`: the process answers.
async fn health() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "ok": true }))
}

/// `GET /ready`: the org's config files are all valid (503, with the first
/// problem, when one is not: the daemon then runs on its last good version).
/// The org is the one the API uses, loaded again only when its files change.
async fn ready(axum::extract::State(s): axum::extract::State<AppState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let problem = tokio::task::spawn_blocking(move || s.org().map(|org| org.problems().into_iter().next())).await;
    match problem {
        Ok(Ok(None)) => axum::Json(serde_json::json!({ "ready": true })).into_response(),
        Ok(Ok(Some(d))) => error::ApiError::unavailable(format!("a config file is not valid: {d}")).into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(e) => error::ApiError::internal(e.to_string()).into_response(),
    }
}

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address is not on this machine's loopback and no token is set.
    #[error("refusing to listen on {0} without a token: set LEMMING_API_TOKEN in the environment (anyone who can reach the address could otherwise use the API), or listen on 127.0.0.1")]
    NoToken(SocketAddr),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The token file could not be read or written.
    #[error(transparent)]
    Token(#[from] lemming_engine::error::PathError),
    /// The token from the environment cannot be used.
    #[error("{0}")]
    BadToken(String),
}

/// How long the requests in flight may take once the server is asked to stop.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// A bound server, not yet serving: its address and the dashboard's login link.
pub struct Bound {
    listener: tokio::net::TcpListener,
    state: AppState,
    /// The address it listens on (with the port the system chose for `:0`).
    pub addr: SocketAddr,
}

impl Bound {
    /// The dashboard's URL with a one-time login code (it sets the cookie);
    /// on this machine's loopback when the server listens on every address.
    pub fn login_url(&self) -> String {
        let mut at = self.addr;
        if at.ip().is_unspecified() {
            at.set_ip(if at.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        format!("http://{at}/login?code={}", self.state.logins.issue())
    }

    /// Serves until `shutdown` resolves.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let Bound { listener, state, .. } = self;
        let hub = state.hub.clone();
        let pump = tokio::spawn(events::pump(hub.clone(), state.metrics.clone(), state.root.clone()));
        let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
        // The event streams never end by themselves: closing the hub ends
        // them, so that the graceful shutdown does not wait for them.
        let closing = hub.clone();
        let (stopping_tx, mut stopping) = tokio::sync::watch::channel(false);
        let shutdown = async move {
            shutdown.await;
            closing.close();
            let _ = stopping_tx.send(true);
        };
        let serving = std::future::IntoFuture::into_future(axum::serve(listener, app).with_graceful_shutdown(shutdown));
        // A client that stopped reading cannot hold the process: the
        // requests in flight get a few seconds once the shutdown started.
        let done = tokio::select! {
            done = serving => done,
            _ = async {
                let _ = stopping.wait_for(|s| *s).await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } => {
                tracing::warn!("requests still in flight after {SHUTDOWN_GRACE:?}; stopping without them");
                Ok(())
            }
        };
        pump.abort();
        done
    }
}

/// Binds `opts.listen` for the org at `opts.root`: refuses a non-loopback
/// address without `LEMMING_API_TOKEN`, and loads or creates the token.
pub async fn bind(opts: Options) -> Result<Bound, ServeError> {
    if let Some(t) = &opts.token {
        auth::check_token(t).map_err(ServeError::BadToken)?;
    }
    let mut state = AppState::new(opts)?;
    let addr = state.listen;
    if !addr.ip().is_loopback() && !state.token_from_env {
        return Err(ServeError::NoToken(addr));
    }
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr, source })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind { addr, source })?;
    // The port the system chose for `:0` names the cookie.
    state.listen = addr;
    Ok(Bound { listener, state, addr })
}
