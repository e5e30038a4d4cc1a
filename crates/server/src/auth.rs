//! The API's token: `LEMMING_API_TOKEN`, else one generated into
//! `org/state/api-token` (mode 0600). A request carries it as
//! `Authorization: Bearer TOKEN` or in the dashboard's cookie, which a
//! one-time login link (`/login?code=…`, printed at start) sets.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use lemming_engine::error::{PathError, WithPath};
use lemming_engine::org::Layout;
use serde::Deserialize;

use crate::error::ApiError;
use crate::extract::QueryParams;
use crate::Routes;

/// The dashboard's cookie is named this, then the port it is served on:
/// browsers keep cookies per host, not per port, and two orgs served on one
/// machine must not sign each other out.
pub const COOKIE: &str = "lemming_token";

/// The name of the dashboard's cookie on `port`.
pub fn cookie_name(port: u16) -> String {
    format!("{COOKIE}_{port}")
}

/// The shortest token accepted from the environment.
pub const MIN_TOKEN: usize = 16;

/// Why a token from the environment cannot be used, if it cannot: it goes
/// into a header and a cookie, so it must be long and plain.
pub fn check_token(token: &str) -> Result<(), String> {
    if token.len() < MIN_TOKEN {
        return Err(format!(
            "LEMMING_API_TOKEN is {} characters; use at least {MIN_TOKEN} (for example `openssl rand -hex 32`)",
            token.len()
        ));
    }
    if let Some(c) = token.chars().find(|c| !c.is_ascii_graphic() || matches!(c, ';' | ',' | '"' | '\\')) {
        return Err(format!(
            "LEMMING_API_TOKEN holds {c:?}, which a cookie cannot carry; use letters, digits and -._~+/= (for example `openssl rand -hex 32`)"
        ));
    }
    Ok(())
}

/// The token file's name in `org/state/`.
pub const TOKEN_FILE: &str = "api-token";

/// How long a login code is good for.
pub const LOGIN_TTL: Duration = Duration::from_secs(10 * 60);

/// The most login codes kept at once (the oldest are forgotten first).
const MAX_LOGINS: usize = 64;

/// `n` random bytes from the kernel, as lower-case hex.
fn random_hex(n: usize) -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The token in `org/state/api-token`, created (mode 0600, 32 random bytes
/// as hex, written atomically) when missing or empty. An existing token is
/// reused, and its mode narrowed to 0600 if it was wider.
pub fn load_or_create_token(layout: &Layout) -> Result<String, PathError> {
    let path = layout.state_dir().join(TOKEN_FILE);
    if let Some(bytes) = lemming_engine::fsx::read_small(&path, 4096)? {
        let token = String::from_utf8_lossy(&bytes).trim().to_string();
        if !token.is_empty() {
            let mode = std::fs::metadata(&path).with_path(&path)?.permissions().mode();
            if mode & 0o077 != 0 {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).with_path(&path)?;
            }
            return Ok(token);
        }
        // An empty file (a crash before its write, or a person's) is made again.
        let _ = std::fs::remove_file(&path);
    }
    let token = random_hex(32).with_path("/dev/urandom")?;
    let tmp_dir = layout.state_tmp();
    std::fs::create_dir_all(&tmp_dir).with_path(&tmp_dir)?;
    let tmp = lemming_engine::fsx::tmp_path(&tmp_dir, &path);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(format!("{token}\n").as_bytes()).and_then(|()| f.sync_all()))
        .with_path(&tmp);
    // A link, not a rename: it fails when the file exists, so that two
    // servers starting at once agree on the one token that got there first.
    let linked = written.and_then(|()| match std::fs::hard_link(&tmp, &path) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        r => r.map(|()| true).with_path(&path),
    });
    let _ = std::fs::remove_file(&tmp);
    if !linked? {
        let bytes = lemming_engine::fsx::read_small(&path, 4096)?.unwrap_or_default();
        let theirs = String::from_utf8_lossy(&bytes).trim().to_string();
        if !theirs.is_empty() {
            return Ok(theirs);
        }
        return Err(PathError {
            path,
            source: std::io::Error::other(
                "the token file is empty: remove it, and a new token is made at the next start",
            ),
        });
    }
    lemming_engine::fsx::sync_dir(&layout.state_dir())?;
    Ok(token)
}

/// Whether `a` and `b` are equal, in a time that depends only on their
/// lengths (not on where they first differ).
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// One-time login codes: each is good for one login within [`LOGIN_TTL`].
#[derive(Debug, Default)]
pub struct Logins {
    codes: Mutex<HashMap<String, Instant>>,
}

impl Logins {
    /// A new code, good for one login within [`LOGIN_TTL`].
    pub fn issue(&self) -> String {
        // The kernel's randomness is always there on Linux; should it fail, a
        // code no one can guess still comes from the time and the process.
        let code = random_hex(16).unwrap_or_else(|_| {
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            format!("{:x}{:x}", t.as_nanos(), std::process::id())
        });
        let now = Instant::now();
        let mut codes = self.codes.lock().unwrap_or_else(|e| e.into_inner());
        codes.retain(|_, at| now.duration_since(*at) < LOGIN_TTL);
        while codes.len() >= MAX_LOGINS {
            let oldest = codes.iter().min_by_key(|(_, at)| **at).map(|(c, _)| c.clone());
            if let Some(c) = oldest {
                codes.remove(&c);
            }
        }
        codes.insert(code.clone(), now);
        code
    }

    /// Uses up `code`: true when it was issued, unused, and not expired.
    pub fn redeem(&self, code: &str) -> bool {
        let mut codes = self.codes.lock().unwrap_or_else(|e| e.into_inner());
        let found = codes.keys().find(|c| same(c.as_bytes(), code.as_bytes())).cloned();
        match found.and_then(|c| codes.remove(&c)) {
            Some(at) => at.elapsed() < LOGIN_TTL,
            None => false,
        }
    }
}

/// The bearer token of a request.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
}

/// The value of the cookie `name` of a request.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// How a request proved it has the token, if it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// `Authorization: Bearer`: a program, which a web page cannot make send it.
    Bearer,
    /// The dashboard's cookie, which the browser adds by itself.
    Cookie,
}

/// What checking a request's token needs: the token, the port served (it
/// names the cookie) and the login codes. Handlers get it from the server's
/// state.
#[derive(Debug, Clone)]
pub struct Gate {
    /// The token every `/api` request must carry.
    pub token: std::sync::Arc<str>,
    /// The port served.
    pub port: u16,
    /// The one-time login codes.
    pub logins: std::sync::Arc<Logins>,
}

/// How the request carries the token (`None`: it does not), compared in
/// constant time. An empty token opens nothing.
pub fn proof(s: &Gate, headers: &HeaderMap) -> Option<Proof> {
    let ok = |t: &str| !s.token.is_empty() && same(t.as_bytes(), s.token.as_bytes());
    if bearer(headers).is_some_and(ok) {
        Some(Proof::Bearer)
    } else if cookie(headers, &cookie_name(s.port)).is_some_and(ok) {
        Some(Proof::Cookie)
    } else {
        None
    }
}

/// Whether `headers` carry `token` as a bearer token, compared in constant
/// time. An empty token opens nothing.
pub fn carries(headers: &HeaderMap, token: &str) -> bool {
    !token.is_empty() && bearer(headers).is_some_and(|t| same(t.as_bytes(), token.as_bytes()))
}

/// Whether a request comes from a page of this server (its `Sec-Fetch-Site`
/// is `same-origin`, or its `Origin` is this `Host`): the browser adds the
/// cookie to requests that other pages make too, even pages on another port
/// of the same machine.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site") {
        return site == "same-origin";
    }
    match (text("origin"), text("host")) {
        (Some(origin), Some(host)) => {
            origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")) == Some(host)
        }
        _ => false,
    }
}

/// Lets a request through when it carries the token (header or cookie); else
/// 401. A write proved by the cookie alone must come from the dashboard's own
/// page (else 403): another site's page cannot make the browser write as you.
pub async fn require(State(s): State<Gate>, req: Request, next: Next) -> Result<Response, ApiError> {
    match proof(&s, req.headers()) {
        None => Err(ApiError::unauthorized()),
        Some(Proof::Cookie) if !req.method().is_safe() && !same_origin(req.headers()) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_site",
            "this write carries the dashboard's cookie but does not come from the dashboard's page; a program sends `Authorization: Bearer TOKEN` instead",
        )),
        Some(_) => Ok(next.run(req).await),
    }
}

/// The query of `GET /login`.
#[derive(Debug, Deserialize)]
struct LoginQuery {
    code: Option<String>,
}

/// `GET /login?code=…`: a good code sets the cookie and goes to the
/// dashboard; any other gets 401 with what to do.
async fn login(State(s): State<Gate>, headers: HeaderMap, QueryParams(q): QueryParams<LoginQuery>) -> Response {
    if q.code.as_deref().is_some_and(|c| s.logins.redeem(c)) {
        let cookie = format!("{}={}; HttpOnly; SameSite=Strict; Path=/", cookie_name(s.port), s.token);
        let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
        return r;
    }
    let message =
        "this login link is not valid: each link works once, for 10 minutes. Use the link the server printed \
                   at start (restart `lemming serve` for a new one), or send the token as `Authorization: Bearer \
                   TOKEN` (LEMMING_API_TOKEN, or the one in org/state/api-token)";
    let wants_html = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/html"));
    if wants_html {
        let page = format!(
            "<!doctype html><meta charset=utf-8><title>lemming: login</title>\
             <body style=\"font-family:sans-serif;max-width:40em;margin:3em auto\"><h1>Not logged in</h1><p>{message}</p>"
        );
        (StatusCode::UNAUTHORIZED, Html(page)).into_response()
    } else {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response()
    }
}

/// `GET /login?code=…`.
pub fn routes() -> Routes {
    Routes::new().add("GET", "/login", axum::routing::get(login))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_created_once_private_and_reused() {
        let d = tempfile::tempdir().unwrap();
        let layout = Layout::new(d.path());
        let t = load_or_create_token(&layout).unwrap();
        assert_eq!(t.len(), 64);
        assert!(t.bytes().all(|b| b.is_ascii_hexdigit()));
        let path = layout.state_dir().join(TOKEN_FILE);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(load_or_create_token(&layout).unwrap(), t, "reused");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(load_or_create_token(&layout).unwrap(), t);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600, "narrowed");
        let other = tempfile::tempdir().unwrap();
        assert_ne!(load_or_create_token(&Layout::new(other.path())).unwrap(), t, "random");
        assert!(std::fs::read_dir(layout.state_tmp()).unwrap().next().is_none(), "no temporary file left");
    }

    /// Two servers starting at once on one org (`serve` and `run --http`)
    /// end up with the same token, the one in the file.
    #[test]
    fn servers_starting_at_once_agree_on_one_token() {
        for _ in 0..20 {
            let d = tempfile::tempdir().unwrap();
            let layout = Layout::new(d.path());
            let tokens: Vec<String> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..4).map(|_| s.spawn(|| load_or_create_token(&layout).unwrap())).collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let file = std::fs::read_to_string(layout.state_dir().join(TOKEN_FILE)).unwrap();
            assert!(tokens.iter().all(|t| *t == file.trim()), "{tokens:?} / {file}");
        }
        let d = tempfile::tempdir().unwrap();
        let layout = Layout::new(d.path());
        std::fs::create_dir_all(layout.state_dir()).unwrap();
        std::fs::write(layout.state_dir().join(TOKEN_FILE), "").unwrap();
        assert_eq!(load_or_create_token(&layout).unwrap().len(), 64, "an empty file is made again");
    }

    #[test]
    fn a_login_code_works_once() {
        let l = Logins::default();
        let (a, b) = (l.issue(), l.issue());
        assert_ne!(a, b);
        assert!(l.redeem(&a));
        assert!(!l.redeem(&a), "used");
        assert!(!l.redeem("nope") && !l.redeem(""));
        assert!(l.redeem(&b));
        // An expired code is refused.
        let c = l.issue();
        l.codes.lock().unwrap().insert(c.clone(), Instant::now() - LOGIN_TTL);
        assert!(!l.redeem(&c));
        // Memory stays bounded.
        for _ in 0..(MAX_LOGINS * 2) {
            l.issue();
        }
        assert!(l.codes.lock().unwrap().len() <= MAX_LOGINS);
    }

    #[test]
    fn the_token_is_found_in_the_header_or_the_cookie_of_this_port() {
        let mut h = HeaderMap::new();
        assert_eq!((bearer(&h), cookie(&h, "lemming_token_7878")), (None, None));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; lemming_token_7879=other; lemming_token_7878=abc; b=2"),
        );
        assert_eq!(cookie(&h, &cookie_name(7878)), Some("abc"));
        assert_eq!(cookie(&h, &cookie_name(7879)), Some("other"), "another org's cookie is its own");
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer xyz"));
        assert_eq!(bearer(&h), Some("xyz"));
        assert!(same(b"abc", b"abc") && !same(b"abc", b"abd") && !same(b"abc", b"abcd"));
    }

    /// A write with the cookie alone must come from this server's own page.
    #[test]
    fn a_cookie_write_must_come_from_the_same_origin() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            h
        };
        assert!(same_origin(&h(&[("sec-fetch-site", "same-origin")])));
        assert!(!same_origin(&h(&[("sec-fetch-site", "same-site")])), "another port of this machine");
        assert!(!same_origin(&h(&[("sec-fetch-site", "cross-site")])));
        assert!(same_origin(&h(&[("origin", "http://127.0.0.1:7878"), ("host", "127.0.0.1:7878")])));
        assert!(!same_origin(&h(&[("origin", "http://127.0.0.1:3000"), ("host", "127.0.0.1:7878")])));
        assert!(!same_origin(&h(&[("host", "127.0.0.1:7878")])), "no sign of where it comes from");
    }

    #[test]
    fn a_token_from_the_environment_is_long_and_plain() {
        assert!(check_token("0123456789abcdef").is_ok());
        assert!(check_token("short").unwrap_err().contains("at least 16"));
        for bad in ["0123456789abcdef;x", "0123456789 abcdef", "0123456789abcdéf", "0123456789abcdef\""] {
            assert!(check_token(bad).unwrap_err().contains("cookie"), "{bad}");
        }
    }
}
