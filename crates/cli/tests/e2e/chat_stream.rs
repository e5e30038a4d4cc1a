//! `lemming chat` in a pseudo-terminal shows a streamed reply's body in
//! pieces before the reply completes: when it runs the turns itself, and
//! through a daemon's live events. And progress is drawn on a terminal only.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::fixture::{wait_until, TestOrg};

/// The org's default model streams, from a mock that takes `latency_ms` to answer.
fn streaming_org(latency_ms: u64, stream: bool) -> TestOrg {
    let org = TestOrg::new();
    let stream = if stream { "\nstream = true" } else { "" };
    org.edit("org/models.toml", "provider = \"mock\"", &format!("provider = \"slow\"{stream}"));
    let models =
        org.read("org/models.toml") + &format!("\n[providers.slow]\nkind = \"mock\"\nlatency_ms = {latency_ms}\n");
    org.write("org/models.toml", models);
    org
}

/// What a pty printed, each read with the time it was read.
type Output = Arc<Mutex<Vec<(Instant, Vec<u8>)>>>;

/// A child process whose stdin, stdout and stderr are a pseudo-terminal; all
/// it prints is kept with the time it was read. Dropping it kills it.
struct Pty {
    child: Child,
    master: File,
    out: Output,
}

impl Pty {
    fn spawn(mut cmd: Command) -> Pty {
        let (mut master, mut slave) = (-1, -1);
        let size = libc::winsize { ws_row: 40, ws_col: 200, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: openpty writes two fds into the ints it is given; the other pointers may be null.
        let rc = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &size) };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both fds were just opened by openpty and are owned here only.
        let (master, slave) = unsafe { (File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        // SAFETY: setsid and ioctl are async-signal-safe; the child makes the pty its terminal.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn in a pty");
        drop(cmd);
        let out: Output = Arc::default();
        let mut reader = master.try_clone().unwrap();
        let log = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends with EIO once the child and its fds are gone.
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                log.lock().unwrap().push((Instant::now(), buf[..n].to_vec()));
            }
        });
        Pty { child, master, out }
    }

    fn write(&mut self, s: &str) {
        self.master.write_all(s.as_bytes()).unwrap();
    }

    fn text(&self) -> String {
        let out = self.out.lock().unwrap();
        String::from_utf8_lossy(&out.iter().flat_map(|(_, b)| b.clone()).collect::<Vec<u8>>()).into_owned()
    }

    /// When the output first held `needle` (`None`: not yet).
    fn seen_at(&self, needle: &str) -> Option<Instant> {
        let out = self.out.lock().unwrap();
        let mut all = Vec::new();
        for (at, b) in out.iter() {
            all.extend_from_slice(b);
            if String::from_utf8_lossy(&all).contains(needle) {
                return Some(*at);
            }
        }
        None
    }

    /// Waits (bounded) for it to exit.
    fn wait_exit(&mut self, timeout: Duration) -> bool {
        wait_until(timeout, || self.child.try_wait().ok().flatten().is_some())
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long the mock takes to stream a reply: its pieces come about a
/// tenth of this apart, far more than a loaded machine's hiccups.
const STREAMED_MS: u64 = 3000;

/// Talks to manager in a pty and checks that the reply's body showed in
/// pieces: a beginning of it at least 100 ms before the whole of it.
fn chat_shows_the_body_in_pieces(org: &TestOrg, context: &str) {
    let mut pty = Pty::spawn(org.command(&["chat", "manager"]));
    assert!(
        wait_until(Duration::from_secs(20), || pty.text().contains("Ctrl-D")),
        "{context}: chat did not start:\n{}",
        pty.text()
    );
    let line = "please write me a long answer about the weather and the sea";
    pty.write(&format!("{line}\n"));
    let body = format!("manager received: {line}");
    let whole = wait_until(Duration::from_secs(30), || pty.seen_at(&body).is_some());
    assert!(whole, "{context}: the reply never showed:\n{}", pty.text());
    let first = pty.seen_at("manager: manager rec").expect("a beginning of the body");
    let last = pty.seen_at(&body).unwrap();
    assert!(
        last.duration_since(first) >= Duration::from_millis(100),
        "{context}: the body showed at once ({:?} between its beginning and its end), not as it was written:\n{}",
        last.duration_since(first),
        pty.text()
    );
    pty.write("\x04");
    assert!(pty.wait_exit(Duration::from_secs(10)), "{context}: chat did not end on Ctrl-D:\n{}", pty.text());
    // Shown once: the message that arrives last does not print it again (counted once chat is gone).
    assert_eq!(pty.text().matches(&body).count(), 1, "{context}: the body was printed twice:\n{}", pty.text());
}

#[test]
fn chat_running_the_turns_itself_shows_a_streamed_body_as_it_arrives() {
    let org = streaming_org(STREAMED_MS, true);
    chat_shows_the_body_in_pieces(&org, "no daemon");
}

#[test]
fn chat_shows_a_streamed_body_as_it_arrives_through_the_daemon_s_events() {
    let org = streaming_org(STREAMED_MS, true);
    let mut d = org.spawn_run(&["--http", "127.0.0.1:0"]);
    d.wait_ready();
    let api = || {
        std::fs::read(org.path("org/state/daemon.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["api"].as_str().map(String::from))
    };
    assert!(wait_until(Duration::from_secs(10), || api().is_some()), "daemon.json names no API\n{d}");
    assert!(api().unwrap().starts_with("127.0.0.1:"), "{:?}", api());
    chat_shows_the_body_in_pieces(&org, "with a daemon");
    d.assert_running("after chat");
}

#[test]
fn without_streaming_chat_prints_the_reply_once_whole() {
    let org = streaming_org(600, false);
    let mut pty = Pty::spawn(org.command(&["chat", "manager"]));
    assert!(wait_until(Duration::from_secs(10), || pty.text().contains("Ctrl-D")), "{}", pty.text());
    pty.write("hi there\n");
    let body = "manager: manager received: hi there";
    assert!(wait_until(Duration::from_secs(20), || pty.seen_at(body).is_some()), "{}", pty.text());
    assert!(pty.text().contains("waiting for manager"), "a spinner while it waits:\n{}", pty.text());
    pty.write("\x04");
    assert!(pty.wait_exit(Duration::from_secs(10)), "{}", pty.text());
    assert_eq!(pty.text().matches(body).count(), 1, "{}", pty.text());
}

#[test]
fn step_draws_a_bar_on_a_terminal_and_nothing_into_a_pipe() {
    let org = streaming_org(300, false);
    org.send("manager", "hello");
    for args in [&["step", "-n", "3", "--json"][..], &["step", "-n", "3"]] {
        let out = org.lemming(args).ok();
        for (name, text) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            assert!(!text.contains(['\r', '\x1b']), "{args:?}: progress bytes in {name}:\n{out}");
        }
        if args.contains(&"--json") {
            assert_eq!(out.json().as_array().map(Vec::len), Some(3), "{out}");
        } else {
            assert_eq!(out.stdout.matches("turn ").count(), 3, "one summary a turn:\n{out}");
        }
    }
    // On a terminal: a bar over the turns, then each turn's summary.
    org.send("manager", "hello again");
    let mut pty = Pty::spawn(org.command(&["step", "-n", "3"]));
    assert!(pty.wait_exit(Duration::from_secs(30)), "{}", pty.text());
    let text = pty.text();
    assert!(text.contains("/3 turns") && text.contains('\x1b'), "a bar:\n{text:?}");
    assert!(text.matches("ran ").count() >= 3, "{text:?}");
}
