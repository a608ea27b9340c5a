//! The device agent against a real server: a real broker, real REST, the real `pepeunit-unit` binary
//! supervising a real Python program.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "../../backend/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::units::{Fixture, node};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

/// A program that says which version it is and echoes every input to its output.
fn program(version: &str) -> String {
    format!(
        r#"import json, sys
print(json.dumps({{"log": "program {version} started", "level": "Info"}}), flush=True)
print(json.dumps({{"output": "current_temp/pepeunit", "value": "{version}-started"}}), flush=True)
for line in sys.stdin:
    message = json.loads(line)
    print(json.dumps({{"output": "current_temp", "value": "{version}:" + message["value"]}}), flush=True)
"#
    )
}

const CRASHING: &str =
    "import sys\nprint('about to crash', file=sys.stderr, flush=True)\nsys.exit(3)\n";
const MANIFEST: &str =
    "[program]\ncommand = [\"python3\", \"-u\", \"main.py\"]\nhealth_seconds = 1\n";

struct Unit {
    fx: Fixture,
    uuid: String,
    home: tempfile::TempDir,
    agent: Option<tokio::process::Child>,
}

async fn unit() -> Unit {
    let fx = Fixture::new(|repo| {
        repo.write("main.py", program("v1"));
        repo.write("pepeunit.toml", MANIFEST);
        repo.commit("agent program v1");
    })
    .await;
    let unit = fx
        .create_unit(
            &fx.token,
            json!({ "name": "pi", "followsDefaultBranch": true }),
        )
        .await;
    let uuid = unit["uuid"].as_str().unwrap().to_owned();
    let home = tempfile::tempdir().unwrap();
    let env = fx.env(&fx.token, &uuid).await;
    std::fs::write(home.path().join("env.json"), env.to_string()).unwrap();
    Unit {
        fx,
        uuid,
        home,
        agent: None,
    }
}

impl Unit {
    fn home(&self) -> &Path {
        self.home.path()
    }

    fn start(&mut self, failpoint: Option<&str>) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.home().join("agent.log"))
            .unwrap();
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_pepeunit-unit"));
        command
            .args([
                "run",
                "--no-mdns",
                "--health-timeout-seconds",
                "20",
                "--home",
            ])
            .arg(self.home())
            .env("PEPEUNIT_UNIT_LOG", "info,pepeunit_unit_runtime=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true);
        match failpoint {
            Some(step) => command.env("PEPEUNIT_UNIT_FAILPOINT", step),
            None => command.env_remove("PEPEUNIT_UNIT_FAILPOINT"),
        };
        self.agent = Some(command.spawn().unwrap());
    }

    fn agent_log(&self) -> String {
        std::fs::read_to_string(self.home().join("agent.log")).unwrap_or_default()
    }

    async fn query(&self, fields: &str) -> Value {
        let query = format!("query($u: ID!) {{ unit(uuid: $u) {{ {fields} }} }}");
        let (_, body) = self
            .fx
            .server
            .gql(&query, json!({ "u": self.uuid }), Some(&self.fx.token))
            .await;
        assert!(body["errors"].is_null(), "{body}");
        body["data"]["unit"].clone()
    }

    /// Polls the unit in the API until `check` holds.
    async fn until(&self, what: &str, fields: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(45);
        loop {
            let unit = self.query(fields).await;
            if check(&unit) {
                return unit;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last: {unit}\nagent log:\n{}",
                self.agent_log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn state_with_commit(&self, commit: &str) -> Value {
        self.until(&format!("state reporting {commit}"), "state", |u| {
            u["state"]["pu_commit_version"] == commit
        })
        .await["state"]
            .clone()
    }

    async fn output_value(&self, value: &str) {
        self.until(
            &format!("output {value}"),
            "nodes { topicName lastValue }",
            |u| node(u, "current_temp/pepeunit")["lastValue"] == value,
        )
        .await;
    }

    async fn set_input(&self, value: &str) {
        let unit = self.query("nodes { uuid topicName }").await;
        let input = node(&unit, "set_fan_state/pepeunit")["uuid"]
            .as_str()
            .unwrap()
            .to_owned();
        let (_, body) = self
            .fx
            .server
            .gql(
                "mutation($n: ID!, $v: String!) { setInputValue(uuid: $n, value: $v) { uuid } }",
                json!({ "n": input, "v": value }),
                Some(&self.fx.token),
            )
            .await;
        assert!(body["errors"].is_null(), "{body}");
    }

    async fn push(&self, files: &[(&str, &str)], message: &str) -> String {
        for (file, content) in files {
            self.fx.source.write(file, content);
        }
        let commit = self.fx.source.commit(message);
        self.fx.push_and_sync().await;
        commit
    }

    async fn wait_exit(&mut self) -> std::process::ExitStatus {
        let child = self.agent.as_mut().unwrap();
        tokio::time::timeout(Duration::from_secs(45), child.wait())
            .await
            .unwrap_or_else(|_| panic!("agent did not exit\n{}", self.agent_log()))
            .unwrap()
    }

    async fn stop(&mut self) {
        if let Some(mut child) = self.agent.take() {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
            let _ = child.kill().await;
        }
    }

    fn current_slot(&self) -> PathBuf {
        std::fs::read_link(self.home().join("current")).unwrap()
    }
}

fn first_commit(fx: &Fixture) -> String {
    common::git::git(&fx.source.work, &["rev-parse", "HEAD"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_reports_state_and_relays_values_through_the_program() {
    let mut unit = unit().await;
    let v1 = first_commit(&unit.fx);
    unit.start(None);
    let state = unit.state_with_commit(&v1).await;
    for key in [
        "millis",
        "mem_free",
        "mem_alloc",
        "ifconfig",
        "statvfs",
        "uptime",
    ] {
        assert!(!state[key].is_null(), "state lacks {key}: {state}");
    }
    assert_eq!(state["program"], "running", "{state}");
    unit.output_value("v1-started").await;
    unit.until("online", "online", |u| u["online"] == true)
        .await;

    unit.set_input("42").await;
    unit.output_value("v1:42").await;

    // The program's log lines reach the unit's log in the API.
    unit.until("the program's log", "logs { items { text } }", |u| {
        u["logs"]["items"]
            .as_array()
            .is_some_and(|items| items.iter().any(|i| i["text"] == "program v1 started"))
    })
    .await;
    unit.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_to_a_good_commit_runs_the_new_version() {
    let mut unit = unit().await;
    let v1 = first_commit(&unit.fx);
    unit.start(None);
    unit.state_with_commit(&v1).await;
    let before = unit.current_slot();

    let v2 = unit.push(&[("main.py", &program("v2"))], "v2").await;
    unit.state_with_commit(&v2).await;
    unit.until("update done", "updateStatus", |u| {
        u["updateStatus"] == "done"
    })
    .await;
    unit.output_value("v2-started").await;
    unit.set_input("7").await;
    unit.output_value("v2:7").await;
    assert_ne!(unit.current_slot(), before);
    unit.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_to_a_crashing_commit_rolls_back() {
    let mut unit = unit().await;
    let v1 = first_commit(&unit.fx);
    unit.start(None);
    unit.state_with_commit(&v1).await;
    let before = unit.current_slot();

    let bad = unit.push(&[("main.py", CRASHING)], "crashes").await;
    let failed = unit
        .until(
            "update failed",
            "updateStatus updateAttempts { status targetCommit detail }",
            |u| u["updateStatus"] == "failed",
        )
        .await;
    let attempt = failed["updateAttempts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["targetCommit"] == bad)
        .unwrap_or_else(|| panic!("{failed}"))
        .clone();
    assert_eq!(attempt["status"], "failed", "{attempt}");
    let detail = attempt["detail"].as_str().unwrap();
    assert!(detail.contains("crashed"), "{detail}");

    // Back on v1: same slot, v1's program answering, state saying so.
    assert_eq!(unit.current_slot(), before);
    let state = unit.state_with_commit(&v1).await;
    assert_eq!(state["pu_update_failure"]["commit"], bad, "{state}");
    unit.set_input("after-rollback").await;
    unit.output_value("v1:after-rollback").await;
    unit.until("the failure in the log", "logs { items { text } }", |u| {
        u["logs"]["items"].as_array().is_some_and(|items| {
            items
                .iter()
                .any(|i| i["text"].as_str().unwrap_or("").contains("rolled back"))
        })
    })
    .await;
    unit.stop().await;
}

/// Serves the real server's API, except firmware archives, which arrive with one byte changed.
async fn tampering_proxy(upstream: String) -> String {
    use axum::body::Bytes;
    use axum::extract::{Request, State};
    use axum::response::IntoResponse;

    async fn forward(State(upstream): State<String>, request: Request) -> impl IntoResponse {
        let path = request
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default();
        let token = request
            .headers()
            .get("x-auth-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let response = reqwest::Client::new()
            .get(format!("{upstream}{path}"))
            .header("x-auth-token", token)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let mut body = response.bytes().await.unwrap().to_vec();
        if path.contains("/firmware/") {
            let last = body.len() - 1;
            body[last] ^= 0xff;
        }
        (
            axum::http::StatusCode::from_u16(status).unwrap(),
            Bytes::from(body),
        )
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(forward).with_state(upstream);
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_with_the_wrong_hash_is_refused_and_nothing_changes() {
    let mut unit = unit().await;
    let v1 = first_commit(&unit.fx);
    // The unit installs v1 through the real server, then talks to it through a proxy that corrupts
    // archives in transit.
    unit.start(None);
    unit.state_with_commit(&v1).await;
    unit.stop().await;
    let proxy = tampering_proxy(unit.fx.server.base.clone()).await;
    let mut env: Value =
        serde_json::from_slice(&std::fs::read(unit.home().join("env.json")).unwrap()).unwrap();
    env["PU_DOMAIN"] = json!(proxy);
    std::fs::write(unit.home().join("env.json"), env.to_string()).unwrap();
    let record = std::fs::read(unit.home().join("slots.json")).unwrap();
    let before = unit.current_slot();
    unit.start(None);
    unit.state_with_commit(&v1).await;

    let v2 = unit.push(&[("main.py", &program("v2"))], "v2").await;
    let failed = unit
        .until(
            "update refused",
            "updateStatus updateAttempts { status targetCommit detail }",
            |u| u["updateStatus"] == "failed",
        )
        .await;
    let detail = failed["updateAttempts"][0]["detail"].as_str().unwrap_or("");
    assert!(detail.contains("SHA-256"), "{failed}");
    assert_eq!(failed["updateAttempts"][0]["targetCommit"], v2);

    // Nothing changed: same slot, same record, v1 still answering, no download left behind.
    assert_eq!(unit.current_slot(), before);
    let record_now: Value =
        serde_json::from_slice(&std::fs::read(unit.home().join("slots.json")).unwrap()).unwrap();
    let record_then: Value = serde_json::from_slice(&record).unwrap();
    assert_eq!(record_now["active"], record_then["active"]);
    assert!(record_now["trial"].is_null());
    assert!(!unit.home().join("firmware.download").exists());
    unit.set_input("still-v1").await;
    unit.output_value("v1:still-v1").await;
    unit.stop().await;
}

/// A TCP relay to the broker that can be cut, as a network outage would.
struct Outage {
    addr: std::net::SocketAddr,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
}

impl Outage {
    async fn start(broker: std::net::SocketAddr) -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (cut, cuts) = tokio::sync::watch::channel(0u64);
        let flag = up.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    continue;
                }
                let mut cuts = cuts.clone();
                // Only cuts after this connection was made end it.
                cuts.borrow_and_update();
                tokio::spawn(async move {
                    let mut server = tokio::net::TcpStream::connect(broker).await.unwrap();
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        Self { addr, up, cut }
    }

    fn set(&self, up: bool) {
        self.up.store(up, std::sync::atomic::Ordering::SeqCst);
        if !up {
            self.cut.send_modify(|n| *n += 1);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_produced_offline_arrive_after_reconnecting() {
    let mut unit = unit().await;
    let v1 = first_commit(&unit.fx);
    let outage = Outage::start(unit.fx.server.mqtt).await;
    let mut env: Value =
        serde_json::from_slice(&std::fs::read(unit.home().join("env.json")).unwrap()).unwrap();
    env["PU_MQTT_PORT"] = json!(outage.addr.port());
    std::fs::write(unit.home().join("env.json"), env.to_string()).unwrap();
    // Keep every value of the output, to count them.
    let nodes = unit.query("nodes { uuid topicName }").await;
    let output = node(&nodes, "current_temp/pepeunit")["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, body) = unit
        .fx
        .server
        .gql(
            "mutation($n: ID!) { updateUnitNode(uuid: $n, input: { historyKind: LAST_N, historyLimit: 1000 }) { uuid } }",
            json!({ "n": output }),
            Some(&unit.fx.token),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    unit.start(None);
    unit.state_with_commit(&v1).await;
    unit.until("online", "online", |u| u["online"] == true)
        .await;

    outage.set(false);
    unit.until("offline", "online", |u| u["online"] == false)
        .await;
    // The program writes through the local socket while the unit is offline.
    let mut socket = tokio::net::UnixStream::connect(unit.home().join("agent.sock"))
        .await
        .unwrap();
    for i in 0..25 {
        let line = json!({ "output": "current_temp", "value": format!("offline-{i}") });
        socket
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
    }
    socket.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    outage.set(true);

    let query = "query($n: ID!) { unitNode(uuid: $n) { history(limit: 1000) { value } } }";
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = unit
            .fx
            .server
            .gql(query, json!({ "n": output }), Some(&unit.fx.token))
            .await;
        let values: Vec<String> = body["data"]["unitNode"]["history"]
            .as_array()
            .map(|h| {
                h.iter()
                    .filter_map(|v| v["value"].as_str().map(str::to_owned))
                    .filter(|v| v.starts_with("offline-"))
                    .collect()
            })
            .unwrap_or_default();
        if values.len() == 25 {
            // Newest first, in the order the program wrote them.
            let want: Vec<String> = (0..25).rev().map(|i| format!("offline-{i}")).collect();
            assert_eq!(values, want);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of 25 offline values arrived: {body}\n{}",
            values.len(),
            unit.agent_log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        unit.agent_log().contains("values queued while offline"),
        "{}",
        unit.agent_log()
    );
    unit.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_loss_at_any_update_step_comes_back_on_a_working_version() {
    let mut unit = unit().await;
    let v1 = first_commit(&unit.fx);
    unit.start(None);
    unit.state_with_commit(&v1).await;
    unit.stop().await;

    let mut previous = v1;
    for (i, step) in pepeunit_unit_runtime::failpoint::UPDATE_STEPS
        .iter()
        .enumerate()
    {
        let version = format!("v{}", i + 2);
        unit.start(Some(step));
        let commit = unit
            .push(&[("main.py", &program(&version))], &version)
            .await;
        let status = unit.wait_exit().await;
        assert!(!status.success(), "{step}: the agent should have died");
        assert!(
            unit.agent_log().contains(&format!("failpoint {step}")),
            "{step}: {}",
            unit.agent_log()
        );

        // Power back: the agent runs a version that works, then finishes the update.
        unit.start(None);
        let state = unit
            .until(&format!("{step}: a working version"), "state", |u| {
                let reported = &u["state"]["pu_commit_version"];
                (reported == &json!(previous) || reported == &json!(commit))
                    && u["state"]["program"] == "running"
            })
            .await;
        assert!(state["state"]["pu_commit_version"].is_string());
        unit.state_with_commit(&commit).await;
        unit.set_input(step).await;
        unit.output_value(&format!("{version}:{step}")).await;
        unit.stop().await;
        previous = commit;
    }
}
