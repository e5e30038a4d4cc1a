//! Agent names: `^[a-z][a-z0-9_-]{0,63}$`, equal to the agent's folder name.

use std::fmt;

/// The rule, as shown to people.
pub const NAME_RULE: &str = "agent names start with a lower-case letter, then up to 63 of a-z, 0-9, '_' or '-'";

/// The name of the engine itself, used as the sender of bounces; no agent may take it.
pub const ENGINE: &str = "lemming";

/// The agent people drive from the shell.
pub const HUMAN: &str = "human";

/// A valid agent name. Shared, not copied: a clone counts a reference, so
/// that the names of a large org's charts (each agent lists tens) are the
/// org's own names, not copies of them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AgentName(std::sync::Arc<str>);

impl serde::Serialize for AgentName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid agent name {name:?}: {NAME_RULE}")]
pub struct InvalidName {
    /// The refused name.
    pub name: String,
}

impl AgentName {
    /// Validates a name.
    pub fn new(name: &str) -> Result<AgentName, InvalidName> {
        let b = name.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 64
            && b[0].is_ascii_lowercase()
            && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-');
        if ok {
            Ok(AgentName(name.into()))
        } else {
            Err(InvalidName { name: name.to_string() })
        }
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `other` is this very name, not an equal copy.
    #[cfg(test)]
    pub(crate) fn is_shared_with(&self, other: &AgentName) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }

    /// Whether this is the `human` agent.
    pub fn is_human(&self) -> bool {
        &*self.0 == HUMAN
    }
}

/// The agent names of an org, each made once: parsing through them, the
/// names a resume lists are the org's own, shared, not copies (each agent of
/// a large org lists tens).
#[derive(Debug, Default)]
pub struct Names(std::collections::HashSet<AgentName>);

impl Names {
    /// The valid names among `folders`.
    pub fn new<'a>(folders: impl IntoIterator<Item = &'a str>) -> Names {
        Names(folders.into_iter().filter_map(|f| AgentName::new(f).ok()).collect())
    }

    /// Whether `name` is one of them.
    pub fn contains(&self, name: &str) -> bool {
        self.0.contains(name)
    }

    /// `name` validated: the shared one when it is one of them.
    pub fn name(&self, name: &str) -> Result<AgentName, InvalidName> {
        match self.shared(name) {
            Some(n) => Ok(n),
            None => AgentName::new(name),
        }
    }

    /// The shared one when `name` is one of them.
    pub fn shared(&self, name: &str) -> Option<AgentName> {
        self.0.get(name).cloned()
    }
}

impl fmt::Display for AgentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, not `write_str`, so that width and alignment (`{:<16}`) apply.
        f.pad(&self.0)
    }
}

impl AsRef<str> for AgentName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for AgentName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_refuses_by_the_rule() {
        for ok in ["a", "manager", "coder_01", "x-y", &"a".repeat(64)] {
            assert!(AgentName::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "../x", "a/b", "A", "1a", "_a", "a.b", "a b", "a\0b", &"a".repeat(65), "é"] {
            let err = AgentName::new(bad).unwrap_err();
            assert!(err.to_string().contains("lower-case"), "{bad}");
        }
    }
}
