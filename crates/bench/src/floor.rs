//! The floor: the file operations one turn of a synthetic org needs, with the
//! same durability (group commits through `fsx::Batch`) and none of the logic.
//! A turn's time divided by this is the engine's overhead.

use std::fs;
use std::path::Path;

use lemming_engine::fsx::{self, Batch, Moves, Unsynced};

/// Does, for every agent: read each unread file (without updating its access
/// time, as the engine reads mail); append a journal record
/// (one file for the turn, synced once); write one outbox reply; append a
/// line to its activity log; move the read mail to `cur/`, made durable with
/// the replies' renames by one sync (as a turn's `unsynced` is); list its
/// outbox again and read the reply, as routing checks what it delivers;
/// deliver the reply into a neighbour's inbox (a hard link, as the engine
/// does) and move it to `sent/`; append the ledger. Then the turn's events
/// (about 560 bytes an agent, as a warm turn of the synthetic org writes) go
/// into turn.json and are appended to the events file.
pub fn run(root: &Path) -> std::io::Result<()> {
    let agents_dir = root.join("agents");
    let mut agents: Vec<String> =
        fs::read_dir(&agents_dir)?.flatten().filter_map(|e| e.file_name().to_str().map(String::from)).collect();
    agents.sort();
    let state = root.join("org/state");
    let tmp = state.join("tmp");
    fs::create_dir_all(state.join("journal/1"))?;
    fs::create_dir_all(&tmp)?;
    let io = |e: lemming_engine::error::PathError| std::io::Error::other(e.to_string());

    // Route (nothing pending): list every outbox.
    for a in &agents {
        fsx::list_json(&agents_dir.join(a).join("outbox/new")).map_err(io)?;
    }
    // Read every unread file.
    let mut read: Vec<(String, Vec<String>)> = Vec::new();
    for a in &agents {
        let dir = agents_dir.join(a).join("inbox/new");
        let files = fsx::list_json(&dir).map_err(io)?;
        for f in &files {
            std::hint::black_box(read_mail(&dir.join(f))?);
        }
        read.push((a.clone(), files));
    }
    let reply = vec![b'x'; 400];
    let line = |a: &str| format!("{{\"agent\":\"{a}\",\"reply\":\"{}\"}}\n", "x".repeat(400));
    // Journal: every reply in one appended file, synced.
    let journal: String = agents.iter().map(|a| line(a)).collect();
    fsx::append_lines_durable(&state.join("journal/1/records.jsonl"), &journal).map_err(io)?;
    // Effects: the ledger, synced; the outbox replies, written, synced and
    // renamed into place; a line in each activity log.
    let ledger: String = agents.iter().map(|a| format!("{{\"kind\":\"charge\",\"agent\":\"{a}\"}}\n")).collect();
    fsx::append_lines_durable(&state.join("ledger.jsonl"), &ledger).map_err(io)?;
    let mut b = Batch::new();
    for a in &agents {
        let ob = agents_dir.join(a).join("outbox");
        b.write(&ob.join("tmp"), ob.join("new/reply.json"), reply.clone());
    }
    let mut left = Unsynced::default();
    b.commit_leaving(root, &mut left).map_err(io)?;
    for a in &agents {
        let logs = agents_dir.join(a).join("logs");
        if fsx::append_lines(&logs.join("activity.jsonl"), &line(a)).is_err() {
            fs::create_dir_all(&logs)?;
            fsx::append_lines(&logs.join("activity.jsonl"), &line(a)).map_err(io)?;
        }
    }
    // Consume, synced with the replies' renames.
    let mut moves = Moves::new();
    for (a, files) in &read {
        let ib = agents_dir.join(a).join("inbox");
        for f in files {
            moves.rename_if_there(&ib.join("new").join(f), &ib.join("cur").join(f)).map_err(io)?;
        }
    }
    moves.leave(&mut left);
    left.sync(root).map_err(io)?;
    // Route the replies: read each, deliver it to the next agent, then move it to sent.
    let mut d = Batch::new();
    let mut m = Batch::new();
    for (i, a) in agents.iter().enumerate() {
        let to = &agents[(i + 1) % agents.len()];
        let ob = agents_dir.join(a).join("outbox");
        for f in fsx::list_json(&ob.join("new")).map_err(io)? {
            std::hint::black_box(read_mail(&ob.join("new").join(f))?);
        }
        let ib = agents_dir.join(to).join("inbox");
        d.link(ob.join("new/reply.json"), ib.join("new").join(format!("reply-{a}.json")));
        m.rename(ob.join("new/reply.json"), ob.join("sent/reply.json"));
    }
    d.commit(root).map_err(io)?;
    m.commit(root).map_err(io)?;
    // Commit: the events in turn.json, then appended to the events file.
    let event =
        |a: &str, kind: &str| format!("{{\"kind\":\"{kind}\",\"agent\":\"{a}\",\"at\":\"{}\"}}\n", "x".repeat(130));
    let events: String = agents.iter().flat_map(|a| ["ran", "charged", "delivered"].map(|k| event(a, k))).collect();
    fsx::write_atomic(&tmp, &state.join("turn.json"), events.as_bytes()).map_err(io)?;
    fsx::append_lines(&state.join("events.jsonl"), &events).map_err(io)
}

/// Reads a whole file, as the engine reads mail: without updating its
/// access time.
fn read_mail(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new().read(true).custom_flags(libc::O_CLOEXEC | libc::O_NOATIME).open(path)?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)?;
    Ok(bytes)
}
