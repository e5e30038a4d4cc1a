//! Agent names: `^[a-z][a-z0-9_-]{0,63}$`, equal to the agent's folder name.

use std::fmt;

/// The rule, as shown to people.
pub const NAME_RULE: &str = "agent names start with a lower-case letter, then up to 63 of a-z, 0-9, '_' or '-'";

/// The name of the engine itself, used as the sender of bounces; no agent may take it.
pub const ENGINE: &str = "lemming";

/// The agent people drive from the shell.
pub const HUMAN: &str = "human";

/// A valid agent name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct AgentName(String);

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
            Ok(AgentName(name.to_string()))
        } else {
            Err(InvalidName { name: name.to_string() })
        }
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is the `human` agent.
    pub fn is_human(&self) -> bool {
        self.0 == HUMAN
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
