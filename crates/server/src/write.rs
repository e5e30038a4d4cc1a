//! The mutating routes, the same operations as the CLI: send (durable before
//! the answer), top-up, pause and resume, and the resume editor's PUT
//! (validated like `lemming validate`, written atomically, audited). Each is
//! rate limited per client.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{post, put};
use axum::Json;
use lemming_engine::daemon;
use lemming_engine::journal::Journal;
use lemming_engine::ledger::{self, Ledger, TopUpError};
use lemming_engine::message::Priority;
use lemming_engine::name::HUMAN;
use lemming_engine::send::{self, SendError, SendOptions};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::{agent_folder, edit_error, live_agent, unknown_agent, with_org};
use crate::error::ApiError;
use crate::extract::{JsonBody, PathParam, RawBody};
use crate::state::AppState;
use crate::Routes;

/// The mutating routes, behind the rate limiter.
pub fn routes(state: &AppState) -> Routes {
    // Saving a resume also counts against a stricter window of its own: a
    // script rewriting the org's config in a loop is refused long before it
    // could wear the disk or the daemon's reloads.
    let config = axum::middleware::from_fn_with_state(state.config_limiter.clone(), crate::limit::limit);
    Routes::new()
        .add("POST", "/api/send", post(send_message))
        .add("POST", "/api/agents/{name}/top-up", post(top_up))
        .add("POST", "/api/pause", post(pause))
        .add("POST", "/api/resume", post(resume))
        .add("PUT", "/api/agents/{name}/resume", put(put_resume).layer(config))
        .map(|r| r.layer(axum::middleware::from_fn_with_state(state.limiter.clone(), crate::limit::limit)))
}

/// The body of `POST /api/send`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SendBody {
    to: String,
    body: String,
    #[serde(default)]
    priority: Priority,
    reply_to: Option<String>,
    subject: Option<String>,
    #[serde(default)]
    ack: bool,
}

/// `POST /api/send`: a message from `human`, durable in its outbox when this
/// answers `{"id"}`; the next turn routes it.
async fn send_message(State(s): State<AppState>, JsonBody(b): JsonBody<SendBody>) -> Result<Json<Value>, ApiError> {
    let sources = s.sources.clone();
    with_org(&s, move |org| {
        let (priority, reply_to, subject, ack) = (b.priority, b.reply_to, b.subject, b.ack);
        let opts = SendOptions { priority, reply_to, subject, ttl_turns: None, ack, sources };
        match send::send(&org, HUMAN, &b.to, &b.body, opts) {
            Ok(m) => Ok(Json(json!({ "id": m.id, "thread": m.thread }))),
            Err(SendError::UnknownAgent(_)) => {
                // Which one: the recipient, or (in an org without one) the human.
                let who = if org.agent(&b.to).is_err() { b.to.as_str() } else { HUMAN };
                Err(match live_agent(&org, who) {
                    Err(e) => e,
                    Ok(_) => unknown_agent(&org, who),
                })
            }
            Err(SendError::Denied { denial, from, reachable }) => {
                let mut e = ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    format!("{denial}; the org chart allows {from} to write to: {reachable}"),
                );
                e.details = Some(json!({ "reason": denial.code().as_str(), "reachable": reachable }));
                Err(e)
            }
            Err(e @ SendError::Unroutable { .. }) => Err(ApiError::invalid(e.to_string(), json!({ "field": "to" }))),
            Err(e @ SendError::BadReplyTo(_)) => Err(ApiError::invalid(e.to_string(), json!({ "field": "reply_to" }))),
            Err(e @ SendError::TooLarge { .. }) => Err(ApiError::invalid(e.to_string(), json!({ "field": "body" }))),
            Err(e @ SendError::Elsewhere { .. }) => {
                Err(ApiError::new(StatusCode::CONFLICT, "elsewhere", e.to_string().replace("\n  help: ", "; ")))
            }
            Err(SendError::Io(p)) => Err(p.into()),
        }
    })
    .await
}

/// The body of `POST /api/agents/{name}/top-up`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopUpBody {
    amount: f64,
}

/// `POST /api/agents/{name}/top-up`: a ledger credit; answers the credits left.
async fn top_up(
    State(s): State<AppState>,
    PathParam(name): PathParam<String>,
    JsonBody(b): JsonBody<TopUpBody>,
) -> Result<Json<Value>, ApiError> {
    let at = s.sources.now();
    with_org(&s, move |org| {
        live_agent(&org, &name)?;
        let r = org.agent(&name).map_err(|_| unknown_agent(&org, &name))?;
        let turn = Journal::new(&org.layout).last_turn()?;
        match ledger::top_up(&org.layout, r.name.as_str(), r.credits, b.amount, turn, at) {
            Ok(_) => {}
            Err(TopUpError::Io(p)) => return Err(p.into()),
            Err(e) => {
                let m = e.to_string().replacen("AMOUNT", "amount", 1);
                return Err(ApiError::invalid(m, json!({ "field": "amount" })));
            }
        }
        let left = Ledger::load(&org.layout.ledger())?.balance(r.name.as_str(), r.credits).left;
        Ok(Json(json!({ "agent": name, "amount": b.amount, "left": left })))
    })
    .await
}

/// `POST /api/pause` and `POST /api/resume`.
async fn set_paused(s: AppState, paused: bool) -> Result<Json<Value>, ApiError> {
    let at = s.sources.now();
    with_org(&s, move |org| {
        daemon::set_paused(&org.layout, paused, at)?;
        let running = daemon::daemon_pid(&org.layout).is_some();
        Ok(Json(json!({ "paused": paused, "daemon_running": running })))
    })
    .await
}

/// `POST /api/pause`: the daemon finishes its turn and starts no new ones.
async fn pause(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    set_paused(s, true).await
}

/// `POST /api/resume`: the daemon starts turns again.
async fn resume(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    set_paused(s, false).await
}

/// `PUT /api/agents/{name}/resume`: the new TOML as the body. 422 with the
/// problems (`[{"file","line","column","message","help"}]`) and nothing
/// written when it is not valid; written atomically and audited when it is.
async fn put_resume(
    State(s): State<AppState>,
    PathParam(name): PathParam<String>,
    RawBody(bytes): RawBody,
) -> Result<Json<Value>, ApiError> {
    let at = s.sources.now();
    let done = with_org(&s, move |org| {
        agent_folder(&org, &name)?;
        let size = bytes.len();
        lemming_engine::edit::write_resume(&org, &name, bytes.to_vec(), at).map_err(|e| edit_error(&org, &name, e))?;
        Ok(Json(json!({ "agent": name, "bytes": size, "written": true })))
    })
    .await;
    // The next request sees the new resume at once.
    s.forget_org();
    done
}
