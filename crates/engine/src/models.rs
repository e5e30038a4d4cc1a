//! `org/models.toml`: provider instances and model keys (DESIGN §7).

use std::collections::BTreeMap;
use std::path::Path;

use lemming_provider::{ModelSpec, Price, ProviderKind, ProviderSpec};
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
    base_url: Option<String>,
    api_key_env: Option<String>,
    timeout_secs: Option<f64>,
    max_retries: Option<u32>,
    latency_ms: Option<u64>,
    script: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    provider: Spanned<String>,
    model: Option<String>,
    input_price: Option<f64>,
    output_price: Option<f64>,
    cost_per_call: Option<f64>,
    temperature: Option<f64>,
    max_tokens: Option<u32>,
    fallback: Option<Spanned<String>>,
}

/// Parses and validates `models.toml` text. `org_root` resolves relative script paths.
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
        if let Some(t) = p.timeout_secs {
            if !(t.is_finite() && t > 0.0) {
                errs.push(
                    at(span.clone(), format!("provider `{name}`: `timeout_secs` must be more than 0"))
                        .help("timeout_secs = 60"),
                );
            }
        }
        providers.push(ProviderSpec {
            name: name.clone(),
            kind,
            base_url: p.base_url.clone(),
            api_key_env: p.api_key_env.clone(),
            timeout_secs: p.timeout_secs.unwrap_or(60.0),
            max_retries: p.max_retries.unwrap_or(2),
            latency_ms: p.latency_ms.unwrap_or(0),
            script: p.script.as_ref().map(|s| org_root.join(s)),
            extra: BTreeMap::new(),
        });
    }
    let provider_names: Vec<&str> = std::iter::once("mock").chain(raw.providers.keys().map(String::as_str)).collect();

    let mut models = BTreeMap::new();
    for (key, m) in &raw.models {
        let span = m.span();
        let m = m.get_ref();
        if !provider_names.contains(&m.provider.get_ref().as_str()) {
            errs.push(
                at(m.provider.span(), format!("unknown provider `{}` in model `{key}`", m.provider.get_ref())).help(
                    format!(
                        "use one of: {} (or add a [providers.{}] table)",
                        provider_names.join(", "),
                        m.provider.get_ref()
                    ),
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
                key: key.clone(),
                provider: m.provider.get_ref().clone(),
                model: m.model.clone(),
                price,
                temperature: m.temperature,
                max_tokens: m.max_tokens,
                fallback: m.fallback.as_ref().map(|f| f.get_ref().clone()),
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
