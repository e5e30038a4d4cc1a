//! One turn: route → pick → run → route → commit.
//!
//! Every phase ends in a group commit ([`Batch`]): one filesystem sync per
//! step, not one per file. The order of the commits is what makes a crash at
//! any point safe:
//!
//! 1. deliveries are durable before outbox files move to `sent/` (G3);
//! 2. each reply is journaled, with the plan of its effects, before any effect;
//! 3. effects (outbox, memory, ledger, attempts) are durable before the mail
//!    that produced them moves to `cur/` (G4);
//! 4. `turn.json` is written last.
//!
//! A turn repeated after a crash finds the journaled replies, with the ids of
//! the messages they write, so it writes the same ids, calls no model twice,
//! and charges no (turn, agent) twice (G5).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use lemming_provider::{MailItem, Registry, Request};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::activity::{self, Activity};
use crate::clock::{Clock, Sources};
use crate::error::PathError;
use crate::events::{EventKind, Events, FailCause, Over, Run, SkipReason};
use crate::fault;
use crate::fsx::Batch;
use crate::journal::{Journal, Outcome, Record};
use crate::ledger::{Entry, Ledger};
use crate::mailbox::MailStore;
use crate::memory;
use crate::message::{self, Kind, Message, To};
use crate::name::AgentName;
use crate::org::{agent_folders, Org};
use crate::prompt;
use crate::reply;
use crate::resume::Wake;
use crate::route::{route, Post};
use crate::trouble;

/// What a turn did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TurnReport {
    /// The turn number.
    pub turn: u64,
    /// Messages delivered into inboxes (bounces included).
    pub delivered: usize,
    /// Messages sent to `dead/` (refused, malformed, expired or poisoned).
    pub dead: usize,
    /// Messages held because their sender or recipient has an invalid resume.
    pub held: usize,
    /// Agents that ran and whose reply was used.
    pub ran: Vec<String>,
    /// Agents whose journaled reply from an interrupted run was reused.
    pub replayed: Vec<String>,
    /// Agents whose reply came on an earlier try of this turn that could not
    /// journal it (a full disk): it was kept in memory and is journaled now;
    /// their model was not asked again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recovered: Vec<String>,
    /// Agents whose run failed, with the reason.
    pub failed: Vec<(String, String)>,
    /// Agents that were due but skipped, with the reason (`out_of_credits`, `org_budget_spent`).
    pub skipped: Vec<(String, SkipReason)>,
    /// Credits charged this turn.
    pub cost: f64,
}

struct Job {
    agent: String,
    req: Request,
    mail: Vec<Message>,
}

/// A stop request: when it turns `true`, provider calls still in flight are
/// abandoned, the agents that already answered are applied, and the turn
/// commits; the others keep their mail unread for the next turn.
pub type Stop = tokio::sync::watch::Receiver<bool>;

/// Replies a model gave on a try of a turn that then could not journal them
/// (a full disk, a read-only org). Whoever repeats the turn in the same
/// process (the daemon) passes them back, so that the turn journals and uses
/// them instead of asking the same (turn, agent) again.
#[derive(Debug, Default)]
pub struct Unjournaled {
    turn: u64,
    records: Vec<Record>,
    /// Model calls that answered but could not be journaled, since the last
    /// committed turn. Counted, logged and shown in `status` by the daemon.
    pub calls: u64,
}

impl Unjournaled {
    /// Whether replies are held.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The held replies of `turn` for agents the journal does not have yet.
    fn take(&mut self, turn: u64, journaled: &BTreeMap<String, Record>) -> Vec<Record> {
        let records = std::mem::take(&mut self.records);
        if self.turn != turn && !records.is_empty() {
            tracing::warn!(held = self.turn, turn, "replies held for another turn are dropped");
            return Vec::new();
        }
        records.into_iter().filter(|r| !journaled.contains_key(&r.agent)).collect()
    }
}

/// Runs one turn on a loaded org. The caller holds the org lock.
pub async fn run(org: &Org, registry: &Arc<Registry>, stop: Option<Stop>) -> Result<TurnReport, PathError> {
    run_keeping(org, registry, &Sources::real(), stop, &mut Unjournaled::default()).await
}

/// [`run`], reusing the replies in `held` that an earlier try of this turn
/// could not journal, and leaving there the replies that this try cannot.
pub async fn run_keeping(
    org: &Org,
    registry: &Arc<Registry>,
    src: &Sources,
    stop: Option<Stop>,
    held: &mut Unjournaled,
) -> Result<TurnReport, PathError> {
    let root = org.layout.root.clone();
    let mb = org.mail();
    let journal = Journal::new(&org.layout);
    let last = journal.last_turn()?;
    let Some(turn) = last.checked_add(1) else {
        return Err(PathError {
            path: org.layout.turn_json(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the turn counter is at its maximum ({last}); the file is corrupt: remove it, and the turn is recovered from the journal and the ledger"),
            ),
        });
    };
    let clock = &*src.clock;
    let started = clock.now();
    let mut report = TurnReport { turn, ..TurnReport::default() };
    let mut ev = Events::new(turn);
    let trouble_before = trouble::read_agents(&org.layout);
    // Agents whose files cannot be used this turn: they sit it out, alone.
    let mut sick: BTreeMap<String, PathError> = BTreeMap::new();

    for folder in agent_folders(&org.layout) {
        if AgentName::new(&folder).is_ok() {
            if let Err(e) = mb.ensure(&folder).and_then(|_| trouble::check_agent_files(&org.layout, &folder)) {
                if trouble::org_wide(&e) {
                    return Err(e);
                }
                sick.insert(folder, e);
                continue;
            }
            crate::fsx::clean_stale_tmp(mb.tmp_leftovers(&folder));
        }
    }
    // State files (`daemon.json`, `turn.json`, dead-letter reasons, memory) are written through here too.
    crate::fsx::clean_stale_tmp(
        std::fs::read_dir(org.layout.state_tmp()).into_iter().flatten().flatten().map(|e| e.path()),
    );

    route(org, Post::local(&mb), turn, clock, &mut report, &mut ev, &mut sick)?;
    fault::point("routed");

    // Pick.
    let replays = journal.records(turn)?;
    let carried = held.take(turn, &replays);
    let mut ledger = Ledger::load(&org.layout.ledger())?;
    let chart = org.chart();
    let mut jobs = Vec::new();
    let mut housekeeping = Batch::new();
    let mut dead_taken = HashSet::new();
    for (name, resume) in &org.agents {
        let agent = name.as_str();
        if name.is_human()
            || replays.contains_key(agent)
            || carried.iter().any(|r| r.agent == agent)
            || sick.contains_key(agent)
            || !resume.schedule.fires(turn)
        {
            continue;
        }
        let (mut mail, bad) = match mb.unread(agent) {
            Ok(unread) => unread,
            Err(e) if trouble::org_wide(&e) => return Err(e),
            Err(e) => {
                sick.insert(agent.to_string(), e);
                continue;
            }
        };
        for b in bad {
            let why = mb.dead_bad(&mut housekeeping, agent, &b, turn, clock.now(), &mut dead_taken);
            report.dead += 1;
            ev.emit(clock, EventKind::from(&why));
        }
        if resume.schedule.wake == Wake::Mail && mail.is_empty() {
            continue;
        }
        if org.settings.budget.is_some_and(|budget| ledger.total_spent() >= budget) {
            skip(&mut report, &mut ev, clock, agent, SkipReason::OrgBudgetSpent, None);
            continue;
        }
        let left = ledger.balance(agent, resume.credits).left;
        if left <= 0.0 {
            skip(&mut report, &mut ev, clock, agent, SkipReason::OutOfCredits, None);
            continue;
        }
        let Some(model) = resume.model.as_deref().and_then(|k| registry.model(k)) else { continue };
        let (may, system, user) = prompt_for(org, &chart, resume, turn, &mut mail);
        if let Some(over) = PromptOverCredits::check(model, &system, &user, left) {
            tracing::warn!(agent, "{over}");
            let over = Over { detail: over.to_string(), tokens: over.tokens, cost: over.cost, left: over.left };
            skip(&mut report, &mut ev, clock, agent, SkipReason::PromptOverCredits, Some(over));
            continue;
        }
        let req = Request {
            agent: agent.to_string(),
            turn,
            system,
            prompt: user,
            mail: mail.iter().map(mail_item).collect(),
            may_send_to: may,
            model: model.clone(),
            agent_dir: Some(org.layout.agent_dir(agent)),
        };
        jobs.push(Job { agent: agent.to_string(), req, mail });
    }
    housekeeping.commit(&root)?;
    // A full disk or a read-only org is found here, before any model is paid for.
    if !jobs.is_empty() {
        crate::fsx::probe(&org.layout.state_tmp())?;
    }

    // Run, concurrently up to max_parallel.
    let sem = Arc::new(Semaphore::new(org.settings.max_parallel));
    let mut set = JoinSet::new();
    for job in jobs {
        let registry = Arc::clone(registry);
        let sem = Arc::clone(&sem);
        set.spawn(async move {
            let _permit = sem.acquire_owned().await.expect("the semaphore is never closed");
            let result = registry.complete(&job.req).await;
            (job, result)
        });
    }
    let mut fresh = Vec::new();
    let mut stop = stop;
    loop {
        let joined = tokio::select! {
            joined = set.join_next() => joined,
            _ = stopped(&mut stop) => {
                if !set.is_empty() {
                    tracing::warn!(turn, unanswered = set.len(), "stopping: agents still waiting for their model keep their mail unread");
                }
                set.abort_all();
                None
            }
        };
        let Some(joined) = joined else { break };
        let (job, result) = match joined {
            Ok(r) => r,
            Err(e) => {
                if !e.is_cancelled() {
                    tracing::error!(error = %e, "an agent task panicked; its mail stays unread");
                }
                continue;
            }
        };
        fresh.push(record(org, &job, result, turn, started, clock.now()));
    }
    fresh.sort_by(|a, b| a.agent.cmp(&b.agent));
    let answered = fresh.iter().filter(|r| r.usage.is_some()).count() as u64;
    let recovered: Vec<String> = carried.iter().map(|r| r.agent.clone()).collect();
    let new_records: Vec<Record> = carried.into_iter().chain(fresh).collect();
    if let Err(e) = journal.append(turn, &new_records) {
        held.calls += answered;
        tracing::error!(
            turn,
            error = %e,
            replies = new_records.len(),
            unjournaled_calls = held.calls,
            "the replies could not be journaled; a daemon keeps them in memory and journals them when it can write again"
        );
        held.turn = turn;
        held.records = new_records;
        return Err(e);
    }
    fault::point("journaled");
    for agent in &recovered {
        let why = "the reply was kept in memory while it could not be journaled".to_string();
        ev.emit(clock, EventKind::Recovered { agent: agent.clone(), why });
    }
    report.recovered = recovered;

    // Apply the effects of every journaled reply (fresh and replayed).
    let replayed: Vec<String> = replays.keys().cloned().collect();
    let records: Vec<Record> = replays.into_values().chain(new_records).collect();
    let mut effects = Batch::new();
    let mut charges = Vec::new();
    let tmp = org.layout.state_tmp();
    for r in &records {
        if let Some(usage) = r.usage {
            charges.push(Entry::Charge {
                turn,
                agent: r.agent.clone(),
                model: r.model.clone(),
                input_tokens: usage.input_tokens,
                output_tokens: usage.output_tokens,
                cost: r.cost,
                estimated: usage.estimated,
                at: clock.now(),
            });
            if !ledger.has_charge(turn, &r.agent) {
                report.cost += r.cost;
            }
        }
        let mut attempts = mb.attempts(&r.agent);
        let before = attempts.clone();
        match r.outcome {
            Outcome::Ok => {
                for m in &r.messages {
                    mb.post(&mut effects, &r.agent, m);
                }
                memory::apply(&mut effects, &memory::dir(&root, &r.agent), &tmp, &r.memory)?;
                attempts.retain(|id, _| !r.mail.contains(id));
                report.ran.push(r.agent.clone());
            }
            Outcome::Failed => {
                let error = r.error.clone().unwrap_or_default();
                // A provider that is down or refuses the request says nothing about the mail.
                let counts = r.cause.is_none_or(|c| c.counts_against_mail());
                for id in r.mail.iter().filter(|_| counts) {
                    if !mb.is_unread(&r.agent, id) {
                        continue;
                    }
                    let a = attempts.entry(id.clone()).or_default();
                    if a.last_turn != turn {
                        a.count += 1;
                        a.last_turn = turn;
                        a.last_error = error.clone();
                    }
                    if a.count >= org.settings.max_attempts {
                        let detail =
                            format!("{} failed {} times on this message; last error: {error}", r.agent, a.count);
                        if let Some(why) = mb.poison(&mut effects, &r.agent, id, detail, turn, clock.now()) {
                            report.dead += 1;
                            ev.emit(clock, EventKind::from(&why));
                        }
                        attempts.remove(id);
                    }
                }
                report.failed.push((r.agent.clone(), error));
            }
        }
        if attempts != before {
            mb.set_attempts(&mut effects, &r.agent, &attempts);
        }
        let sent = r.messages.iter().map(|m| m.id.clone()).collect();
        let mut logged = activity_of(r, sent, clock.now());
        // The interrupted run may have logged this reply already: `logs` shows it once.
        logged.replay = replayed.contains(&r.agent);
        if let Err(e) = activity::append(&root, &r.agent, &logged) {
            if trouble::org_wide(&e) {
                return Err(e);
            }
            // The run counts; only its log line is lost. The agent shows the error.
            tracing::error!(agent = %r.agent, error = %e, "cannot append to the agent's activity log");
            sick.insert(r.agent.clone(), e);
        }
        let run = Run { model: r.model.clone(), cost: r.cost, mail: r.mail.len(), sent: r.messages.len() };
        let agent = r.agent.clone();
        ev.emit(
            clock,
            match r.outcome {
                Outcome::Ok => EventKind::Ran { agent, run, error: None, cause: None },
                Outcome::Failed => EventKind::Failed {
                    agent,
                    run: Some(run),
                    error: r.error.clone(),
                    cause: r.cause.map(FailCause::from),
                },
            },
        );
    }
    ledger.append(&charges)?;
    effects.commit(&root)?;
    fault::point("effects");
    let mut consumed = Batch::new();
    for r in records.iter().filter(|r| r.outcome == Outcome::Ok) {
        for id in &r.mail {
            mb.consume(&mut consumed, &r.agent, id);
        }
    }
    consumed.commit(&root)?;
    fault::point("consumed");
    report.replayed = replayed;

    route(org, Post::local(&mb), turn, clock, &mut report, &mut ev, &mut sick)?;
    fault::point("routed_again");

    let trouble_now = agent_trouble(org, turn, &trouble_before, &records, &sick);
    for (agent, e) in &sick {
        if org.agents.contains_key(agent.as_str()) && !report.failed.iter().any(|(a, _)| a == agent) {
            report.failed.push((agent.clone(), format!("cannot use its files: {e}")));
            let error = Some(e.to_string());
            ev.emit(
                clock,
                EventKind::Failed { agent: agent.clone(), run: None, error, cause: Some(FailCause::IoError) },
            );
        }
    }
    trouble::write_agents(&org.layout, &trouble_before, &trouble_now)?;

    ev.emit(clock, EventKind::Turn(report.clone()));
    ev.flush(&org.layout)?;
    journal.commit(turn, clock.now())?;
    held.calls = 0;
    journal.prune(turn, org.settings.journal_keep_turns);
    tracing::info!(
        turn,
        ran = report.ran.len(),
        failed = report.failed.len(),
        dead = report.dead,
        cost = report.cost,
        "turn committed"
    );
    Ok(report)
}

/// The agents in trouble after this turn: those whose files could not be used,
/// and those whose provider was down or refused; an agent that ran, or whose
/// files are usable again, leaves the list.
fn agent_trouble(
    org: &Org,
    turn: u64,
    before: &BTreeMap<String, trouble::AgentTrouble>,
    records: &[Record],
    sick: &BTreeMap<String, PathError>,
) -> BTreeMap<String, trouble::AgentTrouble> {
    let folders = agent_folders(&org.layout);
    // An io_error lasts only while the agent's files stay unusable.
    let mut now: BTreeMap<String, trouble::AgentTrouble> = before
        .iter()
        .filter(|(a, t)| folders.contains(a) && (t.state != trouble::TroubleState::IoError || sick.contains_key(*a)))
        .map(|(a, t)| (a.clone(), t.clone()))
        .collect();
    for r in records {
        let state = match r.cause {
            Some(lemming_provider::Cause::Unavailable) if r.outcome == Outcome::Failed => {
                trouble::TroubleState::ProviderDown
            }
            Some(lemming_provider::Cause::Refused) if r.outcome == Outcome::Failed => {
                trouble::TroubleState::ProviderError
            }
            // Its files failed after it ran: noted below.
            _ if sick.contains_key(&r.agent) => continue,
            _ => {
                now.remove(&r.agent);
                continue;
            }
        };
        trouble::note(&mut now, &r.agent, state, turn, r.error.clone().unwrap_or_default(), None);
    }
    for (agent, e) in sick {
        trouble::note(&mut now, agent, trouble::TroubleState::IoError, turn, e.to_string(), Some(e.path.clone()));
    }
    now
}

/// The prompt `resume`'s agent gets on `turn` with this unread mail, which is
/// put in prompt order and cut to `max_mail_per_prompt` first: who it may
/// write to, and the system and user parts. `status` builds the same prompt to
/// tell whether the agent can pay for it.
pub fn prompt_for(
    org: &Org,
    chart: &crate::chart::Chart<'_>,
    resume: &crate::resume::Resume,
    turn: u64,
    mail: &mut Vec<Message>,
) -> (Vec<String>, String, String) {
    let agent = resume.name.as_str();
    prompt::order(mail);
    mail.truncate(org.settings.max_mail_per_prompt);
    let may = chart.reachable(agent);
    let summary = memory::summary(&memory::dir(&org.layout.root, agent));
    // The contract is worded for how the agent's model answers (a schema offers less).
    let structured =
        resume.model.as_deref().and_then(|k| org.models.models.get(k)).map(|m| m.structured).unwrap_or_default();
    let (system, user) = prompt::build(resume, turn, &may, &summary, mail, structured);
    (may, system, user)
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

/// Resolves when a stop is requested (never, without a stop signal).
async fn stopped(stop: &mut Option<Stop>) {
    match stop {
        Some(rx) => {
            if rx.wait_for(|s| *s).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
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

/// Turns a provider result into a journal record: messages with deterministic
/// ids, the memory plan, and the charge.
fn record(
    org: &Org,
    job: &Job,
    result: Result<lemming_provider::Reply, lemming_provider::ProviderError>,
    turn: u64,
    started: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Record {
    let mut r = Record {
        turn,
        agent: job.agent.clone(),
        model: job.req.model.key.clone(),
        outcome: Outcome::Failed,
        reply: None,
        error: None,
        usage: None,
        cost: 0.0,
        mail: job.mail.iter().map(|m| m.id.clone()).collect(),
        messages: vec![],
        memory: BTreeMap::new(),
        notes: String::new(),
        warnings: vec![],
        pid: std::process::id(),
        cause: None,
    };
    let reply = match result {
        Ok(reply) => reply,
        Err(e) => {
            tracing::warn!(agent = %job.agent, error = %e, "provider call failed; mail stays unread");
            r.error = Some(e.to_string());
            r.cause = Some(e.cause());
            return r;
        }
    };
    let answered = org.models.models.get(&reply.model_key);
    let price = answered.map(|m| m.price).unwrap_or_default();
    r.model = reply.model_key.clone();
    r.cost = crate::ledger::bounded_cost(price.cost(&reply.usage));
    r.usage = Some(reply.usage);
    // Cut off by the token limit: usable only if its JSON object closed before the cut.
    let cut = reply.truncated().then(|| {
        format!(
            "the model was cut off at its token limit (stop reason `{}`, max_tokens {} of model `{}`)",
            reply.finish.as_deref().unwrap_or_default(),
            answered.and_then(|m| m.max_tokens).map_or_else(|| "not set".to_string(), |n| n.to_string()),
            reply.model_key,
        )
    });
    let parsed = match reply::parse(&reply.text) {
        Ok(p) => p,
        Err(e) => {
            let why = match &cut {
                Some(cut) => format!(
                    "{e}: {cut}; raise max_tokens, or lower reply_max_chars and reply_max_messages, so that a whole reply fits"
                ),
                None => e.to_string(),
            };
            tracing::warn!(agent = %job.agent, "unusable reply: {why}; mail stays unread");
            r.error = Some(format!("{why}; the raw reply is in the agent's activity log"));
            r.cause = Some(lemming_provider::Cause::Reply);
            r.reply = Some(reply.text);
            return r;
        }
    };
    r.reply = Some(reply.text);
    let cut = cut.map(|cut| format!("{cut} after its JSON object closed; the text after it was dropped"));
    let threads: HashMap<&str, &str> = job.mail.iter().map(|m| (m.id.as_str(), m.thread.as_str())).collect();
    for (pos, om) in parsed.messages.into_iter().enumerate() {
        let id = message::reply_id(started, turn, &job.agent, pos);
        let thread = om
            .thread
            .filter(|t| message::valid_id(t))
            .or_else(|| om.reply_to.as_deref().and_then(|rt| threads.get(rt)).map(|t| t.to_string()))
            .unwrap_or_else(|| id.clone());
        r.messages.push(Message {
            id,
            from: job.agent.clone(),
            to: To(om.to),
            subject: om.subject,
            body: om.body,
            priority: om.priority,
            reply_to: om.reply_to,
            thread,
            created_at: now,
            turn,
            ttl_turns: None,
            kind: Kind::Message,
        });
    }
    let (plan, errors) = memory::plan(&memory::dir(&org.layout.root, &job.agent), &parsed.memory);
    for e in &errors {
        tracing::warn!(agent = %job.agent, "{e}");
    }
    r.memory = plan;
    r.notes = parsed.notes;
    r.warnings = cut.into_iter().chain(parsed.warnings).chain(errors).collect();
    r.outcome = Outcome::Ok;
    r
}

fn activity_of(r: &Record, sent: Vec<String>, at: DateTime<Utc>) -> Activity {
    Activity {
        turn: r.turn,
        at,
        outcome: r.outcome,
        model: r.model.clone(),
        mail_read: r.mail.clone(),
        sent,
        cost: r.cost,
        notes: r.notes.clone(),
        error: r.error.clone(),
        warnings: r.warnings.clone(),
        raw: if r.outcome == Outcome::Failed { r.reply.clone() } else { None },
        replay: false,
    }
}

/// Records a due agent that is not called, in the report and the events.
fn skip(
    report: &mut TurnReport,
    ev: &mut Events,
    clock: &dyn Clock,
    agent: &str,
    reason: SkipReason,
    over: Option<Over>,
) {
    report.skipped.push((agent.to_string(), reason));
    ev.emit(clock, EventKind::Skipped { agent: agent.to_string(), reason, over });
}
