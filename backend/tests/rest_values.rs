//! REST ingestion (`POST /api/v1/units/{uuid}/values`) for devices without MQTT: a 2xx means committed,
//! values reach linked inputs over MQTT in order, a bad batch is refused naming its problem with nothing
//! written, and one unit over its rate is refused without holding up another.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::units::{Device, Fixture, device};
use reqwest::StatusCode;
use serde_json::{Value, json};

const OUTPUT: &str = "current_temp/pepeunit";
const INPUT: &str = "set_fan_state/pepeunit";

async fn post(fx: &Fixture, unit: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .post(fx.server.url(&format!("/api/v1/units/{unit}/values")))
        .json(&body);
    if let Some(token) = token {
        request = request.header("x-auth-token", token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn history(fx: &Fixture, node: &str) -> Vec<(String, String)> {
    let (_, body) = fx
        .server
        .gql(
            "query($u: ID!) { unitNode(uuid: $u) { history(limit: 100) { value createdAt } } }",
            json!({ "u": node }),
            Some(&fx.token),
        )
        .await;
    // Newest first, as stored; returned oldest first.
    let mut rows: Vec<(String, String)> = body["data"]["unitNode"]["history"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|v| {
            (
                v["value"].as_str().unwrap().to_owned(),
                v["createdAt"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    rows.reverse();
    rows
}

async fn last_value(fx: &Fixture, node: &str) -> Value {
    let (_, body) = fx
        .server
        .gql(
            "query($u: ID!) { unitNode(uuid: $u) { lastValue } }",
            json!({ "u": node }),
            Some(&fx.token),
        )
        .await;
    body["data"]["unitNode"]["lastValue"].clone()
}

/// A sensor whose output keeps history and is linked to a fan's input.
async fn sensor_and_fan(fx: &Fixture) -> (Device, Device) {
    let sensor = device(fx, "Sensor").await;
    let fan = device(fx, "Fan").await;
    let (_, body) = fx
        .server
        .gql(
            "mutation($n: ID!) { updateUnitNode(uuid: $n, input: { historyKind: LAST_N, historyLimit: 100 }) { uuid } }",
            json!({ "n": sensor.node(OUTPUT) }),
            Some(&fx.token),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    let (_, body) = fx
        .server
        .gql(
            "mutation($o: ID!, $i: ID!) { createLink(outputUuid: $o, inputUuid: $i) { uuid } }",
            json!({ "o": sensor.node(OUTPUT), "i": fan.node(INPUT) }),
            Some(&fx.token),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    (sensor, fan)
}

#[tokio::test]
async fn posted_values_are_committed_kept_with_their_time_and_reach_linked_inputs_in_order() {
    let fx = Fixture::new(|_| {}).await;
    let (sensor, fan) = sensor_and_fan(&fx).await;
    let mut fan_mqtt = fan.connect(&fx).await;
    fan_mqtt.subscribe_acked(&sensor.topic(OUTPUT)).await;

    let measured = "2026-11-28T06:00:00Z";
    let (status, body) = post(
        &fx,
        &sensor.uuid,
        Some(&sensor.token),
        json!([
            { "output": OUTPUT, "value": 20.5, "time": measured },
            { "output": OUTPUT, "value": "21" },
            // The node uuid names the output too.
            { "output": sensor.node(OUTPUT), "value": { "c": 21.5 } },
        ]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({ "stored": 3, "filtered": 0 }));
    // A 2xx means committed: readable at once.
    assert_eq!(
        last_value(&fx, &sensor.node(OUTPUT)).await,
        json!(r#"{"c":21.5}"#)
    );
    let kept = history(&fx, &sensor.node(OUTPUT)).await;
    let values: Vec<&str> = kept.iter().map(|(v, _)| v.as_str()).collect();
    assert_eq!(values, ["20.5", "21", r#"{"c":21.5}"#]);
    assert!(kept[0].1.starts_with("2026-11-28T06:00:00"), "{kept:?}");

    let topic = sensor.topic(OUTPUT);
    for expected in ["20.5", "21", r#"{"c":21.5}"#] {
        assert_eq!(
            fan_mqtt.message().await,
            (topic.clone(), expected.to_owned())
        );
    }

    // A bearer token works as x-auth-token does.
    let response = reqwest::Client::new()
        .post(
            fx.server
                .url(&format!("/api/v1/units/{}/values", sensor.uuid)),
        )
        .bearer_auth(&sensor.token)
        .json(&json!([{ "output": OUTPUT, "value": "22" }]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(fan_mqtt.message().await, (topic, "22".to_owned()));
}

#[tokio::test]
async fn a_bad_batch_is_refused_naming_its_problem_and_nothing_is_written() {
    let fx = Fixture::with_config(|_| {}, |c| c.unit_value_max_bytes = 64).await;
    let (sensor, fan) = sensor_and_fan(&fx).await;
    let mut fan_mqtt = fan.connect(&fx).await;
    fan_mqtt.subscribe_acked(&sensor.topic(OUTPUT)).await;
    let good = json!({ "output": OUTPUT, "value": "1" });

    let refused: Vec<(Value, &str)> = vec![
        (
            json!([good, { "output": "nope/pepeunit", "value": 1 }]),
            "item 1: this unit has no output",
        ),
        // An input is not the unit's to post to.
        (
            json!([good, { "output": INPUT, "value": 1 }]),
            "item 1: this unit has no output",
        ),
        (
            json!([good, { "output": OUTPUT, "value": null }]),
            "item 1: value is null",
        ),
        (
            json!([good, { "output": OUTPUT, "value": "x".repeat(65) }]),
            "item 1: value of 65 bytes",
        ),
        (
            json!([good, { "output": OUTPUT, "value": 1, "time": "2099-01-01T00:00:00Z" }]),
            "item 1: time",
        ),
        (
            json!([good, { "output": OUTPUT, "value": 1, "time": "yesterday" }]),
            "JSON array",
        ),
        (
            json!([good, { "output": OUTPUT, "value": 1, "colour": "red" }]),
            "JSON array",
        ),
        (json!({ "output": OUTPUT, "value": 1 }), "JSON array"),
        (json!([]), "empty"),
    ];
    for (body, says) in refused {
        let (status, answer) = post(&fx, &sensor.uuid, Some(&sensor.token), body.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body} → {answer}"
        );
        assert_eq!(answer["error"]["code"], "VALIDATION", "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(says),
            "{body}: {message:?} should say {says:?}"
        );
    }
    let (status, _) = post(&fx, &sensor.uuid, None, json!([good])).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, answer) = post(&fx, &sensor.uuid, Some(&fan.token), json!([good])).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "another unit's token: {answer}"
    );
    let (status, answer) = post(&fx, &sensor.uuid, Some(&fx.token), json!([good])).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a user's token: {answer}");
    let (status, _) = post(&fx, "not-a-uuid", Some(&sensor.token), json!([good])).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    assert_eq!(last_value(&fx, &sensor.node(OUTPUT)).await, Value::Null);
    assert!(history(&fx, &sensor.node(OUTPUT)).await.is_empty());
    fan_mqtt.quiet().await;
}

#[tokio::test]
async fn a_unit_over_its_rate_is_told_when_to_retry_and_another_unit_is_not_held_up() {
    let fx = Fixture::with_config(
        |_| {},
        |c| {
            c.rest_values_rate = 1;
            c.rest_values_burst = 5;
            c.rest_values_max_batch = 5;
        },
    )
    .await;
    let a = device(&fx, "A").await;
    let b = device(&fx, "B").await;
    let batch = |n: usize| json!(vec![json!({ "output": OUTPUT, "value": "1" }); n]);

    let (status, _) = post(&fx, &a.uuid, Some(&a.token), batch(6)).await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "over the batch limit"
    );
    let (status, _) = post(&fx, &a.uuid, Some(&a.token), batch(5)).await;
    assert_eq!(status, StatusCode::OK);
    let response = reqwest::Client::new()
        .post(fx.server.url(&format!("/api/v1/units/{}/values", a.uuid)))
        .header("x-auth-token", &a.token)
        .json(&batch(3))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=5).contains(&retry), "Retry-After {retry}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "RATE_LIMITED");

    let (status, _) = post(&fx, &b.uuid, Some(&b.token), batch(5)).await;
    assert_eq!(status, StatusCode::OK, "B has its own bucket");

    // After the wait, A posts again.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    let (status, body) = post(&fx, &a.uuid, Some(&a.token), batch(1)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
