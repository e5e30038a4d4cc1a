//! Helpers the engine's unit tests share: a default org in a temp folder, and
//! a hand edit of one of its files.

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
