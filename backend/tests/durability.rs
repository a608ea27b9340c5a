//! Nothing acknowledged is lost: units publish QoS 1 values as fast as the broker acknowledges them, the
//! server process is killed with SIGKILL mid-stream, and every value a unit got a PUBACK for is in the
//! database. Then the restarted server gives a unit its retained input value again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::TestDb;
use common::git::SourceRepo;
use common::process::{self, Server, free_port, gql};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use sea_orm::{ColumnTrait, Database, EntityTrait, QueryFilter};
use serde_json::json;

fn pepeunit(db: &TestDb) -> Command {
    let mut command = process::pepeunit(env!("CARGO_BIN_EXE_pepeunit"), db);
    command.env("PEPEUNIT_ALLOW_LOCAL_REMOTES", "true");
    command
}

fn start(db: &TestDb, http: u16, mqtt: u16) -> Server {
    process::start(pepeunit(db), http, mqtt, Duration::from_secs(30))
}

async fn client(server: &Server, unit: &str, token: &str) -> (AsyncClient, rumqttc::EventLoop) {
    let mut options = MqttOptions::new(unit, "127.0.0.1", server.mqtt);
    options.set_credentials(token, "");
    options.set_inflight(1);
    AsyncClient::new(options, 16)
}

#[tokio::test]
async fn every_acknowledged_value_survives_sigkill() {
    let remotes = tempfile::tempdir().unwrap();
    let source = SourceRepo::firmware(remotes.path(), "firmware");
    let db = TestDb::new().await;
    process::create_admin(pepeunit(&db));
    let (http, mqtt) = (free_port(), free_port());
    let mut server = start(&db, http, mqtt);

    let (token, repo) = process::admin_with_repo_unit(&server, &source.file_url()).await;
    let mut units = Vec::new();
    for i in 0..4 {
        let unit = gql(&server, Some(&token), "mutation($r: ID!, $n: String!) { createUnit(input: { repoUnitUuid: $r, name: $n }) { uuid env nodes { uuid topicName topic } } }", json!({ "r": repo, "n": format!("unit {i}") }))
            .await["createUnit"]
            .clone();
        let output = unit["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["topicName"] == "current_temp/pepeunit")
            .unwrap()
            .clone();
        gql(&server, Some(&token), "mutation($n: ID!) { updateUnitNode(uuid: $n, input: { historyKind: LAST_N, historyLimit: 10000 }) { uuid } }", json!({ "n": output["uuid"] })).await;
        units.push((
            unit["uuid"].as_str().unwrap().to_owned(),
            unit["env"]["PU_AUTH_TOKEN"].as_str().unwrap().to_owned(),
            output,
        ));
    }
    let input = gql(
        &server,
        Some(&token),
        "query($u: ID!) { unit(uuid: $u) { nodes { uuid topicName topic } } }",
        json!({ "u": units[0].0 }),
    )
    .await["unit"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["topicName"] == "set_fan_state/pepeunit")
        .unwrap()
        .clone();
    gql(
        &server,
        Some(&token),
        "mutation($n: ID!) { setInputValue(uuid: $n, value: \"keep me\") { uuid } }",
        json!({ "n": input["uuid"] }),
    )
    .await;

    // Four units publish QoS 1 values, one in flight each, recording what was acknowledged.
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let mut tasks = Vec::new();
    for (uuid, unit_token, output) in &units {
        let (client, mut events) = client(&server, uuid, unit_token).await;
        let (acked, node, topic) = (
            acked.clone(),
            output["uuid"].as_str().unwrap().to_owned(),
            output["topic"].as_str().unwrap().to_owned(),
        );
        tasks.push(tokio::spawn(async move {
            let mut sent = 0u64;
            let mut in_flight: Option<String> = None;
            loop {
                if in_flight.is_none() {
                    let value = format!("v{sent}");
                    sent += 1;
                    if client
                        .publish(&topic, QoS::AtLeastOnce, false, value.clone())
                        .await
                        .is_err()
                    {
                        return;
                    }
                    in_flight = Some(value);
                }
                match events.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        if let Some(value) = in_flight.take() {
                            acked.lock().unwrap().push((node.clone(), value));
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 100,
        "only {} values acknowledged",
        acked.len()
    );

    let url = db.url.clone().unwrap_or_else(|| {
        format!(
            "sqlite://{}?mode=rw",
            db.data_dir().join("pepeunit.db").display()
        )
    });
    let connection = Database::connect(&url).await.unwrap();
    use pepeunit_backend::entities::unit_node_values;
    let stored: std::collections::HashSet<(String, String)> = unit_node_values::Entity::find()
        .filter(
            unit_node_values::Column::UnitNodeUuid.is_in(
                units
                    .iter()
                    .map(|u| u.2["uuid"].as_str().unwrap().parse::<uuid::Uuid>().unwrap()),
            ),
        )
        .all(&connection)
        .await
        .unwrap()
        .into_iter()
        .map(|row| (row.unit_node_uuid.to_string(), row.value))
        .collect();
    connection.close().await.unwrap();
    let lost: Vec<_> = acked.iter().filter(|a| !stored.contains(*a)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged values lost, e.g. {:?}",
        lost.len(),
        acked.len(),
        lost.first()
    );

    // After a restart the input's value is retained again for the unit.
    drop(server);
    let server = start(&db, http, mqtt);
    let (uuid, unit_token, _) = &units[0];
    let (client, mut events) = client(&server, uuid, unit_token).await;
    client
        .subscribe(input["topic"].as_str().unwrap(), QoS::AtMostOnce)
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(Event::Incoming(Packet::Publish(p))) = events.poll().await {
                return (p.retain, String::from_utf8_lossy(&p.payload).into_owned());
            }
        }
    })
    .await
    .expect("the retained input arrives");
    assert_eq!(got, (true, "keep me".to_owned()));
    drop(server);
    println!("{} acknowledged values, all stored", acked.len());
}
