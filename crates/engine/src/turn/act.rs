//! Act: the tool calls of the turn's used replies run, in each reply's order,
//! after the replies are journaled and before their effects are applied, and
//! each call with a side effect runs at most once (G8):
//!
//! 1. calls already done by an earlier try of this turn keep their result;
//! 2. a call with a side effect that an earlier try started and did not
//!    finish is not run again: its result is the error `interrupted`;
//! 3. every other call with a side effect is journaled `started`, all in one
//!    durable write, before any of them runs;
//! 4. the calls run (each agent's in order, different agents' at the same
//!    time); those with side effects are written to the audit log;
//! 5. every new result is journaled `done`, in one durable write.
//!
//! The apply phase then delivers each result to its agent's inbox as a
//! `tool_result` message, whose id was planned with the reply.

use std::collections::BTreeMap;
use std::time::Instant;

use super::{Replies, Turn};
use crate::audit;
use crate::error::PathError;
use crate::journal::{Outcome as RunOutcome, PlannedCall, ToolDone, ToolLine, ToolState};
use crate::tools::{self, Effect, Outcome};

/// The results of the turn's tool calls, by (agent, call id).
pub(super) type Results = BTreeMap<(String, String), ToolDone>;

impl Turn<'_> {
    /// Runs the tool calls of the used replies (see the module doc).
    pub(super) async fn act(&mut self, replies: &Replies) -> Result<Results, PathError> {
        let org = self.org;
        let states = self.journal.tool_states(self.turn)?;
        let mut results = Results::new();
        let mut fresh: Vec<ToolLine> = Vec::new();
        let mut to_run = Vec::new();
        let mut starting = Vec::new();
        let mut audited = Vec::new();
        let max_calls = org.settings.tools.max_calls;
        for r in replies.records.iter().filter(|r| r.outcome == RunOutcome::Ok) {
            for (pos, pc) in r.tool_calls.iter().enumerate() {
                let key = (r.agent.clone(), pc.call.id.clone());
                let side_effect = org.tools.effect(&pc.call.tool) == Some(Effect::SideEffect);
                let settled = match states.get(&key) {
                    Some(ToolState::Done(done)) => {
                        results.insert(key, done.clone());
                        continue;
                    }
                    Some(ToolState::Started) if side_effect => {
                        let o = Outcome::err(
                            &pc.call.tool,
                            "interrupted: lemming stopped while this call ran; it may or may not have taken effect, \
                             and it is not run again (check before calling it again)",
                        );
                        audited.push(self.audit_entry(&r.agent, &pc.call, &o));
                        Some(o)
                    }
                    // Planned calls are at most max_calls; a lower setting since then refuses the rest.
                    _ if pos >= max_calls => Some(Outcome::err(
                        &pc.call.tool,
                        format!(
                            "too many tool calls in one reply: the first {max_calls} ran ([tools] max_calls in \
                             org/org.toml); ask for this one again in your next reply"
                        ),
                    )),
                    _ if !org.agents.contains_key(r.agent.as_str()) => Some(Outcome::err(
                        &pc.call.tool,
                        format!("not run: {}'s resume is not valid now (see `lemming validate`)", r.agent),
                    )),
                    _ => None,
                };
                match settled {
                    Some(outcome) => {
                        let done = ToolDone { outcome, ms: 0 };
                        fresh.push(ToolLine { agent: key.0.clone(), call: key.1.clone(), done: Some(done.clone()) });
                        results.insert(key, done);
                    }
                    None => {
                        if side_effect {
                            starting.push(ToolLine { agent: key.0.clone(), call: key.1.clone(), done: None });
                        }
                        to_run.push((r, pc));
                    }
                }
            }
        }
        if to_run.is_empty() && fresh.is_empty() {
            return Ok(results);
        }
        self.journal.append_tools(self.turn, &starting)?;
        crate::fault::point("tools_started");
        // Each agent's calls run in order; different agents' at the same time, up to max_parallel.
        let mut by_agent: Vec<(&str, Vec<&PlannedCall>)> = Vec::new();
        for (r, pc) in to_run {
            match by_agent.last_mut() {
                Some((agent, calls)) if *agent == r.agent => calls.push(pc),
                _ => by_agent.push((&r.agent, vec![pc])),
            }
        }
        let gate = tokio::sync::Semaphore::new(org.settings.max_parallel);
        let mut acted = std::collections::BTreeSet::new();
        let (turn, clock) = (self.turn, self.clock);
        let runs = by_agent.into_iter().map(|(agent, calls)| {
            let gate = &gate;
            async move {
                let _permit = gate.acquire().await;
                let mut done = Vec::new();
                // Checked when planned: every agent here has a valid resume.
                let Some(resume) = org.agents.get(agent) else { return done };
                for pc in calls {
                    let ctx = tools::Ctx { org, agent, resume, turn, now: clock.now() };
                    let began = Instant::now();
                    let outcome = tools::run(&ctx, &pc.call).await;
                    let ms = u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX);
                    done.push((agent, pc, outcome, ms));
                }
                done
            }
        });
        for (agent, pc, outcome, ms) in join_all(runs.map(Box::pin).collect()).await.into_iter().flatten() {
            if org.tools.effect(&pc.call.tool) == Some(Effect::SideEffect) {
                acted.insert(agent);
                // A hire writes its own, fuller line.
                if pc.call.tool != "hire_agent" {
                    audited.push(self.audit_entry(agent, &pc.call, &outcome));
                }
            }
            let done = ToolDone { outcome, ms };
            fresh.push(ToolLine { agent: agent.to_string(), call: pc.call.id.clone(), done: Some(done.clone()) });
            results.insert((agent.to_string(), pc.call.id.clone()), done);
        }
        // What the calls wrote is durable before their results are: one flush
        // of each filesystem that holds a workspace where a side effect ran.
        let mut flushed = std::collections::HashSet::new();
        for agent in &acted {
            let ws = org.layout.workspace(agent);
            let dev = std::os::unix::fs::MetadataExt::dev(&match std::fs::metadata(&ws) {
                Ok(m) => m,
                Err(_) => continue,
            });
            if flushed.insert(dev) {
                crate::fsx::sync_fs(&ws)?;
            }
        }
        crate::fault::point("tools_ran");
        if let Err(e) = audit::append(&org.layout, &audited) {
            if crate::trouble::org_wide(&e) {
                return Err(e);
            }
            tracing::warn!(error = %e, "cannot append to the audit log");
        }
        self.journal.append_tools(self.turn, &fresh)?;
        Ok(results)
    }

    /// The audit line of a call with a side effect, with its arguments (the
    /// log redacts their secrets and cuts long texts).
    fn audit_entry(&self, agent: &str, call: &tools::Call, outcome: &Outcome) -> audit::Entry {
        audit::Entry {
            at: self.clock.now(),
            who: agent.to_string(),
            action: "tool".into(),
            what: serde_json::json!({"tool": call.tool, "call": call.id, "args": call.args}),
            outcome: outcome.error.clone().unwrap_or_else(|| "ok".into()),
            turn: Some(self.turn),
        }
    }
}

/// Runs every future at once (on this task) and returns their outputs in order.
async fn join_all<F: std::future::Future + Unpin>(mut futures: Vec<F>) -> Vec<F::Output> {
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, out) in futures.iter_mut().zip(outputs.iter_mut()).filter(|(_, o)| o.is_none()) {
            match std::pin::Pin::new(f).poll(cx) {
                std::task::Poll::Ready(v) => *out = Some(v),
                std::task::Poll::Pending => pending = true,
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}
