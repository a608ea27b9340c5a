//! One measured load: publishers (paced or flat out) and a subscriber, started together, with the CPU and
//! peak RSS of the servers under it and the load client's own CPU.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::load::{self, Identity, Pace, Received, Sent, Seqs};
use super::system::{Watch, load1, usage};

/// What one load measured.
#[derive(Default)]
pub struct Measured {
    pub sent: Vec<Sent>,
    pub received: Option<Received>,
    pub subscriber_error: Option<String>,
    pub connect_failures: Vec<String>,
    /// From the start signal to the last publisher done (PUBACKs in).
    pub publish_seconds: f64,
    /// CPU (% of one core) of each watched process over the load (start signal to the last PUBACK).
    pub cpu: Vec<f64>,
    /// Peak RSS (KiB) of each watched process, to the end of the subscriber's wait.
    pub rss_max: Vec<u64>,
    /// The start signal and the end of publishing (PUBACKs in), µs on the bench's clock.
    pub started_us: u64,
    pub published_us: u64,
    pub client_cpu: f64,
    pub load1: String,
}

impl Measured {
    pub fn acked(&self, range: std::ops::Range<usize>) -> u64 {
        self.sent[range].iter().map(|s| s.acked.len()).sum()
    }

    pub fn sent_total(&self, range: std::ops::Range<usize>) -> u64 {
        self.sent[range].iter().map(|s| s.sent).sum()
    }

    /// Acknowledged sequences the subscriber never got.
    pub fn lost(&self, range: std::ops::Range<usize>) -> Option<u64> {
        let received = self.received.as_ref()?;
        let empty = Seqs::default();
        Some(
            range
                .map(|i| {
                    self.sent[i]
                        .acked
                        .missing_from(received.seqs.get(i).unwrap_or(&empty))
                })
                .sum(),
        )
    }

    pub fn ack_latency(&self, range: std::ops::Range<usize>) -> Vec<u32> {
        self.sent[range]
            .iter()
            .flat_map(|s| s.ack_latency.iter().copied())
            .collect()
    }
}

/// One load: publishers on one broker, optionally a subscriber (on the same or another broker).
pub struct Load {
    /// The broker the publishers connect to.
    pub port: u16,
    /// Publisher i's identity and pace; its payloads carry index i.
    pub publishers: Vec<(Identity, Pace)>,
    /// The subscriber's broker port, identity and topics (QoS 1).
    pub subscriber: Option<(u16, Identity, Vec<String>)>,
    /// Processes whose CPU and RSS are measured.
    pub watch: Vec<u32>,
    pub seconds: u64,
    /// How long publishers wait for outstanding PUBACKs after the load stops.
    pub drain: Duration,
    pub inflight: u16,
    /// How long the subscriber may wait for the rest after publishing ended (it ends sooner after 3 s of
    /// silence).
    pub tail: Duration,
}

impl Load {
    /// Connects everyone, runs the load from one start signal and collects what each side saw.
    pub async fn run(self, epoch: Instant) -> Measured {
        let load = self.publishers;
        let mut out = Measured {
            load1: load1(),
            ..Measured::default()
        };
        let subscriber = match self.subscriber {
            Some((port, who, topics)) => {
                let started = tokio::task::spawn_blocking(move || {
                    load::Subscriber::start(port, who, topics, epoch)
                })
                .await
                .unwrap();
                match started {
                    Ok(s) => Some(s),
                    Err(error) => {
                        out.subscriber_error = Some(error);
                        None
                    }
                }
            }
            None => None,
        };

        // Connect everyone first (50 at a time), then start them all together.
        let gate = Arc::new(Semaphore::new(50));
        let mut connecting = Vec::new();
        for (index, (who, pace)) in load.iter().enumerate() {
            let (gate, who, port, inflight) = (gate.clone(), who.clone(), self.port, self.inflight);
            let queue = if pace.rate.is_none() { 16 } else { 1024 };
            connecting.push(tokio::spawn(async move {
                let _permit = gate.acquire_owned().await.unwrap();
                load::connect(port, index as u32, who, inflight, queue).await
            }));
        }
        let mut connected = Vec::new();
        for (task, (who, _)) in connecting.into_iter().zip(&load) {
            match task.await.unwrap() {
                Ok(c) => connected.push(Some(c)),
                Err(error) => {
                    out.connect_failures.push(format!("{}: {error}", who.id));
                    connected.push(None);
                }
            }
        }

        let watch = Watch::start(self.watch);
        let (client_cpu0, _) = usage(std::process::id());
        let measured_from = Instant::now();
        let start = Instant::now() + Duration::from_millis(300);
        let stop = start + Duration::from_secs(self.seconds);
        let drain = stop + self.drain;
        out.started_us = start.duration_since(epoch).as_micros() as u64;
        let mut tasks = Vec::new();
        let paced = load.iter().filter(|(_, p)| p.rate.is_some()).count().max(1);
        for (index, (conn, (_, pace))) in connected.into_iter().zip(&load).enumerate() {
            let pace = *pace;
            // Paced publishers start spread over one period, so their messages interleave instead of
            // arriving in bursts of N.
            let offset = pace.rate.map_or(Duration::ZERO, |rate| {
                Duration::from_secs_f64((index % paced) as f64 / paced as f64 / rate)
            });
            tasks.push(conn.map(|conn| {
                tokio::spawn(async move {
                    load::publish(conn, pace, epoch, start + offset, stop, drain).await
                })
            }));
        }
        for task in tasks {
            out.sent.push(match task {
                Some(task) => task.await.unwrap_or_default(),
                None => Sent::default(),
            });
        }
        let published = Instant::now();
        out.published_us = published.duration_since(epoch).as_micros() as u64;
        out.publish_seconds = published.saturating_duration_since(start).as_secs_f64();
        // CPU over the load itself (start signal to the last PUBACK), not the wait for a lost tail.
        let window = published.duration_since(measured_from).as_secs_f64();
        out.cpu = watch.cpu();
        out.client_cpu = (usage(std::process::id()).0 - client_cpu0) / window * 100.0;
        if let Some(subscriber) = subscriber {
            let expected = out.sent.iter().map(|s| s.sent).sum::<u64>();
            let deadline = Instant::now() + self.tail;
            let received =
                tokio::task::spawn_blocking(move || subscriber.finish(expected, deadline))
                    .await
                    .unwrap();
            out.received = Some(received);
        }
        out.rss_max = watch.finish().await;
        out
    }
}
