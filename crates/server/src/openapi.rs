//! `GET /api/openapi.json`: the API described as OpenAPI 3, kept by hand
//! beside the routes (a test checks that it lists every route the router has).

use axum::Json;
use serde_json::{json, Map, Value};

use crate::Routes;

/// `GET /api/openapi.json`.
pub fn routes() -> Routes {
    Routes::new().add("GET", "/api/openapi.json", axum::routing::get(|| async { Json(spec()) }))
}

/// A JSON answer described by `schema`.
fn ok(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema } } })
}

/// The error answer with `description`.
fn err(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
    })
}

/// A parameter in the path.
fn path_param(name: &str, description: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "description": description, "schema": { "type": "string" } })
}

/// An optional query parameter.
fn query(name: &str, description: &str, schema: Value) -> Value {
    json!({ "name": name, "in": "query", "required": false, "description": description, "schema": schema })
}

/// An operation: its summary, parameters, request body and answers (the
/// error answers every `/api` route can give are added to `/api` routes).
fn op(summary: &str, params: Vec<Value>, body: Option<Value>, mut responses: Map<String, Value>, api: bool) -> Value {
    if api {
        responses.entry("401").or_insert_with(|| err("No token, or a wrong one."));
        responses.entry("500").or_insert_with(|| err("The org's files could not be used."));
    }
    let mut o = json!({ "summary": summary, "parameters": params, "responses": responses });
    if let Some(b) = body {
        o["requestBody"] = b;
    }
    if !api {
        o["security"] = json!([]);
    }
    o
}

/// The answers a mutating route adds: too large, too many.
fn writes(mut r: Map<String, Value>) -> Map<String, Value> {
    r.insert("400".into(), err("The body is not the JSON this route takes."));
    r.insert("413".into(), err("The body is larger than 1 MiB."));
    r.insert(
        "429".into(),
        json!({
            "description": "Too many writes from this client in the window; `Retry-After` says how many seconds to wait.",
            "headers": { "Retry-After": { "schema": { "type": "integer" } } },
            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
        }),
    );
    r
}

fn map(pairs: Vec<(&str, Value)>) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

fn obj() -> Value {
    json!({ "type": "object" })
}

/// The whole description.
pub fn spec() -> Value {
    let name = || path_param("name", "An agent's name (`^[a-z][a-z0-9_-]{0,63}$`).");
    let unknown = || {
        err("No such agent; `details.closest` names the closest agents (at most ten), `details.agents` counts them.")
    };
    let held = || err("The agent's resume is invalid and has no last good version (code `held`; `details.problems`).");
    let problems = json!({ "type": "array", "items": { "$ref": "#/components/schemas/Problem" } });
    let toml =
        |d: &str| json!({ "description": d, "content": { "application/toml": { "schema": { "type": "string" } } } });
    let mut paths = Map::new();
    paths.insert("/health".into(), json!({ "get": op("The process answers.", vec![], None, map(vec![("200", ok("Alive.", json!({"type":"object","properties":{"ok":{"type":"boolean"}}})))]), false) }));
    paths.insert(
        "/ready".into(),
        json!({ "get": op("The org's files can be loaded.", vec![], None, map(vec![
            ("200", ok("Ready.", json!({"type":"object","properties":{"ready":{"type":"boolean"}}}))),
            ("503", err("The org cannot be loaded.")),
        ]), false) }),
    );
    paths.insert("/login".into(), json!({ "get": op(
            "Trades a one-time login code (printed at start) for the dashboard's cookie.",
            vec![json!({ "name": "code", "in": "query", "required": true, "description": "The code of the printed link: good once, for 10 minutes.", "schema": { "type": "string" } })],
            None,
            map(vec![
                ("303", json!({ "description": "Logged in: sets the `lemming_token_PORT` cookie (PORT: the port served; HttpOnly, SameSite=Strict) and goes to `/`.", "headers": { "Set-Cookie": { "schema": { "type": "string" } }, "Location": { "schema": { "type": "string" } } } })),
                ("401", err("The code is unknown, used or expired (an HTML page when the client accepts HTML).")),
            ]),
            false,
        ) }));
    paths.insert("/".into(), json!({ "get": op("The dashboard: one page, no build step.", vec![], None, map(vec![
            ("200", json!({ "description": "The page.", "content": { "text/html": { "schema": { "type": "string" } } } })),
        ]), false) }));
    paths.insert("/assets/{file}".into(), json!({ "get": op("A vendored script or style of the dashboard.", vec![path_param("file", "The asset's file name.")], None, map(vec![
            ("200", json!({ "description": "The file." })),
            ("404", err("No such asset.")),
        ]), false) }));
    paths.insert("/metrics".into(), json!({ "get": op("Prometheus metrics (text format); open on loopback, else it needs the token.", vec![], None, map(vec![
            ("200", json!({ "description": "The metric families.", "content": { "text/plain": { "schema": { "type": "string" } } } })),
            ("401", err("Not on loopback and no token.")),
        ]), false) }));
    paths.insert("/api/events".into(), json!({ "get": op(
            "Server-Sent Events: each committed event as `id:` (a sequence number), `event:` (turn_started, turn_committed, delivered, ran, failed, dead, charged, topped_up, tool_call, config_error, paused, resumed, skipped, recovered, reply_delta) and JSON `data:`. Send `Last-Event-ID` to get exactly the events missed. `turn_started` and `reply_delta` (`agent`, `text`: the next piece of the raw reply of a model with `stream = true`; `restart`: forget that agent's text so far) are live only, from a daemon in the server's process: they have no `id:` and are not replayed.",
            vec![json!({ "name": "Last-Event-ID", "in": "header", "required": false, "description": "The last id received.", "schema": { "type": "string" } })],
            None,
            map(vec![("200", json!({ "description": "The stream.", "content": { "text/event-stream": { "schema": { "type": "string" } } } }))]),
            true,
        ) }));
    paths.insert(
        "/api/openapi.json".into(),
        json!({ "get": op("This description.", vec![], None, map(vec![("200", ok("OpenAPI 3.0.", obj()))]), true) }),
    );
    paths.insert("/api/status".into(), json!({ "get": op("The turn, the daemon, each agent's state, credits and mail, dead letters (the shape of `lemming status --json`).", vec![], None, map(vec![("200", ok("The status.", json!({ "$ref": "#/components/schemas/Status" })))]), true) }));
    paths.insert("/api/agents".into(), json!({ "get": op("The agents, and the folders whose resume is invalid.", vec![], None, map(vec![
            ("200", ok("The agents.", json!({ "type": "object", "properties": {
                "agents": { "type": "array", "items": { "type": "object", "properties": {
                    "name": { "type": "string" }, "title": { "type": "string" }, "model": { "type": "string", "nullable": true },
                    "every": { "type": "integer" }, "wake": { "type": "string", "enum": ["mail", "always"] },
                    "sends_to": { "type": "array", "items": { "type": "string" } },
                    "groups": { "type": "array", "items": { "type": "string" }, "description": "The groups of org.toml it is a member of." },
                    "credits_left": { "type": "number" } } } },
                "invalid": { "type": "array", "items": { "type": "string" } } } }))),
        ]), true) }));
    paths.insert("/api/agents/{name}".into(), json!({ "get": op("One agent in detail (the shape of `lemming inspect NAME --json`).", vec![name()], None, map(vec![
            ("200", ok("The agent.", obj())), ("404", unknown()), ("409", held()),
        ]), true) }));
    paths.insert("/api/agents/{name}/resume".into(), json!({
            "get": op("The agent's resume.toml as it is on disk (also for an agent whose resume is invalid).", vec![name()], None, map(vec![
                ("200", toml("The TOML text.")), ("404", unknown()), ("409", err("The file cannot be read as a config file (code `unreadable`; `details` says why).")),
            ]), true),
            "put": op(
                "Replaces the resume. It is judged as `lemming validate` judges the org with this text in place; a valid one is written atomically and audited (`edit_resume`), and a running daemon uses it from its next turn.",
                vec![name()],
                Some(json!({ "required": true, "description": "The whole new resume.toml.", "content": { "application/toml": { "schema": { "type": "string" } }, "text/plain": { "schema": { "type": "string" } } } })),
                writes(map(vec![
                    ("200", ok("Written.", json!({ "type": "object", "properties": { "agent": { "type": "string" }, "bytes": { "type": "integer" }, "written": { "type": "boolean" } } }))),
                    ("404", unknown()),
                    ("422", json!({ "description": "Not a valid resume; nothing was written. `error.details` lists the problems, each with its line and column.", "content": { "application/json": { "schema": { "allOf": [{ "$ref": "#/components/schemas/Error" }, { "type": "object", "properties": { "error": { "type": "object", "properties": { "details": problems } } } }] } } } })),
                ])),
                true,
            ),
        }));
    paths.insert("/api/agents/{name}/top-up".into(), json!({ "post": op(
            "Adds credits to an agent (a ledger entry, audited).",
            vec![name()],
            Some(json!({ "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["amount"], "properties": { "amount": { "type": "number", "minimum": 0.0001, "maximum": 1_000_000_000_000.0_f64 } } } } } })),
            writes(map(vec![
                ("200", ok("Added.", json!({ "type": "object", "properties": { "agent": { "type": "string" }, "amount": { "type": "number" }, "left": { "type": "number" } } }))),
                ("404", unknown()), ("409", held()), ("422", err("The amount is out of range (`details.field` is `amount`).")),
            ])),
            true,
        ) }));
    paths.insert("/api/messages".into(), json!({ "get": op(
            "Every message in the org's inboxes (unread and read) and outboxes' sent mail, once each, newest first.",
            vec![
                query("agent", "Only messages from or to this agent.", json!({ "type": "string" })),
                query("thread", "Only this thread (a thread id, or the id of any of its messages).", json!({ "type": "string" })),
                query("q", "Only messages whose subject or body holds this text (case-insensitive).", json!({ "type": "string" })),
                query("limit", "At most this many (default 50).", json!({ "type": "integer", "minimum": 1, "maximum": 500 })),
                query("before", "Only messages older than the message with this id (`next_before` of the last page).", json!({ "type": "string" })),
            ],
            None,
            map(vec![
                ("200", ok("A page.", json!({ "type": "object", "properties": { "messages": { "type": "array", "items": { "$ref": "#/components/schemas/MessageRow" } }, "next_before": { "type": "string", "nullable": true }, "unreadable": { "type": "array", "items": obj() } } }))),
                ("400", err("A bad limit, id or parameter.")), ("404", err("No such agent (`details.closest`), or no message with the `before` id.")),
            ]),
            true,
        ) }));
    paths.insert("/api/messages/{id}".into(), json!({ "get": op("One message, and who has it read or unread.", vec![path_param("id", "A message id.")], None, map(vec![
            ("200", ok("The message.", json!({ "$ref": "#/components/schemas/MessageRow" }))), ("400", err("Not a message id.")), ("404", err("No such message.")),
        ]), true) }));
    paths.insert("/api/threads/{id}".into(), json!({ "get": op("A conversation as a tree of replies, from every mailbox (inboxes, sent mail, dead letters).", vec![path_param("id", "A thread id, or the id of one of its messages.")], None, map(vec![
            ("200", ok("The thread.", json!({ "type": "object", "properties": { "thread": { "type": "string" }, "messages": { "type": "array", "items": obj() }, "unreadable": { "type": "array", "items": obj() } } }))),
            ("400", err("Not a message id.")), ("404", err("No such thread.")),
        ]), true) }));
    paths.insert("/api/send".into(), json!({ "post": op(
            "Sends a message as `human`: durable in its outbox when this answers; the next turn routes it.",
            vec![],
            Some(json!({ "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["to", "body"], "properties": {
                "to": { "type": "string", "description": "An agent, a group as `@name`, or `*` for every agent `human` may write to." }, "body": { "type": "string" },
                "priority": { "type": "string", "enum": ["low", "normal", "urgent"], "default": "normal" },
                "reply_to": { "type": "string", "description": "The id of the message this answers (its thread is kept)." },
                "subject": { "type": "string" },
                "ack": { "type": "boolean", "default": false, "description": "Ask for a `receipt` message from each recipient that reads it." } } } } } })),
            writes(map(vec![
                ("200", ok("Sent.", json!({ "type": "object", "properties": { "id": { "type": "string" }, "thread": { "type": "string" } } }))),
                ("403", err("The org chart does not let `human` write to `to` (`details.reason`: chart_send_to or chart_read_from; `details.reachable`).")),
                ("404", unknown()), ("409", held()),
                ("422", err("A bad `reply_to`, an unknown group in `to`, or a message larger than `max_message_bytes` (`details.field`).")),
            ])),
            true,
        ) }));
    paths.insert("/api/chart".into(), json!({ "get": op("The org chart: every agent with its state, and an edge wherever both sides allow mail.", vec![], None, map(vec![
            ("200", ok("The chart.", json!({ "type": "object", "properties": {
                "nodes": { "type": "array", "items": { "type": "object", "properties": { "name": { "type": "string" }, "title": { "type": "string" }, "model": { "type": "string", "nullable": true }, "state": { "type": "string" }, "credits_left": { "type": "number" }, "unread": { "type": "integer" }, "last_run_turn": { "type": "integer", "nullable": true } } } },
                "edges": { "type": "array", "items": { "type": "object", "properties": { "from": { "type": "string" }, "to": { "type": "string" } } } },
                "unreadable": { "type": "array", "items": obj() } } }))),
        ]), true) }));
    paths.insert("/api/ledger".into(), json!({ "get": op(
            "The credits ledger in order (charges and top-ups), each with the agent's spent and left after it.",
            vec![query("agent", "Only this agent's entries.", json!({ "type": "string" }))],
            None,
            map(vec![
                ("200", ok("The entries.", json!({ "type": "object", "properties": { "agent": { "type": "string", "nullable": true }, "entries": { "type": "array", "items": { "type": "object", "properties": {
                    "kind": { "type": "string", "enum": ["charge", "top_up"] }, "turn": { "type": "integer" }, "agent": { "type": "string" }, "model": { "type": "string" },
                    "input_tokens": { "type": "integer" }, "output_tokens": { "type": "integer" }, "cost": { "type": "number" }, "amount": { "type": "number" },
                    "at": { "type": "string", "format": "date-time" }, "line": { "type": "integer" }, "spent": { "type": "number" }, "left": { "type": "number" } } } },
                    "unreadable": { "type": "array", "items": obj() } } }))),
                ("404", unknown()),
            ]),
            true,
        ) }));
    paths.insert("/api/logs/{agent}".into(), json!({ "get": op(
            "An agent's last runs from its activity log, oldest first.",
            vec![path_param("agent", "An agent's name."), query("n", "How many runs (default 20).", json!({ "type": "integer", "minimum": 1, "maximum": 10000 }))],
            None,
            map(vec![("200", ok("The runs.", json!({ "type": "object", "properties": { "agent": { "type": "string" }, "runs": { "type": "array", "items": obj() }, "not_runs": { "type": "array", "items": { "type": "string" } } } }))), ("400", err("A bad `n`.")), ("404", unknown())]),
            true,
        ) }));
    paths.insert("/api/dead".into(), json!({ "get": op("Dead letters with their reasons, newest first.", vec![], None, map(vec![
            ("200", ok("The dead letters.", json!({ "type": "object", "properties": { "letters": { "type": "array", "items": { "type": "object", "properties": {
                "id": { "type": "string" }, "reason": { "type": "string" }, "detail": { "type": "string" }, "mailbox": { "type": "string" },
                "to": { "type": "array", "items": { "type": "string" } }, "turn": { "type": "integer" }, "at": { "type": "string", "format": "date-time" }, "letter": { "type": "boolean" } } } },
                "unreadable": { "type": "array", "items": obj() } } }))),
        ]), true) }));
    paths.insert("/api/pause".into(), json!({ "post": op("Pauses the daemon's turns (durable; audited).", vec![], None, writes(map(vec![
            ("200", ok("Paused.", json!({ "type": "object", "properties": { "paused": { "type": "boolean" }, "daemon_running": { "type": "boolean" } } }))),
        ])), true) }));
    paths.insert("/api/resume".into(), json!({ "post": op("Lets the daemon start turns again (durable; audited).", vec![], None, writes(map(vec![
            ("200", ok("Resumed.", json!({ "type": "object", "properties": { "paused": { "type": "boolean" }, "daemon_running": { "type": "boolean" } } }))),
        ])), true) }));
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "lemming",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The HTTP API of one lemming org: the views the command line shows, the same writes, and live events. Every /api route needs the token (`Authorization: Bearer TOKEN`, or the dashboard's cookie). Errors are `{\"error\":{\"code\",\"message\",\"details\"?}}`."
        },
        "security": [{ "bearerAuth": [] }],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearerAuth": { "type": "http", "scheme": "bearer", "description": "LEMMING_API_TOKEN, or the token in org/state/api-token." },
                "cookieAuth": { "type": "apiKey", "in": "cookie", "name": format!("{}_PORT", crate::auth::COOKIE), "description": "The dashboard's cookie, named for the port served (for example `lemming_token_7878`); a write with the cookie alone must come from the dashboard's own page (`Origin` or `Sec-Fetch-Site`), else 403 `cross_site`." }
            },
            "schemas": {
                "Error": { "type": "object", "required": ["error"], "properties": { "error": { "type": "object", "required": ["code", "message"], "properties": {
                    "code": { "type": "string", "description": "bad_request, unauthorized, forbidden, not_found, held, unreadable, method_not_allowed, too_large, invalid, rate_limited, internal, unavailable" },
                    "message": { "type": "string", "description": "What was wrong and what to do." },
                    "details": { "description": "More, machine-readable: the known agents, a resume's problems, ..." } } } } },
                "Problem": { "type": "object", "properties": {
                    "file": { "type": "string" }, "line": { "type": "integer", "nullable": true }, "column": { "type": "integer", "nullable": true },
                    "message": { "type": "string" }, "help": { "type": "string", "nullable": true } } },
                "Status": { "type": "object", "properties": {
                    "turn": { "type": "integer" }, "tool_calls": { "type": "integer" }, "daemon": obj(), "agents": { "type": "array", "items": obj() },
                    "dead_letters": { "type": "integer" }, "problems": { "type": "array", "items": obj() }, "spent": { "type": "number" } } },
                "MessageRow": { "type": "object", "properties": {
                    "id": { "type": "string" }, "from": { "type": "string" }, "to": { "oneOf": [{ "type": "string" }, { "type": "array", "items": { "type": "string" } }] },
                    "subject": { "type": "string", "nullable": true }, "body": { "type": "string" }, "priority": { "type": "string", "enum": ["low", "normal", "urgent"] },
                    "reply_to": { "type": "string", "nullable": true }, "thread": { "type": "string" }, "created_at": { "type": "string", "format": "date-time" },
                    "turn": { "type": "integer" }, "kind": { "type": "string" },
                    "unread_by": { "type": "array", "items": { "type": "string" } }, "read_by": { "type": "array", "items": { "type": "string" } },
                    "archived_by": { "type": "array", "items": { "type": "string" } } } }
            }
        }
    })
}

/// The (method, path) of every operation the description has.
pub fn described() -> Vec<(String, String)> {
    let spec = spec();
    let mut out = Vec::new();
    for (path, ops) in spec["paths"].as_object().into_iter().flatten() {
        for method in ops.as_object().into_iter().flatten().map(|(m, _)| m) {
            out.push((method.to_uppercase(), path.clone()));
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn routes() -> BTreeSet<(String, String)> {
        let d = tempfile::tempdir().unwrap();
        lemming_engine::init::init(d.path()).unwrap();
        let mut opts = crate::Options::new(d.path().to_path_buf(), "127.0.0.1:0".parse().unwrap());
        opts.token = Some("t".into());
        let state = crate::AppState::new(opts).unwrap();
        crate::route_list(&state).into_iter().map(|(m, p)| (m.to_string(), p.to_string())).collect()
    }

    #[test]
    fn every_route_the_router_has_is_described() {
        let spec: BTreeSet<_> = described().into_iter().collect();
        let missing: Vec<_> = routes().difference(&spec).cloned().collect();
        assert!(missing.is_empty(), "routes not in the OpenAPI description: {missing:?}");
    }

    /// Exactly the router's routes: once the event stream, the metrics and
    /// the dashboard are routed too, nothing is described that is not served.
    #[test]
    fn the_description_lists_exactly_the_routes_the_router_has() {
        let spec: BTreeSet<_> = described().into_iter().collect();
        let routes = routes();
        let extra: Vec<_> = spec.difference(&routes).collect();
        let missing: Vec<_> = routes.difference(&spec).collect();
        assert!(
            extra.is_empty() && missing.is_empty(),
            "described, not routed: {extra:?}; routed, not described: {missing:?}"
        );
    }

    #[test]
    fn the_description_is_openapi_3_with_the_error_shape_and_bearer_auth() {
        let s = spec();
        assert!(s["openapi"].as_str().unwrap().starts_with("3.0"));
        assert_eq!(s["components"]["securitySchemes"]["bearerAuth"]["scheme"], "bearer");
        let put = &s["paths"]["/api/agents/{name}/resume"]["put"]["responses"];
        for code in ["401", "404", "413", "422", "429"] {
            assert!(put.get(code).is_some(), "PUT resume has no {code}");
        }
        assert_eq!(s["paths"]["/health"]["get"]["security"], json!([]), "open");
        // Every $ref resolves.
        let text = s.to_string();
        for r in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = &r[..r.find('"').unwrap()];
            assert!(s["components"]["schemas"].get(name).is_some(), "{name}");
        }
    }
}
