//! Backup benchmark, against the real `lemming` binary: `lemming backup` of an
//! org holding 100,000 delivered messages (each a sent copy and its inbox
//! link), timed, with the peak RSS of the backup process itself; then the
//! time of `lemming restore` (with its fsck) of that archive.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use chrono::{Duration, Utc};
use lemming_engine::mailbox::message_file;
use lemming_engine::message::{self, Kind, Message, Priority, To};

use crate::daemon::lemming_bin;
use crate::synth::{self, Calls, Shape, Spec};

/// Messages in the org.
const MESSAGES: usize = 100_000;
/// Agents they are spread over.
const AGENTS: usize = 100;

/// Writes an org of [`AGENTS`] agents and [`MESSAGES`] delivered, consumed
/// messages, as turns leave them: `outbox/sent/<id>.json` of the sender,
/// hard-linked into `inbox/cur/` of the recipient.
fn generate(dir: &Path) -> Result<(), String> {
    let spec = Spec {
        agents: AGENTS,
        unread: 0,
        shape: Shape::Ring(2),
        latency_ms: 0,
        max_parallel: 8,
        calls: Calls::None,
        sandbox: None,
    };
    synth::generate(dir, &spec).map_err(|e| e.to_string())?;
    let base = Utc::now() - Duration::hours(2);
    for k in 0..MESSAGES {
        let (from, to) = (synth::name(k % AGENTS), synth::name((k + 1) % AGENTS));
        let at = base + Duration::milliseconds(k as i64);
        let id = format!("{}-{from}-{k:06}", message::id_stamp(at));
        let msg = Message {
            id: id.clone(),
            from: from.clone(),
            to: To(vec![to.clone()]),
            subject: None,
            body: format!("Message {k} from {from} to {to}: the figures for item {} are in; please check them.", k * 7),
            priority: Priority::Normal,
            reply_to: None,
            thread: id.clone(),
            created_at: at,
            turn: 0,
            ttl_turns: None,
            kind: Kind::Message,
            ack_required: false,
        };
        let sent = dir.join("agents").join(&from).join("outbox/sent").join(message_file(&id));
        std::fs::write(&sent, msg.to_bytes()).map_err(|e| format!("{}: {e}", sent.display()))?;
        let cur = dir.join("agents").join(&to).join("inbox/cur").join(message_file(&id));
        std::fs::hard_link(&sent, &cur).map_err(|e| format!("{}: {e}", cur.display()))?;
    }
    lemming_engine::fsx::sync_fs(dir).map_err(|e| e.to_string())
}

/// Runs `lemming ARGS` to its end: its wall time in ms and its own peak RSS in KiB.
fn timed(args: &[&std::ffi::OsStr]) -> Result<(f64, u64), String> {
    let start = Instant::now();
    let child = Command::new(lemming_bin()?)
        .args(args)
        .env("LEMMING_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let pid = child.id() as libc::pid_t;
    let (mut status, mut usage) = (0, unsafe { std::mem::zeroed::<libc::rusage>() });
    // SAFETY: wait4 writes into the two locals; the pid is our unreaped child.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    if rc != pid {
        return Err(format!("wait4: {}", std::io::Error::last_os_error()));
    }
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        let mut err = String::new();
        if let Some(mut e) = child.stderr {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        return Err(format!("lemming {args:?} failed ({status}): {err}"));
    }
    // Linux reports ru_maxrss in KiB.
    Ok((ms, usage.ru_maxrss as u64))
}

/// The backup table: time and peak RSS against their aims; the restore for information.
pub fn run(base: &Path) -> Result<bool, String> {
    let tmp = tempfile::tempdir_in(base).map_err(|e| e.to_string())?;
    let (org, file, restored) = (tmp.path().join("org"), tmp.path().join("org.tar.gz"), tmp.path().join("restored"));
    generate(&org)?;
    let (ms, kb) = timed(&["--org".as_ref(), org.as_os_str(), "backup".as_ref(), file.as_os_str()])?;
    let size = std::fs::metadata(&file).map_err(|e| e.to_string())?.len();
    let (restore_ms, restore_kb) = timed(&["restore".as_ref(), file.as_os_str(), restored.as_os_str()])?;
    let mb = kb as f64 / 1024.0;
    println!();
    println!("| backup, {MESSAGES} messages ({AGENTS} agents, archive {:.1} MB) | figure | aim |", size as f64 / 1e6);
    println!("|---|---:|---:|");
    println!("| `lemming backup` time | {:.2} s | < 10 s |", ms / 1000.0);
    println!("| `lemming backup` peak RSS | {mb:.1} MB | < 50 MB |");
    println!("| `lemming restore` time, with its fsck | {:.2} s | |", restore_ms / 1000.0);
    println!("| `lemming restore` peak RSS | {:.1} MB | |", restore_kb as f64 / 1024.0);
    Ok(ms < 10_000.0 && mb < 50.0)
}
