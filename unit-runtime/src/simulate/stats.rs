//! Counters every virtual unit adds to, shared by the whole fleet.
//!
//! Latencies go into a fixed log-linear histogram of atomics rather than a list of samples: a long run at a
//! high rate would otherwise grow memory with the message count, and the simulator's memory per unit is
//! one of the things it measures.

use std::sync::atomic::{AtomicU64, Ordering};

/// Sub-buckets per power of two: percentiles are exact to 1/16 (about 6 %).
const SUB: u64 = 16;
const SUB_BITS: u32 = 4;
/// Enough powers of two for any `u64` of microseconds.
const BUCKETS: usize = (SUB as usize) * 61;

/// Latencies in microseconds.
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    max: AtomicU64,
}

fn index(value: u64) -> usize {
    if value < SUB {
        return value as usize;
    }
    let exponent = 63 - value.leading_zeros();
    let sub = (value >> (exponent - SUB_BITS)) & (SUB - 1);
    ((u64::from(exponent - SUB_BITS + 1)) * SUB + sub) as usize
}

/// The largest value that falls into bucket `index`.
fn upper_bound(index: usize) -> u64 {
    let index = index as u64;
    if index < SUB {
        return index;
    }
    let exponent = index / SUB + u64::from(SUB_BITS) - 1;
    let sub = index % SUB;
    let width = 1u64 << (exponent - u64::from(SUB_BITS));
    ((SUB + sub) << (exponent - u64::from(SUB_BITS))) + width - 1
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn record(&self, micros: u64) {
        let slot = index(micros).min(BUCKETS - 1);
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.max.fetch_max(micros, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn max(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }

    /// The value below which `quantile` (0 to 1) of the samples fall, to the bucket's upper bound.
    pub fn quantile(&self, quantile: f64) -> Option<u64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = ((count as f64 * quantile).ceil() as u64).clamp(1, count);
        let mut seen = 0;
        for (slot, bucket) in self.buckets.iter().enumerate() {
            seen += bucket.load(Ordering::Relaxed);
            if seen >= rank {
                return Some(upper_bound(slot).min(self.max()));
            }
        }
        Some(self.max())
    }
}

/// What the fleet did, summed over all units.
#[derive(Default)]
pub struct Stats {
    pub connected: AtomicU64,
    pub connect_failures: AtomicU64,
    pub disconnects: AtomicU64,
    pub sent: AtomicU64,
    /// Publishes the client could not queue (its request channel was full).
    pub send_dropped: AtomicU64,
    pub received: AtomicU64,
    pub states: AtomicU64,
    pub commands: AtomicU64,
    pub updates_applied: AtomicU64,
    pub update_failures: AtomicU64,
    pub downloaded_bytes: AtomicU64,
    pub latency: Histogram,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_their_values() {
        for value in (0..5000).chain([u64::from(u32::MAX), 1 << 40]) {
            let slot = index(value);
            assert!(upper_bound(slot) >= value, "{value} in {slot}");
            if slot > 0 {
                assert!(upper_bound(slot - 1) < value, "{value} in {slot}");
            }
        }
    }

    #[test]
    fn quantiles_are_close() {
        let histogram = Histogram::default();
        for value in 1..=1000 {
            histogram.record(value);
        }
        let p50 = histogram.quantile(0.5).unwrap();
        assert!((500..=532).contains(&p50), "{p50}");
        assert_eq!(histogram.quantile(1.0), Some(1000));
        assert_eq!(histogram.max(), 1000);
        assert_eq!(Histogram::default().quantile(0.5), None);
    }
}
