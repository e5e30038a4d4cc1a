//! One provider instance per configured provider, and the fallback chain across model keys.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::mock::Mock;
use crate::script::Script;
use crate::{ModelSpec, Provider, ProviderError, ProviderKind, ProviderSpec, Reply, Request};

/// The providers and models of one org, built once and shared by all calls.
#[derive(Clone)]
pub struct Registry {
    providers: HashMap<String, Arc<dyn Provider>>,
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
    /// Builds every provider. Kinds that are not built in this version fail at call time
    /// with a clear message rather than here, so that the rest of the org still runs.
    pub fn new(providers: &[ProviderSpec], models: BTreeMap<String, ModelSpec>) -> Registry {
        let mut map: HashMap<String, Arc<dyn Provider>> = HashMap::new();
        map.insert("mock".into(), Arc::new(Mock::default()));
        for spec in providers {
            map.insert(spec.name.clone(), build(spec));
        }
        Registry { providers: map, models }
    }

    /// The model spec for a key.
    pub fn model(&self, key: &str) -> Option<&ModelSpec> {
        self.models.get(key)
    }

    /// Calls the request's model, then each model of its fallback chain in turn,
    /// until one answers. The error of the last one tried is returned.
    pub async fn complete(&self, req: &Request) -> Result<Reply, ProviderError> {
        let mut req = req.clone();
        let mut tried: Vec<String> = Vec::new();
        loop {
            tried.push(req.model.key.clone());
            let result = match self.providers.get(&req.model.provider) {
                Some(p) => p.complete(&req).await,
                None => Err(ProviderError::Config {
                    provider: req.model.provider.clone(),
                    message: "no such provider in org/models.toml".into(),
                }),
            };
            let err = match result {
                Ok(reply) => return Ok(reply),
                Err(e) => e,
            };
            let next = req.model.fallback.as_ref().and_then(|k| self.models.get(k));
            match next {
                Some(spec) if !tried.contains(&spec.key) => {
                    tracing::warn!(agent = %req.agent, model = %req.model.key, fallback = %spec.key, error = %err, "model failed; trying fallback");
                    req.model = spec.clone();
                }
                _ => return Err(err),
            }
        }
    }
}

struct Unbuilt {
    name: String,
    kind: ProviderKind,
}

impl Provider for Unbuilt {
    fn complete<'a>(&'a self, _req: &'a Request) -> crate::BoxFuture<'a, Result<Reply, ProviderError>> {
        Box::pin(async move {
            Err(ProviderError::Config {
                provider: self.name.clone(),
                message: format!("provider kind `{}` is not built in this version", self.kind.name()),
            })
        })
    }
}

fn build(spec: &ProviderSpec) -> Arc<dyn Provider> {
    match spec.kind {
        ProviderKind::Mock => Arc::new(Mock { latency: Duration::from_millis(spec.latency_ms) }),
        ProviderKind::Script => {
            Arc::new(Script { name: spec.name.clone(), path: spec.script.clone().unwrap_or_default() })
        }
        kind => Arc::new(Unbuilt { name: spec.name.clone(), kind }),
    }
}
