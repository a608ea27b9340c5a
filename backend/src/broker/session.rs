//! One unit's MQTT connection: CONNECT with the unit's token, then every packet authorized.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{Notify, mpsc};
use uuid::Uuid;

use super::acl::{self, Acl};
use super::codec::{self, DecodeError, Packet, Refusal, Version};
use super::ingest::Item;
use super::{Broker, MAX_PACKET, QUEUE, Subscriber};
use crate::services::units::device::{self, DeviceCaller};
use crate::services::units::live::LiveEvent;

/// How long a client has to send CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a session ended, for the log.
#[derive(Debug)]
enum End {
    Clean,
    Kicked,
    Violation(String),
    Protocol(DecodeError),
    KeepAlive,
}

/// Serves one connection, over TCP or any other byte stream (MQTT over WebSocket).
pub async fn run<S>(broker: Broker, stream: S, peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read, mut write) = tokio::io::split(stream);
    let mut reader = BufReader::new(read);
    let first =
        tokio::time::timeout(CONNECT_TIMEOUT, codec::read_frame(&mut reader, MAX_PACKET)).await;
    let Ok(Ok((byte, body))) = first else {
        return;
    };
    let connect = match codec::decode(byte, &body, Version::V3) {
        Ok(Packet::Connect(connect)) => connect,
        _ => return,
    };
    let version = connect.version;
    let unit = match authenticate(&broker, &connect).await {
        Ok(unit) => unit,
        Err(refusal) => {
            tracing::info!(%peer, client_id = %connect.client_id, ?refusal, "mqtt connect refused");
            let _ = write
                .write_all(&codec::connack(version, Some(refusal)))
                .await;
            return;
        }
    };
    let acl = match acl::load(broker.services(), unit).await {
        Ok(acl) => acl,
        Err(error) => {
            tracing::warn!(%unit, %error, "loading permissions failed");
            let _ = write
                .write_all(&codec::connack(version, Some(Refusal::NotAuthorized)))
                .await;
            return;
        }
    };
    let id = broker
        .router
        .next_connection
        .fetch_add(1, Ordering::Relaxed);
    let kick = Arc::new(Notify::new());
    broker
        .router
        .connections()
        .entry(unit)
        .or_default()
        .insert(id, kick.clone());
    let (queue, mut outgoing) = mpsc::channel::<Vec<u8>>(QUEUE);
    let _ = queue.try_send(codec::connack(version, None));
    let writer = tokio::spawn(async move {
        while let Some(bytes) = outgoing.recv().await {
            if write.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = write.shutdown().await;
    });
    tracing::debug!(%unit, %peer, "mqtt connected");
    broker
        .services()
        .live()
        .send(LiveEvent::Presence { unit, online: true });
    let (completions, pending) = mpsc::channel(QUEUE);
    let completer = tokio::spawn(complete(broker.clone(), pending, queue.clone()));
    let mut session = Session {
        broker: broker.clone(),
        completions,
        unit,
        id,
        version,
        acl,
        generation: broker.router.acl_generation.load(Ordering::SeqCst),
        queue,
        subscribed: Vec::new(),
    };
    // A keep-alive of k seconds allows 1.5 k of silence; 0 turns the check off.
    let idle = (connect.keep_alive > 0)
        .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));
    let end = session.serve(&mut reader, &kick, idle).await;
    match &end {
        End::Violation(what) => {
            tracing::warn!(%unit, %peer, what, "mqtt connection closed: not allowed")
        }
        End::Protocol(error) => tracing::debug!(%unit, %error, "mqtt connection closed"),
        other => tracing::debug!(%unit, ?other, "mqtt connection closed"),
    }
    session.cleanup();
    drop(session);
    let _ = completer.await;
    broker.services().live().send(LiveEvent::Presence {
        unit,
        online: false,
    });
    let _ = writer.await;
}

/// A CONNECT is a unit's: client id = unit uuid, username = its current token.
async fn authenticate(broker: &Broker, connect: &codec::Connect) -> Result<Uuid, Refusal> {
    let unit: Uuid = connect
        .client_id
        .parse()
        .map_err(|_| Refusal::BadClientId)?;
    let token = connect.username.as_deref().ok_or(Refusal::BadCredentials)?;
    match device::authenticate(broker.services(), token).await {
        Ok(DeviceCaller::Unit { uuid, .. }) if uuid == unit => Ok(unit),
        Ok(_) => Err(Refusal::NotAuthorized),
        Err(_) => Err(Refusal::BadCredentials),
    }
}

/// A publish handed to the writer, to route and acknowledge once committed.
struct Pending {
    committed: tokio::sync::oneshot::Receiver<bool>,
    topic: String,
    payload: Vec<u8>,
    ack: Option<Vec<u8>>,
}

/// Publishes of one connection in arrival order: each is routed and acknowledged after its commit. An
/// uncommitted one is neither (a QoS 1 sender retries; a QoS 0 value is lost, as QoS 0 allows).
async fn complete(
    broker: Broker,
    mut pending: mpsc::Receiver<Pending>,
    queue: mpsc::Sender<Vec<u8>>,
) {
    while let Some(p) = pending.recv().await {
        if !p.committed.await.unwrap_or(false) {
            continue;
        }
        // A unit's retain flag is not honoured: what others see of its outputs is the stored value.
        broker.route(&p.topic, &p.payload, false);
        if let Some(ack) = p.ack
            && queue.send(ack).await.is_err()
        {
            return;
        }
    }
}

struct Session {
    broker: Broker,
    completions: mpsc::Sender<Pending>,
    unit: Uuid,
    id: u64,
    version: Version,
    acl: Acl,
    generation: u64,
    queue: mpsc::Sender<Vec<u8>>,
    subscribed: Vec<String>,
}

impl Session {
    async fn serve<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut BufReader<R>,
        kick: &Notify,
        idle: Option<Duration>,
    ) -> End {
        loop {
            let frame = async {
                match idle {
                    Some(limit) => {
                        tokio::time::timeout(limit, codec::read_frame(reader, MAX_PACKET))
                            .await
                            .map_err(|_| ())
                    }
                    None => Ok(codec::read_frame(reader, MAX_PACKET).await),
                }
            };
            let (first, body) = tokio::select! {
                () = kick.notified() => return End::Kicked,
                frame = frame => match frame {
                    Err(()) => return End::KeepAlive,
                    Ok(Err(DecodeError::Closed)) => return End::Clean,
                    Ok(Err(error)) => return End::Protocol(error),
                    Ok(Ok(frame)) => frame,
                },
            };
            let packet = match codec::decode(first, &body, self.version) {
                Ok(packet) => packet,
                Err(error) => return End::Protocol(error),
            };
            match packet {
                Packet::Publish(publish) => {
                    if let Some(end) = self.publish(publish).await {
                        return end;
                    }
                }
                Packet::Subscribe { packet_id, filters } => {
                    if let Some(end) = self.subscribe(packet_id, filters).await {
                        return end;
                    }
                }
                Packet::Unsubscribe { packet_id, filters } => {
                    self.unsubscribe(&filters);
                    self.send(codec::unsuback(self.version, packet_id, filters.len()))
                        .await;
                }
                Packet::PubRel(packet_id) => self.send(codec::ack(7, packet_id)).await,
                Packet::PingReq => self.send(codec::pingresp()).await,
                Packet::Disconnect => return End::Clean,
                // Deliveries are QoS 0, so acknowledgements from the unit have nothing to settle.
                Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_) => {}
                Packet::Connect(_) => return End::Violation("a second CONNECT".into()),
            }
        }
    }

    async fn send(&self, bytes: Vec<u8>) {
        let _ = self.queue.send(bytes).await;
    }

    /// Reloads permissions when anything changed since they were read.
    async fn fresh_acl(&mut self) {
        let now = self.broker.router.acl_generation.load(Ordering::SeqCst);
        if now != self.generation {
            match acl::load(self.broker.services(), self.unit).await {
                Ok(acl) => {
                    self.acl = acl;
                    self.generation = now;
                }
                Err(error) => {
                    tracing::warn!(unit = %self.unit, %error, "reloading permissions failed")
                }
            }
        }
    }

    async fn publish(&mut self, publish: codec::Publish) -> Option<End> {
        self.fresh_acl().await;
        let Some(&sink) = self.acl.publish.get(&publish.topic) else {
            return Some(End::Violation(format!("publish to {}", publish.topic)));
        };
        let item = Item {
            unit: self.unit,
            sink,
            payload: publish.payload.clone(),
            at: chrono::Utc::now(),
        };
        if publish.qos == 0 {
            // Nothing is acknowledged at QoS 0, so nothing waits for the commit: routed now, stored in
            // the same order by the writer.
            self.broker.route(&publish.topic, &publish.payload, false);
            drop(self.broker.ingestor.submit(item).await);
            return None;
        }
        let committed = self.broker.ingestor.submit(item).await;
        let ack = match (publish.qos, publish.packet_id) {
            (1, Some(id)) => Some(codec::ack(4, id)),
            (2, Some(id)) => Some(codec::ack(5, id)),
            _ => None,
        };
        // Reading goes on; the completion task routes and acknowledges in order, each after its commit.
        let pending = Pending {
            committed,
            topic: publish.topic,
            payload: publish.payload,
            ack,
        };
        if self.completions.send(pending).await.is_err() {
            return Some(End::Clean);
        }
        None
    }

    async fn subscribe(&mut self, packet_id: u16, filters: Vec<(String, u8)>) -> Option<End> {
        self.fresh_acl().await;
        if let Some((denied, _)) = filters
            .iter()
            .find(|(f, _)| !self.acl.subscribe.contains(f))
        {
            return Some(End::Violation(format!("subscribe to {denied}")));
        }
        {
            let mut subscriptions = self.broker.router.subscriptions_mut();
            for (filter, _) in &filters {
                subscriptions.entry(filter.clone()).or_default().insert(
                    self.id,
                    Subscriber {
                        version: self.version,
                        queue: self.queue.clone(),
                    },
                );
                if !self.subscribed.contains(filter) {
                    self.subscribed.push(filter.clone());
                }
            }
        }
        let codes = vec![0u8; filters.len()];
        self.send(codec::suback(self.version, packet_id, &codes))
            .await;
        let retained: Vec<(String, Vec<u8>)> = {
            let retained = self.broker.router.retained();
            filters
                .iter()
                .filter_map(|(f, _)| retained.get(f).map(|p| (f.clone(), p.clone())))
                .collect()
        };
        for (topic, payload) in retained {
            self.send(codec::publish(self.version, &topic, &payload, true))
                .await;
        }
        None
    }

    fn unsubscribe(&mut self, filters: &[String]) {
        let mut subscriptions = self.broker.router.subscriptions_mut();
        for filter in filters {
            if let Some(subscribers) = subscriptions.get_mut(filter) {
                subscribers.remove(&self.id);
                if subscribers.is_empty() {
                    subscriptions.remove(filter);
                }
            }
            self.subscribed.retain(|s| s != filter);
        }
    }

    fn cleanup(&mut self) {
        let filters = std::mem::take(&mut self.subscribed);
        self.unsubscribe(&filters);
        let mut connections = self.broker.router.connections();
        if let Some(open) = connections.get_mut(&self.unit) {
            open.remove(&self.id);
            if open.is_empty() {
                connections.remove(&self.unit);
            }
        }
    }
}
