//! An org on disk: finding its root, the org-level state paths, and loading
//! and validating every config file into an [`Org`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lemming_provider::Registry;

use crate::chart::Chart;
use crate::error::{Diagnostic, Diagnostics};
use crate::models::{self, Models};
use crate::name::AgentName;
use crate::resume::{self, Resume};
use crate::settings::{self, Settings};

/// Paths of an org's files outside the agents' folders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The org folder (holds `org/` and `agents/`).
    pub root: PathBuf,
}

impl Layout {
    /// The layout of the org at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Layout {
        Layout { root: root.into() }
    }
    /// `org/org.toml`.
    pub fn org_toml(&self) -> PathBuf {
        self.root.join("org/org.toml")
    }
    /// `org/models.toml`.
    pub fn models_toml(&self) -> PathBuf {
        self.root.join("org/models.toml")
    }
    /// `agents/`.
    pub fn agents_dir(&self) -> PathBuf {
        self.root.join("agents")
    }
    /// `agents/<name>/`.
    pub fn agent_dir(&self, name: &str) -> PathBuf {
        self.root.join("agents").join(name)
    }
    /// `org/state/`, owned by the engine.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join("org/state")
    }
    /// `org/state/tmp/`, for atomic writes of state files.
    pub fn state_tmp(&self) -> PathBuf {
        self.root.join("org/state/tmp")
    }
    /// `org/state/turn.json`.
    pub fn turn_json(&self) -> PathBuf {
        self.root.join("org/state/turn.json")
    }
    /// `org/state/lock`.
    pub fn lock(&self) -> PathBuf {
        self.root.join("org/state/lock")
    }
    /// `org/state/ledger.jsonl`.
    pub fn ledger(&self) -> PathBuf {
        self.root.join("org/state/ledger.jsonl")
    }
    /// `org/state/journal/`.
    pub fn journal_dir(&self) -> PathBuf {
        self.root.join("org/state/journal")
    }
    /// `org/state/events.jsonl`.
    pub fn events(&self) -> PathBuf {
        self.root.join("org/state/events.jsonl")
    }
    /// `org/state/daemon.json`: the running daemon's pid.
    pub fn daemon_json(&self) -> PathBuf {
        self.root.join("org/state/daemon.json")
    }
    /// `org/state/paused`: present while the daemon is paused.
    pub fn paused(&self) -> PathBuf {
        self.root.join("org/state/paused")
    }
    /// `org/state/breakers.json`: the providers' circuit breakers.
    pub fn breakers(&self) -> PathBuf {
        self.root.join("org/state").join(lemming_provider::breaker::FILE_NAME)
    }
}

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
    #[error("{} is not an org: {} is missing\n  help: run `lemming init {}` or pass the folder that holds org/org.toml", root.display(), root.join("org/org.toml").display(), root.display())]
    NotAnOrg {
        /// The folder given.
        root: PathBuf,
    },
    /// org.toml or models.toml is invalid: the org cannot run.
    #[error("{0}")]
    Invalid(Diagnostics),
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
    pub agents: BTreeMap<AgentName, Resume>,
    /// Agent folders whose resume has problems: they are held, not run, and
    /// mail to and from them waits.
    pub broken: BTreeMap<String, Vec<Diagnostic>>,
    /// Problems in files for which the last good version is used instead
    /// (the daemon's hot reload), and in `org.toml`/`models.toml` when loaded
    /// leniently. Empty for a plain [`Org::load`].
    pub stale: Vec<Diagnostic>,
}

impl Org {
    /// Loads and validates every config file. A bad `org.toml` or `models.toml`
    /// is fatal; a bad resume only holds that agent (see [`Org::problems`]).
    pub fn load(root: &Path) -> Result<Org, LoadOrgError> {
        let layout = Layout::new(root);
        let mut fatal = Vec::new();
        let settings =
            read(&layout.org_toml()).and_then(|t| settings::parse(&layout.org_toml(), &t)).unwrap_or_else(|e| {
                fatal.extend(e);
                Settings::default()
            });
        let models = read(&layout.models_toml())
            .and_then(|t| models::parse(&layout.models_toml(), &t, root))
            .unwrap_or_else(|e| {
                fatal.extend(e);
                Models::default()
            });
        if !fatal.is_empty() {
            return Err(LoadOrgError::Invalid(Diagnostics(fatal)));
        }
        let (agents, broken) = load_agents(&layout, &models, true);
        Ok(Org { layout, settings, models, agents, broken, stale: Vec::new() })
    }

    /// Loads the org, falling back for every invalid file: to the last good
    /// version in `last_good` when there is one (the daemon's hot reload: a bad
    /// edit is refused and the last good version kept), else to defaults (for
    /// read-only commands such as `status`, which must work on a broken org).
    /// The problems of files replaced by a fallback are in [`Org::stale`].
    pub fn load_or_last_good(root: &Path, last_good: Option<&Org>) -> Org {
        let layout = Layout::new(root);
        let mut stale = Vec::new();
        let settings =
            read(&layout.org_toml()).and_then(|t| settings::parse(&layout.org_toml(), &t)).unwrap_or_else(|e| {
                stale.extend(e);
                last_good.map(|o| o.settings.clone()).unwrap_or_default()
            });
        let mut models_ok = true;
        let models = read(&layout.models_toml())
            .and_then(|t| models::parse(&layout.models_toml(), &t, root))
            .unwrap_or_else(|e| {
                stale.extend(e);
                models_ok = last_good.is_some();
                last_good.map(|o| o.models.clone()).unwrap_or_default()
            });
        let (mut agents, mut broken) = load_agents(&layout, &models, models_ok);
        if let Some(good) = last_good {
            let names: Vec<String> = broken.keys().cloned().collect();
            for name in names {
                if let Some(resume) = good.agents.get(name.as_str()) {
                    stale.extend(broken.remove(&name).unwrap_or_default());
                    agents.insert(resume.name.clone(), resume.clone());
                }
            }
        }
        Org { layout, settings, models, agents, broken, stale }
    }

    /// Every problem found: files replaced by a fallback, then invalid resumes in folder order.
    pub fn problems(&self) -> Vec<Diagnostic> {
        self.stale.iter().chain(self.broken.values().flatten()).cloned().collect()
    }

    /// The org chart.
    pub fn chart(&self) -> Chart<'_> {
        Chart::new(&self.agents)
    }

    /// Looks up an agent by name; the error lists the known ones.
    pub fn agent(&self, name: &str) -> Result<&Resume, UnknownAgent> {
        if let Err(e) = AgentName::new(name) {
            return Err(UnknownAgent { message: e.to_string() });
        }
        self.agents.get(name).ok_or_else(|| UnknownAgent {
            message: if self.broken.contains_key(name) {
                format!("agent `{name}` has an invalid resume; run `lemming validate` to see why")
            } else {
                format!("unknown agent `{name}` (known: {})", self.chart().known())
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
    /// What was wrong, with the known agents.
    pub message: String,
}

/// Reads `org/org.toml` or `org/models.toml` (the org is two folders up):
/// a link out of the org, a FIFO or a non-UTF-8 file is refused unread.
fn read(path: &Path) -> Result<String, Vec<Diagnostic>> {
    let root = path.parent().and_then(Path::parent).unwrap_or(Path::new("/"));
    crate::config::read(path, root)
}

/// The agent folders under `agents/`, sorted (hidden folders and files are skipped).
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

fn load_agents(
    layout: &Layout,
    models: &Models,
    check_models: bool,
) -> (BTreeMap<AgentName, Resume>, BTreeMap<String, Vec<Diagnostic>>) {
    let mut files = Vec::new();
    let mut broken: BTreeMap<String, Vec<Diagnostic>> = BTreeMap::new();
    for folder in agent_folders(layout) {
        let path = layout.agent_dir(&folder).join("resume.toml");
        if let Err(e) = AgentName::new(&folder) {
            broken.insert(
                folder.clone(),
                vec![Diagnostic::file(&layout.agent_dir(&folder), e.to_string()).help("rename the folder")],
            );
            continue;
        }
        match resume::load(&path, &folder) {
            Ok(f) => files.push(f),
            Err(d) => {
                broken.insert(folder, d);
            }
        }
    }
    // Names referenced must be agents that exist (even if their resume is broken).
    let existing: Vec<String> = files.iter().map(|f| f.resume.name.to_string()).chain(broken.keys().cloned()).collect();
    let mut agents = BTreeMap::new();
    for f in files {
        let mut errs = Vec::new();
        for r in &f.refs {
            let bad = match r.field {
                "model" => (check_models && !models.models.contains_key(&r.value)).then(|| {
                    Diagnostic::at(
                        &f.path,
                        &f.text,
                        Some(r.span.clone()),
                        format!("unknown model key `{}` (known: {})", r.value, models.known_keys()),
                    )
                    .help("use a key defined in org/models.toml, or add [models.".to_string() + &r.value + "] there")
                }),
                field => (!existing.contains(&r.value)).then(|| {
                    let mut known = existing.clone();
                    known.sort();
                    Diagnostic::at(
                        &f.path,
                        &f.text,
                        Some(r.span.clone()),
                        format!("`{}` in `{field}` is no agent (known: {})", r.value, known.join(", ")),
                    )
                    .help("fix the name, remove it, or create agents/".to_string() + &r.value + "/resume.toml")
                }),
            };
            errs.extend(bad);
        }
        if errs.is_empty() {
            agents.insert(f.resume.name.clone(), f.resume);
        } else {
            broken.insert(f.resume.name.to_string(), errs);
        }
    }
    (agents, broken)
}
