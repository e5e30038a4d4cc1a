//! Each node's last turn, in a JetStream key-value bucket, and what
//! `lemming status --cluster` reads back: every node, whether a process
//! runs it (its lease), and its last turn.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use lemming_engine::events::TurnReport;
use lemming_engine::settings::Cluster;
use serde_json::{json, Value};

use crate::lease::{self, Holder};
use crate::names::Names;

/// The org's bucket of node statuses, made when missing.
pub async fn bucket(js: &jetstream::Context, name: &str, replicas: usize) -> Result<kv::Store, String> {
    lease::open_bucket(js, name, "the last turn of each node of a lemming org", Duration::ZERO, replicas).await
}

/// What a node says of the turn of `report`.
pub fn record(node: &str, me: &Holder, report: &TurnReport) -> Vec<u8> {
    json!({
        "node": node,
        "host": me.host,
        "pid": me.pid,
        "org": me.org,
        "turn": report.turn,
        "at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "ran": report.ran.len(),
        "delivered": report.delivered,
        "failed": report.failed.len(),
        "dead": report.dead,
        "held": report.held,
        "cost": report.cost,
    })
    .to_string()
    .into_bytes()
}

/// Every node of `cluster`, in the order of `nodes`: `{"node", "running"
/// (the lease's holder, or null), "last" (its last turn, or null), "spent"
/// (its charges in all, or null)}`. Fails when the server cannot be reached.
pub fn read(cluster: &Cluster) -> Result<Vec<Value>, String> {
    let cluster = cluster.clone();
    // A thread of its own: the caller may be inside a runtime.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the NATS client's runtime: {e}"))?;
        rt.block_on(async move {
            let options = crate::client::options(&cluster, "status", None).await?;
            let addrs = crate::client::addresses(&cluster);
            let client = tokio::time::timeout(Duration::from_secs(5), options.connect(addrs.as_slice()))
                .await
                .map_err(|_| format!("no answer from the NATS server at {}", cluster.nats_url))?
                .map_err(|e| format!("cannot reach the NATS server at {}: {e}", cluster.nats_url))?;
            let js = jetstream::new(client);
            let names = Names::new(&cluster, "status");
            let leases = entries(&lease::bucket(&js, &names.leases, cluster.replicas).await?).await;
            let last = entries(&bucket(&js, &names.status, cluster.replicas).await?).await;
            let spent = last.iter().find(|(k, _)| k == SPENT).map(|(_, v)| v.clone()).unwrap_or_default();
            Ok(cluster
                .nodes
                .iter()
                .map(|n| {
                    let running = leases.iter().find(|(k, _)| k == n.as_str()).map(|(_, v)| v.clone());
                    let last = last.iter().find(|(k, _)| k == n.as_str()).map(|(_, v)| v.clone());
                    json!({"node": n.as_str(), "running": running, "last": last, "spent": spent[n.as_str()]})
                })
                .collect())
        })
    })
    .join()
    .map_err(|_| "the NATS client stopped".to_string())?
}

/// Every live key of `store`, with its value as JSON (null when it is not).
async fn entries(store: &kv::Store) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let Ok(mut keys) = store.keys().await else { return out };
    while let Some(Ok(key)) = keys.next().await {
        if let Ok(Some(bytes)) = store.get(&key).await {
            out.push((key, serde_json::from_slice(&bytes).unwrap_or(Value::Null)));
        }
    }
    out
}

/// The key of what each node has spent, in the status bucket: one JSON
/// object, node name to credits, changed by compare-and-set.
pub const SPENT: &str = "spent";

/// Sets what `node` has spent in all to `spent`, by compare-and-set on the
/// entry that holds every node's (tried again when another node changed it
/// in between).
pub async fn set_spent(store: &kv::Store, node: &str, spent: f64) -> Result<(), String> {
    for _ in 0..8 {
        let entry = store.entry(SPENT).await.map_err(|e| e.to_string())?;
        let live = entry.filter(|e| e.operation == kv::Operation::Put);
        let mut all: serde_json::Map<String, Value> =
            live.as_ref().and_then(|e| serde_json::from_slice(&e.value).ok()).unwrap_or_default();
        all.insert(node.to_string(), json!(spent));
        let bytes = Value::Object(all).to_string().into_bytes();
        let done = match &live {
            Some(e) => store.update(SPENT, bytes.into(), e.revision).await.is_ok(),
            None => store.create(SPENT, bytes.into()).await.is_ok(),
        };
        if done {
            return Ok(());
        }
    }
    Err("what this node spent was not recorded: the entry kept changing".into())
}

/// What the nodes other than `node` have spent, as they last recorded it.
pub async fn spent_elsewhere(store: &kv::Store, node: &str) -> Result<f64, String> {
    let Some(bytes) = store.get(SPENT).await.map_err(|e| e.to_string())? else { return Ok(0.0) };
    let all: serde_json::Map<String, Value> = serde_json::from_slice(&bytes).unwrap_or_default();
    Ok(all
        .iter()
        .filter(|(n, _)| n.as_str() != node)
        .filter_map(|(_, v)| v.as_f64())
        .filter(|v| v.is_finite() && *v > 0.0)
        .sum())
}
