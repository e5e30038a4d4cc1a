//! Synthetic orgs: N agents, M unread messages each, a chosen chart shape.
//!
//! In each inbox one message is a new request and the rest are replies, so the
//! mock writes exactly one reply per agent. With [`Calls`], every agent is
//! granted tools and its request also holds `/tool NAME {args}` lines, so the
//! mock calls those tools in the same turn.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use chrono::{Duration, Utc};
use lemming_engine::message::{self, Kind, Message, Priority, To};

/// Who may talk to whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Agent 0 talks with everyone; the others only with agent 0.
    Star,
    /// Each agent talks with its k nearest neighbours on each side of a ring.
    Ring(usize),
    /// Everyone talks with everyone.
    All,
}

impl Shape {
    /// Parses `star`, `ring:K` or `all`.
    pub fn parse(s: &str) -> Option<Shape> {
        match s {
            "star" => Some(Shape::Star),
            "all" => Some(Shape::All),
            _ => s.strip_prefix("ring:").and_then(|k| k.parse().ok()).map(Shape::Ring),
        }
    }

    fn neighbours(self, i: usize, n: usize) -> Vec<usize> {
        match self {
            Shape::Star if i == 0 => (1..n).collect(),
            Shape::Star => vec![0],
            Shape::Ring(k) => {
                let mut v: Vec<usize> =
                    (1..=k.min((n - 1) / 2).max(1)).flat_map(|d| [(i + d) % n, (i + n - d) % n]).collect();
                v.sort();
                v.dedup();
                v.retain(|j| *j != i);
                v
            }
            Shape::All => (0..n).filter(|j| *j != i).collect(),
        }
    }
}

impl std::fmt::Display for Shape {
    /// The name `parse` reads back.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shape::Star => f.write_str("star"),
            Shape::All => f.write_str("all"),
            Shape::Ring(k) => write!(f, "ring:{k}"),
        }
    }
}

/// The tool calls each agent makes in a turn (the mock calls a tool for each
/// line `/tool NAME {args}` of its request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Calls {
    /// No tools granted, none called.
    None,
    /// `write_file` granted; this many calls, each to a path of its own.
    WriteFile(usize),
    /// `run_command` and `calculate` granted (`commands = ["true"]`); this
    /// many `run_command {"program":"true"}` calls.
    RunTrue(usize),
    /// The same grants; this many `calculate` calls.
    Calculate(usize),
}

impl Calls {
    /// Parses `none`, `write_file:K`, `run_command:K` or `calculate:K`.
    pub fn parse(s: &str) -> Option<Calls> {
        if s == "none" {
            return Some(Calls::None);
        }
        let (tool, k) = s.split_once(':')?;
        let k = k.parse().ok()?;
        match tool {
            "write_file" => Some(Calls::WriteFile(k)),
            "run_command" => Some(Calls::RunTrue(k)),
            "calculate" => Some(Calls::Calculate(k)),
            _ => None,
        }
    }

    /// The `[permissions]` lines that grant the tools.
    fn grants(self) -> &'static str {
        match self {
            Calls::None => "",
            Calls::WriteFile(_) => "tools = [\"write_file\"]\n",
            Calls::RunTrue(_) | Calls::Calculate(_) => {
                "tools = [\"run_command\", \"calculate\"]\ncommands = [\"true\"]\n"
            }
        }
    }

    /// The `/tool` lines of agent `me`'s request in injection `round`, each
    /// after a newline.
    fn lines(self, me: &str, round: usize) -> String {
        let (k, tool) = match self {
            Calls::None => return String::new(),
            Calls::WriteFile(k) => (k, "write_file"),
            Calls::RunTrue(k) => (k, "run_command"),
            Calls::Calculate(k) => (k, "calculate"),
        };
        (0..k)
            .map(|j| {
                let args = match self {
                    Calls::WriteFile(_) => serde_json::json!({
                        "path": format!("bench/{me}-r{round}-{j}.md"),
                        "content": format!("Report {j} of {me}, round {round}: all items checked.\n"),
                    }),
                    Calls::RunTrue(_) => serde_json::json!({"program": "true"}),
                    _ => serde_json::json!({"expression": format!("{j} + 2 * 3")}),
                };
                format!("\n/tool {tool} {args}")
            })
            .collect()
    }
}

impl std::fmt::Display for Calls {
    /// The name `parse` reads back.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Calls::None => f.write_str("none"),
            Calls::WriteFile(k) => write!(f, "write_file:{k}"),
            Calls::RunTrue(k) => write!(f, "run_command:{k}"),
            Calls::Calculate(k) => write!(f, "calculate:{k}"),
        }
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Agents.
    pub agents: usize,
    /// Unread messages per agent.
    pub unread: usize,
    /// Chart shape.
    pub shape: Shape,
    /// Mock latency per call, in ms.
    pub latency_ms: u64,
    /// `max_parallel` in org.toml.
    pub max_parallel: usize,
    /// The tool calls each agent makes.
    pub calls: Calls,
    /// `sandbox` in org.toml (`None`: left out, the default).
    pub sandbox: Option<String>,
}

/// The name of agent `i`.
pub fn name(i: usize) -> String {
    format!("a{i:04}")
}

/// Writes the org into `dir` (which must be empty or missing).
pub fn generate(dir: &Path, spec: &Spec) -> std::io::Result<()> {
    let n = spec.agents;
    fs::create_dir_all(dir.join("org"))?;
    fs::write(
        dir.join("org/org.toml"),
        format!(
            "max_parallel = {}\nmax_mail_per_prompt = {}\n{}",
            spec.max_parallel,
            spec.unread.max(1),
            spec.sandbox.as_ref().map(|s| format!("sandbox = \"{s}\"\n")).unwrap_or_default()
        ),
    )?;
    fs::write(
        dir.join("org/models.toml"),
        format!(
            "[providers.m]\nkind = \"mock\"\nlatency_ms = {}\n[models.default]\nprovider = \"m\"\ninput_price = 1.0\noutput_price = 2.0\n",
            spec.latency_ms
        ),
    )?;
    for i in 0..n {
        let me = name(i);
        let nb = spec.shape.neighbours(i, n);
        let list = match spec.shape {
            Shape::All => "\"*\"".to_string(),
            _ => nb.iter().map(|j| format!("\"{}\"", name(*j))).collect::<Vec<_>>().join(", "),
        };
        let adir = dir.join("agents").join(&me);
        for sub in ["inbox/new", "inbox/cur", "inbox/tmp", "outbox/new", "outbox/sent", "outbox/tmp"] {
            fs::create_dir_all(adir.join(sub))?;
        }
        fs::write(
            adir.join("resume.toml"),
            format!(
                "name = \"{me}\"\ntitle = \"Synthetic\"\nmodel = \"default\"\ninstructions = \"Answer requests.\"\n[permissions]\nsend_to = [{list}]\nread_from = [{list}]\n{}[budget]\ncredits = 1000.0\n",
                spec.calls.grants()
            ),
        )?;
    }
    inject(dir, spec, 0)
}

/// Clears every inbox's unread mail and writes `spec.unread` fresh messages into
/// each (one new request, the rest replies), then syncs, as mail delivered by
/// earlier turns would be. `round` keeps ids unique across injections.
pub fn inject(dir: &Path, spec: &Spec, round: usize) -> std::io::Result<()> {
    inject_aside(dir, spec, round, None)
}

/// [`inject`], moving the unread mail it clears into the folder `aside`
/// (on the same file system, outside the org) instead of removing it: a
/// bench that times first turns beside warm ones must free no inodes
/// between them (see `scale.rs`).
pub fn inject_aside(dir: &Path, spec: &Spec, round: usize, aside: Option<&Path>) -> std::io::Result<()> {
    let n = spec.agents;
    let base = Utc::now() - Duration::hours(1);
    let org = dir.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    if let Some(aside) = aside {
        fs::create_dir_all(aside)?;
    }
    for i in 0..n {
        let me = name(i);
        let nb = spec.shape.neighbours(i, n);
        let new_dir = dir.join("agents").join(&me).join("inbox/new");
        for e in fs::read_dir(&new_dir)?.flatten() {
            match aside {
                Some(aside) => {
                    let to = aside.join(format!("{org}-{me}-{round}-{}", e.file_name().to_string_lossy()));
                    fs::rename(e.path(), to)?
                }
                None => fs::remove_file(e.path())?,
            }
        }
        for k in 0..spec.unread {
            let from = name(nb[k % nb.len()]);
            let at = base + Duration::milliseconds((k * n + i) as i64);
            let id = format!("{}-{from}-r{round}-{i:04}{k:04}", message::id_stamp(at));
            let mut body = String::new();
            let _ = write!(body, "Message {k} for {me}: please look at item {} and report back.", k * 7 + i);
            if k == 0 {
                body.push_str(&spec.calls.lines(&me, round));
            }
            let msg = Message {
                id: id.clone(),
                from,
                to: To(vec![me.clone()]),
                subject: None,
                body,
                priority: Priority::Normal,
                reply_to: (k > 0).then(|| format!("earlier-{i}-{k}")),
                thread: id,
                created_at: at,
                turn: 0,
                ttl_turns: None,
                kind: Kind::Message,
                ack_required: false,
            };
            fs::write(new_dir.join(lemming_engine::mailbox::message_file(&msg.id)), msg.to_bytes())?;
        }
    }
    lemming_engine::fsx::sync_fs(dir).map_err(|e| std::io::Error::other(e.to_string()))
}

impl Calls {
    /// How many calls each agent makes.
    pub fn count(self) -> usize {
        match self {
            Calls::None => 0,
            Calls::WriteFile(k) | Calls::RunTrue(k) | Calls::Calculate(k) => k,
        }
    }
}

/// Checks, after a turn on an org made by [`generate`] or [`inject`], that
/// every agent got one `tool_result` per call and that each says `ok`, so a
/// time is never reported for calls that were refused. The error names the
/// agent and quotes the result.
pub fn check_results(dir: &Path, spec: &Spec) -> Result<(), String> {
    let want = spec.calls.count();
    for i in 0..spec.agents {
        let me = name(i);
        let new_dir = dir.join("agents").join(&me).join("inbox/new");
        let mut got = 0;
        for e in fs::read_dir(&new_dir).map_err(|e| format!("{}: {e}", new_dir.display()))?.flatten() {
            let bytes = fs::read(e.path()).map_err(|e| e.to_string())?;
            let Ok(m) = Message::parse(&bytes) else { continue };
            if m.kind != Kind::ToolResult {
                continue;
            }
            let body: serde_json::Value = serde_json::from_str(&m.body).unwrap_or_default();
            if body["ok"] != serde_json::Value::Bool(true) {
                return Err(format!("{me}: a tool call failed: {}", m.body));
            }
            got += 1;
        }
        if got != want {
            return Err(format!("{me}: {got} tool results, expected {want}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(calls: Calls) -> Spec {
        Spec { agents: 3, unread: 4, shape: Shape::Ring(1), latency_ms: 0, max_parallel: 8, calls, sandbox: None }
    }

    fn unread(dir: &Path, agent: &str) -> Vec<Message> {
        let mut v: Vec<Message> = fs::read_dir(dir.join("agents").join(agent).join("inbox/new"))
            .unwrap()
            .map(|e| Message::parse(&fs::read(e.unwrap().path()).unwrap()).unwrap())
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    #[test]
    fn calls_read_back_what_they_print() {
        for c in [Calls::None, Calls::WriteFile(1), Calls::RunTrue(10), Calls::Calculate(0)] {
            assert_eq!(Calls::parse(&c.to_string()), Some(c));
        }
        for bad in ["", "write_file", "write_file:x", "read_file:1", "none:1"] {
            assert_eq!(Calls::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn write_file_grants_the_tool_and_puts_one_call_in_the_request_to_a_path_of_its_own() {
        let tmp = tempfile::tempdir().unwrap();
        generate(tmp.path(), &spec(Calls::WriteFile(1))).unwrap();
        let mut paths = Vec::new();
        for i in 0..3 {
            let resume = fs::read_to_string(tmp.path().join("agents").join(name(i)).join("resume.toml")).unwrap();
            assert!(resume.contains("tools = [\"write_file\"]\n"), "{resume}");
            let mail = unread(tmp.path(), &name(i));
            assert_eq!(mail.len(), 4, "the same mail count as without tools");
            let lines: Vec<&str> =
                mail.iter().flat_map(|m| m.body.lines()).filter(|l| l.starts_with("/tool ")).collect();
            assert_eq!(lines.len(), 1, "{lines:?}");
            let requests: Vec<&Message> = mail.iter().filter(|m| m.reply_to.is_none()).collect();
            assert_eq!(requests.len(), 1);
            assert!(requests[0].body.contains("\n/tool write_file {"), "the line is in the request the mock acts on");
            let args: serde_json::Value =
                serde_json::from_str(lines[0].strip_prefix("/tool write_file ").unwrap()).unwrap();
            assert!(args["content"].as_str().is_some_and(|c| !c.is_empty()));
            paths.push(args["path"].as_str().unwrap().to_string());
        }
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), 3, "each agent writes its own path: {paths:?}");
        // A second round writes other paths.
        inject(tmp.path(), &spec(Calls::WriteFile(1)), 1).unwrap();
        let again = unread(tmp.path(), &name(0));
        let line = again.iter().flat_map(|m| m.body.lines()).find(|l| l.starts_with("/tool ")).unwrap();
        assert!(line.contains("-r1-0.md"), "{line}");
    }

    #[test]
    fn without_calls_nothing_is_granted_or_asked() {
        let tmp = tempfile::tempdir().unwrap();
        generate(tmp.path(), &spec(Calls::None)).unwrap();
        let resume = fs::read_to_string(tmp.path().join("agents/a0000/resume.toml")).unwrap();
        assert!(!resume.contains("tools"), "{resume}");
        assert!(unread(tmp.path(), "a0000").iter().all(|m| !m.body.contains("/tool")));
        // Zero calls still grant the tool: the baseline differs only in the calls.
        let tmp = tempfile::tempdir().unwrap();
        generate(tmp.path(), &spec(Calls::WriteFile(0))).unwrap();
        assert!(fs::read_to_string(tmp.path().join("agents/a0000/resume.toml")).unwrap().contains("write_file"));
        assert!(unread(tmp.path(), "a0000").iter().all(|m| !m.body.contains("/tool")));
    }

    #[test]
    fn commands_grant_both_tools_the_program_and_the_sandbox() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Spec { sandbox: Some("landlock".into()), ..spec(Calls::RunTrue(3)) };
        generate(tmp.path(), &s).unwrap();
        let org = fs::read_to_string(tmp.path().join("org/org.toml")).unwrap();
        assert!(org.contains("sandbox = \"landlock\"\n"), "{org}");
        let resume = fs::read_to_string(tmp.path().join("agents/a0001/resume.toml")).unwrap();
        assert!(resume.contains("tools = [\"run_command\", \"calculate\"]\ncommands = [\"true\"]\n"), "{resume}");
        let bodies: String = unread(tmp.path(), "a0001").iter().map(|m| m.body.clone()).collect();
        assert_eq!(bodies.matches("\n/tool run_command {\"program\":\"true\"}").count(), 3, "{bodies}");
        let tmp = tempfile::tempdir().unwrap();
        generate(tmp.path(), &spec(Calls::Calculate(2))).unwrap();
        let bodies: String = unread(tmp.path(), "a0002").iter().map(|m| m.body.clone()).collect();
        assert_eq!(bodies.matches("\n/tool calculate {\"expression\":").count(), 2, "{bodies}");
        assert!(!fs::read_to_string(tmp.path().join("org/org.toml")).unwrap().contains("sandbox"));
    }

    #[test]
    fn check_results_wants_one_ok_result_per_call() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Spec { unread: 1, ..spec(Calls::WriteFile(1)) };
        generate(tmp.path(), &s).unwrap();
        let put = |agent: &str, id: &str, ok: bool| {
            let body = if ok {
                r#"{"tool":"write_file","ok":true,"output":"wrote 3 bytes","truncated":false}"#
            } else {
                r#"{"tool":"write_file","ok":false,"error":"not permitted: no","truncated":false}"#
            };
            let msg = Message {
                id: id.into(),
                from: "lemming".into(),
                to: To(vec![agent.into()]),
                subject: None,
                body: body.into(),
                priority: Priority::Normal,
                reply_to: Some("c1.a0001".into()),
                thread: id.into(),
                created_at: Utc::now(),
                turn: 1,
                ttl_turns: None,
                kind: Kind::ToolResult,
                ack_required: false,
            };
            let dir = tmp.path().join("agents").join(agent).join("inbox/new");
            fs::write(dir.join(lemming_engine::mailbox::message_file(&msg.id)), msg.to_bytes()).unwrap();
        };
        let err = check_results(tmp.path(), &s).unwrap_err();
        assert_eq!(err, "a0000: 0 tool results, expected 1");
        put("a0000", "20260101T000000.000Z-lemming-t1", true);
        put("a0001", "20260101T000000.000Z-lemming-t2", true);
        put("a0002", "20260101T000000.000Z-lemming-t3", false);
        let err = check_results(tmp.path(), &s).unwrap_err();
        assert!(err.starts_with("a0002: a tool call failed: ") && err.contains("not permitted"), "{err}");
        put("a0002", "20260101T000000.000Z-lemming-t3", true);
        check_results(tmp.path(), &s).unwrap();
        put("a0002", "20260101T000000.000Z-lemming-t4", true);
        assert_eq!(check_results(tmp.path(), &s).unwrap_err(), "a0002: 2 tool results, expected 1");
    }
}
