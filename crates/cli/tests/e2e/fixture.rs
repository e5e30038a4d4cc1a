//! The test org: a temp folder written by `lemming init`, and the real binary
//! run on it in a clean environment (modelled on jj's TestEnvironment and
//! ripgrep's TestCommand).

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_lemming");

/// What a finished command left behind.
#[derive(Debug, Clone)]
pub struct Output {
    /// The command line, for failure messages.
    pub command: String,
    pub stdout: String,
    pub stderr: String,
    /// The exit code; `None` when a signal ended the process.
    pub code: Option<i32>,
    /// The signal that ended the process, if any.
    pub signal: Option<i32>,
}

impl Output {
    /// Asserts exit code 0 and returns self.
    #[track_caller]
    pub fn ok(self) -> Output {
        assert_eq!(self.code, Some(0), "expected success\n{self}");
        self
    }

    /// Asserts an exit code and returns self.
    #[track_caller]
    pub fn fails_with(self, code: i32) -> Output {
        assert_eq!(self.code, Some(code), "expected exit code {code}\n{self}");
        self
    }

    /// Asserts that stderr contains every one of `needles`.
    #[track_caller]
    pub fn stderr_has(&self, needles: &[&str]) -> &Output {
        for n in needles {
            assert!(self.stderr.contains(n), "stderr lacks {n:?}\n{self}");
        }
        self
    }

    /// stdout parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e})\n{self}"))
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "$ {}", self.command)?;
        writeln!(f, "exit: {:?} signal: {:?}", self.code, self.signal)?;
        writeln!(f, "--- stdout\n{}", self.stdout)?;
        write!(f, "--- stderr\n{}", self.stderr)
    }
}

/// A command with the environment cleared except PATH and HOME.
pub fn clean_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_clear();
    for key in ["PATH", "HOME"] {
        if let Some(v) = std::env::var_os(key) {
            cmd.env(key, v);
        }
    }
    cmd
}

/// Runs a command to the end and captures its output.
pub fn run(cmd: &mut Command) -> Output {
    let command = format!(
        "{}{}",
        cmd.get_current_dir().map(|d| format!("(cd {}) ", d.display())).unwrap_or_default(),
        std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {command}: {e}"));
    Output {
        command,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code(),
        signal: out.status.signal(),
    }
}

/// A message file's bytes, as an agent (or a test) would write it.
pub fn message_bytes(id: &str, from: &str, to: &str, body: &str) -> Vec<u8> {
    let v = serde_json::json!({
        "id": id, "from": from, "to": to, "subject": null, "body": body, "priority": "normal",
        "reply_to": null, "thread": id, "created_at": "2026-01-01T00:00:00.000Z", "turn": 0,
        "ttl_turns": null, "kind": "message",
    });
    serde_json::to_vec_pretty(&v).unwrap()
}

/// The recipients of a message value (`to` is a string or a list).
pub fn recipients(msg: &Value) -> Vec<String> {
    match &msg["to"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().filter_map(|v| v.as_str().map(String::from)).collect(),
        other => panic!("`to` is neither a string nor a list: {other}"),
    }
}

/// Reads a JSON file.
#[track_caller]
pub fn read_json(path: &Path) -> Value {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Copies a folder tree.
pub fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dst);
        } else {
            fs::copy(e.path(), &dst).unwrap();
        }
    }
}

/// Every file under `dir` with its bytes, keyed by the path relative to `dir`.
pub fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let rel = e.path().strip_prefix(base).unwrap().to_string_lossy().into_owned();
            if e.file_type().unwrap().is_dir() {
                out.insert(format!("{rel}/"), Vec::new());
                walk(base, &e.path(), out);
            } else {
                out.insert(rel, fs::read(e.path()).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// An org in a temp folder.
pub struct TestOrg {
    /// Holds the org (`<tmp>/org`) and room for other folders beside it.
    pub tmp: TempDir,
    /// The org root.
    pub root: PathBuf,
}

impl TestOrg {
    /// A fresh default org, written by `lemming init`.
    pub fn new() -> TestOrg {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("org");
        run(clean_command(&["init", root.to_str().unwrap()]).current_dir(tmp.path())).ok();
        TestOrg { tmp, root }
    }

    /// An org copied from a folder (a sample config).
    pub fn copy_of(src: &Path) -> TestOrg {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("org");
        copy_tree(src, &root);
        TestOrg { tmp, root }
    }

    /// The binary with a clean environment, `LEMMING_ORG` set to this org, run from its root.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = clean_command(args);
        cmd.env("LEMMING_ORG", &self.root).current_dir(&self.root);
        cmd
    }

    /// Runs `lemming ARGS` on this org.
    pub fn lemming(&self, args: &[&str]) -> Output {
        run(&mut self.command(args))
    }

    /// Runs `lemming ARGS` and asserts it succeeds.
    #[track_caller]
    pub fn lemming_ok(&self, args: &[&str]) -> Output {
        self.lemming(args).ok()
    }

    /// `lemming send TO BODY`: returns the id it prints.
    #[track_caller]
    pub fn send(&self, to: &str, body: &str) -> String {
        self.send_from("human", to, body)
    }

    /// `lemming send --from FROM TO BODY`: returns the id it prints.
    #[track_caller]
    pub fn send_from(&self, from: &str, to: &str, body: &str) -> String {
        let out = self.lemming_ok(&["send", "--from", from, to, body]);
        let id = out.stdout.trim().to_string();
        assert!(!id.is_empty() && !id.contains(char::is_whitespace), "send printed no id\n{out}");
        id
    }

    /// `lemming step --json`: the report of the one turn it ran.
    #[track_caller]
    pub fn step(&self) -> Value {
        let out = self.lemming_ok(&["--json", "step"]);
        let reports = out.json();
        let reports = reports.as_array().unwrap_or_else(|| panic!("step --json gave no list\n{out}"));
        assert_eq!(reports.len(), 1, "one step, one report\n{out}");
        reports[0].clone()
    }

    /// A path inside the org.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Reads a text file of the org.
    #[track_caller]
    pub fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
    }

    /// The last good resume of `agent` that the process running turns saved
    /// (`org/state/last-good/agents.json`), if any.
    pub fn last_good_resume(&self, agent: &str) -> Option<String> {
        let text = fs::read_to_string(self.path("org/state/last-good/agents.json")).ok()?;
        let mut all: std::collections::BTreeMap<String, String> = serde_json::from_str(&text).ok()?;
        all.remove(agent)
    }

    /// Writes a file of the org (creating its folder).
    pub fn write(&self, rel: &str, bytes: impl AsRef<[u8]>) {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, bytes).unwrap();
    }

    /// Replaces `from` by `to` in a file of the org; `from` must be there.
    #[track_caller]
    pub fn edit(&self, rel: &str, from: &str, to: &str) {
        let text = self.read(rel);
        assert!(text.contains(from), "{rel} has no {from:?} to replace");
        self.write(rel, text.replacen(from, to, 1));
    }

    /// Writes or replaces an agent's resume.
    pub fn agent(&self, name: &str, resume: &str) {
        self.write(&format!("agents/{name}/resume.toml"), resume);
    }

    /// Puts a raw file into an agent's `outbox/new/`, as the agent itself would.
    pub fn drop_outbox(&self, agent: &str, file_name: &str, bytes: impl AsRef<[u8]>) {
        self.write(&format!("agents/{agent}/outbox/new/{file_name}"), bytes);
    }

    /// Gives `agent` the model key `scripted`, answered by the script provider from `script` (TOML).
    pub fn script(&self, agent: &str, script: &str) {
        let models = self.read("org/models.toml");
        if !models.contains("[providers.s]") {
            self.write(
                "org/models.toml",
                format!("{models}\n[providers.s]\nkind = \"script\"\nscript = \"org/script.toml\"\n\n[models.scripted]\nprovider = \"s\"\n"),
            );
        }
        self.write("org/script.toml", script);
        self.edit(&format!("agents/{agent}/resume.toml"), "model = \"default\"", "model = \"scripted\"");
    }

    /// `lemming inbox AGENT --json --peek`: unread mail, nothing marked read.
    #[track_caller]
    pub fn inbox_json(&self, agent: &str) -> Vec<Value> {
        let out = self.lemming_ok(&["inbox", agent, "--json", "--peek"]);
        out.json().as_array().cloned().unwrap_or_else(|| panic!("inbox --json gave no list\n{out}"))
    }

    /// `lemming status --json`.
    #[track_caller]
    pub fn status_json(&self) -> Value {
        self.lemming_ok(&["status", "--json"]).json()
    }

    /// One agent's line of `status --json`.
    #[track_caller]
    pub fn agent_status(&self, name: &str) -> Value {
        let s = self.status_json();
        s["agents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("status has no agent {name}: {s:#}"))
    }

    /// The names of the files in a folder of the org, sorted (empty when it is missing).
    pub fn files(&self, rel: &str) -> Vec<String> {
        let mut out: Vec<String> = fs::read_dir(self.path(rel))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        out.sort();
        out
    }

    /// The message ids (file stems) in `agents/<agent>/<mailbox>/<sub>/`.
    pub fn ids(&self, agent: &str, mailbox: &str, sub: &str) -> Vec<String> {
        self.files(&format!("agents/{agent}/{mailbox}/{sub}"))
            .into_iter()
            .filter_map(|f| f.strip_suffix(".json").map(String::from))
            .collect()
    }

    /// The agent folders.
    pub fn agent_folders(&self) -> Vec<String> {
        let mut out: Vec<String> = fs::read_dir(self.path("agents"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        out.sort();
        out
    }

    /// Every line of `org/state/ledger.jsonl`, parsed.
    #[track_caller]
    pub fn ledger(&self) -> Vec<Value> {
        let text = fs::read_to_string(self.path("org/state/ledger.jsonl")).unwrap_or_default();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("ledger line {l:?} is not JSON: {e}")))
            .collect()
    }

    /// Dead letters: id → the parsed `<id>.why.json`.
    pub fn dead(&self) -> BTreeMap<String, Value> {
        self.files("org/state/dead")
            .into_iter()
            .filter_map(|f| f.strip_suffix(".why.json").map(String::from))
            .map(|id| {
                let why = read_json(&self.path(&format!("org/state/dead/{id}.why.json")));
                (id, why)
            })
            .collect()
    }

    /// The activity log of an agent, parsed.
    pub fn activity(&self, agent: &str) -> Vec<Value> {
        let text = fs::read_to_string(self.path(&format!("agents/{agent}/logs/activity.jsonl"))).unwrap_or_default();
        text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// An agent's starting credits as written in its resume (`[budget] credits`, default 100).
    pub fn resume_credits(&self, agent: &str) -> f64 {
        let text = self.read(&format!("agents/{agent}/resume.toml"));
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix("credits").and_then(|r| r.trim_start().strip_prefix('=')))
            .map(|v| v.trim().parse().unwrap_or_else(|e| panic!("{agent}'s credits {v:?}: {e}")))
            .unwrap_or(100.0)
    }

    /// Checks G5 from the files alone: no (turn, agent) is charged twice, and for
    /// every agent the resume budget + top-ups − charges equals `credits.left` in status.
    #[track_caller]
    pub fn assert_ledger_balances(&self) {
        let mut charged = std::collections::BTreeSet::new();
        let mut delta: BTreeMap<String, f64> = BTreeMap::new();
        for e in self.ledger() {
            let agent = e["agent"].as_str().unwrap().to_string();
            match e["kind"].as_str() {
                Some("charge") => {
                    let key = (e["turn"].as_u64().unwrap(), agent.clone());
                    assert!(charged.insert(key.clone()), "(turn, agent) {key:?} is charged twice in the ledger");
                    *delta.entry(agent).or_default() -= e["cost"].as_f64().unwrap();
                }
                Some("top_up") => *delta.entry(agent).or_default() += e["amount"].as_f64().unwrap(),
                other => panic!("unknown ledger entry kind {other:?}: {e}"),
            }
        }
        let status = self.status_json();
        for a in status["agents"].as_array().unwrap() {
            let name = a["name"].as_str().unwrap();
            let expected = self.resume_credits(name) + delta.get(name).copied().unwrap_or(0.0);
            let left = a["credits"]["left"].as_f64().unwrap();
            assert!((expected - left).abs() < 1e-9, "{name}: ledger says {expected} left, status says {left}");
        }
    }
}

/// Polls `cond` every 2 ms until it holds or `timeout` has passed; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The last committed turn of the org at `root` (`org/state/turn.json`; 0 before the first).
pub fn committed_turn(root: &Path) -> u64 {
    fs::read(root.join("org/state/turn.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v["turn"].as_u64())
        .unwrap_or(0)
}

/// `lemming run` as a child process, its stdout and stderr going to a file.
/// Dropping it kills the process (SIGKILL) and reaps it, so no test leaves a daemon behind.
pub struct Daemon {
    child: Child,
    /// Its pid.
    pub pid: u32,
    /// The command line, for failure messages.
    pub command: String,
    root: PathBuf,
    log: PathBuf,
    /// The turn that was committed when it started.
    pub start_turn: u64,
    /// Its exit status once it has been reaped (after which it is never signalled).
    status: Option<ExitStatus>,
}

impl Daemon {
    /// What it printed so far (stdout and stderr).
    pub fn output(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its exit status, if it has exited (reaps it).
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().unwrap_or_else(|e| panic!("cannot wait for {}: {e}", self.pid));
        }
        self.status
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.try_exit().is_none()
    }

    /// Waits up to `timeout` for it to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_until(timeout, || self.try_exit().is_some());
        self.status
    }

    /// Sends a signal, unless it has already been reaped (its pid may then be someone else's).
    pub fn signal(&mut self, sig: i32) {
        if self.try_exit().is_none() {
            // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child.
            let rc = unsafe { libc::kill(self.pid as i32, sig) };
            assert_eq!(rc, 0, "cannot send signal {sig} to {}: {}", self.pid, std::io::Error::last_os_error());
        }
    }

    /// Kills it with SIGKILL and reaps it; returns how it ended (it may have exited first).
    pub fn kill9(&mut self) -> ExitStatus {
        self.signal(libc::SIGKILL);
        let status = self.child.wait().unwrap_or_else(|e| panic!("cannot wait for {}: {e}", self.pid));
        *self.status.get_or_insert(status)
    }

    /// Waits (up to 20 s) until `org/state/daemon.json` names it and it has committed
    /// its first turn; panics with its output if it exits or takes too long.
    #[track_caller]
    pub fn wait_ready(&mut self) {
        let daemon_json = self.root.join("org/state/daemon.json");
        let named = |pid| {
            fs::read(&daemon_json)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .is_some_and(|v| v["pid"].as_u64() == Some(u64::from(pid)))
        };
        let ready = wait_until(Duration::from_secs(20), || {
            !self.is_running() || (named(self.pid) && committed_turn(&self.root) > self.start_turn)
        });
        assert!(ready && self.is_running(), "the daemon did not become ready (first turn committed)\n{self}");
    }

    /// Asserts that it is still running.
    #[track_caller]
    pub fn assert_running(&mut self, context: &str) {
        assert!(self.is_running(), "{context}: the daemon is gone\n{self}");
    }
}

impl fmt::Display for Daemon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "$ {} (pid {})", self.command, self.pid)?;
        writeln!(f, "status: {:?}", self.status)?;
        write!(f, "--- output\n{}", self.output())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl TestOrg {
    /// Starts `lemming run ARGS` on this org in the background.
    pub fn spawn_run(&self, args: &[&str]) -> Daemon {
        self.spawn_run_env(args, &[])
    }

    /// Starts `lemming run ARGS` with extra environment variables.
    pub fn spawn_run_env(&self, args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Daemon {
        static LOGS: AtomicUsize = AtomicUsize::new(0);
        let log = self.tmp.path().join(format!("run-{}.log", LOGS.fetch_add(1, Ordering::Relaxed)));
        let out = fs::File::create(&log).unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let err = out.try_clone().unwrap();
        let argv: Vec<&str> = std::iter::once("run").chain(args.iter().copied()).collect();
        let mut cmd = self.command(&argv);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let start_turn = committed_turn(&self.root);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start lemming {}: {e}", argv.join(" ")));
        Daemon {
            pid: child.id(),
            child,
            command: format!("lemming {}", argv.join(" ")),
            root: self.root.clone(),
            log,
            start_turn,
            status: None,
        }
    }

    /// The last committed turn.
    pub fn turn(&self) -> u64 {
        committed_turn(&self.root)
    }

    /// Puts a message file into an agent's `outbox/new/` as an agent must (G2):
    /// written to `outbox/tmp/` and renamed into place, so that a running daemon
    /// never reads it half-written.
    pub fn post_outbox(&self, agent: &str, id: &str, bytes: impl AsRef<[u8]>) {
        let tmp = self.path(&format!("agents/{agent}/outbox/tmp/{id}.json.{}.tmp", std::process::id()));
        fs::create_dir_all(tmp.parent().unwrap()).unwrap();
        fs::create_dir_all(self.path(&format!("agents/{agent}/outbox/new"))).unwrap();
        fs::write(&tmp, bytes).unwrap();
        fs::rename(&tmp, self.path(&format!("agents/{agent}/outbox/new/{id}.json"))).unwrap();
    }

    /// Points the `default` model key at a mock provider that sleeps `ms` before each reply.
    pub fn mock_latency(&self, ms: u64) {
        self.edit("org/models.toml", "provider = \"mock\"", "provider = \"slow\"");
        let models = self.read("org/models.toml");
        self.write("org/models.toml", format!("{models}\n[providers.slow]\nkind = \"mock\"\nlatency_ms = {ms}\n"));
    }
}

/// The `failed` list of a step report as a map: agent → why.
pub fn failed_agents(report: &Value) -> std::collections::BTreeMap<String, String> {
    report["failed"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| Some((f[0].as_str()?.to_string(), f[1].as_str()?.to_string())))
        .collect()
}
