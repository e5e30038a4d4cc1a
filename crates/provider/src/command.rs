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

use std::time::Duration;

use crate::program::{self, Limits};
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

/// Finds the program (see [`program::resolve`]).
pub use crate::program::resolve;

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
        let cap = self.spec.max_output_bytes;
        let limits = Limits {
            timeout: self.timeout,
            stdout_cap: usize::try_from(cap).unwrap_or(usize::MAX),
            stderr_cap: STDERR_CAP,
            kill_on_overflow: true,
            // A model program may start a server it reuses (a daemon): it is left running.
            kill_leftovers: false,
        };
        let input = format!("{}\n\n{}", req.system, req.prompt).into_bytes();
        let ran = program::run(cmd, Some(input), limits)
            .await
            .map_err(|e| AttemptError::rejected(format!("cannot start {}: {e}", program.display())))?;
        let stderr = &ran.stderr;
        let shown = program.display();
        let outcome = if ran.timed_out {
            Err(AttemptError::transient(format!(
                "{shown} did not finish within {:.1} s (timeout_secs); killed{}",
                self.timeout.as_secs_f64(),
                tail(stderr)
            )))
        } else if ran.stdout_over {
            Err(AttemptError::broken(format!(
                "{shown} wrote more than {cap} bytes to stdout (max_output_bytes); killed{}",
                tail(stderr)
            )))
        } else if !ran.success() {
            Err(AttemptError::down(format!("{shown} {}{}", ran.how(), tail(stderr))))
        } else {
            Ok(String::from_utf8_lossy(&ran.stdout).into_owned())
        };
        log_stderr(req, stderr, if outcome.is_ok() { "ok" } else { "failed" });
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
    use std::path::Path;

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
            stream: None,
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
