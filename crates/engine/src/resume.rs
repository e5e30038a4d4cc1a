//! `agents/<name>/resume.toml`: parse into raw structs with spans, then validate
//! into a [`Resume`]. Checks that need the whole org (known agents, model keys)
//! are done by `org.rs` with the spans kept here.

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::error::Diagnostic;
use crate::name::{AgentName, ENGINE, HUMAN, NAME_RULE};

/// When an agent runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Due on turns where `turn % every == offset % every`.
    pub every: u64,
    /// See `every`.
    pub offset: u64,
    /// Whether the agent needs unread mail to run.
    pub wake: Wake,
}

impl Schedule {
    /// Whether the schedule fires on `turn`.
    pub fn fires(&self, turn: u64) -> bool {
        turn % self.every == self.offset % self.every
    }
}

impl Default for Schedule {
    fn default() -> Schedule {
        Schedule { every: 1, offset: 0, wake: Wake::Mail }
    }
}

/// `wake` in `[schedule]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Wake {
    /// Runs only with unread mail.
    Mail,
    /// Runs on every due turn.
    Always,
}

/// Who an agent may write to or read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// `"*"`.
    Anyone,
    /// The listed agents.
    Only(BTreeSet<AgentName>),
}

impl Access {
    /// Whether `name` is allowed.
    pub fn allows(&self, name: &str) -> bool {
        match self {
            Access::Anyone => true,
            Access::Only(set) => set.contains(name),
        }
    }

    /// The list as written (`*` for anyone).
    pub fn display(&self) -> String {
        match self {
            Access::Anyone => "*".into(),
            Access::Only(set) if set.is_empty() => "(nobody)".into(),
            Access::Only(set) => set.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", "),
        }
    }
}

/// A validated resume.
#[derive(Debug, Clone, PartialEq)]
pub struct Resume {
    /// The agent's name (equal to its folder).
    pub name: AgentName,
    /// A short title.
    pub title: String,
    /// What the agent is for.
    pub description: String,
    /// The model key; `None` only for `human`.
    pub model: Option<String>,
    /// The agent's instructions, put in its prompt.
    pub instructions: String,
    /// When it runs.
    pub schedule: Schedule,
    /// Whom it may write to.
    pub send_to: Access,
    /// Whom it accepts mail from.
    pub read_from: Access,
    /// Tool names (reserved: tools are not built yet).
    pub tools: Vec<String>,
    /// Its starting credits.
    pub credits: f64,
}

/// A name that refers to something elsewhere in the org, kept with its span for later checks.
#[derive(Debug, Clone)]
pub struct Reference {
    /// `model`, `send_to` or `read_from`.
    pub field: &'static str,
    /// The name written.
    pub value: String,
    /// Where in the file.
    pub span: Range<usize>,
}

/// A loaded resume file: the resume, its text and the references to check against the org.
#[derive(Debug, Clone)]
pub struct ResumeFile {
    /// The file.
    pub path: PathBuf,
    /// Its text.
    pub text: String,
    /// The validated resume.
    pub resume: Resume,
    /// Names to check against the org.
    pub refs: Vec<Reference>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResume {
    name: Spanned<String>,
    #[serde(default)]
    title: String,
    #[serde(default)]
    description: String,
    model: Option<Spanned<String>>,
    #[serde(default)]
    instructions: Option<Spanned<String>>,
    #[serde(default)]
    schedule: RawSchedule,
    #[serde(default)]
    permissions: RawPermissions,
    #[serde(default)]
    budget: RawBudget,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    #[serde(default = "one")]
    every: Spanned<i64>,
    #[serde(default = "zero")]
    offset: Spanned<i64>,
    #[serde(default = "mail")]
    wake: Wake,
}

impl Default for RawSchedule {
    fn default() -> Self {
        RawSchedule { every: one(), offset: zero(), wake: Wake::Mail }
    }
}

fn one() -> Spanned<i64> {
    Spanned::new(0..0, 1)
}
fn zero() -> Spanned<i64> {
    Spanned::new(0..0, 0)
}
fn mail() -> Wake {
    Wake::Mail
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPermissions {
    #[serde(default)]
    send_to: Vec<Spanned<String>>,
    #[serde(default)]
    read_from: Vec<Spanned<String>>,
    #[serde(default)]
    tools: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBudget {
    #[serde(default = "default_credits")]
    credits: Spanned<f64>,
}

impl Default for RawBudget {
    fn default() -> Self {
        RawBudget { credits: default_credits() }
    }
}

fn default_credits() -> Spanned<f64> {
    Spanned::new(0..0, 100.0)
}

fn span(r: Range<usize>) -> Option<Range<usize>> {
    (r.end > 0).then_some(r)
}

/// The largest `resume.toml` accepted, in bytes (256 KiB).
pub const MAX_RESUME_BYTES: u64 = 256 * 1024;

/// The longest `instructions` accepted, in bytes (64 KiB, about 16,000 tokens).
pub const MAX_INSTRUCTIONS_BYTES: usize = 64 * 1024;

/// Parses and validates one resume. `folder` is the agent's folder name.
/// Returns every problem found in the file.
pub fn load(path: &Path, folder: &str) -> Result<ResumeFile, Vec<Diagnostic>> {
    let text = read_config(path, MAX_RESUME_BYTES).map_err(|ds| {
        ds.into_iter()
            .map(|d| match d.help {
                Some(_) => d,
                None => d.help("every folder under agents/ needs a readable resume.toml"),
            })
            .collect::<Vec<_>>()
    })?;
    parse(path, text, folder)
}

/// Reads a config file of at most `limit` bytes as text. Whatever the path
/// names, this never blocks (a FIFO) and never reads more than `limit + 1`
/// bytes (a device, a file growing as it is read); too big a file is refused
/// with its size and the limit. The error is the one problem found.
pub fn read_config(path: &Path, limit: u64) -> Result<String, Vec<Diagnostic>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let cannot = |e: std::io::Error| vec![Diagnostic::file(path, format!("cannot read: {e}"))];
    let too_big = |size: String| {
        vec![Diagnostic::file(path, format!("the file is {size} bytes; the limit is {limit} bytes"))
            .help("shorten it (the size limits of config files are in docs/operating.md)")]
    };
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).map_err(cannot)?;
    let meta = file.metadata().map_err(cannot)?;
    if !meta.is_file() {
        return Err(vec![Diagnostic::file(path, "not a regular file").help("replace it with a plain text file")]);
    }
    if meta.len() > limit {
        return Err(too_big(meta.len().to_string()));
    }
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes).map_err(cannot)?;
    if bytes.len() as u64 > limit {
        return Err(too_big(format!("more than {limit}")));
    }
    String::from_utf8(bytes).map_err(|e| {
        vec![Diagnostic::file(path, format!("not UTF-8 text: invalid byte at offset {}", e.utf8_error().valid_up_to()))
            .help("save the file as UTF-8")]
    })
}

/// Validates resume text (see [`load`]).
pub fn parse(path: &Path, text: String, folder: &str) -> Result<ResumeFile, Vec<Diagnostic>> {
    let raw: RawResume = match toml::from_str(&text) {
        Ok(r) => r,
        Err(e) => return Err(vec![Diagnostic::from_toml(path, &text, &e)]),
    };
    let mut errs = Vec::new();
    let at = |s: Range<usize>, m: String| Diagnostic::at(path, &text, span(s), m);

    let name = match AgentName::new(raw.name.get_ref()) {
        Ok(n) => Some(n),
        Err(e) => {
            errs.push(at(raw.name.span(), e.to_string()).help(format!("rename the agent; {NAME_RULE}")));
            None
        }
    };
    if let Some(n) = &name {
        if n.as_str() == ENGINE {
            errs.push(
                at(raw.name.span(), format!("`{ENGINE}` is reserved for the engine")).help("choose another name"),
            );
        } else if n.as_str() != folder {
            errs.push(
                at(raw.name.span(), format!("name `{n}` differs from its folder `{folder}`"))
                    .help(format!("set name = \"{folder}\" or rename the folder to agents/{n}")),
            );
        }
    }
    let is_human = raw.name.get_ref() == HUMAN;
    let mut refs = Vec::new();
    match (&raw.model, is_human) {
        (Some(m), true) => errs.push(
            at(m.span(), "`human` is driven by people, not a model".into())
                .help("remove the `model` line from the human's resume"),
        ),
        (None, false) => errs
            .push(Diagnostic::file(path, "missing `model`").help("add model = \"default\" (a key in org/models.toml)")),
        (Some(m), false) => refs.push(Reference { field: "model", value: m.get_ref().clone(), span: m.span() }),
        (None, true) => {}
    }

    let every = *raw.schedule.every.get_ref();
    if every < 1 {
        errs.push(
            at(raw.schedule.every.span(), format!("`every` must be 1 or more, not {every}"))
                .help("every = 1 runs the agent on every turn"),
        );
    }
    let offset = *raw.schedule.offset.get_ref();
    if offset < 0 {
        errs.push(
            at(raw.schedule.offset.span(), format!("`offset` must be 0 or more, not {offset}"))
                .help("offset = 0 is the usual value"),
        );
    }
    let credits = *raw.budget.credits.get_ref();
    if !crate::ledger::valid_amount(credits) {
        errs.push(
            at(
                raw.budget.credits.span(),
                format!("`credits` must be a number from 0 to {}, not {credits:?}", crate::ledger::MAX_CREDITS),
            )
            .help("credits = 100.0"),
        );
    }

    if let Some(i) = raw.instructions.as_ref().filter(|i| i.get_ref().len() > MAX_INSTRUCTIONS_BYTES) {
        errs.push(
            at(
                i.span(),
                format!("`instructions` is {} bytes; the limit is {MAX_INSTRUCTIONS_BYTES} bytes", i.get_ref().len()),
            )
            .help("shorten the instructions: put reference material in memory or in files the agent reads"),
        );
    }

    let mut access = |field: &'static str, list: &[Spanned<String>], errs: &mut Vec<Diagnostic>| {
        if list.iter().any(|s| s.get_ref() == "*") {
            return Access::Anyone;
        }
        let mut set = BTreeSet::new();
        for s in list {
            match AgentName::new(s.get_ref()) {
                Ok(n) => {
                    refs.push(Reference { field, value: n.to_string(), span: s.span() });
                    set.insert(n);
                }
                Err(e) => {
                    errs.push(at(s.span(), format!("in `{field}`: {e}")).help("list agent names, or \"*\" for anyone"))
                }
            }
        }
        Access::Only(set)
    };
    let send_to = access("send_to", &raw.permissions.send_to, &mut errs);
    let read_from = access("read_from", &raw.permissions.read_from, &mut errs);

    if !errs.is_empty() {
        return Err(errs);
    }
    let resume = Resume {
        name: name.expect("checked above"),
        title: raw.title,
        description: raw.description,
        model: raw.model.map(|m| m.into_inner()),
        instructions: raw.instructions.map(Spanned::into_inner).unwrap_or_default(),
        schedule: Schedule { every: every as u64, offset: offset as u64, wake: raw.schedule.wake },
        send_to,
        read_from,
        tools: raw.permissions.tools,
        credits,
    };
    Ok(ResumeFile { path: path.to_path_buf(), text, resume, refs })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str, folder: &str) -> Result<ResumeFile, Vec<Diagnostic>> {
        parse(Path::new("agents/x/resume.toml"), text.to_string(), folder)
    }

    #[test]
    fn schedule_fires_on_every_and_offset() {
        let s = Schedule { every: 3, offset: 1, wake: Wake::Mail };
        let fired: Vec<u64> = (1..=7).filter(|t| s.fires(*t)).collect();
        assert_eq!(fired, vec![1, 4, 7]);
        assert!((1..5).all(|t| Schedule::default().fires(t)));
    }

    #[test]
    fn parses_a_full_resume() {
        let r = p(
            "name = \"planner\"\nmodel = \"default\"\n[schedule]\nevery = 2\nwake = \"always\"\n[permissions]\nsend_to = [\"manager\"]\nread_from = [\"*\"]\n[budget]\ncredits = 5.0\n",
            "planner",
        )
        .unwrap();
        assert_eq!(r.resume.schedule, Schedule { every: 2, offset: 0, wake: Wake::Always });
        assert!(r.resume.send_to.allows("manager") && !r.resume.send_to.allows("hr"));
        assert_eq!(r.resume.read_from, Access::Anyone);
        assert_eq!(r.refs.len(), 2);
    }

    #[test]
    fn reports_every_problem_with_positions() {
        let errs = p(
            "name = \"Planner\"\nmodel = \"default\"\n[schedule]\nevery = 0\n[permissions]\nsend_to = [\"../x\"]\n[budget]\ncredits = -1.0\n",
            "planner",
        )
        .unwrap_err();
        let lines: Vec<_> = errs.iter().map(|d| d.line).collect();
        assert_eq!(lines, vec![Some(1), Some(4), Some(8), Some(6)], "{errs:?}");
    }

    #[test]
    fn syntax_errors_and_unknown_fields_have_lines() {
        let errs = p("name = \"x\"\nmodel = default\n", "x").unwrap_err();
        assert_eq!(errs[0].line, Some(2));
        let errs = p("name = \"x\"\nmodel = \"d\"\nmodle = 1\n", "x").unwrap_err();
        assert_eq!(errs[0].line, Some(3));
        assert!(errs[0].message.contains("unknown field"), "{}", errs[0]);
    }

    #[test]
    fn human_has_no_model_and_names_match_folders() {
        assert!(p("name = \"human\"\n", "human").is_ok());
        assert!(p("name = \"human\"\nmodel = \"default\"\n", "human").is_err());
        let errs = p("name = \"a\"\nmodel = \"m\"\n", "b").unwrap_err();
        assert!(errs[0].message.contains("differs from its folder"));
        assert!(p("name = \"lemming\"\nmodel = \"m\"\n", "lemming").is_err());
    }
}
