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

    /// Whether this kind is implemented in this build (every kind is).
    pub fn is_built(self) -> bool {
        true
    }
}

/// The kinds that speak HTTP.
const HTTP: &[ProviderKind] = &[ProviderKind::OpenAi, ProviderKind::Anthropic];
/// The kinds wrapped in retries, backoff and the circuit breaker.
const RESILIENT: &[ProviderKind] = &[ProviderKind::OpenAi, ProviderKind::Anthropic, ProviderKind::Command];
/// Every kind.
const ANY: &[ProviderKind] =
    &[ProviderKind::Mock, ProviderKind::Script, ProviderKind::OpenAi, ProviderKind::Anthropic, ProviderKind::Command];

/// Every field of `[providers.NAME]` with the kinds that read it. A field set
/// on a provider whose kind is not listed is an error, never silently ignored.
pub const PROVIDER_FIELDS: &[(&str, &[ProviderKind])] = &[
    ("kind", ANY),
    ("base_url", HTTP),
    ("api_key_env", HTTP),
    ("headers", HTTP),
    ("headers_env", HTTP),
    ("azure_api_version", &[ProviderKind::OpenAi]),
    ("anthropic_version", &[ProviderKind::Anthropic]),
    ("timeout_secs", RESILIENT),
    ("connect_timeout_secs", HTTP),
    ("max_retries", RESILIENT),
    ("backoff_ms", RESILIENT),
    ("breaker_threshold", RESILIENT),
    ("breaker_cooldown_secs", RESILIENT),
    ("program", &[ProviderKind::Command]),
    ("args", &[ProviderKind::Command]),
    ("env", &[ProviderKind::Command]),
    ("max_output_bytes", &[ProviderKind::Command]),
    ("latency_ms", &[ProviderKind::Mock]),
    ("script", &[ProviderKind::Script]),
    ("serve", HTTP),
];

/// Every field of `[models.KEY]` with the kinds (of the provider it names)
/// that read it.
pub const MODEL_FIELDS: &[(&str, &[ProviderKind])] = &[
    ("provider", ANY),
    ("model", RESILIENT),
    ("input_price", ANY),
    ("output_price", ANY),
    ("cost_per_call", ANY),
    ("temperature", HTTP),
    ("max_tokens", HTTP),
    ("fallback", ANY),
    ("structured", &[ProviderKind::OpenAi]),
    ("reply_max_messages", &[ProviderKind::OpenAi]),
    ("reply_max_chars", &[ProviderKind::OpenAi]),
    ("deployment", &[ProviderKind::OpenAi]),
    ("tools", ANY),
    ("stream", STREAMING),
];

/// The kinds that can stream a reply (`stream = true`): the HTTP kinds read
/// Server-Sent Events; `mock` hands its reply out in pieces, for demos and tests.
pub const STREAMING: &[ProviderKind] = &[ProviderKind::OpenAi, ProviderKind::Anthropic, ProviderKind::Mock];

/// The kinds that can take tools natively (`tools = "native"`); every kind
/// takes them in the reply contract.
pub const NATIVE_TOOL_KINDS: &[ProviderKind] = HTTP;

/// The kinds that read `field` of a `fields` table ([`PROVIDER_FIELDS`] or
/// [`MODEL_FIELDS`]); `None` for a field that does not exist.
pub fn kinds_reading(fields: &[(&str, &'static [ProviderKind])], field: &str) -> Option<&'static [ProviderKind]> {
    fields.iter().find(|(f, _)| *f == field).map(|(_, k)| *k)
}

/// The kinds' config names, joined for a message: "openai and anthropic".
pub fn kind_names(kinds: &[ProviderKind]) -> String {
    let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
    match names.split_last() {
        None => String::new(),
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

/// Whether a header carries a credential (its value must come from the
/// environment, never from a file): `Authorization`, `Proxy-Authorization`,
/// `Cookie`, and any name that mentions a key, token, secret, password or auth
/// (`x-api-key`, `api-key`, `x-goog-api-key`, `X-Auth-Token`…), in any case.
pub fn is_credential_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n == "cookie"
        || ["auth", "key", "token", "secret", "password", "passwd", "credential", "session", "signature"]
            .iter()
            .any(|w| n.contains(w))
}

/// Whether text holds what looks like an API key or token: a known key
/// prefix (`sk-`, `sk-ant-`, `xai-`, `gsk_`, `AIza`, `hf_`, `ghp_`, `glpat-`,
/// `xox?-`, `AKIA`, `Bearer `…) followed by a long token, or a run of 24 or more
/// letters, digits and `_` that mixes upper case, lower case and digits.
/// Model names, URLs and paths do not look like this.
pub fn looks_like_secret(text: &str) -> bool {
    secret_ranges(text).next().is_some()
}

/// The byte ranges of `text` that look like keys (see [`looks_like_secret`]).
pub fn secret_ranges(text: &str) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    const PREFIXES: [&str; 16] = [
        "sk-",
        "sk_",
        "rk_",
        "pk_live_",
        "xai-",
        "gsk_",
        "AIza",
        "hf_",
        "ghp_",
        "gho_",
        "github_pat_",
        "glpat-",
        "xoxb-",
        "xoxp-",
        "AKIA",
        "pplx-",
    ];
    let token = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices().chain(std::iter::once((text.len(), ' '))) {
        match (token(c), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                let word = &text[s..i];
                let prefixed = PREFIXES.iter().any(|p| word.starts_with(p) && word.len() >= p.len() + 16);
                let mixed = word.split('-').any(|run| {
                    run.len() >= 24
                        && run.chars().any(|c| c.is_ascii_uppercase())
                        && run.chars().any(|c| c.is_ascii_lowercase())
                        && run.chars().any(|c| c.is_ascii_digit())
                });
                if prefixed || mixed {
                    out.push(s..i);
                }
                start = None;
            }
            _ => {}
        }
    }
    // `Bearer TOKEN` and `Basic TOKEN`: the scheme says the rest is a credential.
    for scheme in ["Bearer ", "Basic ", "bearer ", "basic "] {
        let mut from = 0;
        while let Some(at) = text[from..].find(scheme) {
            let s = from + at + scheme.len();
            let e = text[s..]
                .find(|c: char| c.is_whitespace() || c == '"' || c == '\'')
                .map(|n| s + n)
                .unwrap_or(text.len());
            if e - s >= 8 {
                out.push(s..e);
            }
            from = e.max(s);
        }
    }
    out.into_iter()
}

/// What the `command` kind runs (`program`, `args`, `env`, `max_output_bytes`).
#[derive(Debug, Clone, PartialEq)]
pub struct CommandSpec {
    /// The program: a bare name looked up in `PATH`, or a path (relative paths
    /// are resolved against the org folder when the config is validated).
    pub program: String,
    /// Fixed arguments. The prompt is never put here: it goes to stdin.
    pub args: Vec<String>,
    /// Names of the environment variables passed through; every other one is cleared.
    pub env: Vec<String>,
    /// The most bytes of stdout accepted; more is a failed call.
    pub max_output_bytes: u64,
}

impl CommandSpec {
    /// The default `env` allow-list.
    pub const DEFAULT_ENV: [&'static str; 1] = ["PATH"];
    /// The default output cap (1 MiB).
    pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 1 << 20;
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
    /// HTTP kinds: extra request headers (names and literal values; never credentials).
    pub headers: BTreeMap<String, String>,
    /// HTTP kinds: extra request headers whose values are read, at call time,
    /// from environment variables (header name to variable name).
    pub headers_env: BTreeMap<String, String>,
    /// `openai` only: when set, the Azure OpenAI variant (the key goes in an
    /// `api-key` header and the URL names the deployment and this `api-version`).
    pub azure_api_version: Option<String>,
    /// `anthropic` only: the `anthropic-version` header.
    pub anthropic_version: String,
    /// HTTP kinds: the connect timeout, in seconds.
    pub connect_timeout_secs: f64,
    /// The first retry's delay before jitter, in milliseconds; it doubles on each retry.
    pub backoff_ms: u64,
    /// Consecutive failed calls that open the circuit breaker.
    pub breaker_threshold: u32,
    /// How long an open breaker fails calls fast, in seconds.
    pub breaker_cooldown_secs: f64,
    /// `command` only: what to run.
    pub command: Option<CommandSpec>,
    /// HTTP kinds: a local server lemming starts on first use, keeps
    /// running and stops when it exits (`serve = {...}`).
    pub serve: Option<ServeSpec>,
    /// Extra settings that only some kinds use, kept as TOML.
    pub extra: BTreeMap<String, toml::Value>,
}

/// A local server managed by lemming (`serve = { program, args, ready_path,
/// startup_timeout_secs }` on an HTTP provider): llama.cpp's `llama-server`,
/// llamafile, `ollama serve`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeSpec {
    /// The program: a bare name looked up in `PATH`, or a path (relative paths
    /// are resolved against the org folder when the config is validated).
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// The path under the provider's `base_url` host that answers 2xx once
    /// the server is ready (default `/health`).
    pub ready_path: String,
    /// How long to wait for it to be ready, in seconds (default 120).
    pub startup_timeout_secs: f64,
    /// Where its stdout and stderr go (`org/state/logs/serve-<provider>.log`).
    pub log: PathBuf,
    /// Where its state is written for `status` and `doctor`
    /// (`org/state/serve/<provider>.json`).
    pub state: PathBuf,
    /// The folder it runs in (the org's root).
    pub cwd: PathBuf,
}

impl ServeSpec {
    /// The default `ready_path`.
    pub const DEFAULT_READY_PATH: &'static str = "/health";
    /// The default `startup_timeout_secs`.
    pub const DEFAULT_STARTUP_TIMEOUT_SECS: f64 = 120.0;
}

impl ProviderSpec {
    /// The default `anthropic-version` header.
    pub const DEFAULT_ANTHROPIC_VERSION: &'static str = "2023-06-01";
    /// The default base URL of the `anthropic` kind.
    pub const DEFAULT_ANTHROPIC_URL: &'static str = "https://api.anthropic.com";

    /// A provider of this kind with every setting at its default.
    pub fn new(name: impl Into<String>, kind: ProviderKind) -> ProviderSpec {
        ProviderSpec {
            name: name.into(),
            kind,
            base_url: None,
            api_key_env: None,
            timeout_secs: 60.0,
            max_retries: 2,
            latency_ms: 0,
            script: None,
            headers: BTreeMap::new(),
            headers_env: BTreeMap::new(),
            azure_api_version: None,
            anthropic_version: Self::DEFAULT_ANTHROPIC_VERSION.into(),
            connect_timeout_secs: 10.0,
            backoff_ms: 500,
            breaker_threshold: 5,
            breaker_cooldown_secs: 30.0,
            command: None,
            serve: None,
            extra: BTreeMap::new(),
        }
    }

    /// The implicit `mock` provider that needs no `[providers]` entry.
    pub fn builtin_mock() -> ProviderSpec {
        ProviderSpec { max_retries: 0, ..ProviderSpec::new("mock", ProviderKind::Mock) }
    }
}

/// How a model is asked to keep to the reply contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Structured {
    /// Plain text; the tolerant parser finds the JSON object.
    #[default]
    None,
    /// `response_format: {"type": "json_object"}`.
    JsonObject,
    /// `response_format` with the reply contract as a JSON schema, `to` limited
    /// to the agents this agent may write to.
    JsonSchema,
}

impl Structured {
    /// Every value with its config name.
    pub const ALL: [(&'static str, Structured); 3] =
        [("none", Structured::None), ("json_object", Structured::JsonObject), ("json_schema", Structured::JsonSchema)];

    /// Parses a config name.
    pub fn parse(s: &str) -> Option<Structured> {
        Self::ALL.iter().find(|(n, _)| *n == s).map(|(_, v)| *v)
    }

    /// The config name.
    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, v)| *v == self).map(|(n, _)| *n).unwrap_or("none")
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
    /// How the reply contract is enforced (`openai` kind).
    pub structured: Structured,
    /// `json_schema` only: the most messages (and memory operations) a reply may hold.
    pub reply_max_messages: Option<u32>,
    /// `json_schema` only: the longest string (body, notes, memory key or value) in a reply.
    pub reply_max_chars: Option<u32>,
    /// Azure variant only: the deployment name (default: `model`).
    pub deployment: Option<String>,
    /// How tools are offered: in the reply contract, or as native function definitions.
    pub tools: ToolMode,
    /// Whether the reply is read as a stream (`stream = true`), its text handed
    /// to [`crate::Request::stream`] as it arrives.
    pub stream: bool,
}

/// How a model is offered its agent's tools (`tools` on a model key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ToolMode {
    /// `tool_calls` in the reply contract (prompt text, and the schema with `structured = "json_schema"`).
    #[default]
    Contract,
    /// Function definitions in the request, and the server's native tool calls (`openai`, `anthropic`).
    Native,
}

impl ToolMode {
    /// Every value with its config name.
    pub const ALL: [(&'static str, ToolMode); 2] = [("contract", ToolMode::Contract), ("native", ToolMode::Native)];

    /// Parses a config name.
    pub fn parse(s: &str) -> Option<ToolMode> {
        Self::ALL.iter().find(|(n, _)| *n == s).map(|(_, v)| *v)
    }

    /// The config name.
    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, v)| *v == self).map(|(n, _)| *n).unwrap_or("contract")
    }
}

impl ModelSpec {
    /// A model key on a provider with every other setting at its default.
    pub fn new(key: impl Into<String>, provider: impl Into<String>) -> ModelSpec {
        ModelSpec {
            key: key.into(),
            provider: provider.into(),
            model: None,
            price: Price::Free,
            temperature: None,
            max_tokens: None,
            fallback: None,
            structured: Structured::None,
            reply_max_messages: None,
            reply_max_chars: None,
            deployment: None,
            tools: ToolMode::Contract,
            stream: false,
        }
    }

    /// The model name sent to the server (the key when `model` is not set).
    pub fn wire_name(&self) -> &str {
        self.model.as_deref().unwrap_or(&self.key)
    }
}

/// The longest duration lemming accepts for any setting in seconds: one year.
pub const MAX_SECS: f64 = 365.0 * 24.0 * 3600.0;

/// Seconds as a `Duration`, clamped to `0..=MAX_SECS` (NaN is 0): never panics,
/// whatever a config file, the command line or a server's `Retry-After` says.
pub fn secs(s: f64) -> std::time::Duration {
    let s = if s.is_nan() { 0.0 } else { s.clamp(0.0, MAX_SECS) };
    std::time::Duration::from_secs_f64(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_headers_in_any_case() {
        for h in ["Authorization", "x-api-key", "API-KEY", "Api-Key", "x-goog-api-key", "X-Auth-Token", "Cookie"] {
            assert!(is_credential_header(h), "{h}");
        }
        for h in ["OpenAI-Organization", "anthropic-version", "X-Team", "Accept"] {
            assert!(!is_credential_header(h), "{h}");
        }
    }

    #[test]
    fn keys_look_like_keys_and_names_do_not() {
        for s in [
            "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789",
            "sk-ant-api03-ZZZZZZZZZZZZZZZZZZZZ",
            "AIzaSyA1234567890abcdefghijklmnop",
            "Bearer abc123def456",
            "Aa1Bb2Cc3Dd4Ee5Ff6Gg7Hh8Ii9",
            "https://h/v1?key=Aa1Bb2Cc3Dd4Ee5Ff6Gg7Hh8Ii9",
        ] {
            assert!(looks_like_secret(s), "{s}");
        }
        for s in [
            "meta-llama/Llama-3.3-70B-Instruct-Turbo",
            "mistralai/Mixtral-8x7B-Instruct-v0.1",
            "/nix/store/0c8mp2kx5qbdwls6y4jh8zsh4r1nq9mf-ollama-0.5.7/bin/ollama",
            "https://example.openai.azure.com",
            "OPENAI_API_KEY",
            "skill-builder",
            "2024-10-21",
        ] {
            assert!(!looks_like_secret(s), "{s}");
        }
        let text = "k = \"Bearer abcdefgh12\" # note";
        let r: Vec<_> = secret_ranges(text).collect();
        assert_eq!(r.len(), 1);
        assert_eq!(&text[r[0].clone()], "abcdefgh12");
    }

    #[test]
    fn every_field_names_kinds_and_kind_names_read_well() {
        assert!(PROVIDER_FIELDS.iter().chain(MODEL_FIELDS).all(|(_, k)| !k.is_empty()));
        assert_eq!(kinds_reading(PROVIDER_FIELDS, "latency_ms"), Some(&[ProviderKind::Mock][..]));
        assert_eq!(kinds_reading(PROVIDER_FIELDS, "nope"), None);
        assert_eq!(kind_names(RESILIENT), "openai, anthropic and command");
        assert_eq!(kind_names(NATIVE_TOOL_KINDS), "openai and anthropic");
    }

    #[test]
    fn tool_modes_parse_their_config_names() {
        for (name, mode) in ToolMode::ALL {
            assert_eq!(ToolMode::parse(name), Some(mode));
            assert_eq!(mode.name(), name);
        }
        assert_eq!(ToolMode::parse("Native"), None);
        assert_eq!(ToolMode::default(), ToolMode::Contract);
    }
}
