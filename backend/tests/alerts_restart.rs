//! An alert fired but not yet sent survives a SIGKILL: the server process is killed while the outbox is
//! still trying to reach Telegram, and after the restart the alert is delivered, once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::TestDb;
use common::git::SourceRepo;
use common::process::{self, Server, free_port, gql};
use common::telegram::{Failure, TOKEN, TelegramStub};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::json;

fn pepeunit(db: &TestDb, stub: &TelegramStub) -> Command {
    let mut command = process::pepeunit(env!("CARGO_BIN_EXE_pepeunit"), db);
    command
        .env("PEPEUNIT_TELEGRAM_BOT_TOKEN", TOKEN)
        .env("PEPEUNIT_TELEGRAM_API_URL", &stub.url);
    command
}

fn start(db: &TestDb, stub: &TelegramStub, http: u16, mqtt: u16) -> Server {
    process::start(pepeunit(db, stub), http, mqtt, Duration::from_secs(60))
}

/// Publishes one QoS 1 value and waits for its PUBACK.
async fn publish(server: &Server, unit: &str, token: &str, topic: &str, value: &str) {
    let mut options = MqttOptions::new(unit, "127.0.0.1", server.mqtt);
    options.set_credentials(token, "");
    let (client, mut events) = AsyncClient::new(options, 16);
    client
        .publish(topic, QoS::AtLeastOnce, false, value.as_bytes().to_vec())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "no PUBACK");
        match tokio::time::timeout(Duration::from_secs(30), events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => break,
            Ok(Ok(_)) => {}
            other => panic!("publishing failed: {other:?}"),
        }
    }
    let _ = client.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_fired_before_a_sigkill_is_sent_once_after_the_restart() {
    let stub = TelegramStub::start().await;
    let remotes = tempfile::tempdir().unwrap();
    let source = SourceRepo::firmware(remotes.path(), "firmware");
    source.publish();
    let db = TestDb::new().await;
    process::create_admin(pepeunit(&db, &stub));
    let (http, mqtt) = (free_port(), free_port());
    let mut server = start(&db, &stub, http, mqtt);
    let (token, repo) = process::admin_with_repo_unit(&server, &source.file_url()).await;
    let unit = gql(
        &server,
        Some(&token),
        "mutation($r: ID!) { createUnit(input: { repoUnitUuid: $r, name: \"Cellar\" }) { uuid env nodes { uuid topicName topic } } }",
        json!({ "r": repo }),
    )
    .await["createUnit"]
        .clone();
    let output = unit["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["topicName"] == "current_temp/pepeunit")
        .unwrap()
        .clone();
    let (unit_uuid, unit_token, topic) = (
        unit["uuid"].as_str().unwrap().to_owned(),
        unit["env"]["PU_AUTH_TOKEN"].as_str().unwrap().to_owned(),
        output["topic"].as_str().unwrap().to_owned(),
    );
    let code = gql(
        &server,
        Some(&token),
        "mutation { createTelegramLinkCode { code } }",
        json!({}),
    )
    .await["createTelegramLinkCode"]["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let linked = stub.ask(7001, &format!("/start {code}")).await;
    assert!(linked.starts_with("Linked to root"), "{linked}");
    gql(
        &server,
        Some(&token),
        "mutation($n: ID!) { createAlertRule(input: { kind: ABOVE, nodeUuid: $n, threshold: 5 }) { uuid } }",
        json!({ "n": output["uuid"] }),
    )
    .await;

    // Telegram is down: the alert fires, and the server keeps trying to send it.
    stub.fail_next(&[Failure::ServerError; 1000]);
    publish(&server, &unit_uuid, &unit_token, &topic, "9").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while stub.attempts("Cellar: current_temp = 9") == 0 {
        assert!(Instant::now() < deadline, "the alert was never attempted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // `Child::kill` is SIGKILL on Unix: no shutdown code runs.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    assert!(
        stub.sent(7001).iter().all(|t| !t.contains("Cellar")),
        "nothing was delivered yet"
    );

    // Telegram is back; so is the server.
    stub.heal();
    let server = start(&db, &stub, http, mqtt);
    stub.wait_for(7001, 0, |t| {
        t.contains("Cellar: current_temp = 9 is above 5")
    })
    .await;
    // A later alert of the same channel comes after any repeat of the first.
    publish(&server, &unit_uuid, &unit_token, &topic, "1").await;
    stub.wait_for(7001, 0, |t| t.contains("back to normal"))
        .await;
    let alerts: Vec<String> = stub
        .sent(7001)
        .into_iter()
        .filter(|t| t.contains("Cellar"))
        .collect();
    assert_eq!(alerts.len(), 2, "{alerts:?}");
}
