//! What the unit reports on `state/pepeunit`: real readings of this Linux machine, in the keys the
//! reference client uses (`millis`, `mem_free`, `mem_alloc`, `freq`, `ifconfig`, `statvfs`,
//! `pu_commit_version`), plus the agent's own (`uptime`, `pu_agent_version`, queue and program status).

use std::path::Path;
use std::time::Instant;

use serde_json::{Map, Value, json};

/// Bytes of available and used memory, from `/proc/meminfo`.
fn memory() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    };
    let total = field("MemTotal:")?;
    let available = field("MemAvailable:")?;
    Some((available, total.saturating_sub(available)))
}

/// The first CPU's clock in Hz, as MicroPython's `machine.freq()` reports it.
fn frequency() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = text
        .lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    Some((mhz * 1_000_000.0) as u64)
}

fn system_uptime_seconds() -> Option<f64> {
    std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Non-loopback addresses by interface.
fn addresses() -> Value {
    let mut by_interface = Map::new();
    for interface in if_addrs::get_if_addrs().unwrap_or_default() {
        if interface.is_loopback() {
            continue;
        }
        if let Value::Array(list) = by_interface
            .entry(interface.name.clone())
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            list.push(json!(interface.ip().to_string()));
        }
    }
    Value::Object(by_interface)
}

/// `os.statvfs` of the filesystem holding `path`, in MicroPython's tuple order.
fn filesystem(path: &Path) -> Option<Value> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    Some(json!([
        s.block_size(),
        s.fragment_size(),
        s.blocks(),
        s.blocks_free(),
        s.blocks_available(),
        s.files(),
        s.files_free(),
        s.files_available(),
        s.flags().bits(),
        s.name_max()
    ]))
}

/// One state report. `extra` carries the agent's own keys (program status, update failure, ...).
pub fn state(
    started: Instant,
    home: &Path,
    commit: Option<&str>,
    extra: Map<String, Value>,
) -> Map<String, Value> {
    let mut state = Map::new();
    state.insert("millis".into(), json!(started.elapsed().as_millis() as u64));
    if let Some((free, used)) = memory() {
        state.insert("mem_free".into(), json!(free));
        state.insert("mem_alloc".into(), json!(used));
    }
    if let Some(freq) = frequency() {
        state.insert("freq".into(), json!(freq));
    }
    state.insert("ifconfig".into(), addresses());
    if let Some(statvfs) = filesystem(home) {
        state.insert("statvfs".into(), statvfs);
    }
    if let Some(uptime) = system_uptime_seconds() {
        state.insert("uptime".into(), json!(uptime));
    }
    state.insert("pu_commit_version".into(), json!(commit));
    state.insert("pu_agent_version".into(), json!(env!("CARGO_PKG_VERSION")));
    state.extend(extra);
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_machine() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(Instant::now(), dir.path(), Some("abc"), Map::new());
        assert!(state["mem_free"].as_u64().unwrap() > 0);
        assert_eq!(state["statvfs"].as_array().unwrap().len(), 10);
        assert_eq!(state["pu_commit_version"], "abc");
    }
}
