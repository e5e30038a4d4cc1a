//! An org on disk: finding its root, the org-level state paths, and loading
//! and validating every config file into an [`Org`].
//!
//! Every command loads the org the same way. A config file that is invalid is
//! replaced by its last good version, and its problems are kept beside it
//! ([`Org::stale`], [`Org::last_good`]): the daemon's copy in memory first, else
//! the copy in `org/state/last-good/` (the file's path mirrored under it). Only
//! the process that runs turns (it holds the org lock) writes that folder
//! ([`Org::save_last_good`]), so `send`, `status` and `inspect` see the version
//! the daemon runs. A file with no last good version (a new agent whose first
//! resume is invalid) has no fallback: the agent is held (see [`Org::broken`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lemming_provider::Registry;

use crate::chart::Chart;
use crate::error::{Diagnostic, Diagnostics, PathError, WithPath};
use crate::fsx;
use crate::models::{self, Models};
use crate::name::{AgentName, Names};
use crate::resume::{self, Resume};
use crate::settings::{self, Cluster, Settings};
use crate::suggest::{self, Kind};
use crate::tools::catalog::{self, Catalog};
use crate::view_cache::ViewCache;

pub use crate::layout::Layout;

/// Why an org could not be found or loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadOrgError {
    /// No org folder around.
    #[error("no org found from {}: no org/org.toml here or in any parent folder\n  help: run `lemming init DIR`, pass --org DIR, or set LEMMING_ORG", start.display())]
    NotFound {
        /// Where the search started.
        start: PathBuf,
    },
    /// `--org` names a folder that is not an org.
    #[error("{}", not_an_org(root))]
    NotAnOrg {
        /// The folder given.
        root: PathBuf,
    },
    /// org.toml or models.toml is invalid: the org cannot run.
    #[error("{0}")]
    Invalid(Diagnostics),
}

/// Why `root` (given as the org) is not one, and what to do: `lemming init`
/// only for a folder it would write into (missing or empty).
fn not_an_org(root: &Path) -> String {
    use crate::term::shell_path;
    let shown = root.display();
    let pass = "pass the org's folder, the one that holds org/org.toml (--org DIR or LEMMING_ORG)";
    let meta = std::fs::metadata(root);
    match meta {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => format!(
            "{shown} is not an org: it does not exist\n  help: {pass}, or create one there with `lemming init {}`",
            shell_path(root)
        ),
        Err(e) => format!("{shown} is not an org: it cannot be read ({e})\n  help: {pass}"),
        Ok(m) if !m.is_dir() => format!("{shown} is not an org: it is a file, not a folder\n  help: {pass}"),
        Ok(_) if std::fs::read_dir(root).is_ok_and(|mut d| d.next().is_none()) => format!(
            "{shown} is not an org: it is an empty folder (no org/org.toml)\n  help: {pass}, or write the default org into it with `lemming \
             init {}`",
            shell_path(root)
        ),
        Ok(_) => {
            let inside = root.ancestors().skip(1).find(|d| Layout::new(*d).org_toml().is_file());
            let help = match inside {
                Some(org) => format!("{shown} is inside the org at {}; pass that folder", org.display()),
                None => pass.to_string(),
            };
            format!("{shown} is not an org: it has no org/org.toml\n  help: {help}")
        }
    }
}

/// Finds the org: `explicit` (from `--org` or `LEMMING_ORG`), else the nearest
/// ancestor of `cwd` that has `org/org.toml`.
pub fn find_root(explicit: Option<&Path>, cwd: &Path) -> Result<PathBuf, LoadOrgError> {
    if let Some(root) = explicit {
        let root = if root.is_absolute() { root.to_path_buf() } else { cwd.join(root) };
        if !Layout::new(&root).org_toml().is_file() {
            return Err(LoadOrgError::NotAnOrg { root });
        }
        return Ok(root);
    }
    cwd.ancestors()
        .find(|d| Layout::new(*d).org_toml().is_file())
        .map(Path::to_path_buf)
        .ok_or_else(|| LoadOrgError::NotFound { start: cwd.to_path_buf() })
}

/// A loaded org: its settings, models and every agent whose resume is valid.
#[derive(Debug, Clone)]
pub struct Org {
    /// Where it lives.
    pub layout: Layout,
    /// `org/org.toml`.
    pub settings: Settings,
    /// `org/models.toml`.
    pub models: Models,
    /// Agents whose resumes are valid.
    pub agents: BTreeMap<AgentName, Box<Resume>>,
    /// Every tool: the built-in ones and those of `org/tools.toml`.
    pub tools: Catalog,
    /// Agent folders whose resume has problems: they are held, not run, and
    /// mail to and from them waits.
    pub broken: BTreeMap<String, Vec<Diagnostic>>,
    /// Problems in files for which the last good version is used instead, and
    /// in `org.toml`/`models.toml` when loaded leniently with no last good version.
    pub stale: Vec<Diagnostic>,
    /// The config files (relative to the root) that are invalid and replaced by
    /// their last good version.
    pub last_good: Vec<PathBuf>,
    /// Every file that is valid as it stands, relative path first, with the
    /// fingerprint of the text found valid: what [`Org::save_last_good`]
    /// keeps (the text is read again then, not held: a large org's resumes
    /// are megabytes).
    valid: Vec<(Box<Path>, Fingerprint)>,
    /// The node of `[cluster]` this process is ([`NODE_ENV`]), when the org
    /// has one; `None` on one machine.
    pub here: Option<String>,
}

/// The environment variable that names the node of `[cluster]` a process
/// is (`--node` sets it).
pub const NODE_ENV: &str = "LEMMING_NODE";

/// The length and a hash of a config file's text: whether a text is the one
/// found valid, without holding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    len: u64,
    hash: u64,
}

impl Fingerprint {
    fn of(text: &str) -> Fingerprint {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        text.hash(&mut h);
        Fingerprint { len: text.len() as u64, hash: h.finish() }
    }
}

/// The largest `org.toml` or `models.toml` accepted, in bytes (1 MiB).
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// `org/org.toml`, relative to the root.
const ORG_TOML: &str = "org/org.toml";
/// `org/models.toml`, relative to the root.
const MODELS_TOML: &str = "org/models.toml";
/// `org/tools.toml`, relative to the root.
const TOOLS_TOML: &str = "org/tools.toml";

/// What loading found so far, file by file.
struct Loaded {
    /// Reads the files, remembering the folders it checked.
    reader: crate::config::Reader,
    /// The last good resumes ([`Layout::last_good_resumes`]), once one is needed.
    resumes: Option<BTreeMap<String, String>>,
    stale: Vec<Diagnostic>,
    last_good: Vec<PathBuf>,
    valid: Vec<(Box<Path>, Fingerprint)>,
}

impl Loaded {
    /// Nothing loaded yet from the org at `root`.
    fn new(root: &Path) -> Loaded {
        Loaded {
            reader: crate::config::Reader::new(root),
            resumes: None,
            stale: Vec::new(),
            last_good: Vec::new(),
            valid: Vec::new(),
        }
    }

    /// The last good resume of `agent` in the bundle, read once.
    fn saved_resume(&mut self, layout: &Layout, agent: &str) -> Option<String> {
        let reader = &self.reader;
        let resumes = self.resumes.get_or_insert_with(|| read_saved_resumes(reader, layout));
        resumes.remove(agent)
    }

    /// Loads the config file `rel` through `parse` (which validates it). When
    /// it is invalid, its last good version is used: `memory` when given (the
    /// daemon's), else the copy in `org/state/last-good/` if it is still valid.
    /// `Err` holds the file's problems when there is no last good version.
    fn file<T: Clone>(
        &mut self,
        layout: &Layout,
        rel: &Path,
        limit: u64,
        memory: Option<&T>,
        parse: impl Fn(String) -> Result<T, Vec<Diagnostic>>,
    ) -> Result<T, Vec<Diagnostic>> {
        let path = layout.root.join(rel);
        let problems = match self.reader.read(&path, limit).and_then(|text| {
            let fingerprint = Fingerprint::of(&text);
            Ok((parse(text)?, fingerprint))
        }) {
            Ok((v, fingerprint)) => {
                self.valid.push((rel.into(), fingerprint));
                return Ok(v);
            }
            Err(problems) => problems,
        };
        let kept = memory.cloned().or_else(|| {
            let bundled = crate::layout::resume_folder(rel).and_then(|agent| self.saved_resume(layout, agent));
            let text = bundled.ok_or(()).or_else(|_| self.reader.read(&layout.last_good(rel), limit));
            let text = text.or_else(|_| self.reader.read(&layout.last_good_mirrored(rel), limit)).ok()?;
            parse(text).ok()
        });
        match kept {
            Some(v) => {
                self.stale.extend(problems);
                self.last_good.push(rel.to_path_buf());
                Ok(v)
            }
            None => Err(problems),
        }
    }
}

impl Org {
    /// The org's mail store.
    pub fn mail(&self) -> crate::mailbox::FsMailStore {
        let store = self.layout.mail().with_read_limit(self.settings.max_message_bytes);
        if self.here.is_some() {
            store.with_remote(self.elsewhere())
        } else {
            store
        }
    }

    /// Loads and validates every config file, each invalid one replaced by its
    /// last good version in `org/state/last-good/` when there is one. A bad
    /// `org.toml` or `models.toml` with no last good version is fatal; a bad
    /// resume with none holds only that agent (see [`Org::problems`]).
    pub fn load(root: &Path) -> Result<Org, LoadOrgError> {
        let layout = Layout::new(root);
        let folders = agent_folders(&layout);
        let mut loaded = Loaded::new(root);
        let mut fatal = Vec::new();
        let settings = loaded
            .file(&layout, Path::new(ORG_TOML), MAX_CONFIG_BYTES, None, |t| parse_settings(&layout, &t, &folders))
            .unwrap_or_else(|e| {
                fatal.extend(e);
                Settings::default()
            });
        let models = loaded
            .file(&layout, Path::new(MODELS_TOML), MAX_CONFIG_BYTES, None, |t| {
                models::parse(&layout.models_toml(), &t, root)
            })
            .unwrap_or_else(|e| {
                fatal.extend(e);
                Models::default()
            });
        let tools = load_tools(&layout, None, &mut loaded).unwrap_or_else(|e| {
            fatal.extend(e);
            Catalog::default()
        });
        if !fatal.is_empty() {
            return Err(LoadOrgError::Invalid(Diagnostics(fatal)));
        }
        let refs = Refs {
            models: &models,
            check_models: true,
            tools: Some(&tools),
            known: Known::new(&folders),
            settings: &settings,
            cache: &ViewCache::off(),
        };
        let (agents, broken) = load_agents(&layout, refs, None, &mut loaded);
        Ok(Org::new(layout, settings, models, agents, tools, broken, loaded))
    }

    /// Loads the org, falling back for every invalid file: to the last good
    /// version in `memory` when there is one (the daemon's: a bad edit is
    /// refused and the last good version kept), else to the one in
    /// `org/state/last-good/`, else to defaults (for read-only commands such as
    /// `status`, which must work on a broken org). The problems of files
    /// replaced by a fallback are in [`Org::stale`].
    pub fn load_or_last_good(root: &Path, memory: Option<&Org>) -> Org {
        Org::load_viewing(root, memory, &ViewCache::off())
    }

    /// [`Org::load_or_last_good`] through what the last view kept of each
    /// resume as parsed (`status`; see [`crate::view_cache`]). A resume
    /// taken from the cache is not among the versions
    /// [`Org::save_last_good`] keeps: only views load this way.
    pub fn load_viewing(root: &Path, memory: Option<&Org>, cache: &ViewCache) -> Org {
        let layout = Layout::new(root);
        let folders = agent_folders(&layout);
        let mut loaded = Loaded::new(root);
        let settings = loaded
            .file(&layout, Path::new(ORG_TOML), MAX_CONFIG_BYTES, memory.map(|o| &o.settings), |t| {
                parse_settings(&layout, &t, &folders)
            })
            .unwrap_or_else(|e| {
                loaded.stale.extend(e);
                Settings::default()
            });
        let mut models_ok = true;
        let models = loaded
            .file(&layout, Path::new(MODELS_TOML), MAX_CONFIG_BYTES, memory.map(|o| &o.models), |t| {
                models::parse(&layout.models_toml(), &t, root)
            })
            .unwrap_or_else(|e| {
                loaded.stale.extend(e);
                models_ok = false;
                Models::default()
            });
        let tools = load_tools(&layout, memory.map(|o| &o.tools), &mut loaded);
        // Names referenced must be agents that exist (even if their resume is broken).
        let refs = Refs {
            models: &models,
            check_models: models_ok,
            tools: tools.as_ref().ok(),
            known: Known::new(&folders),
            settings: &settings,
            cache,
        };
        let (agents, broken) = load_agents(&layout, refs, memory, &mut loaded);
        let tools = tools.unwrap_or_else(|e| {
            loaded.stale.extend(e);
            Catalog::default()
        });
        Org::new(layout, settings, models, agents, tools, broken, loaded)
    }

    fn new(
        layout: Layout,
        settings: Settings,
        models: Models,
        agents: BTreeMap<AgentName, Box<Resume>>,
        tools: Catalog,
        broken: BTreeMap<String, Vec<Diagnostic>>,
        loaded: Loaded,
    ) -> Org {
        let Loaded { stale, last_good, valid, .. } = loaded;
        let here = settings.cluster.as_ref().and_then(|_| std::env::var(NODE_ENV).ok()).filter(|n| !n.is_empty());
        Org { layout, settings, models, agents, tools, broken, stale, last_good, valid, here }
    }

    /// Whether this process may run turns here: on one machine always; in a
    /// cluster, once it knows which declared node it is. The error says what to do.
    pub fn check_node(&self) -> Result<(), String> {
        let Some(c) = &self.settings.cluster else { return Ok(()) };
        let nodes = c.nodes.iter().map(AgentName::as_str).collect::<Vec<_>>().join(", ");
        match &self.here {
            None => Err(format!(
                "this org spans the nodes {nodes} ([cluster] in org/org.toml): say which one this process is, with --node NAME or {NODE_ENV}=NAME"
            )),
            Some(h) if !c.has_node(h) => Err(format!(
                "`{h}` ({NODE_ENV} or --node) is no node of this org ({}): the nodes are {nodes}",
                suggest::hint(Kind::Node, h, c.nodes.iter().map(AgentName::as_str))
            )),
            Some(_) => Ok(()),
        }
    }

    /// The node `resume`'s agent runs on, in a cluster.
    pub fn node_of<'a>(&'a self, resume: &'a Resume) -> Option<&'a str> {
        let c = self.settings.cluster.as_ref()?;
        Some(c.node_of(resume.node.as_ref().map(AgentName::as_str)))
    }

    /// Whether `resume`'s agent runs in this process: always on one machine
    /// (or when the node is not known), else when its node is this one.
    pub fn runs_here(&self, resume: &Resume) -> bool {
        match (self.node_of(resume), &self.here) {
            (Some(node), Some(here)) => node == here,
            _ => true,
        }
    }

    /// The agent folders whose mail this process keeps, in order: every one,
    /// but in a cluster those of the agents on other nodes (a folder whose
    /// resume is invalid stays: its mail waits wherever it is).
    pub fn folders_here(&self) -> Vec<String> {
        let mut folders = agent_folders(&self.layout);
        if self.here.is_some() {
            folders.retain(|f| self.agents.get(f.as_str()).is_none_or(|r| self.runs_here(r)));
        }
        folders
    }

    /// The agents that run on other nodes, whose mail goes through the cluster.
    pub fn elsewhere(&self) -> Vec<String> {
        self.agents.values().filter(|r| !self.runs_here(r)).map(|r| r.name.to_string()).collect()
    }

    /// Keeps the version of every valid config file in `org/state/last-good/`
    /// (each written atomically, only when it changed), and forgets the last
    /// good resumes of agent folders that are gone. Called by the process that
    /// runs turns, under the org lock.
    pub fn save_last_good(&self) -> Result<(), PathError> {
        self.save_last_good_since(None)
    }

    /// [`Org::save_last_good`], passing over the files that `saved` (an org
    /// whose versions were all saved) already had word for word: the daemon
    /// reloads before every turn, and most turns change no config file.
    /// A file changed again since this org was loaded is passed over too:
    /// its text is not the one found valid, and the next load judges it.
    pub fn save_last_good_since(&self, saved: Option<&Org>) -> Result<(), PathError> {
        // By path: with thousands of resumes, a scan per file would be quadratic.
        let before: std::collections::HashMap<&Path, Fingerprint> =
            saved.map(|o| o.valid.iter().map(|(r, f)| (&**r, *f)).collect()).unwrap_or_default();
        let tmp = self.layout.state_tmp();
        let reader = crate::config::Reader::new(&self.layout.root);
        let mut changed = fsx::Batch::new();
        let mut made: std::collections::HashSet<PathBuf> = Default::default();
        let mut resumes = Vec::new();
        for (rel, fingerprint) in &self.valid {
            if before.get(&**rel) == Some(fingerprint) {
                continue;
            }
            if let Some(agent) = crate::layout::resume_folder(rel) {
                resumes.push((agent, &**rel, *fingerprint));
                continue;
            }
            let path = self.layout.last_good(rel);
            if reader.read(&path, fingerprint.len).is_ok_and(|old| Fingerprint::of(&old) == *fingerprint) {
                continue;
            }
            let Ok(text) = reader.read(&self.layout.root.join(rel), fingerprint.len) else { continue };
            if Fingerprint::of(&text) != *fingerprint {
                continue;
            }
            let dir = path.parent().unwrap_or(&path);
            if !made.contains(dir) {
                std::fs::create_dir_all(dir).with_path(dir)?;
                made.insert(dir.to_path_buf());
            }
            changed.write(&tmp, path, text.into_bytes());
        }
        if !changed.is_empty() {
            std::fs::create_dir_all(&tmp).with_path(&tmp)?;
            changed.commit(&self.layout.root)?;
        }
        // The resumes change with the agents: when none did and no agent
        // came or went, the bundle is as it was.
        let folders = agent_folders(&self.layout);
        let same_agents = saved.is_some_and(|o| {
            o.agents.len() + o.broken.len() == folders.len()
                && folders.iter().all(|f| o.agents.contains_key(f.as_str()) || o.broken.contains_key(f))
        });
        if resumes.is_empty() && same_agents {
            return Ok(());
        }
        let kept = self.save_resumes(&reader, resumes, &folders)?;
        // Forget the copies earlier versions kept one file per agent
        // (flat, or in the mirrored layout) once the bundle holds that
        // agent's, and those of agent folders that are gone.
        let old = self.layout.last_good_dir().join("agents");
        let known = |n: &str| folders.binary_search_by(|f| f.as_str().cmp(n)).is_ok();
        for e in std::fs::read_dir(&old).into_iter().flatten().flatten() {
            let name = e.file_name();
            let name = name.to_str().unwrap_or("");
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            let agent = if is_dir { Some(name) } else { name.strip_suffix(".toml") };
            let gone = agent.is_none_or(|a| !known(a) || kept.contains_key(a));
            let replaced = is_dir && old.join(format!("{name}.toml")).is_file();
            if (gone || replaced) && is_dir {
                std::fs::remove_dir_all(e.path()).with_path(e.path())?;
            } else if gone {
                std::fs::remove_file(e.path()).with_path(e.path())?;
            }
        }
        if std::fs::read_dir(&old).is_ok_and(|mut d| d.next().is_none()) {
            let _ = std::fs::remove_dir(&old);
        }
        Ok(())
    }

    /// Writes the last good resumes' bundle again when `resumes` (valid
    /// resumes that may have changed: agent, path, fingerprint) change it or
    /// an agent of it is gone (not among `folders`). A resume is read again
    /// and kept only when it is still the text found valid. An agent whose
    /// resume is invalid now keeps its entry. Returns the bundle as written.
    fn save_resumes(
        &self,
        reader: &crate::config::Reader,
        resumes: Vec<(&str, &Path, Fingerprint)>,
        folders: &[String],
    ) -> Result<BTreeMap<String, String>, PathError> {
        let mut kept = read_saved_resumes(reader, &self.layout);
        let before = kept.len();
        kept.retain(|agent, _| folders.binary_search_by(|f| f.as_str().cmp(agent)).is_ok());
        let mut changed = kept.len() != before || !self.layout.last_good_resumes().is_file();
        for (agent, rel, fingerprint) in resumes {
            if kept.get(agent).is_some_and(|t| Fingerprint::of(t) == fingerprint) {
                continue;
            }
            let Ok(text) = reader.read(&self.layout.root.join(rel), fingerprint.len) else { continue };
            if Fingerprint::of(&text) == fingerprint {
                kept.insert(agent.to_string(), text);
                changed = true;
            }
        }
        if changed {
            let path = self.layout.last_good_resumes();
            let tmp = self.layout.state_tmp();
            for dir in [&tmp, &self.layout.last_good_dir()] {
                std::fs::create_dir_all(dir).with_path(dir)?;
            }
            fsx::write_atomic_with(&tmp, &path, |w| serde_json::to_writer(w, &kept).map_err(std::io::Error::from))?;
        }
        Ok(kept)
    }

    /// The problems of the files that `send`, `inspect` and such should show
    /// beside what they do: `org.toml`, `models.toml` and the resumes of these
    /// agents, when invalid (whether a last good version replaces them or not),
    /// and `tools.toml`.
    pub fn problems_of(&self, agents: &[&str]) -> Vec<Diagnostic> {
        let mine = |d: &Diagnostic| {
            d.path.strip_prefix(&self.layout.root).is_ok_and(|rel| {
                rel == Path::new(ORG_TOML)
                    || rel == Path::new(MODELS_TOML)
                    || rel == Path::new(TOOLS_TOML)
                    || agents.iter().any(|a| rel.starts_with(Path::new("agents").join(a)))
            })
        };
        self.problems().into_iter().filter(mine).collect()
    }

    /// Every problem found: files replaced by a fallback, then invalid resumes in folder order.
    pub fn problems(&self) -> Vec<Diagnostic> {
        self.stale.iter().chain(self.broken.values().flatten()).cloned().collect()
    }

    /// Judges `bytes` as the resume of the agent folder `folder`, as loading
    /// the org (and so `lemming validate`) would judge that file with this
    /// text in place: its syntax, its fields and limits, and the names it
    /// refers to (model keys when `models.toml` is usable, tools when
    /// `tools.toml` is, agents against the agent folders). The problems of
    /// other files are not this text's.
    pub fn check_resume(&self, folder: &str, bytes: Vec<u8>) -> Result<Resume, Vec<Diagnostic>> {
        let path = self.layout.agent_dir(folder).join("resume.toml");
        if bytes.len() as u64 > resume::MAX_RESUME_BYTES {
            let m = format!("the file is {} bytes; the limit is {} bytes", bytes.len(), resume::MAX_RESUME_BYTES);
            let help = "shorten it (the size limits of config files are in docs/operating.md)";
            return Err(vec![Diagnostic::file(&path, m).help(help)]);
        }
        let text = crate::config::utf8(&path, bytes)?;
        let f = resume::parse(&path, text, folder)?;
        let tools = self.usable(TOOLS_TOML).then_some(&self.tools);
        check_refs(
            f,
            &self.models,
            self.usable(MODELS_TOML),
            tools,
            &Known::new(&agent_folders(&self.layout)),
            &self.settings,
        )
    }

    /// Whether the config file `rel` is in use as loaded: valid, or replaced
    /// by its last good version (not by defaults).
    fn usable(&self, rel: &str) -> bool {
        let path = self.layout.root.join(rel);
        self.last_good.iter().any(|p| p == Path::new(rel)) || !self.stale.iter().any(|d| d.path == path)
    }

    /// The org chart.
    pub fn chart(&self) -> Chart<'_> {
        Chart::new(&self.agents)
    }

    /// The recipients of a message from `from` addressed to `to` (names,
    /// `@group`, `*`), each once; see [`crate::address::expand`].
    pub fn recipients(
        &self,
        from: &str,
        to: &crate::message::To,
    ) -> Result<Vec<crate::address::Recipient>, crate::address::Unroutable> {
        use crate::address::{Recipient, Via, EVERYONE};
        let expanded = crate::address::expand(&self.settings.groups, &self.chart(), from, to);
        if !to.0.iter().any(|t| t == EVERYONE) {
            return expanded;
        }
        // An agent whose resume is invalid right now is not in the chart, but
        // `*` may well mean it: it is named so that routing holds the message
        // until the resume is fixed, rather than leave it out for good.
        let may_write = |name: &str| self.agents.get(from).is_some_and(|r| r.send_to.allows(name));
        let held = self
            .broken
            .keys()
            .filter(|name| name.as_str() != from && may_write(name))
            .map(|name| Recipient { name: name.to_string(), via: Via::Everyone });
        match expanded {
            Ok(mut out) => {
                out.extend(held.filter(|h| !out.iter().any(|r| r.name == h.name)).collect::<Vec<_>>());
                Ok(out)
            }
            Err(crate::address::Unroutable::Nobody(why)) => {
                let held: Vec<_> = held.collect();
                if held.is_empty() {
                    Err(crate::address::Unroutable::Nobody(why))
                } else {
                    Ok(held)
                }
            }
            Err(e) => Err(e),
        }
    }

    /// The groups `name` is a member of, in name order.
    pub fn groups_of(&self, name: &str) -> Vec<String> {
        self.settings
            .groups
            .iter()
            .filter(|(_, m)| m.iter().any(|m| m.as_str() == name))
            .map(|(g, _)| g.clone())
            .collect()
    }

    /// Looks up an agent by name; the error names the closest known ones.
    pub fn agent(&self, name: &str) -> Result<&Resume, UnknownAgent> {
        if let Err(e) = AgentName::new(name) {
            return Err(UnknownAgent { message: e.to_string() });
        }
        self.agents.get(name).map(|r| &**r).ok_or_else(|| UnknownAgent {
            message: if let Some(problems) = self.broken.get(name) {
                let why: Vec<String> = problems.iter().map(|d| d.to_string()).collect();
                format!(
                    "agent `{name}` has an invalid resume and no last good version, so it is held until the file is \
                     fixed:\n{}",
                    why.join("\n")
                )
            } else {
                format!("unknown agent `{name}` ({})", self.chart().hint(name))
            },
        })
    }

    /// A registry of providers for this org's models.
    pub fn registry(&self) -> Registry {
        Registry::with_breaker_file(&self.models.providers, self.models.models.clone(), &self.layout.breakers())
    }
}

/// An agent name that is invalid or not in the org.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct UnknownAgent {
    /// What was wrong, with the closest known agents.
    pub message: String,
}

/// When each config file was last changed (modification time, size and
/// inode: an atomic replace is a new inode even within the clock's
/// granularity) and which agent folders there are: a cheap way to tell
/// whether the org must be loaded again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigStamp(Vec<(String, Option<FileStamp>)>);

/// A file's modification time, size and inode.
type FileStamp = (std::time::SystemTime, u64, u64);

impl ConfigStamp {
    /// The stamp of the org at `layout` now.
    pub fn of(layout: &Layout) -> ConfigStamp {
        use std::os::unix::fs::MetadataExt;
        let stamp = |p: &Path| std::fs::metadata(p).ok().and_then(|m| Some((m.modified().ok()?, m.len(), m.ino())));
        let mut v = vec![
            ("org.toml".to_string(), stamp(&layout.org_toml())),
            ("models.toml".to_string(), stamp(&layout.models_toml())),
            ("tools.toml".to_string(), stamp(&layout.tools_toml())),
        ];
        for a in agent_folders(layout) {
            let t = stamp(&layout.agent_dir(&a).join("resume.toml"));
            v.push((a, t));
        }
        ConfigStamp(v)
    }
}

/// The agent folders under `agents/`, sorted (hidden folders and files are
/// skipped, and so are links: an entry's type is that of the link, never
/// followed).
pub fn agent_folders(layout: &Layout) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(layout.agents_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .filter(|n| !n.starts_with('.'))
        .collect();
    out.sort();
    out
}

/// Parses `org.toml` and checks that the members of its groups are agent
/// folders (`folders`, sorted).
fn parse_settings(layout: &Layout, text: &str, folders: &[String]) -> Result<Settings, Vec<Diagnostic>> {
    let s = settings::parse(&layout.org_toml(), text)?;
    settings::check_members(&layout.org_toml(), text, &s, folders)?;
    Ok(s)
}

/// Loads `org/tools.toml` like the other config files; a missing file is an
/// empty catalog (only the built-in tools).
fn load_tools(layout: &Layout, memory: Option<&Catalog>, loaded: &mut Loaded) -> Result<Catalog, Vec<Diagnostic>> {
    let path = layout.tools_toml();
    if std::fs::symlink_metadata(&path).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
        return Ok(Catalog::default());
    }
    loaded.file(layout, Path::new(TOOLS_TOML), MAX_CONFIG_BYTES, memory, |t| {
        catalog::parse(&path, &t, &layout.root).map(|custom| Catalog { custom })
    })
}

/// Agents per thread above which the resumes are loaded by several threads:
/// reading and parsing a resume is most of the time loading a large org takes.
const AGENTS_PER_THREAD: usize = 256;

/// Loads the resume of every agent folder (`folders`, sorted, as
/// [`agent_folders`] listed them), in folder order: by several threads in a
/// large org, each with its own [`Loaded`], merged into `loaded` in order.
fn load_agents(
    layout: &Layout,
    refs: Refs<'_>,
    memory: Option<&Org>,
    loaded: &mut Loaded,
) -> (BTreeMap<AgentName, Box<Resume>>, BTreeMap<String, Vec<Diagnostic>>) {
    let parts = crate::parts::in_parts(refs.known.sorted, AGENTS_PER_THREAD, |part| {
        let mut mine = Loaded::new(&layout.root);
        let (mut agents, mut broken) = (BTreeMap::new(), BTreeMap::new());
        load_folders(layout, &refs, part, memory, &mut mine, &mut agents, &mut broken);
        (mine, agents, broken)
    });
    let mut agents = BTreeMap::new();
    let mut broken = BTreeMap::new();
    for (part, a, b) in parts {
        agents.extend(a);
        broken.extend(b);
        loaded.stale.extend(part.stale);
        loaded.last_good.extend(part.last_good);
        loaded.valid.extend(part.valid);
    }
    (agents, broken)
}

/// The largest bundle of last good resumes read (256 KiB for each of 1,000 agents).
const MAX_SAVED_RESUMES_BYTES: u64 = 256 << 20;

/// The last good resumes ([`Layout::last_good_resumes`]), by agent; none
/// when there is no bundle or it cannot be read (each agent then has no last
/// good version but a copy an earlier version kept).
fn read_saved_resumes(reader: &crate::config::Reader, layout: &Layout) -> BTreeMap<String, String> {
    let path = layout.last_good_resumes();
    if !path.exists() {
        return BTreeMap::new();
    }
    let read = reader.read(&path, MAX_SAVED_RESUMES_BYTES).ok().and_then(|text| serde_json::from_str(&text).ok());
    read.unwrap_or_else(|| {
        tracing::warn!(path = %path.display(), "the last good resumes cannot be read; each is saved again while valid");
        BTreeMap::new()
    })
}

/// What a resume's names are checked against (see [`check_refs`]).
struct Refs<'a> {
    models: &'a Models,
    check_models: bool,
    tools: Option<&'a Catalog>,
    /// The agent folders.
    known: Known<'a>,
    settings: &'a Settings,
    /// And what a view kept of each resume as parsed (see [`crate::view_cache`]).
    cache: &'a ViewCache,
}

/// Loads the resumes of `folders` into `agents`, or `broken` with their problems.
fn load_folders(
    layout: &Layout,
    refs: &Refs<'_>,
    folders: &[String],
    memory: Option<&Org>,
    loaded: &mut Loaded,
    agents: &mut BTreeMap<AgentName, Box<Resume>>,
    broken: &mut BTreeMap<String, Vec<Diagnostic>>,
) {
    // The listing found each to be a folder by its entry's type, not a link:
    // the reader need not look at them again.
    loaded.reader.listed(Path::new("agents"), folders);
    for folder in folders {
        let path = layout.agent_dir(folder).join("resume.toml");
        if let Err(e) = AgentName::new(folder) {
            broken.insert(
                folder.clone(),
                vec![Diagnostic::file(&layout.agent_dir(folder), e.to_string()).help("rename the folder")],
            );
            continue;
        }
        let rel = Path::new("agents").join(folder).join("resume.toml");
        let check =
            |f| check_refs(f, refs.models, refs.check_models, refs.tools, &refs.known, refs.settings).map(Box::new);
        let key = match refs.cache.resume(folder, &path, &refs.known.names) {
            crate::view_cache::ResumeLookup::Hit(f, key) => match check(*f) {
                Ok(r) => {
                    refs.cache.used(folder, key);
                    agents.insert(r.name.clone(), r);
                    continue;
                }
                // Read again, for the problems with the file's own text.
                Err(_) => None,
            },
            crate::view_cache::ResumeLookup::Miss(key) => key,
        };
        let kept = memory.and_then(|o| o.agents.get(folder.as_str()));
        // The parse of the file itself, not of a last good version.
        let first = std::cell::RefCell::new(None);
        let checked = loaded.file(layout, &rel, resume::MAX_RESUME_BYTES, kept, |text| {
            let f = resume::parse_sharing(&path, text, folder, &refs.known.names)?;
            first.borrow_mut().get_or_insert_with(|| f.clone());
            check(f)
        });
        if let (Ok(_), Some(f)) = (&checked, first.into_inner()) {
            if loaded.last_good.last().is_none_or(|p| *p != rel) {
                refs.cache.parsed(folder, key, &f);
            }
        }
        match checked {
            Ok(r) => {
                agents.insert(r.name.clone(), r);
            }
            Err(d) => {
                broken.insert(folder.clone(), d);
            }
        }
    }
}

/// The agent folders, sorted, as names are checked against them: a lookup is
/// one hash, not a binary search (each resume of a large org names tens).
/// Each valid one is also the one [`AgentName`] that the resumes' lists share.
pub(crate) struct Known<'a> {
    sorted: &'a [String],
    names: Names,
}

impl<'a> Known<'a> {
    /// `sorted`, the agent folders in order.
    pub(crate) fn new(sorted: &'a [String]) -> Known<'a> {
        debug_assert!(sorted.is_sorted(), "the agent folders must be sorted");
        Known { sorted, names: Names::new(sorted.iter().map(String::as_str)) }
    }

    /// Whether `name`, a valid name, is an agent folder.
    fn contains(&self, name: &str) -> bool {
        self.names.contains(name)
    }
}

/// Checks the names a resume refers to: model keys against `models.toml`
/// (when it could be read), tools against the catalog (when `tools.toml`
/// could be read), agent names against the agent folders (`known`), and groups (`@name` in `send_to`
/// or `read_from`) against `[groups]` of org.toml, whose members it adds to
/// the list, and its `node` against `[cluster]`. An unknown name is reported
/// with the closest known ones.
pub(crate) fn check_refs(
    mut f: resume::ResumeFile,
    models: &Models,
    check_models: bool,
    tools: Option<&Catalog>,
    known: &Known<'_>,
    settings: &Settings,
) -> Result<Resume, Vec<Diagnostic>> {
    let groups = &settings.groups;
    let mut errs = Vec::new();
    for r in &f.refs {
        if let Some(group) = r.value.strip_prefix('@') {
            let access = if r.field == "send_to" { &mut f.resume.send_to } else { &mut f.resume.read_from };
            match groups.get(group) {
                Some(members) => {
                    if let resume::Access::Only(list) = access {
                        *list = resume::NameList::new(list.iter().chain(members).cloned());
                    }
                }
                None => errs.push(
                    Diagnostic::at(
                        &f.path,
                        &f.text,
                        Some(r.span.clone()),
                        format!(
                            "unknown group `@{group}` in `{}` ({})",
                            r.field,
                            crate::address::group_hint(group, groups)
                        ),
                    )
                    .help(format!(
                        "use a group defined under [groups] in org/org.toml, or add {group} = [\"agent\", ...] there"
                    )),
                ),
            }
            continue;
        }
        let bad = match r.field {
            "model" => (check_models && !models.models.contains_key(&r.value)).then(|| {
                Diagnostic::at(
                    &f.path,
                    &f.text,
                    Some(r.span.clone()),
                    suggest::unknown(Kind::ModelKey, &r.value, models.models.keys().map(String::as_str)),
                )
                .help("use a key defined in org/models.toml, or add [models.".to_string() + &r.value + "] there")
            }),
            "node" => check_node(&f, r, settings.cluster.as_ref()),
            "tools" => tools.filter(|c| !c.knows(&r.value)).map(|c| {
                Diagnostic::at(
                    &f.path,
                    &f.text,
                    Some(r.span.clone()),
                    format!(
                        "unknown tool `{}` in `permissions.tools` ({})",
                        crate::term::line(&r.value),
                        suggest::hint(Kind::Tool, &r.value, c.names().iter().map(String::as_str))
                    ),
                )
                .help("use one of the known tools, or declare it as [tools.NAME] in org/tools.toml")
            }),
            field => (!known.contains(&r.value)).then(|| {
                Diagnostic::at(
                    &f.path,
                    &f.text,
                    Some(r.span.clone()),
                    format!(
                        "`{}` in `{field}` is no agent ({})",
                        r.value,
                        suggest::hint(Kind::Agent, &r.value, known.sorted.iter().map(String::as_str))
                    ),
                )
                .help("fix the name, remove it, or create agents/".to_string() + &r.value + "/resume.toml")
            }),
        };
        errs.extend(bad);
    }
    if errs.is_empty() {
        f.resume.share_lists();
        Ok(f.resume)
    } else {
        Err(errs)
    }
}

/// The problem with a resume's `node`, if any: it must be a node of
/// `[cluster]`, and there must be one.
fn check_node(f: &resume::ResumeFile, r: &resume::Reference, cluster: Option<&Cluster>) -> Option<Diagnostic> {
    let at = |m: String| Diagnostic::at(&f.path, &f.text, Some(r.span.clone()), m);
    match cluster {
        None => Some(
            at(format!("`node = \"{}\"` but the org is on one machine", r.value))
                .help("remove `node`, or declare the nodes under [cluster] in org/org.toml"),
        ),
        Some(c) if !c.has_node(&r.value) => Some(
            at(format!(
                "`{}` in `node` is no node of [cluster] ({})",
                r.value,
                suggest::hint(Kind::Node, &r.value, c.nodes.iter().map(AgentName::as_str))
            ))
            .help(format!(
                "use one of the nodes of [cluster] in org/org.toml, or add \"{}\" to `nodes` there",
                r.value
            )),
        ),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::{edit, new_org as org};

    /// The last good resume of `agent` in the bundle.
    fn saved_resume(layout: &Layout, agent: &str) -> Option<String> {
        let text = std::fs::read_to_string(layout.last_good_resumes()).ok()?;
        let mut all: BTreeMap<String, String> = serde_json::from_str(&text).unwrap();
        all.remove(agent)
    }

    /// Puts `text` in the bundle as the last good resume of `agent`.
    fn put_saved_resume(layout: &Layout, agent: &str, text: &str) {
        let mut all: BTreeMap<String, String> =
            serde_json::from_str(&std::fs::read_to_string(layout.last_good_resumes()).unwrap()).unwrap();
        all.insert(agent.into(), text.into());
        std::fs::write(layout.last_good_resumes(), serde_json::to_string(&all).unwrap()).unwrap();
    }

    #[test]
    fn every_command_uses_the_last_good_version_the_lock_holder_saved() {
        let (_d, root) = org();
        let layout = Layout::new(&root);
        edit(&root, "agents/manager/resume.toml", "title = \"Manager\"", "title = \"Boss\"");
        let good = Org::load(&root).unwrap();
        assert!(good.last_good.is_empty() && good.problems().is_empty());
        // Nothing is saved until the process that runs turns saves it.
        assert!(!layout.last_good_dir().exists());
        good.save_last_good().unwrap();
        assert_eq!(
            saved_resume(&layout, "manager").unwrap(),
            std::fs::read_to_string(root.join("agents/manager/resume.toml")).unwrap()
        );
        // One file for every resume, none per agent.
        assert!(!layout.last_good_dir().join("agents").exists());
        assert!(layout.last_good(Path::new("org/org.toml")).is_file());
        assert!(layout.last_good(Path::new("org/models.toml")).is_file());

        // A bad edit: every way of loading keeps the saved version and reports the edit.
        edit(&root, "agents/manager/resume.toml", "every = 1", "every = = 1");
        edit(&root, "org/org.toml", "max_parallel = 8", "max_parallel = 0");
        for org in [Org::load(&root).unwrap(), Org::load_or_last_good(&root, None)] {
            assert_eq!(org.agent("manager").unwrap().title, "Boss");
            assert_eq!(org.settings.max_parallel, 8);
            assert!(org.broken.is_empty(), "{:?}", org.broken);
            assert_eq!(org.last_good, [PathBuf::from("org/org.toml"), PathBuf::from("agents/manager/resume.toml")]);
            let problems = org.problems_of(&["manager"]);
            assert_eq!(problems.len(), 2, "{problems:?}");
            assert!(org.problems_of(&["planner"]).iter().all(|p| p.path.ends_with("org/org.toml")));
            // Saving again keeps the good version, not the bad edit.
            org.save_last_good().unwrap();
            let saved = saved_resume(&layout, "manager").unwrap();
            assert!(saved.contains("title = \"Boss\"") && !saved.contains("= = 1"), "{saved}");
        }
    }

    #[test]
    fn a_new_agent_whose_first_resume_is_invalid_is_held_and_says_so() {
        let (_d, root) = org();
        Org::load(&root).unwrap().save_last_good().unwrap();
        std::fs::create_dir_all(root.join("agents/scribe")).unwrap();
        std::fs::write(root.join("agents/scribe/resume.toml"), "name = \"scribe\"\nmodel = \"nope\"\n").unwrap();
        let org = Org::load(&root).unwrap();
        assert!(org.broken.contains_key("scribe") && org.last_good.is_empty());
        let e = org.agent("scribe").unwrap_err().to_string();
        assert!(e.contains("no last good version") && e.contains("unknown model key `nope`"), "{e}");
    }

    #[test]
    fn a_reload_that_changed_nothing_writes_nothing() {
        let (_d, root) = org();
        let first = Org::load(&root).unwrap();
        first.save_last_good().unwrap();
        let layout = Layout::new(&root);
        put_saved_resume(&layout, "hr", "marker");
        let models = layout.last_good(Path::new("org/models.toml"));
        std::fs::write(&models, "marker").unwrap();
        // The same files again: passed over, so the markers stay.
        let again = Org::load(&root).unwrap();
        again.save_last_good_since(Some(&first)).unwrap();
        assert_eq!(saved_resume(&layout, "hr").unwrap(), "marker");
        assert_eq!(std::fs::read_to_string(&models).unwrap(), "marker");
        // An edit is saved, and without a saved org every file is checked.
        edit(&root, "agents/hr/resume.toml", "title = \"", "title = \"Chief ");
        let edited = Org::load(&root).unwrap();
        edited.save_last_good_since(Some(&again)).unwrap();
        assert!(saved_resume(&layout, "hr").unwrap().contains("Chief "));
        put_saved_resume(&layout, "hr", "marker");
        edited.save_last_good().unwrap();
        assert!(saved_resume(&layout, "hr").unwrap().contains("Chief "));
        assert_ne!(std::fs::read_to_string(&models).unwrap(), "marker");
    }

    #[test]
    fn only_the_text_found_valid_is_saved_not_an_edit_made_since_the_load() {
        let (_d, root) = org();
        let layout = Layout::new(&root);
        edit(&root, "agents/hr/resume.toml", "title = \"", "title = \"Chief ");
        let org = Org::load(&root).unwrap();
        // Edited again, to something invalid, before the save: the org runs
        // the version it loaded, and only that one may become the last good.
        edit(&root, "agents/hr/resume.toml", "title = \"Chief ", "title = 3 # \"");
        org.save_last_good().unwrap();
        assert_eq!(saved_resume(&layout, "hr"), None, "the edited text is not the one found valid");
        edit(&root, "agents/hr/resume.toml", "title = 3 # \"", "title = \"Chief ");
        org.save_last_good().unwrap();
        assert!(saved_resume(&layout, "hr").unwrap().contains("title = \"Chief "));
        assert_eq!(
            saved_resume(&layout, "planner").unwrap(),
            std::fs::read_to_string(root.join("agents/planner/resume.toml")).unwrap()
        );
    }

    #[test]
    fn a_last_good_version_that_no_longer_fits_the_org_is_not_used_and_gone_agents_are_forgotten() {
        let (_d, root) = org();
        let layout = Layout::new(&root);
        Org::load(&root).unwrap().save_last_good().unwrap();
        // planner's saved resume names coder_01; coder_01 leaves and planner's file breaks.
        std::fs::remove_dir_all(root.join("agents/coder_01")).unwrap();
        edit(&root, "agents/planner/resume.toml", "every = 1", "every = 0");
        let org = Org::load(&root).unwrap();
        assert!(org.broken.contains_key("planner"), "a saved resume naming a gone agent was used");
        org.save_last_good().unwrap();
        assert_eq!(saved_resume(&layout, "coder_01"), None);
        assert!(saved_resume(&layout, "planner").is_some());
    }

    /// Resumes are kept in one file. A copy an earlier version kept in a
    /// file of its own (flat, `agents/NAME.toml`, or in the mirrored layout,
    /// `agents/NAME/resume.toml`) is still used, and goes once the bundle
    /// holds that agent's.
    #[test]
    fn last_good_resumes_are_one_file_and_copies_kept_by_earlier_versions_are_used_until_replaced() {
        let (_d, root) = org();
        let layout = Layout::new(&root);
        let rel = |a: &str| PathBuf::from(format!("agents/{a}/resume.toml"));
        let text = |a: &str| std::fs::read_to_string(root.join(rel(a))).unwrap();
        // An org saved by earlier versions: hr flat, planner and manager mirrored.
        std::fs::create_dir_all(layout.last_good_dir().join("agents")).unwrap();
        std::fs::write(layout.last_good(&rel("hr")), text("hr")).unwrap();
        for a in ["planner", "manager"] {
            let old = layout.last_good_mirrored(&rel(a));
            std::fs::create_dir_all(old.parent().unwrap()).unwrap();
            std::fs::write(old, text(a)).unwrap();
        }
        edit(&root, "agents/planner/resume.toml", "every = 1", "every = 0");
        edit(&root, "agents/hr/resume.toml", "every = 1", "every = 0");
        let org = Org::load(&root).unwrap();
        assert!(org.broken.is_empty(), "the old copies were not used: {:?}", org.problems());
        assert_eq!(org.last_good, [rel("hr"), rel("planner")]);
        org.save_last_good().unwrap();
        // manager's valid resume is in the bundle and its old copy goes;
        // hr's and planner's only good copies stay where they are.
        assert_eq!(saved_resume(&layout, "manager").unwrap(), text("manager"));
        assert!(!layout.last_good_mirrored(&rel("manager")).exists());
        assert_eq!((saved_resume(&layout, "hr"), saved_resume(&layout, "planner")), (None, None));
        assert!(layout.last_good(&rel("hr")).is_file() && layout.last_good_mirrored(&rel("planner")).is_file());
        assert!(Org::load(&root).unwrap().broken.is_empty());
        // Fixed: their resumes join the bundle, and the last old copy goes with its folder.
        edit(&root, "agents/planner/resume.toml", "every = 0", "every = 1");
        edit(&root, "agents/hr/resume.toml", "every = 0", "every = 1");
        Org::load(&root).unwrap().save_last_good().unwrap();
        assert_eq!(saved_resume(&layout, "planner").unwrap(), text("planner"));
        assert!(!layout.last_good_dir().join("agents").exists());
        // A bundle that cannot be read is written again whole.
        std::fs::write(layout.last_good_resumes(), "{not json").unwrap();
        Org::load(&root).unwrap().save_last_good().unwrap();
        assert_eq!(saved_resume(&layout, "hr").unwrap(), text("hr"));
    }

    #[test]
    fn without_a_last_good_version_a_bad_org_toml_is_fatal_for_load_only() {
        let (_d, root) = org();
        edit(&root, "org/org.toml", "max_parallel = 8", "max_parallel = 0");
        assert!(matches!(Org::load(&root), Err(LoadOrgError::Invalid(_))));
        let lenient = Org::load_or_last_good(&root, None);
        assert!(lenient.last_good.is_empty() && !lenient.stale.is_empty());
    }

    #[test]
    fn the_names_resumes_list_are_the_org_s_own_not_copies() {
        let (_d, root) = org();
        let org = Org::load(&root).unwrap();
        let mut listed = 0;
        for r in org.agents.values() {
            for access in [&r.send_to, &r.read_from] {
                let resume::Access::Only(set) = access else { continue };
                for name in set {
                    let (key, _) = org.agents.get_key_value(name.as_str()).expect("an agent of the org");
                    assert!(name.is_shared_with(key), "{} lists a copy of {name}", r.name);
                    listed += 1;
                }
            }
        }
        assert!(listed > 5, "the default org's resumes list {listed} names");
    }

    #[test]
    fn groups_must_name_agents_and_resumes_may_name_groups_which_become_their_members() {
        let (_d, root) = org();
        let toml = std::fs::read_to_string(root.join("org/org.toml")).unwrap();
        let line = toml.lines().count() + 3;
        std::fs::write(root.join("org/org.toml"), format!("{toml}\n[groups]\neng = [\"planner\", \"coderr_01\"]\n"))
            .unwrap();
        let Err(LoadOrgError::Invalid(d)) = Org::load(&root) else { panic!("an unknown member loaded") };
        let d = &d.0[0];
        assert_eq!((d.line, d.column), (Some(line), Some(19)), "{d}");
        assert!(d.message.starts_with("`coderr_01` in group `eng` is no agent (known: coder_01, "), "{d}");
        assert_eq!(d.message.matches(", ").count(), 5, "at most ten, here every agent: {d}");

        std::fs::write(root.join("org/org.toml"), format!("{toml}\n[groups]\neng = [\"planner\", \"coder_01\"]\n"))
            .unwrap();
        edit(&root, "agents/hr/resume.toml", "send_to = [\"manager\"]", "send_to = [\"manager\", \"@eng\"]");
        edit(&root, "agents/janitor/resume.toml", "send_to = [\"manager\"]", "send_to = [\"@nope\"]");
        let org = Org::load(&root).unwrap();
        let hr = org.agent("hr").unwrap();
        assert!(hr.send_to.allows("planner") && hr.send_to.allows("coder_01") && hr.send_to.allows("manager"));
        assert_eq!(hr.send_to_written(), ["manager", "@eng"]);
        let d = &org.broken["janitor"][0];
        assert!(d.message.contains("unknown group `@nope` in `send_to` (known: @eng)"), "{d}");
        assert!(d.path.ends_with("agents/janitor/resume.toml") && d.line.is_some(), "{d}");
        assert_eq!(org.groups_of("planner"), ["eng"]);
    }

    #[test]
    fn a_resume_names_a_node_of_the_cluster_and_a_node_keeps_only_its_agents_mail() {
        let (_d, root) = org();
        let toml = std::fs::read_to_string(root.join("org/org.toml")).unwrap();
        edit(&root, "agents/planner/resume.toml", "name = \"planner\"", "name = \"planner\"\nnode = \"b\"");
        // Without [cluster], a node is a mistake.
        let org = Org::load(&root).unwrap();
        let d = &org.broken["planner"][0];
        assert!(d.message.contains("`node = \"b\"` but the org is on one machine") && d.line.is_some(), "{d}");
        std::fs::write(
            root.join("org/org.toml"),
            format!("{toml}\n[cluster]\nname = \"t\"\nnats_url = \"nats://127.0.0.1:4222\"\nnodes = [\"a\", \"bb\"]\n"),
        )
        .unwrap();
        let org = Org::load(&root).unwrap();
        let d = &org.broken["planner"][0];
        assert!(d.message.contains("`b` in `node` is no node of [cluster] (known: bb, a)"), "{d}");
        std::fs::write(
            root.join("org/org.toml"),
            format!("{toml}\n[cluster]\nname = \"t\"\nnats_url = \"nats://127.0.0.1:4222\"\nnodes = [\"a\", \"b\"]\n"),
        )
        .unwrap();
        let mut org = Org::load(&root).unwrap();
        assert!(org.broken.is_empty(), "{:?}", org.broken);
        let (planner, manager) = (org.agent("planner").unwrap().clone(), org.agent("manager").unwrap().clone());
        assert_eq!((org.node_of(&planner), org.node_of(&manager)), (Some("b"), Some("a")));
        // Not knowing its node, a process may look but not run turns.
        org.here = None;
        assert!(org.check_node().unwrap_err().contains("--node NAME or LEMMING_NODE=NAME"));
        assert!(org.runs_here(&planner) && org.folders_here().contains(&"planner".to_string()));
        org.here = Some("c".into());
        assert!(org.check_node().unwrap_err().contains("`c` (LEMMING_NODE or --node) is no node of this org"));
        org.here = Some("a".into());
        assert_eq!(org.check_node(), Ok(()));
        assert!(!org.runs_here(&planner) && org.runs_here(&manager));
        assert_eq!(org.elsewhere(), ["planner"]);
        let here = org.folders_here();
        assert!(!here.contains(&"planner".to_string()) && here.contains(&"manager".to_string()), "{here:?}");
        assert_eq!(here.len(), agent_folders(&org.layout).len() - 1);
        org.here = Some("b".into());
        assert_eq!(org.folders_here(), ["planner"]);
        assert_eq!(org.elsewhere().len(), org.agents.len() - 1);
    }

    /// Above [`AGENTS_PER_THREAD`] agents the resumes load on several threads:
    /// the same agents, problems and files kept, in folder order.
    #[test]
    fn a_large_org_loads_by_several_threads_in_folder_order() {
        let (_d, root) = org();
        let n = 3 * AGENTS_PER_THREAD;
        for i in 0..n {
            let dir = root.join(format!("agents/w{i:04}"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("resume.toml"), format!("name = \"w{i:04}\"\nmodel = \"default\"\n")).unwrap();
        }
        Org::load(&root).unwrap().save_last_good().unwrap();
        // Two bad edits with a last good version, one new agent without, and a bad folder name.
        edit(&root, "agents/planner/resume.toml", "every = 1", "every = 0");
        let late = format!("agents/w{:04}/resume.toml", n - 10);
        std::fs::write(root.join(&late), "name = \"w\"\n").unwrap();
        std::fs::create_dir_all(root.join("agents/w0100x")).unwrap();
        std::fs::write(root.join("agents/w0100x/resume.toml"), "name = 1\n").unwrap();
        std::fs::create_dir_all(root.join("agents/Bad")).unwrap();
        let org = Org::load(&root).unwrap();
        let folders = agent_folders(&org.layout);
        assert_eq!(org.agents.len() + org.broken.len(), folders.len());
        assert_eq!(org.broken.keys().collect::<Vec<_>>(), ["Bad", "w0100x"]);
        assert_eq!(org.last_good, [PathBuf::from("agents/planner/resume.toml"), PathBuf::from(&late)]);
        let mut stale: Vec<&Path> = org.stale.iter().map(|d| d.path.strip_prefix(&root).unwrap()).collect();
        stale.dedup();
        assert_eq!(stale, [Path::new("agents/planner/resume.toml"), Path::new(&late)], "{:?}", org.stale);
        let kept: Vec<&Path> = org.valid.iter().map(|(p, _)| &**p).filter(|p| p.starts_with("agents")).collect();
        assert_eq!(kept.len(), folders.len() - 4);
        assert!(kept.is_sorted(), "the valid files are kept in folder order");
    }

    const TOOLS: &str = "[tools.word_count]\nprogram = \"wc\"\ndescription = \"Counts words.\"\n";

    #[test]
    fn tools_toml_loads_into_the_catalog_and_resumes_may_only_grant_known_tools() {
        let (_d, root) = org();
        // No tools.toml: only the built-in tools, and no problem.
        let plain = Org::load(&root).unwrap();
        assert!(plain.tools.custom.is_empty() && plain.problems().is_empty());
        std::fs::write(root.join("org/tools.toml"), TOOLS).unwrap();
        edit(
            &root,
            "agents/manager/resume.toml",
            "tools = [\"read_file\", \"write_file\", \"list_files\", \"recall\"]",
            "tools = [\"read_file\", \"word_count\"]",
        );
        let org = Org::load(&root).unwrap();
        assert_eq!(org.tools.custom["word_count"].program, "wc");
        assert_eq!(org.agent("manager").unwrap().tools, ["read_file", "word_count"]);
        assert!(org.problems().is_empty(), "{:?}", org.problems());

        // A tool that is neither built in nor declared holds the agent, at its place.
        edit(&root, "agents/manager/resume.toml", "\"word_count\"]", "\"word_count\", \"fly\"]");
        let org = Org::load(&root).unwrap();
        let d = &org.broken["manager"][0];
        assert!(
            d.message.starts_with("unknown tool `fly` in `permissions.tools` (known: read_file, write_file,")
                && d.message.ends_with("hire_agent, word_count)"),
            "{d}"
        );
        assert!(d.help.as_deref().unwrap().contains("org/tools.toml"), "{d}");
        let line = std::fs::read_to_string(root.join("agents/manager/resume.toml")).unwrap();
        let want = line.lines().position(|l| l.starts_with("tools = ")).unwrap() + 1;
        assert_eq!(d.line, Some(want), "{d}");
        assert_eq!(d.column, Some(line.lines().nth(want - 1).unwrap().find("\"fly\"").unwrap() + 1), "{d}");
    }

    #[test]
    fn a_bad_tools_toml_is_fatal_without_a_last_good_version_and_replaced_by_it_with_one() {
        let (_d, root) = org();
        let tools = root.join("org/tools.toml");
        edit(
            &root,
            "agents/manager/resume.toml",
            "tools = [\"read_file\", \"write_file\", \"list_files\", \"recall\"]",
            "tools = [\"word_count\"]",
        );
        std::fs::write(&tools, "[tools.word_count]\nprogram = \"wc\"\n").unwrap();
        let Err(LoadOrgError::Invalid(d)) = Org::load(&root) else { panic!("a bad tools.toml loaded") };
        assert_eq!(d.0.len(), 1, "{d}");
        assert!(d.0[0].path.ends_with("org/tools.toml") && d.0[0].message.contains("missing `description`"), "{d}");
        // Leniently: the problem is reported, and no agent is held for a tool it cannot check.
        let lenient = Org::load_or_last_good(&root, None);
        assert!(lenient.broken.is_empty(), "{:?}", lenient.broken);
        assert_eq!(lenient.problems_of(&[]).len(), 1);

        std::fs::write(&tools, TOOLS).unwrap();
        let good = Org::load(&root).unwrap();
        good.save_last_good().unwrap();
        assert!(Layout::new(&root).last_good(Path::new("org/tools.toml")).is_file());
        std::fs::write(&tools, "[tools.word_count]\nprogram = 1\n").unwrap();
        for org in
            [Org::load(&root).unwrap(), Org::load_or_last_good(&root, None), Org::load_or_last_good(&root, Some(&good))]
        {
            assert_eq!(org.tools, good.tools);
            assert_eq!(org.last_good, [PathBuf::from("org/tools.toml")]);
            assert_eq!(org.problems().len(), 2, "{:?}", org.problems());
            assert!(org.broken.is_empty());
        }
        // Removing the file removes the custom tools: the agent that uses one is held.
        std::fs::remove_file(&tools).unwrap();
        let org = Org::load(&root).unwrap();
        assert!(org.tools.custom.is_empty() && org.broken.contains_key("manager"));
    }

    #[test]
    fn config_files_have_a_size_limit_that_names_the_file() {
        let (_d, root) = org();
        let p = root.join("agents/hr/resume.toml");
        let long = "x".repeat(resume::MAX_INSTRUCTIONS_BYTES + 1);
        std::fs::write(&p, format!("name = \"hr\"\nmodel = \"default\"\ninstructions = \"\"\"{long}\"\"\"\n")).unwrap();
        let org = Org::load(&root).unwrap();
        let d = &org.broken["hr"][0];
        assert!(d.message.contains("`instructions` is 65537 bytes; the limit is 65536 bytes"), "{d}");
        assert_eq!(d.line, Some(3), "{d}");

        std::fs::write(&p, vec![b'#'; resume::MAX_RESUME_BYTES as usize + 1]).unwrap();
        let org = Org::load(&root).unwrap();
        let d = &org.broken["hr"][0];
        assert_eq!(d.path, p);
        assert!(d.message.contains("262145 bytes; the limit is 262144 bytes"), "{d}");

        // A link to a device is not followed (it leads out of the org), and a
        // FIFO does not block.
        std::fs::remove_file(&p).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &p).unwrap();
        let d = &Org::load(&root).unwrap().broken["hr"][0];
        assert!(d.message.contains("outside the org"), "{d}");
        std::fs::remove_file(&p).unwrap();
        let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(Org::load(&root).unwrap().broken["hr"][0].message.contains("not a regular file"));
    }
}
