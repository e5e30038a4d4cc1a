//! One provider instance per configured provider, and the fallback chain across model keys.
//!
//! The registry is built once per org load. Each HTTP provider gets one
//! `reqwest` client (its connection pool is reused by every call), and each
//! `openai`, `anthropic` and `command` provider is wrapped in the retry loop
//! and circuit breaker of [`crate::resilience`]. An HTTP provider with
//! `serve` gets its managed server from [`crate::serve`], started on first use.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::anthropic::Anthropic;
use crate::breaker::{Board, Breaker};
use crate::command::Command;
use crate::mock::Mock;
use crate::openai::OpenAi;
use crate::resilience::{Attempt, Policy, Resilient};
use crate::script::Script;
use crate::{ModelSpec, Provider, ProviderError, ProviderKind, ProviderSpec, Reply, Request};

/// The providers and models of one org, built once and shared by all calls.
#[derive(Clone)]
pub struct Registry {
    providers: HashMap<String, Arc<dyn Provider>>,
    specs: BTreeMap<String, ProviderSpec>,
    clients: HashMap<String, reqwest::Client>,
    breakers: HashMap<String, Arc<Breaker>>,
    models: BTreeMap<String, ModelSpec>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("providers", &self.providers.keys().collect::<Vec<_>>())
            .field("models", &self.models.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Registry {
    /// Builds every provider, with circuit breakers kept in memory only.
    pub fn new(providers: &[ProviderSpec], models: BTreeMap<String, ModelSpec>) -> Registry {
        Registry::build(providers, models, None)
    }

    /// Builds every provider, with circuit breakers persisted in `breaker_file`
    /// (`org/state/breakers.json`), so that an open breaker outlives the process.
    pub fn with_breaker_file(
        providers: &[ProviderSpec],
        models: BTreeMap<String, ModelSpec>,
        breaker_file: &Path,
    ) -> Registry {
        Registry::build(providers, models, Some(Board::open(breaker_file)))
    }

    fn build(providers: &[ProviderSpec], models: BTreeMap<String, ModelSpec>, board: Option<Arc<Board>>) -> Registry {
        let mut r = Registry {
            providers: HashMap::new(),
            specs: BTreeMap::new(),
            clients: HashMap::new(),
            breakers: HashMap::new(),
            models,
        };
        r.providers.insert("mock".into(), Arc::new(Mock::default()));
        r.specs.insert("mock".into(), ProviderSpec::builtin_mock());
        for spec in providers {
            let provider = r.build_one(spec, board.clone());
            r.providers.insert(spec.name.clone(), provider);
            r.specs.insert(spec.name.clone(), spec.clone());
        }
        r
    }

    /// Builds one provider. A provider that cannot be built fails at call time
    /// with the reason, so that the rest of the org still runs.
    fn build_one(&mut self, spec: &ProviderSpec, board: Option<Arc<Board>>) -> Arc<dyn Provider> {
        let attempt: Box<dyn Attempt> = match spec.kind {
            ProviderKind::Mock => return Arc::new(Mock { latency: Duration::from_millis(spec.latency_ms) }),
            ProviderKind::Script => {
                return Arc::new(Script { name: spec.name.clone(), path: spec.script.clone().unwrap_or_default() })
            }
            ProviderKind::OpenAi | ProviderKind::Anthropic => {
                let client = match crate::http::client(spec) {
                    Ok(c) => c,
                    Err(message) => return Arc::new(Unusable { name: spec.name.clone(), message }),
                };
                self.clients.insert(spec.name.clone(), client.clone());
                let attempt: Box<dyn Attempt> = if spec.kind == ProviderKind::OpenAi {
                    Box::new(OpenAi::new(spec.clone(), client))
                } else {
                    Box::new(Anthropic::new(spec.clone(), client))
                };
                // A managed server is started (or found running) before each try.
                match crate::serve::server(spec) {
                    Some(server) => Box::new(crate::serve::Served::new(attempt, server)),
                    None => attempt,
                }
            }
            ProviderKind::Command => match &spec.command {
                Some(c) => Box::new(Command::new(&spec.name, c.clone(), crate::config::secs(spec.timeout_secs))),
                None => {
                    return Arc::new(Unusable { name: spec.name.clone(), message: "no `program` configured".into() })
                }
            },
        };
        let breaker = Arc::new(Breaker::new(
            &spec.name,
            spec.breaker_threshold,
            crate::config::secs(spec.breaker_cooldown_secs),
            board,
        ));
        self.breakers.insert(spec.name.clone(), Arc::clone(&breaker));
        let policy = Policy { max_retries: spec.max_retries, backoff: Duration::from_millis(spec.backoff_ms) };
        Arc::new(Resilient::new(&spec.name, attempt, policy, breaker))
    }

    /// The model spec for a key.
    pub fn model(&self, key: &str) -> Option<&ModelSpec> {
        self.models.get(key)
    }

    /// Every model key.
    pub fn models(&self) -> &BTreeMap<String, ModelSpec> {
        &self.models
    }

    /// Every provider's settings, the implicit `mock` included.
    pub fn specs(&self) -> &BTreeMap<String, ProviderSpec> {
        &self.specs
    }

    /// The shared HTTP client of an HTTP provider.
    pub fn client(&self, provider: &str) -> Option<&reqwest::Client> {
        self.clients.get(provider)
    }

    /// The circuit breaker of a provider that has one.
    pub fn breaker(&self, provider: &str) -> Option<&Arc<Breaker>> {
        self.breakers.get(provider)
    }

    /// Calls the request's model, then each model of its fallback chain in turn,
    /// until one answers. The error of the last one tried is returned.
    pub async fn complete(&self, req: &Request) -> Result<Reply, ProviderError> {
        // Copied only to try a fallback model: the request holds the whole prompt.
        let mut req = std::borrow::Cow::Borrowed(req);
        let mut tried: Vec<String> = Vec::new();
        loop {
            tried.push(req.model.key.clone());
            let started = std::time::Instant::now();
            let result = match self.providers.get(&req.model.provider) {
                Some(p) => p.complete(&req).await,
                None => Err(ProviderError::Config {
                    provider: req.model.provider.clone(),
                    message: "no such provider in org/models.toml".into(),
                }),
            };
            let outcome = match &result {
                Ok(_) => "ok",
                Err(ProviderError::Config { .. }) => "config",
                Err(e) => e.cause().as_str(),
            };
            crate::observe::request(&req.model.provider, outcome, started.elapsed());
            let err = match result {
                Ok(reply) => return Ok(reply),
                Err(e) => e,
            };
            let next = req.model.fallback.as_ref().and_then(|k| self.models.get(k));
            match next {
                Some(spec) if !tried.contains(&spec.key) => {
                    tracing::warn!(agent = %req.agent, model = %req.model.key, fallback = %spec.key, error = %err, "model failed; trying fallback");
                    req.to_mut().model = spec.clone();
                }
                _ => return Err(err),
            }
        }
    }
}

/// A provider that could not be built; every call fails with the reason.
struct Unusable {
    name: String,
    message: String,
}

impl Provider for Unusable {
    fn complete<'a>(&'a self, _req: &'a Request) -> crate::BoxFuture<'a, Result<Reply, ProviderError>> {
        Box::pin(
            async move { Err(ProviderError::Config { provider: self.name.clone(), message: self.message.clone() }) },
        )
    }
}
