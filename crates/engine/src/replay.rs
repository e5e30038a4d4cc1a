//! Replay: a committed turn's effects derived again from its journal, and
//! compared with what is on disk (`lemming replay TURN`).
//!
//! Each journaled reply is parsed again with the turn's parser and planned
//! again with the turn's planner ([`crate::turn::plan_reply`]): its messages,
//! with the ids stamped from the turn's recorded start, their recipients,
//! bodies, priorities, `reply_to` and threads; its tool calls with the ids of
//! their results; its memory; its charge. The plan must be the journal's, and
//! the journal's effects must be on disk:
//!
//! - the ledger's charge of (turn, agent): model, tokens and amount;
//! - each message in the sender's outbox (sent, or still waiting), and in
//!   each recipient's inbox, or accounted for by a dead letter;
//! - each tool result in the agent's inbox, with the journaled result;
//! - the mail the reply read, read (not unread any more).
//!
//! Nothing is written and no model is called, so replay may run beside a
//! daemon. Memory is compared for keys whose value the reply alone decides
//! (`set`, `delete`): an `append` or a `merge` depends on the memory before
//! the turn, which no file keeps.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use chrono::{DateTime, NaiveDateTime, SubsecRound, Utc};
use serde::Serialize;

use crate::error::PathError;
use crate::journal::{Journal, Outcome, Record, ToolState};
use crate::ledger::{self, Entry, Line};
use crate::mailbox::{Folder, FsMailStore, MailStore, READ_LIMIT};
use crate::message::{Kind, Message};
use crate::org::Org;
use crate::turn::{parse_reply, plan_reply, Stamps};

/// What a replay found, for every agent of the turn.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Replay {
    /// The turn.
    pub turn: u64,
    /// Each agent whose reply the turn journaled, by name.
    pub agents: Vec<AgentReplay>,
    /// Differences that belong to no journaled reply (a charge in the ledger
    /// for an agent the journal has no reply of).
    pub other: Vec<Difference>,
}

impl Replay {
    /// Whether everything on disk is what the journal says.
    pub fn matches(&self) -> bool {
        self.differences().next().is_none()
    }

    /// Every difference found, agent by agent.
    pub fn differences(&self) -> impl Iterator<Item = &Difference> {
        self.agents.iter().flat_map(|a| a.differences.iter()).chain(self.other.iter())
    }
}

/// One agent's journaled run, derived again and checked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentReplay {
    /// The agent.
    pub agent: String,
    /// Whether its reply was used.
    pub outcome: Outcome,
    /// The model that answered.
    pub model: String,
    /// What it was charged, per the journal.
    pub cost: f64,
    /// The ids of the messages its reply wrote.
    pub messages: Vec<String>,
    /// The ids of its tool calls' results.
    pub tool_results: Vec<String>,
    /// The memory keys its reply changed.
    pub memory: Vec<String>,
    /// The mail it read.
    pub mail: Vec<String>,
    /// What differs (empty: all matches).
    pub differences: Vec<Difference>,
}

/// One thing on disk (or in the journal) that is not what the turn did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// The file, from the org's root (with a line number for the ledger).
    pub file: String,
    /// The field that differs (`body`, `cost`, `messages[0].to`, ...).
    pub field: String,
    /// What differs, for people.
    pub detail: String,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file, self.detail)
    }
}

/// Why a turn cannot be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The turn is not committed (yet).
    #[error("turn {turn} is not committed: the last committed turn is {last}; replay a turn from 1 to {last}")]
    NotCommitted {
        /// The turn asked for.
        turn: u64,
        /// The last committed turn.
        last: u64,
    },
    /// The turn's journal was pruned.
    #[error(
        "the journal of turn {turn} is no longer kept: the journal keeps the last {keep} turns \
         (journal_keep_turns in org/org.toml); replay a turn from {oldest} to {last}, or keep more turns"
    )]
    Pruned {
        /// The turn asked for.
        turn: u64,
        /// `journal_keep_turns`.
        keep: u64,
        /// The oldest turn whose journal is kept.
        oldest: u64,
        /// The last committed turn.
        last: u64,
    },
    /// `--agent` names no agent the turn journaled.
    #[error("turn {turn} has no journaled reply of `{agent}` (journaled: {known})")]
    NoSuchAgent {
        /// The turn.
        turn: u64,
        /// The name given.
        agent: String,
        /// The agents the turn journaled, comma separated (or "none").
        known: String,
    },
    /// A file could not be read.
    #[error(transparent)]
    Io(#[from] PathError),
}

/// Replays committed turn `turn` (only `agent`'s reply, when given): see the module doc.
pub fn replay(org: &Org, turn: u64, agent: Option<&str>) -> Result<Replay, ReplayError> {
    let journal = Journal::new(&org.layout);
    let last = journal.last_turn()?;
    if turn == 0 || turn > last {
        return Err(ReplayError::NotCommitted { turn, last });
    }
    let keep = org.settings.journal_keep_turns;
    let charges = charges(&org.layout.ledger(), turn)?;
    let kept = journal.turns()?.contains(&turn);
    // A turn that ran no agent leaves no journal folder; one that charged did.
    if !kept && (turn.saturating_add(keep) < last || !charges.is_empty()) {
        return Err(ReplayError::Pruned { turn, keep, oldest: last.saturating_sub(keep).max(1), last });
    }
    let records = journal.records(turn)?;
    if let Some(a) = agent.filter(|a| !records.contains_key(*a)) {
        let known =
            if records.is_empty() { "none".into() } else { records.keys().cloned().collect::<Vec<_>>().join(", ") };
        return Err(ReplayError::NoSuchAgent { turn, agent: a.to_string(), known });
    }
    let ctx = Ctx {
        delivered: std::cell::OnceCell::new(),
        org,
        store: org.mail(),
        journal_file: rel(org, &journal.records_path(turn)),
        tools: journal.tool_states(turn)?,
        ledger_file: rel(org, &org.layout.ledger()),
        charges,
    };
    let mut out = Replay { turn, agents: Vec::new(), other: Vec::new() };
    for r in records.values().filter(|r| agent.is_none_or(|a| a == r.agent)) {
        out.agents.push(ctx.agent(r)?);
    }
    for (a, lines) in &ctx.charges {
        if !records.contains_key(a) && agent.is_none_or(|x| x == a) {
            for (no, _) in lines {
                out.other.push(Difference {
                    file: format!("{} line {no}", ctx.ledger_file),
                    field: "agent".into(),
                    detail: format!("{a} was charged on turn {turn}, but the journal has no reply of {a} on that turn"),
                });
            }
        }
    }
    Ok(out)
}

/// The charges of `turn` in the ledger, by agent, with their line numbers.
fn charges(path: &Path, turn: u64) -> Result<BTreeMap<String, Vec<(usize, Entry)>>, PathError> {
    let mut out: BTreeMap<String, Vec<(usize, Entry)>> = BTreeMap::new();
    let Some(bytes) = crate::fsx::read_optional(path)? else { return Ok(out) };
    for line in ledger::read_lines(&String::from_utf8_lossy(&bytes)) {
        if let Line::Entry(no, e @ Entry::Charge { turn: t, .. }) = line {
            if t == turn {
                let Entry::Charge { agent, .. } = &e else { continue };
                out.entry(agent.clone()).or_default().push((no, e));
            }
        }
    }
    Ok(out)
}

/// A path shown from the org's root.
fn rel(org: &Org, p: &Path) -> String {
    p.strip_prefix(&org.layout.root).unwrap_or(p).display().to_string()
}

/// What every agent's replay reads.
struct Ctx<'a> {
    org: &'a Org,
    store: FsMailStore,
    journal_file: String,
    tools: BTreeMap<(String, String), ToolState>,
    ledger_file: String,
    charges: BTreeMap<String, Vec<(usize, Entry)>>,
    /// Whom each message was delivered to, from `events.jsonl`; read once,
    /// when a message to a group or `*` is checked.
    delivered: std::cell::OnceCell<HashMap<String, Vec<String>>>,
}

impl Ctx<'_> {
    /// The recipients `events.jsonl` says message `id` was delivered to, if any.
    fn delivered_to(&self, id: &str) -> Option<Vec<String>> {
        let all = self.delivered.get_or_init(|| {
            let mut all: HashMap<String, Vec<String>> = std::collections::HashMap::new();
            let Ok(f) = std::fs::File::open(self.org.layout.events()) else { return all };
            use std::io::BufRead;
            for line in std::io::BufReader::new(f).lines().map_while(Result::ok) {
                if !line.contains("\"delivered\"") {
                    continue;
                }
                if let Some(crate::events::Event { kind: crate::events::EventKind::Delivered { id, to, .. }, .. }) =
                    crate::events::Event::parse(&line)
                {
                    let seen = all.entry(id).or_default();
                    if !seen.contains(&to) {
                        seen.push(to);
                    }
                }
            }
            all
        });
        all.get(id).cloned()
    }

    fn agent(&self, r: &Record) -> Result<AgentReplay, PathError> {
        let mut d = Vec::new();
        self.charge(r, &mut d);
        if r.outcome == Outcome::Ok {
            self.plan_again(r, &mut d)?;
            for m in &r.messages {
                self.message(r, m, &mut d)?;
            }
            self.tool_results(r, &mut d)?;
            self.consumed(r, &mut d)?;
        }
        Ok(AgentReplay {
            agent: r.agent.clone(),
            outcome: r.outcome,
            model: r.model.clone(),
            cost: r.cost,
            messages: r.messages.iter().map(|m| m.id.clone()).collect(),
            tool_results: r.tool_calls.iter().map(|c| c.result.clone()).collect(),
            memory: r.memory.keys().cloned().collect(),
            mail: r.mail.clone(),
            differences: d,
        })
    }

    /// The ledger line of (turn, agent) against the journaled charge.
    fn charge(&self, r: &Record, d: &mut Vec<Difference>) {
        let (turn, agent) = (r.turn, r.agent.as_str());
        let lines = self.charges.get(agent).map(Vec::as_slice).unwrap_or_default();
        let Some(usage) = r.usage else {
            for (no, _) in lines {
                d.push(Difference {
                    file: format!("{} line {no}", self.ledger_file),
                    field: "cost".into(),
                    detail: format!(
                        "{agent} was charged on turn {turn}, but its model never answered (the journal has no usage)"
                    ),
                });
            }
            return;
        };
        let Some((no, Entry::Charge { model, input_tokens, output_tokens, cost, .. })) = lines.first() else {
            d.push(Difference {
                file: self.ledger_file.clone(),
                field: "cost".into(),
                detail: format!("no charge of {agent} on turn {turn}; the journal says {:.4}", r.cost),
            });
            return;
        };
        let file = format!("{} line {no}", self.ledger_file);
        if *cost != r.cost {
            let detail = format!("{agent} on turn {turn} was charged {cost:.4}, the journal says {:.4}", r.cost);
            d.push(Difference { file: file.clone(), field: "cost".into(), detail });
        }
        if *model != r.model {
            let detail =
                format!("{agent} on turn {turn} was charged for model `{model}`, the journal says `{}`", r.model);
            d.push(Difference { file: file.clone(), field: "model".into(), detail });
        }
        if (*input_tokens, *output_tokens) != (usage.input_tokens, usage.output_tokens) {
            let detail = format!(
                "{agent} on turn {turn} was charged for {input_tokens} + {output_tokens} tokens, the journal says {} + {}",
                usage.input_tokens, usage.output_tokens
            );
            d.push(Difference { file: file.clone(), field: "tokens".into(), detail });
        }
        for (no, _) in &lines[1..] {
            d.push(Difference {
                file: format!("{} line {no}", self.ledger_file),
                field: "turn".into(),
                detail: format!("{agent} was charged a second time on turn {turn}"),
            });
        }
    }

    /// Parses and plans the journaled reply again, and compares the plan with the journal's.
    fn plan_again(&self, r: &Record, d: &mut Vec<Difference>) -> Result<(), PathError> {
        let file = &self.journal_file;
        let Some(text) = &r.reply else {
            let detail = format!("{}'s reply was used, but the journal holds no reply text", r.agent);
            d.push(Difference { file: file.clone(), field: "reply".into(), detail });
            return Ok(());
        };
        let parsed = match parse_reply(text, !r.tool_calls.is_empty()) {
            Ok(p) => p,
            Err(e) => {
                let detail = format!("{}'s journaled reply was used, but it does not parse again: {e}", r.agent);
                d.push(Difference { file: file.clone(), field: "reply".into(), detail });
                return Ok(());
            }
        };
        // Calls the text asked for come first; the rest were the model's native calls.
        let from_text = parsed.tool_calls.len().min(self.org.settings.tools.max_calls);
        let native = r.tool_calls.iter().skip(from_text).map(|pc| crate::reply::ToolCall {
            id: Some(pc.call.id.clone()),
            tool: pc.call.tool.clone(),
            args: pc.call.args.clone(),
        });
        let mut threads_owned = HashMap::new();
        for id in &r.mail {
            if let Some((_, Some(m))) = self.store.find_delivered(&r.agent, id)? {
                threads_owned.insert(id.clone(), m.thread);
            }
        }
        let threads: HashMap<&str, &str> = threads_owned.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let at = Stamps { turn: r.turn, started: started(r), now: taken(r) };
        let native: Vec<_> = native.collect();
        let plan = plan_reply(self.org, &r.agent, &threads, parsed.clone(), native.clone(), at, |_| None);
        // A value that no append or merge can extend: a key whose plan is the
        // same on it as on no value is decided by the reply alone.
        let other = serde_json::Value::String("\u{0}".into());
        let on_other = plan_reply(self.org, &r.agent, &threads, parsed, native, at, |_| Some(other.clone())).memory;

        let agent = &r.agent;
        if plan.messages.len() != r.messages.len() {
            let detail = format!(
                "{agent}'s reply plans {} messages again, the journal has {}",
                plan.messages.len(),
                r.messages.len()
            );
            d.push(Difference { file: file.clone(), field: "messages".into(), detail });
        }
        for (i, (planned, journaled)) in plan.messages.iter().zip(&r.messages).enumerate() {
            for field in message_fields(planned, journaled) {
                let detail = format!(
                    "{agent}'s message {i} ({}): {field} in the journal differs from the reply parsed again",
                    journaled.id
                );
                d.push(Difference { file: file.clone(), field: format!("messages[{i}].{field}"), detail });
            }
        }
        if plan.tool_calls != r.tool_calls {
            let ids = |c: &[crate::journal::PlannedCall]| {
                c.iter().map(|c| format!("{}:{}→{}", c.call.id, c.call.tool, c.result)).collect::<Vec<_>>().join(", ")
            };
            let detail = format!(
                "{agent}'s tool calls planned again are [{}], the journal has [{}]",
                ids(&plan.tool_calls),
                ids(&r.tool_calls)
            );
            d.push(Difference { file: file.clone(), field: "tool_calls".into(), detail });
        }
        for (key, value) in &plan.memory {
            if on_other.get(key) != Some(value) {
                continue;
            }
            if r.memory.get(key) != Some(value) {
                let detail = format!("{agent}'s memory `{key}` in the journal differs from the reply parsed again");
                d.push(Difference { file: file.clone(), field: format!("memory.{key}"), detail });
            }
        }
        for key in r.memory.keys().filter(|k| !plan.memory.contains_key(*k) && !on_other.contains_key(*k)) {
            let detail = format!("the journal changes {agent}'s memory `{key}`, which the reply parsed again does not");
            d.push(Difference { file: file.clone(), field: format!("memory.{key}"), detail });
        }
        if plan.notes != r.notes {
            let detail = format!("{agent}'s notes in the journal differ from the reply parsed again");
            d.push(Difference { file: file.clone(), field: "notes".into(), detail });
        }
        Ok(())
    }

    /// One journaled message: in the sender's outbox, and in each recipient's
    /// inbox or accounted for by a dead letter.
    fn message(&self, r: &Record, m: &Message, d: &mut Vec<Difference>) -> Result<(), PathError> {
        let (store, agent) = (&self.store, r.agent.as_str());
        let mut waiting = false;
        let mut found = None;
        for folder in [Folder::Sent, Folder::Pending] {
            let path = store.message_path(agent, folder, &m.id);
            if std::fs::symlink_metadata(&path).is_ok() {
                waiting = folder == Folder::Pending;
                found = Some((path, store.find(agent, folder, &m.id)?));
                break;
            }
        }
        let limit = READ_LIMIT.max(self.org.settings.max_message_bytes);
        // A group or `*` meant whom it meant on that turn, which the org as it
        // is now may not say (a member added or removed since): the events
        // of its deliveries do. Refused whole when its `to` cannot be
        // expanded: the dead letter names `to` as written.
        let routed = crate::address::is_broadcast(&m.to).then(|| self.delivered_to(&m.id)).flatten();
        let recipients = match routed {
            Some(to) => to,
            None => crate::route::recipients(self.org, agent, m).unwrap_or_else(|_| m.to.0.clone()),
        };
        match found {
            Some((path, copy)) => self.compare(&path, copy.as_ref(), m, "the journaled reply", d),
            // Refused whole (a duplicate id): its dead letter says so.
            None if recipients.iter().any(|to| store.dead_covers(agent, &m.id, to, limit)) => return Ok(()),
            None => d.push(Difference {
                file: rel(self.org, &store.message_path(agent, Folder::Sent, &m.id)),
                field: "id".into(),
                detail: format!(
                    "{agent}'s message {} (turn {}) is neither in its outbox nor in a dead letter",
                    m.id, r.turn
                ),
            }),
        }
        if waiting {
            // Not routed yet: no recipient has it.
            return Ok(());
        }
        for to in recipients.iter().filter(|to| store.is_local(to)) {
            match store.find_delivered(to, &m.id)? {
                Some((path, copy)) => self.compare(&path, copy.as_ref(), m, "the journaled reply", d),
                None if store.dead_covers(agent, &m.id, to, limit) => {}
                None => d.push(Difference {
                    file: rel(self.org, &store.dir(to, Folder::Unread)),
                    field: "id".into(),
                    detail: format!(
                        "{agent}'s message {} to {to} (turn {}) is in no folder of {to}'s inbox, and no dead letter accounts for it",
                        m.id, r.turn
                    ),
                }),
            }
        }
        Ok(())
    }

    /// Each tool call's result in the agent's inbox, as the journal's tool log has it.
    fn tool_results(&self, r: &Record, d: &mut Vec<Difference>) -> Result<(), PathError> {
        let agent = r.agent.as_str();
        for pc in &r.tool_calls {
            let done = match self.tools.get(&(agent.to_string(), pc.call.id.clone())) {
                Some(ToolState::Done(done)) => done,
                _ => {
                    let tools_file = self.journal_file.replace("records.jsonl", "tools.jsonl");
                    let detail =
                        format!("{agent}'s tool call {} ({}) has no result in the journal", pc.call.id, pc.call.tool);
                    d.push(Difference { file: tools_file, field: "done".into(), detail });
                    continue;
                }
            };
            let limit = READ_LIMIT.max(self.org.settings.max_message_bytes);
            match self.store.find_delivered(agent, &pc.result)? {
                Some((path, copy)) => {
                    let shown = rel(self.org, &path);
                    let why = match &copy {
                        None => Some(("id", "it is not the tool result the journal names")),
                        Some(c) if c.body != done.outcome.body() => {
                            Some(("body", "body differs from the journaled result"))
                        }
                        Some(c) if c.kind != Kind::ToolResult => Some(("kind", "it is not a tool_result")),
                        Some(c) if c.reply_to.as_deref() != Some(pc.call.id.as_str()) => {
                            Some(("reply_to", "reply_to is not the call's id"))
                        }
                        Some(_) => None,
                    };
                    if let Some((field, what)) = why {
                        d.push(Difference { file: shown, field: field.into(), detail: what.into() });
                    }
                }
                None if self.store.dead_covers(agent, &pc.result, agent, limit) => {}
                None => d.push(Difference {
                    file: rel(self.org, &self.store.dir(agent, Folder::Unread)),
                    field: "id".into(),
                    detail: format!(
                        "the result {} of {agent}'s tool call {} is not in its inbox",
                        pc.result, pc.call.id
                    ),
                }),
            }
        }
        Ok(())
    }

    /// The mail the reply read is read: in the inbox, and not unread.
    fn consumed(&self, r: &Record, d: &mut Vec<Difference>) -> Result<(), PathError> {
        let agent = r.agent.as_str();
        for id in &r.mail {
            let unread = self.store.message_path(agent, Folder::Unread, id);
            if std::fs::symlink_metadata(&unread).is_ok() {
                let detail = format!("{agent} read {id} on turn {}, but it is still unread", r.turn);
                d.push(Difference { file: rel(self.org, &unread), field: "folder".into(), detail });
            } else if self.store.find_delivered(agent, id)?.is_none() {
                let detail = format!("{agent} read {id} on turn {}, but it is in no folder of its inbox", r.turn);
                let file = rel(self.org, &self.store.dir(agent, Folder::Read));
                d.push(Difference { file, field: "id".into(), detail });
            }
        }
        Ok(())
    }

    /// Compares a copy on disk with the message planned.
    fn compare(&self, path: &Path, copy: Option<&Message>, m: &Message, source: &str, d: &mut Vec<Difference>) {
        let file = rel(self.org, path);
        match copy {
            None => {
                let detail = format!("not a readable message with id {} (the journal planned it)", m.id);
                d.push(Difference { file, field: "id".into(), detail });
            }
            Some(copy) => {
                for field in message_fields(copy, m) {
                    let detail = format!("{field} differs from {source}");
                    d.push(Difference { file: file.clone(), field: field.into(), detail });
                }
            }
        }
    }
}

/// The fields in which two messages differ.
fn message_fields(a: &Message, b: &Message) -> Vec<&'static str> {
    let checks: [(&'static str, bool); 12] = [
        ("id", a.id == b.id),
        ("from", a.from == b.from),
        ("to", a.to == b.to),
        ("subject", a.subject == b.subject),
        ("body", a.body == b.body),
        ("priority", a.priority == b.priority),
        ("reply_to", a.reply_to == b.reply_to),
        ("thread", a.thread == b.thread),
        ("created_at", a.created_at == b.created_at),
        ("turn", a.turn == b.turn),
        ("kind", a.kind == b.kind),
        ("ttl_turns", a.ttl_turns == b.ttl_turns && a.ack_required == b.ack_required),
    ];
    checks.into_iter().filter(|(_, same)| !same).map(|(f, _)| f).collect()
}

/// When the record's turn started: recorded, or (in a journal written before
/// it was) read back from the stamp of the first id it planned.
fn started(r: &Record) -> DateTime<Utc> {
    r.started.unwrap_or_else(|| {
        let first = r.messages.first().map(|m| m.id.as_str()).or(r.tool_calls.first().map(|c| c.result.as_str()));
        first
            .and_then(|id| id.split('-').next())
            .and_then(|stamp| NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%S%3fZ").ok())
            .map(|t| t.and_utc())
            .unwrap_or_default()
    })
}

/// When the record's reply was taken: recorded, or its first message's
/// `created_at`; to the millisecond, as message files keep it.
fn taken(r: &Record) -> DateTime<Utc> {
    r.at.map(|at| at.trunc_subsecs(3)).or(r.messages.first().map(|m| m.created_at)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::clock::Sources;
    use crate::send::{self, SendOptions};
    use crate::testing::{edit, new_org};

    /// manager answers the human, sets `goal`, appends to `log`, and calls `recall`.
    const SCRIPT: &str = r#"[[reply]]
agent = "manager"
text = '{"messages":[{"to":"human","body":"on it","priority":"urgent"},{"to":"planner","body":"plan it"}],"notes":"n","memory":[{"op":"set","key":"goal","value":"ship"},{"op":"append","key":"log","value":"started"}],"tool_calls":[{"tool":"recall","args":{"query":"x"}}]}'
"#;

    async fn one_turn() -> (tempfile::TempDir, std::path::PathBuf) {
        let (d, root) = new_org();
        let models = root.join("org/models.toml");
        let mut text = std::fs::read_to_string(&models).unwrap();
        text.push_str(
            "\n[providers.s]\nkind = \"script\"\nscript = \"org/script.toml\"\n\n[models.scripted]\nprovider = \"s\"\n",
        );
        std::fs::write(models, text).unwrap();
        std::fs::write(root.join("org/script.toml"), SCRIPT).unwrap();
        edit(&root, "agents/manager/resume.toml", "model = \"default\"", "model = \"scripted\"");
        let src = Sources::fixed("2026-01-02T03:04:05.006Z".parse().unwrap());
        let org = Org::load(&root).unwrap();
        let opts = SendOptions { sources: src.clone(), ..SendOptions::default() };
        send::send(&org, "human", "manager", "hello", opts).unwrap();
        let registry = Arc::new(org.registry());
        crate::turn::run_keeping(&org, &registry, &src, None, &mut Default::default()).await.unwrap();
        (d, root)
    }

    /// Rewrites the journaled record of `agent` on turn 1.
    fn edit_record(root: &Path, agent: &str, f: impl Fn(&mut serde_json::Value)) {
        let p = root.join("org/state/journal/1/records.jsonl");
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<String> = text
            .lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                if v["agent"] == agent {
                    f(&mut v);
                }
                serde_json::to_string(&v).unwrap()
            })
            .collect();
        std::fs::write(p, lines.join("\n") + "\n").unwrap();
    }

    fn fields(r: &Replay) -> Vec<String> {
        r.differences().map(|d| d.field.clone()).collect()
    }

    #[tokio::test]
    async fn a_turn_replays_clean_and_a_journal_that_the_reply_does_not_give_is_named() {
        let (_d, root) = one_turn().await;
        let org = Org::load(&root).unwrap();
        let r = replay(&org, 1, None).unwrap();
        assert!(r.matches(), "{r:#?}");
        let manager = &r.agents[0];
        assert_eq!((manager.messages.len(), manager.tool_results.len()), (2, 1), "{manager:?}");
        assert_eq!(manager.memory, ["goal", "log"]);

        // The journal's plan is checked against the reply parsed again.
        edit_record(&root, "manager", |v| {
            v["messages"][1]["body"] = "other".into();
            v["memory"]["goal"] = "sink".into();
            // An append depends on the memory before the turn: not compared.
            v["memory"]["log"] = serde_json::json!(["older", "started"]);
        });
        let r = replay(&org, 1, None).unwrap();
        let f = fields(&r);
        assert!(f.contains(&"messages[1].body".to_string()), "{r:#?}");
        assert!(f.contains(&"memory.goal".to_string()), "{r:#?}");
        assert!(!f.iter().any(|f| f == "memory.log"), "{r:#?}");
        // The copies on disk are compared with the journal: planner's copy now differs from it.
        assert!(r.differences().any(|d| d.file.contains("agents/planner/inbox/") && d.field == "body"), "{r:#?}");
    }

    /// A journal written before the turn's start and reply times were kept
    /// replays from the stamp of its ids and its messages' `created_at`.
    #[tokio::test]
    async fn a_journal_without_recorded_times_replays_from_its_ids() {
        let (_d, root) = one_turn().await;
        edit_record(&root, "manager", |v| {
            let o = v.as_object_mut().unwrap();
            assert!(o.remove("started").is_some() && o.remove("at").is_some());
        });
        let org = Org::load(&root).unwrap();
        let r = replay(&org, 1, None).unwrap();
        assert!(r.matches(), "{r:#?}");
        // A tool result altered in the inbox is named.
        let result = &r.agents[0].tool_results[0];
        let store = org.mail();
        let (path, msg) = store.find_delivered("manager", result).unwrap().unwrap();
        let mut msg = msg.unwrap();
        msg.body = "{}".into();
        std::fs::write(&path, msg.to_bytes()).unwrap();
        let r = replay(&org, 1, None).unwrap();
        let d: Vec<_> = r.differences().collect();
        assert_eq!(d.len(), 1, "{d:#?}");
        assert_eq!(d[0].field, "body");
        assert!(d[0].to_string().contains("body differs from the journaled result"), "{}", d[0]);
    }

    #[test]
    fn messages_differ_by_their_fields() {
        let m = Message::parse(br#"{"id":"a1","from":"x","to":"y","body":"hi"}"#).unwrap();
        let mut n = m.clone();
        assert!(message_fields(&m, &n).is_empty());
        n.body = "ho".into();
        n.priority = crate::message::Priority::Urgent;
        assert_eq!(message_fields(&m, &n), ["body", "priority"]);
    }
}
