//! The script provider: replies read from a TOML file, for tests and demos.
//!
//! ```toml
//! [[reply]]
//! agent = "manager"   # optional: any agent when absent
//! turn = 2            # optional: any turn when absent
//! text = '{"messages":[{"to":"human","body":"hi"}]}'
//! # error = "boom"    # instead of text: the call fails with this message, as a provider that is down
//! # finish = "length" # optional: the stop reason the reply reports, as a server
//! #                   # would ("length" or "max_tokens": cut at the token limit)
//! ```
//!
//! The first entry that matches the agent and turn answers. The file is read on
//! every call, so it can be edited between turns.

use std::path::PathBuf;

use serde::Deserialize;

use crate::{BoxFuture, Provider, ProviderError, Reply, Request, Usage};

/// The script provider.
#[derive(Debug, Clone)]
pub struct Script {
    /// The provider instance name (for errors).
    pub name: String,
    /// The reply file.
    pub path: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptFile {
    #[serde(default)]
    reply: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    agent: Option<String>,
    turn: Option<u64>,
    text: Option<String>,
    error: Option<String>,
    finish: Option<String>,
}

impl Script {
    fn answer(&self, req: &Request) -> Result<Reply, ProviderError> {
        let config = |message: String| ProviderError::Config { provider: self.name.clone(), message };
        let raw = std::fs::read_to_string(&self.path)
            .map_err(|e| config(format!("cannot read script {}: {e}", self.path.display())))?;
        let file: ScriptFile =
            toml::from_str(&raw).map_err(|e| config(format!("script {} does not parse: {e}", self.path.display())))?;
        let entry = file
            .reply
            .iter()
            .find(|e| e.agent.as_deref().is_none_or(|a| a == req.agent) && e.turn.is_none_or(|t| t == req.turn))
            .ok_or_else(|| ProviderError::Call {
                provider: self.name.clone(),
                model: req.model.key.clone(),
                message: format!(
                    "no scripted reply for agent `{}` on turn {} in {}",
                    req.agent,
                    req.turn,
                    self.path.display()
                ),
                retryable: false,
                cause: crate::Cause::Refused,
            })?;
        if let Some(error) = &entry.error {
            return Err(ProviderError::Call {
                provider: self.name.clone(),
                model: req.model.key.clone(),
                message: error.clone(),
                retryable: false,
                cause: crate::Cause::Unavailable,
            });
        }
        let text = entry.text.clone().unwrap_or_default();
        let usage = Usage { estimated: false, ..Usage::estimate(req.prompt_chars(), text.chars().count()) };
        Ok(Reply { text, usage, model_key: req.model.key.clone(), finish: entry.finish.clone(), tool_calls: vec![] })
    }
}

impl Provider for Script {
    fn complete<'a>(&'a self, req: &'a Request) -> BoxFuture<'a, Result<Reply, ProviderError>> {
        Box::pin(async move { self.answer(req) })
    }
}
