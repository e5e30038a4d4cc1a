//! The API over real HTTP: a server bound on 127.0.0.1:0 serving a temp org,
//! reqwest (or a raw socket, for paths a client would normalize) as the
//! client. Each server is stopped by its test, and each test is bounded in time.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lemming_engine::org::Org;
use lemming_engine::views;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "test-token-0123456789";
const SECRET: &str = "TOP-SECRET-NEXT-TO-THE-ORG";

/// A server on a temp org, stopped when dropped.
struct Server {
    base: String,
    addr: std::net::SocketAddr,
    root: PathBuf,
    login: String,
    http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    dir: tempfile::TempDir,
}

impl Server {
    /// A fresh default org at `DIR/org`, with secrets beside it in `DIR/secret…`
    /// (where a path that climbs out of the org would land), served with at
    /// most `rate_limit` writes per 10 s.
    async fn start(rate_limit: u32) -> Server {
        Server::start_with(|o| {
            o.rate_limit = rate_limit;
            o.rate_window = Duration::from_secs(10);
            o.config_limit = rate_limit;
        })
        .await
    }

    /// The same, with the default limits changed by `tune`.
    async fn start_with(tune: impl FnOnce(&mut lemming_server::Options)) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("org");
        lemming_engine::init::init(&root).unwrap();
        std::fs::write(dir.path().join("secret.txt"), SECRET).unwrap();
        std::fs::create_dir_all(dir.path().join("secret/logs")).unwrap();
        std::fs::write(dir.path().join("secret/resume.toml"), format!("name = \"{SECRET}\"\n")).unwrap();
        std::fs::write(dir.path().join("secret/logs/activity.jsonl"), format!("{SECRET}\n")).unwrap();
        let mut opts = lemming_server::Options::new(root.clone(), "127.0.0.1:0".parse().unwrap());
        opts.token = Some(TOKEN.into());
        tune(&mut opts);
        let bound = lemming_server::bind(opts).await.unwrap();
        let addr = bound.addr;
        let login = bound.login_url();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(bound.serve(async move {
            let _ = stopped.await;
        }));
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        Server { base: format!("http://{addr}"), addr, root, login, http, stop: Some(stop), dir }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request with the token.
    fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(path)).bearer_auth(TOKEN)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self.req(Method::GET, path).send().await.unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self.req(Method::POST, path).json(&body).send().await.unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn put_resume(&self, agent: &str, text: &str) -> reqwest::Response {
        self.req(Method::PUT, &format!("/api/agents/{agent}/resume")).body(text.to_string()).send().await.unwrap()
    }

    /// A request written byte for byte (no client normalizes its path):
    /// the status and the whole answer.
    async fn raw(&self, method: &str, target: &str, body: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let req = format!(
            "{method} {target} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        let text = String::from_utf8_lossy(&out).into_owned();
        let code = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        (code, text)
    }

    fn org(&self) -> Org {
        Org::load_or_last_good(&self.root, None)
    }

    fn resume_path(&self, agent: &str) -> PathBuf {
        self.root.join("agents").join(agent).join("resume.toml")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Runs a test body with a time bound.
async fn bounded<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(Duration::from_secs(120), f).await.expect("the test took too long");
}

fn error_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or_else(|| panic!("not the error shape: {v}"))
}

/// One turn of the default org with the mock: the manager answers the human.
async fn one_turn(root: &Path) {
    let org = Org::load(root).unwrap();
    lemming_engine::send::send(&org, "human", "manager", "hello", Default::default()).unwrap();
    lemming_engine::daemon::step(root, 1, |_, _| {}).await.unwrap();
}

/// Every mutating route, with a body it accepts.
fn writes(s: &Server) -> Vec<(Method, &'static str, Option<Value>, Option<String>)> {
    let resume = std::fs::read_to_string(s.resume_path("manager")).unwrap();
    vec![
        (Method::POST, "/api/send", Some(json!({ "to": "manager", "body": "hi" })), None),
        (Method::POST, "/api/agents/manager/top-up", Some(json!({ "amount": 1.5 })), None),
        (Method::POST, "/api/pause", None, None),
        (Method::POST, "/api/resume", None, None),
        (Method::PUT, "/api/agents/manager/resume", None, Some(resume)),
    ]
}

#[tokio::test]
async fn every_mutating_route_needs_the_token() {
    bounded(async {
        let s = Server::start(1000).await;
        for (method, path, body, text) in writes(&s) {
            let build = |b: reqwest::RequestBuilder| match (&body, &text) {
                (Some(j), _) => b.json(j),
                (_, Some(t)) => b.body(t.clone()),
                _ => b,
            };
            let none = build(s.http.request(method.clone(), s.url(path))).send().await.unwrap();
            assert_eq!(none.status(), StatusCode::UNAUTHORIZED, "{method} {path} without a token");
            let body: Value = none.json().await.unwrap();
            assert_eq!(error_code(&body), "unauthorized");
            assert!(body["error"]["message"].as_str().unwrap().contains("Authorization: Bearer"));
            let wrong = build(s.http.request(method.clone(), s.url(path)).bearer_auth("nope")).send().await.unwrap();
            assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED, "{method} {path} with a wrong token");
            let almost = build(s.http.request(method.clone(), s.url(path)).bearer_auth(&TOKEN[..TOKEN.len() - 1]));
            assert_eq!(almost.send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
            let ok = build(s.req(method.clone(), path)).send().await.unwrap();
            assert!(ok.status().is_success(), "{method} {path} with the token: {}", ok.status());
        }
        // Nothing under /api is open.
        let state = {
            let mut o = lemming_server::Options::new(s.root.clone(), "127.0.0.1:0".parse().unwrap());
            o.token = Some(TOKEN.into());
            lemming_server::AppState::new(o).unwrap()
        };
        for (method, path) in lemming_server::route_list(&state) {
            if !path.starts_with("/api/") {
                continue;
            }
            let path = path.replace("{name}", "manager").replace("{agent}", "manager").replace("{id}", "x1");
            let r = s.http.request(method.parse().unwrap(), s.url(&path)).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
        }
        // /health and /ready are open.
        for open in ["/health", "/ready"] {
            assert_eq!(s.http.get(s.url(open)).send().await.unwrap().status(), StatusCode::OK, "{open}");
        }
    })
    .await;
}

#[tokio::test]
async fn the_cookie_is_a_token_too_and_a_login_code_sets_it_once() {
    bounded(async {
        let s = Server::start(1000).await;
        let with_cookie = |c: &str| s.http.get(s.url("/api/status")).header("Cookie", c.to_string());
        let name = format!("lemming_token_{}", s.addr.port());
        let ok = with_cookie(&format!("theme=dark; {name}={TOKEN}")).send().await.unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
        let bad = with_cookie(&format!("{name}=wrong")).send().await.unwrap();
        assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
        let other_port = with_cookie(&format!("lemming_token_1={TOKEN}")).send().await.unwrap();
        assert_eq!(other_port.status(), StatusCode::UNAUTHORIZED, "the cookie of another port's server");
        // A write with the cookie alone comes from the dashboard's own page, or is refused.
        let write = |origin: &str| {
            s.http
                .post(s.url("/api/pause"))
                .header("Cookie", format!("{name}={TOKEN}"))
                .header("Origin", origin.to_string())
                .header("Content-Type", "text/plain")
                .body("{}")
        };
        let r = write("http://127.0.0.1:1").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "another page of this machine");
        assert_eq!(error_code(&r.json().await.unwrap()), "cross_site");
        assert!(!s.root.join("org/state/paused").exists(), "and nothing was done");
        assert_eq!(write(&s.base).send().await.unwrap().status(), StatusCode::OK, "the dashboard's own page");
        assert!(s.root.join("org/state/paused").exists());

        assert!(s.login.starts_with(&format!("http://{}/login?code=", s.addr)), "{}", s.login);
        let first = s.http.get(&s.login).send().await.unwrap();
        assert_eq!(first.status(), StatusCode::SEE_OTHER);
        assert_eq!(first.headers()["location"], "/");
        let cookie = first.headers()["set-cookie"].to_str().unwrap().to_string();
        for part in [format!("{name}={TOKEN}"), "HttpOnly".into(), "SameSite=Strict".into(), "Path=/".into()] {
            assert!(cookie.contains(&part), "{cookie} lacks {part}");
        }
        let pair = cookie.split(';').next().unwrap();
        assert_eq!(with_cookie(pair).send().await.unwrap().status(), StatusCode::OK, "the cookie set works");

        let again = s.http.get(&s.login).send().await.unwrap();
        assert_eq!(again.status(), StatusCode::UNAUTHORIZED, "a code works once");
        assert!(again.headers().get("set-cookie").is_none());
        let body: Value = again.json().await.unwrap();
        assert!(body["error"]["message"].as_str().unwrap().contains("once"), "{body}");
        let page = s.http.get(s.url("/login?code=made-up")).header("Accept", "text/html").send().await.unwrap();
        assert_eq!(page.status(), StatusCode::UNAUTHORIZED);
        assert!(page.text().await.unwrap().contains("Bearer"));
        assert_eq!(s.http.get(s.url("/login")).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    })
    .await;
}

#[tokio::test]
async fn a_non_loopback_address_without_a_token_in_the_environment_is_refused() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        lemming_engine::init::init(dir.path()).unwrap();
        let mut opts = lemming_server::Options::new(dir.path().to_path_buf(), "0.0.0.0:0".parse().unwrap());
        opts.token = None;
        let Err(e) = lemming_server::bind(opts).await else { panic!("a server without a token listened on 0.0.0.0") };
        assert!(matches!(e, lemming_server::ServeError::NoToken(_)), "{e}");
        assert!(e.to_string().contains("LEMMING_API_TOKEN"), "{e}");
        // A token from the environment that a cookie cannot carry, or a short one, is refused.
        for bad in ["short", "0123456789abcdef;x"] {
            let mut opts = lemming_server::Options::new(dir.path().to_path_buf(), "0.0.0.0:0".parse().unwrap());
            opts.token = Some(bad.into());
            let Err(e) = lemming_server::bind(opts).await else { panic!("the token {bad:?} was taken") };
            assert!(matches!(e, lemming_server::ServeError::BadToken(_)), "{e}");
        }
        // Without a token in the environment, loopback works with the token file (0600).
        let mut opts = lemming_server::Options::new(dir.path().to_path_buf(), "127.0.0.1:0".parse().unwrap());
        opts.token = None;
        let bound = lemming_server::bind(opts).await.unwrap();
        let file = dir.path().join("org/state/api-token");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        let token = std::fs::read_to_string(&file).unwrap().trim().to_string();
        let addr = bound.addr;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(bound.serve(async move {
            let _ = stopped.await;
        }));
        let http = reqwest::Client::new();
        let r = http.get(format!("http://{addr}/api/status")).bearer_auth(&token).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        stop.send(()).unwrap();
        task.await.unwrap().unwrap();
    })
    .await;
}

#[tokio::test]
async fn names_that_climb_out_of_the_org_never_reach_a_file() {
    bounded(async {
        let s = Server::start(1000).await;
        let before = std::fs::read(s.dir.path().join("secret/resume.toml")).unwrap();
        let gets = [
            "/api/agents/..",
            "/api/agents/%2e%2e",
            "/api/agents/../../secret.txt",
            "/api/agents/..%2f..%2fsecret",
            "/api/agents/..%2f..%2fsecret/resume",
            "/api/agents/%2e%2e%2f%2e%2e%2fsecret/resume",
            "/api/logs/..%2f..%2fetc",
            "/api/logs/..%2f..%2fsecret",
            "/api/logs/..%2F..%2Fsecret?n=5",
            "/api/agents/man%00ager",
            "/api/agents/%00",
            "/api/logs/manager%00",
            "/api/agents/%ff",
            "/api/messages/..%2f..%2fsecret",
            "/api/messages/a%00b",
            "/api/threads/..%2fsecret",
            "/api/ledger?agent=..%2f..%2fsecret",
            "/api/messages?agent=..%2fsecret",
            "/api/agents/manager/resume/..%2f..%2f..%2fsecret.txt",
        ];
        for target in gets {
            let (code, answer) = s.raw("GET", target, "").await;
            assert!(code == 400 || code == 404, "GET {target}: {code}\n{answer}");
            assert!(!answer.contains(SECRET), "GET {target} showed the secret:\n{answer}");
            assert!(answer.contains("\"error\""), "GET {target} is not in the error shape:\n{answer}");
        }
        // A write through a climbing name writes nothing anywhere.
        for target in ["/api/agents/..%2f..%2fsecret/resume", "/api/agents/%2e%2e/resume"] {
            let (code, answer) = s.raw("PUT", target, "name = \"x\"\n").await;
            assert!(code == 400 || code == 404, "PUT {target}: {code}\n{answer}");
        }
        let (code, _) = s.raw("POST", "/api/agents/..%2f..%2fsecret/top-up", "{\"amount\":1}").await;
        assert!(code == 400 || code == 404);
        assert_eq!(std::fs::read(s.dir.path().join("secret/resume.toml")).unwrap(), before);
        // An unknown name is 404 with the known ones (all of them, in a small org).
        let (code, body) = s.get("/api/agents/..%2f..%2fsecret").await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        assert!(body["error"]["details"]["closest"].as_array().unwrap().contains(&json!("manager")), "{body}");
    })
    .await;
}

#[tokio::test]
async fn unknown_agents_get_404_with_the_known_names() {
    bounded(async {
        let s = Server::start(1000).await;
        let known = json!(["coder_01", "hr", "human", "janitor", "manager", "planner"]);
        for path in [
            "/api/agents/cfo",
            "/api/agents/cfo/resume",
            "/api/logs/cfo",
            "/api/ledger?agent=cfo",
            "/api/messages?agent=cfo",
        ] {
            let (code, body) = s.get(path).await;
            assert_eq!(code, StatusCode::NOT_FOUND, "{path}: {body}");
            assert_eq!(error_code(&body), "not_found");
            assert_eq!(body["error"]["details"]["closest"], known, "{path}");
            assert_eq!(body["error"]["details"]["agents"], 6, "{path}");
            let m = body["error"]["message"].as_str().unwrap();
            assert!(m.contains("cfo") && m.contains("known: coder_01, hr, human, janitor, manager, planner"), "{m}");
        }
        for (path, body) in
            [("/api/send", json!({ "to": "cfo", "body": "hi" })), ("/api/agents/cfo/top-up", json!({ "amount": 1 }))]
        {
            let (code, answer) = s.post(path, body).await;
            assert_eq!(code, StatusCode::NOT_FOUND, "{path}: {answer}");
            assert_eq!(answer["error"]["details"]["closest"], known);
        }
        let r = s.put_resume("cfo", "name = \"cfo\"\n").await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert!(!s.root.join("agents/cfo").exists(), "a PUT creates no agent");
        // A typo puts the name meant first.
        let (code, body) = s.get("/api/agents/mangaer").await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        assert_eq!(body["error"]["details"]["closest"][0], "manager", "{body}");
        // A larger org names only the close ones, and none when none is close.
        for i in 0..10 {
            std::fs::create_dir(s.root.join(format!("agents/worker_{i:02}"))).unwrap();
        }
        let (code, body) = s.get("/api/agents/worker_1").await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        assert_eq!(body["error"]["details"]["agents"], 16, "{body}");
        assert_eq!(body["error"]["details"]["closest"].as_array().unwrap().len(), 10, "{body}");
        let (_, body) = s.get("/api/agents/cfo").await;
        assert_eq!(body["error"]["details"], json!({ "closest": [], "agents": 16 }), "{body}");
        let m = body["error"]["message"].as_str().unwrap();
        assert_eq!(m, "unknown agent `cfo` (16 agents; `lemming agents` lists them)");
        // Unknown routes and methods answer in the same shape.
        let (code, body) = s.get("/api/nothing").await;
        assert_eq!((code, error_code(&body)), (StatusCode::NOT_FOUND, "not_found"));
        let r = s.req(Method::DELETE, "/api/status").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(error_code(&r.json().await.unwrap()), "method_not_allowed");
    })
    .await;
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    bounded(async {
        let s = Server::start(1000).await;
        let ten_mb = "x".repeat(10 << 20);
        // With a Content-Length, refused before it is read.
        let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        let head = format!(
            "POST /api/send HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            s.addr,
            ten_mb.len()
        );
        c.write_all(head.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        c.read_to_end(&mut out).await.unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 413"), "{text}");
        assert!(text.contains("\"too_large\""), "{text}");
        // Streamed with no length: refused once the limit is passed, in the same shape.
        let before = std::fs::read(s.resume_path("manager")).unwrap();
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..10).map(|_| Ok(vec![b'#'; 1 << 20])).collect();
        let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
        let r = s.req(Method::PUT, "/api/agents/manager/resume").body(body).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(error_code(&r.json().await.unwrap()), "too_large");
        assert_eq!(std::fs::read(s.resume_path("manager")).unwrap(), before);
    })
    .await;
}

/// With the default limits, a person saving a resume is never limited, a
/// script rewriting it in a loop is from the sixth save in a minute; other
/// writes are not counted against it.
#[tokio::test]
async fn the_sixth_resume_save_in_a_minute_gets_429_with_the_default_limits() {
    bounded(async {
        let s = Server::start_with(|_| {}).await;
        let text = std::fs::read_to_string(s.resume_path("manager")).unwrap();
        for i in 0..5 {
            assert_eq!(s.put_resume("manager", &text).await.status(), StatusCode::OK, "save {}", i + 1);
        }
        let r = s.put_resume("manager", &text).await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        let wait: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&wait), "{wait}");
        assert_eq!(s.post("/api/pause", json!(null)).await.0, StatusCode::OK, "other writes have their own limit");
    })
    .await;
}

#[tokio::test]
async fn the_sixth_config_write_in_the_window_gets_429_with_retry_after() {
    bounded(async {
        let s = Server::start(5).await;
        let text = std::fs::read_to_string(s.resume_path("manager")).unwrap();
        for i in 0..5 {
            let r = s.put_resume("manager", &text).await;
            assert_eq!(r.status(), StatusCode::OK, "write {}", i + 1);
        }
        let r = s.put_resume("manager", &text).await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        let wait: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=10).contains(&wait), "{wait}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(error_code(&body), "rate_limited");
        // Every mutating route shares the window; reads are not limited.
        let (code, _) = s.post("/api/pause", json!(null)).await;
        assert_eq!(code, StatusCode::TOO_MANY_REQUESTS);
        for _ in 0..10 {
            assert_eq!(s.get("/api/status").await.0, StatusCode::OK);
            let r = s.req(Method::GET, "/api/agents/manager/resume").send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK, "reading the resume shares its path with the PUT, not its limit");
        }
        // Requests without the token are refused before they count.
        let r = s.http.put(s.url("/api/agents/manager/resume")).body(text.clone()).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    })
    .await;
}

#[tokio::test]
async fn a_broken_resume_gets_422_with_line_and_column_and_the_file_is_unchanged() {
    bounded(async {
        let s = Server::start(1000).await;
        let path = s.resume_path("manager");
        let before = std::fs::read(&path).unwrap();
        let text = String::from_utf8(before.clone()).unwrap();
        let broken = text.replace("every = 1", "every = = 1");
        let line = broken.lines().position(|l| l.starts_with("every = = 1")).unwrap() + 1;
        let r = s.put_resume("manager", &broken).await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body: Value = r.json().await.unwrap();
        assert_eq!(error_code(&body), "invalid");
        let p = &body["error"]["details"][0];
        assert_eq!(p["file"], "agents/manager/resume.toml", "{body}");
        assert_eq!(p["line"], line, "{body}");
        assert_eq!(p["column"], 9, "{body}");
        assert!(p["message"].is_string() && p.get("help").is_some(), "{body}");
        assert_eq!(std::fs::read(&path).unwrap(), before, "byte for byte unchanged");

        // Every problem of the file at once, as validate reports them.
        let wrong = text.replace("every = 1", "every = 0").replace("wake = \"mail\"", "wake = \"mail\"\ncolour = 1");
        let body: Value = s.put_resume("manager", &wrong).await.json().await.unwrap();
        let messages = |body: &Value| -> Vec<String> {
            body["error"]["details"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["message"].as_str().unwrap().to_string())
                .collect()
        };
        let found = messages(&body);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found.iter().any(|m| m.contains("colour")) && found.iter().any(|m| m.contains("every")), "{found:?}");
        // Names are checked against the org: models, tools, agents.
        let wrong =
            text.replace("model = \"default\"", "model = \"nope\"").replace("\"recall\"]", "\"recall\", \"fly\"]");
        let found = messages(&s.put_resume("manager", &wrong).await.json().await.unwrap());
        assert!(found.iter().any(|m| m.contains("unknown model key `nope`")), "{found:?}");
        assert!(found.iter().any(|m| m.contains("unknown tool `fly`")), "{found:?}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
        let audit = std::fs::read_to_string(s.root.join("org/state/audit.jsonl")).unwrap_or_default();
        assert!(!audit.contains("edit_resume"), "a refused edit is not a change");
    })
    .await;
}

#[tokio::test]
async fn a_valid_resume_is_written_and_audited() {
    bounded(async {
        let s = Server::start(1000).await;
        let path = s.resume_path("manager");
        let text = std::fs::read_to_string(&path).unwrap().replace("title = \"Manager\"", "title = \"Chief\"");
        let r = s.put_resume("manager", &text).await;
        assert_eq!(r.status(), StatusCode::OK);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["written"], true);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        let audit = std::fs::read_to_string(s.root.join("org/state/audit.jsonl")).unwrap();
        let last: Value = serde_json::from_str(audit.lines().last().unwrap()).unwrap();
        assert_eq!((last["action"].as_str(), last["what"]["agent"].as_str()), (Some("edit_resume"), Some("manager")));
        assert_eq!(last["outcome"], "ok");
        // GET serves the file as it is now.
        let r = s.req(Method::GET, "/api/agents/manager/resume").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers()["content-type"].to_str().unwrap().contains("toml"));
        assert_eq!(r.text().await.unwrap(), text);
        assert_eq!(s.get("/api/agents/manager").await.1["title"], "Chief");
    })
    .await;
}

#[tokio::test]
async fn send_is_durable_before_the_answer_and_refusals_say_why() {
    bounded(async {
        let s = Server::start(1000).await;
        let (code, body) = s
            .post("/api/send", json!({ "to": "manager", "body": "hello", "subject": "Hi", "priority": "urgent" }))
            .await;
        assert_eq!(code, StatusCode::OK, "{body}");
        let id = body["id"].as_str().unwrap();
        let file = s.root.join("agents/human/outbox/new").join(format!("{id}.json"));
        let m: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(
            (m["from"].as_str(), m["to"].as_str(), m["body"].as_str()),
            (Some("human"), Some("manager"), Some("hello"))
        );
        assert_eq!((m["subject"].as_str(), m["priority"].as_str()), (Some("Hi"), Some("urgent")));
        assert_eq!(m.get("ack_required"), None, "written only when asked for");

        // `ack` asks for read receipts; `*` is everyone human may write to; an unknown group is 422.
        let (code, body) = s.post("/api/send", json!({ "to": "*", "body": "all", "ack": true })).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        let file = s.root.join("agents/human/outbox/new").join(format!("{}.json", body["id"].as_str().unwrap()));
        let m: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!((m["to"].as_str(), m["ack_required"].as_bool()), (Some("*"), Some(true)));
        let (code, body) = s.post("/api/send", json!({ "to": "@nope", "body": "hi" })).await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["error"]["details"]["field"], "to");
        assert!(body["error"]["message"].as_str().unwrap().contains("unknown group `@nope`"), "{body}");

        let (code, body) = s.post("/api/send", json!({ "to": "planner", "body": "hi" })).await;
        assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(body["error"]["details"]["reason"], "chart_send_to");
        assert!(body["error"]["message"].as_str().unwrap().contains("send_to"), "{body}");

        for (bad, says) in [
            ("{not json", "not the JSON"),
            ("{\"body\":\"no recipient\"}", "missing field `to`"),
            ("{\"to\":\"manager\",\"body\":\"x\",\"priority\":\"asap\"}", "asap"),
            ("{\"to\":\"manager\",\"body\":\"x\",\"colour\":1}", "colour"),
        ] {
            let r = s
                .req(Method::POST, "/api/send")
                .header("Content-Type", "application/json")
                .body(bad)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
            let body: Value = r.json().await.unwrap();
            assert_eq!(error_code(&body), "bad_request");
            assert!(body["error"]["message"].as_str().unwrap().contains(says), "{bad}: {body}");
        }
        let (code, body) = s.post("/api/send", json!({ "to": "manager", "body": "x", "reply_to": "../x" })).await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let outbox: Vec<_> = std::fs::read_dir(s.root.join("agents/human/outbox/new")).unwrap().collect();
        assert_eq!(outbox.len(), 2, "refused sends write nothing (two were accepted)");
    })
    .await;
}

#[tokio::test]
async fn top_up_pause_and_resume_are_the_cli_operations() {
    bounded(async {
        let s = Server::start(1000).await;
        let (code, body) = s.post("/api/agents/planner/top-up", json!({ "amount": 2.5 })).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        assert_eq!(body["left"], 102.5);
        let ledger = std::fs::read_to_string(s.root.join("org/state/ledger.jsonl")).unwrap();
        assert!(ledger.contains("\"top_up\"") && ledger.contains("\"planner\""));
        for bad in [json!({ "amount": 0 }), json!({ "amount": -1 }), json!({ "amount": 1e13 })] {
            let (code, body) = s.post("/api/agents/planner/top-up", bad.clone()).await;
            assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
            assert!(body["error"]["message"].as_str().unwrap().contains("amount"), "{body}");
        }
        let (code, _) = s.post("/api/agents/planner/top-up", json!({ "amount": "lots" })).await;
        assert_eq!(code, StatusCode::BAD_REQUEST);

        let (code, body) = s.post("/api/pause", json!(null)).await;
        assert_eq!((code, body["paused"].as_bool()), (StatusCode::OK, Some(true)));
        assert!(s.root.join("org/state/paused").exists());
        assert_eq!(s.get("/api/status").await.1["daemon"]["paused"], true);
        let (code, body) = s.post("/api/resume", json!(null)).await;
        assert_eq!((code, body["paused"].as_bool()), (StatusCode::OK, Some(false)));
        assert!(!s.root.join("org/state/paused").exists());
        let audit = std::fs::read_to_string(s.root.join("org/state/audit.jsonl")).unwrap();
        for action in ["\"top_up\"", "\"pause\"", "\"resume\""] {
            assert!(audit.contains(action), "{action} not audited");
        }
    })
    .await;
}

#[tokio::test]
async fn the_read_routes_serve_the_engines_views() {
    bounded(async {
        let s = Server::start(1000).await;
        one_turn(&s.root).await;
        let org = s.org();
        let view = |v: &dyn erased::Ser| v.json();
        let (code, status) = s.get("/api/status").await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(status, view(&views::status(&org).unwrap()), "the JSON of `lemming status --json`");
        assert_eq!(s.get("/api/agents").await.1, view(&views::agents(&org).unwrap()));
        assert_eq!(s.get("/api/agents/manager").await.1, view(&views::inspect(&org, "manager").unwrap()));
        assert_eq!(s.get("/api/chart").await.1, view(&views::chart(&org).unwrap()));
        assert_eq!(s.get("/api/ledger?agent=manager").await.1, view(&views::ledger(&org, Some("manager")).unwrap()));
        assert_eq!(s.get("/api/ledger").await.1, view(&views::ledger(&org, None).unwrap()));
        assert_eq!(s.get("/api/logs/manager?n=1").await.1, view(&views::logs(&org, "manager", 1).unwrap()));
        assert_eq!(s.get("/api/dead").await.1, view(&views::dead(&org).unwrap()));
        let all = views::messages(&org, &Default::default()).unwrap();
        assert_eq!(all.messages.len(), 2, "the human's message and the manager's answer");
        assert_eq!(s.get("/api/messages").await.1, view(&all));
        let answer = &all.messages[0].message;
        let q = format!("/api/messages?agent=human&thread={}&limit=1", answer.thread);
        let page = views::messages(
            &org,
            &views::MessageQuery {
                agent: Some("human".into()),
                thread: Some(answer.thread.clone()),
                limit: Some(1),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(s.get(&q).await.1, view(&page));
        assert!(page.next_before.is_some());
        assert_eq!(
            s.get(&format!("/api/messages/{}", answer.id)).await.1,
            view(&views::message(&org, &answer.id).unwrap())
        );
        assert_eq!(
            s.get(&format!("/api/threads/{}", answer.id)).await.1,
            view(&views::thread(&org, &answer.id).unwrap())
        );
        let chart = s.get("/api/chart").await.1;
        assert!(chart["edges"].as_array().unwrap().contains(&json!({ "from": "human", "to": "manager" })));

        for (path, code) in [
            ("/api/messages?limit=0", 400),
            ("/api/messages?limit=501", 400),
            ("/api/messages?limit=ten", 400),
            ("/api/messages?colour=1", 400),
            ("/api/messages?before=nope", 404),
            ("/api/messages/nope", 404),
            ("/api/threads/nope", 404),
            ("/api/logs/manager?n=0", 400),
        ] {
            let (got, body) = s.get(path).await;
            assert_eq!(got.as_u16(), code, "{path}: {body}");
            assert!(body["error"]["message"].is_string(), "{path}: {body}");
        }
        let spec = s.get("/api/openapi.json").await.1;
        assert!(spec["paths"]["/api/status"]["get"].is_object());
    })
    .await;
}

#[tokio::test]
async fn an_agent_whose_resume_is_broken_is_held_but_can_be_read_and_fixed() {
    bounded(async {
        let s = Server::start(1000).await;
        let good = std::fs::read_to_string(s.resume_path("janitor")).unwrap();
        std::fs::write(s.resume_path("janitor"), "name = ").unwrap();
        let (code, body) = s.get("/api/agents/janitor").await;
        assert_eq!(code, StatusCode::CONFLICT, "{body}");
        assert_eq!(error_code(&body), "held");
        assert!(body["error"]["details"]["problems"][0]["line"].is_number(), "{body}");
        let r = s.req(Method::GET, "/api/agents/janitor/resume").send().await.unwrap();
        assert_eq!(r.text().await.unwrap(), "name = ");
        assert_eq!(s.get("/api/logs/janitor").await.0, StatusCode::OK);
        assert_eq!(s.put_resume("janitor", &good).await.status(), StatusCode::OK);
        assert_eq!(s.get("/api/agents/janitor").await.0, StatusCode::OK);
    })
    .await;
}

/// Serializing any view to a JSON value, behind one object-safe trait.
mod erased {
    pub trait Ser {
        fn json(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize> Ser for T {
        fn json(&self) -> serde_json::Value {
            serde_json::to_value(self).unwrap()
        }
    }
}
