//! One unit's MQTT connection: CONNECT with the unit's token, then every packet authorized.
//!
//! Three tasks serve a connection: the reader (this module's `run`, which parses and authorizes), the
//! completer (routes and acknowledges each QoS 1 publish once it is committed, in order) and the writer
//! (the only one that touches the socket's write side: acknowledgements, deliveries with their packet ids
//! and in-flight window, and the closing DISCONNECT). Closing goes through [`Conn::close`], which every task
//! watches, so a connection can be closed from anywhere (a newer session, a slow queue, a revoked token)
//! with an MQTT 5 reason code.
//!
//! A connection with a persistent session first waits for the unit's older connections to end (their
//! sessions are kept by then), resumes what they left (see [`super::session_store`]) and, when it ends,
//! parks its subscriptions and hands over what its writer had in flight or queued.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{Notify, mpsc};
use uuid::Uuid;

use super::acl::Sink;
use super::acl::{self, Acl};
use super::codec::{self, DecodeError, Packet, Refusal, Version, Will, reason};
use super::ingest::{Item, Outcome};
use super::session_store::{Held, Leftover};
use super::{Broker, Delivery, MAX_CONNECT, MAX_PACKET, Subscriber, Target};
use crate::limits::{Admitted, TokenBucket};
use crate::services::units::device::{self, DeviceCaller};
use crate::services::units::live::LiveEvent;

/// How long a client has to send CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Acknowledgements and replies queued for the writer; the reader waits when it is full.
const CONTROL_QUEUE: usize = 64;
/// The read buffer: a few small packets per read; larger packets are read straight into their own buffer.
const READ_BUFFER: usize = 1024;
/// How long the writer tries to say goodbye (DISCONNECT, then FIN) to a client that may not be reading.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a new connection waits for the unit's older ones to end and keep their session. An older
/// connection ends within the goodbye timeout once its own publishes are routed, which may wait up to the
/// slow-subscriber timeout; past this the new one goes on without what the older one had in flight.
const TAKEOVER_WAIT: Duration = Duration::from_secs(30);

/// One open connection, as the rest of the broker sees it: who it is and how to close it.
///
/// Kept small, since every idle unit holds one: two atomics and one `Notify` that wakes every waiter on
/// either change (a waiter checks its own condition again).
pub(crate) struct Conn {
    pub(crate) unit: Uuid,
    /// [`OPEN`] until closing, then the MQTT 5 reason; the first reason wins.
    closed: AtomicU16,
    /// Whether this connection's session outlives it, so a newer one must wait for it to be kept.
    persistent: bool,
    /// True once the connection has ended and kept or dropped its session.
    finished: AtomicBool,
    changed: Notify,
}

/// [`Conn::closed`] while the connection is open (reasons are single bytes).
const OPEN: u16 = u16::MAX;

/// Marks its connection finished when dropped, however `run` returns.
struct Finished(Arc<Conn>);

impl Drop for Finished {
    fn drop(&mut self) {
        self.0.finished.store(true, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}

impl Conn {
    fn new(unit: Uuid, persistent: bool) -> Self {
        Self {
            unit,
            closed: AtomicU16::new(OPEN),
            persistent,
            finished: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    /// Waits until `done` holds. The `Notified` future is taken before each check, so a change between
    /// the check and the wait still wakes it (`notify_waiters` reaches every future already created).
    async fn wait_for(&self, done: impl Fn(&Self) -> bool) {
        loop {
            let changed = self.changed.notified();
            if done(self) {
                return;
            }
            changed.await;
        }
    }

    pub(crate) async fn finished(&self) {
        self.wait_for(|conn| conn.finished.load(Ordering::SeqCst))
            .await;
    }

    /// Asks the connection to close with an MQTT 5 reason; true if this call closed it.
    pub(crate) fn close(&self, code: u8) -> bool {
        let closed = self
            .closed
            .compare_exchange(OPEN, u16::from(code), Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        if closed {
            self.changed.notify_waiters();
        }
        closed
    }

    async fn closing(&self) {
        self.wait_for(|conn| conn.closed.load(Ordering::SeqCst) != OPEN)
            .await;
    }

    fn reason(&self) -> u8 {
        u8::try_from(self.closed.load(Ordering::SeqCst)).unwrap_or(reason::NONE)
    }
}

/// Why a session ended, for the log and the DISCONNECT reason.
#[derive(Debug)]
enum End {
    /// The client sent DISCONNECT (MQTT 5 reason 0x04 asks for the will all the same).
    Disconnect {
        with_will: bool,
    },
    /// The client closed the connection without a DISCONNECT.
    Closed,
    Kicked,
    Violation(String),
    Protocol(DecodeError),
    KeepAlive,
    QosNotSupported,
    RateLimited(&'static str),
}

impl End {
    fn reason(&self) -> u8 {
        match self {
            End::Disconnect { .. } | End::Closed | End::Kicked => reason::NONE,
            End::Violation(_) => reason::NOT_AUTHORIZED,
            End::Protocol(DecodeError::TooLarge(_)) => reason::PACKET_TOO_LARGE,
            End::Protocol(DecodeError::Protocol(_) | DecodeError::Unsupported(_)) => {
                reason::PROTOCOL_ERROR
            }
            End::Protocol(_) => reason::MALFORMED_PACKET,
            End::KeepAlive => reason::KEEP_ALIVE_TIMEOUT,
            End::QosNotSupported => reason::QOS_NOT_SUPPORTED,
            End::RateLimited("mqtt_publish_rate") => reason::MESSAGE_RATE_TOO_HIGH,
            End::RateLimited(_) => reason::QUOTA_EXCEEDED,
        }
    }
}

/// What the reader and completer hand the writer.
enum Control {
    /// An encoded packet (CONNACK, PUBACK, SUBACK, ...).
    Packet(Vec<u8>),
    /// The unit acknowledged the QoS 1 delivery with this packet id.
    Settled(u16),
}

/// Serves one connection, over TCP or any other byte stream (MQTT over WebSocket), holding its place
/// under the connection caps until it ends.
pub async fn run<S>(broker: Broker, stream: S, peer: SocketAddr, admitted: Admitted)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let _admitted = admitted;
    let (read, mut write) = tokio::io::split(stream);
    let mut reader = BufReader::with_capacity(READ_BUFFER, read);
    // Before authentication only a small CONNECT is read, so anonymous clients hold little memory.
    let first =
        tokio::time::timeout(CONNECT_TIMEOUT, codec::read_frame(&mut reader, MAX_CONNECT)).await;
    let (byte, body) = match first {
        Ok(Ok(frame)) => frame,
        Ok(Err(DecodeError::TooLarge(len))) => {
            broker.limits.counters.hit(
                "mqtt_connect_bytes",
                &format_args!("{peer} announced a {len}-byte first packet"),
            );
            return;
        }
        _ => return,
    };
    let connect = match codec::decode(byte, &body, Version::V3) {
        Ok(Packet::Connect(connect)) => connect,
        _ => return,
    };
    // Neither the packet nor the token is needed past authentication; an idle connection keeps neither.
    drop(body);
    let version = connect.version;
    // The database calls are boxed: inline, their futures would sit in this task's state for the whole
    // life of the connection.
    let unit = match Box::pin(authenticate(&broker, &connect)).await {
        Ok(unit) => unit,
        Err(refusal) => {
            tracing::info!(%peer, client_id = %connect.client_id, ?refusal, "mqtt connect refused");
            let _ = write
                .write_all(&codec::connack_refused(version, refusal))
                .await;
            return;
        }
    };
    let acl = match Box::pin(acl::load(broker.services(), unit)).await {
        Ok(acl) => acl,
        Err(error) => {
            tracing::warn!(%unit, %error, "loading permissions failed");
            let _ = write
                .write_all(&codec::connack_refused(version, Refusal::NotAuthorized))
                .await;
            return;
        }
    };
    // A will is a publish like any other: its topic must be one the unit may publish to.
    if let Some(will) = &connect.will
        && acl.sink(&will.topic).is_none()
    {
        tracing::info!(%unit, topic = %will.topic, "mqtt connect refused: will topic not allowed");
        let _ = write
            .write_all(&codec::connack_refused(version, Refusal::NotAuthorized))
            .await;
        return;
    }
    let id = broker
        .router
        .next_connection
        .fetch_add(1, Ordering::Relaxed);
    let (requested, expiry) = session_expiry(&broker, &connect);
    let conn = Arc::new(Conn::new(unit, !expiry.is_zero()));
    let _finished = Finished(conn.clone());
    let older: Vec<Arc<Conn>> = {
        // A new session with the unit's client id takes over: older ones are closed (MQTT 3.1.1
        // §3.1.4-2, MQTT 5 reason 0x8E). Under the lock, so of simultaneous sessions exactly one stays.
        let mut connections = broker.router.connections();
        let open = connections.entry(unit).or_default();
        let older: Vec<Arc<Conn>> = open.drain().map(|(_, older)| older).collect();
        for older in &older {
            older.close(reason::SESSION_TAKEN_OVER);
        }
        open.insert(id, conn.clone());
        older
    };
    // The unit is back: a will still waiting out its delay is not sent (MQTT 5 §3.1.2.5).
    if let Some(will) = broker.router.wills().remove(&unit) {
        will.abort();
    }
    // Older connections with a persistent session keep it as they end; wait for that, so this one takes
    // (or discards) all of it. Each waits for its own elders, so a chain of takeovers stays in order.
    for older in older.iter().filter(|older| older.persistent) {
        let _ = tokio::time::timeout(TAKEOVER_WAIT, older.finished()).await;
    }
    let (deliveries, deliveries_rx) = mpsc::channel::<Delivery>(broker.limits.subscriber_queue);
    let resumed = if connect.clean_session {
        broker.discard_session(unit);
        Default::default()
    } else {
        broker.resume_session(unit, id, &acl, &deliveries, &conn)
    };
    // MQTT 5: the interval actually used is stated when it is not the one asked for.
    let granted = (version == Version::V5 && u64::from(requested) != expiry.as_secs())
        .then(|| u32::try_from(expiry.as_secs()).unwrap_or(u32::MAX));
    // CONNACK goes first whatever happens next (even a newer session taking this one over at once).
    if tokio::time::timeout(
        GOODBYE_TIMEOUT,
        write.write_all(&codec::connack(version, resumed.present, granted)),
    )
    .await
    .map_or(true, |written| written.is_err())
    {
        conn.close(reason::NONE);
    }
    let (control, control_rx) = mpsc::channel::<Control>(CONTROL_QUEUE);
    let window = usize::from(
        broker
            .limits
            .max_inflight
            .min(connect.receive_maximum.unwrap_or(u16::MAX)),
    );
    let writer = tokio::spawn(write_loop(
        write,
        version,
        control_rx,
        deliveries_rx,
        conn.clone(),
        window,
        resumed.held,
    ));
    tracing::debug!(%unit, %peer, present = resumed.present, "mqtt connected");
    broker
        .services()
        .live()
        .send(LiveEvent::Presence { unit, online: true });
    broker.services().alerts().observe_presence(unit, true);
    let limits = &broker.limits;
    let mut session = Session {
        broker: broker.clone(),
        completions: None,
        completer: None,
        unit,
        id,
        version,
        acl,
        generation: broker.router.acl_generation.load(Ordering::SeqCst),
        control,
        deliveries,
        conn: conn.clone(),
        subscribed: resumed.subscriptions,
        messages: TokenBucket::new(
            f64::from(limits.publish_rate),
            f64::from(limits.publish_burst.max(1)),
        ),
        bytes: TokenBucket::new(
            limits.publish_bytes_per_second as f64,
            // Four seconds' worth, and always room for one packet of the largest size.
            (limits.publish_bytes_per_second as f64 * 4.0).max(MAX_PACKET as f64),
        ),
    };
    // A keep-alive of k seconds allows 1.5 k of silence; 0 turns the check off.
    let idle = (connect.keep_alive > 0)
        .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));
    let will = connect.will;
    drop(connect.username);
    drop(connect.client_id);
    let end = session.serve(&mut reader, idle).await;
    match &end {
        End::Violation(what) => {
            tracing::warn!(%unit, %peer, what, "mqtt connection closed: not allowed")
        }
        End::Protocol(error) => tracing::debug!(%unit, %error, "mqtt connection closed"),
        End::RateLimited(limit) => broker.limits.counters.hit(
            limit,
            &format_args!("unit {unit} published over its budget; disconnected"),
        ),
        other => tracing::debug!(%unit, ?other, "mqtt connection closed"),
    }
    if !matches!(end, End::Disconnect { .. } | End::Closed) {
        conn.close(end.reason());
    }
    // A revoked unit's session is not kept, and neither is its will published.
    let revoked = conn.reason() == reason::ADMINISTRATIVE_ACTION;
    let subscriptions = std::mem::take(&mut session.subscribed);
    let parked = if expiry.is_zero() || revoked {
        broker.unregister(id, &subscriptions);
        None
    } else {
        Some(broker.park_subscriptions(unit, id, subscriptions))
    };
    let completer = session.completer.take();
    drop(session);
    // Publishes already read are still routed and acknowledged if the client left cleanly.
    if let Some(completer) = completer {
        let _ = completer.await;
    }
    conn.close(reason::NONE);
    let leftover = writer.await;
    if let (Some((parked, subscriptions)), Ok(leftover)) = (parked, leftover) {
        broker.keep_session(unit, id, parked, subscriptions, leftover, expiry);
    }
    let still_online = unregister_connection(&broker, unit, id);
    let will_wanted = match end {
        End::Disconnect { with_will } => with_will,
        _ => true,
    };
    // Nor is it when the server stops: the unit did not go away, and it connects again to the next one.
    let server_stopping = conn.reason() == reason::SERVER_SHUTTING_DOWN;
    if let (Some(will), true, false, false) = (will, will_wanted, revoked, server_stopping) {
        // Sent when the session ends or the will delay is over, whichever is first (MQTT 5 §3.1.2.5).
        let delay = Duration::from_secs(u64::from(will.delay)).min(expiry);
        send_will(&broker, unit, will, delay);
    }
    if !still_online {
        broker.services().live().send(LiveEvent::Presence {
            unit,
            online: false,
        });
        broker.services().alerts().observe_presence(unit, false);
    }
}

/// The Session Expiry Interval the client asked for (MQTT 5) and the one used: MQTT 3 `clean_session = 0`
/// asks for the longest allowed, and none is longer than `mqtt_session_expiry_max_seconds`.
fn session_expiry(broker: &Broker, connect: &codec::Connect) -> (u32, Duration) {
    let max = broker.limits.session_expiry_max;
    match connect.version {
        Version::V3 if connect.clean_session => (0, Duration::ZERO),
        Version::V3 => (0, max),
        Version::V5 => (
            connect.session_expiry,
            Duration::from_secs(u64::from(connect.session_expiry)).min(max),
        ),
    }
}

/// Forgets connection `id`; true when the unit still has another one open (it was taken over).
fn unregister_connection(broker: &Broker, unit: Uuid, id: u64) -> bool {
    let mut connections = broker.router.connections();
    if let Some(open) = connections.get_mut(&unit) {
        open.remove(&id);
        if open.is_empty() {
            connections.remove(&unit);
            return false;
        }
        return true;
    }
    false
}

/// Publishes `unit`'s will after `delay`, unless the unit connects again first. Its topic is checked
/// against the unit's permissions as they are then, and the message is stored like the unit's own
/// publishes (routed after its commit at QoS 1).
fn send_will(broker: &Broker, unit: Uuid, will: Will, delay: Duration) {
    let task = {
        let broker = broker.clone();
        async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
                {
                    let mut wills = broker.router.wills();
                    if wills.get(&unit).map(|will| will.id()) == tokio::task::try_id() {
                        wills.remove(&unit);
                    }
                }
                // Connected again (a newer connection took this one over): the will is not sent.
                if broker.router.connections().contains_key(&unit) {
                    return;
                }
            }
            let Ok(acl) = Box::pin(acl::load(broker.services(), unit)).await else {
                return;
            };
            let Some(sink) = acl.sink(&will.topic) else {
                tracing::info!(%unit, topic = %will.topic, "will not published: topic no longer allowed");
                return;
            };
            let item = Item {
                unit,
                sink,
                payload: will.payload.clone(),
                at: chrono::Utc::now(),
            };
            if !broker.ingestor.fits(&item) {
                return;
            }
            // Routed once stored, at either QoS: its output's filters may turn it away.
            if matches!(
                broker.ingestor.submit(item).await.await,
                Ok(Outcome::Stored)
            ) {
                broker.route_all(&will.topic, &will.payload, false).await;
            }
        }
    };
    if delay.is_zero() {
        tokio::spawn(task);
    } else {
        let handle = tokio::spawn(task).abort_handle();
        let replaced = broker.router.wills().insert(unit, handle);
        if let Some(replaced) = replaced {
            replaced.abort();
        }
    }
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

/// Writes everything the connection sends. Deliveries wait while `window` QoS 1 messages are unsettled,
/// so a unit that stops acknowledging fills its queue and is then cut off as too slow, never silently
/// skipped. `resumed` holds a resumed session's messages: those in flight are sent again at once (DUP
/// set, same packet ids), the queued ones before anything routed since. What is left unacknowledged or
/// unsent when the connection ends is returned, for a persistent session to keep.
async fn write_loop<W: AsyncWrite + Unpin>(
    mut write: W,
    version: Version,
    mut control: mpsc::Receiver<Control>,
    mut deliveries: mpsc::Receiver<Delivery>,
    conn: Arc<Conn>,
    window: usize,
    resumed: Held,
) -> Leftover {
    let Held {
        mut inflight,
        mut queued,
    } = resumed;
    let mut last_id: u16 = inflight.iter().map(|(id, _)| *id).max().unwrap_or(0);
    // Redeliveries go out before anything else (MQTT 3.1.1 §4.4, MQTT 5 §4.4).
    let mut redeliver: std::collections::VecDeque<Vec<u8>> = inflight
        .iter()
        .map(|(id, d)| {
            codec::publish_with_id(version, d.topic(), d.payload(), d.retain, Some(*id), true)
        })
        .collect();
    // What is left of a packet the writer was in the middle of when the connection was closed; `None`
    // when the socket failed.
    let unfinished: Option<Vec<u8>> = loop {
        let bytes = tokio::select! {
            biased;
            () = conn.closing() => break Some(Vec::new()),
            Some(bytes) = async { redeliver.pop_front() }, if !redeliver.is_empty() => bytes,
            next = control.recv() => match next {
                Some(Control::Packet(bytes)) => bytes,
                Some(Control::Settled(id)) => {
                    inflight.retain(|(i, _)| *i != id);
                    continue;
                }
                None => break Some(Vec::new()),
            },
            Some(delivery) = async { queued.pop_front() }, if !queued.is_empty() && inflight.len() < window => {
                encode(version, delivery, &mut inflight, &mut last_id)
            }
            next = deliveries.recv(), if queued.is_empty() && inflight.len() < window => match next {
                Some(delivery) => encode(version, delivery, &mut inflight, &mut last_id),
                None => break Some(Vec::new()),
            },
        };
        // Written piece by piece so that a close in the middle knows what is left: a DISCONNECT may only
        // follow a whole packet.
        let mut rest = &bytes[..];
        let mut interrupted = false;
        let mut failed = false;
        while !rest.is_empty() {
            tokio::select! {
                biased;
                () = conn.closing() => {
                    interrupted = true;
                    break;
                }
                written = write.write(rest) => match written {
                    Ok(0) | Err(_) => {
                        failed = true;
                        break;
                    }
                    Ok(n) => rest = &rest[n..],
                },
            }
        }
        if failed {
            break None;
        }
        if interrupted {
            break Some(rest.to_vec());
        }
    };
    if let Some(unfinished) = unfinished {
        let code = conn.reason();
        let goodbye = async {
            write.write_all(&unfinished).await?;
            if version == Version::V5 && code != reason::NONE {
                write.write_all(&codec::disconnect(code)).await?;
            }
            write.shutdown().await
        };
        let _ = tokio::time::timeout(GOODBYE_TIMEOUT, goodbye).await;
    }
    // Acknowledgements the reader passed on before the connection closed still count.
    while let Ok(item) = control.try_recv() {
        if let Control::Settled(id) = item {
            inflight.retain(|(i, _)| *i != id);
        }
    }
    Leftover {
        held: Held { inflight, queued },
        deliveries,
    }
}

/// Encodes a delivery, giving a QoS 1 one the next free packet id and a place in the in-flight window.
fn encode(
    version: Version,
    delivery: Delivery,
    inflight: &mut Vec<(u16, Delivery)>,
    last_id: &mut u16,
) -> Vec<u8> {
    let packet_id = (delivery.qos > 0).then(|| {
        // Ids cycle through 1..=65535, skipping those still in flight.
        loop {
            *last_id = last_id.checked_add(1).unwrap_or(1);
            if !inflight.iter().any(|(i, _)| i == last_id) {
                break *last_id;
            }
        }
    });
    let bytes = codec::publish_with_id(
        version,
        delivery.topic(),
        delivery.payload(),
        delivery.retain,
        packet_id,
        false,
    );
    if let Some(id) = packet_id {
        inflight.push((id, delivery));
    }
    bytes
}

/// A publish handed to the completer, to route (and acknowledge, at QoS 1) once committed.
struct Pending {
    committed: tokio::sync::oneshot::Receiver<Outcome>,
    topic: String,
    payload: Vec<u8>,
    /// The PUBACK; none at QoS 0.
    ack: Option<Vec<u8>>,
}

/// Value publishes of one connection in arrival order: each is routed after its commit, unless its
/// output's filters turned it away, and (at QoS 1) acknowledged either way, as it was received. An
/// uncommitted one is neither (the sender retries).
async fn complete(
    broker: Broker,
    mut pending: mpsc::Receiver<Pending>,
    control: mpsc::Sender<Control>,
) {
    while let Some(p) = pending.recv().await {
        match p.committed.await {
            // A unit's retain flag is not honoured: what others see of its outputs is the stored value.
            Ok(Outcome::Stored) => broker.route_all(&p.topic, &p.payload, false).await,
            Ok(Outcome::Filtered) => {}
            Ok(Outcome::Failed) | Err(_) => continue,
        }
        if let Some(ack) = p.ack
            && control.send(Control::Packet(ack)).await.is_err()
        {
            return;
        }
    }
}

struct Session {
    broker: Broker,
    /// Started at the first QoS 1 publish: an idle or QoS 0 connection does without the task and its queue.
    completions: Option<mpsc::Sender<Pending>>,
    completer: Option<tokio::task::JoinHandle<()>>,
    unit: Uuid,
    id: u64,
    version: Version,
    acl: Acl,
    generation: u64,
    control: mpsc::Sender<Control>,
    deliveries: mpsc::Sender<Delivery>,
    conn: Arc<Conn>,
    /// Topics and granted QoS, as a persistent session keeps them.
    subscribed: Vec<(String, u8)>,
    messages: TokenBucket,
    bytes: TokenBucket,
}

impl Session {
    async fn serve<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut BufReader<R>,
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
                () = self.conn.closing() => return End::Kicked,
                frame = frame => match frame {
                    Err(()) => return End::KeepAlive,
                    Ok(Err(DecodeError::Closed)) => return End::Closed,
                    Ok(Err(error)) => return End::Protocol(error),
                    Ok(Ok(frame)) => frame,
                },
            };
            let packet = match codec::decode(first, &body, self.version) {
                Ok(packet) => packet,
                Err(error) => return End::Protocol(error),
            };
            drop(body);
            let end = match packet {
                Packet::Publish(publish) => self.publish(publish).await,
                Packet::Subscribe { packet_id, filters } => {
                    self.subscribe(packet_id, filters).await
                }
                Packet::Unsubscribe { packet_id, filters } => {
                    self.unsubscribe(&filters);
                    self.send(codec::unsuback(self.version, packet_id, filters.len()))
                        .await
                }
                Packet::PubAck(packet_id) => self.control(Control::Settled(packet_id)).await,
                Packet::PingReq => self.send(codec::pingresp()).await,
                Packet::Disconnect { with_will } => Some(End::Disconnect { with_will }),
                // QoS 2 is refused before any PUBREC, so its other packets can only be a protocol error.
                Packet::PubRec(_) | Packet::PubRel(_) | Packet::PubComp(_) => Some(End::Protocol(
                    DecodeError::Protocol("QoS 2 flow without a QoS 2 publish"),
                )),
                Packet::Connect(_) => {
                    Some(End::Protocol(DecodeError::Protocol("a second CONNECT")))
                }
            };
            if let Some(end) = end {
                return end;
            }
        }
    }

    async fn send(&self, bytes: Vec<u8>) -> Option<End> {
        self.control(Control::Packet(bytes)).await
    }

    /// Hands `item` to the writer; waits while its queue is full, unless the connection closes.
    async fn control(&self, item: Control) -> Option<End> {
        tokio::select! {
            sent = self.control.send(item) => sent.err().map(|_| End::Kicked),
            () = self.conn.closing() => Some(End::Kicked),
        }
    }

    /// Reloads permissions when anything changed since they were read.
    async fn fresh_acl(&mut self) {
        let now = self.broker.router.acl_generation.load(Ordering::SeqCst);
        if now != self.generation {
            match Box::pin(acl::load(self.broker.services(), self.unit)).await {
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
        if publish.qos > 1 {
            // The broker offers QoS 0 and 1 (CONNACK says Maximum QoS 1 to MQTT 5 clients).
            return Some(End::QosNotSupported);
        }
        if !self.messages.take(1.0) {
            return Some(End::RateLimited("mqtt_publish_rate"));
        }
        if !self.bytes.take(publish.payload.len() as f64) {
            return Some(End::RateLimited("mqtt_publish_bytes"));
        }
        self.fresh_acl().await;
        let Some(sink) = self.acl.sink(&publish.topic) else {
            return Some(End::Violation(format!("publish to {}", publish.topic)));
        };
        let item = Item {
            unit: self.unit,
            sink,
            payload: publish.payload.clone(),
            at: chrono::Utc::now(),
        };
        if publish.packet_id.is_none() && !matches!(sink, Sink::Value(_)) {
            // Nothing is acknowledged at QoS 0 and no filter applies to state or logs, so nothing waits
            // for the commit: routed now, stored in the same order by the writer.
            self.broker
                .route_all(&publish.topic, &publish.payload, false)
                .await;
            drop(self.broker.ingestor.submit(item).await);
            return None;
        }
        // A value is routed only once its output's filters kept it, so even at QoS 0 it waits for its
        // commit (reading goes on meanwhile); the completer routes and acknowledges in order.
        let committed = self.broker.ingestor.submit(item).await;
        let pending = Pending {
            committed,
            topic: publish.topic,
            payload: publish.payload,
            ack: publish.packet_id.map(|id| codec::ack(4, id)),
        };
        let completions = self.completions.get_or_insert_with(|| {
            let (completions, pending) = mpsc::channel(CONTROL_QUEUE);
            self.completer = Some(tokio::spawn(complete(
                self.broker.clone(),
                pending,
                self.control.clone(),
            )));
            completions
        });
        if completions.send(pending).await.is_err() {
            return Some(End::Kicked);
        }
        None
    }

    async fn subscribe(&mut self, packet_id: u16, filters: Vec<(String, u8)>) -> Option<End> {
        self.fresh_acl().await;
        if let Some((denied, _)) = filters.iter().find(|(f, _)| !self.acl.may_subscribe(f)) {
            return Some(End::Violation(format!("subscribe to {denied}")));
        }
        // QoS 2 requests are granted QoS 1, the most this broker delivers at.
        let granted: Vec<u8> = filters.iter().map(|(_, qos)| (*qos).min(1)).collect();
        {
            let mut subscriptions = self.broker.router.subscriptions_mut();
            for ((filter, _), &qos) in filters.iter().zip(&granted) {
                subscriptions.entry(filter.clone()).or_default().insert(
                    self.id,
                    Subscriber {
                        qos,
                        target: Target::Live {
                            deliveries: self.deliveries.clone(),
                            conn: self.conn.clone(),
                        },
                    },
                );
                self.subscribed.retain(|(s, _)| s != filter);
                self.subscribed.push((filter.clone(), qos));
            }
        }
        if let Some(end) = self
            .send(codec::suback(self.version, packet_id, &granted))
            .await
        {
            return Some(end);
        }
        let retained: Vec<(String, Vec<u8>, u8)> = {
            let retained = self.broker.router.retained();
            filters
                .iter()
                .zip(&granted)
                .filter_map(|((f, _), &qos)| retained.get(f).map(|p| (f.clone(), p.clone(), qos)))
                .collect()
        };
        for (topic, payload, qos) in retained {
            let delivery = Delivery::new(&topic, &payload, qos, true);
            // After the SUBACK (the writer takes control packets first), waiting for room like any
            // other delivery.
            let sent = tokio::select! {
                sent = self.deliveries.send(delivery) => sent.is_ok(),
                () = self.conn.closing() => false,
            };
            if !sent {
                return Some(End::Kicked);
            }
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
            self.subscribed.retain(|(s, _)| s != filter);
        }
    }
}
