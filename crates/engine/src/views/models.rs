//! The models view (`lemming models`): every model key of `org/models.toml`,
//! its provider, price and the agents that use it.

use serde::Serialize;

use crate::org::Org;
use lemming_provider::{Price, ProviderKind};

/// How a model call is priced, in credits, as `models --json` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(untagged)]
pub enum PriceView {
    /// `{"free": true}`.
    Free {
        /// Always true.
        free: bool,
    },
    /// `{"input_per_million", "output_per_million"}`.
    PerMillion {
        /// Credits per million input tokens.
        input_per_million: f64,
        /// Credits per million output tokens.
        output_per_million: f64,
    },
    /// `{"per_call"}`.
    PerCall {
        /// Credits per call.
        per_call: f64,
    },
}

impl From<Price> for PriceView {
    fn from(p: Price) -> PriceView {
        match p {
            Price::Free => PriceView::Free { free: true },
            Price::PerMillion { input, output } => {
                PriceView::PerMillion { input_per_million: input, output_per_million: output }
            }
            Price::PerCall(c) => PriceView::PerCall { per_call: c },
        }
    }
}

impl std::fmt::Display for PriceView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PriceView::Free { .. } => write!(f, "free"),
            PriceView::PerMillion { input_per_million, output_per_million } => {
                write!(f, "{input_per_million} in / {output_per_million} out per M tokens")
            }
            PriceView::PerCall { per_call } => write!(f, "{per_call} per call"),
        }
    }
}

/// One model key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelRow {
    /// The key agents name in their resume.
    pub key: String,
    /// The provider instance.
    pub provider: String,
    /// The provider's kind (`mock`, `script`, `openai`, `anthropic`, `command`).
    pub kind: &'static str,
    /// The model name sent to the server.
    pub model: String,
    /// Its price.
    pub price: PriceView,
    /// Sampling temperature, if set.
    pub temperature: Option<f64>,
    /// Reply token limit, if set.
    pub max_tokens: Option<u32>,
    /// How the reply contract is enforced (`none`, `json_object`, `json_schema`).
    pub structured: &'static str,
    /// The key tried when this one fails.
    pub fallback: Option<String>,
    /// The agents whose resume names this key.
    pub used_by: Vec<String>,
}

/// Every model key, in key order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelsView {
    /// The keys.
    pub models: Vec<ModelRow>,
}

/// Lists the model keys.
pub fn models(org: &Org) -> ModelsView {
    let kind = |provider: &str| {
        org.models.providers.iter().find(|p| p.name == provider).map(|p| p.kind).unwrap_or(ProviderKind::Mock)
    };
    let used_by = |key: &str| {
        org.agents.values().filter(|r| r.model.as_deref() == Some(key)).map(|r| r.name.to_string()).collect()
    };
    let models = org
        .models
        .models
        .values()
        .map(|m| ModelRow {
            key: m.key.clone(),
            provider: m.provider.clone(),
            kind: kind(&m.provider).name(),
            model: m.wire_name().to_string(),
            price: m.price.into(),
            temperature: m.temperature,
            max_tokens: m.max_tokens,
            structured: m.structured.name(),
            fallback: m.fallback.clone(),
            used_by: used_by(&m.key),
        })
        .collect();
    ModelsView { models }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::views::testing::plain_org;

    #[test]
    fn the_default_org_has_one_mock_key_used_by_every_agent() {
        let (_dir, org) = plain_org();
        let v = models(&org);
        assert_eq!(v.models.len(), 1);
        let m = &v.models[0];
        assert_eq!((m.key.as_str(), m.provider.as_str(), m.kind, m.structured), ("default", "mock", "mock", "none"));
        assert_eq!(m.used_by, ["coder_01", "hr", "janitor", "manager", "planner"]);
        let json = serde_json::to_value(m).unwrap();
        assert_eq!(json["price"], serde_json::json!({"input_per_million": 100.0, "output_per_million": 200.0}));
        assert_eq!(m.price.to_string(), "100 in / 200 out per M tokens");
    }

    #[test]
    fn each_price_keeps_its_json_shape() {
        let shape = |p: Price| serde_json::to_value(PriceView::from(p)).unwrap();
        assert_eq!(shape(Price::Free), serde_json::json!({"free": true}));
        assert_eq!(shape(Price::PerCall(0.5)), serde_json::json!({"per_call": 0.5}));
        assert_eq!(PriceView::from(Price::PerCall(0.5)).to_string(), "0.5 per call");
        assert_eq!(PriceView::from(Price::Free).to_string(), "free");
    }
}
