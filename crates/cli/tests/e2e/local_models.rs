//! Using a model on this machine: `models use` (resumes edited in place),
//! `models --remote` (what the servers serve) and `doctor --detect` (servers
//! found on local ports within the deadline), against fake servers and, when
//! installed, the real llama-server.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::fake_http::{free_port, Answer, FakeServer};
use crate::fixture::TestOrg;
use crate::peers::{peer, skip, Gemma};

/// An org with a second model key, `fast`.
fn org_with_fast() -> TestOrg {
    let org = TestOrg::new();
    let base = org.read("org/models.toml");
    org.write("org/models.toml", format!("{base}\n[models.fast]\nprovider = \"mock\"\n"));
    org
}

const COMMENTED: &str = r#"# The manager: delegates, never codes.
name = "manager"
title = "Manager"
# The model key; `fast` is cheaper.
model   =   "default"   # changed by `lemming models use`
# The instructions come next.
instructions = """
Delegate to planner and hr; keep the human informed.
"""

[schedule]
every = 1  # every turn
offset = 0
wake = "mail"

[budget]
credits = 100.0

[permissions]
send_to = ["human", "planner", "hr", "coder_01", "janitor"]
read_from = ["human", "planner", "hr", "coder_01", "janitor"]
# the end
"#;

#[test]
fn models_use_changes_only_the_model_and_keeps_every_comment() {
    let org = org_with_fast();
    org.write("agents/manager/resume.toml", COMMENTED);
    let out = org.lemming_ok(&["models", "use", "fast", "--agent", "manager"]);
    assert!(out.stdout.contains("manager: default -> fast"), "{out}");
    assert_eq!(org.read("agents/manager/resume.toml"), COMMENTED.replace("\"default\"", "\"fast\""));
    let inspect = org.lemming_ok(&["--json", "inspect", "manager"]).json();
    assert_eq!(inspect["model"], "fast", "{inspect:#}");

    // A resume with no `model` line (held as invalid) gets one, and nothing else changes.
    let planner = org.read("agents/planner/resume.toml");
    let without: String = planner.lines().filter(|l| !l.starts_with("model =")).map(|l| format!("{l}\n")).collect();
    assert_ne!(without, planner);
    org.write("agents/planner/resume.toml", &without);
    assert_eq!(org.lemming(&["validate"]).code, Some(1), "a resume without model is invalid");
    let out = org.lemming_ok(&["--json", "models", "use", "fast", "--agent", "planner"]).json();
    assert_eq!(out["agents"][0], json!({"agent": "planner", "from": null, "to": "fast", "changed": true}));
    let now = org.read("agents/planner/resume.toml");
    let added: Vec<&str> = now.lines().filter(|l| !without.lines().any(|w| w == *l)).collect();
    assert_eq!(added, ["model = \"fast\""], "{now}");
    assert_eq!(now.replace("model = \"fast\"\n", ""), without);
    org.lemming_ok(&["validate"]);

    // Asking again changes nothing.
    let out = org.lemming_ok(&["models", "use", "fast", "--agent", "manager"]);
    assert!(out.stdout.contains("manager: fast (already)"), "{out}");
    assert_eq!(org.read("agents/manager/resume.toml"), COMMENTED.replace("\"default\"", "\"fast\""));
}

#[test]
fn models_use_refuses_an_unknown_key_or_a_person_and_writes_nothing() {
    let org = org_with_fast();
    org.write("agents/manager/resume.toml", COMMENTED);
    let before = crate::fixture::snapshot(&org.root.join("agents"));
    let out = org.lemming(&["models", "use", "fsat", "--agent", "manager"]).fails_with(1);
    out.stderr_has(&["unknown model key `fsat`", "closest: fast", "nothing was changed"]);
    let out = org.lemming(&["models", "use", "fsat", "--all"]).fails_with(1);
    out.stderr_has(&["unknown model key `fsat`"]);
    // `human` is driven by people: no model key is valid for it.
    let out = org.lemming(&["models", "use", "fast", "--agent", "human"]).fails_with(1);
    out.stderr_has(&["agents/human/resume.toml", "driven by people", "nothing was changed"]);
    let out = org.lemming(&["models", "use", "fast", "--agent", "nobody"]).fails_with(1);
    out.stderr_has(&["unknown agent `nobody`"]);
    assert_eq!(org.lemming(&["models", "use", "fast"]).code, Some(2), "--agent or --all is required");
    assert_eq!(crate::fixture::snapshot(&org.root.join("agents")), before, "every file is unchanged");
}

#[test]
fn models_use_all_switches_every_agent_but_people_or_none() {
    let org = org_with_fast();
    let before = crate::fixture::snapshot(&org.root.join("agents"));
    // One resume that a model key cannot fix: --all writes none.
    let coder = org.read("agents/coder_01/resume.toml");
    org.write("agents/coder_01/resume.toml", format!("{coder}\ncolour = 1\n"));
    let broken = crate::fixture::snapshot(&org.root.join("agents"));
    let out = org.lemming(&["models", "use", "fast", "--all"]).fails_with(1);
    out.stderr_has(&["agents/coder_01/resume.toml", "colour", "nothing was changed", "--agent"]);
    assert_eq!(crate::fixture::snapshot(&org.root.join("agents")), broken);

    org.write("agents/coder_01/resume.toml", &coder);
    let out = org.lemming_ok(&["--json", "models", "use", "fast", "--all"]).json();
    let switched: Vec<&str> = out["agents"].as_array().unwrap().iter().map(|a| a["agent"].as_str().unwrap()).collect();
    assert_eq!(switched, ["coder_01", "hr", "janitor", "manager", "planner"], "{out:#}");
    let models = org.lemming_ok(&["--json", "models"]).json();
    let fast = models.as_array().unwrap().iter().find(|m| m["key"] == "fast").unwrap().clone();
    assert_eq!(fast["used_by"], json!(["coder_01", "hr", "janitor", "manager", "planner"]));
    let after = crate::fixture::snapshot(&org.root.join("agents"));
    for (path, bytes) in &before {
        let (old, new) = (String::from_utf8_lossy(bytes), String::from_utf8_lossy(&after[path]));
        if path.ends_with("resume.toml") && !path.contains("human") {
            assert_eq!(new, old.replace("model = \"default\"", "model = \"fast\""), "{path}");
        } else if path.ends_with("resume.toml") {
            assert_eq!(new, old, "{path}: people are left alone");
        }
    }
    let audit = std::fs::read_to_string(org.path("org/state/audit.jsonl")).unwrap_or_default();
    assert_eq!(audit.matches("edit_resume").count(), 5, "each edit is audited: {audit}");
}

/// A fake OpenAI-compatible server (`/v1/models`), a fake Ollama (only
/// `/api/tags`), a fake Anthropic (`/v1/models` with its key) and a port where
/// nothing listens.
#[test]
fn models_remote_lists_what_each_server_serves_and_who_uses_it() {
    let openai = FakeServer::start(|r, _| match r.path.as_str() {
        "/v1/models" => Answer::json(
            json!({"object": "list", "data": [{"id": "qwen-7b"}, {"id": "evil\u{1b}[31m"}, {"id": "other"}]})
                .to_string(),
        ),
        _ => Answer::status(404, "{}"),
    });
    let ollama = FakeServer::start(|r, _| match r.path.as_str() {
        "/api/tags" => {
            Answer::json(json!({"models": [{"name": "llama3.2:latest", "model": "llama3.2:latest"}]}).to_string())
        }
        _ => Answer::status(404, "404 page not found"),
    });
    let anthropic = FakeServer::start(|r, _| match (r.path.as_str(), r.header("x-api-key")) {
        ("/v1/models", Some("ak-1")) => {
            Answer::json(json!({"data": [{"id": "claude-x", "type": "model"}]}).to_string())
        }
        _ => Answer::status(401, "{\"error\":\"bad key\"}"),
    });
    let dead = free_port();
    let org = TestOrg::new();
    let base = org.read("org/models.toml");
    org.write(
        "org/models.toml",
        format!(
            r#"{base}
[providers.compat]
kind = "openai"
base_url = "{}/v1"

[providers.olla]
kind = "openai"
base_url = "{}/v1"

[providers.claude]
kind = "anthropic"
base_url = "{}"
api_key_env = "AK"

[providers.gone]
kind = "openai"
base_url = "http://127.0.0.1:{dead}/v1"

[models.qwen]
provider = "compat"
model = "qwen-7b"

[models.qwen2]
provider = "compat"
model = "qwen-7b"

[models.missing]
provider = "compat"
model = "not-there"

[models.llama]
provider = "olla"
model = "llama3.2:latest"

[models.claude]
provider = "claude"
model = "claude-x"
"#,
            openai.url(),
            ollama.url(),
            anthropic.url()
        ),
    );
    let out = crate::fixture::run(org.command(&["models", "--remote"]).env("AK", "ak-1")).ok();
    let row = |needle: &str| {
        out.stdout.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("no line with {needle}\n{out}"))
    };
    let words = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    assert_eq!(words(row("qwen-7b")), ["compat", "qwen-7b", "qwen,", "qwen2"]);
    assert_eq!(words(row("llama3.2")), ["olla", "llama3.2:latest", "llama"]);
    assert_eq!(words(row("claude-x")), ["claude", "claude-x", "claude"]);
    assert_eq!(words(row(" other")), ["compat", "other"]);
    assert!(!out.stdout.contains('\u{1b}'), "server bytes are escaped: {out}");
    assert!(row("gone:").contains("not listed: cannot connect"), "{out}");
    assert!(row("`missing`").contains("does not list"), "{out}");
    assert_eq!(ollama.requests_to("/api/tags").len(), 1);

    let json = crate::fixture::run(org.command(&["--json", "models", "--remote"]).env("AK", "ak-1")).ok().json();
    let by = |p: &str| json.as_array().unwrap().iter().find(|r| r["provider"] == p).unwrap().clone();
    assert_eq!(by("olla")["url"], format!("{}/api/tags", ollama.url()));
    assert_eq!(by("compat")["models"][0], json!({"id": "qwen-7b", "used_by": ["qwen", "qwen2"]}));
    assert_eq!(by("compat")["models"][1]["id"], "evil\u{1b}[31m", "JSON keeps the id as sent");
    assert_eq!(by("gone")["ok"], false);
    // A wrong key is a failure of that provider only.
    let out = crate::fixture::run(org.command(&["--json", "models", "--remote"]).env("AK", "wrong")).ok().json();
    let claude = out.as_array().unwrap().iter().find(|r| r["provider"] == "claude").unwrap().clone();
    assert!(claude["error"].as_str().unwrap().contains("401"), "{claude:#}");
    assert!(!claude.to_string().contains("wrong"), "the key is never shown: {claude:#}");

    // A server that accepts and never answers costs its deadline, no more.
    let stuck = FakeServer::start(|_, _| Answer::Hang);
    let base = org.read("org/models.toml");
    org.write(
        "org/models.toml",
        format!("{base}\n[providers.stuck]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n", stuck.url()),
    );
    let t = Instant::now();
    let out = org.lemming_ok(&["--json", "models", "--remote", "--deadline-ms", "300"]).json();
    let stuck = out.as_array().unwrap().iter().find(|r| r["provider"] == "stuck").unwrap().clone();
    assert!(stuck["error"].as_str().unwrap().contains("no answer"), "{stuck:#}");
    let ms = stuck["elapsed_ms"].as_u64().unwrap();
    assert!((280..1500).contains(&ms), "{ms} ms for a deadline of 300 ms");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

/// Runs `doctor --detect` with `ports`, returns the JSON and the wall time.
fn detect(org: &TestOrg, ports: &[u16]) -> (Value, Duration) {
    let mut args = vec!["--json".to_string(), "doctor".into(), "--detect".into()];
    for p in ports {
        args.extend(["--port".to_string(), p.to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let t = Instant::now();
    let out = org.lemming_ok(&args);
    (out.json(), t.elapsed())
}

#[test]
fn doctor_detect_finds_servers_on_given_ports_within_the_deadline() {
    let compat = FakeServer::start(|r, _| match r.path.as_str() {
        "/v1/models" => Answer::json(json!({"data": [{"id": "served-model", "owned_by": "vllm"}]}).to_string()),
        _ => Answer::status(404, "{}"),
    });
    let ollama = FakeServer::start(|r, _| match r.path.as_str() {
        "/api/version" => Answer::json("{\"version\":\"0.5.7\"}"),
        "/api/tags" => Answer::json(json!({"models": [{"name": "llama3.2:latest"}]}).to_string()),
        _ => Answer::status(404, "404 page not found"),
    });
    let llamacpp = FakeServer::start(|r, _| match r.path.as_str() {
        "/props" => Answer::json(json!({"default_generation_settings": {}, "build_info": "b1"}).to_string()),
        "/v1/models" => Answer::json(json!({"data": [{"id": "gemma"}]}).to_string()),
        // llama-server also answers Ollama's paths; /props says what it is.
        "/api/version" => Answer::json("{\"version\":\"x\"}"),
        _ => Answer::status(404, "{}"),
    });
    // Accepts connections and never answers.
    let stuck = FakeServer::start(|_, _| Answer::Hang);
    let port = |s: &FakeServer| s.url().rsplit(':').next().unwrap().parse::<u16>().unwrap();
    let org = TestOrg::new();
    let (out, wall) = detect(&org, &[port(&compat), port(&ollama), port(&llamacpp), port(&stuck)]);
    let found = |p: u16| {
        out["found"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["port"] == p)
            .unwrap_or_else(|| panic!("{p}: {out:#}"))
            .clone()
    };
    let f = found(port(&compat));
    assert_eq!((f["server"].as_str(), f["models"].clone()), (Some("vllm"), json!(["served-model"])));
    let f = found(port(&ollama));
    assert_eq!((f["server"].as_str(), f["models"].clone()), (Some("ollama"), json!(["llama3.2:latest"])));
    assert_eq!(f["command"], format!("lemming models use {} --all", f["name"].as_str().unwrap()));
    let f = found(port(&llamacpp));
    assert_eq!(f["server"], "llama.cpp");
    let missed = out["missed"].as_array().unwrap().iter().find(|m| m["port"] == port(&stuck)).unwrap().clone();
    assert_eq!(missed["why"], "no answer within 500 ms");
    let ms = out["elapsed_ms"].as_u64().unwrap();
    assert!((450..1500).contains(&ms), "the hanging port is given up at the deadline: {ms} ms");
    assert!(wall < Duration::from_secs(5), "{wall:?}");

    // The suggestion works: added to models.toml, then `models use`.
    let f = found(port(&llamacpp));
    let base = org.read("org/models.toml");
    org.write("org/models.toml", format!("{base}\n{}", f["toml"].as_str().unwrap()));
    org.lemming_ok(&["validate"]);
    let name = f["name"].as_str().unwrap();
    org.lemming_ok(&["models", "use", name, "--all"]);
    assert!(org.read("agents/manager/resume.toml").contains(&format!("model = \"{name}\"")));
    // And the text output shows the same lines.
    let text = org.lemming_ok(&["doctor", "--detect", "--port", &port(&ollama).to_string()]);
    assert!(text.stdout.contains("found ollama on 127.0.0.1:"), "{text}");
    assert!(text.stdout.contains("[providers.ollama]"), "{text}");
    assert!(text.stdout.contains("lemming models use ollama --all"), "{text}");
    // No org is needed.
    let nowhere = tempfile::tempdir().unwrap();
    let p = port(&ollama).to_string();
    let out = crate::fixture::run(
        crate::fixture::clean_command(&["doctor", "--detect", "--port", &p]).current_dir(nowhere.path()),
    );
    assert!(out.clone().ok().stdout.contains("lemming models use ollama --all"), "{out}");
}

#[test]
fn doctor_detect_with_nothing_found_says_how_to_start_one() {
    let usual = [11434u16, 1234, 8080, 8000];
    if usual.iter().any(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok()) {
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            b"SKIPPED: doctor_detect_with_nothing_found_says_how_to_start_one: a server listens on a usual port\n",
        );
        return;
    }
    let org = TestOrg::new();
    let out = org.lemming_ok(&["doctor", "--detect", "--port", &free_port().to_string()]);
    assert!(out.stdout.contains("no model server found on 127.0.0.1"), "{out}");
    assert!(out.stdout.contains("help: start one"), "{out}");
    let json = detect(&org, &[]).0;
    assert_eq!(json["found"], json!([]));
    assert_eq!(json["missed"].as_array().unwrap().len(), 4);
}

#[test]
fn a_real_llama_server_is_listed_and_detected() {
    let test = "a_real_llama_server_is_listed_and_detected";
    let _llama = crate::peers::one_llama_at_a_time();
    let (Some(server), Some(gguf)) = (peer("LEMMING_LLAMA_SERVER"), peer("LEMMING_GGUF")) else {
        return skip(test, "llama-server or the Gemma GGUF");
    };
    let gemma = Gemma::start(&server, &gguf);
    let org = TestOrg::new();
    let base = org.read("org/models.toml");
    org.write(
        "org/models.toml",
        format!(
            "{base}\n[providers.llama]\nkind = \"openai\"\nbase_url = \"http://{}/v1\"\n\n[models.local]\nprovider = \"llama\"\nmodel = \"gemma-270m\"\n",
            gemma.addr
        ),
    );
    let out = org.lemming_ok(&["--json", "models", "--remote"]).json();
    assert_eq!(out[0]["models"][0], json!({"id": "gemma-270m", "used_by": ["local"]}), "{out:#}");
    let (found, _) = detect(&org, &[gemma.addr.port()]);
    let f = found["found"].as_array().unwrap().iter().find(|f| f["port"] == gemma.addr.port()).unwrap().clone();
    assert_eq!((f["server"].as_str(), f["models"][0].as_str()), (Some("llama.cpp"), Some("gemma-270m")), "{f:#}");
    let base = org.read("org/models.toml");
    org.write("org/models.toml", format!("{base}\n{}", f["toml"].as_str().unwrap()));
    org.lemming_ok(&["validate"]);
}
