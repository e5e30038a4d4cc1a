//! The connection to the org's NATS server, and the [`Transport`] on it.
//!
//! The client lives on a runtime of its own (one thread): the engine routes
//! synchronously, often from inside its own runtime, and waits here for a
//! publish to be acknowledged. Every call is bounded in time; while the
//! server cannot be reached, calls fail at once until the backoff has passed,
//! so that a turn with much mail for other nodes does not wait on each.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_nats::connection::State as Connection;
use async_nats::jetstream::{self, consumer, kv, stream};
use futures_util::StreamExt;
use lemming_engine::events::TurnReport;
use lemming_engine::message::Message;
use lemming_engine::settings::Cluster;
use lemming_engine::transport::{Arrival, Transport, TransportError, Wake};

use crate::client::{options, CONNECT_TIMEOUT, MAX_BACKOFF};
use crate::lease::{self, Claim, Holder};
use crate::names::{msg_id, Names};
use crate::status;

/// How long one call to the server (a publish and its acknowledgement, a
/// fetch, the acks of a fetch) may take before it counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The first wait after a failed call; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// How long the server waits for an acknowledgement before it delivers a
/// message again (to this node: the consumer is the node's).
const ACK_WAIT: Duration = Duration::from_secs(30);
/// The most messages one fetch asks for; a routing pass fetches until the
/// consumer has no more, up to [`MAX_ARRIVALS`].
const FETCH: usize = 1024;
/// The most arrivals one routing pass takes: the rest wait for the next.
const MAX_ARRIVALS: usize = 16 * FETCH;

/// One node's link to the org's JetStream stream.
pub struct Nats {
    rt: Option<tokio::runtime::Runtime>,
    names: Names,
    /// `nats_url`, for messages.
    url: String,
    client: async_nats::Client,
    js: jetstream::Context,
    stream: stream::Config,
    state: Mutex<State>,
    /// Fetched messages not acknowledged yet, by the token their arrival carries.
    held: Arc<Mutex<HashMap<u64, jetstream::Message>>>,
    next: AtomicU64,
    /// The agents of this node, in name order: mail for them wakes the process.
    here: Arc<Mutex<Vec<String>>>,
    wake: Arc<Mutex<Option<Wake>>>,
    /// This process's hold on its node.
    lease: Arc<Mutex<Lease>>,
    node: String,
    me: Holder,
    replicas: usize,
    /// The bucket of the nodes' last turns, once opened.
    status: Mutex<Option<kv::Store>>,
}

/// This process's lease on its node.
#[derive(Default)]
struct Lease {
    /// The claim was made (or is being made in the background).
    claimed: bool,
    /// The bucket and the revision of the entry this process holds.
    held: Option<(kv::Store, u64)>,
    /// Why the node is no longer this process's.
    lost: Option<String>,
}

#[derive(Default)]
struct State {
    /// The stream is known to exist.
    stream_ready: bool,
    /// The node's consumer, with the agents its filter names.
    consumer: Option<(Vec<String>, consumer::PullConsumer)>,
    /// No call before this, after a failure.
    retry_at: Option<Instant>,
    backoff: Duration,
    /// Why the last call failed.
    last_error: Option<String>,
}

impl Nats {
    /// Connects as node `node` of `cluster`, in the background: the server
    /// may be down now. Fails only on what a retry cannot fix (an address
    /// that does not parse, credentials that cannot be read).
    pub fn connect(cluster: &Cluster, node: &str, org: &Path) -> Result<Nats, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("lemming-nats")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the NATS client's runtime: {e}"))?;
        let names = Names::new(cluster, node);
        let wake: Arc<Mutex<Option<Wake>>> = Arc::default();
        let addrs = crate::client::addresses(cluster);
        let options = options(cluster, node, Some(wake.clone()));
        let connected = call(&rt, CALL_TIMEOUT, async move {
            let options = options.await?;
            let client = options
                .connect(addrs.as_slice())
                .await
                .map_err(|e| format!("cannot connect to the NATS server: {e}"))?;
            let js = jetstream::ContextBuilder::new().timeout(CALL_TIMEOUT).build(client.clone());
            Ok::<_, String>((client, js))
        });
        let (client, js) = connected.ok_or("the NATS client did not start in time")??;
        // A one-shot `lemming step` has mail to send at once: give the first
        // connection a moment before calls fail for want of it.
        let start = Instant::now();
        while client.connection_state() != Connection::Connected && start.elapsed() < CONNECT_TIMEOUT {
            std::thread::sleep(Duration::from_millis(5));
        }
        let stream = stream::Config {
            name: names.stream.clone(),
            subjects: vec![names.every_inbox()],
            storage: stream::StorageType::File,
            num_replicas: cluster.replicas,
            duplicate_window: Duration::from_secs_f64(cluster.dedupe_window_secs),
            ..Default::default()
        };
        Ok(Nats {
            rt: Some(rt),
            names,
            url: cluster.nats_url.clone(),
            client,
            js,
            stream,
            state: Mutex::default(),
            held: Arc::default(),
            next: AtomicU64::new(1),
            here: Arc::default(),
            wake,
            lease: Arc::default(),
            node: node.to_string(),
            me: Holder::me(&org.display().to_string()),
            replicas: cluster.replicas,
            status: Mutex::default(),
        })
    }

    /// Runs `f` on the client's runtime and waits for it, at most [`CALL_TIMEOUT`].
    fn call<T: Send + 'static>(
        &self,
        f: impl Future<Output = Result<T, String>> + Send + 'static,
    ) -> Result<T, String> {
        let rt = self.rt.as_ref().ok_or("the NATS client has stopped")?;
        call(rt, CALL_TIMEOUT, f)
            .unwrap_or_else(|| Err(format!("no answer from the NATS server within {CALL_TIMEOUT:?}")))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Fails at once while the backoff after a failure lasts, or while the
    /// client is not connected.
    fn may_try(&self) -> Result<(), String> {
        if self.client.connection_state() != Connection::Connected {
            return Err(format!("not connected to the NATS server ({})", self.url));
        }
        let s = self.state();
        match s.retry_at {
            Some(at) if Instant::now() < at => Err(format!(
                "the NATS server could not be reached ({}); next try in {:.1} s",
                s.last_error.as_deref().unwrap_or("no answer"),
                at.saturating_duration_since(Instant::now()).as_secs_f64()
            )),
            _ => Ok(()),
        }
    }

    /// Records the outcome of a call: a failure starts (or doubles) the backoff.
    fn outcome<T>(&self, r: Result<T, String>) -> Result<T, String> {
        let mut s = self.state();
        match &r {
            Ok(_) => {
                s.retry_at = None;
                s.backoff = Duration::ZERO;
                s.last_error = None;
            }
            Err(e) => {
                s.backoff = (s.backoff * 2).clamp(FIRST_BACKOFF, MAX_BACKOFF);
                s.retry_at = Some(Instant::now() + s.backoff);
                s.last_error = Some(e.clone());
                // The server may have lost the stream (a new server, a purged store).
                s.stream_ready = false;
                s.consumer = None;
            }
        }
        r
    }

    /// Makes sure the org's stream exists (file storage, the replicas and
    /// dedupe window of `[cluster]`).
    fn ensure_stream(&self) -> Result<(), String> {
        if self.state().stream_ready {
            return Ok(());
        }
        let (js, config) = (self.js.clone(), self.stream.clone());
        self.call(async move {
            js.get_or_create_stream(config).await.map_err(|e| format!("cannot create the org's stream: {e}"))?;
            Ok(())
        })?;
        self.state().stream_ready = true;
        Ok(())
    }

    /// The node's durable pull consumer, its filter naming each agent of
    /// `here` (in name order); made, or changed, when the agents are not the
    /// ones it names.
    fn consumer(&self, here: &[String]) -> Result<consumer::PullConsumer, String> {
        if let Some((agents, c)) = &self.state().consumer {
            if agents.as_slice() == here {
                return Ok(c.clone());
            }
        }
        let wanted = here.to_vec();
        let config = consumer::pull::Config {
            durable_name: Some(self.names.consumer.clone()),
            description: Some("the mail of one lemming node's agents".into()),
            filter_subjects: wanted.iter().map(|a| self.names.inbox(a)).collect(),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: ACK_WAIT,
            // Never given up on: a message is acknowledged once it is in its
            // recipient's inbox, or a dead letter there.
            max_deliver: -1,
            // A routing pass holds up to MAX_ARRIVALS unacknowledged: the
            // server's default (1,000) would stop a larger pass short.
            max_ack_pending: MAX_ARRIVALS as i64,
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        };
        let (js, stream) = (self.js.clone(), self.names.stream.clone());
        let c = self.call(async move {
            js.create_consumer_on_stream(config, stream)
                .await
                .map_err(|e| format!("cannot make the node's consumer: {e}"))
        })?;
        self.state().consumer = Some((wanted, c.clone()));
        Ok(c)
    }

    /// Runs `f` on the bucket of the nodes' statuses (opened once) on the
    /// client's runtime, and waits for it.
    fn with_status<T, F, Fut>(&self, f: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnOnce(kv::Store) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, String>> + Send,
    {
        let opened = self.status.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let (js, bucket, replicas) = (self.js.clone(), self.names.status.clone(), self.replicas);
        let (out, store) = self.call(async move {
            let store = match opened {
                Some(store) => store,
                None => status::bucket(&js, &bucket, replicas).await?,
            };
            Ok((f(store.clone()).await, store))
        })?;
        *self.status.lock().unwrap_or_else(PoisonError::into_inner) = Some(store);
        out
    }

    /// What claiming this node takes, owned for the client's runtime.
    fn node_claim(&self) -> NodeClaim {
        NodeClaim {
            js: self.js.clone(),
            bucket: self.names.leases.clone(),
            node: self.node.clone(),
            me: self.me.clone(),
            replicas: self.replicas,
        }
    }

    fn fetch(&self, here: &[String]) -> Result<Vec<Arrival>, String> {
        self.ensure_stream()?;
        let c = self.consumer(here)?;
        let mut arrivals = Vec::new();
        while arrivals.len() < MAX_ARRIVALS {
            let c = c.clone();
            let batch = self.call(async move {
                let mut got = Vec::new();
                let mut messages = c.fetch().max_messages(FETCH).messages().await.map_err(|e| e.to_string())?;
                while let Some(m) = messages.next().await {
                    got.push(m.map_err(|e| e.to_string())?);
                }
                Ok(got)
            })?;
            let full = batch.len() == FETCH;
            let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            for m in batch {
                let Some(to) = self.names.agent_of(m.subject.as_str()).map(str::to_string) else {
                    tracing::warn!(subject = %m.subject, "a message on a subject that is no inbox is left unacknowledged");
                    continue;
                };
                let token = self.next.fetch_add(1, Ordering::Relaxed);
                arrivals.push(Arrival { token, to, bytes: m.payload.to_vec() });
                held.insert(token, m);
            }
            if !full {
                break;
            }
        }
        Ok(arrivals)
    }
}

impl Transport for Nats {
    fn send(&self, to: &str, msg: &Message) -> Result<(), TransportError> {
        self.may_try().map_err(|detail| TransportError { detail })?;
        let sent = self.ensure_stream().and_then(|()| {
            let (js, subject) = (self.js.clone(), self.names.inbox(to));
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", msg_id(&msg.id, to).as_str());
            let payload = msg.to_bytes().into();
            self.call(async move {
                let ack = js.publish_with_headers(subject, headers, payload).await.map_err(|e| e.to_string())?;
                ack.await.map_err(|e| format!("the publish was not acknowledged: {e}"))?;
                Ok(())
            })
        });
        self.outcome(sent).map_err(|detail| TransportError { detail })
    }

    fn incoming(&self, here: &[String]) -> Vec<Arrival> {
        {
            let mut w = self.here.lock().unwrap_or_else(PoisonError::into_inner);
            if w.as_slice() != here {
                *w = here.to_vec();
            }
        }
        // Fetched before and never done: the server delivers them again.
        self.held.lock().unwrap_or_else(PoisonError::into_inner).clear();
        if here.is_empty() {
            return Vec::new();
        }
        if let Err(e) = self.may_try() {
            tracing::debug!(error = %e, "mail from other nodes waits on the NATS server");
            return Vec::new();
        }
        match self.outcome(self.fetch(here)) {
            Ok(arrivals) => arrivals,
            Err(e) => {
                tracing::warn!(error = %e, "mail from other nodes waits on the NATS server");
                Vec::new()
            }
        }
    }

    fn done(&self, tokens: &[u64]) {
        let messages: Vec<jetstream::Message> = {
            let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            tokens.iter().filter_map(|t| held.remove(t)).collect()
        };
        if messages.is_empty() {
            return;
        }
        let client = self.client.clone();
        let acked = self.call(async move {
            for m in &messages {
                m.ack().await.map_err(|e| e.to_string())?;
            }
            // Out of this process before it may exit (a one-shot `lemming step`).
            client.flush().await.map_err(|e| e.to_string())
        });
        if let Err(e) = acked {
            // Delivered already: the server delivers them again and the inbox holds their ids.
            tracing::warn!(error = %e, "acknowledgements to the NATS server failed; the mail comes again and is not delivered twice");
        }
    }

    fn claim(&self) -> Result<(), String> {
        {
            let mut l = self.lease.lock().unwrap_or_else(PoisonError::into_inner);
            if l.claimed {
                return Ok(());
            }
            l.claimed = true;
        }
        let Some(rt) = self.rt.as_ref() else { return Ok(()) };
        let claim = self.node_claim();
        if self.client.connection_state() == Connection::Connected {
            match self.call(claim.clone().claim()) {
                Ok((Claim::Held(rev), store)) => {
                    self.lease.lock().unwrap_or_else(PoisonError::into_inner).held = Some((store, rev));
                }
                Ok((Claim::Taken(holder), _)) => return Err(taken(&self.node, &holder)),
                Err(e) => {
                    tracing::warn!(error = %e, node = %self.node, "cannot claim the node now; trying again in the background")
                }
            }
        } else {
            tracing::warn!(node = %self.node, "not connected to the NATS server: the node is claimed once it is");
        }
        let (lease, wake) = (self.lease.clone(), self.wake.clone());
        rt.spawn(async move {
            let mut tick = tokio::time::interval(lease::RENEW_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                let held = lease.lock().unwrap_or_else(PoisonError::into_inner).held.clone();
                let outcome = match held {
                    Some((store, rev)) => lease::renew(&store, &claim.node, &claim.me, rev).await.map(|c| (c, store)),
                    None => claim.clone().claim().await,
                };
                match outcome {
                    Ok((Claim::Held(rev), store)) => {
                        lease.lock().unwrap_or_else(PoisonError::into_inner).held = Some((store, rev));
                    }
                    Ok((Claim::Taken(holder), _)) => {
                        let mut l = lease.lock().unwrap_or_else(PoisonError::into_inner);
                        l.held = None;
                        l.lost = Some(taken(&claim.node, &holder));
                        drop(l);
                        if let Some(wake) = wake.lock().unwrap_or_else(PoisonError::into_inner).as_ref() {
                            wake();
                        }
                        return;
                    }
                    // The server is away: the entry lapses by itself if this lasts.
                    Err(e) => tracing::debug!(error = %e, "the node's lease was not renewed"),
                }
            }
        });
        Ok(())
    }

    fn turn_done(&self, report: &TurnReport, spent: f64) {
        if self.may_try().is_err() {
            return;
        }
        let record = status::record(&self.node, &self.me, report);
        let key = self.node.clone();
        let put = self.with_status(move |store| async move {
            store.put(&key, record.into()).await.map_err(|e| e.to_string())?;
            status::set_spent(&store, &key, spent).await
        });
        if let Err(e) = put {
            tracing::warn!(error = %e, "the node's status was not published");
        }
    }

    fn spent_elsewhere(&self) -> Option<f64> {
        self.may_try().ok()?;
        let node = self.node.clone();
        match self.with_status(move |store| async move { status::spent_elsewhere(&store, &node).await }) {
            Ok(spent) => Some(spent),
            Err(e) => {
                tracing::warn!(error = %e, "what the other nodes spent is not known; budget counts this node's charges");
                None
            }
        }
    }

    fn lost(&self) -> Option<String> {
        self.lease.lock().unwrap_or_else(PoisonError::into_inner).lost.clone()
    }

    fn watch(&self, wake: Wake) {
        *self.wake.lock().unwrap_or_else(PoisonError::into_inner) = Some(wake.clone());
        let Some(rt) = self.rt.as_ref() else { return };
        let (client, subject, names, here) =
            (self.client.clone(), self.names.every_inbox(), self.names.clone(), self.here.clone());
        rt.spawn(async move {
            // Core NATS sees each publish to the stream's subjects too: a hint, not the mail.
            let mut sub = loop {
                match client.subscribe(subject.clone()).await {
                    Ok(sub) => break sub,
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot watch for mail from other nodes yet");
                        tokio::time::sleep(MAX_BACKOFF).await;
                    }
                }
            };
            tracing::debug!(%subject, "watching for mail from other nodes");
            while let Some(m) = sub.next().await {
                let ours = names.agent_of(m.subject.as_str()).is_some_and(|a| {
                    here.lock().unwrap_or_else(PoisonError::into_inner).binary_search_by(|h| h.as_str().cmp(a)).is_ok()
                });
                if ours {
                    wake();
                }
            }
        });
    }
}

/// What claiming a node takes: the org's lease bucket, the node, this process.
#[derive(Clone)]
struct NodeClaim {
    js: jetstream::Context,
    bucket: String,
    node: String,
    me: Holder,
    replicas: usize,
}

impl NodeClaim {
    /// Claims the node, the bucket made when missing.
    async fn claim(self) -> Result<(Claim, kv::Store), String> {
        let store = lease::bucket(&self.js, &self.bucket, self.replicas).await?;
        Ok((lease::claim(&store, &self.node, &self.me).await?, store))
    }
}

/// Why this process may not run `node`: `holder` does.
fn taken(node: &str, holder: &Holder) -> String {
    format!(
        "node {node} is run by {holder}: stop that process first (`lemming stop` there); a process that died frees \
         its node within {} s",
        lease::LEASE_TTL.as_secs()
    )
}

impl Drop for Nats {
    fn drop(&mut self) {
        let held = self.lease.lock().unwrap_or_else(PoisonError::into_inner).held.take();
        if let (Some(rt), Some((store, rev))) = (self.rt.as_ref(), held) {
            let key = self.node.clone();
            let _ = call(rt, Duration::from_secs(1), async move { lease::release(&store, &key, rev).await });
        }
        if let Some(rt) = self.rt.take() {
            // Not `drop`: that blocks, which an async caller may not do.
            rt.shutdown_background();
        }
    }
}

/// Runs `f` on `rt` and waits for it at most `within`.
fn call<T: Send + 'static>(
    rt: &tokio::runtime::Runtime,
    within: Duration,
    f: impl Future<Output = T> + Send + 'static,
) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rt.spawn(async move {
        let _ = tx.send(f.await);
    });
    rx.recv_timeout(within).ok()
}
