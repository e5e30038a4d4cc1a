//! The dead letters view (`GET /api/dead`): every message refused, expired
//! or poisoned, with its reason from `org/state/dead/<id>.why.json`, newest
//! first.

use serde::Serialize;

use super::status::Unreadable;
use crate::error::PathError;
use crate::fsx::{self, Entry};
use crate::mailbox::DeadReason;
use crate::org::Org;

/// The most bytes read of one reason file (a reason is a few hundred bytes).
const REASON_LIMIT: u64 = 1 << 20;

/// One dead letter.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetter {
    /// Its reason: `id`, `reason` (the code), `detail`, `mailbox`, `to`, `turn`, `at`.
    #[serde(flatten)]
    pub why: DeadReason,
    /// Whether the refused bytes are still kept beside the reason (`<id>.json`).
    pub letter: bool,
}

/// Every dead letter.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadView {
    /// Newest first (by time, then id).
    pub letters: Vec<DeadLetter>,
    /// Reasons that cannot be read, and letters with no reason (`lemming fsck` says more).
    pub unreadable: Vec<Unreadable>,
}

/// The dead letters of `org`.
pub fn dead(org: &Org) -> Result<DeadView, PathError> {
    let mb = org.mail();
    let files = mb.dead_files()?;
    let mut letters = Vec::new();
    let mut unreadable = Vec::new();
    for id in &files.reasons {
        let path = mb.reason_path(id);
        let parsed = match fsx::read_entry(&path, REASON_LIMIT) {
            Ok(Entry::File { bytes, .. }) => serde_json::from_slice::<DeadReason>(&bytes).map_err(|e| e.to_string()),
            Ok(Entry::Gone) => continue,
            Ok(Entry::TooLarge { size, .. }) => Err(format!("{size} bytes, more than a reason can be")),
            Ok(Entry::NotRegular { kind, .. }) => Err(format!("it is {}, not a regular file", kind.describe())),
            Err(e) => Err(e.source.to_string()),
        };
        match parsed {
            Ok(why) => letters.push(DeadLetter { why, letter: files.letters.contains(id) }),
            Err(error) => {
                unreadable.push(Unreadable { path, error: format!("{error}; this dead letter is not shown") })
            }
        }
    }
    for id in files.letters.difference(&files.reasons) {
        unreadable.push(Unreadable {
            path: mb.letter_path(id),
            error: "this dead letter has no reason beside it; it is not shown (`lemming fsck` says more)".into(),
        });
    }
    letters.sort_by(|a, b| b.why.at.cmp(&a.why.at).then_with(|| b.why.id.cmp(&a.why.id)));
    Ok(DeadView { letters, unreadable })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::Reason;
    use crate::views::testing::plain_org;

    #[test]
    fn dead_letters_come_with_their_reason_newest_first() {
        let (dir, org) = plain_org();
        assert!(dead(&org).unwrap().letters.is_empty(), "no dead folder yet");
        // The human writes to someone it may not reach: the turn refuses it.
        std::fs::create_dir_all(dir.path().join("agents/human/outbox/new")).unwrap();
        std::fs::write(
            dir.path().join("agents/human/outbox/new/20260101T000000000Z-human-x.json"),
            r#"{"id":"20260101T000000000Z-human-x","from":"human","to":"nobody","body":"hi"}"#,
        )
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(crate::daemon::step(dir.path(), 1, |_, _| {})).unwrap();
        let later = DeadReason {
            id: "zz-later".into(),
            reason: Reason::Expired,
            detail: "too old".into(),
            mailbox: "planner".into(),
            to: vec![],
            turn: 9,
            at: chrono::Utc::now() + chrono::Duration::days(1),
        };
        let mb = org.mail();
        std::fs::write(mb.reason_path("zz-later"), serde_json::to_vec(&later).unwrap()).unwrap();
        std::fs::write(mb.reason_path("broken"), "{").unwrap();
        std::fs::write(mb.letter_path("lonely"), "{}").unwrap();

        let v = dead(&org).unwrap();
        let rows: Vec<(&str, &str, bool)> =
            v.letters.iter().map(|l| (l.why.id.as_str(), l.why.reason.as_str(), l.letter)).collect();
        assert_eq!(rows[0], ("zz-later", "expired", false));
        assert_eq!(rows[1], ("20260101T000000000Z-human-x", "unknown_recipient", true));
        assert_eq!(rows.len(), 2);
        assert_eq!(v.letters[1].why.mailbox, "human");
        assert_eq!(v.letters[1].why.turn, 1);
        assert_eq!(v.unreadable.len(), 2, "{:?}", v.unreadable);
        let json = serde_json::to_value(&v.letters[1]).unwrap();
        for key in ["id", "reason", "detail", "mailbox", "turn", "at", "letter"] {
            assert!(json.get(key).is_some(), "{key} in {json}");
        }
    }
}
