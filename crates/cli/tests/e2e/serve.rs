//! Managed local servers (`serve = {...}` on a provider) with the real
//! llama.cpp `llama-server` and Gemma 3 270M: the daemon starts it on the
//! first call that needs it, restarts it after a `kill -9`, shows it in
//! `status`, and leaves no process behind when it stops. SKIPPED when the
//! peers are not installed (see peers.rs).

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::fake_http::free_port;
use crate::fixture::{read_json, wait_until, TestOrg};
use crate::peers::{peer, skip};
use crate::providers::configure;

/// No such process, or a zombie nobody reaped yet.
fn gone(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

/// The live processes whose command line names `program` and `--port port`.
fn servers_on(program: &str, port: u16) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u64>() else { continue };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else { continue };
        let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        let on_port = args.windows(2).any(|w| w[0] == "--port" && w[1] == port.to_string());
        if args.iter().any(|a| a.contains(program)) && on_port && !gone(pid) {
            found.push(format!("{pid}: {}", args.join(" ")));
        }
    }
    found
}

fn state(path: &Path) -> Value {
    if path.exists() {
        read_json(path)
    } else {
        Value::Null
    }
}

fn spent(org: &TestOrg) -> f64 {
    org.status_json()["spent_by_model"]["local"].as_f64().unwrap_or(0.0)
}

#[test]
fn the_daemon_starts_a_managed_llama_server_on_first_use_restarts_it_and_stops_it() {
    let test = "the_daemon_starts_a_managed_llama_server_on_first_use_restarts_it_and_stops_it";
    let _llama = crate::peers::one_llama_at_a_time();
    let (Some(server), Some(gguf)) = (peer("LEMMING_LLAMA_SERVER"), peer("LEMMING_GGUF")) else {
        return skip(test, "llama-server or the Gemma GGUF");
    };
    let port = free_port();
    let org = TestOrg::new();
    configure(
        &org,
        &format!(
            r#"
[providers.llama]
kind = "openai"
base_url = "http://127.0.0.1:{port}/v1"
timeout_secs = 180
max_retries = 3
backoff_ms = 300
serve = {{ program = {server:?}, args = ["-m", {gguf:?}, "--alias", "gemma-270m", "--host", "127.0.0.1", "--port", "{port}", "-c", "4096", "-t", "2", "--no-webui", "--seed", "42"], startup_timeout_secs = 60 }}

[models.local]
provider = "llama"
model = "gemma-270m"
structured = "json_schema"
temperature = 0.0
max_tokens = 300
reply_max_messages = 1
reply_max_chars = 40
input_price = 1.0
output_price = 2.0
"#
        ),
        "manager",
        "local",
    );
    org.edit(
        "agents/manager/resume.toml",
        "tools = [\"read_file\", \"write_file\", \"list_files\", \"recall\"]",
        "tools = []",
    );
    let state_file = org.path("org/state/serve/llama.json");
    let log = org.path("org/state/logs/serve-llama.log");
    let program = server.file_name().unwrap().to_string_lossy().into_owned();

    let mut d = org.spawn_run(&[]);
    d.wait_ready();
    // Nothing runs before a call needs it; `status` says so.
    assert!(!state_file.exists(), "started before any call needed it\n{d}");
    assert_eq!(org.status_json()["servers"][0]["state"], "not_started");
    assert!(servers_on(&program, port).is_empty());
    // `doctor` reports it and does not start it.
    let doctor = org.lemming(&["--json", "doctor"]).json();
    assert_eq!(doctor["servers"][0]["state"], "not_started", "{doctor:#}");
    assert!(!state_file.exists() && servers_on(&program, port).is_empty(), "doctor started it");

    // The first turn that calls the model starts it; the reply comes.
    let id = org.send("manager", "Please reply to the human.");
    let ready = wait_until(Duration::from_secs(60), || state(&state_file)["state"] == "ready");
    assert!(
        ready,
        "not ready within 60 s: {:#}\n{}\n{d}",
        state(&state_file),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let first = state(&state_file)["pid"].as_u64().unwrap();
    assert!(!gone(first));
    let cmdline = std::fs::read(format!("/proc/{first}/cmdline")).unwrap();
    assert!(String::from_utf8_lossy(&cmdline).contains(&program), "pid {first} is not llama-server");
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(log_text.contains("lemming starts") && log_text.len() > 200, "its output goes to its log: {log_text}");
    let s = org.status_json();
    let shown = &s["servers"][0];
    assert_eq!((shown["provider"].as_str(), shown["state"].as_str()), (Some("llama"), Some("ready")), "{s:#}");
    assert_eq!((shown["pid"].as_u64(), shown["running"].as_bool()), (Some(first), Some(true)), "{s:#}");
    let text = org.lemming_ok(&["status"]).stdout;
    assert!(text.contains(&format!("server llama: ready (pid {first})")), "{text}");
    let doctor = org.lemming(&["doctor", "--no-call"]).stdout;
    assert!(doctor.contains(&format!("ready (pid {first})")), "{doctor}");
    let answered =
        wait_until(Duration::from_secs(90), || !org.ids("manager", "inbox", "new").contains(&id) && spent(&org) > 0.0);
    assert!(answered, "the manager's call did not go through\n{d}");

    // kill -9: the watcher restarts it after its backoff, and it is ready again.
    let before = spent(&org);
    unsafe { libc::kill(first as libc::pid_t, libc::SIGKILL) };
    let restarted = wait_until(Duration::from_secs(30), || {
        let s = state(&state_file);
        s["state"] == "ready" && s["pid"].as_u64().is_some_and(|p| p != first)
    });
    assert!(restarted, "not restarted within 30 s: {:#}\n{d}", state(&state_file));
    let s = state(&state_file);
    let second = s["pid"].as_u64().unwrap();
    assert!(s["restarts"].as_u64().unwrap() >= 1, "{s:#}");
    assert!(s["last_exit"].as_str().unwrap().contains("signal 9"), "{s:#}");
    assert!(gone(first));
    // Calls go to the new one.
    let id = org.send("manager", "Please reply to the human again.");
    let answered = wait_until(Duration::from_secs(90), || {
        !org.ids("manager", "inbox", "new").contains(&id) && spent(&org) > before
    });
    assert!(answered, "no call went through after the restart\n{d}");

    // `lemming stop`: the server goes with the daemon, no orphan is left.
    org.lemming_ok(&["stop"]);
    let status = d.wait_exit(Duration::from_secs(15)).unwrap_or_else(|| panic!("still running after stop\n{d}"));
    assert_eq!(status.code(), Some(0), "{d}");
    assert!(wait_until(Duration::from_secs(5), || gone(first) && gone(second)), "pid {second} outlived the daemon");
    assert!(servers_on(&program, port).is_empty(), "{:?}", servers_on(&program, port));
    let s = state(&state_file);
    assert_eq!((s["state"].as_str(), s["pid"].as_u64()), (Some("stopped"), None), "{s:#}");
    assert_eq!(org.status_json()["servers"][0]["running"], false);
}

/// A fake model server for the interrupted step: ready at once, and it never
/// answers a completion, so the step is still waiting when it is interrupted.
const HANGING_SERVER: &str = r#"
import http.server, sys, time
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")
    def do_POST(self):
        time.sleep(120)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

#[test]
fn an_interrupted_step_stops_the_server_it_started() {
    let test = "an_interrupted_step_stops_the_server_it_started";
    if !std::process::Command::new("python3").arg("-c").arg("pass").status().is_ok_and(|s| s.success()) {
        return skip(test, "python3");
    }
    let port = free_port();
    let org = TestOrg::new();
    let script = serde_json::to_string(HANGING_SERVER).unwrap();
    configure(
        &org,
        &format!(
            r#"
[providers.slow]
kind = "openai"
base_url = "http://127.0.0.1:{port}/v1"
timeout_secs = 120
max_retries = 0
serve = {{ program = "python3", args = ["-c", {script}, "{port}"], startup_timeout_secs = 30 }}

[models.local]
provider = "slow"
"#
        ),
        "manager",
        "local",
    );
    org.send("manager", "hello");
    let mut step = org.command(&["step"]).stdout(std::process::Stdio::null()).spawn().unwrap();
    let file = org.root.join("org/state/serve/slow.json");
    let started = wait_until(Duration::from_secs(30), || state(&file)["state"] == "ready");
    let pid = state(&file)["pid"].as_u64();
    if !started {
        let _ = step.kill();
    }
    assert!(started, "the step's first call did not start the server: {:#}", state(&file));
    let pid = pid.expect("the ready server's pid");
    // The step now waits for a completion that never comes.
    unsafe { libc::kill(step.id() as i32, libc::SIGINT) };
    let exited = wait_until(Duration::from_secs(20), || step.try_wait().unwrap().is_some());
    if !exited {
        let _ = step.kill();
    }
    assert!(exited, "the step did not end on SIGINT");
    assert_eq!(step.wait().unwrap().code(), Some(130), "interrupted");
    assert!(wait_until(Duration::from_secs(10), || gone(pid)), "the server (pid {pid}) outlived the step");
    assert_eq!(state(&file)["state"], "stopped", "{:#}", state(&file));
}
