//! The embedded MQTT broker units connect to.
//!
//! Pepeunit serves MQTT itself rather than proxying to rumqttd: rumqttd 0.20 would bring a second copy of
//! axum, hyper and http into the build and has no per-topic authorization, so every packet would be parsed
//! twice (once by a filtering front, once by rumqttd) and cross a second socket. Here one task per
//! connection parses each packet once, authorizes it against the unit's [`acl::Acl`] (a violation closes
//! the connection and delivers nothing), stores what units publish ([`ingest`], committed before the
//! PUBACK), and routes it to subscribers by exact topic (units may not use wildcards, so routing is a
//! hash-map lookup).
//!
//! What the broker offers the rest of the server is [`MessageBus`]: publish a message and disconnect a
//! unit. An external clustered broker (EMQX with HTTP auth and ACL hooks) can implement the same two calls.
//!
//! Deliveries to units are QoS 0 (SUBACK grants QoS 0); commands and input values are retained, so a unit
//! that reconnects gets the latest, and retained messages are rebuilt from the database at start.

pub mod acl;
pub mod codec;
pub mod commands;
pub mod ingest;
mod session;
pub mod tls;
pub mod websocket;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};
use uuid::Uuid;

use crate::services::Services;
use codec::Version;

/// The two things the server asks of a broker.
pub trait MessageBus: Send + Sync {
    /// Publishes `payload` on `topic`; `retain` keeps it for later subscribers (empty clears it).
    fn publish(&self, topic: &str, payload: &[u8], retain: bool);
    /// Closes every connection of `unit`.
    fn disconnect(&self, unit: Uuid);
}

/// Most bytes of one packet from a unit.
pub const MAX_PACKET: usize = 256 * 1024;
/// Messages queued for one slow subscriber before new ones are dropped for it.
const QUEUE: usize = 1024;

struct Subscriber {
    version: Version,
    queue: mpsc::Sender<Vec<u8>>,
}

#[derive(Default)]
struct Router {
    /// topic → connection id → subscriber.
    subscriptions: RwLock<HashMap<String, HashMap<u64, Subscriber>>>,
    retained: RwLock<HashMap<String, Vec<u8>>>,
    /// unit → connection id → the signal that closes it.
    connections: Mutex<HashMap<Uuid, HashMap<u64, Arc<Notify>>>>,
    next_connection: AtomicU64,
    /// Bumped whenever any unit's permissions may have changed; connections reload theirs when it moves.
    acl_generation: AtomicU64,
}

// A panic while holding one of these locks cannot leave the maps half-updated in a way that matters
// (each update is a single insert or remove), so a poisoned lock is used as it is.
impl Router {
    fn subscriptions(&self) -> RwLockReadGuard<'_, HashMap<String, HashMap<u64, Subscriber>>> {
        self.subscriptions.read().unwrap_or_else(|e| e.into_inner())
    }

    fn subscriptions_mut(&self) -> RwLockWriteGuard<'_, HashMap<String, HashMap<u64, Subscriber>>> {
        self.subscriptions
            .write()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn retained(&self) -> RwLockReadGuard<'_, HashMap<String, Vec<u8>>> {
        self.retained.read().unwrap_or_else(|e| e.into_inner())
    }

    fn retained_mut(&self) -> RwLockWriteGuard<'_, HashMap<String, Vec<u8>>> {
        self.retained.write().unwrap_or_else(|e| e.into_inner())
    }

    fn connections(&self) -> MutexGuard<'_, HashMap<Uuid, HashMap<u64, Arc<Notify>>>> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running broker; cheap to clone.
#[derive(Clone)]
pub struct Broker {
    router: Arc<Router>,
    services: Services,
    ingestor: ingest::Ingestor,
}

impl Broker {
    pub fn new(services: Services) -> Self {
        let ingestor = ingest::Ingestor::start(services.clone());
        Self {
            router: Arc::new(Router::default()),
            services,
            ingestor,
        }
    }

    /// Rebuilds retained messages from the database: input values and pending updates.
    pub async fn restore(&self) -> crate::error::Result<()> {
        for (topic, value) in acl::retained_inputs(&self.services).await? {
            self.retain(&topic, value.into_bytes());
        }
        commands::restore_pending_updates(self).await
    }

    /// Accepts connections until the listener fails or the task is dropped.
    pub async fn serve(self, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let broker = self.clone();
                    tokio::spawn(async move { session::run(broker, stream, peer).await });
                }
                Err(error) => {
                    tracing::warn!(%error, "mqtt accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Serves one connection over any byte stream.
    pub async fn serve_stream<S>(&self, stream: S, peer: SocketAddr)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    {
        session::run(self.clone(), stream, peer).await;
    }

    pub(crate) fn services(&self) -> &Services {
        &self.services
    }

    fn retain(&self, topic: &str, payload: Vec<u8>) {
        let mut retained = self.router.retained_mut();
        if payload.is_empty() {
            retained.remove(topic);
        } else {
            retained.insert(topic.to_owned(), payload);
        }
    }

    /// Sends `payload` to every subscriber of `topic`.
    fn route(&self, topic: &str, payload: &[u8], retain: bool) {
        if retain {
            self.retain(topic, payload.to_vec());
        }
        let subscriptions = self.router.subscriptions();
        let Some(subscribers) = subscriptions.get(topic) else {
            return;
        };
        let (mut v3, mut v5) = (None, None);
        for subscriber in subscribers.values() {
            let bytes = match subscriber.version {
                Version::V3 => {
                    v3.get_or_insert_with(|| codec::publish(Version::V3, topic, payload, false))
                }
                Version::V5 => {
                    v5.get_or_insert_with(|| codec::publish(Version::V5, topic, payload, false))
                }
            };
            if subscriber.queue.try_send(bytes.clone()).is_err() {
                // A subscriber that cannot keep up loses QoS 0 messages rather than slowing everyone.
                tracing::debug!(topic, "message dropped for a slow subscriber");
            }
        }
    }

    /// Marks every connection's permissions stale.
    pub fn permissions_changed(&self) {
        self.router.acl_generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Drops `unit`'s subscriptions to topics it may no longer receive (a link was removed), so nothing
    /// more reaches it there even before its next packet.
    pub async fn prune_subscriptions(&self, unit: Uuid) -> crate::error::Result<()> {
        let connections: Vec<u64> = self
            .router
            .connections()
            .get(&unit)
            .map(|open| open.keys().copied().collect())
            .unwrap_or_default();
        if connections.is_empty() {
            return Ok(());
        }
        let allowed = acl::load(&self.services, unit).await?.subscribe;
        let mut subscriptions = self.router.subscriptions_mut();
        subscriptions.retain(|topic, subscribers| {
            if !allowed.contains(topic) {
                subscribers.retain(|id, _| !connections.contains(id));
            }
            !subscribers.is_empty()
        });
        Ok(())
    }
}

impl MessageBus for Broker {
    fn publish(&self, topic: &str, payload: &[u8], retain: bool) {
        self.route(topic, payload, retain);
    }

    fn disconnect(&self, unit: Uuid) {
        let connections = self.router.connections();
        if let Some(open) = connections.get(&unit) {
            for signal in open.values() {
                signal.notify_one();
            }
        }
    }
}

/// The broker could not listen.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on mqtt_bind (PEPEUNIT_MQTT_BIND) {addr}: {cause}")]
pub struct BindError {
    pub addr: SocketAddr,
    pub cause: std::io::Error,
}

/// Binds the MQTT listener.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|cause| BindError { addr, cause })
}
