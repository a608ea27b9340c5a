//! Time series: samples posted over REST with their own times come back from GraphQL's `series` and the
//! Grafana (Infinity) endpoint as the avg / min / max / sum / count / median / last of each bucket,
//! computed here; never more points than asked; visible as the variable is; a read-only API token reads
//! the endpoint and cannot write; a unit's Grafana dashboard names every output. On PostgreSQL, the
//! read-only role and views `docs/src/data.md` gives for Grafana's own PostgreSQL data source work as
//! documented, one variable's range is read through the `(unit_node_uuid, created_at)` index and a range
//! across all of them through the BRIN index on `created_at`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use chrono::{DateTime, Duration, DurationRound, SecondsFormat, Utc};
use common::units::{Device, Fixture, device};
use reqwest::StatusCode;
use serde_json::{Value, json};

const OUTPUT: &str = "current_temp/pepeunit";

const SERIES: &str = "query($n: ID!, $from: DateTime!, $to: DateTime!, $max: Int!, $step: Int, $agg: SeriesAggregate!) {
    series(nodeUuid: $n, from: $from, to: $to, maxPoints: $max, stepSeconds: $step, aggregate: $agg) {
        stepSeconds points { time value count } } }";

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

async fn keep_history(fx: &Fixture, unit: &Device) {
    let (_, body) = fx
        .server
        .gql(
            "mutation($n: ID!) { updateUnitNode(uuid: $n, input: { historyKind: LAST_N, historyLimit: 10000 }) { uuid } }",
            json!({ "n": unit.node(OUTPUT) }),
            Some(&fx.token),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
}

/// Posts `(time, value)` samples as the unit does over REST, in batches the rate limit takes.
async fn post(fx: &Fixture, unit: &Device, samples: &[(DateTime<Utc>, Value)]) {
    for batch in samples.chunks(500) {
        let body: Vec<Value> = batch
            .iter()
            .map(|(at, value)| json!({ "output": OUTPUT, "value": value, "time": rfc(*at) }))
            .collect();
        let response = unit.post_values(fx, &Value::from(body)).await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "{}",
            response.text().await.unwrap()
        );
    }
}

/// `(time, value, count)` of each point of a GraphQL `series`, and its step.
async fn series(
    fx: &Fixture,
    token: Option<&str>,
    node: &str,
    range: (DateTime<Utc>, DateTime<Utc>),
    max: u32,
    step: Option<u32>,
    aggregate: &str,
) -> (i64, Vec<(DateTime<Utc>, f64, u64)>) {
    let (_, body) = fx
        .server
        .gql(
            SERIES,
            json!({ "n": node, "from": rfc(range.0), "to": rfc(range.1), "max": max, "step": step, "agg": aggregate }),
            token,
        )
        .await;
    assert!(body["errors"].is_null(), "{aggregate}: {body}");
    let series = &body["data"]["series"];
    let points = series["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["time"].as_str().unwrap().parse().unwrap(),
                p["value"].as_f64().unwrap(),
                p["count"].as_u64().unwrap(),
            )
        })
        .collect();
    (series["stepSeconds"].as_i64().unwrap(), points)
}

/// The Grafana endpoint with a bearer token (or none): its status and body.
async fn endpoint(
    fx: &Fixture,
    token: Option<&str>,
    node: &str,
    query: &str,
) -> (StatusCode, Value) {
    let mut request = fx.server.client.get(
        fx.server
            .url(&format!("/api/v1/unit_nodes/{node}/series?{query}")),
    );
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[tokio::test]
async fn buckets_hold_what_was_posted() {
    let fx = Fixture::new(|_| {}).await;
    let sensor = device(&fx, "Sensor").await;
    keep_history(&fx, &sensor).await;
    let node = sensor.node(OUTPUT);
    // Ten minutes of samples at irregular times, an hour ago: bucket m holds 3 + m samples.
    let start = (Utc::now() - Duration::hours(1))
        .duration_trunc(Duration::minutes(1))
        .unwrap();
    let mut samples: Vec<(DateTime<Utc>, Value)> = Vec::new();
    let mut buckets: Vec<Vec<f64>> = Vec::new();
    for minute in 0..10i64 {
        let mut values = Vec::new();
        for i in 0..(3 + minute) {
            let at = start
                + Duration::minutes(minute)
                + Duration::milliseconds(i * 59_000 / (3 + minute) + 7);
            let value = ((minute * 37 + i * 11) % 23) as f64 * 0.5 - 4.0;
            values.push(value);
            samples.push((at, json!(value)));
        }
        buckets.push(values);
    }
    // Not a number: skipped, except by COUNT; minute 4 is left empty.
    samples.push((start + Duration::seconds(30), json!("offline")));
    let empty = 4;
    samples.retain(|(at, _)| (*at - start).num_minutes() != empty);
    buckets[empty as usize].clear();
    // Posted out of order: the series goes by the samples' own times.
    samples.reverse();
    post(&fx, &sensor, &samples).await;

    let range = (start, start + Duration::minutes(10));
    for aggregate in ["AVG", "MIN", "MAX", "SUM", "COUNT", "MEDIAN", "LAST"] {
        let (step, points) =
            series(&fx, Some(&fx.token), &node, range, 100, Some(60), aggregate).await;
        assert_eq!(step, 60);
        assert_eq!(
            points.len(),
            9,
            "{aggregate}: the empty minute is left out: {points:?}"
        );
        for (time, value, count) in points {
            let minute = (time - start).num_minutes();
            assert_eq!(
                time,
                start + Duration::minutes(minute),
                "buckets start on the minute"
            );
            let mut values = buckets[minute as usize].clone();
            let numeric = values.len() as u64;
            let (want, want_count) = match aggregate {
                "AVG" => (values.iter().sum::<f64>() / values.len() as f64, numeric),
                "MIN" => (
                    values.iter().copied().fold(f64::INFINITY, f64::min),
                    numeric,
                ),
                "MAX" => (
                    values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                    numeric,
                ),
                "SUM" => (values.iter().sum(), numeric),
                "COUNT" => {
                    let all = numeric + u64::from(minute == 0);
                    (all as f64, all)
                }
                "MEDIAN" => (median(&mut values), numeric),
                _ => (*values.last().unwrap(), numeric),
            };
            assert!(
                close(value, want),
                "{aggregate} of minute {minute}: {value} ≠ {want}"
            );
            assert_eq!(count, want_count, "{aggregate} count of minute {minute}");
        }
    }

    // The server picks the step: never more points than asked, every sample in one of them.
    let total: u64 = buckets.iter().map(|b| b.len() as u64).sum();
    for max in [2, 3, 7, 50] {
        let (step, points) = series(&fx, Some(&fx.token), &node, range, max, None, "AVG").await;
        assert!(
            points.len() <= max as usize,
            "{max}: {} points",
            points.len()
        );
        assert_eq!(points.iter().map(|p| p.2).sum::<u64>(), total, "{max}");
        assert!(
            points
                .windows(2)
                .all(|w| (w[1].0 - w[0].0).num_seconds() % step == 0)
        );
    }
    // A step asked for that would give too many points is widened to a multiple that fits.
    let (step, points) = series(&fx, Some(&fx.token), &node, range, 4, Some(7), "COUNT").await;
    assert!(step % 7 == 0 && points.len() <= 4, "{step} {points:?}");
    // A sub-range: only its samples.
    let (_, points) = series(
        &fx,
        Some(&fx.token),
        &node,
        (start + Duration::minutes(2), start + Duration::minutes(3)),
        10,
        Some(60),
        "COUNT",
    )
    .await;
    assert_eq!(points, vec![(start + Duration::minutes(2), 5.0, 5)]);

    // Nonsense is refused with what is wrong.
    let (_, body) = fx
        .server
        .gql(
            SERIES,
            json!({ "n": node, "from": rfc(range.1), "to": rfc(range.0), "max": 10, "agg": "AVG" }),
            Some(&fx.token),
        )
        .await;
    assert_eq!(common::code(&body), "VALIDATION", "{body}");
    // Past the cap, the cost model refuses what the points would cost.
    let (_, body) = fx
        .server
        .gql(
            "query($n: ID!, $f: DateTime!, $t: DateTime!) { a: series(nodeUuid: $n, from: $f, to: $t, maxPoints: 2000) { points { time value count } }
               b: series(nodeUuid: $n, from: $f, to: $t, maxPoints: 2000) { points { time value count } }
               c: series(nodeUuid: $n, from: $f, to: $t, maxPoints: 2000) { points { time value count } }
               d: series(nodeUuid: $n, from: $f, to: $t, maxPoints: 2000) { points { time value count } }
               e: series(nodeUuid: $n, from: $f, to: $t, maxPoints: 2000) { points { time value count } }
               f: series(nodeUuid: $n, from: $f, to: $t, maxPoints: 2000) { points { time value count } }
               g: series(nodeUuid: $n, from: $f, to: $t, maxPoints: 2000) { points { time value count } } }",
            json!({ "n": node, "f": rfc(range.0), "t": rfc(range.1) }),
            Some(&fx.token),
        )
        .await;
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("complex"),
        "{body}"
    );

    // The Grafana endpoint: the same buckets, as Infinity reads them; times as milliseconds (Grafana's
    // `${__from}`) or RFC 3339.
    let (_, want) = series(&fx, Some(&fx.token), &node, range, 100, Some(60), "MEDIAN").await;
    for query in [
        format!(
            "from={}&to={}&step=60&aggregate=median",
            range.0.timestamp_millis(),
            range.1.timestamp_millis()
        ),
        format!(
            "from={}&to={}&step=60&aggregate=MEDIAN&maxPoints=100",
            rfc(range.0),
            rfc(range.1)
        ),
    ] {
        let (status, body) = endpoint(&fx, None, &node, &query.replace('+', "%2B")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let got: Vec<(DateTime<Utc>, f64, u64)> = body
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                assert_eq!(row.as_object().unwrap().len(), 3, "{row}");
                (
                    DateTime::parse_from_rfc3339(row["time"].as_str().unwrap())
                        .unwrap()
                        .with_timezone(&Utc),
                    row["value"].as_f64().unwrap(),
                    row["count"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(got, want, "{query}");
    }
    // Without a range: the last day, which holds every sample.
    let (status, body) = endpoint(&fx, None, &node, "aggregate=count&maxPoints=2").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let counted: u64 = body
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["count"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, total + 1);
    for bad in [
        "from=yesterday",
        "aggregate=mean",
        "maxPoints=1",
        "step=0",
        "maxPoints=-3",
    ] {
        let (status, body) = endpoint(&fx, None, &node, bad).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "VALIDATION", "{bad}: {body}");
    }
}

#[tokio::test]
async fn visibility_tokens_and_the_dashboard() {
    let fx = Fixture::new(|_| {}).await;
    let public = device(&fx, "Public").await;
    keep_history(&fx, &public).await;
    let private = fx
        .create_unit(
            &fx.token,
            json!({ "name": "Hidden", "visibility": "PRIVATE" }),
        )
        .await;
    let private = Device {
        uuid: private["uuid"].as_str().unwrap().to_owned(),
        token: fx.unit_token(private["uuid"].as_str().unwrap()).await,
        unit: private,
    };
    keep_history(&fx, &private).await;
    let at = Utc::now() - Duration::minutes(5);
    for unit in [&public, &private] {
        post(
            &fx,
            unit,
            &[(at, json!(1.5)), (at + Duration::seconds(1), json!(2.5))],
        )
        .await;
    }
    let range = (at - Duration::minutes(1), at + Duration::minutes(1));
    let (_, bob) = fx.server.user("bob").await;
    let (_, body) = fx
        .server
        .gql(
            "mutation { createApiToken(name: \"grafana\", scope: READ) { token } }",
            json!({}),
            Some(&fx.token),
        )
        .await;
    let read = body["data"]["createApiToken"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(read.starts_with("pepeunit_"));

    // As `history`: a public variable to anyone, a private one to its creator and their tokens only.
    let hidden = private.node(OUTPUT);
    for token in [None, Some(bob.as_str())] {
        let (_, body) = fx
            .server
            .gql(SERIES, json!({ "n": hidden, "from": rfc(range.0), "to": rfc(range.1), "max": 10, "agg": "AVG" }), token)
            .await;
        assert_eq!(common::code(&body), "NOT_FOUND", "{body}");
        let (status, _) = endpoint(&fx, token, &hidden, "").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    let (_, points) = series(&fx, None, &public.node(OUTPUT), range, 10, Some(60), "AVG").await;
    assert_eq!(points.iter().map(|p| p.2).sum::<u64>(), 2);
    for token in [fx.token.as_str(), read.as_str()] {
        let (_, points) = series(&fx, Some(token), &hidden, range, 10, Some(60), "SUM").await;
        assert_eq!(points.iter().map(|p| p.1).sum::<f64>(), 4.0);
        let (status, body) = endpoint(&fx, Some(token), &hidden, "aggregate=sum").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            body.as_array()
                .unwrap()
                .iter()
                .map(|r| r["value"].as_f64().unwrap())
                .sum::<f64>(),
            4.0
        );
    }

    // The read-only token cannot write: not an import, not a mutation.
    let response = fx
        .server
        .client
        .post(
            fx.server
                .url(&format!("/api/v1/unit_nodes/{hidden}/history.csv")),
        )
        .bearer_auth(&read)
        .header("content-type", "text/csv")
        .body("time,value\n2026-11-28T06:00:00Z,1\n")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let (_, body) = fx
        .server
        .gql(
            "mutation($n: ID!) { updateUnitNode(uuid: $n, input: { historyKind: LAST_VALUE }) { uuid } }",
            json!({ "n": hidden }),
            Some(&read),
        )
        .await;
    assert_eq!(common::code(&body), "FORBIDDEN", "{body}");

    // The dashboard: a panel per output, each reading that output's series through `$datasource`.
    let (_, body) = fx
        .server
        .gql(
            "query($u: ID!) { unit(uuid: $u) { grafanaDashboard nodes { uuid kind topicName } } }",
            json!({ "u": private.uuid }),
            Some(&read),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    let unit = &body["data"]["unit"];
    let dashboard: Value = serde_json::from_str(&unit["grafanaDashboard"].to_string()).unwrap();
    assert_eq!(dashboard["title"], "Pepeunit · Hidden");
    assert_eq!(
        dashboard["templating"]["list"][0]["query"],
        "yesoreyeram-infinity-datasource"
    );
    let panels = dashboard["panels"].as_array().unwrap();
    let outputs: Vec<&Value> = unit["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["kind"] == "OUTPUT")
        .collect();
    assert!(!outputs.is_empty());
    assert_eq!(panels.len(), outputs.len(), "{dashboard}");
    for output in outputs {
        let name = output["topicName"].as_str().unwrap();
        let panel = panels
            .iter()
            .find(|p| p["title"] == name)
            .unwrap_or_else(|| panic!("no panel for {name}: {dashboard}"));
        assert_eq!(panel["datasource"]["uid"], "${datasource}");
        let target = &panel["targets"][0];
        let uuid = output["uuid"].as_str().unwrap();
        assert_eq!(target["url"], format!("/api/v1/unit_nodes/{uuid}/series"));
        let columns: Vec<(&str, &str)> = target["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["selector"].as_str().unwrap(), c["type"].as_str().unwrap()))
            .collect();
        assert_eq!(columns, [("time", "timestamp"), ("value", "number")]);
        // What Infinity would ask, with the times Grafana puts for `${__from}` and `${__to}`.
        let params: Vec<String> = target["url_options"]["params"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let value = p["value"].as_str().unwrap();
                let value = match value {
                    "${__from}" => range.0.timestamp_millis().to_string(),
                    "${__to}" => range.1.timestamp_millis().to_string(),
                    other => other.to_owned(),
                };
                format!("{}={value}", p["key"].as_str().unwrap())
            })
            .collect();
        let (status, body) = endpoint(&fx, Some(&read), uuid, &params.join("&")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if name == OUTPUT {
            let rows = body.as_array().unwrap();
            let count: u64 = rows.iter().map(|r| r["count"].as_u64().unwrap()).sum();
            let sum: f64 = rows
                .iter()
                .map(|r| r["value"].as_f64().unwrap() * r["count"].as_f64().unwrap())
                .sum();
            assert_eq!((count, sum), (2, 4.0), "{body}");
        }
    }
}

/// On PostgreSQL: the series query reads the range through `(unit_node_uuid, created_at)`, and the
/// read-only role and views of `docs/src/data.md` read values but not the tables behind them.
#[tokio::test]
async fn postgres_index_and_the_documented_grafana_role() {
    let db = common::TestDb::new().await;
    if !db.is_postgres() {
        eprintln!("PostgreSQL only: set PEPEUNIT_TEST_DATABASE_URL");
        return;
    }
    use sea_orm::{ConnectionTrait, Statement, TransactionTrait};
    let fx = Fixture::on(db, |_| {}, |_| {}).await;
    let sensor = device(&fx, "Sensor").await;
    keep_history(&fx, &sensor).await;
    let at = Utc::now() - Duration::minutes(5);
    post(
        &fx,
        &sensor,
        &[(at, json!(20)), (at + Duration::seconds(1), json!("text"))],
    )
    .await;
    let conn = fx.server.services.db();

    // Which index the planner takes for a range (with sequential scans off: the test's table is tiny).
    let explain = |sql: String| async move {
        let txn = conn.begin().await.unwrap();
        txn.execute_unprepared("SET LOCAL enable_seqscan = off")
            .await
            .unwrap();
        let plan = txn
            .query_all_raw(Statement::from_string(
                sea_orm::DbBackend::Postgres,
                format!("EXPLAIN {sql}"),
            ))
            .await
            .unwrap()
            .iter()
            .map(|row| row.try_get_by_index::<String>(0).unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        txn.rollback().await.unwrap();
        plan
    };
    let one = explain(format!(
        "SELECT count(*) FROM unit_node_values WHERE unit_node_uuid = '{}' \
         AND created_at >= now() - interval '1 day' AND created_at < now()",
        sensor.node(OUTPUT)
    ))
    .await;
    assert!(one.contains("idx_unit_node_values_node_time"), "{one}");
    let all = explain(
        "SELECT count(*) FROM unit_node_values WHERE created_at >= now() - interval '1 day'".into(),
    )
    .await;
    assert!(all.contains("idx_unit_node_values_time_brin"), "{all}");

    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/src/data.md"))
        .unwrap();
    let sql = docs
        .split("<!-- grafana-postgres-sql -->")
        .nth(1)
        .and_then(|rest| rest.split("```sql\n").nth(1))
        .and_then(|block| block.split("```").next())
        .expect("data.md has the Grafana role's SQL after its marker");
    for statement in sql.split(";\n").map(str::trim).filter(|s| !s.is_empty()) {
        let statement = statement
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        if statement.starts_with("CREATE ROLE") {
            // Roles belong to the whole server, which other test databases share.
            conn.execute_unprepared(&format!(
                "DO $$ BEGIN {statement}; EXCEPTION WHEN duplicate_object THEN NULL; END $$"
            ))
            .await
            .unwrap();
        } else {
            conn.execute_unprepared(&statement)
                .await
                .unwrap_or_else(|e| panic!("{statement}: {e}"));
        }
    }
    let txn = conn.begin().await.unwrap();
    txn.execute_unprepared("SET LOCAL ROLE pepeunit_grafana")
        .await
        .unwrap();
    let rows = txn
        .query_all_raw(Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT unit_name, topic_name, value, number FROM grafana.samples ORDER BY time"
                .to_owned(),
        ))
        .await
        .unwrap();
    let got: Vec<(String, String, String, Option<f64>)> = rows
        .iter()
        .map(|r| {
            (
                r.try_get("", "unit_name").unwrap(),
                r.try_get("", "topic_name").unwrap(),
                r.try_get("", "value").unwrap(),
                r.try_get("", "number").unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("Sensor".into(), OUTPUT.into(), "20".into(), Some(20.0)),
            ("Sensor".into(), OUTPUT.into(), "text".into(), None),
        ]
    );
    txn.rollback().await.unwrap();
    let txn = conn.begin().await.unwrap();
    txn.execute_unprepared("SET LOCAL ROLE pepeunit_grafana")
        .await
        .unwrap();
    let denied = txn.execute_unprepared("SELECT * FROM users").await;
    assert!(denied.is_err(), "the role reads only the views");
    txn.rollback().await.unwrap();
}
