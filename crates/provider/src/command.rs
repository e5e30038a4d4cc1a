//! The `command` kind: runs a local program once per call.
//!
//! - The program and its fixed `args` come from the config; the prompt (system
//!   part, a blank line, user part) is written to its **stdin** and never put
//!   in argv, so no text from a message can become an option or reach a shell.
//! - The reply is its stdout, at most `max_output_bytes` (more is a failed call).
//! - It runs in the agent's `workspace/` (created if missing), with an
//!   environment that holds only the variables named in `env` (default:
//!   `PATH`) plus `LEMMING_AGENT`, `LEMMING_TURN` and `LEMMING_MODEL`.
//! - It runs in its own process group. After `timeout_secs` the whole group is
//!   killed (SIGKILL) and the call fails; dropping the call kills it too.
//! - stderr is appended to the agent's `logs/command-stderr.log`, and its last
//!   lines are part of the error when the call fails. A non-zero exit status
//!   is a failed call. Token usage is estimated (ceil(chars / 4)).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::resilience::{Attempt, AttemptError};
use crate::{BoxFuture, CommandSpec, Reply, Request, Usage};

/// The most stderr kept per call, in bytes (the rest is read and dropped).
pub const STDERR_CAP: usize = 64 * 1024;

/// The `command` kind.
pub struct Command {
    name: String,
    spec: CommandSpec,
    timeout: Duration,
}

impl Command {
    /// A provider that runs `spec`, killing it after `timeout`.
    pub fn new(name: &str, spec: CommandSpec, timeout: Duration) -> Command {
        Command { name: name.to_string(), spec, timeout }
    }
}

/// Finds the program: a path is taken as is, a bare name is looked up in
/// lemming's own `PATH` (the child's environment is cleared, so it is not used).
pub fn resolve(program: &str) -> Result<PathBuf, String> {
    let executable = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return if executable(&p) {
            Ok(p)
        } else if p.exists() {
            Err(format!("program {} is not an executable file (chmod +x?)", p.display()))
        } else {
            Err(format!("program {} does not exist", p.display()))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| executable(p))
        .ok_or_else(|| format!("program `{program}` is not in PATH; install it or give its full path"))
}

/// Reads all of `r`, keeping at most `cap` bytes.
async fn drain(mut r: impl AsyncRead + Unpin, cap: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&chunk[..n.min(room)]);
            }
        }
    }
}

/// The last few lines of stderr, for an error message.
fn tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim();
    if text.is_empty() {
        return String::new();
    }
    let start = text.char_indices().rev().nth(299).map(|(i, _)| i).unwrap_or(0);
    format!("; stderr: {}", text[start..].split_whitespace().collect::<Vec<_>>().join(" "))
}

fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: kill(2) with a negative pid signals the process group we created.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

fn log_stderr(req: &Request, stderr: &[u8], outcome: &str) {
    if stderr.is_empty() {
        return;
    }
    let Some(dir) = req.agent_dir.as_ref().map(|d| d.join("logs")) else { return };
    let header = format!(
        "--- turn {} agent {} model {} at {}: {outcome}\n",
        req.turn,
        req.agent,
        req.model.key,
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    );
    let mut text = header.into_bytes();
    text.extend_from_slice(stderr);
    if !text.ends_with(b"\n") {
        text.push(b'\n');
    }
    let written = std::fs::create_dir_all(&dir).and_then(|_| {
        use std::io::Write;
        std::fs::OpenOptions::new().create(true).append(true).open(dir.join("command-stderr.log"))?.write_all(&text)
    });
    if let Err(e) = written {
        tracing::warn!(agent = %req.agent, error = %e, "cannot append to the agent's command-stderr.log");
    }
}

/// Why a run gave no reply: its output is unusable, or the program failed.
enum Unusable {
    Output(String),
    Program(String),
}

impl Command {
    async fn run(&self, req: &Request) -> Result<Reply, AttemptError> {
        let program = resolve(&self.spec.program).map_err(AttemptError::rejected)?;
        let workspace = req.agent_dir.as_ref().map(|d| d.join("workspace"));
        let mut cmd = tokio::process::Command::new(&program);
        cmd.args(&self.spec.args).env_clear();
        for var in &self.spec.env {
            if let Some(v) = std::env::var_os(var) {
                cmd.env(var, v);
            }
        }
        cmd.env("LEMMING_AGENT", &req.agent)
            .env("LEMMING_TURN", req.turn.to_string())
            .env("LEMMING_MODEL", req.model.wire_name());
        if let Some(w) = &workspace {
            std::fs::create_dir_all(w)
                .map_err(|e| AttemptError::rejected(format!("cannot create the workspace {}: {e}", w.display())))?;
            cmd.current_dir(w);
        }
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true).process_group(0);
        let mut child =
            cmd.spawn().map_err(|e| AttemptError::rejected(format!("cannot start {}: {e}", program.display())))?;
        let pid = child.id();
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            kill_group(pid);
            return Err(AttemptError::down("the program's pipes could not be opened"));
        };
        let input = format!("{}\n\n{}", req.system, req.prompt);
        tokio::spawn(async move {
            // A program that exits without reading all of its input is fine.
            let _ = stdin.write_all(input.as_bytes()).await;
            let _ = stdin.shutdown().await;
        });
        let errors = tokio::spawn(drain(stderr, STDERR_CAP));
        let cap = self.spec.max_output_bytes;

        let work = async {
            let mut out = Vec::new();
            let read = stdout.take(cap.saturating_add(1)).read_to_end(&mut out).await;
            if out.len() as u64 > cap {
                return Err(Unusable::Output(format!(
                    "wrote more than {cap} bytes to stdout (max_output_bytes); killed"
                )));
            }
            read.map_err(|e| Unusable::Program(format!("cannot read its stdout: {e}")))?;
            let status = child.wait().await.map_err(|e| Unusable::Program(format!("cannot wait for it: {e}")))?;
            Ok((out, status))
        };
        let result = tokio::time::timeout(self.timeout, work).await;
        let failed = match &result {
            Ok(Ok((_, status))) => !status.success(),
            _ => true,
        };
        if failed {
            kill_group(pid);
        }
        let stderr =
            tokio::time::timeout(Duration::from_secs(1), errors).await.ok().and_then(Result::ok).unwrap_or_default();
        let shown = program.display();
        let outcome = match result {
            Err(_) => Err(AttemptError::transient(format!(
                "{shown} did not finish within {:.1} s (timeout_secs); killed{}",
                self.timeout.as_secs_f64(),
                tail(&stderr)
            ))),
            Ok(Err(Unusable::Output(why))) => Err(AttemptError::broken(format!("{shown} {why}{}", tail(&stderr)))),
            Ok(Err(Unusable::Program(why))) => Err(AttemptError::down(format!("{shown} {why}{}", tail(&stderr)))),
            Ok(Ok((_, status))) if !status.success() => {
                use std::os::unix::process::ExitStatusExt;
                let how = match (status.code(), status.signal()) {
                    (Some(c), _) => format!("exited with status {c}"),
                    (None, Some(s)) => format!("was killed by signal {s}"),
                    _ => "failed".into(),
                };
                Err(AttemptError::down(format!("{shown} {how}{}", tail(&stderr))))
            }
            Ok(Ok((out, _))) => Ok(String::from_utf8_lossy(&out).into_owned()),
        };
        log_stderr(req, &stderr, if outcome.is_ok() { "ok" } else { "failed" });
        let text = outcome?;
        let usage = Usage::estimate(req.prompt_chars(), text.chars().count());
        tracing::debug!(provider = %self.name, agent = %req.agent, bytes = text.len(), "the program answered");
        Ok(Reply { text, usage, model_key: req.model.key.clone(), finish: None, tool_calls: vec![] })
    }
}

impl Attempt for Command {
    fn attempt<'a>(&'a self, req: &'a Request) -> BoxFuture<'a, Result<Reply, AttemptError>> {
        Box::pin(self.run(req))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::ModelSpec;

    fn script(dir: &Path, name: &str, body: &str) -> String {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p.to_string_lossy().into_owned()
    }

    fn provider(program: String, args: &[&str], cap: u64, timeout_ms: u64) -> Command {
        let spec = CommandSpec {
            program,
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec!["PATH".into()],
            max_output_bytes: cap,
        };
        Command::new("cmd", spec, Duration::from_millis(timeout_ms))
    }

    fn req(dir: &Path, prompt: &str) -> Request {
        Request {
            agent: "manager".into(),
            turn: 4,
            system: "SYSTEM".into(),
            prompt: prompt.into(),
            mail: vec![],
            may_send_to: vec![],
            model: ModelSpec { model: Some("tiny".into()), ..ModelSpec::new("k", "cmd") },
            agent_dir: Some(dir.join("agents/manager")),
            tools: vec![],
        }
    }

    #[tokio::test]
    async fn stdin_in_stdout_out_in_the_workspace_with_a_clean_environment() {
        let d = tempfile::tempdir().unwrap();
        let p = script(
            d.path(),
            "echo.sh",
            "cat > stdin.txt; printf '%s\\n' \"$@\" > args.txt; env > env.txt; echo err-line >&2; cat stdin.txt",
        );
        let tricky = "-rf --help $(touch pwned) `id` ; rm -rf / | cat & \"quoted' \\ *";
        std::env::set_var("LEMMING_TEST_SECRET_FOR_COMMAND", "hidden");
        let reply =
            provider(p, &["--fixed", "two words"], 1 << 20, 10_000).attempt(&req(d.path(), tricky)).await.unwrap();
        let ws = d.path().join("agents/manager/workspace");
        assert_eq!(reply.text, format!("SYSTEM\n\n{tricky}"));
        assert!(reply.usage.estimated);
        assert_eq!(std::fs::read_to_string(ws.join("stdin.txt")).unwrap(), format!("SYSTEM\n\n{tricky}"));
        assert_eq!(std::fs::read_to_string(ws.join("args.txt")).unwrap(), "--fixed\ntwo words\n");
        assert!(!ws.join("pwned").exists() && !d.path().join("pwned").exists());
        let env = std::fs::read_to_string(ws.join("env.txt")).unwrap();
        assert!(env.contains("LEMMING_AGENT=manager") && env.contains("LEMMING_MODEL=tiny") && env.contains("PATH="));
        assert!(!env.contains("LEMMING_TEST_SECRET_FOR_COMMAND"), "{env}");
        let log = std::fs::read_to_string(d.path().join("agents/manager/logs/command-stderr.log")).unwrap();
        assert!(log.contains("turn 4 agent manager") && log.contains("err-line"), "{log}");
    }

    #[tokio::test]
    async fn a_sleeper_is_killed_at_the_timeout_with_its_children() {
        let d = tempfile::tempdir().unwrap();
        let p = script(d.path(), "sleep.sh", "sleep 30 & echo $! > child.pid; echo $$ > pid; wait");
        let t = Instant::now();
        let e = provider(p, &[], 1 << 20, 300).attempt(&req(d.path(), "x")).await.unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert!(e.message.contains("did not finish within 0.3 s") && e.message.contains("killed"), "{e:?}");
        assert_eq!(e.retry, crate::resilience::Retry::Backoff);
        let ws = d.path().join("agents/manager/workspace");
        for f in ["pid", "child.pid"] {
            let pid: i32 = std::fs::read_to_string(ws.join(f)).unwrap().trim().parse().unwrap();
            let mut alive = true;
            for _ in 0..50 {
                // SAFETY: signal 0 only checks whether the process exists.
                alive = unsafe { libc::kill(pid, 0) } == 0 && !zombie(pid);
                if !alive {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            assert!(!alive, "{f} ({pid}) survived the timeout");
        }
    }

    fn zombie(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
            .unwrap_or(true)
    }

    #[tokio::test]
    async fn non_zero_exit_output_cap_and_missing_programs_fail_clearly() {
        let d = tempfile::tempdir().unwrap();
        let p = script(d.path(), "fail.sh", "echo 'model not found' >&2; exit 3");
        let e = provider(p, &[], 100, 5_000).attempt(&req(d.path(), "x")).await.unwrap_err();
        assert!(e.message.contains("exited with status 3") && e.message.contains("model not found"), "{e:?}");

        let p = script(d.path(), "big.sh", "yes 0123456789");
        let e = provider(p, &[], 1000, 5_000).attempt(&req(d.path(), "x")).await.unwrap_err();
        assert!(e.message.contains("more than 1000 bytes"), "{e:?}");

        let e =
            provider("no-such-program-lemming".into(), &[], 100, 5_000).attempt(&req(d.path(), "x")).await.unwrap_err();
        assert!(e.message.contains("not in PATH") && !e.unhealthy, "{e:?}");
        let e = provider("/nope/prog".into(), &[], 100, 5_000).attempt(&req(d.path(), "x")).await.unwrap_err();
        assert!(e.message.contains("does not exist"), "{e:?}");
    }

    #[tokio::test]
    async fn a_crash_is_the_provider_being_down_and_too_much_output_is_an_unusable_reply() {
        use crate::Cause;
        let d = tempfile::tempdir().unwrap();
        let p = script(d.path(), "fail.sh", "exit 3");
        assert_eq!(
            provider(p, &[], 100, 5_000).attempt(&req(d.path(), "x")).await.unwrap_err().cause,
            Cause::Unavailable
        );
        let p = script(d.path(), "big.sh", "yes 0123456789");
        assert_eq!(provider(p, &[], 1000, 5_000).attempt(&req(d.path(), "x")).await.unwrap_err().cause, Cause::Reply);
        let p = script(d.path(), "slow.sh", "exec sleep 5");
        assert_eq!(
            provider(p, &[], 100, 200).attempt(&req(d.path(), "x")).await.unwrap_err().cause,
            Cause::Unavailable
        );
        let e = provider("/nope/prog".into(), &[], 100, 5_000).attempt(&req(d.path(), "x")).await.unwrap_err();
        assert_eq!(e.cause, Cause::Refused);
    }

    #[tokio::test]
    async fn a_program_that_never_reads_a_large_prompt_still_answers() {
        // lemming ignores SIGPIPE (the Rust default; the binary keeps it so): writing to a
        // program that has exited is that write's error, not the end of the process.
        let d = tempfile::tempdir().unwrap();
        let p = script(d.path(), "deaf.sh", "echo '{\"messages\":[]}'");
        let big = "x".repeat(300 * 1024);
        for _ in 0..5 {
            let reply = provider(p.clone(), &[], 1 << 20, 5_000).attempt(&req(d.path(), &big)).await.unwrap();
            assert_eq!(reply.text.trim(), "{\"messages\":[]}");
        }
    }
}
