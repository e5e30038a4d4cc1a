//! A small HTTP server on 127.0.0.1 with an ephemeral port, for provider
//! tests, built on axum: it records every request (method, path, headers,
//! body, arrival time) and answers as the test's handler says: a scripted
//! response, a hang, or a forward to a real server (recording the real
//! response). It runs on a runtime of its own in one thread, and is stopped
//! (every connection closed, a hanging one too) when the value is dropped; no
//! answer hangs longer than [`HANG_LIMIT`].

use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::oneshot;

/// The longest a hanging answer waits; then it answers 504.
pub const HANG_LIMIT: Duration = Duration::from_secs(30);

/// One request as received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When its head arrived.
    pub at: Instant,
    /// What the server answered with (the upstream's body, for a forward).
    pub response: Option<(u16, String)>,
}

impl Recorded {
    /// A header's value (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("request body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// What to answer.
pub enum Answer {
    /// A response with this status, extra headers and body (`Content-Type:
    /// application/json` unless the headers say otherwise).
    Respond { status: u16, headers: Vec<(String, String)>, body: String },
    /// Never answer (until the client gives up, the server stops, or [`HANG_LIMIT`]).
    Hang,
    /// Pass the request to a real server at this address and relay its answer.
    Forward(SocketAddr),
}

impl Answer {
    /// 200 with a JSON body.
    pub fn json(body: impl Into<String>) -> Answer {
        Answer::status(200, body)
    }

    /// A status with a body.
    pub fn status(status: u16, body: impl Into<String>) -> Answer {
        Answer::Respond { status, headers: vec![], body: body.into() }
    }
}

type Handler = dyn Fn(&Recorded, usize) -> Answer + Send + Sync;

#[derive(Clone)]
struct Shared {
    requests: Arc<Mutex<Vec<Recorded>>>,
    handler: Arc<Handler>,
    client: reqwest::Client,
}

/// The server; dropped = stopped.
pub struct FakeServer {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeServer {
    /// Starts a server whose handler gets each request and its 0-based number.
    pub fn start(handler: impl Fn(&Recorded, usize) -> Answer + Send + Sync + 'static) -> FakeServer {
        FakeServer::start_on(0, handler)
    }

    /// Starts a server on a given port of 127.0.0.1 (0: any free port).
    pub fn start_on(port: u16, handler: impl Fn(&Recorded, usize) -> Answer + Send + Sync + 'static) -> FakeServer {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| panic!("bind 127.0.0.1:{port}: {e}"));
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let shared = Shared { requests: Arc::clone(&requests), handler: Arc::new(handler), client: client() };
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = axum::Router::new().fallback(answer).with_state(shared);
                tokio::select! {
                    r = axum::serve(listener, app) => r.unwrap(),
                    _ = stopped => {}
                }
            });
            // Dropping the runtime ends every connection task, hanging ones too.
        });
        FakeServer { addr, requests, stop: Some(stop), thread: Some(thread) }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// The requests whose path starts with `prefix`.
    pub fn requests_to(&self, prefix: &str) -> Vec<Recorded> {
        self.requests().into_iter().filter(|r| r.path.starts_with(prefix)).collect()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A free port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The client of forwards and [`request`]: no proxy from the environment.
fn client() -> reqwest::Client {
    // No idle connection is kept: a forward that raced the upstream's close of
    // an idle one would fail, and the retry would count as a call of its own.
    reqwest::Client::builder().no_proxy().pool_max_idle_per_host(0).timeout(Duration::from_secs(300)).build().unwrap()
}

/// Records a request, asks the test's handler, and answers.
async fn answer(State(s): State<Shared>, req: Request) -> Response {
    let at = Instant::now();
    let (head, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let recorded = Recorded {
        method: head.method.to_string(),
        path: head.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
        headers: head
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
        body: body.to_vec(),
        at,
        response: None,
    };
    let n = {
        let mut all = s.requests.lock().unwrap();
        all.push(recorded.clone());
        all.len() - 1
    };
    let (status, headers, body) = match (s.handler)(&recorded, n) {
        Answer::Respond { status, headers, body } => (status, headers, body),
        Answer::Hang => {
            tokio::time::sleep(HANG_LIMIT).await;
            return (StatusCode::GATEWAY_TIMEOUT, "the fake server hung for its limit").into_response();
        }
        Answer::Forward(upstream) => match forward(&s.client, upstream, &recorded).await {
            Some((status, body)) => (status, vec![], body),
            None => (502, vec![], "{\"error\":\"the upstream did not answer\"}".into()),
        },
    };
    s.requests.lock().unwrap()[n].response = Some((status, body.clone()));
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
            resp.headers_mut().insert(k, v);
        }
    }
    resp
}

/// Sends the request to `upstream` and reads the whole answer: status and body.
async fn forward(client: &reqwest::Client, upstream: SocketAddr, req: &Recorded) -> Option<(u16, String)> {
    let method = reqwest::Method::from_bytes(req.method.as_bytes()).ok()?;
    let mut out = client.request(method, format!("http://{upstream}{}", req.path));
    for (k, v) in &req.headers {
        if !matches!(k.as_str(), "host" | "connection" | "content-length" | "transfer-encoding") {
            out = out.header(k, v);
        }
    }
    let resp = out.body(Bytes::from(req.body.clone())).send().await.ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.text().await.ok()?))
}

/// A plain request to a server (for readiness probes and admin endpoints): status and body.
pub fn request(addr: SocketAddr, method: &str, path: &str) -> Option<(u16, String)> {
    let req = Recorded {
        method: method.into(),
        path: path.into(),
        headers: vec![],
        body: vec![],
        at: Instant::now(),
        response: None,
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
    rt.block_on(forward(&client(), addr, &req))
}

#[test]
fn the_fake_server_records_answers_forwards_and_stops_while_hanging() {
    let upstream = FakeServer::start(|r, n| Answer::Respond {
        status: 201,
        headers: vec![("x-upstream".into(), n.to_string())],
        body: format!("{{\"got\":{}}}", String::from_utf8_lossy(&r.body)),
    });
    let up: SocketAddr = upstream.url().trim_start_matches("http://").parse().unwrap();
    let proxy = FakeServer::start(move |_, _| Answer::Forward(up));
    let addr: SocketAddr = proxy.url().trim_start_matches("http://").parse().unwrap();
    assert_eq!(request(addr, "GET", "/v1/models?x=1"), Some((201, "{\"got\":}".to_string())));
    let seen = proxy.requests_to("/v1/");
    assert_eq!((seen.len(), seen[0].method.as_str(), seen[0].path.as_str()), (1, "GET", "/v1/models?x=1"));
    assert_eq!(seen[0].response, Some((201, "{\"got\":}".to_string())), "the upstream's answer is recorded");
    assert_eq!(upstream.requests().len(), 1);

    // A hanging answer does not keep the server from stopping.
    let hanging = FakeServer::start(|_, _| Answer::Hang);
    let addr: SocketAddr = hanging.url().trim_start_matches("http://").parse().unwrap();
    let probe = std::thread::spawn(move || request(addr, "POST", "/hang"));
    let t = Instant::now();
    while hanging.requests().is_empty() {
        assert!(t.elapsed() < Duration::from_secs(10), "the request never arrived");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(hanging);
    assert!(t.elapsed() < Duration::from_secs(10), "stopping waited for the hang");
    assert_eq!(probe.join().unwrap(), None, "a stopped server closes the hanging connection");
}
