//! What a message says about a name that is not known (an agent, a model
//! key, a tool, a group): every known name when there are few, else the
//! closest ones (at most ten, best first), else how many there are and where
//! they are listed. An org of 10,000 agents thus never prints 10,000 names
//! for one typo, and every such message reads the same way.

use std::fmt;

/// The most names a message shows.
pub const MAX: usize = 10;

/// How similar (Jaro-Winkler, 0 to 1) a name must be to count as close.
const CLOSE: f64 = 0.8;

/// Names longer than this (in bytes) are close to nothing when there are
/// many candidates: measuring them against each one would cost too much.
const LONGEST: usize = 256;

/// What kind of name was not found: it says how the names are called and
/// where they are all listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Agent names.
    Agent,
    /// Model keys of `org/models.toml`.
    ModelKey,
    /// Tool names.
    Tool,
    /// Groups of `org/org.toml`, written `@name`.
    Group,
    /// Nodes of `[cluster]` in `org/org.toml`.
    Node,
}

impl Kind {
    /// The word for one name of this kind (`agent`).
    pub fn one(self) -> &'static str {
        match self {
            Kind::Agent => "agent",
            Kind::ModelKey => "model key",
            Kind::Tool => "tool",
            Kind::Group => "group",
            Kind::Node => "node",
        }
    }

    fn many(self) -> &'static str {
        match self {
            Kind::Agent => "agents",
            Kind::ModelKey => "model keys",
            Kind::Tool => "tools",
            Kind::Group => "groups",
            Kind::Node => "nodes",
        }
    }

    fn listed(self) -> &'static str {
        match self {
            Kind::Agent => "`lemming agents` lists them",
            Kind::ModelKey => "`lemming models` lists them",
            Kind::Tool => "docs/tools.md lists the built-in ones, org/tools.toml the others",
            Kind::Group => "[groups] in org/org.toml lists them",
            Kind::Node => "`nodes` of [cluster] in org/org.toml lists them",
        }
    }
}

/// The names to show for `name`, best first: every candidate when there are
/// at most [`MAX`] (the close ones first, then the others in the order
/// given), else the close ones only, at most [`MAX`] (ties in name order).
pub fn closest<'c>(name: &str, candidates: impl IntoIterator<Item = &'c str>) -> Vec<&'c str> {
    let all: Vec<&str> = candidates.into_iter().collect();
    let name = &name.to_lowercase();
    if all.len() <= MAX {
        let mut scored: Vec<(Option<f64>, usize, &str)> =
            all.iter().enumerate().map(|(i, c)| (score(name, c), i, *c)).collect();
        // Close ones by score, then the rest as given.
        scored.sort_by(|a, b| match (a.0, b.0) {
            (Some(x), Some(y)) => y.total_cmp(&x).then(a.1.cmp(&b.1)),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.1.cmp(&b.1),
        });
        return scored.into_iter().map(|(_, _, c)| c).collect();
    }
    if name.len() > LONGEST {
        return Vec::new();
    }
    let mut close: Vec<(f64, &str)> = all.iter().filter_map(|c| score(name, c).map(|s| (s, *c))).collect();
    close.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    close.truncate(MAX);
    close.into_iter().map(|(_, c)| c).collect()
}

/// How close `candidate` is to `n` (lowercase; higher is closer), or `None`
/// when it is not close: Jaro-Winkler on the lowercase names, and a
/// candidate that starts with the name, contains it or differs from it by
/// one edit is close even when that measure says otherwise.
fn score(n: &str, candidate: &str) -> Option<f64> {
    if n.len() > LONGEST {
        return None;
    }
    // Most names are lowercase already: copy only those that are not.
    let c = if candidate.chars().any(char::is_uppercase) {
        std::borrow::Cow::Owned(candidate.to_lowercase())
    } else {
        std::borrow::Cow::Borrowed(candidate)
    };
    let c = c.as_ref();
    let similar = strsim::jaro_winkler(n, c);
    let (nl, cl) = (n.chars().count(), c.chars().count());
    let related = (nl >= 2 && c.starts_with(n))
        || (nl >= 3 && c.contains(n))
        || (cl >= 3 && n.contains(c))
        || (nl >= 2 && nl.abs_diff(cl) <= 1 && strsim::osa_distance(n, c) <= 1);
    if related {
        Some(similar.max(CLOSE))
    } else {
        (similar >= CLOSE).then_some(similar)
    }
}

/// What a message says of the known names of a kind, beside a name that is
/// none of them; shown as `known: a, b`, `closest: a, b` or
/// `1,234 agents; `lemming agents` lists them`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint {
    /// The kind of names.
    pub kind: Kind,
    /// The names shown, best first ([`closest`]).
    pub names: Vec<String>,
    /// How many names of the kind there are.
    pub total: usize,
}

/// The [`Hint`] for `name`, which is none of `candidates`.
pub fn hint<'c>(kind: Kind, name: &str, candidates: impl IntoIterator<Item = &'c str>) -> Hint {
    let all: Vec<&str> = candidates.into_iter().collect();
    let total = all.len();
    let names = closest(name, all).into_iter().map(String::from).collect();
    Hint { kind, names, total }
}

/// `unknown agent `plnner` (closest: planner, plan-b)`: the whole message
/// for a name of `kind` that is none of `candidates`. `name` is shown as given.
pub fn unknown<'c>(kind: Kind, name: &str, candidates: impl IntoIterator<Item = &'c str>) -> String {
    format!("unknown {} `{name}` ({})", kind.one(), hint(kind, name, candidates))
}

impl Hint {
    /// The hint without its `known:` or `closest:`, for a message that
    /// labels it itself: the names shown, comma separated, `none` when there
    /// are none of the kind, else how many there are and where they are listed.
    pub fn brief(&self) -> String {
        if !self.names.is_empty() {
            self.names.join(", ")
        } else if self.total == 0 {
            "none".into()
        } else {
            format!("{} {}; {}", thousands(self.total), self.kind.many(), self.kind.listed())
        }
    }
}

impl fmt::Display for Hint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.total <= MAX {
            write!(f, "known: {}", self.brief())
        } else if !self.names.is_empty() {
            write!(f, "closest: {}", self.brief())
        } else {
            f.write_str(&self.brief())
        }
    }
}

/// `1234567` as `1,234,567`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `agent_00001` … `agent_{n}`, like a large generated org.
    fn many(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("agent_{i:05}")).collect()
    }

    const SMALL: [&str; 6] = ["coder_01", "hr", "human", "janitor", "manager", "planner"];

    fn big() -> Vec<String> {
        let mut names = many(1000);
        names.extend(SMALL.iter().map(|s| s.to_string()));
        names.push("plan-b".into());
        names.sort();
        names
    }

    #[test]
    fn a_typo_finds_the_name_first() {
        let names = big();
        assert_eq!(closest("plnner", names.iter().map(String::as_str)), ["planner"]);
        assert_eq!(closest("planer", names.iter().map(String::as_str)), ["planner", "plan-b"]);
        assert_eq!(closest("mangaer", names.iter().map(String::as_str)), ["manager"]);
        assert_eq!(closest("Janitor", names.iter().map(String::as_str)), ["janitor"]);
    }

    #[test]
    fn a_prefix_or_a_part_finds_the_names_it_begins() {
        let names = big();
        // The shorter name is the closer one.
        assert_eq!(closest("plan", names.iter().map(String::as_str)), ["plan-b", "planner"]);
        let mut names = names;
        names.push("senior_coder".into());
        let near = closest("coder", names.iter().map(String::as_str));
        assert_eq!(near, ["coder_01", "senior_coder"]);
    }

    #[test]
    fn nothing_close_names_nobody_and_says_how_many_there_are() {
        let names = big();
        assert!(closest("zzz", names.iter().map(String::as_str)).is_empty());
        assert!(closest("cfo", names.iter().map(String::as_str)).is_empty());
        assert_eq!(
            unknown(Kind::Agent, "zzz", names.iter().map(String::as_str)),
            "unknown agent `zzz` (1,007 agents; `lemming agents` lists them)"
        );
        let long = "x".repeat(LONGEST + 1);
        assert!(closest(&long, names.iter().map(String::as_str)).is_empty());
    }

    #[test]
    fn many_close_ones_are_capped_at_ten_best_first() {
        let names = many(10_000);
        let near = closest("agent_0042", names.iter().map(String::as_str));
        assert_eq!(near.len(), MAX, "{near:?}");
        // One edit away beats a longer way off.
        assert!(near[..3].contains(&"agent_00042"), "{near:?}");
        let message = unknown(Kind::Agent, "agent_0042", names.iter().map(String::as_str));
        assert!(message.starts_with("unknown agent `agent_0042` (closest: "), "{message}");
        assert_eq!(message.matches(", ").count(), MAX - 1, "{message}");
        // Equally close ones come in name order.
        let near = closest("agent_", names.iter().map(String::as_str));
        assert_eq!(near, names[..MAX].iter().map(String::as_str).collect::<Vec<_>>());
    }

    #[test]
    fn a_small_org_lists_every_name_the_close_ones_first() {
        assert_eq!(closest("cfo", SMALL), SMALL);
        assert_eq!(closest("plnner", SMALL), ["planner", "coder_01", "hr", "human", "janitor", "manager"]);
        assert_eq!(
            unknown(Kind::Agent, "cfo", SMALL),
            "unknown agent `cfo` (known: coder_01, hr, human, janitor, manager, planner)"
        );
        assert_eq!(unknown(Kind::Group, "@eng", []), "unknown group `@eng` (known: none)");
        assert_eq!(unknown(Kind::ModelKey, "gpt", ["default"]), "unknown model key `gpt` (known: default)");
        // Eleven is no longer small.
        let eleven: Vec<String> = many(11);
        let h = hint(Kind::Tool, "fly", eleven.iter().map(String::as_str));
        assert_eq!((h.names.len(), h.total), (0, 11));
        assert!(h.to_string().starts_with("11 tools; "), "{h}");
    }

    #[test]
    fn counts_read_with_thousands_separators() {
        for (n, s) in [(0, "0"), (999, "999"), (1000, "1,000"), (10_000, "10,000"), (1_234_567, "1,234,567")] {
            assert_eq!(thousands(n), s);
        }
    }
}
