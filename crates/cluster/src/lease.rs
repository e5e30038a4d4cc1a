//! A lease per node name, in a JetStream key-value bucket: one process at a
//! time runs a node, wherever it runs (the org lock does this on one machine).
//!
//! The bucket keeps each entry for [`LEASE_TTL`] only, measured by the server's
//! clock, so a holder that dies frees its node within that time, and clocks
//! of the machines need not agree. The holder renews its entry every
//! [`RENEW_EVERY`], by compare-and-set on the entry's revision: if another
//! process took the node meanwhile (after a renewal failed for longer than
//! the TTL), the renewal fails and the holder learns that it lost the node.

use std::time::Duration;

use async_nats::jetstream::kv::{self, CreateErrorKind};
use async_nats::jetstream::{self, stream};
use serde_json::json;

/// How long a lease lasts without renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(15);
/// How often the holder renews it.
pub const RENEW_EVERY: Duration = Duration::from_secs(5);

/// Who holds (or asks for) a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The machine's name.
    pub host: String,
    /// The process.
    pub pid: u32,
    /// Its org folder there.
    pub org: String,
}

impl Holder {
    /// This process, on this machine, for the org at `org`.
    pub fn me(org: &str) -> Holder {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "an unnamed host".into());
        Holder { host, pid: std::process::id(), org: org.to_string() }
    }

    fn to_bytes(&self) -> Vec<u8> {
        json!({"host": self.host, "pid": self.pid, "org": self.org}).to_string().into_bytes()
    }

    fn parse(bytes: &[u8]) -> Holder {
        let v: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
        let s = |k: &str| v[k].as_str().unwrap_or("?").to_string();
        Holder { host: s("host"), pid: v["pid"].as_u64().unwrap_or(0) as u32, org: s("org") }
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} on {} (org folder {})", self.pid, self.host, self.org)
    }
}

/// What a claim found.
#[derive(Debug)]
pub enum Claim {
    /// This process holds the node, at this revision of its entry.
    Held(u64),
    /// Another process does.
    Taken(Holder),
}

/// The org's bucket of leases, made when missing.
pub async fn bucket(js: &jetstream::Context, name: &str, replicas: usize) -> Result<kv::Store, String> {
    open_bucket(js, name, "which process runs each node of a lemming org", LEASE_TTL, replicas).await
}

/// A key-value bucket of the org, made when missing: one value per key, kept
/// `max_age` (zero: for good), on `replicas` servers.
pub async fn open_bucket(
    js: &jetstream::Context,
    name: &str,
    description: &str,
    max_age: Duration,
    replicas: usize,
) -> Result<kv::Store, String> {
    let config = kv::Config {
        bucket: name.to_string(),
        description: description.into(),
        history: 1,
        max_age,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    };
    match js.create_key_value(config).await {
        Ok(store) => Ok(store),
        Err(created) => js
            .get_key_value(name)
            .await
            .map_err(|e| format!("cannot make the bucket {name}: {created}; nor open it: {e}")),
    }
}

/// Claims `key` for `me`: held when nobody holds it (or its holder let it
/// lapse, or was a process of the same folder on this machine), taken when
/// another process holds it. The caller holds its folder's org lock, so a
/// holder of the same folder on this machine is a process that died.
pub async fn claim(store: &kv::Store, key: &str, me: &Holder) -> Result<Claim, String> {
    for _ in 0..3 {
        match store.create(key, me.to_bytes().into()).await {
            Ok(revision) => return Ok(Claim::Held(revision)),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
                match store.entry(key).await.map_err(|e| e.to_string())? {
                    Some(entry) if entry.operation == kv::Operation::Put => {
                        let holder = Holder::parse(&entry.value);
                        if holder == *me {
                            return Ok(Claim::Held(entry.revision));
                        }
                        // The same folder on this machine: its process is gone, as
                        // this one holds the folder's lock. No need to wait it out.
                        if holder.host == me.host && holder.org == me.org {
                            match store.update(key, me.to_bytes().into(), entry.revision).await {
                                Ok(revision) => return Ok(Claim::Held(revision)),
                                Err(_) => continue,
                            }
                        }
                        return Ok(Claim::Taken(holder));
                    }
                    // Released or lapsed in between: try again.
                    _ => continue,
                }
            }
            Err(e) => return Err(format!("cannot claim {key}: {e}")),
        }
    }
    Err(format!("cannot claim {key}: it changed hands three times while asked"))
}

/// Renews `me`'s hold on `key` at `revision`; what holds it otherwise.
pub async fn renew(store: &kv::Store, key: &str, me: &Holder, revision: u64) -> Result<Claim, String> {
    match store.update(key, me.to_bytes().into(), revision).await {
        Ok(revision) => Ok(Claim::Held(revision)),
        // Lapsed, or taken: claim again, which says which.
        Err(_) => claim(store, key, me).await,
    }
}

/// Lets `key` go, if this process still holds it at `revision`.
pub async fn release(store: &kv::Store, key: &str, revision: u64) {
    if let Err(e) = store.delete_expect_revision(key, Some(revision)).await {
        tracing::debug!(error = %e, key, "the node's lease was not released; it lapses by itself");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_reads_back_as_itself_and_bytes_that_are_not_one_read_as_nobody_known() {
        let me = Holder::me("/srv/org");
        assert_eq!(Holder::parse(&me.to_bytes()), me);
        assert_eq!(me.pid, std::process::id());
        let odd = Holder::parse(b"not json");
        assert_eq!((odd.host.as_str(), odd.pid), ("?", 0));
        assert!(me.to_string().contains(&format!("pid {}", me.pid)));
    }
}
