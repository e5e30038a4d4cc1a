//! `org/models.toml`: provider instances and model keys (DESIGN §7).

use std::collections::BTreeMap;
use std::path::Path;

use lemming_provider::{CommandSpec, ModelSpec, Price, ProviderKind, ProviderSpec, Structured};
use serde::Deserialize;
use toml::Spanned;

use crate::error::Diagnostic;

/// The validated models file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Models {
    /// Provider instances by name (the implicit `mock` is not listed).
    pub providers: Vec<ProviderSpec>,
    /// Model keys.
    pub models: BTreeMap<String, ModelSpec>,
}

impl Models {
    /// The known model keys, comma separated, for error messages.
    pub fn known_keys(&self) -> String {
        self.models.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    providers: BTreeMap<String, Spanned<RawProvider>>,
    #[serde(default)]
    models: BTreeMap<String, Spanned<RawModel>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    kind: Spanned<String>,
    base_url: Option<Spanned<String>>,
    api_key_env: Option<Spanned<String>>,
    timeout_secs: Option<f64>,
    max_retries: Option<u32>,
    latency_ms: Option<u64>,
    script: Option<String>,
    headers: Option<Spanned<BTreeMap<String, String>>>,
    azure_api_version: Option<Spanned<String>>,
    anthropic_version: Option<Spanned<String>>,
    connect_timeout_secs: Option<Spanned<f64>>,
    backoff_ms: Option<u64>,
    breaker_threshold: Option<Spanned<u32>>,
    breaker_cooldown_secs: Option<Spanned<f64>>,
    program: Option<Spanned<String>>,
    args: Option<Spanned<Vec<String>>>,
    env: Option<Spanned<Vec<String>>>,
    max_output_bytes: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    provider: Spanned<String>,
    model: Option<String>,
    input_price: Option<f64>,
    output_price: Option<f64>,
    cost_per_call: Option<f64>,
    temperature: Option<Spanned<f64>>,
    max_tokens: Option<Spanned<u32>>,
    fallback: Option<Spanned<String>>,
    structured: Option<Spanned<String>>,
    reply_max_messages: Option<Spanned<u32>>,
    reply_max_chars: Option<Spanned<u32>>,
    deployment: Option<Spanned<String>>,
}

/// `^[A-Za-z_][A-Za-z0-9_]*$`: a portable environment variable name.
fn env_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// An HTTP header name: RFC 9110 token characters.
fn header_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
}

/// Parses and validates `models.toml` text. `org_root` resolves relative script
/// and program paths.
pub fn parse(path: &Path, text: &str, org_root: &Path) -> Result<Models, Vec<Diagnostic>> {
    let raw: Raw = toml::from_str(text).map_err(|e| vec![Diagnostic::from_toml(path, text, &e)])?;
    let mut errs = Vec::new();
    let at = |span, m: String| Diagnostic::at(path, text, Some(span), m);
    let kinds = ProviderKind::ALL.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");

    let mut providers = Vec::new();
    for (name, p) in &raw.providers {
        let span = p.span();
        let p = p.get_ref();
        let Some(kind) = ProviderKind::parse(p.kind.get_ref()) else {
            errs.push(
                at(p.kind.span(), format!("unknown provider kind `{}`", p.kind.get_ref()))
                    .help(format!("use one of: {kinds}")),
            );
            continue;
        };
        let http = matches!(kind, ProviderKind::OpenAi | ProviderKind::Anthropic);
        if kind == ProviderKind::OpenAi && p.base_url.is_none() {
            errs.push(
                at(span.clone(), format!("provider `{name}` of kind openai needs `base_url`"))
                    .help("for example base_url = \"http://127.0.0.1:11434/v1\""),
            );
        }
        if kind == ProviderKind::Script && p.script.is_none() {
            errs.push(
                at(span.clone(), format!("provider `{name}` of kind script needs `script`"))
                    .help("script = \"org/script.toml\" (relative to the org folder)"),
            );
        }
        if kind == ProviderKind::Command && p.program.is_none() {
            errs.push(
                at(span.clone(), format!("provider `{name}` of kind command needs `program`"))
                    .help("program = \"ollama\" and args = [\"run\", \"llama3.2\"]; the prompt goes to its stdin"),
            );
        }
        // Fields that only some kinds read: a misplaced one is a mistake worth saying.
        let only = |field: &str, for_kind: &str, span: std::ops::Range<usize>| {
            at(span, format!("`{field}` is not used by provider `{name}` of kind {}", kind.name()))
                .help(format!("`{field}` is only for {for_kind} providers; remove it or change `kind`"))
        };
        if !http {
            for (field, span) in [
                ("base_url", p.base_url.as_ref().map(Spanned::span)),
                ("api_key_env", p.api_key_env.as_ref().map(Spanned::span)),
                ("headers", p.headers.as_ref().map(Spanned::span)),
                ("connect_timeout_secs", p.connect_timeout_secs.as_ref().map(Spanned::span)),
            ] {
                if let Some(span) = span {
                    errs.push(only(field, "openai and anthropic", span));
                }
            }
        }
        if kind != ProviderKind::OpenAi {
            if let Some(v) = &p.azure_api_version {
                errs.push(only("azure_api_version", "openai", v.span()));
            }
        }
        if kind != ProviderKind::Anthropic {
            if let Some(v) = &p.anthropic_version {
                errs.push(only("anthropic_version", "anthropic", v.span()));
            }
        }
        if kind != ProviderKind::Command {
            for (field, span) in [
                ("program", p.program.as_ref().map(Spanned::span)),
                ("args", p.args.as_ref().map(Spanned::span)),
                ("env", p.env.as_ref().map(Spanned::span)),
                ("max_output_bytes", p.max_output_bytes.as_ref().map(Spanned::span)),
            ] {
                if let Some(span) = span {
                    errs.push(only(field, "command", span));
                }
            }
        }
        if let Some(u) = &p.base_url {
            let v = u.get_ref();
            if !(v.starts_with("http://") || v.starts_with("https://")) || v.len() <= "https://".len() {
                errs.push(
                    at(u.span(), format!("provider `{name}`: base_url `{v}` is not an http:// or https:// URL"))
                        .help("for example base_url = \"http://127.0.0.1:8080/v1\""),
                );
            }
        }
        if let Some(k) = &p.api_key_env {
            let v = k.get_ref();
            if !env_name(v) {
                let looks_like_a_key = v.starts_with("sk-") || v.len() > 40;
                let shown = if looks_like_a_key { "…" } else { v.as_str() };
                let help = if looks_like_a_key {
                    "api_key_env names the variable that holds the key (api_key_env = \"OPENAI_API_KEY\"); never write a key into this file"
                } else {
                    "use letters, digits and _, e.g. api_key_env = \"OPENAI_API_KEY\""
                };
                let mut d = at(
                    k.span(),
                    format!("provider `{name}`: api_key_env `{shown}` is not an environment variable name"),
                )
                .help(help);
                if looks_like_a_key {
                    d.snippet = None; // never echo what may be a key
                }
                errs.push(d);
            }
        }
        if let Some(h) = &p.headers {
            for (k, v) in h.get_ref() {
                if !header_name(k) || v.contains(['\r', '\n']) {
                    errs.push(
                        at(h.span(), format!("provider `{name}`: header `{k}` has an invalid name or value"))
                            .help("header names use letters, digits and -; values are one line"),
                    );
                }
            }
        }
        if let Some(e) = &p.env {
            for v in e.get_ref() {
                if !env_name(v) {
                    errs.push(
                        at(e.span(), format!("provider `{name}`: `{v}` in env is not an environment variable name"))
                            .help(
                            "env lists the names of the variables the program may see, e.g. env = [\"PATH\", \"HOME\"]",
                        ),
                    );
                }
            }
        }
        let positive = |v: f64| v.is_finite() && v > 0.0 && v <= lemming_provider::config::MAX_SECS;
        if let Some(t) = p.timeout_secs {
            if !positive(t) {
                errs.push(
                    at(
                        span.clone(),
                        format!("provider `{name}`: `timeout_secs` must be more than 0 and at most a year"),
                    )
                    .help("timeout_secs = 60"),
                );
            }
        }
        for (field, v, example) in [
            ("connect_timeout_secs", &p.connect_timeout_secs, "connect_timeout_secs = 10"),
            ("breaker_cooldown_secs", &p.breaker_cooldown_secs, "breaker_cooldown_secs = 30"),
        ] {
            if let Some(v) = v {
                if !positive(*v.get_ref()) {
                    errs.push(
                        at(v.span(), format!("provider `{name}`: `{field}` must be more than 0 and at most a year"))
                            .help(example),
                    );
                }
            }
        }
        if let Some(k) = &p.breaker_threshold {
            if *k.get_ref() == 0 {
                errs.push(
                    at(k.span(), format!("provider `{name}`: `breaker_threshold` must be 1 or more"))
                        .help("breaker_threshold = 5 (failed calls in a row that open the breaker)"),
                );
            }
        }
        if let Some(m) = &p.max_output_bytes {
            if *m.get_ref() == 0 {
                errs.push(
                    at(m.span(), format!("provider `{name}`: `max_output_bytes` must be 1 or more"))
                        .help("max_output_bytes = 1048576"),
                );
            }
        }
        let defaults = ProviderSpec::new(name.clone(), kind);
        let command = p.program.as_ref().map(|prog| {
            let prog = prog.get_ref();
            let program = if prog.contains('/') && !Path::new(prog).is_absolute() {
                org_root.join(prog).to_string_lossy().into_owned()
            } else {
                prog.clone()
            };
            CommandSpec {
                program,
                args: p.args.as_ref().map(|a| a.get_ref().clone()).unwrap_or_default(),
                env: p
                    .env
                    .as_ref()
                    .map(|e| e.get_ref().clone())
                    .unwrap_or_else(|| CommandSpec::DEFAULT_ENV.iter().map(|s| s.to_string()).collect()),
                max_output_bytes: p
                    .max_output_bytes
                    .as_ref()
                    .map(|m| *m.get_ref())
                    .unwrap_or(CommandSpec::DEFAULT_MAX_OUTPUT_BYTES),
            }
        });
        providers.push(ProviderSpec {
            base_url: p.base_url.as_ref().map(|u| u.get_ref().clone()),
            api_key_env: p.api_key_env.as_ref().map(|k| k.get_ref().clone()),
            timeout_secs: p.timeout_secs.unwrap_or(defaults.timeout_secs),
            max_retries: p.max_retries.unwrap_or(defaults.max_retries),
            latency_ms: p.latency_ms.unwrap_or(0),
            script: p.script.as_ref().map(|s| org_root.join(s)),
            headers: p.headers.as_ref().map(|h| h.get_ref().clone()).unwrap_or_default(),
            azure_api_version: p.azure_api_version.as_ref().map(|v| v.get_ref().clone()),
            anthropic_version: p
                .anthropic_version
                .as_ref()
                .map(|v| v.get_ref().clone())
                .unwrap_or(defaults.anthropic_version.clone()),
            connect_timeout_secs: p
                .connect_timeout_secs
                .as_ref()
                .map(|v| *v.get_ref())
                .unwrap_or(defaults.connect_timeout_secs),
            backoff_ms: p.backoff_ms.unwrap_or(defaults.backoff_ms),
            breaker_threshold: p.breaker_threshold.as_ref().map(|v| *v.get_ref()).unwrap_or(defaults.breaker_threshold),
            breaker_cooldown_secs: p
                .breaker_cooldown_secs
                .as_ref()
                .map(|v| *v.get_ref())
                .unwrap_or(defaults.breaker_cooldown_secs),
            command,
            ..defaults
        });
    }
    let provider_names: Vec<&str> = std::iter::once("mock").chain(raw.providers.keys().map(String::as_str)).collect();
    let kind_of = |provider: &str| -> Option<ProviderKind> {
        if provider == "mock" {
            return Some(ProviderKind::Mock);
        }
        raw.providers.get(provider).and_then(|p| ProviderKind::parse(p.get_ref().kind.get_ref()))
    };
    let azure = |provider: &str| raw.providers.get(provider).is_some_and(|p| p.get_ref().azure_api_version.is_some());
    let structured_names = Structured::ALL.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");

    let mut models = BTreeMap::new();
    for (key, m) in &raw.models {
        let span = m.span();
        let m = m.get_ref();
        let provider = m.provider.get_ref().as_str();
        if !provider_names.contains(&provider) {
            errs.push(
                at(m.provider.span(), format!("unknown provider `{provider}` in model `{key}`"))
                    .help(
                        format!("use one of: {} (or add a [providers.{provider}] table)", provider_names.join(", "),),
                    ),
            );
        }
        if let Some(f) = &m.fallback {
            if !raw.models.contains_key(f.get_ref()) {
                errs.push(
                    at(f.span(), format!("unknown fallback model `{}`", f.get_ref()))
                        .help(format!("use one of: {}", raw.models.keys().cloned().collect::<Vec<_>>().join(", "))),
                );
            }
        }
        let bad = |v: Option<f64>| v.is_some_and(|v| !v.is_finite() || v < 0.0);
        if bad(m.input_price) || bad(m.output_price) || bad(m.cost_per_call) {
            errs.push(
                at(span.clone(), format!("model `{key}`: prices must be numbers 0 or more")).help("input_price = 0.15"),
            );
        }
        if let Some(t) = &m.temperature {
            if !(t.get_ref().is_finite() && (0.0..=2.0).contains(t.get_ref())) {
                errs.push(
                    at(t.span(), format!("model `{key}`: `temperature` must be from 0 to 2")).help("temperature = 0.2"),
                );
            }
        }
        for (field, v, example) in [
            ("max_tokens", &m.max_tokens, "max_tokens = 1024"),
            ("reply_max_messages", &m.reply_max_messages, "reply_max_messages = 4"),
            ("reply_max_chars", &m.reply_max_chars, "reply_max_chars = 2000"),
        ] {
            if let Some(v) = v {
                if *v.get_ref() == 0 && field != "reply_max_messages" {
                    errs.push(at(v.span(), format!("model `{key}`: `{field}` must be 1 or more")).help(example));
                }
            }
        }
        let structured = match &m.structured {
            None => Structured::None,
            Some(s) => match Structured::parse(s.get_ref()) {
                Some(v) => v,
                None => {
                    errs.push(
                        at(s.span(), format!("model `{key}`: unknown structured mode `{}`", s.get_ref()))
                            .help(format!("use one of: {structured_names}")),
                    );
                    Structured::None
                }
            },
        };
        let kind = kind_of(provider);
        if let (Some(s), Some(kind)) = (&m.structured, kind) {
            if structured != Structured::None && kind != ProviderKind::OpenAi {
                errs.push(
                    at(
                        s.span(),
                        format!(
                            "model `{key}`: `structured` needs an openai provider; `{provider}` is {}",
                            kind.name()
                        ),
                    )
                    .help("remove `structured` (the tolerant parser reads plain-text replies)"),
                );
            }
        }
        if structured != Structured::JsonSchema {
            for (field, v) in [("reply_max_messages", &m.reply_max_messages), ("reply_max_chars", &m.reply_max_chars)] {
                if let Some(v) = v {
                    errs.push(
                        at(
                            v.span(),
                            format!("model `{key}`: `{field}` only applies with structured = \"json_schema\""),
                        )
                        .help("add structured = \"json_schema\" or remove the field"),
                    );
                }
            }
        }
        if let Some(d) = &m.deployment {
            if !azure(provider) {
                errs.push(
                    at(d.span(), format!("model `{key}`: `deployment` is only for Azure OpenAI providers"))
                        .help("set azure_api_version on the provider, or remove `deployment`"),
                );
            }
        }
        let price = match (m.input_price, m.output_price, m.cost_per_call) {
            (None, None, None) => Price::Free,
            (i, o, None) => Price::PerMillion { input: i.unwrap_or(0.0), output: o.unwrap_or(0.0) },
            (None, None, Some(c)) => Price::PerCall(c),
            _ => {
                errs.push(
                    at(span.clone(), format!("model `{key}` sets both token prices and `cost_per_call`"))
                        .help("keep either input_price/output_price or cost_per_call"),
                );
                Price::Free
            }
        };
        models.insert(
            key.clone(),
            ModelSpec {
                model: m.model.clone(),
                price,
                temperature: m.temperature.as_ref().map(|t| *t.get_ref()),
                max_tokens: m.max_tokens.as_ref().map(|t| *t.get_ref()),
                fallback: m.fallback.as_ref().map(|f| f.get_ref().clone()),
                structured,
                reply_max_messages: m.reply_max_messages.as_ref().map(|v| *v.get_ref()),
                reply_max_chars: m.reply_max_chars.as_ref().map(|v| *v.get_ref()),
                deployment: m.deployment.as_ref().map(|d| d.get_ref().clone()),
                ..ModelSpec::new(key.clone(), provider)
            },
        );
    }
    if errs.is_empty() {
        Ok(Models { providers, models })
    } else {
        Err(errs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prices_and_checks_references() {
        let m = parse(
            Path::new("m"),
            "[models.default]\nprovider = \"mock\"\ninput_price = 1.0\noutput_price = 2.0\n[models.flat]\nprovider = \"mock\"\ncost_per_call = 0.5\nfallback = \"default\"\n",
            Path::new("/org"),
        )
        .unwrap();
        assert_eq!(m.models["default"].price, Price::PerMillion { input: 1.0, output: 2.0 });
        assert_eq!(m.models["flat"].price, Price::PerCall(0.5));
        let e = parse(
            Path::new("m"),
            "[models.a]\nprovider = \"nope\"\nfallback = \"zz\"\n[providers.p]\nkind = \"carrier-pigeon\"\n",
            Path::new("/org"),
        )
        .unwrap_err();
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e.iter().any(|d| d.help.as_deref().unwrap_or("").contains("mock")));
    }
}
