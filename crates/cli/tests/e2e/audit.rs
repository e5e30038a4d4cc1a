//! The audit log: what people do from the command line that changes the
//! world outside the mail (`top-up`, `pause`, `resume`) is a line of
//! `org/state/audit.jsonl`, refused or not.

use serde_json::{json, Value};

use crate::fixture::TestOrg;

/// Every line of the audit log, each parsed.
#[track_caller]
fn audit(org: &TestOrg) -> Vec<Value> {
    org.read("org/state/audit.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn top_up_pause_and_resume_write_audit_lines() {
    let org = TestOrg::new();
    assert!(!org.path("org/state/audit.jsonl").exists());

    org.lemming_ok(&["top-up", "planner", "2.5"]);
    let refused = org.lemming(&["top-up", "planner", "0"]);
    assert_ne!(refused.code, Some(0), "{refused}");
    org.lemming_ok(&["pause"]);
    org.lemming_ok(&["resume"]);

    let log = audit(&org);
    let got: Vec<_> = log.iter().map(|e| (e["who"].clone(), e["action"].clone(), e["what"].clone())).collect();
    assert_eq!(
        got,
        [
            (json!("person"), json!("top_up"), json!({"agent": "planner", "amount": 2.5})),
            (json!("person"), json!("top_up"), json!({"agent": "planner", "amount": 0.0})),
            (json!("person"), json!("pause"), json!({"was_paused": false})),
            (json!("person"), json!("resume"), json!({"was_paused": true})),
        ]
    );
    let outcomes: Vec<&str> = log.iter().map(|e| e["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes[0], "ok");
    assert!(outcomes[1] != "ok" && refused.stderr.contains(outcomes[1]), "{outcomes:?}\n{refused}");
    assert_eq!(&outcomes[2..], ["ok", "ok"]);
    assert!(log.iter().all(|e| e["at"].as_str().is_some_and(|t| t.parse::<chrono::DateTime<chrono::Utc>>().is_ok())));
}
