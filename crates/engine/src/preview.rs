//! The dry run (`lemming step --dry-run`): what the next turn would do,
//! decided by the turn's own rules and written nowhere.
//!
//! Each entry waiting in an outbox is decided by [`route::decide`], as routing
//! decides it; each agent by [`turn::choose`], as the pick does, on its unread
//! mail plus what routing would deliver to it; and a called agent's prompt is
//! built by [`turn::prompt_for`]. Nothing is created, moved or saved (no
//! folder, lock, journal, event or config copy), and no model is called, so
//! a dry run may run beside a daemon.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::PathError;
use crate::journal::Journal;
use crate::ledger::Ledger;
use crate::mailbox::{MailStore, Outgoing};
use crate::message::{Kind, Message};
use crate::name::ENGINE;
use crate::org::{agent_folders, Org};
use crate::route::{self, Decision, Verdict};
use crate::turn::{self, Choice, Idle};

/// What the next turn would do.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Preview {
    /// The turn it would be.
    pub turn: u64,
    /// Each entry waiting in an outbox, and what routing would do with it.
    pub routes: Vec<Route>,
    /// Each agent, and whether it would run.
    pub agents: Vec<AgentPreview>,
}

/// What routing would do with one outbox entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Route {
    /// The agent whose outbox holds it.
    pub from: String,
    /// The entry's file name.
    pub file: String,
    /// The message's id, when it is a message.
    pub id: Option<String>,
    /// The recipients it would be delivered to.
    pub delivered: Vec<String>,
    /// The recipients on other machines it would be handed to.
    pub remote: Vec<String>,
    /// Refusals: for some recipients, or (`to` empty) for the whole entry.
    pub refused: Vec<Refused>,
    /// Why it would wait in the outbox, when it would.
    pub held: Option<String>,
}

/// A refusal routing would make.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Refused {
    /// The recipient refused (`None`: the whole entry).
    pub to: Option<String>,
    /// The dead letter's reason code.
    pub code: String,
    /// Why, for people.
    pub detail: String,
}

/// Whether one agent would run, and why not.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Its model would be called with this prompt.
    Run {
        /// The model key asked first.
        model: String,
        /// The ids of the mail in its prompt, in prompt order.
        mail: Vec<String>,
        /// The system part of its prompt.
        system: String,
        /// The user part of its prompt.
        user: String,
    },
    /// Due, but not called: an event would say why.
    Skip {
        /// The reason code (`out_of_credits`, ...).
        reason: String,
        /// Why, for people.
        detail: String,
    },
    /// Not due, or not run by the engine at all.
    Idle {
        /// Why, for people.
        why: String,
    },
}

/// One agent in the dry run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentPreview {
    /// The agent.
    pub agent: String,
    /// What the turn would do with it.
    #[serde(flatten)]
    pub action: Action,
}

impl AgentPreview {
    /// Whether its model would be called.
    pub fn runs(&self) -> bool {
        matches!(self.action, Action::Run { .. })
    }
}

/// What the next turn of `org` would do (see the module doc).
pub fn preview(org: &Org) -> Result<Preview, PathError> {
    let store = org.mail();
    let journal = Journal::new(&org.layout);
    let turn = journal.last_turn()?.saturating_add(1);
    let mut routes = Vec::new();
    // What routing would add to each inbox.
    let mut arriving: BTreeMap<String, Vec<Message>> = BTreeMap::new();
    for agent in agent_folders(&org.layout) {
        if crate::name::AgentName::new(&agent).is_err() {
            continue;
        }
        for p in store.pending(&agent)? {
            let file = p.show();
            let mut r = Route {
                from: agent.clone(),
                file,
                id: None,
                delivered: vec![],
                remote: vec![],
                refused: vec![],
                held: None,
            };
            if org.broken.contains_key(&agent) {
                r.held = Some(format!("{agent}'s resume is not valid: its outbox waits until it is fixed"));
                routes.push(r);
                continue;
            }
            let checked = match store.read_pending(&p, org.settings.max_message_bytes)? {
                Outgoing::Gone => continue,
                Outgoing::Unusable { error, .. } => {
                    let detail = route::unusable_detail(&r.file, &error);
                    r.refused.push(Refused { to: None, code: error.code().as_str().into(), detail });
                    routes.push(r);
                    continue;
                }
                Outgoing::Message(checked) => checked,
            };
            let msg = &checked.msg;
            r.id = Some(msg.id.clone());
            let bounce = |detail: &str| bounce_of(&agent, msg, detail, turn);
            match route::decide(org, &store, turn, &agent, msg, &|_| false) {
                Decision::Refused { code, detail } => {
                    arriving.entry(agent.clone()).or_default().extend(bounce(&detail));
                    r.refused.push(Refused { to: None, code: code.as_str().into(), detail });
                }
                Decision::Held { detail } => r.held = Some(detail),
                Decision::Routed { recipients } => {
                    let names: Vec<String> = recipients.iter().map(|r| r.to.clone()).collect();
                    if let Some(c) = store.conflict(&p, &checked, &names, &mut Vec::new())? {
                        let detail = route::duplicate_detail(&p, &msg.id, &c);
                        arriving.entry(agent.clone()).or_default().extend(bounce(&detail));
                        let code = crate::mailbox::Reason::DuplicateId.as_str().into();
                        r.refused.push(Refused { to: None, code, detail });
                        routes.push(r);
                        continue;
                    }
                    let mut denied = Vec::new();
                    for rc in recipients {
                        match rc.verdict {
                            Verdict::Local => {
                                if !store.has(&rc.to, &msg.id) {
                                    arriving.entry(rc.to.clone()).or_default().push(msg.clone());
                                }
                                r.delivered.push(rc.to);
                            }
                            Verdict::Remote => r.remote.push(rc.to),
                            Verdict::Denied(d) => {
                                denied.push(d.to_string());
                                let code = d.code().as_str().into();
                                r.refused.push(Refused { to: Some(rc.to), code, detail: d.to_string() });
                            }
                        }
                    }
                    if !denied.is_empty() {
                        arriving.entry(agent.clone()).or_default().extend(bounce(&denied.join("; ")));
                    }
                }
            }
            routes.push(r);
        }
    }
    let agents = pick(org, turn, &journal, arriving)?;
    Ok(Preview { turn, routes, agents })
}

/// The bounce routing would send to `agent` for refusing `msg` (none for a bounce).
fn bounce_of(agent: &str, msg: &Message, detail: &str, turn: u64) -> Option<Message> {
    (msg.kind != Kind::Bounce).then(|| Message {
        id: crate::message::fit_id(&format!("{}-bounce", msg.id)),
        from: ENGINE.into(),
        to: crate::message::To(vec![agent.to_string()]),
        subject: Some("undeliverable".into()),
        body: format!("Your message {} was not delivered: {detail}", msg.id),
        priority: crate::message::Priority::Normal,
        reply_to: Some(msg.id.clone()),
        thread: msg.thread.clone(),
        created_at: msg.created_at,
        turn,
        ttl_turns: None,
        kind: Kind::Bounce,
        ack_required: false,
    })
}

/// Each agent, decided as the pick decides it, on its unread mail and what routing would deliver.
fn pick(
    org: &Org,
    turn: u64,
    journal: &Journal,
    mut arriving: BTreeMap<String, Vec<Message>>,
) -> Result<Vec<AgentPreview>, PathError> {
    let store = org.mail();
    let registry = org.registry();
    let ledger = Ledger::load(&org.layout.ledger())?;
    let chart = org.chart();
    let journaled = journal.records(turn)?;
    let mut out = Vec::new();
    for name in org.broken.keys() {
        let why = "its resume is not valid: it is held until it is fixed (see `lemming validate`)".into();
        out.push(AgentPreview { agent: name.clone(), action: Action::Idle { why } });
    }
    for (name, resume) in &org.agents {
        let agent = name.as_str();
        let idle = |why: String| AgentPreview { agent: agent.to_string(), action: Action::Idle { why } };
        if name.is_human() {
            out.push(idle("a person reads its mail; the engine never runs it".into()));
            continue;
        }
        if journaled.contains_key(agent) {
            out.push(idle(format!(
                "its reply of turn {turn} is journaled already (an interrupted try): it is applied, not asked again"
            )));
            continue;
        }
        if !resume.schedule.fires(turn) {
            let s = &resume.schedule;
            out.push(idle(format!("not scheduled on turn {turn} (every {}, offset {})", s.every, s.offset)));
            continue;
        }
        let (mut mail, bad) = match store.unread(agent) {
            Ok(unread) => unread,
            Err(e) => {
                out.push(idle(format!("its inbox cannot be read: {e}")));
                continue;
            }
        };
        mail.extend(arriving.remove(agent).unwrap_or_default());
        mail.sort_by(|a, b| a.id.cmp(&b.id));
        mail.dedup_by(|a, b| a.id == b.id);
        let action = match turn::choose(org, &registry, &ledger, &chart, resume, turn, &mut mail) {
            Choice::Call { model, prompt } => Action::Run {
                model: model.key,
                mail: mail.iter().map(|m| m.id.clone()).collect(),
                system: prompt.system,
                user: prompt.user,
            },
            Choice::Skip { reason, over } => Action::Skip {
                reason: reason.as_str().into(),
                detail: over.map_or_else(|| reason.to_string(), |o| o.detail),
            },
            Choice::Idle(Idle::NoMail) => {
                let extra = if bad.is_empty() {
                    String::new()
                } else {
                    format!(" ({} unread entries are not messages: they would go to dead)", bad.len())
                };
                Action::Idle { why: format!("no unread mail (wake = \"mail\"){extra}") }
            }
            Choice::Idle(Idle::NoModel) => Action::Idle {
                why: format!(
                    "its model `{}` is not in org/models.toml",
                    crate::term::line(resume.model.as_deref().unwrap_or_default())
                ),
            },
        };
        out.push(AgentPreview { agent: agent.to_string(), action });
    }
    out.sort_by(|a, b| a.agent.cmp(&b.agent));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::send::{self, SendOptions};
    use crate::testing::{edit, new_org};

    fn action(p: &Preview, agent: &str) -> Action {
        p.agents.iter().find(|a| a.agent == agent).unwrap().action.clone()
    }

    /// The pick's reasons show: who runs, who is skipped and why, who is not due.
    #[test]
    fn each_agent_is_decided_as_the_pick_decides_it() {
        let (_d, root) = new_org();
        edit(&root, "agents/hr/resume.toml", "credits = 100.0", "credits = 0.0");
        edit(&root, "agents/planner/resume.toml", "every = 1", "every = 2");
        let org = Org::load(&root).unwrap();
        for (from, to) in [("human", "manager"), ("manager", "hr"), ("manager", "planner")] {
            send::send(&org, from, to, "hi", SendOptions::default()).unwrap();
        }
        let p = preview(&org).unwrap();
        assert_eq!(p.turn, 1);
        assert_eq!(p.routes.len(), 3, "{p:#?}");
        assert!(matches!(action(&p, "manager"), Action::Run { mail, .. } if mail.len() == 1), "{p:#?}");
        assert!(matches!(action(&p, "hr"), Action::Skip { reason, .. } if reason == "out_of_credits"), "{p:#?}");
        assert!(
            matches!(action(&p, "planner"), Action::Idle { why } if why.contains("not scheduled on turn 1")),
            "{p:#?}"
        );
        assert!(matches!(action(&p, "janitor"), Action::Idle { why } if why.contains("no unread mail")), "{p:#?}");
    }
}
