//! Config checks through `lemming validate` and a turn: every problem in a file
//! at once (type errors included), ranges, fields that do not apply to a
//! provider's kind, and no secret or foreign file content in any diagnostic.

use serde_json::json;

use crate::fake_http::{Answer, FakeServer};
use crate::fixture::TestOrg;
use crate::providers::{chat, configure, step_env};

/// The `error:` lines of `validate` (one per problem), without the summary.
fn problems(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.starts_with("error: ") && !l.contains("problem(s) found")).collect()
}

#[test]
fn validate_reports_every_type_error_in_a_resume_each_with_its_fix() {
    let org = TestOrg::new();
    org.write(
        "agents/planner/resume.toml",
        "name = \"planner\"\nmodel = \"default\"\ntitle = 7\n[schedule]\nevery = \"2\"\nwake = \"sometimes\"\n[permissions]\nsend_to = [\"manager\"]\nread_from = \"*\"\n[budget]\ncredits = -3\nlimit = 1\n",
    );
    let out = org.lemming(&["validate"]).fails_with(1);
    let found = problems(&out.stderr);
    assert_eq!(found.len(), 6, "{out}");
    out.stderr_has(&[
        "agents/planner/resume.toml:3:9: `title` must be text in quotes, not a whole number",
        "help: put the value in quotes: title = \"7\"",
        "agents/planner/resume.toml:5:9: `every` must be a whole number, not text",
        "help: remove the quotes: every = 2",
        "agents/planner/resume.toml:6:8: unknown `wake` value `sometimes`",
        "help: use one of: mail",
        "agents/planner/resume.toml:9:13: `read_from` must be a list of text, not text",
        "help: use a list: read_from = [\"*\"]",
        "agents/planner/resume.toml:11:11: `credits` must be a number from 0",
        "agents/planner/resume.toml:12:1: unknown field `limit` in [budget]",
        "6 problem(s) found",
    ]);
    // No advice about quotes for a list written as text.
    assert!(!out.stderr.contains("strings need quotes"), "{out}");
}

#[test]
fn validate_refuses_out_of_range_numbers_in_every_file() {
    let org = TestOrg::new();
    org.write("org/org.toml", "max_attempts = 0\ndebounce_ms = -5\nbudget = -1\nturn_seconds = 1e9\n");
    let out = org.lemming(&["validate"]).fails_with(1);
    assert_eq!(problems(&out.stderr).len(), 4, "{out}");
    out.stderr_has(&[
        "org/org.toml:1:16: `max_attempts` must be from 1 to 1000, not 0",
        "org/org.toml:2:15: `debounce_ms` must be from 0 to 60000, not -5",
        "org/org.toml:3:10: `budget` must be a number from 0",
        "org/org.toml:4:16: `turn_seconds` must be more than 0 and at most a year",
    ]);

    let org = TestOrg::new();
    let base = org.read("org/models.toml");
    org.write(
        "org/models.toml",
        format!("{base}\n[providers.p]\nkind = \"command\"\nprogram = \"cat\"\ntimeout_secs = -1\nmax_retries = -1\n[models.m]\nprovider = \"p\"\ninput_price = -1\ncost_per_call = \"0.5\"\n[models.n]\nprovider = \"mock\"\noutput_price = nan\n"),
    );
    let out = org.lemming(&["validate"]).fails_with(1);
    out.stderr_has(&[
        "`timeout_secs` must be more than 0 and at most a year, not -1",
        "`max_retries` must be from 0 to 100, not -1",
        "`input_price` must be a number from 0",
        "`cost_per_call` must be a number, not text",
        "help: remove the quotes: cost_per_call = 0.5",
        "`output_price` must be a number from 0",
    ]);
}

#[test]
fn a_field_that_the_kind_does_not_read_is_an_error() {
    let org = TestOrg::new();
    let base = org.read("org/models.toml");
    org.write(
        "org/models.toml",
        format!("{base}\n[providers.cloud]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\nlatency_ms = 5\n[providers.slow]\nkind = \"mock\"\ntimeout_secs = 5\nmax_retries = 1\n[models.fast]\nprovider = \"slow\"\ntemperature = 0.2\n"),
    );
    let out = org.lemming(&["validate"]).fails_with(1);
    assert_eq!(problems(&out.stderr).len(), 4, "{out}");
    out.stderr_has(&[
        "`latency_ms` is not used by provider `cloud` of kind openai",
        "help: `latency_ms` is only for mock providers; remove it or change `kind`",
        "`timeout_secs` is not used by provider `slow` of kind mock",
        "help: `timeout_secs` is only for openai, anthropic and command providers",
        "`max_retries` is not used by provider `slow` of kind mock",
        "`temperature` is not used by model `fast`: its provider `slow` is of kind mock",
    ]);
}

#[test]
fn a_resume_linked_to_a_file_outside_the_org_is_refused_unread() {
    let org = TestOrg::new();
    let outside = org.tmp.path().join("shadow");
    std::fs::write(&outside, "root:$6$saltsalt$SECRETHASH:19000:0:99999:7:::\nname = \"looks like toml\"\n").unwrap();
    let resume = org.path("agents/planner/resume.toml");
    std::fs::remove_file(&resume).unwrap();
    std::os::unix::fs::symlink(&outside, &resume).unwrap();
    // Also a models.toml that is a FIFO would block a reader forever.
    for args in [&["validate"][..], &["status"][..], &["--json", "validate"][..]] {
        let out = org.lemming(args);
        assert!(!out.stdout.contains("SECRETHASH") && !out.stderr.contains("SECRETHASH"), "{args:?} showed it: {out}");
        assert!(!out.stdout.contains("root:") && !out.stderr.contains("root:"), "{args:?}: {out}");
    }
    let out = org.lemming(&["validate"]).fails_with(1);
    out.stderr_has(&["agents/planner/resume.toml: is a symbolic link to a file outside the org", "help:"]);
    // /etc/shadow itself (unreadable here, or not: it is never read either way).
    std::fs::remove_file(&resume).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", &resume).unwrap();
    let out = org.lemming(&["validate"]).fails_with(1);
    out.stderr_has(&["outside the org"]);
    assert!(!out.stderr.contains("root:"), "{out}");
    // The rest of the org still runs.
    org.send("manager", "hello");
    assert_eq!(org.step()["ran"], json!(["manager"]));
}

#[test]
fn a_models_toml_that_is_a_fifo_or_binary_is_refused_without_blocking_or_echo() {
    let org = TestOrg::new();
    let models = org.path("org/models.toml");
    std::fs::remove_file(&models).unwrap();
    let c = std::ffi::CString::new(models.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let out = org.lemming(&["validate"]).fails_with(1);
    out.stderr_has(&["org/models.toml: is a FIFO (named pipe), not a regular file"]);

    std::fs::remove_file(&models).unwrap();
    std::fs::write(&models, b"[models.default]\nprovider = \"mock\"\n\xff\xfe\x00 PRIVATE-BYTES \x1b[2J\n").unwrap();
    let out = org.lemming(&["validate"]).fails_with(1);
    out.stderr_has(&["org/models.toml:3:1: is not UTF-8 text"]);
    assert!(!out.stderr.contains("PRIVATE-BYTES") && !out.stderr.contains('\u{1b}'), "{out}");
}

#[test]
fn literal_keys_in_models_toml_are_refused_and_never_shown() {
    let org = TestOrg::new();
    let base = org.read("org/models.toml");
    let secrets = ["sk-proj-Zq8rT5vW2xY7bN4mK1pL9dF6", "hunter2hunter2", "tok-abc-123-xyz"];
    org.write(
        "org/models.toml",
        format!(
            "{base}\n[providers.cloud]\nkind = \"openai\"\nbase_url = \"https://api.example.com/v1\"\nheaders = {{ \"Authorization\" = \"Bearer {}\" }}\n[providers.claude]\nkind = \"anthropic\"\nheaders = {{ \"X-API-Key\" = \"{}\" }}\n[providers.azure]\nkind = \"openai\"\nbase_url = \"https://x.openai.azure.com\"\nazure_api_version = \"2024-10-21\"\nheaders = {{ \"API-KEY\" = \"{}\" }}\n",
            secrets[0], secrets[1], secrets[2]
        ),
    );
    for args in [&["validate"][..], &["--json", "validate"][..], &["status"][..]] {
        let out = org.lemming(args);
        for s in secrets {
            assert!(!out.stdout.contains(s) && !out.stderr.contains(s), "{args:?} showed {s}: {out}");
        }
    }
    let out = org.lemming(&["validate"]).fails_with(1);
    assert_eq!(problems(&out.stderr).len(), 3, "{out}");
    out.stderr_has(&[
        "`providers.cloud.headers.Authorization` holds a literal credential",
        "`providers.claude.headers.X-API-Key` holds a literal credential",
        "`providers.azure.headers.API-KEY` holds a literal credential",
        "headers_env = { \"X-API-Key\" = \"MY_KEY_VAR\" }",
    ]);
}

#[test]
fn headers_take_their_values_from_the_environment_at_call_time() {
    let reply = r#"{"messages":[{"to":"human","body":"hi"}],"notes":"n"}"#;
    let server = FakeServer::start(move |_, _| Answer::json(chat(reply, Some((10, 5)))));
    let org = TestOrg::new();
    configure(
        &org,
        &format!(
            "[providers.gw]\nkind = \"openai\"\nbase_url = \"{}/v1\"\nmax_retries = 0\nheaders_env = {{ \"x-api-key\" = \"GATEWAY_TEST_KEY\" }}\n\n[models.gw]\nprovider = \"gw\"\nmodel = \"m\"\n",
            server.url()
        ),
        "manager",
        "gw",
    );
    org.lemming_ok(&["validate"]);

    // Unset: the call fails before any request, naming the variable.
    org.send("manager", "first");
    let (report, out) = step_env(&org, &[]);
    assert_eq!(report["failed"][0][0], "manager", "{out}");
    let why = report["failed"][0][1].as_str().unwrap();
    assert!(why.contains("GATEWAY_TEST_KEY is not set") && why.contains("headers_env"), "{why}");
    assert!(server.requests().is_empty());

    // Set: the header carries the value.
    let secret = "gw-secret-value-77";
    let (report, out) = step_env(&org, &[("GATEWAY_TEST_KEY", secret)]);
    assert_eq!(report["ran"], json!(["manager"]), "{out}");
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].header("x-api-key"), Some(secret));
    for (path, bytes) in crate::fixture::snapshot(&org.root) {
        assert!(!String::from_utf8_lossy(&bytes).contains(secret), "the header value was written to {path}");
    }
}
