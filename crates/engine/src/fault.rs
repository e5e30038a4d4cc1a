//! Faults for tests.
//!
//! - Crash points: `LEMMING_CRASH_AT=<point>[:<n>]` makes the process abort (as
//!   a power cut would, with no cleanup) the n-th time (default 1st) it
//!   reaches `point`. Unset, each check is one relaxed atomic load.
//! - A full disk: while the file named by `LEMMING_FULL_DISK_FLAG` exists,
//!   every write of file data through [`crate::fsx`] fails with `ENOSPC`
//!   (renames, links and removals still work, as on a real full disk). A test
//!   creates the file to fill the disk and removes it to free space, while the
//!   daemon runs.
//! - A quick reader: `LEMMING_READ_AT_ONCE=<folder>` moves every file linked
//!   into that folder (`…/inbox/new`) on to its sibling `cur/` the instant it
//!   is linked, as a person running `lemming inbox` at that very moment would.
//! - Small parts: `LEMMING_APPLY_EVERY=<n>` makes a turn apply its replies in
//!   parts of `n` ([`crate::turn::APPLY_EVERY`]) and commit its routing every
//!   `n` deliveries ([`crate::route::ROUTE_EVERY`]), so that a test with a
//!   few agents crosses the boundaries of parts.
//! - Moves apart: `LEMMING_APART_MIN=<n>` makes a turn move the read
//!   mail of a part and append its activity lines on a thread of its own,
//!   beside the effects, from `n` such files ([`crate::turn::APART_MIN`]),
//!   so that a small test's crash points meet the two at work together.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
static SEEN: AtomicU64 = AtomicU64::new(0);

/// Aborts the process here if `LEMMING_CRASH_AT` names this point.
pub fn point(name: &str) {
    let target = TARGET.get_or_init(|| {
        let v = std::env::var("LEMMING_CRASH_AT").ok()?;
        let (p, n) = match v.split_once(':') {
            Some((p, n)) => (p.to_string(), n.parse().unwrap_or(1)),
            None => (v, 1),
        };
        Some((p, n))
    });
    if let Some((p, n)) = target {
        if p == name && SEEN.fetch_add(1, Ordering::Relaxed) + 1 >= *n {
            eprintln!("lemming: crash point `{name}` reached (LEMMING_CRASH_AT); aborting");
            std::process::abort();
        }
    }
}

/// Fails with `ENOSPC` while the disk is "full" (see the module docs);
/// `Ok` otherwise. Every write of file data, in any crate, goes through it.
pub use lemming_fs::disk_full;

static READ_AT_ONCE: OnceLock<Option<std::path::PathBuf>> = OnceLock::new();

/// Moves `linked` from its `new/` folder to `cur/` at once when
/// `LEMMING_READ_AT_ONCE` names that folder (see the module docs).
pub fn read_at_once(linked: &std::path::Path) {
    let folder = READ_AT_ONCE.get_or_init(|| std::env::var_os("LEMMING_READ_AT_ONCE").map(Into::into));
    let (Some(folder), Some(parent), Some(name)) = (folder, linked.parent(), linked.file_name()) else { return };
    if parent.ends_with(folder) {
        if let Some(box_dir) = parent.parent() {
            let _ = std::fs::rename(linked, box_dir.join("cur").join(name));
        }
    }
}

static APPLY_EVERY: OnceLock<Option<usize>> = OnceLock::new();

/// `default`, or the part size `LEMMING_APPLY_EVERY` sets (see the module docs).
pub fn apply_every(default: usize) -> usize {
    let set = APPLY_EVERY.get_or_init(|| std::env::var("LEMMING_APPLY_EVERY").ok()?.parse().ok().filter(|n| *n > 0));
    set.unwrap_or(default)
}

static APART_MIN: OnceLock<Option<usize>> = OnceLock::new();

/// `default`, or the least files `LEMMING_APART_MIN` sets (see the module docs).
pub fn apart_min(default: usize) -> usize {
    let set = APART_MIN.get_or_init(|| std::env::var("LEMMING_APART_MIN").ok()?.parse().ok());
    set.unwrap_or(default)
}
