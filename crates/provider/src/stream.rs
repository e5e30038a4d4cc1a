//! Streamed replies (`stream = true` on a model key) for the HTTP kinds: a
//! server-sent-events parser, and the loop that reads a response body as it
//! arrives, hands each piece of the reply's text to [`crate::Request::stream`]
//! and assembles the same [`Parsed`] as the whole-body parsers give.
//!
//! Each wire format brings an [`Assembler`] that reads its own events
//! (`openai`: `data: {chunk}` … `data: [DONE]`; `anthropic`: `message_start` …
//! `message_stop`). What is common is here: the byte stream, the total
//! deadline, the size limit, and the rule that a stream which does not reach
//! its end is a failed try, never a partial reply. A failed try after some
//! text was handed out sends [`Chunk::Restart`], so that whoever shows the
//! text forgets it.
//!
//! A cut stream (the body ends or breaks before the end event, or stalls past
//! the deadline) fails with cause `Unavailable`. Lemming's ledger charges
//! only a complete reply, but a paid service bills the tokens it generated
//! before the cut, so a retry could be paid twice. Hence the rule (see
//! [`not_twice`]): a try that fails after some of the reply arrived (text or
//! tool-call arguments) from a server that is not on this machine is not
//! retried; the mail waits unread for the next turn. A try that fails before
//! any of the reply arrived, or whose server is on this machine (a loopback
//! address: it costs nothing), may be retried by the retry loop.

use std::time::{Duration, Instant};

use crate::resilience::{AttemptError, Retry};
use crate::wire::{excerpt, Parsed};
use crate::{Cause, Chunk, Request};

/// The most text (reply text and tool-call arguments, in bytes) a streamed
/// reply may hold; a server that sends more fails the try.
pub const MAX_TEXT: usize = 4 << 20;

/// The longest single line the SSE parser keeps, and the most data one event
/// may hold (its `data:` lines joined): a server that never ends a line or an
/// event fails the try instead of growing memory until the timeout.
pub const MAX_LINE: usize = 4 << 20;

/// The longest `event:` name kept; the names a wire format reads are a few bytes.
pub const MAX_EVENT_NAME: usize = 256;

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// The `event:` field (empty when the server sent none).
    pub event: String,
    /// The `data:` lines, joined by `\n`.
    pub data: String,
}

/// A server-sent-events parser (the WHATWG event-stream format): bytes in,
/// events out. Lines end with LF, CRLF or CR, also when the ending is split
/// across two reads; lines starting with `:` are comments; fields other than
/// `event` and `data` are ignored; an event ends at a blank line.
#[derive(Debug, Default)]
pub struct Sse {
    line: Vec<u8>,
    /// The last byte fed was a CR: an LF that follows belongs to it.
    after_cr: bool,
    event: String,
    data: String,
    has_data: bool,
}

impl Sse {
    /// A parser at the start of a stream.
    pub fn new() -> Sse {
        Sse::default()
    }

    /// Feeds the next bytes; returns the events they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Event>, String> {
        let mut out = Vec::new();
        for &b in bytes {
            let after_cr = std::mem::replace(&mut self.after_cr, false);
            match b {
                b'\n' if after_cr => {}
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    if let Some(ev) = self.line_done(&line)? {
                        out.push(ev);
                    }
                }
                _ => {
                    if self.line.len() >= MAX_LINE {
                        return Err(format!("a line of the event stream is longer than {MAX_LINE} bytes"));
                    }
                    self.line.push(b);
                }
            }
        }
        Ok(out)
    }

    /// The end of the stream: an event whose lines all ended but which had no
    /// blank line after it is still an event; a line cut in the middle is dropped.
    pub fn end(&mut self) -> Option<Event> {
        self.line.clear();
        self.dispatch()
    }

    fn line_done(&mut self, line: &[u8]) -> Result<Option<Event>, String> {
        if line.is_empty() {
            return Ok(self.dispatch());
        }
        if line[0] == b':' {
            return Ok(None);
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => {
                if value.len() > MAX_EVENT_NAME {
                    return Err(format!("an event name of the event stream is longer than {MAX_EVENT_NAME} bytes"));
                }
                self.event = value.to_string();
            }
            "data" => {
                if self.data.len() + 1 + value.len() > MAX_LINE {
                    return Err(format!("an event of the event stream holds more than {MAX_LINE} bytes of data"));
                }
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
        Ok(None)
    }

    fn dispatch(&mut self) -> Option<Event> {
        let event = std::mem::take(&mut self.event);
        let data = std::mem::take(&mut self.data);
        std::mem::replace(&mut self.has_data, false).then_some(Event { event, data })
    }
}

/// What a wire format does with its events.
pub trait Assembler: Send {
    /// Takes one event; returns the text it adds to the reply, if any.
    fn event(&mut self, ev: &Event) -> Result<Option<String>, AttemptError>;
    /// The server said the stream is over (`[DONE]`, `message_stop`): stop reading.
    fn over(&self) -> bool;
    /// Whether what arrived so far is a whole reply, were the body to end now.
    fn whole(&self) -> bool;
    /// How many bytes of text and arguments it holds (bounded by [`MAX_TEXT`]).
    fn size(&self) -> usize;
    /// The reply.
    fn finish(self: Box<Self>, req: &Request) -> Parsed;
}

/// Where a stream is read from, for messages.
pub struct Source<'a> {
    /// The URL (never holds a key).
    pub url: &'a str,
    /// The key, scrubbed from excerpts.
    pub key: Option<&'a str>,
    /// The total time allowed (`timeout_secs`).
    pub timeout: Duration,
    /// When the try started.
    pub started: Instant,
}

/// Reads a successful response as an event stream into a reply; on failure,
/// tells the sink to forget what it was handed. A body that is one JSON
/// object (a server that ignores `stream`) is read whole with `parse` and
/// its text handed out in one piece.
pub async fn read(
    mut resp: reqwest::Response,
    mut asm: Box<dyn Assembler>,
    parse: fn(&str, &Request, Option<&str>) -> Result<Parsed, AttemptError>,
    req: &Request,
    src: &Source<'_>,
) -> Result<Parsed, AttemptError> {
    let mut handed = false;
    // How many bytes of the reply the server generated, at most, before a failure.
    let mut arrived = 0;
    let sink = req.stream.as_ref();
    let mut hand = |text: String| {
        if let Some(s) = sink.filter(|_| !text.is_empty()) {
            handed = true;
            s.send(Chunk::Text(text));
        }
    };
    let result = async {
        let mut sse = Sse::new();
        let mut first = true;
        let mut whole_body: Option<Vec<u8>> = None;
        loop {
            let Some(bytes) = next_chunk(&mut resp, src).await? else { break };
            if first {
                match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
                    None => continue,
                    Some(b'{') => whole_body = Some(Vec::new()),
                    Some(_) => {}
                }
                first = false;
            }
            if let Some(body) = whole_body.as_mut() {
                if body.len() + bytes.len() > MAX_TEXT * 4 {
                    return Err(AttemptError::broken(format!("the response from {} is too large", src.url)));
                }
                body.extend_from_slice(&bytes);
                continue;
            }
            let events = sse.feed(&bytes).map_err(|e| AttemptError::broken(format!("{e} (from {})", src.url)))?;
            for ev in events {
                let got = asm.event(&ev);
                arrived = asm.size();
                if let Some(text) = got? {
                    hand(text);
                }
                if asm.size() > MAX_TEXT {
                    return Err(AttemptError::broken(format!(
                        "the streamed reply from {} is longer than {} MiB; it was stopped",
                        src.url,
                        MAX_TEXT >> 20
                    )));
                }
                if asm.over() {
                    return Ok(asm.finish(req));
                }
            }
        }
        if let Some(body) = whole_body {
            let parsed = parse(&String::from_utf8_lossy(&body), req, src.key)?;
            hand(parsed.text.clone());
            return Ok(parsed);
        }
        if let Some(ev) = sse.end() {
            let got = asm.event(&ev);
            arrived = asm.size();
            if let Some(text) = got? {
                hand(text);
            }
        }
        if asm.whole() {
            return Ok(asm.finish(req));
        }
        Err(AttemptError::transient(format!(
            "the stream from {} ended before the reply did ({} bytes of it had arrived); the try is not used",
            src.url,
            asm.size()
        )))
    }
    .await;
    if result.is_err() && handed {
        if let Some(s) = sink {
            s.send(Chunk::Restart);
        }
    }
    result.map_err(|e| not_twice(e, arrived, src.url))
}

/// A failed try after `arrived` bytes of the reply came from `url`: when the
/// server is not on this machine and some of the reply arrived, the service
/// may bill the tokens it generated, so the try is not retried (cause
/// `Unavailable`: the provider failed, the mail waits unread for the next
/// turn). A failure that no retry was planned for stays as it is.
pub fn not_twice(mut e: AttemptError, arrived: usize, url: &str) -> AttemptError {
    if e.retry == Retry::No || arrived == 0 || crate::wire::is_loopback(url) {
        return e;
    }
    e.retry = Retry::No;
    e.cause = Cause::Unavailable;
    e.message.push_str(&format!(
        "; not retried, as {url} is not on this machine and may bill the {arrived} bytes of the reply it sent"
    ));
    e
}

/// The next piece of the body before the try's deadline.
async fn next_chunk(resp: &mut reqwest::Response, src: &Source<'_>) -> Result<Option<Vec<u8>>, AttemptError> {
    let deadline = tokio::time::Instant::from_std(src.started + src.timeout);
    match tokio::time::timeout_at(deadline, resp.chunk()).await {
        Err(_) => Err(AttemptError::transient(format!(
            "the stream from {} did not end within {:.1} s (timeout_secs)",
            src.url,
            src.timeout.as_secs_f64()
        ))),
        Ok(Err(e)) => Err(AttemptError::transient(format!(
            "the stream from {} broke before the reply ended: {}",
            src.url,
            crate::wire::chain(&e)
        ))),
        Ok(Ok(bytes)) => Ok(bytes.map(|b| b.to_vec())),
    }
}

/// An event's data as JSON, or a clear error.
pub fn json(ev: &Event, key: Option<&str>) -> Result<serde_json::Value, AttemptError> {
    serde_json::from_str(&ev.data).map_err(|e| {
        AttemptError::broken(format!("an event of the stream is not JSON ({e}): {}", excerpt(&ev.data, key)))
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn ev(event: &str, data: &str) -> Event {
        Event { event: event.into(), data: data.into() }
    }

    /// All events of `bytes` fed in pieces of `size` bytes, and the end.
    pub(crate) fn events_in_pieces(bytes: &[u8], size: usize) -> Vec<Event> {
        let mut p = Sse::new();
        let mut out: Vec<Event> = bytes.chunks(size).flat_map(|c| p.feed(c).unwrap()).collect();
        out.extend(p.end());
        out
    }

    /// What `asm` makes of `body` fed in pieces of `size` bytes: the text
    /// pieces handed out, whether it is whole, and the reply.
    pub(crate) fn assemble(
        mut asm: Box<dyn Assembler>,
        r: &Request,
        body: &str,
        size: usize,
    ) -> Result<(Vec<String>, bool, Parsed), AttemptError> {
        let mut pieces = vec![];
        for ev in events_in_pieces(body.as_bytes(), size) {
            pieces.extend(asm.event(&ev)?);
            if asm.over() {
                break;
            }
        }
        let whole = asm.whole();
        Ok((pieces, whole, asm.finish(r)))
    }

    #[test]
    fn events_end_at_blank_lines_with_any_line_ending_split_anywhere() {
        let text =
            "event: message_start\ndata: {\"a\":1}\n\n: a comment\r\ndata:x\r\ndata: y\r\n\r\nid: 7\rdata: z\r\r";
        let want = vec![ev("message_start", "{\"a\":1}"), ev("", "x\ny"), ev("", "z")];
        for size in 1..text.len() {
            assert_eq!(events_in_pieces(text.as_bytes(), size), want, "pieces of {size} bytes");
        }
    }

    #[test]
    fn a_multibyte_character_split_between_reads_is_kept_whole() {
        let text = "data: {\"t\":\"héllo ✓\"}\n\n".as_bytes();
        for size in 1..5 {
            assert_eq!(events_in_pieces(text, size), vec![ev("", "{\"t\":\"héllo ✓\"}")]);
        }
    }

    #[test]
    fn at_the_end_a_finished_line_counts_and_a_cut_line_does_not() {
        assert_eq!(events_in_pieces(b"data: [DONE]\n", 4), vec![ev("", "[DONE]")]);
        assert_eq!(events_in_pieces(b"data: {\"cho", 4), vec![]);
        assert_eq!(events_in_pieces(b"event: ping\n\n: only a comment\n\n", 3), vec![], "no data, no event");
    }

    #[test]
    fn an_endless_line_is_an_error_not_a_growing_buffer() {
        let mut p = Sse::new();
        let chunk = vec![b'a'; 1 << 20];
        let mut failed = None;
        for n in 0..8 {
            if let Err(e) = p.feed(&chunk) {
                failed = Some((n, e));
                break;
            }
        }
        let (n, e) = failed.expect("the line limit holds");
        assert_eq!(n, 4, "{e}");
        assert!(e.contains("longer than"), "{e}");
    }

    #[test]
    fn endless_data_lines_without_a_blank_line_are_an_error_not_a_growing_buffer() {
        let mut p = Sse::new();
        let mut line = b"data: ".to_vec();
        line.extend(vec![b'a'; 1 << 20]);
        line.push(b'\n');
        let mut failed = None;
        for n in 0..8 {
            if let Err(e) = p.feed(&line) {
                failed = Some((n, e));
                break;
            }
        }
        let (n, e) = failed.expect("the event data limit holds");
        assert_eq!(n, 3, "{e}");
        assert!(e.contains("more than 4194304 bytes of data"), "{e}");
        // Just under the limit is still an event.
        let mut p = Sse::new();
        let mut fits = Vec::new();
        for _ in 0..3 {
            fits.extend_from_slice(&line);
        }
        fits.push(b'\n');
        let evs = p.feed(&fits).unwrap();
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].data.len(), 3 * (1 << 20) + 2);
    }

    #[test]
    fn a_long_event_name_is_an_error() {
        let mut p = Sse::new();
        let name = "x".repeat(MAX_EVENT_NAME);
        assert_eq!(p.feed(format!("event: {name}\ndata: 1\n\n").as_bytes()).unwrap(), vec![ev(&name, "1")]);
        let e = p.feed(format!("event: {name}y\n").as_bytes()).unwrap_err();
        assert!(e.contains("event name") && e.contains("longer than 256 bytes"), "{e}");
    }

    /// How the test server answers one connection.
    #[derive(Clone, Copy)]
    enum Serve {
        /// A few chunks of a chunked body, then the connection is dropped mid-body.
        Cut,
        /// The same chunks, then nothing until the client gives up.
        Stall,
        /// A whole stream, the body ending when the connection closes.
        Whole,
        /// One JSON body, as a server that ignores `stream` sends.
        Json,
    }

    const FIRST: &str = "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null}}]}\n\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"{\\\"messages\\\"\"}}]}\n\n";
    const SECOND: &str = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\":[]}\"}}]}\n\n";
    const REST: &str = "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":5}}\n\ndata: [DONE]\n\n";

    /// A server on 127.0.0.1 that answers its connections, in order, as `plan` says.
    async fn server(plan: Vec<Serve>) -> (String, tokio::task::JoinHandle<()>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            for serve in plan {
                let (mut conn, _) = listener.accept().await.unwrap();
                // The request: its head, then as many body bytes as it says.
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let n = conn.read(&mut buf).await.unwrap();
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string())
                            })
                            .and_then(|v| v.parse::<usize>().ok())
                            .unwrap_or(0);
                        if got.len() >= end + 4 + len || n == 0 {
                            break;
                        }
                    }
                }
                let chunk = |s: &str| format!("{:x}\r\n{s}\r\n", s.len());
                match serve {
                    Serve::Cut | Serve::Stall => {
                        let head =
                            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
                        conn.write_all(head.as_bytes()).await.unwrap();
                        conn.write_all(chunk(FIRST).as_bytes()).await.unwrap();
                        conn.flush().await.unwrap();
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        conn.write_all(chunk(SECOND).as_bytes()).await.unwrap();
                        conn.flush().await.unwrap();
                        if let Serve::Stall = serve {
                            tokio::time::sleep(Duration::from_secs(5)).await;
                        }
                        // Dropped here, mid-body.
                    }
                    Serve::Whole => {
                        let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
                        let body = format!("{head}{FIRST}{SECOND}{REST}");
                        conn.write_all(body.as_bytes()).await.unwrap();
                        conn.shutdown().await.unwrap();
                    }
                    Serve::Json => {
                        let body = r#"{"choices":[{"index":0,"message":{"role":"assistant","content":"{\"messages\":[]}"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#;
                        let head = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                            body.len()
                        );
                        conn.write_all(format!("{head}{body}").as_bytes()).await.unwrap();
                        conn.shutdown().await.unwrap();
                    }
                }
            }
        });
        (url, task)
    }

    fn request(sink: crate::StreamSink) -> Request {
        Request {
            agent: "coder".into(),
            turn: 1,
            system: "s".into(),
            prompt: "p".into(),
            mail: vec![],
            may_send_to: vec![],
            model: crate::ModelSpec { model: Some("m".into()), stream: true, ..crate::ModelSpec::new("k", "local") },
            agent_dir: None,
            stream: Some(sink),
            tools: vec![],
        }
    }

    fn spec(url: &str, timeout_secs: f64, max_retries: u32) -> crate::ProviderSpec {
        let mut spec = crate::ProviderSpec::new("local", crate::ProviderKind::OpenAi);
        spec.base_url = Some(url.to_string());
        spec.timeout_secs = timeout_secs;
        spec.max_retries = max_retries;
        spec.backoff_ms = 10;
        spec
    }

    /// A sink that records what it is handed.
    fn recording() -> (crate::StreamSink, std::sync::Arc<std::sync::Mutex<Vec<Chunk>>>) {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = std::sync::Arc::clone(&seen);
        (crate::StreamSink::new(move |c| s.lock().unwrap().push(c)), seen)
    }

    fn texts_then_restart() -> Vec<Chunk> {
        vec![Chunk::Text("{\"messages\"".into()), Chunk::Text(":[]}".into()), Chunk::Restart]
    }

    #[tokio::test]
    async fn a_cut_stream_fails_the_try_as_unavailable_after_a_restart() {
        use crate::resilience::{Attempt, Retry};
        let (url, server) = server(vec![Serve::Cut]).await;
        let spec = spec(&url, 10.0, 0);
        let provider = crate::openai::OpenAi::new(spec.clone(), crate::http::client(&spec).unwrap());
        let (sink, seen) = recording();
        let e = provider.attempt(&request(sink)).await.unwrap_err();
        assert_eq!((e.cause, e.retry), (crate::Cause::Unavailable, Retry::Backoff), "{e:?}");
        assert!(e.message.contains("broke before the reply ended") || e.message.contains("ended before"), "{e:?}");
        assert_eq!(*seen.lock().unwrap(), texts_then_restart());
        server.await.unwrap();
    }

    /// Reads the test server's next answer as a stream, as if it came from `url`.
    async fn read_as_from(server_url: &str, url: &str, sink: crate::StreamSink) -> Result<Parsed, AttemptError> {
        let req = request(sink);
        let resp = reqwest::Client::new().post(format!("{server_url}/chat/completions")).send().await.unwrap();
        let src = Source { url, key: None, timeout: Duration::from_secs(10), started: Instant::now() };
        read(resp, crate::openai::stream_assembler(&req, None), crate::openai::parse_response, &req, &src).await
    }

    #[tokio::test]
    async fn a_stream_cut_after_text_from_a_remote_server_is_not_retried_and_from_this_machine_is() {
        let (url, server) = server(vec![Serve::Cut, Serve::Cut]).await;
        let (sink, seen) = recording();
        let e = read_as_from(&url, "https://api.example.com/v1", sink).await.unwrap_err();
        assert_eq!((e.cause, e.retry), (crate::Cause::Unavailable, Retry::No), "{e:?}");
        assert!(e.message.contains("not retried") && e.message.contains("api.example.com"), "{e:?}");
        assert_eq!(*seen.lock().unwrap(), texts_then_restart(), "the watcher still forgets the text");
        let (sink, _) = recording();
        let e = read_as_from(&url, &url, sink).await.unwrap_err();
        assert_eq!((e.cause, e.retry), (crate::Cause::Unavailable, Retry::Backoff), "{e:?}");
        assert!(!e.message.contains("not retried"), "{e:?}");
        server.await.unwrap();
    }

    #[test]
    fn only_a_retry_after_part_of_a_remote_reply_is_refused() {
        let remote = "https://api.anthropic.com/v1";
        let overloaded = || AttemptError::transient("the server sent an error in the stream: Overloaded");
        let e = not_twice(overloaded(), 0, remote);
        assert_eq!(e, overloaded(), "nothing of the reply arrived: nothing was generated to bill twice");
        for local in ["http://127.0.0.1:8080/v1", "http://localhost:11434/v1", "http://[::1]:1/v1"] {
            assert_eq!(not_twice(overloaded(), 10, local), overloaded(), "{local}");
        }
        let e = not_twice(overloaded(), 10, remote);
        assert_eq!((e.cause, e.retry, e.unhealthy), (crate::Cause::Unavailable, Retry::No, true));
        assert!(e.message.ends_with("may bill the 10 bytes of the reply it sent"), "{e:?}");
        let broken = AttemptError::broken("an event of the stream is not JSON");
        assert_eq!(not_twice(broken.clone(), 10, remote), broken, "a failure not retried stays as it was");
    }

    #[tokio::test]
    async fn a_stalled_stream_fails_at_timeout_secs() {
        use crate::resilience::Attempt;
        let (url, server) = server(vec![Serve::Stall]).await;
        let spec = spec(&url, 1.0, 0);
        let provider = crate::openai::OpenAi::new(spec.clone(), crate::http::client(&spec).unwrap());
        let (sink, seen) = recording();
        let started = Instant::now();
        let e = provider.attempt(&request(sink)).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
        assert!(e.message.contains("did not end within 1.0 s (timeout_secs)"), "{e:?}");
        assert_eq!(e.cause, crate::Cause::Unavailable);
        assert_eq!(*seen.lock().unwrap(), texts_then_restart());
        server.abort();
    }

    #[tokio::test]
    async fn the_retry_after_a_cut_stream_gives_the_whole_reply_with_its_streamed_usage() {
        let (url, server) = server(vec![Serve::Cut, Serve::Whole]).await;
        let spec = spec(&url, 10.0, 1);
        let provider = crate::resilience::Resilient::new(
            "local",
            Box::new(crate::openai::OpenAi::new(spec.clone(), crate::http::client(&spec).unwrap())),
            crate::resilience::Policy { max_retries: 1, backoff: Duration::from_millis(10) },
            std::sync::Arc::new(crate::breaker::Breaker::new("local", 5, Duration::from_secs(60), None)),
        );
        let (sink, seen) = recording();
        let reply = crate::Provider::complete(&provider, &request(sink)).await.unwrap();
        assert_eq!(reply.text, "{\"messages\":[]}");
        assert_eq!(reply.usage, crate::Usage { input_tokens: 12, output_tokens: 5, estimated: false });
        assert_eq!(reply.finish.as_deref(), Some("stop"));
        let mut want = texts_then_restart();
        want.extend([Chunk::Text("{\"messages\"".into()), Chunk::Text(":[]}".into())]);
        assert_eq!(*seen.lock().unwrap(), want);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_server_that_ignores_stream_is_read_whole_and_its_text_handed_out_once() {
        use crate::resilience::Attempt;
        let (url, server) = server(vec![Serve::Json]).await;
        let spec = spec(&url, 10.0, 0);
        let provider = crate::openai::OpenAi::new(spec.clone(), crate::http::client(&spec).unwrap());
        let (sink, seen) = recording();
        let reply = provider.attempt(&request(sink)).await.unwrap();
        assert_eq!(reply.text, "{\"messages\":[]}");
        assert_eq!(reply.usage, crate::Usage { input_tokens: 3, output_tokens: 4, estimated: false });
        assert_eq!(*seen.lock().unwrap(), vec![Chunk::Text("{\"messages\":[]}".into())]);
        server.await.unwrap();
    }
}
