//! The agents view (`lemming agents`, `GET /api/agents`) and the inspect view
//! of one agent (`lemming inspect NAME`, `GET /api/agents/{name}`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use super::ViewError;
use crate::activity::{self, Activity};
use crate::error::{Diagnostic, PathError};
use crate::ledger::{Balance, Ledger};
use crate::mailbox::Attempts;
use crate::memory;
use crate::org::Org;
use crate::resume::Wake;
use crate::trouble::{self, AgentTrouble};

/// One agent in the list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentRow {
    /// The name.
    pub name: String,
    /// Its title.
    pub title: String,
    /// The model key (`null` for a person).
    pub model: Option<String>,
    /// It is due every this many turns.
    pub every: u64,
    /// Whether it needs unread mail to run.
    pub wake: Wake,
    /// Whom the org chart lets it write to.
    pub sends_to: Vec<String>,
    /// The groups of org.toml it is a member of, in name order.
    pub groups: Vec<String>,
    /// Credits left.
    pub credits_left: f64,
    /// The node of `[cluster]` it runs on (absent on one machine).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// Every agent of the org.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentsView {
    /// The agents with a usable resume (or its last good version), by name.
    pub agents: Vec<AgentRow>,
    /// Agent folders whose resume is invalid and has no last good version.
    pub invalid: Vec<String>,
}

/// Lists the agents. An unreadable ledger fails the view: every row's credits depend on it.
pub fn agents(org: &Org) -> Result<AgentsView, ViewError> {
    let ledger = Ledger::load(&org.layout.ledger())?;
    let chart = org.chart();
    let agents = org
        .agents
        .values()
        .map(|r| AgentRow {
            name: r.name.to_string(),
            title: r.title.clone(),
            model: r.model.clone(),
            every: r.schedule.every,
            wake: r.schedule.wake,
            sends_to: chart.reachable(r.name.as_str()),
            groups: org.groups_of(r.name.as_str()),
            credits_left: ledger.balance(r.name.as_str(), r.credits).left,
            node: org.node_of(r).map(str::to_string),
        })
        .collect();
    Ok(AgentsView { agents, invalid: org.broken.keys().cloned().collect() })
}

/// When an agent runs, as `[schedule]` in its resume says.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ScheduleView {
    /// Due every this many turns.
    pub every: u64,
    /// On turns where `turn % every == offset % every`.
    pub offset: u64,
    /// Whether it needs unread mail to run.
    pub wake: Wake,
}

/// Credits charged for one model key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelSpend {
    /// The model key that answered.
    pub model: String,
    /// Credits charged.
    pub spent: f64,
}

/// What an agent may do besides talking.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolsView {
    /// The tools it is granted, as its resume lists them.
    pub granted: Vec<String>,
    /// Granted names that are no tool (the resume is then invalid; shown for a last good one).
    pub unknown: Vec<String>,
    /// The programs `run_command` may run (`permissions.commands`).
    pub commands: Vec<String>,
    /// What its file tools may do in the org's `shared/` folder: `none`, `read` or `write`.
    pub shared: crate::resume::Shared,
}

/// One agent in detail.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InspectView {
    /// The name.
    pub name: String,
    /// Its title.
    pub title: String,
    /// What it does.
    pub description: String,
    /// The model key (`null` for a person, who is driven by people).
    pub model: Option<String>,
    /// When it runs.
    pub schedule: ScheduleView,
    /// `send_to` as its resume says it (`*` for anyone, `@name` for a group).
    pub send_to: String,
    /// `read_from` as its resume says it.
    pub read_from: String,
    /// The groups of org.toml it is a member of, in name order.
    pub groups: Vec<String>,
    /// Whom it may write to: its `send_to` and their `read_from` together.
    pub can_reach: Vec<String>,
    /// Who may write to it.
    pub reached_by: Vec<String>,
    /// The tools it is granted (`permissions.tools`), with the programs
    /// `run_command` may run for it and what it may do in `shared/`.
    pub tools: ToolsView,
    /// Its credits (people are never charged).
    pub credits: Balance,
    /// Credits charged per model key.
    pub spent_by_model: Vec<ModelSpend>,
    /// Unread messages.
    pub unread: usize,
    /// Messages waiting in its outbox.
    pub pending: usize,
    /// Failed attempts by the id of the unread message they were on.
    pub failed_attempts: Attempts,
    /// Why it sits out, if it does.
    pub trouble: Option<AgentTrouble>,
    /// Its memory, by key.
    pub memory: BTreeMap<String, serde_json::Value>,
    /// Its last run.
    pub last_run: Option<Activity>,
    /// Problems of `org.toml`, `models.toml` and its resume.
    pub problems: Vec<Diagnostic>,
    /// Those of its files replaced by their last good version, relative to the org root.
    pub last_good: Vec<PathBuf>,
    /// State files that could not be read, each with what is shown instead.
    pub unreadable: Vec<String>,
}

/// One agent in detail. A state file that cannot be read is named in
/// [`InspectView::unreadable`], and the rest is still shown.
pub fn inspect(org: &Org, agent: &str) -> Result<InspectView, ViewError> {
    let r = org.agent(agent)?;
    let name = r.name.as_str();
    let root = &org.layout.root;
    let mb = org.mail();
    let chart = org.chart();
    let mut unreadable: Vec<String> = Vec::new();
    let mut or = |e: PathError, shown: &str| unreadable.push(format!("{e}; {shown}"));
    let ledger = Ledger::load(&org.layout.ledger()).unwrap_or_else(|e| {
        or(e, "credits are shown as if nothing was spent");
        Ledger::default()
    });
    let last_run = activity::try_last(root, name).unwrap_or_else(|e| {
        or(e, "the last run is not shown");
        None
    });
    let failed_attempts = mb.try_attempts(name).unwrap_or_else(|e| {
        or(e, "failed attempts are not shown");
        Attempts::default()
    });
    let unread = mb.unread_count(name).unwrap_or_else(|e| {
        or(e, "unread mail is shown as 0");
        0
    });
    let pending = mb.pending_count(name).unwrap_or_else(|e| {
        or(e, "pending mail is shown as 0");
        0
    });
    let (memory, bad_memory) = memory::all_checked(&memory::dir(root, name));
    unreadable.extend(bad_memory.iter().map(|e| format!("{e}; this memory key is not shown")));
    let problems = org.problems_of(&[name]);
    let last_good = org.last_good.iter().filter(|f| problems.iter().any(|p| p.path == root.join(f))).cloned().collect();
    Ok(InspectView {
        name: name.to_string(),
        title: r.title.clone(),
        description: r.description.clone(),
        model: r.model.clone(),
        schedule: ScheduleView { every: r.schedule.every, offset: r.schedule.offset, wake: r.schedule.wake },
        send_to: crate::resume::show_written(&r.send_to_written()),
        read_from: crate::resume::show_written(&r.read_from_written()),
        groups: org.groups_of(name),
        can_reach: chart.reachable(name),
        reached_by: chart.senders(name),
        tools: ToolsView {
            granted: r.tools.clone(),
            unknown: r.tools.iter().filter(|t| !org.tools.knows(t)).cloned().collect(),
            commands: r.commands.clone(),
            shared: r.shared,
        },
        credits: ledger.balance(name, r.credits),
        spent_by_model: ledger
            .spent_by_model(name)
            .into_iter()
            .map(|(model, spent)| ModelSpend { model, spent })
            .collect(),
        unread,
        pending,
        failed_attempts,
        trouble: trouble::read_agents(&org.layout).remove(name),
        memory: memory.into_iter().collect(),
        last_run,
        problems,
        last_good,
        unreadable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::views::testing::{org_after_one_turn, plain_org};

    #[test]
    fn agents_lists_every_valid_agent_with_reach_and_credits_and_names_the_invalid() {
        let (dir, org) = plain_org();
        std::fs::write(dir.path().join("agents/janitor/resume.toml"), "name = ").unwrap();
        std::fs::remove_dir_all(dir.path().join("org/state/last-good")).ok();
        let org2 = Org::load(dir.path()).unwrap();
        let v = agents(&org2).unwrap();
        assert_eq!(v.invalid, ["janitor"]);
        let names: Vec<&str> = v.agents.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["coder_01", "hr", "human", "manager", "planner"]);
        let manager = &agents(&org).unwrap().agents.into_iter().find(|a| a.name == "manager").unwrap();
        assert_eq!(manager.sends_to, ["coder_01", "hr", "human", "janitor", "planner"]);
        assert_eq!((manager.every, manager.wake, manager.credits_left), (1, Wake::Mail, 100.0));
        assert_eq!(manager.model.as_deref(), Some("default"));
        let json = serde_json::to_value(manager).unwrap();
        let keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
        for k in ["name", "title", "model", "every", "wake", "sends_to", "credits_left"] {
            assert!(keys.contains(&k), "{k} missing from {json}");
        }
        assert_eq!(json["wake"], "mail");
    }

    #[test]
    fn inspect_shows_credits_mail_memory_and_the_last_run_after_a_turn() {
        let (dir, org) = org_after_one_turn();
        std::fs::create_dir_all(dir.path().join("agents/manager/memory")).unwrap();
        std::fs::write(dir.path().join("agents/manager/memory/goal.json"), "\"ship it\"").unwrap();
        std::fs::write(dir.path().join("agents/manager/memory/torn.json"), "{").unwrap();
        let v = inspect(&org, "manager").unwrap();
        assert_eq!(v.schedule, ScheduleView { every: 1, offset: 0, wake: Wake::Mail });
        assert!(v.credits.spent > 0.0 && v.credits.left < v.credits.budget, "{:?}", v.credits);
        assert_eq!(v.spent_by_model.len(), 1);
        assert_eq!(v.spent_by_model[0].model, "default");
        assert_eq!(v.spent_by_model[0].spent, v.credits.spent);
        assert_eq!((v.unread, v.pending), (0, 0));
        let last = v.last_run.as_ref().expect("the manager ran");
        assert_eq!((last.turn, last.outcome), (1, crate::journal::Outcome::Ok));
        assert_eq!(v.memory.get("goal"), Some(&serde_json::json!("ship it")));
        assert_eq!(v.unreadable.len(), 1, "{:?}", v.unreadable);
        assert!(v.unreadable[0].contains("torn.json") && v.unreadable[0].contains("not shown"), "{:?}", v.unreadable);
        assert!(v.reached_by.contains(&"human".to_string()));
        assert_eq!(v.trouble, None);

        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["schedule"], serde_json::json!({"every": 1, "offset": 0, "wake": "mail"}));
        assert_eq!(json["spent_by_model"][0]["model"], "default");
        assert_eq!(json["last_run"]["outcome"], "ok");
    }

    #[test]
    fn inspect_of_an_unknown_agent_names_the_known_ones() {
        let (_dir, org) = plain_org();
        let e = inspect(&org, "nobody").unwrap_err();
        assert!(matches!(e, ViewError::UnknownAgent(_)), "{e:?}");
        assert!(e.to_string().contains("known: ") && e.to_string().contains("manager"), "{e}");
    }

    #[test]
    fn inspect_names_an_unreadable_ledger_and_shows_the_rest() {
        let (dir, org) = org_after_one_turn();
        let ledger = org.layout.ledger();
        std::fs::remove_file(&ledger).unwrap();
        std::fs::create_dir(&ledger).unwrap();
        let v = inspect(&org, "manager").unwrap();
        assert_eq!(v.credits.spent, 0.0);
        assert!(v.unreadable.iter().any(|u| u.contains("ledger.jsonl") && u.contains("as if nothing was spent")));
        assert!(v.last_run.is_some(), "the rest is still shown");
        drop(dir);
    }
}
