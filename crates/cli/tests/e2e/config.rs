//! A broken resume is reported with its file and line, and holds only its own agent.

use crate::fixture::TestOrg;

#[test]
fn a_resume_with_a_toml_syntax_error_is_reported_and_the_rest_still_runs() {
    let org = TestOrg::new();
    org.edit("agents/hr/resume.toml", "title = \"HR\"", "title = \"HR");
    let text = org.read("agents/hr/resume.toml");
    let line = text.lines().position(|l| l == "title = \"HR").unwrap() + 1;

    let out = org.lemming(&["validate"]).fails_with(1);
    out.stderr_has(&[&format!("agents/hr/resume.toml:{line}:"), "help:", "1 problem(s) found"]);
    let json = org.lemming(&["validate", "--json"]).fails_with(1).json();
    assert_eq!(json["ok"], false);
    assert_eq!(json["problems"][0]["line"], line);

    let agents = org.lemming_ok(&["agents"]);
    for name in ["coder_01", "human", "janitor", "manager", "planner"] {
        assert!(
            agents.stdout.lines().any(|l| l.starts_with(name) && !l.contains("invalid")),
            "{name} missing\n{agents}"
        );
    }
    assert!(agents.stdout.lines().any(|l| l.starts_with("hr") && l.contains("invalid resume")), "{agents}");
    assert_eq!(org.agent_status("hr")["state"], "invalid");

    let id = org.send("manager", "hello");
    let out = org.lemming_ok(&["step"]);
    assert!(out.stdout.contains("ran: manager"), "{out}");
    out.stderr_has(&["agents/hr/resume.toml"]);
    let inbox = org.inbox_json("human");
    assert_eq!(inbox.len(), 1, "{inbox:#?}");
    assert_eq!(inbox[0]["reply_to"], id.as_str());
}

#[test]
fn mail_to_an_agent_with_a_broken_resume_waits_until_it_is_fixed() {
    let org = TestOrg::new();
    org.edit("agents/hr/resume.toml", "every = 1", "every = 0");
    let id = "20260101T000000000Z-manager-tohr01";
    org.drop_outbox("manager", &format!("{id}.json"), crate::fixture::message_bytes(id, "manager", "hr", "hi hr"));
    let report = org.step();
    assert_eq!(report["held"], 1, "{report:#}");
    assert_eq!(org.files("agents/manager/outbox/new"), [format!("{id}.json")], "held mail left the outbox");
    assert!(org.dead().is_empty(), "held mail went to dead");

    org.edit("agents/hr/resume.toml", "every = 0", "every = 1");
    org.lemming_ok(&["validate"]);
    let report = org.step();
    assert_eq!(report["ran"], serde_json::json!(["hr"]), "{report:#}");
    assert!(org.ids("hr", "inbox", "cur").contains(&id.to_string()));
}

#[test]
fn a_new_agent_joins_the_org_on_the_next_step() {
    let org = TestOrg::new();
    org.agent(
        "scribe",
        "name = \"scribe\"\ntitle = \"Scribe\"\nmodel = \"default\"\n\n[permissions]\nsend_to = [\"human\"]\nread_from = [\"human\"]\n",
    );
    org.lemming(&["send", "scribe", "hi"]).fails_with(1).stderr_has(&["human may not send to scribe"]);
    org.edit("agents/human/resume.toml", "send_to = [\"manager\"]", "send_to = [\"manager\", \"scribe\"]");
    org.edit("agents/human/resume.toml", "read_from = [\"manager\"]", "read_from = [\"manager\", \"scribe\"]");
    org.lemming_ok(&["validate"]);
    let id = org.send("scribe", "take notes");
    let report = org.step();
    assert_eq!(report["ran"], serde_json::json!(["scribe"]), "{report:#}");
    let inbox = org.inbox_json("human");
    assert_eq!(inbox.len(), 1, "{inbox:#?}");
    assert_eq!(inbox[0]["body"], "scribe received: take notes");
    assert_eq!(inbox[0]["reply_to"], id.as_str());
}

#[test]
fn a_bad_org_toml_stops_step_and_names_the_line() {
    let org = TestOrg::new();
    org.send("manager", "hello");
    org.edit("org/org.toml", "max_parallel = 8", "max_parallel = 0");
    let line = org.read("org/org.toml").lines().position(|l| l == "max_parallel = 0").unwrap() + 1;
    let out = org.lemming(&["step"]).fails_with(1);
    out.stderr_has(&[&format!("org/org.toml:{line}:"), "`max_parallel` must be from 1 to 4096", "help:"]);
    assert!(!org.path("org/state/turn.json").exists(), "a turn ran with a bad org.toml");
    assert_eq!(org.files("agents/human/outbox/new").len(), 1, "mail moved with a bad org.toml");

    org.edit("org/org.toml", "max_parallel = 0", "max_parallel = 1");
    assert_eq!(org.step()["ran"], serde_json::json!(["manager"]));
}

#[test]
fn huge_numbers_are_refused_or_handled_never_a_panic() {
    let org = TestOrg::new();
    // A TTL at the top of u64 must not overflow when the turn checks expiry.
    org.lemming_ok(&["send", "--ttl", "18446744073709551615", "manager", "hi"]);
    assert_eq!(org.step()["ran"], serde_json::json!(["manager"]));
    // Durations and parallelism beyond sense are config errors with a line, not panics.
    org.edit("org/org.toml", "turn_seconds = 60", "turn_seconds = 1e300");
    org.edit("org/org.toml", "max_parallel = 8", "max_parallel = 9223372036854775807");
    let out = org.lemming(&["validate"]).fails_with(1);
    out.stderr_has(&["`turn_seconds` must be more than 0 and at most a year", "`max_parallel` must be from 1 to 4096"]);
    org.edit("org/org.toml", "turn_seconds = 1e300", "turn_seconds = 60");
    org.edit("org/org.toml", "max_parallel = 9223372036854775807", "max_parallel = 8");
    let out = org.lemming(&["run", "--turn-seconds", "1e300"]).fails_with(2);
    out.stderr_has(&["at most a year"]);
    let models = org.read("org/models.toml");
    org.write("org/models.toml", format!("{models}\n[providers.far]\nkind = \"mock\"\ntimeout_secs = 1e300\n"));
    org.lemming(&["validate"]).fails_with(1).stderr_has(&["`timeout_secs` must be more than 0 and at most a year"]);
}
