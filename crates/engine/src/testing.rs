//! Helpers the engine's unit tests share: a default org in a temp folder, a
//! hand edit of one of its files, and a plain message.

use std::path::{Path, PathBuf};

/// The default org, in `org/` of a new temp folder (kept while the guard lives).
pub fn new_org() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("org");
    crate::init::init(&root).unwrap();
    (d, root)
}

/// Replaces the first `from` in the org's file `rel` with `to`, as a person
/// editing it would; fails the test if `from` is not there.
pub fn edit(root: &Path, rel: &str, from: &str, to: &str) {
    let p = root.join(rel);
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(text.contains(from), "{rel} has no {from:?}");
    std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
}

/// A plain message (`kind` message, normal priority, its own thread, no
/// reply-to), created now.
pub fn message(id: &str, from: &str, to: &[&str], body: &str) -> crate::message::Message {
    use crate::message::{Kind, Message, Priority, To};
    Message {
        id: id.into(),
        from: from.into(),
        to: To(to.iter().map(|s| s.to_string()).collect()),
        subject: None,
        body: body.into(),
        priority: Priority::Normal,
        reply_to: None,
        thread: id.into(),
        created_at: chrono::Utc::now(),
        turn: 0,
        ttl_turns: None,
        kind: Kind::Message,
        ack_required: false,
    }
}
