//! `GET /api/events`: the org's committed events as Server-Sent Events. A
//! [`Hub`] reads `org/state/events.jsonl` as it grows (woken by the daemon's
//! bus when it runs in this process), keeps the recent events for clients
//! that reconnect with `Last-Event-ID`, and fans them out.
//!
//! Every frame is rendered once, when the hub reads its line, and shared by
//! every client:
//!
//! ```text
//! id: 42
//! event: delivered
//! data: {"seq":42,"turn":7,"at":"…","event":"delivered","id":"…","from":"manager","to":"human"}
//! ```
//!
//! The `data:` is the line of `events.jsonl`; the `event:` is its `event`
//! field, except `turn` (sent as `turn_committed`) and `tool` (sent as
//! `tool_call`). `turn_started` and `reply_delta` (a piece of a reply as a
//! model streams it) come from the daemon's bus only, when it runs in this
//! process, and have no `id:` (they are not in the file): a client that
//! reconnects gets the whole replies from the journal, not the pieces it missed.
//!
//! A client that sends `Last-Event-ID: N` (or `?last_event_id=N`) gets every
//! event with `seq` > N: from the hub's memory, or from the file when they are
//! older than that, then the live ones, with no gap and no duplicate. A client
//! that falls behind the live events catches up the same way.

use std::collections::VecDeque;
use std::io::{BufRead, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use lemming_engine::events::{Bus, Event, EventKind};
use lemming_engine::org::Layout;
use tokio::sync::{broadcast, mpsc, watch};

use crate::error::ApiError;
use crate::Routes;

/// How many recent events the hub keeps in memory for clients that reconnect.
pub const RING: usize = 10_000;

/// A comment is sent after this long without an event, so that proxies and
/// clients keep the stream open.
pub const KEEPALIVE: Duration = Duration::from_secs(15);

/// How often the file is looked at (a `stat`, and a read when it grew) when
/// the daemon runs in this process: its turns wake the hub at once, so this
/// only picks up people's events and turns run by another process.
pub const POLL_IN_DAEMON: Duration = Duration::from_millis(250);

/// How often the file is looked at when the server runs alone.
pub const POLL_ALONE: Duration = Duration::from_millis(50);

/// The most read from the file at one poll; a longer burst is read over several.
const READ_CHUNK: u64 = 4 << 20;

/// How many live frames a client may fall behind before it catches up from
/// the hub's memory or the file.
const FANOUT: usize = 16 * 1024;

/// One event, rendered as its SSE frame.
#[derive(Debug)]
pub struct Frame {
    /// Its `seq`; 0 for a live `turn_started`, which has no `id:`.
    pub seq: u64,
    /// The `id:`, `event:` and `data:` lines and the blank line that ends the frame.
    pub bytes: Bytes,
}

impl Frame {
    /// The frame of `event`, whose line in `events.jsonl` is `line`.
    pub fn of(event: &Event, line: &str) -> Frame {
        Frame::render((event.seq != 0).then_some(event.seq), wire_name(&event.kind), line)
    }

    fn render(seq: Option<u64>, name: &str, data: &str) -> Frame {
        // A line of the file is one JSON value; a CR in it can only be
        // whitespace between tokens, and would end the `data:` line early.
        let data: std::borrow::Cow<str> =
            if data.contains(['\r', '\n']) { data.replace(['\r', '\n'], "").into() } else { data.into() };
        let text = match seq {
            Some(seq) => format!("id: {seq}\nevent: {name}\ndata: {data}\n\n"),
            None => format!("event: {name}\ndata: {data}\n\n"),
        };
        Frame { seq: seq.unwrap_or(0), bytes: Bytes::from(text) }
    }
}

/// The `event:` name of an event on the wire.
pub fn wire_name(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::Turn(_) => "turn_committed",
        EventKind::Tool { .. } => "tool_call",
        EventKind::TurnStarted {} => "turn_started",
        EventKind::ReplyDelta { .. } => "reply_delta",
        EventKind::Delivered { .. } => "delivered",
        EventKind::Dead { .. } => "dead",
        EventKind::Skipped { .. } => "skipped",
        EventKind::Recovered { .. } => "recovered",
        EventKind::Ran { .. } => "ran",
        EventKind::Failed { .. } => "failed",
        EventKind::Charged { .. } => "charged",
        EventKind::ToppedUp { .. } => "topped_up",
        EventKind::Paused {} => "paused",
        EventKind::Resumed {} => "resumed",
        EventKind::ConfigError { .. } => "config_error",
    }
}

/// Where the hub is in the file (only the pump reads it).
#[derive(Debug, Default)]
struct Reader {
    /// The byte after the last complete line read.
    offset: u64,
    /// A line longer than a whole read is being skipped up to its end.
    skipping: bool,
    /// The last error reading the file, logged once until it changes.
    last_error: Option<String>,
}

/// What clients share: the recent frames and the last `seq` read.
#[derive(Debug)]
struct Shared {
    last_seq: u64,
    ring: VecDeque<Arc<Frame>>,
}

/// The events as they are committed, for every client.
#[derive(Debug)]
pub struct Hub {
    path: PathBuf,
    bus: Option<Bus>,
    capacity: usize,
    reader: Mutex<Reader>,
    shared: Mutex<Shared>,
    tx: broadcast::Sender<Arc<Frame>>,
    closed: watch::Sender<bool>,
}

/// A client's place: the live frames from now on, and what it missed before.
#[derive(Debug)]
pub struct Subscription {
    /// The live frames.
    pub rx: broadcast::Receiver<Arc<Frame>>,
    /// The client has every event up to this `seq`.
    pub after: u64,
    /// The events it missed that are older than the hub's memory: read the
    /// file for `after` < `seq` < this.
    pub from_file: Option<u64>,
    /// The events it missed from the hub's memory, oldest first.
    pub backlog: Vec<Arc<Frame>>,
}

impl Hub {
    /// A hub for the org at `layout`, starting at the end of its events file;
    /// `bus` is the daemon's, when it runs in this process.
    pub fn new(layout: &Layout, bus: Option<Bus>) -> Hub {
        Hub::with_capacity(layout, bus, RING)
    }

    /// A hub that keeps `capacity` recent events in memory.
    pub fn with_capacity(layout: &Layout, bus: Option<Bus>, capacity: usize) -> Hub {
        let path = layout.events();
        let (offset, last_seq) = end_of(&path).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the events file; live events start from its next line");
            (0, 0)
        });
        Hub {
            path,
            bus,
            capacity: capacity.max(1),
            reader: Mutex::new(Reader { offset, ..Reader::default() }),
            shared: Mutex::new(Shared { last_seq, ring: VecDeque::new() }),
            tx: broadcast::channel(FANOUT).0,
            closed: watch::channel(false).0,
        }
    }

    /// The last `seq` read from the file (or there when the hub started).
    pub fn last_seq(&self) -> u64 {
        self.shared.lock().expect("hub lock").last_seq
    }

    /// The daemon's bus, when it runs in this process.
    pub fn bus(&self) -> Option<&Bus> {
        self.bus.as_ref()
    }

    /// Reads the complete lines added to the file since the last call, keeps
    /// and sends their events, and returns them. Only a `stat` when the file
    /// did not grow. A file that shrank was replaced: it is read again from
    /// its start, skipping the numbers already sent.
    pub fn poll(&self) -> Vec<Event> {
        let mut r = self.reader.lock().expect("hub reader lock");
        let lines = match self.read_new(&mut r) {
            Ok(l) => {
                r.last_error = None;
                l
            }
            Err(e) => {
                let text = e.to_string();
                if r.last_error.as_deref() != Some(text.as_str()) {
                    tracing::warn!(error = %text, "cannot read the events file; retrying");
                    r.last_error = Some(text);
                }
                return Vec::new();
            }
        };
        if lines.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut s = self.shared.lock().expect("hub lock");
        for line in lines.split('\n') {
            let Some(mut e) = Event::parse(line) else {
                if !line.trim().is_empty() {
                    tracing::debug!(line = %line.chars().take(200).collect::<String>(), "not an event line; skipped");
                }
                continue;
            };
            if e.seq == 0 {
                // A line written before events were numbered counts one.
                e.seq = s.last_seq.saturating_add(1);
            }
            if e.seq <= s.last_seq {
                continue;
            }
            s.last_seq = e.seq;
            let frame = Arc::new(Frame::of(&e, line));
            if s.ring.len() == self.capacity {
                s.ring.pop_front();
            }
            s.ring.push_back(frame.clone());
            // No receiver is no error: nobody is listening.
            let _ = self.tx.send(frame);
            out.push(e);
        }
        out
    }

    /// The text of the complete lines after the reader's offset (empty when
    /// there are none), moving the offset past them.
    fn read_new(&self, r: &mut Reader) -> Result<String, lemming_engine::error::PathError> {
        use lemming_engine::error::WithPath;
        let len = match std::fs::symlink_metadata(&self.path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e).with_path(&self.path),
        };
        if len < r.offset {
            // Replaced or cut (a restore): read it again from its start.
            *r = Reader::default();
        }
        if len == r.offset {
            return Ok(String::new());
        }
        let Some(mut f) = lemming_fs::open_regular(std::fs::OpenOptions::new().read(true), &self.path)? else {
            return Ok(String::new());
        };
        f.seek(SeekFrom::Start(r.offset)).with_path(&self.path)?;
        let mut buf = Vec::new();
        f.take(READ_CHUNK).read_to_end(&mut buf).with_path(&self.path)?;
        let mut start = 0;
        if r.skipping {
            match buf.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    r.skipping = false;
                    start = i + 1;
                }
                None => {
                    r.offset += buf.len() as u64;
                    return Ok(String::new());
                }
            }
        }
        let Some(end) = buf.iter().rposition(|b| *b == b'\n') else {
            if buf.len() as u64 == READ_CHUNK {
                tracing::warn!(
                    offset = r.offset,
                    "a line of the events file is longer than {READ_CHUNK} bytes; skipped"
                );
                r.offset += buf.len() as u64;
                r.skipping = true;
            }
            return Ok(String::new());
        };
        if end < start {
            r.offset += (end + 1) as u64;
            return Ok(String::new());
        }
        r.offset += (end + 1) as u64;
        Ok(String::from_utf8_lossy(&buf[start..end]).into_owned())
    }

    /// Sends a `turn_started` or `reply_delta` event from the bus to the clients now (it has no
    /// `id:` and is not kept: it is not in the file).
    pub fn publish_live(&self, event: &Event) {
        let frame = Frame::render(None, wire_name(&event.kind), &event.to_json().to_string());
        let _ = self.tx.send(Arc::new(frame));
    }

    /// A client's subscription: the live frames from now on and, with
    /// `after` (its `Last-Event-ID`), the events after it that it missed. An
    /// `after` beyond the last event is taken as the last event.
    pub fn subscribe(&self, after: Option<u64>) -> Subscription {
        let s = self.shared.lock().expect("hub lock");
        // Under the lock: no frame is sent between the snapshot and the subscription.
        let rx = self.tx.subscribe();
        let after = after.unwrap_or(s.last_seq).min(s.last_seq);
        let first = s.ring.front().map(|f| f.seq);
        let covered = match first {
            Some(first) => after.saturating_add(1) >= first,
            None => after >= s.last_seq,
        };
        let from_file = (!covered).then(|| first.unwrap_or(s.last_seq.saturating_add(1)));
        let backlog = s.ring.iter().filter(|f| f.seq > after).cloned().collect();
        Subscription { rx, after, from_file, backlog }
    }

    /// Ends every stream (the server is stopping).
    pub fn close(&self) {
        let _ = self.closed.send(true);
    }

    fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }
}

/// Where the hub starts in the file: just after its last complete line, and
/// the last `seq` up to there.
fn end_of(path: &Path) -> Result<(u64, u64), lemming_engine::error::PathError> {
    use lemming_engine::error::WithPath;
    let Some(mut f) = lemming_fs::open_regular(std::fs::OpenOptions::new().read(true), path)? else {
        return Ok((0, 0));
    };
    let len = f.metadata().with_path(path)?.len();
    let mut window: u64 = 64 * 1024;
    loop {
        let start = len.saturating_sub(window);
        let mut buf = Vec::new();
        f.seek(SeekFrom::Start(start)).with_path(path)?;
        (&mut f).take(len - start).read_to_end(&mut buf).with_path(path)?;
        let whole = start == 0;
        let Some(end) = buf.iter().rposition(|b| *b == b'\n') else {
            if whole {
                return Ok((0, 0));
            }
            window = window.saturating_mul(4);
            continue;
        };
        let text = String::from_utf8_lossy(&buf[..end]);
        // Without its first line when the window may begin inside it.
        let text = if whole { &text[..] } else { text.split_once('\n').map_or("", |(_, rest)| rest) };
        let offset = start + end as u64 + 1;
        if let Some(seq) = text.rsplit('\n').filter_map(Event::parse).map(|e| e.seq).find(|s| *s != 0) {
            return Ok((offset, seq));
        }
        if whole {
            // Only lines written before events were numbered: they count one each.
            return Ok((offset, text.split('\n').filter_map(Event::parse).count() as u64));
        }
        window = window.saturating_mul(4);
    }
}

/// Sends the frames of the file's events with `after` < `seq` < `until`, in
/// order, until the receiver is gone.
fn read_range(path: &Path, after: u64, until: u64, out: mpsc::Sender<Arc<Frame>>) {
    let f = match lemming_fs::open_regular(std::fs::OpenOptions::new().read(true), path) {
        Ok(Some(f)) => f,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the events file for a client's missed events");
            return;
        }
    };
    let mut last = 0u64;
    for line in std::io::BufReader::new(f).split(b'\n') {
        let Ok(line) = line else { return };
        let line = String::from_utf8_lossy(&line);
        let Some(mut e) = Event::parse(&line) else { continue };
        if e.seq == 0 {
            e.seq = last.saturating_add(1);
        }
        last = last.max(e.seq);
        if e.seq >= until {
            return;
        }
        if e.seq > after && out.blocking_send(Arc::new(Frame::of(&e, &line))).is_err() {
            return;
        }
    }
}

/// Reads new events into the hub until aborted: at once when the daemon's bus
/// says a turn committed, and every [`POLL_IN_DAEMON`] (or [`POLL_ALONE`]
/// without a daemon) otherwise. Each new event is recorded in the metrics;
/// the gauges read from the org's files are refreshed after each committed
/// turn and every second.
pub async fn pump(hub: Arc<Hub>, metrics: Arc<crate::metrics::Metrics>, root: std::path::PathBuf) {
    // The hub has the daemon's bus when the daemon runs in this process.
    if hub.bus().is_some() {
        crate::metrics::observe_providers(&metrics);
    }
    let mut bus = hub.bus().map(Bus::subscribe);
    let mut tick = tokio::time::interval(if bus.is_some() { POLL_IN_DAEMON } else { POLL_ALONE });
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut gauges = tokio::time::interval(crate::metrics::GAUGE_EVERY);
    gauges.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = gauges.tick() => {
                refresh(&metrics, &root).await;
                continue;
            }
            r = next_on(&mut bus) => match r {
                Ok(e) if matches!(e.kind, EventKind::TurnStarted {} | EventKind::ReplyDelta { .. }) => {
                    hub.publish_live(&e);
                    continue;
                }
                // Published once its lines are in the file.
                Ok(e) if matches!(e.kind, EventKind::Turn(_)) => {}
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => {
                    bus = None;
                    continue;
                }
            },
        }
        let h = hub.clone();
        let events = tokio::task::spawn_blocking(move || h.poll()).await.unwrap_or_default();
        for e in &events {
            metrics.observe(e);
        }
        if events.iter().any(|e| matches!(e.kind, EventKind::Turn(_))) {
            refresh(&metrics, &root).await;
            gauges.reset();
        }
    }
}

/// Recomputes the metrics read from the org's files.
async fn refresh(metrics: &Arc<crate::metrics::Metrics>, root: &std::path::Path) {
    let (metrics, root) = (metrics.clone(), root.to_path_buf());
    let _ = tokio::task::spawn_blocking(move || metrics.refresh(&root)).await;
}

/// The next event on the bus; never, without one.
async fn next_on(bus: &mut Option<broadcast::Receiver<Event>>) -> Result<Event, broadcast::error::RecvError> {
    match bus {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The `Last-Event-ID` of a request: the header, else `?last_event_id=`.
fn last_event_id(headers: &HeaderMap, query: Option<&str>) -> Result<Option<u64>, ApiError> {
    let from_header = match headers.get("last-event-id") {
        Some(v) => Some(v.to_str().map_err(|_| bad_id("(not text)"))?.trim().to_string()),
        None => None,
    };
    let from_query =
        query.and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("last_event_id=").map(|v| v.trim().to_string())));
    match from_header.or(from_query).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v.parse::<u64>().map(Some).map_err(|_| bad_id(&v)),
    }
}

fn bad_id(v: &str) -> ApiError {
    let shown: String = v.chars().take(40).collect();
    ApiError::bad_request(format!(
        "Last-Event-ID must be the number of an event (the `id:` of a frame), not `{}`; leave it out to get only new events",
        shown.escape_debug()
    ))
}

/// `GET /api/events`.
async fn events(State(hub): State<Arc<Hub>>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    let after = match last_event_id(&headers, query.as_deref()) {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    // Subscribed before the answer starts: nothing committed from here on is missed.
    let sub = hub.subscribe(after);
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(feed(hub, sub, tx));
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        let first = rx.recv().await?;
        Some((Ok::<Bytes, std::convert::Infallible>(coalesce(first, &mut rx)), rx))
    });
    let mut r = Body::from_stream(body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

/// The largest write of frames to one client.
const CHUNK: usize = 64 * 1024;

/// `first` and the frames already waiting after it, up to [`CHUNK`] bytes,
/// as one write: a turn of a large org commits thousands of events at once,
/// and one write each per client would be most of the cost of serving them.
fn coalesce(first: Bytes, rx: &mut mpsc::Receiver<Bytes>) -> Bytes {
    let mut joined: Vec<u8> = Vec::new();
    while joined.len().max(first.len()) < CHUNK {
        match rx.try_recv() {
            Ok(next) => {
                if joined.is_empty() {
                    joined.extend_from_slice(&first);
                }
                joined.extend_from_slice(&next);
            }
            Err(_) => break,
        }
    }
    if joined.is_empty() {
        first
    } else {
        Bytes::from(joined)
    }
}

/// Writes a client's frames to `out` until it goes away or the hub closes:
/// what it missed (from the file, then the hub's memory), then the live
/// frames; when it falls behind those, it catches up the same way.
async fn feed(hub: Arc<Hub>, mut sub: Subscription, out: mpsc::Sender<Bytes>) {
    let mut closed = hub.closed.subscribe();
    // A comment at once, so that the client sees the stream open.
    if out.send(Bytes::from_static(b": lemming events\n\n")).await.is_err() {
        return;
    }
    let mut sent = sub.after;
    loop {
        if let Some(until) = sub.from_file.take() {
            let (ftx, mut frx) = mpsc::channel(256);
            let path = hub.path.clone();
            let after = sent;
            tokio::task::spawn_blocking(move || read_range(&path, after, until, ftx));
            while let Some(f) = frx.recv().await {
                if !send(&out, &f, &mut sent).await {
                    return;
                }
            }
        }
        for f in std::mem::take(&mut sub.backlog) {
            if !send(&out, &f, &mut sent).await {
                return;
            }
        }
        let start = tokio::time::Instant::now() + KEEPALIVE;
        let mut keepalive = tokio::time::interval_at(start, KEEPALIVE);
        loop {
            if hub.is_closed() {
                return;
            }
            tokio::select! {
                r = sub.rx.recv() => match r {
                    Ok(f) => if !send(&out, &f, &mut sent).await {
                        return;
                    },
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = keepalive.tick() => if out.send(Bytes::from_static(b": keepalive\n\n")).await.is_err() {
                    return;
                },
                _ = closed.changed() => return,
                _ = out.closed() => return,
            }
        }
        // Fell behind: the rest from the hub's memory, or the file.
        sub = hub.subscribe(Some(sent));
    }
}

/// Sends a frame unless the client has it already; `false` when it is gone.
async fn send(out: &mpsc::Sender<Bytes>, f: &Frame, sent: &mut u64) -> bool {
    if f.seq != 0 {
        if f.seq <= *sent {
            return true;
        }
        *sent = f.seq;
    }
    out.send(f.bytes.clone()).await.is_ok()
}

/// `GET /api/events`.
pub fn routes() -> Routes {
    Routes::new().add("GET", "/api/events", axum::routing::get(events))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lemming_engine::events::TurnReport;
    use std::io::Write;

    fn t0() -> chrono::DateTime<chrono::Utc> {
        "2026-01-02T03:04:05.006Z".parse().unwrap()
    }

    fn delivered(seq: u64) -> Event {
        let kind = EventKind::Delivered { id: format!("m{seq}"), from: "a".into(), to: "b".into() };
        Event { seq, turn: 1, at: t0(), kind }
    }

    fn line(e: &Event) -> String {
        format!("{}\n", e.to_json())
    }

    /// An org folder with its state folder, and its events file's path.
    fn org() -> (tempfile::TempDir, Layout) {
        let d = tempfile::tempdir().unwrap();
        let layout = Layout::new(d.path());
        std::fs::create_dir_all(layout.state_dir()).unwrap();
        (d, layout)
    }

    fn append(layout: &Layout, text: &str) {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(layout.events()).unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    fn append_events(layout: &Layout, seqs: std::ops::RangeInclusive<u64>) {
        append(layout, &seqs.map(|s| line(&delivered(s))).collect::<String>());
    }

    fn text(b: &Bytes) -> String {
        String::from_utf8(b.to_vec()).unwrap()
    }

    /// The `id:` of a frame, if any.
    fn id_of(frame: &str) -> Option<u64> {
        frame.lines().find_map(|l| l.strip_prefix("id: ")).map(|v| v.parse().unwrap())
    }

    /// Frames already waiting go out in one write, in order, up to the
    /// chunk size; a frame alone goes out as it is.
    #[tokio::test]
    async fn waiting_frames_are_joined_into_one_write() {
        let (tx, mut rx) = mpsc::channel::<Bytes>(8);
        assert_eq!(coalesce(Bytes::from_static(b"a\n\n"), &mut rx), Bytes::from_static(b"a\n\n"));
        for b in [&b"b\n\n"[..], b"c\n\n"] {
            tx.send(Bytes::copy_from_slice(b)).await.unwrap();
        }
        assert_eq!(coalesce(Bytes::from_static(b"a\n\n"), &mut rx), Bytes::from_static(b"a\n\nb\n\nc\n\n"));
        let big = Bytes::from(vec![b'x'; CHUNK]);
        tx.send(Bytes::from_static(b"next")).await.unwrap();
        assert_eq!(coalesce(big.clone(), &mut rx), big, "a full chunk goes alone");
        assert_eq!(rx.try_recv().unwrap(), Bytes::from_static(b"next"), "and the rest waits for the next write");
    }

    #[test]
    fn frames_carry_the_seq_the_wire_name_and_the_line() {
        let e =
            Event { seq: 9, turn: 3, at: t0(), kind: EventKind::Turn(TurnReport { turn: 3, ..Default::default() }) };
        let l = e.to_json().to_string();
        let f = Frame::of(&e, &l);
        assert_eq!(text(&f.bytes), format!("id: 9\nevent: turn_committed\ndata: {l}\n\n"));
        let started = Event { seq: 0, turn: 4, at: t0(), kind: EventKind::TurnStarted {} };
        let f = Frame::of(&started, "{}");
        assert_eq!((f.seq, text(&f.bytes)), (0, "event: turn_started\ndata: {}\n\n".to_string()), "no id:");
        // A CR between tokens would end the data line early.
        let f = Frame::of(&delivered(1), "{\"a\":\r1}");
        assert_eq!(text(&f.bytes), "id: 1\nevent: delivered\ndata: {\"a\":1}\n\n");
        let tool = EventKind::Tool {
            agent: "a".into(),
            call: lemming_engine::events::ToolUse {
                call: "c".into(),
                tool: "t".into(),
                ok: true,
                error: None,
                ms: 1,
                result: "r".into(),
            },
        };
        assert_eq!(wire_name(&tool), "tool_call");
        assert_eq!(wire_name(&EventKind::Paused {}), "paused");
    }

    #[test]
    fn the_hub_starts_at_the_end_of_the_file_and_reads_only_complete_lines() {
        let (_d, layout) = org();
        append_events(&layout, 1..=3);
        // A line being written when the server starts: read once it is whole.
        let fourth = line(&delivered(4));
        append(&layout, &fourth[..10]);
        let hub = Hub::new(&layout, None);
        assert_eq!(hub.last_seq(), 3);
        assert!(hub.poll().is_empty(), "what was there before is not sent again");
        append(&layout, &fourth[10..]);
        let five = line(&delivered(5));
        append(&layout, &five[..five.len() - 1]);
        assert_eq!(hub.poll().iter().map(|e| e.seq).collect::<Vec<_>>(), [4]);
        append(&layout, "\nnot json\n");
        assert_eq!(hub.poll().iter().map(|e| e.seq).collect::<Vec<_>>(), [5], "a line that is no event is skipped");
        assert_eq!(hub.last_seq(), 5);
    }

    #[test]
    fn a_replaced_file_is_read_again_without_sending_a_number_twice() {
        let (_d, layout) = org();
        append_events(&layout, 1..=5);
        let hub = Hub::new(&layout, None);
        std::fs::write(layout.events(), (1..=3).map(|s| line(&delivered(s))).collect::<String>()).unwrap();
        assert!(hub.poll().is_empty());
        append_events(&layout, 6..=6);
        assert_eq!(hub.poll().iter().map(|e| e.seq).collect::<Vec<_>>(), [6]);
    }

    #[test]
    fn lines_written_before_numbers_count_one_each() {
        let (_d, layout) = org();
        let old = |id: &str| {
            format!("{{\"turn\":1,\"at\":\"2026-01-02T03:04:05.006Z\",\"event\":\"delivered\",\"id\":\"{id}\",\"from\":\"a\",\"to\":\"b\"}}\n")
        };
        append(&layout, &old("x").repeat(3));
        let hub = Hub::new(&layout, None);
        assert_eq!(hub.last_seq(), 3);
        append(&layout, &old("y"));
        assert_eq!(hub.poll()[0].seq, 4);
    }

    #[test]
    fn a_subscriber_gets_what_it_missed_from_memory_or_from_the_file() {
        let (_d, layout) = org();
        append_events(&layout, 1..=2);
        let hub = Hub::with_capacity(&layout, None, 3);
        append_events(&layout, 3..=7);
        hub.poll();
        // Memory holds 5, 6 and 7.
        let s = hub.subscribe(Some(5));
        assert_eq!((s.after, s.from_file), (5, None));
        assert_eq!(s.backlog.iter().map(|f| f.seq).collect::<Vec<_>>(), [6, 7]);
        let s = hub.subscribe(Some(4));
        assert_eq!(s.from_file, None, "5 is the next one, and it is in memory");
        let s = hub.subscribe(Some(1));
        assert_eq!((s.after, s.from_file), (1, Some(5)), "2 to 4 come from the file");
        let (tx, mut rx) = mpsc::channel(16);
        read_range(&layout.events(), 1, 5, tx);
        let mut got = Vec::new();
        while let Ok(f) = rx.try_recv() {
            got.push(f.seq);
        }
        assert_eq!(got, [2, 3, 4]);
        let s = hub.subscribe(None);
        assert_eq!((s.after, s.from_file, s.backlog.len()), (7, None, 0), "without an id: only what comes next");
        let s = hub.subscribe(Some(99));
        assert_eq!((s.after, s.backlog.len()), (7, 0), "an id from the future is the last one");
    }

    /// Collects `n` frames (comments left out) of a feed.
    async fn frames(rx: &mut mpsc::Receiver<Bytes>, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        while out.len() < n {
            let b = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("a frame in time").unwrap();
            let t = text(&b);
            if !t.starts_with(':') {
                out.push(t);
            }
        }
        out
    }

    #[tokio::test]
    async fn a_reconnecting_client_gets_every_event_after_its_id_once_in_order() {
        let (_d, layout) = org();
        append_events(&layout, 1..=3);
        let hub = Arc::new(Hub::with_capacity(&layout, None, 4));
        append_events(&layout, 4..=10);
        hub.poll();
        // Memory holds 7 to 10; the client had 2.
        let (tx, mut rx) = mpsc::channel(4);
        tokio::spawn(feed(hub.clone(), hub.subscribe(Some(2)), tx));
        let got = frames(&mut rx, 8).await;
        assert_eq!(got.iter().map(|f| id_of(f).unwrap()).collect::<Vec<_>>(), (3..=10).collect::<Vec<_>>());
        // Then the live ones.
        append_events(&layout, 11..=12);
        hub.poll();
        let got = frames(&mut rx, 2).await;
        assert_eq!(got.iter().map(|f| id_of(f).unwrap()).collect::<Vec<_>>(), [11, 12]);
        assert!(got[0].ends_with(&format!("data: {}\n", line(&delivered(11)))));
    }

    #[tokio::test]
    async fn a_client_that_falls_behind_catches_up_with_no_gap_and_no_duplicate() {
        let (_d, layout) = org();
        let hub = Arc::new(Hub::with_capacity(&layout, None, 100));
        let (tx, mut rx) = mpsc::channel(1);
        tokio::spawn(feed(hub.clone(), hub.subscribe(None), tx));
        let n = (FANOUT * 3) as u64;
        // The client reads nothing while far more than the fan-out holds is sent.
        for chunk in (1..=n).collect::<Vec<_>>().chunks(100) {
            append_events(&layout, chunk[0]..=*chunk.last().unwrap());
            hub.poll();
        }
        let got = frames(&mut rx, n as usize).await;
        assert_eq!(got.iter().map(|f| id_of(f).unwrap()).collect::<Vec<_>>(), (1..=n).collect::<Vec<_>>());
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_stream_gets_a_keepalive_comment_and_ends_when_the_hub_closes() {
        let (_d, layout) = org();
        let hub = Arc::new(Hub::new(&layout, None));
        let (tx, mut rx) = mpsc::channel(4);
        let task = tokio::spawn(feed(hub.clone(), hub.subscribe(None), tx));
        assert_eq!(text(&rx.recv().await.unwrap()), ": lemming events\n\n");
        let start = tokio::time::Instant::now();
        assert_eq!(text(&rx.recv().await.unwrap()), ": keepalive\n\n");
        assert_eq!(start.elapsed(), KEEPALIVE);
        hub.close();
        assert!(rx.recv().await.is_none());
        task.await.unwrap();
    }

    #[test]
    fn a_bad_last_event_id_is_refused_with_what_to_send() {
        let mut h = HeaderMap::new();
        assert_eq!(last_event_id(&h, None).unwrap(), None);
        assert_eq!(last_event_id(&h, Some("x=1&last_event_id=12")).unwrap(), Some(12));
        h.insert("last-event-id", HeaderValue::from_static("7"));
        assert_eq!(last_event_id(&h, Some("last_event_id=12")).unwrap(), Some(7), "the header first");
        h.insert("last-event-id", HeaderValue::from_static("../x"));
        let e = last_event_id(&h, None).unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
        assert!(e.message.contains("must be the number of an event"), "{}", e.message);
        h.insert("last-event-id", HeaderValue::from_static("-1"));
        assert!(last_event_id(&h, None).is_err());
    }
}
