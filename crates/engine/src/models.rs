//! `org/models.toml`: provider instances and model keys.

use std::collections::BTreeMap;
use std::path::Path;

use std::ops::Range;

use lemming_provider::{
    config, CommandSpec, ModelSpec, Price, ProviderKind, ProviderSpec, ServeSpec, Structured, ToolMode,
};
use toml::Spanned;

use crate::config::{Doc, StrMap, MAX_CREDITS, MAX_SECS_F};
use crate::error::Diagnostic;
use crate::layout::Layout;

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

/// Limits of the numeric fields.
const MAX_RETRIES: i64 = 100;
const MAX_MS: i64 = 3_600_000;
const MAX_TOKENS: i64 = 10_000_000;
const MAX_OUTPUT_BYTES: i64 = 1 << 30;

/// Whether a URL carries a credential: a password before the host, or a
/// query parameter named like a key or token.
fn url_has_credential(url: &str) -> bool {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let query = rest.split_once('?').map(|(_, q)| q).unwrap_or("");
    authority.contains('@')
        || query.split('&').any(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            !v.is_empty() && lemming_provider::config::is_credential_header(k)
        })
}

/// Finds every literal credential in the file: a value of a credential header
/// (`Authorization`, `x-api-key`, `api-key`…) in `headers`, a URL with a
/// password or key in it, and any string that looks like a key. Each is masked
/// (never shown again) and reported.
fn refuse_secrets(doc: &mut Doc) {
    let mut found = Vec::new();
    for s in doc.strings() {
        let parts: Vec<&str> = s.path.split('.').collect();
        let header = match parts.as_slice() {
            ["providers", _, "headers", name] if !s.is_key => {
                lemming_provider::config::is_credential_header(name).then(|| name.to_string())
            }
            _ => None,
        };
        let url = parts.last() == Some(&"base_url") && url_has_credential(&s.text);
        if header.is_some() || url || lemming_provider::config::looks_like_secret(&s.text) {
            found.push((s, header));
        }
    }
    for (s, _) in &found {
        doc.mask(s.span.clone());
    }
    for (s, header) in found {
        let d = match header {
            Some(name) => doc
                .at(
                    Some(s.span),
                    format!("`{}` holds a literal credential; models.toml must not hold keys", s.path),
                )
                .help(format!(
                    "never write a key into this file: put it in an environment variable and name that instead, headers_env = {{ \"{name}\" = \"MY_KEY_VAR\" }}{}",
                    if name.eq_ignore_ascii_case("authorization") {
                        " (or api_key_env = \"MY_KEY_VAR\", sent as a bearer key)"
                    } else {
                        ""
                    }
                )),
            None => doc
                .at(Some(s.span), format!("`{}` holds what looks like a key or token; models.toml must not hold keys", s.path))
                .help(if s.path.ends_with("api_key_env") {
                    "api_key_env names the variable that holds the key (api_key_env = \"OPENAI_API_KEY\"); never write a key into this file"
                } else {
                    "never write a key into this file: keep it in an environment variable, named by api_key_env = \"OPENAI_API_KEY\" or headers_env = { \"x-api-key\" = \"MY_KEY_VAR\" }"
                }),
        };
        doc.push(d);
    }
}

/// The names of the fields of a field table.
fn names(fields: &[(&'static str, &'static [ProviderKind])]) -> Vec<&'static str> {
    fields.iter().map(|(f, _)| *f).collect()
}

/// Parses and validates `models.toml` text, reporting every problem. `org_root`
/// resolves relative script and program paths.
pub fn parse(path: &Path, text: &str, org_root: &Path) -> Result<Models, Vec<Diagnostic>> {
    let mut doc = Doc::parse(path, text)?;
    refuse_secrets(&mut doc);
    let models = check(&doc, org_root);
    let errs = doc.finish();
    if errs.is_empty() {
        Ok(models)
    } else {
        Err(errs)
    }
}

/// Reads every provider and model, recording each problem in `doc`.
fn check(doc: &Doc, org_root: &Path) -> Models {
    let root = doc.root();
    let at = |span: Range<usize>, m: String| doc.at(Some(span), m);
    let kinds = ProviderKind::ALL.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
    let providers_table = root.table("providers");
    let models_table = root.table("models");
    root.deny_unknown(&["providers", "models"]);

    let mut providers = Vec::new();
    let mut kind_of: BTreeMap<String, ProviderKind> = BTreeMap::new();
    let mut azure: Vec<String> = Vec::new();
    let provider_tables = providers_table.as_ref().map(|t| t.tables()).unwrap_or_default();
    for (name, p) in &provider_tables {
        let span = p.span().unwrap_or(0..0);
        let kind =
            p.req_str("kind", &format!("kind = \"openai\" (one of: {kinds})")).and_then(|k| match ProviderKind::parse(
                k.get_ref(),
            ) {
                Some(kind) => Some(kind),
                None => {
                    doc.push(
                        at(k.span(), format!("unknown provider kind `{}`", k.get_ref()))
                            .help(format!("use one of: {kinds}")),
                    );
                    None
                }
            });
        // Fields that the kind does not read: a misplaced one is a mistake worth saying.
        if let Some(kind) = kind {
            for field in p.keys() {
                if let Some(for_kinds) = config::kinds_reading(config::PROVIDER_FIELDS, &field) {
                    if !for_kinds.contains(&kind) {
                        doc.push(
                            at(
                                p.span_of(&field).unwrap_or(span.clone()),
                                format!("`{field}` is not used by provider `{name}` of kind {}", kind.name()),
                            )
                            .help(format!(
                                "`{field}` is only for {} providers; remove it or change `kind`",
                                config::kind_names(for_kinds)
                            )),
                        );
                    }
                }
            }
        }
        let base_url = p.str("base_url");
        let api_key_env = p.str("api_key_env");
        let timeout_secs = p.float("timeout_secs", 0.0, false, MAX_SECS_F, "timeout_secs = 60 (at most a year)");
        let max_retries = p.int("max_retries", 0..=MAX_RETRIES, "max_retries = 2 (tries after the first, 0 to 100)");
        let latency_ms = p.int("latency_ms", 0..=MAX_MS, "latency_ms = 30 (milliseconds, at most an hour)");
        let script = p.str("script");
        let headers = p.str_map("headers", "headers = { \"OpenAI-Organization\" = \"org-1\" }");
        let headers_env = p.str_map("headers_env", "headers_env = { \"x-api-key\" = \"MY_KEY_VAR\" }");
        let azure_api_version = p.str("azure_api_version");
        let anthropic_version = p.str("anthropic_version");
        let connect_timeout_secs =
            p.float("connect_timeout_secs", 0.0, false, MAX_SECS_F, "connect_timeout_secs = 10 (at most a year)");
        let backoff_ms = p.int("backoff_ms", 0..=MAX_MS, "backoff_ms = 500 (milliseconds, at most an hour)");
        let breaker_threshold = p.int(
            "breaker_threshold",
            1..=10_000,
            "breaker_threshold = 5 (failed calls in a row that open the breaker)",
        );
        let breaker_cooldown_secs =
            p.float("breaker_cooldown_secs", 0.0, false, MAX_SECS_F, "breaker_cooldown_secs = 30 (at most a year)");
        let program = p.str("program");
        let args = p.str_list("args");
        let env = p.str_list("env");
        let max_output_bytes =
            p.int("max_output_bytes", 1..=MAX_OUTPUT_BYTES, "max_output_bytes = 1048576 (at most 1 GiB)");
        let serve = p.table("serve").and_then(|t| serve_spec(&t, name, org_root));
        // The name becomes a file name (its state file and log): no path tricks.
        let plain = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if p.has("serve") && !plain {
            doc.push(
                at(span.clone(), format!("provider `{name}` has `serve`: its name must be letters, digits, _ or -"))
                    .help("its name names its state file and log; rename it, for example [providers.local]"),
            );
        }
        p.deny_unknown(&names(config::PROVIDER_FIELDS));

        let required = |missing: bool, what: &str, help: &str| {
            if missing {
                doc.push(at(span.clone(), format!("provider `{name}` of kind {what}")).help(help.to_string()));
            }
        };
        required(
            kind == Some(ProviderKind::OpenAi) && base_url.is_none() && !p.has("base_url"),
            "openai needs `base_url`",
            "for example base_url = \"http://127.0.0.1:11434/v1\"",
        );
        required(
            kind == Some(ProviderKind::Script) && script.is_none() && !p.has("script"),
            "script needs `script`",
            "script = \"org/script.toml\" (relative to the org folder)",
        );
        required(
            kind == Some(ProviderKind::Command) && program.is_none() && !p.has("program"),
            "command needs `program`",
            "program = \"ollama\" and args = [\"run\", \"llama3.2\"]; the prompt goes to its stdin",
        );
        if let Some(u) = &base_url {
            let v = u.get_ref();
            let host = v.strip_prefix("http://").or_else(|| v.strip_prefix("https://"));
            if host.is_none_or(|h| h.is_empty() || h.starts_with('/')) {
                doc.push(
                    at(u.span(), format!("provider `{name}`: base_url `{v}` is not an http:// or https:// URL"))
                        .help("for example base_url = \"http://127.0.0.1:8080/v1\""),
                );
            }
        }
        if let Some(k) = &api_key_env {
            // A value that looks like a key was reported (and hidden) above.
            if !env_name(k.get_ref()) && !config::looks_like_secret(k.get_ref()) {
                doc.push(
                    at(k.span(), format!("provider `{name}`: api_key_env `{}` is not an environment variable name", k.get_ref()))
                        .help("use letters, digits and _, e.g. api_key_env = \"OPENAI_API_KEY\"; never write a key into this file"),
                );
            }
        }
        for (k, v) in headers.iter().flat_map(|h| h.get_ref()) {
            if !header_name(k.get_ref()) || v.get_ref().contains(['\r', '\n']) {
                doc.push(
                    at(k.span(), format!("provider `{name}`: header `{}` has an invalid name or value", k.get_ref()))
                        .help("header names use letters, digits and -; values are one line"),
                );
            }
        }
        for (k, var) in headers_env.iter().flat_map(|h| h.get_ref()) {
            if !header_name(k.get_ref()) {
                doc.push(
                    at(k.span(), format!("provider `{name}`: `{}` in headers_env is not a header name", k.get_ref()))
                        .help(
                        "header names use letters, digits and -, e.g. headers_env = { \"x-api-key\" = \"MY_KEY_VAR\" }",
                    ),
                );
            }
            if !env_name(var.get_ref()) && !config::looks_like_secret(var.get_ref()) {
                doc.push(
                    at(var.span(), format!("provider `{name}`: `{}` in headers_env is not an environment variable name", var.get_ref()))
                        .help("headers_env maps a header to the variable that holds its value, e.g. headers_env = { \"x-api-key\" = \"MY_KEY_VAR\" }"),
                );
            }
            let twice =
                headers.iter().flat_map(|h| h.get_ref()).any(|(h, _)| h.get_ref().eq_ignore_ascii_case(k.get_ref()));
            if twice {
                doc.push(
                    at(
                        k.span(),
                        format!("provider `{name}`: header `{}` is in both headers and headers_env", k.get_ref()),
                    )
                    .help("keep it in one of them"),
                );
            }
        }
        for v in env.iter().flat_map(|e| e.get_ref()) {
            if !env_name(v.get_ref()) {
                doc.push(
                    at(
                        v.span(),
                        format!("provider `{name}`: `{}` in env is not an environment variable name", v.get_ref()),
                    )
                    .help("env lists the names of the variables the program may see, e.g. env = [\"PATH\", \"HOME\"]"),
                );
            }
        }
        let Some(kind) = kind else { continue };
        kind_of.insert(name.clone(), kind);
        if azure_api_version.is_some() {
            azure.push(name.clone());
        }
        let defaults = ProviderSpec::new(name.clone(), kind);
        let command = program.as_ref().map(|prog| CommandSpec {
            program: program_path(prog.get_ref(), org_root),
            args: args.as_ref().map(|a| a.get_ref().iter().map(|s| s.get_ref().clone()).collect()).unwrap_or_default(),
            env: env
                .as_ref()
                .map(|e| e.get_ref().iter().map(|s| s.get_ref().clone()).collect())
                .unwrap_or_else(|| CommandSpec::DEFAULT_ENV.iter().map(|s| s.to_string()).collect()),
            max_output_bytes: max_output_bytes
                .as_ref()
                .map(|m| *m.get_ref() as u64)
                .unwrap_or(CommandSpec::DEFAULT_MAX_OUTPUT_BYTES),
        });
        let map = |m: &Option<Spanned<StrMap>>| -> BTreeMap<String, String> {
            m.iter().flat_map(|m| m.get_ref()).map(|(k, v)| (k.get_ref().clone(), v.get_ref().clone())).collect()
        };
        providers.push(ProviderSpec {
            base_url: base_url.map(Spanned::into_inner),
            api_key_env: api_key_env.map(Spanned::into_inner),
            timeout_secs: timeout_secs.map(|v| *v.get_ref()).unwrap_or(defaults.timeout_secs),
            max_retries: max_retries.map(|v| *v.get_ref() as u32).unwrap_or(defaults.max_retries),
            latency_ms: latency_ms.map(|v| *v.get_ref() as u64).unwrap_or(0),
            script: script.map(|s| org_root.join(s.get_ref())),
            headers: map(&headers),
            headers_env: map(&headers_env),
            azure_api_version: azure_api_version.map(Spanned::into_inner),
            anthropic_version: anthropic_version.map(Spanned::into_inner).unwrap_or(defaults.anthropic_version.clone()),
            connect_timeout_secs: connect_timeout_secs.map(|v| *v.get_ref()).unwrap_or(defaults.connect_timeout_secs),
            backoff_ms: backoff_ms.map(|v| *v.get_ref() as u64).unwrap_or(defaults.backoff_ms),
            breaker_threshold: breaker_threshold.map(|v| *v.get_ref() as u32).unwrap_or(defaults.breaker_threshold),
            breaker_cooldown_secs: breaker_cooldown_secs
                .map(|v| *v.get_ref())
                .unwrap_or(defaults.breaker_cooldown_secs),
            command,
            serve,
            ..defaults
        });
    }

    let model_tables = models_table.as_ref().map(|t| t.tables()).unwrap_or_default();
    let model_keys: Vec<String> = model_tables.iter().map(|(k, _)| k.clone()).collect();
    let provider_names: Vec<&str> =
        std::iter::once("mock").chain(provider_tables.iter().map(|(n, _)| n.as_str())).collect();
    let structured_names = Structured::ALL.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
    let tool_mode_names = ToolMode::ALL.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
    let mut models = BTreeMap::new();
    for (key, m) in &model_tables {
        let span = m.span().unwrap_or(0..0);
        let provider = m.req_str("provider", "provider = \"mock\" (built in), or the name of a [providers.NAME] table");
        let model = m.str("model");
        let price = |field: &str, example: &str| m.float(field, 0.0, true, MAX_CREDITS, example).map(|v| *v.get_ref());
        let input_price = price("input_price", "input_price = 0.15 (credits per million input tokens)");
        let output_price = price("output_price", "output_price = 0.60 (credits per million output tokens)");
        let cost_per_call = price("cost_per_call", "cost_per_call = 0.01 (credits per call)");
        let temperature = m.float("temperature", 0.0, true, 2.0, "temperature = 0.2 (from 0 to 2)");
        let max_tokens = m.int("max_tokens", 1..=MAX_TOKENS, "max_tokens = 1024");
        let fallback = m.str("fallback");
        let structured_s = m.str("structured");
        let reply_max_messages = m.int("reply_max_messages", 0..=10_000, "reply_max_messages = 4");
        let reply_max_chars = m.int("reply_max_chars", 1..=MAX_TOKENS, "reply_max_chars = 2000");
        let deployment = m.str("deployment");
        let tools_s = m.str("tools");
        let stream = m.bool("stream").unwrap_or(false);
        m.deny_unknown(&names(config::MODEL_FIELDS));

        let provider = provider.map(Spanned::into_inner);
        let kind = match provider.as_deref() {
            Some("mock") => Some(ProviderKind::Mock),
            Some(p) => kind_of.get(p).copied(),
            None => None,
        };
        if let Some(p) = provider.as_deref() {
            if !provider_names.contains(&p) {
                doc.push(
                    at(
                        m.span_of("provider").unwrap_or(span.clone()),
                        format!("unknown provider `{p}` in model `{key}`"),
                    )
                    .help(format!("use one of: {} (or add a [providers.{p}] table)", provider_names.join(", "))),
                );
            }
        }
        if let Some(f) = &fallback {
            if !model_keys.contains(f.get_ref()) {
                doc.push(
                    at(f.span(), format!("unknown fallback model `{}`", f.get_ref()))
                        .help(format!("use one of: {}", model_keys.join(", "))),
                );
            }
        }
        let structured = match &structured_s {
            None => Structured::None,
            Some(s) => match Structured::parse(s.get_ref()) {
                Some(v) => v,
                None => {
                    doc.push(
                        at(s.span(), format!("model `{key}`: unknown structured mode `{}`", s.get_ref()))
                            .help(format!("use one of: {structured_names}")),
                    );
                    Structured::None
                }
            },
        };
        let tools = match &tools_s {
            None => ToolMode::Contract,
            Some(s) => match ToolMode::parse(s.get_ref()) {
                Some(mode) => mode,
                None => {
                    doc.push(
                        at(s.span(), format!("model `{key}`: unknown tools mode `{}`", s.get_ref())).help(format!(
                            "use one of: {tool_mode_names} (contract: tool calls in the reply; native: function definitions, for {} providers)",
                            config::kind_names(config::NATIVE_TOOL_KINDS)
                        )),
                    );
                    ToolMode::Contract
                }
            },
        };
        if let (ToolMode::Native, Some(kind), Some(s)) = (tools, kind, &tools_s) {
            if !config::NATIVE_TOOL_KINDS.contains(&kind) {
                doc.push(
                    at(
                        s.span(),
                        format!(
                            "model `{key}`: tools = \"native\" needs an {} provider; `{}` is {}",
                            config::kind_names(config::NATIVE_TOOL_KINDS).replace(" and ", " or "),
                            provider.as_deref().unwrap_or("?"),
                            kind.name()
                        ),
                    )
                    .help("remove `tools` (or set tools = \"contract\"): tool calls then go in the reply, which every kind can do"),
                );
            }
        }
        // Fields that the provider's kind does not read.
        if let (Some(kind), Some(p)) = (kind, provider.as_deref()) {
            for field in m.keys() {
                let Some(for_kinds) = config::kinds_reading(config::MODEL_FIELDS, &field) else { continue };
                if for_kinds.contains(&kind) {
                    continue;
                }
                let fspan = m.span_of(&field).unwrap_or(span.clone());
                let d = if field == "structured" {
                    at(fspan, format!("model `{key}`: `structured` needs an openai provider; `{p}` is {}", kind.name()))
                        .help("remove `structured` (the tolerant parser reads plain-text replies)")
                } else {
                    at(
                        fspan,
                        format!(
                            "`{field}` is not used by model `{key}`: its provider `{p}` is of kind {}",
                            kind.name()
                        ),
                    )
                    .help(format!(
                        "`{field}` is only for models on {} providers; remove it or change `provider`",
                        config::kind_names(for_kinds)
                    ))
                };
                doc.push(d);
            }
        }
        if structured != Structured::JsonSchema && kind == Some(ProviderKind::OpenAi) {
            for (field, v) in [("reply_max_messages", &reply_max_messages), ("reply_max_chars", &reply_max_chars)] {
                if let Some(v) = v {
                    doc.push(
                        at(
                            v.span(),
                            format!("model `{key}`: `{field}` only applies with structured = \"json_schema\""),
                        )
                        .help("add structured = \"json_schema\" or remove the field"),
                    );
                }
            }
        }
        if let Some(d) = &deployment {
            if kind == Some(ProviderKind::OpenAi) && !provider.as_ref().is_some_and(|p| azure.contains(p)) {
                doc.push(
                    at(d.span(), format!("model `{key}`: `deployment` is only for Azure OpenAI providers"))
                        .help("set azure_api_version on the provider, or remove `deployment`"),
                );
            }
        }
        let price = match (input_price, output_price, cost_per_call) {
            (None, None, None) => Price::Free,
            (i, o, None) => Price::PerMillion { input: i.unwrap_or(0.0), output: o.unwrap_or(0.0) },
            (None, None, Some(c)) => Price::PerCall(c),
            _ => {
                doc.push(
                    at(
                        m.span_of("cost_per_call").unwrap_or(span.clone()),
                        format!("model `{key}` sets both token prices and `cost_per_call`"),
                    )
                    .help("keep either input_price/output_price or cost_per_call"),
                );
                Price::Free
            }
        };
        let Some(provider) = provider else { continue };
        models.insert(
            key.clone(),
            ModelSpec {
                model: model.map(Spanned::into_inner),
                price,
                temperature: temperature.map(|t| *t.get_ref()),
                max_tokens: max_tokens.map(|t| *t.get_ref() as u32),
                fallback: fallback.map(Spanned::into_inner),
                structured,
                reply_max_messages: reply_max_messages.map(|v| *v.get_ref() as u32),
                reply_max_chars: reply_max_chars.map(|v| *v.get_ref() as u32),
                deployment: deployment.map(Spanned::into_inner),
                tools,
                stream,
                ..ModelSpec::new(key.clone(), provider)
            },
        );
    }
    Models { providers, models }
}

/// The program names a path relative to the org folder when it holds a `/`
/// and is not absolute; a bare name is looked up in `PATH`.
fn program_path(prog: &str, org_root: &Path) -> String {
    if prog.contains('/') && !Path::new(prog).is_absolute() {
        org_root.join(prog).to_string_lossy().into_owned()
    } else {
        prog.to_string()
    }
}

/// `serve = { program, args, ready_path, startup_timeout_secs }` of provider `name`.
fn serve_spec(t: &crate::config::Table<'_>, name: &str, org_root: &Path) -> Option<ServeSpec> {
    let program = t.req_str(
        "program",
        "serve = { program = \"llama-server\", args = [\"-m\", \"model.gguf\", \"--port\", \"8080\"] }",
    );
    let args = t.str_list("args");
    let ready_path = t.str("ready_path");
    let startup =
        t.float("startup_timeout_secs", 0.0, false, MAX_SECS_F, "startup_timeout_secs = 120 (at most a year)");
    t.deny_unknown(&["program", "args", "ready_path", "startup_timeout_secs"]);
    if let Some(r) = &ready_path {
        if !r.get_ref().starts_with('/') {
            t.doc().push(
                t.doc()
                    .at(
                        Some(r.span()),
                        format!("provider `{name}`: serve.ready_path `{}` must start with /", r.get_ref()),
                    )
                    .help("for example ready_path = \"/health\" (llama.cpp) or \"/v1/models\""),
            );
        }
    }
    let state = Layout::new(org_root).state_dir();
    Some(ServeSpec {
        program: program_path(program?.get_ref(), org_root),
        args: args.map(|a| a.into_inner().into_iter().map(Spanned::into_inner).collect()).unwrap_or_default(),
        ready_path: ready_path.map(Spanned::into_inner).unwrap_or_else(|| ServeSpec::DEFAULT_READY_PATH.into()),
        startup_timeout_secs: startup.map(|v| *v.get_ref()).unwrap_or(ServeSpec::DEFAULT_STARTUP_TIMEOUT_SECS),
        log: state.join("logs").join(format!("serve-{name}.log")),
        state: state.join("serve").join(format!("{name}.json")),
        cwd: org_root.to_path_buf(),
    })
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

    /// A value of the right type for each field, and what else it needs to be valid.
    fn sample(field: &str) -> &'static str {
        match field {
            "kind" => "\"mock\"",
            "base_url" => "\"http://127.0.0.1:9/v1\"",
            "api_key_env" => "\"MY_KEY\"",
            "headers" => "{ \"OpenAI-Organization\" = \"org-1\" }",
            "headers_env" => "{ \"x-api-key\" = \"MY_KEY\" }",
            "azure_api_version" => "\"2024-10-21\"",
            "anthropic_version" => "\"2023-06-01\"",
            "timeout_secs" | "connect_timeout_secs" | "breaker_cooldown_secs" => "5",
            "max_retries" | "backoff_ms" | "breaker_threshold" | "latency_ms" | "max_output_bytes" => "3",
            "program" => "\"cat\"",
            "args" => "[\"-u\"]",
            "env" => "[\"PATH\"]",
            "script" => "\"org/script.toml\"",
            "provider" => "\"p\"",
            "model" => "\"m-1\"",
            "input_price" | "output_price" | "cost_per_call" | "temperature" => "0.5",
            "max_tokens" | "reply_max_messages" | "reply_max_chars" => "8",
            "fallback" => "\"k\"",
            "structured" => "\"json_object\"",
            "deployment" => "\"dep\"",
            "tools" => "\"contract\"",
            "stream" => "true",
            "serve" => "{ program = \"llama-server\", args = [\"--port\", \"9\"] }",
            other => panic!("no sample value for `{other}`: add one"),
        }
    }

    /// What a provider of `kind` needs, as lines.
    fn needs(kind: ProviderKind) -> Vec<(&'static str, &'static str)> {
        match kind {
            ProviderKind::OpenAi => vec![("base_url", sample("base_url"))],
            ProviderKind::Script => vec![("script", sample("script"))],
            ProviderKind::Command => vec![("program", sample("program"))],
            _ => vec![],
        }
    }

    fn render(kind: ProviderKind, provider: &[(&str, &str)], model: &[(&str, &str)]) -> String {
        let mut t = format!("[providers.p]\nkind = \"{}\"\n", kind.name());
        for (k, v) in provider {
            t += &format!("{k} = {v}\n");
        }
        t += "[models.k]\n";
        for (k, v) in model {
            t += &format!("{k} = {v}\n");
        }
        t
    }

    #[test]
    fn every_field_is_refused_exactly_on_the_kinds_that_do_not_read_it() {
        for (field, kinds) in config::PROVIDER_FIELDS.iter().filter(|(f, _)| *f != "kind") {
            for (_, kind) in ProviderKind::ALL {
                let mut lines = needs(kind);
                lines.retain(|(k, _)| k != field);
                lines.push((field, sample(field)));
                let text = render(kind, &lines, &[("provider", "\"p\"")]);
                let result = parse(Path::new("m"), &text, Path::new("/org"));
                if kinds.contains(&kind) {
                    assert!(result.is_ok(), "`{field}` on {}: {:#?}\n{text}", kind.name(), result.err());
                } else {
                    let errs = result.expect_err(&text);
                    assert_eq!(errs.len(), 1, "`{field}` on {}: {errs:#?}", kind.name());
                    assert!(errs[0].message.contains("is not used by provider `p`"), "{}", errs[0]);
                    assert_eq!(errs[0].line, Some(text.lines().position(|l| l.starts_with(field)).unwrap() + 1));
                }
            }
        }
        for (field, kinds) in config::MODEL_FIELDS.iter().filter(|(f, _)| *f != "provider") {
            for (_, kind) in ProviderKind::ALL {
                let mut provider = needs(kind);
                let mut model = vec![("provider", "\"p\""), (*field, sample(field))];
                match *field {
                    "reply_max_messages" | "reply_max_chars" => model.push(("structured", "\"json_schema\"")),
                    "deployment" if kind == ProviderKind::OpenAi => provider.push(("azure_api_version", "\"v\"")),
                    "fallback" => model[1].1 = "\"k\"",
                    _ => {}
                }
                let text = render(kind, &provider, &model);
                let result = parse(Path::new("m"), &text, Path::new("/org"));
                if kinds.contains(&kind) {
                    assert!(result.is_ok(), "`{field}` on {}: {:#?}\n{text}", kind.name(), result.err());
                } else {
                    let errs = result.expect_err(&text);
                    let line = text.lines().position(|l| l.starts_with(field)).unwrap() + 1;
                    assert!(
                        errs.iter().any(|d| d.line == Some(line)
                            && (d.message.contains("is not used by model `k`")
                                || d.message.contains("needs an openai"))),
                        "`{field}` on {}: {errs:#?}",
                        kind.name()
                    );
                }
            }
        }
    }

    #[test]
    fn tools_mode_is_contract_by_default_and_native_only_on_openai_and_anthropic() {
        let model = |kind: ProviderKind, tools: Option<&str>| {
            let mut m = vec![("provider", "\"p\"")];
            let value = tools.map(|t| format!("\"{t}\""));
            if let Some(v) = &value {
                m.push(("tools", v.as_str()));
            }
            let text = render(kind, &needs(kind), &m);
            (parse(Path::new("org/models.toml"), &text, Path::new("/org")), text)
        };
        for (_, kind) in ProviderKind::ALL {
            let (m, _) = model(kind, None);
            assert_eq!(m.unwrap().models["k"].tools, ToolMode::Contract, "{}", kind.name());
            let (m, _) = model(kind, Some("contract"));
            assert_eq!(m.unwrap().models["k"].tools, ToolMode::Contract, "{}", kind.name());
            let (m, text) = model(kind, Some("native"));
            if matches!(kind, ProviderKind::OpenAi | ProviderKind::Anthropic) {
                assert_eq!(m.unwrap().models["k"].tools, ToolMode::Native, "{}", kind.name());
            } else {
                let errs = m.expect_err(&text);
                assert_eq!(errs.len(), 1, "{errs:#?}");
                let d = &errs[0];
                assert_eq!(
                    d.message,
                    format!(
                        "model `k`: tools = \"native\" needs an openai or anthropic provider; `p` is {}",
                        kind.name()
                    )
                );
                assert_eq!(d.line, Some(text.lines().position(|l| l.starts_with("tools")).unwrap() + 1));
                assert_eq!(d.column, Some(9), "the caret is on the value");
                assert!(d.help.as_deref().unwrap().contains("tools = \"contract\""), "{d}");
            }
        }
        let (m, text) = model(ProviderKind::OpenAi, Some("functions"));
        let errs = m.expect_err(&text);
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert_eq!(errs[0].message, "model `k`: unknown tools mode `functions`");
        assert!(errs[0].help.as_deref().unwrap().starts_with("use one of: contract, native"), "{}", errs[0]);
        assert_eq!(
            errs[0].to_string().lines().next().unwrap().split(':').next(),
            Some("org/models.toml"),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn serve_and_stream_are_read_with_their_defaults_and_checked() {
        let root = Path::new("/org");
        let text = "[providers.local]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:8080/v1\"\n\
            serve = { program = \"bin/llama-server\", args = [\"--port\", \"8080\"] }\n\
            [models.fast]\nprovider = \"local\"\nstream = true\n";
        let m = parse(Path::new("/org/org/models.toml"), text, root).unwrap();
        let serve = m.providers[0].serve.clone().unwrap();
        assert_eq!(serve.program, "/org/bin/llama-server");
        assert_eq!(serve.args, ["--port", "8080"]);
        assert_eq!(serve.ready_path, "/health");
        assert_eq!(serve.startup_timeout_secs, ServeSpec::DEFAULT_STARTUP_TIMEOUT_SECS);
        assert_eq!(serve.log, Path::new("/org/org/state/logs/serve-local.log"));
        assert!(m.models["fast"].stream);
        let bad = "[providers.local]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:8080/v1\"\n\
            serve = { args = [], ready_path = \"health\", restart = true }\n";
        let errs = parse(Path::new("/org/org/models.toml"), bad, root).unwrap_err();
        let text: Vec<String> = errs.iter().map(|d| d.message.clone()).collect();
        assert!(text.iter().any(|m| m.contains("program")), "{text:?}");
        assert!(text.iter().any(|m| m.contains("must start with /")), "{text:?}");
        assert!(text.iter().any(|m| m.contains("restart")), "{text:?}");
        assert!(errs.iter().all(|d| d.line == Some(4)), "{errs:?}");
    }

    #[test]
    fn a_provider_with_serve_needs_a_plain_name() {
        let text = "[providers.ok]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:8080/v1\"\n\
            [providers.\"../../x\"]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:8080/v1\"\n\
            serve = { program = \"llama-server\" }\n";
        let errs = parse(Path::new("/org/org/models.toml"), text, Path::new("/org")).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert!(errs[0].message.contains("`../../x` has `serve`: its name must be"), "{}", errs[0]);
        assert_eq!(errs[0].line, Some(4), "{}", errs[0]);
        let fine = "[providers.\"Local_2-b\"]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:8080/v1\"\n\
            serve = { program = \"llama-server\" }\n";
        let m = parse(Path::new("/org/org/models.toml"), fine, Path::new("/org")).unwrap();
        assert!(m.providers[0].serve.as_ref().unwrap().state.ends_with("serve/Local_2-b.json"));
    }

    #[test]
    fn out_of_range_numbers_are_refused_all_at_once() {
        let text = "[providers.p]\nkind = \"openai\"\nbase_url = \"http://h/v1\"\ntimeout_secs = -1\nmax_retries = -2\nbackoff_ms = 1e3\nbreaker_threshold = 0\n[models.k]\nprovider = \"p\"\ninput_price = -0.5\noutput_price = \"1\"\ntemperature = 2.5\nmax_tokens = 0\n";
        let errs = parse(Path::new("m"), text, Path::new("/org")).unwrap_err();
        let lines: Vec<usize> = errs.iter().map(|d| d.line.unwrap()).collect();
        assert_eq!(lines, vec![4, 5, 6, 7, 10, 11, 12, 13], "{errs:#?}");
        assert!(errs[6].message.contains("`temperature` must be a number from 0 to 2"), "{}", errs[6]);
        assert!(errs[7].message.contains("`max_tokens` must be from 1 to"), "{}", errs[7]);
    }

    #[test]
    fn a_base_url_needs_a_scheme_and_a_host() {
        let url = |u: &str| {
            let text = format!("[providers.p]\nkind = \"openai\"\nbase_url = \"{u}\"\n[models.k]\nprovider = \"p\"\n");
            parse(Path::new("m"), &text, Path::new("/org")).map(|_| ()).map_err(|e| e[0].message.clone())
        };
        for good in ["http://x", "https://h:8080/v1", "http://127.0.0.1:11434/v1"] {
            assert_eq!(url(good), Ok(()), "{good}");
        }
        for bad in ["http://", "https:///v1", "ftp://h", "api.openai.com/v1"] {
            assert!(url(bad).unwrap_err().contains("is not an http:// or https:// URL"), "{bad}");
        }
    }

    #[test]
    fn literal_credentials_are_refused_and_never_shown() {
        let secrets = [
            "Bearer abc123def456",
            "s3cr3t-value",
            "lowercasekey",
            "sk-ant-api03-ZZZZZZZZZZZZZZZZZZZZ",
            "Aa1Bb2Cc3Dd4Ee5Ff6Gg7Hh8Ii9",
        ];
        let text = format!(
            "[providers.p]\nkind = \"openai\"\nbase_url = \"https://h/v1?api_key={}\"\nheaders = {{ Authorization = \"{}\", X-API-KEY = \"{}\", Api-Key = \"{}\", OpenAI-Organization = \"org-1\" }}\n[models.k]\nprovider = \"p\"\nmodel = \"{}\"\n",
            secrets[1], secrets[0], secrets[1], secrets[2], secrets[3]
        );
        let errs = parse(Path::new("m"), &text, Path::new("/org")).unwrap_err();
        assert_eq!(errs.len(), 5, "{errs:#?}");
        assert!(errs.iter().any(|d| d.help.as_deref().unwrap_or("").contains("headers_env = { \"X-API-KEY\"")));
        for d in &errs {
            let shown = format!("{d}\n{}", serde_json::to_string(d).unwrap());
            for s in &secrets[..4] {
                assert!(!shown.contains(s), "{s} shown in:\n{shown}");
            }
        }
        // A key in any field is refused, e.g. in the arguments of a command.
        let text =
            format!("[providers.c]\nkind = \"command\"\nprogram = \"llm\"\nargs = [\"--key\", \"{}\"]\n", secrets[4]);
        let errs = parse(Path::new("m"), &text, Path::new("/org")).unwrap_err();
        assert!(errs[0].message.contains("`providers.c.args` holds what looks like a key"), "{errs:#?}");
        assert!(!errs[0].to_string().contains(secrets[4]));
        // Model names, URLs and paths are not keys.
        let fine = "[providers.p]\nkind = \"openai\"\nbase_url = \"https://api.together.xyz/v1\"\n[models.k]\nprovider = \"p\"\nmodel = \"meta-llama/Llama-3.3-70B-Instruct-Turbo\"\n[providers.c]\nkind = \"command\"\nprogram = \"/nix/store/0c8mp2kx5qbdwls6y4jh8zsh4r1nq9mf-ollama-0.5.7/bin/ollama\"\n";
        assert!(parse(Path::new("m"), fine, Path::new("/org")).is_ok());
    }

    #[test]
    fn headers_take_values_from_the_environment() {
        let text = "[providers.a]\nkind = \"anthropic\"\nheaders_env = { \"x-api-key\" = \"MY_KEY\", \"x-trace\" = \"TRACE_ID\" }\n";
        let m = parse(Path::new("m"), text, Path::new("/org")).unwrap();
        assert_eq!(m.providers[0].headers_env["x-api-key"], "MY_KEY");
        assert_eq!(m.providers[0].headers_env.len(), 2);
        let bad = "[providers.a]\nkind = \"anthropic\"\nheaders = { \"x-trace\" = \"1\" }\nheaders_env = { \"X-Trace\" = \"not a name\" }\n";
        let errs = parse(Path::new("m"), bad, Path::new("/org")).unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:#?}");
    }
}
