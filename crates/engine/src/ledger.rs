//! The credits ledger (guarantee G5): append-only `org/state/ledger.jsonl`.
//!
//! One JSON line per entry. Charges are keyed by (turn, agent): a repeated turn
//! never charges twice. Balance = budget + top-ups − charges.
//!
//! Every amount is finite and bounded by [`MAX_CREDITS`], so no total can grow
//! to infinity, and totals never show as `-0`.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{PathError, WithPath};
use crate::fsx;
use crate::layout::Layout;

/// The most credits one amount may be: a top-up, a charge, a resume's
/// `credits`, the org's `budget`, or what an agent has left after a top-up.
/// A million million: far beyond any real budget, far below where `f64` sums
/// lose cents or overflow.
pub const MAX_CREDITS: f64 = crate::config::MAX_CREDITS;

/// The smallest top-up: the precision every command shows credits with.
pub const MIN_TOP_UP: f64 = 0.0001;

/// Whether `x` is an amount the ledger accepts: finite, 0 or more, at most [`MAX_CREDITS`].
pub fn valid_amount(x: f64) -> bool {
    (0.0..=MAX_CREDITS).contains(&x)
}

/// `x` with a negative zero made positive: a sum of no `f64`s is `-0.0`, which
/// prints as `-0.0000`. Every total the ledger hands out goes through here.
pub fn credits(x: f64) -> f64 {
    x + 0.0
}

/// A computed charge made storable: NaN becomes 0, and the rest is clamped to
/// 0..=[`MAX_CREDITS`] (prices are validated, but tokens × price can still be huge).
pub fn bounded_cost(cost: f64) -> f64 {
    if cost.is_nan() {
        0.0
    } else {
        credits(cost.clamp(0.0, MAX_CREDITS))
    }
}

/// What the prompt alone costs at `price`, before any reply token: its tokens
/// are estimated as the providers estimate usage they are not told
/// (ceil(chars / 4)), so the estimate matches what an estimated charge would be.
pub fn prompt_cost(price: &lemming_provider::config::Price, prompt_chars: usize) -> f64 {
    bounded_cost(price.cost(&lemming_provider::Usage::estimate(prompt_chars, 0)))
}

/// One ledger line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    /// A model call paid by an agent.
    Charge {
        /// The turn.
        turn: u64,
        /// The agent.
        agent: String,
        /// The model key that answered.
        model: String,
        /// Prompt tokens.
        input_tokens: u64,
        /// Reply tokens.
        output_tokens: u64,
        /// Credits.
        cost: f64,
        /// Whether the tokens are estimates (the provider reported none).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        estimated: bool,
        /// When.
        at: DateTime<Utc>,
    },
    /// Credits added by a person.
    TopUp {
        /// The agent.
        agent: String,
        /// Credits added.
        amount: f64,
        /// The last committed turn when it was added.
        #[serde(default)]
        turn: u64,
        /// When.
        at: DateTime<Utc>,
    },
}

impl Entry {
    /// Whether its amount (a charge's cost, a top-up's amount) is a [`valid_amount`].
    pub fn valid(&self) -> bool {
        match self {
            Entry::Charge { cost, .. } => valid_amount(*cost),
            Entry::TopUp { amount, .. } => valid_amount(*amount),
        }
    }
}

/// One non-empty line of the ledger, with its 1-based number.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// A valid entry.
    Entry(usize, Entry),
    /// A line cut short by a crash mid-append (the last line, a prefix of an
    /// entry, or zeros after a power loss). The next append starts on a new
    /// line, so it may stand anywhere; the repeated turn charged again.
    Torn(usize, String),
    /// A complete line that is not a ledger entry (an edit gone wrong).
    Corrupt(usize, String),
}

/// Reads every non-empty line of ledger text. Readers skip torn and corrupt
/// lines; `fsck` reports them.
pub fn read_lines(text: &str) -> Vec<Line> {
    let last = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()).map(|(i, _)| i + 1).last();
    parsed_lines(text)
        .map(|(no, line, parsed)| match parsed {
            Ok(e) => Line::Entry(no, e),
            Err(e) if Some(no) == last || e.is_eof() || line.contains('\0') => Line::Torn(no, e.to_string()),
            Err(e) => Line::Corrupt(no, e.to_string()),
        })
        .collect()
}

/// Each non-empty line of ledger text, with its 1-based number, parsed as
/// it comes (a ledger is tens of megabytes: a reader that only counts makes
/// no list of its lines).
fn parsed_lines(text: &str) -> impl Iterator<Item = (usize, &str, serde_json::Result<Entry>)> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| (i + 1, line, serde_json::from_str::<Entry>(line)))
}

/// An agent's credits.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Balance {
    /// Budget from the resume plus top-ups.
    pub budget: f64,
    /// Charges so far.
    pub spent: f64,
    /// What is left.
    pub left: f64,
}

/// What has been read of a ledger file: by this process
/// ([`Ledger::load_for_turn`]), or by an earlier view ([`Ledger::load_viewed`]).
#[derive(Debug)]
struct ReadSoFar {
    id: fsx::FileId,
    /// Bytes read, up to the end of a line.
    len: u64,
    /// Lines in them.
    lines: usize,
    /// Their last [`ReadSoFar::END`] bytes (or fewer).
    end: Vec<u8>,
    totals: Ledger,
}

impl ReadSoFar {
    /// How many of the last bytes read are compared on the next read.
    const END: usize = 256;

    /// How much of the file is read at once (in tests, less than a line:
    /// every read crosses blocks).
    const BLOCK: u64 = if cfg!(test) { 100 } else { 1 << 20 };

    /// Counts `whole`, the next whole lines of the file.
    fn take(&mut self, whole: &[u8]) {
        self.totals.add_lines(whole, self.lines);
        self.lines += whole.iter().filter(|b| **b == b'\n').count();
        self.len += whole.len() as u64;
        match whole.len().checked_sub(ReadSoFar::END) {
            Some(from) => self.end = whole[from..].to_vec(),
            None => {
                self.end.extend_from_slice(whole);
                let over = self.end.len().saturating_sub(ReadSoFar::END);
                self.end.drain(..over);
            }
        }
    }

    /// Nothing read yet of the file `id` at `path`.
    fn fresh(path: &Path, id: fsx::FileId) -> ReadSoFar {
        ReadSoFar {
            id,
            len: 0,
            lines: 0,
            end: Vec::new(),
            totals: Ledger { path: path.to_path_buf(), ..Ledger::default() },
        }
    }

    /// Reads what was appended to `f` (the file at `path`, of `meta`) since
    /// this read, or all of it when it is another file, is shorter, or no
    /// longer ends the read part with the same bytes (rewritten in place).
    /// Only whole lines count in `self`; returns what follows the last one,
    /// a line that has no newline yet (a write under way, or torn), for
    /// [`ReadSoFar::totals_with`].
    fn advance(
        mut self,
        path: &Path,
        f: &mut std::fs::File,
        meta: &std::fs::Metadata,
    ) -> Result<(ReadSoFar, Vec<u8>), PathError> {
        use std::io::{Read, Seek, SeekFrom};
        let id = fsx::FileId::of(meta);
        let charges_from = self.totals.charges_from;
        let fresh = || {
            let mut r = ReadSoFar::fresh(path, id);
            r.totals.charges_from = charges_from;
            r
        };
        if self.id != id || self.len > meta.len() || self.end.len() as u64 > self.len {
            self = fresh();
        }
        let from = self.len - self.end.len() as u64;
        let mut head = vec![0; self.end.len()];
        f.seek(SeekFrom::Start(from)).with_path(path)?;
        if f.read_exact(&mut head).is_err() || head != self.end {
            self = fresh();
            f.seek(SeekFrom::Start(0)).with_path(path)?;
        }
        // Read a block at a time, counting whole lines as they come: the
        // whole file (a line per run) is read when nothing was read before.
        let mut rest = Vec::new();
        loop {
            let got = f.by_ref().take(ReadSoFar::BLOCK).read_to_end(&mut rest).with_path(path)?;
            let whole = rest.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            self.take(&rest[..whole]);
            rest.drain(..whole);
            if got == 0 {
                break;
            }
        }
        Ok((self, rest))
    }

    /// What the last view or process kept of the ledger of the org at
    /// `layout` ([`Saved`]). [`ReadSoFar::advance`] still checks that it is of
    /// the file as it is now.
    fn kept(layout: &Layout) -> Option<ReadSoFar> {
        let bytes = fsx::read_small(&layout.cache_dir().join(SAVED_FILE), SAVED_LIMIT).ok().flatten()?;
        postcard::from_bytes::<Saved>(&bytes).ok()?.into_read(&layout.ledger())
    }

    /// Keeps this read for the next view or process ([`ReadSoFar::kept`]),
    /// when it read at least [`SAVE_AFTER`] since `before` (or is of a
    /// shorter file). Derived, and only a shortcut: a failure is logged.
    fn keep_for_views(&self, before: u64, layout: &Layout) {
        if self.len.abs_diff(before) < SAVE_AFTER && !(self.len < before && self.len >= SAVE_AFTER) {
            return;
        }
        let saved_at = layout.cache_dir().join(SAVED_FILE);
        let saved = postcard::to_stdvec(&Saved::of(self)).map_err(|e| e.to_string());
        let written =
            saved.and_then(|b| fsx::write_derived(&layout.state_tmp(), &saved_at, &b).map_err(|e| e.to_string()));
        if let Err(e) = written {
            tracing::debug!(error = %e, "cannot keep the ledger's totals for the next view");
        }
        // Where earlier versions kept them, as JSON.
        let _ = std::fs::remove_file(saved_at.with_file_name("ledger.json"));
    }

    /// The totals with `rest`, the bytes after the last whole line, counted too.
    fn totals_with(&self, rest: &[u8]) -> Ledger {
        let mut out = self.totals.clone();
        out.add_lines(rest, self.lines);
        out
    }

    /// [`ReadSoFar::totals_with`], for the last time.
    fn into_totals_with(self, rest: &[u8]) -> Ledger {
        let mut out = self.totals;
        out.add_lines(rest, self.lines);
        out
    }
}

/// Where a view's read of the ledger is kept, in the cache folder.
const SAVED_FILE: &str = "ledger.bin";

/// A view's read of the ledger, kept in `org/state/cache/ledger.bin`
/// ([`Ledger::load_viewed`]; postcard, its names read in place: a large
/// org's is megabytes). Derived: a file that does not parse, or that no
/// longer matches the ledger, is read again from the ledger.
#[derive(Debug, Serialize, Deserialize)]
struct Saved<'a> {
    format: u32,
    dev: u64,
    ino: u64,
    len: u64,
    lines: usize,
    end: &'a [u8],
    /// By agent, in order.
    #[serde(borrow)]
    spent: Vec<(&'a str, f64)>,
    /// By agent and model, in order.
    #[serde(borrow)]
    by_model: Vec<(&'a str, &'a str, f64)>,
    /// By agent, in order.
    #[serde(borrow)]
    top_ups: Vec<(&'a str, f64)>,
    torn_lines: Vec<usize>,
    invalid_lines: Vec<usize>,
    last_charge_turn: u64,
    last_top_up_turn: u64,
}

impl<'a> Saved<'a> {
    /// Changes whenever what is saved changes meaning.
    const FORMAT: u32 = 2;

    fn of(r: &'a ReadSoFar) -> Saved<'a> {
        let t = &r.totals;
        Saved {
            format: Saved::FORMAT,
            dev: r.id.dev,
            ino: r.id.ino,
            len: r.len,
            lines: r.lines,
            end: &r.end,
            spent: t.spent.iter().map(|(a, c)| (&**a, *c)).collect(),
            by_model: t.by_model.iter().map(|((a, m), c)| (&**a, &**m, *c)).collect(),
            top_ups: t.top_ups.iter().map(|(a, c)| (&**a, *c)).collect(),
            torn_lines: t.torn_lines.clone(),
            invalid_lines: t.invalid_lines.clone(),
            last_charge_turn: t.last_charge_turn,
            last_top_up_turn: t.last_top_up_turn,
        }
    }

    /// The read it saved, when it is of this format and its amounts could be
    /// the ledger's.
    fn into_read(self, path: &Path) -> Option<ReadSoFar> {
        let amounts =
            self.spent.iter().chain(&self.top_ups).map(|(_, c)| c).chain(self.by_model.iter().map(|(_, _, c)| c));
        if self.format != Saved::FORMAT
            || self.end.len() > ReadSoFar::END
            || !amounts.into_iter().all(|c| c.is_finite())
        {
            return None;
        }
        let mut totals = Ledger {
            path: path.to_path_buf(),
            torn_lines: self.torn_lines,
            invalid_lines: self.invalid_lines,
            last_charge_turn: self.last_charge_turn,
            last_top_up_turn: self.last_top_up_turn,
            charges_from: u64::MAX,
            ..Ledger::default()
        };
        // Built from the lists, each in order: no search per entry.
        totals.spent = self.spent.into_iter().map(|(a, c)| (Arc::from(a), c)).collect();
        let top_ups: BTreeMap<_, _> = self.top_ups.into_iter().map(|(a, c)| (totals.name(a), c)).collect();
        totals.top_ups = top_ups;
        let by_model: BTreeMap<_, _> =
            self.by_model.into_iter().map(|(a, m, c)| ((totals.name(a), totals.model(m)), c)).collect();
        totals.by_model = by_model;
        let id = fsx::FileId { dev: self.dev, ino: self.ino };
        Some(ReadSoFar { id, len: self.len, lines: self.lines, end: self.end.to_vec(), totals })
    }
}

/// A view saves its read of the ledger when it read at least this much of it.
const SAVE_AFTER: u64 = if cfg!(test) { 1 } else { 64 * 1024 };

/// The largest saved read accepted (a few hundred bytes per agent).
const SAVED_LIMIT: u64 = 64 << 20;

/// The ledgers this process has read, by path (one org for a daemon).
static READ: std::sync::Mutex<Vec<ReadSoFar>> = std::sync::Mutex::new(Vec::new());

/// The ledger, read into totals.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    path: PathBuf,
    /// The keys below share their names ([`Ledger::name`]): an agent charged
    /// every turn is named in each of them.
    charged: HashSet<(u64, Arc<str>)>,
    spent: BTreeMap<Arc<str>, f64>,
    by_model: BTreeMap<(Arc<str>, Arc<str>), f64>,
    top_ups: BTreeMap<Arc<str>, f64>,
    /// The model keys of `by_model`.
    models: HashSet<Arc<str>>,
    /// Lines that do not parse (a torn write after a crash); skipped.
    pub torn_lines: Vec<usize>,
    /// Entries whose amount is not a valid amount ([`valid_amount`]: a hand
    /// edit); their amount is not counted (a charge still marks its (turn, agent)
    /// as charged). `fsck` reports them.
    pub invalid_lines: Vec<usize>,
    /// (turn, agent) keys charged more than once (a G5 violation; fsck reports it).
    pub duplicate_charges: Vec<(u64, String)>,
    last_charge_turn: u64,
    last_top_up_turn: u64,
    /// The first turn whose charges are kept for [`Ledger::has_charge`] (0: all).
    charges_from: u64,
    /// What the org's other nodes have spent ([`Ledger::with_elsewhere`]).
    elsewhere: f64,
}

impl Ledger {
    /// Reads the ledger (missing = empty).
    pub fn load(path: &Path) -> Result<Ledger, PathError> {
        let mut l = Ledger { path: path.to_path_buf(), ..Ledger::default() };
        // Bytes, not text: a line that is not UTF-8 (a damaged disk block, a
        // stray write) is a corrupt line like any other, skipped and counted;
        // it must not make the whole ledger, and so every turn, unreadable.
        let Some(bytes) = fsx::read_optional(path)? else { return Ok(l) };
        l.add_lines(&bytes, 0);
        Ok(l)
    }

    /// [`Ledger::load`] for a turn, `turn`, reading only what was appended
    /// since this process last read the file: the ledger grows by a line for
    /// every run, and a daemon that read it whole before each turn would read
    /// all of its history every second. The file is read whole again when it
    /// was replaced or shortened (a restore). Charges of turns before `turn`
    /// count in the totals, but [`Ledger::has_charge`] answers only for
    /// `turn` and later (a turn asks about itself), and `duplicate_charges`
    /// only among those: `fsck` reads the whole file.
    pub fn load_for_turn(layout: &Layout, turn: u64) -> Result<Ledger, PathError> {
        let path = layout.ledger();
        let path = path.as_path();
        let mut known = READ.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(mut f) = fsx::open_regular(std::fs::OpenOptions::new().read(true), path)? else {
            known.retain(|r| r.totals.path != path);
            return Ok(Ledger { path: path.to_path_buf(), ..Ledger::default() });
        };
        let meta = f.metadata().with_path(path)?;
        let at = known.iter().position(|r| r.totals.path == path);
        let first = at.is_none();
        // This process's first read starts where the last view or process
        // kept, or the ledger is read whole: a `lemming step` on its own
        // would read all of the org's history every turn. Not from a read
        // that counts a charge of `turn` or later: the turn asks about those
        // ([`Ledger::has_charge`]), and what is kept does not say.
        let mut read = at.map(|i| known.swap_remove(i)).unwrap_or_else(|| {
            ReadSoFar::kept(layout)
                .filter(|r| r.totals.last_charge_turn < turn)
                .unwrap_or_else(|| ReadSoFar::fresh(path, fsx::FileId::of(&meta)))
        });
        read.totals.charges_from = turn;
        read.totals.charged.retain(|(t, _)| *t >= turn);
        let before = read.len;
        let (read, rest) = read.advance(path, &mut f, &meta)?;
        if first {
            read.keep_for_views(before, layout);
        }
        let out = read.totals_with(&rest);
        known.push(read);
        Ok(out)
    }

    /// [`Ledger::load`] for people's views (`status`): the totals the last
    /// view read are kept in `org/state/cache/ledger.bin`, and only what was
    /// appended since is read (the whole file when it was replaced, shortened
    /// or rewritten). [`Ledger::has_charge`] answers `false` and
    /// `duplicate_charges` stays empty: `fsck` reads the whole file.
    pub fn load_viewed(layout: &Layout) -> Result<Ledger, PathError> {
        let path = layout.ledger();
        let Some(mut f) = fsx::open_regular(std::fs::OpenOptions::new().read(true), &path)? else {
            return Ok(Ledger { path, ..Ledger::default() });
        };
        let meta = f.metadata().with_path(&path)?;
        let mut read = ReadSoFar::kept(layout).unwrap_or_else(|| ReadSoFar::fresh(&path, fsx::FileId::of(&meta)));
        // No view asks whether a turn is charged: no charge is kept.
        read.totals.charges_from = u64::MAX;
        let before = read.len;
        let (read, rest) = read.advance(&path, &mut f, &meta)?;
        read.keep_for_views(before, layout);
        Ok(read.into_totals_with(&rest))
    }

    /// Counts the lines of `bytes`, the first of which is line `before + 1` of the file.
    fn add_lines(&mut self, bytes: &[u8], before: usize) {
        for (no, _, parsed) in parsed_lines(&String::from_utf8_lossy(bytes)) {
            match parsed {
                Ok(e) => {
                    if !e.valid() {
                        self.invalid_lines.push(before + no);
                    }
                    self.add(&e);
                }
                Err(_) => self.torn_lines.push(before + no),
            }
        }
    }

    fn add(&mut self, e: &Entry) {
        match e {
            Entry::Charge { turn, agent, model, cost, .. } => {
                self.last_charge_turn = self.last_charge_turn.max(*turn);
                let name = self.name(agent);
                if *turn >= self.charges_from && !self.charged.insert((*turn, name.clone())) {
                    self.duplicate_charges.push((*turn, agent.clone()));
                }
                if e.valid() {
                    let model = self.model(model);
                    *self.by_model.entry((name.clone(), model)).or_default() += cost;
                    *self.spent.entry(name).or_default() += cost;
                }
            }
            Entry::TopUp { agent, amount, turn, .. } => {
                self.last_top_up_turn = self.last_top_up_turn.max(*turn);
                if e.valid() {
                    let name = self.name(agent);
                    *self.top_ups.entry(name).or_default() += amount;
                }
            }
        }
    }

    /// `agent`, shared with the keys that name it already.
    fn name(&self, agent: &str) -> Arc<str> {
        match self.spent.get_key_value(agent).or_else(|| self.top_ups.get_key_value(agent)) {
            Some((name, _)) => name.clone(),
            None => agent.into(),
        }
    }

    /// `model`, shared with the keys that name it already (an org has a few).
    fn model(&mut self, model: &str) -> Arc<str> {
        if let Some(m) = self.models.get(model) {
            return m.clone();
        }
        let m: Arc<str> = model.into();
        self.models.insert(m.clone());
        m
    }

    /// Whether (turn, agent) is already charged.
    pub fn has_charge(&self, turn: u64, agent: &str) -> bool {
        self.charged.contains(&(turn, Arc::from(agent)))
    }

    /// An agent's balance, given its resume budget.
    pub fn balance(&self, agent: &str, budget: f64) -> Balance {
        let budget = budget + self.top_ups.get(agent).copied().unwrap_or(0.0);
        let spent = self.spent.get(agent).copied().unwrap_or(0.0);
        Balance { budget: credits(budget), spent: credits(spent), left: credits(budget - spent) }
    }

    /// Spend per model key for an agent.
    pub fn spent_by_model(&self, agent: &str) -> Vec<(String, f64)> {
        self.by_model
            .iter()
            .filter(|((a, _), _)| &**a == agent)
            .map(|((_, m), c)| (m.to_string(), credits(*c)))
            .collect()
    }

    /// Everything charged in this ledger, to every agent.
    pub fn total_spent(&self) -> f64 {
        credits(self.spent.values().fold(0.0, |sum, c| sum + c))
    }

    /// This ledger, knowing that the org's other nodes (`[cluster]`) have
    /// spent `spent` credits.
    pub fn with_elsewhere(mut self, spent: f64) -> Ledger {
        self.elsewhere = if valid_amount(spent) { spent } else { 0.0 };
        self
    }

    /// What the whole org has spent: this ledger's charges and the other
    /// nodes' (what an org-wide `budget` is compared with).
    pub fn org_spent(&self) -> f64 {
        credits(self.total_spent() + self.elsewhere)
    }

    /// Spend per model key, over every agent.
    pub fn spent_per_model(&self) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for ((_, model), cost) in &self.by_model {
            *out.entry(model.to_string()).or_default() += cost;
        }
        out.into_iter().map(|(m, c)| (m, credits(c))).collect()
    }

    /// The highest turn a charge names (a turn that at least began) and the
    /// highest turn a top-up names (a turn already committed when it was added);
    /// 0 when there is none. Used to recover a lost `turn.json`.
    pub fn last_turns(&self) -> (u64, u64) {
        (self.last_charge_turn, self.last_top_up_turn)
    }

    /// Appends entries in one durable write and records them in the totals.
    /// Charges already present are skipped.
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), PathError> {
        let mut new = Vec::new();
        for e in entries {
            if self.is_new(e) {
                self.add(e);
                new.push(e);
            }
        }
        append_entries(&self.path, new)
    }

    /// Appends entries in one durable write, leaving the totals as they were
    /// read: a turn writes its charges part by part, and its picks go on
    /// against the totals from its start. Charges already present are skipped.
    pub fn write(&self, entries: &[Entry]) -> Result<(), PathError> {
        append_entries(&self.path, entries.iter().filter(|e| self.is_new(e)))
    }

    /// Whether `e` is not a charge of a (turn, agent) charged already.
    fn is_new(&self, e: &Entry) -> bool {
        !matches!(e, Entry::Charge { turn, agent, .. } if self.has_charge(*turn, agent))
    }
}

/// Appends `entries` to the ledger at `path` as lines, in one durable write.
fn append_entries<'a>(path: &Path, entries: impl IntoIterator<Item = &'a Entry>) -> Result<(), PathError> {
    let mut lines = String::new();
    for e in entries {
        lines.push_str(&serde_json::to_string(e).expect("an entry always serializes"));
        lines.push('\n');
    }
    fsx::append_lines_durable(path, &lines)
}

/// Why a top-up was refused.
#[derive(Debug, thiserror::Error)]
pub enum TopUpError {
    /// Not a finite number from [`MIN_TOP_UP`] to [`MAX_CREDITS`].
    #[error("AMOUNT must be a number from {MIN_TOP_UP} to {MAX_CREDITS}, not {0:?}")]
    Amount(f64),
    /// The agent would hold more than [`MAX_CREDITS`].
    #[error("{agent} has {left} credits left; {amount} more would make {after}, and an agent may hold at most {MAX_CREDITS}")]
    TooMuch {
        /// The agent.
        agent: String,
        /// What it has left now.
        left: f64,
        /// The top-up asked for.
        amount: f64,
        /// What it would have.
        after: f64,
    },
    /// The ledger could not be read or written.
    #[error(transparent)]
    Io(#[from] PathError),
}

/// Adds `amount` credits to `agent`, whose resume gives it `budget`, durably
/// (the ledger is fsynced before this returns). Refuses an amount that is not a
/// number from [`MIN_TOP_UP`] to [`MAX_CREDITS`], or that would leave the
/// agent with more than [`MAX_CREDITS`]. A person does it: the audit log
/// records it (the agent, the amount and the outcome), refused or not.
pub fn top_up(
    layout: &crate::layout::Layout,
    agent: &str,
    budget: f64,
    amount: f64,
    turn: u64,
    at: DateTime<Utc>,
) -> Result<Entry, TopUpError> {
    let done = add_top_up(layout, agent, budget, amount, turn, at);
    if done.is_ok() {
        let kind = crate::events::EventKind::ToppedUp { agent: agent.to_string(), amount };
        crate::events::append_person(layout, turn, at, vec![kind]);
    }
    let what = serde_json::json!({ "agent": agent, "amount": amount });
    let outcome = done.as_ref().map(|_| ());
    crate::audit::record(layout, crate::audit::Entry::new(at, crate::audit::PERSON, "top_up", what, outcome));
    done
}

fn add_top_up(
    layout: &crate::layout::Layout,
    agent: &str,
    budget: f64,
    amount: f64,
    turn: u64,
    at: DateTime<Utc>,
) -> Result<Entry, TopUpError> {
    if !(amount >= MIN_TOP_UP && valid_amount(amount)) {
        return Err(TopUpError::Amount(amount));
    }
    let path = layout.ledger();
    let left = Ledger::load(&path)?.balance(agent, budget).left;
    let after = left + amount;
    if after > MAX_CREDITS {
        return Err(TopUpError::TooMuch { agent: agent.to_string(), left, amount, after });
    }
    let e = Entry::TopUp { agent: agent.to_string(), amount, turn, at };
    let dir = layout.state_dir();
    std::fs::create_dir_all(&dir).with_path(&dir)?;
    append_entries(&path, [&e])?;
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charge(turn: u64, agent: &str, cost: f64) -> Entry {
        Entry::Charge {
            turn,
            agent: agent.into(),
            model: "default".into(),
            input_tokens: 1,
            output_tokens: 1,
            cost,
            estimated: false,
            at: Utc::now(),
        }
    }

    #[test]
    fn balance_is_budget_plus_top_ups_minus_charges_and_replays_do_not_charge_twice() {
        let d = tempfile::tempdir().unwrap();
        let layout = crate::layout::Layout::new(d.path());
        let p = layout.ledger();
        std::fs::create_dir_all(layout.state_dir()).unwrap();
        let mut l = Ledger::load(&p).unwrap();
        l.append(&[charge(1, "a", 2.5), charge(1, "b", 1.0)]).unwrap();
        l.append(&[charge(1, "a", 2.5)]).unwrap();
        top_up(&layout, "a", 5.0, 10.0, 1, Utc::now()).unwrap();
        let l = Ledger::load(&p).unwrap();
        assert_eq!(l.balance("a", 5.0), Balance { budget: 15.0, spent: 2.5, left: 12.5 });
        assert_eq!(l.balance("b", 1.0).left, 0.0);
        assert_eq!(l.total_spent(), 3.5);
        assert_eq!(l.spent_per_model().into_iter().collect::<Vec<_>>(), vec![("default".to_string(), 3.5)]);
        assert!(l.duplicate_charges.is_empty());
        assert_eq!(std::fs::read_to_string(&p).unwrap().lines().count(), 3);
    }

    #[test]
    fn the_totals_hold_each_agent_s_and_model_s_name_once() {
        let d = tempfile::tempdir().unwrap();
        let layout = crate::layout::Layout::new(d.path());
        let p = layout.ledger();
        std::fs::create_dir_all(layout.state_dir()).unwrap();
        let mut l = Ledger::load(&p).unwrap();
        l.append(&[charge(1, "a", 1.0), charge(1, "b", 1.0), charge(2, "a", 1.0)]).unwrap();
        top_up(&layout, "a", 5.0, 10.0, 2, Utc::now()).unwrap();
        for l in [Ledger::load(&p).unwrap(), Ledger::load_for_turn(&layout, 1).unwrap()] {
            let (a, _) = l.spent.get_key_value("a").unwrap();
            let (top_up, _) = l.top_ups.get_key_value("a").unwrap();
            let models: Vec<&Arc<str>> = l.by_model.keys().map(|(_, m)| m).collect();
            assert!(Arc::ptr_eq(a, top_up) && Arc::ptr_eq(models[0], models[1]), "{models:?}");
            assert!(l.by_model.keys().filter(|(n, _)| &**n == "a").all(|(n, _)| Arc::ptr_eq(n, a)));
            assert!(l.charged.iter().filter(|(_, n)| &**n == "a").all(|(_, n)| Arc::ptr_eq(n, a)));
            assert_eq!(l.charged.len(), 3);
            assert!(l.has_charge(2, "a") && !l.has_charge(2, "b"));
        }
    }

    #[test]
    fn a_turn_writes_its_charges_against_the_totals_it_started_with() {
        let d = tempfile::tempdir().unwrap();
        let layout = crate::layout::Layout::new(d.path());
        let p = layout.ledger();
        std::fs::create_dir_all(layout.state_dir()).unwrap();
        Ledger::load(&p).unwrap().append(&[charge(1, "a", 1.0)]).unwrap();
        let l = Ledger::load_for_turn(&layout, 1).unwrap();
        // A replayed charge is skipped; the others are written, and the totals stay.
        l.write(&[charge(1, "a", 1.0), charge(1, "b", 2.0)]).unwrap();
        l.write(&[charge(1, "c", 0.5)]).unwrap();
        assert_eq!((l.balance("b", 5.0).spent, l.has_charge(1, "b")), (0.0, false));
        let whole = Ledger::load(&p).unwrap();
        assert_eq!(
            (whole.balance("a", 5.0).spent, whole.balance("b", 5.0).spent, whole.total_spent()),
            (1.0, 2.0, 3.5)
        );
        assert!(whole.duplicate_charges.is_empty());
    }

    #[test]
    fn a_turn_reads_only_what_was_appended_since_and_agrees_with_a_whole_read() {
        use std::io::Write;
        let d = tempfile::tempdir().unwrap();
        let layout = crate::layout::Layout::new(d.path());
        let p = layout.ledger();
        std::fs::create_dir_all(layout.state_dir()).unwrap();
        let same = |turn: u64| {
            let (part, whole) = (Ledger::load_for_turn(&layout, turn).unwrap(), Ledger::load(&p).unwrap());
            // A view reads from where the last view stopped, kept on disk.
            let viewed = Ledger::load_viewed(&layout).unwrap();
            for l in [&part, &viewed] {
                for agent in ["a", "b"] {
                    assert_eq!(l.balance(agent, 10.0), whole.balance(agent, 10.0), "{agent} on turn {turn}");
                }
                assert_eq!(l.spent_per_model(), whole.spent_per_model());
                assert_eq!(l.last_turns(), whole.last_turns());
                assert_eq!((&l.torn_lines, &l.invalid_lines), (&whole.torn_lines, &whole.invalid_lines));
            }
            part
        };
        same(1);
        Ledger::load(&p).unwrap().append(&[charge(1, "a", 1.0), charge(1, "b", 2.0)]).unwrap();
        assert!(same(1).has_charge(1, "a"));
        // A line being written (no newline yet) counts as torn, until it is whole.
        let append = |text: &str| std::fs::OpenOptions::new().append(true).open(&p).unwrap().write_all(text.as_bytes());
        append(r#"{"kind":"charge","turn":2,"agent":"a","model":"default","#).unwrap();
        assert_eq!(same(2).torn_lines, [3]);
        append(r#""input_tokens":1,"output_tokens":1,"cost":0.5,"at":"2026-01-01T00:00:00Z"}"#).unwrap();
        append("\n").unwrap();
        let l = same(2);
        assert!(l.torn_lines.is_empty() && l.has_charge(2, "a"));
        assert!(!l.has_charge(1, "a"), "a turn asks only about itself and later turns");
        top_up(&layout, "b", 1.0, 10.0, 2, Utc::now()).unwrap();
        let mut invalid = charge(3, "a", 0.0);
        if let Entry::Charge { cost, .. } = &mut invalid {
            *cost = -1.0;
        }
        Ledger::load(&p).unwrap().append(&[charge(3, "b", 0.25), invalid]).unwrap();
        assert_eq!(same(3).invalid_lines, [6]);
        // Only the new bytes are read: an edit of an earlier line in place is
        // not seen (a whole read sees it), while a replaced file is read whole.
        std::os::unix::fs::FileExt::write_at(&std::fs::File::options().write(true).open(&p).unwrap(), b"9", {
            let text = std::fs::read_to_string(&p).unwrap();
            text.find("\"cost\":1.0").unwrap() as u64 + 7
        })
        .unwrap();
        assert_eq!(Ledger::load(&p).unwrap().balance("a", 10.0).spent, 9.5);
        assert_eq!(Ledger::load_for_turn(&layout, 3).unwrap().balance("a", 10.0).spent, 1.5);
        assert_eq!(Ledger::load_viewed(&layout).unwrap().balance("a", 10.0).spent, 1.5);
        std::fs::remove_file(&p).unwrap();
        Ledger::load(&p).unwrap().append(&[charge(4, "b", 3.0)]).unwrap();
        assert_eq!(same(4).balance("a", 10.0).spent, 0.0);
        // So is one rewritten in place, longer than before (the same inode).
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, format!("{}{text}", text.replace("\"b\"", "\"a\""))).unwrap();
        assert_eq!(same(5).balance("a", 10.0).spent, 3.0);
    }

    #[test]
    fn a_process_first_turn_starts_where_the_last_view_kept_unless_it_counted_the_turn() {
        let d = tempfile::tempdir().unwrap();
        let layout = crate::layout::Layout::new(d.path());
        std::fs::create_dir_all(layout.state_tmp()).unwrap();
        let p = layout.ledger();
        let forget = || READ.lock().unwrap().retain(|r| r.totals.path != p);
        let kept = layout.cache_dir().join(SAVED_FILE);
        // A total changed in what was kept shows only when a read starts from it.
        let mark = || {
            let good = std::fs::read(&kept).unwrap();
            let mut v: Saved = postcard::from_bytes(&good).unwrap();
            v.spent.iter_mut().for_each(|(_, c)| *c += 100.0);
            std::fs::write(&kept, postcard::to_stdvec(&v).unwrap()).unwrap();
        };
        Ledger::load(&p).unwrap().append(&[charge(1, "a", 1.0), charge(2, "b", 2.0)]).unwrap();
        Ledger::load_viewed(&layout).unwrap();
        mark();
        Ledger::load(&p).unwrap().append(&[charge(3, "a", 1.0)]).unwrap();
        forget();
        let l = Ledger::load_for_turn(&layout, 3).unwrap();
        assert_eq!(l.total_spent(), 204.0, "started from what the view kept");
        assert!(l.has_charge(3, "a") && !l.has_charge(2, "b"), "charges of the turn are read from the file");
        // The first read of a process keeps what it read for the next one.
        let v = std::fs::read(&kept).unwrap();
        let v: Saved = postcard::from_bytes(&v).unwrap();
        assert_eq!((v.len, v.last_charge_turn), (std::fs::metadata(&p).unwrap().len(), 3));
        // What was kept counts a charge of turn 3: a turn 3 run again cannot
        // ask it whether an agent was charged, and reads the whole ledger.
        mark();
        forget();
        let again = Ledger::load_for_turn(&layout, 3).unwrap();
        assert_eq!(again.total_spent(), 4.0);
        assert!(again.has_charge(3, "a"));
        // A later turn starts from it.
        mark();
        forget();
        assert!(Ledger::load_for_turn(&layout, 4).unwrap().total_spent() > 100.0);
    }

    #[test]
    fn a_view_reads_the_whole_ledger_when_what_it_kept_does_not_match() {
        let d = tempfile::tempdir().unwrap();
        let layout = crate::layout::Layout::new(d.path());
        std::fs::create_dir_all(layout.state_dir()).unwrap();
        let p = layout.ledger();
        Ledger::load(&p).unwrap().append(&[charge(1, "a", 1.0), charge(1, "b", 2.0)]).unwrap();
        assert_eq!(Ledger::load_viewed(&layout).unwrap().total_spent(), 3.0);
        let kept = layout.cache_dir().join(SAVED_FILE);
        let good = std::fs::read(&kept).expect("a view keeps what it read");
        let with = |f: &dyn Fn(&mut Saved)| {
            let mut v: Saved = postcard::from_bytes(&good).unwrap();
            f(&mut v);
            std::fs::write(&kept, postcard::to_stdvec(&v).unwrap()).unwrap();
            Ledger::load_viewed(&layout).unwrap().total_spent()
        };
        // What it kept is used: a changed total shows (nothing else reads it).
        assert_eq!(with(&|v| v.spent[0] = ("a", 5.0)), 7.0);
        // Kept of another file, another format, or longer than the file: read whole.
        assert_eq!(with(&|v| v.ino = 1), 3.0);
        assert_eq!(with(&|v| v.format = 99), 3.0);
        assert_eq!(with(&|v| v.len = 1_000_000), 3.0);
        assert_eq!(with(&|v| v.spent[1].1 = f64::NAN), 3.0, "not an amount");
        // Ending in other bytes than the file has there: read whole.
        assert_eq!(with(&|v| v.end = b"other bytes"), 3.0);
        for junk in [b"".as_slice(), b"{", b"\x02\xff\xff", &[0xff; 64]] {
            std::fs::write(&kept, junk).unwrap();
            assert_eq!(Ledger::load_viewed(&layout).unwrap().total_spent(), 3.0, "{junk:?}");
        }
        std::fs::remove_dir_all(layout.cache_dir()).unwrap();
        assert_eq!(Ledger::load_viewed(&layout).unwrap().total_spent(), 3.0);
    }

    #[test]
    fn torn_lines_are_skipped_and_counted() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("ledger.jsonl");
        std::fs::write(
            &p,
            "{\"kind\":\"top_up\",\"agent\":\"a\",\"amount\":1.0,\"at\":\"2026-01-01T00:00:00Z\"}\n{\"kind\":\"cha",
        )
        .unwrap();
        let l = Ledger::load(&p).unwrap();
        assert_eq!(l.torn_lines, vec![2]);
        assert_eq!(l.balance("a", 0.0).left, 1.0);
    }

    #[test]
    fn a_line_that_is_not_utf8_is_skipped_not_fatal() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("ledger.jsonl");
        let mut bytes =
            b"{\"kind\":\"top_up\",\"agent\":\"a\",\"amount\":1.0,\"at\":\"2026-01-01T00:00:00Z\"}\n".to_vec();
        bytes.extend_from_slice(b"\xff\xfe garbage\n");
        bytes.extend_from_slice(serde_json::to_string(&charge(1, "a", 0.25)).unwrap().as_bytes());
        bytes.push(b'\n');
        std::fs::write(&p, bytes).unwrap();
        let l = Ledger::load(&p).unwrap();
        assert_eq!(l.torn_lines, vec![2]);
        assert_eq!(l.balance("a", 0.0), Balance { budget: 1.0, spent: 0.25, left: 0.75 });
    }

    #[test]
    fn top_ups_are_finite_positive_and_bounded() {
        let d = tempfile::tempdir().unwrap();
        let layout = crate::layout::Layout::new(d.path());
        let p = layout.ledger();
        for bad in [0.0, -1.0, 1e-320, 0.00001, f64::NAN, f64::INFINITY, 1e308, MAX_CREDITS * 2.0] {
            assert!(
                matches!(top_up(&layout, "a", 100.0, bad, 0, Utc::now()), Err(TopUpError::Amount(_))),
                "{bad} was accepted"
            );
        }
        top_up(&layout, "a", 100.0, MAX_CREDITS - 100.0, 0, Utc::now()).unwrap();
        let e = top_up(&layout, "a", 100.0, 1.0, 0, Utc::now()).unwrap_err();
        assert!(matches!(e, TopUpError::TooMuch { .. }), "{e}");
        assert!(e.to_string().contains("at most 1000000000000"), "{e}");
        let l = Ledger::load(&p).unwrap();
        assert_eq!(l.balance("a", 100.0).left, MAX_CREDITS);
        // An agent in debt may be topped up by more than it owes.
        let mut l = Ledger::load(&p).unwrap();
        l.append(&[charge(1, "b", 5.0)]).unwrap();
        top_up(&layout, "b", 1.0, 2.0, 1, Utc::now()).unwrap();
        assert_eq!(Ledger::load(&p).unwrap().balance("b", 1.0).left, -2.0);
    }

    /// A top-up that is done is an event for the live stream; a refused one is not.
    #[test]
    fn a_top_up_appends_its_event() {
        let d = tempfile::tempdir().unwrap();
        let layout = crate::layout::Layout::new(d.path());
        top_up(&layout, "a", 1.0, 2.5, 3, Utc::now()).unwrap();
        top_up(&layout, "a", 1.0, -1.0, 3, Utc::now()).unwrap_err();
        let events: Vec<crate::events::Event> =
            std::fs::read_to_string(layout.events()).unwrap().lines().filter_map(crate::events::Event::parse).collect();
        let kinds: Vec<_> = events.into_iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [crate::events::EventKind::ToppedUp { agent: "a".into(), amount: 2.5 }]);
    }

    #[test]
    fn every_top_up_is_in_the_audit_log_refused_or_not() {
        let d = tempfile::tempdir().unwrap();
        let layout = crate::layout::Layout::new(d.path());
        top_up(&layout, "a", 1.0, 2.5, 3, Utc::now()).unwrap();
        let refused = top_up(&layout, "a", 1.0, -1.0, 3, Utc::now()).unwrap_err();
        let got: Vec<_> =
            crate::audit::read(&layout).unwrap().into_iter().map(|e| (e.who, e.action, e.what, e.outcome)).collect();
        assert_eq!(
            got,
            [
                ("person".into(), "top_up".into(), serde_json::json!({"agent": "a", "amount": 2.5}), "ok".into()),
                (
                    "person".into(),
                    "top_up".into(),
                    serde_json::json!({"agent": "a", "amount": -1.0}),
                    refused.to_string()
                ),
            ]
        );
    }

    #[test]
    fn hand_edited_amounts_beyond_the_bound_are_not_counted() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("ledger.jsonl");
        let line = |amount: &str| {
            format!("{{\"kind\":\"top_up\",\"agent\":\"a\",\"amount\":{amount},\"at\":\"2026-01-01T00:00:00Z\"}}\n")
        };
        std::fs::write(&p, line("1e308") + &line("1e308") + &line("-3.0") + &line("2.0")).unwrap();
        let l = Ledger::load(&p).unwrap();
        assert_eq!(l.invalid_lines, vec![1, 2, 3]);
        assert_eq!(l.balance("a", 1.0), Balance { budget: 3.0, spent: 0.0, left: 3.0 });
    }

    #[test]
    fn totals_of_nothing_are_a_positive_zero() {
        let d = tempfile::tempdir().unwrap();
        let l = Ledger::load(&d.path().join("ledger.jsonl")).unwrap();
        let b = l.balance("a", 0.0);
        for x in [l.total_spent(), b.budget, b.spent, b.left] {
            assert!(x.is_sign_positive(), "{x:?}");
            assert_eq!(format!("{x:.4}"), "0.0000");
        }
        assert_eq!(serde_json::to_string(&b).unwrap(), r#"{"budget":0.0,"spent":0.0,"left":0.0}"#);
        assert_eq!(format!("{:.4}", credits(-0.0)), "0.0000");
        assert_eq!(bounded_cost(f64::NAN), 0.0);
        assert_eq!(bounded_cost(f64::INFINITY), MAX_CREDITS);
        assert!(bounded_cost(-0.0).is_sign_positive());
    }

    #[test]
    fn a_ledger_that_is_not_a_regular_file_is_an_error_naming_it_not_a_hang() {
        use std::os::unix::ffi::OsStrExt;
        let d = tempfile::tempdir().unwrap();
        assert!(Ledger::load(&d.path().join("missing.jsonl")).unwrap().total_spent() == 0.0);
        let p = d.path().join("ledger.jsonl");
        let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let (tx, rx) = std::sync::mpsc::channel();
        let fifo = p.clone();
        std::thread::spawn(move || tx.send(Ledger::load(&fifo).map(|_| ())));
        let e = rx.recv_timeout(std::time::Duration::from_secs(10)).expect("loading blocked on a FIFO").unwrap_err();
        assert_eq!(e.path, p);
        assert!(e.to_string().contains("FIFO"), "{e}");
    }
}
