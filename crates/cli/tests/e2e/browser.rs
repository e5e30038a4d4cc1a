//! The dashboard in a real browser: Debian's Chromium, headless, driven through
//! chromedriver (WebDriver), against `lemming run --http` on a default org with
//! the mock provider. It signs in through the login link the daemon prints,
//! sees every agent in the org chart and the table, sends a message from the
//! send box and sees the reply arrive in the feed without a reload, shows a
//! syntax error of a resume at its line, searches the messages, and switches
//! to dark mode. Each view is saved as a PNG in `target/screenshots/` (or
//! `$LEMMING_SCREENSHOTS`). Says SKIPPED when chromium or chromedriver is
//! missing (`scripts/setup-llm-peers.sh --only chromium` installs them).

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::fake_http::free_port;
use crate::fixture::{Daemon, TestOrg};

/// Debian's chromium launcher.
const CHROMIUM: &str = "/usr/bin/chromium";

/// How long any one thing may take to show in the page.
const WAIT: Duration = Duration::from_secs(30);

/// chromedriver, on the PATH or where Debian puts it.
fn chromedriver() -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join("chromedriver"))
        .find(|p| p.is_file())
}

/// The browser binary chromedriver starts: the real one behind Debian's
/// launcher script when it is there (the script only adds flags we set).
fn chromium_binary() -> PathBuf {
    let real = Path::new("/usr/lib/chromium/chromium");
    if real.is_file() {
        real.to_path_buf()
    } else {
        PathBuf::from(CHROMIUM)
    }
}

/// Where the screenshots go.
fn screenshot_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("LEMMING_SCREENSHOTS") {
        return PathBuf::from(d);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("screenshots")
}

/// Waits (up to 20 s) for the daemon to print its login link; returns it.
fn login_link(daemon: &mut Daemon) -> String {
    let start = Instant::now();
    loop {
        let out = daemon.output();
        if let Some(line) = out.lines().find(|l| l.contains("/login?code=")) {
            let at = line.find("http://").unwrap_or_else(|| panic!("the login line has no http:// URL: {line}"));
            return line[at..].split_whitespace().next().unwrap().to_string();
        }
        assert!(daemon.is_running(), "the daemon exited before printing its login link\n{daemon}");
        assert!(start.elapsed() < Duration::from_secs(20), "no login link (`/login?code=`) within 20 s\n{daemon}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A process group (chromedriver and the browsers it starts), killed and
/// reaped when dropped, also when the test panics.
struct KillGroup(std::process::Child);

impl Drop for KillGroup {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions; the group is our child's own.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

/// Starts chromedriver, in a process group of its own, on a free port, and
/// waits until it accepts connections.
fn start_chromedriver(driver: &Path, log: &Path) -> (KillGroup, u16) {
    let port = free_port();
    let out = std::fs::File::create(log).unwrap();
    let child = std::os::unix::process::CommandExt::process_group(&mut Command::new(driver), 0)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver.display()));
    let guard = KillGroup(child);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let start = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "chromedriver did not listen within 20 s:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (guard, port)
}

/// Runs `script` (a function body) in the page.
async fn js(c: &Client, script: &str) -> Value {
    c.execute(script, vec![]).await.unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
}

/// Evaluates `expr` in the page until it is truthy (not null, false, 0, "" or
/// an empty list), for up to `limit`; returns that value.
async fn until(c: &Client, what: &str, expr: &str, limit: Duration) -> Value {
    let script = format!("try {{ return ({expr}); }} catch (e) {{ return null; }}");
    let start = Instant::now();
    let mut last;
    loop {
        last = js(c, &script).await;
        let truthy = match &last {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Number(n) => n.as_f64() != Some(0.0),
            Value::String(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
            Value::Object(_) => true,
        };
        if truthy {
            return last;
        }
        if start.elapsed() > limit {
            let page = js(c, "return document.body.innerText.slice(0, 3000)").await;
            panic!(
                "waited {limit:?} for {what} (`{expr}` is {last}); the page shows:\n{}",
                page.as_str().unwrap_or("")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Clicks the element `css` finds; finds it again if the page redrew it
/// between the find and the click (a turn refreshes the views).
async fn click(c: &Client, css: &str) {
    let start = Instant::now();
    loop {
        let done = match c.find(Locator::Css(css)).await {
            Ok(e) => e.click().await,
            Err(e) => Err(e),
        };
        match done {
            Ok(()) => return,
            Err(e) if start.elapsed() < WAIT => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("cannot click {css}: {e}"),
        }
    }
}

/// Saves the page as `dir/name.png`.
async fn screenshot(c: &Client, dir: &Path, name: &str) {
    js(c, "window.scrollTo(0, 0); return null").await;
    let png = c.screenshot().await.unwrap_or_else(|e| panic!("no screenshot {name}: {e}"));
    assert!(png.starts_with(b"\x89PNG"), "the screenshot {name} is not a PNG");
    let path = dir.join(format!("{name}.png"));
    std::fs::write(&path, png).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    eprintln!("screenshot: {}", path.display());
}

#[test]
fn the_dashboard_in_headless_chromium() {
    let Some(driver) = chromedriver().filter(|_| Path::new(CHROMIUM).exists()) else {
        eprintln!(
            "SKIPPED: chromium not installed (needs {CHROMIUM} and chromedriver; run scripts/setup-llm-peers.sh --only chromium)"
        );
        return;
    };
    let org = TestOrg::new();
    let mut daemon = org.spawn_run(&["--http", "127.0.0.1:0"]);
    let login = login_link(&mut daemon);
    let base = login[..login.find("/login").unwrap()].to_string();
    let (_driver, port) = start_chromedriver(&driver, &org.tmp.path().join("chromedriver.log"));
    let profile = tempfile::tempdir().unwrap();
    let shots = screenshot_dir();
    std::fs::create_dir_all(&shots).unwrap();

    let mut agents = org.agent_folders();
    agents.sort();
    let resume_path = org.path("agents/manager/resume.toml");
    let resume_before = std::fs::read(&resume_path).unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let caps = json!({
            "goog:chromeOptions": {
                "binary": chromium_binary(),
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,800",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }
        });
        let caps = caps.as_object().unwrap().clone().into_iter().collect();
        let c = tokio::time::timeout(
            WAIT,
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps)
                .connect(&format!("http://127.0.0.1:{port}")),
        )
        .await
        .expect("chromedriver starts a session within 30 s")
        .expect("chromedriver starts a session");
        c.set_window_size(1280, 800).await.unwrap();

        // Without the cookie, the page says how to sign in.
        c.goto(&format!("{base}/")).await.unwrap();
        let banner = until(&c, "the sign-in banner", "!document.querySelector('#banner').hidden && document.querySelector('#banner').textContent", WAIT).await;
        assert!(banner.as_str().unwrap().contains("login link"), "{banner}");

        // The login link sets the cookie; the page then loads everything.
        c.goto(&login).await.unwrap();
        c.goto(&format!("{base}/")).await.unwrap();
        js(&c, "window.__sameDocument = true; return null").await;
        until(&c, "the event stream to connect", "document.querySelector('#conn').classList.contains('live')", WAIT).await;

        // Every agent is a node of the chart and a row of the table.
        let nodes = until(
            &c,
            "the org chart's nodes",
            "window.lemming.state.cy.nodes().not('.pulse').map(n => n.id()).sort()",
            WAIT,
        )
        .await;
        assert_eq!(nodes, json!(agents), "the chart's nodes are the org's agents");
        let rows = js(&c, "return [...document.querySelectorAll('#agents tbody tr')].map(r => r.dataset.agent).sort()").await;
        assert_eq!(rows, json!(agents), "the table's rows are the org's agents");
        let edges = js(&c, "return window.lemming.state.cy.edges().length").await;
        assert!(edges.as_u64().unwrap() > 0, "the chart has edges");
        screenshot(&c, &shots, "1-overview").await;

        // A message from the send box, and the manager's reply in the feed, with no reload.
        let feed_before = js(&c, "return [...document.querySelectorAll('#feed li[data-id]')].map(li => li.dataset.id)").await;
        c.find(Locator::Css("#send-to")).await.unwrap().select_by_value("manager").await.unwrap();
        c.find(Locator::Css("#send-body")).await.unwrap().send_keys("Please plan the launch").await.unwrap();
        click(&c, "#send-btn").await;
        let sent = until(&c, "the send box's answer", "document.querySelector('#send-result.ok') && document.querySelector('#send-result').textContent", WAIT).await;
        let id = sent.as_str().unwrap().strip_prefix("sent ").unwrap_or_else(|| panic!("{sent}")).to_string();
        let reply = until(
            &c,
            "the manager's reply in the feed",
            &format!(
                "[...document.querySelectorAll('#feed li[data-id]')].find(li => !{feed_before}.includes(li.dataset.id) \
                 && li.dataset.id !== {id:?} && li.querySelector('.who').textContent === 'manager')?.textContent"
            ),
            WAIT,
        )
        .await;
        assert!(!reply.as_str().unwrap().is_empty());
        let mine = js(&c, &format!("return !!document.querySelector('#feed li[data-id={id:?}]')")).await;
        assert_eq!(mine, json!(true), "the sent message {id} is in the feed");
        assert_eq!(js(&c, "return window.__sameDocument === true").await, json!(true), "the page was not reloaded");
        screenshot(&c, &shots, "2-feed-reply").await;

        // More traffic for the other views: the manager hands work to the
        // planner, and a file that is not a message goes to dead letters.
        org.send_from("manager", "planner", "Draft the launch plan");
        org.drop_outbox("planner", "not-a-message.json", b"{ this is not json");
        until(&c, "the planner's reply in the feed", "[...document.querySelectorAll('#feed .who')].some(w => w.textContent === 'planner')", WAIT).await;

        // The manager's page: a syntax error in its resume is shown at its line.
        click(&c, "#agents tbody tr[data-agent=manager] button").await;
        until(&c, "the resume in the editor", "document.querySelector('#resume').value.includes('[')", WAIT).await;
        let line = js(
            &c,
            "const ta = document.querySelector('#resume'); const lines = ta.value.split('\\n'); \
             const at = Math.max(1, Math.floor(lines.length / 2)); \
             lines.splice(at, 0, 'broken = \"no closing quote'); ta.value = lines.join('\\n'); \
             ta.dispatchEvent(new Event('input')); return at + 1",
        )
        .await;
        click(&c, "#resume-save").await;
        let shown = until(&c, "the error in the editor", "document.querySelector('#problems li')?.dataset.line", WAIT).await;
        assert_eq!(shown, json!(line.to_string()), "the error is shown at the broken line");
        let gutter = js(&c, &format!("return document.querySelector('#gutter [data-line=\"{line}\"]').className")).await;
        assert_eq!(gutter, json!("error"), "the gutter marks the line");
        let band = js(&c, &format!("return !!document.querySelector('#marks [data-line=\"{line}\"]')")).await;
        assert_eq!(band, json!(true), "the line is highlighted");
        let message = js(&c, "return document.querySelector('#problems .msg').textContent").await;
        assert!(!message.as_str().unwrap().trim().is_empty(), "the error says what is wrong");
        assert_eq!(std::fs::read(&resume_path).unwrap(), resume_before, "a refused resume leaves the file as it was");
        screenshot(&c, &shots, "3-agent-error").await;

        // Esc closes the agent page.
        c.active_element().await.unwrap().send_keys("\u{e00c}").await.unwrap();
        until(&c, "the agent page to close", "document.querySelector('#agent').hidden", WAIT).await;

        // The message browser: `/` to search, then a thread.
        c.find(Locator::Css("body")).await.unwrap().send_keys("/").await.unwrap();
        until(&c, "the search box to have focus", "document.activeElement.id === 'q'", WAIT).await;
        c.active_element().await.unwrap().send_keys("launch\u{e007}").await.unwrap();
        until(
            &c,
            "the search's results",
            "document.querySelector('#results').dataset.q === 'launch' && document.querySelectorAll('#results button[data-id]').length",
            WAIT,
        )
        .await;
        click(&c, "#results button[data-id]").await;
        until(&c, "the thread", "document.querySelectorAll('#thread li:not(.empty)').length", WAIT).await;
        screenshot(&c, &shots, "4-messages").await;

        // Credits over turns and the activity heatmap.
        click(&c, "#tab-usage").await;
        until(&c, "the credit plot", "document.querySelector('#plot svg path')", WAIT).await;
        until(&c, "the heatmap", "document.querySelector('#heatmap svg rect')", WAIT).await;
        screenshot(&c, &shots, "5-usage").await;

        // Dead letters, with their reason.
        click(&c, "#tab-dead").await;
        let reason = until(&c, "the dead letter", "document.querySelector('#dead tbody tr td:nth-child(2)')?.textContent", WAIT).await;
        assert!(!reason.as_str().unwrap().is_empty());
        screenshot(&c, &shots, "6-dead").await;

        // Pause and resume: the button and the daemon's state follow.
        click(&c, "#pause").await;
        until(&c, "the paused state", "document.querySelector('#daemon').textContent === 'paused' && document.querySelector('#pause').textContent === 'Resume'", WAIT).await;
        assert_eq!(org.status_json()["daemon"]["paused"], json!(true), "the daemon is paused");
        click(&c, "#pause").await;
        until(&c, "the running state", "document.querySelector('#daemon').textContent === 'running' && document.querySelector('#pause').textContent === 'Pause'", WAIT).await;
        assert_eq!(org.status_json()["daemon"]["paused"], json!(false), "the daemon runs again");

        // Dark mode, remembered across a reload.
        click(&c, "#tab-overview").await;
        let was = js(&c, "return getComputedStyle(document.body).backgroundColor").await;
        let other = js(&c, "return matchMedia('(prefers-color-scheme: dark)').matches ? 'light' : 'dark'").await;
        click(&c, "#theme").await;
        c.refresh().await.unwrap();
        until(&c, "the chart after the reload", "window.lemming.state.cy.nodes().length", WAIT).await;
        let theme = js(&c, "return document.documentElement.dataset.theme").await;
        let now = js(&c, "return getComputedStyle(document.body).backgroundColor").await;
        assert_eq!(theme, other, "the toggle is remembered");
        assert_ne!(was, now, "the toggle changes the colours");
        until(&c, "the event stream to connect", "document.querySelector('#conn').classList.contains('live')", WAIT).await;
        screenshot(&c, &shots, "7-dark").await;

        // A narrow window: one column, nothing wider than the window.
        c.set_window_size(600, 900).await.unwrap();
        until(&c, "one column", "getComputedStyle(document.querySelector('.grid-overview')).gridTemplateColumns.split(' ').length === 1", WAIT).await;
        let overflow = js(&c, "return document.documentElement.scrollWidth - document.documentElement.clientWidth").await;
        let wide = js(
            &c,
            "return [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > \
             document.documentElement.clientWidth + 1).slice(0, 8).map(e => e.tagName + '#' + e.id + '.' + e.className)",
        )
        .await;
        assert_eq!(overflow, json!(0), "the page is wider than a narrow window: {wide}");
        until(
            &c,
            "the chart to fit the narrow window",
            "(() => { const cy = window.lemming.state.cy, bb = cy.elements().renderedBoundingBox(); \
             return cy.width() === document.querySelector('#chart').clientWidth && bb.x1 >= 0 && bb.x2 <= cy.width(); })()",
            WAIT,
        )
        .await;
        screenshot(&c, &shots, "8-narrow").await;

        let blocked = js(&c, "return window.lemming.violations").await;
        assert_eq!(blocked, json!([]), "the page's own Content-Security-Policy blocked something");

        c.close().await.unwrap();
    });
    drop(daemon);
}
