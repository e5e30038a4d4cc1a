//! `lemming models`: the model keys of `org/models.toml`, their providers and prices.

use lemming_engine::term::line;
use lemming_provider::{Price, ProviderKind};
use serde_json::json;

use crate::cli::{print_json, CliError, Ctx};

#[derive(Debug, clap::Args)]
pub struct Args {}

fn price_text(p: &Price) -> String {
    match p {
        Price::Free => "free".into(),
        Price::PerMillion { input, output } => format!("{input} in / {output} out per M tokens"),
        Price::PerCall(c) => format!("{c} per call"),
    }
}

pub fn run(ctx: &Ctx, _args: Args) -> Result<(), CliError> {
    let org = ctx.load()?;
    let kind = |provider: &str| {
        org.models.providers.iter().find(|p| p.name == provider).map(|p| p.kind).unwrap_or(ProviderKind::Mock)
    };
    let used_by = |key: &str| {
        org.agents.values().filter(|r| r.model.as_deref() == Some(key)).map(|r| r.name.to_string()).collect::<Vec<_>>()
    };
    if ctx.json {
        let rows: Vec<_> = org
            .models
            .models
            .values()
            .map(|m| {
                let price = match m.price {
                    Price::Free => json!({"free": true}),
                    Price::PerMillion { input, output } => {
                        json!({"input_per_million": input, "output_per_million": output})
                    }
                    Price::PerCall(c) => json!({"per_call": c}),
                };
                json!({
                    "key": m.key, "provider": m.provider, "kind": kind(&m.provider).name(),
                    "model": m.wire_name(), "price": price, "temperature": m.temperature,
                    "max_tokens": m.max_tokens, "structured": m.structured.name(),
                    "fallback": m.fallback, "used_by": used_by(&m.key),
                })
            })
            .collect();
        return print_json(&rows);
    }
    println!(
        "{:<14} {:<12} {:<10} {:<22} {:<34} {:<12} {:<12} USED BY",
        "KEY", "PROVIDER", "KIND", "MODEL", "PRICE", "STRUCTURED", "FALLBACK"
    );
    for m in org.models.models.values() {
        println!(
            "{:<14} {:<12} {:<10} {:<22} {:<34} {:<12} {:<12} {}",
            line(&m.key),
            line(&m.provider),
            kind(&m.provider).name(),
            line(m.wire_name()),
            price_text(&m.price),
            m.structured.name(),
            line(m.fallback.as_deref().unwrap_or("-")),
            used_by(&m.key).join(", ")
        );
    }
    Ok(())
}
