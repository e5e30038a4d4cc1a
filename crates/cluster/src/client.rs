//! The NATS client's options: its name on the server, reconnection, and the
//! credentials of the environment.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use lemming_engine::settings::Cluster;
use lemming_engine::transport::Wake;

/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest wait between tries while the server cannot be reached.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The servers of `nats_url`, a comma-separated list, each as written.
pub fn addresses(cluster: &Cluster) -> Vec<String> {
    cluster.nats_url.split(',').map(|a| a.trim().to_string()).collect()
}

/// The client's options: a name the server shows, the connection made in
/// the background and again whenever lost (each time it comes back, the
/// process is woken to send what waits), and the credentials of the
/// environment.
///
/// Without `wake` (a command that only reads), the first connection is not
/// retried: a server that cannot be reached is an error.
pub fn options(
    cluster: &Cluster,
    node: &str,
    wake: Option<Arc<Mutex<Option<Wake>>>>,
) -> impl Future<Output = Result<async_nats::ConnectOptions, String>> + Send + 'static {
    let name = format!("lemming {} node {node}", cluster.name);
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let (creds, token, user, password) =
        (env("LEMMING_NATS_CREDS"), env("LEMMING_NATS_TOKEN"), env("LEMMING_NATS_USER"), env("LEMMING_NATS_PASSWORD"));
    async move {
        let mut o = async_nats::ConnectOptions::new().name(name).connection_timeout(CONNECT_TIMEOUT);
        if let Some(wake) = wake {
            o = o
                .retry_on_initial_connect()
                .max_reconnects(None)
                .reconnect_delay_callback(|attempts| {
                    let ms = 100u64.saturating_mul(1 << attempts.min(9) as u64);
                    Duration::from_millis(ms).min(MAX_BACKOFF)
                })
                .event_callback(move |event| {
                    let wake = wake.clone();
                    async move {
                        match &event {
                            // A refused login or a server's complaint: people must see it.
                            async_nats::Event::ServerError(_) | async_nats::Event::ClientError(_) => {
                                tracing::warn!(%event, "NATS")
                            }
                            _ => tracing::info!(%event, "NATS"),
                        }
                        if matches!(event, async_nats::Event::Connected) {
                            if let Some(wake) = wake.lock().unwrap_or_else(PoisonError::into_inner).as_ref() {
                                wake();
                            }
                        }
                    }
                });
        }
        if let Some(path) = creds {
            o = o.credentials_file(&path).await.map_err(|e| format!("LEMMING_NATS_CREDS={path}: {e}"))?;
        }
        if let Some(token) = token {
            o = o.token(token);
        }
        match (user, password) {
            (Some(u), Some(p)) => o = o.user_and_password(u, p),
            (None, None) => {}
            _ => return Err("set both LEMMING_NATS_USER and LEMMING_NATS_PASSWORD, or neither".into()),
        }
        Ok(o)
    }
}
