//! Sample configs in `tests/samples/{valid,invalid}/<case>/`, found by
//! themselves: each is copied to a temp folder and checked with
//! `lemming --org DIR validate`. An invalid case's `expect.txt` lists
//! substrings (one per non-empty line) that stderr must contain.

use std::fs;
use std::path::{Path, PathBuf};

use crate::fixture::{clean_command, run, TestOrg};

fn cases(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/samples").join(kind);
    let mut out: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

fn validate(case: &Path) -> (TestOrg, crate::fixture::Output) {
    let org = TestOrg::copy_of(case);
    let out = run(clean_command(&["--org", org.root.to_str().unwrap(), "validate"]).current_dir(org.tmp.path()));
    (org, out)
}

#[test]
fn valid_samples_validate() {
    let cases = cases("valid");
    assert!(cases.len() >= 2, "too few valid samples: {cases:?}");
    let mut failures = Vec::new();
    for case in &cases {
        let (_org, out) = validate(case);
        if out.code != Some(0) || !out.stdout.contains("ok:") {
            failures.push(format!("{}: expected exit 0\n{out}", case.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn invalid_samples_fail_with_the_expected_messages() {
    let cases = cases("invalid");
    assert!(cases.len() >= 8, "too few invalid samples: {cases:?}");
    let mut failures = Vec::new();
    for case in &cases {
        let expect = fs::read_to_string(case.join("expect.txt"))
            .unwrap_or_else(|e| panic!("{}: needs an expect.txt ({e})", case.display()));
        let needles: Vec<&str> = expect.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(!needles.is_empty(), "{}: expect.txt is empty", case.display());
        let (org, out) = validate(case);
        if out.code != Some(1) {
            failures.push(format!("{}: expected exit 1\n{out}", case.display()));
            continue;
        }
        for n in &needles {
            if !out.stderr.contains(n) {
                failures.push(format!("{}: stderr lacks {n:?}\n{out}", case.display()));
            }
        }
        // Every problem names a file inside the org, so people know where to look.
        let root = org.root.display().to_string();
        for line in out.stderr.lines().filter(|l| l.starts_with("error: ") && !l.contains("problem(s) found")) {
            if !line.contains(&root) {
                failures.push(format!("{}: a problem names no file: {line:?}", case.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
