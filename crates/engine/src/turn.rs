//! One turn, as a sequence of phases on the turn's state (`Turn`), each in
//! its own file under `turn/`:
//!
//! 1. **prepare**: the turn number, the last turn's events if a crash kept
//!    them from the events file, every agent's folders, stale tmp files;
//! 2. **route** every outbox;
//! 3. **pick** the agents that are due and can pay, with their prompts
//!    (`pick.rs`), one at a time as 4. frees a slot for it, their unread
//!    mail read a few agents ahead on a thread of its own (`ahead.rs`);
//! 4. **call** their models, concurrently up to `max_parallel`, and
//!    **journal** the replies (`call.rs`), after the dead letters the pick made;
//! 5. **apply** their effects and **consume** the mail they read (`apply.rs`),
//!    then **archive** read mail old enough, with `archive_after_turns` (`archive.rs`);
//! 6. **route again**, so replies arrive in the same turn (not when there are
//!    none: nobody was due);
//! 7. **commit** (`commit.rs`).
//!
//! Every phase ends in a group commit ([`Batch`]): one filesystem sync per
//! step, not one per file. The order of the syncs is what makes a crash at
//! any point safe:
//!
//! 1. deliveries are durable before outbox files move to `sent/` (G3);
//! 2. each reply is journaled, with the plan of its effects, before any effect;
//! 3. the mail a reply read moves to `cur/` only once the reply is in the
//!    journal (G4). Its effects (outbox, memory, attempts) are written and
//!    synced, renamed into place, and share their last sync with the moves:
//!    the next part's first one, or the one before the routing. A power cut
//!    in between may keep a move and lose an effect; the repeated turn
//!    writes the effect again from the journal;
//! 4. `turn.json` is written with the turn's events in it, then the events
//!    are appended to `events.jsonl` (the next turn appends any that a crash
//!    kept out, and none twice).
//!
//! A turn repeated after a crash finds the journaled replies, with the ids of
//! the messages they write, so it writes the same ids, calls no model twice,
//! and charges no (turn, agent) twice (G5).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use lemming_provider::Registry;

use crate::clock::{Clock, Sources};
use crate::error::{PathError, WithPath};
use crate::events::{EventLog, Events};
use crate::fault;
use crate::fsx;
use crate::journal::{Journal, Outcome, Record};
use crate::mailbox::{FsMailStore, MailStore};
use crate::name::AgentName;
use crate::org::Org;
use crate::route::{route, Post, Waiting};
use crate::trouble;

mod act;
mod ahead;
mod apply;
mod archive;
mod call;
mod commit;
mod pick;
#[cfg(test)]
mod tests;

pub use crate::events::TurnReport;
pub(crate) use call::{parse_reply, plan_reply, Stamps};
pub use pick::{choose, prompt_for, Choice, Idle, Prompt, PromptOverCredits};

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

    /// Holds `records`, new replies of `turn` that could not be journaled
    /// (`e` says why), for the next try of the turn; `paid` of them are
    /// answers of this try (the others were held by an earlier one).
    fn keep(&mut self, turn: u64, records: Vec<Record>, paid: u64, e: &PathError) {
        if self.turn != turn {
            self.records.clear();
        }
        self.turn = turn;
        if records.is_empty() {
            return;
        }
        self.calls += paid;
        tracing::error!(
            turn,
            error = %e,
            replies = records.len(),
            unjournaled_calls = self.calls,
            "the replies could not be journaled; a daemon keeps them in memory and journals them when it can write again"
        );
        self.records.extend(records);
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

/// Runs one turn on a loaded org. The caller holds the org lock; the turn
/// takes the turn lock ([`crate::lock::turn`]) from its start to its commit,
/// waiting while a backup copies the org.
pub async fn run(org: &Org, registry: &Arc<Registry>, stop: Option<Stop>) -> Result<TurnReport, PathError> {
    run_keeping(org, registry, &Sources::real(), stop, &mut Unjournaled::default()).await
}

/// [`run`], reusing the replies in `held` that an earlier try of this turn
/// could not journal, and leaving there the replies that this try cannot.
/// Time comes from `src`'s clock, and each event is published on its bus as
/// it happens.
pub async fn run_keeping(
    org: &Org,
    registry: &Arc<Registry>,
    src: &Sources,
    stop: Option<Stop>,
    held: &mut Unjournaled,
) -> Result<TurnReport, PathError> {
    Ok(run_waiting(org, registry, src, stop, held).await?.0)
}

/// [`run_keeping`], also returning the outbox entries that the turn's last
/// routing left waiting ([`Waiting`]): the daemon tells held mail from mail
/// that came later with it. Every turn goes through here, under the turn lock.
pub async fn run_waiting(
    org: &Org,
    registry: &Arc<Registry>,
    src: &Sources,
    stop: Option<Stop>,
    held: &mut Unjournaled,
) -> Result<(TurnReport, Waiting), PathError> {
    let _turn = crate::lock::turn(&org.layout).await?;
    let mut t = Turn::prepare(org, src)?;
    let clock = &*src.clock;
    let post = Post { store: &t.mb, transport: src.link.transport.as_deref(), fresh: None };
    let first = route(org, post, t.turn, clock, &mut t.report, &mut t.ev, &mut t.sick)?;
    fault::point("routed");
    let journaled = t.journal.records(t.turn)?;
    let carried = held.take(t.turn, &journaled);
    // What the other nodes spent matters only to an org-wide budget: not asked otherwise.
    let elsewhere = match (&src.link.transport, org.settings.budget) {
        (Some(tr), Some(_)) => tr.spent_elsewhere().unwrap_or(0.0),
        _ => 0.0,
    };
    let ledger = crate::ledger::Ledger::load_for_turn(&org.layout, t.turn)?.with_elsewhere(elsewhere);
    let answered: HashSet<String> = journaled.keys().cloned().chain(carried.iter().map(|r| r.agent.clone())).collect();
    let mut due = pick::Due::new(org, registry, &ledger, &answered);
    due.read_ahead(&t.mb, &t.sick, t.turn);
    let mut calls = call::Calls::new(stop);
    let mut earlier = Some((journaled, carried));
    let mut applied = Applied::default();
    loop {
        let fresh = t.call(registry, &mut due, &mut calls, fault::apply_every(APPLY_EVERY)).await;
        let (journaled, carried) = earlier.take().unwrap_or_default();
        let called = call::Called { fresh, housekeeping: due.take_housekeeping(), failed: calls.failed() };
        if let Err(e) = t.settle(&ledger, journaled, carried, called, held, &mut applied).await {
            // The calls still in flight answer, and are held with the rest: never asked again.
            calls.stop_picking();
            let rest = t.call(registry, &mut due, &mut calls, usize::MAX).await;
            let paid = call::paid(&rest);
            held.keep(t.turn, rest, paid, &e);
            return Err(e);
        }
        if calls.done() {
            break;
        }
    }
    tracing::debug!(turn = t.turn, most_prompts = due.most_prompts(), "the calls of the turn are done");
    // Every reply's effects and read mail are durable before any of its
    // messages is delivered, and before the commit.
    t.unsynced.sync(&org.layout.root)?;
    t.archive()?;
    fault::point("archived");
    // Only replies write to outboxes during a turn: a turn that applied none
    // (nobody was due) does not list every outbox again. Mail sent meanwhile
    // waits for the next turn, which the daemon's watcher starts at once.
    let waiting = if applied.runs.is_empty() {
        first
    } else {
        t.ev.count_arrivals(std::mem::take(&mut applied.sent));
        let post = Post { store: &t.mb, transport: src.link.transport.as_deref(), fresh: Some(&applied.fresh) };
        let waiting = route(org, post, t.turn, clock, &mut t.report, &mut t.ev, &mut t.sick)?;
        t.report.arrived = t.ev.arrivals();
        waiting
    };
    fault::point("routed_again");
    let report = t.commit(&applied.runs, held)?;
    if let Some(tr) = &src.link.transport {
        // The other nodes hear of this turn and of what this node has spent in all.
        match crate::ledger::Ledger::load_for_turn(&org.layout, report.turn + 1) {
            Ok(after) => tr.turn_done(&report, after.total_spent()),
            Err(e) => tracing::warn!(error = %e, "the ledger could not be read for the other nodes"),
        }
    }
    // Derived from the files: a failure here is a warning, never the turn's.
    crate::index::after_turn(&org.layout);
    Ok((report, waiting))
}

/// A large turn journals, applies and consumes its replies in parts of this
/// many, while the other calls go on: its memory grows with the part, not
/// with the org. Each part has its own group commits, in the order of a
/// whole turn's, so a crash in any part is repeated as a crash of a whole turn is.
pub const APPLY_EVERY: usize = 2048;

/// How a run of the turn ended, kept once its reply is applied: what the commit needs.
struct Ran {
    agent: String,
    outcome: Outcome,
    cause: Option<lemming_provider::Cause>,
    error: Option<String>,
}

/// What the applied parts of a turn leave for its commit.
#[derive(Default)]
struct Applied {
    runs: Vec<Ran>,
    /// The ids of the messages the replies wrote.
    sent: HashSet<String>,
    /// Those of them from replies this try asked for, none replayed ([`Post::fresh`]).
    fresh: HashSet<String>,
}

impl Applied {
    fn add(&mut self, records: Vec<Record>, replayed: &[String]) {
        let replayed: HashSet<&str> = replayed.iter().map(String::as_str).collect();
        for r in records {
            if r.outcome == Outcome::Ok && !replayed.contains(r.agent.as_str()) {
                self.fresh.extend(r.messages.iter().map(|m| m.id.clone()));
            }
            self.sent.extend(r.messages.into_iter().map(|m| m.id));
            self.runs.push(Ran { agent: r.agent, outcome: r.outcome, cause: r.cause, error: r.error });
        }
    }
}

/// The mailboxes' `tmp/` folders are swept of leftovers (files of writers
/// that crashed, harmless where they are) on turn 1, every this many turns
/// after, and by a turn that repeats an interrupted try (its journal is
/// there: the try that crashed may have left files); not on every turn:
/// listing two folders per agent, seldom in the file system's cache, was
/// about a tenth of a warm turn's system time. A writer killed between
/// turns (a `lemming send`) leaves a file that is gone within this many turns.
pub const TMP_SWEEP_EVERY: u64 = 10;

/// The state of one turn, handed from phase to phase.
struct Turn<'a> {
    org: &'a Org,
    clock: &'a dyn Clock,
    mb: FsMailStore,
    journal: Journal,
    /// The turn number.
    turn: u64,
    /// When it started: the stamp of the ids of the messages its replies write.
    started: DateTime<Utc>,
    report: TurnReport,
    ev: Events,
    /// Agents whose files cannot be used this turn: they sit it out, alone.
    sick: BTreeMap<String, PathError>,
    /// The agents in trouble after the last turn.
    trouble_before: BTreeMap<String, trouble::AgentTrouble>,
    /// For each agent asked this try, the mail in its prompt that asked for a
    /// receipt (`ack_required`).
    acks: BTreeMap<String, Vec<crate::message::Message>>,
    /// The renames and moves of the replies applied so far that are not yet
    /// durable: the next part's first sync, or the one before the routing,
    /// makes them so (see `consume`).
    unsynced: fsx::Unsynced,
}

/// The journaled replies a turn applies.
struct Replies {
    /// Every reply of the turn, replayed ones first, then by agent.
    records: Vec<Record>,
    /// The agents whose reply was journaled by an earlier, interrupted try.
    replayed: Vec<String>,
}

impl Turn<'_> {
    /// Journals a part of the turn's replies (`called`, with the replies of
    /// an earlier try: `journaled`, `carried`), runs their tool calls,
    /// applies their effects and consumes the mail they read.
    async fn settle(
        &mut self,
        ledger: &crate::ledger::Ledger,
        journaled: BTreeMap<String, Record>,
        carried: Vec<Record>,
        called: call::Called,
        held: &mut Unjournaled,
        applied: &mut Applied,
    ) -> Result<(), PathError> {
        let replies = self.journal(journaled, carried, called, held)?;
        fault::point("journaled");
        let tools = self.act(&replies).await?;
        fault::point("acted");
        self.deliver_receipts(&replies.records)?;
        let read = self.apply_and_consume(ledger, &replies, &tools)?;
        read.leave(&mut self.unsynced);
        fault::point("consumed");
        applied.add(replies.records, &replies.replayed);
        Ok(())
    }

    /// Applies the replies' effects and moves the mail they read to `cur/`
    /// (see [`apply::move_read`]): at the same time when they are many, the
    /// moves and the lines of the activity logs on a thread of their own
    /// ([`apply::move_read_and_log`]). Each is file work the other need not
    /// wait for, and together they are most of a large turn's time.
    fn apply_and_consume(
        &mut self,
        ledger: &crate::ledger::Ledger,
        replies: &Replies,
        tools: &act::Results,
    ) -> Result<fsx::Moves, PathError> {
        let records = &replies.records;
        let root = &self.org.layout.root;
        let moves: usize = records.iter().filter(|r| r.outcome == Outcome::Ok).map(|r| r.mail.len()).sum();
        let apart = moves + records.len() >= fault::apart_min(APART_MIN);
        let mb = self.mb.clone();
        // Unbounded: the effects never wait for the thread, and a part's
        // lines (some hundreds of bytes each) are at most a megabyte or two.
        let (tx, lines) = std::sync::mpsc::channel();
        let (effects, (read, not_logged)) = std::thread::scope(|s| {
            let mover = apart.then(|| {
                let spawned = std::thread::Builder::new()
                    .name("lemming-consume".into())
                    .spawn_scoped(s, || apply::move_read_and_log(&mb, root, records, lines));
                spawned
                    .map_err(|e| tracing::debug!(error = %e, "no thread to move read mail on; moved after the effects"))
            });
            let logs = match mover {
                Some(Ok(_)) => apply::Logs::Apart(tx),
                _ => apply::Logs::Now(root),
            };
            let effects = self.apply(ledger, replies, tools, &logs);
            // The thread appends what is handed over until this closes.
            drop(logs);
            if effects.is_ok() {
                fault::point("effects");
            }
            let moved = match mover {
                Some(Ok(mover)) => mover.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                _ if effects.is_ok() => (apply::move_read(&mb, records, || {}), Vec::new()),
                _ => (Ok(fsx::Moves::new()), Vec::new()),
            };
            (effects, moved)
        });
        effects?;
        for (agent, e) in not_logged {
            self.not_logged(agent, e)?;
        }
        read
    }
}

/// Agents per thread above which the check of every agent's folders (about
/// a dozen system calls each) is spread over several threads.
const CHECKS_PER_THREAD: usize = 256;

/// A part with at least this many files to move to `cur/` and lines to
/// append to activity logs does them on a thread of its own beside the
/// effects: fewer are quicker than starting one.
pub const APART_MIN: usize = 32;

impl<'a> Turn<'a> {
    /// Starts the next turn: its number, the events of the last one that a
    /// crash kept out of the events file, every agent's folders (an agent
    /// whose folders cannot be used is sick), and no stale tmp files.
    fn prepare(org: &'a Org, src: &'a Sources) -> Result<Turn<'a>, PathError> {
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
        let kept = || journal.last_turn_and_events().map(|(turn, kept)| if turn == last { kept } else { Vec::new() });
        let last_seq = EventLog::new(&org.layout).catch_up_turn(last, kept)?;
        let clock = &*src.clock;
        let started = clock.now();
        let mb = org.mail();
        // The folders every agent's mail moves through (dead letters, state files).
        for d in [mb.dead_path(), org.layout.state_tmp()] {
            std::fs::create_dir_all(&d).with_path(&d)?;
        }
        let ev = Events::live(turn, last_seq.saturating_add(1), src.bus.clone(), started);
        let mut t = Turn {
            org,
            clock,
            mb,
            journal,
            turn,
            started,
            report: TurnReport { turn, ..TurnReport::default() },
            ev: ev.spool_in(&org.layout.state_tmp())?,
            sick: BTreeMap::new(),
            trouble_before: trouble::read_agents(&org.layout),
            acks: BTreeMap::new(),
            unsynced: fsx::Unsynced::default(),
        };
        let sweep = turn % TMP_SWEEP_EVERY == 1 || t.journal.records_path(turn).exists();
        let mut folders = org.folders_here();
        folders.retain(|f| AgentName::new(f).is_ok());
        let mb = &t.mb;
        let checked = crate::parts::in_parts(&folders, CHECKS_PER_THREAD, |part| {
            let check = |folder: &String| {
                // Checked first, made only when missing (a fresh or hand-made agent folder).
                let ensured = match trouble::check_agent_files(&org.layout, folder) {
                    Err(e) if e.source.kind() == std::io::ErrorKind::NotFound => {
                        mb.ensure(folder).and_then(|_| trouble::check_agent_files(&org.layout, folder))
                    }
                    checked => checked,
                };
                if ensured.is_ok() && sweep {
                    fsx::clean_stale_tmp(mb.tmp_leftovers(folder));
                }
                ensured
            };
            part.iter().map(check).collect::<Vec<_>>()
        });
        for (folder, ensured) in folders.into_iter().zip(checked.into_iter().flatten()) {
            if let Err(e) = ensured {
                if trouble::org_wide(&e) {
                    return Err(e);
                }
                t.sick.insert(folder, e);
            }
        }
        // State files (`daemon.json`, `turn.json`, dead-letter reasons, memory) are written through here too.
        fsx::clean_stale_tmp(
            std::fs::read_dir(org.layout.state_tmp()).into_iter().flatten().flatten().map(|e| e.path()),
        );
        Ok(t)
    }
}
