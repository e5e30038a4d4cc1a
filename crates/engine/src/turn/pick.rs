//! Pick: which agents are called this turn, and what each is asked.
//!
//! An agent is due when its schedule fires on the turn, its files are usable,
//! no reply of it is journaled for the turn yet, and it has unread mail (or
//! `wake = "always"`). A due agent is skipped, with an event, when the org's
//! budget is spent, it has no credits left, or its prompt alone would cost
//! more than it has left. Unread entries that are not messages go to dead here.
//!
//! The pick is lazy: the call phase asks [`Turn::next_job`] for the next
//! agent only when one of its `max_parallel` slots is free, so that a turn
//! holds at most that many prompts (and their mail) at once, however many
//! agents the org has.

use std::collections::btree_map;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use lemming_provider::{MailItem, Registry, Request};

use super::ahead::Ahead;
use super::Turn;
use crate::chart::Chart;
use crate::error::PathError;
use crate::events::{EventKind, Over, SkipReason};
use crate::fsx::Batch;
use crate::ledger::Ledger;
use crate::mailbox::MailStore;
use crate::memory;
use crate::message::Message;
use crate::name::AgentName;
use crate::org::Org;
use crate::prompt;
use crate::resume::{Resume, Wake};
use crate::trouble;

/// One agent to call: its request and the mail in it.
pub(super) struct Job {
    pub(super) agent: String,
    pub(super) req: Request,
    pub(super) mail: Vec<Message>,
    /// Counts the job among the live ones while it exists.
    _live: Live,
}

/// How many jobs (prompts, with their mail) exist at once, and the most
/// that did: the turn's memory grows with it, so it is kept to `max_parallel`.
#[derive(Debug, Default)]
pub(super) struct Alive {
    now: AtomicUsize,
    most: AtomicUsize,
}

impl Alive {
    /// The most jobs that existed at once.
    pub(super) fn most(&self) -> usize {
        self.most.load(Ordering::Relaxed)
    }

    fn count(self: &Arc<Alive>) -> Live {
        let now = self.now.fetch_add(1, Ordering::Relaxed) + 1;
        self.most.fetch_max(now, Ordering::Relaxed);
        Live(Arc::clone(self))
    }
}

/// A job's place in [`Alive`], given back when the job is dropped.
struct Live(Arc<Alive>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The agents of the turn not looked at yet, and what the pick of the
/// others left to do: the dead letters of their bad unread entries, to be
/// committed before anything is journaled ([`Due::housekeeping`]).
pub(super) struct Due<'a> {
    agents: btree_map::Iter<'a, AgentName, Box<Resume>>,
    org: &'a Org,
    chart: Chart<'a>,
    registry: &'a Registry,
    ledger: &'a Ledger,
    /// The agents whose reply for this turn is already at hand (journaled,
    /// or held in memory): they are not called again.
    answered: &'a HashSet<String>,
    housekeeping: Batch,
    dead_taken: HashSet<String>,
    /// The state folder was found writable (before the first model call).
    probed: bool,
    /// The jobs handed out and not dropped yet.
    alive: Arc<Alive>,
    /// The unread mail of the next agents, read ahead.
    ahead: Ahead,
}

impl<'a> Due<'a> {
    /// Every agent of `org`, none looked at yet.
    pub(super) fn new(
        org: &'a Org,
        registry: &'a Registry,
        ledger: &'a Ledger,
        answered: &'a HashSet<String>,
    ) -> Due<'a> {
        Due {
            agents: org.agents.iter(),
            org,
            chart: org.chart(),
            registry,
            ledger,
            answered,
            housekeeping: Batch::new(),
            dead_taken: HashSet::new(),
            probed: false,
            alive: Arc::default(),
            ahead: Ahead::default(),
        }
    }

    /// Reads the unread mail of the agents the pick will look at (see
    /// `looked_at`) ahead of it, on a thread of its own ([`Ahead`]). An agent
    /// the pick passes by after all (sick meanwhile) has its read dropped.
    pub(super) fn read_ahead(
        &mut self,
        mb: &crate::mailbox::FsMailStore,
        sick: &std::collections::BTreeMap<String, PathError>,
        turn: u64,
    ) {
        let org = self.org;
        let agents = self
            .agents
            .clone()
            .filter(|(name, resume)| looked_at(name, resume, self.answered, sick, turn) && org.runs_here(resume));
        self.ahead = Ahead::start(mb.clone(), agents.map(|(name, _)| name.to_string()).collect());
    }

    /// The dead letters of the bad unread entries found since the last take, to commit.
    pub(super) fn take_housekeeping(&mut self) -> Batch {
        std::mem::take(&mut self.housekeeping)
    }

    /// The most jobs (prompts, with their mail) that existed at once.
    pub(super) fn most_prompts(&self) -> usize {
        self.alive.most()
    }
}

impl Turn<'_> {
    /// The next agent to call, with its request, or `None` when no agent is
    /// left. The agents it passes on the way are skipped (with an event) or
    /// not due; their bad unread entries are queued for dead. Before the first
    /// job, the state folder is probed: a full disk or a read-only org is
    /// found before any model is paid for.
    pub(super) fn next_job(&mut self, due: &mut Due<'_>) -> Result<Option<Job>, PathError> {
        let (org, turn, clock) = (self.org, self.turn, self.clock);
        for (name, resume) in due.agents.by_ref() {
            let agent = name.as_str();
            if !looked_at(name, resume, due.answered, &self.sick, turn) || !org.runs_here(resume) {
                continue;
            }
            let (mut mail, bad) = match due.ahead.unread(&self.mb, agent) {
                Ok(unread) => unread,
                Err(e) if trouble::org_wide(&e) => return Err(e),
                Err(e) => {
                    self.sick.insert(agent.to_string(), e);
                    continue;
                }
            };
            for b in bad {
                let why = self.mb.dead_bad(&mut due.housekeeping, agent, &b, turn, clock.now(), &mut due.dead_taken);
                self.report.dead += 1;
                self.ev.emit(clock.now(), EventKind::from(&why));
            }
            let (model, Prompt { may, tools, system, user }) =
                match choose(org, due.registry, due.ledger, &due.chart, resume, turn, &mut mail) {
                    Choice::Call { model, prompt } => (model, *prompt),
                    Choice::Skip { reason, over } => {
                        if let Some(over) = &over {
                            tracing::warn!(agent, "{}", over.detail);
                        }
                        self.skip(agent, reason, over);
                        continue;
                    }
                    Choice::Idle(_) => continue,
                };
            if !due.probed {
                crate::fsx::probe(&org.layout.state_tmp())?;
                due.probed = true;
            }
            let req = Request {
                agent: agent.to_string(),
                turn,
                system,
                prompt: user,
                mail: mail.iter().map(mail_item).collect(),
                may_send_to: may,
                model,
                agent_dir: Some(org.layout.agent_dir(agent)),
                stream: None,
                // The same tools its prompt (and schema) offers.
                tools,
            };
            self.acks.insert(agent.to_string(), mail.iter().filter(|m| m.ack_required).cloned().collect());
            let _live = due.alive.count();
            return Ok(Some(Job { agent: agent.to_string(), req, mail, _live }));
        }
        Ok(None)
    }

    /// Records a due agent that is not called, in the report and the events.
    fn skip(&mut self, agent: &str, reason: SkipReason, over: Option<Over>) {
        self.report.skipped.push((agent.to_string(), reason));
        self.ev.emit(self.clock.now(), EventKind::Skipped { agent: agent.to_string(), reason, over });
    }
}

/// Whether the pick looks at `name` on `turn`: an agent (not a person) that
/// has not answered yet, whose files are usable, and whose schedule fires.
fn looked_at(
    name: &AgentName,
    resume: &Resume,
    answered: &HashSet<String>,
    sick: &std::collections::BTreeMap<String, PathError>,
    turn: u64,
) -> bool {
    !name.is_human()
        && !answered.contains(name.as_str())
        && !sick.contains_key(name.as_str())
        && resume.schedule.fires(turn)
}

/// What the pick does with an agent that is scheduled on the turn, with
/// this unread mail.
pub enum Choice {
    /// It is called with this prompt, at this model.
    Call {
        /// The model asked first.
        model: lemming_provider::config::ModelSpec,
        /// What it is asked.
        prompt: Box<Prompt>,
    },
    /// It is due but not called (an event says so).
    Skip {
        /// Why.
        reason: SkipReason,
        /// The figures, when its prompt alone costs more than it has left.
        over: Option<Over>,
    },
    /// It is not due: nothing to say in the turn's events.
    Idle(Idle),
}

/// Why a scheduled agent is not due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idle {
    /// `wake = "mail"` and no unread mail.
    NoMail,
    /// Its model key is not in `org/models.toml`.
    NoModel,
}

/// Decides whether the scheduled agent of `resume` is called on `turn` with
/// this unread mail (put in prompt order and cut, as [`prompt_for`] does),
/// skipped, or not due. The turn's pick and the dry run decide through here.
pub fn choose(
    org: &Org,
    registry: &Registry,
    ledger: &Ledger,
    chart: &crate::chart::Chart<'_>,
    resume: &Resume,
    turn: u64,
    mail: &mut Vec<Message>,
) -> Choice {
    if resume.schedule.wake == Wake::Mail && mail.is_empty() {
        return Choice::Idle(Idle::NoMail);
    }
    if org.settings.budget.is_some_and(|budget| ledger.org_spent() >= budget) {
        return Choice::Skip { reason: SkipReason::OrgBudgetSpent, over: None };
    }
    let left = ledger.balance(resume.name.as_str(), resume.credits).left;
    if left <= 0.0 {
        return Choice::Skip { reason: SkipReason::OutOfCredits, over: None };
    }
    let Some(model) = resume.model.as_deref().and_then(|k| registry.model(k)) else {
        return Choice::Idle(Idle::NoModel);
    };
    let prompt = prompt_for(org, chart, resume, turn, mail);
    if let Some(over) = PromptOverCredits::check(model, &prompt.system, &prompt.user, left) {
        let over = Over { detail: over.to_string(), tokens: over.tokens, cost: over.cost, left: over.left };
        return Choice::Skip { reason: SkipReason::PromptOverCredits, over: Some(over) };
    }
    Choice::Call { model: model.clone(), prompt: Box::new(prompt) }
}

/// What an agent is asked: whom it may write to, the tools it may call, and
/// the system and user parts of its prompt.
pub struct Prompt {
    /// What it may write to: the agents, then the groups (`@name`) with a
    /// member it may reach, then `*` when it reaches more than one agent.
    pub may: Vec<String>,
    /// The tools it is granted, as its prompt offers them.
    pub tools: Vec<lemming_provider::ToolSpec>,
    /// The system part.
    pub system: String,
    /// The user part.
    pub user: String,
}

/// The prompt `resume`'s agent gets on `turn` with this unread mail, which is
/// put in prompt order and cut to `max_mail_per_prompt` first. `status`
/// builds the same prompt to tell whether the agent can pay for it.
pub fn prompt_for(
    org: &Org,
    chart: &crate::chart::Chart<'_>,
    resume: &crate::resume::Resume,
    turn: u64,
    mail: &mut Vec<Message>,
) -> Prompt {
    let agent = resume.name.as_str();
    prompt::order(mail);
    mail.truncate(org.settings.max_mail_per_prompt);
    let mut may = chart.reachable(agent);
    // The groups it may address, and `*` when it reaches more than one agent.
    let groups: Vec<String> = crate::send::groups_within(org, &may).into_iter().map(|g| format!("@{g}")).collect();
    let everyone = may.len() > 1;
    may.extend(groups);
    if everyone {
        may.push(crate::address::EVERYONE.to_string());
    }
    let summary = memory::summary(&memory::dir(&org.layout.root, agent));
    // The contract is worded for how the agent's model answers (a schema offers
    // less; native tools go as function definitions), and offers its granted tools.
    let model = resume.model.as_deref().and_then(|k| org.models.models.get(k));
    let tools = org.tools.granted(resume);
    let others = org.agents.len().saturating_sub(1);
    let (system, user) = prompt::build(resume, turn, prompt::May::new(&may, others), &summary, mail, model, &tools);
    Prompt { may, tools, system, user }
}

/// An agent whose prompt alone would cost more credits than it has left: it is
/// not called (the reason `prompt_over_credits`), and its mail stays unread
/// until it is topped up or the prompt gets shorter.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptOverCredits {
    /// The model key that would be asked first.
    pub model: String,
    /// The prompt's tokens, estimated as ceil(chars / 4).
    pub tokens: u64,
    /// What those tokens cost at the model's price.
    pub cost: f64,
    /// What the agent has left.
    pub left: f64,
}

impl PromptOverCredits {
    /// The reason code in the turn report, the events and `status`.
    pub const REASON: &'static str = "prompt_over_credits";

    /// `Some` when the prompt (`system` + `user`) alone costs more than `left` at `model`'s price.
    pub fn check(model: &lemming_provider::config::ModelSpec, system: &str, user: &str, left: f64) -> Option<Self> {
        let chars = system.chars().count() + user.chars().count();
        let cost = crate::ledger::prompt_cost(&model.price, chars);
        (cost > left).then(|| PromptOverCredits {
            model: model.key.clone(),
            tokens: lemming_provider::Usage::estimate(chars, 0).input_tokens,
            cost,
            left,
        })
    }
}

impl std::fmt::Display for PromptOverCredits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "not called: its prompt alone is about {} tokens, {:.4} credits at model `{}`, and it has {:.4} left; \
             top it up (`lemming top-up`) or shorten its instructions, memory or mail",
            self.tokens, self.cost, self.model, self.left
        )
    }
}

fn mail_item(m: &Message) -> MailItem {
    MailItem {
        id: m.id.clone(),
        from: m.from.clone(),
        body: m.body.clone(),
        kind: m.kind.as_str().into(),
        reply_to: m.reply_to.clone(),
        thread: m.thread.clone(),
    }
}
