//! `org/org.toml`: turn length, wake-on-message, parallelism, limits, the org-wide budget.

use std::collections::BTreeMap;
use std::path::Path;

use crate::config::{Doc, MAX_CREDITS, MAX_SECS_F};
use crate::error::Diagnostic;
use crate::name::AgentName;
use crate::suggest::{self, Kind};

/// The org-wide settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Seconds between timer turns of `lemming run`.
    pub turn_seconds: f64,
    /// Whether a new outbox message starts an early turn.
    pub wake_on_message: bool,
    /// Quiet time after a new message before the early turn starts, in
    /// milliseconds: 0 (the default) starts it at once, and mail that lands
    /// while a turn runs is gathered into the next one.
    pub debounce_ms: u64,
    /// How many agents run at once.
    pub max_parallel: usize,
    /// Failed attempts on a piece of mail before it goes to dead as poison.
    pub max_attempts: u32,
    /// Largest accepted message file, in bytes.
    pub max_message_bytes: u64,
    /// Most unread messages put into one prompt; the rest wait for the next turn.
    pub max_mail_per_prompt: usize,
    /// How many turns of journal to keep.
    pub journal_keep_turns: u64,
    /// Days of daemon log files to keep.
    pub log_retention_days: u64,
    /// Org-wide credits for model calls: once all charges together reach it,
    /// no agent runs (`None`: no org-wide limit).
    pub budget: Option<f64>,
    /// Which OS sandbox `run_command` and custom tools run in.
    pub sandbox: SandboxMode,
    /// The most credits an agent hired with `hire_agent` may be given.
    pub max_hire_credits: f64,
    /// The limits of the tools (`[tools]`).
    pub tools: ToolLimits,
    /// Where `lemming run` serves the HTTP API and dashboard (`[http] listen`);
    /// none by default.
    pub http_listen: Option<std::net::SocketAddr>,
    /// Named groups of agents (`[groups]`): `to = "@name"` reaches each member
    /// the sender may write to, and `send_to`/`read_from` may name a group.
    pub groups: BTreeMap<String, Vec<AgentName>>,
    /// Read mail written this many turns ago or more moves from `inbox/cur/`
    /// to `inbox/archive/` (`None`: never).
    pub archive_after_turns: Option<u64>,
    /// The machines the org spans (`[cluster]`); `None`: one machine.
    pub cluster: Option<Cluster>,
}

/// `[cluster]` of org.toml: the nodes an org spans and the NATS server
/// (JetStream) through which they exchange mail.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    /// The org's name on the NATS server (the rule of agent names): its
    /// stream is `LEMMING_<NAME>` and its subjects `lemming.<name>.inbox.<agent>`.
    pub name: AgentName,
    /// The server's address, or several separated by commas (`nats://` or
    /// `tls://`, host and port, never credentials: those come from the
    /// environment).
    pub nats_url: String,
    /// The node names, in order; an agent without `node` runs on the first.
    pub nodes: Vec<AgentName>,
    /// How many servers keep each message of the org's stream.
    pub replicas: usize,
    /// How long JetStream remembers a message id to drop a repeated publish,
    /// in seconds.
    pub dedupe_window_secs: f64,
}

impl Cluster {
    /// The node an agent whose resume says `node` runs on.
    pub fn node_of<'a>(&'a self, node: Option<&'a str>) -> &'a str {
        node.unwrap_or_else(|| self.nodes.first().map(AgentName::as_str).unwrap_or_default())
    }

    /// Whether `name` is one of the nodes.
    pub fn has_node(&self, name: &str) -> bool {
        self.nodes.iter().any(|n| n.as_str() == name)
    }
}

/// Which OS sandbox runs the programs of `run_command` and custom tools (`sandbox` in org.toml).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SandboxMode {
    /// bubblewrap when `bwrap` works, else Landlock, else programs are refused.
    #[default]
    Auto,
    /// bubblewrap only: programs are refused when it does not work.
    Bwrap,
    /// Landlock only: programs are refused when the kernel lacks it.
    Landlock,
    /// No OS sandbox: programs run with lemming's own rights (the path and
    /// argument checks still apply).
    None,
}

impl SandboxMode {
    /// Every value, as written in org.toml.
    pub const NAMES: [&'static str; 4] = ["auto", "bwrap", "landlock", "none"];

    /// Parses its org.toml word.
    pub fn parse(s: &str) -> Option<SandboxMode> {
        match s {
            "auto" => Some(SandboxMode::Auto),
            "bwrap" => Some(SandboxMode::Bwrap),
            "landlock" => Some(SandboxMode::Landlock),
            "none" => Some(SandboxMode::None),
            _ => None,
        }
    }

    /// Its org.toml word.
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxMode::Auto => "auto",
            SandboxMode::Bwrap => "bwrap",
            SandboxMode::Landlock => "landlock",
            SandboxMode::None => "none",
        }
    }
}

/// The limits of the tools, from the `[tools]` table of org.toml.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolLimits {
    /// `read_file` returns at most this many bytes of a file (the rest is cut, and the result says so).
    pub max_read_bytes: u64,
    /// `write_file` refuses content larger than this.
    pub max_write_bytes: u64,
    /// The most bytes of output a tool result carries (a program's stdout and
    /// stderr together, a listing, matches); the rest is cut, and the result says so.
    pub max_output_bytes: u64,
    /// The most entries `list_files` lists, and matches `search_files` returns.
    pub max_entries: usize,
    /// How long a program (`run_command`, a custom tool) may run before its
    /// whole process group is killed, in seconds (a custom tool may set its own).
    pub timeout_secs: f64,
    /// The environment variables a program sees (all others are cleared).
    pub env: Vec<String>,
    /// The most tool calls of one reply that run; the others are answered
    /// `too many tool calls` without running.
    pub max_calls: usize,
}

impl Default for ToolLimits {
    fn default() -> ToolLimits {
        ToolLimits {
            max_read_bytes: 256 * 1024,
            max_write_bytes: 1024 * 1024,
            max_output_bytes: 16 * 1024,
            max_entries: 200,
            timeout_secs: 30.0,
            env: vec!["PATH".into(), "LANG".into()],
            max_calls: 16,
        }
    }
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            turn_seconds: 60.0,
            wake_on_message: true,
            debounce_ms: 0,
            max_parallel: 8,
            max_attempts: 3,
            max_message_bytes: 65536,
            max_mail_per_prompt: 50,
            journal_keep_turns: 20,
            log_retention_days: 7,
            budget: None,
            sandbox: SandboxMode::Auto,
            max_hire_credits: 50.0,
            tools: ToolLimits::default(),
            http_listen: None,
            groups: BTreeMap::new(),
            archive_after_turns: None,
            cluster: None,
        }
    }
}

/// The fields of `org.toml`.
const FIELDS: [&str; 17] = [
    "turn_seconds",
    "wake_on_message",
    "debounce_ms",
    "max_parallel",
    "max_attempts",
    "max_message_bytes",
    "max_mail_per_prompt",
    "journal_keep_turns",
    "log_retention_days",
    "budget",
    "sandbox",
    "max_hire_credits",
    "tools",
    "http",
    "groups",
    "archive_after_turns",
    "cluster",
];

/// The fields of the `[cluster]` table.
const CLUSTER_FIELDS: [&str; 5] = ["name", "nats_url", "nodes", "replicas", "dedupe_window_secs"];

/// The fields of the `[tools]` table.
const TOOL_FIELDS: [&str; 7] =
    ["max_read_bytes", "max_write_bytes", "max_output_bytes", "max_entries", "timeout_secs", "env", "max_calls"];

/// The fields of the `[http]` table.
const HTTP_FIELDS: [&str; 1] = ["listen"];

/// Parses and validates `org.toml` text, reporting every problem.
pub fn parse(path: &Path, text: &str) -> Result<Settings, Vec<Diagnostic>> {
    let doc = Doc::parse(path, text)?;
    let mut s = Settings::default();
    {
        let t = doc.root();
        if let Some(v) = t.float("turn_seconds", 0.0, false, MAX_SECS_F, "turn_seconds = 60 (at most a year)") {
            s.turn_seconds = *v.get_ref();
        }
        if let Some(w) = t.bool("wake_on_message") {
            s.wake_on_message = w;
        }
        let int = |field: &str, range: std::ops::RangeInclusive<i64>, example: &str| {
            t.int(field, range, example).map(|v| *v.get_ref() as u64)
        };
        if let Some(v) = int("debounce_ms", 0..=60_000, "debounce_ms = 5 (milliseconds, at most a minute)") {
            s.debounce_ms = v;
        }
        if let Some(v) = int("max_parallel", 1..=4096, "max_parallel = 8") {
            s.max_parallel = v as usize;
        }
        if let Some(v) = int("max_attempts", 1..=1000, "max_attempts = 3") {
            s.max_attempts = v as u32;
        }
        if let Some(v) = int("max_message_bytes", 256..=MAX_MESSAGE_BYTES, "max_message_bytes = 65536") {
            s.max_message_bytes = v;
        }
        if let Some(v) = int("max_mail_per_prompt", 1..=100_000, "max_mail_per_prompt = 50") {
            s.max_mail_per_prompt = v as usize;
        }
        if let Some(v) = int("journal_keep_turns", 1..=1_000_000_000, "journal_keep_turns = 20") {
            s.journal_keep_turns = v;
        }
        if let Some(v) = int("log_retention_days", 1..=36_500, "log_retention_days = 7") {
            s.log_retention_days = v;
        }
        if let Some(b) = t.float(
            "budget",
            0.0,
            true,
            MAX_CREDITS,
            "budget = 1000.0 (credits for the whole org), or remove it for no org-wide limit",
        ) {
            s.budget = Some(*b.get_ref());
        }
        if let Some(m) = t.str("sandbox") {
            match SandboxMode::parse(m.get_ref()) {
                Some(mode) => s.sandbox = mode,
                None => doc.push(doc.at(Some(m.span()), format!("unknown `sandbox` value `{}`", m.get_ref())).help(
                    format!(
                        "use one of: {} (auto: bubblewrap, else Landlock, else programs are refused)",
                        SandboxMode::NAMES.join(", ")
                    ),
                )),
            }
        }
        if let Some(c) = t.float("max_hire_credits", 0.0, true, MAX_CREDITS, "max_hire_credits = 50.0") {
            s.max_hire_credits = *c.get_ref();
        }
        if let Some(tt) = t.table("tools") {
            let int = |field: &str, range: std::ops::RangeInclusive<i64>, example: &str| {
                tt.int(field, range, example).map(|v| *v.get_ref() as u64)
            };
            if let Some(v) = int("max_read_bytes", 1..=MAX_MESSAGE_BYTES, "max_read_bytes = 262144") {
                s.tools.max_read_bytes = v;
            }
            if let Some(v) = int("max_write_bytes", 1..=1 << 30, "max_write_bytes = 1048576") {
                s.tools.max_write_bytes = v;
            }
            if let Some(v) = int("max_output_bytes", 1..=MAX_MESSAGE_BYTES, "max_output_bytes = 16384") {
                s.tools.max_output_bytes = v;
            }
            if let Some(v) = int("max_entries", 1..=1_000_000, "max_entries = 200") {
                s.tools.max_entries = v as usize;
            }
            if let Some(v) = tt.float("timeout_secs", 0.0, false, MAX_SECS_F, "timeout_secs = 30 (at most a year)") {
                s.tools.timeout_secs = *v.get_ref();
            }
            if let Some(v) = int("max_calls", 1..=10_000, "max_calls = 16") {
                s.tools.max_calls = v as usize;
            }
            if let Some(list) = tt.str_list("env") {
                s.tools.env = list.into_inner().into_iter().map(|v| v.into_inner()).collect();
            }
            tt.deny_unknown(&TOOL_FIELDS);
        }
        if let Some(ht) = t.table("http") {
            if let Some(l) = ht.str("listen") {
                match l.get_ref().parse::<std::net::SocketAddr>() {
                    Ok(a) => s.http_listen = Some(a),
                    Err(_) => doc.push(
                        doc.at(Some(l.span()), format!("`listen` is not an address and port: `{}`", l.get_ref()))
                            .help("write an IP address and a port, for example listen = \"127.0.0.1:7878\""),
                    ),
                }
            }
            ht.deny_unknown(&HTTP_FIELDS);
        }
        if let Some(v) = int("archive_after_turns", 1..=1_000_000_000, "archive_after_turns = 100") {
            s.archive_after_turns = Some(v);
        }
        if let Some(gt) = t.table("groups") {
            s.groups = groups(&doc, &gt);
        }
        if let Some(ct) = t.table("cluster") {
            s.cluster = cluster(&doc, &ct);
        }
        t.deny_unknown(&FIELDS);
    }
    let errs = doc.finish();
    if errs.is_empty() {
        Ok(s)
    } else {
        Err(errs)
    }
}

/// The `[groups]` table: each key a group name (the rule of agent names), each
/// value a list of agent names. Whether the members exist is checked with the
/// whole org.
fn groups(doc: &Doc<'_>, gt: &crate::config::Table<'_>) -> BTreeMap<String, Vec<AgentName>> {
    let mut out = BTreeMap::new();
    for key in gt.keys() {
        if let Err(e) = AgentName::new(&key) {
            let span = gt.span_of(&key);
            doc.push(
                doc.at(span, format!("group name {key:?}: {e}"))
                    .help("name groups like agents, for example engineering = [\"planner\", \"coder_01\"]"),
            );
        }
        let Some(list) = gt.str_list(&key) else { continue };
        let mut members = Vec::new();
        for m in list.into_inner() {
            let span = m.span();
            match AgentName::new(m.get_ref()) {
                Ok(n) if members.contains(&n) => doc.push(
                    doc.at(Some(span), format!("`{n}` is listed twice in group `{key}`")).help("list each member once"),
                ),
                Ok(n) => members.push(n),
                Err(e) => doc.push(
                    doc.at(Some(span), format!("in group `{key}`: {e}"))
                        .help("list agent names, for example [\"planner\"]"),
                ),
            }
        }
        out.insert(key, members);
    }
    out
}

/// The `[cluster]` table, when it is whole: the server's address (no
/// credentials in it) and at least one node name, each once.
fn cluster(doc: &Doc<'_>, ct: &crate::config::Table<'_>) -> Option<Cluster> {
    let name = ct
        .req_str("name", "add name = \"acme\" (the org's name on the NATS server, the same on every node)")
        .and_then(|n| match AgentName::new(n.get_ref()) {
            Ok(name) => Some(name),
            Err(e) => {
                doc.push(
                    doc.at(Some(n.span()), format!("`name` {:?}: {e}", n.get_ref()))
                        .help("name the org like an agent, for example name = \"acme\""),
                );
                None
            }
        });
    let url = ct.req_str("nats_url", "add nats_url = \"nats://127.0.0.1:4222\" (the NATS server with JetStream)");
    let url = url.filter(|u| {
        let bad = u.get_ref().split(',').map(str::trim).find_map(|one| {
            let (scheme, rest) = one.split_once("://").unwrap_or(("", one));
            if !matches!(scheme, "nats" | "tls") || rest.is_empty() {
                Some(format!("`nats_url` must be nats://HOST:PORT or tls://HOST:PORT, not `{one}`"))
            } else if rest.contains('@') {
                Some("`nats_url` holds credentials; org.toml is no place for them".into())
            } else {
                None
            }
        });
        if let Some(message) = &bad {
            doc.push(doc.at(Some(u.span()), message.clone()).help(
                "write the address alone (several separated by commas); give credentials in the environment: LEMMING_NATS_CREDS (a .creds file), LEMMING_NATS_TOKEN, or LEMMING_NATS_USER and LEMMING_NATS_PASSWORD",
            ));
        }
        bad.is_none()
    });
    let mut nodes: Vec<AgentName> = Vec::new();
    match ct.str_list("nodes") {
        None if !ct.has("nodes") => doc.push(doc.at(ct.span_of("nats_url"), "missing `nodes` in [cluster]").help(
            "list the node names, for example nodes = [\"a\", \"b\"] (an agent without `node` runs on the first)",
        )),
        None => {}
        Some(list) if list.get_ref().is_empty() => doc.push(
            doc.at(Some(list.span()), "`nodes` is empty")
                .help("list at least one node name, for example nodes = [\"a\"]"),
        ),
        Some(list) => {
            for n in list.into_inner() {
                match AgentName::new(n.get_ref()) {
                    Ok(name) if nodes.contains(&name) => doc.push(
                        doc.at(Some(n.span()), format!("node `{name}` is listed twice")).help("list each node once"),
                    ),
                    Ok(name) => nodes.push(name),
                    Err(e) => doc.push(
                        doc.at(Some(n.span()), format!("node name {:?}: {e}", n.get_ref()))
                            .help("name nodes like agents, for example nodes = [\"a\", \"b\"]"),
                    ),
                }
            }
        }
    }
    let mut replicas = 1;
    if let Some(v) = ct.int("replicas", 1..=5, "replicas = 3 (how many NATS servers keep each message; at most 5)") {
        replicas = *v.get_ref() as usize;
    }
    let mut dedupe_window_secs = DEDUPE_WINDOW_SECS;
    if let Some(v) = ct.float("dedupe_window_secs", 0.0, false, MAX_SECS_F, "dedupe_window_secs = 120") {
        dedupe_window_secs = *v.get_ref();
    }
    ct.deny_unknown(&CLUSTER_FIELDS);
    let (name, nats_url) = (name?, url?.into_inner());
    (!nodes.is_empty()).then_some(Cluster { name, nats_url, nodes, replicas, dedupe_window_secs })
}

/// JetStream's own default for how long it remembers a message id: two minutes.
pub const DEDUPE_WINDOW_SECS: f64 = 120.0;

/// Checks that every member of every group of `s` (parsed from `text`) is
/// one of the `known` agent folders (sorted, so that each lookup is a binary
/// search): each one that is not is reported at its place in the file, with
/// the closest known names ([`crate::suggest`]).
pub fn check_members(path: &Path, text: &str, s: &Settings, known: &[String]) -> Result<(), Vec<Diagnostic>> {
    debug_assert!(known.is_sorted(), "check_members needs the agent folders sorted");
    let unknown = |m: &str| known.binary_search_by(|k| k.as_str().cmp(m)).is_err();
    if !s.groups.values().flatten().any(|m| unknown(m.as_str())) {
        return Ok(());
    }
    let doc = Doc::parse(path, text)?;
    if let Some(gt) = doc.root().table("groups") {
        for key in gt.keys() {
            for m in gt.str_list(&key).map(|l| l.into_inner()).unwrap_or_default() {
                if unknown(m.get_ref()) {
                    let hint = suggest::hint(Kind::Agent, m.get_ref(), known.iter().map(String::as_str));
                    doc.push(
                        doc.at(Some(m.span()), format!("`{}` in group `{key}` is no agent ({hint})", m.get_ref()))
                            .help(format!("fix the name, remove it, or create agents/{}/resume.toml", m.get_ref())),
                    );
                }
            }
        }
    }
    let errs = doc.finish();
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs)
    }
}

/// The largest `max_message_bytes` accepted (64 MiB).
pub const MAX_MESSAGE_BYTES: i64 = 64 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors() {
        assert_eq!(parse(Path::new("o"), "").unwrap(), Settings::default());
        let s = parse(Path::new("o"), "max_parallel = 64\nturn_seconds = 0.5\n").unwrap();
        assert_eq!((s.max_parallel, s.turn_seconds), (64, 0.5));
        let e = parse(Path::new("o"), "max_parallel = 0\nturn_seconds = -1.0\nbudget = -5.0\n").unwrap_err();
        assert_eq!(e.len(), 3);
        // Type errors do not hide the problems after them.
        let e = parse(
            Path::new("o"),
            "max_parallel = \"4\"\nwake_on_message = 1\ndebounce_ms = -5\nmax_attempts = 2.5\nbudget = 1e300\nturn_seconds = nan\nmax_paralel = 3\n",
        )
        .unwrap_err();
        let lines: Vec<_> = e.iter().map(|d| d.line.unwrap()).collect();
        assert_eq!(lines, vec![1, 2, 3, 4, 5, 6, 7], "{e:#?}");
        assert_eq!(parse(Path::new("o"), "budget = 12.5\n").unwrap().budget, Some(12.5));
        assert!(parse(Path::new("o"), "max_paralel = 3\n").unwrap_err()[0].message.contains("unknown field"));
        assert_eq!(parse(Path::new("o"), "[tools]\nmax_calls = 4\n").unwrap().tools.max_calls, 4);
        let s = parse(Path::new("o"), "[http]\nlisten = \"127.0.0.1:9000\"\n").unwrap();
        assert_eq!(s.http_listen, Some("127.0.0.1:9000".parse().unwrap()));
        let e = parse(Path::new("o"), "[http]\nlisten = \"localhost\"\n").unwrap_err();
        assert_eq!((e[0].line, e[0].message.contains("not an address")), (Some(2), true), "{e:#?}");
        let s =
            parse(Path::new("o"), "archive_after_turns = 5\n[groups]\neng = [\"planner\", \"coder_01\"]\n").unwrap();
        assert_eq!(s.archive_after_turns, Some(5));
        assert_eq!(s.groups["eng"].iter().map(|n| n.as_str()).collect::<Vec<_>>(), ["planner", "coder_01"]);
        let e = parse(Path::new("o"), "[groups]\nEng = [\"planner\"]\nops = [\"a\", \"a\", \"B\"]\n").unwrap_err();
        let lines: Vec<_> = e.iter().map(|d| d.line.unwrap()).collect();
        assert_eq!(lines, vec![2, 3, 3], "{e:#?}");
    }

    #[test]
    fn a_cluster_needs_an_address_without_credentials_and_its_nodes_each_once() {
        let s = parse(
            Path::new("o"),
            "[cluster]\nname = \"acme\"\nnats_url = \"nats://127.0.0.1:4222\"\nnodes = [\"a\", \"b\"]\n",
        )
        .unwrap();
        let c = s.cluster.unwrap();
        assert_eq!(c.name.as_str(), "acme");
        assert_eq!((c.nats_url.as_str(), c.replicas, c.dedupe_window_secs), ("nats://127.0.0.1:4222", 1, 120.0));
        assert_eq!(c.nodes.iter().map(|n| n.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!((c.node_of(None), c.node_of(Some("b"))), ("a", "b"));
        let s = parse(
            Path::new("o"),
            "[cluster]\nname = \"o\"\nnats_url = \"nats://h1:4222, tls://h2:4222\"\nnodes = [\"a\"]\nreplicas = 3\ndedupe_window_secs = 2\n",
        )
        .unwrap();
        assert_eq!(s.cluster.map(|c| (c.replicas, c.dedupe_window_secs)), Some((3, 2.0)));
        assert_eq!(parse(Path::new("o"), "").unwrap().cluster, None);
        let problems = |text: &str| {
            let e = parse(Path::new("o"), text).unwrap_err();
            e.iter().map(|d| (d.line.unwrap_or(0), d.message.clone())).collect::<Vec<_>>()
        };
        let e = problems(
            "[cluster]\nname = \"A.B\"\nnats_url = \"nats://me:secret@h:4222\"\nnodes = [\"a\", \"a\", \"B\"]\nreplicas = 7\nnode = \"a\"\n",
        );
        assert_eq!(e.iter().map(|(l, _)| *l).collect::<Vec<_>>(), [2, 3, 4, 4, 5, 6], "{e:#?}");
        assert!(
            e[0].1.contains("`name` \"A.B\"")
                && e[1].1.contains("credentials")
                && e[2].1.contains("twice")
                && e[5].1.contains("unknown field `node`"),
            "{e:#?}"
        );
        let e = problems("[cluster]\nname = \"o\"\nnats_url = \"http://h:4222\"\nnodes = []\n");
        assert!(e[0].1.contains("nats://HOST:PORT") && e[1].1.contains("empty"), "{e:#?}");
        let e = problems("[cluster]\nnodes = [\"a\"]\n");
        assert!(e[0].1.contains("missing `name`") && e[1].1.contains("missing `nats_url`"), "{e:#?}");
        let e = problems("[cluster]\nname = \"o\"\nnats_url = \"nats://h:4222\"\n");
        assert!(e[0].1.contains("missing `nodes`"), "{e:#?}");
    }
}
