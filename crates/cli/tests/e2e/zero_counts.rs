//! Counts of turns or runs where 0 means nothing are usage errors everywhere,
//! not only for `step -n`: none is silently turned into 1 or into no output.

use crate::fixture::TestOrg;

#[test]
fn every_count_of_turns_or_runs_refuses_zero() {
    let org = TestOrg::new();
    org.send("manager", "hello");
    for args in [&["chat", "--max-turns", "0", "manager"][..], &["logs", "-n", "0", "manager"][..]] {
        let out = org.lemming(args).fails_with(2);
        assert!(out.stderr.contains("1 or more"), "{args:?}: {out}");
    }
    assert_eq!(org.turn(), 0, "a refused chat ran a turn");
    org.lemming_ok(&["logs", "-n", "1", "manager"]);
}
