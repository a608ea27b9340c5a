//! A variable's history as CSV: export → import round-trips exactly, a bad file is refused by line with
//! nothing written, and export and import follow who may see and edit the variable.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::units::{Device, Fixture, device};
use reqwest::StatusCode;
use serde_json::{Value, json};

const OUTPUT: &str = "current_temp/pepeunit";

async fn keep_history(fx: &Fixture, unit: &Device) {
    let (_, body) = fx
        .server
        .gql(
            "mutation($n: ID!) { updateUnitNode(uuid: $n, input: { historyKind: LAST_N, historyLimit: 1000 }) { uuid } }",
            json!({ "n": unit.node(OUTPUT) }),
            Some(&fx.token),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
}

async fn export(
    fx: &Fixture,
    node: &str,
    token: Option<&str>,
    query: &str,
) -> (StatusCode, String) {
    let mut request = fx.server.client.get(
        fx.server
            .url(&format!("/api/v1/unit_nodes/{node}/history.csv{query}")),
    );
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    if status == StatusCode::OK {
        assert_eq!(
            response.headers()["content-type"],
            "text/csv; charset=utf-8"
        );
    }
    (status, response.text().await.unwrap())
}

async fn import(fx: &Fixture, node: &str, token: Option<&str>, csv: String) -> (StatusCode, Value) {
    let mut request = fx
        .server
        .client
        .post(
            fx.server
                .url(&format!("/api/v1/unit_nodes/{node}/history.csv")),
        )
        .header("content-type", "text/csv")
        .body(csv);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn export_then_import_gives_back_the_same_samples() {
    let fx = Fixture::new(|_| {}).await;
    let sensor = device(&fx, "Sensor").await;
    let copy = device(&fx, "Copy").await;
    keep_history(&fx, &sensor).await;
    keep_history(&fx, &copy).await;
    // Awkward text too: commas, quotes, a line break, leading spaces, nothing at all.
    let values = ["21.5", "a,b", "say \"hi\"", "two\nlines", "  padded", ""];
    let posted: Vec<Value> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            json!({ "output": OUTPUT, "value": v, "time": format!("2026-11-28T06:00:0{i}.123456Z") })
        })
        .collect();
    let response = sensor.post_values(&fx, &Value::from(posted)).await;
    assert_eq!(response.status(), StatusCode::OK);

    let (status, csv) = export(&fx, &sensor.node(OUTPUT), Some(&fx.token), "").await;
    assert_eq!(status, StatusCode::OK, "{csv}");
    assert!(
        csv.starts_with("time,value\n2026-11-28T06:00:00.123456Z,21.5\n"),
        "{csv}"
    );
    let (status, body) = import(&fx, &copy.node(OUTPUT), Some(&fx.token), csv.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({ "imported": values.len() }));
    let (_, again) = export(&fx, &copy.node(OUTPUT), Some(&fx.token), "").await;
    assert_eq!(again, csv);

    // The newest sample became the copy's last value; a range exports part of the history.
    let (_, body) = fx
        .server
        .gql(
            "query($u: ID!) { unitNode(uuid: $u) { lastValue } }",
            json!({ "u": copy.node(OUTPUT) }),
            Some(&fx.token),
        )
        .await;
    assert_eq!(body["data"]["unitNode"]["lastValue"], "");
    let (_, part) = export(
        &fx,
        &copy.node(OUTPUT),
        Some(&fx.token),
        "?from=2026-11-28T06:00:01Z&to=2026-11-28T06:00:03Z",
    )
    .await;
    assert_eq!(
        part,
        "time,value\n2026-11-28T06:00:01.123456Z,\"a,b\"\n2026-11-28T06:00:02.123456Z,\"say \"\"hi\"\"\"\n"
    );
}

#[tokio::test]
async fn a_bad_file_is_refused_by_line_and_access_is_checked() {
    let fx = Fixture::new(|_| {}).await;
    let sensor = device(&fx, "Sensor").await;
    let private = fx
        .create_unit(
            &fx.token,
            json!({ "name": "Hidden", "visibility": "PRIVATE" }),
        )
        .await;
    let hidden = common::units::node(&private, OUTPUT)["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let node = sensor.node(OUTPUT);

    // A variable that keeps no history takes no import.
    let good = "time,value\n2026-11-28T06:00:00Z,1\n".to_owned();
    let (status, body) = import(&fx, &node, Some(&fx.token), good.clone()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("LAST_VALUE")
    );
    keep_history(&fx, &sensor).await;

    let bad = "time,value\n2026-11-28T06:00:00Z,1\nnot a time,2\n2026-11-28T06:00:02Z,3,extra\n2999-01-01T00:00:00Z,4\n";
    let (status, body) = import(&fx, &node, Some(&fx.token), bad.into()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    for says in ["line 3: time \"not a time\"", "line 4:", "line 5: time"] {
        assert!(message.contains(says), "{message:?} should say {says:?}");
    }
    let (status, body) = import(&fx, &node, Some(&fx.token), "when,what\n1,2\n".into()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (_, csv) = export(&fx, &node, Some(&fx.token), "").await;
    assert_eq!(csv, "time,value\n", "nothing was written");

    // Others: a public variable exports to anyone, imports only for its creator; a private one is not there.
    let (status, _) = export(&fx, &node, None, "").await;
    assert_eq!(status, StatusCode::OK);
    let (_, bob) = fx.server.user("bob").await;
    let (status, _) = import(&fx, &node, Some(&bob), good.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for token in [None, Some(bob.as_str())] {
        let (status, _) = export(&fx, &hidden, token, "").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    let (_, body) = fx
        .server
        .gql(
            "mutation { createApiToken(name: \"read\", scope: READ) { token } }",
            json!({}),
            Some(&fx.token),
        )
        .await;
    let read = body["data"]["createApiToken"]["token"].as_str().unwrap();
    let (status, _) = import(&fx, &node, Some(read), good.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a read-only token");
    let (status, _) = export(&fx, &hidden, Some(read), "").await;
    assert_eq!(status, StatusCode::OK, "the token sees what its user sees");
    let (status, body) = import(&fx, &node, Some(&fx.token), good).await;
    assert_eq!((status, body), (StatusCode::OK, json!({ "imported": 1 })));
}
