//! `status` keeps its columns aligned whatever state an agent is in, the
//! longest (`prompt_over_credits`) included.

use crate::state_numbers::manager_over_credits;

#[test]
fn the_credits_column_stays_aligned_for_every_state() {
    let org = manager_over_credits();
    org.send("manager", "hello");
    org.step();
    assert_eq!(org.agent_status("manager")["state"], "prompt_over_credits");

    let out = org.lemming_ok(&["status"]).stdout;
    let header = out.lines().find(|l| l.starts_with("AGENT")).expect("no table header");
    let end = header.find("CREDITS").unwrap() + "CREDITS".len();
    let rows: Vec<&str> =
        out.lines().skip_while(|l| !l.starts_with("AGENT")).skip(1).take_while(|l| !l.is_empty()).collect();
    assert!(rows.iter().any(|r| r.contains("prompt_over_credits")), "{out}");
    for row in rows {
        let before = row.get(..end).unwrap_or(row);
        assert!(
            !row[before.len()..].starts_with(|c: char| c != ' ') && before.ends_with(|c: char| c != ' '),
            "the credits of this row do not end under CREDITS:\n{header}\n{row}"
        );
    }
}
