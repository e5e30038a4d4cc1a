//! The read routes: status, agents, one agent, its resume (GET), messages,
//! threads, the chart, the ledger, logs and dead letters, each from the
//! engine's views (the same values the CLI renders).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use lemming_engine::edit::{self, EditResumeError};
use lemming_engine::events::Problem;
use lemming_engine::name::AgentName;
use lemming_engine::org::{agent_folders, Org};
use lemming_engine::suggest::{self, Kind};
use lemming_engine::views::{self, MessageQuery, MessageQueryError, ViewError};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::ApiError;
use crate::extract::{PathParam, QueryParams};
use crate::state::AppState;
use crate::Routes;

/// The read routes.
pub fn routes() -> Routes {
    Routes::new()
        .add("GET", "/api/status", get(status))
        .add("GET", "/api/agents", get(agents))
        .add("GET", "/api/agents/{name}", get(inspect))
        .add("GET", "/api/agents/{name}/resume", get(resume))
        .add("GET", "/api/messages", get(messages))
        .add("GET", "/api/messages/{id}", get(message))
        .add("GET", "/api/threads/{id}", get(thread))
        .add("GET", "/api/chart", get(chart))
        .add("GET", "/api/ledger", get(ledger))
        .add("GET", "/api/logs/{agent}", get(logs))
        .add("GET", "/api/dead", get(dead))
}

// Shared helpers -----------------------------------------------------------

/// Runs `f` on the org as its files are now, off the async threads (views
/// read files).
pub(crate) async fn with_org<T: Send + 'static>(
    s: &AppState,
    f: impl FnOnce(Arc<Org>) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let s = s.clone();
    tokio::task::spawn_blocking(move || f(s.org()?))
        .await
        .map_err(|e| ApiError::internal(format!("the request's work failed: {e}")))?
}

/// Every agent folder, valid or held.
fn known(org: &Org) -> Vec<String> {
    agent_folders(&org.layout).into_iter().filter(|f| AgentName::new(f).is_ok()).collect()
}

/// 404 for a name that is no agent's, with the closest known names
/// (`details.closest`, all of them in a small org) and how many agents there
/// are (`details.agents`).
pub(crate) fn unknown_agent(org: &Org, name: &str) -> ApiError {
    let known = known(org);
    let why = match AgentName::new(name) {
        Ok(_) => format!("unknown agent `{}`", lemming_engine::term::line(name)),
        Err(e) => e.to_string(),
    };
    let hint = suggest::hint(Kind::Agent, name, known.iter().map(String::as_str));
    let mut e = ApiError::not_found(format!("{why} ({hint})"));
    e.details = Some(json!({ "closest": hint.names, "agents": hint.total }));
    e
}

/// Checks `name` against the name rule and the agent folders before any path
/// is built from it: 404 with the closest known names otherwise.
pub(crate) fn agent_folder(org: &Org, name: &str) -> Result<AgentName, ApiError> {
    match AgentName::new(name) {
        Ok(n) if known(org).binary_search_by(|k| k.as_str().cmp(name)).is_ok() => Ok(n),
        _ => Err(unknown_agent(org, name)),
    }
}

/// An agent that can act (its resume valid, or its last good version): 404
/// for an unknown name, 409 `held` for an agent whose resume is invalid and
/// has no last good version, with its problems.
pub(crate) fn live_agent(org: &Org, name: &str) -> Result<AgentName, ApiError> {
    let n = agent_folder(org, name)?;
    if let Some(problems) = org.broken.get(name) {
        let problems: Vec<Problem> = problems.iter().map(|d| Problem::of(d, &org.layout.root)).collect();
        let mut e = ApiError::new(
            StatusCode::CONFLICT,
            "held",
            format!(
                "agent `{name}` has an invalid resume and no last good version, so it is held until the file is fixed \
                 (PUT /api/agents/{name}/resume)"
            ),
        );
        e.details = Some(json!({ "problems": problems }));
        return Err(e);
    }
    Ok(n)
}

/// A view's error as an answer.
pub(crate) fn view_error(org: &Org, name: Option<&str>, e: ViewError) -> ApiError {
    match e {
        ViewError::UnknownAgent(u) => match name {
            Some(n) => unknown_agent(org, n),
            None => ApiError::not_found(u.to_string()),
        },
        ViewError::UnknownThread(id) => ApiError::not_found(format!(
            "no message with the id or thread `{id}` in any inbox; GET /api/messages lists them"
        )),
        ViewError::Path(p) => p.into(),
    }
}

/// 400 for a message id that breaks the id rule; the path is never built.
fn message_id(id: &str) -> Result<(), ApiError> {
    if lemming_engine::message::valid_id(id) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "{:?} is not a message id: ids use only A-Z, a-z, 0-9, '_', '.', '-' (at most 128 bytes, starting with a \
             letter or digit)",
            lemming_engine::term::line(id)
        )))
    }
}

/// A view as a JSON answer.
fn answer<T: Serialize>(v: T) -> Response {
    Json(v).into_response()
}

// Handlers -------------------------------------------------------------------

/// `GET /api/status`: the shape of `lemming status --json`; in an org on
/// several nodes, with `cluster`: the link to the NATS server and every node
/// (`lemming status --cluster --json`), or why the server cannot be reached.
async fn status(State(s): State<AppState>) -> Result<Response, ApiError> {
    with_org(&s, |org| {
        let view = views::status(&org)?;
        let Some(c) = &org.settings.cluster else { return Ok(answer(view)) };
        let mut v = serde_json::to_value(view).map_err(|e| ApiError::internal(e.to_string()))?;
        v["cluster"] = match lemming_cluster::cluster_status(c) {
            Ok(nodes) => json!({"nats_url": c.nats_url, "link": "connected", "nodes": nodes}),
            Err(e) => json!({"nats_url": c.nats_url, "link": "unreachable", "error": e}),
        };
        Ok(answer(v))
    })
    .await
}

/// `GET /api/agents`: the agents (`lemming agents --json`) and the held ones.
async fn agents(State(s): State<AppState>) -> Result<Response, ApiError> {
    with_org(&s, |org| views::agents(&org).map(answer).map_err(|e| view_error(&org, None, e))).await
}

/// `GET /api/agents/{name}`: the shape of `lemming inspect NAME --json`.
async fn inspect(State(s): State<AppState>, PathParam(name): PathParam<String>) -> Result<Response, ApiError> {
    with_org(&s, move |org| {
        live_agent(&org, &name)?;
        views::inspect(&org, &name).map(answer).map_err(|e| view_error(&org, Some(&name), e))
    })
    .await
}

/// `GET /api/agents/{name}/resume`: the resume's TOML as it is on disk.
async fn resume(State(s): State<AppState>, PathParam(name): PathParam<String>) -> Result<Response, ApiError> {
    with_org(&s, move |org| {
        agent_folder(&org, &name)?;
        match edit::read_resume(&org, &name) {
            Ok(text) => Ok(([(header::CONTENT_TYPE, "application/toml; charset=utf-8")], text).into_response()),
            Err(e) => Err(edit_error(&org, &name, e)),
        }
    })
    .await
}

/// A resume editor's error as an answer.
pub(crate) fn edit_error(org: &Org, name: &str, e: EditResumeError) -> ApiError {
    match e {
        EditResumeError::UnknownAgent(_) => unknown_agent(org, name),
        EditResumeError::Invalid(problems) => ApiError::invalid(
            format!(
                "the resume is not valid ({} problem(s)); nothing was written: fix the lines in `details` and send it again",
                problems.len()
            ),
            json!(problems),
        ),
        EditResumeError::Unreadable(problems) => {
            let mut e = ApiError::new(
                StatusCode::CONFLICT,
                "unreadable",
                format!("agents/{name}/resume.toml cannot be read as a config file; `details` says why"),
            );
            e.details = Some(json!(problems));
            e
        }
        EditResumeError::Io(p) => p.into(),
    }
}

/// The query of `GET /api/messages`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MessagesQuery {
    agent: Option<String>,
    thread: Option<String>,
    q: Option<String>,
    limit: Option<usize>,
    before: Option<String>,
}

/// A message query's error as an answer.
fn query_error(org: &Org, agent: Option<&str>, e: MessageQueryError) -> ApiError {
    match e {
        MessageQueryError::Limit(_) | MessageQueryError::BadId(_) => ApiError::bad_request(e.to_string()),
        MessageQueryError::UnknownMessage(_) => ApiError::not_found(e.to_string()),
        MessageQueryError::View(v) => view_error(org, agent, v),
    }
}

/// `GET /api/messages?agent=&thread=&q=&limit=&before=`: newest first.
async fn messages(State(s): State<AppState>, QueryParams(q): QueryParams<MessagesQuery>) -> Result<Response, ApiError> {
    with_org(&s, move |org| {
        if let Some(a) = &q.agent {
            agent_folder(&org, a)?;
        }
        let agent = q.agent.clone();
        let query = MessageQuery { agent: q.agent, thread: q.thread, q: q.q, limit: q.limit, before: q.before };
        views::messages(&org, &query).map(answer).map_err(|e| query_error(&org, agent.as_deref(), e))
    })
    .await
}

/// `GET /api/messages/{id}`.
async fn message(State(s): State<AppState>, PathParam(id): PathParam<String>) -> Result<Response, ApiError> {
    message_id(&id)?;
    with_org(&s, move |org| views::message(&org, &id).map(answer).map_err(|e| query_error(&org, None, e))).await
}

/// `GET /api/threads/{id}`: the thread `id` names, or the thread of message `id`.
async fn thread(State(s): State<AppState>, PathParam(id): PathParam<String>) -> Result<Response, ApiError> {
    message_id(&id)?;
    with_org(&s, move |org| views::thread(&org, &id).map(answer).map_err(|e| view_error(&org, None, e))).await
}

/// `GET /api/chart`.
async fn chart(State(s): State<AppState>) -> Result<Response, ApiError> {
    with_org(&s, |org| Ok(answer(views::chart(&org)?))).await
}

/// The query of `GET /api/ledger`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LedgerQuery {
    agent: Option<String>,
}

/// `GET /api/ledger?agent=`: entries in order, with the balance after each.
async fn ledger(State(s): State<AppState>, QueryParams(q): QueryParams<LedgerQuery>) -> Result<Response, ApiError> {
    with_org(&s, move |org| {
        if let Some(a) = &q.agent {
            agent_folder(&org, a)?;
        }
        views::ledger(&org, q.agent.as_deref()).map(answer).map_err(|e| view_error(&org, q.agent.as_deref(), e))
    })
    .await
}

/// The most runs `GET /api/logs/{agent}` returns.
pub const MAX_LOG_RUNS: usize = 10_000;

/// The query of `GET /api/logs/{agent}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogsQuery {
    n: Option<usize>,
}

/// `GET /api/logs/{agent}?n=`: the last `n` runs (20 by default).
async fn logs(
    State(s): State<AppState>,
    PathParam(agent): PathParam<String>,
    QueryParams(q): QueryParams<LogsQuery>,
) -> Result<Response, ApiError> {
    let n = q.n.unwrap_or(20);
    if n == 0 || n > MAX_LOG_RUNS {
        return Err(ApiError::bad_request(format!("n must be 1 to {MAX_LOG_RUNS}, not {n}")));
    }
    with_org(&s, move |org| {
        agent_folder(&org, &agent)?;
        views::logs(&org, &agent, n).map(answer).map_err(|e| view_error(&org, Some(&agent), e))
    })
    .await
}

/// `GET /api/dead`: newest first.
async fn dead(State(s): State<AppState>) -> Result<Response, ApiError> {
    with_org(&s, |org| Ok(answer(views::dead(&org)?))).await
}
