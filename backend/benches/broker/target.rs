//! The brokers under test, each started fresh by the bench: a `pepeunit` binary on SQLite or on a
//! PostgreSQL database created for the run (and dropped after), or a private Mosquitto on a free port.
//! For Pepeunit the publishers, the subscriber and the flooder are real units created through GraphQL,
//! the subscriber's input linked to every publisher's output; on Mosquitto they are plain clients on
//! topics of the same shape.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::alerts::{self, TelegramStub};
use crate::common::load::Identity;
use crate::common::server::{Server, Start, free_port, wait_for_port};

/// Which broker, with the environment added to the server's for this target.
#[derive(Clone, Debug)]
pub enum Kind {
    Sqlite,
    Postgres,
    Mosquitto,
}

/// One broker to measure.
#[derive(Clone, Debug)]
pub struct Spec {
    pub kind: Kind,
    /// For Pepeunit: the binary and its name in the tables ("after"/"before").
    pub bin: Option<(PathBuf, String)>,
    pub env: Vec<(String, String)>,
    /// The entry of `PEPEUNIT_BENCH_TARGETS` it came from: "before" and "after" of one entry share it.
    pub group: usize,
}

impl Spec {
    pub fn label(&self) -> String {
        let mut label = match self.kind {
            Kind::Sqlite => "Pepeunit, SQLite".to_owned(),
            Kind::Postgres => "Pepeunit, PostgreSQL".to_owned(),
            Kind::Mosquitto => "Mosquitto".to_owned(),
        };
        for (k, v) in &self.env {
            label.push_str(&format!(", {k}={v}"));
        }
        if let Some((_, name)) = self.bin.as_ref().filter(|(_, n)| !n.is_empty()) {
            label.push_str(&format!(" ({name})"));
        }
        label
    }
}

/// A running broker with its clients' identities.
pub struct Broker {
    pub port: u16,
    pub pid: Option<u32>,
    pub publishers: Vec<Identity>,
    pub subscriber: Identity,
    pub flooder: Identity,
    /// With alert rules: the Bot API stub the server's bot talks to, and the probe unit.
    pub alerts: Option<(TelegramStub, Identity)>,
    process: Process,
}

enum Process {
    Pepeunit(Server),
    Mosquitto(Mosquitto),
}

/// A Mosquitto process, killed when dropped, and its configuration directory.
struct Mosquitto {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Broker {
    /// Stops the broker and drops its PostgreSQL database.
    pub async fn stop(self) {
        match self.process {
            Process::Pepeunit(server) => server.stop().await,
            Process::Mosquitto(mosquitto) => drop(mosquitto),
        }
    }
}

/// Starts `spec`'s broker and prepares `publishers` publishing clients, one subscriber and one flooder.
pub async fn start(
    spec: &Spec,
    publishers: usize,
    postgres: &str,
    mosquitto_bin: &str,
    run: usize,
    alert_rules: usize,
) -> Broker {
    match &spec.kind {
        Kind::Mosquitto => {
            // Extra configuration lines, given like server settings: `mosquitto[max_queued_messages=0]`.
            let extra: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k} {v}")).collect();
            start_mosquitto(mosquitto_bin, publishers, &extra).await
        }
        Kind::Sqlite | Kind::Postgres => {
            start_pepeunit(spec, publishers, postgres, run, alert_rules).await
        }
    }
}

async fn start_mosquitto(bin: &str, publishers: usize, extra: &[String]) -> Broker {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = dir.path().join("mosquitto.conf");
    // Mosquitto's defaults otherwise (max_inflight_messages 20, max_queued_messages 1000), as installed,
    // unless the target adds lines.
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\nlog_type error\nmax_connections -1\n{}\n",
            extra.join("\n")
        ),
    )
    .unwrap();
    let log = dir.path().join("mosquitto.log");
    let mut child = Command::new(bin)
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
    wait_for_port(port, &mut child, &log).await;
    let client = |id: String, topic: String| Identity {
        id,
        token: None,
        topic,
    };
    Broker {
        port,
        pid: Some(child.id()),
        publishers: (0..publishers)
            .map(|i| {
                client(
                    format!("bench-pub-{i}"),
                    format!("bench/output/{i:05}/pepeunit"),
                )
            })
            .collect(),
        subscriber: client("bench-sub".into(), String::new()),
        flooder: client("bench-flood".into(), "bench/flood/pepeunit".into()),
        alerts: None,
        process: Process::Mosquitto(Mosquitto { child, _dir: dir }),
    }
}

async fn start_pepeunit(
    spec: &Spec,
    publishers: usize,
    postgres: &str,
    run: usize,
    alert_rules: usize,
) -> Broker {
    let (bin, _) = spec.bin.clone().unwrap();
    // A target's own `[PEPEUNIT_BENCH_ALERT_RULES=N]` is the bench's, not the server's.
    let rules = spec
        .env
        .iter()
        .find(|(k, _)| k == alerts::SETTING)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(alert_rules);
    // As is `[PEPEUNIT_BENCH_PROCESSING=1]`.
    let processing = spec.env.iter().any(|(k, v)| k == PROCESSING && v != "0");
    let mut env: Vec<(String, String)> = spec
        .env
        .iter()
        .filter(|(k, _)| k != alerts::SETTING && k != PROCESSING)
        .cloned()
        .collect();
    let stub = if rules > 0 {
        let stub = TelegramStub::start().await;
        env.extend(alerts::server_env(&stub, rules));
        Some(stub)
    } else {
        None
    };
    let name = format!("pepeunit_bench_{}_{run}", std::process::id());
    let server = Server::start(Start {
        bin: &bin,
        env: &env,
        postgres: matches!(spec.kind, Kind::Postgres).then_some((postgres, name)),
        public_url: None,
    })
    .await;
    let nobody = || Identity {
        id: String::new(),
        token: None,
        topic: String::new(),
    };
    let mut broker = Broker {
        port: server.mqtt,
        pid: Some(server.pid),
        publishers: Vec::new(),
        subscriber: nobody(),
        flooder: nobody(),
        alerts: None,
        process: Process::Pepeunit(server),
    };
    let outputs = provision(&mut broker, publishers).await;
    if processing {
        provision_processing(&broker, &outputs).await;
    }
    if let Some(stub) = stub {
        let probe = provision_alerts(&broker, &stub, &outputs, rules).await;
        broker.alerts = Some((stub, probe));
    }
    broker
}

/// A target's setting (taken by the bench, not passed to the server): every publisher's output keeps a
/// direct log (its last 1,000 values) and three aggregate series (1 minute, 1 hour, 1 day).
pub const PROCESSING: &str = "PEPEUNIT_BENCH_PROCESSING";

/// Gives every output of `outputs` the processing of [`PROCESSING`].
async fn provision_processing(broker: &Broker, outputs: &[String]) {
    let Process::Pepeunit(server) = &broker.process else {
        unreachable!("processing is set on Pepeunit only");
    };
    let api = Arc::new(server.admin().await);
    let gate = Arc::new(Semaphore::new(4));
    let mut tasks = Vec::new();
    for output in outputs {
        let (api, gate, output) = (api.clone(), gate.clone(), output.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.unwrap();
            api.gql(
                "mutation($n: ID!) { updateUnitNode(uuid: $n, input: { historyKind: LAST_N, historyLimit: 1000,
                    processing: { windows: [{ seconds: 60 }, { seconds: 3600 }, { seconds: 86400 }] } }) { uuid } }",
                serde_json::json!({ "n": output }),
            )
            .await;
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    eprintln!(
        "  gave {} outputs a direct log and 3 aggregate windows",
        outputs.len()
    );
}

/// Links the admin's chat to the bot and creates `rules` rules: the probe unit's `ABOVE` threshold, the
/// rest spread over `outputs` (a few requests at a time); returns the probe unit.
async fn provision_alerts(
    broker: &Broker,
    stub: &TelegramStub,
    outputs: &[String],
    rules: usize,
) -> Identity {
    let Process::Pepeunit(server) = &broker.process else {
        unreachable!("alert rules are made on Pepeunit only");
    };
    let started = std::time::Instant::now();
    let api = Arc::new(server.admin().await);
    let code = api
        .gql(
            "mutation { createTelegramLinkCode { code } }",
            serde_json::json!({}),
        )
        .await["createTelegramLinkCode"]["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let linked = stub.ask(alerts::CHAT, &format!("/start {code}")).await;
    assert!(linked.starts_with("Linked"), "{linked}");
    let repo = api
        .gql("{ repoUnits { uuid } }", serde_json::json!({}))
        .await["repoUnits"][0]["uuid"]
        .clone();
    let probe = api.create_unit(&repo, "bench probe".into(), false).await;
    let rule = "mutation($i: CreateAlertRuleInput!) { createAlertRule(input: $i) { uuid } }";
    api.gql(
        rule,
        serde_json::json!({ "i": { "kind": "ABOVE", "nodeUuid": probe.output, "threshold": alerts::THRESHOLD } }),
    )
    .await;
    let gate = Arc::new(Semaphore::new(4));
    let mut tasks = Vec::new();
    for i in 1..rules {
        let (api, gate) = (api.clone(), gate.clone());
        let node = outputs[i % outputs.len()].clone();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.unwrap();
            api.gql(
                rule,
                serde_json::json!({ "i": { "kind": "ABOVE", "nodeUuid": node, "threshold": 1.0e9 + i as f64 } }),
            )
            .await;
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    eprintln!(
        "  linked a chat and created {rules} alert rules in {:.1} s (broker pid {:?})",
        started.elapsed().as_secs_f64(),
        broker.pid
    );
    probe.who
}

/// Creates the units: `count` publishers, a subscriber whose input is linked to all their outputs, and a
/// flooder. A few requests at a time, as an admin script would. Returns the publishers' output node ids.
async fn provision(broker: &mut Broker, count: usize) -> Vec<String> {
    let Process::Pepeunit(server) = &broker.process else {
        return Vec::new();
    };
    let api = server.admin().await;
    let repo = api.firmware(server.dir.path()).await;
    let api = Arc::new(api);
    let gate = Arc::new(Semaphore::new(4));
    let started = std::time::Instant::now();

    let subscriber = api
        .create_unit(&repo, "bench subscriber".into(), false)
        .await;
    let flooder = api.create_unit(&repo, "bench flooder".into(), true).await;
    let mut tasks = Vec::new();
    for i in 0..count {
        let (api, repo, gate, input) = (
            api.clone(),
            repo.clone(),
            gate.clone(),
            subscriber.input.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.unwrap();
            let unit = api.create_unit(&repo, format!("bench {i}"), true).await;
            api.gql(
                "mutation($o: ID!, $i: ID!) { createLink(outputUuid: $o, inputUuid: $i) { uuid } }",
                serde_json::json!({ "o": unit.output, "i": input }),
            )
            .await;
            (unit.who, unit.output)
        }));
    }
    let mut outputs = Vec::new();
    for task in tasks {
        let (who, output) = task.await.unwrap();
        broker.publishers.push(who);
        outputs.push(output);
    }
    eprintln!(
        "  created {} units and {count} links in {:.1} s",
        count + 2,
        started.elapsed().as_secs_f64()
    );
    broker.subscriber = subscriber.who;
    broker.flooder = flooder.who;
    outputs
}
