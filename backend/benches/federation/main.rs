//! Federation benchmark: `cargo bench -p pepeunit-backend --bench federation`. Two release `pepeunit`
//! instances on this machine, peered over ActivityPub; units on B publish QoS 1 on B's broker, their
//! outputs are linked by uuid into the input of a unit on A, and that unit, subscribed on A's broker to
//! the mirrors' topics, receives. What is measured is end to end: MQTT in on B → MQTT out on A.
//!
//! Each instance has its own database (SQLite, or a PostgreSQL database created for the run) and is
//! named `localhost:<port>` where the port is a counting TCP proxy in front of its HTTP port, so every
//! byte one instance sends the other (requests and answers) is counted. Scenarios (each for
//! `PEPEUNIT_BENCH_SECONDS`):
//! - `flat-out`: the units on B publish as fast as their in-flight windows allow; values/s delivered on
//!   A while the load ran, whether the newest value of each output arrived.
//! - `latency`: paced at each rate of `PEPEUNIT_BENCH_RATES` values/s in total; p50/p99/max from the
//!   PUBACK on B to the delivery on A (one clock: the bench's).
//!
//! Every row gives both instances' CPU and peak RSS (from /proc), the client's CPU (this process,
//! proxies included), bytes on the wire per value delivered and the 1-minute load average.
//!
//! Settings (environment): see `Settings::from_env` and docs/src/benchmarks.md.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;
mod proxy;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::QoS;
use serde_json::json;
use tokio::sync::Semaphore;

use common::load::{Identity, Pace, quantile_ms};
use common::measure::{Load, Measured};
use common::report::{count, ms, percent};
use common::server::{Api, Server, Start};
use common::system::{env_or, load_average, pairs};
use proxy::Proxy;

/// Long enough for a loaded machine; polls end as soon as the condition holds.
const SETUP_DEADLINE: Duration = Duration::from_secs(120);

/// One pair of instances to measure: its label, whether on PostgreSQL, and extra server environment.
type Target = (String, bool, Vec<(String, String)>);

struct Settings {
    seconds: u64,
    units: usize,
    rates: Vec<u64>,
    scenarios: Vec<String>,
    targets: Vec<Target>,
    bin: PathBuf,
    server_env: Vec<(String, String)>,
    postgres: String,
    inflight: u16,
    drain: Duration,
    tail: Duration,
    client_threads: usize,
}

impl Settings {
    fn from_env() -> Self {
        let targets = env_or("PEPEUNIT_BENCH_TARGETS", "sqlite".to_owned())
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|item| {
                let (name, extra) = match item.split_once('[') {
                    Some((name, rest)) => (name.trim(), pairs(rest.trim_end_matches(']'))),
                    None => (item, Vec::new()),
                };
                let postgres = match name {
                    "sqlite" => false,
                    "postgres" | "postgresql" => true,
                    other => panic!("PEPEUNIT_BENCH_TARGETS: unknown target {other:?}"),
                };
                let mut label = if postgres { "PostgreSQL" } else { "SQLite" }.to_owned();
                for (k, v) in &extra {
                    label.push_str(&format!(", {k}={v}"));
                }
                (label, postgres, extra)
            })
            .collect();
        Self {
            seconds: env_or("PEPEUNIT_BENCH_SECONDS", 10u64).max(1),
            units: env_or("PEPEUNIT_BENCH_UNITS", 100usize).max(1),
            rates: env_or("PEPEUNIT_BENCH_RATES", "1000,10000,20000".to_owned())
                .split(',')
                .filter_map(|r| r.trim().parse().ok())
                .filter(|r| *r > 0)
                .collect(),
            scenarios: env_or("PEPEUNIT_BENCH_SCENARIOS", "flat-out,latency".to_owned())
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            targets,
            bin: PathBuf::from(env_or(
                "PEPEUNIT_BENCH_BIN",
                env!("CARGO_BIN_EXE_pepeunit").to_owned(),
            )),
            server_env: pairs(&env_or("PEPEUNIT_BENCH_SERVER_ENV", String::new())),
            postgres: env_or(
                "PEPEUNIT_BENCH_POSTGRES",
                "postgres://postgres@127.0.0.1:5432".to_owned(),
            ),
            inflight: env_or("PEPEUNIT_BENCH_INFLIGHT", 100u16).max(1),
            drain: Duration::from_secs(env_or("PEPEUNIT_BENCH_DRAIN_SECONDS", 15u64)),
            tail: Duration::from_secs(env_or("PEPEUNIT_BENCH_TAIL_SECONDS", 30u64)),
            client_threads: env_or("PEPEUNIT_BENCH_CLIENT_THREADS", 2usize).max(1),
        }
    }

    fn wants(&self, scenario: &str) -> bool {
        self.scenarios.iter().any(|s| s == scenario)
    }
}

/// One instance: the server, the proxy that is its public address, and its admin.
struct Instance {
    server: Server,
    proxy: Proxy,
    admin: Api,
}

impl Instance {
    async fn start(
        settings: &Settings,
        postgres: bool,
        extra: &[(String, String)],
        name: &str,
    ) -> Self {
        let mut proxy = Proxy::bind().await;
        // Local remotes (loopback, plain http) are allowed for the run; the per-unit publish budgets are
        // off, as 100 units flat out are far over the default 100 messages/s each; the set-up's GraphQL
        // calls (the first makes the instance's key pair) may take long on a busy machine.
        let mut env: Vec<(String, String)> = [
            ("PEPEUNIT_ALLOW_LOCAL_REMOTES", "true"),
            ("PEPEUNIT_GRAPHQL_TIME_BUDGET_MS", "120000"),
            ("PEPEUNIT_MQTT_PUBLISH_RATE", "0"),
            ("PEPEUNIT_MQTT_PUBLISH_BYTES_PER_SECOND", "0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        env.extend(settings.server_env.iter().cloned());
        env.extend(extra.iter().cloned());
        let database = format!("pepeunit_fedbench_{}_{name}", std::process::id());
        let server = Server::start(Start {
            bin: &settings.bin,
            env: &env,
            postgres: postgres.then_some((settings.postgres.as_str(), database)),
            public_url: Some(format!("http://localhost:{}", proxy.port)),
        })
        .await;
        proxy.forward_to(server.http);
        let admin = server.admin().await;
        admin
            .gql(
                "mutation { updateInstanceSettings(input: { federationEnabled: true }) { federationEnabled } }",
                json!({}),
            )
            .await;
        // The first federation request makes the instance's key pair; made here, it does not count
        // against the other instance's request timeout when the two are peered.
        let actor = admin
            .http
            .get(format!("http://127.0.0.1:{}/federation/actor", server.http))
            .send()
            .await
            .unwrap();
        assert!(actor.status().is_success(), "{}", actor.status());
        Self {
            server,
            proxy,
            admin,
        }
    }

    fn domain(&self) -> String {
        format!("localhost:{}", self.proxy.port)
    }

    /// Bytes through this instance's proxy: (requests, answers).
    fn bytes(&self) -> (u64, u64) {
        let (up, down, _) = self.proxy.counted.snapshot();
        (up, down)
    }
}

/// Polls `probe` until it gives `Some`; panics after [`SETUP_DEADLINE`] with `what`.
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            started.elapsed() < SETUP_DEADLINE,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Two peered instances: `units` units on B, each output linked into the input of one unit on A.
struct Pair {
    a: Instance,
    b: Instance,
    publishers: Vec<Identity>,
    subscriber: Identity,
    mirror_topics: Vec<String>,
}

async fn set_up(settings: &Settings, postgres: bool, extra: &[(String, String)]) -> Pair {
    let started = Instant::now();
    let a = Instance::start(settings, postgres, extra, "a").await;
    let b = Instance::start(settings, postgres, extra, "b").await;
    let (a_domain, b_domain) = (a.domain(), b.domain());
    a.admin
        .gql(
            "mutation($a: String!) { requestPeering(address: $a) { status } }",
            json!({ "a": format!("http://{b_domain}") }),
        )
        .await;
    b.admin
        .gql(
            "mutation($d: String!) { acceptPeering(domain: $d) { status } }",
            json!({ "d": a_domain }),
        )
        .await;
    eventually("A to see the peering accepted", || async {
        let peers = a
            .admin
            .gql("{ federationPeers { domain status } }", json!({}))
            .await;
        peers["federationPeers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["domain"] == b_domain.as_str() && p["status"] == "accepted")
            .then_some(())
    })
    .await;

    // B's units, A's subscriber unit, and a link from each of B's outputs into its input, by uuid.
    let repo_b = b.admin.firmware(b.server.dir.path()).await;
    let repo_a = a.admin.firmware(a.server.dir.path()).await;
    let subscriber = a
        .admin
        .create_unit(&repo_a, "bench subscriber".into(), false)
        .await;
    let gate = Arc::new(Semaphore::new(4));
    let (a_admin, b_admin) = (Arc::new(a.admin), Arc::new(b.admin));
    let mut tasks = Vec::new();
    for i in 0..settings.units {
        let (a_admin, b_admin, gate, repo_b, input, domain) = (
            a_admin.clone(),
            b_admin.clone(),
            gate.clone(),
            repo_b.clone(),
            subscriber.input.clone(),
            b_domain.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.unwrap();
            let unit = b_admin.create_unit(&repo_b, format!("bench {i}"), false).await;
            a_admin
                .gql(
                    "mutation($u: String!, $i: ID!) { linkRemoteOutput(unit: $u, output: \"out/pepeunit\", inputUuid: $i) { uuid } }",
                    json!({ "u": format!("{}@{domain}", unit.who.id), "i": input }),
                )
                .await;
            unit.who
        }));
    }
    let mut publishers = Vec::new();
    for task in tasks {
        publishers.push(task.await.unwrap());
    }
    let a_admin = Arc::into_inner(a_admin).unwrap();
    let b_admin = Arc::into_inner(b_admin).unwrap();
    let units = settings.units;
    let mirror_topics = eventually("every follow accepted, with its mirror", || async {
        let remote = a_admin
            .gql(
                "{ remoteUnits { status outputs { name topic } } }",
                json!({}),
            )
            .await;
        let remote = remote["remoteUnits"].as_array().unwrap().clone();
        let accepted: Vec<String> = remote
            .iter()
            .filter(|r| r["status"] == "accepted")
            .flat_map(|r| r["outputs"].as_array().cloned().unwrap_or_default())
            .filter(|o| o["name"] == "out/pepeunit")
            .map(|o| o["topic"].as_str().unwrap().to_owned())
            .collect();
        (accepted.len() == units).then_some(accepted)
    })
    .await;
    eventually("B to list A as the follower of every unit", || async {
        let followers = b_admin
            .gql("{ federationFollowers { unitUuid } }", json!({}))
            .await;
        (followers["federationFollowers"].as_array().unwrap().len() == units).then_some(())
    })
    .await;
    eprintln!(
        "  peered; {units} units on B linked into a unit on A in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Pair {
        a: Instance {
            server: a.server,
            proxy: a.proxy,
            admin: a_admin,
        },
        b: Instance {
            server: b.server,
            proxy: b.proxy,
            admin: b_admin,
        },
        publishers,
        subscriber: subscriber.who,
        mirror_topics,
    }
}

impl Pair {
    /// Every publisher at `pace`, the subscriber on A; with the bytes the instances sent each other.
    async fn measure(
        &self,
        pace: Pace,
        seconds: u64,
        settings: &Settings,
        epoch: Instant,
        tail: Duration,
    ) -> (Measured, u64) {
        let before = (self.a.bytes(), self.b.bytes());
        let m = Load {
            port: self.b.server.mqtt,
            publishers: self.publishers.iter().map(|p| (p.clone(), pace)).collect(),
            subscriber: Some((
                self.a.server.mqtt,
                self.subscriber.clone(),
                self.mirror_topics.clone(),
            )),
            watch: vec![self.a.server.pid, self.b.server.pid],
            seconds,
            drain: settings.drain,
            inflight: settings.inflight,
            tail,
        }
        .run(epoch)
        .await;
        let after = (self.a.bytes(), self.b.bytes());
        let wire = (after.0.0 - before.0.0)
            + (after.0.1 - before.0.1)
            + (after.1.0 - before.1.0)
            + (after.1.1 - before.1.1);
        (m, wire)
    }

    /// Paced publishes until a value of every unit has reached A: B's outbox knows every follower.
    async fn warm_up(&self, settings: &Settings, epoch: Instant) {
        let pace = Pace {
            qos: QoS::AtLeastOnce,
            rate: Some(2.0),
            bytes: 0,
            reconnect: false,
        };
        let started = Instant::now();
        loop {
            let (m, _) = self
                .measure(pace, 1, settings, epoch, Duration::from_secs(10))
                .await;
            let reached = m
                .received
                .as_ref()
                .map_or(0, |r| r.seqs.iter().filter(|s| s.len() > 0).count());
            if reached == self.publishers.len() {
                eprintln!("  warmed up in {:.1} s", started.elapsed().as_secs_f64());
                return;
            }
            assert!(
                started.elapsed() < SETUP_DEADLINE,
                "values of only {reached} of {} units reached A during the warm-up\nA: {}\nB: {}",
                self.publishers.len(),
                self.a.server.log(),
                self.b.server.log()
            );
        }
    }

    async fn stop(self) {
        self.a.server.stop().await;
        self.b.server.stop().await;
    }
}

/// Latencies from the PUBACK on B to the delivery on A, µs, and how many arrived before their PUBACK
/// (counted as 0: the value was stored and sent on while the PUBACK was on its way).
fn puback_to_delivery(m: &Measured) -> (Vec<u32>, u64) {
    let Some(received) = &m.received else {
        return (Vec::new(), 0);
    };
    let mut early = 0;
    let latencies = received
        .arrivals
        .iter()
        .filter_map(|&(index, seq, at)| {
            let acked = *m.sent.get(index as usize)?.ack_at.get(seq as usize)?;
            if acked == 0 {
                return None;
            }
            if at < acked {
                early += 1;
            }
            Some(at.saturating_sub(acked).min(u64::from(u32::MAX)) as u32)
        })
        .collect();
    (latencies, early)
}

/// Publishers whose newest acknowledged value reached A.
fn newest_delivered(m: &Measured) -> usize {
    let Some(received) = &m.received else {
        return 0;
    };
    m.sent
        .iter()
        .enumerate()
        .filter(|(i, s)| {
            let newest = s.ack_at.iter().rposition(|&at| at != 0);
            match (newest, received.seqs.get(*i)) {
                (None, _) => true,
                (Some(seq), Some(got)) => {
                    let mut probe = common::load::Seqs::default();
                    probe.insert(seq as u64);
                    probe.missing_from(got) == 0
                }
                (Some(_), None) => false,
            }
        })
        .count()
}

fn resources(m: &Measured, wire: u64, delivered: u64) -> Vec<String> {
    let cpu = |i: usize| m.cpu.get(i).map_or("–".into(), |c| format!("{c:.0}%"));
    let rss = |i: usize| {
        m.rss_max
            .get(i)
            .map_or("–".into(), |r| format!("{} MiB", r / 1024))
    };
    vec![
        cpu(0),
        rss(0),
        cpu(1),
        rss(1),
        format!("{:.0}%", m.client_cpu),
        if delivered == 0 {
            "–".into()
        } else {
            format!("{:.0} B", wire as f64 / delivered as f64)
        },
        m.load1.clone(),
    ]
}

fn notes(label: &str, scenario: &str, m: &Measured, early: u64, out: &mut Vec<String>) {
    if !m.connect_failures.is_empty() {
        out.push(format!(
            "{label}, {scenario}: {} clients failed to connect (first: {})",
            m.connect_failures.len(),
            m.connect_failures[0]
        ));
    }
    if let Some(error) = &m.subscriber_error {
        out.push(format!("{label}, {scenario}: subscriber failed: {error}"));
    }
    if let Some(r) = &m.received {
        if r.denied > 0 || r.granted_qos0 > 0 {
            out.push(format!(
                "{label}, {scenario}: subscriptions refused {}, granted QoS 0 {}",
                r.denied, r.granted_qos0
            ));
        }
        if let Some(error) = &r.error {
            out.push(format!("{label}, {scenario}: subscriber: {error}"));
        }
        if r.duplicates > 0 {
            out.push(format!(
                "{label}, {scenario}: {} duplicate deliveries",
                count(r.duplicates)
            ));
        }
    }
    if early > 0 {
        out.push(format!(
            "{label}, {scenario}: {} deliveries arrived before the PUBACK reached the publisher (counted as 0 ms)",
            count(early)
        ));
    }
    let cut: u32 = m.sent.iter().map(|s| s.disconnects).sum();
    if cut > 0 {
        let first = m
            .sent
            .iter()
            .find_map(|s| s.last_error.clone())
            .unwrap_or_default();
        out.push(format!(
            "{label}, {scenario}: publishers were disconnected {cut} times (e.g. {first})"
        ));
    }
}

const RESOURCE_COLUMNS: &str =
    " A CPU | A RSS | B CPU | B RSS | client CPU | bytes on the wire / value | load |";

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
    let mut flat_rows = Vec::new();
    let mut paced_rows: Vec<(u64, String)> = Vec::new();
    let mut notes_out = Vec::new();
    for (label, postgres, extra) in &settings.targets {
        eprintln!("{label}: starting two instances (load {})", load_average());
        let pair = set_up(&settings, *postgres, extra).await;
        pair.warm_up(&settings, epoch).await;
        if settings.wants("flat-out") {
            eprintln!("  flat out (load {})", load_average());
            let pace = Pace {
                qos: QoS::AtLeastOnce,
                rate: None,
                bytes: 0,
                reconnect: false,
            };
            let (m, wire) = pair
                .measure(pace, settings.seconds, &settings, epoch, settings.tail)
                .await;
            let n = m.sent.len();
            let acked = m.acked(0..n);
            let received = m.received.as_ref();
            let delivered = received.map_or(0, |r| r.seqs.iter().map(|s| s.len()).sum::<u64>());
            let window_end = m.started_us + settings.seconds * 1_000_000;
            let during = received.map_or(0, |r| {
                r.arrivals
                    .iter()
                    .filter(|a| a.2 >= m.started_us && a.2 < window_end)
                    .count() as u64
            });
            let last = received
                .and_then(|r| r.arrivals.iter().map(|a| a.2).max())
                .unwrap_or(m.started_us);
            let span = last.saturating_sub(m.started_us);
            let (mut latency, early) = puback_to_delivery(&m);
            notes(label, "flat out", &m, early, &mut notes_out);
            let mut cells = vec![
                format!(
                    "{} /s",
                    count((acked as f64 / m.publish_seconds.max(settings.seconds as f64)) as u64)
                ),
                format!("{} /s", count(during / settings.seconds)),
                format!(
                    "{} /s over {:.1} s",
                    count((delivered as f64 / (span as f64 / 1e6).max(1e-3)) as u64),
                    span as f64 / 1e6
                ),
                format!(
                    "{} / {} ({})",
                    count(delivered),
                    count(acked),
                    percent(delivered.min(acked), acked)
                ),
                format!("{} / {n}", newest_delivered(&m)),
                ms(quantile_ms(&mut latency, 0.5)),
                ms(quantile_ms(&mut latency, 0.99)),
            ];
            cells.extend(resources(&m, wire, delivered));
            flat_rows.push(format!("| {label} | {} |", cells.join(" | ")));
        }
        if settings.wants("latency") {
            for &rate in &settings.rates {
                eprintln!("  {rate} values/s (load {})", load_average());
                let pace = Pace {
                    qos: QoS::AtLeastOnce,
                    rate: Some(rate as f64 / units as f64),
                    bytes: 0,
                    reconnect: false,
                };
                let (mut m, wire) = pair
                    .measure(pace, settings.seconds, &settings, epoch, settings.tail)
                    .await;
                let n = m.sent.len();
                let (acked, sent) = (m.acked(0..n), m.sent_total(0..n));
                let mut ack_latency = m.ack_latency(0..n);
                let (mut latency, early) = puback_to_delivery(&m);
                notes(label, &format!("{rate}/s"), &m, early, &mut notes_out);
                let newest = newest_delivered(&m);
                let (delivered, publish_p99) = match m.received.as_mut() {
                    Some(r) => (
                        r.seqs.iter().map(|s| s.len()).sum::<u64>(),
                        quantile_ms(&mut r.latency, 0.99),
                    ),
                    None => (0, None),
                };
                let mut cells = vec![
                    format!("{} /s", count(sent / settings.seconds)),
                    format!(
                        "{} / {} ({})",
                        count(delivered),
                        count(acked),
                        percent(delivered.min(acked), acked)
                    ),
                    format!("{newest} / {n}"),
                    ms(quantile_ms(&mut latency, 0.5)),
                    ms(quantile_ms(&mut latency, 0.99)),
                    ms(quantile_ms(&mut latency, 1.0)),
                    ms(publish_p99),
                    ms(quantile_ms(&mut ack_latency, 0.99)),
                ];
                cells.extend(resources(&m, wire, delivered));
                paced_rows.push((rate, format!("| {label} | {} |", cells.join(" | "))));
            }
        }
        pair.stop().await;
    }

    println!(
        "Run {} UTC, {} cores, load average at start {load_at_start}; {} s per scenario, {units} units on B, client: {} runtime threads + 1 subscriber thread.",
        started_at.format("%Y-%m-%d %H:%M"),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        settings.seconds,
        settings.client_threads
    );
    println!("- server: `{}`", settings.bin.display());
    if !flat_rows.is_empty() {
        println!();
        println!(
            "### Flat out: {units} units on B publish QoS 1 (in-flight window {}), linked by uuid into a unit on A subscribed QoS 1 to the {units} mirrors",
            settings.inflight
        );
        println!();
        println!(
            "| instances | acknowledged on B | delivered on A while the load ran | delivered on A to the last | delivered / acknowledged | newest value of each output delivered | PUBACK → delivery p50 | p99 |{RESOURCE_COLUMNS}"
        );
        println!("{}|", "|---".repeat(15));
        for row in &flat_rows {
            println!("{row}");
        }
    }
    for &rate in &settings.rates {
        let rows: Vec<&String> = paced_rows
            .iter()
            .filter(|(r, _)| *r == rate)
            .map(|(_, row)| row)
            .collect();
        if rows.is_empty() {
            continue;
        }
        println!();
        println!(
            "### {} values/s: {units} units on B × {}/s, QoS 1 paced, into a unit on A",
            count(rate),
            rate as f64 / units as f64
        );
        println!();
        println!(
            "| instances | sent/s | delivered / acknowledged | newest value of each output delivered | PUBACK → delivery p50 | p99 | max | publish → delivery p99 | PUBACK p99 |{RESOURCE_COLUMNS}"
        );
        println!("{}|", "|---".repeat(16));
        for row in rows {
            println!("{row}");
        }
    }
    if !notes_out.is_empty() {
        println!();
        println!("Notes:");
        for note in notes_out {
            println!("- {note}");
        }
    }
}
