//! Failed-login counting per client address, to slow password guessing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Past `max_failures` failed logins within `window`, an address gets `RATE_LIMITED` (HTTP 429) until the
/// window that started with its first failure ends. Held in memory: a restart forgives everyone.
pub struct LoginThrottle {
    max_failures: u32,
    window: Duration,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

/// Above this many tracked addresses, expired entries are swept on the next failure.
const SWEEP_ABOVE: usize = 10_000;

impl LoginThrottle {
    pub fn new(max_failures: u32, window: Duration) -> Self {
        Self {
            max_failures,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Refuses an address that has used up its failures.
    pub fn check(&self, ip: IpAddr) -> Result<()> {
        let failures = self.failures.lock().map_err(Error::internal)?;
        if let Some((count, since)) = failures.get(&ip) {
            let elapsed = since.elapsed();
            if elapsed < self.window && *count >= self.max_failures {
                return Err(Error::RateLimited {
                    retry_after_seconds: (self.window - elapsed).as_secs().max(1),
                });
            }
        }
        Ok(())
    }

    /// Counts one failed login from `ip`.
    pub fn record_failure(&self, ip: IpAddr) {
        let Ok(mut failures) = self.failures.lock() else {
            return;
        };
        let now = Instant::now();
        if failures.len() > SWEEP_ABOVE {
            let window = self.window;
            failures.retain(|_, (_, since)| now.duration_since(*since) < window);
        }
        let entry = failures.entry(ip).or_insert((0, now));
        if now.duration_since(entry.1) >= self.window {
            *entry = (0, now);
        }
        entry.0 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_one_address_only() {
        let throttle = LoginThrottle::new(3, Duration::from_secs(60));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            throttle.check(a).unwrap();
            throttle.record_failure(a);
        }
        assert!(matches!(throttle.check(a), Err(Error::RateLimited { .. })));
        throttle.check(b).unwrap();
    }

    #[test]
    fn window_expiry_forgives() {
        let throttle = LoginThrottle::new(1, Duration::from_millis(1));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        throttle.record_failure(a);
        std::thread::sleep(Duration::from_millis(5));
        throttle.check(a).unwrap();
    }
}
