//! The prompt an agent's model gets: a system part (who it is, who it may
//! write to, the reply contract) and a user part (memory summary, then unread
//! mail by priority then age).
//!
//! The contract text comes from [`lemming_provider::contract::instructions`],
//! the same definition the JSON schema and the reply parser use, worded for
//! how the model is asked to answer (`structured`): a model held to the JSON
//! schema is offered only what the schema can hold. An agent with tools is
//! offered `tool_calls` and told its tools, unless its model takes them as
//! native function definitions (`tools = "native"`).

use lemming_provider::{contract, ModelSpec, ToolSpec};

use crate::message::Message;
use crate::resume::Resume;

/// Orders mail for the prompt: urgent first, then by age (creation time, then id).
pub fn order(mail: &mut [Message]) {
    mail.sort_by(|a, b| a.priority.cmp(&b.priority).then(a.created_at.cmp(&b.created_at)).then(a.id.cmp(&b.id)));
}

/// An agent that may write to every other agent of an org with more than
/// this many others is told so, not given their names: an org of a thousand
/// agents would otherwise put a thousand names in every prompt.
pub const MAX_LISTED: usize = 10;

/// Whom an agent may write to, as its prompt tells it.
#[derive(Debug, Clone, Copy)]
pub struct May<'a> {
    /// The agents, then the groups (`@name`), then `*` (the request's `may_send_to`).
    pub names: &'a [String],
    /// How many agents the org has besides this one: when it may write to
    /// each of them, and they are more than [`MAX_LISTED`], the prompt says
    /// "every agent of the org" instead of naming them.
    pub others: usize,
}

impl<'a> May<'a> {
    /// `names`, in an org of `others` agents besides this one.
    pub fn new(names: &'a [String], others: usize) -> May<'a> {
        May { names, others }
    }

    /// `names`, always listed one by one.
    pub fn only(names: &'a [String]) -> May<'a> {
        May { names, others: usize::MAX }
    }
}

/// Builds the system and user parts of the prompt for `model` (how it answers:
/// its `structured` and `tools` modes; `None` for the defaults), for an agent
/// granted `tools`.
pub fn build(
    resume: &Resume,
    turn: u64,
    may: May<'_>,
    memory: &str,
    mail: &[Message],
    model: Option<&ModelSpec>,
    tools: &[ToolSpec],
) -> (String, String) {
    use std::fmt::Write as _;
    let (structured, mode) = model.map(|m| (m.structured, m.tools)).unwrap_or_default();
    // Writes to a String cannot fail.
    let mut system = String::with_capacity(2048 + resume.description.len() + resume.instructions.len());
    let _ = write!(system, "You are {}", resume.name);
    if !resume.title.is_empty() {
        let _ = write!(system, " ({})", resume.title);
    }
    system.push_str(", an agent in an organization run by lemming. Agents talk only by messages.\n");
    if !resume.description.is_empty() {
        let _ = writeln!(system, "Role: {}", resume.description.trim());
    }
    if !resume.instructions.trim().is_empty() {
        let _ = writeln!(system, "\nInstructions:\n{}", resume.instructions.trim());
    }
    let _ = writeln!(system, "\nYou may write to: {}", may_line(may));
    let _ = writeln!(system, "\n{}", contract::instructions(structured, tools, mode));
    // Each message's header line is about 150 bytes with its ids and names.
    let size: usize = mail.iter().map(|m| m.body.len() + m.subject.as_ref().map_or(0, String::len) + 200).sum();
    let mut user = String::with_capacity(64 + memory.len() + size);
    let _ = write!(user, "Turn {turn}.\n\nYour memory:\n{memory}\n");
    if mail.is_empty() {
        user.push_str("You have no unread mail.\n");
    } else {
        let _ = writeln!(user, "Unread mail ({}):", mail.len());
        for m in mail {
            let _ = write!(
                user,
                "\n--- id: {} | from: {} | kind: {} | priority: {:?} | thread: {}",
                m.id,
                m.from,
                m.kind.as_str(),
                m.priority,
                m.thread
            );
            if let Some(r) = &m.reply_to {
                let _ = write!(user, " | reply_to: {r}");
            }
            if let Some(s) = &m.subject {
                let _ = write!(user, " | subject: {s}");
            }
            let _ = writeln!(user, "\n{}", m.body);
        }
    }
    (system, user)
}

/// Whom an agent may write to, for its prompt: the agents (or, when it may
/// write to every other agent of a large org, that it may), then the groups
/// (`@name`: each member it may reach gets the message), then `*`.
fn may_line(may: May<'_>) -> String {
    let (agents, rest): (Vec<&String>, Vec<&String>) =
        may.names.iter().partition(|n| !n.starts_with('@') && n.as_str() != crate::address::EVERYONE);
    let groups: Vec<&str> = rest.iter().filter(|n| n.starts_with('@')).map(|n| n.as_str()).collect();
    let everyone = agents.len() > MAX_LISTED && agents.len() >= may.others;
    let mut line = if agents.is_empty() {
        "nobody".to_string()
    } else if everyone {
        format!(
            "every agent of the org ({} of them, too many to list here); write to one by its name, as in the `from` of its mail",
            agents.len()
        )
    } else {
        agents.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ")
    };
    if !groups.is_empty() {
        line.push_str(&format!("; the groups {} (each member you may write to gets the message)", groups.join(", ")));
    }
    if rest.iter().any(|n| n.as_str() == crate::address::EVERYONE) {
        line.push_str(if everyone { "; or \"*\" (all of them at once)" } else { "; or \"*\" (every agent above)" });
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use lemming_provider::{Structured, ToolMode};

    #[test]
    fn the_contract_in_the_prompt_is_the_one_for_how_the_model_answers() {
        let text = "name = \"coder\"\nmodel = \"default\"\n".to_string();
        let resume = crate::resume::parse(std::path::Path::new("resume.toml"), text, "coder").unwrap().resume;
        let may = vec!["planner".to_string()];
        for structured in [Structured::None, Structured::JsonObject, Structured::JsonSchema] {
            let model = ModelSpec { structured, ..ModelSpec::new("default", "mock") };
            let (system, user) = build(&resume, 1, May::only(&may), "(empty)", &[], Some(&model), &[]);
            assert!(
                system.contains(&contract::instructions(structured, &[], ToolMode::Contract)),
                "{structured:?}\n{system}"
            );
            assert!(!system.contains("tool"), "no tools, nothing about them\n{system}");
            assert!(system.contains("You may write to: planner") && user.contains("no unread mail"));
            // Every memory op named in the prompt is one this model may use.
            let offered: Vec<&str> = contract::memory_ops(structured).map(|op| op.name).collect();
            for op in contract::MEMORY_OPS {
                assert_eq!(system.contains(op.effect), offered.contains(&op.name), "{structured:?}: {}", op.name);
            }
        }
        assert_eq!(
            build(&resume, 1, May::only(&may), "(empty)", &[], None, &[]),
            build(&resume, 1, May::only(&may), "(empty)", &[], Some(&ModelSpec::new("default", "mock")), &[]),
            "no model: the defaults"
        );
    }

    #[test]
    fn the_prompt_names_the_groups_and_everyone_an_agent_may_address() {
        let text = "name = \"coder\"\nmodel = \"default\"\n".to_string();
        let resume = crate::resume::parse(std::path::Path::new("resume.toml"), text, "coder").unwrap().resume;
        let may: Vec<String> = ["planner", "hr", "@eng", "*"].map(String::from).into();
        let (system, _) = build(&resume, 1, May::only(&may), "(empty)", &[], None, &[]);
        assert!(
            system.contains(
                "You may write to: planner, hr; the groups @eng (each member you may write to gets the message); or \"*\" (every agent above)\n"
            ),
            "{system}"
        );
        let (system, _) = build(&resume, 1, May::only(&["planner".to_string()]), "(empty)", &[], None, &[]);
        assert!(system.contains("You may write to: planner\n"), "{system}");
    }

    #[test]
    fn an_agent_with_tools_is_told_them_the_way_its_model_takes_them() {
        let text = "name = \"coder\"\nmodel = \"default\"\n".to_string();
        let resume = crate::resume::parse(std::path::Path::new("resume.toml"), text, "coder").unwrap().resume;
        let tools = vec![ToolSpec {
            name: "read_file".into(),
            description: "Reads a file.".into(),
            parameters: serde_json::json!({"type": "object", "properties": {"path": {"type": "string"}}}),
        }];
        for mode in [ToolMode::Contract, ToolMode::Native] {
            let model = ModelSpec { tools: mode, ..ModelSpec::new("default", "mock") };
            let (system, _) = build(&resume, 1, May::only(&[]), "(empty)", &[], Some(&model), &tools);
            assert!(system.contains(&contract::instructions(Structured::None, &tools, mode)), "{mode:?}\n{system}");
            assert_eq!(system.contains("\"tool_calls\":"), mode == ToolMode::Contract, "{mode:?}\n{system}");
            assert_eq!(system.contains("- read_file {path: string}: Reads a file."), mode == ToolMode::Contract);
        }
    }
}
