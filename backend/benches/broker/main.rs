//! Broker benchmark: `cargo bench -p pepeunit-backend --bench broker`. What a user of the broker sees,
//! with Mosquitto measured in the same run under the same load client.
//!
//! Every broker is started fresh by the bench: the release `pepeunit` (on SQLite, and on a PostgreSQL
//! database created for the run and dropped after), optionally a second "before" binary, and a private
//! `mosquitto` on a free port. Scenarios (each for `PEPEUNIT_BENCH_SECONDS`):
//! - `fan-in`: N units publish QoS 1 flat out; one unit whose input is linked to all their outputs
//!   subscribes QoS 1 (a plain subscriber on Mosquitto). Values acknowledged per second (on Pepeunit a
//!   PUBACK means stored), the share of them the subscriber got, losses by sequence number.
//! - `latency`: the same N units paced at each rate of `PEPEUNIT_BENCH_RATES` values/s in total; delivery
//!   latency publish → subscriber (send time in the payload) p50/p99/max, PUBACK p99, losses.
//! - `fleet`: `PEPEUNIT_BENCH_FLEET` units, one connection each, at `PEPEUNIT_BENCH_FLEET_RATE` in total.
//! - `noisy`: one unit floods QoS 0 (flat out, or at `PEPEUNIT_BENCH_NOISY_RATE`/s) while the N units
//!   publish QoS 1 at `PEPEUNIT_BENCH_NEIGHBOUR_RATE` in total; their PUBACK p50/p99/max.
//!
//! A loss is a sequence number the broker acknowledged (PUBACK) that the subscriber never received; the
//! subscriber waits for the tail with a bounded timeout. Each row also gives the broker's CPU and peak RSS
//! (from /proc), the load client's own CPU (this process, all threads) and the 1-minute load average when
//! the scenario started, so a row where the client or the machine was the limit shows it.
//!
//! With `PEPEUNIT_BENCH_ALERT_RULES=N` (for every Pepeunit target, or one target's `[...]`), N threshold
//! rules are active on the published variables during fan-in, and a probe measures alert latency (value
//! PUBACK → `sendMessage` at a Bot API stub): see [`alerts`].
//!
//! A target's `[PEPEUNIT_BENCH_PROCESSING=1]` gives every publisher's output a direct log and three
//! aggregate windows first (see [`target::PROCESSING`]), to compare fan-in with processing and without.
//!
//! Settings (environment): see `Settings::from_env` and docs/src/benchmarks.md.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod alerts;
#[path = "../common/mod.rs"]
mod common;
mod target;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rumqttc::QoS;

use common::load::{self, Identity, Pace, quantile_ms};
use common::measure::{Load, Measured};
use common::report::{count, ms, percent};
use common::system::{env_or, load_average, pairs};
use target::{Broker, Kind, Spec};

struct Settings {
    seconds: u64,
    units: usize,
    rates: Vec<u64>,
    fleet: usize,
    fleet_rate: u64,
    noisy_rate: Option<f64>,
    noisy_bytes: usize,
    neighbour_rate: u64,
    inflight: u16,
    drain: Duration,
    scenarios: Vec<String>,
    targets: Vec<Spec>,
    postgres: String,
    mosquitto_bin: String,
    client_threads: usize,
    alert_rules: usize,
}

impl Settings {
    fn from_env() -> Self {
        let bin = PathBuf::from(env_or(
            "PEPEUNIT_BENCH_BIN",
            env!("CARGO_BIN_EXE_pepeunit").to_owned(),
        ));
        let baseline = std::env::var("PEPEUNIT_BENCH_BASELINE_BIN")
            .ok()
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        let server_env = pairs(&env_or("PEPEUNIT_BENCH_SERVER_ENV", String::new()));
        let baseline_env = pairs(&env_or("PEPEUNIT_BENCH_BASELINE_ENV", String::new()));
        // `sqlite`, `postgres`, `mosquitto`, each optionally with server settings: `sqlite[K=V;K=V]`.
        let targets_text = env_or(
            "PEPEUNIT_BENCH_TARGETS",
            "sqlite,postgres,mosquitto".to_owned(),
        );
        let mut targets = Vec::new();
        for (group, item) in split_targets(&targets_text).into_iter().enumerate() {
            let (name, extra) = match item.split_once('[') {
                Some((name, rest)) => (name.trim(), pairs(rest.trim_end_matches(']'))),
                None => (item.trim(), Vec::new()),
            };
            let kind = match name {
                "sqlite" => Kind::Sqlite,
                "postgres" | "postgresql" => Kind::Postgres,
                "mosquitto" => Kind::Mosquitto,
                other => panic!("PEPEUNIT_BENCH_TARGETS: unknown target {other:?}"),
            };
            if let Kind::Mosquitto = kind {
                targets.push(Spec {
                    kind,
                    bin: None,
                    env: extra,
                    group,
                });
                continue;
            }
            // Before and after side by side, target by target, so both meet the same machine load.
            if let Some(baseline) = &baseline {
                let mut env = baseline_env.clone();
                env.extend(extra.iter().cloned());
                targets.push(Spec {
                    kind: kind.clone(),
                    bin: Some((baseline.clone(), "before".into())),
                    env,
                    group,
                });
            }
            let mut env = server_env.clone();
            env.extend(extra);
            targets.push(Spec {
                kind,
                bin: Some((
                    bin.clone(),
                    if baseline.is_some() { "after" } else { "" }.into(),
                )),
                env,
                group,
            });
        }
        let units = env_or("PEPEUNIT_BENCH_UNITS", 50usize).max(1);
        Self {
            seconds: env_or("PEPEUNIT_BENCH_SECONDS", 5u64).max(1),
            units,
            rates: env_or("PEPEUNIT_BENCH_RATES", "10000,30000".to_owned())
                .split(',')
                .filter_map(|r| r.trim().parse().ok())
                .filter(|r| *r > 0)
                .collect(),
            fleet: env_or("PEPEUNIT_BENCH_FLEET", 1000usize),
            fleet_rate: env_or("PEPEUNIT_BENCH_FLEET_RATE", 10_000u64).max(1),
            noisy_rate: Some(env_or("PEPEUNIT_BENCH_NOISY_RATE", 0.0f64)).filter(|r| *r > 0.0),
            noisy_bytes: env_or("PEPEUNIT_BENCH_NOISY_BYTES", 16_384usize),
            neighbour_rate: env_or("PEPEUNIT_BENCH_NEIGHBOUR_RATE", 1000u64).max(1),
            inflight: env_or("PEPEUNIT_BENCH_INFLIGHT", 100u16).max(1),
            drain: Duration::from_secs(env_or("PEPEUNIT_BENCH_DRAIN_SECONDS", 15u64)),
            scenarios: env_or(
                "PEPEUNIT_BENCH_SCENARIOS",
                "fan-in,latency,fleet,noisy".to_owned(),
            )
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect(),
            targets,
            postgres: env_or(
                "PEPEUNIT_BENCH_POSTGRES",
                "postgres://postgres@127.0.0.1:5432".to_owned(),
            ),
            mosquitto_bin: env_or("PEPEUNIT_BENCH_MOSQUITTO_BIN", "mosquitto".to_owned()),
            client_threads: env_or("PEPEUNIT_BENCH_CLIENT_THREADS", 2usize).max(1),
            alert_rules: env_or(alerts::SETTING, 0usize),
        }
    }

    fn wants(&self, scenario: &str) -> bool {
        self.scenarios.iter().any(|s| s == scenario)
    }
}

/// Splits on commas outside `[...]`.
fn split_targets(text: &str) -> Vec<String> {
    let (mut out, mut current, mut depth) = (Vec::new(), String::new(), 0);
    for c in text.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    out.push(current);
    out.into_iter().filter(|s| !s.trim().is_empty()).collect()
}

/// Runs one load on `broker`: `load[i]` is publisher i's identity and pace; with `subscribe`, the broker's
/// subscriber takes every QoS 1 publisher's topic.
async fn measure(
    broker: &Broker,
    load: Vec<(Identity, Pace)>,
    subscribe: bool,
    settings: &Settings,
    epoch: Instant,
) -> Measured {
    let subscriber = subscribe.then(|| {
        let topics = load
            .iter()
            .filter(|(_, pace)| pace.qos != QoS::AtMostOnce)
            .map(|(who, _)| who.topic.clone())
            .collect();
        (broker.port, broker.subscriber.clone(), topics)
    });
    Load {
        port: broker.port,
        publishers: load,
        subscriber,
        watch: broker.pid.into_iter().collect(),
        seconds: settings.seconds,
        drain: settings.drain,
        inflight: settings.inflight,
        tail: Duration::from_secs(10),
    }
    .run(epoch)
    .await
}

/// One table row and the number it is compared by.
struct Row {
    scenario: usize,
    spec: Spec,
    cells: Vec<String>,
    /// Throughput (higher is better) or a p99 (lower is better), as the scenario says.
    metric: Option<f64>,
}

struct Scenario {
    title: String,
    columns: &'static str,
    higher_is_better: bool,
}

fn resources(m: &Measured) -> Vec<String> {
    vec![
        m.cpu
            .first()
            .map(|c| format!("{c:.0}%"))
            .unwrap_or_else(|| "–".into()),
        m.rss_max
            .first()
            .map(|r| format!("{} MiB", r / 1024))
            .unwrap_or_else(|| "–".into()),
        format!("{:.0}%", m.client_cpu),
        m.load1.clone(),
    ]
}

/// (broker, scenario, what happened).
type Note = (String, String, String);

fn notes(label: &str, scenario: &str, m: &Measured, notes: &mut Vec<Note>) {
    if !m.connect_failures.is_empty() {
        notes.push((
            label.to_owned(),
            scenario.to_owned(),
            format!(
                "{} clients failed to connect (first: {})",
                m.connect_failures.len(),
                m.connect_failures[0]
            ),
        ));
    }
    if let Some(error) = &m.subscriber_error {
        notes.push((
            label.to_owned(),
            scenario.to_owned(),
            format!("subscriber failed: {error}"),
        ));
    }
    if let Some(r) = &m.received {
        if r.denied > 0 {
            notes.push((
                label.to_owned(),
                scenario.to_owned(),
                format!("{} subscriptions refused", r.denied),
            ));
        }
        if r.granted_qos0 > 0 {
            notes.push((
                label.to_owned(),
                scenario.to_owned(),
                format!(
                    "the subscriber asked for QoS 1 and was granted QoS 0 ({} topics)",
                    r.granted_qos0
                ),
            ));
        }
        if let Some(error) = &r.error {
            notes.push((
                label.to_owned(),
                scenario.to_owned(),
                format!("subscriber: {error}"),
            ));
        }
    }
    let cut: u32 = m.sent.iter().map(|s| s.disconnects).sum();
    if cut > 0 {
        let first = m
            .sent
            .iter()
            .find_map(|s| s.last_error.clone())
            .unwrap_or_default();
        notes.push((
            label.to_owned(),
            scenario.to_owned(),
            format!("publishers were disconnected {cut} times (e.g. {first})"),
        ));
    }
}

/// A delivery row: throughput columns, delivery and PUBACK latency, losses.
fn delivery_cells(
    m: &mut Measured,
    seconds: u64,
    paced: Option<u64>,
) -> (Vec<String>, Option<f64>) {
    let n = m.sent.len();
    let acked = m.acked(0..n);
    let sent = m.sent_total(0..n);
    let lost = m.lost(0..n);
    let mut ack_latency = m.ack_latency(0..n);
    let ack_p99 = quantile_ms(&mut ack_latency, 0.99);
    let (got, dup, p50, p99, max) = match m.received.as_mut() {
        Some(r) => {
            let got = r.seqs.iter().map(load::Seqs::len).sum::<u64>();
            let p50 = quantile_ms(&mut r.latency, 0.5);
            let p99 = quantile_ms(&mut r.latency, 0.99);
            let max = quantile_ms(&mut r.latency, 1.0);
            (Some(got), r.duplicates, p50, p99, max)
        }
        None => (None, 0, None, None, None),
    };
    let unacked = sent.saturating_sub(acked);
    let lost_cell = match lost {
        Some(l) if unacked > 0 => format!("{} (+{} not acked)", count(l), count(unacked)),
        Some(l) => count(l),
        None => "–".into(),
    };
    let received_cell = got
        .map(|g| {
            let mut cell = format!(
                "{} / {} ({})",
                count(g),
                count(acked),
                percent(g.min(acked), acked)
            );
            if dup > 0 {
                cell.push_str(&format!(", {} dup", count(dup)));
            }
            cell
        })
        .unwrap_or_else(|| "–".into());
    match paced {
        None => {
            let rate = acked as f64 / m.publish_seconds.max(seconds as f64);
            (
                vec![
                    format!("{} /s", count(rate as u64)),
                    received_cell,
                    lost_cell,
                    ms(p50),
                    ms(p99),
                    ms(ack_p99),
                ],
                Some(rate),
            )
        }
        Some(_) => (
            vec![
                format!("{} /s", count(sent / seconds)),
                received_cell,
                lost_cell,
                ms(p50),
                ms(p99),
                ms(max),
                ms(ack_p99),
            ],
            p99,
        ),
    }
}

fn main() {
    let settings = Settings::from_env();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.client_threads)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(settings));
}

async fn run(settings: Settings) {
    let started_at = chrono::Utc::now();
    let load_at_start = load_average();
    let epoch = Instant::now();
    let units = settings.units;
    let fleet = if settings.wants("fleet") {
        settings.fleet
    } else {
        0
    };
    let publishers = units.max(fleet);

    let mut scenarios = Vec::new();
    let mut rows: Vec<Row> = Vec::new();
    let mut notes_out = Vec::new();
    let mut alert_lines: Vec<String> = Vec::new();
    let fan_in = settings.wants("fan-in").then(|| {
        scenarios.push(Scenario {
            title: format!(
                "Fan-in: {units} units publish QoS 1 flat out (in-flight window {}), one unit subscribed QoS 1 to all {units} outputs",
                settings.inflight
            ),
            columns: "| broker | values/s acknowledged | subscriber got / acknowledged | lost | delivery p50 | delivery p99 | PUBACK p99 | broker CPU | broker RSS | client CPU | load |",
            higher_is_better: true,
        });
        scenarios.len() - 1
    });
    let mut latency = Vec::new();
    if settings.wants("latency") {
        for &rate in &settings.rates {
            scenarios.push(Scenario {
                title: format!(
                    "Delivery latency: {units} units × {}/s = {} values/s, QoS 1 paced, one unit subscribed QoS 1 to all",
                    rate as f64 / units as f64,
                    count(rate)
                ),
                columns: "| broker | sent/s | subscriber got / acknowledged | lost | delivery p50 | delivery p99 | max | PUBACK p99 | broker CPU | broker RSS | client CPU | load |",
                higher_is_better: false,
            });
            latency.push((rate, scenarios.len() - 1));
        }
    }
    let fleet_scenario = (fleet > 0).then(|| {
        scenarios.push(Scenario {
            title: format!(
                "{} publishing units (one connection each) × {}/s = {} values/s, QoS 1 paced, one unit subscribed to all",
                count(fleet as u64),
                settings.fleet_rate as f64 / fleet as f64,
                count(settings.fleet_rate)
            ),
            columns: "| broker | sent/s | subscriber got / acknowledged | lost | delivery p50 | delivery p99 | max | PUBACK p99 | broker CPU | broker RSS | client CPU | load |",
            higher_is_better: false,
        });
        scenarios.len() - 1
    });
    let noisy = settings.wants("noisy").then(|| {
        scenarios.push(Scenario {
            title: format!(
                "Noisy neighbour: one unit floods QoS 0 {} B payloads {} (reconnecting when cut off) while {units} units publish QoS 1 at {}/s each",
                count(settings.noisy_bytes as u64),
                settings
                    .noisy_rate
                    .map(|r| format!("at {r}/s"))
                    .unwrap_or_else(|| "flat out".into()),
                settings.neighbour_rate as f64 / units as f64
            ),
            columns: "| broker | flood sent | flooder cut off | neighbours acknowledged / sent | PUBACK p50 | PUBACK p99 | PUBACK max | broker CPU | broker RSS | client CPU | load |",
            higher_is_better: false,
        });
        scenarios.len() - 1
    });

    for (run, spec) in settings.targets.iter().enumerate() {
        let label = spec.label();
        eprintln!("{label}: starting (load {})", load_average());
        let broker = target::start(
            spec,
            publishers,
            &settings.postgres,
            &settings.mosquitto_bin,
            run,
            settings.alert_rules,
        )
        .await;
        let qos1 = |rate: Option<f64>| Pace {
            qos: QoS::AtLeastOnce,
            rate,
            bytes: 0,
            reconnect: false,
        };
        if let Some(scenario) = fan_in {
            eprintln!("  fan-in (load {})", load_average());
            let load = broker.publishers[..units]
                .iter()
                .map(|p| (p.clone(), qos1(None)))
                .collect();
            let probe = broker.alerts.as_ref().map(|(stub, probe)| {
                let start = Instant::now() + Duration::from_millis(300);
                let stop = start + Duration::from_secs(settings.seconds);
                alerts::probe(broker.port, probe.clone(), stub, start, stop)
            });
            let (mut m, latency) = match probe {
                Some(probe) => {
                    let (m, latency) =
                        tokio::join!(measure(&broker, load, true, &settings, epoch), probe);
                    (m, Some(latency))
                }
                None => (measure(&broker, load, true, &settings, epoch).await, None),
            };
            if let Some(mut latency) = latency {
                alert_lines.push(format!(
                    "- {label}: {} alerts, PUBACK → sendMessage p50 {}, p99 {}, max {}; {} missing",
                    latency.micros.len(),
                    ms(quantile_ms(&mut latency.micros, 0.5)),
                    ms(quantile_ms(&mut latency.micros, 0.99)),
                    ms(quantile_ms(&mut latency.micros, 1.0)),
                    latency.missing
                ));
            }
            notes(&label, "fan-in", &m, &mut notes_out);
            let (mut cells, metric) = delivery_cells(&mut m, settings.seconds, None);
            cells.extend(resources(&m));
            rows.push(Row {
                scenario,
                spec: spec.clone(),
                cells,
                metric,
            });
        }
        for &(rate, scenario) in &latency {
            eprintln!("  latency at {rate}/s (load {})", load_average());
            let each = rate as f64 / units as f64;
            let load = broker.publishers[..units]
                .iter()
                .map(|p| (p.clone(), qos1(Some(each))))
                .collect();
            let mut m = measure(&broker, load, true, &settings, epoch).await;
            notes(&label, &format!("{rate}/s"), &m, &mut notes_out);
            let (mut cells, metric) = delivery_cells(&mut m, settings.seconds, Some(rate));
            cells.extend(resources(&m));
            rows.push(Row {
                scenario,
                spec: spec.clone(),
                cells,
                metric,
            });
        }
        if let Some(scenario) = fleet_scenario {
            eprintln!("  {fleet} units (load {})", load_average());
            let each = settings.fleet_rate as f64 / fleet as f64;
            let load = broker.publishers[..fleet]
                .iter()
                .map(|p| (p.clone(), qos1(Some(each))))
                .collect();
            let mut m = measure(&broker, load, true, &settings, epoch).await;
            notes(&label, "fleet", &m, &mut notes_out);
            let (mut cells, metric) =
                delivery_cells(&mut m, settings.seconds, Some(settings.fleet_rate));
            cells.extend(resources(&m));
            rows.push(Row {
                scenario,
                spec: spec.clone(),
                cells,
                metric,
            });
        }
        if let Some(scenario) = noisy {
            eprintln!("  noisy neighbour (load {})", load_average());
            let each = settings.neighbour_rate as f64 / units as f64;
            let mut load: Vec<(Identity, Pace)> = broker.publishers[..units]
                .iter()
                .map(|p| (p.clone(), qos1(Some(each))))
                .collect();
            load.push((
                broker.flooder.clone(),
                Pace {
                    qos: QoS::AtMostOnce,
                    rate: settings.noisy_rate,
                    bytes: settings.noisy_bytes,
                    reconnect: true,
                },
            ));
            let m = measure(&broker, load, false, &settings, epoch).await;
            notes(&label, "noisy neighbour", &m, &mut notes_out);
            let flood = &m.sent[units];
            let flood_mib = flood.sent as f64 * settings.noisy_bytes as f64
                / (1 << 20) as f64
                / settings.seconds as f64;
            let flood_cells = vec![
                format!(
                    "{} /s ({flood_mib:.0} MiB/s)",
                    count(flood.sent / settings.seconds)
                ),
                flood.disconnects.to_string(),
            ];
            let (acked, sent) = (m.acked(0..units), m.sent_total(0..units));
            let mut latencies = m.ack_latency(0..units);
            let p99 = quantile_ms(&mut latencies, 0.99);
            let mut cells = flood_cells;
            cells.extend([
                format!("{} / {}", count(acked), count(sent)),
                ms(quantile_ms(&mut latencies, 0.5)),
                ms(p99),
                ms(quantile_ms(&mut latencies, 1.0)),
            ]);
            cells.extend(resources(&m));
            rows.push(Row {
                scenario,
                spec: spec.clone(),
                cells,
                metric: p99,
            });
        }
        broker.stop().await;
    }

    // The report, in Markdown.
    let has_baseline = settings
        .targets
        .iter()
        .any(|t| t.bin.as_ref().is_some_and(|(_, n)| n == "before"));
    println!(
        "Run {} UTC, {} cores, load average at start {load_at_start}; {} s per scenario, client: {} runtime threads + 1 subscriber thread.",
        started_at.format("%Y-%m-%d %H:%M"),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        settings.seconds,
        settings.client_threads
    );
    for spec in &settings.targets {
        if let Some((bin, _)) = &spec.bin {
            println!("- {}: `{}`", spec.label(), bin.display());
        }
    }
    for (index, scenario) in scenarios.iter().enumerate() {
        println!();
        println!("### {}", scenario.title);
        println!();
        let mut header = scenario.columns.to_owned();
        let mut rule = "|---".repeat(scenario.columns.matches('|').count() - 1);
        header.push_str(" ÷ Mosquitto |");
        rule.push_str("|---");
        if has_baseline {
            header.push_str(" ÷ before |");
            rule.push_str("|---");
        }
        rule.push('|');
        println!("{header}");
        println!("{rule}");
        let in_scenario: Vec<&Row> = rows.iter().filter(|r| r.scenario == index).collect();
        let mosquitto = in_scenario
            .iter()
            .find(|r| matches!(r.spec.kind, Kind::Mosquitto))
            .and_then(|r| r.metric);
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
            _ => "–".into(),
        };
        for row in &in_scenario {
            let mut line = format!("| {} | {}", row.spec.label(), row.cells.join(" | "));
            let vs_mosquitto = if matches!(row.spec.kind, Kind::Mosquitto) {
                "–".into()
            } else {
                ratio(row.metric, mosquitto)
            };
            line.push_str(&format!(" | {vs_mosquitto}"));
            if has_baseline {
                let before = in_scenario
                    .iter()
                    .find(|b| {
                        b.spec.bin.as_ref().is_some_and(|(_, n)| n == "before")
                            && b.spec.group == row.spec.group
                            && row.spec.bin.as_ref().is_some_and(|(_, n)| n == "after")
                    })
                    .and_then(|b| b.metric);
                line.push_str(&format!(" | {}", ratio(row.metric, before)));
            }
            line.push_str(" |");
            println!("{line}");
        }
        println!();
        println!(
            "÷ columns: {}.",
            if scenario.higher_is_better {
                "values/s divided by the other's (higher is better)"
            } else {
                "p99 divided by the other's (lower is better)"
            }
        );
    }
    if !alert_lines.is_empty() {
        println!();
        println!(
            "Alert latency during fan-in (a probe unit's value crossing a rule's threshold, one every 1.1 s):"
        );
        for line in &alert_lines {
            println!("{line}");
        }
    }
    if !notes_out.is_empty() {
        println!();
        println!("Notes:");
        // One line per broker and observation, listing the scenarios it happened in.
        let mut merged: Vec<(String, String, Vec<String>)> = Vec::new();
        for (label, scenario, note) in notes_out {
            match merged
                .iter_mut()
                .find(|(l, n, _)| *l == label && *n == note)
            {
                Some((_, _, scenarios)) => scenarios.push(scenario),
                None => merged.push((label, note, vec![scenario])),
            }
        }
        for (label, note, scenarios) in merged {
            println!("- {label}, {}: {note}", scenarios.join(", "));
        }
    }
}
