//! The floor: the file operations one turn of a synthetic org needs, with the
//! same durability (group commits through `fsx::Batch`) and none of the logic.
//! A turn's time divided by this is the engine's overhead.

use std::fs;
use std::path::Path;

use lemming_engine::fsx::{self, Batch};

/// Does, for every agent: read each unread file; write a journal record; write
/// one outbox reply; move the read mail to `cur/`; deliver the reply into a
/// neighbour's inbox (a hard link, as the engine does) and move it to `sent/`; append the ledger; write turn.json.
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
            let bytes = fs::read(dir.join(f))?;
            std::hint::black_box(bytes);
        }
        read.push((a.clone(), files));
    }
    let reply = vec![b'x'; 400];
    // Journal.
    let mut b = Batch::new();
    for a in &agents {
        b.write(&tmp, state.join("journal/1").join(format!("{a}.json")), reply.clone());
    }
    b.commit(root).map_err(io)?;
    // Effects: outbox replies and the ledger.
    let mut b = Batch::new();
    let mut ledger = String::new();
    for a in &agents {
        let ob = agents_dir.join(a).join("outbox");
        b.write(&ob.join("tmp"), ob.join("new/reply.json"), reply.clone());
        ledger.push_str(&format!("{{\"kind\":\"charge\",\"agent\":\"{a}\"}}\n"));
    }
    fsx::append_lines(&state.join("ledger.jsonl"), &ledger).map_err(io)?;
    b.commit(root).map_err(io)?;
    // Consume.
    let mut b = Batch::new();
    for (a, files) in &read {
        let ib = agents_dir.join(a).join("inbox");
        for f in files {
            b.rename(ib.join("new").join(f), ib.join("cur").join(f));
        }
    }
    b.commit(root).map_err(io)?;
    // Route the replies: deliver to the next agent, then move to sent.
    let mut d = Batch::new();
    let mut m = Batch::new();
    for (i, a) in agents.iter().enumerate() {
        let to = &agents[(i + 1) % agents.len()];
        let ob = agents_dir.join(a).join("outbox");
        let ib = agents_dir.join(to).join("inbox");
        d.link(ob.join("new/reply.json"), ib.join("new").join(format!("reply-{a}.json")));
        m.rename(ob.join("new/reply.json"), ob.join("sent/reply.json"));
    }
    d.commit(root).map_err(io)?;
    m.commit(root).map_err(io)?;
    fsx::append_lines(&state.join("events.jsonl"), "{}\n").map_err(io)?;
    fsx::sync_fs(root).map_err(io)?;
    fsx::write_atomic(&tmp, &state.join("turn.json"), b"{\"turn\":1}").map_err(io)
}
