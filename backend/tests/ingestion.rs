//! Ingestion under abuse and at scale, through real MQTT clients: a flooding unit does not delay another
//! unit's PUBACK and its rows stay bounded, a republished log is stored once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::units::{Device, Fixture, device, node};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// A connected client that may send large packets, and the PUBACK ids it receives.
async fn connect(fx: &Fixture, device: &Device) -> (AsyncClient, mpsc::UnboundedReceiver<u16>) {
    let mut options = MqttOptions::new(&device.uuid, "127.0.0.1", fx.server.mqtt.port());
    options.set_credentials(&device.token, "");
    options.set_keep_alive(Duration::from_secs(60));
    options.set_max_packet_size(512 * 1024, 512 * 1024);
    let (client, mut events) = AsyncClient::new(options, 16);
    let (tx, acks) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    let _ = tx.send(ack.pkid);
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    (client, acks)
}

/// Publishes at QoS 1 and waits for its PUBACK; how long that took.
async fn acked(
    client: &AsyncClient,
    acks: &mut mpsc::UnboundedReceiver<u16>,
    topic: &str,
) -> Duration {
    let started = Instant::now();
    client
        .publish(topic, QoS::AtLeastOnce, false, b"21.5".to_vec())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(60), acks.recv())
        .await
        .expect("a PUBACK within a minute")
        .expect("the connection stays open");
    started.elapsed()
}

async fn log_total(fx: &Fixture, unit: &str) -> u64 {
    let (_, body) = fx
        .server
        .gql(
            "query($u: ID!) { unit(uuid: $u) { logs { total } } }",
            json!({ "u": unit }),
            Some(&fx.token),
        )
        .await;
    body["data"]["unit"]["logs"]["total"]
        .as_u64()
        .unwrap_or_else(|| panic!("{body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_unit_does_not_delay_another_units_puback_and_its_rows_stay_bounded() {
    let fx = Fixture::new(|_| {}).await;
    let noisy = device(&fx, "Noisy").await;
    let quiet = device(&fx, "Quiet").await;
    let (flooder, _) = connect(&fx, &noisy).await;
    let (client, mut acks) = connect(&fx, &quiet).await;
    let value_topic = quiet.topic("current_temp/pepeunit");
    // Before the flood.
    acked(&client, &mut acks, &value_topic).await;

    // The noisy unit floods at QoS 0 (nothing acknowledged, nothing to wait for): messages of 1,000 log
    // lines each and 200 KB values.
    let log: Vec<Value> = (0..1000)
        .map(|i| json!({ "level": "Info", "text": format!("line {i} of a very chatty unit") }))
        .collect();
    let log = serde_json::to_vec(&log).unwrap();
    let big_value = vec![b'7'; 200 * 1024];
    let (log_topic, noisy_value) = (
        noisy.base(&fx, "output_base_topic", "log"),
        noisy.topic("current_temp/pepeunit"),
    );
    let flood = tokio::spawn(async move {
        for i in 0.. {
            let (topic, payload) = if i % 2 == 0 {
                (&log_topic, log.clone())
            } else {
                (&noisy_value, big_value.clone())
            };
            if flooder
                .publish(topic, QoS::AtMostOnce, false, payload)
                .await
                .is_err()
            {
                return;
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Meanwhile the quiet unit's PUBACKs stay fast (the flood piled up behind one queue before: 85 s).
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        slowest = slowest.max(acked(&client, &mut acks, &value_topic).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    flood.abort();
    assert!(
        slowest < Duration::from_secs(2),
        "the quiet unit's slowest PUBACK during the flood took {slowest:?}"
    );

    // The noisy unit's log rows are bounded by the per-minute quota (600 lines), not by what it sent.
    let noisy_uuid: uuid::Uuid = noisy.uuid.parse().unwrap();
    let rows = pepeunit_backend::entities::unit_logs::Entity::find()
        .filter(pepeunit_backend::entities::unit_logs::Column::UnitUuid.eq(noisy_uuid))
        .count(fx.server.services.db())
        .await
        .unwrap();
    assert!(rows <= 600, "{rows} log rows stored for the noisy unit");
    let metrics = fx
        .server
        .client
        .get(format!("{}/metrics", fx.server.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for limit in ["log_entries", "value_size"] {
        assert!(
            metrics.contains(&format!(
                "pepeunit_ingest_limits_hit_total{{limit=\"{limit}\"}}"
            )),
            "{limit} is counted in /metrics:\n{metrics}"
        );
    }
}

#[tokio::test]
async fn a_republished_log_is_stored_once() {
    let fx = Fixture::new(|_| {}).await;
    let unit = device(&fx, "Chatty").await;
    let (client, mut acks) = connect(&fx, &unit).await;
    // What `log_sync` sends: the unit's whole log, every line with its time.
    let log = json!([
        { "level": "Info", "text": "booted", "create_datetime": "2026-01-01T10:00:00.123456Z" },
        { "level": "Warning", "text": "hot", "create_datetime": "2026-01-01T10:00:01Z" },
        { "level": "Info", "text": "booted", "create_datetime": "2026-01-01T10:05:00+03:00" },
    ])
    .to_string();
    let topic = unit.base(&fx, "output_base_topic", "log");
    for _ in 0..2 {
        client
            .publish(&topic, QoS::AtLeastOnce, false, log.clone().into_bytes())
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), acks.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(log_total(&fx, &unit.uuid).await, 3);
    }
    // A line without a time of its own is always new.
    for expected in [4, 5] {
        client
            .publish(
                &topic,
                QoS::AtLeastOnce,
                false,
                br#"{"level": "Info", "text": "tick"}"#.to_vec(),
            )
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), acks.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(log_total(&fx, &unit.uuid).await, expected);
    }
}

/// Not a check: a measurement of QoS 1 fan-in (50 units publishing flat out for 10 s), printed for the
/// notes. `cargo nextest run --test ingestion --run-ignored only -E 'test(fan_in)' --no-capture`, with
/// `PEPEUNIT_DATABASE_SQLITE_SYNCHRONOUS=normal` to measure that durability level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run by hand"]
async fn fan_in_measurement() {
    let normal = std::env::var("PEPEUNIT_DATABASE_SQLITE_SYNCHRONOUS").is_ok_and(|v| v == "normal");
    let fx = Fixture::with_config(
        |_| {},
        |c| {
            if normal {
                c.database_sqlite_synchronous = pepeunit_backend::config::SqliteSync::Normal;
            }
        },
    )
    .await;
    let mut publishers = Vec::new();
    for i in 0..50 {
        let unit = device(&fx, &format!("Fan-in {i}")).await;
        let (client, acks) = connect(&fx, &unit).await;
        publishers.push((client, acks, unit.topic("current_temp/pepeunit")));
    }
    let run = Duration::from_secs(10);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (client, mut acks, topic) in publishers {
        tasks.push(tokio::spawn(async move {
            let counter = tokio::spawn(async move {
                let mut acked = 0u64;
                while acks.recv().await.is_some() {
                    acked += 1;
                }
                acked
            });
            let mut i = 0u64;
            while started.elapsed() < run {
                i += 1;
                let _ = client
                    .publish(&topic, QoS::AtLeastOnce, false, i.to_string().into_bytes())
                    .await;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            let _ = client.disconnect().await;
            counter.await.unwrap_or(0)
        }));
    }
    let mut acked = 0;
    for task in tasks {
        acked += task.await.unwrap();
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "fan-in: {acked} PUBACKs in {run:?}: {:.0} values/s; load average {load}",
        acked as f64 / run.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_a_large_history_to_last_n_does_not_hold_up_pubacks() {
    let fx = Fixture::new(|_| {}).await;
    let sensor = device(&fx, "Sensor").await;
    let node_id = node(&sensor.unit, "current_temp/pepeunit")["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let policy = |kind: &str, extra: &str| {
        format!(
            "mutation($n: ID!) {{ updateUnitNode(uuid: $n, input: {{ historyKind: {kind}, {extra} }}) {{ uuid }} }}"
        )
    };
    let (_, body) = fx
        .server
        .gql(
            &policy("WINDOW", "historyWindowSeconds: 31536000"),
            json!({ "n": node_id }),
            Some(&fx.token),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    // A long history, written directly.
    let db = fx.server.services.db();
    let node_uuid: uuid::Uuid = node_id.parse().unwrap();
    let rows = 200_000;
    let backend = sea_orm::ConnectionTrait::get_database_backend(db);
    let sql = match backend {
        sea_orm::DbBackend::Postgres => format!(
            "INSERT INTO unit_node_values (unit_node_uuid, value, created_at) \
             SELECT $1, CAST(i AS text), $2 FROM generate_series(1, {rows}) AS i"
        ),
        _ => format!(
            "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < {rows}) \
             INSERT INTO unit_node_values (unit_node_uuid, value, created_at) SELECT ?, i, ? FROM c"
        ),
    };
    sea_orm::ConnectionTrait::execute_raw(
        db,
        sea_orm::Statement::from_sql_and_values(
            backend,
            sql,
            [node_uuid.into(), chrono::Utc::now().into()],
        ),
    )
    .await
    .unwrap();
    let (_, body) = fx
        .server
        .gql(
            &policy("LAST_N", "historyLimit: 10"),
            json!({ "n": node_id }),
            Some(&fx.token),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");

    // The unit keeps publishing; its PUBACKs stay fast while the old history goes.
    let (client, mut acks) = connect(&fx, &sensor).await;
    let topic = sensor.topic("current_temp/pepeunit");
    let history = || {
        pepeunit_backend::entities::unit_node_values::Entity::find()
            .filter(
                pepeunit_backend::entities::unit_node_values::Column::UnitNodeUuid.eq(node_uuid),
            )
            .count(db)
    };
    let mut slowest = Duration::ZERO;
    for _ in 0..600 {
        slowest = slowest.max(acked(&client, &mut acks, &topic).await);
        // Trims run once a second: the last second's values may still be there.
        if history().await.unwrap() <= 100 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        slowest < Duration::from_secs(2),
        "slowest PUBACK while trimming: {slowest:?}"
    );
    let left = history().await.unwrap();
    assert!(
        left <= 100,
        "the history is trimmed to its policy: {left} rows left"
    );
}

#[tokio::test]
async fn a_value_too_large_to_store_is_not_routed_either() {
    let fx = Fixture::with_config(|_| {}, |c| c.unit_value_max_bytes = 1024).await;
    let sensor = device(&fx, "Sensor").await;
    let fan = device(&fx, "Fan").await;
    let (_, body) = fx
        .server
        .gql(
            "mutation($o: ID!, $i: ID!) { createLink(outputUuid: $o, inputUuid: $i) { uuid } }",
            json!({
                "o": node(&sensor.unit, "current_temp/pepeunit")["uuid"],
                "i": node(&fan.unit, "set_fan_state/pepeunit")["uuid"],
            }),
            Some(&fx.token),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    let topic = sensor.topic("current_temp/pepeunit");
    let mut listener = common::mqtt::connect(&fx.server, &fan.uuid, &fan.token)
        .await
        .unwrap();
    listener.subscribe(&topic).await;
    let (client, mut acks) = connect(&fx, &sensor).await;
    // Wait until the subscription is in place: a small QoS 1 value arrives.
    acked(&client, &mut acks, &topic).await;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), listener.seen.recv()).await {
            Ok(Some(common::mqtt::Seen::Message { payload, .. })) if payload == "21.5" => break,
            Ok(Some(_)) => {}
            other => panic!("the linked unit got no value: {other:?}"),
        }
    }
    // At QoS 0 nothing waits for the store, so the size is checked before routing: an oversized value
    // is neither stored nor delivered, and the next one is.
    client
        .publish(&topic, QoS::AtMostOnce, false, vec![b'9'; 2048])
        .await
        .unwrap();
    client
        .publish(&topic, QoS::AtMostOnce, false, b"22".to_vec())
        .await
        .unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), listener.seen.recv()).await {
            Ok(Some(common::mqtt::Seen::Message { payload, .. })) => {
                assert_eq!(payload, "22", "only the value that fits is delivered");
                break;
            }
            Ok(Some(_)) => {}
            other => panic!("the linked unit got nothing: {other:?}"),
        }
    }
}
