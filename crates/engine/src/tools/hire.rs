//! `hire_agent {name, title, instructions, model?, send_to, read_from, credits?}`:
//! a new agent, written as `agents/NAME/resume.toml` after the same validation
//! as a hand-edited resume; it joins the org on the next turn.
//!
//! The rules, each checked before anything is written:
//! - `name` is a valid agent name, not `lemming` or `human`, not an existing
//!   folder under `agents/`, and not the name of a former agent whose charges
//!   or top-ups are still in the ledger (they would count against the new one);
//! - `send_to` and `read_from` name only the hirer and agents the hirer may
//!   itself write to (its own `send_to`), never `"*"`;
//! - `model` is a key of `org/models.toml` (the hirer's own when left out);
//! - `credits` is at most `max_hire_credits` of org.toml (more is refused,
//!   not lowered), [`DEFAULT_CREDITS`] or that cap, whichever is less, when
//!   left out;
//! - the hired agent is granted no tools: people grant tools by editing its
//!   resume.
//!
//! The resume is then checked like a hand-edited one (the resume parser and
//! the org's checks of model keys and agent names), written into a temporary
//! folder, and renamed into `agents/` as a whole: no reader ever sees half an
//! agent. Every hire, refused or not, is in the audit log.

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::files::kind;
use super::{Ctx, Outcome};
use crate::audit;
use crate::error::{PathError, WithPath};
use crate::fsx;
use crate::name::{AgentName, ENGINE, HUMAN, NAME_RULE};
use crate::org::Layout;
use crate::resume::MAX_INSTRUCTIONS_BYTES;

const TOOL: &str = "hire_agent";

/// The arguments `hire_agent` takes.
pub const ARGS: [&str; 7] = ["name", "title", "instructions", "model", "send_to", "read_from", "credits"];

/// The credits of a hire that gives none (lowered to `max_hire_credits` when that is less).
pub const DEFAULT_CREDITS: f64 = 10.0;

/// The longest `title`, in characters.
pub const MAX_TITLE_CHARS: usize = 200;

/// Hires the agent that `args` describes, and records the hire, refused or
/// not, in the audit log.
pub fn run(ctx: &Ctx<'_>, args: &Value) -> Outcome {
    let hired = check(ctx, args).and_then(|h| write(&ctx.org.layout, &h).map(|()| h));
    let what = match &hired {
        Ok(h) => h.what(),
        Err(_) => given(args),
    };
    let entry = audit::Entry::new(ctx.now, ctx.agent, "hire", what, hired.as_ref().map(|_| ())).in_turn(ctx.turn);
    let unaudited = audit::append(&ctx.org.layout, &[entry]).err();
    if let Some(e) = &unaudited {
        tracing::warn!(agent = ctx.agent, error = %e, "a hire could not be written to the audit log");
    }
    match hired {
        Ok(h) => {
            let mut out = format!(
                "hired {} (model {}, credits {}); it joins on the next turn",
                h.name,
                h.model,
                credits_text(h.credits)
            );
            for note in chart_notes(ctx, &h) {
                out.push_str("\nnote: ");
                out.push_str(&note);
            }
            if let Some(e) = unaudited {
                out.push_str(&format!("\nnote: the audit log could not be written: {e}"));
            }
            Outcome::ok(TOOL, out, false)
        }
        Err(e) => Outcome::err(TOOL, e),
    }
}

/// What the chart will not let through yet: a message needs both sides
/// (the sender's `send_to` and the recipient's `read_from`), and the
/// resumes of the agents the new one names do not name it yet.
fn chart_notes(ctx: &Ctx<'_>, h: &Hire) -> Vec<String> {
    let new = h.name.as_str();
    let resume = |n: &str| if n == ctx.agent { Some(ctx.resume) } else { ctx.org.agents.get(n).map(|r| &**r) };
    let who = |n: &AgentName| if n.as_str() == ctx.agent { "you".to_string() } else { n.to_string() };
    let cannot_write: Vec<String> =
        h.read_from.iter().filter(|n| resume(n.as_str()).is_some_and(|r| !r.send_to.allows(new))).map(who).collect();
    let do_not_read: Vec<String> =
        h.send_to.iter().filter(|n| resume(n.as_str()).is_some_and(|r| !r.read_from.allows(new))).map(who).collect();
    let mut notes = Vec::new();
    if !cannot_write.is_empty() {
        notes.push(format!(
            "until a person adds {new} to their send_to, these cannot write to it: {}",
            cannot_write.join(", ")
        ));
    }
    if !do_not_read.is_empty() {
        notes.push(format!(
            "until a person adds {new} to their read_from, its mail to these bounces: {}",
            do_not_read.join(", ")
        ));
    }
    notes
}

/// A hire that passed every check.
#[derive(Debug, Clone, PartialEq)]
struct Hire {
    name: AgentName,
    title: String,
    instructions: String,
    model: String,
    send_to: BTreeSet<AgentName>,
    read_from: BTreeSet<AgentName>,
    credits: f64,
    /// The resume's text, as it will be written.
    text: String,
}

impl Hire {
    /// The audit log's `what` of a done hire (the instructions are in the resume).
    fn what(&self) -> Value {
        json!({
            "name": self.name,
            "title": self.title,
            "model": self.model,
            "send_to": self.send_to,
            "read_from": self.read_from,
            "credits": self.credits,
        })
    }
}

/// The audit log's `what` of a refused hire: the arguments as given but the
/// instructions (the log bounds the rest).
fn given(args: &Value) -> Value {
    match args {
        Value::Object(m) => Value::Object(
            m.iter().filter(|(k, _)| k.as_str() != "instructions").map(|(k, v)| (k.clone(), v.clone())).collect(),
        ),
        other => other.clone(),
    }
}

/// A number of credits as people write it (`10`, `2.5`).
fn credits_text(c: f64) -> String {
    format!("{c}")
}

/// The argument `key` as a string: `None` when absent or null.
fn opt_str<'a>(args: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, String> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(format!("`{key}` must be a string, not {}", kind(other))),
    }
}

/// The required argument `key` as a non-blank string.
fn req_str<'a>(args: &'a Map<String, Value>, key: &str) -> Result<&'a str, String> {
    match opt_str(args, key)? {
        Some(s) if !s.trim().is_empty() => Ok(s),
        Some(_) => Err(format!("`{key}` is empty")),
        None => Err(format!("`{key}` is missing (hire_agent takes {})", ARGS.join(", "))),
    }
}

/// Checks every argument and the resume they make; `Err` says what is wrong
/// and names the argument.
fn check(ctx: &Ctx<'_>, args: &Value) -> Result<Hire, String> {
    let Some(args) = args.as_object() else {
        return Err(format!("the arguments of `{TOOL}` must be a JSON object, not {}", kind(args)));
    };
    if let Some(k) = args.keys().find(|k| !ARGS.contains(&k.as_str())) {
        let k: String = crate::term::line(k).chars().take(64).collect();
        let tools = if k == "tools" || k == "permissions" {
            "; a hired agent starts with no tools: a person grants them in its resume"
        } else {
            ""
        };
        return Err(format!("unknown argument `{k}` (hire_agent takes {}){tools}", ARGS.join(", ")));
    }
    let layout = &ctx.org.layout;

    let raw = req_str(args, "name")?;
    let name = AgentName::new(raw).map_err(|_| {
        format!(
            "`name`: {:?} is not a valid agent name: {NAME_RULE}",
            crate::term::line(&raw.chars().take(80).collect::<String>())
        )
    })?;
    if name.as_str() == ENGINE || name.as_str() == HUMAN {
        return Err(format!("`name`: `{name}` is reserved ({}); choose another name", reserved(name.as_str())));
    }
    let folder = layout.agent_dir(name.as_str());
    if std::fs::symlink_metadata(&folder).is_ok() {
        return Err(format!("`name`: agents/{name} exists already; choose another name"));
    }
    let ledger = crate::ledger::Ledger::load(&layout.ledger()).map_err(|e| format!("cannot read the ledger: {e}"))?;
    let past = ledger.balance(name.as_str(), 0.0);
    if past.budget != 0.0 || past.spent != 0.0 {
        return Err(format!(
            "`name`: `{name}` was the name of a former agent whose charges or top-ups are still in \
             org/state/ledger.jsonl and would count against the new one; choose another name"
        ));
    }

    let title = req_str(args, "title")?.trim();
    if title.chars().any(char::is_control) {
        return Err("`title` must be one line, without control characters".into());
    }
    if title.chars().count() > MAX_TITLE_CHARS {
        return Err(format!("`title` is {} characters; the limit is {MAX_TITLE_CHARS}", title.chars().count()));
    }
    let instructions = req_str(args, "instructions")?;
    if instructions.len() > MAX_INSTRUCTIONS_BYTES {
        return Err(format!(
            "`instructions` is {} bytes; the limit is {MAX_INSTRUCTIONS_BYTES} bytes: shorten them",
            instructions.len()
        ));
    }

    let model = match opt_str(args, "model")? {
        Some(m) => m.to_string(),
        None => ctx.resume.model.clone().ok_or_else(|| {
            format!(
                "`model` is missing and {} has no model of its own to pass on (known: {})",
                ctx.agent,
                ctx.org.models.known_keys()
            )
        })?,
    };
    if !ctx.org.models.models.contains_key(&model) {
        let shown: String = crate::term::line(&model).chars().take(64).collect();
        let keys = ctx.org.models.models.keys().map(String::as_str);
        return Err(format!("`model`: {}", crate::suggest::unknown(crate::suggest::Kind::ModelKey, &shown, keys)));
    }

    let folders = crate::org::agent_folders(layout);
    let send_to = names(ctx, args, "send_to", &name, &folders)?;
    let read_from = names(ctx, args, "read_from", &name, &folders)?;

    let cap = ctx.org.settings.max_hire_credits;
    let credits = match args.get("credits") {
        None | Some(Value::Null) => DEFAULT_CREDITS.min(cap),
        Some(Value::Number(n)) => {
            let c = n
                .as_f64()
                .filter(|c| c.is_finite() && *c >= 0.0)
                .ok_or_else(|| format!("`credits` must be a number from 0 to {}, not {n}", credits_text(cap)))?;
            if c > cap {
                return Err(format!(
                    "`credits`: {} is more than this org lets an agent hire with (max_hire_credits = {} in \
                     org/org.toml); ask for at most {}",
                    credits_text(c),
                    credits_text(cap),
                    credits_text(cap)
                ));
            }
            c
        }
        Some(other) => return Err(format!("`credits` must be a number, not {}", kind(other))),
    };

    let text = resume_text(ctx, &name, title, instructions, &model, &send_to, &read_from, credits)?;
    let hire = Hire {
        name,
        title: title.to_string(),
        instructions: instructions.to_string(),
        model,
        send_to,
        read_from,
        credits,
        text,
    };
    validate(ctx, &hire, folders)?;
    Ok(hire)
}

/// Why a name is reserved.
fn reserved(name: &str) -> &'static str {
    if name == ENGINE {
        "the engine sends bounces and tool results as it"
    } else {
        "it is the agent people drive from the shell"
    }
}

/// The list argument `field` (`send_to` or `read_from`): agent names that
/// are the hirer or agents the hirer may write to, each an agent folder.
fn names(
    ctx: &Ctx<'_>,
    args: &Map<String, Value>,
    field: &str,
    new: &AgentName,
    folders: &[String],
) -> Result<BTreeSet<AgentName>, String> {
    let items = match args.get(field) {
        Some(Value::Array(items)) => items,
        None | Some(Value::Null) => {
            return Err(format!(
                "`{field}` is missing: list agent names (yours, {}, and agents you may write to)",
                ctx.agent
            ))
        }
        Some(other) => return Err(format!("`{field}` must be a list of agent names, not {}", kind(other))),
    };
    let mut out = BTreeSet::new();
    for item in items {
        let Some(s) = item.as_str() else {
            return Err(format!("`{field}` must list agent names as strings, not {}", kind(item)));
        };
        if s == "*" {
            return Err(format!(
                "`{field}`: \"*\" (anyone) is not allowed for a hired agent: list the agents by name (you, {}, and \
                 agents you may write to)",
                ctx.agent
            ));
        }
        let shown: String = crate::term::line(s).chars().take(80).collect();
        let n =
            AgentName::new(s).map_err(|_| format!("`{field}`: {shown:?} is not a valid agent name: {NAME_RULE}"))?;
        if &n == new {
            return Err(format!("`{field}`: the new agent need not name itself"));
        }
        if n.as_str() != ctx.agent && !ctx.resume.send_to.allows(n.as_str()) {
            return Err(format!(
                "`{field}`: you may not name `{n}`: a hired agent may name only you ({}) and agents you may write to \
                 (your send_to: {})",
                ctx.agent,
                ctx.resume.send_to.display()
            ));
        }
        if folders.binary_search_by(|f| f.as_str().cmp(n.as_str())).is_err() {
            let folders = folders.iter().map(String::as_str);
            return Err(format!(
                "`{field}`: {}",
                crate::suggest::unknown(crate::suggest::Kind::Agent, n.as_str(), folders)
            ));
        }
        out.insert(n);
    }
    Ok(out)
}

/// `agents/NAME/resume.toml` as written.
#[derive(Serialize)]
struct ResumeToml<'a> {
    name: &'a str,
    title: &'a str,
    description: String,
    model: &'a str,
    instructions: &'a str,
    permissions: Permissions<'a>,
    budget: Budget,
}

#[derive(Serialize)]
struct Permissions<'a> {
    send_to: Vec<&'a str>,
    read_from: Vec<&'a str>,
    tools: Vec<&'a str>,
}

#[derive(Serialize)]
struct Budget {
    credits: f64,
}

/// The resume's text: a comment that says who hired it, then the fields,
/// every string escaped by the TOML serializer.
#[allow(clippy::too_many_arguments)]
fn resume_text(
    ctx: &Ctx<'_>,
    name: &AgentName,
    title: &str,
    instructions: &str,
    model: &str,
    send_to: &BTreeSet<AgentName>,
    read_from: &BTreeSet<AgentName>,
    credits: f64,
) -> Result<String, String> {
    fn list(s: &BTreeSet<AgentName>) -> Vec<&str> {
        s.iter().map(AgentName::as_str).collect()
    }
    let doc = ResumeToml {
        name: name.as_str(),
        title,
        description: format!("Hired by {}.", ctx.agent),
        model,
        instructions,
        permissions: Permissions { send_to: list(send_to), read_from: list(read_from), tools: Vec::new() },
        budget: Budget { credits },
    };
    let body = toml::to_string(&doc).map_err(|e| format!("cannot write the resume as TOML: {e}"))?;
    Ok(format!(
        "# Hired by {} with hire_agent on turn {} ({}).\n# Edit it like any other resume; tools are granted in \
         [permissions] tools.\n\n{body}",
        ctx.agent,
        ctx.turn,
        ctx.now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    ))
}

/// Runs the resume through the same checks as a hand-edited one: the resume
/// parser, then the org's checks of model keys and agent names.
fn validate(ctx: &Ctx<'_>, hire: &Hire, mut folders: Vec<String>) -> Result<(), String> {
    let path = ctx.org.layout.agent_dir(hire.name.as_str()).join("resume.toml");
    let problems = |d: Vec<crate::error::Diagnostic>| {
        let lines: Vec<String> = d.iter().map(|d| d.to_string()).collect();
        format!("the resume would be invalid:\n{}", lines.join("\n"))
    };
    let file = crate::resume::parse(&path, hire.text.clone(), hire.name.as_str()).map_err(problems)?;
    // Kept sorted, as the org lists its agent folders.
    if let Err(at) = folders.binary_search_by(|f| f.as_str().cmp(hire.name.as_str())) {
        folders.insert(at, hire.name.to_string());
    }
    crate::org::check_refs(
        file,
        &ctx.org.models,
        true,
        Some(&ctx.org.tools),
        &crate::org::Known::new(&folders),
        &ctx.org.settings,
    )
    .map_err(problems)?;
    Ok(())
}

/// Writes `agents/NAME/` with its resume: into a new folder under
/// `org/state/tmp/`, synced, then renamed into `agents/` (so the agent
/// appears whole or not at all). On any failure nothing is left behind.
fn write(layout: &Layout, hire: &Hire) -> Result<(), String> {
    let target = layout.agent_dir(hire.name.as_str());
    let fail = |e: PathError| format!("could not create agents/{}: {e}; no agent was hired", hire.name);
    let tmp_dir = layout.state_tmp();
    std::fs::create_dir_all(&tmp_dir).with_path(&tmp_dir).map_err(fail)?;
    let tmp = fsx::tmp_path(&tmp_dir, &target);
    std::fs::create_dir(&tmp).with_path(&tmp).map_err(fail)?;
    let placed = fsx::write_atomic(&tmp_dir, &tmp.join("resume.toml"), hire.text.as_bytes()).and_then(|()| {
        // A folder of that name that appeared meanwhile is not replaced
        // (a rename onto a folder that holds anything fails too).
        if std::fs::symlink_metadata(&target).is_ok() {
            return Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists)).with_path(&target);
        }
        std::fs::rename(&tmp, &target).with_path(&target)
    });
    if let Err(e) = placed {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(fail(e));
    }
    if let Err(e) = fsx::sync_dir(&layout.agents_dir()) {
        // Not durable: take it back rather than report a hire that a crash may undo.
        let _ = std::fs::remove_dir_all(&target);
        return Err(fail(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::org::Org;
    use crate::testing::{edit, new_org};
    use crate::tools::Call;

    fn at() -> chrono::DateTime<chrono::Utc> {
        "2026-03-04T05:06:07Z".parse().unwrap()
    }

    /// Calls `hire_agent` as `agent` through the dispatcher, like a turn does.
    fn call(org: &Org, agent: &str, args: Value) -> Outcome {
        let resume = org.agent(agent).unwrap();
        let ctx = Ctx { org, agent, resume, turn: 4, now: at() };
        let call = Call { id: "c1".into(), tool: TOOL.into(), args };
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(crate::tools::run(&ctx, &call))
    }

    /// The default org, whose `hr` is granted `hire_agent`.
    fn org() -> (tempfile::TempDir, std::path::PathBuf, Org) {
        let (d, root) = new_org();
        let org = Org::load(&root).unwrap();
        assert!(org.agent("hr").unwrap().tools.iter().any(|t| t == TOOL));
        (d, root, org)
    }

    fn scribe() -> Value {
        json!({
            "name": "scribe",
            "title": "Scribe",
            "instructions": "Write \"minutes\" of every meeting.\nKeep them short.\n'''\"\"\"\\",
            "send_to": ["hr", "manager"],
            "read_from": ["hr"],
        })
    }

    fn with(mut v: Value, key: &str, x: Value) -> Value {
        v[key] = x;
        v
    }

    fn audit(root: &Path) -> Vec<audit::Entry> {
        audit::read(&Layout::new(root)).unwrap()
    }

    #[test]
    fn a_valid_hire_writes_a_resume_the_org_loads_and_is_in_the_audit_log() {
        let (_d, root, org) = org();
        let out = call(&org, "hr", scribe());
        assert!(out.ok, "{out:?}");
        assert_eq!(
            out.output.as_deref(),
            Some(
                "hired scribe (model default, credits 10); it joins on the next turn\n\
                 note: until a person adds scribe to their send_to, these cannot write to it: you\n\
                 note: until a person adds scribe to their read_from, its mail to these bounces: you, manager"
            )
        );
        let again = Org::load(&root).unwrap();
        assert!(again.problems().is_empty(), "{:?}", again.problems());
        let r = again.agent("scribe").unwrap();
        assert_eq!(r.title, "Scribe");
        assert_eq!(r.instructions, scribe()["instructions"].as_str().unwrap());
        assert_eq!(r.model.as_deref(), Some("default"));
        assert_eq!((r.send_to.display(), r.read_from.display()), ("hr, manager".into(), "hr".into()));
        assert!(r.tools.is_empty() && r.commands.is_empty());
        assert_eq!(r.credits, 10.0);
        // It starts with exactly those credits.
        let ledger = crate::ledger::Ledger::load(&again.layout.ledger()).unwrap();
        assert_eq!(ledger.balance("scribe", r.credits).left, 10.0);
        // As the notes say, the chart lets nothing through until people edit the other resumes.
        assert!(again.chart().check("hr", "scribe").is_err() && again.chart().check("scribe", "hr").is_err());
        edit(&root, "agents/hr/resume.toml", "send_to = [\"manager\"]", "send_to = [\"manager\", \"scribe\"]");
        edit(&root, "agents/hr/resume.toml", "read_from = [\"manager\"]", "read_from = [\"manager\", \"scribe\"]");
        let again = Org::load(&root).unwrap();
        assert!(again.chart().check("hr", "scribe").is_ok() && again.chart().check("scribe", "hr").is_ok());

        let log = audit(&root);
        assert_eq!(log.len(), 1);
        assert_eq!((log[0].who.as_str(), log[0].action.as_str(), log[0].outcome.as_str()), ("hr", "hire", "ok"));
        assert_eq!(log[0].turn, Some(4));
        assert_eq!(
            log[0].what,
            json!({"name": "scribe", "title": "Scribe", "model": "default", "send_to": ["hr", "manager"], "read_from": ["hr"], "credits": 10.0})
        );
        // No temporary folder is left.
        assert_eq!(std::fs::read_dir(Layout::new(&root).state_tmp()).unwrap().count(), 0);
    }

    #[test]
    fn without_the_permission_it_is_refused_and_nothing_is_written() {
        let (_d, root) = new_org();
        let org = Org::load(&root).unwrap();
        let out = call(&org, "manager", with(scribe(), "send_to", json!(["manager"])));
        assert!(!out.ok);
        let e = out.error.unwrap();
        assert!(e.starts_with("not permitted: manager is not granted `hire_agent`"), "{e}");
        assert!(!org.layout.agent_dir("scribe").exists());
    }

    #[test]
    fn invalid_or_reserved_names_create_no_folder_and_are_audited() {
        let (d, root, org) = org();
        for (bad, why) in [
            ("../evil", "is not a valid agent name"),
            ("A", "is not a valid agent name"),
            ("", "`name` is empty"),
            ("lemming", "`lemming` is reserved"),
            ("human", "`human` is reserved"),
            ("hr", "agents/hr exists already"),
        ] {
            let out = call(&org, "hr", with(scribe(), "name", json!(bad)));
            assert!(!out.ok, "{bad}");
            assert!(out.error.as_deref().unwrap().contains(why), "{bad}: {out:?}");
        }
        assert!(!d.path().join("evil").exists() && !root.join("evil").exists());
        assert_eq!(
            crate::org::agent_folders(&org.layout),
            ["coder_01", "hr", "human", "janitor", "manager", "planner"]
        );
        let log = audit(&root);
        assert_eq!(log.len(), 6);
        assert!(log.iter().all(|e| e.action == "hire" && e.outcome != "ok"));
        assert_eq!(log[0].what["name"], "../evil");
        assert!(log[0].what.get("instructions").is_none(), "the instructions are left out of a refusal");
    }

    #[test]
    fn send_to_and_read_from_name_only_the_hirer_and_whom_it_may_write_to() {
        let (_d, root, org) = org();
        for (field, list, why) in [
            ("send_to", json!(["planner"]), "you may not name `planner`: a hired agent may name only you (hr) and agents you may write to (your send_to: manager)"),
            ("read_from", json!(["hr", "janitor"]), "you may not name `janitor`"),
            ("send_to", json!(["*"]), "\"*\" (anyone) is not allowed"),
            ("send_to", json!(["scribe"]), "need not name itself"),
            ("read_from", json!(["Manager"]), "is not a valid agent name"),
            ("read_from", json!("hr"), "must be a list of agent names, not a string"),
            ("send_to", json!([3]), "as strings, not a number"),
        ] {
            let out = call(&org, "hr", with(scribe(), field, list.clone()));
            assert!(!out.ok, "{list}");
            let e = out.error.unwrap();
            assert!(e.starts_with(&format!("`{field}`")) && e.contains(why), "{list}: {e}");
        }
        let mut missing = scribe();
        missing.as_object_mut().unwrap().remove("read_from");
        assert!(call(&org, "hr", missing).error.unwrap().starts_with("`read_from` is missing"));
        assert!(!root.join("agents/scribe").exists());
    }

    #[test]
    fn a_hirer_that_may_write_to_anyone_may_name_any_agent_but_not_an_unknown_one() {
        let (_d, root, _) = org();
        edit(&root, "agents/hr/resume.toml", "send_to = [\"manager\"]", "send_to = [\"*\"]");
        let org = Org::load(&root).unwrap();
        let out = call(&org, "hr", with(scribe(), "send_to", json!(["ghost"])));
        assert!(out.error.unwrap().starts_with("`send_to`: unknown agent `ghost` (known: coder_01, hr,"));
        let out = call(&org, "hr", with(scribe(), "send_to", json!(["planner", "janitor"])));
        // hr may write to anyone, so only the agents that do not read from scribe are noted.
        assert_eq!(
            out.output.as_deref(),
            Some(
                "hired scribe (model default, credits 10); it joins on the next turn\n\
                 note: until a person adds scribe to their read_from, its mail to these bounces: janitor, planner"
            )
        );
    }

    #[test]
    fn credits_are_capped_by_max_hire_credits_and_default_to_ten_or_the_cap() {
        let (_d, root, org) = org();
        assert_eq!(org.settings.max_hire_credits, 50.0);
        let out = call(&org, "hr", with(scribe(), "credits", json!(50.5)));
        assert_eq!(
            out.error.as_deref(),
            Some(
                "`credits`: 50.5 is more than this org lets an agent hire with (max_hire_credits = 50 in \
                 org/org.toml); ask for at most 50"
            )
        );
        assert!(call(&org, "hr", with(scribe(), "credits", json!(-1))).error.unwrap().contains("from 0 to 50"));
        assert!(call(&org, "hr", with(scribe(), "credits", json!("5"))).error.unwrap().contains("not a string"));
        assert!(!root.join("agents/scribe").exists());
        let out = call(&org, "hr", with(scribe(), "credits", json!(50)));
        assert!(out.output.unwrap().contains("credits 50)"));
        assert_eq!(Org::load(&root).unwrap().agent("scribe").unwrap().credits, 50.0);

        // A cap below ten is the default.
        edit(&root, "org/org.toml", "max_hire_credits = 50.0", "max_hire_credits = 2.5");
        let org = Org::load(&root).unwrap();
        assert_eq!(org.settings.max_hire_credits, 2.5, "{:?}", org.problems());
        let out = call(&org, "hr", with(scribe(), "name", json!("clerk")));
        assert!(out.output.unwrap().contains("credits 2.5)"));
        assert_eq!(Org::load(&root).unwrap().agent("clerk").unwrap().credits, 2.5);
    }

    #[test]
    fn model_defaults_to_the_hirer_s_and_must_be_a_key_of_the_org() {
        let (_d, root, org) = org();
        let out = call(&org, "hr", with(scribe(), "model", json!("gpt-nine")));
        assert_eq!(out.error.as_deref(), Some("`model`: unknown model key `gpt-nine` (known: default)"));
        assert!(call(&org, "hr", with(scribe(), "model", json!(["default"]))).error.unwrap().contains("not a list"));
        let out = call(&org, "hr", with(scribe(), "model", json!("default")));
        assert!(out.ok, "{out:?}");
        assert!(root.join("agents/scribe/resume.toml").is_file());
        // A strict schema makes every argument present: null means the default.
        let out = call(
            &org,
            "hr",
            with(with(with(scribe(), "name", json!("clerk")), "model", Value::Null), "credits", Value::Null),
        );
        assert_eq!(
            out.output.unwrap().lines().next(),
            Some("hired clerk (model default, credits 10); it joins on the next turn")
        );
    }

    #[test]
    fn title_instructions_and_unknown_arguments_are_checked() {
        let (_d, root, org) = org();
        for (args, why) in [
            (with(scribe(), "title", json!("a\nb")), "`title` must be one line"),
            (with(scribe(), "title", json!("t".repeat(201))), "`title` is 201 characters; the limit is 200"),
            (with(scribe(), "title", json!(" ")), "`title` is empty"),
            (with(scribe(), "instructions", json!(7)), "`instructions` must be a string, not a number"),
            (
                with(scribe(), "instructions", json!("x".repeat(MAX_INSTRUCTIONS_BYTES + 1))),
                "`instructions` is 65537 bytes; the limit is 65536 bytes",
            ),
            (with(scribe(), "tools", json!(["run_command"])), "unknown argument `tools`"),
        ] {
            let out = call(&org, "hr", args);
            assert!(out.error.as_deref().unwrap().contains(why), "{why}: {out:?}");
        }
        let out = call(&org, "hr", with(scribe(), "tools", json!([])));
        assert!(out.error.unwrap().contains("a hired agent starts with no tools"));
        assert!(!root.join("agents/scribe").exists());
    }

    #[test]
    fn a_name_whose_former_agent_left_spending_in_the_ledger_is_refused() {
        let (_d, root, org) = org();
        std::fs::create_dir_all(org.layout.state_dir()).unwrap();
        crate::ledger::top_up(&org.layout, "scribe", 0.0, 1.0, 1, at()).unwrap();
        let out = call(&org, "hr", scribe());
        assert!(out.error.unwrap().contains("former agent whose charges or top-ups are still in"), "{root:?}");
        assert!(!root.join("agents/scribe").exists());
    }

    #[test]
    fn a_failed_write_leaves_nothing_behind() {
        let (_d, root, org) = org();
        let resume = org.agent("hr").unwrap();
        let ctx = Ctx { org: &org, agent: "hr", resume, turn: 4, now: at() };
        let hire = check(&ctx, &scribe()).unwrap();
        let tmp_is_empty = || std::fs::read_dir(org.layout.state_tmp()).unwrap().next().is_none();

        // A folder of that name appeared after the checks: it is not replaced.
        std::fs::create_dir_all(root.join("agents/scribe/inbox")).unwrap();
        let e = write(&org.layout, &hire).unwrap_err();
        assert!(e.starts_with("could not create agents/scribe: ") && e.ends_with("; no agent was hired"), "{e}");
        assert!(root.join("agents/scribe/inbox").is_dir() && !root.join("agents/scribe/resume.toml").exists());
        assert!(tmp_is_empty(), "a temporary folder was left");

        // agents/ is not a folder: the rename into it fails.
        std::fs::rename(root.join("agents"), root.join("agents.away")).unwrap();
        std::fs::write(root.join("agents"), "not a folder").unwrap();
        let e = write(&org.layout, &hire).unwrap_err();
        assert!(e.starts_with("could not create agents/scribe: "), "{e}");
        assert!(tmp_is_empty(), "a temporary folder was left");

        // Through the tool, the refusal is audited with its error.
        let out = call(&org, "hr", scribe());
        assert_eq!(audit(&root).last().unwrap().outcome, out.error.unwrap());
    }

    #[test]
    fn the_written_resume_escapes_what_the_model_wrote() {
        let (_d, root, org) = org();
        let title = "A \"quoted\" title \\ with ''' and \"\"\"";
        let out = call(&org, "hr", with(scribe(), "title", json!(title)));
        assert!(out.ok, "{out:?}");
        let text = std::fs::read_to_string(root.join("agents/scribe/resume.toml")).unwrap();
        assert!(text.starts_with("# Hired by hr with hire_agent on turn 4 (2026-03-04T05:06:07Z).\n"), "{text}");
        let r = Org::load(&root).unwrap().agents["scribe"].clone();
        assert_eq!(r.title, title);
        assert_eq!(r.description, "Hired by hr.");
    }
}
