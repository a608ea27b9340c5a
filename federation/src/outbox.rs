//! Values on their way to the instances that follow their units.
//!
//! The server's ingestion hands each committed value of an output to [`Tap::offer`], which costs a set
//! look-up when no peer follows it and a `try_send` on a bounded channel when one does: ingestion never
//! waits for federation. When that channel is full, the output is only marked, and its newest value is
//! read back from the host at the next flush, so the newest value of every output still goes out.
//!
//! [`run`] keeps one queue per peer and sends it as one signed `Values` activity per flush (every
//! `flush_interval`, or at once when `max_batch` samples wait), one request in flight per peer, so a
//! peer receives each output's samples in order. A failed send is retried with a doubling backoff (up to
//! `max_backoff`); while a peer is down its queue keeps at most `max_pending_per_peer` samples, first by
//! keeping only the newest sample of each output, then by dropping the oldest. A peer that refuses (4xx)
//! gets the batch dropped, not retried.
//!
//! The queues live in memory: at start, the newest stored value of every followed output is queued
//! again, so what a stop cut off still ends with the newest value at each peer (a peer that already has
//! it drops it: its sequence is the value's time, as when it was first sent).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use uuid::Uuid;

use crate::wire::{Sample, Values, ValuesType};
use crate::{Domain, Error, Federation, HostError, PeerStatus};

/// The outbox's bounds.
#[derive(Clone, Debug)]
pub struct Limits {
    pub flush_interval: Duration,
    pub max_batch: usize,
    pub max_pending_per_peer: usize,
    pub max_backoff: Duration,
    /// Values waiting between ingestion and the outbox.
    pub channel: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            flush_interval: Duration::from_millis(20),
            max_batch: 1000,
            max_pending_per_peer: 10_000,
            max_backoff: Duration::from_secs(60),
            channel: 8192,
        }
    }
}

/// A committed value of an output that peers follow.
#[derive(Clone, Debug, PartialEq)]
pub struct Offer {
    pub unit: Uuid,
    pub output: Uuid,
    pub value: String,
    pub time: DateTime<Utc>,
}

/// Where ingestion hands values to federation.
pub struct Tap {
    /// Whether any output is followed at all: the common case costs one atomic load.
    any: AtomicBool,
    exported: RwLock<HashSet<Uuid>>,
    sender: mpsc::Sender<Offer>,
    /// Outputs whose values did not fit the channel: (unit, output).
    overflow: Mutex<HashSet<(Uuid, Uuid)>>,
    /// Told by [`Tap::finish`]: [`run`] sends what waits and ends.
    finishing: tokio::sync::Notify,
}

impl Tap {
    /// A tap and the receiver [`run`] reads.
    pub fn new(capacity: usize) -> (Arc<Self>, mpsc::Receiver<Offer>) {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        (
            Arc::new(Self {
                any: AtomicBool::new(false),
                exported: RwLock::default(),
                sender,
                overflow: Mutex::default(),
                finishing: tokio::sync::Notify::new(),
            }),
            receiver,
        )
    }

    /// Offers a committed value; never waits.
    pub fn offer(&self, unit: Uuid, output: Uuid, payload: &[u8], time: DateTime<Utc>) {
        if !self.any.load(Ordering::Relaxed) {
            return;
        }
        if !self
            .exported
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&output)
        {
            return;
        }
        let offer = Offer {
            unit,
            output,
            value: String::from_utf8_lossy(payload).into_owned(),
            time,
        };
        if let Err(TrySendError::Full(offer)) = self.sender.try_send(offer) {
            self.overflow
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert((offer.unit, offer.output));
        }
    }

    /// For a graceful stop, once ingestion has stopped: [`run`] sends what waits for each peer (a peer
    /// in its retry backoff excepted), waits for those sends, at most one request timeout, and ends.
    pub fn finish(&self) {
        self.finishing.notify_one();
    }

    fn set_exported(&self, outputs: HashSet<Uuid>) {
        self.any.store(!outputs.is_empty(), Ordering::Relaxed);
        *self.exported.write().unwrap_or_else(|e| e.into_inner()) = outputs;
    }

    fn take_overflow(&self) -> Vec<(Uuid, Uuid)> {
        self.overflow
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect()
    }
}

/// What the outbox asks of the host beyond [`crate::Host`].
#[async_trait::async_trait]
pub trait Source: Send + Sync + 'static {
    /// Every followed output and the peers that follow its unit.
    async fn followers(&self) -> Result<Vec<(Uuid, Domain)>, HostError>;
    /// The newest stored value of each of `outputs`, for values that overflowed or were queued when
    /// this instance stopped.
    async fn latest(&self, outputs: Vec<Uuid>) -> Result<Vec<Offer>, HostError>;
}

#[derive(Default)]
struct PeerQueue {
    pending: VecDeque<Sample>,
    /// When the oldest of `pending` was queued (about: samples a send left behind count from then).
    since: Option<Instant>,
    sending: bool,
    retry_at: Option<Instant>,
    backoff: Duration,
}

impl PeerQueue {
    fn push(&mut self, sample: Sample, max: usize) {
        if self.pending.is_empty() {
            self.since = Some(Instant::now());
        }
        self.pending.push_back(sample);
        bound(&mut self.pending, max);
    }

    /// Whether `pending` should go now rather than at the next tick.
    fn due(&self, max_batch: usize, interval: Duration) -> bool {
        self.pending.len() >= max_batch || self.since.is_some_and(|at| at.elapsed() >= interval)
    }
}

/// How one send ended.
enum Sent {
    Delivered,
    /// Not delivered; worth retrying.
    Retry(Vec<Sample>),
    /// Refused or no longer a peer: dropped.
    Dropped,
}

struct Outbox {
    federation: Federation,
    source: Arc<dyn Source>,
    tap: Arc<Tap>,
    limits: Limits,
    /// Most bytes of one activity: a peer refuses a larger one (`max_activity_bytes`, the same default).
    max_bytes: usize,
    routes: HashMap<Uuid, Vec<Domain>>,
    queues: HashMap<Domain, PeerQueue>,
    sequences: HashMap<Uuid, u64>,
    done: mpsc::UnboundedSender<(Domain, Sent)>,
}

/// Sends followed values to peers until the channel closes.
pub async fn run(
    federation: Federation,
    source: Arc<dyn Source>,
    tap: Arc<Tap>,
    mut offers: mpsc::Receiver<Offer>,
) {
    let (done, mut finished) = mpsc::unbounded_channel();
    let limits = federation.settings().outbox.clone();
    let changed = federation.context.followers_changed.clone();
    let timeout = federation.settings().request_timeout;
    let max_bytes = federation.settings().max_activity_bytes;
    let mut outbox = Outbox {
        federation,
        source,
        tap,
        limits,
        max_bytes,
        routes: HashMap::new(),
        queues: HashMap::new(),
        sequences: HashMap::new(),
        done,
    };
    outbox.refresh().await;
    outbox.resend_newest().await;
    let mut tick = tokio::time::interval(outbox.limits.flush_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            offer = offers.recv() => {
                let Some(offer) = offer else { return };
                outbox.enqueue(offer);
            }
            _ = tick.tick() => {
                outbox.recover_overflow().await;
                outbox.flush();
            }
            () = changed.notified() => outbox.refresh().await,
            Some((peer, sent)) = finished.recv() => outbox.finished(peer, sent),
            () = outbox.tap.finishing.notified() => {
                let deadline = tokio::time::Instant::now() + timeout;
                while let Ok(offer) = offers.try_recv() {
                    outbox.enqueue(offer);
                }
                outbox.recover_overflow().await;
                outbox.flush();
                while outbox.queues.values().any(|q| q.sending) {
                    match tokio::time::timeout_at(deadline, finished.recv()).await {
                        Ok(Some((peer, sent))) => {
                            outbox.finished(peer, sent);
                            outbox.flush();
                        }
                        _ => break,
                    }
                }
                return;
            }
        }
    }
}

impl Outbox {
    async fn refresh(&mut self) {
        let followers = match self.source.followers().await {
            Ok(followers) => followers,
            Err(error) => {
                tracing::warn!(%error, "reading federation followers failed");
                return;
            }
        };
        let mut routes: HashMap<Uuid, Vec<Domain>> = HashMap::new();
        for (output, peer) in followers {
            routes.entry(output).or_default().push(peer);
        }
        let peers: HashSet<&Domain> = routes.values().flatten().collect();
        self.queues.retain(|peer, _| peers.contains(peer));
        self.sequences
            .retain(|output, _| routes.contains_key(output));
        self.tap.set_exported(routes.keys().copied().collect());
        self.routes = routes;
    }

    fn enqueue(&mut self, offer: Offer) {
        let Some(peers) = self.routes.get(&offer.output) else {
            return;
        };
        let micros = u64::try_from(offer.time.timestamp_micros()).unwrap_or(0);
        let last = self.sequences.entry(offer.output).or_insert(0);
        // Time-based, so sequences keep growing across restarts of this instance; `+1` keeps them
        // strictly increasing when two values share a microsecond or the clock steps back.
        *last = micros.max(last.saturating_add(1));
        let sample = Sample {
            unit: offer.unit,
            output: offer.output,
            value: offer.value,
            time: offer.time,
            sequence: *last,
        };
        let mut full = Vec::new();
        for peer in peers {
            let queue = self.queues.entry(peer.clone()).or_default();
            queue.push(sample.clone(), self.limits.max_pending_per_peer);
            if queue.pending.len() >= self.limits.max_batch {
                full.push(peer.clone());
            }
        }
        for peer in full {
            self.flush_peer(&peer);
        }
    }

    /// Queues the newest stored value of every followed output (at start: see the module doc).
    async fn resend_newest(&mut self) {
        let outputs: Vec<Uuid> = self.routes.keys().copied().collect();
        // In chunks: a query takes a bounded number of parameters.
        for chunk in outputs.chunks(1000) {
            match self.source.latest(chunk.to_vec()).await {
                Ok(offers) => {
                    for offer in offers {
                        self.enqueue(offer);
                    }
                }
                Err(error) => tracing::warn!(%error, "reading the newest values failed"),
            }
        }
    }

    async fn recover_overflow(&mut self) {
        let overflowed = self.tap.take_overflow();
        if overflowed.is_empty() {
            return;
        }
        tracing::warn!(
            outputs = overflowed.len(),
            "federation fell behind ingestion; sending the newest value of each output"
        );
        let outputs = overflowed.into_iter().map(|(_, output)| output).collect();
        match self.source.latest(outputs).await {
            Ok(offers) => {
                for offer in offers {
                    self.enqueue(offer);
                }
            }
            Err(error) => tracing::warn!(%error, "reading the newest values failed"),
        }
    }

    fn flush(&mut self) {
        let now = Instant::now();
        let due: Vec<Domain> = self
            .queues
            .iter()
            .filter(|(_, q)| {
                !q.pending.is_empty() && !q.sending && q.retry_at.is_none_or(|at| at <= now)
            })
            .map(|(peer, _)| peer.clone())
            .collect();
        for peer in due {
            self.flush_peer(&peer);
        }
    }

    fn flush_peer(&mut self, peer: &Domain) {
        let Some(queue) = self.queues.get_mut(peer) else {
            return;
        };
        if queue.sending || queue.retry_at.is_some_and(|at| at > Instant::now()) {
            return;
        }
        let take = batch_len(&queue.pending, self.limits.max_batch, self.max_bytes);
        if take == 0 {
            return;
        }
        let samples: Vec<Sample> = queue.pending.drain(..take).collect();
        queue.since = (!queue.pending.is_empty()).then(Instant::now);
        queue.sending = true;
        let federation = self.federation.clone();
        let done = self.done.clone();
        let peer = peer.clone();
        tokio::spawn(async move {
            let sent = send(&federation, &peer, samples).await;
            let _ = done.send((peer, sent));
        });
    }

    fn finished(&mut self, peer: Domain, sent: Sent) {
        let Some(queue) = self.queues.get_mut(&peer) else {
            return;
        };
        queue.sending = false;
        match sent {
            Sent::Delivered | Sent::Dropped => {
                queue.backoff = Duration::ZERO;
                queue.retry_at = None;
            }
            Sent::Retry(samples) => {
                for sample in samples.into_iter().rev() {
                    queue.pending.push_front(sample);
                }
                queue.since.get_or_insert_with(Instant::now);
                bound(&mut queue.pending, self.limits.max_pending_per_peer);
                queue.backoff = (queue.backoff * 2)
                    .max(Duration::from_secs(1))
                    .min(self.limits.max_backoff);
                queue.retry_at = Some(Instant::now() + queue.backoff);
            }
        }
        // What came in while this batch was on its way goes now if it is due (a full batch, or its
        // oldest sample waited a flush interval), not at the next tick.
        if queue.retry_at.is_none() && queue.due(self.limits.max_batch, self.limits.flush_interval)
        {
            self.flush_peer(&peer);
        }
    }
}

/// What an activity costs beyond its samples, and a sample beyond its value, in JSON (ids, time, commas),
/// with room to spare.
const ENVELOPE_BYTES: usize = 1024;
const SAMPLE_BYTES: usize = 256;

/// How many of the first `pending` samples go in one activity: at most `max_batch`, within `max_bytes`
/// as JSON (at least one, so a sample is never stuck behind its own size).
fn batch_len(pending: &VecDeque<Sample>, max_batch: usize, max_bytes: usize) -> usize {
    let mut bytes = ENVELOPE_BYTES;
    let mut take = 0;
    for sample in pending.iter().take(max_batch) {
        // As serde_json writes a string: control characters as \u00XX, quote and backslash escaped.
        let value: usize = sample
            .value
            .bytes()
            .map(|b| match b {
                b'"' | b'\\' => 2,
                0..0x20 => 6,
                _ => 1,
            })
            .sum();
        bytes += SAMPLE_BYTES + value;
        if take > 0 && bytes > max_bytes {
            break;
        }
        take += 1;
    }
    take
}

/// Keeps `pending` within `max`: first only the newest sample of each output, then the newest `max`.
fn bound(pending: &mut VecDeque<Sample>, max: usize) {
    if pending.len() <= max {
        return;
    }
    let mut seen = HashSet::new();
    let mut kept: VecDeque<Sample> = pending
        .drain(..)
        .rev()
        .filter(|s| seen.insert(s.output))
        .collect();
    kept.make_contiguous().reverse();
    while kept.len() > max {
        kept.pop_front();
    }
    *pending = kept;
}

async fn send(federation: &Federation, peer: &Domain, samples: Vec<Sample>) -> Sent {
    let target = match federation.host().peer(peer).await {
        Ok(Some(target)) if target.status == PeerStatus::Accepted => target,
        Ok(_) => return Sent::Dropped,
        Err(error) => {
            tracing::warn!(%peer, %error, "reading a peer failed");
            return Sent::Retry(samples);
        }
    };
    let activity = Values {
        id: federation.urls().activity(),
        kind: ValuesType::Values,
        actor: federation.urls().actor.clone(),
        samples,
    };
    match federation.send(&target.inbox, &activity).await {
        Ok(()) => Sent::Delivered,
        Err(Error::Delivery(_, status))
            if (400..500).contains(&status) && status != 408 && status != 429 =>
        {
            tracing::warn!(%peer, status, "a peer refused values; dropped");
            Sent::Dropped
        }
        Err(error) => {
            tracing::debug!(%peer, %error, "sending values failed; will retry");
            Sent::Retry(activity.samples)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(output: u128, sequence: u64) -> Sample {
        Sample {
            unit: Uuid::nil(),
            output: Uuid::from_u128(output),
            value: sequence.to_string(),
            time: Utc::now(),
            sequence,
        }
    }

    #[test]
    fn a_lagging_queue_keeps_the_newest_of_each_output_in_order() {
        let mut pending: VecDeque<Sample> =
            (1..=10).map(|i| sample(u128::from(i % 2), i)).collect();
        bound(&mut pending, 4);
        let left: Vec<u64> = pending.iter().map(|s| s.sequence).collect();
        assert_eq!(left, vec![9, 10]);
    }

    #[test]
    fn a_queue_never_exceeds_its_bound() {
        let mut pending: VecDeque<Sample> = (1..=100).map(|i| sample(u128::from(i), i)).collect();
        bound(&mut pending, 10);
        assert_eq!(pending.len(), 10);
        assert_eq!(pending.back().map(|s| s.sequence), Some(100));
        assert_eq!(pending.front().map(|s| s.sequence), Some(91));
    }

    #[test]
    fn a_batch_stays_within_the_activity_size_a_peer_takes() {
        let big = |n: u128| Sample {
            value: "x".repeat(100_000),
            ..sample(n, 1)
        };
        let pending: VecDeque<Sample> = (1..=30).map(big).collect();
        let take = batch_len(&pending, 1000, 1024 * 1024);
        assert_eq!(take, 10);
        let activity = Values {
            id: "https://a.example/activities/1".parse().unwrap(),
            kind: ValuesType::Values,
            actor: "https://a.example/federation/actor".parse().unwrap(),
            samples: pending.into_iter().take(take).collect(),
        };
        assert!(serde_json::to_vec(&activity).unwrap().len() <= 1024 * 1024);
        let small: VecDeque<Sample> = (1..=3000).map(|i| sample(i, 1)).collect();
        assert_eq!(batch_len(&small, 1000, 1024 * 1024), 1000);
        let huge: VecDeque<Sample> = [Sample {
            value: "x".repeat(2_000_000),
            ..sample(1, 1)
        }]
        .into();
        assert_eq!(batch_len(&huge, 1000, 1024 * 1024), 1, "never stuck");
    }

    #[tokio::test]
    async fn the_tap_ignores_unfollowed_outputs_and_marks_overflow() {
        let (tap, mut receiver) = Tap::new(1);
        let followed = Uuid::from_u128(1);
        tap.offer(Uuid::nil(), followed, b"x", Utc::now());
        assert!(receiver.try_recv().is_err(), "nothing is followed yet");
        tap.set_exported([followed].into_iter().collect());
        tap.offer(Uuid::nil(), Uuid::from_u128(2), b"x", Utc::now());
        assert!(receiver.try_recv().is_err(), "not followed");
        tap.offer(Uuid::nil(), followed, b"1", Utc::now());
        tap.offer(Uuid::nil(), followed, b"2", Utc::now());
        assert_eq!(receiver.try_recv().unwrap().value, "1");
        assert_eq!(tap.take_overflow(), vec![(Uuid::nil(), followed)]);
    }
}
