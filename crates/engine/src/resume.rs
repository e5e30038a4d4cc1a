//! `agents/<name>/resume.toml`: parse into raw structs with spans, then validate
//! into a [`Resume`]. Checks that need the whole org (known agents, model keys)
//! are done by `org.rs` with the spans kept here.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use crate::config::{Doc, MAX_CREDITS};
use crate::error::Diagnostic;
use crate::name::{AgentName, Names, ENGINE, HUMAN, NAME_RULE};

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
    Only(NameList),
}

impl Access {
    /// Whether `name` is allowed.
    pub fn allows(&self, name: &str) -> bool {
        match self {
            Access::Anyone => true,
            Access::Only(list) => list.contains(name),
        }
    }

    /// The agents allowed (`*` for anyone).
    pub fn display(&self) -> String {
        match self {
            Access::Anyone => "*".into(),
            Access::Only(list) if list.is_empty() => "(nobody)".into(),
            Access::Only(list) => list.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", "),
        }
    }
}

/// Agent names in order, each once: a `send_to` or `read_from` list as
/// resolved. Made once and shared by clones: an agent that writes to the
/// agents it reads from holds one list (see [`Resume::share_lists`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameList(Arc<[AgentName]>);

impl NameList {
    /// `names`, sorted, each once.
    pub fn new(names: impl IntoIterator<Item = AgentName>) -> NameList {
        let mut v: Vec<AgentName> = names.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        NameList(v.into())
    }

    /// Whether `name` is in the list.
    pub fn contains(&self, name: &str) -> bool {
        self.0.binary_search_by(|n| n.as_str().cmp(name)).is_ok()
    }

    /// The names, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, AgentName> {
        self.0.iter()
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it names nobody.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `other` is this very list, not an equal copy.
    #[cfg(test)]
    pub(crate) fn is_shared_with(&self, other: &NameList) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl<'a> IntoIterator for &'a NameList {
    type Item = &'a AgentName;
    type IntoIter = std::slice::Iter<'a, AgentName>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// A `send_to` or `read_from` list as written in the file (`@group`, `*` and
/// names, each once), for people. It is kept only when it says more than the
/// list it resolves to: most lists name agents, in order, and are shown from
/// the resolved list.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Written(Option<Box<[String]>>);

impl Written {
    /// `written`, the list in the file, which resolved to `access`.
    pub fn of(written: Vec<String>, access: &Access) -> Written {
        let same = match access {
            Access::Anyone => written == ["*"],
            Access::Only(list) => written.len() == list.len() && written.iter().zip(list).all(|(w, n)| w == n.as_str()),
        };
        Written((!same).then(|| written.into_boxed_slice()))
    }

    /// The list as written, given `access`, the list it resolved to.
    pub fn list(&self, access: &Access) -> Vec<String> {
        match (&self.0, access) {
            (Some(written), _) => written.to_vec(),
            (None, Access::Anyone) => vec!["*".into()],
            (None, Access::Only(list)) => list.iter().map(|n| n.to_string()).collect(),
        }
    }
}

/// A `send_to` or `read_from` list as written (`@group`, `*` and names), for people.
pub fn show_written(list: &[String]) -> String {
    if list.is_empty() {
        "(nobody)".into()
    } else {
        list.join(", ")
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
    /// Whom it may write to: the agents named, and the members of the groups
    /// named (resolved by the org when it loads).
    pub send_to: Access,
    /// Whom it accepts mail from, resolved like `send_to`.
    pub read_from: Access,
    /// `send_to` as written in the file (see [`Resume::send_to_written`]).
    pub send_to_written: Written,
    /// `read_from` as written in the file (see [`Resume::read_from_written`]).
    pub read_from_written: Written,
    /// The tools it may call (`permissions.tools`).
    pub tools: Vec<String>,
    /// The programs `run_command` may run for it (`permissions.commands`).
    pub commands: Vec<String>,
    /// What its file tools may do in the org's `shared/` folder (`permissions.shared`).
    pub shared: Shared,
    /// Its starting credits.
    pub credits: f64,
    /// The node of `[cluster]` it runs on (`None`: the first node, or the
    /// one machine of an org without `[cluster]`).
    pub node: Option<AgentName>,
}

impl Resume {
    /// `send_to` as written in the file (`@group`, `*` and names), for display.
    pub fn send_to_written(&self) -> Vec<String> {
        self.send_to_written.list(&self.send_to)
    }

    /// `read_from` as written in the file, for display.
    pub fn read_from_written(&self) -> Vec<String> {
        self.read_from_written.list(&self.read_from)
    }

    /// Makes `read_from` the very list `send_to` is when the two are equal
    /// (an agent that reads from those it writes to): one list, not two.
    pub fn share_lists(&mut self) {
        if self.read_from == self.send_to {
            self.read_from = self.send_to.clone();
        }
    }
}

/// A name that refers to something elsewhere in the org, kept with its span for later checks.
#[derive(Debug, Clone)]
pub struct Reference {
    /// `model`, `send_to`, `read_from`, `tools` or `node`.
    pub field: &'static str,
    /// The name written (`@name` for a group in `send_to` or `read_from`).
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

fn span(r: Range<usize>) -> Option<Range<usize>> {
    (r.end > 0).then_some(r)
}

/// What an agent's file tools may do in the org's `shared/` folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Shared {
    /// Nothing: `shared/…` paths are refused (the default).
    #[default]
    None,
    /// Read, list and search.
    Read,
    /// Read and write.
    Write,
}

/// The largest `resume.toml` accepted, in bytes (256 KiB).
pub const MAX_RESUME_BYTES: u64 = 256 * 1024;

/// The longest `instructions` accepted, in bytes (64 KiB, about 16,000 tokens).
pub const MAX_INSTRUCTIONS_BYTES: usize = 64 * 1024;

/// The largest `every` and `offset` accepted.
pub const MAX_EVERY: i64 = 1_000_000;

/// Parses and validates one resume. `folder` is the agent's folder name; the
/// org is the folder two levels above it (`ORG/agents/NAME/resume.toml`), and
/// a resume that lies outside it (through a link) is refused unread.
/// Returns every problem found in the file.
pub fn load(path: &Path, folder: &str) -> Result<ResumeFile, Vec<Diagnostic>> {
    let root = path.parent().and_then(Path::parent).and_then(Path::parent).unwrap_or(Path::new("/"));
    let text = crate::config::read(path, root, MAX_RESUME_BYTES).map_err(|errs| {
        errs.into_iter()
            .map(|d| d.help("every folder under agents/ needs a resume.toml (a regular TOML file)"))
            .collect::<Vec<_>>()
    })?;
    parse(path, text, folder)
}

/// Validates resume text (see [`load`]).
pub fn parse(path: &Path, text: String, folder: &str) -> Result<ResumeFile, Vec<Diagnostic>> {
    parse_sharing(path, text, folder, &Names::default())
}

/// [`parse`], the agent names taken from `names` when they are there.
pub fn parse_sharing(path: &Path, text: String, folder: &str, names: &Names) -> Result<ResumeFile, Vec<Diagnostic>> {
    let doc = Doc::parse(path, &text)?;
    let mut refs = Vec::new();
    let mut resume = None;
    {
        let t = doc.root();
        let at = |s: Range<usize>, m: String| doc.at(span(s), m);
        let raw_name = t.req_str("name", &format!("add name = \"{folder}\" (the agent's folder name)"));
        let title = t.str("title").map(Spanned::into_inner).unwrap_or_default();
        let description = t.str("description").map(Spanned::into_inner).unwrap_or_default();
        let model = t.str("model");
        let instructions = t.str("instructions");
        if let Some(i) = instructions.as_ref().filter(|i| i.get_ref().len() > MAX_INSTRUCTIONS_BYTES) {
            doc.push(
                at(
                    i.span(),
                    format!(
                        "`instructions` is {} bytes; the limit is {MAX_INSTRUCTIONS_BYTES} bytes",
                        i.get_ref().len()
                    ),
                )
                .help("shorten the instructions: put reference material in memory or in files the agent reads"),
            );
        }
        let instructions = instructions.map(Spanned::into_inner).unwrap_or_default();
        let mut schedule = Schedule::default();
        if let Some(st) = t.table("schedule") {
            if let Some(v) = st.int("every", 1..=MAX_EVERY, "every = 1 runs the agent on every turn") {
                schedule.every = *v.get_ref() as u64;
            }
            if let Some(v) = st.int("offset", 0..=MAX_EVERY, "offset = 0 is the usual value") {
                schedule.offset = *v.get_ref() as u64;
            }
            if let Some(w) = st.str("wake") {
                match w.get_ref().as_str() {
                    "mail" => schedule.wake = Wake::Mail,
                    "always" => schedule.wake = Wake::Always,
                    other => doc.push(
                        at(w.span(), format!("unknown `wake` value `{other}`"))
                            .help("use one of: mail (run only with unread mail), always (run on every due turn)"),
                    ),
                }
            }
            st.deny_unknown(&["every", "offset", "wake"]);
        }
        let (mut send_list, mut read_list, mut tools, mut commands) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut shared = Shared::None;
        if let Some(pt) = t.table("permissions") {
            send_list = pt.str_list("send_to").map(Spanned::into_inner).unwrap_or_default();
            read_list = pt.str_list("read_from").map(Spanned::into_inner).unwrap_or_default();
            let granted = pt.str_list("tools").map(Spanned::into_inner).unwrap_or_default();
            for t in &granted {
                refs.push(Reference { field: "tools", value: t.get_ref().clone(), span: t.span() });
            }
            tools = granted.into_iter().map(Spanned::into_inner).collect();
            commands = pt
                .str_list("commands")
                .map(|l| l.into_inner().into_iter().map(Spanned::into_inner).collect())
                .unwrap_or_default();
            if let Some(v) = pt.str("shared") {
                match v.get_ref().as_str() {
                    "none" => shared = Shared::None,
                    "read" => shared = Shared::Read,
                    "write" => shared = Shared::Write,
                    other => doc.push(at(v.span(), format!("unknown `shared` value `{other}`")).help(
                        "use one of: none, read (read, list and search shared/), write (also write files there)",
                    )),
                }
            }
            pt.deny_unknown(&["send_to", "read_from", "tools", "commands", "shared"]);
        }
        let mut credits = 100.0;
        if let Some(bt) = t.table("budget") {
            if let Some(c) = bt.float("credits", 0.0, true, MAX_CREDITS, "credits = 100.0") {
                credits = *c.get_ref();
            }
            bt.deny_unknown(&["credits"]);
        }
        let mut node = None;
        if let Some(n) = t.str("node") {
            match AgentName::new(n.get_ref()) {
                Ok(name) => {
                    refs.push(Reference { field: "node", value: name.to_string(), span: n.span() });
                    node = Some(name);
                }
                Err(e) => doc.push(
                    at(n.span(), format!("node name {:?}: {e}", n.get_ref()))
                        .help("use one of the `nodes` of [cluster] in org/org.toml"),
                ),
            }
        }
        t.deny_unknown(&[
            "name",
            "title",
            "description",
            "model",
            "instructions",
            "schedule",
            "permissions",
            "budget",
            "node",
        ]);

        let name = raw_name.as_ref().and_then(|raw| match names.name(raw.get_ref()) {
            Ok(n) => Some(n),
            Err(e) => {
                doc.push(at(raw.span(), e.to_string()).help(format!("rename the agent; {NAME_RULE}")));
                None
            }
        });
        if let (Some(n), Some(raw)) = (&name, &raw_name) {
            if n.as_str() == ENGINE {
                doc.push(at(raw.span(), format!("`{ENGINE}` is reserved for the engine")).help("choose another name"));
            } else if n.as_str() != folder {
                doc.push(
                    at(raw.span(), format!("name `{n}` differs from its folder `{folder}`"))
                        .help(format!("set name = \"{folder}\" or rename the folder to agents/{n}")),
                );
            }
        }
        let is_human = raw_name.as_ref().is_some_and(|n| n.get_ref() == HUMAN);
        match (&model, is_human) {
            (Some(m), true) => doc.push(
                at(m.span(), "`human` is driven by people, not a model".into())
                    .help("remove the `model` line from the human's resume"),
            ),
            (None, false) if !t.has("model") => doc.push(
                Diagnostic::file(path, "missing `model`").help("add model = \"default\" (a key in org/models.toml)"),
            ),
            (Some(m), false) => refs.push(Reference { field: "model", value: m.get_ref().clone(), span: m.span() }),
            _ => {}
        }

        let mut access = |field: &'static str, list: &[Spanned<String>]| {
            let mut written: Vec<String> = Vec::new();
            for s in list {
                if !written.contains(s.get_ref()) {
                    written.push(s.get_ref().clone());
                }
            }
            if list.iter().any(|s| s.get_ref() == "*") {
                return (Access::Anyone, Written::of(written, &Access::Anyone));
            }
            let mut set = Vec::new();
            for s in list {
                // `@name` names a group of org.toml: the org adds its members when it loads.
                let (group, name) = match s.get_ref().strip_prefix('@') {
                    Some(g) => (true, g),
                    None => (false, s.get_ref().as_str()),
                };
                match names.name(name) {
                    Ok(n) if group => refs.push(Reference { field, value: format!("@{n}"), span: s.span() }),
                    Ok(n) => {
                        refs.push(Reference { field, value: n.to_string(), span: s.span() });
                        set.push(n);
                    }
                    Err(e) => doc.push(
                        at(s.span(), format!("in `{field}`: {e}"))
                            .help("list agent names, groups of org.toml as \"@name\", or \"*\" for anyone"),
                    ),
                }
            }
            let access = Access::Only(NameList::new(set));
            let written = Written::of(written, &access);
            (access, written)
        };
        let (send_to, send_to_written) = access("send_to", &send_list);
        let (read_from, read_from_written) = access("read_from", &read_list);

        if let (Some(name), false) = (name, doc.has_errors()) {
            resume = Some(Resume {
                name,
                title,
                description,
                model: model.map(Spanned::into_inner),
                instructions,
                schedule,
                send_to,
                read_from,
                send_to_written,
                read_from_written,
                tools,
                commands,
                shared,
                credits,
                node,
            });
        }
    }
    let errs = doc.finish();
    match resume {
        Some(resume) if errs.is_empty() => Ok(ResumeFile { path: path.to_path_buf(), text, resume, refs }),
        _ => Err(errs),
    }
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
    fn a_list_as_written_is_kept_only_when_it_says_more_than_the_names_it_resolves_to() {
        let lists = |send: &str, read: &str| {
            let text = format!("name = \"x\"\nmodel = \"m\"\n[permissions]\nsend_to = {send}\nread_from = {read}\n");
            p(&text, "x").unwrap().resume
        };
        // Names in order, each once: shown from the resolved list.
        let r = lists(r#"["a", "b"]"#, r#"["*"]"#);
        assert_eq!((&r.send_to_written, &r.read_from_written), (&Written::default(), &Written::default()));
        assert_eq!((r.send_to_written(), r.read_from_written()), (vec!["a".to_string(), "b".into()], vec!["*".into()]));
        // Another order, a group, `*` among names: kept as written, each once.
        let r = lists(r#"["b", "a", "b"]"#, r#"["@eng", "a"]"#);
        assert_eq!(r.send_to_written(), ["b", "a"]);
        assert_eq!(r.read_from_written(), ["@eng", "a"]);
        assert_ne!(r.send_to_written, Written::default());
        let r = lists(r#"["a", "*"]"#, "[]");
        assert_eq!((r.send_to.clone(), r.send_to_written()), (Access::Anyone, vec!["a".to_string(), "*".into()]));
        assert_eq!(r.read_from_written(), Vec::<String>::new());
        assert_eq!(crate::resume::show_written(&r.read_from_written()), "(nobody)");
    }

    #[test]
    fn equal_lists_are_shared_and_look_up_names_in_order() {
        let text = "name = \"x\"\nmodel = \"m\"\n[permissions]\nsend_to = [\"c\", \"a\", \"b\"]\nread_from = [\"a\", \"b\", \"c\"]\n";
        let mut r = p(text, "x").unwrap().resume;
        let (Access::Only(send), Access::Only(read)) = (&r.send_to, &r.read_from) else { panic!("named lists") };
        assert!(!send.is_shared_with(read));
        assert_eq!(send.iter().map(|n| n.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
        assert!(["a", "b", "c"].iter().all(|n| send.contains(n)) && !send.contains("d") && !send.contains(""));
        r.share_lists();
        let (Access::Only(send), Access::Only(read)) = (&r.send_to, &r.read_from) else { panic!("named lists") };
        assert!(send.is_shared_with(read));
        // Different lists stay apart.
        let mut r = p(&text.replace("[\"a\", \"b\", \"c\"]", "[\"a\"]"), "x").unwrap().resume;
        r.share_lists();
        let (Access::Only(send), Access::Only(read)) = (&r.send_to, &r.read_from) else { panic!("named lists") };
        assert!(!send.is_shared_with(read) && read.len() == 1);
    }

    #[test]
    fn reports_every_problem_with_positions() {
        let errs = p(
            "name = \"Planner\"\nmodel = \"default\"\n[schedule]\nevery = 0\n[permissions]\nsend_to = [\"../x\"]\n[budget]\ncredits = -1.0\n",
            "planner",
        )
        .unwrap_err();
        let lines: Vec<_> = errs.iter().map(|d| d.line).collect();
        assert_eq!(lines, vec![Some(1), Some(4), Some(6), Some(8)], "{errs:?}");
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
    fn reports_every_type_error_each_with_its_fix() {
        let errs = p(
            "name = \"x\"\nmodel = \"m\"\n[schedule]\nevery = \"2\"\nwake = \"sometimes\"\n[permissions]\nsend_to = [\"manager\", 3]\nread_from = \"*\"\n[budget]\ncredits = -1\n",
            "x",
        )
        .unwrap_err();
        let got: Vec<(usize, &str)> = errs.iter().map(|d| (d.line.unwrap(), d.help.as_deref().unwrap_or(""))).collect();
        assert_eq!(
            got,
            vec![
                (4, "remove the quotes: every = 2"),
                (5, "use one of: mail (run only with unread mail), always (run on every due turn)"),
                (7, "put the item in quotes: \"3\""),
                (8, "use a list: read_from = [\"*\"]"),
                (10, "credits = 100.0"),
            ],
            "{errs:#?}"
        );
        let errs = p("name = \"x\"\nmodel = \"m\"\n[budget]\ncredits = 1e300\n", "x").unwrap_err();
        assert!(errs[0].message.contains("from 0 to 1000000000000, not 1e300"), "{}", errs[0]);
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
