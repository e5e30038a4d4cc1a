//! What a message's `to` means: agent names, `@group` (each member of a group
//! of org.toml but the sender) and `*` (every agent the sender may write to).
//!
//! [`expand`] is the one place that turns a `to` into recipients: routing,
//! `lemming send`, fsck and the dry run of a turn all go through it (as
//! `Org::recipients`). A recipient named twice (directly and
//! through a group) is listed once. Each recipient is then checked against the
//! chart on its own; an unknown group refuses the whole message.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::chart::Chart;
use crate::mailbox::Reason;
use crate::message::To;
use crate::name::AgentName;
use crate::suggest::{self, Hint, Kind};

/// `to = "*"`: every agent the sender may write to.
pub const EVERYONE: &str = "*";

/// How a recipient was addressed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "via", content = "group")]
pub enum Via {
    /// By its name.
    Name,
    /// As a member of this group (`@name`).
    Group(String),
    /// By `*`.
    Everyone,
}

/// One agent a message goes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recipient {
    /// The agent's name, as written or as a member (not checked against the org).
    pub name: String,
    /// How it was addressed (the first way, when it was addressed twice).
    #[serde(flatten)]
    pub via: Via,
}

/// Why a message's `to` reaches nobody: the whole message is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unroutable {
    /// `@name` names no group of org.toml.
    #[error("unknown group `@{group}` ({hint})")]
    UnknownGroup {
        /// The group written, without its `@`.
        group: String,
        /// The groups of org.toml as a message shows them ([`group_hint`]).
        hint: String,
    },
    /// Every name it expands to is the sender itself, or `*` and the sender
    /// may write to nobody.
    #[error("{0}")]
    Nobody(String),
}

impl Unroutable {
    /// The dead-letter reason of a message refused for it.
    pub fn code(&self) -> Reason {
        match self {
            Unroutable::UnknownGroup { .. } => Reason::UnknownGroup,
            Unroutable::Nobody(_) => Reason::NoRecipient,
        }
    }
}

/// The recipients of a message from `from` addressed to `to`, in the order
/// written, each once. `groups` are the org's `[groups]`; `chart` says whom
/// `*` reaches. Names are not checked here (the chart checks each one).
pub fn expand(
    groups: &BTreeMap<String, Vec<AgentName>>,
    chart: &Chart<'_>,
    from: &str,
    to: &To,
) -> Result<Vec<Recipient>, Unroutable> {
    let mut out: Vec<Recipient> = Vec::new();
    let mut add = |name: &str, via: Via| {
        if !out.iter().any(|r| r.name == name) {
            out.push(Recipient { name: name.to_string(), via });
        }
    };
    for written in &to.0 {
        if written == EVERYONE {
            for name in chart.reachable(from) {
                add(&name, Via::Everyone);
            }
        } else if let Some(group) = written.strip_prefix('@') {
            let Some(members) = groups.get(group) else {
                return Err(Unroutable::UnknownGroup {
                    group: group.to_string(),
                    hint: group_hint(group, groups).to_string(),
                });
            };
            for m in members.iter().filter(|m| m.as_str() != from) {
                add(m.as_str(), Via::Group(group.to_string()));
            }
        } else {
            add(written, Via::Name);
        }
    }
    if out.is_empty() {
        let shown = to.0.join(", ");
        let why = if to.0.iter().any(|t| t == EVERYONE) {
            format!("`{shown}` reaches nobody: the org chart lets {from} write to no agent")
        } else {
            format!("`{shown}` reaches nobody but {from} itself")
        };
        return Err(Unroutable::Nobody(why));
    }
    Ok(out)
}

/// What a message says of the groups of org.toml beside `written` (a name
/// without its `@`) that is none of them: the groups closest to it, shown as
/// `@name` ([`suggest::hint`]).
pub fn group_hint(written: &str, groups: &BTreeMap<String, Vec<AgentName>>) -> Hint {
    let mut hint = suggest::hint(Kind::Group, written, groups.keys().map(String::as_str));
    for name in &mut hint.names {
        name.insert(0, '@');
    }
    hint
}

/// Whether `to` names a group or everyone, rather than agents only.
pub fn is_broadcast(to: &To) -> bool {
    to.0.iter().any(|t| t == EVERYONE || t.starts_with('@'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::new_org;

    fn names(r: &[Recipient]) -> Vec<&str> {
        r.iter().map(|r| r.name.as_str()).collect()
    }

    fn to(l: &[&str]) -> To {
        To(l.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn groups_expand_to_their_members_but_the_sender_each_once() {
        let (_d, root) = new_org();
        let mut org = crate::org::Org::load(&root).unwrap();
        let g = |l: &[&str]| l.iter().map(|n| AgentName::new(n).unwrap()).collect::<Vec<_>>();
        org.settings.groups.insert("eng".into(), g(&["planner", "coder_01", "manager"]));
        org.settings.groups.insert("ops".into(), g(&["hr"]));
        let r = expand(&org.settings.groups, &org.chart(), "manager", &to(&["planner", "@eng", "@ops"])).unwrap();
        assert_eq!(names(&r), ["planner", "coder_01", "hr"]);
        assert_eq!(r[0].via, Via::Name, "the first way it was addressed is kept");
        assert_eq!(r[1].via, Via::Group("eng".into()));
        let shown = serde_json::to_value(&r[..2]).unwrap();
        assert_eq!(
            shown,
            serde_json::json!([{"name": "planner", "via": "name"}, {"name": "coder_01", "via": "group", "group": "eng"}])
        );

        let e = expand(&org.settings.groups, &org.chart(), "manager", &to(&["planner", "@nope"])).unwrap_err();
        assert_eq!(e.to_string(), "unknown group `@nope` (known: @eng, @ops)");
        assert_eq!(e.code(), Reason::UnknownGroup);
        let e = expand(&org.settings.groups, &org.chart(), "manager", &to(&["@oops"])).unwrap_err();
        assert_eq!(e.to_string(), "unknown group `@oops` (known: @ops, @eng)", "the closest first");

        let e = expand(&org.settings.groups, &org.chart(), "hr", &to(&["@ops"])).unwrap_err();
        assert_eq!(e.code(), Reason::NoRecipient, "{e}");
        // Names are not checked here: the chart refuses each one on its own.
        assert_eq!(names(&expand(&org.settings.groups, &org.chart(), "hr", &to(&["cfo"])).unwrap()), ["cfo"]);
    }

    #[test]
    fn everyone_is_exactly_whom_the_chart_lets_the_sender_reach() {
        let (_d, root) = new_org();
        let org = crate::org::Org::load(&root).unwrap();
        for from in org.agents.keys() {
            let want = org.chart().reachable(from.as_str());
            match expand(&org.settings.groups, &org.chart(), from.as_str(), &to(&["*"])) {
                Ok(r) => {
                    assert_eq!(names(&r), want, "{from}");
                    assert!(r
                        .iter()
                        .all(|r| r.via == Via::Everyone && org.chart().check(from.as_str(), &r.name).is_ok()));
                }
                Err(e) => assert!(want.is_empty() && e.code() == Reason::NoRecipient, "{from}: {e}"),
            }
        }
    }
}
