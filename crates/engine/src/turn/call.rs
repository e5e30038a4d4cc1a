//! Call: the models of the agents the pick hands out, concurrently up to
//! `max_parallel`, each answer turned into a journal record; then journal:
//! the records are appended to the turn's journal before any of their effects.
//!
//! An agent's prompt is built when a slot frees for it ([`Turn::next_job`]),
//! and dropped when its model answers: a turn holds at most `max_parallel`
//! prompts at once, whatever the size of the org.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use lemming_provider::{Chunk, Registry, StreamSink};

use super::pick::{Due, Job};
use super::{Replies, Stop, Turn, Unjournaled};
use crate::error::PathError;
use crate::events::{Bus, Event, EventKind};
use crate::fsx::Batch;
use crate::journal::{Outcome, PlannedCall, Record};
use crate::memory;
use crate::message::{self, Kind, Message, To};
use crate::org::Org;
use crate::reply;

/// What the call phase hands to the journal: a part of the turn's answers.
pub(super) struct Called {
    /// A record per answer (or failure), by agent.
    pub(super) fresh: Vec<Record>,
    /// The dead letters of bad unread entries the pick found, committed
    /// before anything is journaled.
    pub(super) housekeeping: Batch,
    /// What stopped the pick early (an org-wide error, or a state folder that
    /// takes no writes): the turn fails with it once the calls in flight
    /// have answered, and their replies are held like unjournaled ones.
    pub(super) failed: Option<PathError>,
}

/// The calls of a turn, across the parts it applies them in: those in
/// flight, whether more agents are to be picked, and what stopped the pick.
pub(super) struct Calls {
    set: FuturesUnordered<CallFuture>,
    picking: bool,
    stop: Option<Stop>,
    failed: Option<PathError>,
}

impl Calls {
    /// No call yet; `stop` abandons those in flight and picks no more.
    pub(super) fn new(stop: Option<Stop>) -> Calls {
        Calls { set: FuturesUnordered::new(), picking: true, stop, failed: None }
    }

    /// Every call has answered and no agent is left to pick.
    pub(super) fn done(&self) -> bool {
        !self.picking && self.set.is_empty()
    }

    /// No more agents are picked; the calls in flight still answer.
    pub(super) fn stop_picking(&mut self) {
        self.picking = false;
    }

    /// What stopped the pick, once every call has answered.
    pub(super) fn failed(&mut self) -> Option<PathError> {
        if self.done() {
            self.failed.take()
        } else {
            None
        }
    }
}

impl Turn<'_> {
    /// Calls the models of the agents `due` hands out, at most `max_parallel`
    /// at once: the next agent is picked (and its prompt built) only when a
    /// call answers, until none is left or `stop` turns `true` (calls in
    /// flight are then abandoned and their mail stays unread; the agents not
    /// picked yet wait for the next turn). Returns once `up_to` calls have
    /// answered, or all have: the calls in flight are left in `calls` (their
    /// connections are driven by tasks of their own; their answers are taken
    /// when this is called again), and the next call takes up where this one
    /// left. A model that streams its reply hands it out on the turn's bus as
    /// `reply_delta` events.
    pub(super) async fn call(
        &mut self,
        registry: &Arc<Registry>,
        due: &mut Due<'_>,
        calls: &mut Calls,
        up_to: usize,
    ) -> Vec<Record> {
        let (org, turn, started) = (self.org, self.turn, self.started);
        let bus = self.ev.bus().cloned();
        let slots = org.settings.max_parallel.max(1);
        let mut fresh = Vec::new();
        while fresh.len() < up_to {
            while calls.picking && calls.set.len() < slots {
                if calls.stop.as_ref().is_some_and(|rx| *rx.borrow()) {
                    calls.picking = false;
                    break;
                }
                match self.next_job(due) {
                    Ok(Some(job)) => start(&mut calls.set, registry, job, bus.as_ref(), turn),
                    Ok(None) => calls.picking = false,
                    Err(e) => {
                        calls.failed = Some(e);
                        calls.picking = false;
                    }
                }
            }
            if calls.set.is_empty() {
                break;
            }
            let joined = tokio::select! {
                joined = calls.set.next() => joined,
                _ = stopped(&mut calls.stop) => {
                    tracing::warn!(turn, unanswered = calls.set.len(), "stopping: agents still waiting for their model keep their mail unread");
                    calls.picking = false;
                    None
                }
            };
            let Some(joined) = joined else {
                // Calls abandoned on a stop are dropped, with their jobs.
                calls.set = FuturesUnordered::new();
                break;
            };
            let (job, result, pending) = match joined {
                Ok(r) => r,
                Err(_) => {
                    tracing::error!("an agent's model call panicked; its mail stays unread");
                    continue;
                }
            };
            let r = record(org, &job, result, turn, started, self.clock.now());
            // A reply that is not used was never delivered: whoever showed it forgets it.
            pending.finish(r.outcome == Outcome::Ok);
            fresh.push(r);
        }
        fresh.sort_by(|a, b| a.agent.cmp(&b.agent));
        fresh
    }
}

/// Starts `job`'s call in `set`.
fn start(set: &mut FuturesUnordered<CallFuture>, registry: &Arc<Registry>, mut job: Job, bus: Option<&Bus>, turn: u64) {
    let deltas = bus.map(|bus| Deltas::new(bus.clone(), turn, &job.agent));
    if let Some(d) = &deltas {
        job.req.stream = Some(d.sink());
    }
    let registry = Arc::clone(registry);
    set.push(Box::pin(
        std::panic::AssertUnwindSafe(async move {
            // Dropped unfinished (the call aborted, or its answer never
            // taken): what was shown of the reply is withdrawn.
            let pending = Pending(deltas);
            let result = registry.complete(&job.req).await;
            (job, result, pending)
        })
        .catch_unwind(),
    ));
}

/// A finished call: its job, what the model said, and its streamed text.
type CallDone = (Job, Result<lemming_provider::Reply, lemming_provider::ProviderError>, Pending);

/// A call in flight. The turn polls its calls itself, on its own task, rather
/// than spawning one per agent: a model that answers at once (a local or
/// mock one) costs no hand-off between threads, and a panicking call is
/// caught as a spawned task's would be.
type CallFuture = std::pin::Pin<Box<dyn std::future::Future<Output = std::thread::Result<CallDone>> + Send>>;

impl Turn<'_> {
    /// Commits the pick's housekeeping, then journals the fresh records and
    /// those `held` in memory by an earlier try (`carried`), and returns them
    /// with the ones journaled before (`journaled`, replayed). When the pick
    /// failed, or the housekeeping or the journal cannot be written, every
    /// new record is left in `held` for the next try of the turn.
    pub(super) fn journal(
        &mut self,
        journaled: BTreeMap<String, Record>,
        carried: Vec<Record>,
        called: Called,
        held: &mut Unjournaled,
    ) -> Result<Replies, PathError> {
        let turn = self.turn;
        let Called { fresh, housekeeping, failed } = called;
        let paid = paid(&fresh);
        let recovered: Vec<String> = carried.iter().map(|r| r.agent.clone()).collect();
        let new_records: Vec<Record> = carried.into_iter().chain(fresh).collect();
        let written = match failed {
            Some(e) => Err(e),
            None => housekeeping.commit(&self.org.layout.root).and_then(|()| self.journal.append(turn, &new_records)),
        };
        if let Err(e) = written {
            held.keep(turn, new_records, paid, &e);
            return Err(e);
        }
        for agent in &recovered {
            let why = "the reply was kept in memory while it could not be journaled".to_string();
            self.ev.emit(self.clock.now(), EventKind::Recovered { agent: agent.clone(), why });
        }
        self.report.recovered.extend(recovered);
        let replayed: Vec<String> = journaled.keys().cloned().collect();
        self.report.replayed.extend(replayed.iter().cloned());
        // The journal holds each reply's text; the turn applies only what
        // was planned from it, and logs the text of the unusable ones.
        let records = journaled.into_values().chain(new_records).map(|mut r| {
            if r.outcome == Outcome::Ok {
                r.reply = None;
            }
            r
        });
        Ok(Replies { records: records.collect(), replayed })
    }
}

/// How many of `records` are answers a model gave (and charged for).
pub(super) fn paid(records: &[Record]) -> u64 {
    records.iter().filter(|r| r.usage.is_some()).count() as u64
}

/// The pieces of `agent`'s streaming reply, published as `reply_delta`
/// events on `bus` (seq 0: never appended; the journal holds the whole
/// reply). Pieces are gathered until [`FLUSH_BYTES`] or [`FLUSH_AFTER`] since
/// the last publication, so that a model writing a token at a time does not
/// become an event (and an SSE frame to every client) per token. Stamped by
/// the system clock: a piece of text must not move a test's manual clock, and
/// nothing is derived from these stamps.
struct Deltas {
    bus: Bus,
    turn: u64,
    agent: String,
    state: std::sync::Mutex<Gathered>,
}

struct Gathered {
    text: String,
    last: std::time::Instant,
    /// Some text was published since the last restart.
    out: bool,
}

/// Gathered text is published once it is this long…
const FLUSH_BYTES: usize = 256;
/// …or this long after the last publication.
const FLUSH_AFTER: std::time::Duration = std::time::Duration::from_millis(50);

impl Deltas {
    fn new(bus: Bus, turn: u64, agent: &str) -> Arc<Deltas> {
        let state = Gathered { text: String::new(), last: std::time::Instant::now(), out: false };
        Arc::new(Deltas { bus, turn, agent: agent.to_string(), state: std::sync::Mutex::new(state) })
    }

    fn sink(self: &Arc<Deltas>) -> StreamSink {
        let d = Arc::clone(self);
        StreamSink::new(move |chunk| match chunk {
            Chunk::Text(text) => d.text(&text),
            Chunk::Restart => d.restart(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Gathered> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn text(&self, text: &str) {
        let mut g = self.lock();
        g.text.push_str(text);
        if g.text.len() >= FLUSH_BYTES || g.last.elapsed() >= FLUSH_AFTER {
            self.flush_locked(&mut g);
        }
    }

    /// Publishes what is gathered.
    fn flush(&self) {
        self.flush_locked(&mut self.lock());
    }

    fn flush_locked(&self, g: &mut Gathered) {
        g.last = std::time::Instant::now();
        if g.text.is_empty() {
            return;
        }
        let text = std::mem::take(&mut g.text);
        g.out = true;
        self.publish(text, false);
    }

    /// The text so far is not the reply: gathered text is dropped, and a
    /// restart published if some was shown.
    fn restart(&self) {
        let mut g = self.lock();
        g.text.clear();
        if std::mem::replace(&mut g.out, false) {
            self.publish(String::new(), true);
        }
    }

    fn publish(&self, text: String, restart: bool) {
        let kind = EventKind::ReplyDelta { agent: self.agent.clone(), text, restart };
        self.bus.publish(&Event { seq: 0, turn: self.turn, at: Utc::now(), kind });
    }
}

/// A call's streamed reply until its record is made: dropped before
/// [`Pending::finish`], it withdraws what was shown.
struct Pending(Option<Arc<Deltas>>);

impl Pending {
    /// The call's record is made: the rest of its text is published when the
    /// reply is used, else what was shown of it is withdrawn.
    fn finish(mut self, used: bool) {
        if let Some(d) = self.0.take() {
            if used {
                d.flush();
            } else {
                d.restart();
            }
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            d.restart();
        }
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
        pid: lemming_fs::pid(),
        cause: None,
        tool_calls: vec![],
        thread: job.mail.first().map(|m| m.thread.clone()),
        started: Some(started),
        at: Some(now),
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
    let parsed = parse_reply(&reply.text, !reply.tool_calls.is_empty());
    let parsed = match parsed {
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
    r.reply = Some(reply.text.clone());
    let cut = cut.map(|cut| format!("{cut} after its JSON object closed; the text after it was dropped"));
    let threads: HashMap<&str, &str> = job.mail.iter().map(|m| (m.id.as_str(), m.thread.as_str())).collect();
    let native = reply.tool_calls.into_iter().map(|c| reply::ToolCall { id: Some(c.id), tool: c.name, args: c.args });
    let dir = memory::dir(&org.layout.root, &job.agent);
    let at = Stamps { turn, started, now };
    let planned = plan_reply(org, &job.agent, &threads, parsed, native.collect(), at, |key| memory::get(&dir, key));
    r.messages = planned.messages;
    r.tool_calls = planned.tool_calls;
    r.memory = planned.memory;
    r.notes = planned.notes;
    for e in &planned.memory_errors {
        tracing::warn!(agent = %job.agent, "{e}");
    }
    r.warnings = cut.into_iter().chain(planned.warnings).chain(planned.memory_errors).collect();
    r.outcome = Outcome::Ok;
    r
}

/// The reply object of a model's text: [`reply::parse`], except that a reply
/// of native tool calls needs no object in its text (the text is its notes).
pub(crate) fn parse_reply(text: &str, native_calls: bool) -> Result<reply::Parsed, reply::Unusable> {
    match reply::parse(text) {
        Ok(p) => Ok(p),
        Err(_) if native_calls => {
            Ok(reply::Parsed { notes: text.chars().take(2000).collect(), ..reply::Parsed::default() })
        }
        Err(e) => Err(e),
    }
}

/// When a reply's effects are planned: the turn, its start (the stamp of
/// the ids) and the moment the reply was taken (its messages' `created_at`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stamps {
    pub(crate) turn: u64,
    pub(crate) started: DateTime<Utc>,
    pub(crate) now: DateTime<Utc>,
}

/// The effects planned from a parsed reply, as the journal records them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Planned {
    pub(crate) messages: Vec<Message>,
    pub(crate) tool_calls: Vec<PlannedCall>,
    pub(crate) memory: memory::Plan,
    pub(crate) notes: String,
    /// Skipped parts of the reply.
    pub(crate) warnings: Vec<String>,
    /// Its memory operations that failed, and why.
    pub(crate) memory_errors: Vec<String>,
}

/// Plans the effects of `agent`'s parsed reply: its messages with their ids
/// and threads (`threads`: the thread of each message it read), its tool
/// calls (those of the text, then the `native` ones, at most `max_calls`)
/// with the ids of their results, and its memory after its operations on
/// the memory `current` gives. Pure: the turn plans through here, and
/// `lemming replay` plans again through here from the journal.
pub(crate) fn plan_reply(
    org: &Org,
    agent: &str,
    threads: &HashMap<&str, &str>,
    mut parsed: reply::Parsed,
    native: Vec<reply::ToolCall>,
    at: Stamps,
    current: impl Fn(&str) -> Option<serde_json::Value>,
) -> Planned {
    let Stamps { turn, started, now } = at;
    let mut messages = Vec::new();
    for (pos, om) in std::mem::take(&mut parsed.messages).into_iter().enumerate() {
        let id = message::reply_id(started, turn, agent, pos);
        let thread = om
            .thread
            .filter(|t| message::valid_id(t))
            .or_else(|| om.reply_to.as_deref().and_then(|rt| threads.get(rt)).map(|t| t.to_string()))
            .unwrap_or_else(|| id.clone());
        messages.push(Message {
            id,
            from: agent.to_string(),
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
            ack_required: false,
        });
    }
    let max_calls = org.settings.tools.max_calls;
    let asked = parsed.tool_calls.len() + native.len();
    if asked > max_calls {
        parsed.warnings.push(format!(
            "{} of its {asked} tool calls were not run: a reply runs at most {max_calls} ([tools] max_calls in org/org.toml)",
            asked - max_calls
        ));
    }
    let tool_calls = plan_calls(std::mem::take(&mut parsed.tool_calls).into_iter().chain(native).take(max_calls))
        .into_iter()
        .enumerate()
        .map(|(pos, call)| PlannedCall { call, result: message::tool_result_id(started, turn, agent, pos) })
        .collect();
    let (plan, memory_errors) = memory::plan_on(current, &parsed.memory);
    Planned { messages, tool_calls, memory: plan, notes: parsed.notes, warnings: parsed.warnings, memory_errors }
}

/// The longest call id kept as the model gave it.
const MAX_CALL_ID: usize = 64;

/// The longest tool name kept (longer is no tool's: its result says so).
const MAX_TOOL_NAME: usize = 64;

/// Gives every call its id: the model's when it is a valid id of at most
/// [`MAX_CALL_ID`] bytes and not used by an earlier call of the reply, else
/// `c<N>` (N its position, made unique), so that each result answers exactly one call.
fn plan_calls(calls: impl Iterator<Item = reply::ToolCall>) -> Vec<crate::tools::Call> {
    let mut out: Vec<crate::tools::Call> = Vec::new();
    let mut taken: std::collections::HashSet<String> = std::collections::HashSet::new();
    for (pos, c) in calls.enumerate() {
        let given = c.id.filter(|id| id.len() <= MAX_CALL_ID && message::valid_id(id) && !taken.contains(id));
        let id = given
            .unwrap_or_else(|| (pos..).map(|n| format!("c{n}")).find(|id| !taken.contains(id)).unwrap_or_default());
        taken.insert(id.clone());
        let tool = c.tool.chars().take(MAX_TOOL_NAME).collect();
        out.push(crate::tools::Call { id, tool, args: c.args });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(id: Option<&str>) -> reply::ToolCall {
        reply::ToolCall { id: id.map(String::from), tool: "recall".into(), args: serde_json::json!({}) }
    }

    /// The `reply_delta` events queued on `rx`: (text, restart).
    fn deltas(rx: &mut tokio::sync::broadcast::Receiver<Event>) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        while let Ok(e) = rx.try_recv() {
            if let EventKind::ReplyDelta { text, restart, .. } = e.kind {
                out.push((text, restart));
            }
        }
        out
    }

    #[test]
    fn pieces_are_gathered_into_few_events_and_the_rest_published_when_the_reply_is_used() {
        let bus = Bus::new();
        let mut rx = bus.subscribe();
        let d = Deltas::new(bus, 3, "manager");
        let sink = d.sink();
        let tokens: Vec<String> = (0..200).map(|i| format!("t{i:03} ")).collect();
        for t in &tokens {
            sink.send(Chunk::Text(t.clone()));
        }
        let before = deltas(&mut rx);
        assert!(before.len() < 10, "one event per token: {}", before.len());
        assert!(before.iter().all(|(t, r)| t.len() >= FLUSH_BYTES && !r), "{before:?}");
        Pending(Some(d)).finish(true);
        let after = deltas(&mut rx);
        assert_eq!(after.len(), 1, "the rest, once: {after:?}");
        let all: String = before.iter().chain(&after).map(|(t, _)| t.as_str()).collect();
        assert_eq!(all, tokens.concat(), "every byte, in order");
    }

    #[test]
    fn a_slow_piece_is_published_at_once() {
        let bus = Bus::new();
        let mut rx = bus.subscribe();
        let d = Deltas::new(bus, 1, "manager");
        std::thread::sleep(FLUSH_AFTER);
        d.sink().send(Chunk::Text("{\"mes".into()));
        assert_eq!(deltas(&mut rx), [("{\"mes".to_string(), false)]);
    }

    #[test]
    fn a_reply_not_used_or_a_call_dropped_withdraws_what_was_shown() {
        let bus = Bus::new();
        let mut rx = bus.subscribe();
        // Unusable (or failed) after text went out: a restart.
        let d = Deltas::new(bus.clone(), 1, "manager");
        d.sink().send(Chunk::Text("x".repeat(FLUSH_BYTES)));
        d.sink().send(Chunk::Text("gathered".into()));
        Pending(Some(d)).finish(false);
        assert_eq!(deltas(&mut rx), [("x".repeat(FLUSH_BYTES), false), (String::new(), true)]);
        // Dropped unfinished (an aborted call): a restart too.
        let d = Deltas::new(bus.clone(), 1, "manager");
        d.sink().send(Chunk::Text("y".repeat(FLUSH_BYTES)));
        drop(Pending(Some(d)));
        assert_eq!(deltas(&mut rx), [("y".repeat(FLUSH_BYTES), false), (String::new(), true)]);
        // Nothing shown: nothing to withdraw; a provider's own restart is not repeated.
        let d = Deltas::new(bus.clone(), 1, "manager");
        d.sink().send(Chunk::Text("z".into()));
        drop(Pending(Some(Arc::clone(&d))));
        d.sink().send(Chunk::Text("w".repeat(FLUSH_BYTES)));
        d.sink().send(Chunk::Restart);
        Pending(Some(d)).finish(false);
        assert_eq!(deltas(&mut rx), [("w".repeat(FLUSH_BYTES), false), (String::new(), true)]);
    }

    #[tokio::test]
    async fn an_aborted_streaming_call_withdraws_its_text() {
        let bus = Bus::new();
        let mut rx = bus.subscribe();
        let d = Deltas::new(bus, 2, "manager");
        let sink = d.sink();
        let task = tokio::spawn(async move {
            let _pending = Pending(Some(d));
            sink.send(Chunk::Text("a".repeat(FLUSH_BYTES)));
            std::future::pending::<()>().await;
        });
        while deltas(&mut rx).is_empty() {
            tokio::task::yield_now().await;
        }
        task.abort();
        let _ = task.await;
        assert_eq!(deltas(&mut rx), [(String::new(), true)]);
    }

    #[test]
    fn every_call_gets_a_valid_id_of_its_own() {
        let long = "x".repeat(MAX_CALL_ID + 1);
        let calls = [Some("call_1"), Some("call_1"), None, Some("../x"), Some(long.as_str()), Some("c3"), Some("9a")];
        let ids: Vec<String> = plan_calls(calls.into_iter().map(call)).into_iter().map(|c| c.id).collect();
        assert_eq!(ids, ["call_1", "c1", "c2", "c3", "c4", "c5", "9a"]);
    }
}
