//! Processing of output variables: filters turn values away before anything is stored or routed (and
//! count them), aggregates over tumbling windows match what the test computes from the same samples —
//! published over MQTT and posted over REST, and across a restart of the real server in the middle of a
//! window — and retention removes what it should and only that.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::TestDb;
use common::mqtt::Seen;
use common::process::{self, free_port, gql};
use common::units::{Device, Fixture, device};
use reqwest::StatusCode;
use rumqttc::QoS;
use serde_json::{Value, json};

const OUTPUT: &str = "current_temp/pepeunit";
const INPUT: &str = "set_fan_state/pepeunit";

/// count, sum, min, max, avg, median of one window.
type Stats = (i64, f64, f64, f64, f64, f64);

/// What each `seconds`-long window of `samples` should hold, computed here.
fn expected(samples: &[(DateTime<Utc>, f64)], seconds: i64) -> BTreeMap<i64, Stats> {
    let mut windows: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
    for (at, value) in samples {
        let start = at.timestamp().div_euclid(seconds) * seconds;
        windows.entry(start).or_default().push(*value);
    }
    windows
        .into_iter()
        .map(|(start, mut values)| {
            values.sort_by(f64::total_cmp);
            let n = values.len();
            let sum: f64 = values.iter().sum();
            let median = if n % 2 == 1 {
                values[n / 2]
            } else {
                (values[n / 2 - 1] + values[n / 2]) / 2.0
            };
            (
                start,
                (
                    n as i64,
                    sum,
                    values[0],
                    values[n - 1],
                    sum / n as f64,
                    median,
                ),
            )
        })
        .collect()
}

const AGGREGATES: &str = "query($u: ID!, $w: Int!) { unitNode(uuid: $u) {
    aggregates(windowSeconds: $w, limit: 1000) { windowStart count sum min max avg median } } }";

fn parse_aggregates(body: &Value) -> BTreeMap<i64, Stats> {
    body["unitNode"]["aggregates"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|row| {
            let start = DateTime::parse_from_rfc3339(row["windowStart"].as_str().unwrap())
                .unwrap()
                .timestamp();
            let f = |k: &str| row[k].as_f64().unwrap();
            (
                start,
                (
                    row["count"].as_i64().unwrap(),
                    f("sum"),
                    f("min"),
                    f("max"),
                    f("avg"),
                    f("median"),
                ),
            )
        })
        .collect()
}

fn assert_same(actual: &BTreeMap<i64, Stats>, expected: &BTreeMap<i64, Stats>) {
    assert_eq!(
        actual.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "windows: {actual:?} vs {expected:?}"
    );
    for (start, a) in actual {
        let e = expected[start];
        assert_eq!(a.0, e.0, "count of {start}");
        for (x, y, what) in [
            (a.1, e.1, "sum"),
            (a.2, e.2, "min"),
            (a.3, e.3, "max"),
            (a.4, e.4, "avg"),
            (a.5, e.5, "median"),
        ] {
            assert!((x - y).abs() < 1e-9, "{what} of {start}: {x} vs {y}");
        }
    }
}

async fn aggregates(fx: &Fixture, node: &str, seconds: i64) -> BTreeMap<i64, Stats> {
    let (_, body) = fx
        .server
        .gql(
            AGGREGATES,
            json!({ "u": node, "w": seconds }),
            Some(&fx.token),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    parse_aggregates(&body["data"])
}

async fn post(fx: &Fixture, unit: &Device, body: Value) -> Value {
    let response = unit.post_values(fx, &body).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

async fn set_processing(fx: &Fixture, node: &str, processing: Value) -> Value {
    let (_, body) = fx
        .server
        .gql(
            "mutation($n: ID!, $p: UnitNodeProcessingInput!) {
                updateUnitNode(uuid: $n, input: { historyKind: LAST_N, historyLimit: 1000, processing: $p }) {
                    processing { valueType min max deduplicate maxRate { samples perSeconds }
                                 windows { seconds keepCount keepSeconds } } } }",
            json!({ "n": node, "p": processing }),
            Some(&fx.token),
        )
        .await;
    body
}

async fn history(fx: &Fixture, node: &str) -> Vec<(String, DateTime<Utc>)> {
    let (_, body) = fx
        .server
        .gql(
            "query($u: ID!) { unitNode(uuid: $u) { history(limit: 1000) { value createdAt } } }",
            json!({ "u": node }),
            Some(&fx.token),
        )
        .await;
    let mut rows: Vec<(String, DateTime<Utc>)> = body["data"]["unitNode"]["history"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|v| {
            (
                v["value"].as_str().unwrap().to_owned(),
                DateTime::parse_from_rfc3339(v["createdAt"].as_str().unwrap())
                    .unwrap()
                    .with_timezone(&Utc),
            )
        })
        .collect();
    rows.reverse();
    rows
}

async fn rejections(fx: &Fixture, node: &str) -> BTreeMap<String, i64> {
    let (_, body) = fx
        .server
        .gql(
            "query($u: ID!) { unitNode(uuid: $u) { rejections { reason count } } }",
            json!({ "u": node }),
            Some(&fx.token),
        )
        .await;
    body["data"]["unitNode"]["rejections"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|r| {
            (
                r["reason"].as_str().unwrap().to_owned(),
                r["count"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(seconds, 0).unwrap()
}

/// Three hours ago, on the hour: explicit times from there are in the past whenever the test runs.
fn base() -> i64 {
    let hour_ago = Utc::now().timestamp() - 3 * 3600;
    hour_ago - hour_ago.rem_euclid(3600)
}

#[tokio::test]
async fn aggregates_of_mqtt_and_rest_samples_match_what_is_computed_here() {
    let fx = Fixture::new(|_| {}).await;
    let sensor = device(&fx, "Sensor").await;
    let node = sensor.node(OUTPUT);
    let body = set_processing(
        &fx,
        &node,
        json!({ "windows": [{ "seconds": 3600 }, { "seconds": 60, "keepCount": 500 }] }),
    )
    .await;
    assert!(body["errors"].is_null(), "{body}");
    assert_eq!(
        body["data"]["updateUnitNode"]["processing"]["windows"],
        json!([
            { "seconds": 60, "keepCount": 500, "keepSeconds": null },
            { "seconds": 3600, "keepCount": 10000, "keepSeconds": null },
        ])
    );

    // Over REST with explicit times: two windows of a minute, an even and an odd number of samples.
    let base = base();
    let mut samples: Vec<(DateTime<Utc>, f64)> = Vec::new();
    for (offset, value) in [
        (1, 3.0),
        (5, 1.0),
        (9, 4.0),
        (12, 1.0),
        (20, 5.5),
        (33, 9.0),
        (47, 2.0),
        (59, -6.25),
        (61, 5.0),
        (70, 3.0),
        (119, 5.0),
    ] {
        samples.push((at(base + offset), value));
    }
    let mut items: Vec<Value> = samples
        .iter()
        .map(|(t, v)| json!({ "output": OUTPUT, "value": v, "time": t.to_rfc3339() }))
        .collect();
    // Text is stored in the direct log, not aggregated.
    items.insert(
        3,
        json!({ "output": OUTPUT, "value": "warm", "time": at(base + 10).to_rfc3339() }),
    );
    assert_eq!(
        post(&fx, &sensor, Value::from(items)).await,
        json!({ "stored": 12, "filtered": 0 })
    );

    // Over MQTT, stamped on arrival: what windows they fall in is read back from the direct log.
    let mqtt = sensor.connect(&fx).await;
    let published = ["10", "20.5", "30", "40", "-1", "7"];
    for value in published {
        mqtt.publish(&sensor.topic(OUTPUT), value, QoS::AtLeastOnce)
            .await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let arrived = loop {
        let kept = history(&fx, &node).await;
        if kept.len() == 12 + published.len() {
            break kept;
        }
        assert!(
            Instant::now() < deadline,
            "MQTT values not stored: {kept:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for (value, time) in &arrived[12..] {
        samples.push((*time, value.parse().unwrap()));
    }

    assert_same(&aggregates(&fx, &node, 60).await, &expected(&samples, 60));
    assert_same(
        &aggregates(&fx, &node, 3600).await,
        &expected(&samples, 3600),
    );
    // A series that is not configured has no rows.
    assert!(aggregates(&fx, &node, 120).await.is_empty());

    // A sample older than both open windows is stored but changes no aggregate.
    post(
        &fx,
        &sensor,
        json!([{ "output": OUTPUT, "value": 1000, "time": at(base + 30).to_rfc3339() }]),
    )
    .await;
    assert_same(&aggregates(&fx, &node, 60).await, &expected(&samples, 60));
    assert_same(
        &aggregates(&fx, &node, 3600).await,
        &expected(&samples, 3600),
    );
    assert_eq!(
        rejections(&fx, &node).await,
        BTreeMap::from([("NOT_NUMERIC".to_owned(), 1), ("LATE".to_owned(), 2)])
    );
}

#[tokio::test]
async fn filters_turn_values_away_before_they_are_stored_or_routed_and_count_them() {
    let fx = Fixture::new(|_| {}).await;
    let sensor = device(&fx, "Sensor").await;
    let fan = device(&fx, "Fan").await;
    let node = sensor.node(OUTPUT);
    let (_, body) = fx
        .server
        .gql(
            "mutation($o: ID!, $i: ID!) { createLink(outputUuid: $o, inputUuid: $i) { uuid } }",
            json!({ "o": node, "i": fan.node(INPUT) }),
            Some(&fx.token),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");

    // Bad settings are refused, naming the problem; an input has no processing.
    for (target, processing, says) in [
        (
            node.clone(),
            json!({ "windows": [{ "seconds": 30 }] }),
            "60",
        ),
        (node.clone(), json!({ "min": 5, "max": 1 }), "min"),
        (
            node.clone(),
            json!({ "windows": [{ "seconds": 60, "keepCount": 0 }] }),
            "rows",
        ),
        (
            node.clone(),
            json!({ "maxRate": { "samples": 0, "perSeconds": 1 } }),
            "rate",
        ),
        (fan.node(INPUT), json!({ "deduplicate": true }), "output"),
    ] {
        let body = set_processing(&fx, &target, processing.clone()).await;
        let message = body["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{processing}: {body}");
    }

    let body = set_processing(
        &fx,
        &node,
        json!({
            "valueType": "NUMBER", "min": 0, "max": 100, "deduplicate": true,
            "maxRate": { "samples": 5, "perSeconds": 3600 },
        }),
    )
    .await;
    assert!(body["errors"].is_null(), "{body}");
    let mut fan_mqtt = fan.connect(&fx).await;
    fan_mqtt.subscribe_acked(&sensor.topic(OUTPUT)).await;

    let items: Vec<Value> = [
        json!("warm"),
        json!(150),
        json!(10),
        json!(10),
        json!(11),
        json!(12),
        json!(13),
        json!(14),
        json!(15),
    ]
    .into_iter()
    .map(|v| json!({ "output": OUTPUT, "value": v }))
    .collect();
    assert_eq!(
        post(&fx, &sensor, Value::from(items)).await,
        json!({ "stored": 5, "filtered": 4 })
    );
    let kept: Vec<String> = history(&fx, &node)
        .await
        .into_iter()
        .map(|(v, _)| v)
        .collect();
    assert_eq!(kept, ["10", "11", "12", "13", "14"]);
    let topic = sensor.topic(OUTPUT);
    for value in ["10", "11", "12", "13", "14"] {
        assert_eq!(fan_mqtt.message().await, (topic.clone(), value.to_owned()));
    }

    // Over MQTT a value out of range is acknowledged (it was received) but neither stored nor routed.
    let mut sensor_mqtt = sensor.connect(&fx).await;
    sensor_mqtt.publish(&topic, "-5", QoS::AtLeastOnce).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match sensor_mqtt.next(Duration::from_secs(20)).await {
            Some(Seen::PubAck(_)) => break,
            Some(_) => {}
            None => panic!("no PUBACK"),
        }
        assert!(Instant::now() < deadline, "no PUBACK");
    }
    // At QoS 0 too, nothing is routed.
    sensor_mqtt.publish(&topic, "nope", QoS::AtMostOnce).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while rejections(&fx, &node).await.get("TYPE") != Some(&2) {
        assert!(Instant::now() < deadline, "QoS 0 value not counted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fan_mqtt.quiet().await;
    assert_eq!(history(&fx, &node).await.len(), 5);
    assert_eq!(
        rejections(&fx, &node).await,
        BTreeMap::from([
            ("TYPE".to_owned(), 2),
            ("RANGE".to_owned(), 2),
            ("RATE".to_owned(), 1),
            ("DUPLICATE".to_owned(), 1),
        ])
    );
    let metrics = reqwest::get(fx.server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for reason in ["type", "range", "rate", "duplicate"] {
        assert!(
            metrics.contains(&format!(
                "pepeunit_processing_rejected_total{{reason=\"{reason}\"}}"
            )),
            "{reason} not in /metrics"
        );
    }

    // Without settings every value is kept again.
    let body = set_processing(&fx, &node, json!({})).await;
    assert!(body["errors"].is_null(), "{body}");
    post(&fx, &sensor, json!([{ "output": OUTPUT, "value": "warm" }])).await;
    assert_eq!(fan_mqtt.message().await, (topic, "warm".to_owned()));
}

#[tokio::test]
async fn retention_removes_old_windows_by_count_and_age_and_only_those() {
    let fx = Fixture::new(|_| {}).await;
    let sensor = device(&fx, "Sensor").await;
    let node = sensor.node(OUTPUT);
    let body = set_processing(
        &fx,
        &node,
        json!({ "windows": [
            { "seconds": 60, "keepCount": 3 },
            { "seconds": 120, "keepSeconds": 7200 },
        ] }),
    )
    .await;
    assert!(body["errors"].is_null(), "{body}");
    // Six old minutes (three hours ago), then two recent ones in one two-minute window.
    let base = base();
    let mut samples: Vec<(DateTime<Utc>, f64)> =
        (0..6).map(|k| (at(base + k * 60 + 5), k as f64)).collect();
    let recent = Utc::now().timestamp() - 600;
    let recent = recent - recent.rem_euclid(120);
    samples.push((at(recent + 5), 100.0));
    samples.push((at(recent + 65), 101.0));
    let items: Vec<Value> = samples
        .iter()
        .map(|(t, v)| json!({ "output": OUTPUT, "value": v, "time": t.to_rfc3339() }))
        .collect();
    post(&fx, &sensor, Value::from(items)).await;

    let all60 = expected(&samples, 60);
    let kept60: BTreeMap<i64, Stats> = all60
        .iter()
        .skip(all60.len() - 3)
        .map(|(k, v)| (*k, *v))
        .collect();
    let kept120: BTreeMap<i64, Stats> = expected(&samples, 120)
        .into_iter()
        .filter(|(start, _)| *start >= recent)
        .collect();
    assert_eq!(kept120.len(), 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (by_count, by_age) = (
            aggregates(&fx, &node, 60).await,
            aggregates(&fx, &node, 120).await,
        );
        if by_count.len() == 3 && by_age.len() == 1 {
            assert_same(&by_count, &kept60);
            assert_same(&by_age, &kept120);
            break;
        }
        assert!(
            by_count.len() >= 3 && !by_age.is_empty(),
            "removed too much: {by_count:?} {by_age:?}"
        );
        assert!(
            Instant::now() < deadline,
            "retention did not run: {by_count:?} {by_age:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The direct log keeps all of them, by its own policy.
    assert_eq!(history(&fx, &node).await.len(), samples.len());

    // A window no longer configured loses its series (once a window opens, or within ten minutes); the
    // others stay.
    let body = set_processing(
        &fx,
        &node,
        json!({ "windows": [{ "seconds": 60, "keepCount": 3 }] }),
    )
    .await;
    assert!(body["errors"].is_null(), "{body}");
    post(
        &fx,
        &sensor,
        json!([{ "output": OUTPUT, "value": 5, "time": at(recent + 125).to_rfc3339() }]),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !aggregates(&fx, &node, 120).await.is_empty() {
        assert!(Instant::now() < deadline, "the dropped series stayed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(aggregates(&fx, &node, 60).await.len(), 3);
}

/// Posts values with explicit times to the real server.
async fn post_to(
    server: &process::Server,
    unit: &str,
    token: &str,
    samples: &[(DateTime<Utc>, f64)],
) {
    let items: Vec<Value> = samples
        .iter()
        .map(|(t, v)| json!({ "output": OUTPUT, "value": v, "time": t.to_rfc3339() }))
        .collect();
    let response = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/api/v1/units/{unit}/values",
            server.http
        ))
        .header("x-auth-token", token)
        .json(&items)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_in_the_middle_of_a_window_continues_it_exactly() {
    let remotes = tempfile::tempdir().unwrap();
    let source = common::git::SourceRepo::firmware(remotes.path(), "firmware");
    source.publish();
    let db = TestDb::new().await;
    let binary = env!("CARGO_BIN_EXE_pepeunit");
    process::create_admin(process::pepeunit(binary, &db));
    let (http, mqtt) = (free_port(), free_port());
    let start = || {
        process::start(
            process::pepeunit(binary, &db),
            http,
            mqtt,
            Duration::from_secs(60),
        )
    };
    let server = start();
    let (token, repo) = process::admin_with_repo_unit(&server, &source.file_url()).await;
    let unit = gql(
        &server,
        Some(&token),
        "mutation($r: ID!) { createUnit(input: { repoUnitUuid: $r, name: \"Cellar\" }) { uuid env nodes { uuid topicName } } }",
        json!({ "r": repo }),
    )
    .await["createUnit"]
        .clone();
    let unit_uuid = unit["uuid"].as_str().unwrap().to_owned();
    let unit_token = unit["env"]["PU_AUTH_TOKEN"].as_str().unwrap().to_owned();
    let node = common::units::node(&unit, OUTPUT)["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    gql(
        &server,
        Some(&token),
        "mutation($n: ID!) { updateUnitNode(uuid: $n, input: { processing: { windows: [{ seconds: 60 }, { seconds: 3600 }] } }) { uuid } }",
        json!({ "n": node }),
    )
    .await;

    let base = base() + 600;
    let first: Vec<(DateTime<Utc>, f64)> = [(2, 8.0), (9, 1.5), (14, 7.0), (22, 3.0)]
        .into_iter()
        .map(|(s, v)| (at(base + s), v))
        .collect();
    post_to(&server, &unit_uuid, &unit_token, &first).await;
    // Killed (SIGKILL) with both windows open.
    drop(server);
    let server = start();
    let second: Vec<(DateTime<Utc>, f64)> = [(30, 0.5), (41, 9.5), (58, 2.0), (75, 4.0)]
        .into_iter()
        .map(|(s, v)| (at(base + s), v))
        .collect();
    post_to(&server, &unit_uuid, &unit_token, &second).await;
    let samples: Vec<(DateTime<Utc>, f64)> = first.iter().chain(&second).copied().collect();
    for seconds in [60, 3600] {
        let body = gql(
            &server,
            Some(&token),
            AGGREGATES,
            json!({ "u": node, "w": seconds }),
        )
        .await;
        assert_same(&parse_aggregates(&body), &expected(&samples, seconds));
    }
}

#[tokio::test]
async fn a_series_of_an_output_with_windows_is_read_from_its_stored_aggregates() {
    let fx = Fixture::new(|_| {}).await;
    let sensor = device(&fx, "Sensor").await;
    let node = sensor.node(OUTPUT);
    // No raw history at all (last value only): whatever the series shows comes from the windows.
    let (_, body) = fx
        .server
        .gql(
            "mutation($n: ID!) { updateUnitNode(uuid: $n, input: { historyKind: LAST_VALUE,
                processing: { windows: [{ seconds: 60 }] } }) { uuid } }",
            json!({ "n": node }),
            Some(&fx.token),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    let base = base();
    let samples: Vec<(DateTime<Utc>, f64)> = [(1, 4.0), (20, 1.0), (40, 7.0), (65, 2.0), (90, 6.0)]
        .into_iter()
        .map(|(offset, value)| (at(base + offset), value))
        .collect();
    let items: Vec<Value> = samples
        .iter()
        .map(|(t, v)| json!({ "output": OUTPUT, "value": v, "time": t.to_rfc3339() }))
        .collect();
    post(&fx, &sensor, Value::from(items)).await;
    assert!(history(&fx, &node).await.is_empty(), "no raw history kept");

    let series = |aggregate: &'static str, step: i64| {
        let fx = &fx;
        let node = node.clone();
        async move {
            let (_, body) = fx
                .server
                .gql(
                    "query($u: ID!, $f: DateTime!, $t: DateTime!, $s: Int!, $a: SeriesAggregate!) {
                        series(nodeUuid: $u, from: $f, to: $t, stepSeconds: $s, aggregate: $a) {
                            stepSeconds points { time value count } } }",
                    json!({ "u": node, "f": at(base).to_rfc3339(), "t": at(base + 120).to_rfc3339(),
                            "s": step, "a": aggregate }),
                    Some(&fx.token),
                )
                .await;
            assert!(body["errors"].is_null(), "{body}");
            body["data"]["series"]["points"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p["value"].as_f64().unwrap(), p["count"].as_i64().unwrap()))
                .collect::<Vec<_>>()
        }
    };
    // One bucket per stored window: the exact median of each minute.
    assert_eq!(series("MEDIAN", 60).await, vec![(4.0, 3), (4.0, 2)]);
    assert_eq!(series("MAX", 60).await, vec![(7.0, 3), (6.0, 2)]);
    // Two windows combine into a two-minute bucket.
    assert_eq!(series("AVG", 120).await, vec![(4.0, 5)]);
    assert_eq!(series("SUM", 120).await, vec![(20.0, 5)]);
}
