//! Running a local program once: what the `command` kind and the engine's
//! tools (`run_command`, custom tools) share.
//!
//! - [`resolve`] finds a program: a path as is, a bare name in lemming's own `PATH`.
//! - [`run`] starts a prepared command in its own process group, writes the
//!   given bytes to its stdin (or gives it `/dev/null`), reads stdout and
//!   stderr at the same time, each kept up to its cap, and kills the whole
//!   group (SIGKILL) at the deadline, when stdout passes its cap (if asked), and
//!   when the run is dropped. A program that writes more than its cap never
//!   blocks on a full pipe: the rest is read and dropped.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

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
        .filter(|d| !program.is_empty() && d.is_absolute())
        .map(|d| d.join(program))
        .find(|p| executable(p))
        .ok_or_else(|| format!("program `{program}` is not in PATH; install it or give its full path"))
}

/// The limits of one run.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// When the whole process group is killed.
    pub timeout: Duration,
    /// The most bytes of stdout kept.
    pub stdout_cap: usize,
    /// The most bytes of stderr kept.
    pub stderr_cap: usize,
    /// Kill the group as soon as stdout passes its cap (else the rest is read and dropped).
    pub kill_on_overflow: bool,
    /// Once the program exits, kill what it left running in its group (so
    /// that nothing it started outlives the run).
    pub kill_leftovers: bool,
}

/// What a run gave.
#[derive(Debug)]
pub struct Ran {
    /// How it ended (`None` when it could not be waited for).
    pub status: Option<ExitStatus>,
    /// Its stdout, at most `stdout_cap` bytes.
    pub stdout: Vec<u8>,
    /// Its stderr, at most `stderr_cap` bytes.
    pub stderr: Vec<u8>,
    /// Whether stdout passed its cap (the rest was dropped).
    pub stdout_over: bool,
    /// Whether stderr passed its cap (the rest was dropped).
    pub stderr_over: bool,
    /// Whether it was killed at the deadline.
    pub timed_out: bool,
}

impl Ran {
    /// How it ended, in words: `exited with status 3`, `was killed by signal 9`.
    pub fn how(&self) -> String {
        use std::os::unix::process::ExitStatusExt;
        match self.status.map(|s| (s.code(), s.signal())) {
            Some((Some(c), _)) => format!("exited with status {c}"),
            Some((None, Some(s))) => format!("was killed by signal {s}"),
            _ => "failed".into(),
        }
    }

    /// Whether it exited with status 0.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
}

/// Kills a process group with SIGKILL when dropped (or when asked).
struct Group(Option<i32>);

impl Group {
    fn kill(&self) {
        if let Some(pid) = self.0.filter(|p| *p > 0) {
            // SAFETY: kill(2) with a negative pid signals the process group we created.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A task aborted when dropped.
struct Task<T>(JoinHandle<T>);

impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a reader kept: the bytes and whether there were more.
type Kept = (Vec<u8>, bool);

/// Reads all of `r`, keeping at most `cap` bytes; `over` is notified once more came.
async fn drain(mut r: impl AsyncRead + Unpin, cap: usize, over: Option<Arc<Notify>>) -> Kept {
    let mut kept = Vec::new();
    let mut more = false;
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return (kept, more),
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&chunk[..n.min(room)]);
                if n > room && !more {
                    more = true;
                    if let Some(o) = &over {
                        o.notify_one();
                    }
                }
            }
        }
    }
}

/// Runs `cmd` (its program, args, environment and folder already set) as
/// [`Limits`] says, with `input` on its stdin (`None`: `/dev/null`). `Err`
/// only when it cannot be started.
pub async fn run(mut cmd: Command, input: Option<Vec<u8>>, limits: Limits) -> io::Result<Ran> {
    let stdin = if input.is_some() { Stdio::piped() } else { Stdio::null() };
    cmd.stdin(stdin).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true).process_group(0);
    let mut child = cmd.spawn()?;
    let group = Group(child.id().and_then(|p| i32::try_from(p).ok()));
    let deadline = Instant::now() + limits.timeout;
    let _writer = match (child.stdin.take(), input) {
        (Some(mut w), Some(bytes)) => Some(Task(tokio::spawn(async move {
            // A program that exits without reading all of its input is fine.
            let _ = w.write_all(&bytes).await;
            let _ = w.shutdown().await;
        }))),
        _ => None,
    };
    let over = Arc::new(Notify::new());
    let out = child.stdout.take().map(|r| {
        let o = limits.kill_on_overflow.then(|| over.clone());
        Task(tokio::spawn(drain(r, limits.stdout_cap, o)))
    });
    let err = child.stderr.take().map(|r| Task(tokio::spawn(drain(r, limits.stderr_cap, None))));

    let mut timed_out = false;
    let mut status = None;
    tokio::select! {
        s = child.wait() => status = s.ok(),
        _ = tokio::time::sleep_until(deadline) => timed_out = true,
        _ = over.notified() => {}
    }
    if status.is_none() || limits.kill_leftovers {
        group.kill();
    }
    // Its output ends when every process holding the pipes is gone; something
    // left running (when leftovers are kept) may hold them until the deadline.
    let collect = |t: Option<Task<Kept>>| async move {
        match t {
            Some(mut t) => (&mut t.0).await.unwrap_or_default(),
            None => Kept::default(),
        }
    };
    let both = async { tokio::join!(collect(out), collect(err)) };
    let ((stdout, stdout_over), (stderr, stderr_over)) =
        match tokio::time::timeout_at(deadline.max(Instant::now() + Duration::from_millis(200)), both).await {
            Ok(both) => both,
            Err(_) => {
                timed_out = true;
                group.kill();
                Default::default()
            }
        };
    if status.is_none() {
        status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await.ok().and_then(Result::ok);
    }
    Ok(Ran { status, stdout, stderr, stdout_over, stderr_over, timed_out })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("/bin/sh");
        c.arg("-c").arg(script);
        c
    }

    fn limits(ms: u64, cap: usize) -> Limits {
        Limits {
            timeout: Duration::from_millis(ms),
            stdout_cap: cap,
            stderr_cap: cap,
            kill_on_overflow: false,
            kill_leftovers: true,
        }
    }

    fn alive(pid: i32) -> bool {
        // SAFETY: signal 0 only checks whether the process exists.
        let exists = unsafe { libc::kill(pid, 0) } == 0;
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
            .unwrap_or(true);
        exists && !zombie
    }

    #[tokio::test]
    async fn stdin_stdout_stderr_and_status() {
        let r = run(sh("cat; echo oops >&2; exit 3"), Some(b"hello".to_vec()), limits(5000, 100)).await.unwrap();
        assert_eq!((r.stdout.as_slice(), r.stderr.as_slice()), (&b"hello"[..], &b"oops\n"[..]));
        assert_eq!(r.how(), "exited with status 3");
        assert!(!r.success() && !r.timed_out && !r.stdout_over);
        // No input: stdin is /dev/null, so `cat` ends at once.
        let r = run(sh("cat; echo done"), None, limits(5000, 100)).await.unwrap();
        assert_eq!(r.stdout, b"done\n");
        assert!(r.success());
    }

    #[tokio::test]
    async fn output_past_the_cap_is_drained_without_blocking_or_kills_when_asked() {
        // 1 MB on both streams, far past a pipe's buffer: the program still finishes.
        let big = "head -c 1000000 /dev/zero; head -c 1000000 /dev/zero >&2; echo end >&2";
        let r = run(sh(big), None, limits(10_000, 1000)).await.unwrap();
        assert!(r.success(), "{}", r.how());
        assert_eq!((r.stdout.len(), r.stderr.len()), (1000, 1000));
        assert!(r.stdout_over && r.stderr_over && !r.timed_out);
        let l = Limits { kill_on_overflow: true, ..limits(10_000, 1000) };
        let t = std::time::Instant::now();
        let r = run(sh("yes"), None, l).await.unwrap();
        assert!(r.stdout_over && !r.timed_out && t.elapsed() < Duration::from_secs(5));
        assert_eq!(r.how(), "was killed by signal 9");
    }

    #[tokio::test]
    async fn the_deadline_and_the_end_kill_the_whole_group() {
        let d = tempfile::tempdir().unwrap();
        let pids = d.path().join("pids");
        let script = format!("sleep 30 & echo $! > {0}; echo $$ >> {0}; wait", pids.display());
        let t = std::time::Instant::now();
        let r = run(sh(&script), None, limits(300, 100)).await.unwrap();
        assert!(r.timed_out && t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        let check = |file: &Path| {
            for pid in std::fs::read_to_string(file).unwrap().lines() {
                let pid: i32 = pid.parse().unwrap();
                let gone = (0..100).any(|_| {
                    std::thread::sleep(Duration::from_millis(10));
                    !alive(pid)
                });
                assert!(gone, "{pid} survived");
            }
        };
        check(&pids);
        // A program that exits leaving a child behind: the child is killed too,
        // and the run does not wait for it although it holds stdout.
        let left = d.path().join("left");
        let script = format!("sleep 30 & echo $! > {}; echo bye", left.display());
        let t = std::time::Instant::now();
        let r = run(sh(&script), None, limits(10_000, 100)).await.unwrap();
        assert!(r.success() && !r.timed_out && t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        assert_eq!(r.stdout, b"bye\n");
        check(&left);
    }

    #[tokio::test]
    async fn a_dropped_run_kills_its_group() {
        let d = tempfile::tempdir().unwrap();
        let pids = d.path().join("pids");
        let script = format!("sleep 30 & echo $! > {0}; echo $$ >> {0}; wait", pids.display());
        let fut = run(sh(&script), None, limits(60_000, 100));
        let _ = tokio::time::timeout(Duration::from_millis(300), fut).await;
        for pid in std::fs::read_to_string(&pids).unwrap().lines() {
            let pid: i32 = pid.parse().unwrap();
            let gone = (0..100).any(|_| {
                std::thread::sleep(Duration::from_millis(10));
                !alive(pid)
            });
            assert!(gone, "{pid} survived the drop");
        }
    }

    #[test]
    fn resolve_finds_names_in_path_and_checks_paths() {
        assert!(resolve("sh").unwrap().is_absolute());
        assert!(resolve("lemming-no-such-program").unwrap_err().contains("not in PATH"));
        assert!(resolve("/nope/prog").unwrap_err().contains("does not exist"));
        assert!(resolve("/etc/passwd").unwrap_err().contains("not an executable"));
        assert!(resolve("").is_err());
    }
}
