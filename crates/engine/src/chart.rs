//! The org chart: who may talk to whom, derived from every resume.
//!
//! A message from A reaches B only when B is in A's `send_to` and A is in B's
//! `read_from`. Bounces from the engine bypass the chart.

use std::collections::BTreeMap;

use crate::mailbox::Reason;
use crate::name::AgentName;
use crate::resume::Resume;

/// Why the chart refuses a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// The recipient is not an agent.
    #[error("unknown agent `{to}` ({hint})")]
    UnknownRecipient {
        /// The name written.
        to: String,
        /// The known agents as a message shows them ([`crate::suggest::Hint`]):
        /// all of them when few, else the closest, so a dead letter stays short.
        hint: String,
    },
    /// The sender may not write to the recipient.
    #[error("{from} may not send to {to}: `{to}` is not in {from}'s send_to")]
    NotInSendTo {
        /// Sender.
        from: String,
        /// Recipient.
        to: String,
    },
    /// The recipient does not read from the sender.
    #[error("{to} does not read from {from}: `{from}` is not in {to}'s read_from")]
    NotInReadFrom {
        /// Sender.
        from: String,
        /// Recipient.
        to: String,
    },
}

impl Denial {
    /// The dead-letter reason of a message refused for it.
    pub fn code(&self) -> Reason {
        match self {
            Denial::UnknownRecipient { .. } => Reason::UnknownRecipient,
            Denial::NotInSendTo { .. } => Reason::ChartSendTo,
            Denial::NotInReadFrom { .. } => Reason::ChartReadFrom,
        }
    }
}

/// The chart of one org.
#[derive(Debug, Clone, Copy)]
pub struct Chart<'a> {
    agents: &'a BTreeMap<AgentName, Box<Resume>>,
}

impl<'a> Chart<'a> {
    /// The chart of these agents.
    pub fn new(agents: &'a BTreeMap<AgentName, Box<Resume>>) -> Chart<'a> {
        Chart { agents }
    }

    /// What a message says of the known agents beside `name`, which is none
    /// of them ([`crate::suggest::hint`]).
    pub fn hint(&self, name: &str) -> crate::suggest::Hint {
        crate::suggest::hint(crate::suggest::Kind::Agent, name, self.agents.keys().map(AgentName::as_str))
    }

    /// Checks that `from` may send to `to`.
    pub fn check(&self, from: &str, to: &str) -> Result<(), Denial> {
        let Some(recipient) = self.agents.get(to) else {
            return Err(Denial::UnknownRecipient { to: to.to_string(), hint: self.hint(to).to_string() });
        };
        let sender_ok = self.agents.get(from).is_some_and(|s| s.send_to.allows(to));
        if !sender_ok {
            return Err(Denial::NotInSendTo { from: from.into(), to: to.into() });
        }
        if !recipient.read_from.allows(from) {
            return Err(Denial::NotInReadFrom { from: from.into(), to: to.into() });
        }
        Ok(())
    }

    /// The agents `from` may actually reach (both sides allow), excluding itself.
    pub fn reachable(&self, from: &str) -> Vec<String> {
        let Some(sender) = self.agents.get(from) else { return Vec::new() };
        let reads = |to: &AgentName, r: &Resume| to.as_str() != from && r.read_from.allows(from);
        match &sender.send_to {
            // A list names its few recipients: look each up rather than
            // compare every agent of the org with it (both are in name order).
            crate::resume::Access::Only(list) => list
                .iter()
                .filter_map(|to| self.agents.get_key_value(to))
                .filter(|(to, r)| reads(to, r))
                .map(|(n, _)| n.to_string())
                .collect(),
            crate::resume::Access::Anyone => {
                self.agents.iter().filter(|(to, r)| reads(to, r)).map(|(n, _)| n.to_string()).collect()
            }
        }
    }

    /// The agents that can reach `to`, excluding itself.
    pub fn senders(&self, to: &str) -> Vec<String> {
        self.agents
            .keys()
            .filter(|from| from.as_str() != to && self.check(from.as_str(), to).is_ok())
            .map(|n| n.to_string())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resume::{Access, NameList, Schedule, Written};

    fn agent(name: &str, send: &[&str], read: &[&str]) -> (AgentName, Box<Resume>) {
        let set = |l: &[&str]| {
            if l == ["*"] {
                Access::Anyone
            } else {
                Access::Only(NameList::new(l.iter().map(|n| AgentName::new(n).unwrap())))
            }
        };
        let n = AgentName::new(name).unwrap();
        (
            n.clone(),
            Box::new(Resume {
                name: n,
                title: String::new(),
                description: String::new(),
                model: Some("default".into()),
                instructions: String::new(),
                schedule: Schedule::default(),
                send_to_written: Written::of(send.iter().map(|s| s.to_string()).collect(), &set(send)),
                read_from_written: Written::of(read.iter().map(|s| s.to_string()).collect(), &set(read)),
                send_to: set(send),
                read_from: set(read),
                tools: vec![],
                commands: vec![],
                shared: crate::resume::Shared::None,
                credits: 1.0,
                node: None,
            }),
        )
    }

    #[test]
    fn both_sides_must_allow() {
        let agents: BTreeMap<_, _> = [
            agent("manager", &["*"], &["*"]),
            agent("planner", &["manager"], &["manager"]),
            agent("hr", &["manager"], &["manager"]),
            agent("janitor", &["manager"], &["planner"]),
        ]
        .into_iter()
        .collect();
        let c = Chart::new(&agents);
        assert!(c.check("manager", "planner").is_ok());
        assert_eq!(c.check("planner", "hr").unwrap_err().code().as_str(), "chart_send_to");
        assert_eq!(c.check("manager", "janitor").unwrap_err().code().as_str(), "chart_read_from");
        let e = c.check("planner", "cfo").unwrap_err();
        assert_eq!(e.to_string(), "unknown agent `cfo` (known: hr, janitor, manager, planner)");
        let e = c.check("planner", "mangaer").unwrap_err();
        assert_eq!(e.to_string(), "unknown agent `mangaer` (known: manager, hr, janitor, planner)");
        assert_eq!(c.reachable("manager"), vec!["hr", "planner"]);
        assert_eq!(c.check("planner", "cfo").unwrap_err().code().as_str(), "unknown_recipient");
        assert_eq!(c.senders("manager"), vec!["hr", "janitor", "planner"]);
    }

    #[test]
    fn an_unknown_recipient_in_a_large_org_names_only_the_closest() {
        let agents: BTreeMap<_, _> = (0..2000).map(|i| agent(&format!("worker_{i:04}"), &["*"], &["*"])).collect();
        let c = Chart::new(&agents);
        let e = c.check("worker_0000", "worker_12").unwrap_err().to_string();
        assert!(e.starts_with("unknown agent `worker_12` (closest: worker_0012, "), "{e}");
        assert_eq!(e.matches("worker_").count(), 1 + crate::suggest::MAX, "{e}");
        let e = c.check("worker_0000", "cfo").unwrap_err().to_string();
        assert_eq!(e, "unknown agent `cfo` (2,000 agents; `lemming agents` lists them)");
    }
}
