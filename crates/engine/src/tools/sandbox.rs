//! The OS sandbox that programs (`run_command`, custom tools) run in:
//! bubblewrap when `bwrap` works, else Landlock, else none (refused unless
//! org.toml says `sandbox = "none"`).
//!
//! - [`Sandbox::for_mode`] picks the sandbox for org.toml's `sandbox`; whether
//!   `bwrap` works and which Landlock ABI the kernel has are found out once per
//!   process.
//! - [`Sandbox::run`] runs one program in it: in the agent's workspace (the
//!   only place it may write), with only the allowed environment variables, a
//!   closed stdin or the given bytes, a timeout that kills everything it
//!   started, and an output cap (through [`lemming_provider::program`]).
//! - [`Sandbox::describe`] says what it confines, for `lemming doctor`.
//!
//! bubblewrap: a read-only view of `/`, a private `/dev`, `/proc` and `/tmp`,
//! the workspace bound writable, and new namespaces for everything (no network
//! but a loopback of its own, its own pid namespace, so that nothing it starts
//! outlives it). Landlock: the filesystem read-only except the workspace (and
//! `/dev/null`), TCP bind and connect refused from ABI 4, abstract unix
//! sockets and signals to processes outside refused from ABI 6, UDP from
//! ABI 10; it has no pid namespace (the process group is killed instead).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use lemming_provider::program::{self, Limits, Ran};
use serde::Serialize;

use crate::settings::SandboxMode;

/// The sandbox programs run in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sandbox {
    /// bubblewrap, found and working.
    Bwrap {
        /// The `bwrap` program.
        path: PathBuf,
        /// What `bwrap --version` says (`bubblewrap 0.8.0`).
        version: String,
    },
    /// Landlock, at the kernel's ABI version (1 or more).
    Landlock {
        /// The kernel's Landlock ABI version.
        abi: u32,
    },
    /// No OS sandbox (`sandbox = "none"`).
    None,
}

/// One program to run in a sandbox.
#[derive(Debug, Clone)]
pub struct Job<'a> {
    /// The program, resolved (an absolute path).
    pub program: &'a Path,
    /// Its arguments.
    pub args: &'a [String],
    /// The agent's workspace: its folder and the only place it may write.
    pub workspace: &'a Path,
    /// The org's folder: under bubblewrap, the program sees none of it but
    /// the workspace (not the other agents' files, mail, memory or journal).
    pub org: &'a Path,
    /// The names of the environment variables it may see (those set in
    /// lemming's environment are passed; all others are cleared).
    pub env: &'a [String],
    /// Bytes for its stdin (`None`: stdin is closed, `/dev/null`).
    pub stdin: Option<Vec<u8>>,
    /// When it and everything it started are killed.
    pub timeout: Duration,
    /// The most bytes of stdout and stderr together that are kept.
    pub max_output: usize,
}

/// What a program gave.
#[derive(Debug)]
pub struct Output {
    /// How it ran (status, whether it timed out).
    pub ran: Ran,
    /// Its stdout, as text, cut so that stdout and stderr together fit the cap.
    pub stdout: String,
    /// Its stderr, likewise.
    pub stderr: String,
    /// Whether anything was cut.
    pub truncated: bool,
}

/// How long finding out whether `bwrap` works may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The namespaces and mounts of a bubblewrap sandbox, before the workspace.
const BWRAP_BASE: [&str; 11] = [
    "--ro-bind",
    "/",
    "/",
    "--dev",
    "/dev",
    "--proc",
    "/proc",
    "--tmpfs",
    "/tmp",
    "--unshare-all",
    "--die-with-parent",
];

impl Sandbox {
    /// The sandbox for org.toml's `sandbox`, or why programs must be refused.
    pub fn for_mode(mode: SandboxMode) -> Result<Sandbox, String> {
        choose(mode, bwrap, landlock)
    }

    /// bubblewrap at `path`, if it works here (checked each time it is called).
    pub fn bwrap_at(path: &Path) -> Result<Sandbox, String> {
        let shown = path.display();
        let version = brief(std::process::Command::new(path).arg("--version"))
            .and_then(|o| match o.status.success() {
                true => Ok(String::from_utf8_lossy(&o.stdout).trim().to_string()),
                false => Err(format!("`--version` failed ({})", o.status)),
            })
            .map_err(|e| format!("bwrap at {shown} does not run: {e}"))?;
        let mut probe = std::process::Command::new(path);
        probe.args(BWRAP_BASE).args(["--new-session", "--", "true"]);
        let out = brief(&mut probe).map_err(|e| format!("bwrap at {shown} does not run: {e}"))?;
        if !out.status.success() {
            let why = String::from_utf8_lossy(&out.stderr).split_whitespace().collect::<Vec<_>>().join(" ");
            return Err(format!(
                "bwrap at {shown} cannot make a sandbox here ({}: {})",
                out.status,
                crate::term::line(&why.chars().take(300).collect::<String>())
            ));
        }
        Ok(Sandbox::Bwrap { path: path.to_path_buf(), version })
    }

    /// Its name, as org.toml's `sandbox` writes it.
    pub fn kind(&self) -> &'static str {
        match self {
            Sandbox::Bwrap { .. } => "bwrap",
            Sandbox::Landlock { .. } => "landlock",
            Sandbox::None => "none",
        }
    }

    /// What it confines, in one line.
    pub fn describe(&self) -> String {
        match self {
            Sandbox::Bwrap { path, version } => format!(
                "{version} at {} (read-only root, writable workspace, private /tmp, no network, own pid namespace)",
                path.display()
            ),
            Sandbox::Landlock { abi } => {
                let mut blocked = vec!["writes outside the workspace"];
                let mut open = Vec::new();
                if *abi >= 4 {
                    blocked.push("TCP")
                } else {
                    open.push("TCP")
                }
                if *abi >= 6 {
                    blocked.push("abstract unix sockets, signals to other processes");
                } else {
                    open.push("abstract unix sockets, signals");
                }
                if *abi >= 9 {
                    blocked.push("unix sockets by path outside the workspace")
                } else {
                    open.push("unix sockets by path")
                }
                if *abi >= 10 {
                    blocked.push("UDP")
                } else {
                    open.push("UDP")
                }
                format!(
                    "Landlock ABI {abi} (refused: {}; not blocked at this ABI: {}; no pid namespace: the process group is killed)",
                    blocked.join(", "),
                    if open.is_empty() { "nothing".to_string() } else { open.join(", ") }
                )
            }
            Sandbox::None => "none: programs run unconfined, with lemming's own rights (sandbox = \"none\")".into(),
        }
    }

    /// Runs one program in the sandbox. `Err` when it cannot be started.
    pub async fn run(&self, job: Job<'_>) -> Result<Output, String> {
        std::fs::create_dir_all(job.workspace)
            .map_err(|e| format!("cannot create the workspace {}: {e}", job.workspace.display()))?;
        let ws = job
            .workspace
            .canonicalize()
            .map_err(|e| format!("cannot open the workspace {}: {e}", job.workspace.display()))?;
        let mut cmd = match self {
            Sandbox::Bwrap { path, .. } => {
                let mut c = tokio::process::Command::new(path);
                c.args(BWRAP_BASE);
                // The org is hidden under an empty folder (under /tmp, the private /tmp hides it).
                let org = job.org.canonicalize().unwrap_or_else(|_| job.org.to_path_buf());
                if !org.starts_with("/tmp") {
                    c.arg("--tmpfs").arg(&org);
                }
                // A program in the org or under /tmp would be hidden with them.
                if job.program.starts_with("/tmp") || job.program.starts_with(&org) || job.program.starts_with(job.org)
                {
                    c.arg("--ro-bind").arg(job.program).arg(job.program);
                }
                c.arg("--bind").arg(&ws).arg(&ws).arg("--new-session").arg("--chdir").arg(&ws).arg("--");
                c.arg(job.program);
                c
            }
            Sandbox::Landlock { .. } => {
                let mut c = tokio::process::Command::new(job.program);
                let ruleset = landlock_rules(&ws).map_err(|e| format!("cannot set up Landlock: {e}"))?;
                let mut ruleset = Some(ruleset);
                // SAFETY: the closure runs in the child between fork and exec;
                // it only makes system calls (prctl, landlock_restrict_self)
                // and allocates nothing.
                unsafe {
                    c.pre_exec(move || {
                        let r = ruleset.take().ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
                        match r.restrict_self() {
                            Ok(s) if s.ruleset != landlock::RulesetStatus::NotEnforced => Ok(()),
                            _ => Err(io::Error::from_raw_os_error(libc::EPERM)),
                        }
                    });
                }
                c
            }
            Sandbox::None => tokio::process::Command::new(job.program),
        };
        cmd.args(job.args).current_dir(&ws).env_clear();
        for var in job.env {
            if let Some(v) = std::env::var_os(var) {
                cmd.env(var, v);
            }
        }
        let limits = Limits {
            timeout: job.timeout,
            stdout_cap: job.max_output,
            stderr_cap: job.max_output,
            kill_on_overflow: false,
            kill_leftovers: true,
        };
        let ran = program::run(cmd, job.stdin, limits)
            .await
            .map_err(|e| format!("cannot start {} in the {} sandbox: {e}", job.program.display(), self.kind()))?;
        let (stdout, stderr, cut) = share(&ran.stdout, &ran.stderr, job.max_output);
        let truncated = cut || ran.stdout_over || ran.stderr_over;
        Ok(Output { ran, stdout, stderr, truncated })
    }
}

/// The sandbox for `mode`, given how to find bubblewrap and Landlock (each
/// asked only when needed), or why programs must be refused.
fn choose(
    mode: SandboxMode,
    bwrap: impl Fn() -> &'static Result<Sandbox, String>,
    landlock: impl Fn() -> Result<Sandbox, String>,
) -> Result<Sandbox, String> {
    let none = "or set sandbox = \"none\" in org/org.toml to run programs unconfined";
    match mode {
        SandboxMode::None => Ok(Sandbox::None),
        SandboxMode::Bwrap => bwrap().clone().map_err(|why| {
            format!(
                "no sandbox available: sandbox = \"bwrap\" in org/org.toml, but {why}\n  help: install bubblewrap (so \
                 that `bwrap` is on lemming's PATH), set sandbox = \"auto\", {none}"
            )
        }),
        SandboxMode::Landlock => landlock().map_err(|why| {
            format!(
                "no sandbox available: sandbox = \"landlock\" in org/org.toml, but {why}\n  help: install \
                 bubblewrap and set sandbox = \"auto\", {none}"
            )
        }),
        SandboxMode::Auto => bwrap().clone().or_else(|b| {
            landlock().map_err(|l| format!("no sandbox available ({b}; {l}): install bubblewrap, {none}"))
        }),
    }
}

/// Cuts stdout and stderr so that together they fit `cap`: each keeps at least
/// half of it when both are long, and what one does not use goes to the other.
fn share(out: &[u8], err: &[u8], cap: usize) -> (String, String, bool) {
    let keep_out = out.len().min((cap / 2).max(cap.saturating_sub(err.len())));
    let keep_err = err.len().min(cap - keep_out);
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (text(&out[..keep_out]), text(&err[..keep_err]), keep_out < out.len() || keep_err < err.len())
}

/// Runs a short command to its end, killing it after [`PROBE_TIMEOUT`].
fn brief(cmd: &mut std::process::Command) -> Result<std::process::Output, String> {
    use std::process::Stdio;
    let mut child =
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(|e| e.to_string())?;
    let start = std::time::Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return child.wait_with_output().map_err(|e| e.to_string()),
            Ok(None) if start.elapsed() < PROBE_TIMEOUT => std::thread::sleep(Duration::from_millis(2)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("it did not finish within {} s", PROBE_TIMEOUT.as_secs()));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// `bwrap` on lemming's PATH, if it works (found out once per process).
fn bwrap() -> &'static Result<Sandbox, String> {
    static BWRAP: OnceLock<Result<Sandbox, String>> = OnceLock::new();
    BWRAP.get_or_init(|| {
        let path = program::resolve("bwrap").map_err(|_| "bwrap is not on PATH".to_string())?;
        Sandbox::bwrap_at(&path)
    })
}

/// Landlock, if the kernel has it.
fn landlock() -> Result<Sandbox, String> {
    match landlock_abi() {
        0 => Err("this kernel has no Landlock (Linux 5.13 or later, with Landlock enabled at boot)".into()),
        abi => Ok(Sandbox::Landlock { abi }),
    }
}

/// The kernel's Landlock ABI version (0: none), asked once per process.
pub fn landlock_abi() -> u32 {
    static ABI: OnceLock<u32> = OnceLock::new();
    *ABI.get_or_init(|| {
        const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
        // SAFETY: with a null attribute, size 0 and this flag, the call only
        // returns the ABI version (or -1); it touches no memory.
        let v = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                std::ptr::null::<libc::c_void>(),
                0usize,
                LANDLOCK_CREATE_RULESET_VERSION,
            )
        };
        u32::try_from(v).unwrap_or(0)
    })
}

/// The Landlock rules of one run: read (and run) everywhere, everything in
/// the workspace, read and write `/dev/null`; network and scopes as the kernel
/// allows. Built in lemming's process; the child only enforces it.
fn landlock_rules(ws: &Path) -> Result<landlock::RulesetCreated, String> {
    use landlock::{
        Access, AccessFs, AccessNet, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr, Scope, ABI,
    };
    // The newest ABI this crate knows; the kernel's own is used as far as it goes.
    let abi = ABI::V10;
    let fd = |p: &Path| PathFd::new(p).map_err(|e| e.to_string());
    let build = || -> Result<landlock::RulesetCreated, landlock::RulesetError> {
        Ruleset::default()
            .handle_access(AccessFs::from_all(abi))?
            .handle_access(AccessNet::from_all(abi))?
            .scope(Scope::from_all(abi))?
            .create()
    };
    let mut r = build().map_err(|e| e.to_string())?;
    r = r.add_rule(PathBeneath::new(fd(Path::new("/"))?, AccessFs::from_read(abi))).map_err(|e| e.to_string())?;
    if let Ok(null) = fd(Path::new("/dev/null")) {
        r = r.add_rule(PathBeneath::new(null, AccessFs::from_file(abi))).map_err(|e| e.to_string())?;
    }
    r.add_rule(PathBeneath::new(fd(ws)?, AccessFs::from_all(abi))).map_err(|e| e.to_string())
}

/// The sandbox in force, for `lemming doctor`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// org.toml's `sandbox`.
    pub mode: &'static str,
    /// Whether programs can run.
    pub ok: bool,
    /// `bwrap`, `landlock` or `none`; absent when programs are refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<&'static str>,
    /// What it confines, or why programs are refused.
    pub description: String,
}

/// The sandbox org.toml's `sandbox` gives, or why programs are refused.
pub fn report(mode: SandboxMode) -> Report {
    match Sandbox::for_mode(mode) {
        Ok(s) => Report { mode: mode.as_str(), ok: true, sandbox: Some(s.kind()), description: s.describe() },
        Err(why) => Report { mode: mode.as_str(), ok: false, sandbox: None, description: why },
    }
}

/// What the tests of programs share: the sandboxes this machine has.
#[cfg(test)]
pub(crate) mod testing {
    use std::io::Write;
    use std::path::PathBuf;

    use super::*;

    /// `bwrap` on PATH, else the one `scripts/setup-llm-peers.sh` put in its cache.
    pub fn bwrap_path() -> Option<PathBuf> {
        program::resolve("bwrap").ok().or_else(|| {
            let dir = std::env::var_os("LEMMING_PEERS_DIR")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/lemming-peers")))?;
            Some(dir.join("bin/bwrap")).filter(|p| p.exists())
        })
    }

    /// Every sandbox that works here; each one missing is said on stderr as SKIPPED.
    pub fn sandboxes(test: &str) -> Vec<Sandbox> {
        let mut out = Vec::new();
        match bwrap_path().map(|p| Sandbox::bwrap_at(&p)) {
            Some(Ok(s)) => out.push(s),
            Some(Err(why)) => skip(test, &format!("bwrap does not work here ({why})")),
            None => skip(test, "bwrap not available (run scripts/setup-llm-peers.sh --only bwrap)"),
        }
        match landlock() {
            Ok(s) => out.push(s),
            Err(why) => skip(test, &format!("Landlock not available ({why})")),
        }
        out
    }

    fn skip(test: &str, what: &str) {
        // Past the harness's capture, so that it shows although the test passes.
        let _ = writeln!(std::io::stderr(), "SKIPPED: {what}: {test} runs without it");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mode_picks_bwrap_then_landlock_else_refuses_with_the_fix() {
        static BW: OnceLock<Result<Sandbox, String>> = OnceLock::new();
        static NO_BW: OnceLock<Result<Sandbox, String>> = OnceLock::new();
        let bw = || {
            BW.get_or_init(|| Ok(Sandbox::Bwrap { path: "/usr/bin/bwrap".into(), version: "bubblewrap 0.8.0".into() }))
        };
        let no_bw = || NO_BW.get_or_init(|| Err("bwrap is not on PATH".to_string()));
        let ll = || Ok(Sandbox::Landlock { abi: 4 });
        let no_ll = || Err("this kernel has no Landlock".to_string());
        assert_eq!(choose(SandboxMode::Auto, bw, ll).unwrap().kind(), "bwrap");
        assert_eq!(choose(SandboxMode::Auto, no_bw, ll).unwrap(), Sandbox::Landlock { abi: 4 });
        let e = choose(SandboxMode::Auto, no_bw, no_ll).unwrap_err();
        assert_eq!(
            e,
            "no sandbox available (bwrap is not on PATH; this kernel has no Landlock): install bubblewrap, or set \
             sandbox = \"none\" in org/org.toml to run programs unconfined"
        );
        assert_eq!(choose(SandboxMode::Landlock, bw, ll).unwrap().kind(), "landlock");
        assert!(choose(SandboxMode::Landlock, bw, no_ll)
            .unwrap_err()
            .contains("sandbox = \"landlock\" in org/org.toml, but this kernel has no Landlock"));
        assert!(choose(SandboxMode::Bwrap, no_bw, ll)
            .unwrap_err()
            .contains("but bwrap is not on PATH\n  help: install bubblewrap"));
        assert_eq!(choose(SandboxMode::None, no_bw, no_ll).unwrap(), Sandbox::None);
    }

    #[test]
    fn describe_says_what_is_confined() {
        let b = Sandbox::Bwrap { path: "/usr/bin/bwrap".into(), version: "bubblewrap 0.8.0".into() };
        assert_eq!(
            b.describe(),
            "bubblewrap 0.8.0 at /usr/bin/bwrap (read-only root, writable workspace, private /tmp, no network, own pid namespace)"
        );
        let old = Sandbox::Landlock { abi: 3 }.describe();
        assert!(
            old.contains("not blocked at this ABI: TCP, abstract unix sockets, signals, unix sockets by path, UDP"),
            "{old}"
        );
        let new = Sandbox::Landlock { abi: 7 }.describe();
        assert!(new.contains("refused: writes outside the workspace, TCP, abstract unix sockets"), "{new}");
        assert!(new.contains("not blocked at this ABI: unix sockets by path, UDP"), "{new}");
        assert!(Sandbox::None.describe().contains("unconfined"));
        let r = report(SandboxMode::None);
        assert!(r.ok && r.sandbox == Some("none") && r.mode == "none");
    }

    #[test]
    fn stdout_and_stderr_share_the_cap() {
        let (o, e, cut) = share(b"0123456789", b"abcdefghij", 10);
        assert_eq!((o.as_str(), e.as_str(), cut), ("01234", "abcde", true));
        let (o, e, cut) = share(b"0123456789", b"ab", 10);
        assert_eq!((o.as_str(), e.as_str(), cut), ("01234567", "ab", true));
        let (o, e, cut) = share(b"01", b"abcdefghij", 10);
        assert_eq!((o.as_str(), e.as_str(), cut), ("01", "abcdefgh", true));
        let (o, e, cut) = share(b"01", b"ab", 10);
        assert_eq!((o.as_str(), e.as_str(), cut), ("01", "ab", false));
    }

    #[test]
    fn a_bwrap_that_cannot_run_says_why() {
        let e = Sandbox::bwrap_at(std::path::Path::new("/nonexistent/bwrap")).unwrap_err();
        assert!(e.starts_with("bwrap at /nonexistent/bwrap does not run"), "{e}");
        // A program that answers --version but cannot make a sandbox.
        let e = Sandbox::bwrap_at(std::path::Path::new("/bin/false")).unwrap_err();
        assert!(e.contains("/bin/false"), "{e}");
    }

    #[tokio::test]
    async fn landlock_when_the_kernel_has_it_confines_writes_to_the_workspace() {
        let Ok(s) = Sandbox::for_mode(SandboxMode::Landlock) else {
            let _ =
                std::io::Write::write_all(&mut std::io::stderr(), b"SKIPPED: Landlock not available on this kernel\n");
            return;
        };
        let d = tempfile::tempdir().unwrap();
        let ws = d.path().join("ws");
        let outside = d.path().join("outside.txt");
        let args = vec!["-c".to_string(), format!("echo in > in.txt; echo out > {}", outside.display())];
        let job = Job {
            program: std::path::Path::new("/bin/sh"),
            args: &args,
            workspace: &ws,
            org: d.path(),
            env: &["PATH".to_string()],
            stdin: None,
            timeout: Duration::from_secs(10),
            max_output: 4096,
        };
        let out = s.run(job).await.unwrap();
        assert!(!out.ran.success(), "{out:?}");
        assert!(out.stderr.contains("Permission denied"), "{out:?}");
        assert_eq!(std::fs::read_to_string(ws.join("in.txt")).unwrap(), "in\n");
        assert!(!outside.exists());
    }
}
