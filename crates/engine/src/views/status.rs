//! The status view (`lemming status`, `GET /api/status`): the turn, the
//! daemon, every agent's state and the dead letters, taken without the org
//! lock so it works while a daemon runs.

use std::collections::BTreeMap;

use lemming_provider::{ModelSpec, Structured, ToolMode};
use serde::{Deserialize, Serialize};

use crate::activity;
use crate::error::{Diagnostic, PathError};
use crate::journal::Journal;
use crate::ledger::{Balance, Ledger};
use crate::mailbox::{FsMailStore, MailStore};
use crate::org::Org;
use crate::resume::{Access, Resume, Wake};
use crate::trouble::TroubleState;
use crate::turn::{self, PromptOverCredits};
use crate::view_cache::ViewCache;

/// The daemon's state.
#[derive(Debug, Clone, Serialize)]
pub struct DaemonState {
    /// Whether a daemon (`lemming run`) holds the org lock.
    pub running: bool,
    /// Its pid.
    pub pid: Option<u32>,
    /// Whether turns are paused.
    pub paused: bool,
    /// Why its turns fail and it is backing off (a full disk, a read-only org), if they do.
    pub trouble: Option<crate::trouble::DaemonTrouble>,
}

/// One agent's line in the status.
#[derive(Debug, Clone, Serialize)]
pub struct AgentStatus {
    /// The name.
    pub name: String,
    /// Its title.
    pub title: String,
    /// The model key (`null` for the human).
    pub model: Option<String>,
    /// What it can do now.
    pub state: AgentState,
    /// What is wrong, for `io_error`, `provider_down` and `provider_error`
    /// (with the path, for `io_error`).
    pub problem: Option<String>,
    /// Credits.
    pub credits: Balance,
    /// Unread messages.
    pub unread: usize,
    /// Messages waiting in its outbox.
    pub pending: usize,
    /// The last turn it ran on.
    pub last_run_turn: Option<u64>,
}

/// What an agent can do now, in the words `status` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    /// A person: never run, never charged.
    Human,
    /// Nothing to do.
    Idle,
    /// Has unread mail: runs when its schedule fires.
    Ready,
    /// Its last replies were unusable; its mail waits for another try.
    Failing,
    /// No credits left.
    OutOfCredits,
    /// Its prompt alone would cost more than it has left, so turns skip it.
    PromptOverCredits,
    /// The org-wide budget is spent: no model is called.
    OrgBudgetSpent,
    /// Its resume is invalid and has no last good version.
    Invalid,
    /// Its files cannot be used (see `problem`, with the path).
    IoError,
    /// Its provider could not be reached; its mail waits.
    ProviderDown,
    /// Its provider refused the request or is misconfigured; its mail waits.
    ProviderError,
}

impl AgentState {
    /// The state's word, as `status --json` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Human => "human",
            AgentState::Idle => "idle",
            AgentState::Ready => "ready",
            AgentState::Failing => "failing",
            AgentState::OutOfCredits => "out_of_credits",
            AgentState::PromptOverCredits => "prompt_over_credits",
            AgentState::OrgBudgetSpent => "org_budget_spent",
            AgentState::Invalid => "invalid",
            AgentState::IoError => "io_error",
            AgentState::ProviderDown => "provider_down",
            AgentState::ProviderError => "provider_error",
        }
    }
}

impl std::fmt::Display for AgentState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<TroubleState> for AgentState {
    fn from(t: TroubleState) -> AgentState {
        match t {
            TroubleState::IoError => AgentState::IoError,
            TroubleState::ProviderDown => AgentState::ProviderDown,
            TroubleState::ProviderError => AgentState::ProviderError,
        }
    }
}

/// The whole status.
#[derive(Debug, Clone, Serialize)]
pub struct StatusView {
    /// The last committed turn.
    pub turn: u64,
    /// The tool calls whose results the last turn delivered.
    pub tool_calls: usize,
    /// The daemon.
    pub daemon: DaemonState,
    /// Every agent folder, valid or not.
    pub agents: Vec<AgentStatus>,
    /// Messages in `org/state/dead/`.
    pub dead_letters: usize,
    /// Config problems (invalid resumes).
    pub problems: Vec<Diagnostic>,
    /// Invalid config files replaced by their last good version (in
    /// `org/state/last-good/`), relative to the org root.
    pub last_good: Vec<std::path::PathBuf>,
    /// Credits charged so far, to every agent.
    pub spent: f64,
    /// Credits charged so far per model key (the key that answered).
    pub spent_by_model: BTreeMap<String, f64>,
    /// The org-wide budget of `org.toml`, when set.
    pub budget: Option<OrgBudget>,
    /// Circuit breakers that are open, half-open or counting failures.
    pub breakers: Vec<BreakerStatus>,
    /// The managed local servers (`serve = {...}` on a provider), from their state files.
    pub servers: Vec<lemming_provider::serve::Report>,
    /// The filesystem holding the org is read-only or full, if it is.
    pub filesystem: Option<String>,
    /// State files that could not be read (or lines of them that were
    /// skipped); the rest of the status is shown without them.
    pub unreadable: Vec<Unreadable>,
}

/// A state file a view could not read, or a part of one it skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unreadable {
    /// The file or folder.
    pub path: std::path::PathBuf,
    /// What went wrong, and what was shown instead.
    pub error: String,
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.error)
    }
}

/// Collects what could not be read, so one bad file never hides the rest.
#[derive(Default)]
struct Skipped(Vec<Unreadable>);

impl Skipped {
    /// The value, or `fallback` with the error noted.
    fn or<T>(&mut self, r: Result<T, PathError>, fallback: T, shown: &str) -> T {
        r.unwrap_or_else(|e| {
            self.0.push(Unreadable { path: e.path, error: format!("{}; {shown}", e.source) });
            fallback
        })
    }
}

/// The org-wide budget (`budget` in `org.toml`).
#[derive(Debug, Clone, Serialize)]
pub struct OrgBudget {
    /// The budget.
    pub budget: f64,
    /// Charged so far.
    pub spent: f64,
    /// What is left.
    pub left: f64,
    /// True once it is spent: no model is called until it is raised.
    pub exhausted: bool,
}

/// Where a provider's circuit breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls fail fast until `open_until`.
    Open,
    /// The cooldown is over: the next call is a trial.
    HalfOpen,
    /// Calls go through; failures are counted, below the threshold.
    Closed,
}

impl BreakerState {
    /// The state of a breaker at `now`.
    fn of(b: &lemming_provider::breaker::BreakerState, now: chrono::DateTime<chrono::Utc>) -> BreakerState {
        match b.phase(now) {
            "open" => BreakerState::Open,
            "half_open" => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        }
    }
}

/// One provider's circuit breaker, from `org/state/breakers.json`.
#[derive(Debug, Clone, Serialize)]
pub struct BreakerStatus {
    /// The provider.
    pub provider: String,
    /// Whether calls go through.
    pub state: BreakerState,
    /// Failed calls in a row.
    pub consecutive_failures: u32,
    /// Failures that open it.
    pub threshold: u32,
    /// Calls fail fast until then.
    pub open_until: Option<chrono::DateTime<chrono::Utc>>,
    /// The last failure.
    pub last_error: Option<String>,
}

/// Takes a snapshot of the org.
/// A file that cannot be read is listed in [`StatusView::unreadable`] and the
/// rest is still shown.
pub fn status(org: &Org) -> Result<StatusView, PathError> {
    status_viewing(org, &ViewCache::off())
}

/// [`status`] through what the last `status` kept (`cache`, which the org
/// was loaded with too: [`Org::load_viewing`]): each agent's unread and
/// pending counts and last run are read again only from folders and logs
/// that changed since.
pub fn status_viewing(org: &Org, cache: &ViewCache) -> Result<StatusView, PathError> {
    status_with(org, cache, Besides::read(&org.layout))
}

/// The org at `layout` loaded through what the last `status` kept, that
/// cache, and the status: the ledger, the last turn and the agents in
/// trouble are read on a thread of their own while the org loads (a large
/// org's are megabytes each).
pub fn status_at(layout: &crate::layout::Layout) -> Result<(Org, ViewCache, StatusView), PathError> {
    std::thread::scope(|scope| {
        let besides = scope.spawn(|| Besides::read(layout));
        let cache = ViewCache::load(layout);
        let org = Org::load_viewing(&layout.root, None, &cache);
        let besides = besides.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        let view = status_with(&org, &cache, besides)?;
        Ok((org, cache, view))
    })
}

/// What `status` reads besides the org and the agents' folders.
struct Besides {
    ledger: Result<Ledger, PathError>,
    turn: Result<(u64, Option<crate::events::Event>), PathError>,
    trouble: BTreeMap<String, crate::trouble::AgentTrouble>,
}

impl Besides {
    fn read(layout: &crate::layout::Layout) -> Besides {
        Besides {
            ledger: Ledger::load_viewed(layout),
            turn: Journal::new(layout).last_turn_event(),
            trouble: crate::trouble::read_agents(layout),
        }
    }
}

/// [`status_viewing`] with what was read besides the org.
fn status_with(org: &Org, cache: &ViewCache, besides: Besides) -> Result<StatusView, PathError> {
    let root = &org.layout.root;
    let mb = org.mail();
    let mut skipped = Skipped::default();
    let ledger_path = org.layout.ledger();
    let pid = crate::daemon::daemon_pid(&org.layout);
    let Besides { ledger, turn: turn_and_last, trouble } = besides;
    let ledger = skipped.or(ledger, Ledger::default(), "credits are shown as if nothing was spent");
    for no in &ledger.torn_lines {
        skipped.0.push(Unreadable {
            path: ledger_path.clone(),
            error: format!("line {no} is not a ledger entry and is not counted (`lemming fsck` says more)"),
        });
    }
    let spent = ledger.total_spent();
    let budget = org.settings.budget.map(|b| OrgBudget {
        budget: b,
        spent,
        left: crate::ledger::credits(b - spent),
        exhausted: spent >= b,
    });
    // The turn's own event is the last that committed it; the others (one
    // per agent in a large org) are not parsed.
    let (turn, last) = skipped.or(turn_and_last, (0, None), "the turn is shown as 0");
    let tool_calls = match last.map(|e| (e.turn, e.kind)) {
        Some((t, crate::events::EventKind::Turn(r))) if t == turn => r.tool_calls,
        _ => 0,
    };
    let chart = org.chart();
    let exhausted = budget.as_ref().is_some_and(|b| b.exhausted);
    let mut names: Vec<String> = org.agents.keys().map(|n| n.to_string()).collect();
    names.extend(org.broken.keys().cloned());
    names.sort();
    let (may_everyone, may_groups) = may_lengths(org);
    let ctx = RowCtx {
        org,
        chart: &chart,
        mb: &mb,
        ledger: &ledger,
        trouble: &trouble,
        exhausted,
        turn,
        may_everyone,
        may_groups,
        cache,
        contracts: Default::default(),
    };
    let agents = rows(&ctx, names, &mut skipped);
    Ok(StatusView {
        turn,
        tool_calls,
        daemon: DaemonState {
            running: pid.is_some(),
            pid,
            paused: org.layout.paused().exists(),
            trouble: pid.and_then(|_| crate::trouble::read_daemon(&org.layout)),
        },
        agents,
        dead_letters: skipped.or(mb.dead_count(), 0, "dead letters are shown as 0"),
        problems: org.problems(),
        last_good: org.last_good.clone(),
        spent,
        spent_by_model: ledger.spent_per_model(),
        budget,
        breakers: breakers(org),
        servers: servers(org),
        filesystem: crate::trouble::filesystem_problem(root),
        unreadable: skipped.0,
    })
}

/// What every agent's row of `status` is read with.
struct RowCtx<'a> {
    org: &'a Org,
    chart: &'a crate::chart::Chart<'a>,
    mb: &'a FsMailStore,
    ledger: &'a Ledger,
    trouble: &'a BTreeMap<String, crate::trouble::AgentTrouble>,
    exhausted: bool,
    turn: u64,
    /// What the names of every agent and group can add to a prompt's "You
    /// may write to" line (see [`prompt_ceiling`]).
    may_everyone: usize,
    /// What the names of every group can add to it.
    may_groups: usize,
    cache: &'a ViewCache,
    /// The length of the reply contract of an agent granted no tool, by
    /// how its model keeps to it: most agents of a large org share one.
    contracts: std::sync::Mutex<std::collections::HashMap<(Structured, ToolMode), usize>>,
}

/// Agents per thread above which the rows are read by several threads: each
/// row is a few file system calls, and a large org's rows are most of the
/// time `status` takes.
const ROWS_PER_THREAD: usize = 256;

/// The rows of `names`, in order; the files that could not be read go to `skipped`.
fn rows(ctx: &RowCtx<'_>, names: Vec<String>, skipped: &mut Skipped) -> Vec<AgentStatus> {
    let done = crate::parts::in_parts(&names, ROWS_PER_THREAD, |part| {
        let mut skipped = Skipped::default();
        let rows: Vec<AgentStatus> = part.iter().map(|name| row(ctx, name.clone(), &mut skipped)).collect();
        (rows, skipped)
    });
    let mut out = Vec::with_capacity(names.len());
    for (rows, more) in done {
        out.extend(rows);
        skipped.0.extend(more.0);
    }
    out
}

/// One agent's row.
fn row(ctx: &RowCtx<'_>, name: String, skipped: &mut Skipped) -> AgentStatus {
    let RowCtx { org, mb, ledger, trouble, exhausted, cache, .. } = *ctx;
    let root = &org.layout.root;
    let resume = org.agents.get(name.as_str());
    let credits = ledger.balance(&name, resume.map(|r| r.credits).unwrap_or(0.0));
    let (unread, unreadable) = match cache.unread(&name, || mb.unread_count(&name)) {
        Ok(n) => (n, None),
        Err(e) => (0, Some(e.to_string())),
    };
    let (pending, unreadable) = match cache.pending(&name, || mb.pending_count(&name)) {
        Ok(n) => (n, unreadable),
        Err(e) => (0, unreadable.or(Some(e.to_string()))),
    };
    let last = cache.last_run(&name, || activity::try_last(root, &name).map(|a| a.map(|a| a.turn)));
    let last = skipped.or(last, None, "the last run is not shown");
    // Attempts are on unread mail; most agents of a large org have none.
    let attempts = if unread == 0 || cache.absent(&name, crate::mailbox::ATTEMPTS_FILE) {
        Default::default()
    } else {
        skipped.or(mb.try_attempts(&name), Default::default(), "failed attempts are not counted")
    };
    let known = trouble.get(&name);
    let problem = unreadable.clone().or_else(|| known.map(|t| t.error.clone()));
    let state = match (resume, known) {
        (None, _) => AgentState::Invalid,
        (Some(_), _) if unreadable.is_some() => AgentState::IoError,
        (Some(_), Some(t)) => t.state.into(),
        (Some(r), _) if r.name.is_human() => AgentState::Human,
        (Some(_), _) if exhausted => AgentState::OrgBudgetSpent,
        (Some(_), _) if credits.left <= 0.0 => AgentState::OutOfCredits,
        (Some(r), _)
            if skipped.or(
                prompt_over_credits(ctx, r, credits.left, unread),
                false,
                "its prompt cost is not checked",
            ) =>
        {
            AgentState::PromptOverCredits
        }
        (Some(_), _) if !attempts.is_empty() => AgentState::Failing,
        (Some(_), _) if unread > 0 => AgentState::Ready,
        (Some(_), _) => AgentState::Idle,
    };
    AgentStatus {
        title: resume.map(|r| r.title.clone()).unwrap_or_default(),
        model: resume.and_then(|r| r.model.clone()),
        state,
        problem: if resume.is_some() { problem } else { None },
        credits,
        unread,
        pending,
        last_run_turn: last,
        name,
    }
}

/// More than the text the prompt adds around one message besides its fields.
const MAIL_HEADER: usize = 256;

/// What the names of every agent and group, and of every group alone, can
/// add to a prompt's "You may write to" line (see [`prompt_ceiling`]).
fn may_lengths(org: &Org) -> (usize, usize) {
    let groups: usize = org.settings.groups.keys().map(|g| g.len() + MAY_NAME).sum();
    let agents: usize = org.agents.keys().map(|n| n.as_str().len() + MAY_NAME).sum();
    (agents + groups, groups)
}

/// At least as many characters as the agent's next prompt with `unread`
/// messages that routing accepted, found without reading them.
fn prompt_bound(org: &Org, chart: &crate::chart::Chart<'_>, resume: &Resume, turn: u64, unread: usize) -> usize {
    let turn::Prompt { system, user, .. } =
        turn::prompt_for(org, chart, resume, turn.saturating_add(1), &mut Vec::new());
    let per_message = org.settings.max_message_bytes as usize + MAIL_HEADER;
    system.len() + user.len() + unread.min(org.settings.max_mail_per_prompt) * per_message
}

/// Whether the agent is due for its mail (or wakes always) but its prompt
/// alone would cost more than it has left, so the next turn skips it.
fn prompt_over_credits(ctx: &RowCtx<'_>, resume: &Resume, left: f64, unread: usize) -> Result<bool, PathError> {
    let RowCtx { org, chart, mb, turn, .. } = *ctx;
    if unread == 0 && resume.schedule.wake != Wake::Always {
        return Ok(false);
    }
    let Some(model) = resume.model.as_deref().and_then(|k| org.models.models.get(k)) else { return Ok(false) };
    // Reading every unread message of every agent is most of the cost of
    // `status` in a large org, and building every prompt is much of the rest.
    // So first a ceiling from what is in memory, then a bound that builds the
    // prompt but reads no mail: the prompt without mail, plus, for each
    // message it would hold, the largest message routing accepts and its
    // header line (every field the header shows is in the message's file).
    // Only an agent neither clears is checked exactly.
    let fits = |chars| crate::ledger::prompt_cost(&model.price, chars) <= left;
    if fits(prompt_ceiling(ctx, resume, model, unread)) || fits(prompt_bound(org, chart, resume, turn, unread)) {
        return Ok(false);
    }
    let (mut mail, _) = mb.unread(resume.name.as_str())?;
    let turn::Prompt { system, user, .. } = turn::prompt_for(org, chart, resume, turn.saturating_add(1), &mut mail);
    Ok(PromptOverCredits::check(model, &system, &user, left).is_some())
}

/// More than the fixed text of a prompt: the sentences around the agent's
/// name, role, instructions, whom it may write to, its memory and its mail.
const PROMPT_TEXT: usize = 1024;

/// More than a name adds to the "You may write to" line (its separator, the
/// `@` of a group).
const MAY_NAME: usize = 3;

/// The longest memory summary, in characters: at most 50 lines, each a key
/// (a file name: at most 255 bytes) and a value cut to 200 characters, with
/// a few characters around them, and a line counting the keys left out.
const MEMORY_SUMMARY: usize = 50 * (255 + 200 + 16) + 64;

/// At least as many characters as the agent's next prompt with `unread`
/// messages that routing accepts, from what is in memory alone: no file is
/// read and no prompt built. Every part of the prompt is counted at its
/// largest: the resume's text in bytes, whom it may write to as every agent
/// of its `send_to` (every agent for `*`) and every group, the longest memory
/// summary, the contract for its model and tools, and each message as large as
/// routing accepts.
fn prompt_ceiling(ctx: &RowCtx<'_>, resume: &Resume, model: &ModelSpec, unread: usize) -> usize {
    let org = ctx.org;
    let may = match &resume.send_to {
        Access::Anyone => ctx.may_everyone,
        Access::Only(list) => list.iter().map(|n| n.as_str().len() + MAY_NAME).sum::<usize>() + ctx.may_groups,
    };
    let contract = |granted: &[lemming_provider::ToolSpec]| {
        lemming_provider::contract::instructions(model.structured, granted, model.tools).len()
    };
    let contract = if resume.tools.is_empty() {
        let mut known = ctx.contracts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *known.entry((model.structured, model.tools)).or_insert_with(|| contract(&[]))
    } else {
        contract(&org.tools.granted(resume))
    };
    let per_message = org.settings.max_message_bytes as usize + MAIL_HEADER;
    PROMPT_TEXT
        + resume.name.as_str().len()
        + resume.title.len()
        + resume.description.len()
        + resume.instructions.len()
        + may
        + contract
        + MEMORY_SUMMARY
        + unread.min(org.settings.max_mail_per_prompt) * per_message
}

/// The managed servers of the providers configured with `serve`.
fn servers(org: &Org) -> Vec<lemming_provider::serve::Report> {
    let served = org.models.providers.iter().filter_map(|p| p.serve.as_ref().map(|s| (p, s)));
    served.map(|(p, s)| lemming_provider::serve::Report::read(&p.name, s)).collect()
}

/// The breakers recorded in `org/state/breakers.json`, for providers still configured.
fn breakers(org: &Org) -> Vec<BreakerStatus> {
    let now = chrono::Utc::now();
    lemming_provider::breaker::read_file(&org.layout.breakers())
        .providers
        .into_iter()
        .filter(|(name, _)| org.models.providers.iter().any(|p| &p.name == name))
        .map(|(provider, b)| BreakerStatus {
            state: BreakerState::of(&b, now),
            consecutive_failures: b.consecutive_failures,
            threshold: b.threshold,
            open_until: b.open_until,
            last_error: b.last_error,
            provider,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trouble::AgentTrouble;
    use crate::views::testing::{org_after_one_turn, plain_org};

    /// Delivers `n` messages to the manager, each as large as routing accepts
    /// (`limit` bytes) with every field the prompt shows filled.
    fn deliver_largest(dir: &tempfile::TempDir, limit: usize, n: usize) {
        use crate::message::{Kind, Message, Priority, To};
        for n in 1..=n {
            let id = format!("20260101T000000000Z-human-big{n}");
            let mut m = Message {
                id: id.clone(),
                from: "human".into(),
                to: To(vec!["manager".into()]),
                subject: Some("s".repeat(200)),
                body: String::new(),
                priority: Priority::Urgent,
                reply_to: Some("r".repeat(100)),
                thread: id,
                created_at: chrono::Utc::now(),
                turn: 0,
                ttl_turns: None,
                kind: Kind::Message,
                ack_required: false,
            };
            m.body = "x".repeat(limit - m.to_bytes().len());
            assert!(m.to_bytes().len() <= limit);
            crate::views::testing::deliver(dir, "manager", &m);
        }
    }

    /// The bound that spares `status` reading every unread message is never
    /// below the real prompt, even for messages as large as routing accepts,
    /// with every field the prompt shows filled.
    #[test]
    fn the_prompt_bound_is_never_below_the_prompt() {
        let (dir, org) = plain_org();
        let limit = org.settings.max_message_bytes as usize;
        let resume = org.agent("manager").unwrap();
        let chart = org.chart();
        org.mail().ensure("manager").unwrap();
        deliver_largest(&dir, limit, 3);
        let (mut mail, _) = org.mail().unread("manager").unwrap();
        assert_eq!(mail.len(), 3);
        let turn::Prompt { system, user, .. } = turn::prompt_for(&org, &chart, resume, 1, &mut mail);
        let exact = system.chars().count() + user.chars().count();
        let bound = prompt_bound(&org, &chart, resume, 0, 3);
        assert!(exact <= bound, "the prompt has {exact} characters, the bound says at most {bound}");
        assert!(bound < exact + 3 * (MAIL_HEADER + 2000), "a loose bound checks nothing: {bound} for {exact}");
    }

    /// The ceiling that spares `status` building every prompt is never below
    /// the real prompt, with every part of the prompt at its largest: the
    /// instructions, `*` and groups to write to, a memory of long keys and
    /// values, granted tools, messages as large as routing accepts, and every
    /// way a model takes its contract and tools.
    #[test]
    fn the_prompt_ceiling_is_never_below_the_prompt() {
        use lemming_provider::{Structured, ToolMode};
        let (dir, _) = plain_org();
        let root = dir.path();
        let long = "i".repeat(crate::resume::MAX_INSTRUCTIONS_BYTES - 2000);
        crate::testing::edit(
            root,
            "agents/manager/resume.toml",
            "instructions = \"\"\"",
            &format!("instructions = \"\"\"{long}"),
        );
        crate::testing::edit(root, "agents/manager/resume.toml", "send_to = [", "send_to = [\"*\", ");
        let toml = std::fs::read_to_string(root.join("org/org.toml")).unwrap();
        let groups = "[groups]\neng = [\"planner\", \"coder_01\"]\nall_of_the_people_here = [\"hr\", \"janitor\"]\n";
        std::fs::write(root.join("org/org.toml"), format!("{toml}\n{groups}")).unwrap();
        let memory = crate::org::Layout::new(root).memory_dir("manager");
        std::fs::create_dir_all(&memory).unwrap();
        for i in 0..60 {
            let key = format!("{i:02}{}", "k".repeat(248));
            std::fs::write(memory.join(format!("{key}.json")), serde_json::to_string(&"ü".repeat(300)).unwrap())
                .unwrap();
        }
        let mut org = Org::load(root).unwrap();
        assert!(org.problems().is_empty(), "{:?}", org.problems());
        let limit = org.settings.max_message_bytes as usize;
        org.mail().ensure("manager").unwrap();
        deliver_largest(&dir, limit, 3);
        let key = org.agent("manager").unwrap().model.clone().unwrap();
        for structured in [Structured::None, Structured::JsonObject, Structured::JsonSchema] {
            for (_, tools) in ToolMode::ALL {
                let spec = org.models.models.get_mut(&key).unwrap();
                (spec.structured, spec.tools) = (structured, tools);
                let resume = org.agent("manager").unwrap();
                assert!(!resume.tools.is_empty() && resume.send_to == Access::Anyone);
                let chart = org.chart();
                let (mb, ledger, trouble) = (org.mail(), Ledger::default(), BTreeMap::new());
                let (may_everyone, may_groups) = may_lengths(&org);
                let ctx = RowCtx {
                    org: &org,
                    chart: &chart,
                    mb: &mb,
                    ledger: &ledger,
                    trouble: &trouble,
                    exhausted: false,
                    turn: u64::MAX - 1,
                    may_everyone,
                    may_groups,
                    cache: &ViewCache::off(),
                    contracts: Default::default(),
                };
                let (mut mail, _) = mb.unread("manager").unwrap();
                assert_eq!(mail.len(), 3);
                let turn::Prompt { system, user, .. } = turn::prompt_for(&org, &chart, resume, u64::MAX, &mut mail);
                assert!(user.contains("and 10 more keys") && system.contains("@all_of_the_people_here"), "{user}");
                let exact = system.chars().count() + user.chars().count();
                let model = &org.models.models[&key];
                let ceiling = prompt_ceiling(&ctx, resume, model, 3);
                assert!(exact <= ceiling, "{structured:?} {tools:?}: {exact} characters, the ceiling {ceiling}");
                // Close enough that leaving out the memory (23,000 characters) fails.
                assert!(ceiling < exact + 4_000, "a loose ceiling hides a missing part: {ceiling} for {exact}");
            }
        }
    }

    #[test]
    fn agent_states_keep_their_words() {
        use AgentState::*;
        let all = [
            Human,
            Idle,
            Ready,
            Failing,
            OutOfCredits,
            PromptOverCredits,
            OrgBudgetSpent,
            Invalid,
            IoError,
            ProviderDown,
            ProviderError,
        ];
        let words: Vec<String> =
            all.iter().map(|s| serde_json::to_value(s).unwrap().as_str().unwrap().into()).collect();
        assert_eq!(
            words,
            [
                "human",
                "idle",
                "ready",
                "failing",
                "out_of_credits",
                "prompt_over_credits",
                "org_budget_spent",
                "invalid",
                "io_error",
                "provider_down",
                "provider_error"
            ]
        );
        for (s, w) in all.iter().zip(&words) {
            assert_eq!(&s.to_string(), w);
        }
        assert_eq!(AgentState::from(TroubleState::ProviderError), ProviderError);
        assert_eq!(serde_json::to_value(BreakerState::HalfOpen).unwrap(), "half_open");
    }

    #[test]
    fn status_through_what_the_last_one_kept_agrees_with_a_plain_one_as_files_change() {
        use crate::view_cache::ViewCache;
        let (dir, _) = org_after_one_turn();
        let root = dir.path();
        let layout = crate::org::Layout::new(root);
        // Each view is judged ten seconds on, so that what it reads is kept;
        // every change comes a tick after the view before it.
        let view = |what: &str| {
            std::thread::sleep(std::time::Duration::from_millis(50));
            let cache = ViewCache::load_at(&layout, std::time::SystemTime::now() + std::time::Duration::from_secs(10));
            let org = Org::load_viewing(root, None, &cache);
            let got = serde_json::to_value(status_viewing(&org, &cache).unwrap()).unwrap();
            cache.save(&org.layout, &org.agents, &org.broken);
            let plain = serde_json::to_value(status(&Org::load_or_last_good(root, None)).unwrap()).unwrap();
            assert_eq!(got, plain, "{what}");
            // Reading the ledger and the turn while the org loads changes nothing.
            let (_, _, at) = status_at(&layout).unwrap();
            assert_eq!(serde_json::to_value(at).unwrap(), plain, "{what}, read while the org loads");
            std::thread::sleep(std::time::Duration::from_millis(50));
            got
        };
        let agent = |s: &serde_json::Value, name: &str| {
            s["agents"].as_array().unwrap().iter().find(|a| a["name"] == name).cloned().unwrap_or_default()
        };
        let first = view("nothing kept yet");
        assert!(layout.cache_dir().join("agents.bin").is_file(), "status keeps what it read");
        assert_eq!(view("all of it kept"), first);
        crate::views::testing::deliver(&dir, "manager", &crate::testing::message("m-1", "human", &["manager"], "hi"));
        assert_eq!(agent(&view("mail delivered"), "manager")["unread"], 1);
        let attempts = root.join("agents/manager").join(crate::mailbox::ATTEMPTS_FILE);
        std::fs::write(&attempts, r#"{"m-1":{"count":1,"last_turn":1,"last_error":"down"}}"#).unwrap();
        assert_eq!(agent(&view("a run failed on it"), "manager")["state"], "failing");
        // Attempts left behind with no unread mail fail nothing.
        for e in std::fs::read_dir(root.join("agents/manager/inbox/new")).unwrap() {
            std::fs::remove_file(e.unwrap().path()).unwrap();
        }
        assert_eq!(agent(&view("the mail taken away"), "manager")["state"], "idle");
        crate::views::testing::deliver(&dir, "manager", &crate::testing::message("m-1", "human", &["manager"], "hi"));
        assert_eq!(agent(&view("the mail back"), "manager")["state"], "failing");
        std::fs::remove_file(&attempts).unwrap();
        assert_eq!(agent(&view("the attempts cleared"), "manager")["state"], "ready");
        std::fs::write(root.join("agents/manager/outbox/new/x.json"), b"{}").unwrap();
        assert_eq!(agent(&view("mail sent"), "manager")["pending"], 1);
        crate::testing::edit(root, "agents/manager/resume.toml", "title = \"", "title = \"Chief ");
        assert!(agent(&view("a resume edited"), "manager")["title"].as_str().unwrap().starts_with("Chief "));
        crate::testing::edit(root, "agents/manager/resume.toml", "model = ", "model = 7 #");
        // Its last good version stands in, and the problem is shown.
        let broken = view("a resume broken");
        assert!(broken["problems"].to_string().contains("agents/manager/resume.toml"), "{}", broken["problems"]);
        std::fs::remove_dir_all(root.join("agents/manager")).unwrap();
        assert!(agent(&view("an agent gone"), "manager").is_null());
        std::fs::write(layout.cache_dir().join("agents.bin"), b"not what status keeps").unwrap();
        view("a cache that is not one");
    }

    #[test]
    fn status_after_a_turn_shows_the_turn_states_and_counts() {
        let (_dir, org) = org_after_one_turn();
        let s = status(&org).unwrap();
        assert_eq!(s.turn, 1);
        assert!(!s.daemon.running && s.daemon.pid.is_none());
        let by_name = |n: &str| s.agents.iter().find(|a| a.name == n).unwrap();
        assert_eq!((by_name("human").state, by_name("human").unread), (AgentState::Human, 1));
        assert_eq!((by_name("manager").state, by_name("manager").last_run_turn), (AgentState::Idle, Some(1)));
        assert!(by_name("manager").credits.spent > 0.0);
        assert_eq!(s.spent, by_name("manager").credits.spent);
        assert!(s.unreadable.is_empty() && s.problems.is_empty(), "{s:?}");
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["agents"][2]["state"], "human", "{json:#}");
    }

    #[test]
    fn an_agent_in_trouble_shows_its_trouble_and_a_broken_one_is_invalid() {
        let (dir, _) = plain_org();
        let layout = crate::org::Layout::new(dir.path());
        let t = AgentTrouble {
            state: TroubleState::ProviderDown,
            since_turn: 1,
            turn: 1,
            error: "connection refused".into(),
            path: None,
        };
        crate::trouble::write_agents(&layout, &Default::default(), &[("planner".to_string(), t)].into()).unwrap();
        std::fs::write(dir.path().join("agents/janitor/resume.toml"), "name = ").unwrap();
        let org = Org::load(dir.path()).unwrap();
        crate::send::send(&org, "human", "manager", "hello", Default::default()).unwrap();
        let s = status(&org).unwrap();
        let by_name = |n: &str| s.agents.iter().find(|a| a.name == n).unwrap();
        assert_eq!(by_name("planner").state, AgentState::ProviderDown);
        assert_eq!(by_name("planner").problem.as_deref(), Some("connection refused"));
        assert_eq!((by_name("janitor").state, by_name("janitor").problem.as_deref()), (AgentState::Invalid, None));
        assert_eq!(by_name("human").pending, 1);
    }
}
