//! The sandbox of `run_command` and custom tools as people see it: `lemming
//! doctor` says which one is in force (or why programs are refused), and
//! `lemming validate` checks `org/tools.toml` and the tools resumes grant.
//! The bubblewrap cases find `bwrap` on PATH or in the cache of
//! `scripts/setup-llm-peers.sh`, and say SKIPPED when it is not installed.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::fixture::{run, TestOrg};

/// The folder that holds a `bwrap` that works, if any: PATH first, then the peers' cache.
fn bwrap_dir() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("bwrap")).collect::<Vec<_>>())
        .unwrap_or_default();
    let cached = crate::peers::peer("LEMMING_BWRAP");
    on_path
        .into_iter()
        .chain(cached)
        .filter(|p| p.is_file())
        .find(|p| works(p))
        .and_then(|p| p.parent().map(Path::to_path_buf))
}

fn works(bwrap: &Path) -> bool {
    std::process::Command::new(bwrap)
        .args(["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--unshare-all"])
        .args(["--die-with-parent", "--new-session", "--", "true"])
        .status()
        .is_ok_and(|s| s.success())
}

fn skip(test: &str, what: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: {what}");
}

fn sandbox_line(org: &TestOrg, mode: &str) {
    org.edit("org/org.toml", "sandbox = \"auto\"\n", &format!("sandbox = \"{mode}\"\n"));
}

fn grant_run_command(org: &TestOrg) {
    org.edit(
        "agents/manager/resume.toml",
        "tools = [\"read_file\", \"write_file\", \"list_files\", \"recall\"]",
        "tools = [\"run_command\"]\ncommands = [\"echo\"]",
    );
}

#[test]
fn doctor_reports_the_sandbox_in_force() {
    // sandbox = "none": programs run unconfined, and doctor says so.
    let org = TestOrg::new();
    sandbox_line(&org, "none");
    let out = org.lemming_ok(&["doctor"]);
    assert!(out.stdout.contains("sandbox          none       OK\n") && out.stdout.contains("unconfined"), "{out}");
    let json = org.lemming_ok(&["doctor", "--json"]).json();
    assert_eq!(json["sandbox"]["mode"], "none");
    assert_eq!(json["sandbox"]["ok"], true);
    assert!(json["providers"].is_array(), "{json}");

    // auto with bubblewrap on PATH: bubblewrap, with its version and path.
    let test = "doctor_reports_the_sandbox_in_force (bwrap)";
    match bwrap_dir() {
        None => skip(test, "bwrap not available (run scripts/setup-llm-peers.sh --only bwrap)"),
        Some(dir) => {
            let org = TestOrg::new();
            let path = format!("{}:/usr/bin:/bin", dir.display());
            let out = run(org.command(&["doctor"]).env("PATH", &path)).ok();
            assert!(out.stdout.contains("sandbox          bwrap      OK\n"), "{out}");
            let at = format!("at {}/bwrap (read-only root, writable workspace", dir.display());
            assert!(out.stdout.contains("bubblewrap ") && out.stdout.contains(&at), "{out}");
            let json = run(org.command(&["doctor", "--json"]).env("PATH", &path)).ok().json();
            assert_eq!(
                (json["sandbox"]["mode"].as_str(), json["sandbox"]["sandbox"].as_str()),
                (Some("auto"), Some("bwrap"))
            );
        }
    }

    // Landlock asked for, on a kernel that has it.
    let org = TestOrg::new();
    sandbox_line(&org, "landlock");
    let out = org.lemming(&["doctor", "--json"]);
    let json: Value = out.json();
    if json["sandbox"]["ok"] == true {
        assert_eq!(json["sandbox"]["sandbox"], "landlock", "{out}");
        assert!(json["sandbox"]["description"].as_str().unwrap().starts_with("Landlock ABI "), "{out}");
    } else {
        skip("doctor_reports_the_sandbox_in_force (landlock)", "this kernel has no Landlock");
        assert!(json["sandbox"]["description"].as_str().unwrap().contains("this kernel has no Landlock"), "{out}");
    }
}

#[test]
fn doctor_fails_when_agents_may_run_programs_that_no_sandbox_can_hold() {
    if Path::new("/usr/bin/bwrap").exists() || Path::new("/bin/bwrap").exists() {
        return skip("doctor_fails_when_...", "bwrap is installed system-wide, so it cannot be taken away");
    }
    let org = TestOrg::new();
    sandbox_line(&org, "bwrap");
    org.edit("agents/coder_01/resume.toml", "\"run_command\", ", "");
    // Nobody runs programs: the refusal is shown, and is no failure.
    let out = run(org.command(&["doctor"]).env("PATH", "/usr/bin:/bin")).ok();
    assert!(out.stdout.contains("sandbox          bwrap      NONE\n"), "{out}");
    assert!(
        out.stdout.contains("no sandbox available: sandbox = \"bwrap\" in org/org.toml, but bwrap is not on PATH"),
        "{out}"
    );
    grant_run_command(&org);
    let out = run(org.command(&["doctor"]).env("PATH", "/usr/bin:/bin")).fails_with(1);
    assert!(out.stdout.contains("sandbox          bwrap      REFUSED\n"), "{out}");
    assert!(out.stderr.contains("no sandbox for the programs agents may run"), "{out}");
    let json = run(org.command(&["doctor", "--json"]).env("PATH", "/usr/bin:/bin")).fails_with(1).json();
    assert_eq!(json["sandbox"]["ok"], false);
    assert!(json["sandbox"].get("sandbox").is_none(), "{json}");
}

#[test]
fn validate_checks_tools_toml_and_the_tools_resumes_grant() {
    let org = TestOrg::new();
    org.write(
        "org/tools.toml",
        "[tools.word_count]\nprogram = \"wc\"\ndescription = \"Counts words.\"\n[tools.word_count.parameters]\ntype = \"object\"\n",
    );
    org.edit(
        "agents/manager/resume.toml",
        "tools = [\"read_file\", \"write_file\", \"list_files\", \"recall\"]",
        "tools = [\"read_file\", \"word_count\"]",
    );
    let out = org.lemming_ok(&["validate"]);
    assert!(out.stdout.contains("ok: org.toml, models.toml, tools.toml (1 custom tool) and"), "{out}");

    // Every problem of tools.toml, at its place; and a resume that grants a tool nobody declared.
    org.write(
        "org/tools.toml",
        "[tools.word_count]\nprogram = 7\ndescription = \"Counts words.\"\n\n[tools.\"no good\"]\nprogram = \"x\"\n",
    );
    let out = org.lemming(&["validate"]).fails_with(1);
    let tools = org.root.join("org/tools.toml");
    for want in [
        format!("{}:2:11: `program` must be text in quotes", tools.display()),
        format!("{}:5:1: `no good` is not a valid tool name", tools.display()),
        format!("{}:5:1: missing `description` in [tools.no good]", tools.display()),
    ] {
        assert!(out.stderr.contains(&want), "no {want:?} in\n{out}");
    }
    let json = org.lemming(&["validate", "--json"]).fails_with(1).json();
    assert_eq!(json["problems"].as_array().unwrap().len(), 3, "{json}");

    org.write("org/tools.toml", "");
    let out = org.lemming(&["validate"]).fails_with(1);
    let resume = org.root.join("agents/manager/resume.toml");
    assert!(out.stderr.contains(&format!("{}:", resume.display())), "{out}");
    assert!(out.stderr.contains("unknown tool `word_count` in `permissions.tools` (known: read_file,"), "{out}");
}
