//! A tiny HTTP/1.1 server on 127.0.0.1 with an ephemeral port, for provider
//! tests: it records every request (method, path, headers, body, arrival
//! time) and answers as the test's handler says: a scripted response, a hang,
//! or a forward to a real server (recording the real response). Hand-rolled on
//! std threads so that tests need no extra dependency; it is stopped (and its
//! threads end) when the value is dropped, and no connection outlives
//! [`HANG_LIMIT`].

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The longest a hanging answer waits before the connection is dropped.
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
    /// A response with this status, extra headers and body.
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

/// The server; dropped = stopped.
pub struct FakeServer {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl FakeServer {
    /// Starts a server whose handler gets each request and its 0-based number.
    pub fn start(handler: impl Fn(&Recorded, usize) -> Answer + Send + Sync + 'static) -> FakeServer {
        FakeServer::start_on(0, handler)
    }

    /// Starts a server on a given port of 127.0.0.1 (0: any free port).
    pub fn start_on(port: u16, handler: impl Fn(&Recorded, usize) -> Answer + Send + Sync + 'static) -> FakeServer {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| panic!("bind 127.0.0.1:{port}: {e}"));
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let accept = {
            let (requests, stop) = (Arc::clone(&requests), Arc::clone(&stop));
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (requests, stop, handler) = (Arc::clone(&requests), Arc::clone(&stop), Arc::clone(&handler));
                    std::thread::spawn(move || serve(conn, &requests, &stop, &*handler));
                }
            })
        };
        FakeServer { addr, requests, stop, accept: Some(accept) }
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
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// A free port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Reads one request (head and Content-Length body); `None` at end of stream or on stop.
fn read_request(reader: &mut BufReader<TcpStream>, stop: &AtomicBool) -> Option<Recorded> {
    let mut head = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => return None,
            Ok(_) => {
                if line == "\r\n" || line == "\n" {
                    if head.is_empty() {
                        continue;
                    }
                    break;
                }
                head.push(line.trim_end().to_string());
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                if stop.load(Ordering::SeqCst) {
                    return None;
                }
            }
            Err(_) => return None,
        }
    }
    let at = Instant::now();
    let mut parts = head[0].split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = head[1..]
        .iter()
        .filter_map(|h| h.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match reader.read(&mut body[got..]) {
            Ok(0) => return None,
            Ok(n) => got += n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                if stop.load(Ordering::SeqCst) {
                    return None;
                }
            }
            Err(_) => return None,
        }
    }
    Some(Recorded { method, path, headers, body, at, response: None })
}

fn serve(conn: TcpStream, requests: &Mutex<Vec<Recorded>>, stop: &AtomicBool, handler: &Handler) {
    let _ = conn.set_read_timeout(Some(Duration::from_millis(100)));
    let mut writer = match conn.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(conn);
    while let Some(req) = read_request(&mut reader, stop) {
        let n = {
            let mut all = requests.lock().unwrap();
            all.push(req.clone());
            all.len() - 1
        };
        let (status, headers, body) = match handler(&req, n) {
            Answer::Respond { status, headers, body } => (status, headers, body),
            Answer::Hang => {
                let until = Instant::now() + HANG_LIMIT;
                let mut probe = [0u8; 1];
                while Instant::now() < until && !stop.load(Ordering::SeqCst) {
                    // The client closing its end ends the hang early.
                    if matches!(reader.get_mut().read(&mut probe), Ok(0)) {
                        break;
                    }
                }
                return;
            }
            Answer::Forward(upstream) => match forward(upstream, &req) {
                Some((status, body)) => (status, vec![], body),
                None => (502, vec![], "{\"error\":\"the upstream did not answer\"}".into()),
            },
        };
        requests.lock().unwrap()[n].response = Some((status, body.clone()));
        let mut out = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            reason(status),
            body.len()
        );
        for (k, v) in headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        out.push_str(&body);
        if writer.write_all(out.as_bytes()).and_then(|_| writer.flush()).is_err() {
            return;
        }
    }
}

/// Sends the request to `upstream` with `Connection: close` and reads the whole answer.
fn forward(upstream: SocketAddr, req: &Recorded) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(upstream).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(300))).ok()?;
    let mut head = format!("{} {} HTTP/1.1\r\nHost: {upstream}\r\nConnection: close\r\n", req.method, req.path);
    for (k, v) in &req.headers {
        if !matches!(k.as_str(), "host" | "connection" | "content-length" | "transfer-encoding") {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", req.body.len()));
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(&req.body).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut body = raw[split + 4..].to_vec();
    let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = eol + 2;
        out.extend_from_slice(&data[start..(start + size).min(data.len())]);
        data = &data[(start + size + 2).min(data.len())..];
    }
    out
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
    forward(addr, &req)
}
