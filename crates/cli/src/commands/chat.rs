//! `lemming chat [AGENT]`: a line-oriented conversation. Each line read from
//! stdin is sent as the human; the replies in its thread are shown as they
//! come. With no daemon running, chat runs the turns itself.
//!
//! A reply whose model streams (`stream = true`) is shown as it is written:
//! the pieces come from the bus of the turns chat runs, or from the live
//! events of a daemon that serves the API (its address is in `daemon.json`).
//! Until text comes, a spinner says what chat waits for. See docs/chat.md.

use std::io::{BufRead, IsTerminal, Write};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::ProgressBar;
use lemming_engine::chat::{Conversation, Outcome, Progress, WaitOptions};
use lemming_engine::daemon;
use lemming_engine::events::{Bus, Event, EventKind};
use lemming_engine::message::Message;
use lemming_engine::name::HUMAN;
use lemming_engine::org::Layout;
use lemming_engine::org::Org;
use lemming_engine::send;
use lemming_engine::streamed;
use lemming_engine::term;
use lemming_provider::stream::Sse;

use crate::commands::send::send_error;
use crate::ctx::{block_on_stopping_servers, CliError, Ctx};
use crate::render::{message, MessageLayout};

#[derive(Debug, clap::Args)]
#[command(after_help = "Works with or without a daemon: when `lemming run` is running, chat waits \
    for its turns (up to --timeout); when none is, chat runs turns itself until a reply comes or \
    the agents have nothing left to do. End with Ctrl-D (end of input).")]
pub struct Args {
    /// The agent to talk to
    #[arg(default_value = "manager")]
    pub agent: String,
    /// Seconds to wait for a reply while a daemon runs the turns
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    pub timeout: f64,
    /// The most turns to run for one line when no daemon runs
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = crate::ctx::at_least_one)]
    pub max_turns: u64,
}

pub fn run(ctx: &Ctx, args: Args) -> Result<(), CliError> {
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        return Err(CliError { message: format!("--timeout must be more than 0, not {}", args.timeout), code: 2 });
    }
    let root = ctx.root()?;
    let org = Org::load_or_last_good(&root, None);
    send::check(&org, HUMAN, &args.agent).map_err(send_error)?;
    let opts = WaitOptions {
        timeout: lemming_provider::config::secs(args.timeout),
        max_turns: args.max_turns,
        sources: ctx.sources(),
        ..WaitOptions::default()
    };
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!("Talking to {} as {HUMAN}; one message per line, Ctrl-D to end.", args.agent);
    }
    let mut conversation = Conversation::new(HUMAN);
    let mut stdin = std::io::stdin().lock();
    let mut line = String::new();
    block_on_stopping_servers(async {
        loop {
            if interactive {
                eprint!("> ");
                let _ = std::io::stderr().flush();
            }
            line.clear();
            if stdin.read_line(&mut line)? == 0 {
                if interactive {
                    eprintln!();
                }
                return Ok(());
            }
            let body = line.trim_end_matches(['\n', '\r']);
            if body.trim().is_empty() {
                continue;
            }
            // Reloaded for every line: the chart may have been edited meanwhile.
            let org = Org::load_or_last_good(&root, None);
            // Watching starts before the line is sent, so that no piece of the reply is missed.
            // Why replies cannot be shown as they are written matters only when some model streams.
            let streams = org.models.models.values().any(|m| m.stream);
            let live = Live::start(&root, &args.agent, &opts.sources.bus, streams).await;
            let sent = match conversation.send(&org, &args.agent, body) {
                Ok(m) => m,
                Err(e) => {
                    live.stop().await;
                    eprintln!("error: {}", term::text(&send_error(e).message));
                    continue;
                }
            };
            let screen = live.screen.clone();
            let waited = conversation
                .wait(&root, &sent, &opts, |p| {
                    lock(&screen).status(match p {
                        Progress::Daemon(pid) => format!("the daemon (pid {pid}) runs the turns"),
                        Progress::Stepped(turn) => format!("ran turn {turn}"),
                        Progress::Locked => "another process runs a turn".into(),
                    });
                })
                .await;
            let mut shown = live.stop().await;
            let waited = waited?;
            for m in &waited.replies {
                print!("{}", shown.rest_of(m));
            }
            shown.close();
            let _ = std::io::stdout().flush();
            conversation.mark_read(&root, &waited.replies)?;
            match waited.outcome {
                Outcome::Answered => {}
                Outcome::Ended => println!("no reply (the conversation ended without an answer to you)"),
                Outcome::TimedOut => println!(
                    "no reply within {}s; it may still come: it is shown after your next line, or by `lemming inbox`",
                    args.timeout
                ),
            }
        }
    })?
}

/// Locks the screen (a panic elsewhere leaves it usable).
fn lock(screen: &Mutex<Screen>) -> std::sync::MutexGuard<'_, Screen> {
    screen.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where the pieces of a streaming reply come from while chat waits: the bus
/// of the turns chat runs itself, or the live events of the daemon's API.
struct Live {
    screen: Arc<Mutex<Screen>>,
    task: Option<(tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
}

impl Live {
    /// Starts watching for `agent`'s reply and shows a spinner (on a
    /// terminal) until its text comes.
    async fn start(root: &Path, agent: &str, bus: &Bus, streams: bool) -> Live {
        let layout = Layout::new(root);
        let (source, why_not) = match daemon::daemon_file(&layout) {
            None => (Some(Source::Bus(bus.subscribe())), None),
            Some(_) if !streams => (None, None),
            Some(d) => match d.api {
                None => (None, Some("the daemon serves no API: start it with `lemming run --http ADDR`".to_string())),
                Some(api) => match connect(root, &api).await {
                    Ok(r) => (Some(Source::Api(Box::new(r))), None),
                    Err(e) => (None, Some(e)),
                },
            },
        };
        let screen = Arc::new(Mutex::new(Screen::new(agent, why_not)));
        let Some(source) = source else { return Live { screen, task: None } };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let shared = screen.clone();
        let task = tokio::spawn(async move {
            match source {
                Source::Bus(rx) => from_bus(rx, stop_rx, &shared).await,
                Source::Api(r) => {
                    tokio::select! {
                        _ = from_api(*r, &shared) => {}
                        _ = stop_rx => {}
                    }
                }
            }
        });
        Live { screen, task: Some((stop_tx, task)) }
    }

    /// Stops watching (after the pieces already received are shown) and
    /// clears the spinner; returns what was shown.
    async fn stop(self) -> Screen {
        if let Some((tx, task)) = self.task {
            let _ = tx.send(());
            let _ = task.await;
        }
        let mut screen = std::mem::replace(&mut *lock(&self.screen), Screen::new("", None));
        screen.quiet();
        screen
    }
}

enum Source {
    Bus(tokio::sync::broadcast::Receiver<Event>),
    Api(Box<reqwest::Response>),
}

/// Shows the pieces published on the bus until `stop`, then those still queued.
async fn from_bus(
    mut rx: tokio::sync::broadcast::Receiver<Event>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
    screen: &Mutex<Screen>,
) {
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};
    loop {
        tokio::select! {
            biased;
            e = rx.recv() => match e {
                Ok(e) => feed(screen, &e),
                Err(RecvError::Lagged(_)) => lock(screen).lost(),
                Err(RecvError::Closed) => return,
            },
            _ = &mut stop => {
                // The turn is over: whatever it published is queued.
                loop {
                    match rx.try_recv() {
                        Ok(e) => feed(screen, &e),
                        Err(TryRecvError::Lagged(_)) => lock(screen).lost(),
                        Err(_) => return,
                    }
                }
            }
        }
    }
}

fn feed(screen: &Mutex<Screen>, e: &Event) {
    if let EventKind::ReplyDelta { agent, text, restart } = &e.kind {
        lock(screen).piece(e.turn, agent, text, *restart);
    }
}

/// Opens the daemon's live events (`GET /api/events`) at `api`, with the API token.
async fn connect(root: &Path, api: &str) -> Result<reqwest::Response, String> {
    let mut addr: std::net::SocketAddr =
        api.parse().map_err(|_| format!("daemon.json names no API address I can use ({})", term::line(api)))?;
    if addr.ip().is_unspecified() {
        // Listening on every address: loopback is one of them.
        addr.set_ip(if addr.is_ipv4() { Ipv4Addr::LOCALHOST.into() } else { Ipv6Addr::LOCALHOST.into() });
    }
    let token = match std::env::var("LEMMING_API_TOKEN") {
        Ok(t) if !t.is_empty() => t,
        _ => std::fs::read_to_string(Layout::new(root).state_dir().join(lemming_server::auth::TOKEN_FILE))
            .map(|t| t.trim().to_string())
            .map_err(|e| format!("cannot read the API token (LEMMING_API_TOKEN, or org/state/api-token): {e}"))?,
    };
    let client = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
    let url = format!("http://{addr}/api/events");
    let sent = client.get(&url).bearer_auth(token).send();
    let r = tokio::time::timeout(Duration::from_secs(3), sent)
        .await
        .map_err(|_| format!("the daemon's API at {addr} did not answer within 3 s"))?
        .map_err(|e| format!("cannot reach the daemon's API at {addr}: {e}"))?;
    if !r.status().is_success() {
        return Err(format!("the daemon's API at {addr} answered {}", r.status()));
    }
    Ok(r)
}

/// Shows the `reply_delta` events of the live events until the stream ends.
async fn from_api(mut r: reqwest::Response, screen: &Mutex<Screen>) {
    let mut sse = Sse::new();
    while let Ok(Some(chunk)) = r.chunk().await {
        match deltas(&mut sse, &chunk) {
            Ok(events) => events.iter().for_each(|e| feed(screen, e)),
            Err(_) => {
                // A line too long to keep: what follows it cannot be trusted to continue the reply.
                lock(screen).lost();
                return;
            }
        }
    }
}

/// The `reply_delta` events that `bytes` complete in the event stream `sse` reads.
fn deltas(sse: &mut Sse, bytes: &[u8]) -> Result<Vec<Event>, String> {
    let events = sse.feed(bytes)?;
    Ok(events.into_iter().filter(|e| e.event == "reply_delta").filter_map(|e| Event::parse(&e.data)).collect())
}

/// What the person sees while waiting: a spinner until text comes, then the
/// body of each message of the agent's reply to the person, as it grows.
struct Screen {
    agent: String,
    /// Why no piece can come (no live source), said in the spinner.
    why_not: Option<String>,
    spinner: Option<ProgressBar>,
    /// Whether stdout is a terminal (a restart is then erased, else noted).
    tty: bool,
    /// The turn whose reply is being shown, and its raw text so far.
    turn: u64,
    raw: String,
    /// For the messages of this reply shown so far: their index in the
    /// reply, and their entry in `shown`.
    current: Vec<(usize, usize)>,
    /// Every body shown while waiting (as far as it was shown), oldest first.
    shown: Vec<String>,
    /// What was printed for this reply, to erase it on a restart.
    printed: String,
    /// A line of text is open (no newline after it yet); its entry in `shown`.
    open: Option<usize>,
    /// Where the open paragraph begins in `printed`.
    para: usize,
    /// Pieces were lost on the way: none is shown any more; the replies are printed whole.
    deaf: bool,
}

impl Screen {
    fn new(agent: &str, why_not: Option<String>) -> Screen {
        Screen {
            agent: agent.to_string(),
            why_not,
            spinner: None,
            tty: std::io::stdout().is_terminal(),
            turn: 0,
            raw: String::new(),
            current: Vec::new(),
            shown: Vec::new(),
            printed: String::new(),
            open: None,
            para: 0,
            deaf: false,
        }
        .waiting()
    }

    fn waiting(mut self) -> Screen {
        if self.agent.is_empty() {
            return self;
        }
        let msg = format!("waiting for {}", self.agent);
        let why = self.why_not.as_deref().map(|w| format!(" (not shown as it is written: {w})")).unwrap_or_default();
        self.spinner = crate::progress::spinner(format!("{msg}{why}"));
        if self.spinner.is_none() {
            eprintln!("{msg}...{why}");
        }
        self
    }

    /// What the wait is doing, in the spinner.
    fn status(&mut self, status: String) {
        if let Some(s) = &self.spinner {
            let why = self.why_not.as_deref().map(|w| format!("; not shown as it is written: {w}")).unwrap_or_default();
            s.set_message(format!("waiting for {}; {status}{why}", self.agent));
        }
    }

    /// Removes the spinner.
    fn quiet(&mut self) {
        if let Some(s) = self.spinner.take() {
            s.finish_and_clear();
        }
    }

    fn print(&mut self, s: &str) {
        self.quiet();
        print!("{s}");
        let _ = std::io::stdout().flush();
        self.printed.push_str(s);
    }

    /// A piece of `agent`'s reply in `turn`.
    fn piece(&mut self, turn: u64, agent: &str, text: &str, restart: bool) {
        if agent != self.agent || self.deaf {
            return;
        }
        if turn != self.turn {
            // A new turn's reply: what was shown of the last one stays.
            self.turn = turn;
            self.raw.clear();
            self.current.clear();
            self.printed.clear();
        }
        if restart {
            self.restart();
            return;
        }
        self.raw.push_str(text);
        for (i, m) in streamed::messages(&self.raw).into_iter().enumerate() {
            // On a terminal a body shows before its `to` is known (models may
            // write it last), and is erased if it is not to the person;
            // elsewhere only what is known to be for the person is printed.
            let for_me = match &m.to {
                Some(_) => m.is_to(HUMAN),
                None => self.tty,
            };
            let at = self.current.iter().find(|(at, _)| *at == i).map(|&(_, k)| k);
            if !for_me {
                if let Some(k) = at.filter(|k| self.open == Some(*k)) {
                    self.retract(k);
                }
                continue;
            }
            let k = match at {
                Some(k) => k,
                None if m.body.is_empty() => continue,
                None => {
                    if self.open.is_some() {
                        self.print("\n");
                    }
                    self.para = self.printed.len();
                    self.print(&format!("{}: ", term::line(&self.agent)));
                    self.shown.push(String::new());
                    let k = self.shown.len() - 1;
                    self.current.push((i, k));
                    self.open = Some(k);
                    k
                }
            };
            if self.open != Some(k) {
                // Another message of the reply began since: this one is shown whole at the end.
                continue;
            }
            let have = &self.shown[k];
            if m.body.len() > have.len() && m.body.starts_with(have.as_str()) {
                let new = m.body[have.len()..].to_string();
                self.print(&term::text(&new).replace('\n', "\n  "));
                self.shown[k].push_str(&new);
            }
        }
    }

    /// Erases the open paragraph, shown before its `to` was known: it is not to the person.
    fn retract(&mut self, k: usize) {
        erase(&self.printed[self.para..]);
        let _ = std::io::stdout().flush();
        self.printed.truncate(self.para);
        self.shown[k].clear();
        self.open = None;
    }

    /// The text so far is not a reply that was delivered (its try failed,
    /// or it was unusable, or its call was stopped): what was shown of it goes.
    fn restart(&mut self) {
        self.withdraw("(not delivered: that reply was cut off or unusable)");
    }

    /// Some pieces were lost on the way (chat fell behind): what was shown of
    /// the reply goes, no more pieces are shown, and replies are printed whole.
    fn lost(&mut self) {
        self.withdraw("(some of that reply was lost on the way; it is printed whole when it comes)");
        self.deaf = true;
    }

    /// Erases (on a terminal) or notes as `why` (elsewhere) what was shown of
    /// the current reply, and forgets it.
    fn withdraw(&mut self, why: &str) {
        if let Some(&(_, first)) = self.current.first() {
            self.shown.truncate(first);
            if self.tty {
                erase(&self.printed);
            } else {
                println!("\n{why}");
            }
            let _ = std::io::stdout().flush();
        }
        self.open = None;
        self.raw.clear();
        self.current.clear();
        self.printed.clear();
    }

    /// What is left to print of `m` once its body (or a beginning of it) was
    /// shown as it was written: the rest only, else the whole message.
    fn rest_of(&mut self, m: &Message) -> String {
        let at = (m.from == self.agent)
            .then(|| self.shown.iter().position(|s| !s.is_empty() && m.body.starts_with(s.as_str())))
            .flatten();
        let close = |open: &mut Option<usize>| if open.take().is_some() { "\n" } else { "" };
        match at {
            Some(k) if self.open == Some(k) => {
                let rest = term::text(m.body[self.shown[k].len()..].trim_end()).replace('\n', "\n  ");
                self.shown[k].clear();
                self.open = None;
                format!("{rest}\n")
            }
            Some(k) if self.shown[k] == m.body => {
                self.shown[k].clear();
                close(&mut self.open).to_string()
            }
            _ => format!("{}{}", close(&mut self.open), message(m, MessageLayout::Chat)),
        }
    }

    /// Ends an open line (a reply shown while written whose message did not come).
    fn close(&mut self) {
        if self.open.take().is_some() {
            println!();
        }
    }
}

/// Erases `printed` from a terminal: the cursor is at its end.
fn erase(printed: &str) {
    let width = terminal_width().max(1);
    let rows: usize = printed.split('\n').map(|l| l.chars().count().max(1).div_ceil(width)).sum();
    let mut s = String::from("\r\x1b[2K");
    for _ in 1..rows {
        s.push_str("\x1b[1A\x1b[2K");
    }
    print!("{s}");
}

/// The width of the terminal on stdout (80 when it cannot be told).
fn terminal_width() -> usize {
    // SAFETY: TIOCGWINSZ writes a `winsize` into the struct it is given, and nothing else.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col > 0 {
        ws.ws_col as usize
    } else {
        80
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn screen(tty: bool) -> Screen {
        let mut s = Screen::new("", None);
        s.agent = "manager".into();
        s.tty = tty;
        s
    }

    fn msg(from: &str, body: &str) -> Message {
        let v = serde_json::json!({"id": "r1", "from": from, "to": "human", "body": body, "thread": "t",
            "created_at": "2026-01-01T00:00:00Z"});
        Message::parse(v.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn a_body_shown_whole_is_not_printed_again_and_a_partial_one_gets_its_rest() {
        let mut s = screen(false);
        s.piece(1, "manager", r#"{"messages":[{"to":"human","body":"hel"#, false);
        s.piece(1, "planner", r#"{"messages":[{"to":"human","body":"other"#, false);
        assert_eq!(s.shown, ["hel"], "only the agent talked to");
        s.piece(1, "manager", r#"lo"},{"to":"planner","body":"not for you"}]}"#, false);
        assert_eq!(s.shown, ["hello"], "a message to someone else is not shown");
        assert_eq!(s.rest_of(&msg("manager", "hello")), "\n", "shown whole: only the line's end");
        assert_eq!(s.rest_of(&msg("manager", "hello")), "manager: hello\n", "a second copy is printed");

        let mut s = screen(false);
        s.piece(2, "manager", r#"{"messages":[{"to":["cfo","human"],"body":"a\nb"#, false);
        assert_eq!(s.printed, "manager: a\n  b");
        assert_eq!(s.rest_of(&msg("manager", "a\nbc\nd")), "c\n  d\n", "the rest, laid out as chat does");
        assert_eq!(s.rest_of(&msg("cfo", "x")), "cfo: x\n");
    }

    #[test]
    fn off_a_terminal_a_body_waits_for_its_to_and_a_restart_forgets_what_was_shown() {
        let mut s = screen(false);
        s.piece(1, "manager", r#"{"messages":[{"body":"for whom"#, false);
        assert!(s.printed.is_empty(), "`to` not known yet");
        s.piece(1, "manager", r#"?","to":"human""#, false);
        assert_eq!(s.printed, "manager: for whom?");
        s.piece(1, "manager", "", true);
        assert!(s.shown.is_empty() && s.open.is_none(), "forgotten");
        assert_eq!(s.rest_of(&msg("manager", "for whom?")), "manager: for whom?\n", "printed whole at the end");
        // The retry is shown from its start; a new turn starts a new reply.
        s.piece(1, "manager", r#"{"messages":[{"to":"human","body":"again"}]}"#, false);
        s.piece(2, "manager", r#"{"messages":[{"to":"human","body":"next"#, false);
        assert_eq!(s.shown, ["again", "next"]);
        assert_eq!(s.printed, "\nmanager: next", "the new turn's paragraph on its own line");
    }

    #[test]
    fn on_a_terminal_a_body_shows_before_its_to_and_goes_if_it_is_not_for_the_person() {
        let mut s = screen(true);
        s.piece(1, "manager", r#"{"messages":[{"body":"psst"#, false);
        assert_eq!(s.shown, ["psst"]);
        s.piece(1, "manager", r#"","to":"planner"},{"body":"hi","to":"human"}]}"#, false);
        assert_eq!(s.shown, ["", "hi"], "the first erased, the second shown");
        assert_eq!(s.printed, "manager: hi");
        assert_eq!(s.rest_of(&msg("manager", "hi")), "\n");
    }

    #[test]
    fn reply_delta_frames_are_read_and_others_are_not() {
        let data =
            r#"{"seq":0,"turn":4,"at":"2026-01-01T00:00:00Z","event":"reply_delta","agent":"manager","text":"{\"mes"}"#;
        let want = EventKind::ReplyDelta { agent: "manager".into(), text: "{\"mes".into(), restart: false };
        let mut sse = Sse::new();
        let e = deltas(&mut sse, format!("event: reply_delta\ndata: {data}\n\n").as_bytes()).unwrap();
        assert_eq!((e.len(), e[0].turn, &e[0].kind), (1, 4, &want));
        let others = format!("id: 3\nevent: delivered\ndata: {data}\n\nevent: reply_delta\ndata: {{not json\n\n");
        assert!(deltas(&mut sse, others.as_bytes()).unwrap().is_empty());
    }

    #[test]
    fn crlf_or_cr_line_ends_split_frames_and_data_in_several_lines_are_read() {
        let (head, tail) = (
            r#"{"seq":0,"turn":4,"at":"2026-01-01T00:00:00Z","#,
            r#""event":"reply_delta","agent":"manager","text":"hi"}"#,
        );
        let want = EventKind::ReplyDelta { agent: "manager".into(), text: "hi".into(), restart: false };
        for end in ["\r\n", "\r", "\n"] {
            let stream = format!(": keepalive{end}{end}event: reply_delta{end}data: {head}{end}data: {tail}{end}{end}");
            let mut sse = Sse::new();
            let mut got = Vec::new();
            // Fed a byte at a time: every frame and line end is split across reads.
            for b in stream.as_bytes() {
                got.extend(deltas(&mut sse, std::slice::from_ref(b)).unwrap());
            }
            assert_eq!(got.iter().map(|e| &e.kind).collect::<Vec<_>>(), [&want], "line end {end:?}");
        }
    }

    #[test]
    fn lost_pieces_withdraw_the_shown_reply_and_it_is_printed_whole() {
        let mut s = screen(false);
        s.piece(1, "manager", r#"{"messages":[{"to":"human","body":"hel"#, false);
        assert_eq!(s.shown, ["hel"]);
        s.lost();
        s.piece(1, "manager", r#"lo wor"#, false);
        assert!(s.shown.is_empty() && s.open.is_none(), "forgotten, and no later piece shown: {:?}", s.shown);
        assert_eq!(s.rest_of(&msg("manager", "hello world")), "manager: hello world\n", "printed whole");
    }
}
