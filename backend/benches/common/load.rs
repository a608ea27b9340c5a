//! The load client: MQTT publishers and one subscriber over rumqttc, with every message numbered.
//!
//! A payload is `"<publisher index> <sequence> <send time µs>"` (padded for the flooder), so the subscriber
//! counts deliveries per publisher by sequence number (a loss is a PUBACKed sequence that never arrived,
//! not a difference of totals) and measures each delivery's latency against the same process clock.
//! Publishers run on the bench's multi-thread runtime; the subscriber gets an OS thread and a runtime of its
//! own, so a flat-out publisher load cannot starve it inside the client and make the broker look lossy.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS,
    SubscribeFilter, SubscribeReasonCode,
};
use tokio::sync::mpsc;

/// One MQTT identity: client id, password-less username (a unit's token) and the topic it publishes to.
#[derive(Clone, Debug)]
pub struct Identity {
    pub id: String,
    pub token: Option<String>,
    pub topic: String,
}

/// A growable set of sequence numbers.
#[derive(Default, Clone)]
pub struct Seqs(Vec<u64>);

impl Seqs {
    /// Adds `seq`; false when it was already there.
    pub fn insert(&mut self, seq: u64) -> bool {
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if self.0.len() <= word {
            self.0.resize(word + 1, 0);
        }
        let new = self.0[word] & (1 << bit) == 0;
        self.0[word] |= 1 << bit;
        new
    }

    /// Sequences in `self` missing from `other`.
    pub fn missing_from(&self, other: &Seqs) -> u64 {
        self.0
            .iter()
            .enumerate()
            .map(|(i, w)| (w & !other.0.get(i).copied().unwrap_or(0)).count_ones() as u64)
            .sum()
    }

    pub fn len(&self) -> u64 {
        self.0.iter().map(|w| u64::from(w.count_ones())).sum()
    }
}

/// Microseconds since the bench's clock started (one clock for senders and the receiver).
pub fn micros(epoch: Instant) -> u64 {
    epoch.elapsed().as_micros() as u64
}

pub fn options(port: u16, who: &Identity, inflight: u16) -> MqttOptions {
    let mut options = MqttOptions::new(&who.id, "127.0.0.1", port);
    if let Some(token) = &who.token {
        options.set_credentials(token, "");
    }
    options.set_inflight(inflight);
    options.set_keep_alive(Duration::from_secs(60));
    options.set_max_packet_size(1 << 20, 1 << 20);
    options
}

/// Polls until CONNACK; the error text if the broker refused or the connection failed.
async fn connack(events: &mut EventLoop) -> Result<(), String> {
    let wait = async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(error) => return Err(error.to_string()),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .unwrap_or_else(|_| Err("no CONNACK within 30 s".into()))
}

/// How one publisher sends.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    pub qos: QoS,
    /// Messages per second; `None` is flat out (as fast as the in-flight window and the socket allow).
    pub rate: Option<f64>,
    /// Payloads are padded to this many bytes.
    pub bytes: usize,
    /// Reconnect after a disconnect and go on (the flooder does; a unit that is cut off stays counted).
    pub reconnect: bool,
}

/// A connected publisher waiting for the start.
pub struct Connected {
    index: u32,
    who: Identity,
    client: AsyncClient,
    events: EventLoop,
}

/// What one publisher saw.
#[derive(Default)]
pub struct Sent {
    pub sent: u64,
    pub acked: Seqs,
    /// Publish call → PUBACK, µs.
    pub ack_latency: Vec<u32>,
    /// When each sequence's PUBACK came (µs on the bench's clock, indexed by sequence; 0: none).
    pub ack_at: Vec<u64>,
    pub disconnects: u32,
    pub last_error: Option<String>,
}

/// Connects `who` as publisher number `index`.
///
/// `queue` bounds the publishes waiting in the client behind a full in-flight window: small for a flat-out
/// load (its latency is then the broker's, not the client's queue), larger for a paced one (a device that
/// falls behind queues too, and that wait is part of what its user sees).
pub async fn connect(
    port: u16,
    index: u32,
    who: Identity,
    inflight: u16,
    queue: usize,
) -> Result<Connected, String> {
    let (client, mut events) = AsyncClient::new(options(port, &who, inflight), queue);
    connack(&mut events).await?;
    Ok(Connected {
        index,
        who,
        client,
        events,
    })
}

/// Publishes from `start` until `stop` at `pace`, then waits (at most until `drain`) for the PUBACKs of
/// what it sent and disconnects.
///
/// The event loop is never cancelled mid-poll (rumqttc can drop a packet it was writing when its poll
/// future is dropped); a separate controller decides when to stop and asks for a DISCONNECT.
pub async fn publish(
    conn: Connected,
    pace: Pace,
    epoch: Instant,
    start: Instant,
    stop: Instant,
    drain: Instant,
) -> Sent {
    let Connected {
        index,
        who,
        client,
        mut events,
    } = conn;
    // (sequence, send time) of each QoS 1 publish in call order; the event loop hands out packet ids in
    // the same order, which is how a PUBACK is matched to its sequence.
    let (order_tx, mut order) = mpsc::unbounded_channel::<(u64, u64)>();
    let published = Arc::new(AtomicU64::new(0));
    let sender = {
        let (client, topic, published) = (client.clone(), who.topic.clone(), published.clone());
        tokio::spawn(async move {
            let mut seq = 0u64;
            tokio::time::sleep_until(start.into()).await;
            loop {
                let now = Instant::now();
                if now >= stop {
                    break;
                }
                if let Some(rate) = pace.rate {
                    let due = start + Duration::from_secs_f64(seq as f64 / rate);
                    if due > now {
                        tokio::time::sleep_until(due.min(stop).into()).await;
                        continue;
                    }
                }
                let sent_at = micros(epoch);
                let mut payload = format!("{index} {seq} {sent_at}").into_bytes();
                if payload.len() < pace.bytes {
                    payload.resize(pace.bytes, b' ');
                }
                if pace.qos != QoS::AtMostOnce {
                    let _ = order_tx.send((seq, sent_at));
                }
                if client
                    .publish(&topic, pace.qos, false, payload)
                    .await
                    .is_err()
                {
                    break;
                }
                seq += 1;
                published.store(seq, Ordering::Release);
                if pace.rate.is_none() && seq.is_multiple_of(64) {
                    // Flat out still lets the other tasks on this worker run.
                    tokio::task::yield_now().await;
                }
            }
        })
    };

    let state = Arc::new(std::sync::Mutex::new(Sent::default()));
    let acked = Arc::new(AtomicU64::new(0));
    let stopping = Arc::new(AtomicBool::new(false));
    let driver = {
        let (state, acked, stopping) = (state.clone(), acked.clone(), stopping.clone());
        tokio::spawn(async move {
            let mut inflight: HashMap<u16, (u64, u64)> = HashMap::new();
            loop {
                match events.poll().await {
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) if pkid != 0 => {
                        // A retransmission after a reconnect reuses its packet id: not a new publish.
                        if let std::collections::hash_map::Entry::Vacant(slot) =
                            inflight.entry(pkid)
                            && let Ok(item) = order.try_recv()
                        {
                            slot.insert(item);
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        if let Some((seq, at)) = inflight.remove(&ack.pkid) {
                            let now = micros(epoch);
                            let latency = now.saturating_sub(at);
                            let mut out = state.lock().unwrap_or_else(|p| p.into_inner());
                            out.acked.insert(seq);
                            let slot = seq as usize;
                            if out.ack_at.len() <= slot {
                                out.ack_at.resize(slot + 1, 0);
                            }
                            out.ack_at[slot] = now;
                            out.ack_latency
                                .push(latency.min(u64::from(u32::MAX)) as u32);
                            acked.fetch_add(1, Ordering::Release);
                        }
                    }
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                    Ok(_) => {}
                    Err(error) => {
                        // rumqttc drops in-flight publishes on a reconnect with a clean session, so
                        // their packet ids are free again: they stay counted as sent, never acked.
                        inflight.clear();
                        {
                            let mut out = state.lock().unwrap_or_else(|p| p.into_inner());
                            out.disconnects += 1;
                            out.last_error = Some(describe(&error));
                        }
                        if !pace.reconnect || stopping.load(Ordering::Acquire) {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        })
    };

    // The controller: wait for the sender, then for the acknowledgements (bounded), then disconnect.
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = Instant::now();
        if !sender.is_finished() && (driver.is_finished() || now >= drain) {
            // Cut off and not reconnecting, or stuck behind a broker that stopped acknowledging: what it
            // still queues goes nowhere, and the wait stays bounded.
            sender.abort();
        }
        if !sender.is_finished() {
            continue;
        }
        let total = published.load(Ordering::Acquire);
        let settled = pace.qos == QoS::AtMostOnce || acked.load(Ordering::Acquire) >= total;
        if settled || now >= drain || driver.is_finished() {
            break;
        }
    }
    stopping.store(true, Ordering::Release);
    let _ = client.try_disconnect();
    let mut driver = driver;
    if tokio::time::timeout(Duration::from_secs(2), &mut driver)
        .await
        .is_err()
    {
        driver.abort();
    }
    let mut out = std::mem::take(&mut *state.lock().unwrap_or_else(|p| p.into_inner()));
    out.sent = published.load(Ordering::Acquire);
    out
}

fn describe(error: &ConnectionError) -> String {
    match error {
        ConnectionError::ConnectionRefused(code) => format!("refused: {code:?}"),
        other => other.to_string(),
    }
}

/// What the subscriber received, per publisher index.
#[derive(Default)]
pub struct Received {
    pub seqs: Vec<Seqs>,
    pub duplicates: u64,
    /// Send → receive, µs, first receipt of each message.
    pub latency: Vec<u32>,
    /// (publisher index, sequence, receipt µs on the bench's clock), first receipt of each message.
    pub arrivals: Vec<(u32, u64, u64)>,
    pub denied: usize,
    pub granted_qos0: usize,
    pub error: Option<String>,
}

/// A subscriber on its own thread; `finish` tells it how many messages were sent and when to give up.
pub struct Subscriber {
    thread: std::thread::JoinHandle<Received>,
    expected: Arc<AtomicU64>,
    finishing: Arc<AtomicBool>,
    deadline_ms: Arc<AtomicU64>,
    epoch: Instant,
}

impl Subscriber {
    /// Connects, subscribes QoS 1 to `topics` and returns once every SUBACK is in.
    pub fn start(
        port: u16,
        who: Identity,
        topics: Vec<String>,
        epoch: Instant,
    ) -> Result<Self, String> {
        let expected = Arc::new(AtomicU64::new(u64::MAX));
        let finishing = Arc::new(AtomicBool::new(false));
        let deadline_ms = Arc::new(AtomicU64::new(u64::MAX));
        let (ready_tx, ready) = std_mpsc::channel::<Result<(), String>>();
        let (e, f, d) = (expected.clone(), finishing.clone(), deadline_ms.clone());
        let thread = std::thread::Builder::new()
            .name("bench-subscriber".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(receive(port, who, topics, epoch, ready_tx, e, f, d))
            })
            .map_err(|e| e.to_string())?;
        match ready.recv() {
            Ok(Ok(())) => Ok(Self {
                thread,
                expected,
                finishing,
                deadline_ms,
                epoch,
            }),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(thread
                .join()
                .ok()
                .and_then(|r| r.error)
                .unwrap_or_else(|| "subscriber failed".into())),
        }
    }

    /// Waits until `expected` distinct messages are in, nothing came for 3 s, or `deadline` passed.
    pub fn finish(self, expected: u64, deadline: Instant) -> Received {
        self.expected.store(expected, Ordering::SeqCst);
        self.deadline_ms.store(
            deadline.duration_since(self.epoch).as_millis() as u64,
            Ordering::SeqCst,
        );
        self.finishing.store(true, Ordering::SeqCst);
        self.thread.join().unwrap_or_default()
    }
}

#[allow(clippy::too_many_arguments)]
async fn receive(
    port: u16,
    who: Identity,
    topics: Vec<String>,
    epoch: Instant,
    ready: std_mpsc::Sender<Result<(), String>>,
    expected: Arc<AtomicU64>,
    finishing: Arc<AtomicBool>,
    deadline_ms: Arc<AtomicU64>,
) -> Received {
    let mut out = Received::default();
    let (client, mut events) = AsyncClient::new(options(port, &who, 1024), 64);
    if let Err(error) = connack(&mut events).await {
        let _ = ready.send(Err(format!("subscriber: {error}")));
        return out;
    }
    // Chunks keep each SUBSCRIBE well under any broker's packet limit.
    let chunks: Vec<Vec<SubscribeFilter>> = topics
        .chunks(100)
        .map(|c| {
            c.iter()
                .map(|t| SubscribeFilter::new(t.clone(), QoS::AtLeastOnce))
                .collect()
        })
        .collect();
    let mut waiting = chunks.len();
    for chunk in chunks {
        if client.subscribe_many(chunk).await.is_err() {
            let _ = ready.send(Err("subscriber: client closed".into()));
            return out;
        }
    }
    let subscribed = async {
        while waiting > 0 {
            match events.poll().await {
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    waiting -= 1;
                    for code in ack.return_codes {
                        match code {
                            SubscribeReasonCode::Success(QoS::AtMostOnce) => out.granted_qos0 += 1,
                            SubscribeReasonCode::Success(_) => {}
                            SubscribeReasonCode::Failure => out.denied += 1,
                        }
                    }
                }
                Ok(_) => {}
                Err(error) => return Err(format!("subscriber: {error}")),
            }
        }
        Ok(())
    };
    match tokio::time::timeout(Duration::from_secs(30), subscribed).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            let _ = ready.send(Err(error));
            return out;
        }
        Err(_) => {
            let _ = ready.send(Err("subscriber: no SUBACK within 30 s".into()));
            return out;
        }
    }
    let _ = ready.send(Ok(()));

    // The event loop is polled without ever being cancelled (a dropped poll can lose a PUBACK it was
    // writing); the loop below only watches the counters and asks for a DISCONNECT when done.
    let distinct = Arc::new(AtomicU64::new(0));
    let last_ms = Arc::new(AtomicU64::new(epoch.elapsed().as_millis() as u64));
    let mut driver = {
        let (distinct, last_ms) = (distinct.clone(), last_ms.clone());
        tokio::spawn(async move {
            loop {
                match events.poll().await {
                    // A retained copy is an earlier run's message, handed over on subscribing.
                    Ok(Event::Incoming(Packet::Publish(p))) if !p.retain => {
                        let now = micros(epoch);
                        last_ms.store(now / 1000, Ordering::Release);
                        let mut fields = std::str::from_utf8(&p.payload)
                            .unwrap_or("")
                            .split_ascii_whitespace()
                            .map(|f| f.parse::<u64>().ok());
                        if let (Some(Some(index)), Some(Some(seq)), Some(Some(at))) =
                            (fields.next(), fields.next(), fields.next())
                        {
                            let index = index as usize;
                            if out.seqs.len() <= index {
                                out.seqs.resize(index + 1, Seqs::default());
                            }
                            if out.seqs[index].insert(seq) {
                                distinct.fetch_add(1, Ordering::Release);
                                out.latency
                                    .push(now.saturating_sub(at).min(u64::from(u32::MAX)) as u32);
                                out.arrivals.push((index as u32, seq, now));
                            } else {
                                out.duplicates += 1;
                            }
                        }
                    }
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                    Ok(_) => {}
                    Err(error) => {
                        out.error = Some(describe(&error));
                        break;
                    }
                }
            }
            out
        })
    };
    // After the publishers are done, silence this long means nothing more is coming.
    let idle_ms = 3000;
    let mut finish_seen_ms = None;
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if driver.is_finished() {
            break;
        }
        if finishing.load(Ordering::SeqCst) {
            let now_ms = epoch.elapsed().as_millis() as u64;
            let since = *finish_seen_ms.get_or_insert(now_ms);
            if distinct.load(Ordering::Acquire) >= expected.load(Ordering::SeqCst)
                || now_ms >= deadline_ms.load(Ordering::SeqCst)
                || now_ms >= last_ms.load(Ordering::Acquire).max(since) + idle_ms
            {
                break;
            }
        }
    }
    let _ = client.try_disconnect();
    match tokio::time::timeout(Duration::from_secs(2), &mut driver).await {
        Ok(Ok(out)) => out,
        _ => {
            driver.abort();
            Received {
                error: Some("subscriber did not close".into()),
                ..Received::default()
            }
        }
    }
}

/// The value at quantile `q` of `values` (sorted in place), in ms.
pub fn quantile_ms(values: &mut [u32], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let index = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len()) - 1;
    Some(f64::from(values[index]) / 1000.0)
}
