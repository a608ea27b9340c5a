//! The brokers under test, each started fresh by the bench: a `pepeunit` binary on SQLite or on a
//! PostgreSQL database created for the run (and dropped after), or a private Mosquitto on a free port.
//! For Pepeunit the publishers, the subscriber and the flooder are real units created through GraphQL,
//! the subscriber's input linked to every publisher's output; on Mosquitto they are plain clients on
//! topics of the same shape.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::alerts::{self, TelegramStub};
use crate::load::Identity;

const PASSWORD: &str = "a-long-admin-password";

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
    child: Option<Child>,
    database: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

impl Broker {
    /// Stops the broker and drops its PostgreSQL database.
    pub async fn stop(mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some((admin, name)) = self.database.take() {
            drop_database(&admin, &name).await;
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_for_port(port: u16, child: &mut Child, log: &Path) {
    for _ in 0..600 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "broker exited ({status}):\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("broker did not listen on {port} within 60 s");
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
        child: Some(child),
        database: None,
        _dir: dir,
    }
}

fn git(dir: &Path, args: &[&str]) {
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

fn pepeunit(bin: &Path, dir: &Path, env: &[(String, String)]) -> Command {
    let mut command = Command::new(bin);
    command
        .env_clear()
        .env("PEPEUNIT_DATA_DIR", dir.join("data"))
        .env("PEPEUNIT_LOG_LEVEL", "warn")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null());
    command
}

async fn admin_execute(admin: &str, sql: &str) {
    let db = Database::connect(admin)
        .await
        .unwrap_or_else(|e| panic!("connecting to PostgreSQL at {admin}: {e}"));
    db.execute_unprepared(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let _ = db.close().await;
}

async fn drop_database(admin: &str, name: &str) {
    let db = match Database::connect(admin).await {
        Ok(db) => db,
        Err(error) => {
            eprintln!("dropping database {name}: {error}");
            return;
        }
    };
    if let Err(error) = db
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
    {
        eprintln!("dropping database {name}: {error}");
    }
    let _ = db.close().await;
}

/// `postgres://user@host:port[/any][?query]` with the database `name` put in.
fn with_database(base: &str, name: &str) -> String {
    let (base, query) = base.split_once('?').unwrap_or((base, ""));
    let (scheme, rest) = base.split_once("://").unwrap_or(("postgres", base));
    let authority = rest.split('/').next().unwrap_or(rest);
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    format!("{scheme}://{authority}/{name}{query}")
}

async fn start_pepeunit(
    spec: &Spec,
    publishers: usize,
    postgres: &str,
    run: usize,
    alert_rules: usize,
) -> Broker {
    let (bin, _) = spec.bin.clone().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A target's own `[PEPEUNIT_BENCH_ALERT_RULES=N]` is the bench's, not the server's.
    let rules = spec
        .env
        .iter()
        .find(|(k, _)| k == alerts::SETTING)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(alert_rules);
    let mut env: Vec<(String, String)> = spec
        .env
        .iter()
        .filter(|(k, _)| k != alerts::SETTING)
        .cloned()
        .collect();
    let stub = if rules > 0 {
        let stub = TelegramStub::start().await;
        env.extend(alerts::server_env(&stub, rules));
        Some(stub)
    } else {
        None
    };
    let mut database = None;
    if let Kind::Postgres = spec.kind {
        let name = format!("pepeunit_bench_{}_{run}", std::process::id());
        let admin = with_database(postgres, "postgres");
        admin_execute(&admin, &format!("DROP DATABASE IF EXISTS {name}")).await;
        admin_execute(&admin, &format!("CREATE DATABASE {name}")).await;
        env.push((
            "PEPEUNIT_DATABASE_URL".into(),
            with_database(postgres, &name),
        ));
        database = Some((admin, name));
    }
    let out = pepeunit(&bin, dir.path(), &env)
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
        .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()));
    assert!(
        out.status.success(),
        "admin create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (http, mqtt) = (free_port(), free_port());
    let log = dir.path().join("server.log");
    let mut child = pepeunit(&bin, dir.path(), &env)
        .arg("serve")
        .env("PEPEUNIT_HTTP_BIND", format!("127.0.0.1:{http}"))
        .env("PEPEUNIT_MQTT_BIND", format!("127.0.0.1:{mqtt}"))
        .env("PEPEUNIT_PUBLIC_URL", format!("http://127.0.0.1:{http}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_for_port(mqtt, &mut child, &log).await;
    wait_for_port(http, &mut child, &log).await;
    let pid = child.id();
    let mut broker = Broker {
        port: mqtt,
        pid: Some(pid),
        publishers: Vec::new(),
        subscriber: Identity {
            id: String::new(),
            token: None,
            topic: String::new(),
        },
        flooder: Identity {
            id: String::new(),
            token: None,
            topic: String::new(),
        },
        alerts: None,
        child: Some(child),
        database,
        _dir: dir,
    };
    let outputs = provision(&mut broker, http, publishers).await;
    if let Some(stub) = stub {
        let probe = provision_alerts(&broker, http, &stub, &outputs, rules).await;
        broker.alerts = Some((stub, probe));
    }
    broker
}

struct Api {
    http: reqwest::Client,
    url: String,
    token: Option<String>,
}

impl Api {
    async fn gql(&self, query: &str, variables: Value) -> Value {
        let mut request = self
            .http
            .post(&self.url)
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let body: Value = request.send().await.unwrap().json().await.unwrap();
        assert!(body["errors"].is_null(), "{query}: {body}");
        body["data"].clone()
    }
}

/// One created unit: its identity for publishing, and its output and input node ids.
struct Created {
    who: Identity,
    output: String,
    input: String,
}

async fn create_unit(api: &Api, repo: &Value, name: String, window: bool) -> Created {
    let unit = api.gql("mutation($r: ID!, $n: String!) { createUnit(input: { repoUnitUuid: $r, name: $n }) { uuid env nodes { uuid topicName topic } } }", json!({ "r": repo, "n": name }))
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
    let ((output, output_topic), (input, _)) = (node("out/pepeunit"), node("in/pepeunit"));
    if window {
        // Every value kept as history for an hour: each PUBACK stands for a last value and a history row.
        api.gql("mutation($n: ID!) { updateUnitNode(uuid: $n, input: { historyKind: WINDOW, historyWindowSeconds: 3600 }) { uuid } }", json!({ "n": output })).await;
    }
    Created {
        who: Identity {
            id: unit["uuid"].as_str().unwrap().to_owned(),
            token: Some(unit["env"]["PU_AUTH_TOKEN"].as_str().unwrap().to_owned()),
            topic: output_topic,
        },
        output,
        input,
    }
}

/// The admin's API session.
async fn login(http: u16) -> Api {
    let mut api = Api {
        http: reqwest::Client::new(),
        url: format!("http://127.0.0.1:{http}/graphql"),
        token: None,
    };
    let token = api
        .gql(
            "mutation($p: String!) { login(login: \"root\", password: $p) { accessToken } }",
            json!({ "p": PASSWORD }),
        )
        .await["login"]["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    api.token = Some(token);
    api
}

/// Links the admin's chat to the bot and creates `rules` rules: the probe unit's `ABOVE 50`, the rest
/// spread over `outputs` (a few requests at a time); returns the probe unit.
async fn provision_alerts(
    broker: &Broker,
    http: u16,
    stub: &TelegramStub,
    outputs: &[String],
    rules: usize,
) -> Identity {
    let started = std::time::Instant::now();
    let api = Arc::new(login(http).await);
    let code = api
        .gql("mutation { createTelegramLinkCode { code } }", json!({}))
        .await["createTelegramLinkCode"]["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let linked = stub.ask(alerts::CHAT, &format!("/start {code}")).await;
    assert!(linked.starts_with("Linked"), "{linked}");
    let repo = api.gql("{ repoUnits { uuid } }", json!({})).await["repoUnits"][0]["uuid"].clone();
    let probe = create_unit(&api, &repo, "bench probe".into(), false).await;
    let rule = "mutation($i: CreateAlertRuleInput!) { createAlertRule(input: $i) { uuid } }";
    api.gql(
        rule,
        json!({ "i": { "kind": "ABOVE", "nodeUuid": probe.output, "threshold": alerts::THRESHOLD } }),
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
                json!({ "i": { "kind": "ABOVE", "nodeUuid": node, "threshold": 1.0e9 + i as f64 } }),
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
async fn provision(broker: &mut Broker, http: u16, count: usize) -> Vec<String> {
    let repo_dir = broker._dir.path().join("firmware");
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
    let api = login(http).await;
    let url = format!("file://{}", repo_dir.display());
    let repo = api
        .gql(
            "mutation($u: String!) { createRepoUnit(input: { name: \"bench\", cloneUrl: $u }) { uuid } }",
            json!({ "u": url }),
        )
        .await["createRepoUnit"]["uuid"]
        .clone();
    let api = Arc::new(api);
    let gate = Arc::new(Semaphore::new(4));
    let started = std::time::Instant::now();

    let subscriber = create_unit(&api, &repo, "bench subscriber".into(), false).await;
    let flooder = create_unit(&api, &repo, "bench flooder".into(), true).await;
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
            let unit = create_unit(&api, &repo, format!("bench {i}"), true).await;
            api.gql(
                "mutation($o: ID!, $i: ID!) { createLink(outputUuid: $o, inputUuid: $i) { uuid } }",
                json!({ "o": unit.output, "i": input }),
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
