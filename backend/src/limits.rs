//! Resource limits shared by the HTTP server and the broker: connection caps (total and per address) and
//! the one place a hit limit is counted in `/metrics` and logged (once per interval per limit, so a flood
//! cannot flood the log too).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// How often one limit's hits are logged at most.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: &'static str,
}

/// Counters of hit limits; cheap to clone (the metrics share their storage).
#[derive(Clone, Default)]
pub struct LimitCounters {
    hits: Family<LimitLabels, Counter>,
    slow_subscribers: Counter,
    stored_sessions: Gauge,
    /// limit → when it was last logged, and how many hits since.
    logged: Arc<Mutex<HashMap<&'static str, (Instant, u64)>>>,
}

impl LimitCounters {
    /// Adds the counters to the `/metrics` registry.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "limit_hits",
            "Times a configured limit refused or cut off a client, by limit",
            self.hits.clone(),
        );
        registry.register(
            "mqtt_slow_subscriber_disconnects",
            "MQTT connections closed because their delivery queue stayed full",
            self.slow_subscribers.clone(),
        );
        registry.register(
            "mqtt_stored_sessions",
            "Persistent MQTT sessions kept for units that are offline",
            self.stored_sessions.clone(),
        );
    }

    /// The number of persistent sessions kept for offline units.
    pub fn stored_sessions(&self) -> &Gauge {
        &self.stored_sessions
    }

    /// Counts one hit of `limit` and logs it unless it was logged within the interval.
    pub fn hit(&self, limit: &'static str, detail: &dyn std::fmt::Display) {
        self.hits.get_or_create(&LimitLabels { limit }).inc();
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let entry = logged.entry(limit).or_insert((now - LOG_INTERVAL * 2, 0));
        entry.1 += 1;
        if now.duration_since(entry.0) >= LOG_INTERVAL {
            tracing::warn!(limit, hits = entry.1, %detail, "limit reached");
            *entry = (now, 0);
        }
    }

    /// Counts a subscriber disconnected for being too slow (also a limit hit).
    pub fn slow_subscriber(&self, detail: &dyn std::fmt::Display) {
        self.slow_subscribers.inc();
        self.hit("mqtt_subscriber_queue", detail);
    }

    /// The number of hits of `limit` so far (for tests and the bench).
    pub fn hits(&self, limit: &'static str) -> u64 {
        self.hits.get_or_create(&LimitLabels { limit }).get()
    }
}

/// Caps open connections in total and per client address; 0 turns a cap off.
#[derive(Clone)]
pub struct ConnectionCap {
    inner: Arc<CapInner>,
}

struct CapInner {
    /// The metric label of a refusal, e.g. `http_connections`.
    name: &'static str,
    total: usize,
    per_ip: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
    counters: LimitCounters,
}

/// One admitted connection; dropping it frees its place.
pub struct Admitted {
    cap: Arc<CapInner>,
    ip: IpAddr,
}

impl ConnectionCap {
    pub fn new(name: &'static str, total: usize, per_ip: usize, counters: LimitCounters) -> Self {
        Self {
            inner: Arc::new(CapInner {
                name,
                total,
                per_ip,
                open: Mutex::new((0, HashMap::new())),
                counters,
            }),
        }
    }

    /// Admits a connection from `ip`, or counts and logs the refusal and returns `None`.
    pub fn admit(&self, ip: IpAddr) -> Option<Admitted> {
        let refused = {
            let mut open = self.inner.open.lock().unwrap_or_else(|e| e.into_inner());
            let from_ip = open.1.get(&ip).copied().unwrap_or(0);
            if self.inner.total > 0 && open.0 >= self.inner.total {
                Some("total")
            } else if self.inner.per_ip > 0 && from_ip >= self.inner.per_ip {
                Some("per address")
            } else {
                open.0 += 1;
                open.1.insert(ip, from_ip + 1);
                None
            }
        };
        match refused {
            None => Some(Admitted {
                cap: self.inner.clone(),
                ip,
            }),
            Some(which) => {
                let detail = format!("{which} cap, refused {ip}");
                self.inner.counters.hit(self.inner.name, &detail);
                None
            }
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.cap.open.lock().unwrap_or_else(|e| e.into_inner());
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.ip);
            }
        }
    }
}

/// A token bucket: `rate` per second sustained, `capacity` at once; a rate of 0 never refuses.
pub struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    pub fn new(rate: f64, capacity: f64) -> Self {
        Self {
            rate,
            capacity,
            tokens: capacity,
            at: Instant::now(),
        }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.capacity);
        self.at = now;
    }

    /// Takes `n` tokens if there are that many.
    pub fn take(&mut self, n: f64) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        self.refill();
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// How long until `n` tokens are there (`n` over the capacity never is: the time to fill it).
    pub fn wait_for(&mut self, n: f64) -> Duration {
        if self.rate <= 0.0 {
            return Duration::ZERO;
        }
        self.refill();
        let missing = (n.min(self.capacity) - self.tokens).max(0.0);
        Duration::from_secs_f64(missing / self.rate)
    }

    /// Whether the bucket is full again: its owner has been quiet for long enough to be forgotten.
    pub fn is_full(&mut self) -> bool {
        self.rate <= 0.0 || {
            self.refill();
            self.tokens >= self.capacity
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_count_per_address_and_free_on_drop() {
        let cap = ConnectionCap::new("test", 3, 2, LimitCounters::default());
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        let first = cap.admit(a).unwrap();
        let _second = cap.admit(a).unwrap();
        assert!(cap.admit(a).is_none(), "per-address cap");
        let _third = cap.admit(b).unwrap();
        assert!(cap.admit(b).is_none(), "total cap");
        drop(first);
        assert!(cap.admit(b).is_some());
        assert_eq!(cap.inner.counters.hits("test"), 2);
    }
}
