//! The people's side of the daemon: `logs [-f]`, `inbox --follow` and `chat`,
//! with and without a daemon. Every long-running child is bounded in time and
//! killed when its test ends, passed or not.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fixture::TestOrg;

/// The longest any single wait in these tests may take.
const WITHIN: Duration = Duration::from_secs(20);

/// A running `lemming` whose stdout is read line by line and whose stderr is
/// collected; killed (SIGKILL) when dropped if it is still running.
struct Proc {
    what: String,
    child: Child,
    lines: Receiver<String>,
    stdout: String,
    stderr: Arc<Mutex<String>>,
}

impl Proc {
    fn spawn(what: &str, cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Proc { what: what.to_string(), child, lines, stdout: String::new(), stderr }
    }

    /// Everything seen so far, for failure messages.
    fn report(&self) -> String {
        format!("--- {} stdout\n{}--- stderr\n{}", self.what, self.stdout, self.stderr.lock().unwrap())
    }

    /// Reads stdout until a line contains `needle`; panics after `WITHIN`.
    #[track_caller]
    fn expect_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + WITHIN;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.stdout.push_str(&line);
                    self.stdout.push('\n');
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(e) => {
                    panic!("{} printed no line with {needle:?} within {WITHIN:?} ({e})\n{}", self.what, self.report())
                }
            }
        }
    }

    /// The stdout lines that come within `d` (to check that nothing more comes).
    fn lines_within(&mut self, d: Duration) -> Vec<String> {
        let deadline = Instant::now() + d;
        let mut out = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            self.stdout.push_str(&line);
            self.stdout.push('\n');
            out.push(line);
        }
        out
    }

    /// Waits for the process to exit; SIGKILLs it and panics after `WITHIN`.
    #[track_caller]
    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WITHIN;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // The reader threads end with the pipes; take what is left.
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(500)) {
                    self.stdout.push_str(&line);
                    self.stdout.push('\n');
                }
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("{} did not exit within {WITHIN:?}\n{}", self.what, self.report());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGINT (Ctrl-C) and waits for the exit.
    #[track_caller]
    fn interrupt(&mut self) -> ExitStatus {
        // SAFETY: sending a signal to our own child has no memory-safety preconditions.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.wait()
    }

    /// Writes to stdin, then closes it (end of input).
    fn input(&mut self, text: &str) {
        let mut stdin = self.child.stdin.take().expect("stdin already closed");
        stdin.write_all(text.as_bytes()).unwrap();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `lemming run` in the background; stopped (SIGTERM, then SIGKILL) when dropped.
struct Daemon(Proc);

impl Daemon {
    #[track_caller]
    fn start(org: &TestOrg) -> Daemon {
        let d = Daemon(Proc::spawn("lemming run", &mut org.command(&["run", "--turn-seconds", "60"])));
        let deadline = Instant::now() + WITHIN;
        while org.status_json()["daemon"]["running"] != true {
            assert!(Instant::now() < deadline, "the daemon did not start within {WITHIN:?}\n{}", d.0.report());
            thread::sleep(Duration::from_millis(50));
        }
        d
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let child = &mut self.0.child;
        if matches!(child.try_wait(), Ok(None)) {
            // SAFETY: sending a signal to our own child has no memory-safety preconditions.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

#[test]
fn logs_show_each_run_and_the_raw_text_of_a_failed_reply() {
    let org = TestOrg::new();
    org.send("manager", "hello");
    org.step();
    let reply = org.inbox_json("human");
    assert_eq!(reply.len(), 1, "{reply:#?}");
    let reply_id = reply[0]["id"].as_str().unwrap();

    let out = org.lemming_ok(&["logs", "manager"]);
    let first = out.stdout.lines().next().unwrap_or_default();
    for part in ["turn 1 ", " ok ", "model default", "read 1", "sent 1", "cost "] {
        assert!(first.contains(part), "the run's line lacks {part:?}\n{out}");
    }
    assert!(out.stdout.contains(reply_id), "the id of the message sent is not shown\n{out}");

    org.script("manager", "[[reply]]\nagent = \"manager\"\ntext = 'this is not json at all'\n");
    org.send("manager", "again");
    org.step();
    let out = org.lemming_ok(&["logs", "manager"]);
    assert!(out.stdout.contains("turn 1 ") && out.stdout.contains("turn 2 "), "both runs should be shown\n{out}");
    let failed = out.stdout.lines().find(|l| l.starts_with("turn 2 ")).unwrap();
    assert!(failed.contains(" failed ") && failed.contains("model scripted"), "{out}");
    assert!(out.stdout.contains("error: ") && out.stdout.contains("no JSON"), "the error is not shown\n{out}");
    assert!(out.stdout.contains("raw reply:\n    | this is not json at all"), "the raw reply is not shown\n{out}");

    let last = org.lemming_ok(&["logs", "manager", "-n", "1"]);
    assert!(last.stdout.starts_with("turn 2 ") && !last.stdout.contains("turn 1 "), "-n 1 shows one run\n{last}");

    let json = org.lemming_ok(&["logs", "manager", "--json"]);
    let runs: Vec<Value> = json.stdout.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(runs.len(), 2, "{json}");
    assert_eq!(runs[0]["outcome"], "ok");
    assert_eq!(runs[1]["outcome"], "failed");
    assert_eq!(runs[1]["raw"], "this is not json at all");

    let none = org.lemming_ok(&["logs", "planner"]);
    assert!(none.stdout.is_empty(), "{none}");
    none.stderr_has(&["No runs logged for planner"]);
    org.lemming(&["logs", "nobody"]).fails_with(1).stderr_has(&["unknown agent `nobody`", "known: ", "manager"]);
    org.lemming_ok(&["logs", "--help"]).ok();
    let help = org.lemming_ok(&["logs", "--help"]);
    assert!(help.stdout.contains("org/state/logs/"), "--help does not say where the daemon's log is\n{help}");
}

#[test]
fn logs_follow_prints_runs_appended_while_it_runs() {
    let org = TestOrg::new();
    org.send("manager", "one");
    org.step();
    assert!(!org.path("agents/planner/logs/activity.jsonl").exists());
    let mut manager = Proc::spawn("logs -f manager", &mut org.command(&["logs", "manager", "-f"]));
    let mut planner = Proc::spawn("logs -f planner", &mut org.command(&["logs", "planner", "--follow", "--json"]));
    manager.expect_line("turn 1 ");

    // Turn 2: the manager answers and forwards to the planner; turn 3: the planner runs.
    org.send("manager", "two @planner");
    org.step();
    manager.expect_line("turn 2 ");
    org.step();
    let line = planner.expect_line("\"turn\":3");
    let run: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
    assert_eq!(run["outcome"], "ok", "{line}");

    let status = manager.interrupt();
    assert_eq!(status.code(), Some(0), "Ctrl-C should end `logs -f` with 0\n{}", manager.report());
    assert_eq!(manager.stdout.matches("turn 1 ").count(), 1, "a run was printed twice\n{}", manager.report());
    assert_eq!(planner.interrupt().code(), Some(0), "{}", planner.report());
}

#[test]
fn inbox_follow_prints_mail_that_arrives_after_it_started() {
    let org = TestOrg::new();
    org.send("manager", "first");
    org.step();
    let mut follow = Proc::spawn("inbox --follow", &mut org.command(&["inbox", "--follow"]));
    follow.expect_line("manager received: first");

    org.send("manager", "second");
    org.step();
    follow.expect_line("manager received: second");
    // A message is printed, then marked read: the move may land a moment after the line.
    let read = crate::fixture::wait_until(WITHIN, || org.ids("human", "inbox", "cur").len() == 2);
    assert!(read, "the mail shown was not marked read\n{}", follow.report());
    assert!(org.inbox_json("human").is_empty(), "the human's mail was not marked read as it was shown");

    let status = follow.interrupt();
    assert_eq!(status.code(), Some(0), "Ctrl-C should end `inbox --follow` with 0\n{}", follow.report());
}

#[test]
fn inbox_follow_json_prints_json_lines_and_peek_shows_each_message_once() {
    let org = TestOrg::new();
    org.send("manager", "first");
    org.step();
    let mut follow =
        Proc::spawn("inbox --follow --json --peek", &mut org.command(&["inbox", "--follow", "--json", "--peek"]));
    let line = follow.expect_line("manager received: first");
    let msg: Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
    assert_eq!(msg["unread"], true);

    org.send("manager", "second");
    org.step();
    let line = follow.expect_line("manager received: second");
    let msg: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(msg["from"], "manager");
    // --peek leaves both unread; they must not be printed again on the next rescans.
    let more = follow.lines_within(Duration::from_millis(1500));
    assert!(more.is_empty(), "a message was printed twice: {more:#?}");
    assert_eq!(org.inbox_json("human").len(), 2, "--peek marked mail read");
    assert_eq!(follow.interrupt().code(), Some(0), "{}", follow.report());
}

#[test]
fn chat_without_a_daemon_runs_the_turns_itself() {
    let org = TestOrg::new();
    let mut chat = Proc::spawn("chat", &mut org.command(&["chat"]));
    chat.input("hello there\n\nhow are you?\n");
    let status = chat.wait();
    assert_eq!(status.code(), Some(0), "EOF should end chat with 0\n{}", chat.report());
    assert!(chat.stdout.contains("manager: manager received: hello there"), "{}", chat.report());
    assert!(chat.stdout.contains("manager: manager received: how are you?"), "{}", chat.report());
    let first = chat.stdout.find("hello there").unwrap();
    let second = chat.stdout.find("how are you?").unwrap();
    assert!(first < second, "the replies came out of order\n{}", chat.report());
    assert!(chat.stderr.lock().unwrap().contains("waiting"), "no progress line on stderr\n{}", chat.report());
    assert!(!chat.stdout.contains("> "), "a prompt was printed though stdin is not a terminal\n{}", chat.report());

    assert!(org.inbox_json("human").is_empty(), "chat left the replies unread");
    assert_eq!(org.ids("human", "inbox", "cur").len(), 2, "the two replies are not in the read mail");
    assert_eq!(org.ids("human", "outbox", "sent").len(), 2, "the empty line was sent, or a line was not");
}

#[test]
fn chat_says_when_the_conversation_ends_without_an_answer() {
    let org = TestOrg::new();
    org.script("manager", "[[reply]]\nagent = \"manager\"\ntext = '{\"messages\":[],\"notes\":\"ignored\"}'\n");
    let mut chat = Proc::spawn("chat manager", &mut org.command(&["chat", "manager"]));
    chat.input("anyone there?\n");
    assert_eq!(chat.wait().code(), Some(0), "{}", chat.report());
    assert!(chat.stdout.contains("no reply (the conversation ended without an answer to you)"), "{}", chat.report());
    let turn = org.status_json()["turn"].as_u64().unwrap();
    assert!(turn <= 3, "chat ran {turn} turns for a conversation that ended after one");

    let out = org.lemming(&["chat", "planner"]);
    out.fails_with(1)
        .stderr_has(&["human may not send to planner", "help: the org chart allows human to write to: manager"]);
}

#[test]
fn chat_with_a_daemon_running_waits_for_the_daemons_turn() {
    let org = TestOrg::new();
    let daemon = Daemon::start(&org);
    let pid = org.status_json()["daemon"]["pid"].as_u64().unwrap();
    let started = Instant::now();
    let mut chat = Proc::spawn("chat (daemon running)", &mut org.command(&["chat", "--timeout", "15"]));
    chat.input("ping from chat\n");
    assert_eq!(chat.wait().code(), Some(0), "{}\n{}", chat.report(), daemon.0.report());
    assert!(
        chat.stdout.contains("manager: manager received: ping from chat"),
        "{}\n{}",
        chat.report(),
        daemon.0.report()
    );
    // The daemon's timer turn is 60 s away: the reply came from its wake on mail.
    assert!(started.elapsed() < Duration::from_secs(15), "the reply took {:?}", started.elapsed());
    assert!(org.inbox_json("human").is_empty(), "chat left the reply unread");
    assert_eq!(org.status_json()["daemon"]["pid"].as_u64(), Some(pid), "the daemon is gone");
    drop(daemon);
}
