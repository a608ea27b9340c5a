//! Settings from the environment, and what /proc says about processes and the machine.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `K=V,K=V` (or space-separated) into pairs.
pub fn pairs(text: &str) -> Vec<(String, String)> {
    text.split([',', ' ', ';'])
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// CPU seconds (user + system, all threads) and RSS in KiB of a process, from /proc.
pub fn usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime, in clock ticks (100 per second on Linux).
    let cpu = (field(11) + field(12)) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (cpu, rss)
}

/// The three load averages, as /proc/loadavg gives them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The 1-minute load average.
pub fn load1() -> String {
    load_average()
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_owned()
}

/// Watches processes over a load: CPU used between [`Watch::start`] and [`Watch::stop`], and the peak
/// RSS sampled every 200 ms meanwhile.
pub struct Watch {
    pids: Vec<u32>,
    cpu0: Vec<f64>,
    started: Instant,
    sampling: Arc<AtomicBool>,
    peaks: Vec<Arc<AtomicU64>>,
    sampler: tokio::task::JoinHandle<()>,
}

/// What a [`Watch`] saw of one process.
#[derive(Clone, Copy, Debug, Default)]
pub struct Used {
    /// Percent of one core.
    pub cpu: f64,
    pub rss_max_kib: u64,
}

impl Watch {
    pub fn start(pids: Vec<u32>) -> Self {
        let cpu0 = pids.iter().map(|&p| usage(p).0).collect();
        let sampling = Arc::new(AtomicBool::new(true));
        let peaks: Vec<Arc<AtomicU64>> = pids.iter().map(|_| Arc::default()).collect();
        let sampler = {
            let (pids, sampling, peaks) = (pids.clone(), sampling.clone(), peaks.clone());
            tokio::spawn(async move {
                while sampling.load(Ordering::Relaxed) {
                    for (pid, peak) in pids.iter().zip(&peaks) {
                        peak.fetch_max(usage(*pid).1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        };
        Self {
            pids,
            cpu0,
            started: Instant::now(),
            sampling,
            peaks,
            sampler,
        }
    }

    /// CPU over the time since the start; the sampler keeps taking peaks until [`Watch::finish`].
    pub fn cpu(&self) -> Vec<f64> {
        let window = self.started.elapsed().as_secs_f64().max(1e-3);
        self.pids
            .iter()
            .zip(&self.cpu0)
            .map(|(&pid, &cpu0)| (usage(pid).0 - cpu0) / window * 100.0)
            .collect()
    }

    /// Stops sampling; each process's peak RSS (one last reading included).
    pub async fn finish(self) -> Vec<u64> {
        self.sampling.store(false, Ordering::Relaxed);
        let _ = self.sampler.await;
        self.pids
            .iter()
            .zip(&self.peaks)
            .map(|(&pid, peak)| peak.load(Ordering::Relaxed).max(usage(pid).1))
            .collect()
    }
}
