//! Typed provider and model settings, as validated from `org/models.toml` by the engine.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// The kinds of provider lemming knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    /// Deterministic and instant; the embedded default.
    Mock,
    /// Replies read from a file.
    Script,
    /// The chat-completions wire format.
    OpenAi,
    /// The Anthropic Messages API.
    Anthropic,
    /// A local program that reads the prompt on stdin.
    Command,
}

impl ProviderKind {
    /// Every kind with its config name.
    pub const ALL: [(&'static str, ProviderKind); 5] = [
        ("mock", ProviderKind::Mock),
        ("script", ProviderKind::Script),
        ("openai", ProviderKind::OpenAi),
        ("anthropic", ProviderKind::Anthropic),
        ("command", ProviderKind::Command),
    ];

    /// Parses a config name.
    pub fn parse(s: &str) -> Option<ProviderKind> {
        Self::ALL.iter().find(|(n, _)| *n == s).map(|(_, k)| *k)
    }

    /// The config name.
    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, k)| *k == self).map(|(n, _)| *n).unwrap_or("?")
    }

    /// Whether this kind is implemented in this build.
    pub fn is_built(self) -> bool {
        matches!(self, ProviderKind::Mock | ProviderKind::Script)
    }
}

/// One named provider instance (`[providers.NAME]`).
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderSpec {
    /// The instance name.
    pub name: String,
    /// Its kind.
    pub kind: ProviderKind,
    /// Base URL for HTTP kinds.
    pub base_url: Option<String>,
    /// Name of the environment variable holding the API key.
    pub api_key_env: Option<String>,
    /// Total timeout of one call, in seconds.
    pub timeout_secs: f64,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Mock only: a sleep before each reply, for benchmarks.
    pub latency_ms: u64,
    /// Script only: the reply file (absolute).
    pub script: Option<PathBuf>,
    /// Extra settings that only some kinds use, kept as TOML.
    pub extra: BTreeMap<String, toml::Value>,
}

impl ProviderSpec {
    /// The implicit `mock` provider that needs no `[providers]` entry.
    pub fn builtin_mock() -> ProviderSpec {
        ProviderSpec {
            name: "mock".into(),
            kind: ProviderKind::Mock,
            base_url: None,
            api_key_env: None,
            timeout_secs: 60.0,
            max_retries: 0,
            latency_ms: 0,
            script: None,
            extra: BTreeMap::new(),
        }
    }
}

/// How a model call is priced, in credits.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Price {
    /// Free.
    #[default]
    Free,
    /// Credits per million input and output tokens.
    PerMillion {
        /// Per million input tokens.
        input: f64,
        /// Per million output tokens.
        output: f64,
    },
    /// A fixed cost per call.
    PerCall(f64),
}

impl Price {
    /// The cost of one call with this usage.
    pub fn cost(&self, usage: &crate::Usage) -> f64 {
        match *self {
            Price::Free => 0.0,
            Price::PerMillion { input, output } => {
                (usage.input_tokens as f64 * input + usage.output_tokens as f64 * output) / 1e6
            }
            Price::PerCall(c) => c,
        }
    }
}

/// One model key (`[models.KEY]`).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// The key agents name in their resume.
    pub key: String,
    /// The provider instance name.
    pub provider: String,
    /// The model name sent to the server.
    pub model: Option<String>,
    /// How calls are priced.
    pub price: Price,
    /// Sampling temperature, if set.
    pub temperature: Option<f64>,
    /// Reply token limit, if set.
    pub max_tokens: Option<u32>,
    /// Another model key to try when this one fails.
    pub fallback: Option<String>,
}
