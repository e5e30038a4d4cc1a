//! Apply: the effects of every journaled reply, fresh or replayed: its
//! messages into the outbox, its memory, its charge in the ledger, and, for a
//! failed run, an attempt on each message it read (poison after
//! `max_attempts`); a line in the agent's activity log and an event. And
//! consume: the mail a used reply read moves to `cur/`, once its receipts
//! are delivered.

use std::path::Path;
use std::sync::mpsc::{Receiver, Sender};

use chrono::{DateTime, Utc};

use super::act::Results;
use super::{Replies, Turn};
use crate::activity::{self, Activity};
use crate::error::PathError;
use crate::events::{EventKind, FailCause, Run, ToolUse};
use crate::fsx::{Batch, Moves};
use crate::journal::{Outcome, Record};
use crate::ledger::{Entry, Ledger};
use crate::mailbox::{Attempts, FsMailStore, MailStore};
use crate::memory;
use crate::message::{Kind, Message, Priority, To};
use crate::trouble;

impl Turn<'_> {
    /// Applies the replies' effects in one group commit, after their charges
    /// are in the ledger (a replayed reply's charge is already there: the
    /// ledger keeps one per (turn, agent), and the report counts it once).
    /// `ledger` holds the totals from the turn's start; each run's line for
    /// its agent's activity log goes to `logs`.
    pub(super) fn apply(
        &mut self,
        ledger: &Ledger,
        replies: &Replies,
        tools: &Results,
        logs: &Logs,
    ) -> Result<(), PathError> {
        let (org, turn, clock) = (self.org, self.turn, self.clock);
        let root = &org.layout.root;
        let mut effects = Batch::new();
        let mut charges = Vec::new();
        for r in &replies.records {
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
                    self.report.cost += r.cost;
                    self.ev.emit(
                        clock.now(),
                        EventKind::Charged {
                            agent: r.agent.clone(),
                            model: r.model.clone(),
                            cost: r.cost,
                            input_tokens: usage.input_tokens,
                            output_tokens: usage.output_tokens,
                        },
                    );
                }
            }
            let mut attempts = self.mb.attempts(&r.agent);
            let before = attempts.clone();
            // Only a reply journaled by an earlier try may have its messages written already.
            let replayed = replies.replayed.contains(&r.agent);
            match r.outcome {
                Outcome::Ok => {
                    for m in &r.messages {
                        if replayed {
                            self.mb.post(&mut effects, &r.agent, m);
                        } else {
                            self.mb.post_new(&mut effects, &r.agent, m);
                        }
                    }
                    memory::apply(&mut effects, &memory::dir(root, &r.agent), &org.layout.state_tmp(), &r.memory)?;
                    attempts.retain(|id, _| !r.mail.contains(id));
                    self.report.ran.push(r.agent.clone());
                }
                Outcome::Failed => {
                    self.count_attempts(&mut effects, r, &mut attempts);
                    self.report.failed.push((r.agent.clone(), r.error.clone().unwrap_or_default()));
                }
            }
            if attempts != before {
                self.mb.set_attempts(&mut effects, &r.agent, &attempts);
            }
            let used = self.deliver_results(&mut effects, r, tools);
            let sent = r.messages.iter().map(|m| m.id.clone()).collect();
            let mut logged = activity_of(r, sent, clock.now());
            logged.tools = used;
            // The interrupted run may have logged this reply already: `logs` shows it once.
            logged.replay = replayed;
            if let Err(e) = logs.log(&r.agent, activity::to_line(&logged)) {
                self.not_logged(r.agent.clone(), e)?;
            }
            let run = Run { model: r.model.clone(), cost: r.cost, mail: r.mail.len(), sent: r.messages.len() };
            let agent = r.agent.clone();
            self.ev.emit(
                clock.now(),
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
        ledger.write(&charges)?;
        // Made durable with the consume's moves: see `consume`.
        effects.commit_leaving(root, &mut self.unsynced)
    }

    /// A run whose line could not be appended to its agent's activity log
    /// still counts; only its log line is lost, and the agent shows the
    /// error. A full or read-only disk fails the turn.
    pub(super) fn not_logged(&mut self, agent: String, e: PathError) -> Result<(), PathError> {
        if trouble::org_wide(&e) {
            return Err(e);
        }
        tracing::error!(agent = %agent, error = %e, "cannot append to the agent's activity log");
        self.sick.insert(agent, e);
        Ok(())
    }

    /// Puts the result of each of the reply's tool calls in the agent's inbox
    /// as a `tool_result` message (once: delivery is by the id planned with
    /// the reply), and returns them for the activity log.
    fn deliver_results(&mut self, effects: &mut Batch, r: &Record, tools: &Results) -> Vec<ToolUse> {
        let mut used = Vec::new();
        for pc in &r.tool_calls {
            let Some(done) = tools.get(&(r.agent.clone(), pc.call.id.clone())) else { continue };
            let now = self.clock.now();
            let msg = Message {
                id: pc.result.clone(),
                from: crate::name::ENGINE.into(),
                to: To(vec![r.agent.clone()]),
                subject: None,
                body: done.outcome.body(),
                priority: Priority::Normal,
                reply_to: Some(pc.call.id.clone()),
                thread: r.thread.clone().unwrap_or_else(|| pc.result.clone()),
                created_at: now,
                turn: self.turn,
                ttl_turns: None,
                kind: Kind::ToolResult,
                ack_required: false,
            };
            if self.mb.deliver(effects, &r.agent, &msg) {
                let from = msg.from.clone();
                self.ev.emit(now, EventKind::Delivered { id: msg.id.clone(), from, to: r.agent.clone() });
            }
            let o = &done.outcome;
            let call = ToolUse {
                call: pc.call.id.clone(),
                tool: pc.call.tool.clone(),
                ok: o.ok,
                error: o.error.clone(),
                ms: done.ms,
                result: pc.result.clone(),
            };
            self.ev.emit(now, EventKind::Tool { agent: r.agent.clone(), call: call.clone() });
            self.report.tool_calls += 1;
            used.push(call);
        }
        used
    }

    /// A failed run counts as an attempt on each unread message it read,
    /// once per turn, unless the failure was the provider's (down, or
    /// refusing the request), which says nothing about the mail. A message
    /// that reaches `max_attempts` goes to dead as poison.
    fn count_attempts(&mut self, effects: &mut Batch, r: &Record, attempts: &mut Attempts) {
        let (turn, clock) = (self.turn, self.clock);
        let error = r.error.clone().unwrap_or_default();
        if !r.cause.is_none_or(|c| c.counts_against_mail()) {
            return;
        }
        for id in &r.mail {
            if !self.mb.is_unread(&r.agent, id) {
                continue;
            }
            let a = attempts.entry(id.clone()).or_default();
            if a.last_turn != turn {
                a.count += 1;
                a.last_turn = turn;
                a.last_error = error.clone();
            }
            if a.count >= self.org.settings.max_attempts {
                let detail = format!("{} failed {} times on this message; last error: {error}", r.agent, a.count);
                if let Some(why) = self.mb.poison(effects, &r.agent, id, detail, turn, clock.now()) {
                    self.report.dead += 1;
                    self.ev.emit(clock.now(), EventKind::from(&why));
                }
                attempts.remove(id);
            }
        }
    }

    /// Delivers the receipts of the messages that used replies read and that
    /// asked for one, in one group commit made durable at once: a receipt is
    /// durable before its mail moves to `cur/` ([`move_read`]), so it is
    /// never lost to a crash, and a repeated turn delivers it once (by its id).
    pub(super) fn deliver_receipts(&mut self, records: &[Record]) -> Result<(), PathError> {
        let mut receipts = Batch::new();
        for r in records.iter().filter(|r| r.outcome == Outcome::Ok) {
            for m in self.asked_receipts(r) {
                let Some(receipt) = crate::message::receipt(&m, &r.agent, self.turn, self.clock.now()) else {
                    continue;
                };
                let sender = receipt.to.0[0].clone();
                // The sender may have left the org since: no inbox to write to.
                let known = self.org.agents.contains_key(sender.as_str()) || self.org.broken.contains_key(&sender);
                if known && self.mb.is_local(&sender) && self.mb.deliver(&mut receipts, &sender, &receipt) {
                    let kind = EventKind::Delivered { id: receipt.id.clone(), from: receipt.from.clone(), to: sender };
                    self.ev.emit(self.clock.now(), kind);
                    self.report.delivered += 1;
                }
            }
        }
        if receipts.is_empty() {
            return Ok(());
        }
        let root = &self.org.layout.root;
        // A replayed reply finds the mail that asked for a receipt among the unread only.
        receipts.commit_leaving(root, &mut self.unsynced)?;
        self.unsynced.sync(root)
    }

    /// The unread messages a used reply read that asked for a receipt: kept
    /// by `pick` for the agents it asked this try (and dropped now), read again from the inbox
    /// for replies journaled by an earlier, interrupted try (mail consumed
    /// already had its receipt delivered with it).
    fn asked_receipts(&mut self, r: &Record) -> Vec<Message> {
        if let Some(kept) = self.acks.remove(&r.agent) {
            return kept.into_iter().filter(|m| r.mail.contains(&m.id)).collect();
        }
        r.mail
            .iter()
            .filter_map(|id| self.mb.find(&r.agent, crate::mailbox::Folder::Unread, id).ok().flatten())
            .filter(|m| m.ack_required)
            .collect()
    }
}

/// Where the lines of a part's runs for their agents' activity logs go.
pub(super) enum Logs<'a> {
    /// Appended at once, in the org at this root.
    Now(&'a Path),
    /// Handed to the thread that moves the part's read mail, which appends
    /// them ([`move_read_and_log`]).
    Apart(Sender<(String, String)>),
}

impl Logs<'_> {
    fn log(&self, agent: &str, line: String) -> Result<(), PathError> {
        match self {
            Logs::Now(root) => activity::append_line(root, agent, &line),
            Logs::Apart(tx) => {
                // The thread ended early only by a panic, which the turn raises again.
                let _ = tx.send((agent.to_string(), line));
                Ok(())
            }
        }
    }
}

/// [`move_read`], on a thread of its own beside the effects; between one
/// reply's moves and the next, and after the last, it appends the activity
/// lines the effects have handed over so far (`lines`, until it closes).
/// Returns the moves and the lines that could not be appended, by agent.
pub(super) fn move_read_and_log(
    mb: &FsMailStore,
    root: &Path,
    records: &[Record],
    lines: Receiver<(String, String)>,
) -> (Result<Moves, PathError>, Vec<(String, PathError)>) {
    let mut failed = Vec::new();
    let mut append = |(agent, line): (String, String)| {
        if let Err(e) = activity::append_line(root, &agent, &line) {
            failed.push((agent, e));
        }
    };
    let moved = move_read(mb, records, || lines.try_iter().for_each(&mut append));
    lines.iter().for_each(&mut append);
    (moved, failed)
}

/// Consume: moves the mail that the used replies among `records` read to
/// `cur/`, now, and returns the moves, to be made durable with the replies'
/// effects; `between` runs after each reply's moves. Start only once the
/// replies are journaled and their receipts delivered
/// ([`Turn::deliver_receipts`]).
///
/// The effects' last step (their renames into place) and the moves are made
/// durable by one sync, the next part's or the routing's (see
/// `Turn::unsynced`): a power cut may keep a move and lose an effect of the
/// same reply, but never before the reply is in the journal, and the
/// repeated turn writes the effect again from there (G4). So the moves need
/// not wait for the effects either: a large part makes them on a thread of
/// its own while the effects are applied (see `Turn::apply_and_consume`).
pub(super) fn move_read(mb: &FsMailStore, records: &[Record], mut between: impl FnMut()) -> Result<Moves, PathError> {
    let mut read = Moves::new();
    for r in records.iter().filter(|r| r.outcome == Outcome::Ok) {
        for id in &r.mail {
            mb.consume(&mut read, &r.agent, id)?;
        }
        between();
    }
    Ok(read)
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
        tools: Vec::new(),
    }
}
