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
//! Deliveries are at the QoS the subscriber asked for, at most 1 (QoS 1 with an in-flight window settled by
//! the unit's PUBACKs). A delivery is never dropped while its subscriber is connected: a full queue slows
//! the publisher, and a subscriber whose queue stays full past a timeout is disconnected (MQTT 5 reason
//! 0x97), counted in `/metrics`. Commands, input values and the values of remote outputs mirrored from
//! a peer instance are retained, so a unit that reconnects gets the latest, and retained messages are
//! rebuilt from the database at start.
//!
//! A persistent session (MQTT 3 `clean_session = 0`, MQTT 5 Session Expiry Interval > 0) outlives its
//! connection in memory ([`session_store`]): its subscriptions keep collecting QoS 1 messages, bounded in
//! time and number, and the next connection of the unit resumes it.

pub mod acl;
pub mod codec;
pub mod commands;
pub mod ingest;
pub mod posted;
mod session;
mod session_store;
pub mod tls;
pub mod websocket;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use uuid::Uuid;

use crate::config::Config;
use crate::limits::{Admitted, ConnectionCap, LimitCounters};
use crate::services::Services;

/// The two things the server asks of a broker.
pub trait MessageBus: Send + Sync {
    /// Publishes `payload` on `topic`; `retain` keeps it for later subscribers (empty clears it).
    fn publish(&self, topic: &str, payload: &[u8], retain: bool);
    /// Closes every connection of `unit`.
    fn disconnect(&self, unit: Uuid);
}

/// Most bytes of one packet from a unit.
pub const MAX_PACKET: usize = 256 * 1024;
/// Most bytes of a CONNECT, the only packet read before the client is authenticated: a unit's CONNECT
/// (uuid, token, a will at most) is a few hundred bytes, so an anonymous client cannot make us hold more.
pub const MAX_CONNECT: usize = 4 * 1024;

/// The broker's limits, from the configuration.
pub struct Limits {
    pub connections: ConnectionCap,
    pub subscriber_queue: usize,
    pub slow_subscriber_timeout: Duration,
    pub max_inflight: u16,
    pub publish_rate: u32,
    pub publish_burst: u32,
    pub publish_bytes_per_second: u64,
    /// Longest a persistent session is kept after its connection ends (0: sessions are never kept).
    pub session_expiry_max: Duration,
    /// Most QoS 1 messages a kept session holds (in flight and queued).
    pub session_max_queued: usize,
    pub counters: LimitCounters,
}

impl Limits {
    pub fn from_config(config: &Config, counters: LimitCounters) -> Self {
        Self {
            connections: ConnectionCap::new(
                "mqtt_connections",
                config.mqtt_max_connections,
                config.mqtt_max_connections_per_ip,
                counters.clone(),
            ),
            subscriber_queue: config.mqtt_subscriber_queue,
            slow_subscriber_timeout: Duration::from_secs(
                config.mqtt_slow_subscriber_timeout_seconds,
            ),
            max_inflight: config.mqtt_max_inflight,
            publish_rate: config.mqtt_publish_rate,
            publish_burst: config.mqtt_publish_burst,
            publish_bytes_per_second: config.mqtt_publish_bytes_per_second,
            session_expiry_max: Duration::from_secs(config.mqtt_session_expiry_max_seconds),
            session_max_queued: config.mqtt_session_max_queued,
            counters,
        }
    }
}

/// A message on its way to one subscriber; the connection's writer encodes it (with a packet id at QoS 1).
///
/// Topic and payload share one allocation, which every subscriber of the message shares in turn. A
/// delivery is 24 bytes: each connection's delivery queue allocates its first block of 32 when it opens,
/// so this is part of what an idle connection costs.
pub(crate) struct Delivery {
    /// The topic's bytes, then the payload's.
    message: Arc<[u8]>,
    topic_len: u32,
    qos: u8,
    retain: bool,
}

impl Delivery {
    /// The shared bytes of a message on `topic`.
    fn message(topic: &str, payload: &[u8]) -> (Arc<[u8]>, u32) {
        // One allocation: both iterators know their length.
        let bytes: Arc<[u8]> = topic.bytes().chain(payload.iter().copied()).collect();
        (bytes, u32::try_from(topic.len()).unwrap_or(u32::MAX))
    }

    fn new(topic: &str, payload: &[u8], qos: u8, retain: bool) -> Self {
        let (message, topic_len) = Self::message(topic, payload);
        Self {
            message,
            topic_len,
            qos,
            retain,
        }
    }

    fn split(&self) -> (&[u8], &[u8]) {
        let at = usize::try_from(self.topic_len).map_or(0, |len| len.min(self.message.len()));
        self.message.split_at(at)
    }

    /// The topic (it was a `&str` when the delivery was made, so it is UTF-8).
    pub(crate) fn topic(&self) -> &str {
        std::str::from_utf8(self.split().0).unwrap_or_default()
    }

    pub(crate) fn payload(&self) -> &[u8] {
        self.split().1
    }
}

struct Subscriber {
    /// The QoS granted for this subscription (0 or 1).
    qos: u8,
    target: Target,
}

/// Where a subscriber's messages go.
enum Target {
    /// A connected unit's delivery queue.
    Live {
        deliveries: mpsc::Sender<Delivery>,
        conn: Arc<session::Conn>,
    },
    /// A persistent session whose unit is offline: QoS 1 messages wait there for it.
    Parked(Arc<session_store::Parked>),
}

/// Deliveries that did not fit their subscriber's queue at once: the publisher waits for room (back-pressure)
/// rather than drop them, up to the slow-subscriber timeout, after which that subscriber is disconnected.
#[derive(Default)]
#[must_use = "a backlog holds messages still to deliver"]
pub(crate) struct Backlog(Vec<(mpsc::Sender<Delivery>, Arc<session::Conn>, Delivery)>);

impl Backlog {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Waits until each delivery is queued or its subscriber is cut off as too slow.
    async fn deliver(self, broker: &Broker) {
        // One deadline for the whole backlog, so several slow subscribers cost one timeout, not one each.
        let deadline = tokio::time::Instant::now() + broker.limits.slow_subscriber_timeout;
        for (queue, conn, delivery) in self.0 {
            match tokio::time::timeout_at(deadline, queue.send(delivery)).await {
                Ok(Ok(())) => continue,
                // The connection ended meanwhile; if its session was kept, the message waits there.
                Ok(Err(mpsc::error::SendError(delivery))) => {
                    broker.park_late(conn.unit, delivery);
                    continue;
                }
                Err(_) => {}
            }
            if conn.close(codec::reason::QUOTA_EXCEEDED) {
                broker.limits.counters.slow_subscriber(&format_args!(
                    "subscriber {} did not read its queue of {} messages for {:?}; disconnected",
                    conn.unit,
                    broker.limits.subscriber_queue,
                    broker.limits.slow_subscriber_timeout
                ));
            }
        }
    }
}

#[derive(Default)]
struct Router {
    /// topic → connection id → subscriber.
    subscriptions: RwLock<HashMap<String, HashMap<u64, Subscriber>>>,
    retained: RwLock<HashMap<String, Vec<u8>>>,
    /// unit → connection id → the connection (to close it).
    connections: Mutex<HashMap<Uuid, HashMap<u64, Arc<session::Conn>>>>,
    next_connection: AtomicU64,
    /// Bumped whenever any unit's permissions may have changed; connections reload theirs when it moves.
    acl_generation: AtomicU64,
    /// Persistent sessions of units that are offline.
    sessions: Mutex<HashMap<Uuid, session_store::Stored>>,
    /// Wills waiting out their MQTT 5 delay; a new connection of the unit cancels its will.
    wills: Mutex<HashMap<Uuid, tokio::task::AbortHandle>>,
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

    fn connections(&self) -> MutexGuard<'_, HashMap<Uuid, HashMap<u64, Arc<session::Conn>>>> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<Uuid, session_store::Stored>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wills(&self) -> MutexGuard<'_, HashMap<Uuid, tokio::task::AbortHandle>> {
        self.wills.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running broker; cheap to clone.
#[derive(Clone)]
pub struct Broker {
    router: Arc<Router>,
    services: Services,
    ingestor: ingest::Ingestor,
    limits: Arc<Limits>,
}

impl Broker {
    pub fn new(services: Services, limits: Limits) -> Self {
        let ingestor = ingest::Ingestor::start(services.clone());
        Self {
            router: Arc::new(Router::default()),
            services,
            ingestor,
            limits: Arc::new(limits),
        }
    }

    /// Rebuilds retained messages from the database: input values, mirrored remote outputs' values and
    /// pending updates.
    pub async fn restore(&self) -> crate::error::Result<()> {
        let inputs = acl::retained_inputs(&self.services).await?;
        let mirrors = acl::retained_mirrors(&self.services).await?;
        for (topic, value) in inputs.into_iter().chain(mirrors) {
            self.retain(&topic, value.into_bytes());
        }
        commands::restore_pending_updates(self).await
    }

    /// Accepts connections until the listener fails or the task is dropped.
    pub async fn serve(self, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    // Over the cap the socket is closed at once: nothing is read or allocated for it.
                    let Some(admitted) = self.admit(peer) else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let broker = self.clone();
                    tokio::spawn(async move { session::run(broker, stream, peer, admitted).await });
                }
                Err(error) => {
                    tracing::warn!(%error, "mqtt accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Serves one connection over any byte stream, if the connection caps admit it.
    pub async fn serve_stream<S>(&self, stream: S, peer: SocketAddr)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    {
        if let Some(admitted) = self.admit(peer) {
            self.serve_admitted(stream, peer, admitted).await;
        }
    }

    /// Takes a place under the MQTT connection caps for a client at `peer`.
    pub(crate) fn admit(&self, peer: SocketAddr) -> Option<Admitted> {
        self.limits.connections.admit(peer.ip())
    }

    /// Serves one connection that already holds its place under the caps.
    pub(crate) async fn serve_admitted<S>(&self, stream: S, peer: SocketAddr, admitted: Admitted)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    {
        session::run(self.clone(), stream, peer, admitted).await;
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

    /// Queues `payload` for every subscriber of `topic`; what does not fit a full queue comes back as a
    /// backlog for the caller to wait on. An empty retained payload only clears the retained message: it
    /// is never delivered (a unit would read an empty command as a command).
    fn route(&self, topic: &str, payload: &[u8], retain: bool) -> Backlog {
        if retain {
            self.retain(topic, payload.to_vec());
            if payload.is_empty() {
                return Backlog::default();
            }
        }
        let subscriptions = self.router.subscriptions();
        let Some(subscribers) = subscriptions.get(topic) else {
            return Backlog::default();
        };
        let (message, topic_len) = Delivery::message(topic, payload);
        let mut backlog = Backlog::default();
        for subscriber in subscribers.values() {
            let delivery = Delivery {
                message: message.clone(),
                topic_len,
                qos: subscriber.qos,
                retain: false,
            };
            match &subscriber.target {
                Target::Live { deliveries, conn } => match deliveries.try_send(delivery) {
                    Ok(()) | Err(TrySendError::Closed(_)) => {}
                    Err(TrySendError::Full(delivery)) => {
                        backlog.0.push((deliveries.clone(), conn.clone(), delivery))
                    }
                },
                // An offline session keeps what it subscribed to at QoS 1; QoS 0 is not queued (MQTT
                // leaves that to the server, and a unit reads the retained latest value anyway).
                Target::Parked(parked) if subscriber.qos > 0 => self.park(parked, delivery),
                Target::Parked(_) => {}
            }
        }
        backlog
    }

    /// Routes and waits for room in full queues: the publisher is slowed, nothing is dropped.
    async fn route_all(&self, topic: &str, payload: &[u8], retain: bool) {
        let backlog = self.route(topic, payload, retain);
        if !backlog.is_empty() {
            backlog.deliver(self).await;
        }
    }

    /// Ends MQTT for a graceful stop: closes every connection (MQTT 5 reason 0x8B, server shutting down),
    /// waits for them to end, then for the publishes they had handed to ingestion to be committed, all
    /// until `deadline` at most. After it nothing writes values, so the database may close; what a unit
    /// had sent without a PUBACK yet it sends again to the next server (QoS 1).
    pub async fn shutdown(&self, deadline: tokio::time::Instant) {
        let open: Vec<Arc<session::Conn>> = self
            .router
            .connections()
            .values()
            .flat_map(|open| open.values().cloned())
            .collect();
        for conn in &open {
            conn.close(codec::reason::SERVER_SHUTTING_DOWN);
        }
        let ended = tokio::time::timeout_at(deadline, async {
            for conn in &open {
                conn.finished().await;
            }
        })
        .await;
        if ended.is_err() {
            tracing::warn!("MQTT connections still open at the end of the stop's wait");
        }
        self.ingestor.stop(deadline).await;
    }

    /// The counters of hit limits.
    pub fn limit_counters(&self) -> &LimitCounters {
        &self.limits.counters
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
        let parked = self.router.sessions().get(&unit).map(|stored| stored.id);
        if connections.is_empty() && parked.is_none() {
            return Ok(());
        }
        let allowed = acl::load(&self.services, unit).await?;
        let connections: Vec<u64> = connections.into_iter().chain(parked).collect();
        if let Some(stored) = self.router.sessions().get_mut(&unit) {
            stored
                .subscriptions
                .retain(|(topic, _)| allowed.may_subscribe(topic));
        }
        let mut subscriptions = self.router.subscriptions_mut();
        subscriptions.retain(|topic, subscribers| {
            if !allowed.may_subscribe(topic) {
                subscribers.retain(|id, _| !connections.contains(id));
            }
            !subscribers.is_empty()
        });
        Ok(())
    }
}

impl MessageBus for Broker {
    fn publish(&self, topic: &str, payload: &[u8], retain: bool) {
        let backlog = self.route(topic, payload, retain);
        if !backlog.is_empty() {
            let broker = self.clone();
            tokio::spawn(async move { backlog.deliver(&broker).await });
        }
    }

    fn disconnect(&self, unit: Uuid) {
        {
            let connections = self.router.connections();
            if let Some(open) = connections.get(&unit) {
                for conn in open.values() {
                    conn.close(codec::reason::ADMINISTRATIVE_ACTION);
                }
            }
        }
        // A revoked or deleted unit's kept session goes too: nothing waits for a device that may not
        // come back with this identity.
        self.discard_session(unit);
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
