//! Broker benchmark: `cargo bench -p pepeunit-backend --bench broker`.
//!
//! Starts the release `pepeunit` binary (SQLite in a temporary data dir) and measures, with real MQTT
//! clients over loopback:
//! - fan-in: N units publishing QoS 1 values to their outputs as fast as acknowledgements allow; every
//!   value is committed with history (a time-window policy) before its PUBACK;
//! - delivery: one unit's output linked to another's input, paced at a fixed rate, end-to-end latency.
//!
//! The same two loads run against the machine's Mosquitto (127.0.0.1:1883), which only passes messages
//! on. CPU and RSS are the broker process's own, read from /proc. Settings: PEPEUNIT_BENCH_UNITS (default
//! 50), PEPEUNIT_BENCH_SECONDS (10), PEPEUNIT_BENCH_RATE (5000 msg/s), PEPEUNIT_BENCH_MOSQUITTO (127.0.0.1:1883).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};

const PASSWORD: &str = "a-long-admin-password";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn git(dir: &std::path::Path, args: &[&str]) {
    let ok = Command::new("git")
        .args([
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@example.com",
        ])
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "git {args:?}");
}

/// CPU seconds and RSS (KiB) of a process.
fn usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (ticks / 100.0, rss)
}

struct Server {
    child: Child,
    http: u16,
    mqtt: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pepeunit(dir: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pepeunit"));
    command
        .env_clear()
        .env("PEPEUNIT_DATA_DIR", dir.join("data"))
        .env("PEPEUNIT_LOG_LEVEL", "warn")
        .stdin(Stdio::null());
    command
}

fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let out = pepeunit(dir.path())
        .args([
            "admin",
            "create",
            "--login",
            "root",
            "--email",
            "root@example.com",
        ])
        .env("PEPEUNIT_ADMIN_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (http, mqtt) = (free_port(), free_port());
    let child = pepeunit(dir.path())
        .env("PEPEUNIT_HTTP_BIND", format!("127.0.0.1:{http}"))
        .env("PEPEUNIT_MQTT_BIND", format!("127.0.0.1:{mqtt}"))
        .env("PEPEUNIT_PUBLIC_URL", format!("http://127.0.0.1:{http}"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    while std::net::TcpStream::connect(("127.0.0.1", mqtt)).is_err() {
        std::thread::sleep(Duration::from_millis(50));
    }
    Server {
        child,
        http,
        mqtt,
        _dir: dir,
    }
}

async fn gql(server: &Server, token: Option<&str>, query: &str, variables: Value) -> Value {
    let mut request = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/graphql", server.http))
        .json(&json!({ "query": query, "variables": variables }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let body: Value = request.send().await.unwrap().json().await.unwrap();
    assert!(body["errors"].is_null(), "{body}");
    body["data"].clone()
}

/// A unit's id, token and its output and input topics and node ids.
struct Unit {
    uuid: String,
    token: String,
    output: (String, String),
    input: (String, String),
}

async fn units(server: &Server, count: usize) -> Vec<Unit> {
    let repo_dir = server._dir.path().join("firmware");
    std::fs::create_dir_all(&repo_dir).unwrap();
    std::fs::write(repo_dir.join("env_example.json"), r#"{"WIFI_SSID": "x"}"#).unwrap();
    std::fs::write(
        repo_dir.join("schema_example.json"),
        r#"{"input_base_topic": ["update/pepeunit"], "output_base_topic": ["state/pepeunit"],
            "input_topic": ["in/pepeunit"], "output_topic": ["out/pepeunit"]}"#,
    )
    .unwrap();
    git(&repo_dir, &["init", "-q", "-b", "main"]);
    git(&repo_dir, &["add", "-A"]);
    git(&repo_dir, &["commit", "-q", "-m", "bench"]);
    let token = gql(
        server,
        None,
        "mutation($p: String!) { login(login: \"root\", password: $p) { accessToken } }",
        json!({ "p": PASSWORD }),
    )
    .await["login"]["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = format!("file://{}", repo_dir.display());
    let repo = gql(server, Some(&token), "mutation($u: String!) { createRepoUnit(input: { name: \"bench\", cloneUrl: $u }) { uuid } }", json!({ "u": url }))
        .await["createRepoUnit"]["uuid"].clone();
    let mut out = Vec::new();
    for i in 0..count {
        let unit = gql(server, Some(&token), "mutation($r: ID!, $n: String!) { createUnit(input: { repoUnitUuid: $r, name: $n }) { uuid env nodes { uuid topicName topic } } }", json!({ "r": repo, "n": format!("bench {i}") }))
            .await["createUnit"].clone();
        let node = |name: &str| {
            let n = unit["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|n| n["topicName"] == name)
                .unwrap();
            (
                n["uuid"].as_str().unwrap().to_owned(),
                n["topic"].as_str().unwrap().to_owned(),
            )
        };
        let (output, input) = (node("out/pepeunit"), node("in/pepeunit"));
        gql(server, Some(&token), "mutation($n: ID!) { updateUnitNode(uuid: $n, input: { historyKind: WINDOW, historyWindowSeconds: 3600 }) { uuid } }", json!({ "n": output.0 })).await;
        out.push(Unit {
            uuid: unit["uuid"].as_str().unwrap().to_owned(),
            token: unit["env"]["PU_AUTH_TOKEN"].as_str().unwrap().to_owned(),
            output,
            input,
        });
    }
    // Unit 1 listens to unit 0's output.
    gql(
        server,
        Some(&token),
        "mutation($o: ID!, $i: ID!) { createLink(outputUuid: $o, inputUuid: $i) { uuid } }",
        json!({ "o": out[0].output.0, "i": out[1].input.0 }),
    )
    .await;
    out
}

fn options(port: u16, id: &str, token: Option<&str>) -> MqttOptions {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    if let Some(token) = token {
        options.set_credentials(token, "");
    }
    options.set_inflight(100);
    options.set_keep_alive(Duration::from_secs(60));
    options.set_max_packet_size(1 << 20, 1 << 20);
    options
}

/// N clients publish QoS 1 to their topics for `seconds`; returns acknowledged publishes per second.
async fn fan_in(port: u16, clients: Vec<(String, Option<String>, String)>, seconds: u64) -> f64 {
    let acked = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for (id, token, topic) in clients {
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            let (client, mut events) = AsyncClient::new(options(port, &id, token.as_deref()), 200);
            let publisher = tokio::spawn(async move {
                let mut i = 0u64;
                while Instant::now() < deadline {
                    if client
                        .publish(&topic, QoS::AtLeastOnce, false, format!("{i}"))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    i += 1;
                }
                let _ = client.disconnect().await;
            });
            while let Ok(event) = events.poll().await {
                if let Event::Incoming(Packet::PubAck(_)) = event {
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                if Instant::now() > deadline + Duration::from_secs(2) {
                    break;
                }
            }
            publisher.abort();
        }));
    }
    let start = Instant::now();
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = start.elapsed().as_secs_f64().min(seconds as f64 + 2.0);
    acked.load(Ordering::Relaxed) as f64 / elapsed.max(seconds as f64)
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// One publisher at `rate` msg/s (QoS 0), one subscriber; end-to-end latency percentiles in ms.
async fn delivery(
    port: u16,
    publisher: (String, Option<String>, String),
    subscriber: (String, Option<String>, String),
    rate: u64,
    seconds: u64,
) -> (f64, f64, usize, usize) {
    let (sub, mut sub_events) =
        AsyncClient::new(options(port, &subscriber.0, subscriber.1.as_deref()), 1000);
    loop {
        if let Ok(Event::Incoming(Packet::ConnAck(_))) = sub_events.poll().await {
            break;
        }
    }
    sub.subscribe(&subscriber.2, QoS::AtMostOnce).await.unwrap();
    loop {
        if let Ok(Event::Incoming(Packet::SubAck(_))) = sub_events.poll().await {
            break;
        }
    }
    let receiver = tokio::spawn(async move {
        let mut latencies = Vec::new();
        let stop = Instant::now() + Duration::from_secs(seconds + 3);
        while Instant::now() < stop {
            match tokio::time::timeout(Duration::from_millis(500), sub_events.poll()).await {
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                    if let Ok(sent) = std::str::from_utf8(&p.payload).unwrap_or("").parse::<u64>() {
                        latencies.push(now_micros().saturating_sub(sent));
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(_)) => break,
                Err(_) => {}
            }
        }
        latencies
    });
    let (client, mut events) =
        AsyncClient::new(options(port, &publisher.0, publisher.1.as_deref()), 10_000);
    tokio::spawn(async move { while events.poll().await.is_ok() {} });
    let total = rate * seconds;
    let start = Instant::now();
    for i in 0..total {
        // Paced: message i leaves at i / rate seconds.
        let due = start + Duration::from_micros(i * 1_000_000 / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        client
            .publish(
                &publisher.2,
                QoS::AtMostOnce,
                false,
                now_micros().to_string(),
            )
            .await
            .unwrap();
    }
    let mut latencies = receiver.await.unwrap();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    (pct(0.5), pct(0.99), latencies.len(), total as usize)
}

#[tokio::main]
async fn main() {
    let count: usize = env_or("PEPEUNIT_BENCH_UNITS", 50);
    let seconds: u64 = env_or("PEPEUNIT_BENCH_SECONDS", 10);
    let rate: u64 = env_or("PEPEUNIT_BENCH_RATE", 5000);
    let mosquitto: String = env_or("PEPEUNIT_BENCH_MOSQUITTO", "127.0.0.1:1883".to_owned());

    let server = start();
    let units = units(&server, count.max(2)).await;
    let pid = server.child.id();
    let mut rows = Vec::new();

    let clients = units
        .iter()
        .map(|u| (u.uuid.clone(), Some(u.token.clone()), u.output.1.clone()))
        .collect();
    let (cpu0, _) = usage(pid);
    let started = Instant::now();
    let rps = fan_in(server.mqtt, clients, seconds).await;
    let (cpu1, rss) = usage(pid);
    let cpu = (cpu1 - cpu0) / started.elapsed().as_secs_f64() * 100.0;
    rows.push(format!("| Pepeunit fan-in, {count} units, QoS 1, stored with history before PUBACK | {rps:.0} values/s | – | – | {cpu:.0}% | {} MiB |", rss / 1024));

    let (cpu0, _) = usage(pid);
    let started = Instant::now();
    let (p50, p99, got, sent) = delivery(
        server.mqtt,
        (
            units[0].uuid.clone(),
            Some(units[0].token.clone()),
            units[0].output.1.clone(),
        ),
        (
            units[1].uuid.clone(),
            Some(units[1].token.clone()),
            units[0].output.1.clone(),
        ),
        rate,
        seconds,
    )
    .await;
    let (cpu1, rss) = usage(pid);
    let cpu = (cpu1 - cpu0) / started.elapsed().as_secs_f64() * 100.0;
    rows.push(format!("| Pepeunit output→input link, {rate} msg/s QoS 0 (routed at once, stored behind) | {got}/{sent} delivered | {p50:.2} ms | {p99:.2} ms | {cpu:.0}% | {} MiB |", rss / 1024));
    drop(server);

    let port: u16 = mosquitto
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(1883);
    if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        let mosquitto_pid = Command::new("pgrep")
            .arg("mosquitto")
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .and_then(|l| l.trim().parse::<u32>().ok())
            });
        let clients = (0..count)
            .map(|i| (format!("bench-pub-{i}"), None, format!("bench/fan-in/{i}")))
            .collect();
        let (cpu0, _) = mosquitto_pid.map(usage).unwrap_or_default();
        let started = Instant::now();
        let rps = fan_in(port, clients, seconds).await;
        let (cpu1, rss) = mosquitto_pid.map(usage).unwrap_or_default();
        let cpu = (cpu1 - cpu0) / started.elapsed().as_secs_f64() * 100.0;
        rows.push(format!("| Mosquitto fan-in, {count} clients, QoS 1, nothing stored | {rps:.0} msg/s | – | – | {cpu:.0}% | {} MiB |", rss / 1024));
        let (cpu0, _) = mosquitto_pid.map(usage).unwrap_or_default();
        let started = Instant::now();
        let (p50, p99, got, sent) = delivery(
            port,
            ("bench-pub".into(), None, "bench/link".into()),
            ("bench-sub".into(), None, "bench/link".into()),
            rate,
            seconds,
        )
        .await;
        let (cpu1, rss) = mosquitto_pid.map(usage).unwrap_or_default();
        let cpu = (cpu1 - cpu0) / started.elapsed().as_secs_f64() * 100.0;
        rows.push(format!("| Mosquitto pub/sub, {rate} msg/s | {got}/{sent} delivered | {p50:.2} ms | {p99:.2} ms | {cpu:.0}% | {} MiB |", rss / 1024));
    } else {
        rows.push(format!(
            "| Mosquitto at {mosquitto}: not reachable, skipped | | | | | |"
        ));
    }

    println!("| load | throughput | p50 | p99 | broker CPU | broker RSS |");
    println!("|---|---|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
}
